/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/journal-test-util.h"

const uint8_t test_agent_id[JOURNAL_ID_SIZE] = { 0xc4, 0x1e, 0x55, 0x00, 0x12, 0x34, 0x40, 0x00,
                                                 0x80, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01 };

uint64_t test_rand(uint64_t *state) {
        /* splitmix64: deterministic per seed, good enough for test data */
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

static uint64_t rnd(RecordGen *g, uint64_t n) {
        return n ? test_rand(&g->rng) % n : 0;
}

void record_gen_init(RecordGen *g, uint64_t seed) {
        *g = (RecordGen){ .rng = seed, .next_vm_id = 1, .next_oid = 1 };
        g->model = live_set_new();
        assert(g->model);
}

void record_gen_done(RecordGen *g) {
        live_set_free(g->model);
        free(g->vms);
        free(g->oids);
        free(g->ips);
}

static void push64(uint64_t **a, size_t *n, uint64_t v) {
        *a = realloc(*a, (*n + 1) * sizeof(uint64_t));
        assert(*a);
        (*a)[(*n)++] = v;
}

static void remove64(uint64_t *a, size_t *n, uint64_t v) {
        for (size_t i = 0; i < *n; i++)
                if (a[i] == v) {
                        a[i] = a[--*n];
                        return;
                }
}

#define F(x) JOURNAL_FIELD_BIT(JOURNAL_FIELD_##x)

static bool gen_try(RecordGen *g, JournalRecord *r) {
        uint64_t pick = rnd(g, 100);
        uint64_t vm = g->n_vms ? g->vms[rnd(g, g->n_vms)] : 0;
        uint64_t oid = g->n_oids ? g->oids[rnd(g, g->n_oids)] : 0;
        const LiveVm *v = vm ? live_set_get_vm(g->model, vm) : NULL;
        const LiveObject *o = oid ? live_set_get_object(g->model, oid) : NULL;

        *r = (JournalRecord){ .flags = (uint16_t) (rnd(g, 8) == 0 ? rnd(g, 4) : 0) };

        if (pick < 10 || !v) {
                r->type = JOURNAL_VM_DEFINE;
                r->fields = F(VM_ID) | F(VM_NAME) | F(BACKEND);
                r->vm_id = v && pick < 3 ? vm : g->next_vm_id;
                snprintf(g->name, sizeof(g->name), "vm-%" PRIu64 "-%u", r->vm_id, (unsigned) rnd(g, 1000));
                static const char *const backends[] = { "local", "bridge", "mosnet" };
                snprintf(g->backend, sizeof(g->backend), "%s", backends[rnd(g, 3)]);
                r->vm_name = g->name;
                r->backend = g->backend;
                if (rnd(g, 2)) { /* the agent's own file text rides along (an older agent's does not) */
                        r->fields |= F(DEFINITION);
                        snprintf(g->definition, sizeof(g->definition),
                                 "[vm]\nname = %s\ncpus = %u\nkernel = /boot/vmlinuz\n", g->name,
                                 (unsigned) (1 + rnd(g, 64)));
                        r->definition = g->definition;
                }
        } else if (pick < 18) {
                r->type = JOURNAL_VM_STARTED;
                r->fields = F(VM_ID) | F(PID) | F(START_TIME) | F(BOOT_ID);
                r->vm_id = vm;
                r->pid = (uint32_t) (1 + rnd(g, 4000000));
                r->start_time = test_rand(&g->rng);
                for (size_t i = 0; i < 16; i++)
                        r->boot_id[i] = (uint8_t) rnd(g, 256);
        } else if (pick < 25) {
                if (v->state != JOURNAL_VM_RUNNING)
                        return false;
                r->type = JOURNAL_VM_EXITED;
                r->fields = F(VM_ID) | F(VM_STATE);
                r->vm_id = vm;
                r->vm_state = rnd(g, 2) ? JOURNAL_VM_CRASHED : JOURNAL_VM_STOPPED;
                if (rnd(g, 2)) {
                        r->fields |= F(EXIT_SIGNAL) | F(REASON);
                        r->exit_signal = (int32_t) (1 + rnd(g, 31));
                        snprintf(g->reason, sizeof(g->reason), "killed by signal %d", r->exit_signal);
                        r->reason = g->reason;
                } else {
                        r->fields |= F(EXIT_STATUS);
                        r->exit_status = (int32_t) rnd(g, 256);
                }
        } else if (pick < 27) {
                r->type = JOURNAL_VM_UNDEFINE;
                r->fields = F(VM_ID);
                r->vm_id = vm;
        } else if (pick < 57) {
                r->type = JOURNAL_INTENT;
                r->fields = F(OID) | F(VM_ID) | F(OBJ_KIND) | F(OBJ_NAME) | F(OBJ_TAG);
                r->oid = g->next_oid;
                r->vm_id = rnd(g, 5) == 0 ? 0 : vm;
                r->obj_kind = (uint32_t) (1 + rnd(g, 6));
                snprintf(g->name, sizeof(g->name), "tap-%08x", (unsigned) test_rand(&g->rng));
                snprintf(g->tag, sizeof(g->tag),
                         "chvm1:c41e5500-1234-4000-8000-deadbeef0001:%016" PRIx64 ":tap", r->vm_id);
                r->obj_name = g->name;
                r->obj_tag = g->tag;
                size_t ks = g->big_keys ? g->big_keys : rnd(g, 3) ? rnd(g, 40) : 0;
                if (ks > 0) {
                        for (size_t i = 0; i < ks; i++)
                                g->key[i] = (uint8_t) rnd(g, 256);
                        r->fields |= F(OBJ_KEY);
                        r->obj_key = g->key;
                        r->obj_key_size = ks;
                }
                if (rnd(g, 2)) {
                        r->fields |= F(OBJ_HANDLE);
                        r->obj_handle = 1 + rnd(g, 100000);
                }
        } else if (pick < 72) {
                if (!o || o->state != LIVE_OBJECT_INTENDED)
                        return false;
                r->type = JOURNAL_CREATED;
                r->fields = F(OID);
                r->oid = oid;
                if (rnd(g, 2)) {
                        r->fields |= F(OBJ_IFINDEX);
                        r->obj_ifindex = (uint32_t) (1 + rnd(g, 100000));
                }
        } else if (pick < 75) {
                if (!o || o->state != LIVE_OBJECT_INTENDED)
                        return false;
                r->type = JOURNAL_ABORTED;
                r->fields = F(OID);
                r->oid = oid;
        } else if (pick < 85) {
                if (!o || o->state == LIVE_OBJECT_RELEASING)
                        return false;
                r->type = JOURNAL_RELEASE_INTENT;
                r->fields = F(OID);
                r->oid = oid;
        } else if (pick < 93) {
                if (!o || o->state != LIVE_OBJECT_RELEASING)
                        return false;
                r->type = JOURNAL_RELEASED;
                r->fields = F(OID);
                r->oid = oid;
        } else if (pick < 97) {
                r->type = JOURNAL_IP_ALLOC;
                r->fields = F(VM_ID) | F(IP4);
                r->vm_id = vm;
                r->ip4 = UINT32_C(0xc0a8c800) | (uint32_t) (2 + rnd(g, 253)); /* 192.168.200.2-254 */
        } else {
                if (g->n_ips == 0)
                        return false;
                r->type = JOURNAL_IP_FREE;
                r->fields = F(IP4);
                r->ip4 = g->ips[rnd(g, g->n_ips)];
        }

        return live_set_check(g->model, r, NULL) >= 0;
}

void record_gen_next(RecordGen *g, JournalRecord *r) {
        while (!gen_try(g, r))
                ;
}

void record_gen_commit(RecordGen *g, const JournalRecord *r) {
        int k = live_set_apply(g->model, r, NULL);
        assert(k >= 0);
        (void) k;

        switch (r->type) {
        case JOURNAL_VM_DEFINE:
                if (r->vm_id == g->next_vm_id) {
                        push64(&g->vms, &g->n_vms, r->vm_id);
                        g->next_vm_id++;
                }
                break;
        case JOURNAL_VM_UNDEFINE:
                remove64(g->vms, &g->n_vms, r->vm_id);
                break;
        case JOURNAL_INTENT:
                push64(&g->oids, &g->n_oids, r->oid);
                g->next_oid = r->oid + 1;
                break;
        case JOURNAL_ABORTED:
        case JOURNAL_RELEASED:
                remove64(g->oids, &g->n_oids, r->oid);
                break;
        case JOURNAL_IP_ALLOC:
                g->ips = realloc(g->ips, (g->n_ips + 1) * sizeof(uint32_t));
                assert(g->ips);
                g->ips[g->n_ips++] = r->ip4;
                break;
        case JOURNAL_IP_FREE:
                for (size_t i = 0; i < g->n_ips; i++)
                        if (g->ips[i] == r->ip4) {
                                g->ips[i] = g->ips[--g->n_ips];
                                break;
                        }
                break;
        default:
                break;
        }
}

Encoded encode_for_compare(const JournalRecord *r) {
        static const uint8_t salt[JOURNAL_SALT_SIZE] = { 1, 2, 3 };
        Encoded e = {};
        int k = journal_record_encode(r, salt, &e.buf, &e.size);
        assert(k >= 0);
        (void) k;
        return e;
}

bool encoded_equal(Encoded a, Encoded b) {
        return a.size == b.size && memcmp(a.buf, b.buf, a.size) == 0;
}

static ssize_t tfs_pwrite(void *userdata, int fd, const void *buf, size_t size, off_t offset) {
        TestFs *fs = userdata;

        if (++fs->pwrite_calls == fs->fail_pwrite_at) {
                if (fs->short_pwrite > 0 && fs->short_pwrite < size) {
                        /* Part of the data reaches the file, then the write of the rest fails. */
                        size_t n = fs->short_pwrite;
                        fs->short_pwrite = 0;
                        fs->fail_pwrite_at++;
                        return fs_ops_default.pwrite(NULL, fd, buf, n, offset);
                }
                return -fs->fail_errno;
        }
        return fs_ops_default.pwrite(NULL, fd, buf, size, offset);
}

static int tfs_fdatasync(void *userdata, int fd) {
        TestFs *fs = userdata;
        if (++fs->fdatasync_calls == fs->fail_fdatasync_at)
                return -fs->fail_errno;
        return fs->nosync ? 0 : fs_ops_default.fdatasync(NULL, fd);
}

static int tfs_fsync(void *userdata, int fd) {
        TestFs *fs = userdata;
        fs->fsync_calls++;
        return fs->nosync ? 0 : fs_ops_default.fsync(NULL, fd);
}

static int tfs_ftruncate(void *userdata, int fd, off_t size) {
        TestFs *fs = userdata;
        fs->ftruncate_calls++;
        if (fs->fail_ftruncate)
                return -fs->fail_errno;
        return fs_ops_default.ftruncate(NULL, fd, size);
}

static int tfs_renameat(void *userdata, int a, const char *an, int b, const char *bn) {
        TestFs *fs = userdata;
        fs->rename_calls++;
        return fs_ops_default.renameat(NULL, a, an, b, bn);
}

void test_fs_init(TestFs *fs) {
        *fs = (TestFs) {
                .ops = {
                        .pwrite = tfs_pwrite,
                        .fdatasync = tfs_fdatasync,
                        .fsync = tfs_fsync,
                        .ftruncate = tfs_ftruncate,
                        .renameat = tfs_renameat,
                },
                .fail_errno = EIO,
        };
        fs->ops.userdata = fs;
}

char *test_mkdtemp(void) {
        const char *base = getenv("CHVM_TEST_TMPDIR") ?: "/tmp";
        char *p;
        if (asprintf(&p, "%s/chvm-test-XXXXXX", base) < 0)
                abort();
        if (!mkdtemp(p))
                abort();
        return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) flag;
        (void) ftw;
        return remove(path);
}

void test_rm_rf(const char *dir) {
        if (dir)
                (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int test_read_file(const char *dir, const char *name, void **ret, size_t *ret_size) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = fs_read_all(fd, SIZE_MAX, ret, ret_size);
        close(fd);
        return r;
}

int test_write_file(const char *dir, const char *name, const void *buf, size_t size) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        int r = fs_pwrite_full(&fs_ops_default, fd, buf, size, 0);
        close(fd);
        return r;
}

bool test_file_exists(const char *dir, const char *name) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return access(path, F_OK) == 0;
}
