/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/macro.h"
#include "vmm/process.h"

/* Reads /proc/PID/stat into buf and returns (in *ret_rest) the text after the command name: field 3 on.
 * The command name (field 2) may contain spaces and parentheses, so it ends at the last ')'. */
static int read_proc_stat(pid_t pid, char *buf, size_t size, char **ret_rest) {
        char path[64];
        _cleanup_close_ int fd = -EBADF;
        ssize_t n;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : negative_errno();
        n = read(fd, buf, size - 1);
        if (n <= 0)
                return n < 0 ? negative_errno() : -EIO;
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (!p || p[1] != ' ' || !p[2])
                return -EBADMSG;
        *ret_rest = p + 2;
        return 0;
}

int process_start_time(pid_t pid, uint64_t *ret) {
        char buf[2048], *p;
        int r;

        r = read_proc_stat(pid, buf, sizeof(buf), &p);
        if (r < 0)
                return r;
        p--; /* at the space before field 3 */
        for (int field = 3; field < 22; field++) {
                p = strchr(p + 1, ' ');
                if (!p)
                        return -EBADMSG;
        }
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p + 1, &end, 10);
        if (errno || end == p + 1)
                return -EBADMSG;
        *ret = v;
        return 0;
}

/* One read of /proc/PID/stat: field 9 (flags) has PF_EXITING once it is on its way out, and field 31 (the
 * thread's pending signals) has SIGKILL from the moment a kill -9 is delivered: the kernel adds a fatal
 * signal to every thread's own pending set. (/proc/PID/status says the same at twice the cost, and
 * ListVMs asks for every running VM.) */
bool process_dying(pid_t pid) {
        char buf[2048], *p;
        unsigned long long flags = 0, pending = 0;

        if (read_proc_stat(pid, buf, sizeof(buf), &p) < 0)
                return false;
        p--; /* at the space before field 3 */
        for (int field = 3; field < 31 && p; field++) {
                p = strchr(p + 1, ' ');
                if (p && field + 1 == 9)
                        flags = strtoull(p + 1, NULL, 10);
        }
        if (p)
                pending = strtoull(p + 1, NULL, 10);
        return (flags & 0x4U /* PF_EXITING */) || (pending & (1ULL << (SIGKILL - 1)));
}

int boot_id_get(uint8_t ret[16]) {
        char buf[64];
        _cleanup_close_ int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n < 32)
                return n < 0 ? negative_errno() : -EIO;
        buf[n] = '\0';
        size_t k = 0;
        for (char *p = buf; *p && k < 32; p++) {
                if (*p == '-' || *p == '\n')
                        continue;
                int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
                if (d < 0)
                        return -EBADMSG;
                if (k % 2 == 0)
                        ret[k / 2] = (uint8_t) (d << 4);
                else
                        ret[k / 2] |= (uint8_t) d;
                k++;
        }
        return k == 32 ? 0 : -EBADMSG;
}

/* Closes every fd from 3 up but a and b (each may be negative: none), in ranges. */
static void close_all_but(int a, int b) {
        int keep[2] = { a < b ? a : b, a < b ? b : a };
        unsigned from = 3;
        for (int i = 0; i < 2; i++) {
                if (keep[i] < (int) from)
                        continue;
                if ((unsigned) keep[i] > from)
                        (void) close_range(from, (unsigned) keep[i] - 1, 0);
                from = (unsigned) keep[i] + 1;
        }
        (void) close_range(from, ~0U, 0);
}

_noreturn_ static void child(char *const argv[], char *const envp[], int log_fd, int report_fd,
                             int gate_fd) {
        sigset_t none;
        int r;

        /* Default dispositions and an empty mask: the hypervisor must see SIGTERM like any process. */
        for (int sig = 1; sig < NSIG; sig++)
                (void) signal(sig, SIG_DFL);
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
        (void) setpgid(0, 0);

        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
            dup2(log_fd, STDERR_FILENO) < 0)
                goto fail;
        /* Everything else stays behind (the agent's sockets, its pidfds — past fd 1024 at a thousand VMs —,
         * its journal lock); the report pipe is close-on-exec. */
        close_all_but(report_fd, gate_fd);
        /* Held at the gate until the agent has journaled this process: an agent killed before that leaves
         * no hypervisor it never heard of — end of file here, and this process ends without running. */
        if (gate_fd >= 0) {
                char go;
                ssize_t n;
                do
                        n = read(gate_fd, &go, 1);
                while (n < 0 && errno == EINTR);
                if (n != 1)
                        _exit(0);
                (void) close(gate_fd);
        }
        if (envp)
                execvpe(argv[0], argv, envp);
        else
                execvp(argv[0], argv);
fail:
        r = errno;
        (void) !write(report_fd, &r, sizeof(r));
        _exit(127);
}

int vmm_spawn(char *const argv[], const char *log_path, VmmProcess *ret, Error *e) {
        return vmm_spawn_gated(argv, NULL, log_path, NULL, NULL, NULL, ret, e);
}

int vmm_spawn_gated(char *const argv[], char *const envp[], const char *log_path, VmmGate gate,
                    VmmGate released, void *userdata, VmmProcess *ret, Error *e) {
        _cleanup_close_ int log_fd = -EBADF, rd = -EBADF, wr = -EBADF, gate_rd = -EBADF, gate_wr = -EBADF;
        int pipefd[2], r;
        VmmProcess p = { .pidfd = -EBADF };

        if (!argv || !argv[0] || !log_path)
                return error_set(e, -EINVAL, ERROR_INVALID, "nothing to run, or no log");
        log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
        if (log_fd < 0) {
                r = negative_errno();
                return error_errno(e, r, "cannot open log %s: %s", log_path, strerror(-r));
        }
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return error_errno(e, negative_errno(), "cannot make a pipe: %m");
        rd = pipefd[0];
        wr = pipefd[1];
        if (gate) {
                if (pipe2(pipefd, O_CLOEXEC) < 0)
                        return error_errno(e, negative_errno(), "cannot make a pipe: %m");
                gate_rd = pipefd[0];
                gate_wr = pipefd[1];
        }

        r = boot_id_get(p.boot_id);
        if (r < 0) {
                return error_errno(e, r, "cannot read the boot id: %s", strerror(-r));
        }

        p.pid = fork();
        if (p.pid < 0)
                return error_errno(e, negative_errno(), "cannot fork: %m");
        if (p.pid == 0) {
                if (gate_wr >= 0)
                        (void) close(gate_wr); /* or the gate would never see the agent go */
                child(argv, envp, log_fd, wr, gate_rd);
        }
        gate_rd = safe_close(gate_rd);

        /* Our child cannot be reaped by anyone else, so its PID cannot be reused before we hold a pidfd. */
        p.pidfd = pidfd_open(p.pid, 0);
        if (p.pidfd < 0) {
                r = negative_errno();
                (void) kill(p.pid, SIGKILL);
                (void) waitpid(p.pid, NULL, 0);
                return error_errno(e, r, "cannot open a pidfd for %s (pid %d): %s", argv[0], (int) p.pid,
                                   strerror(-r));
        }
        wr = safe_close(wr);

        /* The start time is the fork's: it is the same before and after exec. */
        r = process_start_time(p.pid, &p.start_time);
        if (r < 0) {
                (void) error_errno(e, r, "cannot read the start time of %s (pid %d): %s", argv[0],
                                   (int) p.pid, strerror(-r));
                goto kill_child;
        }
        if (gate) {
                r = gate(&p, userdata);
                if (r < 0) {
                        (void) error_errno(e, r, "not started: %s", strerror(-r));
                        goto kill_child;
                }
                if (write(gate_wr, "g", 1) != 1) {
                        r = negative_errno();
                        (void) error_errno(e, r, "cannot release %s (pid %d): %s", argv[0], (int) p.pid,
                                           strerror(-r));
                        goto kill_child;
                }
                gate_wr = safe_close(gate_wr);
                /* While the child execs (a wake-up and an exec: a few hundred microseconds). */
                if (released) {
                        r = released(&p, userdata);
                        if (r < 0) {
                                (void) error_errno(e, r, "stopped: %s", strerror(-r));
                                goto kill_child;
                        }
                }
        }

        int child_errno = 0;
        ssize_t n;
        do
                n = read(rd, &child_errno, sizeof(child_errno));
        while (n < 0 && errno == EINTR);
        if (n == sizeof(child_errno)) {
                (void) waitpid(p.pid, NULL, 0);
                safe_close(p.pidfd);
                return error_errno(e, child_errno > 0 ? -child_errno : -EIO, "cannot execute %s: %s",
                                   argv[0], strerror(child_errno));
        }
        *ret = p;
        return 0;

kill_child:
        (void) pidfd_send_signal(p.pidfd, SIGKILL, NULL, 0);
        (void) waitpid(p.pid, NULL, 0);
        safe_close(p.pidfd);
        return r;
}

/* The state letter of /proc/PID/stat (field 3): Z and X mean the process has exited. */
static int process_state(pid_t pid, char *ret) {
        char buf[2048], *p;
        int r = read_proc_stat(pid, buf, sizeof(buf), &p);
        if (r < 0)
                return r;
        *ret = p[0];
        return 0;
}

int vmm_adopt(pid_t pid, uint64_t start_time, const uint8_t boot_id[16], int *ret_pidfd) {
        _cleanup_close_ int fd = -EBADF;
        uint8_t now_boot[16];
        uint64_t st;
        int r;

        r = boot_id_get(now_boot);
        if (r < 0)
                return r;
        if (memcmp(now_boot, boot_id, 16) != 0)
                return -ESRCH; /* the machine rebooted: that process is gone */
        if (pid <= 0)
                return -ESRCH;
        fd = pidfd_open(pid, 0);
        if (fd < 0)
                return errno == ESRCH ? -ESRCH : negative_errno();
        /* Checked after the pidfd is held: the pidfd pins this exact process, so the PID cannot change owner
         * between the check and any later signal. */
        r = process_start_time(pid, &st);
        if (r < 0)
                return r;
        if (st != start_time)
                return -ESTALE;
        char state;
        r = process_state(pid, &state);
        if (r < 0)
                return r;
        if (state == 'Z' || state == 'X')
                return -ESRCH; /* it has exited; only its parent has not collected it yet */
        *ret_pidfd = TAKE_FD(fd);
        return 0;
}

int vmm_signal(int pidfd, int sig) {
        if (pidfd_send_signal(pidfd, sig, NULL, 0) < 0)
                return errno == ESRCH ? 0 : negative_errno();
        return 0;
}

static int executable_file(const char *path) {
        struct stat st;
        if (stat(path, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EACCES;
        return access(path, X_OK) < 0 ? negative_errno() : 0;
}

int vmm_find_binary(const char *name, char *ret, size_t size) {
        if (!name || !name[0])
                return -EINVAL;
        if (strchr(name, '/')) {
                int r = executable_file(name);
                if (r < 0)
                        return r;
                if (strlen(name) >= size)
                        return -ENAMETOOLONG;
                memcpy(ret, name, strlen(name) + 1);
                return 0;
        }
        const char *path = getenv("PATH");
        if (!path || !path[0])
                path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        for (const char *p = path;;) {
                const char *colon = strchr(p, ':');
                size_t len = colon ? (size_t) (colon - p) : strlen(p);
                char cand[PATH_MAX];
                int n = snprintf(cand, sizeof(cand), "%.*s/%s", (int) len, len ? p : ".", name);
                if (n > 0 && (size_t) n < sizeof(cand) && executable_file(cand) >= 0) {
                        if ((size_t) n >= size)
                                return -ENAMETOOLONG;
                        memcpy(ret, cand, (size_t) n + 1);
                        return 0;
                }
                if (!colon)
                        return -ENOENT;
                p = colon + 1;
        }
}

static int process_uid(pid_t pid, uid_t *ret) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return negative_errno();
        int r = -EBADMSG;
        while (fgets(line, sizeof(line), f)) {
                unsigned long real, eff, saved, fs;
                if (sscanf(line, "Uid: %lu %lu %lu %lu", &real, &eff, &saved, &fs) == 4) {
                        /* every one of them: a process that can become another uid is not that uid's */
                        r = real == eff && eff == saved && saved == fs ? 0 : -EPERM;
                        *ret = (uid_t) eff;
                        break;
                }
        }
        fclose(f);
        return r;
}

/* The inode of the listening unix socket bound at path, from /proc/net/unix; 0 when there is none. */
static unsigned long unix_listener_inode(const char *path) {
        FILE *f = fopen("/proc/net/unix", "re");
        char line[4352];
        unsigned long found = 0;
        if (!f)
                return 0;
        while (!found && fgets(line, sizeof(line), f)) {
                unsigned long flags, inode;
                unsigned type, state;
                int off = 0;
                /* Num RefCount Protocol Flags Type St Inode Path */
                if (sscanf(line, "%*s %*s %*s %lx %x %x %lu %n", &flags, &type, &state, &inode, &off) != 4 ||
                    off == 0)
                        continue;
                char *p = line + off;
                p[strcspn(p, "\n")] = '\0';
                if ((flags & 0x10000) /* __SO_ACCEPTCON: listening */ && strcmp(p, path) == 0)
                        found = inode;
        }
        fclose(f);
        return found;
}

static bool holds(pid_t pid, const char *tap, unsigned long socket_inode) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        DIR *d = opendir(path);
        struct dirent *de;
        bool found = false;
        if (!d)
                return false;
        while (!found && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                char link[320], target[64];
                snprintf(link, sizeof(link), "/proc/%d/fd/%s", (int) pid, de->d_name);
                ssize_t n = readlink(link, target, sizeof(target) - 1);
                if (n <= 0)
                        continue;
                target[n] = '\0';
                if (socket_inode) {
                        char want[40];
                        snprintf(want, sizeof(want), "socket:[%lu]", socket_inode);
                        if (strcmp(target, want) == 0) {
                                found = true;
                                break;
                        }
                }
                if (tap && strcmp(target, "/dev/net/tun") == 0) {
                        char info[320], text[512];
                        snprintf(info, sizeof(info), "/proc/%d/fdinfo/%s", (int) pid, de->d_name);
                        int fd = open(info, O_RDONLY | O_CLOEXEC);
                        ssize_t k = fd >= 0 ? read(fd, text, sizeof(text) - 1) : -1;
                        if (fd >= 0)
                                close(fd);
                        if (k <= 0)
                                continue;
                        text[k] = '\0';
                        for (char *l = strstr(text, "iff:"); l && !found; l = strstr(l + 1, "iff:")) {
                                l += 4;
                                l += strspn(l, " \t");
                                size_t len = strcspn(l, "\n");
                                found = len == strlen(tap) && strncmp(l, tap, len) == 0;
                        }
                }
        }
        closedir(d);
        return found;
}

int process_is_hypervisor_of(pid_t pid, uid_t uid, const char *binary, const char *tap,
                             const char *api_socket) {
        char path[64], exe[PATH_MAX], want[PATH_MAX];
        uid_t owner;
        int r;

        r = process_uid(pid, &owner);
        if (r == -EPERM || (r >= 0 && owner != uid))
                return 0;
        if (r < 0)
                return r == -ENOENT ? 0 : r;
        snprintf(path, sizeof(path), "/proc/%d/exe", (int) pid);
        ssize_t n = readlink(path, exe, sizeof(exe) - 1);
        if (n < 0)
                return errno == ENOENT || errno == ESRCH ? 0 : negative_errno();
        exe[n] = '\0';
        if (!binary || !realpath(binary, want) || strcmp(exe, want) != 0)
                return 0;
        unsigned long inode = api_socket ? unix_listener_inode(api_socket) : 0;
        return holds(pid, tap, inode) ? 1 : 0;
}

int process_for_each(ProcessCallback cb, void *userdata) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        int r = 0;

        if (!d)
                return negative_errno();
        while (r >= 0 && (de = readdir(d))) {
                char path[64], buf[16384];
                pid_t pid = (pid_t) atoi(de->d_name);
                if (pid <= 0 || pid == getpid())
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t n = read(fd, buf, sizeof(buf) - 1);
                (void) close(fd);
                if (n <= 0)
                        continue; /* gone, or a kernel thread */
                for (ssize_t i = 0; i < n; i++)
                        if (buf[i] == '\0')
                                buf[i] = ' ';
                buf[n] = '\0';
                r = cb(pid, buf, userdata);
        }
        closedir(d);
        return r;
}
