/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "state/agent-id.h"
#include "util/macro.h"

void agent_id_to_string(const uint8_t id[16], char ret[AGENT_ID_STRING_SIZE]) {
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;
        for (size_t i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        ret[o++] = '-';
                ret[o++] = hex[id[i] >> 4];
                ret[o++] = hex[id[i] & 15];
        }
        ret[o] = '\0';
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

int agent_id_from_string(const char *s, uint8_t ret[16]) {
        uint8_t id[16];
        size_t o = 0;

        if (strlen(s) != 36)
                return -EINVAL;
        for (size_t i = 0; i < 36;) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return -EINVAL;
                        i++;
                        continue;
                }
                int hi = hexval(s[i]), lo = hexval(s[i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                id[o++] = (uint8_t) (hi << 4 | lo);
                i += 2;
        }
        memcpy(ret, id, 16);
        return 0;
}

static int create(int dir_fd, const char *dir_name, const FsOps *ops, uint8_t ret[16], Error *e) {
        static const char tmp[] = AGENT_ID_FILE ".tmp";
        char line[AGENT_ID_STRING_SIZE + 1];
        uint8_t id[16];
        int r;

        if (getrandom(id, sizeof(id), 0) != (ssize_t) sizeof(id)) {
                r = negative_errno();
                return error_errno(e, r, "%s/%s: cannot get random bytes for a new agent id: %s", dir_name,
                                   AGENT_ID_FILE, strerror(-r));
        }
        id[6] = (uint8_t) ((id[6] & 0x0f) | 0x40); /* version 4 */
        id[8] = (uint8_t) ((id[8] & 0x3f) | 0x80); /* RFC 4122 variant */
        agent_id_to_string(id, line);
        strcat(line, "\n");

        (void) unlinkat(dir_fd, tmp, 0);
        _cleanup_close_ int fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
                r = negative_errno();
                goto fail;
        }
        r = fs_pwrite_full(ops, fd, line, strlen(line), 0);
        if (r >= 0)
                r = ops->fdatasync(ops->userdata, fd);
        if (r >= 0)
                r = ops->renameat(ops->userdata, dir_fd, tmp, dir_fd, AGENT_ID_FILE);
        if (r < 0) {
                (void) unlinkat(dir_fd, tmp, 0);
                goto fail;
        }
        r = ops->fsync(ops->userdata, dir_fd);
        if (r < 0)
                goto fail;
        memcpy(ret, id, 16);
        return 0;
fail:
        return error_errno(e, r, "%s/%s: cannot write a new agent id: %s", dir_name, AGENT_ID_FILE,
                           strerror(-r));
}

int agent_id_load_or_create(int dir_fd, const char *dir_name, const FsOps *ops, uint8_t ret[16], Error *e) {
        char buf[128];
        ssize_t n;

        if (!ops)
                ops = &fs_ops_default;
        _cleanup_close_ int fd = openat(dir_fd, AGENT_ID_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
                if (errno == ENOENT)
                        return create(dir_fd, dir_name, ops, ret, e);
                int r = negative_errno();
                return error_errno(e, r, "%s/%s: %s", dir_name, AGENT_ID_FILE, strerror(-r));
        }
        n = read(fd, buf, sizeof(buf) - 1);
        if (n < 0) {
                int r = negative_errno();
                return error_errno(e, r, "%s/%s: %s", dir_name, AGENT_ID_FILE, strerror(-r));
        }
        buf[n] = '\0';
        if (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        if (agent_id_from_string(buf, ret) < 0) {
                return error_set(
                        e, -EBADMSG, ERROR_INVALID,
                        "%s/%s does not hold an agent id (one lowercase UUID line); refusing to make a new "
                        "one, which would disown every object this agent made: restore the file or "
                        "remove it deliberately",
                        dir_name, AGENT_ID_FILE);
        }
        return 0;
}
