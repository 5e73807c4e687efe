#!/usr/bin/env bash
# The one test command (the README's, and what CI runs): installs the dependencies, builds with ASan + UBSan
# and -Werror in build/check, runs `make check`, fuzzes every libFuzzer harness for FUZZ_SECONDS (default 60;
# 0 skips fuzzing) each in a clang build in build/fuzz, and runs `make distcheck`.
#
# The last line is always `tests: N passed, N failed, N skipped`, counted from the automake summary of
# `make check` (PASS and XFAIL count as passed; FAIL, ERROR and XPASS as failed; SKIP as skipped). The exit
# status is non-zero when a test failed, when no test ran, or when any step (build, fuzzing, distcheck)
# failed; a failed step is named on the line before.
set -uo pipefail

top=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$top"

jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-60}
check_dir=build/check
fuzz_dir=build/fuzz
failed_steps=()

# Runs one step and prints what it runs; a failure is remembered for the end.
run() {
        local name=$1
        shift
        printf '\n==> %s: %s\n' "$name" "$*"
        if ! "$@"; then
                failed_steps+=("$name")
                return 1
        fi
}

# configure is long-winded: keep its output in the build dir and show it only when it fails.
configure_in() {
        local dir=$1
        shift
        mkdir -p "$dir"
        if ! (cd "$dir" && "$top/configure" "$@" >configure.out 2>&1); then
                cat "$dir/configure.out"
                return 1
        fi
        sed -n '/^        chvm-agent/,$p' "$dir/configure.out"
}

show_test_logs() {
        printf '\n==> %s\n' "$check_dir/test-suite.log"
        cat "$check_dir/test-suite.log" 2>/dev/null || echo "(no test-suite.log: the tests did not run)"
        local trs
        for trs in $(find "$check_dir/tests" -name '*.trs' 2>/dev/null | sort); do
                if grep -qE '^:global-test-result: (FAIL|ERROR|XPASS)' "$trs"; then
                        printf '\n==> %s\n' "${trs%.trs}.log"
                        cat "${trs%.trs}.log"
                fi
        done
}

distcheck() {
        if ! make -C "$check_dir" -j"$jobs" distcheck >"$check_dir/distcheck.out" 2>&1; then
                tail -n 100 "$check_dir/distcheck.out"
                echo "distcheck failed; full output in $check_dir/distcheck.out"
                return 1
        fi
        grep -E '^# (TOTAL|PASS|SKIP|FAIL|ERROR):|archives ready for distribution|^chvm-agent-.*\.tar' \
                "$check_dir/distcheck.out"
}

# Counts from the summary automake writes at the top of test-suite.log.
count() {
        local n
        n=$(sed -n "s/^# $1: *\([0-9][0-9]*\) *\$/\1/p" "$check_dir/test-suite.log" 2>/dev/null | head -n 1)
        echo "${n:-0}"
}

finish() {
        local passed=$(($(count PASS) + $(count XFAIL)))
        local failed=$(($(count FAIL) + $(count ERROR) + $(count XPASS)))
        local skipped=$(count SKIP)
        local rc=0

        echo
        [ "$failed" -eq 0 ] || rc=1
        if [ $((passed + failed + skipped)) -eq 0 ]; then
                echo "no test ran"
                rc=1
        fi
        if [ ${#failed_steps[@]} -gt 0 ]; then
                echo "failed steps: ${failed_steps[*]}"
                rc=1
        fi
        echo "tests: $passed passed, $failed failed, $skipped skipped"
        exit $rc
}

rm -f "$check_dir/test-suite.log"
# The QEMU test guest (two Debian packages, ~42 MB) is built once here and shared by make check and
# make distcheck.
export CHVM_GUEST_DIR="${CHVM_GUEST_DIR:-$top/build/guest}"
# The stock Debian 12 guest (mmdebstrap of Debian's packages, ~150 MB downloaded, about a minute) likewise.
export CHVM_STOCK_DIR="${CHVM_STOCK_DIR:-$top/build/stock}"

run install-deps tools/install-deps.sh || finish
run autoreconf autoreconf -fi || finish
run configure configure_in "$check_dir" --enable-sanitizers --enable-werror || finish
run build make -C "$check_dir" -j"$jobs" || finish
run format-check make -C "$check_dir" format-check
if ! run check make -C "$check_dir" -j"$jobs" check; then
        show_test_logs
        finish
fi

if [ "$fuzz_seconds" -gt 0 ]; then
        run fuzz-configure configure_in "$fuzz_dir" CC=clang --enable-fuzzing --enable-werror &&
                run fuzz-build make -C "$fuzz_dir" -j"$jobs" &&
                run fuzz-run make -C "$fuzz_dir" fuzz-run FUZZ_SECONDS="$fuzz_seconds"
else
        printf '\n==> fuzzing skipped (FUZZ_SECONDS=0)\n'
fi

run distcheck distcheck

finish
