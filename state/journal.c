/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/journal.h"
#include "util/crashpoint.h"
#include "util/error.h"
#include "util/string-table.h"

#define SNAPSHOT_TMP_FILE JOURNAL_SNAPSHOT_FILE ".tmp"
#define JOURNAL_TMP_FILE JOURNAL_FILE ".tmp"
/* Journals and snapshots larger than this are refused rather than read into memory. */
#define JOURNAL_MAX_FILE_SIZE ((size_t) 1 << 31)

struct Journal {
        char *directory;
        int dir_fd;
        int lock_fd;
        dev_t lock_dev; /* the lock file, for writers_held() */
        ino_t lock_ino;
        pid_t lock_pid; /* who took the lock: a forked child's copy of this Journal holds nothing */
        Journal *next_writer;
        int fd;
        const FsOps *ops;
        bool read_only;
        uint8_t agent_id[JOURNAL_ID_SIZE];

        JournalHeader header; /* of the current journal file: its salt seeds every record CRC */
        uint64_t end; /* where the next record goes */
        uint64_t synced_end; /* end as of the last successful sync */
        uint64_t next_lsn;
        uint64_t synced_lsn;
        uint64_t next_oid;

        LiveSet *live;
        JournalState state;
        int failure; /* < 0 once a sync failed: returned by everything after */
        JournalReport report;
        Error error;
};

static const char *const journal_state_table[_JOURNAL_STATE_MAX] = {
        [JOURNAL_STATE_OK] = "ok",
        [JOURNAL_STATE_TORN_TAIL_REPAIRED] = "torn-tail-repaired",
        [JOURNAL_STATE_QUARANTINE] = "quarantine",
        [JOURNAL_STATE_FAILED] = "failed",
};

DEFINE_STRING_TABLE(journal_state, JournalState, journal_state_table, _JOURNAL_STATE_MAX)

/* Adds a sentence to a message buffer, separated from what is there by "; ". */
_printf_(3, 4) static void message_add(char *buf, size_t size, const char *fmt, ...) {
        size_t len = strnlen(buf, size);
        va_list ap;

        if (len > 0 && len + 2 < size) {
                memcpy(buf + len, "; ", 3);
                len += 2;
        }
        if (len + 1 >= size)
                return;
        va_start(ap, fmt);
        (void) vsnprintf(buf + len, size - len, fmt, ap);
        va_end(ap);
}

/* The failure r of what fmt says: "<what>: <strerror>", the whole of both (util/error.h). */
_printf_(3, 4) static int journal_fail(Journal *j, int r, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        r = error_setv(&j->error, r, error_kind_from_errno(r), fmt, ap);
        va_end(ap);
        return error_append(&j->error, ": %s", strerror(-r));
}

/* A sync failed: from now on this Journal only returns that error. */
static int journal_fatal(Journal *j, int r, const char *what) {
        j->failure = r;
        j->state = JOURNAL_STATE_FAILED;
        j->report.state = JOURNAL_STATE_FAILED;
        message_add(j->report.message, sizeof(j->report.message),
                    "%s of %s/%s failed (%s): the journal accepts no more writes", what, j->directory,
                    JOURNAL_FILE, strerror(-r));
        return journal_fail(j, r, "%s of %s/%s failed, the journal accepts no more writes", what,
                            j->directory, JOURNAL_FILE);
}

static int random_bytes(void *p, size_t n) {
        uint8_t *b = p;

        while (n > 0) {
                ssize_t k = getrandom(b, n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                b += k;
                n -= (size_t) k;
        }
        return 0;
}

static int open_file_at(int dir_fd, const char *name, int flags, int *ret_fd) {
        int fd = openat(dir_fd, name, flags | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return negative_errno();
        *ret_fd = fd;
        return 0;
}

/* The writers this process has open. A POSIX record lock is the process's, not an open file's: a
 * second open in the same process would be granted it, and closing that second fd would drop the first
 * writer's lock. So the process checks its own writers before it opens the lock file. */
static Journal *writers;

static Journal *writer_holding(dev_t dev, ino_t ino) {
        for (Journal *w = writers; w; w = w->next_writer)
                if (w->lock_pid == getpid() && w->lock_dev == dev && w->lock_ino == ino)
                        return w;
        return NULL;
}

static void writer_forget(Journal *j) {
        for (Journal **w = &writers; *w; w = &(*w)->next_writer)
                if (*w == j) {
                        *w = j->next_writer;
                        return;
                }
}

static int lock_busy(Journal *j, JournalReport *rep, pid_t holder, bool ourselves) {
        char by[64] = "another process";
        if (ourselves)
                snprintf(by, sizeof(by), "this process (pid %d)", (int) holder);
        else if (holder > 0)
                snprintf(by, sizeof(by), "another process (pid %d)", (int) holder);
        message_add(
                rep->message, sizeof(rep->message),
                "journal %s/%s is already open for writing by %s (lock %s held); only one writer is allowed",
                j->directory, JOURNAL_FILE, by, JOURNAL_LOCK_FILE);
        return -EBUSY;
}

/* One writer: a POSIX write lock on ownership.lock (fcntl F_SETLK). Unlike flock() or an OFD lock it is
 * not shared with forked children — a hypervisor child that has not yet closed the agent's fds when the
 * agent is killed does not keep the next agent out. The file holds the writer's PID for people; the lock
 * itself names its holder (F_GETLK). */
static int take_lock(Journal *j, JournalReport *rep) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        char pidbuf[32];
        int r;

        if (fstatat(j->dir_fd, JOURNAL_LOCK_FILE, &st, AT_SYMLINK_NOFOLLOW) >= 0 &&
            writer_holding(st.st_dev, st.st_ino))
                return lock_busy(j, rep, getpid(), true);

        r = open_file_at(j->dir_fd, JOURNAL_LOCK_FILE, O_RDWR | O_CREAT, &fd);
        if (r < 0) {
                message_add(rep->message, sizeof(rep->message), "cannot open lock file %s/%s: %s",
                            j->directory, JOURNAL_LOCK_FILE, strerror(-r));
                return r;
        }
        struct flock lk = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (fcntl(fd, F_SETLK, &lk) < 0) {
                r = negative_errno();
                if (r == -EAGAIN || r == -EACCES) {
                        struct flock who = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
                        pid_t holder =
                                fcntl(fd, F_GETLK, &who) >= 0 && who.l_type != F_UNLCK ? who.l_pid : 0;
                        return lock_busy(j, rep, holder, false);
                }
                message_add(rep->message, sizeof(rep->message), "cannot lock %s/%s: %s", j->directory,
                            JOURNAL_LOCK_FILE, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                message_add(rep->message, sizeof(rep->message), "cannot stat %s/%s: %s", j->directory,
                            JOURNAL_LOCK_FILE, strerror(-r));
                return r;
        }

        /* Who holds it, for people reading the file. Best effort: the lock is what matters. */
        int n = snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int) getpid());
        if (ftruncate(fd, 0) >= 0)
                (void) !pwrite(fd, pidbuf, (size_t) n, 0);
        j->lock_fd = TAKE_FD(fd);
        j->lock_dev = st.st_dev;
        j->lock_ino = st.st_ino;
        j->lock_pid = getpid();
        j->next_writer = writers;
        writers = j;
        return 0;
}

static int fsync_dir(Journal *j) {
        return j->ops->fsync(j->ops->userdata, j->dir_fd);
}

/* Creates `name` with a header and the given body via `tmp_name`: write, fdatasync, rename, fsync the
 * directory. Returns an O_RDWR fd of the new file. Crash points are named after `what`. */
static int write_new_file_steps(Journal *j, int fd, const char *tmp_name, const char *name,
                                const JournalHeader *h, const void *body, size_t body_size) {
        uint8_t hdr[JOURNAL_HEADER_SIZE];
        bool snapshot = memcmp(h->magic, SNAPSHOT_MAGIC, 8) == 0;
        int r;

        journal_header_encode(h, hdr);
        r = fs_pwrite_full(j->ops, fd, hdr, sizeof(hdr), 0);
        if (r >= 0 && body_size > 0)
                r = fs_pwrite_full(j->ops, fd, body, body_size, JOURNAL_HEADER_SIZE);
        if (r < 0)
                return journal_fail(j, r, "cannot write %s/%s", j->directory, tmp_name);

        r = snapshot ? CRASH_POINT("journal-snapshot-written") : CRASH_POINT("journal-new-written");
        if (r < 0)
                return r;

        r = j->ops->fdatasync(j->ops->userdata, fd);
        if (r < 0)
                return journal_fatal(
                        j, r, snapshot ? "fdatasync of the new snapshot" : "fdatasync of a new journal");

        r = snapshot ? CRASH_POINT("journal-snapshot-synced") : CRASH_POINT("journal-new-synced");
        if (r < 0)
                return r;

        r = j->ops->renameat(j->ops->userdata, j->dir_fd, tmp_name, j->dir_fd, name);
        if (r < 0)
                return journal_fail(j, r, "cannot rename %s/%s to %s", j->directory, tmp_name, name);

        r = snapshot ? CRASH_POINT("journal-snapshot-renamed") : CRASH_POINT("journal-new-renamed");
        if (r < 0)
                return r;

        r = fsync_dir(j);
        if (r < 0)
                return journal_fatal(j, r, "fsync of the state directory");

        return snapshot ? CRASH_POINT("journal-snapshot-dir-synced") : CRASH_POINT("journal-new-dir-synced");
}

/* Creates `name` with a header and the given body via `tmp_name`: write, fdatasync, rename, fsync the
 * directory. Returns an O_RDWR fd of the new file. On failure the temporary file is removed, unless a
 * crash was simulated (then everything stays as a crash would leave it). */
static int write_new_file(Journal *j, const char *tmp_name, const char *name, const JournalHeader *h,
                          const void *body, size_t body_size, int *ret_fd) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        (void) unlinkat(j->dir_fd, tmp_name, 0);
        r = open_file_at(j->dir_fd, tmp_name, O_RDWR | O_CREAT | O_EXCL, &fd);
        if (r < 0)
                return journal_fail(j, r, "cannot create %s/%s", j->directory, tmp_name);

        r = write_new_file_steps(j, fd, tmp_name, name, h, body, body_size);
        if (r < 0) {
                if (r != -ECANCELED)
                        (void) unlinkat(j->dir_fd, tmp_name, 0);
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

static int make_header(Journal *j, const char *magic, uint64_t first_lsn, JournalHeader *ret) {
        JournalHeader h = {
                .version = JOURNAL_VERSION,
                .header_size = JOURNAL_HEADER_SIZE,
                .first_lsn = first_lsn,
        };
        int r;

        memcpy(h.magic, magic, 8);
        memcpy(h.agent_id, j->agent_id, JOURNAL_ID_SIZE);
        r = random_bytes(h.salt, sizeof(h.salt));
        if (r < 0)
                return journal_fail(j, r, "cannot get random bytes for the journal salt");
        *ret = h;
        return 0;
}

/* Starts an empty journal file whose first record will be first_lsn, replacing any old one. */
static int start_new_journal(Journal *j, uint64_t first_lsn) {
        JournalHeader h;
        int fd, r;

        r = make_header(j, JOURNAL_MAGIC, first_lsn, &h);
        if (r < 0)
                return r;
        r = write_new_file(j, JOURNAL_TMP_FILE, JOURNAL_FILE, &h, NULL, 0, &fd);
        if (r < 0)
                return r;

        safe_close(j->fd);
        j->fd = fd;
        j->header = h;
        j->end = j->synced_end = JOURNAL_HEADER_SIZE;
        j->next_lsn = first_lsn;
        return 0;
}

static void format_id(const uint8_t id[JOURNAL_ID_SIZE], char out[33]) {
        for (size_t i = 0; i < JOURNAL_ID_SIZE; i++)
                snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static int check_agent_id(Journal *j, const JournalHeader *h, const char *file, JournalReport *rep) {
        char theirs[33], ours[33];

        if (memcmp(h->agent_id, j->agent_id, JOURNAL_ID_SIZE) == 0)
                return 0;
        format_id(h->agent_id, theirs);
        format_id(j->agent_id, ours);
        message_add(rep->message, sizeof(rep->message),
                    "%s/%s belongs to agent %s, not to this agent (%s); refusing to use another agent's "
                    "ownership records",
                    j->directory, file, theirs, ours);
        return -EXDEV;
}

typedef struct ReplayContext {
        Journal *j;
        JournalReport *rep;
        uint64_t skip_through; /* records at or below this LSN are already in the snapshot */
        size_t n;
        uint64_t last_lsn;
        JournalRecordType last_type;
        uint64_t last_through;
        const JournalOptions *opts;
} ReplayContext;

static int replay_record(const JournalRecord *r, bool after_damage, void *userdata) {
        ReplayContext *c = userdata;
        const char *why = NULL;
        int k;

        if (r->lsn <= c->skip_through)
                return 0;
        c->last_type = r->type;
        c->last_through = r->through_lsn;
        /* A CHECKPOINT only ends a snapshot; one in the journal itself carries nothing we need. */
        k = live_set_apply(c->j->live, r, &why);
        if (k == -ENOMEM)
                return k;
        if (k < 0) {
                if (c->rep->n_inconsistent++ == 0)
                        message_add(c->rep->message, sizeof(c->rep->message),
                                    "record LSN %" PRIu64
                                    " (%s) contradicts the records before it (%s), skipped",
                                    r->lsn, journal_record_type_to_string(r->type) ?: "?", why ?: "?");
                return 0;
        }
        c->n++;
        c->last_lsn = r->lsn;
        if (c->opts && c->opts->on_record) {
                k = c->opts->on_record(r, after_damage, c->opts->userdata);
                if (k < 0)
                        return k;
        }
        return 0;
}

static int read_file_at(Journal *j, const char *name, void **ret_buf, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        r = open_file_at(j->dir_fd, name, O_RDONLY, &fd);
        if (r < 0)
                return r;
        return fs_read_all(fd, JOURNAL_MAX_FILE_SIZE, ret_buf, ret_size);
}

static void quarantine(Journal *j, JournalReport *rep) {
        j->state = JOURNAL_STATE_QUARANTINE;
        rep->state = JOURNAL_STATE_QUARANTINE;
}

/* Loads ownership.snapshot into the live set. Sets *ret_through to the LSN it covers (0 if none). */
static int load_snapshot(Journal *j, const JournalOptions *opts, JournalReport *rep, bool *ret_exists,
                         uint64_t *ret_through) {
        _cleanup_free_ void *buf = NULL;
        size_t size;
        JournalHeader h;
        JournalScan scan;
        const char *why = NULL;
        int r;

        *ret_exists = false;
        *ret_through = 0;

        r = read_file_at(j, JOURNAL_SNAPSHOT_FILE, &buf, &size);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                message_add(rep->message, sizeof(rep->message), "cannot read %s/%s: %s", j->directory,
                            JOURNAL_SNAPSHOT_FILE, strerror(-r));
                return r;
        }
        *ret_exists = true;

        r = journal_header_decode(buf, size, SNAPSHOT_MAGIC, &h, &why);
        if (r == -EPROTONOSUPPORT) {
                message_add(rep->message, sizeof(rep->message), "%s/%s: %s; written by a newer chvm-agent?",
                            j->directory, JOURNAL_SNAPSHOT_FILE, why);
                return r;
        }
        if (r < 0) {
                quarantine(j, rep);
                message_add(rep->message, sizeof(rep->message),
                            "QUARANTINE: snapshot %s/%s is damaged (%s); ownership records before the "
                            "journal are lost",
                            j->directory, JOURNAL_SNAPSHOT_FILE, why);
                return 0;
        }
        r = check_agent_id(j, &h, JOURNAL_SNAPSHOT_FILE, rep);
        if (r < 0)
                return r;

        /* Records go to the live set; the CHECKPOINT at the end tells how far the snapshot reaches. */
        ReplayContext c = { .j = j, .rep = rep, .opts = opts };
        r = journal_scan_buffer(buf, size, &h, replay_record, &c, &scan);
        if (r < 0)
                return r;

        bool ok =
                scan.result == JOURNAL_SCAN_CLEAN && scan.n_records > 0 && c.last_type == JOURNAL_CHECKPOINT;
        rep->n_snapshot_records = scan.n_records;
        if (!ok) {
                quarantine(j, rep);
                message_add(
                        rep->message, sizeof(rep->message),
                        "QUARANTINE: snapshot %s/%s is damaged or incomplete (%s); using what could be read",
                        j->directory, JOURNAL_SNAPSHOT_FILE, scan.why ?: "no CHECKPOINT record at its end");
                return 0;
        }

        *ret_through = c.last_through;
        rep->snapshot_through_lsn = c.last_through;
        return 0;
}

static int copy_broken(Journal *j, const void *buf, size_t size, JournalReport *rep) {
        _cleanup_close_ int fd = -EBADF;
        char name[64];
        int r = -EEXIST;

        for (unsigned i = 1; i < 1000 && r == -EEXIST; i++) {
                snprintf(name, sizeof(name), "%s.%u.broken", JOURNAL_FILE, i);
                r = open_file_at(j->dir_fd, name, O_WRONLY | O_CREAT | O_EXCL, &fd);
        }
        if (r < 0)
                return journal_fail(j, r, "cannot create a copy of the damaged journal in %s", j->directory);

        r = fs_pwrite_full(j->ops, fd, buf, size, 0);
        if (r < 0)
                return journal_fail(j, r, "cannot write %s/%s", j->directory, name);
        r = j->ops->fdatasync(j->ops->userdata, fd);
        if (r < 0)
                return journal_fatal(j, r, "fdatasync of the damaged journal's copy");
        snprintf(rep->broken_copy, sizeof(rep->broken_copy), "%s", name);
        return 0;
}

static int repair_torn_tail(Journal *j, const void *buf, size_t size, const JournalScan *scan,
                            JournalReport *rep) {
        int r;

        rep->torn_offset = scan->valid_end;
        rep->torn_bytes = size - scan->valid_end;
        rep->state = j->state = j->state == JOURNAL_STATE_QUARANTINE ? JOURNAL_STATE_QUARANTINE
                                                                     : JOURNAL_STATE_TORN_TAIL_REPAIRED;
        if (j->read_only) {
                message_add(rep->message, sizeof(rep->message),
                            "torn tail in %s/%s: %" PRIu64 " bytes after LSN %" PRIu64 " at offset %" PRIu64
                            " (%s); not repaired (read-only)",
                            j->directory, JOURNAL_FILE, rep->torn_bytes, scan->last_lsn, rep->torn_offset,
                            scan->why ?: "?");
                return 0;
        }

        r = copy_broken(j, buf, size, rep);
        if (r < 0)
                return r;
        r = j->ops->ftruncate(j->ops->userdata, j->fd, (off_t) scan->valid_end);
        if (r < 0)
                return journal_fail(j, r, "cannot truncate the torn tail of %s/%s", j->directory,
                                    JOURNAL_FILE);
        r = j->ops->fdatasync(j->ops->userdata, j->fd);
        if (r < 0)
                return journal_fatal(j, r, "fdatasync after truncating the torn tail");
        r = fsync_dir(j);
        if (r < 0)
                return journal_fatal(j, r, "fsync of the state directory");

        message_add(rep->message, sizeof(rep->message),
                    "torn tail in %s/%s repaired: cut %" PRIu64 " bytes after LSN %" PRIu64
                    " at offset %" PRIu64 " (%s); a copy of the file before the cut is %s",
                    j->directory, JOURNAL_FILE, rep->torn_bytes, scan->last_lsn, rep->torn_offset,
                    scan->why ?: "?", rep->broken_copy);
        return 0;
}

static int load_journal(Journal *j, const JournalOptions *opts, JournalReport *rep, bool snapshot_exists,
                        uint64_t through) {
        _cleanup_free_ void *buf = NULL;
        size_t size;
        JournalHeader h;
        JournalScan scan;
        const char *why = NULL;
        int r;

        r = open_file_at(j->dir_fd, JOURNAL_FILE, j->read_only ? O_RDONLY : O_RDWR, &j->fd);
        if (r == -ENOENT) {
                if (j->read_only) {
                        message_add(rep->message, sizeof(rep->message), "%s/%s does not exist", j->directory,
                                    JOURNAL_FILE);
                        return r;
                }
                if (snapshot_exists) {
                        /* Compaction replaces the journal by rename, so it is never missing after a crash:
                         * someone removed it, and whatever it held after the snapshot is gone. */
                        quarantine(j, rep);
                        message_add(rep->message, sizeof(rep->message),
                                    "QUARANTINE: %s/%s is missing but a snapshot exists; records after LSN "
                                    "%" PRIu64 " may be lost; started a new journal",
                                    j->directory, JOURNAL_FILE, through);
                } else
                        rep->created = true;
                r = start_new_journal(j, through + 1);
                if (r < 0)
                        message_add(rep->message, sizeof(rep->message), "%s", error_message(&j->error));
                return r;
        }
        if (r < 0) {
                message_add(rep->message, sizeof(rep->message), "cannot open %s/%s: %s", j->directory,
                            JOURNAL_FILE, strerror(-r));
                return r;
        }

        r = fs_read_all(j->fd, JOURNAL_MAX_FILE_SIZE, &buf, &size);
        if (r < 0) {
                message_add(rep->message, sizeof(rep->message), "cannot read %s/%s: %s", j->directory,
                            JOURNAL_FILE, strerror(-r));
                return r;
        }

        r = journal_header_decode(buf, size, JOURNAL_MAGIC, &h, &why);
        if (r < 0) {
                /* Without a good header there is no salt, so no record can be trusted. */
                message_add(rep->message, sizeof(rep->message), "%s/%s cannot be used: %s%s", j->directory,
                            JOURNAL_FILE, why,
                            r == -EPROTONOSUPPORT ? " (written by a newer chvm-agent?)"
                                                  : "; move it aside to start with an empty journal (kernel "
                                                    "objects stay provable by their tags)");
                return r;
        }
        r = check_agent_id(j, &h, JOURNAL_FILE, rep);
        if (r < 0)
                return r;
        j->header = h;

        if (h.first_lsn > through + 1) {
                quarantine(j, rep);
                message_add(rep->message, sizeof(rep->message),
                            "QUARANTINE: %s/%s starts at LSN %" PRIu64
                            " but the snapshot ends at LSN %" PRIu64 "; records in between are missing",
                            j->directory, JOURNAL_FILE, h.first_lsn, through);
        }

        ReplayContext c = { .j = j, .rep = rep, .skip_through = through, .opts = opts, .last_lsn = through };
        r = journal_scan_buffer(buf, size, &h, replay_record, &c, &scan);
        if (r < 0) {
                message_add(rep->message, sizeof(rep->message), "replaying %s/%s failed: %s", j->directory,
                            JOURNAL_FILE, strerror(-r));
                return r;
        }
        rep->n_journal_records = c.n;

        uint64_t last_in_file = scan.last_lsn;
        if (scan.result == JOURNAL_SCAN_CLEAN) {
                j->end = size;
        } else if (scan.result == JOURNAL_SCAN_TORN_TAIL) {
                r = repair_torn_tail(j, buf, size, &scan, rep);
                if (r < 0) {
                        message_add(rep->message, sizeof(rep->message), "%s", error_message(&j->error));
                        return r;
                }
                j->end = scan.valid_end;
        } else {
                quarantine(j, rep);
                rep->damage_offset = scan.valid_end;
                rep->damage_lsn = scan.last_lsn + 1;
                rep->n_after_damage = scan.n_after;
                message_add(rep->message, sizeof(rep->message),
                            "QUARANTINE: %s/%s is corrupt in the middle: the record for LSN %" PRIu64
                            " at offset %zu is damaged (%s) but %zu valid record(s) follow, the first with "
                            "LSN %" PRIu64
                            "; ownership records may be missing, so nothing will be deleted that its kernel "
                            "tag does not prove",
                            j->directory, JOURNAL_FILE, rep->damage_lsn, scan.valid_end, scan.why ?: "?",
                            scan.n_after, scan.first_lsn_after);
                /* Keep everything; new records go after the end, on an 8-byte boundary. */
                j->end = ALIGN8(size);
                if (scan.last_lsn_after > last_in_file)
                        last_in_file = scan.last_lsn_after;
        }

        if (last_in_file < through)
                last_in_file = through;
        j->next_lsn = last_in_file + 1;
        j->synced_end = j->end;
        rep->durable_lsn = scan.synced_lsn > through ? scan.synced_lsn : through;
        return 0;
}

static int open_journal(const JournalOptions *opts, Journal **ret, JournalReport *rep) {
        _cleanup_(journal_closep) Journal *j = NULL;
        bool snapshot_exists;
        uint64_t through;
        int r;

        if (!opts || !opts->directory || !ret)
                return -EINVAL;

        j = calloc(1, sizeof(Journal));
        if (!j)
                return -ENOMEM;
        j->dir_fd = j->lock_fd = j->fd = -EBADF;
        j->ops = opts->fs_ops ?: &fs_ops_default;
        j->read_only = opts->read_only;
        memcpy(j->agent_id, opts->agent_id, JOURNAL_ID_SIZE);
        j->directory = strdup(opts->directory);
        j->live = live_set_new();
        if (!j->directory || !j->live)
                return -ENOMEM;

        j->dir_fd = open(opts->directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (j->dir_fd < 0) {
                r = negative_errno();
                message_add(rep->message, sizeof(rep->message), "cannot open journal directory %s: %s",
                            opts->directory, strerror(-r));
                return r;
        }

        if (!j->read_only) {
                r = take_lock(j, rep);
                if (r < 0)
                        return r;
                /* Leftovers of a compaction that crashed before its rename: never part of the state. */
                (void) unlinkat(j->dir_fd, SNAPSHOT_TMP_FILE, 0);
                (void) unlinkat(j->dir_fd, JOURNAL_TMP_FILE, 0);
        }

        r = load_snapshot(j, opts, rep, &snapshot_exists, &through);
        if (r < 0)
                return r;
        r = load_journal(j, opts, rep, snapshot_exists, through);
        if (r < 0)
                return r;
        if (rep->n_inconsistent > 0 && j->state != JOURNAL_STATE_QUARANTINE) {
                quarantine(j, rep);
                message_add(rep->message, sizeof(rep->message),
                            "QUARANTINE: %zu record(s) in %s contradict the records before them",
                            rep->n_inconsistent, j->directory);
        }

        /* Everything now in the file is as durable as one fdatasync can make it. */
        if (!j->read_only) {
                r = j->ops->fdatasync(j->ops->userdata, j->fd);
                if (r < 0) {
                        journal_fatal(j, r, "fdatasync at open");
                        message_add(rep->message, sizeof(rep->message), "%s", error_message(&j->error));
                        return r;
                }
        }
        j->synced_lsn = j->next_lsn - 1;
        j->next_oid = live_set_max_oid(j->live) + 1;
        rep->last_lsn = j->next_lsn - 1;
        rep->state = j->state;
        j->report = *rep;

        *ret = TAKE_PTR(j);
        return 0;
}

int journal_open(const JournalOptions *opts, Journal **ret, JournalReport *ret_report) {
        JournalReport dummy;
        JournalReport *rep = ret_report ?: &dummy;
        memset(rep, 0, sizeof(*rep));
        int r = open_journal(opts, ret, rep);
        if (r < 0)
                (void) error_errno(&rep->error, r, "%s", rep->message[0] ? rep->message : strerror(-r));
        return r;
}

Journal *journal_close(Journal *j) {
        if (!j)
                return NULL;
        safe_close(j->fd);
        if (j->lock_fd >= 0)
                writer_forget(j);
        safe_close(j->lock_fd); /* releases the lock */
        safe_close(j->dir_fd);
        live_set_free(j->live);
        free(j->directory);
        free(j);
        return NULL;
}

static int check_writable(Journal *j) {
        if (j->failure < 0)
                return journal_fail(j, j->failure, "journal %s/%s failed earlier and accepts no more writes",
                                    j->directory, JOURNAL_FILE);
        if (j->read_only)
                return journal_fail(j, -EROFS, "journal %s/%s was opened read-only", j->directory,
                                    JOURNAL_FILE);
        return 0;
}

int journal_append(Journal *j, JournalRecord *r) {
        _cleanup_free_ void *buf = NULL;
        const char *why = NULL;
        size_t size;
        int k;

        k = check_writable(j);
        if (k < 0)
                return k;

        k = live_set_check(j->live, r, &why);
        if (k < 0)
                return journal_fail(j, k, "refusing to journal %s: %s",
                                    journal_record_type_to_string(r->type) ?: "a record of unknown type",
                                    why);

        r->lsn = j->next_lsn;
        r->synced_lsn = j->synced_lsn;
        k = journal_record_encode(r, j->header.salt, &buf, &size);
        if (k < 0)
                return journal_fail(j, k, "cannot encode %s record", journal_record_type_to_string(r->type));

        k = CRASH_POINT("journal-append-before-write");
        if (k < 0)
                return k;

        k = fs_pwrite_full(j->ops, j->fd, buf, size, (off_t) j->end);
        if (k < 0) {
                /* Take back whatever part of the record reached the file, so the next append does not sit
                 * behind a torn record. If even that fails, the file's tail is unknown: stop writing. */
                int t = j->ops->ftruncate(j->ops->userdata, j->fd, (off_t) j->end);
                if (t < 0)
                        return journal_fatal(j, k, "write (and rollback)");
                return journal_fail(j, k, "cannot append to %s/%s", j->directory, JOURNAL_FILE);
        }

        j->end += size;
        j->next_lsn++;
        k = live_set_apply(j->live, r, &why);
        if (k < 0) /* only -ENOMEM can get here: the check above passed */
                return journal_fatal(j, k, "update of the in-memory live set");
        if (r->type == JOURNAL_INTENT && r->oid >= j->next_oid)
                j->next_oid = r->oid + 1;

        return CRASH_POINT("journal-append-after-write");
}

int journal_sync(Journal *j) {
        int k;

        k = check_writable(j);
        if (k < 0)
                return k;
        if (j->synced_lsn + 1 == j->next_lsn)
                return 0;

        k = CRASH_POINT("journal-sync-before");
        if (k < 0)
                return k;

        k = j->ops->fdatasync(j->ops->userdata, j->fd);
        if (k < 0) {
                /* Never retried: after a failed fdatasync the kernel may have dropped the dirty pages and a
                 * second call would report success for data that is gone. Cut the unacknowledged records off
                 * again so this boot's readers cannot take them for acknowledged ones; after a power loss
                 * the synced_lsn in each record tells. */
                (void) j->ops->ftruncate(j->ops->userdata, j->fd, (off_t) j->synced_end);
                return journal_fatal(j, k, "fdatasync");
        }
        j->synced_lsn = j->next_lsn - 1;
        j->synced_end = j->end;

        return CRASH_POINT("journal-sync-after");
}

int journal_append_sync(Journal *j, JournalRecord *r) {
        int k;

        k = journal_append(j, r);
        if (k < 0)
                return k;
        return journal_sync(j);
}

uint64_t journal_new_oid(Journal *j) {
        return j->next_oid++;
}

typedef struct SnapshotBuilder {
        uint8_t *buf;
        size_t size, allocated;
        uint64_t lsn;
        const uint8_t *salt;
} SnapshotBuilder;

static int snapshot_emit(const JournalRecord *rec, void *userdata) {
        SnapshotBuilder *b = userdata;
        _cleanup_free_ void *enc = NULL;
        JournalRecord r = *rec;
        size_t n;
        int k;

        r.lsn = b->lsn;
        r.synced_lsn = 0;
        k = journal_record_encode(&r, b->salt, &enc, &n);
        if (k < 0)
                return k;
        if (b->size + n > b->allocated) {
                size_t a = (b->allocated ?: 4096) * 2;
                while (a < b->size + n)
                        a *= 2;
                uint8_t *p = realloc(b->buf, a);
                if (!p)
                        return -ENOMEM;
                b->buf = p;
                b->allocated = a;
        }
        memcpy(b->buf + b->size, enc, n);
        b->size += n;
        b->lsn++;
        return 0;
}

int journal_compact(Journal *j, JournalCompactFlags flags) {
        SnapshotBuilder b = {};
        JournalHeader h;
        int fd = -EBADF, r;

        r = check_writable(j);
        if (r < 0)
                return r;
        if (j->state == JOURNAL_STATE_QUARANTINE && !(flags & JOURNAL_COMPACT_ACCEPT_DAMAGE))
                return journal_fail(j, -EUCLEAN,
                                    "journal %s/%s is in quarantine; compacting would make its possibly "
                                    "incomplete live set permanent (needs an explicit accept)",
                                    j->directory, JOURNAL_FILE);

        /* Everything the snapshot covers must be durable in the journal first. */
        r = journal_sync(j);
        if (r < 0)
                return r;
        uint64_t through = j->next_lsn - 1;

        r = make_header(j, SNAPSHOT_MAGIC, 1, &h);
        if (r < 0)
                return r;
        b.lsn = 1;
        b.salt = h.salt;
        r = live_set_serialize(j->live, snapshot_emit, &b);
        if (r >= 0) {
                JournalRecord cp = {
                        .type = JOURNAL_CHECKPOINT,
                        .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_THROUGH_LSN) |
                                  JOURNAL_FIELD_BIT(JOURNAL_FIELD_MAX_OID),
                        .through_lsn = through,
                        .max_oid = j->next_oid - 1,
                };
                r = snapshot_emit(&cp, &b);
        }
        if (r < 0) {
                free(b.buf);
                return journal_fail(j, r, "cannot build the snapshot of %s", j->directory);
        }

        r = write_new_file(j, SNAPSHOT_TMP_FILE, JOURNAL_SNAPSHOT_FILE, &h, b.buf, b.size, &fd);
        free(b.buf);
        if (r < 0)
                return r;
        safe_close(fd);

        r = start_new_journal(j, through + 1);
        if (r < 0)
                return r;

        if (j->state == JOURNAL_STATE_QUARANTINE) {
                j->state = JOURNAL_STATE_OK;
                j->report.state = JOURNAL_STATE_OK;
                message_add(j->report.message, sizeof(j->report.message),
                            "quarantine lifted by compaction at LSN %" PRIu64, through);
        }
        return CRASH_POINT("journal-compact-done");
}

const LiveSet *journal_live_set(const Journal *j) {
        return j->live;
}

JournalState journal_state(const Journal *j) {
        return j->state;
}

const JournalReport *journal_report(const Journal *j) {
        return &j->report;
}

const char *journal_error_message(const Journal *j) {
        return error_message(&j->error);
}

uint64_t journal_last_lsn(const Journal *j) {
        return j->next_lsn - 1;
}

uint64_t journal_synced_lsn(const Journal *j) {
        return j->synced_lsn;
}

uint64_t journal_size(const Journal *j) {
        return j->end;
}
