#!/usr/bin/env bash
# Real DHCP clients that no one here wrote get a VM's address, mask, gateway, DNS servers and MTU from the
# local backend's DHCP server (issue 11, acceptance 1 and 2): busybox udhcpc, ISC dhclient, dhcpcd and
# systemd-networkd. Each runs as the "guest" of a VM: tests/fake-vmm (the stand-in hypervisor) attaches to
# the VM's TAP like cloud-hypervisor and, with FAKE_VMM_GUEST_NETNS, relays its frames to a link eth0 with
# the VM's MAC in a namespace of this test's, where the client runs. What each client configured is read
# back from the kernel (ip -j) and, for DNS, from what the client hands its hook (dhclient-script's and
# dhcpcd's variables, udhcpc's script, networkd's state file).
#
# No answer is due, and none must come: to the VM's link with another MAC, to a foreign port on the agent's
# bridge with an unknown MAC, and on an interface that is not the bridge.
#
# Namespaces (made and removed here): HOST (the agent, its bridge chvm0), GUEST (eth0 of the VM), CLIENT
# (vc0, the veth to HOST's vh0, not on the bridge). Exit status (automake): 0 pass, 77 skip, 1 fail.
set -euo pipefail

E2E_PROG=test-dhcp-clients.sh
E2E_BUILD=$(cd "${CHVM_BUILD_DIR:-$PWD}" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/e2e/lib.sh"

skip() {
        echo "SKIP: $E2E_PROG: $*"
        exit 77
}

[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, TAP devices, nftables)"
[ -c /dev/net/tun ] || skip "no /dev/net/tun"
missing=$(e2e_missing_tools ip nft jq busybox dhclient dhcpcd nsenter unshare)
[ -z "$missing" ] || skip "$missing not found (tools/install-deps.sh installs them)"
networkd=/lib/systemd/systemd-networkd
[ -x "$networkd" ] || skip "no $networkd (package systemd)"
for f in chvm-agentd chvmctl backends/local.so tests/fake-vmm; do
        [ -e "$E2E_BUILD/$f" ] || e2e_fail "$E2E_BUILD/$f is missing: run the test from the build tree (make check)"
done

GUEST_NS=""
CLIENT_PIDS=()
# The clients first (by PID; those left in the guest namespace are ended with it), then the rest.
remove_guests() {
        local pid
        for pid in "${CLIENT_PIDS[@]}"; do
                kill -KILL "$pid" 2>/dev/null
        done
        [ -z "$GUEST_NS" ] || e2e_netns_remove "$GUEST_NS"
}
E2E_EXTRA_CLEANUP=remove_guests
e2e_test_traps

gw=192.168.200.1
dns1=10.77.0.53
dns2=10.77.0.54
mtu=1400

e2e_step "namespaces and the agent (local backend, fake-vmm, [local] dns = $dns1 $dns2, mtu = $mtu)"
e2e_netns_setup "chvm-dc-h-$$" "chvm-dc-c-$$"
GUEST_NS=chvm-dc-g-$$
ip netns add "$GUEST_NS"
ip -n "$GUEST_NS" link set lo up
e2e_tmp_make
cat >"$E2E_TMP/agent.conf" <<EOF
[agent]
state_dir = $E2E_TMP/state
runtime_dir = $E2E_TMP/run
socket = $E2E_SOCKET
backend_dir = $E2E_BUILD/backends
backends = local
[vmm]
hypervisor = cloud-hypervisor
binary = $E2E_BUILD/tests/fake-vmm
stop_timeout = 2
pass_environment = FAKE_VMM_*
[local]
dns = $dns1 $dns2
domain = guests.test
mtu = $mtu
lease_time = 600
EOF
: >"$E2E_TMP/vmlinuz"
FAKE_VMM_GUEST_NETNS=/run/netns/$GUEST_NS e2e_agent_start
e2e_say "agent pid $E2E_AGENT_PID"

guest() {
        ip netns exec "$GUEST_NS" "$@"
}
eth0_up() {
        ip -n "$GUEST_NS" link show dev eth0 >/dev/null 2>&1
}
eth0_gone() {
        ! eth0_up
}

# vm_up NAME: runs a VM and waits for its guest link; sets IP and MAC.
vm_up() {
        e2e_ctl_run "$1" --kernel "$E2E_TMP/vmlinuz" >/dev/null || e2e_fail "chvmctl run $1 failed"
        e2e_poll 5000 0.05 eth0_up || e2e_fail "fake-vmm made no guest link eth0 for $1"
        IP=$(e2e_vm_field "$1" ip)
        MAC=$(e2e_vm_field "$1" mac)
        [ -n "$IP" ] || e2e_fail "VM $1 has no address"
        [ "$(ip -n "$GUEST_NS" -j link show dev eth0 | jq -r '.[0].address')" = "$MAC" ] ||
                e2e_fail "the guest link does not have the VM's MAC $MAC"
}
# Every process in the guest namespace is a client this test started (and its helpers: dhcpcd forks
# several); the hypervisor runs in the host's.
stop_guest_processes() {
        local pid
        for pid in $(ip netns pids "$GUEST_NS"); do
                kill -TERM "$pid" 2>/dev/null || true
        done
        e2e_poll 3000 0.05 guest_empty || for pid in $(ip netns pids "$GUEST_NS"); do
                kill -KILL "$pid" 2>/dev/null || true
        done
}
guest_empty() {
        [ -z "$(ip netns pids "$GUEST_NS")" ]
}
vm_down() {
        e2e_ctl rm -f "$1" >/dev/null || e2e_fail "chvmctl rm -f $1 failed"
        e2e_poll 5000 0.05 eth0_gone || e2e_fail "the guest link of $1 stayed"
}

# check_configured CLIENT DNS_SEEN [MTU_SEEN]: the address, mask, gateway and MTU in the kernel, and the DNS
# servers the client was given (and the MTU, for a client that leaves it to its hooks).
check_configured() {
        local client=$1 dns=$2 addr route link
        addr=$(ip -n "$GUEST_NS" -4 -j addr show dev eth0 | jq -c '[.[0].addr_info[] | {local, prefixlen}]')
        route=$(ip -n "$GUEST_NS" -4 -j route show default | jq -r '.[0].gateway // ""')
        link=${3:-$(ip -n "$GUEST_NS" -j link show dev eth0 | jq -r '.[0].mtu')}
        e2e_say "$client: address $addr, default via $route, mtu $link, dns $dns"
        [ "$addr" = "[{\"local\":\"$IP\",\"prefixlen\":24}]" ] || e2e_fail "$client: address is $addr, not $IP/24"
        [ "$route" = "$gw" ] || e2e_fail "$client: default route via '$route', not $gw"
        [ "$link" = "$mtu" ] || e2e_fail "$client: MTU $link, not $mtu (option 26)"
        [[ $dns == *"$dns1"*"$dns2"* ]] || e2e_fail "$client: DNS servers '$dns', not $dns1 $dns2"
}

# make_hook CLIENT: a hook for udhcpc and dhclient (neither touches addresses itself: that is its script's
# job) that records what the client was told in $E2E_TMP/CLIENT.env and configures the link. dhclient runs it
# with an environment of its own making, so the file's path is written into it.
make_hook() {
        hook=$E2E_TMP/hook-$1.sh
        printf '#!/bin/sh\nout=%s\n' "$E2E_TMP/$1.env" >"$hook"
        cat >>"$hook" <<'EOF'
env | sort >"$out.$$"
case "${1:-}${reason:-}" in
bound|renew|BOUND|REBOOT|RENEW)
        addr=${ip:-$new_ip_address}
        mask=${subnet:-$new_subnet_mask}
        gwy=${router:-$new_routers}
        m=${mtu:-$new_interface_mtu}
        dev=$interface
        ip addr flush dev "$dev"
        ip addr add "$addr/$mask" dev "$dev"
        [ -z "$m" ] || ip link set dev "$dev" mtu "$m"
        [ -z "$gwy" ] || ip route replace default via "${gwy%% *}" dev "$dev"
        mv "$out.$$" "$out"
        ;;
*) rm -f "$out.$$" ;;
esac
exit 0
EOF
        chmod 755 "$hook"
}

# --- udhcpc ------------------------------------------------------------------------------------------------

e2e_step "busybox udhcpc"
vm_up c-udhcpc
make_hook udhcpc
guest busybox udhcpc -f -q -n -t 5 -T 2 -i eth0 -s "$hook" -O mtu -O dns \
        >"$E2E_TMP/udhcpc.log" 2>&1 || {
        cat "$E2E_TMP/udhcpc.log"
        e2e_fail "udhcpc got no lease"
}
check_configured udhcpc "$(sed -n 's/^dns=//p' "$E2E_TMP/udhcpc.env")"
# [local] mtu: the bridge, the VM's TAP and option 26 agree
tap=$(e2e_vm_field c-udhcpc tap)
for link in chvm0 "$tap"; do
        m=$(ip -n "$E2E_HOST_NS" -j link show dev "$link" | jq -r '.[0].mtu')
        [ "$m" = "$mtu" ] || e2e_fail "$link has MTU $m, not [local] mtu = $mtu"
done
grep -qx "hostname=c-udhcpc" "$E2E_TMP/udhcpc.env" || e2e_fail "udhcpc: no host name option (12) with the VM's name"
grep -qx "domain=guests.test" "$E2E_TMP/udhcpc.env" || e2e_fail "udhcpc: no domain option (15)"
grep -qx "lease=600" "$E2E_TMP/udhcpc.env" || e2e_fail "udhcpc: lease time is not 600 s"
lease=$(e2e_ctl inspect c-udhcpc --json | jq -c .lease)
jq -e --arg ip "$IP" '.address == $ip' <<<"$lease" >/dev/null || e2e_fail "inspect shows no lease of $IP: $lease"
e2e_say "inspect: lease $lease"

udhcpc_once() {
        ip -n "$GUEST_NS" addr flush dev eth0
        guest busybox udhcpc -f -q -n -t "$1" -T 1 -i eth0 -s "$hook" >/dev/null 2>&1
}

e2e_step "a host firewall's bridge input chain with policy drop stops DHCP; doctor names it and the rule"
hostns() {
        ip netns exec "$E2E_HOST_NS" "$@"
}
hostns nft add table bridge hostfw
hostns nft add chain bridge hostfw input '{ type filter hook input priority 0; policy drop; }'
if udhcpc_once 2; then
        e2e_fail "a lease came through a bridge input chain with policy drop"
fi
doctor=$(e2e_ctl doctor 2>&1 || true)
grep -F 'table bridge hostfw chain input has policy drop' <<<"$doctor" | grep -qF 'iifname "tap-*" accept' ||
        e2e_fail "doctor does not name the chain and the rule: $doctor"
e2e_say "doctor: $(grep -F hostfw <<<"$doctor")"
hostns nft add rule bridge hostfw input iifname '"tap-*"' accept
udhcpc_once 5 || e2e_fail "no lease with the rule doctor named"
hostns nft delete table bridge hostfw
e2e_say "with 'iifname \"tap-*\" accept' in that chain the lease comes again"

e2e_step "agent restart: the adopted VM's client gets its lease from the new agent (no bring-up in between)"
e2e_agent_stop
FAKE_VMM_GUEST_NETNS=/run/netns/$GUEST_NS e2e_agent_start
udhcpc_once 5 || e2e_fail "no lease from the restarted agent"
e2e_say "lease $(sed -n 's/^ip=//p' "$E2E_TMP/udhcpc.env") from agent pid $E2E_AGENT_PID"

e2e_step "no answer to the VM's link with another MAC (anti-spoofing), nor to a foreign port on the bridge"
ip -n "$GUEST_NS" addr flush dev eth0
ip -n "$GUEST_NS" link set dev eth0 address 02:aa:bb:cc:dd:ee
if guest busybox udhcpc -f -q -n -t 2 -T 1 -i eth0 -s /bin/true >/dev/null 2>&1; then
        e2e_fail "a client with another MAC on the VM's TAP got a lease"
fi
ip -n "$E2E_HOST_NS" link add fp0 type veth peer name fg0 netns "$GUEST_NS"
ip -n "$E2E_HOST_NS" link set fp0 master chvm0 up
ip -n "$GUEST_NS" link set fg0 address 02:12:34:56:78:9a up
if guest busybox udhcpc -f -q -n -t 2 -T 1 -i fg0 -s /bin/true >/dev/null 2>&1; then
        e2e_fail "an unknown MAC on a foreign port of the bridge got a lease"
fi
ip -n "$E2E_HOST_NS" link del fp0
e2e_say "no lease for 02:aa:bb:cc:dd:ee on the VM's TAP, nor for 02:12:34:56:78:9a on a foreign port"

e2e_step "no answer on an interface that is not the agent's bridge (vc0 -> host's vh0)"
if ip netns exec "$E2E_CLIENT_NS" busybox udhcpc -f -q -n -t 2 -T 1 -i vc0 -s /bin/true >/dev/null 2>&1; then
        e2e_fail "a DHCP request on the host's vh0 got a lease"
fi
e2e_say "none"
vm_down c-udhcpc

# --- dhclient ----------------------------------------------------------------------------------------------

e2e_step "ISC dhclient"
vm_up c-dhclient
make_hook dhclient
guest dhclient -4 -1 -v -sf "$hook" -lf "$E2E_TMP/dhclient.leases" \
        -pf "$E2E_TMP/dhclient.pid" eth0 >"$E2E_TMP/dhclient.log" 2>&1 || {
        cat "$E2E_TMP/dhclient.log"
        e2e_fail "dhclient got no lease"
}
pid=$(cat "$E2E_TMP/dhclient.pid" 2>/dev/null || true)
[ -z "$pid" ] || CLIENT_PIDS+=("$pid")
check_configured dhclient "$(sed -n 's/^new_domain_name_servers=//p' "$E2E_TMP/dhclient.env")"
grep -qx "new_host_name=c-dhclient" "$E2E_TMP/dhclient.env" || e2e_fail "dhclient: no host name option"
stop_guest_processes
vm_down c-dhclient

# --- dhcpcd ------------------------------------------------------------------------------------------------

e2e_step "dhcpcd (it configures the link itself)"
vm_up c-dhcpcd
hook_dhcpcd=$E2E_TMP/dhcpcd-hook.sh
printf '#!/bin/sh\ncase "$reason" in BOUND|REBOOT) env | sort >%s ;; esac\nexit 0\n' "$E2E_TMP/dhcpcd.env" >"$hook_dhcpcd"
chmod 755 "$hook_dhcpcd"
# Its lease and pid files go to a tmpfs of its own mount namespace, not to the host's folders.
nsenter --net="/run/netns/$GUEST_NS" unshare -m --propagation private sh -c '
        mkdir -p /var/lib/dhcpcd /run/dhcpcd && mount -t tmpfs tmpfs /var/lib/dhcpcd &&
        mount -t tmpfs tmpfs /run/dhcpcd && exec dhcpcd -f /dev/null -B -4 -t 20 -c "$1" \
        -o subnet_mask -o routers -o domain_name_servers -o interface_mtu eth0' sh "$hook_dhcpcd" \
        >"$E2E_TMP/dhcpcd.log" 2>&1 &
CLIENT_PIDS+=($!)
dhcpcd_bound() {
        [ -s "$E2E_TMP/dhcpcd.env" ] && [ -n "$(ip -n "$GUEST_NS" -4 -j route show default | jq -r '.[0].gateway // ""')" ]
}
e2e_poll 20000 0.1 dhcpcd_bound || {
        cat "$E2E_TMP/dhcpcd.log"
        e2e_fail "dhcpcd got no lease"
}
# dhcpcd sets addresses and routes itself; the MTU it hands to its hooks (10-mtu in dhcpcd-run-hooks).
check_configured dhcpcd "$(sed -n 's/^new_domain_name_servers=//p' "$E2E_TMP/dhcpcd.env")" \
        "$(sed -n 's/^new_interface_mtu=//p' "$E2E_TMP/dhcpcd.env")"
stop_guest_processes
vm_down c-dhcpcd

# --- systemd-networkd ---------------------------------------------------------------------------------------

e2e_step "systemd-networkd (DHCP=ipv4, UseMTU=yes), in a mount namespace of its own (as in a container)"
vm_up c-networkd
nsenter --net="/run/netns/$GUEST_NS" unshare -m --propagation private sh -c '
        set -e
        mount -t tmpfs tmpfs /run/systemd
        mkdir -p /run/systemd/network /run/systemd/netif/links /run/systemd/netif/leases /run/systemd/netif/lldp
        chown -R systemd-network:systemd-network /run/systemd/netif
        printf "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nUseMTU=yes\nUseHostname=no\n" \
                >/run/systemd/network/10-eth0.network
        mount -t tmpfs tmpfs /etc/systemd/network
        # No udev here: networkd waits for udev to announce a link unless /sys is read-only (as in a
        # container); a sysfs of this network namespace, read-only.
        umount -l /sys
        mount -t sysfs -o ro sysfs /sys
        exec "$1"' sh "$networkd" >"$E2E_TMP/networkd.log" 2>&1 &
networkd_pid=$!
CLIENT_PIDS+=("$networkd_pid")
networkd_bound() {
        [ -n "$(ip -n "$GUEST_NS" -4 -j route show default | jq -r '.[0].gateway // ""')" ] &&
                [ "$(ip -n "$GUEST_NS" -j link show dev eth0 | jq -r '.[0].mtu')" = "$mtu" ]
}
e2e_poll 30000 0.1 networkd_bound || {
        cat "$E2E_TMP/networkd.log"
        e2e_fail "systemd-networkd got no lease"
}
ifindex=$(ip -n "$GUEST_NS" -j link show dev eth0 | jq -r '.[0].ifindex')
state=$(nsenter -t "$networkd_pid" -m cat "/run/systemd/netif/links/$ifindex" 2>/dev/null || true)
check_configured systemd-networkd "$(sed -n 's/^DNS=//p' <<<"$state")"
ip -n "$GUEST_NS" -4 addr show dev eth0 | grep -q "dynamic" || e2e_fail "networkd: the address is not a lease"
stop_guest_processes
vm_down c-networkd

E2E_RESULT=pass
echo "PASS: $E2E_PROG"
