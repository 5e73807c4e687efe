#!/usr/bin/env bash
# The bash completion (contrib/chvmctl.bash-completion) against a stand-in chvmctl that answers
# `list -a -q` and `list -q` with fixed names and records its arguments: commands, options, option values
# and VM names are completed, --socket is passed on, and every command and option that the real chvmctl's
# --help lists is offered (so the completion cannot fall behind the program).
#
# Exit status (automake): 0 pass, 1 fail.
set -uo pipefail

srcdir=${CHVM_SRCDIR:-..}
builddir=${CHVM_BUILDDIR:-.}
failed=0

fail() {
        echo "FAIL: $*"
        failed=1
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/chvmctl" <<EOF
#!/usr/bin/env bash
echo "\$*" >>"$tmp/calls"
case "\$*" in
*"list -a -q") printf 'web\ndb\nold\n' ;;
*"list -q") printf 'web\n' ;;
esac
EOF
chmod +x "$tmp/chvmctl"

# shellcheck source=/dev/null
source "$srcdir/contrib/chvmctl.bash-completion"

# complete WORD... : the words of the command line, the last one being completed; prints COMPREPLY sorted.
complete_words() {
        COMP_WORDS=("$tmp/chvmctl" "$@")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMPREPLY=()
        _chvmctl
        printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' ' | sed 's/ $//'
}

expect() {
        local want=$1
        shift
        local got
        got=$(complete_words "$@")
        if [ "$got" = "$want" ]; then
                echo "ok: chvmctl $* -> $got"
        else
                fail "chvmctl $*: got \"$got\", want \"$want\""
        fi
}

expect "create doctor inspect kill list rm run start status stop" ""
expect "start status stop" st
expect "--help --json --socket --version" --
expect "db old web" rm ""
expect "web" stop ""
expect "web" kill ""
expect "db old web" --socket /tmp/x.sock inspect ""
grep -q -- "--socket /tmp/x.sock list -a -q" "$tmp/calls" || fail "--socket was not passed to chvmctl list"
expect "bridge local mosnet" run vm1 --backend ""
expect "cloud-hypervisor qemu" create vm1 --hypervisor ""
expect "--all" list --a
expect "--timeout" stop --t
expect "--dry-run" doctor --gc --d

# Everything the real chvmctl offers.
help=$("$builddir/chvmctl" --help)
offered=" $(complete_words "") "
for c in $(sed -n '/^Commands:/,/^$/p' <<<"$help" | awk 'NR > 1 && NF { print $1 }'); do
        [[ $offered == *" $c "* ]] || fail "the completion does not offer the command $c"
        opts=" $(complete_words "$c" -) "
        for o in $("$builddir/chvmctl" "$c" --help | grep -E '^ +-' | grep -oE '(^|[ ,])--?[a-zA-Z][a-zA-Z-]*' |
                sed 's/^[ ,]*//' | sort -u); do
                [ "$o" = -h ] && continue # --help is offered; -h is not worth a completion
                [[ $opts == *" $o "* ]] || fail "the completion does not offer $o for chvmctl $c"
        done
done

exit $failed
