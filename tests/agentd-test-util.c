/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/agentd-test-util.h"
#include "tests/shell-oracle.h"
#include "vmm/process.h"

const char *test_build_dir(void) {
        return BUILD_DIR;
}

static void write_file(const char *path, const char *content) {
        FILE *f = fopen(path, "we");
        cr_assert(f, "%s: %s", path, strerror(errno));
        fputs(content, f);
        fclose(f);
}

void test_agent_init(TestAgent *a, const char *extra) {
        char conf[4096];

        *a = (TestAgent){ .pid = -1, .notify_fd = -1 };
        snprintf(a->dir, sizeof(a->dir), "/tmp/chvm-agentd-XXXXXX");
        cr_assert(mkdtemp(a->dir), "mkdtemp: %s", strerror(errno));
        snprintf(a->config, sizeof(a->config), "%s/agent.conf", a->dir);
        snprintf(a->state_dir, sizeof(a->state_dir), "%s/state", a->dir);
        snprintf(a->runtime_dir, sizeof(a->runtime_dir), "%s/run", a->dir);
        snprintf(a->socket, sizeof(a->socket), "%s/run/agent.sock", a->dir);
        snprintf(a->log, sizeof(a->log), "%s/agent.log", a->dir);
        snprintf(a->notify_path, sizeof(a->notify_path), "%s/notify.sock", a->dir);
        snprintf(
                conf, sizeof(conf),
                "[agent]\nstate_dir = %s\nruntime_dir = %s\nbackend_dir = %s/backends\n"
                "[vmm]\nhypervisor = cloud-hypervisor\nbinary = %s/tests/fake-vmm\nstop_timeout = 2\naccel = tcg\n"
                "pass_environment = FAKE_VMM_*\n%s",
                a->state_dir, a->runtime_dir, BUILD_DIR, BUILD_DIR, extra ? extra : "");
        write_file(a->config, conf);
}

static void open_notify(TestAgent *a) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (a->notify_fd >= 0)
                close(a->notify_fd);
        (void) unlink(a->notify_path);
        a->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(a->notify_fd, 0);
        cr_assert_lt(strlen(a->notify_path), sizeof(sa.sun_path));
        memcpy(sa.sun_path, a->notify_path, strlen(a->notify_path) + 1);
        cr_assert_eq(bind(a->notify_fd, (struct sockaddr *) &sa, sizeof(sa)), 0, "bind %s: %s",
                     a->notify_path, strerror(errno));
        a->notified[0] = '\0';
}

static pid_t spawn(TestAgent *a, char *const *env) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                int fd = open(a->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0)
                        _exit(126);
                dup2(fd, STDERR_FILENO);
                dup2(fd, STDOUT_FILENO);
                /* An agent outlives no test, even one that crashed or timed out before its cleanup. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                /* The test blocks SIGCHLD for sd-event; the agent must start with a clean mask. */
                sigset_t ss;
                sigemptyset(&ss);
                sigprocmask(SIG_SETMASK, &ss, NULL);
                setenv("NOTIFY_SOCKET", a->notify_path, 1);
                unsetenv("JOURNAL_STREAM");
                for (char *const *e = env; e && *e; e++)
                        putenv(*e);
                char bin[256];
                snprintf(bin, sizeof(bin), "%s/chvm-agentd", BUILD_DIR);
                const char *target = getenv("CHVM_TEST_LOG_TARGET");
                const char *caps = getenv("CHVM_TEST_CAPS");
                if (caps) {
                        /* Only these capabilities in the bounding set: what the agent (and its hypervisors)
                         * can ever have, as with the unit's CapabilityBoundingSet=. */
                        char bs[256];
                        snprintf(bs, sizeof(bs), "--bounding-set=-all%s%s", caps[0] ? "," : "", caps);
                        execlp("setpriv", "setpriv", bs, "--inh-caps=-all", "--", bin, "--config", a->config,
                               "--log-target", target ? target : "stderr", (char *) NULL);
                        _exit(127);
                }
                execl(bin, bin, "--config", a->config, "--log-target", target ? target : "stderr",
                      (char *) NULL);
                _exit(127);
        }
        return pid;
}

bool test_agent_wait_notify(TestAgent *a, const char *want, int timeout_ms) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if (strstr(a->notified, want))
                        return true;
                clock_gettime(CLOCK_MONOTONIC, &t);
                long left =
                        timeout_ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
                if (left <= 0)
                        return false;
                struct pollfd p = { .fd = a->notify_fd, .events = POLLIN };
                if (poll(&p, 1, (int) (left < 100 ? left : 100)) > 0) {
                        char buf[1024];
                        ssize_t n = recv(a->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                        if (n > 0) {
                                buf[n] = '\0';
                                size_t have = strlen(a->notified);
                                snprintf(a->notified + have, sizeof(a->notified) - have, "%s\n", buf);
                        }
                }
                if (a->pid > 0 && waitpid(a->pid, &a->exit_status, WNOHANG) == a->pid) {
                        a->pid = -1; /* died before saying it */
                        return strstr(a->notified, want) != NULL;
                }
        }
}

char *test_agent_log(const TestAgent *a) {
        return sh("cat %s 2>/dev/null", a->log);
}

void test_agent_start(TestAgent *a, char *const *env) {
        open_notify(a);
        a->pid = spawn(a, env);
        if (!test_agent_wait_notify(a, "READY=1", 10000)) {
                char *log = sh(
                        "cp %s /tmp/chvm-unready-agent.log; grep -n 'refusing\\|error\\|Sanitizer' %s | tail -n 10;"
                        " tail -n 20 %s 2>/dev/null",
                        a->log, a->log, a->log);
                cr_assert_fail("chvm-agentd did not become ready (%s, status %d); the end of its log:\n%s",
                               a->pid > 0 ? "still running" : "exited", a->exit_status, log);
        }
}

bool test_agent_try_start(TestAgent *a, char *const *env) {
        open_notify(a);
        a->exit_status = -1;
        a->pid = spawn(a, env);
        return test_agent_wait_notify(a, "READY=1", 10000) && a->pid > 0;
}

int test_agent_wait_exit(TestAgent *a, int timeout_ms) {
        if (a->pid <= 0)
                return a->exit_status;
        for (int waited = 0; waited < timeout_ms; waited += 10) {
                int status;
                if (waitpid(a->pid, &status, WNOHANG) == a->pid) {
                        a->pid = -1;
                        a->exit_status = status;
                        return status;
                }
                usleep(10000);
        }
        int status = test_agent_signal_wait(a, SIGKILL);
        a->exit_status = status;
        return status;
}

int test_agent_run_to_exit(TestAgent *a, char *const *env, char **ret_log) {
        int status;
        open_notify(a);
        pid_t pid = spawn(a, env);
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        if (ret_log)
                *ret_log = test_agent_log(a);
        return status;
}

int test_agent_signal_wait(TestAgent *a, int sig) {
        int status = -1;
        if (a->pid <= 0)
                return -1;
        cr_assert_eq(kill(a->pid, sig), 0);
        cr_assert_eq(waitpid(a->pid, &status, 0), a->pid);
        a->pid = -1;
        return status;
}

void test_agent_cleanup(TestAgent *a) {
        int status = 0;
        bool stopped = false;
        if (!a->dir[0])
                return; /* never set up (a static TestAgent is all zeros) */
        if (a->pid > 0) {
                /* A clean stop, so that the sanitizers' exit checks (leaks) run in the agent too. */
                kill(a->pid, SIGTERM);
                status = test_agent_wait_exit(a, 10000);
                stopped = true;
        }
        if (a->notify_fd >= 0)
                close(a->notify_fd);
        a->notify_fd = -1;
        test_agent_kill_hypervisors(a);
        char *log = sh(
                "grep -E -A20 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' %s 2>/dev/null | head -n 60",
                a->log);
        free(sh("rm -rf %s", a->dir));
        a->dir[0] = '\0';
        cr_assert_str_empty(log, "the agent's log has a sanitizer report:\n%s", log);
        free(log);
        cr_assert(!stopped || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
                  "the agent did not exit cleanly on SIGTERM (wait status %d)", status);
}

/* Hypervisors an agent left running (they survive it on purpose) are recognised by our private folder in
 * their command line (--api-socket, --serial), and ended by their PID. */
typedef struct KillCtx {
        char needle[80];
        unsigned n;
} KillCtx;

static int kill_ours(pid_t pid, const char *cmdline, void *userdata) {
        KillCtx *c = userdata;
        if (pid > 1 && strstr(cmdline, c->needle) && kill(pid, SIGKILL) == 0)
                c->n++;
        return 0;
}

unsigned test_agent_kill_hypervisors(const TestAgent *a) {
        KillCtx c = {};
        snprintf(c.needle, sizeof(c.needle), "%s/", a->dir);
        cr_assert_geq(process_for_each(kill_ours, &c), 0);
        return c.n;
}

void test_enter_private_netns(void) {
        if (geteuid() != 0)
                cr_skip_test("needs root to create a network namespace (the test runs in its own)");
        if (unshare(CLONE_NEWNET) < 0)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
        if (access("/dev/net/tun", R_OK | W_OK) < 0)
                cr_skip_test("/dev/net/tun is not usable: %s", strerror(errno));
        /* The agent's notify messages queue up while a test is busy elsewhere (this namespace's setting). */
        free(sh("ip link set lo up; sysctl -qw net.unix.max_dgram_qlen=4096"));
}

static char *slurp(const char *path) {
        return sh("cat %s 2>/dev/null", path);
}

int ctl(const TestAgent *a, char **ret_out, char **ret_err, const char *fmt, ...) {
        char args[3000], cmd[4096], out[200], err[200];
        static unsigned seq;
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(args, sizeof(args), fmt, ap);
        va_end(ap);
        snprintf(out, sizeof(out), "%s/ctl-%u.out", a->dir, seq);
        snprintf(err, sizeof(err), "%s/ctl-%u.err", a->dir, seq++);
        snprintf(cmd, sizeof(cmd), "%s/chvmctl --socket %s %s >%s 2>%s", BUILD_DIR, a->socket, args, out,
                 err);
        int status = system(cmd);
        if (ret_out)
                *ret_out = slurp(out);
        if (ret_err)
                *ret_err = slurp(err);
        unlink(out);
        unlink(err);
        cr_assert(WIFEXITED(status), "chvmctl %s did not exit normally", args);
        return WEXITSTATUS(status);
}

void test_agent_wait_vm_ready(const TestAgent *a, const char *name) {
        char *id = sh("%s/chvmctl --socket %s --json inspect %s | jq -r '.id'", test_build_dir(), a->socket,
                      name);
        id[strcspn(id, "\n")] = '\0';
        cr_assert(strlen(id) == 16 && strspn(id, "0123456789abcdef") == 16, "VM %s has no id: %s", name, id);
        char path[256];
        snprintf(path, sizeof(path), "%s/vms/%s/api.sock", a->runtime_dir, id);
        free(id);
        cr_assert(wait_unix_accepting(path, 10.0), "the hypervisor of VM %s never accepted on %s", name,
                  path);
}
