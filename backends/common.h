/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Link handling shared by the backends that make TAPs (local, bridge). Compiled into each module. */

#include "backends/backend.h"
#include "backends/nl/rtnl.h"

/* Creates the tagged TAP r->name, enslaves it to `bridge` and sets it up; fills r->ifindex. On failure
 * the TAP is removed again and *e says why. mtu: 0 keeps the TAP's default. */
int backend_tap_up(Rtnl *rtnl, Resource *r, uint32_t bridge_ifindex, uint32_t mtu, Error *e);

/* Appends the links the agent could own: TAPs and bridges whose alias is a chvm1 tag (any agent), and
 * untagged TAPs whose name starts with tap_prefix (tag ""). */
/* From the dump `shared` gives (see BackendConfig.links), or a dump of its own when there is none. */
int backend_scan_links(Rtnl *rtnl, BackendLinksFn shared, void *userdata, const char *tap_prefix,
                       ResourceSet *ret);

/* Removes one link after re-reading its identity; a link given without ifindex is looked up by name. */
int backend_remove_link(Rtnl *rtnl, const Resource *r);

/* Removes many links with one grouped RTM_DELLINK, a single one with its own (links whose identity changed
 * are left alone and counted in *ret_stale). */
int backend_remove_links(Rtnl *rtnl, const Resource *r, size_t n, size_t *ret_stale);

/* A finding for a doctor hook, formatted. */
__attribute__((format(printf, 5, 6))) int backend_finding(BackendFindingFn add, void *userdata,
                                                          BackendSeverity s, const char *topic,
                                                          const char *fmt, ...);

/* The doctor check of the backends that make TAPs on a bridge: every running VM's TAP exists and is a port
 * of `bridge` (findings under "links"). Reads the shared dump like backend_scan_links(). */
int backend_doctor_links(Rtnl *rtnl, BackendLinksFn shared, void *userdata, const char *bridge,
                         const BackendVm *running, size_t n_running, BackendFindingFn add,
                         void *add_userdata);
