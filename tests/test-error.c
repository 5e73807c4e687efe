/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* util/error.c: the one error value — its kind from errno, context put in front without cutting the cause
 * short, a message that does not fit marked as cut. */

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "util/error.h"
#include "util/macro.h"

Test(error, kinds_from_errno) {
        static const struct {
                int code;
                ErrorKind kind;
        } cases[] = {
                { -ENOENT, ERROR_NOT_FOUND }, { -EPERM, ERROR_DENIED },    { -EACCES, ERROR_DENIED },
                { -EINVAL, ERROR_INVALID },   { -ENOEXEC, ERROR_INVALID }, { -ERANGE, ERROR_INVALID },
                { -EBUSY, ERROR_BUSY },       { -EADDRINUSE, ERROR_BUSY }, { -EEXIST, ERROR_EXISTS },
                { -EIO, ERROR_FAILED },       { -ENOMEM, ERROR_FAILED },   { -ENOBUFS, ERROR_FAILED },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                cr_assert_eq(error_kind_from_errno(cases[i].code), cases[i].kind, "%s",
                             strerror(-cases[i].code));
        for (int k = 0; k < _ERROR_KIND_MAX; k++)
                cr_assert_not_null(error_kind_to_string((ErrorKind) k));
        cr_assert_null(error_kind_to_string(_ERROR_KIND_MAX));
}

Test(error, set_keeps_code_and_kind) {
        Error e;
        error_clear(&e);
        cr_assert_eq(e.code, 0);
        cr_assert_str_eq(error_message(&e), "");
        cr_assert_eq(error_set(&e, -ENOENT, ERROR_INVALID, "VM %s: no hypervisor binary", "web"), -ENOENT);
        cr_assert_eq(e.kind, ERROR_INVALID, "the kind the failing code chose, not the errno's");
        cr_assert_str_eq(e.message, "VM web: no hypervisor binary");
        cr_assert_eq(error_errno(&e, -EBUSY, "port %u", 80), -EBUSY);
        cr_assert_eq(e.kind, ERROR_BUSY);
        cr_assert_eq(error_errno(&e, 5, "not an errno"), -EIO, "a positive code is no error code");
        error_set(&e, -EIO, ERROR_FAILED, "%s", "");
        cr_assert_str_eq(error_message(&e), strerror(EIO), "no message: the errno's text");
        /* a caller that wants the code only passes no Error */
        cr_assert_eq(error_set(NULL, -EPERM, ERROR_DENIED, "x"), -EPERM);
        cr_assert_eq(error_errno(NULL, -ENOENT, "y"), -ENOENT);
        cr_assert_eq(error_errno(NULL, 3, "z"), -EIO);
}

/* The chain "VM web: taking its network down: <cause>" keeps the whole cause (before: %.600s of it). */
Test(error, prefix_and_append_keep_the_cause_whole) {
        Error e;
        char cause[1200];
        memset(cause, 'c', sizeof(cause) - 1);
        cause[sizeof(cause) - 1] = '\0';
        error_errno(&e, -EIO, "%s", cause);
        cr_assert_eq(error_prefix(&e, "VM %s: taking its network down", "web"), -EIO);
        cr_assert_eq(strncmp(e.message, "VM web: taking its network down: ", 33), 0, "%.60s", e.message);
        cr_assert_eq(strlen(e.message), 33 + strlen(cause));
        cr_assert_eq(strcmp(e.message + 33, cause), 0);
        error_append(&e, " (and %d more)", 2);
        cr_assert(strstr(e.message, "c (and 2 more)"), "%s", e.message + strlen(e.message) - 20);
        cr_assert_eq(e.code, -EIO);
        cr_assert_eq(e.kind, ERROR_FAILED);

        error_clear(&e);
        e.code = -ENOENT;
        error_prefix(&e, "VM x");
        cr_assert_str_eq(e.message, "VM x: No such file or directory");
}

Test(error, too_long_is_marked_cut) {
        Error e;
        char big[ERROR_MESSAGE_MAX + 100];
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        error_errno(&e, -EINVAL, "%s", big);
        cr_assert_eq(strlen(e.message), sizeof(e.message) - 1);
        cr_assert_str_eq(e.message + strlen(e.message) - 3, "...");
        error_errno(&e, -EINVAL, "%s", big + 105); /* fits alone (1530 bytes), not with the prefix */
        error_prefix(&e, "VM %s", "web");
        cr_assert_eq(strncmp(e.message, "VM web: x", 9), 0);
        cr_assert_str_eq(e.message + strlen(e.message) - 3, "...");
        error_append(&e, "more");
        cr_assert_str_eq(e.message + strlen(e.message) - 3, "...", "nothing is appended to a full message");
}
