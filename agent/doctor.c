/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <fcntl.h>
#include <net/if.h> /* before the kernel headers below, which then leave its definitions alone */
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter_bridge.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent-internal.h"
#include "agent/gc.h"
#include "backends/nl/nft.h"
#include "backends/nl/rtnl.h"

static const char *const doctor_severity_table[_DOCTOR_SEVERITY_MAX] = {
        [DOCTOR_OK] = "ok",
        [DOCTOR_WARNING] = "warning",
        [DOCTOR_ERROR] = "error",
};

const char *doctor_severity_to_string(DoctorSeverity s) {
        return s < _DOCTOR_SEVERITY_MAX ? doctor_severity_table[s] : NULL;
}

void doctor_report_clear(DoctorReport *r) {
        free(r->items);
        *r = (DoctorReport){};
}

__attribute__((format(printf, 4, 5))) static int add(DoctorReport *r, DoctorSeverity s, const char *topic,
                                                     const char *fmt, ...) {
        DoctorFinding *n = realloc(r->items, (r->n + 1) * sizeof(DoctorFinding));
        if (!n)
                return -ENOMEM;
        r->items = n;
        DoctorFinding *f = &r->items[r->n++];
        *f = (DoctorFinding){ .severity = s };
        snprintf(f->topic, sizeof(f->topic), "%s", topic);
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(f->message, sizeof(f->message), fmt, ap);
        va_end(ap);
        if (s == DOCTOR_WARNING)
                r->n_warnings++;
        else if (s == DOCTOR_ERROR)
                r->n_errors++;
        return 0;
}

static bool backend_loaded(const Agent *a, const char *name) {
        for (size_t i = 0; i < a->n_backends; i++)
                if (strcmp(a->backends[i]->vtable->name, name) == 0)
                        return true;
        return false;
}

static int check_journal(Agent *a, DoctorReport *r) {
        const JournalReport *rep = journal_report(a->journal);
        switch (journal_state(a->journal)) {
        case JOURNAL_STATE_OK:
                return add(r, DOCTOR_OK, "journal", "ok: %zu live objects, last LSN %llu", live_set_n_objects(journal_live_set(a->journal)),
                           (unsigned long long) journal_last_lsn(a->journal));
        case JOURNAL_STATE_TORN_TAIL_REPAIRED:
                return add(r, DOCTOR_WARNING, "journal", "torn tail repaired at start: %s", rep->message);
        case JOURNAL_STATE_QUARANTINE:
                return add(r, DOCTOR_ERROR, "journal",
                           "QUARANTINE (mid-log damage): %s; garbage collection deletes only what kernel tags "
                           "prove is ours",
                           rep->message);
        default:
                return add(r, DOCTOR_ERROR, "journal", "failed: %s", journal_error_message(a->journal));
        }
}

static int check_vms(Agent *a, DoctorReport *r) {
        size_t by_state[_VM_STATE_MAX] = {}, objects = 0, no_def = 0, n;
        _cleanup_free_ AgentVmInfo *vms = NULL;
        int k = agent_vm_list(a, &vms, &n);
        if (k < 0)
                return k;
        for (size_t i = 0; i < n; i++) {
                by_state[vms[i].state]++;
                objects += vms[i].n_objects;
                no_def += !vms[i].def;
        }
        k = add(r, DOCTOR_OK, "vms", "%zu defined, %zu running, %zu stopping, %zu stopped, %zu crashed",
                    by_state[VM_STATE_DEFINED], by_state[VM_STATE_RUNNING], by_state[VM_STATE_STOPPING],
                    by_state[VM_STATE_STOPPED], by_state[VM_STATE_CRASHED]);
        if (k >= 0 && no_def)
                k = add(r, DOCTOR_WARNING, "vms", "%zu VM(s) without a readable definition file in %s/vms", no_def,
                        a->cfg.state_dir);
        if (k >= 0)
                k = add(r, DOCTOR_OK, "objects", "%zu kernel objects owned by VMs, %zu in all in the journal",
                        objects, live_set_n_objects(journal_live_set(a->journal)));
        return k;
}

static int check_scan(Agent *a, DoctorReport *r) {
        GcPlan p;
        GcOptions o = { .dry_run = true };
        int k = agent_gc(a, &o, &p);
        if (k < 0)
                return add(r, DOCTOR_ERROR, "scan", "cannot scan the kernel: %s", a->error);
        size_t leaked = p.by_reason[GC_REASON_OWNED] + p.by_reason[GC_REASON_UNTRACKED];
        if (leaked)
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu object(s) of VMs that are not running are still in the kernel: `chvmctl doctor --gc` "
                        "deletes them",
                        leaked);
        if (k >= 0 && p.by_reason[GC_REASON_GONE])
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu journaled object(s) are gone from the kernel: `chvmctl doctor --gc` forgets them",
                        p.by_reason[GC_REASON_GONE]);
        if (k >= 0 && p.by_reason[GC_REASON_UNKNOWN_OWNERSHIP])
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu untagged object(s) look like ours (TAP prefix %s, or in table %s) and are left alone; "
                        "`chvmctl doctor --gc --force-heuristic` would judge them by name and subnet",
                        p.by_reason[GC_REASON_UNKNOWN_OWNERSHIP], a->cfg.local_tap_prefix, a->cfg.local_table);
        if (k >= 0 && p.by_reason[GC_REASON_TAG_MISMATCH])
                k = add(r, DOCTOR_WARNING, "scan",
                        "%zu object(s) the journal names carry another tag in the kernel (name reused)",
                        p.by_reason[GC_REASON_TAG_MISMATCH]);
        if (k >= 0)
                k = add(r, DOCTOR_OK, "scan", "%zu object(s) of running VMs, %zu shared, %zu of other agents",
                        p.by_reason[GC_REASON_RUNNING], p.by_reason[GC_REASON_CORE],
                        p.by_reason[GC_REASON_OTHER_AGENT]);
        gc_plan_clear(&p);
        return k;
}

static int check_ip_forward(Agent *a, DoctorReport *r) {
        char buf[8] = "";
        if (!backend_loaded(a, "local"))
                return 0;
        int fd = open("/proc/sys/net/ipv4/ip_forward", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                (void) !read(fd, buf, sizeof(buf) - 1);
                close(fd);
        }
        if (buf[0] == '1')
                return add(r, DOCTOR_OK, "ip_forward", "net.ipv4.ip_forward is 1");
        if (buf[0] == '0')
                return add(r, DOCTOR_WARNING, "ip_forward",
                           "net.ipv4.ip_forward is 0: guests on the local backend get no routed traffic (the "
                           "agent turns it on when it sets up the bridge; someone turned it off)");
        return add(r, DOCTOR_WARNING, "ip_forward", "cannot read /proc/sys/net/ipv4/ip_forward");
}

static const char *family_name(int f) {
        switch (f) {
        case NFPROTO_INET:
                return "inet";
        case NFPROTO_IPV4:
                return "ip";
        case NFPROTO_IPV6:
                return "ip6";
        case NFPROTO_BRIDGE:
                return "bridge";
        case NFPROTO_NETDEV:
                return "netdev";
        case NFPROTO_ARP:
                return "arp";
        default:
                return "?";
        }
}

/* Guests' traffic crosses the forward hook (routed), and prerouting/forward of the bridge family; the
 * guests' DHCP (and whatever else they send to the host) also the bridge family's input and output, where
 * the agent's DHCP server's packet socket takes and sends its frames (before and after the inet family's
 * hooks, which therefore never see DHCP). A drop policy in anyone's chain there applies to it too. */
static bool on_guest_path(const NftBaseChain *c) {
        if (c->family == NFPROTO_BRIDGE)
                return c->hook == NF_BR_PRE_ROUTING || c->hook == NF_BR_FORWARD || c->hook == NF_BR_LOCAL_IN ||
                       c->hook == NF_BR_LOCAL_OUT;
        if (c->family == NFPROTO_INET || c->family == NFPROTO_IPV4)
                return c->hook == NF_INET_FORWARD || c->hook == NF_INET_PRE_ROUTING;
        return false;
}

static int check_firewall(Agent *a, DoctorReport *r) {
        _cleanup_free_ NftBaseChain *chains = NULL;
        size_t n = 0, drops = 0;
        Nft *nft = NULL;
        int k = nft_open(&nft);
        if (k >= 0)
                k = nft_dump_base_chains(nft, &chains, &n);
        nft_close(nft);
        if (k < 0)
                return add(r, DOCTOR_WARNING, "firewall", "cannot list nftables chains: %s", strerror(-k));
        for (size_t i = 0; i < n; i++) {
                const NftBaseChain *c = &chains[i];
                if (strcmp(c->table, a->cfg.local_table) == 0 || c->policy != NF_DROP || !on_guest_path(c))
                        continue;
                drops++;
                if (c->family == NFPROTO_BRIDGE)
                        k = add(r, DOCTOR_WARNING, "firewall",
                                "table bridge %s chain %s has policy drop: it applies to the guests' frames too%s; "
                                "allow them there, e.g. %s \"%s*\" accept",
                                c->table, c->chain,
                                c->hook == NF_BR_LOCAL_IN || c->hook == NF_BR_LOCAL_OUT
                                        ? ", and drops their DHCP (udp 67/68) so that they get no address"
                                        : "",
                                c->hook == NF_BR_LOCAL_OUT ? "oifname" : "iifname", a->cfg.local_tap_prefix);
                else
                        k = add(r, DOCTOR_WARNING, "firewall",
                                "table %s %s chain %s has policy drop: it applies to guest traffic too; allow it "
                                "there, e.g. iifname \"%s\" accept and oifname \"%s\" ct state "
                                "established,related accept",
                                family_name(c->family), c->table, c->chain, a->cfg.local_bridge,
                                a->cfg.local_bridge);
                if (k < 0)
                        return k;
        }
        return drops ? 0 : add(r, DOCTOR_OK, "firewall", "no drop policy in other tables on the guests' path");
}

/* Who may change our tables ([local] table_owner): owned ones only the agent, and `nft flush ruleset` by
 * others passes them by; plain ones anyone, and a flush takes the guests' forwards and anti-spoofing away
 * until the next bring-up rebuilds them. */
static int check_table_owner(Agent *a, DoctorReport *r) {
        NftLayout l = { .table = a->cfg.local_table };
        NftTableInfo info;
        Nft *nft = NULL;
        int k = nft_open(&nft);
        if (k >= 0)
                k = nft_table_info(nft, &l, NFPROTO_INET, &info);
        nft_close(nft);
        if (k == -ENOENT)
                return add(r, DOCTOR_OK, "tables", "tables %s not made yet (the first bring-up makes them)",
                           l.table);
        if (k < 0)
                return add(r, DOCTOR_WARNING, "tables", "cannot read table inet %s: %s", l.table,
                           strerror(-k));
        if ((info.flags & (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST)) ==
            (NFT_TABLE_F_OWNER | NFT_TABLE_F_PERSIST))
                return add(
                        r, DOCTOR_OK, "tables",
                        "tables inet/bridge %s belong to the agent (flags owner, persist): only it may change "
                        "them, nft flush ruleset by others passes them by",
                        l.table);
        if (info.flags & NFT_TABLE_F_PERSIST)
                return add(
                        r, DOCTOR_WARNING, "tables",
                        "tables inet/bridge %s are orphaned (no agent holds them): anyone may change or flush "
                        "them until an agent adopts them at its start",
                        l.table);
        return add(
                r, a->cfg.local_table_owner == TABLE_OWNER_NO ? DOCTOR_OK : DOCTOR_WARNING, "tables",
                "tables inet/bridge %s are plain (%s): anyone may change them, and nft flush ruleset removes "
                "them with the guests' port forwards and anti-spoofing until the next bring-up rebuilds them",
                l.table,
                a->cfg.local_table_owner == TABLE_OWNER_NO
                        ? "table_owner = no"
                        : "made with table_owner = no, or on a kernel without NFT_TABLE_F_PERSIST (6.9)");
}

static int cmp_link_name(const void *x, const void *y) {
        return strcmp(((const LinkInfo *) x)->name, ((const LinkInfo *) y)->name);
}

/* Running VMs' TAPs must exist and be ports of the agent's bridge (someone may have deleted chvm0). */
static int check_links(Agent *a, DoctorReport *r) {
        const LinkInfo *dump = NULL;
        size_t n = 0, missing = 0, detached = 0;
        int k = agent_links(a, &dump, &n); /* the dump the plan's scans read too */
        if (k < 0)
                return add(r, DOCTOR_WARNING, "links", "cannot list links: %s", strerror(-k));
        /* sorted by name here: a copy, the shared dump stays as it is */
        _cleanup_free_ LinkInfo *links = n ? malloc(n * sizeof(LinkInfo)) : NULL;
        if (n && !links)
                return -ENOMEM;
        if (n)
                memcpy(links, dump, n * sizeof(LinkInfo));
        uint32_t bridge = 0;
        for (size_t i = 0; i < n; i++)
                if (strcmp(links[i].name, a->cfg.local_bridge) == 0)
                        bridge = links[i].ifindex;
        _cleanup_free_ AgentVmInfo *vms = NULL;
        size_t n_vms;
        k = agent_vm_list(a, &vms, &n_vms);
        if (k < 0)
                return k;
        qsort(links, n, sizeof(LinkInfo), cmp_link_name);
        for (size_t i = 0; i < n_vms; i++) {
                const AgentVmInfo *info = &vms[i];
                LinkInfo key;
                if (!info->vmm_pid || !info->tap[0] || strcmp(info->backend, "local") != 0)
                        continue;
                snprintf(key.name, sizeof(key.name), "%s", info->tap);
                const LinkInfo *l = bsearch(&key, links, n, sizeof(LinkInfo), cmp_link_name);
                if (!l) {
                        missing++;
                        k = add(r, DOCTOR_ERROR, "links", "VM %s is running but its TAP %s is gone",
                                info->name, info->tap);
                } else if (!bridge || l->master != bridge) {
                        detached++;
                        k = add(r, DOCTOR_ERROR, "links", "VM %s: its TAP %s is not a port of bridge %s%s",
                                info->name, info->tap, a->cfg.local_bridge,
                                bridge ? "" : " (the bridge is gone)");
                }
                if (k < 0)
                        return k;
        }
        return missing || detached ? 0 : add(r, DOCTOR_OK, "links", "running VMs' TAPs are in place");
}

static int agent_doctor_(Agent *a, DoctorReport *ret);

/* One dump of the links for the whole report: the plan's scans and the TAP check read the same. */
int agent_doctor(Agent *a, DoctorReport *ret) {
        agent_links_hold(a);
        int k = agent_doctor_(a, ret);
        agent_links_release(a);
        return k;
}

static int agent_doctor_(Agent *a, DoctorReport *ret) {
        DoctorReport r = {};
        agent_refresh(a);
        int k = check_journal(a, &r);
        if (k >= 0) {
                char names[256] = "";
                for (size_t i = 0; i < a->n_backends; i++) {
                        size_t o = strlen(names);
                        snprintf(names + o, sizeof(names) - o, "%s%s", i ? " " : "", a->backends[i]->vtable->name);
                }
                k = add(&r, DOCTOR_OK, "backends", "loaded: %s", names);
        }
        if (k >= 0)
                k = check_vms(a, &r);
        if (k >= 0)
                k = check_scan(a, &r);
        if (k >= 0)
                k = check_ip_forward(a, &r);
        if (k >= 0 && backend_loaded(a, "local"))
                k = check_firewall(a, &r);
        if (k >= 0 && backend_loaded(a, "local"))
                k = check_table_owner(a, &r);
        if (k >= 0)
                k = check_links(a, &r);
        if (k < 0) {
                doctor_report_clear(&r);
                return k;
        }
        *ret = r;
        return 0;
}
