/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <inttypes.h>

#include "util/json.h"

void json_write_string(FILE *f, const char *s) {
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                switch (*p) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\r':
                        fputs("\\r", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                default:
                        if (*p < 0x20 || *p == 0x7f)
                                fprintf(f, "\\u%04x", *p);
                        else
                                fputc(*p, f);
                }
        }
        fputc('"', f);
}

void json_begin(JsonWriter *w, FILE *f) {
        *w = (JsonWriter){ .f = f };
        w->first[0] = true;
}

void json_end(JsonWriter *w) {
        fputc('\n', w->f);
        fflush(w->f);
}

/* Before any value: the comma, unless it follows its key or is the first at its level. */
static void value_prefix(JsonWriter *w) {
        if (w->after_key) {
                w->after_key = false;
                return;
        }
        if (!w->first[w->depth])
                fputc(',', w->f);
        w->first[w->depth] = false;
}

static void open(JsonWriter *w, char c) {
        value_prefix(w);
        fputc(c, w->f);
        if (w->depth + 1 < sizeof(w->first) / sizeof(w->first[0]))
                w->depth++;
        w->first[w->depth] = true;
}

static void close_(JsonWriter *w, char c) {
        fputc(c, w->f);
        if (w->depth > 0)
                w->depth--;
}

void json_object_open(JsonWriter *w) {
        open(w, '{');
}
void json_object_close(JsonWriter *w) {
        close_(w, '}');
}
void json_array_open(JsonWriter *w) {
        open(w, '[');
}
void json_array_close(JsonWriter *w) {
        close_(w, ']');
}

void json_key(JsonWriter *w, const char *key) {
        value_prefix(w);
        json_write_string(w->f, key);
        fputc(':', w->f);
        w->after_key = true;
}

void json_string(JsonWriter *w, const char *s) {
        value_prefix(w);
        if (s)
                json_write_string(w->f, s);
        else
                fputs("null", w->f);
}

void json_uint(JsonWriter *w, uint64_t v) {
        value_prefix(w);
        fprintf(w->f, "%" PRIu64, v);
}

void json_int(JsonWriter *w, int64_t v) {
        value_prefix(w);
        fprintf(w->f, "%" PRId64, v);
}

void json_bool(JsonWriter *w, bool v) {
        value_prefix(w);
        fputs(v ? "true" : "false", w->f);
}

void json_null(JsonWriter *w) {
        value_prefix(w);
        fputs("null", w->f);
}

void json_kv_string(JsonWriter *w, const char *key, const char *s) {
        json_key(w, key);
        json_string(w, s);
}

void json_kv_uint(JsonWriter *w, const char *key, uint64_t v) {
        json_key(w, key);
        json_uint(w, v);
}

void json_kv_bool(JsonWriter *w, const char *key, bool v) {
        json_key(w, key);
        json_bool(w, v);
}
