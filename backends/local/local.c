/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The `local` backend: the agent's own bridge (chvm0 with the gateway address), one TAP per VM on it, and
 * the nftables tables `inet <table>` (masquerade, port forwards through the portfwd4 map, inbound only
 * through forwards) and `bridge <table>` (anti-spoofing), with per-VM state as tagged elements. */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h> /* before linux/netfilter_bridge.h, which then leaves its definitions alone */
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* After netinet/in.h, whose definitions linux/netfilter.h would clash with. */
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter_bridge.h>

#include "backends/backend.h"
#include "backends/common.h"
#include "backends/dhcp/dhcp4-server.h"
#include "backends/local/local-config.h"
#include "backends/nl/nft.h"
#include "backends/nl/rtnl.h"
#include "util/confparse.h"
#include "util/crashpoint.h"
#include "util/netports.h"

typedef struct LocalBackend {
        Backend base;
        char table[33], bridge[IFNAMSIZ], tap_prefix[IFNAMSIZ];
        char tag_prefix[80];
        uint32_t subnet, gateway;
        uint8_t prefixlen;
        uint8_t bridge_mac[6];
        TableOwner table_owner; /* [local] table_owner, as configured */
        NftLayout layout;
        Rtnl *rtnl;
        Nft *nft;
        BackendLinksFn links; /* the agent's shared link dump (BackendConfig.links) */
        void *links_userdata;
        /* The DHCP server on the bridge ([local] dhcp), made once the bridge is there. */
        bool dhcp;
        uint32_t mtu; /* [local] mtu; 0: the bridge's */
        struct sd_event *event;
        BackendGuestLookupFn guest_lookup;
        BackendLeaseFn lease_event;
        void *guest_userdata;
        Dhcp4Options dhcp_options; /* .domain points at dhcp_domain */
        char dhcp_domain[254];
        Dhcp4Server *dhcp_server;
        bool dhcp_failure_reported; /* once until the server runs again, not at every bring-up */
        LocalConfig cfg; /* [local], from configure() */
        bool no_dns; /* DHCP without a DNS server to give: none configured and the host has none */
} LocalBackend;

#define OWNED_TABLE_FLAGS (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST)

extern const BackendVTable chvm_backend;

static LocalBackend *LOCAL(Backend *b) {
        assert(b && b->vtable == &chvm_backend);
        return (LocalBackend *) b;
}

_printf_(3, 4) static int fail(LocalBackend *l, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        r = error_setv(&l->base.error, r, error_kind_from_errno(r), fmt, ap);
        va_end(ap);
        return r;
}

static int setup_table_owner(LocalBackend *l, TableOwner want);
static void dhcp_ensure(LocalBackend *l);

static int local_configure(Backend *b, const BackendSetting *settings, size_t n, size_t *ret_bad) {
        LocalBackend *l = LOCAL(b);
        local_config_defaults(&l->cfg);
        return local_config_parse(&l->cfg, settings, n, ret_bad, &l->base.error);
}

/* [local] dns not given: the host's resolvers, as the guests should use them. A loopback resolver (the stub
 * of systemd-resolved at 127.0.0.53, a local dnsmasq) is no use to a guest: then resolved's upstream list.
 */
static unsigned read_resolvers(const char *path, uint32_t *ret, unsigned max) {
        FILE *f = fopen(path, "re");
        char line[512];
        unsigned n = 0;
        if (!f)
                return 0;
        while (n < max && fgets(line, sizeof(line), f)) {
                char addr[64];
                uint32_t x;
                if (sscanf(line, " nameserver %63s", addr) != 1 || conf_ipv4(addr, &x) < 0)
                        continue;
                if ((x >> 24) == 127 || x == 0)
                        continue;
                ret[n++] = x;
        }
        fclose(f);
        return n;
}

static int local_init(Backend *b, const BackendConfig *cfg) {
        LocalBackend *l = LOCAL(b);
        const LocalConfig *c = &l->cfg;
        int r;

        snprintf(l->table, sizeof(l->table), "%s", c->table);
        snprintf(l->bridge, sizeof(l->bridge), "%s", c->bridge);
        snprintf(l->tap_prefix, sizeof(l->tap_prefix), "%s", c->tap_prefix);
        snprintf(l->tag_prefix, sizeof(l->tag_prefix), "chvm1:%s", cfg->agent_id);
        l->subnet = c->subnet;
        l->prefixlen = c->prefixlen;
        /* 02:<5 bytes of an FNV-1a hash of the agent id>: stable per agent, locally administered. */
        uint64_t h = UINT64_C(0xcbf29ce484222325);
        for (const char *p = cfg->agent_id; p && *p; p++)
                h = (h ^ (uint8_t) *p) * UINT64_C(0x100000001b3);
        l->bridge_mac[0] = 0x02;
        for (int i = 1; i < 6; i++)
                l->bridge_mac[i] = (uint8_t) (h >> (8 * i));
        l->gateway = c->gateway;
        l->layout = (NftLayout){
                .table = l->table,
                .bridge = l->bridge,
                .subnet = l->subnet,
                .prefixlen = l->prefixlen,
                .tag_prefix = l->tag_prefix,
        };
        r = rtnl_open(&l->rtnl);
        if (r < 0)
                return fail(l, r, "cannot open rtnetlink: %s", strerror(-r));
        rtnl_set_ops(l->rtnl, cfg->nl_ops);
        l->links = cfg->links;
        l->links_userdata = cfg->links_userdata;
        /* The one nfnetlink socket of the backend: every batch goes through it (see table ownership). */
        r = nft_open(&l->nft);
        if (r < 0)
                return fail(l, r, "cannot open nfnetlink: %s", strerror(-r));
        nft_set_ops(l->nft, cfg->nl_ops);
        l->dhcp = c->dhcp;
        l->mtu = c->mtu;
        l->event = cfg->event;
        l->guest_lookup = cfg->guest_lookup;
        l->lease_event = cfg->lease_event;
        l->guest_userdata = cfg->guest_userdata;
        snprintf(l->dhcp_domain, sizeof(l->dhcp_domain), "%s", c->domain);
        l->dhcp_options = (Dhcp4Options){
                .server_ip = l->gateway,
                .prefixlen = l->prefixlen,
                .router = l->gateway,
                .n_dns = c->n_dns,
                .domain = l->dhcp_domain,
                .lease_time = c->lease_time,
        };
        memcpy(l->dhcp_options.dns, c->dns, sizeof(l->dhcp_options.dns));
        if (!c->dns_given && c->dhcp) {
                const char *paths[] = { "/etc/resolv.conf", "/run/systemd/resolve/resolv.conf" };
                for (size_t i = 0; i < ELEMENTSOF(paths) && l->dhcp_options.n_dns == 0; i++)
                        l->dhcp_options.n_dns = read_resolvers(paths[i], l->dhcp_options.dns, DHCP4_DNS_MAX);
                l->no_dns = l->dhcp_options.n_dns == 0;
        }
        l->table_owner = c->table_owner;
        r = setup_table_owner(l, c->table_owner);
        if (r < 0)
                return r;
        dhcp_ensure(l); /* the bridge of an earlier run, with VMs to adopt */
        return 0;
}

/* The guests' DHCP server, on our bridge once it exists (an agent that starts with running VMs finds it at
 * init, else the first bring-up makes it) and made again when the bridge was replaced. Its failures are
 * reported as events and never fail a bring-up: a direct-kernel guest does not need it. */
static int dhcp_lookup(void *userdata, const uint8_t mac[6], Dhcp4Lookup *ret) {
        LocalBackend *l = userdata;
        return l->guest_lookup ? l->guest_lookup(l->guest_userdata, &l->base, mac, ret) : -ENOENT;
}

static void dhcp_event(void *userdata, const Dhcp4Event *ev) {
        LocalBackend *l = userdata;
        if (l->lease_event)
                l->lease_event(l->guest_userdata, &l->base, ev);
}

static void dhcp_ensure(LocalBackend *l) {
        LinkInfo info;
        char tag[CHVM_TAG_MAX + 1];

        if (!l->dhcp || !l->event)
                return;
        if (rtnl_link_get_by_name(l->rtnl, l->bridge, &info) < 0 ||
            resource_tag(l->base.agent_id, 0, "bridge", tag) < 0 || strcmp(info.alias, tag) != 0) {
                l->dhcp_server = dhcp4_server_free(l->dhcp_server);
                return;
        }
        if (l->dhcp_server && dhcp4_server_alive(l->dhcp_server) &&
            dhcp4_server_ifindex(l->dhcp_server) == info.ifindex)
                return;
        l->dhcp_server = dhcp4_server_free(l->dhcp_server);
        Dhcp4ServerConfig c = {
                .ifindex = info.ifindex,
                .options = l->dhcp_options,
                .lookup = dhcp_lookup,
                .event = dhcp_event,
                .userdata = l,
        };
        c.options.mtu = (uint16_t) (l->mtu ? l->mtu : info.mtu);
        int r = dhcp4_server_new(l->event, &c, &l->dhcp_server);
        if (r < 0 && !l->dhcp_failure_reported) {
                char why[160];
                snprintf(why, sizeof(why), "cannot serve DHCP on %s: %s", l->bridge, strerror(-r));
                dhcp_event(l,
                           &(Dhcp4Event){ .kind = DHCP4_EVENT_IGNORED, .why = why, .client_hostname = "" });
        }
        l->dhcp_failure_reported = r < 0;
}

/* Table ownership ([local] table_owner). Owned tables belong to l->nft, the backend's one nfnetlink
 * socket, which is why every batch goes through it. They are created owned at the first bring-up; tables
 * left by an earlier agent are orphaned (the kernel kept them for PERSIST when its socket closed) and are
 * adopted here, before anything changes them. OWNER without PERSIST is never used: the kernel would delete
 * both tables, port forwards and anti-spoofing with them, whenever the agent stops or crashes. */
static int setup_table_owner(LocalBackend *l, TableOwner want) {
        char tag_inet[NFT_TAG_MAX + 1], tag_bridge[NFT_TAG_MAX + 1];
        NftTableInfo inet, br;
        int r, rb;

        l->layout.table_flags = 0;
        if (want == TABLE_OWNER_NO)
                return 0;
        r = nft_probe_table_flags(l->nft, OWNED_TABLE_FLAGS);
        if (r == -EOPNOTSUPP) {
                if (want == TABLE_OWNER_YES)
                        return fail(
                                l, r,
                                "table_owner = yes, but this kernel cannot keep owned nftables tables past "
                                "their owner (NFT_TABLE_F_PERSIST needs Linux 6.9)");
                return 0; /* auto: plain tables */
        }
        if (r < 0)
                return fail(l, r, "cannot probe the nftables table flags: %s", nft_error_message(l->nft));
        l->layout.table_flags = OWNED_TABLE_FLAGS;

        /* Tables owned by another socket: an agent that runs on them, or one just killed whose socket a
         * hypervisor child it forked still holds for a moment (until the child has closed the agent's fds,
         * or ended at its gate). The latter lets go soon; the former is refused after the wait. */
        snprintf(tag_inet, sizeof(tag_inet), "%s:core:table", l->tag_prefix);
        snprintf(tag_bridge, sizeof(tag_bridge), "%s:core:table-bridge", l->tag_prefix);
        for (unsigned waited = 0;; waited += 20) {
                r = nft_table_info(l->nft, &l->layout, NFPROTO_INET, &inet);
                rb = nft_table_info(l->nft, &l->layout, NFPROTO_BRIDGE, &br);
                bool other = (r >= 0 && strcmp(inet.tag, tag_inet) == 0 && inet.flags & NFT_TABLE_F_OWNER &&
                              inet.owner != nft_portid(l->nft)) ||
                             (rb >= 0 && strcmp(br.tag, tag_bridge) == 0 && br.flags & NFT_TABLE_F_OWNER &&
                              br.owner != nft_portid(l->nft));
                if (!other || waited >= STALE_HOLDER_WAIT_MS)
                        break;
                usleep(20000);
        }
        if (r == -ENOENT && rb == -ENOENT)
                return 0; /* made owned at the first bring-up */
        if ((r < 0 && r != -ENOENT) || (rb < 0 && rb != -ENOENT))
                return fail(l, r < 0 && r != -ENOENT ? r : rb, "cannot read the nftables tables %s: %s",
                            l->table, strerror(-(r < 0 && r != -ENOENT ? r : rb)));
        if (r < 0 || rb < 0 || strcmp(inet.tag, tag_inet) != 0 || strcmp(br.tag, tag_bridge) != 0)
                return 0; /* not (all) ours: bring-up says so when it gets there */

        uint32_t flags = inet.flags | br.flags;
        if (flags & NFT_TABLE_F_OWNER &&
            ((inet.flags & NFT_TABLE_F_OWNER && inet.owner != nft_portid(l->nft)) ||
             (br.flags & NFT_TABLE_F_OWNER && br.owner != nft_portid(l->nft))))
                return fail(
                        l, -EBUSY,
                        "the nftables tables %s belong to another process's netlink socket (port id %u): "
                        "is another agent running on them?",
                        l->table, inet.flags & NFT_TABLE_F_OWNER ? inet.owner : br.owner);
        if (!(inet.flags & NFT_TABLE_F_PERSIST) || !(br.flags & NFT_TABLE_F_PERSIST)) {
                /* Made by an agent with table_owner = no, or on an older kernel. The kernel lets no one own
                 * them now; replacing them would drop whatever in them is not ours. */
                if (want == TABLE_OWNER_YES)
                        return fail(
                                l, -EOPNOTSUPP,
                                "table_owner = yes, but the nftables tables %s were made without owner "
                                "(table_owner = no, or an older kernel), and the kernel lets no one own "
                                "them now: stop the VMs and delete both tables (nft delete table inet %s; "
                                "nft delete table bridge %s), or set table_owner = auto",
                                l->table, l->table, l->table);
                return 0; /* auto: plain until they are made again */
        }
        r = nft_adopt_tables(l->nft, &l->layout);
        if (r < 0)
                return fail(l, r, "cannot take the nftables tables %s over: %s", l->table,
                            nft_error_message(l->nft));
        return 0;
}

static void local_done(Backend *b) {
        LocalBackend *l = LOCAL(b);
        l->dhcp_server = dhcp4_server_free(l->dhcp_server);
        l->rtnl = rtnl_close(l->rtnl);
        l->nft = nft_close(l->nft);
}

static int tag(LocalBackend *l, uint64_t vm_id, const char *role, Resource *r) {
        return resource_tag(l->base.agent_id, vm_id, role, r->tag);
}

static int local_plan_core(Backend *b, ResourceSet *ret) {
        LocalBackend *l = LOCAL(b);
        Resource br = { .kind = RESOURCE_LINK_BRIDGE }, tables = { .kind = RESOURCE_NFT_TABLES };
        int r;

        snprintf(br.name, sizeof(br.name), "%s", l->bridge);
        snprintf(tables.name, sizeof(tables.name), "%s", l->table);
        if ((r = tag(l, 0, "bridge", &br)) < 0 || (r = tag(l, 0, "table", &tables)) < 0)
                return r;
        if ((r = resource_set_add(ret, &br)) < 0 || (r = resource_set_add(ret, &tables)) < 0)
                return r;
        return 0;
}

static int local_plan(Backend *b, const VmNetSpec *spec, ResourceSet *ret) {
        LocalBackend *l = LOCAL(b);
        Resource tap = { .kind = RESOURCE_LINK_TAP, .vm_id = spec->vm_id };
        Resource port = { .kind = RESOURCE_NFT_VM_PORT, .vm_id = spec->vm_id };
        Resource addr = { .kind = RESOURCE_NFT_VM_ADDR, .vm_id = spec->vm_id };
        int r;

        if (!ifname_valid(spec->tap_name) || spec->ip4 == 0)
                return fail(l, -EINVAL, "VM %s: invalid TAP name or no address", spec->vm_name);
        snprintf(tap.name, sizeof(tap.name), "%s", spec->tap_name);
        snprintf(port.name, sizeof(port.name), "vm_ports");
        snprintf(addr.name, sizeof(addr.name), "vm_addrs");
        snprintf(port.elem.ifname, sizeof(port.elem.ifname), "%s", spec->tap_name);
        addr.elem = port.elem;
        memcpy(addr.elem.mac, spec->mac, 6);
        addr.elem.guest_ip = spec->ip4;
        if ((r = tag(l, spec->vm_id, "tap", &tap)) < 0 || (r = tag(l, spec->vm_id, "port", &port)) < 0 ||
            (r = tag(l, spec->vm_id, "addr", &addr)) < 0)
                return r;
        if ((r = resource_set_add(ret, &tap)) < 0 || (r = resource_set_add(ret, &port)) < 0 ||
            (r = resource_set_add(ret, &addr)) < 0)
                return r;
        if (l->dhcp) {
                /* The guest's DHCP client sends from 0.0.0.0 (and probes with ARP from 0.0.0.0, RFC 5227)
                 * before it has its address: with its own MAC on its own TAP only, like every other frame.
                 */
                Resource unset = addr;
                unset.elem.guest_ip = 0;
                if ((r = tag(l, spec->vm_id, "addr-unset", &unset)) < 0 ||
                    (r = resource_set_add(ret, &unset)) < 0)
                        return r;
        }

        for (size_t i = 0; i < spec->n_ports; i++) {
                const PortForward *p = &spec->ports[i];
                Resource f = { .kind = RESOURCE_NFT_PORTFWD, .vm_id = spec->vm_id };
                char role[32];
                if ((p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP) || p->host_port == 0 ||
                    p->guest_port == 0)
                        return fail(l, -EINVAL, "VM %s: invalid port forward", spec->vm_name);
                snprintf(f.name, sizeof(f.name), "portfwd4");
                f.elem = (ResourceElem){ .proto = p->proto,
                                         .host_port = p->host_port,
                                         .guest_ip = spec->ip4,
                                         .guest_port = p->guest_port };
                snprintf(role, sizeof(role), "fwd-%s-%u", p->proto == IPPROTO_TCP ? "tcp" : "udp",
                         p->host_port);
                if ((r = tag(l, spec->vm_id, role, &f)) < 0 || (r = resource_set_add(ret, &f)) < 0)
                        return r;
        }
        return 0;
}

static NftElem to_nft_elem(const Resource *r) {
        NftElem e = {
                .kind = r->kind == RESOURCE_NFT_PORTFWD   ? NFT_ELEM_PORTFWD
                        : r->kind == RESOURCE_NFT_VM_PORT ? NFT_ELEM_VM_PORT
                                                          : NFT_ELEM_VM_ADDR,
                .proto = r->elem.proto,
                .host_port = r->elem.host_port,
                .guest_ip = r->elem.guest_ip,
                .guest_port = r->elem.guest_port,
        };
        memcpy(e.ifname, r->elem.ifname, sizeof(e.ifname));
        memcpy(e.mac, r->elem.mac, 6);
        snprintf(e.tag, sizeof(e.tag), "%s", r->tag);
        return e;
}

/* The routing the layout relies on; turned on, never off (other tools may rely on it too). */
static int enable_ip_forward(LocalBackend *l) {
        int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return fail(l, negative_errno(), "cannot open /proc/sys/net/ipv4/ip_forward: %m");
        ssize_t n = write(fd, "1\n", 2);
        int r = n == 2 ? 0 : negative_errno();
        close(fd);
        return r < 0 ? fail(l, r, "cannot enable net.ipv4.ip_forward: %s", strerror(-r)) : 0;
}

static int ensure_bridge(LocalBackend *l, Resource *br) {
        LinkInfo info;
        uint32_t ifindex;
        int r;

        r = rtnl_bridge_create(l->rtnl, br->name, br->tag, &ifindex);
        br->created = r >= 0;
        if (r >= 0) {
                br->ifindex = ifindex; /* for local_apply()'s undo, should a later step fail */
                /* A fixed MAC, so the gateway's address does not follow whichever TAP joins or leaves. */
                LinkChange m = LINK_CHANGE_KEEP;
                m.mac = l->bridge_mac;
                r = rtnl_link_change(l->rtnl, ifindex, &m);
                if (r < 0)
                        return fail(l, r, "cannot set the MAC address of bridge %s: %s", br->name,
                                    strerror(-r));
        } else if (r == -EEXIST) {
                r = rtnl_link_get_by_name(l->rtnl, br->name, &info);
                if (r < 0)
                        return fail(l, r, "bridge %s: %s", br->name, strerror(-r));
                if (strcmp(info.alias, br->tag) != 0 || strcmp(info.kind, "bridge") != 0)
                        return fail(l, -EEXIST,
                                    "a link named %s exists and is not this agent's bridge (alias \"%s\")",
                                    br->name, info.alias);
                ifindex = info.ifindex;
        } else if (r < 0)
                return fail(l, r, "cannot create bridge %s: %s%s%s", br->name, strerror(-r),
                            rtnl_error_message(l->rtnl)[0] ? ": " : "", rtnl_error_message(l->rtnl));
        r = rtnl_addr_add4(l->rtnl, ifindex, l->gateway, l->prefixlen);
        if (r < 0 && r != -EEXIST)
                return fail(l, r, "cannot add the gateway address to %s: %s", br->name, strerror(-r));
        LinkChange c = LINK_CHANGE_KEEP;
        c.up = 1;
        c.mtu = l->mtu; /* the TAPs get it too, and the guests in DHCP option 26 */
        r = rtnl_link_change(l->rtnl, ifindex, &c);
        if (r < 0)
                return fail(l, r, "cannot set bridge %s up%s: %s", br->name, l->mtu ? " with its MTU" : "",
                            strerror(-r));
        br->ifindex = ifindex;
        return enable_ip_forward(l);
}

static int bridge_ifindex(LocalBackend *l, uint32_t *ret) {
        LinkInfo info;
        int r = rtnl_link_get_by_name(l->rtnl, l->bridge, &info);
        if (r < 0)
                return fail(l, r, "bridge %s is missing: %s", l->bridge, strerror(-r));
        *ret = info.ifindex;
        return 0;
}

static Resource *tables_of(ResourceSet *plan) {
        for (size_t i = 0; i < plan->n; i++)
                if (plan->items[i].kind == RESOURCE_NFT_TABLES)
                        return &plan->items[i];
        return NULL;
}

static int commit_nft_batch(LocalBackend *l, ResourceSet *plan, bool with_layout);

/* The layout if planned and not there yet, and every element, in one batch. Usually (every bring-up after
 * the first) our tables are there: a look at the table's tag costs one small request, sending the layout
 * anyway a kernel transaction that fails with EEXIST and is aborted, most of a StartVM's time. Tables
 * that vanish between the look and the batch make it fail with ENOENT: then it goes again with the
 * layout. */
static int commit_nft(LocalBackend *l, ResourceSet *plan, bool with_layout) {
        char t[NFT_TAG_MAX + 1];
        Resource *tables = tables_of(plan);

        if (with_layout && tables && nft_table_tag(l->nft, &l->layout, t) >= 0 &&
            strcmp(t, tables->tag) == 0) {
                int r = commit_nft_batch(l, plan, false);
                if (r != -ENOENT)
                        return r;
        }
        return commit_nft_batch(l, plan, with_layout);
}

/* -EEXIST on the layout with our table tag means it is already there: then the elements go alone. */
static int commit_nft_batch(LocalBackend *l, ResourceSet *plan, bool with_layout) {
        _cleanup_(nft_batch_freep) NftBatch *b = NULL;
        size_t n_elems = 0;
        int r;

        for (size_t i = 0; i < plan->n; i++)
                n_elems += resource_kind_is_elem(plan->items[i].kind);
        if (!with_layout && n_elems == 0)
                return 0;
        b = nft_batch_new(l->nft);
        if (!b)
                return -ENOMEM;
        if (with_layout) {
                r = nft_batch_add_layout(b, &l->layout);
                if (r < 0)
                        return fail(l, r, "cannot build the nftables layout: %s", strerror(-r));
        }
        for (size_t i = 0; i < plan->n; i++) {
                if (!resource_kind_is_elem(plan->items[i].kind))
                        continue;
                NftElem e = to_nft_elem(&plan->items[i]);
                r = nft_batch_elem(b, &l->layout, &e, true);
                if (r < 0)
                        return fail(l, r, "invalid element %s", plan->items[i].tag);
        }
        r = nft_batch_commit(l->nft, b);
        if (r >= 0 && with_layout)
                for (size_t i = 0; i < plan->n; i++)
                        if (plan->items[i].kind == RESOURCE_NFT_TABLES)
                                plan->items[i].created = true;
        if (r == -EEXIST && with_layout) {
                char t[NFT_TAG_MAX + 1];
                Resource *tables = tables_of(plan);
                if (tables && nft_table_tag(l->nft, &l->layout, t) >= 0 && strcmp(t, tables->tag) == 0)
                        return commit_nft_batch(l, plan, false);
        }
        if (r < 0)
                return fail(l, r, "%s", nft_error_message(l->nft));
        return 0;
}

static int local_remove(Backend *b, const Resource *r);

static int local_apply(Backend *b, ResourceSet *plan) {
        LocalBackend *l = LOCAL(b);
        bool with_layout = false;
        uint32_t br = 0;
        size_t made = 0;
        int r = 0;

        for (size_t i = 0; i < plan->n; i++) {
                Resource *x = &plan->items[i];
                if (x->kind == RESOURCE_LINK_BRIDGE) {
                        r = ensure_bridge(l, x);
                        if (r < 0)
                                goto undo;
                } else if (x->kind == RESOURCE_NFT_TABLES)
                        with_layout = true;
        }
        for (size_t i = 0; i < plan->n; i++) {
                Resource *x = &plan->items[i];
                if (x->kind != RESOURCE_LINK_TAP)
                        continue;
                if (br == 0 && (r = bridge_ifindex(l, &br)) < 0)
                        goto undo;
                r = backend_tap_up(l->rtnl, x, br, l->mtu, &l->base.error);
                if (r < 0)
                        goto undo;
                made = i + 1;
        }
        r = CRASH_POINT("local-apply-links-made");
        if (r < 0)
                return r;
        r = commit_nft(l, plan, with_layout);
        if (r < 0)
                goto undo;
        dhcp_ensure(l);
        return CRASH_POINT("local-apply-nft-committed");

undo:
        /* All or nothing: the batch changed nothing; take the TAPs of this plan away again, and the bridge
         * if this call made it. */
        for (size_t i = 0; i < made; i++)
                if (plan->items[i].kind == RESOURCE_LINK_TAP && plan->items[i].ifindex)
                        (void) backend_remove_link(l->rtnl, &plan->items[i]);
        for (size_t i = 0; i < plan->n; i++) {
                Resource *x = &plan->items[i];
                if (x->kind == RESOURCE_LINK_BRIDGE && x->created && x->ifindex) {
                        (void) backend_remove_link(l->rtnl, x);
                        x->created = false;
                        x->ifindex = 0;
                }
        }
        return r;
}

static bool elem_matches(const NftElem *e, const Resource *r) {
        switch (r->kind) {
        case RESOURCE_NFT_PORTFWD:
                return e->kind == NFT_ELEM_PORTFWD && e->proto == r->elem.proto &&
                       e->host_port == r->elem.host_port;
        case RESOURCE_NFT_VM_PORT:
                return e->kind == NFT_ELEM_VM_PORT && strncmp(e->ifname, r->elem.ifname, 16) == 0;
        case RESOURCE_NFT_VM_ADDR:
                return e->kind == NFT_ELEM_VM_ADDR && strncmp(e->ifname, r->elem.ifname, 16) == 0 &&
                       memcmp(e->mac, r->elem.mac, 6) == 0 && e->guest_ip == r->elem.guest_ip;
        default:
                return false;
        }
}

/* Deletes the given elements in one batch, each only if the kernel's element still carries its tag. */
static int remove_elems(LocalBackend *l, const Resource *r, size_t n, size_t *ret_stale) {
        _cleanup_free_ NftElem *elems = NULL;
        _cleanup_(nft_batch_freep) NftBatch *b = NULL;
        size_t n_elems, stale = 0;
        int k;

        k = nft_dump_elems(l->nft, &l->layout, &elems, &n_elems);
        if (k == -ENOENT) /* no tables: nothing of ours left */
                return 0;
        if (k < 0)
                return fail(l, k, "cannot list the elements of table %s: %s", l->table, strerror(-k));
        b = nft_batch_new(l->nft);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                for (size_t j = 0; j < n_elems; j++) {
                        if (!elem_matches(&elems[j], &r[i]))
                                continue;
                        if (strcmp(elems[j].tag, r[i].tag) != 0) {
                                stale++;
                                break;
                        }
                        k = nft_batch_elem(b, &l->layout, &elems[j], false);
                        if (k < 0)
                                return k;
                        break;
                }
        }
        if (ret_stale)
                *ret_stale = stale;
        if (nft_batch_n_ops(b) == 0)
                return 0;
        k = nft_batch_commit(l->nft, b);
        if (k < 0)
                return fail(l, k, "%s", nft_error_message(l->nft));
        return 0;
}

static int remove_tables(LocalBackend *l, const Resource *r) {
        char t[NFT_TAG_MAX + 1];
        _cleanup_(nft_batch_freep) NftBatch *b = NULL;
        int k;

        k = nft_table_tag(l->nft, &l->layout, t);
        if (k == -ENOENT)
                return 0;
        if (k < 0)
                return k;
        if (strcmp(t, r->tag) != 0)
                return fail(l, -ESTALE, "table inet %s is tagged \"%s\", not \"%s\": left alone", l->table,
                            t, r->tag);
        b = nft_batch_new(l->nft);
        if (!b)
                return -ENOMEM;
        k = nft_batch_delete_tables(b, &l->layout);
        if (k >= 0)
                k = nft_batch_commit(l->nft, b);
        if (k == -ENOENT)
                return 0;
        return k < 0 ? fail(l, k, "%s", nft_error_message(l->nft)) : 0;
}

static int local_remove(Backend *b, const Resource *r) {
        LocalBackend *l = LOCAL(b);
        size_t stale = 0;
        int k;

        if (resource_kind_is_link(r->kind)) {
                k = backend_remove_link(l->rtnl, r);
                if (k == -ESTALE)
                        return fail(l, k, "link %s is no longer the one tagged %s: left alone", r->name,
                                    r->tag);
                return k < 0 ? fail(l, k, "cannot remove link %s: %s", r->name, strerror(-k)) : 0;
        }
        if (r->kind == RESOURCE_NFT_TABLES)
                return remove_tables(l, r);
        k = remove_elems(l, r, 1, &stale);
        if (k < 0)
                return k;
        return stale ? fail(l, -ESTALE, "element %s now carries another tag: left alone", r->tag) : 0;
}

static int local_remove_many(Backend *b, const Resource *r, size_t n) {
        LocalBackend *l = LOCAL(b);
        _cleanup_free_ Resource *links = calloc(n ? n : 1, sizeof(Resource));
        _cleanup_free_ Resource *elems = calloc(n ? n : 1, sizeof(Resource));
        size_t n_links = 0, n_elems = 0, stale = 0, s2 = 0;
        int k;

        if (!links || !elems)
                return -ENOMEM;
        /* Elements first (they name the TAPs), then links in one group, tables last. */
        for (size_t i = 0; i < n; i++) {
                if (resource_kind_is_elem(r[i].kind))
                        elems[n_elems++] = r[i];
                else if (resource_kind_is_link(r[i].kind) && r[i].kind == RESOURCE_LINK_TAP)
                        links[n_links++] = r[i];
        }
        k = remove_elems(l, elems, n_elems, &stale);
        if (k < 0)
                return k;
        k = backend_remove_links(l->rtnl, links, n_links, &s2);
        if (k < 0)
                return fail(l, k, "cannot remove %zu TAPs: %s", n_links, strerror(-k));
        for (size_t i = 0; i < n; i++)
                if (r[i].kind == RESOURCE_LINK_BRIDGE || r[i].kind == RESOURCE_NFT_TABLES) {
                        k = local_remove(b, &r[i]);
                        if (k < 0)
                                return k;
                }
        if (stale + s2 > 0)
                return fail(l, -ESTALE, "%zu object(s) now carry another identity: left alone", stale + s2);
        return 0;
}

static int local_rebuild(Backend *b, const Resource *elems, size_t n) {
        LocalBackend *l = LOCAL(b);
        ResourceSet plan = {};
        int k = 0;

        for (size_t i = 0; i < n && k >= 0; i++)
                if (resource_kind_is_elem(elems[i].kind))
                        k = resource_set_add(&plan, &elems[i]);
        Resource tables = { .kind = RESOURCE_NFT_TABLES };
        snprintf(tables.name, sizeof(tables.name), "%s", l->table);
        if (k >= 0)
                k = tag(l, 0, "table", &tables);
        if (k >= 0)
                k = resource_set_add(&plan, &tables);
        if (k >= 0)
                k = commit_nft(l, &plan, true);
        resource_set_clear(&plan);
        return k;
}

static int local_scan(Backend *b, ResourceSet *ret) {
        LocalBackend *l = LOCAL(b);
        _cleanup_free_ NftElem *elems = NULL;
        char t[NFT_TAG_MAX + 1];
        size_t n;
        int k;

        k = backend_scan_links(l->rtnl, l->links, l->links_userdata, l->tap_prefix, ret);
        if (k < 0)
                return fail(l, k, "cannot list links: %s", strerror(-k));
        k = nft_table_tag(l->nft, &l->layout, t);
        if (k == -ENOENT)
                return 0;
        if (k < 0)
                return fail(l, k, "cannot read table inet %s: %s", l->table, strerror(-k));
        Resource tables = { .kind = RESOURCE_NFT_TABLES };
        snprintf(tables.name, sizeof(tables.name), "%s", l->table);
        snprintf(tables.tag, sizeof(tables.tag), "%s", t);
        k = resource_set_add(ret, &tables);
        if (k < 0)
                return k;

        k = nft_dump_elems(l->nft, &l->layout, &elems, &n);
        if (k == -ENOENT)
                return 0;
        if (k < 0)
                return fail(l, k, "cannot list the elements of table %s: %s", l->table, strerror(-k));
        for (size_t i = 0; i < n; i++) {
                Resource r = {
                        .kind = elems[i].kind == NFT_ELEM_PORTFWD   ? RESOURCE_NFT_PORTFWD
                                : elems[i].kind == NFT_ELEM_VM_PORT ? RESOURCE_NFT_VM_PORT
                                                                    : RESOURCE_NFT_VM_ADDR,
                        .elem = { .proto = elems[i].proto,
                                  .host_port = elems[i].host_port,
                                  .guest_ip = elems[i].guest_ip,
                                  .guest_port = elems[i].guest_port },
                };
                memcpy(r.elem.ifname, elems[i].ifname, sizeof(r.elem.ifname));
                memcpy(r.elem.mac, elems[i].mac, 6);
                snprintf(r.name, sizeof(r.name), "%s", nft_elem_kind_to_string(elems[i].kind));
                snprintf(r.tag, sizeof(r.tag), "%s", elems[i].tag);
                uint64_t vm = 0;
                if (r.tag[0] && resource_tag_parse(r.tag, NULL, &vm, NULL) >= 0)
                        r.vm_id = vm;
                k = resource_set_add(ret, &r);
                if (k < 0)
                        return k;
        }
        return 0;
}

/* --- doctor ------------------------------------------------------------------------------------------ */

static int doctor_ip_forward(BackendFindingFn add, void *u) {
        char buf[8] = "";
        int fd = open("/proc/sys/net/ipv4/ip_forward", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                (void) !read(fd, buf, sizeof(buf) - 1);
                close(fd);
        }
        if (buf[0] == '1')
                return backend_finding(add, u, BACKEND_OK, "ip_forward", "net.ipv4.ip_forward is 1");
        if (buf[0] == '0')
                return backend_finding(
                        add, u, BACKEND_WARNING, "ip_forward",
                        "net.ipv4.ip_forward is 0: guests on the local backend get no routed traffic "
                        "(the agent turns it on when it sets up the bridge; someone turned it off)");
        return backend_finding(add, u, BACKEND_WARNING, "ip_forward",
                               "cannot read /proc/sys/net/ipv4/ip_forward");
}

static const char *family_name(int f) {
        switch (f) {
        case NFPROTO_INET:
                return "inet";
        case NFPROTO_IPV4:
                return "ip";
        case NFPROTO_IPV6:
                return "ip6";
        case NFPROTO_BRIDGE:
                return "bridge";
        case NFPROTO_NETDEV:
                return "netdev";
        case NFPROTO_ARP:
                return "arp";
        default:
                return "?";
        }
}

/* Guests' traffic crosses the forward hook (routed), and prerouting/forward of the bridge family; the
 * guests' DHCP (and whatever else they send to the host) also the bridge family's input and output, where
 * the DHCP server's packet socket takes and sends its frames (before and after the inet family's hooks,
 * which therefore never see DHCP). A drop policy in anyone's chain there applies to it too. */
static bool on_guest_path(const NftBaseChain *c) {
        if (c->family == NFPROTO_BRIDGE)
                return c->hook == NF_BR_PRE_ROUTING || c->hook == NF_BR_FORWARD ||
                       c->hook == NF_BR_LOCAL_IN || c->hook == NF_BR_LOCAL_OUT;
        if (c->family == NFPROTO_INET || c->family == NFPROTO_IPV4)
                return c->hook == NF_INET_FORWARD || c->hook == NF_INET_PRE_ROUTING;
        return false;
}

static int doctor_firewall(LocalBackend *l, BackendFindingFn add, void *u) {
        _cleanup_free_ NftBaseChain *chains = NULL;
        size_t n = 0, drops = 0;
        int k = nft_dump_base_chains(l->nft, &chains, &n);
        if (k < 0)
                return backend_finding(add, u, BACKEND_WARNING, "firewall",
                                       "cannot list nftables chains: %s", strerror(-k));
        for (size_t i = 0; i < n; i++) {
                const NftBaseChain *c = &chains[i];
                if (strcmp(c->table, l->table) == 0 || c->policy != NF_DROP || !on_guest_path(c))
                        continue;
                drops++;
                if (c->family == NFPROTO_BRIDGE)
                        k = backend_finding(
                                add, u, BACKEND_WARNING, "firewall",
                                "table bridge %s chain %s has policy drop: it applies to the guests' frames too%s; "
                                "allow them there, e.g. %s \"%s*\" accept",
                                c->table, c->chain,
                                c->hook == NF_BR_LOCAL_IN || c->hook == NF_BR_LOCAL_OUT
                                        ? ", and drops their DHCP (udp 67/68) so that they get no address"
                                        : "",
                                c->hook == NF_BR_LOCAL_OUT ? "oifname" : "iifname", l->tap_prefix);
                else
                        k = backend_finding(
                                add, u, BACKEND_WARNING, "firewall",
                                "table %s %s chain %s has policy drop: it applies to guest traffic too; "
                                "allow it there, e.g. iifname \"%s\" accept and oifname \"%s\" ct state "
                                "established,related accept",
                                family_name(c->family), c->table, c->chain, l->bridge, l->bridge);
                if (k < 0)
                        return k;
        }
        return drops ? 0
                     : backend_finding(add, u, BACKEND_OK, "firewall",
                                       "no drop policy in other tables on the guests' path");
}

/* Who may change our tables ([local] table_owner): owned ones only the agent, and `nft flush ruleset` by
 * others passes them by; plain ones anyone, and a flush takes the guests' forwards and anti-spoofing away
 * until the next bring-up rebuilds them. */
static int doctor_table_owner(LocalBackend *l, BackendFindingFn add, void *u) {
        NftTableInfo info;
        int k = nft_table_info(l->nft, &l->layout, NFPROTO_INET, &info);
        if (k == -ENOENT)
                return backend_finding(add, u, BACKEND_OK, "tables",
                                       "tables %s not made yet (the first bring-up makes them)", l->table);
        if (k < 0)
                return backend_finding(add, u, BACKEND_WARNING, "tables", "cannot read table inet %s: %s",
                                       l->table, strerror(-k));
        if ((info.flags & (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST)) ==
            (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST))
                return backend_finding(
                        add, u, BACKEND_OK, "tables",
                        "tables inet/bridge %s belong to the agent (flags owner, persist): only it may "
                        "change them, nft flush ruleset by others passes them by",
                        l->table);
        if (info.flags & NFT_TABLE_F_PERSIST)
                return backend_finding(
                        add, u, BACKEND_WARNING, "tables",
                        "tables inet/bridge %s are orphaned (no agent holds them): anyone may change or "
                        "flush them until an agent adopts them at its start",
                        l->table);
        return backend_finding(
                add, u, l->table_owner == TABLE_OWNER_NO ? BACKEND_OK : BACKEND_WARNING, "tables",
                "tables inet/bridge %s are plain (%s): anyone may change them, and nft flush ruleset removes them "
                "with the guests' port forwards and anti-spoofing until the next bring-up rebuilds them",
                l->table,
                l->table_owner == TABLE_OWNER_NO
                        ? "table_owner = no"
                        : "made with table_owner = no, or on a kernel without NFT_TABLE_F_PERSIST (6.9)");
}

static int local_doctor(Backend *b, const BackendVm *running, size_t n_running, BackendFindingFn add,
                        void *u) {
        LocalBackend *l = LOCAL(b);
        int k = doctor_ip_forward(add, u);
        if (k >= 0)
                k = doctor_firewall(l, add, u);
        if (k >= 0)
                k = doctor_table_owner(l, add, u);
        if (k >= 0 && l->no_dns)
                k = backend_finding(
                        add, u, BACKEND_WARNING, "dhcp",
                        "the host has no resolver a guest can reach (none in /etc/resolv.conf or "
                        "/run/systemd/resolve/resolv.conf but loopback ones): guests get no DNS "
                        "server by DHCP; set [local] dns");
        if (k >= 0)
                k = backend_doctor_links(l->rtnl, l->links, l->links_userdata, l->bridge, running, n_running,
                                         add, u);
        return k;
}

static void local_net_params(Backend *b, BackendNetParams *ret) {
        const LocalConfig *c = &LOCAL(b)->cfg;
        *ret = (BackendNetParams){ .subnet = c->subnet,
                                   .gateway = c->gateway,
                                   .prefixlen = c->prefixlen,
                                   .kernel_ip_arg = c->kernel_ip_arg };
        snprintf(ret->tap_prefix, sizeof(ret->tap_prefix), "%s", c->tap_prefix);
}

/* [local] reserved_ports: a forward of a port the host listens on would take that service (the forward
 * matches every local address: ssh, DNS, the agent's own DHCP server), so such ports are refused. Ports
 * forwarded to our VMs are not "the host's". */
static int local_check_ports(Backend *b, const char *vm_name, const PortForward *ports, size_t n) {
        LocalBackend *l = LOCAL(b);
        const LocalConfig *c = &l->cfg;
        ListeningPorts lp;
        bool have_lp = false;
        for (size_t i = 0; i < n; i++) {
                const PortForward *p = &ports[i];
                const char *proto = p->proto == IPPROTO_UDP ? "udp" : "tcp";
                for (unsigned k = 0; k < c->n_reserved; k++)
                        if (port_range_has(&c->reserved[k], p->proto, p->host_port))
                                return fail(l, -EADDRINUSE,
                                            "VM %s: host port %u/%s is reserved ([local] reserved_ports); "
                                            "root may forward it with --force-port",
                                            vm_name, p->host_port, proto);
                if (!c->reserve_listening)
                        continue;
                if (!have_lp) {
                        int r = listening_ports_read(&lp);
                        if (r < 0)
                                return fail(l, r, "VM %s: cannot read the host's listening sockets: %s",
                                            vm_name, strerror(-r));
                        have_lp = true;
                }
                if (listening_ports_has(&lp, p->proto, p->host_port))
                        return fail(
                                l, -EADDRINUSE,
                                "VM %s: host port %u/%s: a socket of the host listens on it, and the forward "
                                "would take it over; root may forward it anyway with --force-port",
                                vm_name, p->host_port, proto);
        }
        return 0;
}

__attribute__((visibility("default"))) const BackendVTable chvm_backend = {
        .abi = CHVM_BACKEND_ABI,
        .name = "local",
        .object_size = sizeof(LocalBackend),
        .uses_addresses = true,
        .forwards_ports = true,
        .configure = local_configure,
        .init = local_init,
        .done = local_done,
        .plan_core = local_plan_core,
        .plan = local_plan,
        .apply = local_apply,
        .remove = local_remove,
        .remove_many = local_remove_many,
        .rebuild = local_rebuild,
        .scan = local_scan,
        .crash_points = crash_point_list,
        .doctor = local_doctor,
        .net_params = local_net_params,
        .check_ports = local_check_ports,
};
