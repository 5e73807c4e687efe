#!/usr/bin/env bash
# The layers of the tree, checked on every #include "DIR/..." of its C sources and headers:
#   util/      includes only util/            (shared types and helpers)
#   state/     includes only state/ and util/ (journal, live set, VM definitions)
#   vmm/       includes only vmm/ and util/   (hypervisor kinds, processes)
#   backends/  includes only backends/ and util/ (never the agent or its state: the ABI is backend.h)
#   agent/     includes anything but backends/ code other than the ABI (backends/backend.h): the agent
#              talks to backends through their vtable, never to their netlink or nftables code
# tests/, fuzz/ and bench/ may include anything. A line with "layering: allowed" is an exception the
# reader can see, with its reason (one today: agent.c makes the one link dump all backends read).
# And the daemon and chvmctl, as built, neither link libnftnl nor carry nftables code (nft_* functions), and
# only agent/dispatcher.c calls journal_append/journal_sync (one writer of ownership records), and
# the daemon's code names no backend: no string literal that is a backend module's name (backends/*/ and
# the names their vtables give) in agent/ outside chvmctl's help (agent/ctl-*.c, agent/chvmctl.c).
# Prints every violation as FILE:LINE: the include.
#
# Exit status (automake): 0 pass, 1 fail.
set -uo pipefail

srcdir=${CHVM_SRCDIR:-..}
builddir=$(cd "${CHVM_BUILDDIR:-.}" && pwd)
cd "$srcdir" || exit 1

allowed() { # DIR INCLUDED-DIR [INCLUDED-PATH]
        case "$1" in
        util) [[ $2 == util ]] ;;
        state) [[ $2 == state || $2 == util ]] ;;
        vmm) [[ $2 == vmm || $2 == util ]] ;;
        backends) [[ $2 == backends || $2 == util ]] ;;
        agent) [[ $2 != backends || $3 == backends/backend.h ]] ;;
        *) true ;;
        esac
}

n_files=0 n_includes=0 violations=0
for dir in util state vmm backends agent; do
        while IFS= read -r file; do
                n_files=$((n_files + 1))
                lineno=0
                while IFS= read -r line; do
                        lineno=$((lineno + 1))
                        [[ $line =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"(([a-z_]+)/[^\"]*)\" ]] || continue
                        n_includes=$((n_includes + 1))
                        path=${BASH_REMATCH[1]} top=${BASH_REMATCH[2]}
                        [[ $line == *"layering: allowed"* ]] && continue
                        if ! allowed "$dir" "$top" "$path"; then
                                echo "FAIL: $file:$lineno: $dir/ must not include \"$path\""
                                violations=$((violations + 1))
                        fi
                done <"$file"
        done < <(find "$dir" -name '*.[ch]' | sort)
done

for prog in "$builddir/chvm-agentd" "$builddir/chvmctl"; do
        if [[ ! -x $prog ]]; then
                echo "FAIL: $prog is not built"
                violations=$((violations + 1))
                continue
        fi
        if readelf -d "$prog" | grep -q 'NEEDED.*libnftnl'; then
                echo "FAIL: $prog links libnftnl"
                violations=$((violations + 1))
        fi
        nft=$(nm "$prog" | grep -cE ' [TtW] (nft_|nftnl_)')
        if ((nft > 0)); then
                echo "FAIL: $prog carries $nft nftables functions: $(nm "$prog" | grep -E ' [TtW] (nft_|nftnl_)' | head -3 | awk '{print $3}' | tr '\n' ' ')"
                violations=$((violations + 1))
        fi
done

backend_names=$(grep -h -A4 'const BackendVTable chvm_backend = {' backends/*/*.c |
        sed -nE 's/^ *\.name = "([a-z0-9_-]+)",.*/\1/p' | sort -u)
if [[ $(wc -w <<<"$backend_names") -lt 4 ]]; then
        echo "FAIL: found only these backend names in backends/*/*.c: $backend_names"
        violations=$((violations + 1))
fi
for name in $backend_names; do
        while IFS= read -r hit; do
                echo "FAIL: $hit: the daemon names the backend \"$name\""
                violations=$((violations + 1))
        done < <(find agent -name '*.c' ! -name 'ctl-*.c' ! -name chvmctl.c | sort |
                xargs grep -nH "\"$name\"" | grep -v '^[^:]*:[0-9]*: *\(/\*\|\*\)')
done

# One writer of ownership records: the dispatcher (issue 12, point 1). Everyone else asks it.
while IFS= read -r hit; do
        echo "FAIL: $hit: only agent/dispatcher.c writes the ownership journal"
        violations=$((violations + 1))
done < <(grep -rnE '\<journal_(append|append_sync|sync)\(' agent backends vmm util | grep -v '^agent/dispatcher\.c:' |
        grep -v '^[^:]*:[0-9]*: *\(/\*\|\*\)')

# Every string table (util/string-table.h) is in the one test over all of them.
for t in $(grep -rhoE 'DEFINE_STRING_TABLE(_TO)?\([a-z0-9_]+,' agent backends state vmm util --include='*.c' |
        sed -E 's/.*\(([a-z0-9_]+),/\1/' | sort -u); do
        if ! grep -q "TABLE($t," tests/test-string-tables.c; then
                echo "FAIL: the string table $t is not in tests/test-string-tables.c"
                violations=$((violations + 1))
        fi
done

# A check that read nothing proves nothing.
if ((n_files < 20 || n_includes < 100)); then
        echo "FAIL: read only $n_files files and $n_includes includes under $srcdir"
        exit 1
fi
echo "$n_files files, $n_includes includes, $violations layering violations"
((violations == 0))
