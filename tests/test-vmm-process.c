/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Spawning hypervisors with a pidfd, and proving a process's identity before adopting it. */

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/shell-oracle.h"
#include "vmm/process.h"

/* argv arrays of string literals (vmm_spawn takes execvp's char *const[]) */
#define S(x) ((char *) (x))

static char dir[] = "/tmp/chvm-process-XXXXXX";
static char log_path[128];

static void setup(void) {
        cr_assert(mkdtemp(dir));
        snprintf(log_path, sizeof(log_path), "%s/vmm.log", dir);
}

static void teardown(void) {
        free(sh("rm -rf %s", dir));
}

TestSuite(vmm_process, .init = setup, .fini = teardown, .timeout = 30);

static siginfo_t wait_pidfd(int pidfd) {
        siginfo_t si = {};
        cr_assert_eq(waitid(P_PIDFD, (id_t) pidfd, &si, WEXITED), 0, "%s", strerror(errno));
        return si;
}

Test(vmm_process, spawn_logs_and_exit_status) {
        char *argv[] = { S("sh"), S("-c"),
                         S("echo to-stdout; echo to-stderr >&2; test -t 0 || read x; exit 3"), NULL };
        VmmProcess p;
        Error err = {};
        cr_assert_eq(vmm_spawn(argv, log_path, &p, &err), 0, "%s", error_message(&err));
        cr_assert_gt(p.pid, 0);
        cr_assert_geq(p.pidfd, 0);
        siginfo_t si = wait_pidfd(p.pidfd);
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 3);
        char *log = sh("cat %s", log_path);
        cr_assert_str_eq(log, "to-stdout\nto-stderr\n");
        free(log);
        close(p.pidfd);
}

Test(vmm_process, own_process_group_and_no_inherited_fds) {
        char *argv[] = {
                S("sh"), S("-c"),
                S("cut -d' ' -f5 /proc/$$/stat; echo $$; ls /proc/self/fd | sort -n | tr '\\n' ' '"), NULL
        };
        VmmProcess p;
        Error err = {};
        int leak = open("/dev/null", O_RDONLY); /* not close-on-exec: must still not reach the child */
        cr_assert_geq(leak, 0);
        /* nor one past 1024, where an agent with a thousand VMs has its pidfds */
        struct rlimit nofile;
        cr_assert_eq(getrlimit(RLIMIT_NOFILE, &nofile), 0);
        if (nofile.rlim_cur < 2048 && nofile.rlim_max >= 2048) {
                nofile.rlim_cur = 2048;
                cr_assert_eq(setrlimit(RLIMIT_NOFILE, &nofile), 0);
        }
        cr_assert_geq(nofile.rlim_cur, 2048, "RLIMIT_NOFILE %llu: cannot test an fd past 1024",
                      (unsigned long long) nofile.rlim_cur);
        int high = dup2(leak, 1500);
        cr_assert_eq(high, 1500, "%s", strerror(errno));
        cr_assert_eq(vmm_spawn(argv, log_path, &p, &err), 0, "%s", error_message(&err));
        wait_pidfd(p.pidfd);
        char *log = sh("cat %s", log_path);
        char pgid[32], pid[32];
        cr_assert_eq(sscanf(log, "%31s %31s", pgid, pid), 2, "%s", log);
        cr_assert_str_eq(pgid, pid, "not in a process group of its own: %s", log);
        /* ls itself has 0, 1, 2 and the directory it reads (3) */
        cr_assert(strstr(log, "\n0 1 2 3 ") || strstr(log, "\n0 1 2 "), "inherited fds: %s", log);
        cr_assert_null(strstr(log, " 1500 "), "fd 1500 reached the child: %s", log);
        free(log);
        close(high);
        close(leak);
        close(p.pidfd);
}

Test(vmm_process, exec_failure_is_reported) {
        char *argv[] = { S("/nonexistent/cloud-hypervisor"), S("--kernel"), S("x"), NULL };
        VmmProcess p;
        Error err = {};
        cr_assert_eq(vmm_spawn(argv, log_path, &p, &err), -ENOENT);
        cr_assert_str_eq(error_message(&err),
                         "cannot execute /nonexistent/cloud-hypervisor: No such file or directory");
        char *argv2[] = { S("true"), NULL };
        cr_assert_eq(vmm_spawn(argv2, "/nonexistent/dir/log", &p, &err), -ENOENT);
        cr_assert(strstr(error_message(&err), "cannot open log /nonexistent/dir/log"), "%s",
                  error_message(&err));
}

Test(vmm_process, adopt_checks_identity) {
        char *argv[] = { S("sleep"), S("30"), NULL };
        VmmProcess p;
        Error err = {};
        int fd;
        cr_assert_eq(vmm_spawn(argv, log_path, &p, &err), 0, "%s", error_message(&err));

        cr_assert_eq(vmm_adopt(p.pid, p.start_time, p.boot_id, &fd), 0);
        close(fd);
        /* The same PID with another start time is another process: never adopted, never signalled. */
        cr_assert_eq(vmm_adopt(p.pid, p.start_time + 1, p.boot_id, &fd), -ESTALE);
        uint8_t other_boot[16];
        memcpy(other_boot, p.boot_id, 16);
        other_boot[0] ^= 1;
        cr_assert_eq(vmm_adopt(p.pid, p.start_time, other_boot, &fd), -ESRCH, "a process of another boot");

        cr_assert_eq(vmm_signal(p.pidfd, SIGKILL), 0);
        siginfo_t si = wait_pidfd(p.pidfd);
        cr_assert_eq(si.si_code, CLD_KILLED);
        cr_assert_eq(si.si_status, SIGKILL);
        /* Gone: signalling again is success, adopting is ESRCH. */
        cr_assert_eq(vmm_signal(p.pidfd, SIGKILL), 0);
        cr_assert_eq(vmm_adopt(p.pid, p.start_time, p.boot_id, &fd), -ESRCH);
        close(p.pidfd);
}

Test(vmm_process, start_time_parsing) {
        uint64_t a, b;
        cr_assert_eq(process_start_time(getpid(), &a), 0);
        cr_assert_eq(process_start_time(getpid(), &b), 0);
        cr_assert_eq(a, b);
        cr_assert_gt(a, 0);
        /* A command name with spaces and parentheses does not shift the fields. */
        char *argv[] = { S("sh"), S("-c"), S("exec -a 'x) (y z' sleep 5"), NULL };
        VmmProcess p;
        Error err = {};
        cr_assert_eq(vmm_spawn(argv, log_path, &p, &err), 0, "%s", error_message(&err));
        uint64_t st;
        usleep(100000);
        cr_assert_eq(process_start_time(p.pid, &st), 0);
        cr_assert_eq(st, p.start_time, "start time changed across exec or was misparsed");
        vmm_signal(p.pidfd, SIGKILL);
        wait_pidfd(p.pidfd);
        close(p.pidfd);
        cr_assert_eq(process_start_time(999999999, &st), -ESRCH);
}

static int gate_ok(const VmmProcess *p, void *userdata) {
        *(pid_t *) userdata = p->pid;
        return 0;
}

static int gate_refuses(const VmmProcess *p, void *userdata) {
        (void) p;
        (void) userdata;
        return -EIO;
}

static int gate_dies(const VmmProcess *p, void *userdata) {
        /* tell the test the pid that waits at the gate, then die as a killed agent would */
        int fd = *(int *) userdata;
        (void) !write(fd, &p->pid, sizeof(p->pid));
        _exit(86);
}

/* The gate: the child runs only once the caller let it (after journaling it); a refusing gate kills it; a
 * caller that dies at the gate leaves nothing running, and the program never starts. */
Test(vmm_process, spawn_gate) {
        char marker[300], cmd[400];
        Error err;
        snprintf(marker, sizeof(marker), "%s.ran", log_path);
        snprintf(cmd, sizeof(cmd), "touch %s; exec sleep 30", marker);
        char *argv[] = { S("sh"), S("-c"), cmd, NULL };
        VmmProcess p;
        pid_t seen = 0;

        cr_assert_eq(vmm_spawn_gated(argv, NULL, log_path, gate_ok, NULL, &seen, &p, &err), 0, "%s",
                     error_message(&err));
        cr_assert_eq(seen, p.pid, "the gate saw the child's identity");
        for (int i = 0; i < 200 && access(marker, F_OK) < 0; i++)
                usleep(10000);
        cr_assert_eq(access(marker, F_OK), 0, "released, the program ran");
        vmm_signal(p.pidfd, SIGKILL);
        wait_pidfd(p.pidfd);
        close(p.pidfd);
        unlink(marker);

        cr_assert_eq(vmm_spawn_gated(argv, NULL, log_path, gate_refuses, NULL, NULL, &p, &err), -EIO);
        cr_assert(strstr(error_message(&err), "not started"), "%s", error_message(&err));
        usleep(100000);
        cr_assert_eq(access(marker, F_OK), -1, "a refused child never ran");

        /* A caller that dies at the gate: its child must end without running. */
        int pfd[2];
        cr_assert_eq(pipe(pfd), 0);
        pid_t agent = fork();
        cr_assert_geq(agent, 0);
        if (agent == 0) {
                close(pfd[0]);
                VmmProcess q;
                (void) vmm_spawn_gated(argv, NULL, log_path, gate_dies, NULL, &pfd[1], &q, NULL);
                _exit(1);
        }
        close(pfd[1]);
        pid_t child = 0;
        cr_assert_eq(read(pfd[0], &child, sizeof(child)), (ssize_t) sizeof(child));
        close(pfd[0]);
        int status;
        cr_assert_eq(waitpid(agent, &status, 0), agent);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 86);
        /* the orphan is reparented; it must be gone (or a zombie) soon, having never run the program */
        bool gone = false;
        for (int i = 0; i < 200 && !gone; i++) {
                char path[64], st[512] = "";
                snprintf(path, sizeof(path), "/proc/%d/stat", (int) child);
                FILE *f = fopen(path, "re");
                if (!f)
                        gone = true;
                else {
                        if (fgets(st, sizeof(st), f)) {
                                const char *rp = strrchr(st, ')');
                                gone = rp && (rp[2] == 'Z' || rp[2] == 'X');
                        }
                        fclose(f);
                }
                if (!gone)
                        usleep(10000);
        }
        cr_assert(gone, "the child of a caller that died at the gate is still running");
        cr_assert_eq(access(marker, F_OK), -1, "the program ran although its caller died at the gate");
}

typedef struct Order {
        pid_t gated, released;
        int step; /* 1 after the gate, 2 after released */
        int refuse; /* released returns this */
} Order;

static int gate_orders(const VmmProcess *p, void *userdata) {
        Order *o = userdata;
        cr_assert_eq(o->step, 0);
        o->gated = p->pid;
        o->step = 1;
        return 0;
}

static int released_after_gate(const VmmProcess *p, void *userdata) {
        Order *o = userdata;
        cr_assert_eq(o->step, 1, "released before the gate opened");
        o->released = p->pid;
        o->step = 2;
        return o->refuse;
}

/* released runs once the gate opened, for the same child, before vmm_spawn_gated() returns; its failure is
 * returned, and the child is gone. */
Test(vmm_process, spawn_gate_released) {
        Error err;
        char *argv[] = { S("sleep"), S("30"), NULL };
        VmmProcess p;
        Order o = {};

        cr_assert_eq(vmm_spawn_gated(argv, NULL, log_path, gate_orders, released_after_gate, &o, &p, &err),
                     0, "%s", error_message(&err));
        cr_assert_eq(o.step, 2);
        cr_assert_eq(o.gated, p.pid);
        cr_assert_eq(o.released, p.pid);
        vmm_signal(p.pidfd, SIGKILL);
        wait_pidfd(p.pidfd);
        close(p.pidfd);

        o = (Order){ .refuse = -ENOSPC };
        cr_assert_eq(vmm_spawn_gated(argv, NULL, log_path, gate_orders, released_after_gate, &o, &p, &err),
                     -ENOSPC);
        cr_assert_eq(o.step, 2);
        cr_assert(strstr(error_message(&err), "stopped: "), "%s", error_message(&err));
        /* killed and reaped by vmm_spawn_gated(): no such process any more */
        cr_assert_eq(kill(o.released, 0), -1);
        cr_assert_eq(errno, ESRCH);
}

/* The window between a kill -9 and the process's exit, held open: the killer runs SCHED_FIFO on the one
 * CPU its victim may use, so the victim cannot run to act on the signal until the killer lets go. */
Test(vmm_process, a_pending_sigkill_is_dying) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(0, &one);
        cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0, "%s", strerror(errno));
        pid_t victim = fork();
        cr_assert_geq(victim, 0);
        if (victim == 0)
                for (;;)
                        ; /* runnable all the time, on CPU 0 only */
        usleep(50000);
        cr_assert_not(process_dying(victim), "a busy process is not dying");
        struct sched_param fifo = { .sched_priority = 1 }, other = { .sched_priority = 0 };
        cr_assert_eq(sched_setscheduler(0, SCHED_FIFO, &fifo), 0, "SCHED_FIFO: %s", strerror(errno));
        cr_assert_eq(kill(victim, SIGKILL), 0);
        bool dying = process_dying(victim);
        char *state = sh("cut -d' ' -f3 /proc/%d/stat", (int) victim);
        cr_assert_eq(sched_setscheduler(0, SCHED_OTHER, &other), 0);
        int status;
        cr_assert_eq(waitpid(victim, &status, 0), victim);
        cr_assert(dying, "a process with SIGKILL pending is not seen dying (state %s)", state);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        free(state);
}

Test(vmm_process, dying_is_seen) {
        char *argv[] = { S("sleep"), S("30"), NULL };
        VmmProcess p;
        Error err = {};
        cr_assert_eq(vmm_spawn(argv, log_path, &p, &err), 0, "%s", error_message(&err));
        cr_assert_not(process_dying(p.pid), "a sleeping process is not dying");
        cr_assert_not(process_dying(getpid()));
        /* (the dying window itself is too short to catch here: test-chvmctl::list_right_after_kill) */
        cr_assert_eq(vmm_signal(p.pidfd, SIGKILL), 0);
        siginfo_t si = wait_pidfd(p.pidfd);
        cr_assert_eq(si.si_status, SIGKILL);
        cr_assert_not(process_dying(p.pid), "a reaped process is gone, not dying");
        cr_assert_not(process_dying(999999999));
        close(p.pidfd);
}
