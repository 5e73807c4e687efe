/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* libFuzzer harness for the DHCPv4 server's packet path (backends/dhcp/dhcp4.c, dhcp4-server.c).
 *
 * The input's first byte picks the frame's source MAC (even: the known guest's, odd: another), the rest is
 * the IPv4 packet as the packet socket would hand it over. Whatever it holds, handling it must neither crash
 * nor read or write out of bounds, and:
 *   - a message that dhcp4_parse() refuses gets no reply;
 *   - a reply goes only to a message from the known guest, whose chaddr is the frame's source and whose
 *     giaddr is 0; it parses as a well-formed IPv4/UDP packet from port 67 to 68 with correct checksums, is
 *     a BOOTREPLY with the message's xid and chaddr and fits in 576 bytes;
 *   - an OFFER or ACK with a lease carries the guest's address and nothing else in yiaddr.
 * Any violation aborts. */

#include <stdlib.h>
#include <string.h>

#include "backends/dhcp/dhcp4-server.h"
#include "backends/dhcp/dhcp4.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define GW 0xc0a8c801U
#define GUEST 0xc0a8c80aU
static const uint8_t GUEST_MAC[6] = { 0x02, 0, 0, 0, 0x12, 0x34 };
static const uint8_t OTHER_MAC[6] = { 0x02, 0, 0, 0, 0x99, 0x99 };

static int lookup(void *userdata, const uint8_t mac[6], Dhcp4Lookup *ret) {
        (void) userdata;
        if (memcmp(mac, GUEST_MAC, 6) != 0)
                return -1;
        *ret = (Dhcp4Lookup){ .id = 1, .address = GUEST };
        strcpy(ret->hostname, "fuzz");
        return 0;
}

static uint16_t fold(uint32_t sum) {
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return (uint16_t) ~sum;
}

static uint32_t add(uint32_t sum, const uint8_t *p, size_t n) {
        for (size_t i = 0; i + 1 < n; i += 2)
                sum += (uint32_t) (p[i] << 8 | p[i + 1]);
        if (n & 1)
                sum += (uint32_t) p[n - 1] << 8;
        return sum;
}

static uint32_t get32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static Dhcp4Server *s;
        if (!s) {
                Dhcp4ServerConfig c = {
                        .ifindex = 1,
                        .options = { .server_ip = GW,
                                     .prefixlen = 24,
                                     .router = GW,
                                     .dns = { 0x0a000035 },
                                     .n_dns = 1,
                                     .domain = "fuzz.test",
                                     .mtu = 1500,
                                     .lease_time = 3600,
                                     .n_routes = 1,
                                     .routes = { { .dest = 0x0a000000, .prefixlen = 8, .gateway = GW } } },
                        .lookup = lookup,
                };
                if (dhcp4_server_new(NULL, &c, &s) < 0)
                        abort();
        }
        if (size < 1)
                return 0;
        const uint8_t *src = data[0] & 1 ? OTHER_MAC : GUEST_MAC;
        /* a copy of exactly the packet's size, so that the sanitizer sees any read past it */
        uint8_t *pkt = malloc(size - 1 ? size - 1 : 1);
        if (!pkt)
                return 0;
        memcpy(pkt, data + 1, size - 1);
        uint8_t reply[DHCP4_PACKET_MAX], dst[6];
        Dhcp4Message m;
        int parsed = dhcp4_parse(pkt, size - 1, &m);
        int n = dhcp4_server_handle(s, src, pkt, size - 1, reply, dst);
        free(pkt);

        if (n < 0 || n > DHCP4_PACKET_MAX)
                abort();
        if (n == 0)
                return 0;
        if (parsed < 0 || src != GUEST_MAC || memcmp(m.chaddr, GUEST_MAC, 6) != 0 || m.giaddr != 0)
                abort(); /* answered what deserves no answer */
        /* the reply, read as a client would */
        size_t ihl = (size_t) (reply[0] & 0xf) * 4;
        size_t total = (size_t) (reply[2] << 8 | reply[3]);
        if (reply[0] >> 4 != 4 || ihl != 20 || total != (size_t) n || reply[9] != 17 ||
            fold(add(0, reply, 20)) != 0)
                abort();
        const uint8_t *udp = reply + 20;
        size_t ulen = (size_t) (udp[4] << 8 | udp[5]);
        if (ulen != total - 20 || udp[1] != 67 || udp[3] != 68 || udp[0] || udp[2])
                abort();
        if (fold(add(add(0, reply + 12, 8) + 17 + (uint32_t) ulen, udp, ulen)) != 0)
                abort();
        const uint8_t *b = udp + 8;
        if (ulen < 8 + 240 || b[0] != 2 || get32(b + 4) != m.xid || memcmp(b + 28, GUEST_MAC, 6) != 0 ||
            get32(b + 236) != 0x63825363U)
                abort();
        uint32_t yiaddr = get32(b + 16);
        if (yiaddr != 0 && yiaddr != GUEST)
                abort();
        return 0;
}
