#!/usr/bin/env bash
# Runs the README's main job, tools/demo.sh, as it is — with this build's programs (CHVM_DEMO_PREBUILT) instead
# of a build of its own — and checks that it ends with its OK line; then the same with --stock (a stock
# Debian guest from its disk, by DHCP), whose output must show the lease. Exit status (automake): 0 pass, 77 skip
# (not root, or the guest's packages cannot be downloaded), 1 fail.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${CHVM_BUILD_DIR:-$PWD}" && pwd)

if [ "$(id -u)" -ne 0 ]; then
        echo "SKIP: test-demo.sh: needs root (network namespaces, a TAP device)"
        exit 77
fi
out=$(mktemp /tmp/chvm-demo-test.XXXXXX)
trap 'rm -f "$out"' EXIT
export CHVM_DEMO_PREBUILT=$build
export CHVM_GUEST_DIR=${CHVM_GUEST_DIR:-$PWD/tests/guest/out}
bash "$here/../../tools/demo.sh" 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
if grep -q "packages cannot be resolved or downloaded" "$out"; then
        echo "SKIP: test-demo.sh: the guest's packages cannot be downloaded"
        exit 77
fi
if [ "$status" -ne 0 ]; then
        echo "FAIL: test-demo.sh: tools/demo.sh exited $status"
        exit 1
fi
for want in "==> " "chvmctl list -a" "killed by signal 9" "doctor --gc --dry-run" "summary" "demo: OK in "; do
        grep -qF -- "$want" "$out" || { echo "FAIL: test-demo.sh: the demo's output lacks \"$want\""; exit 1; }
done

export CHVM_STOCK_DIR=${CHVM_STOCK_DIR:-$PWD/tests/guest/stock}
bash "$here/../../tools/demo.sh" --stock 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
if grep -qiE "packages cannot be|cannot resolve the packages|failed to fetch" "$out"; then
        echo "SKIP: test-demo.sh: the stock guest's packages cannot be downloaded"
        exit 77
fi
if [ "$status" -ne 0 ]; then
        echo "FAIL: test-demo.sh: tools/demo.sh --stock exited $status"
        exit 1
fi
for want in "chvmctl run web --disk" "lease:       192.168.200." "scope global dynamic" "DHCP lease" \
        "killed by signal 9" "demo: OK in "; do
        grep -qF -- "$want" "$out" || { echo "FAIL: test-demo.sh: the --stock demo's output lacks \"$want\""; exit 1; }
done
echo "PASS: test-demo.sh"
