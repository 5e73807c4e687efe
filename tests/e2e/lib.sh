# shellcheck shell=bash
# shellcheck disable=SC2034 # E2E_* variables are read by the scripts that source this file
# Helpers for the end-to-end scripts that run a whole agent with a real QEMU guest:
# tests/e2e/test-qemu-agent.sh (the automake test) and tools/demo.sh (the README's one-command demo).
# Sourced by bash, never run.
#
# The layout both build, every part of it in network namespaces made here (the machine's own namespace is
# never touched):
#
#   netns CLIENT                    netns HOST                                         QEMU guest (TCG)
#   vc0 10.77.0.2/24 --- veth ---   vh0 10.77.0.1/24
#                                   chvm-agentd: chvm0 192.168.200.1/24 -- tap-... --  eth0 192.168.200.N
#                                   nft table inet chvm: 10.77.0.1:PORT -> guest:80
#
# The caller sets E2E_PROG (name in messages) and E2E_BUILD (a build tree with chvm-agentd, chvmctl and
# backends/), may replace e2e_fail (default: "FAIL: PROG: ..." and exit 1), and installs
# `trap e2e_cleanup EXIT` before making anything. Every function that makes something records it in an E2E_*
# variable first, so e2e_cleanup undoes exactly that, however far a run got.

E2E_PROG=${E2E_PROG:-e2e}
E2E_BUILD=${E2E_BUILD:-$PWD}
E2E_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_SRC_DIR=$(cd "$E2E_LIB_DIR/../.." && pwd)

E2E_HOST_ADDR=10.77.0.1
E2E_CLIENT_ADDR=10.77.0.2

E2E_HOST_NS=""
E2E_CLIENT_NS=""
E2E_TMP=""
E2E_KEEP_TMP=no # yes: e2e_cleanup leaves $E2E_TMP (logs) behind and says where
E2E_AGENT_PID=""
E2E_AGENT_STATUS=""
E2E_SOCKET=""
E2E_AGENT_LOG=""
E2E_VMS=() # VMs made through e2e_ctl_run, removed by e2e_cleanup

# --- output --------------------------------------------------------------------------------------------

e2e_step() {
        printf '\n==> %s\n' "$*"
}
e2e_say() {
        printf '    %s\n' "$*"
}
e2e_fail() {
        printf 'FAIL: %s: %s\n' "$E2E_PROG" "$*"
        exit 1
}

# Prints a command the way an admin would type it (chvmctl without the build-tree path and --socket), then
# runs it with its output (stdout and stderr) indented below. Returns the command's status. Runs it in a
# subshell: for commands that change no variable.
e2e_show() {
        local shown="$*"
        shown=${shown#e2e_ctl }
        [ "$shown" = "$*" ] || shown="chvmctl $shown"
        shown=${shown//$E2E_BUILD\//}
        printf '    $ %s\n' "$shown"
        "$@" 2>&1 | sed 's/^/      /'
        return "${PIPESTATUS[0]}"
}

# Microseconds since the epoch, and milliseconds since such a time.
e2e_now_us() {
        local t=$EPOCHREALTIME
        echo $((10#${t/./}))
}
e2e_ms_since() {
        echo $((($(e2e_now_us) - $1) / 1000))
}

# e2e_poll TIMEOUT_MS INTERVAL_S CMD...: runs CMD until it succeeds (0) or TIMEOUT_MS passed (1).
e2e_poll() {
        local timeout_ms=$1 interval=$2
        shift 2
        local deadline=$(($(e2e_now_us) + timeout_ms * 1000))
        until "$@"; do
                [ "$(e2e_now_us)" -lt "$deadline" ] || return 1
                sleep "$interval"
        done
}

# --- what the host needs -------------------------------------------------------------------------------

# Prints the tools of the list that are missing (nothing when all are there).
e2e_missing_tools() {
        local t missing=()
        for t in "$@"; do
                command -v "$t" >/dev/null 2>&1 || missing+=("$t")
        done
        echo "${missing[*]}"
}
E2E_TOOLS=(ip nft qemu-system-x86_64 curl jq apt-get dpkg-deb cpio modinfo)
E2E_TOOL_PACKAGES="iproute2 nftables qemu-system-x86 curl jq cpio kmod"

# Prints why this host cannot run the scenario, or nothing when it can.
e2e_cannot_run() {
        local missing
        if [ "$(id -u)" -ne 0 ]; then
                echo "needs root (network namespaces, TAP devices, nftables)"
                return
        fi
        missing=$(e2e_missing_tools "${E2E_TOOLS[@]}")
        if [ -n "$missing" ]; then
                echo "$missing not found (packages: $E2E_TOOL_PACKAGES)"
                return
        fi
        [ -c /dev/net/tun ] || {
                echo "no /dev/net/tun (TAP devices unavailable)"
                return
        }
        ip netns list >/dev/null 2>&1 || echo "cannot use network namespaces (ip netns list failed)"
}

# e2e_build_guest DIR: builds (or finds up to date) the test guest in DIR and sources its guest.env.
# Returns build-guest.sh's status: 0 ready, 2 its packages cannot be downloaded, else another failure.
e2e_build_guest() {
        local status=0
        bash "$E2E_SRC_DIR/tests/guest/build-guest.sh" "$1" || status=$?
        [ "$status" -eq 0 ] || return "$status"
        # shellcheck source=/dev/null
        . "$1/guest.env"
}

# --- namespaces ----------------------------------------------------------------------------------------

# e2e_netns_setup HOST CLIENT: the two namespaces and the veth between them.
e2e_netns_setup() {
        E2E_HOST_NS=$1
        ip netns add "$E2E_HOST_NS" || e2e_fail "cannot make network namespace $E2E_HOST_NS"
        E2E_CLIENT_NS=$2
        ip netns add "$E2E_CLIENT_NS" || e2e_fail "cannot make network namespace $E2E_CLIENT_NS"
        ip -n "$E2E_HOST_NS" link set lo up &&
                ip -n "$E2E_CLIENT_NS" link set lo up &&
                ip -n "$E2E_HOST_NS" link add vh0 type veth peer name vc0 netns "$E2E_CLIENT_NS" &&
                ip -n "$E2E_HOST_NS" addr add "$E2E_HOST_ADDR/24" dev vh0 &&
                ip -n "$E2E_HOST_NS" link set vh0 up &&
                ip -n "$E2E_CLIENT_NS" addr add "$E2E_CLIENT_ADDR/24" dev vc0 &&
                ip -n "$E2E_CLIENT_NS" link set vc0 up ||
                e2e_fail "cannot set up the veth between $E2E_HOST_NS and $E2E_CLIENT_NS"
}

# Kills, by PID, whatever still runs in namespace NS (only what this script started can be in it: the
# agent, and the hypervisors, which outlive an agent on purpose), then removes the namespace.
e2e_netns_remove() {
        local ns=$1 pid pids what
        ip netns list 2>/dev/null | grep -q "^$ns\( \|\$\)" || return 0
        for _ in 1 2 3; do
                pids=$(ip netns pids "$ns" 2>/dev/null) || break
                [ -n "$pids" ] || break
                for pid in $pids; do
                        what=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)
                        echo "$E2E_PROG: cleanup: killing pid $pid ($what) left in $ns"
                        kill -KILL "$pid" 2>/dev/null
                done
                sleep 0.2
        done
        ip netns del "$ns"
}

# --- the agent -----------------------------------------------------------------------------------------

# e2e_tmp_make [DIR]: a private folder for the agent's state, runtime files and logs: a new one in /tmp, or
# DIR made afresh (what an earlier run left there is removed first).
e2e_tmp_make() {
        if [ $# -gt 0 ]; then
                rm -rf "$1" && mkdir -m 0700 "$1" || e2e_fail "cannot make $1"
                E2E_TMP=$1
        else
                E2E_TMP=$(mktemp -d "/tmp/chvm-$E2E_PROG.XXXXXX") || e2e_fail "mktemp failed"
        fi
        E2E_SOCKET=$E2E_TMP/run/agent.sock
        E2E_AGENT_LOG=$E2E_TMP/agent.log
}

# e2e_agent_config STOP_TIMEOUT: agent.conf with QEMU under TCG (KVM aborts on these machines) and every
# path in the private folder.
e2e_agent_config() {
        cat >"$E2E_TMP/agent.conf" <<EOF
[agent]
state_dir = $E2E_TMP/state
runtime_dir = $E2E_TMP/run
socket = $E2E_SOCKET
backend_dir = $E2E_BUILD/backends
[vmm]
hypervisor = qemu
accel = tcg
stop_timeout = ${1:-10}
EOF
}

e2e_ctl() {
        "$E2E_BUILD/chvmctl" --socket "$E2E_SOCKET" "$@"
}

e2e_agent_alive() {
        [ -n "$E2E_AGENT_PID" ] && kill -0 "$E2E_AGENT_PID" 2>/dev/null
}

# Starts chvm-agentd in the host namespace (`ip netns exec` execs it in place: $! is the agent) and waits
# until it answers on its socket. The agent gets none of the caller's descriptors above 2: it may outlive the
# caller (killed with SIGKILL, say) and must not hold on to, for example, tools/demo.sh's lock.
e2e_agent_start() {
        (
                local fd
                for fd in "/proc/$BASHPID/fd/"*; do
                        fd=${fd##*/}
                        [ "$fd" -le 2 ] || eval "exec $fd>&-" 2>/dev/null || true
                done
                unset NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID JOURNAL_STREAM LISTEN_FDS LISTEN_PID
                exec ip netns exec "$E2E_HOST_NS" "$E2E_BUILD/chvm-agentd" --config "$E2E_TMP/agent.conf" \
                        --log-target stderr
        ) >>"$E2E_AGENT_LOG" 2>&1 </dev/null &
        E2E_AGENT_PID=$!
        if ! e2e_poll 15000 0.1 e2e_agent_ready; then
                e2e_say "agent log:"
                sed 's/^/      /' "$E2E_AGENT_LOG"
                e2e_fail "chvm-agentd (pid $E2E_AGENT_PID) did not answer on $E2E_SOCKET within 15 s"
        fi
}
e2e_agent_ready() {
        e2e_agent_alive || return 0 # dead: stop polling, e2e_agent_start reports it
        e2e_ctl status >/dev/null 2>&1
}

# Stops the agent with SIGTERM (it leaves running VMs running) and sets E2E_AGENT_STATUS to its exit status.
e2e_agent_stop() {
        [ -n "$E2E_AGENT_PID" ] || return 0
        kill -TERM "$E2E_AGENT_PID" 2>/dev/null
        if ! e2e_poll 15000 0.1 e2e_agent_gone; then
                echo "$E2E_PROG: chvm-agentd (pid $E2E_AGENT_PID) still running 15 s after SIGTERM: SIGKILL"
                kill -KILL "$E2E_AGENT_PID" 2>/dev/null
        fi
        E2E_AGENT_STATUS=0
        wait "$E2E_AGENT_PID" 2>/dev/null || E2E_AGENT_STATUS=$?
        E2E_AGENT_PID=""
}
e2e_agent_gone() {
        ! kill -0 "$E2E_AGENT_PID" 2>/dev/null
}

# --- VMs and the checks on them --------------------------------------------------------------------------

# e2e_ctl_run NAME ARGS...: `chvmctl run`, remembering NAME for the cleanup.
e2e_ctl_run() {
        E2E_VMS+=("$1")
        e2e_show e2e_ctl run "$@"
}

# e2e_vm_field NAME KEY: one key of `chvmctl inspect NAME --json` ("" for null).
e2e_vm_field() {
        e2e_ctl inspect "$1" --json | jq -r --arg k "$2" '.[$k] // ""'
}

# e2e_fetch PORT MAX_TIME: the page from the client namespace through HOST:PORT (curl's status otherwise).
e2e_fetch() {
        ip netns exec "$E2E_CLIENT_NS" curl -sS --max-time "$2" "http://$E2E_HOST_ADDR:$1/"
}

# e2e_wait_serving PORT TIMEOUT_S: polls until the guest's page comes through the forward; sets E2E_PAGE.
e2e_wait_serving() {
        local deadline=$(($(e2e_now_us) + $2 * 1000000))
        E2E_PAGE=""
        until E2E_PAGE=$(e2e_fetch "$1" 0.5 2>/dev/null) && [ -n "$E2E_PAGE" ]; do
                [ "$(e2e_now_us)" -lt "$deadline" ] || return 1
                sleep 0.1
        done
}

# e2e_wait_ready NAME TIMEOUT_S: polls VM NAME's console until the guest says "chvm-guest: ready" (its web
# server and ACPI daemon are up then); fails at once when the VM stops running.
e2e_wait_ready() {
        local serial deadline=$(($(e2e_now_us) + $2 * 1000000))
        serial=$(e2e_serial_log "$1")
        until grep -q "chvm-guest: ready" "$serial" 2>/dev/null; do
                [ "$(e2e_now_us)" -lt "$deadline" ] && e2e_vm_state_is "$1" running || return 1
                sleep 0.05
        done
}

# e2e_serial_log NAME: the guest console log the agent keeps for VM NAME.
e2e_serial_log() {
        echo "$E2E_TMP/run/vms/$(e2e_vm_field "$1" id)/serial.log"
}
e2e_hypervisor_log() {
        echo "$E2E_TMP/run/vms/$(e2e_vm_field "$1" id)/hypervisor.log"
}

# e2e_pid_gone PID: the process has exited (no such process, or a zombie nobody has reaped yet: a
# hypervisor whose agent exited belongs to PID 1, which may take its time).
e2e_pid_gone() {
        local stat
        stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
        stat=${stat##*) }
        [ "${stat%% *}" = Z ] || [ "${stat%% *}" = X ]
}

e2e_tap_exists() {
        ip -n "$E2E_HOST_NS" link show dev "$1" >/dev/null 2>&1
}
e2e_tap_gone() {
        ! e2e_tap_exists "$1"
}
# e2e_forward_present PORT: the map element of host port PORT/tcp, as `nft list map` shows it.
e2e_forward_present() {
        ip netns exec "$E2E_HOST_NS" nft list map inet chvm portfwd4 2>/dev/null | grep -q "tcp \. $1 "
}
e2e_forward_gone() {
        ! e2e_forward_present "$1"
}
# e2e_vm_state_is NAME STATE
e2e_vm_state_is() {
        [ "$(e2e_vm_field "$1" state)" = "$2" ]
}

# e2e_dump: what helps to understand a failure (agent log, guest consoles, hypervisor logs).
e2e_dump() {
        local f
        [ -n "$E2E_TMP" ] || return 0
        echo "--- agent log ($E2E_AGENT_LOG) ---"
        cat "$E2E_AGENT_LOG" 2>/dev/null
        for f in "$E2E_TMP"/run/vms/*/serial.log "$E2E_TMP"/run/vms/*/hypervisor.log; do
                [ -f "$f" ] || continue
                echo "--- $f, last 30 lines ---"
                tail -n 30 "$f"
        done
}

# --- the automake tests' exit ----------------------------------------------------------------------------

# e2e_test_traps: what a test runs on exit, however it ends: unless it set E2E_RESULT=pass, the logs
# (e2e_dump) and E2E_TMP kept; then the function named in E2E_EXTRA_CLEANUP, when set, and e2e_cleanup.
E2E_RESULT=fail
E2E_EXTRA_CLEANUP=""
e2e_test_finish() {
        local rc=$?
        set +e
        if [ "$E2E_RESULT" != pass ]; then
                e2e_dump
                E2E_KEEP_TMP=yes
        fi
        [ -z "$E2E_EXTRA_CLEANUP" ] || "$E2E_EXTRA_CLEANUP"
        e2e_cleanup
        exit "$rc"
}
e2e_test_traps() {
        trap e2e_test_finish EXIT
        # bash runs the EXIT trap on a signal only when the signal itself is trapped.
        trap 'exit 129' HUP
        trap 'exit 130' INT
        trap 'exit 143' TERM
}

# --- cleanup -------------------------------------------------------------------------------------------

# Undoes whatever was made: the VMs through the agent (so it tears their network down as it would for an
# admin), the agent by its PID, anything left in the host namespace by its PID, the namespaces, the folder.
e2e_cleanup() {
        local vm
        set +e
        if e2e_agent_alive; then
                for vm in "${E2E_VMS[@]}"; do
                        e2e_ctl rm -f "$vm" >/dev/null 2>&1
                done
                e2e_agent_stop
        elif [ -n "$E2E_AGENT_PID" ]; then
                wait "$E2E_AGENT_PID" 2>/dev/null
                E2E_AGENT_PID=""
        fi
        [ -z "$E2E_HOST_NS" ] || e2e_netns_remove "$E2E_HOST_NS"
        [ -z "$E2E_CLIENT_NS" ] || e2e_netns_remove "$E2E_CLIENT_NS"
        E2E_HOST_NS=""
        E2E_CLIENT_NS=""
        if [ -n "$E2E_TMP" ]; then
                if [ "$E2E_KEEP_TMP" = yes ]; then
                        echo "$E2E_PROG: logs kept in $E2E_TMP"
                else
                        rm -rf "$E2E_TMP"
                fi
                E2E_TMP=""
        fi
}
