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
#include "agent/backend-loader.h"
#include "agent/gc.h"
#include "util/log.h"
#include "util/string-table.h"
#include "util/utf8.h"
#include "vmm/process.h"

static const char *const gc_action_table[_GC_ACTION_MAX] = {
        [GC_DELETE] = "delete",
        [GC_FORGET] = "forget",
        [GC_SKIP] = "skip",
};

DEFINE_STRING_TABLE_TO(gc_action, GcAction, gc_action_table, _GC_ACTION_MAX)

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

DEFINE_STRING_TABLE_TO(gc_reason, GcReason, gc_reason_table, _GC_REASON_MAX)

void gc_plan_clear(GcPlan *p) {
        free(p->items);
        *p = (GcPlan){};
}

/* A found kernel object and the backend that can remove it. */
typedef struct Found {
        Resource res;
        Backend *backend;
        bool matched; /* a journal object has this identity */
        char key[96]; /* the identity, ident_of_resource() */
} Found;

/* An object's identity as a string, for sorting and lookup: links by name, elements by their key, tables by
 * name ("tap tap-0123...", "nft-portfwd 06 1f90 c0a8c802 0050"). */
typedef struct Ident {
        char key[96];
        size_t index;
} Ident;

/* Made once for every found and every journaled object: without a printf per byte, which took a fifth of a
 * plan's time at 1,000 VMs. */
static void ident_of(uint32_t kind, const char *name, const void *key, size_t key_size, char ret[96]) {
        static const char hex[] = "0123456789abcdef";
        const uint8_t *k = key;
        char digits[10];
        size_t o = 0, n = 0;
        uint32_t v = kind;

        do
                digits[n++] = (char) ('0' + v % 10);
        while ((v /= 10) && n < sizeof(digits));
        while (n)
                ret[o++] = digits[--n];
        ret[o++] = ' ';
        if (resource_kind_is_elem((ResourceKind) kind))
                for (size_t i = 0; i < key_size && o < 93; i++) {
                        ret[o++] = hex[k[i] >> 4];
                        ret[o++] = hex[k[i] & 15];
                }
        else
                for (const char *c = name ? name : ""; *c && o < 95; c++)
                        ret[o++] = *c;
        ret[o] = '\0';
}

static void ident_of_resource(const Resource *r, char ret[96]) {
        uint8_t k[64];
        size_t n = resource_kind_is_elem(r->kind) ? resource_key_encode(r, k, sizeof(k)) : 0;
        ident_of((uint32_t) r->kind, r->name, k, n, ret);
}

static int ident_cmp(const void *x, const void *y) {
        return strcmp(((const Ident *) x)->key, ((const Ident *) y)->key);
}

static const Ident *ident_find(const Ident *sorted, size_t n, const char *key) {
        Ident k;
        snprintf(k.key, sizeof(k.key), "%s", key);
        return bsearch(&k, sorted, n, sizeof(Ident), ident_cmp);
}

typedef struct Gc {
        Agent *a;
        const GcOptions *o;
        GcPlan *plan;
        Found *found;
        size_t n_found, allocated_found;
        char our_prefix[80]; /* "chvm1:<agent-id>:" */
        U64Map *running; /* VM ids with a live hypervisor we watch */
        Ident *found_idx; /* the found objects' identities, sorted */
        Ident *journal_idx; /* the live objects' identities, sorted; index into journal_objs */
        const LiveObject **journal_objs;
        const char **journal_keys; /* journal_objs[i]'s identity */
        size_t n_journal;
        char **running_taps; /* TAP names of running VMs (heuristic), sorted */
        size_t n_running_taps;
        U64Map *running_ips; /* guest addresses of running VMs (heuristic) */
        U64Map *alive; /* VM ids named by a live process's runtime folder vms/<id>/ (VMs we do not watch) */
        char needle[PATH_MAX + 8]; /* "<runtime_dir>/vms/" */
        bool processes_read; /* alive is filled in (or processes_error says why not) */
        int processes_error;
} Gc;

static int scan_all_(Gc *g);

/* Every backend's scan reads the same dump of the links (agent_links()). */
static int scan_all(Gc *g) {
        agent_links_hold(g->a);
        int r = scan_all_(g);
        agent_links_release(g->a);
        return r;
}

static int scan_all_(Gc *g) {
        Agent *a = g->a;
        for (size_t i = 0; i < a->n_backends; i++) {
                Backend *b = a->backends[i];
                ResourceSet s = {};
                if (!b->vtable->scan)
                        continue;
                int r = b->vtable->scan(b, &s);
                if (r < 0) {
                        backend_failed(b, r, &a->error);
                        error_prefix(&a->error, "backend %s: scan failed", b->vtable->name);
                        resource_set_clear(&s);
                        return r;
                }
                for (size_t k = 0; k < s.n; k++) {
                        if (g->n_found == g->allocated_found) {
                                size_t n = g->allocated_found ? 2 * g->allocated_found : 256;
                                Found *f = realloc(g->found, n * sizeof(Found));
                                if (!f) {
                                        resource_set_clear(&s);
                                        return -ENOMEM;
                                }
                                g->found = f;
                                g->allocated_found = n;
                        }
                        Found *f = &g->found[g->n_found++];
                        *f = (Found){ .res = s.items[k], .backend = b };
                        ident_of_resource(&f->res, f->key);
                }
                resource_set_clear(&s);
        }
        /* Several backends see the same links (local and bridge both list TAPs): one entry each, the first
         * backend's (links by ifindex, the rest by identity). */
        g->found_idx = calloc(g->n_found + 1, sizeof(Ident));
        if (!g->found_idx)
                return -ENOMEM;
        for (size_t i = 0; i < g->n_found; i++) {
                const Resource *x = &g->found[i].res;
                if (resource_kind_is_link(x->kind))
                        snprintf(g->found_idx[i].key, sizeof(g->found_idx[i].key), "link %u", x->ifindex);
                else
                        memcpy(g->found_idx[i].key, g->found[i].key, sizeof(g->found_idx[i].key));
                g->found_idx[i].index = i;
        }
        qsort(g->found_idx, g->n_found, sizeof(Ident), ident_cmp);
        size_t kept = 0;
        bool *drop = calloc(g->n_found + 1, sizeof(bool));
        if (!drop)
                return -ENOMEM;
        /* In each run of equal identities, the first found stays. */
        for (size_t i = 0, j; i < g->n_found; i = j) {
                size_t first = g->found_idx[i].index;
                for (j = i + 1; j < g->n_found && strcmp(g->found_idx[j].key, g->found_idx[i].key) == 0; j++)
                        if (g->found_idx[j].index < first)
                                first = g->found_idx[j].index;
                for (size_t k = i; k < j; k++)
                        drop[g->found_idx[k].index] = g->found_idx[k].index != first;
        }
        for (size_t i = 0; i < g->n_found; i++)
                if (!drop[i])
                        g->found[kept++] = g->found[i];
        g->n_found = kept;
        free(drop);
        /* Now by identity, for the journal to look up. */
        for (size_t i = 0; i < g->n_found; i++) {
                memcpy(g->found_idx[i].key, g->found[i].key, sizeof(g->found_idx[i].key));
                g->found_idx[i].index = i;
        }
        qsort(g->found_idx, g->n_found, sizeof(Ident), ident_cmp);
        return 0;
}

static int index_journal(Gc *g) {
        const LiveSet *ls = journal_live_set(g->a->journal);
        const LiveObject *o;
        size_t n = live_set_n_objects(ls), k = 0;
        g->journal_idx = calloc(n + 1, sizeof(Ident));
        g->journal_objs = calloc(n + 1, sizeof(LiveObject *));
        g->journal_keys = calloc(n + 1, sizeof(char *));
        if (!g->journal_idx || !g->journal_objs || !g->journal_keys)
                return -ENOMEM;
        for (size_t i = 0; live_set_iterate_objects(ls, &i, &o) && k < n; k++) {
                ident_of(o->kind, o->name, o->key, o->key_size, g->journal_idx[k].key);
                g->journal_idx[k].index = k;
                g->journal_objs[k] = o;
        }
        g->n_journal = k;
        qsort(g->journal_idx, k, sizeof(Ident), ident_cmp);
        for (size_t i = 0; i < k; i++)
                g->journal_keys[g->journal_idx[i].index] = g->journal_idx[i].key;
        return 0;
}

/* Every process's command line, read once: a hypervisor we do not watch (journal lost, or quarantine) is
 * still recognised by its runtime folder vms/<id>/ in its arguments, and proven by what it holds. */
static int note_alive(pid_t pid, const char *cmdline, void *userdata) {
        Gc *g = userdata;
        for (const char *p = strstr(cmdline, g->needle); p; p = strstr(p + 1, g->needle)) {
                uint64_t id = vm_manager_vm_id_in(p, g->needle);
                /* only the VM's own hypervisor keeps its objects, not anyone who names its folder; a process
                 * that cannot be looked into (-errno) is not proven not to be it. A VM we watch needs no
                 * proof (vm_alive() knows it runs): with thousands running, proving each costs seconds. */
                if (id && !u64map_get(g->running, id) && vm_manager_is_hypervisor(g->a->vmm, pid, id) != 0 &&
                    u64map_replace(g->alive, id, (void *) 1) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int read_processes(Gc *g) {
        snprintf(g->needle, sizeof(g->needle), "%s/vms/", g->a->cfg.runtime_dir);
        return process_for_each(note_alive, g);
}

/* A VM we watch runs; for one we do not, every process's command line is read, once, and only when such a
 * VM's objects are decided on (with every VM running, never): after the scans, so a hypervisor whose objects
 * were found is seen unless it has exited since. When the processes cannot be listed, no VM counts as dead:
 * agent_gc() then fails. */
static bool vm_alive(Gc *g, uint64_t vm_id) {
        if (u64map_get(g->running, vm_id))
                return true;
        if (!g->processes_read) {
                g->processes_read = true;
                g->processes_error = read_processes(g);
        }
        return g->processes_error < 0 || u64map_get(g->alive, vm_id);
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
        VmState st = agent_vm_state(g->a, vm_id);
        return st < 0 ? "unknown to this agent" : vm_state_to_string(st);
}

static void describe(const Resource *r, char *buf, size_t size) {
        const ResourceElem *e = &r->elem;
        char ip[16];
        struct in_addr in = { .s_addr = htonl(e->guest_ip) };
        inet_ntop(AF_INET, &in, ip, sizeof(ip));
        switch (r->kind) {
        case RESOURCE_NFT_PORTFWD:
                snprintf(buf, size, "%s %u -> %s:%u", e->proto == IPPROTO_UDP ? "udp" : "tcp", e->host_port,
                         ip, e->guest_port);
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

/* The TAP prefix and subnet of the backend that found an object, which the heuristic judges by. */
static BackendNetParams params_of(const Gc *g, const Found *f) {
        BackendNetParams p = {};
        if (f->backend)
                (void) dispatcher_backend_params(g->a->dispatcher, f->backend->vtable->name, &p);
        return p;
}

static bool in_subnet(const BackendNetParams *p, uint32_t ip) {
        if (p->prefixlen == 0)
                return false; /* the backend gives no addresses: nothing is in "our subnet" */
        uint32_t mask = ~UINT32_C(0) << (32 - p->prefixlen);
        return (ip & mask) == p->subnet;
}

static int cmp_str(const void *x, const void *y) {
        return strcmp(*(char *const *) x, *(char *const *) y);
}

/* The TAP names and guest addresses of running VMs, from the journal's live set, for the heuristic. */
static int index_running(Gc *g) {
        const LiveSet *ls = journal_live_set(g->a->journal);
        const LiveObject *o;
        uint32_t ip4;
        uint64_t owner;
        g->running_ips = u64map_new();
        g->running_taps = calloc(live_set_n_objects(ls) + 1, sizeof(char *));
        if (!g->running_ips || !g->running_taps)
                return -ENOMEM;
        for (size_t i = 0; live_set_iterate_objects(ls, &i, &o);)
                if (o->kind == RESOURCE_LINK_TAP && o->name && vm_alive(g, o->vm_id))
                        g->running_taps[g->n_running_taps++] = o->name;
        qsort(g->running_taps, g->n_running_taps, sizeof(char *), cmp_str);
        for (size_t i = 0; live_set_iterate_ips(ls, &i, &ip4, &owner);)
                if (vm_alive(g, owner) && u64map_replace(g->running_ips, ip4, (void *) 1) < 0)
                        return -ENOMEM;
        return 0;
}

/* Whether a running VM uses this TAP name / this guest address. */
static bool running_uses(const Gc *g, const char *ifname, uint32_t ip) {
        if (ifname && bsearch(&ifname, g->running_taps, g->n_running_taps, sizeof(char *), cmp_str))
                return true;
        return ip && u64map_get(g->running_ips, ip);
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
        BackendNetParams params = params_of(g, f);
        if (!g->o->heuristic)
                return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0,
                              "no ownership tag and not in the journal")
                               ? 0
                               : -ENOMEM;
        if (g->plan->quarantine)
                return decide(g, GC_SKIP, GC_REASON_QUARANTINE, r, 0,
                              "journal in quarantine: nothing without a tag of ours is deleted, not even by the "
                              "heuristic")
                               ? 0
                               : -ENOMEM;
        switch (r->kind) {
        case RESOURCE_LINK_TAP:
                if (running_uses(g, r->name, 0))
                        return decide(g, GC_SKIP, GC_REASON_RUNNING, r, 0,
                                      "a running VM uses a TAP of this name")
                                       ? 0
                                       : -ENOMEM;
                return decide(g, GC_DELETE, GC_REASON_HEURISTIC, r, 0,
                              "heuristic: untagged TAP named %s*, no running VM uses it", params.tap_prefix)
                               ? 0
                               : -ENOMEM;
        case RESOURCE_NFT_PORTFWD:
                if (!in_subnet(&params, r->elem.guest_ip))
                        return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0,
                                      "untagged, and it points outside our subnet")
                                       ? 0
                                       : -ENOMEM;
                if (running_uses(g, NULL, r->elem.guest_ip))
                        return decide(g, GC_SKIP, GC_REASON_RUNNING, r, 0,
                                      "it points to a running VM's address")
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
                        return decide(g, GC_SKIP, GC_REASON_RUNNING, r, 0,
                                      "a running VM uses this port or address")
                                       ? 0
                                       : -ENOMEM;
                return decide(g, GC_DELETE, GC_REASON_HEURISTIC, r, 0,
                              "heuristic: untagged anti-spoofing element in our table, no running VM uses it")
                               ? 0
                               : -ENOMEM;
        default:
                return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0, "no ownership tag") ? 0
                                                                                                 : -ENOMEM;
        }
}

static const LiveObject *journal_match(const Gc *g, const Found *f) {
        const Resource *r = &f->res;
        const Ident *i = ident_find(g->journal_idx, g->n_journal, f->key);
        if (!i)
                return NULL;
        const LiveObject *o = g->journal_objs[i->index];
        if (resource_kind_is_link(r->kind) && o->ifindex && o->ifindex != r->ifindex)
                return NULL;
        return o;
}

static int decide_found(Gc *g, Found *f) {
        const Resource *r = &f->res;
        const LiveObject *o = journal_match(g, f);
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
                return decide(g, GC_SKIP, GC_REASON_UNKNOWN_OWNERSHIP, r, 0, "tag %s is not of our form",
                              r->tag)
                               ? 0
                               : -ENOMEM;
        if (strcmp(agent, g->a->agent_id_str) != 0)
                return decide(g, GC_SKIP, GC_REASON_OTHER_AGENT, r, 0, "tagged by agent %s", agent)
                               ? 0
                               : -ENOMEM;
        if (vm_id == 0)
                return decide(g, GC_SKIP, GC_REASON_CORE, r, 0, "shared by this agent's VMs (kept)")
                               ? 0
                               : -ENOMEM;
        if (vm_alive(g, vm_id))
                return decide(g, GC_SKIP, GC_REASON_RUNNING, r, vm_id, "VM %s is running",
                              vm_label(g, vm_id, label))
                               ? 0
                               : -ENOMEM;
        if (o) {
                d = decide(g, GC_DELETE, GC_REASON_OWNED, r, vm_id, "owned by VM %s (%s)",
                           vm_label(g, vm_id, label), vm_state_word(g, vm_id));
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
        char label[40];
        for (size_t k = 0; k < g->n_journal; k++) {
                const LiveObject *o = g->journal_objs[k];
                if (ident_find(g->found_idx, g->n_found, g->journal_keys[k]))
                        continue;
                Resource r = { .kind = (ResourceKind) o->kind, .vm_id = o->vm_id, .ifindex = o->ifindex };
                snprintf(r.name, sizeof(r.name), "%s", o->name ? o->name : "");
                snprintf(r.tag, sizeof(r.tag), "%s", o->tag ? o->tag : "");
                if (o->key_size)
                        (void) resource_key_decode(r.kind, o->key, o->key_size, &r.elem);
                GcDecision *d;
                if (o->vm_id == 0)
                        d = decide(g, GC_SKIP, GC_REASON_CORE, &r, 0,
                                   "journaled, not in the kernel now (made again "
                                   "at the next VM start)");
                else if (vm_alive(g, o->vm_id))
                        d = decide(g, GC_SKIP, GC_REASON_RUNNING, &r, o->vm_id,
                                   "VM %s is running (its object is missing from the kernel)",
                                   vm_label(g, o->vm_id, label));
                else if (g->plan->quarantine)
                        d = decide(
                                g, GC_SKIP, GC_REASON_QUARANTINE, &r, o->vm_id,
                                "journal in quarantine: only objects the kernel's tags prove are acted on");
                else {
                        d = decide(g, GC_FORGET, GC_REASON_GONE, &r, o->vm_id,
                                   "journaled for VM %s, already gone from the kernel",
                                   vm_label(g, o->vm_id, label));
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
        const char *text = why && why[0] ? why : strerror(-r);
        size_t n = strlen(text);
        if (n < sizeof(d->error))
                memcpy(d->error, text, n + 1);
        else { /* a decision's reason is one line of the plan: cut, and said so */
                n = sizeof(d->error) - 4;
                memcpy(d->error, text, n);
                memcpy(d->error + n, "...", 4);
                (void) utf8_sanitize(d->error);
        }
        p->n_failed++;
}

static void mark_vm_failed(GcPlan *p, uint64_t vm_id, int r, const char *why) {
        for (size_t i = 0; i < p->n; i++)
                if (p->items[i].journaled && p->items[i].vm_id == vm_id && p->items[i].action != GC_SKIP)
                        mark_failed(p, &p->items[i], r, why);
}

static int carry_out(Gc *g) {
        GcPlan *p = g->plan;
        Agent *a = g->a;
        _cleanup_free_ uint64_t *ids = calloc(p->n + 1, sizeof(uint64_t));
        U64Map *seen = u64map_new();
        size_t n_ids = 0;
        int r = 0;

        if (!ids || !seen) {
                u64map_free(seen);
                return -ENOMEM;
        }
        /* Journaled objects: through the dispatcher, all VMs in one go (RELEASE_INTENT for all, one sync,
         * each backend's removals in one batch with the tags re-checked, RELEASED, one sync). */
        for (size_t i = 0; i < p->n && r >= 0; i++) {
                GcDecision *d = &p->items[i];
                if (d->action == GC_SKIP || !d->journaled || d->vm_id == 0)
                        continue;
                r = u64map_put(seen, d->vm_id, d);
                if (r == 0)
                        ids[n_ids++] = d->vm_id;
                else if (r == -EEXIST)
                        r = 0;
        }
        u64map_free(seen);
        if (r < 0)
                return r;
        if (n_ids && vm_net_down_many(a->dispatcher, ids, n_ids) < 0)
                /* Which VM's failed: one at a time, for each its own reason. */
                for (size_t k = 0; k < n_ids; k++) {
                        r = vm_net_down(a->dispatcher, ids[k]);
                        if (r < 0)
                                mark_vm_failed(p, ids[k], r, dispatcher_error(a->dispatcher));
                }
        /* Not journaled: removed by their backend, which re-reads each kernel tag first; in one batch per
         * backend where it can, one at a time (for each its own reason) if that fails. */
        for (size_t bi = 0; bi < a->n_backends; bi++) {
                Backend *b = a->backends[bi];
                _cleanup_free_ Resource *batch = calloc(p->n + 1, sizeof(Resource));
                _cleanup_free_ size_t *at = calloc(p->n + 1, sizeof(size_t));
                size_t n = 0;
                if (!batch || !at)
                        return -ENOMEM;
                for (size_t i = 0; i < p->n; i++) {
                        GcDecision *d = &p->items[i];
                        if (d->action == GC_DELETE && !d->journaled && d->backend == b) {
                                at[n] = i;
                                batch[n++] = d->res;
                        }
                }
                if (n == 0 || (n > 1 && b->vtable->remove_many && b->vtable->remove_many(b, batch, n) >= 0))
                        continue;
                for (size_t k = 0; k < n; k++) {
                        GcDecision *d = &p->items[at[k]];
                        r = b->vtable->remove(b, &d->res);
                        if (r < 0)
                                mark_failed(p, d, r, b->error.code == r ? b->error.message : NULL);
                }
        }
        return 0; /* what failed is in the plan: n_failed, and each decision's error */
}

int agent_gc(Agent *a, const GcOptions *o, GcPlan *ret) {
        Gc g = { .a = a, .o = o, .plan = ret };
        int r;

        *ret = (GcPlan){ .dry_run = o->dry_run, .heuristic = o->heuristic };
        error_clear(&a->error);
        ret->quarantine = journal_state(a->journal) == JOURNAL_STATE_QUARANTINE;
        /* Dead hypervisors first: their teardown is the ordinary one, like a crash. */
        if (!o->dry_run)
                agent_refresh(a);

        g.running = u64map_new();
        g.alive = u64map_new();
        if (!g.running || !g.alive) {
                u64map_free(g.running);
                u64map_free(g.alive);
                return -ENOMEM;
        }
        void *v;
        for (size_t i = 0; u64map_iterate(a->vms, &i, NULL, &v);)
                if (vm_manager_pid(a->vmm, ((AgentVm *) v)->id) &&
                    (r = u64map_put(g.running, ((AgentVm *) v)->id, (void *) 1)) < 0)
                        goto out;
        r = scan_all(&g);
        if (r >= 0)
                r = index_journal(&g);
        if (r >= 0 && o->heuristic) /* only the heuristic asks what running VMs use */
                r = index_running(&g);
        if (r < 0)
                goto out;
        for (size_t i = 0; i < g.n_found; i++)
                if ((r = decide_found(&g, &g.found[i])) < 0)
                        goto out;
        r = decide_journal_only(&g);
        if (r < 0)
                goto out;
        if (g.processes_error < 0) {
                r = g.processes_error;
                error_errno(&a->error, r, "cannot list processes: %s", strerror(-r));
                goto out;
        }
        if (!o->dry_run) {
                r = carry_out(&g);
                agent_maybe_compact(a);
        }
out:
        free(g.found);
        free(g.found_idx);
        free(g.journal_idx);
        free(g.journal_objs);
        free(g.journal_keys);
        free(g.running_taps);
        u64map_free(g.running_ips);
        u64map_free(g.alive);
        u64map_free(g.running);
        if (r < 0)
                gc_plan_clear(ret);
        return r;
}
