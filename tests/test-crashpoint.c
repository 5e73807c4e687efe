/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/crashpoint.h"

static int point_b(void) {
        return CRASH_POINT("test-point-b");
}

static int point_a(void) {
        return CRASH_POINT("test-point-a");
}

static bool listed(const char *name) {
        size_t n;
        const char *const *l = crash_point_list(&n);
        for (size_t i = 0; i < n; i++)
                if (strcmp(l[i], name) == 0)
                        return true;
        return false;
}

/* Every point linked into the program is listed, sorted, once, NULL-terminated. (Points in library objects
 * this program does not link are not in it; test-journal checks the journal's own.) */
Test(crashpoint, list_is_complete_and_sorted) {
        size_t n;
        const char *const *l = crash_point_list(&n);
        cr_assert(listed("test-point-a") && listed("test-point-b"));
        cr_assert_not(listed("test-point"));
        for (size_t i = 1; i < n; i++)
                cr_assert_lt(strcmp(l[i - 1], l[i]), 0, "%s before %s", l[i - 1], l[i]);
        cr_assert_null(l[n]);
}

static int hook(const char *name, void *userdata) {
        return strcmp(name, userdata) == 0;
}

Test(crashpoint, hook_simulates_crash) {
        cr_assert_eq(point_a(), 0);
        crash_point_set_hook(hook, (void *) "test-point-a");
        cr_assert_eq(point_a(), -ECANCELED);
        cr_assert_eq(point_b(), 0);
        crash_point_set_hook(NULL, NULL);
        cr_assert_eq(point_a(), 0);
}

static int run_child(const char *at, int (*f)(void)) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                setenv("CHVM_CRASH_AT", at, 1);
                _exit(f() == 0 ? 0 : 1);
        }
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status));
        return WEXITSTATUS(status);
}

Test(crashpoint, env_exits_at_the_named_point_only) {
        cr_assert_eq(run_child("test-point-a", point_a), CRASH_POINT_EXIT_CODE);
        cr_assert_eq(run_child("test-point-a", point_b), 0);
        cr_assert_eq(run_child("test-point", point_a), 0);
}
