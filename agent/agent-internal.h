/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The agent's insides, for the parts of the daemon core that live in files of their own (agent/gc.c). */

#include <stdbool.h>

#include "agent/agent.h"
#include "agent/dispatcher.h"
#include "agent/vm-manager.h"
#include "backends/backend.h"
#include "state/agent-id.h"
#include "util/hashmap.h"
#include "vmm/taskstats.h"

typedef struct AgentVm {
        char name[33];
        uint64_t id;
        VmDef *def; /* NULL: the definition file is missing or does not parse */
        char def_error[512];
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
        AgentStateCallback on_state;
        void *userdata;
        char error[1024];
};


AgentVm *agent_find_vm(const Agent *a, const char *name);
