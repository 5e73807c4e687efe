/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Hypervisor kinds behind a small vtable. A kind turns a VmSpec into the argv of its hypervisor process, and
 * says over the API socket how its guest is asked to power off (HypervisorVTable.power_off) and how it is
 * known to be up (HypervisorVTable.ready);
 * the spawner execs that argv directly (no shell, ever). One const vtable per kind: cloud-hypervisor
 * (vmm/cloud-hypervisor.c) and qemu (vmm/qemu.c).
 *
 * The guest's console is the legacy 8250 UART, ttyS0, for both kinds: QEMU's -serial and
 * cloud-hypervisor's --serial both drive the UART at 0x3f8; cloud-hypervisor's virtio console (hvc0) is
 * turned off. The serial output goes to VmSpec.serial_log.
 *
 * The guest learns its address from the kernel command line, `ip=ADDR::GW:MASK::eth0:off`; the test guest's
 * init reads it from /proc/cmdline (the Debian cloud kernel has no IP autoconfiguration of its own). */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/error.h"
#include "util/macro.h"
#include "util/vmkind.h"
#include "vmm/argv.h"

/* sun_path is 108 bytes including the NUL. */
#define VM_SOCKET_PATH_MAX 107U
#define VM_GUEST_CONSOLE "ttyS0"
#define VM_GUEST_IFNAME "eth0"
#define VMM_KVM_DEVICE "/dev/kvm"

typedef enum VmmAccel {
        VMM_ACCEL_AUTO,
        VMM_ACCEL_KVM,
        VMM_ACCEL_TCG,
        _VMM_ACCEL_MAX,
        _VMM_ACCEL_INVALID = -EINVAL,
} VmmAccel;

const char *vmm_accel_to_string(VmmAccel a);
VmmAccel vmm_accel_from_string(const char *s);

/* Whether the KVM device at `path` (VMM_KVM_DEVICE unless testing) opens read-write. */
bool vmm_kvm_device_usable(const char *path);
/* Turns VMM_ACCEL_AUTO into KVM when the caller says KVM works here (`kvm_works`: on some hosts QEMU
 * aborts under KVM although /dev/kvm is there) *and* `kvm_device` opens read-write; TCG otherwise. KVM and
 * TCG pass through unchanged. -EINVAL for anything else. */
int vmm_accel_resolve(VmmAccel accel, bool kvm_works, const char *kvm_device, VmmAccel *ret);

/* What a VM runs with. Strings are borrowed. Paths must be absolute (so no hypervisor mistakes one for an
 * option or a protocol prefix) and free of control characters. */
typedef struct VmSpec {
        const char *name;
        const char *kernel; /* NULL: boot the first disk through the firmware (initrd and cmdline unset) */
        const char *firmware; /* NULL: the kind's default (QEMU: SeaBIOS; cloud-hypervisor needs one without
                               * a kernel) */
        const char *initrd; /* NULL: none */
        const char *const *disks; /* n_disks raw images, in guest order (vda, vdb, ...) */
        size_t n_disks;
        const char *cmdline; /* extra kernel arguments; NULL: none */
        unsigned cpus; /* 1..VM_SPEC_CPUS_MAX */
        uint64_t memory_mib; /* VM_SPEC_MEMORY_MIB_MIN..VM_SPEC_MEMORY_MIB_MAX */
        const char *tap; /* existing TAP the NIC uses; NULL: no NIC */
        uint8_t mac[6]; /* the guest's MAC: unicast, not all zero */
        uint32_t ip4; /* host byte order; 0: no ip= on the kernel command line */
        uint32_t gateway4; /* host byte order; 0: none; else inside ip4/prefixlen */
        uint8_t prefixlen; /* 1..32 when ip4 is set */
        /* cloud-hypervisor --api-socket, QEMU QMP; at most VM_SOCKET_PATH_MAX bytes */
        const char *api_socket;
        const char *serial_log; /* the guest's serial console goes here */
        /* qemu only, and resolved: KVM or TCG (vmm_accel_resolve()); cloud-hypervisor ignores it */
        VmmAccel accel;
        const char *binary; /* NULL: the kind's default_binary */
} VmSpec;

typedef struct HypervisorTalk {
        const char *const *requests;
        const char *const *expects;
        size_t n;
} HypervisorTalk;

typedef struct HypervisorVTable {
        HypervisorKind kind;
        const char *name; /* hypervisor_kind_to_string(kind) */
        /* argv[0] when VmSpec.binary is NULL: a bare name, for the spawner to look up in PATH. */
        const char *default_binary;
        /* What only this kind refuses (its option syntax), after the common checks passed. NULL: nothing.
         * -EINVAL with *e set (e may be NULL). */
        int (*validate)(const VmSpec *spec, Error *e);
        /* Validates (without a message) and builds the NULL-terminated argv, argv[0] being the binary. Free
         * it with strv_free(). */
        int (*build_argv)(const VmSpec *spec, char ***ret_argv);
        /* How the guest is asked to power off, on the API socket (VmSpec.api_socket): a conversation of
         * n steps, each sending requests[i] (NULL: nothing, only read) and done when the answer holds
         * expects[i]. The agent drives it from its event loop; a hypervisor that does not answer holds up
         * nothing but its own stop. */
        const HypervisorTalk *power_off;
        /* How the agent knows the hypervisor is up: a conversation on the API socket like power_off, tried
         * from the spawn on (the socket may not exist yet) until it completes. A start is answered only
         * then; a hypervisor that exits first, or does not answer within [vmm] start_timeout, failed to
         * start. NULL: up as soon as it runs. */
        const HypervisorTalk *ready;
} HypervisorVTable;

/* NULL for a kind out of range. */
const HypervisorVTable *hypervisor_vtable(HypervisorKind kind);

/* Everything build_argv() would refuse: 0, or -EINVAL with a sentence naming the field and the value in
 * *e (e may be NULL). */
int vm_spec_validate(const VmSpec *spec, HypervisorKind kind, Error *e);

/* The guest kernel command line: "console=ttyS0", then spec->cmdline, then our ip= (last, so it wins over
 * an ip= in the extra arguments). -EINVAL when longer than VM_KERNEL_CMDLINE_MAX. Only for a spec with a
 * kernel. */
int vm_spec_kernel_cmdline(const VmSpec *spec, char **ret);

/* vm_spec_validate() with a message, then the kind's build_argv(). */
int hypervisor_build_argv(HypervisorKind kind, const VmSpec *spec, char ***ret_argv, Error *e);

/* For the kinds. */
/* -EINVAL, and *e of kind ERROR_INVALID with the sentence (e may be NULL). */
_printf_(2, 3) int vm_spec_invalid(Error *e, const char *fmt, ...);
const char *vm_spec_binary(const VmSpec *spec, const HypervisorVTable *vt); /* argv[0] */
void vm_mac_to_string(const uint8_t mac[6], char ret[18]); /* "02:00:00:00:00:01" */
