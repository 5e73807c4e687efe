/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/common.h"

int backend_tap_up(Rtnl *rtnl, Resource *r, uint32_t bridge_ifindex, uint32_t mtu, Error *e) {
        uint32_t ifindex;
        int k;

        k = tap_create(rtnl, r->name, r->tag, (uid_t) -1, &ifindex);
        if (k < 0) {
                return error_errno(e, k, "cannot create TAP %s: %s%s%s", r->name, strerror(-k),
                                   rtnl_error_message(rtnl)[0] ? ": " : "", rtnl_error_message(rtnl));
        }
        LinkChange c = LINK_CHANGE_KEEP;
        c.master = bridge_ifindex;
        c.mtu = mtu;
        c.up = 1;
        k = rtnl_link_change(rtnl, ifindex, &c);
        if (k == -EXFULL)
                /* The kernel numbers a bridge's ports in 10 bits (BR_MAX_PORTS), port 0 unused. */
                error_set(
                        e, k, ERROR_FAILED,
                        "cannot attach TAP %s to its bridge: the bridge is full (a Linux bridge takes at most "
                        "1023 ports, one per VM)",
                        r->name);
        else if (k < 0)
                error_errno(e, k, "cannot attach TAP %s to its bridge: %s%s%s", r->name, strerror(-k),
                            rtnl_error_message(rtnl)[0] ? ": " : "", rtnl_error_message(rtnl));
        if (k < 0) {
                OwnedLink o = { .ifindex = ifindex, .name = r->name, .tag = r->tag };
                (void) rtnl_link_delete_owned(rtnl, &o);
                return k;
        }
        r->ifindex = ifindex;
        return 0;
}

int backend_scan_links(Rtnl *rtnl, BackendLinksFn shared, void *userdata, const char *tap_prefix,
                       ResourceSet *ret) {
        _cleanup_free_ LinkInfo *own = NULL;
        const LinkInfo *links = NULL;
        size_t n = 0;
        int k;

        if (!shared || shared(userdata, &links, &n) < 0) {
                k = rtnl_link_dump(rtnl, &own, &n);
                if (k < 0)
                        return k;
                links = own;
        }
        for (size_t i = 0; i < n; i++) {
                const LinkInfo *l = &links[i];
                bool tagged = strncmp(l->alias, "chvm1:", 6) == 0;
                bool tap = strcmp(l->kind, "tun") == 0;
                bool bridge = strcmp(l->kind, "bridge") == 0;
                if (!(tap || bridge))
                        continue;
                if (!tagged && !(tap && tap_prefix && tap_prefix[0] &&
                                 strncmp(l->name, tap_prefix, strlen(tap_prefix)) == 0))
                        continue;
                Resource r = {
                        .kind = tap ? RESOURCE_LINK_TAP : RESOURCE_LINK_BRIDGE,
                        .ifindex = l->ifindex,
                };
                snprintf(r.name, sizeof(r.name), "%s", l->name);
                snprintf(r.tag, sizeof(r.tag), "%s", tagged ? l->alias : "");
                uint64_t vm = 0;
                if (tagged && resource_tag_parse(l->alias, NULL, &vm, NULL) >= 0)
                        r.vm_id = vm;
                k = resource_set_add(ret, &r);
                if (k < 0)
                        return k;
        }
        return 0;
}

int backend_remove_link(Rtnl *rtnl, const Resource *r) {
        uint32_t ifindex = r->ifindex;
        LinkInfo l;
        int k;

        if (ifindex == 0) {
                k = rtnl_link_get_by_name(rtnl, r->name, &l);
                if (k == -ENODEV)
                        return 0;
                if (k < 0)
                        return k;
                ifindex = l.ifindex;
        }
        OwnedLink o = { .ifindex = ifindex, .name = r->name, .tag = r->tag };
        return rtnl_link_delete_owned(rtnl, &o);
}

int backend_remove_links(Rtnl *rtnl, const Resource *r, size_t n, size_t *ret_stale) {
        _cleanup_free_ OwnedLink *o = calloc(n ? n : 1, sizeof(OwnedLink));
        size_t m = 0, deleted;
        LinkInfo l;
        int k;

        if (!o)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                uint32_t ifindex = r[i].ifindex;
                if (ifindex == 0) {
                        k = rtnl_link_get_by_name(rtnl, r[i].name, &l);
                        if (k == -ENODEV)
                                continue;
                        if (k < 0)
                                return k;
                        ifindex = l.ifindex;
                }
                o[m++] = (OwnedLink){ .ifindex = ifindex, .name = r[i].name, .tag = r[i].tag };
        }
        /* One link (the usual case: one VM's TAP after its hypervisor exited): its own check and delete.
         * The group saves an RCU grace period per link only when there are several, and costs two dumps of
         * every link in the namespace, which at 1,000 VMs were most of a crashed VM's teardown. */
        if (m <= 1) {
                k = m == 1 ? rtnl_link_delete_owned(rtnl, &o[0]) : 0;
                if (k < 0 && k != -ESTALE)
                        return k;
                if (ret_stale)
                        *ret_stale = k == -ESTALE;
                return 0;
        }
        return rtnl_links_delete_owned_bulk(rtnl, o, m, &deleted, ret_stale);
}

int backend_finding(BackendFindingFn add, void *userdata, BackendSeverity s, const char *topic,
                    const char *fmt, ...) {
        char message[1024];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        return add(userdata, s, topic, message);
}

static int cmp_link_name(const void *x, const void *y) {
        return strcmp(((const LinkInfo *) x)->name, ((const LinkInfo *) y)->name);
}

int backend_doctor_links(Rtnl *rtnl, BackendLinksFn shared, void *userdata, const char *bridge,
                         const BackendVm *running, size_t n_running, BackendFindingFn add,
                         void *add_userdata) {
        _cleanup_free_ LinkInfo *own = NULL;
        const LinkInfo *dump = NULL;
        size_t n = 0, missing = 0, detached = 0;
        int k;

        if (!shared || shared(userdata, &dump, &n) < 0) {
                k = rtnl_link_dump(rtnl, &own, &n);
                if (k < 0)
                        return backend_finding(add, add_userdata, BACKEND_WARNING, "links",
                                               "cannot list links: %s", strerror(-k));
                dump = own;
        }
        /* sorted by name here: a copy, the shared dump stays as it is */
        _cleanup_free_ LinkInfo *links = malloc((n ? n : 1) * sizeof(LinkInfo));
        if (!links)
                return -ENOMEM;
        if (n)
                memcpy(links, dump, n * sizeof(LinkInfo));
        qsort(links, n, sizeof(LinkInfo), cmp_link_name);
        LinkInfo key = {};
        snprintf(key.name, sizeof(key.name), "%s", bridge);
        const LinkInfo *br = n ? bsearch(&key, links, n, sizeof(LinkInfo), cmp_link_name) : NULL;
        for (size_t i = 0; i < n_running; i++) {
                const BackendVm *vm = &running[i];
                if (!vm->tap || !vm->tap[0])
                        continue;
                snprintf(key.name, sizeof(key.name), "%s", vm->tap);
                const LinkInfo *l = n ? bsearch(&key, links, n, sizeof(LinkInfo), cmp_link_name) : NULL;
                k = 0;
                if (!l) {
                        missing++;
                        k = backend_finding(add, add_userdata, BACKEND_ERROR, "links",
                                            "VM %s is running but its TAP %s is gone", vm->name, vm->tap);
                } else if (!br || l->master != br->ifindex) {
                        detached++;
                        k = backend_finding(add, add_userdata, BACKEND_ERROR, "links",
                                            "VM %s: its TAP %s is not a port of bridge %s%s", vm->name,
                                            vm->tap, bridge, br ? "" : " (the bridge is gone)");
                }
                if (k < 0)
                        return k;
        }
        if (missing || detached)
                return 0;
        return backend_finding(add, add_userdata, BACKEND_OK, "links",
                               "running VMs' TAPs are ports of bridge %s", bridge);
}
