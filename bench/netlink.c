/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Netlink benchmark (issue 3; a program, not a test): how long N VMs take to come up and go away with our
 * netlink layer, against the ways peer tools do the same job, all in one run on one kernel.
 *
 * Each VM is one TAP enslaved to the bridge chvm0 and up, two tcp port forwards, and its vm_ports and
 * vm_addrs anti-spoofing elements. Approaches:
 *
 *   (a) ours     per VM: tap_create() + rtnl_link_change() (enslave, up), then one nft batch of its 4
 *                elements (after the layout batch, made once); teardown: one nft batch per VM deleting
 *                them, then rtnl_links_delete_owned_bulk() for all TAPs at once
 *   (a')         the same in two passes (all TAPs, then all batches): the nft part timed on its own
 *   (b) exec     per VM: `ip tuntap add` + `ip link set ... master chvm0 up`, one `iptables -t nat -A`
 *                process per port forward; teardown `iptables -D` per rule, `ip link del` per TAP
 *   (c) nft -f   one file and one `nft -f FILE` per VM adding its 4 elements; teardown likewise
 *   (d) bare     the same 4N elements in ONE batch built with libnftnl directly: no descriptions, one ACK;
 *                the floor for the nft part.  (d') is the same with one bare batch per VM
 *
 * plus deleting T TAPs one by one (rtnl_link_delete) against one grouped rtnl_links_delete_owned_bulk().
 *
 * Everything runs in a network namespace the program makes for itself at start (unshare(CLONE_NEWNET)),
 * so nothing of the host is touched and every object dies with the process; it still removes what it
 * made, and checks each approach's result with a count from the kernel (or from iptables -S). Without
 * root it says SKIP and exits 0.
 *
 *     bench/netlink [--quick] [--n 10,100,1000] [--taps T] [--repeat K] [--skip-slow]
 *
 * The exec approach at N = 1000 runs 2,000 ip and 2,000 iptables processes to bring up, 2,000 iptables and
 * 1,000 ip to tear down (about 1.5 minutes here; the whole run about 2.5); --skip-slow leaves it out above
 * N = 100, and the one-by-one TAP deletion too. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <limits.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backends/nl/nft.h"
#include "backends/nl/rtnl.h"

#define AGENT_TAG "chvm1:b3e7c0de-0003-4000-8000-00000000be9c"
#define BRIDGE "chvm0"
#define N_MAX 20000 /* host ports 10000 + 2i stay below 65536, guest IPs inside 10.200.0.0/16 */

static const NftLayout layout = {
        .table = "chvm",
        .bridge = BRIDGE,
        .subnet = 0x0ac80000, /* 10.200.0.0/16: room for N_MAX guests */
        .prefixlen = 16,
        .tag_prefix = AGENT_TAG,
};

typedef struct Vm {
        char id[17]; /* 16 hex digits */
        char tap[IFNAMSIZ];
        char tap_tag[LINK_ALIAS_MAX];
        char ip[INET_ADDRSTRLEN];
        uint32_t ifindex; /* set by whoever created the TAP */
        NftElem elems[4]; /* 2 forwards, vm_ports, vm_addrs */
} Vm;

typedef enum Approach {
        APPROACH_OURS,
        APPROACH_OURS_PASSES,
        APPROACH_EXEC,
        APPROACH_NFT_FILE,
        APPROACH_BARE_ONE,
        APPROACH_BARE_PER_VM,
        _APPROACH_MAX,
} Approach;

static const char *const approach_table[_APPROACH_MAX] = {
        [APPROACH_OURS] = "(a)  ours, per VM: TAP, batch",
        [APPROACH_OURS_PASSES] = "(a') ours, TAPs then batches",
        [APPROACH_EXEC] = "(b)  exec: ip + iptables/rule",
        [APPROACH_NFT_FILE] = "(c)  nft -f FILE per VM",
        [APPROACH_BARE_ONE] = "(d)  bare libnftnl, 1 batch",
        [APPROACH_BARE_PER_VM] = "(d') bare libnftnl, batch/VM",
};

typedef struct Phase {
        double rules, links; /* seconds; links < 0: the approach makes no links */
} Phase;

typedef struct Result {
        bool ran;
        const char *skipped; /* why it did not run */
        Phase up, down;
} Result;

typedef struct Bench {
        Rtnl *rtnl;
        Nft *nft;
        struct mnl_socket *bare; /* the floor's own nfnetlink socket */
        uint32_t bare_seq;
        struct mnl_socket *raw_rtnl; /* for the kernel-alone group deletion */
        uint32_t raw_seq;
        uint32_t bridge;
        char ip[PATH_MAX], iptables[PATH_MAX], nft_cmd[PATH_MAX];
        bool skip_slow;
        unsigned repeat;
} Bench;

/* What a signal must remove: the scratch directory and the one file in it. */
static char scratch_dir[PATH_MAX];
static char scratch_file[PATH_MAX];

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static double dmin(double a, double b) {
        return a < b ? a : b;
}

static void scratch_remove(void) {
        if (scratch_file[0])
                (void) unlink(scratch_file);
        if (scratch_dir[0])
                (void) rmdir(scratch_dir);
}

static void on_signal(int sig) {
        scratch_remove(); /* unlink() and rmdir() are async-signal-safe */
        signal(sig, SIG_DFL);
        raise(sig);
}

/* --- child processes ------------------------------------------------------------------------------ */

static bool find_tool(const char *name, char ret[PATH_MAX]) {
        const char *path = getenv("PATH");
        char dirs[4096];

        snprintf(dirs, sizeof(dirs), "%s:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "");
        for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                if (!*d)
                        continue;
                if (snprintf(ret, PATH_MAX, "%s/%s", d, name) < PATH_MAX && access(ret, X_OK) == 0)
                        return true;
        }
        ret[0] = '\0';
        return false;
}

/* Runs argv (no shell) with stdin from /dev/null and stdout + stderr into a pipe we read; returns the exit
 * status as 0 or -EPROTO, the output in *ret_out if asked for (else it is only printed on failure). */
static int run(const char *const argv[], char **ret_out) {
        posix_spawn_file_actions_t fa;
        _cleanup_free_ char *out = NULL;
        size_t len = 0, allocated = 0;
        int p[2], status, r;
        pid_t pid;

        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, p[1], STDOUT_FILENO);
        posix_spawn_file_actions_adddup2(&fa, p[1], STDERR_FILENO);
        r = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *) argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        safe_close(p[1]);
        if (r != 0) {
                safe_close(p[0]);
                fprintf(stderr, "bench/netlink: cannot run %s: %s\n", argv[0], strerror(r));
                return -r;
        }
        for (;;) {
                if (allocated - len < 4096) {
                        char *q = realloc(out, allocated + 65536);
                        if (!q)
                                break; /* keep what we have; the status still counts */
                        out = q;
                        allocated += 65536;
                }
                ssize_t k = read(p[0], out + len, allocated - len - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                len += (size_t) k;
        }
        if (out)
                out[len] = '\0';
        safe_close(p[0]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "bench/netlink: command failed:");
                for (size_t i = 0; argv[i]; i++)
                        fprintf(stderr, " %s", argv[i]);
                fprintf(stderr, "\n%s", out ? out : "");
                return -EPROTO;
        }
        if (ret_out)
                *ret_out = out ? TAKE_PTR(out) : strdup("");
        return 0;
}

/* The first line a tool prints for --version (or -V). */
static void tool_version(const char *tool, const char *flag, char *buf, size_t size) {
        const char *argv[] = { tool, flag, NULL };
        _cleanup_free_ char *out = NULL;

        snprintf(buf, size, "?");
        if (!tool[0] || run(argv, &out) < 0)
                return;
        out[strcspn(out, "\n")] = '\0';
        snprintf(buf, size, "%s", out);
}

/* --- the VMs -------------------------------------------------------------------------------------- */

static Vm *vms_new(size_t n) {
        Vm *vms = calloc(n, sizeof(Vm));
        if (!vms)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                Vm *v = &vms[i];
                uint32_t ip = layout.subnet + 2 + (uint32_t) i;
                struct in_addr a = { .s_addr = htonl(ip) };
                uint8_t mac[6] = { 0x02, 0xbe, 0x9c, (uint8_t) (i >> 16), (uint8_t) (i >> 8), (uint8_t) i };

                snprintf(v->id, sizeof(v->id), "%016zx", i + 1);
                snprintf(v->tap, sizeof(v->tap), "tap-%u", (unsigned) i); /* i < N_MAX */
                snprintf(v->tap_tag, sizeof(v->tap_tag), AGENT_TAG ":%s:tap", v->id);
                inet_ntop(AF_INET, &a, v->ip, sizeof(v->ip));
                for (unsigned k = 0; k < 2; k++) {
                        NftElem *e = &v->elems[k];
                        e->kind = NFT_ELEM_PORTFWD;
                        e->proto = IPPROTO_TCP;
                        e->host_port = (uint16_t) (10000 + 2 * i + k);
                        e->guest_ip = ip;
                        e->guest_port = k == 0 ? 80 : 22;
                        snprintf(e->tag, sizeof(e->tag), AGENT_TAG ":%s:fwd-tcp-%u", v->id, e->host_port);
                }
                v->elems[2].kind = NFT_ELEM_VM_PORT;
                v->elems[3].kind = NFT_ELEM_VM_ADDR;
                v->elems[3].guest_ip = ip;
                memcpy(v->elems[3].mac, mac, 6);
                for (unsigned k = 2; k < 4; k++) {
                        snprintf(v->elems[k].ifname, sizeof(v->elems[k].ifname), "%s", v->tap);
                        snprintf(v->elems[k].tag, sizeof(v->elems[k].tag), AGENT_TAG ":%s:%s", v->id,
                                 k == 2 ? "port" : "addr");
                }
        }
        return vms;
}

/* --- checks against the kernel (never timed) ------------------------------------------------------ */

/* TAPs enslaved to our bridge and up. */
static int count_taps(Bench *b, size_t *ret) {
        _cleanup_free_ LinkInfo *links = NULL;
        size_t n, count = 0;
        int r;

        r = rtnl_link_dump(b->rtnl, &links, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (strcmp(links[i].kind, "tun") == 0 && links[i].master == b->bridge &&
                    (links[i].flags & IFF_UP))
                        count++;
        *ret = count;
        return 0;
}

static int count_elems(Bench *b, size_t *ret) {
        _cleanup_free_ NftElem *elems = NULL;
        size_t n;
        int r;

        r = nft_dump_elems(b->nft, &layout, &elems, &n);
        if (r < 0)
                return r;
        *ret = n;
        return 0;
}

static int count_iptables_rules(Bench *b, size_t *ret) {
        const char *argv[] = { b->iptables, "-t", "nat", "-S", "PREROUTING", NULL };
        _cleanup_free_ char *out = NULL;
        size_t count = 0;
        int r;

        r = run(argv, &out);
        if (r < 0)
                return r;
        for (const char *p = out; (p = strstr(p, "-A PREROUTING ")); p++)
                count++;
        *ret = count;
        return 0;
}

static int expect(const char *what, int r, size_t got, size_t want) {
        if (r < 0) {
                fprintf(stderr, "bench/netlink: counting %s failed: %s\n", what, strerror(-r));
                return r;
        }
        if (got != want) {
                fprintf(stderr, "bench/netlink: %zu %s, expected %zu\n", got, what, want);
                return -EUCLEAN;
        }
        return 0;
}

static int check_state(Bench *b, size_t taps, size_t elems, size_t rules) {
        size_t n = 0;
        int r;

        if (taps != SIZE_MAX) {
                r = count_taps(b, &n);
                r = expect("TAPs enslaved and up", r, n, taps);
                if (r < 0)
                        return r;
        }
        if (elems != SIZE_MAX) {
                r = count_elems(b, &n);
                r = expect("nft elements", r, n, elems);
                if (r < 0)
                        return r;
        }
        if (rules != SIZE_MAX) {
                r = count_iptables_rules(b, &n);
                r = expect("iptables DNAT rules", r, n, rules);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* --- our layout (never timed) --------------------------------------------------------------------- */

static int layout_apply(Bench *b, bool create, double *ret_seconds) {
        _cleanup_(nft_batch_freep) NftBatch *batch = nft_batch_new(b->nft);
        double t0 = now();
        int r;

        if (!batch)
                return -ENOMEM;
        r = create ? nft_batch_add_layout(batch, &layout) : nft_batch_delete_tables(batch, &layout);
        if (r >= 0)
                r = nft_batch_commit(b->nft, batch);
        if (r < 0) {
                fprintf(stderr, "bench/netlink: %s the layout: %s\n", create ? "creating" : "deleting",
                        nft_error_message(b->nft));
                return r;
        }
        if (ret_seconds)
                *ret_seconds = now() - t0;
        return 0;
}

/* --- (a) ours ------------------------------------------------------------------------------------- */

static int ours_tap(Bench *b, Vm *v) {
        LinkChange c = LINK_CHANGE_KEEP;
        int r;

        r = tap_create(b->rtnl, v->tap, v->tap_tag, (uid_t) -1, &v->ifindex);
        if (r < 0)
                return r;
        c.master = b->bridge;
        c.up = 1;
        return rtnl_link_change(b->rtnl, v->ifindex, &c);
}

static int ours_elems(Bench *b, const Vm *v, bool add) {
        _cleanup_(nft_batch_freep) NftBatch *batch = nft_batch_new(b->nft);
        int r;

        if (!batch)
                return -ENOMEM;
        for (unsigned k = 0; k < 4; k++) {
                r = nft_batch_elem(batch, &layout, &v->elems[k], add);
                if (r < 0)
                        return r;
        }
        return nft_batch_commit(b->nft, batch);
}

static int ours_delete_taps(Bench *b, const Vm *vms, size_t n) {
        _cleanup_free_ OwnedLink *links = calloc(n ? n : 1, sizeof(OwnedLink));
        size_t deleted = 0, stale = 0;
        int r;

        if (!links)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                links[i] =
                        (OwnedLink){ .ifindex = vms[i].ifindex, .name = vms[i].tap, .tag = vms[i].tap_tag };
        r = rtnl_links_delete_owned_bulk(b->rtnl, links, n, &deleted, &stale);
        if (r < 0)
                return r;
        if (deleted != n || stale != 0) {
                fprintf(stderr, "bench/netlink: bulk delete: %zu deleted, %zu stale of %zu\n", deleted,
                        stale, n);
                return -EUCLEAN;
        }
        return 0;
}

/* Interleaved: TAP then batch for each VM in turn, as the agent brings a VM up. Otherwise all TAPs first,
 * then all batches, so the nft part is timed on its own as (c) and (d) are (the kernel's link work between
 * two batches makes the next batch slower). */
static int run_ours(Bench *b, Vm *vms, size_t n, bool interleaved, Result *res) {
        double t;
        int r;

        r = layout_apply(b, true, NULL);
        if (r < 0)
                return r;
        for (size_t pass = 0; pass < (interleaved ? 1 : 2); pass++)
                for (size_t i = 0; i < n; i++) {
                        if (interleaved || pass == 0) {
                                t = now();
                                r = ours_tap(b, &vms[i]);
                                res->up.links += now() - t;
                                if (r < 0) {
                                        fprintf(stderr, "bench/netlink: TAP %s: %s %s\n", vms[i].tap,
                                                strerror(-r), rtnl_error_message(b->rtnl));
                                        return r;
                                }
                        }
                        if (interleaved || pass == 1) {
                                t = now();
                                r = ours_elems(b, &vms[i], true);
                                res->up.rules += now() - t;
                                if (r < 0) {
                                        fprintf(stderr, "bench/netlink: elements of VM %s: %s\n", vms[i].id,
                                                nft_error_message(b->nft));
                                        return r;
                                }
                        }
                }
        r = check_state(b, n, 4 * n, SIZE_MAX);
        if (r < 0)
                return r;

        t = now();
        for (size_t i = 0; i < n; i++) {
                r = ours_elems(b, &vms[i], false);
                if (r < 0) {
                        fprintf(stderr, "bench/netlink: deleting elements of VM %s: %s\n", vms[i].id,
                                nft_error_message(b->nft));
                        return r;
                }
        }
        res->down.rules = now() - t;
        t = now();
        r = ours_delete_taps(b, vms, n);
        res->down.links = now() - t;
        if (r < 0) {
                fprintf(stderr, "bench/netlink: bulk TAP deletion: %s %s\n", strerror(-r),
                        rtnl_error_message(b->rtnl));
                return r;
        }
        r = check_state(b, 0, 0, SIZE_MAX);
        if (r < 0)
                return r;
        res->ran = true;
        return layout_apply(b, false, NULL);
}

/* --- (b) exec per rule ---------------------------------------------------------------------------- */

static int exec_tap(Bench *b, const Vm *v, bool add) {
        if (!add) {
                const char *del[] = { b->ip, "link", "del", v->tap, NULL };
                return run(del, NULL);
        }
        const char *create[] = { b->ip, "tuntap", "add", "dev", v->tap, "mode", "tap", NULL };
        const char *enslave[] = { b->ip, "link", "set", v->tap, "master", BRIDGE, "up", NULL };
        int r;

        r = run(create, NULL);
        if (r < 0)
                return r;
        return run(enslave, NULL);
}

static int exec_rules(Bench *b, const Vm *v, bool add) {
        for (unsigned k = 0; k < 2; k++) {
                const NftElem *e = &v->elems[k];
                char port[8], dest[32];
                snprintf(port, sizeof(port), "%u", e->host_port);
                snprintf(dest, sizeof(dest), "%s:%u", v->ip, e->guest_port);
                /* clang-format off */
                const char *argv[] = {
                        b->iptables, "-t", "nat", add ? "-A" : "-D", "PREROUTING",
                        "-p", "tcp", "--dport", port,
                        "-j", "DNAT", "--to-destination", dest,
                        "-m", "comment", "--comment", e->tag,
                        NULL,
                };
                /* clang-format on */
                int r = run(argv, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int run_exec(Bench *b, const Vm *vms, size_t n, Result *res) {
        double t;
        int r;

        for (size_t i = 0; i < n; i++) {
                t = now();
                r = exec_tap(b, &vms[i], true);
                res->up.links += now() - t;
                if (r < 0)
                        return r;
                t = now();
                r = exec_rules(b, &vms[i], true);
                res->up.rules += now() - t;
                if (r < 0)
                        return r;
        }
        r = check_state(b, n, SIZE_MAX, 2 * n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                t = now();
                r = exec_rules(b, &vms[i], false);
                res->down.rules += now() - t;
                if (r < 0)
                        return r;
                t = now();
                r = exec_tap(b, &vms[i], false);
                res->down.links += now() - t;
                if (r < 0)
                        return r;
        }
        r = check_state(b, 0, SIZE_MAX, 0);
        if (r < 0)
                return r;
        res->ran = true;
        return 0;
}

/* --- (c) nft -f per VM ---------------------------------------------------------------------------- */

static int write_all(int fd, const char *s, size_t len) {
        while (len > 0) {
                ssize_t k = write(fd, s, len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                s += k;
                len -= (size_t) k;
        }
        return 0;
}

static int nft_file(Bench *b, const Vm *v, bool add) {
        const NftElem *f0 = &v->elems[0], *f1 = &v->elems[1], *a = &v->elems[3];
        const uint8_t *m = a->mac;
        char text[2048], mac[18];
        int len, fd, r;

        snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
        if (add)
                len = snprintf(text, sizeof(text),
                               "add element inet %s portfwd4 { tcp . %u comment \"%s\" : %s . %u, "
                               "tcp . %u comment \"%s\" : %s . %u }\n"
                               "add element bridge %s vm_ports { \"%s\" comment \"%s\" }\n"
                               "add element bridge %s vm_addrs { \"%s\" . %s . %s comment \"%s\" }\n",
                               layout.table, f0->host_port, f0->tag, v->ip, f0->guest_port, f1->host_port,
                               f1->tag, v->ip, f1->guest_port, layout.table, v->tap, v->elems[2].tag,
                               layout.table, v->tap, mac, v->ip, a->tag);
        else
                len = snprintf(text, sizeof(text),
                               "delete element inet %s portfwd4 { tcp . %u, tcp . %u }\n"
                               "delete element bridge %s vm_ports { \"%s\" }\n"
                               "delete element bridge %s vm_addrs { \"%s\" . %s . %s }\n",
                               layout.table, f0->host_port, f1->host_port, layout.table, v->tap,
                               layout.table, v->tap, mac, v->ip);
        if (len < 0 || (size_t) len >= sizeof(text))
                return -ENAMETOOLONG;

        /* A file per VM as the peers write them; the same name each time, so a signal knows what to remove.
         */
        fd = open(scratch_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return negative_errno();
        r = write_all(fd, text, (size_t) len);
        safe_close(fd);
        if (r < 0)
                return r;
        const char *argv[] = { b->nft_cmd, "-f", scratch_file, NULL };
        return run(argv, NULL);
}

static int run_nft_file(Bench *b, const Vm *vms, size_t n, Result *res) {
        double t;
        int r;

        r = layout_apply(b, true, NULL);
        if (r < 0)
                return r;
        t = now();
        for (size_t i = 0; i < n; i++) {
                r = nft_file(b, &vms[i], true);
                if (r < 0)
                        return r;
        }
        res->up.rules = now() - t;
        r = check_state(b, SIZE_MAX, 4 * n, SIZE_MAX);
        if (r < 0)
                return r;
        t = now();
        for (size_t i = 0; i < n; i++) {
                r = nft_file(b, &vms[i], false);
                if (r < 0)
                        return r;
        }
        res->down.rules = now() - t;
        (void) unlink(scratch_file);
        r = check_state(b, SIZE_MAX, 0, SIZE_MAX);
        if (r < 0)
                return r;
        res->ran = true;
        return layout_apply(b, false, NULL);
}

/* --- (d) bare libnftnl ---------------------------------------------------------------------------- */

/* An element's key and map data as nft lays them out in registers: each field padded to 4 bytes. */
static void bare_key(const NftElem *e, uint8_t key[32], uint32_t *ret_klen, uint8_t data[8],
                     uint32_t *ret_dlen) {
        memset(key, 0, 32);
        memset(data, 0, 8);
        *ret_dlen = 0;
        if (e->kind == NFT_ELEM_PORTFWD) {
                uint16_t hp = htons(e->host_port), gp = htons(e->guest_port);
                uint32_t ip = htonl(e->guest_ip);
                key[0] = e->proto;
                memcpy(key + 4, &hp, 2);
                *ret_klen = 8;
                memcpy(data, &ip, 4);
                memcpy(data + 4, &gp, 2);
                *ret_dlen = 8;
                return;
        }
        memcpy(key, e->ifname, strnlen(e->ifname, 15));
        *ret_klen = 16;
        if (e->kind == NFT_ELEM_VM_ADDR) {
                uint32_t ip = htonl(e->guest_ip);
                memcpy(key + 16, e->mac, 6);
                memcpy(key + 24, &ip, 4);
                *ret_klen = 28;
        }
}

static int bare_msg(struct nftnl_batch *batch, uint32_t seq, bool ack, const NftElem *e, bool add) {
        uint16_t family = e->kind == NFT_ELEM_PORTFWD ? NFPROTO_INET : NFPROTO_BRIDGE;
        uint16_t flags = (add ? NLM_F_CREATE | NLM_F_EXCL : 0) | (ack ? NLM_F_ACK : 0);
        struct nftnl_set *s = nftnl_set_alloc();
        struct nftnl_set_elem *el = nftnl_set_elem_alloc();
        struct nftnl_udata_buf *u = add ? nftnl_udata_buf_alloc(NFT_TAG_MAX + 16) : NULL;
        uint8_t key[32], data[8];
        uint32_t klen, dlen;

        if (!s || !el || (add && (!u || !nftnl_udata_put_strz(u, NFTNL_UDATA_SET_ELEM_COMMENT, e->tag)))) {
                nftnl_set_free(s);
                nftnl_set_elem_free(el);
                if (u)
                        nftnl_udata_buf_free(u);
                return -ENOMEM;
        }
        bare_key(e, key, &klen, data, &dlen);
        nftnl_set_set_str(s, NFTNL_SET_TABLE, layout.table);
        nftnl_set_set_str(s, NFTNL_SET_NAME, nft_elem_kind_to_string(e->kind));
        nftnl_set_elem_set(el, NFTNL_SET_ELEM_KEY, key, klen);
        if (add && dlen)
                nftnl_set_elem_set(el, NFTNL_SET_ELEM_DATA, data, dlen);
        if (u)
                nftnl_set_elem_set(el, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(u),
                                   nftnl_udata_buf_len(u));
        nftnl_set_elem_add(s, el);
        struct nlmsghdr *nlh =
                nftnl_nlmsg_build_hdr(nftnl_batch_buffer(batch),
                                      add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM, family, flags, seq);
        nftnl_set_elems_nlmsg_build_payload(nlh, s);
        nftnl_set_free(s);
        if (u)
                nftnl_udata_buf_free(u);
        return nftnl_batch_update(batch) < 0 ? -ENOMEM : 0;
}

/* Sends the batch in one sendmsg and waits for the ACK of its last message; an error of any message of the
 * batch comes back on its own, and the kernel applies none of the batch then. */
static int bare_send(Bench *b, struct nftnl_batch *batch, uint32_t first, uint32_t last) {
        static uint8_t buf[32768];
        int n_iov = nftnl_batch_iovec_len(batch), fd = mnl_socket_get_fd(b->bare), error = 0;
        _cleanup_free_ struct iovec *iov = calloc((size_t) n_iov, sizeof(struct iovec));
        size_t total = 0;

        if (!iov)
                return -ENOMEM;
        nftnl_batch_iovec(batch, iov, (uint32_t) n_iov);
        for (int i = 0; i < n_iov; i++)
                total += iov[i].iov_len;
        /* The whole batch must go in one sendmsg; grow the send buffer only when needed, as (a) does. */
        int sndbuf = (int) total + 4096;
        if (total > 200000 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
                return negative_errno();
        struct sockaddr_nl dst = { .nl_family = AF_NETLINK };
        struct msghdr msg = {
                .msg_name = &dst, .msg_namelen = sizeof(dst), .msg_iov = iov, .msg_iovlen = (size_t) n_iov
        };
        if (sendmsg(fd, &msg, 0) < 0)
                return negative_errno();

        for (;;) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int k = poll(&p, 1, 5000);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return k < 0 ? negative_errno() : -ETIMEDOUT;
                ssize_t got = recv(fd, buf, sizeof(buf), 0);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return negative_errno();
                int len = (int) got;
                for (const struct nlmsghdr *m = (const struct nlmsghdr *) buf; mnl_nlmsg_ok(m, len);
                     m = mnl_nlmsg_next(m, &len)) {
                        if (m->nlmsg_type != NLMSG_ERROR || m->nlmsg_seq < first || m->nlmsg_seq > last)
                                continue;
                        const struct nlmsgerr *e = mnl_nlmsg_get_payload(m);
                        if (e->error < 0 && !error)
                                error = e->error;
                        if (m->nlmsg_seq == last)
                                return error;
                }
        }
}

/* The elements of VMs [from, to) in one batch, one message per element as in (a), only the last asking for
 * an ACK: the least a correct client can send for the same elements. */
static int bare_batch(Bench *b, const Vm *vms, size_t from, size_t to, bool add) {
        struct nftnl_batch *batch = nftnl_batch_alloc(MNL_SOCKET_BUFFER_SIZE, MNL_SOCKET_BUFFER_SIZE);
        uint32_t first, last = 0;
        int r = 0;

        if (!batch)
                return -ENOMEM;
        nftnl_batch_begin(nftnl_batch_buffer(batch), b->bare_seq++);
        nftnl_batch_update(batch);
        first = b->bare_seq;
        for (size_t i = from; i < to && r >= 0; i++)
                for (unsigned k = 0; k < 4 && r >= 0; k++) {
                        last = b->bare_seq++;
                        r = bare_msg(batch, last, i + 1 == to && k == 3, &vms[i].elems[k], add);
                }
        if (r >= 0 && to > from) {
                nftnl_batch_end(nftnl_batch_buffer(batch), b->bare_seq++);
                nftnl_batch_update(batch);
                r = bare_send(b, batch, first, last);
        }
        nftnl_batch_free(batch);
        return r;
}

static int run_bare(Bench *b, const Vm *vms, size_t n, bool per_vm, Result *res) {
        double t;
        int r = 0;

        r = layout_apply(b, true, NULL);
        if (r < 0)
                return r;
        for (int add = 1; add >= 0; add--) {
                t = now();
                if (per_vm)
                        for (size_t i = 0; i < n && r >= 0; i++)
                                r = bare_batch(b, vms, i, i + 1, add);
                else
                        r = bare_batch(b, vms, 0, n, add);
                double dt = now() - t;
                if (r < 0) {
                        fprintf(stderr, "bench/netlink: bare batch (%s): %s\n", add ? "add" : "delete",
                                strerror(-r));
                        return r;
                }
                if (add)
                        res->up.rules = dt;
                else
                        res->down.rules = dt;
                r = check_state(b, SIZE_MAX, add ? 4 * n : 0, SIZE_MAX);
                if (r < 0)
                        return r;
        }
        res->ran = true;
        return layout_apply(b, false, NULL);
}

/* --- deleting T TAPs: one by one against one grouped request -------------------------------------- */

typedef struct TapDelete {
        double each; /* rtnl_link_delete() per TAP; < 0: skipped */
        double bulk; /* rtnl_links_delete_owned_bulk() */
        double kernel; /* the one RTM_DELLINK of a group alone: the kernel's floor, no checks, no moves */
        double bulk_plain; /* rtnl_links_delete_owned_bulk() of TAPs neither enslaved nor up */
} TapDelete;

static int make_taps(Bench *b, Vm *vms, size_t n, bool enslave) {
        for (size_t i = 0; i < n; i++) {
                int r = enslave ? ours_tap(b, &vms[i])
                                : tap_create(b->rtnl, vms[i].tap, vms[i].tap_tag, (uid_t) -1,
                                             &vms[i].ifindex);
                if (r < 0) {
                        fprintf(stderr, "bench/netlink: TAP %s: %s %s\n", vms[i].tap, strerror(-r),
                                rtnl_error_message(b->rtnl));
                        return r;
                }
        }
        return check_state(b, enslave ? n : 0, SIZE_MAX, SIZE_MAX);
}

static int bulk_delete(Bench *b, Vm *vms, size_t n, double *ret) {
        double t = now();
        int r = ours_delete_taps(b, vms, n);
        *ret = now() - t;
        if (r < 0) {
                fprintf(stderr, "bench/netlink: bulk TAP deletion: %s %s\n", strerror(-r),
                        rtnl_error_message(b->rtnl));
                return r;
        }
        return 0;
}

/* Moves the TAPs into a group (not timed), then times the one request that deletes the group. */
static int kernel_group_delete(Bench *b, Vm *vms, size_t n, double *ret) {
        static uint8_t buf[8192];
        const uint32_t group = 0x4bec0003;
        int r;

        for (size_t i = 0; i < n; i++) {
                LinkChange c = LINK_CHANGE_KEEP;
                c.group = group;
                r = rtnl_link_change(b->rtnl, vms[i].ifindex, &c);
                if (r < 0)
                        return r;
        }
        size_t len = rtnl_build_delete_group(buf, sizeof(buf), ++b->raw_seq, group);
        double t = now();
        if (mnl_socket_sendto(b->raw_rtnl, buf, len) < 0)
                return negative_errno();
        ssize_t got = mnl_socket_recvfrom(b->raw_rtnl, buf, sizeof(buf));
        *ret = now() - t;
        if (got < 0)
                return negative_errno();
        const struct nlmsghdr *m = (const struct nlmsghdr *) buf;
        if (!mnl_nlmsg_ok(m, (int) got) || m->nlmsg_type != NLMSG_ERROR)
                return -EBADMSG;
        const struct nlmsgerr *e = mnl_nlmsg_get_payload(m);
        return e->error;
}

static int run_tap_delete(Bench *b, Vm *vms, size_t n, TapDelete *ret) {
        int r;

        ret->each = -1;
        if (!b->skip_slow) {
                r = make_taps(b, vms, n, true);
                if (r < 0)
                        return r;
                double t = now();
                for (size_t i = 0; i < n; i++) {
                        r = rtnl_link_delete(b->rtnl, vms[i].ifindex);
                        if (r < 0) {
                                fprintf(stderr, "bench/netlink: deleting %s: %s %s\n", vms[i].tap,
                                        strerror(-r), rtnl_error_message(b->rtnl));
                                return r;
                        }
                }
                ret->each = now() - t;
                r = check_state(b, 0, SIZE_MAX, SIZE_MAX);
                if (r < 0)
                        return r;
        }

        /* The grouped deletions are short and noisy: the best of b->repeat runs. */
        ret->bulk = ret->kernel = ret->bulk_plain = HUGE_VAL;
        for (unsigned k = 0; k < b->repeat; k++) {
                double t;

                r = make_taps(b, vms, n, true);
                if (r < 0)
                        return r;
                r = bulk_delete(b, vms, n, &t);
                if (r < 0)
                        return r;
                ret->bulk = dmin(ret->bulk, t);
                r = check_state(b, 0, SIZE_MAX, SIZE_MAX);
                if (r < 0)
                        return r;

                r = make_taps(b, vms, n, true);
                if (r < 0)
                        return r;
                r = kernel_group_delete(b, vms, n, &t);
                if (r < 0) {
                        fprintf(stderr, "bench/netlink: deleting a group of TAPs: %s\n", strerror(-r));
                        return r;
                }
                ret->kernel = dmin(ret->kernel, t);
                r = check_state(b, 0, SIZE_MAX, SIZE_MAX);
                if (r < 0)
                        return r;

                r = make_taps(b, vms, n, false);
                if (r < 0)
                        return r;
                r = bulk_delete(b, vms, n, &t);
                if (r < 0)
                        return r;
                ret->bulk_plain = dmin(ret->bulk_plain, t);
        }
        _cleanup_free_ LinkInfo *links = NULL;
        size_t n_links;
        r = rtnl_link_dump(b->rtnl, &links, &n_links);
        if (r < 0)
                return r;
        /* lo and the bridge are all that may be left */
        return expect("links left after deleting the TAPs (lo and the bridge)", 0, n_links, 2);
}

/* --- setup and cleanup of the namespace ----------------------------------------------------------- */

static int setup(Bench *b) {
        LinkChange c = LINK_CHANGE_KEEP;
        int r;

        r = rtnl_open(&b->rtnl);
        if (r < 0)
                return r;
        r = nft_open(&b->nft);
        if (r < 0)
                return r;
        b->bare = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
        if (!b->bare)
                return negative_errno();
        if (mnl_socket_bind(b->bare, 0, MNL_SOCKET_AUTOPID) < 0)
                return negative_errno();
        b->bare_seq = (uint32_t) time(NULL) << 8;
        b->raw_rtnl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
        if (!b->raw_rtnl)
                return negative_errno();
        if (mnl_socket_bind(b->raw_rtnl, 0, MNL_SOCKET_AUTOPID) < 0)
                return negative_errno();
        b->raw_seq = (uint32_t) time(NULL);

        r = rtnl_bridge_create(b->rtnl, BRIDGE, AGENT_TAG ":core:bridge", &b->bridge);
        if (r < 0) {
                fprintf(stderr, "bench/netlink: creating bridge %s: %s %s\n", BRIDGE, strerror(-r),
                        rtnl_error_message(b->rtnl));
                return r;
        }
        c.up = 1;
        return rtnl_link_change(b->rtnl, b->bridge, &c);
}

/* Everything in the namespace is ours: remove what is left (all of it after an error, the bridge and the
 * iptables table after a good run) with one grouped deletion. Best effort: the namespace, and with it all
 * of this, goes away with the process anyway. */
static void cleanup(Bench *b, bool exec_ran) {
        if (b->nft) {
                char tag[NFT_TAG_MAX + 1];
                if (nft_table_tag(b->nft, &layout, tag) >= 0)
                        (void) layout_apply(b, false, NULL);
        }
        if (exec_ran && b->nft_cmd[0]) {
                const char *argv[] = { b->nft_cmd, "delete", "table", "ip", "nat", NULL };
                (void) run(argv, NULL);
        }
        if (b->rtnl) {
                _cleanup_free_ LinkInfo *links = NULL;
                _cleanup_free_ OwnedLink *owned = NULL;
                size_t n, k = 0;
                if (rtnl_link_dump(b->rtnl, &links, &n) >= 0 &&
                    (owned = calloc(n ? n : 1, sizeof(OwnedLink)))) {
                        for (size_t i = 0; i < n; i++)
                                if (strcmp(links[i].name, "lo") != 0)
                                        owned[k++] = (OwnedLink){ .ifindex = links[i].ifindex,
                                                                  .name = links[i].name,
                                                                  .tag = links[i].alias };
                        if (k > 0 && rtnl_links_delete_owned_bulk(b->rtnl, owned, k, NULL, NULL) < 0)
                                fprintf(stderr, "bench/netlink: removing %zu links: %s, ignoring\n", k,
                                        rtnl_error_message(b->rtnl));
                }
        }
        b->rtnl = rtnl_close(b->rtnl);
        b->nft = nft_close(b->nft);
        if (b->bare)
                mnl_socket_close(b->bare);
        b->bare = NULL;
        if (b->raw_rtnl)
                mnl_socket_close(b->raw_rtnl);
        b->raw_rtnl = NULL;
        scratch_remove();
}

/* --- report --------------------------------------------------------------------------------------- */

static void print_ms(double s) {
        if (s < 0)
                printf(" %10s", "-");
        else
                printf(" %10.2f", s * 1e3);
}

static void print_ratio(double num, double den) {
        if (num < 0 || den <= 0)
                printf(" %10s", "-");
        else
                printf(" %9.1fx", num / den);
}

static void print_row(Approach a, const Result *r) {
        printf("  %-31s", approach_table[a]);
        if (!r->ran) {
                printf(" skipped: %s\n", r->skipped ? r->skipped : "failed");
                return;
        }
        print_ms(r->up.rules);
        print_ms(r->up.links);
        print_ms(r->up.rules + (r->up.links > 0 ? r->up.links : 0));
        printf("   ");
        print_ms(r->down.rules);
        print_ms(r->down.links);
        print_ms(r->down.rules + (r->down.links > 0 ? r->down.links : 0));
        printf("\n");
        fflush(stdout);
}

/* Peer over ours (speed-up), or ours over the floor (overhead) when `over_floor`. */
static void print_ratios(const char *label, const Result *ours, const Result *other, bool over_floor) {
        if (!ours->ran || !other->ran)
                return;
        const Result *num = over_floor ? ours : other, *den = over_floor ? other : ours;
        printf("  %-31s", label);
        print_ratio(num->up.rules, den->up.rules);
        print_ratio(num->down.rules, den->down.rules);
        print_ratio(num->up.rules + num->down.rules, den->up.rules + den->down.rules);
        printf("   ");
        print_ratio(num->up.links, den->up.links);
        print_ratio(num->down.links, den->down.links);
        printf("\n");
}

static int parse_list(const char *s, size_t *ns, size_t *ret_count) {
        _cleanup_free_ char *copy = strdup(s);
        size_t count = 0;

        if (!copy)
                return -ENOMEM;
        for (char *save = NULL, *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                char *end;
                unsigned long v = strtoul(t, &end, 10);
                if (*end || v == 0 || v > N_MAX || count == 16)
                        return -EINVAL;
                ns[count++] = v;
        }
        if (count == 0)
                return -EINVAL;
        *ret_count = count;
        return 0;
}

static void usage(FILE *f) {
        fprintf(f,
                "usage: bench/netlink [--quick] [--n N[,N...]] [--taps T] [--repeat K] [--skip-slow]\n"
                "  --quick      N = 10,100 and 100 TAPs for the deletion comparison\n"
                "  --n LIST     numbers of VMs (default 10,100,1000; at most %d)\n"
                "  --taps T     TAPs for one-by-one against grouped deletion (default 1000)\n"
                "  --repeat K   runs of (a), (a'), (d), (d') and grouped deletions, best shown (default 3)\n"
                "  --skip-slow  leave out exec-per-rule above N = 100 and the one-by-one deletion\n",
                N_MAX);
}

static void result_keep_best(Result *best, const Result *r) {
        if (!best->ran) {
                *best = *r;
                return;
        }
#define KEEP_MIN(f) best->f = r->f < best->f ? r->f : best->f
        KEEP_MIN(up.rules);
        KEEP_MIN(up.links);
        KEEP_MIN(down.rules);
        KEEP_MIN(down.links);
#undef KEEP_MIN
}

static int run_approach(Bench *b, Approach a, Vm *vms, size_t n, unsigned repeat, Result *res) {
        for (unsigned k = 0; k < repeat; k++) {
                Result one = { .up.links = a <= APPROACH_EXEC ? 0 : -1,
                               .down.links = a <= APPROACH_EXEC ? 0 : -1 };
                int r;

                switch (a) {
                case APPROACH_OURS:
                case APPROACH_OURS_PASSES:
                        r = run_ours(b, vms, n, a == APPROACH_OURS, &one);
                        break;
                case APPROACH_EXEC:
                        r = run_exec(b, vms, n, &one);
                        break;
                case APPROACH_NFT_FILE:
                        r = run_nft_file(b, vms, n, &one);
                        break;
                case APPROACH_BARE_ONE:
                case APPROACH_BARE_PER_VM:
                        r = run_bare(b, vms, n, a == APPROACH_BARE_PER_VM, &one);
                        break;
                default:
                        return -EINVAL;
                }
                if (r < 0)
                        return r;
                result_keep_best(res, &one);
        }
        return 0;
}

int main(int argc, char **argv) {
        size_t ns[16] = { 10, 100, 1000 }, n_ns = 3, taps = 1000, n_max = 0;
        Result results[16][_APPROACH_MAX] = {};
        _cleanup_free_ Vm *vms = NULL;
        TapDelete del = {};
        Bench b = { .repeat = 3 };
        bool exec_ran = false;
        double layout_time = 0;
        int r = 0;

        for (int i = 1; i < argc; i++) {
                size_t one[16], k;
                if (strcmp(argv[i], "--quick") == 0) {
                        ns[0] = 10, ns[1] = 100, n_ns = 2, taps = 100;
                } else if (strcmp(argv[i], "--skip-slow") == 0)
                        b.skip_slow = true;
                else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
                        if (parse_list(argv[++i], ns, &n_ns) < 0) {
                                usage(stderr);
                                return 2;
                        }
                } else if ((strcmp(argv[i], "--taps") == 0 || strcmp(argv[i], "--repeat") == 0) &&
                           i + 1 < argc) {
                        bool is_taps = strcmp(argv[i], "--taps") == 0;
                        if (parse_list(argv[++i], one, &k) < 0 || k != 1 || (!is_taps && one[0] > 100)) {
                                usage(stderr);
                                return 2;
                        }
                        if (is_taps)
                                taps = one[0];
                        else
                                b.repeat = (unsigned) one[0];
                } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(stdout);
                        return 0;
                } else {
                        usage(stderr);
                        return 2;
                }
        }
        for (size_t i = 0; i < n_ns; i++)
                if (ns[i] > n_max)
                        n_max = ns[i];
        if (taps > n_max)
                n_max = taps;

        if (geteuid() != 0) {
                printf("SKIP: bench/netlink needs root: it creates TAPs, a bridge and nftables tables in a "
                       "network namespace of its own\n");
                return 0;
        }
        if (unshare(CLONE_NEWNET) < 0) {
                printf("SKIP: bench/netlink cannot make its network namespace: unshare(CLONE_NEWNET): %s\n",
                       strerror(errno));
                return 0;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);

        const char *tmp = getenv("TMPDIR");
        snprintf(scratch_dir, sizeof(scratch_dir), "%.4000s/bench-netlink-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(scratch_dir)) {
                fprintf(stderr, "bench/netlink: cannot make a scratch directory %s: %m\n", scratch_dir);
                scratch_dir[0] = '\0';
                return 1;
        }
        snprintf(scratch_file, sizeof(scratch_file), "%.4080s/vm.nft", scratch_dir);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);

        r = setup(&b);
        if (r < 0) {
                fprintf(stderr, "bench/netlink: setup failed: %s\n", strerror(-r));
                goto finish;
        }

        bool have_ip = find_tool("ip", b.ip), have_iptables = find_tool("iptables", b.iptables),
             have_nft = find_tool("nft", b.nft_cmd);
        char v_ip[128], v_iptables[128], v_nft[128];
        struct utsname u;
        tool_version(b.ip, "-V", v_ip, sizeof(v_ip));
        tool_version(b.iptables, "--version", v_iptables, sizeof(v_iptables));
        tool_version(b.nft_cmd, "--version", v_nft, sizeof(v_nft));
        if (uname(&u) < 0)
                snprintf(u.release, sizeof(u.release), "?");

        vms = vms_new(n_max);
        if (!vms) {
                r = -ENOMEM;
                goto finish;
        }
        r = layout_apply(&b, true, &layout_time);
        if (r >= 0)
                r = layout_apply(&b, false, NULL);
        if (r < 0)
                goto finish;

        printf("chvm netlink benchmark, in a network namespace of its own (kernel %s)\n", u.release);
        printf("  %s; %s; %s\n", v_ip, v_iptables, v_nft);
        printf("  a VM = 1 TAP (enslaved to %s, up) + 2 tcp port forwards + its vm_ports and vm_addrs "
               "elements;\n"
               "  (b) makes only the 2 forwards (iptables DNAT, no anti-spoofing): half the rule work.\n"
               "  (a), (a'), (d), (d'): best of %u runs; (b), (c): one run. CLOCK_MONOTONIC, wall time.\n"
               "  The layout batch (2 tables, 3 sets, 5 chains, 8 rules), made once, took %.2f ms.\n",
               BRIDGE, b.repeat, layout_time * 1e3);

        for (size_t t = 0; t < n_ns; t++) {
                size_t n = ns[t];
                Result *res = results[t];

                printf("\nN = %zu VMs: %zu TAPs, %zu port forwards, %zu anti-spoof elements\n", n, n, 2 * n,
                       2 * n);
                printf("  %-31s %32s    %32s\n", "", "-------- bring-up (ms) --------",
                       "-------- teardown (ms) --------");
                printf("  %-31s %10s %10s %10s    %10s %10s %10s\n", "approach", "rules", "links", "total",
                       "rules", "links", "total");

                for (Approach a = APPROACH_OURS; a <= APPROACH_OURS_PASSES; a++) {
                        r = run_approach(&b, a, vms, n, b.repeat, &res[a]);
                        if (r < 0)
                                goto finish;
                        print_row(a, &res[a]);
                }

                if (!have_ip || !have_iptables)
                        res[APPROACH_EXEC].skipped =
                                "ip or iptables not installed (apt-get install iptables)";
                else if (b.skip_slow && n > 100)
                        res[APPROACH_EXEC].skipped = "--skip-slow";
                else {
                        if (n >= 500)
                                fprintf(stderr,
                                        "  (exec-per-rule at N = %zu runs %zu processes: a minute or two)\n",
                                        n, 7 * n);
                        exec_ran = true;
                        r = run_approach(&b, APPROACH_EXEC, vms, n, 1, &res[APPROACH_EXEC]);
                        if (r < 0)
                                goto finish;
                }
                print_row(APPROACH_EXEC, &res[APPROACH_EXEC]);

                if (!have_nft)
                        res[APPROACH_NFT_FILE].skipped = "nft not installed (apt-get install nftables)";
                else {
                        r = run_approach(&b, APPROACH_NFT_FILE, vms, n, 1, &res[APPROACH_NFT_FILE]);
                        if (r < 0)
                                goto finish;
                }
                print_row(APPROACH_NFT_FILE, &res[APPROACH_NFT_FILE]);

                for (Approach a = APPROACH_BARE_ONE; a <= APPROACH_BARE_PER_VM; a++) {
                        r = run_approach(&b, a, vms, n, b.repeat, &res[a]);
                        if (r < 0)
                                goto finish;
                        print_row(a, &res[a]);
                }

                printf("  %-31s %10s %10s %10s    %10s %10s\n", "ratios (same run)", "up rules", "dn rules",
                       "rules u+d", "up links", "dn links");
                print_ratios("exec (b) / ours (a)", &res[APPROACH_OURS], &res[APPROACH_EXEC], false);
                print_ratios("nft -f (c) / ours (a')", &res[APPROACH_OURS_PASSES], &res[APPROACH_NFT_FILE],
                             false);
                print_ratios("ours (a') / bare 1 batch (d)", &res[APPROACH_OURS_PASSES],
                             &res[APPROACH_BARE_ONE], true);
                print_ratios("ours (a') / bare batch/VM (d')", &res[APPROACH_OURS_PASSES],
                             &res[APPROACH_BARE_PER_VM], true);
        }

        printf("\nDeleting %zu TAPs (grouped: best of %u runs)\n", taps, b.repeat);
        r = run_tap_delete(&b, vms, taps, &del);
        if (r < 0)
                goto finish;
        if (del.each >= 0)
                printf("  %-60s %10.2f ms  (%.2f ms per TAP)\n",
                       "enslaved + up, one by one (rtnl_link_delete)", del.each * 1e3,
                       del.each * 1e3 / (double) taps);
        else
                printf("  %-60s skipped: --skip-slow\n", "enslaved + up, one by one (rtnl_link_delete)");
        printf("  %-60s %10.2f ms", "enslaved + up, grouped (rtnl_links_delete_owned_bulk)", del.bulk * 1e3);
        if (del.each >= 0)
                printf("  (%.1fx faster)", del.each / del.bulk);
        printf("\n  %-60s %10.2f ms\n", "enslaved + up, the group's RTM_DELLINK alone (kernel floor)",
               del.kernel * 1e3);
        printf("  %-60s %10.2f ms\n", "not enslaved, down, grouped (rtnl_links_delete_owned_bulk)",
               del.bulk_plain * 1e3);

        /* The targets, read off the largest N that has the numbers they need. */
        printf("\nIssue 3 targets\n");
        const Result *tgt = NULL;
        size_t tgt_n = 0;
        for (size_t t = 0; t < n_ns; t++)
                if (results[t][APPROACH_EXEC].ran && ns[t] >= tgt_n)
                        tgt = results[t], tgt_n = ns[t];
        if (tgt) {
                double up = tgt[APPROACH_EXEC].up.rules / tgt[APPROACH_OURS].up.rules,
                       dn = tgt[APPROACH_EXEC].down.rules / tgt[APPROACH_OURS].down.rules;
                printf("  rules >= 50x faster than exec-per-rule (N = %zu): bring-up %.0fx, teardown %.0fx: "
                       "%s\n",
                       tgt_n, up, dn, up >= 50 && dn >= 50 ? "met" : "NOT met");
        } else
                printf("  rules >= 50x faster than exec-per-rule: not measured (exec approach skipped)\n");
        tgt = NULL, tgt_n = 0;
        for (size_t t = 0; t < n_ns; t++)
                if (ns[t] >= tgt_n)
                        tgt = results[t], tgt_n = ns[t];
        if (tgt) {
                double up = tgt[APPROACH_OURS_PASSES].up.rules / tgt[APPROACH_BARE_ONE].up.rules,
                       dn = tgt[APPROACH_OURS_PASSES].down.rules / tgt[APPROACH_BARE_ONE].down.rules;
                printf("  nft part within 2x of one bare libnftnl batch (N = %zu): bring-up %.1fx, "
                       "teardown %.1fx: "
                       "%s\n",
                       tgt_n, up, dn, up <= 2 && dn <= 2 ? "met" : "NOT met");
                up = tgt[APPROACH_OURS_PASSES].up.rules / tgt[APPROACH_BARE_PER_VM].up.rules;
                dn = tgt[APPROACH_OURS_PASSES].down.rules / tgt[APPROACH_BARE_PER_VM].down.rules;
                printf("    against bare batches of the same size (one per VM, as DESIGN.md asks): "
                       "%.1fx, %.1fx\n",
                       up, dn);
        }
        printf("  teardown of %zu TAPs <= 0.5 s: %.3f s grouped, enslaved + up: %s\n", taps, del.bulk,
               del.bulk <= 0.5 ? "met" : "NOT met");
        printf("    the kernel alone needs %.3f s for them (%.3f s for TAPs off the bridge, "
               "with our checks)\n",
               del.kernel, del.bulk_plain);
        r = 0;

finish:
        if (r < 0)
                fprintf(stderr, "bench/netlink: failed: %s\n", strerror(-r));
        cleanup(&b, exec_ran);
        return r < 0 ? 1 : 0;
}
