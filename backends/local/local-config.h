/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The [local] section of agent.conf, parsed by the local backend itself (its configure hook). Keys
 * (defaults in brackets):
 *
 *   bridge [chvm0]  subnet [192.168.200.0/24]  gateway [first host]  tap_prefix [tap-]  table [chvm]
 *   table_owner [auto]   (auto | yes | no: see TableOwner below)
 *   dhcp [yes]  dns [the host's resolvers]  domain []  lease_time [3600]  mtu [the bridge's]
 *   kernel_ip_arg [yes]   (ip= on the command line of a VM booted with --kernel)
 *   reserved_ports [listening]   (listening | none | PORT[-PORT][/tcp|/udp] ..., with or without
 *   "listening": the ports a socket of the host listens on when the VM is created) */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"

/* table_owner: whether the local backend's nftables tables belong to its netlink socket
 * (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST): then only the agent may change them, `nft flush ruleset` by
 * others passes them by, and they outlive an agent crash, orphaned, until the next agent adopts them. */
typedef enum TableOwner {
        TABLE_OWNER_AUTO, /* owned where the kernel has NFT_TABLE_F_PERSIST (6.9), plain tables elsewhere */
        TABLE_OWNER_YES, /* owned, or the backend refuses to start */
        TABLE_OWNER_NO, /* plain tables anyone may change, and flush */
        _TABLE_OWNER_MAX,
        _TABLE_OWNER_INVALID = -EINVAL,
} TableOwner;

const char *table_owner_to_string(TableOwner t);
TableOwner table_owner_from_string(const char *s);

#define LOCAL_MAX_RESERVED 32

/* A host port range no forward may use without --force-port; proto 0: tcp and udp. */
typedef struct PortRange {
        uint8_t proto;
        uint16_t first, last;
} PortRange;

typedef struct LocalConfig {
        char bridge[16];
        uint32_t subnet; /* host byte order */
        uint8_t prefixlen;
        uint32_t gateway;
        char tap_prefix[12];
        char table[33];
        TableOwner table_owner;
        bool dhcp;
        bool dns_given; /* false: the host's resolvers, read when the backend starts */
        uint32_t dns[DHCP4_DNS_MAX]; /* host byte order */
        unsigned n_dns;
        char domain[254]; /* "": none */
        uint32_t lease_time; /* seconds */
        uint32_t mtu; /* 0: the bridge's */
        bool kernel_ip_arg;
        bool reserve_listening; /* a port some socket of the host listens on is reserved */
        PortRange reserved[LOCAL_MAX_RESERVED];
        unsigned n_reserved;
} LocalConfig;

void local_config_defaults(LocalConfig *c);

/* Parses the section over the defaults already in *c. 0; or -EINVAL with the cause in why ("subnet
 * \"x\": expected A.B.C.D/N") and *ret_bad the index of the setting at fault, or n when the fault lies
 * between settings (a gateway outside the subnet). On failure *c is unchanged. */
int local_config_parse(LocalConfig *c, const BackendSetting *s, size_t n, size_t *ret_bad, Error *e);

/* Whether a forward of this port may use it: PortRange match of proto (IPPROTO_*) and port. */
bool port_range_has(const PortRange *pr, uint8_t proto, uint16_t port);
