/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsops.h"
#include "util/macro.h"

static ssize_t default_pwrite(void *userdata _unused_, int fd, const void *buf, size_t size, off_t offset) {
        ssize_t n;

        n = pwrite(fd, buf, size, offset);
        if (n < 0)
                return negative_errno();
        return n;
}

/* Deliberately no retry here, not on EINTR and not on anything else, and callers must not retry either:
 * when writeback fails, the kernel may already have marked the dirty pages clean (or dropped them) and
 * consumed the error, so a second fdatasync() can return 0 although the data never reached the disk. A
 * failed sync means the data's fate is unknown, and the only safe reaction is to treat it as lost. */
static int default_fdatasync(void *userdata _unused_, int fd) {
        if (fdatasync(fd) < 0)
                return negative_errno();
        return 0;
}

/* Same rule as for fdatasync(): never retried. */
static int default_fsync(void *userdata _unused_, int fd) {
        if (fsync(fd) < 0)
                return negative_errno();
        return 0;
}

static int default_ftruncate(void *userdata _unused_, int fd, off_t size) {
        if (ftruncate(fd, size) < 0)
                return negative_errno();
        return 0;
}

static int default_renameat(void *userdata _unused_, int olddirfd, const char *oldname, int newdirfd,
                            const char *newname) {
        if (renameat(olddirfd, oldname, newdirfd, newname) < 0)
                return negative_errno();
        return 0;
}

const FsOps fs_ops_default = {
        .pwrite = default_pwrite,
        .fdatasync = default_fdatasync,
        .fsync = default_fsync,
        .ftruncate = default_ftruncate,
        .renameat = default_renameat,
};

int fs_pwrite_full(const FsOps *ops, int fd, const void *buf, size_t size, off_t offset) {
        const uint8_t *p = buf;

        assert(ops);
        assert(buf || size == 0);

        if (offset < 0)
                return -EINVAL;

        while (size > 0) {
                ssize_t n;

                n = ops->pwrite(ops->userdata, fd, p, size, offset);
                if (n == -EINTR) /* nothing was written; unlike a sync, a write may simply be repeated */
                        continue;
                if (n < 0)
                        return (int) n;
                if (n == 0 || (size_t) n > size) /* no progress, or an ops claiming more than asked */
                        return -EIO;

                p += n;
                size -= (size_t) n;
                offset += n;
        }

        return 0;
}

int fs_read_all(int fd, size_t max_size, void **ret_buf, size_t *ret_size) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t allocated, size = 0;
        struct stat st;

        assert(ret_buf);
        assert(ret_size);

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (st.st_size < 0 || (uintmax_t) st.st_size > max_size)
                return -EFBIG;

        /* The size is only a hint, the file may change under us: read until EOF. One byte more than
         * expected, so that reaching EOF normally needs no second allocation. */
        allocated = (size_t) st.st_size + 1;
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                ssize_t n;

                if (size == allocated) {
                        size_t want;
                        uint8_t *p;

                        /* Filled the buffer, and it already holds more than max_size. */
                        if (size > max_size)
                                return -EFBIG;

                        /* Never allocate more than max_size + 1: enough to notice the file is too big. */
                        if (allocated <= max_size / 2)
                                want = allocated * 2;
                        else
                                want = max_size < SIZE_MAX ? max_size + 1 : SIZE_MAX;
                        p = realloc(buf, want);
                        if (!p)
                                return -ENOMEM;
                        buf = p;
                        allocated = want;
                }

                n = pread(fd, buf + size, allocated - size, (off_t) size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;

                size += (size_t) n;
        }

        if (size > max_size)
                return -EFBIG;

        *ret_buf = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}
