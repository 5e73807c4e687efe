/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "util/crc32c-internal.h"
#include "util/crc32c.h"
#include "util/macro.h"

typedef uint32_t (*CrcFunction)(uint32_t crc, const void *data, size_t size);

static const struct {
        const char *name;
        CrcFunction f;
} implementations[] = {
        { "crc32c_update", crc32c_update },
        { "crc32c_update_sw", crc32c_update_sw },
        { "crc32c_update_hw", crc32c_update_hw }, /* falls back to the table path without SSE4.2 */
};

static uint64_t rng_state = UINT64_C(0x2545f4914f6cdd1d);

static uint64_t rng_next(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static void rng_fill(uint8_t *buf, size_t size) {
        for (size_t i = 0; i < size; i++)
                buf[i] = (uint8_t) rng_next();
}

/* Bit-at-a-time CRC-32C straight from the definition: an oracle that shares no table or instruction with
 * the code under test. */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t size) {
        crc = ~crc;
        while (size-- > 0) {
                crc ^= *p++;
                for (unsigned k = 0; k < 8; k++)
                        crc = (crc >> 1) ^ ((crc & 1) ? UINT32_C(0x82f63b78) : 0);
        }
        return ~crc;
}

Test(crc32c, known_vectors) {
        uint8_t zeros[32] = {}, ones[32];

        memset(ones, 0xff, sizeof(ones));

        for (size_t i = 0; i < ELEMENTSOF(implementations); i++) {
                CrcFunction f = implementations[i].f;
                const char *n = implementations[i].name;

                cr_assert_eq(f(0, "123456789", 9), UINT32_C(0xE3069283), "%s", n);
                cr_assert_eq(f(0, zeros, sizeof(zeros)), UINT32_C(0x8A9136AA), "%s", n);
                cr_assert_eq(f(0, ones, sizeof(ones)), UINT32_C(0x62A8AB43), "%s", n);
                cr_assert_eq(f(0, NULL, 0), 0, "%s", n);
                cr_assert_eq(f(UINT32_C(0xdeadbeef), "", 0), UINT32_C(0xdeadbeef), "%s", n);
        }
        cr_assert_eq(crc32c_bitwise(0, (const uint8_t *) "123456789", 9), UINT32_C(0xE3069283));
}

/* The same bytes at every start address give the same CRC, on both sides of the 8-byte blocks. */
Test(crc32c, unaligned_start) {
        _Alignas(16) uint8_t buf[64 + 16];
        uint8_t data[64];

        rng_fill(data, sizeof(data));
        uint32_t expected = crc32c_bitwise(0, data, sizeof(data));

        for (size_t off = 0; off < 16; off++) {
                memset(buf, 0xa5, sizeof(buf));
                memcpy(buf + off, "123456789", 9);
                for (size_t i = 0; i < ELEMENTSOF(implementations); i++)
                        cr_assert_eq(implementations[i].f(0, buf + off, 9), UINT32_C(0xE3069283),
                                     "%s at offset %zu", implementations[i].name, off);

                memcpy(buf + off, data, sizeof(data));
                for (size_t i = 0; i < ELEMENTSOF(implementations); i++)
                        cr_assert_eq(implementations[i].f(0, buf + off, sizeof(data)), expected,
                                     "%s at offset %zu", implementations[i].name, off);
        }
}

Test(crc32c, chaining) {
        uint8_t buf[300];

        rng_fill(buf, sizeof(buf));

        for (size_t i = 0; i < ELEMENTSOF(implementations); i++) {
                CrcFunction f = implementations[i].f;
                uint32_t whole = f(0, buf, sizeof(buf));

                cr_assert_eq(whole, crc32c_bitwise(0, buf, sizeof(buf)), "%s", implementations[i].name);

                for (size_t cut = 0; cut <= sizeof(buf); cut++)
                        cr_assert_eq(f(f(0, buf, cut), buf + cut, sizeof(buf) - cut), whole,
                                     "%s, cut at %zu", implementations[i].name, cut);

                /* Three pieces, byte by byte at the end. */
                uint32_t c = f(0, buf, 17);
                c = f(c, buf + 17, 200);
                for (size_t k = 217; k < sizeof(buf); k++)
                        c = f(c, buf + k, 1);
                cr_assert_eq(c, whole, "%s", implementations[i].name);
        }
}

/* The hardware and table paths (and the bitwise oracle) agree on random data, lengths, start addresses and
 * initial values. */
Test(crc32c, hw_matches_sw_random) {
        enum { MAX_LEN = 4096, ROUNDS = 3000 };
        uint8_t *buf;

        if (!crc32c_have_hw())
                cr_skip_test("no SSE4.2 crc32 instruction (or not x86_64); the table path is tested above");

        buf = malloc(MAX_LEN + 64);
        cr_assert_not_null(buf);
        rng_fill(buf, MAX_LEN + 64);

        for (unsigned round = 0; round < ROUNDS; round++) {
                size_t off = rng_next() % 64;
                /* Mostly short lengths, where the head/tail handling is, and now and then a long one. */
                size_t len = rng_next() % 8 == 0 ? rng_next() % (MAX_LEN + 1) : rng_next() % 80;
                uint32_t init = round % 2 ? (uint32_t) rng_next() : 0;
                uint32_t sw = crc32c_update_sw(init, buf + off, len);

                cr_assert_eq(crc32c_update_hw(init, buf + off, len), sw, "offset %zu, length %zu, init %08x",
                             off, len, init);
                if (len <= 256)
                        cr_assert_eq(crc32c_bitwise(init, buf + off, len), sw, "offset %zu, length %zu", off,
                                     len);
        }

        free(buf);
}

/* Whatever the CPU, the dispatching entry point gives what the table path gives. */
Test(crc32c, dispatch_matches_sw) {
        uint8_t buf[1000];

        rng_fill(buf, sizeof(buf));
        for (size_t off = 0; off < 9; off++)
                for (size_t len = 0; len + off <= sizeof(buf); len += 1 + len / 3)
                        cr_assert_eq(crc32c_update(0x1234, buf + off, len),
                                     crc32c_update_sw(0x1234, buf + off, len), "offset %zu, length %zu", off,
                                     len);
}

Test(crc32c, mask_round_trip) {
        static const uint32_t fixed[] = { 0, 1, 0xffffffff, 0xE3069283, 0xa282ead8, 0x80000000 };

        for (size_t i = 0; i < ELEMENTSOF(fixed); i++)
                cr_assert_eq(crc32c_unmask(crc32c_mask(fixed[i])), fixed[i]);

        /* The mask must actually change the value, or a stored CRC could pass for the CRC of its record. */
        cr_assert_neq(crc32c_mask(UINT32_C(0xE3069283)), UINT32_C(0xE3069283));
        /* Rotating 0 leaves 0, so only the added constant remains. */
        cr_assert_eq(crc32c_mask(0), UINT32_C(0xa282ead8));

        for (unsigned i = 0; i < 100000; i++) {
                uint32_t v = (uint32_t) rng_next();

                cr_assert_eq(crc32c_unmask(crc32c_mask(v)), v);
                cr_assert_eq(crc32c_mask(crc32c_unmask(v)), v);
        }
}
