/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* chvmctl: the admin's command for chvm-agentd, over its control socket (D-Bus, peer to peer). */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/api.h"
#include "agent/ctl.h"

static const CtlCommand commands[] = {
        { "run", ctl_run_main, "create a VM and start it" },
        { "create", ctl_create_main, "create a VM (not started)" },
        { "start", ctl_start_main, "start VMs" },
        { "stop", ctl_stop_main, "stop VMs gracefully (power button, then SIGTERM, then SIGKILL)" },
        { "kill", ctl_kill_main, "kill VMs' hypervisors (SIGKILL); their network is torn down" },
        { "rm", ctl_rm_main, "remove VMs" },
        { "list", ctl_list_main, "list VMs" },
        { "inspect", ctl_inspect_main, "show a VM: state, hypervisor, network, owned kernel objects" },
        { "status", ctl_status_main, "show the agent's status" },
        { "doctor", ctl_doctor_main,
          "check the agent's health; --gc collects garbage (--dry-run: plan only)" },
};

static void help(FILE *f) {
        fprintf(f, "Usage: chvmctl [--socket PATH] [--json] COMMAND [ARGS...]\n"
                   "\n"
                   "Controls chvm-agentd, the VM network agent.\n"
                   "\n"
                   "Commands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
        fprintf(f,
                "\n"
                "Options:\n"
                "  --socket PATH   the agent's control socket (default %s)\n"
                "  --json          print the result as one JSON document\n"
                "  -h, --help      show this help (COMMAND --help: the command's)\n"
                "  --version       show the version\n"
                "\n"
                "Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 access denied, 5 agent unreachable.\n"
                "See chvmctl(1).\n",
                CTL_DEFAULT_SOCKET);
}

int ctl_usage(const char *cmd, const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "chvmctl%s%s: ", cmd ? " " : "", cmd ? cmd : "");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\nTry 'chvmctl %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
        return CTL_EXIT_USAGE;
}

int ctl_fail(int r, const char *what) {
        fprintf(stderr, "chvmctl: %s: %s\n", what, strerror(r < 0 ? -r : r));
        return CTL_EXIT_ERROR;
}

bool ctl_wants_help(int argc, char *argv[]) {
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--") == 0)
                        return false;
                if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
                        return true;
        }
        return false;
}

int ctl_connect(Ctl *ctl) {
        if (ctl->bus)
                return 0;
        if (strlen(ctl->socket) > 107) {
                fprintf(stderr, "chvmctl: socket path %s is too long\n", ctl->socket);
                return CTL_EXIT_USAGE;
        }
        int r = ctl_bus_connect(ctl->socket, &ctl->bus);
        if (r < 0) {
                fprintf(stderr, "chvmctl: cannot reach the agent at %s: %s%s\n", ctl->socket, strerror(-r),
                        r == -EACCES ? " (the socket is for root and the control group)"
                        : r == -ECONNREFUSED || r == -ENOENT ? " (is chvm-agentd running?)"
                                                             : "");
                return r == -EACCES ? CTL_EXIT_ACCESS_DENIED : CTL_EXIT_UNREACHABLE;
        }
        return 0;
}

int ctl_new_call(Ctl *ctl, const char *member, CtlMsg **ret) {
        int r = ctl_connect(ctl);
        if (r != 0)
                return r;
        r = ctl_msg_new_call(API_OBJECT_PATH, API_INTERFACE, member, ret);
        return r < 0 ? ctl_fail(r, "cannot build the request") : 0;
}

static int exit_code_for(const char *error_name) {
        if (strcmp(error_name, API_ERROR_NOT_FOUND) == 0)
                return CTL_EXIT_NOT_FOUND;
        if (strcmp(error_name, CTL_BUS_ERROR_ACCESS_DENIED) == 0)
                return CTL_EXIT_ACCESS_DENIED;
        return CTL_EXIT_ERROR;
}

int ctl_call(Ctl *ctl, CtlMsg *m, uint64_t timeout_usec, CtlMsg **ret_reply) {
        CtlBusError e = {};
        CtlMsg *reply = NULL;
        int r = ctl_bus_call(ctl->bus, m, timeout_usec ? timeout_usec : UINT64_C(120000000), &e, &reply);
        if (r < 0) {
                int code;
                if (e.name) {
                        const char *msg = e.message ? e.message : e.name;
                        if (strcmp(e.name, CTL_BUS_ERROR_ACCESS_DENIED) == 0 &&
                            strncmp(msg, "access denied", 13) != 0)
                                fprintf(stderr, "chvmctl: access denied: %s\n", msg);
                        else
                                fprintf(stderr, "chvmctl: %s\n", msg);
                        code = exit_code_for(e.name);
                } else if (r == -EACCES) {
                        fprintf(stderr, "chvmctl: the agent at %s refused us: %s\n", ctl->socket,
                                strerror(-r));
                        code = CTL_EXIT_ACCESS_DENIED;
                } else {
                        fprintf(stderr, "chvmctl: the agent did not answer: %s\n", strerror(-r));
                        code = CTL_EXIT_UNREACHABLE;
                }
                ctl_bus_error_free(&e);
                return code;
        }
        if (ret_reply)
                *ret_reply = reply;
        else
                ctl_msg_free(reply);
        return 0;
}

int ctl_call_name(Ctl *ctl, const char *member, const char *name, uint64_t timeout_usec) {
        CtlMsg *m = NULL;
        int r = ctl_new_call(ctl, member, &m);
        if (r != 0)
                return r;
        if (name) {
                r = ctl_msg_append(m, "s", name);
                if (r < 0) {
                        ctl_msg_free(m);
                        return ctl_fail(r, "cannot build the request");
                }
        }
        r = ctl_call(ctl, m, timeout_usec, NULL);
        ctl_msg_free(m);
        return r;
}

int main(int argc, char *argv[]) {
        Ctl ctl = { .socket = CTL_DEFAULT_SOCKET, .progress = isatty(STDERR_FILENO) };
        int i = 1, r;

        for (; i < argc && argv[i][0] == '-'; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        ctl.json = true;
                else if (strcmp(argv[i], "--socket") == 0) {
                        if (++i >= argc)
                                return ctl_usage(NULL, "--socket needs a PATH");
                        ctl.socket = argv[i];
                } else if (strncmp(argv[i], "--socket=", 9) == 0)
                        ctl.socket = argv[i] + 9;
                else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
                        help(stdout);
                        return 0;
                } else if (strcmp(argv[i], "--version") == 0) {
                        printf("chvmctl %s\n", PACKAGE_VERSION);
                        return 0;
                } else
                        return ctl_usage(NULL, "unknown option %s", argv[i]);
        }
        if (i >= argc) {
                help(stderr);
                return CTL_EXIT_USAGE;
        }
        for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
                if (strcmp(argv[i], commands[k].name) == 0) {
                        /* Options after the command: --json may come there too. */
                        r = commands[k].run(&ctl, argc - i, argv + i);
                        ctl_bus_close(ctl.bus);
                        return r;
                }
        return ctl_usage(NULL, "unknown command \"%s\"", argv[i]);
}
