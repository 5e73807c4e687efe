/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* On-disk format of the ownership journal and snapshot, and the buffer-level scanner that recovery and
 * the fuzzer share. No file I/O here.
 *
 * File header (72 bytes, little endian):
 *     0  magic[8]        "CHVMOWN1" (journal) or "CHVMSNP1" (snapshot)
 *     8  le32 version    1
 *    12  le32 header_size
 *    16  le32 incompat   unknown bit -> refuse to open
 *    20  le32 compat     unknown bits are ignored
 *    24  le64 first_lsn  LSN of the first record in this file
 *    32  salt[16]        random per file; seeds every record CRC
 *    48  agent_id[16]
 *    64  le32 reserved   zero
 *    68  le32 crc        crc32c of bytes 0..67, masked
 *
 * Record, 8-byte aligned, padded with zeros (32-byte header + TLV payload):
 *     0  le32 crc        masked crc32c(salt || bytes 4 .. ALIGN8(length)), so padding is checked too
 *     4  le32 length     header + payload, without padding
 *     8  le16 type
 *    10  le16 flags
 *    12  le32 reserved   zero
 *    16  le64 lsn        continuous: each record is the previous one's + 1
 *    24  le64 synced_lsn highest LSN whose fdatasync had returned when this record was appended
 *
 * synced_lsn is what tells a torn tail from corruption of durable data: a damaged record at LSN X
 * followed by valid records that all have synced_lsn < X was never known to be on disk when they were
 * written (the page cache may write an unsynced group in any order); a valid record after it with
 * synced_lsn >= X proves X had been synced, so the damage is mid-log corruption.
 *
 * Payload: a sequence of TLVs, each le16 field, le16 length, value (no alignment). Strings are stored
 * with their terminating NUL. Unknown fields are skipped (forward compatible); a field given twice, a
 * string without its NUL or a wrong-sized integer makes the record invalid. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_MAGIC "CHVMOWN1"
#define SNAPSHOT_MAGIC "CHVMSNP1"
#define JOURNAL_VERSION 1U
#define JOURNAL_HEADER_SIZE 72U
#define JOURNAL_RECORD_HEADER_SIZE 32U
#define JOURNAL_RECORD_MAX_SIZE (64U * 1024U)
#define JOURNAL_SALT_SIZE 16U
/* The longest definition text a VM_DEFINE carries: the rest of a record leaves room for its VM name and
 * backend. A longer definition file is synced on its own instead. */
#define JOURNAL_DEFINITION_MAX (JOURNAL_RECORD_MAX_SIZE - 1024U)
#define JOURNAL_ID_SIZE 16U

/* Header flags. None defined yet: every incompat bit is unknown. */
#define JOURNAL_INCOMPAT_SUPPORTED 0U

typedef enum JournalRecordType {
        JOURNAL_VM_DEFINE = 1, /* vm_id, vm_name, backend, [definition] */
        JOURNAL_VM_UNDEFINE, /* vm_id: the VM was removed */
        JOURNAL_VM_STARTED, /* vm_id, pid, start_time, boot_id */
        JOURNAL_VM_EXITED, /* vm_id, vm_state, [exit_status | exit_signal], [reason] */
        JOURNAL_INTENT, /* oid, vm_id, obj_kind, obj_name, obj_tag, [obj_key, obj_handle, obj_ifindex] */
        JOURNAL_CREATED, /* oid, [obj_handle, obj_ifindex] */
        JOURNAL_ABORTED, /* oid */
        JOURNAL_RELEASE_INTENT, /* oid */
        JOURNAL_RELEASED, /* oid */
        JOURNAL_IP_ALLOC, /* vm_id, ip4 */
        JOURNAL_IP_FREE, /* ip4 */
        JOURNAL_CHECKPOINT, /* through_lsn, max_oid (ends a snapshot) */
        _JOURNAL_RECORD_TYPE_MAX,
        _JOURNAL_RECORD_TYPE_INVALID = -EINVAL,
} JournalRecordType;

const char *journal_record_type_to_string(JournalRecordType t);
JournalRecordType journal_record_type_from_string(const char *s);

typedef enum JournalField {
        JOURNAL_FIELD_VM_ID = 1,
        JOURNAL_FIELD_VM_NAME,
        JOURNAL_FIELD_BACKEND,
        JOURNAL_FIELD_PID,
        JOURNAL_FIELD_START_TIME,
        JOURNAL_FIELD_BOOT_ID,
        JOURNAL_FIELD_VM_STATE,
        JOURNAL_FIELD_EXIT_STATUS,
        JOURNAL_FIELD_EXIT_SIGNAL,
        JOURNAL_FIELD_REASON,
        JOURNAL_FIELD_OID,
        JOURNAL_FIELD_OBJ_KIND,
        JOURNAL_FIELD_OBJ_NAME,
        JOURNAL_FIELD_OBJ_TAG,
        JOURNAL_FIELD_OBJ_KEY,
        JOURNAL_FIELD_OBJ_HANDLE,
        JOURNAL_FIELD_OBJ_IFINDEX,
        JOURNAL_FIELD_IP4,
        JOURNAL_FIELD_THROUGH_LSN,
        JOURNAL_FIELD_MAX_OID,
        JOURNAL_FIELD_DEFINITION,
        _JOURNAL_FIELD_MAX,
} JournalField;

#define JOURNAL_FIELD_BIT(f) (UINT32_C(1) << (f))

/* VM state as last journaled. */
typedef enum JournalVmState {
        JOURNAL_VM_DEFINED = 1,
        JOURNAL_VM_RUNNING,
        JOURNAL_VM_STOPPED,
        JOURNAL_VM_CRASHED,
        _JOURNAL_VM_STATE_MAX,
        _JOURNAL_VM_STATE_INVALID = -EINVAL,
} JournalVmState;

const char *journal_vm_state_to_string(JournalVmState s);
JournalVmState journal_vm_state_from_string(const char *s);

/* One record, decoded or to be encoded. Pointers are borrowed: from the caller when encoding, from the
 * scanned buffer when decoding. `fields` says which of the optional members are present. */
typedef struct JournalRecord {
        JournalRecordType type;
        uint16_t flags;
        uint64_t lsn;
        uint64_t synced_lsn;
        uint32_t fields;

        uint64_t vm_id;
        const char *vm_name;
        const char *backend;
        /* VM_DEFINE: the text of vms/NAME.vm as the agent wrote it, which then needs no fdatasync of its
         * own: the journal's makes it durable, and a start that finds the file missing or cut short
         * writes it again from here (state/vmdef.h: vm_def_restore()). Absent in older journals. */
        const char *definition;
        uint32_t pid;
        uint64_t start_time; /* clock ticks since boot, field 22 of /proc/PID/stat */
        uint8_t boot_id[16];
        uint32_t vm_state; /* JournalVmState */
        int32_t exit_status;
        int32_t exit_signal;
        const char *reason;

        uint64_t oid;
        uint32_t obj_kind; /* opaque to the journal; the backends define kinds */
        const char *obj_name;
        const char *obj_tag;
        const void *obj_key;
        size_t obj_key_size;
        uint64_t obj_handle;
        uint32_t obj_ifindex;

        uint32_t ip4; /* host byte order */

        uint64_t through_lsn;
        uint64_t max_oid;
} JournalRecord;

static inline bool journal_record_has(const JournalRecord *r, JournalField f) {
        return r->fields & JOURNAL_FIELD_BIT(f);
}

/* Checks that the record has the fields its type requires and no field of wrong shape. 0 or -EINVAL; if
 * ret_why is given it gets a static description of the problem. */
int journal_record_validate(const JournalRecord *r, const char **ret_why);

typedef struct JournalHeader {
        char magic[8];
        uint32_t version;
        uint32_t header_size;
        uint32_t incompat;
        uint32_t compat;
        uint64_t first_lsn;
        uint8_t salt[JOURNAL_SALT_SIZE];
        uint8_t agent_id[JOURNAL_ID_SIZE];
} JournalHeader;

void journal_header_encode(const JournalHeader *h, uint8_t out[JOURNAL_HEADER_SIZE]);
/* -EBADMSG: short, bad magic or bad CRC; -EPROTONOSUPPORT: other version or unknown incompat bits.
 * expected_magic may be NULL to accept either magic. */
int journal_header_decode(const void *buf, size_t size, const char *expected_magic, JournalHeader *ret,
                          const char **ret_why);

/* Encodes r (type, flags, fields; r->lsn and r->synced_lsn are used as given) into a newly allocated,
 * zero-padded buffer of ALIGN8 size. -EINVAL if the record does not validate, -E2BIG if it is larger
 * than JOURNAL_RECORD_MAX_SIZE. */
int journal_record_encode(const JournalRecord *r, const uint8_t salt[JOURNAL_SALT_SIZE], void **ret_buf,
                          size_t *ret_size);

/* Decodes one record at the start of buf (size = bytes available). On success returns the padded size
 * of the record (> 0) and fills *ret with pointers into buf. -EBADMSG if no valid record starts here
 * (short, bad length, bad CRC, reserved bits, bad TLVs or a record that does not validate); *ret_why
 * then says which. Does not check LSN continuity. */
int journal_record_decode(const void *buf, size_t size, const uint8_t salt[JOURNAL_SALT_SIZE],
                          JournalRecord *ret, const char **ret_why);

typedef enum JournalScanResult {
        JOURNAL_SCAN_CLEAN, /* every byte after the header is part of a valid record */
        JOURNAL_SCAN_TORN_TAIL, /* valid records, then bytes that belong to no durable record */
        JOURNAL_SCAN_CORRUPT, /* a damaged record that had been synced, with valid records after it */
        _JOURNAL_SCAN_RESULT_MAX,
} JournalScanResult;

typedef struct JournalScan {
        JournalScanResult result;
        uint64_t first_lsn;
        uint64_t last_lsn; /* of the valid prefix; first_lsn - 1 if empty */
        size_t n_records; /* in the valid prefix */
        size_t valid_end; /* offset just after the valid prefix */
        uint64_t synced_lsn; /* highest synced_lsn seen in any valid record */
        const char *why; /* what was wrong at valid_end (static string), NULL if clean */
        /* CORRUPT only: valid records found after the damage. Their LSNs are > last_lsn. */
        size_t n_after;
        uint64_t first_lsn_after;
        uint64_t last_lsn_after;
} JournalScan;

/* Called for each record of the valid prefix in order; and, with after_damage = true, for each valid record
 * found after mid-log corruption. A negative return aborts the scan with that error. */
typedef int (*JournalRecordCallback)(const JournalRecord *r, bool after_damage, void *userdata);

/* Scans the records of a journal or snapshot image: buf is the whole file, header included (already
 * decoded into h). */
int journal_scan_buffer(const void *buf, size_t size, const JournalHeader *h, JournalRecordCallback cb,
                        void *userdata, JournalScan *ret);
