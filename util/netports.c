/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/macro.h"
#include "util/netports.h"

#define TCP_LISTEN 0x0a /* the kernel's TCP_LISTEN, as /proc/net/tcp shows st */
#define UDP_UNCONNECTED 0x07 /* TCP_CLOSE: a bound UDP socket that has no peer */

static int hex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* Reads hex digits up to `end` (a char not a hex digit) into *ret; the pointer past them, or NULL. */
static const char *read_hex(const char *p, const char *limit, unsigned max_digits, uint32_t *ret) {
        uint32_t v = 0;
        unsigned n = 0;
        while (p < limit && hex(*p) >= 0) {
                if (++n > max_digits)
                        return NULL;
                v = (v << 4) | (uint32_t) hex(*p++);
        }
        if (n == 0)
                return NULL;
        *ret = v;
        return p;
}

static const char *skip_spaces(const char *p, const char *limit) {
        while (p < limit && *p == ' ')
                p++;
        return p;
}

/* "  sl  local_address rem_address   st ...": "   0: 0100007F:0277 00000000:0000 0A ..." */
static int parse_line(ListeningPorts *lp, bool tcp, const char *p, const char *limit) {
        uint32_t v, port, state;
        p = skip_spaces(p, limit);
        p = read_hex(p, limit, 8, &v); /* the slot, in decimal, which hex digits cover */
        if (!p || p >= limit || *p++ != ':')
                return -EINVAL;
        p = skip_spaces(p, limit);
        const char *addr = p;
        while (p < limit && hex(*p) >= 0)
                p++;
        if ((p - addr != 8 && p - addr != 32) || p >= limit || *p++ != ':')
                return -EINVAL;
        p = read_hex(p, limit, 4, &port);
        if (!p || p >= limit || *p != ' ')
                return -EINVAL;
        p = skip_spaces(p, limit);
        addr = p;
        while (p < limit && hex(*p) >= 0)
                p++;
        if ((p - addr != 8 && p - addr != 32) || p >= limit || *p++ != ':')
                return -EINVAL;
        p = read_hex(p, limit, 4, &v);
        if (!p || p >= limit || *p != ' ')
                return -EINVAL;
        p = read_hex(skip_spaces(p, limit), limit, 2, &state);
        if (!p)
                return -EINVAL;
        if (port != 0 && state == (tcp ? TCP_LISTEN : UDP_UNCONNECTED)) {
                uint8_t *map = tcp ? lp->tcp : lp->udp;
                map[port / 8] |= (uint8_t) (1u << (port % 8));
        }
        return 0;
}

int listening_ports_parse(ListeningPorts *lp, bool tcp, const char *text, size_t size) {
        const char *p = text, *end = text + size;
        bool header = true;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *limit = nl ? nl : end;
                if (!header && limit > p) {
                        int r = parse_line(lp, tcp, p, limit);
                        if (r < 0)
                                return r;
                }
                header = false;
                p = nl ? nl + 1 : end;
        }
        return 0;
}

static int read_file(ListeningPorts *lp, bool tcp, const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? 0 : negative_errno();
        size_t size = 0, allocated = 0;
        _cleanup_free_ char *buf = NULL;
        for (;;) {
                if (allocated - size < 65536) {
                        char *n = realloc(buf, allocated + 262144);
                        if (!n)
                                return -ENOMEM;
                        buf = n;
                        allocated += 262144;
                }
                ssize_t k = read(fd, buf + size, allocated - size);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                if (k == 0)
                        break;
                size += (size_t) k;
        }
        return listening_ports_parse(lp, tcp, buf ? buf : "", size);
}

int listening_ports_read_proc(ListeningPorts *ret) {
        static const struct {
                const char *path;
                bool tcp;
        } files[] = {
                { "/proc/self/net/tcp", true },
                { "/proc/self/net/tcp6", true },
                { "/proc/self/net/udp", false },
                { "/proc/self/net/udp6", false },
        };
        memset(ret, 0, sizeof(*ret));
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                int r = read_file(ret, files[i].tcp, files[i].path);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* One inet_diag dump (family, protocol, the socket states asked for) into *lp. */
static int diag_dump(struct mnl_socket *nl, uint8_t family, uint8_t protocol, uint32_t states,
                     ListeningPorts *lp) {
        char buf[16384];
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        nlh->nlmsg_seq = 1;
        struct inet_diag_req_v2 *req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
        req->sdiag_family = family;
        req->sdiag_protocol = protocol;
        req->idiag_states = states;
        if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
                return negative_errno();
        uint8_t *map = protocol == IPPROTO_TCP ? lp->tcp : lp->udp;
        for (;;) {
                ssize_t k = mnl_socket_recvfrom(nl, buf, sizeof(buf));
                if (k < 0 && errno == EINTR)
                        continue; /* the rest of the dump is still queued */
                if (k < 0)
                        return negative_errno();
                int n = (int) k;
                for (const struct nlmsghdr *m = (const struct nlmsghdr *) buf; mnl_nlmsg_ok(m, n);
                     m = mnl_nlmsg_next(m, &n)) {
                        if (m->nlmsg_type == NLMSG_DONE)
                                return 0;
                        if (m->nlmsg_type == NLMSG_ERROR) {
                                const struct nlmsgerr *e = mnl_nlmsg_get_payload(m);
                                return e->error ? e->error : 0;
                        }
                        if (m->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
                            mnl_nlmsg_get_payload_len(m) < sizeof(struct inet_diag_msg))
                                continue;
                        const struct inet_diag_msg *d = mnl_nlmsg_get_payload(m);
                        uint16_t port = ntohs(d->id.idiag_sport);
                        if (port != 0)
                                map[port / 8] |= (uint8_t) (1u << (port % 8));
                }
        }
}

/* sock_diag: the kernel walks its listening (and UDP) tables only. /proc/net/tcp walks every bucket of the
 * established hash as well, which took 4.7 ms per read on an idle 6.18 kernel (bench/vmm: 10% of the
 * agent's CPU during a bring-up of VMs with forwards); these four dumps take 0.06 ms. */
int listening_ports_read_diag(ListeningPorts *ret) {
        static const struct {
                uint8_t family, protocol;
                uint32_t states;
        } dumps[] = {
                { AF_INET, IPPROTO_TCP, 1u << TCP_LISTEN },
                { AF_INET6, IPPROTO_TCP, 1u << TCP_LISTEN },
                { AF_INET, IPPROTO_UDP, 1u << UDP_UNCONNECTED },
                { AF_INET6, IPPROTO_UDP, 1u << UDP_UNCONNECTED },
        };
        struct mnl_socket *nl = mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC);
        if (!nl || mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
                int r = negative_errno();
                if (nl)
                        mnl_socket_close(nl);
                return r;
        }
        memset(ret, 0, sizeof(*ret));
        int r = 0;
        for (size_t i = 0; i < ELEMENTSOF(dumps) && r >= 0; i++) {
                r = diag_dump(nl, dumps[i].family, dumps[i].protocol, dumps[i].states, ret);
                if (r == -EAFNOSUPPORT && dumps[i].family == AF_INET6)
                        r = 0; /* no IPv6 in this kernel: no IPv6 sockets */
        }
        mnl_socket_close(nl);
        return r;
}

int listening_ports_read(ListeningPorts *ret) {
        int r = listening_ports_read_diag(ret);
        /* a kernel without inet_diag (or udp_diag) answers ENOENT or refuses the socket: the files then */
        if (r == -ENOENT || r == -EOPNOTSUPP || r == -EPROTONOSUPPORT || r == -EAFNOSUPPORT)
                return listening_ports_read_proc(ret);
        return r;
}

bool listening_ports_has(const ListeningPorts *lp, uint8_t proto, uint16_t port) {
        const uint8_t *map = proto == IPPROTO_UDP ? lp->udp : lp->tcp;
        return map[port / 8] & (1u << (port % 8));
}
