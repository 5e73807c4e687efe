#!/bin/bash
# The one test command (README quick start, and what CI runs): installs the dependencies, builds with
# ASan+UBSan and -Werror, runs `make check`, fuzzes each harness for FUZZ_SECONDS (default 60) with clang,
# and runs `make distcheck`. Ends with one line: "tests: N passed, N failed, N skipped".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=$(nproc 2>/dev/null || echo 2)
fuzz_seconds=${FUZZ_SECONDS:-60}

step() { printf '\n==> %s\n' "$*"; }

step "installing build and test dependencies"
tools/install-deps.sh

step "autoreconf"
autoreconf -fi

step "configure + build with sanitizers (build/check)"
mkdir -p build/check
(cd build/check && ../../configure --enable-sanitizers --enable-werror >configure.out 2>&1) || {
        cat build/check/configure.out; exit 1; }
make -C build/check -j"$jobs"

step "make check"
check_rc=0
make -C build/check -j"$jobs" check || check_rc=$?

summary() {
        # automake's summary: "# PASS:  N" etc. in test-suite.log
        local key=$1
        sed -n "s/^# $key: *\([0-9][0-9]*\).*/\1/p" build/check/test-suite.log | head -n 1
}
pass=$(summary PASS); xfail=$(summary XFAIL); skip=$(summary SKIP)
fail=$(summary FAIL); error=$(summary ERROR); xpass=$(summary XPASS)
passed=$(( ${pass:-0} + ${xfail:-0} ))
failed=$(( ${fail:-0} + ${error:-0} + ${xpass:-0} ))
skipped=${skip:-0}

if [ "$check_rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
        step "make check failed: logs of the failing tests"
        for trs in $(grep -l ':test-result: \(FAIL\|ERROR\|XPASS\)' build/check/tests/*.trs 2>/dev/null); do
                echo "---- ${trs%.trs}.log"
                cat "${trs%.trs}.log"
        done
        echo "tests: $passed passed, $(( failed > 0 ? failed : 1 )) failed, $skipped skipped"
        exit 1
fi

fuzz_rc=0
if [ "$fuzz_seconds" -gt 0 ]; then
        step "fuzzing with clang + libFuzzer, ${fuzz_seconds}s per harness (build/fuzz)"
        mkdir -p build/fuzz
        (cd build/fuzz && ../../configure CC=clang --enable-fuzzing --enable-werror >configure.out 2>&1) || {
                cat build/fuzz/configure.out; exit 1; }
        make -C build/fuzz -j"$jobs" fuzz-run FUZZ_SECONDS="$fuzz_seconds" || fuzz_rc=$?
fi

step "make distcheck"
distcheck_rc=0
make -C build/check distcheck DISTCHECK_CONFIGURE_FLAGS="--enable-werror" FUZZ_SECONDS=0 >build/distcheck.out 2>&1 || distcheck_rc=$?
if [ "$distcheck_rc" -ne 0 ]; then
        tail -n 80 build/distcheck.out
        echo "distcheck: FAILED (full output in build/distcheck.out)"
else
        grep -E '^# (TOTAL|PASS|FAIL|ERROR|SKIP):' build/distcheck.out | sed 's/^/distcheck /' || true
        echo "distcheck: ok"
fi

[ "$fuzz_rc" -eq 0 ] || failed=$((failed + 1))
[ "$distcheck_rc" -eq 0 ] || failed=$((failed + 1))
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
