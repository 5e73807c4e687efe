/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The file-system calls that durability depends on, behind a seam so tests can inject EIO/ENOSPC on
 * writes and syncs, or drop data that was never synced. Each returns >= 0 on success and -errno on
 * failure (never -1). The default implementation calls the system directly; short writes are
 * completed by fs_pwrite_full(), not by the ops. */

#include <stddef.h>
#include <sys/types.h>

typedef struct FsOps {
        ssize_t (*pwrite)(void *userdata, int fd, const void *buf, size_t size, off_t offset);
        int (*fdatasync)(void *userdata, int fd);
        int (*fsync)(void *userdata, int fd); /* used for directories */
        int (*ftruncate)(void *userdata, int fd, off_t size);
        int (*renameat)(void *userdata, int olddirfd, const char *oldname, int newdirfd,
                        const char *newname);
        void *userdata;
} FsOps;

extern const FsOps fs_ops_default;

/* Writes all of buf at offset, looping over short writes; -EIO if the ops report progress of 0. */
int fs_pwrite_full(const FsOps *ops, int fd, const void *buf, size_t size, off_t offset);

/* Reads the whole of fd (from offset 0) into a malloc'ed buffer; *ret_size gets its length. */
int fs_read_all(int fd, size_t max_size, void **ret_buf, size_t *ret_size);
