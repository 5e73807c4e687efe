/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* chvmctl's D-Bus client (see ctl-bus.h). The wire format is the D-Bus specification's: a 16-byte fixed
 * header (endianness, type, flags, version, body length, serial, the length of the header fields), the
 * header fields as a(yv), padding to 8, the body; every value aligned to its size from the start of the
 * message (the body starts 8-aligned, so offsets within the body align the same way). */

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/ctl-bus.h"
#include "util/clock.h"
#include "util/utf8.h"

enum {
        MSG_CALL = 1,
        MSG_REPLY = 2,
        MSG_ERROR = 3,
        MSG_SIGNAL = 4,
};

enum {
        FIELD_PATH = 1,
        FIELD_INTERFACE = 2,
        FIELD_MEMBER = 3,
        FIELD_ERROR_NAME = 4,
        FIELD_REPLY_SERIAL = 5,
        FIELD_SIGNATURE = 8,
};

#define MAX_DEPTH 16 /* containers open at once; the agent's answers nest 3 deep */
#define MAX_SIG 255

typedef struct Level {
        char kind; /* 0 the message, 'a' an array, 'r' a struct */
        const char *sig; /* the types of the level: its members, or for an array its element type */
        size_t sig_len, sig_pos;
        size_t end; /* arrays: the body offset where its elements end */
        size_t len_at; /* writing an array: where its length goes, and where its elements begin */
        size_t begin;
} Level;

struct CtlMsg {
        int type;
        bool swap; /* written big-endian */
        uint32_t serial, reply_serial;
        char *path, *interface, *member, *error_name;
        char sig[MAX_SIG + 1];
        char *raw; /* received: the whole message; body points into it */
        uint8_t *body;
        size_t size, alloc;
        size_t pos; /* reading */
        Level levels[MAX_DEPTH];
        size_t depth;
        char level_sigs[MAX_DEPTH][MAX_SIG + 1];
};

struct CtlBus {
        int fd;
        bool authenticated;
        uint32_t serial;
        char *buf;
        size_t size, alloc;
};

/* --- signatures -------------------------------------------------------------------------------------- */

static bool is_basic(char c) {
        return strchr("ybnqiuxtdsogh", c) != NULL && c != '\0';
}

static size_t type_length(const char *s, size_t n, unsigned depth, bool array_element);

/* The length of the complete type at s (one basic type, a variant, "a" + a complete type or a dict entry,
 * a struct), or 0. */
static size_t complete_type_length(const char *s, size_t n, unsigned depth) {
        return type_length(s, n, depth, false);
}

static size_t type_length(const char *s, size_t n, unsigned depth, bool array_element) {
        if (n == 0 || depth > 32)
                return 0;
        if (is_basic(s[0]) || s[0] == 'v')
                return 1;
        if (s[0] == 'a') {
                size_t k = type_length(s + 1, n - 1, depth + 1, true);
                return k ? k + 1 : 0;
        }
        if (s[0] == '{') {
                /* a dict entry: a basic key and one complete value, as an array's element only */
                if (!array_element || n < 4 || !is_basic(s[1]))
                        return 0;
                size_t k = complete_type_length(s + 2, n - 2, depth + 1);
                return k && 2 + k < n && s[2 + k] == '}' ? k + 3 : 0;
        }
        if (s[0] == '(') {
                size_t i = 1;
                while (i < n && s[i] != ')') {
                        size_t k = complete_type_length(s + i, n - i, depth + 1);
                        if (k == 0)
                                return 0;
                        i += k;
                }
                return i < n && i > 1 ? i + 1 : 0;
        }
        return 0;
}

static bool signature_valid(const char *s, size_t n) {
        for (size_t i = 0; i < n;) {
                size_t k = complete_type_length(s + i, n - i, 0);
                if (k == 0)
                        return false;
                i += k;
        }
        return true;
}

static size_t alignment_of(char c) {
        switch (c) {
        case 'y':
        case 'g':
        case 'v':
                return 1;
        case 'n':
        case 'q':
                return 2;
        case 'x':
        case 't':
        case 'd':
        case '(':
        case '{':
                return 8;
        default: /* b i u h s o a */
                return 4;
        }
}

/* --- writing ----------------------------------------------------------------------------------------- */

static int reserve(CtlMsg *m, size_t n) {
        if (m->size + n <= m->alloc)
                return 0;
        if (m->size + n > CTL_BUS_MAX_MESSAGE)
                return -E2BIG;
        size_t a = m->alloc ? m->alloc : 256;
        while (a < m->size + n)
                a *= 2;
        uint8_t *p = realloc(m->body, a);
        if (!p)
                return -ENOMEM;
        memset(p + m->alloc, 0, a - m->alloc);
        m->body = p;
        m->alloc = a;
        return 0;
}

static int put(CtlMsg *m, size_t align, const void *data, size_t n) {
        size_t pad = (align - m->size % align) % align;
        int r = reserve(m, pad + n);
        if (r < 0)
                return r;
        memset(m->body + m->size, 0, pad);
        m->size += pad;
        if (data)
                memcpy(m->body + m->size, data, n);
        m->size += n;
        return 0;
}

static int put_string(CtlMsg *m, char type, const char *s) {
        if (!s)
                return -EINVAL;
        size_t n = strlen(s);
        if (type == 'g') {
                if (n > MAX_SIG)
                        return -EINVAL;
                uint8_t len = (uint8_t) n;
                int r = put(m, 1, &len, 1);
                return r < 0 ? r : put(m, 1, s, n + 1);
        }
        for (size_t i = 0; i < n;) {
                size_t k = utf8_char_length(s + i, n - i);
                if (k == 0)
                        return -EINVAL; /* the agent would refuse the message */
                i += k;
        }
        if (n > UINT32_MAX)
                return -EINVAL;
        uint32_t len = (uint32_t) n;
        int r = put(m, 4, &len, 4);
        return r < 0 ? r : put(m, 1, s, n + 1);
}

/* One complete type of types (a basic type or a struct of them) from ap. */
static int append_one(CtlMsg *m, const char *t, size_t n, va_list *ap) {
        switch (t[0]) {
        case 'y': {
                uint8_t v = (uint8_t) va_arg(*ap, int);
                return put(m, 1, &v, 1);
        }
        case 'b': {
                uint32_t v = va_arg(*ap, int) ? 1 : 0;
                return put(m, 4, &v, 4);
        }
        case 'q': {
                uint16_t v = (uint16_t) va_arg(*ap, int);
                return put(m, 2, &v, 2);
        }
        case 'u':
        case 'i': {
                uint32_t v = va_arg(*ap, uint32_t);
                return put(m, 4, &v, 4);
        }
        case 't': {
                uint64_t v = va_arg(*ap, uint64_t);
                return put(m, 8, &v, 8);
        }
        case 's':
        case 'o':
        case 'g':
                return put_string(m, t[0], va_arg(*ap, const char *));
        case '(': {
                int r = put(m, 8, NULL, 0);
                for (size_t i = 1; r >= 0 && i + 1 < n;) {
                        size_t k = complete_type_length(t + i, n - 1 - i, 0);
                        r = k ? append_one(m, t + i, k, ap) : -EINVAL;
                        i += k;
                }
                return r;
        }
        default:
                return -EINVAL;
        }
}

static bool appendable(const char *t, size_t n) {
        if (n == 1)
                return strchr("ybquitsog", t[0]) != NULL;
        if (t[0] != '(')
                return false;
        for (size_t i = 1; i + 1 < n; i++)
                if (!strchr("ybquitsog", t[i]))
                        return false; /* structs of basic types only */
        return true;
}

/* What the next appended complete type t adds to the message's signature: at the top level it is added;
 * inside an array it must be the element type. */
static int note_type(CtlMsg *m, const char *t, size_t n) {
        if (m->depth > 0) {
                const Level *l = &m->levels[m->depth - 1];
                return l->sig_len == n && memcmp(l->sig, t, n) == 0 ? 0 : -EINVAL;
        }
        size_t have = strlen(m->sig);
        if (have + n > MAX_SIG)
                return -E2BIG;
        memcpy(m->sig + have, t, n);
        m->sig[have + n] = '\0';
        return 0;
}

int ctl_msg_append(CtlMsg *m, const char *types, ...) {
        va_list ap;
        int r = 0;

        if (!m || !types || m->raw)
                return -EINVAL;
        size_t size = m->size, sig_len = strlen(m->sig); /* all or nothing */
        va_start(ap, types);
        for (size_t i = 0, n = strlen(types); i < n && r >= 0;) {
                size_t k = complete_type_length(types + i, n - i, 0);
                if (k == 0 || !appendable(types + i, k)) {
                        r = -EINVAL;
                        break;
                }
                r = note_type(m, types + i, k);
                if (r >= 0)
                        r = append_one(m, types + i, k, &ap);
                i += k;
        }
        va_end(ap);
        if (r < 0) {
                m->size = size;
                m->sig[sig_len] = '\0';
        }
        return r;
}

int ctl_msg_open_container(CtlMsg *m, char type, const char *contents) {
        if (!m || m->raw || type != 'a' || !contents || m->depth >= MAX_DEPTH)
                return -EINVAL;
        size_t n = strlen(contents);
        if (complete_type_length(contents, n, 0) != n || !appendable(contents, n))
                return -EINVAL;
        char t[MAX_SIG + 1];
        if (n + 1 > MAX_SIG)
                return -EINVAL;
        t[0] = 'a';
        memcpy(t + 1, contents, n + 1);
        int r = note_type(m, t, n + 1);
        if (r < 0)
                return r;
        r = put(m, 4, NULL, 4);
        if (r < 0)
                return r;
        size_t len_at = m->size - 4;
        r = put(m, alignment_of(contents[0]), NULL, 0); /* padding before the first element: not counted */
        if (r < 0)
                return r;
        Level *l = &m->levels[m->depth];
        memcpy(m->level_sigs[m->depth], contents, n + 1);
        *l = (Level){
                .kind = 'a', .sig = m->level_sigs[m->depth], .sig_len = n, .len_at = len_at, .begin = m->size
        };
        m->depth++;
        return 0;
}

int ctl_msg_close_container(CtlMsg *m) {
        if (!m || m->raw || m->depth == 0)
                return -EINVAL;
        Level *l = &m->levels[--m->depth];
        uint32_t len = (uint32_t) (m->size - l->begin);
        memcpy(m->body + l->len_at, &len, 4);
        return 0;
}

int ctl_msg_new_call(const char *path, const char *interface, const char *member, CtlMsg **ret) {
        if (!path || !interface || !member || !ret)
                return -EINVAL;
        CtlMsg *m = calloc(1, sizeof(CtlMsg));
        if (!m)
                return -ENOMEM;
        m->type = MSG_CALL;
        m->path = strdup(path);
        m->interface = strdup(interface);
        m->member = strdup(member);
        if (!m->path || !m->interface || !m->member) {
                ctl_msg_free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

CtlMsg *ctl_msg_free(CtlMsg *m) {
        if (!m)
                return NULL;
        free(m->path);
        free(m->interface);
        free(m->member);
        free(m->error_name);
        if (m->raw)
                free(m->raw);
        else
                free(m->body);
        free(m);
        return NULL;
}

static int put_field(CtlMsg *h, uint8_t code, char type, const char *value) {
        char sig[2] = { type, '\0' };
        int r = put(h, 8, &code, 1);
        if (r >= 0)
                r = put_string(h, 'g', sig);
        return r < 0 ? r : put_string(h, type, value);
}

int ctl_msg_serialize(CtlMsg *m, uint32_t serial, void **ret, size_t *ret_size) {
        if (!m || m->raw || m->depth > 0 || m->type != MSG_CALL || serial == 0)
                return -EINVAL;
        /* The header is built as a message of its own: the same alignment rules from offset 0. */
        CtlMsg h = {};
        uint8_t fixed[16] = { __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__ ? 'B' : 'l', MSG_CALL, 0, 1 };
        uint32_t body_len = (uint32_t) m->size;
        memcpy(fixed + 4, &body_len, 4);
        memcpy(fixed + 8, &serial, 4);
        int r = put(&h, 1, fixed, 16);
        if (r >= 0)
                r = put_field(&h, FIELD_PATH, 'o', m->path);
        if (r >= 0)
                r = put_field(&h, FIELD_INTERFACE, 's', m->interface);
        if (r >= 0)
                r = put_field(&h, FIELD_MEMBER, 's', m->member);
        if (r >= 0 && m->sig[0])
                r = put_field(&h, FIELD_SIGNATURE, 'g', m->sig);
        if (r >= 0) {
                uint32_t fields_len = (uint32_t) (h.size - 16);
                memcpy(h.body + 12, &fields_len, 4);
                r = put(&h, 8, NULL, 0);
        }
        if (r >= 0 && m->size > 0)
                r = put(&h, 1, m->body, m->size);
        if (r < 0) {
                free(h.body);
                return r;
        }
        *ret = h.body;
        *ret_size = h.size;
        return 0;
}

/* --- reading ----------------------------------------------------------------------------------------- */

static uint16_t get16(const CtlMsg *m, const uint8_t *p) {
        uint16_t v;
        memcpy(&v, p, 2);
        return m->swap ? __builtin_bswap16(v) : v;
}

static uint32_t get32(const CtlMsg *m, const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, 4);
        return m->swap ? __builtin_bswap32(v) : v;
}

static uint64_t get64(const CtlMsg *m, const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, 8);
        return m->swap ? __builtin_bswap64(v) : v;
}

/* Moves to the alignment; the padding must be zeros and inside limit. */
static int skip_pad(const uint8_t *base, size_t *pos, size_t align, size_t limit) {
        size_t to = (*pos + align - 1) / align * align;
        if (to > limit)
                return -EBADMSG;
        for (size_t i = *pos; i < to; i++)
                if (base[i] != 0)
                        return -EBADMSG;
        *pos = to;
        return 0;
}

/* A string, object path or signature at *pos of base[0..limit): its text. */
static int get_string(const CtlMsg *m, const uint8_t *base, size_t *pos, size_t limit, char type,
                      const char **ret) {
        size_t len;
        int r;
        if (type == 'g') {
                if (*pos >= limit)
                        return -EBADMSG;
                len = base[(*pos)++];
        } else {
                r = skip_pad(base, pos, 4, limit);
                if (r < 0 || limit - *pos < 4)
                        return -EBADMSG;
                len = get32(m, base + *pos);
                *pos += 4;
        }
        if (len >= limit - *pos || base[*pos + len] != '\0')
                return -EBADMSG;
        const char *s = (const char *) base + *pos;
        if (memchr(s, '\0', len))
                return -EBADMSG;
        if (type == 'g') {
                if (!signature_valid(s, len))
                        return -EBADMSG;
        } else
                for (size_t i = 0; i < len;) {
                        size_t k = utf8_char_length(s + i, len - i);
                        if (k == 0)
                                return -EBADMSG;
                        i += k;
                }
        if (type == 'o' && s[0] != '/')
                return -EBADMSG;
        *pos += len + 1;
        *ret = s;
        return 0;
}

/* One value of basic type c; ret may be NULL (skipped). */
static int get_basic(const CtlMsg *m, const uint8_t *base, size_t *pos, size_t limit, char c, void *ret) {
        size_t size = c == 'y' ? 1 : c == 'n' || c == 'q' ? 2 : c == 'x' || c == 't' || c == 'd' ? 8 : 4;
        if (c == 's' || c == 'o' || c == 'g') {
                const char *s;
                int r = get_string(m, base, pos, limit, c, &s);
                if (r >= 0 && ret)
                        *(const char **) ret = s;
                return r;
        }
        int r = skip_pad(base, pos, size, limit);
        if (r < 0 || limit - *pos < size)
                return -EBADMSG;
        const uint8_t *p = base + *pos;
        *pos += size;
        if (size == 1) {
                if (ret)
                        *(uint8_t *) ret = *p;
        } else if (size == 2) {
                if (ret)
                        *(uint16_t *) ret = get16(m, p);
        } else if (size == 8) {
                if (ret)
                        *(uint64_t *) ret = get64(m, p);
        } else {
                uint32_t v = get32(m, p);
                if (c == 'b' && v > 1)
                        return -EBADMSG;
                if (ret) {
                        if (c == 'b')
                                *(int *) ret = (int) v;
                        else
                                *(uint32_t *) ret = v;
                }
        }
        return 0;
}

/* Skips one value of the complete type t (n chars) in the body. */
static int skip_value(CtlMsg *m, const char *t, size_t n, size_t limit, unsigned depth) {
        if (depth > 32)
                return -EBADMSG;
        if (is_basic(t[0]))
                return get_basic(m, m->body, &m->pos, limit, t[0], NULL);
        if (t[0] == 'v') {
                const char *sig;
                int r = get_string(m, m->body, &m->pos, limit, 'g', &sig);
                if (r < 0)
                        return r;
                size_t k = strlen(sig);
                if (complete_type_length(sig, k, 0) != k)
                        return -EBADMSG;
                return skip_value(m, sig, k, limit, depth + 1);
        }
        if (t[0] == 'a') {
                int r = skip_pad(m->body, &m->pos, 4, limit);
                if (r < 0 || limit - m->pos < 4)
                        return -EBADMSG;
                uint32_t len = get32(m, m->body + m->pos);
                m->pos += 4;
                r = skip_pad(m->body, &m->pos, alignment_of(t[1]), limit);
                if (r < 0 || len > limit - m->pos)
                        return -EBADMSG;
                size_t end = m->pos + len;
                while (r >= 0 && m->pos < end)
                        r = skip_value(m, t + 1, n - 1, end, depth + 1);
                return r < 0 ? r : m->pos == end ? 0 : -EBADMSG;
        }
        if (t[0] == '(' || t[0] == '{') {
                int r = skip_pad(m->body, &m->pos, 8, limit);
                for (size_t i = 1; r >= 0 && i + 1 < n;) {
                        size_t k = complete_type_length(t + i, n - 1 - i, 0);
                        if (k == 0)
                                return -EBADMSG;
                        r = skip_value(m, t + i, k, limit, depth + 1);
                        i += k;
                }
                return r;
        }
        return -EBADMSG;
}

static size_t level_limit(const CtlMsg *m) {
        for (size_t d = m->depth; d > 0; d--)
                if (m->levels[d - 1].kind == 'a')
                        return m->levels[d - 1].end;
        return m->size;
}

/* The next complete type to read at the current level, or NULL at its end (*ret_n 0). */
static const char *next_type(const CtlMsg *m, size_t *ret_n) {
        const Level *l = &m->levels[m->depth - 1];
        *ret_n = 0;
        if (l->kind == 'a') {
                if (m->pos >= l->end)
                        return NULL;
                *ret_n = l->sig_len;
                return l->sig;
        }
        if (l->sig_pos >= l->sig_len)
                return NULL;
        *ret_n = complete_type_length(l->sig + l->sig_pos, l->sig_len - l->sig_pos, 0);
        return *ret_n ? l->sig + l->sig_pos : NULL;
}

static void consumed(CtlMsg *m, size_t n) {
        Level *l = &m->levels[m->depth - 1];
        if (l->kind != 'a')
                l->sig_pos += n;
}

static int read_one(CtlMsg *m, const char *t, size_t n, size_t limit, va_list *ap) {
        if (t[0] == '(') {
                int r = skip_pad(m->body, &m->pos, 8, limit);
                for (size_t i = 1; r >= 0 && i + 1 < n;) {
                        size_t k = complete_type_length(t + i, n - 1 - i, 0);
                        r = k ? read_one(m, t + i, k, limit, ap) : -EINVAL;
                        i += k;
                }
                return r;
        }
        if (n != 1 || !is_basic(t[0]))
                return -EINVAL;
        return get_basic(m, m->body, &m->pos, limit, t[0], va_arg(*ap, void *));
}

int ctl_msg_read(CtlMsg *m, const char *types, ...) {
        va_list ap;
        int r = 1;

        if (!m || !m->raw || !types)
                return -EINVAL;
        va_start(ap, types);
        for (size_t i = 0, n = strlen(types); i < n;) {
                size_t k = complete_type_length(types + i, n - i, 0), have;
                const char *next = next_type(m, &have);
                if (k == 0 || !appendable(types + i, k)) {
                        r = -EINVAL;
                        break;
                }
                if (!next) {
                        r = i == 0 ? 0 : -ENXIO;
                        break;
                }
                if (have != k || memcmp(next, types + i, k) != 0) {
                        r = -ENXIO;
                        break;
                }
                r = read_one(m, types + i, k, level_limit(m), &ap);
                if (r < 0)
                        break;
                consumed(m, k);
                r = 1;
                i += k;
        }
        va_end(ap);
        return r;
}

int ctl_msg_enter_container(CtlMsg *m, char type, const char *contents) {
        if (!m || !m->raw || !contents || (type != 'a' && type != 'r') || m->depth >= MAX_DEPTH)
                return -EINVAL;
        size_t n = strlen(contents), have;
        if (n + 2 > MAX_SIG)
                return -EINVAL;
        const char *next = next_type(m, &have);
        if (!next)
                return 0;
        bool match = type == 'a' ? have == n + 1 && next[0] == 'a' && memcmp(next + 1, contents, n) == 0
                                 : have == n + 2 && next[0] == '(' && memcmp(next + 1, contents, n) == 0;
        if (!match)
                return -ENXIO;
        size_t limit = level_limit(m);
        Level l = { .kind = type, .sig = m->level_sigs[m->depth], .sig_len = n };
        memcpy(m->level_sigs[m->depth], contents, n + 1);
        if (type == 'a') {
                int r = skip_pad(m->body, &m->pos, 4, limit);
                if (r < 0 || limit - m->pos < 4)
                        return -EBADMSG;
                uint32_t len = get32(m, m->body + m->pos);
                m->pos += 4;
                r = skip_pad(m->body, &m->pos, alignment_of(contents[0]), limit);
                if (r < 0 || len > limit - m->pos)
                        return -EBADMSG;
                l.end = m->pos + len;
        } else if (skip_pad(m->body, &m->pos, 8, limit) < 0)
                return -EBADMSG;
        consumed(m, have);
        m->levels[m->depth++] = l;
        return 1;
}

int ctl_msg_exit_container(CtlMsg *m) {
        if (!m || !m->raw || m->depth <= 1)
                return -EINVAL;
        Level *l = &m->levels[m->depth - 1];
        size_t limit = level_limit(m);
        int r = 0;
        if (l->kind == 'a') {
                while (r >= 0 && m->pos < l->end)
                        r = skip_value(m, l->sig, l->sig_len, l->end, 0);
                if (r >= 0 && m->pos != l->end)
                        r = -EBADMSG;
        } else
                for (size_t n; r >= 0 && next_type(m, &n);) {
                        r = skip_value(m, l->sig + l->sig_pos, n, limit, 0);
                        l->sig_pos += n;
                }
        if (r < 0)
                return r;
        m->depth--;
        return 1;
}

int ctl_msg_read_strv(CtlMsg *m, char ***ret) {
        int r = ctl_msg_enter_container(m, 'a', "s");
        if (r <= 0)
                return r < 0 ? r : -ENXIO;
        char **v = calloc(1, sizeof(char *));
        size_t n = 0;
        if (!v)
                return -ENOMEM;
        const char *s;
        while ((r = ctl_msg_read(m, "s", &s)) > 0) {
                char **w = realloc(v, (n + 2) * sizeof(char *));
                if (!w) {
                        r = -ENOMEM;
                        break;
                }
                v = w;
                v[n] = strdup(s);
                v[n + 1] = NULL;
                if (!v[n]) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        if (r >= 0)
                r = ctl_msg_exit_container(m);
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free(v[i]);
                free(v);
                return r;
        }
        *ret = v;
        return 0;
}

/* The header fields of a received message; unknown ones are skipped. */
static int parse_fields(CtlMsg *m, const uint8_t *raw, size_t end) {
        size_t pos = 16;
        while (pos < end) {
                int r = skip_pad(raw, &pos, 8, end);
                if (r < 0 || pos >= end)
                        return -EBADMSG;
                uint8_t code = raw[pos++];
                const char *sig, *s = NULL;
                r = get_string(m, raw, &pos, end, 'g', &sig);
                if (r < 0 || strlen(sig) != 1 || !is_basic(sig[0]))
                        return -EBADMSG;
                uint32_t u = 0;
                void *out = sig[0] == 's' || sig[0] == 'o' || sig[0] == 'g' ? (void *) &s
                            : sig[0] == 'u'                                 ? (void *) &u
                                                                            : NULL;
                r = get_basic(m, raw, &pos, end, sig[0], out);
                if (r < 0)
                        return r;
                switch (code) {
                case FIELD_ERROR_NAME:
                        if (sig[0] != 's' || m->error_name)
                                return -EBADMSG;
                        m->error_name = strdup(s);
                        if (!m->error_name)
                                return -ENOMEM;
                        break;
                case FIELD_REPLY_SERIAL:
                        if (sig[0] != 'u' || u == 0)
                                return -EBADMSG;
                        m->reply_serial = u;
                        break;
                case FIELD_SIGNATURE:
                        if (sig[0] != 'g')
                                return -EBADMSG;
                        snprintf(m->sig, sizeof(m->sig), "%s", s);
                        break;
                default:
                        break;
                }
        }
        return 0;
}

/* The size of the message that starts at data, once its fixed header is there: 0 if fewer than 16 bytes,
 * -EBADMSG if it cannot be one. */
static ssize_t message_size(const uint8_t *data, size_t size) {
        if (size < 16)
                return 0;
        if ((data[0] != 'l' && data[0] != 'B') || data[3] != 1 || data[1] == 0)
                return -EBADMSG;
        bool swap = (data[0] == 'B') != (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__);
        uint32_t body, fields;
        memcpy(&body, data + 4, 4);
        memcpy(&fields, data + 12, 4);
        if (swap) {
                body = __builtin_bswap32(body);
                fields = __builtin_bswap32(fields);
        }
        uint64_t total = ALIGN8(16 + (uint64_t) fields) + body;
        return total > CTL_BUS_MAX_MESSAGE ? -EBADMSG : (ssize_t) total;
}

int ctl_msg_parse(const void *data, size_t size, CtlMsg **ret) {
        ssize_t total = message_size(data, size);
        if (total <= 0 || (size_t) total != size)
                return -EBADMSG;
        _cleanup_(ctl_msg_freep) CtlMsg *m = calloc(1, sizeof(CtlMsg));
        if (!m)
                return -ENOMEM;
        m->raw = malloc(size);
        if (!m->raw)
                return -ENOMEM;
        memcpy(m->raw, data, size);
        const uint8_t *raw = (const uint8_t *) m->raw;
        m->swap = (raw[0] == 'B') != (__BYTE_ORDER__ == __ORDER_BIG_ENDIAN__);
        m->type = raw[1];
        m->serial = get32(m, raw + 8);
        size_t fields_end = 16 + get32(m, raw + 12);
        size_t body_at = ALIGN8(fields_end);
        int r = parse_fields(m, raw, fields_end);
        if (r < 0)
                return r;
        for (size_t i = fields_end; i < body_at; i++)
                if (raw[i] != 0)
                        return -EBADMSG;
        if (m->type == MSG_ERROR && !m->error_name)
                return -EBADMSG;
        if ((m->type == MSG_REPLY || m->type == MSG_ERROR) && m->reply_serial == 0)
                return -EBADMSG;
        m->body = (uint8_t *) m->raw + body_at;
        m->size = size - body_at;
        size_t n = strlen(m->sig);
        m->levels[0] = (Level){ .kind = 0, .sig = m->sig, .sig_len = n };
        m->depth = 1;
        *ret = TAKE_PTR(m);
        return 0;
}

int ctl_msg_type(const CtlMsg *m) {
        return m ? m->type : -EINVAL;
}

const char *ctl_msg_signature(const CtlMsg *m) {
        return m ? m->sig : NULL;
}

const char *ctl_msg_error_name(const CtlMsg *m) {
        return m ? m->error_name : NULL;
}

/* --- the connection ---------------------------------------------------------------------------------- */

void ctl_bus_error_free(CtlBusError *e) {
        if (!e)
                return;
        free(e->name);
        free(e->message);
        *e = (CtlBusError){};
}

static int send_all(int fd, const void *data, size_t size) {
        const char *p = data;
        while (size > 0) {
                ssize_t k = send(fd, p, size, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                p += k;
                size -= (size_t) k;
        }
        return 0;
}

int ctl_bus_connect(const char *path, CtlBus **ret) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (!path || strlen(path) >= sizeof(sa.sun_path))
                return -EINVAL;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return negative_errno();
        /* EXTERNAL with our uid as the initial response (hex of its decimal digits), and BEGIN with it: the
         * server answers OK or REJECTED, read by the first call before it sends. */
        char uid[16], line[64];
        int n = snprintf(uid, sizeof(uid), "%u", (unsigned) geteuid());
        size_t k = 0;
        line[k++] = '\0';
        k += (size_t) snprintf(line + k, sizeof(line) - k, "AUTH EXTERNAL ");
        for (int i = 0; i < n; i++)
                k += (size_t) snprintf(line + k, sizeof(line) - k, "%02x", (unsigned char) uid[i]);
        k += (size_t) snprintf(line + k, sizeof(line) - k, "\r\nBEGIN\r\n");
        int r = send_all(fd, line, k);
        if (r < 0)
                return r;
        CtlBus *b = calloc(1, sizeof(CtlBus));
        if (!b)
                return -ENOMEM;
        b->fd = TAKE_FD(fd);
        *ret = b;
        return 0;
}

CtlBus *ctl_bus_close(CtlBus *b) {
        if (!b)
                return NULL;
        safe_close(b->fd);
        free(b->buf);
        free(b);
        return NULL;
}

/* More bytes from the socket until the deadline. */
static int fill(CtlBus *b, uint64_t deadline) {
        if (b->size == b->alloc) {
                size_t a = b->alloc ? b->alloc * 2 : 4096;
                if (a > CTL_BUS_MAX_MESSAGE + 4096)
                        return -EBADMSG;
                char *p = realloc(b->buf, a);
                if (!p)
                        return -ENOMEM;
                b->buf = p;
                b->alloc = a;
        }
        for (;;) {
                uint64_t now = monotonic_usec();
                if (now >= deadline)
                        return -ETIMEDOUT;
                uint64_t left_ms = (deadline - now + 999) / 1000;
                struct pollfd p = { .fd = b->fd, .events = POLLIN };
                int k = poll(&p, 1, left_ms > INT32_MAX ? INT32_MAX : (int) left_ms);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                if (k == 0)
                        continue; /* the deadline decides */
                ssize_t got = recv(b->fd, b->buf + b->size, b->alloc - b->size, 0);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return negative_errno();
                if (got == 0)
                        return -ECONNRESET;
                b->size += (size_t) got;
                return 0;
        }
}

static void drop(CtlBus *b, size_t n) {
        memmove(b->buf, b->buf + n, b->size - n);
        b->size -= n;
}

/* The server's answer to the authentication: "OK <guid>". */
static int read_auth(CtlBus *b, uint64_t deadline) {
        for (;;) {
                char *e = b->size ? memmem(b->buf, b->size, "\r\n", 2) : NULL;
                if (e) {
                        size_t len = (size_t) (e - b->buf);
                        bool ok = len >= 3 && memcmp(b->buf, "OK ", 3) == 0;
                        bool rejected = len >= 8 && memcmp(b->buf, "REJECTED", 8) == 0;
                        drop(b, len + 2);
                        if (!ok)
                                return rejected ? -EACCES : -EPROTO;
                        b->authenticated = true;
                        return 0;
                }
                if (b->size > 512)
                        return -EPROTO;
                int r = fill(b, deadline);
                if (r < 0)
                        return r;
        }
}

static int read_message(CtlBus *b, uint64_t deadline, CtlMsg **ret) {
        for (;;) {
                ssize_t total = message_size((const uint8_t *) b->buf, b->size);
                if (total < 0)
                        return (int) total;
                if (total > 0 && b->size >= (size_t) total) {
                        int r = ctl_msg_parse(b->buf, (size_t) total, ret);
                        drop(b, (size_t) total);
                        return r;
                }
                int r = fill(b, deadline);
                if (r < 0)
                        return r;
        }
}

int ctl_bus_call(CtlBus *b, CtlMsg *m, uint64_t timeout_usec, CtlBusError *e, CtlMsg **ret_reply) {
        _cleanup_free_ void *wire = NULL;
        size_t size;
        uint64_t deadline = monotonic_usec() + timeout_usec;
        int r;

        if (!b || !m || !e)
                return -EINVAL;
        *e = (CtlBusError){};
        uint32_t serial = ++b->serial;
        r = ctl_msg_serialize(m, serial, &wire, &size);
        if (r < 0)
                return r;
        /* Only after OK: sd-bus takes the first message only from a read of its own after BEGIN (sent in
         * one piece with the AUTH line, so the server reads both at once and answers after both). */
        if (!b->authenticated && (r = read_auth(b, deadline)) < 0)
                return r;
        r = send_all(b->fd, wire, size);
        if (r < 0)
                return r;
        for (;;) {
                _cleanup_(ctl_msg_freep) CtlMsg *reply = NULL;
                r = read_message(b, deadline, &reply);
                if (r < 0)
                        return r;
                if ((reply->type != MSG_REPLY && reply->type != MSG_ERROR) || reply->reply_serial != serial)
                        continue; /* a signal (VMStateChanged), or not ours */
                if (reply->type == MSG_ERROR) {
                        const char *text = NULL;
                        e->name = strdup(reply->error_name);
                        if (strncmp(reply->sig, "s", 1) == 0)
                                (void) ctl_msg_read(reply, "s", &text);
                        e->message = text ? strdup(text) : NULL;
                        if (!e->name)
                                return -ENOMEM;
                        return strcmp(e->name, CTL_BUS_ERROR_ACCESS_DENIED) == 0 ? -EACCES : -EREMOTEIO;
                }
                if (ret_reply)
                        *ret_reply = TAKE_PTR(reply);
                return 0;
        }
}
