/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Both implementations behind crc32c_update(), for tests that compare them. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

uint32_t crc32c_update_sw(uint32_t crc, const void *data, size_t size);
/* SSE4.2 instructions; only call when crc32c_have_hw(). */
uint32_t crc32c_update_hw(uint32_t crc, const void *data, size_t size);
bool crc32c_have_hw(void);
