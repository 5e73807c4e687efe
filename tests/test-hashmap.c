/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/hashmap.h"
#include "util/macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(U64Map *, u64map_free);

static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);

static uint64_t rng_next(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static void *value_of(uint64_t v) {
        return (void *) (uintptr_t) v;
}

/* --- the reference: a sorted array of candidate keys, each present or not ----------------------------- */

enum { N_KEYS = 3000 };

static uint64_t ref_keys[N_KEYS];
static void *ref_values[N_KEYS];
static bool ref_present[N_KEYS];
static size_t ref_n;

static int key_compare(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return (x > y) - (x < y);
}

static void ref_init(void) {
        size_t k = 0;

        /* Random keys, plus the kinds real ids look like: small sequential ones, ones differing only in
         * their high bits, and the extremes. */
        for (uint64_t i = 1; i <= 500; i++)
                ref_keys[k++] = i;
        for (uint64_t i = 1; i <= 500; i++)
                ref_keys[k++] = i << 40;
        ref_keys[k++] = UINT64_MAX;
        while (k < N_KEYS)
                ref_keys[k++] = rng_next() | 1; /* a clash with the keys above is checked below */

        qsort(ref_keys, N_KEYS, sizeof(uint64_t), key_compare);
        for (size_t i = 1; i < N_KEYS; i++)
                cr_assert_neq(ref_keys[i - 1], ref_keys[i], "test bug: duplicate candidate key");
}

static size_t ref_index(uint64_t key) {
        const uint64_t *p = bsearch(&key, ref_keys, N_KEYS, sizeof(uint64_t), key_compare);

        cr_assert_not_null(p, "map returned key %" PRIx64 " that was never inserted", key);
        return (size_t) (p - ref_keys);
}

/* Iterating the map visits exactly the reference's keys, each once, with their values. */
static void check_iteration(const U64Map *m) {
        static unsigned seen[N_KEYS];
        size_t n = 0;
        uint64_t key;
        void *value;

        memset(seen, 0, sizeof(seen));
        for (size_t i = 0; u64map_iterate(m, &i, &key, &value);) {
                size_t idx = ref_index(key);

                cr_assert(ref_present[idx], "iterated removed key %" PRIx64, key);
                cr_assert_eq(value, ref_values[idx]);
                cr_assert_eq(seen[idx]++, 0, "key %" PRIx64 " visited twice", key);
                n++;
        }
        cr_assert_eq(n, ref_n);
        cr_assert_eq(u64map_size(m), ref_n);
}

Test(hashmap, random_against_reference) {
        _cleanup_(u64map_freep) U64Map *m = u64map_new();

        cr_assert_not_null(m);
        ref_init();

        for (unsigned op = 0; op < 100000; op++) {
                size_t idx = rng_next() % N_KEYS;
                uint64_t key = ref_keys[idx];
                /* Now and then a NULL value, which must still count as present. */
                void *value = rng_next() % 16 == 0 ? NULL : value_of(rng_next() | 1);

                switch (rng_next() % 5) {
                case 0:
                case 1: {
                        int r = u64map_put(m, key, value);

                        if (ref_present[idx])
                                cr_assert_eq(r, -EEXIST, "put of present key %" PRIx64, key);
                        else {
                                cr_assert_eq(r, 0);
                                ref_present[idx] = true;
                                ref_values[idx] = value;
                                ref_n++;
                        }
                        break;
                }
                case 2:
                        cr_assert_eq(u64map_replace(m, key, value), 0);
                        if (!ref_present[idx])
                                ref_n++;
                        ref_present[idx] = true;
                        ref_values[idx] = value;
                        break;
                case 3:
                        cr_assert_eq(u64map_remove(m, key), ref_present[idx] ? ref_values[idx] : NULL);
                        if (ref_present[idx])
                                ref_n--;
                        ref_present[idx] = false;
                        ref_values[idx] = NULL;
                        break;
                default:
                        cr_assert_eq(u64map_get(m, key), ref_present[idx] ? ref_values[idx] : NULL);
                }

                cr_assert_eq(u64map_size(m), ref_n);
                if (op % 5000 == 0)
                        check_iteration(m);
        }

        check_iteration(m);
        for (size_t i = 0; i < N_KEYS; i++)
                cr_assert_eq(u64map_get(m, ref_keys[i]), ref_values[i]);
}

/* Growing from empty to many entries keeps every one reachable, also for keys whose low bits are all
 * equal: only a good mixer spreads those over the table, without one this takes far beyond the timeout. */
Test(hashmap, growth, .timeout = 5) {
        enum { N = 40000 };
        _cleanup_(u64map_freep) U64Map *m = u64map_new();

        cr_assert_not_null(m);
        for (uint64_t i = 1; i <= N; i++) {
                cr_assert_eq(u64map_put(m, i, value_of(i)), 0);
                cr_assert_eq(u64map_put(m, i << 32, value_of(i + N)), 0);
        }
        cr_assert_eq(u64map_size(m), 2 * N);

        for (uint64_t i = 1; i <= N; i++) {
                cr_assert_eq(u64map_get(m, i), value_of(i), "key %" PRIu64, i);
                cr_assert_eq(u64map_get(m, i << 32), value_of(i + N), "key %" PRIu64 " << 32", i);
        }
        cr_assert_null(u64map_get(m, N + 1));
        cr_assert_null(u64map_get(m, (uint64_t) (N + 1) << 32));

        size_t n = 0;
        for (size_t i = 0; u64map_iterate(m, &i, NULL, NULL);)
                n++;
        cr_assert_eq(n, 2 * N);

        for (uint64_t i = 1; i <= N; i++) {
                cr_assert_eq(u64map_remove(m, i), value_of(i));
                cr_assert_eq(u64map_remove(m, i << 32), value_of(i + N));
        }
        cr_assert_eq(u64map_size(m), 0);
        size_t i = 0;
        cr_assert_not(u64map_iterate(m, &i, NULL, NULL));
}

/* Removing the key just returned while iterating still visits every other key exactly once. */
Test(hashmap, remove_while_iterating) {
        enum { N = 5000 };
        static unsigned visits[N + 1];
        _cleanup_(u64map_freep) U64Map *m = u64map_new();
        uint64_t key;
        void *value;

        cr_assert_not_null(m);
        for (uint64_t k = 1; k <= N; k++)
                cr_assert_eq(u64map_put(m, k * UINT64_C(0x9e3779b97f4a7c15), value_of(k)), 0);

        /* Remove every other one... */
        for (size_t i = 0; u64map_iterate(m, &i, &key, &value);) {
                uintptr_t k = (uintptr_t) value;

                cr_assert_eq(key, k * UINT64_C(0x9e3779b97f4a7c15));
                visits[k]++;
                if (k % 2 == 0)
                        cr_assert_eq(u64map_remove(m, key), value);
        }
        for (unsigned k = 1; k <= N; k++)
                cr_assert_eq(visits[k], 1, "key %u visited %u times", k, visits[k]);
        cr_assert_eq(u64map_size(m), N / 2);
        for (uint64_t k = 1; k <= N; k++)
                cr_assert_eq(u64map_get(m, k * UINT64_C(0x9e3779b97f4a7c15)), k % 2 ? value_of(k) : NULL);

        /* ...then all that are left. */
        memset(visits, 0, sizeof(visits));
        for (size_t i = 0; u64map_iterate(m, &i, &key, &value);) {
                visits[(uintptr_t) value]++;
                cr_assert_eq(u64map_remove(m, key), value);
        }
        for (unsigned k = 1; k <= N; k++)
                cr_assert_eq(visits[k], k % 2, "key %u visited %u times", k, visits[k]);
        cr_assert_eq(u64map_size(m), 0);

        /* And the map is still usable afterwards. */
        cr_assert_eq(u64map_put(m, 42, value_of(42)), 0);
        cr_assert_eq(u64map_get(m, 42), value_of(42));
}

Test(hashmap, put_replace_and_key_zero) {
        _cleanup_(u64map_freep) U64Map *m = u64map_new();
        int a, b;

        cr_assert_not_null(m);

        cr_assert_eq(u64map_put(m, 0, &a), -EINVAL);
        cr_assert_eq(u64map_replace(m, 0, &a), -EINVAL);
        cr_assert_null(u64map_get(m, 0));
        cr_assert_null(u64map_remove(m, 0));
        cr_assert_eq(u64map_size(m), 0);

        cr_assert_eq(u64map_put(m, 7, &a), 0);
        cr_assert_eq(u64map_put(m, 7, &b), -EEXIST);
        cr_assert_eq(u64map_get(m, 7), &a, "-EEXIST must leave the value alone");
        cr_assert_eq(u64map_replace(m, 7, &b), 0);
        cr_assert_eq(u64map_get(m, 7), &b);
        cr_assert_eq(u64map_size(m), 1);

        cr_assert_eq(u64map_replace(m, UINT64_MAX, NULL), 0);
        cr_assert_eq(u64map_size(m), 2);
        cr_assert_eq(u64map_put(m, UINT64_MAX, &a), -EEXIST, "a NULL value is still an entry");

        cr_assert_eq(u64map_remove(m, 7), &b);
        cr_assert_null(u64map_remove(m, 7));
        cr_assert_null(u64map_get(m, 7));
        cr_assert_eq(u64map_size(m), 1);

        size_t i = 0;
        uint64_t key = 0;
        void *value = &a;
        cr_assert(u64map_iterate(m, &i, &key, &value));
        cr_assert_eq(key, UINT64_MAX);
        cr_assert_null(value);
        cr_assert_not(u64map_iterate(m, &i, &key, &value));

        cr_assert_null(u64map_free(TAKE_PTR(m)));
        cr_assert_null(u64map_free(NULL));
}

/* Endless put/remove of ever new keys next to a standing population leaves tombstones everywhere. They
 * must be cleaned out, or lookups of absent keys would never find an empty slot, and they must be counted
 * right, or every insert would rebuild the whole table (the timeout catches both). */
Test(hashmap, tombstone_churn, .timeout = 10) {
        enum { STANDING = 20000 };
        _cleanup_(u64map_freep) U64Map *m = u64map_new();

        cr_assert_not_null(m);
        for (uint64_t k = 1; k <= STANDING; k++)
                cr_assert_eq(u64map_put(m, UINT64_MAX - k, value_of(k)), 0);

        for (uint64_t k = 1; k < 200000; k++) {
                cr_assert_eq(u64map_put(m, k, value_of(k)), 0);
                cr_assert_null(u64map_get(m, k + 1));
                cr_assert_eq(u64map_remove(m, k), value_of(k));
        }

        cr_assert_eq(u64map_size(m), STANDING);
        for (uint64_t k = 1; k <= STANDING; k++)
                cr_assert_eq(u64map_get(m, UINT64_MAX - k), value_of(k));
}
