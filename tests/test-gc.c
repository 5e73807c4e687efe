/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* `chvmctl doctor --gc` against whole agents (fake-vmm hypervisors) in the test's own network namespace,
 * with the decoys a shared host has: a hand-made tap-deadbeef, a foreign table with a DNAT rule into our
 * subnet, an untagged element in our own map, a second agent with its own state. The oracles are `ip`,
 * `nft` and the journal file's bytes. */

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

static TestAgent agent, other;

static void setup(void) {
        test_enter_private_netns();
        test_agent_init(&agent, NULL);
        test_agent_start(&agent, NULL);
}

static void teardown(void) {
        test_agent_cleanup(&agent);
        test_agent_cleanup(&other);
}

TestSuite(gc, .init = setup, .fini = teardown, .timeout = 120);

static void run_vm(TestAgent *a, const char *name, const char *ports) {
        char *err;
        int r = ctl(a, NULL, &err, "run %s --kernel %s/tests/fake-vmm %s", name, test_build_dir(), ports);
        cr_assert_eq(r, 0, "run %s: %s", name, err);
        free(err);
}

static pid_t vm_pid(TestAgent *a, const char *name) {
        char *out;
        cr_assert_eq(ctl(a, &out, NULL, "inspect %s --json | sed -n 's/.*\"vmm_pid\":\\([0-9]*\\).*/\\1/p'",
                         name),
                     0);
        pid_t pid = (pid_t) atoi(out);
        free(out);
        cr_assert_gt(pid, 0, "VM %s has no vmm_pid", name);
        return pid;
}

static char *vm_tap(TestAgent *a, const char *name) {
        char *out;
        cr_assert_eq(ctl(a, &out, NULL, "inspect %s --json | sed -n 's/.*\"tap\":\"\\([^\"]*\\)\".*/\\1/p'",
                         name),
                     0);
        out[strcspn(out, "\n")] = '\0';
        return out;
}

/* Everything GC could touch, as the kernel and the disk show it. */
#define WITHOUT_CARRIER "jq -c '[.[] | del(.operstate) | .flags -= [\"NO-CARRIER\", \"LOWER_UP\"]]'"

static char *world(const TestAgent *a) {
        /* (ip -d would add the bridge ports' running timers.) Carrier and operational state are the
         * kernel's, not the agent's to change: a TAP whose hypervisor was killed loses its carrier when the
         * kernel's link watch gets round to it, up to a second later or more on a loaded machine. */
        return sh("ip -j link | " WITHOUT_CARRIER "; nft -j list ruleset; md5sum < %s/ownership.journal",
                  a->state_dir);
}

/* The world once it has settled: what the agent did just before (its start-up) is done. */
static char *settled_world(const TestAgent *a) {
        char *w = world(a);
        for (int i = 0; i < 25; i++) {
                usleep(200000);
                char *again = world(a);
                bool same = strcmp(again, w) == 0;
                free(w);
                w = again;
                if (same)
                        break;
        }
        return w;
}

/* What changed between two worlds, as a unified diff of their JSON one value per line. */
static char *world_diff(const char *before, const char *after) {
        char b[] = "/tmp/chvm-world-XXXXXX", a[] = "/tmp/chvm-world-XXXXXX";
        int fb = mkstemp(b), fa = mkstemp(a);
        cr_assert(fb >= 0 && fa >= 0);
        cr_assert_eq(write(fb, before, strlen(before)), (ssize_t) strlen(before));
        cr_assert_eq(write(fa, after, strlen(after)), (ssize_t) strlen(after));
        close(fb), close(fa);
        char *d = sh("for f in %s %s; do sed 's/}, *{/},\\n{/g; s/\\], *\\[/],\\n[/g' $f > $f.l; done;"
                     " diff -u %s.l %s.l | head -n 60; rm -f %s %s %s.l %s.l",
                     b, a, b, a, b, a, b, a);
        return d;
}

static bool has_link(const char *name) {
        char *o = sh("ip -o link show dev %s 2>/dev/null | wc -l", name);
        bool yes = atoi(o) > 0;
        free(o);
        return yes;
}

/* How many forwards of host port `port` (tcp) our map holds, tagged or not. */
static unsigned forwards(unsigned port) {
        char *o = sh("nft list map inet chvm portfwd4 2>/dev/null");
        char needle[32];
        snprintf(needle, sizeof(needle), "tcp . %u ", port);
        unsigned n = count_substr(o, needle);
        free(o);
        return n;
}

static char *gc(TestAgent *a, int want_rc, const char *flags) {
        char *out, *err;
        int r = ctl(a, &out, &err, "doctor --gc %s", flags);
        cr_assert_eq(r, want_rc, "doctor --gc %s: exit %d\n%s%s", flags, r, out, err);
        free(err);
        return out;
}

/* The decision line about `name`: "ACTION KIND NAME VM REASON". */
static char *line_of(const char *out, const char *name) {
        const char *p = strstr(out, name);
        cr_assert(p, "no decision about %s in:\n%s", name, out);
        while (p > out && p[-1] != '\n')
                p--;
        size_t n = strcspn(p, "\n");
        char *l = strndup(p, n);
        cr_assert(l);
        return l;
}

static void expect_line(const char *out, const char *name, const char *action, const char *reason) {
        char *l = line_of(out, name);
        cr_assert(strncmp(l, action, strlen(action)) == 0 && strstr(l, reason),
                  "%s: want %s ... %s, got:\n%s", name, action, reason, l);
        free(l);
}

/* Scenario A: kill -9 of a VM's hypervisor (its PID from inspect): crashed in `list -a`, TAP and forward
 * gone — and the collection afterwards has nothing of it left to delete. */
Test(gc, scenario_a_crash_is_cleaned_up) {
        run_vm(&agent, "web", "-p 8080:80");
        char *tap = vm_tap(&agent, "web");
        cr_assert(has_link(tap));
        cr_assert_eq(forwards(8080), 1);
        cr_assert_eq(kill(vm_pid(&agent, "web"), SIGKILL), 0);
        char *out;
        /* stopping while the kernel ends it (the agent answers without waiting for the exit), then crashed
         */
        for (int i = 0; i < 200; i++) {
                cr_assert_eq(ctl(&agent, &out, NULL, "list -a"), 0);
                bool dying = strstr(out, "stopping") != NULL;
                free(out);
                if (!dying)
                        break;
                usleep(10000);
        }
        cr_assert_eq(ctl(&agent, &out, NULL, "list -a"), 0);
        cr_assert(strstr(out, "web") && strstr(out, "crashed"), "%s", out);
        free(out);
        cr_assert_eq(ctl(&agent, &out, NULL, "inspect web"), 0);
        cr_assert(strstr(out, "exit reason: killed by signal 9"), "%s", out);
        free(out);
        cr_assert(!has_link(tap), "TAP %s left behind", tap);
        cr_assert_eq(forwards(8080), 0);
        out = gc(&agent, 0, "");
        cr_assert(strstr(out, "summary: 0 delete, 0 forget"), "%s", out);
        free(out);
        free(tap);
}

/* Scenario B: a hand-made tap-deadbeef is left by default (unknown ownership), removed by the heuristic;
 * the heuristic without --yes and without a terminal is refused. */
Test(gc, scenario_b_untagged_tap) {
        run_vm(&agent, "web", "");
        char *tap = vm_tap(&agent, "web");
        free(sh("ip tuntap add dev tap-deadbeef mode tap"));
        char *out = gc(&agent, 0, "");
        expect_line(out, "tap-deadbeef", "skip", "unknown ownership");
        expect_line(out, tap, "skip", "running");
        free(out);
        cr_assert(has_link("tap-deadbeef"));

        char *err;
        cr_assert_eq(ctl(&agent, NULL, &err, "doctor --gc --force-heuristic </dev/null"), 2);
        cr_assert(strstr(err, "give --yes"), "%s", err);
        free(err);
        cr_assert(has_link("tap-deadbeef"));

        out = gc(&agent, 0, "--force-heuristic --yes");
        expect_line(out, "tap-deadbeef", "delete", "heuristic");
        expect_line(out, tap, "skip", "running");
        free(out);
        cr_assert(!has_link("tap-deadbeef"));
        cr_assert(has_link(tap), "the running VM's TAP was deleted");
        free(tap);
}

/* Scenario C: no VM running, a foreign table's DNAT into our subnet and an untagged element in our own
 * map: the default leaves both; the heuristic removes ours (it points into our subnet, no running VM has
 * that address) and never the foreign rule, nor an untagged element pointing outside the subnet. */
Test(gc, scenario_c_foreign_rule_and_untagged_element) {
        run_vm(&agent, "web", "-p 8080:80");
        cr_assert_eq(ctl(&agent, NULL, NULL, "rm -f web"), 0); /* our tables exist, no VM runs */
        /* Our tables are the agent's alone while it runs (table_owner = auto): the untagged elements get in
         * while it is down, its tables orphaned; it adopts them, elements and all, when it starts again. */
        (void) test_agent_signal_wait(&agent, SIGTERM);
        free(sh("nft add table ip foreign; nft add chain ip foreign pre '{ type nat hook prerouting priority dstnat; }';"
                "nft add rule ip foreign pre tcp dport 9999 dnat to 192.168.200.99:80;"
                "nft add element inet chvm portfwd4 '{ tcp . 7777 : 192.168.200.50 . 80 }';"
                "nft add element inet chvm portfwd4 '{ tcp . 7778 : 10.1.2.3 . 80 }'"));
        test_agent_start(&agent, NULL);
        cr_assert_eq(forwards(7777), 1);
        char *out = gc(&agent, 0, "");
        expect_line(out, "tcp 7777 -> 192.168.200.50:80", "skip", "unknown ownership");
        expect_line(out, "tcp 7778 -> 10.1.2.3:80", "skip", "unknown ownership");
        cr_assert(!strstr(out, "9999"), "the foreign table is not ours to judge:\n%s", out);
        free(out);
        cr_assert_eq(forwards(7777), 1);

        char *foreign = sh("nft -j list table ip foreign");
        out = gc(&agent, 0, "--force-heuristic --yes");
        expect_line(out, "tcp 7777 -> 192.168.200.50:80", "delete", "heuristic");
        expect_line(out, "tcp 7778 -> 10.1.2.3:80", "skip", "unknown ownership");
        free(out);
        cr_assert_eq(forwards(7777), 0);
        cr_assert_eq(forwards(7778), 1);
        char *foreign_after = sh("nft -j list table ip foreign");
        cr_assert_str_eq(foreign_after, foreign, "the foreign table changed");
        free(foreign);
        free(foreign_after);
}

/* Leaked owned objects: the agent SIGKILLed, the VM's hypervisor killed while it is down, the agent started
 * once without the VM's backend (so it cannot tear it down), then normally: doctor --gc deletes the leak
 * with "owned by VM db (crashed)". */
Test(gc, leaked_owned_objects_are_deleted) {
        run_vm(&agent, "db", "-p 5432:5432");
        run_vm(&agent, "web", "-p 8080:80");
        char *tap = vm_tap(&agent, "db");
        pid_t pid = vm_pid(&agent, "db");
        (void) test_agent_signal_wait(&agent, SIGKILL);
        cr_assert_eq(kill(pid, SIGKILL), 0);
        usleep(100000);

        /* A start with only mosnet loaded: db is found dead, its teardown fails, it is journaled crashed. */
        free(sh("cp %s %s.full", agent.config, agent.config));
        free(sh("sed -i 's|^\\[agent\\]|[agent]\\nbackends = mosnet\\ndefault_backend = mosnet|' %s",
                agent.config));
        test_agent_start(&agent, NULL);
        char *log = test_agent_log(&agent);
        cr_assert(strstr(log, "VM db: teardown of the network failed"), "%s", log);
        free(log);
        (void) test_agent_signal_wait(&agent, SIGTERM);
        free(sh("cp %s.full %s", agent.config, agent.config));
        test_agent_start(&agent, NULL);
        cr_assert(has_link(tap), "the leak is there to collect");
        cr_assert_eq(forwards(5432), 1);

        char *out = gc(&agent, 0, "--dry-run");
        expect_line(out, tap, "delete", "owned by VM db (crashed)");
        free(out);
        cr_assert(has_link(tap), "--dry-run deleted it");

        out = gc(&agent, 0, "");
        expect_line(out, tap, "delete", "owned by VM db (crashed)");
        expect_line(out, "tcp 5432 ->", "delete", "owned by VM db (crashed)");
        free(out);
        cr_assert(!has_link(tap));
        cr_assert_eq(forwards(5432), 0);
        cr_assert_eq(forwards(8080), 1, "web's forward must stay");
        out = gc(&agent, 0, "");
        cr_assert(strstr(out, "summary: 0 delete, 0 forget"), "a second run finds nothing:\n%s", out);
        free(out);
        free(tap);
}

/* The journal lost (restored from nothing): objects tagged with our agent id are deleted only when no live
 * hypervisor of that VM id exists. */
Test(gc, journal_lost_tag_proves_ownership) {
        run_vm(&agent, "dead", "-p 7001:80");
        run_vm(&agent, "alive", "-p 7002:80");
        char *dead_tap = vm_tap(&agent, "dead"), *alive_tap = vm_tap(&agent, "alive");
        pid_t dead_pid = vm_pid(&agent, "dead");
        (void) test_agent_signal_wait(&agent, SIGKILL);
        cr_assert_eq(kill(dead_pid, SIGKILL), 0);
        free(sh("rm -f %s/ownership.journal %s/ownership.snapshot", agent.state_dir, agent.state_dir));
        test_agent_start(&agent, NULL);

        char *out = gc(&agent, 0, "");
        expect_line(out, dead_tap, "delete", "not in the journal, no live hypervisor");
        expect_line(out, alive_tap, "skip", "running");
        free(out);
        cr_assert(!has_link(dead_tap));
        cr_assert(has_link(alive_tap), "a live hypervisor's TAP was deleted");
        cr_assert_eq(forwards(7001), 0);
        cr_assert_eq(forwards(7002), 1);
        free(dead_tap);
        free(alive_tap);
}

/* A second agent (own state, table, bridge, subnet) in the same namespace: neither agent's GC touches the
 * other's objects in any mode, running or leaked. */
Test(gc, other_agents_objects_are_never_touched) {
        test_agent_init(&other, "[local]\nbridge = chvmb0\nsubnet = 10.99.0.0/24\ntable = chvmb\n");
        test_agent_start(&other, NULL);
        run_vm(&agent, "mine", "-p 8080:80");
        run_vm(&other, "theirs", "-p 9090:80");
        run_vm(&other, "leak", "-p 9091:80");
        pid_t leak = vm_pid(&other, "leak");
        char *theirs_tap = vm_tap(&other, "theirs"), *leak_tap = vm_tap(&other, "leak");
        (void) test_agent_signal_wait(&other, SIGKILL);
        cr_assert_eq(kill(leak, SIGKILL), 0); /* the other agent's leak: tagged by it, its VM dead */

        char *before = sh(
                "(ip -j link show dev %s; ip -j link show dev %s; ip -j link show dev chvmb0) | " WITHOUT_CARRIER
                ";"
                "nft -j list table inet chvmb; nft -j list table bridge chvmb",
                theirs_tap, leak_tap);
        const char *modes[] = { "--dry-run", "", "--force-heuristic --yes", "--dry-run --force-heuristic" };
        for (size_t i = 0; i < 4; i++) {
                char *out = gc(&agent, 0, modes[i]);
                expect_line(out, leak_tap, "skip", "other agent");
                expect_line(out, theirs_tap, "skip", "other agent");
                free(out);
        }
        char *after = sh(
                "(ip -j link show dev %s; ip -j link show dev %s; ip -j link show dev chvmb0) | " WITHOUT_CARRIER
                ";"
                "nft -j list table inet chvmb; nft -j list table bridge chvmb",
                theirs_tap, leak_tap);
        cr_assert_str_eq(after, before, "the other agent's objects changed");
        cr_assert(has_link(vm_tap(&agent, "mine")));
        free(before);
        free(after);
        free(theirs_tap);
        free(leak_tap);
}

/* --dry-run changes nothing: links, ruleset and the journal byte-identical, whatever the plan holds. */
Test(gc, dry_run_changes_nothing) {
        run_vm(&agent, "web", "-p 8080:80");
        run_vm(&agent, "db", "-p 5432:5432");
        /* a leak of ours, and a crash the agent has not been told about in the journal's terms yet; the
         * untagged element gets into our map while the agent is down (its tables orphaned) */
        pid_t pid = vm_pid(&agent, "db");
        (void) test_agent_signal_wait(&agent, SIGKILL);
        free(sh("ip tuntap add dev tap-deadbeef mode tap;"
                "nft add element inet chvm portfwd4 '{ tcp . 7777 : 192.168.200.50 . 80 }'"));
        cr_assert_eq(forwards(7777), 1);
        cr_assert_eq(kill(pid, SIGKILL), 0);
        free(sh("rm -f %s/ownership.journal %s/ownership.snapshot", agent.state_dir, agent.state_dir));
        test_agent_start(&agent, NULL);

        char *before = settled_world(&agent);
        char *out = gc(&agent, 0, "--dry-run");
        cr_assert(strstr(out, "delete"), "the plan has deletions to not carry out:\n%s", out);
        free(out);
        out = gc(&agent, 0, "--dry-run --force-heuristic");
        cr_assert(strstr(out, "heuristic"), "%s", out);
        free(out);
        char *json;
        cr_assert_eq(ctl(&agent, &json, NULL, "--json doctor --gc --dry-run"), 0);
        cr_assert(strstr(json, "\"decisions\":[") && strstr(json, "\"summary\":{") &&
                          strstr(json, "\"dry_run\":true"),
                  "%s", json);
        char *jq = sh(
                "%s/chvmctl --socket %s --json doctor --gc --dry-run | jq -e '.decisions | length > 0' 2>&1",
                test_build_dir(), agent.socket);
        cr_assert_str_eq(jq, "true\n", "not one valid JSON document: %s\n%s", jq, json);
        free(jq);
        free(json);
        char *after = world(&agent);
        if (strcmp(after, before) != 0) {
                char *d = world_diff(before, after);
                cr_assert_fail("a dry run changed the kernel or the journal:\n%s", d);
        }
        free(before);
        free(after);
}

/* Running VMs' objects survive every mode. */
Test(gc, running_vms_are_never_touched) {
        run_vm(&agent, "a", "-p 8001:80");
        run_vm(&agent, "b", "-p 8002:80 -p 8003:53/udp");
        char *before = sh(
                "ip -j link show type tun; nft -j list map inet chvm portfwd4; nft -j list set bridge chvm vm_ports;"
                "nft -j list set bridge chvm vm_addrs");
        const char *modes[] = { "", "--force-heuristic --yes" };
        for (size_t i = 0; i < 2; i++) {
                char *out = gc(&agent, 0, modes[i]);
                cr_assert(strstr(out, "summary: 0 delete"), "%s", out);
                free(out);
        }
        char *after = sh(
                "ip -j link show type tun; nft -j list map inet chvm portfwd4; nft -j list set bridge chvm vm_ports;"
                "nft -j list set bridge chvm vm_addrs");
        cr_assert_str_eq(after, before);
        free(before);
        free(after);
}

/* Mid-log damage puts the journal in quarantine: only objects whose kernel tag proves them ours, of VMs with
 * no live hypervisor, are deleted; nothing untagged, not even by the heuristic; a live hypervisor the
 * damaged journal forgot still protects its VM's objects. */
Test(gc, quarantine_deletes_only_tag_proven) {
        run_vm(&agent, "a", "-p 7101:80");
        run_vm(&agent, "b", "-p 7102:80");
        char *a_tap = vm_tap(&agent, "a");
        pid_t b = vm_pid(&agent, "b");
        (void) test_agent_signal_wait(&agent, SIGKILL);
        cr_assert_eq(kill(b, SIGKILL), 0);

        /* Damage the first record (a's VM_DEFINE): every later record proves it had been synced. */
        free(sh("printf '\\377' | dd of=%s/ownership.journal bs=1 seek=120 conv=notrunc status=none",
                agent.state_dir));
        char *id = sh("cat %s/agent-id", agent.state_dir);
        id[strcspn(id, "\n")] = '\0';
        free(sh("ip tuntap add dev tap-deadbeef mode tap; ip tuntap add dev tap-0badc0ffe mode tap;"
                "ip link set dev tap-0badc0ffe alias chvm1:%s:0000000badc0ffee:tap",
                id));
        free(id);
        test_agent_start(&agent, NULL);
        char *log = test_agent_log(&agent);
        cr_assert(strstr(log, "QUARANTINE"), "%s", log);
        free(log);

        char *out, *err;
        int r = ctl(&agent, &out, &err, "doctor");
        cr_assert_eq(r, 1, "doctor must not call a quarantined journal healthy");
        cr_assert(strstr(out, "error    journal     QUARANTINE"), "%s", out);
        free(out), free(err);

        out = gc(&agent, 0, "");
        expect_line(out, "tap-0badc0ffe", "delete", "not in the journal, no live hypervisor");
        expect_line(out, "tap-deadbeef", "skip", "unknown ownership");
        expect_line(out, a_tap, "skip", "running");
        cr_assert(strstr(out, "journal in QUARANTINE"), "%s", out);
        free(out);
        cr_assert(!has_link("tap-0badc0ffe"));
        out = gc(&agent, 0, "--force-heuristic --yes");
        expect_line(out, "tap-deadbeef", "skip", "quarantine");
        free(out);
        cr_assert(has_link("tap-deadbeef"), "the heuristic ran in quarantine");
        cr_assert(has_link(a_tap), "the live hypervisor's TAP was deleted");
        cr_assert_eq(forwards(7101), 1);
        cr_assert_eq(forwards(7102), 0, "b was dead: its tagged forward goes");
        free(a_tap);
}
