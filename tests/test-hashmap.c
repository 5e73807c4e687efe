/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "util/hashmap.h"

static uint64_t rng = 1;
static uint64_t next(void) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        return rng;
}

/* Random operations against a plain array indexed by key. */
Test(hashmap, random_against_reference) {
        enum { KEYS = 2000, OPS = 100000 };
        static void *ref[KEYS + 1];
        size_t n_ref = 0;
        U64Map *m = u64map_new();
        cr_assert(m);

        for (int i = 0; i < OPS; i++) {
                uint64_t key = 1 + next() % KEYS;
                void *val = (void *) (uintptr_t) (next() | 1);
                switch (next() % 4) {
                case 0: {
                        int r = u64map_put(m, key, val);
                        if (ref[key]) {
                                cr_assert_eq(r, -EEXIST);
                        } else {
                                cr_assert_eq(r, 0);
                                ref[key] = val;
                                n_ref++;
                        }
                        break;
                }
                case 1:
                        cr_assert_eq(u64map_replace(m, key, val), 0);
                        if (!ref[key])
                                n_ref++;
                        ref[key] = val;
                        break;
                case 2:
                        cr_assert_eq(u64map_remove(m, key), ref[key]);
                        if (ref[key])
                                n_ref--;
                        ref[key] = NULL;
                        break;
                default:
                        cr_assert_eq(u64map_get(m, key), ref[key]);
                }
                cr_assert_eq(u64map_size(m), n_ref);
        }

        size_t seen = 0;
        uint64_t key;
        void *v;
        for (size_t i = 0; u64map_iterate(m, &i, &key, &v);) {
                cr_assert(key >= 1 && key <= KEYS);
                cr_assert_eq(ref[key], v);
                seen++;
        }
        cr_assert_eq(seen, n_ref);
        u64map_free(m);
}

/* Removing the key just returned while iterating still visits every other key exactly once. */
Test(hashmap, remove_while_iterating) {
        U64Map *m = u64map_new();
        static unsigned visits[5001];
        for (uint64_t k = 1; k <= 5000; k++)
                cr_assert_eq(u64map_put(m, k * 0x9e3779b97f4a7c15ULL >> 3 | 1, (void *) (uintptr_t) k), 0);
        cr_assert_eq(u64map_size(m), 5000);

        uint64_t key;
        void *v;
        for (size_t i = 0; u64map_iterate(m, &i, &key, &v);) {
                visits[(uintptr_t) v]++;
                if ((uintptr_t) v % 2 == 0)
                        cr_assert_eq(u64map_remove(m, key), v);
        }
        for (unsigned k = 1; k <= 5000; k++)
                cr_assert_eq(visits[k], 1, "key %u visited %u times", k, visits[k]);
        cr_assert_eq(u64map_size(m), 2500);
        u64map_free(m);
}

Test(hashmap, edge_cases) {
        U64Map *m = u64map_new();
        cr_assert_eq(u64map_put(m, 0, m), -EINVAL);
        cr_assert_eq(u64map_replace(m, 0, m), -EINVAL);
        cr_assert_null(u64map_get(m, 0));
        cr_assert_null(u64map_remove(m, 0));
        cr_assert_eq(u64map_put(m, UINT64_MAX, m), 0);
        cr_assert_eq(u64map_get(m, UINT64_MAX), m);
        /* Churn: many puts and removes of distinct keys must not fill the table with tombstones. */
        for (uint64_t k = 1; k < 200000; k++) {
                cr_assert_eq(u64map_put(m, k, (void *) (uintptr_t) k), 0);
                cr_assert_eq(u64map_remove(m, k), (void *) (uintptr_t) k);
        }
        cr_assert_eq(u64map_size(m), 1);
        cr_assert_eq(u64map_get(m, UINT64_MAX), m);
        size_t i = 0;
        cr_assert(u64map_iterate(m, &i, NULL, NULL));
        cr_assert_not(u64map_iterate(m, &i, NULL, NULL));
        cr_assert_null(u64map_free(m));
        cr_assert_null(u64map_free(NULL));
}
