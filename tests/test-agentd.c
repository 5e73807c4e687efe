/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* chvm-agentd as a whole program: it refuses a bad config naming the file, line and cause; it tells systemd
 * READY/STATUS/STOPPING and pets the watchdog; SIGTERM leaves the VMs running and the next start adopts
 * them; after SIGKILL of the agent, hypervisors that died meanwhile are cleaned up and the others adopted.
 * Every test runs in a network namespace of its own (unshare in the test process; the agent inherits it),
 * with fake-vmm as the hypervisor and chvmctl as the client. */

#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/agentd-test-util.h"
#include "tests/shell-oracle.h"

static TestAgent agent;

static void setup(void) {
        test_enter_private_netns();
}

static void teardown(void) {
        test_agent_cleanup(&agent);
}

TestSuite(agentd, .init = setup, .fini = teardown, .timeout = 90);

static void expect_refusal(const char *extra, const char *want) {
        char *log;
        test_agent_init(&agent, extra);
        int status = test_agent_run_to_exit(&agent, NULL, &log);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "agent exit status %d for:\n%s\nlog:\n%s",
                  status, extra, log);
        cr_assert(strstr(log, want), "expected \"%s\" in:\n%s", want, log);
        cr_assert(strstr(log, "refusing to start"), "%s", log);
        /* Nothing was made: no state folder, no socket, nothing in the kernel. */
        struct stat st;
        cr_assert_eq(stat(agent.state_dir, &st), -1, "a refused agent made %s", agent.state_dir);
        char *links = sh("ip -o link | grep -vc ' lo:'");
        cr_assert_str_eq(links, "0\n", "links were made");
        free(links);
        free(log);
        test_agent_cleanup(&agent);
}

/* Acceptance 7: unknown key, bad subnet, missing hypervisor binary → refused, naming file:line and cause. */
Test(agentd, bad_config_is_refused_with_file_and_line) {
        /* the generated config has 10 lines before `extra`, the last in [vmm] */
        expect_refusal("colour = blue\n", "agent.conf:11: unknown key \"colour\" in [vmm]");
        expect_refusal(
                "[local]\nsubnet = 10.0.0.1/24\n",
                "agent.conf:12: [local] subnet \"10.0.0.1/24\" has host bits set (did you mean 10.0.0.0/24?)");
        expect_refusal("[local]\nsubnet = 10.0.0.0/33\n",
                       "agent.conf:12: [local] subnet \"10.0.0.0/33\": expected A.B.C.D/N");
        expect_refusal("[nosuch]\nkey = 1\n", "agent.conf:12: unknown section [nosuch]");
        expect_refusal("[agent]\nbackends = local nosuch\n", "unknown backend \"nosuch\": no module ");
        /* a backend's own key, refused by the backend (its configure hook) before anything is made */
        expect_refusal("[local]\nsubnet = 10.9.0.0/16\ncolour = blue\n",
                       "agent.conf:13: [local] unknown key \"colour\"");
        expect_refusal("[mosnet]\nbridge = x\n", "agent.conf:12: [mosnet] unknown key \"bridge\"");
}

Test(agentd, missing_hypervisor_binary_is_refused) {
        char conf[512], *log;

        /* An explicit binary that does not exist: the config line says so. */
        test_agent_init(&agent, NULL);
        snprintf(conf, sizeof(conf), "sed -i 's|^binary = .*|binary = %s/no-such-vmm|' %s", agent.dir,
                 agent.config);
        free(sh("%s", conf));
        int status = test_agent_run_to_exit(&agent, NULL, &log);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s", log);
        cr_assert(strstr(log, "agent.conf:7: binary ") &&
                          strstr(log, "no-such-vmm: No such file or directory"),
                  "%s", log);
        free(log);

        /* No binary key and the kind's default (cloud-hypervisor) not in PATH. */
        free(sh("sed -i '/^binary = /d' %s", agent.config));
        char *env[] = { (char *) "PATH=/nonexistent", NULL };
        status = test_agent_run_to_exit(&agent, env, &log);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s", log);
        cr_assert(
                strstr(log,
                       "[vmm] hypervisor cloud-hypervisor: its binary \"cloud-hypervisor\" is not in PATH"),
                "%s", log);
        free(log);

        /* --check-config says the same, and ok for a good file. */
        free(sh("echo 'binary = %s/tests/fake-vmm' >> %s", test_build_dir(), agent.config));
        char *out = sh("%s/chvm-agentd --check-config --config %s 2>&1; echo rc=$?", test_build_dir(),
                       agent.config);
        cr_assert(strstr(out, ": ok\nrc=0"), "%s", out);
        free(out);
}

/* sd_notify: READY=1 once the socket is up, a STATUS line, the watchdog petted, STOPPING=1 on SIGTERM. */
Test(agentd, notify_ready_status_watchdog_stopping) {
        test_agent_init(&agent, NULL);
        /* The watchdog is for this process only when WATCHDOG_PID names it: without WATCHDOG_PID it is ours.
         */
        char *env[] = { (char *) "WATCHDOG_USEC=300000", NULL };
        test_agent_start(&agent, env);
        cr_assert(test_agent_wait_notify(&agent, "STATUS=0 VM(s) defined, 0 running", 2000), "%s",
                  agent.notified);
        /* at least two pets within a second at 300 ms */
        cr_assert(test_agent_wait_notify(&agent, "WATCHDOG=1\nWATCHDOG=1", 1500), "%s", agent.notified);
        struct stat st;
        cr_assert_eq(stat(agent.socket, &st), 0);
        cr_assert(S_ISSOCK(st.st_mode));
        int status = test_agent_signal_wait(&agent, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
        cr_assert(test_agent_wait_notify(&agent, "STOPPING=1", 1000), "%s", agent.notified);
        cr_assert_eq(stat(agent.socket, &st), -1, "the socket is removed on exit");
        char *log = test_agent_log(&agent);
        cr_assert(strstr(log, "leaving running VMs running"), "%s", log);
        free(log);
}

static void create_and_start(const char *name, int port) {
        char *err;
        int r = ctl(&agent, NULL, &err, "run %s --kernel %s/tests/fake-vmm -p %d:80", name, test_build_dir(),
                    port);
        cr_assert_eq(r, 0, "run %s: %s", name, err);
        free(err);
}

static pid_t vm_pid(const char *name) {
        char *out;
        cr_assert_eq(ctl(&agent, &out, NULL,
                         "inspect %s --json | sed -n 's/.*\"vmm_pid\":\\([0-9]*\\).*/\\1/p'", name),
                     0);
        pid_t pid = (pid_t) atoi(out);
        free(out);
        return pid;
}

static char *vm_state(const char *name) {
        char *out;
        (void) ctl(&agent, &out, NULL, "inspect %s --json | sed -n 's/.*\"state\":\"\\([a-z]*\\)\".*/\\1/p'",
                   name);
        out[strcspn(out, "\n")] = '\0';
        return out;
}

static char *kernel_state(void) {
        return sh(
                "ip -o link show type tun | sed 's/^[0-9]*: //' | sort; nft list ruleset | grep -o 'comment \"chvm1:[^\"]*\"' | sort");
}

/* SIGTERM leaves the VMs running (hypervisors alive, TAPs and rules in place); the next start adopts them:
 * same PIDs, objects byte-identical, and a kill -9 afterwards is still cleaned up. */
Test(agentd, sigterm_leaves_vms_running_and_restart_adopts) {
        test_agent_init(&agent, NULL);
        test_agent_start(&agent, NULL);
        create_and_start("one", 8001);
        create_and_start("two", 8002);
        create_and_start("three", 8003);
        pid_t pids[3] = { vm_pid("one"), vm_pid("two"), vm_pid("three") };
        char *before = kernel_state();
        cr_assert_eq(count_substr(before, "tap-"), 3, "%s", before);

        int status = test_agent_signal_wait(&agent, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        for (int i = 0; i < 3; i++)
                cr_assert_eq(kill(pids[i], 0), 0, "hypervisor %d died with the agent", (int) pids[i]);
        char *during = kernel_state();
        cr_assert_str_eq(during, before, "the agent's exit changed the kernel state");

        test_agent_start(&agent, NULL);
        cr_assert_eq(vm_pid("one"), pids[0]);
        cr_assert_eq(vm_pid("two"), pids[1]);
        cr_assert_eq(vm_pid("three"), pids[2]);
        char *after = kernel_state();
        cr_assert_str_eq(after, before);
        char *log = test_agent_log(&agent);
        cr_assert(strstr(log, "3 running VM(s) adopted, 0 found dead"), "%s", log);
        free(log);

        /* An adopted hypervisor that dies is still noticed at once. */
        cr_assert_eq(kill(pids[1], SIGKILL), 0);
        for (int i = 0; i < 100; i++) {
                char *s = vm_state("two");
                bool crashed = strcmp(s, "crashed") == 0;
                free(s);
                if (crashed)
                        break;
                usleep(10000);
        }
        char *s = vm_state("two");
        cr_assert_str_eq(s, "crashed");
        free(s);
        char *now = kernel_state();
        cr_assert_eq(count_substr(now, "tap-"), 2, "%s", now);
        free(before);
        free(during);
        free(after);
        free(now);
}

/* Issue 13, defect 1: a process whose arguments name a stopped VM's runtime folder is not that VM's
 * hypervisor. As uid nobody (sh -c 'sleep 900; :' x <runtime>/vms/<id>/) and as root (tail -f of the VM's
 * serial log): the restarted agent adopts neither, shows the VM stopped, starts it, and signals neither;
 * the folder vms/ is 0700. Without the proof of ownership the agent adopted the first of them. */
Test(agentd, impostors_are_not_adopted) {
        test_agent_init(&agent, NULL);
        test_agent_start(&agent, NULL);
        create_and_start("web", 8080);
        char *err = NULL, *id = NULL;
        cr_assert_eq(ctl(&agent, &id, NULL, "inspect web --json | jq -r .id"), 0);
        id[strcspn(id, "\n")] = '\0';
        cr_assert_eq(ctl(&agent, NULL, &err, "stop web --timeout 5"), 0, "%s", err);
        free(err);
        char *st = vm_state("web");
        cr_assert_str_eq(st, "stopped");
        free(st);
        struct stat sb;
        char vms[256];
        snprintf(vms, sizeof(vms), "%s/vms", agent.runtime_dir);
        cr_assert_eq(stat(vms, &sb), 0);
        cr_assert_eq(sb.st_mode & 07777, 0700, "%s is %o", vms, sb.st_mode & 07777);

        char *p1 = sh("setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'sleep 900; :' x %s/vms/%s/ "
                      ">/dev/null 2>&1 & echo $!",
                      agent.runtime_dir, id);
        char *p2 = sh("tail -f %s/vms/%s/serial.log >/dev/null 2>&1 & echo $!", agent.runtime_dir, id);
        pid_t nobody = (pid_t) atoi(p1), root = (pid_t) atoi(p2);
        free(p1);
        free(p2);
        cr_assert(nobody > 0 && root > 0);
        /* both in place, with the VM's folder in their command lines, before the agent looks */
        for (int i = 0;; i++) {
                char *c = sh("tr '\\0' ' ' </proc/%d/cmdline; echo; tr '\\0' ' ' </proc/%d/cmdline",
                             (int) nobody, (int) root);
                bool ready = strstr(c, "sh -c sleep 900; : x ") && strstr(c, "tail -f ") &&
                             strstr(strstr(c, "tail -f "), id);
                free(c);
                if (ready)
                        break;
                cr_assert_lt(i, 200, "the impostors did not start");
                usleep(10000);
        }

        int status = test_agent_signal_wait(&agent, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        test_agent_start(&agent, NULL);
        st = vm_state("web");
        cr_assert_str_eq(st, "stopped", "an impostor was adopted as web's hypervisor");
        free(st);
        cr_assert_eq(vm_pid("web"), 0);
        cr_assert_eq(ctl(&agent, NULL, &err, "start web"), 0, "start: %s", err);
        free(err);
        pid_t real = vm_pid("web");
        cr_assert(real > 0 && real != nobody && real != root);
        cr_assert_eq(ctl(&agent, NULL, &err, "rm -f web"), 0, "%s", err);
        free(err);
        cr_assert_eq(kill(nobody, 0), 0, "the agent signalled nobody's process");
        cr_assert_eq(kill(root, 0), 0, "the agent signalled root's tail");
        kill(nobody, SIGKILL);
        kill(root, SIGKILL);
        free(id);
}

/* The other side of the same rule: a VM's real hypervisor that the journal does not know runs (the state
 * folder restored from a copy made before the VM started) is still adopted: its binary, its uid, and it
 * listens on the VM's API socket. */
Test(agentd, a_real_orphan_is_adopted) {
        test_agent_init(&agent, NULL);
        test_agent_start(&agent, NULL);
        char *err = NULL;
        cr_assert_eq(ctl(&agent, NULL, &err, "create web --kernel %s/tests/fake-vmm", test_build_dir()), 0,
                     "%s", err);
        free(err);
        int status = test_agent_signal_wait(&agent, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        char *o = sh("rm -rf %s.copy && cp -a %s %s.copy && echo ok", agent.state_dir, agent.state_dir,
                     agent.state_dir);
        cr_assert_str_eq(o, "ok\n");
        free(o);
        test_agent_start(&agent, NULL);
        cr_assert_eq(ctl(&agent, NULL, &err, "start web"), 0, "%s", err);
        free(err);
        pid_t pid = vm_pid("web");
        cr_assert(pid > 0);
        status = test_agent_signal_wait(&agent, SIGTERM);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        o = sh("rm -rf %s && mv %s.copy %s && echo ok", agent.state_dir, agent.state_dir, agent.state_dir);
        cr_assert_str_eq(o, "ok\n");
        free(o);
        test_agent_start(&agent, NULL);
        char *st = vm_state("web");
        cr_assert_str_eq(st, "running", "the real hypervisor was not adopted");
        free(st);
        cr_assert_eq(vm_pid("web"), pid);
}

static bool process_dead(pid_t pid) {
        char *st = sh("cut -d' ' -f3 /proc/%d/stat 2>/dev/null", (int) pid);
        bool dead = st[0] == '\0' || st[0] == 'Z' || st[0] == 'X';
        free(st);
        return dead;
}

/* Acceptance 3 through the daemon: the agent SIGKILLed with 10 VMs running, 5 hypervisors killed while it
 * is down; the restarted agent adopts exactly the 5 live ones (objects intact) and tears down the 5 dead. */
Test(agentd, sigkill_agent_then_five_hypervisors) {
        char name[16];
        pid_t pids[10];
        test_agent_init(&agent, NULL);
        test_agent_start(&agent, NULL);
        for (int i = 0; i < 10; i++) {
                snprintf(name, sizeof(name), "vm%d", i);
                create_and_start(name, 9000 + i);
                pids[i] = vm_pid(name);
        }
        (void) test_agent_signal_wait(&agent, SIGKILL);
        for (int i = 0; i < 10; i += 2) {
                cr_assert_eq(kill(pids[i], SIGKILL), 0);
                /* dead: gone, or a zombie that whoever inherited it has not reaped yet */
                for (int k = 0; k < 200 && !process_dead(pids[i]); k++)
                        usleep(5000);
                cr_assert(process_dead(pids[i]));
        }
        test_agent_start(&agent, NULL);
        char *log = test_agent_log(&agent);
        cr_assert(strstr(log, "5 running VM(s) adopted, 5 found dead and torn down"), "%s", log);
        free(log);
        for (int i = 0; i < 10; i++) {
                snprintf(name, sizeof(name), "vm%d", i);
                char *s = vm_state(name);
                cr_assert_str_eq(s, i % 2 ? "running" : "crashed", "%s", name);
                free(s);
                if (i % 2)
                        cr_assert_eq(vm_pid(name), pids[i]);
        }
        /* `list -a` says why each one is down (the table, not only --json). */
        char *list;
        cr_assert_eq(ctl(&agent, &list, NULL, "list -a"), 0);
        cr_assert(strstr(list, " REASON\n"), "%s", list);
        cr_assert_eq(count_substr(list, " crashed "), 5, "%s", list);
        cr_assert_eq(count_substr(list, " hypervisor gone while the agent was down\n"), 5, "%s", list);
        free(list);
        char *k = kernel_state();
        cr_assert_eq(count_substr(k, "tap-"), 5, "%s", k);
        for (int i = 0; i < 10; i++) {
                char port[16];
                snprintf(port, sizeof(port), "%d", 9000 + i);
                char *r = sh("nft list map inet chvm portfwd4 | grep -c 'tcp . %s ' ; true", port);
                cr_assert_eq(atoi(r), i % 2, "forward %s: %s", port, r);
                free(r);
        }
        free(k);
}

/* Logs go to journald with the VM's fields when asked (and when stderr is the journal stream): a private
 * mount namespace puts our own datagram socket where sd-journal sends, /run/systemd/journal/socket. */
Test(agentd, journald_fields) {
        if (unshare(CLONE_NEWNS) < 0)
                cr_skip_test("unshare(CLONE_NEWNS): %s", strerror(errno));
        char *o = sh(
                "mount --make-rprivate / && mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && echo ok");
        if (strcmp(o, "ok\n") != 0) {
                free(o);
                cr_skip_test("cannot make a private /run for a fake journald");
        }
        free(o);
        int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = "/run/systemd/journal/socket" };
        cr_assert_eq(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0, "%s", strerror(errno));

        test_agent_init(&agent, NULL);
        /* the helper starts agents with --log-target stderr; this one is told where journald is by the
         * stream */
        char *env[] = { (char *) "CHVM_TEST_LOG_TARGET=journal", NULL };
        test_agent_start(&agent, env);
        create_and_start("web", 8080);
        char *err;
        cr_assert_eq(ctl(&agent, NULL, &err, "kill web"), 0, "%s", err);
        free(err);
        usleep(200000);

        char all[65536] = "";
        size_t have = 0;
        for (;;) {
                char buf[8192];
                ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (n <= 0)
                        break;
                buf[n] = '\0';
                /* one datagram = one entry: FIELD=value lines */
                have += (size_t) snprintf(all + have, sizeof(all) - have, "%s\n--\n", buf);
                if (have >= sizeof(all) - 1)
                        break;
        }
        close(fd);
        cr_assert(strstr(all, "MESSAGE=VM web started"), "%s", all);
        const char *entry = strstr(all, "MESSAGE=VM web started");
        while (entry > all && strncmp(entry, "--\n", 3) != 0)
                entry--;
        char one[4096];
        const char *end = strstr(entry + 3, "\n--\n");
        snprintf(one, sizeof(one), "%.*s", (int) (end ? end - entry - 3 : 4000), entry + 3);
        cr_assert(strstr(one, "VM=web\n") && strstr(one, "VM_ID=") && strstr(one, "BACKEND=local\n") &&
                          strstr(one, "INTERFACE=tap-") && strstr(one, "PRIORITY=6\n") &&
                          strstr(one, "SYSLOG_IDENTIFIER=chvm-agentd\n"),
                  "the start message lacks its fields:\n%s", one);
        cr_assert(strstr(all, "MESSAGE=VM web crashed: hypervisor killed by signal 9"), "%s", all);
        cr_assert(strstr(all, "PRIORITY=4\n"), "a crash is a warning:\n%s", all);
}

/* Which capabilities the agent needs, measured: with only CAP_NET_ADMIN and CAP_CHOWN in its bounding set
 * (the unit's CapabilityBoundingSet=) it runs VMs with forwards, kills them, collects garbage; without
 * CAP_NET_ADMIN or without CAP_CHOWN (it cannot give its socket to the control group) it refuses to start,
 * naming the cause. */
Test(agentd, capabilities_it_needs) {
        char *which = sh("command -v setpriv");
        if (!which[0]) {
                free(which);
                cr_skip_test("setpriv (util-linux) not installed");
        }
        free(which);
        char *out, *err;
        test_agent_init(&agent, "[agent]\ncontrol_group = users\n");
        char *env[] = { (char *) "CHVM_TEST_CAPS=+net_admin,+net_raw,+chown", (char *) "CHVM_NO_TASKSTATS=1",
                        NULL };
        test_agent_start(&agent, env);
        char *caps = sh("grep CapEff /proc/%d/status", (int) agent.pid);
        cr_assert_str_eq(caps, "CapEff:\t0000000000003001\n",
                         "CAP_CHOWN (0), CAP_NET_ADMIN (12) and CAP_NET_RAW (13) only: %s", caps);
        free(caps);
        create_and_start("web", 8080);
        char *dhcp_log = test_agent_log(&agent);
        cr_assert_null(strstr(dhcp_log, "cannot serve DHCP"),
                       "the DHCP server needs more than the unit gives:\n%s", dhcp_log);
        free(dhcp_log);
        char *packet = sh("grep -c ' 0800 ' /proc/%d/net/packet 2>/dev/null; true", (int) agent.pid);
        cr_assert_neq(atoi(packet), 0,
                      "no ETH_P_IP packet socket (the DHCP server) in the agent's namespace");
        free(packet);
        cr_assert_eq(ctl(&agent, &out, &err, "doctor --gc"), 0, "%s%s", out, err);
        free(out), free(err);
        cr_assert_eq(ctl(&agent, NULL, &err, "kill web"), 0, "%s", err);
        free(err);
        cr_assert_eq(ctl(&agent, NULL, &err, "rm web"), 0, "%s", err);
        free(err);
        test_agent_cleanup(&agent);

        /* Without CAP_NET_RAW the VMs still get their network, but no DHCP server: said once, as a warning.
         * (A new agent id: the first agent's bridge and tables go first, in this test's namespace.) */
        char *gone =
                sh("ip link del chvm0; nft delete table inet chvm; nft delete table bridge chvm; echo ok");
        cr_assert_str_eq(gone, "ok\n");
        free(gone);
        test_agent_init(&agent, "[agent]\ncontrol_group = users\n");
        char *no_raw[] = { (char *) "CHVM_TEST_CAPS=+net_admin,+chown", (char *) "CHVM_NO_TASKSTATS=1",
                           NULL };
        test_agent_start(&agent, no_raw);
        create_and_start("web", 8080);
        create_and_start("db", 8081);
        char *raw_log = test_agent_log(&agent);
        const char *w = strstr(raw_log, "DHCP: cannot serve DHCP on chvm0: Operation not permitted");
        cr_assert(w, "%s", raw_log);
        cr_assert_null(strstr(w + strlen("DHCP: cannot serve DHCP"), "cannot serve DHCP"),
                       "said more than once:\n%s", raw_log);
        free(raw_log);
        test_agent_cleanup(&agent);

        /* Without CAP_NET_ADMIN nothing of the network can be made: refused at start, the kernel's EPERM
         * named. */
        test_agent_init(&agent, "[agent]\ncontrol_group = users\n");
        char *no_admin[] = { (char *) "CHVM_TEST_CAPS=+chown", (char *) "CHVM_NO_TASKSTATS=1", NULL };
        char *log0;
        int status0 = test_agent_run_to_exit(&agent, no_admin, &log0);
        cr_assert(WIFEXITED(status0) && WEXITSTATUS(status0) == 1, "%s", log0);
        cr_assert(strstr(log0, "Operation not permitted") && strstr(log0, "refusing to start"), "%s", log0);
        free(log0);
        test_agent_cleanup(&agent);

        test_agent_init(&agent, "[agent]\ncontrol_group = users\n");
        char *no_chown[] = { (char *) "CHVM_TEST_CAPS=+net_admin", (char *) "CHVM_NO_TASKSTATS=1", NULL };
        char *log;
        int status = test_agent_run_to_exit(&agent, no_chown, &log);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "%s", log);
        cr_assert(strstr(log, "cannot give") && strstr(log, "to group users"), "%s", log);
        free(log);
}

/* A process listening at the control socket's path for a moment (a hypervisor child of a killed agent
 * that has not closed the agent's fds yet) is waited for; one that keeps listening is another agent, and
 * the agent refuses to start naming the path. */
static pid_t listen_at(const char *path, useconds_t for_us) {
        int ready[2];
        cr_assert_eq(pipe(ready), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                if (strlen(path) >= sizeof(sa.sun_path))
                        _exit(1);
                memcpy(sa.sun_path, path, strlen(path) + 1);
                int fd = socket(AF_UNIX, SOCK_STREAM, 0);
                if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 16) < 0)
                        _exit(1);
                (void) !write(ready[1], "r", 1);
                usleep(for_us);
                _exit(0);
        }
        char c;
        close(ready[1]);
        cr_assert_eq(read(ready[0], &c, 1), 1, "the listener could not listen at %s", path);
        close(ready[0]);
        return pid;
}

Test(agentd, a_stale_listener_is_waited_for_a_live_one_refused) {
        test_agent_init(&agent, NULL);
        free(sh("mkdir -p %s", agent.runtime_dir));
        pid_t stale = listen_at(agent.socket, 500000);
        test_agent_start(&agent, NULL); /* fails unless it becomes ready */
        int status;
        cr_assert_eq(waitpid(stale, &status, 0), stale);
        char *out, *err;
        cr_assert_eq(ctl(&agent, &out, &err, "list"), 0, "%s", err);
        free(out), free(err);
        (void) test_agent_signal_wait(&agent, SIGTERM);

        free(sh("rm -f %s", agent.socket));
        pid_t live = listen_at(agent.socket, 20000000);
        char *log;
        status = test_agent_run_to_exit(&agent, NULL, &log);
        kill(live, SIGKILL);
        waitpid(live, NULL, 0);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status %d:\n%s", status, log);
        cr_assert(strstr(log, "another agent is listening there") && strstr(log, agent.socket), "%s", log);
        free(log);
}

/* Issue 13: hypervisors inherited the agent's whole environment (its NOTIFY_SOCKET, WATCHDOG_*, whatever
 * the unit or an admin's shell put there). Now they get PATH, [vmm] environment and the variables
 * [vmm] pass_environment names (the test agents pass FAKE_VMM_*), nothing else. */
Test(agentd, hypervisors_get_a_minimal_environment) {
        static char secret[] = "CHVM_TEST_SECRET=do-not-pass", fake[] = "FAKE_VMM_IGNORE_POWER=1";
        char *env[] = { secret, fake, NULL };
        test_agent_init(&agent, "[vmm]\nenvironment = LANG=C.UTF-8 TZ=UTC\n");
        test_agent_start(&agent, env);
        create_and_start("envy", 8080);
        pid_t pid = vm_pid("envy");
        cr_assert_gt(pid, 0);
        char *agent_env =
                sh("tr '\\0' '\\n' </proc/%d/environ | cut -d= -f1 | sort | tr '\\n' ' '", (int) agent.pid);
        cr_assert(strstr(agent_env, "NOTIFY_SOCKET") && strstr(agent_env, "CHVM_TEST_SECRET"), "%s",
                  agent_env);
        free(agent_env);
        char *o = sh("tr '\\0' '\\n' </proc/%d/environ | sort | tr '\\n' ' '", (int) pid);
        cr_assert_str_eq(o,
                         "FAKE_VMM_IGNORE_POWER=1 LANG=C.UTF-8 "
                         "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TZ=UTC ",
                         "the hypervisor's environment");
        free(o);
}

/* Issue 13: the control socket is made, chowned and unlinked by path; in a folder others may write, someone
 * could swap what the path names between the steps. Such a folder is refused, naming it. */
Test(agentd, a_socket_folder_others_may_write_is_refused) {
        char dir[] = "/tmp/chvm-open-XXXXXX", extra[256], sock[128], *log = NULL;
        cr_assert_not_null(mkdtemp(dir));
        cr_assert_eq(chmod(dir, 01777), 0);
        snprintf(sock, sizeof(sock), "%s/agent.sock", dir);
        snprintf(extra, sizeof(extra), "[agent]\nsocket = %s\n", sock);
        test_agent_init(&agent, extra);
        int status = test_agent_run_to_exit(&agent, NULL, &log);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "exit status %d: %s", status, log);
        cr_assert(strstr(log, "may be changed by others (owner uid 0, mode 1777)") && strstr(log, dir), "%s",
                  log);
        cr_assert_eq(access(sock, F_OK), -1, "a socket was made in %s", dir);
        free(log);
        rmdir(dir);
}

static char *definition(const char *name) {
        return sh("cat %s/vms/%s.vm", agent.state_dir, name);
}

/* A definition file is written without an fdatasync of its own: its text rides in the journal's VM_DEFINE,
 * whose sync makes it durable. What a power loss leaves of such a file (nothing, an empty file, a part) is
 * written again from the journal at the next start; a file an administrator edited wins, and is journaled
 * again so that a later restore brings the edit back, not the old text. */
Test(agentd, definitions_cut_short_by_a_power_loss_come_back_from_the_journal) {
        test_agent_init(&agent, NULL);
        test_agent_start(&agent, NULL);
        char *err;
        int r = ctl(&agent, NULL, &err, "create web --kernel %s/tests/fake-vmm -p 8011:80 --cpus 2",
                    test_build_dir());
        cr_assert_eq(r, 0, "%s", err);
        free(err);
        create_and_start("db", 8012);
        create_and_start("cache", 8013);
        pid_t db = vm_pid("db");
        char *web_text = definition("web"), *db_text = definition("db"), *cache_text = definition("cache");
        cr_assert(strstr(web_text, "name = web\n"), "%s", web_text);

        /* The agent dies; of the files only what reached the disk is left. */
        (void) test_agent_signal_wait(&agent, SIGKILL);
        free(sh("cd %s/vms && : > web.vm && rm db.vm && head -c 40 cache.vm > c && mv c cache.vm",
                agent.state_dir));
        test_agent_start(&agent, NULL);
        char *log = test_agent_log(&agent);
        cr_assert_eq(count_substr(log, "written again from the ownership journal"), 3, "%s", log);
        cr_assert(strstr(log, "VM web: "), "%s", log);
        free(log);
        char *now = definition("web");
        cr_assert_str_eq(now, web_text);
        free(now);
        now = definition("db");
        cr_assert_str_eq(now, db_text);
        free(now);
        now = definition("cache");
        cr_assert_str_eq(now, cache_text);
        free(now);
        cr_assert_eq(vm_pid("db"), db, "the running VM is adopted with its definition");
        char *s = vm_state("web");
        cr_assert_str_eq(s, "defined");
        free(s);
        r = ctl(&agent, NULL, &err, "start web");
        cr_assert_eq(r, 0, "%s", err);
        free(err);

        /* An edit while the agent is down takes effect, and is what a later restore brings back. */
        (void) test_agent_signal_wait(&agent, SIGTERM);
        free(sh("sed -i 's/^cpus = 2$/cpus = 3/' %s/vms/web.vm", agent.state_dir));
        test_agent_start(&agent, NULL);
        log = test_agent_log(&agent);
        cr_assert_eq(count_substr(log, "written again from the ownership journal"), 3,
                     "an edited file is not a damaged one:\n%s", log);
        free(log);
        (void) test_agent_signal_wait(&agent, SIGKILL);
        free(sh(": > %s/vms/web.vm", agent.state_dir));
        test_agent_start(&agent, NULL);
        now = definition("web");
        cr_assert(strstr(now, "\ncpus = 3\n"), "the edit was not journaled:\n%s", now);
        free(now);
        char *out;
        cr_assert_eq(ctl(&agent, &out, NULL, "inspect web --json | jq -r .cpus"), 0);
        cr_assert_str_eq(out, "3\n");
        free(out);

        /* An edit that does not parse is the administrator's to fix, not a damaged file: left as it is. */
        (void) test_agent_signal_wait(&agent, SIGTERM);
        free(sh("printf '[vm]\\nname = cache\\ncpus = lots\\n' > %s/vms/cache.vm", agent.state_dir));
        test_agent_start(&agent, NULL);
        now = definition("cache");
        cr_assert_str_eq(now, "[vm]\nname = cache\ncpus = lots\n");
        free(now);
        cr_assert_eq(ctl(&agent, &out, NULL, "inspect cache --json | jq -r .definition_error"), 0);
        cr_assert_str_eq(out, "its definition file does not parse\n");
        free(out);

        /* A removal is final: nothing brings the VM back. */
        cr_assert_eq(ctl(&agent, NULL, NULL, "rm -f web"), 0);
        (void) test_agent_signal_wait(&agent, SIGTERM);
        test_agent_start(&agent, NULL);
        cr_assert_eq(ctl(&agent, &out, NULL, "list -a -q"), 0);
        cr_assert_str_eq(out, "cache\ndb\n");
        free(out);
        free(web_text);
        free(db_text);
        free(cache_text);
}
