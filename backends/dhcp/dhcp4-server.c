/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "backends/dhcp/dhcp4-server.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "util/macro.h"

#define PACKETS_PER_WAKEUP 64 /* then back to the loop: a flood cannot starve the agent's other work */
#define IGNORED_REPORT_INTERVAL_NS (UINT64_C(10) * 1000000000)
#define RCVBUF_BYTES (256 * 1024)

struct Dhcp4Server {
        Dhcp4ServerConfig cfg;
        char *domain;
        int packet_fd, udp_fd;
        sd_event_source *packet_source, *udp_source;
        bool dead;
        Dhcp4ServerStats stats;
        uint64_t ignored_reported_at;
        unsigned ignored_suppressed;
};

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}

static void emit(Dhcp4Server *s, Dhcp4Event *ev) {
        if (ev->kind == DHCP4_EVENT_IGNORED) {
                uint64_t now = now_ns();
                if (s->ignored_reported_at && now - s->ignored_reported_at < IGNORED_REPORT_INTERVAL_NS) {
                        s->ignored_suppressed++;
                        return;
                }
                s->ignored_reported_at = now;
                ev->suppressed = s->ignored_suppressed;
                s->ignored_suppressed = 0;
        }
        if (s->cfg.event)
                s->cfg.event(s->cfg.userdata, ev);
}

static void ignored(Dhcp4Server *s, const uint8_t *mac, const char *why) {
        s->stats.ignored++;
        emit(s, &(Dhcp4Event){ .kind = DHCP4_EVENT_IGNORED, .mac = mac, .why = why, .client_hostname = "" });
}

int dhcp4_server_handle(Dhcp4Server *s, const uint8_t src_mac[6], const uint8_t *pkt, size_t len,
                        uint8_t *reply, uint8_t ret_dst_mac[6]) {
        Dhcp4Message m;
        Dhcp4Lookup found;
        Dhcp4Answer a;
        int r;

        s->stats.received++;
        r = dhcp4_parse(pkt, len, &m);
        if (r == -EPROTO)
                return 0; /* not for a DHCP server (the socket's filter lets through a little more) */
        if (r < 0) {
                s->stats.malformed++;
                ignored(s, src_mac, "malformed or truncated DHCP message");
                return 0;
        }
        if (memcmp(m.chaddr, src_mac, 6) != 0) {
                ignored(s, src_mac, "chaddr is not the frame's source address");
                return 0;
        }
        bool known = s->cfg.lookup && s->cfg.lookup(s->cfg.userdata, m.chaddr, &found) >= 0;
        Dhcp4Guest g = { .address = known ? found.address : 0, .hostname = known ? found.hostname : NULL };
        uint64_t id = known ? found.id : 0;

        if (known && (m.type == DHCP4_RELEASE || m.type == DHCP4_DECLINE)) {
                emit(s, &(Dhcp4Event){ .kind = m.type == DHCP4_RELEASE ? DHCP4_EVENT_RELEASE
                                                                       : DHCP4_EVENT_DECLINE,
                                       .mac = src_mac,
                                       .address = m.type == DHCP4_RELEASE ? m.ciaddr : m.requested_ip,
                                       .client_hostname = m.hostname,
                                       .guest = id });
                return 0;
        }
        dhcp4_answer(&m, known ? &g : NULL, &s->cfg.options, &a);
        if (a.type == 0) {
                ignored(s, src_mac, a.why);
                return 0;
        }
        r = dhcp4_build_reply(&m, &a, &g, &s->cfg.options, reply, DHCP4_PACKET_MAX);
        if (r < 0) {
                ignored(s, src_mac, "the reply's options do not fit in 576 bytes");
                return 0;
        }
        s->stats.answered++;
        if (a.broadcast)
                memset(ret_dst_mac, 0xff, 6);
        else
                memcpy(ret_dst_mac, m.chaddr, 6);
        Dhcp4EventKind kind = a.type == DHCP4_OFFER ? DHCP4_EVENT_OFFER
                              : a.type == DHCP4_NAK ? DHCP4_EVENT_NAK
                              : a.with_lease        ? DHCP4_EVENT_ACK
                                                    : DHCP4_EVENT_INFORM;
        emit(s, &(Dhcp4Event){ .kind = kind,
                               .mac = src_mac,
                               .address = a.type == DHCP4_NAK ? (m.requested_ip ? m.requested_ip : m.ciaddr)
                                                              : g.address,
                               .client_hostname = m.hostname,
                               .why = a.type == DHCP4_NAK ? a.why : NULL,
                               .guest = id });
        return r;
}

static void mark_dead(Dhcp4Server *s) {
        s->dead = true;
        s->packet_source = sd_event_source_disable_unref(s->packet_source);
        s->udp_source = sd_event_source_disable_unref(s->udp_source);
}

static int on_packet(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        Dhcp4Server *s = userdata;
        uint8_t buf[2048], reply[DHCP4_PACKET_MAX];
        (void) es;

        if (revents & (EPOLLERR | EPOLLHUP)) {
                mark_dead(s); /* the link went away: the backend makes a new server on the next one */
                return 0;
        }
        for (unsigned i = 0; i < PACKETS_PER_WAKEUP; i++) {
                struct sockaddr_ll from = {};
                socklen_t fl = sizeof(from);
                ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC,
                                     (struct sockaddr *) &from, &fl);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        if (errno == ENETDOWN || errno == ENODEV || errno == ENXIO)
                                mark_dead(s);
                        return 0;
                }
                if (from.sll_pkttype == PACKET_OUTGOING || from.sll_halen != 6)
                        continue;
                uint8_t dst[6];
                int len = dhcp4_server_handle(s, from.sll_addr, buf,
                                              (size_t) n > sizeof(buf) ? 0 : (size_t) n, reply, dst);
                if (len <= 0)
                        continue;
                struct sockaddr_ll to = {
                        .sll_family = AF_PACKET,
                        .sll_protocol = htons(ETH_P_IP),
                        .sll_ifindex = (int) s->cfg.ifindex,
                        .sll_halen = 6,
                };
                memcpy(to.sll_addr, dst, 6);
                (void) sendto(fd, reply, (size_t) len, MSG_DONTWAIT, (struct sockaddr *) &to, sizeof(to));
        }
        return 0;
}

/* The UDP socket on port 67 only keeps the kernel from answering unicast renewals with port unreachable;
 * the packet socket has already seen them. */
static int on_udp(sd_event_source *es, int fd, uint32_t revents, void *userdata) {
        uint8_t buf[64];
        (void) es;
        (void) revents;
        (void) userdata;
        for (unsigned i = 0;
             i < PACKETS_PER_WAKEUP && recv(fd, buf, sizeof(buf), MSG_DONTWAIT | MSG_TRUNC) >= 0; i++)
                ;
        return 0;
}

/* IPv4, UDP, not a fragment, destination port 67: everything else stays in the kernel. Offsets are from the
 * network header (SOCK_DGRAM). */
static int attach_filter(int fd) {
        static struct sock_filter code[] = {
                BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9), /* protocol */
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 17, 0, 6),
                BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 6), /* flags + fragment offset */
                BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 4, 0),
                BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0), /* X = header length */
                BPF_STMT(BPF_LD | BPF_H | BPF_IND, 2), /* UDP destination port */
                BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, DHCP4_SERVER_PORT, 0, 1),
                BPF_STMT(BPF_RET | BPF_K, 0xffff),
                BPF_STMT(BPF_RET | BPF_K, 0),
        };
        struct sock_fprog prog = { .len = ELEMENTSOF(code), .filter = code };
        return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0 ? -errno : 0;
}

static int open_packet_socket(uint32_t ifindex) {
        _cleanup_close_ int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        int one = 1, size = RCVBUF_BYTES, r;

        if (fd < 0)
                return -errno;
        /* Protocol 0 until the bind: nothing is queued before the filter is there, and the bind hooks the
         * socket to the one link without the RCU wait that moving an already hooked socket costs. */
        r = attach_filter(fd);
        if (r < 0)
                return r;
        (void) setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
        struct sockaddr_ll sa = { .sll_family = AF_PACKET,
                                  .sll_protocol = htons(ETH_P_IP),
                                  .sll_ifindex = (int) ifindex };
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static int open_udp_socket(uint32_t ifindex) {
        _cleanup_close_ int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        char name[IF_NAMESIZE];
        int one = 1, small = 4096;

        if (fd < 0)
                return -errno;
        if (!if_indextoname(ifindex, name))
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name, (socklen_t) strlen(name)) < 0)
                return -errno;
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(DHCP4_SERVER_PORT) };
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        return TAKE_FD(fd);
}

int dhcp4_server_new(sd_event *event, const Dhcp4ServerConfig *cfg, Dhcp4Server **ret) {
        Dhcp4Server *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->cfg = *cfg;
        s->packet_fd = s->udp_fd = -EBADF;
        if (cfg->options.domain && !(s->domain = strdup(cfg->options.domain))) {
                dhcp4_server_free(s);
                return -ENOMEM;
        }
        s->cfg.options.domain = s->domain;
        if (event) { /* NULL: no sockets, for dhcp4_server_handle() in tests and the fuzzer */
                r = s->packet_fd = open_packet_socket(cfg->ifindex);
                if (r >= 0)
                        r = sd_event_add_io(event, &s->packet_source, s->packet_fd, EPOLLIN, on_packet, s);
                if (r < 0) {
                        dhcp4_server_free(s);
                        return r;
                }
                /* Another DHCP server on the host that holds port 67 on every link (dnsmasq) makes this
                 * fail: then that one keeps the kernel quiet. */
                s->udp_fd = open_udp_socket(cfg->ifindex);
                if (s->udp_fd >= 0)
                        (void) sd_event_add_io(event, &s->udp_source, s->udp_fd, EPOLLIN, on_udp, s);
        }
        *ret = s;
        return 0;
}

Dhcp4Server *dhcp4_server_free(Dhcp4Server *s) {
        if (!s)
                return NULL;
        sd_event_source_disable_unref(s->packet_source);
        sd_event_source_disable_unref(s->udp_source);
        if (s->packet_fd >= 0)
                close(s->packet_fd);
        if (s->udp_fd >= 0)
                close(s->udp_fd);
        free(s->domain);
        free(s);
        return NULL;
}

uint32_t dhcp4_server_ifindex(const Dhcp4Server *s) {
        return s->cfg.ifindex;
}

bool dhcp4_server_alive(const Dhcp4Server *s) {
        return !s->dead;
}

void dhcp4_server_stats(const Dhcp4Server *s, Dhcp4ServerStats *ret) {
        *ret = s->stats;
}
