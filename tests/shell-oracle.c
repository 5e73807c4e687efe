/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/shell-oracle.h"

char *sh(const char *fmt, ...) {
        char cmd[4096], chunk[4096];
        size_t len = 0, k;
        char *out = NULL;
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        FILE *f = popen(cmd, "r");
        if (!f) {
                fprintf(stderr, "cannot run %s\n", cmd);
                abort();
        }
        while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0) {
                char *p = realloc(out, len + k + 1);
                if (!p)
                        abort();
                out = p;
                memcpy(out + len, chunk, k);
                len += k;
        }
        pclose(f);
        if (!out && !(out = malloc(1)))
                abort();
        out[len] = '\0';
        return out;
}

unsigned count_substr(const char *haystack, const char *needle) {
        unsigned n = 0;
        for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}
