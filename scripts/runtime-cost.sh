#!/usr/bin/env bash
# The runtimes' own cost per echo, measured finely enough to compare: user-space CPU per echo
# of each runtime against the readiness limit (a hand-written mio loop) and tokio.
#
# Why a profiler: /proc's user/system split comes from the scheduler tick (250 Hz here), and a
# runtime's user time is about 6% of a loopback echo server's CPU, so a 4 s window holds some
# 60 user ticks: ±13% from counting alone, too coarse for the question. `perf record -F 4999
# -e cpu-clock` samples the server 5,000 times a second of CPU instead, so a window holds some
# 1,500 user samples (±3%).
#
# Each round measures every runtime once (order reversed on alternate rounds), each with a
# fresh server pinned to CPU 0 and `echo-lab bench` (64 B ping-pong, every echo verified)
# pinned to CPU 1. Per runtime and round: user µs/echo = user samples / 4999 / echoes in the
# window (echoes = bench's rate x window), total µs/echo likewise from all samples. The table
# shows the median and min–max over rounds, and each runtime's ratio to mio and to tokio taken
# per round (median and min–max). Then the user-space symbols of the last round's profile.
#
#   scripts/runtime-cost.sh                          # 256 and 1,000 connections, 5 rounds of 4 s
#   ROUNDS=3 SECS=3 CONNS="1000" RUNTIMES="reactor mio" scripts/runtime-cost.sh
#   LAB=/path/to/another/echo-lab OUT=target/echo-lab/cost-before scripts/runtime-cost.sh   # a build to compare
#   BEFORE=/path/to/an/older/echo-lab scripts/runtime-cost.sh   # also that build's reactor, as
#       "reactor-before", in the same interleaved rounds (BEFORE_RUNTIMES picks other runtimes)
#   RECORD=docs/measurements scripts/runtime-cost.sh  # also a dated record (scripts/record.sh)
#   UDP=1 CONNS=16 RUNTIMES="reactor uring tokio" scripts/runtime-cost.sh   # UDP datagrams (bench --udp)
#       instead of TCP echoes
#   SYMBOLS="fget fput __sock_recv_cmsgs" scripts/...   # also those symbols' shares of each
#       server's samples (kernel ones included), last round
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-4}
CONNS=${CONNS:-256 1000}
RUNTIMES=${RUNTIMES:-reactor uring proactor-epoll mio tokio}
FREQ=4999
source scripts/record.sh
kind=${UDP:+udp-}
record_start "runtime-cost-${kind}${CONNS// /-}conns" "${UDP:+UDP datagrams (bench --udp), not TCP echoes. }Per runtime, the median over the rounds and the min–max \
in brackets of its user and total CPU µs per echo, from perf samples at $FREQ Hz of the server \
(user: samples outside the kernel); the ratios to mio and to tokio are taken round by round. The \
rounds are interleaved (the order reversed on alternate rounds), a fresh server each time on CPU \
0, the load on CPU 1. perf's sampling slows every server, about alike: compare the runtimes \
within one record, not with figures measured without perf. The symbol lists are from the last \
round only." ROUNDS SECS -CONNS RUNTIMES LAB -OUT -BEFORE BEFORE_RUNTIMES UDP SYMBOLS
command -v perf >/dev/null || { echo "perf is needed (linux-perf)"; exit 1; }
if [[ -z "${LAB:-}" ]]; then
    cargo build --release -p echo-lab
fi
lab=${LAB:-target/release/echo-lab}
out=${OUT:-target/echo-lab/cost}
mkdir -p "$out"
read -r -a runtimes <<< "$RUNTIMES"
if [[ -n "${BEFORE:-}" ]]; then
    for rt in ${BEFORE_RUNTIMES:-reactor}; do runtimes+=("$rt-before"); done
fi
port=7400

for conns in $CONNS; do
    rows="$out/rows-$conns.txt"
    : > "$rows"
    echo "== $conns ${UDP:+UDP sockets}${UDP:-connections} x 64 B: $ROUNDS rounds of ${SECS} s"
    for round in $(seq 1 "$ROUNDS"); do
        order=("${runtimes[@]}")
        if (( round % 2 == 0 )); then
            order=(); for (( i=${#runtimes[@]}-1; i>=0; i-- )); do order+=("${runtimes[i]}"); done
        fi
        for rt in "${order[@]}"; do
            port=$((port + 1))
            server_lab=$lab runtime=$rt
            if [[ $rt == *-before ]]; then server_lab=$BEFORE runtime=${rt%-before}; fi
            taskset -c 0 "$server_lab" serve --runtime "$runtime" --addr "127.0.0.1:$port" >/dev/null 2>&1 &
            server=$!
            sleep 0.5
            taskset -c 1 "$lab" bench ${UDP:+--udp} --addr "127.0.0.1:$port" --conns "$conns" --secs $((SECS + 2)) \
                --json > "$out/bench.json" 2>/dev/null &
            load=$!
            sleep 1.5
            perf record -q -F "$FREQ" -e cpu-clock -p "$server" -o "$out/perf-$rt-$conns.data" \
                -- sleep "$SECS" >/dev/null 2>&1
            wait "$load"
            kill -TERM "$server"; wait "$server" 2>/dev/null || true
            rate=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["msgs_per_sec"])' "$out/bench.json")
            # Samples in user space (any shared object but the kernel's) and in all.
            read -r user all < <(perf report -i "$out/perf-$rt-$conns.data" --stdio --sort dso -F sample,dso \
                -g none 2>/dev/null | awk '!/^#/ && NF == 2 { all += $1; if ($2 != "[kernel.kallsyms]") user += $1 }
                                           END { print user + 0, all + 0 }')
            echo "$round $rt $rate $user $all" >> "$rows"
            awk -v r="$rate" -v u="$user" -v a="$all" -v f="$FREQ" -v s="$SECS" -v rt="$rt" -v round="$round" \
                'BEGIN { n = r * s; printf "  round %d %-15s %7.0f msgs/s  user %.3f µs/echo  total %.2f µs/echo\n", round, rt, r, u / f / n * 1e6, a / f / n * 1e6 }'
        done
    done
    python3 - "$rows" "$FREQ" "$SECS" <<'PY'
import statistics, sys
rows, freq, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
per = {}
order = []
for line in open(rows):
    rnd, rt, rate, user, total = line.split()
    n = float(rate) * secs
    per.setdefault(rt, {})[int(rnd)] = (float(user) / freq / n * 1e6, float(total) / freq / n * 1e6, float(rate))
    if rt not in order:
        order.append(rt)
def spread(xs):
    return "%.3f (%.3f–%.3f)" % (statistics.median(xs), min(xs), max(xs))
def ratio(rt, base):
    if base not in per or rt == base:
        return ""
    rs = [per[rt][r][0] / per[base][r][0] for r in per[rt] if r in per[base]]
    return "%.2f× (%.2f–%.2f)" % (statistics.median(rs), min(rs), max(rs))
print("\n%-15s %-22s %-22s %-10s %-20s %-20s" % ("runtime", "user µs/echo", "total µs/echo", "msgs/s", "user vs mio", "user vs tokio"))
for rt in order:
    rounds = per[rt].values()
    print("%-15s %-22s %-22s %-10.0f %-20s %-20s" % (rt, spread([u for u, _, _ in rounds]),
          spread([t for _, t, _ in rounds]), statistics.median([r for _, _, r in rounds]),
          ratio(rt, "mio"), ratio(rt, "tokio")))
print("(user: perf samples at %d Hz outside the kernel, per echo; total: all samples; median (min–max) over rounds; ratios per round)" % freq)
PY
    echo
    echo "-- where the user time goes (last round, $conns connections): user-space symbols, % of the server's samples"
    for rt in "${runtimes[@]}"; do
        echo "  $rt:"
        perf report -i "$out/perf-$rt-$conns.data" --no-children --sort dso,sym -g none 2>/dev/null \
            | awk '!/^#/ && NF && $2 != "[kernel.kallsyms]" && shown++ < 12 { print "    " $0 }'
    done
    if [[ -n "${SYMBOLS:-}" ]]; then
        echo
        echo "-- the shares of $SYMBOLS (last round, $conns connections), % of the server's samples"
        for rt in "${runtimes[@]}"; do
            perf report -i "$out/perf-$rt-$conns.data" --no-children --sort sym -g none 2>/dev/null \
                | awk -v rt="$rt" -v want="$SYMBOLS" 'BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) share[w[i]] = 0 }
                    !/^#/ && NF >= 3 && ($3 in share) { share[$3] += $1 }
                    END { line = sprintf("  %-15s", rt); for (i = 1; i <= n; i++) line = line sprintf(" %s %.2f%%", w[i], share[w[i]]); print line }'
        done
    fi
    echo
done
