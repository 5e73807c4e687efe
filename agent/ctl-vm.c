/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* chvmctl run, create, start, stop, kill, rm. */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/api.h"
#include "agent/ctl.h"
#include "state/vmdef.h"
#include "util/json.h"

#define CTL_MAX_TIMEOUT 3600U

static bool parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        if (!s[0] || s[0] == '-' || s[0] == '+')
                return false;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return false;
        *ret = v;
        return true;
}

/* The agent wants absolute paths; a path given relative to the admin's directory is made absolute here. */
static const char *absolute(const char *path, char buf[PATH_MAX]) {
        if (path[0] == '/' || !realpath(path, buf))
                return path;
        return buf;
}

typedef struct CreateArgs {
        const char *name, *backend, *hypervisor, *kernel, *firmware, *initrd, *cmdline;
        uint64_t cpus, memory;
        const char *disks[VM_DEF_MAX_DISKS];
        size_t n_disks;
        PortForward ports[VM_DEF_MAX_PORTS];
        size_t n_ports;
        bool force_port;
} CreateArgs;

static void create_help(const char *cmd) {
        printf("Usage: chvmctl %s NAME (--kernel PATH | --disk PATH) [OPTIONS]\n"
               "\n"
               "%s\n"
               "Without --kernel the VM boots its first disk through its firmware (QEMU: SeaBIOS, or\n"
               "--firmware; cloud-hypervisor needs --firmware). The guest gets its address by DHCP (local\n"
               "backend) and, booted with --kernel, also as ip= on its command line.\n"
               "\n"
               "  --kernel PATH        guest kernel, booted directly\n"
               "  --initrd PATH        initramfs (with --kernel)\n"
               "  --firmware PATH      firmware to boot with: OVMF.fd for QEMU, rust-hypervisor-firmware or\n"
               "                       CLOUDHV.fd for cloud-hypervisor\n"
               "  --disk PATH          raw disk image (repeatable, at most %d; vda, vdb, ...)\n"
               "  --cmdline STR        extra kernel arguments, with --kernel (the agent adds console= and\n"
               "                       ip=)\n"
               "  --cpus N             virtual CPUs (default 1)\n"
               "  --memory MIB         memory in MiB (default 256)\n"
               "  --backend NAME       local, bridge or mosnet (default: the agent's default_backend)\n"
               "  --hypervisor KIND    cloud-hypervisor or qemu (default: the agent's [vmm] hypervisor)\n"
               "  -p, --publish HOSTPORT:GUESTPORT[/tcp|/udp]\n"
               "                       forward a host port to the guest (repeatable, at most %d; local only)\n"
               "  --force-port         forward ports the host keeps for itself ([local] reserved_ports: by\n"
               "                       default every port a socket of the host listens on); root only\n"
               "  --json               print {name, id, state} as JSON\n"
               "  -h, --help           show this help\n",
               cmd,
               strcmp(cmd, "run") == 0 ? "Creates a VM and starts it."
                                       : "Creates a VM; `chvmctl start NAME` starts it.",
               VM_DEF_MAX_DISKS, VM_DEF_MAX_PORTS);
}

static int parse_create(const char *cmd, Ctl *ctl, int argc, char *argv[], CreateArgs *a) {
        enum {
                ARG_KERNEL = 0x100,
                ARG_FIRMWARE,
                ARG_INITRD,
                ARG_DISK,
                ARG_CMDLINE,
                ARG_CPUS,
                ARG_MEMORY,
                ARG_BACKEND,
                ARG_HYPERVISOR,
                ARG_FORCE_PORT,
                ARG_JSON
        };
        static const struct option options[] = {
                { "kernel", required_argument, NULL, ARG_KERNEL },
                { "firmware", required_argument, NULL, ARG_FIRMWARE },
                { "initrd", required_argument, NULL, ARG_INITRD },
                { "disk", required_argument, NULL, ARG_DISK },
                { "cmdline", required_argument, NULL, ARG_CMDLINE },
                { "cpus", required_argument, NULL, ARG_CPUS },
                { "memory", required_argument, NULL, ARG_MEMORY },
                { "backend", required_argument, NULL, ARG_BACKEND },
                { "hypervisor", required_argument, NULL, ARG_HYPERVISOR },
                { "publish", required_argument, NULL, 'p' },
                { "force-port", no_argument, NULL, ARG_FORCE_PORT },
                { "json", no_argument, NULL, ARG_JSON },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        static char paths[3 + VM_DEF_MAX_DISKS][PATH_MAX];
        Error err;
        int c;

        *a = (CreateArgs){
                .backend = "", .hypervisor = "", .kernel = "", .firmware = "", .initrd = "", .cmdline = ""
        };
        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":p:h", options, NULL)) >= 0) {
                switch (c) {
                case ARG_KERNEL:
                        a->kernel = absolute(optarg, paths[0]);
                        break;
                case ARG_INITRD:
                        a->initrd = absolute(optarg, paths[1]);
                        break;
                case ARG_FIRMWARE:
                        a->firmware = absolute(optarg, paths[2 + VM_DEF_MAX_DISKS]);
                        break;
                case ARG_DISK:
                        if (a->n_disks == VM_DEF_MAX_DISKS)
                                return ctl_usage(cmd, "--disk: at most %d disks", VM_DEF_MAX_DISKS);
                        a->disks[a->n_disks] = absolute(optarg, paths[2 + a->n_disks]);
                        a->n_disks++;
                        break;
                case ARG_CMDLINE:
                        a->cmdline = optarg;
                        break;
                case ARG_CPUS:
                        if (!parse_uint(optarg, 1, 512, &a->cpus))
                                return ctl_usage(cmd, "--cpus \"%s\": expected a number from 1 to 512",
                                                 optarg);
                        break;
                case ARG_MEMORY:
                        if (!parse_uint(optarg, 32, UINT64_C(1) << 24, &a->memory))
                                return ctl_usage(cmd, "--memory \"%s\": expected MiB from 32 to 16777216",
                                                 optarg);
                        break;
                case ARG_BACKEND:
                        a->backend = optarg;
                        break;
                case ARG_HYPERVISOR:
                        if (strcmp(optarg, "cloud-hypervisor") != 0 && strcmp(optarg, "qemu") != 0)
                                return ctl_usage(cmd,
                                                 "--hypervisor \"%s\": expected cloud-hypervisor or qemu",
                                                 optarg);
                        a->hypervisor = optarg;
                        break;
                case 'p':
                        if (a->n_ports == VM_DEF_MAX_PORTS)
                                return ctl_usage(cmd, "-p: at most %d ports", VM_DEF_MAX_PORTS);
                        if (port_forward_parse(optarg, &a->ports[a->n_ports], &err) < 0)
                                return ctl_usage(cmd, "-p: %s", error_message(&err));
                        for (size_t i = 0; i < a->n_ports; i++)
                                if (a->ports[i].proto == a->ports[a->n_ports].proto &&
                                    a->ports[i].host_port == a->ports[a->n_ports].host_port)
                                        return ctl_usage(cmd, "-p %s: host port %u/%s is given twice",
                                                         optarg, a->ports[i].host_port,
                                                         a->ports[i].proto == IPPROTO_UDP ? "udp" : "tcp");
                        a->n_ports++;
                        break;
                case ARG_FORCE_PORT:
                        a->force_port = true;
                        break;
                case ARG_JSON:
                        ctl->json = true;
                        break;
                case 'h':
                        create_help(cmd);
                        return -1;
                case ':':
                        return ctl_usage(cmd, "%s needs an argument", argv[optind - 1]);
                default:
                        return ctl_usage(cmd, "unknown option %s", argv[optind - 1]);
                }
        }
        if (optind >= argc)
                return ctl_usage(cmd, "a VM NAME is needed");
        a->name = argv[optind++];
        if (optind < argc)
                return ctl_usage(cmd,
                                 "unexpected argument \"%s\" (options go before or after NAME, "
                                 "one VM per command)",
                                 argv[optind]);
        if (!a->kernel[0] && a->n_disks == 0 && !a->firmware[0])
                return ctl_usage(cmd,
                                 "--kernel PATH or --disk PATH is needed (a VM boots a kernel, or its first "
                                 "disk through its firmware)");
        if (!a->kernel[0] && (a->initrd[0] || a->cmdline[0]))
                return ctl_usage(cmd,
                                 "%s needs --kernel (without it the VM boots its first disk through its "
                                 "firmware)",
                                 a->initrd[0] ? "--initrd" : "--cmdline");
        return 0;
}

/* CreateVM, or RunVM (create and start in one call, nothing left when the start fails). */
static int call_create(Ctl *ctl, const CreateArgs *a, bool start, uint64_t *ret_id) {
        CtlMsg *m = NULL, *reply = NULL;
        int r = ctl_new_call(ctl, start ? "RunVM" : "CreateVM", &m);
        if (r != 0)
                return r;
        r = ctl_msg_append(m, "sssssssut", a->name, a->backend, a->hypervisor, a->kernel, a->firmware,
                           a->initrd, a->cmdline, (uint32_t) a->cpus, a->memory);
        if (r >= 0)
                r = ctl_msg_open_container(m, 'a', "s");
        for (size_t i = 0; r >= 0 && i < a->n_disks; i++)
                r = ctl_msg_append(m, "s", a->disks[i]);
        if (r >= 0)
                r = ctl_msg_close_container(m);
        if (r >= 0)
                r = ctl_msg_open_container(m, 'a', "(sqq)");
        for (size_t i = 0; r >= 0 && i < a->n_ports; i++)
                r = ctl_msg_append(m, "(sqq)", a->ports[i].proto == IPPROTO_UDP ? "udp" : "tcp",
                                   a->ports[i].host_port, a->ports[i].guest_port);
        if (r >= 0)
                r = ctl_msg_close_container(m);
        if (r >= 0)
                r = ctl_msg_append(m, "t", a->force_port ? API_CREATE_FORCE_PORT : UINT64_C(0));
        if (r < 0) {
                ctl_msg_free(m);
                return ctl_fail(r, "cannot build the request");
        }
        r = ctl_call(ctl, m, 0, &reply);
        ctl_msg_free(m);
        if (r != 0)
                return r;
        r = ctl_msg_read(reply, "t", ret_id);
        ctl_msg_free(reply);
        return r < 0 ? ctl_fail(r, "cannot read the agent's answer") : 0;
}

static void print_created(Ctl *ctl, const char *name, uint64_t id, const char *state) {
        if (ctl->json) {
                JsonWriter w;
                char hex[17];
                snprintf(hex, sizeof(hex), "%016" PRIx64, id);
                json_begin(&w, stdout);
                json_object_open(&w);
                json_kv_string(&w, "name", name);
                json_kv_string(&w, "id", hex);
                json_kv_string(&w, "state", state);
                json_object_close(&w);
                json_end(&w);
        } else
                printf("%s\n", name);
}

static int create_or_run(Ctl *ctl, int argc, char *argv[], bool start) {
        const char *cmd = start ? "run" : "create";
        CreateArgs a;
        uint64_t id;
        int r = parse_create(cmd, ctl, argc, argv, &a);
        if (r != 0)
                return r < 0 ? 0 : r;
        r = call_create(ctl, &a, start, &id);
        if (r != 0)
                return r;
        print_created(ctl, a.name, id, start ? "running" : "defined");
        return 0;
}

int ctl_run_main(Ctl *ctl, int argc, char *argv[]) {
        return create_or_run(ctl, argc, argv, true);
}

int ctl_create_main(Ctl *ctl, int argc, char *argv[]) {
        return create_or_run(ctl, argc, argv, false);
}

/* --- start, stop, kill, rm: one or more VMs -------------------------------------------------------- */

typedef struct MultiArgs {
        unsigned timeout; /* stop */
        bool force; /* rm */
} MultiArgs;

typedef struct MultiCommand {
        const char *name;
        const char *verb; /* for progress: "stopping" */
        const char *help;
} MultiCommand;

static int one(Ctl *ctl, const MultiCommand *mc, const MultiArgs *ma, const char *vm) {
        if (strcmp(mc->name, "start") == 0)
                return ctl_call_name(ctl, "StartVM", vm, 0);
        if (strcmp(mc->name, "kill") == 0)
                return ctl_call_name(ctl, "KillVM", vm, 0);

        CtlMsg *m = NULL;
        uint64_t timeout = 0;
        int r = ctl_new_call(ctl, strcmp(mc->name, "stop") == 0 ? "StopVM" : "RemoveVM", &m);
        if (r != 0)
                return r;
        if (strcmp(mc->name, "stop") == 0) {
                r = ctl_msg_append(m, "su", vm, ma->timeout);
                /* power button, SIGTERM, SIGKILL: up to two timeouts, plus slack */
                timeout = (uint64_t) (2 * (ma->timeout ? ma->timeout : CTL_MAX_TIMEOUT) + 30) * 1000000;
        } else
                r = ctl_msg_append(m, "sb", vm, ma->force);
        if (r < 0) {
                ctl_msg_free(m);
                return ctl_fail(r, "cannot build the request");
        }
        r = ctl_call(ctl, m, timeout, NULL);
        ctl_msg_free(m);
        return r;
}

static int multi(Ctl *ctl, const MultiCommand *mc, int argc, char *argv[]) {
        enum { ARG_JSON = 0x100, ARG_TIMEOUT };
        static const struct option options[] = {
                { "json", no_argument, NULL, ARG_JSON },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "force", no_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        bool is_stop = strcmp(mc->name, "stop") == 0, is_rm = strcmp(mc->name, "rm") == 0;
        MultiArgs ma = {};
        int c;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":fh", options, NULL)) >= 0) {
                uint64_t v;
                switch (c) {
                case ARG_JSON:
                        ctl->json = true;
                        break;
                case ARG_TIMEOUT:
                        if (!is_stop)
                                return ctl_usage(mc->name, "unknown option --timeout");
                        if (!parse_uint(optarg, 1, CTL_MAX_TIMEOUT, &v))
                                return ctl_usage(mc->name, "--timeout \"%s\": expected seconds from 1 to %u",
                                                 optarg, CTL_MAX_TIMEOUT);
                        ma.timeout = (unsigned) v;
                        break;
                case 'f':
                        if (!is_rm)
                                return ctl_usage(mc->name, "unknown option -f");
                        ma.force = true;
                        break;
                case 'h':
                        printf("%s", mc->help);
                        return 0;
                case ':':
                        return ctl_usage(mc->name, "%s needs an argument", argv[optind - 1]);
                default:
                        return ctl_usage(mc->name, "unknown option %s", argv[optind - 1]);
                }
        }
        if (optind >= argc)
                return ctl_usage(mc->name, "at least one VM NAME is needed");

        int n = argc - optind, first_error = 0;
        JsonWriter w;
        if (ctl->json) {
                json_begin(&w, stdout);
                json_array_open(&w);
        }
        for (int i = 0; i < n; i++) {
                const char *vm = argv[optind + i];
                if (ctl->progress && n > 1)
                        fprintf(stderr, "\r\033[K[%d/%d] %s %s", i + 1, n, mc->verb, vm);
                int r = one(ctl, mc, &ma, vm);
                if (ctl->progress && n > 1 && r != 0)
                        fputc('\n', stderr);
                if (r != 0 && !first_error)
                        first_error = r;
                if (ctl->json) {
                        json_object_open(&w);
                        json_kv_string(&w, "name", vm);
                        json_kv_bool(&w, "ok", r == 0);
                        json_object_close(&w);
                }
                if (r == CTL_EXIT_UNREACHABLE)
                        break;
        }
        if (ctl->progress && n > 1)
                fprintf(stderr, "\r\033[K");
        if (ctl->json) {
                json_array_close(&w);
                json_end(&w);
        }
        return first_error;
}

int ctl_start_main(Ctl *ctl, int argc, char *argv[]) {
        static const MultiCommand mc = {
                "start", "starting",
                "Usage: chvmctl start NAME...\n\nStarts VMs: network up, then the "
                "hypervisor.\n\n  --json      print [{name, ok}]\n  -h, --help  show "
                "this help\n"
        };
        return multi(ctl, &mc, argc, argv);
}

int ctl_stop_main(Ctl *ctl, int argc, char *argv[]) {
        static const MultiCommand mc = {
                "stop", "stopping",
                "Usage: chvmctl stop [--timeout S] NAME...\n\nStops VMs: the hypervisor's power button, then "
                "SIGTERM after S seconds, then SIGKILL after another S\n(default: the agent's stop_timeout). "
                "Returns once each VM is down and its network torn down.\n\n  --timeout S  seconds per step, 1 "
                "to 3600\n  --json       print [{name, ok}]\n  -h, --help   show this help\n"
        };
        return multi(ctl, &mc, argc, argv);
}

int ctl_kill_main(Ctl *ctl, int argc, char *argv[]) {
        static const MultiCommand mc = {
                "kill", "killing",
                "Usage: chvmctl kill NAME...\n\nKills VMs' hypervisors with SIGKILL "
                "and returns once their network is torn down.\nA hypervisor that is "
                "gone already is fine.\n\n  --json      print [{name, ok}]\n  -h, "
                "--help  show this help\n"
        };
        return multi(ctl, &mc, argc, argv);
}

int ctl_rm_main(Ctl *ctl, int argc, char *argv[]) {
        static const MultiCommand mc = {
                "rm", "removing",
                "Usage: chvmctl rm [-f] NAME...\n\nRemoves VMs (definition and journal "
                "entry). A running VM is refused unless -f,\nwhich kills it "
                "first.\n\n  -f, --force  kill a running VM first\n  --json       print "
                "[{name, ok}]\n  -h, --help   show this help\n"
        };
        return multi(ctl, &mc, argc, argv);
}
