/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI, ext4 and btrfs.
 * crc32c_update(0, "123456789", 9) == 0xE3069283. Chain calls to checksum data in pieces:
 * crc32c_update(crc32c_update(0, a, n), b, m) == crc32c of a||b. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t size);

/* Masking as in LevelDB: a CRC stored inside data that is itself checksummed must not look like a CRC of
 * that data. */
static inline uint32_t crc32c_mask(uint32_t crc) {
        return ((crc >> 15) | (crc << 17)) + UINT32_C(0xa282ead8);
}
static inline uint32_t crc32c_unmask(uint32_t masked) {
        uint32_t rot = masked - UINT32_C(0xa282ead8);
        return (rot >> 17) | (rot << 15);
}
