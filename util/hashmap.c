/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>

#include "util/hashmap.h"

/* Linear probing with tombstones: removing an entry leaves a tombstone, so an iteration in progress never
 * sees entries move. Tombstones are dropped when the table is rebuilt. */

#define TOMBSTONE ((void *) &tombstone_marker)
static const char tombstone_marker;

typedef struct Slot {
        uint64_t key; /* 0: empty (value NULL) or tombstone (value TOMBSTONE) */
        void *value;
} Slot;

struct U64Map {
        Slot *slots;
        size_t capacity; /* power of two */
        size_t n_entries;
        size_t n_used; /* entries + tombstones */
};

static uint64_t mix(uint64_t x) {
        x ^= x >> 30;
        x *= UINT64_C(0xbf58476d1ce4e5b9);
        x ^= x >> 27;
        x *= UINT64_C(0x94d049bb133111eb);
        x ^= x >> 31;
        return x;
}

U64Map *u64map_new(void) {
        U64Map *m = calloc(1, sizeof(U64Map));
        if (!m)
                return NULL;
        m->capacity = 16;
        m->slots = calloc(m->capacity, sizeof(Slot));
        if (!m->slots) {
                free(m);
                return NULL;
        }
        return m;
}

U64Map *u64map_free(U64Map *m) {
        if (!m)
                return NULL;
        free(m->slots);
        free(m);
        return NULL;
}

static bool slot_is_entry(const Slot *s) {
        return s->key != 0;
}

/* The slot holding key, or NULL. */
static Slot *find(const U64Map *m, uint64_t key) {
        size_t mask = m->capacity - 1;
        for (size_t i = mix(key) & mask, n = 0; n < m->capacity; i = (i + 1) & mask, n++) {
                Slot *s = &m->slots[i];
                if (s->key == key)
                        return s;
                if (s->key == 0 && s->value != TOMBSTONE)
                        return NULL;
        }
        return NULL;
}

static int rebuild(U64Map *m, size_t capacity) {
        Slot *old = m->slots;
        size_t old_capacity = m->capacity;
        Slot *slots = calloc(capacity, sizeof(Slot));

        if (!slots)
                return -ENOMEM;
        for (size_t i = 0; i < old_capacity; i++) {
                if (!slot_is_entry(&old[i]))
                        continue;
                size_t j = mix(old[i].key) & (capacity - 1);
                while (slots[j].key != 0)
                        j = (j + 1) & (capacity - 1);
                slots[j] = old[i];
        }
        m->slots = slots;
        m->capacity = capacity;
        m->n_used = m->n_entries;
        free(old);
        return 0;
}

static int insert(U64Map *m, uint64_t key, void *value, bool replace) {
        Slot *s;
        int r;

        if (key == 0)
                return -EINVAL;
        s = find(m, key);
        if (s) {
                if (!replace)
                        return -EEXIST;
                s->value = value;
                return 0;
        }

        /* Keep the table at most 70% used, tombstones included. */
        if ((m->n_used + 1) * 10 > m->capacity * 7) {
                size_t capacity = m->capacity;
                while ((m->n_entries + 1) * 10 > capacity * 5)
                        capacity *= 2;
                r = rebuild(m, capacity);
                if (r < 0)
                        return r;
        }

        size_t mask = m->capacity - 1;
        size_t i = mix(key) & mask;
        while (slot_is_entry(&m->slots[i]))
                i = (i + 1) & mask;
        if (m->slots[i].value != TOMBSTONE)
                m->n_used++;
        m->slots[i] = (Slot){ .key = key, .value = value };
        m->n_entries++;
        return 0;
}

int u64map_put(U64Map *m, uint64_t key, void *value) {
        return insert(m, key, value, false);
}

int u64map_replace(U64Map *m, uint64_t key, void *value) {
        return insert(m, key, value, true);
}

void *u64map_get(const U64Map *m, uint64_t key) {
        Slot *s = key ? find(m, key) : NULL;
        return s ? s->value : NULL;
}

void *u64map_remove(U64Map *m, uint64_t key) {
        Slot *s = key ? find(m, key) : NULL;
        void *v;

        if (!s)
                return NULL;
        v = s->value;
        *s = (Slot){ .key = 0, .value = TOMBSTONE };
        m->n_entries--;
        return v;
}

size_t u64map_size(const U64Map *m) {
        return m->n_entries;
}

bool u64map_iterate(const U64Map *m, size_t *i, uint64_t *ret_key, void **ret_value) {
        for (; *i < m->capacity; (*i)++) {
                const Slot *s = &m->slots[*i];
                if (!slot_is_entry(s))
                        continue;
                if (ret_key)
                        *ret_key = s->key;
                if (ret_value)
                        *ret_value = s->value;
                (*i)++;
                return true;
        }
        return false;
}
