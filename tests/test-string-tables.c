/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Every enum <-> string table of the tree (made with util/string-table.h; tests/test-layering.sh checks
 * that this file lists each of them): every value has one name, no two values share one, a name reads back
 * as its value, and what is not in the table has no name or value. */

#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "agent/agent.h"
#include "agent/gc.h"
#include "backends/backend.h"
#include "backends/dhcp/dhcp4.h"
#include "backends/local/local-config.h"
#include "backends/nl/nft.h"
#include "state/journal-format.h"
#include "state/journal.h"
#include "state/liveset.h"
#include "util/error.h"
#include "util/macro.h"
#include "util/vmkind.h"
#include "vmm/hypervisor.h"

typedef struct Table {
        const char *name;
        int max;
        int first; /* the first value with a name (some enums keep 0 for "none") */
        const char *(*to)(int);
        int (*from)(const char *); /* NULL: the table is one way */
} Table;

/* Adapters with one signature for all (the enums differ only in type). */
#define TO(n, T)                             \
        static const char *n##_to(int x) {   \
                return n##_to_string((T) x); \
        }
#define FROM(n)                                  \
        static int n##_from(const char *s) {     \
                return (int) n##_from_string(s); \
        }
/* One table a line: the macros end in a function body, without a semicolon. */
/* clang-format off */
TO(vm_state, VmState) FROM(vm_state)
TO(doctor_severity, DoctorSeverity)
TO(gc_action, GcAction)
TO(gc_reason, GcReason)
TO(dhcp4_type, Dhcp4Type)
TO(resource_kind, ResourceKind) FROM(resource_kind)
TO(table_owner, TableOwner) FROM(table_owner)
TO(nft_elem_kind, NftElemKind)
TO(vmm_accel, VmmAccel) FROM(vmm_accel)
TO(live_object_state, LiveObjectState) FROM(live_object_state)
TO(journal_record_type, JournalRecordType) FROM(journal_record_type)
TO(journal_vm_state, JournalVmState) FROM(journal_vm_state)
TO(journal_state, JournalState) FROM(journal_state)
TO(hypervisor_kind, HypervisorKind) FROM(hypervisor_kind)
TO(error_kind, ErrorKind)
/* clang-format on */

#define TABLE(n, max, first, from) \
        { #n, max, first, n##_to, from }
                                                                                        static const Table
        tables[] = {
                TABLE(vm_state, _VM_STATE_MAX, 0, vm_state_from),
                TABLE(doctor_severity, _DOCTOR_SEVERITY_MAX, 0, NULL),
                TABLE(gc_action, _GC_ACTION_MAX, 0, NULL),
                TABLE(gc_reason, _GC_REASON_MAX, 0, NULL),
                TABLE(dhcp4_type, _DHCP4_TYPE_MAX, 1, NULL),
                TABLE(resource_kind, _RESOURCE_KIND_MAX, 1, resource_kind_from),
                TABLE(table_owner, _TABLE_OWNER_MAX, 0, table_owner_from),
                TABLE(nft_elem_kind, _NFT_ELEM_KIND_MAX, 0, NULL),
                TABLE(vmm_accel, _VMM_ACCEL_MAX, 0, vmm_accel_from),
                TABLE(live_object_state, _LIVE_OBJECT_STATE_MAX, 1, live_object_state_from),
                TABLE(journal_record_type, _JOURNAL_RECORD_TYPE_MAX, 1, journal_record_type_from),
                TABLE(journal_vm_state, _JOURNAL_VM_STATE_MAX, 1, journal_vm_state_from),
                TABLE(journal_state, _JOURNAL_STATE_MAX, 0, journal_state_from),
                TABLE(hypervisor_kind, _HYPERVISOR_KIND_MAX, 0, hypervisor_kind_from),
                TABLE(error_kind, _ERROR_KIND_MAX, 0, NULL),
        };

Test(string_tables, every_value_one_name_and_back) {
        size_t names = 0;
        for (size_t t = 0; t < ELEMENTSOF(tables); t++) {
                const Table *tb = &tables[t];
                cr_assert_gt(tb->max, tb->first, "%s: an empty table", tb->name);
                for (int x = 0; x < tb->max; x++) {
                        const char *s = tb->to(x);
                        if (x < tb->first) {
                                cr_assert_null(s, "%s: %d is below the first value and has a name", tb->name,
                                               x);
                                continue;
                        }
                        cr_assert(s && s[0], "%s: value %d has no name", tb->name, x);
                        names++;
                        for (int y = tb->first; y < x; y++)
                                cr_assert_str_neq(s, tb->to(y), "%s: %d and %d are both \"%s\"", tb->name, y,
                                                  x, s);
                        if (tb->from)
                                cr_assert_eq(tb->from(s), x, "%s: \"%s\" reads back as %d, not %d", tb->name,
                                             s, tb->from(s), x);
                }
                cr_assert_null(tb->to(tb->max), "%s: _MAX has a name", tb->name);
                cr_assert_null(tb->to(-1), "%s: -1 has a name", tb->name);
                cr_assert_null(tb->to(-EINVAL), "%s: _INVALID has a name", tb->name);
                if (tb->from) {
                        cr_assert_eq(tb->from(NULL), -EINVAL, "%s: NULL", tb->name);
                        cr_assert_eq(tb->from(""), -EINVAL, "%s: \"\"", tb->name);
                        cr_assert_eq(tb->from("no such name"), -EINVAL, "%s", tb->name);
                        const char *first = tb->to(tb->first);
                        char padded[64];
                        snprintf(padded, sizeof(padded), "%s ", first);
                        cr_assert_eq(tb->from(padded), -EINVAL, "%s: \"%s\" with a blank after it", tb->name,
                                     first);
                }
        }
        cr_log_info("%zu tables, %zu names", ELEMENTSOF(tables), names);
        cr_assert_geq(names, 50, "only %zu names in %zu tables", names, ELEMENTSOF(tables));
}
