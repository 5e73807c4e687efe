/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* What the benchmarks that run the whole daemon share (bench/vmm, bench/gc): chvm-agentd of this build in
 * a scratch folder, its log and notify messages read by a thread, processes started and reaped, the agent's
 * memory and files, the control API over sd-bus, and the ip/nft command-line tools as an oracle.
 *
 * Benchmarks are programs, not tests: errors are -errno and a line on stderr, the figures go to stdout. */

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "util/macro.h"

#ifndef BUILD_DIR
#error "BUILD_DIR must name the build tree (chvm-agentd, chvmctl, backends/, tests/fake-vmm)"
#endif

#define AGENT_OBJECT "/org/chvm/agent"
#define AGENT_INTERFACE "org.chvm.Agent1"
#define CALL_TIMEOUT_USEC (UINT64_C(120) * 1000000)

/* Set by the signal handler bench_catch_signals() installs (SIGINT, SIGTERM, SIGHUP; no SA_RESTART, so
 * waits end with EINTR). */
extern volatile sig_atomic_t interrupted;
void bench_catch_signals(void);

/* "bench/vmm": what say() puts in front of its lines. */
extern const char *bench_name;

double now(void);
_printf_(1, 2) void say(const char *fmt, ...);
/* Says what failed and returns r. */
int bench_error(int r, const char *what);

/* --- figures ------------------------------------------------------------------------------------------ */

typedef struct Stats {
        size_t n;
        double min, p50, p99, max, mean;
} Stats;

/* Nearest-rank percentiles: p99 of 100 samples is the 99th smallest. */
Stats stats_of(const double *v, size_t n);

/* --- the agent's log and notify messages, read by a thread of their own ------------------------------- */

/* The agent must never block on either: its stderr is a pipe and sd_notify() a blocking datagram send. */
typedef struct Monitor {
        pthread_t thread;
        bool started;
        int notify_fd; /* bound to NOTIFY_SOCKET */
        int log_rd, log_wr; /* the agent's stdout and stderr */
        int quit[2];
        FILE *log; /* everything the agents said, with times */
        double t0;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        /* Since monitor_reset(), in now() seconds; 0: not yet. */
        unsigned n_ready;
        double t_ready, t_taskstats, t_adopted;
        char adopted[256];
        char error[512];
} Monitor;

int monitor_start(Monitor *m, const char *notify_path, const char *log_path);
void monitor_stop(Monitor *m);
/* Forgets what the previous agent said (call before starting the next one); returns the READY count to wait
 * past. */
unsigned monitor_reset(Monitor *m);
bool monitor_ready_since(Monitor *m, unsigned n_before, double *ret_t);

/* --- processes ---------------------------------------------------------------------------------------- */

/* argv[0] (looked up in PATH when it has no slash) with stdin from /dev/null, stdout and stderr into out_fd
 * (or /dev/null), an empty signal mask and default signal dispositions. */
int spawn(char *const argv[], char *const envp[], int out_fd, pid_t *ret_pid);
int wait_pid(pid_t pid, int *ret_status);
/* Runs a command to its end; its output (stdout + stderr) in *ret_out when given. Returns the exit code. */
int run(char *const argv[], char **ret_out);
/* The same with `input` on its stdin (a pipe; for nft -f -, ip -batch -, iptables-restore). */
int run_input(char *const argv[], const char *input, size_t input_len, char **ret_out);
int write_file(const char *path, const char *content);
void read_loadavg(char ret[64]);
/* Whether the process is one we started: its command line names our folder (a PID alone is never trusted).
 */
bool is_ours(pid_t pid, const char *dir);

typedef struct ProcInfo {
        long rss_kib, hwm_kib;
        size_t fds;
        double cpu; /* user + system seconds */
        long nofile; /* soft RLIMIT_NOFILE; -1: unknown */
} ProcInfo;

ProcInfo proc_info(pid_t pid);

/* --- the daemon --------------------------------------------------------------------------------------- */

typedef struct BenchAgent {
        char dir[128], config[192], state_dir[192], runtime_dir[192], socket[192], notify[192], log[192],
                kernel[192];
        char **env; /* ours without what would tie the agent to a service manager, plus NOTIFY_SOCKET */
        Monitor mon;
        pid_t pid;
} BenchAgent;

/* A scratch folder $TMPDIR/chvm-bench-<name>-XXXXXX (default /tmp) with the agent's config (`backends`,
 * tests/fake-vmm as cloud-hypervisor, then `sections`, e.g. "[local]\nsubnet = ...\n"), a file for
 * fake-vmm's --kernel, the agent's environment, and the monitor thread. */
int bench_agent_setup(BenchAgent *ag, const char *name, const char *backends, const char *sections);
int agent_spawn(BenchAgent *ag);
int agent_wait_exit(BenchAgent *ag, double timeout, int *ret_status);
/* Waits for READY=1 past n_before (monitor_reset()'s count) of the agent spawned at t0; its time in
 * *ret_t. Says why when the agent exits or takes more than 120 s. */
int agent_wait_ready(BenchAgent *ag, unsigned n_before, double t0, double *ret_t);
/* monitor_reset() + agent_spawn() + agent_wait_ready(); the time from the spawn to READY=1. */
int agent_start(BenchAgent *ag, double *ret_ready);
/* SIGTERM, and SIGKILL when it has not exited 30 s later. */
void agent_stop(BenchAgent *ag);
/* After agent_stop(): ends every process whose command line names our folder (hypervisors outlive their
 * agent on purpose), each by its PID, reaps our children, stops the monitor and removes the folder unless
 * keep. Returns how many it ended. */
size_t bench_agent_cleanup(BenchAgent *ag, bool keep);
/* The end of the agents' log on stderr, after a failure. */
void bench_agent_show_log(BenchAgent *ag, bool keep);

/* --- control API -------------------------------------------------------------------------------------- */

int bus_open(const char *socket, sd_bus **ret);
/* Says what failed (and, on a timeout, where the agent sleeps); returns r, or -EIO. */
int call_failed(const char *what, const char *vm, int r, const sd_bus_error *e);

typedef struct BusPort {
        uint16_t host, guest;
} BusPort;

/* CreateVM (1 CPU, the scratch kernel) with tcp forwards. */
int bus_create(sd_bus *bus, const char *kernel, const char *name, const char *backend, const BusPort *ports,
               size_t n_ports, uint64_t *ret_id);
/* The same + StartVM, each timed. */
int bus_create_start(sd_bus *bus, const char *kernel, const char *name, const char *backend,
                     const BusPort *ports, size_t n_ports, uint64_t *ret_id, double *ret_create,
                     double *ret_start);

/* Valid during the callback only. */
typedef struct BusVm {
        const char *name, *state, *tap, *ip;
        uint64_t id;
        uint32_t pid;
} BusVm;
typedef int (*BusVmCallback)(const BusVm *vm, void *userdata);

/* ListVMs; every VM to cb (may be NULL), the counts by state in the ret_* that are not NULL. */
int bus_list(sd_bus *bus, BusVmCallback cb, void *userdata, size_t *ret_running, size_t *ret_crashed,
             size_t *ret_total);

/* --- the command-line tools as oracle ----------------------------------------------------------------- */

typedef struct Oracle {
        char **keys; /* link names and nftables comments, sorted */
        size_t n, size;
} Oracle;

/* `ip -o link show` (names) and `nft list ruleset` (every comment). */
int oracle_take(Oracle *o);
bool oracle_has(const Oracle *o, const char *key);
void oracle_free(Oracle *o);
