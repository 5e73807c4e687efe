/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent-internal.h"
#include "agent/gc.h"
#include "util/string-table.h"

static const char *const doctor_severity_table[_DOCTOR_SEVERITY_MAX] = {
        [DOCTOR_OK] = "ok",
        [DOCTOR_WARNING] = "warning",
        [DOCTOR_ERROR] = "error",
};

DEFINE_STRING_TABLE_TO(doctor_severity, DoctorSeverity, doctor_severity_table, _DOCTOR_SEVERITY_MAX)

void doctor_report_clear(DoctorReport *r) {
        free(r->items);
        *r = (DoctorReport){};
}

__attribute__((format(printf, 4, 5))) static int add(DoctorReport *r, DoctorSeverity s, const char *topic,
                                                     const char *fmt, ...) {
        DoctorFinding *n = realloc(r->items, (r->n + 1) * sizeof(DoctorFinding));
        if (!n)
                return -ENOMEM;
        r->items = n;
        DoctorFinding *f = &r->items[r->n++];
        *f = (DoctorFinding){ .severity = s };
        snprintf(f->topic, sizeof(f->topic), "%s", topic);
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(f->message, sizeof(f->message), fmt, ap);
        va_end(ap);
        if (s == DOCTOR_WARNING)
                r->n_warnings++;
        else if (s == DOCTOR_ERROR)
                r->n_errors++;
        return 0;
}

static int check_journal(Agent *a, DoctorReport *r) {
        const JournalReport *rep = journal_report(a->journal);
        switch (journal_state(a->journal)) {
        case JOURNAL_STATE_OK:
                return add(r, DOCTOR_OK, "journal", "ok: %zu live objects, last LSN %llu",
                           live_set_n_objects(journal_live_set(a->journal)),
                           (unsigned long long) journal_last_lsn(a->journal));
        case JOURNAL_STATE_TORN_TAIL_REPAIRED:
                return add(r, DOCTOR_WARNING, "journal", "torn tail repaired at start: %s", rep->message);
        case JOURNAL_STATE_QUARANTINE:
                return add(
                        r, DOCTOR_ERROR, "journal",
                        "QUARANTINE (mid-log damage): %s; garbage collection deletes only what kernel tags "
                        "prove is ours",
                        rep->message);
        default:
                return add(r, DOCTOR_ERROR, "journal", "failed: %s", journal_error_message(a->journal));
        }
}

static int check_vms(Agent *a, DoctorReport *r) {
        size_t by_state[_VM_STATE_MAX] = {}, objects = 0, no_def = 0, n;
        _cleanup_free_ AgentVmInfo *vms = NULL;
        int k = agent_vm_list(a, &vms, &n);
        if (k < 0)
                return k;
        for (size_t i = 0; i < n; i++) {
                by_state[vms[i].state]++;
                objects += vms[i].n_objects;
                no_def += !vms[i].def;
        }
        k = add(r, DOCTOR_OK, "vms", "%zu defined, %zu running, %zu stopping, %zu stopped, %zu crashed",
                by_state[VM_STATE_DEFINED], by_state[VM_STATE_RUNNING], by_state[VM_STATE_STOPPING],
                by_state[VM_STATE_STOPPED], by_state[VM_STATE_CRASHED]);
        if (k >= 0 && no_def)
                k = add(r, DOCTOR_WARNING, "vms", "%zu VM(s) without a readable definition file in %s/vms",
                        no_def, a->cfg.state_dir);
        if (k >= 0)
                k = add(r, DOCTOR_OK, "objects",
                        "%zu kernel objects owned by VMs, %zu in all in the journal", objects,
                        live_set_n_objects(journal_live_set(a->journal)));
        return k;
}

static int check_scan(Agent *a, DoctorReport *r) {
        GcPlan p;
        GcOptions o = { .dry_run = true };
        int k = agent_gc(a, &o, &p);
        if (k < 0)
                return add(r, DOCTOR_ERROR, "scan", "cannot scan the kernel: %s", error_message(&a->error));
        size_t leaked = p.by_reason[GC_REASON_OWNED] + p.by_reason[GC_REASON_UNTRACKED];
        if (leaked)
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu object(s) of VMs that are not running are still in the kernel: `chvmctl doctor --gc` "
                        "deletes them",
                        leaked);
        if (k >= 0 && p.by_reason[GC_REASON_GONE])
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu journaled object(s) are gone from the kernel: `chvmctl doctor --gc` forgets them",
                        p.by_reason[GC_REASON_GONE]);
        if (k >= 0 && p.by_reason[GC_REASON_UNKNOWN_OWNERSHIP])
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu untagged object(s) look like a backend's own (by TAP prefix, or in its table) and are "
                        "left alone; `chvmctl doctor --gc --dry-run` names them, `chvmctl doctor --gc "
                        "--force-heuristic` would judge them by name and subnet",
                        p.by_reason[GC_REASON_UNKNOWN_OWNERSHIP]);
        if (k >= 0 && p.by_reason[GC_REASON_TAG_MISMATCH])
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu object(s) the journal names carry another tag in the kernel (name reused)",
                        p.by_reason[GC_REASON_TAG_MISMATCH]);
        if (k >= 0)
                k = add(r, DOCTOR_OK, "scan",
                        "%zu object(s) of running VMs, %zu shared, %zu of other agents",
                        p.by_reason[GC_REASON_RUNNING], p.by_reason[GC_REASON_CORE],
                        p.by_reason[GC_REASON_OTHER_AGENT]);
        gc_plan_clear(&p);
        return k;
}

static int on_finding(void *userdata, BackendSeverity s, const char *topic, const char *message) {
        DoctorSeverity sev = s == BACKEND_ERROR     ? DOCTOR_ERROR
                             : s == BACKEND_WARNING ? DOCTOR_WARNING
                                                    : DOCTOR_OK;
        return add(userdata, sev, topic && topic[0] ? topic : "backend", "%s", message ? message : "");
}

/* Each backend checks what it depends on, given its running VMs. */
static int check_backends(Agent *a, DoctorReport *r) {
        _cleanup_free_ AgentVmInfo *vms = NULL;
        size_t n_vms;
        int k = agent_vm_list(a, &vms, &n_vms);
        if (k < 0)
                return k;
        _cleanup_free_ BackendVm *running = malloc((n_vms ? n_vms : 1) * sizeof(BackendVm));
        if (!running)
                return -ENOMEM;
        for (size_t i = 0; i < a->n_backends && k >= 0; i++) {
                Backend *b = a->backends[i];
                if (!b->vtable->doctor)
                        continue;
                size_t n = 0;
                for (size_t j = 0; j < n_vms; j++)
                        if (vms[j].vmm_pid && strcmp(vms[j].backend, b->vtable->name) == 0)
                                running[n++] = (BackendVm){ .vm_id = vms[j].id,
                                                            .name = vms[j].name,
                                                            .tap = vms[j].tap };
                k = b->vtable->doctor(b, running, n, on_finding, r);
        }
        return k;
}

static int agent_doctor_(Agent *a, DoctorReport *ret);

/* One dump of the links for the whole report: the plan's scans and the TAP check read the same. */
int agent_doctor(Agent *a, DoctorReport *ret) {
        agent_links_hold(a);
        int k = agent_doctor_(a, ret);
        agent_links_release(a);
        return k;
}

static int agent_doctor_(Agent *a, DoctorReport *ret) {
        DoctorReport r = {};
        agent_refresh(a);
        int k = check_journal(a, &r);
        if (k >= 0) {
                char names[256] = "";
                for (size_t i = 0; i < a->n_backends; i++) {
                        size_t o = strlen(names);
                        snprintf(names + o, sizeof(names) - o, "%s%s", i ? " " : "",
                                 a->backends[i]->vtable->name);
                }
                k = add(&r, DOCTOR_OK, "backends", "loaded: %s", names);
        }
        if (k >= 0)
                k = check_vms(a, &r);
        if (k >= 0)
                k = check_scan(a, &r);
        if (k >= 0)
                k = check_backends(a, &r);
        if (k < 0) {
                doctor_report_clear(&r);
                return k;
        }
        *ret = r;
        return 0;
}
