/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "util/crc32c-internal.h"
#include "util/crc32c.h"
#include "util/macro.h"

/* Reflected Castagnoli polynomial. */
#define CRC32C_POLY UINT32_C(0x82f63b78)

/* Slicing-by-8: crc_table[k][b] is the CRC register after feeding byte b followed by k zero bytes, so eight
 * input bytes can be folded in with eight independent lookups. Filled in once, on first use. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void) {
        for (uint32_t b = 0; b < 256; b++) {
                uint32_t c = b;

                for (unsigned bit = 0; bit < 8; bit++)
                        c = (c >> 1) ^ ((c & 1) ? CRC32C_POLY : 0);
                crc_table[0][b] = c;
        }

        /* One more zero byte after what table k-1 already accounts for. */
        for (unsigned k = 1; k < 8; k++)
                for (uint32_t b = 0; b < 256; b++) {
                        uint32_t c = crc_table[k - 1][b];

                        crc_table[k][b] = (c >> 8) ^ crc_table[0][c & 0xff];
                }
}

static inline uint32_t crc_byte_sw(uint32_t c, uint8_t byte) {
        return (c >> 8) ^ crc_table[0][(c ^ byte) & 0xff];
}

uint32_t crc32c_update_sw(uint32_t crc, const void *data, size_t size) {
        const uint8_t *p = data;
        uint32_t c = ~crc;

        assert(data || size == 0);

        (void) pthread_once(&crc_table_once, crc_table_init);

        /* The loads below are byte-wise (endian-independent); aligning first just lets the compiler turn
         * them into plain aligned word loads. */
        for (; size > 0 && ((uintptr_t) p & 7) != 0; size--)
                c = crc_byte_sw(c, *p++);

        for (; size >= 8; size -= 8, p += 8) {
                uint32_t lo = unaligned_read_le32(p) ^ c;
                uint32_t hi = unaligned_read_le32(p + 4);

                /* Byte i of the block still has 7 - i bytes to go through after it. */
                c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
                    crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
                    crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^
                    crc_table[0][hi >> 24];
        }

        for (; size > 0; size--)
                c = crc_byte_sw(c, *p++);

        return ~c;
}

#if defined(__x86_64__)

/* The SSE4.2 crc32 instruction implements exactly this polynomial, bit-reflected, without the initial and
 * final inversion; x86 is little-endian, so a 64-bit load feeds the bytes in memory order. */
__attribute__((target("sse4.2"))) uint32_t crc32c_update_hw(uint32_t crc, const void *data, size_t size) {
        const uint8_t *p = data;
        uint64_t c = ~crc;

        assert(data || size == 0);

        for (; size > 0 && ((uintptr_t) p & 7) != 0; size--)
                c = _mm_crc32_u8((uint32_t) c, *p++);

        for (; size >= 8; size -= 8, p += 8) {
                uint64_t word;

                memcpy(&word, p, sizeof(word));
                c = _mm_crc32_u64(c, word);
        }

        for (; size > 0; size--)
                c = _mm_crc32_u8((uint32_t) c, *p++);

        return ~(uint32_t) c;
}

bool crc32c_have_hw(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("sse4.2");
}

#else

uint32_t crc32c_update_hw(uint32_t crc, const void *data, size_t size) {
        return crc32c_update_sw(crc, data, size);
}

bool crc32c_have_hw(void) {
        return false;
}

#endif

typedef uint32_t (*CrcFunction)(uint32_t crc, const void *data, size_t size);

static uint32_t crc32c_resolve(uint32_t crc, const void *data, size_t size);

/* Starts out pointing at the resolver, which replaces itself on the first call. Threads racing through the
 * resolver all store the same value, so a relaxed atomic is enough. */
static CrcFunction crc32c_impl = crc32c_resolve;

static uint32_t crc32c_resolve(uint32_t crc, const void *data, size_t size) {
        CrcFunction f = crc32c_have_hw() ? crc32c_update_hw : crc32c_update_sw;

        __atomic_store_n(&crc32c_impl, f, __ATOMIC_RELAXED);
        return f(crc, data, size);
}

uint32_t crc32c_update(uint32_t crc, const void *data, size_t size) {
        return __atomic_load_n(&crc32c_impl, __ATOMIC_RELAXED)(crc, data, size);
}
