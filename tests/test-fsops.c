/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsops.h"
#include "util/macro.h"

static char tmpdir[] = "/tmp/test-fsops-XXXXXX";

static void setup(void) {
        cr_assert_not_null(mkdtemp(tmpdir));
}

/* The tests only make plain files directly in tmpdir. */
static void teardown(void) {
        DIR *d = opendir(tmpdir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
        (void) rmdir(tmpdir);
}

static int open_tmp(const char *name, int flags) {
        char path[sizeof(tmpdir) + 64];
        int fd;

        snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
        fd = open(path, flags | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
        return fd;
}

/* --- fs_ops_default: real calls, -errno on failure --------------------------------------------------- */

Test(fsops, default_ops_return_negative_errno, .init = setup, .fini = teardown) {
        _cleanup_close_ int fd = open_tmp("f", O_RDWR | O_CREAT | O_EXCL);
        _cleanup_close_ int dfd = open(tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        char buf[8] = {};

        cr_assert_geq(dfd, 0);

        cr_assert_eq(fs_ops_default.pwrite(NULL, fd, "hello", 5, 3), 5);
        cr_assert_eq(pread(fd, buf, sizeof(buf), 0), 8);
        cr_assert_eq(memcmp(buf, "\0\0\0hello", 8), 0);
        cr_assert_eq(fs_ops_default.fdatasync(NULL, fd), 0);
        cr_assert_eq(fs_ops_default.fsync(NULL, dfd), 0);
        cr_assert_eq(fs_ops_default.ftruncate(NULL, fd, 4), 0);

        struct stat st;
        cr_assert_eq(fstat(fd, &st), 0);
        cr_assert_eq(st.st_size, 4);

        cr_assert_eq(fs_ops_default.renameat(NULL, dfd, "f", dfd, "g"), 0);
        cr_assert_eq(faccessat(dfd, "g", F_OK, 0), 0);
        cr_assert_eq(fs_ops_default.renameat(NULL, dfd, "f", dfd, "h"), -ENOENT);

        cr_assert_eq(fs_ops_default.pwrite(NULL, -1, "x", 1, 0), -EBADF);
        cr_assert_eq(fs_ops_default.fdatasync(NULL, -1), -EBADF);
        cr_assert_eq(fs_ops_default.fsync(NULL, -1), -EBADF);
        cr_assert_eq(fs_ops_default.ftruncate(NULL, -1, 0), -EBADF);
        cr_assert_eq(fs_ops_default.pwrite(NULL, fd, "x", 1, -1), -EINVAL);
}

/* --- fs_pwrite_full against scripted ops --------------------------------------------------------------- */

typedef struct FakeWriter {
        uint8_t data[256];
        size_t max_chunk; /* write at most this much per call */
        unsigned n_eintr; /* fail this many calls with -EINTR first */
        ssize_t fail_with; /* then, if non-zero, return this once progress reached fail_after */
        size_t fail_after;
        size_t claim_extra; /* report this many bytes more than written */
        unsigned calls;
} FakeWriter;

static ssize_t fake_pwrite(void *userdata, int fd _unused_, const void *buf, size_t size, off_t offset) {
        FakeWriter *w = userdata;
        size_t n;

        w->calls++;
        if (w->n_eintr > 0) {
                w->n_eintr--;
                return -EINTR;
        }
        if (w->fail_with != 0 && (size_t) offset >= w->fail_after)
                return w->fail_with;

        cr_assert_leq((size_t) offset + size, sizeof(w->data), "write beyond what the caller asked for");
        n = size < w->max_chunk ? size : w->max_chunk;
        memcpy(w->data + offset, buf, n);
        return (ssize_t) (n + w->claim_extra);
}

static FsOps fake_ops(FakeWriter *w) {
        return (FsOps){ .pwrite = fake_pwrite, .userdata = w };
}

Test(fsops, pwrite_full_completes_short_writes) {
        uint8_t src[200];
        FakeWriter w = { .max_chunk = 7, .n_eintr = 3 };
        FsOps ops = fake_ops(&w);

        for (size_t i = 0; i < sizeof(src); i++)
                src[i] = (uint8_t) (i * 7 + 1);

        cr_assert_eq(fs_pwrite_full(&ops, 3, src, sizeof(src), 50), 0);
        cr_assert_eq(memcmp(w.data + 50, src, sizeof(src)), 0);
        cr_assert_eq(w.calls, 3 + (sizeof(src) + 6) / 7, "EINTR retried, then one call per 7-byte chunk");

        /* Nothing to write: no call at all. */
        w.calls = 0;
        cr_assert_eq(fs_pwrite_full(&ops, 3, src, 0, 0), 0);
        cr_assert_eq(w.calls, 0);
}

Test(fsops, pwrite_full_errors) {
        uint8_t src[64] = {};
        FakeWriter w;
        FsOps ops = fake_ops(&w);

        /* An error after partial progress is returned as it is, and not retried. */
        w = (FakeWriter){ .max_chunk = 16, .fail_with = -ENOSPC, .fail_after = 32 };
        cr_assert_eq(fs_pwrite_full(&ops, 3, src, sizeof(src), 0), -ENOSPC);
        cr_assert_eq(w.calls, 3);

        w = (FakeWriter){ .max_chunk = 16, .fail_with = -EIO, .fail_after = 0 };
        cr_assert_eq(fs_pwrite_full(&ops, 3, src, sizeof(src), 0), -EIO);
        cr_assert_eq(w.calls, 1);

        /* No progress must not loop forever. */
        w = (FakeWriter){ .max_chunk = 0 };
        cr_assert_eq(fs_pwrite_full(&ops, 3, src, sizeof(src), 0), -EIO);
        cr_assert_eq(w.calls, 1);

        /* Ops claiming more than they were given. */
        w = (FakeWriter){ .max_chunk = 64, .claim_extra = 1 };
        cr_assert_eq(fs_pwrite_full(&ops, 3, src, sizeof(src), 0), -EIO);

        cr_assert_eq(fs_pwrite_full(&ops, 3, src, sizeof(src), -1), -EINVAL);
}

/* A real file, through the default ops. */
Test(fsops, pwrite_full_real_file, .init = setup, .fini = teardown) {
        _cleanup_close_ int fd = open_tmp("f", O_RDWR | O_CREAT | O_EXCL);
        _cleanup_free_ void *back = NULL;
        char data[10000];
        size_t n;

        for (size_t i = 0; i < sizeof(data); i++)
                data[i] = (char) ('a' + i % 26);
        cr_assert_eq(fs_pwrite_full(&fs_ops_default, fd, data, sizeof(data), 100), 0);
        cr_assert_eq(fs_read_all(fd, SIZE_MAX, &back, &n), 0);
        cr_assert_eq(n, sizeof(data) + 100);
        cr_assert_eq(memcmp((uint8_t *) back + 100, data, sizeof(data)), 0);

        cr_assert_eq(fs_pwrite_full(&fs_ops_default, -1, data, sizeof(data), 0), -EBADF);
}

/* --- fs_read_all --------------------------------------------------------------------------------------- */

Test(fsops, read_all_sizes, .init = setup, .fini = teardown) {
        _cleanup_close_ int fd = open_tmp("f", O_RDWR | O_CREAT | O_EXCL);
        _cleanup_free_ void *buf = NULL;
        size_t n = 1234;

        /* Empty. */
        cr_assert_eq(fs_read_all(fd, 0, &buf, &n), 0);
        cr_assert_not_null(buf);
        cr_assert_eq(n, 0);
        free(TAKE_PTR(buf));

        cr_assert_eq(pwrite(fd, "0123456789", 10, 0), 10);

        /* Exactly max_size is fine, one byte more is not; and the position of fd does not matter. */
        cr_assert_eq(lseek(fd, 0, SEEK_END), 10);
        cr_assert_eq(fs_read_all(fd, 10, &buf, &n), 0);
        cr_assert_eq(n, 10);
        cr_assert_eq(memcmp(buf, "0123456789", 10), 0);
        free(TAKE_PTR(buf));

        n = 1234;
        cr_assert_eq(fs_read_all(fd, 9, &buf, &n), -EFBIG);
        cr_assert_null(buf, "nothing returned on failure");
        cr_assert_eq(n, 1234);
}

/* Files whose stat size says nothing about their contents (here 0), so the buffer must grow while reading:
 * the same path as a file that grows between fstat() and the reads. */
Test(fsops, read_all_beyond_stat_size) {
        _cleanup_close_ int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
        _cleanup_free_ void *buf = NULL;
        struct stat st;
        size_t n;

        if (fd < 0)
                cr_skip_test("/proc/self/status not available: %s", strerror(errno));
        cr_assert_eq(fstat(fd, &st), 0);
        if (st.st_size != 0)
                cr_skip_test(
                        "/proc reports a size for status files here; the growing path is not exercised");

        cr_assert_eq(fs_read_all(fd, 1024 * 1024, &buf, &n), 0);
        cr_assert_gt(n, 100);
        cr_assert_eq(memcmp(buf, "Name:", 5), 0);
        cr_assert_not_null(memmem(buf, n, "\nPid:", 5), "whole file read, not just a first chunk");
        free(TAKE_PTR(buf));

        cr_assert_eq(fs_read_all(fd, 50, &buf, &n), -EFBIG);
        cr_assert_null(buf);
}

Test(fsops, read_all_errors) {
        int p[2];
        void *buf = NULL;
        size_t n;

        cr_assert_eq(fs_read_all(-1, 100, &buf, &n), -EBADF);

        cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
        cr_assert_eq(fs_read_all(p[0], 100, &buf, &n), -ESPIPE);
        cr_assert_null(buf);
        safe_close(p[0]);
        safe_close(p[1]);
}
