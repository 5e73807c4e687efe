/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/crashpoint.h"

/* Defined in this order on purpose: the list must come out sorted, not in section order. */
static int point_b(void) {
        return CRASH_POINT("test-point-b");
}

static int point_a(void) {
        return CRASH_POINT("test-point-a");
}

static int point_c(void) {
        return CRASH_POINT("test-point-c");
}

/* A second place with the same name, not next to the first in the section: listed once, and crashes like
 * the first. */
static int point_a_again(void) {
        return CRASH_POINT("test-point-a");
}

static size_t count_listed(const char *name, size_t *ret_index) {
        const char *const *l;
        size_t n, found = 0;

        l = crash_point_list(&n);
        for (size_t i = 0; i < n; i++)
                if (strcmp(l[i], name) == 0) {
                        if (ret_index)
                                *ret_index = i;
                        found++;
                }
        return found;
}

/* Every point linked into the program is listed, sorted, once, NULL-terminated. (Points in library objects
 * this program does not link are not in it; test-journal checks the journal's own.) */
Test(crashpoint, list_is_complete_sorted_and_unique) {
        const char *const *l;
        size_t n, ia = SIZE_MAX, ib = SIZE_MAX, ic = SIZE_MAX;

        l = crash_point_list(&n);
        cr_assert_not_null(l);
        cr_assert_geq(n, 3);

        cr_assert_eq(count_listed("test-point-a", &ia), 1, "test-point-a must be listed exactly once");
        cr_assert_eq(count_listed("test-point-b", &ib), 1, "test-point-b must be listed exactly once");
        cr_assert_eq(count_listed("test-point-c", &ic), 1, "test-point-c must be listed exactly once");
        cr_assert_lt(ia, ib);
        cr_assert_lt(ib, ic);
        cr_assert_eq(count_listed("test-point", NULL), 0);

        for (size_t i = 1; i < n; i++)
                cr_assert_lt(strcmp(l[i - 1], l[i]), 0, "%s before %s", l[i - 1], l[i]);
        cr_assert_null(l[n]);

        /* Built once: the same array every time. */
        cr_assert_eq(crash_point_list(NULL), l);
}

static unsigned hook_calls;

static int hook(const char *name, void *userdata) {
        hook_calls++;
        return strcmp(name, userdata) == 0;
}

Test(crashpoint, hook_simulates_crash) {
        cr_assert_eq(point_a(), 0);

        crash_point_set_hook(hook, (void *) "test-point-a");
        cr_assert_eq(point_a(), -ECANCELED);
        cr_assert_eq(point_a_again(), -ECANCELED);
        cr_assert_eq(point_b(), 0);
        cr_assert_eq(point_c(), 0);
        cr_assert_eq(hook_calls, 4);

        crash_point_set_hook(NULL, NULL);
        cr_assert_eq(point_a(), 0);
        cr_assert_eq(hook_calls, 4);
}

static int run_child(const char *at, CrashPointHook h, void *userdata, int (*f)(void)) {
        int status;
        pid_t pid;

        pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                if (at)
                        setenv("CHVM_CRASH_AT", at, 1);
                else
                        unsetenv("CHVM_CRASH_AT");
                crash_point_set_hook(h, userdata);

                int r = f();
                _exit(r == 0 ? 0 : r == -ECANCELED ? 2 : 1);
        }

        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status), "child did not exit normally (status %d)", status);
        return WEXITSTATUS(status);
}

Test(crashpoint, env_exits_at_the_named_point_only) {
        cr_assert_eq(run_child("test-point-a", NULL, NULL, point_a), CRASH_POINT_EXIT_CODE);
        cr_assert_eq(run_child("test-point-a", NULL, NULL, point_a_again), CRASH_POINT_EXIT_CODE);
        cr_assert_eq(run_child("test-point-b", NULL, NULL, point_b), CRASH_POINT_EXIT_CODE);
        cr_assert_eq(run_child("test-point-a", NULL, NULL, point_b), 0);
        cr_assert_eq(run_child("test-point-a", NULL, NULL, point_c), 0);
        cr_assert_eq(run_child("test-point", NULL, NULL, point_a), 0, "a prefix must not match");
        cr_assert_eq(run_child("test-point-a-", NULL, NULL, point_a), 0);
        cr_assert_eq(run_child("", NULL, NULL, point_a), 0);
        cr_assert_eq(run_child(NULL, NULL, NULL, point_a), 0);
}

/* The hook is asked first; when it declines, the environment still applies. */
Test(crashpoint, hook_before_env) {
        cr_assert_eq(run_child("test-point-a", hook, (void *) "test-point-a", point_a), 2);
        cr_assert_eq(run_child("test-point-a", hook, (void *) "test-point-b", point_a),
                     CRASH_POINT_EXIT_CODE);
}
