#!/usr/bin/env bash
# `make install DESTDIR=<tmp>` from this build tree, then the installed file list must be exactly the
# expected one: the programs, the backend modules, the systemd units and the sysusers.d snippet, the
# example config (and no agent.conf), the four man pages and the bash completion, each where configure
# put its folder. Then `make uninstall DESTDIR=<tmp>` must remove every file again.
#
# It runs make recursively from inside `make check` (and so inside `make distcheck`): the folders and
# make's name come from the Makefile through the test environment. MAKEFLAGS is dropped, so the inner make
# neither tries the outer one's jobserver nor inherits its -j; it only copies files that `all` built.
#
# Exit status (automake): 0 pass, 1 fail.
set -uo pipefail

builddir=${CHVM_BUILDDIR:-.}
make=${CHVM_MAKE:-make}
failed=0

fail() {
        echo "FAIL: $*"
        failed=1
}
for v in CHVM_BINDIR CHVM_SBINDIR CHVM_PKGLIBDIR CHVM_SYSCONFDIR CHVM_MANDIR CHVM_SYSTEMDSYSTEMUNITDIR \
        CHVM_SYSUSERSDIR CHVM_BASHCOMPLETIONDIR; do
        [ -n "${!v:-}" ] || { echo "FAIL: $v is not set (run this test through make check)"; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest

unset MAKEFLAGS MFLAGS MAKELEVEL
if ! $make -C "$builddir" install DESTDIR="$dest" >"$tmp/install.log" 2>&1; then
        cat "$tmp/install.log"
        echo "FAIL: make install DESTDIR=$dest failed"
        exit 1
fi

expected=(
        "$CHVM_BINDIR/chvmctl"
        "$CHVM_SBINDIR/chvm-agentd"
        "$CHVM_PKGLIBDIR/backends/local.so"
        "$CHVM_PKGLIBDIR/backends/bridge.so"
        "$CHVM_PKGLIBDIR/backends/mosnet.so"
        "$CHVM_SYSCONFDIR/chvm/agent.conf.example"
        "$CHVM_MANDIR/man1/chvmctl.1"
        "$CHVM_MANDIR/man5/chvm-agent.conf.5"
        "$CHVM_MANDIR/man7/chvm-backends.7"
        "$CHVM_MANDIR/man8/chvm-agentd.8"
)
# configure --without-X leaves X out.
[ "$CHVM_SYSTEMDSYSTEMUNITDIR" = no ] ||
        expected+=("$CHVM_SYSTEMDSYSTEMUNITDIR/chvm-agentd.service" "$CHVM_SYSTEMDSYSTEMUNITDIR/chvm-agentd.socket")
[ "$CHVM_SYSUSERSDIR" = no ] || expected+=("$CHVM_SYSUSERSDIR/chvm-agent.conf")
[ "$CHVM_BASHCOMPLETIONDIR" = no ] || expected+=("$CHVM_BASHCOMPLETIONDIR/chvmctl")

printf '%s\n' "${expected[@]}" | sort >"$tmp/expected"
(cd "$dest" && find . -type f -o -type l) | sed 's|^\.||' | sort >"$tmp/installed"
echo "installed:"
sed 's/^/  /' "$tmp/installed"
if ! diff -u "$tmp/expected" "$tmp/installed" >"$tmp/diff"; then
        fail "the installed files differ from the expected list (- missing, + unexpected):"
        cat "$tmp/diff"
fi

# What the files must be like.
for f in "$CHVM_BINDIR/chvmctl" "$CHVM_SBINDIR/chvm-agentd"; do
        [ -x "$dest$f" ] || fail "$f is not executable"
done
for m in local bridge mosnet; do
        f=$CHVM_PKGLIBDIR/backends/$m.so
        # The agent refuses a module that its group or others may write.
        if [ -e "$dest$f" ] && [ -n "$(find "$dest$f" -perm /022)" ]; then
                fail "$f is writable by its group or others (the agent would refuse it)"
        fi
done
if [ "$CHVM_SYSTEMDSYSTEMUNITDIR" != no ]; then
        exec_start=$(sed -n 's/^ExecStart=//p' "$dest$CHVM_SYSTEMDSYSTEMUNITDIR/chvm-agentd.service" 2>/dev/null)
        [ "$exec_start" = "$CHVM_SBINDIR/chvm-agentd" ] ||
                fail "the installed unit's ExecStart is \"$exec_start\", not \"$CHVM_SBINDIR/chvm-agentd\""
fi
if grep -l '@[A-Za-z_]*@' $(sed "s|^|$dest|" "$tmp/expected" | grep -v -e '\.so$' -e '/chvmctl$' -e '/chvm-agentd$') \
        2>/dev/null; then
        fail "placeholders left unreplaced in the files above"
fi
[ ! -e "$dest$CHVM_SYSCONFDIR/chvm/agent.conf" ] || fail "make install wrote agent.conf (the admin's file)"

# --- uninstall --------------------------------------------------------------------------------------------
if ! $make -C "$builddir" uninstall DESTDIR="$dest" >"$tmp/uninstall.log" 2>&1; then
        cat "$tmp/uninstall.log"
        fail "make uninstall DESTDIR=$dest failed"
fi
left=$(cd "$dest" && find . -type f -o -type l)
[ -z "$left" ] || fail "make uninstall left files behind: $left"

[ $failed -eq 0 ] && echo "ok: make install and uninstall with DESTDIR: ${#expected[@]} files, as expected"
exit $failed
