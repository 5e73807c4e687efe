/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>

/* Whether the kernel would make a link of exactly this name: 1-15 bytes, not "." or ".." and no '/', ':'
 * or white space (its dev_valid_name(); its isspace() also counts 0xa0); no '%' (the kernel reads the
 * name as a template, "tap%d" -> "tap0", or refuses it); not "all" or "default" (the kernel refuses them
 * when it makes the link's sysctl folders). tests/test-names checks this against the kernel. */
bool ifname_valid(const char *name);
