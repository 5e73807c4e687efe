/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/crashpoint.h"
#include "util/macro.h"

#define CRASH_AT_ENV "CHVM_CRASH_AT"

/* The linker defines these around the section CRASH_POINT() fills, but only if some object put something
 * there; weak, so a program without any crash point still links (and they are then NULL). */
extern const char *const __start_chvm_crash_points[] __attribute__((weak, visibility("hidden")));
extern const char *const __stop_chvm_crash_points[] __attribute__((weak, visibility("hidden")));

static CrashPointHook crash_hook;
static void *crash_hook_userdata;

void crash_point_set_hook(CrashPointHook hook, void *userdata) {
        crash_hook = hook;
        crash_hook_userdata = userdata;
}

int crash_point_hit(const char *name) {
        const char *at;

        if (!name)
                return 0;

        if (crash_hook && crash_hook(name, crash_hook_userdata) > 0)
                return -ECANCELED;

        /* Looked up every time rather than cached: tests set it in a forked child, after the parent may
         * already have passed crash points. The cost is irrelevant next to the I/O around every point. */
        at = getenv(CRASH_AT_ENV);
        if (at && strcmp(at, name) == 0)
                _exit(CRASH_POINT_EXIT_CODE);

        return 0;
}

static const char **crash_list;
static size_t crash_list_n;
static pthread_once_t crash_list_once = PTHREAD_ONCE_INIT;

static int name_compare(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Freed when the program exits or, for a backend module, when it is unloaded. */
__attribute__((destructor)) static void crash_list_free(void) {
        free(crash_list);
        crash_list = NULL;
}

static void crash_list_init(void) {
        const char *const *start = __start_chvm_crash_points, *const *stop = __stop_chvm_crash_points;
        size_t n = 0, k = 0;
        const char **l;

        if (start && stop > start)
                n = (size_t) (stop - start);

        /* Built once, kept for the life of the process. There is no error path in the API, and an empty
         * list would make a test that walks every point pass without testing anything. */
        l = calloc(n + 1, sizeof(char *));
        if (!l) {
                fputs("crash_point_list: out of memory\n", stderr);
                abort();
        }

        for (size_t i = 0; i < n; i++)
                if (start[i])
                        l[k++] = start[i];

        qsort(l, k, sizeof(char *), name_compare);

        /* The same name may be used at several places (and then appears several times). */
        n = k;
        k = 0;
        for (size_t i = 0; i < n; i++)
                if (k == 0 || strcmp(l[k - 1], l[i]) != 0)
                        l[k++] = l[i];
        l[k] = NULL;

        crash_list = l;
        crash_list_n = k;
}

const char *const *crash_point_list(size_t *ret_n) {
        (void) pthread_once(&crash_list_once, crash_list_init);

        if (ret_n)
                *ret_n = crash_list_n;
        return crash_list;
}
