#!/usr/bin/env bash
# io_uring at scale and at size, against the reactor and tokio (current_thread), through the one
# echo handler (`echo-lab serve`): the ping-pong loads with `echo-lab demo` (interleaved rounds,
# order reversed on alternate rounds, medians and min–max, CPU split into user and system time,
# syscalls per echo from the runtimes' counters), then bulk streams with `echo-lab bench --mode
# bulk` (interleaved rounds, medians of MB/s; every byte verified), then idle memory per
# connection at 10,000 connections. Servers on CPU 0, load on CPU 1.
#
#   scripts/completion-at-scale.sh            # 3 rounds
#   ROUNDS=5 scripts/completion-at-scale.sh
#   RECORD=docs/measurements scripts/completion-at-scale.sh   # also a dated record (scripts/record.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
source scripts/record.sh
record_start completion-at-scale "Three parts. The ping-pong tables are \`echo-lab demo\`'s: per \
runtime, the medians over the interleaved rounds and the min–max on the line below. The bulk \
part: each round's MB/s, then per runtime the median with the lowest and highest round. The idle \
memory table is one round (no range): the server's memory growth per connection with 10,000 \
connections that each echoed once. Servers on CPU 0, the load on CPU 1." ROUNDS
cargo build --release -p echo-lab
lab=target/release/echo-lab
out=target/echo-lab/scale
mkdir -p "$out"

echo "== ping-pong: 1,000 and 5,000 connections x 64 B"
$lab demo --runtimes uring,reactor,tokio --conns 1000,5000 --size 64 --rounds "$ROUNDS" --secs 3 \
    --idle-conns 0 --out "$out/many"
echo "== ping-pong: 16 connections x 64 KiB"
$lab demo --runtimes uring,reactor,tokio --conns 16 --size 65536 --rounds "$ROUNDS" --secs 3 \
    --idle-conns 0 --out "$out/large"

echo "== bulk: 4 streams of 64 KiB blocks, 3 s windows"
runtimes=(uring reactor tokio)
for round in $(seq 1 "$ROUNDS"); do
    order=("${runtimes[@]}")
    if (( round % 2 == 0 )); then order=(tokio reactor uring); fi
    for rt in "${order[@]}"; do
        port=$((7300 + round))
        taskset -c 0 "$lab" serve --runtime "$rt" --addr "127.0.0.1:$port" >/dev/null 2>&1 &
        server=$!
        sleep 0.5
        mbs=$(taskset -c 1 "$lab" bench --addr "127.0.0.1:$port" --mode bulk --conns 4 --size 65536 \
            --secs 3 --warmup 0.5 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mb_per_sec"])')
        kill "$server"; wait "$server" 2>/dev/null || true
        echo "$rt $mbs" >> "$out/bulk.txt.tmp"
        echo "  round $round $rt: $mbs MB/s"
    done
done
python3 - "$out/bulk.txt.tmp" <<'PY'
import statistics, sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    rt, mbs = line.split()
    runs[rt].append(float(mbs))
tokio = statistics.median(runs["tokio"])
for rt, xs in runs.items():
    m = statistics.median(xs)
    print(f"  {rt:8} {m:9.1f} MB/s (min {min(xs):.1f}, max {max(xs):.1f})  {m / tokio:.2f}x tokio")
PY
rm -f "$out/bulk.txt.tmp"

echo "== idle memory per connection, 10,000 connections"
$lab demo --runtimes uring,reactor,proactor-epoll,tokio --conns 16 --rounds 1 --secs 1 \
    --idle-conns 10000 --syscall-secs 0 --out "$out/idle"
