/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The netlink socket calls of rtnl.c and nft.c, behind a seam (like util/fsops.h for files), so tests can
 * make the kernel's answers fail at any request: refused (EEXIST, EBUSY, ENOMEM in the reply),
 * interrupted (EINTR), overrun (ENOBUFS: the request was carried out but its replies were dropped), or
 * silently lost (nothing ever comes back). Each op returns >= 0 on success and -errno on failure (never
 * -1). The default implementation calls the system directly.
 *
 * The kernel handles a netlink request inside sendmsg(): by the time it returns, every reply is queued
 * on our socket, or lost with ENOBUFS. So nlops_recv() waits only a short while for a reply that has not
 * come (a reply timeout means "lost", not "slow"). */

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef struct NlOps {
        ssize_t (*sendmsg)(void *userdata, int fd, const struct msghdr *msg, int flags);
        ssize_t (*recvmsg)(void *userdata, int fd, struct msghdr *msg, int flags);
        /* > 0: fd is readable; 0: nothing arrived within timeout_ms. */
        int (*poll)(void *userdata, int fd, int timeout_ms);
        void *userdata;
} NlOps;

extern const NlOps nlops_default;

/* How long a reply is waited for: not at all. The kernel carries out a request to rtnetlink or nfnetlink
 * (batches included) inside the sender's sendmsg() and queues every answer before that returns; the next
 * part of a dump is queued inside the recvmsg() that takes the previous one. So a reply that is not queued
 * when it is read for was dropped (the socket's buffer was full: recvmsg says ENOBUFS) and never comes:
 * the callers' lost-reply paths (send again, or read the outcome back from the tags) take over at once,
 * and the agent's event loop never waits on netlink. tests/test-dispatcher.c
 * (replies_are_queued_when_the_request_returns) checks that no read found its reply missing. */
#define NL_REPLY_TIMEOUT_MS 0

/* Sends buf (one or more netlink messages) to the kernel in one datagram; EINTR is retried. */
int nlops_send(const NlOps *ops, int fd, const void *buf, size_t len);
int nlops_sendiov(const NlOps *ops, int fd, const struct iovec *iov, size_t n_iov);

/* The next datagram from the kernel: its size, -ETIMEDOUT if nothing came within timeout_ms, -ENOBUFS if
 * the kernel had to drop messages for us (replies were lost), or another -errno. EINTR is retried. */
ssize_t nlops_recv(const NlOps *ops, int fd, void *buf, size_t size, int timeout_ms);

/* Reads and discards whatever is queued for us (the rest of a lost exchange), without waiting. */
void nlops_drain(const NlOps *ops, int fd, void *buf, size_t size);
