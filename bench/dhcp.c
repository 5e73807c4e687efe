/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* bench/dhcp: the local backend's DHCP server under load, with the daemon of this build.
 *
 * In a network namespace of its own (the "host"), chvm-agentd runs N VMs on `local` with tests/fake-vmm as
 * their hypervisor; each fake-vmm relays its VM's TAP to a link of the same name and the VM's MAC in a
 * second namespace (the "guests", FAKE_VMM_GUEST_NETNS), where this program is the DHCP client: a packet
 * socket per guest link, DISCOVER -> OFFER -> REQUEST -> ACK, built and checked here byte by byte.
 *
 *   1. leases per second, one client after another on one VM (each lease two round trips), with their
 *      latency p50/p99, at N VMs (sent to the server's MAC: see to_server_mac);
 *   2. one lease for each of the N VMs, one after another: the agent's CPU time per lease (user + system,
 *      /proc/PID/stat), which includes finding the VM by its MAC among N;
 *   3. "TAP up to ACK": K more VMs started while N run; for each, from StartVM's reply (its TAP is up and
 * its hypervisor spawned) to the ACK of its first lease, the client starting as soon as the guest link is
 *      there. The same for the first K VMs, at 0 running, for comparison.
 *
 * The relay through fake-vmm (a userspace copy each way) is part of every round trip, as a hypervisor's is.
 * Timings are reported, never judged: run it on a quiet machine, in a build without sanitizers. */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/bench-agent.h"

#define N_MAX 1000
#define GW 0x0ac80001U /* 10.200.0.1: [local] subnet 10.200.0.0/16 below */

typedef struct Options {
        size_t vms, leases, late;
        bool keep;
} Options;

typedef struct Vm {
        char name[33], tap[16], ip[16];
        uint64_t id;
        uint8_t mac[6];
} Vm;

static char guest_ns[64], guest_ns_path[128];
static int guest_ns_fd = -1;
/* The server's MAC, from its first OFFER: phases 1 and 2 send to it rather than to ff:ff:ff:ff:ff:ff, so
 * that the bridge does not flood each message to every VM's TAP (N stand-in hypervisors relaying it), which
 * would time the flood and not the agent. A booting client broadcasts (phase 3 does). */
static uint8_t server_mac[6];
static bool server_mac_known, to_server_mac;

static void usage(FILE *f) {
        fprintf(f,
                "Usage: bench/dhcp [--vms N] [--leases N] [--late K] [--quick] [--keep]\n"
                "  --vms N     VMs running while measuring (default 1000, at most %d: one bridge)\n"
                "  --leases N  leases one after another on one VM (default 2000)\n"
                "  --late K    VMs started at 0 and at N running, TAP up to ACK timed (default 20)\n"
                "  --quick     50 VMs, 200 leases, 5 late\n"
                "  --keep      keep the scratch folder and the agent's log\n",
                N_MAX);
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24), p[1] = (uint8_t) (v >> 16), p[2] = (uint8_t) (v >> 8),
        p[3] = (uint8_t) v;
}

static uint16_t csum(const uint8_t *p, size_t n, uint32_t sum) {
        for (size_t i = 0; i + 1 < n; i += 2)
                sum += (uint32_t) (p[i] << 8 | p[i + 1]);
        if (n & 1)
                sum += (uint32_t) p[n - 1] << 8;
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return (uint16_t) ~sum;
}

/* A client message from 0.0.0.0:68 to 255.255.255.255:67, as an IPv4 packet. */
static size_t client_msg(uint8_t *pkt, uint8_t type, const uint8_t mac[6], uint32_t xid, uint32_t want) {
        memset(pkt, 0, 28 + 300);
        uint8_t *b = pkt + 28;
        b[0] = 1, b[1] = 1, b[2] = 6;
        put32(b + 4, xid);
        memcpy(b + 28, mac, 6);
        put32(b + 236, 0x63825363);
        size_t n = 240;
        b[n++] = 53, b[n++] = 1, b[n++] = type;
        if (type == 3) {
                b[n++] = 54, b[n++] = 4;
                put32(b + n, GW);
                n += 4;
                b[n++] = 50, b[n++] = 4;
                put32(b + n, want);
                n += 4;
        }
        b[n++] = 255;
        size_t total = 28 + 300, ulen = total - 20;
        pkt[0] = 0x45, pkt[2] = (uint8_t) (total >> 8), pkt[3] = (uint8_t) total, pkt[8] = 64, pkt[9] = 17;
        put32(pkt + 16, 0xffffffffU);
        uint16_t c = csum(pkt, 20, 0);
        pkt[10] = (uint8_t) (c >> 8), pkt[11] = (uint8_t) c;
        uint8_t *u = pkt + 20;
        u[1] = 68, u[3] = 67, u[4] = (uint8_t) (ulen >> 8), u[5] = (uint8_t) ulen;
        /* no UDP checksum (0), as IPv4 allows */
        return total;
}

/* The server's reply of `type` to xid on link ifindex, with its yiaddr; -ETIMEDOUT after timeout_ms. */
static int await_reply(int fd, int ifindex, uint32_t xid, uint8_t type, int timeout_ms,
                       uint32_t *ret_yiaddr) {
        uint8_t buf[2048];
        double end = now() + timeout_ms / 1000.0;
        for (;;) {
                int left = (int) ((end - now()) * 1000);
                if (left <= 0)
                        return -ETIMEDOUT;
                struct pollfd p = { .fd = fd, .events = POLLIN };
                int k = poll(&p, 1, left);
                if (k < 0 && errno != EINTR)
                        return -errno;
                if (k <= 0)
                        continue;
                struct sockaddr_ll from = {};
                socklen_t fl = sizeof(from);
                ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *) &from, &fl);
                if (n < 28 + 244 || buf[9] != 17 || buf[23] != 68 || from.sll_ifindex != ifindex ||
                    from.sll_pkttype == PACKET_OUTGOING)
                        continue;
                const uint8_t *b = buf + 28;
                if (b[0] != 2 || get32(b + 4) != xid)
                        continue;
                for (size_t i = 240; i + 2 < (size_t) n - 28;) {
                        if (b[i] == 0) {
                                i++;
                                continue;
                        }
                        if (b[i] == 255)
                                break;
                        if (b[i] == 53 && b[i + 2] == type) {
                                *ret_yiaddr = get32(b + 16);
                                if (!server_mac_known && from.sll_halen == 6) {
                                        memcpy(server_mac, from.sll_addr, 6);
                                        server_mac_known = true;
                                }
                                return 0;
                        }
                        i += 2 + (size_t) b[i + 1];
                }
        }
}

/* The client's one packet socket, on every link of the guests' namespace (this program lives there once
 * the agent runs: the control socket is a path, which no network namespace hides). One socket for all: a
 * packet socket's close waits for an RCU grace period (tens of ms), which would swamp every figure. */
static int client_fd = -1;

static int client_open(void) {
        int one = 1;
        client_fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_IP));
        if (client_fd < 0)
                return -errno;
        (void) setsockopt(client_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
        int size = 4 << 20;
        (void) setsockopt(client_fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size));
        return 0;
}

/* One DISCOVER -> OFFER -> REQUEST -> ACK; the address acknowledged in *ret. */
static int lease(int ifindex, const uint8_t mac[6], uint32_t xid, int timeout_ms, uint32_t *ret) {
        int fd = client_fd;
        uint8_t pkt[400];
        struct sockaddr_ll to = { .sll_family = AF_PACKET,
                                  .sll_protocol = htons(ETH_P_IP),
                                  .sll_ifindex = ifindex,
                                  .sll_halen = 6 };
        if (to_server_mac && server_mac_known)
                memcpy(to.sll_addr, server_mac, 6);
        else
                memset(to.sll_addr, 0xff, 6);
        uint32_t offered = 0, acked = 0;
        size_t n = client_msg(pkt, 1, mac, xid, 0);
        if (sendto(fd, pkt, n, 0, (struct sockaddr *) &to, sizeof(to)) < 0)
                return -errno;
        int r = await_reply(fd, ifindex, xid, 2, timeout_ms, &offered);
        if (r < 0)
                return r;
        n = client_msg(pkt, 3, mac, xid, offered);
        if (sendto(fd, pkt, n, 0, (struct sockaddr *) &to, sizeof(to)) < 0)
                return -errno;
        r = await_reply(fd, ifindex, xid, 5, timeout_ms, &acked);
        if (r < 0)
                return r;
        if (acked != offered)
                return -EPROTO;
        *ret = acked;
        return 0;
}

typedef struct Fill {
        Vm *vms;
        size_t n;
} Fill;

/* ListVMs fills in every VM's TAP and address ("d<i>" is vms[i]). */
static int vm_info(const BusVm *v, void *userdata) {
        Fill *f = userdata;
        char *end;
        unsigned long i = strtoul(v->name + 1, &end, 10);
        if (v->name[0] != 'd' || *end || i >= f->n)
                return 0;
        snprintf(f->vms[i].tap, sizeof(f->vms[i].tap), "%s", v->tap ? v->tap : "");
        snprintf(f->vms[i].ip, sizeof(f->vms[i].ip), "%s", v->ip ? v->ip : "");
        return 0;
}

static int fill(sd_bus *bus, Vm *vms, size_t n) {
        Fill f = { vms, n };
        return bus_list(bus, vm_info, &f, NULL, NULL, NULL);
}

static int start_vm(sd_bus *bus, BenchAgent *ag, Vm *vm, size_t i, double *ret_started) {
        snprintf(vm->name, sizeof(vm->name), "d%zu", i);
        int r = bus_create_start(bus, ag->kernel, vm->name, "local", NULL, 0, &vm->id, NULL, NULL);
        if (r < 0)
                return r;
        if (ret_started)
                *ret_started = now();
        vm->mac[0] = 0x02;
        for (int k = 1; k < 6; k++)
                vm->mac[k] = (uint8_t) (vm->id >> (8 * (5 - k)));
        return 0;
}

/* The time the process has run on a CPU, in ns (/proc/PID/schedstat): finer than the ticks of stat. */
static uint64_t cpu_ns(pid_t pid) {
        char path[64];
        unsigned long long ns = 0;
        snprintf(path, sizeof(path), "/proc/%d/schedstat", (int) pid);
        FILE *f = fopen(path, "re");
        if (f) {
                if (fscanf(f, "%llu", &ns) != 1)
                        ns = 0;
                fclose(f);
        }
        return ns;
}

static uint32_t ip_of(const char *s) {
        unsigned a, b, c, d;
        return sscanf(s, "%u.%u.%u.%u", &a, &b, &c, &d) == 4 ? a << 24 | b << 16 | c << 8 | d : 0;
}

/* TAP up to ACK for one VM just started: the guest link appears (fake-vmm makes it), then a lease. */
static int late_lease(const Vm *vm, double started, double *ret) {
        int ifindex = 0;
        for (double end = started + 10; (ifindex = (int) if_nametoindex(vm->tap)) == 0;) {
                if (now() > end)
                        return -ENODEV;
                usleep(200);
        }
        uint32_t got = 0;
        int r = -ETIMEDOUT;
        /* a client retries its DISCOVER; the first may be sent before the link is up or the relay runs */
        for (unsigned t = 0; t < 2000 && (r == -ETIMEDOUT || r == -ENETDOWN); t++) {
                r = lease(ifindex, vm->mac, 0x1000 + t, 200, &got);
                if (r == -ENETDOWN)
                        usleep(200);
        }
        if (r < 0)
                return r;
        if (got != ip_of(vm->ip))
                return -EPROTO;
        *ret = now() - started;
        return 0;
}

static int phase_late(sd_bus *bus, BenchAgent *ag, Vm *vms, size_t first, size_t k, const char *label) {
        double *v = calloc(k, sizeof(double));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < k && !interrupted; i++) {
                double started;
                int r = start_vm(bus, ag, &vms[first + i], first + i, &started);
                /* the TAP's name and the address from the agent, before the clock is read again: a ListVMs
                 * at N VMs takes milliseconds, so it is taken out of the figure */
                double t = now();
                if (r >= 0)
                        r = fill(bus, vms, first + i + 1);
                started += now() - t;
                if (r >= 0)
                        r = late_lease(&vms[first + i], started, &v[i]);
                if (r < 0) {
                        free(v);
                        return bench_error(r, "a late VM's first lease");
                }
        }
        Stats s = stats_of(v, k);
        say("TAP up to ACK, %s: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%zu VMs)", label, s.p50 * 1e3,
            s.p99 * 1e3, s.max * 1e3, k);
        free(v);
        return 0;
}

int main(int argc, char **argv) {
        Options o = { .vms = 1000, .leases = 2000, .late = 20 };
        BenchAgent ag = {};
        sd_bus *bus = NULL;
        Vm *vms = NULL;
        int r = 0;

        bench_name = "bench/dhcp";
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--quick") == 0) {
                        o.vms = 50, o.leases = 200, o.late = 5;
                } else if (strcmp(argv[i], "--keep") == 0) {
                        o.keep = true;
                } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        usage(stdout);
                        return 0;
                } else if (i + 1 < argc &&
                           (strcmp(argv[i], "--vms") == 0 || strcmp(argv[i], "--leases") == 0 ||
                            strcmp(argv[i], "--late") == 0)) {
                        size_t *v = argv[i][2] == 'v' ? &o.vms : argv[i][3] == 'e' ? &o.leases : &o.late;
                        char *end;
                        unsigned long x = strtoul(argv[++i], &end, 10);
                        if (*end || x == 0 || x > 1000000) {
                                usage(stderr);
                                return 2;
                        }
                        *v = x;
                } else {
                        usage(stderr);
                        return 2;
                }
        }
        if (o.vms + o.late > N_MAX + 23 || o.vms < o.late) {
                fprintf(stderr,
                        "bench/dhcp: --vms + --late must fit one bridge (1023 ports), --late <= --vms\n");
                return 2;
        }
        if (geteuid() != 0) {
                printf("SKIP: bench/dhcp needs root: it runs chvm-agentd in network namespaces of its own\n");
                return 0;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        bench_catch_signals();
        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);

        /* The guests' namespace, named so that fake-vmm can find it, then our own for the host. */
        snprintf(guest_ns, sizeof(guest_ns), "chvm-bench-dhcp-%d", (int) getpid());
        snprintf(guest_ns_path, sizeof(guest_ns_path), "/run/netns/%s", guest_ns);
        char *add[] = { (char *) "ip", (char *) "netns", (char *) "add", guest_ns, NULL };
        if (run(add, NULL) != 0) {
                printf("SKIP: bench/dhcp cannot make a network namespace (ip netns add)\n");
                return 0;
        }
        guest_ns_fd = open(guest_ns_path, O_RDONLY | O_CLOEXEC);
        if (guest_ns_fd < 0 || unshare(CLONE_NEWNET) < 0) {
                r = bench_error(-errno, "the namespaces");
                goto finish;
        }
        char *lo[] = { (char *) "ip", (char *) "link", (char *) "set", (char *) "lo", (char *) "up", NULL };
        (void) run(lo, NULL);
        (void) write_file("/proc/sys/net/unix/max_dgram_qlen", "4096\n");
        setenv("FAKE_VMM_GUEST_NETNS", guest_ns_path, 1);
        setenv("FAKE_VMM_GUEST_IFNAME", "@tap", 1);

        vms = calloc(o.vms + o.late * 2, sizeof(Vm));
        if (!vms) {
                r = -ENOMEM;
                goto finish;
        }
        r = bench_agent_setup(&ag, "dhcp", "local",
                              "[local]\nsubnet = 10.200.0.0/16\ndns = 10.0.0.53\nlease_time = 600\n");
        if (r >= 0)
                r = agent_start(&ag, NULL);
        if (r >= 0)
                r = bus_open(ag.socket, &bus);
        if (r >= 0 && setns(guest_ns_fd, CLONE_NEWNET) < 0)
                r = -errno;
        if (r >= 0)
                r = client_open();
        if (r < 0) {
                bench_error(r, "starting the agent");
                goto finish;
        }

        /* the first K at 0 running, then up to N */
        r = phase_late(bus, &ag, vms, 0, o.late, "at 0 VMs running");
        if (r < 0)
                goto finish;
        say("bringing up %zu VMs", o.vms);
        for (size_t i = o.late; i < o.vms && !interrupted; i++) {
                r = start_vm(bus, &ag, &vms[i], i, NULL);
                if (r < 0) {
                        bench_error(r, "bring-up");
                        goto finish;
                }
        }
        r = fill(bus, vms, o.vms);
        if (r < 0) {
                bench_error(r, "ListVMs");
                goto finish;
        }

        /* 1. one VM, leases one after another */
        to_server_mac = true;
        {
                int ifindex = (int) if_nametoindex(vms[0].tap);
                double *lat = calloc(o.leases, sizeof(double));
                uint64_t c0 = cpu_ns(ag.pid);
                double t0 = now();
                size_t done = 0;
                for (; lat && done < o.leases && !interrupted; done++) {
                        uint32_t got;
                        double t = now();
                        r = lease(ifindex, vms[0].mac, (uint32_t) done + 1, 2000, &got);
                        if (r < 0) {
                                bench_error(r, "a lease");
                                break;
                        }
                        lat[done] = now() - t;
                }
                double dt = now() - t0;
                uint64_t c1 = cpu_ns(ag.pid);
                if (r < 0 || !lat) {
                        free(lat);
                        r = r < 0 ? r : -ENOMEM;
                        goto finish;
                }
                Stats s = stats_of(lat, done);
                say("one VM at %zu running: %zu leases (DISCOVER..ACK) in %.2f s: %.0f leases/s, %.0f round "
                    "trips/s; lease p50 %.3f ms, p99 %.3f ms; agent CPU %.1f us per lease",
                    o.vms, done, dt, done / dt, 2 * done / dt, s.p50 * 1e3, s.p99 * 1e3,
                    (double) (c1 - c0) / 1e3 / done);
                free(lat);
        }

        /* 2. one lease for every VM: the lookup among N */
        {
                uint64_t c0 = cpu_ns(ag.pid);
                double t0 = now();
                for (size_t i = 0; i < o.vms && !interrupted; i++) {
                        int ifindex = (int) if_nametoindex(vms[i].tap);
                        uint32_t got = 0;
                        r = ifindex == 0
                                    ? -ENODEV
                                    : lease(ifindex, vms[i].mac, 0x77000000U + (uint32_t) i, 2000, &got);
                        if (r >= 0 && got != ip_of(vms[i].ip))
                                r = -EPROTO;
                        if (r < 0) {
                                bench_error(r, "a lease of every VM");
                                goto finish;
                        }
                }
                double dt = now() - t0;
                uint64_t c1 = cpu_ns(ag.pid);
                say("every VM once (%zu leases, each the VM's own address): %.2f s, %.0f leases/s, agent CPU "
                    "%.1f us per lease, RSS %ld KiB",
                    o.vms, dt, o.vms / dt, (double) (c1 - c0) / 1e3 / o.vms, proc_info(ag.pid).rss_kib);
        }

        /* 3. TAP up to ACK with N running */
        to_server_mac = false;
        r = phase_late(bus, &ag, vms, o.vms, o.late, "at N VMs running");
        if (r >= 0) {
                char load[64];
                read_loadavg(load);
                say("load average at the end: %s", load);
        }

finish:
        if (r < 0)
                bench_agent_show_log(&ag, o.keep);
        sd_bus_flush_close_unref(bus);
        if (ag.pid > 0)
                agent_stop(&ag);
        if (ag.dir[0])
                bench_agent_cleanup(&ag, o.keep);
        if (client_fd >= 0)
                close(client_fd);
        if (guest_ns_fd >= 0)
                close(guest_ns_fd);
        char *del[] = { (char *) "ip", (char *) "netns", (char *) "del", guest_ns, NULL };
        if (guest_ns[0])
                (void) run(del, NULL);
        free(vms);
        return r < 0 ? 1 : 0;
}
