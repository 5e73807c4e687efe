/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The agent core: everything chvm-agentd is except its control socket. It owns the state directory (agent
 * id, ownership journal, VM definitions in vms/NAME.vm), the backend modules, the dispatcher and the VMM
 * manager, and runs in the caller's sd-event loop.
 *
 * Start-up (agent_new): directories, agent id, journal (torn tail repaired or quarantine reported),
 * backends, recovery of half-done operations, definitions (a definition file the journal does not know is
 * journaled; a VM the journal knows whose file is gone and that owns nothing is forgotten), adoption of the
 * hypervisors that still run, teardown of those that do not. agent_free() leaves running VMs running: the
 * next start adopts them.
 *
 * Every function that can fail for a reason the admin must read leaves a sentence naming the VM and the
 * cause in agent_error(). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "agent/config.h"
#include "state/journal.h"
#include "state/vmdef.h"
#include "util/error.h"
#include "vmm/hypervisor.h"

typedef struct Agent Agent;

typedef enum VmState {
        VM_STATE_DEFINED,
        VM_STATE_STARTING,
        VM_STATE_RUNNING,
        VM_STATE_STOPPING,
        VM_STATE_STOPPED,
        VM_STATE_CRASHED,
        _VM_STATE_MAX,
        _VM_STATE_INVALID = -EINVAL,
} VmState;

const char *vm_state_to_string(VmState s);
VmState vm_state_from_string(const char *s);

/* A VM's state changed (started, stopping, exited, created, removed: state is then _VM_STATE_INVALID).
 * reason is "" or the exit reason. */
typedef void (*AgentStateCallback)(Agent *a, const char *name, uint64_t vm_id, VmState state,
                                   const char *reason, void *userdata);

/* A start that agent_vm_start() or agent_vm_run() left to be answered later (it returned 1) is over: e is
 * NULL when the VM is up (its hypervisor's API answered), else why it did not start (a RunVM's VM is removed
 * again before this is called). */
typedef void (*AgentStartCallback)(Agent *a, uint64_t vm_id, const Error *e, void *userdata);

/* What `chvmctl inspect` shows. Pointers are valid until the next call into the agent. */
typedef struct AgentVmInfo {
        const char *name;
        uint64_t id;
        VmState state;
        const char *exit_reason; /* "" when none */
        pid_t vmm_pid; /* 0 when not running */
        const char *backend;
        HypervisorKind hypervisor;
        const VmDef *def; /* NULL when the definition file is missing or does not parse */
        const char *def_error; /* why def is NULL ("" otherwise) */
        char tap[16]; /* "" when the VM has no TAP now */
        uint32_t ip4; /* 0 when none (host byte order) */
        uint8_t mac[6];
        size_t n_objects; /* live kernel objects the journal says it owns */
        uint32_t lease_address; /* the DHCP lease last acknowledged (0: none since the agent started) */
        uint64_t lease_acked_usec; /* when, CLOCK_REALTIME */
        const char *lease_client_hostname; /* the host name the client sent ("" when none) */
} AgentVmInfo;

/* Options the daemon does not read from agent.conf. */
typedef struct AgentOptions {
        const char *config_path; /* for messages */
        bool kvm_works; /* accel = auto may pick KVM (the host's QEMU can use it) */
} AgentOptions;

/* cfg is copied: the caller may drop it after the call. */
/* Loads each backend of cfg with its section, without starting it: a missing module or a section it refuses
 * is -errno with err naming FILE:LINE, the section and the cause. Nothing of the host is touched. */
int agent_check_backends(const AgentConfig *cfg, Error *e);
int agent_new(const AgentConfig *cfg, const AgentOptions *opts, sd_event *event, Agent **ret, Error *e);
/* Stops watching; running hypervisors keep running and their objects stay (adopted at the next start). */
Agent *agent_free(Agent *a);
DEFINE_TRIVIAL_CLEANUP_FUNC(Agent *, agent_free);

void agent_set_state_callback(Agent *a, AgentStateCallback cb, void *userdata);
void agent_set_start_callback(Agent *a, AgentStartCallback cb, void *userdata);
const char *agent_error(const Agent *a);
/* The same with its code and kind (util/error.h): what the API answers. */
const Error *agent_last_error(const Agent *a);
const char *agent_id_string(const Agent *a);
const AgentConfig *agent_config(const Agent *a);
Journal *agent_journal(const Agent *a);

/* Creates a VM from def (def->id is ignored: a fresh id is chosen). -EEXIST: the name is taken; -EINVAL:
 * the definition is bad, a path does not exist or the backend is not loaded; -EADDRINUSE: another VM has
 * one of its host ports. The definition file
 * is written and journaled before this returns; on failure neither is. */
/* Forward host ports the backend keeps for the host ([local] reserved_ports). */
#define AGENT_CREATE_FORCE_PORT (1u << 0)
int agent_vm_create(Agent *a, const VmDef *def, unsigned flags, uint64_t *ret_id);
/* -ENOENT: no such VM; -EBUSY: running; an error of kind ERROR_INVALID when it cannot be started (no
 * definition, no hypervisor binary, its backend is not loaded); else the network's or the hypervisor's. On
 * failure nothing of the VM's network stays behind. 0: up; 1: spawned, and the start callback says later
 * whether it came up (its API answered) or not (it exited first, or did not answer in [vmm] start_timeout:
 * then its network is torn down as at any exit). */
int agent_vm_start(Agent *a, const char *name);
/* agent_vm_create() and agent_vm_start() as one: on a failed start the VM is removed again (definition file
 * and journal entry) and the start's error returned; 1 as for agent_vm_start() (*ret_id set), and a start
 * that fails later removes the VM as well. */
int agent_vm_run(Agent *a, const VmDef *def, unsigned flags, uint64_t *ret_id);
/* Graceful stop (see vm_manager_stop); timeout_sec 0: the configured stop_timeout. A VM that is not running
 * is fine (any network it still owns is taken down). Returns once the stop is under way. */
int agent_vm_stop(Agent *a, const char *name, unsigned timeout_sec);
/* SIGKILL; the exit event (from the loop) tears the network down and records the reason, or at once when
 * the VM is not running. The network is torn down even if the signal cannot be sent. */
int agent_vm_kill(Agent *a, const char *name);
/* Forgets a VM that is not running: its definition file and its journal entry; -EBUSY while it runs (the
 * API's RemoveVM with force kills it first and removes it once its exit event came). */
int agent_vm_remove(Agent *a, const char *name);

/* Handles hypervisor exits that happened but were not dispatched yet (call before reporting states). */
void agent_refresh(Agent *a);
/* The same for VM `name` only (nothing when there is no such VM). */
void agent_refresh_vm(Agent *a, const char *name);
/* Only the exits, not which VMs are on their way out: for counts (Status), one poll() at any number of VMs.
 */
void agent_refresh_exits(Agent *a);
/* -ENOENT when there is no such VM. */
int agent_vm_info(Agent *a, const char *name, AgentVmInfo *ret);
/* Every VM's info, sorted by name, from one pass over the journal's objects; free() the array. Its strings
 * point into the agent's state: valid until that changes. */
int agent_vm_list(Agent *a, AgentVmInfo **ret, size_t *ret_n);
/* The live objects the journal says the VM owns (for inspect); callback per object. */
typedef int (*AgentObjectCallback)(const LiveObject *o, void *userdata);
int agent_vm_objects(Agent *a, uint64_t vm_id, AgentObjectCallback cb, void *userdata);

/* Compacts the ownership journal when it has grown past [agent] journal_compact_size (not in quarantine:
 * that is the admin's decision). Called after changes; failures are logged and ignored. */
void agent_maybe_compact(Agent *a);

size_t agent_n_vms(const Agent *a);
size_t agent_n_running(const Agent *a);
