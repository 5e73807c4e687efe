/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* What bench/vmm and bench/gc share: see bench/bench-agent.h. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-agent.h"

volatile sig_atomic_t interrupted;
const char *bench_name = "bench";
static pid_t agent_pid_for_diagnosis; /* the agent that runs now, for diagnose_agent() */

static void on_signal(int sig) {
        interrupted = sig;
}

void bench_catch_signals(void) {
        struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: waits end with EINTR */
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
}

double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

_printf_(1, 2) void say(const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "%s: ", bench_name);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* --- figures ------------------------------------------------------------------------------------------- */

static int cmp_double(const void *x, const void *y) {
        double a = *(const double *) x, b = *(const double *) y;
        return a < b ? -1 : a > b;
}

/* Nearest-rank percentiles: p99 of 100 samples is the 99th smallest. */
Stats stats_of(const double *v, size_t n) {
        Stats s = { .n = n };
        if (n == 0)
                return s;
        double *c = malloc(n * sizeof(double));
        if (!c)
                return s;
        memcpy(c, v, n * sizeof(double));
        qsort(c, n, sizeof(double), cmp_double);
        size_t k50 = (size_t) ceil(0.50 * (double) n), k99 = (size_t) ceil(0.99 * (double) n);
        s.min = c[0];
        s.p50 = c[k50 ? k50 - 1 : 0];
        s.p99 = c[k99 ? k99 - 1 : 0];
        s.max = c[n - 1];
        for (size_t i = 0; i < n; i++)
                s.mean += c[i] / (double) n;
        free(c);
        return s;
}

/* --- the agent's log and notify messages, read by a thread of their own -------------------------------- */

static void monitor_line(Monitor *m, const char *line, double t) {
        fprintf(m->log, "%10.4f %s\n", t - m->t0, line);
        pthread_mutex_lock(&m->lock);
        if (strstr(line, "exit statuses of adopted hypervisors will be"))
                m->t_taskstats = t;
        else if (strstr(line, "running VM(s) adopted")) {
                m->t_adopted = t;
                snprintf(m->adopted, sizeof(m->adopted), "%s", line);
        } else if (strstr(line, "error: ") && !m->error[0])
                snprintf(m->error, sizeof(m->error), "%s", line);
        pthread_mutex_unlock(&m->lock);
}

static void *monitor_main(void *userdata) {
        Monitor *m = userdata;
        static char buf[65536];
        size_t have = 0;

        for (;;) {
                struct pollfd p[3] = { { .fd = m->notify_fd, .events = POLLIN },
                                       { .fd = m->log_rd, .events = POLLIN },
                                       { .fd = m->quit[0], .events = POLLIN } };
                if (poll(p, 3, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                double t = now();
                if (p[2].revents)
                        break;
                if (p[0].revents & POLLIN) {
                        char msg[4096];
                        ssize_t k;
                        while ((k = recv(m->notify_fd, msg, sizeof(msg) - 1, MSG_DONTWAIT)) > 0) {
                                msg[k] = '\0';
                                if (strstr(msg, "READY=1")) {
                                        pthread_mutex_lock(&m->lock);
                                        m->t_ready = t;
                                        m->n_ready++;
                                        pthread_cond_broadcast(&m->cond);
                                        pthread_mutex_unlock(&m->lock);
                                }
                                for (char *c = msg; *c; c++)
                                        if (*c == '\n')
                                                *c = ' ';
                                fprintf(m->log, "%10.4f notify: %s\n", t - m->t0, msg);
                        }
                }
                if (p[1].revents & (POLLIN | POLLHUP)) {
                        ssize_t k = read(m->log_rd, buf + have, sizeof(buf) - 1 - have);
                        if (k <= 0)
                                continue;
                        have += (size_t) k;
                        char *s = buf, *nl;
                        while ((nl = memchr(s, '\n', have - (size_t) (s - buf)))) {
                                *nl = '\0';
                                monitor_line(m, s, t);
                                s = nl + 1;
                        }
                        have -= (size_t) (s - buf);
                        memmove(buf, s, have);
                        if (have == sizeof(buf) - 1) {
                                buf[have] = '\0';
                                monitor_line(m, buf, t);
                                have = 0;
                        }
                }
        }
        fflush(m->log);
        return NULL;
}

int monitor_start(Monitor *m, const char *notify_path, const char *log_path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int p[2], rcvbuf = 4 << 20;

        if (strlen(notify_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, notify_path, strlen(notify_path) + 1);
        m->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (m->notify_fd < 0)
                return negative_errno();
        if (bind(m->notify_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return negative_errno();
        (void) setsockopt(m->notify_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();
        m->log_rd = p[0];
        m->log_wr = p[1];
        if (pipe2(m->quit, O_CLOEXEC) < 0)
                return negative_errno();
        m->log = fopen(log_path, "we");
        if (!m->log)
                return negative_errno();
        setvbuf(m->log, NULL, _IOLBF, 0);
        m->t0 = now();
        pthread_mutex_init(&m->lock, NULL);
        pthread_cond_init(&m->cond, NULL);
        int r = pthread_create(&m->thread, NULL, monitor_main, m);
        if (r != 0)
                return -r;
        m->started = true;
        return 0;
}

void monitor_stop(Monitor *m) {
        if (m->started) {
                (void) !write(m->quit[1], "q", 1);
                pthread_join(m->thread, NULL);
                m->started = false;
        }
        if (m->log)
                fclose(m->log);
        m->log = NULL;
}

/* Forgets what the previous agent said (call before starting the next one); returns the READY count to wait
 * past. */
unsigned monitor_reset(Monitor *m) {
        pthread_mutex_lock(&m->lock);
        m->t_ready = m->t_taskstats = m->t_adopted = 0;
        m->adopted[0] = m->error[0] = '\0';
        unsigned n = m->n_ready;
        pthread_mutex_unlock(&m->lock);
        return n;
}

bool monitor_ready_since(Monitor *m, unsigned n_before, double *ret_t) {
        pthread_mutex_lock(&m->lock);
        bool ready = m->n_ready > n_before;
        if (ready && ret_t)
                *ret_t = m->t_ready;
        pthread_mutex_unlock(&m->lock);
        return ready;
}

/* --- processes ----------------------------------------------------------------------------------------- */

/* in_fd < 0: stdin from /dev/null. */
static int spawn_io(char *const argv[], char *const envp[], int in_fd, int out_fd, pid_t *ret_pid) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t at;
        sigset_t none, dfl;
        int r;

        posix_spawn_file_actions_init(&fa);
        if (in_fd >= 0)
                posix_spawn_file_actions_adddup2(&fa, in_fd, STDIN_FILENO);
        else
                posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        if (out_fd >= 0) {
                posix_spawn_file_actions_adddup2(&fa, out_fd, STDOUT_FILENO);
                posix_spawn_file_actions_adddup2(&fa, out_fd, STDERR_FILENO);
        } else {
                posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
                posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        }
        posix_spawnattr_init(&at);
        sigemptyset(&none);
        sigemptyset(&dfl);
        sigaddset(&dfl, SIGINT);
        sigaddset(&dfl, SIGTERM);
        sigaddset(&dfl, SIGHUP);
        sigaddset(&dfl, SIGPIPE);
        posix_spawnattr_setsigmask(&at, &none);
        posix_spawnattr_setsigdefault(&at, &dfl);
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        r = strchr(argv[0], '/') ? posix_spawn(ret_pid, argv[0], &fa, &at, argv, envp ? envp : environ)
                                 : posix_spawnp(ret_pid, argv[0], &fa, &at, argv, envp ? envp : environ);
        posix_spawnattr_destroy(&at);
        posix_spawn_file_actions_destroy(&fa);
        return -r;
}

int spawn(char *const argv[], char *const envp[], int out_fd, pid_t *ret_pid) {
        return spawn_io(argv, envp, -1, out_fd, ret_pid);
}

int wait_pid(pid_t pid, int *ret_status) {
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();
        if (ret_status)
                *ret_status = status;
        return 0;
}

/* The input is a memfd, so neither side waits for the other while the output is read. */
int run_input(char *const argv[], const char *input, size_t input_len, char **ret_out) {
        _cleanup_free_ char *out = NULL;
        _cleanup_close_ int in = -EBADF;
        size_t len = 0, size = 0;
        int p[2], status, r;
        pid_t pid;

        if (input) {
                in = memfd_create("bench-input", MFD_CLOEXEC);
                if (in < 0)
                        return negative_errno();
                for (size_t off = 0; off < input_len;) {
                        ssize_t k = write(in, input + off, input_len - off);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0)
                                return negative_errno();
                        off += (size_t) k;
                }
                if (lseek(in, 0, SEEK_SET) < 0)
                        return negative_errno();
        }
        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();
        r = spawn_io(argv, NULL, in, p[1], &pid);
        safe_close(p[1]);
        if (r < 0) {
                safe_close(p[0]);
                return r;
        }
        for (;;) {
                if (size - len < 65536) {
                        char *q = realloc(out, size + (1 << 20));
                        if (!q)
                                break;
                        out = q;
                        size += 1 << 20;
                }
                ssize_t k = read(p[0], out + len, size - len - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                len += (size_t) k;
        }
        safe_close(p[0]);
        r = wait_pid(pid, &status);
        if (r < 0)
                return r;
        if (out)
                out[len] = '\0';
        if (ret_out)
                *ret_out = out ? TAKE_PTR(out) : strdup("");
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int run(char *const argv[], char **ret_out) {
        return run_input(argv, NULL, 0, ret_out);
}

int write_file(const char *path, const char *content) {
        FILE *f = fopen(path, "we");
        if (!f)
                return negative_errno();
        fputs(content, f);
        return fclose(f) < 0 ? negative_errno() : 0;
}

void read_loadavg(char ret[64]) {
        FILE *f = fopen("/proc/loadavg", "re");
        if (!f || !fgets(ret, 64, f))
                snprintf(ret, 64, "?");
        if (f)
                fclose(f);
        ret[strcspn(ret, "\n")] = '\0';
}

/* Whether the process is one we started: its command line names our folder (a PID alone is never trusted).
 */
bool is_ours(pid_t pid, const char *dir) {
        char path[64], buf[8192];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t k = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (k <= 0)
                return false;
        for (ssize_t i = 0; i < k; i++)
                if (buf[i] == '\0')
                        buf[i] = ' ';
        buf[k] = '\0';
        return strstr(buf, dir) != NULL;
}

ProcInfo proc_info(pid_t pid) {
        ProcInfo pi = { .rss_kib = -1, .hwm_kib = -1, .nofile = -1 };
        char path[64], line[512];

        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f)) {
                if (strncmp(line, "VmRSS:", 6) == 0)
                        pi.rss_kib = strtol(line + 6, NULL, 10);
                else if (strncmp(line, "VmHWM:", 6) == 0)
                        pi.hwm_kib = strtol(line + 6, NULL, 10);
        }
        if (f)
                fclose(f);
        snprintf(path, sizeof(path), "/proc/%d/limits", (int) pid);
        f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, "Max open files", 14) == 0)
                        pi.nofile = strtol(line + 14, NULL, 10);
        if (f)
                fclose(f);
        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        DIR *d = opendir(path);
        for (struct dirent *de; d && (de = readdir(d));)
                pi.fds += de->d_name[0] != '.';
        if (d)
                closedir(d);
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        f = fopen(path, "re");
        char stat[1024];
        if (f && fgets(stat, sizeof(stat), f)) {
                char *p = strrchr(stat, ')');
                unsigned long ut = 0, st = 0;
                /* after the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
                 * utime stime */
                if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                        pi.cpu = (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
        }
        if (f)
                fclose(f);
        return pi;
}

/* --- the command-line tools as oracle ------------------------------------------------------------------ */

static int oracle_add(Oracle *o, const char *s, size_t len) {
        if (o->n == o->size) {
                size_t size = o->size ? 2 * o->size : 4096;
                char **k = realloc(o->keys, size * sizeof(char *));
                if (!k)
                        return -ENOMEM;
                o->keys = k;
                o->size = size;
        }
        o->keys[o->n] = strndup(s, len);
        return o->keys[o->n++] ? 0 : -ENOMEM;
}

static int cmp_str(const void *x, const void *y) {
        return strcmp(*(char *const *) x, *(char *const *) y);
}

void oracle_free(Oracle *o) {
        for (size_t i = 0; i < o->n; i++)
                free(o->keys[i]);
        free(o->keys);
        *o = (Oracle){};
}

/* `ip -o link show` (names) and `nft list ruleset` (every comment). */
int oracle_take(Oracle *o) {
        char *ip_argv[] = { (char *) "ip", (char *) "-o", (char *) "link", (char *) "show", NULL };
        char *nft_argv[] = { (char *) "nft", (char *) "list", (char *) "ruleset", NULL };
        _cleanup_free_ char *links = NULL, *rules = NULL;
        int r;

        r = run(ip_argv, &links);
        if (r != 0)
                return r < 0 ? r : -EIO;
        r = run(nft_argv, &rules);
        if (r != 0)
                return r < 0 ? r : -EIO;
        for (char *line = links; line && *line;) {
                char *end = strchrnul(line, '\n'), *name = strstr(line, ": ");
                if (name && name < end) {
                        name += 2;
                        size_t len = strcspn(name, ":@ ");
                        if ((r = oracle_add(o, name, len)) < 0)
                                return r;
                }
                line = *end ? end + 1 : end;
        }
        for (char *p = rules; (p = strstr(p, "comment \""));) {
                p += strlen("comment \"");
                size_t len = strcspn(p, "\"");
                if ((r = oracle_add(o, p, len)) < 0)
                        return r;
                p += len;
        }
        qsort(o->keys, o->n, sizeof(char *), cmp_str);
        return 0;
}

bool oracle_has(const Oracle *o, const char *key) {
        return o->n && bsearch(&key, o->keys, o->n, sizeof(char *), cmp_str);
}

/* --- the daemon ---------------------------------------------------------------------------------------- */

int bench_error(int r, const char *what) {
        if (r == -EINTR)
                say("interrupted");
        else
                say("%s: %s", what, strerror(-r));
        return r;
}

static char **make_agent_env(const char *notify) {
        static const char *const drop[] = { "NOTIFY_SOCKET=", "JOURNAL_STREAM=", "WATCHDOG_USEC=",
                                            "WATCHDOG_PID=",  "LISTEN_FDS=",     "LISTEN_PID=",
                                            "LISTEN_FDNAMES=" };
        size_t n = 0, k = 0;
        while (environ[n])
                n++;
        char **env = calloc(n + 2, sizeof(char *));
        if (!env)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                bool keep = true;
                for (size_t d = 0; d < ELEMENTSOF(drop); d++)
                        keep = keep && strncmp(environ[i], drop[d], strlen(drop[d])) != 0;
                if (keep)
                        env[k++] = environ[i];
        }
        if (asprintf(&env[k], "NOTIFY_SOCKET=%s", notify) < 0) {
                free(env);
                return NULL;
        }
        return env;
}

int bench_agent_setup(BenchAgent *ag, const char *name, const char *backends, const char *sections) {
        const char *tmp = getenv("TMPDIR");
        char conf[4096];
        int r;

        snprintf(ag->dir, sizeof(ag->dir), "%.80s/chvm-bench-%.16s-XXXXXX", tmp && *tmp ? tmp : "/tmp",
                 name);
        if (!mkdtemp(ag->dir)) {
                ag->dir[0] = '\0';
                return negative_errno();
        }
        snprintf(ag->config, sizeof(ag->config), "%s/agent.conf", ag->dir);
        snprintf(ag->state_dir, sizeof(ag->state_dir), "%s/state", ag->dir);
        snprintf(ag->runtime_dir, sizeof(ag->runtime_dir), "%s/run", ag->dir);
        snprintf(ag->socket, sizeof(ag->socket), "%s/run/agent.sock", ag->dir);
        snprintf(ag->notify, sizeof(ag->notify), "%s/notify.sock", ag->dir);
        snprintf(ag->log, sizeof(ag->log), "%s/agent.log", ag->dir);
        snprintf(ag->kernel, sizeof(ag->kernel), "%s/vmlinuz", ag->dir);
        snprintf(conf, sizeof(conf),
                 "[agent]\nstate_dir = %s\nruntime_dir = %s\nbackend_dir = %s/backends\nbackends = %s\n"
                 "[vmm]\nhypervisor = cloud-hypervisor\nbinary = %s/tests/fake-vmm\nstop_timeout = 2\n"
                 "accel = tcg\npass_environment = FAKE_VMM_*\n%s",
                 ag->state_dir, ag->runtime_dir, BUILD_DIR, backends, BUILD_DIR, sections ? sections : "");
        r = write_file(ag->config, conf);
        if (r >= 0)
                r = write_file(ag->kernel, "fake-vmm only checks that the kernel is a readable file\n");
        if (r < 0)
                return r;
        ag->env = make_agent_env(ag->notify);
        if (!ag->env)
                return -ENOMEM;
        return monitor_start(&ag->mon, ag->notify, ag->log);
}

int agent_spawn(BenchAgent *ag) {
        char bin[256];
        snprintf(bin, sizeof(bin), "%s/chvm-agentd", BUILD_DIR);
        char *argv[] = { bin, (char *) "--config", ag->config, (char *) "--log-target", (char *) "stderr",
                         NULL };
        int r = spawn(argv, ag->env, ag->mon.log_wr, &ag->pid);
        if (r >= 0)
                agent_pid_for_diagnosis = ag->pid;
        return r;
}

int agent_wait_exit(BenchAgent *ag, double timeout, int *ret_status) {
        double end = now() + timeout;
        for (;;) {
                int status;
                pid_t p = waitpid(ag->pid, &status, WNOHANG);
                if (p == ag->pid) {
                        ag->pid = 0;
                        if (ret_status)
                                *ret_status = status;
                        return 0;
                }
                if (p < 0 && errno != EINTR)
                        return negative_errno();
                if (now() > end)
                        return -ETIMEDOUT;
                usleep(100);
        }
}

int agent_wait_ready(BenchAgent *ag, unsigned n_before, double t0, double *ret_t) {
        for (;;) {
                if (monitor_ready_since(&ag->mon, n_before, ret_t))
                        return 0;
                if (interrupted)
                        return -EINTR;
                int status;
                if (waitpid(ag->pid, &status, WNOHANG) == ag->pid) {
                        ag->pid = 0;
                        say("chvm-agentd exited before READY=1 (status %d): %s; its log: %s", status,
                            ag->mon.error, ag->log);
                        return -ECHILD;
                }
                if (now() - t0 > 120) {
                        say("chvm-agentd not ready after 120 s; its log: %s", ag->log);
                        return -ETIMEDOUT;
                }
                usleep(500);
        }
}

int agent_start(BenchAgent *ag, double *ret_ready) {
        unsigned n = monitor_reset(&ag->mon);
        double t0 = now(), t = 0;
        int r = agent_spawn(ag);
        if (r < 0)
                return r;
        r = agent_wait_ready(ag, n, t0, &t);
        if (r < 0)
                return r;
        if (ret_ready)
                *ret_ready = t - t0;
        return 0;
}

void agent_stop(BenchAgent *ag) {
        if (ag->pid <= 0)
                return;
        (void) kill(ag->pid, SIGTERM);
        if (agent_wait_exit(ag, 30, NULL) < 0) {
                (void) kill(ag->pid, SIGKILL);
                (void) agent_wait_exit(ag, 10, NULL);
        }
}

size_t bench_agent_cleanup(BenchAgent *ag, bool keep) {
        size_t killed = 0;
        /* Found by our folder in their command line, each ended by its PID. */
        DIR *d = ag->dir[0] ? opendir("/proc") : NULL;
        for (struct dirent *de; d && (de = readdir(d));) {
                pid_t pid = (pid_t) atoi(de->d_name);
                if (pid > 1 && pid != getpid() && is_ours(pid, ag->dir) && kill(pid, SIGKILL) == 0)
                        killed++;
        }
        if (d)
                closedir(d);
        /* Reap them all (ours as the subreaper). */
        for (double end = now() + 5; now() < end;) {
                pid_t p = waitpid(-1, NULL, WNOHANG);
                if (p < 0 && errno == ECHILD)
                        break;
                if (p <= 0)
                        usleep(10000);
        }
        monitor_stop(&ag->mon);
        if (ag->dir[0] && !keep) {
                char *argv[] = { (char *) "rm", (char *) "-rf", ag->dir, NULL };
                (void) run(argv, NULL);
        } else if (ag->dir[0])
                say("kept %s", ag->dir);
        if (ag->env) {
                for (size_t i = 0; ag->env[i]; i++)
                        if (strncmp(ag->env[i], "NOTIFY_SOCKET=", 14) == 0)
                                free(ag->env[i]);
                free(ag->env);
                ag->env = NULL;
        }
        return killed;
}

void bench_agent_show_log(BenchAgent *ag, bool keep) {
        if (!ag->dir[0])
                return;
        if (ag->mon.log)
                fflush(ag->mon.log);
        char *tail_argv[] = { (char *) "tail", (char *) "-n", (char *) "15", ag->log, NULL };
        _cleanup_free_ char *tail = NULL;
        (void) run(tail_argv, &tail);
        say("failed; the end of the agents' log %s%s:\n%s", ag->log,
            keep ? "" : " (removed; --keep keeps it)", tail ? tail : "");
}

/* --- control API --------------------------------------------------------------------------------------- */

int bus_open(const char *socket, sd_bus **ret) {
        sd_bus *bus = NULL;
        char addr[256];
        int r;
        snprintf(addr, sizeof(addr), "unix:path=%s", socket);
        r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, addr);
        if (r >= 0)
                r = sd_bus_set_method_call_timeout(bus, CALL_TIMEOUT_USEC);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r < 0) {
                sd_bus_flush_close_unref(bus);
                return r;
        }
        *ret = bus;
        return 0;
}

/* What the agent is doing when it does not answer: its state, where it sleeps, its kernel stack. */
static void diagnose_agent(void) {
        static const char *const files[] = { "wchan", "syscall", "stack" };
        pid_t pid = agent_pid_for_diagnosis;
        char path[64], buf[4096];
        if (pid <= 0)
                return;
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                snprintf(path, sizeof(path), "/proc/%d/%s", (int) pid, files[i]);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                ssize_t k = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
                safe_close(fd);
                buf[k > 0 ? k : 0] = '\0';
                say("agent pid %d %s: %s", (int) pid, files[i], buf);
        }
}

int call_failed(const char *what, const char *vm, int r, const sd_bus_error *e) {
        say("%s %s: %s (%s)", what, vm, e && e->message ? e->message : strerror(-r),
            e && e->name ? e->name : "no error name");
        if (r == -ETIMEDOUT)
                diagnose_agent();
        return r < 0 ? r : -EIO;
}

int bus_create(sd_bus *bus, const char *kernel, const char *name, const char *backend, const BusPort *ports,
               size_t n_ports, uint64_t *ret_id) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        uint64_t id = 0;
        int r = sd_bus_message_new_method_call(bus, &m, NULL, AGENT_OBJECT, AGENT_INTERFACE, "CreateVM");
        if (r >= 0)
                r = sd_bus_message_append(m, "sssssssutas", name, backend, "", kernel, "", "", "",
                                          (uint32_t) 1, (uint64_t) 0, (unsigned) 0);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "(sqq)");
        for (size_t i = 0; r >= 0 && i < n_ports; i++)
                r = sd_bus_message_append(m, "(sqq)", "tcp", ports[i].host, ports[i].guest);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r >= 0)
                r = sd_bus_message_append(m, "t", UINT64_C(0)); /* flags */
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, &e, &reply);
        if (r >= 0)
                r = sd_bus_message_read(reply, "t", &id);
        sd_bus_message_unref(m);
        sd_bus_message_unref(reply);
        if (r < 0) {
                r = call_failed("CreateVM", name, r, &e);
                sd_bus_error_free(&e);
                return r;
        }
        if (ret_id)
                *ret_id = id;
        return 0;
}

int bus_create_start(sd_bus *bus, const char *kernel, const char *name, const char *backend,
                     const BusPort *ports, size_t n_ports, uint64_t *ret_id, double *ret_create,
                     double *ret_start) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        double t0 = now();
        int r = bus_create(bus, kernel, name, backend, ports, n_ports, ret_id);
        if (r < 0)
                return r;
        double t1 = now();
        r = sd_bus_call_method(bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "StartVM", &e, NULL, "s", name);
        if (r < 0) {
                r = call_failed("StartVM", name, r, &e);
                sd_bus_error_free(&e);
                return r;
        }
        if (ret_create)
                *ret_create = t1 - t0;
        if (ret_start)
                *ret_start = now() - t1;
        return 0;
}

int bus_list(sd_bus *bus, BusVmCallback cb, void *userdata, size_t *ret_running, size_t *ret_crashed,
             size_t *ret_total) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *reason, *backend, *hyp, *mac;
        size_t running = 0, crashed = 0, total = 0;
        BusVm vm;
        int r;

        r = sd_bus_call_method(bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "ListVMs", &e, &reply, NULL);
        if (r < 0) {
                r = call_failed("ListVMs", "", r, &e);
                sd_bus_error_free(&e);
                return r;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(stssusssssa(sqq))");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'r', "stssusssssa(sqq)")) > 0) {
                r = sd_bus_message_read(reply, "stssusssss", &vm.name, &vm.id, &vm.state, &reason, &vm.pid,
                                        &backend, &hyp, &vm.tap, &vm.ip, &mac);
                if (r >= 0)
                        r = sd_bus_message_skip(reply, "a(sqq)");
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        break;
                total++;
                running += strcmp(vm.state, "running") == 0;
                crashed += strcmp(vm.state, "crashed") == 0;
                if (cb && (r = cb(&vm, userdata)) < 0)
                        break;
        }
        sd_bus_message_unref(reply);
        if (r < 0)
                return call_failed("ListVMs (reply)", "", r, NULL);
        if (ret_running)
                *ret_running = running;
        if (ret_crashed)
                *ret_crashed = crashed;
        if (ret_total)
                *ret_total = total;
        return 0;
}
