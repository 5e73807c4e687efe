/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Small helpers used everywhere: cleanup attributes, ownership hand-over, alignment. */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define _unused_ __attribute__((unused))
#define _pure_ __attribute__((pure))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_result_ __attribute__((warn_unused_result))
#define _noreturn_ __attribute__((noreturn))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define ALIGN8(x) (((x) + UINT64_C(7)) & ~UINT64_C(7))

/* Take a pointer (or fd) out of a variable with cleanup attribute, leaving NULL (-EBADF) behind. */
#define TAKE_GENERIC(var, type, nullvalue)    \
        ({                                    \
                type *_pvar_ = &(var);        \
                type _var_ = *_pvar_;         \
                type _nullvalue_ = nullvalue; \
                *_pvar_ = _nullvalue_;        \
                _var_;                        \
        })
#define TAKE_PTR(ptr) TAKE_GENERIC(ptr, typeof(ptr), NULL)
#define TAKE_FD(fd) TAKE_GENERIC(fd, int, -EBADF)

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}
static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* Define a cleanup function for a type whose destructor returns NULL: DEFINE_TRIVIAL_CLEANUP_FUNC(Journal *,
 * journal_free) */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func) \
        static inline void func##p(type *p) {   \
                if (*p)                         \
                        *p = func(*p);          \
        }

/* Errors from libc calls that set errno, turned into the -errno convention. Never returns 0 for a failure.
 */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

static inline uint16_t unaligned_read_le16(const void *p) {
        const uint8_t *b = p;
        return (uint16_t) (b[0] | (b[1] << 8));
}
static inline uint32_t unaligned_read_le32(const void *p) {
        const uint8_t *b = p;
        return (uint32_t) b[0] | ((uint32_t) b[1] << 8) | ((uint32_t) b[2] << 16) | ((uint32_t) b[3] << 24);
}
static inline uint64_t unaligned_read_le64(const void *p) {
        const uint8_t *b = p;
        return (uint64_t) unaligned_read_le32(b) | ((uint64_t) unaligned_read_le32(b + 4) << 32);
}
static inline void unaligned_write_le16(void *p, uint16_t v) {
        uint8_t *b = p;
        b[0] = (uint8_t) v;
        b[1] = (uint8_t) (v >> 8);
}
static inline void unaligned_write_le32(void *p, uint32_t v) {
        uint8_t *b = p;
        for (size_t i = 0; i < 4; i++)
                b[i] = (uint8_t) (v >> (8 * i));
}
static inline void unaligned_write_le64(void *p, uint64_t v) {
        unaligned_write_le32(p, (uint32_t) v);
        unaligned_write_le32((uint8_t *) p + 4, (uint32_t) (v >> 32));
}

/* How long a killed agent's sockets (its control socket, the netlink socket that owns its nftables
 * tables) may stay held by a hypervisor child it forked, before the next agent takes them for another
 * agent's and refuses to start. See chvm-agentd(8), FILES. */
#define STALE_HOLDER_WAIT_MS 3000U
