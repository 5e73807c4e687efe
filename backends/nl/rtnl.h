/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* rtnetlink over libmnl: the link operations the backends need, each one request with NLM_F_ACK on a
 * socket with NETLINK_EXT_ACK and NETLINK_CAP_ACK, so a kernel refusal comes back with its extack text
 * (rtnl_error_message()). Links are identified by (ifindex, name, alias tag); the *_owned functions
 * re-read all three from the kernel before they delete anything.
 *
 * The message builders are separate from the I/O so tests can parse back what they build without a
 * kernel. */

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/ifname.h"

struct nlmsghdr;
#include "util/macro.h"

typedef struct Rtnl Rtnl;
typedef struct NlOps NlOps;

#define LINK_ALIAS_MAX 128

typedef struct LinkInfo {
        uint32_t ifindex;
        char name[IFNAMSIZ];
        char alias[LINK_ALIAS_MAX]; /* IFLA_IFALIAS, "" if none */
        char kind[32]; /* IFLA_INFO_KIND: "tun", "bridge", "veth", ... ("" if none) */
        uint32_t master; /* ifindex of the bridge it is enslaved to, 0 if none */
        uint32_t group; /* IFLA_GROUP */
        uint32_t flags; /* ifi_flags (IFF_UP, ...) */
        uint32_t mtu;
        uint8_t mac[6];
        bool has_mac;
} LinkInfo;

/* Decodes one RTM_NEWLINK message of nlh->nlmsg_len bytes (the caller checked they are there): what a link
 * dump and a link get read. -EBADMSG for anything else. For tests and fuzz/fuzz-parsers. */
int rtnl_link_parse(const struct nlmsghdr *nlh, LinkInfo *ret);

int rtnl_open(Rtnl **ret);
Rtnl *rtnl_close(Rtnl *rtnl);
DEFINE_TRIVIAL_CLEANUP_FUNC(Rtnl *, rtnl_close);

/* The kernel's extended-ack text for the last failed request ("" if it gave none). */
const char *rtnl_error_message(const Rtnl *rtnl);

/* The socket calls to use (backends/nl/nlops.h); NULL: the system's. A seam for fault-injection tests. */
void rtnl_set_ops(Rtnl *rtnl, const NlOps *ops);

/* -ENODEV if there is no such link. */
int rtnl_link_get(Rtnl *rtnl, uint32_t ifindex, LinkInfo *ret);
int rtnl_link_get_by_name(Rtnl *rtnl, const char *name, LinkInfo *ret);
/* All links of the namespace (a dump; restarted if the kernel flags it interrupted). */
int rtnl_link_dump(Rtnl *rtnl, LinkInfo **ret, size_t *ret_n);

/* Changes of one link; members left at their "keep" value are not sent. */
typedef struct LinkChange {
        const char *alias; /* NULL: keep */
        uint32_t mtu; /* 0: keep */
        const uint8_t *mac; /* NULL: keep */
        int up; /* -1 keep, 0 down, 1 up */
        int64_t master; /* -1 keep, 0 release from bridge, > 0 enslave */
        int64_t group; /* -1 keep */
} LinkChange;
#define LINK_CHANGE_KEEP \
        { .up = -1, .master = -1, .group = -1 }

int rtnl_link_change(Rtnl *rtnl, uint32_t ifindex, const LinkChange *c);

/* Creates a bridge (NLM_F_EXCL: -EEXIST if the name is taken) and tags it with alias. The kernel does not
 * take an alias at creation, so a crash between the two requests can leave the bridge untagged; the
 * caller's INTENT record names it, which is how recovery recognises it. */
int rtnl_bridge_create(Rtnl *rtnl, const char *name, const char *alias, uint32_t *ret_ifindex);
int rtnl_addr_add4(Rtnl *rtnl, uint32_t ifindex, uint32_t addr, uint8_t prefixlen);

/* Deletes one link by ifindex (no checks; -ENODEV if gone). */
int rtnl_link_delete(Rtnl *rtnl, uint32_t ifindex);

/* Creates a TAP (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_TUN_EXCL) owned by `owner` (-1: root only). It is
 * created non-persistent, tagged with `alias`, and only then made persistent: a crash in between leaves
 * no untagged TAP behind (the kernel removes a non-persistent TAP with its last fd). */
int tap_create(Rtnl *rtnl, const char *name, const char *alias, uid_t owner, uint32_t *ret_ifindex);

/* A link the caller believes it owns. */
typedef struct OwnedLink {
        uint32_t ifindex;
        const char *name;
        const char *tag;
} OwnedLink;

/* Deletes the link only if ifindex, name and alias still match: 0 when deleted or already gone,
 * -ESTALE when the link at that ifindex is now something else (renamed, re-tagged, reused index). */
int rtnl_link_delete_owned(Rtnl *rtnl, const OwnedLink *l);

/* Deletes many owned links with one RTM_DELLINK: the verified links are moved into a netdev group that
 * was checked to be empty, the group's membership is checked to be exactly those links, and the group
 * is deleted (one unregister_netdevice_many() in the kernel instead of one RCU wait per link). Links
 * already gone count as deleted; links whose identity no longer matches are left alone and reported
 * in ret_stale (may be NULL). */
int rtnl_links_delete_owned_bulk(Rtnl *rtnl, const OwnedLink *links, size_t n, size_t *ret_deleted,
                                 size_t *ret_stale);

/* Message builders (no I/O), for tests: each returns the message length in buf. */
size_t rtnl_build_link_change(void *buf, size_t size, uint32_t seq, uint32_t ifindex, const LinkChange *c);
size_t rtnl_build_bridge_create(void *buf, size_t size, uint32_t seq, const char *name, const char *alias);
size_t rtnl_build_delete_group(void *buf, size_t size, uint32_t seq, uint32_t group);
