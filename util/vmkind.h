/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What a VM definition (state/vmdef.c) shares with the hypervisor kinds (vmm/): the kinds' names and the
 * limits both check. */

#include <errno.h>
#include <stdint.h>

#define VM_SPEC_CPUS_MAX 512U
#define VM_SPEC_MEMORY_MIB_MIN UINT64_C(32)
#define VM_SPEC_MEMORY_MIB_MAX (UINT64_C(1) << 24) /* 16 TiB, so size=<N>M cannot overflow 64 bits */
/* x86 COMMAND_LINE_SIZE is 2048 including the NUL; QEMU refuses a longer -append. */
#define VM_KERNEL_CMDLINE_MAX 2047U

typedef enum HypervisorKind {
        HYPERVISOR_CLOUD_HYPERVISOR,
        HYPERVISOR_QEMU,
        _HYPERVISOR_KIND_MAX,
        _HYPERVISOR_KIND_INVALID = -EINVAL,
} HypervisorKind;

const char *hypervisor_kind_to_string(HypervisorKind k);
HypervisorKind hypervisor_kind_from_string(const char *s);
