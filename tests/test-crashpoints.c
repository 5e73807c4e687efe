/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Issue 7, item 1: the whole agent killed at every named crash point (CHVM_CRASH_AT) of its create, release
 * and compaction paths — TAP, bridge, nft, journal and definition writes — listed by the agent itself
 * (--list-crash-points), not by hand. After each crash: restart, `doctor --gc`, and then no object of ours
 * in the kernel that the journal does not account for, no decoy touched, no acknowledged VM lost, and a
 * second collection with nothing to do. The journal is compacted after every change, so compaction's points
 * are on the path too. */

#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/agentd-test-util.h"
#include "tests/shell-oracle.h"
#include "util/crashpoint.h"

static TestAgent agent;

static void setup(void) {
        test_enter_private_netns();
}

static void teardown(void) {
        test_agent_cleanup(&agent);
}

TestSuite(crashpoints, .init = setup, .fini = teardown, .timeout = 900);

static const char *const extra = "[agent]\njournal_compact_size = 1\n";

/* Between two agents in the same namespace: the last one's bridge, tables and TAPs go (each agent has an id
 * of its own, so the next would rightly refuse them as not its own). The decoys stay. */
static void forget_agent(void) {
        test_agent_cleanup(&agent);
        free(sh("ip link del chvm0 2>/dev/null; nft delete table inet chvm 2>/dev/null; nft delete table bridge chvm 2>/dev/null;"
                "for t in $(ip -o link show type tun | grep -o 'tap-[0-9a-f]\\{11\\}'); do ip link del $t; done"));
}

static char *decoys(void) {
        return sh(
                "ip -j link show dev tap-deadbeef; ip -j link show dev tap-other; nft -j list table ip foreign");
}

typedef struct Expect {
        bool a, b; /* acknowledged as existing */
} Expect;

/* The workload; stops at the first command the agent does not answer. Returns how many steps succeeded. */
static int workload(Expect *e) {
        char k[256];
        snprintf(k, sizeof(k), "--kernel %s/tests/fake-vmm", test_build_dir());
        struct {
                const char *fmt;
                int effect; /* +1 a exists, -1 a gone, +2 b exists, -2 b gone */
        } steps[] = {
                { "create a KERNEL -p 7001:80", 1 },
                { "start a", 0 },
                { "run b KERNEL -p 7002:80", 2 },
                { "stop --timeout 2 a", 0 },
                { "kill b", 0 },
                { "rm a", -1 },
                { "start b", 0 },
                { "rm -f b", -2 },
        };
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
                char cmd[512];
                const char *kw = strstr(steps[i].fmt, "KERNEL");
                if (kw)
                        snprintf(cmd, sizeof(cmd), "%.*s%s%s", (int) (kw - steps[i].fmt), steps[i].fmt, k,
                                 kw + 6);
                else
                        snprintf(cmd, sizeof(cmd), "%s", steps[i].fmt);
                int r = ctl(&agent, NULL, NULL, "%s", cmd);
                if (r != 0) {
                        /* A removal cut short may have happened or not: that VM is not owed either way. */
                        if (steps[i].effect == -1)
                                e->a = false;
                        if (steps[i].effect == -2)
                                e->b = false;
                        return (int) i;
                }
                switch (steps[i].effect) {
                case 1:
                        e->a = true;
                        break;
                case -1:
                        e->a = false;
                        break;
                case 2:
                        e->b = true;
                        break;
                case -2:
                        e->b = false;
                        break;
                }
        }
        return -1;
}

/* Tags of ours in the kernel whose VM is neither core nor running: leaks. */
static char *leaks(void) {
        char *id = sh("cat %s/agent-id", agent.state_dir);
        id[strcspn(id, "\n")] = '\0';
        char *running = sh("%s/chvmctl --socket %s --json list | jq -r '.[].id' | sort", test_build_dir(),
                           agent.socket);
        char *tags = sh(
                "{ ip -d -j link | jq -r '.[].ifalias // empty'; nft -j list ruleset | jq -r '.. | .comment? // empty'; }"
                " | grep '^chvm1:%s:' | cut -d: -f3 | grep -v '^core$' | sort -u",
                id);
        char *out = calloc(1, 4096);
        cr_assert(out);
        for (char *save = NULL, *t = strtok_r(tags, "\n", &save); t; t = strtok_r(NULL, "\n", &save))
                if (!strstr(running, t))
                        snprintf(out + strlen(out), 4096 - strlen(out), "%s ", t);
        free(id);
        free(running);
        free(tags);
        return out;
}

Test(crashpoints, every_point_leaves_nothing_behind) {
        /* The decoys of a shared host: an untagged tap-*, another agent's tagged TAP, a foreign table. */
        free(sh("ip tuntap add dev tap-deadbeef mode tap; ip tuntap add dev tap-other mode tap;"
                "ip link set dev tap-other alias chvm1:0ther000-0000-4000-8000-000000000000:00000000000000aa:tap;"
                "nft add table ip foreign; nft add chain ip foreign pre '{ type nat hook prerouting priority dstnat; }';"
                "nft add rule ip foreign pre tcp dport 9999 dnat to 192.168.200.99:80"));
        char *before = decoys();

        test_agent_init(&agent, extra);
        char *list = sh("%s/chvm-agentd --config %s --list-crash-points", test_build_dir(), agent.config);
        test_agent_cleanup(&agent);
        size_t n = count_substr(list, "\n"), visited = 0;
        cr_assert_geq(n, 20, "too few crash points listed:\n%s", list);

        char *env_none[] = { (char *) "CHVM_NO_TASKSTATS=1", NULL };
        char unvisited[4096] = "";
        for (char *save = NULL, *p = strtok_r(list, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
                char crash[128];
                snprintf(crash, sizeof(crash), "CHVM_CRASH_AT=%s", p);
                char *env[] = { crash, (char *) "CHVM_NO_TASKSTATS=1", NULL };
                Expect e = {};

                test_agent_init(&agent, extra);
                bool died = !test_agent_try_start(&agent, env);
                int stopped_at = died ? -2 : workload(&e);
                int status = test_agent_wait_exit(&agent, 2000);
                cr_log_info("%s: %s, workload stopped at step %d, exit status %d", p,
                            died ? "died at start" : "started", stopped_at, status);
                bool hit = WIFEXITED(status) && WEXITSTATUS(status) == CRASH_POINT_EXIT_CODE;
                if (!hit) {
                        snprintf(unvisited + strlen(unvisited), sizeof(unvisited) - strlen(unvisited), "%s ",
                                 p);
                        forget_agent();
                        continue;
                }
                visited++;

                test_agent_start(&agent, env_none);
                char *out, *err;
                int r = ctl(&agent, &out, &err, "doctor --gc");
                cr_assert_eq(r, 0, "%s: doctor --gc failed:\n%s%s", p, out, err);
                free(out), free(err);

                char *l = leaks();
                cr_assert_str_empty(l, "%s: objects of ours left for VM(s) %s", p, l);
                free(l);
                char *names = sh("%s/chvmctl --socket %s list -a -q", test_build_dir(), agent.socket);
                cr_assert(!e.a || strstr(names, "a\n"), "%s: acknowledged VM a lost", p);
                cr_assert(!e.b || strstr(names, "b\n"), "%s: acknowledged VM b lost", p);
                free(names);
                char *again = sh(
                        "%s/chvmctl --socket %s --json doctor --gc --dry-run | jq -c '[.summary.delete, .summary.forget]'",
                        test_build_dir(), agent.socket);
                cr_assert_str_eq(again, "[0,0]\n", "%s: a second collection still has work", p);
                free(again);
                char *now = decoys();
                cr_assert_str_eq(now, before, "%s: a decoy changed", p);
                free(now);
                forget_agent();
        }
        cr_log_info("crash points: %zu listed, %zu visited", n, visited);
        cr_assert_str_empty(unvisited, "crash points the workload never reached: %s", unvisited);
        free(before);
        free(list);
}
