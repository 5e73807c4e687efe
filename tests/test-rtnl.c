/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* rtnetlink layer: builders parsed back without a kernel, then real links in a private network namespace
 * (each Criterion test runs in its own process, which unshare()s a fresh namespace that disappears with
 * it), checked against `ip -j -d link` as the independent oracle. */

#include <criterion/criterion.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/nl/rtnl.h"
#include "tests/shell-oracle.h"

#define TAG_OURS "chvm1:c41e5500-1234-4000-8000-deadbeef0001:00000000000000a1:tap"
#define TAG_OTHER "chvm1:0ther000-1234-4000-8000-deadbeef0002:00000000000000a1:tap"

/* --- builders ------------------------------------------------------------------------------------- */

typedef struct Parsed {
        const char *alias, *ifname, *kind;
        uint32_t mtu, master, group;
        bool has_mtu, has_master, has_group, has_mac;
        uint8_t mac[6];
} Parsed;

static int kind_cb(const struct nlattr *a, void *data) {
        if (mnl_attr_get_type(a) == IFLA_INFO_KIND)
                ((Parsed *) data)->kind = mnl_attr_get_str(a);
        return MNL_CB_OK;
}

static int attr_cb(const struct nlattr *a, void *data) {
        Parsed *p = data;
        switch (mnl_attr_get_type(a)) {
        case IFLA_IFALIAS:
                p->alias = mnl_attr_get_str(a);
                break;
        case IFLA_IFNAME:
                p->ifname = mnl_attr_get_str(a);
                break;
        case IFLA_MTU:
                p->mtu = mnl_attr_get_u32(a), p->has_mtu = true;
                break;
        case IFLA_MASTER:
                p->master = mnl_attr_get_u32(a), p->has_master = true;
                break;
        case IFLA_GROUP:
                p->group = mnl_attr_get_u32(a), p->has_group = true;
                break;
        case IFLA_ADDRESS:
                cr_assert_eq(mnl_attr_get_payload_len(a), 6);
                memcpy(p->mac, mnl_attr_get_payload(a), 6), p->has_mac = true;
                break;
        case IFLA_LINKINFO:
                mnl_attr_parse_nested(a, kind_cb, p);
                break;
        default:
                cr_assert_fail("unexpected attribute %u", mnl_attr_get_type(a));
        }
        return MNL_CB_OK;
}

static const struct ifinfomsg *parse(const void *buf, size_t len, Parsed *p) {
        const struct nlmsghdr *nlh = buf;
        cr_assert_eq(nlh->nlmsg_len, len);
        cr_assert(mnl_nlmsg_ok(nlh, (int) len));
        *p = (Parsed){};
        cr_assert_eq(mnl_attr_parse(nlh, sizeof(struct ifinfomsg), attr_cb, p), MNL_CB_OK);
        return mnl_nlmsg_get_payload(nlh);
}

Test(rtnl_build, link_change) {
        uint8_t buf[1024];
        static const uint8_t mac[6] = { 2, 0xc4, 1, 2, 3, 4 };
        Parsed p;

        LinkChange c = LINK_CHANGE_KEEP;
        size_t len = rtnl_build_link_change(buf, sizeof(buf), 7, 42, &c);
        const struct ifinfomsg *ifi = parse(buf, len, &p);
        cr_assert_eq(((struct nlmsghdr *) buf)->nlmsg_type, RTM_NEWLINK);
        cr_assert(((struct nlmsghdr *) buf)->nlmsg_flags & NLM_F_ACK);
        cr_assert_eq(((struct nlmsghdr *) buf)->nlmsg_seq, 7);
        cr_assert_eq(ifi->ifi_index, 42);
        cr_assert_eq(ifi->ifi_change, 0, "keep must not touch flags");
        cr_assert(!p.alias && !p.has_mtu && !p.has_master && !p.has_group && !p.has_mac);

        c = (LinkChange){
                .alias = TAG_OURS, .mtu = 1400, .mac = mac, .up = 1, .master = 9, .group = 0x40000001
        };
        len = rtnl_build_link_change(buf, sizeof(buf), 8, 42, &c);
        ifi = parse(buf, len, &p);
        cr_assert_eq(ifi->ifi_change, IFF_UP);
        cr_assert_eq(ifi->ifi_flags, IFF_UP);
        cr_assert_str_eq(p.alias, TAG_OURS);
        cr_assert_eq(p.mtu, 1400);
        cr_assert_arr_eq(p.mac, mac, 6);
        cr_assert_eq(p.master, 9);
        cr_assert_eq(p.group, 0x40000001);

        /* Release from a bridge is master 0, and down is a flag change to 0. */
        c = (LinkChange){ .up = 0, .master = 0, .group = -1 };
        len = rtnl_build_link_change(buf, sizeof(buf), 9, 42, &c);
        ifi = parse(buf, len, &p);
        cr_assert_eq(ifi->ifi_change, IFF_UP);
        cr_assert_eq(ifi->ifi_flags, 0);
        cr_assert(p.has_master && p.master == 0);
        cr_assert_not(p.has_group);
}

Test(rtnl_build, bridge_create_and_delete_group) {
        uint8_t buf[1024];
        Parsed p;

        size_t len = rtnl_build_bridge_create(buf, sizeof(buf), 1, "chvm0", TAG_OURS);
        const struct nlmsghdr *nlh = (const struct nlmsghdr *) buf;
        parse(buf, len, &p);
        cr_assert_eq(nlh->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL), NLM_F_CREATE | NLM_F_EXCL);
        cr_assert_str_eq(p.ifname, "chvm0");
        cr_assert_str_eq(p.alias, TAG_OURS);
        cr_assert_str_eq(p.kind, "bridge");

        len = rtnl_build_delete_group(buf, sizeof(buf), 2, 0x40001234);
        const struct ifinfomsg *ifi = parse(buf, len, &p);
        cr_assert_eq(nlh->nlmsg_type, RTM_DELLINK);
        cr_assert_eq(ifi->ifi_index, 0, "a group delete must not name one link");
        cr_assert(p.has_group && p.group == 0x40001234);
}

Test(rtnl_build, buffer_too_small_is_not_overrun) {
        uint8_t buf[64];
        LinkChange c = LINK_CHANGE_KEEP;
        c.alias = TAG_OURS; /* does not fit in 64 bytes with the headers */
        size_t len = rtnl_build_link_change(buf, sizeof(buf), 1, 1, &c);
        cr_assert_leq(len, sizeof(buf));
        Parsed p;
        parse(buf, len, &p);
        cr_assert_null(p.alias);
}

Test(rtnl_build, ifname_valid) {
        cr_assert(ifname_valid("tap-0"));
        cr_assert(ifname_valid("123456789012345"));
        cr_assert_not(ifname_valid("1234567890123456"));
        cr_assert_not(ifname_valid(""));
        cr_assert_not(ifname_valid(NULL));
        cr_assert_not(ifname_valid("."));
        cr_assert_not(ifname_valid(".."));
        cr_assert(ifname_valid("..."));
        cr_assert_not(ifname_valid("a/b"));
        cr_assert_not(ifname_valid("a:b"));
        cr_assert_not(ifname_valid("a b"));
        cr_assert_not(ifname_valid("a\tb"));
        cr_assert_not(ifname_valid("a\xa0"));
        cr_assert(ifname_valid("t\xc3\xa4p"));
        /* templates and the sysctl folders' names (the kernel renames or refuses them) */
        cr_assert_not(ifname_valid("%d"));
        cr_assert_not(ifname_valid("tap%d"));
        cr_assert_not(ifname_valid("tap%"));
        cr_assert_not(ifname_valid("all"));
        cr_assert_not(ifname_valid("default"));
        cr_assert(ifname_valid("all0"));
        cr_assert(ifname_valid("defaults"));
}

/* --- in a private network namespace ---------------------------------------------------------------- */

static Rtnl *rtnl;

static void netns_setup(void) {
        if (geteuid() != 0)
                cr_skip_test("needs root to create a network namespace (the test runs in its own)");
        if (unshare(CLONE_NEWNET) < 0)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
        if (access("/dev/net/tun", R_OK | W_OK) < 0)
                cr_skip_test("/dev/net/tun is not usable: %s", strerror(errno));
        cr_assert_eq(rtnl_open(&rtnl), 0);
}

static void netns_teardown(void) {
        rtnl = rtnl_close(rtnl);
}

/* Runs a shell command in this test's namespace and returns its output (the oracle). */
static bool oracle_link_has(const char *name, const char *needle) {
        char *out = sh("ip -j -d link show dev %s 2>/dev/null", name);
        bool r = strstr(out, needle) != NULL;
        free(out);
        return r;
}

static bool oracle_link_exists(const char *name) {
        char *out = sh("ip -o link show dev %s 2>/dev/null", name);
        bool r = out[0] != '\0';
        free(out);
        return r;
}

Test(rtnl, tap_create_tagged_persistent, .init = netns_setup, .fini = netns_teardown) {
        uint32_t ifindex;
        LinkInfo l;

        cr_assert_eq(tap_create(rtnl, "tap-a1", TAG_OURS, (uid_t) -1, &ifindex), 0, "%s",
                     rtnl_error_message(rtnl));
        /* The creating fd is closed: the TAP persists, tagged. */
        cr_assert(oracle_link_exists("tap-a1"));
        cr_assert(oracle_link_has("tap-a1", "\"ifalias\":\"" TAG_OURS "\""));
        cr_assert(oracle_link_has("tap-a1", "\"type\":\"tap\""));
        cr_assert(oracle_link_has("tap-a1", "\"pi\":false"));
        cr_assert(oracle_link_has("tap-a1", "\"vnet_hdr\":true"));
        cr_assert_eq(rtnl_link_get(rtnl, ifindex, &l), 0);
        cr_assert_str_eq(l.name, "tap-a1");
        cr_assert_str_eq(l.alias, TAG_OURS);
        cr_assert_str_eq(l.kind, "tun");

        /* A second TAP of the same name is refused and the first one is left as it was. */
        cr_assert_lt(tap_create(rtnl, "tap-a1", TAG_OTHER, (uid_t) -1, NULL), 0);
        cr_assert(oracle_link_has("tap-a1", TAG_OURS));
        cr_assert_eq(tap_create(rtnl, "bad/name", TAG_OURS, (uid_t) -1, NULL), -EINVAL);
}

Test(rtnl, bridge_enslave_up_mac_mtu, .init = netns_setup, .fini = netns_teardown) {
        uint32_t br, tap;
        static const uint8_t mac[6] = { 0x02, 0xc4, 0x00, 0x00, 0x00, 0xa1 };

        cr_assert_eq(rtnl_bridge_create(rtnl, "chvm0", "chvm1:x:core:bridge", &br), 0, "%s",
                     rtnl_error_message(rtnl));
        cr_assert_eq(rtnl_bridge_create(rtnl, "chvm0", "chvm1:x:core:bridge", NULL), -EEXIST);
        cr_assert_eq(rtnl_addr_add4(rtnl, br, 0xc0a8c801, 24), 0, "%s", rtnl_error_message(rtnl));
        cr_assert_eq(tap_create(rtnl, "tap-a1", TAG_OURS, (uid_t) -1, &tap), 0);

        LinkChange c = LINK_CHANGE_KEEP;
        c.master = br;
        c.up = 1;
        c.mtu = 1400;
        c.mac = mac;
        cr_assert_eq(rtnl_link_change(rtnl, tap, &c), 0, "%s", rtnl_error_message(rtnl));
        cr_assert(oracle_link_has("tap-a1", "\"master\":\"chvm0\""));
        cr_assert(oracle_link_has("tap-a1", "\"mtu\":1400"));
        cr_assert(oracle_link_has("tap-a1", "\"address\":\"02:c4:00:00:00:a1\""));
        cr_assert(oracle_link_has("chvm0", "\"ifalias\":\"chvm1:x:core:bridge\""));
        char *addr = sh("ip -j addr show dev chvm0");
        cr_assert(strstr(addr, "\"local\":\"192.168.200.1\",\"prefixlen\":24"), "%s", addr);
        free(addr);

        LinkInfo l;
        cr_assert_eq(rtnl_link_get(rtnl, tap, &l), 0);
        cr_assert_eq(l.master, br);
        cr_assert(l.flags & IFF_UP);
}

Test(rtnl, kernel_errors_carry_extack, .init = netns_setup, .fini = netns_teardown) {
        uint32_t tap;
        cr_assert_eq(tap_create(rtnl, "tap-a1", TAG_OURS, (uid_t) -1, &tap), 0);
        LinkChange c = LINK_CHANGE_KEEP;
        c.master = tap; /* a TAP cannot be enslaved to a TAP */
        int r = rtnl_link_change(rtnl, tap, &c);
        cr_assert_lt(r, 0);
        cr_assert_eq(rtnl_link_get(rtnl, 999999, &(LinkInfo){}), -ENODEV);
        c = (LinkChange) LINK_CHANGE_KEEP;
        c.mtu = 1; /* below the minimum MTU: the kernel says why */
        cr_assert_eq(rtnl_link_change(rtnl, tap, &c), -EINVAL);
        cr_assert_str_neq(rtnl_error_message(rtnl), "", "no extack text for a refused MTU");
}

Test(rtnl, delete_owned_rechecks_identity, .init = netns_setup, .fini = netns_teardown) {
        uint32_t tap;
        cr_assert_eq(tap_create(rtnl, "tap-a1", TAG_OURS, (uid_t) -1, &tap), 0);

        OwnedLink wrong_tag = { .ifindex = tap, .name = "tap-a1", .tag = TAG_OTHER };
        cr_assert_eq(rtnl_link_delete_owned(rtnl, &wrong_tag), -ESTALE);
        OwnedLink wrong_name = { .ifindex = tap, .name = "tap-a2", .tag = TAG_OURS };
        cr_assert_eq(rtnl_link_delete_owned(rtnl, &wrong_name), -ESTALE);
        cr_assert(oracle_link_exists("tap-a1"));

        OwnedLink ours = { .ifindex = tap, .name = "tap-a1", .tag = TAG_OURS };
        cr_assert_eq(rtnl_link_delete_owned(rtnl, &ours), 0);
        cr_assert_not(oracle_link_exists("tap-a1"));
        cr_assert_eq(rtnl_link_delete_owned(rtnl, &ours), 0, "already gone must count as success");
}

/* Bulk deletion through a netdev group takes exactly the verified links and no decoy. */
Test(rtnl, bulk_delete_only_ours, .init = netns_setup, .fini = netns_teardown) {
        enum { N = 1000 };
        OwnedLink links[N + 1];
        char names[N + 1][IFNAMSIZ];

        for (int i = 0; i < N; i++) {
                snprintf(names[i], IFNAMSIZ, "tap-%04x", i);
                cr_assert_eq(tap_create(rtnl, names[i], TAG_OURS, (uid_t) -1, &links[i].ifindex), 0);
                links[i].name = names[i];
                links[i].tag = TAG_OURS;
        }
        /* Decoys: an untagged TAP with our prefix, another agent's TAP, and one of "ours" re-tagged. */
        char *o = sh("ip tuntap add dev tap-deadbeef mode tap 2>&1");
        free(o);
        cr_assert(oracle_link_exists("tap-deadbeef"));
        uint32_t other;
        cr_assert_eq(tap_create(rtnl, "tap-other", TAG_OTHER, (uid_t) -1, &other), 0);
        LinkChange c = LINK_CHANGE_KEEP;
        c.alias = TAG_OTHER;
        cr_assert_eq(rtnl_link_change(rtnl, links[7].ifindex, &c), 0);
        /* And a link the journal remembers that is gone already. */
        snprintf(names[N], IFNAMSIZ, "tap-gone");
        links[N] = (OwnedLink){ .ifindex = 999999, .name = names[N], .tag = TAG_OURS };

        char *before = sh("ip -j -d link show dev tap-deadbeef; ip -j -d link show dev tap-other");
        size_t deleted, stale;
        cr_assert_eq(rtnl_links_delete_owned_bulk(rtnl, links, N + 1, &deleted, &stale), 0, "%s",
                     rtnl_error_message(rtnl));
        cr_assert_eq(deleted, N); /* N - 1 deleted + 1 already gone */
        cr_assert_eq(stale, 1);

        char *after = sh("ip -j -d link show dev tap-deadbeef; ip -j -d link show dev tap-other");
        cr_assert_str_eq(before, after, "a decoy changed");
        cr_assert(oracle_link_exists(names[7]), "the re-tagged link was deleted");
        char *left = sh("ip -o link show | grep -c 'tap-0'");
        cr_assert_eq(atoi(left), 1, "%s TAPs of ours left", left);
        free(before);
        free(after);
        free(left);
}
