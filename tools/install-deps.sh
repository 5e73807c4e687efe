#!/bin/bash
# Installs everything needed to build, test and fuzz chvm-agent on Debian 12. Idempotent: packages that
# are already installed are left as they are.
set -euo pipefail

packages=(
        build-essential autoconf automake pkg-config
        libmnl-dev libnftnl-dev libnl-genl-3-dev libinih-dev libsystemd-dev
        libcriterion-dev
        clang libclang-rt-14-dev   # libFuzzer and the sanitizer runtimes for clang
        nftables iproute2 git
)

if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
                exec sudo "$0" "$@"
        fi
        echo "install-deps: needs root (apt-get install); run it as root or install sudo" >&2
        exit 1
fi

missing=()
for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
        echo "install-deps: all ${#packages[@]} packages already installed"
        exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${packages[@]}"
