#!/usr/bin/env bash
# Boots the test guest (tests/guest/build-guest.sh) under QEMU on a TAP in a bridge, all inside network
# namespaces this test makes and removes, and fetches the guest's web page from a second namespace:
#
#   netns chvm-c-PID (client)          netns chvm-h-PID (host side)                  QEMU guest
#   vc0 10.77.0.2/24  ---- veth ----   vh0 10.77.0.1/24, ip_forward=1
#   192.168.200.0/24 via 10.77.0.1     br0 192.168.200.1/24 -- tap0 -- virtio-net   eth0 192.168.200.2/24
#
# Then it presses the ACPI power button (QMP/HMP system_powerdown, the VMM's first stop step) and expects
# QEMU to exit by itself. The machine's own namespace is not touched.
#
# Exit status (automake): 0 pass, 77 skip (not root, a tool missing, the guest packages cannot be
# downloaded), 1 fail. The guest is built into $CHVM_GUEST_DIR, default ./tests/guest/out (relative to the
# directory the test runs in: the build tree under `make check`), and reused while it is up to date.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prog=test-qemu-guest.sh

guest_addr=192.168.200.2
host_addr=192.168.200.1
guest_mac=02:c4:00:00:00:02
ready_timeout=60
poweroff_timeout=30

skip() {
        echo "SKIP: $prog: $*"
        exit 77
}

# --- can it run here? ----------------------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, a TAP device)"
for tool in qemu-system-x86_64 ip curl apt-get dpkg-deb cpio modinfo; do
        command -v "$tool" >/dev/null 2>&1 ||
                skip "$tool not found (packages: qemu-system-x86 iproute2 curl cpio kmod)"
done
[ -c /dev/net/tun ] || skip "no /dev/net/tun (TAP devices unavailable)"
ip netns list >/dev/null 2>&1 || skip "cannot use network namespaces"

guest_dir=${CHVM_GUEST_DIR:-$PWD/tests/guest/out}
status=0
bash "$here/build-guest.sh" "$guest_dir" || status=$?
case $status in
0) ;;
2) skip "the guest's packages cannot be resolved or downloaded (see above)" ;;
*)
        echo "FAIL: $prog: building the guest failed (exit $status)"
        exit 1
        ;;
esac
# shellcheck source=/dev/null
. "$guest_dir/guest.env"

# --- namespaces, QEMU and cleanup ----------------------------------------------------------------------

hns=chvm-h-$$
cns=chvm-c-$$
tmp=$(mktemp -d /tmp/chvm-qemu-guest.XXXXXX)
console=$tmp/console.log
qemu_pid=""
result=fail

cleanup() {
        set +e
        if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
                kill "$qemu_pid"
                wait "$qemu_pid" 2>/dev/null
        fi
        exec 7<&- 8<&-
        ip netns del "$hns" 2>/dev/null
        ip netns del "$cns" 2>/dev/null
        if [ "$result" != pass ]; then
                echo "--- guest console, last 60 lines (all of it in $console) ---"
                tail -n 60 "$console" 2>/dev/null
                echo "--- QEMU output ---"
                cat "$tmp/qemu.out" 2>/dev/null
                echo "--- kept in $tmp ---"
        else
                rm -rf "$tmp"
        fi
}
trap cleanup EXIT
# bash runs the EXIT trap on a signal only when the signal itself is trapped.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
        echo "FAIL: $prog: $*"
        exit 1
}

# Microseconds since the epoch, for timings.
now_us() {
        local t=$EPOCHREALTIME
        echo $((${t/./}))
}
ms_since() {
        echo $((($(now_us) - $1) / 1000))
}

ip netns add "$hns"
ip netns add "$cns"
ip -n "$hns" link set lo up
ip -n "$cns" link set lo up

ip -n "$hns" link add br0 type bridge
ip -n "$hns" addr add "$host_addr/24" dev br0
ip -n "$hns" link set br0 up
# `ip -n` enters the namespace before opening /dev/net/tun, so the TAP is created there.
ip -n "$hns" tuntap add tap0 mode tap
ip -n "$hns" link set tap0 master br0
ip -n "$hns" link set tap0 up

ip -n "$hns" link add vh0 type veth peer name vc0 netns "$cns"
ip -n "$hns" addr add 10.77.0.1/24 dev vh0
ip -n "$hns" link set vh0 up
ip -n "$cns" addr add 10.77.0.2/24 dev vc0
ip -n "$cns" link set vc0 up
ip -n "$cns" route add 192.168.200.0/24 via 10.77.0.1
# Forwarding in the host-side namespace only (the sysctl is per namespace).
ip netns exec "$hns" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'

# A human monitor on two FIFOs (QEMU's pipe: chardev) to send system_powerdown without a QMP client.
mkfifo "$tmp/monitor.in" "$tmp/monitor.out"

start_us=$(now_us)
# `ip netns exec` execs QEMU in place, so $! is QEMU's PID.
ip netns exec "$hns" qemu-system-x86_64 -accel tcg -nodefaults -nographic -m 256 \
        -kernel "$CHVM_GUEST_KERNEL" -initrd "$CHVM_GUEST_INITRD" \
        -append "console=ttyS0 ip=$guest_addr::$host_addr:255.255.255.0::eth0:off" \
        -serial "file:$console" -monitor "pipe:$tmp/monitor" \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device "virtio-net-pci,netdev=n0,romfile=,mac=$guest_mac" \
        </dev/null >"$tmp/qemu.out" 2>&1 &
qemu_pid=$!
# Read-write opens do not block on a FIFO; keep the monitor's output drained enough by never filling it
# (it prints a banner and echoes one command).
exec 7<>"$tmp/monitor.out" 8<>"$tmp/monitor.in"

echo "$prog: QEMU pid $qemu_pid ($CHVM_GUEST_KERNEL_RELEASE, TCG), waiting up to ${ready_timeout} s"
deadline=$(($(now_us) + ready_timeout * 1000000))
until grep -q "chvm-guest: ready $guest_addr" "$console" 2>/dev/null; do
        kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited before the guest was ready"
        [ "$(now_us)" -lt "$deadline" ] || fail "no 'chvm-guest: ready $guest_addr' in ${ready_timeout} s"
        sleep 0.1
done
ready_ms=$(ms_since "$start_us")
echo "$prog: guest ready ${ready_ms} ms after QEMU started"

# --- checks --------------------------------------------------------------------------------------------

http_start_us=$(now_us)
page=$(ip netns exec "$cns" curl --max-time 5 -sS "http://$guest_addr/") ||
        fail "curl from $cns to $guest_addr failed"
http_ms=$(ms_since "$http_start_us")
[ "$page" = "chvm test guest $guest_addr" ] || fail "unexpected page: '$page'"
echo "$prog: client namespace got '$page' in ${http_ms} ms"

# Independent oracle: the host side learned the guest's address at the MAC we gave the virtio-net device,
# on the bridge, and the bridge learned that MAC on the TAP.
neigh=$(ip -n "$hns" neigh show "$guest_addr" dev br0)
[[ $neigh == *"lladdr $guest_mac"* ]] ||
        fail "host-side neighbour entry for $guest_addr is '$neigh', not $guest_mac"
fdb=$(bridge -n "$hns" fdb show br br0 dev tap0)
[[ $fdb == *"$guest_mac master br0"* ]] || fail "bridge br0 has not learned $guest_mac on tap0: '$fdb'"

# The guest powers off on the ACPI power button, so QEMU exits by itself.
off_start_us=$(now_us)
echo system_powerdown >&8
deadline=$(($(now_us) + poweroff_timeout * 1000000))
while kill -0 "$qemu_pid" 2>/dev/null; do
        [ "$(now_us)" -lt "$deadline" ] ||
                fail "QEMU still running ${poweroff_timeout} s after system_powerdown"
        sleep 0.1
done
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
qemu_pid=""
[ "$qemu_status" -eq 0 ] || fail "QEMU exited with status $qemu_status after system_powerdown"
grep -q "reboot: Power down" "$console" || fail "QEMU exited but the guest did not log 'reboot: Power down'"
echo "$prog: guest powered off $(ms_since "$off_start_us") ms after system_powerdown"

result=pass
echo "PASS: $prog: boot to ready ${ready_ms} ms, HTTP ${http_ms} ms"
