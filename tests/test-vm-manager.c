/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Hypervisors watched through their pidfd: kill -9 (or any exit) tears the VM's network down at once and
 * journals the reason. With fake-vmm as the hypervisor, each test in its own network namespace. */

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/backend-loader.h"
#include "agent/dispatcher.h"
#include "agent/vm-manager.h"
#include "tests/shell-oracle.h"
#include "util/macro.h"
#include "vmm/process.h"

#define AGENT "c41e5500-1234-4000-8000-deadbeef0001"

static const uint8_t agent_bytes[16] = { 0xc4, 0x1e, 0x55, 0x00, 0x12, 0x34, 0x40, 0x00,
                                         0x80, 0x00, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01 };
static char dir[] = "/tmp/chvm-vm-manager-XXXXXX";
static char runtime[256];
static Journal *journal;
static Backend *backends[2];
static Dispatcher *disp;
static sd_event *event;
static VmManager *mgr;

/* What the callbacks saw. */
static unsigned n_ready, n_exit_before_ready, start_timeout;
static char last_exit_reason[256];

static void on_ready(VmManager *m, uint64_t vm_id, const char *name, void *userdata) {
        (void) m;
        (void) vm_id;
        (void) name;
        (void) userdata;
        n_ready++;
}

static void on_vm_exit(VmManager *m, uint64_t vm_id, const char *name, JournalVmState state,
                       const char *reason, int error, bool before_ready, void *userdata) {
        (void) m;
        (void) vm_id;
        (void) name;
        (void) state;
        (void) error;
        (void) userdata;
        n_exit_before_ready += before_ready;
        snprintf(last_exit_reason, sizeof(last_exit_reason), "%s", reason);
}

static void open_agent(void) {
        JournalOptions o = { .directory = dir };
        JournalReport rep;
        memcpy(o.agent_id, agent_bytes, 16);
        cr_assert_eq(journal_open(&o, &journal, &rep), 0, "%s", rep.message);

        /* local's defaults (chvm0, 192.168.200.0/24 with .1 as the gateway, tap-, table chvm), no DHCP */
        static const BackendSetting no_dhcp[] = { { "dhcp", "no", 0 } };
        BackendConfig lc = { .agent_id = AGENT, .settings = no_dhcp, .n_settings = 1 },
                      bc = { .agent_id = AGENT };
        Error err;
        cr_assert_eq(backend_load(BUILD_BACKEND_DIR, "local", &lc, &backends[0], &err), 0, "%s", err);
        cr_assert_eq(backend_load(BUILD_BACKEND_DIR, "mosnet", &bc, &backends[1], &err), 0, "%s", err);
        DispatcherConfig dc = {
                .journal = journal, .agent_id = AGENT, .backends = backends, .n_backends = 2
        };
        cr_assert_eq(dispatcher_new(&dc, &disp), 0);
        cr_assert_eq(sd_event_new(&event), 0);
        VmManagerConfig mc = { .event = event,
                               .journal = journal,
                               .dispatcher = disp,
                               .runtime_dir = runtime,
                               .hypervisor = HYPERVISOR_CLOUD_HYPERVISOR,
                               .binary = FAKE_VMM_PATH,
                               .pass_environment = (const char *const[]){ "FAKE_VMM_*", NULL },
                               .accel = VMM_ACCEL_TCG,
                               .on_ready = on_ready,
                               .on_exit = on_vm_exit,
                               .start_timeout_sec = start_timeout };
        cr_assert_eq(vm_manager_new(&mc, &mgr), 0);
}

/* Closes the agent's objects as a crash would leave its files: the state directory stays. */
static void teardown_keep_dir(void) {
        mgr = vm_manager_free(mgr);
        event = sd_event_unref(event);
        disp = dispatcher_free(disp);
        for (size_t i = 0; i < 2; i++)
                backends[i] = backend_unload(backends[i]);
        journal = journal_close(journal);
}

static void setup(void) {
        if (geteuid() != 0)
                cr_skip_test("needs root to create a network namespace (the test runs in its own)");
        if (access(FAKE_VMM_PATH, X_OK) < 0)
                cr_skip_test("fake-vmm not built at %s", FAKE_VMM_PATH);
        if (unshare(CLONE_NEWNET) < 0)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
        /* sd-event's child sources want SIGCHLD blocked */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGCHLD);
        cr_assert_eq(sigprocmask(SIG_BLOCK, &ss, NULL), 0);

        cr_assert(mkdtemp(dir));
        snprintf(runtime, sizeof(runtime), "%s/run", dir);
        open_agent();
}

static void teardown(void) {
        teardown_keep_dir();
        free(sh("rm -rf %s", dir));
}

TestSuite(vm_manager, .init = setup, .fini = teardown, .timeout = 60);

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* vm_manager_start() after the VM is defined in the journal, as the agent does at create. */
/* A VM on local without forwards whose hypervisor is fake-vmm (as the kernel too). */
static VmRequest fake_request(uint64_t id, const char *name) {
        return (VmRequest){ .vm_id = id,
                            .name = name,
                            .backend = "local",
                            .kernel = FAKE_VMM_PATH,
                            .cpus = 1,
                            .memory_mib = 64 };
}

static int start_defined(VmManager *m, const VmRequest *req) {
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), req->vm_id);
        if (!vm || strcmp(vm->name, req->name) != 0 || strcmp(vm->backend, req->backend) != 0)
                cr_assert_eq(dispatcher_define_vm(disp, req->vm_id, req->name, req->backend, NULL, true), 0,
                             "%s", dispatcher_error(disp));
        return vm_manager_start(m, req, NULL);
}

static void start(uint64_t id, const char *name, const char *backend, const PortForward *p, size_t n) {
        VmRequest req = { .vm_id = id,
                          .name = name,
                          .backend = backend,
                          .kernel = FAKE_VMM_PATH,
                          .cpus = 1,
                          .memory_mib = 64,
                          .ports = p,
                          .n_ports = n };
        cr_assert_eq(start_defined(mgr, &req), 0, "start %s: %s", name, vm_manager_error(mgr));
        /* as the agent answers a start: once the hypervisor's API answers */
        double t0 = now();
        while (!vm_manager_ready(mgr, id)) {
                cr_assert_neq(vm_manager_pid(mgr, id), 0, "VM %s exited before its API answered", name);
                cr_assert_lt(now() - t0, 5.0, "VM %s: its API did not answer within 5 s", name);
                cr_assert_geq(sd_event_run(event, 100000), 0);
        }
}

/* fake-vmm makes its API socket last, once its signal handlers and TAP are set up: ready when a
 * connection to it is accepted (the file appears at bind(), a moment before listen()). */
static void wait_ready(uint64_t id) {
        char path[512];
        snprintf(path, sizeof(path), "%s/vms/%016" PRIx64 "/api.sock", runtime, id);
        cr_assert(wait_unix_accepting(path, 5.0), "fake-vmm of VM %" PRIu64 " never accepted on %s", id,
                  path);
}

/* Runs the event loop until the VM is no longer running; returns the seconds it took (fails after 5 s). */
static double run_until_gone(uint64_t id) {
        double t0 = now();
        while (vm_manager_pid(mgr, id) != 0) {
                cr_assert_lt(now() - t0, 5.0, "VM %" PRIu64 " still running after 5 s", id);
                cr_assert_geq(sd_event_run(event, 100000), 0);
        }
        return now() - t0;
}

static unsigned released;
static int count_released(const JournalRecord *r, bool after_damage, void *userdata) {
        (void) after_damage;
        (void) userdata;
        if (r->type == JOURNAL_RELEASED)
                released++;
        return 0;
}

/* A hypervisor that started but cannot be watched is killed, and the journal must not keep it running:
 * a loop that has finished refuses every new source (ESTALE). Before the fix the VM stayed "running" in
 * the journal, and VM_UNDEFINE was refused (found by fuzz/fuzz-api, when the watch was sd-event's child
 * source, which SIGCHLD not blocked made fail). */
Test(vm_manager, start_that_cannot_watch_leaves_no_running_vm) {
        cr_assert_geq(sd_event_exit(event, 0), 0);
        cr_assert_geq(sd_event_run(event, 0), 0);
        cr_assert_eq(sd_event_get_state(event), SD_EVENT_FINISHED);
        VmRequest req = fake_request(7, "unwatched");
        cr_assert_lt(start_defined(mgr, &req), 0);
        cr_assert(strstr(vm_manager_error(mgr), "cannot watch its hypervisor"), "%s", vm_manager_error(mgr));
        cr_assert_eq(vm_manager_n_running(mgr), 0);
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 7);
        cr_assert_not_null(vm);
        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
        cr_assert_eq(vm->n_objects, 0, "its network is gone");
        char *taps = sh("ip -o link show type tun | wc -l");
        cr_assert_str_eq(taps, "0\n");
        free(taps);
        JournalRecord undefine = { .type = JOURNAL_VM_UNDEFINE,
                                   .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID),
                                   .vm_id = 7 };
        cr_assert_eq(journal_append_sync(journal, &undefine), 0, "%s", journal_error_message(journal));
}

/* Acceptance 1: 20 VMs, kill -9 of each hypervisor: its TAP and elements are gone within 1 s, the VM is
 * crashed with "killed by signal 9", and the journal has RELEASED for each of its objects. */
Test(vm_manager, kill_minus_nine_tears_down) {
        enum { N = 20 };
        for (unsigned i = 1; i <= N; i++) {
                char name[16];
                snprintf(name, sizeof(name), "vm%u", i);
                PortForward p = { IPPROTO_TCP, (uint16_t) (8000 + i), 80 };
                start(i, name, "local", &p, 1);
        }
        cr_assert_eq(vm_manager_n_running(mgr), N);
        char *taps = sh("ip -o link show type tun | wc -l");
        cr_assert_eq(atoi(taps), N);
        free(taps);

        double worst = 0;
        for (unsigned i = 1; i <= N; i++) {
                pid_t pid = vm_manager_pid(mgr, i);
                cr_assert_gt(pid, 0);
                cr_assert_eq(kill(pid, SIGKILL), 0); /* as an admin's kill -9 would */
                double dt = run_until_gone(i);
                if (dt > worst)
                        worst = dt;
                char tap[16];
                dispatcher_tap_name("tap-", i, tap);
                char *o = sh("ip -o link show dev %s 2>/dev/null; nft list ruleset | grep -c '%016x:'", tap,
                             i);
                cr_assert_str_eq(o, "0\n", "VM %u: TAP or elements left: %s", i, o);
                free(o);
                const LiveVm *vm = live_set_get_vm(journal_live_set(journal), i);
                cr_assert(vm);
                cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
                cr_assert_str_eq(vm->reason, "killed by signal 9");
                cr_assert_eq(vm->n_objects, 0);
                cr_assert_eq(vm->n_ips, 0);
        }
        cr_assert_lt(worst, 1.0, "slowest teardown after kill -9 took %.3f s", worst);
        cr_assert_eq(vm_manager_n_running(mgr), 0);

        /* Every object of every VM was RELEASED in the journal (TAP, port, addr, forward: 4 each). */
        JournalOptions o = { .directory = dir, .read_only = true, .on_record = count_released };
        JournalReport rep;
        Journal *ro;
        memcpy(o.agent_id, agent_bytes, 16);
        cr_assert_eq(journal_open(&o, &ro, &rep), 0, "%s", rep.message);
        cr_assert_eq(released, N * 4);
        journal_close(ro);
}

/* Acceptance 2: killing a VM whose hypervisor is already dead succeeds, and its network goes. */
Test(vm_manager, kill_of_dead_hypervisor) {
        PortForward p = { IPPROTO_UDP, 5353, 53 };
        start(1, "ghost", "local", &p, 1);
        pid_t pid = vm_manager_pid(mgr, 1);
        cr_assert_eq(kill(pid, SIGKILL), 0);
        usleep(100000); /* dead, not yet noticed by the agent */
        cr_assert_eq(vm_manager_kill(mgr, 1), 0, "%s", vm_manager_error(mgr));
        run_until_gone(1);
        char *o = sh("ip -o link show type tun | wc -l; nft list ruleset | grep -c 5353");
        cr_assert_str_eq(o, "0\n0\n");
        free(o);
        /* And a VM that is not running at all. */
        cr_assert_eq(vm_manager_kill(mgr, 1), 0);
        cr_assert_eq(vm_manager_kill(mgr, 42), 0);
}

/* A clean guest poweroff (exit 0) is "stopped", a non-zero exit "crashed", both with their reason. */
Test(vm_manager, exit_reasons) {
        start(1, "mos", "mosnet", NULL, 0);
        wait_ready(1);
        pid_t pid = vm_manager_pid(mgr, 1);
        cr_assert_eq(kill(pid, SIGTERM), 0); /* fake-vmm exits 0 on SIGTERM */
        run_until_gone(1);
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 1);
        cr_assert_eq(vm->state, JOURNAL_VM_STOPPED);
        cr_assert_str_eq(vm->reason, "exited with status 0");

        setenv("FAKE_VMM_EXIT_CODE", "7", 1);
        setenv("FAKE_VMM_EXIT_AFTER_MS", "300", 1); /* up first, then it exits */
        start(2, "seven", "local", NULL, 0);
        unsetenv("FAKE_VMM_EXIT_CODE");
        unsetenv("FAKE_VMM_EXIT_AFTER_MS");
        run_until_gone(2);
        vm = live_set_get_vm(journal_live_set(journal), 2);
        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
        cr_assert_str_eq(vm->reason, "exited with status 7");
        cr_assert_eq(vm->n_objects, 0, "the network of an exited VM was left up");
}

/* A start is done when the hypervisor's API answers its kind's readiness conversation (fake-vmm: GET
 * vmm.ping), not at the spawn: a hypervisor that makes its socket 400 ms late is starting until then. */
Test(vm_manager, ready_when_the_api_answers) {
        setenv("FAKE_VMM_LISTEN_AFTER_MS", "400", 1);
        VmRequest req = fake_request(1, "slow");
        double t0 = now();
        cr_assert_eq(start_defined(mgr, &req), 0, "%s", vm_manager_error(mgr));
        unsetenv("FAKE_VMM_LISTEN_AFTER_MS");
        cr_assert_neq(vm_manager_pid(mgr, 1), 0);
        cr_assert_not(vm_manager_ready(mgr, 1), "ready before its API exists");
        while (now() - t0 < 0.25)
                cr_assert_geq(sd_event_run(event, 10000), 0);
        cr_assert_not(vm_manager_ready(mgr, 1), "ready at 250 ms, its API comes at 400");
        cr_assert_eq(n_ready, 0);
        while (!vm_manager_ready(mgr, 1)) {
                cr_assert_lt(now() - t0, 5.0, "not ready after 5 s");
                cr_assert_geq(sd_event_run(event, 100000), 0);
        }
        double dt = now() - t0;
        cr_assert_geq(dt, 0.4, "ready after %.3f s, before its API existed", dt);
        cr_assert_eq(n_ready, 1);
        /* it answered a ping on the way */
        char path[512];
        snprintf(path, sizeof(path), "%s/vms/%016x/api.sock", runtime, 1);
        cr_assert_eq(access(path, F_OK), 0);
        /* a running VM's later exit is not a failed start */
        cr_assert_eq(kill(vm_manager_pid(mgr, 1), SIGTERM), 0);
        run_until_gone(1);
        cr_assert_eq(n_exit_before_ready, 0);
        cr_assert_str_eq(last_exit_reason, "exited with status 0");
}

/* A hypervisor that exits before its API answers failed to start: the exit says so, its network is gone;
 * one that does not answer within start_timeout is killed for it. */
Test(vm_manager, exit_or_silence_before_ready_fails_the_start) {
        setenv("FAKE_VMM_LISTEN_AFTER_MS", "5000", 1);
        setenv("FAKE_VMM_EXIT_CODE", "3", 1);
        setenv("FAKE_VMM_EXIT_AFTER_MS", "100", 1);
        VmRequest req = fake_request(1, "early");
        cr_assert_eq(start_defined(mgr, &req), 0, "%s", vm_manager_error(mgr));
        unsetenv("FAKE_VMM_EXIT_CODE");
        unsetenv("FAKE_VMM_EXIT_AFTER_MS");
        run_until_gone(1);
        cr_assert_eq(n_ready, 0);
        cr_assert_eq(n_exit_before_ready, 1);
        cr_assert_str_eq(last_exit_reason, "exited with status 3 before its API answered");
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 1);
        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
        cr_assert_eq(vm->n_objects, 0, "the network of a failed start stayed");

        /* silent for longer than the start timeout (1 s here) */
        teardown_keep_dir();
        start_timeout = 1;
        open_agent();
        start_timeout = 0;
        req.vm_id = 2;
        req.name = "silent";
        double t0 = now();
        cr_assert_eq(start_defined(mgr, &req), 0, "%s", vm_manager_error(mgr));
        unsetenv("FAKE_VMM_LISTEN_AFTER_MS");
        while (vm_manager_pid(mgr, 2) != 0) {
                cr_assert_lt(now() - t0, 5.0, "still there after 5 s");
                cr_assert_geq(sd_event_run(event, 100000), 0);
        }
        double dt = now() - t0;
        cr_assert(dt >= 1.0 && dt < 3.0, "killed after %.3f s, the timeout is 1 s", dt);
        cr_assert_eq(n_ready, 0);
        cr_assert_eq(n_exit_before_ready, 2);
        cr_assert_str_eq(last_exit_reason,
                         "killed by signal 9 (sent by the agent: its API did not answer within 1 s)");
        vm = live_set_get_vm(journal_live_set(journal), 2);
        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
        cr_assert_eq(vm->n_objects, 0);
        char *o = sh("ip -o link show type tun | wc -l");
        cr_assert_str_eq(o, "0\n");
        free(o);
}

/* A hypervisor that cannot be executed, or that refuses to start, leaves no network behind. */
Test(vm_manager, failed_start_leaves_nothing) {
        VmManagerConfig mc = { .event = event,
                               .journal = journal,
                               .dispatcher = disp,
                               .runtime_dir = runtime,
                               .hypervisor = HYPERVISOR_CLOUD_HYPERVISOR,
                               .binary = "/nonexistent/cloud-hypervisor",
                               .accel = VMM_ACCEL_TCG };
        VmManager *bad;
        cr_assert_eq(vm_manager_new(&mc, &bad), 0);
        VmRequest req = { .vm_id = 1,
                          .name = "noexec",
                          .backend = "local",
                          .kernel = FAKE_VMM_PATH,
                          .cpus = 1,
                          .memory_mib = 64 };
        cr_assert_eq(start_defined(bad, &req), -ENOENT);
        cr_assert(strstr(vm_manager_error(bad), "VM noexec: cannot execute /nonexistent/cloud-hypervisor"),
                  "%s", vm_manager_error(bad));
        vm_manager_free(bad);
        char *o = sh("ip -o link show type tun | wc -l");
        cr_assert_str_eq(o, "0\n");
        free(o);
        cr_assert_eq(live_set_get_vm(journal_live_set(journal), 1)->n_objects, 0);

        /* fake-vmm, like cloud-hypervisor, refuses a kernel that does not exist: exit 1 right away. */
        req = (VmRequest){ .vm_id = 2,
                           .name = "nokernel",
                           .backend = "local",
                           .kernel = "/nonexistent/vmlinuz",
                           .cpus = 1,
                           .memory_mib = 64 };
        cr_assert_eq(start_defined(mgr, &req), 0, "%s", vm_manager_error(mgr));
        run_until_gone(2);
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 2);
        cr_assert_str_eq(vm->reason, "exited with status 1 before its API answered");
        cr_assert_eq(vm->n_objects, 0);
        o = sh("ip -o link show type tun | wc -l");
        cr_assert_str_eq(o, "0\n");
        free(o);
}

/* The network is made at the spawn's gate, after VM_STARTED and the intents were synced together: when the
 * kernel refuses it (here the TAP's name is taken by an interface of someone else), the waiting hypervisor
 * is killed before it ran, the VM is journaled stopped with the kernel's cause, nothing of it stays, and
 * the other interface is untouched. */
Test(vm_manager, a_network_refused_at_the_gate_leaves_nothing) {
        char tap[16];
        dispatcher_tap_name("tap-", 3, tap);
        free(sh("ip link add %s type bridge", tap));
        VmRequest req = fake_request(3, "taken");
        int r = start_defined(mgr, &req);
        cr_assert_lt(r, 0, "started: %d", vm_manager_pid(mgr, 3));
        cr_assert(strstr(vm_manager_error(mgr), "VM taken: cannot create TAP "), "%s",
                  vm_manager_error(mgr));
        cr_assert_null(strstr(vm_manager_error(mgr), "VM taken: VM taken"), "%s", vm_manager_error(mgr));
        cr_assert_null(strstr(vm_manager_error(mgr), "not started: "),
                       "the kernel's cause, not the gate's: %s", vm_manager_error(mgr));
        cr_assert_eq(vm_manager_pid(mgr, 3), 0);
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 3);
        cr_assert_eq(vm->state, JOURNAL_VM_STOPPED);
        cr_assert_not_null(vm->reason);
        cr_assert_eq(vm->n_objects, 0, "the network of a refused start stayed");
        cr_assert_eq(vm->n_ips, 0, "its address stayed taken");
        char *o = sh("ip -o link show type tun | wc -l; ip -o link show dev %s type bridge | wc -l", tap);
        cr_assert_str_eq(o, "0\n1\n", "a TAP stayed, or the other interface went");
        free(o);
        o = sh("pgrep -af '[f]ake-vmm.*%s/vms/%016x'; true", runtime, 3);
        cr_assert_str_empty(o, "a hypervisor of it runs: %s", o);
        free(o);
        free(sh("ip link del %s", tap));

        /* and the next start, with the name free again, works */
        cr_assert_eq(start_defined(mgr, &req), 0, "%s", vm_manager_error(mgr));
        cr_assert_gt(vm_manager_pid(mgr, 3), 0);
        cr_assert_eq(vm_manager_kill(mgr, 3), 0, "%s", vm_manager_error(mgr));
        run_until_gone(3);
}

static char *serial_of(uint64_t id) {
        return sh("cat %s/vms/%016" PRIx64 "/serial.log", runtime, id);
}

/* Acceptance 5: a graceful stop reaches the guest (the power button), and a guest that ignores it — and
 * a hypervisor that ignores SIGTERM — is escalated to SIGKILL after the stop timeout. */
Test(vm_manager, graceful_stop_reaches_the_guest) {
        PortForward p = { IPPROTO_TCP, 8080, 80 };
        start(1, "polite", "local", &p, 1);
        wait_ready(1);
        cr_assert_eq(vm_manager_stop(mgr, 1, 5), 0, "%s", vm_manager_error(mgr));
        double dt = run_until_gone(1);
        char *serial = serial_of(1);
        cr_assert(strstr(serial, "power-button\n"), "the power button never reached the guest: %s", serial);
        cr_assert_not(strstr(serial, "SIGTERM"), "escalated although the guest powered off: %s", serial);
        free(serial);
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 1);
        cr_assert_eq(vm->state, JOURNAL_VM_STOPPED);
        cr_assert_str_eq(vm->reason, "exited with status 0");
        cr_assert_eq(vm->n_objects, 0);
        cr_assert_lt(dt, 5.0, "the graceful stop waited for the timeout");
}

Test(vm_manager, stop_timeout_escalates_to_sigkill) {
        setenv("FAKE_VMM_IGNORE_POWER", "1", 1);
        setenv("FAKE_VMM_IGNORE_TERM", "1", 1);
        start(1, "stubborn", "local", NULL, 0);
        unsetenv("FAKE_VMM_IGNORE_POWER");
        unsetenv("FAKE_VMM_IGNORE_TERM");
        wait_ready(1);
        cr_assert_eq(vm_manager_stop(mgr, 1, 1), 0, "%s", vm_manager_error(mgr));
        double dt = run_until_gone(1);
        char *serial = serial_of(1);
        cr_assert(strstr(serial, "power-button\n") && strstr(serial, "SIGTERM ignored"),
                  "expected the power button, then SIGTERM: %s", serial);
        free(serial);
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 1);
        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
        cr_assert_str_eq(vm->reason, "killed by signal 9");
        cr_assert_eq(vm->n_objects, 0);
        cr_assert_geq(dt, 1.9, "SIGKILL came before two stop timeouts (%.2f s)", dt);
        char *o = sh("ip -o link show type tun | wc -l");
        cr_assert_str_eq(o, "0\n");
        free(o);
}

/* The agent in a child process: starts n VMs, reports their hypervisors' PIDs, then waits to be killed. */
static pid_t run_agent_child(unsigned n, pid_t *ret_pids) {
        int pfd[2];
        cr_assert_eq(pipe(pfd), 0);
        teardown_keep_dir();
        pid_t child = fork();
        cr_assert_geq(child, 0);
        if (child == 0) {
                close(pfd[0]);
                open_agent();
                for (unsigned i = 1; i <= n; i++) {
                        char name[16];
                        snprintf(name, sizeof(name), "vm%u", i);
                        PortForward p = { IPPROTO_TCP, (uint16_t) (8000 + i), 80 };
                        VmRequest req = { .vm_id = i,
                                          .name = name,
                                          .backend = "local",
                                          .kernel = FAKE_VMM_PATH,
                                          .cpus = 1,
                                          .memory_mib = 64,
                                          .ports = &p,
                                          .n_ports = 1 };
                        if (start_defined(mgr, &req) < 0)
                                _exit(1);
                        pid_t pid = vm_manager_pid(mgr, i);
                        if (write(pfd[1], &pid, sizeof(pid)) != sizeof(pid))
                                _exit(1);
                }
                for (;;)
                        pause();
        }
        close(pfd[1]);
        for (unsigned i = 0; i < n; i++)
                cr_assert_eq(read(pfd[0], &ret_pids[i], sizeof(pid_t)), (ssize_t) sizeof(pid_t),
                             "the agent child failed");
        close(pfd[0]);
        return child;
}

/* As subreaper (orphaned hypervisors come back to us, as to PID 1): an agent child starts n VMs and is
 * SIGKILLed once they are up; their PIDs in ret_pids. */
static void agent_killed_with(unsigned n, pid_t *ret_pids) {
        cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
        pid_t agent = run_agent_child(n, ret_pids);
        for (unsigned i = 0; i < n; i++)
                wait_ready(i + 1);
        cr_assert_eq(kill(agent, SIGKILL), 0);
        cr_assert_eq(waitpid(agent, NULL, 0), agent);
}

/* Acceptance 3: the agent dies by SIGKILL with 10 VMs running; 5 hypervisors die while it is down; the
 * restarted agent adopts the 5 live ones (still running, objects intact) and tears down the 5 dead ones. */
Test(vm_manager, restart_adopts_live_and_cleans_dead) {
        enum { N = 10 };
        pid_t pids[N];
        agent_killed_with(N, pids);
        for (unsigned i = 0; i < N; i += 2) { /* VMs 1, 3, 5, 7, 9 */
                cr_assert_eq(kill(pids[i], SIGKILL), 0);
                cr_assert_eq(waitpid(pids[i], NULL, 0), pids[i]); /* reaped, as PID 1 would */
        }
        char *before = sh(
                "nft list ruleset | grep -oE 'comment \"[^\"]*:00000000000000(02|04|06|08|0a):[^\"]*\"' | sort");

        open_agent();
        size_t adopted, gone;
        cr_assert_eq(vm_manager_adopt_all(mgr, &adopted, &gone), 0, "%s", vm_manager_error(mgr));
        cr_assert_eq(adopted, 5);
        cr_assert_eq(gone, 5);
        for (unsigned i = 1; i <= N; i++) {
                char tap[16];
                dispatcher_tap_name("tap-", i, tap);
                char *o = sh("ip -o link show dev %s 2>/dev/null | wc -l", tap);
                const LiveVm *vm = live_set_get_vm(journal_live_set(journal), i);
                if (i % 2 == 1) {
                        cr_assert_str_eq(o, "0\n", "dead VM %u kept its TAP", i);
                        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
                        cr_assert_eq(vm->n_objects, 0);
                        cr_assert_eq(vm_manager_pid(mgr, i), 0);
                } else {
                        cr_assert_str_eq(o, "1\n", "live VM %u lost its TAP", i);
                        cr_assert_eq(vm->state, JOURNAL_VM_RUNNING);
                        cr_assert_eq(vm_manager_pid(mgr, i), pids[i - 1]);
                        cr_assert_eq(kill(pids[i - 1], 0), 0, "adopted hypervisor %u is not running", i);
                }
                free(o);
        }
        char *after = sh(
                "nft list ruleset | grep -oE 'comment \"[^\"]*:00000000000000(02|04|06|08|0a):[^\"]*\"' | sort");
        cr_assert_eq(count_substr(before, "comment"), 15, "expected 3 elements of each live VM: %s", before);
        cr_assert_str_eq(before, after, "the live VMs' elements changed");
        free(before);
        free(after);

        /* An adopted hypervisor that dies is noticed through its pidfd, without a readable status. */
        cr_assert_eq(kill(pids[1], SIGKILL), 0);
        run_until_gone(2);
        (void) waitpid(pids[1], NULL, 0);
        const LiveVm *vm2 = live_set_get_vm(journal_live_set(journal), 2);
        cr_assert_str_eq(vm2->reason, "exit status unknown");
        cr_assert_eq(vm2->state, JOURNAL_VM_CRASHED);
        cr_assert_eq(vm2->n_objects, 0);

        /* One stopped on request and gone by the power button is stopped, not crashed, status unknown or
         * not. */
        cr_assert_eq(vm_manager_stop(mgr, 4, 5), 0, "%s", vm_manager_error(mgr));
        cr_assert_lt(run_until_gone(4), 5.0);
        (void) waitpid(pids[3], NULL, 0);
        char *serial = serial_of(4);
        cr_assert(strstr(serial, "power-button\n"), "the power button never reached the guest: %s", serial);
        free(serial);
        const LiveVm *vm4 = live_set_get_vm(journal_live_set(journal), 4);
        cr_assert_eq(vm4->state, JOURNAL_VM_STOPPED);
        cr_assert_str_eq(vm4->reason, "exited after a stop request (exit status unknown)");
        cr_assert_eq(vm4->n_objects, 0);
        for (unsigned i = 5; i < N; i += 2) {
                kill(pids[i], SIGKILL);
                (void) waitpid(pids[i], NULL, 0);
        }
}

/* From here on, in this test's process, pidfd_send_signal(_, SIGKILL, ...) fails with EPERM, as it does for
 * an agent without CAP_KILL facing another uid's process. Everything else is allowed. */
static void deny_pidfd_sigkill(void) {
        struct sock_filter f[] = {
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_send_signal, 0, 3),
                BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[1])),
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SIGKILL, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
                BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = { .len = (unsigned short) ELEMENTSOF(f), .filter = f };
        cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
}

/* Hardening 7: a SIGKILL that could not be sent is not "killed by the agent". An adopted hypervisor (whose
 * exit status nobody can read) that the agent failed to kill, and that then dies of someone else's hand,
 * is journaled with its status unknown; the failed kill took its network down at once. */
Test(vm_manager, failed_kill_is_not_a_kill_by_the_agent) {
        pid_t pids[1];
        agent_killed_with(1, pids);
        open_agent();
        size_t adopted, gone;
        cr_assert_eq(vm_manager_adopt_all(mgr, &adopted, &gone), 0, "%s", vm_manager_error(mgr));
        cr_assert_eq(adopted, 1);

        deny_pidfd_sigkill();
        cr_assert_eq(vm_manager_kill(mgr, 1), -EPERM);
        cr_assert(strstr(vm_manager_error(mgr), "cannot kill its hypervisor"), "%s", vm_manager_error(mgr));
        cr_assert_eq(kill(pids[0], 0), 0, "the premise: the hypervisor still runs");
        char *o = sh("ip -o link show type tun | wc -l");
        cr_assert_str_eq(o, "0\n", "a failed kill left the TAP");
        free(o);

        cr_assert_eq(kill(pids[0], SIGKILL), 0); /* kill(2), not the pidfd: allowed */
        run_until_gone(1);
        (void) waitpid(pids[0], NULL, 0);
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 1);
        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
        cr_assert_str_eq(vm->reason, "exit status unknown");
        cr_assert_eq(vm->n_objects, 0);
}

/* Acceptance 4: the journal's PID now belongs to an unrelated process: it is not signalled, and the VM's
 * objects are torn down. */
Test(vm_manager, reused_pid_is_never_signalled) {
        pid_t pids[1];
        agent_killed_with(1, pids);
        cr_assert_eq(kill(pids[0], SIGKILL), 0);
        cr_assert_eq(waitpid(pids[0], NULL, 0), pids[0]);

        /* An unrelated program; the journal is made to name its PID with the old hypervisor's start time,
         * as if the PID had been reused. Start times count clock ticks (10 ms): a real reuse comes much
         * later than that, so let a few ticks pass, or the two processes would look the same. */
        usleep(50000);
        pid_t other = fork();
        cr_assert_geq(other, 0);
        if (other == 0) {
                execlp("sleep", "sleep", "30", (char *) NULL);
                _exit(127);
        }
        open_agent();
        const LiveVm *vm = live_set_get_vm(journal_live_set(journal), 1);
        JournalRecord rec = { .type = JOURNAL_VM_STARTED,
                              .fields = JOURNAL_FIELD_BIT(JOURNAL_FIELD_VM_ID) |
                                        JOURNAL_FIELD_BIT(JOURNAL_FIELD_PID) |
                                        JOURNAL_FIELD_BIT(JOURNAL_FIELD_START_TIME) |
                                        JOURNAL_FIELD_BIT(JOURNAL_FIELD_BOOT_ID),
                              .vm_id = 1,
                              .pid = (uint32_t) other,
                              .start_time = vm->start_time };
        memcpy(rec.boot_id, vm->boot_id, 16);
        cr_assert_eq(journal_append_sync(journal, &rec), 0);
        uint64_t other_start;
        cr_assert_eq(process_start_time(other, &other_start), 0);
        cr_assert_neq(other_start, vm->start_time, "the test's premise: another process's start time");

        size_t adopted, gone;
        cr_assert_eq(vm_manager_adopt_all(mgr, &adopted, &gone), 0, "%s", vm_manager_error(mgr));
        cr_assert_eq(adopted, 0);
        cr_assert_eq(gone, 1);
        vm = live_set_get_vm(journal_live_set(journal), 1);
        cr_assert_eq(vm->state, JOURNAL_VM_CRASHED);
        cr_assert(strstr(vm->reason, "PID is reused"), "%s", vm->reason);
        cr_assert_eq(vm->n_objects, 0);
        int status;
        cr_assert_eq(waitpid(other, &status, WNOHANG), 0, "the unrelated process was signalled");
        kill(other, SIGKILL);
        waitpid(other, NULL, 0);
        char *o = sh("ip -o link show type tun | wc -l");
        cr_assert_str_eq(o, "0\n");
        free(o);
}
