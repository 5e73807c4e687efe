#!/usr/bin/env bash
# Installs everything chvm-agent needs to build, test and fuzz on Debian 12. Safe to run again.
set -euo pipefail

packages=(
        # toolchain and build system
        build-essential autoconf automake pkg-config git
        # libraries the code links against
        libmnl-dev libnftnl-dev libnl-genl-3-dev libinih-dev libsystemd-dev
        # unit tests
        libcriterion-dev
        # clang build, libFuzzer harnesses and clang's ASan/UBSan runtimes; libclang-rt-14-dev holds
        # libclang_rt.fuzzer*.a and is only a Recommends of clang, so it must be named here
        clang libclang-rt-14-dev clang-format
        # the kernel-facing tests inspect their network namespace with these (ip, bridge, nft)
        nftables iproute2
        # the netlink benchmark's peers: one iptables process per rule (bench/netlink)
        iptables
        # the QEMU test guest: the hypervisor, and what builds its initramfs and fetches its page
        qemu-system-x86 cpio kmod curl
        # documentation and installation tests: the man page linter (mandoc -Tlint; groff comes with
        # man-db), systemd-analyze and systemd-sysusers for the units, bash-completion's pkg-config file
        # for the completion folder
        mandoc groff-base systemd bash-completion
        # the agent tests check chvmctl --json output with jq
        jq
        # DHCP clients no one here wrote, run against the agent's DHCP server (tests/test-dhcp-clients.sh):
        # busybox udhcpc, ISC dhclient, dhcpcd (systemd-networkd comes with systemd); never started as
        # services, only in the tests' namespaces
        busybox-static isc-dhcp-client dhcpcd-base
        # the stock Debian guest (tests/guest/build-stock-guest.sh): its root file system from Debian's
        # packages, and a disk image with SYSLINUX made without loop devices
        mmdebstrap e2fsprogs dosfstools mtools fdisk syslinux syslinux-common
)

# Nothing to do when every package is already installed: no network, no apt lock needed.
missing=()
for p in "${packages[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$status" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
        echo "install-deps.sh: all ${#packages[@]} packages already installed"
        exit 0
fi

echo "install-deps.sh: missing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
        as_root=()
elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
else
        echo "install-deps.sh: installing packages needs root: run it as root (or install sudo)" >&2
        exit 1
fi
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
