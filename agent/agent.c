/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent-internal.h"
#include "agent/agent.h"
#include "agent/backend-loader.h"
#include "agent/dispatcher.h"
#include "agent/vm-manager.h"
#include "backends/nl/rtnl.h" /* layering: allowed: the one link dump every backend reads (agent_links) */
#include "state/agent-id.h"
#include "util/crashpoint.h"
#include "util/hashmap.h"
#include "util/log.h"
#include "util/netports.h"
#include "util/string-table.h"
#include "vmm/argv.h"
#include "vmm/process.h"

static const char *const vm_state_table[_VM_STATE_MAX] = {
        [VM_STATE_DEFINED] = "defined",   [VM_STATE_STARTING] = "starting", [VM_STATE_RUNNING] = "running",
        [VM_STATE_STOPPING] = "stopping", [VM_STATE_STOPPED] = "stopped",   [VM_STATE_CRASHED] = "crashed",
};

DEFINE_STRING_TABLE(vm_state, VmState, vm_state_table, _VM_STATE_MAX)

_printf_(3, 4) static int fail(Agent *a, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = error_setv(&a->error, r, error_kind_from_errno(r), fmt, ap);
        va_end(ap);
        return r;
}

/* A VM that cannot start as it is defined (its file, its hypervisor binary, its backend missing): the
 * caller's request cannot be met, whatever the errno says (-ENOENT of a binary is no "no such VM"). */
static int cannot_start(Agent *a, const Error *cause) {
        a->error = *cause;
        a->error.kind = ERROR_INVALID;
        return a->error.code;
}

const char *agent_error(const Agent *a) {
        return error_message(&a->error);
}

const Error *agent_last_error(const Agent *a) {
        return &a->error;
}
const char *agent_id_string(const Agent *a) {
        return a->agent_id_str;
}
const AgentConfig *agent_config(const Agent *a) {
        return &a->cfg;
}
Journal *agent_journal(const Agent *a) {
        return a->journal;
}
void agent_set_state_callback(Agent *a, AgentStateCallback cb, void *userdata) {
        a->on_state = cb;
        a->userdata = userdata;
}
void agent_set_start_callback(Agent *a, AgentStartCallback cb, void *userdata) {
        a->on_start = cb;
        a->start_userdata = userdata;
}

static AgentVm *agent_vm_free(AgentVm *v) {
        if (v) {
                vm_def_free(v->def);
                free(v);
        }
        return NULL;
}

/* FNV-1a; never 0, which the map does not take. */
static uint64_t name_hash(const char *name) {
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (const char *p = name; *p; p++)
                h = (h ^ (uint8_t) *p) * UINT64_C(0x100000001b3);
        return h ? h : 1;
}

static uint64_t port_key(const PortForward *p) {
        return (uint64_t) p->proto << 16 | p->host_port | UINT64_C(1) << 32;
}

static void index_ports(Agent *a, AgentVm *v) {
        for (size_t i = 0; v->def && i < v->def->n_ports; i++)
                if (u64map_put(a->vms_by_port, port_key(&v->def->ports[i]), v) < 0)
                        a->port_clashes++; /* taken (or no memory): a scan finds it */
}

static void unindex_ports(Agent *a, AgentVm *v) {
        for (size_t i = 0; v->def && i < v->def->n_ports; i++)
                if (u64map_get(a->vms_by_port, port_key(&v->def->ports[i])) == v)
                        u64map_remove(a->vms_by_port, port_key(&v->def->ports[i]));
}

/* The VM whose definition forwards host port p, or NULL. */
static AgentVm *find_port_owner(const Agent *a, const PortForward *p) {
        AgentVm *v = u64map_get(a->vms_by_port, port_key(p));
        if (v || a->port_clashes == 0)
                return v;
        void *x;
        for (size_t it = 0; u64map_iterate(a->vms, &it, NULL, &x);) {
                const VmDef *o = ((AgentVm *) x)->def;
                for (size_t k = 0; o && k < o->n_ports; k++)
                        if (o->ports[k].proto == p->proto && o->ports[k].host_port == p->host_port)
                                return x;
        }
        return NULL;
}

AgentVm *agent_find_vm(const Agent *a, const char *name) {
        if (!name)
                return NULL;
        AgentVm *v = u64map_get(a->vms_by_name, name_hash(name));
        if (v && strcmp(v->name, name) == 0)
                return v;
        if (a->name_clashes == 0)
                return NULL;
        void *x;
        for (size_t i = 0; u64map_iterate(a->vms, &i, NULL, &x);)
                if (strcmp(((AgentVm *) x)->name, name) == 0)
                        return x;
        return NULL;
}

#define MAC_BITS ((UINT64_C(1) << 40) - 1) /* the part of a VM id its MAC carries (dispatcher_mac()) */

static int add_vm(Agent *a, const char *name, uint64_t id, VmDef *def, AgentVm **ret) {
        AgentVm *v = calloc(1, sizeof(AgentVm));
        if (!v)
                return -ENOMEM;
        snprintf(v->name, sizeof(v->name), "%s", name);
        v->id = id;
        v->def = def;
        int r = u64map_put(a->vms, id, v);
        if (r < 0) {
                v->def = NULL;
                free(v);
                return r;
        }
        /* new_vm_id() keeps the low 40 bits (the MAC's) unique; a clash from elsewhere keeps the first */
        if (u64map_put(a->vms_by_mac, id & MAC_BITS, v) == -ENOMEM) {
                u64map_remove(a->vms, id);
                v->def = NULL;
                free(v);
                return -ENOMEM;
        }
        r = u64map_put(a->vms_by_name, name_hash(v->name), v);
        if (r == -EEXIST)
                a->name_clashes++; /* two names, one hash: found by a scan from now on */
        else if (r < 0) {
                if (u64map_get(a->vms_by_mac, id & MAC_BITS) == v)
                        u64map_remove(a->vms_by_mac, id & MAC_BITS);
                u64map_remove(a->vms, id);
                v->def = NULL;
                free(v);
                return r;
        }
        index_ports(a, v);
        if (ret)
                *ret = v;
        return 0;
}

/* Every change goes through here: the daemon hears of it, and the journal is compacted when it has grown. */
static void notify(Agent *a, const char *name, uint64_t id, VmState state, const char *reason) {
        if (a->on_state)
                a->on_state(a, name, id, state, reason ? reason : "", a->userdata);
        agent_maybe_compact(a);
}

static HypervisorKind vm_kind(const Agent *a, const AgentVm *v) {
        if (v && v->def && v->def->hypervisor[0]) {
                HypervisorKind k = hypervisor_kind_from_string(v->def->hypervisor);
                if (k >= 0)
                        return k;
        }
        return a->default_kind;
}

static HypervisorKind kind_of(uint64_t vm_id, void *userdata) {
        Agent *a = userdata;
        return vm_kind(a, u64map_get(a->vms, vm_id));
}

static const char *vm_backend(const Agent *a, const AgentVm *v) {
        if (v->def)
                return v->def->backend;
        const LiveVm *lv = live_set_get_vm(journal_live_set(a->journal), v->id);
        return lv && lv->backend ? lv->backend : "";
}

void agent_maybe_compact(Agent *a) {
        JournalState st = journal_state(a->journal);
        if (journal_size(a->journal) < a->cfg.journal_compact_size ||
            journal_size(a->journal) <= JOURNAL_HEADER_SIZE)
                return; /* (a journal of just its header has nothing to compact) */
        if (st == JOURNAL_STATE_QUARANTINE || st == JOURNAL_STATE_FAILED)
                return; /* compaction in quarantine is the admin's decision; a failed journal writes nothing
                         */
        uint64_t before = journal_size(a->journal);
        int r = journal_compact(a->journal, 0);
        if (r < 0)
                log_warning("ownership journal: compaction failed: %s, ignoring",
                            journal_error_message(a->journal));
        else
                log_info("ownership journal compacted: %llu bytes -> %llu (%zu live objects)",
                         (unsigned long long) before, (unsigned long long) journal_size(a->journal),
                         live_set_n_objects(journal_live_set(a->journal)));
}

/* A start answered later (agent_vm_start() returned 1) is over: e NULL when the VM is up. */
static void start_done(Agent *a, AgentVm *v, const Error *e) {
        uint64_t id = v->id;
        StartMode mode = v->starting;
        v->starting = START_NONE;
        if (mode == START_NONE)
                return;
        Error cause;
        if (e && mode == START_RUN) {
                /* RunVM is all or nothing: the VM goes again, whoever is still waiting for the answer. */
                cause = *e;
                char name[sizeof(v->name)];
                snprintf(name, sizeof(name), "%s", v->name);
                if (agent_vm_remove(a, name) < 0) {
                        error_append(&cause,
                                     " (and it could not be removed again: %s; `chvmctl rm %s` does it)",
                                     error_message(&a->error), name);
                }
                e = &cause;
                v = NULL; /* gone */
        }
        if (a->on_start)
                a->on_start(a, id, e, a->start_userdata);
}

static void on_vm_ready(VmManager *m, uint64_t vm_id, const char *name, void *userdata) {
        Agent *a = userdata;
        AgentVm *v = u64map_get(a->vms, vm_id);
        (void) m;
        log_vm(LOG_INFO, &((LogVm){ .name = name, .id = vm_id, .backend = v ? vm_backend(a, v) : NULL }),
               "VM %s running: its hypervisor's API answers", name);
        notify(a, name, vm_id, VM_STATE_RUNNING, "");
        if (v)
                start_done(a, v, NULL);
}

static void on_vm_exit(VmManager *m, uint64_t vm_id, const char *name, JournalVmState state,
                       const char *reason, int error, bool before_ready, void *userdata) {
        Agent *a = userdata;
        AgentVm *v = u64map_get(a->vms, vm_id);
        LogVm lv = { .name = name, .id = vm_id, .backend = v ? vm_backend(a, v) : NULL };

        if (v) { /* a lease lives as long as its guest */
                v->lease_address = 0;
                v->lease_acked_usec = 0;
        }
        if (error < 0)
                log_vm_errno(LOG_ERR, error, &lv, "%s", vm_manager_error(m));
        log_vm(state == JOURNAL_VM_STOPPED ? LOG_INFO : LOG_WARNING, &lv,
               "VM %s %s: hypervisor %s; its network is torn down", name,
               state == JOURNAL_VM_STOPPED ? "stopped" : "crashed", reason);
        notify(a, name, vm_id, state == JOURNAL_VM_STOPPED ? VM_STATE_STOPPED : VM_STATE_CRASHED, reason);
        if (v && before_ready && v->starting != START_NONE) {
                Error e;
                char words[320];
                error_set(&e, -EIO, ERROR_FAILED, "VM %s did not start: its hypervisor %s", name, reason);
                if (vm_manager_last_words(m, vm_id, words, sizeof(words)) > 0)
                        error_append(&e, "; it said: \"%s\"", words);
                start_done(a, v, &e);
        }
}

/* mkdir -p with the last component's mode. */
static int mkdir_parents(const char *path, mode_t mode) {
        char buf[PATH_MAX];
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof(buf))
                return -ENAMETOOLONG;
        memcpy(buf, path, n + 1);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return negative_errno();
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return negative_errno();
        return 0;
}

static int open_dirs(Agent *a, Error *e) {
        const char *bad = NULL;
        int r;

        r = mkdir_parents(a->cfg.state_dir, 0700);
        if (r < 0)
                bad = a->cfg.state_dir;
        else if ((r = mkdir_parents(a->cfg.runtime_dir, 0755)) < 0)
                bad = a->cfg.runtime_dir;
        if (bad) {
                return error_errno(e, r, "cannot make the folder %s: %s", bad, strerror(-r));
        }
        a->state_fd = open(a->cfg.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (a->state_fd < 0) {
                r = negative_errno();
                return error_errno(e, r, "cannot open the state folder %s: %s", a->cfg.state_dir,
                                   strerror(-r));
        }
        if (mkdirat(a->state_fd, "vms", 0700) < 0 && errno != EEXIST) {
                r = negative_errno();
                return error_errno(e, r, "cannot make the folder %s/vms: %s", a->cfg.state_dir,
                                   strerror(-r));
        }
        a->vms_fd = openat(a->state_fd, "vms", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (a->vms_fd < 0) {
                r = negative_errno();
                return error_errno(e, r, "cannot open %s/vms: %s", a->cfg.state_dir, strerror(-r));
        }
        return 0;
}

static int open_journal(Agent *a, Error *e) {
        JournalOptions o = { .directory = a->cfg.state_dir };
        JournalReport rep = {};
        memcpy(o.agent_id, a->agent_id, 16);
        int r = journal_open(&o, &a->journal, &rep);
        if (r < 0) {
                *e = rep.error;
                return r;
        }
        switch (rep.state) {
        case JOURNAL_STATE_TORN_TAIL_REPAIRED:
                log_warning("ownership journal: %s", rep.message);
                break;
        case JOURNAL_STATE_QUARANTINE:
                log_error(
                        "ownership journal in QUARANTINE: %s. The agent runs, but garbage collection deletes "
                        "only what the kernel's own tags prove is ours.",
                        rep.message);
                break;
        default:
                if (rep.message[0])
                        log_notice("ownership journal: %s", rep.message);
        }
        return 0;
}

void agent_links_hold(Agent *a) {
        a->links_held++;
}

void agent_links_release(Agent *a) {
        if (a->links_held == 0 || --a->links_held > 0)
                return;
        free(a->links);
        a->links = NULL;
        a->n_links = 0;
        a->links_dumped = false;
}

int agent_links(void *agent, const LinkInfo **ret, size_t *ret_n) {
        Agent *a = agent;
        if (a->links_held == 0)
                return -ENOENT; /* not in a collection: the backend's own, fresh dump */
        if (!a->links_dumped) {
                _cleanup_(rtnl_closep) Rtnl *rtnl = NULL;
                int r = rtnl_open(&rtnl);
                if (r >= 0)
                        r = rtnl_link_dump(rtnl, &a->links, &a->n_links);
                if (r < 0)
                        return r; /* each backend then dumps, and says what failed */
                a->links_dumped = true;
        }
        *ret = a->links;
        *ret_n = a->n_links;
        return 0;
}

/* The guest with this MAC, for a backend's DHCP server: a running VM of that backend. The MAC is derived
 * from the VM id (dispatcher_mac()), so its low 40 bits find the VM. */
static int guest_lookup(void *userdata, Backend *b, const uint8_t mac[6], Dhcp4Lookup *ret) {
        Agent *a = userdata;
        uint64_t low = 0;
        uint8_t m[6];
        uint32_t ip4;
        for (int i = 1; i < 6; i++)
                low = low << 8 | mac[i];
        AgentVm *v = u64map_get(a->vms_by_mac, low);
        if (!v)
                return -ENOENT;
        dispatcher_mac(v->id, m);
        if (memcmp(m, mac, 6) != 0 || strcmp(vm_backend(a, v), b->vtable->name) != 0 ||
            agent_vm_state(a, v->id) != VM_STATE_RUNNING ||
            dispatcher_vm_ip(a->dispatcher, v->id, &ip4) < 0 || ip4 == 0)
                return -ENOENT;
        *ret = (Dhcp4Lookup){ .id = v->id, .address = ip4 };
        snprintf(ret->hostname, sizeof(ret->hostname), "%s", v->name);
        return 0;
}

static void lease_event(void *userdata, Backend *b, const Dhcp4Event *ev) {
        Agent *a = userdata;
        AgentVm *v = ev->guest ? u64map_get(a->vms, ev->guest) : NULL;
        char mac[18] = "", addr[16] = "";
        if (ev->mac)
                snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", ev->mac[0], ev->mac[1],
                         ev->mac[2], ev->mac[3], ev->mac[4], ev->mac[5]);
        if (ev->address)
                snprintf(addr, sizeof(addr), "%u.%u.%u.%u", ev->address >> 24, (ev->address >> 16) & 0xff,
                         (ev->address >> 8) & 0xff, ev->address & 0xff);
        LogVm lv = { .name = v ? v->name : NULL,
                     .id = ev->guest,
                     .backend = b->vtable->name,
                     .mac = mac,
                     .address = addr };
        const char *host = ev->client_hostname && ev->client_hostname[0] ? ev->client_hostname : NULL;

        switch (ev->kind) {
        case DHCP4_EVENT_ACK:
                if (v) {
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        bool renewal = v->lease_address == ev->address;
                        v->lease_address = ev->address;
                        v->lease_acked_usec = (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
                        snprintf(v->lease_client_hostname, sizeof(v->lease_client_hostname), "%s",
                                 host ? host : "");
                        log_vm(renewal ? LOG_DEBUG : LOG_INFO, &lv, "VM %s: DHCP lease %s for %s%s%s%s",
                               v->name, addr, mac, host ? " (client host name \"" : "", host ? host : "",
                               host ? "\")" : "");
                }
                break;
        case DHCP4_EVENT_OFFER:
        case DHCP4_EVENT_INFORM:
                log_vm(LOG_DEBUG, &lv, "DHCP: %s to %s (%s)",
                       ev->kind == DHCP4_EVENT_OFFER ? "offer" : "inform ack", mac, addr);
                break;
        case DHCP4_EVENT_NAK:
                log_vm(LOG_NOTICE, &lv, "DHCP: refused %s to %s: %s", addr, mac, ev->why ? ev->why : "");
                break;
        case DHCP4_EVENT_RELEASE:
                if (v)
                        v->lease_acked_usec = 0, v->lease_address = 0;
                log_vm(LOG_INFO, &lv, "DHCP: %s released %s", mac, addr);
                break;
        case DHCP4_EVENT_DECLINE:
                log_vm(LOG_WARNING, &lv, "DHCP: %s declined %s: another host on the link uses it", mac,
                       addr);
                break;
        default:
                if (!ev->mac) /* the server itself: it could not be set up */
                        log_vm(LOG_WARNING, &lv, "DHCP: %s; guests get no address by DHCP, ignoring",
                               ev->why ? ev->why : "the server failed");
                else if (ev->suppressed)
                        log_vm(LOG_NOTICE, &lv,
                               "DHCP: no answer to %s: %s (%u more such since the last report)",
                               mac[0] ? mac : "?", ev->why ? ev->why : "", ev->suppressed);
                else
                        log_vm(LOG_NOTICE, &lv, "DHCP: no answer to %s: %s", mac[0] ? mac : "?",
                               ev->why ? ev->why : "");
                break;
        }
}

/* The part of a backend's config that comes from agent.conf: its section. */
int agent_check_backends(const AgentConfig *cfg, Error *e) {
        for (unsigned i = 0; i < cfg->n_backends; i++) {
                BackendSetting settings[CONFIG_MAX_SETTINGS];
                BackendConfig bc;
                config_backend_config(cfg, cfg->backends[i], settings, ELEMENTSOF(settings), &bc);
                int r = backend_check(cfg->backend_dir, cfg->backends[i], &bc, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int load_backends(Agent *a, Error *e) {
        for (unsigned i = 0; i < a->cfg.n_backends; i++) {
                const char *name = a->cfg.backends[i];
                BackendSetting settings[CONFIG_MAX_SETTINGS];
                BackendConfig bc;
                config_backend_config(&a->cfg, name, settings, ELEMENTSOF(settings), &bc);
                bc.agent_id = a->agent_id_str;
                bc.event = a->event;
                bc.guest_lookup = guest_lookup;
                bc.lease_event = lease_event;
                bc.guest_userdata = a;
                bc.links = agent_links;
                bc.links_userdata = a;
                int r = backend_load(a->cfg.backend_dir, name, &bc, &a->backends[a->n_backends], e);
                if (r < 0)
                        return r;
                a->n_backends++;
        }
        return 0;
}

/* Drained as notifications come, so that a busy host (one message per exiting task) cannot overflow it. */
static int on_taskstats(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Agent *a = userdata;
        (void) s;
        (void) fd;
        (void) revents;
        int r = taskstats_listener_process(a->taskstats);
        if (r == -ENOBUFS) {
                if (!a->taskstats_overflow_warned)
                        log_warning(
                                "taskstats: exit notifications were lost (receive buffer full); an adopted "
                                "hypervisor's exit may be recorded as \"exit status unknown\", ignoring");
                a->taskstats_overflow_warned = true;
        } else if (r < 0)
                log_warning_errno(r, "taskstats: cannot read exit notifications: %m, ignoring");
        return 0;
}

/* Before anything else forks: the probe reaps its own child. */
static void open_taskstats(Agent *a) {
        Error why;
        const char *off = getenv("CHVM_NO_TASKSTATS");
        if (off && strcmp(off, "1") == 0) {
                log_notice(
                        "CHVM_NO_TASKSTATS=1: exit statuses of adopted hypervisors will be \"exit status unknown\"");
                return;
        }
        int r = taskstats_listener_new(&a->taskstats, &why);
        if (r < 0) {
                log_notice("exit statuses of adopted hypervisors will be \"exit status unknown\": %s",
                           error_message(&why));
                return;
        }
        r = sd_event_add_io(a->event, &a->taskstats_source, taskstats_listener_fd(a->taskstats), EPOLLIN,
                            on_taskstats, a);
        if (r < 0) {
                log_warning_errno(r, "taskstats: cannot watch the socket: %m, ignoring");
                a->taskstats = taskstats_listener_free(a->taskstats);
        }
}

/* Through the dispatcher, the journal's one writer. */
static int journal_define(Agent *a, const VmDef *def, const char *text, bool sync) {
        int r = dispatcher_define_vm(a->dispatcher, def->id, def->name, def->backend, text, sync);
        return r < 0 ? fail(a, r, "%s", dispatcher_error(a->dispatcher)) : 0;
}

static int journal_undefine(Agent *a, uint64_t id) {
        int r = dispatcher_undefine_vm(a->dispatcher, id);
        return r < 0 ? fail(a, r, "%s", dispatcher_error(a->dispatcher)) : 0;
}

typedef struct LoadCtx {
        Agent *a;
        char **bad_names; /* files that are there but do not parse: never forgotten */
        size_t n_bad;
        size_t journaled; /* VM_DEFINE records appended, synced once at the end */
        Error error; /* why a definition could not be written again */
} LoadCtx;

/* A definition the agent wrote without a sync of its own (its text rode in the journal's VM_DEFINE, see
 * create_vm()) that a power loss cut short or took away: written again from the journal and loaded, 1; 0
 * when the journal has no text of it or the file is not what an unsynced write leaves (an edit). A failed
 * write fails the start: the VM would be forgotten otherwise. Only files that are missing or do not parse
 * get here (every part of a file the agent writes is refused by the parser): a start reads a good file
 * once. */
static int restore_definition(Agent *a, const LiveVm *lv, VmDef **ret, Error *e) {
        if (!lv || !lv->definition)
                return 0;
        int r = vm_def_restore(a->vms_fd, lv->name, lv->definition, NULL);
        if (r < 0)
                return error_errno(e, r,
                                   "VM %s: cannot write %s/vms/%s%s again from the ownership journal: %s",
                                   lv->name, a->cfg.state_dir, lv->name, VM_DEF_SUFFIX, strerror(-r));
        if (r == 0)
                return 0;
        log_vm(LOG_NOTICE, &((LogVm){ .name = lv->name, .id = lv->vm_id, .backend = lv->backend }),
               "VM %s: %s/vms/%s%s was missing or cut short (written unsynced before a crash); written again "
               "from the ownership journal",
               lv->name, a->cfg.state_dir, lv->name, VM_DEF_SUFFIX);
        Error why = {};
        r = vm_def_load(a->vms_fd, lv->name, ret, &why);
        if (r < 0) { /* a text an older agent wrote that this one refuses: listed as not parsing */
                log_warning("VM definition %s/vms/%s%s, written again from the ownership journal: %s",
                            a->cfg.state_dir, lv->name, VM_DEF_SUFFIX, error_message(&why));
                return 0;
        }
        return 1;
}

static int on_definition(const char *name, VmDef *def, const char *error, void *userdata) {
        LoadCtx *c = userdata;
        Agent *a = c->a;
        int r;

        if (!def) {
                /* a file that does not parse: by name, the one thing it still tells (rare: a scan) */
                const LiveVm *lv = NULL, *x;
                for (size_t it = 0; !lv && live_set_iterate_vms(journal_live_set(a->journal), &it, &x);)
                        if (strcmp(x->name, name) == 0)
                                lv = x;
                r = restore_definition(a, lv, &def, &c->error);
                if (r < 0)
                        return r;
        }
        if (!def) {
                log_warning(
                        "VM definition %s/vms/%s%s: %s; the VM is listed but cannot be started until the "
                        "file is fixed",
                        a->cfg.state_dir, name, VM_DEF_SUFFIX, error);
                char **n = realloc(c->bad_names, (c->n_bad + 1) * sizeof(char *));
                if (!n)
                        return -ENOMEM;
                c->bad_names = n;
                c->bad_names[c->n_bad] = strdup(name);
                if (!c->bad_names[c->n_bad])
                        return -ENOMEM;
                c->n_bad++;
                return 0;
        }
        if (u64map_get(a->vms, def->id)) {
                log_warning("VM definition %s/vms/%s%s has the id %016" PRIx64 " of VM %s, ignoring",
                            a->cfg.state_dir, name, VM_DEF_SUFFIX, def->id,
                            ((AgentVm *) u64map_get(a->vms, def->id))->name);
                vm_def_free(def);
                return 0;
        }
        const LiveVm *lv = live_set_get_vm(journal_live_set(a->journal), def->id);
        bool unjournaled = !lv || strcmp(lv->name, def->name) != 0 || strcmp(lv->backend, def->backend) != 0;
        _cleanup_free_ char *text = NULL;
        /* the text only where the journal wants it: a new record, or one to compare with */
        if (unjournaled || lv->definition) {
                r = vm_def_format(def, &text);
                if (r < 0) {
                        vm_def_free(def);
                        return r;
                }
        }
        /* Written before a crash that came before its journal record: journaled now. Edited since its
         * record: journaled again, so that a restore (restore_definition()) never brings back the old. */
        if (unjournaled || (lv->definition && strcmp(lv->definition, text) != 0)) {
                r = journal_define(a, def, strlen(text) <= JOURNAL_DEFINITION_MAX ? text : NULL, false);
                if (r < 0) {
                        vm_def_free(def);
                        return r;
                }
                c->journaled++;
        }
        r = add_vm(a, def->name, def->id, def, NULL);
        if (r < 0)
                vm_def_free(def);
        return r;
}

static bool is_bad_name(const LoadCtx *c, const char *name) {
        for (size_t i = 0; i < c->n_bad; i++)
                if (strcmp(c->bad_names[i], name) == 0)
                        return true;
        return false;
}

/* VMs the journal knows but no file describes: forgotten when they own nothing (removed: the file went
 * first, a crash came before VM_UNDEFINE), else listed without a definition. */
static int journal_only_vms(Agent *a, const LoadCtx *c, Error *e) {
        const LiveSet *ls = journal_live_set(a->journal);
        _cleanup_free_ uint64_t *forget = calloc(live_set_n_vms(ls) + 1, sizeof(uint64_t));
        const LiveVm *lv;
        size_t k = 0;
        int r;

        if (!forget)
                return -ENOMEM;
        for (size_t it = 0; live_set_iterate_vms(ls, &it, &lv);) {
                if (u64map_get(a->vms, lv->vm_id))
                        continue;
                bool bad = is_bad_name(c, lv->name);
                if (!bad && lv->state != JOURNAL_VM_RUNNING && lv->n_objects == 0) {
                        forget[k++] = lv->vm_id;
                        continue;
                }
                AgentVm *v;
                r = add_vm(a, lv->name, lv->vm_id, NULL, &v);
                if (r < 0)
                        return r;
                snprintf(v->def_error, sizeof(v->def_error), "%s",
                         bad ? "its definition file does not parse" : "its definition file is missing");
                if (!bad)
                        log_warning(
                                "VM %s is in the ownership journal but %s/vms/%s%s is missing; it can be "
                                "stopped and removed, not started",
                                lv->name, a->cfg.state_dir, lv->name, VM_DEF_SUFFIX);
        }
        for (size_t i = 0; i < k; i++) {
                r = journal_undefine(a, forget[i]);
                if (r < 0) {
                        *e = a->error;
                        return r;
                }
        }
        return 0;
}

/* VMs the journal has the text of but no file was found for: written again and loaded
 * (restore_definition()). Their ids first: loading one may journal, which must not happen while the live
 * set is iterated (and moves its VMs: each is looked up again by id). */
static int restore_missing(Agent *a, LoadCtx *c) {
        const LiveSet *ls = journal_live_set(a->journal);
        _cleanup_free_ uint64_t *ids = calloc(live_set_n_vms(ls) + 1, sizeof(uint64_t));
        const LiveVm *lv;
        size_t n = 0;
        if (!ids)
                return -ENOMEM;
        for (size_t it = 0; live_set_iterate_vms(ls, &it, &lv);)
                if (lv->definition && !u64map_get(a->vms, lv->vm_id) && !is_bad_name(c, lv->name))
                        ids[n++] = lv->vm_id;
        for (size_t i = 0; i < n; i++) {
                VmDef *def = NULL;
                lv = live_set_get_vm(journal_live_set(a->journal), ids[i]);
                int r = restore_definition(a, lv, &def, &c->error);
                if (r < 0)
                        return r;
                char name[VM_NAME_MAX + 1];
                if (r > 0) {
                        snprintf(name, sizeof(name), "%s", def->name); /* on_definition() may free def */
                        if ((r = on_definition(name, def, NULL, c)) < 0)
                                return r;
                }
        }
        return 0;
}

static int load_definitions(Agent *a, Error *e) {
        LoadCtx c = { .a = a };
        int r = vm_def_load_all(a->vms_fd, on_definition, &c);
        if (r >= 0)
                r = restore_missing(a, &c);
        if (r >= 0 && c.journaled > 0) {
                r = dispatcher_sync(a->dispatcher);
                if (r < 0)
                        (void) fail(a, r, "%s", dispatcher_error(a->dispatcher));
        }
        if (r < 0 && error_message(&c.error)[0])
                *e = c.error;
        else if (r < 0)
                (void) error_errno(e, r, "VM definitions in %s/vms: %s", a->cfg.state_dir,
                                   error_message(&a->error));
        else
                r = journal_only_vms(a, &c, e);
        for (size_t i = 0; i < c.n_bad; i++)
                free(c.bad_names[i]);
        free(c.bad_names);
        return r;
}

int agent_new(const AgentConfig *cfg, const AgentOptions *opts, sd_event *event, Agent **ret, Error *e) {
        _cleanup_(agent_freep) Agent *a = calloc(1, sizeof(Agent));
        AgentOptions none = {};
        VmmAccel accel;
        int r;

        error_clear(e);
        if (!a)
                return error_errno(e, -ENOMEM, "%s", strerror(ENOMEM));
        if (!opts)
                opts = &none;
        a->cfg = *cfg;
        a->state_fd = a->vms_fd = -EBADF;
        a->event = sd_event_ref(event);
        a->vms = u64map_new();
        a->vms_by_mac = u64map_new();
        a->vms_by_name = u64map_new();
        a->vms_by_port = u64map_new();
        if (!a->vms || !a->vms_by_mac || !a->vms_by_name || !a->vms_by_port)
                return error_errno(e, -ENOMEM, "%s", strerror(ENOMEM));
        a->default_kind = hypervisor_kind_from_string(cfg->hypervisor);
        if (a->default_kind < 0) {
                return error_set(e, -EINVAL, ERROR_INVALID,
                                 "[vmm] hypervisor \"%s\" is not a hypervisor kind", cfg->hypervisor);
        }
        r = vmm_accel_resolve(vmm_accel_from_string(cfg->accel), opts->kvm_works, VMM_KVM_DEVICE, &accel);
        if (r < 0) {
                return error_errno(e, r, "[vmm] accel \"%s\" is not an accelerator", cfg->accel);
        }

        /* A module that is not there, or that refuses its section, is a config error: refused before
         * anything is made. */
        r = agent_check_backends(cfg, e);
        if (r < 0)
                return r;
        r = open_dirs(a, e);
        if (r < 0)
                return r;
        open_taskstats(a);
        r = agent_id_load_or_create(a->state_fd, cfg->state_dir, NULL, a->agent_id, e);
        if (r < 0)
                return r;
        agent_id_to_string(a->agent_id, a->agent_id_str);
        r = open_journal(a, e);
        if (r < 0)
                return r;
        r = load_backends(a, e);
        if (r < 0)
                return r;

        DispatcherConfig dc = { .journal = a->journal,
                                .agent_id = a->agent_id_str,
                                .backends = a->backends,
                                .n_backends = a->n_backends };
        r = dispatcher_new(&dc, &a->dispatcher);
        if (r < 0) {
                return error_errno(e, r, "cannot set up the dispatcher: %s", strerror(-r));
        }
        r = dispatcher_recover(a->dispatcher);
        if (r < 0) {
                *e = *dispatcher_last_error(a->dispatcher);
                return error_prefix(e, "recovering half-done operations from the ownership journal");
        }
        r = load_definitions(a, e);
        if (r < 0)
                return r;

        /* Pointers into the agent's own copy of the config: the caller's may be gone once we return
         * (the VMM manager keeps .binary). */
        const char *env[CONFIG_MAX_ENV + 1] = {}, *pass[CONFIG_MAX_ENV + 1] = {};
        for (unsigned i = 0; i < a->cfg.n_vmm_environment; i++)
                env[i] = a->cfg.vmm_environment[i];
        for (unsigned i = 0; i < a->cfg.n_vmm_pass_environment; i++)
                pass[i] = a->cfg.vmm_pass_environment[i];
        VmManagerConfig mc = { .event = event,
                               .environment = env,
                               .pass_environment = pass,
                               .journal = a->journal,
                               .dispatcher = a->dispatcher,
                               .runtime_dir = a->cfg.runtime_dir,
                               .hypervisor = a->default_kind,
                               .binary = a->cfg.vmm_binary[0] ? a->cfg.vmm_binary : NULL,
                               .accel = accel,
                               .on_exit = on_vm_exit,
                               .on_ready = on_vm_ready,
                               .start_timeout_sec = a->cfg.start_timeout,
                               .kind_of = kind_of,
                               .taskstats = a->taskstats,
                               .userdata = a };
        r = vm_manager_new(&mc, &a->vmm);
        if (r < 0)
                return error_errno(e, r, "cannot set up the VM manager: %s", strerror(-r));
        size_t adopted = 0, gone = 0;
        r = vm_manager_adopt_all(a->vmm, &adopted, &gone);
        if (r < 0) {
                *e = *vm_manager_last_error(a->vmm);
                return error_prefix(e, "adopting running VMs");
        }
        if (adopted || gone)
                log_info("%zu running VM(s) adopted, %zu found dead and torn down", adopted, gone);
        agent_maybe_compact(a);

        *ret = TAKE_PTR(a);
        return 0;
}

Agent *agent_free(Agent *a) {
        void *v;
        if (!a)
                return NULL;
        a->vmm = vm_manager_free(a->vmm);
        sd_event_source_disable_unref(a->taskstats_source);
        a->taskstats = taskstats_listener_free(a->taskstats);
        a->dispatcher = dispatcher_free(a->dispatcher);
        for (size_t i = 0; i < a->n_backends; i++)
                backend_unload(a->backends[i]);
        a->journal = journal_close(a->journal);
        for (size_t i = 0; a->vms && u64map_iterate(a->vms, &i, NULL, &v);)
                agent_vm_free(v);
        u64map_free(a->vms);
        u64map_free(a->vms_by_mac);
        u64map_free(a->vms_by_name);
        u64map_free(a->vms_by_port);
        safe_close(a->vms_fd);
        safe_close(a->state_fd);
        sd_event_unref(a->event);
        free(a);
        return NULL;
}

static bool backend_loaded(const Agent *a, const char *name) {
        for (unsigned i = 0; i < a->cfg.n_backends; i++)
                if (strcmp(a->cfg.backends[i], name) == 0)
                        return true;
        return false;
}

/* What the hypervisor of VM id, defined by d, starts with. */
static void request_of(const Agent *a, const VmDef *d, uint64_t id, HypervisorKind kind, VmRequest *ret) {
        (void) a;
        *ret = (VmRequest){ .vm_id = id,
                            .name = d->name,
                            .backend = d->backend,
                            .kernel = d->kernel,
                            .firmware = d->firmware,
                            .initrd = d->initrd,
                            .cmdline = d->cmdline,
                            .disks = (const char *const *) d->disks,
                            .n_disks = d->n_disks,
                            .hypervisor = kind,
                            .cpus = d->cpus,
                            .memory_mib = d->memory_mib,
                            .ports = d->ports,
                            .n_ports = d->n_ports };
}

/* Whether path (resolved) is dir (resolved) or below it. */
static bool path_below(const char *path, const char *dir) {
        size_t n = strlen(dir);
        if (n == 1 && dir[0] == '/')
                return true;
        return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* The folder resolved, or as given when it does not exist (nothing below it then exists either). */
static void resolve_dir(const char *dir, char ret[PATH_MAX]) {
        if (!realpath(dir, ret))
                snprintf(ret, PATH_MAX, "%s", dir);
}

/* A kernel, firmware, initrd or disk of VM vm. The hypervisor opens it as root for a caller who may not
 * be able to read it, and a guest writes its disks: refused are what is not a regular file (a block
 * device is a disk only with [vmm] allow_block_devices), anything inside the agent's own folders (its
 * journal, definitions, control socket and modules), and with [vmm] image_dirs anything outside them.
 * Symbolic links are followed first; the resolved path is what the hypervisor is given (ret, may be
 * NULL), so a link changed after the check cannot point it elsewhere. */
static int check_file(Agent *a, const char *vm, const char *what, const char *path, char ret[PATH_MAX]) {
        char real[PATH_MAX], dir[PATH_MAX];
        struct stat st;
        if (!path)
                return 0;
        /* -EINVAL, not the errno: a bad path is bad input (exit 1), not "no such VM" (exit 3). */
        if (!realpath(path, real) || stat(real, &st) < 0)
                return fail(a, -EINVAL, "VM %s: %s %s: %s", vm, what, path, strerror(errno));
        bool disk = strcmp(what, "disk") == 0;
        if (S_ISBLK(st.st_mode) && disk && !a->cfg.allow_block_devices)
                return fail(
                        a, -EPERM,
                        "VM %s: disk %s is a block device (allowed only with [vmm] allow_block_devices = yes)",
                        vm, path);
        if (!S_ISREG(st.st_mode) && !(disk && S_ISBLK(st.st_mode)))
                return fail(a, -EINVAL, "VM %s: %s %s is not a regular file", vm, what, path);
        const struct {
                const char *dir, *what;
        } own[] = {
                { a->cfg.state_dir, "the agent's state folder" },
                { a->cfg.runtime_dir, "the agent's runtime folder" },
                { a->cfg.backend_dir, "the agent's backend folder" },
        };
        for (size_t i = 0; i < ELEMENTSOF(own); i++) {
                if (!own[i].dir[0])
                        continue;
                resolve_dir(own[i].dir, dir);
                if (path_below(real, dir))
                        return fail(a, -EPERM, "VM %s: %s %s is inside %s %s: refused", vm, what, path,
                                    own[i].what, own[i].dir);
        }
        bool allowed = a->cfg.n_image_dirs == 0;
        for (unsigned i = 0; !allowed && i < a->cfg.n_image_dirs; i++) {
                resolve_dir(a->cfg.image_dirs[i], dir);
                allowed = path_below(real, dir);
        }
        if (!allowed) {
                char list[1024] = "";
                for (unsigned i = 0; i < a->cfg.n_image_dirs; i++)
                        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? " " : "",
                                 a->cfg.image_dirs[i]);
                return fail(a, -EPERM, "VM %s: %s %s is outside [vmm] image_dirs (%s): refused", vm, what,
                            path, list);
        }
        if (ret)
                memcpy(ret, real, strlen(real) + 1);
        return 0;
}

/* Every file of def, checked; with ret, their resolved paths (ret->kernel, ... point into buffers of it). */
typedef struct ResolvedFiles {
        char kernel[PATH_MAX], firmware[PATH_MAX], initrd[PATH_MAX];
        char disks[VM_DEF_MAX_DISKS][PATH_MAX];
        const char *disk_ptrs[VM_DEF_MAX_DISKS];
} ResolvedFiles;

static int check_files(Agent *a, const VmDef *def, ResolvedFiles *ret) {
        int r = check_file(a, def->name, "kernel", def->kernel, ret ? ret->kernel : NULL);
        if (r >= 0)
                r = check_file(a, def->name, "firmware", def->firmware, ret ? ret->firmware : NULL);
        if (r >= 0)
                r = check_file(a, def->name, "initrd", def->initrd, ret ? ret->initrd : NULL);
        for (size_t i = 0; r >= 0 && i < def->n_disks; i++) {
                r = check_file(a, def->name, "disk", def->disks[i], ret ? ret->disks[i] : NULL);
                if (ret)
                        ret->disk_ptrs[i] = ret->disks[i];
        }
        return r;
}

/* A fresh id whose derived names (TAP: low hex digits; MAC: low 40 bits) clash with no known VM's. */
static int new_vm_id(Agent *a, uint64_t *ret) {
        const LiveSet *ls = journal_live_set(a->journal);
        for (int tries = 0; tries < 1000; tries++) {
                uint64_t id;
                if (getrandom(&id, sizeof(id), 0) != sizeof(id))
                        return negative_errno();
                if ((id & UINT64_C(0xffffffffff)) == 0)
                        continue;
                bool clash = false;
                void *v;
                for (size_t i = 0; !clash && u64map_iterate(a->vms, &i, NULL, &v);)
                        clash = ((((AgentVm *) v)->id ^ id) & UINT64_C(0xffffffffff)) == 0;
                const LiveVm *lv;
                for (size_t i = 0; !clash && live_set_iterate_vms(ls, &i, &lv);)
                        clash = ((lv->vm_id ^ id) & UINT64_C(0xffffffffff)) == 0;
                if (!clash) {
                        *ret = id;
                        return 0;
                }
        }
        return -EADDRINUSE;
}

/* sync false: the caller syncs before it answers (RunVM: the start's intents come next; the definition
 * file, which is synced, is what defines the VM — a load journals a file without its record). */
static int create_vm(Agent *a, const VmDef *in, unsigned flags, bool sync, uint64_t *ret_id) {
        _cleanup_(vm_def_freep) VmDef *def = NULL;
        int r;

        error_clear(&a->error);
        r = vm_def_copy(in, &def);
        if (r < 0)
                return fail(a, r, "VM %s: %s", in->name, strerror(-r));
        if (!def->backend[0])
                snprintf(def->backend, sizeof(def->backend), "%s", a->cfg.default_backend);
        def->id = 1; /* validated with a placeholder, chosen below */
        r = vm_def_validate(def, &a->error);
        if (r < 0)
                return r;
        if (agent_find_vm(a, def->name))
                return fail(a, -EEXIST, "VM %s already exists", def->name);
        if (!backend_loaded(a, def->backend))
                return fail(a, -EINVAL, "VM %s: unknown backend \"%s\" (loaded: see [agent] backends)",
                            def->name, def->backend);
        /* A host port is forwarded to one VM at most, running or not: refused now rather than at a start. */
        for (size_t i = 0; i < def->n_ports; i++) {
                const AgentVm *o = find_port_owner(a, &def->ports[i]);
                if (o)
                        return fail(a, -EADDRINUSE, "port %u/%s already forwarded to VM %s",
                                    def->ports[i].host_port,
                                    def->ports[i].proto == IPPROTO_UDP ? "udp" : "tcp", o->name);
        }
        if (def->n_ports) {
                r = dispatcher_backend_forwards_ports(a->dispatcher, def->backend);
                if (r == 0)
                        return fail(a, -EINVAL, "VM %s: backend %s forwards no ports: -p is refused",
                                    def->name, def->backend);
                if (!(flags & AGENT_CREATE_FORCE_PORT)) {
                        /* ports the backend keeps for the host */
                        r = dispatcher_check_ports(a->dispatcher, def->backend, def->name, def->ports,
                                                   def->n_ports);
                        if (r < 0)
                                return fail(a, r, "%s", dispatcher_error(a->dispatcher));
                }
        }
        r = check_files(a, def, NULL);
        if (r < 0)
                return r;
        VmRequest req;
        request_of(a, def, 1,
                   def->hypervisor[0] ? hypervisor_kind_from_string(def->hypervisor) : a->default_kind,
                   &req);
        r = vm_manager_validate(a->vmm, &req);
        if (r < 0)
                return fail(a, r, "%s", vm_manager_error(a->vmm));
        r = new_vm_id(a, &def->id);
        if (r < 0)
                return fail(a, r, "VM %s: cannot choose an id: %s", def->name, strerror(-r));

        /* The file unsynced, its text in VM_DEFINE: one fdatasync (the journal's) makes both durable, where
         * the file's own fdatasync and its folder's fsync were two more; a start after a power loss writes
         * it again from the journal (restore_definition()). Only a text too long for a record is synced on
         * its own. */
        _cleanup_free_ char *text = NULL;
        r = vm_def_format(def, &text);
        if (r < 0)
                return fail(a, r, "VM %s: %s", def->name, strerror(-r));
        bool carried = strlen(text) <= JOURNAL_DEFINITION_MAX;
        r = vm_def_save_text(a->vms_fd, def->name, text, carried ? VM_DEF_SAVE_NO_SYNC : 0, NULL);
        if (r < 0)
                return fail(a, r, "VM %s: cannot write %s/vms/%s%s: %s", def->name, a->cfg.state_dir,
                            def->name, VM_DEF_SUFFIX, strerror(-r));
        r = CRASH_POINT("agent-create-definition-saved"); /* the next start journals the file it finds */
        if (r >= 0)
                r = journal_define(a, def, carried ? text : NULL, sync);
        if (r < 0) {
                (void) vm_def_remove(a->vms_fd, def->name, NULL);
                return r;
        }
        uint64_t id = def->id;
        AgentVm *v;
        r = add_vm(a, def->name, id, def, &v);
        if (r < 0)
                return fail(a, r, "VM %s: %s", in->name, strerror(-r));
        TAKE_PTR(def);
        log_vm(LOG_INFO, &((LogVm){ .name = v->name, .id = id, .backend = v->def->backend }),
               "VM %s created", v->name);
        notify(a, v->name, id, VM_STATE_DEFINED, "");
        if (ret_id)
                *ret_id = id;
        return 0;
}

int agent_vm_create(Agent *a, const VmDef *in, unsigned flags, uint64_t *ret_id) {
        return create_vm(a, in, flags, true, ret_id);
}

static AgentVm *lookup(Agent *a, const char *name) {
        AgentVm *v = agent_find_vm(a, name);
        error_clear(&a->error);
        if (!v)
                fail(a, -ENOENT, "no VM named \"%s\"", name ? name : "");
        return v;
}

int agent_vm_start(Agent *a, const char *name) {
        AgentVm *v = lookup(a, name);
        if (!v)
                return -ENOENT;
        if (!v->def)
                return fail(a, -ENOEXEC, "VM %s cannot be started: %s", v->name, v->def_error);
        if (vm_manager_pid(a->vmm, v->id))
                return fail(a, -EBUSY, "VM %s is already running", v->name);

        const VmDef *d = v->def;
        LogVm lv = { .name = v->name, .id = v->id, .backend = d->backend };
        /* Checked again: a file may have been replaced since the create (a link now pointing into the
         * state folder); the hypervisor gets the paths resolved here. */
        _cleanup_free_ ResolvedFiles *files = malloc(sizeof(ResolvedFiles));
        if (!files)
                return fail(a, -ENOMEM, "VM %s: %s", v->name, strerror(ENOMEM));
        int r = check_files(a, d, files);
        if (r < 0) {
                log_vm(LOG_WARNING, &lv, "%s", error_message(&a->error));
                return r == -EINVAL ? cannot_start(a, &a->error) : r;
        }
        VmRequest req;
        request_of(a, d, v->id, vm_kind(a, v), &req);
        req.kernel = d->kernel ? files->kernel : NULL;
        req.firmware = d->firmware ? files->firmware : NULL;
        req.initrd = d->initrd ? files->initrd : NULL;
        req.disks = files->disk_ptrs;
        notify(a, v->name, v->id, VM_STATE_STARTING, "");
        VmStarted started;
        r = vm_manager_start(a->vmm, &req, &started);
        if (r < 0) {
                const Error *e = vm_manager_last_error(a->vmm);
                if (r == -ENOENT)
                        cannot_start(a, e); /* no hypervisor binary or backend: not "no such VM" */
                else
                        a->error = *e;
                log_vm(LOG_WARNING, &lv, "%s", error_message(&a->error));
                const LiveVm *l = live_set_get_vm(journal_live_set(a->journal), v->id);
                notify(a, v->name, v->id,
                       l && l->state == JOURNAL_VM_CRASHED   ? VM_STATE_CRASHED
                       : l && l->state == JOURNAL_VM_STOPPED ? VM_STATE_STOPPED
                                                             : VM_STATE_DEFINED,
                       error_message(&a->error));
                return r;
        }
        lv.interface = started.net.tap;
        log_vm(LOG_INFO, &lv, "VM %s started: hypervisor %s pid %d%s%s", v->name,
               hypervisor_kind_to_string(req.hypervisor), (int) started.pid,
               started.net.tap[0] ? ", TAP " : "", started.net.tap);
        if (!started.ready) {
                v->starting = START_PLAIN; /* answered when its API answers (on_vm_ready) or it exits */
                return 1;
        }
        notify(a, v->name, v->id, VM_STATE_RUNNING, "");
        return 0;
}

int agent_vm_stop(Agent *a, const char *name, unsigned timeout_sec) {
        AgentVm *v = lookup(a, name);
        if (!v)
                return -ENOENT;
        bool running = vm_manager_pid(a->vmm, v->id) != 0;
        int r = vm_manager_stop(a->vmm, v->id, timeout_sec ? timeout_sec : a->cfg.stop_timeout);
        if (r < 0)
                return fail(a, r, "%s", vm_manager_error(a->vmm));
        if (running && vm_manager_pid(a->vmm, v->id)) {
                log_vm(LOG_INFO, &((LogVm){ .name = v->name, .id = v->id }), "VM %s: stopping", v->name);
                notify(a, v->name, v->id, VM_STATE_STOPPING, "");
        }
        return 0;
}

int agent_vm_kill(Agent *a, const char *name) {
        AgentVm *v = lookup(a, name);
        if (!v)
                return -ENOENT;
        int r = vm_manager_kill(a->vmm, v->id);
        return r < 0 ? fail(a, r, "%s", vm_manager_error(a->vmm)) : 0;
}

int agent_vm_run(Agent *a, const VmDef *def, unsigned flags, uint64_t *ret_id) {
        uint64_t id;
        int r = create_vm(a, def, flags, false, &id);
        if (r < 0)
                return r;
        r = agent_vm_start(a, def->name);
        if (r >= 0) {
                /* Its intents were synced, and VM_DEFINE with them; a start refused before them did not. */
                int k = dispatcher_sync(a->dispatcher);
                if (k < 0)
                        return fail(a, k, "%s", dispatcher_error(a->dispatcher));
        }
        if (r > 0) {
                /* The rest comes when its API answers: a failure then removes it (start_done()). */
                AgentVm *v = agent_find_vm(a, def->name);
                if (v)
                        v->starting = START_RUN;
        }
        if (r < 0) {
                Error cause = a->error;
                int k = agent_vm_remove(a, def->name);
                if (k < 0) {
                        char why[512];
                        snprintf(why, sizeof(why), "%s", error_message(&a->error));
                        a->error = cause;
                        error_append(&a->error,
                                     " (and it could not be removed again: %s; `chvmctl rm %s` does it)",
                                     why, def->name);
                } else
                        a->error = cause;
                return r;
        }
        if (ret_id)
                *ret_id = id;
        return r;
}

int agent_vm_remove(Agent *a, const char *name) {
        AgentVm *v = lookup(a, name);
        int r;

        if (!v)
                return -ENOENT;
        if (vm_manager_pid(a->vmm, v->id))
                return fail(a, -EBUSY, "VM %s is running: stop it first (or remove it with -f)", v->name);
        /* Whatever it still owns goes with it. */
        r = vm_manager_kill(a->vmm, v->id);
        if (r < 0)
                return fail(a, r, "%s", vm_manager_error(a->vmm));

        /* File first, then the journal: a crash in between leaves a journal entry without a file, which
         * the next start writes again from the journal's text (or forgets, for a record without one): the
         * removal did not happen, and was not answered. */
        r = vm_def_remove(a->vms_fd, v->name, NULL);
        if (r < 0 && r != -ENOENT)
                return fail(a, r, "VM %s: cannot remove %s/vms/%s%s: %s", v->name, a->cfg.state_dir, v->name,
                            VM_DEF_SUFFIX, strerror(-r));
        r = CRASH_POINT("agent-remove-definition-removed"); /* the next start writes it again */
        if (r < 0)
                return r;
        if (live_set_get_vm(journal_live_set(a->journal), v->id)) {
                r = journal_undefine(a, v->id);
                if (r < 0)
                        return r;
        }
        char vname[33];
        uint64_t id = v->id;
        snprintf(vname, sizeof(vname), "%s", v->name);
        if (u64map_get(a->vms_by_mac, id & MAC_BITS) == v)
                u64map_remove(a->vms_by_mac, id & MAC_BITS);
        if (u64map_get(a->vms_by_name, name_hash(v->name)) == v)
                u64map_remove(a->vms_by_name, name_hash(v->name));
        unindex_ports(a, v);
        agent_vm_free(u64map_remove(a->vms, id));
        log_vm(LOG_INFO, &((LogVm){ .name = vname, .id = id }), "VM %s removed", vname);
        notify(a, vname, id, _VM_STATE_INVALID, "removed");
        return 0;
}

static VmState state_of(const Agent *a, const AgentVm *v, const LiveVm *lv) {
        if (vm_manager_pid(a->vmm, v->id))
                return vm_manager_stopping(a->vmm, v->id) ? VM_STATE_STOPPING
                       : vm_manager_ready(a->vmm, v->id)  ? VM_STATE_RUNNING
                                                          : VM_STATE_STARTING;
        if (!lv)
                return VM_STATE_DEFINED;
        switch (lv->state) {
        case JOURNAL_VM_STOPPED:
                return VM_STATE_STOPPED;
        case JOURNAL_VM_CRASHED:
        case JOURNAL_VM_RUNNING: /* journaled as running, not watched: cannot be (adoption decided) */
                return VM_STATE_CRASHED;
        default:
                return VM_STATE_DEFINED;
        }
}

VmState agent_vm_state(const Agent *a, uint64_t vm_id) {
        const AgentVm *v = u64map_get(a->vms, vm_id);
        if (!v)
                return _VM_STATE_INVALID;
        return state_of(a, v, live_set_get_vm(journal_live_set(a->journal), vm_id));
}

/* Everything but what needs the VM's objects (n_objects, tap). */
static void vm_info_base(Agent *a, const AgentVm *v, AgentVmInfo *ret) {
        const LiveVm *lv = live_set_get_vm(journal_live_set(a->journal), v->id);
        AgentVmInfo info = {
                .name = v->name,
                .id = v->id,
                .state = state_of(a, v, lv),
                .exit_reason = lv && lv->reason ? lv->reason : "",
                .vmm_pid = vm_manager_pid(a->vmm, v->id),
                .backend = vm_backend(a, v),
                .hypervisor = vm_kind(a, v),
                .def = v->def,
                .def_error = v->def_error,
        };
        if (info.state == VM_STATE_RUNNING || info.state == VM_STATE_STOPPING)
                info.exit_reason = "";
        if (info.state == VM_STATE_RUNNING || info.state == VM_STATE_STOPPING) {
                info.lease_address = v->lease_address;
                info.lease_acked_usec = v->lease_acked_usec;
        }
        info.lease_client_hostname = info.lease_acked_usec ? v->lease_client_hostname : "";
        dispatcher_mac(v->id, info.mac);
        (void) dispatcher_vm_ip(a->dispatcher, v->id, &info.ip4);
        *ret = info;
}

static void vm_info_add_object(AgentVmInfo *info, const LiveObject *o) {
        info->n_objects++;
        if (o->kind == RESOURCE_LINK_TAP && o->name)
                snprintf(info->tap, sizeof(info->tap), "%s", o->name);
}

int agent_vm_info(Agent *a, const char *name, AgentVmInfo *ret) {
        AgentVm *v = agent_find_vm(a, name);
        const LiveObject *o;
        AgentVmInfo info;
        if (!v)
                return -ENOENT;
        vm_info_base(a, v, &info);
        for (size_t i = 0; live_set_iterate_objects(journal_live_set(a->journal), &i, &o);)
                if (o->vm_id == v->id)
                        vm_info_add_object(&info, o);
        *ret = info;
        return 0;
}

static int cmp_info_name(const void *x, const void *y) {
        return strcmp(((const AgentVmInfo *) x)->name, ((const AgentVmInfo *) y)->name);
}

int agent_vm_list(Agent *a, AgentVmInfo **ret, size_t *ret_n) {
        size_t n = u64map_size(a->vms), k = 0;
        _cleanup_free_ AgentVmInfo *l = calloc(n + 1, sizeof(AgentVmInfo));
        U64Map *by_id = u64map_new();
        const LiveObject *o;
        void *v;
        int r = 0;

        if (!l || !by_id) {
                u64map_free(by_id);
                return -ENOMEM;
        }
        for (size_t i = 0; k < n && u64map_iterate(a->vms, &i, NULL, &v); k++) {
                vm_info_base(a, v, &l[k]);
                if ((r = u64map_put(by_id, l[k].id, &l[k])) < 0)
                        break;
        }
        /* One pass over the journal's objects for all VMs, not one per VM. */
        for (size_t i = 0; r >= 0 && live_set_iterate_objects(journal_live_set(a->journal), &i, &o);) {
                AgentVmInfo *info = u64map_get(by_id, o->vm_id);
                if (info)
                        vm_info_add_object(info, o);
        }
        u64map_free(by_id);
        if (r < 0)
                return r;
        qsort(l, k, sizeof(AgentVmInfo), cmp_info_name);
        *ret = TAKE_PTR(l);
        *ret_n = k;
        return 0;
}

void agent_refresh(Agent *a) {
        (void) vm_manager_reap(a->vmm);
}

void agent_refresh_exits(Agent *a) {
        (void) vm_manager_reap_exits(a->vmm);
}

void agent_refresh_vm(Agent *a, const char *name) {
        const AgentVm *v = agent_find_vm(a, name);
        if (v)
                (void) vm_manager_reap_vm(a->vmm, v->id);
}

int agent_vm_objects(Agent *a, uint64_t vm_id, AgentObjectCallback cb, void *userdata) {
        const LiveObject *o;
        for (size_t i = 0; live_set_iterate_objects(journal_live_set(a->journal), &i, &o);) {
                if (o->vm_id != vm_id)
                        continue;
                int r = cb(o, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

size_t agent_n_vms(const Agent *a) {
        return u64map_size(a->vms);
}

size_t agent_n_running(const Agent *a) {
        return vm_manager_n_running(a->vmm);
}
