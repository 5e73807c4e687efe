/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <string.h>

#include "util/vmname.h"

bool vm_name_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strnlen(name, VM_NAME_MAX + 1);
        if (n == 0 || n > VM_NAME_MAX || name[0] < 'a' || name[0] > 'z')
                return false;
        for (size_t i = 1; i < n; i++)
                if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
                      name[i] == '-'))
                        return false;
        return true;
}
