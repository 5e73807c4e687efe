/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* The DHCPv4 messages (backends/dhcp/dhcp4.c) and the server's decisions (dhcp4_server_handle() without
 * sockets): client messages are built here byte by byte, as RFC 2131 lays them out, and replies are checked
 * by parsing their bytes, not through the code that built them. */

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "backends/dhcp/dhcp4-server.h"
#include "backends/dhcp/dhcp4.h"

#define GW 0xc0a8c801U /* 192.168.200.1 */
#define GUEST 0xc0a8c805U
static const uint8_t MAC[6] = { 0x02, 0x00, 0x00, 0x00, 0x12, 0x34 };
static const uint8_t OTHER[6] = { 0x02, 0x00, 0x00, 0x00, 0x99, 0x99 };

typedef struct Pkt {
        uint8_t b[1500];
        size_t n; /* end of options written so far */
} Pkt;

static void put32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24), p[1] = (uint8_t) (v >> 16), p[2] = (uint8_t) (v >> 8),
        p[3] = (uint8_t) v;
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
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

/* IPv4 at 0, UDP at 20, BOOTP at 28, options at 28 + 240. */
static void msg_begin(Pkt *p, uint8_t type, const uint8_t *chaddr, uint32_t ciaddr, uint16_t flags) {
        memset(p, 0, sizeof(*p));
        uint8_t *b = p->b + 28;
        b[0] = 1, b[1] = 1, b[2] = 6;
        put32(b + 4, 0xdeadbeef);
        b[10] = (uint8_t) (flags >> 8), b[11] = (uint8_t) flags;
        put32(b + 12, ciaddr);
        memcpy(b + 28, chaddr, 6);
        put32(b + 236, 0x63825363);
        p->n = 28 + 240;
        p->b[p->n++] = 53, p->b[p->n++] = 1, p->b[p->n++] = type;
}

static void msg_opt(Pkt *p, uint8_t code, const void *v, uint8_t len) {
        p->b[p->n++] = code;
        p->b[p->n++] = len;
        memcpy(p->b + p->n, v, len);
        p->n += len;
}

static void msg_opt32(Pkt *p, uint8_t code, uint32_t v) {
        uint8_t b[4];
        put32(b, v);
        msg_opt(p, code, b, 4);
}

/* END, padding to 300 bytes of BOOTP, headers and checksums. Returns the packet's length. */
static size_t msg_end(Pkt *p, uint32_t src, uint32_t dst) {
        p->b[p->n++] = 255;
        if (p->n < 28 + 300)
                p->n = 28 + 300;
        uint8_t *ip = p->b, *udp = p->b + 20;
        ip[0] = 0x45, ip[2] = (uint8_t) (p->n >> 8), ip[3] = (uint8_t) p->n, ip[8] = 64, ip[9] = 17;
        put32(ip + 12, src);
        put32(ip + 16, dst);
        uint16_t c = csum(ip, 20, 0);
        ip[10] = (uint8_t) (c >> 8), ip[11] = (uint8_t) c;
        size_t ulen = p->n - 20;
        udp[0] = 0, udp[1] = 68, udp[2] = 0, udp[3] = 67, udp[4] = (uint8_t) (ulen >> 8),
        udp[5] = (uint8_t) ulen;
        uint32_t pseudo = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + 17 + (uint32_t) ulen;
        c = csum(udp, ulen, pseudo);
        udp[6] = (uint8_t) (c >> 8), udp[7] = (uint8_t) c;
        return p->n;
}

/* An option of a reply, found by walking its bytes; NULL when absent. */
static const uint8_t *reply_opt(const uint8_t *r, size_t n, uint8_t code, uint8_t *ret_len) {
        for (size_t i = 28 + 240; i < n;) {
                if (r[i] == 0) {
                        i++;
                        continue;
                }
                if (r[i] == 255)
                        return NULL;
                if (r[i] == code) {
                        *ret_len = r[i + 1];
                        return r + i + 2;
                }
                i += 2 + (size_t) r[i + 1];
        }
        return NULL;
}

static int lookup(void *userdata, const uint8_t mac[6], Dhcp4Lookup *ret) {
        (void) userdata;
        if (memcmp(mac, MAC, 6) != 0)
                return -ENOENT;
        *ret = (Dhcp4Lookup){ .id = 42, .address = GUEST };
        strcpy(ret->hostname, "web");
        return 0;
}

static Dhcp4Event last; /* its strings are the server's, valid during the call only: copied below */
static char last_hostname[64];
static unsigned n_events;
static void on_event(void *userdata, const Dhcp4Event *ev) {
        (void) userdata;
        last = *ev;
        snprintf(last_hostname, sizeof(last_hostname), "%s", ev->client_hostname ? ev->client_hostname : "");
        last.client_hostname = last_hostname;
        last.mac = NULL;
        last.why = NULL;
        n_events++;
}

static Dhcp4Server *server(void) {
        Dhcp4ServerConfig c = {
                .ifindex = 1,
                .options = { .server_ip = GW,
                             .prefixlen = 24,
                             .router = GW,
                             .dns = { 0x0a000035, 0x0a000036 },
                             .n_dns = 2,
                             .domain = "guests.test",
                             .mtu = 1400,
                             .lease_time = 3600 },
                .lookup = lookup,
                .event = on_event,
        };
        Dhcp4Server *s = NULL;
        cr_assert_eq(dhcp4_server_new(NULL, &c, &s), 0);
        n_events = 0;
        return s;
}

static int handle(Dhcp4Server *s, const uint8_t *src, Pkt *p, size_t n, uint8_t *reply, uint8_t dst[6]) {
        return dhcp4_server_handle(s, src, p->b, n, reply, dst);
}

Test(dhcp4, discover_gets_an_offer_with_every_option) {
        Dhcp4Server *s = server();
        Pkt p;
        uint8_t reply[DHCP4_PACKET_MAX], dst[6], l;
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        msg_opt(&p, 61, "\x01\x02\x00\x00\x00\x12\x34", 7); /* a client id: must not matter */
        size_t n = msg_end(&p, 0, 0xffffffffU);
        int r = handle(s, MAC, &p, n, reply, dst);
        cr_assert_gt(r, 28 + 240);

        /* headers: from the gateway's port 67 to 68, unicast to yiaddr at chaddr (no broadcast flag) */
        cr_assert_eq(get32(reply + 12), GW);
        cr_assert_eq(get32(reply + 16), GUEST);
        cr_assert_eq(csum(reply, 20, 0), 0, "IPv4 header checksum");
        cr_assert_eq(reply[21], 67);
        cr_assert_eq(reply[23], 68);
        cr_assert_eq(memcmp(dst, MAC, 6), 0);
        /* BOOTP */
        const uint8_t *b = reply + 28;
        cr_assert_eq(b[0], 2);
        cr_assert_eq(get32(b + 4), 0xdeadbeef);
        cr_assert_eq(get32(b + 16), GUEST, "yiaddr");
        cr_assert_eq(memcmp(b + 28, MAC, 6), 0);
        cr_assert_eq(get32(b + 236), 0x63825363U);

        const uint8_t *v;
        cr_assert((v = reply_opt(reply, (size_t) r, 53, &l)) && l == 1 && v[0] == DHCP4_OFFER);
        cr_assert((v = reply_opt(reply, (size_t) r, 54, &l)) && l == 4 && get32(v) == GW);
        cr_assert((v = reply_opt(reply, (size_t) r, 1, &l)) && l == 4 && get32(v) == 0xffffff00U);
        cr_assert((v = reply_opt(reply, (size_t) r, 3, &l)) && l == 4 && get32(v) == GW);
        cr_assert((v = reply_opt(reply, (size_t) r, 6, &l)) && l == 8 && get32(v) == 0x0a000035 &&
                  get32(v + 4) == 0x0a000036);
        cr_assert((v = reply_opt(reply, (size_t) r, 12, &l)) && l == 3 && memcmp(v, "web", 3) == 0);
        cr_assert((v = reply_opt(reply, (size_t) r, 15, &l)) && l == 11 &&
                  memcmp(v, "guests.test", 11) == 0);
        cr_assert((v = reply_opt(reply, (size_t) r, 26, &l)) && l == 2 && v[0] == 0x05 && v[1] == 0x78);
        cr_assert((v = reply_opt(reply, (size_t) r, 51, &l)) && l == 4 && get32(v) == 3600);
        cr_assert((v = reply_opt(reply, (size_t) r, 58, &l)) && l == 4 && get32(v) == 1800);
        cr_assert((v = reply_opt(reply, (size_t) r, 59, &l)) && l == 4 && get32(v) == 3150);
        cr_assert_null(reply_opt(reply, (size_t) r, 121, &l), "no classless routes unless configured");
        cr_assert_eq(last.kind, DHCP4_EVENT_OFFER);
        cr_assert_eq(last.guest, 42);
        dhcp4_server_free(s);
}

Test(dhcp4, broadcast_flag_and_nak_are_broadcast) {
        Dhcp4Server *s = server();
        Pkt p;
        uint8_t reply[DHCP4_PACKET_MAX], dst[6], l;
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0x8000);
        int r = handle(s, MAC, &p, msg_end(&p, 0, 0xffffffffU), reply, dst);
        cr_assert_gt(r, 0);
        cr_assert_eq(get32(reply + 16), 0xffffffffU);
        cr_assert_eq(memcmp(dst, "\xff\xff\xff\xff\xff\xff", 6), 0);
        cr_assert_eq(reply[28 + 10], 0x80, "the broadcast flag is echoed");

        /* INIT-REBOOT asking for another address: NAK, broadcast, no lease */
        msg_begin(&p, DHCP4_REQUEST, MAC, 0, 0);
        msg_opt32(&p, 50, GUEST + 1);
        r = handle(s, MAC, &p, msg_end(&p, 0, 0xffffffffU), reply, dst);
        cr_assert_gt(r, 0);
        const uint8_t *v = reply_opt(reply, (size_t) r, 53, &l);
        cr_assert(v && v[0] == DHCP4_NAK);
        cr_assert_eq(get32(reply + 16), 0xffffffffU);
        cr_assert_eq(get32(reply + 28 + 16), 0, "a NAK gives no address");
        cr_assert_null(reply_opt(reply, (size_t) r, 51, &l));
        cr_assert_eq(last.kind, DHCP4_EVENT_NAK);
        dhcp4_server_free(s);
}

/* Every REQUEST state of RFC 2131 section 4.3.2. */
Test(dhcp4, request_states) {
        Dhcp4Server *s = server();
        Pkt p;
        uint8_t reply[DHCP4_PACKET_MAX], dst[6], l;
        const uint8_t *v;
        int r;

        /* SELECTING: our server id and the offered address */
        msg_begin(&p, DHCP4_REQUEST, MAC, 0, 0);
        msg_opt32(&p, 54, GW);
        msg_opt32(&p, 50, GUEST);
        msg_opt(&p, 12, "client-name", 11);
        r = handle(s, MAC, &p, msg_end(&p, 0, 0xffffffffU), reply, dst);
        cr_assert((v = reply_opt(reply, (size_t) r, 53, &l)) && v[0] == DHCP4_ACK);
        cr_assert_eq(get32(reply + 28 + 16), GUEST);
        cr_assert_eq(last.kind, DHCP4_EVENT_ACK);
        cr_assert_str_eq(last.client_hostname, "client-name");
        cr_assert_eq(last.address, GUEST);

        /* SELECTING another server: no answer at all */
        unsigned before = n_events;
        msg_begin(&p, DHCP4_REQUEST, MAC, 0, 0);
        msg_opt32(&p, 54, GW + 100);
        msg_opt32(&p, 50, GUEST);
        cr_assert_eq(handle(s, MAC, &p, msg_end(&p, 0, 0xffffffffU), reply, dst), 0);
        cr_assert_eq(n_events, before + 1);
        cr_assert_eq(last.kind, DHCP4_EVENT_IGNORED);

        /* INIT-REBOOT with the right address */
        msg_begin(&p, DHCP4_REQUEST, MAC, 0, 0);
        msg_opt32(&p, 50, GUEST);
        r = handle(s, MAC, &p, msg_end(&p, 0, 0xffffffffU), reply, dst);
        cr_assert((v = reply_opt(reply, (size_t) r, 53, &l)) && v[0] == DHCP4_ACK);

        /* RENEWING: unicast from ciaddr, answered unicast to ciaddr */
        msg_begin(&p, DHCP4_REQUEST, MAC, GUEST, 0);
        r = handle(s, MAC, &p, msg_end(&p, GUEST, GW), reply, dst);
        cr_assert((v = reply_opt(reply, (size_t) r, 53, &l)) && v[0] == DHCP4_ACK);
        cr_assert_eq(get32(reply + 16), GUEST);
        cr_assert_eq(memcmp(dst, MAC, 6), 0);

        /* REBINDING with a wrong ciaddr: NAK */
        msg_begin(&p, DHCP4_REQUEST, MAC, GUEST + 7, 0);
        r = handle(s, MAC, &p, msg_end(&p, GUEST + 7, 0xffffffffU), reply, dst);
        cr_assert((v = reply_opt(reply, (size_t) r, 53, &l)) && v[0] == DHCP4_NAK);

        /* INFORM: ACK to ciaddr, no lease time, no yiaddr */
        msg_begin(&p, DHCP4_INFORM, MAC, GUEST, 0);
        r = handle(s, MAC, &p, msg_end(&p, GUEST, GW), reply, dst);
        cr_assert((v = reply_opt(reply, (size_t) r, 53, &l)) && v[0] == DHCP4_ACK);
        cr_assert_null(reply_opt(reply, (size_t) r, 51, &l));
        cr_assert_eq(get32(reply + 28 + 16), 0);
        cr_assert_eq(get32(reply + 28 + 12), GUEST, "ciaddr echoed");
        cr_assert_eq(last.kind, DHCP4_EVENT_INFORM);

        /* RELEASE and DECLINE: noted, not answered */
        msg_begin(&p, DHCP4_RELEASE, MAC, GUEST, 0);
        msg_opt32(&p, 54, GW);
        cr_assert_eq(handle(s, MAC, &p, msg_end(&p, GUEST, GW), reply, dst), 0);
        cr_assert_eq(last.kind, DHCP4_EVENT_RELEASE);
        cr_assert_eq(last.address, GUEST);
        msg_begin(&p, DHCP4_DECLINE, MAC, 0, 0);
        msg_opt32(&p, 50, GUEST);
        msg_opt32(&p, 54, GW);
        cr_assert_eq(handle(s, MAC, &p, msg_end(&p, 0, 0xffffffffU), reply, dst), 0);
        cr_assert_eq(last.kind, DHCP4_EVENT_DECLINE);
        dhcp4_server_free(s);
}

Test(dhcp4, unknown_spoofed_and_relayed_get_no_answer) {
        Dhcp4Server *s = server();
        Pkt p;
        uint8_t reply[DHCP4_PACKET_MAX], dst[6];

        msg_begin(&p, DHCP4_DISCOVER, OTHER, 0, 0);
        cr_assert_eq(handle(s, OTHER, &p, msg_end(&p, 0, 0xffffffffU), reply, dst), 0, "unknown MAC");
        /* a known chaddr in a frame from another MAC (another guest claiming a neighbour's lease) */
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        cr_assert_eq(handle(s, OTHER, &p, msg_end(&p, 0, 0xffffffffU), reply, dst), 0, "chaddr != source");
        /* relayed */
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        put32(p.b + 28 + 24, 0x0a000001);
        cr_assert_eq(handle(s, MAC, &p, msg_end(&p, 0x0a000001, GW), reply, dst), 0, "giaddr set");
        Dhcp4ServerStats st;
        dhcp4_server_stats(s, &st);
        cr_assert_eq(st.answered, 0);
        cr_assert_eq(st.ignored, 3);
        cr_assert_eq(last.kind, DHCP4_EVENT_IGNORED);
        dhcp4_server_free(s);
}

Test(dhcp4, ignored_events_are_rate_limited) {
        Dhcp4Server *s = server();
        Pkt p;
        uint8_t reply[DHCP4_PACKET_MAX], dst[6];
        for (int i = 0; i < 1000; i++) {
                msg_begin(&p, DHCP4_DISCOVER, OTHER, 0, 0);
                (void) handle(s, OTHER, &p, msg_end(&p, 0, 0xffffffffU), reply, dst);
        }
        Dhcp4ServerStats st;
        dhcp4_server_stats(s, &st);
        cr_assert_eq(st.ignored, 1000);
        cr_assert_eq(n_events, 1, "a flood is reported once per interval, not per packet");
        dhcp4_server_free(s);
}

Test(dhcp4, option_overload_is_followed) {
        Pkt p;
        Dhcp4Message m;
        msg_begin(&p, DHCP4_REQUEST, MAC, 0, 0);
        msg_opt(&p, 52, "\x01", 1); /* file carries options */
        uint8_t *file = p.b + 28 + 108;
        file[0] = 50, file[1] = 4;
        put32(file + 2, GUEST);
        file[6] = 255;
        cr_assert_eq(dhcp4_parse(p.b, msg_end(&p, 0, 0xffffffffU), &m), 0);
        cr_assert_eq(m.requested_ip, GUEST);
        cr_assert_eq(m.type, DHCP4_REQUEST);
}

Test(dhcp4, malformed_and_foreign_packets) {
        Pkt p;
        Dhcp4Message m;
        size_t n;

        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        n = msg_end(&p, 0, 0xffffffffU);
        cr_assert_eq(dhcp4_parse(p.b, n, &m), 0);
        /* every truncation is refused, never read past */
        for (size_t k = 0; k < n; k++)
                cr_assert_lt(dhcp4_parse(p.b, k, &m), 0, "length %zu", k);
        /* a bad UDP checksum */
        p.b[27] ^= 1;
        cr_assert_eq(dhcp4_parse(p.b, n, &m), -EBADMSG);
        p.b[27] ^= 1;
        /* an option running past the end */
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        p.b[p.n++] = 12, p.b[p.n++] = 200;
        n = msg_end(&p, 0, 0xffffffffU);
        cr_assert_eq(dhcp4_parse(p.b, n, &m), -EBADMSG);
        /* no END */
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        n = msg_end(&p, 0, 0xffffffffU);
        memset(p.b + 28 + 243, 0, n - 28 - 243); /* END overwritten by padding */
        p.b[26] = p.b[27] = 0; /* no UDP checksum */
        cr_assert_eq(dhcp4_parse(p.b, n, &m), -EBADMSG);
        /* a server's message, another port, a fragment, plain BOOTP */
        msg_begin(&p, DHCP4_OFFER, MAC, 0, 0);
        cr_assert_eq(dhcp4_parse(p.b, msg_end(&p, 0, 0xffffffffU), &m), -EPROTO);
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        n = msg_end(&p, 0, 0xffffffffU);
        p.b[26] = p.b[27] = 0;
        p.b[23] = 68;
        cr_assert_eq(dhcp4_parse(p.b, n, &m), -EPROTO);
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        n = msg_end(&p, 0, 0xffffffffU);
        p.b[6] = 0x20; /* more fragments */
        p.b[10] = p.b[11] = 0;
        uint16_t c = csum(p.b, 20, 0);
        p.b[10] = (uint8_t) (c >> 8), p.b[11] = (uint8_t) c;
        cr_assert_eq(dhcp4_parse(p.b, n, &m), -EPROTO);
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        p.n = 28 + 240; /* no message type */
        cr_assert_eq(dhcp4_parse(p.b, msg_end(&p, 0, 0xffffffffU), &m), -EPROTO);
        /* a host name with control characters is dropped, not passed on */
        msg_begin(&p, DHCP4_DISCOVER, MAC, 0, 0);
        msg_opt(&p, 12, "a\nb", 3);
        cr_assert_eq(dhcp4_parse(p.b, msg_end(&p, 0, 0xffffffffU), &m), 0);
        cr_assert_str_eq(m.hostname, "");
}

Test(dhcp4, classless_routes_carry_the_default_route_too) {
        Dhcp4Message m = { .type = DHCP4_DISCOVER, .xid = 1 };
        memcpy(m.chaddr, MAC, 6);
        Dhcp4Options o = { .server_ip = GW, .prefixlen = 32, .router = GW, .lease_time = 60, .n_routes = 1 };
        o.routes[0] = (Dhcp4Route){ .dest = GW, .prefixlen = 32, .gateway = 0 };
        Dhcp4Guest g = { .address = GUEST };
        Dhcp4Answer a;
        uint8_t reply[DHCP4_PACKET_MAX], l;
        dhcp4_answer(&m, &g, &o, &a);
        int r = dhcp4_build_reply(&m, &a, &g, &o, reply, sizeof(reply));
        cr_assert_gt(r, 0);
        const uint8_t *v = reply_opt(reply, (size_t) r, 121, &l);
        /* 32 c0 a8 c8 01 00000000 | 0 c0a8c801 */
        static const uint8_t want[] = { 32, 0xc0, 0xa8, 0xc8, 0x01, 0, 0, 0, 0, 0, 0xc0, 0xa8, 0xc8, 0x01 };
        cr_assert(v && l == sizeof(want) && memcmp(v, want, sizeof(want)) == 0);
}
