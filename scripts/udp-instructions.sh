#!/usr/bin/env bash
# User-space instructions per UDP datagram of each runtime's echo server, counted by callgrind:
# exact where CPU time on these shared machines moves 10-40 % between windows, so it decides
# between two ways of writing the same path. (The kernel's share is not counted: compare that
# with `echo-lab demo --udp`, in interleaved rounds.)
#
# Per runtime and size: `echo-lab serve` under callgrind; a warm-up (`bench --udp --count 100`);
# the counters zeroed (`callgrind_control -z`); `bench --udp --conns 16 --count $COUNT` (every
# datagram counted, none timed); the counters dumped; instructions / (16 x COUNT). The server is
# slowed some 50x under callgrind, which changes how many datagrams one loop turn finds, so the
# counts move by about 10 % between runs: compare differences larger than that.
#
#   scripts/udp-instructions.sh                                  # reactor uring proactor-epoll tokio, 64 and 1400 B
#   RUNTIMES="uring tokio" SIZES=64 scripts/udp-instructions.sh
#   LAB=/path/to/another/echo-lab scripts/udp-instructions.sh      # a build to compare
#   LAB=/old/echo-lab LOAD=target/release/echo-lab scripts/...     # an older server (its bench has no --count)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIMES=${RUNTIMES:-reactor uring proactor-epoll tokio}
SIZES=${SIZES:-64 1400}
COUNT=${COUNT:-500}
CONNS=16
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)"; exit 1; }
if [[ -z "${LAB:-}" ]]; then
    cargo build --release -p echo-lab
fi
lab=$(realpath "${LAB:-target/release/echo-lab}")
load=$(realpath "${LOAD:-$lab}")
out=${OUT:-target/echo-lab/udp-instructions}
mkdir -p "$out"
port=7600

printf '%-16s %6s %14s\n' runtime size "instr/datagram"
for size in $SIZES; do
    for rt in $RUNTIMES; do
        port=$((port + 1))
        rm -f "$out/cg-$rt-$size".*
        # (--stats on io_uring: its loop then wakes each second; valgrind runs no other thread, nor
        # answers callgrind_control, while it waits in io_uring_enter.)
        wake=()
        [[ $rt == uring* ]] && wake=(--stats)
        valgrind --tool=callgrind --callgrind-out-file="$out/cg-$rt-$size.%p" \
            "$lab" serve --runtime "$rt" --addr "127.0.0.1:$port" "${wake[@]}" >/dev/null 2>&1 &
        server=$!
        # Under callgrind the server takes a while to start: wait for its first echo.
        for _ in $(seq 1 60); do
            "$load" bench --udp --addr "127.0.0.1:$port" --conns 1 --size 8 --count 1 --json \
                >/dev/null 2>&1 && break
            sleep 0.5
        done
        "$load" bench --udp --addr "127.0.0.1:$port" --conns "$CONNS" --size "$size" --count 100 --json >/dev/null
        callgrind_control -z "$server" >/dev/null 2>&1
        "$load" bench --udp --addr "127.0.0.1:$port" --conns "$CONNS" --size "$size" --count "$COUNT" \
            --json > "$out/bench-$rt-$size.json"
        callgrind_control -d "$server" >/dev/null 2>&1
        # (SIGKILL: the dump is written; a graceful stop under valgrind can take long.)
        kill -9 "$server"; wait "$server" 2>/dev/null || true
        dump=$(ls -S "$out/cg-$rt-$size".* | head -1)
        ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
        lost=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lost"])' "$out/bench-$rt-$size.json")
        awk -v ir="$ir" -v n=$((CONNS * COUNT)) -v rt="$rt" -v size="$size" -v lost="$lost" \
            'BEGIN { printf "%-16s %6d %14.0f%s\n", rt, size, ir / n, (lost > 0 ? "  (" lost " lost)" : "") }'
    done
done
echo "(profiles: $out/cg-*; callgrind_annotate one to see where)"
