/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* chvmctl doctor [--gc [--dry-run] [--force-heuristic [--yes]]] */

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/ctl.h"
#include "util/json.h"

#define GC_TIMEOUT_USEC (UINT64_C(600) * 1000000)

static const char *const skip_reasons[] = { "running",      "unknown ownership", "other agent",
                                            "tag mismatch", "quarantine",        "core" };

static void help(void) {
        printf("Usage: chvmctl doctor [--gc [--dry-run] [--force-heuristic [--yes]]] [--json]\n"
               "\n"
               "Without --gc: the agent's health — journal state, backends, VMs by state, owned objects,\n"
               "what a garbage collection would do, ip_forward, drop policies in other nftables tables on\n"
               "the guests' path, running VMs' TAPs. Exit 0 when healthy, 1 with the reasons otherwise.\n"
               "\n"
               "With --gc: refreshes VM states (dead hypervisors are torn down as for a crash), then decides\n"
               "for every object the backends find in the kernel and every object the journal names:\n"
               "  delete   tagged by this agent and its VM is not running (or, with --force-heuristic,\n"
               "           untagged but named/addressed like ours and used by no running VM)\n"
               "  forget   journaled but already gone from the kernel\n"
               "  skip     running, unknown ownership, other agent, tag mismatch, quarantine, core\n"
               "Objects tagged by another agent are never touched. Exit 1 if a deletion failed.\n"
               "\n"
               "  --gc               collect garbage\n"
               "  --dry-run          print the plan, change nothing\n"
               "  --force-heuristic  the emergency mode: also untagged TAPs by name prefix and untagged\n"
               "                     elements in our table pointing into our subnet; asks first\n"
               "  --yes              do not ask (needed for --force-heuristic without a terminal)\n"
               "  --json             print one JSON document\n"
               "  -h, --help         show this help\n");
}

static int do_health(Ctl *ctl) {
        CtlMsg *m = NULL, *reply = NULL;
        int r = ctl_new_call(ctl, "Doctor", &m);
        if (r != 0)
                return r;
        r = ctl_call(ctl, m, GC_TIMEOUT_USEC, &reply);
        ctl_msg_free(m);
        if (r != 0)
                return r;
        JsonWriter w;
        const char *sev, *topic, *msg;
        size_t bad = 0;
        if (ctl->json) {
                json_begin(&w, stdout);
                json_object_open(&w);
                json_key(&w, "findings");
                json_array_open(&w);
        }
        r = ctl_msg_enter_container(reply, 'a', "(sss)");
        while (r >= 0 && (r = ctl_msg_read(reply, "(sss)", &sev, &topic, &msg)) > 0) {
                bad += strcmp(sev, "ok") != 0;
                if (ctl->json) {
                        json_object_open(&w);
                        json_kv_string(&w, "severity", sev);
                        json_kv_string(&w, "topic", topic);
                        json_kv_string(&w, "message", msg);
                        json_object_close(&w);
                } else
                        printf("%-8s %-11s %s\n", sev, topic, msg);
        }
        ctl_msg_free(reply);
        if (r < 0)
                return ctl_fail(r, "cannot read the agent's answer");
        if (ctl->json) {
                json_array_close(&w);
                json_kv_bool(&w, "healthy", bad == 0);
                json_object_close(&w);
                json_end(&w);
        } else
                printf("%s\n", bad ? "not healthy: see the warnings and errors above" : "healthy");
        return bad ? CTL_EXIT_ERROR : 0;
}

typedef struct Decision {
        const char *action, *kind, *name, *vm, *reason, *detail, *error;
        int failed;
} Decision;

static int call_gc(Ctl *ctl, bool dry_run, bool heuristic, CtlMsg **ret) {
        CtlMsg *m = NULL;
        int r = ctl_new_call(ctl, "CollectGarbage", &m);
        if (r != 0)
                return r;
        r = ctl_msg_append(m, "bb", dry_run, heuristic);
        if (r < 0) {
                ctl_msg_free(m);
                return ctl_fail(r, "cannot build the request");
        }
        if (ctl->progress && !ctl->json)
                fprintf(stderr, "collecting garbage%s...", dry_run ? " (dry run)" : "");
        r = ctl_call(ctl, m, GC_TIMEOUT_USEC, ret);
        if (ctl->progress && !ctl->json)
                fprintf(stderr, "\r\033[K");
        ctl_msg_free(m);
        return r;
}

/* Prints the plan; returns the exit code (1 if a deletion failed) or a negative bus error. */
static int print_plan(Ctl *ctl, CtlMsg *reply, bool dry_run, bool heuristic, size_t *ret_deletes) {
        size_t n_delete = 0, n_forget = 0, n_skip = 0, n_failed = 0, by_skip[6] = {};
        JsonWriter w;
        Decision d;
        int r;

        if (ctl->json) {
                json_begin(&w, stdout);
                json_object_open(&w);
                json_key(&w, "decisions");
                json_array_open(&w);
        }
        r = ctl_msg_enter_container(reply, 'a', "(ssssssbs)");
        while (r >= 0 && (r = ctl_msg_read(reply, "(ssssssbs)", &d.action, &d.kind, &d.name, &d.vm,
                                           &d.reason, &d.detail, &d.failed, &d.error)) > 0) {
                if (strcmp(d.action, "delete") == 0)
                        n_delete++;
                else if (strcmp(d.action, "forget") == 0)
                        n_forget++;
                else {
                        n_skip++;
                        for (size_t i = 0; i < 6; i++)
                                if (strcmp(d.reason, skip_reasons[i]) == 0)
                                        by_skip[i]++;
                }
                n_failed += d.failed;
                if (d.failed)
                        fprintf(stderr, "chvmctl: warning: cannot delete %s %s%s%s: %s\n", d.kind, d.name,
                                d.vm[0] ? " of VM " : "", d.vm, d.error);
                if (ctl->json) {
                        json_object_open(&w);
                        json_kv_string(&w, "action", d.action);
                        json_kv_string(&w, "kind", d.kind);
                        json_kv_string(&w, "name", d.name);
                        json_kv_string(&w, "vm", d.vm[0] ? d.vm : NULL);
                        json_kv_string(&w, "reason", d.reason);
                        json_kv_string(&w, "detail", d.detail);
                        json_kv_bool(&w, "failed", d.failed);
                        json_kv_string(&w, "error", d.failed ? d.error : NULL);
                        json_object_close(&w);
                } else {
                        bool skip = strcmp(d.action, "skip") == 0;
                        printf("%-7s %-11s %-34s %-20s %s%s%s%s\n", d.action, d.kind, d.name,
                               d.vm[0] ? d.vm : "-", skip ? d.reason : "", skip ? ": " : "", d.detail,
                               d.failed ? " [FAILED]" : "");
                }
        }
        if (r >= 0)
                r = ctl_msg_exit_container(reply);
        int quarantine = 0;
        if (r >= 0)
                r = ctl_msg_read(reply, "b", &quarantine);
        if (r < 0)
                return r;
        if (ctl->json) {
                json_array_close(&w);
                json_key(&w, "summary");
                json_object_open(&w);
                json_kv_uint(&w, "delete", n_delete);
                json_kv_uint(&w, "forget", n_forget);
                json_kv_uint(&w, "skip", n_skip);
                json_kv_uint(&w, "failed", n_failed);
                json_key(&w, "skip_by_reason");
                json_object_open(&w);
                for (size_t i = 0; i < 6; i++)
                        json_kv_uint(&w, skip_reasons[i], by_skip[i]);
                json_object_close(&w);
                json_object_close(&w);
                json_kv_bool(&w, "dry_run", dry_run);
                json_kv_bool(&w, "heuristic", heuristic);
                json_kv_bool(&w, "quarantine", quarantine);
                json_object_close(&w);
                json_end(&w);
        } else {
                printf("summary%s: %zu delete, %zu forget, %zu skip (",
                       dry_run ? " (dry run, nothing changed)" : "", n_delete, n_forget, n_skip);
                for (size_t i = 0; i < 6; i++)
                        printf("%s%zu %s", i ? ", " : "", by_skip[i], skip_reasons[i]);
                printf("), %zu failed%s\n", n_failed, quarantine ? "; journal in QUARANTINE" : "");
        }
        if (ret_deletes)
                *ret_deletes = n_delete;
        return n_failed ? CTL_EXIT_ERROR : 0;
}

static int do_gc(Ctl *ctl, bool dry_run, bool heuristic, bool yes) {
        CtlMsg *reply = NULL;
        int r;

        if (heuristic && !dry_run && !yes) {
                if (!isatty(STDIN_FILENO))
                        return ctl_usage("doctor",
                                         "--force-heuristic deletes by name and subnet: give --yes "
                                         "when not on a terminal");
                /* The plan first, then the question. */
                bool json = ctl->json;
                size_t n = 0;
                ctl->json = false;
                r = call_gc(ctl, true, true, &reply);
                if (r != 0)
                        return r;
                printf("The heuristic plan:\n");
                r = print_plan(ctl, reply, true, true, &n);
                ctl_msg_free(reply);
                reply = NULL;
                ctl->json = json;
                if (r < 0)
                        return ctl_fail(r, "cannot read the agent's answer");
                printf("Delete these %zu object(s)? Untagged ones are judged by name and subnet only. [y/N] ",
                       n);
                fflush(stdout);
                char line[16] = "";
                if (!fgets(line, sizeof(line), stdin) || (line[0] != 'y' && line[0] != 'Y')) {
                        printf("Nothing deleted.\n");
                        return CTL_EXIT_ERROR;
                }
        }
        r = call_gc(ctl, dry_run, heuristic, &reply);
        if (r != 0)
                return r;
        r = print_plan(ctl, reply, dry_run, heuristic, NULL);
        ctl_msg_free(reply);
        return r < 0 ? ctl_fail(r, "cannot read the agent's answer") : r;
}

int ctl_doctor_main(Ctl *ctl, int argc, char *argv[]) {
        enum { ARG_GC = 0x100, ARG_DRY_RUN, ARG_HEURISTIC, ARG_YES, ARG_JSON };
        static const struct option options[] = {
                { "gc", no_argument, NULL, ARG_GC },
                { "dry-run", no_argument, NULL, ARG_DRY_RUN },
                { "force-heuristic", no_argument, NULL, ARG_HEURISTIC },
                { "yes", no_argument, NULL, ARG_YES },
                { "json", no_argument, NULL, ARG_JSON },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        bool gc = false, dry_run = false, heuristic = false, yes = false;
        int c;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":hy", options, NULL)) >= 0) {
                switch (c) {
                case ARG_GC:
                        gc = true;
                        break;
                case ARG_DRY_RUN:
                        dry_run = true;
                        break;
                case ARG_HEURISTIC:
                        heuristic = true;
                        break;
                case 'y':
                case ARG_YES:
                        yes = true;
                        break;
                case ARG_JSON:
                        ctl->json = true;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return ctl_usage("doctor", "unknown option %s", argv[optind - 1]);
                }
        }
        if (optind < argc)
                return ctl_usage("doctor", "unexpected argument \"%s\"", argv[optind]);
        if (!gc && (dry_run || heuristic || yes))
                return ctl_usage("doctor", "--dry-run, --force-heuristic and --yes go with --gc");
        return gc ? do_gc(ctl, dry_run, heuristic, yes) : do_health(ctl);
}
