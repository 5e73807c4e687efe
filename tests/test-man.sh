#!/usr/bin/env bash
# Lints the man pages as make built them (man/*.[1578] in the build tree) with `mandoc -Tlint`, and renders
# each with groff's warnings on as a second opinion.
#
# Fails on any mandoc message of level WARNING, ERROR or UNSUPP, and on STYLE messages except two that say
# nothing about the page as a reader sees it: "input text line longer than 80 bytes" (source line length)
# and "referenced manual not found" for pages of other projects (whether the machine running the test
# has nftables' or systemd's pages installed; references to our own pages must resolve: the test makes a
# MANPATH of its own with them, indexed by makewhatis). Any groff warning fails too, except "can't break
# line" (-Wbreak): a long installation prefix, as make distcheck's, makes the paths in the pages words
# too long for a line, which is layout, not markup.
#
# Exit status (automake): 0 pass, 77 skip (mandoc missing: Debian package mandoc), 1 fail.
set -uo pipefail

prog=test-man.sh
builddir=${CHVM_BUILDDIR:-.}
pages=(man/chvmctl.1 man/chvm-agent.conf.5 man/chvm-backends.7 man/chvm-agentd.8)

skip() {
        echo "SKIP: $prog: $*"
        exit 77
}

if ! command -v mandoc >/dev/null 2>&1; then
        skip "mandoc not found (install the Debian package mandoc; tools/install-deps.sh does)"
fi

# mandoc checks every .Xr against the pages in MANPATH: give it ours, so that our cross-references must
# resolve, and only references to other projects' pages depend on the machine.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for page in "${pages[@]}"; do
        s=${page##*.}
        mkdir -p "$tmp/man/man$s"
        [ -f "$builddir/$page" ] && cp "$builddir/$page" "$tmp/man/man$s/"
done
makewhatis "$tmp/man" || { echo "FAIL: makewhatis $tmp/man failed"; exit 1; }
export MANPATH=$tmp/man

failed=0
for page in "${pages[@]}"; do
        path=$builddir/$page
        if [ ! -f "$path" ]; then
                echo "FAIL: $page was not built"
                failed=1
                continue
        fi
        if grep -n '@[A-Za-z_]*@' "$path"; then
                echo "FAIL: $page: placeholders left unreplaced (above)"
                failed=1
        fi

        # -Tlint writes its messages to standard output; anything on standard error is a failure too.
        out=$(mandoc -Tlint -Wstyle "$path" 2>"$tmp/stderr"; cat "$tmp/stderr")
        bad=$(printf '%s\n' "$out" | grep -v -e '^$' \
                -e ': STYLE: input text line longer than 80 bytes' \
                -e ': STYLE: referenced manual not found: Xr [^c]' \
                -e ': STYLE: referenced manual not found: Xr c[^h]' \
                || true)
        if [ -n "$bad" ]; then
                echo "FAIL: $page: mandoc -Tlint:"
                printf '%s\n' "$bad"
                failed=1
        else
                echo "ok: $page: mandoc -Tlint clean ($(printf '%s\n' "$out" | grep -c ': STYLE: ') ignored style notes)"
        fi

        if command -v groff >/dev/null 2>&1; then
                gout=$(groff -mandoc -ww -Wbreak -z "$path" 2>&1)
                if [ -n "$gout" ]; then
                        echo "FAIL: $page: groff -mandoc -ww -Wbreak:"
                        printf '%s\n' "$gout"
                        failed=1
                else
                        echo "ok: $page: groff -mandoc -ww -Wbreak clean"
                fi
        else
                echo "note: groff not found, second check skipped"
        fi
done

exit $failed
