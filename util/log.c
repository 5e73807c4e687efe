/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "util/log.h"

static const char *log_program = "chvm-agentd";
static LogTarget log_target_resolved = LOG_TARGET_STDERR;
static int log_max_level = LOG_INFO;

/* systemd sets JOURNAL_STREAM=<dev>:<ino> of the stream it connected to stdout/stderr. */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

void log_setup(const char *program, LogTarget target, int max_level) {
        if (program)
                log_program = program;
        log_max_level = max_level;
        log_target_resolved = target == LOG_TARGET_AUTO
                                      ? (stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR)
                                      : target;
}

LogTarget log_target(void) {
        return log_target_resolved;
}

static const char *level_prefix(int level) {
        switch (level) {
        case LOG_EMERG:
        case LOG_ALERT:
        case LOG_CRIT:
        case LOG_ERR:
                return "error: ";
        case LOG_WARNING:
                return "warning: ";
        default:
                return "";
        }
}

static void to_journal(int level, const LogVm *vm, const char *msg) {
        char fields[8][300];
        struct iovec iov[10];
        size_t n = 0;

#define FIELD(...)                                                                     \
        do {                                                                           \
                int _k = snprintf(fields[n], sizeof(fields[n]), __VA_ARGS__);          \
                iov[n] = (struct iovec){ .iov_base = fields[n],                        \
                                         .iov_len = _k < 0 ? 0                         \
                                                    : (size_t) _k >= sizeof(fields[n]) \
                                                            ? sizeof(fields[n]) - 1    \
                                                            : (size_t) _k };           \
                n++;                                                                   \
        } while (0)

        FIELD("PRIORITY=%d", level);
        FIELD("SYSLOG_IDENTIFIER=%s", log_program);
        if (vm && vm->name)
                FIELD("VM=%s", vm->name);
        if (vm && vm->id)
                FIELD("VM_ID=%016" PRIx64, vm->id);
        if (vm && vm->backend)
                FIELD("BACKEND=%s", vm->backend);
        if (vm && vm->interface && vm->interface[0])
                FIELD("INTERFACE=%s", vm->interface);
        if (vm && vm->mac && vm->mac[0])
                FIELD("MAC=%s", vm->mac);
        if (vm && vm->address && vm->address[0])
                FIELD("ADDRESS=%s", vm->address);
#undef FIELD
        /* The message itself may be long: its own buffer. */
        size_t len = strlen(msg);
        char *m = malloc(len + sizeof("MESSAGE="));
        if (!m)
                return;
        memcpy(m, "MESSAGE=", 8);
        memcpy(m + 8, msg, len + 1);
        iov[n++] = (struct iovec){ .iov_base = m, .iov_len = len + 8 };
        if (sd_journal_sendv(iov, (int) n) < 0)
                fprintf(stderr, "%s: %s%s\n", log_program, level_prefix(level), msg);
        free(m);
}

int log_full(int level, int error, const LogVm *vm, const char *fmt, ...) {
        char msg[2048];
        int saved = errno;
        va_list ap;

        if (level > log_max_level)
                return error > 0 ? -error : error;
        errno = error < 0 ? -error : error;
        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        errno = saved;

        if (log_target_resolved == LOG_TARGET_JOURNAL)
                to_journal(level, vm, msg);
        else
                fprintf(stderr, "%s: %s%s\n", log_program, level_prefix(level), msg);
        return error > 0 ? -error : error;
}
