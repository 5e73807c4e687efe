/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* Issue 7, item 2: random kills under load. 50 clients create, start, stop and remove VMs all the time while
 * the agent is SIGKILLed at random moments, 200 times (CHVM_TEST_LONG=1: 2,000). After each kill the clients
 * are paused, the agent restarted and `doctor --gc` run, and then the kernel holds exactly what the journal
 * says is running — each running VM's TAP and forward, nothing of ours for any other VM — and a second
 * collection has nothing to do. Decoys (an untagged tap-*, another agent's tagged TAP, a foreign table) are
 * identical at the end. */

#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/agentd-test-util.h"
#include "tests/shell-oracle.h"

enum { CLIENTS = 50 };

static TestAgent agent;
static pid_t clients[CLIENTS];

static void setup(void) {
        test_enter_private_netns();
}

static void teardown(void) {
        for (int i = 0; i < CLIENTS; i++)
                if (clients[i] > 0) {
                        kill(clients[i], SIGKILL);
                        waitpid(clients[i], NULL, 0);
                }
        test_agent_cleanup(&agent);
}

TestSuite(chaos, .init = setup, .fini = teardown, .timeout = 1800);

static bool long_tests(void) {
        const char *e = getenv("CHVM_TEST_LONG");
        return e && *e && strcmp(e, "0") != 0;
}

static void each_client(int sig) {
        for (int i = 0; i < CLIENTS; i++)
                kill(clients[i], sig);
}

/* Our tags' VM ids in the kernel (TAPs, forwards) and the running VMs' ids, one per line, sorted. */
typedef struct Snapshot {
        char *running, *taps, *fwds;
} Snapshot;

static Snapshot snapshot(const char *id) {
        Snapshot n = {
                .taps = sh(
                        "ip -d -j link | jq -r '.[].ifalias // empty' | grep '^chvm1:%s:' | cut -d: -f3 | grep -v core |"
                        " sort",
                        id),
                .fwds = sh(
                        "nft -j list map inet chvm portfwd4 | jq -r '.. | .comment? // empty' | grep '^chvm1:%s:' |"
                        " cut -d: -f3 | grep -v core | sort",
                        id),
                .running = sh(
                        "%s/chvmctl --socket %s --json list | jq -r '.[] | select(.state == \"running\") | .id' | sort",
                        test_build_dir(), agent.socket),
        };
        return n;
}

static void snapshot_free(Snapshot *n) {
        free(n->running);
        free(n->taps);
        free(n->fwds);
}

/* The kernel holds exactly the running VMs' objects. A hypervisor that was told to power off just before
 * the kill may still be on its way out (its teardown then runs between two of the reads): a mismatch counts
 * only when it stays. */
static void compare_with_journal(unsigned round) {
        char *id = sh("cat %s/agent-id", agent.state_dir);
        id[strcspn(id, "\n")] = '\0';
        Snapshot n = {};
        bool same = false;
        for (int tries = 0; tries < 5 && !same; tries++) {
                if (tries)
                        usleep(300000);
                snapshot_free(&n);
                n = snapshot(id);
                same = strcmp(n.taps, n.running) == 0 && strcmp(n.fwds, n.running) == 0;
        }
        char *states = sh("%s/chvmctl --socket %s list -a", test_build_dir(), agent.socket);
        cr_assert(same,
                  "round %u: the kernel's objects of ours are not exactly the running VMs':\nTAPs:\n%s\n"
                  "forwards:\n%s\nrunning:\n%s\n%s",
                  round, n.taps, n.fwds, n.running, states);
        free(states);
        snapshot_free(&n);
        char *again = sh(
                "%s/chvmctl --socket %s --json doctor --gc --dry-run | jq -c '[.summary.delete, .summary.forget]'",
                test_build_dir(), agent.socket);
        cr_assert_str_eq(again, "[0,0]\n", "round %u: a second collection has work", round);
        free(again);
        free(id);
}

Test(chaos, random_kills_under_load) {
        unsigned rounds = long_tests() ? 2000 : 200, seed = 1201;
        char *env[] = { (char *) "CHVM_NO_TASKSTATS=1", NULL };

        free(sh("ip tuntap add dev tap-deadbeef mode tap; ip tuntap add dev tap-other mode tap;"
                "ip link set dev tap-other alias chvm1:0ther000-0000-4000-8000-000000000000:00000000000000aa:tap;"
                "nft add table ip foreign; nft add chain ip foreign pre '{ type nat hook prerouting priority dstnat; }';"
                "nft add rule ip foreign pre tcp dport 9999 dnat to 192.168.200.99:80"));
        char *decoys = sh(
                "ip -j link show dev tap-deadbeef; ip -j link show dev tap-other; nft -j list table ip foreign");

        /* a /22: 50 clients with a few VMs each fit */
        test_agent_init(&agent, "[local]\nsubnet = 10.66.0.0/22\n[agent]\njournal_compact_size = 64K\n");
        test_agent_start(&agent, env);
        for (int c = 0; c < CLIENTS; c++) {
                clients[c] = fork();
                cr_assert_geq(clients[c], 0);
                if (clients[c] == 0) {
                        char cmd[2048];
                        snprintf(
                                cmd, sizeof(cmd),
                                "C='%s/chvmctl --socket %s'; n=0; while :; do n=$((n+1)); v=c%d-$n;"
                                " $C create $v --kernel %s/tests/fake-vmm -p $((20000 + %d * 100 + n %% 100)):80 >/dev/null 2>&1;"
                                " $C start $v >/dev/null 2>&1; $C stop --timeout 1 $v >/dev/null 2>&1;"
                                " [ $((n %% 3)) = 0 ] || $C rm -f $v >/dev/null 2>&1; done",
                                test_build_dir(), agent.socket, c, test_build_dir(), c);
                        execl("/bin/sh", "sh", "-c", cmd, (char *) NULL);
                        _exit(127);
                }
        }

        unsigned long kills_at_work = 0;
        for (unsigned round = 0; round < rounds; round++) {
                usleep(20000 + (useconds_t) (rand_r(&seed) % 200000));
                char *busy = sh("ls %s/vms 2>/dev/null | wc -l", agent.state_dir);
                kills_at_work += atoi(busy) > 0;
                free(busy);
                (void) test_agent_signal_wait(&agent, SIGKILL);
                each_client(SIGSTOP);
                test_agent_start(&agent, env);
                char *out, *err;
                int r = ctl(&agent, &out, &err, "doctor --gc");
                cr_assert_eq(r, 0, "round %u: doctor --gc:\n%s%s", round, out, err);
                free(out), free(err);
                compare_with_journal(round);
                each_client(SIGCONT);
        }
        each_client(SIGKILL);
        for (int c = 0; c < CLIENTS; c++) {
                waitpid(clients[c], NULL, 0);
                clients[c] = 0;
        }
        char *now = sh(
                "ip -j link show dev tap-deadbeef; ip -j link show dev tap-other; nft -j list table ip foreign");
        cr_assert_str_eq(now, decoys, "a decoy changed");
        char *n = sh("%s/chvmctl --socket %s list -a -q | wc -l", test_build_dir(), agent.socket);
        cr_log_info("chaos: %u kills, %lu with VMs defined, %s VMs defined at the end", rounds,
                    kills_at_work, n);
        cr_assert_gt(atoi(n), 0, "the clients made nothing: the load did not happen");
        free(n);
        free(now);
        free(decoys);
}
