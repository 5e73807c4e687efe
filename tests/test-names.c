/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Our name validators against the kernel itself: util/ifname.c ifname_valid(), the TAP names that
 * agent/dispatcher.c derives from VM ids with every prefix agent/config.c accepts, and util/vmname.c
 * vm_name_valid(). The rule under test: we never accept a name the kernel refuses (being stricter is
 * fine; the figures, in tests/test-names.figures of the build tree, say where).
 *
 * Every kernel test runs in a network namespace of its own (unshare() in the test's process; it goes with
 * the process). The kernel is asked through one rtnetlink socket with many requests in flight per send,
 * in two ways:
 *   - its name check alone, for every string tried: RTM_NEWLINK of a veth pair whose peer has the name
 *     under test and the ifindex of lo. The kernel checks the peer's name (dev_get_valid_name(), '%d'
 *     templates resolved) before it reserves the ifindex, so it answers EINVAL for a name it refuses and
 *     EBUSY for one it takes, and registers nothing either way (~25 us a name).
 *   - a real link: an ifb device (a veth pair where there is no ifb) with that name, put in a netdev
 *     group that one RTM_DELLINK empties per batch. That is the whole registration, so it also sees what
 *     is refused later (the sysctl folders refuse "all" and "default"), and SIOCGIFINDEX then tells
 *     whether the link has exactly the name asked for (a '%d' template is renamed). It costs ~0.3 ms a
 *     name, so it is asked for every string of 1 and 2 bytes, the 3-byte sample, the names with a story,
 *     every name on which our validator and the name check disagree, and one in 16 of the random and TAP
 *     names (all of them with CHVM_TEST_LONG=1). A name the name check refuses must never become a real
 *     link, or the cheap check would not be the prefix of the kernel's path this test takes it for.
 *
 * VM names are no kernel names (they name files, NAME.vm, and journald fields): vm_name_valid() is
 * checked against a POSIX regex of ^[a-z][a-z0-9-]{0,31}$ and every name it accepts must make a file. */

#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <regex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent/config.h"
#include "agent/dispatcher.h"
#include "backends/local/local-config.h"
#include "tests/journal-test-util.h"
#include "util/confparse.h"
#include "util/ifname.h"
#include "util/macro.h"
#include "util/nlerr.h"
#include "util/vmname.h"

#define NAME_SIZE 48 /* longest string tried + NUL */
#define PROBE_IFINDEX 0x7ffff000 /* the pair's own ifindex: free, so the request creates */
#define BUSY_IFINDEX 1 /* lo's, taken in every namespace */
#define GROUP 0x43484e4d /* "CHNM": the real links of one batch */
#define IN_FLIGHT 128 /* requests per send */
#define REAL_BATCH 2048 /* real links per group deletion */

static bool long_tests(void) {
        const char *e = getenv("CHVM_TEST_LONG");
        return e && *e && strcmp(e, "0") != 0;
}

/* The figures: on stderr, and since Criterion sends a test's stdout and stderr to /dev/null when it writes
 * TAP (make check), also into FIGURES_PATH (tests/test-names.figures in the build tree), made afresh by
 * each run. */
ReportHook(PRE_ALL)(struct criterion_test_set *tests) {
        (void) tests;
        FILE *f = fopen(FIGURES_PATH, "we");
        if (f)
                fclose(f);
}

_printf_(1, 2) static void report(const char *fmt, ...) {
        char buf[8192];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        fputs(buf, stderr);
        int fd = open(FIGURES_PATH, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
                (void) !write(fd, buf, strlen(buf)); /* one write: the tests may run side by side */
                close(fd);
        }
}

/* The random strings differ from run to run; CHVM_TEST_SEED=N repeats a run (its seed is in the log). */
static uint64_t run_seed(void) {
        const char *e = getenv("CHVM_TEST_SEED");
        return e && *e ? strtoull(e, NULL, 0) : (uint64_t) time(NULL);
}

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* --- the names tried ---------------------------------------------------------------------------------- */

enum {
        OURS = 1 << 0, /* our validator accepts it */
        CHECK = 1 << 1, /* the kernel's name check accepts it */
        REAL_TRIED = 1 << 2, /* a real link was asked for */
        REAL = 1 << 3, /* ... and the kernel made it, with exactly that name (or it is lo's) */
        RENAMED = 1 << 4, /* ... and the kernel made it under another name */
        WANT_REAL = 1 << 5, /* a real link is to be asked for */
};

typedef struct Name {
        char s[NAME_SIZE];
        uint8_t flags;
} Name;

typedef struct NameSet {
        Name *v;
        size_t n, cap;
} NameSet;

static void add(NameSet *set, const char *s, uint8_t flags) {
        if (set->n == set->cap) {
                set->cap = set->cap ? 2 * set->cap : 4096;
                set->v = realloc(set->v, set->cap * sizeof(Name));
                cr_assert_not_null(set->v);
        }
        cr_assert_lt(strlen(s), NAME_SIZE);
        Name *n = &set->v[set->n++];
        memset(n, 0, sizeof(*n));
        memcpy(n->s, s, strlen(s) + 1);
        n->flags = flags;
}

static void add_bytes(NameSet *set, const uint8_t *b, size_t len, uint8_t flags) {
        char s[NAME_SIZE];
        cr_assert_lt(len, sizeof(s));
        memcpy(s, b, len);
        s[len] = '\0';
        add(set, s, flags);
}

/* A name as C source, for messages. */
static const char *quoted(const char *s, char buf[4 * NAME_SIZE + 3]) {
        char *p = buf;
        *p++ = '"';
        for (const unsigned char *c = (const unsigned char *) s; *c; c++)
                p += *c >= 0x20 && *c < 0x7f && *c != '"' && *c != '\\' ? sprintf(p, "%c", *c)
                                                                        : sprintf(p, "\\x%02x", *c);
        *p++ = '"';
        *p = '\0';
        return buf;
}

/* Every string of 1 and 2 bytes over 1..255; for 3 bytes every byte value in every position, next to
 * plain letters, to dots, to a '%d' and to random bytes; and the names with a story. */
static void names_exhaustive(NameSet *set, uint64_t *rnd) {
        static const char *const special[] = {
                ".",
                "..",
                "...",
                "lo",
                "all",
                "default",
                "%d",
                "a%d",
                "%d%d",
                "%s",
                "%%",
                "a%",
                "%",
                "eth0",
                "a.b",
                "-",
                "tap-0",
                "\xa0",
                "\x85",
                "\xff",
                "a\xa0",
                "\xc2\xa0",
                "bonding_masters",
                "123456789012345",
                "1234567890123456",
                "all0",
                "defaults",
                "ALL",
                "Default",
                "tap-%d",
                "tap-0123456789a",
        };
        uint8_t b[3];

        for (unsigned x = 1; x < 256; x++) {
                b[0] = (uint8_t) x;
                add_bytes(set, b, 1, WANT_REAL);
        }
        for (unsigned x = 1; x < 256; x++)
                for (unsigned y = 1; y < 256; y++) {
                        b[0] = (uint8_t) x;
                        b[1] = (uint8_t) y;
                        add_bytes(set, b, 2, WANT_REAL);
                }
        static const uint8_t fill[][2] = { { 'a', 'a' }, { '.', '.' }, { '%', 'd' }, { 'l', 'l' } };
        for (unsigned pos = 0; pos < 3; pos++)
                for (unsigned x = 1; x < 256; x++) {
                        for (size_t f = 0; f < ELEMENTSOF(fill) + 2; f++) {
                                for (unsigned i = 0, k = 0; i < 3; i++) {
                                        if (i == pos)
                                                b[i] = (uint8_t) x;
                                        else if (f < ELEMENTSOF(fill))
                                                b[i] = fill[f][k++];
                                        else
                                                b[i] = (uint8_t) (1 + test_rand(rnd) % 255);
                                }
                                add_bytes(set, b, 3, WANT_REAL);
                        }
                }
        for (size_t i = 0; i < ELEMENTSOF(special); i++)
                add(set, special[i], WANT_REAL);
}

static void names_random(NameSet *set, uint64_t *rnd, size_t n, size_t max_len) {
        uint8_t b[NAME_SIZE];
        for (size_t i = 0; i < n; i++) {
                size_t len = 1 + test_rand(rnd) % max_len;
                for (size_t k = 0; k < len; k++)
                        b[k] = (uint8_t) (1 + test_rand(rnd) % 255);
                add_bytes(set, b, len, 0);
        }
}

/* --- the kernel --------------------------------------------------------------------------------------- */

typedef struct Kernel {
        struct mnl_socket *nl;
        uint32_t seq;
        const char *kind; /* of the real links: "ifb" or "veth" */
        uint8_t *buf; /* IN_FLIGHT requests */
        size_t buf_size;
} Kernel;

static void netns_setup(void) {
        if (geteuid() != 0)
                cr_skip_test("needs root to make a network namespace of its own for the kernel's answers");
        if (unshare(CLONE_NEWNET) < 0)
                cr_skip_test("unshare(CLONE_NEWNET) failed: %s", strerror(errno));
}

static struct nlmsghdr *put_newlink(void *at, uint32_t seq, uint16_t flags, int ifindex) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(at);
        nlh->nlmsg_type = RTM_NEWLINK;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        nlh->nlmsg_seq = seq;
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = ifindex;
        return nlh;
}

/* The name check: a veth pair whose peer would be `name` with lo's ifindex. */
static size_t build_check(void *at, uint32_t seq, const char *name) {
        struct nlmsghdr *nlh = put_newlink(at, seq, NLM_F_CREATE | NLM_F_EXCL, PROBE_IFINDEX);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, "chvm-probe");
        struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
        struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
        struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
        struct ifinfomsg *pifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifi));
        pifi->ifi_family = AF_UNSPEC;
        pifi->ifi_index = BUSY_IFINDEX;
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        mnl_attr_nest_end(nlh, peer);
        mnl_attr_nest_end(nlh, data);
        mnl_attr_nest_end(nlh, li);
        return nlh->nlmsg_len;
}

/* A real link called `name` in GROUP (a veth's peer gets a name of the kernel's choice, in GROUP too). */
static size_t build_real(void *at, uint32_t seq, const char *name, const char *kind) {
        struct nlmsghdr *nlh = put_newlink(at, seq, NLM_F_CREATE | NLM_F_EXCL, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        mnl_attr_put_u32(nlh, IFLA_GROUP, GROUP);
        struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, kind);
        if (strcmp(kind, "veth") == 0) {
                struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
                struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
                struct ifinfomsg *pifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifi));
                pifi->ifi_family = AF_UNSPEC;
                mnl_attr_put_u32(nlh, IFLA_GROUP, GROUP);
                mnl_attr_nest_end(nlh, peer);
                mnl_attr_nest_end(nlh, data);
        }
        mnl_attr_nest_end(nlh, li);
        return nlh->nlmsg_len;
}

static size_t build_delete_group(void *at, uint32_t seq) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(at);
        nlh->nlmsg_type = RTM_DELLINK;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        nlh->nlmsg_seq = seq;
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        ifi->ifi_family = AF_UNSPEC;
        mnl_attr_put_u32(nlh, IFLA_GROUP, GROUP);
        return nlh->nlmsg_len;
}

typedef enum Request {
        REQUEST_CHECK,
        REQUEST_REAL,
} Request;

/* Sends one request per name (at most IN_FLIGHT per send) and stores each answer (0 or -errno) in
 * ret[i]. The kernel refuses a name with EINVAL (ERANGE: too long for the attribute), says EBUSY to the
 * name check's ifindex and EEXIST to a name that is taken; any other answer means this test no longer
 * asks the right question, and fails it with the kernel's words. */
static void ask(Kernel *k, Request what, Name *const *names, size_t n, int *ret) {
        uint8_t rbuf[8192];

        for (size_t done = 0; done < n;) {
                size_t m = n - done < IN_FLIGHT ? n - done : IN_FLIGHT, off = 0;
                uint32_t base = k->seq;
                for (size_t i = 0; i < m; i++) {
                        cr_assert_leq(off + 512, k->buf_size);
                        off += what == REQUEST_CHECK
                                       ? build_check(k->buf + off, k->seq++, names[done + i]->s)
                                       : build_real(k->buf + off, k->seq++, names[done + i]->s, k->kind);
                }
                cr_assert_eq(mnl_socket_sendto(k->nl, k->buf, off), (ssize_t) off, "sendto: %s",
                             strerror(errno));
                for (size_t got = 0; got < m;) {
                        ssize_t len = mnl_socket_recvfrom(k->nl, rbuf, sizeof(rbuf));
                        cr_assert_gt(len, 0, "recvfrom: %s", strerror(errno));
                        int left = (int) len;
                        for (const struct nlmsghdr *h = (const void *) rbuf; mnl_nlmsg_ok(h, left);
                             h = mnl_nlmsg_next(h, &left)) {
                                cr_assert_eq(h->nlmsg_type, NLMSG_ERROR, "unexpected reply type %u",
                                             h->nlmsg_type);
                                uint32_t i = h->nlmsg_seq - base;
                                cr_assert_lt(i, m, "reply to a request not sent (seq %u)", h->nlmsg_seq);
                                char extack[NL_EXTACK_MAX], q[4 * NAME_SIZE + 3];
                                int r = nl_error_parse(h, extack);
                                cr_assert(r == 0 || r == -EINVAL || r == -ERANGE || r == -EBUSY ||
                                                  r == -EEXIST,
                                          "%s for %s: unexpected answer %s (%s)",
                                          what == REQUEST_CHECK ? "name check" : "real link",
                                          quoted(names[done + i]->s, q), strerror(-r), extack);
                                ret[done + i] = r;
                                got++;
                        }
                }
                done += m;
        }
}

static void kernel_delete_group(Kernel *k) {
        int r;
        size_t len = build_delete_group(k->buf, k->seq);
        cr_assert_eq(mnl_socket_sendto(k->nl, k->buf, len), (ssize_t) len);
        uint8_t rbuf[4096];
        ssize_t n = mnl_socket_recvfrom(k->nl, rbuf, sizeof(rbuf));
        cr_assert_gt(n, 0);
        const struct nlmsghdr *h = (const void *) rbuf;
        cr_assert_eq(h->nlmsg_seq, k->seq);
        k->seq++;
        char extack[NL_EXTACK_MAX];
        r = nl_error_parse(h, extack);
        /* ENODEV: the group was empty. */
        cr_assert(r == 0 || r == -ENODEV, "deleting the test links (group %#x): %s %s", GROUP, strerror(-r),
                  extack);
}

static void kernel_open(Kernel *k) {
        int one = 1, size = 4 << 20;

        *k = (Kernel){ .seq = 1 };
        k->nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
        cr_assert_not_null(k->nl, "netlink socket: %s", strerror(errno));
        (void) mnl_socket_setsockopt(k->nl, NETLINK_EXT_ACK, &one, sizeof(one));
        (void) mnl_socket_setsockopt(k->nl, NETLINK_CAP_ACK, &one, sizeof(one));
        /* Room for every answer to one send, whatever the default buffer sizes. */
        (void) setsockopt(mnl_socket_get_fd(k->nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
        (void) setsockopt(mnl_socket_get_fd(k->nl), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size));
        cr_assert_eq(mnl_socket_bind(k->nl, 0, MNL_SOCKET_AUTOPID), 0);
        k->buf_size = IN_FLIGHT * 512;
        k->buf = calloc(1, k->buf_size);
        cr_assert_not_null(k->buf);

        /* The kind of the real links: ifb where there is one, else veth (needed by the name check anyway).
         */
        Name probe = { .s = "chvm-kind0" };
        Name *p = &probe;
        int r;
        k->kind = "ifb";
        ask(k, REQUEST_REAL, &p, 1, &r);
        if (r == -EOPNOTSUPP || r == -ENOENT) {
                k->kind = "veth";
                ask(k, REQUEST_REAL, &p, 1, &r);
        }
        cr_assert_eq(r, 0, "cannot make a test link (ifb or veth): %s", strerror(-r));
        kernel_delete_group(k);
        ask(k, REQUEST_CHECK, &p, 1, &r);
        if (r != -EBUSY)
                cr_skip_test(
                        "the kernel's name check (a veth peer with a taken ifindex) answers %s, not EBUSY, "
                        "for a good name; this test relies on it",
                        strerror(-r));
}

static void kernel_close(Kernel *k) {
        mnl_socket_close(k->nl);
        free(k->buf);
}

/* The name check for every name in the set. */
static void kernel_check(Kernel *k, NameSet *set) {
        Name **v = malloc(set->n * sizeof(Name *));
        int *r = malloc(set->n * sizeof(int));
        char q[4 * NAME_SIZE + 3];
        cr_assert(v && r);
        for (size_t i = 0; i < set->n; i++)
                v[i] = &set->v[i];
        ask(k, REQUEST_CHECK, v, set->n, r);
        for (size_t i = 0; i < set->n; i++) {
                /* EBUSY: the name passed, the ifindex did not; EEXIST: the name passed and is taken (lo). */
                cr_assert_neq(r[i], 0, "the name check made a link for %s", quoted(set->v[i].s, q));
                if (r[i] == -EBUSY || r[i] == -EEXIST)
                        set->v[i].flags |= CHECK;
        }
        free(r);
        free(v);
}

/* Real links for the names in v, all at once, then gone. */
static void kernel_real_batch(Kernel *k, Name **v, size_t n) {
        int *r = malloc(n * sizeof(int));
        char q[4 * NAME_SIZE + 3];
        cr_assert_not_null(r);
        ask(k, REQUEST_REAL, v, n, r);
        for (size_t i = 0; i < n; i++) {
                v[i]->flags |= REAL_TRIED;
                if (r[i] == 0)
                        v[i]->flags |= if_nametoindex(v[i]->s) > 0 ? REAL : RENAMED;
                else if (r[i] == -EEXIST) {
                        /* Taken (lo, or the same random string twice in a batch); anything else that
                         * exists (a sysfs entry of that name) is a refusal. */
                        if (if_nametoindex(v[i]->s) > 0)
                                v[i]->flags |= REAL;
                } else
                        cr_assert_neq(r[i], -EBUSY, "a real link for %s: %s", quoted(v[i]->s, q),
                                      strerror(-r[i]));
        }
        kernel_delete_group(k);
        free(r);
}

/* Real links for the names chosen (see the top of the file), and for every name on which our validator
 * and the name check disagree. Names with a '%' get batches of their own: the kernel names such a link
 * itself, and that name could be one of the others (which would then be taken). */
static void kernel_real(Kernel *k, NameSet *set, uint64_t *rnd) {
        Name **batch[2];
        size_t m[2] = {};
        for (size_t b = 0; b < 2; b++) {
                batch[b] = malloc(REAL_BATCH * sizeof(Name *));
                cr_assert_not_null(batch[b]);
        }
        for (size_t i = 0; i < set->n; i++) {
                Name *n = &set->v[i];
                if (long_tests() || !(n->flags & OURS) != !(n->flags & CHECK) || test_rand(rnd) % 16 == 0)
                        n->flags |= WANT_REAL;
                if (!(n->flags & WANT_REAL))
                        continue;
                size_t b = strchr(n->s, '%') != NULL;
                batch[b][m[b]++] = n;
                if (m[b] == REAL_BATCH) {
                        kernel_real_batch(k, batch[b], m[b]);
                        m[b] = 0;
                }
        }
        for (size_t b = 0; b < 2; b++) {
                if (m[b])
                        kernel_real_batch(k, batch[b], m[b]);
                free(batch[b]);
        }
}

/* --- the verdicts ------------------------------------------------------------------------------------- */

typedef struct Figures {
        size_t tried, ours, check, real_tried, real, renamed;
        size_t ours_refused; /* ours, and refused by the name check or by a real link: must stay 0 */
        size_t stricter; /* a real link was made with that name, and we refuse it */
        size_t check_not_real; /* the name check passed, the real link was refused or renamed */
        size_t real_not_check; /* must stay 0 (see the top of the file) */
} Figures;

static void add_example(char *buf, size_t size, size_t count, const char *s) {
        char q[4 * NAME_SIZE + 3];
        size_t len = strlen(buf);
        if (count <= 8 && len + 4 * NAME_SIZE + 8 < size)
                snprintf(buf + len, size - len, "%s%s", len ? " " : "", quoted(s, q));
}

/* Prints the figures of one test and fails it if we accept a name the kernel refuses. */
static Figures judge(const char *what, const char *validator, const NameSet *set, double seconds) {
        char ours_bad[1024] = "", stricter[1024] = "", check_bad[1024] = "", real_bad[1024] = "";
        Figures f = { .tried = set->n };

        for (size_t i = 0; i < set->n; i++) {
                const Name *n = &set->v[i];
                bool ours = n->flags & OURS, check = n->flags & CHECK, tried = n->flags & REAL_TRIED,
                     real = n->flags & REAL;
                f.ours += ours;
                f.check += check;
                f.real_tried += tried;
                f.real += real;
                f.renamed += !!(n->flags & RENAMED);
                if (ours && (!check || (tried && !real)))
                        add_example(ours_bad, sizeof(ours_bad), ++f.ours_refused, n->s);
                if (real && !ours)
                        add_example(stricter, sizeof(stricter), ++f.stricter, n->s);
                if (tried && check && !real)
                        add_example(check_bad, sizeof(check_bad), ++f.check_not_real, n->s);
                if (real && !check)
                        add_example(real_bad, sizeof(real_bad), ++f.real_not_check, n->s);
        }
        report("%s: %zu strings in %.1f s. %s accepts %zu; the kernel's name check accepts %zu; real links: "
               "%zu asked for, %zu made with the very name, %zu renamed by the kernel.\n"
               "  accepted by us, refused by the kernel: %zu %s\n"
               "  made by the kernel, refused by us: %zu %s\n"
               "  passed the name check, then refused or renamed: %zu %s\n",
               what, f.tried, seconds, validator, f.ours, f.check, f.real_tried, f.real, f.renamed,
               f.ours_refused, ours_bad, f.stricter, stricter, f.check_not_real, check_bad);
        cr_expect_eq(
                f.real_not_check, 0,
                "%s: %zu names were refused by the name check but made as real links (%s): the name check "
                "does not work as this test assumes",
                what, f.real_not_check, real_bad);
        cr_expect_eq(f.ours_refused, 0, "%s: %s accepts %zu names the kernel refuses: %s", what, validator,
                     f.ours_refused, ours_bad);
        return f;
}

/* The kernel's answers for every name in the set (OURS already marked). */
static void ask_kernel(NameSet *set, uint64_t seed) {
        uint64_t rnd = seed;
        Kernel k;

        kernel_open(&k);
        kernel_check(&k, set);
        kernel_real(&k, set, &rnd);
        kernel_close(&k);
}

static void run_ifnames(const char *what, NameSet *set) {
        double t0 = now();

        for (size_t i = 0; i < set->n; i++)
                if (ifname_valid(set->v[i].s))
                        set->v[i].flags |= OURS;
        ask_kernel(set, 0x7265616c);
        (void) judge(what, "ifname_valid()", set, now() - t0);
        free(set->v);
}

/* --- interface names ---------------------------------------------------------------------------------- */

TestSuite(names, .init = netns_setup);

Test(names, ifname_short_strings_against_the_kernel) {
        NameSet set = {};
        uint64_t rnd = 0x6e616d6573; /* fixed: the same strings every run */
        names_exhaustive(&set, &rnd);
        run_ifnames("interface names of 1 and 2 bytes, and 3 bytes sampled", &set);
}

Test(names, ifname_random_strings_against_the_kernel) {
        NameSet set = {};
        uint64_t seed = run_seed(), rnd = seed;
        size_t n = long_tests() ? 1000000 : 100000;
        report("random interface names: seed %" PRIu64 "\n", seed);
        names_random(&set, &rnd, n, 20);
        run_ifnames("random interface names of 1 to 20 bytes", &set);
}

/* --- TAP names: every prefix the config accepts, with the ids VMs get --------------------------------- */

/* The prefix the config keeps for `value` in [local] tap_prefix (through agent.conf and the local backend's
 * parser), or false when it refuses it. [bridge] takes the same values (both check with conf_tap_prefix()):
 * `section` "bridge" asks that function alone. */
static bool config_prefix(const char *section, const char *value, char ret[16]) {
        char text[128];
        Error why = {};
        Error err;
        static AgentConfig c;
        LocalConfig lc;
        BackendSetting s[CONFIG_MAX_SETTINGS];
        size_t bad;

        if (strcmp(section, "bridge") == 0) {
                if (!conf_tap_prefix(value))
                        return false;
                snprintf(ret, 16, "%s", value);
                return true;
        }
        config_defaults(&c, "/nonexistent");
        local_config_defaults(&lc);
        snprintf(text, sizeof(text), "[%s]\ntap_prefix = %s\n", section, value);
        if (config_load_string(&c, "agent.conf", text, &err) < 0)
                return false;
        size_t n = config_backend_settings(&c, section, s, ELEMENTSOF(s));
        if (local_config_parse(&lc, s, n, &bad, &why) < 0)
                return false;
        const char *p = lc.tap_prefix;
        cr_assert(strlen(p) >= 1 && strlen(p) <= 11, "the config kept a tap_prefix of %zu bytes", strlen(p));
        for (const unsigned char *ch = (const unsigned char *) p; *ch; ch++)
                cr_assert(*ch > ' ' && *ch < 0x7f, "the config kept a tap_prefix with byte %#x", *ch);
        snprintf(ret, 16, "%s", p);
        return true;
}

typedef struct Prefixes {
        char (*v)[16];
        size_t n, cap, tried;
        size_t stricter; /* values ifname_valid() takes (up to 11 bytes) that the config refuses */
        char examples[1024];
} Prefixes;

static void prefix_try(Prefixes *ps, const char *value) {
        static const char *const sections[] = { "local", "bridge" };
        char p[16];
        for (size_t s = 0; s < ELEMENTSOF(sections); s++) {
                ps->tried++;
                if (!config_prefix(sections[s], value, p)) {
                        if (s == 0 && strlen(value) <= 11 && ifname_valid(value))
                                add_example(ps->examples, sizeof(ps->examples), ++ps->stricter, value);
                        continue;
                }
                if (ps->n > 0 && strcmp(ps->v[ps->n - 1], p) == 0)
                        continue; /* both sections agree (they always should) */
                if (ps->n == ps->cap) {
                        ps->cap = ps->cap ? 2 * ps->cap : 1024;
                        ps->v = realloc(ps->v, ps->cap * sizeof(ps->v[0]));
                        cr_assert_not_null(ps->v);
                }
                memcpy(ps->v[ps->n++], p, 16);
        }
}

Test(names, tap_names_from_every_accepted_prefix_against_the_kernel) {
        uint64_t seed = run_seed(), rnd = seed;
        /* ids as the agent makes them (random, low 40 bits not 0), and the edges */
        uint64_t ids[] = { 1, UINT64_MAX, UINT64_C(0x0123456789abcdef), UINT64_C(0xfedcba9876543210), 0, 0 };
        Prefixes ps = {};
        NameSet set = {};
        double t0 = now();
        char value[16];

        report("TAP names: seed %" PRIu64 "\n", seed);
        /* every config value of 1 and 2 bytes, then random ones of up to 12 bytes: printable, and any */
        for (unsigned x = 1; x < 256; x++) {
                value[0] = (char) x;
                value[1] = '\0';
                prefix_try(&ps, value);
                for (unsigned y = 1; y < 256; y++) {
                        value[1] = (char) y;
                        value[2] = '\0';
                        prefix_try(&ps, value);
                }
        }
        for (size_t i = 0, n = long_tests() ? 200000 : 20000; i < n; i++) {
                size_t len = 3 + test_rand(&rnd) % 10;
                for (size_t k = 0; k < len; k++)
                        value[k] = (char) (i % 2 ? 0x21 + test_rand(&rnd) % 94 : 1 + test_rand(&rnd) % 255);
                value[len] = '\0';
                prefix_try(&ps, value);
        }
        for (size_t i = 0; i < ps.n; i++) {
                ids[4] = test_rand(&rnd) | 1;
                ids[5] = test_rand(&rnd) | UINT64_C(0x8000000000);
                /* one-byte prefixes with every id; longer ones with one of the fixed ids and a random one */
                bool one = strlen(ps.v[i]) == 1;
                size_t pick[2] = { test_rand(&rnd) % 4, 4 + test_rand(&rnd) % 2 };
                for (size_t k = 0; k < (one ? ELEMENTSOF(ids) : 2); k++) {
                        char tap[16];
                        dispatcher_tap_name(ps.v[i], ids[one ? k : pick[k]], tap);
                        add(&set, tap, one ? WANT_REAL : 0);
                        if (ifname_valid(tap))
                                set.v[set.n - 1].flags |= OURS;
                }
        }
        report("TAP names: %zu tap_prefix values given to the config, %zu prefixes accepted; the config is "
               "stricter than ifname_valid() on %zu values of up to 11 bytes (it wants printable ASCII; INI "
               "also trims blanks and reads ';' and '#' as comments): %s\n",
               ps.tried, ps.n, ps.stricter, ps.examples);
        ask_kernel(&set, seed);
        Figures f = judge("TAP names from accepted prefixes and VM ids", "ifname_valid()", &set, now() - t0);
        /* A TAP name the backends would refuse would be a VM that cannot start. */
        cr_expect_eq(f.ours, set.n, "%zu TAP names that ifname_valid() refuses", set.n - f.ours);
        free(set.v);
        free(ps.v);
}

/* --- VM names ----------------------------------------------------------------------------------------- */

Test(vm_names, against_the_regex_and_as_file_names) {
        regex_t re;
        uint64_t seed = run_seed(), rnd = seed;
        NameSet set = {};
        size_t n_ours = 0, n_files = 0;
        char *dir = test_mkdtemp();
        uint8_t b[NAME_SIZE];

        /* The C locale: [a-z] is the 26 bytes, every byte one character. */
        cr_assert_eq(regcomp(&re, "^[a-z][a-z0-9-]{0,31}$", REG_EXTENDED | REG_NOSUB), 0);
        names_exhaustive(&set, &rnd);
        names_random(&set, &rnd, long_tests() ? 2000000 : 100000, 40);
        /* strings mostly of the allowed bytes, so that many are valid, of up to 40 bytes */
        static const char near[] = "abcdefghijklmnopqrstuvwxyz0123456789-_.A\xff";
        for (size_t i = 0; i < 100000; i++) {
                size_t len = 1 + test_rand(&rnd) % 40;
                for (size_t k = 0; k < len; k++)
                        b[k] = (uint8_t) near[test_rand(&rnd) % (sizeof(near) - 1)];
                add_bytes(&set, b, len, 0);
        }
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        cr_assert_geq(dfd, 0);
        for (size_t i = 0; i < set.n; i++) {
                const char *s = set.v[i].s;
                char q[4 * NAME_SIZE + 3], file[NAME_SIZE + 4];
                bool ours = vm_name_valid(s), want = regexec(&re, s, 0, NULL, 0) == 0;
                cr_assert_eq(ours, want, "vm_name_valid(%s) = %d, the regex says %d", quoted(s, q), ours,
                             want);
                if (!ours)
                        continue;
                n_ours++;
                /* NAME.vm in the state folder: a file name the kernel takes */
                snprintf(file, sizeof(file), "%s.vm", s);
                int fd = openat(dfd, file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0 && errno == EEXIST)
                        continue; /* the same random name twice */
                cr_assert_geq(fd, 0, "VM name %s: cannot make %s: %s", quoted(s, q), file, strerror(errno));
                close(fd);
                n_files++;
        }
        report("VM names: %zu strings (seed %" PRIu64 "), vm_name_valid() accepts %zu, all as the regex "
               "says; %zu NAME.vm files made\n",
               set.n, seed, n_ours, n_files);
        close(dfd);
        regfree(&re);
        test_rm_rf(dir);
        free(dir);
        free(set.v);
}
