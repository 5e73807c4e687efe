/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The `example` backend: the smallest backend that owns kernel objects, written only against the backend
 * ABI (backends/backend.h, with backends/resource.c compiled in for its helpers) and libmnl, as an
 * out-of-tree backend would be. chvm-backends(7) walks through it; the tests build it and run VMs on it.
 *
 * Each VM gets one TAP, tagged, up, attached to nothing: the guest has a link and nothing else (no address,
 * no forwards). Its section in agent.conf:
 *
 *   [example]
 *   tap_prefix = ex-     (the default)
 */

#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "backends/backend.h"

#define NL_BUF 16384 /* a request, or one read of answers: a dump comes in several */

typedef struct ExampleBackend {
        Backend base; /* first: the agent sees a Backend */
        char tap_prefix[12];
        char tag_prefix[80]; /* "chvm1:<agent-id>:" */
        struct mnl_socket *nl;
        unsigned seq;
} ExampleBackend;

extern const BackendVTable chvm_backend;

static ExampleBackend *EXAMPLE(Backend *b) {
        return (ExampleBackend *) b;
}

__attribute__((format(printf, 3, 4))) static int fail(ExampleBackend *x, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        /* Backend.error is a plain struct (util/error.h): filled in here without the agent's functions. */
        x->base.error = (Error){ .code = r,
                                 .kind = r == -EINVAL       ? ERROR_INVALID
                                         : r == -EEXIST     ? ERROR_EXISTS
                                         : r == -EADDRINUSE ? ERROR_BUSY
                                                            : ERROR_FAILED };
        (void) vsnprintf(x->base.error.message, sizeof(x->base.error.message), fmt, ap);
        va_end(ap);
        return r;
}

/* configure: called once, before init, with this section's lines. Errors name the key; the loader adds
 * FILE:LINE and "[example]". */
static int example_configure(Backend *b, const BackendSetting *s, size_t n, size_t *ret_bad) {
        ExampleBackend *x = EXAMPLE(b);
        snprintf(x->tap_prefix, sizeof(x->tap_prefix), "ex-");
        for (size_t i = 0; i < n; i++) {
                *ret_bad = i;
                if (strcmp(s[i].key, "tap_prefix") != 0)
                        return fail(x, -EINVAL, "unknown key \"%s\"", s[i].key);
                size_t len = strlen(s[i].value);
                if (len == 0 || len > 11 ||
                    strspn(s[i].value, "abcdefghijklmnopqrstuvwxyz0123456789-") != len)
                        return fail(x, -EINVAL, "tap_prefix \"%s\": 1 to 11 of a-z, 0-9 and -", s[i].value);
                memcpy(x->tap_prefix, s[i].value, len + 1);
        }
        return 0;
}

static int example_init(Backend *b, const BackendConfig *cfg) {
        ExampleBackend *x = EXAMPLE(b);
        snprintf(x->tag_prefix, sizeof(x->tag_prefix), "chvm1:%s:", cfg->agent_id);
        x->nl = mnl_socket_open(NETLINK_ROUTE);
        if (!x->nl || mnl_socket_bind(x->nl, 0, MNL_SOCKET_AUTOPID) < 0)
                return fail(x, -errno, "cannot open rtnetlink: %s", strerror(errno));
        x->seq = (unsigned) time(NULL);
        return 0;
}

static void example_done(Backend *b) {
        ExampleBackend *x = EXAMPLE(b);
        if (x->nl)
                mnl_socket_close(x->nl);
        x->nl = NULL;
}

/* --- rtnetlink: one request, its answer (links of a dump go to cb) --------------------------------- */

static int request(ExampleBackend *x, struct nlmsghdr *nlh, mnl_cb_t cb, void *data) {
        char buf[NL_BUF];
        nlh->nlmsg_seq = ++x->seq;
        if (!(nlh->nlmsg_flags & NLM_F_DUMP))
                nlh->nlmsg_flags |= NLM_F_ACK; /* a dump ends with NLMSG_DONE instead */
        if (mnl_socket_sendto(x->nl, nlh, nlh->nlmsg_len) < 0)
                return -errno;
        unsigned portid = mnl_socket_get_portid(x->nl);
        for (;;) {
                ssize_t n = mnl_socket_recvfrom(x->nl, buf, sizeof(buf));
                if (n < 0)
                        return -errno;
                int r = mnl_cb_run(buf, (size_t) n, x->seq, portid, cb, data);
                if (r <= MNL_CB_STOP)
                        return r < 0 ? -errno : 0;
        }
}

static struct nlmsghdr *link_msg(char *buf, uint16_t type, uint16_t flags, int ifindex) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | flags;
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = ifindex;
        return nlh;
}

typedef struct LinkSeen {
        int ifindex;
        char name[IFNAMSIZ], alias[CHVM_TAG_MAX + 1];
        bool tun;
} LinkSeen;

static int attr_cb(const struct nlattr *a, void *data) {
        LinkSeen *l = data;
        if (mnl_attr_get_type(a) == IFLA_IFNAME && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
                snprintf(l->name, sizeof(l->name), "%s", mnl_attr_get_str(a));
        else if (mnl_attr_get_type(a) == IFLA_IFALIAS && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
                snprintf(l->alias, sizeof(l->alias), "%s", mnl_attr_get_str(a));
        else if (mnl_attr_get_type(a) == IFLA_LINKINFO) {
                const struct nlattr *i;
                mnl_attr_for_each_nested(i, a) if (mnl_attr_get_type(i) == IFLA_INFO_KIND &&
                                                   strcmp(mnl_attr_get_str(i), "tun") == 0) l->tun = true;
        }
        return MNL_CB_OK;
}

static int parse_link(const struct nlmsghdr *nlh, LinkSeen *ret) {
        const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
        *ret = (LinkSeen){ .ifindex = ifi->ifi_index };
        return mnl_attr_parse(nlh, sizeof(*ifi), attr_cb, ret);
}

static int get_one_cb(const struct nlmsghdr *nlh, void *data) {
        return parse_link(nlh, data) < 0 ? MNL_CB_ERROR : MNL_CB_OK;
}

/* The link of this name now, or -ENODEV. */
static int get_link(ExampleBackend *x, const char *name, LinkSeen *ret) {
        char buf[NL_BUF];
        struct nlmsghdr *nlh = link_msg(buf, RTM_GETLINK, 0, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        *ret = (LinkSeen){};
        return request(x, nlh, get_one_cb, ret);
}

static int del_link(ExampleBackend *x, int ifindex) {
        char buf[NL_BUF];
        int r = request(x, link_msg(buf, RTM_DELLINK, 0, ifindex), NULL, NULL);
        return r == -ENODEV ? 0 : r;
}

/* --- the backend ------------------------------------------------------------------------------------- */

static int example_plan_core(Backend *b, ResourceSet *ret) {
        (void) b;
        (void) ret;
        return 0; /* nothing shared between VMs */
}

/* One TAP per VM, named as the agent asks (VmNetSpec.tap_name: tap_prefix + the VM id's low digits). */
static int example_plan(Backend *b, const VmNetSpec *spec, ResourceSet *ret) {
        ExampleBackend *x = EXAMPLE(b);
        Resource tap = { .kind = RESOURCE_LINK_TAP, .vm_id = spec->vm_id };
        if (spec->n_ports > 0)
                return fail(x, -EOPNOTSUPP, "VM %s: the example backend has no port forwards",
                            spec->vm_name);
        snprintf(tap.name, sizeof(tap.name), "%s", spec->tap_name);
        int r = resource_tag(b->agent_id, spec->vm_id, "tap", tap.tag);
        if (r >= 0)
                r = resource_set_add(ret, &tap);
        return r < 0 ? fail(x, r, "VM %s: cannot plan its TAP", spec->vm_name) : 0;
}

/* A TAP is made with its tag before it is made persistent, so that no crash leaves an untagged one. */
static int tap_up(ExampleBackend *x, Resource *r) {
        struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
        char buf[NL_BUF];
        LinkSeen l;
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC), k;
        if (fd < 0)
                return fail(x, -errno, "TAP %s: /dev/net/tun: %s", r->name, strerror(errno));
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%.*s", IFNAMSIZ - 1, r->name);
        if (get_link(x, r->name, &l) >= 0)
                k = -EEXIST; /* TUNSETIFF would attach to someone else's TAP of that name */
        else if (ioctl(fd, TUNSETIFF, &ifr) < 0)
                k = -errno;
        else
                k = get_link(x, r->name, &l);
        if (k >= 0) {
                struct nlmsghdr *nlh = link_msg(buf, RTM_NEWLINK, 0, l.ifindex);
                mnl_attr_put_strz(nlh, IFLA_IFALIAS, r->tag);
                struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
                ifi->ifi_flags = ifi->ifi_change = IFF_UP;
                k = request(x, nlh, NULL, NULL);
        }
        if (k >= 0 && ioctl(fd, TUNSETPERSIST, 1) < 0)
                k = -errno;
        close(fd); /* not persistent yet on failure: the TAP goes with the fd */
        if (k < 0)
                return fail(x, k, "TAP %s: %s", r->name, strerror(-k));
        r->ifindex = (uint32_t) l.ifindex;
        return 0;
}

static int example_remove(Backend *b, const Resource *r) {
        ExampleBackend *x = EXAMPLE(b);
        LinkSeen l;
        int k = get_link(x, r->name, &l);
        if (k == -ENODEV)
                return 0; /* gone already */
        if (k < 0)
                return fail(x, k, "TAP %s: %s", r->name, strerror(-k));
        /* The tag is read back: a link of that name that is not the one we made is left alone. */
        if (strcmp(l.alias, r->tag) != 0 || strncmp(l.alias, x->tag_prefix, strlen(x->tag_prefix)) != 0 ||
            (r->ifindex && (uint32_t) l.ifindex != r->ifindex))
                return fail(x, -ESTALE, "TAP %s is no longer ours (tag \"%s\")", r->name, l.alias);
        k = del_link(x, l.ifindex);
        return k < 0 ? fail(x, k, "TAP %s: %s", r->name, strerror(-k)) : 0;
}

/* All or nothing: what was made is taken away again when a later object fails. */
static int example_apply(Backend *b, ResourceSet *plan) {
        ExampleBackend *x = EXAMPLE(b);
        for (size_t i = 0; i < plan->n; i++) {
                int r = plan->items[i].kind == RESOURCE_LINK_TAP
                                ? tap_up(x, &plan->items[i])
                                : fail(x, -EINVAL, "%s: not a kind this backend makes", plan->items[i].name);
                if (r < 0) {
                        Error why = x->base.error; /* the removals below may set their own */
                        for (size_t k = 0; k < i; k++)
                                (void) example_remove(b, &plan->items[k]);
                        x->base.error = why;
                        return r;
                }
                plan->items[i].created = true;
        }
        return 0;
}

typedef struct ScanCtx {
        ResourceSet *ret;
        int error;
} ScanCtx;

static int scan_cb(const struct nlmsghdr *nlh, void *data) {
        ScanCtx *c = data;
        LinkSeen l;
        char agent[64], role[32];
        uint64_t vm_id;
        if (parse_link(nlh, &l) < 0)
                return MNL_CB_ERROR;
        /* Our TAPs: tun links whose alias is a chvm1 tag of role tap (any agent's: the agent judges). */
        if (!l.tun || resource_tag_parse(l.alias, agent, &vm_id, role) < 0 || strcmp(role, "tap") != 0)
                return MNL_CB_OK;
        Resource r = { .kind = RESOURCE_LINK_TAP, .vm_id = vm_id, .ifindex = (uint32_t) l.ifindex };
        snprintf(r.name, sizeof(r.name), "%s", l.name);
        snprintf(r.tag, sizeof(r.tag), "%s", l.alias);
        if (resource_set_add(c->ret, &r) < 0)
                c->error = -ENOMEM;
        return MNL_CB_OK;
}

/* What exists with a tag of ours. Untagged TAPs with our prefix are not listed: this backend claims
 * nothing it cannot prove. */
static int example_scan(Backend *b, ResourceSet *ret) {
        ExampleBackend *x = EXAMPLE(b);
        char buf[NL_BUF];
        struct nlmsghdr *nlh = link_msg(buf, RTM_GETLINK, NLM_F_DUMP, 0);
        ScanCtx c = { .ret = ret };
        int r = request(x, nlh, scan_cb, &c);
        if (r >= 0)
                r = c.error;
        return r < 0 ? fail(x, r, "listing links: %s", strerror(-r)) : 0;
}

static void example_net_params(Backend *b, BackendNetParams *ret) {
        *ret = (BackendNetParams){};
        snprintf(ret->tap_prefix, sizeof(ret->tap_prefix), "%s", EXAMPLE(b)->tap_prefix);
}

static int example_doctor(Backend *b, const BackendVm *running, size_t n_running, BackendFindingFn add,
                          void *userdata) {
        ExampleBackend *x = EXAMPLE(b);
        size_t missing = 0;
        char msg[256];
        for (size_t i = 0; i < n_running; i++) {
                LinkSeen l;
                if (running[i].tap[0] && get_link(x, running[i].tap, &l) < 0) {
                        snprintf(msg, sizeof(msg), "VM %s: its TAP %s is gone", running[i].name,
                                 running[i].tap);
                        int r = add(userdata, BACKEND_ERROR, "links", msg);
                        if (r < 0)
                                return r;
                        missing++;
                }
        }
        if (missing)
                return 0;
        snprintf(msg, sizeof(msg), "every running VM's TAP is there (%zu)", n_running);
        return add(userdata, BACKEND_OK, "links", msg);
}

/* The one symbol the module exports (backends/module.map). */
__attribute__((visibility("default"))) const BackendVTable chvm_backend = {
        .abi = CHVM_BACKEND_ABI,
        .name = "example",
        .object_size = sizeof(ExampleBackend),
        .configure = example_configure,
        .init = example_init,
        .done = example_done,
        .plan_core = example_plan_core,
        .plan = example_plan,
        .apply = example_apply,
        .remove = example_remove,
        .scan = example_scan,
        .doctor = example_doctor,
        .net_params = example_net_params,
};
