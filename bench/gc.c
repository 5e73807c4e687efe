/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* GC benchmark (issue 6, and issue 7's scale item; a program, not a test): the time to plan a garbage
 * collection with N owned VMs and D foreign decoys, the agent's way against the peers' way, in the same
 * namespace and the same invocation.
 *
 *   world     the real chvm-agentd of this build with N fake VMs (tests/fake-vmm as cloud-hypervisor,
 *             backend local, [local] subnet 10.64.0.0/20 and the default table_owner = auto): per VM a
 *             TAP, its vm_ports and vm_addrs elements and 2 tcp port forwards in the portfwd4 map. The
 *             peers keep port forwards as iptables DNAT rules, so the same 2N forwards are also there as
 *             iptables-nft rules in `ip nat` PREROUTING (what a peer would have made for these VMs), and
 *             the peer's state file lists the N running VMs (name, TAP, address, from ListVMs).
 *             Decoys, nobody's here: D/2 untagged TAPs `tap-xxxxxxxx` (our prefix), D/4 DNAT rules in a
 *             foreign nft table `ip foreign`, D/4 foreign iptables DNAT rules (both to 192.168.200.0/23,
 *             outside our subnet).
 *   leaks     with --leaks L: the agent is stopped (SIGTERM; the VMs keep running), and L VMs' worth of
 *             objects tagged with this agent's id for VM ids it never had are added — a TAP, vm_ports,
 *             vm_addrs and 2 forwards each, what an agent that lost its journal leaves — plus their 2L
 *             iptables twins for the peer. The agent's tables are owned (NFT_TABLE_F_OWNER) while it
 *             runs, so the elements go into them while it is stopped (orphaned tables may be changed by
 *             anyone); then it is started again and adopts the tables and the N running VMs.
 *   plan      R times, interleaved: CollectGarbage(dry_run=true, heuristic=false) and (…, heuristic=true)
 *             over D-Bus, reply read to the end; `chvmctl doctor --gc --dry-run` as a process; the
 *             peer's way in C, as a script, and on an nftables host. Without and then with the leaks.
 *   peer      a faithful, generous baseline in C: runs `ip -o link show` and `iptables -t nat -S`, reads
 *             its state file, parses the text, and decides per TAP named with the prefix (delete unless
 *             a running VM has it) and per DNAT rule into the subnet (delete unless it points to a
 *             running VM's address; others are foreign: skip). The nftables-host variant runs
 *             `ip -o link show` and `nft list ruleset` and takes every `dnat to ADDR` and every map
 *             element `: ADDR . PORT` as a forward. Sorted arrays and bsearch: the generous baseline.
 *             The same plan as a script would make it (the two commands piped into awk, which prints a
 *             line per decision) is timed alongside; both must come to the same decisions.
 *   parts     where the time goes, timed in this process in the same namespace: the link dump and the
 *             dump of our tables' elements with the agent's own netlink code (libchvm), a read of every
 *             /proc/PID/cmdline (the GC's search for hypervisors it does not watch), and each command
 *             of the peer alone.
 *   scale     bring-up (CreateVM + StartVM), ListVMs and `chvmctl list`, a collection carried out
 *             (the leaks), teardown of every VM (every 20th with `chvmctl stop` + `chvmctl rm`, every
 *             20th + 10 with StopVM + RemoveVM, the rest KillVM + RemoveVM over D-Bus), agent RSS, HWM,
 *             open files, and the file limit it runs with (raised to the hard limit here, as its unit's
 *             LimitNOFILE would: it holds a pidfd per VM).
 *
 * The ip/nft tools check the kernel after bring-up, after the collection and after the teardown. The
 * program makes its own network namespace (unshare(CLONE_NEWNET)); every object dies with it. It is the
 * subreaper of what it starts, ends the agent and every hypervisor by PID, and removes its folder (under
 * $TMPDIR, default /tmp). Without root it says SKIP and exits 0.
 *
 *     bench/gc [--quick] [--vms N] [--decoys D] [--leaks L] [--reps R] [--no-teardown] [--keep]
 */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backends/nl/nft.h"
#include "backends/nl/rtnl.h"
#include "bench/bench-agent.h"
#include "util/macro.h"

/* A Linux bridge takes at most 1023 ports (BR_MAX_PORTS 1024, port 0 unused): the local backend's chvm0
 * holds that many VMs, and the VMs past it go to the bridge backend on a bridge of ours, up to as many
 * again. */
#define LOCAL_MAX 1023
#define N_MAX (2 * LOCAL_MAX)
#define ADMIN_BRIDGE "chvmb0"
#define SUBNET "10.64.0.0/20"
#define SUBNET_BASE UINT32_C(0x0a400000)
#define SUBNET_PREFIXLEN 20
#define HOST_PORT_BASE 20000 /* VM i: 20000 + 2i and 20001 + 2i */
#define LEAK_MAX 1000 /* with N_MAX, inside 10.64.0.0/20 */
#define LEAK_PORT_BASE 30000 /* leak k: 30000 + 2k and 30001 + 2k */
#define LEAK_ID_BASE UINT64_C(0xc0ffee00000) /* TAP tap-c0ffee00xxx */
#define DECOY_MAX 10000
#define DECOY_IPT_PORT_BASE 40000
#define DECOY_NFT_PORT_BASE 50000
#define REPS_MAX 1000
#define TAP_PREFIX "tap-"

/* --- the agent's plan over D-Bus ----------------------------------------------------------------------- */

/* The decision counts of a plan, by action and by reason. */
typedef struct PlanCount {
        size_t n, del, forget, skip;
        size_t running, unknown, untracked, owned, heuristic, core, other;
} PlanCount;

static void count_reason(PlanCount *c, const char *reason) {
        static const struct {
                const char *word;
                size_t offset;
        } reasons[] = {
                { "running", offsetof(PlanCount, running) },
                { "unknown ownership", offsetof(PlanCount, unknown) },
                { "untracked", offsetof(PlanCount, untracked) },
                { "owned", offsetof(PlanCount, owned) },
                { "heuristic", offsetof(PlanCount, heuristic) },
                { "core", offsetof(PlanCount, core) },
        };
        for (size_t i = 0; i < ELEMENTSOF(reasons); i++)
                if (strcmp(reason, reasons[i].word) == 0) {
                        (*(size_t *) ((char *) c + reasons[i].offset))++;
                        return;
                }
        c->other++;
}

/* CollectGarbage; the reply is read to its end, as chvmctl reads it. */
static int bus_gc(sd_bus *bus, bool dry_run, bool heuristic, PlanCount *ret) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *action, *kind, *name, *vm, *reason, *detail, *error;
        PlanCount c = {};
        int failed, quarantine, r;

        r = sd_bus_call_method(bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "CollectGarbage", &e, &reply, "bb",
                               dry_run, heuristic);
        if (r < 0) {
                r = call_failed("CollectGarbage", "", r, &e);
                sd_bus_error_free(&e);
                return r;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(ssssssbs)");
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ssssssbs)", &action, &kind, &name, &vm, &reason,
                                                  &detail, &failed, &error)) > 0) {
                c.n++;
                c.del += strcmp(action, "delete") == 0;
                c.forget += strcmp(action, "forget") == 0;
                c.skip += strcmp(action, "skip") == 0;
                count_reason(&c, reason);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r >= 0)
                r = sd_bus_message_read(reply, "b", &quarantine);
        sd_bus_message_unref(reply);
        if (r < 0)
                return call_failed("CollectGarbage (reply)", "", r, NULL);
        *ret = c;
        return 0;
}

/* --- the peers' way ------------------------------------------------------------------------------------ */

typedef struct PeerDecision {
        bool del;
        bool link; /* a TAP; else a forward */
        char name[64]; /* the TAP, or the forward's target */
} PeerDecision;

typedef struct PeerPlan {
        PeerDecision *items;
        size_t n, size;
        size_t del, keep, foreign; /* foreign: DNAT outside the subnet, not the peer's */
        size_t bytes; /* of command output parsed */
} PeerPlan;

typedef struct Peer {
        char state_file[256];
        char **taps; /* the running VMs' TAPs, sorted */
        uint32_t *ips; /* their addresses, sorted */
        size_t n;
} Peer;

static int cmp_strp(const void *x, const void *y) {
        return strcmp(*(char *const *) x, *(char *const *) y);
}

static int cmp_u32(const void *x, const void *y) {
        uint32_t a = *(const uint32_t *) x, b = *(const uint32_t *) y;
        return a < b ? -1 : a > b;
}

static void peer_clear(Peer *p) {
        for (size_t i = 0; i < p->n; i++)
                free(p->taps[i]);
        free(p->taps);
        free(p->ips);
        p->taps = NULL;
        p->ips = NULL;
        p->n = 0;
}

/* The peer's state file: "NAME TAP ADDR|- STATE" per VM it started. */
static int peer_read_state(Peer *p) {
        FILE *f = fopen(p->state_file, "re");
        char line[256], name[64], tap[64], ip[64], state[32];
        size_t size = 0;
        int r = 0;

        if (!f)
                return negative_errno();
        peer_clear(p);
        while (fgets(line, sizeof(line), f)) {
                struct in_addr a = {};
                if (sscanf(line, "%63s %63s %63s %31s", name, tap, ip, state) != 4 ||
                    strcmp(state, "running") != 0 ||
                    (strcmp(ip, "-") != 0 && inet_pton(AF_INET, ip, &a) != 1))
                        continue;
                if (p->n == size) {
                        size = size ? 2 * size : 1024;
                        char **t = realloc(p->taps, size * sizeof(char *));
                        uint32_t *i = t ? realloc(p->ips, size * sizeof(uint32_t)) : NULL;
                        if (t)
                                p->taps = t;
                        if (!t || !i) {
                                r = -ENOMEM;
                                break;
                        }
                        p->ips = i;
                }
                p->taps[p->n] = strdup(tap);
                if (!p->taps[p->n]) {
                        r = -ENOMEM;
                        break;
                }
                p->ips[p->n++] = ntohl(a.s_addr);
        }
        fclose(f);
        if (r < 0)
                return r;
        qsort(p->taps, p->n, sizeof(char *), cmp_strp);
        qsort(p->ips, p->n, sizeof(uint32_t), cmp_u32);
        return 0;
}

static int peer_decide(PeerPlan *pl, bool link, bool del, const char *name, size_t len) {
        if (pl->n == pl->size) {
                size_t size = pl->size ? 2 * pl->size : 4096;
                PeerDecision *d = realloc(pl->items, size * sizeof(PeerDecision));
                if (!d)
                        return -ENOMEM;
                pl->items = d;
                pl->size = size;
        }
        PeerDecision *d = &pl->items[pl->n++];
        d->del = del;
        d->link = link;
        snprintf(d->name, sizeof(d->name), "%.*s", (int) (len < 63 ? len : 63), name);
        pl->del += del;
        pl->keep += !del;
        return 0;
}

static bool peer_running_ip(const Peer *p, uint32_t ip) {
        return bsearch(&ip, p->ips, p->n, sizeof(uint32_t), cmp_u32) != NULL;
}

static bool in_subnet(uint32_t ip) {
        return (ip & ~((UINT32_C(1) << (32 - SUBNET_PREFIXLEN)) - 1)) == SUBNET_BASE;
}

/* A forward's target address at s (its text runs up to ':', ' ', '-' or the end): into our subnet, the
 * peer decides; elsewhere it is not the peer's. */
static int peer_forward(const Peer *p, PeerPlan *pl, const char *s) {
        char buf[16];
        size_t len = strspn(s, "0123456789.");
        struct in_addr a;
        if (len == 0 || len >= sizeof(buf))
                return 0;
        memcpy(buf, s, len);
        buf[len] = '\0';
        if (inet_pton(AF_INET, buf, &a) != 1)
                return 0;
        uint32_t ip = ntohl(a.s_addr);
        if (!in_subnet(ip)) {
                pl->foreign++;
                return 0;
        }
        return peer_decide(pl, false, !peer_running_ip(p, ip), s, len);
}

/* `ip -o link show`: "7: tap-0000000001a: <BROADCAST,...> mtu 1500 ... master chvm0 ...", one per line. */
static int peer_links(const Peer *p, PeerPlan *pl) {
        char *argv[] = { (char *) "ip", (char *) "-o", (char *) "link", (char *) "show", NULL };
        _cleanup_free_ char *out = NULL;
        int r = run(argv, &out);
        if (r != 0)
                return r < 0 ? r : -EIO;
        pl->bytes += strlen(out);
        for (char *line = out; *line;) {
                char *end = strchrnul(line, '\n'), *name = strstr(line, ": ");
                if (name && name < end) {
                        name += 2;
                        size_t len = strcspn(name, ":@ ");
                        if (len < IFNAMSIZ && strncmp(name, TAP_PREFIX, strlen(TAP_PREFIX)) == 0) {
                                char tap[IFNAMSIZ];
                                memcpy(tap, name, len);
                                tap[len] = '\0';
                                const char *key = tap;
                                bool running =
                                        bsearch(&key, p->taps, p->n, sizeof(char *), cmp_strp) != NULL;
                                if ((r = peer_decide(pl, true, !running, name, len)) < 0)
                                        return r;
                        }
                }
                line = *end ? end + 1 : end;
        }
        return 0;
}

/* `iptables -t nat -S`: "-A PREROUTING -p tcp -m tcp --dport 20000 -j DNAT --to-destination 10.64.0.2:80".
 */
static int peer_iptables(const Peer *p, PeerPlan *pl) {
        char *argv[] = { (char *) "iptables", (char *) "-t", (char *) "nat", (char *) "-S", NULL };
        _cleanup_free_ char *out = NULL;
        int r = run(argv, &out);
        if (r != 0)
                return r < 0 ? r : -EIO;
        size_t len = strlen(out);
        pl->bytes += len;
        for (char *line = out, *stop = out + len; line < stop;) {
                char *end = strchrnul(line, '\n');
                *end = '\0';
                char *to = strncmp(line, "-A ", 3) == 0 && strstr(line, " -j DNAT")
                                   ? strstr(line, "--to-destination ")
                                   : NULL;
                if (to && (r = peer_forward(p, pl, to + strlen("--to-destination "))) < 0)
                        return r;
                line = end + 1;
        }
        return 0;
}

/* `nft list ruleset`: rules "... dnat to 192.168.200.2:80" (and "dnat ip to"), map elements
 * "tcp . 20000 comment \"...\" : 10.64.0.2 . 80". */
static int peer_nft(const Peer *p, PeerPlan *pl) {
        char *argv[] = { (char *) "nft", (char *) "list", (char *) "ruleset", NULL };
        _cleanup_free_ char *out = NULL;
        int r = run(argv, &out);
        if (r != 0)
                return r < 0 ? r : -EIO;
        pl->bytes += strlen(out);
        for (char *s = out; (s = strstr(s, "dnat "));) {
                s += 5;
                if (strncmp(s, "ip ", 3) == 0)
                        s += 3;
                if (strncmp(s, "to ", 3) == 0 && (r = peer_forward(p, pl, s + 3)) < 0)
                        return r;
        }
        for (char *s = out; (s = strstr(s, " : "));) {
                s += 3;
                if ((r = peer_forward(p, pl, s)) < 0)
                        return r;
        }
        return 0;
}

/* The whole plan the peers' way: state file, the tools' text, a decision per TAP and per forward. */
static int peer_plan(Peer *p, bool nft_host, PeerPlan *ret) {
        PeerPlan pl = {};
        int r = peer_read_state(p);
        if (r >= 0)
                r = peer_links(p, &pl);
        if (r >= 0)
                r = nft_host ? peer_nft(p, &pl) : peer_iptables(p, &pl);
        if (r < 0) {
                free(pl.items);
                return r;
        }
        free(ret->items);
        *ret = pl;
        return 0;
}

/* The same as a script would do it: the tools piped into awk, which reads the state file first and prints
 * the plan, a line per TAP and per DNAT rule into the subnet ("delete NAME" / "keep NAME"). $1: the state
 * file. */
static const char peer_script[] =
        "state=$1\n"
        "ip -o link show | awk -v state=\"$state\" '\n"
        "  BEGIN { while ((getline l < state) > 0) { split(l, f, \" \"); if (f[4] == \"running\") "
        "run[f[2]] = 1 } }\n"
        "  { n = $2; sub(/[:@].*/, \"\", n); if (n !~ /^" TAP_PREFIX "/) next;\n"
        "    print ((n in run) ? \"keep \" : \"delete \") n }'\n"
        "iptables -t nat -S | awk -v state=\"$state\" '\n"
        "  BEGIN { while ((getline l < state) > 0) { split(l, f, \" \"); if (f[4] == \"running\") "
        "run[f[3]] = 1 } }\n"
        "  /^-A / && / -j DNAT/ { ip = \"\"\n"
        "    for (i = 1; i < NF; i++) if ($i == \"--to-destination\") { split($(i + 1), a, \":\"); ip = "
        "a[1] }\n"
        "    if (ip !~ /^10\\.64\\.([0-9]|1[0-5])\\./) { print \"foreign \" ip; next }\n" /* 10.64.0.0/20 */
        "    print ((ip in run) ? \"keep \" : \"delete \") ip }'\n";

static int peer_script_plan(const Peer *p, PeerPlan *ret) {
        char *argv[] = { (char *) "bash", (char *) "-c",          (char *) peer_script,
                         (char *) "peer", (char *) p->state_file, NULL };
        _cleanup_free_ char *out = NULL;
        PeerPlan pl = {};
        int r = run(argv, &out);
        if (r != 0) {
                say("peer script: exit %d: %.400s", r, out ? out : "");
                return r < 0 ? r : -EIO;
        }
        for (char *line = out; *line;) {
                char *end = strchrnul(line, '\n');
                pl.n += strncmp(line, "delete ", 7) == 0 || strncmp(line, "keep ", 5) == 0;
                pl.del += strncmp(line, "delete ", 7) == 0;
                pl.keep += strncmp(line, "keep ", 5) == 0;
                pl.foreign += strncmp(line, "foreign ", 8) == 0;
                line = *end ? end + 1 : end;
        }
        *ret = pl;
        return 0;
}

/* --- the benchmark ------------------------------------------------------------------------------------- */

typedef struct Vm {
        char name[33];
        char tap[IFNAMSIZ];
        char ip[16];
        uint64_t id;
        bool local; /* else on the bridge backend, without forwards */
} Vm;

typedef struct Options {
        size_t vms, decoys, leaks, reps;
        bool teardown, keep;
} Options;

/* The figures of one kind of plan over the repetitions. */
typedef struct Series {
        double t[REPS_MAX];
        double cpu; /* the agent's CPU seconds over all of them */
        size_t n;
        PlanCount c; /* of the last one */
        PeerPlan pp;
} Series;

enum { S_AGENT, S_AGENT_HEUR, S_CTL, S_PEER, S_PEER_SH, S_PEER_NFT, _S_MAX };

typedef struct Round {
        const char *title;
        Series s[_S_MAX];
        char load[64];
        size_t n_leaks;
} Round;

enum { P_LINKS, P_ELEMS, P_PROC, P_IP, P_IPT, P_NFT, _P_MAX };

typedef struct Bench {
        Options o;
        BenchAgent ag;
        sd_bus *bus;
        Peer peer;
        Vm *vms;
        size_t n_vms, n_local;
        char agent_id[64];
        char overflow_error[512]; /* StartVM's answer for a local VM past LOCAL_MAX; "" if not tried */

        /* results */
        char load_start[64], load_end[64];
        long nofile_hard;
        double first_ready, leak_ready;
        double up_total, up_cpu;
        double *up, *up_create, *up_start;
        double list_bus[REPS_MAX], list_ctl[REPS_MAX];
        size_t n_list;
        ProcInfo at0, atn, after_plans, after_leaks, after_gc, after_teardown;
        Round rounds[2];
        size_t n_rounds;
        double parts[_P_MAX][REPS_MAX];
        size_t n_parts, n_links, n_elems, n_procs, bytes_ip, bytes_ipt, bytes_nft;
        double gc_time;
        PlanCount gc_done, gc_after;
        double *down_ctl, *down_stop, *down_kill;
        size_t n_down_ctl, n_down_stop, n_down_kill;
        double down_total, down_cpu;
        bool torn_down;
} Bench;

static int vm_from_list(const BusVm *v, void *userdata) {
        Bench *b = userdata;
        size_t i;
        if (sscanf(v->name, "vm-%zu", &i) != 1 || i >= b->n_vms)
                return 0;
        snprintf(b->vms[i].tap, sizeof(b->vms[i].tap), "%s", v->tap);
        snprintf(b->vms[i].ip, sizeof(b->vms[i].ip), "%s", v->ip);
        return 0;
}

static int ctl(Bench *b, const char *what, const char *arg1, const char *arg2, bool quiet) {
        char bin[256];
        snprintf(bin, sizeof(bin), "%s/chvmctl", BUILD_DIR);
        char *argv[] = { bin,           (char *) "--socket", b->ag.socket, (char *) what,
                         (char *) arg1, (char *) arg2,       NULL };
        _cleanup_free_ char *out = NULL;
        int r = run(argv, &out);
        if (r != 0 && !quiet) {
                say("chvmctl %s %s%s%s: exit %d: %.400s", what, arg1 ? arg1 : "", arg2 ? " " : "",
                    arg2 ? arg2 : "", r, out ? out : "");
                return r < 0 ? r : -EIO;
        }
        return r < 0 ? r : 0;
}

/* One local VM more than chvm0 can take: StartVM must fail with a clear error and leave nothing behind
 * (check_kernel() counts the TAPs named like ours and the forwards tagged by the agent). */
static int overflow(Bench *b) {
        BusPort port = { HOST_PORT_BASE - 1, 80 };
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = bus_create(b->bus, b->ag.kernel, "vm-overflow", "local", &port, 1, NULL);
        if (r < 0)
                return r;
        r = sd_bus_call_method(b->bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "StartVM", &e, NULL, "s",
                               "vm-overflow");
        if (r >= 0) {
                say("a local VM past %d started: the bridge took more ports than expected", LOCAL_MAX);
                return -EIO;
        }
        snprintf(b->overflow_error, sizeof(b->overflow_error), "%s", e.message ? e.message : strerror(-r));
        sd_bus_error_free(&e);
        r = sd_bus_call_method(b->bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "RemoveVM", &e, NULL, "sb",
                               "vm-overflow", 1);
        if (r < 0) {
                r = call_failed("RemoveVM", "vm-overflow", r, &e);
                sd_bus_error_free(&e);
                return r;
        }
        return 0;
}

static int phase_bring_up(Bench *b) {
        ProcInfo c0 = proc_info(b->ag.pid);
        double t0 = now();
        int r;

        b->up = calloc(b->o.vms, sizeof(double));
        b->up_create = calloc(b->o.vms, sizeof(double));
        b->up_start = calloc(b->o.vms, sizeof(double));
        if (!b->up || !b->up_create || !b->up_start)
                return -ENOMEM;
        for (size_t i = 0; i < b->o.vms; i++) {
                Vm *vm = &b->vms[i];
                BusPort ports[2] = { { (uint16_t) (HOST_PORT_BASE + 2 * i), 80 },
                                     { (uint16_t) (HOST_PORT_BASE + 2 * i + 1), 443 } };
                if (interrupted)
                        return -EINTR;
                snprintf(vm->name, sizeof(vm->name), "vm-%zu", i);
                vm->local = i < LOCAL_MAX;
                b->n_vms = i + 1;
                b->n_local += vm->local;
                double t = now();
                r = bus_create_start(b->bus, b->ag.kernel, vm->name, vm->local ? "local" : "bridge", ports,
                                     vm->local ? 2 : 0, &vm->id, &b->up_create[i], &b->up_start[i]);
                if (r < 0)
                        return r;
                b->up[i] = now() - t;
                if ((i + 1) % 250 == 0)
                        say("  %zu VMs up (%.1f s)", i + 1, now() - t0);
        }
        b->up_total = now() - t0;
        b->up_cpu = proc_info(b->ag.pid).cpu - c0.cpu;
        if (b->n_local == LOCAL_MAX)
                return overflow(b);
        return 0;
}

static int phase_list(Bench *b) {
        size_t running, total;
        int r;

        for (size_t k = 0; k < b->o.reps; k++) {
                double t = now();
                r = bus_list(b->bus, vm_from_list, b, &running, NULL, &total);
                if (r < 0)
                        return r;
                b->list_bus[k] = now() - t;
                if (running != b->n_vms || total != b->n_vms) {
                        say("ListVMs: %zu running of %zu, expected %zu", running, total, b->n_vms);
                        return -EIO;
                }
                t = now();
                r = ctl(b, "list", NULL, NULL, false);
                if (r < 0)
                        return r;
                b->list_ctl[k] = now() - t;
                b->n_list = k + 1;
        }
        return 0;
}

/* The peer's state file, from what the agent lists (the peer would have written it as it started them). */
static int write_peer_state(Bench *b) {
        _cleanup_free_ char *s = malloc(b->n_vms * 96 + 1);
        size_t len = 0;
        if (!s)
                return -ENOMEM;
        s[0] = '\0';
        for (size_t i = 0; i < b->n_vms; i++)
                len += (size_t) snprintf(s + len, 96, "%s %s %s running\n", b->vms[i].name, b->vms[i].tap,
                                         b->vms[i].ip[0] ? b->vms[i].ip : "-");
        return write_file(b->peer.state_file, s);
}

static int feed(char *const argv[], const char *input, size_t len) {
        _cleanup_free_ char *out = NULL;
        int r = run_input(argv, input, len, &out);
        if (r != 0) {
                say("%s %s: exit %d: %.600s", argv[0], argv[1] ? argv[1] : "", r, out ? out : "");
                return r < 0 ? r : -EIO;
        }
        return 0;
}

/* A growing text buffer for the tools' batch input. */
typedef struct Text {
        char *s;
        size_t len, size;
        bool oom;
} Text;

_printf_(2, 3) static void text_add(Text *t, const char *fmt, ...) {
        va_list ap;
        if (t->oom)
                return;
        if (t->size - t->len < 512) {
                size_t size = t->size ? 2 * t->size : 65536;
                char *s = realloc(t->s, size);
                if (!s) {
                        t->oom = true;
                        return;
                }
                t->s = s;
                t->size = size;
        }
        va_start(ap, fmt);
        int n = vsnprintf(t->s + t->len, t->size - t->len, fmt, ap);
        va_end(ap);
        if (n > 0)
                t->len += (size_t) n;
}

static int run_text(char *const argv[], Text *t) {
        if (t->oom)
                return -ENOMEM;
        int r = feed(argv, t->s ? t->s : "", t->len);
        free(t->s);
        *t = (Text){};
        return r;
}

static char *const IP_BATCH[] = { (char *) "ip", (char *) "-batch", (char *) "-", NULL };
static char *const NFT_FILE[] = { (char *) "nft", (char *) "-f", (char *) "-", NULL };
static char *const IPT_RESTORE[] = { (char *) "iptables-restore", (char *) "--noflush", NULL };

/* The peer's forwards for our VMs, and the decoys. */
static int phase_world(Bench *b) {
        size_t taps = b->o.decoys / 2, nat = b->o.decoys - taps, ipt = nat / 2, nft = nat - ipt;
        Text t = {};
        int r;

        r = write_peer_state(b);
        if (r < 0)
                return r;
        text_add(&t, "*nat\n");
        for (size_t i = 0; i < b->n_local; i++)
                for (unsigned k = 0; k < 2; k++)
                        text_add(&t,
                                 "-A PREROUTING -p tcp -m tcp --dport %zu -j DNAT --to-destination %s:%u\n",
                                 HOST_PORT_BASE + 2 * i + k, b->vms[i].ip, k ? 443 : 80);
        for (size_t k = 0; k < ipt; k++)
                text_add(&t,
                         "-A PREROUTING -p tcp -m tcp --dport %zu -j DNAT --to-destination "
                         "192.168.%zu.%zu:80\n",
                         DECOY_IPT_PORT_BASE + k, 200 + (k / 250) % 2, 2 + k % 250);
        text_add(&t, "COMMIT\n");
        if ((r = run_text(IPT_RESTORE, &t)) < 0)
                return r;
        for (size_t k = 0; k < taps; k++)
                text_add(&t, "tuntap add dev " TAP_PREFIX "%08" PRIx32 " mode tap\n",
                         (uint32_t) ((k + 1) * UINT32_C(2654435761)));
        if ((r = run_text(IP_BATCH, &t)) < 0)
                return r;
        text_add(&t, "table ip foreign {\n  chain pre { type nat hook prerouting priority dstnat; }\n}\n");
        for (size_t k = 0; k < nft; k++)
                text_add(&t, "add rule ip foreign pre tcp dport %zu dnat to 192.168.%zu.%zu:80\n",
                         DECOY_NFT_PORT_BASE + k, 200 + (k / 250) % 2, 2 + k % 250);
        return run_text(NFT_FILE, &t);
}

/* --- leaks: this agent's tags on objects of VMs it never had ---------------------------------------------
 */

static void leak_names(size_t k, uint64_t *ret_id, char tap[IFNAMSIZ], char mac[18], char ip[16]) {
        uint64_t id = LEAK_ID_BASE + k;
        uint32_t a =
                SUBNET_BASE + (UINT32_C(1) << (32 - SUBNET_PREFIXLEN)) - 2 - (uint32_t) k; /* from the top */
        *ret_id = id;
        snprintf(tap, IFNAMSIZ, TAP_PREFIX "%011" PRIx64, id);
        snprintf(mac, 18, "02:00:c0:ff:%02x:%02x", (unsigned) (k >> 8) & 0xff, (unsigned) k & 0xff);
        snprintf(ip, 16, "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
}

static int read_agent_id(Bench *b) {
        char path[256];
        snprintf(path, sizeof(path), "%s/agent-id", b->ag.state_dir);
        FILE *f = fopen(path, "re");
        if (!f)
                return negative_errno();
        bool ok = fgets(b->agent_id, sizeof(b->agent_id), f) != NULL;
        fclose(f);
        b->agent_id[strcspn(b->agent_id, "\n")] = '\0';
        return ok && strlen(b->agent_id) == 36 ? 0 : -EBADMSG;
}

static int phase_leaks(Bench *b) {
        char tap[IFNAMSIZ], mac[18], ip[16], tag[160];
        size_t l = b->o.leaks;
        uint64_t id;
        Text links = {}, nft = {}, ipt = {};
        int r;

        r = read_agent_id(b);
        if (r < 0)
                return bench_error(r, "reading the agent id");
        b->bus = sd_bus_flush_close_unref(b->bus);
        agent_stop(&b->ag);
        if (b->ag.pid > 0)
                return bench_error(-ETIMEDOUT, "stopping the agent");

        text_add(&ipt, "*nat\n");
        for (size_t k = 0; k < l; k++) {
                leak_names(k, &id, tap, mac, ip);
#define TAG(role) (snprintf(tag, sizeof(tag), "chvm1:%s:%016" PRIx64 ":%s", b->agent_id, id, role), tag)
                text_add(&links, "tuntap add dev %s mode tap\nlink set dev %s alias %s\n", tap, tap,
                         TAG("tap"));
                text_add(&nft, "add element bridge chvm vm_ports { \"%s\" comment \"%s\" }\n", tap,
                         TAG("port"));
                text_add(&nft, "add element bridge chvm vm_addrs { \"%s\" . %s . %s comment \"%s\" }\n", tap,
                         mac, ip, TAG("addr"));
                for (unsigned j = 0; j < 2; j++) {
                        char role[32];
                        size_t port = LEAK_PORT_BASE + 2 * k + j;
                        snprintf(role, sizeof(role), "fwd-tcp-%zu", port);
                        text_add(&nft,
                                 "add element inet chvm portfwd4 { tcp . %zu comment \"%s\" : %s . %u }\n",
                                 port, TAG(role), ip, j ? 443 : 80);
                        text_add(&ipt,
                                 "-A PREROUTING -p tcp -m tcp --dport %zu -j DNAT --to-destination %s:%u\n",
                                 port, ip, j ? 443 : 80);
                }
#undef TAG
        }
        text_add(&ipt, "COMMIT\n");
        r = run_text(IP_BATCH, &links);
        if (r >= 0)
                r = run_text(NFT_FILE, &nft);
        if (r >= 0)
                r = run_text(IPT_RESTORE, &ipt);
        free(links.s);
        free(nft.s);
        free(ipt.s);
        if (r < 0)
                return bench_error(r, "making the leaks (while the agent is stopped)");

        r = agent_start(&b->ag, &b->leak_ready);
        if (r < 0)
                return r;
        r = bus_open(b->ag.socket, &b->bus);
        if (r < 0)
                return bench_error(r, "connecting to the restarted agent");
        size_t running;
        r = bus_list(b->bus, NULL, NULL, &running, NULL, NULL);
        if (r < 0)
                return r;
        if (running != b->n_vms) {
                say("after the restart: %zu running, expected %zu", running, b->n_vms);
                return -EIO;
        }
        b->after_leaks = proc_info(b->ag.pid);
        return 0;
}

/* --- plans ----------------------------------------------------------------------------------------------
 */

static int time_agent(Bench *b, Series *s, bool heuristic) {
        double c0 = proc_info(b->ag.pid).cpu, t = now();
        int r = bus_gc(b->bus, true, heuristic, &s->c);
        if (r < 0)
                return r;
        s->t[s->n++] = now() - t;
        s->cpu += proc_info(b->ag.pid).cpu - c0;
        return 0;
}

static int time_ctl_gc(Bench *b, Series *s) {
        char bin[256];
        snprintf(bin, sizeof(bin), "%s/chvmctl", BUILD_DIR);
        char *argv[] = { bin,
                         (char *) "--socket",
                         b->ag.socket,
                         (char *) "doctor",
                         (char *) "--gc",
                         (char *) "--dry-run",
                         NULL };
        _cleanup_free_ char *out = NULL;
        double c0 = proc_info(b->ag.pid).cpu, t = now();
        int r = run(argv, &out);
        if (r != 0) {
                say("chvmctl doctor --gc --dry-run: exit %d: %.400s", r, out ? out : "");
                return r < 0 ? r : -EIO;
        }
        s->t[s->n++] = now() - t;
        s->cpu += proc_info(b->ag.pid).cpu - c0;
        return 0;
}

static int time_peer_script(Bench *b, Series *s) {
        double t = now();
        int r = peer_script_plan(&b->peer, &s->pp);
        if (r < 0)
                return bench_error(r, "peer (script)");
        s->t[s->n++] = now() - t;
        return 0;
}

static int time_peer(Bench *b, Series *s, bool nft_host) {
        double t = now();
        int r = peer_plan(&b->peer, nft_host, &s->pp);
        if (r < 0)
                return bench_error(r, nft_host ? "peer (nft list ruleset)" : "peer (iptables -t nat -S)");
        s->t[s->n++] = now() - t;
        return 0;
}

static int phase_plans(Bench *b, const char *title, size_t n_leaks) {
        Round *rd = &b->rounds[b->n_rounds];
        int r;

        *rd = (Round){ .title = title, .n_leaks = n_leaks };
        read_loadavg(rd->load);
        /* Interleaved, so that a change in the machine's load falls on every kind alike. */
        for (size_t k = 0; k < b->o.reps; k++) {
                if (interrupted)
                        return -EINTR;
                if ((r = time_agent(b, &rd->s[S_AGENT], false)) < 0 ||
                    (r = time_peer(b, &rd->s[S_PEER], false)) < 0 ||
                    (r = time_agent(b, &rd->s[S_AGENT_HEUR], true)) < 0 ||
                    (r = time_peer(b, &rd->s[S_PEER_NFT], true)) < 0 ||
                    (r = time_peer_script(b, &rd->s[S_PEER_SH])) < 0 ||
                    (r = time_ctl_gc(b, &rd->s[S_CTL])) < 0)
                        return r;
        }
        const PeerPlan *c = &rd->s[S_PEER].pp, *sh = &rd->s[S_PEER_SH].pp;
        if (c->del != sh->del || c->keep != sh->keep || c->foreign != sh->foreign) {
                say("the peer in C and as a script disagree: %zu/%zu/%zu vs %zu/%zu/%zu delete/keep/foreign",
                    c->del, c->keep, c->foreign, sh->del, sh->keep, sh->foreign);
                return -EIO;
        }
        b->n_rounds++;
        return 0;
}

/* --- where the time goes --------------------------------------------------------------------------------
 */

/* What the GC does to find hypervisors it does not watch: every process's command line. */
static size_t read_cmdlines(void) {
        DIR *d = opendir("/proc");
        size_t n = 0;
        for (struct dirent *de; d && (de = readdir(d));) {
                char path[64], buf[16384];
                pid_t pid = (pid_t) atoi(de->d_name);
                if (pid <= 0)
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                if (read(fd, buf, sizeof(buf) - 1) > 0)
                        n++;
                close(fd);
        }
        if (d)
                closedir(d);
        return n;
}

static int timed_run(char *const argv[], double *ret_t, size_t *ret_bytes) {
        _cleanup_free_ char *out = NULL;
        double t = now();
        int r = run(argv, &out);
        if (r != 0)
                return r < 0 ? r : -EIO;
        *ret_t = now() - t;
        *ret_bytes = strlen(out);
        return 0;
}

static int phase_parts(Bench *b) {
        _cleanup_(rtnl_closep) Rtnl *rtnl = NULL;
        _cleanup_(nft_closep) Nft *nft = NULL;
        NftLayout layout = {
                .table = "chvm", .bridge = "chvm0", .subnet = SUBNET_BASE, .prefixlen = SUBNET_PREFIXLEN
        };
        char *ip_argv[] = { (char *) "ip", (char *) "-o", (char *) "link", (char *) "show", NULL };
        char *ipt_argv[] = { (char *) "iptables", (char *) "-t", (char *) "nat", (char *) "-S", NULL };
        char *nft_argv[] = { (char *) "nft", (char *) "list", (char *) "ruleset", NULL };
        int r;

        r = rtnl_open(&rtnl);
        if (r >= 0)
                r = nft_open(&nft);
        if (r < 0)
                return bench_error(r, "netlink sockets");
        for (size_t k = 0; k < b->o.reps; k++) {
                _cleanup_free_ LinkInfo *links = NULL;
                _cleanup_free_ NftElem *elems = NULL;
                double t = now();
                r = rtnl_link_dump(rtnl, &links, &b->n_links);
                if (r < 0)
                        return bench_error(r, "link dump");
                b->parts[P_LINKS][k] = now() - t;
                t = now();
                r = nft_dump_elems(nft, &layout, &elems, &b->n_elems);
                if (r < 0)
                        return bench_error(r, "element dump");
                b->parts[P_ELEMS][k] = now() - t;
                t = now();
                b->n_procs = read_cmdlines();
                b->parts[P_PROC][k] = now() - t;
                if ((r = timed_run(ip_argv, &b->parts[P_IP][k], &b->bytes_ip)) < 0 ||
                    (r = timed_run(ipt_argv, &b->parts[P_IPT][k], &b->bytes_ipt)) < 0 ||
                    (r = timed_run(nft_argv, &b->parts[P_NFT][k], &b->bytes_nft)) < 0)
                        return bench_error(r, "the peer's commands alone");
                b->n_parts = k + 1;
        }
        return 0;
}

/* --- the collection carried out, teardown, the kernel's word ------------------------------------------- */

static int phase_gc(Bench *b) {
        double t = now();
        int r = bus_gc(b->bus, false, false, &b->gc_done);
        if (r < 0)
                return r;
        b->gc_time = now() - t;
        b->after_gc = proc_info(b->ag.pid);
        r = bus_gc(b->bus, true, false, &b->gc_after);
        if (r < 0)
                return r;
        if (b->gc_after.del || b->gc_after.forget) {
                say("after the collection the plan still has %zu deletes and %zu forgets", b->gc_after.del,
                    b->gc_after.forget);
                return -EIO;
        }
        return 0;
}

static int phase_teardown(Bench *b) {
        ProcInfo c0 = proc_info(b->ag.pid);
        double t0 = now();
        int r;

        b->down_ctl = calloc(b->n_vms + 1, sizeof(double));
        b->down_stop = calloc(b->n_vms + 1, sizeof(double));
        b->down_kill = calloc(b->n_vms + 1, sizeof(double));
        if (!b->down_ctl || !b->down_stop || !b->down_kill)
                return -ENOMEM;
        for (size_t i = 0; i < b->n_vms; i++) {
                const char *name = b->vms[i].name;
                sd_bus_error e = SD_BUS_ERROR_NULL;
                double t = now();
                if (interrupted)
                        return -EINTR;
                if (i % 20 == 0) {
                        if ((r = ctl(b, "stop", name, NULL, false)) < 0 ||
                            (r = ctl(b, "rm", name, NULL, false)) < 0)
                                return r;
                        b->down_ctl[b->n_down_ctl++] = now() - t;
                        continue;
                }
                bool graceful = i % 20 == 10;
                r = graceful ? sd_bus_call_method(b->bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "StopVM", &e,
                                                  NULL, "su", name, (uint32_t) 10)
                             : sd_bus_call_method(b->bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "KillVM", &e,
                                                  NULL, "s", name);
                if (r >= 0)
                        r = sd_bus_call_method(b->bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "RemoveVM", &e,
                                               NULL, "sb", name, 0);
                if (r < 0) {
                        r = call_failed(graceful ? "StopVM + RemoveVM" : "KillVM + RemoveVM", name, r, &e);
                        sd_bus_error_free(&e);
                        return r;
                }
                if (graceful)
                        b->down_stop[b->n_down_stop++] = now() - t;
                else
                        b->down_kill[b->n_down_kill++] = now() - t;
                if ((i + 1) % 250 == 0)
                        say("  %zu VMs down (%.1f s)", i + 1, now() - t0);
        }
        b->down_total = now() - t0;
        b->down_cpu = proc_info(b->ag.pid).cpu - c0.cpu;
        b->after_teardown = proc_info(b->ag.pid);
        size_t total;
        r = bus_list(b->bus, NULL, NULL, NULL, NULL, &total);
        if (r < 0)
                return r;
        if (total != 0) {
                say("after the teardown the agent still lists %zu VMs", total);
                return -EIO;
        }
        b->torn_down = true;
        return 0;
}

static bool named_like_ours(const char *name) {
        size_t p = strlen(TAP_PREFIX);
        return strlen(name) == p + 11 && strncmp(name, TAP_PREFIX, p) == 0 &&
               strspn(name + p, "0123456789abcdef") == 11;
}

/* The ip/nft tools: every running VM's TAP is there and no other link is named like the agent's TAPs but
 * the leaks not collected yet; as many forwards are tagged by the agent as there should be. */
static int check_kernel(Bench *b, const char *when, bool vms_up, size_t leaks_left) {
        Oracle o = {};
        char tap[IFNAMSIZ], mac[18], ip[16], prefix[96];
        size_t taps = 0, ours = 0, fwds = 0, leak_taps = 0, own = 0;
        uint64_t id;
        int r = oracle_take(&o);
        if (r < 0) {
                oracle_free(&o);
                return bench_error(r, "ip/nft oracle");
        }
        for (size_t i = 0; i < b->n_vms; i++)
                taps += b->vms[i].tap[0] && oracle_has(&o, b->vms[i].tap);
        for (size_t k = 0; k < b->o.leaks; k++) {
                leak_names(k, &id, tap, mac, ip);
                leak_taps += oracle_has(&o, tap);
        }
        snprintf(prefix, sizeof(prefix), "chvm1:%s:", b->agent_id);
        for (size_t i = 0; i < o.n; i++) {
                ours += named_like_ours(o.keys[i]);
                if (strncmp(o.keys[i], prefix, strlen(prefix)) == 0 &&
                    strncmp(o.keys[i] + strlen(prefix), "core:", 5) != 0) {
                        own++;
                        fwds += strstr(o.keys[i], ":fwd-tcp-") != NULL;
                }
        }
        oracle_free(&o);
        size_t want_taps = vms_up ? b->n_vms : 0, want_fwds = 2 * ((vms_up ? b->n_local : 0) + leaks_left);
        bool ok = taps == want_taps && leak_taps == leaks_left && ours == want_taps + leaks_left &&
                  fwds == want_fwds;
        say("%s: ip/nft: %zu of %zu VM TAPs, %zu of %zu leaked TAPs, %zu links named like ours, %zu "
            "forwards "
            "and %zu objects tagged by the agent%s",
            when, taps, b->n_vms, leak_taps, b->o.leaks, ours, fwds, own, ok ? "" : ": NOT AS EXPECTED");
        if (!ok)
                say("  expected %zu VM TAPs, %zu leaked TAPs, %zu links named like ours, %zu forwards",
                    want_taps, leaks_left, want_taps + leaks_left, want_fwds);
        return ok ? 0 : -EIO;
}

/* --- report -------------------------------------------------------------------------------------------- */

static void print_ms(const char *what, const double *v, size_t n, const char *extra) {
        Stats s = stats_of(v, n);
        if (n == 0)
                return;
        printf("  %-56s %8.1f %8.1f %8.1f  %s\n", what, s.min * 1e3, s.p50 * 1e3, s.max * 1e3,
               extra ? extra : "");
}

static void print_mem(const char *what, const ProcInfo *p) {
        if (p->rss_kib <= 0) /* not taken */
                return;
        printf("  %-56s %8.1f %8.1f %8zu\n", what, (double) p->rss_kib / 1024, (double) p->hwm_kib / 1024,
               p->fds);
}

static void print_round(const Bench *b, const Round *rd) {
        static const char *const what[_S_MAX] = {
                [S_AGENT] = "agent: CollectGarbage(dry_run, heuristic=false)",
                [S_AGENT_HEUR] = "agent: CollectGarbage(dry_run, heuristic=true)",
                [S_CTL] = "agent: `chvmctl doctor --gc --dry-run` (a process)",
                [S_PEER] = "peer: `ip -o link` + `iptables -t nat -S`, parsed",
                [S_PEER_SH] = "peer as a script: the same two piped into awk",
                [S_PEER_NFT] = "peer, nftables host: `ip -o link` + `nft list ruleset`",
        };
        static const int order[] = { S_AGENT, S_AGENT_HEUR, S_CTL, S_PEER, S_PEER_SH, S_PEER_NFT };
        printf("\nGC plan: %s (%zu running VMs, %zu leaked, %zu decoys; load average before: %s)\n",
               rd->title, b->n_vms, rd->n_leaks, b->o.decoys, rd->load);
        printf("  %-56s %8s %8s %8s  %s\n", "", "min", "p50", "max", "(ms; decisions)");
        for (size_t i = 0; i < ELEMENTSOF(order); i++) {
                const Series *s = &rd->s[order[i]];
                char extra[200];
                if (order[i] == S_PEER || order[i] == S_PEER_NFT)
                        snprintf(extra, sizeof(extra),
                                 "%zu: %zu delete, %zu keep (+%zu foreign DNAT); %zu KiB text", s->pp.n,
                                 s->pp.del, s->pp.keep, s->pp.foreign, s->pp.bytes / 1024);
                else if (order[i] == S_PEER_SH)
                        snprintf(extra, sizeof(extra), "%zu: %zu delete, %zu keep (+%zu foreign DNAT)",
                                 s->pp.n, s->pp.del, s->pp.keep, s->pp.foreign);
                else if (order[i] == S_CTL)
                        snprintf(extra, sizeof(extra), "agent CPU %.1f ms per call",
                                 s->cpu * 1e3 / (double) s->n);
                else
                        snprintf(extra, sizeof(extra),
                                 "%zu: %zu delete (%zu untracked, %zu heuristic), %zu skip (%zu running, "
                                 "%zu unknown "
                                 "ownership, %zu core); agent CPU %.1f ms",
                                 s->c.n, s->c.del, s->c.untracked, s->c.heuristic, s->c.skip, s->c.running,
                                 s->c.unknown, s->c.core, s->cpu * 1e3 / (double) s->n);
                print_ms(what[order[i]], s->t, s->n, extra);
        }
        Stats a = stats_of(rd->s[S_AGENT].t, rd->s[S_AGENT].n),
              p = stats_of(rd->s[S_PEER].t, rd->s[S_PEER].n),
              ps = stats_of(rd->s[S_PEER_SH].t, rd->s[S_PEER_SH].n),
              pn = stats_of(rd->s[S_PEER_NFT].t, rd->s[S_PEER_NFT].n),
              ah = stats_of(rd->s[S_AGENT_HEUR].t, rd->s[S_AGENT_HEUR].n);
        printf("  peer / agent, p50 (min/min): C peer %.1fx (%.1fx), script peer %.1fx (%.1fx), "
               "nftables-host "
               "peer %.1fx (%.1fx);\n  C peer / the heuristic plan %.1fx\n",
               p.p50 / a.p50, p.min / a.min, ps.p50 / a.p50, ps.min / a.min, pn.p50 / a.p50, pn.min / a.min,
               p.p50 / ah.p50);
}

static void report(const Bench *b) {
        struct utsname u;
        if (uname(&u) < 0)
                snprintf(u.release, sizeof(u.release), "?");
        char what[128];

        size_t taps = b->o.decoys / 2, nat = b->o.decoys - taps, ipt = nat / 2, nft = nat - ipt;
        printf("\nchvm GC benchmark: chvm-agentd of this build, tests/fake-vmm as cloud-hypervisor, "
               "table_owner = "
               "auto\n");
        printf("  network namespace of its own (kernel %s); %zu VMs on local (TAP on chvm0 + vm_ports + "
               "vm_addrs\n  + 2 tcp forwards each), %zu on bridge (TAP on " ADMIN_BRIDGE ", nothing else);\n"
               "  decoys: %zu untagged TAPs " TAP_PREFIX
               "xxxxxxxx, %zu DNAT rules in nft table ip foreign, %zu "
               "iptables DNAT rules;\n  the peer's twins of the forwards: %zu iptables DNAT rules\n",
               u.release, b->n_local, b->n_vms - b->n_local, taps, nft, ipt, 2 * (b->n_local + b->o.leaks));
        printf("  load average (/proc/loadavg) at the start: %s; at the end: %s; %ld CPUs; %zu "
               "repetitions\n",
               b->load_start, b->load_end, sysconf(_SC_NPROCESSORS_ONLN), b->o.reps);
        if (b->overflow_error[0])
                printf("  local VM number %d (chvm0 has the kernel's maximum of %d ports): StartVM says "
                       "\"%s\"; "
                       "nothing of it left in the kernel\n",
                       LOCAL_MAX + 1, LOCAL_MAX, b->overflow_error);

        printf("\nBring-up of %zu VMs: %.1f s wall, agent CPU %.1f s; first start to READY=1 %.0f ms\n",
               b->n_vms, b->up_total, b->up_cpu, b->first_ready * 1e3);
        printf("  %-56s %8s %8s %8s  %s\n", "", "min", "p50", "max", "(ms)");
        print_ms("CreateVM + StartVM over D-Bus, per VM", b->up, b->n_vms, NULL);
        print_ms("  CreateVM", b->up_create, b->n_vms, NULL);
        print_ms("  StartVM", b->up_start, b->n_vms, NULL);
        snprintf(what, sizeof(what), "ListVMs at %zu VMs", b->n_vms);
        print_ms(what, b->list_bus, b->n_list, NULL);
        snprintf(what, sizeof(what), "`chvmctl list` at %zu VMs (a process)", b->n_vms);
        print_ms(what, b->list_ctl, b->n_list, NULL);

        for (size_t i = 0; i < b->n_rounds; i++)
                print_round(b, &b->rounds[i]);

        if (b->n_parts) {
                static const char *const what_part[_P_MAX] = {
                        [P_LINKS] = "rtnetlink link dump (libchvm)",
                        [P_ELEMS] = "nftables element dump of our tables (libchvm)",
                        [P_PROC] = "every /proc/PID/cmdline read",
                        [P_IP] = "`ip -o link show` alone",
                        [P_IPT] = "`iptables -t nat -S` alone",
                        [P_NFT] = "`nft list ruleset` alone",
                };
                char extra[_P_MAX][64];
                snprintf(extra[P_LINKS], 64, "%zu links", b->n_links);
                snprintf(extra[P_ELEMS], 64, "%zu elements", b->n_elems);
                snprintf(extra[P_PROC], 64, "%zu processes", b->n_procs);
                snprintf(extra[P_IP], 64, "%zu KiB", b->bytes_ip / 1024);
                snprintf(extra[P_IPT], 64, "%zu KiB", b->bytes_ipt / 1024);
                snprintf(extra[P_NFT], 64, "%zu KiB", b->bytes_nft / 1024);
                printf("\nWhere the time goes (in this process, same namespace, after the plans%s)\n",
                       b->o.leaks ? ", with the leaks" : "");
                printf("  %-56s %8s %8s %8s\n", "", "min", "p50", "max");
                for (int p = 0; p < _P_MAX; p++)
                        print_ms(what_part[p], b->parts[p], b->n_parts, extra[p]);
        }

        if (b->gc_done.n) {
                printf("\nCollection carried out (dry_run=false), %zu leaked VMs: %.1f ms; %zu deleted "
                       "(%zu untracked), "
                       "%zu skipped; the plan after it: %zu delete, %zu forget\n",
                       b->o.leaks, b->gc_time * 1e3, b->gc_done.del, b->gc_done.untracked, b->gc_done.skip,
                       b->gc_after.del, b->gc_after.forget);
                printf("  agent restart with %zu running VMs and the leaks: READY=1 in %.0f ms\n", b->n_vms,
                       b->leak_ready * 1e3);
        }

        if (b->torn_down) {
                printf("\nTeardown of %zu VMs: %.1f s wall, agent CPU %.1f s\n", b->n_vms, b->down_total,
                       b->down_cpu);
                printf("  %-56s %8s %8s %8s  %s\n", "per VM", "min", "p50", "max", "(ms)");
                print_ms("`chvmctl stop` + `chvmctl rm` (every 20th)", b->down_ctl, b->n_down_ctl, NULL);
                print_ms("StopVM + RemoveVM (every 20th + 10)", b->down_stop, b->n_down_stop, NULL);
                print_ms("KillVM + RemoveVM (the rest)", b->down_kill, b->n_down_kill, NULL);
        }

        printf("\nAgent memory and open files (RLIMIT_NOFILE %ld, hard %ld)\n  %-56s %8s %8s %8s\n",
               b->atn.nofile, b->nofile_hard, "", "RSS MiB", "HWM MiB", "fds");
        print_mem("0 VMs (fresh start)", &b->at0);
        snprintf(what, sizeof(what), "%zu VMs (after bring-up and listing)", b->n_vms);
        print_mem(what, &b->atn);
        print_mem("  after the plans without leaks", &b->after_plans);
        print_mem("  restarted, with the leaks, after adopting", &b->after_leaks);
        print_mem("  after the collection", &b->after_gc);
        print_mem("0 VMs (after the teardown)", &b->after_teardown);

        if (b->n_rounds) {
                const Round *rd = &b->rounds[b->n_rounds - 1];
                Stats a = stats_of(rd->s[S_AGENT].t, rd->s[S_AGENT].n),
                      p = stats_of(rd->s[S_PEER].t, rd->s[S_PEER].n);
                printf("\nIssue 6 targets (%s)\n", rd->title);
                printf("  whole plan <= 100 ms: p50 %.1f ms, max %.1f ms: %s\n", a.p50 * 1e3, a.max * 1e3,
                       a.max <= 0.100   ? "met"
                       : a.p50 <= 0.100 ? "met at p50, NOT at max"
                                        : "NOT met");
                printf("  >= 10x faster than the text-parsing way: %.1fx at p50 (%.1fx min/min): %s\n",
                       p.p50 / a.p50, p.min / a.min, p.p50 / a.p50 >= 10 ? "met" : "NOT met");
                if (b->n_parts) {
                        /* A plan that looks at the kernel does at least the link dump the peer's `ip` does:
                         * the ratio cannot pass the peer's whole time over that dump alone. */
                        Stats l = stats_of(b->parts[P_LINKS], b->n_parts);
                        printf("  the ceiling for any plan that dumps the links from the kernel (and does "
                               "nothing else):\n    C peer p50 / link dump p50 = %.1fx (min/min %.1fx)\n",
                               p.p50 / l.p50, p.min / l.min);
                }
        }
}

/* --- main ---------------------------------------------------------------------------------------------- */

static void usage(FILE *f) {
        fprintf(f,
                "usage: bench/gc [--quick] [--vms N] [--decoys D] [--leaks L] [--reps R] [--no-teardown] "
                "[--keep]\n"
                "  --vms N        running fake VMs, 2 forwards each (default 1000, at most %d)\n"
                "  --decoys D     foreign objects: D/2 untagged TAPs, D/4 nft and D/4 iptables DNAT rules\n"
                "                 (default 1000, at most %d)\n"
                "  --leaks L      VMs' worth of objects tagged by the agent for VMs it never had, made "
                "while\n"
                "                 it is stopped (default 100, at most %d; 0: no second round)\n"
                "  --reps R       repetitions of every timing (default 10, at most %d)\n"
                "  --no-teardown  leave the VMs to the cleanup instead of stopping and removing them\n"
                "  --quick        a smoke run: 50 VMs, 100 decoys, 10 leaks, 3 repetitions\n"
                "  --keep         keep the scratch folder (agent.log has every line the agent wrote)\n",
                N_MAX, DECOY_MAX, LEAK_MAX, REPS_MAX);
}

static bool parse_size(const char *s, size_t max, size_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || v > max)
                return false;
        *ret = (size_t) v;
        return true;
}

static void cleanup(Bench *b) {
        b->bus = sd_bus_flush_close_unref(b->bus);
        agent_stop(&b->ag);
        size_t killed = bench_agent_cleanup(&b->ag, b->o.keep);
        if (killed)
                say("ended %zu hypervisor(s) by PID", killed);
        peer_clear(&b->peer);
        for (size_t i = 0; i < b->n_rounds; i++)
                for (int s = 0; s < _S_MAX; s++)
                        free(b->rounds[i].s[s].pp.items);
        free(b->vms);
        free(b->up);
        free(b->up_create);
        free(b->up_start);
        free(b->down_ctl);
        free(b->down_stop);
        free(b->down_kill);
}

int main(int argc, char **argv) {
        static Bench b = {
                .o = { .vms = 1000, .decoys = 1000, .leaks = 100, .reps = 10, .teardown = true }
        };
        int r = 0;

        bench_name = "bench/gc";
        for (int i = 1; i < argc; i++) {
                struct {
                        const char *name;
                        size_t *v, max;
                } opts[] = { { "--vms", &b.o.vms, N_MAX },
                             { "--decoys", &b.o.decoys, DECOY_MAX },
                             { "--leaks", &b.o.leaks, LEAK_MAX },
                             { "--reps", &b.o.reps, REPS_MAX } };
                bool ok = false;
                if (strcmp(argv[i], "--quick") == 0) {
                        b.o.vms = 50;
                        b.o.decoys = 100;
                        b.o.leaks = 10;
                        b.o.reps = 3;
                        continue;
                }
                if (strcmp(argv[i], "--keep") == 0) {
                        b.o.keep = true;
                        continue;
                }
                if (strcmp(argv[i], "--no-teardown") == 0) {
                        b.o.teardown = false;
                        continue;
                }
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(stdout);
                        return 0;
                }
                for (size_t k = 0; k < ELEMENTSOF(opts); k++)
                        if (strcmp(argv[i], opts[k].name) == 0 && i + 1 < argc)
                                ok = parse_size(argv[++i], opts[k].max, opts[k].v);
                if (!ok) {
                        usage(stderr);
                        return 2;
                }
        }
        if (b.o.vms == 0 || b.o.reps == 0) {
                fprintf(stderr, "bench/gc: --vms and --reps must be > 0\n");
                return 2;
        }

        if (geteuid() != 0) {
                printf("SKIP: bench/gc needs root: it runs chvm-agentd with TAPs and nftables tables in "
                       "a network "
                       "namespace of its own\n");
                return 0;
        }
        if (unshare(CLONE_NEWNET) < 0) {
                printf("SKIP: bench/gc cannot make its network namespace: unshare(CLONE_NEWNET): %s\n",
                       strerror(errno));
                return 0;
        }
        if (access("/dev/net/tun", R_OK | W_OK) < 0) {
                printf("SKIP: bench/gc: /dev/net/tun is not usable: %s\n", strerror(errno));
                return 0;
        }
        char *ipt_version[] = { (char *) "iptables", (char *) "--version", NULL };
        if (run(ipt_version, NULL) != 0) {
                printf("SKIP: bench/gc: the peer's way needs iptables\n");
                return 0;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        bench_catch_signals();
        /* Hypervisors whose agent exits are reparented to us, not to PID 1: we can reap and end them. */
        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);
        /* The agent holds a pidfd per VM: it inherits our limit, raised as far as we may. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                b.nofile_hard = rl.rlim_max == RLIM_INFINITY ? -1 : (long) rl.rlim_max;
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }

        char *lo[] = { (char *) "ip", (char *) "link", (char *) "set", (char *) "lo", (char *) "up", NULL };
        (void) run(lo, NULL);
        (void) write_file("/proc/sys/net/unix/max_dgram_qlen", "4096\n");

        b.vms = calloc(b.o.vms, sizeof(Vm));
        if (!b.vms) {
                r = -ENOMEM;
                goto finish;
        }
        /* Only the backends the VMs need: each one's scan is part of the plan. */
        bool two = b.o.vms > LOCAL_MAX;
        if (two) {
                char *br[] = { (char *) "ip", (char *) "link", (char *) "add",    (char *) ADMIN_BRIDGE,
                               (char *) "up", (char *) "type", (char *) "bridge", NULL };
                if (run(br, NULL) != 0) {
                        r = bench_error(-EIO, "ip link add " ADMIN_BRIDGE " type bridge");
                        goto finish;
                }
        }
        r = bench_agent_setup(&b.ag, "gc", two ? "local, bridge" : "local",
                              two ? "[local]\nsubnet = " SUBNET "\n[bridge]\nbridge = " ADMIN_BRIDGE "\n"
                                  : "[local]\nsubnet = " SUBNET "\n");
        if (r < 0) {
                bench_error(r, "scratch folder, notify socket and log pipe");
                goto finish;
        }
        snprintf(b.peer.state_file, sizeof(b.peer.state_file), "%s/peer-vms.state", b.ag.dir);
        read_loadavg(b.load_start);

        say("starting chvm-agentd (empty state in %s)", b.ag.dir);
        r = agent_start(&b.ag, &b.first_ready);
        if (r < 0)
                goto finish;
        r = bus_open(b.ag.socket, &b.bus);
        if (r < 0) {
                bench_error(r, "connecting to the agent");
                goto finish;
        }
        b.at0 = proc_info(b.ag.pid);
        r = read_agent_id(&b);
        if (r < 0) {
                bench_error(r, "reading the agent id");
                goto finish;
        }

        say("bringing up %zu VMs, 2 forwards each", b.o.vms);
        if ((r = phase_bring_up(&b)) < 0)
                goto finish;
        if ((r = phase_list(&b)) < 0)
                goto finish;
        b.atn = proc_info(b.ag.pid);
        if ((r = check_kernel(&b, "after bring-up", true, 0)) < 0)
                goto finish;

        say("the peer's forwards and %zu decoys", b.o.decoys);
        if ((r = phase_world(&b)) < 0) {
                bench_error(r, "making the world");
                goto finish;
        }
        say("plans, all VMs running, no leaks: %zu repetitions", b.o.reps);
        if ((r = phase_plans(&b, "all VMs running, no leaks", 0)) < 0)
                goto finish;
        b.after_plans = proc_info(b.ag.pid);

        if (b.o.leaks) {
                say("stopping the agent, %zu leaked VMs' objects, restart", b.o.leaks);
                if ((r = phase_leaks(&b)) < 0)
                        goto finish;
                if ((r = check_kernel(&b, "with the leaks", true, b.o.leaks)) < 0)
                        goto finish;
                say("plans with the leaks: %zu repetitions", b.o.reps);
                if ((r = phase_plans(&b, "with leaked objects", b.o.leaks)) < 0)
                        goto finish;
        }
        say("where the time goes");
        if ((r = phase_parts(&b)) < 0)
                goto finish;

        if (b.o.leaks) {
                say("collecting the leaks");
                if ((r = phase_gc(&b)) < 0)
                        goto finish;
                if ((r = check_kernel(&b, "after the collection", true, 0)) < 0)
                        goto finish;
        }
        if (b.o.teardown) {
                say("teardown of %zu VMs", b.n_vms);
                if ((r = phase_teardown(&b)) < 0)
                        goto finish;
                if ((r = check_kernel(&b, "after the teardown", false,
                                      b.o.leaks && !b.gc_done.n ? b.o.leaks : 0)) < 0)
                        goto finish;
        }
        read_loadavg(b.load_end);
        report(&b);
        r = 0;

finish:
        if (r < 0)
                bench_agent_show_log(&b.ag, b.o.keep);
        cleanup(&b);
        return r < 0 ? 1 : 0;
}
