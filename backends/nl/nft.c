/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter_bridge.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "backends/nl/nft.h"
#include "backends/nl/nlerr.h"

#define IFNAMSIZ_PADDED 16 /* an ifname in a register or set key: 16 bytes, NUL-padded */

/* nft's datatype ids (as `nft` stores them in NFTA_SET_KEY_TYPE; a concatenation is the ids shifted in
 * 6 bits at a time), checked against what nft 1.0.6 creates for the same declarations. */
#define DT_IPADDR 7
#define DT_ETHERADDR 9
#define DT_INET_PROTOCOL 12
#define DT_INET_SERVICE 13
#define DT_IFNAME 41
#define DT_CONCAT2(a, b) (((a) << 6) | (b))
#define DT_CONCAT3(a, b, c) (((((a) << 6) | (b)) << 6) | (c))

/* Set userdata as nft writes it (byte order of key/data, "typeof concat" marker), so that `nft list`
 * prints our sets and elements exactly as if nft had made them. */
#define BYTEORDER_INVALID 0
#define BYTEORDER_HOST_ENDIAN 1
#define NFT_EXPR_CONCAT 13

struct Nft {
        struct mnl_socket *nl;
        uint32_t portid;
        uint32_t seq;
        char error[512];
};

struct NftBatch {
        Nft *nft;
        struct nftnl_batch *batch;
        uint32_t first_seq; /* of the first operation (after BEGIN) */
        uint32_t next_seq;
        char **ops; /* description of each operation, by seq - first_seq */
        size_t n_ops;
        uint32_t next_set_id;
        bool ended;
        void *flat; /* nft_batch_peek()'s copy */
};

static const char *const elem_kind_table[_NFT_ELEM_KIND_MAX] = {
        [NFT_ELEM_PORTFWD] = "portfwd4",
        [NFT_ELEM_VM_PORT] = "vm_ports",
        [NFT_ELEM_VM_ADDR] = "vm_addrs",
};

const char *nft_elem_kind_to_string(NftElemKind k) {
        if (k < 0 || k >= _NFT_ELEM_KIND_MAX)
                return NULL;
        return elem_kind_table[k];
}

int nft_open(Nft **ret) {
        Nft *nft = calloc(1, sizeof(Nft));
        int one = 1;

        if (!nft)
                return -ENOMEM;
        nft->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
        if (!nft->nl) {
                int r = negative_errno();
                free(nft);
                return r;
        }
        (void) mnl_socket_setsockopt(nft->nl, NETLINK_EXT_ACK, &one, sizeof(one));
        (void) mnl_socket_setsockopt(nft->nl, NETLINK_CAP_ACK, &one, sizeof(one));
        if (mnl_socket_bind(nft->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
                int r = negative_errno();
                nft_close(nft);
                return r;
        }
        nft->portid = mnl_socket_get_portid(nft->nl);
        nft->seq = (uint32_t) time(NULL) << 8;
        *ret = nft;
        return 0;
}

Nft *nft_close(Nft *nft) {
        if (!nft)
                return NULL;
        if (nft->nl)
                mnl_socket_close(nft->nl);
        free(nft);
        return NULL;
}

const char *nft_error_message(const Nft *nft) {
        return nft->error;
}

_printf_(3, 4) static int nft_fail(Nft *nft, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(nft->error, sizeof(nft->error), fmt, ap);
        va_end(ap);
        return r;
}

/* --- batches ------------------------------------------------------------------------------------ */

NftBatch *nft_batch_new(Nft *nft) {
        NftBatch *b = calloc(1, sizeof(NftBatch));
        if (!b)
                return NULL;
        b->nft = nft;
        b->batch = nftnl_batch_alloc(MNL_SOCKET_BUFFER_SIZE, MNL_SOCKET_BUFFER_SIZE);
        if (!b->batch) {
                free(b);
                return NULL;
        }
        nftnl_batch_begin(nftnl_batch_buffer(b->batch), nft->seq++);
        nftnl_batch_update(b->batch);
        b->first_seq = b->next_seq = nft->seq;
        b->next_set_id = 1;
        return b;
}

NftBatch *nft_batch_free(NftBatch *b) {
        if (!b)
                return NULL;
        for (size_t i = 0; i < b->n_ops; i++)
                free(b->ops[i]);
        free(b->ops);
        free(b->flat);
        nftnl_batch_free(b->batch);
        free(b);
        return NULL;
}

size_t nft_batch_n_ops(const NftBatch *b) {
        return b->n_ops;
}

/* Starts the next message of the batch, remembering what it does for error messages. */
_printf_(5, 6) static struct nlmsghdr *batch_msg(NftBatch *b, uint16_t type, uint16_t family, uint16_t flags,
                                                 const char *fmt, ...) {
        char *desc = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&desc, fmt, ap) < 0)
                desc = NULL;
        va_end(ap);
        char **ops = realloc(b->ops, (b->n_ops + 1) * sizeof(char *));
        if (!desc || !ops) {
                free(desc);
                if (ops)
                        b->ops = ops;
                return NULL;
        }
        b->ops = ops;
        b->ops[b->n_ops++] = desc;
        b->nft->seq = ++b->next_seq;
        return nftnl_nlmsg_build_hdr(nftnl_batch_buffer(b->batch), type, family, flags | NLM_F_ACK,
                                     b->next_seq - 1);
}

static int batch_done(NftBatch *b) {
        return nftnl_batch_update(b->batch) < 0 ? -ENOMEM : 0;
}

/* A comment in nft's userdata form: one TLV (type 0 = the *_COMMENT type of every object), NUL included. */
static struct nftnl_udata_buf *comment_udata(const char *tag) {
        struct nftnl_udata_buf *u = nftnl_udata_buf_alloc(NFT_TAG_MAX + 16);
        if (u && !nftnl_udata_put_strz(u, 0, tag)) {
                nftnl_udata_buf_free(u);
                return NULL;
        }
        return u;
}

static int tagged(NftBatch *b, const NftLayout *l, const char *role, char *out, size_t size) {
        (void) b;
        int n = snprintf(out, size, "%s:core:%s", l->tag_prefix, role);
        return n < 0 || (size_t) n >= size || (size_t) n > NFT_TAG_MAX ? -ENAMETOOLONG : 0;
}

static int add_table(NftBatch *b, const NftLayout *l, uint16_t family, const char *role) {
        char tag[NFT_TAG_MAX + 1];
        struct nftnl_table *t;
        struct nftnl_udata_buf *u;
        struct nlmsghdr *nlh;
        int r;

        r = tagged(b, l, role, tag, sizeof(tag));
        if (r < 0)
                return r;
        t = nftnl_table_alloc();
        u = comment_udata(tag);
        nlh = batch_msg(b, NFT_MSG_NEWTABLE, family, NLM_F_CREATE | NLM_F_EXCL, "create table %s %s",
                        family == NFPROTO_INET ? "inet" : "bridge", l->table);
        if (!t || !u || !nlh) {
                nftnl_table_free(t);
                if (u)
                        nftnl_udata_buf_free(u);
                return -ENOMEM;
        }
        nftnl_table_set_str(t, NFTNL_TABLE_NAME, l->table);
        nftnl_table_set_data(t, NFTNL_TABLE_USERDATA, nftnl_udata_buf_data(u), nftnl_udata_buf_len(u));
        nftnl_table_nlmsg_build_payload(nlh, t);
        nftnl_table_free(t);
        nftnl_udata_buf_free(u);
        return batch_done(b);
}

typedef struct SetSpec {
        const char *name;
        uint16_t family;
        uint32_t key_type, key_len;
        uint32_t data_type, data_len; /* maps only */
        uint32_t key_byteorder;
        bool concat;
} SetSpec;

static int add_set(NftBatch *b, const NftLayout *l, const SetSpec *s, uint32_t *ret_id) {
        char tag[NFT_TAG_MAX + 1];
        struct nftnl_set *set;
        struct nftnl_udata_buf *u;
        struct nlmsghdr *nlh;
        int r;

        r = tagged(b, l, s->name, tag, sizeof(tag));
        if (r < 0)
                return r;
        set = nftnl_set_alloc();
        u = nftnl_udata_buf_alloc(256);
        if (!set || !u) {
                nftnl_set_free(set);
                if (u)
                        nftnl_udata_buf_free(u);
                return -ENOMEM;
        }
        nftnl_udata_put_u32(u, NFTNL_UDATA_SET_KEYBYTEORDER, s->key_byteorder);
        if (s->data_len)
                nftnl_udata_put_u32(u, NFTNL_UDATA_SET_DATABYTEORDER, BYTEORDER_INVALID);
        if (s->concat) {
                struct nftnl_udata *nest = nftnl_udata_nest_start(u, NFTNL_UDATA_SET_KEY_TYPEOF);
                nftnl_udata_put_u32(u, 0, NFT_EXPR_CONCAT);
                nftnl_udata_put(u, 1, 0, NULL);
                nftnl_udata_nest_end(u, nest);
        }
        if (s->data_len) {
                struct nftnl_udata *nest = nftnl_udata_nest_start(u, NFTNL_UDATA_SET_DATA_TYPEOF);
                nftnl_udata_put_u32(u, 0, NFT_EXPR_CONCAT);
                nftnl_udata_put(u, 1, 0, NULL);
                nftnl_udata_nest_end(u, nest);
                nftnl_udata_put_u32(u, NFTNL_UDATA_SET_DATA_INTERVAL, 0);
        }
        nftnl_udata_put_strz(u, NFTNL_UDATA_SET_COMMENT, tag);

        nftnl_set_set_str(set, NFTNL_SET_TABLE, l->table);
        nftnl_set_set_str(set, NFTNL_SET_NAME, s->name);
        nftnl_set_set_u32(set, NFTNL_SET_FAMILY, s->family);
        nftnl_set_set_u32(set, NFTNL_SET_KEY_TYPE, s->key_type);
        nftnl_set_set_u32(set, NFTNL_SET_KEY_LEN, s->key_len);
        if (s->data_len) {
                nftnl_set_set_u32(set, NFTNL_SET_FLAGS, NFT_SET_MAP);
                nftnl_set_set_u32(set, NFTNL_SET_DATA_TYPE, s->data_type);
                nftnl_set_set_u32(set, NFTNL_SET_DATA_LEN, s->data_len);
        } else
                nftnl_set_set_u32(set, NFTNL_SET_FLAGS, 0);
        *ret_id = b->next_set_id++;
        nftnl_set_set_u32(set, NFTNL_SET_ID, *ret_id);
        nftnl_set_set_data(set, NFTNL_SET_USERDATA, nftnl_udata_buf_data(u), nftnl_udata_buf_len(u));

        nlh = batch_msg(b, NFT_MSG_NEWSET, s->family, NLM_F_CREATE | NLM_F_EXCL, "create set %s %s %s",
                        s->family == NFPROTO_INET ? "inet" : "bridge", l->table, s->name);
        if (nlh)
                nftnl_set_nlmsg_build_payload(nlh, set);
        nftnl_set_free(set);
        nftnl_udata_buf_free(u);
        return nlh ? batch_done(b) : -ENOMEM;
}

static int add_chain(NftBatch *b, const NftLayout *l, uint16_t family, const char *name, const char *type,
                     uint32_t hook, int32_t prio) {
        char tag[NFT_TAG_MAX + 1];
        struct nftnl_chain *c;
        struct nftnl_udata_buf *u;
        struct nlmsghdr *nlh;
        int r;

        r = tagged(b, l, name, tag, sizeof(tag));
        if (r < 0)
                return r;
        c = nftnl_chain_alloc();
        u = comment_udata(tag);
        nlh = batch_msg(b, NFT_MSG_NEWCHAIN, family, NLM_F_CREATE | NLM_F_EXCL, "create chain %s %s %s",
                        family == NFPROTO_INET ? "inet" : "bridge", l->table, name);
        if (!c || !u || !nlh) {
                nftnl_chain_free(c);
                if (u)
                        nftnl_udata_buf_free(u);
                return -ENOMEM;
        }
        nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, l->table);
        nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, name);
        nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, type);
        nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, hook);
        nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, prio);
        nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
        nftnl_chain_set_data(c, NFTNL_CHAIN_USERDATA, nftnl_udata_buf_data(u), nftnl_udata_buf_len(u));
        nftnl_chain_nlmsg_build_payload(nlh, c);
        nftnl_chain_free(c);
        nftnl_udata_buf_free(u);
        return batch_done(b);
}

/* --- expressions ----------------------------------------------------------------------------------- */

static void e_meta(struct nftnl_rule *r, uint32_t key, uint32_t dreg) {
        struct nftnl_expr *e = nftnl_expr_alloc("meta");
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
        nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
        nftnl_rule_add_expr(r, e);
}

static void e_cmp(struct nftnl_rule *r, uint32_t sreg, uint32_t op, const void *data, uint32_t len) {
        struct nftnl_expr *e = nftnl_expr_alloc("cmp");
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, sreg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
        nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
        nftnl_rule_add_expr(r, e);
}

static void e_payload(struct nftnl_rule *r, uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg) {
        struct nftnl_expr *e = nftnl_expr_alloc("payload");
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
        nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
        nftnl_rule_add_expr(r, e);
}

static void e_lookup(struct nftnl_rule *r, uint32_t sreg, int64_t dreg, const char *set, uint32_t set_id,
                     bool inv) {
        struct nftnl_expr *e = nftnl_expr_alloc("lookup");
        nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg);
        if (dreg >= 0)
                nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, (uint32_t) dreg);
        nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set);
        nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, set_id);
        if (inv)
                nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        nftnl_rule_add_expr(r, e);
}

static void e_bitwise_and(struct nftnl_rule *r, uint32_t reg, uint32_t mask, uint32_t len) {
        struct nftnl_expr *e = nftnl_expr_alloc("bitwise");
        uint32_t zero = 0;
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, reg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, reg);
        nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
        nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, &mask, len);
        nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, &zero, len);
        nftnl_rule_add_expr(r, e);
}

static void e_verdict(struct nftnl_rule *r, int verdict) {
        struct nftnl_expr *e = nftnl_expr_alloc("immediate");
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
        nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, (uint32_t) verdict);
        nftnl_rule_add_expr(r, e);
}

static void e_ifname(struct nftnl_rule *r, uint32_t key, uint32_t op, const char *name) {
        char buf[IFNAMSIZ_PADDED] = {};
        e_meta(r, key, NFT_REG_1);
        memcpy(buf, name, strnlen(name, 15));
        e_cmp(r, NFT_REG_1, op, buf, sizeof(buf));
}

static void e_fib_local_daddr(struct nftnl_rule *r) {
        struct nftnl_expr *e = nftnl_expr_alloc("fib");
        uint32_t local = RTN_LOCAL;
        nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
        nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
        nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
        nftnl_rule_add_expr(r, e);
        e_cmp(r, NFT_REG_1, NFT_CMP_EQ, &local, sizeof(local));
}

/* ip saddr/daddr (network header offset 12/16) in or not in subnet/prefixlen */
static void e_ip_in_subnet(struct nftnl_rule *r, uint32_t offset, uint32_t subnet, uint8_t prefixlen,
                           uint32_t op) {
        uint32_t be = htonl(subnet);
        if (prefixlen % 8 == 0 && prefixlen > 0) {
                e_payload(r, NFT_PAYLOAD_NETWORK_HEADER, offset, prefixlen / 8, NFT_REG_1);
                e_cmp(r, NFT_REG_1, op, &be, prefixlen / 8);
        } else {
                uint32_t mask = prefixlen ? htonl(~UINT32_C(0) << (32 - prefixlen)) : 0;
                be &= mask;
                e_payload(r, NFT_PAYLOAD_NETWORK_HEADER, offset, 4, NFT_REG_1);
                e_bitwise_and(r, NFT_REG_1, mask, 4);
                e_cmp(r, NFT_REG_1, op, &be, 4);
        }
}

typedef void (*RuleBuilder)(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids);

static void rule_dnat(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        (void) l;
        e_fib_local_daddr(r);
        e_meta(r, NFT_META_L4PROTO, NFT_REG_1);
        e_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_01); /* th dport */
        e_lookup(r, NFT_REG_1, NFT_REG_1, "portfwd4", set_ids[0], false);
        struct nftnl_expr *e = nftnl_expr_alloc("nat");
        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, NFPROTO_IPV4);
        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, NFT_REG_1);
        nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, NFT_REG32_01);
        nftnl_rule_add_expr(r, e);
}

static void rule_masquerade(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        uint8_t ipv4 = NFPROTO_IPV4;
        (void) set_ids;
        e_meta(r, NFT_META_NFPROTO, NFT_REG_1);
        e_cmp(r, NFT_REG_1, NFT_CMP_EQ, &ipv4, 1);
        e_ip_in_subnet(r, 12, l->subnet, l->prefixlen, NFT_CMP_EQ);
        e_ip_in_subnet(r, 16, l->subnet, l->prefixlen, NFT_CMP_NEQ);
        nftnl_rule_add_expr(r, nftnl_expr_alloc("masq"));
}

static void ct_bits_accept(struct nftnl_rule *r, const NftLayout *l, uint32_t key, uint32_t bits) {
        uint32_t zero = 0;
        e_ifname(r, NFT_META_OIFNAME, NFT_CMP_EQ, l->bridge);
        struct nftnl_expr *e = nftnl_expr_alloc("ct");
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, key);
        nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
        nftnl_rule_add_expr(r, e);
        e_bitwise_and(r, NFT_REG_1, bits, 4);
        e_cmp(r, NFT_REG_1, NFT_CMP_NEQ, &zero, 4);
        e_verdict(r, NF_ACCEPT);
}

static void rule_fwd_established(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        (void) set_ids;
        ct_bits_accept(r, l, NFT_CT_STATE,
                       NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
}

static void rule_fwd_dnat(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        (void) set_ids;
        ct_bits_accept(r, l, NFT_CT_STATUS, IPS_DST_NAT);
}

static void rule_fwd_drop(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        (void) set_ids;
        e_ifname(r, NFT_META_OIFNAME, NFT_CMP_EQ, l->bridge);
        e_ifname(r, NFT_META_IIFNAME, NFT_CMP_NEQ, l->bridge);
        e_verdict(r, NF_DROP);
}

/* iifname @vm_ports iifname . ether saddr . <ip or arp sender ip> != @vm_addrs drop */
static void antispoof(struct nftnl_rule *r, const uint32_t *set_ids, bool arp) {
        e_meta(r, NFT_META_IIFNAME, NFT_REG_1);
        e_lookup(r, NFT_REG_1, -1, "vm_ports", set_ids[1], false);
        if (arp) {
                uint16_t type = htons(ETHERTYPE_ARP);
                e_payload(r, NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
                e_cmp(r, NFT_REG_1, NFT_CMP_EQ, &type, 2);
        } else {
                uint16_t type = htons(ETHERTYPE_IP);
                e_meta(r, NFT_META_PROTOCOL, NFT_REG_1);
                e_cmp(r, NFT_REG_1, NFT_CMP_EQ, &type, 2);
        }
        e_meta(r, NFT_META_IIFNAME, NFT_REG_1);
        e_payload(r, NFT_PAYLOAD_LL_HEADER, 6, 6, NFT_REG_2);
        e_payload(r, NFT_PAYLOAD_NETWORK_HEADER, arp ? 14 : 12, 4, NFT_REG32_06);
        e_lookup(r, NFT_REG_1, -1, "vm_addrs", set_ids[2], true);
        e_verdict(r, NF_DROP);
}

/* iifname @vm_ports ether type != ip ether type != arp drop: nothing but IPv4 and ARP from a VM port, so
 * no other frame type (IPv6, VLAN-tagged frames, ...) can carry a foreign MAC past the checks below and
 * teach the bridge another VM's address. */
static void rule_antispoof_ethertype(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        uint16_t ip = htons(ETHERTYPE_IP), arp = htons(ETHERTYPE_ARP);
        (void) l;
        e_meta(r, NFT_META_IIFNAME, NFT_REG_1);
        e_lookup(r, NFT_REG_1, -1, "vm_ports", set_ids[1], false);
        e_payload(r, NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
        e_cmp(r, NFT_REG_1, NFT_CMP_NEQ, &ip, 2);
        e_cmp(r, NFT_REG_1, NFT_CMP_NEQ, &arp, 2);
        e_verdict(r, NF_DROP);
}

/* iifname @vm_ports iifname . arp saddr ether . arp saddr ip != @vm_addrs drop: the sender hardware
 * address inside an ARP packet must be the VM's too. */
static void rule_antispoof_arp_sha(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        uint16_t type = htons(ETHERTYPE_ARP);
        (void) l;
        e_meta(r, NFT_META_IIFNAME, NFT_REG_1);
        e_lookup(r, NFT_REG_1, -1, "vm_ports", set_ids[1], false);
        e_payload(r, NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
        e_cmp(r, NFT_REG_1, NFT_CMP_EQ, &type, 2);
        e_meta(r, NFT_META_IIFNAME, NFT_REG_1);
        e_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 8, 6, NFT_REG_2);
        e_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 14, 4, NFT_REG32_06);
        e_lookup(r, NFT_REG_1, -1, "vm_addrs", set_ids[2], true);
        e_verdict(r, NF_DROP);
}

static void rule_antispoof_ip(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        (void) l;
        antispoof(r, set_ids, false);
}

static void rule_antispoof_arp(struct nftnl_rule *r, const NftLayout *l, const uint32_t *set_ids) {
        (void) l;
        antispoof(r, set_ids, true);
}

static int add_rule(NftBatch *b, const NftLayout *l, uint16_t family, const char *chain, const char *role,
                    RuleBuilder build, const uint32_t *set_ids) {
        char tag[NFT_TAG_MAX + 1];
        struct nftnl_rule *r;
        struct nftnl_udata_buf *u;
        struct nlmsghdr *nlh;
        int k;

        k = tagged(b, l, role, tag, sizeof(tag));
        if (k < 0)
                return k;
        r = nftnl_rule_alloc();
        u = comment_udata(tag);
        nlh = batch_msg(b, NFT_MSG_NEWRULE, family, NLM_F_CREATE | NLM_F_APPEND, "add rule %s %s %s (%s)",
                        family == NFPROTO_INET ? "inet" : "bridge", l->table, chain, role);
        if (!r || !u || !nlh) {
                nftnl_rule_free(r);
                if (u)
                        nftnl_udata_buf_free(u);
                return -ENOMEM;
        }
        nftnl_rule_set_str(r, NFTNL_RULE_TABLE, l->table);
        nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
        nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, family);
        build(r, l, set_ids);
        nftnl_rule_set_data(r, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(u), nftnl_udata_buf_len(u));
        nftnl_rule_nlmsg_build_payload(nlh, r);
        nftnl_rule_free(r);
        nftnl_udata_buf_free(u);
        return batch_done(b);
}

int nft_batch_add_layout(NftBatch *b, const NftLayout *l) {
        static const SetSpec portfwd4 = {
                .name = "portfwd4",
                .family = NFPROTO_INET,
                .key_type = DT_CONCAT2(DT_INET_PROTOCOL, DT_INET_SERVICE),
                .key_len = 8,
                .data_type = DT_CONCAT2(DT_IPADDR, DT_INET_SERVICE),
                .data_len = 8,
                .key_byteorder = BYTEORDER_INVALID,
                .concat = true,
        };
        static const SetSpec vm_ports = {
                .name = "vm_ports",
                .family = NFPROTO_BRIDGE,
                .key_type = DT_IFNAME,
                .key_len = IFNAMSIZ_PADDED,
                .key_byteorder = BYTEORDER_HOST_ENDIAN,
        };
        static const SetSpec vm_addrs = {
                .name = "vm_addrs",
                .family = NFPROTO_BRIDGE,
                .key_type = DT_CONCAT3(DT_IFNAME, DT_ETHERADDR, DT_IPADDR),
                .key_len = IFNAMSIZ_PADDED + 8 + 4,
                .key_byteorder = BYTEORDER_INVALID,
                .concat = true,
        };
        uint32_t ids[3];
        int r;

        if (!l->table || !l->bridge || !l->tag_prefix || l->prefixlen > 32)
                return -EINVAL;

        if ((r = add_table(b, l, NFPROTO_INET, "table")) < 0 ||
            (r = add_set(b, l, &portfwd4, &ids[0])) < 0 ||
            (r = add_chain(b, l, NFPROTO_INET, "prerouting", "nat", NF_INET_PRE_ROUTING, -100)) < 0 ||
            (r = add_chain(b, l, NFPROTO_INET, "output", "nat", NF_INET_LOCAL_OUT, -100)) < 0 ||
            (r = add_chain(b, l, NFPROTO_INET, "postrouting", "nat", NF_INET_POST_ROUTING, 100)) < 0 ||
            (r = add_chain(b, l, NFPROTO_INET, "forward", "filter", NF_INET_FORWARD, 0)) < 0 ||
            (r = add_rule(b, l, NFPROTO_INET, "prerouting", "dnat-prerouting", rule_dnat, ids)) < 0 ||
            (r = add_rule(b, l, NFPROTO_INET, "output", "dnat-output", rule_dnat, ids)) < 0 ||
            (r = add_rule(b, l, NFPROTO_INET, "postrouting", "masquerade", rule_masquerade, ids)) < 0 ||
            (r = add_rule(b, l, NFPROTO_INET, "forward", "forward-established", rule_fwd_established, ids)) <
                    0 ||
            (r = add_rule(b, l, NFPROTO_INET, "forward", "forward-dnat", rule_fwd_dnat, ids)) < 0 ||
            (r = add_rule(b, l, NFPROTO_INET, "forward", "forward-drop", rule_fwd_drop, ids)) < 0)
                return r;

        if ((r = add_table(b, l, NFPROTO_BRIDGE, "table-bridge")) < 0 ||
            (r = add_set(b, l, &vm_ports, &ids[1])) < 0 || (r = add_set(b, l, &vm_addrs, &ids[2])) < 0 ||
            (r = add_chain(b, l, NFPROTO_BRIDGE, "antispoof", "filter", NF_BR_PRE_ROUTING, -200)) < 0 ||
            (r = add_rule(b, l, NFPROTO_BRIDGE, "antispoof", "antispoof-ethertype", rule_antispoof_ethertype,
                          ids)) < 0 ||
            (r = add_rule(b, l, NFPROTO_BRIDGE, "antispoof", "antispoof-ip", rule_antispoof_ip, ids)) < 0 ||
            (r = add_rule(b, l, NFPROTO_BRIDGE, "antispoof", "antispoof-arp", rule_antispoof_arp, ids)) <
                    0 ||
            (r = add_rule(b, l, NFPROTO_BRIDGE, "antispoof", "antispoof-arp-sender", rule_antispoof_arp_sha,
                          ids)) < 0)
                return r;
        return 0;
}

int nft_batch_delete_tables(NftBatch *b, const NftLayout *l) {
        static const uint16_t families[] = { NFPROTO_INET, NFPROTO_BRIDGE };
        for (size_t i = 0; i < ELEMENTSOF(families); i++) {
                struct nftnl_table *t = nftnl_table_alloc();
                struct nlmsghdr *nlh = batch_msg(b, NFT_MSG_DELTABLE, families[i], 0, "delete table %s %s",
                                                 i == 0 ? "inet" : "bridge", l->table);
                if (!t || !nlh) {
                        nftnl_table_free(t);
                        return -ENOMEM;
                }
                nftnl_table_set_str(t, NFTNL_TABLE_NAME, l->table);
                nftnl_table_nlmsg_build_payload(nlh, t);
                nftnl_table_free(t);
                if (batch_done(b) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* The key (and map data) of an element in the register layout nft uses: every field padded to 4 bytes. */
static int elem_key(const NftElem *e, uint8_t key[32], uint32_t *key_len, uint8_t data[8],
                    uint32_t *data_len) {
        memset(key, 0, 32);
        memset(data, 0, 8);
        *data_len = 0;
        switch (e->kind) {
        case NFT_ELEM_PORTFWD: {
                uint16_t hp = htons(e->host_port), gp = htons(e->guest_port);
                uint32_t ip = htonl(e->guest_ip);
                if ((e->proto != IPPROTO_TCP && e->proto != IPPROTO_UDP) || e->host_port == 0 ||
                    e->guest_port == 0)
                        return -EINVAL;
                key[0] = e->proto;
                memcpy(key + 4, &hp, 2);
                *key_len = 8;
                memcpy(data, &ip, 4);
                memcpy(data + 4, &gp, 2);
                *data_len = 8;
                return 0;
        }
        case NFT_ELEM_VM_PORT:
        case NFT_ELEM_VM_ADDR: {
                size_t n = strnlen(e->ifname, sizeof(e->ifname));
                if (n == 0 || n >= 16)
                        return -EINVAL;
                memcpy(key, e->ifname, n);
                *key_len = IFNAMSIZ_PADDED;
                if (e->kind == NFT_ELEM_VM_ADDR) {
                        uint32_t ip = htonl(e->guest_ip);
                        memcpy(key + 16, e->mac, 6);
                        memcpy(key + 24, &ip, 4);
                        *key_len = 28;
                }
                return 0;
        }
        default:
                return -EINVAL;
        }
}

int nft_batch_elem(NftBatch *b, const NftLayout *l, const NftElem *e, bool add) {
        uint8_t key[32], data[8];
        uint32_t key_len, data_len;
        uint16_t family = e->kind == NFT_ELEM_PORTFWD ? NFPROTO_INET : NFPROTO_BRIDGE;
        int r;

        r = elem_key(e, key, &key_len, data, &data_len);
        if (r < 0)
                return r;
        if (add && (!e->tag[0] || strlen(e->tag) > NFT_TAG_MAX))
                return -EINVAL;

        struct nftnl_set *s = nftnl_set_alloc();
        struct nftnl_set_elem *el = nftnl_set_elem_alloc();
        struct nftnl_udata_buf *u = add ? comment_udata(e->tag) : NULL;
        if (!s || !el || (add && !u)) {
                nftnl_set_free(s);
                nftnl_set_elem_free(el);
                if (u)
                        nftnl_udata_buf_free(u);
                return -ENOMEM;
        }
        nftnl_set_set_str(s, NFTNL_SET_TABLE, l->table);
        nftnl_set_set_str(s, NFTNL_SET_NAME, nft_elem_kind_to_string(e->kind));
        nftnl_set_set_u32(s, NFTNL_SET_FAMILY, family);
        nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, key, key_len);
        if (add && data_len)
                nftnl_set_elem_set(el, NFTNL_SET_ELEM_DATA, data, data_len);
        if (u)
                nftnl_set_elem_set(el, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(u),
                                   nftnl_udata_buf_len(u));
        nftnl_set_elem_add(s, el);

        char what[96];
        if (e->kind == NFT_ELEM_PORTFWD)
                snprintf(what, sizeof(what), "forward %u/%s", e->host_port,
                         e->proto == IPPROTO_TCP ? "tcp" : "udp");
        else
                snprintf(what, sizeof(what), "%s element for %s", nft_elem_kind_to_string(e->kind),
                         e->ifname);
        struct nlmsghdr *nlh =
                batch_msg(b, add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM, family,
                          add ? NLM_F_CREATE | NLM_F_EXCL : 0, "%s %s", add ? "add" : "delete", what);
        if (nlh)
                nftnl_set_elems_nlmsg_build_payload(nlh, s);
        nftnl_set_free(s); /* frees the element too */
        if (u)
                nftnl_udata_buf_free(u);
        return nlh ? batch_done(b) : -ENOMEM;
}

static void batch_end(NftBatch *b) {
        if (b->ended)
                return;
        nftnl_batch_end(nftnl_batch_buffer(b->batch), b->nft->seq++);
        nftnl_batch_update(b->batch);
        b->ended = true;
}

int nft_batch_peek(NftBatch *b, const void **ret_buf, size_t *ret_len) {
        batch_end(b);
        int n = nftnl_batch_iovec_len(b->batch);
        struct iovec *iov = calloc((size_t) n, sizeof(struct iovec));
        size_t total = 0;
        if (!iov)
                return -ENOMEM;
        nftnl_batch_iovec(b->batch, iov, (uint32_t) n);
        for (int i = 0; i < n; i++)
                total += iov[i].iov_len;
        free(b->flat);
        b->flat = malloc(total ? total : 1);
        if (!b->flat) {
                free(iov);
                return -ENOMEM;
        }
        total = 0;
        for (int i = 0; i < n; i++) {
                memcpy((uint8_t *) b->flat + total, iov[i].iov_base, iov[i].iov_len);
                total += iov[i].iov_len;
        }
        free(iov);
        *ret_buf = b->flat;
        *ret_len = total;
        return 0;
}

int nft_batch_commit(Nft *nft, NftBatch *b) {
        int first_error = 0;
        size_t replies = 0;

        nft->error[0] = '\0';
        if (b->n_ops == 0)
                return 0;
        batch_end(b);

        int n_iov = nftnl_batch_iovec_len(b->batch);
        struct iovec *iov = calloc((size_t) n_iov, sizeof(struct iovec));
        if (!iov)
                return -ENOMEM;
        nftnl_batch_iovec(b->batch, iov, (uint32_t) n_iov);
        size_t total = 0;
        for (int i = 0; i < n_iov; i++)
                total += iov[i].iov_len;
        /* A big batch must fit the socket's send buffer in one sendmsg, or the kernel sees half of it. */
        int sndbuf = (int) total + 4096;
        int fd = mnl_socket_get_fd(nft->nl);
        if (total > 200000 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        /* Every operation gets an ACK back; room for all of them (an ACK takes ~1 KiB of socket buffer), or
         * ENOBUFS loses replies and with them the outcome. */
        int rcvbuf = (int) (b->n_ops * 1024 > 262144 ? b->n_ops * 1024 : 262144);
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        struct sockaddr_nl dst = { .nl_family = AF_NETLINK };
        struct msghdr msg = {
                .msg_name = &dst, .msg_namelen = sizeof(dst), .msg_iov = iov, .msg_iovlen = (size_t) n_iov
        };
        ssize_t sent = sendmsg(fd, &msg, 0);
        free(iov);
        if (sent < 0)
                return nft_fail(nft, negative_errno(), "sending the nftables batch failed: %m");

        static uint8_t buf[65536];
        while (replies < b->n_ops) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int k = poll(&p, 1, 5000);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        break; /* the kernel sent all it will send */
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return nft_fail(nft, negative_errno(), "reading nftables replies failed: %m");
                }
                int len = (int) n;
                for (const struct nlmsghdr *m = (const struct nlmsghdr *) buf; mnl_nlmsg_ok(m, len);
                     m = mnl_nlmsg_next(m, &len)) {
                        if (m->nlmsg_type != NLMSG_ERROR || m->nlmsg_seq < b->first_seq ||
                            m->nlmsg_seq >= b->first_seq + b->n_ops)
                                continue;
                        replies++;
                        char extack[NL_EXTACK_MAX];
                        int e = nl_error_parse(m, extack);
                        if (e == 0 || first_error)
                                continue;
                        first_error = e;
                        nft_fail(nft, e, "%s: %s%s%s", b->ops[m->nlmsg_seq - b->first_seq], strerror(-e),
                                 extack[0] ? ": " : "", extack);
                }
        }
        if (first_error)
                return first_error;
        if (replies < b->n_ops)
                return nft_fail(nft, -ETIMEDOUT, "the kernel answered %zu of %zu nftables operations",
                                replies, b->n_ops);
        return 0;
}

/* --- dumps ---------------------------------------------------------------------------------------- */

typedef int (*DumpCb)(const struct nlmsghdr *nlh, void *data);

static int dump(Nft *nft, struct nlmsghdr *nlh, DumpCb cb, void *data) {
        static uint8_t buf[65536];
        uint32_t seq = nlh->nlmsg_seq;

        if (mnl_socket_sendto(nft->nl, nlh, nlh->nlmsg_len) < 0)
                return negative_errno();
        for (;;) {
                ssize_t n = mnl_socket_recvfrom(nft->nl, buf, sizeof(buf));
                if (n < 0)
                        return errno == ENOBUFS ? -EAGAIN : negative_errno();
                int r = mnl_cb_run(buf, (size_t) n, seq, nft->portid, cb, data);
                if (r < 0)
                        return errno == EINTR ? -EAGAIN : negative_errno();
                if (r == MNL_CB_STOP)
                        return 0;
        }
}

static int gen_cb(const struct nlmsghdr *nlh, void *data) {
        struct nftnl_gen *g = nftnl_gen_alloc();
        if (!g)
                return MNL_CB_ERROR;
        if (nftnl_gen_nlmsg_parse(nlh, g) == 0)
                *(uint32_t *) data = nftnl_gen_get_u32(g, NFTNL_GEN_ID);
        nftnl_gen_free(g);
        return MNL_CB_OK;
}

int nft_generation(Nft *nft, uint32_t *ret) {
        char buf[256];
        struct nlmsghdr *nlh =
                nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, NFPROTO_UNSPEC, NLM_F_ACK, ++nft->seq);
        return dump(nft, nlh, gen_cb, ret);
}

typedef struct TableTag {
        char *out;
        bool found;
} TableTag;

static int comment_cb(const struct nftnl_udata *attr, void *data) {
        char *out = data;
        if (nftnl_udata_type(attr) == 0 && nftnl_udata_len(attr) > 0) {
                const char *v = nftnl_udata_get(attr);
                size_t n = strnlen(v, nftnl_udata_len(attr));
                if (n > NFT_TAG_MAX)
                        n = NFT_TAG_MAX;
                memcpy(out, v, n);
                out[n] = '\0';
        }
        return 0;
}

static void parse_comment(const void *ud, uint32_t len, char *out) {
        out[0] = '\0';
        if (ud && len > 0)
                (void) nftnl_udata_parse(ud, len, comment_cb, out);
}

static int table_cb(const struct nlmsghdr *nlh, void *data) {
        TableTag *t = data;
        struct nftnl_table *tb = nftnl_table_alloc();
        uint32_t len = 0;
        if (!tb)
                return MNL_CB_ERROR;
        if (nftnl_table_nlmsg_parse(nlh, tb) == 0) {
                const void *ud = nftnl_table_get_data(tb, NFTNL_TABLE_USERDATA, &len);
                parse_comment(ud, len, t->out);
                t->found = true;
        }
        nftnl_table_free(tb);
        return MNL_CB_OK;
}

int nft_table_tag(Nft *nft, const NftLayout *l, char ret_tag[NFT_TAG_MAX + 1]) {
        char buf[512];
        struct nftnl_table *t = nftnl_table_alloc();
        TableTag tt = { .out = ret_tag };
        int r;

        if (!t)
                return -ENOMEM;
        struct nlmsghdr *nlh =
                nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, ++nft->seq);
        nftnl_table_set_str(t, NFTNL_TABLE_NAME, l->table);
        nftnl_table_nlmsg_build_payload(nlh, t);
        nftnl_table_free(t);
        ret_tag[0] = '\0';
        r = dump(nft, nlh, table_cb, &tt);
        if (r < 0)
                return r;
        return tt.found ? 0 : -ENOENT;
}

typedef struct ElemList {
        NftElemKind kind;
        NftElem *elems;
        size_t n, allocated;
        int error;
} ElemList;

static int elem_cb(struct nftnl_set_elem *el, void *data) {
        ElemList *list = data;
        uint32_t klen = 0, dlen = 0, ulen = 0;
        const uint8_t *key = nftnl_set_elem_get(el, NFTNL_SET_ELEM_KEY, &klen);
        const uint8_t *dat = nftnl_set_elem_get(el, NFTNL_SET_ELEM_DATA, &dlen);
        const void *ud = nftnl_set_elem_get(el, NFTNL_SET_ELEM_USERDATA, &ulen);
        NftElem e = { .kind = list->kind };

        if (list->kind == NFT_ELEM_PORTFWD && key && klen == 8 && dat && dlen == 8) {
                uint16_t hp, gp;
                uint32_t ip;
                e.proto = key[0];
                memcpy(&hp, key + 4, 2);
                memcpy(&ip, dat, 4);
                memcpy(&gp, dat + 4, 2);
                e.host_port = ntohs(hp);
                e.guest_ip = ntohl(ip);
                e.guest_port = ntohs(gp);
        } else if (list->kind != NFT_ELEM_PORTFWD && key && klen >= IFNAMSIZ_PADDED) {
                memcpy(e.ifname, key, 15);
                if (list->kind == NFT_ELEM_VM_ADDR && klen == 28) {
                        uint32_t ip;
                        memcpy(e.mac, key + 16, 6);
                        memcpy(&ip, key + 24, 4);
                        e.guest_ip = ntohl(ip);
                }
        } else
                return 0; /* not of the shape we make: not ours to describe */
        parse_comment(ud, ulen, e.tag);

        if (list->n == list->allocated) {
                size_t a = list->allocated ? list->allocated * 2 : 64;
                NftElem *p = realloc(list->elems, a * sizeof(NftElem));
                if (!p)
                        return -ENOMEM;
                list->elems = p;
                list->allocated = a;
        }
        list->elems[list->n++] = e;
        return 0;
}

static int elems_cb(const struct nlmsghdr *nlh, void *data) {
        ElemList *list = data;
        struct nftnl_set *s = nftnl_set_alloc();

        if (!s)
                return MNL_CB_ERROR;
        if (nftnl_set_elems_nlmsg_parse(nlh, s) >= 0 && nftnl_set_elem_foreach(s, elem_cb, list) < 0)
                list->error = -ENOMEM;
        nftnl_set_free(s);
        return list->error ? MNL_CB_ERROR : MNL_CB_OK;
}

int nft_dump_elems(Nft *nft, const NftLayout *l, NftElem **ret, size_t *ret_n) {
        for (unsigned attempt = 0; attempt < 10; attempt++) {
                ElemList list = {};
                uint32_t gen_before, gen_after;
                int r;

                r = nft_generation(nft, &gen_before);
                if (r < 0)
                        return r;
                for (NftElemKind k = 0; k < _NFT_ELEM_KIND_MAX && r >= 0; k++) {
                        char buf[512];
                        uint16_t family = k == NFT_ELEM_PORTFWD ? NFPROTO_INET : NFPROTO_BRIDGE;
                        struct nftnl_set *s = nftnl_set_alloc();
                        if (!s) {
                                r = -ENOMEM;
                                break;
                        }
                        struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, family,
                                                                     NLM_F_DUMP | NLM_F_ACK, ++nft->seq);
                        nftnl_set_set_str(s, NFTNL_SET_TABLE, l->table);
                        nftnl_set_set_str(s, NFTNL_SET_NAME, nft_elem_kind_to_string(k));
                        nftnl_set_elems_nlmsg_build_payload(nlh, s);
                        nftnl_set_free(s);
                        list.kind = k;
                        r = dump(nft, nlh, elems_cb, &list);
                }
                if (r >= 0)
                        r = nft_generation(nft, &gen_after);
                if (r == -EAGAIN || (r >= 0 && gen_after != gen_before)) {
                        free(list.elems);
                        continue; /* the ruleset changed under the dump: take it again */
                }
                if (r < 0) {
                        free(list.elems);
                        return r;
                }
                *ret = list.elems;
                *ret_n = list.n;
                return 0;
        }
        return -EAGAIN;
}

typedef struct RuleList {
        int family;
        NftRuleInfo *rules;
        size_t n, allocated;
} RuleList;

static int rules_cb(const struct nlmsghdr *nlh, void *data) {
        RuleList *list = data;
        struct nftnl_rule *r = nftnl_rule_alloc();
        uint32_t ulen = 0;

        if (!r)
                return MNL_CB_ERROR;
        if (nftnl_rule_nlmsg_parse(nlh, r) < 0) {
                nftnl_rule_free(r);
                return MNL_CB_OK;
        }
        if (list->n == list->allocated) {
                size_t a = list->allocated ? list->allocated * 2 : 16;
                NftRuleInfo *p = realloc(list->rules, a * sizeof(NftRuleInfo));
                if (!p) {
                        nftnl_rule_free(r);
                        return MNL_CB_ERROR;
                }
                list->rules = p;
                list->allocated = a;
        }
        NftRuleInfo *info = &list->rules[list->n++];
        *info = (NftRuleInfo){ .family = list->family, .handle = nftnl_rule_get_u64(r, NFTNL_RULE_HANDLE) };
        snprintf(info->chain, sizeof(info->chain), "%s", nftnl_rule_get_str(r, NFTNL_RULE_CHAIN) ?: "");
        const void *ud = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &ulen); /* sets ulen: call it first */
        parse_comment(ud, ulen, info->tag);
        nftnl_rule_free(r);
        return MNL_CB_OK;
}

int nft_dump_rules(Nft *nft, const NftLayout *l, NftRuleInfo **ret, size_t *ret_n) {
        static const uint16_t families[] = { NFPROTO_INET, NFPROTO_BRIDGE };

        for (unsigned attempt = 0; attempt < 10; attempt++) {
                RuleList list = {};
                uint32_t gen_before, gen_after;
                int r = nft_generation(nft, &gen_before);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(families) && r >= 0; i++) {
                        char buf[512];
                        struct nftnl_rule *q = nftnl_rule_alloc();
                        if (!q) {
                                r = -ENOMEM;
                                break;
                        }
                        struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, families[i],
                                                                     NLM_F_DUMP, ++nft->seq);
                        nftnl_rule_set_str(q, NFTNL_RULE_TABLE, l->table);
                        nftnl_rule_nlmsg_build_payload(nlh, q);
                        nftnl_rule_free(q);
                        list.family = families[i];
                        r = dump(nft, nlh, rules_cb, &list);
                        if (r == -ENOENT)
                                r = 0;
                }
                if (r >= 0)
                        r = nft_generation(nft, &gen_after);
                if (r == -EAGAIN || (r >= 0 && gen_after != gen_before)) {
                        free(list.rules);
                        continue;
                }
                if (r < 0) {
                        free(list.rules);
                        return r;
                }
                *ret = list.rules;
                *ret_n = list.n;
                return 0;
        }
        return -EAGAIN;
}

typedef struct ChainList {
        NftBaseChain *chains;
        size_t n;
} ChainList;

static int chains_cb(const struct nlmsghdr *nlh, void *data) {
        ChainList *list = data;
        struct nftnl_chain *c = nftnl_chain_alloc();
        if (!c)
                return MNL_CB_ERROR;
        if (nftnl_chain_nlmsg_parse(nlh, c) < 0) {
                nftnl_chain_free(c);
                return MNL_CB_ERROR;
        }
        if (!nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM)) {
                nftnl_chain_free(c); /* a regular chain: no hook, no policy */
                return MNL_CB_OK;
        }
        NftBaseChain *n = realloc(list->chains, (list->n + 1) * sizeof(NftBaseChain));
        if (!n) {
                nftnl_chain_free(c);
                return MNL_CB_ERROR;
        }
        list->chains = n;
        NftBaseChain *x = &list->chains[list->n++];
        *x = (NftBaseChain){
                .family = (int) nftnl_chain_get_u32(c, NFTNL_CHAIN_FAMILY),
                .hook = nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM),
                .priority = nftnl_chain_is_set(c, NFTNL_CHAIN_PRIO) ? nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO) : 0,
                .policy = nftnl_chain_is_set(c, NFTNL_CHAIN_POLICY) ? nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY)
                                                                     : NF_ACCEPT,
        };
        snprintf(x->table, sizeof(x->table), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE));
        snprintf(x->chain, sizeof(x->chain), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_NAME));
        nftnl_chain_free(c);
        return MNL_CB_OK;
}

int nft_dump_base_chains(Nft *nft, NftBaseChain **ret, size_t *ret_n) {
        for (unsigned attempt = 0; attempt < 10; attempt++) {
                ChainList list = {};
                uint32_t gen_before, gen_after;
                char buf[512];
                int r = nft_generation(nft, &gen_before);
                if (r < 0)
                        return r;
                struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NLM_F_DUMP,
                                                             ++nft->seq);
                r = dump(nft, nlh, chains_cb, &list);
                if (r == -ENOENT)
                        r = 0;
                if (r >= 0)
                        r = nft_generation(nft, &gen_after);
                if (r == -EAGAIN || (r >= 0 && gen_after != gen_before)) {
                        free(list.chains);
                        continue;
                }
                if (r < 0) {
                        free(list.chains);
                        return r;
                }
                *ret = list.chains;
                *ret_n = list.n;
                return 0;
        }
        return -EAGAIN;
}
