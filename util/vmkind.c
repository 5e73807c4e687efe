/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stddef.h>
#include <string.h>

#include "util/vmkind.h"

static const char *const hypervisor_kind_table[_HYPERVISOR_KIND_MAX] = {
        [HYPERVISOR_CLOUD_HYPERVISOR] = "cloud-hypervisor",
        [HYPERVISOR_QEMU] = "qemu",
};

const char *hypervisor_kind_to_string(HypervisorKind k) {
        if (k < 0 || k >= _HYPERVISOR_KIND_MAX)
                return NULL;
        return hypervisor_kind_table[k];
}

HypervisorKind hypervisor_kind_from_string(const char *s) {
        if (!s)
                return _HYPERVISOR_KIND_INVALID;
        for (int i = 0; i < _HYPERVISOR_KIND_MAX; i++)
                if (strcmp(hypervisor_kind_table[i], s) == 0)
                        return (HypervisorKind) i;
        return _HYPERVISOR_KIND_INVALID;
}
