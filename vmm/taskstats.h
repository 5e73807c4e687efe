/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The exit status of a process that is not our child: an adopted hypervisor, reparented away from the
 * agent when the agent restarted, so waitid() cannot tell how it ended. The kernel's taskstats generic
 * netlink family sends a record for every task that exits to the listeners registered for the CPU it ran
 * on; this module listens on all CPUs and keeps the records of the PIDs it is told to watch.
 *
 * Where the notifications cannot reach us, the caller records "exit status unknown": the kernel sends
 * them only to sockets in the initial network namespace and accepts listeners only from the initial user
 * and PID namespaces, so inside a container the family resolves and registration may even succeed, yet
 * nothing ever arrives. taskstats_listener_new() therefore proves delivery with a probe child before it
 * returns a listener. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/error.h"
#include "util/macro.h"

typedef struct TaskstatsListener TaskstatsListener;

/* How long taskstats_listener_new() waits for the probe child's notification. */
#define TASKSTATS_PROBE_TIMEOUT_MS 500

/* Opens a NETLINK_GENERIC socket (non-blocking, close-on-exec, a 4 MiB receive buffer), resolves the
 * TASKSTATS family and registers for the exit notifications of all possible CPUs. Then it forks a child
 * that _exit(42)s, reaps it, and waits up to TASKSTATS_PROBE_TIMEOUT_MS for its notification.
 *
 * -ENOENT: the family does not exist (a kernel without CONFIG_TASKSTATS).
 * -EOPNOTSUPP: the kernel refused the listener, or the probe's notification never came (another network
 *  namespace); *e names the cause. -EPERM: no CAP_NET_ADMIN. Other -errno on system errors.
 *
 * The probe child is reaped with waitpid() on its own PID: call this before installing a reaper that
 * collects any child (waitpid(-1, ...)). */
int taskstats_listener_new(TaskstatsListener **ret, Error *e);
/* Unregisters and closes. NULL is fine; returns NULL. */
TaskstatsListener *taskstats_listener_free(TaskstatsListener *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(TaskstatsListener *, taskstats_listener_free);

/* Readable when notifications are pending: call taskstats_listener_process() then (an sd-event io
 * source, EPOLLIN). */
int taskstats_listener_fd(const TaskstatsListener *t);

/* Only the notifications of watched PIDs are kept; every other exit on the host is dropped as it is read.
 * Watch while the process is alive (after adopting it). Watching a PID twice is a no-op. -EINVAL for
 * pid <= 0, -ENOMEM. */
int taskstats_listener_watch(TaskstatsListener *t, pid_t pid);
/* Forgets pid and what was seen of it. An unwatched PID is fine. */
void taskstats_listener_unwatch(TaskstatsListener *t, pid_t pid);

/* Reads every pending notification without blocking and keeps the exits of watched PIDs. -ENOBUFS when
 * the socket overflowed since the last call (notifications were lost; everything still queued has been
 * read, and the listener stays usable); other -errno when reading fails. */
int taskstats_listener_process(TaskstatsListener *t);

typedef struct TaskExit {
        pid_t pid;
        bool signaled; /* killed by a signal, rather than exited */
        int status; /* the exit code (0..255), or the number of the signal */
        bool core_dumped; /* a core was written (only when signaled) */
} TaskExit;

/* Call after the pidfd of a watched PID became readable: reads what is pending first (the kernel queues
 * the last notification of a process before its pidfd wakes), then returns 1 and fills *ret if the exit of
 * pid was seen, 0 if not (lost in an overflow, or pid was not watched). pid is unwatched either way. A
 * failure to read is returned as -errno (pid unwatched too).
 *
 * Which record tells the status: the one the last exiting thread of the thread group sends (flag AGROUP,
 * with ac_tgid == pid). Its exit code is what waitpid() would report whenever the process ended with
 * exit_group() or a fatal signal, even when the thread-group leader had exited earlier on its own
 * (pthread_exit() in main()). Kernels older than taskstats version 12 have neither AGROUP nor ac_tgid;
 * there the leader's own record (TASKSTATS_TYPE_PID == pid) is used. The exit code is decoded like a wait
 * status; the AXSIG and ACORE flags are not trusted (see vmm/taskstats.c). */
int taskstats_listener_take(TaskstatsListener *t, pid_t pid, TaskExit *ret);
