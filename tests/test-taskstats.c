/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Exit statuses of processes that are not our children, from the kernel's taskstats notifications. The
 * kernel tests need root and the initial network namespace (the kernel sends the notifications there
 * only); they SKIP with the reason elsewhere. Their oracle is waitpid() in the real parent of each test
 * process, a helper between the listener and the process. */

#include <criterion/criterion.h>
#include <errno.h>
#include <linux/acct.h>
#include <linux/taskstats.h>
#include <netlink/attr.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/socket.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmm/taskstats-internal.h"
#include "vmm/taskstats.h"

TestSuite(taskstats, .timeout = 60);
TestSuite(taskstats_parse, .timeout = 10);

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000U + (uint64_t) ts.tv_nsec / 1000U;
}

static TaskstatsListener *listener_or_skip(void) {
        TaskstatsListener *t = NULL;
        Error err = {};

        if (geteuid() != 0)
                cr_skip_test("needs root (taskstats listeners need CAP_NET_ADMIN)");
        uint64_t start = now_usec();
        int r = taskstats_listener_new(&t, &err);
        uint64_t took = now_usec() - start;
        if (r == -EOPNOTSUPP || r == -ENOENT)
                cr_skip_test("taskstats exit notifications are not available here: %s", error_message(&err));
        cr_assert_eq(r, 0, "taskstats_listener_new: %s: %s", strerror(-r), error_message(&err));
        cr_assert_not_null(t);
        cr_assert_geq(taskstats_listener_fd(t), 0);
        cr_log_info("taskstats_listener_new (with its probe) took %.3f ms", took / 1000.0);
        return t;
}

/* --- test processes ------------------------------------------------------------------------------------ */

typedef enum How {
        HOW_EXIT_3,
        HOW_WAIT_FOR_KILL,
        HOW_SEGV_NO_CORE,
        HOW_THREADS_WAIT_FOR_KILL,
        HOW_THREAD_EXITS_5, /* a non-leader thread calls _exit(5): exit_group */
        HOW_LEADER_FIRST_THEN_THREAD_7, /* the leader pthread_exit()s, then a thread calls _exit(7) */
} How;

#define N_THREADS 4

/* A process that is not the listener's child: the listener's child (the helper) forks it, reaps it and
 * reports its wait status. */
typedef struct Grandchild {
        pid_t helper;
        pid_t pid;
        int pidfd;
        int go; /* a byte here lets the process go on to its end */
        int report; /* the helper writes the pid, then the wait status */
} Grandchild;

static int go_fd = -1;
static How thread_how;
static pid_t leader_pid;

static bool leader_is_zombie(void) {
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int) leader_pid, (int) leader_pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        return p && p[1] == ' ' && p[2] == 'Z';
}

static void *thread_main(void *arg) {
        if (arg) { /* the thread that ends the process */
                char c;
                if (thread_how == HOW_THREAD_EXITS_5) {
                        (void) read(go_fd, &c, 1);
                        _exit(5); /* _exit, not exit: no atexit handlers (sanitizer reports) in this fork */
                }
                if (thread_how == HOW_LEADER_FIRST_THEN_THREAD_7) {
                        for (int i = 0; i < 10000; i++) {
                                if (leader_is_zombie())
                                        _exit(7);
                                usleep(1000);
                        }
                        _exit(8); /* the leader never went first: the test fails on the status */
                }
        }
        for (;;)
                pause();
        return NULL;
}

_noreturn_ static void grandchild_main(How how, int go) {
        char c;

        if (how >= HOW_THREADS_WAIT_FOR_KILL) {
                /* The threads exist before the test lets the process go. */
                go_fd = go;
                thread_how = how;
                leader_pid = getpid();
                for (int i = 0; i < N_THREADS; i++) {
                        pthread_t th;
                        if (pthread_create(&th, NULL, thread_main, i == N_THREADS - 1 ? &go_fd : NULL) != 0)
                                _exit(100);
                }
        }
        if (how != HOW_THREAD_EXITS_5)
                (void) read(go, &c, 1);

        switch (how) {
        case HOW_EXIT_3:
                _exit(3);
        case HOW_SEGV_NO_CORE: {
                struct rlimit rl = { 0, 0 };
                if (setrlimit(RLIMIT_CORE, &rl) < 0)
                        _exit(101);
                /* The default action, not the sanitizer's handler. */
                struct sigaction sa = { .sa_handler = SIG_DFL };
                sigaction(SIGSEGV, &sa, NULL);
                raise(SIGSEGV);
                _exit(102);
        }
        case HOW_LEADER_FIRST_THEN_THREAD_7:
                pthread_exit(NULL);
        default:
                for (;;)
                        pause();
        }
}

static Grandchild grandchild_spawn(How how) {
        int go[2], report[2];
        Grandchild g = { .pidfd = -1 };

        cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
        cr_assert_eq(pipe2(report, O_CLOEXEC), 0);
        g.helper = fork();
        cr_assert_geq(g.helper, 0);
        if (g.helper == 0) {
                close(go[1]);
                close(report[0]);
                pid_t pid = fork();
                if (pid < 0)
                        _exit(1);
                if (pid == 0)
                        grandchild_main(how, go[0]);
                int status = -1;
                if (write(report[1], &pid, sizeof(pid)) != sizeof(pid))
                        _exit(1);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
                if (write(report[1], &status, sizeof(status)) != sizeof(status))
                        _exit(1);
                _exit(0);
        }
        close(go[0]);
        close(report[1]);
        g.go = go[1];
        g.report = report[0];
        cr_assert_eq(read(g.report, &g.pid, sizeof(g.pid)), (ssize_t) sizeof(g.pid));
        /* It waits for the go byte, so it is alive and this pidfd is its own. */
        g.pidfd = pidfd_open(g.pid, 0);
        cr_assert_geq(g.pidfd, 0, "pidfd_open: %s", strerror(errno));
        /* Not our child: waitpid() has nothing to tell us about it. */
        cr_assert_eq(waitpid(g.pid, NULL, WNOHANG), -1);
        cr_assert_eq(errno, ECHILD);
        return g;
}

static void grandchild_go(Grandchild *g) {
        cr_assert_eq(write(g->go, "x", 1), 1);
}

static void wait_threads(const Grandchild *g, int n) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/status", (int) g->pid);
        for (int i = 0; i < 5000; i++) {
                char line[256];
                int threads = 0;
                FILE *f = fopen(path, "re");
                cr_assert_not_null(f);
                while (fgets(line, sizeof(line), f))
                        if (sscanf(line, "Threads: %d", &threads) == 1)
                                break;
                fclose(f);
                if (threads >= n)
                        return;
                usleep(1000);
        }
        cr_assert_fail("process %d never had %d threads", (int) g->pid, n);
}

/* Waits for the pidfd like the agent does and returns the wait status the real parent saw. */
static int grandchild_finish(Grandchild *g) {
        struct pollfd p = { .fd = g->pidfd, .events = POLLIN };
        int status, hs;

        cr_assert_eq(poll(&p, 1, 20000), 1, "process %d did not end", (int) g->pid);
        cr_assert_eq(read(g->report, &status, sizeof(status)), (ssize_t) sizeof(status));
        cr_assert_eq(waitpid(g->helper, &hs, 0), g->helper);
        cr_assert(WIFEXITED(hs) && WEXITSTATUS(hs) == 0);
        close(g->pidfd);
        close(g->go);
        close(g->report);
        return status;
}

/* What take() says about g, checked against the parent's wait status and against what the test expects. */
static void assert_exit(TaskstatsListener *t, Grandchild *g, bool signaled, int st, int wait_status) {
        TaskExit e = {};
        cr_assert_eq(taskstats_listener_take(t, g->pid, &e), 1, "no exit seen for %d", (int) g->pid);
        cr_assert_eq(e.pid, g->pid);
        cr_assert_eq(e.signaled, signaled, "pid %d: signaled %d, expected %d (wait status %#x)",
                     (int) g->pid, e.signaled, signaled, wait_status);
        cr_assert_eq(e.status, st, "pid %d: status %d, expected %d", (int) g->pid, e.status, st);
        cr_assert_not(e.core_dumped);
        /* The oracle: the real parent's waitpid(). */
        cr_assert_eq(e.signaled, (bool) WIFSIGNALED(wait_status));
        cr_assert_eq(e.status, WIFSIGNALED(wait_status) ? WTERMSIG(wait_status) : WEXITSTATUS(wait_status));
        cr_assert_eq(e.core_dumped, WIFSIGNALED(wait_status) && WCOREDUMP(wait_status));
        /* take() unwatched it: asking again finds nothing. */
        cr_assert_eq(taskstats_listener_take(t, g->pid, &e), 0);
}

/* --- kernel tests ----------------------------------------------------------------------------------- */

Test(taskstats, exit_codes_of_processes_that_are_not_children) {
        _cleanup_(taskstats_listener_freep) TaskstatsListener *t = listener_or_skip();

        Grandchild g3 = grandchild_spawn(HOW_EXIT_3);
        Grandchild gk = grandchild_spawn(HOW_WAIT_FOR_KILL);
        Grandchild gs = grandchild_spawn(HOW_SEGV_NO_CORE);
        cr_assert_eq(taskstats_listener_watch(t, g3.pid), 0);
        cr_assert_eq(taskstats_listener_watch(t, gk.pid), 0);
        cr_assert_eq(taskstats_listener_watch(t, gk.pid), 0, "watching twice is a no-op");
        cr_assert_eq(taskstats_listener_watch(t, gs.pid), 0);

        grandchild_go(&g3);
        grandchild_go(&gs);
        cr_assert_eq(pidfd_send_signal(gk.pidfd, SIGKILL, NULL, 0), 0);

        int w3 = grandchild_finish(&g3);
        int wk = grandchild_finish(&gk);
        int ws = grandchild_finish(&gs);
        assert_exit(t, &g3, false, 3, w3);
        assert_exit(t, &gk, true, SIGKILL, wk);
        assert_exit(t, &gs, true, SIGSEGV, ws);

        /* And a child of ours, exiting 0, read in the event loop's way: process(), then take(). */
        pid_t c = fork();
        cr_assert_geq(c, 0);
        if (c == 0)
                _exit(0);
        cr_assert_eq(taskstats_listener_watch(t, c), 0);
        int wc;
        cr_assert_eq(waitpid(c, &wc, 0), c);
        int r = taskstats_listener_process(t);
        cr_assert(r == 0 || r == -ENOBUFS, "%s", strerror(-r));
        TaskExit e;
        cr_assert_eq(taskstats_listener_take(t, c, &e), 1);
        cr_assert(!e.signaled && e.status == 0 && !e.core_dumped);
        cr_assert(WIFEXITED(wc) && WEXITSTATUS(wc) == 0);
}

Test(taskstats, status_of_multithreaded_processes) {
        _cleanup_(taskstats_listener_freep) TaskstatsListener *t = listener_or_skip();

        Grandchild gk = grandchild_spawn(HOW_THREADS_WAIT_FOR_KILL);
        Grandchild g5 = grandchild_spawn(HOW_THREAD_EXITS_5);
        Grandchild g7 = grandchild_spawn(HOW_LEADER_FIRST_THEN_THREAD_7);
        wait_threads(&gk, N_THREADS + 1);
        wait_threads(&g5, N_THREADS + 1);
        wait_threads(&g7, N_THREADS + 1);
        cr_assert_eq(taskstats_listener_watch(t, gk.pid), 0);
        cr_assert_eq(taskstats_listener_watch(t, g5.pid), 0);
        cr_assert_eq(taskstats_listener_watch(t, g7.pid), 0);

        cr_assert_eq(pidfd_send_signal(gk.pidfd, SIGKILL, NULL, 0), 0);
        grandchild_go(&g5);
        /* The leader's own record says exit 0 here; the process's status is the thread's 7. */
        grandchild_go(&g7);

        int wk = grandchild_finish(&gk);
        int w5 = grandchild_finish(&g5);
        int w7 = grandchild_finish(&g7);
        assert_exit(t, &gk, true, SIGKILL, wk);
        assert_exit(t, &g5, false, 5, w5);
        assert_exit(t, &g7, false, 7, w7);
}

/* What a child in a fresh network namespace got from taskstats_listener_new(). */
typedef struct NetnsResult {
        int unshare_errno;
        int r;
        uint64_t usec;
        char err[400];
} NetnsResult;

Test(taskstats, another_network_namespace_is_detected) {
        int p[2];
        NetnsResult res = {};

        if (geteuid() != 0)
                cr_skip_test("needs root to create a network namespace");
        cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
        pid_t c = fork();
        cr_assert_geq(c, 0);
        if (c == 0) {
                /* The test process itself stays in its namespace; only this child moves. */
                TaskstatsListener *t = NULL;
                if (unshare(CLONE_NEWNET) < 0)
                        res.unshare_errno = errno;
                else {
                        uint64_t start = now_usec();
                        Error err = {};
                        res.r = taskstats_listener_new(&t, &err);
                        snprintf(res.err, sizeof(res.err), "%s", error_message(&err));
                        res.usec = now_usec() - start;
                        t = taskstats_listener_free(t);
                }
                _exit(write(p[1], &res, sizeof(res)) == sizeof(res) ? 0 : 1);
        }
        close(p[1]);
        cr_assert_eq(read(p[0], &res, sizeof(res)), (ssize_t) sizeof(res));
        close(p[0]);
        int status;
        cr_assert_eq(waitpid(c, &status, 0), c);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        if (res.unshare_errno)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(res.unshare_errno));

        cr_log_info("in a fresh network namespace: %s after %.1f ms: %s", strerror(-res.r),
                    res.usec / 1000.0, res.err);
        cr_assert(res.r == -EOPNOTSUPP || res.r == -ENOENT, "got %d (%s): %s", res.r, strerror(-res.r),
                  res.err);
        if (res.r == -EOPNOTSUPP)
                cr_assert(strstr(res.err, "do not reach this network namespace"), "%s", res.err);
        cr_assert_neq(res.err[0], '\0');
        /* Bounded by the probe's timeout, not a hang. */
        cr_assert_lt(res.usec, 3 * TASKSTATS_PROBE_TIMEOUT_MS * UINT64_C(1000));
}

Test(taskstats, only_watched_pids_are_kept) {
        _cleanup_(taskstats_listener_freep) TaskstatsListener *t = listener_or_skip();
        TaskExit e;
        int r;

        /* Exits before anyone watches it: its record is read and dropped. */
        pid_t a = fork();
        cr_assert_geq(a, 0);
        if (a == 0)
                _exit(9);
        cr_assert_eq(waitpid(a, NULL, 0), a);
        r = taskstats_listener_process(t);
        cr_assert(r == 0 || r == -ENOBUFS, "%s", strerror(-r));
        cr_assert_eq(taskstats_listener_watch(t, a), 0);
        cr_assert_eq(taskstats_listener_take(t, a, &e), 0, "a record read while %d was unwatched was kept",
                     a);

        /* Watched, then unwatched before it exits. */
        int go[2];
        cr_assert_eq(pipe2(go, O_CLOEXEC), 0);
        pid_t b = fork();
        cr_assert_geq(b, 0);
        if (b == 0) {
                char c;
                close(go[1]);
                (void) read(go[0], &c, 1);
                _exit(4);
        }
        close(go[0]);
        cr_assert_eq(taskstats_listener_watch(t, b), 0);
        taskstats_listener_unwatch(t, b);
        taskstats_listener_unwatch(t, b); /* twice is fine */
        close(go[1]);
        cr_assert_eq(waitpid(b, NULL, 0), b);
        cr_assert_eq(taskstats_listener_take(t, b, &e), 0);

        /* Never watched, and nonsense. */
        cr_assert_eq(taskstats_listener_take(t, getpid(), &e), 0);
        cr_assert_eq(taskstats_listener_take(t, 0, &e), 0);
        cr_assert_eq(taskstats_listener_watch(t, 0), -EINVAL);
        cr_assert_eq(taskstats_listener_watch(t, -5), -EINVAL);
        taskstats_listener_unwatch(t, -5);
}

Test(taskstats, records_not_from_the_kernel_are_ignored) {
        _cleanup_(taskstats_listener_freep) TaskstatsListener *t = listener_or_skip();
        struct sockaddr_nl self, to = { .nl_family = AF_NETLINK };
        socklen_t len = sizeof(self);
        TaskstatsRecord rec;
        TaskExit e;

        cr_assert_eq(getsockname(taskstats_listener_fd(t), (struct sockaddr *) &self, &len), 0);
        pid_t victim = getpid();
        cr_assert_eq(taskstats_listener_watch(t, victim), 0);

        /* Any process can unicast to a netlink port. A well-formed notification of the TASKSTATS family
         * that says we were killed, sent from an ordinary socket: */
        struct nl_sock *s = nl_socket_alloc();
        cr_assert_not_null(s);
        cr_assert_eq(genl_connect(s), 0);
        int family = genl_ctrl_resolve(s, TASKSTATS_GENL_NAME);
        cr_assert_gt(family, 0);
        struct taskstats ts = { .version = TASKSTATS_VERSION,
                                .ac_exitcode = SIGKILL,
                                .ac_flag = AGROUP | AXSIG,
                                .ac_pid = (uint32_t) victim,
                                .ac_tgid = (uint32_t) victim };
        struct nl_msg *m = nlmsg_alloc();
        cr_assert_not_null(m);
        cr_assert_not_null(genlmsg_put(m, 0, 0, family, 0, 0, TASKSTATS_CMD_NEW, 1));
        struct nlattr *n = nla_nest_start(m, TASKSTATS_TYPE_AGGR_PID);
        cr_assert_eq(nla_put_u32(m, TASKSTATS_TYPE_PID, (uint32_t) victim), 0);
        cr_assert_eq(nla_put(m, TASKSTATS_TYPE_STATS, sizeof(ts), &ts), 0);
        nla_nest_end(m, n);
        /* The decoder itself accepts it: only its sender gives it away. */
        cr_assert_eq(taskstats_message_parse(nlmsg_hdr(m), &rec), 0);
        /* A blocking unicast between sockets succeeds once the datagram is queued at the listener. */
        to.nl_pid = self.nl_pid;
        struct nlmsghdr *h = nlmsg_hdr(m);
        cr_assert_eq(sendto(nl_socket_get_fd(s), h, h->nlmsg_len, 0, (struct sockaddr *) &to, sizeof(to)),
                     (ssize_t) h->nlmsg_len, "%s", strerror(errno));
        nlmsg_free(m);
        nl_socket_free(s);

        int r = taskstats_listener_process(t);
        cr_assert(r == 0 || r == -ENOBUFS, "%s", strerror(-r));
        cr_assert_eq(taskstats_listener_take(t, victim, &e), 0, "a forged record was believed");
}

Test(taskstats, overflow_is_reported_and_the_listener_recovers) {
        _cleanup_(taskstats_listener_freep) TaskstatsListener *t = listener_or_skip();
        int fd = taskstats_listener_fd(t);
        int small = 1, big = 4 * 1024 * 1024, r;
        TaskExit e;

        /* The kernel's minimum receive buffer holds a couple of notifications. */
        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
        for (int i = 0; i < 64; i++) {
                pid_t c = fork();
                cr_assert_geq(c, 0);
                if (c == 0)
                        _exit(0);
                cr_assert_eq(waitpid(c, NULL, 0), c);
        }
        cr_assert_eq(taskstats_listener_process(t), -ENOBUFS);

        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)), 0);
        /* Drained: the next call has nothing lost to report (unless the host overflowed us again in between,
         * which a 4 MiB buffer makes unlikely; a few tries). */
        for (int i = 0; i < 5 && (r = taskstats_listener_process(t)) == -ENOBUFS; i++)
                ;
        cr_assert_eq(r, 0);

        pid_t c = fork();
        cr_assert_geq(c, 0);
        if (c == 0)
                _exit(7);
        cr_assert_eq(taskstats_listener_watch(t, c), 0);
        cr_assert_eq(waitpid(c, NULL, 0), c);
        cr_assert_eq(taskstats_listener_take(t, c, &e), 1);
        cr_assert(!e.signaled && e.status == 7);
}

/* --- the decoder, with messages of other kernels --------------------------------------------------------
 */

/* A notification as the kernel builds it, with a stats struct of len bytes (version and fields from ts). */
static struct nl_msg *build(uint32_t pid, const void *stats, size_t len, uint32_t aggr_tgid) {
        struct nl_msg *m = nlmsg_alloc();
        cr_assert_not_null(m);
        cr_assert_not_null(genlmsg_put(m, 0, 0, 0x20, 0, 0, TASKSTATS_CMD_NEW, 1));
        struct nlattr *n = nla_nest_start(m, TASKSTATS_TYPE_AGGR_PID);
        cr_assert_eq(nla_put_u32(m, TASKSTATS_TYPE_PID, pid), 0);
        cr_assert_eq(nla_put(m, TASKSTATS_TYPE_NULL, 0, NULL), 0); /* the kernel's 8-byte alignment pad */
        cr_assert_eq(nla_put(m, TASKSTATS_TYPE_STATS, (int) len, stats), 0);
        nla_nest_end(m, n);
        if (aggr_tgid) {
                struct taskstats zero = { .version = TASKSTATS_VERSION };
                n = nla_nest_start(m, TASKSTATS_TYPE_AGGR_TGID);
                cr_assert_eq(nla_put_u32(m, TASKSTATS_TYPE_TGID, aggr_tgid), 0);
                cr_assert_eq(nla_put(m, TASKSTATS_TYPE_STATS, sizeof(zero), &zero), 0);
                nla_nest_end(m, n);
        }
        return m;
}

static int parse(struct nl_msg *m, TaskstatsRecord *rec) {
        int r = taskstats_message_parse(nlmsg_hdr(m), rec);
        nlmsg_free(m);
        return r;
}

Test(taskstats_parse, current_and_longer_structs) {
        TaskstatsRecord rec;
        /* A newer kernel's struct is longer than ours (6.18 sends version 16, 560 bytes): the tail is
         * ignored. */
        uint8_t longer[sizeof(struct taskstats) + 64] = {};
        struct taskstats ts = { .version = 16,
                                .ac_exitcode = 0x8b,
                                .ac_flag = AGROUP | ACORE | AXSIG,
                                .ac_pid = 1234,
                                .ac_tgid = 1234 };
        memcpy(longer, &ts, sizeof(ts));
        cr_assert_eq(parse(build(1234, longer, sizeof(longer), 0), &rec), 0);
        cr_assert_eq(rec.pid, 1234);
        cr_assert_eq(rec.tgid, 1234);
        cr_assert_eq(rec.exit_code, 0x8b);
        cr_assert_eq(rec.flag, AGROUP | ACORE | AXSIG);

        /* The last thread of a multi-threaded group: the TGID nest agrees with ac_tgid. */
        ts = (struct taskstats){
                .version = 13, .ac_exitcode = 0x500, .ac_flag = AGROUP, .ac_pid = 1240, .ac_tgid = 1234
        };
        cr_assert_eq(parse(build(1240, &ts, sizeof(ts), 1234), &rec), 0);
        cr_assert_eq(rec.pid, 1240);
        cr_assert_eq(rec.tgid, 1234);
        cr_assert_eq(rec.exit_code, 0x500);
        /* ...and a message where they disagree is not understood. */
        cr_assert_eq(parse(build(1240, &ts, sizeof(ts), 999), &rec), -EBADMSG);
}

Test(taskstats_parse, older_and_shorter_structs) {
        TaskstatsRecord rec;
        struct taskstats ts = {
                .version = 11, .ac_exitcode = 3 << 8, .ac_flag = AGROUP | AXSIG, .ac_pid = 77
        };

        /* Version 11 ends before ac_tgid; bit 0x20 meant nothing then. */
        size_t v11 = offsetof(struct taskstats, ac_tgid);
        cr_assert_eq(parse(build(77, &ts, v11, 0), &rec), 0);
        cr_assert_eq(rec.tgid, 0);
        cr_assert_eq(rec.flag, AXSIG);
        cr_assert_eq(rec.exit_code, 3 << 8);

        /* Version 1: up to cpu_run_virtual_total, no ac_pid to cross-check. */
        ts.version = 1;
        size_t v1 = offsetof(struct taskstats, ac_comm);
        cr_assert_eq(parse(build(77, &ts, v1, 0), &rec), 0);
        cr_assert_eq(rec.pid, 77);
        cr_assert_eq(rec.exit_code, 3 << 8);

        /* Too short to hold ac_flag, version 0, a record about another task, a stop status: not used. */
        cr_assert_eq(parse(build(77, &ts, offsetof(struct taskstats, ac_flag), 0), &rec), -EBADMSG);
        ts.version = 0;
        cr_assert_eq(parse(build(77, &ts, sizeof(ts), 0), &rec), -EBADMSG);
        ts.version = 13;
        cr_assert_eq(parse(build(78, &ts, sizeof(ts), 0), &rec), -EBADMSG);
        ts.ac_exitcode = 0x137f; /* WIFSTOPPED */
        cr_assert_eq(parse(build(77, &ts, sizeof(ts), 0), &rec), -EBADMSG);
}

Test(taskstats_parse, other_commands_and_missing_attributes) {
        TaskstatsRecord rec;
        struct nl_msg *m = nlmsg_alloc();
        cr_assert_not_null(genlmsg_put(m, 0, 0, 0x20, 0, 0, TASKSTATS_CMD_GET, 1));
        cr_assert_eq(parse(m, &rec), -ENOMSG);

        m = nlmsg_alloc();
        cr_assert_not_null(genlmsg_put(m, 0, 0, 0x20, 0, 0, TASKSTATS_CMD_NEW, 1));
        cr_assert_eq(parse(m, &rec), -EBADMSG, "no AGGR_PID");

        m = nlmsg_alloc();
        cr_assert_not_null(genlmsg_put(m, 0, 0, 0x20, 0, 0, TASKSTATS_CMD_NEW, 1));
        struct nlattr *n = nla_nest_start(m, TASKSTATS_TYPE_AGGR_PID);
        nla_put_u32(m, TASKSTATS_TYPE_PID, 5);
        nla_nest_end(m, n);
        cr_assert_eq(parse(m, &rec), -EBADMSG, "no STATS");
}
