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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/nl/nft.h"
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
