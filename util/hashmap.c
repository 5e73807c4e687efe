/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "util/hashmap.h"
#include "util/macro.h"

/* Open addressing with linear probing. Removal leaves a tombstone instead of shifting later entries back,
 * so an iteration in progress never sees an entry move: removing the entry just returned cannot make the
 * iterator skip or repeat another. Tombstones still count towards the load factor (they lengthen probe
 * chains like entries do) and are dropped whenever the table is rebuilt. */

#define MIN_CAPACITY 16U

/* Rebuild once entries plus tombstones would exceed 7/10 of the slots... */
#define MAX_LOAD_NUM 7U
#define MAX_LOAD_DEN 10U
/* ...into a table that the live entries fill at most half of, so the next rebuild is a while away. */
#define REBUILD_LOAD_NUM 1U
#define REBUILD_LOAD_DEN 2U

/* key 0 is never a valid key, so it marks a slot without an entry; the value then tells an empty slot (NULL)
 * from a tombstone. 16 bytes a slot, four to a cache line. */
typedef struct Slot {
        uint64_t key;
        void *value;
} Slot;

static char tombstone_sentinel;
#define TOMBSTONE ((void *) &tombstone_sentinel)

static bool slot_is_entry(const Slot *s) {
        return s->key != 0;
}

static bool slot_is_empty(const Slot *s) {
        return s->key == 0 && s->value != TOMBSTONE;
}

struct U64Map {
        Slot *slots;
        size_t capacity; /* a power of two */
        size_t n_entries;
        size_t n_tombstones;
};

/* The splitmix64 finalizer: keys are often small, sequential or share low bits (IPv4 addresses, ids), and
 * linear probing needs them spread over the whole table. */
static uint64_t hash_key(uint64_t x) {
        x ^= x >> 30;
        x *= UINT64_C(0xbf58476d1ce4e5b9);
        x ^= x >> 27;
        x *= UINT64_C(0x94d049bb133111eb);
        x ^= x >> 31;
        return x;
}

static size_t slot_first(const U64Map *m, uint64_t key) {
        return (size_t) hash_key(key) & (m->capacity - 1);
}

static size_t slot_next(const U64Map *m, size_t i) {
        return (i + 1) & (m->capacity - 1);
}

U64Map *u64map_new(void) {
        _cleanup_free_ U64Map *m = NULL;

        m = calloc(1, sizeof(U64Map));
        if (!m)
                return NULL;

        m->slots = calloc(MIN_CAPACITY, sizeof(Slot));
        if (!m->slots)
                return NULL;
        m->capacity = MIN_CAPACITY;

        return TAKE_PTR(m);
}

U64Map *u64map_free(U64Map *m) {
        if (!m)
                return NULL;

        free(m->slots);
        free(m);
        return NULL;
}

/* The slot holding key, or NULL. The load limit guarantees an empty slot, so the probe terminates. */
static Slot *slot_find(const U64Map *m, uint64_t key) {
        for (size_t i = slot_first(m, key);; i = slot_next(m, i)) {
                Slot *s = m->slots + i;

                if (s->key == key)
                        return s;
                if (slot_is_empty(s))
                        return NULL;
        }
}

static int rebuild(U64Map *m, size_t capacity) {
        _cleanup_free_ Slot *old = NULL;
        Slot *slots;
        size_t old_capacity;

        slots = calloc(capacity, sizeof(Slot));
        if (!slots)
                return -ENOMEM;

        old = m->slots;
        old_capacity = m->capacity;
        m->slots = slots;
        m->capacity = capacity;
        m->n_tombstones = 0;

        for (size_t j = 0; j < old_capacity; j++) {
                size_t i;

                if (!slot_is_entry(old + j))
                        continue;

                for (i = slot_first(m, old[j].key); !slot_is_empty(slots + i); i = slot_next(m, i))
                        ;
                slots[i] = old[j];
        }

        return 0;
}

/* Makes room for one more entry, dropping tombstones and resizing (up or down) when over the load limit. */
static int reserve_one(U64Map *m) {
        size_t used = m->n_entries + m->n_tombstones + 1, capacity = MIN_CAPACITY;

        if (used * MAX_LOAD_DEN <= m->capacity * MAX_LOAD_NUM)
                return 0;

        while ((m->n_entries + 1) * REBUILD_LOAD_DEN > capacity * REBUILD_LOAD_NUM) {
                if (capacity > SIZE_MAX / 2 / sizeof(Slot))
                        return -ENOMEM;
                capacity *= 2;
        }

        return rebuild(m, capacity);
}

static int insert(U64Map *m, uint64_t key, void *value, bool replace) {
        Slot *s;
        size_t i;
        int r;

        assert(m);

        if (key == 0)
                return -EINVAL;

        s = slot_find(m, key);
        if (s) {
                if (!replace)
                        return -EEXIST;
                s->value = value;
                return 0;
        }

        r = reserve_one(m);
        if (r < 0)
                return r;

        /* The key is absent, so the first free slot on its probe chain is where it goes; reusing a
         * tombstone keeps chains short. */
        for (i = slot_first(m, key); slot_is_entry(m->slots + i); i = slot_next(m, i))
                ;
        if (m->slots[i].value == TOMBSTONE)
                m->n_tombstones--;
        m->slots[i] = (Slot){ .key = key, .value = value };
        m->n_entries++;

        return 0;
}

int u64map_put(U64Map *m, uint64_t key, void *value) {
        return insert(m, key, value, /* replace= */ false);
}

int u64map_replace(U64Map *m, uint64_t key, void *value) {
        return insert(m, key, value, /* replace= */ true);
}

void *u64map_get(const U64Map *m, uint64_t key) {
        Slot *s;

        assert(m);

        if (key == 0)
                return NULL;

        s = slot_find(m, key);
        return s ? s->value : NULL;
}

void *u64map_remove(U64Map *m, uint64_t key) {
        Slot *s;
        void *value;

        assert(m);

        if (key == 0)
                return NULL;

        s = slot_find(m, key);
        if (!s)
                return NULL;

        value = s->value;
        *s = (Slot){ .key = 0, .value = TOMBSTONE };
        m->n_entries--;
        m->n_tombstones++;

        return value;
}

size_t u64map_size(const U64Map *m) {
        assert(m);

        return m->n_entries;
}

bool u64map_iterate(const U64Map *m, size_t *i, uint64_t *ret_key, void **ret_value) {
        assert(m);
        assert(i);

        for (size_t j = *i; j < m->capacity; j++) {
                const Slot *s = m->slots + j;

                if (!slot_is_entry(s))
                        continue;

                if (ret_key)
                        *ret_key = s->key;
                if (ret_value)
                        *ret_value = s->value;
                *i = j + 1;
                return true;
        }

        *i = m->capacity;
        return false;
}
