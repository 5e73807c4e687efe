/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The journal's on-disk format: headers, record encoding, TLV parsing and the scanner's verdicts, all
 * without files. */

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "state/journal-format.h"
#include "util/crc32c.h"
#include "util/macro.h"

static const uint8_t salt[JOURNAL_SALT_SIZE] = { 9, 8, 7, 6, 5, 4, 3, 2, 1 };

#define F(x) JOURNAL_FIELD_BIT(JOURNAL_FIELD_##x)

static JournalRecord full_intent(void) {
        static const uint8_t key[] = { 6, 0x1f, 0x90, 0xc0, 0xa8, 0xc8, 2 };
        return (JournalRecord){
                .type = JOURNAL_INTENT,
                .flags = 3,
                .lsn = 17,
                .synced_lsn = 15,
                .fields = F(OID) | F(VM_ID) | F(OBJ_KIND) | F(OBJ_NAME) | F(OBJ_TAG) | F(OBJ_KEY) |
                          F(OBJ_HANDLE) | F(OBJ_IFINDEX),
                .oid = 99,
                .vm_id = 0x1122334455667788,
                .obj_kind = 4,
                .obj_name = "portfwd4",
                .obj_tag = "chvm1:c41e5500-1234-4000-8000-deadbeef0001:1122334455667788:fwd",
                .obj_key = key,
                .obj_key_size = sizeof(key),
                .obj_handle = 1234567,
                .obj_ifindex = 42,
        };
}

Test(journal_format, string_tables) {
        for (int t = 1; t < _JOURNAL_RECORD_TYPE_MAX; t++)
                cr_assert_eq(journal_record_type_from_string(
                                     journal_record_type_to_string((JournalRecordType) t)),
                             t);
        cr_assert_null(journal_record_type_to_string(0));
        cr_assert_null(journal_record_type_to_string(_JOURNAL_RECORD_TYPE_MAX));
        cr_assert_eq(journal_record_type_from_string("NOPE"), _JOURNAL_RECORD_TYPE_INVALID);
        for (int s = 1; s < _JOURNAL_VM_STATE_MAX; s++)
                cr_assert_eq(journal_vm_state_from_string(journal_vm_state_to_string((JournalVmState) s)),
                             s);
        cr_assert_eq(journal_vm_state_from_string("running"), JOURNAL_VM_RUNNING);
}

Test(journal_format, encode_decode_round_trip) {
        JournalRecord in = full_intent(), out;
        void *buf;
        size_t size;

        cr_assert_eq(journal_record_encode(&in, salt, &buf, &size), 0);
        cr_assert_eq(size % 8, 0);
        cr_assert_eq(journal_record_decode(buf, size, salt, &out, NULL), (int) size);
        cr_assert_eq(out.type, in.type);
        cr_assert_eq(out.flags, 3);
        cr_assert_eq(out.lsn, 17);
        cr_assert_eq(out.synced_lsn, 15);
        cr_assert_eq(out.fields, in.fields);
        cr_assert_eq(out.oid, 99);
        cr_assert_eq(out.vm_id, in.vm_id);
        cr_assert_eq(out.obj_kind, 4);
        cr_assert_str_eq(out.obj_name, "portfwd4");
        cr_assert_str_eq(out.obj_tag, in.obj_tag);
        cr_assert_eq(out.obj_key_size, in.obj_key_size);
        cr_assert_arr_eq(out.obj_key, in.obj_key, in.obj_key_size);
        cr_assert_eq(out.obj_handle, 1234567);
        cr_assert_eq(out.obj_ifindex, 42);

        /* Decoding needs the salt it was written with. */
        uint8_t other[JOURNAL_SALT_SIZE] = { 1 };
        const char *why = NULL;
        cr_assert_eq(journal_record_decode(buf, size, other, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "record checksum mismatch");
        /* And all of it. */
        cr_assert_eq(journal_record_decode(buf, size - 8, salt, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "record extends past the end of the file");
        free(buf);
}

Test(journal_format, every_type_round_trips) {
        uint8_t boot[16] = { 0xaa, 0xbb };
        JournalRecord recs[] = {
                { .type = JOURNAL_VM_DEFINE,
                  .fields = F(VM_ID) | F(VM_NAME) | F(BACKEND),
                  .vm_id = 1,
                  .vm_name = "web",
                  .backend = "local" },
                { .type = JOURNAL_VM_UNDEFINE, .fields = F(VM_ID), .vm_id = 1 },
                { .type = JOURNAL_VM_STARTED,
                  .fields = F(VM_ID) | F(PID) | F(START_TIME) | F(BOOT_ID),
                  .vm_id = 1,
                  .pid = 4242,
                  .start_time = 987654321 },
                { .type = JOURNAL_VM_EXITED,
                  .fields = F(VM_ID) | F(VM_STATE) | F(EXIT_SIGNAL) | F(REASON),
                  .vm_id = 1,
                  .vm_state = JOURNAL_VM_CRASHED,
                  .exit_signal = 9,
                  .reason = "killed by signal 9" },
                { .type = JOURNAL_VM_EXITED,
                  .fields = F(VM_ID) | F(VM_STATE) | F(EXIT_STATUS),
                  .vm_id = 1,
                  .vm_state = JOURNAL_VM_STOPPED,
                  .exit_status = -1 },
                { .type = JOURNAL_CREATED, .fields = F(OID) | F(OBJ_IFINDEX), .oid = 5, .obj_ifindex = 7 },
                { .type = JOURNAL_ABORTED, .fields = F(OID), .oid = 5 },
                { .type = JOURNAL_RELEASE_INTENT, .fields = F(OID), .oid = 5 },
                { .type = JOURNAL_RELEASED, .fields = F(OID), .oid = 5 },
                { .type = JOURNAL_IP_ALLOC, .fields = F(VM_ID) | F(IP4), .vm_id = 1, .ip4 = 0xc0a8c802 },
                { .type = JOURNAL_IP_FREE, .fields = F(IP4), .ip4 = 0xc0a8c802 },
                { .type = JOURNAL_CHECKPOINT,
                  .fields = F(THROUGH_LSN) | F(MAX_OID),
                  .through_lsn = 1000,
                  .max_oid = 77 },
        };
        memcpy(recs[2].boot_id, boot, 16);

        for (size_t i = 0; i < ELEMENTSOF(recs); i++) {
                void *a, *b;
                size_t as, bs;
                JournalRecord out;
                recs[i].lsn = i + 1;
                cr_assert_eq(journal_record_encode(&recs[i], salt, &a, &as), 0, "record %zu", i);
                cr_assert_gt(journal_record_decode(a, as, salt, &out, NULL), 0, "record %zu", i);
                /* Encoding what was decoded gives the same bytes. */
                cr_assert_eq(journal_record_encode(&out, salt, &b, &bs), 0);
                cr_assert_eq(as, bs);
                cr_assert_arr_eq(a, b, as, "record %zu (%s)", i,
                                 journal_record_type_to_string(recs[i].type));
                free(a);
                free(b);
        }
}

Test(journal_format, validation) {
        JournalRecord r;
        const char *why;
        void *buf;
        size_t size;

        r = full_intent();
        r.fields &= ~F(OBJ_TAG);
        cr_assert_eq(journal_record_validate(&r, &why), -EINVAL);
        cr_assert_str_eq(why, "required field missing");
        cr_assert_eq(journal_record_encode(&r, salt, &buf, &size), -EINVAL);

        r = full_intent();
        r.oid = 0;
        cr_assert_eq(journal_record_validate(&r, &why), -EINVAL);

        r = (JournalRecord){ .type = JOURNAL_VM_EXITED,
                             .fields = F(VM_ID) | F(VM_STATE),
                             .vm_id = 1,
                             .vm_state = JOURNAL_VM_DEFINED };
        cr_assert_eq(journal_record_validate(&r, &why), -EINVAL);

        r = (JournalRecord){ .type = 0 };
        cr_assert_eq(journal_record_validate(&r, &why), -EINVAL);
        cr_assert_str_eq(why, "unknown record type");

        r = (JournalRecord){ .type = JOURNAL_VM_DEFINE,
                             .fields = F(VM_ID) | F(VM_NAME) | F(BACKEND),
                             .vm_id = 1,
                             .vm_name = NULL,
                             .backend = "local" };
        cr_assert_eq(journal_record_validate(&r, &why), -EINVAL);

        static uint8_t huge[70000];
        r = full_intent();
        r.obj_key = huge;
        r.obj_key_size = sizeof(huge);
        cr_assert_eq(journal_record_encode(&r, salt, &buf, &size), -E2BIG);
}

/* Rebuilds an encoded record with extra raw bytes in its payload and a fresh, valid CRC. */
static size_t splice_payload(const void *rec, size_t rec_len, const void *extra, size_t extra_len,
                             uint8_t *out) {
        size_t length = rec_len + extra_len;
        size_t padded = ALIGN8(length);
        memset(out, 0, padded);
        memcpy(out, rec, rec_len);
        memcpy(out + rec_len, extra, extra_len);
        unaligned_write_le32(out + 4, (uint32_t) length);
        unaligned_write_le32(
                out, crc32c_mask(crc32c_update(crc32c_update(0, salt, sizeof(salt)), out + 4, padded - 4)));
        return padded;
}

Test(journal_format, tlv_parsing) {
        JournalRecord in = { .type = JOURNAL_ABORTED, .fields = F(OID), .oid = 5, .lsn = 1 }, out;
        void *buf;
        size_t size;
        uint8_t img[256];
        const char *why;

        cr_assert_eq(journal_record_encode(&in, salt, &buf, &size), 0);
        size_t len = unaligned_read_le32((uint8_t *) buf + 4);

        /* An unknown field is skipped. */
        uint8_t unknown[] = { 200, 0, 3, 0, 'x', 'y', 'z' };
        size_t n = splice_payload(buf, len, unknown, sizeof(unknown), img);
        cr_assert_eq(journal_record_decode(img, n, salt, &out, &why), (int) n);
        cr_assert_eq(out.fields, F(OID));
        cr_assert_eq(out.oid, 5);

        /* A field given twice is not. */
        uint8_t dup[] = { JOURNAL_FIELD_OID, 0, 8, 0, 6, 0, 0, 0, 0, 0, 0, 0 };
        n = splice_payload(buf, len, dup, sizeof(dup), img);
        cr_assert_eq(journal_record_decode(img, n, salt, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "field given twice");

        /* A wrong-sized integer. */
        uint8_t shortint[] = { JOURNAL_FIELD_PID, 0, 2, 0, 1, 2 };
        n = splice_payload(buf, len, shortint, sizeof(shortint), img);
        cr_assert_eq(journal_record_decode(img, n, salt, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "field with the wrong size");

        /* A string without its NUL, or with one inside. */
        uint8_t nonul[] = { JOURNAL_FIELD_REASON, 0, 3, 0, 'a', 'b', 'c' };
        n = splice_payload(buf, len, nonul, sizeof(nonul), img);
        cr_assert_eq(journal_record_decode(img, n, salt, &out, &why), -EBADMSG);
        uint8_t midnul[] = { JOURNAL_FIELD_REASON, 0, 3, 0, 'a', 0, 0 };
        n = splice_payload(buf, len, midnul, sizeof(midnul), img);
        cr_assert_eq(journal_record_decode(img, n, salt, &out, &why), -EBADMSG);

        /* A field running past the record. */
        uint8_t overrun[] = { JOURNAL_FIELD_REASON, 0, 50, 0, 'a' };
        n = splice_payload(buf, len, overrun, sizeof(overrun), img);
        cr_assert_eq(journal_record_decode(img, n, salt, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "field extends past the record");

        /* Non-zero padding, even with a matching CRC. */
        uint8_t pad[] = { 200, 0, 0, 0, 0 };
        n = splice_payload(buf, len, pad, sizeof(pad), img);
        img[n - 1] = 1;
        unaligned_write_le32(
                img, crc32c_mask(crc32c_update(crc32c_update(0, salt, sizeof(salt)), img + 4, n - 4)));
        cr_assert_eq(journal_record_decode(img, n, salt, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "record padding not zero");
        free(buf);
}

Test(journal_format, header) {
        JournalHeader h = { .version = JOURNAL_VERSION, .first_lsn = 5 }, out;
        uint8_t buf[JOURNAL_HEADER_SIZE];
        const char *why;

        memcpy(h.magic, JOURNAL_MAGIC, 8);
        memcpy(h.salt, salt, sizeof(salt));
        h.agent_id[3] = 0x33;
        journal_header_encode(&h, buf);
        cr_assert_eq(journal_header_decode(buf, sizeof(buf), JOURNAL_MAGIC, &out, NULL), 0);
        cr_assert_eq(out.first_lsn, 5);
        cr_assert_arr_eq(out.salt, salt, sizeof(salt));
        cr_assert_eq(out.agent_id[3], 0x33);
        cr_assert_eq(journal_header_decode(buf, sizeof(buf), NULL, &out, NULL), 0);

        cr_assert_eq(journal_header_decode(buf, sizeof(buf), SNAPSHOT_MAGIC, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "bad magic");
        cr_assert_eq(journal_header_decode(buf, sizeof(buf) - 1, JOURNAL_MAGIC, &out, &why), -EBADMSG);

        h.version = 2;
        journal_header_encode(&h, buf);
        cr_assert_eq(journal_header_decode(buf, sizeof(buf), JOURNAL_MAGIC, &out, &why), -EPROTONOSUPPORT);
        h.version = JOURNAL_VERSION;
        h.compat = 0xff; /* unknown compatible bits are fine */
        journal_header_encode(&h, buf);
        cr_assert_eq(journal_header_decode(buf, sizeof(buf), JOURNAL_MAGIC, &out, &why), 0);
        buf[30] ^= 1;
        cr_assert_eq(journal_header_decode(buf, sizeof(buf), JOURNAL_MAGIC, &out, &why), -EBADMSG);
        cr_assert_str_eq(why, "header checksum mismatch");
}

/* An image of n ABORTED records (no live-set meaning needed here) with the given synced_lsn per record. */
static uint8_t *image(size_t n, const uint64_t *synced, size_t *ret_size, size_t *offsets,
                      JournalHeader *h) {
        *h = (JournalHeader){ .version = JOURNAL_VERSION, .first_lsn = 1 };
        memcpy(h->magic, JOURNAL_MAGIC, 8);
        memcpy(h->salt, salt, sizeof(salt));
        uint8_t *img = malloc(JOURNAL_HEADER_SIZE + n * 64);
        journal_header_encode(h, img);
        size_t off = JOURNAL_HEADER_SIZE;
        for (size_t i = 0; i < n; i++) {
                JournalRecord r = { .type = JOURNAL_ABORTED,
                                    .fields = F(OID),
                                    .oid = i + 1,
                                    .lsn = i + 1,
                                    .synced_lsn = synced[i] };
                void *b;
                size_t s;
                cr_assert_eq(journal_record_encode(&r, salt, &b, &s), 0);
                offsets[i] = off;
                memcpy(img + off, b, s);
                off += s;
                free(b);
        }
        *ret_size = off;
        return img;
}

Test(journal_format, scan_verdicts) {
        uint64_t synced_each[6] = { 0, 1, 2, 3, 4, 5 }, group[6] = { 0, 1, 2, 2, 2, 2 };
        size_t offs[6], size;
        JournalHeader h;
        JournalScan s;

        uint8_t *img = image(6, synced_each, &size, offs, &h);
        cr_assert_eq(journal_scan_buffer(img, size, &h, NULL, NULL, &s), 0);
        cr_assert_eq(s.result, JOURNAL_SCAN_CLEAN);
        cr_assert_eq(s.n_records, 6);
        cr_assert_eq(s.last_lsn, 6);
        cr_assert_eq(s.synced_lsn, 5);

        /* Damage in record 4 (LSN 4); record 5 says LSN 4 had been synced: corruption. */
        img[offs[3] + 20] ^= 1;
        cr_assert_eq(journal_scan_buffer(img, size, &h, NULL, NULL, &s), 0);
        cr_assert_eq(s.result, JOURNAL_SCAN_CORRUPT);
        cr_assert_eq(s.n_records, 3);
        cr_assert_eq(s.valid_end, offs[3]);
        cr_assert_eq(s.n_after, 2);
        cr_assert_eq(s.first_lsn_after, 5);
        cr_assert_eq(s.last_lsn_after, 6);
        free(img);

        /* The same damage when LSN 3..6 were one unsynced group: a torn tail. */
        img = image(6, group, &size, offs, &h);
        img[offs[3] + 20] ^= 1;
        cr_assert_eq(journal_scan_buffer(img, size, &h, NULL, NULL, &s), 0);
        cr_assert_eq(s.result, JOURNAL_SCAN_TORN_TAIL);
        cr_assert_eq(s.n_records, 3);
        cr_assert_eq(s.n_after, 0);
        free(img);

        /* Trailing zeros (a preallocated or torn page) are a torn tail. */
        img = image(6, synced_each, &size, offs, &h);
        uint8_t *big = calloc(1, size + 4096);
        memcpy(big, img, size);
        cr_assert_eq(journal_scan_buffer(big, size + 4096, &h, NULL, NULL, &s), 0);
        cr_assert_eq(s.result, JOURNAL_SCAN_TORN_TAIL);
        cr_assert_eq(s.n_records, 6);
        cr_assert_eq(s.valid_end, size);
        free(big);
        free(img);
}
