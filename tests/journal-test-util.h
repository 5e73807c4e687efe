/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Helpers shared by the journal tests, the fuzzer's seed builder and the benchmark: a generator of random
 * but consistent record sequences, a fault-injecting FsOps, and temporary directories. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/journal.h"

extern const uint8_t test_agent_id[JOURNAL_ID_SIZE];

/* Generates records that are always valid against the live set they are applied to. */
typedef struct RecordGen {
        uint64_t rng;
        LiveSet *model;
        uint64_t next_vm_id;
        uint64_t next_oid;
        uint64_t *vms;
        size_t n_vms;
        uint64_t *oids;
        size_t n_oids;
        uint32_t *ips;
        size_t n_ips;
        size_t big_keys; /* if > 0, INTENT keys are this many bytes (to make records span sectors) */
        char name[64], tag[128], reason[64], backend[16], definition[160];
        uint8_t key[4096];
} RecordGen;

void record_gen_init(RecordGen *g, uint64_t seed);
void record_gen_done(RecordGen *g);
/* Fills *r (pointers into g) with the next record; valid against g->model. */
void record_gen_next(RecordGen *g, JournalRecord *r);
/* The record was appended: apply it to the model. */
void record_gen_commit(RecordGen *g, const JournalRecord *r);

uint64_t test_rand(uint64_t *state);

/* Encoded form of a record (with its LSN and synced_lsn) under a fixed salt, for comparing records. */
typedef struct Encoded {
        void *buf;
        size_t size;
} Encoded;
Encoded encode_for_compare(const JournalRecord *r);
bool encoded_equal(Encoded a, Encoded b);

/* A fault-injecting file system. */
typedef struct TestFs {
        FsOps ops;
        bool nosync; /* fdatasync/fsync succeed without syncing (fast tests) */
        unsigned pwrite_calls, fdatasync_calls, fsync_calls, ftruncate_calls, rename_calls;
        unsigned fail_fdatasync_at; /* 1-based call number to fail with fail_errno; 0: never */
        unsigned fail_pwrite_at;
        size_t short_pwrite; /* when failing pwrite: first write this many bytes for real */
        bool fail_ftruncate;
        int fail_errno;
} TestFs;

void test_fs_init(TestFs *fs);

/* mkdtemp under $CHVM_TEST_TMPDIR or /tmp; rm -rf. */
char *test_mkdtemp(void);
void test_rm_rf(const char *dir);

int test_read_file(const char *dir, const char *name, void **ret, size_t *ret_size);
int test_write_file(const char *dir, const char *name, const void *buf, size_t size);
bool test_file_exists(const char *dir, const char *name);
