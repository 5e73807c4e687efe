/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The agent's insides, for the parts of the daemon core that live in files of their own (agent/gc.c). */

#include <stdbool.h>

#include "agent/agent.h"
#include "agent/dispatcher.h"
#include "agent/vm-manager.h"
#include "backends/backend.h"
#include "state/agent-id.h"
#include "util/error.h"
#include "util/hashmap.h"
#include "vmm/taskstats.h"

/* A start whose answer waits for the hypervisor's API (agent_vm_start() returned 1). */
typedef enum StartMode {
        START_NONE,
        START_PLAIN, /* StartVM */
        START_RUN, /* RunVM: a failure removes the VM again */
} StartMode;

typedef struct AgentVm {
        char name[33];
        StartMode starting;
        uint64_t id;
        VmDef *def; /* NULL: the definition file is missing or does not parse */
        char def_error[512];
        /* The last DHCP lease the local backend's server gave it since this agent started (not journaled:
         * the address itself is, and a renewal refills this). */
        uint32_t lease_address;
        uint64_t lease_acked_usec; /* CLOCK_REALTIME; 0: none */
        char lease_client_hostname[64];
} AgentVm;

struct Agent {
        AgentConfig cfg;
        sd_event *event;
        int state_fd, vms_fd;
        uint8_t agent_id[16];
        char agent_id_str[AGENT_ID_STRING_SIZE];
        Journal *journal;
        Backend *backends[CONFIG_MAX_BACKENDS];
        size_t n_backends;
        Dispatcher *dispatcher;
        VmManager *vmm;
        TaskstatsListener *taskstats; /* NULL: exit statuses of adopted hypervisors are unknown */
        sd_event_source *taskstats_source;
        bool taskstats_overflow_warned;
        HypervisorKind default_kind;
        U64Map *vms; /* AgentVm by id */
        U64Map *vms_by_mac; /* the same by the low 40 bits of the id, which its guest MAC carries */
        U64Map *vms_by_name; /* the same by a 64-bit hash of the name (name_hash()) */
        size_t name_clashes; /* names whose hash another VM's name had: those are found by a scan */
        U64Map *vms_by_port; /* the same by forwarded host port, port_key(); the first definition wins */
        size_t port_clashes; /* host ports two definitions name (files written by hand): found by a scan */
        AgentStateCallback on_state;
        AgentStartCallback on_start;
        void *start_userdata;
        void *userdata;
        /* One dump of the links while links_held > 0 (a collection's scans, a doctor run), made at the first
         * ask and shared by every backend (BackendConfig.links). */
        unsigned links_held;
        bool links_dumped;
        struct LinkInfo *links;
        size_t n_links;
        Error error;
};

/* The links as one dump made them, for as long as the outermost hold lasts. */
void agent_links_hold(Agent *a);
void agent_links_release(Agent *a);
int agent_links(void *agent, const struct LinkInfo **ret, size_t *ret_n);

AgentVm *agent_find_vm(const Agent *a, const char *name);
/* The state of a VM by id without looking at its objects; _VM_STATE_INVALID when unknown. */
VmState agent_vm_state(const Agent *a, uint64_t vm_id);
