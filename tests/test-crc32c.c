/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "util/crc32c-internal.h"
#include "util/crc32c.h"

Test(crc32c, known_vectors) {
        uint8_t zeros[32] = {}, ones[32];
        memset(ones, 0xff, sizeof(ones));

        cr_assert_eq(crc32c_update(0, "123456789", 9), 0xE3069283);
        cr_assert_eq(crc32c_update(0, zeros, sizeof(zeros)), 0x8A9136AA);
        cr_assert_eq(crc32c_update(0, ones, sizeof(ones)), 0x62A8AB43);
        cr_assert_eq(crc32c_update(0, "", 0), 0);
        cr_assert_eq(crc32c_update_sw(0, "123456789", 9), 0xE3069283);
}

Test(crc32c, chaining) {
        const char *s = "The quick brown fox jumps over the lazy dog";
        size_t n = strlen(s);
        uint32_t whole = crc32c_update(0, s, n);
        for (size_t cut = 0; cut <= n; cut++)
                cr_assert_eq(crc32c_update(crc32c_update(0, s, cut), s + cut, n - cut), whole, "cut at %zu",
                             cut);
}

/* The hardware and the table implementations agree on every length and alignment. */
Test(crc32c, hw_matches_sw) {
        if (!crc32c_have_hw())
                cr_skip_test("this CPU has no SSE4.2 crc32 instruction; the table path is tested above");
        uint8_t buf[4096 + 16];
        uint64_t x = 88172645463325252ULL;
        for (size_t i = 0; i < sizeof(buf); i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                buf[i] = (uint8_t) x;
        }
        for (size_t off = 0; off < 16; off++)
                for (size_t len = 0; len < 600; len += 1 + len / 16)
                        cr_assert_eq(crc32c_update_hw(0x1234, buf + off, len),
                                     crc32c_update_sw(0x1234, buf + off, len), "offset %zu, length %zu", off,
                                     len);
        cr_assert_eq(crc32c_update_hw(0, buf, sizeof(buf)), crc32c_update_sw(0, buf, sizeof(buf)));
}

Test(crc32c, mask_round_trip) {
        uint32_t values[] = { 0, 1, 0xffffffff, 0xE3069283, 0xa282ead8, 0x80000000 };
        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
                cr_assert_eq(crc32c_unmask(crc32c_mask(values[i])), values[i]);
                cr_assert_neq(crc32c_mask(values[i]), values[i]);
        }
}
