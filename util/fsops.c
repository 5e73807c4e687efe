/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsops.h"
#include "util/macro.h"

static ssize_t default_pwrite(void *userdata, int fd, const void *buf, size_t size, off_t offset) {
        (void) userdata;
        ssize_t n = pwrite(fd, buf, size, offset);
        return n < 0 ? negative_errno() : n;
}

/* Never retried, not even on EINTR: after a failed fdatasync the kernel may already have dropped the
 * dirty pages and marked them clean, so a second call could report success for data that never reached
 * the disk. The caller treats any failure as fatal. */
static int default_fdatasync(void *userdata, int fd) {
        (void) userdata;
        return fdatasync(fd) < 0 ? negative_errno() : 0;
}

static int default_fsync(void *userdata, int fd) {
        (void) userdata;
        return fsync(fd) < 0 ? negative_errno() : 0;
}

static int default_ftruncate(void *userdata, int fd, off_t size) {
        (void) userdata;
        return ftruncate(fd, size) < 0 ? negative_errno() : 0;
}

static int default_renameat(void *userdata, int olddirfd, const char *oldname, int newdirfd,
                            const char *newname) {
        (void) userdata;
        return renameat(olddirfd, oldname, newdirfd, newname) < 0 ? negative_errno() : 0;
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

        while (size > 0) {
                ssize_t n = ops->pwrite(ops->userdata, fd, p, size, offset);
                if (n == -EINTR)
                        continue;
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return -EIO;
                p += n;
                size -= (size_t) n;
                offset += n;
        }
        return 0;
}

int fs_read_all(int fd, size_t max_size, void **ret_buf, size_t *ret_size) {
        struct stat st;
        size_t allocated, size = 0;
        uint8_t *buf;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if ((uint64_t) st.st_size > max_size)
                return -EFBIG;
        allocated = (size_t) st.st_size + 1;
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;

        for (;;) {
                if (size == allocated) {
                        if (allocated > max_size) {
                                free(buf);
                                return -EFBIG;
                        }
                        uint8_t *n = realloc(buf, allocated * 2);
                        if (!n) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = n;
                        allocated *= 2;
                }
                ssize_t k = pread(fd, buf + size, allocated - size, (off_t) size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = negative_errno();
                        free(buf);
                        return r;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        if (size > max_size) {
                free(buf);
                return -EFBIG;
        }
        *ret_buf = buf;
        *ret_size = size;
        return 0;
}
