#!/usr/bin/env bash
# Verifies the systemd units as make built them: `systemd-analyze verify` on chvm-agentd.service and
# chvm-agentd.socket must succeed and print nothing. The service's ExecStart (@sbindir@/chvm-agentd,
# not installed yet) is pointed at this build's chvm-agentd in a copy, and MANPATH at this build's man
# pages, so that verify's checks of the binary and of Documentation= look at what this tree made. The
# sysusers.d snippet goes through `systemd-sysusers --dry-run` on an empty root.
#
# Then `systemd-analyze security --offline=yes` rates the service; its exposure is printed, and above
# CHVM_MAX_EXPOSURE (default 4.0) the test fails, so hardening cannot erode unnoticed.
#
# Exit status (automake): 0 pass, 77 skip (systemd-analyze missing), 1 fail.
set -uo pipefail

prog=test-units.sh
srcdir=${CHVM_SRCDIR:-..}
builddir=${CHVM_BUILDDIR:-.}
sbindir=${CHVM_SBINDIR:-}
max_exposure=${CHVM_MAX_EXPOSURE:-4.0}
failed=0

skip() {
        echo "SKIP: $prog: $*"
        exit 77
}
fail() {
        echo "FAIL: $*"
        failed=1
}

command -v systemd-analyze >/dev/null 2>&1 || skip "systemd-analyze not found (Debian package systemd)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

service=$builddir/units/chvm-agentd.service
[ -f "$service" ] || { echo "FAIL: $service was not built"; exit 1; }
exec_start=$(sed -n 's/^ExecStart=//p' "$service")
if [ -n "$sbindir" ] && [ "$exec_start" != "$sbindir/chvm-agentd" ]; then
        fail "ExecStart is \"$exec_start\", expected \"$sbindir/chvm-agentd\""
fi
sed "s|^ExecStart=.*/chvm-agentd|ExecStart=$builddir/chvm-agentd|" "$service" >"$tmp/chvm-agentd.service"
cp "$srcdir/units/chvm-agentd.socket" "$tmp/"
grep -q "^ExecStart=$builddir/chvm-agentd\$" "$tmp/chvm-agentd.service" || fail "cannot point ExecStart at the build"

for s in 1 5 7 8; do
        mkdir -p "$tmp/man/man$s"
        for p in "$builddir"/man/*."$s"; do
                [ -f "$p" ] && ln -s "$(cd "$(dirname "$p")" && pwd)/$(basename "$p")" "$tmp/man/man$s/"
        done
done

# --- verify -----------------------------------------------------------------------------------------------
out=$(cd "$tmp" && MANPATH=$tmp/man systemd-analyze verify ./chvm-agentd.service ./chvm-agentd.socket 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
        fail "systemd-analyze verify (exit $rc):"
        printf '%s\n' "$out"
else
        echo "ok: systemd-analyze verify chvm-agentd.service chvm-agentd.socket: clean (man pages found too)"
fi

# --- sysusers.d -------------------------------------------------------------------------------------------
mkdir -p "$tmp/root"
if out=$(systemd-sysusers --root="$tmp/root" --dry-run "$srcdir/units/sysusers.d/chvm-agent.conf" 2>&1) &&
        grep -q "group 'chvm'" <<<"$out"; then
        echo "ok: sysusers.d/chvm-agent.conf: $(grep "group 'chvm'" <<<"$out")"
else
        fail "systemd-sysusers --dry-run sysusers.d/chvm-agent.conf: $out"
fi

# --- security ---------------------------------------------------------------------------------------------
if out=$(cd "$tmp" && systemd-analyze security --offline=yes --no-pager ./chvm-agentd.service 2>&1); then
        printf '%s\n' "$out" | grep -E '^✗' || true
        line=$(grep 'Overall exposure level' <<<"$out")
        echo "$line"
        score=$(sed -n 's/.*: \([0-9][0-9.]*\) .*/\1/p' <<<"$line")
        if [ -z "$score" ]; then
                fail "no exposure score in the output of systemd-analyze security"
        elif awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s > m) }'; then
                fail "exposure $score is above $max_exposure"
        fi
else
        echo "note: systemd-analyze security --offline=yes cannot run here: $out"
fi

exit $failed
