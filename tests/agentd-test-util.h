/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Whole agents for tests: chvm-agentd started as a child process with a private config, state and runtime
 * folder (in the test's own network namespace, which the caller made), ready when it sends READY=1 on a
 * notify socket of ours; chvmctl run against its socket with stdout, stderr and exit status captured. */

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct TestAgent {
        char dir[64]; /* everything of this agent lives here */
        char config[128], state_dir[128], runtime_dir[128], socket[128], log[128];
        pid_t pid;
        int notify_fd;
        char notify_path[128];
        char notified[8192]; /* every notify message received so far, newline-separated */
        int exit_status; /* once it exited on its own (pid then -1) */
} TestAgent;

/* Makes the folder and writes a config: fake-vmm as cloud-hypervisor, the build's backends, tcg, plus the
 * `extra` lines (a section per line group, e.g. "[local]\nsubnet = 10.9.0.0/24\n"; may be NULL). */
void test_agent_init(TestAgent *a, const char *extra);
/* Starts the agent (extra environment "K=V" strings, NULL-terminated, may be NULL) and waits for READY=1
 * (fails the test after 10 s, showing the agent's log). */
void test_agent_start(TestAgent *a, char *const *env);
/* Like test_agent_start(), but an agent that exits before READY=1 is not a failure: false then, and its
 * exit status is kept for test_agent_wait_exit(). */
bool test_agent_try_start(TestAgent *a, char *const *env);
/* Waits up to timeout_ms for the agent to exit (then SIGKILLs it) and returns its wait status. */
int test_agent_wait_exit(TestAgent *a, int timeout_ms);
/* Starts it and returns its exit status (for agents that must refuse to start); its stderr in *ret_log. */
int test_agent_run_to_exit(TestAgent *a, char *const *env, char **ret_log);
/* Reads notify messages for up to timeout_ms or until `want` has been seen; true if seen. */
bool test_agent_wait_notify(TestAgent *a, const char *want, int timeout_ms);
/* Sends sig and waits for the agent to exit; returns its wait status. */
int test_agent_signal_wait(TestAgent *a, int sig);
/* SIGKILLs every process whose command line names this agent's folder (the hypervisors it started). */
unsigned test_agent_kill_hypervisors(const TestAgent *a);
/* Kills the agent and its hypervisors, removes the folder. */
void test_agent_cleanup(TestAgent *a);
char *test_agent_log(const TestAgent *a);

/* Runs `chvmctl --socket SOCK ARGS` (ARGS through the shell, so quote as for sh). Returns the exit code;
 * stdout and stderr (malloc'ed) in *ret_out / *ret_err when given. */
__attribute__((format(printf, 4, 5))) int ctl(const TestAgent *a, char **ret_out, char **ret_err,
                                              const char *fmt, ...);

/* Waits (up to 10 s) until VM `name`'s hypervisor accepts on its API socket: fake-vmm listens last, once
 * its signal handlers and TAP are set up, so a stop sent after this reaches its power button (before, the
 * agent cannot connect and goes on with SIGTERM at once). */
void test_agent_wait_vm_ready(const TestAgent *a, const char *name);

/* unshare()s a network namespace for this test process (the agents it starts inherit it), or skips the test
 * with the reason: not root, no namespaces, no /dev/net/tun. */
void test_enter_private_netns(void);

/* The build's programs. */
const char *test_build_dir(void);
