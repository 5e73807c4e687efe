/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "agent/backend-loader.h"
#include "agent/dispatcher.h"
#include "util/crashpoint.h"
#include "util/hashmap.h"
#include "util/log.h"
#include "util/macro.h"

struct Dispatcher {
        Journal *journal;
        char agent_id[64];
        Backend **backends;
        size_t n_backends;
        BackendNetParams *params; /* per backend: its TAP prefix and address pool */
        ResourceSet
                *core; /* per backend: its shared objects, to tell whose a core object of the journal is */
        Error error;
};

#define F(x) JOURNAL_FIELD_BIT(JOURNAL_FIELD_##x)

_printf_(3, 4) static int fail(Dispatcher *d, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = error_setv(&d->error, r, error_kind_from_errno(r), fmt, ap);
        va_end(ap);
        return r;
}

static int journal_failed(Dispatcher *d, int r) {
        return fail(d, r, "ownership journal: %s", journal_error_message(d->journal));
}

const char *dispatcher_error(const Dispatcher *d) {
        return error_message(&d->error);
}

const Error *dispatcher_last_error(const Dispatcher *d) {
        return &d->error;
}

int dispatcher_new(const DispatcherConfig *cfg, Dispatcher **ret) {
        Dispatcher *d = calloc(1, sizeof(Dispatcher));
        if (!d)
                return -ENOMEM;
        d->backends = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof(Backend *));
        if (!d->backends) {
                free(d);
                return -ENOMEM;
        }
        memcpy(d->backends, cfg->backends, cfg->n_backends * sizeof(Backend *));
        d->n_backends = cfg->n_backends;
        d->journal = cfg->journal;
        snprintf(d->agent_id, sizeof(d->agent_id), "%s", cfg->agent_id);
        d->params = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof(BackendNetParams));
        d->core = calloc(cfg->n_backends ? cfg->n_backends : 1, sizeof(ResourceSet));
        if (!d->params || !d->core) {
                dispatcher_free(d);
                return -ENOMEM;
        }
        for (size_t i = 0; i < d->n_backends; i++) {
                Backend *b = d->backends[i];
                if (b->vtable->net_params)
                        b->vtable->net_params(b, &d->params[i]);
                int r = b->vtable->plan_core(b, &d->core[i]);
                if (r < 0) {
                        dispatcher_free(d);
                        return r;
                }
        }
        *ret = d;
        return 0;
}

Dispatcher *dispatcher_free(Dispatcher *d) {
        if (!d)
                return NULL;
        for (size_t i = 0; d->core && i < d->n_backends; i++)
                resource_set_clear(&d->core[i]);
        free(d->core);
        free(d->params);
        free(d->backends);
        free(d);
        return NULL;
}

void dispatcher_tap_name(const char *prefix, uint64_t vm_id, char ret[16]) {
        /* prefix + as many low hex digits of the id as fit in 15 bytes */
        size_t p = strnlen(prefix, 11), digits = 15 - p;
        if (digits > 16)
                digits = 16;
        char hex[17];
        snprintf(hex, sizeof(hex), "%016" PRIx64, vm_id);
        snprintf(ret, 16, "%.*s%s", (int) p, prefix, hex + 16 - digits);
}

void dispatcher_mac(uint64_t vm_id, uint8_t ret[6]) {
        ret[0] = 0x02; /* locally administered, unicast */
        for (int i = 1; i < 6; i++)
                ret[i] = (uint8_t) (vm_id >> (8 * (5 - i)));
}

static ssize_t backend_index(const Dispatcher *d, const char *name) {
        for (size_t i = 0; i < d->n_backends; i++)
                if (name && strcmp(d->backends[i]->vtable->name, name) == 0)
                        return (ssize_t) i;
        return -ENOENT;
}

static Backend *find_backend(Dispatcher *d, const char *name) {
        ssize_t i = backend_index(d, name);
        return i < 0 ? NULL : d->backends[i];
}

int dispatcher_backend_params(const Dispatcher *d, const char *name, BackendNetParams *ret) {
        ssize_t i = backend_index(d, name);
        if (i < 0)
                return (int) i;
        *ret = d->params[i];
        return 0;
}

int dispatcher_check_ports(Dispatcher *d, const char *backend, const char *vm_name, const PortForward *ports,
                           size_t n) {
        Backend *b = find_backend(d, backend);
        error_clear(&d->error);
        if (!b)
                return fail(d, -ENOENT, "VM %s: unknown backend \"%s\"", vm_name, backend ? backend : "");
        if (n == 0 || !b->vtable->check_ports)
                return 0;
        int r = b->vtable->check_ports(b, vm_name, ports, n);
        return r < 0 ? backend_failed(b, r, &d->error) : 0;
}

int dispatcher_backend_forwards_ports(Dispatcher *d, const char *name) {
        Backend *b = find_backend(d, name);
        return b ? b->vtable->forwards_ports : -ENOENT;
}

/* The backend an object of the live set belongs to: its VM's, or for shared objects the one whose
 * plan_core() makes an object of that kind and name. */
static Backend *backend_of(Dispatcher *d, const LiveObject *o) {
        if (o->vm_id == 0) {
                Backend *of_kind = NULL; /* a core object of an earlier config (the table renamed since) */
                for (size_t i = 0; i < d->n_backends; i++)
                        for (size_t k = 0; k < d->core[i].n; k++) {
                                const Resource *c = &d->core[i].items[k];
                                if ((int) c->kind != (int) o->kind)
                                        continue;
                                if (o->name && strcmp(c->name, o->name) == 0)
                                        return d->backends[i];
                                if (!of_kind)
                                        of_kind = d->backends[i];
                        }
                return of_kind;
        }
        const LiveVm *vm = live_set_get_vm(journal_live_set(d->journal), o->vm_id);
        return vm ? find_backend(d, vm->backend) : NULL;
}

static void object_to_resource(const LiveObject *o, Resource *r) {
        *r = (Resource){
                .kind = (ResourceKind) o->kind, .vm_id = o->vm_id, .ifindex = o->ifindex, .oid = o->oid
        };
        snprintf(r->name, sizeof(r->name), "%s", o->name);
        snprintf(r->tag, sizeof(r->tag), "%s", o->tag);
        (void) resource_key_decode(r->kind, o->key, o->key_size, &r->elem);
}

static int append(Dispatcher *d, JournalRecord *r) {
        int k = journal_append(d->journal, r);
        return k < 0 ? journal_failed(d, k) : 0;
}

static int sync_journal(Dispatcher *d) {
        int k = journal_sync(d->journal);
        return k < 0 ? journal_failed(d, k) : 0;
}

/* --- the VMs' own records: the ledger the agent and the VM manager write through ---------------------- */

int dispatcher_define_vm(Dispatcher *d, uint64_t vm_id, const char *name, const char *backend,
                         const char *definition, bool sync) {
        JournalRecord rec = { .type = JOURNAL_VM_DEFINE,
                              .fields = F(VM_ID) | F(VM_NAME) | F(BACKEND),
                              .vm_id = vm_id,
                              .vm_name = name,
                              .backend = backend,
                              .definition = definition };
        if (definition)
                rec.fields |= F(DEFINITION);
        error_clear(&d->error);
        int r = append(d, &rec);
        return r < 0 || !sync ? r : sync_journal(d);
}

int dispatcher_undefine_vm(Dispatcher *d, uint64_t vm_id) {
        JournalRecord rec = { .type = JOURNAL_VM_UNDEFINE, .fields = F(VM_ID), .vm_id = vm_id };
        error_clear(&d->error);
        int r = append(d, &rec);
        return r < 0 ? r : sync_journal(d);
}

int dispatcher_vm_started(Dispatcher *d, uint64_t vm_id, uint32_t pid, uint64_t start_time,
                          const uint8_t boot_id[16]) {
        JournalRecord rec = { .type = JOURNAL_VM_STARTED,
                              .fields = F(VM_ID) | F(PID) | F(START_TIME) | F(BOOT_ID),
                              .vm_id = vm_id,
                              .pid = pid,
                              .start_time = start_time };
        memcpy(rec.boot_id, boot_id, 16);
        error_clear(&d->error);
        int r = append(d, &rec);
        return r < 0 ? r : sync_journal(d);
}

int dispatcher_vm_exited(Dispatcher *d, uint64_t vm_id, const VmExit *e, bool sync) {
        JournalRecord rec = { .type = JOURNAL_VM_EXITED,
                              .fields = F(VM_ID) | F(VM_STATE) | F(REASON),
                              .vm_id = vm_id,
                              .vm_state = e->state,
                              .reason = e->reason };
        if (e->exit_status >= 0) {
                rec.fields |= F(EXIT_STATUS);
                rec.exit_status = e->exit_status;
        }
        if (e->exit_signal >= 0) {
                rec.fields |= F(EXIT_SIGNAL);
                rec.exit_signal = e->exit_signal;
        }
        error_clear(&d->error);
        int r = append(d, &rec);
        return r < 0 || !sync ? r : sync_journal(d);
}

int dispatcher_sync(Dispatcher *d) {
        error_clear(&d->error);
        return sync_journal(d);
}

static int append_intent(Dispatcher *d, Resource *r) {
        uint8_t key[64];
        size_t ks = resource_key_encode(r, key, sizeof(key));
        JournalRecord rec = {
                .type = JOURNAL_INTENT,
                .fields = F(OID) | F(VM_ID) | F(OBJ_KIND) | F(OBJ_NAME) | F(OBJ_TAG),
                .oid = journal_new_oid(d->journal),
                .vm_id = r->vm_id,
                .obj_kind = (uint32_t) r->kind,
                .obj_name = r->name,
                .obj_tag = r->tag,
                .obj_key = key,
                .obj_key_size = ks,
        };
        if (ks > 0)
                rec.fields |= F(OBJ_KEY);
        r->oid = rec.oid;
        return append(d, &rec);
}

static int append_oid(Dispatcher *d, JournalRecordType type, uint64_t oid, uint32_t ifindex) {
        JournalRecord rec = { .type = type, .fields = F(OID), .oid = oid };
        if (ifindex) {
                rec.fields |= F(OBJ_IFINDEX);
                rec.obj_ifindex = ifindex;
        }
        return append(d, &rec);
}

static bool port_valid(const PortForward *p) {
        return (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP) && p->host_port > 0 && p->guest_port > 0;
}

static const char *proto_name(uint8_t proto) {
        return proto == IPPROTO_TCP ? "tcp" : proto == IPPROTO_UDP ? "udp" : "?";
}

/* Refuses a request whose host ports are forwarded already (tcp and udp separately). */
static int check_ports(Dispatcher *d, const VmNetRequest *req) {
        const LiveSet *ls = journal_live_set(d->journal);
        const LiveObject *o;

        for (size_t i = 0; i < req->n_ports; i++) {
                if (!port_valid(&req->ports[i]))
                        return fail(d, -EINVAL, "VM %s: invalid port forward (ports 1-65535, tcp or udp)",
                                    req->vm_name);
                for (size_t j = 0; j < i; j++)
                        if (req->ports[j].proto == req->ports[i].proto &&
                            req->ports[j].host_port == req->ports[i].host_port)
                                return fail(d, -EINVAL, "VM %s: port %u/%s given twice", req->vm_name,
                                            req->ports[i].host_port, proto_name(req->ports[i].proto));
        }
        for (size_t it = 0; live_set_iterate_objects(ls, &it, &o);) {
                if (o->kind != RESOURCE_NFT_PORTFWD)
                        continue;
                ResourceElem e;
                if (resource_key_decode(RESOURCE_NFT_PORTFWD, o->key, o->key_size, &e) < 0)
                        continue;
                for (size_t i = 0; i < req->n_ports; i++)
                        if (e.proto == req->ports[i].proto && e.host_port == req->ports[i].host_port) {
                                const LiveVm *vm = live_set_get_vm(ls, o->vm_id);
                                return fail(d, -EADDRINUSE, "port %u/%s already forwarded to VM %s",
                                            e.host_port, proto_name(e.proto), vm ? vm->name : "?");
                        }
        }
        return 0;
}

static bool vm_has_objects(Dispatcher *d, uint64_t vm_id) {
        const LiveVm *vm = live_set_get_vm(journal_live_set(d->journal), vm_id);
        return vm && vm->n_objects > 0;
}

/* The lowest free host address of the backend's subnet: never the network, the gateway or the broadcast
 * address. */
static int allocate_ip(Dispatcher *d, const BackendNetParams *p, uint32_t *ret) {
        const LiveSet *ls = journal_live_set(d->journal);
        if (p->prefixlen < 1 || p->prefixlen > 30)
                return -EADDRNOTAVAIL;
        uint32_t size = UINT32_C(1) << (32 - p->prefixlen);
        for (uint32_t i = 1; i + 1 < size; i++) {
                uint32_t ip = p->subnet + i;
                if (ip == p->gateway || live_set_get_ip_owner(ls, ip))
                        continue;
                *ret = ip;
                return 0;
        }
        return -EADDRNOTAVAIL;
}

int dispatcher_vm_ip(const Dispatcher *d, uint64_t vm_id, uint32_t *ret) {
        return live_set_get_vm_ip(journal_live_set(d->journal), vm_id, ret);
}

static int live_elems(Dispatcher *d, Backend *b, ResourceSet *ret);
static int release(Dispatcher *d, Backend *b, Resource *objs, size_t n, size_t *ret_stale);

static const Resource *find_in_scan(const ResourceSet *scan, const Resource *r) {
        for (size_t i = 0; i < scan->n; i++) {
                const Resource *s = &scan->items[i];
                if (s->kind != r->kind || strcmp(s->tag, r->tag) != 0)
                        continue;
                if (resource_kind_is_link(s->kind) && strcmp(s->name, r->name) != 0)
                        continue;
                return s;
        }
        return NULL;
}

/* apply() failed. Whatever of the plan the kernel has anyway with its tag — made and not taken away
 * again, or made although the answer saying so was lost — is ours and must not be left unowned: it is
 * journaled CREATED (and created set), the rest ABORTED. Only the items with fresh[i] (all if NULL) were
 * announced by this call. When the kernel cannot be read, the intents stay pending, for
 * dispatcher_recover() to settle by the same tags. *ret_found: how many were found. */
static int settle_failed_apply(Dispatcher *d, Backend *b, ResourceSet *plan, const bool *fresh,
                               size_t *ret_found) {
        _cleanup_(resource_set_clear) ResourceSet scan = {};
        size_t found = 0;
        int r;

        *ret_found = 0;
        r = b->vtable->scan(b, &scan);
        if (r < 0)
                return r;
        for (size_t i = 0; i < plan->n && r >= 0; i++) {
                Resource *x = &plan->items[i];
                if (fresh && !fresh[i])
                        continue;
                const Resource *s = find_in_scan(&scan, x);
                x->created = s;
                if (s) {
                        x->ifindex = s->ifindex;
                        found++;
                }
                r = append_oid(d, s ? JOURNAL_CREATED : JOURNAL_ABORTED, x->oid, s ? s->ifindex : 0);
        }
        if (r < 0)
                return r;
        *ret_found = found;
        return sync_journal(d);
}

/* Shared objects: created (or found, by tag) on every bring-up; journaled once. */
static int ensure_core(Dispatcher *d, Backend *b) {
        const LiveSet *ls = journal_live_set(d->journal);
        _cleanup_(resource_set_clear) ResourceSet core = {};
        int r;

        r = b->vtable->plan_core(b, &core);
        if (r < 0 || core.n == 0)
                return r < 0 ? backend_failed(b, r, &d->error) : 0;

        _cleanup_free_ bool *fresh = calloc(core.n, sizeof(bool));
        size_t n_fresh = 0;
        if (!fresh)
                return -ENOMEM;
        for (size_t i = 0; i < core.n; i++) {
                const LiveObject *o;
                fresh[i] = true;
                for (size_t it = 0; live_set_iterate_objects(ls, &it, &o);)
                        if (o->vm_id == 0 && (ResourceKind) o->kind == core.items[i].kind &&
                            strcmp(o->tag, core.items[i].tag) == 0)
                                fresh[i] = false;
                if (fresh[i] && (r = append_intent(d, &core.items[i])) < 0)
                        return r;
                n_fresh += fresh[i];
        }
        /* Nothing new to announce (the tables of every bring-up but the first): no sync of its own, and
         * what the caller has pending (a RunVM's VM_DEFINE) rides on the VM's intents. */
        r = n_fresh > 0 ? sync_journal(d) : 0;
        if (r < 0)
                return r;

        r = b->vtable->apply(b, &core);
        if (r < 0) {
                size_t found;
                backend_failed(b, r, &d->error);
                /* Shared objects that exist after all stay, journaled: the next bring-up uses them. */
                if (settle_failed_apply(d, b, &core, fresh, &found) < 0)
                        error_append(&d->error,
                                     " (and the kernel could not be read back: recovery will settle it)");
                return r;
        }
        for (size_t i = 0; i < core.n && r >= 0; i++)
                if (fresh[i])
                        r = append_oid(d, JOURNAL_CREATED, core.items[i].oid, core.items[i].ifindex);
        if (r >= 0 && n_fresh > 0)
                r = sync_journal(d);

        /* Tables the journal says exist had to be made again: someone flushed the ruleset. Put every
         * running VM's elements back. */
        for (size_t i = 0; i < core.n && r >= 0; i++)
                if (!fresh[i] && core.items[i].created && core.items[i].kind == RESOURCE_NFT_TABLES &&
                    b->vtable->rebuild) {
                        _cleanup_(resource_set_clear) ResourceSet elems = {};
                        r = live_elems(d, b, &elems);
                        if (r >= 0) {
                                r = b->vtable->rebuild(b, elems.items, elems.n);
                                if (r < 0 && backend_failed(b, r, &d->error) < 0)
                                        error_prefix(&d->error, "rebuilding the nftables tables");
                        }
                }
        return r;
}

/* The elements of every live VM of this backend, for a rebuild after someone flushed the ruleset. */
static int live_elems(Dispatcher *d, Backend *b, ResourceSet *ret) {
        const LiveSet *ls = journal_live_set(d->journal);
        const LiveObject *o;
        for (size_t it = 0; live_set_iterate_objects(ls, &it, &o);) {
                if (o->state != LIVE_OBJECT_CREATED || !resource_kind_is_elem((ResourceKind) o->kind) ||
                    backend_of(d, o) != b)
                        continue;
                Resource r;
                object_to_resource(o, &r);
                int k = resource_set_add(ret, &r);
                if (k < 0)
                        return k;
        }
        return 0;
}

static int apply_with_rebuild(Dispatcher *d, Backend *b, ResourceSet *plan) {
        int r = b->vtable->apply(b, plan);
        if (r != -ENOENT || !b->vtable->rebuild)
                return r;

        /* Our table is gone (someone ran `nft flush ruleset`): rebuild it with every running VM's
         * elements from the journal, then try once more. */
        _cleanup_(resource_set_clear) ResourceSet elems = {};
        r = live_elems(d, b, &elems);
        if (r >= 0)
                r = b->vtable->rebuild(b, elems.items, elems.n);
        if (r < 0)
                return r;
        return b->vtable->apply(b, plan);
}

/* The address a failed bring-up had taken is given back (IP_FREE), and whatever is pending synced. */
static int undo_ip(Dispatcher *d, VmNetPending *p, int r) {
        if (p->ip_new) {
                JournalRecord ipf = { .type = JOURNAL_IP_FREE, .fields = F(IP4), .ip4 = p->info.ip4 };
                (void) append(d, &ipf);
        }
        int s = sync_journal(d);
        return r < 0 ? r : s;
}

void vm_net_pending_clear(VmNetPending *p) {
        resource_set_clear(&p->plan);
        *p = (VmNetPending){};
}

int vm_net_prepare(Dispatcher *d, const VmNetRequest *req, VmNetPending *p, VmNetInfo *ret) {
        const LiveSet *ls = journal_live_set(d->journal);
        Backend *b;
        int r;

        error_clear(&d->error);
        *p = (VmNetPending){};
        if (!req || req->vm_id == 0 || !vm_name_valid(req->vm_name))
                return fail(d, -EINVAL, "invalid VM name \"%s\" (want ^[a-z][a-z0-9-]{0,31}$)",
                            req && req->vm_name ? req->vm_name : "");
        ssize_t bi = backend_index(d, req->backend);
        if (bi < 0)
                return fail(d, -ENOENT, "VM %s: unknown backend \"%s\"", req->vm_name,
                            req->backend ? req->backend : "");
        b = d->backends[bi];
        const BackendNetParams *params = &d->params[bi];
        r = check_ports(d, req);
        if (r < 0)
                return r;
        if (vm_has_objects(d, req->vm_id))
                return fail(d, -EBUSY, "the network of VM %s is already up", req->vm_name);

        const LiveVm *vm = live_set_get_vm(ls, req->vm_id);
        if (!vm || strcmp(vm->name, req->vm_name) != 0 || strcmp(vm->backend, req->backend) != 0)
                return fail(d, -ENOENT,
                            "VM %s (%016" PRIx64 ") is not defined with backend %s in the journal",
                            req->vm_name, req->vm_id, req->backend);

        r = ensure_core(d, b);
        if (r < 0)
                return error_prefix(&d->error, "VM %s", req->vm_name);

        p->vm_id = req->vm_id;
        p->backend = (size_t) bi;
        snprintf(p->vm_name, sizeof(p->vm_name), "%s", req->vm_name);
        dispatcher_mac(req->vm_id, p->info.mac);
        if (b->vtable->uses_addresses) {
                if (dispatcher_vm_ip(d, req->vm_id, &p->info.ip4) < 0) {
                        r = allocate_ip(d, params, &p->info.ip4);
                        if (r < 0)
                                return fail(d, r, "VM %s: no free address left in the subnet", req->vm_name);
                        JournalRecord ip = { .type = JOURNAL_IP_ALLOC,
                                             .fields = F(VM_ID) | F(IP4),
                                             .vm_id = req->vm_id,
                                             .ip4 = p->info.ip4 };
                        r = append(d, &ip);
                        if (r < 0)
                                return r;
                        p->ip_new = true;
                }
        }

        if (params->tap_prefix[0])
                dispatcher_tap_name(params->tap_prefix, req->vm_id, p->info.tap);
        VmNetSpec spec = { .vm_id = req->vm_id,
                           .vm_name = req->vm_name,
                           .tap_name = p->info.tap,
                           .ip4 = p->info.ip4,
                           .ports = req->ports,
                           .n_ports = req->n_ports };
        memcpy(spec.mac, p->info.mac, 6);
        r = b->vtable->plan(b, &spec, &p->plan);
        if (r < 0) {
                backend_failed(b, r, &d->error);
                r = undo_ip(d, p, r);
                vm_net_pending_clear(p);
                return r;
        }

        for (size_t i = 0; i < p->plan.n; i++) {
                r = append_intent(d, &p->plan.items[i]);
                if (r < 0) {
                        vm_net_pending_clear(p);
                        return r;
                }
        }

        bool has_tap = false;
        for (size_t i = 0; i < p->plan.n; i++)
                has_tap = has_tap || p->plan.items[i].kind == RESOURCE_LINK_TAP;
        if (!has_tap)
                p->info.tap[0] = '\0';
        if (p->info.ip4) {
                p->info.gateway = params->gateway;
                p->info.prefixlen = params->prefixlen;
                p->info.kernel_ip_arg = params->kernel_ip_arg;
        }
        p->prepared = true;
        if (ret)
                *ret = p->info;
        return 0;
}

int vm_net_apply(Dispatcher *d, VmNetPending *p) {
        int r;

        assert(p->prepared);
        error_clear(&d->error);
        Backend *b = d->backends[p->backend];
        /* The intents are durable before the kernel changes (the caller synced them). */
        assert(journal_synced_lsn(d->journal) == journal_last_lsn(d->journal));

        r = apply_with_rebuild(d, b, &p->plan);
        if (r < 0) {
                size_t found = 0;
                backend_failed(b, r, &d->error);
                error_prefix(&d->error, "VM %s", p->vm_name);
                Error cause = d->error;
                if (settle_failed_apply(d, b, &p->plan, NULL, &found) < 0)
                        error_append(&cause,
                                     " (and the kernel could not be read back: recovery will settle it)");
                else if (found > 0) {
                        /* A failed request leaves nothing: take what exists anyway away again. */
                        ResourceSet made = {};
                        int k = 0;
                        for (size_t i = 0; i < p->plan.n && k >= 0; i++)
                                if (p->plan.items[i].created)
                                        k = resource_set_add(&made, &p->plan.items[i]);
                        if (k >= 0)
                                k = release(d, b, made.items, made.n, NULL);
                        resource_set_clear(&made);
                        if (k < 0)
                                error_append(&cause,
                                             " (and %zu object(s) made anyway could not be removed: %s)",
                                             found, error_message(&d->error));
                }
                d->error = cause;
                r = undo_ip(d, p, r);
                vm_net_pending_clear(p);
                return r;
        }
        r = CRASH_POINT("dispatcher-up-applied");
        for (size_t i = 0; i < p->plan.n && r >= 0; i++)
                r = append_oid(d, JOURNAL_CREATED, p->plan.items[i].oid, p->plan.items[i].ifindex);
        vm_net_pending_clear(p);
        return r < 0 ? r : CRASH_POINT("dispatcher-up-created-journaled");
}

int vm_net_abandon(Dispatcher *d, VmNetPending *p) {
        int r = 0;
        if (!p->prepared)
                return 0;
        /* Nothing was made: each intent ends as never carried out. */
        for (size_t i = 0; i < p->plan.n && r >= 0; i++)
                r = append_oid(d, JOURNAL_ABORTED, p->plan.items[i].oid, 0);
        r = undo_ip(d, p, r);
        vm_net_pending_clear(p);
        return r;
}

int vm_net_up(Dispatcher *d, const VmNetRequest *req, VmNetInfo *ret) {
        VmNetPending p;
        int r = vm_net_prepare(d, req, &p, ret);
        if (r < 0)
                return r;
        r = sync_journal(d);
        if (r < 0) {
                vm_net_pending_clear(&p);
                return r;
        }
        r = vm_net_apply(d, &p);
        if (r >= 0 && !req->created_sync_later)
                r = sync_journal(d);
        return r;
}

/* Releases the given live objects of one backend: RELEASE_INTENT (synced), removal, RELEASED. Objects
 * that turned out not to be ours any more are released from the journal (we own nothing there) and
 * counted in *ret_stale. */
static int release(Dispatcher *d, Backend *b, Resource *objs, size_t n, size_t *ret_stale) {
        const LiveSet *ls = journal_live_set(d->journal);
        size_t stale = 0;
        int r;

        for (size_t i = 0; i < n; i++) {
                const LiveObject *o = live_set_get_object(ls, objs[i].oid);
                if (o && o->state != LIVE_OBJECT_RELEASING &&
                    (r = append_oid(d, JOURNAL_RELEASE_INTENT, objs[i].oid, 0)) < 0)
                        return r;
        }
        r = sync_journal(d);
        if (r < 0)
                return r;
        r = CRASH_POINT("dispatcher-down-release-intents-synced");
        if (r < 0)
                return r;

        /* Only under a tag of this agent's own form: a corrupt or forged record with an empty or foreign
         * tag would have the backend delete whatever carries that tag (an untagged link of someone else's).
         * Such records are released from the journal and the object is left alone. */
        _cleanup_free_ Resource *ours = malloc(sizeof(Resource) * (n ? n : 1));
        size_t n_ours = 0;
        if (!ours)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                char agent[64], role[32];
                uint64_t vm;
                if (resource_tag_parse(objs[i].tag, agent, &vm, role) >= 0 &&
                    strcmp(agent, d->agent_id) == 0 && vm == objs[i].vm_id)
                        ours[n_ours++] = objs[i];
                else {
                        stale++;
                        log_warning(
                                "ownership journal: object %s %s is recorded with tag \"%s\", not one of "
                                "this agent's (chvm1:%s:...): not removed",
                                resource_kind_to_string(objs[i].kind) ? resource_kind_to_string(objs[i].kind)
                                                                      : "unknown",
                                objs[i].name, objs[i].tag, d->agent_id);
                }
        }
        if (b && b->vtable->remove_many && n_ours > 1) {
                r = b->vtable->remove_many(b, ours, n_ours);
                if (r == -ESTALE)
                        stale++;
                else if (r < 0)
                        return backend_failed(b, r, &d->error);
        } else if (b) {
                for (size_t i = 0; i < n_ours; i++) {
                        r = b->vtable->remove(b, &ours[i]);
                        if (r == -ESTALE)
                                stale++;
                        else if (r < 0)
                                return backend_failed(b, r, &d->error);
                }
        }
        r = CRASH_POINT("dispatcher-down-removed");
        if (r < 0)
                return r;

        for (size_t i = 0; i < n; i++)
                if ((r = append_oid(d, JOURNAL_RELEASED, objs[i].oid, 0)) < 0)
                        return r;
        if (ret_stale)
                *ret_stale = stale;
        return 0;
}

int vm_net_down_many(Dispatcher *d, const uint64_t *vm_ids, size_t n) {
        const LiveSet *ls = journal_live_set(d->journal);
        _cleanup_free_ ResourceSet *per_backend =
                calloc(d->n_backends ? d->n_backends : 1, sizeof(ResourceSet));
        U64Map *wanted = u64map_new();
        const LiveObject *o;
        size_t stale = 0;
        uint32_t ip4;
        uint64_t owner;
        int r = 0;

        error_clear(&d->error);
        if (!per_backend || !wanted) {
                u64map_free(wanted);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++)
                if (vm_ids[i] != 0 && live_set_get_vm(ls, vm_ids[i]) &&
                    (r = u64map_replace(wanted, vm_ids[i], (void *) 1)) < 0)
                        goto out;

        /* Every object of those VMs, grouped by backend so each backend removes its share in one go. */
        for (size_t it = 0; live_set_iterate_objects(ls, &it, &o);) {
                if (o->vm_id == 0 || !u64map_get(wanted, o->vm_id))
                        continue;
                const LiveVm *vm = live_set_get_vm(ls, o->vm_id);
                Backend *b = backend_of(d, o);
                size_t bi = 0;
                while (b && bi < d->n_backends && d->backends[bi] != b)
                        bi++;
                if (!b || bi == d->n_backends) {
                        r = fail(d, -ENOENT,
                                 "VM %s: its backend \"%s\" is not loaded; its objects stay until it is",
                                 vm->name, vm->backend);
                        goto out;
                }
                Resource x;
                object_to_resource(o, &x);
                if ((r = resource_set_add(&per_backend[bi], &x)) < 0)
                        goto out;
        }
        for (size_t bi = 0; bi < d->n_backends; bi++) {
                size_t s = 0;
                if (per_backend[bi].n == 0)
                        continue;
                r = release(d, d->backends[bi], per_backend[bi].items, per_backend[bi].n, &s);
                if (r < 0) {
                        /* Say whose network it was: "VM web: cannot list ...", or how many VMs. */
                        const LiveVm *vm = live_set_get_vm(ls, per_backend[bi].items[0].vm_id);
                        if (u64map_size(wanted) == 1 && vm)
                                error_prefix(&d->error, "VM %s: taking its network down", vm->name);
                        else
                                error_prefix(&d->error, "taking the network of %zu VMs down",
                                             u64map_size(wanted));
                        goto out;
                }
                stale += s;
        }
        for (size_t it = 0; live_set_iterate_ips(ls, &it, &ip4, &owner);) {
                if (!u64map_get(wanted, owner))
                        continue;
                JournalRecord ipf = { .type = JOURNAL_IP_FREE, .fields = F(IP4), .ip4 = ip4 };
                if ((r = append(d, &ipf)) < 0)
                        goto out;
        }
        r = sync_journal(d);
        if (r >= 0 && stale > 0)
                r = fail(d, -ESTALE, "%zu object(s) had been replaced by someone else's and were left alone",
                         stale);
out:
        for (size_t bi = 0; bi < d->n_backends; bi++)
                resource_set_clear(&per_backend[bi]);
        u64map_free(wanted);
        return r;
}

int vm_net_down(Dispatcher *d, uint64_t vm_id) {
        return vm_net_down_many(d, &vm_id, 1);
}

static const Resource *find_scanned(const ResourceSet *scan, const LiveObject *o) {
        for (size_t i = 0; i < scan->n; i++) {
                const Resource *s = &scan->items[i];
                if ((uint32_t) s->kind != o->kind || strcmp(s->tag, o->tag) != 0)
                        continue;
                if (resource_kind_is_link(s->kind) && strcmp(s->name, o->name) != 0)
                        continue;
                return s;
        }
        return NULL;
}

int dispatcher_recover(Dispatcher *d) {
        const LiveSet *ls = journal_live_set(d->journal);
        _cleanup_free_ ResourceSet *scans = calloc(d->n_backends ? d->n_backends : 1, sizeof(ResourceSet));
        _cleanup_free_ uint64_t *half = NULL, *pending = NULL;
        size_t n_half = 0, n_pending = 0;
        const LiveObject *o;
        int r = 0;

        if (!scans)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_backends; i++) {
                r = d->backends[i]->vtable->scan(d->backends[i], &scans[i]);
                if (r < 0) {
                        backend_failed(d->backends[i], r, &d->error);
                        goto out;
                }
        }

        /* Pending intents: the tag in the kernel says whether the object came to exist. */
        size_t n_objects = live_set_n_objects(ls);
        half = calloc(n_objects ? n_objects : 1, sizeof(uint64_t));
        if (!half) {
                r = -ENOMEM;
                goto out;
        }
        pending = calloc(n_objects ? n_objects : 1, sizeof(uint64_t));
        if (!pending) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t it = 0; live_set_iterate_objects(ls, &it, &o);)
                if (o->state == LIVE_OBJECT_INTENDED)
                        pending[n_pending++] = o->oid;
        for (size_t i = 0; i < n_pending; i++) {
                o = live_set_get_object(ls, pending[i]);
                Backend *b = backend_of(d, o);
                size_t bi = 0;
                while (bi < d->n_backends && d->backends[bi] != b)
                        bi++;
                const Resource *found = bi < d->n_backends ? find_scanned(&scans[bi], o) : NULL;
                uint64_t vm_id = o->vm_id;
                r = append_oid(d, found ? JOURNAL_CREATED : JOURNAL_ABORTED, pending[i],
                               found ? found->ifindex : 0);
                if (r < 0)
                        goto out;
                bool seen = false;
                for (size_t k = 0; k < n_half; k++)
                        seen = seen || half[k] == vm_id;
                if (vm_id != 0 && !seen)
                        half[n_half++] = vm_id;
        }
        r = sync_journal(d);
        if (r < 0)
                goto out;

        /* A VM whose bring-up never finished keeps none of it. */
        for (size_t k = 0; k < n_half; k++) {
                r = vm_net_down(d, half[k]);
                if (r < 0 && r != -ESTALE)
                        goto out;
        }

        /* Interrupted releases: remove again (idempotent) and finish them. */
        ResourceSet releasing = {};
        for (size_t it = 0; live_set_iterate_objects(ls, &it, &o);)
                if (o->state == LIVE_OBJECT_RELEASING) {
                        Resource x;
                        object_to_resource(o, &x);
                        if ((r = resource_set_add(&releasing, &x)) < 0)
                                break;
                }
        for (size_t i = 0; i < releasing.n && r >= 0; i++) {
                o = live_set_get_object(ls, releasing.items[i].oid);
                Backend *b = o ? backend_of(d, o) : NULL;
                if (!b)
                        continue;
                r = release(d, b, &releasing.items[i], 1, NULL);
        }
        resource_set_clear(&releasing);
        if (r >= 0)
                r = sync_journal(d);
out:
        for (size_t i = 0; i < d->n_backends; i++)
                resource_set_clear(&scans[i]);
        return r;
}
