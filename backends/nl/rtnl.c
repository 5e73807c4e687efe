/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>

#include "backends/nl/nlops.h"
#include "backends/nl/rtnl.h"
#include "util/crashpoint.h"
#include "util/nlerr.h"

struct Rtnl {
        struct mnl_socket *nl;
        const NlOps *ops;
        uint32_t portid;
        uint32_t seq;
        bool lost_reply; /* the last request's reply was lost at least once, and it was sent again */
        char error[NL_EXTACK_MAX];
        uint8_t buf[32768] __attribute__((aligned(8))); /* requests */
        uint8_t rbuf[32768] __attribute__((aligned(
                8))); /* replies; >= MNL_SOCKET_BUFFER_SIZE (8 KiB): one recvmsg never truncates a dump */
};

int rtnl_open(Rtnl **ret) {
        Rtnl *rtnl = calloc(1, sizeof(Rtnl));
        int one = 1;

        if (!rtnl)
                return -ENOMEM;
        rtnl->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
        if (!rtnl->nl) {
                int r = negative_errno();
                free(rtnl);
                return r;
        }
        /* Both are best effort: older kernels lack them and errors then just carry no text. */
        (void) mnl_socket_setsockopt(rtnl->nl, NETLINK_EXT_ACK, &one, sizeof(one));
        (void) mnl_socket_setsockopt(rtnl->nl, NETLINK_CAP_ACK, &one, sizeof(one));
        if (mnl_socket_bind(rtnl->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
                int r = negative_errno();
                rtnl_close(rtnl);
                return r;
        }
        rtnl->portid = mnl_socket_get_portid(rtnl->nl);
        rtnl->seq = (uint32_t) time(NULL);
        rtnl->ops = &nlops_default;
        *ret = rtnl;
        return 0;
}

Rtnl *rtnl_close(Rtnl *rtnl) {
        if (!rtnl)
                return NULL;
        if (rtnl->nl)
                mnl_socket_close(rtnl->nl);
        free(rtnl);
        return NULL;
}

const char *rtnl_error_message(const Rtnl *rtnl) {
        return rtnl->error;
}

void rtnl_set_ops(Rtnl *rtnl, const NlOps *ops) {
        rtnl->ops = ops ?: &nlops_default;
}

/* The error of an NLMSG_ERROR message (0 for an ACK), and its extack text into rtnl->error. */
static int parse_error(Rtnl *rtnl, const struct nlmsghdr *nlh) {
        return nl_error_parse(nlh, rtnl->error);
}

typedef int (*MsgHandler)(const struct nlmsghdr *nlh, void *userdata);

/* NLM_F_DUMP is NLM_F_ROOT|NLM_F_MATCH, and NLM_F_MATCH is NLM_F_EXCL: only a get asks for a dump. */
static bool is_dump(const struct nlmsghdr *nlh) {
        return (nlh->nlmsg_type & 3) == 2 /* RTM_GET* */ && (nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
}

/* One exchange: sends the request and reads every reply to it: data messages go to `handler`; the
 * request ends with its ACK (or error), a dump with NLMSG_DONE. *ret_lost is set when replies were lost
 * on the way (ENOBUFS, or nothing came back): then the outcome is unknown. */
static int exchange(Rtnl *rtnl, struct nlmsghdr *nlh, MsgHandler handler, void *userdata, bool *ret_lost) {
        int fd = mnl_socket_get_fd(rtnl->nl);
        bool dump = is_dump(nlh), intr = false;
        uint32_t seq = nlh->nlmsg_seq;
        int r;

        *ret_lost = false;
        rtnl->error[0] = '\0';
        r = nlops_send(rtnl->ops, fd, nlh, nlh->nlmsg_len);
        if (r < 0)
                return r;

        for (;;) {
                ssize_t n = nlops_recv(rtnl->ops, fd, rtnl->rbuf, sizeof(rtnl->rbuf), NL_REPLY_TIMEOUT_MS);
                if (n == -ENOBUFS || n == -ETIMEDOUT) {
                        *ret_lost = true;
                        return (int) n;
                }
                if (n < 0)
                        return (int) n;
                int len = (int) n;
                for (const struct nlmsghdr *m = (const struct nlmsghdr *) rtnl->rbuf; mnl_nlmsg_ok(m, len);
                     m = mnl_nlmsg_next(m, &len)) {
                        if (m->nlmsg_seq != seq || m->nlmsg_pid != rtnl->portid)
                                continue; /* a late reply to an earlier request */
                        if (m->nlmsg_flags & NLM_F_DUMP_INTR)
                                intr = true;
                        if (m->nlmsg_type == NLMSG_ERROR)
                                return parse_error(rtnl, m);
                        if (m->nlmsg_type == NLMSG_DONE)
                                return intr ? -EINTR : 0;
                        if (m->nlmsg_type == NLMSG_NOOP)
                                continue;
                        if (handler) {
                                r = handler(m, userdata);
                                if (r < 0)
                                        return r;
                        }
                        if (!dump && !(nlh->nlmsg_flags & NLM_F_ACK))
                                return 0;
                }
        }
}

/* Sends one request and reads every reply to it (see exchange()). -EINTR if a dump was interrupted
 * (NLM_F_DUMP_INTR). When the replies are lost (the kernel dropped them for want of socket buffer, or they
 * never came), what is left of them is drained and the request sent again, up to three times: every
 * request made here may be repeated — changes set absolute values, deletions of what is gone answer
 * ENODEV, and exclusive creations answer EEXIST, which their callers resolve by looking at the object
 * (rtnl_bridge_create(), and rtnl_addr_add4()'s callers take EEXIST as done). rtnl->lost_reply tells them
 * that this happened. A dump whose replies were lost returns -EAGAIN: its handler has seen part of it,
 * so only the caller can start it again with fresh results. */
static int transact(Rtnl *rtnl, struct nlmsghdr *nlh, MsgHandler handler, void *userdata) {
        rtnl->lost_reply = false;
        for (unsigned attempt = 0;; attempt++) {
                bool lost;
                int r = exchange(rtnl, nlh, handler, userdata, &lost);
                if (!lost)
                        return r;
                nlops_drain(rtnl->ops, mnl_socket_get_fd(rtnl->nl), rtnl->rbuf, sizeof(rtnl->rbuf));
                rtnl->lost_reply = true;
                if (is_dump(nlh))
                        return -EAGAIN;
                if (attempt == 2)
                        return r;
        }
}

static struct nlmsghdr *put_header(void *buf, uint16_t type, uint16_t flags, uint32_t seq) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | flags;
        nlh->nlmsg_seq = seq;
        return nlh;
}

size_t rtnl_build_link_change(void *buf, size_t size, uint32_t seq, uint32_t ifindex, const LinkChange *c) {
        struct nlmsghdr *nlh = put_header(buf, RTM_NEWLINK, NLM_F_ACK, seq);
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = (int) ifindex;
        if (c->up >= 0) {
                ifi->ifi_change = IFF_UP;
                ifi->ifi_flags = c->up ? IFF_UP : 0;
        }
        if (c->alias)
                mnl_attr_put_strz_check(nlh, size, IFLA_IFALIAS, c->alias);
        if (c->mtu)
                mnl_attr_put_u32_check(nlh, size, IFLA_MTU, c->mtu);
        if (c->mac)
                mnl_attr_put_check(nlh, size, IFLA_ADDRESS, 6, c->mac);
        if (c->master >= 0)
                mnl_attr_put_u32_check(nlh, size, IFLA_MASTER, (uint32_t) c->master);
        if (c->group >= 0)
                mnl_attr_put_u32_check(nlh, size, IFLA_GROUP, (uint32_t) c->group);
        return nlh->nlmsg_len;
}

size_t rtnl_build_bridge_create(void *buf, size_t size, uint32_t seq, const char *name, const char *alias) {
        struct nlmsghdr *nlh = put_header(buf, RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq);
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

        ifi->ifi_family = AF_UNSPEC;
        mnl_attr_put_strz_check(nlh, size, IFLA_IFNAME, name);
        if (alias)
                mnl_attr_put_strz_check(nlh, size, IFLA_IFALIAS, alias);
        struct nlattr *linkinfo = mnl_attr_nest_start_check(nlh, size, IFLA_LINKINFO);
        if (linkinfo) {
                mnl_attr_put_strz_check(nlh, size, IFLA_INFO_KIND, "bridge");
                mnl_attr_nest_end(nlh, linkinfo);
        }
        return nlh->nlmsg_len;
}

size_t rtnl_build_delete_group(void *buf, size_t size, uint32_t seq, uint32_t group) {
        struct nlmsghdr *nlh = put_header(buf, RTM_DELLINK, NLM_F_ACK, seq);
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = 0; /* with IFLA_GROUP: every link of the group */
        mnl_attr_put_u32_check(nlh, size, IFLA_GROUP, group);
        return nlh->nlmsg_len;
}

static int linkinfo_cb(const struct nlattr *attr, void *data) {
        LinkInfo *l = data;
        if (mnl_attr_get_type(attr) == IFLA_INFO_KIND && mnl_attr_validate(attr, MNL_TYPE_STRING) >= 0)
                snprintf(l->kind, sizeof(l->kind), "%.*s", (int) mnl_attr_get_payload_len(attr),
                         (const char *) mnl_attr_get_payload(attr));
        return MNL_CB_OK;
}

static int link_attr_cb(const struct nlattr *attr, void *data) {
        LinkInfo *l = data;
        const char *s;

        switch (mnl_attr_get_type(attr)) {
        case IFLA_IFNAME:
                if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0)
                        return MNL_CB_ERROR;
                s = mnl_attr_get_str(attr);
                snprintf(l->name, sizeof(l->name), "%s", s);
                break;
        case IFLA_IFALIAS:
                if (mnl_attr_validate(attr, MNL_TYPE_STRING) < 0)
                        return MNL_CB_ERROR;
                snprintf(l->alias, sizeof(l->alias), "%.*s",
                         (int) strnlen(mnl_attr_get_payload(attr), mnl_attr_get_payload_len(attr)),
                         (const char *) mnl_attr_get_payload(attr));
                break;
        case IFLA_MASTER:
                if (mnl_attr_validate(attr, MNL_TYPE_U32) >= 0)
                        l->master = mnl_attr_get_u32(attr);
                break;
        case IFLA_GROUP:
                if (mnl_attr_validate(attr, MNL_TYPE_U32) >= 0)
                        l->group = mnl_attr_get_u32(attr);
                break;
        case IFLA_MTU:
                if (mnl_attr_validate(attr, MNL_TYPE_U32) >= 0)
                        l->mtu = mnl_attr_get_u32(attr);
                break;
        case IFLA_ADDRESS:
                if (mnl_attr_get_payload_len(attr) == 6) {
                        memcpy(l->mac, mnl_attr_get_payload(attr), 6);
                        l->has_mac = true;
                }
                break;
        case IFLA_LINKINFO:
                (void) mnl_attr_parse_nested(attr, linkinfo_cb, l);
                break;
        }
        return MNL_CB_OK;
}

int rtnl_link_parse(const struct nlmsghdr *nlh, LinkInfo *ret) {
        const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
        LinkInfo l = {};

        if (nlh->nlmsg_type != RTM_NEWLINK || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*ifi)))
                return -EBADMSG;
        l.ifindex = (uint32_t) ifi->ifi_index;
        l.flags = ifi->ifi_flags;
        if (mnl_attr_parse(nlh, sizeof(*ifi), link_attr_cb, &l) != MNL_CB_OK)
                return -EBADMSG;
        *ret = l;
        return 0;
}

static int one_link_handler(const struct nlmsghdr *nlh, void *userdata) {
        return rtnl_link_parse(nlh, userdata);
}

static int get_link(Rtnl *rtnl, uint32_t ifindex, const char *name, LinkInfo *ret) {
        struct nlmsghdr *nlh = put_header(rtnl->buf, RTM_GETLINK, NLM_F_ACK, ++rtnl->seq);
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        LinkInfo l = {};
        int r;

        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = (int) ifindex;
        if (name)
                mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        r = transact(rtnl, nlh, one_link_handler, &l);
        if (r < 0)
                return r;
        if (l.ifindex == 0)
                return -ENODEV;
        *ret = l;
        return 0;
}

int rtnl_link_get(Rtnl *rtnl, uint32_t ifindex, LinkInfo *ret) {
        if (ifindex == 0)
                return -ENODEV;
        return get_link(rtnl, ifindex, NULL, ret);
}

int rtnl_link_get_by_name(Rtnl *rtnl, const char *name, LinkInfo *ret) {
        if (!ifname_valid(name))
                return -EINVAL;
        return get_link(rtnl, 0, name, ret);
}

typedef struct LinkList {
        LinkInfo *links;
        size_t n, allocated;
} LinkList;

static int dump_handler(const struct nlmsghdr *nlh, void *userdata) {
        LinkList *list = userdata;
        int r;

        if (list->n == list->allocated) {
                size_t a = list->allocated ? list->allocated * 2 : 64;
                LinkInfo *p = realloc(list->links, a * sizeof(LinkInfo));
                if (!p)
                        return -ENOMEM;
                list->links = p;
                list->allocated = a;
        }
        r = rtnl_link_parse(nlh, &list->links[list->n]);
        if (r < 0)
                return r;
        list->n++;
        return 0;
}

int rtnl_link_dump(Rtnl *rtnl, LinkInfo **ret, size_t *ret_n) {
        for (unsigned attempt = 0; attempt < 10; attempt++) {
                struct nlmsghdr *nlh = put_header(rtnl->buf, RTM_GETLINK, NLM_F_DUMP, ++rtnl->seq);
                struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
                LinkList list = {};
                int r;

                ifi->ifi_family = AF_UNSPEC;
                r = transact(rtnl, nlh, dump_handler, &list);
                if (r == -EINTR || r == -EAGAIN) { /* the link table changed during the dump, or replies
                                                    * were lost: take it again */
                        free(list.links);
                        continue;
                }
                if (r < 0) {
                        free(list.links);
                        return r;
                }
                *ret = list.links;
                *ret_n = list.n;
                return 0;
        }
        return -EAGAIN;
}

static int simple_request(Rtnl *rtnl, size_t len) {
        (void) len;
        return transact(rtnl, (struct nlmsghdr *) rtnl->buf, NULL, NULL);
}

int rtnl_link_change(Rtnl *rtnl, uint32_t ifindex, const LinkChange *c) {
        return simple_request(rtnl,
                              rtnl_build_link_change(rtnl->buf, sizeof(rtnl->buf), ++rtnl->seq, ifindex, c));
}

int rtnl_bridge_create(Rtnl *rtnl, const char *name, const char *alias, uint32_t *ret_ifindex) {
        LinkInfo l;
        int r;

        if (!ifname_valid(name) || (alias && strlen(alias) >= LINK_ALIAS_MAX))
                return -EINVAL;
        r = simple_request(rtnl,
                           rtnl_build_bridge_create(rtnl->buf, sizeof(rtnl->buf), ++rtnl->seq, name, alias));
        bool lost = rtnl->lost_reply;
        if (r < 0 && !(r == -EEXIST && lost))
                return r;
        r = rtnl_link_get_by_name(rtnl, name, &l);
        if (r < 0)
                return r;
        /* EEXIST to the repeated request after the first one's reply was lost: the first one made it, if
         * what is there is a bridge with no alias yet (or ours). */
        if (lost &&
            (strcmp(l.kind, "bridge") != 0 || (l.alias[0] && (!alias || strcmp(l.alias, alias) != 0))))
                return -EEXIST;
        /* The kernel ignores IFLA_IFALIAS when it creates a link (only a change sets it): tag it now, and
         * take the bridge away again if that fails, so no untagged bridge of ours stays behind. */
        if (alias && strcmp(l.alias, alias) != 0) {
                LinkChange c = LINK_CHANGE_KEEP;
                c.alias = alias;
                r = rtnl_link_change(rtnl, l.ifindex, &c);
                if (r < 0) {
                        char saved[sizeof(rtnl->error)];
                        memcpy(saved, rtnl->error, sizeof(saved));
                        (void) rtnl_link_delete(rtnl, l.ifindex);
                        memcpy(rtnl->error, saved, sizeof(saved));
                        return r;
                }
        }
        if (ret_ifindex)
                *ret_ifindex = l.ifindex;
        return 0;
}

int rtnl_addr_add4(Rtnl *rtnl, uint32_t ifindex, uint32_t addr, uint8_t prefixlen) {
        struct nlmsghdr *nlh =
                put_header(rtnl->buf, RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, ++rtnl->seq);
        struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
        uint32_t be = htonl(addr);

        ifa->ifa_family = AF_INET;
        ifa->ifa_prefixlen = prefixlen;
        ifa->ifa_index = ifindex;
        mnl_attr_put_u32(nlh, IFA_LOCAL, be);
        mnl_attr_put_u32(nlh, IFA_ADDRESS, be);
        return transact(rtnl, nlh, NULL, NULL);
}

int rtnl_link_delete(Rtnl *rtnl, uint32_t ifindex) {
        struct nlmsghdr *nlh = put_header(rtnl->buf, RTM_DELLINK, NLM_F_ACK, ++rtnl->seq);
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));

        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = (int) ifindex;
        return transact(rtnl, nlh, NULL, NULL);
}

int tap_create(Rtnl *rtnl, const char *name, const char *alias, uid_t owner, uint32_t *ret_ifindex) {
        _cleanup_close_ int fd = -EBADF;
        struct ifreq ifr = {};
        LinkInfo l;
        int r;

        if (!ifname_valid(name) || !alias || strlen(alias) >= LINK_ALIAS_MAX)
                return -EINVAL;

        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        ifr.ifr_flags = (short) (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL); /* bit 15: the sign */
        memcpy(ifr.ifr_name, name, strlen(name));
        if (ioctl(fd, TUNSETIFF, &ifr) < 0)
                return negative_errno(); /* EBUSY: a TAP of that name exists; EEXIST: another kind */
        if (owner != (uid_t) -1 && ioctl(fd, TUNSETOWNER, (unsigned long) owner) < 0)
                return negative_errno();

        r = CRASH_POINT("rtnl-tap-created-untagged");
        if (r < 0)
                return r;
        r = rtnl_link_get_by_name(rtnl, name, &l);
        if (r < 0)
                return r;
        LinkChange c = LINK_CHANGE_KEEP;
        c.alias = alias;
        r = rtnl_link_change(rtnl, l.ifindex, &c);
        if (r < 0)
                return r; /* closing fd removes the untagged TAP */

        r = CRASH_POINT("rtnl-tap-tagged-not-persistent");
        if (r < 0)
                return r;
        /* Only a tagged TAP may outlive us. */
        if (ioctl(fd, TUNSETPERSIST, 1) < 0)
                return negative_errno();
        if (ret_ifindex)
                *ret_ifindex = l.ifindex;
        return 0;
}

static int check_owned(Rtnl *rtnl, const OwnedLink *o, LinkInfo *ret) {
        int r = rtnl_link_get(rtnl, o->ifindex, ret);
        if (r < 0)
                return r;
        if (strcmp(ret->name, o->name) != 0 || strcmp(ret->alias, o->tag) != 0)
                return -ESTALE;
        return 0;
}

int rtnl_link_delete_owned(Rtnl *rtnl, const OwnedLink *o) {
        LinkInfo l;
        int r;

        r = check_owned(rtnl, o, &l);
        if (r == -ENODEV)
                return 0;
        if (r < 0)
                return r;
        r = rtnl_link_delete(rtnl, o->ifindex);
        return r == -ENODEV ? 0 : r;
}

/* A group id no link uses, not the default group 0. */
static int pick_empty_group(const LinkInfo *links, size_t n, uint32_t *ret) {
        for (unsigned attempt = 0; attempt < 64; attempt++) {
                uint32_t g;
                if (getrandom(&g, sizeof(g), 0) != sizeof(g))
                        return -EIO;
                g = 0x40000000u | (g & 0x3fffffffu);
                bool used = false;
                for (size_t i = 0; i < n && !used; i++)
                        used = links[i].group == g;
                if (!used) {
                        *ret = g;
                        return 0;
                }
        }
        return -EAGAIN;
}

static const LinkInfo *find_link(const LinkInfo *links, size_t n, uint32_t ifindex) {
        for (size_t i = 0; i < n; i++)
                if (links[i].ifindex == ifindex)
                        return &links[i];
        return NULL;
}

/* Sends RTM_NEWLINK "group = g" for every link with doomed[i], up to PIPELINE requests per sendmsg, and
 * reads each one's ACK. A link that vanished meanwhile (ENODEV) is no longer doomed but counts as
 * deleted; any other error stops. When ACKs are lost, the links not yet acknowledged are sent again
 * (setting a group twice changes nothing), up to three times in a row. */
#define PIPELINE 128
static int set_group_pipelined(Rtnl *rtnl, const OwnedLink *links, size_t n, bool *doomed, uint32_t group,
                               size_t *deleted, size_t *moved) {
        _cleanup_free_ bool *acked = calloc(n ? n : 1, sizeof(bool));
        int fd = mnl_socket_get_fd(rtnl->nl);
        unsigned losses = 0;
        size_t i = 0;

        if (!acked)
                return -ENOMEM;
        while (i < n) {
                size_t idx[PIPELINE], k = 0, len = 0, start = i;
                uint32_t first_seq = rtnl->seq + 1;

                for (; i < n && k < PIPELINE; i++) {
                        if (!doomed[i] || acked[i])
                                continue;
                        LinkChange c = LINK_CHANGE_KEEP;
                        c.group = group;
                        len += rtnl_build_link_change(rtnl->buf + len, sizeof(rtnl->buf) - len, ++rtnl->seq,
                                                      links[i].ifindex, &c);
                        idx[k++] = i;
                }
                if (k == 0)
                        break;
                int r = nlops_send(rtnl->ops, fd, rtnl->buf, len);
                if (r < 0)
                        return r;

                size_t n_acked = 0;
                int first_error = 0;
                bool lost = false;
                while (n_acked < k) {
                        ssize_t got = nlops_recv(rtnl->ops, fd, rtnl->rbuf, sizeof(rtnl->rbuf),
                                                 NL_REPLY_TIMEOUT_MS);
                        if (got == -ENOBUFS || got == -ETIMEDOUT) {
                                lost = true;
                                break;
                        }
                        if (got < 0)
                                return (int) got;
                        int left = (int) got;
                        for (const struct nlmsghdr *m = (const struct nlmsghdr *) rtnl->rbuf;
                             mnl_nlmsg_ok(m, left); m = mnl_nlmsg_next(m, &left)) {
                                if (m->nlmsg_type != NLMSG_ERROR || m->nlmsg_seq < first_seq ||
                                    m->nlmsg_seq >= first_seq + k || m->nlmsg_pid != rtnl->portid)
                                        continue;
                                size_t j = idx[m->nlmsg_seq - first_seq];
                                char extack[NL_EXTACK_MAX];
                                int e = nl_error_parse(m, extack);
                                if (acked[j])
                                        continue;
                                acked[j] = true;
                                n_acked++;
                                if (e == -ENODEV) {
                                        doomed[j] = false;
                                        (*deleted)++;
                                        (*moved)--;
                                } else if (e < 0 && !first_error) {
                                        first_error = e;
                                        memcpy(rtnl->error, extack, sizeof(extack));
                                }
                        }
                }
                if (first_error)
                        return first_error;
                if (lost) {
                        nlops_drain(rtnl->ops, fd, rtnl->rbuf, sizeof(rtnl->rbuf));
                        if (++losses == 3)
                                return -ENOBUFS;
                        i = start; /* this chunk again, without what was acknowledged */
                } else
                        losses = 0;
        }
        return 0;
}

int rtnl_links_delete_owned_bulk(Rtnl *rtnl, const OwnedLink *links, size_t n, size_t *ret_deleted,
                                 size_t *ret_stale) {
        _cleanup_free_ LinkInfo *all = NULL;
        _cleanup_free_ bool *doomed = NULL;
        size_t n_all, deleted = 0, stale = 0, moved = 0;
        uint32_t group = 0; /* set by pick_empty_group(); gcc -O2 cannot tell */
        int r;

        r = rtnl_link_dump(rtnl, &all, &n_all);
        if (r < 0)
                return r;
        r = pick_empty_group(all, n_all, &group);
        if (r < 0)
                return r;
        doomed = calloc(n ? n : 1, sizeof(bool));
        if (!doomed)
                return -ENOMEM;

        for (size_t i = 0; i < n; i++) {
                const LinkInfo *l = find_link(all, n_all, links[i].ifindex);
                if (!l) {
                        deleted++; /* already gone */
                        continue;
                }
                if (strcmp(l->name, links[i].name) != 0 || strcmp(l->alias, links[i].tag) != 0) {
                        stale++;
                        continue;
                }
                doomed[i] = true;
                moved++;
        }

        /* Move them all into the group, pipelined: many requests per send, then their ACKs. */
        r = set_group_pipelined(rtnl, links, n, doomed, group, &deleted, &moved);
        if (r < 0)
                return r;

        if (moved > 0) {
                /* Only our links may be in the group: check every member again before deleting it. */
                free(all);
                all = NULL;
                r = rtnl_link_dump(rtnl, &all, &n_all);
                if (r < 0)
                        return r;
                for (size_t k = 0; k < n_all; k++) {
                        if (all[k].group != group)
                                continue;
                        bool ours = false;
                        for (size_t i = 0; i < n && !ours; i++)
                                ours = doomed[i] && links[i].ifindex == all[k].ifindex &&
                                       strcmp(links[i].name, all[k].name) == 0 &&
                                       strcmp(links[i].tag, all[k].alias) == 0;
                        if (!ours)
                                return -ENOTUNIQ; /* something else joined the group: delete nothing */
                }
                r = simple_request(
                        rtnl, rtnl_build_delete_group(rtnl->buf, sizeof(rtnl->buf), ++rtnl->seq, group));
                if (r < 0 && r != -ENODEV)
                        return r;
                deleted += moved;
        }

        if (ret_deleted)
                *ret_deleted = deleted;
        if (ret_stale)
                *ret_stale = stale;
        return 0;
}
