/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

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

bool wait_unix_accepting(const char *path, double timeout_s) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timespec t0, t;
        if (strlen(path) >= sizeof(sa.sun_path))
                return false;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return false;
                int r = connect(fd, (struct sockaddr *) &sa, sizeof(sa));
                close(fd);
                if (r == 0)
                        return true;
                clock_gettime(CLOCK_MONOTONIC, &t);
                if ((double) (t.tv_sec - t0.tv_sec) + (double) (t.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s)
                        return false;
                usleep(200);
        }
}
