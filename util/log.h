/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The daemon's log: to journald with structured fields when stderr is connected to the journal (systemd
 * sets $JOURNAL_STREAM to stderr's device:inode), else one line per message on stderr. Messages about a
 * VM carry VM=, VM_ID=, BACKEND= and INTERFACE= fields (on stderr only the message itself, which names
 * the VM anyway).
 *
 * Only the daemon's own code logs; library-like code (backends/, state/, vmm/) returns errors and the
 * daemon decides what the admin reads. */

#include <stdint.h>
#include <syslog.h>

#include "util/macro.h"

typedef enum LogTarget {
        LOG_TARGET_AUTO, /* journald if stderr is the journal stream, else stderr */
        LOG_TARGET_STDERR,
        LOG_TARGET_JOURNAL,
        _LOG_TARGET_MAX,
} LogTarget;

/* What a message is about. Any member may be NULL / 0. */
typedef struct LogVm {
        const char *name;
        uint64_t id;
        const char *backend;
        const char *interface;
        const char *mac; /* MAC= (a lease's) */
        const char *address; /* ADDRESS= (a lease's) */
} LogVm;

void log_setup(const char *program, LogTarget target, int max_level);
LogTarget log_target(void);

/* Logs at `level` (LOG_ERR ... LOG_DEBUG). `error` (0 or ±errno) makes %m print its text. Returns
 * -abs(error), so `return log_error_errno(r, "...: %m");` passes the error on. */
_printf_(4, 5) int log_full(int level, int error, const LogVm *vm, const char *fmt, ...);

#define log_debug(...) log_full(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_warning_errno(r, ...) log_full(LOG_WARNING, (r), NULL, __VA_ARGS__)
#define log_error_errno(r, ...) log_full(LOG_ERR, (r), NULL, __VA_ARGS__)
#define log_vm(level, vm, ...) log_full((level), 0, (vm), __VA_ARGS__)
#define log_vm_errno(level, r, vm, ...) log_full((level), (r), (vm), __VA_ARGS__)
