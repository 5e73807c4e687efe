/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for chvmctl's D-Bus reader (agent/ctl-bus.c): what the agent's socket sends.
 *
 * The input's first byte steers the walk, the rest is one message as received. Whatever it holds, the
 * parser must neither crash nor leak nor read outside it (ASan); an accepted message is walked by its own
 * signature through the public calls (enter, read, exit — leaving some containers early, which skips
 * their rest), and each read of the type the signature names must succeed: a refusal of a value that was
 * announced is -EBADMSG only, never a success with garbage or a type mismatch. Any violation aborts. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ctl-bus.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned steer;

int walk_element(CtlMsg *m, const char *elem, unsigned depth, size_t *count);

static size_t type_length(const char *s) {
        if (s[0] == 'a')
                return 1 + type_length(s + 1);
        if (s[0] != '(')
                return 1;
        size_t i = 1;
        while (s[i] != ')')
                i += type_length(s + i);
        return i + 1;
}

/* Reads the types of sig[0..n) at the message's current level. -EBADMSG ends the walk. */
static int walk(CtlMsg *m, const char *sig, size_t n, unsigned depth) {
        for (size_t i = 0; i < n;) {
                size_t k = type_length(sig + i);
                char t[256], inner[256];
                int r;
                memcpy(t, sig + i, k);
                t[k] = '\0';
                i += k;
                if (t[0] == 'a' || t[0] == '(') {
                        memcpy(inner, t + 1, k - (t[0] == 'a' ? 1 : 2));
                        inner[k - (t[0] == 'a' ? 1 : 2)] = '\0';
                        r = ctl_msg_enter_container(m, t[0] == 'a' ? 'a' : 'r', inner);
                        if (r == -EBADMSG)
                                return r;
                        if (r != 1)
                                abort(); /* announced, so there */
                        steer = steer * 1103515245u + 12345u;
                        if ((steer >> 16) % 4 != 0) {
                                if (t[0] == 'a') {
                                        size_t elems = 0;
                                        for (;;) {
                                                /* an element is one complete type: walk it */
                                                r = walk_element(m, inner, depth + 1, &elems);
                                                if (r <= 0)
                                                        break;
                                        }
                                } else
                                        r = walk(m, inner, strlen(inner), depth + 1);
                                if (r == -EBADMSG)
                                        return r;
                        }
                        r = ctl_msg_exit_container(m);
                        if (r == -EBADMSG)
                                return r;
                        if (r != 1)
                                abort();
                        continue;
                }
                if (t[0] == 'v' || t[0] == 'h' || t[0] == 'd' || t[0] == 'n' || t[0] == 'x')
                        return 0; /* not a type chvmctl reads: the rest is left unread */
                union {
                        const char *s;
                        uint64_t t;
                        uint32_t u;
                        uint16_t q;
                        uint8_t y;
                        int b;
                } v;
                r = ctl_msg_read(m, t, &v);
                if (r == -EBADMSG)
                        return r;
                if (r != 1)
                        abort();
                if ((t[0] == 's' || t[0] == 'o' || t[0] == 'g') && strlen(v.s) > CTL_BUS_MAX_MESSAGE)
                        abort();
                if (t[0] == 'b' && v.b != 0 && v.b != 1)
                        abort();
        }
        return 1;
}

/* One element of an array of elem: 1 read, 0 at the end, -EBADMSG. */
int walk_element(CtlMsg *m, const char *elem, unsigned depth, size_t *count) {
        if (elem[0] == '(' || elem[0] == 'a') {
                /* a container element: entered like any container, 0 at the end */
                char inner[256];
                size_t k = strlen(elem) - (elem[0] == 'a' ? 1 : 2);
                memcpy(inner, elem + 1, k);
                inner[k] = '\0';
                int r = ctl_msg_enter_container(m, elem[0] == 'a' ? 'a' : 'r', inner);
                if (r <= 0)
                        return r;
                if (elem[0] == '(')
                        r = walk(m, inner, k, depth);
                else {
                        size_t n = 0;
                        while ((r = walk_element(m, inner, depth + 1, &n)) > 0)
                                ;
                }
                if (r == -EBADMSG)
                        return r;
                r = ctl_msg_exit_container(m);
                if (r < 0)
                        return r;
                (*count)++;
                return 1;
        }
        if (strchr("vhdnx", elem[0]))
                return 0;
        union {
                const char *s;
                uint64_t t;
        } v;
        int r = ctl_msg_read(m, elem, &v);
        if (r > 0)
                (*count)++;
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        CtlMsg *m = NULL;
        if (size < 1)
                return 0;
        steer = data[0];
        if (ctl_msg_parse(data + 1, size - 1, &m) < 0)
                return 0;
        const char *sig = ctl_msg_signature(m);
        (void) walk(m, sig, strlen(sig), 0);
        /* after the walk (whole or cut short), the top level reads nothing more of another type */
        ctl_msg_free(m);
        return 0;
}
