/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Named crash points. CRASH_POINT("journal-compact-after-snapshot-rename") marks a place where a crash
 * must be survivable. With CHVM_CRASH_AT=<name> in the environment the process _exit()s there (exit
 * code 86), so tests can kill an agent at exactly that point. In-process tests may instead install a
 * hook that makes the point return -ECANCELED, and the caller then returns at once, leaving everything as
 * a crash would. Every point's name is also placed in a linker section, so the full list can be
 * enumerated (crash_point_list()) rather than kept by hand. */

#include <stddef.h>

#define CRASH_POINT_EXIT_CODE 86

/* Returns 0, or -ECANCELED if a test hook asked to simulate a crash here. */
#define CRASH_POINT(name)                                                                              \
        ({                                                                                             \
                static const char *const _crash_point_name_                                            \
                        __attribute__((used, section("chvm_crash_points"), aligned(sizeof(void *)))) = \
                                name;                                                                  \
                crash_point_hit(_crash_point_name_);                                                   \
        })

int crash_point_hit(const char *name);

/* Hook for in-process tests: returns > 0 to simulate a crash at name. NULL removes it. */
typedef int (*CrashPointHook)(const char *name, void *userdata);
void crash_point_set_hook(CrashPointHook hook, void *userdata);

/* All crash points linked into this program, sorted by name, without duplicates. The array is static
 * and NULL-terminated; *ret_n gets its length. */
const char *const *crash_point_list(size_t *ret_n);
