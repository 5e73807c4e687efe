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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "backends/nl/nft.h"
#include "backends/nl/nlops.h"
#include "util/nlerr.h"
#include "util/string-table.h"

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
        const NlOps *ops;
        uint32_t portid;
        uint32_t seq;
        char error[512];
        uint8_t buf[65536] __attribute__((aligned(8))); /* replies */
};

/* What one operation of a batch leaves in the kernel when the batch is committed, to tell afterwards
 * whether it was, when the kernel's answers were lost. */
typedef struct BatchCheck {
        bool add;
        bool is_table;
        bool adopt; /* tables: owned by us with these flags */
        uint32_t flags;
        uint16_t family; /* tables */
        NftElem elem; /* elements (with the tag they are added with) */
        char tag[NFT_TAG_MAX + 1]; /* tables: the comment they are created with */
} BatchCheck;

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
        char table[64]; /* the tables the checks look at */
        BatchCheck *checks;
        size_t n_checks;
};

static const char *const elem_kind_table[_NFT_ELEM_KIND_MAX] = {
        [NFT_ELEM_PORTFWD] = "portfwd4",
        [NFT_ELEM_VM_PORT] = "vm_ports",
        [NFT_ELEM_VM_ADDR] = "vm_addrs",
};

DEFINE_STRING_TABLE_TO(nft_elem_kind, NftElemKind, elem_kind_table, _NFT_ELEM_KIND_MAX)

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
        nft->ops = &nlops_default;
        *ret = nft;
        return 0;
}

void nft_set_ops(Nft *nft, const NlOps *ops) {
        nft->ops = ops ?: &nlops_default;
}

uint32_t nft_portid(const Nft *nft) {
        return nft->portid;
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
        free(b->checks);
        nftnl_batch_free(b->batch);
        free(b);
        return NULL;
}

size_t nft_batch_n_ops(const NftBatch *b) {
        return b->n_ops;
}

const char *nft_batch_op(const NftBatch *b, size_t i) {
        return i < b->n_ops ? b->ops[i] : NULL;
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

static int table_get(Nft *nft, uint16_t family, const char *name, NftTableInfo *ret);
static bool elem_same_key(const NftElem *a, const NftElem *b);

static int batch_check(NftBatch *b, const char *table, const BatchCheck *c) {
        BatchCheck *n = realloc(b->checks, (b->n_checks + 1) * sizeof(BatchCheck));
        if (!n)
                return -ENOMEM;
        b->checks = n;
        b->checks[b->n_checks++] = *c;
        snprintf(b->table, sizeof(b->table), "%s", table);
        return 0;
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
        if (l->table_flags)
                nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, l->table_flags);
        nftnl_table_nlmsg_build_payload(nlh, t);
        nftnl_table_free(t);
        nftnl_udata_buf_free(u);
        r = batch_done(b);
        if (r < 0)
                return r;
        BatchCheck c = { .add = true, .is_table = true, .family = family };
        snprintf(c.tag, sizeof(c.tag), "%s", tag);
        return batch_check(b, l->table, &c);
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
                BatchCheck c = { .add = false, .is_table = true, .family = families[i] };
                if (batch_check(b, l->table, &c) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* The adoption messages: NEWTABLE (an update of the table that is there; the kernel makes a new one if
 * there is none, with or without NLM_F_CREATE: see nft_adopt_tables()) with the flags. */
static int batch_adopt_tables(NftBatch *b, const NftLayout *l) {
        static const uint16_t families[] = { NFPROTO_INET, NFPROTO_BRIDGE };
        for (size_t i = 0; i < ELEMENTSOF(families); i++) {
                struct nftnl_table *t = nftnl_table_alloc();
                struct nlmsghdr *nlh = batch_msg(b, NFT_MSG_NEWTABLE, families[i], 0, "adopt table %s %s",
                                                 i == 0 ? "inet" : "bridge", l->table);
                if (!t || !nlh) {
                        nftnl_table_free(t);
                        return -ENOMEM;
                }
                nftnl_table_set_str(t, NFTNL_TABLE_NAME, l->table);
                nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, l->table_flags);
                nftnl_table_nlmsg_build_payload(nlh, t);
                nftnl_table_free(t);
                if (batch_done(b) < 0)
                        return -ENOMEM;
                BatchCheck c = { .add = true,
                                 .is_table = true,
                                 .adopt = true,
                                 .flags = l->table_flags,
                                 .family = families[i] };
                if (batch_check(b, l->table, &c) < 0)
                        return -ENOMEM;
        }
        return 0;
}

int nft_adopt_tables(Nft *nft, const NftLayout *l) {
        static const uint16_t families[] = { NFPROTO_INET, NFPROTO_BRIDGE };
        NftTableInfo info[2];
        bool ours = true;
        int r;

        if (!(l->table_flags & NFT_TABLE_F_OWNER))
                return -EINVAL;
        for (size_t i = 0; i < 2; i++) {
                r = table_get(nft, families[i], l->table, &info[i]);
                if (r < 0)
                        return nft_fail(nft, r, "table %s %s: %s", i ? "bridge" : "inet", l->table,
                                        strerror(-r));
                ours = ours && (info[i].flags & NFT_TABLE_F_OWNER) && info[i].owner == nft->portid;
        }
        if (ours)
                return 0;

        _cleanup_(nft_batch_freep) NftBatch *b = nft_batch_new(nft);
        if (!b)
                return -ENOMEM;
        r = batch_adopt_tables(b, l);
        if (r < 0)
                return r;
        r = nft_batch_commit(nft, b);
        if (r < 0)
                return r;

        /* Both must be the tables read above, with their comments: one deleted between the look and the
         * batch came back bare (ours now, so ours to take away). */
        for (size_t i = 0; i < 2; i++) {
                NftTableInfo now;
                r = table_get(nft, families[i], l->table, &now);
                if (r < 0 && r != -ENOENT)
                        return r;
                if (r >= 0 && strcmp(now.tag, info[i].tag) == 0)
                        continue;
                if (r >= 0 && !now.tag[0]) {
                        _cleanup_(nft_batch_freep) NftBatch *d = nft_batch_new(nft);
                        struct nftnl_table *t = nftnl_table_alloc();
                        struct nlmsghdr *nlh =
                                d ? batch_msg(d, NFT_MSG_DELTABLE, families[i], 0, "delete bare table %s %s",
                                              i ? "bridge" : "inet", l->table)
                                  : NULL;
                        if (t && nlh) {
                                nftnl_table_set_str(t, NFTNL_TABLE_NAME, l->table);
                                nftnl_table_nlmsg_build_payload(nlh, t);
                                if (batch_done(d) >= 0)
                                        (void) nft_batch_commit(nft, d);
                        }
                        nftnl_table_free(t);
                }
                return nft_fail(nft, -ENOENT, "table %s %s vanished while it was being adopted",
                                i ? "bridge" : "inet", l->table);
        }
        return 0;
}

int nft_probe_table_flags(Nft *nft, uint32_t flags) {
        _cleanup_(nft_batch_freep) NftBatch *b = nft_batch_new(nft);
        char name[64], none[80];
        int r;

        if (!b)
                return -ENOMEM;
        snprintf(name, sizeof(name), "chvm-probe-%08x", nft->portid);
        snprintf(none, sizeof(none), "%s-none", name);
        /* A throwaway table with the flags, then the deletion of one that does not exist: the batch always
         * aborts, at its first message if the flags are unknown (EOPNOTSUPP; EINVAL before 5.12). */
        for (unsigned i = 0; i < 2; i++) {
                struct nftnl_table *t = nftnl_table_alloc();
                struct nlmsghdr *nlh =
                        batch_msg(b, i == 0 ? NFT_MSG_NEWTABLE : NFT_MSG_DELTABLE, NFPROTO_INET,
                                  i == 0 ? NLM_F_CREATE | NLM_F_EXCL : 0, "%s table inet %s",
                                  i == 0 ? "probe" : "delete", i == 0 ? name : none);
                if (!t || !nlh) {
                        nftnl_table_free(t);
                        return -ENOMEM;
                }
                nftnl_table_set_str(t, NFTNL_TABLE_NAME, i == 0 ? name : none);
                if (i == 0)
                        nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, flags);
                nftnl_table_nlmsg_build_payload(nlh, t);
                nftnl_table_free(t);
                if (batch_done(b) < 0)
                        return -ENOMEM;
        }
        r = nft_batch_commit(nft, b);
        if (r == -ENOENT && strncmp(nft->error, "delete table", 12) == 0)
                return 0; /* the flags passed; the batch failed where it was meant to */
        if ((r == -EOPNOTSUPP || r == -EINVAL) && strncmp(nft->error, "probe table", 11) == 0)
                return -EOPNOTSUPP;
        return r < 0 ? r : -EIO;
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
        if (!nlh)
                return -ENOMEM;
        r = batch_done(b);
        if (r < 0)
                return r;
        BatchCheck c = { .add = add, .elem = *e };
        if (!add)
                c.elem.tag[0] = '\0';
        return batch_check(b, l->table, &c);
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

/* Sends the batch once and reads the answers. *ret_lost: some answers never came (the kernel dropped them
 * for want of socket buffer, or they are missing), and no error came either: whether the kernel
 * committed the batch is unknown. */
static int commit_once(Nft *nft, NftBatch *b, bool *ret_lost) {
        int first_error = 0, fd = mnl_socket_get_fd(nft->nl), r;
        size_t replies = 0;

        *ret_lost = false;
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
        if (total > 200000 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        /* Every operation gets an ACK back; room for all of them (an ACK takes ~1 KiB of socket buffer), or
         * ENOBUFS loses replies and with them the outcome. */
        int rcvbuf = (int) (b->n_ops * 1024 > 262144 ? b->n_ops * 1024 : 262144);
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0)
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        r = nlops_sendiov(nft->ops, fd, iov, (size_t) n_iov);
        free(iov);
        if (r < 0)
                return nft_fail(nft, r, "sending the nftables batch (%s, ...) failed: %s", b->ops[0],
                                strerror(-r));

        /* The kernel answers every operation (NLM_F_ACK), errors and all, once it has gone through the whole
         * batch. An error it cannot pin on one operation (out of memory while collecting the answers, or a
         * failure while committing) comes as the answer to BATCH_BEGIN: then nothing of the batch applies,
         * whatever the operations' own answers said. */
        while (replies < b->n_ops) {
                ssize_t n = nlops_recv(nft->ops, fd, nft->buf, sizeof(nft->buf), NL_REPLY_TIMEOUT_MS);
                if (n == -ENOBUFS || n == -ETIMEDOUT) {
                        if (first_error) { /* an error means the kernel aborted the batch */
                                nlops_drain(nft->ops, fd, nft->buf, sizeof(nft->buf));
                                return first_error;
                        }
                        *ret_lost = true;
                        return nft_fail(nft, (int) n,
                                        "the kernel's answers to the nftables batch (%s, ...) were lost",
                                        b->ops[0]);
                }
                if (n < 0)
                        return nft_fail(nft, (int) n, "reading nftables replies failed: %s",
                                        strerror((int) -n));
                int len = (int) n;
                for (const struct nlmsghdr *m = (const struct nlmsghdr *) nft->buf; mnl_nlmsg_ok(m, len);
                     m = mnl_nlmsg_next(m, &len)) {
                        if (m->nlmsg_type != NLMSG_ERROR || m->nlmsg_pid != nft->portid)
                                continue;
                        char extack[NL_EXTACK_MAX];
                        int e = nl_error_parse(m, extack);
                        if (m->nlmsg_seq == b->first_seq - 1 && e < 0) {
                                nft_fail(nft, e, "nftables batch (%s, ... %zu operations): %s%s%s",
                                         b->ops[0], b->n_ops, strerror(-e), extack[0] ? ": " : "", extack);
                                nlops_drain(nft->ops, fd, nft->buf, sizeof(nft->buf));
                                return e;
                        }
                        if (m->nlmsg_seq < b->first_seq || m->nlmsg_seq >= b->first_seq + b->n_ops)
                                continue;
                        replies++;
                        if (e == 0 || first_error)
                                continue;
                        first_error = e;
                        nft_fail(nft, e, "%s: %s%s%s", b->ops[m->nlmsg_seq - b->first_seq], strerror(-e),
                                 extack[0] ? ": " : "", extack);
                }
        }
        if (first_error)
                nlops_drain(nft->ops, fd, nft->buf, sizeof(nft->buf));
        return first_error;
}

/* After the kernel's answers to a batch were lost: 1 if the kernel committed it, 0 if not. A batch is
 * atomic, so had it been committed, every object of it would now be as it wanted: its tables and added
 * elements there with its tags, its deleted ones gone. Anything else means it was not (or someone changed
 * its objects since, which sending it again brings to light: its exclusive adds and its deletions then
 * fail). An exclusive add of objects that were there already, with the same tags, counts as committed:
 * what the caller wanted is what the kernel has. */
static int batch_outcome(Nft *nft, NftBatch *b) {
        _cleanup_free_ NftElem *elems = NULL;
        size_t n_elems = 0;
        bool dumped = false;
        int r;

        for (size_t i = 0; i < b->n_checks; i++) {
                const BatchCheck *c = &b->checks[i];
                bool present, tagged;
                if (c->is_table) {
                        NftTableInfo t;
                        r = table_get(nft, c->family, b->table, &t);
                        if (r < 0 && r != -ENOENT)
                                return r;
                        present = r >= 0;
                        tagged = present &&
                                 (c->adopt ? (t.flags & c->flags) == c->flags && t.owner == nft->portid
                                           : strcmp(t.tag, c->tag) == 0);
                } else {
                        if (!dumped) {
                                NftLayout l = { .table = b->table };
                                r = nft_dump_elems(nft, &l, &elems, &n_elems);
                                if (r < 0 && r != -ENOENT)
                                        return r;
                                dumped = true;
                        }
                        const NftElem *found = NULL;
                        for (size_t j = 0; j < n_elems && !found; j++)
                                if (elem_same_key(&elems[j], &c->elem))
                                        found = &elems[j];
                        present = found;
                        tagged = found && strcmp(found->tag, c->elem.tag) == 0;
                }
                if (c->add ? !tagged : present)
                        return 0;
        }
        return b->n_checks > 0;
}

int nft_batch_commit(Nft *nft, NftBatch *b) {
        int r = 0;

        nft->error[0] = '\0';
        if (b->n_ops == 0)
                return 0;
        batch_end(b);

        /* When the answers are lost, the tags in the kernel say whether the batch was committed; if it was
         * not, it is sent again (it is atomic: nothing of it happened). */
        for (unsigned attempt = 0; attempt < 3; attempt++) {
                bool lost;
                r = commit_once(nft, b, &lost);
                if (!lost)
                        return r;
                nlops_drain(nft->ops, mnl_socket_get_fd(nft->nl), nft->buf, sizeof(nft->buf));
                int k = batch_outcome(nft, b);
                if (k == 1) {
                        nft->error[0] = '\0';
                        return 0;
                }
                if (k < 0)
                        return nft_fail(
                                nft, k,
                                "the kernel's answers to the nftables batch (%s, ...) were lost, and "
                                "reading back its objects failed: %s",
                                b->ops[0], strerror(-k));
        }
        return r;
}

/* --- dumps ---------------------------------------------------------------------------------------- */

typedef int (*DumpCb)(const struct nlmsghdr *nlh, void *data);

/* One request with its replies (a dump, or a get with NLM_F_ACK): data messages go to cb. Replies to
 * earlier requests are skipped. -EAGAIN when the caller should ask again with fresh results: the dump was
 * interrupted by a change (NLM_F_DUMP_INTR), or replies were lost (ENOBUFS, or none came). */
static int dump(Nft *nft, struct nlmsghdr *nlh, DumpCb cb, void *data) {
        int fd = mnl_socket_get_fd(nft->nl), r;
        uint32_t seq = nlh->nlmsg_seq;
        bool intr = false;

        r = nlops_send(nft->ops, fd, nlh, nlh->nlmsg_len);
        if (r < 0)
                return r;
        for (;;) {
                ssize_t n = nlops_recv(nft->ops, fd, nft->buf, sizeof(nft->buf), NL_REPLY_TIMEOUT_MS);
                if (n == -ENOBUFS || n == -ETIMEDOUT) {
                        nlops_drain(nft->ops, fd, nft->buf, sizeof(nft->buf));
                        return -EAGAIN;
                }
                if (n < 0)
                        return (int) n;
                int len = (int) n;
                for (const struct nlmsghdr *m = (const struct nlmsghdr *) nft->buf; mnl_nlmsg_ok(m, len);
                     m = mnl_nlmsg_next(m, &len)) {
                        if (m->nlmsg_seq != seq || m->nlmsg_pid != nft->portid)
                                continue;
                        if (m->nlmsg_flags & NLM_F_DUMP_INTR)
                                intr = true;
                        if (m->nlmsg_type == NLMSG_ERROR) {
                                char extack[NL_EXTACK_MAX];
                                int e = nl_error_parse(m, extack);
                                return e < 0 ? e : intr ? -EAGAIN : 0;
                        }
                        if (m->nlmsg_type == NLMSG_DONE)
                                return intr ? -EAGAIN : 0;
                        if (m->nlmsg_type == NLMSG_NOOP)
                                continue;
                        r = cb(m, data);
                        if (r == MNL_CB_ERROR)
                                return -ENOMEM;
                        if (r == MNL_CB_STOP)
                                return 0;
                }
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

/* The comment in user data as nft writes it: TLVs of a type byte, a length byte and the value; type 0
 * (NFTNL_UDATA_SET_ELEM_COMMENT, also the rule's and table's) holds the comment, NUL-terminated or not. */
static void parse_comment(const void *ud, uint32_t len, char *out) {
        const uint8_t *p = ud;
        out[0] = '\0';
        for (uint32_t off = 0; p && off + 2 <= len;) {
                uint8_t type = p[off], n = p[off + 1];
                if (off + 2 + n > len)
                        return;
                if (type == 0 && n > 0) {
                        size_t k = strnlen((const char *) p + off + 2, n);
                        if (k > NFT_TAG_MAX)
                                k = NFT_TAG_MAX;
                        memcpy(out, p + off + 2, k);
                        out[k] = '\0';
                        return;
                }
                off += 2 + n;
        }
}

typedef struct TableInfoOut {
        NftTableInfo *out;
        bool found;
} TableInfoOut;

static int table_cb(const struct nlmsghdr *nlh, void *data) {
        TableInfoOut *t = data;
        struct nftnl_table *tb = nftnl_table_alloc();
        uint32_t len = 0;
        if (!tb)
                return MNL_CB_ERROR;
        if (nftnl_table_nlmsg_parse(nlh, tb) == 0) {
                const void *ud = nftnl_table_get_data(tb, NFTNL_TABLE_USERDATA, &len);
                parse_comment(ud, len, t->out->tag);
                t->out->flags = nftnl_table_is_set(tb, NFTNL_TABLE_FLAGS)
                                        ? nftnl_table_get_u32(tb, NFTNL_TABLE_FLAGS)
                                        : 0;
                t->out->owner = nftnl_table_is_set(tb, NFTNL_TABLE_OWNER)
                                        ? nftnl_table_get_u32(tb, NFTNL_TABLE_OWNER)
                                        : 0;
                t->found = true;
        }
        nftnl_table_free(tb);
        return MNL_CB_OK;
}

static int table_get(Nft *nft, uint16_t family, const char *name, NftTableInfo *ret) {
        for (unsigned attempt = 0; attempt < 3; attempt++) {
                char buf[512];
                NftTableInfo info = {};
                TableInfoOut tt = { .out = &info };
                struct nftnl_table *t = nftnl_table_alloc();
                int r;

                if (!t)
                        return -ENOMEM;
                struct nlmsghdr *nlh =
                        nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, family, NLM_F_ACK, ++nft->seq);
                nftnl_table_set_str(t, NFTNL_TABLE_NAME, name);
                nftnl_table_nlmsg_build_payload(nlh, t);
                nftnl_table_free(t);
                r = dump(nft, nlh, table_cb, &tt);
                if (r == -EAGAIN)
                        continue; /* the answer was lost: ask again */
                if (r < 0)
                        return r;
                if (!tt.found)
                        return -ENOENT;
                *ret = info;
                return 0;
        }
        return -EAGAIN;
}

int nft_table_info(Nft *nft, const NftLayout *l, int family, NftTableInfo *ret) {
        return table_get(nft, (uint16_t) family, l->table, ret);
}

int nft_table_tag(Nft *nft, const NftLayout *l, char ret_tag[NFT_TAG_MAX + 1]) {
        NftTableInfo info;
        int r = table_get(nft, NFPROTO_INET, l->table, &info);
        if (r < 0)
                return r;
        memcpy(ret_tag, info.tag, NFT_TAG_MAX + 1);
        return 0;
}

typedef struct ElemList {
        NftElemKind kind;
        NftElem *elems;
        size_t n, allocated;
        int error;
} ElemList;

/* One element as the kernel describes it: key, data and user data (with the comment) are raw. */
static int elem_add(ElemList *list, const uint8_t *key, uint32_t klen, const uint8_t *dat, uint32_t dlen,
                    const void *ud, uint32_t ulen) {
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

/* NFTA_SET_ELEM_KEY or _DATA: its NFTA_DATA_VALUE (NULL for a verdict or anything else). */
static const uint8_t *data_value(const struct nlattr *nest, uint32_t *ret_len) {
        const struct nlattr *a;
        mnl_attr_for_each_nested(a, nest) {
                if ((mnl_attr_get_type(a) & NLA_TYPE_MASK) == NFTA_DATA_VALUE) {
                        *ret_len = mnl_attr_get_payload_len(a);
                        return mnl_attr_get_payload(a);
                }
        }
        return NULL;
}

/* Set elements are read with libmnl alone: libnftnl 1.2 trusts these messages (strdup() of strings without
 * a NUL, strcmp() of a missing expression name, exit() on an oversized value: "kernel ABI is broken"), all
 * found by fuzz/fuzz-parsers. mnl_attr_for_each*() checks every attribute's bounds. */
static int elems_cb(const struct nlmsghdr *nlh, void *data) {
        ElemList *list = data;
        const struct nlattr *top, *elem, *a;

        if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nfgenmsg)))
                return MNL_CB_OK; /* no element in it */
        mnl_attr_for_each(top, nlh, sizeof(struct nfgenmsg)) {
                if ((mnl_attr_get_type(top) & NLA_TYPE_MASK) != NFTA_SET_ELEM_LIST_ELEMENTS)
                        continue;
                mnl_attr_for_each_nested(elem, top) {
                        const uint8_t *key = NULL, *dat = NULL;
                        const void *ud = NULL;
                        uint32_t klen = 0, dlen = 0, ulen = 0;
                        mnl_attr_for_each_nested(a, elem) {
                                switch (mnl_attr_get_type(a) & NLA_TYPE_MASK) {
                                case NFTA_SET_ELEM_KEY:
                                        key = data_value(a, &klen);
                                        break;
                                case NFTA_SET_ELEM_DATA:
                                        dat = data_value(a, &dlen);
                                        break;
                                case NFTA_SET_ELEM_USERDATA:
                                        ud = mnl_attr_get_payload(a);
                                        ulen = mnl_attr_get_payload_len(a);
                                        break;
                                }
                        }
                        if (elem_add(list, key, klen, dat, dlen, ud, ulen) < 0) {
                                list->error = -ENOMEM;
                                return MNL_CB_ERROR;
                        }
                }
        }
        return MNL_CB_OK;
}

int nft_elems_message_parse(const struct nlmsghdr *nlh, NftElemKind kind, NftElem **ret, size_t *ret_n) {
        ElemList list = { .kind = kind };
        if (elems_cb(nlh, &list) != MNL_CB_OK) {
                free(list.elems);
                return list.error ? list.error : -ENOMEM;
        }
        *ret = list.elems;
        *ret_n = list.n;
        return 0;
}

/* A dump that shows one state of the ruleset: the generation id is read before and after it and must not
 * have moved; when it did, or replies were lost (-EAGAIN), what was taken is dropped and the dump is taken
 * again, up to 10 times. take() appends to ctx; drop() frees what it appended and empties ctx. */
static int dump_consistent(Nft *nft, int (*take)(Nft *nft, const void *arg, void *ctx), const void *arg,
                           void *ctx, void (*drop)(void *ctx)) {
        for (unsigned attempt = 0; attempt < 10; attempt++) {
                uint32_t before, after;
                int r = nft_generation(nft, &before);
                if (r == -EAGAIN)
                        continue;
                if (r < 0)
                        return r;
                r = take(nft, arg, ctx);
                if (r >= 0)
                        r = nft_generation(nft, &after);
                if (r == -EAGAIN || (r >= 0 && after != before)) {
                        drop(ctx);
                        continue; /* the ruleset changed under the dump: take it again */
                }
                if (r < 0) {
                        drop(ctx);
                        return r;
                }
                return 0;
        }
        return -EAGAIN;
}

static int take_elems(Nft *nft, const void *arg, void *ctx) {
        const NftLayout *l = arg;
        ElemList *list = ctx;
        int r = 0;
        for (NftElemKind k = 0; k < _NFT_ELEM_KIND_MAX && r >= 0; k++) {
                char buf[512];
                uint16_t family = k == NFT_ELEM_PORTFWD ? NFPROTO_INET : NFPROTO_BRIDGE;
                struct nftnl_set *s = nftnl_set_alloc();
                if (!s)
                        return -ENOMEM;
                struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, family,
                                                             NLM_F_DUMP | NLM_F_ACK, ++nft->seq);
                nftnl_set_set_str(s, NFTNL_SET_TABLE, l->table);
                nftnl_set_set_str(s, NFTNL_SET_NAME, nft_elem_kind_to_string(k));
                nftnl_set_elems_nlmsg_build_payload(nlh, s);
                nftnl_set_free(s);
                list->kind = k;
                r = dump(nft, nlh, elems_cb, list);
        }
        return r;
}

static void drop_elems(void *ctx) {
        ElemList *list = ctx;
        free(list->elems);
        *list = (ElemList){};
}

int nft_dump_elems(Nft *nft, const NftLayout *l, NftElem **ret, size_t *ret_n) {
        ElemList list = {};
        int r = dump_consistent(nft, take_elems, l, &list, drop_elems);
        if (r < 0)
                return r;
        *ret = list.elems;
        *ret_n = list.n;
        return 0;
}

static bool elem_same_key(const NftElem *a, const NftElem *b) {
        if (a->kind != b->kind)
                return false;
        switch (a->kind) {
        case NFT_ELEM_PORTFWD:
                return a->proto == b->proto && a->host_port == b->host_port;
        case NFT_ELEM_VM_PORT:
                return strncmp(a->ifname, b->ifname, sizeof(a->ifname)) == 0;
        case NFT_ELEM_VM_ADDR:
                return strncmp(a->ifname, b->ifname, sizeof(a->ifname)) == 0 &&
                       memcmp(a->mac, b->mac, 6) == 0 && a->guest_ip == b->guest_ip;
        default:
                return false;
        }
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

static int take_rules(Nft *nft, const void *arg, void *ctx) {
        static const uint16_t families[] = { NFPROTO_INET, NFPROTO_BRIDGE };
        const NftLayout *l = arg;
        RuleList *list = ctx;
        int r = 0;
        for (size_t i = 0; i < ELEMENTSOF(families) && r >= 0; i++) {
                char buf[512];
                struct nftnl_rule *q = nftnl_rule_alloc();
                if (!q)
                        return -ENOMEM;
                struct nlmsghdr *nlh =
                        nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, families[i], NLM_F_DUMP, ++nft->seq);
                nftnl_rule_set_str(q, NFTNL_RULE_TABLE, l->table);
                nftnl_rule_nlmsg_build_payload(nlh, q);
                nftnl_rule_free(q);
                list->family = families[i];
                r = dump(nft, nlh, rules_cb, list);
                if (r == -ENOENT)
                        r = 0;
        }
        return r;
}

static void drop_rules(void *ctx) {
        RuleList *list = ctx;
        free(list->rules);
        *list = (RuleList){};
}

int nft_dump_rules(Nft *nft, const NftLayout *l, NftRuleInfo **ret, size_t *ret_n) {
        RuleList list = {};
        int r = dump_consistent(nft, take_rules, l, &list, drop_rules);
        if (r < 0)
                return r;
        *ret = list.rules;
        *ret_n = list.n;
        return 0;
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
                .priority = nftnl_chain_is_set(c, NFTNL_CHAIN_PRIO)
                                    ? nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO)
                                    : 0,
                .policy = nftnl_chain_is_set(c, NFTNL_CHAIN_POLICY)
                                  ? nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY)
                                  : NF_ACCEPT,
        };
        snprintf(x->table, sizeof(x->table), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE));
        snprintf(x->chain, sizeof(x->chain), "%s", nftnl_chain_get_str(c, NFTNL_CHAIN_NAME));
        nftnl_chain_free(c);
        return MNL_CB_OK;
}

static int take_chains(Nft *nft, const void *arg, void *ctx) {
        char buf[512];
        (void) arg;
        struct nlmsghdr *nlh =
                nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, NFPROTO_UNSPEC, NLM_F_DUMP, ++nft->seq);
        int r = dump(nft, nlh, chains_cb, ctx);
        return r == -ENOENT ? 0 : r;
}

static void drop_chains(void *ctx) {
        ChainList *list = ctx;
        free(list->chains);
        *list = (ChainList){};
}

int nft_dump_base_chains(Nft *nft, NftBaseChain **ret, size_t *ret_n) {
        ChainList list = {};
        int r = dump_consistent(nft, take_chains, NULL, &list, drop_chains);
        if (r < 0)
                return r;
        *ret = list.chains;
        *ret_n = list.n;
        return 0;
}
