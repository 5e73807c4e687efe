/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The ownership journal: round trip, recovery from torn tails and corruption, sync failures, compaction
 * and its crash points, and the single-writer lock. */

#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "state/journal.h"
#include "tests/journal-test-util.h"
#include "util/crashpoint.h"

static char *dir;

static void setup(void) {
        dir = test_mkdtemp();
}

static void teardown(void) {
        test_rm_rf(dir);
        free(dir);
        dir = NULL;
}

TestSuite(journal, .init = setup, .fini = teardown);

static bool long_tests(void) {
        const char *e = getenv("CHVM_TEST_LONG");
        return e && *e && strcmp(e, "0") != 0;
}

/* The records a journal holds, as replayed, in order. */
typedef struct Replay {
        Encoded *recs;
        uint64_t *lsns;
        bool *after_damage;
        size_t n;
} Replay;

static int collect(const JournalRecord *r, bool after_damage, void *userdata) {
        Replay *rp = userdata;
        rp->recs = realloc(rp->recs, (rp->n + 1) * sizeof(Encoded));
        rp->lsns = realloc(rp->lsns, (rp->n + 1) * sizeof(uint64_t));
        rp->after_damage = realloc(rp->after_damage, (rp->n + 1) * sizeof(bool));
        cr_assert(rp->recs && rp->lsns && rp->after_damage);
        rp->recs[rp->n] = encode_for_compare(r);
        rp->lsns[rp->n] = r->lsn;
        rp->after_damage[rp->n] = after_damage;
        rp->n++;
        return 0;
}

static void replay_clear(Replay *rp) {
        for (size_t i = 0; i < rp->n; i++)
                free(rp->recs[i].buf);
        free(rp->recs);
        free(rp->lsns);
        free(rp->after_damage);
        *rp = (Replay){};
}

static JournalOptions options(const FsOps *ops, Replay *rp) {
        JournalOptions o = {
                .directory = dir,
                .fs_ops = ops,
                .on_record = rp ? collect : NULL,
                .userdata = rp,
        };
        memcpy(o.agent_id, test_agent_id, JOURNAL_ID_SIZE);
        return o;
}

static Journal *open_ok(const FsOps *ops, Replay *rp, JournalReport *rep) {
        JournalOptions o = options(ops, rp);
        JournalReport local;
        Journal *j = NULL;
        int r = journal_open(&o, &j, rep ?: &local);
        cr_assert_eq(r, 0, "journal_open: %s: %s", strerror(-r), (rep ?: &local)->message);
        return j;
}

/* What was written: each record's encoding and the file size just after it. */
typedef struct Written {
        Encoded *recs;
        uint64_t *end;
        size_t n;
} Written;

static void written_clear(Written *w) {
        for (size_t i = 0; i < w->n; i++)
                free(w->recs[i].buf);
        free(w->recs);
        free(w->end);
        *w = (Written){};
}

/* Appends n generated records. sync_every: 1 = sync after each record, k = group commit of k, 0 = never. */
static void append_n(Journal *j, RecordGen *g, size_t n, size_t sync_every, Written *w) {
        for (size_t i = 0; i < n; i++) {
                JournalRecord r;
                record_gen_next(g, &r);
                int k = journal_append(j, &r);
                cr_assert_eq(k, 0, "append %zu: %s", i, journal_error_message(j));
                record_gen_commit(g, &r);
                if (sync_every && (i + 1) % sync_every == 0)
                        cr_assert_eq(journal_sync(j), 0, "%s", journal_error_message(j));
                if (w) {
                        w->recs = realloc(w->recs, (w->n + 1) * sizeof(Encoded));
                        w->end = realloc(w->end, (w->n + 1) * sizeof(uint64_t));
                        cr_assert(w->recs && w->end);
                        w->recs[w->n] = encode_for_compare(&r);
                        w->end[w->n] = journal_size(j);
                        w->n++;
                }
        }
}

Test(journal, create_empty) {
        JournalReport rep;
        Journal *j = open_ok(NULL, NULL, &rep);
        cr_assert(rep.created);
        cr_assert_eq(journal_state(j), JOURNAL_STATE_OK);
        cr_assert_eq(journal_last_lsn(j), 0);
        cr_assert_eq(live_set_n_objects(journal_live_set(j)), 0);
        journal_close(j);

        j = open_ok(NULL, NULL, &rep);
        cr_assert_not(rep.created);
        cr_assert_eq(rep.state, JOURNAL_STATE_OK);
        cr_assert_str_empty(rep.message);
        journal_close(j);
}

/* Acceptance 1: 10,000 mixed records appended, closed, replayed: identical and in order. */
Test(journal, round_trip_10000) {
        RecordGen g;
        Written w = {};
        Replay rp = {};
        uint64_t rng = 7;

        record_gen_init(&g, 42);
        Journal *j = open_ok(NULL, NULL, NULL);
        for (size_t done = 0; done < 10000;) {
                size_t batch = 1 + test_rand(&rng) % 64;
                if (batch > 10000 - done)
                        batch = 10000 - done;
                append_n(j, &g, batch, 0, &w);
                cr_assert_eq(journal_sync(j), 0);
                done += batch;
        }
        cr_assert(live_set_equal(journal_live_set(j), g.model));
        journal_close(j);

        JournalReport rep;
        j = open_ok(NULL, &rp, &rep);
        cr_assert_eq(rep.state, JOURNAL_STATE_OK, "%s", rep.message);
        cr_assert_eq(rp.n, 10000);
        cr_assert_eq(rep.n_journal_records, 10000);
        cr_assert_eq(journal_last_lsn(j), 10000);
        for (size_t i = 0; i < rp.n; i++) {
                cr_assert_eq(rp.lsns[i], i + 1);
                cr_assert(encoded_equal(rp.recs[i], w.recs[i]), "record %zu differs after replay", i);
        }
        cr_assert(live_set_equal(journal_live_set(j), g.model), "live set differs after replay");
        cr_assert_gt(live_set_n_objects(g.model), 0);
        cr_assert_gt(live_set_n_vms(g.model), 0);
        journal_close(j);

        replay_clear(&rp);
        written_clear(&w);
        record_gen_done(&g);
}

/* A journal with `n` records, synced in groups of varying size, returned as bytes. */
static void build_journal(size_t n, uint64_t seed, Written *w, void **ret_buf, size_t *ret_size) {
        RecordGen g;
        uint64_t rng = seed;
        TestFs fs;

        test_fs_init(&fs);
        fs.nosync = true;
        record_gen_init(&g, seed);
        Journal *j = open_ok(&fs.ops, NULL, NULL);
        for (size_t done = 0; done < n;) {
                size_t batch = 1 + test_rand(&rng) % 5;
                if (batch > n - done)
                        batch = n - done;
                append_n(j, &g, batch, 0, w);
                cr_assert_eq(journal_sync(j), 0);
                done += batch;
        }
        journal_close(j);
        record_gen_done(&g);
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, ret_buf, ret_size), 0);
}

static void remove_broken_copies(void) {
        char name[64];
        for (unsigned i = 1; i < 5; i++) {
                snprintf(name, sizeof(name), "%s/%s.%u.broken", dir, JOURNAL_FILE, i);
                (void) unlink(name);
        }
}

static void truncation_sweep(size_t n_records) {
        Written w = {};
        void *full;
        size_t full_size;
        TestFs fs;

        build_journal(n_records, 3, &w, &full, &full_size);
        cr_assert_eq(w.n, n_records);
        cr_assert_eq(w.end[w.n - 1], full_size);
        test_fs_init(&fs);
        fs.nosync = true;

        size_t expect = 0; /* complete records in the cut file */
        for (size_t cut = JOURNAL_HEADER_SIZE; cut <= full_size; cut++) {
                while (expect < w.n && w.end[expect] <= cut)
                        expect++;
                uint64_t prefix_end = expect ? w.end[expect - 1] : JOURNAL_HEADER_SIZE;

                remove_broken_copies();
                cr_assert_eq(test_write_file(dir, JOURNAL_FILE, full, cut), 0);

                Replay rp = {};
                JournalReport rep;
                Journal *j = open_ok(&fs.ops, &rp, &rep);
                cr_assert_eq(rp.n, expect, "cut at %zu: %zu records replayed, expected %zu", cut, rp.n,
                             expect);
                cr_assert_eq(journal_last_lsn(j), expect);
                /* Records synced before the cut are exactly those that end before it: all are here. */
                if (expect > 0)
                        cr_assert(encoded_equal(rp.recs[expect - 1], w.recs[expect - 1]));
                if (cut == prefix_end) {
                        cr_assert_eq(rep.state, JOURNAL_STATE_OK, "cut at %zu: %s", cut, rep.message);
                } else {
                        cr_assert_eq(rep.state, JOURNAL_STATE_TORN_TAIL_REPAIRED,
                                     "cut at %zu: state %s (%s)", cut, journal_state_to_string(rep.state),
                                     rep.message);
                        cr_assert_eq(rep.torn_offset, prefix_end);
                        cr_assert_eq(rep.torn_bytes, cut - prefix_end);
                        cr_assert_str_eq(rep.broken_copy, JOURNAL_FILE ".1.broken");
                        cr_assert(strstr(rep.message, "torn tail"), "%s", rep.message);
                }
                cr_assert_eq(journal_size(j), prefix_end);
                journal_close(j);
                replay_clear(&rp);

                if (cut != prefix_end && (cut % 7 == 0 || cut == full_size - 1)) {
                        /* The repair holds: the next open finds a clean journal. */
                        j = open_ok(&fs.ops, NULL, &rep);
                        cr_assert_eq(rep.state, JOURNAL_STATE_OK, "after repair: %s", rep.message);
                        cr_assert_eq(journal_last_lsn(j), expect);
                        journal_close(j);
                }
        }

        /* All records, in full, replay identically. */
        Replay rp = {};
        Journal *j = open_ok(&fs.ops, &rp, NULL);
        cr_assert_eq(rp.n, w.n);
        for (size_t i = 0; i < w.n; i++)
                cr_assert(encoded_equal(rp.recs[i], w.recs[i]));
        journal_close(j);
        replay_clear(&rp);
        written_clear(&w);
        free(full);
}

/* Acceptance 2: truncated at every byte offset, the longest complete prefix and a torn tail. */
Test(journal, truncation_sweep_300, .timeout = 300) {
        truncation_sweep(300);
}

Test(journal, truncation_sweep_1000_long, .timeout = 1800) {
        if (!long_tests())
                cr_skip_test("long variant: run with CHVM_TEST_LONG=1 (make check-long)");
        truncation_sweep(1000);
}

Test(journal, cut_inside_header_refused) {
        Written w = {};
        void *full;
        size_t full_size;

        build_journal(5, 9, &w, &full, &full_size);
        for (size_t cut = 0; cut < JOURNAL_HEADER_SIZE; cut += 7) {
                cr_assert_eq(test_write_file(dir, JOURNAL_FILE, full, cut), 0);
                JournalOptions o = options(NULL, NULL);
                JournalReport rep;
                Journal *j = NULL;
                cr_assert_eq(journal_open(&o, &j, &rep), -EBADMSG);
                cr_assert_null(j);
                cr_assert(strstr(rep.message, JOURNAL_FILE) &&
                                  strstr(rep.message, "shorter than its header"),
                          "%s", rep.message);
                /* Refused without touching it. */
                void *now;
                size_t now_size;
                cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &now, &now_size), 0);
                cr_assert_eq(now_size, cut);
                free(now);
        }
        written_clear(&w);
        free(full);
}

/* Opens a damaged image and checks that every replayed record is an original one, unchanged. Returns
 * the number of records replayed. */
static size_t open_damaged(const void *image, size_t size, const Written *w, JournalReport *rep) {
        Replay rp = {};
        TestFs fs;

        test_fs_init(&fs);
        fs.nosync = true;
        remove_broken_copies();
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, image, size), 0);
        Journal *j = open_ok(&fs.ops, &rp, rep);
        for (size_t i = 0; i < rp.n; i++) {
                size_t idx = (size_t) rp.lsns[i] - 1;
                cr_assert_lt(idx, w->n);
                cr_assert(encoded_equal(rp.recs[i], w->recs[idx]), "damaged record LSN %" PRIu64 " accepted",
                          rp.lsns[i]);
        }
        size_t n = rp.n;
        journal_close(j);
        replay_clear(&rp);
        return n;
}

/* Acceptance 3a: every single-bit flip in the last record is detected and cut off. */
Test(journal, tail_bit_flips, .timeout = 300) {
        Written w = {};
        void *full;
        size_t full_size;

        build_journal(40, 11, &w, &full, &full_size);
        uint8_t *img = malloc(full_size);
        cr_assert(img);
        size_t last_start = w.end[w.n - 2];
        for (size_t bit = last_start * 8; bit < full_size * 8; bit++) {
                memcpy(img, full, full_size);
                img[bit / 8] ^= (uint8_t) (1u << (bit % 8));
                JournalReport rep;
                size_t n = open_damaged(img, full_size, &w, &rep);
                cr_assert_eq(n, w.n - 1, "bit %zu: %zu records", bit, n);
                cr_assert_eq(rep.state, JOURNAL_STATE_TORN_TAIL_REPAIRED, "bit %zu: %s", bit, rep.message);
                cr_assert_eq(rep.torn_offset, last_start);
        }
        free(img);
        free(full);
        written_clear(&w);
}

/* Builds 30 small synced records and then 3 large ones (each spanning sectors); the last three either
 * as one group commit (unsynced until the end) or each synced. */
static void build_big_tail(bool sync_each, Written *w, void **ret_buf, size_t *ret_size) {
        RecordGen g;
        TestFs fs;

        test_fs_init(&fs);
        fs.nosync = true;
        record_gen_init(&g, 5);
        Journal *j = open_ok(&fs.ops, NULL, NULL);
        append_n(j, &g, 30, 1, w);
        g.big_keys = 700;
        for (size_t i = 0; i < 3; i++) {
                JournalRecord r;
                do
                        record_gen_next(&g, &r);
                while (r.type != JOURNAL_INTENT);
                cr_assert_eq(journal_append(j, &r), 0);
                record_gen_commit(&g, &r);
                if (sync_each)
                        cr_assert_eq(journal_sync(j), 0);
                w->recs = realloc(w->recs, (w->n + 1) * sizeof(Encoded));
                w->end = realloc(w->end, (w->n + 1) * sizeof(uint64_t));
                w->recs[w->n] = encode_for_compare(&r);
                w->end[w->n++] = journal_size(j);
        }
        cr_assert_eq(journal_sync(j), 0);
        journal_close(j);
        record_gen_done(&g);
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, ret_buf, ret_size), 0);
}

static void sector_zeroing(bool sync_each) {
        Written w = {};
        void *full;
        size_t full_size;

        build_big_tail(sync_each, &w, &full, &full_size);
        uint8_t *img = malloc(full_size);
        cr_assert(img);
        size_t tail_start = w.end[w.n - 4];
        size_t tested = 0;

        for (size_t sector = tail_start / 512 * 512; sector < full_size; sector += 512) {
                size_t end = sector + 512 < full_size ? sector + 512 : full_size;
                memcpy(img, full, full_size);
                memset(img + sector, 0, end - sector);

                /* The first record whose bytes changed. */
                size_t first_bad = w.n;
                for (size_t i = 0; i < w.n; i++) {
                        size_t start = i ? w.end[i - 1] : JOURNAL_HEADER_SIZE;
                        if (memcmp(img + start, (uint8_t *) full + start, w.end[i] - start) != 0) {
                                first_bad = i;
                                break;
                        }
                }
                cr_assert_lt(first_bad, w.n, "zeroing sector at %zu changed nothing", sector);

                JournalReport rep;
                size_t n = open_damaged(img, full_size, &w, &rep);
                /* A later intact record proves the damaged one had been synced if its synced_lsn reaches
                 * the damaged LSN: true for records synced one by one, never within one group commit. */
                bool proven = false;
                for (size_t i = first_bad + 1; i < w.n; i++)
                        if (memcmp(img + w.end[i - 1], (uint8_t *) full + w.end[i - 1],
                                   w.end[i] - w.end[i - 1]) == 0 &&
                            unaligned_read_le64((uint8_t *) w.recs[i].buf + 24) >= first_bad + 1)
                                proven = true;
                if (!proven) {
                        cr_assert_eq(n, first_bad, "sector %zu: %zu records, expected %zu", sector, n,
                                     first_bad);
                        cr_assert_eq(rep.state, JOURNAL_STATE_TORN_TAIL_REPAIRED, "sector %zu: %s", sector,
                                     rep.message);
                } else {
                        cr_assert_eq(rep.state, JOURNAL_STATE_QUARANTINE, "sector %zu: %s", sector,
                                     rep.message);
                        cr_assert_eq(rep.damage_lsn, first_bad + 1);
                }
                tested++;
        }
        cr_assert_geq(tested, 4);
        free(img);
        free(full);
        written_clear(&w);
}

/* Acceptance 3b: zeroing any 512-byte sector of the last three records (written as one group commit, as
 * a power loss would tear them) is detected and truncated; no damaged record is ever accepted. */
Test(journal, tail_sector_zeroing_group_commit) {
        sector_zeroing(false);
}

/* The same damage when each of the last records had been synced on its own: damage with a later record
 * that proves it had been synced is corruption, not a torn tail. */
Test(journal, tail_sector_zeroing_synced_each) {
        sector_zeroing(true);
}

/* Acceptance 4: a bad record followed by valid ones puts the journal in quarantine, visibly. */
Test(journal, mid_log_corruption_quarantine) {
        Written w = {};
        void *full;
        size_t full_size;
        RecordGen g;

        record_gen_init(&g, 77);
        Journal *j = open_ok(NULL, NULL, NULL);
        append_n(j, &g, 100, 1, &w);
        journal_close(j);
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &full, &full_size), 0);

        uint8_t *img = malloc(full_size);
        memcpy(img, full, full_size);
        img[w.end[48] + 20] ^= 0x10; /* inside record 50 (LSN 50) */
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, img, full_size), 0);

        Replay rp = {};
        JournalReport rep;
        j = open_ok(NULL, &rp, &rep);
        cr_assert_eq(rep.state, JOURNAL_STATE_QUARANTINE, "%s", rep.message);
        cr_assert_eq(journal_state(j), JOURNAL_STATE_QUARANTINE);
        cr_assert_eq(journal_report(j)->state, JOURNAL_STATE_QUARANTINE);
        cr_assert_eq(rep.damage_lsn, 50);
        cr_assert_eq(rep.damage_offset, w.end[48]);
        cr_assert_eq(rep.n_after_damage, 50);
        cr_assert(strstr(rep.message, "QUARANTINE") && strstr(rep.message, "LSN 50"), "%s", rep.message);
        cr_assert_eq(rp.n, 99);
        for (size_t i = 0; i < rp.n; i++) {
                size_t idx = (size_t) rp.lsns[i] - 1;
                cr_assert_neq(idx, 49, "the damaged record was accepted");
                cr_assert(encoded_equal(rp.recs[i], w.recs[idx]));
                cr_assert_eq(rp.after_damage[i], idx > 49);
        }
        cr_assert_eq(journal_last_lsn(j), 100);
        /* Nothing was cut off: the evidence stays. */
        cr_assert_geq(journal_size(j), full_size);
        cr_assert_not(test_file_exists(dir, JOURNAL_FILE ".1.broken"));

        /* The agent keeps running: appends work and continue the LSNs. */
        JournalRecord r;
        record_gen_next(&g, &r);
        cr_assert_eq(journal_append_sync(j, &r), 0, "%s", journal_error_message(j));
        cr_assert_eq(r.lsn, 101);
        record_gen_commit(&g, &r);

        /* Compaction would make the incomplete set permanent: refused unless accepted explicitly. */
        cr_assert_eq(journal_compact(j, 0), -EUCLEAN);
        cr_assert(strstr(journal_error_message(j), "quarantine"), "%s", journal_error_message(j));
        journal_close(j);

        /* Still quarantined next time, with the new record after the damage. */
        replay_clear(&rp);
        j = open_ok(NULL, &rp, &rep);
        cr_assert_eq(rep.state, JOURNAL_STATE_QUARANTINE);
        cr_assert_eq(rp.n, 100);
        cr_assert_eq(journal_last_lsn(j), 101);

        cr_assert_eq(journal_compact(j, JOURNAL_COMPACT_ACCEPT_DAMAGE), 0, "%s", journal_error_message(j));
        cr_assert_eq(journal_state(j), JOURNAL_STATE_OK);
        journal_close(j);
        j = open_ok(NULL, NULL, &rep);
        cr_assert_eq(rep.state, JOURNAL_STATE_OK, "%s", rep.message);
        cr_assert_eq(journal_last_lsn(j), 101);
        journal_close(j);

        replay_clear(&rp);
        written_clear(&w);
        record_gen_done(&g);
        free(img);
        free(full);
}

/* A record missing from the middle (LSN gap) is corruption too. */
Test(journal, lsn_gap_quarantine) {
        Written w = {};
        void *full;
        size_t full_size;
        RecordGen g;

        record_gen_init(&g, 78);
        Journal *j = open_ok(NULL, NULL, NULL);
        append_n(j, &g, 20, 1, &w);
        journal_close(j);
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &full, &full_size), 0);

        /* Drop record 10 (bytes w.end[8] .. w.end[9]). */
        uint8_t *img = malloc(full_size);
        size_t a = w.end[8], b = w.end[9];
        memcpy(img, full, a);
        memcpy(img + a, (uint8_t *) full + b, full_size - b);
        JournalReport rep;
        size_t n = open_damaged(img, full_size - (b - a), &w, &rep);
        cr_assert_eq(rep.state, JOURNAL_STATE_QUARANTINE, "%s", rep.message);
        cr_assert_eq(rep.damage_lsn, 10);
        /* Every other record is replayed, but for those that contradict the missing one (a record of the
         * VM it defined, say): those are skipped and counted. Which they are, a model without it says. */
        static const uint8_t cmp_salt[JOURNAL_SALT_SIZE] = { 1, 2, 3 };
        LiveSet *model = live_set_new();
        cr_assert_not_null(model);
        size_t consistent = 0;
        for (size_t i = 0; i < w.n; i++) {
                JournalRecord rec;
                if (i == 9)
                        continue;
                cr_assert_gt(journal_record_decode(w.recs[i].buf, w.recs[i].size, cmp_salt, &rec, NULL), 0);
                if (live_set_apply(model, &rec, NULL) >= 0)
                        consistent++;
        }
        live_set_free(model);
        cr_assert_eq(n, consistent, "%zu records replayed, %zu expected", n, consistent);
        cr_assert_eq(rep.n_inconsistent, 19 - consistent);

        free(img);
        free(full);
        written_clear(&w);
        record_gen_done(&g);
}

/* Acceptance 5: records of another journal (another salt) after the tail are never accepted. */
Test(journal, stale_records_other_salt) {
        Written w = {}, w2 = {};
        void *a, *b;
        size_t a_size, b_size;
        RecordGen g;

        /* The "older" journal: 40 records, same agent, its own salt. */
        build_journal(40, 21, &w2, &b, &b_size);
        test_rm_rf(dir);
        cr_assert_eq(mkdir(dir, 0700), 0);

        record_gen_init(&g, 21); /* same generator: identical record contents and LSNs */
        Journal *j = open_ok(NULL, NULL, NULL);
        append_n(j, &g, 25, 1, &w);
        journal_close(j);
        record_gen_done(&g);
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &a, &a_size), 0);

        /* Append the old journal's records 26..40, which continue the LSNs exactly. */
        size_t from = w2.end[24], size = a_size + (b_size - from);
        uint8_t *img = malloc(size);
        memcpy(img, a, a_size);
        memcpy(img + a_size, (uint8_t *) b + from, b_size - from);
        JournalReport rep;
        size_t n = open_damaged(img, size, &w, &rep);
        cr_assert_eq(n, 25);
        cr_assert_eq(rep.state, JOURNAL_STATE_TORN_TAIL_REPAIRED, "%s", rep.message);
        cr_assert_eq(rep.torn_offset, a_size);

        /* Also a stale record that would continue a post-compaction journal: the compaction's new salt
         * makes the pre-compaction bytes worthless. */
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, a, a_size), 0);
        j = open_ok(NULL, NULL, NULL);
        cr_assert_eq(journal_compact(j, 0), 0);
        journal_close(j);
        void *c;
        size_t c_size;
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &c, &c_size), 0);
        cr_assert_eq(c_size, JOURNAL_HEADER_SIZE);
        size = c_size + (b_size - from);
        img = realloc(img, size);
        memcpy(img, c, c_size);
        memcpy(img + c_size, (uint8_t *) b + from, b_size - from);
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, img, size), 0);
        j = open_ok(NULL, NULL, &rep);
        cr_assert_eq(journal_last_lsn(j), 25);
        cr_assert_eq(rep.n_journal_records, 0);
        cr_assert_eq(rep.state, JOURNAL_STATE_TORN_TAIL_REPAIRED);
        journal_close(j);

        free(a);
        free(b);
        free(c);
        free(img);
        written_clear(&w);
        written_clear(&w2);
}

/* Acceptance 6: EIO from fdatasync is fatal and never retried; reopening shows only what was acknowledged.
 */
Test(journal, fdatasync_eio_is_fatal) {
        RecordGen g;
        TestFs fs;
        JournalReport rep;

        test_fs_init(&fs);
        record_gen_init(&g, 5);
        Journal *j = open_ok(&fs.ops, NULL, NULL);
        append_n(j, &g, 10, 1, NULL);
        uint64_t acked_size = journal_size(j);

        fs.fail_fdatasync_at = fs.fdatasync_calls + 1;
        JournalRecord r;
        record_gen_next(&g, &r);
        cr_assert_eq(journal_append(j, &r), 0);
        cr_assert_eq(journal_sync(j), -EIO);
        cr_assert_eq(journal_state(j), JOURNAL_STATE_FAILED);
        cr_assert(strstr(journal_error_message(j), "fdatasync") &&
                          strstr(journal_error_message(j), JOURNAL_FILE),
                  "%s", journal_error_message(j));

        /* Refuses everything after, without touching the file or retrying the sync. */
        unsigned pw = fs.pwrite_calls, fd = fs.fdatasync_calls;
        record_gen_next(&g, &r);
        cr_assert_eq(journal_append(j, &r), -EIO);
        cr_assert_eq(journal_sync(j), -EIO);
        cr_assert_eq(journal_compact(j, 0), -EIO);
        cr_assert_eq(fs.pwrite_calls, pw);
        cr_assert_eq(fs.fdatasync_calls, fd);
        journal_close(j);

        j = open_ok(NULL, NULL, &rep);
        cr_assert_eq(journal_last_lsn(j), 10, "the unacknowledged record came back");
        cr_assert_eq(journal_size(j), acked_size);
        journal_close(j);
        record_gen_done(&g);
}

/* When not even the rollback works, the unacknowledged record may come back, but never as acknowledged. */
Test(journal, fdatasync_eio_rollback_fails) {
        RecordGen g;
        TestFs fs;
        JournalReport rep;

        test_fs_init(&fs);
        record_gen_init(&g, 6);
        Journal *j = open_ok(&fs.ops, NULL, NULL);
        append_n(j, &g, 10, 1, NULL);
        fs.fail_fdatasync_at = fs.fdatasync_calls + 1;
        fs.fail_ftruncate = true;
        JournalRecord r;
        record_gen_next(&g, &r);
        cr_assert_eq(journal_append(j, &r), 0);
        cr_assert_eq(journal_sync(j), -EIO);
        journal_close(j);

        j = open_ok(NULL, NULL, &rep);
        cr_assert_eq(journal_last_lsn(j), 11);
        cr_assert_lt(rep.durable_lsn, 11, "record 11 reported as acknowledged");
        cr_assert_geq(rep.durable_lsn, 9);
        journal_close(j);
        record_gen_done(&g);
}

/* ENOSPC (also after a partial write) fails the append, leaves nothing behind, and the journal goes on. */
Test(journal, write_enospc_rolls_back) {
        RecordGen g;
        TestFs fs;

        test_fs_init(&fs);
        fs.fail_errno = ENOSPC;
        record_gen_init(&g, 8);
        Journal *j = open_ok(&fs.ops, NULL, NULL);
        append_n(j, &g, 5, 1, NULL);
        uint64_t size = journal_size(j);

        for (size_t partial = 0; partial <= 16; partial += 16) {
                JournalRecord r;
                record_gen_next(&g, &r);
                fs.fail_pwrite_at = fs.pwrite_calls + 1;
                fs.short_pwrite = partial;
                cr_assert_eq(journal_append(j, &r), -ENOSPC);
                cr_assert(strstr(journal_error_message(j), "No space"), "%s", journal_error_message(j));
                cr_assert_eq(journal_size(j), size);
                struct stat st;
                char path[4096];
                snprintf(path, sizeof(path), "%s/%s", dir, JOURNAL_FILE);
                cr_assert_eq(stat(path, &st), 0);
                cr_assert_eq((uint64_t) st.st_size, size, "partial record left in the file");
                cr_assert_eq(journal_state(j), JOURNAL_STATE_OK);
        }

        fs.fail_pwrite_at = 0;
        JournalRecord r;
        record_gen_next(&g, &r);
        cr_assert_eq(journal_append_sync(j, &r), 0);
        cr_assert_eq(r.lsn, 6);
        journal_close(j);

        JournalReport rep;
        j = open_ok(NULL, NULL, &rep);
        cr_assert_eq(rep.state, JOURNAL_STATE_OK, "%s", rep.message);
        cr_assert_eq(journal_last_lsn(j), 6);
        journal_close(j);
        record_gen_done(&g);
}

Test(journal, append_refuses_inconsistent_record) {
        Journal *j = open_ok(NULL, NULL, NULL);
        JournalRecord r = {
                .type = JOURNAL_CREATED,
                .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_OID),
                .oid = 12345,
        };
        cr_assert_eq(journal_append(j, &r), -ENOENT);
        cr_assert(strstr(journal_error_message(j), "CREATED"), "%s", journal_error_message(j));
        r = (JournalRecord){ .type = JOURNAL_INTENT };
        cr_assert_eq(journal_append(j, &r), -EINVAL);
        cr_assert_eq(journal_size(j), JOURNAL_HEADER_SIZE);
        cr_assert_eq(journal_last_lsn(j), 0);
        journal_close(j);
}

/* Acceptance 7a: compacting then replaying gives the same live set, and the journal goes on after it. */
Test(journal, compaction_same_live_set) {
        RecordGen g;
        JournalReport rep;

        record_gen_init(&g, 99);
        Journal *j = open_ok(NULL, NULL, NULL);
        append_n(j, &g, 2000, 16, NULL);
        cr_assert_eq(journal_sync(j), 0);
        uint64_t size_before = journal_size(j);
        cr_assert_eq(journal_compact(j, 0), 0, "%s", journal_error_message(j));
        cr_assert_eq(journal_size(j), JOURNAL_HEADER_SIZE);
        cr_assert_lt(JOURNAL_HEADER_SIZE, size_before);
        cr_assert(live_set_equal(journal_live_set(j), g.model));
        append_n(j, &g, 500, 1, NULL);
        cr_assert_eq(journal_last_lsn(j), 2500);
        journal_close(j);

        j = open_ok(NULL, NULL, &rep);
        cr_assert_eq(rep.state, JOURNAL_STATE_OK, "%s", rep.message);
        cr_assert_eq(rep.snapshot_through_lsn, 2000);
        cr_assert_eq(rep.n_journal_records, 500);
        cr_assert_eq(journal_last_lsn(j), 2500);
        cr_assert(live_set_equal(journal_live_set(j), g.model),
                  "live set differs after compaction + replay");

        /* A second compaction over the first. */
        cr_assert_eq(journal_compact(j, 0), 0);
        journal_close(j);
        j = open_ok(NULL, NULL, &rep);
        cr_assert_eq(rep.snapshot_through_lsn, 2500);
        cr_assert(live_set_equal(journal_live_set(j), g.model));

        /* Object ids handed out are never handed out again, even if never journaled, across compaction. */
        uint64_t oid = journal_new_oid(j);
        cr_assert_gt(oid, live_set_max_oid(g.model));
        cr_assert_eq(journal_compact(j, 0), 0);
        journal_close(j);
        j = open_ok(NULL, NULL, &rep);
        cr_assert_gt(journal_new_oid(j), oid);
        journal_close(j);
        record_gen_done(&g);
}

typedef struct CrashAt {
        const char *name; /* simulate a crash at the first hit of this point; NULL: record hits */
        char seen[32][64];
        size_t n_seen;
} CrashAt;

static int crash_hook(const char *name, void *userdata) {
        CrashAt *c = userdata;
        if (!c->name) {
                if (c->n_seen < ELEMENTSOF(c->seen))
                        snprintf(c->seen[c->n_seen++], sizeof(c->seen[0]), "%s", name);
                return 0;
        }
        return strcmp(name, c->name) == 0;
}

static bool compaction_point(const char *name) {
        return strncmp(name, "journal-snapshot-", 17) == 0 || strncmp(name, "journal-new-", 12) == 0 ||
               strncmp(name, "journal-compact-", 16) == 0;
}

/* Acceptance 7b: a crash at every step of compaction recovers to the same live set. The steps are the
 * crash points compaction passes, found by running it, and checked against every compaction point linked
 * into the program. */
Test(journal, compaction_crash_points) {
        CrashAt rec = {};
        RecordGen g;

        /* Which points does a compaction pass, in order? */
        record_gen_init(&g, 123);
        Journal *j = open_ok(NULL, NULL, NULL);
        append_n(j, &g, 300, 8, NULL);
        cr_assert_eq(journal_compact(j, 0), 0); /* a snapshot exists before the measured compaction */
        append_n(j, &g, 300, 8, NULL);
        crash_point_set_hook(crash_hook, &rec);
        cr_assert_eq(journal_compact(j, 0), 0);
        crash_point_set_hook(NULL, NULL);
        journal_close(j);
        record_gen_done(&g);

        size_t n_compaction_points = 0;
        for (size_t i = 0; i < rec.n_seen; i++)
                if (compaction_point(rec.seen[i]))
                        n_compaction_points++;
        cr_assert_geq(n_compaction_points, 9, "only %zu compaction crash points passed",
                      n_compaction_points);

        size_t n_all;
        const char *const *all = crash_point_list(&n_all);
        for (size_t i = 0; i < n_all; i++) {
                if (!compaction_point(all[i]))
                        continue;
                bool passed = false;
                for (size_t k = 0; k < rec.n_seen; k++)
                        passed = passed || strcmp(rec.seen[k], all[i]) == 0;
                cr_assert(passed, "compaction crash point %s is never passed by the test", all[i]);
        }

        for (size_t i = 0; i < rec.n_seen; i++) {
                if (!compaction_point(rec.seen[i]))
                        continue;
                test_rm_rf(dir);
                cr_assert_eq(mkdir(dir, 0700), 0);

                record_gen_init(&g, 123);
                j = open_ok(NULL, NULL, NULL);
                append_n(j, &g, 300, 8, NULL);
                cr_assert_eq(journal_compact(j, 0), 0);
                append_n(j, &g, 300, 8, NULL);

                CrashAt crash = { .name = rec.seen[i] };
                crash_point_set_hook(crash_hook, &crash);
                int r = journal_compact(j, 0);
                crash_point_set_hook(NULL, NULL);
                cr_assert_eq(r, -ECANCELED, "no crash simulated at %s", rec.seen[i]);
                journal_close(j); /* the "crashed" process's files stay as they are */

                JournalReport rep;
                j = open_ok(NULL, NULL, &rep);
                cr_assert_eq(rep.state, JOURNAL_STATE_OK, "crash at %s: %s", rec.seen[i], rep.message);
                cr_assert(live_set_equal(journal_live_set(j), g.model), "crash at %s: live set differs",
                          rec.seen[i]);
                cr_assert_eq(journal_last_lsn(j), 600, "crash at %s", rec.seen[i]);
                cr_assert_not(test_file_exists(dir, JOURNAL_SNAPSHOT_FILE ".tmp"));
                cr_assert_not(test_file_exists(dir, JOURNAL_FILE ".tmp"));

                /* And it goes on: more records, another compaction, reopen. */
                append_n(j, &g, 50, 1, NULL);
                cr_assert_eq(journal_compact(j, 0), 0);
                journal_close(j);
                j = open_ok(NULL, NULL, &rep);
                cr_assert(live_set_equal(journal_live_set(j), g.model), "crash at %s: differs later",
                          rec.seen[i]);
                cr_assert_eq(journal_last_lsn(j), 650);
                journal_close(j);
                record_gen_done(&g);
        }
}

/* The lock is the writer's, not its children's: a writer killed while a child it forked still holds
 * copies of its fds (a hypervisor between fork and exec) must not keep the next writer out. With flock()
 * this failed: the child's copy of the open file kept the lock (tests/test-chaos saw it, about one run in
 * ten). */
Test(journal, a_dead_writers_child_does_not_hold_the_lock) {
        int hold[2], told[2];
        cr_assert_eq(pipe(hold), 0);
        cr_assert_eq(pipe(told), 0);
        pid_t writer = fork();
        cr_assert_geq(writer, 0);
        if (writer == 0) {
                JournalOptions o = options(NULL, NULL);
                Journal *jw = NULL;
                if (journal_open(&o, &jw, NULL) < 0)
                        _exit(1);
                pid_t child = fork();
                if (child == 0) {
                        char c;
                        close(hold[1]);
                        (void) !read(hold[0], &c, 1); /* every fd of the writer's, until the test lets go */
                        _exit(0);
                }
                (void) !write(told[1], &child, sizeof(child));
                _exit(child > 0 ? 0 : 1); /* the journal is not closed: as if killed */
        }
        close(hold[0]);
        close(told[1]);
        int status;
        cr_assert_eq(waitpid(writer, &status, 0), writer);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        pid_t child = 0;
        cr_assert_eq(read(told[0], &child, sizeof(child)), (ssize_t) sizeof(child));
        cr_assert_eq(kill(child, 0), 0, "the writer's child should still run");

        Journal *j = open_ok(NULL, NULL, NULL);
        journal_close(j);
        close(hold[1]); /* the child ends */
        close(told[0]);
}

/* Acceptance 8: a second writer is refused with a clear error. */
Test(journal, two_writers) {
        Journal *j = open_ok(NULL, NULL, NULL);
        JournalOptions o = options(NULL, NULL);
        JournalReport rep;
        Journal *j2 = NULL;

        cr_assert_eq(journal_open(&o, &j2, &rep), -EBUSY);
        cr_assert_null(j2);
        char pid[32];
        snprintf(pid, sizeof(pid), "pid %d", (int) getpid());
        cr_assert(strstr(rep.message, "already open for writing") && strstr(rep.message, pid) &&
                          strstr(rep.message, dir),
                  "%s", rep.message);
        /* the same cause as an Error, for the caller to pass up */
        cr_assert_eq(rep.error.code, -EBUSY);
        cr_assert_eq(rep.error.kind, ERROR_BUSY);
        cr_assert_str_eq(error_message(&rep.error), rep.message);

        /* From another process too. */
        pid_t child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
                Journal *jc = NULL;
                _exit(journal_open(&o, &jc, NULL) == -EBUSY ? 0 : 1);
        }
        int status;
        cr_assert_eq(waitpid(child, &status, 0), child);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a second process could open the journal");

        /* After a failed second open in this process the first one still holds the lock (a POSIX lock goes
         * when the process closes any fd of the file: the second open must not have opened it). */
        cr_assert_eq(journal_open(&o, &j2, &rep), -EBUSY);
        child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
                Journal *jc = NULL;
                _exit(journal_open(&o, &jc, NULL) == -EBUSY ? 0 : 1);
        }
        cr_assert_eq(waitpid(child, &status, 0), child);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the first writer lost its lock");

        /* A read-only look is allowed while the writer runs. */
        o.read_only = true;
        cr_assert_eq(journal_open(&o, &j2, &rep), 0, "%s", rep.message);
        JournalRecord r = { .type = JOURNAL_IP_FREE };
        cr_assert_eq(journal_append(j2, &r), -EROFS);
        journal_close(j2);

        journal_close(j);
        o.read_only = false;
        cr_assert_eq(journal_open(&o, &j2, &rep), 0, "%s", rep.message);
        journal_close(j2);
}

Test(journal, other_agent_refused) {
        Journal *j = open_ok(NULL, NULL, NULL);
        journal_close(j);

        JournalOptions o = options(NULL, NULL);
        o.agent_id[0] ^= 1;
        JournalReport rep;
        cr_assert_eq(journal_open(&o, &j, &rep), -EXDEV);
        cr_assert(strstr(rep.message, "belongs to agent"), "%s", rep.message);
}

Test(journal, header_damage_refused) {
        Journal *j = open_ok(NULL, NULL, NULL);
        RecordGen g;
        record_gen_init(&g, 1);
        append_n(j, &g, 3, 1, NULL);
        journal_close(j);
        record_gen_done(&g);

        void *buf;
        size_t size;
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &buf, &size), 0);
        uint8_t *b = buf;

        JournalOptions o = options(NULL, NULL);
        JournalReport rep;
        b[40] ^= 4; /* in the salt: header checksum mismatch */
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, b, size), 0);
        cr_assert_eq(journal_open(&o, &j, &rep), -EBADMSG);
        cr_assert(strstr(rep.message, "checksum"), "%s", rep.message);
        b[40] ^= 4;

        /* An unknown incompatible feature bit, with a valid header checksum. */
        JournalHeader h;
        cr_assert_eq(journal_header_decode(b, size, JOURNAL_MAGIC, &h, NULL), 0);
        h.incompat |= 1u << 7;
        journal_header_encode(&h, b);
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, b, size), 0);
        cr_assert_eq(journal_open(&o, &j, &rep), -EPROTONOSUPPORT);
        cr_assert(strstr(rep.message, "incompatible"), "%s", rep.message);
        free(buf);
}

Test(journal, read_only_does_not_repair) {
        Written w = {};
        void *full;
        size_t full_size;

        build_journal(10, 4, &w, &full, &full_size);
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, full, full_size - 3), 0);
        JournalOptions o = options(NULL, NULL);
        o.read_only = true;
        JournalReport rep;
        Journal *j;
        cr_assert_eq(journal_open(&o, &j, &rep), 0, "%s", rep.message);
        cr_assert_eq(journal_last_lsn(j), 9);
        cr_assert(strstr(rep.message, "not repaired"), "%s", rep.message);
        journal_close(j);
        void *now;
        size_t now_size;
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &now, &now_size), 0);
        cr_assert_eq(now_size, full_size - 3);
        free(now);
        free(full);
        written_clear(&w);
}

/* --- power loss ----------------------------------------------------------------------------------- */

/* A file system that loses power: what an fdatasync returned for is durable; of everything written since,
 * each 512-byte sector independently did or did not reach the disk (the page cache writes back in any
 * order), and the file's size is either the durable one or the new one. */
typedef struct PowerFs {
        FsOps ops;
        uint8_t *durable;
        size_t durable_size;
} PowerFs;

static ssize_t pfs_pwrite(void *u, int fd, const void *buf, size_t size, off_t offset) {
        (void) u;
        return fs_ops_default.pwrite(NULL, fd, buf, size, offset);
}

/* The data of fd as it is now becomes the durable image (no real sync: the crash is simulated). */
static int pfs_fdatasync(void *u, int fd) {
        PowerFs *p = u;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        free(p->durable);
        p->durable_size = (size_t) st.st_size;
        p->durable = malloc(p->durable_size + 1);
        cr_assert(p->durable);
        cr_assert_eq(pread(fd, p->durable, p->durable_size, 0), (ssize_t) p->durable_size);
        return 0;
}

static int pfs_fsync(void *u, int fd) {
        (void) u;
        (void) fd;
        return 0;
}

/* Rewrites the journal file as the power loss leaves it. */
static void power_loss(PowerFs *p, uint64_t *rng) {
        void *now;
        size_t now_size;
        cr_assert_eq(test_read_file(dir, JOURNAL_FILE, &now, &now_size), 0);
        size_t size = test_rand(rng) % 2 ? now_size : p->durable_size;
        uint8_t *img = calloc(1, size + 1);
        cr_assert(img);
        for (size_t s = 0; s < size; s += 512) {
                size_t n = size - s < 512 ? size - s : 512;
                bool dirty = s + n > p->durable_size || memcmp((uint8_t *) now + s, p->durable + s, n) != 0;
                if (dirty && test_rand(rng) % 2 == 0) {
                        /* this sector never reached the disk: the old data, or zeros past the old end */
                        size_t old = s < p->durable_size ? p->durable_size - s : 0;
                        if (old > n)
                                old = n;
                        memcpy(img + s, p->durable + s, old);
                } else
                        memcpy(img + s, (uint8_t *) now + s, n);
        }
        cr_assert_eq(test_write_file(dir, JOURNAL_FILE, img, size), 0);
        free(img);
        free(now);
}

static int power_check_prefix(const Replay *rp, const Written *w, LiveSet *model) {
        static const uint8_t salt[JOURNAL_SALT_SIZE] = { 1, 2, 3 };
        for (size_t i = 0; i < rp->n; i++) {
                cr_assert_eq(rp->lsns[i], i + 1);
                cr_assert(encoded_equal(rp->recs[i], w->recs[i]),
                          "replayed record %zu is not the one written", i);
                JournalRecord r;
                const char *why;
                cr_assert_gt(journal_record_decode(w->recs[i].buf, w->recs[i].size, salt, &r, &why), 0, "%s",
                             why);
                cr_assert_eq(live_set_apply(model, &r, &why), 0, "%s", why);
        }
        return 0;
}

/* Issue 7, item 5: 1,000 random runs of appends and group commits cut by a power loss: every acknowledged
 * record (its sync returned) is still there, what is replayed is exactly a prefix of what was written, the
 * damage is a torn tail (never quarantine: it is all unsynced), and the live set is that prefix's. */
Test(journal, power_loss_1000_runs, .timeout = 600) {
        uint64_t rng = 20261201;
        size_t runs = long_tests() ? 10000 : 1000, torn = 0, lost_unacked = 0, replayed_total = 0;

        for (size_t run = 0; run < runs; run++) {
                PowerFs p = { .ops = { .pwrite = pfs_pwrite,
                                       .fdatasync = pfs_fdatasync,
                                       .fsync = pfs_fsync,
                                       .ftruncate = fs_ops_default.ftruncate,
                                       .renameat = fs_ops_default.renameat } };
                p.ops.userdata = &p;
                RecordGen g;
                Written w = {};
                size_t acked = 0;

                record_gen_init(&g, run + 1);
                if (run % 4 == 0)
                        g.big_keys = 700; /* records that straddle sectors */
                Journal *j = open_ok(&p.ops, NULL, NULL);
                size_t n = 1 + test_rand(&rng) % 60;
                while (w.n < n) {
                        size_t batch = 1 + test_rand(&rng) % 8;
                        if (batch > n - w.n)
                                batch = n - w.n;
                        append_n(j, &g, batch, 0, &w);
                        /* the last group is sometimes never synced: cut before its commit */
                        if (w.n < n || test_rand(&rng) % 2) {
                                cr_assert_eq(journal_sync(j), 0);
                                acked = w.n;
                        }
                }
                journal_close(j);
                power_loss(&p, &rng);

                Replay rp = {};
                JournalReport rep;
                j = open_ok(NULL, &rp, &rep);
                cr_assert(rep.state == JOURNAL_STATE_OK || rep.state == JOURNAL_STATE_TORN_TAIL_REPAIRED,
                          "run %zu: %s: %s", run, journal_state_to_string(rep.state), rep.message);
                cr_assert_geq(rp.n, acked, "run %zu: %zu acknowledged records, %zu survived", run, acked,
                              rp.n);
                cr_assert_leq(rp.n, w.n);
                LiveSet *model = live_set_new();
                cr_assert(model);
                power_check_prefix(&rp, &w, model);
                cr_assert(live_set_equal(journal_live_set(j), model),
                          "run %zu: live set is not the prefix's", run);
                live_set_free(model);
                torn += rep.state == JOURNAL_STATE_TORN_TAIL_REPAIRED;
                lost_unacked += w.n - rp.n;
                replayed_total += rp.n;

                /* usable again: an append and a reopen */
                JournalRecord r;
                record_gen_done(&g);
                record_gen_init(&g, run + 1);
                if (run % 4 == 0)
                        g.big_keys = 700;
                for (size_t i = 0; i < rp.n; i++) {
                        record_gen_next(&g, &r);
                        record_gen_commit(&g, &r);
                }
                record_gen_next(&g, &r);
                cr_assert_eq(journal_append_sync(j, &r), 0, "run %zu: %s", run, journal_error_message(j));
                journal_close(j);
                j = open_ok(NULL, NULL, &rep);
                cr_assert_eq(rep.state, JOURNAL_STATE_OK, "run %zu: %s", run, rep.message);
                cr_assert_eq(journal_last_lsn(j), rp.n + 1);
                journal_close(j);

                replay_clear(&rp);
                written_clear(&w);
                record_gen_done(&g);
                free(p.durable);
                test_rm_rf(dir);
                free(dir);
                dir = test_mkdtemp();
        }
        cr_log_info(
                "power loss: %zu runs, %zu with a torn tail, %zu unacknowledged records lost, %zu replayed",
                runs, torn, lost_unacked, replayed_total);
        cr_assert_gt(torn, runs / 10, "the runs should cut into unsynced data often");
}
