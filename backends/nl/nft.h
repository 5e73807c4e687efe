/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* nf_tables over libnftnl: the two tables of the `local` backend (DESIGN.md "nftables layout of local")
 * and their per-VM elements, always as one atomic batch per operation. Every message of a batch carries
 * NLM_F_ACK; each reply is mapped back to the operation it answers, and the first error is kept with the
 * kernel's extack text (nft_error_message()). Every object carries its ownership tag as a comment
 * (libnftnl userdata), so `nft list table inet chvm` shows `comment "chvm1:..."`. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/macro.h"

struct nlmsghdr;

/* Kernel 6.9 and later; Debian 12's linux/netfilter/nf_tables.h knows only NFT_TABLE_F_OWNER (5.12). */
#ifndef NFT_TABLE_F_PERSIST
#define NFT_TABLE_F_PERSIST 0x4
#endif

typedef struct Nft Nft;
typedef struct NftBatch NftBatch;
typedef struct NlOps NlOps;

#define NFT_TAG_MAX 128 /* what nft shows of a comment */

/* What the static layout needs to know. Tags are complete strings (chvm1:<agent>:core:<role>). */
typedef struct NftLayout {
        const char *table; /* "chvm": both `inet chvm` and `bridge chvm` */
        const char *bridge; /* the agent's bridge, "chvm0" */
        uint32_t subnet; /* host byte order */
        uint8_t prefixlen;
        const char *tag_prefix; /* "chvm1:<agent-id>": roles are appended as ":core:<role>" */
        uint32_t table_flags; /* for both tables: 0, or NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST */
} NftLayout;

typedef enum NftElemKind {
        NFT_ELEM_PORTFWD, /* inet <table> portfwd4: proto . host port : guest ip . guest port */
        NFT_ELEM_VM_PORT, /* bridge <table> vm_ports: ifname */
        NFT_ELEM_VM_ADDR, /* bridge <table> vm_addrs: ifname . mac . ip */
        _NFT_ELEM_KIND_MAX,
        _NFT_ELEM_KIND_INVALID = -EINVAL,
} NftElemKind;

const char *nft_elem_kind_to_string(NftElemKind k);

typedef struct NftElem {
        NftElemKind kind;
        uint8_t proto; /* PORTFWD: IPPROTO_TCP / IPPROTO_UDP */
        uint16_t host_port; /* PORTFWD */
        uint32_t guest_ip; /* PORTFWD, VM_ADDR (host byte order) */
        uint16_t guest_port; /* PORTFWD */
        char ifname[16]; /* VM_PORT, VM_ADDR */
        uint8_t mac[6]; /* VM_ADDR */
        char tag[NFT_TAG_MAX + 1]; /* the element's comment, "" if it has none */
} NftElem;

int nft_open(Nft **ret);
Nft *nft_close(Nft *nft);
DEFINE_TRIVIAL_CLEANUP_FUNC(Nft *, nft_close);

/* What went wrong in the last failed call: the operation and the kernel's extack text. */
const char *nft_error_message(const Nft *nft);

/* The socket calls to use (backends/nl/nlops.h); NULL: the system's. A seam for fault-injection tests. */
void nft_set_ops(Nft *nft, const NlOps *ops);
/* The netlink port id of our socket (what the kernel records as a table's owner). */
uint32_t nft_portid(const Nft *nft);

NftBatch *nft_batch_new(Nft *nft);
NftBatch *nft_batch_free(NftBatch *b);
DEFINE_TRIVIAL_CLEANUP_FUNC(NftBatch *, nft_batch_free);
size_t nft_batch_n_ops(const NftBatch *b);
/* What operation i does ("add forward 8080/tcp", "create chain inet chvm forward"), as errors name it. */
const char *nft_batch_op(const NftBatch *b, size_t i);

/* Adds the creation of both tables (NLM_F_EXCL, so -EEXIST from the kernel means "already set up"), their
 * sets, chains and static rules, all tagged. The tables get l->table_flags: with NFT_TABLE_F_OWNER they
 * belong to the socket that commits the batch (only it may change them; `nft flush ruleset` by anyone
 * else passes them by), with NFT_TABLE_F_PERSIST too they outlive it, orphaned, until a socket adopts
 * them (nft_adopt_tables()). */
int nft_batch_add_layout(NftBatch *b, const NftLayout *l);
/* Adds or deletes one element (NLM_F_EXCL on add: a host port forwarded twice fails the batch). */
int nft_batch_elem(NftBatch *b, const NftLayout *l, const NftElem *e, bool add);
/* Deletes both tables (only for tests and a full teardown of our own layout). */
int nft_batch_delete_tables(NftBatch *b, const NftLayout *l);

/* Can this kernel make tables with `flags`? 0 yes, -EOPNOTSUPP no; tried with a throwaway table in a
 * batch that always aborts, so nothing changes (not even the ruleset generation). */
int nft_probe_table_flags(Nft *nft, uint32_t flags);

/* Sends the batch and reads every reply. 0 if the kernel committed all of it; otherwise the first error,
 * described by nft_error_message(), and nothing of the batch was applied. An error the kernel gives the
 * whole batch (the answer to BATCH_BEGIN: out of memory, or a failed commit) counts as the batch's error.
 * When the answers are lost (ENOBUFS, or they never come), the batch's tables and elements in the kernel
 * tell whether it was committed (all of them as it wanted, with its tags: 0) or not (then it is sent
 * again, up to three times, and the kernel's own answer comes through). */
int nft_batch_commit(Nft *nft, NftBatch *b);

/* Decodes one NFT_MSG_NEWSETELEM message of nlh->nlmsg_len bytes as an element dump reads it: the elements
 * of the shape `kind` has, in *ret (free()), others skipped. For tests and fuzz/fuzz-parsers. */
int nft_elems_message_parse(const struct nlmsghdr *nlh, NftElemKind kind, NftElem **ret, size_t *ret_n);
/* Elements of our sets, with their comments, from a dump that is retried if the ruleset generation
 * changed while it ran. -ENOENT if our tables do not exist. */
int nft_dump_elems(Nft *nft, const NftLayout *l, NftElem **ret, size_t *ret_n);
typedef struct NftRuleInfo {
        int family; /* NFPROTO_INET or NFPROTO_BRIDGE */
        char chain[64];
        uint64_t handle;
        char tag[NFT_TAG_MAX + 1]; /* the rule's comment, "" if none */
} NftRuleInfo;

/* The rules of both our tables with their handles and comments (generation-checked like the elements).
 * Tables that do not exist contribute nothing. */
int nft_dump_rules(Nft *nft, const NftLayout *l, NftRuleInfo **ret, size_t *ret_n);

/* Takes both tables over for our socket, in one batch that sets l->table_flags (OWNER|PERSIST) on them.
 * The kernel allows it only for orphaned tables (made with NFT_TABLE_F_PERSIST, their owner gone):
 * -EPERM while another socket owns them, -EOPNOTSUPP for tables made without NFT_TABLE_F_PERSIST (the
 * kernel never sets OWNER on a table that had none, nor adds PERSIST later), -ENOENT if either is
 * missing. 0 also when they are ours already. A NEWTABLE for a table that vanished meanwhile would make
 * a new, bare one: that is read back and taken away again (-ENOENT). */
int nft_adopt_tables(Nft *nft, const NftLayout *l);

/* The comment of `inet <table>`: -ENOENT if there is no such table. */
int nft_table_tag(Nft *nft, const NftLayout *l, char ret_tag[NFT_TAG_MAX + 1]);

typedef struct NftTableInfo {
        char tag[NFT_TAG_MAX + 1]; /* its comment, "" if none */
        uint32_t flags; /* NFT_TABLE_F_* */
        uint32_t owner; /* netlink port id of the owning socket, when flags has NFT_TABLE_F_OWNER */
} NftTableInfo;

/* `<family> <table>` (NFPROTO_INET or NFPROTO_BRIDGE): -ENOENT if there is no such table. */
int nft_table_info(Nft *nft, const NftLayout *l, int family, NftTableInfo *ret);
int nft_generation(Nft *nft, uint32_t *ret);

/* The raw bytes of the batch built so far (BEGIN ... END), for tests that parse it back. */
int nft_batch_peek(NftBatch *b, const void **ret_buf, size_t *ret_len);

/* A base chain of any table (ours or anyone's), for doctor's warning about drop policies elsewhere. */
typedef struct NftBaseChain {
        int family; /* NFPROTO_* */
        char table[64];
        char chain[64];
        uint32_t hook; /* NF_INET_* (NF_BR_* for the bridge family) */
        int32_t priority;
        uint32_t policy; /* NF_ACCEPT or NF_DROP */
} NftBaseChain;

/* Every base chain of every table in this namespace, generation-checked. */
int nft_dump_base_chains(Nft *nft, NftBaseChain **ret, size_t *ret_n);
