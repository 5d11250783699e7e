#!/usr/bin/env bash
# A real, slow network on one machine: runs an MPI job over TCP inside a fresh network
# namespace whose loopback is throttled by a token-bucket filter (tc tbf), so that the time of
# a distributed run can be measured against the network cost model (docs/RESULTS.md).
#
# Usage:
#   scripts/throttled-link.sh [OPTIONS] PROGRAM [ARGS...]   mpirun -np RANKS PROGRAM ARGS in the namespace
#   scripts/throttled-link.sh [OPTIONS] --check             prove the throttle: TCP throughput
#                                                           with and without tbf (python3)
# Options:
#   --rate RATE     tbf rate (tc units: 100mbit, 1gbit, ...; default 100mbit)
#   --burst BYTES   tbf bucket size (default 65536)
#   --limit BYTES   bytes that may wait in tbf's queue before it drops (default 4194304)
#   --mtu BYTES     the loopback's MTU (default 1500, as Ethernet; the kernel's is 65536)
#   --ranks N       MPI ranks (default 4)
#   --no-tbf        the same namespace without the throttle (the reference)
#
# Examples:
#   cargo build --release -p gradcast-mpi --example link_probe
#   scripts/throttled-link.sh target/release/examples/link_probe
#   cargo build --release -p gradcast-cli --features mpi
#   scripts/throttled-link.sh target/release/gradcast train --transport mpi --workers 1 --epochs 1
#
# The job runs as `mpirun --allow-run-as-root --oversubscribe -np RANKS --mca btl self,tcp
# --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo`: TCP only (no shared memory, which
# would bypass the link), on the namespace's loopback, the only interface there. Every byte
# between ranks crosses the one throttled loopback, so the ranks SHARE the rate: a collective
# in which every rank sends at once gets RATE / RANKS per rank (docs/RESULTS.md).
#
# Needs root (ip netns), iproute2 (ip, tc) with the sch_tbf qdisc, Open MPI, python3 for
# --check. The namespace is removed on exit, also on failure or interruption.
set -euo pipefail

rate=100mbit
burst=65536
limit=4194304
mtu=1500
ranks=4
tbf=1
check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) rate="$2"; shift 2 ;;
        --burst) burst="$2"; shift 2 ;;
        --limit) limit="$2"; shift 2 ;;
        --mtu) mtu="$2"; shift 2 ;;
        --ranks) ranks="$2"; shift 2 ;;
        --no-tbf) tbf=0; shift ;;
        --check) check=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) echo "throttled-link: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ "$check" -eq 0 ] && [ $# -eq 0 ]; then
    echo "throttled-link: no program to run (see --help)" >&2
    exit 2
fi
for n in "$burst" "$limit" "$mtu" "$ranks"; do
    case "$n" in
        '' | *[!0-9]*) echo "throttled-link: '$n' is not a number of bytes / ranks" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "throttled-link: needs root (ip netns add)" >&2
    exit 1
fi
for tool in ip tc; do
    command -v "$tool" >/dev/null || { echo "throttled-link: $tool not found (apt-get install iproute2)" >&2; exit 1; }
done

ns="gradcast-link-$$"
child=""
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
# On INT or TERM, end the job first (mpirun then ends its ranks), then leave; EXIT cleans up.
on_signal() {
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM
in_ns() { ip netns exec "$ns" "$@"; }

# Makes the namespace, with or without the throttle ($1 = 1 or 0).
setup() {
    cleanup
    ip netns add "$ns"
    in_ns ip link set lo mtu "$mtu"
    in_ns ip link set lo up
    if [ "$1" -eq 1 ]; then
        if ! in_ns tc qdisc add dev lo root tbf rate "$rate" burst "$burst" limit "$limit"; then
            echo "throttled-link: tc tbf failed (is the sch_tbf qdisc in this kernel?)" >&2
            exit 1
        fi
    fi
    echo "== namespace $ns: lo mtu $mtu, $(in_ns tc qdisc show dev lo | head -n 1)" >&2
}

# TCP throughput through the namespace's loopback, bytes per second (python3).
throughput() {
    in_ns python3 - "$1" <<'EOF'
import socket, sys, threading, time
total = int(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
srv.settimeout(60)
port = srv.getsockname()[1]
def send():
    c = socket.create_connection(("127.0.0.1", port), timeout=60)
    block = b"\0" * (1 << 16)
    left = total
    while left > 0:
        left -= c.send(block[: min(left, len(block))])
    c.close()
threading.Thread(target=send, daemon=True).start()
conn, _ = srv.accept()
conn.settimeout(60)
got, start = 0, None
while got < total:
    b = conn.recv(1 << 20)
    if not b:
        break
    if start is None:
        start = time.perf_counter()
    got += len(b)
secs = time.perf_counter() - start
if got < total:
    sys.exit(f"received {got} of {total} bytes")
print(f"{got / secs:.0f}")
EOF
}

if [ "$check" -eq 1 ]; then
    command -v python3 >/dev/null || { echo "throttled-link: --check needs python3" >&2; exit 1; }
    bytes=$((24 * 1024 * 1024))
    setup 0
    free="$(throughput "$bytes")"
    setup 1
    # The first burst passes at full speed; 24 MiB makes it negligible.
    slow="$(throughput "$bytes")"
    nominal="$(in_ns tc -j qdisc show dev lo 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["options"]["rate"])' 2>/dev/null || echo "")"
    echo "TCP throughput through lo: without tbf $(awk -v b="$free" 'BEGIN { printf "%.1f Mbit/s", b * 8 / 1e6 }'), with tbf rate $rate $(awk -v b="$slow" 'BEGIN { printf "%.2f Mbit/s", b * 8 / 1e6 }')"
    if [ -n "$nominal" ]; then
        # tc reports the rate in bytes per second.
        if ! awk -v s="$slow" -v n="$nominal" 'BEGIN { r = s / n; exit !(r > 0.85 && r < 1.05) }'; then
            echo "throttled-link: FAIL: the throttled throughput is not within -15%/+5% of the tbf rate ($nominal B/s)" >&2
            exit 1
        fi
        echo "throttled-link: OK: the loopback carries $(awk -v s="$slow" -v n="$nominal" 'BEGIN { printf "%.1f%%", 100 * s / n }') of the tbf rate (TCP payload; headers take the rest)"
    fi
    exit 0
fi

command -v mpirun >/dev/null || { echo "throttled-link: mpirun not found (apt-get install openmpi-bin)" >&2; exit 1; }
setup "$tbf"
status=0
# In the background, so that a signal reaches on_signal at once (bash runs traps only between
# foreground commands), and in a session of its own, so that a terminal's Ctrl-C or a signal to
# this script's process group reaches mpirun once, from on_signal (a second signal makes
# mpirun quit at once, leaving its ranks behind). `ip netns exec` and `setsid` exec (a
# background job is no process group leader, so setsid does not fork): $! is mpirun's pid.
ip netns exec "$ns" setsid mpirun --allow-run-as-root --oversubscribe -np "$ranks" \
    --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
    "$@" &
child=$!
wait "$child" || status=$?
child=""
in_ns tc -s qdisc show dev lo | sed 's/^/== /' >&2
exit "$status"
