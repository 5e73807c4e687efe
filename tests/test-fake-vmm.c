/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The test hypervisor (tests/fake-vmm.c), started the way the agent starts cloud-hypervisor: the argv from
 * hypervisor_build_argv(), spawned with vmm_spawn(), on a TAP made by tap_create(). Each test runs in its
 * own process, which unshare()s a network namespace that disappears with it; `ip` in that namespace and
 * /proc are the oracles for the TAP. */

#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backends/nl/rtnl.h"
#include "tests/shell-oracle.h"
#include "vmm/argv.h"
#include "vmm/hypervisor.h"
#include "vmm/process.h"

#define TAP "chvmt-fake0"
#define TAG "chvm1:c41e5500-1234-4000-8000-deadbeef0001:00000000000000b1:tap"
#define MAC "02:c4:00:00:00:b1"

static char dir[] = "/tmp/chvm-fake-vmm-XXXXXX";
static char kernel[128], initrd[128], disk[128], sock_path[128], serial[128], log_path[128], pidfile[128];
static VmmProcess proc = { .pid = -1, .pidfd = -EBADF };

static const char *fake_vmm_path(void) {
#ifdef FAKE_VMM_PATH
        return FAKE_VMM_PATH;
#else
        return getenv("FAKE_VMM");
#endif
}

static void touch(const char *path) {
        FILE *f = fopen(path, "w");
        cr_assert(f, "%s: %s", path, strerror(errno));
        fclose(f);
}

static void setup(void) {
        Rtnl *rtnl = NULL;

        if (geteuid() != 0)
                cr_skip_test("needs root to create a network namespace (the test runs in its own)");
        if (!fake_vmm_path() || access(fake_vmm_path(), X_OK) < 0)
                cr_skip_test("fake-vmm not found (build it, or set FAKE_VMM)");
        if (unshare(CLONE_NEWNET) < 0)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
        if (access("/dev/net/tun", R_OK | W_OK) < 0)
                cr_skip_test("/dev/net/tun is not usable: %s", strerror(errno));
        cr_assert_eq(rtnl_open(&rtnl), 0);
        cr_assert_eq(tap_create(rtnl, TAP, TAG, (uid_t) -1, NULL), 0);
        rtnl_close(rtnl);

        cr_assert(mkdtemp(dir));
        snprintf(kernel, sizeof(kernel), "%s/vmlinuz", dir);
        snprintf(initrd, sizeof(initrd), "%s/initrd.img", dir);
        snprintf(disk, sizeof(disk), "%s/disk0.raw", dir);
        snprintf(sock_path, sizeof(sock_path), "%s/api.sock", dir);
        snprintf(serial, sizeof(serial), "%s/serial.log", dir);
        snprintf(log_path, sizeof(log_path), "%s/vmm.log", dir);
        snprintf(pidfile, sizeof(pidfile), "%s/fake-vmm.pid", dir);
        touch(kernel);
        touch(initrd);
        touch(disk);
}

static void teardown(void) {
        /* Only the process this test started, through its pidfd. */
        if (proc.pidfd >= 0) {
                (void) vmm_signal(proc.pidfd, SIGKILL);
                (void) waitid(P_PIDFD, (id_t) proc.pidfd, &(siginfo_t){}, WEXITED);
                close(proc.pidfd);
                proc.pidfd = -EBADF;
        }
        if (dir[0] && strcmp(dir + strlen(dir) - 6, "XXXXXX") != 0)
                free(sh("rm -rf '%s'", dir));
}

TestSuite(fake_vmm, .init = setup, .fini = teardown, .timeout = 30);

static char **build_argv(void) {
        const char *disks[] = { disk };
        VmSpec spec = {
                .name = "vm-fake",
                .kernel = kernel,
                .initrd = initrd,
                .disks = disks,
                .n_disks = 1,
                .cmdline = "quiet",
                .cpus = 2,
                .memory_mib = 256,
                .tap = TAP,
                .mac = { 0x02, 0xc4, 0, 0, 0, 0xb1 },
                .ip4 = 0x0a000002,
                .gateway4 = 0x0a000001,
                .prefixlen = 24,
                .api_socket = sock_path,
                .serial_log = serial,
                .binary = fake_vmm_path(),
        };
        Error err = {};
        char **argv = NULL;

        cr_assert_eq(hypervisor_build_argv(HYPERVISOR_CLOUD_HYPERVISOR, &spec, &argv, &err), 0, "%s",
                     error_message(&err));
        return argv;
}

static void spawn(char **argv) {
        Error err = {};

        cr_assert_eq(vmm_spawn(argv, log_path, &proc, &err), 0, "%s", error_message(&err));
}

static char *vmm_log(void) {
        return sh("cat '%s' 2>/dev/null", log_path);
}

static int connect_api(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        cr_assert_geq(fd, 0);
        memcpy(sa.sun_path, sock_path, strlen(sock_path));
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                close(fd);
                return -errno;
        }
        return fd;
}

/* The API socket answers (the agent's own readiness check does the same), or the test fails with the
 * hypervisor's log. */
static void wait_api(void) {
        for (int i = 0; i < 1000; i++) {
                int fd = connect_api();
                if (fd >= 0) {
                        close(fd);
                        return;
                }
                struct pollfd p = { .fd = proc.pidfd, .events = POLLIN };
                if (poll(&p, 1, 10) > 0) {
                        char *log = vmm_log();
                        cr_assert_fail("fake-vmm exited before serving its API socket: %s", log);
                }
        }
        cr_assert_fail("the API socket %s never answered", sock_path);
}

/* Sends raw bytes on a fresh connection and returns everything until the server closes (malloc'ed). */
static char *http_raw(const void *req, size_t len) {
        int fd = connect_api();
        char *out = NULL;
        size_t n = 0;

        cr_assert_geq(fd, 0, "connect: %s", strerror(-fd));
        /* A request over the server's limit may be answered and the connection closed before all of it is
         * sent: a short send (or EPIPE, ECONNRESET after some of it) is the server's answer coming. */
        for (size_t off = 0; off < len;) {
                ssize_t k = send(fd, (const char *) req + off, len - off, MSG_NOSIGNAL);
                if (k < 0 && off > 0 && (errno == EPIPE || errno == ECONNRESET))
                        break;
                cr_assert_gt(k, 0, "sent %zu of %zu bytes: %s", off, len, k < 0 ? strerror(errno) : "");
                off += (size_t) k;
        }
        for (;;) {
                char chunk[1024];
                struct pollfd p = { .fd = fd, .events = POLLIN };
                cr_assert_eq(poll(&p, 1, 5000), 1, "no answer from fake-vmm");
                ssize_t k = recv(fd, chunk, sizeof(chunk), 0);
                /* A server that closes with our request unread resets the connection after its answer. */
                cr_assert(k >= 0 || errno == ECONNRESET, "%s", strerror(errno));
                if (k <= 0)
                        break;
                out = realloc(out, n + (size_t) k + 1);
                cr_assert(out);
                memcpy(out + n, chunk, (size_t) k);
                n += (size_t) k;
        }
        if (!out)
                out = calloc(1, 1);
        else
                out[n] = '\0';
        close(fd);
        return out;
}

static char *http(const char *method, const char *target) {
        char req[256];
        int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                         method, target);
        return http_raw(req, (size_t) n);
}

static void assert_status(char *resp, const char *status) {
        cr_assert(strncmp(resp, status, strlen(status)) == 0, "expected %s, got: %s", status, resp);
        free(resp);
}

static siginfo_t wait_exit(void) {
        siginfo_t si = {};
        cr_assert_eq(waitid(P_PIDFD, (id_t) proc.pidfd, &si, WEXITED), 0, "%s", strerror(errno));
        close(proc.pidfd);
        proc.pidfd = -EBADF;
        return si;
}

static bool still_running_after(int ms) {
        struct pollfd p = { .fd = proc.pidfd, .events = POLLIN };
        return poll(&p, 1, ms) == 0;
}

static bool file_has(const char *path, const char *needle) {
        char *out = sh("cat '%s' 2>/dev/null", path);
        bool r = strstr(out, needle) != NULL;
        free(out);
        return r;
}

static bool tap_exists_tagged(void) {
        char *out = sh("ip -j -d link show dev " TAP " 2>/dev/null");
        bool r = strstr(out, "\"ifalias\":\"" TAG "\"") && strstr(out, "\"persist\":true");
        free(out);
        return r;
}

static bool tap_has_carrier(void) {
        char *out = sh("ip -o link show dev " TAP " 2>/dev/null");
        bool r = strstr(out, "LOWER_UP") != NULL;
        free(out);
        return r;
}

static void start(void) {
        char **argv = build_argv();
        spawn(argv);
        strv_free(argv);
        wait_api();
}

Test(fake_vmm, boots_with_the_agents_argv_on_the_tap) {
        setenv("FAKE_VMM_PIDFILE", pidfile, 1);
        start();

        char boot[256];
        snprintf(boot, sizeof(boot),
                 "fake-vmm: booted tap=" TAP " mac=" MAC " cpus=2 memory=256M kernel=%s\n", kernel);
        char *s = sh("cat '%s'", serial);
        cr_assert_str_eq(s, boot);
        free(s);

        char *pid = sh("cat '%s'", pidfile);
        cr_assert_eq(atoi(pid), proc.pid, "pidfile says %s", pid);
        free(pid);

        /* Attached: the kernel says the tun fd of our process is bound to the TAP, and the link has carrier.
         */
        char *fdinfo = sh("cat /proc/%d/fdinfo/* 2>/dev/null", (int) proc.pid);
        cr_assert(strstr(fdinfo, "iff:\t" TAP "\n"), "no tun fd attached to " TAP ": %s", fdinfo);
        free(fdinfo);
        cr_assert(tap_has_carrier());

        char *resp = http("GET", "/api/v1/vmm.ping");
        cr_assert(strstr(resp, "\r\n\r\n{") && strstr(resp, "\"version\""), "%s", resp);
        assert_status(resp, "HTTP/1.1 200 ");
        assert_status(http("GET", "/api/v1/vm.info"), "HTTP/1.1 404 ");

        /* SIGTERM: a clean exit that removes the socket; the agent's TAP stays, without carrier. */
        cr_assert_eq(vmm_signal(proc.pidfd, SIGTERM), 0);
        siginfo_t si = wait_exit();
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 0);
        cr_assert_neq(access(sock_path, F_OK), 0, "API socket left behind");
        cr_assert(tap_exists_tagged());
        cr_assert_not(tap_has_carrier());
}

Test(fake_vmm, power_button_powers_off) {
        start();
        assert_status(http("PUT", "/api/v1/vm.power-button"), "HTTP/1.1 204 No Content\r\n");
        siginfo_t si = wait_exit();
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 0);
        cr_assert(file_has(serial, "\npower-button\n"));
        cr_assert_neq(access(sock_path, F_OK), 0, "API socket left behind");
        cr_assert(tap_exists_tagged());
}

Test(fake_vmm, power_button_keep_alive_connection) {
        start();
        /* Two requests on one connection (HTTP/1.1 keep-alive), the last one closing it. */
        const char req[] = "GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n\r\n"
                           "PUT /api/v1/vm.power-button HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                           "Connection: close\r\n\r\n{}";
        char *resp = http_raw(req, sizeof(req) - 1);
        cr_assert(strncmp(resp, "HTTP/1.1 200 ", 13) == 0, "%s", resp);
        cr_assert(strstr(resp, "}HTTP/1.1 204 No Content\r\n"), "%s", resp);
        free(resp);
        siginfo_t si = wait_exit();
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 0);
}

Test(fake_vmm, ignore_power_keeps_running) {
        setenv("FAKE_VMM_IGNORE_POWER", "1", 1);
        start();
        assert_status(http("PUT", "/api/v1/vm.power-button"), "HTTP/1.1 204 ");
        cr_assert(still_running_after(500), "exited although told to ignore the power button");
        cr_assert(file_has(serial, "\npower-button\n"));
        assert_status(http("GET", "/api/v1/vmm.ping"), "HTTP/1.1 200 ");
        cr_assert_eq(vmm_signal(proc.pidfd, SIGTERM), 0);
        siginfo_t si = wait_exit();
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 0);
}

Test(fake_vmm, ignore_term_needs_sigkill) {
        setenv("FAKE_VMM_IGNORE_POWER", "1", 1);
        setenv("FAKE_VMM_IGNORE_TERM", "1", 1);
        start();
        cr_assert_eq(vmm_signal(proc.pidfd, SIGTERM), 0);
        cr_assert(still_running_after(300));
        cr_assert(file_has(serial, "SIGTERM ignored"));
        cr_assert_eq(vmm_signal(proc.pidfd, SIGKILL), 0);
        siginfo_t si = wait_exit();
        cr_assert_eq(si.si_code, CLD_KILLED);
        cr_assert_eq(si.si_status, SIGKILL);
}

Test(fake_vmm, crash_is_a_sigsegv) {
        setenv("FAKE_VMM_CRASH_AFTER_MS", "200", 1);
        start();
        siginfo_t si = wait_exit();
        cr_assert(si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED, "si_code %d", si.si_code);
        cr_assert_eq(si.si_status, SIGSEGV);
        cr_assert(tap_exists_tagged());
}

Test(fake_vmm, exit_code_on_request) {
        setenv("FAKE_VMM_EXIT_CODE", "7", 1);
        setenv("FAKE_VMM_EXIT_AFTER_MS", "200", 1);
        start();
        siginfo_t si = wait_exit();
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 7);
}

Test(fake_vmm, sigkill_leaves_the_persistent_tap) {
        start();
        cr_assert(tap_has_carrier());
        cr_assert_eq(vmm_signal(proc.pidfd, SIGKILL), 0);
        siginfo_t si = wait_exit();
        cr_assert_eq(si.si_code, CLD_KILLED);
        cr_assert_eq(si.si_status, SIGKILL);
        cr_assert(tap_exists_tagged(), "the agent's TAP must outlive the hypervisor");
        cr_assert_not(tap_has_carrier());
        /* Nobody removed the socket: the agent has to cope with a stale one. */
        cr_assert_eq(access(sock_path, F_OK), 0);
}

Test(fake_vmm, garbage_gets_400_and_the_server_stays_up) {
        static const char *const garbage[] = {
                "garbage\r\n\r\n",
                "GET\r\n\r\n",
                "get /api/v1/vmm.ping HTTP/1.1\r\n\r\n",
                "GET api/v1/vmm.ping HTTP/1.1\r\n\r\n",
                "GET /api/v1/vmm.ping HTTP/9.9\r\n\r\n",
                "GET /api/v1/vmm.ping HTTP/1.1\r\nno colon here\r\n\r\n",
                "GET /api/v1/vmm.ping HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "GET /api/v1/vmm.ping HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "PUT /api/v1/vm.power-button HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        };
        start();
        for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++)
                assert_status(http_raw(garbage[i], strlen(garbage[i])), "HTTP/1.1 400 ");

        /* NUL bytes, and a header that never ends within the request limit. */
        const char nul[] = "GET /api/v1/vmm.ping\0 HTTP/1.1\r\n\r\n";
        assert_status(http_raw(nul, sizeof(nul) - 1), "HTTP/1.1 400 ");
        size_t big = 64 * 1024;
        char *huge = malloc(big);
        cr_assert(huge);
        memset(huge, 'A', big);
        memcpy(huge, "GET /", 5);
        assert_status(http_raw(huge, big), "HTTP/1.1 400 ");
        free(huge);

        /* A client that connects and goes away without a word. */
        int fd = connect_api();
        cr_assert_geq(fd, 0);
        close(fd);

        cr_assert(still_running_after(100));
        assert_status(http("GET", "/api/v1/vmm.ping"), "HTTP/1.1 200 ");
        cr_assert_not(file_has(serial, "power-button"));
}

Test(fake_vmm, a_silent_client_does_not_block_others) {
        start();
        int idle = connect_api();
        cr_assert_geq(idle, 0);
        cr_assert_eq(send(idle, "GET /api/v1/", 12, MSG_NOSIGNAL), 12);
        assert_status(http("GET", "/api/v1/vmm.ping"), "HTTP/1.1 200 ");
        close(idle);
}

/* --- refusals ---------------------------------------------------------------------------------------- */

static siginfo_t run_refused(char **argv) {
        spawn(argv);
        return wait_exit();
}

Test(fake_vmm, unknown_option_exits_2) {
        char **argv = build_argv();
        size_t n = strv_length(argv);
        char **longer = calloc(n + 3, sizeof(char *));
        cr_assert(longer);
        memcpy(longer, argv, n * sizeof(char *));
        longer[n] = (char *) "--balloon";
        longer[n + 1] = (char *) "size=0";
        siginfo_t si = run_refused(longer);
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 2);
        char *log = vmm_log();
        cr_assert(strstr(log, "unknown option --balloon"), "%s", log);
        free(log);
        free(longer);
        strv_free(argv);
}

Test(fake_vmm, unknown_option_value_exits_2) {
        char **argv = build_argv();
        for (char **a = argv; *a; a++)
                if (strcmp(*a, "off") == 0) {
                        free(*a);
                        *a = strdup("pty");
                }
        siginfo_t si = run_refused(argv);
        strv_free(argv);
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 2);
}

Test(fake_vmm, missing_kernel_exits_1) {
        cr_assert_eq(unlink(kernel), 0);
        char **argv = build_argv();
        siginfo_t si = run_refused(argv);
        strv_free(argv);
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 1);
        char *log = vmm_log();
        cr_assert(strstr(log, "kernel"), "%s", log);
        free(log);
        cr_assert_neq(access(sock_path, F_OK), 0);
}

Test(fake_vmm, missing_tap_exits_1_and_creates_none) {
        free(sh("ip link del " TAP));
        char **argv = build_argv();
        siginfo_t si = run_refused(argv);
        strv_free(argv);
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 1);
        char *out = sh("ip -o link show dev " TAP " 2>/dev/null");
        cr_assert_str_eq(out, "", "fake-vmm created a TAP: %s", out);
        free(out);
}

Test(fake_vmm, taken_socket_path_exits_1) {
        touch(sock_path);
        char **argv = build_argv();
        siginfo_t si = run_refused(argv);
        strv_free(argv);
        cr_assert_eq(si.si_code, CLD_EXITED);
        cr_assert_eq(si.si_status, 1);
}
