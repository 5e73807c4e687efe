/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Running VMs: network up through the dispatcher, hypervisor spawned with a pidfd and watched in the
 * sd-event loop. When the pidfd fires — guest poweroff, crash, kill -9, any cause — the VM's network is
 * torn down at once and the exit reason journaled ("exited with status N", "killed by signal N"). */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "agent/dispatcher.h"
#include "backends/backend.h"
#include "state/journal.h"
#include "vmm/hypervisor.h"
#include "vmm/taskstats.h"

typedef struct VmManager VmManager;

#define VMM_DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Called after a VM's hypervisor is gone and its network torn down (whatever the cause: exit, crash,
 * stop, kill, found dead at adoption). `state` is what was journaled (stopped or crashed), `reason` the
 * exit reason; `error` is 0, or the failure of the teardown or of the journal write, described in
 * vm_manager_error(). */
typedef void (*VmExitCallback)(VmManager *m, uint64_t vm_id, const char *name, JournalVmState state,
                               const char *reason, int error, bool before_ready, void *userdata);
/* Called once the hypervisor of a VM started by vm_manager_start() answers on its API as its kind says
 * (HypervisorVTable.ready). One that exits first (or is killed for not answering within start_timeout_sec)
 * gets the exit callback instead, with before_ready true: its start failed. */
typedef void (*VmReadyCallback)(VmManager *m, uint64_t vm_id, const char *name, void *userdata);
/* The hypervisor kind of a VM the journal says is running, for adoption (its stop method). */
typedef HypervisorKind (*VmKindLookup)(uint64_t vm_id, void *userdata);

typedef struct VmManagerConfig {
        sd_event *event;
        Journal *journal;
        Dispatcher *dispatcher;
        const char *runtime_dir; /* vms/<id>/ holds the api socket and the logs */
        HypervisorKind hypervisor;
        const char *binary; /* NULL: the kind's default */
        VmmAccel accel; /* resolved: kvm or tcg */
        /* The hypervisors' environment is VMM_DEFAULT_PATH, these "NAME=VALUE" strings ([vmm] environment)
         * and the variables of the agent's own environment these names match ([vmm] pass_environment; a
         * name ending in '*' matches by prefix), nothing else: not the agent's NOTIFY_SOCKET, WATCHDOG_*,
         * credentials. Both NULL-terminated, may be NULL. */
        const char *const *environment;
        const char *const *pass_environment;
        VmExitCallback on_exit; /* may be NULL */
        VmReadyCallback on_ready; /* may be NULL */
        unsigned start_timeout_sec; /* [vmm] start_timeout; 0: 30 */
        VmKindLookup kind_of; /* may be NULL: every adopted VM is of kind `hypervisor` */
        /* Exit statuses of adopted hypervisors (not our children); NULL where taskstats notifications do
         * not reach us: their exits are then "exit status unknown". The caller drains it from the loop. */
        TaskstatsListener *taskstats;
        void *userdata;
} VmManagerConfig;

typedef struct VmRequest {
        uint64_t vm_id;
        const char *name;
        const char *backend;
        const char *kernel; /* NULL: boot the first disk through the firmware */
        const char *firmware; /* NULL: the kind's default */
        const char *initrd;
        const char *cmdline;
        const char *const *disks;
        size_t n_disks;
        /* The VM's kind; binary NULL: the config's binary when the kind is the config's, else the kind's
         * default looked up in PATH. */
        HypervisorKind hypervisor;
        const char *binary;
        unsigned cpus;
        uint64_t memory_mib;
        const PortForward *ports;
        size_t n_ports;
} VmRequest;

int vm_manager_new(const VmManagerConfig *cfg, VmManager **ret);
VmManager *vm_manager_free(VmManager *m);
const char *vm_manager_error(const VmManager *m);
const Error *vm_manager_last_error(const VmManager *m);

/* What a start made: the VM's network (its TAP, address) and its hypervisor's PID. */
typedef struct VmStarted {
        VmNetInfo net;
        pid_t pid;
        bool ready; /* up already (its kind has no readiness conversation); else on_ready comes later */
} VmStarted;

/* Network up, hypervisor spawned and watched; on any failure nothing stays behind. ret may be NULL. The
 * hypervisor then counts as starting until its API answers (VmManagerConfig.on_ready). */
int vm_manager_start(VmManager *m, const VmRequest *req, VmStarted *ret);
/* What vm_manager_start() would refuse about req's hypervisor arguments (cloud-hypervisor's option syntax,
 * the command line's length, ...), found without starting anything: -EINVAL with vm_manager_error(). */
int vm_manager_validate(VmManager *m, const VmRequest *req);
/* SIGKILL. A hypervisor that is gone already is success; the teardown runs from the exit event (or at
 * once when the VM is not running). */
int vm_manager_kill(VmManager *m, uint64_t vm_id);
/* Graceful stop: the hypervisor's own shutdown (cloud-hypervisor vm.power-button, QEMU QMP
 * system_powerdown), then SIGTERM after timeout_sec, then SIGKILL after another timeout_sec. The exit event
 * tears the network down as for any exit; a VM that is not running just has its network taken down. */
int vm_manager_stop(VmManager *m, uint64_t vm_id, unsigned timeout_sec);

/* After an agent restart: for every VM the journal says is running, a pidfd for its hypervisor if PID,
 * start time and boot id still match — then it is adopted and watched (its exit status comes from taskstats
 * when the config has a listener, else it is "exit status unknown"). Otherwise (dead, or the PID reused by
 * another program, which is never signalled) its network is torn down and it is journaled as crashed. */
int vm_manager_adopt_all(VmManager *m, size_t *ret_adopted, size_t *ret_gone);

/* Handles now every exit that has happened but that the loop has not dispatched yet, so that nothing
 * reports a dead hypervisor as running; a hypervisor on its way out (SIGKILL pending, or exiting: a big
 * guest's memory takes a while to free, and a process whose main thread ended is "exiting" until its other
 * threads have) is marked stopping. Never waits: the exit event comes through the loop. Returns how many
 * exits it handled. */
size_t vm_manager_reap(VmManager *m);
/* Only the exits, with one poll() over every pidfd: no look at /proc for VMs on their way out (Status, whose
 * counts do not tell stopping from running). */
size_t vm_manager_reap_exits(VmManager *m);
/* The same for one VM (InspectVM: O(1) rather than a look at every running VM); true when it was reaped. */
bool vm_manager_reap_vm(VmManager *m, uint64_t vm_id);
/* Whether pid is provably VM vm_id's hypervisor: of our uid, running the binary of the VM's kind, and
 * holding the VM's TAP or its API socket. 1 yes, 0 no, -errno when /proc cannot be read. */
int vm_manager_is_hypervisor(VmManager *m, pid_t pid, uint64_t vm_id);
/* The VM id where `needle` ("<runtime_dir>/vms/") is followed by 16 hex digits and a slash in cmdline, or 0:
 * how a hypervisor's command line names its VM. */
uint64_t vm_manager_vm_id_in(const char *cmdline, const char *needle);
/* Whether a stop (graceful, then SIGTERM, then SIGKILL) is under way, or the hypervisor was seen dying. */
bool vm_manager_stopping(const VmManager *m, uint64_t vm_id);
/* The hypervisor's PID while it runs, else 0. */
pid_t vm_manager_pid(const VmManager *m, uint64_t vm_id);
size_t vm_manager_n_running(const VmManager *m);
/* Whether the VM's hypervisor runs and its API has answered (adopted ones count as answered). */
bool vm_manager_ready(const VmManager *m, uint64_t vm_id);
/* The last line the VM's hypervisor wrote to its log (stderr), control characters blanked, into buf: its
 * length, 0 when it wrote nothing, -errno when there is no log. */
int vm_manager_last_words(const VmManager *m, uint64_t vm_id, char *buf, size_t size);
