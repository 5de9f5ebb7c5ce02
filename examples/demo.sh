#!/usr/bin/env bash
# Two-node CARP failover, live, in network namespaces.
#
#   cargo build --release && sudo ./examples/demo.sh
#
# CARPD=/path/to/carpd picks the binary (default: target/release, then
# target/debug, else it builds one).
#
# Creates namespaces carpd-demo-{sw,a,b}: a switch with a bridge and two hosts
# wired to it, each running carpd for one virtual address. Shows who holds
# the address, crashes the master (the backup takes over after the
# master-down time), brings it back (it preempts), and stops it gracefully
# (the backup takes over at once). Everything is removed on exit, Ctrl-C or
# error; the host's own network is never touched.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VIP=10.99.0.100
SW=carpd-demo-sw
NODES=(a b)
declare -A NS=([a]=carpd-demo-a [b]=carpd-demo-b)
declare -A ADDR=([a]=10.99.0.1 [b]=10.99.0.2)
declare -A SKEW=([a]=0 [b]=100)
declare -A PID=()
WORK=""

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
now() { date +%T.%3N; }
say() { printf '%s  %s\n' "$(now)" "$*"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    for n in "${!PID[@]}"; do
        kill -KILL "${PID[$n]}" 2>/dev/null || true
        wait "${PID[$n]}" 2>/dev/null || true
    done
    for ns in "${NS[@]}" "$SW"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    [[ -n $WORK ]] && rm -rf "$WORK"
    echo "cleaned up: namespaces and files removed"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "demo failed at line $LINENO" >&2' ERR

if [[ $(id -u) -ne 0 ]]; then
    echo "the demo creates network namespaces: run it as root (sudo $0)" >&2
    exit 1
fi
for tool in ip; do
    command -v "$tool" >/dev/null || { echo "$tool is needed (iproute2)" >&2; exit 1; }
done

if [[ -n ${CARPD:-} ]]; then
    [[ -x $CARPD ]] || { echo "CARPD=$CARPD is not executable" >&2; exit 1; }
elif [[ -x $ROOT/target/release/carpd ]]; then
    CARPD=$ROOT/target/release/carpd
elif [[ -x $ROOT/target/debug/carpd ]]; then
    CARPD=$ROOT/target/debug/carpd
else
    bold "building carpd"
    (cd "$ROOT" && cargo build --release -p carpd)
    CARPD=$ROOT/target/release/carpd
fi

WORK=$(mktemp -d /tmp/carpd-demo.XXXXXX)

# Left over by an earlier run that was killed hard.
for ns in "${NS[@]}" "$SW"; do
    ip netns del "$ns" 2>/dev/null || true
done

bold "1. a LAN in namespaces: switch $SW (bridge br0), hosts ${NS[a]} and ${NS[b]}"
ip netns add "$SW"
ip -n "$SW" link set lo up
ip -n "$SW" link add br0 type bridge mcast_snooping 0
ip -n "$SW" link set br0 up
for n in "${NODES[@]}"; do
    ns=${NS[$n]}
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "$SW" link add "port-$n" type veth peer name eth0 netns "$ns"
    ip -n "$SW" link set "port-$n" master br0 up
    ip -n "$ns" addr add "${ADDR[$n]}/24" dev eth0
    ip -n "$ns" link set eth0 up
    # Node a is the preferred master (lower advskew) and takes the address
    # back when it returns (preempt).
    cat >"$WORK/$n.toml" <<EOF
advbase = 1
advskew = ${SKEW[$n]}
dead_ratio = 3
preempt = true
password = "demo-secret"

[[interface]]
name = "eth0"

[[interface.vhid]]
id = 1
addresses = ["$VIP/24"]
EOF
    say "host $n: $ns eth0 ${ADDR[$n]}/24, advskew ${SKEW[$n]}"
done

start() {
    local n=$1
    ip netns exec "${NS[$n]}" "$CARPD" --config "$WORK/$n.toml" \
        --control-socket "$WORK/$n.sock" >>"$WORK/$n.log" 2>&1 &
    PID[$n]=$!
    say "carpd started on host $n (pid ${PID[$n]})"
}

owners() {
    local out=() n
    for n in "${NODES[@]}"; do
        if ip -n "${NS[$n]}" -o -4 addr show dev eth0 | grep -qw "$VIP"; then
            out+=("$n")
        fi
    done
    echo "${out[*]:-nobody}"
}

# Waits until exactly `$1` holds the VIP; prints how long it took.
wait_owner() {
    local want=$1 limit=$2 t0 t
    t0=$(date +%s%N)
    while [[ $(owners) != "$want" ]]; do
        t=$(( ($(date +%s%N) - t0) / 1000000 ))
        if (( t > limit * 1000 )); then
            say "still not $want after ${limit}s (holders: $(owners))"
            return 1
        fi
        sleep 0.02
    done
    t=$(( ($(date +%s%N) - t0) / 1000000 ))
    say "$VIP is on host $want (after $((t / 1000)).$(printf '%03d' $((t % 1000)))s)"
}

declare -A SHOWN=([a]=0 [b]=0)
# Prints the state changes logged since the last call, per node.
transitions() {
    local n lines
    for n in "${NODES[@]}"; do
        [[ -f $WORK/$n.log ]] || continue
        mapfile -t lines < <(grep -h -- ' -> ' "$WORK/$n.log" || true)
        for line in "${lines[@]:${SHOWN[$n]}}"; do
            printf '    [%s] %s\n' "$n" "$line"
        done
        SHOWN[$n]=${#lines[@]}
    done
    sleep 1
}

bold "2. start both nodes: after the master-down time (3 s) a becomes master"
start a
start b
wait_owner a 10
sleep 2
say "holders of $VIP: $(owners)"
transitions

bold "3. crash the master (SIGKILL on a): b waits for the master-down time, then takes over"
say "kill -9 ${PID[a]}"
kill -KILL "${PID[a]}"
wait "${PID[a]}" 2>/dev/null || true
unset 'PID[a]'
# A crashed process cannot remove its address; the host "reboots" clean.
ip -n "${NS[a]}" addr del "$VIP/24" dev eth0 2>/dev/null || true
wait_owner b 10
transitions

bold "4. a comes back: it hears b's slower advertisements and preempts at once"
start a
wait_owner a 10
transitions

bold "5. graceful stop (SIGTERM on a): it bows out and b takes over immediately"
say "kill -TERM ${PID[a]}"
kill -TERM "${PID[a]}"
wait_owner b 5
wait "${PID[a]}" && say "carpd on a exited cleanly"
unset 'PID[a]'
transitions

bold "done"
