/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* chvm-agentd: the daemon. Config, then the agent core (journal, backends, VMs, adoption), then the
 * control socket; READY=1 once both are up. SIGTERM/SIGINT end it cleanly and leave the VMs running (the
 * next start adopts them); the hypervisors are in process groups of their own and the unit uses
 * KillMode=process, so nothing else stops them. */

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/api.h"
#include "agent/backend-loader.h"
#include "agent/config.h"
#include "util/crashpoint.h"
#include "util/log.h"
#include "util/macro.h"
#include "vmm/hypervisor.h"
#include "vmm/process.h"

#ifndef CHVM_BACKEND_DIR
#define CHVM_BACKEND_DIR "/usr/lib/chvm-agent/backends"
#endif
#ifndef CHVM_CONFIG_PATH
#define CHVM_CONFIG_PATH "/etc/chvm/agent.conf"
#endif

typedef struct Daemon {
        sd_event *event;
        Agent *agent;
        Api *api;
        char status[128]; /* the last STATUS= sent: sent again only when it changes */
} Daemon;

static void help(void) {
        printf("Usage: chvm-agentd [OPTIONS]\n"
               "\n"
               "The chvm network agent: spawns hypervisors, gives each VM its TAP device, bridge port and\n"
               "nftables rules over netlink, journals every kernel object it creates before creating it, and\n"
               "tears down exactly what it owns. Controlled with chvmctl over its socket.\n"
               "\n"
               "Options:\n"
               "  -c, --config PATH      configuration file (default %s;\n"
               "                         built-in defaults when that file does not exist)\n"
               "      --check-config     parse the configuration, check the hypervisor binary, and exit\n"
               "      --log-target T     auto (journald when stderr is the journal), stderr or journal\n"
               "  -v, --verbose          also log debug messages\n"
               "      --list-crash-points  (for tests) the CHVM_CRASH_AT points of the agent and its modules\n"
               "  -h, --help             show this help\n"
               "      --version          show the version\n"
               "\n"
               "Signals: SIGTERM and SIGINT stop the agent and leave the VMs running; the next start adopts\n"
               "them. See chvm-agentd(8) and chvm-agent.conf(5).\n",
               CHVM_CONFIG_PATH);
}

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) userdata;
        log_info("%s received: shutting down, leaving running VMs running (the next start adopts them)",
                 si->ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
        (void) sd_notify(0, "STOPPING=1\nSTATUS=Shutting down, VMs keep running");
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int on_hup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void) s;
        (void) si;
        (void) userdata;
        log_notice("SIGHUP: the configuration is read at start only; restart the agent to apply changes, "
                   "ignoring");
        return 0;
}

static void update_status(Daemon *d) {
        char s[sizeof(d->status)];
        snprintf(s, sizeof(s), "STATUS=%zu VM(s) defined, %zu running", agent_n_vms(d->agent),
                 agent_n_running(d->agent));
        if (strcmp(s, d->status) == 0)
                return;
        memcpy(d->status, s, sizeof(s));
        (void) sd_notify(0, s);
}

static void on_state(Agent *a, const char *name, uint64_t vm_id, VmState state, const char *reason,
                     void *userdata) {
        Daemon *d = userdata;
        (void) a;
        if (d->api)
                api_emit_state_changed(d->api, name, vm_id, state, reason);
        if (d->agent)
                update_status(d);
}

/* A failed fdatasync is fatal (DESIGN: stop writing, report, exit non-zero): checked after every round of
 * events, since any of them may have written. */
static int on_post(sd_event_source *s, void *userdata) {
        Daemon *d = userdata;
        Journal *j = agent_journal(d->agent);
        if (journal_state(j) != JOURNAL_STATE_FAILED)
                return 0;
        log_error("ownership journal failed: %s; stopping (running VMs keep running; fix the cause, then "
                  "start the agent again)",
                  journal_error_message(j));
        (void) sd_notify(0, "STOPPING=1\nSTATUS=Ownership journal failed");
        return sd_event_exit(sd_event_source_get_event(s), -EIO);
}

/* The configured kind's hypervisor must be there: refusing now beats failing at the first VM. */
static int check_hypervisor(const AgentConfig *c, const char *config_path) {
        HypervisorKind k = hypervisor_kind_from_string(c->hypervisor);
        const HypervisorVTable *vt = hypervisor_vtable(k);
        const char *bin = c->vmm_binary[0] ? c->vmm_binary : vt ? vt->default_binary : NULL;
        char found[4096];

        if (!vt || !bin) {
                log_error("%s: [vmm] hypervisor \"%s\" is not a hypervisor kind", config_path,
                          c->hypervisor);
                return -EINVAL;
        }
        int r = vmm_find_binary(bin, found, sizeof(found));
        if (r < 0) {
                log_error("%s: [vmm] hypervisor %s: its binary \"%s\" %s (install it, or set [vmm] binary)",
                          config_path, c->hypervisor, bin,
                          r == -ENOENT && !strchr(bin, '/') ? "is not in PATH" : strerror(-r));
                return r;
        }
        log_debug("hypervisor %s: %s", c->hypervisor, found);
        return 0;
}

/* For crash tests: every CHVM_CRASH_AT point of this program and of the configured backend modules. */
static int list_crash_points(const AgentConfig *cfg) {
        size_t n_own;
        const char *const *own = crash_point_list(&n_own);
        for (size_t i = 0; i < n_own; i++)
                printf("%s\n", own[i]);
        for (unsigned i = 0; i < cfg->n_backends; i++) {
                BackendSetting settings[CONFIG_MAX_SETTINGS];
                BackendConfig bc;
                config_backend_config(cfg, cfg->backends[i], settings, ELEMENTSOF(settings), &bc);
                bc.agent_id = "00000000-0000-4000-8000-000000000000";
                _cleanup_(backend_unloadp) Backend *b = NULL;
                Error err;
                if (backend_load(cfg->backend_dir, cfg->backends[i], &bc, &b, &err) < 0) {
                        log_error("%s", error_message(&err));
                        return 1;
                }
                size_t n;
                const char *const *pts = b->vtable->crash_points ? b->vtable->crash_points(&n) : NULL;
                for (size_t k = 0; pts && k < n; k++) {
                        bool dup = false;
                        for (size_t j = 0; j < n_own && !dup; j++)
                                dup = strcmp(own[j], pts[k]) == 0;
                        if (!dup)
                                printf("%s\n", pts[k]);
                }
        }
        return 0;
}

int main(int argc, char *argv[]) {
        enum { ARG_CHECK_CONFIG = 0x100, ARG_LOG_TARGET, ARG_VERSION, ARG_LIST_CRASH_POINTS };
        static const struct option options[] = {
                { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, ARG_CHECK_CONFIG },
                { "log-target", required_argument, NULL, ARG_LOG_TARGET },
                { "verbose", no_argument, NULL, 'v' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "list-crash-points", no_argument, NULL, ARG_LIST_CRASH_POINTS },
                {},
        };
        const char *config_path = NULL;
        LogTarget target = LOG_TARGET_AUTO;
        bool check_only = false, crash_points = false;
        int level = LOG_INFO, c, r;

        /* A collection's plan at 1,000 VMs is megabytes for a moment. With the fixed thresholds glibc
         * maps such blocks and gives them back when freed; with its default, adaptive ones the first big
         * free raises them, later plans come from the heap and the agent kept ~12 MiB more for good. */
        (void) mallopt(M_MMAP_THRESHOLD, 256 * 1024);
        (void) mallopt(M_TRIM_THRESHOLD, 512 * 1024);

        log_setup("chvm-agentd", LOG_TARGET_AUTO, LOG_INFO);
        while ((c = getopt_long(argc, argv, "c:vh", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case ARG_CHECK_CONFIG:
                        check_only = true;
                        break;
                case ARG_LIST_CRASH_POINTS:
                        crash_points = true;
                        break;
                case ARG_LOG_TARGET:
                        if (strcmp(optarg, "auto") == 0)
                                target = LOG_TARGET_AUTO;
                        else if (strcmp(optarg, "stderr") == 0)
                                target = LOG_TARGET_STDERR;
                        else if (strcmp(optarg, "journal") == 0)
                                target = LOG_TARGET_JOURNAL;
                        else {
                                fprintf(stderr,
                                        "chvm-agentd: --log-target: \"%s\" is not auto, stderr or journal\n",
                                        optarg);
                                return 2;
                        }
                        break;
                case 'v':
                        level = LOG_DEBUG;
                        break;
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("chvm-agentd %s\n", PACKAGE_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'chvm-agentd --help'.\n");
                        return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "chvm-agentd: unexpected argument \"%s\"\nTry 'chvm-agentd --help'.\n",
                        argv[optind]);
                return 2;
        }
        log_setup("chvm-agentd", target, level);

        AgentConfig cfg;
        Error err;
        config_defaults(&cfg, CHVM_BACKEND_DIR);
        if (config_path || access(CHVM_CONFIG_PATH, F_OK) == 0) {
                const char *path = config_path ? config_path : CHVM_CONFIG_PATH;
                r = config_load(&cfg, path, &err);
                if (r < 0) {
                        log_error("%s; refusing to start", error_message(&err));
                        return 1;
                }
                config_path = path;
        } else {
                config_load_string(&cfg, "(built-in defaults)", "", &err);
                config_path = "(built-in defaults)";
                log_notice("%s does not exist: using the built-in defaults", CHVM_CONFIG_PATH);
        }
        if (crash_points)
                return list_crash_points(&cfg);
        if (check_hypervisor(&cfg, config_path) < 0) {
                log_error("refusing to start");
                return 1;
        }
        if (check_only) {
                r = agent_check_backends(&cfg, &err);
                if (r < 0) {
                        log_error("%s; refusing to start", error_message(&err));
                        return 1;
                }
                printf("%s: ok\n", config_path);
                return 0;
        }

        Daemon d = {};
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        sigaddset(&ss, SIGCHLD);
        (void) sigprocmask(SIG_BLOCK, &ss, NULL);
        (void) signal(SIGPIPE, SIG_IGN);

        r = sd_event_default(&d.event);
        if (r < 0) {
                log_error_errno(r, "cannot set up the event loop: %m");
                return 1;
        }
        (void) sd_event_add_signal(d.event, NULL, SIGTERM, on_terminate, &d);
        (void) sd_event_add_signal(d.event, NULL, SIGINT, on_terminate, &d);
        (void) sd_event_add_signal(d.event, NULL, SIGHUP, on_hup, &d);

        AgentOptions ao = { .config_path = config_path, .kvm_works = true };
        r = agent_new(&cfg, &ao, d.event, &d.agent, &err);
        if (r < 0) {
                log_error("%s; refusing to start", error_message(&err));
                sd_event_unref(d.event);
                return 1;
        }
        agent_set_state_callback(d.agent, on_state, &d);

        r = api_new(d.agent, d.event, &d.api, &err);
        if (r < 0) {
                log_error("control socket: %s; refusing to start", error_message(&err));
                agent_free(d.agent);
                sd_event_unref(d.event);
                return 1;
        }

        r = sd_event_add_post(d.event, NULL, on_post, &d);
        if (r < 0) {
                log_error_errno(r, "cannot set up the event loop: %m");
                return 1;
        }
        r = sd_event_set_watchdog(d.event, true);
        if (r < 0)
                log_warning_errno(r, "cannot set up the watchdog: %m, ignoring");
        log_info("agent %s ready: %zu VM(s), %zu running, control socket %s", agent_id_string(d.agent),
                 agent_n_vms(d.agent), agent_n_running(d.agent), api_socket_path(d.api));
        (void) sd_notify(0, "READY=1");
        update_status(&d);

        r = sd_event_loop(d.event);
        if (r < 0 && r != -EIO)
                log_error_errno(r, "event loop failed: %m");

        d.api = api_free(d.api);
        d.agent = agent_free(d.agent);
        d.event = sd_event_unref(d.event);
        return r < 0 ? 1 : 0;
}
