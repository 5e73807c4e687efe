/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* Whether the kernel would accept name as an interface name (its dev_valid_name()): 1-15 bytes, not "."
 * or "..", no '/', ':' or white space (the kernel's isspace() also counts 0xa0). */
bool ifname_valid(const char *name);
