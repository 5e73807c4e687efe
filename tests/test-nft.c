/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* nftables layer: the batch parsed back without a kernel, then the real tables in a private network
 * namespace, checked with `nft list` (the independent oracle). */

#include <criterion/criterion.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* After netinet/in.h, whose definitions it would clash with. */
#include <linux/netfilter.h>

#include "backends/nl/nft.h"
#include "tests/nlfault.h"
#include "tests/shell-oracle.h"

#define AGENT "chvm1:c41e5500-1234-4000-8000-deadbeef0001"

static const NftLayout layout = {
        .table = "chvm",
        .bridge = "chvm0",
        .subnet = 0xc0a8c800,
        .prefixlen = 24,
        .tag_prefix = AGENT,
};

static int comment_of(const struct nftnl_udata *a, void *data) {
        if (nftnl_udata_type(a) == 0)
                *(const char **) data = nftnl_udata_get(a);
        return 0;
}

/* Every table, chain and rule message of the layout batch carries a tag comment of ours. */
Test(nft_build, layout_batch_is_tagged) {
        Nft *nft;
        cr_assert_eq(nft_open(&nft), 0);
        NftBatch *b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_add_layout(b, &layout), 0);
        const void *buf;
        size_t len;
        cr_assert_eq(nft_batch_peek(b, &buf, &len), 0);

        unsigned tables = 0, chains = 0, rules = 0, sets = 0, begin = 0, end = 0;
        int n = (int) len;
        for (const struct nlmsghdr *m = buf; mnl_nlmsg_ok(m, n); m = mnl_nlmsg_next(m, &n)) {
                uint16_t type = m->nlmsg_type & 0xff;
                const char *tag = NULL;
                uint32_t ulen = 0;
                const void *ud = NULL;
                if (m->nlmsg_type == NFNL_MSG_BATCH_BEGIN) {
                        begin++;
                        continue;
                }
                if (m->nlmsg_type == NFNL_MSG_BATCH_END) {
                        end++;
                        continue;
                }
                cr_assert(m->nlmsg_flags & NLM_F_ACK, "message %u without NLM_F_ACK", type);
                if (type == NFT_MSG_NEWTABLE) {
                        struct nftnl_table *t = nftnl_table_alloc();
                        cr_assert_eq(nftnl_table_nlmsg_parse(m, t), 0);
                        cr_assert(m->nlmsg_flags & NLM_F_EXCL, "table creation must be exclusive");
                        ud = nftnl_table_get_data(t, NFTNL_TABLE_USERDATA, &ulen);
                        nftnl_udata_parse(ud, ulen, comment_of, &tag);
                        cr_assert(tag && strncmp(tag, AGENT ":core:", strlen(AGENT ":core:")) == 0);
                        nftnl_table_free(t);
                        tables++;
                } else if (type == NFT_MSG_NEWCHAIN) {
                        struct nftnl_chain *c = nftnl_chain_alloc();
                        cr_assert_eq(nftnl_chain_nlmsg_parse(m, c), 0);
                        ud = nftnl_chain_get_data(c, NFTNL_CHAIN_USERDATA, &ulen);
                        nftnl_udata_parse(ud, ulen, comment_of, &tag);
                        cr_assert(tag && strstr(tag, nftnl_chain_get_str(c, NFTNL_CHAIN_NAME)),
                                  "chain tag %s", tag);
                        nftnl_chain_free(c);
                        chains++;
                } else if (type == NFT_MSG_NEWRULE) {
                        struct nftnl_rule *r = nftnl_rule_alloc();
                        cr_assert_eq(nftnl_rule_nlmsg_parse(m, r), 0);
                        ud = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &ulen);
                        nftnl_udata_parse(ud, ulen, comment_of, &tag);
                        cr_assert(tag && strncmp(tag, AGENT ":core:", strlen(AGENT ":core:")) == 0);
                        nftnl_rule_free(r);
                        rules++;
                } else if (type == NFT_MSG_NEWSET)
                        sets++;
        }
        cr_assert_eq(begin, 1);
        cr_assert_eq(end, 1);
        cr_assert_eq(tables, 2);
        cr_assert_eq(sets, 3);
        cr_assert_eq(chains, 5);
        cr_assert_eq(rules, 10);
        cr_assert_eq(nft_batch_n_ops(b), tables + sets + chains + rules);
        nft_batch_free(b);
        nft_close(nft);
}

Test(nft_build, bad_elements_refused) {
        Nft *nft;
        cr_assert_eq(nft_open(&nft), 0);
        NftBatch *b = nft_batch_new(nft);
        NftElem e = { .kind = NFT_ELEM_PORTFWD, .proto = IPPROTO_ICMP, .host_port = 1, .guest_port = 1 };
        snprintf(e.tag, sizeof(e.tag), "x");
        cr_assert_eq(nft_batch_elem(b, &layout, &e, true), -EINVAL);
        e.proto = IPPROTO_TCP;
        e.host_port = 0;
        cr_assert_eq(nft_batch_elem(b, &layout, &e, true), -EINVAL);
        e.host_port = 80;
        e.tag[0] = '\0';
        cr_assert_eq(nft_batch_elem(b, &layout, &e, true), -EINVAL, "an element without a tag");
        NftElem p = { .kind = NFT_ELEM_VM_PORT };
        snprintf(p.tag, sizeof(p.tag), "x");
        cr_assert_eq(nft_batch_elem(b, &layout, &p, true), -EINVAL, "an element without an interface name");
        cr_assert_eq(nft_batch_n_ops(b), 0);
        nft_batch_free(b);
        nft_close(nft);
}

/* --- in a private network namespace ---------------------------------------------------------------- */

static Nft *nft;

static void netns_setup(void) {
        if (geteuid() != 0)
                cr_skip_test("needs root to create a network namespace (the test runs in its own)");
        if (unshare(CLONE_NEWNET) < 0)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
        if (system("nft --version >/dev/null 2>&1") != 0)
                cr_skip_test("the nft command (the test's oracle) is not installed");
        cr_assert_eq(nft_open(&nft), 0);
}

static void netns_teardown(void) {
        nft = nft_close(nft);
}

static void setup_layout(void) {
        NftBatch *b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_add_layout(b, &layout), 0);
        cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
        nft_batch_free(b);
}

static NftElem fwd(uint16_t hport, uint8_t proto, uint32_t ip, uint16_t gport, const char *vm) {
        NftElem e = { .kind = NFT_ELEM_PORTFWD,
                      .proto = proto,
                      .host_port = hport,
                      .guest_ip = ip,
                      .guest_port = gport };
        snprintf(e.tag, sizeof(e.tag), AGENT ":%s:fwd", vm);
        return e;
}

/* The layout as nft itself lists it: the DESIGN.md tables, every object with its comment. */
Test(nft, layout_matches_design, .init = netns_setup, .fini = netns_teardown) {
        setup_layout();
        char *out = sh("nft list ruleset");
        static const char *const expected[] = {
                "table inet chvm {\n\tcomment \"" AGENT ":core:table\"",
                "\tmap portfwd4 {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n"
                "\t\tcomment \"" AGENT ":core:portfwd4\"",
                "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
                "\t\tfib daddr type local dnat ip to meta l4proto . th dport map @portfwd4 comment \"" AGENT
                ":core:dnat-prerouting\"",
                "\t\ttype nat hook output priority -100; policy accept;\n"
                "\t\tfib daddr type local dnat ip to meta l4proto . th dport map @portfwd4 comment \"" AGENT
                ":core:dnat-output\"",
                "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
                "\t\tip saddr 192.168.200.0/24 ip daddr != 192.168.200.0/24 masquerade comment \"" AGENT
                ":core:masquerade\"",
                "\t\toifname \"chvm0\" ct state established,related accept comment \"" AGENT
                ":core:forward-established\"",
                "\t\toifname \"chvm0\" ct status dnat accept comment \"" AGENT ":core:forward-dnat\"",
                "\t\toifname \"chvm0\" iifname != \"chvm0\" drop comment \"" AGENT ":core:forward-drop\"",
                "table bridge chvm {\n\tcomment \"" AGENT ":core:table-bridge\"",
                "\tset vm_ports {\n\t\ttype ifname\n\t\tcomment \"" AGENT ":core:vm_ports\"",
                "\tset vm_addrs {\n\t\ttype ifname . ether_addr . ipv4_addr\n\t\tcomment \"" AGENT
                ":core:vm_addrs\"",
                "\t\ttype filter hook prerouting priority filter; policy accept;\n"
                "\t\tiifname @vm_ports ether type != ip ether type != arp drop comment \"" AGENT
                ":core:antispoof-ethertype\"\n"
                "\t\tiifname @vm_ports iifname . ether saddr . ip saddr != @vm_addrs drop comment \"" AGENT
                ":core:antispoof-ip\"\n"
                "\t\tiifname @vm_ports iifname . ether saddr . arp saddr ip != @vm_addrs drop comment \"" AGENT
                ":core:antispoof-arp\"\n"
                "\t\tiifname @vm_ports iifname . arp saddr ether . arp saddr ip != @vm_addrs drop comment \"" AGENT
                ":core:antispoof-arp-sender\"",
        };
        for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
                cr_assert(strstr(out, expected[i]), "missing from `nft list ruleset`:\n%s\n---- got:\n%s",
                          expected[i], out);
        free(out);

        char tag[NFT_TAG_MAX + 1];
        cr_assert_eq(nft_table_tag(nft, &layout, tag), 0);
        cr_assert_str_eq(tag, AGENT ":core:table");

        /* The rules dump: every rule of ours with its handle and tag; one added by hand has none. */
        free(sh("nft add rule inet chvm forward meta l4proto tcp counter"));
        NftRuleInfo *rules;
        size_t n_rules;
        cr_assert_eq(nft_dump_rules(nft, &layout, &rules, &n_rules), 0);
        cr_assert_eq(n_rules, 11);
        unsigned untagged = 0;
        for (size_t i = 0; i < n_rules; i++) {
                cr_assert_gt(rules[i].handle, 0);
                if (!rules[i].tag[0]) {
                        untagged++;
                        cr_assert_str_eq(rules[i].chain, "forward");
                } else
                        cr_assert(strncmp(rules[i].tag, AGENT ":core:", strlen(AGENT ":core:")) == 0, "%s",
                                  rules[i].tag);
        }
        cr_assert_eq(untagged, 1);
        free(rules);
        free(sh("nft delete rule inet chvm forward handle $(nft -a list chain inet chvm forward | grep -o 'counter.*# handle [0-9]*' | grep -o '[0-9]*$')"));

        /* Set up twice: the exclusive create refuses, and nothing changes. */
        char *before = sh("nft -j list ruleset");
        NftBatch *b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_add_layout(b, &layout), 0);
        cr_assert_eq(nft_batch_commit(nft, b), -EEXIST);
        cr_assert(strstr(nft_error_message(nft), "create table inet chvm"), "%s", nft_error_message(nft));
        nft_batch_free(b);
        char *after = sh("nft -j list ruleset");
        cr_assert_str_eq(before, after);
        free(before);
        free(after);
}

Test(nft, elements_tagged_and_dumped, .init = netns_setup, .fini = netns_teardown) {
        setup_layout();
        NftBatch *b = nft_batch_new(nft);
        NftElem f1 = fwd(8080, IPPROTO_TCP, 0xc0a8c802, 80, "00000000000000a1");
        NftElem f2 = fwd(8080, IPPROTO_UDP, 0xc0a8c802, 53, "00000000000000a1");
        NftElem port = { .kind = NFT_ELEM_VM_PORT };
        snprintf(port.ifname, sizeof(port.ifname), "tap-a1");
        snprintf(port.tag, sizeof(port.tag), AGENT ":00000000000000a1:port");
        NftElem addr = { .kind = NFT_ELEM_VM_ADDR,
                         .guest_ip = 0xc0a8c802,
                         .mac = { 2, 0xc4, 0, 0, 0, 0xa1 } };
        snprintf(addr.ifname, sizeof(addr.ifname), "tap-a1");
        snprintf(addr.tag, sizeof(addr.tag), AGENT ":00000000000000a1:addr");
        cr_assert_eq(nft_batch_elem(b, &layout, &f1, true), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &f2, true), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &port, true), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &addr, true), 0);
        cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
        nft_batch_free(b);

        char *out = sh("nft list ruleset");
        cr_assert(strstr(out, "tcp . 8080 comment \"" AGENT ":00000000000000a1:fwd\" : 192.168.200.2 . 80"),
                  "%s", out);
        cr_assert(strstr(out, "udp . 8080 comment \"" AGENT ":00000000000000a1:fwd\" : 192.168.200.2 . 53"),
                  "%s", out);
        cr_assert(strstr(out, "\"tap-a1\" comment \"" AGENT ":00000000000000a1:port\""), "%s", out);
        cr_assert(strstr(out, "\"tap-a1\" . 02:c4:00:00:00:a1 . 192.168.200.2 comment \"" AGENT
                              ":00000000000000a1:addr\""),
                  "%s", out);
        free(out);

        /* An element added by hand, without a tag: dumped with an empty tag. */
        free(sh("nft add element inet chvm portfwd4 '{ tcp . 9999 : 192.168.200.99 . 80 }'"));
        NftElem *elems;
        size_t n;
        cr_assert_eq(nft_dump_elems(nft, &layout, &elems, &n), 0);
        cr_assert_eq(n, 5, "%zu elements dumped", n);
        unsigned tagged = 0, untagged = 0;
        for (size_t i = 0; i < n; i++) {
                if (elems[i].tag[0])
                        tagged++;
                else {
                        untagged++;
                        cr_assert_eq(elems[i].kind, NFT_ELEM_PORTFWD);
                        cr_assert_eq(elems[i].host_port, 9999);
                        cr_assert_eq(elems[i].guest_ip, 0xc0a8c863);
                }
                if (elems[i].kind == NFT_ELEM_VM_ADDR) {
                        cr_assert_str_eq(elems[i].ifname, "tap-a1");
                        cr_assert_eq(elems[i].mac[5], 0xa1);
                        cr_assert_eq(elems[i].guest_ip, 0xc0a8c802);
                }
        }
        cr_assert_eq(tagged, 4);
        cr_assert_eq(untagged, 1);
        free(elems);

        /* Delete ours in one batch: the hand-made element stays. */
        b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_elem(b, &layout, &f1, false), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &f2, false), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &port, false), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &addr, false), 0);
        cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
        nft_batch_free(b);
        cr_assert_eq(nft_dump_elems(nft, &layout, &elems, &n), 0);
        cr_assert_eq(n, 1);
        cr_assert_eq(elems[0].host_port, 9999);
        free(elems);
}

/* A batch that fails at its last message changes nothing, and the error names that operation. */
Test(nft, batch_is_atomic, .init = netns_setup, .fini = netns_teardown) {
        setup_layout();
        NftElem taken = fwd(8080, IPPROTO_TCP, 0xc0a8c802, 80, "00000000000000a1");
        NftBatch *b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_elem(b, &layout, &taken, true), 0);
        cr_assert_eq(nft_batch_commit(nft, b), 0);
        nft_batch_free(b);

        char *before = sh("nft -j list ruleset");
        b = nft_batch_new(nft);
        NftElem a = fwd(9000, IPPROTO_TCP, 0xc0a8c803, 80, "00000000000000a2");
        NftElem c = fwd(9001, IPPROTO_UDP, 0xc0a8c803, 81, "00000000000000a2");
        NftElem clash = fwd(8080, IPPROTO_TCP, 0xc0a8c803, 22, "00000000000000a2");
        cr_assert_eq(nft_batch_elem(b, &layout, &a, true), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &c, true), 0);
        cr_assert_eq(nft_batch_elem(b, &layout, &clash, true), 0);
        cr_assert_eq(nft_batch_commit(nft, b), -EEXIST);
        cr_assert(strstr(nft_error_message(nft), "add forward 8080/tcp"), "%s", nft_error_message(nft));
        nft_batch_free(b);
        char *after = sh("nft -j list ruleset");
        cr_assert_str_eq(before, after, "a failed batch changed the ruleset");
        free(before);
        free(after);
}

/* --- faults: a batch fails as a whole at every position; lost answers; errors of the whole batch ------- */

static NlFault fault;

/* The elements a bring-up of VM a1 with two forwards adds, in the order the local backend adds them. */
static void vm_elems(NftElem e[4], const char *vm, const char *tap, uint32_t ip, uint16_t port) {
        e[0] = (NftElem){ .kind = NFT_ELEM_VM_PORT };
        snprintf(e[0].ifname, sizeof(e[0].ifname), "%s", tap);
        snprintf(e[0].tag, sizeof(e[0].tag), AGENT ":%s:port", vm);
        e[1] = (NftElem){ .kind = NFT_ELEM_VM_ADDR, .guest_ip = ip, .mac = { 2, 0, 0, 0, 0, (uint8_t) ip } };
        snprintf(e[1].ifname, sizeof(e[1].ifname), "%s", tap);
        snprintf(e[1].tag, sizeof(e[1].tag), AGENT ":%s:addr", vm);
        e[2] = fwd(port, IPPROTO_TCP, ip, 80, vm);
        e[3] = fwd(port, IPPROTO_UDP, ip, 53, vm);
}

static NftBatch *batch_of(bool layout_too, const NftElem *e, size_t n, bool add) {
        NftBatch *b = nft_batch_new(nft);
        cr_assert(b);
        if (layout_too)
                cr_assert_eq(nft_batch_add_layout(b, &layout), 0);
        for (size_t i = 0; i < n; i++)
                cr_assert_eq(nft_batch_elem(b, &layout, &e[i], add), 0);
        return b;
}

/* Every message of the batch, poisoned in turn: the kernel refuses it, the ruleset is byte for byte what it
 * was, and the error names that message's operation. Returns the number of positions. */
static size_t fail_at_every_position(bool layout_too, const NftElem *e, size_t n) {
        NftBatch *probe = batch_of(layout_too, e, n, true);
        size_t n_ops = nft_batch_n_ops(probe);
        nft_batch_free(probe);
        for (size_t i = 0; i < n_ops; i++) {
                char *before = sh("nft -j list ruleset");
                NftBatch *b = batch_of(layout_too, e, n, true);
                nft_set_ops(nft, nl_fault_arm(&fault, NL_FAULT_POISON, 1, (unsigned) i));
                int r = nft_batch_commit(nft, b);
                nft_set_ops(nft, NULL);
                cr_assert(fault.fired);
                cr_assert_lt(r, 0, "message %zu (%s) poisoned, yet the batch was committed", i,
                             nft_batch_op(b, i));
                const char *msg = nft_error_message(nft);
                cr_assert(strncmp(msg, nft_batch_op(b, i), strlen(nft_batch_op(b, i))) == 0 &&
                                  msg[strlen(nft_batch_op(b, i))] == ':',
                          "message %zu failed, the error names another: %s", i, msg);
                char *after = sh("nft -j list ruleset");
                cr_assert_str_eq(before, after, "message %zu (%s) failed, and the ruleset changed", i,
                                 nft_batch_op(b, i));
                free(before);
                free(after);
                nft_batch_free(b);
        }
        return n_ops;
}

/* (B) The layout batch (20 messages), the batch of one VM's bring-up with two forwards (4), and the rebuild
 * batch of both (24): a failure at any position changes nothing. */
Test(nft_faults, batch_fails_whole_at_every_position, .init = netns_setup, .fini = netns_teardown) {
        NftElem a1[4], a2[4];
        vm_elems(a1, "00000000000000a1", "tap-a1", 0xc0a8c802, 8080);
        vm_elems(a2, "00000000000000a2", "tap-a2", 0xc0a8c803, 9090);
        cr_assert_eq(fail_at_every_position(true, NULL, 0), 20, "the layout batch");
        cr_assert_eq(fail_at_every_position(true, a1, 4), 24, "the rebuild batch: layout and elements");

        setup_layout();
        NftBatch *b = batch_of(false, a2, 4, true); /* another VM, so the ruleset has elements */
        cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
        nft_batch_free(b);
        cr_assert_eq(fail_at_every_position(false, a1, 4), 4, "the batch of one VM's bring-up");
}

/* (B) The same with the kernel's own reason: an untagged element for the same key, made by hand, makes the
 * exclusive add of position i fail with EEXIST; so does a table of our name made by hand. */
Test(nft_faults, conflicting_element_at_every_position, .init = netns_setup, .fini = netns_teardown) {
        static const char *const decoys[4] = {
                "nft add element bridge chvm vm_ports '{ \"tap-a1\" }'",
                "nft add element bridge chvm vm_addrs '{ \"tap-a1\" . 02:00:00:00:00:02 . 192.168.200.2 }'",
                "nft add element inet chvm portfwd4 '{ tcp . 8080 : 10.9.9.9 . 22 }'",
                "nft add element inet chvm portfwd4 '{ udp . 8080 : 10.9.9.9 . 22 }'",
        };
        static const char *const undo[4] = {
                "nft delete element bridge chvm vm_ports '{ \"tap-a1\" }'",
                "nft delete element bridge chvm vm_addrs '{ \"tap-a1\" . 02:00:00:00:00:02 . 192.168.200.2 }'",
                "nft delete element inet chvm portfwd4 '{ tcp . 8080 }'",
                "nft delete element inet chvm portfwd4 '{ udp . 8080 }'",
        };
        NftElem a1[4];
        vm_elems(a1, "00000000000000a1", "tap-a1", 0xc0a8c802, 8080);
        setup_layout();
        for (size_t i = 0; i < 4; i++) {
                free(sh("%s", decoys[i]));
                char *before = sh("nft -j list ruleset");
                NftBatch *b = batch_of(false, a1, 4, true);
                cr_assert_eq(nft_batch_commit(nft, b), -EEXIST, "position %zu", i);
                cr_assert(strstr(nft_error_message(nft), nft_batch_op(b, i)), "position %zu: %s", i,
                          nft_error_message(nft));
                char *after = sh("nft -j list ruleset");
                cr_assert_str_eq(before, after, "position %zu", i);
                free(before);
                free(after);
                nft_batch_free(b);
                free(sh("%s", undo[i]));
        }
        /* The tables: `bridge chvm` made by hand fails the layout at its creation, inet chvm untouched. */
        NftBatch *b = nft_batch_new(nft);
        NftLayout other = layout;
        other.table = "chvmx";
        free(sh("nft add table bridge chvmx"));
        char *before = sh("nft -j list ruleset");
        cr_assert_eq(nft_batch_add_layout(b, &other), 0);
        cr_assert_eq(nft_batch_commit(nft, b), -EEXIST);
        cr_assert(strstr(nft_error_message(nft), "create table bridge chvmx"), "%s", nft_error_message(nft));
        char *after = sh("nft -j list ruleset");
        cr_assert_str_eq(before, after);
        free(before);
        free(after);
        nft_batch_free(b);
}

static size_t batches_sent(void) {
        size_t n = 0;
        for (unsigned i = 0; i < fault.n_requests && i < NL_FAULT_LOG_MAX; i++)
                n += strncmp(fault.log[i], "nft batch", 9) == 0;
        return n;
}

/* (C) The answers to a committed batch are lost (ENOBUFS, or silently): the tags in the kernel say it was
 * committed, and it is not sent again. Lost answers to a refused batch: nothing of it is there, so it is
 * sent again and the kernel's refusal comes through. EINTR: sent again, once. */
Test(nft_faults, lost_answers_resolved_from_tags, .init = netns_setup, .fini = netns_teardown) {
        static const NlFaultKind kinds[] = { NL_FAULT_ENOBUFS, NL_FAULT_LOST_ACK };
        NftElem a1[4];
        vm_elems(a1, "00000000000000a1", "tap-a1", 0xc0a8c802, 8080);

        for (size_t k = 0; k < 2; k++) {
                /* the layout and elements, committed, answers lost */
                NftBatch *b = batch_of(true, a1, 4, true);
                nft_set_ops(nft, nl_fault_arm(&fault, kinds[k], 1, 0));
                cr_assert_eq(nft_batch_commit(nft, b), 0, "%s: %s", nl_fault_kind_to_string(kinds[k]),
                             nft_error_message(nft));
                nft_set_ops(nft, NULL);
                cr_assert(fault.fired);
                cr_assert_eq(batches_sent(), 1, "a committed batch was sent again");
                nft_batch_free(b);
                char *out = sh("nft list ruleset");
                cr_assert_eq(count_substr(out, "comment \"" AGENT ":00000000000000a1:"), 4, "%s", out);
                free(out);

                /* The same once more is committed as far as anyone can tell: the elements are there as
                 * wanted. With one taken by hand first, the kernel refuses it (EEXIST), and the answer is
                 * lost. */
                b = batch_of(false, a1, 4, true);
                nft_set_ops(nft, nl_fault_arm(&fault, kinds[k], 1, 0));
                cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
                nft_set_ops(nft, NULL);
                cr_assert_eq(batches_sent(), 1);
                nft_batch_free(b);
                NftElem a3[4];
                vm_elems(a3, "00000000000000a3", "tap-a3", 0xc0a8c804, 8181);
                free(sh("nft add element inet chvm portfwd4 '{ udp . 8181 : 10.9.9.9 . 22 }'"));
                char *before = sh("nft -j list ruleset");
                b = batch_of(false, a3, 4, true);
                nft_set_ops(nft, nl_fault_arm(&fault, kinds[k], 1, 0));
                cr_assert_eq(nft_batch_commit(nft, b), -EEXIST, "%s", nft_error_message(nft));
                nft_set_ops(nft, NULL);
                cr_assert_eq(batches_sent(), 2,
                             "the refused batch is sent once more, for the kernel's reason");
                nft_batch_free(b);
                char *after = sh("nft -j list ruleset");
                cr_assert_str_eq(before, after);
                free(before);
                free(after);

                free(sh("nft delete element inet chvm portfwd4 '{ udp . 8181 }'"));
                /* delete, answers lost */
                b = batch_of(false, a1, 4, false);
                nft_set_ops(nft, nl_fault_arm(&fault, kinds[k], 1, 0));
                cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
                nft_set_ops(nft, NULL);
                cr_assert_eq(batches_sent(), 1);
                nft_batch_free(b);
                out = sh("nft list ruleset");
                cr_assert_eq(count_substr(out, ":00000000000000a1:"), 0, "%s", out);
                free(out);

                b = nft_batch_new(nft);
                cr_assert_eq(nft_batch_delete_tables(b, &layout), 0);
                cr_assert_eq(nft_batch_commit(nft, b), 0);
                nft_batch_free(b);
        }

        NftBatch *b = batch_of(true, a1, 4, true);
        nft_set_ops(nft, nl_fault_arm(&fault, NL_FAULT_EINTR, 1, 0));
        cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
        nft_set_ops(nft, NULL);
        cr_assert(fault.fired);
        cr_assert_eq(batches_sent(), 2, "interrupted before it was sent: sent once more");
        nft_batch_free(b);
        char *out = sh("nft list ruleset");
        cr_assert_eq(count_substr(out, "comment \"" AGENT ":00000000000000a1:"), 4, "%s", out);
        free(out);
}

/* An error the kernel gives the whole batch, as the answer to BATCH_BEGIN: ENOMEM while it collected the
 * answers (nothing else comes), or a commit that failed after every message was accepted (their 0s
 * follow). Either way the batch did not apply, and the caller hears so at once. */
Test(nft_faults, error_of_the_whole_batch, .init = netns_setup, .fini = netns_teardown) {
        static const NlFaultKind kinds[] = { NL_FAULT_ENOMEM, NL_FAULT_COMMIT_ERROR };
        NftElem a1[4];
        vm_elems(a1, "00000000000000a1", "tap-a1", 0xc0a8c802, 8080);
        for (size_t k = 0; k < 2; k++) {
                char *before = sh("nft -j list ruleset");
                NftBatch *b = batch_of(true, a1, 4, true);
                struct timespec t0, t1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                nft_set_ops(nft, nl_fault_arm(&fault, kinds[k], 1, 0));
                int r = nft_batch_commit(nft, b);
                nft_set_ops(nft, NULL);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                cr_assert_eq(r, -ENOMEM, "%s: %d (%s)", nl_fault_kind_to_string(kinds[k]), r,
                             nft_error_message(nft));
                cr_assert(strstr(nft_error_message(nft), "nftables batch (create table inet chvm"), "%s",
                          nft_error_message(nft));
                double s = (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
                cr_assert_lt(s, 1.0, "%s: the answer took %.1f s", nl_fault_kind_to_string(kinds[k]), s);
                char *after = sh("nft -j list ruleset");
                cr_assert_str_eq(before, after);
                free(before);
                free(after);
                nft_batch_free(b);
                /* nothing stale is left on the socket for the next request */
                char tag[NFT_TAG_MAX + 1];
                cr_assert_eq(nft_table_tag(nft, &layout, tag), -ENOENT);
        }
}

/* (C) Every request of an element dump (generation, three sets, generation), faulted in turn: ENOBUFS,
 * lost answers and EINTR are retried to the same result; refusals come back as errors. */
Test(nft_faults, dumps_resync, .init = netns_setup, .fini = netns_teardown) {
        NftElem a1[4];
        vm_elems(a1, "00000000000000a1", "tap-a1", 0xc0a8c802, 8080);
        setup_layout();
        NftBatch *b = batch_of(false, a1, 4, true);
        cr_assert_eq(nft_batch_commit(nft, b), 0);
        nft_batch_free(b);

        NftElem *clean;
        size_t n_clean;
        nft_set_ops(nft, nl_fault_arm(&fault, NL_FAULT_NONE, 0, 0));
        cr_assert_eq(nft_dump_elems(nft, &layout, &clean, &n_clean), 0);
        unsigned requests = fault.n_requests;
        cr_assert_eq(requests, 5);
        cr_assert_eq(n_clean, 4);
        unsigned sites = 0;
        for (NlFaultKind k = NL_FAULT_EEXIST; k <= NL_FAULT_LOST_ACK; k++)
                for (unsigned at = 1; at <= requests; at++) {
                        NftElem *e = NULL;
                        size_t n = 0;
                        nft_set_ops(nft, nl_fault_arm(&fault, k, at, 0));
                        int r = nft_dump_elems(nft, &layout, &e, &n);
                        cr_assert(fault.fired);
                        sites++;
                        if (k == NL_FAULT_EINTR || k == NL_FAULT_ENOBUFS || k == NL_FAULT_LOST_ACK) {
                                cr_assert_eq(r, 0, "%s at request %u (%s): %d", nl_fault_kind_to_string(k),
                                             at, fault.log[at - 1], r);
                                cr_assert_eq(n, n_clean);
                                cr_assert_eq(memcmp(e, clean, n * sizeof(NftElem)), 0);
                                free(e);
                        } else
                                cr_assert_eq(r,
                                             k == NL_FAULT_EEXIST  ? -EEXIST
                                             : k == NL_FAULT_EBUSY ? -EBUSY
                                                                   : -ENOMEM,
                                             "%s at request %u: %d", nl_fault_kind_to_string(k), at, r);
                }
        nft_set_ops(nft, NULL);
        cr_assert_eq(sites, 6 * 5);
        free(clean);
}

/* --- table ownership: what the kernel does with NFT_TABLE_F_OWNER and NFT_TABLE_F_PERSIST -------------- */

static NftLayout with_flags(uint32_t flags) {
        NftLayout l = layout;
        l.table_flags = flags;
        return l;
}

#define OWNED (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST)

static void commit_layout(Nft *n, const NftLayout *l, bool with_elems) {
        NftBatch *b = nft_batch_new(n);
        cr_assert_eq(nft_batch_add_layout(b, l), 0);
        if (with_elems) {
                NftElem a1[4];
                vm_elems(a1, "00000000000000a1", "tap-a1", 0xc0a8c802, 8080);
                for (size_t i = 0; i < 4; i++)
                        cr_assert_eq(nft_batch_elem(b, l, &a1[i], true), 0);
        }
        cr_assert_eq(nft_batch_commit(n, b), 0, "%s", nft_error_message(n));
        nft_batch_free(b);
}

/* Another process: the nft command. Its output and exit status. */
static char *nft_cli(const char *args) {
        return sh("nft %s 2>&1; echo \"rc=$?\"", args);
}

/* A process that makes the layout with `flags` on a socket of its own, then is killed (SIGKILL: an agent
 * crash) when told to through the pipe; or, with hold, lives on until then. */
static pid_t owner_process(uint32_t flags, int *ret_tell) {
        int ready[2], go[2];
        cr_assert_eq(pipe(ready), 0);
        cr_assert_eq(pipe(go), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                Nft *n;
                char c = 0;
                close(ready[0]);
                close(go[1]);
                if (nft_open(&n) < 0)
                        _exit(1);
                NftLayout l = with_flags(flags);
                NftBatch *b = nft_batch_new(n);
                NftElem a1[4];
                vm_elems(a1, "00000000000000a1", "tap-a1", 0xc0a8c802, 8080);
                if (nft_batch_add_layout(b, &l) < 0)
                        _exit(1);
                for (size_t i = 0; i < 4; i++)
                        if (nft_batch_elem(b, &l, &a1[i], true) < 0)
                                _exit(1);
                if (nft_batch_commit(n, b) < 0)
                        _exit(2);
                if (write(ready[1], "r", 1) != 1)
                        _exit(1);
                if (read(go[0], &c, 1) < 0)
                        _exit(1);
                raise(SIGKILL);
                _exit(3);
        }
        close(ready[1]);
        close(go[0]);
        char c;
        cr_assert_eq(read(ready[0], &c, 1), 1, "the owner process failed");
        close(ready[0]);
        *ret_tell = go[1];
        return pid;
}

static void kill_owner(pid_t pid, int tell) {
        int status;
        cr_assert_eq(write(tell, "k", 1), 1);
        close(tell);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* This kernel (6.18) knows both flags; an unknown flag is refused; the probe itself changes nothing, not
 * even the ruleset's generation. A refusal of the probe (here injected: a kernel before 6.9 answers
 * EOPNOTSUPP) reads as "not supported". */
Test(nft_owner, probe, .init = netns_setup, .fini = netns_teardown) {
        uint32_t g0, g1;
        char *before = sh("nft -j list ruleset");
        cr_assert_eq(nft_generation(nft, &g0), 0);
        cr_assert_eq(nft_probe_table_flags(nft, NFT_TABLE_F_OWNER), 0, "%s", nft_error_message(nft));
        cr_assert_eq(nft_probe_table_flags(nft, OWNED), 0, "%s", nft_error_message(nft));
        cr_assert_eq(nft_probe_table_flags(nft, 0x80), -EOPNOTSUPP, "%s", nft_error_message(nft));
        cr_assert_eq(nft_generation(nft, &g1), 0);
        cr_assert_eq(g0, g1, "the probe committed something");
        char *after = sh("nft -j list ruleset");
        cr_assert_str_eq(before, after);
        free(before);
        free(after);
}

/* Owned tables: others list them (nft list, read-only), but cannot add an element, a rule, or delete the
 * table (EPERM); `nft flush ruleset` by another process removes every other table and passes ours by. */
Test(nft_owner, others_read_but_cannot_change_or_flush, .init = netns_setup, .fini = netns_teardown) {
        NftLayout l = with_flags(OWNED);
        commit_layout(nft, &l, true);
        NftTableInfo info;
        cr_assert_eq(nft_table_info(nft, &l, NFPROTO_INET, &info), 0);
        cr_assert_eq(info.flags, OWNED);
        cr_assert_eq(info.owner, nft_portid(nft));
        cr_assert_eq(nft_table_info(nft, &l, NFPROTO_BRIDGE, &info), 0);
        cr_assert_eq(info.flags, OWNED);

        char *ours = sh("nft -j list table inet chvm; nft -j list table bridge chvm");
        cr_assert(strstr(ours, "fwd") && strstr(ours, "\"owner\""), "nft lists owned tables: %s", ours);
        static const char *const changes[] = {
                "add element inet chvm portfwd4 '{ tcp . 9999 : 192.168.200.99 . 80 }'",
                "add element bridge chvm vm_ports '{ \"tap-x\" }'",
                "add rule inet chvm forward counter",
                "delete table inet chvm",
                "delete table bridge chvm",
                "flush table inet chvm",
        };
        for (size_t i = 0; i < ELEMENTSOF(changes); i++) {
                char *o = nft_cli(changes[i]);
                cr_assert(strstr(o, "Operation not permitted") && !strstr(o, "rc=0"), "nft %s: %s",
                          changes[i], o);
                free(o);
        }
        free(sh("nft add table ip foreign; nft add chain ip foreign c"));
        char *o = nft_cli("flush ruleset");
        cr_assert(strstr(o, "rc=0"), "%s", o);
        free(o);
        char *tables = sh("nft list tables");
        cr_assert_str_eq(tables, "table inet chvm\ntable bridge chvm\n", "after flush ruleset: %s", tables);
        char *ours2 = sh("nft -j list table inet chvm; nft -j list table bridge chvm");
        cr_assert_str_eq(ours, ours2, "flush ruleset by another process changed our tables");
        free(tables);
        free(ours);
        free(ours2);

        /* The owner itself changes them as ever. */
        NftElem e = fwd(7000, IPPROTO_TCP, 0xc0a8c809, 22, "00000000000000b1");
        NftBatch *b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_elem(b, &l, &e, true), 0);
        cr_assert_eq(nft_batch_commit(nft, b), 0, "%s", nft_error_message(nft));
        nft_batch_free(b);
}

/* NFT_TABLE_F_OWNER alone: when the owning socket goes (the process is killed), the kernel deletes the
 * tables with it, elements and all. */
Test(nft_owner, owner_killed_without_persist_tables_go, .init = netns_setup, .fini = netns_teardown) {
        int tell;
        pid_t pid = owner_process(NFT_TABLE_F_OWNER, &tell);
        char *t = sh("nft list tables");
        cr_assert_str_eq(t, "table inet chvm\ntable bridge chvm\n");
        free(t);
        kill_owner(pid, tell);
        t = sh("nft list tables");
        cr_assert_str_empty(t, "the tables outlived their owner: %s", t);
        free(t);
}

/* With NFT_TABLE_F_PERSIST the tables outlive their owner, orphaned (PERSIST without OWNER), elements and
 * all. An orphan has no protection: others may change it, and flush ruleset would remove it. The next
 * socket that sets OWNER on it adopts it, and then only that one may change it. */
Test(nft_owner, owner_killed_with_persist_tables_orphaned_then_adopted, .init = netns_setup,
     .fini = netns_teardown) {
        NftLayout l = with_flags(OWNED);
        int tell;
        pid_t pid = owner_process(OWNED, &tell);
        char *before = sh("nft list ruleset");
        kill_owner(pid, tell);
        char *after = sh("nft list ruleset");
        cr_assert(strstr(after, "comment \"" AGENT ":00000000000000a1:fwd\""), "%s", after);
        NftTableInfo info;
        cr_assert_eq(nft_table_info(nft, &l, NFPROTO_INET, &info), 0);
        cr_assert_eq(info.flags, NFT_TABLE_F_PERSIST, "orphaned: %x", info.flags);
        cr_assert_eq(nft_table_info(nft, &l, NFPROTO_BRIDGE, &info), 0);
        cr_assert_eq(info.flags, NFT_TABLE_F_PERSIST);
        free(before);
        free(after);

        /* Orphaned: anyone may add to it. */
        char *o = nft_cli("add element inet chvm portfwd4 '{ tcp . 9999 : 192.168.200.99 . 80 }'");
        cr_assert(strstr(o, "rc=0"), "%s", o);
        free(o);

        /* Adoption: one batch for both tables; then ours alone again. */
        cr_assert_eq(nft_adopt_tables(nft, &l), 0, "%s", nft_error_message(nft));
        for (int f = 0; f < 2; f++) {
                cr_assert_eq(nft_table_info(nft, &l, f ? NFPROTO_BRIDGE : NFPROTO_INET, &info), 0);
                cr_assert_eq(info.flags, OWNED);
                cr_assert_eq(info.owner, nft_portid(nft));
        }
        o = nft_cli("add element inet chvm portfwd4 '{ tcp . 9998 : 192.168.200.99 . 80 }'");
        cr_assert(strstr(o, "Operation not permitted"), "%s", o);
        free(o);
        o = sh("nft list map inet chvm portfwd4");
        cr_assert(strstr(o, "9999") && strstr(o, "8080"), "adoption kept the elements: %s", o);
        free(o);
        /* Adopting again is a no-op for the owner. */
        cr_assert_eq(nft_adopt_tables(nft, &l), 0, "%s", nft_error_message(nft));
        nft = nft_close(nft); /* and let go */
        cr_assert_eq(nft_open(&nft), 0);

        /* An orphan is flushed like any table. */
        o = nft_cli("flush ruleset");
        cr_assert(strstr(o, "rc=0"), "%s", o);
        free(o);
        o = sh("nft list tables");
        cr_assert_str_empty(o, "an orphaned table survived flush ruleset: %s", o);
        free(o);
}

/* Adoption is refused while the owner lives (EPERM), for tables made without PERSIST (EOPNOTSUPP: the kernel
 * never lets OWNER be set on a table that has none, nor PERSIST be added later), and where there are no
 * tables (ENOENT); a refused adoption changes nothing. */
Test(nft_owner, adoption_refused, .init = netns_setup, .fini = netns_teardown) {
        NftLayout l = with_flags(OWNED);
        cr_assert_eq(nft_adopt_tables(nft, &l), -ENOENT, "%s", nft_error_message(nft));
        cr_assert(strstr(nft_error_message(nft), "table inet chvm"), "%s", nft_error_message(nft));
        char *none = sh("nft list tables");
        cr_assert_str_empty(none, "adopting nothing made tables: %s", none);
        free(none);

        int tell;
        pid_t pid = owner_process(OWNED, &tell);
        char *before = sh("nft -j list ruleset");
        cr_assert_eq(nft_adopt_tables(nft, &l), -EPERM, "%s", nft_error_message(nft));
        char *after = sh("nft -j list ruleset");
        cr_assert_str_eq(before, after);
        free(before);
        free(after);
        kill_owner(pid, tell);
        cr_assert_eq(nft_adopt_tables(nft, &l), 0, "%s", nft_error_message(nft));
        NftBatch *b = nft_batch_new(nft);
        cr_assert_eq(nft_batch_delete_tables(b, &l), 0);
        cr_assert_eq(nft_batch_commit(nft, b), 0, "the owner deletes its tables: %s",
                     nft_error_message(nft));
        nft_batch_free(b);

        NftLayout plain = with_flags(0);
        commit_layout(nft, &plain, false);
        before = sh("nft -j list ruleset");
        cr_assert_eq(nft_adopt_tables(nft, &l), -EOPNOTSUPP, "%s", nft_error_message(nft));
        after = sh("nft -j list ruleset");
        cr_assert_str_eq(before, after);
        free(before);
        free(after);
}
