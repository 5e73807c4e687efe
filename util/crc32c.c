/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <pthread.h>

#include "util/crc32c-internal.h"
#include "util/crc32c.h"
#include "util/macro.h"

#define POLY UINT32_C(0x82f63b78)

/* Slicing-by-8 tables, computed once. */
static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;
                for (int k = 0; k < 8; k++)
                        c = (c >> 1) ^ (POLY & (0U - (c & 1)));
                table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++)
                for (int t = 1; t < 8; t++)
                        table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

uint32_t crc32c_update_sw(uint32_t crc, const void *data, size_t size) {
        const uint8_t *p = data;

        (void) pthread_once(&table_once, table_init);
        crc = ~crc;
        while (size > 0 && ((uintptr_t) p & 7) != 0) {
                crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
                size--;
        }
        while (size >= 8) {
                uint32_t lo = unaligned_read_le32(p) ^ crc, hi = unaligned_read_le32(p + 4);
                crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
                      table[4][lo >> 24] ^ table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
                      table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
                p += 8;
                size -= 8;
        }
        while (size-- > 0)
                crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
        return ~crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc32c_update_hw(uint32_t crc, const void *data, size_t size) {
        const uint8_t *p = data;
        uint64_t c = ~crc;

        while (size > 0 && ((uintptr_t) p & 7) != 0) {
                c = __builtin_ia32_crc32qi((uint32_t) c, *p++);
                size--;
        }
        while (size >= 8) {
                c = __builtin_ia32_crc32di(c, unaligned_read_le64(p));
                p += 8;
                size -= 8;
        }
        while (size-- > 0)
                c = __builtin_ia32_crc32qi((uint32_t) c, *p++);
        return ~(uint32_t) c;
}

bool crc32c_have_hw(void) {
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

typedef uint32_t (*CrcFunc)(uint32_t crc, const void *data, size_t size);
static CrcFunc crc_impl;
static pthread_once_t impl_once = PTHREAD_ONCE_INIT;

static void impl_init(void) {
        crc_impl = crc32c_have_hw() ? crc32c_update_hw : crc32c_update_sw;
}

uint32_t crc32c_update(uint32_t crc, const void *data, size_t size) {
        (void) pthread_once(&impl_once, impl_init);
        return crc_impl(crc, data, size);
}
