/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/uio.h>

#include "backends/nl/nlops.h"
#include "util/macro.h"

static ssize_t default_sendmsg(void *userdata _unused_, int fd, const struct msghdr *msg, int flags) {
        ssize_t n = sendmsg(fd, msg, flags);
        return n < 0 ? negative_errno() : n;
}

static ssize_t default_recvmsg(void *userdata _unused_, int fd, struct msghdr *msg, int flags) {
        ssize_t n = recvmsg(fd, msg, flags);
        return n < 0 ? negative_errno() : n;
}

static int default_poll(void *userdata _unused_, int fd, int timeout_ms) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int k = poll(&p, 1, timeout_ms);
        return k < 0 ? negative_errno() : k;
}

const NlOps nlops_default = {
        .sendmsg = default_sendmsg,
        .recvmsg = default_recvmsg,
        .poll = default_poll,
};

int nlops_sendiov(const NlOps *ops, int fd, const struct iovec *iov, size_t n_iov) {
        struct sockaddr_nl dst = { .nl_family = AF_NETLINK };
        struct msghdr msg = { .msg_name = &dst,
                              .msg_namelen = sizeof(dst),
                              .msg_iov = (struct iovec *) iov,
                              .msg_iovlen = n_iov };
        size_t total = 0;
        for (size_t i = 0; i < n_iov; i++)
                total += iov[i].iov_len;
        for (;;) {
                ssize_t n = ops->sendmsg(ops->userdata, fd, &msg, 0);
                if (n == -EINTR)
                        continue; /* nothing was sent */
                if (n < 0)
                        return (int) n;
                return (size_t) n == total ? 0 : -EMSGSIZE; /* a datagram goes whole or not at all */
        }
}

int nlops_send(const NlOps *ops, int fd, const void *buf, size_t len) {
        struct iovec iov = { .iov_base = (void *) buf, .iov_len = len };
        return nlops_sendiov(ops, fd, &iov, 1);
}

ssize_t nlops_recv(const NlOps *ops, int fd, void *buf, size_t size, int timeout_ms) {
        struct sockaddr_nl src = {};
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        for (;;) {
                struct msghdr msg = {
                        .msg_name = &src, .msg_namelen = sizeof(src), .msg_iov = &iov, .msg_iovlen = 1
                };
                ssize_t n = ops->recvmsg(ops->userdata, fd, &msg, MSG_DONTWAIT);
                if (n == -EINTR)
                        continue;
                if (n == -EAGAIN) {
                        int k = ops->poll(ops->userdata, fd, timeout_ms);
                        if (k == -EINTR)
                                continue;
                        if (k < 0)
                                return k;
                        if (k == 0)
                                return -ETIMEDOUT;
                        continue;
                }
                if (n < 0)
                        return n;
                if (msg.msg_flags & MSG_TRUNC)
                        return -EMSGSIZE;
                if (msg.msg_namelen == sizeof(src) && src.nl_pid != 0)
                        continue; /* not from the kernel: another process cannot answer for it */
                return n;
        }
}

void nlops_drain(const NlOps *ops, int fd, void *buf, size_t size) {
        struct iovec iov = { .iov_base = buf, .iov_len = size };
        for (unsigned i = 0; i < 4096; i++) {
                struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
                ssize_t n = ops->recvmsg(ops->userdata, fd, &msg, MSG_DONTWAIT);
                if (n < 0 && n != -EINTR && n != -ENOBUFS)
                        return; /* EAGAIN: empty */
        }
}
