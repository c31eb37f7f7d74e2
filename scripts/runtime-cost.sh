#!/usr/bin/env bash
# The runtimes' own cost per echo: user-space CPU against the readiness limit (a hand-written
# mio loop) and tokio, then a profile of where each runtime's user time goes.
#
# 1. `echo-lab demo` over reactor, uring, mio and tokio at 256 and 1,000 connections (64 B
#    ping-pong, interleaved rounds, medians and min–max, CPU split into user and system time).
# 2. For each runtime: `perf record -e cpu-clock -g` on the server (CPU 0) under
#    `echo-lab bench` (CPU 1), then the user-space symbols, each as a share of the server's
#    samples, and their sum ("user share"). Skipped where perf is missing.
#
#   scripts/runtime-cost.sh                   # 3 rounds, 4 s windows, profile at 256 conns
#   ROUNDS=5 SECS=6 PROFILE_CONNS=1000 scripts/runtime-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-4}
PROFILE_CONNS=${PROFILE_CONNS:-256}
RUNTIMES=${RUNTIMES:-reactor,uring,mio,tokio}
cargo build --release -p echo
lab=target/release/echo-lab
out=target/echo-lab/cost
mkdir -p "$out"

echo "== user and total CPU per echo: ${RUNTIMES}, 256 and 1,000 connections x 64 B"
$lab demo --runtimes "$RUNTIMES" --conns 256,1000 --size 64 --rounds "$ROUNDS" --secs "$SECS" \
    --idle-conns 0 --out "$out"

if ! command -v perf >/dev/null; then
    echo "(perf not found: no profiles)"
    exit 0
fi
echo
echo "== where the user time goes: perf record -e cpu-clock -g, ${PROFILE_CONNS} connections"
port=7400
for rt in ${RUNTIMES//,/ }; do
    port=$((port + 1))
    taskset -c 0 "$lab" serve --runtime "$rt" --addr "127.0.0.1:$port" --no-udp >/dev/null 2>&1 &
    server=$!
    sleep 0.5
    taskset -c 1 "$lab" bench --addr "127.0.0.1:$port" --conns "$PROFILE_CONNS" --secs $((SECS + 2)) \
        > "$out/bench-$rt.txt" 2>&1 &
    load=$!
    sleep 1.5
    perf record -q -e cpu-clock -g -p "$server" -o "$out/perf-$rt.data" -- sleep "$SECS" >/dev/null 2>&1 || true
    wait "$load" || true
    kill "$server"; wait "$server" 2>/dev/null || true
    echo "-- $rt ($(grep -o '[0-9]* msgs/s' "$out/bench-$rt.txt" || echo '? msgs/s'))"
    perf report -i "$out/perf-$rt.data" --no-children --sort dso,sym -g none 2>/dev/null \
        | awk '!/^#/ && NF && $2 != "[kernel.kallsyms]" { share += $1; if (shown++ < 15) print "  " $0 }
               END { printf "  user share of the server'"'"'s samples: %.2f%%\n", share }'
done
