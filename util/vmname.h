/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* Longest VM name, without the NUL. */
#define VM_NAME_MAX 32

/* Whether name is a VM name: ^[a-z][a-z0-9-]{0,31}$. Names become file names (NAME.vm) and appear in
 * messages and journald fields, so nothing else is allowed. */
bool vm_name_valid(const char *name);
