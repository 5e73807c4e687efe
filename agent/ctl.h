/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* chvmctl: shared by its subcommands (one x_main per command, in ctl-*.c). */

#include <stdbool.h>
#include <stdint.h>

#include "agent/ctl-bus.h"

#define CTL_DEFAULT_SOCKET "/run/chvm/agent.sock"

/* Exit codes of DESIGN.md. */
enum {
        CTL_EXIT_OK = 0,
        CTL_EXIT_ERROR = 1,
        CTL_EXIT_USAGE = 2,
        CTL_EXIT_NOT_FOUND = 3,
        CTL_EXIT_ACCESS_DENIED = 4,
        CTL_EXIT_UNREACHABLE = 5,
};

typedef struct Ctl {
        const char *socket;
        bool json;
        bool progress; /* stderr is a terminal: show progress of long operations */
        CtlBus *bus; /* connected on first use */
} Ctl;

typedef struct CtlCommand {
        const char *name;
        int (*run)(Ctl *ctl, int argc, char *argv[]);
        const char *summary;
} CtlCommand;

/* Connects (once). On failure prints why and returns CTL_EXIT_UNREACHABLE. */
int ctl_connect(Ctl *ctl);
/* A method call; timeout_usec 0: 120 s. On failure prints "chvmctl: <agent's message>" and returns the exit
 * code for the error; on success 0 and *ret_reply (may be NULL). */
int ctl_call(Ctl *ctl, CtlMsg *m, uint64_t timeout_usec, CtlMsg **ret_reply);
int ctl_new_call(Ctl *ctl, const char *member, CtlMsg **ret);
/* A call with no arguments or one "s" argument and an empty reply. */
int ctl_call_name(Ctl *ctl, const char *member, const char *name, uint64_t timeout_usec);

/* Usage error: prints "chvmctl CMD: message" and the hint, returns CTL_EXIT_USAGE. */
int ctl_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints a bus/parse failure of our own ("cannot read the agent's answer: ...") and returns CTL_EXIT_ERROR.
 */
int ctl_fail(int r, const char *what);
/* "-h"/"--help" anywhere before "--" */
bool ctl_wants_help(int argc, char *argv[]);

int ctl_run_main(Ctl *ctl, int argc, char *argv[]);
int ctl_create_main(Ctl *ctl, int argc, char *argv[]);
int ctl_start_main(Ctl *ctl, int argc, char *argv[]);
int ctl_stop_main(Ctl *ctl, int argc, char *argv[]);
int ctl_kill_main(Ctl *ctl, int argc, char *argv[]);
int ctl_rm_main(Ctl *ctl, int argc, char *argv[]);
int ctl_list_main(Ctl *ctl, int argc, char *argv[]);
int ctl_inspect_main(Ctl *ctl, int argc, char *argv[]);
int ctl_status_main(Ctl *ctl, int argc, char *argv[]);
int ctl_doctor_main(Ctl *ctl, int argc, char *argv[]);
