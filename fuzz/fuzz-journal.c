/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for the journal's replay path.
 *
 * The first input byte selects what the harness repairs before parsing, so that the fuzzer gets past the
 * checksums and reaches the TLV parser, the scanner's damage search and the live set:
 *     bit 0  recompute the header CRC
 *     bit 1  recompute the CRC of every record along the chain of plausible lengths
 *     bit 2  also run the whole file path: journal_open() on the image in a scratch directory
 * The rest is the file image. Whatever the input, the harness checks that what the scanner accepted is a
 * contiguous prefix of records with valid CRCs and continuous LSNs, and that the live set built from
 * the records survives a serialize/apply round trip. Any violation aborts. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "state/journal.h"
#include "util/crc32c.h"
#include "util/macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Check {
        uint64_t expect_lsn;
        size_t n_prefix;
        LiveSet *live;
} Check;

static int on_record(const JournalRecord *r, bool after_damage, void *userdata) {
        Check *c = userdata;

        if (!after_damage) {
                if (r->lsn != c->expect_lsn)
                        abort(); /* the prefix must be continuous */
                c->expect_lsn++;
                c->n_prefix++;
        }
        (void) live_set_apply(c->live, r, NULL); /* inconsistent records are refused, never crash */
        return 0;
}

static int reapply(const JournalRecord *r, void *userdata) {
        if (live_set_apply(userdata, r, NULL) < 0)
                abort(); /* a serialized live set must apply cleanly */
        return 0;
}

static void fix_crcs(uint8_t *img, size_t size, unsigned mode) {
        if ((mode & 1) && size >= JOURNAL_HEADER_SIZE)
                unaligned_write_le32(img + 68, crc32c_mask(crc32c_update(0, img, 68)));
        if (!(mode & 2) || size < JOURNAL_HEADER_SIZE)
                return;
        const uint8_t *salt = img + 32;
        for (size_t off = JOURNAL_HEADER_SIZE; off + JOURNAL_RECORD_HEADER_SIZE <= size;) {
                uint32_t len = unaligned_read_le32(img + off + 4);
                if (len < JOURNAL_RECORD_HEADER_SIZE || len > JOURNAL_RECORD_MAX_SIZE ||
                    ALIGN8(len) > size - off)
                        break;
                size_t padded = ALIGN8(len);
                memset(img + off + len, 0, padded - len);
                uint32_t crc =
                        crc32c_update(crc32c_update(0, salt, JOURNAL_SALT_SIZE), img + off + 4, padded - 4);
                unaligned_write_le32(img + off, crc32c_mask(crc));
                off += padded;
        }
}

static char dir[] = "/tmp/chvm-fuzz-journal-XXXXXX";

/* The scratch directory goes when the fuzzer exits. */
static void remove_dir(void) {
        static const char *const names[] = { JOURNAL_FILE,
                                             JOURNAL_SNAPSHOT_FILE,
                                             JOURNAL_LOCK_FILE,
                                             JOURNAL_FILE ".1.broken",
                                             JOURNAL_FILE ".2.broken",
                                             JOURNAL_FILE ".tmp",
                                             JOURNAL_SNAPSHOT_FILE ".tmp" };
        char path[sizeof(dir) + 64];
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
                (void) unlink(path);
        }
        (void) rmdir(dir);
}

static void run_file_path(const uint8_t *img, size_t size, const JournalHeader *h) {
        static bool made;
        char path[sizeof(dir) + 64];
        FILE *f;

        if (!made) {
                if (!mkdtemp(dir))
                        abort();
                atexit(remove_dir);
                made = true;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, JOURNAL_SNAPSHOT_FILE);
        (void) unlink(path);
        for (unsigned i = 1; i < 3; i++) {
                snprintf(path, sizeof(path), "%s/%s.%u.broken", dir, JOURNAL_FILE, i);
                (void) unlink(path);
        }
        snprintf(path, sizeof(path), "%s/%s", dir, JOURNAL_FILE);
        f = fopen(path, "we");
        if (!f)
                abort();
        if (size > 0 && fwrite(img, 1, size, f) != size)
                abort();
        fclose(f);

        JournalOptions o = { .directory = dir };
        memcpy(o.agent_id, h->agent_id, JOURNAL_ID_SIZE);
        JournalReport rep;
        Journal *j = NULL;
        if (journal_open(&o, &j, &rep) < 0)
                return;
        /* After a repair the journal must be clean and append-able. */
        JournalRecord r = { .type = JOURNAL_VM_DEFINE,
                            .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID) |
                                      JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_NAME) |
                                      JOURNAL_FIELD_BIT(JOURNAL_FIELD_BACKEND),
                            .vm_id = UINT64_MAX,
                            .vm_name = "fuzz",
                            .backend = "mosnet" };
        if (journal_append(j, &r) < 0 && journal_state(j) != JOURNAL_STATE_FAILED)
                abort();
        journal_close(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        JournalHeader h;
        JournalScan scan;

        if (size < 1)
                return 0;
        unsigned mode = data[0];
        size--;
        uint8_t *img = malloc(size ? size : 1);
        if (!img)
                return 0;
        memcpy(img, data + 1, size);
        fix_crcs(img, size, mode);

        if (journal_header_decode(img, size, NULL, &h, NULL) < 0) {
                free(img);
                return 0;
        }

        Check c = { .expect_lsn = h.first_lsn, .live = live_set_new() };
        if (!c.live)
                abort();
        if (journal_scan_buffer(img, size, &h, on_record, &c, &scan) < 0)
                abort();

        /* Everything the scanner accepted is a prefix of valid records, re-checked independently. */
        if (scan.valid_end > size || scan.n_records != c.n_prefix)
                abort();
        size_t off = JOURNAL_HEADER_SIZE;
        for (size_t i = 0; i < scan.n_records; i++) {
                JournalRecord r;
                int k = journal_record_decode(img + off, size - off, h.salt, &r, NULL);
                if (k <= 0 || r.lsn != h.first_lsn + i)
                        abort();
                off += (size_t) k;
        }
        if (off != scan.valid_end)
                abort();
        if (scan.result == JOURNAL_SCAN_CLEAN && scan.valid_end != size)
                abort();
        if (scan.result == JOURNAL_SCAN_CORRUPT && scan.n_after == 0)
                abort();

        LiveSet *copy = live_set_new();
        if (!copy)
                abort();
        if (live_set_serialize(c.live, reapply, copy) < 0)
                abort();
        /* max_oid is carried by CHECKPOINT, which serialize leaves to the caller */
        JournalRecord cp = { .type = JOURNAL_CHECKPOINT,
                             .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_THROUGH_LSN) |
                                       JOURNAL_FIELD_BIT(JOURNAL_FIELD_MAX_OID),
                             .max_oid = live_set_max_oid(c.live) };
        if (live_set_apply(copy, &cp, NULL) < 0 || !live_set_equal(c.live, copy))
                abort();
        live_set_free(copy);
        live_set_free(c.live);

        if (mode & 4)
                run_file_path(img, size, &h);
        free(img);
        return 0;
}
