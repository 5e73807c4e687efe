/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* A static-lease DHCPv4 server on one link (the local backend's bridge), in the caller's sd-event loop. No
 * lease database: each message's client hardware address is looked up through the caller's callback, and
 * only a known guest is answered, with its address. Replies are whole frames sent through a packet socket
 * to the client's MAC (or broadcast), so a client that has no address yet gets them (RFC 2131 section 4.1)
 * and no ARP is needed. A message is taken only when its Ethernet source is its chaddr: the local
 * backend's anti-spoofing lets a MAC in only from its own VM's TAP, so the MAC names the VM.
 *
 * A UDP socket on port 67, bound to the link, takes the unicast renewals in the kernel too (it is never
 * read for decisions; without it the kernel would answer them with ICMP port unreachable). */

#include <stdint.h>

#include "backends/dhcp/dhcp4.h"

typedef struct sd_event sd_event;
typedef struct Dhcp4Server Dhcp4Server;

typedef enum Dhcp4EventKind {
        DHCP4_EVENT_OFFER,
        DHCP4_EVENT_ACK, /* a lease given or renewed */
        DHCP4_EVENT_INFORM,
        DHCP4_EVENT_NAK,
        DHCP4_EVENT_RELEASE,
        DHCP4_EVENT_DECLINE,
        DHCP4_EVENT_IGNORED, /* no answer; `why` says why (rate-limited by the server) */
        _DHCP4_EVENT_KIND_MAX,
} Dhcp4EventKind;

/* Its strings and mac are valid during the callback only. */
typedef struct Dhcp4Event {
        Dhcp4EventKind kind;
        const uint8_t *mac; /* the frame's source */
        uint32_t address; /* what the guest got, asked for or released */
        const char *client_hostname; /* option 12 of the client's message; "" */
        const char *why;
        uint64_t guest; /* the lookup's guest id; 0: unknown */
        unsigned suppressed; /* IGNORED events left out since the last one reported */
} Dhcp4Event;

typedef struct Dhcp4Lookup {
        uint64_t id; /* the caller's, handed back in events */
        uint32_t address;
        char hostname[DHCP4_HOSTNAME_MAX + 1];
} Dhcp4Lookup;

typedef struct Dhcp4ServerConfig {
        uint32_t ifindex; /* the link to serve (the bridge) */
        Dhcp4Options options; /* domain is copied */
        /* The guest with this MAC: 0 with *ret filled in, or -ENOENT. */
        int (*lookup)(void *userdata, const uint8_t mac[6], Dhcp4Lookup *ret);
        void (*event)(void *userdata, const Dhcp4Event *ev);
        void *userdata;
} Dhcp4ServerConfig;

typedef struct Dhcp4ServerStats {
        uint64_t received, answered, ignored, malformed;
} Dhcp4ServerStats;

/* Opens the sockets on the link and starts serving. -errno when a socket cannot be made (the link is
 * gone, no CAP_NET_RAW, ...). */
int dhcp4_server_new(sd_event *event, const Dhcp4ServerConfig *cfg, Dhcp4Server **ret);
Dhcp4Server *dhcp4_server_free(Dhcp4Server *s);
uint32_t dhcp4_server_ifindex(const Dhcp4Server *s);
/* False once the link went away under the server (its socket failed): make a new one. */
bool dhcp4_server_alive(const Dhcp4Server *s);
void dhcp4_server_stats(const Dhcp4Server *s, Dhcp4ServerStats *ret);
/* Handles one packet as if the socket had received it from `src_mac`; for tests and the fuzzer. Returns the
 * reply's length written to reply (DHCP4_PACKET_MAX bytes), 0 when none, and the MAC it goes to. */
int dhcp4_server_handle(Dhcp4Server *s, const uint8_t src_mac[6], const uint8_t *pkt, size_t len,
                        uint8_t *reply, uint8_t ret_dst_mac[6]);
