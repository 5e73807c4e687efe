/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A small JSON writer for chvmctl --json: one document per command, written as it is built. Commas between
 * members and elements are placed by the writer, so callers read as the document's shape. */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct JsonWriter {
        FILE *f;
        unsigned depth;
        bool first[32]; /* per level: nothing written at this level yet */
        bool after_key;
} JsonWriter;

void json_begin(JsonWriter *w, FILE *f);
/* Ends the document with a newline. */
void json_end(JsonWriter *w);

void json_object_open(JsonWriter *w);
void json_object_close(JsonWriter *w);
void json_array_open(JsonWriter *w);
void json_array_close(JsonWriter *w);
void json_key(JsonWriter *w, const char *key);

void json_string(JsonWriter *w, const char *s); /* NULL writes null */
void json_uint(JsonWriter *w, uint64_t v);
void json_int(JsonWriter *w, int64_t v);
void json_bool(JsonWriter *w, bool v);
void json_null(JsonWriter *w);

/* key + value in one call */
void json_kv_string(JsonWriter *w, const char *key, const char *s);
void json_kv_uint(JsonWriter *w, const char *key, uint64_t v);
void json_kv_bool(JsonWriter *w, const char *key, bool v);

/* Writes s as a JSON string literal (quotes included) to f. */
void json_write_string(FILE *f, const char *s);
