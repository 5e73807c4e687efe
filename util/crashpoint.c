/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/crashpoint.h"

/* Provided by the linker for the section CRASH_POINT() fills; weak so a program without points links. */
extern const char *const __start_chvm_crash_points[] __attribute__((weak));
extern const char *const __stop_chvm_crash_points[] __attribute__((weak));

static CrashPointHook hook;
static void *hook_userdata;

void crash_point_set_hook(CrashPointHook h, void *userdata) {
        hook = h;
        hook_userdata = userdata;
}

int crash_point_hit(const char *name) {
        const char *at;

        if (hook && hook(name, hook_userdata) > 0)
                return -ECANCELED;
        at = getenv("CHVM_CRASH_AT");
        if (at && strcmp(at, name) == 0)
                _exit(CRASH_POINT_EXIT_CODE);
        return 0;
}

static const char **list;
static size_t list_n;
static pthread_once_t list_once = PTHREAD_ONCE_INIT;

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static void list_init(void) {
        size_t n = 0;

        if (__start_chvm_crash_points && __stop_chvm_crash_points)
                n = (size_t) (__stop_chvm_crash_points - __start_chvm_crash_points);
        list = calloc(n + 1, sizeof(char *));
        if (!list)
                abort();
        for (size_t i = 0; i < n; i++)
                if (__start_chvm_crash_points[i])
                        list[list_n++] = __start_chvm_crash_points[i];
        qsort(list, list_n, sizeof(char *), cmp_str);
        size_t k = 0;
        for (size_t i = 0; i < list_n; i++)
                if (k == 0 || strcmp(list[k - 1], list[i]) != 0)
                        list[k++] = list[i];
        list_n = k;
        list[k] = NULL;
}

const char *const *crash_point_list(size_t *ret_n) {
        (void) pthread_once(&list_once, list_init);
        if (ret_n)
                *ret_n = list_n;
        return list;
}
