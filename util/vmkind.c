/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stddef.h>
#include <string.h>

#include "util/string-table.h"
#include "util/vmkind.h"

static const char *const hypervisor_kind_table[_HYPERVISOR_KIND_MAX] = {
        [HYPERVISOR_CLOUD_HYPERVISOR] = "cloud-hypervisor",
        [HYPERVISOR_QEMU] = "qemu",
};

DEFINE_STRING_TABLE(hypervisor_kind, HypervisorKind, hypervisor_kind_table, _HYPERVISOR_KIND_MAX)
