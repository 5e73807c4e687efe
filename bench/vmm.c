/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* VMM benchmark (issue 4; a program, not a test): the real chvm-agentd of this build with N fake VMs
 * (tests/fake-vmm as cloud-hypervisor, the `local` backend: per VM a TAP on chvm0, its vm_ports and vm_addrs
 * elements and one tcp port forward), driven over its control socket with sd-bus as chvmctl drives it.
 *
 *   bring-up        CreateVM + StartVM for N VMs; every --ctl-every'th VM with `chvmctl run` instead (one
 *                   process per VM, one RunVM call), interleaved so both see the same numbers of VMs, timed
 *                   apart; right before each such run, `chvmctl --version` (exec and dynamic libraries, no
 *                   connection) and `chvmctl status` (that, the connection, Hello and one cheap call), so
 *                   that a run's time splits into the client's start, its connection and the RunVM itself;
 *                   right after each such run one VM of the peer (below) comes up the script's way, so that
 *                   both are timed under the same conditions (this host's speed drifts within a run); then,
 *                   untimed, 10 more runs whose fdatasync and fsync calls the kernel counts (tracefs)
 *   memory          VmRSS, VmHWM and open fds of the agent at 0 and at N VMs, and after the restarts
 *   crash-to-clean  for K VMs, one at a time: the hypervisor's PID from InspectVM, SIGKILL, and the time
 *                   until the kernel has announced the deletion of the VM's last object: RTM_DELLINK of its
 *                   TAP (rtnetlink link group) and NFT_MSG_DELSETELEM of its elements (3, or 4 with DHCP),
 * matched by their comment tags (nftables notification group). Event-based, from the kernel's own
 *                   notifications, not from anything the agent says; a lookup of the TAP confirms it gone.
 *                   The agent's own VMStateChanged "crashed" signal is timed alongside.
 *                   Peer: a script that polls `ip -o link` every second and, for a TAP without carrier,
 *                   runs `nft -f` with its three element deletions and `ip link del` (P kills of its own
 *                   fake VMs, each after a random delay so the kill falls anywhere in its poll period)
 *   reconcile       SIGTERM the agent (the VMs keep running), exec a new one, time until READY=1 on our
 *                   NOTIFY_SOCKET (R times); then SIGKILL it, SIGKILL D hypervisors while it is down, and
 *                   time the start that adopts the rest and tears those D down (their deletions timed by
 *                   the same notifications). The agent's log lines, timed as they arrive on its stderr,
 *                   split each start: up to the taskstats probe's verdict, up to "adopted", up to READY.
 *   taskstats       the agent's taskstats probe (taskstats_listener_new) timed in this process, in this
 *                   namespace, where it waits TASKSTATS_PROBE_TIMEOUT_MS and gives up
 *
 * The ip/nft command-line tools check the kernel state after each phase (every running VM has its TAP and
 * its elements, every killed VM has none of them): a figure from a run that leaked is not printed.
 *
 * Everything runs in a network namespace the program makes for itself (unshare(CLONE_NEWNET)); the agent,
 * the hypervisors and the peer inherit it, and every object dies with it. The program is the subreaper of
 * what it starts, so hypervisors left by an agent it stopped are its children; at the end it stops the
 * agent and ends every hypervisor by its PID, then removes its folder (under $TMPDIR, default /tmp). Without
 * root it says SKIP and exits 0.
 *
 *     bench/vmm [--quick] [--vms N] [--kills K] [--peer-kills P] [--restarts R] [--down-kills D]
 *               [--ctl-every M] [--keep]
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libmnl/libmnl.h>
#include <limits.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/rtnetlink.h>
#include <math.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench-agent.h"
#include "tests/shell-oracle.h"
#include "util/macro.h"
#include "vmm/taskstats.h"

#ifndef IFF_LOWER_UP
#define IFF_LOWER_UP 0x10000 /* linux/if.h, which clashes with net/if.h */
#endif

#define N_MAX 20000 /* host ports 20000 + i stay below the peer's, guests inside 10.96.0.0/16 */
#define HOST_PORT_BASE 20000
#define PEER_MAX 1000
#define PEER_PORT_BASE 50000
#define TAG_MAX 160
#define MAX_ELEMS 4

/* --- the kernel's view: link and nftables notifications, link lookups ---------------------------------- */

typedef struct Gone {
        char key[TAG_MAX]; /* a TAP's name, or an element's comment tag */
        bool link;
        double t; /* when the kernel announced its deletion; 0: not yet */
} Gone;

typedef struct Watch {
        struct mnl_socket *rt; /* RTNLGRP_LINK */
        struct mnl_socket *nf; /* NFNLGRP_NFTABLES */
        struct mnl_socket *req; /* RTM_GETLINK requests */
        uint32_t seq;
        Gone *items;
        size_t n, size, n_left;
        bool overflow;
} Watch;

static int watch_open(Watch *w) {
        int group = NFNLGRP_NFTABLES, big = 16 << 20;

        w->rt = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
        w->nf = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
        w->req = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
        if (!w->rt || !w->nf || !w->req)
                return negative_errno();
        if (mnl_socket_bind(w->rt, RTMGRP_LINK, MNL_SOCKET_AUTOPID) < 0 ||
            mnl_socket_bind(w->nf, 0, MNL_SOCKET_AUTOPID) < 0 ||
            mnl_socket_setsockopt(w->nf, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0 ||
            mnl_socket_bind(w->req, 0, MNL_SOCKET_AUTOPID) < 0)
                return negative_errno();
        /* Bursts (a restart that tears down a hundred VMs) must not overflow while we read. */
        (void) setsockopt(mnl_socket_get_fd(w->rt), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
        (void) setsockopt(mnl_socket_get_fd(w->nf), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
        return 0;
}

static void watch_close(Watch *w) {
        if (w->rt)
                mnl_socket_close(w->rt);
        if (w->nf)
                mnl_socket_close(w->nf);
        if (w->req)
                mnl_socket_close(w->req);
        free(w->items);
        *w = (Watch){};
}

static void watch_clear(Watch *w) {
        w->n = w->n_left = 0;
        w->overflow = false;
}

static int watch_expect(Watch *w, const char *key, bool link) {
        if (w->n == w->size) {
                size_t size = w->size ? 2 * w->size : 64;
                Gone *g = realloc(w->items, size * sizeof(Gone));
                if (!g)
                        return -ENOMEM;
                w->items = g;
                w->size = size;
        }
        Gone *g = &w->items[w->n++];
        *g = (Gone){ .link = link };
        snprintf(g->key, sizeof(g->key), "%s", key);
        w->n_left++;
        return 0;
}

static void watch_mark(Watch *w, const char *key, bool link, double t) {
        for (size_t i = 0; i < w->n; i++)
                if (w->items[i].t == 0 && w->items[i].link == link && strcmp(w->items[i].key, key) == 0) {
                        w->items[i].t = t;
                        w->n_left--;
                        return;
                }
}

/* nftables keeps an element's comment as userdata TLVs: type 0 (NFTNL_UDATA_SET_ELEM_COMMENT), length,
 * text. */
static bool udata_comment(const uint8_t *p, size_t len, char ret[TAG_MAX]) {
        for (size_t off = 0; off + 2 <= len;) {
                uint8_t type = p[off], l = p[off + 1];
                if (off + 2 + l > len)
                        break;
                if (type == 0) {
                        size_t n = l < TAG_MAX - 1 ? l : TAG_MAX - 1;
                        memcpy(ret, p + off + 2, n);
                        ret[n] = '\0';
                        return true;
                }
                off += 2 + (size_t) l;
        }
        return false;
}

static void watch_message(Watch *w, const struct nlmsghdr *nlh, bool rt, double t) {
        const struct nlattr *a, *e, *f;

        if (rt) {
                const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
                /* AF_BRIDGE deletions are the port leaving the bridge; AF_UNSPEC is the device going. */
                if (nlh->nlmsg_type != RTM_DELLINK || ifi->ifi_family != AF_UNSPEC)
                        return;
                mnl_attr_for_each(a, nlh, sizeof(*ifi)) {
                        if (mnl_attr_get_type(a) == IFLA_IFNAME)
                                watch_mark(w, mnl_attr_get_str(a), true, t);
                }
                return;
        }
        if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES ||
            NFNL_MSG_TYPE(nlh->nlmsg_type) != NFT_MSG_DELSETELEM)
                return;
        mnl_attr_for_each(a, nlh, sizeof(struct nfgenmsg)) {
                if (mnl_attr_get_type(a) != NFTA_SET_ELEM_LIST_ELEMENTS)
                        continue;
                mnl_attr_for_each_nested(e, a) {
                        mnl_attr_for_each_nested(f, e) {
                                char tag[TAG_MAX];
                                if (mnl_attr_get_type(f) == NFTA_SET_ELEM_USERDATA &&
                                    udata_comment(mnl_attr_get_payload(f), mnl_attr_get_payload_len(f), tag))
                                        watch_mark(w, tag, false, t);
                        }
                }
        }
}

static int watch_read(Watch *w, struct mnl_socket *s, bool match) {
        static char buf[1 << 17];
        for (;;) {
                ssize_t k = recv(mnl_socket_get_fd(s), buf, sizeof(buf), MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EAGAIN)
                                return 0;
                        if (errno == EINTR)
                                continue;
                        if (errno == ENOBUFS) {
                                w->overflow = true;
                                continue;
                        }
                        return negative_errno();
                }
                double t = now();
                if (!match)
                        continue;
                int len = (int) k;
                for (const struct nlmsghdr *nlh = (const struct nlmsghdr *) buf; mnl_nlmsg_ok(nlh, len);
                     nlh = mnl_nlmsg_next(nlh, &len))
                        watch_message(w, nlh, s == w->rt, t);
        }
}

/* Throws away what was announced so far. */
static void watch_drain(Watch *w) {
        (void) watch_read(w, w->rt, false);
        (void) watch_read(w, w->nf, false);
        watch_clear(w);
}

static int link_cb(const struct nlmsghdr *nlh, void *data) {
        if (nlh->nlmsg_type == RTM_NEWLINK)
                *(unsigned *) data = ((const struct ifinfomsg *) mnl_nlmsg_get_payload(nlh))->ifi_flags;
        return MNL_CB_OK;
}

/* 0 with the link's flags when it exists, -ENODEV when it does not. */
static int link_get(Watch *w, const char *name, unsigned *ret_flags) {
        static char buf[1 << 16];
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        unsigned flags = 0;

        nlh->nlmsg_type = RTM_GETLINK;
        nlh->nlmsg_flags = NLM_F_REQUEST;
        nlh->nlmsg_seq = ++w->seq;
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        ifi->ifi_family = AF_UNSPEC;
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        if (mnl_socket_sendto(w->req, nlh, nlh->nlmsg_len) < 0)
                return negative_errno();
        ssize_t k = mnl_socket_recvfrom(w->req, buf, sizeof(buf));
        if (k < 0)
                return negative_errno();
        if (mnl_cb_run(buf, (size_t) k, w->seq, mnl_socket_get_portid(w->req), link_cb, &flags) < 0)
                return negative_errno();
        if (ret_flags)
                *ret_flags = flags;
        return 0;
}

/* --- the benchmark ------------------------------------------------------------------------------------- */

typedef struct Vm {
        char name[33];
        uint64_t id;
        pid_t pid;
        char tap[IFNAMSIZ];
        char elems[MAX_ELEMS][TAG_MAX]; /* comment tags of its nftables elements */
        size_t n_elems;
        bool via_ctl;
        bool dead; /* killed by us */
        double t_crashed; /* when its VMStateChanged "crashed" arrived */
} Vm;

typedef struct Options {
        size_t vms, kills, peer_kills, restarts, down_kills, ctl_every;
        bool keep;
} Options;

typedef struct Reconcile {
        double ready, taskstats, adopted; /* seconds from the spawn; < 0: no such log line */
        double shutdown; /* SIGTERM to exit of the agent before */
        double last_gone; /* SIGKILL variant: the last deletion of a dead VM's object, from the spawn */
        char adopted_line[256];
        ProcInfo after;
} Reconcile;

/* The agent's fdatasync() and fsync() calls, counted by the kernel: a tracing instance of our own
 * (tracefs, instances/NAME: its own buffer and event filters, so nothing else that traces is disturbed),
 * the two syscall entry events, for the agent's PID only. Unavailable (no tracefs, a kernel without syscall
 * events): the figure is not printed, and the reason is. */
typedef struct SyncCounter {
        char dir[160];
        bool on; /* counting */
        bool counted; /* counted every run: the figures are complete */
        char why[200];
} SyncCounter;

static int write_text_at(const char *dir, const char *file, const char *text) {
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", dir, file);
        int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        /* tracefs takes one event per write() and says so with a short count */
        int r = 0;
        for (size_t done = 0, size = strlen(text); done < size;) {
                ssize_t n = write(fd, text + done, size - done);
                if (n <= 0) {
                        r = n < 0 ? negative_errno() : -EIO;
                        break;
                }
                done += (size_t) n;
        }
        close(fd);
        return r;
}

static void sync_counter_stop(SyncCounter *c) {
        if (!c->dir[0])
                return;
        (void) write_text_at(c->dir, "tracing_on", "0");
        (void) write_text_at(c->dir, "set_event", "");
        if (rmdir(c->dir) < 0)
                say("cannot remove the tracing instance %s: %m", c->dir);
        c->dir[0] = '\0';
        c->on = false;
}

static void sync_counter_start(SyncCounter *c, pid_t pid) {
        static const char *const roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
        char instances[96], pid_s[32];
        int r = -ENOENT;
        for (size_t i = 0; i < ELEMENTSOF(roots) && r < 0; i++) {
                snprintf(instances, sizeof(instances), "%s/instances", roots[i]);
                snprintf(c->dir, sizeof(c->dir), "%s/chvm-bench-%d", instances, (int) getpid());
                r = mkdir(c->dir, 0700) < 0 ? negative_errno() : 0;
        }
        if (r < 0) {
                snprintf(c->why, sizeof(c->why), "no tracing instance (%s: %s)", c->dir, strerror(-r));
                c->dir[0] = '\0';
                return;
        }
        snprintf(pid_s, sizeof(pid_s), "%d", (int) pid);
        r = write_text_at(c->dir, "set_event_pid", pid_s);
        if (r >= 0)
                r = write_text_at(c->dir, "set_event",
                                  "syscalls:sys_enter_fdatasync\nsyscalls:sys_enter_fsync\n");
        if (r >= 0)
                r = write_text_at(c->dir, "tracing_on", "1");
        if (r < 0) {
                snprintf(c->why, sizeof(c->why), "the syscall events cannot be traced here (%s)",
                         strerror(-r));
                sync_counter_stop(c);
                return;
        }
        c->on = true;
}

/* The calls since the last take, and the buffer emptied; -errno if it cannot be read. */
static int sync_counter_take(SyncCounter *c) {
        char path[200];
        _cleanup_free_ char *text = NULL;
        snprintf(path, sizeof(path), "%s/trace", c->dir);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        size_t size = 0, allocated = 0;
        int r = 0;
        for (;;) {
                if (allocated - size < 4096) {
                        char *t = realloc(text, allocated + 65536);
                        if (!t) {
                                r = -ENOMEM;
                                break;
                        }
                        text = t;
                        allocated += 65536;
                }
                ssize_t k = read(fd, text + size, allocated - size - 1);
                if (k < 0) {
                        r = negative_errno();
                        break;
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        close(fd);
        if (r < 0)
                return r;
        text[size] = '\0';
        int n = 0;
        for (const char *p = text; p && (p = strstr(p, "sys_f")); p++)
                if (strncmp(p, "sys_fdatasync(", 14) == 0 || strncmp(p, "sys_fsync(", 10) == 0)
                        n++;
        r = write_text_at(c->dir, "trace", ""); /* opening it with O_TRUNC clears the buffer */
        return r < 0 ? r : n;
}

typedef struct Bench {
        Options o;
        BenchAgent ag; /* the scratch folder, the config, the agent's process and log */
        char peer_dir[192];
        sd_bus *bus;
        Watch watch;
        Vm *vms;
        size_t n_vms; /* created */
        pid_t peer_script;
        pid_t peer_pids[PEER_MAX];
        size_t n_peers;

        /* results */
        char load_start[64], load_end[64]; /* /proc/loadavg: the figures depend on what else runs */
        double probe_time;
        int probe_result;
        char probe_why[512];
        Reconcile first; /* the first start, empty state */
        double up_total, up_cpu;
        double *up_bus, *up_create, *up_start, *up_ctl, *up_exec, *up_status;
        size_t n_up_bus, n_up_ctl;
        SyncCounter syncs; /* the agent's fdatasync and fsync calls per `chvmctl run` */
        double *up_syncs;
        size_t n_syncs;
        double list_min, list_max, inspect_mean;
        ProcInfo at0, atn;
        double *kill_clean, *kill_tap, *kill_elems, *kill_signal, kill_cpu;
        size_t n_kill, n_kill_signal;
        double *peer_clean, *peer_up;
        size_t n_peer_clean, n_peer_up;
        bool peer_prepared;
        Reconcile *term;
        size_t n_term;
        Reconcile killed;
        size_t killed_dead, killed_running;
        bool killed_ran;
} Bench;

static int setup_dir(Bench *b) {
        /* A /16 so that N_MAX guests have addresses. */
        int r = bench_agent_setup(&b->ag, "vmm", "local", "[local]\nsubnet = 10.96.0.0/16\n");
        if (r < 0)
                return r;
        snprintf(b->peer_dir, sizeof(b->peer_dir), "%s/peer", b->ag.dir);
        return 0;
}

/* Starts the agent and waits for READY=1; t0 is taken right before the spawn. */
static int agent_start_timed(Bench *b, Reconcile *ret) {
        Monitor *m = &b->ag.mon;
        unsigned n = monitor_reset(m);
        double t0 = now(), t = 0;
        int r = agent_spawn(&b->ag);
        if (r >= 0)
                r = agent_wait_ready(&b->ag, n, t0, &t);
        if (r < 0)
                return r;
        pthread_mutex_lock(&m->lock);
        *ret = (Reconcile){ .ready = t - t0,
                            .taskstats = m->t_taskstats ? m->t_taskstats - t0 : -1,
                            .adopted = m->t_adopted ? m->t_adopted - t0 : -1 };
        snprintf(ret->adopted_line, sizeof(ret->adopted_line), "%s", m->adopted);
        pthread_mutex_unlock(&m->lock);
        return 0;
}

/* --- control API --------------------------------------------------------------------------------------- */

static int on_state_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Bench *b = userdata;
        const char *name, *state, *reason;
        uint64_t id;
        double t = now();
        (void) error;
        if (sd_bus_message_read(m, "stss", &name, &id, &state, &reason) < 0 || strcmp(state, "crashed") != 0)
                return 0;
        size_t i;
        if (sscanf(name, "vm-%zu", &i) == 1 && i < b->n_vms && b->vms[i].t_crashed == 0)
                b->vms[i].t_crashed = t;
        return 0;
}

static int bus_connect(Bench *b) {
        int r = bus_open(b->ag.socket, &b->bus);
        if (r >= 0)
                r = sd_bus_match_signal(b->bus, NULL, NULL, AGENT_OBJECT, AGENT_INTERFACE, "VMStateChanged",
                                        on_state_changed, b);
        if (r < 0)
                b->bus = sd_bus_flush_close_unref(b->bus);
        return r;
}

static void bus_close(Bench *b) {
        b->bus = sd_bus_flush_close_unref(b->bus);
}

/* Dispatches what came meanwhile (the agent's signals), so nothing piles up. */
static void bus_dispatch(Bench *b) {
        while (b->bus && sd_bus_process(b->bus, NULL) > 0)
                ;
}

static int vm_create_start(Bench *b, size_t i, double *ret_create, double *ret_start) {
        BusPort port = { .host = (uint16_t) (HOST_PORT_BASE + i), .guest = 80 };
        return bus_create_start(b->bus, b->ag.kernel, b->vms[i].name, "local", &port, 1, &b->vms[i].id,
                                ret_create, ret_start);
}

/* Runs chvmctl with these arguments (after --socket); its output is said when it fails. */
static int ctl(Bench *b, const char *what, char *const args[]) {
        char bin[256];
        char *argv[16] = { bin, (char *) "--socket", b->ag.socket };
        size_t n = 3;
        snprintf(bin, sizeof(bin), "%s/chvmctl", BUILD_DIR);
        for (size_t i = 0; args[i] && n < ELEMENTSOF(argv) - 1; i++)
                argv[n++] = args[i];
        argv[n] = NULL;
        _cleanup_free_ char *out = NULL;
        int r = run(argv, &out);
        if (r != 0) {
                say("chvmctl %s: exit %d: %s", what, r, out ? out : "");
                return r < 0 ? r : -EIO;
        }
        return 0;
}

/* `chvmctl --version` (no connection), or `chvmctl status` (connection, Hello, one Status call). */
static int ctl_plain(Bench *b, bool status) {
        if (status)
                return ctl(b, "status", (char *[]){ (char *) "status", NULL });
        char bin[256];
        snprintf(bin, sizeof(bin), "%s/chvmctl", BUILD_DIR);
        char *version[] = { bin, (char *) "--version", NULL };
        int r = run(version, NULL);
        if (r != 0) {
                say("chvmctl --version: exit %d", r);
                return r < 0 ? r : -EIO;
        }
        return 0;
}

static int ctl_run(Bench *b, const char *name, size_t host_port) {
        char port[32], what[64];
        snprintf(port, sizeof(port), "%zu:80", host_port);
        snprintf(what, sizeof(what), "run %s", name);
        return ctl(b, what,
                   (char *[]){ (char *) "run", (char *) name, (char *) "--kernel", b->ag.kernel,
                               (char *) "-p", port, NULL });
}

static int ctl_rm(Bench *b, const char *name) {
        char what[64];
        snprintf(what, sizeof(what), "rm -f %s", name);
        return ctl(b, what, (char *[]){ (char *) "rm", (char *) "-f", (char *) name, NULL });
}

#define SYNC_RUNS 10

/* The agent's syncs per `chvmctl run`, counted by the kernel, for SYNC_RUNS more VMs that are removed again
 * (their runs untimed: while a syscall event is traced every syscall on the host takes the slow path). */
static int phase_syncs(Bench *b) {
        if (!b->o.ctl_every)
                return 0;
        b->up_syncs = calloc(SYNC_RUNS, sizeof(double));
        if (!b->up_syncs)
                return -ENOMEM;
        sync_counter_start(&b->syncs, b->ag.pid);
        for (size_t j = 0; j < SYNC_RUNS && b->syncs.on; j++) {
                char name[32];
                snprintf(name, sizeof(name), "sync-%zu", j);
                int k = sync_counter_take(&b->syncs); /* what came before is not this run's */
                int r = k < 0 ? 0 : ctl_run(b, name, HOST_PORT_BASE + b->o.vms + j);
                if (r >= 0 && k >= 0)
                        k = sync_counter_take(&b->syncs);
                if (r >= 0)
                        r = ctl_rm(b, name);
                if (r < 0) {
                        sync_counter_stop(&b->syncs);
                        return r;
                }
                if (k < 0) {
                        snprintf(b->syncs.why, sizeof(b->syncs.why), "the trace cannot be read (%s)",
                                 strerror(-k));
                        break;
                }
                b->up_syncs[b->n_syncs++] = k;
                bus_dispatch(b);
        }
        b->syncs.counted = b->syncs.on && b->n_syncs == SYNC_RUNS;
        sync_counter_stop(&b->syncs);
        return 0;
}

/* pid, TAP and the comment tags of its elements, as the agent reports them. */
static int bus_inspect(Bench *b, Vm *vm) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *name, *state, *reason, *backend, *hyp, *tap, *ip, *mac, *kind, *oname, *tag;
        uint64_t id, handle;
        uint32_t pid;
        int r;

        r = sd_bus_call_method(b->bus, NULL, AGENT_OBJECT, AGENT_INTERFACE, "InspectVM", &e, &reply, "s",
                               vm->name);
        if (r < 0) {
                r = call_failed("InspectVM", vm->name, r, &e);
                sd_bus_error_free(&e);
                return r;
        }
        r = sd_bus_message_enter_container(reply, 'r', "stssusssssa(sqq)");
        if (r >= 0)
                r = sd_bus_message_read(reply, "stssusssss", &name, &id, &state, &reason, &pid, &backend,
                                        &hyp, &tap, &ip, &mac);
        if (r >= 0)
                r = sd_bus_message_skip(reply, "a(sqq)");
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r >= 0)
                r = sd_bus_message_skip(reply, "(ssssutas)");
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'a', "(ssts)");
        if (r >= 0) {
                vm->pid = (pid_t) pid;
                vm->id = id;
                snprintf(vm->tap, sizeof(vm->tap), "%s", tap);
                vm->n_elems = 0;
        }
        while (r >= 0 && (r = sd_bus_message_read(reply, "(ssts)", &kind, &oname, &handle, &tag)) > 0)
                if (strncmp(kind, "nft-", 4) == 0 && vm->n_elems < MAX_ELEMS)
                        snprintf(vm->elems[vm->n_elems++], TAG_MAX, "%s", tag);
        sd_bus_message_unref(reply);
        if (r < 0)
                return call_failed("InspectVM (reply)", vm->name, r, NULL);
        /* vm_ports, vm_addrs, the forward; and with [local] dhcp (the default) the addr-unset element */
        if (pid == 0 || !tap[0] || vm->n_elems < 3) {
                say("VM %s is %s with pid %u, TAP \"%s\", %zu elements: expected running with a TAP and 3-4",
                    vm->name, state, pid, tap, vm->n_elems);
                return -EIO;
        }
        return 0;
}

/* Every running VM has its TAP and its elements in the kernel, every killed one none of them. */
static int check_kernel(Bench *b, const char *when) {
        Oracle o = {};
        size_t alive = 0, dead = 0, bad = 0;
        int r = oracle_take(&o);
        if (r < 0) {
                oracle_free(&o);
                return bench_error(r, "ip/nft oracle");
        }
        for (size_t i = 0; i < b->n_vms; i++) {
                const Vm *vm = &b->vms[i];
                size_t have = oracle_has(&o, vm->tap);
                for (size_t k = 0; k < vm->n_elems; k++)
                        have += oracle_has(&o, vm->elems[k]);
                size_t want = vm->dead ? 0 : 1 + vm->n_elems;
                if (have != want) {
                        if (bad++ < 5)
                                say("%s: VM %s (%s) has %zu of its %zu objects in the kernel", when,
                                    vm->name, vm->dead ? "killed" : "running", have, 1 + vm->n_elems);
                } else if (vm->dead)
                        dead++;
                else
                        alive++;
        }
        oracle_free(&o);
        say("%s: ip/nft: %zu running VMs complete, %zu killed VMs left nothing%s", when, alive, dead,
            bad ? ", MISMATCHES" : "");
        return bad ? -EIO : 0;
}

/* --- waiting for the kernel ---------------------------------------------------------------------------- */

typedef bool (*Until)(Bench *b, void *userdata);

/* Reads notifications (and the agent's signals) until every expected deletion was seen and until() holds,
 * or the deadline passes. */
static int watch_wait(Bench *b, double deadline, Until until, void *userdata) {
        Watch *w = &b->watch;
        for (;;) {
                if (w->n_left == 0 && (!until || until(b, userdata)))
                        return 0;
                if (interrupted)
                        return -EINTR;
                double left = deadline - now();
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd p[3] = { { .fd = mnl_socket_get_fd(w->rt), .events = POLLIN },
                                       { .fd = mnl_socket_get_fd(w->nf), .events = POLLIN },
                                       { .fd = -1 } };
                if (b->bus) {
                        p[2].fd = sd_bus_get_fd(b->bus);
                        p[2].events = (short) sd_bus_get_events(b->bus);
                }
                /* until() may depend on the monitor thread: look again every few ms */
                int timeout = until ? 2 : (int) (left * 1000) + 1;
                if (poll(p, 3, timeout) < 0 && errno != EINTR)
                        return negative_errno();
                int r = watch_read(w, w->rt, true);
                if (r >= 0)
                        r = watch_read(w, w->nf, true);
                if (r < 0)
                        return r;
                if (w->overflow) {
                        say("netlink notifications were lost (ENOBUFS): the timing is void");
                        return -ENOBUFS;
                }
                bus_dispatch(b);
        }
}

static double watch_last(const Watch *w, bool links, bool elems) {
        double t = 0;
        for (size_t i = 0; i < w->n; i++)
                if (((w->items[i].link && links) || (!w->items[i].link && elems)) && w->items[i].t > t)
                        t = w->items[i].t;
        return t;
}

static int expect_vm(Watch *w, const Vm *vm) {
        int r = watch_expect(w, vm->tap, true);
        for (size_t k = 0; r >= 0 && k < vm->n_elems; k++)
                r = watch_expect(w, vm->elems[k], false);
        return r;
}

static bool crashed_signal(Bench *b, void *userdata) {
        (void) b;
        return ((Vm *) userdata)->t_crashed != 0;
}

/* --- phases -------------------------------------------------------------------------------------------- */

static int peer_prepare(Bench *b);
static int peer_up_one(Bench *b, size_t j);

static int phase_bring_up(Bench *b) {
        ProcInfo c0 = proc_info(b->ag.pid);
        double t0 = now();
        int r;

        b->up_bus = calloc(b->o.vms, sizeof(double));
        b->up_create = calloc(b->o.vms, sizeof(double));
        b->up_start = calloc(b->o.vms, sizeof(double));
        b->up_ctl = calloc(b->o.vms, sizeof(double));
        b->up_exec = calloc(b->o.vms, sizeof(double));
        b->up_status = calloc(b->o.vms, sizeof(double));
        if (!b->up_bus || !b->up_create || !b->up_start || !b->up_ctl || !b->up_exec || !b->up_status)
                return -ENOMEM;
        for (size_t i = 0; i < b->o.vms; i++) {
                Vm *vm = &b->vms[i];
                if (interrupted)
                        return -EINTR;
                snprintf(vm->name, sizeof(vm->name), "vm-%zu", i);
                b->n_vms = i + 1;
                vm->via_ctl = b->o.ctl_every && i % b->o.ctl_every == b->o.ctl_every - 1;
                double t = now();
                if (vm->via_ctl) {
                        r = ctl_plain(b, false);
                        if (r < 0)
                                return r;
                        b->up_exec[b->n_up_ctl] = now() - t;
                        t = now();
                        r = ctl_plain(b, true);
                        if (r < 0)
                                return r;
                        b->up_status[b->n_up_ctl] = now() - t;
                        t = now();
                        r = ctl_run(b, b->vms[i].name, HOST_PORT_BASE + i);
                        if (r < 0)
                                return r;
                        b->up_ctl[b->n_up_ctl++] = now() - t;
                        /* The peer's next VM right after ours: both under the same conditions (this host's
                         * speed drifts within a run), not the peer's all at the end. */
                        if (b->n_peer_up < b->o.peer_kills) {
                                r = b->peer_prepared ? 0 : peer_prepare(b);
                                if (r >= 0)
                                        r = peer_up_one(b, b->n_peer_up);
                                if (r < 0)
                                        return bench_error(r, "bringing up a peer VM");
                        }
                } else {
                        r = vm_create_start(b, i, &b->up_create[b->n_up_bus], &b->up_start[b->n_up_bus]);
                        if (r < 0)
                                return r;
                        b->up_bus[b->n_up_bus++] = now() - t;
                }
                bus_dispatch(b);
                if ((i + 1) % 100 == 0)
                        say("  %zu VMs up (%.1f s)", i + 1, now() - t0);
        }
        b->up_total = now() - t0;
        b->up_cpu = proc_info(b->ag.pid).cpu - c0.cpu;
        return 0;
}

static int phase_inspect_all(Bench *b) {
        double t0 = now();
        for (size_t i = 0; i < b->n_vms; i++) {
                int r = bus_inspect(b, &b->vms[i]);
                if (r < 0)
                        return r;
                bus_dispatch(b);
        }
        b->inspect_mean = (now() - t0) / (double) b->n_vms;
        b->list_min = 1e9;
        for (int k = 0; k < 3; k++) {
                size_t running;
                double t = now();
                int r = bus_list(b->bus, NULL, NULL, &running, NULL, NULL);
                if (r < 0)
                        return r;
                t = now() - t;
                b->list_min = t < b->list_min ? t : b->list_min;
                b->list_max = t > b->list_max ? t : b->list_max;
                if (running != b->n_vms) {
                        say("ListVMs: %zu running, expected %zu", running, b->n_vms);
                        return -EIO;
                }
        }
        return 0;
}

static int phase_crash(Bench *b) {
        size_t k = b->o.kills;
        int r;

        b->kill_clean = calloc(k + 1, sizeof(double));
        b->kill_tap = calloc(k + 1, sizeof(double));
        b->kill_elems = calloc(k + 1, sizeof(double));
        b->kill_signal = calloc(k + 1, sizeof(double));
        if (!b->kill_clean || !b->kill_tap || !b->kill_elems || !b->kill_signal)
                return -ENOMEM;
        ProcInfo c0 = proc_info(b->ag.pid);
        for (size_t j = 0; j < k; j++) {
                Vm *vm = &b->vms[j * b->n_vms / k];
                Watch *w = &b->watch;

                r = bus_inspect(b, vm); /* the PID, as an admin's tooling would read it */
                if (r < 0)
                        return r;
                r = link_get(w, vm->tap, NULL);
                if (r < 0)
                        return bench_error(r, vm->tap);
                bus_dispatch(b);
                watch_drain(w);
                r = expect_vm(w, vm);
                if (r < 0)
                        return r;
                vm->t_crashed = 0;

                double t0 = now();
                if (kill(vm->pid, SIGKILL) < 0)
                        return bench_error(negative_errno(), "kill");
                vm->dead = true;
                r = watch_wait(b, t0 + 10, NULL, NULL);
                if (r == -ETIMEDOUT) {
                        say("VM %s: %zu of its objects still there 10 s after the kill", vm->name,
                            w->n_left);
                        return r;
                }
                if (r < 0)
                        return r;
                /* The agent's own word comes after its journal write: wait for it a little longer. */
                (void) watch_wait(b, now() + 2, crashed_signal, vm);
                b->kill_clean[j] = watch_last(w, true, true) - t0;
                b->kill_tap[j] = watch_last(w, true, false) - t0;
                b->kill_elems[j] = watch_last(w, false, true) - t0;
                if (vm->t_crashed)
                        b->kill_signal[b->n_kill_signal++] = vm->t_crashed - t0;
                b->n_kill = j + 1;
                r = link_get(w, vm->tap, NULL);
                if (r != -ENODEV) {
                        say("TAP %s announced deleted, but RTM_GETLINK still finds it (%s)", vm->tap,
                            strerror(-r));
                        return -EIO;
                }
        }
        b->kill_cpu = (proc_info(b->ag.pid).cpu - c0.cpu) / (double) k;
        return 0;
}

/* The peer: its own TAPs, table and fake hypervisors, and a script that polls `ip link` every second. */
static const char peer_script[] =
        "#!/bin/bash\n"
        "# A script-style peer of the agent: every second, a TAP that lost its carrier (the\n"
        "# hypervisor that held it is gone) gets its nftables elements deleted, then is deleted.\n"
        "dir=$1\n"
        "while :; do\n"
        "        for t in $(ip -o link show |\n"
        "                   sed -n 's/^[0-9]*: \\(peer-[0-9]*\\): <NO-CARRIER.*/\\1/p'); do\n"
        "                nft -f \"$dir/$t.del\" && ip link del \"$t\" && rm -f \"$dir/$t.del\"\n"
        "        done\n"
        "        sleep 1\n"
        "done\n";

static void peer_names(size_t j, char tap[IFNAMSIZ], char mac[18], char ip[16]) {
        unsigned k = (unsigned) (j % PEER_MAX);
        snprintf(tap, IFNAMSIZ, "peer-%u", k);
        snprintf(mac, 18, "02:00:00:99:%02x:%02x", (k >> 8) & 0xff, k & 0xff);
        snprintf(ip, 16, "10.99.%u.%u", (k >> 8) & 0xff, (k & 0xff) + 1);
}

/* The peer's table, its element deletions for the script, and room for its figures. */
static int peer_prepare(Bench *b) {
        char path[256], tap[IFNAMSIZ], mac[18], ip[16];
        size_t n = b->o.peer_kills, size = 4096 + 512 * n;
        _cleanup_free_ char *nft = malloc(size);
        size_t len = 0;
        int r;

        if (!nft)
                return -ENOMEM;
        if (mkdir(b->peer_dir, 0755) < 0)
                return negative_errno();
        len += (size_t) snprintf(
                nft + len, size - len,
                "table inet chvmpeer {\n"
                "        set ports { type ifname; }\n"
                "        set addrs { type ifname . ether_addr . ipv4_addr; }\n"
                "        map portfwd { type inet_proto . inet_service : ipv4_addr . inet_service; }\n"
                "}\n");
        for (size_t j = 0; j < n; j++) {
                char del[1024];
                peer_names(j, tap, mac, ip);
                snprintf(del, sizeof(del),
                         "delete element inet chvmpeer ports { \"%s\" }\n"
                         "delete element inet chvmpeer addrs { \"%s\" . %s . %s }\n"
                         "delete element inet chvmpeer portfwd { tcp . %zu }\n",
                         tap, tap, mac, ip, PEER_PORT_BASE + j);
                snprintf(path, sizeof(path), "%s/%s.del", b->peer_dir, tap);
                if ((r = write_file(path, del)) < 0)
                        return r;
        }
        snprintf(path, sizeof(path), "%s/tables.nft", b->peer_dir);
        if ((r = write_file(path, nft)) < 0)
                return r;
        char *nft_argv[] = { (char *) "nft", (char *) "-f", path, NULL };
        if ((r = run(nft_argv, NULL)) != 0)
                return r < 0 ? r : -EIO;
        b->peer_up = calloc(n + 1, sizeof(double));
        if (!b->peer_up)
                return -ENOMEM;
        b->peer_prepared = true;
        return 0;
}

/* Peer VM j as a script brings it up: one command per object (its TAP, then each element with its own
 * `nft add element`), then its hypervisor; timed, against `chvmctl run`. */
static int peer_up_one(Bench *b, size_t j) {
        char tap[IFNAMSIZ], mac[18], ip[16], fake[256];
        int r;
        snprintf(fake, sizeof(fake), "%s/tests/fake-vmm", BUILD_DIR);
        {
                char sock[256], serial[256], log[256], net[128], port_e[128], addr_e[160], fwd_e[160];
                double t0 = now();
                peer_names(j, tap, mac, ip);
                char *ip_argv[] = { (char *) "ip", (char *) "tuntap", (char *) "add", (char *) "dev",
                                    tap,           (char *) "mode",   (char *) "tap", (char *) "vnet_hdr",
                                    NULL };
                if ((r = run(ip_argv, NULL)) != 0)
                        return r < 0 ? r : -EIO;
                snprintf(port_e, sizeof(port_e), "{ \"%s\" comment \"peer:%zu:port\" }", tap, j);
                snprintf(addr_e, sizeof(addr_e), "{ \"%s\" . %s . %s comment \"peer:%zu:addr\" }", tap, mac,
                         ip, j);
                snprintf(fwd_e, sizeof(fwd_e), "{ tcp . %zu comment \"peer:%zu:fwd\" : %s . 80 }",
                         PEER_PORT_BASE + j, j, ip);
                const char *sets[] = { "ports", "addrs", "portfwd" }, *elems[] = { port_e, addr_e, fwd_e };
                for (size_t k = 0; k < ELEMENTSOF(sets); k++) {
                        char *nft_add[] = { (char *) "nft",      (char *) "add",
                                            (char *) "element",  (char *) "inet",
                                            (char *) "chvmpeer", (char *) sets[k],
                                            (char *) elems[k],   NULL };
                        if ((r = run(nft_add, NULL)) != 0)
                                return r < 0 ? r : -EIO;
                }
                snprintf(sock, sizeof(sock), "path=%s/%s.sock", b->peer_dir, tap);
                snprintf(serial, sizeof(serial), "file=%s/%s.serial", b->peer_dir, tap);
                snprintf(log, sizeof(log), "%s/%s.log", b->peer_dir, tap);
                snprintf(net, sizeof(net), "tap=%s,mac=%s", tap, mac);
                char *argv[] = { fake,
                                 (char *) "--api-socket",
                                 sock,
                                 (char *) "--kernel",
                                 b->ag.kernel,
                                 (char *) "--cmdline",
                                 (char *) "console=ttyS0",
                                 (char *) "--cpus",
                                 (char *) "boot=1",
                                 (char *) "--memory",
                                 (char *) "size=256M",
                                 (char *) "--net",
                                 net,
                                 (char *) "--serial",
                                 serial,
                                 (char *) "--console",
                                 (char *) "off",
                                 NULL };
                int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0)
                        return negative_errno();
                r = spawn(argv, NULL, fd, &b->peer_pids[j]);
                close(fd);
                if (r < 0)
                        return r;
                b->n_peers = j + 1;
                /* up when its API accepts, as a script waits for the socket before it reports the VM
                 * started (chvmctl run answers once the API answers a ping) */
                if (!wait_unix_accepting(sock + strlen("path="), 10.0)) {
                        say("peer %s: its fake-vmm never accepted on its API socket", tap);
                        return -ETIMEDOUT;
                }
                b->peer_up[b->n_peer_up++] = now() - t0;
        }
        return 0;
}

/* Every peer VM up (those the bring-up did not interleave with ours), then the script. */
static int peer_setup(Bench *b) {
        char path[256], tap[IFNAMSIZ], mac[18], ip[16];
        size_t n = b->o.peer_kills;
        int r;
        if (!b->peer_prepared && (r = peer_prepare(b)) < 0)
                return r;
        while (b->n_peer_up < n)
                if ((r = peer_up_one(b, b->n_peer_up)) < 0)
                        return r;
        /* Every TAP has its carrier (a hypervisor attached) before the script looks. */
        for (size_t j = 0; j < n; j++) {
                unsigned flags = 0;
                peer_names(j, tap, mac, ip);
                for (double end = now() + 10; !(flags & IFF_LOWER_UP);) {
                        r = link_get(&b->watch, tap, &flags);
                        if (r < 0)
                                return bench_error(r, tap);
                        if (now() > end) {
                                say("peer TAP %s has no carrier 10 s after its fake-vmm started", tap);
                                return -ETIMEDOUT;
                        }
                        if (!(flags & IFF_LOWER_UP))
                                usleep(1000);
                }
        }
        snprintf(path, sizeof(path), "%s/peer.sh", b->peer_dir);
        if ((r = write_file(path, peer_script)) < 0)
                return r;
        char log[256];
        snprintf(log, sizeof(log), "%s/peer.log", b->peer_dir);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return negative_errno();
        char *sh_argv[] = { (char *) "bash", path, b->peer_dir, NULL };
        r = spawn(sh_argv, NULL, fd, &b->peer_script);
        close(fd);
        return r;
}

static int phase_peer(Bench *b) {
        char tap[IFNAMSIZ], mac[18], ip[16], tag[64];
        Watch *w = &b->watch;
        int r;

        r = peer_setup(b);
        if (r < 0)
                return bench_error(r, "setting up the peer");
        b->peer_clean = calloc(b->o.peer_kills + 1, sizeof(double));
        if (!b->peer_clean)
                return -ENOMEM;
        srand48((long) getpid() ^ (long) time(NULL));
        for (size_t j = 0; j < b->o.peer_kills; j++) {
                /* Anywhere in the script's poll period, not in step with it. */
                usleep((useconds_t) (drand48() * 1e6));
                watch_drain(w);
                peer_names(j, tap, mac, ip);
                r = watch_expect(w, tap, true);
                static const char *const roles[] = { "port", "addr", "fwd" };
                for (size_t k = 0; r >= 0 && k < 3; k++) {
                        snprintf(tag, sizeof(tag), "peer:%zu:%s", j, roles[k]);
                        r = watch_expect(w, tag, false);
                }
                if (r < 0)
                        return r;
                double t0 = now();
                if (kill(b->peer_pids[j], SIGKILL) < 0)
                        return bench_error(negative_errno(), "kill");
                (void) wait_pid(b->peer_pids[j], NULL);
                b->peer_pids[j] = 0;
                r = watch_wait(b, t0 + 10, NULL, NULL);
                if (r < 0)
                        return bench_error(r, "waiting for the peer to clean up");
                b->peer_clean[b->n_peer_clean++] = watch_last(w, true, true) - t0;
        }
        return 0;
}

static void peer_stop(Bench *b) {
        if (b->peer_script > 0) {
                (void) kill(b->peer_script, SIGTERM);
                (void) wait_pid(b->peer_script, NULL);
                b->peer_script = 0;
        }
        for (size_t j = 0; j < b->n_peers; j++)
                if (b->peer_pids[j] > 0) {
                        (void) kill(b->peer_pids[j], SIGKILL);
                        (void) wait_pid(b->peer_pids[j], NULL);
                        b->peer_pids[j] = 0;
                }
}

static int phase_restart_term(Bench *b, Reconcile *res) {
        int status, r;

        bus_close(b);
        double t = now();
        if (kill(b->ag.pid, SIGTERM) < 0)
                return negative_errno();
        r = agent_wait_exit(&b->ag, 60, &status);
        if (r < 0)
                return bench_error(r, "waiting for the agent to exit after SIGTERM");
        double shutdown = now() - t;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                say("chvm-agentd exited with status %d after SIGTERM", status);
                return -EIO;
        }
        r = agent_start_timed(b, res);
        if (r < 0)
                return r;
        res->shutdown = shutdown;
        res->after = proc_info(b->ag.pid);
        r = bus_connect(b);
        if (r < 0)
                return bench_error(r, "connecting to the restarted agent");
        size_t running, want = 0;
        for (size_t i = 0; i < b->n_vms; i++)
                want += !b->vms[i].dead;
        r = bus_list(b->bus, NULL, NULL, &running, NULL, NULL);
        if (r < 0)
                return r;
        if (running != want) {
                say("after the restart: %zu running, expected %zu", running, want);
                return -EIO;
        }
        return 0;
}

static bool agent_ready(Bench *b, void *userdata) {
        return monitor_ready_since(&b->ag.mon, *(unsigned *) userdata, NULL);
}

static int phase_restart_kill(Bench *b) {
        Reconcile *res = &b->killed;
        size_t alive = 0, d = b->o.down_kills, k = 0;
        _cleanup_free_ size_t *idx = calloc(b->n_vms + 1, sizeof(size_t));
        int status, r;

        if (!idx)
                return -ENOMEM;
        for (size_t i = 0; i < b->n_vms; i++)
                if (!b->vms[i].dead)
                        idx[alive++] = i;
        if (d > alive)
                d = alive;
        bus_close(b);
        if (kill(b->ag.pid, SIGKILL) < 0)
                return negative_errno();
        r = agent_wait_exit(&b->ag, 30, &status);
        if (r < 0)
                return r;

        watch_drain(&b->watch);
        for (size_t j = 0; j < d; j++) {
                Vm *vm = &b->vms[idx[j * alive / d]];
                /* Ours since their agent died (we are the subreaper): reaped, so the PID is really gone. */
                if (!is_ours(vm->pid, b->ag.dir) || kill(vm->pid, SIGKILL) < 0)
                        return bench_error(-ESRCH, vm->name);
                r = wait_pid(vm->pid, NULL);
                if (r < 0)
                        return bench_error(r, "reaping a hypervisor");
                vm->dead = true;
                k++;
                r = expect_vm(&b->watch, vm);
                if (r < 0)
                        return r;
        }
        b->killed_dead = k;
        b->killed_running = alive - k;

        /* The start, with the deletions of the dead VMs' objects timed as they are announced. */
        unsigned n = monitor_reset(&b->ag.mon);
        double t0 = now(), t_ready = 0;
        r = agent_spawn(&b->ag);
        if (r < 0)
                return r;
        r = watch_wait(b, t0 + 120, agent_ready, &n);
        if (r < 0) {
                say("after SIGKILL: %zu objects of dead VMs not deleted or no READY=1 (%s); log: %s",
                    b->watch.n_left, strerror(-r), b->ag.log);
                return r;
        }
        (void) monitor_ready_since(&b->ag.mon, n, &t_ready);
        pthread_mutex_lock(&b->ag.mon.lock);
        *res = (Reconcile){ .ready = t_ready - t0,
                            .taskstats = b->ag.mon.t_taskstats ? b->ag.mon.t_taskstats - t0 : -1,
                            .adopted = b->ag.mon.t_adopted ? b->ag.mon.t_adopted - t0 : -1,
                            .shutdown = -1,
                            .last_gone = watch_last(&b->watch, true, true) - t0 };
        snprintf(res->adopted_line, sizeof(res->adopted_line), "%s", b->ag.mon.adopted);
        pthread_mutex_unlock(&b->ag.mon.lock);
        res->after = proc_info(b->ag.pid);
        b->killed_ran = true;

        r = bus_connect(b);
        if (r < 0)
                return bench_error(r, "connecting to the restarted agent");
        size_t running, crashed, total;
        r = bus_list(b->bus, NULL, NULL, &running, &crashed, &total);
        if (r < 0)
                return r;
        if (running != b->killed_running) {
                say("after SIGKILL and restart: %zu running, expected %zu", running, b->killed_running);
                return -EIO;
        }
        return 0;
}

/* --- report -------------------------------------------------------------------------------------------- */

static void print_stats_ms(const char *what, const double *v, size_t n) {
        Stats s = stats_of(v, n);
        if (n == 0) {
                printf("  %-52s %s\n", what, "(none)");
                return;
        }
        printf("  %-52s %8.2f %8.2f %8.2f %8.2f   (n = %zu)\n", what, s.p50 * 1e3, s.p99 * 1e3, s.max * 1e3,
               s.min * 1e3, n);
}

static void print_range(const char *what, const double *v, size_t n, const char *extra) {
        Stats s = stats_of(v, n);
        if (n == 0)
                return;
        if (n == 1)
                printf("  %-52s %8.1f ms%s\n", what, s.min * 1e3, extra ? extra : "");
        else
                printf("  %-52s %8.1f .. %.1f ms (median %.1f, %zu runs)%s\n", what, s.min * 1e3,
                       s.max * 1e3, s.p50 * 1e3, n, extra ? extra : "");
}

static void print_mem(const char *what, const ProcInfo *p) {
        printf("  %-52s %8.1f %8.1f %8zu\n", what, (double) p->rss_kib / 1024, (double) p->hwm_kib / 1024,
               p->fds);
}

static void report(const Bench *b) {
        struct utsname u;
        if (uname(&u) < 0)
                snprintf(u.release, sizeof(u.release), "?");
        size_t n = b->n_vms;

        printf("\nchvm VMM benchmark: chvm-agentd of this build, tests/fake-vmm as cloud-hypervisor, "
               "backend local\n");
        printf("  in a network namespace of its own (kernel %s); a VM = TAP on chvm0 + vm_ports + vm_addrs\n"
               "  + 1 tcp port forward; state and runtime folders in %s\n",
               u.release, b->ag.dir);
        printf("  load average (/proc/loadavg) at the start: %s; at the end: %s; %ld CPUs\n", b->load_start,
               b->load_end, sysconf(_SC_NPROCESSORS_ONLN));

        printf("\nBring-up of %zu VMs: %.2f s wall, agent CPU %.2f s\n", n, b->up_total, b->up_cpu);
        printf("  %-52s %8s %8s %8s %8s   (ms)\n", "per VM", "p50", "p99", "max", "min");
        print_stats_ms("CreateVM + StartVM over D-Bus", b->up_bus, b->n_up_bus);
        print_stats_ms("  CreateVM", b->up_create, b->n_up_bus);
        print_stats_ms("  StartVM", b->up_start, b->n_up_bus);
        if (b->n_up_ctl) {
                char what[80];
                snprintf(what, sizeof(what), "`chvmctl run` (every %zuth VM, one process each)",
                         b->o.ctl_every);
                print_stats_ms(what, b->up_ctl, b->n_up_ctl);
                print_stats_ms("  of it: `chvmctl --version` (exec, libraries)", b->up_exec, b->n_up_ctl);
                print_stats_ms("  of it: `chvmctl status` (+ connect, Hello, 1 call)", b->up_status,
                               b->n_up_ctl);
                if (b->syncs.counted) {
                        Stats s = stats_of(b->up_syncs, b->n_syncs);
                        printf("  %-52s %8.0f %8.0f %8.0f %8.0f   (calls, %zu more runs)\n",
                               "  the agent's fdatasync + fsync per `chvmctl run`", s.p50, s.p99, s.max,
                               s.min, b->n_syncs);
                } else
                        printf("  %-52s not counted: %s\n", "  the agent's fdatasync + fsync per run",
                               b->syncs.why[0] ? b->syncs.why : "?");
        }
        if (b->n_peer_up) {
                print_stats_ms("peer: a script's way, one command per object", b->peer_up, b->n_peer_up);
                if (b->n_up_ctl) {
                        Stats ours = stats_of(b->up_ctl, b->n_up_ctl),
                              peer = stats_of(b->peer_up, b->n_peer_up);
                        printf("  %-52s %8.2fx (p50 of the peer / p50 of `chvmctl run`)\n",
                               "  `chvmctl run` against it", peer.p50 / ours.p50);
                }
        }
        printf("  %-52s %8.2f ms\n", "InspectVM at N VMs (mean over all)", b->inspect_mean * 1e3);
        printf("  %-52s %8.2f .. %.2f ms (3 calls)\n", "ListVMs at N VMs", b->list_min * 1e3,
               b->list_max * 1e3);

        printf("\nAgent memory and open files\n  %-52s %8s %8s %8s\n", "", "RSS MiB", "HWM MiB", "fds");
        print_mem("0 VMs (fresh start)", &b->at0);
        char what[96];
        snprintf(what, sizeof(what), "%zu VMs (after bring-up)", n);
        print_mem(what, &b->atn);
        for (size_t i = 0; i < b->n_term; i++) {
                snprintf(what, sizeof(what), "restarted after SIGTERM, adopted (run %zu)", i + 1);
                print_mem(what, &b->term[i].after);
        }
        if (b->killed_ran)
                print_mem("restarted after SIGKILL", &b->killed.after);

        printf("\nCrash-to-clean: %zu hypervisors SIGKILLed one at a time (%zu..%zu VMs running)\n",
               b->n_kill, n, n - b->n_kill + 1);
        printf("  %-52s %8s %8s %8s %8s   (ms from the kill)\n", "", "p50", "p99", "max", "min");
        print_stats_ms("last object gone (kernel notifications)", b->kill_clean, b->n_kill);
        print_stats_ms("  its nft elements gone", b->kill_elems, b->n_kill);
        print_stats_ms("  its TAP gone", b->kill_tap, b->n_kill);
        print_stats_ms("agent's VMStateChanged \"crashed\" received", b->kill_signal, b->n_kill_signal);
        printf("  %-52s %8.2f ms\n", "agent CPU per kill (incl. one InspectVM)", b->kill_cpu * 1e3);
        if (b->n_peer_clean) {
                print_stats_ms("peer: script polling `ip -o link` every 1 s", b->peer_clean,
                               b->n_peer_clean);
                Stats ours = stats_of(b->kill_clean, b->n_kill),
                      peer = stats_of(b->peer_clean, b->n_peer_clean);
                printf("  %-52s %8.0fx %7.0fx\n", "peer / agent (same run)", peer.p50 / ours.p50,
                       peer.p99 / ours.p99);
        }

        printf("\nReconcile: exec of chvm-agentd to READY=1 on our NOTIFY_SOCKET\n");
        {
                char extra[160];
                double v = b->first.ready;
                snprintf(extra, sizeof(extra), "  (taskstats verdict at %.1f ms)", b->first.taskstats * 1e3);
                print_range("fresh start, empty state", &v, 1, b->first.taskstats >= 0 ? extra : NULL);
        }
        if (b->n_term) {
                double ready[64], shut[64], ts[64], ad[64], rest[64];
                size_t m = b->n_term < 64 ? b->n_term : 64;
                for (size_t i = 0; i < m; i++) {
                        ready[i] = b->term[i].ready;
                        shut[i] = b->term[i].shutdown;
                        ts[i] = b->term[i].taskstats;
                        ad[i] = b->term[i].adopted - (b->term[i].taskstats > 0 ? b->term[i].taskstats : 0);
                        rest[i] = b->term[i].ready - b->term[i].adopted;
                }
                print_range("SIGTERM to exit of the old agent", shut, m, NULL);
                snprintf(what, sizeof(what), "restart, adopting %zu running VMs", n - b->n_kill);
                print_range(what, ready, m, NULL);
                if (b->term[0].taskstats >= 0)
                        print_range("  spawn to the taskstats probe's verdict", ts, m, NULL);
                print_range("  then journal, backends, definitions, adoption", ad, m, NULL);
                print_range("  then control socket to READY=1", rest, m, NULL);
                printf("  agent's log: %s\n", b->term[0].adopted_line);
        }
        if (b->killed_ran) {
                double v = b->killed.ready, g = b->killed.last_gone;
                snprintf(what, sizeof(what), "restart after SIGKILL, %zu running + %zu dead",
                         b->killed_running, b->killed_dead);
                print_range(what, &v, 1, NULL);
                print_range("  last object of a dead VM gone (from the spawn)", &g, 1, NULL);
                printf("  agent's log: %s\n", b->killed.adopted_line);
        }
        printf("\nTaskstats probe (taskstats_listener_new, in this process and namespace): %.1f ms, %s%s\n",
               b->probe_time * 1e3, b->probe_result >= 0 ? "listener ready" : "gave up: ",
               b->probe_result >= 0 ? "" : b->probe_why);

        printf("\nIssue 4 targets\n");
        if (b->n_kill) {
                Stats s = stats_of(b->kill_clean, b->n_kill);
                printf("  crash-to-clean p99 <= 50 ms: %.1f ms (p50 %.1f, max %.1f): %s\n", s.p99 * 1e3,
                       s.p50 * 1e3, s.max * 1e3, s.p99 <= 0.050 ? "met" : "NOT met");
        }
        if (b->n_term) {
                double ready[64];
                size_t m = b->n_term < 64 ? b->n_term : 64;
                for (size_t i = 0; i < m; i++)
                        ready[i] = b->term[i].ready;
                Stats s = stats_of(ready, m);
                printf("  reconcile <= 1 s with %zu running VMs: %.3f s (worst of %zu): %s\n", n - b->n_kill,
                       s.max, m, s.max <= 1.0 ? "met" : "NOT met");
                if (b->term[0].taskstats >= 0)
                        printf("    of which the taskstats probe, which cannot succeed in a network "
                               "namespace: ~%.0f ms\n",
                               b->term[0].taskstats * 1e3);
        }
        if (b->killed_ran)
                printf("  (not a target) reconcile after SIGKILL with %zu running + %zu dead VMs: %.3f s\n",
                       b->killed_running, b->killed_dead, b->killed.ready);
        printf("  agent RSS <= 16 MiB at %zu VMs: %.1f MiB (HWM %.1f): %s\n", n,
               (double) b->atn.rss_kib / 1024, (double) b->atn.hwm_kib / 1024,
               b->atn.rss_kib <= 16 * 1024 ? "met" : "NOT met");
}

/* --- cleanup ------------------------------------------------------------------------------------------- */

static void cleanup(Bench *b) {
        sync_counter_stop(&b->syncs); /* when the bring-up ended early */
        bus_close(b);
        agent_stop(&b->ag);
        peer_stop(b);
        /* The hypervisors outlive the agent on purpose: each ended by its PID, which must still be ours. */
        size_t killed = 0;
        for (size_t i = 0; b->vms && i < b->n_vms; i++)
                if (b->vms[i].pid > 0 && !b->vms[i].dead && is_ours(b->vms[i].pid, b->ag.dir) &&
                    kill(b->vms[i].pid, SIGKILL) == 0) {
                        killed++;
                        /* reaped now (ECHILD if it is not our child), so the search below cannot count it */
                        (void) waitpid(b->vms[i].pid, NULL, 0);
                }
        watch_close(&b->watch);
        /* Any we did not learn the PID of (a run cut short), and the peer script's last `sleep`. */
        killed += bench_agent_cleanup(&b->ag, b->o.keep);
        if (killed)
                say("ended %zu hypervisor(s) by PID", killed);
}

/* --- main ---------------------------------------------------------------------------------------------- */

static void usage(FILE *f) {
        fprintf(f,
                "usage: bench/vmm [--quick] [--vms N] [--kills K] [--peer-kills P] [--restarts R]\n"
                "                 [--down-kills D] [--ctl-every M] [--keep]\n"
                "  --vms N         fake VMs to run (default 1000, at most %d)\n"
                "  --kills K       hypervisors SIGKILLed one at a time for crash-to-clean (default 100)\n"
                "  --peer-kills P  kills for the script-style peer, ~1 s each (default 20, 0: no peer)\n"
                "  --restarts R    SIGTERM restarts timed (default 3)\n"
                "  --down-kills D  hypervisors SIGKILLed while the agent is down, after a SIGKILL of the\n"
                "                  agent (default 100)\n"
                "  --ctl-every M   every M-th VM is brought up with `chvmctl run` (default 20, 0: none)\n"
                "  --quick         a smoke run: 50 VMs, 10 kills, 3 peer kills, 1 restart, 5 down kills\n"
                "  --keep          keep the scratch folder (agent.log has every line the agents wrote)\n",
                N_MAX);
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

int main(int argc, char **argv) {
        Bench b = { .o = { .vms = 1000,
                           .kills = 100,
                           .peer_kills = 20,
                           .restarts = 3,
                           .down_kills = 100,
                           .ctl_every = 20 } };
        int r = 0;

        bench_name = "bench/vmm";
        for (int i = 1; i < argc; i++) {
                struct {
                        const char *name;
                        size_t *v, max;
                } opts[] = { { "--vms", &b.o.vms, N_MAX },
                             { "--kills", &b.o.kills, N_MAX },
                             { "--peer-kills", &b.o.peer_kills, PEER_MAX },
                             { "--restarts", &b.o.restarts, 64 },
                             { "--down-kills", &b.o.down_kills, N_MAX },
                             { "--ctl-every", &b.o.ctl_every, N_MAX } };
                bool ok = false;
                if (strcmp(argv[i], "--quick") == 0) {
                        b.o = (Options){ .vms = 50,
                                         .kills = 10,
                                         .peer_kills = 3,
                                         .restarts = 1,
                                         .down_kills = 5,
                                         .ctl_every = 10,
                                         .keep = b.o.keep };
                        continue;
                }
                if (strcmp(argv[i], "--keep") == 0) {
                        b.o.keep = true;
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
        if (b.o.vms == 0 || b.o.kills + b.o.down_kills > b.o.vms) {
                fprintf(stderr, "bench/vmm: --kills + --down-kills must not exceed --vms (and --vms > 0)\n");
                return 2;
        }

        if (geteuid() != 0) {
                printf("SKIP: bench/vmm needs root: it runs chvm-agentd with TAPs and nftables tables in a "
                       "network namespace of its own\n");
                return 0;
        }
        if (unshare(CLONE_NEWNET) < 0) {
                printf("SKIP: bench/vmm cannot make its network namespace: unshare(CLONE_NEWNET): %s\n",
                       strerror(errno));
                return 0;
        }
        if (access("/dev/net/tun", R_OK | W_OK) < 0) {
                printf("SKIP: bench/vmm: /dev/net/tun is not usable: %s\n", strerror(errno));
                return 0;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        bench_catch_signals();
        /* Hypervisors whose agent exits are reparented to us, not to PID 1: we can reap and end them. */
        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);

        char *lo[] = { (char *) "ip", (char *) "link", (char *) "set", (char *) "lo", (char *) "up", NULL };
        (void) run(lo, NULL);
        /* This namespace's own queue length for datagram sockets (the agent's sd_notify()). */
        (void) write_file("/proc/sys/net/unix/max_dgram_qlen", "4096\n");

        b.vms = calloc(b.o.vms, sizeof(Vm));
        b.term = calloc(b.o.restarts + 1, sizeof(Reconcile));
        if (!b.vms || !b.term) {
                r = -ENOMEM;
                goto finish;
        }
        r = setup_dir(&b);
        if (r < 0) {
                bench_error(r, "scratch folder, notify socket and log pipe");
                goto finish;
        }
        r = watch_open(&b.watch);
        if (r < 0) {
                bench_error(r, "netlink notification sockets");
                goto finish;
        }

        read_loadavg(b.load_start);
        say("taskstats probe in this namespace (gives up after %d ms here)...", TASKSTATS_PROBE_TIMEOUT_MS);
        {
                TaskstatsListener *t = NULL;
                double t0 = now();
                Error why = {};
                b.probe_result = taskstats_listener_new(&t, &why);
                snprintf(b.probe_why, sizeof(b.probe_why), "%s", error_message(&why));
                b.probe_time = now() - t0;
                taskstats_listener_free(t);
        }

        say("starting chvm-agentd (empty state in %s)", b.ag.dir);
        r = agent_start_timed(&b, &b.first);
        if (r < 0)
                goto finish;
        r = bus_connect(&b);
        if (r < 0) {
                bench_error(r, "connecting to the agent");
                goto finish;
        }
        b.at0 = proc_info(b.ag.pid);

        say("bringing up %zu VMs", b.o.vms);
        r = phase_bring_up(&b);
        if (r < 0)
                goto finish;
        b.atn = proc_info(b.ag.pid);
        r = phase_syncs(&b);
        if (r < 0)
                goto finish;
        r = phase_inspect_all(&b);
        if (r < 0)
                goto finish;
        r = check_kernel(&b, "after bring-up");
        if (r < 0)
                goto finish;

        say("crash-to-clean: %zu kills", b.o.kills);
        r = phase_crash(&b);
        if (r < 0)
                goto finish;
        r = check_kernel(&b, "after the kills");
        if (r < 0)
                goto finish;

        if (b.o.peer_kills) {
                say("peer: %zu kills (about a second each)", b.o.peer_kills);
                r = phase_peer(&b);
                peer_stop(&b);
                if (r < 0)
                        goto finish;
        }

        for (size_t i = 0; i < b.o.restarts; i++) {
                say("restart %zu of %zu after SIGTERM", i + 1, b.o.restarts);
                r = phase_restart_term(&b, &b.term[i]);
                if (r < 0)
                        goto finish;
                b.n_term = i + 1;
        }
        if (b.n_term) {
                r = check_kernel(&b, "after the restarts");
                if (r < 0)
                        goto finish;
        }
        if (b.o.down_kills) {
                say("SIGKILL of the agent, %zu hypervisors killed while it is down, restart",
                    b.o.down_kills);
                r = phase_restart_kill(&b);
                if (r < 0)
                        goto finish;
                r = check_kernel(&b, "after the SIGKILL restart");
                if (r < 0)
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
