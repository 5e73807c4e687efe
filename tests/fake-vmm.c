/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* fake-vmm: the test hypervisor. It takes exactly the argv vmm/cloud-hypervisor.c builds, refuses what
 * cloud-hypervisor would refuse (a missing kernel, initramfs or disk; a TAP it cannot attach to; an API
 * socket path that is taken), attaches to the existing TAP the way cloud-hypervisor does (TUNSETIFF on the
 * name, fd kept open, link set up) and serves just enough of the HTTP API on --api-socket:
 *
 *   GET /api/v1/vmm.ping          200 with a small JSON body
 *   PUT /api/v1/vm.power-button   204; "power-button" appended to the serial file; exit 0 a moment later,
 *                                 like a guest that powers off (unless FAKE_VMM_IGNORE_POWER=1)
 *   anything else                 404; a request that is not HTTP gets 400 and the connection closed
 *
 * Exit status: 0 after a power-off or SIGTERM, 1 when cloud-hypervisor would have refused to start,
 * 2 for an option (or option value) it does not know, so drift in our argv builder shows up in tests.
 *
 * Environment (all optional):
 *   FAKE_VMM_PIDFILE=PATH          write our PID there once we are serving
 *   FAKE_VMM_IGNORE_POWER=1        answer power-button but keep running
 *   FAKE_VMM_IGNORE_TERM=1         log SIGTERM to the serial file and keep running (SIGKILL escalation)
 *   FAKE_VMM_CRASH_AFTER_MS=N      die of SIGSEGV N ms after start (no core dump)
 *   FAKE_VMM_EXIT_CODE=N           exit(N) FAKE_VMM_EXIT_AFTER_MS ms after start (default 0 ms)
 *   FAKE_VMM_EXIT_AFTER_MS=N       (exit code 0 when FAKE_VMM_EXIT_CODE is not set)
 *   FAKE_VMM_LISTEN_AFTER_MS=N     make the API socket only N ms after start (a hypervisor slow to come up;
 *                                  the agent answers its start only once the API answers)
 *   FAKE_VMM_SLOW_EXIT_MS=N        on a power-off or SIGTERM, take N ms to exit: the main thread ends at
 *                                  once, another one ends the process later (a hypervisor freeing a
 *                                  big guest's memory)
 *   FAKE_VMM_GUEST_NETNS=PATH      the guest's NIC as a link: a TAP named FAKE_VMM_GUEST_IFNAME (default
 *                                  eth0; "@tap": the VM's TAP's name, for many VMs in one namespace) with
 *                                  the guest's MAC in the network namespace at PATH, its frames
 *                                  relayed to and from the VM's TAP, so that a real DHCP client (or any
 *                                  program) in that namespace is the guest
 *
 * One thread (two for a slow exit), one poll() loop; clients are served as they come, a few at a time. */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util/macro.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2

#define MAX_CONNS 8
#define REQUEST_MAX 8192
#define BODY_MAX (UINT64_C(1) << 20)
#define CONN_IDLE_MS 10000
#define POWEROFF_DELAY_MS 50
#define MAX_DISKS 32

typedef struct Options {
        const char *api_socket;
        const char *kernel;
        const char *firmware;
        const char *initramfs;
        const char *cmdline;
        unsigned cpus;
        uint64_t memory_mib;
        const char *disks[MAX_DISKS];
        size_t n_disks;
        char tap[IFNAMSIZ];
        char mac[18]; /* "" when not given */
        const char *serial;
        bool console_off;
} Options;

typedef struct Conn {
        int fd;
        char buf[REQUEST_MAX];
        size_t len;
        uint64_t discard; /* body bytes of the current request still to skip */
        bool close_after; /* the request being skipped asked for Connection: close */
        int64_t last_activity;
} Conn;

static const char *api_socket_path;
static bool api_socket_bound;
static int serial_fd = -EBADF;

_printf_(1, 2) _noreturn_ static void die_usage(const char *fmt, ...) {
        va_list ap;

        fputs("fake-vmm: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(EXIT_USAGE);
}

_printf_(1, 2) _noreturn_ static void die_refused(const char *fmt, ...) {
        va_list ap;

        fputs("fake-vmm: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        if (api_socket_bound)
                (void) unlink(api_socket_path);
        exit(EXIT_REFUSED);
}

static int slow_exit_code;
static unsigned long slow_exit_ms;

static void *exit_later(void *arg) {
        (void) arg;
        (void) usleep((useconds_t) (slow_exit_ms * 1000));
        exit(slow_exit_code);
}

/* With FAKE_VMM_SLOW_EXIT_MS, the main thread ends (the process is "exiting" from then on, PF_EXITING in
 * /proc/PID/stat) while another thread keeps the process, its TAP and its pidfd alive for that long, as a
 * real hypervisor's teardown of a big guest does. */
_noreturn_ static void clean_exit(int code) {
        if (api_socket_bound)
                (void) unlink(api_socket_path);
        const char *slow = getenv("FAKE_VMM_SLOW_EXIT_MS");
        char *end;
        if (slow && slow[0] && (slow_exit_ms = strtoul(slow, &end, 10)) > 0 && !*end) {
                pthread_t t;
                slow_exit_code = code;
                if (pthread_create(&t, NULL, exit_later, NULL) == 0)
                        pthread_exit(NULL);
        }
        exit(code);
}

static int64_t now_ms(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || *s < '0' || *s > '9')
                return false;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > max)
                return false;
        *ret = v;
        return true;
}

/* A value of the form "key=rest": the rest, or NULL. */
static const char *strip_key(const char *value, const char *key) {
        size_t n = strlen(key);

        if (strncmp(value, key, n) != 0 || value[n] != '=')
                return NULL;
        return value + n + 1;
}

static void parse_net(Options *o, const char *value) {
        _cleanup_free_ char *copy = strdup(value);
        char *saveptr = NULL;
        bool have_tap = false;

        if (!copy)
                die_refused("out of memory");
        for (char *kv = strtok_r(copy, ",", &saveptr); kv; kv = strtok_r(NULL, ",", &saveptr)) {
                const char *v;

                if ((v = strip_key(kv, "tap"))) {
                        if (have_tap || *v == '\0' || strlen(v) >= IFNAMSIZ)
                                die_usage("--net: bad or repeated tap= in \"%s\"", value);
                        snprintf(o->tap, sizeof(o->tap), "%s", v);
                        have_tap = true;
                } else if ((v = strip_key(kv, "mac"))) {
                        unsigned b[6];
                        char tail;

                        if (o->mac[0] ||
                            sscanf(v, "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5],
                                   &tail) != 6 ||
                            strlen(v) != 17)
                                die_usage("--net: bad or repeated mac= in \"%s\"", value);
                        memcpy(o->mac, v, sizeof(o->mac));
                } else
                        die_usage("--net: unknown parameter \"%s\" (fake-vmm knows tap= and mac=)", kv);
        }
        if (!have_tap)
                die_usage("--net \"%s\" without tap= (fake-vmm does not create TAPs)", value);
}

static void parse_args(int argc, char *argv[], Options *o) {
        bool seen_cpus = false, seen_memory = false;

        for (int i = 1; i < argc; i++) {
                const char *opt = argv[i], *v;
                uint64_t n;

                if (strcmp(opt, "--disk") == 0) {
                        if (o->n_disks > 0)
                                die_usage("--disk given twice");
                        /* Several values after one flag; the next flag ends the list. */
                        while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                                const char *d = strip_key(argv[++i], "path");
                                if (!d || *d == '\0' || strchr(d, ','))
                                        die_usage("--disk: cannot parse \"%s\" (fake-vmm knows path=)",
                                                  argv[i]);
                                if (o->n_disks >= MAX_DISKS)
                                        die_usage("--disk: more than %d disks", MAX_DISKS);
                                o->disks[o->n_disks++] = d;
                        }
                        if (o->n_disks == 0)
                                die_usage("--disk without a value");
                        continue;
                }

                if (strncmp(opt, "--", 2) != 0)
                        die_usage("unexpected argument \"%s\"", opt);
                if (i + 1 >= argc)
                        die_usage("%s needs a value", opt);
                v = argv[++i];

#define ONCE(field)                                       \
        do {                                              \
                if (field)                                \
                        die_usage("%s given twice", opt); \
        } while (0)

                if (strcmp(opt, "--api-socket") == 0) {
                        ONCE(o->api_socket);
                        o->api_socket = strip_key(v, "path");
                        if (!o->api_socket || *o->api_socket == '\0' || strchr(o->api_socket, ','))
                                die_usage("--api-socket: cannot parse \"%s\" (fake-vmm knows path=)", v);
                } else if (strcmp(opt, "--kernel") == 0) {
                        ONCE(o->kernel);
                        o->kernel = v;
                } else if (strcmp(opt, "--firmware") == 0) {
                        ONCE(o->firmware);
                        o->firmware = v;
                } else if (strcmp(opt, "--initramfs") == 0) {
                        ONCE(o->initramfs);
                        o->initramfs = v;
                } else if (strcmp(opt, "--cmdline") == 0) {
                        ONCE(o->cmdline);
                        o->cmdline = v;
                } else if (strcmp(opt, "--cpus") == 0) {
                        const char *s = strip_key(v, "boot");
                        if (seen_cpus)
                                die_usage("--cpus given twice");
                        if (!parse_u64(s, 512, &n) || n == 0)
                                die_usage("--cpus: cannot parse \"%s\" (fake-vmm knows boot=N)", v);
                        o->cpus = (unsigned) n;
                        seen_cpus = true;
                } else if (strcmp(opt, "--memory") == 0) {
                        const char *s = strip_key(v, "size");
                        char num[32];
                        size_t len = s ? strlen(s) : 0;

                        if (seen_memory)
                                die_usage("--memory given twice");
                        if (len < 2 || len >= sizeof(num) || s[len - 1] != 'M')
                                die_usage("--memory: cannot parse \"%s\" (fake-vmm knows size=NM)", v);
                        memcpy(num, s, len - 1);
                        num[len - 1] = '\0';
                        if (!parse_u64(num, UINT64_C(1) << 24, &n) || n == 0)
                                die_usage("--memory: cannot parse \"%s\" (fake-vmm knows size=NM)", v);
                        o->memory_mib = n;
                        seen_memory = true;
                } else if (strcmp(opt, "--net") == 0) {
                        if (o->tap[0])
                                die_usage("--net given twice");
                        parse_net(o, v);
                } else if (strcmp(opt, "--serial") == 0) {
                        ONCE(o->serial);
                        o->serial = strip_key(v, "file");
                        if (!o->serial || *o->serial == '\0' || strchr(o->serial, ','))
                                die_usage("--serial: cannot parse \"%s\" (fake-vmm knows file=)", v);
                } else if (strcmp(opt, "--console") == 0) {
                        if (o->console_off)
                                die_usage("--console given twice");
                        if (strcmp(v, "off") != 0)
                                die_usage("--console: fake-vmm knows only \"off\", not \"%s\"", v);
                        o->console_off = true;
                } else
                        die_usage("unknown option %s", opt);
#undef ONCE
        }

        if (!o->api_socket)
                die_usage("--api-socket is missing");
        if (!o->kernel && !o->firmware)
                die_usage("--kernel or --firmware is missing");
        if (o->kernel && o->firmware)
                die_usage("--kernel and --firmware given together");
        if (!o->kernel && (o->initramfs || o->cmdline))
                die_usage("--initramfs and --cmdline need --kernel");
        if (!o->serial)
                die_usage("--serial is missing");
        /* cloud-hypervisor's own defaults */
        if (!seen_cpus)
                o->cpus = 1;
        if (!seen_memory)
                o->memory_mib = 512;
}

static void check_readable(const char *what, const char *path) {
        struct stat st;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                die_refused("cannot open %s %s: %m", what, path);
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                die_refused("%s %s is not a regular file", what, path);
}

/* Like cloud-hypervisor with tap=NAME: attach to the existing TAP and bring it up. TUNSETIFF on a name that
 * does not exist would create a new non-persistent TAP, so the name is checked first and the attached
 * device must be persistent (one the agent made). */
static int tap_attach(const char *name) {
        _cleanup_close_ int fd = -EBADF, sock = -EBADF;
        struct ifreq ifr = {};

        if (if_nametoindex(name) == 0)
                die_refused("TAP %s does not exist: %m", name);
        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                die_refused("cannot open /dev/net/tun: %m");
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        memcpy(ifr.ifr_name, name, strlen(name));
        if (ioctl(fd, TUNSETIFF, &ifr) < 0)
                die_refused("cannot attach to TAP %s (TUNSETIFF): %m", name);

        memset(&ifr, 0, sizeof(ifr));
        if (ioctl(fd, TUNGETIFF, &ifr) < 0)
                die_refused("TUNGETIFF on TAP %s: %m", name);
        if (!(ifr.ifr_flags & IFF_PERSIST))
                die_refused("TAP %s vanished before we attached (we would have created it)", name);

        sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0)
                die_refused("socket: %m");
        memset(&ifr, 0, sizeof(ifr));
        memcpy(ifr.ifr_name, name, strlen(name));
        if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
                die_refused("SIOCGIFFLAGS on %s: %m", name);
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
                die_refused("cannot set TAP %s up: %m", name);
        return TAKE_FD(fd);
}

/* FAKE_VMM_GUEST_NETNS: the guest side, a TAP without the virtio header in another namespace. */
static int guest_link(const char *netns, const char *ifname, const char *mac) {
        _cleanup_close_ int own = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int target = open(netns, O_RDONLY | O_CLOEXEC);
        _cleanup_close_ int fd = -EBADF, sock = -EBADF;
        struct ifreq ifr = {};
        unsigned m[6];

        if (own < 0 || target < 0)
                die_refused("FAKE_VMM_GUEST_NETNS=%s: %m", netns);
        if (setns(target, CLONE_NEWNET) < 0)
                die_refused("setns %s: %m", netns);
        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                die_refused("cannot open /dev/net/tun: %m");
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0)
                die_refused("cannot make the guest link %s in %s: %m", ifname, netns);
        sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0)
                die_refused("socket: %m");
        if (mac && sscanf(mac, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6) {
                ifr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
                for (int i = 0; i < 6; i++)
                        ifr.ifr_hwaddr.sa_data[i] = (char) m[i];
                if (ioctl(sock, SIOCSIFHWADDR, &ifr) < 0)
                        die_refused("cannot set the MAC of %s: %m", ifname);
        }
        if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
                die_refused("SIOCGIFFLAGS on %s: %m", ifname);
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
                die_refused("cannot set %s up: %m", ifname);
        if (setns(own, CLONE_NEWNET) < 0)
                die_refused("setns back: %m");
        return TAKE_FD(fd);
}

/* One frame from `from` to `to`; the VM's TAP carries a virtio_net_hdr (IFF_VNET_HDR, 10 bytes) before each
 * frame, the guest link none. */
static void relay(int from, int to, bool from_vnet) {
        uint8_t buf[65536 + 10];
        const size_t hdr = 10;
        for (int i = 0; i < 64; i++) {
                ssize_t n =
                        read(from, from_vnet ? buf : buf + hdr, from_vnet ? sizeof(buf) : sizeof(buf) - hdr);
                if (n <= 0)
                        return;
                if (from_vnet) {
                        if ((size_t) n > hdr)
                                (void) !write(to, buf + hdr, (size_t) n - hdr);
                } else {
                        memset(buf, 0, hdr);
                        (void) !write(to, buf, (size_t) n + hdr);
                }
        }
}

_printf_(1, 2) static void serial_printf(const char *fmt, ...) {
        char line[1024];
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t) n >= sizeof(line))
                n = sizeof(line) - 1;
        /* One write(2) on an O_APPEND fd: a line is never interleaved with another writer's. */
        if (write(serial_fd, line, (size_t) n) != n)
                fprintf(stderr, "fake-vmm: writing the serial file failed: %m, ignoring\n");
}

static void write_pidfile(const char *path) {
        char tmp[PATH_MAX], buf[32];
        int n;
        _cleanup_close_ int fd = -EBADF;

        if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int) sizeof(tmp))
                die_refused("FAKE_VMM_PIDFILE is too long");
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                die_refused("cannot create %s: %m", tmp);
        n = snprintf(buf, sizeof(buf), "%d\n", (int) getpid());
        if (write(fd, buf, (size_t) n) != n || rename(tmp, path) < 0)
                die_refused("cannot write %s: %m", path);
}

static int api_listen(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -EBADF;

        if (strlen(path) >= sizeof(sa.sun_path))
                die_refused("API socket path %s is too long", path);
        memcpy(sa.sun_path, path, strlen(path));
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                die_refused("socket: %m");
        /* Like cloud-hypervisor, a path that is taken (even by a stale socket) is an error. */
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                die_refused("cannot bind API socket %s: %m", path);
        api_socket_path = path;
        api_socket_bound = true;
        if (listen(fd, 16) < 0)
                die_refused("listen on %s: %m", path);
        return TAKE_FD(fd);
}

/* FAKE_VMM_EXIT_AFTER_MS: to the serial file, and like a hypervisor that gives up, to stderr when not 0. */
_noreturn_ static void planned_exit(int code) {
        serial_printf("fake-vmm: exiting with status %d\n", code);
        if (code)
                fprintf(stderr, "fake-vmm: exiting with status %d (FAKE_VMM_EXIT_CODE)\n", code);
        clean_exit(code);
}

static int64_t env_ms(const char *name, int64_t start) {
        const char *s = getenv(name);
        uint64_t v;

        if (!s)
                return -1;
        if (!parse_u64(s, INT32_MAX, &v))
                die_usage("%s=\"%s\" is not a number of milliseconds", name, s);
        return start + (int64_t) v;
}

static bool env_flag(const char *name) {
        const char *s = getenv(name);

        return s && strcmp(s, "1") == 0;
}

_noreturn_ static void crash(void) {
        /* Die of the signal itself: not through a sanitizer's SEGV handler, and without a core dump (which
         * a piped core_pattern would make slow). */
        (void) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        (void) signal(SIGSEGV, SIG_DFL);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGSEGV);
        (void) sigprocmask(SIG_UNBLOCK, &s, NULL);
        (void) raise(SIGSEGV);
        abort();
}

/* --- HTTP ------------------------------------------------------------------------------------------- */

static void conn_close(Conn *c) {
        c->fd = safe_close(c->fd);
        c->len = 0;
        c->discard = 0;
        c->close_after = false;
}

/* Small responses on a unix socket go out in one send(); a client that does not read its answers and
 * fills the buffer loses the connection. */
static bool conn_send(Conn *c, const char *status, const char *content_type, const char *body, bool close) {
        char msg[1024];
        size_t body_len = body ? strlen(body) : 0;
        int n;

        if (content_type)
                n = snprintf(
                        msg, sizeof(msg),
                        "HTTP/1.1 %s\r\nServer: fake-vmm\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s\r\n%s",
                        status, content_type, body_len, close ? "Connection: close\r\n" : "",
                        body ? body : "");
        else if (strncmp(status, "204", 3) == 0)
                n = snprintf(msg, sizeof(msg), "HTTP/1.1 %s\r\nServer: fake-vmm\r\n%s\r\n", status,
                             close ? "Connection: close\r\n" : "");
        else
                n = snprintf(msg, sizeof(msg),
                             "HTTP/1.1 %s\r\nServer: fake-vmm\r\nContent-Length: 0\r\n%s\r\n", status,
                             close ? "Connection: close\r\n" : "");
        if (n < 0 || (size_t) n >= sizeof(msg))
                abort(); /* our own fixed texts */
        if (send(c->fd, msg, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
                conn_close(c);
                return false;
        }
        return true;
}

static bool is_tchar(char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch));
}

typedef enum Action {
        ACTION_NONE,
        ACTION_POWER_OFF,
} Action;

/* Handles the complete requests in c->buf. Returns whether the guest was asked to power off. */
static Action conn_process(Conn *c) {
        Action action = ACTION_NONE;

        while (c->fd >= 0) {
                if (c->discard > 0) {
                        size_t k = c->discard < c->len ? (size_t) c->discard : c->len;
                        memmove(c->buf, c->buf + k, c->len - k);
                        c->len -= k;
                        c->discard -= k;
                        if (c->discard > 0)
                                return action;
                        if (c->close_after) {
                                conn_close(c);
                                return action;
                        }
                }
                if (c->len == 0)
                        return action;

                char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
                if (!end) {
                        if (c->len >= sizeof(c->buf) || memchr(c->buf, '\0', c->len)) {
                                (void) conn_send(c, "400 Bad Request", NULL, NULL, true);
                                conn_close(c);
                        }
                        return action;
                }
                size_t head_len = (size_t) (end - c->buf) + 4;
                char head[REQUEST_MAX + 1];
                memcpy(head, c->buf, head_len - 2);
                head[head_len - 2] = '\0'; /* keeps the CRLF of the last header line */

                /* request line: METHOD SP TARGET SP HTTP/1.x */
                char *line_end = strstr(head, "\r\n");
                char *method = head, *target = NULL, *version = NULL, *p;
                bool bad = memchr(head, '\0', head_len - 2) != NULL || !line_end;
                bool close = false;
                uint64_t content_length = 0;

                if (!bad) {
                        *line_end = '\0';
                        target = strchr(method, ' ');
                        version = target ? strchr(target + 1, ' ') : NULL;
                        bad = !target || !version || target == method;
                        if (!bad) {
                                *target++ = '\0';
                                *version++ = '\0';
                                for (p = method; *p && !bad; p++)
                                        bad = *p < 'A' || *p > 'Z';
                                bad = bad || target[0] != '/' || strchr(target, ' ') ||
                                      (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0);
                                close = !bad && strcmp(version, "HTTP/1.0") == 0;
                        }
                }
                /* headers: Name: value CRLF */
                for (p = line_end ? line_end + 2 : NULL; !bad && p && *p;) {
                        char *eol = strstr(p, "\r\n"), *colon, *val;
                        if (!eol) {
                                bad = true;
                                break;
                        }
                        *eol = '\0';
                        colon = strchr(p, ':');
                        bad = !colon || colon == p;
                        for (char *q = p; !bad && q < colon; q++)
                                bad = !is_tchar(*q);
                        if (bad)
                                break;
                        *colon = '\0';
                        for (val = colon + 1; *val == ' ' || *val == '\t'; val++)
                                ;
                        for (char *t = val + strlen(val); t > val && (t[-1] == ' ' || t[-1] == '\t'); t--)
                                t[-1] = '\0';
                        if (strcasecmp(p, "Content-Length") == 0)
                                bad = !parse_u64(val, BODY_MAX, &content_length);
                        else if (strcasecmp(p, "Transfer-Encoding") == 0)
                                bad = true; /* not spoken here, nor by cloud-hypervisor */
                        else if (strcasecmp(p, "Connection") == 0 && strcasecmp(val, "close") == 0)
                                close = true;
                        p = eol + 2;
                }
                if (bad) {
                        (void) conn_send(c, "400 Bad Request", NULL, NULL, true);
                        conn_close(c);
                        return action;
                }

                bool ok;
                if (strcmp(method, "PUT") == 0 && strcmp(target, "/api/v1/vm.power-button") == 0) {
                        serial_printf("power-button\n");
                        ok = conn_send(c, "204 No Content", NULL, NULL, close);
                        if (!env_flag("FAKE_VMM_IGNORE_POWER"))
                                action = ACTION_POWER_OFF;
                } else if (strcmp(method, "GET") == 0 && strcmp(target, "/api/v1/vmm.ping") == 0) {
                        char body[128];
                        snprintf(body, sizeof(body),
                                 "{\"build_version\":\"fake-vmm\",\"version\":\"fake-vmm\",\"pid\":%d}",
                                 (int) getpid());
                        ok = conn_send(c, "200 OK", "application/json", body, close);
                } else
                        ok = conn_send(c, "404 Not Found", NULL, NULL, close);
                if (!ok)
                        return action;

                memmove(c->buf, c->buf + head_len, c->len - head_len);
                c->len -= head_len;
                c->discard = content_length;
                c->close_after = close;
                if (close && content_length == 0)
                        conn_close(c);
        }
        return action;
}

/* Reads what the client sent. Returns whether the guest was asked to power off. */
static Action conn_read(Conn *c, int64_t now) {
        ssize_t n;

        if (c->discard > 0 && c->len == sizeof(c->buf)) /* cannot happen: discard drains the buffer */
                abort();
        n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return ACTION_NONE;
                conn_close(c);
                return ACTION_NONE;
        }
        if (n == 0) {
                conn_close(c);
                return ACTION_NONE;
        }
        c->len += (size_t) n;
        c->last_activity = now;
        return conn_process(c);
}

/* --- main ------------------------------------------------------------------------------------------- */

int main(int argc, char *argv[]) {
        Options o = {};
        _cleanup_close_ int tap_fd = -EBADF, listen_fd = -EBADF, sig_fd = -EBADF, guest_fd = -EBADF;
        Conn conns[MAX_CONNS];
        int64_t start = now_ms(), crash_at, exit_at, poweroff_at = -1;
        int exit_code = 0;
        bool ignore_term = env_flag("FAKE_VMM_IGNORE_TERM");
        sigset_t mask;
        char mac[18] = "none";

        parse_args(argc, argv, &o);

        crash_at = env_ms("FAKE_VMM_CRASH_AFTER_MS", start);
        exit_at = env_ms("FAKE_VMM_EXIT_AFTER_MS", start);
        if (getenv("FAKE_VMM_EXIT_CODE")) {
                uint64_t v;
                if (!parse_u64(getenv("FAKE_VMM_EXIT_CODE"), 255, &v))
                        die_usage("FAKE_VMM_EXIT_CODE=\"%s\" is not 0..255", getenv("FAKE_VMM_EXIT_CODE"));
                exit_code = (int) v;
                if (exit_at < 0)
                        exit_at = start;
        }

        /* What cloud-hypervisor would refuse to start without. */
        if (o.kernel)
                check_readable("kernel", o.kernel);
        else
                check_readable("firmware", o.firmware);
        if (o.initramfs)
                check_readable("initramfs", o.initramfs);
        for (size_t i = 0; i < o.n_disks; i++)
                check_readable("disk", o.disks[i]);

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                die_refused("sigprocmask: %m");
        sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sig_fd < 0)
                die_refused("signalfd: %m");
        (void) signal(SIGPIPE, SIG_IGN);

        serial_fd = open(o.serial, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
        if (serial_fd < 0)
                die_refused("cannot open serial file %s: %m", o.serial);

        if (o.tap[0]) {
                tap_fd = tap_attach(o.tap);
                snprintf(mac, sizeof(mac), "%s", o.mac[0] ? o.mac : "random");
                if (getenv("FAKE_VMM_GUEST_NETNS")) {
                        const char *ifname = getenv("FAKE_VMM_GUEST_IFNAME") ?: "eth0";
                        guest_fd = guest_link(getenv("FAKE_VMM_GUEST_NETNS"),
                                              strcmp(ifname, "@tap") == 0 ? o.tap : ifname,
                                              o.mac[0] ? o.mac : NULL);
                }
        }

        serial_printf("fake-vmm: booted tap=%s mac=%s cpus=%u memory=%" PRIu64 "M %s=%s\n",
                      o.tap[0] ? o.tap : "none", mac, o.cpus, o.memory_mib, o.kernel ? "kernel" : "firmware",
                      o.kernel ? o.kernel : o.firmware);
        if (getenv("FAKE_VMM_PIDFILE"))
                write_pidfile(getenv("FAKE_VMM_PIDFILE"));
        /* A hypervisor slow to come up: its API socket appears only then (a crash, an exit or SIGTERM
         * may come first). */
        int64_t listen_at = env_ms("FAKE_VMM_LISTEN_AFTER_MS", start);
        for (int64_t now; listen_at >= 0 && (now = now_ms()) < listen_at;) {
                if (crash_at >= 0 && now >= crash_at)
                        crash();
                if (exit_at >= 0 && now >= exit_at)
                        planned_exit(exit_code);
                int64_t until = listen_at;
                if (crash_at >= 0 && crash_at < until)
                        until = crash_at;
                if (exit_at >= 0 && exit_at < until)
                        until = exit_at;
                struct pollfd p = { .fd = sig_fd, .events = POLLIN };
                if (poll(&p, 1, (int) (until - now)) > 0) {
                        struct signalfd_siginfo si;
                        if (read(sig_fd, &si, sizeof(si)) == (ssize_t) sizeof(si) && !ignore_term) {
                                serial_printf("fake-vmm: signal %u before serving, exiting\n", si.ssi_signo);
                                clean_exit(0);
                        }
                }
        }
        /* Last: a test that waits for the socket then finds everything above in place. */
        listen_fd = api_listen(o.api_socket);

        for (size_t i = 0; i < MAX_CONNS; i++)
                conns[i] = (Conn){ .fd = -EBADF };

        for (;;) {
                struct pollfd pfd[4 + MAX_CONNS];
                Conn *pconn[4 + MAX_CONNS];
                size_t n = 0, active = 0;
                int64_t now = now_ms(), next = -1;

                if (crash_at >= 0 && now >= crash_at)
                        crash();
                if (exit_at >= 0 && now >= exit_at)
                        planned_exit(exit_code);
                if (poweroff_at >= 0 && now >= poweroff_at) {
                        serial_printf("fake-vmm: powered off\n");
                        clean_exit(0);
                }
                for (size_t i = 0; i < MAX_CONNS; i++) {
                        if (conns[i].fd < 0)
                                continue;
                        if (now - conns[i].last_activity >= CONN_IDLE_MS) {
                                conn_close(&conns[i]);
                                continue;
                        }
                        active++;
                        int64_t t = conns[i].last_activity + CONN_IDLE_MS;
                        if (next < 0 || t < next)
                                next = t;
                }
                int64_t deadlines[] = { crash_at, exit_at, poweroff_at };
                for (size_t i = 0; i < ELEMENTSOF(deadlines); i++)
                        if (deadlines[i] >= 0 && (next < 0 || deadlines[i] < next))
                                next = deadlines[i];

                pfd[n] = (struct pollfd){ .fd = sig_fd, .events = POLLIN };
                pconn[n++] = NULL;
                if (guest_fd >= 0) {
                        pfd[n] = (struct pollfd){ .fd = tap_fd, .events = POLLIN };
                        pconn[n++] = NULL;
                        pfd[n] = (struct pollfd){ .fd = guest_fd, .events = POLLIN };
                        pconn[n++] = NULL;
                }
                if (active < MAX_CONNS) { /* when full, new clients wait in the backlog */
                        pfd[n] = (struct pollfd){ .fd = listen_fd, .events = POLLIN };
                        pconn[n++] = NULL;
                }
                for (size_t i = 0; i < MAX_CONNS; i++)
                        if (conns[i].fd >= 0) {
                                pfd[n] = (struct pollfd){ .fd = conns[i].fd, .events = POLLIN };
                                pconn[n++] = &conns[i];
                        }

                int timeout = next < 0 ? -1 : (int) (next - now > INT32_MAX ? INT32_MAX : next - now);
                if (poll(pfd, n, timeout) < 0) {
                        if (errno == EINTR)
                                continue;
                        die_refused("poll: %m");
                }
                now = now_ms();

                for (size_t i = 0; i < n; i++) {
                        if (pfd[i].revents == 0)
                                continue;
                        if (pfd[i].fd == sig_fd) {
                                struct signalfd_siginfo si;
                                while (read(sig_fd, &si, sizeof(si)) == (ssize_t) sizeof(si)) {
                                        if (si.ssi_signo == SIGTERM && ignore_term) {
                                                serial_printf("fake-vmm: SIGTERM ignored\n");
                                                continue;
                                        }
                                        serial_printf("fake-vmm: %s, exiting\n",
                                                      si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                                        clean_exit(0);
                                }
                        } else if (guest_fd >= 0 && pfd[i].fd == tap_fd) {
                                relay(tap_fd, guest_fd, true);
                        } else if (guest_fd >= 0 && pfd[i].fd == guest_fd) {
                                relay(guest_fd, tap_fd, false);
                        } else if (pfd[i].fd == listen_fd) {
                                int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                                if (fd < 0)
                                        continue; /* EAGAIN, ECONNABORTED, EMFILE: try again later */
                                for (size_t k = 0; k < MAX_CONNS; k++)
                                        if (conns[k].fd < 0) {
                                                conns[k] = (Conn){ .fd = fd, .last_activity = now };
                                                fd = -EBADF;
                                                break;
                                        }
                                safe_close(fd);
                        } else if (pconn[i] && pconn[i]->fd == pfd[i].fd) {
                                if (conn_read(pconn[i], now) == ACTION_POWER_OFF && poweroff_at < 0)
                                        poweroff_at = now + POWEROFF_DELAY_MS;
                        }
                }
        }
}
