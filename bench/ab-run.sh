#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# `chvmctl run` of two or more builds against each other, interleaved one by one, so that the drift of a
# shared host's speed falls on every build alike (bench/vmm compares us with the peer the same way):
#
#     bench/ab-run.sh [-n ROUNDS] BUILD_DIR BUILD_DIR...
#
# Each BUILD_DIR is a configured and built tree (chvm-agentd, chvmctl, backends/, tests/fake-vmm). Each
# build's agent runs in a network namespace of its own, with the `local` backend and fake-vmm as
# cloud-hypervisor; its chvmctl reaches it through the control socket's path. Every round runs one VM per
# build (one forward each), the order rotating; at the end the p25/p50/p75 per build. Everything goes at
# the end: the VMs (`chvmctl rm -f`), each agent by its PID, the namespaces, the folders. Needs root.
set -euo pipefail

rounds=80
if [[ ${1-} == -n ]]; then
        rounds=$2
        shift 2
fi
if (($# < 2)); then
        echo "usage: $0 [-n ROUNDS] BUILD_DIR BUILD_DIR..." >&2
        exit 2
fi
if ((rounds < 1 || rounds > 250)); then
        echo "$0: -n takes 1 to 250 (one VM per round in a /24)" >&2
        exit 2
fi
if ((EUID != 0)); then
        echo "SKIP: $0 needs root (network namespaces)"
        exit 0
fi
for b in "$@"; do
        for f in chvm-agentd chvmctl tests/fake-vmm backends/local.so; do
                [[ -e $b/$f ]] || {
                        echo "$0: $b/$f is not built" >&2
                        exit 1
                }
        done
done

top=$(mktemp -d "${TMPDIR:-/tmp}/chvm-ab-XXXXXX")
builds=("$@")
pids=()
netns=()
cleanup() {
        for i in "${!builds[@]}"; do
                local sock=$top/$i/run/agent.sock
                if [[ -S $sock ]]; then
                        for vm in $("${builds[$i]}/chvmctl" --socket "$sock" list -a -q 2>/dev/null); do
                                "${builds[$i]}/chvmctl" --socket "$sock" rm -f "$vm" >/dev/null 2>&1 || true
                        done
                fi
        done
        for p in "${pids[@]}"; do
                kill "$p" 2>/dev/null || true
                wait "$p" 2>/dev/null || true
        done
        for n in "${netns[@]}"; do
                ip netns del "$n" 2>/dev/null || true
        done
        rm -rf "$top"
}
trap cleanup EXIT

for i in "${!builds[@]}"; do
        b=$(cd "${builds[$i]}" && pwd)
        builds[i]=$b
        d=$top/$i
        mkdir -p "$d/state" "$d/run"
        echo "fake-vmm only checks that the kernel is a readable file" >"$d/vmlinuz"
        cat >"$d/agent.conf" <<EOF
[agent]
state_dir = $d/state
runtime_dir = $d/run
backend_dir = $b/backends
backends = local
[vmm]
hypervisor = cloud-hypervisor
binary = $b/tests/fake-vmm
stop_timeout = 2
EOF
        n=chvm-ab-$$-$i
        ip netns add "$n"
        netns+=("$n")
        ip netns exec "$n" ip link set lo up
        # ip netns exec execs the agent: the PID is the agent's
        ip netns exec "$n" "$b/chvm-agentd" --config "$d/agent.conf" --log-target stderr >"$d/agent.log" 2>&1 &
        pids+=($!)
done
for i in "${!builds[@]}"; do
        for _ in $(seq 100); do
                [[ -S $top/$i/run/agent.sock ]] && break
                sleep 0.05
        done
        "${builds[$i]}/chvmctl" --socket "$top/$i/run/agent.sock" status >/dev/null
done

python3 - "$top" "$rounds" "${builds[@]}" <<'EOF'
import subprocess, sys, time
top, rounds, builds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
times = [[] for _ in builds]
for r in range(rounds):
    order = list(range(len(builds)))
    order = order[r % len(order):] + order[:r % len(order)]
    for i in order:
        argv = [builds[i] + "/chvmctl", "--socket", f"{top}/{i}/run/agent.sock", "run", "--kernel",
                f"{top}/{i}/vmlinuz", "-p", f"{20000 + r}:80", f"ab-{r}"]
        t = time.perf_counter()
        p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times[i].append(time.perf_counter() - t)
        if p.returncode:
            sys.exit(f"{builds[i]}: chvmctl run ab-{r}: {p.stderr.decode().strip()}")
print(f"`chvmctl run`, {rounds} rounds interleaved (ms):")
for i, b in enumerate(builds):
    v = sorted(times[i])
    q = lambda f: v[min(len(v) - 1, int(f * len(v)))] * 1e3
    print(f"  {b:48s} p25 {q(0.25):6.2f}  p50 {q(0.5):6.2f}  p75 {q(0.75):6.2f}")
EOF
