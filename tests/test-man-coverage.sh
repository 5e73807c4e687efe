#!/usr/bin/env bash
# Keeps the documentation from drifting away from the code:
#   - every command `chvmctl --help` lists is an item (".It Cm NAME") of chvmctl(1);
#   - every option in `chvmctl --help` and in `chvmctl COMMAND --help` is in chvmctl(1) (".Fl"), and every
#     option of `chvm-agentd --help` in chvm-agentd(8);
#   - every exit code `chvmctl --help` names is an item of chvmctl(1)'s EXIT STATUS;
#   - every config key agent/config.c ([agent], [vmm]) and each backend's configure hook accepts is an item
#     (".It Cm KEY") in its section of chvm-agent.conf(5), and a commented "#KEY = " line in its section of
#     etc/agent.conf.example;
#   - the example with every key uncommented passes `chvm-agentd --check-config` (which gives each backend
#     its section).
# Keys are read from the parsers themselves (the strcmp(section, ...) and strcmp(name, ...) of the agent's
# handler; the strcmp(key, ...) of a backend's parser, whose section is its folder's name): that is what is
# accepted.
#
# Exit status (automake): 0 pass, 1 fail.
set -uo pipefail

srcdir=${CHVM_SRCDIR:-..}
builddir=${CHVM_BUILDDIR:-.}
ctl=$builddir/chvmctl
agentd=$builddir/chvm-agentd
failed=0

fail() {
        echo "FAIL: $*"
        failed=1
}

# The lines of a man page with mdoc's zero-width \& and the \- of options taken out.
page() {
        sed -e 's/\\&//g' -e 's/\\-/-/g' "$builddir/man/$1"
}

# Options in --help text: "  -p, --publish ...", "  --json ..." and "  -c, --config PATH ...".
help_options() {
        grep -E '^ +-' | grep -oE '(^|[ ,])--?[a-zA-Z][a-zA-Z-]*' | sed 's/^[ ,]*//' | sort -u
}

# Does the page have ".Fl OPT" (alone or among other macros)? mdoc writes --json as "Fl -json".
has_flag() {
        local opt=${2#-}
        grep -qE "(^\.|[ ])Fl ${opt}( |$)" <<<"$1"
}

# --- chvmctl ----------------------------------------------------------------------------------------------
ctl_page=$(page chvmctl.1)
help=$("$ctl" --help)
commands=$(sed -n '/^Commands:/,/^$/p' <<<"$help" | awk 'NR > 1 && NF { print $1 }')
[ -n "$commands" ] || fail "no commands found in chvmctl --help"
for c in $commands; do
        grep -qE "^\.It Cm $c( |$)" <<<"$ctl_page" || fail "chvmctl(1) has no item for the command $c"
        for o in $("$ctl" "$c" --help | help_options); do
                has_flag "$ctl_page" "$o" || fail "chvmctl(1) does not mention $o of chvmctl $c"
        done
done
for o in $(help_options <<<"$help"); do
        has_flag "$ctl_page" "$o" || fail "chvmctl(1) does not mention the global option $o"
done
codes=$(grep -oE '[0-9]+ [a-z]' <<<"$(grep '^Exit codes:' <<<"$help")" | awk '{ print $1 }')
[ -n "$codes" ] || fail "no exit codes found in chvmctl --help"
exit_status=$(sed -n '/^\.Sh EXIT STATUS/,/^\.Sh /p' <<<"$ctl_page")
for n in $codes; do
        grep -qx "\.It $n" <<<"$exit_status" || fail "chvmctl(1) EXIT STATUS has no item for exit code $n"
done
echo "chvmctl: commands $(echo $commands) checked against chvmctl(1)"

# --- chvm-agentd ------------------------------------------------------------------------------------------
agentd_page=$(page chvm-agentd.8)
for o in $("$agentd" --help | help_options); do
        has_flag "$agentd_page" "$o" || fail "chvm-agentd(8) does not mention $o"
done
echo "chvm-agentd: options checked against chvm-agentd(8)"

# --- config keys ------------------------------------------------------------------------------------------
keys=$(awk '
        match($0, /strcmp\(section, "[a-z]+"\) == 0/) {
                s = substr($0, RSTART + 17); sub(/".*/, "", s); section = s
        }
        section != "" && match($0, /strcmp\(name, "[a-z_]+"\) == 0/) {
                k = substr($0, RSTART + 14); sub(/".*/, "", k); print section "." k
        }' "$srcdir/agent/config.c" | sort -u)
[ "$(wc -l <<<"$keys")" -ge 15 ] || fail "found only $(wc -l <<<"$keys") keys in agent/config.c: $keys"
n_agent=$(wc -l <<<"$keys")
for parser in "$srcdir"/backends/local/local-config.c "$srcdir"/backends/bridge/bridge.c; do
        section=$(basename "$(dirname "$parser")")
        found=$(grep -oE 'strcmp\(key, "[a-z_]+"\) == 0' "$parser" | sed -E 's/.*"([a-z_]+)".*/\1/' | sort -u)
        [ -n "$found" ] || fail "found no keys in $parser"
        keys+=$'\n'$(sed "s/^/$section./" <<<"$found")
done
[ "$(wc -l <<<"$keys")" -ge $((n_agent + 15)) ] || fail "found only $(($(wc -l <<<"$keys") - n_agent)) backend keys"
conf_page=$(page chvm-agent.conf.5)
example=$builddir/etc/agent.conf.example
for sk in $keys; do
        section=${sk%%.*} key=${sk#*.}
        # The page's ".Ss [section]" up to the next .Ss or .Sh.
        block=$(awk -v s="[$section]" '
                /^\.S[sh] / { on = ($1 == ".Ss" && $2 == s) ; next }
                on' <<<"$conf_page")
        grep -qE "^\.It Cm $key( |$)" <<<"$block" ||
                fail "chvm-agent.conf(5) has no item for [$section] $key"
        awk -v s="[$section]" -v k="$key" '
                /^\[/ { on = ($1 == s); next }
                on && $0 ~ "^#" k " = " { found = 1 }
                END { exit !found }' "$example" ||
                fail "etc/agent.conf.example has no \"#$key = \" line in [$section]"
done
echo "config: $(wc -l <<<"$keys") keys checked against chvm-agent.conf(5) and agent.conf.example"

# The example, every key uncommented, parses; [vmm] binary must exist, so it points at true(1).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
true_bin=$(command -v true)
case $true_bin in /*) ;; *) true_bin=/bin/true ;; esac
# The backends are the build's (the example names the installed folder).
sed -e 's/^#\([a-z_]* = \)/\1/' -e "s|^binary = .*|binary = $true_bin|" \
        -e "s|^backend_dir = .*|backend_dir = $(cd "$builddir/backends" && pwd)|" "$example" >"$tmp/agent.conf"
if out=$("$agentd" --check-config --config "$tmp/agent.conf" 2>&1); then
        echo "example with every key set: $out"
else
        fail "the example with every key uncommented does not pass --check-config: $out"
fi

exit $failed
