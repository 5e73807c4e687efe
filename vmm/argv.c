/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/argv.h"

char **strv_free(char **l) {
        if (!l)
                return NULL;
        for (char **i = l; *i; i++)
                free(*i);
        free(l);
        return NULL;
}

size_t strv_length(char *const *l) {
        size_t n = 0;

        if (!l)
                return 0;
        while (l[n])
                n++;
        return n;
}

/* Takes ownership of s (which may be NULL after a failed allocation). */
static void argv_builder_push(ArgvBuilder *b, char *s) {
        assert(b);

        if (b->error < 0 || !s) {
                if (b->error == 0)
                        b->error = -ENOMEM;
                free(s);
                return;
        }
        /* room for s and the terminating NULL */
        if (b->n + 2 > b->allocated) {
                size_t a = b->allocated ? b->allocated * 2 : 32;
                char **p = realloc(b->argv, a * sizeof(char *));
                if (!p) {
                        b->error = -ENOMEM;
                        free(s);
                        return;
                }
                b->argv = p;
                b->allocated = a;
        }
        b->argv[b->n++] = s;
        b->argv[b->n] = NULL;
}

void argv_builder_add(ArgvBuilder *b, const char *s) {
        assert(s);
        argv_builder_push(b, strdup(s));
}

void argv_builder_addf(ArgvBuilder *b, const char *fmt, ...) {
        char *s = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        argv_builder_push(b, s);
}

void argv_builder_add_qemu_escaped(ArgvBuilder *b, const char *prefix, const char *value,
                                   const char *suffix) {
        size_t lp = prefix ? strlen(prefix) : 0, ls = suffix ? strlen(suffix) : 0, lv = 0;
        char *s, *p;

        assert(value);
        for (const char *c = value; *c; c++)
                lv += *c == ',' ? 2 : 1;

        s = malloc(lp + lv + ls + 1);
        if (!s) {
                argv_builder_push(b, NULL);
                return;
        }
        p = mempcpy(s, prefix ? prefix : "", lp);
        for (const char *c = value; *c; c++) {
                if (*c == ',')
                        *p++ = ',';
                *p++ = *c;
        }
        p = mempcpy(p, suffix ? suffix : "", ls);
        *p = '\0';
        argv_builder_push(b, s);
}

int argv_builder_finish(ArgvBuilder *b, char ***ret_argv) {
        int r;

        assert(b);
        assert(ret_argv);

        if (b->error == 0 && !b->argv) {
                b->argv = calloc(1, sizeof(char *));
                if (!b->argv)
                        b->error = -ENOMEM;
        }
        r = b->error;
        if (r < 0) {
                b->argv = strv_free(b->argv);
                *b = (ArgvBuilder){};
                return r;
        }
        *ret_argv = TAKE_PTR(b->argv);
        *b = (ArgvBuilder){};
        return 0;
}
