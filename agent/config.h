/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* /etc/chvm/agent.conf (INI, parsed with inih). Every key has a default; an unknown section or key, a
 * key given twice or a value that does not parse makes the whole file invalid, and the error names
 * FILE:LINE and the cause. Keys (defaults in brackets):
 *
 *   [agent]  state_dir [/var/lib/chvm]  runtime_dir [/run/chvm]  socket [<runtime_dir>/agent.sock]
 *            backend_dir [$(pkglibdir)/backends]  default_backend [local]  control_group [chvm]
 *            backends [local bridge mosnet]   (the modules loaded at start)
 *            journal_compact_size [8M]   (compact the ownership journal when it grows past this; K, M, G)
 *            connections_per_uid [64]  idle_timeout [60]   (seconds; 0: never)
 *   [vmm]    hypervisor [cloud-hypervisor]  binary [per kind]  stop_timeout [10]  accel [auto]
 *            allow_block_devices [no]  image_dirs []   (absolute folders; empty: anywhere)
 *            environment []  pass_environment []   (the hypervisors' environment besides PATH)
 *   [local]  bridge [chvm0]  subnet [192.168.200.0/24]  gateway [first host]  tap_prefix [tap-]  table
 *            [chvm]  table_owner [auto]   (auto | yes | no: see TableOwner in backends/backend.h)
 *            dhcp [yes]  dns [the host's resolvers]  domain []  lease_time [3600]  mtu [the bridge's]
 *            kernel_ip_arg [yes]   (ip= on the command line of a VM booted with --kernel)
 *            reserved_ports [listening]   (listening | none | PORT[-PORT][/tcp|/udp] ..., with or without
 *            "listening": the ports a socket of the host listens on when the VM is created)
 *   [bridge] bridge [br0]  tap_prefix [tap-]
 */

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#define CONFIG_MAX_BACKENDS 8
#define CONFIG_DNS_MAX 3
#define CONFIG_MAX_IMAGE_DIRS 8
#define CONFIG_MAX_RESERVED 32
#define CONFIG_MAX_ENV 16

/* A host port range no forward may use without --force-port; proto 0: tcp and udp. */
typedef struct PortRange {
        uint8_t proto;
        uint16_t first, last;
} PortRange;

typedef struct AgentConfig {
        char state_dir[PATH_MAX];
        char runtime_dir[PATH_MAX];
        char socket[108]; /* sun_path */
        char backend_dir[PATH_MAX];
        char default_backend[33];
        char control_group[33];
        char backends[CONFIG_MAX_BACKENDS][33];
        unsigned n_backends;
        uint64_t journal_compact_size; /* bytes */
        unsigned connections_per_uid; /* a uid other than 0 holds at most this many connections */
        unsigned idle_timeout; /* seconds; a connection with no call in flight is closed after it; 0: never */

        char hypervisor[32]; /* "cloud-hypervisor" or "qemu" */
        char vmm_binary[PATH_MAX]; /* "" = the kind's default */
        unsigned stop_timeout; /* seconds */
        char accel[8]; /* "auto", "kvm", "tcg" */
        bool allow_block_devices; /* a disk may be a block device */
        char image_dirs[CONFIG_MAX_IMAGE_DIRS][256]; /* kernels, initrds, firmware and disks only below these */
        unsigned n_image_dirs;
        char vmm_environment[CONFIG_MAX_ENV][256]; /* "NAME=VALUE" */
        unsigned n_vmm_environment;
        char vmm_pass_environment[CONFIG_MAX_ENV][64]; /* NAME or PREFIX* */
        unsigned n_vmm_pass_environment;

        char local_bridge[16];
        uint32_t local_subnet; /* host byte order */
        uint8_t local_prefixlen;
        uint32_t local_gateway;
        char local_tap_prefix[12];
        char local_table[33];
        int local_table_owner; /* TableOwner */
        bool local_dhcp;
        bool local_dns_given; /* false: the host's resolvers (agent_host_dns()), read at start */
        uint32_t local_dns[CONFIG_DNS_MAX]; /* host byte order */
        unsigned local_n_dns;
        char local_domain[254]; /* "": none */
        uint32_t local_lease_time; /* seconds */
        uint32_t local_mtu; /* 0: the bridge's */
        bool local_kernel_ip_arg;
        bool local_reserve_listening; /* a port some socket of the host listens on is reserved */
        PortRange local_reserved[CONFIG_MAX_RESERVED];
        unsigned local_n_reserved;

        char bridge_bridge[16];
        char bridge_tap_prefix[12];
} AgentConfig;

/* The defaults, with backend_dir as given (the build's pkglibdir). */
void config_defaults(AgentConfig *c, const char *backend_dir);

/* Parses path over the defaults already in *c ([vmm] binary must exist and be executable). 0, or -errno
 * with err = "PATH:LINE: cause" (a line longer than INI_MAX_LINE - 2 bytes is one), or "PATH: cause" when
 * the file cannot be read, is larger than 1 MiB or holds a NUL byte. On failure *c is unchanged. */
int config_load(AgentConfig *c, const char *path, char *err, size_t err_size);

/* Same from a string (for tests and the fuzzer); `name` stands in for the path in messages. */
int config_load_string(AgentConfig *c, const char *name, const char *text, char *err, size_t err_size);
