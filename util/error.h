/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* One error value for the agent's modules: made where the failure happens, naming the object and the cause,
 * and passed up as it is. Its kind says what the caller did wrong, if anything; the API alone turns the kind
 * into a D-Bus error name (and chvmctl that into an exit code). Callers add context in front
 * (error_prefix()) instead of formatting the message again into a shorter buffer. */

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/macro.h"

typedef enum ErrorKind {
        ERROR_FAILED, /* the host failed: the journal, a netlink call, memory */
        ERROR_INVALID, /* the request is wrong, or asks for what cannot be (a VM that cannot start as
                          defined) */
        ERROR_NOT_FOUND, /* no such VM */
        ERROR_EXISTS, /* it exists already */
        ERROR_BUSY, /* in use: running, a port forwarded elsewhere, a port the host keeps */
        ERROR_DENIED, /* not allowed to this caller */
        _ERROR_KIND_MAX,
} ErrorKind;

#define ERROR_MESSAGE_MAX 1536

typedef struct Error {
        int code; /* -errno; 0: no error */
        ErrorKind kind;
        char message[ERROR_MESSAGE_MAX];
} Error;

/* The kind an errno has when the code that failed says nothing else. */
ErrorKind error_kind_from_errno(int code);
const char *error_kind_to_string(ErrorKind k);

/* Sets *e and returns code (negative). A message that does not fit ends in "...". e may be NULL (the caller
 * wants the code only): then nothing is set. The same for error_setv() and error_errno(). */
_printf_(4, 5) int error_set(Error *e, int code, ErrorKind kind, const char *fmt, ...);
int error_setv(Error *e, int code, ErrorKind kind, const char *fmt, va_list ap) _printf_(4, 0);
/* The same with the errno's kind. */
_printf_(3, 4) int error_errno(Error *e, int code, const char *fmt, ...);
/* Puts "<prefix>: " before the message (keeping code and kind) and returns the code. */
_printf_(2, 3) int error_prefix(Error *e, const char *fmt, ...);
/* The same message, with context after it (" (and ...)"). */
_printf_(2, 3) int error_append(Error *e, const char *fmt, ...);
void error_clear(Error *e);
/* The message, or strerror() of code when there is none. */
const char *error_message(const Error *e);
