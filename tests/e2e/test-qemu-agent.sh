#!/usr/bin/env bash
# The whole agent with a real QEMU guest (issue 4, acceptance 6), in two network namespaces this test makes
# and removes (layout in tests/e2e/lib.sh):
#
#   1. chvm-agentd (hypervisor = qemu, accel = tcg, private folders) in the "host" namespace;
#      `chvmctl run web -p 8080:80` boots the test guest (tests/guest/build-guest.sh);
#   2. from the "client" namespace, http://10.77.0.1:8080/ returns the guest's page through the DNAT forward;
#      `chvmctl inspect web --json` shows vmm_pid, tap, ip and the port, and the kernel agrees (the TAP with
#      its ownership tag, the forward's map element, the QEMU process on that TAP);
#   3. kill -9 of that vmm_pid: within 1 s the TAP and the forward are gone and `chvmctl list -a` shows web
#      crashed, "killed by signal 9"; the same fetch now fails;
#   4. `chvmctl start web`, serving again; `chvmctl stop web --timeout 20` returns with web stopped because
#      the guest powered off on QMP system_powerdown ("exited with status 0", well before the SIGTERM step,
#      the guest's console saying so), not because of a signal; TAP and forward gone;
#   5. start again, SIGTERM to the agent: QEMU, TAP and forward stay; the restarted agent adopts that QEMU
#      (same PID), and a graceful stop of the adopted VM ends stopped too, by the guest's own poweroff;
#   6. `chvmctl rm web`, and the agent exits 0 on SIGTERM with nothing of web left in the kernel.
#
# Exit status (automake): 0 pass, 77 skip (not root, a tool missing, the guest's packages cannot be
# downloaded), 1 fail. Finds the build in $CHVM_BUILD_DIR (set by make check; default: the current directory)
# and the guest in $CHVM_GUEST_DIR (default ./tests/guest/out, shared with tests/guest/test-qemu-guest.sh).
set -euo pipefail

E2E_PROG=test-qemu-agent.sh
E2E_BUILD=$(cd "${CHVM_BUILD_DIR:-$PWD}" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port=8080
boot_timeout=60 # s; TCG boots the guest in about 5
clean_timeout_ms=1000
stop_timeout=20

skip() {
        echo "SKIP: $E2E_PROG: $*"
        exit 77
}

# --- can it run here? ----------------------------------------------------------------------------------

why=$(e2e_cannot_run)
[ -z "$why" ] || skip "$why"
for f in chvm-agentd chvmctl backends/local.so; do
        [ -e "$E2E_BUILD/$f" ] ||
                e2e_fail "$E2E_BUILD/$f is missing: run the test from the build tree (make check)"
done

e2e_test_traps

e2e_step "guest: build or reuse it"
guest_dir=${CHVM_GUEST_DIR:-$PWD/tests/guest/out}
status=0
e2e_build_guest "$guest_dir" || status=$?
case $status in
0) ;;
2) skip "the guest's packages cannot be resolved or downloaded (see above)" ;;
*) e2e_fail "building the guest failed (exit $status)" ;;
esac
e2e_say "kernel $CHVM_GUEST_KERNEL_RELEASE, initrd $CHVM_GUEST_INITRD"

# --- 1. agent and VM -----------------------------------------------------------------------------------

e2e_step "namespaces: host chvm-e2e-h-$$, client chvm-e2e-c-$$, veth $E2E_HOST_ADDR <-> $E2E_CLIENT_ADDR"
e2e_netns_setup "chvm-e2e-h-$$" "chvm-e2e-c-$$"

e2e_step "agent: chvm-agentd in the host namespace (qemu, accel tcg, stop_timeout $stop_timeout)"
e2e_tmp_make
e2e_agent_config "$stop_timeout"
e2e_agent_start
e2e_say "pid $E2E_AGENT_PID, socket $E2E_SOCKET"

e2e_step "VM: chvmctl run web with a port forward $port -> 80"
t_run=$(e2e_now_us)
e2e_ctl_run web --kernel "$CHVM_GUEST_KERNEL" --initrd "$CHVM_GUEST_INITRD" -p "$port:80" --memory 256 ||
        e2e_fail "chvmctl run web failed"

# --- 2. the page through the forward, and what inspect says -----------------------------------------------

e2e_step "client: curl http://$E2E_HOST_ADDR:$port/ until the guest serves (at most $boot_timeout s)"
e2e_wait_ready web "$boot_timeout" || e2e_fail "the guest did not say it is ready within $boot_timeout s"
ready_ms=$(e2e_ms_since "$t_run")
e2e_say "guest console: ready $ready_ms ms after chvmctl run"
e2e_wait_serving "$port" "$boot_timeout" ||
        e2e_fail "no page through $E2E_HOST_ADDR:$port within $boot_timeout s of chvmctl run"
boot_ms=$(e2e_ms_since "$t_run")
e2e_say "got '$E2E_PAGE' $boot_ms ms after chvmctl run"

e2e_step "inspect: chvmctl inspect web --json, checked against the kernel"
json=$(e2e_ctl inspect web --json) || e2e_fail "chvmctl inspect web failed"
jq -c '{state, vmm_pid, hypervisor, tap, ip, mac, ports}' <<<"$json" | sed 's/^/    /'
vmm_pid=$(jq -r '.vmm_pid // ""' <<<"$json")
tap=$(jq -r '.tap // ""' <<<"$json")
guest_ip=$(jq -r '.ip // ""' <<<"$json")
[ "$(jq -r .state <<<"$json")" = running ] || e2e_fail "web is not running: $json"
[ "$(jq -r .hypervisor <<<"$json")" = qemu ] || e2e_fail "web's hypervisor is not qemu: $json"
[[ $vmm_pid =~ ^[0-9]+$ ]] || e2e_fail "inspect shows no vmm_pid: $json"
[ -n "$tap" ] || e2e_fail "inspect shows no tap: $json"
[ -n "$guest_ip" ] || e2e_fail "inspect shows no ip: $json"
jq -e --argjson p "$port" '.ports | length == 1 and .[0].proto == "tcp" and .[0].host_port == $p and
        .[0].guest_port == 80' <<<"$json" >/dev/null ||
        e2e_fail "inspect does not show the forward $port -> 80: $json"
[ "$E2E_PAGE" = "chvm test guest $guest_ip" ] ||
        e2e_fail "the page is '$E2E_PAGE', not the guest at $guest_ip's"

# Independent oracles: the process, the link and the map element as the kernel shows them.
cmdline=$(tr '\0' ' ' <"/proc/$vmm_pid/cmdline" 2>/dev/null) || e2e_fail "vmm_pid $vmm_pid is not running"
[[ $cmdline == *qemu-system-x86_64*" -accel tcg "*"ifname=$tap,"* ]] ||
        e2e_fail "vmm_pid $vmm_pid is not QEMU under TCG on $tap: $cmdline"
tap_tag=$(jq -r '.objects[] | select(.kind == "tap") | .tag' <<<"$json")
alias=$(ip -n "$E2E_HOST_NS" -j link show dev "$tap" | jq -r '.[0].ifalias // ""')
[ -n "$tap_tag" ] && [ "$alias" = "$tap_tag" ] ||
        e2e_fail "TAP $tap's alias is '$alias', inspect says its tag is '$tap_tag'"
fwd=$(ip netns exec "$E2E_HOST_NS" nft list map inet chvm portfwd4)
grep -q "tcp \. $port comment \"chvm1:[^\"]*\" : $guest_ip \. 80" <<<"$fwd" ||
        e2e_fail "no tagged element tcp . $port : $guest_ip . 80 in map portfwd4: $fwd"
e2e_say "pid $vmm_pid is QEMU on $tap (alias $alias); portfwd4 has tcp . $port : $guest_ip . 80"

# --- 3. kill -9 of the hypervisor -------------------------------------------------------------------------

crashed_listed() {
        e2e_ctl list -a | grep -qE "^web +crashed .* killed by signal 9\$"
}
all_clean() {
        e2e_tap_gone "$tap" && e2e_forward_gone "$port" && crashed_listed
}

e2e_step "crash: kill -9 $vmm_pid (the QEMU of web); within $clean_timeout_ms ms its network must be gone"
t_kill=$(e2e_now_us)
kill -KILL "$vmm_pid"
# The TAP alone first (one cheap check per round), for the time the teardown itself takes.
e2e_poll "$clean_timeout_ms" 0.002 e2e_tap_gone "$tap" || true
tap_ms=$(e2e_ms_since "$t_kill")
e2e_poll "$clean_timeout_ms" 0.01 all_clean || {
        e2e_tap_gone "$tap" || e2e_say "TAP $tap still there"
        e2e_forward_gone "$port" || e2e_say "forward of $port still in portfwd4"
        crashed_listed || e2e_say "list -a: $(e2e_ctl list -a)"
        e2e_fail "web not cleaned up within $clean_timeout_ms ms of kill -9"
}
clean_ms=$(e2e_ms_since "$t_kill")
e2e_say "TAP gone $tap_ms ms after kill -9; TAP, forward and state all checked done at $clean_ms ms"
e2e_show ip -n "$E2E_HOST_NS" -br link
e2e_show ip netns exec "$E2E_HOST_NS" nft list map inet chvm portfwd4
e2e_show e2e_ctl list -a
[ "$(e2e_vm_field web exit_reason)" = "killed by signal 9" ] ||
        e2e_fail "inspect's exit_reason: $(e2e_ctl inspect web)"

e2e_step "client: the same fetch now fails"
if page=$(e2e_fetch "$port" 3 2>&1); then
        e2e_fail "the page still comes through $E2E_HOST_ADDR:$port after the crash: $page"
fi
e2e_say "$page"

# --- 4. start again, graceful stop -----------------------------------------------------------------------

e2e_step "restart: chvmctl start web"
t_start=$(e2e_now_us)
e2e_show e2e_ctl start web || e2e_fail "chvmctl start web failed"
# The guest starts its ACPI daemon after the web server and says "ready" after that: a power button pressed
# before it would be lost.
e2e_wait_ready web "$boot_timeout" || e2e_fail "the guest did not say it is ready within $boot_timeout s"
e2e_wait_serving "$port" "$boot_timeout" ||
        e2e_fail "web does not serve within $boot_timeout s of chvmctl start"
restart_ms=$(e2e_ms_since "$t_start")
vmm_pid=$(e2e_vm_field web vmm_pid)
tap=$(e2e_vm_field web tap)
serial=$(e2e_serial_log web)
e2e_say "serving again $restart_ms ms after chvmctl start (QEMU pid $vmm_pid, $tap)"

e2e_step "stop: chvmctl stop web --timeout $stop_timeout (QMP system_powerdown first)"
t_stop=$(e2e_now_us)
e2e_show e2e_ctl stop web --timeout "$stop_timeout" || e2e_fail "chvmctl stop web failed"
stop_ms=$(e2e_ms_since "$t_stop")
e2e_show e2e_ctl list -a
state=$(e2e_vm_field web state)
reason=$(e2e_vm_field web exit_reason)
[ "$state" = stopped ] && [ "$reason" = "exited with status 0" ] ||
        e2e_fail "after stop web is '$state' ($reason), not stopped (exited with status 0)"
# SIGTERM would have come only after the timeout (and QEMU says "terminating on signal" then).
[ "$stop_ms" -lt $((stop_timeout * 1000)) ] ||
        e2e_fail "stop took $stop_ms ms: the guest did not power off before the SIGTERM step"
grep -q "chvm-guest: power button, powering off" "$serial" ||
        e2e_fail "the guest's console does not show the power button ($serial)"
hvlog=$(e2e_hypervisor_log web)
! grep -q "terminating on signal" "$hvlog" || e2e_fail "QEMU was signalled: $(cat "$hvlog")"
e2e_pid_gone "$vmm_pid" || e2e_fail "QEMU pid $vmm_pid still runs after chvmctl stop returned"
e2e_tap_gone "$tap" || e2e_fail "TAP $tap still there after stop"
e2e_forward_gone "$port" || e2e_fail "the forward of $port is still in portfwd4 after stop"
e2e_say "stopped by the guest's own poweroff in $stop_ms ms; TAP and forward gone"

# --- 5. agent restart: the running QEMU is adopted, and stops as gracefully ------------------------------

e2e_step "adopt: start web, SIGTERM to the agent (VMs keep running), start it again"
e2e_show e2e_ctl start web || e2e_fail "chvmctl start web failed"
e2e_wait_ready web "$boot_timeout" || e2e_fail "the guest did not say it is ready within $boot_timeout s"
e2e_wait_serving "$port" "$boot_timeout" ||
        e2e_fail "web does not serve within $boot_timeout s of chvmctl start"
vmm_pid=$(e2e_vm_field web vmm_pid)
tap=$(e2e_vm_field web tap)
e2e_agent_stop
[ "$E2E_AGENT_STATUS" -eq 0 ] || e2e_fail "chvm-agentd exited with status $E2E_AGENT_STATUS on SIGTERM"
! e2e_pid_gone "$vmm_pid" || e2e_fail "QEMU pid $vmm_pid died with the agent"
e2e_tap_exists "$tap" || e2e_fail "TAP $tap went with the agent"
page=$(e2e_fetch "$port" 3) || e2e_fail "no page through the forward while the agent is down"
e2e_say "agent down: QEMU $vmm_pid still runs, $tap still there, '$page' still served"
e2e_agent_start
[ "$(e2e_vm_field web vmm_pid)" = "$vmm_pid" ] && e2e_vm_state_is web running ||
        e2e_fail "the restarted agent did not adopt web's QEMU $vmm_pid: $(e2e_ctl inspect web)"
grep -q "1 running VM(s) adopted" "$E2E_AGENT_LOG" || e2e_fail "the agent's log does not say it adopted web"
e2e_say "restarted agent (pid $E2E_AGENT_PID) adopted QEMU $vmm_pid"

e2e_step "stop the adopted VM: chvmctl stop web --timeout $stop_timeout"
t_stop=$(e2e_now_us)
e2e_show e2e_ctl stop web --timeout "$stop_timeout" || e2e_fail "chvmctl stop web failed"
adopted_stop_ms=$(e2e_ms_since "$t_stop")
e2e_show e2e_ctl list -a
state=$(e2e_vm_field web state)
reason=$(e2e_vm_field web exit_reason)
# Not our child any more: its exit status is known only when taskstats reaches the agent's namespace.
case $reason in
"exited with status 0" | "exited after a stop request (exit status unknown)") ;;
*) e2e_fail "after stop the adopted web is '$state' ($reason), not stopped by its exit" ;;
esac
[ "$state" = stopped ] || e2e_fail "after stop the adopted web is '$state' ($reason), not stopped"
[ "$adopted_stop_ms" -lt $((stop_timeout * 1000)) ] ||
        e2e_fail "stop took $adopted_stop_ms ms: the guest did not power off before the SIGTERM step"
grep -q "chvm-guest: power button, powering off" "$serial" ||
        e2e_fail "the guest's console does not show the power button ($serial)"
e2e_pid_gone "$vmm_pid" || e2e_fail "QEMU pid $vmm_pid still runs after chvmctl stop returned"
e2e_tap_gone "$tap" || e2e_fail "TAP $tap still there after stop"
e2e_forward_gone "$port" || e2e_fail "the forward of $port is still in portfwd4 after stop"
e2e_say "adopted VM stopped by the guest's poweroff in $adopted_stop_ms ms; TAP and forward gone"

# --- 6. remove, stop the agent -------------------------------------------------------------------------

e2e_step "remove: chvmctl rm web, then SIGTERM to the agent"
e2e_show e2e_ctl rm web || e2e_fail "chvmctl rm web failed"
E2E_VMS=()
e2e_agent_stop
[ "$E2E_AGENT_STATUS" -eq 0 ] || e2e_fail "chvm-agentd exited with status $E2E_AGENT_STATUS on SIGTERM"
taps=$(ip -n "$E2E_HOST_NS" -o link show type tun)
[ -z "$taps" ] || e2e_fail "TAPs left in the host namespace: $taps"
! ip netns exec "$E2E_HOST_NS" nft list ruleset | grep -q "comment \"chvm1:[^:]*:[0-9a-f]\{16\}:" ||
        e2e_fail "per-VM nft objects left: $(ip netns exec "$E2E_HOST_NS" nft list ruleset)"
e2e_say "agent exited 0; no TAP and no per-VM nft object left"

E2E_RESULT=pass
echo
echo "PASS: $E2E_PROG: boot to ready $ready_ms ms, to serving $boot_ms ms," \
        "kill -9 to TAP gone $tap_ms ms, to all clean $clean_ms ms," \
        "restart to serving $restart_ms ms, graceful stop $stop_ms ms (adopted: $adopted_stop_ms ms)"
