#!/usr/bin/env bash
# A stock Debian 12 guest (tests/guest/build-stock-guest.sh: Debian's cloud kernel and initramfs-tools
# initramfs, systemd-networkd with DHCP=yes, busybox httpd) gets its network from the agent the standard
# way, by DHCP, and is reached through its forward (issue 11, acceptance 3). In two network namespaces this
# test makes and removes (tests/e2e/lib.sh):
#
#   1. chvm-agentd with QEMU (TCG) and `[local] kernel_ip_arg = no`, so nothing but DHCP can give the guest
#      its address; `chvmctl run stock --kernel ... --initrd ... --disk COPY -p 8080:80`;
#   2. from the client namespace the page comes through 10.77.0.1:8080, and /cgi-bin/addr (`ip -4 -o addr`
#      in the guest) shows the agent's address for the VM as a DHCP lease ("dynamic", valid_lft in seconds);
#   3. `chvmctl inspect stock --json` shows the lease (address, when acknowledged, the client's host name);
#   4. the same from the disk alone (no --kernel: SeaBIOS boots SYSLINUX from the image), unless
#      CHVM_STOCK_DISK_BOOT=0.
#
# Exit status (automake): 0 pass, 77 skip (not root, a tool missing, Debian's packages cannot be fetched), 1
# fail. The image is built once into $CHVM_STOCK_DIR (default: tests/guest/stock in the build tree): ~1 min
# the first time, and each boot under TCG takes 1-2 min.
set -euo pipefail

E2E_PROG=test-stock-guest.sh
E2E_BUILD=$(cd "${CHVM_BUILD_DIR:-$PWD}" && pwd)
# shellcheck source=tests/e2e/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

port=8080
boot_timeout=300 # s; TCG reaches multi-user.target in 60-100 s, more on a loaded machine

skip() {
        echo "SKIP: $E2E_PROG: $*"
        exit 77
}

why=$(e2e_cannot_run)
[ -z "$why" ] || skip "$why"
missing=$(e2e_missing_tools mmdebstrap mkfs.ext4 mkfs.fat mcopy syslinux sfdisk)
[ -z "$missing" ] || skip "$missing not found (tools/install-deps.sh installs them)"
for f in chvm-agentd chvmctl backends/local.so; do
        [ -e "$E2E_BUILD/$f" ] || e2e_fail "$E2E_BUILD/$f is missing: run the test from the build tree (make check)"
done

e2e_test_traps

e2e_step "stock guest: build or reuse it"
stock_dir=${CHVM_STOCK_DIR:-$E2E_BUILD/tests/guest/stock}
status=0
bash "$E2E_SRC_DIR/tests/guest/build-stock-guest.sh" "$stock_dir" || status=$?
case $status in
0) ;;
2) skip "Debian's packages cannot be fetched (see above)" ;;
*) e2e_fail "building the stock guest failed (exit $status)" ;;
esac
# shellcheck source=/dev/null
. "$stock_dir/stock.env"

e2e_step "namespaces: host chvm-st-h-$$, client chvm-st-c-$$"
e2e_netns_setup "chvm-st-h-$$" "chvm-st-c-$$"
e2e_tmp_make
e2e_agent_config 30
printf '[local]\nkernel_ip_arg = no\ndns = 10.77.0.53\ndomain = guests.test\n' >>"$E2E_TMP/agent.conf"
e2e_agent_start
e2e_say "agent pid $E2E_AGENT_PID"

# addr_page: the guest's `ip -4 -o addr show scope global` through the forward.
addr_page() {
        ip netns exec "$E2E_CLIENT_NS" curl -sS --max-time 5 "http://$E2E_HOST_ADDR:$port/cgi-bin/addr"
}

# boot_and_check NAME ARGS...: runs the VM, waits for its page, checks its DHCP lease inside and in inspect.
boot_and_check() {
        local name=$1 t json ip addrs lease
        shift
        cp --sparse=always "$CHVM_STOCK_DISK" "$E2E_TMP/$name.img"
        t=$(e2e_now_us)
        e2e_ctl_run "$name" "$@" --disk "$E2E_TMP/$name.img" --memory 512 -p "$port:80" ||
                e2e_fail "chvmctl run $name failed"
        e2e_step "$name: waiting for its page through $E2E_HOST_ADDR:$port (at most $boot_timeout s)"
        e2e_wait_serving "$port" "$boot_timeout" ||
                e2e_fail "no page from $name within $boot_timeout s (the guest never got its address?)"
        [ "$E2E_PAGE" = chvm-stock-guest ] || e2e_fail "unexpected page '$E2E_PAGE'"
        e2e_say "page '$E2E_PAGE' $(e2e_ms_since "$t") ms after chvmctl run"

        json=$(e2e_ctl inspect "$name" --json)
        ip=$(jq -r .ip <<<"$json")
        addrs=$(addr_page) || e2e_fail "no /cgi-bin/addr from $name"
        e2e_say "in the guest: $addrs"
        grep -qE "inet $ip/24 .*dynamic" <<<"$addrs" ||
                e2e_fail "the guest does not hold $ip/24 as a DHCP lease: $addrs"
        grep -qE "valid_lft [0-9]+sec" <<<"$addrs" || e2e_fail "the guest's address has no lease lifetime: $addrs"

        lease=$(jq -c .lease <<<"$json")
        e2e_say "inspect: lease $lease"
        jq -e --arg ip "$ip" '.lease.address == $ip and (.lease.acked | test("^[0-9]{4}-"))' <<<"$json" >/dev/null ||
                e2e_fail "inspect shows no lease of $ip: $json"
        e2e_show e2e_ctl inspect "$name" | grep -i lease || true
        e2e_ctl rm -f "$name" >/dev/null || e2e_fail "chvmctl rm -f $name failed"
        rm -f "$E2E_TMP/$name.img"
}

e2e_step "direct kernel boot: Debian's kernel and initramfs, root on the disk, no ip= on the command line"
boot_and_check stock --kernel "$CHVM_STOCK_KERNEL" --initrd "$CHVM_STOCK_INITRD" --cmdline "root=/dev/vda2 rw"
if [ "${CHVM_STOCK_DISK_BOOT:-1}" != 0 ]; then
        e2e_step "disk boot: no --kernel, SeaBIOS boots the image's SYSLINUX"
        boot_and_check stock-disk
fi

E2E_RESULT=pass
echo "PASS: $E2E_PROG"
