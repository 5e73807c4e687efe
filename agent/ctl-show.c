/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* chvmctl list, inspect, status. */

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/ctl.h"
#include "util/json.h"

typedef struct VmRecord {
        const char *name;
        uint64_t id;
        const char *state, *exit_reason;
        uint32_t vmm_pid;
        const char *backend, *hypervisor, *tap, *ip, *mac;
        struct {
                const char *proto;
                uint16_t host, guest;
        } ports[64];
        size_t n_ports;
} VmRecord;

static int read_vm(CtlMsg *m, VmRecord *v) {
        int r = ctl_msg_enter_container(m, 'r', "stssusssssa(sqq)");
        if (r <= 0)
                return r;
        *v = (VmRecord){};
        r = ctl_msg_read(m, "stssusssss", &v->name, &v->id, &v->state, &v->exit_reason, &v->vmm_pid,
                         &v->backend, &v->hypervisor, &v->tap, &v->ip, &v->mac);
        if (r < 0)
                return r;
        r = ctl_msg_enter_container(m, 'a', "(sqq)");
        if (r < 0)
                return r;
        const char *proto;
        uint16_t host, guest;
        while ((r = ctl_msg_read(m, "(sqq)", &proto, &host, &guest)) > 0)
                if (v->n_ports < 64) {
                        v->ports[v->n_ports].proto = proto;
                        v->ports[v->n_ports].host = host;
                        v->ports[v->n_ports].guest = guest;
                        v->n_ports++;
                }
        if (r < 0)
                return r;
        r = ctl_msg_exit_container(m);
        if (r < 0)
                return r;
        r = ctl_msg_exit_container(m);
        return r < 0 ? r : 1;
}

static void json_vm(JsonWriter *w, const VmRecord *v, bool close) {
        char id[17];
        snprintf(id, sizeof(id), "%016" PRIx64, v->id);
        json_object_open(w);
        json_kv_string(w, "name", v->name);
        json_kv_string(w, "id", id);
        json_kv_string(w, "state", v->state);
        json_kv_string(w, "exit_reason", v->exit_reason[0] ? v->exit_reason : NULL);
        json_key(w, "vmm_pid");
        if (v->vmm_pid)
                json_uint(w, v->vmm_pid);
        else
                json_null(w);
        json_kv_string(w, "backend", v->backend);
        json_kv_string(w, "hypervisor", v->hypervisor);
        json_kv_string(w, "tap", v->tap[0] ? v->tap : NULL);
        json_kv_string(w, "ip", v->ip[0] ? v->ip : NULL);
        json_kv_string(w, "mac", v->mac);
        json_key(w, "ports");
        json_array_open(w);
        for (size_t i = 0; i < v->n_ports; i++) {
                json_object_open(w);
                json_kv_string(w, "proto", v->ports[i].proto);
                json_kv_string(w, "host_addr", NULL); /* every local address */
                json_kv_uint(w, "host_port", v->ports[i].host);
                json_kv_uint(w, "guest_port", v->ports[i].guest);
                json_object_close(w);
        }
        json_array_close(w);
        if (close)
                json_object_close(w);
}

static void ports_string(const VmRecord *v, char *buf, size_t size) {
        size_t o = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < v->n_ports && o + 1 < size; i++) {
                int n = snprintf(buf + o, size - o, "%s%u->%u/%s", i ? "," : "", v->ports[i].host,
                                 v->ports[i].guest, v->ports[i].proto);
                if (n < 0)
                        break;
                o += (size_t) n;
        }
        if (!buf[0])
                snprintf(buf, size, "-");
}

static bool is_up(const char *state) {
        return strcmp(state, "running") == 0 || strcmp(state, "stopping") == 0 ||
               strcmp(state, "starting") == 0;
}

int ctl_list_main(Ctl *ctl, int argc, char *argv[]) {
        static const struct option options[] = {
                { "all", no_argument, NULL, 'a' },
                { "quiet", no_argument, NULL, 'q' },
                { "json", no_argument, NULL, 'j' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        bool all = false, quiet = false;
        int c, r;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":aqh", options, NULL)) >= 0) {
                switch (c) {
                case 'a':
                        all = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case 'j':
                        ctl->json = true;
                        break;
                case 'h':
                        printf("Usage: chvmctl list [-a] [-q]\n\nLists running VMs (-a: all VMs, also defined, "
                               "stopped and crashed ones,\nwith the reason each one is down). A hypervisor that "
                               "died is never shown as running:\nthe agent checks first.\n\n"
                               "  -a, --all    all VMs, and a REASON column\n  -q, --quiet  names only\n"
                               "  --json       print an array of {name, id, state, exit_reason, vmm_pid, backend,\n"
                               "               hypervisor, tap, ip, mac, ports}\n  -h, --help   show this "
                               "help\n");
                        return 0;
                default:
                        return ctl_usage("list", "unknown option %s", argv[optind - 1]);
                }
        }
        if (optind < argc)
                return ctl_usage("list", "unexpected argument \"%s\"", argv[optind]);

        CtlMsg *m = NULL, *reply = NULL;
        r = ctl_new_call(ctl, "ListVMs", &m);
        if (r != 0)
                return r;
        r = ctl_call(ctl, m, 0, &reply);
        ctl_msg_free(m);
        if (r != 0)
                return r;

        JsonWriter w;
        VmRecord v;
        if (ctl->json) {
                json_begin(&w, stdout);
                json_array_open(&w);
        } else if (!quiet)
                /* -a shows stopped and crashed VMs too, and then why each one is down. */
                printf("%-20s %-9s %-8s %-8s %-16s %-16s %s%s\n", "NAME", "STATE", "PID", "BACKEND", "IP",
                       "TAP", all ? "PORTS            " : "PORTS", all ? "REASON" : "");
        r = ctl_msg_enter_container(reply, 'a', "(stssusssssa(sqq))");
        while (r >= 0 && (r = read_vm(reply, &v)) > 0) {
                if (!all && !is_up(v.state))
                        continue;
                if (ctl->json)
                        json_vm(&w, &v, true);
                else if (quiet)
                        printf("%s\n", v.name);
                else {
                        char pid[16], ports[256];
                        snprintf(pid, sizeof(pid), "%u", v.vmm_pid);
                        ports_string(&v, ports, sizeof(ports));
                        if (all)
                                printf("%-20s %-9s %-8s %-8s %-16s %-16s %-16s %s\n", v.name, v.state,
                                       v.vmm_pid ? pid : "-", v.backend, v.ip[0] ? v.ip : "-",
                                       v.tap[0] ? v.tap : "-", ports,
                                       v.exit_reason[0] ? v.exit_reason : "-");
                        else
                                printf("%-20s %-9s %-8s %-8s %-16s %-16s %s\n", v.name, v.state,
                                       v.vmm_pid ? pid : "-", v.backend, v.ip[0] ? v.ip : "-",
                                       v.tap[0] ? v.tap : "-", ports);
                }
        }
        if (ctl->json) {
                json_array_close(&w);
                json_end(&w);
        }
        ctl_msg_free(reply);
        return r < 0 ? ctl_fail(r, "cannot read the agent's answer") : 0;
}

int ctl_inspect_main(Ctl *ctl, int argc, char *argv[]) {
        if (ctl_wants_help(argc, argv)) {
                printf("Usage: chvmctl inspect NAME\n\nShows a VM: state, exit reason, hypervisor and its pid, "
                       "backend, TAP, IP, MAC,\nports, its definition and the kernel objects it owns with their "
                       "ownership tags.\n\n  --json      print one object: the keys of `list --json`, plus "
                       "kernel, initrd,\n              cmdline, cpus, memory_mib, disks and objects [{kind, "
                       "name, handle, tag}]\n  -h, --help  show this help\n");
                return 0;
        }
        const char *name = NULL;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        ctl->json = true;
                else if (argv[i][0] == '-')
                        return ctl_usage("inspect", "unknown option %s", argv[i]);
                else if (name)
                        return ctl_usage("inspect", "one VM NAME only");
                else
                        name = argv[i];
        }
        if (!name)
                return ctl_usage("inspect", "a VM NAME is needed");

        CtlMsg *m = NULL, *reply = NULL;
        int r = ctl_new_call(ctl, "InspectVM", &m);
        if (r != 0)
                return r;
        r = ctl_msg_append(m, "s", name);
        if (r < 0) {
                ctl_msg_free(m);
                return ctl_fail(r, "cannot build the request");
        }
        r = ctl_call(ctl, m, 0, &reply);
        ctl_msg_free(m);
        if (r != 0)
                return r;

        VmRecord v;
        const char *kernel, *firmware, *initrd, *cmdline, *def_error;
        uint32_t cpus;
        uint64_t memory;
        r = read_vm(reply, &v);
        if (r >= 0)
                r = ctl_msg_enter_container(reply, 'r', "ssssutas");
        if (r >= 0)
                r = ctl_msg_read(reply, "ssssut", &kernel, &firmware, &initrd, &cmdline, &cpus, &memory);
        char **disks = NULL;
        if (r >= 0)
                r = ctl_msg_read_strv(reply, &disks);
        if (r >= 0)
                r = ctl_msg_exit_container(reply);
        if (r < 0) {
                ctl_msg_free(reply);
                return ctl_fail(r, "cannot read the agent's answer");
        }

        JsonWriter w;
        if (ctl->json) {
                json_begin(&w, stdout);
                json_vm(&w, &v, false);
                json_kv_string(&w, "kernel", kernel[0] ? kernel : NULL);
                json_kv_string(&w, "firmware", firmware[0] ? firmware : NULL);
                json_kv_string(&w, "initrd", initrd[0] ? initrd : NULL);
                json_kv_string(&w, "cmdline", cmdline[0] ? cmdline : NULL);
                json_kv_uint(&w, "cpus", cpus);
                json_kv_uint(&w, "memory_mib", memory);
                json_key(&w, "disks");
                json_array_open(&w);
                for (char **d = disks; d && *d; d++)
                        json_string(&w, *d);
                json_array_close(&w);
                json_key(&w, "objects");
                json_array_open(&w);
        } else {
                char ports[256];
                ports_string(&v, ports, sizeof(ports));
                printf("name:        %s\nid:          %016" PRIx64 "\nstate:       %s\n", v.name, v.id,
                       v.state);
                if (v.exit_reason[0])
                        printf("exit reason: %s\n", v.exit_reason);
                if (v.vmm_pid)
                        printf("vmm_pid:     %u\n", v.vmm_pid);
                printf("hypervisor:  %s\nbackend:     %s\ntap:         %s\nip:          %s\nmac:         %s\n"
                       "ports:       %s\n",
                       v.hypervisor, v.backend, v.tap[0] ? v.tap : "-", v.ip[0] ? v.ip : "-", v.mac, ports);
                if (kernel[0])
                        printf("kernel:      %s\n", kernel);
                else
                        printf("boot:        first disk, through %s\n",
                               firmware[0] ? firmware : "the default firmware");
                if (firmware[0] && kernel[0])
                        printf("firmware:    %s\n", firmware);
                if (initrd[0])
                        printf("initrd:      %s\n", initrd);
                if (cmdline[0])
                        printf("cmdline:     %s\n", cmdline);
                if (cpus)
                        printf("cpus:        %u\nmemory:      %" PRIu64 " MiB\n", cpus, memory);
                for (char **d = disks; d && *d; d++)
                        printf("disk:        %s\n", *d);
                printf("objects:\n");
        }
        for (char **d = disks; d && *d; d++)
                free(*d);
        free(disks);

        const char *kind, *oname, *tag;
        uint64_t handle;
        size_t n = 0;
        r = ctl_msg_enter_container(reply, 'a', "(ssts)");
        while (r >= 0 && (r = ctl_msg_read(reply, "(ssts)", &kind, &oname, &handle, &tag)) > 0) {
                n++;
                if (ctl->json) {
                        json_object_open(&w);
                        json_kv_string(&w, "kind", kind);
                        json_kv_string(&w, "name", oname);
                        json_key(&w, "handle");
                        if (handle)
                                json_uint(&w, handle);
                        else
                                json_null(&w);
                        json_kv_string(&w, "tag", tag);
                        json_object_close(&w);
                } else
                        printf("  %-12s %-18s %s\n", kind, oname, tag);
        }
        if (r >= 0)
                r = ctl_msg_exit_container(reply);
        if (r >= 0)
                r = ctl_msg_read(reply, "s", &def_error);
        const char *lease_addr = "", *lease_host = "";
        uint64_t lease_usec = 0;
        if (r >= 0)
                r = ctl_msg_read(reply, "(sts)", &lease_addr, &lease_usec, &lease_host);
        if (r < 0) {
                ctl_msg_free(reply);
                return ctl_fail(r, "cannot read the agent's answer");
        }
        char acked[64] = "";
        if (lease_usec) {
                time_t t = (time_t) (lease_usec / 1000000);
                struct tm tm;
                strftime(acked, sizeof(acked), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        }
        if (ctl->json) {
                json_array_close(&w);
                json_kv_string(&w, "definition_error", def_error[0] ? def_error : NULL);
                json_key(&w, "lease");
                if (lease_usec) {
                        json_object_open(&w);
                        json_kv_string(&w, "address", lease_addr);
                        json_kv_string(&w, "acked", acked);
                        json_kv_string(&w, "client_hostname", lease_host[0] ? lease_host : NULL);
                        json_object_close(&w);
                } else
                        json_null(&w);
                json_object_close(&w);
                json_end(&w);
        } else {
                if (n == 0)
                        printf("  (none)\n");
                if (lease_usec)
                        printf("lease:       %s, acknowledged %s%s%s%s\n", lease_addr, acked,
                               lease_host[0] ? ", client host name \"" : "", lease_host,
                               lease_host[0] ? "\"" : "");
                if (def_error[0])
                        printf("warning:     %s\n", def_error);
        }
        ctl_msg_free(reply);
        return 0;
}

int ctl_status_main(Ctl *ctl, int argc, char *argv[]) {
        if (ctl_wants_help(argc, argv)) {
                printf("Usage: chvmctl status\n\nShows the agent: its id, version, the ownership journal's "
                       "state, VMs, backends,\nsocket and connected clients.\n\n  --json      print one "
                       "object\n  -h, --help  show this help\n");
                return 0;
        }
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        ctl->json = true;
                else
                        return ctl_usage("status", "unexpected argument \"%s\"", argv[i]);
        }
        CtlMsg *m = NULL, *reply = NULL;
        int r = ctl_new_call(ctl, "Status", &m);
        if (r != 0)
                return r;
        r = ctl_call(ctl, m, 0, &reply);
        ctl_msg_free(m);
        if (r != 0)
                return r;
        const char *id, *version, *jstate, *jmsg, *sock;
        uint32_t vms, running, clients;
        char **backends = NULL;
        r = ctl_msg_enter_container(reply, 'r', "ssssuuassu");
        if (r >= 0)
                r = ctl_msg_read(reply, "ssssuu", &id, &version, &jstate, &jmsg, &vms, &running);
        if (r >= 0)
                r = ctl_msg_read_strv(reply, &backends);
        if (r >= 0)
                r = ctl_msg_read(reply, "su", &sock, &clients);
        if (r < 0) {
                ctl_msg_free(reply);
                return ctl_fail(r, "cannot read the agent's answer");
        }
        if (ctl->json) {
                JsonWriter w;
                json_begin(&w, stdout);
                json_object_open(&w);
                json_kv_string(&w, "agent_id", id);
                json_kv_string(&w, "version", version);
                json_key(&w, "journal");
                json_object_open(&w);
                json_kv_string(&w, "state", jstate);
                json_kv_string(&w, "message", jmsg[0] ? jmsg : NULL);
                json_object_close(&w);
                json_kv_uint(&w, "vms", vms);
                json_kv_uint(&w, "running", running);
                json_key(&w, "backends");
                json_array_open(&w);
                for (char **b = backends; b && *b; b++)
                        json_string(&w, *b);
                json_array_close(&w);
                json_kv_string(&w, "socket", sock);
                json_kv_uint(&w, "clients", clients);
                json_object_close(&w);
                json_end(&w);
        } else {
                printf("agent:    %s (chvm-agentd %s)\njournal:  %s%s%s\nvms:      %u defined, %u running\n"
                       "backends:",
                       id, version, jstate, jmsg[0] ? ": " : "", jmsg, vms, running);
                for (char **b = backends; b && *b; b++)
                        printf(" %s", *b);
                printf("\nsocket:   %s (%u client%s)\n", sock, clients, clients == 1 ? "" : "s");
        }
        for (char **b = backends; b && *b; b++)
                free(*b);
        free(backends);
        ctl_msg_free(reply);
        return 0;
}
