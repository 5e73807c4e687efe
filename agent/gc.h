/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Garbage collection (`chvmctl doctor --gc`): for every object the backends' scans find and every object
 * the ownership journal says the agent owns, one decision with a reason, then the deletes.
 *
 *   delete   tagged with our agent id and its VM is not running (journaled: released through the
 *            dispatcher; not journaled, e.g. after the journal was lost: only when no live hypervisor of
 *            that VM id exists), or — with `heuristic` — untagged but looking like ours and used by no
 *            running VM (TAPs by the name prefix; elements in our own table pointing into our subnet)
 *   forget   journaled, gone from the kernel: the journal entry is released
 *   skip     running | unknown ownership | other agent | tag mismatch | quarantine | core
 *
 * Objects tagged by another agent id are never deleted, in any mode. In quarantine (mid-log journal
 * damage) only objects whose kernel tag proves them ours, of VMs with no live hypervisor, are deleted. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/agent.h"
#include "backends/backend.h"

typedef enum GcAction {
        GC_DELETE,
        GC_FORGET,
        GC_SKIP,
        _GC_ACTION_MAX,
        _GC_ACTION_INVALID = -EINVAL,
} GcAction;

const char *gc_action_to_string(GcAction a);

/* The skip reasons, and the categories delete/forget decisions are counted under. */
typedef enum GcReason {
        GC_REASON_OWNED, /* delete: ours, its VM is not running */
        GC_REASON_UNTRACKED, /* delete: tagged ours, not in the journal, no live hypervisor */
        GC_REASON_HEURISTIC, /* delete: untagged, --force-heuristic */
        GC_REASON_GONE, /* forget */
        GC_REASON_RUNNING,
        GC_REASON_UNKNOWN_OWNERSHIP,
        GC_REASON_OTHER_AGENT,
        GC_REASON_TAG_MISMATCH,
        GC_REASON_QUARANTINE,
        GC_REASON_CORE,
        _GC_REASON_MAX,
        _GC_REASON_INVALID = -EINVAL,
} GcReason;

/* "owned", ..., "running", "unknown ownership", "other agent", "tag mismatch", "quarantine", "core" */
const char *gc_reason_to_string(GcReason r);

typedef struct GcDecision {
        GcAction action;
        GcReason reason;
        ResourceKind kind;
        char name[96]; /* link name, or the element ("tcp 8080 -> 192.168.200.2:80") */
        char vm[40]; /* VM name, its id in hex when unknown, "" when none */
        char detail[256]; /* the reason as a sentence: "owned by VM web (crashed)" */
        char tag[CHVM_TAG_MAX + 1]; /* the kernel object's tag ("" if untagged or not found) */
        bool failed; /* a delete that did not succeed */
        char error[256];
        /* for carrying it out */
        Resource res;
        Backend *backend;
        uint64_t vm_id;
        bool journaled;
} GcDecision;

typedef struct GcPlan {
        GcDecision *items;
        size_t n, allocated;
        size_t count[_GC_ACTION_MAX];
        size_t by_reason[_GC_REASON_MAX];
        size_t n_failed;
        bool quarantine;
        bool dry_run, heuristic;
} GcPlan;

typedef struct GcOptions {
        bool dry_run;
        bool heuristic;
} GcOptions;

/* Plans (and unless dry_run, first refreshes VM states and then carries out) a collection. Returns 0 with
 * the plan, deletions that failed counted in n_failed and each marked with its error; or -errno when no
 * plan could be made (agent_error() says why), with nothing in *ret. */
int agent_gc(Agent *a, const GcOptions *o, GcPlan *ret);
void gc_plan_clear(GcPlan *p);

/* `chvmctl doctor`: the agent's health, one finding per line. */
typedef enum DoctorSeverity {
        DOCTOR_OK,
        DOCTOR_WARNING,
        DOCTOR_ERROR,
        _DOCTOR_SEVERITY_MAX,
} DoctorSeverity;

const char *doctor_severity_to_string(DoctorSeverity s);

typedef struct DoctorFinding {
        DoctorSeverity severity;
        char topic[32]; /* "journal", "backends", "vms", "objects", "scan", "ip_forward", "firewall", "links"
                         */
        char message[512];
} DoctorFinding;

typedef struct DoctorReport {
        DoctorFinding *items;
        size_t n;
        size_t n_warnings, n_errors;
} DoctorReport;

/* Journal state, backends, VMs by state, owned objects, what a dry-run collection would do, ip_forward,
 * drop policies in other tables, running VMs' TAPs off their bridge. Changes nothing. */
int agent_doctor(Agent *a, DoctorReport *ret);
void doctor_report_clear(DoctorReport *r);
