/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Journal benchmark (not a test): appends per second with an fdatasync per append and with group commit
 * of 64, and the time to replay 100,000 records. Runs in a scratch directory under $CHVM_BENCH_DIR (default:
 * the current directory, so it measures the disk the build lives on, not a tmpfs).
 *
 *     bench/journal [--quick]
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "state/journal.h"
#include "tests/journal-test-util.h"

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static Journal *open_journal(const char *dir, JournalReport *rep) {
        JournalOptions o = { .directory = dir };
        Journal *j = NULL;
        memcpy(o.agent_id, test_agent_id, JOURNAL_ID_SIZE);
        int r = journal_open(&o, &j, rep);
        if (r < 0) {
                fprintf(stderr, "journal_open(%s): %s: %s\n", dir, strerror(-r), rep->message);
                exit(1);
        }
        return j;
}

static char *scratch(void) {
        const char *base = getenv("CHVM_BENCH_DIR") ?: ".";
        char *p;
        if (asprintf(&p, "%s/bench-journal-XXXXXX", base) < 0 || !mkdtemp(p)) {
                fprintf(stderr, "cannot make a scratch directory under %s\n", base);
                exit(1);
        }
        return p;
}

/* Appends n records, syncing every `group` records; returns records per second. */
static double append_rate(size_t n, size_t group) {
        char *dir = scratch();
        JournalReport rep;
        Journal *j = open_journal(dir, &rep);
        RecordGen g;

        record_gen_init(&g, 1);
        double t0 = now();
        for (size_t i = 0; i < n; i++) {
                JournalRecord r;
                record_gen_next(&g, &r);
                if (journal_append(j, &r) < 0) {
                        fprintf(stderr, "append: %s\n", journal_error_message(j));
                        exit(1);
                }
                record_gen_commit(&g, &r);
                if ((i + 1) % group == 0 && journal_sync(j) < 0) {
                        fprintf(stderr, "sync: %s\n", journal_error_message(j));
                        exit(1);
                }
        }
        if (journal_sync(j) < 0)
                exit(1);
        double dt = now() - t0;
        journal_close(j);
        record_gen_done(&g);
        test_rm_rf(dir);
        free(dir);
        return (double) n / dt;
}

int main(int argc, char **argv) {
        bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
        size_t n_sync = quick ? 200 : 2000, n_group = quick ? 64 * 50 : 64 * 500,
               n_replay = quick ? 10000 : 100000;

        printf("chvm journal benchmark (records of mixed types, ~60-110 bytes each)\n");

        double each = append_rate(n_sync, 1);
        printf("%-44s %10.0f records/s  (%zu records)\n", "append + fdatasync per record", each, n_sync);
        double grouped = append_rate(n_group, 64);
        printf("%-44s %10.0f records/s  (%zu records)\n", "append, group commit of 64", grouped, n_group);
        printf("%-44s %10.1fx\n", "group commit speed-up", grouped / each);

        /* Replay: build once, open (= read + verify + rebuild the live set) several times. */
        char *dir = scratch();
        JournalReport rep;
        Journal *j = open_journal(dir, &rep);
        RecordGen g;
        record_gen_init(&g, 2);
        for (size_t i = 0; i < n_replay; i++) {
                JournalRecord r;
                record_gen_next(&g, &r);
                if (journal_append(j, &r) < 0)
                        exit(1);
                record_gen_commit(&g, &r);
        }
        if (journal_sync(j) < 0)
                exit(1);
        uint64_t bytes = journal_size(j);
        journal_close(j);

        double best = 1e9;
        for (int i = 0; i < 5; i++) {
                double t0 = now();
                j = open_journal(dir, &rep);
                double dt = now() - t0;
                if (journal_last_lsn(j) != n_replay || rep.state != JOURNAL_STATE_OK) {
                        fprintf(stderr, "replay found %" PRIu64 " records, state %s\n", journal_last_lsn(j),
                                journal_state_to_string(rep.state));
                        exit(1);
                }
                if (dt < best)
                        best = dt;
                if (i < 4)
                        journal_close(j);
        }
        printf("%-44s %10.1f ms     (%zu records, %.1f MiB; best of 5)\n", "replay (open)", best * 1e3,
               n_replay, (double) bytes / (1 << 20));
        printf("%-44s %10zu objects, %zu VMs, %zu IPs\n", "live set after replay",
               live_set_n_objects(journal_live_set(j)), live_set_n_vms(journal_live_set(j)),
               live_set_n_ips(journal_live_set(j)));

        double t0 = now();
        if (journal_compact(j, 0) < 0) {
                fprintf(stderr, "compact: %s\n", journal_error_message(j));
                exit(1);
        }
        printf("%-44s %10.1f ms\n", "compaction of that live set", (now() - t0) * 1e3);
        journal_close(j);
        record_gen_done(&g);
        test_rm_rf(dir);
        free(dir);
        return 0;
}
