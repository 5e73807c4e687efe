/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* state/agent-id: made once, read back the same on every later start, and a damaged file is refused
 * rather than silently replaced (a new id would disown everything the agent made). */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/agent-id.h"
#include "tests/shell-oracle.h"

static char dir[] = "/tmp/chvm-agent-id-XXXXXX";
static int dfd = -1;

static void setup(void) {
        cr_assert(mkdtemp(dir));
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        cr_assert(dfd >= 0);
}

static void teardown(void) {
        close(dfd);
        free(sh("rm -rf %s", dir));
}

TestSuite(agent_id, .init = setup, .fini = teardown);

static void write_file(const char *content) {
        char path[256];
        snprintf(path, sizeof(path), "%s/agent-id", dir);
        FILE *f = fopen(path, "we");
        cr_assert(f);
        fputs(content, f);
        fclose(f);
}

Test(agent_id, string_round_trip) {
        const uint8_t id[16] = { 0xc4, 0x1e, 0x55, 0x00, 0x12, 0x34, 0x40, 0x00,
                                 0x80, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01 };
        char s[AGENT_ID_STRING_SIZE];
        uint8_t back[16];
        agent_id_to_string(id, s);
        cr_assert_str_eq(s, "c41e5500-1234-4000-8000-deadbeef0001");
        cr_assert_eq(agent_id_from_string(s, back), 0);
        cr_assert_arr_eq(back, id, 16);
        cr_assert_eq(agent_id_from_string("C41E5500-1234-4000-8000-DEADBEEF0001", back), -EINVAL);
        cr_assert_eq(agent_id_from_string("c41e5500-1234-4000-8000-deadbeef000", back), -EINVAL);
        cr_assert_eq(agent_id_from_string("c41e5500x1234-4000-8000-deadbeef0001", back), -EINVAL);
        cr_assert_eq(agent_id_from_string("c41e5500-1234-4000-8000-deadbeef00g1", back), -EINVAL);
}

Test(agent_id, created_once_then_read_back) {
        uint8_t a[16], b[16];
        Error err;
        char s[AGENT_ID_STRING_SIZE], line[AGENT_ID_STRING_SIZE + 1], path[256];

        cr_assert_eq(agent_id_load_or_create(dfd, dir, NULL, a, &err), 0, "%s", error_message(&err));
        cr_assert_eq(a[6] >> 4, 4, "version 4 UUID");
        cr_assert_eq(a[8] >> 6, 2, "RFC 4122 variant");
        agent_id_to_string(a, s);
        snprintf(path, sizeof(path), "%s/agent-id", dir);
        char *content = sh("cat %s", path);
        snprintf(line, sizeof(line), "%s\n", s);
        cr_assert_str_eq(content, line);
        free(content);
        snprintf(path, sizeof(path), "%s/agent-id.tmp", dir);
        cr_assert_eq(access(path, F_OK), -1, "no temporary file left");

        cr_assert_eq(agent_id_load_or_create(dfd, dir, NULL, b, &err), 0, "%s", error_message(&err));
        cr_assert_arr_eq(a, b, 16, "the second start reads the same id");
}

Test(agent_id, damaged_file_is_refused_not_replaced) {
        static const char *const bad[] = { "", "\n", "not a uuid\n",
                                           "c41e5500-1234-4000-8000-deadbeef0001x\n",
                                           "c41e5500-1234-4000-8000-deadbeef0001\nsecond line\n" };
        uint8_t id[16];
        Error err;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                write_file(bad[i]);
                cr_assert_eq(agent_id_load_or_create(dfd, dir, NULL, id, &err), -EBADMSG, "%zu", i);
                cr_assert(strstr(error_message(&err), dir) && strstr(error_message(&err), "agent-id") &&
                                  strstr(error_message(&err), "does not hold"),
                          "%s", error_message(&err));
                char *content = sh("cat %s/agent-id", dir);
                cr_assert_str_eq(content, bad[i], "the file is left as it was");
                free(content);
        }
        write_file("c41e5500-1234-4000-8000-deadbeef0001");
        cr_assert_eq(agent_id_load_or_create(dfd, dir, NULL, id, &err), 0, "no newline is fine");
}

static int fail_fdatasync(void *u, int fd) {
        (void) u;
        (void) fd;
        return -EIO;
}

Test(agent_id, failed_sync_leaves_no_file) {
        FsOps ops = fs_ops_default;
        ops.fdatasync = fail_fdatasync;
        uint8_t id[16];
        Error err;
        cr_assert_eq(agent_id_load_or_create(dfd, dir, &ops, id, &err), -EIO);
        cr_assert(strstr(error_message(&err), "cannot write a new agent id") &&
                          strstr(error_message(&err), "Input/output error"),
                  "%s", error_message(&err));
        char *ls = sh("ls -A %s", dir);
        cr_assert_str_eq(ls, "", "neither agent-id nor its tmp file is left: %s", ls);
        free(ls);
}
