/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "tests/nlfault.h"

static const char *const kind_table[_NL_FAULT_MAX] = {
        [NL_FAULT_NONE] = "none",
        [NL_FAULT_EEXIST] = "EEXIST",
        [NL_FAULT_EBUSY] = "EBUSY",
        [NL_FAULT_ENOMEM] = "ENOMEM",
        [NL_FAULT_EINTR] = "EINTR",
        [NL_FAULT_ENOBUFS] = "ENOBUFS",
        [NL_FAULT_LOST_ACK] = "lost ACK",
        [NL_FAULT_POISON] = "poisoned message",
        [NL_FAULT_COMMIT_ERROR] = "failed commit",
        [NL_FAULT_EOPNOTSUPP] = "EOPNOTSUPP",
};

const char *nl_fault_kind_to_string(NlFaultKind k) {
        return k < _NL_FAULT_MAX ? kind_table[k] : NULL;
}

static const char *nft_msg_name(uint16_t type) {
        static const char *const names[] = {
                [NFT_MSG_NEWTABLE] = "NEWTABLE",     [NFT_MSG_GETTABLE] = "GETTABLE",
                [NFT_MSG_DELTABLE] = "DELTABLE",     [NFT_MSG_NEWCHAIN] = "NEWCHAIN",
                [NFT_MSG_GETCHAIN] = "GETCHAIN",     [NFT_MSG_DELCHAIN] = "DELCHAIN",
                [NFT_MSG_NEWRULE] = "NEWRULE",       [NFT_MSG_GETRULE] = "GETRULE",
                [NFT_MSG_DELRULE] = "DELRULE",       [NFT_MSG_NEWSET] = "NEWSET",
                [NFT_MSG_GETSET] = "GETSET",         [NFT_MSG_DELSET] = "DELSET",
                [NFT_MSG_NEWSETELEM] = "NEWSETELEM", [NFT_MSG_GETSETELEM] = "GETSETELEM",
                [NFT_MSG_DELSETELEM] = "DELSETELEM", [NFT_MSG_GETGEN] = "GETGEN",
        };
        uint16_t op = type & 0xff;
        return op < sizeof(names) / sizeof(names[0]) && names[op] ? names[op] : "?";
}

static const char *rtm_name(uint16_t type) {
        switch (type) {
        case RTM_NEWLINK:
                return "RTM_NEWLINK";
        case RTM_DELLINK:
                return "RTM_DELLINK";
        case RTM_GETLINK:
                return "RTM_GETLINK";
        case RTM_NEWADDR:
                return "RTM_NEWADDR";
        case RTM_DELADDR:
                return "RTM_DELADDR";
        case RTM_GETADDR:
                return "RTM_GETADDR";
        default:
                return "RTM_?";
        }
}

static bool is_batch_marker(int proto, const struct nlmsghdr *m) {
        return proto == NETLINK_NETFILTER &&
               (m->nlmsg_type == NFNL_MSG_BATCH_BEGIN || m->nlmsg_type == NFNL_MSG_BATCH_END);
}

static void describe(NlFault *f, int proto, const uint8_t *buf, size_t len) {
        char *out = f->log[(f->n_requests - 1) % NL_FAULT_LOG_MAX];
        const struct nlmsghdr *first = NULL;
        unsigned n = 0;
        int left = (int) len;
        for (const struct nlmsghdr *m = (const void *) buf; mnl_nlmsg_ok(m, left);
             m = mnl_nlmsg_next(m, &left)) {
                if (is_batch_marker(proto, m))
                        continue;
                if (!first)
                        first = m;
                n++;
        }
        if (!first) {
                snprintf(out, 64, "empty");
                return;
        }
        bool batch = proto == NETLINK_NETFILTER &&
                     ((const struct nlmsghdr *) buf)->nlmsg_type == NFNL_MSG_BATCH_BEGIN;
        const char *name =
                proto == NETLINK_NETFILTER ? nft_msg_name(first->nlmsg_type) : rtm_name(first->nlmsg_type);
        if (batch)
                snprintf(out, 64, "nft batch %s%s%.0u", name, n > 1 ? " +" : "", n > 1 ? n - 1 : 0);
        else
                snprintf(out, 64, "%s %s%s%s%.0u", proto == NETLINK_NETFILTER ? "nft" : "rtnl", name,
                         (first->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP && (first->nlmsg_type & 3) == 2
                                 ? " dump"
                                 : "",
                         n > 1 ? " x" : "", n > 1 ? n : 0);
}

static uint32_t portid_of(int fd) {
        struct sockaddr_nl a = {};
        socklen_t l = sizeof(a);
        return getsockname(fd, (struct sockaddr *) &a, &l) == 0 ? a.nl_pid : 0;
}

static void put_answer(NlFault *f, const struct nlmsghdr *m, uint32_t portid, int error) {
        size_t size = NLMSG_LENGTH(sizeof(struct nlmsgerr));
        if (f->reply_len + NLMSG_ALIGN(size) > sizeof(f->reply))
                return;
        struct nlmsghdr *r = (struct nlmsghdr *) (f->reply + f->reply_len);
        memset(r, 0, NLMSG_ALIGN(size));
        r->nlmsg_len = (uint32_t) size;
        r->nlmsg_type = NLMSG_ERROR;
        r->nlmsg_flags = NLM_F_CAPPED;
        r->nlmsg_seq = m->nlmsg_seq;
        r->nlmsg_pid = portid;
        struct nlmsgerr *e = NLMSG_DATA(r);
        e->error = -error;
        e->msg = *m;
        f->reply_len += NLMSG_ALIGN(size);
}

/* The answers the kernel would give had it refused the request's first message with `error`; with
 * `batch_error`, the error answers BATCH_BEGIN (alone, or followed by the messages' 0s if `acks`). */
static void refuse(NlFault *f, int proto, int fd, const uint8_t *buf, size_t len, int error,
                   bool batch_error, bool acks) {
        uint32_t portid = portid_of(fd);
        const struct nlmsghdr *begin = (const void *) buf;
        bool first = true;
        int left = (int) len;
        f->reply_len = 0;
        if (batch_error && proto == NETLINK_NETFILTER && begin->nlmsg_type == NFNL_MSG_BATCH_BEGIN) {
                put_answer(f, begin, portid, error);
                if (!acks)
                        return;
                error = 0;
        }
        for (const struct nlmsghdr *m = (const void *) buf; mnl_nlmsg_ok(m, left);
             m = mnl_nlmsg_next(m, &left)) {
                if (is_batch_marker(proto, m))
                        continue;
                put_answer(f, m, portid, first ? error : 0);
                first = false;
        }
}

/* Copies the request with an over-long attribute of type 1 appended to message `index`. */
static size_t poison(const uint8_t *buf, size_t len, int proto, unsigned index, uint8_t *out, size_t size) {
        size_t o = 0;
        unsigned i = 0;
        int left = (int) len;
        for (const struct nlmsghdr *m = (const void *) buf; mnl_nlmsg_ok(m, left);
             m = mnl_nlmsg_next(m, &left)) {
                size_t mlen = NLMSG_ALIGN(m->nlmsg_len);
                if (o + mlen + 512 > size)
                        return 0;
                memcpy(out + o, m, m->nlmsg_len);
                memset(out + o + m->nlmsg_len, 0, mlen - m->nlmsg_len);
                struct nlmsghdr *c = (struct nlmsghdr *) (out + o);
                c->nlmsg_len = (uint32_t) mlen;
                if (!is_batch_marker(proto, m) && i++ == index) {
                        char junk[300];
                        memset(junk, 'x', sizeof(junk) - 1);
                        junk[sizeof(junk) - 1] = '\0';
                        mnl_attr_put(c, 1, sizeof(junk), junk);
                }
                o += NLMSG_ALIGN(c->nlmsg_len);
        }
        return o;
}

static void drain_real(int fd) {
        uint8_t buf[65536];
        for (unsigned i = 0; i < 100000; i++) {
                ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n < 0 && errno != ENOBUFS && errno != EINTR)
                        return;
        }
}

static ssize_t fault_sendmsg(void *userdata, int fd, const struct msghdr *msg, int flags) {
        NlFault *f = userdata;
        static uint8_t buf[1 << 20], alt[(1 << 20) + 4096];
        size_t len = 0;
        int proto = 0;
        socklen_t pl = sizeof(proto);

        if (f->paused) {
                ssize_t n = sendmsg(fd, msg, flags);
                return n < 0 ? -errno : n;
        }
        (void) getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl);
        for (size_t i = 0; i < msg->msg_iovlen; i++) {
                if (len + msg->msg_iov[i].iov_len > sizeof(buf))
                        return -EMSGSIZE;
                memcpy(buf + len, msg->msg_iov[i].iov_base, msg->msg_iov[i].iov_len);
                len += msg->msg_iov[i].iov_len;
        }
        f->n_requests++;
        describe(f, proto, buf, len);

        NlFaultKind kind = NL_FAULT_NONE;
        if (f->n_requests == f->at) {
                kind = f->kind;
                f->fired = kind != NL_FAULT_NONE;
        }
        for (size_t i = 0; i < f->n_more; i++)
                if (f->n_requests == f->more[i].at)
                        kind = f->more[i].kind;
        if (kind == NL_FAULT_NONE) {
                ssize_t n = sendmsg(fd, msg, flags);
                return n < 0 ? -errno : n;
        }
        switch (kind) {
        case NL_FAULT_EEXIST:
        case NL_FAULT_EBUSY:
        case NL_FAULT_EOPNOTSUPP:
                refuse(f, proto, fd, buf, len,
                       kind == NL_FAULT_EEXIST  ? EEXIST
                       : kind == NL_FAULT_EBUSY ? EBUSY
                                                : EOPNOTSUPP,
                       false, false);
                return (ssize_t) len;
        case NL_FAULT_ENOMEM:
                refuse(f, proto, fd, buf, len, ENOMEM, true, false);
                return (ssize_t) len;
        case NL_FAULT_COMMIT_ERROR:
                refuse(f, proto, fd, buf, len, ENOMEM, true, true);
                return (ssize_t) len;
        case NL_FAULT_EINTR:
                f->eintr_recv = true;
                return -EINTR;
        case NL_FAULT_ENOBUFS:
        case NL_FAULT_LOST_ACK: {
                ssize_t n = sendmsg(fd, msg, flags);
                if (n < 0)
                        return -errno;
                /* The kernel answered inside sendmsg(); a dump goes on as its replies are read. */
                drain_real(fd);
                if (kind == NL_FAULT_ENOBUFS)
                        f->enobufs_recv = true;
                else
                        f->lost = true;
                return n;
        }
        case NL_FAULT_POISON: {
                size_t plen = poison(buf, len, proto, f->msg_index, alt, sizeof(alt));
                struct iovec iov = { .iov_base = alt, .iov_len = plen };
                struct msghdr m = *msg;
                m.msg_iov = &iov;
                m.msg_iovlen = 1;
                if (plen == 0)
                        return -EMSGSIZE;
                ssize_t n = sendmsg(fd, &m, flags);
                return n < 0 ? -errno : (ssize_t) len;
        }
        default:
                return -EINVAL;
        }
}

static ssize_t fault_recvmsg(void *userdata, int fd, struct msghdr *msg, int flags) {
        NlFault *f = userdata;
        if (f->eintr_recv) {
                f->eintr_recv = false;
                return -EINTR;
        }
        if (f->enobufs_recv) {
                f->enobufs_recv = false;
                return -ENOBUFS;
        }
        if (f->reply_len > 0) {
                size_t n = f->reply_len < msg->msg_iov[0].iov_len ? f->reply_len : msg->msg_iov[0].iov_len;
                memcpy(msg->msg_iov[0].iov_base, f->reply, n);
                if (msg->msg_name && msg->msg_namelen >= sizeof(struct sockaddr_nl)) {
                        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
                        memcpy(msg->msg_name, &kernel, sizeof(kernel));
                        msg->msg_namelen = sizeof(kernel);
                }
                msg->msg_flags = n < f->reply_len ? MSG_TRUNC : 0;
                f->reply_len = 0;
                return (ssize_t) n;
        }
        ssize_t n = recvmsg(fd, msg, flags);
        return n < 0 ? -errno : n;
}

static int fault_poll(void *userdata, int fd, int timeout_ms) {
        NlFault *f = userdata;
        if (f->eintr_recv || f->enobufs_recv || f->reply_len > 0)
                return 1;
        if (f->lost) {
                f->lost = false;
                return 0;
        }
        struct pollfd p = { .fd = fd, .events = POLLIN };
        f->n_waits++;
        int k = poll(&p, 1, timeout_ms);
        return k < 0 ? -errno : k;
}

const NlOps *nl_fault_arm(NlFault *f, NlFaultKind kind, unsigned at, unsigned msg_index) {
        memset(f, 0, sizeof(*f));
        f->kind = kind;
        f->at = at;
        f->msg_index = msg_index;
        f->ops = (NlOps){
                .sendmsg = fault_sendmsg, .recvmsg = fault_recvmsg, .poll = fault_poll, .userdata = f
        };
        return &f->ops;
}

void nl_fault_add(NlFault *f, NlFaultKind kind, unsigned at) {
        if (f->n_more < NL_FAULT_MAX)
                f->more[f->n_more++] = (typeof(f->more[0])){ .kind = kind, .at = at };
}
