/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* DHCPv4 messages (RFC 2131, options RFC 2132, classless routes RFC 3442) as a static-lease server needs
 * them: parsing a client's message out of an IPv4/UDP packet, deciding the answer, and building the reply
 * as a whole IPv4/UDP packet. No I/O here: backends/dhcp/dhcp4-server.c does the sockets. Everything is
 * bounded by the packet it is given; nothing in a packet is trusted. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DHCP4_SERVER_PORT 67
#define DHCP4_CLIENT_PORT 68
#define DHCP4_HOSTNAME_MAX 63
#define DHCP4_DNS_MAX 3
#define DHCP4_ROUTES_MAX 4
/* The largest reply we build: IPv4 + UDP headers and a BOOTP message of at most 576 bytes of IP, which every
 * client must accept (RFC 2131 section 2) without option 57. */
#define DHCP4_PACKET_MAX 576

typedef enum Dhcp4Type {
        DHCP4_DISCOVER = 1,
        DHCP4_OFFER,
        DHCP4_REQUEST,
        DHCP4_DECLINE,
        DHCP4_ACK,
        DHCP4_NAK,
        DHCP4_RELEASE,
        DHCP4_INFORM,
        _DHCP4_TYPE_MAX,
        _DHCP4_TYPE_INVALID = -EINVAL,
} Dhcp4Type;

const char *dhcp4_type_to_string(Dhcp4Type t);

/* A client's message, as far as a static-lease server reads it. Addresses in host byte order. */
typedef struct Dhcp4Message {
        uint32_t xid;
        uint16_t flags; /* bit 15: broadcast */
        uint32_t ciaddr, giaddr;
        uint8_t chaddr[6];
        Dhcp4Type type;
        uint32_t requested_ip; /* option 50; 0: none */
        uint32_t server_id; /* option 54; 0: none */
        char hostname[DHCP4_HOSTNAME_MAX +
                      1]; /* option 12, printable ASCII only; "" when none or unprintable */
        bool has_client_id; /* option 61: read, and deliberately not used for matching (chaddr is) */
        /* The IPv4 header's addresses. */
        uint32_t src, dst;
} Dhcp4Message;

/* Parses an IPv4 packet carrying UDP to port 67 and a BOOTREQUEST with the DHCP magic cookie and a
 * message type (option 53). Ethernet hardware addresses only (htype 1, hlen 6). Option overload (52) is
 * followed into `file` and `sname`. -EBADMSG for anything malformed or truncated, -EPROTO for a valid
 * packet that is not for a DHCP server (another port, a BOOTREPLY, BOOTP without DHCP, a fragment). */
int dhcp4_parse(const uint8_t *pkt, size_t len, Dhcp4Message *ret);

typedef struct Dhcp4Route {
        uint32_t dest;
        uint8_t prefixlen;
        uint32_t gateway;
} Dhcp4Route;

/* What the server hands out on one link. */
typedef struct Dhcp4Options {
        uint32_t server_ip; /* option 54, and the reply's source address */
        uint8_t prefixlen; /* option 1 */
        uint32_t router; /* option 3; 0: none */
        uint32_t dns[DHCP4_DNS_MAX]; /* option 6 */
        size_t n_dns;
        const char *domain; /* option 15; NULL or "": none */
        uint16_t mtu; /* option 26; 0: none */
        uint32_t lease_time; /* option 51, seconds; 58 and 59 are half and 7/8 of it */
        Dhcp4Route routes[DHCP4_ROUTES_MAX]; /* option 121 */
        size_t n_routes;
} Dhcp4Options;

/* The guest a message's chaddr belongs to, as the caller found it. */
typedef struct Dhcp4Guest {
        uint32_t address;
        const char *hostname; /* option 12: the VM's name */
} Dhcp4Guest;

typedef struct Dhcp4Answer {
        Dhcp4Type type; /* OFFER, ACK or NAK; 0: no answer */
        uint32_t yiaddr;
        bool with_lease; /* ACK of an INFORM carries no lease (RFC 2131 section 3.4) */
        uint32_t dst_ip; /* where the reply goes (RFC 2131 section 4.1) */
        bool broadcast; /* to ff:ff:ff:ff:ff:ff, else to chaddr */
        const char *why; /* why no answer, or why a NAK */
} Dhcp4Answer;

/* The answer of a static-lease server to message m from a known guest g (NULL: chaddr unknown: no answer).
 * A relayed message (giaddr set) gets none. A REQUEST whose server id is another server's gets none (the
 * client chose that one). */
void dhcp4_answer(const Dhcp4Message *m, const Dhcp4Guest *g, const Dhcp4Options *o, Dhcp4Answer *ret);

/* Builds the reply to m as a whole IPv4 + UDP packet (checksums filled in) into buf, which must hold
 * DHCP4_PACKET_MAX bytes. Returns its length, or -ENOBUFS when the options do not fit. */
int dhcp4_build_reply(const Dhcp4Message *m, const Dhcp4Answer *a, const Dhcp4Guest *g,
                      const Dhcp4Options *o, uint8_t *buf, size_t size);
