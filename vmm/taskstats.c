/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/acct.h>
#include <linux/taskstats.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/hashmap.h"
#include "util/macro.h"
#include "util/nlerr.h"
#include "vmm/taskstats-internal.h"
#include "vmm/taskstats.h"

/* A notification takes about 1.3 KiB of receive buffer (the skb around 560 bytes of stats on 6.18), and the
 * kernel doubles the size asked for its bookkeeping: room for some 6,000 exits while the agent is busy
 * elsewhere. A socket that fills up anyway loses notifications and says so with ENOBUFS. */
#define RCVBUF_SIZE (4 * 1024 * 1024)
#define ACK_TIMEOUT_MS 1000
/* Tries of the probe when the socket overflowed before its notification came. */
#define PROBE_TRIES 3
#define PROBE_EXIT_CODE 42

/* What was seen of one watched PID. */
typedef struct Watch {
        bool have_leader; /* the record of the thread-group leader itself (TASKSTATS_TYPE_PID == pid) */
        uint32_t leader_code;
        bool have_group; /* the record of the last thread of the group (AGROUP, ac_tgid == pid): final */
        uint32_t group_code;
} Watch;

struct TaskstatsListener {
        struct nl_sock *sock;
        int family;
        char cpumask[256]; /* the cpulist we registered for, sent again to unregister */
        bool registered;
        U64Map *watched; /* pid -> Watch */

        /* The request whose ACK we wait for (0: none) and what it said. */
        uint32_t ack_seq;
        bool ack_seen;
        int ack_error;
        char ack_extack[NL_EXTACK_MAX];

        uint8_t buf[64 * 1024];
};

static inline void nlmsg_freep(struct nl_msg **m) {
        if (*m)
                nlmsg_free(*m);
}

/* libnl's own error codes, as the -errno everything else here returns. */
static int nl_errno(int nle) {
        switch (nle < 0 ? -nle : nle) {
        case NLE_BAD_SOCK:
                return -EBADF;
        case NLE_AGAIN:
                return -EAGAIN;
        case NLE_NOMEM:
                return -ENOMEM;
        case NLE_EXIST:
                return -EEXIST;
        case NLE_INVAL:
                return -EINVAL;
        case NLE_RANGE:
                return -ERANGE;
        case NLE_MSGSIZE:
                return -EMSGSIZE;
        case NLE_OPNOTSUPP:
                return -EOPNOTSUPP;
        case NLE_AF_NOSUPPORT:
                return -EAFNOSUPPORT;
        case NLE_OBJ_NOTFOUND:
                return -ENOENT;
        case NLE_BUSY:
                return -EBUSY;
        case NLE_NOACCESS:
                return -EACCES;
        case NLE_PERM:
                return -EPERM;
        case NLE_NODEV:
                return -ENODEV;
        default:
                return -EIO;
        }
}

static uint64_t now_usec(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000U + (uint64_t) ts.tv_nsec / 1000U;
}

/* The CPUs that can ever exist, as the kernel's cpulist ("0-63"): a listener registered for fewer would
 * miss the exits of tasks that run on the others, including CPUs brought online later. */
static int possible_cpus(char *buf, size_t size) {
        _cleanup_close_ int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC);
        ssize_t n;

        if (fd < 0) {
                long ncpu = sysconf(_SC_NPROCESSORS_CONF);
                if (ncpu < 1)
                        return -ENODATA;
                snprintf(buf, size, "0-%ld", ncpu - 1);
                return 0;
        }
        n = read(fd, buf, size - 1);
        if (n < 0)
                return negative_errno();
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (buf[0] == '\0')
                return -ENODATA;
        return 0;
}

/* Field f of struct taskstats is in a record of len bytes. The struct only ever grows at its end, so the
 * offsets of this (older) header hold for the kernel's newer, longer struct. */
#define TASKSTATS_HAS(len, f) \
        ((len) >= offsetof(struct taskstats, f) + sizeof(((struct taskstats *) NULL)->f))

static int parse_stats(const struct nlattr *a, uint32_t pid, TaskstatsRecord *ret) {
        struct taskstats ts = {};
        size_t len = (size_t) nla_len(a);

        if (!TASKSTATS_HAS(len, ac_flag))
                return -EBADMSG;
        memcpy(&ts, nla_data(a), len < sizeof(ts) ? len : sizeof(ts));
        if (ts.version < 1)
                return -EBADMSG;
        /* A record that names another task than its attribute does is not one we understand. */
        if (TASKSTATS_HAS(len, ac_pid) && ts.ac_pid != pid)
                return -EBADMSG;
        /* An exit code is a wait status of an exit or a kill; anything else (a stop) cannot end a task. */
        int status = (int) ts.ac_exitcode;
        if (!WIFEXITED(status) && !WIFSIGNALED(status))
                return -EBADMSG;

        *ret = (TaskstatsRecord){
                .pid = pid,
                /* AGROUP and ac_tgid both came with version 12. */
                .tgid = ts.version >= 12 && TASKSTATS_HAS(len, ac_tgid) ? ts.ac_tgid : 0,
                .exit_code = ts.ac_exitcode,
                .flag = ts.version >= 12 ? ts.ac_flag : (uint8_t) (ts.ac_flag & ~AGROUP),
        };
        return 0;
}

/* A TASKSTATS_TYPE_AGGR_PID or _AGGR_TGID nest: the id (TASKSTATS_TYPE_PID or _TGID) and the stats. */
static int parse_aggr(struct nlattr *aggr, int id_type, uint32_t *ret_id, struct nlattr **ret_stats) {
        struct nlattr *a, *stats = NULL;
        uint32_t id = 0;
        int rem;

        nla_for_each_nested(a, aggr, rem) {
                if (nla_type(a) == id_type && nla_len(a) >= (int) sizeof(uint32_t))
                        id = nla_get_u32(a);
                else if (nla_type(a) == TASKSTATS_TYPE_STATS)
                        stats = a;
                /* TASKSTATS_TYPE_NULL pads the stats to 8 bytes; anything else is newer than us. */
        }
        if (id == 0 || !stats)
                return -EBADMSG;
        *ret_id = id;
        *ret_stats = stats;
        return 0;
}

int taskstats_message_parse(struct nlmsghdr *nlh, TaskstatsRecord *ret) {
        struct genlmsghdr *g;
        struct nlattr *a, *pid_stats = NULL;
        uint32_t pid = 0, aggr_tgid = 0;
        TaskstatsRecord rec;
        int rem, r;

        assert(nlh);
        assert(ret);

        if (!genlmsg_valid_hdr(nlh, 0))
                return -EBADMSG;
        g = nlmsg_data(nlh);
        if (g->cmd != TASKSTATS_CMD_NEW)
                return -ENOMSG;

        nla_for_each_attr(a, genlmsg_attrdata(g, 0), genlmsg_attrlen(g, 0), rem) {
                struct nlattr *unused;
                if (nla_type(a) == TASKSTATS_TYPE_AGGR_PID) {
                        r = parse_aggr(a, TASKSTATS_TYPE_PID, &pid, &pid_stats);
                        if (r < 0)
                                return r;
                } else if (nla_type(a) == TASKSTATS_TYPE_AGGR_TGID) {
                        /* Only for the last thread of a multi-threaded group; its stats are the sums of
                         * the group's delay counters, no exit code. */
                        r = parse_aggr(a, TASKSTATS_TYPE_TGID, &aggr_tgid, &unused);
                        if (r < 0)
                                return r;
                }
        }
        if (!pid_stats)
                return -EBADMSG;
        r = parse_stats(pid_stats, pid, &rec);
        if (r < 0)
                return r;
        if (aggr_tgid != 0) {
                if (rec.tgid != 0 && rec.tgid != aggr_tgid)
                        return -EBADMSG;
                rec.tgid = aggr_tgid;
        }
        *ret = rec;
        return 0;
}

static void handle_taskstats(TaskstatsListener *t, struct nlmsghdr *nlh) {
        TaskstatsRecord rec;

        if (taskstats_message_parse(nlh, &rec) < 0)
                return;

        /* Once the group's last record is in, the process is gone: a later record for the same PID belongs
         * to a process that reused it. Before that, a leader record may be followed by another one (a
         * non-leader thread that calls execve() kills the old leader and takes over its PID). */
        Watch *w = u64map_get(t->watched, rec.pid);
        if (w && !w->have_group) {
                w->have_leader = true;
                w->leader_code = rec.exit_code;
        }
        if ((rec.flag & AGROUP) && rec.tgid != 0) {
                Watch *gw = u64map_get(t->watched, rec.tgid);
                if (gw && !gw->have_group) {
                        gw->have_group = true;
                        gw->group_code = rec.exit_code;
                }
        }
}

static void handle_datagram(TaskstatsListener *t, size_t len) {
        struct nlmsghdr *nlh = (struct nlmsghdr *) t->buf;
        int rem = (int) len;

        for (; nlmsg_ok(nlh, rem); nlh = nlmsg_next(nlh, &rem)) {
                if (nlh->nlmsg_type == NLMSG_ERROR) {
                        if (t->ack_seq == 0 || nlh->nlmsg_seq != t->ack_seq ||
                            nlh->nlmsg_pid != nl_socket_get_local_port(t->sock))
                                continue;
                        t->ack_error = nl_error_parse(nlh, t->ack_extack);
                        t->ack_seen = true;
                        t->ack_seq = 0;
                } else if (nlh->nlmsg_type == t->family)
                        handle_taskstats(t, nlh);
        }
}

/* One datagram into t->buf: 1 and its length (0 for one that is dropped), 0 when none is queued, -ENOBUFS
 * when the socket overflowed since the last read, other -errno. */
static int read_datagram(TaskstatsListener *t, size_t *ret_len) {
        struct sockaddr_nl sa = {};
        struct iovec iov = { .iov_base = t->buf, .iov_len = sizeof(t->buf) };
        struct msghdr mh = { .msg_name = &sa, .msg_namelen = sizeof(sa), .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        do
                n = recvmsg(nl_socket_get_fd(t->sock), &mh, MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EAGAIN ? 0 : negative_errno();
        /* Anyone may send a datagram to our port; only the kernel's (port 0) tell the truth. A truncated one
         * cannot happen with this buffer and is dropped whole. */
        if (mh.msg_namelen != sizeof(sa) || sa.nl_pid != 0 || (mh.msg_flags & MSG_TRUNC))
                n = 0;
        *ret_len = (size_t) n;
        return 1;
}

int taskstats_listener_process(TaskstatsListener *t) {
        bool lost = false;
        size_t len;
        int r;

        assert(t);

        /* Until the queue is empty: take() relies on having read everything the kernel queued before the
         * pidfd woke. Exits would have to arrive faster than one read each to keep this going. */
        for (;;) {
                r = read_datagram(t, &len);
                if (r == -ENOBUFS) {
                        lost = true;
                        continue;
                }
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                handle_datagram(t, len);
        }
        return lost ? -ENOBUFS : 0;
}

/* Waits until there is something to read, at most until deadline. */
static int wait_readable(TaskstatsListener *t, uint64_t deadline) {
        uint64_t now = now_usec();
        if (now >= deadline)
                return -ETIMEDOUT;
        struct pollfd p = { .fd = nl_socket_get_fd(t->sock), .events = POLLIN };
        int timeout_ms = (int) ((deadline - now + 999) / 1000);
        if (poll(&p, 1, timeout_ms) < 0 && errno != EINTR)
                return negative_errno();
        return 0;
}

/* Sends TASKSTATS_CMD_GET with one cpumask attribute (register or unregister) and, if wait, returns the
 * kernel's answer. Notifications that come first are handled as they would be later. */
static int send_cpumask(TaskstatsListener *t, int attr, bool wait) {
        _cleanup_(nlmsg_freep) struct nl_msg *m = nlmsg_alloc();
        int r;

        if (!m)
                return -ENOMEM;
        if (!genlmsg_put(m, NL_AUTO_PORT, NL_AUTO_SEQ, t->family, 0, 0, TASKSTATS_CMD_GET,
                         TASKSTATS_GENL_VERSION))
                return -EMSGSIZE;
        r = nla_put_string(m, attr, t->cpumask);
        if (r < 0)
                return nl_errno(r);
        r = nl_send_auto(t->sock, m); /* asks for an ACK and fills in the sequence number */
        if (r < 0)
                return nl_errno(r);
        if (!wait)
                return 0;

        t->ack_seq = nlmsg_hdr(m)->nlmsg_seq;
        t->ack_seen = false;
        uint64_t deadline = now_usec() + ACK_TIMEOUT_MS * UINT64_C(1000);
        while (!t->ack_seen) {
                r = taskstats_listener_process(t);
                if (r < 0 && r != -ENOBUFS)
                        break;
                if (t->ack_seen)
                        break;
                r = wait_readable(t, deadline);
                if (r < 0)
                        break;
        }
        t->ack_seq = 0;
        return t->ack_seen ? t->ack_error : r;
}

static bool watch_seen(const TaskstatsListener *t, pid_t pid) {
        const Watch *w = u64map_get(t->watched, (uint64_t) pid);
        return w && (w->have_group || w->have_leader);
}

/* Forks a child that exits at once and waits for its notification: proof that they reach this socket. */
static int probe_once(TaskstatsListener *t, bool *ret_lost, Error *e) {
        bool lost = false;
        TaskExit te;
        pid_t pid;
        int r;

        pid = fork();
        if (pid < 0)
                return error_errno(e, negative_errno(), "cannot fork the taskstats probe: %m");
        if (pid == 0)
                _exit(PROBE_EXIT_CODE);
        /* Nothing is read from the socket before this, so the child's record cannot be dropped unwatched. */
        r = taskstats_listener_watch(t, pid);
        if (r >= 0) {
                uint64_t deadline = now_usec() + TASKSTATS_PROBE_TIMEOUT_MS * UINT64_C(1000);
                for (;;) {
                        r = taskstats_listener_process(t);
                        if (r == -ENOBUFS) {
                                lost = true;
                                r = 0;
                        } else if (r < 0)
                                break;
                        if (watch_seen(t, pid))
                                break;
                        r = wait_readable(t, deadline);
                        if (r < 0)
                                break;
                }
        }
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
        if (r < 0 && r != -ETIMEDOUT) {
                taskstats_listener_unwatch(t, pid);
                return error_errno(e, r, "cannot read taskstats notifications: %s", strerror(-r));
        }
        r = taskstats_listener_take(t, pid, &te);
        if (r < 0) {
                return error_errno(e, r, "cannot read taskstats notifications: %s", strerror(-r));
        }
        *ret_lost = lost;
        if (r == 0) {
                return error_set(
                        e, -EOPNOTSUPP, ERROR_INVALID,
                        "taskstats exit notifications do not reach this network namespace (the kernel sends "
                        "them to the initial one only): none came for a probe child within %d ms",
                        TASKSTATS_PROBE_TIMEOUT_MS);
        }
        if (te.signaled || te.status != PROBE_EXIT_CODE) {
                return error_set(e, -EBADMSG, ERROR_INVALID,
                                 "taskstats reported the probe child's exit wrongly (%s %d, not exit %d)",
                                 te.signaled ? "signal" : "exit", te.status, PROBE_EXIT_CODE);
        }
        return 0;
}

int taskstats_listener_new(TaskstatsListener **ret, Error *e) {
        _cleanup_(taskstats_listener_freep) TaskstatsListener *t = NULL;
        int fd, r;

        assert(ret);

        t = calloc(1, sizeof(*t));
        if (!t)
                return error_errno(e, -ENOMEM, "%s", strerror(ENOMEM));
        t->watched = u64map_new();
        t->sock = nl_socket_alloc();
        if (!t->watched || !t->sock)
                return error_errno(e, -ENOMEM, "%s", strerror(ENOMEM));
        r = genl_connect(t->sock);
        if (r < 0) {
                r = nl_errno(r);
                return error_errno(e, r, "cannot open a generic netlink socket: %s", strerror(-r));
        }
        fd = nl_socket_get_fd(t->sock);
        if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
                return error_errno(e, negative_errno(), "cannot set up the taskstats socket: %m");
        /* Beyond net.core.rmem_max only with CAP_NET_ADMIN; without, as much as rmem_max allows. */
        int size = RCVBUF_SIZE;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));

        r = genl_ctrl_resolve(t->sock, TASKSTATS_GENL_NAME);
        if (r < 0) {
                r = nl_errno(r);
                if (r == -ENOENT)
                        return error_errno(e, r,
                                           "the kernel has no generic netlink family " TASKSTATS_GENL_NAME
                                           " (built without CONFIG_TASKSTATS)");
                return error_errno(e, r,
                                   "cannot resolve the generic netlink family " TASKSTATS_GENL_NAME ": %s",
                                   strerror(-r));
        }
        t->family = r;

        r = possible_cpus(t->cpumask, sizeof(t->cpumask));
        if (r < 0) {
                return error_errno(e, r, "cannot read the possible CPUs: %s", strerror(-r));
        }
        /* Even a refused or unanswered registration is undone: unregistering an unknown port is harmless. */
        t->registered = true;
        r = send_cpumask(t, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, true);
        if (r == -EINVAL) {
                /* The cpulist came from the kernel itself, so this is its namespace check. */
                return error_set(e, -EOPNOTSUPP, ERROR_INVALID,
                                 "the kernel refused the taskstats listener: it accepts them only from "
                                 "the initial user and PID namespaces");
        }
        if (r == -EPERM) {
                return error_errno(e, r,
                                   "the kernel refused the taskstats listener: it needs CAP_NET_ADMIN in "
                                   "the initial user namespace");
        }
        if (r < 0) {
                return error_errno(e, r,
                                   "cannot register for taskstats exit notifications of CPUs %s: %s%s%s",
                                   t->cpumask, strerror(-r), t->ack_extack[0] ? ": " : "", t->ack_extack);
        }

        for (int i = 0;; i++) {
                bool lost = false; /* probe_once() leaves it unset when it fails early */
                r = probe_once(t, &lost, e);
                if (r != -EOPNOTSUPP || !lost || i + 1 >= PROBE_TRIES)
                        break;
        }
        if (r < 0)
                return r;

        *ret = TAKE_PTR(t);
        return 0;
}

TaskstatsListener *taskstats_listener_free(TaskstatsListener *t) {
        if (!t)
                return NULL;
        /* The kernel forgets a listener only when a notification to its port fails, and hands the port to
         * the next socket that binds it: unregister explicitly. It does so while we send. */
        if (t->registered)
                (void) send_cpumask(t, TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK, false);
        if (t->watched) {
                size_t i = 0;
                void *w;
                while (u64map_iterate(t->watched, &i, NULL, &w))
                        free(w);
                u64map_free(t->watched);
        }
        if (t->sock)
                nl_socket_free(t->sock);
        free(t);
        return NULL;
}

int taskstats_listener_fd(const TaskstatsListener *t) {
        assert(t);
        return nl_socket_get_fd(t->sock);
}

int taskstats_listener_watch(TaskstatsListener *t, pid_t pid) {
        _cleanup_free_ Watch *w = NULL;
        int r;

        assert(t);
        if (pid <= 0)
                return -EINVAL;
        if (u64map_get(t->watched, (uint64_t) pid))
                return 0;
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        r = u64map_put(t->watched, (uint64_t) pid, w);
        if (r < 0)
                return r;
        TAKE_PTR(w);
        return 0;
}

void taskstats_listener_unwatch(TaskstatsListener *t, pid_t pid) {
        assert(t);
        if (pid > 0)
                free(u64map_remove(t->watched, (uint64_t) pid));
}

/* ac_exitcode is the task's exit_code, a wait status: what we trust. The flags are not: AXSIG is set on
 * every thread that went through the fatal-signal path, which includes the threads that another thread's
 * exit_group() killed, and ACORE on a thread that began a core dump whether or not one was written. The
 * 0x80 bit of the exit code is set only once a dump was written. */
static void decode_exit(pid_t pid, uint32_t code, TaskExit *ret) {
        int status = (int) code;
        *ret = (TaskExit){
                .pid = pid,
                .signaled = WIFSIGNALED(status),
                .status = WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                .core_dumped = WIFSIGNALED(status) && WCOREDUMP(status),
        };
}

int taskstats_listener_take(TaskstatsListener *t, pid_t pid, TaskExit *ret) {
        _cleanup_free_ Watch *w = NULL;
        int r;

        assert(t);
        assert(ret);

        r = taskstats_listener_process(t);
        if (pid > 0)
                w = u64map_remove(t->watched, (uint64_t) pid);
        if (r < 0 && r != -ENOBUFS)
                return r;
        if (!w || !(w->have_group || w->have_leader))
                return 0;
        decode_exit(pid, w->have_group ? w->group_code : w->leader_code, ret);
        return 1;
}
