/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The dispatcher: the only code that writes ownership records (tests/test-layering.sh checks that no other
 * code calls journal_append()). It validates a VM's network request, asks
 * the VM's backend for a plan, journals an INTENT for every object (synced) before the backend creates
 * anything, journals CREATED after, and on the way down RELEASE_INTENT, removal (tags re-checked), RELEASED.
 * A request that fails half-way leaves no kernel object and no live record behind. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "state/journal.h"
#include "util/error.h"
#include "util/vmname.h"

typedef struct Dispatcher Dispatcher;

typedef struct DispatcherConfig {
        Journal *journal;
        const char *agent_id;
        Backend *const *backends; /* each names its TAPs and addresses (net_params) */
        size_t n_backends;
} DispatcherConfig;

typedef struct VmNetRequest {
        uint64_t vm_id;
        const char *vm_name;
        const char *backend;
        const PortForward *ports;
        size_t n_ports;
        /* The caller journals a synced record next (the VM manager: VM_STARTED, at the spawn's gate; or the
         * releases of a failed start): the CREATED records ride on its fdatasync instead of their own. Safe
         * because nothing is announced by them: after a power loss an INTENT without CREATED is settled by
         * the object's tag in the kernel. */
        bool created_sync_later;
} VmNetRequest;

typedef struct VmNetInfo {
        char tap[16]; /* "" for backends without a TAP */
        uint32_t ip4; /* 0 if the backend gives no address */
        uint32_t gateway; /* with ip4: the guest's gateway and prefix length */
        uint8_t prefixlen;
        bool kernel_ip_arg; /* with ip4: the backend wants ip= on a --kernel guest's command line */
        uint8_t mac[6];
} VmNetInfo;

int dispatcher_new(const DispatcherConfig *cfg, Dispatcher **ret);
Dispatcher *dispatcher_free(Dispatcher *d);

/* The last failure, naming the VM or object and the cause ("port 8080/tcp already forwarded to VM web"). */
const char *dispatcher_error(const Dispatcher *d);
const Error *dispatcher_last_error(const Dispatcher *d);

/* The VMs' own records, synced unless said otherwise: the agent defines and undefines VMs, the VM manager
 * records each hypervisor it runs (before it runs: the spawn's gate) or adopts, and each exit. 0, or the
 * journal's -errno with dispatcher_error(). */
/* sync false: a synced record follows before anything is answered (RunVM: its start's intents).
 * definition: the text of vms/NAME.vm, written unsynced (at most JOURNAL_DEFINITION_MAX bytes), or NULL for
 * a file synced on its own. */
int dispatcher_define_vm(Dispatcher *d, uint64_t vm_id, const char *name, const char *backend,
                         const char *definition, bool sync);
int dispatcher_undefine_vm(Dispatcher *d, uint64_t vm_id);
int dispatcher_vm_started(Dispatcher *d, uint64_t vm_id, uint32_t pid, uint64_t start_time,
                          const uint8_t boot_id[16]);
typedef struct VmExit {
        JournalVmState state; /* stopped or crashed */
        const char *reason; /* "exited with status 1", ... */
        int exit_status, exit_signal; /* -1: not known */
} VmExit;
/* sync false: the caller syncs once for several with dispatcher_sync() (group commit). */
int dispatcher_vm_exited(Dispatcher *d, uint64_t vm_id, const VmExit *e, bool sync);
int dispatcher_sync(Dispatcher *d);

/* A VM's network in one call, for a caller with no record of its own to sync with the intents (the VM
 * manager uses the two steps below). -EINVAL bad request, -ENOENT unknown backend or a VM the journal does
 * not define with this name and backend, -EADDRINUSE a host port is taken, -EBUSY the VM's network
 * is already up, -EADDRNOTAVAIL no free address; or the backend's/kernel's error. */
int vm_net_up(Dispatcher *d, const VmNetRequest *req, VmNetInfo *ret);

/* vm_net_up() in two steps, for a caller with a record of its own that must be durable before the kernel
 * changes too (the VM manager: VM_STARTED of the hypervisor it forked and holds at the gate), so that one
 * fdatasync covers both. vm_net_prepare() does everything vm_net_up() does up to the intents, appended but
 * not synced, and fills *ret as vm_net_up() would; the caller appends its record and syncs; vm_net_apply()
 * then makes the objects and appends CREATED, unsynced (the caller syncs before it answers). After a
 * successful prepare exactly one of vm_net_apply() (which undoes a failed apply itself, as vm_net_up()
 * does) and vm_net_abandon() (nothing made: ABORTED for each intent, synced) follows; each empties *p. */
typedef struct VmNetPending {
        bool prepared;
        uint64_t vm_id;
        size_t backend; /* index into the dispatcher's backends */
        char vm_name[VM_NAME_MAX + 1];
        bool ip_new; /* the address was allocated by this bring-up */
        VmNetInfo info;
        ResourceSet plan;
} VmNetPending;
int vm_net_prepare(Dispatcher *d, const VmNetRequest *req, VmNetPending *p, VmNetInfo *ret);
int vm_net_apply(Dispatcher *d, VmNetPending *p);
int vm_net_abandon(Dispatcher *d, VmNetPending *p);
void vm_net_pending_clear(VmNetPending *p);
/* Idempotent: a VM without objects is fine. */
int vm_net_down(Dispatcher *d, uint64_t vm_id);
/* Many VMs at once (agent shutdown of a host, garbage collection): each backend removes its share in one
 * operation, e.g. all TAPs with one grouped RTM_DELLINK. */
int vm_net_down_many(Dispatcher *d, const uint64_t *vm_ids, size_t n);

/* After a restart: objects with an INTENT and no CREATED are looked up by their tag (found: recorded as
 * created, then the VM's whole half-made network is released; absent: ABORTED); objects with a
 * RELEASE_INTENT are removed again. */
int dispatcher_recover(Dispatcher *d);

/* The loaded backend `name`'s TAP prefix and address pool, or -ENOENT. */
int dispatcher_backend_params(const Dispatcher *d, const char *name, BackendNetParams *ret);
/* Whether a new VM of backend `name` may forward these host ports (the backend's check_ports): 0, or
 * -EADDRINUSE (a port the host keeps) and others with dispatcher_error(). */
int dispatcher_check_ports(Dispatcher *d, const char *backend, const char *vm_name, const PortForward *ports,
                           size_t n);
/* Whether the loaded backend `name` forwards host ports: 1 yes, 0 no, -ENOENT not loaded. */
int dispatcher_backend_forwards_ports(Dispatcher *d, const char *name);

/* The guest address allocated to a VM (host byte order), or -ENOENT. */
int dispatcher_vm_ip(const Dispatcher *d, uint64_t vm_id, uint32_t *ret);

/* The derived names and addresses (exposed for tests). */
void dispatcher_tap_name(const char *prefix, uint64_t vm_id, char ret[16]);
void dispatcher_mac(uint64_t vm_id, uint8_t ret[6]);
