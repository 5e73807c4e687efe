/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Hypervisor processes: spawning with a pidfd, and proving the identity of a process across an agent
 * restart. A PID alone names nothing for long: a process is (PID, start time from /proc/PID/stat,
 * boot id). The agent never signals a process whose identity it has not just checked. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/error.h"

typedef struct VmmProcess {
        pid_t pid;
        int pidfd;
        uint64_t start_time; /* clock ticks after boot, field 22 of /proc/PID/stat */
        uint8_t boot_id[16];
} VmmProcess;

/* Starts argv[0] (looked up in PATH when it has no slash) in a process group of its own, stdin from
 * /dev/null, stdout and stderr appended to log_path (created 0640), no other fds, default signal
 * handling. Returns only once the program is executing: a failed exec comes back as its -errno (and
 * err says "cannot execute X: cause"). */
int vmm_spawn(char *const argv[], const char *log_path, VmmProcess *ret, Error *e);

/* Called between fork and exec with the child's identity (pid, pidfd, start time, boot id): the child execs
 * only after it returned >= 0, and ends without running if the caller dies first (or the gate refuses it:
 * then vmm_spawn_gated() kills it and returns that error). The agent journals VM_STARTED here, so that no
 * hypervisor runs that the journal does not name. */
typedef int (*VmmGate)(const VmmProcess *p, void *userdata);
/* envp: the hypervisor's whole environment (NULL: this process's, for tests); argv[0] is looked up in this
 * process's PATH. released (may be NULL) is called right after the gate opened, while the child execs,
 * before the exec is confirmed: work that must be done before the start is reported but not before the exec
 * (the agent syncs the network's CREATED records there); its failure kills the child, which may have begun.
 */
int vmm_spawn_gated(char *const argv[], char *const envp[], const char *log_path, VmmGate gate,
                    VmmGate released, void *userdata, VmmProcess *ret, Error *e);

int process_start_time(pid_t pid, uint64_t *ret);
/* Whether the process is on its way out: a SIGKILL pending, or its exit begun (PF_EXITING), so that it is
 * gone in a moment though its pidfd is not readable yet. */
bool process_dying(pid_t pid);
int boot_id_get(uint8_t ret[16]);

/* A pidfd for the process the journal remembers, if it is still that process: -ESRCH when there is no
 * such PID any more (or the machine rebooted), -ESTALE when the PID now belongs to another process. */
int vmm_adopt(pid_t pid, uint64_t start_time, const uint8_t boot_id[16], int *ret_pidfd);

/* Sends sig through the pidfd; a process that is already gone counts as success. */
int vmm_signal(int pidfd, int sig);

/* Where argv[0] = name would be executed from: name itself when it contains a slash, else the first
 * executable regular file of that name in $PATH (a default PATH when unset). -ENOENT when there is none,
 * -EACCES when the named file is not executable. */
int vmm_find_binary(const char *name, char *ret, size_t size);

/* What proves a process is a VM's hypervisor (issue 13): it runs as `uid`, its executable is `binary` (a
 * path, compared after resolving symbolic links), and it holds a TUN fd attached to the TAP `tap`
 * (/proc/PID/fdinfo says "iff: NAME") or, when tap is NULL or it holds none, the listening unix socket
 * bound at `api_socket`. 1 when all of it holds, 0 when not, -errno when /proc cannot be read. A process
 * that merely names the VM's folder in its arguments proves nothing. */
int process_is_hypervisor_of(pid_t pid, uid_t uid, const char *binary, const char *tap,
                             const char *api_socket);

/* Calls cb for every process but this one, with its command line (the arguments joined by spaces, cut at
 * 16 KiB); processes that go away meanwhile are skipped. A negative return from cb stops the walk with it.
 * How the agent finds hypervisors whose arguments name its runtime folder. */
typedef int (*ProcessCallback)(pid_t pid, const char *cmdline, void *userdata);
int process_for_each(ProcessCallback cb, void *userdata);
