#!/usr/bin/env bash
# Datagrams lost by each runtime's UDP echo server under bursts of the largest datagrams, with
# the receive buffer `serve` asks for by default (4 MiB, clamped by net.core.rmem_max) and with
# the kernel's default (net.core.rmem_default, often 208 KiB): issue 27's "50 sockets x 100
# datagrams up to 65,507 B lose none".
#
# Per buffer size and runtime: `echo-lab serve --udp-recv-buffer BYTES` (with `--stats` where the
# runtime has counters: the kernel's drops on the server's socket, SO_MEMINFO, as the runtime
# reports them); `bench --udp --conns 50 --size 65507 --count $COUNT` (every datagram counted,
# none timed); the datagrams lost (no echo within 200 ms), the machine's RcvbufErrors over the
# run, and the sum of the drop counts the server's --stats printed (each line's count is new drops). Counted, not timed: the counts
# depend on how the server's reads race 50 peers' bursts, so they move between runs; a zero
# with the sized buffer is the claim.
#
#   scripts/udp-loss.sh
#   RUNTIMES="reactor uring" BUFFERS=4194304 COUNT=20 scripts/udp-loss.sh
#   RECORD=docs/measurements scripts/udp-loss.sh       # also a dated record (scripts/record.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIMES=${RUNTIMES:-reactor uring proactor-epoll tokio}
BUFFERS=${BUFFERS:-4194304 212992}
COUNT=${COUNT:-100}
LAB=${LAB:-}
source scripts/record.sh
record_start "udp-loss" "Per receive buffer asked for (the kernel keeps at most net.core.rmem_max) and \
runtime: 50 sockets each send COUNT datagrams of 65,507 B to the server's echo, one in flight each. \
'lost': no echo within 200 ms (the load's count). 'RcvbufErrors': the machine's count over the run \
(every socket, the load's own included). 'dropped (stats)': the sum of the counts of datagrams the kernel \
dropped on the server's socket that the runtime's --stats printed (tokio has no --stats: -)." \
    RUNTIMES BUFFERS COUNT -LAB
if [[ -z "$LAB" ]]; then
    cargo build --release -p echo-lab >&2
fi
lab=$(realpath "${LAB:-target/release/echo-lab}")
out=${OUT:-target/echo-lab/udp-loss}
mkdir -p "$out"
port=7650

echo "net.core.rmem_max $(cat /proc/sys/net/core/rmem_max), net.core.rmem_default $(cat /proc/sys/net/core/rmem_default)"
printf '%-16s %10s %8s %8s %14s %16s\n' runtime "buffer B" sent lost RcvbufErrors "dropped (stats)"
for buffer in $BUFFERS; do
    for rt in $RUNTIMES; do
        port=$((port + 1))
        stats=()
        [[ $rt != tokio ]] && stats=(--stats)
        "$lab" serve --runtime "$rt" --addr "127.0.0.1:$port" --udp-recv-buffer "$buffer" "${stats[@]}" \
            >"$out/serve-$rt-$buffer.out" 2>"$out/serve-$rt-$buffer.err" &
        server=$!
        for _ in $(seq 1 50); do
            "$lab" bench --udp --addr "127.0.0.1:$port" --conns 1 --size 8 --count 1 --json \
                >/dev/null 2>&1 && break
            sleep 0.2
        done
        "$lab" bench --udp --addr "127.0.0.1:$port" --conns 50 --size 65507 --count "$COUNT" --json \
            >"$out/bench-$rt-$buffer.json"
        sleep 1.2 # one more --stats line
        kill "$server"
        wait "$server" 2>/dev/null || true
        dropped=-
        if [[ $rt != tokio ]]; then
            dropped=$( { grep -o 'UDP datagrams dropped [0-9]*' "$out/serve-$rt-$buffer.err" || true; } |
                awk '{ s += $4 } END { print s + 0 }')
        fi
        python3 - "$out/bench-$rt-$buffer.json" "$rt" "$buffer" "$dropped" "$COUNT" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
rcv = r.get("rcvbuf_errors")
print(f"{sys.argv[2]:<16} {int(sys.argv[3]):>10} {50 * int(sys.argv[5]):>8} {r['lost']:>8} "
      f"{'-' if rcv is None else rcv:>14} {sys.argv[4]:>16}")
EOF
    done
done
grep -h "clamp" "$out"/serve-*.err | sort -u || true
