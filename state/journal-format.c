/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state/journal-format.h"
#include "util/crc32c.h"
#include "util/macro.h"
#include "util/string-table.h"

static const char *const record_type_table[_JOURNAL_RECORD_TYPE_MAX] = {
        [JOURNAL_VM_DEFINE] = "VM_DEFINE",   [JOURNAL_VM_UNDEFINE] = "VM_UNDEFINE",
        [JOURNAL_VM_STARTED] = "VM_STARTED", [JOURNAL_VM_EXITED] = "VM_EXITED",
        [JOURNAL_INTENT] = "INTENT",         [JOURNAL_CREATED] = "CREATED",
        [JOURNAL_ABORTED] = "ABORTED",       [JOURNAL_RELEASE_INTENT] = "RELEASE_INTENT",
        [JOURNAL_RELEASED] = "RELEASED",     [JOURNAL_IP_ALLOC] = "IP_ALLOC",
        [JOURNAL_IP_FREE] = "IP_FREE",       [JOURNAL_CHECKPOINT] = "CHECKPOINT",
};

DEFINE_STRING_TABLE(journal_record_type, JournalRecordType, record_type_table, _JOURNAL_RECORD_TYPE_MAX)

static const char *const vm_state_table[_JOURNAL_VM_STATE_MAX] = {
        [JOURNAL_VM_DEFINED] = "defined",
        [JOURNAL_VM_RUNNING] = "running",
        [JOURNAL_VM_STOPPED] = "stopped",
        [JOURNAL_VM_CRASHED] = "crashed",
};

DEFINE_STRING_TABLE(journal_vm_state, JournalVmState, vm_state_table, _JOURNAL_VM_STATE_MAX)

typedef enum FieldShape {
        SHAPE_U32,
        SHAPE_I32,
        SHAPE_U64,
        SHAPE_STRING,
        SHAPE_BYTES16,
        SHAPE_BYTES,
} FieldShape;

typedef struct FieldInfo {
        FieldShape shape;
        size_t offset; /* of the member in JournalRecord */
} FieldInfo;

#define FIELD(f, s, member) [f] = { .shape = s, .offset = offsetof(JournalRecord, member) }
static const FieldInfo field_table[_JOURNAL_FIELD_MAX] = {
        FIELD(JOURNAL_FIELD_VM_ID, SHAPE_U64, vm_id),
        FIELD(JOURNAL_FIELD_VM_NAME, SHAPE_STRING, vm_name),
        FIELD(JOURNAL_FIELD_BACKEND, SHAPE_STRING, backend),
        FIELD(JOURNAL_FIELD_PID, SHAPE_U32, pid),
        FIELD(JOURNAL_FIELD_START_TIME, SHAPE_U64, start_time),
        FIELD(JOURNAL_FIELD_BOOT_ID, SHAPE_BYTES16, boot_id),
        FIELD(JOURNAL_FIELD_VM_STATE, SHAPE_U32, vm_state),
        FIELD(JOURNAL_FIELD_EXIT_STATUS, SHAPE_I32, exit_status),
        FIELD(JOURNAL_FIELD_EXIT_SIGNAL, SHAPE_I32, exit_signal),
        FIELD(JOURNAL_FIELD_REASON, SHAPE_STRING, reason),
        FIELD(JOURNAL_FIELD_OID, SHAPE_U64, oid),
        FIELD(JOURNAL_FIELD_OBJ_KIND, SHAPE_U32, obj_kind),
        FIELD(JOURNAL_FIELD_OBJ_NAME, SHAPE_STRING, obj_name),
        FIELD(JOURNAL_FIELD_OBJ_TAG, SHAPE_STRING, obj_tag),
        FIELD(JOURNAL_FIELD_OBJ_KEY, SHAPE_BYTES, obj_key),
        FIELD(JOURNAL_FIELD_OBJ_HANDLE, SHAPE_U64, obj_handle),
        FIELD(JOURNAL_FIELD_OBJ_IFINDEX, SHAPE_U32, obj_ifindex),
        FIELD(JOURNAL_FIELD_IP4, SHAPE_U32, ip4),
        FIELD(JOURNAL_FIELD_THROUGH_LSN, SHAPE_U64, through_lsn),
        FIELD(JOURNAL_FIELD_MAX_OID, SHAPE_U64, max_oid),
        FIELD(JOURNAL_FIELD_DEFINITION, SHAPE_STRING, definition),
};
#undef FIELD

#define B(f) JOURNAL_FIELD_BIT(JOURNAL_FIELD_##f)
static const uint32_t required_fields[_JOURNAL_RECORD_TYPE_MAX] = {
        [JOURNAL_VM_DEFINE] = B(VM_ID) | B(VM_NAME) | B(BACKEND),
        [JOURNAL_VM_UNDEFINE] = B(VM_ID),
        [JOURNAL_VM_STARTED] = B(VM_ID) | B(PID) | B(START_TIME) | B(BOOT_ID),
        [JOURNAL_VM_EXITED] = B(VM_ID) | B(VM_STATE),
        [JOURNAL_INTENT] = B(OID) | B(VM_ID) | B(OBJ_KIND) | B(OBJ_NAME) | B(OBJ_TAG),
        [JOURNAL_CREATED] = B(OID),
        [JOURNAL_ABORTED] = B(OID),
        [JOURNAL_RELEASE_INTENT] = B(OID),
        [JOURNAL_RELEASED] = B(OID),
        [JOURNAL_IP_ALLOC] = B(VM_ID) | B(IP4),
        [JOURNAL_IP_FREE] = B(IP4),
        [JOURNAL_CHECKPOINT] = B(THROUGH_LSN) | B(MAX_OID),
};
#undef B

#define KNOWN_FIELDS ((JOURNAL_FIELD_BIT(_JOURNAL_FIELD_MAX) - 1) & ~UINT32_C(1))

static const char *record_problem(const JournalRecord *r) {
        for (int f = 1; f < _JOURNAL_FIELD_MAX; f++)
                if (journal_record_has(r, (JournalField) f) && field_table[f].shape == SHAPE_STRING &&
                    !*(const char *const *) ((const uint8_t *) r + field_table[f].offset))
                        return "string field without data";

        if (r->type <= 0 || r->type >= _JOURNAL_RECORD_TYPE_MAX)
                return "unknown record type";
        if (r->fields & ~KNOWN_FIELDS)
                return "unknown field set";
        if ((r->fields & required_fields[r->type]) != required_fields[r->type])
                return "required field missing";
        if (journal_record_has(r, JOURNAL_FIELD_OID) && r->oid == 0)
                return "object id 0";
        if (r->type != JOURNAL_INTENT && journal_record_has(r, JOURNAL_FIELD_VM_ID) && r->vm_id == 0)
                return "VM id 0";
        if (journal_record_has(r, JOURNAL_FIELD_VM_STATE) &&
            (r->vm_state == 0 || r->vm_state >= _JOURNAL_VM_STATE_MAX))
                return "unknown VM state";
        if (r->type == JOURNAL_VM_EXITED && r->vm_state != JOURNAL_VM_STOPPED &&
            r->vm_state != JOURNAL_VM_CRASHED)
                return "exit record with a state other than stopped or crashed";
        if (journal_record_has(r, JOURNAL_FIELD_VM_NAME) && r->vm_name[0] == '\0')
                return "empty VM name";
        if (journal_record_has(r, JOURNAL_FIELD_OBJ_NAME) && r->obj_name[0] == '\0')
                return "empty object name";
        if (journal_record_has(r, JOURNAL_FIELD_OBJ_KEY) && r->obj_key_size > 0 && !r->obj_key)
                return "object key without data";
        return NULL;
}

int journal_record_validate(const JournalRecord *r, const char **ret_why) {
        const char *why = record_problem(r);

        if (why) {
                if (ret_why)
                        *ret_why = why;
                return -EINVAL;
        }
        return 0;
}

static uint32_t salted_crc(const uint8_t salt[JOURNAL_SALT_SIZE], const void *data, size_t size) {
        return crc32c_mask(crc32c_update(crc32c_update(0, salt, JOURNAL_SALT_SIZE), data, size));
}

void journal_header_encode(const JournalHeader *h, uint8_t out[JOURNAL_HEADER_SIZE]) {
        memset(out, 0, JOURNAL_HEADER_SIZE);
        memcpy(out, h->magic, 8);
        unaligned_write_le32(out + 8, h->version);
        unaligned_write_le32(out + 12, JOURNAL_HEADER_SIZE);
        unaligned_write_le32(out + 16, h->incompat);
        unaligned_write_le32(out + 20, h->compat);
        unaligned_write_le64(out + 24, h->first_lsn);
        memcpy(out + 32, h->salt, JOURNAL_SALT_SIZE);
        memcpy(out + 48, h->agent_id, JOURNAL_ID_SIZE);
        unaligned_write_le32(out + 68, crc32c_mask(crc32c_update(0, out, 68)));
}

int journal_header_decode(const void *buf, size_t size, const char *expected_magic, JournalHeader *ret,
                          const char **ret_why) {
        const uint8_t *p = buf;
        JournalHeader h = {};
        const char *why;
        int r = -EBADMSG;

        if (size < JOURNAL_HEADER_SIZE)
                why = "file shorter than its header";
        else if (expected_magic ? memcmp(p, expected_magic, 8) != 0
                                : memcmp(p, JOURNAL_MAGIC, 8) != 0 && memcmp(p, SNAPSHOT_MAGIC, 8) != 0)
                why = "bad magic";
        else if (unaligned_read_le32(p + 68) != crc32c_mask(crc32c_update(0, p, 68)))
                why = "header checksum mismatch";
        else if (unaligned_read_le32(p + 8) != JOURNAL_VERSION) {
                why = "unsupported format version";
                r = -EPROTONOSUPPORT;
        } else if (unaligned_read_le32(p + 12) != JOURNAL_HEADER_SIZE)
                why = "unexpected header size";
        else if (unaligned_read_le32(p + 16) & ~JOURNAL_INCOMPAT_SUPPORTED) {
                why = "unknown incompatible feature flags";
                r = -EPROTONOSUPPORT;
        } else if (unaligned_read_le32(p + 64) != 0)
                why = "reserved header bytes not zero";
        else if (unaligned_read_le64(p + 24) == 0)
                why = "first LSN is 0";
        else {
                memcpy(h.magic, p, 8);
                h.version = unaligned_read_le32(p + 8);
                h.header_size = unaligned_read_le32(p + 12);
                h.incompat = unaligned_read_le32(p + 16);
                h.compat = unaligned_read_le32(p + 20);
                h.first_lsn = unaligned_read_le64(p + 24);
                memcpy(h.salt, p + 32, JOURNAL_SALT_SIZE);
                memcpy(h.agent_id, p + 48, JOURNAL_ID_SIZE);
                *ret = h;
                return 0;
        }

        if (ret_why)
                *ret_why = why;
        return r;
}

static size_t field_value_size(const JournalRecord *r, JournalField f) {
        const void *member = (const uint8_t *) r + field_table[f].offset;

        switch (field_table[f].shape) {
        case SHAPE_U32:
        case SHAPE_I32:
                return 4;
        case SHAPE_U64:
                return 8;
        case SHAPE_BYTES16:
                return 16;
        case SHAPE_STRING:
                return strlen(*(const char *const *) member) + 1;
        case SHAPE_BYTES:
                return r->obj_key_size;
        }
        abort();
}

static void field_value_write(const JournalRecord *r, JournalField f, uint8_t *out) {
        const void *member = (const uint8_t *) r + field_table[f].offset;

        switch (field_table[f].shape) {
        case SHAPE_U32:
        case SHAPE_I32:
                unaligned_write_le32(out, *(const uint32_t *) member);
                return;
        case SHAPE_U64:
                unaligned_write_le64(out, *(const uint64_t *) member);
                return;
        case SHAPE_BYTES16:
                memcpy(out, member, 16);
                return;
        case SHAPE_STRING:
                memcpy(out, *(const char *const *) member, strlen(*(const char *const *) member) + 1);
                return;
        case SHAPE_BYTES:
                if (r->obj_key_size > 0)
                        memcpy(out, r->obj_key, r->obj_key_size);
                return;
        }
        abort();
}

int journal_record_encode(const JournalRecord *r, const uint8_t salt[JOURNAL_SALT_SIZE], void **ret_buf,
                          size_t *ret_size) {
        size_t length = JOURNAL_RECORD_HEADER_SIZE;
        int k;

        k = journal_record_validate(r, NULL);
        if (k < 0)
                return k;

        for (int f = 1; f < _JOURNAL_FIELD_MAX; f++) {
                if (!journal_record_has(r, (JournalField) f))
                        continue;
                size_t vs = field_value_size(r, (JournalField) f);
                if (vs > UINT16_MAX)
                        return -E2BIG;
                length += 4 + vs;
        }
        if (length > JOURNAL_RECORD_MAX_SIZE)
                return -E2BIG;

        size_t padded = ALIGN8(length);
        uint8_t *buf = calloc(1, padded);
        if (!buf)
                return -ENOMEM;

        unaligned_write_le32(buf + 4, (uint32_t) length);
        unaligned_write_le16(buf + 8, (uint16_t) r->type);
        unaligned_write_le16(buf + 10, r->flags);
        unaligned_write_le64(buf + 16, r->lsn);
        unaligned_write_le64(buf + 24, r->synced_lsn);

        uint8_t *p = buf + JOURNAL_RECORD_HEADER_SIZE;
        for (int f = 1; f < _JOURNAL_FIELD_MAX; f++) {
                if (!journal_record_has(r, (JournalField) f))
                        continue;
                size_t vs = field_value_size(r, (JournalField) f);
                unaligned_write_le16(p, (uint16_t) f);
                unaligned_write_le16(p + 2, (uint16_t) vs);
                field_value_write(r, (JournalField) f, p + 4);
                p += 4 + vs;
        }

        unaligned_write_le32(buf, salted_crc(salt, buf + 4, padded - 4));
        *ret_buf = buf;
        *ret_size = padded;
        return 0;
}

static int field_value_read(JournalRecord *r, JournalField f, const uint8_t *v, size_t vs,
                            const char **why) {
        void *member = (uint8_t *) r + field_table[f].offset;

        switch (field_table[f].shape) {
        case SHAPE_U32:
        case SHAPE_I32:
                if (vs != 4)
                        goto bad_size;
                *(uint32_t *) member = unaligned_read_le32(v);
                return 0;
        case SHAPE_U64:
                if (vs != 8)
                        goto bad_size;
                *(uint64_t *) member = unaligned_read_le64(v);
                return 0;
        case SHAPE_BYTES16:
                if (vs != 16)
                        goto bad_size;
                memcpy(member, v, 16);
                return 0;
        case SHAPE_STRING:
                if (vs == 0 || v[vs - 1] != '\0' || memchr(v, '\0', vs) != v + vs - 1) {
                        *why = "string field not terminated exactly at its end";
                        return -EBADMSG;
                }
                *(const char **) member = (const char *) v;
                return 0;
        case SHAPE_BYTES:
                r->obj_key = v;
                r->obj_key_size = vs;
                return 0;
        }
        abort();

bad_size:
        *why = "field with the wrong size";
        return -EBADMSG;
}

int journal_record_decode(const void *buf, size_t size, const uint8_t salt[JOURNAL_SALT_SIZE],
                          JournalRecord *ret, const char **ret_why) {
        const uint8_t *p = buf;
        JournalRecord rec = {};
        const char *why = NULL;
        int k;

        if (size < JOURNAL_RECORD_HEADER_SIZE) {
                why = "short record header";
                goto bad;
        }

        uint32_t length = unaligned_read_le32(p + 4);
        if (length < JOURNAL_RECORD_HEADER_SIZE || length > JOURNAL_RECORD_MAX_SIZE) {
                why = "implausible record length";
                goto bad;
        }
        size_t padded = ALIGN8(length);
        if (padded > size) {
                why = "record extends past the end of the file";
                goto bad;
        }
        if (unaligned_read_le32(p) != salted_crc(salt, p + 4, padded - 4)) {
                why = "record checksum mismatch";
                goto bad;
        }
        if (unaligned_read_le32(p + 12) != 0) {
                why = "reserved record bytes not zero";
                goto bad;
        }
        for (size_t i = length; i < padded; i++)
                if (p[i] != 0) {
                        why = "record padding not zero";
                        goto bad;
                }

        rec.type = (JournalRecordType) unaligned_read_le16(p + 8);
        rec.flags = unaligned_read_le16(p + 10);
        rec.lsn = unaligned_read_le64(p + 16);
        rec.synced_lsn = unaligned_read_le64(p + 24);

        for (size_t off = JOURNAL_RECORD_HEADER_SIZE; off < length;) {
                if (length - off < 4) {
                        why = "truncated field header";
                        goto bad;
                }
                uint16_t f = unaligned_read_le16(p + off);
                uint16_t vs = unaligned_read_le16(p + off + 2);
                off += 4;
                if (vs > length - off) {
                        why = "field extends past the record";
                        goto bad;
                }
                if (f > 0 && f < _JOURNAL_FIELD_MAX) {
                        if (journal_record_has(&rec, (JournalField) f)) {
                                why = "field given twice";
                                goto bad;
                        }
                        k = field_value_read(&rec, (JournalField) f, p + off, vs, &why);
                        if (k < 0)
                                goto bad;
                        rec.fields |= JOURNAL_FIELD_BIT(f);
                }
                off += vs;
        }

        k = journal_record_validate(&rec, &why);
        if (k < 0)
                goto bad;

        *ret = rec;
        return (int) padded;

bad:
        if (ret_why)
                *ret_why = why;
        return -EBADMSG;
}

/* Cheap checks before paying for a CRC while searching damaged regions byte-aligned slot by slot. */
static bool plausible_record_at(const uint8_t *p, size_t avail, uint64_t min_lsn) {
        if (avail < JOURNAL_RECORD_HEADER_SIZE)
                return false;
        uint32_t length = unaligned_read_le32(p + 4);
        uint16_t type = unaligned_read_le16(p + 8);
        return length >= JOURNAL_RECORD_HEADER_SIZE && length <= JOURNAL_RECORD_MAX_SIZE &&
               ALIGN8(length) <= avail && type > 0 && type < _JOURNAL_RECORD_TYPE_MAX &&
               unaligned_read_le32(p + 12) == 0 && unaligned_read_le64(p + 16) >= min_lsn;
}

/* Walks the valid records after the damaged one at bad_off (expected LSN `expected`), in offset order,
 * taking each whose LSN is above the last taken. */
static int scan_after_damage(const uint8_t *buf, size_t size, size_t bad_off, uint64_t expected,
                             const JournalHeader *h, JournalRecordCallback cb, void *userdata, size_t *ret_n,
                             uint64_t *ret_first_lsn, uint64_t *ret_last_lsn, bool *ret_proof) {
        uint64_t next_min = expected;
        size_t n = 0;
        uint64_t first = 0;
        bool proof = false;

        for (size_t off = bad_off; off + JOURNAL_RECORD_HEADER_SIZE <= size;) {
                JournalRecord rec;
                int k;

                if (!plausible_record_at(buf + off, size - off, next_min)) {
                        off += 8;
                        continue;
                }
                k = journal_record_decode(buf + off, size - off, h->salt, &rec, NULL);
                if (k < 0 || rec.lsn < next_min) {
                        off += 8;
                        continue;
                }
                /* The record at bad_off itself is taken only if it skips ahead (an LSN gap). */
                if (off == bad_off && rec.lsn == expected) {
                        off += 8;
                        continue;
                }

                if (n == 0)
                        first = rec.lsn;
                n++;
                if (rec.synced_lsn >= expected)
                        proof = true;
                if (cb) {
                        int q = cb(&rec, true, userdata);
                        if (q < 0)
                                return q;
                }
                next_min = rec.lsn + 1;
                off += (size_t) k;
        }

        *ret_n = n;
        *ret_first_lsn = first;
        *ret_last_lsn = next_min - 1;
        *ret_proof = proof;
        return 0;
}

int journal_scan_buffer(const void *buf, size_t size, const JournalHeader *h, JournalRecordCallback cb,
                        void *userdata, JournalScan *ret) {
        const uint8_t *p = buf;
        JournalScan s = {
                .first_lsn = h->first_lsn,
                .last_lsn = h->first_lsn - 1,
        };
        size_t off = JOURNAL_HEADER_SIZE;
        int k;

        if (size < JOURNAL_HEADER_SIZE)
                return -EINVAL;

        while (off < size) {
                JournalRecord rec;

                k = journal_record_decode(p + off, size - off, h->salt, &rec, &s.why);
                if (k < 0)
                        break;
                if (rec.lsn != s.last_lsn + 1) {
                        s.why = rec.lsn > s.last_lsn + 1 ? "LSN gap" : "LSN out of order";
                        break;
                }
                if (cb) {
                        int q = cb(&rec, false, userdata);
                        if (q < 0)
                                return q;
                }
                s.n_records++;
                s.last_lsn = rec.lsn;
                if (rec.synced_lsn > s.synced_lsn)
                        s.synced_lsn = rec.synced_lsn;
                off += (size_t) k;
        }

        s.valid_end = off;
        if (off >= size) {
                s.result = JOURNAL_SCAN_CLEAN;
                s.why = NULL;
                *ret = s;
                return 0;
        }

        /* Damage at `off`. First decide, without telling anyone, whether a later valid record proves the
         * damaged one had been synced; only then report the records after it. */
        bool proof;
        k = scan_after_damage(p, size, off, s.last_lsn + 1, h, NULL, NULL, &s.n_after, &s.first_lsn_after,
                              &s.last_lsn_after, &proof);
        if (k < 0)
                return k;

        if (!proof) {
                s.result = JOURNAL_SCAN_TORN_TAIL;
                s.n_after = 0;
                s.first_lsn_after = s.last_lsn_after = 0;
                *ret = s;
                return 0;
        }

        s.result = JOURNAL_SCAN_CORRUPT;
        if (cb) {
                k = scan_after_damage(p, size, off, s.last_lsn + 1, h, cb, userdata, &s.n_after,
                                      &s.first_lsn_after, &s.last_lsn_after, &proof);
                if (k < 0)
                        return k;
        }
        *ret = s;
        return 0;
}
