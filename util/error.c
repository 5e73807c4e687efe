/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/error.h"
#include "util/string-table.h"

ErrorKind error_kind_from_errno(int code) {
        switch (code) {
        case -ENOENT:
                return ERROR_NOT_FOUND;
        case -EACCES:
        case -EPERM:
                return ERROR_DENIED;
        case -EINVAL:
        case -ERANGE:
        case -ENAMETOOLONG:
        case -ENOEXEC:
                return ERROR_INVALID;
        case -EBUSY:
        case -EADDRINUSE:
                return ERROR_BUSY;
        case -EEXIST:
                return ERROR_EXISTS;
        default:
                return ERROR_FAILED;
        }
}

static const char *const kind_table[_ERROR_KIND_MAX] = {
        [ERROR_FAILED] = "failed", [ERROR_INVALID] = "invalid", [ERROR_NOT_FOUND] = "not-found",
        [ERROR_EXISTS] = "exists", [ERROR_BUSY] = "busy",       [ERROR_DENIED] = "denied",
};

DEFINE_STRING_TABLE_TO(error_kind, ErrorKind, kind_table, _ERROR_KIND_MAX)

/* vsnprintf into buf; a text cut short ends in "..." so that nobody takes it for the whole. */
_printf_(3, 0) static void format(char *buf, size_t size, const char *fmt, va_list ap) {
        int n = vsnprintf(buf, size, fmt, ap);
        if (n >= 0 && (size_t) n >= size && size > 4)
                memcpy(buf + size - 4, "...", 4);
}

int error_setv(Error *e, int code, ErrorKind kind, const char *fmt, va_list ap) {
        if (!e) /* the caller wants the code only */
                return code < 0 ? code : -EIO;
        e->code = code < 0 ? code : -EIO;
        e->kind = kind;
        format(e->message, sizeof(e->message), fmt, ap);
        return e->code;
}

int error_set(Error *e, int code, ErrorKind kind, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = error_setv(e, code, kind, fmt, ap);
        va_end(ap);
        return r;
}

int error_errno(Error *e, int code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = error_setv(e, code, error_kind_from_errno(code), fmt, ap);
        va_end(ap);
        return r;
}

int error_prefix(Error *e, const char *fmt, ...) {
        char prefix[512], old[sizeof(e->message)];
        va_list ap;
        va_start(ap, fmt);
        format(prefix, sizeof(prefix), fmt, ap);
        va_end(ap);
        memcpy(old, e->message, sizeof(old));
        const char *rest = old[0] ? old : e->code ? strerror(-e->code) : "";
        int n = snprintf(e->message, sizeof(e->message), "%s: %s", prefix, rest);
        if (n >= 0 && (size_t) n >= sizeof(e->message))
                memcpy(e->message + sizeof(e->message) - 4, "...", 4);
        return e->code;
}

int error_append(Error *e, const char *fmt, ...) {
        size_t len = strlen(e->message);
        if (len + 4 < sizeof(e->message)) {
                va_list ap;
                va_start(ap, fmt);
                format(e->message + len, sizeof(e->message) - len, fmt, ap);
                va_end(ap);
        }
        return e->code;
}

void error_clear(Error *e) {
        e->code = 0;
        e->kind = ERROR_FAILED;
        e->message[0] = '\0';
}

const char *error_message(const Error *e) {
        return e->message[0] || e->code == 0 ? e->message : strerror(-e->code);
}
