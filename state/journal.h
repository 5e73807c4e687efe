/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The ownership journal: an append-only log of every kernel object the agent means to create, has
 * created, and has released, plus VM states and IP allocations. One writer at a time (a POSIX
 * fcntl lock on ownership.lock, not inherited by forked children); records are appended with one pwrite each
 * and made durable with journal_sync() (fdatasync), which must return before the kernel change a record
 * announces is made. A failed write that could be rolled back is returned and the journal stays usable; a
 * failed sync is fatal and never retried: the journal refuses every later write.
 *
 * Files in the journal's directory:
 *     ownership.journal           the log (header + records)
 *     ownership.snapshot          the live set as of some LSN, written by compaction
 *     ownership.lock              fcntl(F_SETLK)-locked by the writer; holds its PID
 *     ownership.journal.N.broken  a copy of a journal whose torn tail was cut off at open
 *
 * Opening replays snapshot + journal into the live set (state/liveset.h). A torn tail (damage with no
 * durable record after it) is copied aside and truncated. Mid-log corruption (a damaged record that a
 * later valid record proves had been synced) puts the journal in quarantine: it stays usable, and says so,
 * so that the agent deletes nothing it cannot prove from kernel tags. */

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "state/journal-format.h"
#include "state/liveset.h"
#include "util/error.h"
#include "util/fsops.h"
#include "util/macro.h"

#define JOURNAL_FILE "ownership.journal"
#define JOURNAL_SNAPSHOT_FILE "ownership.snapshot"
#define JOURNAL_LOCK_FILE "ownership.lock"

typedef struct Journal Journal;

typedef enum JournalState {
        JOURNAL_STATE_OK,
        JOURNAL_STATE_TORN_TAIL_REPAIRED, /* opened fine after cutting off a torn tail */
        JOURNAL_STATE_QUARANTINE, /* mid-log corruption: the live set may be incomplete */
        JOURNAL_STATE_FAILED, /* a sync (or an unrecoverable write) failed: no more writes */
        _JOURNAL_STATE_MAX,
        _JOURNAL_STATE_INVALID = -EINVAL,
} JournalState;

const char *journal_state_to_string(JournalState s);
JournalState journal_state_from_string(const char *s);

typedef struct JournalOptions {
        const char *directory;
        uint8_t agent_id[JOURNAL_ID_SIZE];
        const FsOps *fs_ops; /* NULL: fs_ops_default */
        JournalRecordCallback on_record; /* called for each replayed record that enters the live set */
        void *userdata;
        bool read_only; /* no lock, no repair, no creation; appends fail with -EROFS */
} JournalOptions;

typedef struct JournalReport {
        JournalState state;
        bool created; /* no journal or snapshot existed: a new one was made */
        uint64_t snapshot_through_lsn; /* 0 without snapshot */
        size_t n_snapshot_records;
        size_t n_journal_records; /* replayed from the journal file (incl. after damage) */
        uint64_t last_lsn; /* last LSN in the live set */
        uint64_t durable_lsn; /* records up to here are proven to have been synced */
        /* torn tail */
        uint64_t torn_offset;
        uint64_t torn_bytes;
        char broken_copy[PATH_MAX]; /* file name (in the directory) of the saved copy, "" if none */
        /* quarantine */
        uint64_t damage_offset;
        uint64_t damage_lsn; /* LSN the damaged record should have had */
        size_t n_after_damage; /* valid records found after it */
        size_t n_inconsistent; /* CRC-valid records that contradicted the live set (skipped) */
        /* A sentence for the admin about anything that was not simply OK (and, when journal_open fails, why
         * it failed), naming the file and the cause. Empty when there is nothing to say. */
        char message[1024];
        /* When journal_open() fails: why, as an Error to pass up (its message is the sentence above). */
        Error error;
} JournalReport;

/* Opens (or creates) the journal in opts->directory and replays it. On failure returns -errno and, if
 * ret_report is non-NULL, explains in ret_report->message. -EBUSY: another writer holds the lock;
 * -EBADMSG: the journal header is damaged; -EPROTONOSUPPORT: written by a newer version; -EXDEV: it
 * belongs to another agent id. */
int journal_open(const JournalOptions *opts, Journal **ret, JournalReport *ret_report);

/* Closes the file descriptors and releases the lock. Writes nothing: what was appended but not synced is
 * exactly as durable as it was. */
Journal *journal_close(Journal *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(Journal *, journal_close);

/* Appends one record (one pwrite). Sets r->lsn and r->synced_lsn. The record is checked against the
 * live set first (-EEXIST, -ENOENT, -EBUSY, -EINVAL: nothing written). Not durable until journal_sync()
 * returns. */
int journal_append(Journal *j, JournalRecord *r);
/* Makes every appended record durable (one fdatasync; nothing to do if nothing is pending). A failure is
 * fatal for this Journal: it is never retried, records written since the last good sync are cut off again
 * (best effort), and every later append, sync or compaction returns the same error. */
int journal_sync(Journal *j);
/* journal_append() + journal_sync(). */
int journal_append_sync(Journal *j, JournalRecord *r);

/* Hands out a fresh object id for an INTENT (never reused, also across restarts). */
uint64_t journal_new_oid(Journal *j);

typedef enum JournalCompactFlags {
        /* Compact even in quarantine: the current (possibly incomplete) live set becomes the truth and the
         * quarantine is lifted. An admin's decision, never automatic. */
        JOURNAL_COMPACT_ACCEPT_DAMAGE = 1 << 0,
} JournalCompactFlags;

/* Writes the live set to ownership.snapshot (tmp + fdatasync + rename + directory fsync) and starts a
 * fresh journal the same way; the old journal is dropped by the final rename. -EUCLEAN in quarantine
 * without JOURNAL_COMPACT_ACCEPT_DAMAGE. */
int journal_compact(Journal *j, JournalCompactFlags flags);

const LiveSet *journal_live_set(const Journal *j);
JournalState journal_state(const Journal *j);
const JournalReport *journal_report(const Journal *j);
/* Describes the last failure of an append/sync/compaction, naming the file and the cause. */
const char *journal_error_message(const Journal *j);
uint64_t journal_last_lsn(const Journal *j);
uint64_t journal_synced_lsn(const Journal *j);
/* Bytes of the journal file (header included). */
uint64_t journal_size(const Journal *j);
