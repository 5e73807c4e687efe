/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The kernel tests' independent oracles: ip, bridge and nft run as commands in the test's own network
 * namespace, their output compared with what our code claims. */

#include <stdbool.h>

#include "util/macro.h"

/* Runs the command (through /bin/sh) and returns everything it printed on stdout (malloc'ed, never
 * NULL; aborts if the command cannot be started). */
_printf_(1, 2) char *sh(const char *fmt, ...);

/* How often needle occurs in haystack (non-overlapping). */
unsigned count_substr(const char *haystack, const char *needle);

/* Connects to the unix socket at path until a connection is accepted (fake-vmm listens on its API socket
 * last, once it is set up), for at most timeout_s seconds; false if it never was. */
bool wait_unix_accepting(const char *path, double timeout_s);
