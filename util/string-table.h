/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The enum <-> string functions of a table, made the one way (tests/test-string-tables.c checks every
 * table made with these, and tests/test-layering.sh that the test lists each of them):
 *
 *   static const char *const foo_table[_FOO_MAX] = { [FOO_A] = "a", ... };   (gaps are NULL)
 *   DEFINE_STRING_TABLE(foo, Foo, foo_table, _FOO_MAX)
 *
 * makes foo_to_string(x) (NULL outside the table and for gaps) and foo_from_string(s) (-EINVAL, the enums'
 * _INVALID, for NULL and for what is not in the table). DEFINE_STRING_TABLE_TO makes foo_to_string only. */

#include <errno.h>
#include <string.h>

#define DEFINE_STRING_TABLE_TO(name, type, table, max)                            \
        const char *name##_to_string(type x) {                                    \
                return (int) x >= 0 && (int) x < (int) (max) ? (table)[x] : NULL; \
        }

#define DEFINE_STRING_TABLE(name, type, table, max)                   \
        DEFINE_STRING_TABLE_TO(name, type, table, max)                \
        type name##_from_string(const char *s) {                      \
                for (int i = 0; s && i < (int) (max); i++)            \
                        if ((table)[i] && strcmp((table)[i], s) == 0) \
                                return (type) i;                      \
                return (type) -EINVAL;                                \
        }
