/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* UTF-8 as sd-bus takes it in a string: no overlong forms, no surrogates, nothing above U+10FFFF, none of
 * the noncharacters U+FDD0..U+FDEF and U+xxFFFE/U+xxFFFF. sd-bus refuses to put anything else in a message,
 * and an error reply it cannot build is an answer never sent. */

/* The length of the valid character at s[0..n), or 0 if there is none there. */
size_t utf8_char_length(const char *s, size_t n);

/* Replaces every byte that does not start a valid character with '?' (a character cut short at the end,
 * say by "%.40s" or a full buffer, becomes '?'s too). Returns s. */
char *utf8_sanitize(char *s);
