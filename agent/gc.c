/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent-internal.h"
#include "agent/gc.h"
#include "util/log.h"

static const char *const gc_action_table[_GC_ACTION_MAX] = {
        [GC_DELETE] = "delete",
        [GC_FORGET] = "forget",
        [GC_SKIP] = "skip",
};

const char *gc_action_to_string(GcAction a) {
        return a >= 0 && a < _GC_ACTION_MAX ? gc_action_table[a] : NULL;
}

static const char *const gc_reason_table[_GC_REASON_MAX] = {
        [GC_REASON_OWNED] = "owned",
        [GC_REASON_UNTRACKED] = "untracked",
        [GC_REASON_HEURISTIC] = "heuristic",
        [GC_REASON_GONE] = "gone",
        [GC_REASON_RUNNING] = "running",
        [GC_REASON_UNKNOWN_OWNERSHIP] = "unknown ownership",
        [GC_REASON_OTHER_AGENT] = "other agent",
        [GC_REASON_TAG_MISMATCH] = "tag mismatch",
        [GC_REASON_QUARANTINE] = "quarantine",
        [GC_REASON_CORE] = "core",
};

const char *gc_reason_to_string(GcReason r) {
        return r >= 0 && r < _GC_REASON_MAX ? gc_reason_table[r] : NULL;
}

void gc_plan_clear(GcPlan *p) {
        free(p->items);
        *p = (GcPlan){};
}

/* A found kernel object and the backend that can remove it. */
typedef struct Found {
        Resource res;
        Backend *backend;
        bool matched; /* a journal object has this identity */
} Found;

typedef struct Gc {
        Agent *a;
        const GcOptions *o;
        GcPlan *plan;
        Found *found;
        size_t n_found;
        char our_prefix[80]; /* "chvm1:<agent-id>:" */
        U64Map *running; /* VM ids with a live hypervisor we watch */
        char **live_cmdlines; /* /proc/PID/cmdline of every process, for VMs we do not watch */
        size_t n_live;
} Gc;

static bool same_identity(const Resource *x, uint32_t kind, const char *name, const void *key, size_t key_size) {
        if ((uint32_t) x->kind != kind)
                return false;
        if (resource_kind_is_elem(x->kind)) {
                uint8_t k[64];
                size_t n = resource_key_encode(x, k, sizeof(k));
                return n == key_size && memcmp(k, key, n) == 0;
        }
        return name && strcmp(x->name, name) == 0;
}

static int scan_all(Gc *g) {
        Agent *a = g->a;
        for (size_t i = 0; i < a->n_backends; i++) {
                Backend *b = a->backends[i];
                ResourceSet s = {};
                if (!b->vtable->scan)
                        continue;
                int r = b->vtable->scan(b, &s);
                if (r < 0) {
                        snprintf(a->error, sizeof(a->error), "backend %s: scan failed: %s", b->vtable->name,
                                 b->vtable->error_message(b));
                        resource_set_clear(&s);
                        return r;
                }
                /* Several backends see the same links (local and bridge both list TAPs): one entry each. */
                for (size_t k = 0; k < s.n; k++) {
                        const Resource *x = &s.items[k];
                        bool dup = false;
                        for (size_t j = 0; j < g->n_found && !dup; j++) {
                                const Resource *y = &g->found[j].res;
                                if (x->kind != y->kind)
                                        continue;
                                if (resource_kind_is_link(x->kind))
                                        dup = x->ifindex == y->ifindex;
                                else if (resource_kind_is_elem(x->kind)) {
                                        uint8_t kb[64];
                                        size_t kn = resource_key_encode(x, kb, sizeof(kb));
                                        dup = same_identity(y, (uint32_t) x->kind, NULL, kb, kn);
                                } else
                                        dup = strcmp(x->name, y->name) == 0;
                        }
                        if (dup)
                                continue;
                        Found *f = realloc(g->found, (g->n_found + 1) * sizeof(Found));
                        if (!f) {
                                resource_set_clear(&s);
                                return -ENOMEM;
                        }
                        g->found = f;
                        g->found[g->n_found++] = (Found){ .res = *x, .backend = b };
                }
                resource_set_clear(&s);
        }
        return 0;
}

/* Every process's command line, read once: a hypervisor we do not watch (journal lost, or quarantine) is
 * still recognised by its runtime folder vms/<id>/ in its arguments. */
static int read_processes(Gc *g) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        if (!d)
                return negative_errno();
        while ((de = readdir(d))) {
                char path[64], buf[16384];
                pid_t pid = (pid_t) atoi(de->d_name);
                if (pid <= 0)
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t n = read(fd, buf, sizeof(buf) - 1);
                close(fd);
                if (n <= 0)
                        continue;
                for (ssize_t i = 0; i < n; i++)
                        if (buf[i] == '\0')
                                buf[i] = ' ';
                buf[n] = '\0';
                if (!strstr(buf, "/vms/"))
                        continue;
                char **l = realloc(g->live_cmdlines, (g->n_live + 1) * sizeof(char *));
                if (!l || !(l[g->n_live] = strdup(buf))) {
                        if (l)
                                g->live_cmdlines = l;
                        closedir(d);
                        return -ENOMEM;
                }
                g->live_cmdlines = l;
                g->n_live++;
        }
        closedir(d);
        return 0;
}

static bool vm_alive(const Gc *g, uint64_t vm_id) {
        char needle[PATH_MAX + 40];
        if (u64map_get(g->running, vm_id))
                return true;
        snprintf(needle, sizeof(needle), "%s/vms/%016" PRIx64 "/", g->a->cfg.runtime_dir, vm_id);
        for (size_t i = 0; i < g->n_live; i++)
                if (strstr(g->live_cmdlines[i], needle))
                        return true;
        return false;
}

static const char *vm_label(const Gc *g, uint64_t vm_id, char buf[40]) {
        AgentVm *v = u64map_get(g->a->vms, vm_id);
        const LiveVm *lv = live_set_get_vm(journal_live_set(g->a->journal), vm_id);
        if (vm_id == 0)
                buf[0] = '\0';
        else if (v)
                snprintf(buf, 40, "%s", v->name);
        else if (lv && lv->name)
                snprintf(buf, 40, "%s", lv->name);
        else
                snprintf(buf, 40, "%016" PRIx64, vm_id);
        return buf;
}

static const char *vm_state_word(const Gc *g, uint64_t vm_id) {
        AgentVmInfo info;
        AgentVm *v = u64map_get(g->a->vms, vm_id);
        if (!v || agent_vm_info(g->a, v->name, &info) < 0)
                return "unknown to this agent";
        return vm_state_to_string(info.state);
}

static void describe(const Resource *r, char *buf, size_t size) {
        const ResourceElem *e = &r->elem;
        char ip[16];
        struct in_addr in = { .s_addr = htonl(e->guest_ip) };
        inet_ntop(AF_INET, &in, ip, sizeof(ip));
        switch (r->kind) {
        case RESOURCE_NFT_PORTFWD:
                snprintf(buf, size, "%s %u -> %s:%u", e->proto == IPPROTO_UDP ? "udp" : "tcp", e->host_port, ip,
                         e->guest_port);
                break;
        case RESOURCE_NFT_VM_PORT:
                snprintf(buf, size, "%s", e->ifname);
                break;
        case RESOURCE_NFT_VM_ADDR:
                snprintf(buf, size, "%s %02x:%02x:%02x:%02x:%02x:%02x %s", e->ifname, e->mac[0], e->mac[1],
                         e->mac[2], e->mac[3], e->mac[4], e->mac[5], ip);
                break;
        default:
                snprintf(buf, size, "%s", r->name);
        }
}

static GcDecision *decide(Gc *g, GcAction action, GcReason reason, const Resource *r, uint64_t vm_id,
                          const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static GcDecision *decide(Gc *g, GcAction action, GcReason reason, const Resource *r, uint64_t vm_id,
                          const char *fmt, ...) {
        GcPlan *p = g->plan;
        if (p->n == p->allocated) {
                size_t n = p->allocated ? 2 * p->allocated : 64;
                GcDecision *d = realloc(p->items, n * sizeof(GcDecision));
                if (!d)
                        return NULL;
                p->items = d;
                p->allocated = n;
        }
        GcDecision *d = &p->items[p->n++];
        *d = (GcDecision){ .action = action, .reason = reason, .kind = r->kind, .res = *r, .vm_id = vm_id };
        describe(r, d->name, sizeof(d->name));
        vm_label(g, vm_id, d->vm);
        snprintf(d->tag, sizeof(d->tag), "%s", r->tag);
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(d->detail, sizeof(d->detail), fmt, ap);
        va_end(ap);
        p->count[action]++;
        p->by_reason[reason]++;
        return d;
}

static bool in_subnet(const Agent *a, uint32_t ip) {
        uint32_t mask = a->cfg.local_prefixlen ? ~UINT32_C(0) << (32 - a->cfg.local_prefixlen) : 0;
        return (ip & mask) == a->cfg.local_subnet;
}

/* Whether a running VM uses this TAP name / this guest address (from the journal's live set). */
static bool running_uses(const Gc *g, const char *ifname, uint32_t ip) {
        const LiveSet *ls = journal_live_set(g->a->journal);
        const LiveObject *o;
        uint32_t ip4;
        uint64_t owner;
        for (size_t i = 0; ifname && live_set_iterate_objects(ls, &i, &o);)
                if (o->kind == RESOURCE_LINK_TAP && o->name && strcmp(o->name, ifname) == 0 &&
                    vm_alive(g, o->vm_id))
                        return true;
        for (size_t i = 0; ip && live_set_iterate_ips(ls, &i, &ip4, &owner);)
                if (ip4 == ip && vm_alive(g, owner))
                        return true;
        return false;
}

static int decide_untagged_(Gc *g, Found *f);

/* Heuristic deletions are carried out by the backend that found the object. */
static int decide_untagged(Gc *g, Found *f) {
        size_t before = g->plan->n;
        int r = decide_untagged_(g, f);
        if (r >= 0 && g->plan->n > before)
                g->plan->items[g->plan->n - 1].backend = f->backend;
        return r;
}

static int decide_untagged_(Gc *g, Found *f) {
        const Resource *r = &f->res;
        if (!g->o->heuristic)
                return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0,
                              "no ownership tag and not in the journal") ? 0 : -ENOMEM;
        if (g->plan->quarantine)
                return decide(g, GC_SKIP, GC_REASON_QUARANTINE, r, 0,
                              "journal in quarantine: nothing without a tag of ours is deleted, not even by the "
                              "heuristic") ? 0 : -ENOMEM;
        switch (r->kind) {
        case RESOURCE_LINK_TAP:
                if (running_uses(g, r->name, 0))
                        return decide(g, GC_SKIP, GC_REASON_RUNNING, r, 0, "a running VM uses a TAP of this name")
                                       ? 0
                                       : -ENOMEM;
                return decide(g, GC_DELETE, GC_REASON_HEURISTIC, r, 0,
                              "heuristic: untagged TAP named %s*, no running VM uses it",
                              g->a->cfg.local_tap_prefix)
                               ? 0
                               : -ENOMEM;
        case RESOURCE_NFT_PORTFWD:
                if (!in_subnet(g->a, r->elem.guest_ip))
                        return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0,
                                      "untagged, and it points outside our subnet")
                                       ? 0
                                       : -ENOMEM;
                if (running_uses(g, NULL, r->elem.guest_ip))
                        return decide(g, GC_SKIP, GC_REASON_RUNNING, r, 0, "it points to a running VM's address")
                                       ? 0
                                       : -ENOMEM;
                return decide(g, GC_DELETE, GC_REASON_HEURISTIC, r, 0,
                              "heuristic: untagged forward in our table into our subnet, no running VM has "
                              "that address")
                               ? 0
                               : -ENOMEM;
        case RESOURCE_NFT_VM_PORT:
        case RESOURCE_NFT_VM_ADDR:
                if (running_uses(g, r->elem.ifname, r->kind == RESOURCE_NFT_VM_ADDR ? r->elem.guest_ip : 0))
                        return decide(g, GC_SKIP, GC_REASON_RUNNING, r, 0, "a running VM uses this port or address")
                                       ? 0
                                       : -ENOMEM;
                return decide(g, GC_DELETE, GC_REASON_HEURISTIC, r, 0,
                              "heuristic: untagged anti-spoofing element in our table, no running VM uses it")
                               ? 0
                               : -ENOMEM;
        default:
                return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0, "no ownership tag") ? 0 : -ENOMEM;
        }
}

static const LiveObject *journal_match(const Gc *g, const Resource *r) {
        const LiveObject *o;
        for (size_t i = 0; live_set_iterate_objects(journal_live_set(g->a->journal), &i, &o);)
                if (same_identity(r, o->kind, o->name, o->key, o->key_size) &&
                    (!resource_kind_is_link(r->kind) || !o->ifindex || o->ifindex == r->ifindex))
                        return o;
        return NULL;
}

static int decide_found(Gc *g, Found *f) {
        const Resource *r = &f->res;
        const LiveObject *o = journal_match(g, r);
        char label[40];
        GcDecision *d;

        f->matched = o != NULL;
        if (!r->tag[0] && !o)
                return decide_untagged(g, f);
        if (o && strcmp(o->tag, r->tag) != 0) {
                d = decide(g, GC_SKIP, GC_REASON_TAG_MISMATCH, r, o->vm_id,
                           "the journal says ours with tag %s, the kernel object carries %s", o->tag,
                           r->tag[0] ? r->tag : "no tag");
                return d ? 0 : -ENOMEM;
        }
        char agent[64], role[32];
        uint64_t vm_id = 0;
        if (resource_tag_parse(r->tag, agent, &vm_id, role) < 0)
                return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0, "tag %s is not of our form", r->tag)
                               ? 0
                               : -ENOMEM;
        if (strcmp(agent, g->a->agent_id_str) != 0)
                return decide(g, GC_SKIP, GC_REASON_OTHER_AGENT, r, 0, "tagged by agent %s", agent) ? 0 : -ENOMEM;
        if (vm_id == 0)
                return decide(g, GC_SKIP, GC_REASON_CORE, r, 0, "shared by this agent's VMs (kept)") ? 0 : -ENOMEM;
        if (vm_alive(g, vm_id))
                return decide(g, GC_SKIP, GC_REASON_RUNNING, r, vm_id, "VM %s is running", vm_label(g, vm_id, label))
                               ? 0
                               : -ENOMEM;
        if (o) {
                d = decide(g, GC_DELETE, GC_REASON_OWNED, r, vm_id, "owned by VM %s (%s)", vm_label(g, vm_id, label),
                           vm_state_word(g, vm_id));
                if (d)
                        d->journaled = true;
        } else
                d = decide(g, GC_DELETE, GC_REASON_UNTRACKED, r, vm_id,
                           "tagged by this agent for VM %s, not in the journal, no live hypervisor of it",
                           vm_label(g, vm_id, label));
        if (!d)
                return -ENOMEM;
        d->backend = f->backend;
        return 0;
}

/* Journal objects no scan found. */
static int decide_journal_only(Gc *g) {
        const LiveObject *o;
        char label[40];
        for (size_t i = 0; live_set_iterate_objects(journal_live_set(g->a->journal), &i, &o);) {
                bool seen = false;
                for (size_t k = 0; k < g->n_found && !seen; k++)
                        seen = same_identity(&g->found[k].res, o->kind, o->name, o->key, o->key_size);
                if (seen)
                        continue;
                Resource r = { .kind = (ResourceKind) o->kind, .vm_id = o->vm_id, .ifindex = o->ifindex };
                snprintf(r.name, sizeof(r.name), "%s", o->name ? o->name : "");
                snprintf(r.tag, sizeof(r.tag), "%s", o->tag ? o->tag : "");
                if (o->key_size)
                        (void) resource_key_decode(r.kind, o->key, o->key_size, &r.elem);
                GcDecision *d;
                if (o->vm_id == 0)
                        d = decide(g, GC_SKIP, GC_REASON_CORE, &r, 0, "journaled, not in the kernel now (made again "
                                   "at the next VM start)");
                else if (vm_alive(g, o->vm_id))
                        d = decide(g, GC_SKIP, GC_REASON_RUNNING, &r, o->vm_id,
                                   "VM %s is running (its object is missing from the kernel)",
                                   vm_label(g, o->vm_id, label));
                else if (g->plan->quarantine)
                        d = decide(g, GC_SKIP, GC_REASON_QUARANTINE, &r, o->vm_id,
                                   "journal in quarantine: only objects the kernel's tags prove are acted on");
                else {
                        d = decide(g, GC_FORGET, GC_REASON_GONE, &r, o->vm_id,
                                   "journaled for VM %s, already gone from the kernel", vm_label(g, o->vm_id, label));
                        if (d)
                                d->journaled = true;
                }
                if (!d)
                        return -ENOMEM;
        }
        return 0;
}

static void mark_failed(GcPlan *p, GcDecision *d, int r, const char *why) {
        if (d->failed)
                return;
        d->failed = true;
        snprintf(d->error, sizeof(d->error), "%s", why && why[0] ? why : strerror(-r));
        p->n_failed++;
}

static int carry_out(Gc *g) {
        GcPlan *p = g->plan;
        Agent *a = g->a;
        _cleanup_free_ uint64_t *ids = calloc(p->n + 1, sizeof(uint64_t));
        size_t n_ids = 0;

        if (!ids)
                return -ENOMEM;
        /* Journaled objects: through the dispatcher, a VM at a time (RELEASE_INTENT, removal with the tag
         * re-checked, RELEASED). */
        for (size_t i = 0; i < p->n; i++) {
                GcDecision *d = &p->items[i];
                if (d->action == GC_SKIP || !d->journaled)
                        continue;
                bool have = false;
                for (size_t k = 0; k < n_ids && !have; k++)
                        have = ids[k] == d->vm_id;
                if (!have)
                        ids[n_ids++] = d->vm_id;
        }
        for (size_t k = 0; k < n_ids; k++) {
                int r = vm_net_down(a->dispatcher, ids[k]);
                if (r >= 0)
                        continue;
                for (size_t i = 0; i < p->n; i++)
                        if (p->items[i].journaled && p->items[i].vm_id == ids[k] && p->items[i].action != GC_SKIP)
                                mark_failed(p, &p->items[i], r, dispatcher_error(a->dispatcher));
        }
        /* Not journaled: removed by their backend, which re-reads the kernel tag first. */
        for (size_t i = 0; i < p->n; i++) {
                GcDecision *d = &p->items[i];
                if (d->action != GC_DELETE || d->journaled)
                        continue;
                int r = d->backend->vtable->remove(d->backend, &d->res);
                if (r < 0)
                        mark_failed(p, d, r, d->backend->vtable->error_message(d->backend));
        }
        return p->n_failed ? -EIO : 0;
}

int agent_gc(Agent *a, const GcOptions *o, GcPlan *ret) {
        Gc g = { .a = a, .o = o, .plan = ret };
        int r;

        *ret = (GcPlan){ .dry_run = o->dry_run, .heuristic = o->heuristic };
        a->error[0] = '\0';
        ret->quarantine = journal_state(a->journal) == JOURNAL_STATE_QUARANTINE;
        /* Dead hypervisors first: their teardown is the ordinary one, like a crash. */
        if (!o->dry_run)
                agent_refresh(a);

        g.running = u64map_new();
        if (!g.running)
                return -ENOMEM;
        void *v;
        for (size_t i = 0; u64map_iterate(a->vms, &i, NULL, &v);)
                if (vm_manager_pid(a->vmm, ((AgentVm *) v)->id) &&
                    (r = u64map_put(g.running, ((AgentVm *) v)->id, (void *) 1)) < 0)
                        goto out;
        r = read_processes(&g);
        if (r < 0) {
                snprintf(a->error, sizeof(a->error), "cannot list processes: %s", strerror(-r));
                goto out;
        }
        r = scan_all(&g);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < g.n_found; i++)
                if ((r = decide_found(&g, &g.found[i])) < 0)
                        goto out;
        r = decide_journal_only(&g);
        if (r < 0)
                goto out;
        if (!o->dry_run)
                r = carry_out(&g);
out:
        free(g.found);
        for (size_t i = 0; i < g.n_live; i++)
                free(g.live_cmdlines[i]);
        free(g.live_cmdlines);
        u64map_free(g.running);
        if (r < 0 && r != -EIO)
                gc_plan_clear(ret);
        return r;
}
