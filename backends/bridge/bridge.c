/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The `bridge` backend: each VM's TAP joins an existing bridge the admin made (`bridge = br0`). It never
 * creates or deletes that bridge, and makes no addresses and no nftables rules. */

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/common.h"
#include "backends/nl/rtnl.h"
#include "util/confparse.h"
#include "util/crashpoint.h"

typedef struct BridgeBackend {
        Backend base;
        char bridge[IFNAMSIZ], tap_prefix[IFNAMSIZ];
        Rtnl *rtnl;
        BackendLinksFn links; /* the agent's shared link dump (BackendConfig.links) */
        void *links_userdata;
} BridgeBackend;

extern const BackendVTable chvm_backend;

static BridgeBackend *BRIDGE(Backend *b) {
        assert(b && b->vtable == &chvm_backend);
        return (BridgeBackend *) b;
}

_printf_(3, 4) static int fail(BridgeBackend *x, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = error_setv(&x->base.error, r, error_kind_from_errno(r), fmt, ap);
        va_end(ap);
        return r;
}

/* [bridge] bridge [br0]  tap_prefix [tap-] */
static int bridge_configure(Backend *b, const BackendSetting *settings, size_t n, size_t *ret_bad) {
        BridgeBackend *x = BRIDGE(b);
        snprintf(x->bridge, sizeof(x->bridge), "br0");
        snprintf(x->tap_prefix, sizeof(x->tap_prefix), "tap-");
        for (size_t i = 0; i < n; i++) {
                const char *key = settings[i].key, *value = settings[i].value;
                *ret_bad = i;
                if (strcmp(key, "bridge") == 0) {
                        if (!conf_ifname(value) || !conf_put_str(x->bridge, sizeof(x->bridge), value))
                                return fail(x, -EINVAL, "bridge \"%s\" is not a valid interface name",
                                            value);
                } else if (strcmp(key, "tap_prefix") == 0) {
                        if (!conf_tap_prefix(value) ||
                            !conf_put_str(x->tap_prefix, sizeof(x->tap_prefix), value))
                                return fail(
                                        x, -EINVAL,
                                        "tap_prefix \"%s\": 1 to 11 characters valid in an interface name",
                                        value);
                } else
                        return fail(x, -EINVAL, "unknown key \"%s\"", key);
        }
        return 0;
}

static int bridge_init(Backend *b, const BackendConfig *cfg) {
        BridgeBackend *x = BRIDGE(b);
        int r;

        r = rtnl_open(&x->rtnl);
        if (r < 0)
                return fail(x, r, "cannot open rtnetlink: %s", strerror(-r));
        rtnl_set_ops(x->rtnl, cfg->nl_ops);
        x->links = cfg->links;
        x->links_userdata = cfg->links_userdata;
        return 0;
}

static void bridge_done(Backend *b) {
        BRIDGE(b)->rtnl = rtnl_close(BRIDGE(b)->rtnl);
}

static int bridge_plan_core(Backend *b, ResourceSet *ret) {
        (void) b;
        (void) ret;
        return 0; /* the bridge is the admin's */
}

static int bridge_plan(Backend *b, const VmNetSpec *spec, ResourceSet *ret) {
        BridgeBackend *x = BRIDGE(b);
        Resource tap = { .kind = RESOURCE_LINK_TAP, .vm_id = spec->vm_id };
        int r;

        if (!ifname_valid(spec->tap_name))
                return fail(x, -EINVAL, "VM %s: invalid TAP name", spec->vm_name);
        if (spec->n_ports > 0)
                return fail(x, -EOPNOTSUPP,
                            "VM %s: the bridge backend has no port forwards (the guest is on %s directly)",
                            spec->vm_name, x->bridge);
        snprintf(tap.name, sizeof(tap.name), "%s", spec->tap_name);
        r = resource_tag(b->agent_id, spec->vm_id, "tap", tap.tag);
        if (r < 0)
                return r;
        return resource_set_add(ret, &tap);
}

static int bridge_apply(Backend *b, ResourceSet *plan) {
        BridgeBackend *x = BRIDGE(b);
        LinkInfo br;
        int r;

        r = rtnl_link_get_by_name(x->rtnl, x->bridge, &br);
        if (r == -ENODEV)
                return fail(x, -ENODEV, "bridge %s does not exist (the bridge backend never creates it)",
                            x->bridge);
        if (r < 0)
                return fail(x, r, "cannot look up bridge %s: %s", x->bridge, strerror(-r));
        if (strcmp(br.kind, "bridge") != 0)
                return fail(x, -ENOTTY, "%s is not a bridge (kind \"%s\")", x->bridge, br.kind);

        for (size_t i = 0; i < plan->n; i++) {
                if (plan->items[i].kind != RESOURCE_LINK_TAP)
                        continue;
                r = backend_tap_up(x->rtnl, &plan->items[i], br.ifindex, 0, &x->base.error);
                if (r < 0) {
                        for (size_t k = 0; k < i; k++)
                                (void) backend_remove_link(x->rtnl, &plan->items[k]);
                        return r;
                }
        }
        return 0;
}

static int bridge_remove(Backend *b, const Resource *r) {
        BridgeBackend *x = BRIDGE(b);
        int k;

        if (r->kind != RESOURCE_LINK_TAP)
                return fail(x, -EINVAL, "the bridge backend owns only TAPs, not %s", r->tag);
        k = backend_remove_link(x->rtnl, r);
        if (k == -ESTALE)
                return fail(x, k, "link %s is no longer the one tagged %s: left alone", r->name, r->tag);
        return k < 0 ? fail(x, k, "cannot remove TAP %s: %s", r->name, strerror(-k)) : 0;
}

static int bridge_remove_many(Backend *b, const Resource *r, size_t n) {
        BridgeBackend *x = BRIDGE(b);
        size_t stale = 0;
        int k = backend_remove_links(x->rtnl, r, n, &stale);
        if (k < 0)
                return fail(x, k, "cannot remove %zu TAPs: %s", n, strerror(-k));
        return stale ? fail(x, -ESTALE, "%zu TAP(s) now carry another identity: left alone", stale) : 0;
}

static int bridge_scan(Backend *b, ResourceSet *ret) {
        BridgeBackend *x = BRIDGE(b);
        int k = backend_scan_links(x->rtnl, x->links, x->links_userdata, x->tap_prefix, ret);
        return k < 0 ? fail(x, k, "cannot list links: %s", strerror(-k)) : 0;
}

/* The admin's bridge is there, and every running VM's TAP is a port of it. */
static int bridge_doctor(Backend *b, const BackendVm *running, size_t n_running, BackendFindingFn add,
                         void *u) {
        BridgeBackend *x = BRIDGE(b);
        return backend_doctor_links(x->rtnl, x->links, x->links_userdata, x->bridge, running, n_running, add,
                                    u);
}

static void bridge_net_params(Backend *b, BackendNetParams *ret) {
        *ret = (BackendNetParams){};
        snprintf(ret->tap_prefix, sizeof(ret->tap_prefix), "%.11s", BRIDGE(b)->tap_prefix);
}

__attribute__((visibility("default"))) const BackendVTable chvm_backend = {
        .abi = CHVM_BACKEND_ABI,
        .name = "bridge",
        .object_size = sizeof(BridgeBackend),
        .configure = bridge_configure,
        .init = bridge_init,
        .done = bridge_done,
        .plan_core = bridge_plan_core,
        .plan = bridge_plan,
        .apply = bridge_apply,
        .remove = bridge_remove,
        .remove_many = bridge_remove_many,
        .scan = bridge_scan,
        .crash_points = crash_point_list,
        .doctor = bridge_doctor,
        .net_params = bridge_net_params,
};
