#!/usr/bin/env bash
# The main job in one command, on a fresh Debian 12 machine (as root: sudo tools/demo.sh):
#
#   installs the dependencies (tools/install-deps.sh), builds in build/demo (no sanitizers), builds the test
#   guest in build/guest (tests/guest/build-guest.sh: a Debian cloud kernel and a busybox initramfs, ~27 MB
#   downloaded once), and then, in two throwaway network namespaces (the machine's own network is not
#   touched; layout in tests/e2e/lib.sh):
#     - starts chvm-agentd with QEMU (TCG), runs a guest with a port forward 8080 -> 80,
#     - fetches the guest's page through the forward from the client namespace,
#     - kills the hypervisor with kill -9 and shows how the agent cleaned up (chvmctl list -a, the TAP and
#       the forward gone from `ip link` and `nft list map`, the agent's log),
#     - runs `chvmctl doctor --gc --dry-run` when this build has the doctor command,
#   then removes everything (VM, agent, namespaces, its folder /run/chvm-demo) and prints a summary line.
#
# With --stock the guest is a stock Debian 12 system instead (tests/guest/build-stock-guest.sh: Debian's own
# cloud kernel and initramfs, systemd-networkd asking for DHCP; built once into build/stock in about a
# minute), booted from its disk alone through QEMU's firmware: it gets its address from the agent's DHCP
# server, and the demo shows the lease (`chvmctl inspect`, and the guest's own `ip addr`). Its boot takes
# 40-100 s under TCG.
#
# Safe to run again: installed packages, an up-to-date build and guest are reused, and what an interrupted
# run left behind (its namespaces chvm-demo-host and chvm-demo-client, /run/chvm-demo) is removed first.
# Exit status 0 when every step worked, 1 otherwise (the failed step says why, with the agent's log).
set -euo pipefail

top=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$top"

E2E_PROG=demo
# CHVM_DEMO_PREBUILT=DIR: use the programs already built in DIR and skip installing and building (the test
# that runs this demo in `make check` points it at the build being tested). CHVM_GUEST_DIR: where the guest
# is built (default build/guest).
prebuilt=${CHVM_DEMO_PREBUILT:-}
E2E_BUILD=${prebuilt:-$top/build/demo}
# shellcheck source=tests/e2e/lib.sh
. "$top/tests/e2e/lib.sh"

stock=no
for arg in "$@"; do
        case $arg in
        --stock) stock=yes ;;
        -h | --help)
                sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
                exit 0
                ;;
        *)
                echo "demo: unknown argument $arg (usage: tools/demo.sh [--stock])" >&2
                exit 2
                ;;
        esac
done

guest_dir=${CHVM_GUEST_DIR:-$top/build/guest}
stock_dir=${CHVM_STOCK_DIR:-$top/build/stock}
demo_dir=/run/chvm-demo
host_ns=chvm-demo-host
client_ns=chvm-demo-client
port=8080
boot_timeout=60

t_demo=$(e2e_now_us)
ok=no
failed_step=""
step=""

e2e_fail() {
        printf '\ndemo: error: %s\n' "$*"
        exit 1
}
demo_step() {
        step=$1
        e2e_step "$1"
}
finish() {
        local rc=$?
        set +e
        if [ "$ok" != yes ]; then
                [ -z "$step" ] || failed_step=$step
                e2e_dump
        fi
        if [ -n "$E2E_HOST_NS$E2E_CLIENT_NS$E2E_TMP$E2E_AGENT_PID" ]; then
                e2e_step "cleanup: VM, agent, namespaces $host_ns and $client_ns, $demo_dir"
                e2e_cleanup
        fi
        if [ "$ok" != yes ]; then
                [ "$rc" -ne 0 ] || rc=1
                local what=FAILED
                [ "$rc" -lt 129 ] || what=INTERRUPTED
                echo "demo: $what${failed_step:+ at step \"$failed_step\"}" \
                        "after $(($(e2e_ms_since "$t_demo") / 1000)) s"
        fi
        exit "$rc"
}
trap finish EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" -eq 0 ] ||
        e2e_fail "needs root (packages, network namespaces, TAP devices, nftables): run sudo tools/demo.sh"

# One demo at a time: the namespaces and the folder have fixed names.
mkdir -p "$top/build"
exec 9>"$top/build/.demo.lock"
flock -n 9 || e2e_fail "another tools/demo.sh is running (it holds $top/build/.demo.lock)"

# --- install and build ----------------------------------------------------------------------------------

t=$(e2e_now_us)
if [ -n "$prebuilt" ]; then
        demo_step "build: using the programs already built in $prebuilt"
else
        demo_step "install: tools/install-deps.sh"
        tools/install-deps.sh || e2e_fail "installing the dependencies failed"

        demo_step "build: autoreconf, configure in build/demo (no sanitizers), make"
        if [ ! -x configure ] || [ configure.ac -nt configure ] || [ ! -f Makefile.in ] ||
                [ Makefile.am -nt Makefile.in ]; then
                e2e_show autoreconf -fi || e2e_fail "autoreconf failed"
        else
                e2e_say "configure is up to date (no autoreconf needed)"
        fi
        mkdir -p "$E2E_BUILD"
        if [ ! -f "$E2E_BUILD/Makefile" ]; then
                e2e_say "\$ ../../configure (in build/demo; output in build/demo/configure.out)"
                if ! (cd "$E2E_BUILD" && "$top/configure" >configure.out 2>&1); then
                        cat "$E2E_BUILD/configure.out"
                        e2e_fail "configure failed"
                fi
        else
                e2e_say "build/demo is configured already"
        fi
        e2e_say "\$ make -C build/demo -j$(nproc) (output in build/demo/make.out)"
        if ! make -C "$E2E_BUILD" -j"$(nproc)" >"$E2E_BUILD/make.out" 2>&1; then
                tail -n 40 "$E2E_BUILD/make.out"
                e2e_fail "make failed (all of its output in $E2E_BUILD/make.out)"
        fi
fi
for f in chvm-agentd chvmctl backends/local.so; do
        [ -e "$E2E_BUILD/$f" ] || e2e_fail "there is no $E2E_BUILD/$f"
done
version=$("$E2E_BUILD/chvmctl" --version | head -n 1)
e2e_say "built $version in $(($(e2e_ms_since "$t") / 1000)) s (with the install step)"

build_stock() {
        bash "$top/tests/guest/build-stock-guest.sh" "$stock_dir" && . "$stock_dir/stock.env"
}
if [ "$stock" = yes ]; then
        demo_step "guest: tests/guest/build-stock-guest.sh build/stock (a stock Debian 12 from Debian's packages)"
        status=0
        build_stock || status=$?
        if [ "$status" -eq 2 ]; then
                e2e_show apt-get update || e2e_fail "apt-get update failed"
                status=0
                build_stock || status=$?
        fi
        [ "$status" -eq 0 ] || e2e_fail "building the stock guest failed (exit $status)"
        e2e_say "disk image $CHVM_STOCK_DISK ($(du -m "$CHVM_STOCK_DISK" | cut -f1) MiB used)"
        boot_timeout=300
else
        demo_step "guest: tests/guest/build-guest.sh build/guest"
        status=0
        e2e_build_guest "$guest_dir" || status=$?
        if [ "$status" -eq 2 ]; then
                # The package lists may be missing (install-deps.sh updates them only when it installs
                # something).
                e2e_show apt-get update || e2e_fail "apt-get update failed"
                status=0
                e2e_build_guest "$guest_dir" || status=$?
        fi
        [ "$status" -eq 0 ] || e2e_fail "building the guest failed (exit $status)"
        e2e_say "kernel $CHVM_GUEST_KERNEL_RELEASE, initrd $(du -k "$CHVM_GUEST_INITRD" | cut -f1) KiB"
fi

why=$(e2e_cannot_run)
[ -z "$why" ] || e2e_fail "$why"

# --- the scenario ----------------------------------------------------------------------------------------

demo_step "namespaces: $host_ns (the agent's host) and $client_ns, joined by a veth"
for ns in "$host_ns" "$client_ns"; do
        if ip netns list | grep -q "^$ns\( \|\$\)"; then
                e2e_say "removing $ns, left by an earlier run"
                e2e_netns_remove "$ns"
        fi
done
e2e_netns_setup "$host_ns" "$client_ns"
e2e_show ip -n "$host_ns" -br addr show dev vh0
e2e_show ip -n "$client_ns" -br addr show dev vc0

demo_step "agent: chvm-agentd in $host_ns (hypervisor qemu, accel tcg; state and sockets in $demo_dir)"
e2e_tmp_make "$demo_dir"
e2e_agent_config 20
sed 's/^/      /' "$E2E_TMP/agent.conf"
e2e_agent_start
e2e_say "chvm-agentd pid $E2E_AGENT_PID; chvmctl talks to it with --socket $E2E_SOCKET"
e2e_show e2e_ctl status

if [ "$stock" = yes ]; then
        demo_step "VM: chvmctl run web --disk (stock Debian 12, booted by SeaBIOS from its disk) -p $port:80"
        e2e_say "a copy of the image for this run: $E2E_TMP/web.img"
        cp --sparse=always "$CHVM_STOCK_DISK" "$E2E_TMP/web.img"
        t_run=$(e2e_now_us)
        e2e_ctl_run web --disk "$E2E_TMP/web.img" -p "$port:80" --memory 512 || e2e_fail "chvmctl run web failed"
        e2e_say "waiting for Debian to boot, ask for DHCP and serve (TCG: 40-100 s) ..."
else
        demo_step "VM: chvmctl run web, a real QEMU guest with the port forward $port -> 80"
        t_run=$(e2e_now_us)
        e2e_ctl_run web --kernel "$CHVM_GUEST_KERNEL" --initrd "$CHVM_GUEST_INITRD" -p "$port:80" --memory 256 ||
                e2e_fail "chvmctl run web failed"
        e2e_say "waiting for the guest to serve (TCG: a few seconds) ..."
        e2e_wait_ready web "$boot_timeout" || e2e_fail "the guest did not come up within $boot_timeout s"
        e2e_say "its console says: $(grep -m1 "chvm-guest: ready" "$(e2e_serial_log web)")"
fi
e2e_wait_serving "$port" "$boot_timeout" || e2e_fail "the guest did not serve within $boot_timeout s"
boot_ms=$(e2e_ms_since "$t_run")
e2e_say "the guest serves, $boot_ms ms after chvmctl run"

demo_step "fetch: the guest's page from $client_ns through the forward on $E2E_HOST_ADDR:$port"
e2e_show ip netns exec "$client_ns" curl -sS --max-time 5 "http://$E2E_HOST_ADDR:$port/" ||
        e2e_fail "curl through the forward failed"
e2e_show e2e_ctl list
e2e_show e2e_ctl inspect web
if [ "$stock" = yes ]; then
        e2e_say "the guest's address is a DHCP lease from the agent; the guest's own view of it:"
        e2e_show ip netns exec "$client_ns" curl -sS --max-time 5 "http://$E2E_HOST_ADDR:$port/cgi-bin/addr" ||
                e2e_fail "no /cgi-bin/addr from the guest"
        e2e_say "and the agent's log of it:"
        grep -F "DHCP lease" "$E2E_AGENT_LOG" | sed 's/^/      /'
        [ -n "$(e2e_ctl inspect web --json | jq -r '.lease.address // ""')" ] ||
                e2e_fail "chvmctl inspect web shows no lease"
fi
vmm_pid=$(e2e_vm_field web vmm_pid)
tap=$(e2e_vm_field web tap)
[[ $vmm_pid =~ ^[0-9]+$ ]] && [ -n "$tap" ] || e2e_fail "inspect shows no vmm_pid or tap"
e2e_show ip -n "$host_ns" -br link show master chvm0
e2e_show ip netns exec "$host_ns" nft list map inet chvm portfwd4

demo_step "crash: kill -9 $vmm_pid (web's QEMU), then watch the agent clean up"
clean() {
        e2e_tap_gone "$tap" && e2e_forward_gone "$port" && e2e_vm_state_is web crashed
}
t_kill=$(e2e_now_us)
e2e_show kill -9 "$vmm_pid"
e2e_poll 5000 0.01 clean || e2e_fail "the agent did not clean up within 5 s of kill -9"
clean_ms=$(e2e_ms_since "$t_kill")
e2e_say "TAP, forward and state done $clean_ms ms after kill -9:"
e2e_show e2e_ctl list -a
e2e_show ip -n "$host_ns" -br link
e2e_show ip netns exec "$host_ns" nft list map inet chvm portfwd4
e2e_say "the agent's log about web:"
grep -F "VM web" "$E2E_AGENT_LOG" | sed 's/^/      /'
e2e_say "and the forward is gone for the client too:"
if e2e_show ip netns exec "$client_ns" curl -sS --max-time 3 "http://$E2E_HOST_ADDR:$port/"; then
        e2e_fail "the page still comes through the forward after the crash"
fi

demo_step "doctor: chvmctl doctor --gc --dry-run"
doctor_status=0
"$E2E_BUILD/chvmctl" doctor --help >/dev/null 2>&1 || doctor_status=$?
if [ "$doctor_status" -eq 0 ]; then
        e2e_show e2e_ctl doctor --gc --dry-run || e2e_fail "chvmctl doctor --gc --dry-run failed"
else
        e2e_say "skipped: this build's chvmctl has no doctor command yet" \
                "(chvmctl doctor --help exits $doctor_status)"
fi

demo_step "remove: chvmctl rm web, then the agent, the namespaces and $demo_dir"
e2e_show e2e_ctl rm web || e2e_fail "chvmctl rm web failed"
E2E_VMS=()
e2e_agent_stop
[ "$E2E_AGENT_STATUS" -eq 0 ] || e2e_fail "chvm-agentd exited with status $E2E_AGENT_STATUS"
e2e_say "chvm-agentd exited (status 0)"
e2e_cleanup
for ns in "$host_ns" "$client_ns"; do
        ! ip netns list | grep -q "^$ns\( \|\$\)" || e2e_fail "namespace $ns is still there"
done
[ ! -e "$demo_dir" ] || e2e_fail "$demo_dir is still there"

ok=yes
echo
guest_kind=guest
[ "$stock" = no ] || guest_kind="stock Debian guest, by DHCP,"
echo "demo: OK in $(($(e2e_ms_since "$t_demo") / 1000)) s: the $guest_kind served through the forward" \
        "$boot_ms ms after chvmctl run; after kill -9 its TAP and forward were gone in $clean_ms ms;" \
        "VM, agent, namespaces and $demo_dir removed"
