/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* NULL-terminated string vectors ("strv") and a small builder for the argv arrays the hypervisor kinds
 * hand to execve(). Nothing here goes through a shell. */

#include <stddef.h>

#include "util/macro.h"

/* Frees every string and the array; accepts NULL, returns NULL: `argv = strv_free(argv);` */
char **strv_free(char **l);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)

size_t strv_length(char *const *l);

/* Collects copies of strings into a NULL-terminated array. An allocation failure is remembered and
 * reported once, by argv_builder_finish(), so a builder reads as the list of its arguments. */
typedef struct ArgvBuilder {
        char **argv;
        size_t n, allocated;
        int error; /* the first failure, or 0 */
} ArgvBuilder;

void argv_builder_add(ArgvBuilder *b, const char *s);
_printf_(2, 3) void argv_builder_addf(ArgvBuilder *b, const char *fmt, ...);
/* Appends `prefix`, `value` with every ',' doubled (QEMU's option syntax), then `suffix`, as one
 * argument. prefix and suffix may be NULL. */
void argv_builder_add_qemu_escaped(ArgvBuilder *b, const char *prefix, const char *value,
                                   const char *suffix);
/* Hands over the array (never empty: at least the terminating NULL), or returns the first error and frees
 * what was collected. The builder is empty afterwards either way. */
int argv_builder_finish(ArgvBuilder *b, char ***ret_argv);
