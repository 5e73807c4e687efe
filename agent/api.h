/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The control API: D-Bus over the agent's own unix socket (sd-bus, peer to peer, no bus daemon), object
 * /org/chvm/agent, interface org.chvm.Agent1. Every connection is its own sd_bus in the agent's event
 * loop, so a slow or silent client holds up nobody; a client that sends garbage is dropped.
 *
 * Methods that change anything need peer uid 0 or membership (primary or supplementary group, from
 * SO_PEERCRED / SO_PEERGROUPS) in [agent] control_group; others get org.freedesktop.DBus.Error.AccessDenied.
 * Read-only methods are open to whoever can connect: the socket is 0660 root:control_group, or 0600 when
 * that group does not exist. A socket passed by systemd (socket activation) is used as it is. */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "agent/agent.h"

#define API_OBJECT_PATH "/org/chvm/agent"
#define API_INTERFACE "org.chvm.Agent1"
#define API_ERROR_NOT_FOUND "org.chvm.Agent1.Error.NotFound"
#define API_ERROR_FAILED "org.chvm.Agent1.Error.Failed"
#define API_ERROR_INVALID "org.chvm.Agent1.Error.InvalidArgument"
#define API_ERROR_BUSY "org.chvm.Agent1.Error.Busy"
#define API_ERROR_EXISTS "org.chvm.Agent1.Error.Exists"
#define API_MAX_CONNECTIONS 512
/* CreateVM flags */
/* Forward ports the backend keeps for the host ([local] reserved_ports); root only. */
#define API_CREATE_FORCE_PORT (UINT64_C(1) << 0)

typedef struct Api Api;

int api_new(Agent *agent, sd_event *event, Api **ret, Error *e);
/* An Api that listens nowhere (tests, the fuzzer): its clients come through api_add_connection(). */
int api_new_unlistened(Agent *agent, sd_event *event, Api **ret);
/* Serves fd, a connected unix stream socket, as one client, exactly like an accepted connection (the
 * peer's credentials decide what it may do). Takes fd, also on failure; -EBUSY when API_MAX_CONNECTIONS
 * clients are connected. */
int api_add_connection(Api *api, int fd);
Api *api_free(Api *api);
const char *api_socket_path(const Api *api);
size_t api_n_connections(const Api *api);

/* Sends VMStateChanged(name, id, state, reason) to every client and completes the Stop/Kill/Remove calls
 * waiting for this VM to leave the running state. state _VM_STATE_INVALID means "removed". */
void api_emit_state_changed(Api *api, const char *name, uint64_t vm_id, VmState state, const char *reason);
/* Answers the StartVM/RunVM calls waiting for VM vm_id to come up: e NULL when it is up, else its error. The
 * Api is the agent's start callback (agent_set_start_callback()) from api_new() to api_free(). */
void api_start_done(Api *api, uint64_t vm_id, const Error *e);
