/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* An open-addressing hash map from a non-zero uint64_t key to a pointer. Keys are ids (object ids, VM
 * ids, IPv4 addresses), so the map mixes them itself; callers own the values. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct U64Map U64Map;

U64Map *u64map_new(void);
U64Map *u64map_free(U64Map *m); /* frees the map, not the values */

/* 0 on insert, -EEXIST when the key is present (value unchanged), -ENOMEM, -EINVAL for key 0. */
int u64map_put(U64Map *m, uint64_t key, void *value);
/* Insert or overwrite. */
int u64map_replace(U64Map *m, uint64_t key, void *value);
void *u64map_get(const U64Map *m, uint64_t key);
/* Returns the removed value or NULL. */
void *u64map_remove(U64Map *m, uint64_t key);
size_t u64map_size(const U64Map *m);

/* Iteration in unspecified order; the map must not change while iterating, except by
 * u64map_remove() of the key just returned. Start with *i = 0. */
bool u64map_iterate(const U64Map *m, size_t *i, uint64_t *ret_key, void **ret_value);
