/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include "backends/dhcp/dhcp4.h"

#include <errno.h>
#include <string.h>

#include "util/macro.h"
#include "util/string-table.h"

/* BOOTP fixed part (RFC 2131 figure 1), then the magic cookie. */
#define BOOTP_OP 0
#define BOOTP_HTYPE 1
#define BOOTP_HLEN 2
#define BOOTP_XID 4
#define BOOTP_FLAGS 10
#define BOOTP_CIADDR 12
#define BOOTP_YIADDR 16
#define BOOTP_SIADDR 20
#define BOOTP_GIADDR 24
#define BOOTP_CHADDR 28
#define BOOTP_SNAME 44
#define BOOTP_FILE 108
#define BOOTP_COOKIE 236
#define BOOTP_OPTIONS 240
#define BOOTP_MIN 300 /* what BOOTP relays and old clients expect of a reply */
#define BOOTREQUEST 1
#define BOOTREPLY 2
#define DHCP_COOKIE 0x63825363U
#define FLAG_BROADCAST 0x8000U
#define IP_HDR 20
#define UDP_HDR 8

enum {
        OPT_PAD = 0,
        OPT_SUBNET_MASK = 1,
        OPT_ROUTER = 3,
        OPT_DNS = 6,
        OPT_HOSTNAME = 12,
        OPT_DOMAIN = 15,
        OPT_MTU = 26,
        OPT_REQUESTED_IP = 50,
        OPT_LEASE_TIME = 51,
        OPT_OVERLOAD = 52,
        OPT_MESSAGE_TYPE = 53,
        OPT_SERVER_ID = 54,
        OPT_MESSAGE = 56,
        OPT_RENEWAL = 58,
        OPT_REBINDING = 59,
        OPT_CLIENT_ID = 61,
        OPT_CLASSLESS_ROUTES = 121,
        OPT_END = 255,
};

static const char *const type_table[_DHCP4_TYPE_MAX] = {
        [DHCP4_DISCOVER] = "DISCOVER", [DHCP4_OFFER] = "OFFER",   [DHCP4_REQUEST] = "REQUEST",
        [DHCP4_DECLINE] = "DECLINE",   [DHCP4_ACK] = "ACK",       [DHCP4_NAK] = "NAK",
        [DHCP4_RELEASE] = "RELEASE",   [DHCP4_INFORM] = "INFORM",
};

DEFINE_STRING_TABLE_TO(dhcp4_type, Dhcp4Type, type_table, _DHCP4_TYPE_MAX)

static uint16_t get16(const uint8_t *p) {
        return (uint16_t) (p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) (v >> 8);
        p[1] = (uint8_t) v;
}

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}

/* Walks one options area. Bit 0 of *overload / bit 1: `file` / `sname` carry options too (option 52 in the
 * main area). Unknown options are skipped; the ones we read must have their length. */
static int parse_options(const uint8_t *p, size_t len, bool main_area, Dhcp4Message *m, uint8_t *overload) {
        size_t i = 0;

        while (i < len) {
                uint8_t code = p[i++];
                if (code == OPT_PAD)
                        continue;
                if (code == OPT_END)
                        return 0;
                if (i >= len)
                        return -EBADMSG;
                uint8_t l = p[i++];
                if (l > len - i)
                        return -EBADMSG;
                const uint8_t *v = p + i;
                i += l;
                switch (code) {
                case OPT_MESSAGE_TYPE:
                        if (l != 1)
                                return -EBADMSG;
                        m->type =
                                v[0] > 0 && v[0] < _DHCP4_TYPE_MAX ? (Dhcp4Type) v[0] : _DHCP4_TYPE_INVALID;
                        break;
                case OPT_REQUESTED_IP:
                        if (l != 4)
                                return -EBADMSG;
                        m->requested_ip = get32(v);
                        break;
                case OPT_SERVER_ID:
                        if (l != 4)
                                return -EBADMSG;
                        m->server_id = get32(v);
                        break;
                case OPT_HOSTNAME: {
                        size_t n = l < DHCP4_HOSTNAME_MAX ? l : DHCP4_HOSTNAME_MAX;
                        bool printable = true;
                        for (size_t k = 0; k < n; k++)
                                printable = printable && v[k] > 0x20 && v[k] < 0x7f;
                        if (printable) {
                                memcpy(m->hostname, v, n);
                                m->hostname[n] = '\0';
                        }
                        break;
                }
                case OPT_CLIENT_ID:
                        m->has_client_id = l > 0;
                        break;
                case OPT_OVERLOAD:
                        if (l != 1 || v[0] < 1 || v[0] > 3)
                                return -EBADMSG;
                        if (main_area) /* only the main area may say so (RFC 2131 section 4.1) */
                                *overload = v[0];
                        break;
                default:
                        break;
                }
        }
        /* No END: RFC 2131 asks for it, and a message that lacks it was cut. */
        return -EBADMSG;
}

static uint32_t checksum_add(uint32_t sum, const uint8_t *p, size_t len) {
        for (size_t i = 0; i + 1 < len; i += 2)
                sum += get16(p + i);
        if (len & 1)
                sum += (uint32_t) p[len - 1] << 8;
        return sum;
}

static uint16_t checksum_fold(uint32_t sum) {
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return (uint16_t) ~sum;
}

int dhcp4_parse(const uint8_t *pkt, size_t len, Dhcp4Message *ret) {
        Dhcp4Message m = { .type = _DHCP4_TYPE_INVALID };
        uint8_t overload = 0;
        int r;

        if (!pkt || len < IP_HDR)
                return -EBADMSG;
        size_t ihl = (size_t) (pkt[0] & 0x0f) * 4;
        if (pkt[0] >> 4 != 4 || ihl < IP_HDR || ihl > len)
                return -EBADMSG;
        size_t total = get16(pkt + 2);
        if (total < ihl || total > len)
                return -EBADMSG;
        if (checksum_fold(checksum_add(0, pkt, ihl)) != 0)
                return -EBADMSG;
        if (pkt[9] != 17 /* UDP */ || (get16(pkt + 6) & 0x3fff) != 0 /* MF or an offset: a fragment */)
                return -EPROTO;
        m.src = get32(pkt + 12);
        m.dst = get32(pkt + 16);

        const uint8_t *udp = pkt + ihl;
        size_t udp_space = total - ihl;
        if (udp_space < UDP_HDR)
                return -EBADMSG;
        if (get16(udp + 2) != DHCP4_SERVER_PORT)
                return -EPROTO;
        size_t udp_len = get16(udp + 4);
        if (udp_len < UDP_HDR || udp_len > udp_space)
                return -EBADMSG;
        if (get16(udp + 6) != 0) { /* 0: no checksum, allowed over IPv4 */
                uint32_t sum = checksum_add(0, pkt + 12, 8);
                sum += 17 + (uint32_t) udp_len;
                if (checksum_fold(checksum_add(sum, udp, udp_len)) != 0)
                        return -EBADMSG;
        }

        const uint8_t *b = udp + UDP_HDR;
        size_t n = udp_len - UDP_HDR;
        if (n < BOOTP_OPTIONS)
                return n >= BOOTP_COOKIE ? -EPROTO : -EBADMSG; /* BOOTP without options is no DHCP */
        if (b[BOOTP_OP] != BOOTREQUEST || get32(b + BOOTP_COOKIE) != DHCP_COOKIE)
                return -EPROTO;
        if (b[BOOTP_HTYPE] != 1 || b[BOOTP_HLEN] != 6)
                return -EBADMSG;
        m.xid = get32(b + BOOTP_XID);
        m.flags = get16(b + BOOTP_FLAGS);
        m.ciaddr = get32(b + BOOTP_CIADDR);
        m.giaddr = get32(b + BOOTP_GIADDR);
        memcpy(m.chaddr, b + BOOTP_CHADDR, 6);

        r = parse_options(b + BOOTP_OPTIONS, n - BOOTP_OPTIONS, true, &m, &overload);
        if (r < 0)
                return r;
        if (overload & 1 && (r = parse_options(b + BOOTP_FILE, 128, false, &m, &overload)) < 0)
                return r;
        if (overload & 2 && (r = parse_options(b + BOOTP_SNAME, 64, false, &m, &overload)) < 0)
                return r;
        if (m.type < 0)
                return -EPROTO; /* BOOTP, or a type no client sends */
        if (m.type == DHCP4_OFFER || m.type == DHCP4_ACK || m.type == DHCP4_NAK)
                return -EPROTO; /* a server's message */
        *ret = m;
        return 0;
}

void dhcp4_answer(const Dhcp4Message *m, const Dhcp4Guest *g, const Dhcp4Options *o, Dhcp4Answer *ret) {
        Dhcp4Answer a = {};
        uint32_t want;

        if (m->giaddr != 0) {
                a.why = "relayed (giaddr set): this server answers its own link only";
                goto done;
        }
        if (!g) {
                a.why = "unknown client hardware address";
                goto done;
        }
        switch (m->type) {
        case DHCP4_DISCOVER:
                a.type = DHCP4_OFFER;
                a.with_lease = true;
                break;
        case DHCP4_REQUEST:
                if (m->server_id != 0 && m->server_id != o->server_ip) {
                        a.why = "the client chose another server";
                        goto done;
                }
                /* SELECTING and INIT-REBOOT name the address in option 50, RENEWING and REBINDING in
                 * ciaddr (RFC 2131 section 4.3.2). */
                want = m->requested_ip ? m->requested_ip : m->ciaddr;
                if (want == 0) {
                        a.why = "a REQUEST that names no address";
                        goto done;
                }
                if (want != g->address) {
                        a.type = DHCP4_NAK;
                        a.why = "the address asked for is not this client's";
                        break;
                }
                a.type = DHCP4_ACK;
                a.with_lease = true;
                break;
        case DHCP4_INFORM:
                a.type = DHCP4_ACK;
                break;
        default: /* DECLINE and RELEASE are only noted */
                a.why = "no answer is due";
                goto done;
        }

        if (a.with_lease)
                a.yiaddr = g->address;
        /* RFC 2131 section 4.1: a NAK is broadcast; with ciaddr set (renewing, rebinding, inform) the reply
         * is unicast to it; else broadcast if the client asks, unicast to yiaddr at chaddr otherwise. */
        if (a.type == DHCP4_NAK) {
                a.dst_ip = 0xffffffffU;
                a.broadcast = true;
        } else if (m->ciaddr != 0) {
                a.dst_ip = m->ciaddr;
        } else if (m->flags & FLAG_BROADCAST) {
                a.dst_ip = 0xffffffffU;
                a.broadcast = true;
        } else {
                a.dst_ip = a.yiaddr;
        }
        (void) o;
done:
        *ret = a;
}

typedef struct Writer {
        uint8_t *p;
        size_t n, size;
        bool full;
} Writer;

static void opt(Writer *w, uint8_t code, const void *v, size_t len) {
        if (len > 255 || w->n + 2 + len + 1 > w->size) { /* + 1: room for END */
                w->full = true;
                return;
        }
        w->p[w->n++] = code;
        w->p[w->n++] = (uint8_t) len;
        memcpy(w->p + w->n, v, len);
        w->n += len;
}

static void opt32(Writer *w, uint8_t code, uint32_t v) {
        uint8_t b[4];
        put32(b, v);
        opt(w, code, b, 4);
}

static uint32_t mask_of(uint8_t prefixlen) {
        return prefixlen == 0 ? 0 : 0xffffffffU << (32 - prefixlen);
}

int dhcp4_build_reply(const Dhcp4Message *m, const Dhcp4Answer *a, const Dhcp4Guest *g,
                      const Dhcp4Options *o, uint8_t *buf, size_t size) {
        if (size < DHCP4_PACKET_MAX || a->type == 0)
                return -ENOBUFS;
        memset(buf, 0, DHCP4_PACKET_MAX);
        uint8_t *b = buf + IP_HDR + UDP_HDR;
        Writer w = { .p = b + BOOTP_OPTIONS, .size = DHCP4_PACKET_MAX - IP_HDR - UDP_HDR - BOOTP_OPTIONS };

        b[BOOTP_OP] = BOOTREPLY;
        b[BOOTP_HTYPE] = 1;
        b[BOOTP_HLEN] = 6;
        put32(b + BOOTP_XID, m->xid);
        put16(b + BOOTP_FLAGS, m->flags & FLAG_BROADCAST);
        if (a->type == DHCP4_ACK && !a->with_lease)
                put32(b + BOOTP_CIADDR, m->ciaddr); /* INFORM: the client's own */
        put32(b + BOOTP_YIADDR, a->yiaddr);
        memcpy(b + BOOTP_CHADDR, m->chaddr, 6);
        put32(b + BOOTP_COOKIE, DHCP_COOKIE);

        uint8_t type = (uint8_t) a->type;
        opt(&w, OPT_MESSAGE_TYPE, &type, 1);
        opt32(&w, OPT_SERVER_ID, o->server_ip);
        if (a->type == DHCP4_NAK) {
                if (a->why)
                        opt(&w, OPT_MESSAGE, a->why, strlen(a->why));
        } else {
                if (a->with_lease) {
                        opt32(&w, OPT_LEASE_TIME, o->lease_time);
                        opt32(&w, OPT_RENEWAL, o->lease_time / 2);
                        opt32(&w, OPT_REBINDING, (uint32_t) ((uint64_t) o->lease_time * 7 / 8));
                }
                opt32(&w, OPT_SUBNET_MASK, mask_of(o->prefixlen));
                /* RFC 3442: a client that gets 121 ignores 3, so the default route goes in 121 as well. */
                if (o->n_routes > 0) {
                        uint8_t v[DHCP4_ROUTES_MAX * 9 + 9];
                        size_t n = 0;
                        for (size_t i = 0; i <= o->n_routes && i <= DHCP4_ROUTES_MAX; i++) {
                                const Dhcp4Route *rt = i < o->n_routes ? &o->routes[i] : NULL;
                                if (!rt && !o->router)
                                        break;
                                uint8_t pl = rt ? rt->prefixlen : 0;
                                uint32_t dest = rt ? rt->dest : 0, gw = rt ? rt->gateway : o->router;
                                if (pl > 32)
                                        continue;
                                v[n++] = pl;
                                for (unsigned k = 0; k < (pl + 7u) / 8; k++)
                                        v[n++] = (uint8_t) (dest >> (24 - 8 * k));
                                put32(v + n, gw);
                                n += 4;
                        }
                        opt(&w, OPT_CLASSLESS_ROUTES, v, n);
                }
                if (o->router)
                        opt32(&w, OPT_ROUTER, o->router);
                if (o->n_dns > 0) {
                        uint8_t v[DHCP4_DNS_MAX * 4];
                        size_t n = o->n_dns < DHCP4_DNS_MAX ? o->n_dns : DHCP4_DNS_MAX;
                        for (size_t i = 0; i < n; i++)
                                put32(v + 4 * i, o->dns[i]);
                        opt(&w, OPT_DNS, v, 4 * n);
                }
                if (g && g->hostname && g->hostname[0])
                        opt(&w, OPT_HOSTNAME, g->hostname, strlen(g->hostname));
                if (o->domain && o->domain[0])
                        opt(&w, OPT_DOMAIN, o->domain, strlen(o->domain));
                if (o->mtu) {
                        uint8_t v[2];
                        put16(v, o->mtu);
                        opt(&w, OPT_MTU, v, 2);
                }
        }
        if (w.full)
                return -ENOBUFS;
        w.p[w.n++] = OPT_END;

        size_t bootp = BOOTP_OPTIONS + w.n;
        if (bootp < BOOTP_MIN)
                bootp = BOOTP_MIN;
        size_t udp_len = UDP_HDR + bootp, total = IP_HDR + udp_len;

        uint8_t *ip = buf, *udp = buf + IP_HDR;
        ip[0] = 0x45;
        ip[1] = 0x10; /* low delay, as other DHCP servers send */
        put16(ip + 2, (uint16_t) total);
        ip[8] = 64;
        ip[9] = 17;
        put32(ip + 12, o->server_ip);
        put32(ip + 16, a->dst_ip);
        put16(ip + 10, checksum_fold(checksum_add(0, ip, IP_HDR)));

        put16(udp, DHCP4_SERVER_PORT);
        put16(udp + 2, DHCP4_CLIENT_PORT);
        put16(udp + 4, (uint16_t) udp_len);
        uint32_t sum = checksum_add(0, ip + 12, 8) + 17 + (uint32_t) udp_len;
        uint16_t c = checksum_fold(checksum_add(sum, udp, udp_len));
        put16(udp + 6, c == 0 ? 0xffff : c);
        return (int) total;
}
