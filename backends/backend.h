/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The backend interface. Each backend is a shared module (local.so, bridge.so, mosnet.so) that exports
 * exactly one symbol, `chvm_backend`, a const BackendVTable. Backends plan, apply, remove and scan kernel
 * objects; they never touch the journal: ownership bookkeeping is the dispatcher's alone.
 *
 * Every object a backend creates carries the tag chvm1:<agent-id>:<vm-id>:<role> (vm-id is 16 hex digits,
 * or "core" for shared objects), as IFLA_IFALIAS on links and as a comment on nftables objects. */

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/dhcp/dhcp4-server.h"
#include "util/error.h"
#include "util/portfwd.h"

#define CHVM_BACKEND_ABI                                                                   \
        8U /* 2: BackendConfig.nl_ops and table_owner; 3: BackendConfig.links; 4: services \
            * (BackendConfig.event, guest_lookup, lease_event, the DHCP keys);             \
            * 5: BackendVTable.forwards_ports; 6: BackendVTable.doctor; 7: the backend     \
            * parses its own section (configure), net_params, check_ports; 8: failures in  \
            * Backend.error (util/error.h) instead of error_message() */
#define CHVM_BACKEND_SYMBOL "chvm_backend"
#define CHVM_TAG_MAX 128

typedef enum ResourceKind {
        RESOURCE_LINK_TAP = 1,
        RESOURCE_LINK_BRIDGE,
        RESOURCE_NFT_TABLES, /* the static layout: both tables with their sets, chains and rules */
        RESOURCE_NFT_PORTFWD, /* element of portfwd4 */
        RESOURCE_NFT_VM_PORT, /* element of vm_ports */
        RESOURCE_NFT_VM_ADDR, /* element of vm_addrs */
        _RESOURCE_KIND_MAX,
        _RESOURCE_KIND_INVALID = -EINVAL,
} ResourceKind;

const char *resource_kind_to_string(ResourceKind k);
ResourceKind resource_kind_from_string(const char *s);
bool resource_kind_is_link(ResourceKind k);
bool resource_kind_is_elem(ResourceKind k);

/* An element's fields; kept in the journal as the object key (resource_key_encode()). */
typedef struct ResourceElem {
        uint8_t proto;
        uint16_t host_port;
        uint32_t guest_ip; /* host byte order */
        uint16_t guest_port;
        char ifname[16];
        uint8_t mac[6];
} ResourceElem;

typedef struct Resource {
        ResourceKind kind;
        uint64_t vm_id; /* 0: core */
        char name[64]; /* link name; table name for RESOURCE_NFT_TABLES; set name for elements */
        char tag[CHVM_TAG_MAX + 1];
        uint32_t ifindex; /* links, once created */
        ResourceElem elem; /* elements */
        uint64_t oid; /* the dispatcher's journal object id (0 for scan results) */
        bool created; /* set by apply(): made now, rather than found already there (core objects) */
} Resource;

typedef struct ResourceSet {
        Resource *items;
        size_t n, allocated;
} ResourceSet;

int resource_set_add(ResourceSet *s, const Resource *r);
void resource_set_clear(ResourceSet *s);

/* Encodes an element's fields as the journal's object key, and back. */
size_t resource_key_encode(const Resource *r, uint8_t *buf, size_t size);
int resource_key_decode(ResourceKind kind, const void *key, size_t size, ResourceElem *ret);

/* "chvm1:<agent>:<vm 16 hex | core>:<role>" */
int resource_tag(const char *agent_id, uint64_t vm_id, const char *role, char ret[CHVM_TAG_MAX + 1]);
/* Splits a tag; -EINVAL if it is not of our form. ret_vm_id is 0 for "core". */
int resource_tag_parse(const char *tag, char ret_agent[64], uint64_t *ret_vm_id, char ret_role[32]);

struct LinkInfo; /* backends/nl/rtnl.h */

/* The links of the host as one dump made them: *ret stays valid until the scan that asked returns. */
typedef int (*BackendLinksFn)(void *userdata, const struct LinkInfo **ret, size_t *ret_n);

typedef struct Backend Backend;

/* The running VM of backend b whose guest MAC is mac: 0 with *ret (id = the VM id, its address, its name),
 * or -ENOENT. The agent answers from its journal: a backend's service needs no state of its own. */
typedef int (*BackendGuestLookupFn)(void *userdata, Backend *b, const uint8_t mac[6], Dhcp4Lookup *ret);
/* A backend's DHCP server tells what it did (ev->guest is the VM id, 0 when unknown). */
typedef void (*BackendLeaseFn)(void *userdata, Backend *b, const Dhcp4Event *ev);

/* One line of the backend's section of agent.conf ([<name>]), in file order, each key at most once. */
typedef struct BackendSetting {
        const char *key;
        const char *value;
        unsigned line; /* in BackendConfig.settings_source; 0: not from a file */
} BackendSetting;

typedef struct BackendConfig {
        const char *agent_id; /* UUID string */
        /* The backend's section, already given to configure() before init() (the loader does both). */
        const BackendSetting *settings;
        size_t n_settings;
        const char *settings_source; /* the file's name, for messages; NULL: "agent.conf" */
        /* The netlink socket calls (backends/nl/nlops.h); NULL: the system's. Only tests set it, to inject
         * faults into every netlink request the backend makes. */
        const struct NlOps *nl_ops;
        /* The agent's dump of the links for the collection (or doctor run) in progress, so that every
         * backend's scan reads the same one: with local and bridge loaded, a collection dumps the links
         * once, not twice. NULL, or a call that fails: the backend dumps them itself. */
        BackendLinksFn links;
        void *links_userdata;
        /* The agent's event loop, for a backend's services (local: its DHCP server); NULL: none run. */
        struct sd_event *event;
        BackendGuestLookupFn guest_lookup;
        BackendLeaseFn lease_event;
        void *guest_userdata;
} BackendConfig;

/* How the agent names and addresses a VM of the backend, as its configuration says. */
typedef struct BackendNetParams {
        char tap_prefix[12]; /* a VM's TAP is <prefix><low hex digits of its id>; "": the backend makes none
                              */
        /* Backends with uses_addresses: the subnet the agent gives guests addresses from (never the network,
         * broadcast or gateway address), host byte order. */
        uint32_t subnet, gateway;
        uint8_t prefixlen;
        bool kernel_ip_arg; /* ip=<guest>::<gateway>:<mask> on the command line of a --kernel guest */
} BackendNetParams;

typedef struct VmNetSpec {
        uint64_t vm_id;
        const char *vm_name;
        const char *tap_name;
        uint8_t mac[6];
        uint32_t ip4; /* 0 when the backend has no addresses */
        const PortForward *ports;
        size_t n_ports;
} VmNetSpec;

/* What `chvmctl doctor` shows of a backend's host setup: a finding of a severity under a topic (a short
 * word, e.g. "firewall"), its message naming the object and what to do. */
typedef enum BackendSeverity {
        BACKEND_OK,
        BACKEND_WARNING,
        BACKEND_ERROR,
} BackendSeverity;

/* A running VM of the backend, for its doctor hook: the TAP it was given ("" if none). */
typedef struct BackendVm {
        uint64_t vm_id;
        const char *name;
        const char *tap;
} BackendVm;

/* Takes one finding; a negative return (out of memory) ends the doctor hook, which returns it. */
typedef int (*BackendFindingFn)(void *userdata, BackendSeverity severity, const char *topic,
                                const char *message);

typedef struct BackendVTable {
        uint32_t abi;
        const char *name;
        size_t object_size; /* of the backend's object, which embeds Backend first */
        bool uses_addresses; /* the dispatcher allocates guest IPs for it */
        bool forwards_ports; /* it forwards host ports (VmNetSpec.ports); a VM of a backend without: no -p */
        /* Takes the backend's section of agent.conf (called once, before init, with the object zeroed):
         * 0, or -EINVAL with Backend.error naming the key and the cause and *ret_bad the index of the
         * setting at fault (n: a fault between settings). The loader adds FILE:LINE and the section. NULL:
         * the backend has no settings, and any key is refused. */
        int (*configure)(Backend *b, const BackendSetting *settings, size_t n, size_t *ret_bad);
        int (*init)(Backend *b, const BackendConfig *cfg);
        void (*done)(Backend *b);
        /* Shared objects every VM of this backend needs (bridge, tables); may be empty. */
        int (*plan_core)(Backend *b, ResourceSet *ret);
        int (*plan)(Backend *b, const VmNetSpec *spec, ResourceSet *ret);
        /* Creates everything in the plan, filling in ifindex; all or nothing: on failure what was created
         * is removed again. -EEXIST for a core object that already exists with our tag is success. */
        int (*apply)(Backend *b, ResourceSet *plan);
        /* Removes one object after re-reading its tag: 0 when removed or already gone, -ESTALE when the
         * kernel object at that identity is no longer ours. */
        int (*remove)(Backend *b, const Resource *r);
        /* Removes many objects, as one operation where the kernel allows it. NULL: one by one. */
        int (*remove_many)(Backend *b, const Resource *r, size_t n);
        /* Rebuilds the shared objects and re-adds the given elements, as after someone flushed the
         * ruleset. NULL if the backend has nothing of the kind. */
        int (*rebuild)(Backend *b, const Resource *elems, size_t n);
        /* Objects of its kinds it can see in the kernel: tagged ones with their tags, and untagged ones
         * that look like its own (name prefix, our tables' untagged elements). */
        int (*scan)(Backend *b, ResourceSet *ret);
        /* The named crash points compiled into this module (CHVM_CRASH_AT), for tests that visit them all.
         */
        const char *const *(*crash_points)(size_t *ret_n);
        /* Checks what the backend depends on and the agent cannot judge (sysctls, other tables' chains, the
         * running VMs' TAPs and their bridge) and reports each through add(). The links it reads come from
         * BackendConfig.links when given. NULL: nothing to check. */
        int (*doctor)(Backend *b, const BackendVm *running, size_t n_running, BackendFindingFn add,
                      void *userdata);
        /* Its TAP prefix and address pool (configure's result). NULL: no TAPs and no addresses. */
        void (*net_params)(Backend *b, BackendNetParams *ret);
        /* Whether a new VM may forward these host ports (ports the host keeps for itself): 0, or
         * -EADDRINUSE with Backend.error naming the VM, the port and the reason; other -errno when it
         * cannot tell. Not called for a forced create. NULL: every port may be forwarded. */
        int (*check_ports)(Backend *b, const char *vm_name, const PortForward *ports, size_t n);
} BackendVTable;

/* The base every backend object embeds first. The loader fills it in before init(). */
struct Backend {
        const BackendVTable *vtable;
        char agent_id[64];
        void *module; /* dlopen() handle, the loader's */
        /* Why the last call failed: every failure a hook returns is set here first, with error_set() and
         * the returned code, naming the object and the kernel's reason (the agent takes the kind and
         * message as they are). A failure returned without it is reported by its errno alone. */
        Error error;
};
