#!/usr/bin/env bash
# Two builds of echo-lab under the same demo load, in interleaved rounds: a change's cost (or
# gain) measured in one run, with the order of the builds reversed on alternate rounds. Each
# round runs `echo-lab demo --rounds 1` of each build (its servers and load are its own); the
# summary is, per runtime and build, the median and min–max over rounds of CPU µs per echo
# (user and system), syscalls per echo (the runtime's own counters), p99 latency and
# messages per second, and the after/before ratio of the medians.
#
#   scripts/compare-builds.sh BEFORE_EXE AFTER_EXE [demo options...]
#   ROUNDS=5 scripts/compare-builds.sh /tmp/echo-lab-old target/release/echo-lab \
#       --runtimes reactor,uring,proactor-epoll,tokio --conns 64,1000 --secs 3
#
# BEFORE_EXE and AFTER_EXE are echo-lab binaries (build the old one from a worktree of the old
# commit: `cargo build --release -p echo-lab`, or `-p echo` before the lab had its own crate).
set -euo pipefail
cd "$(dirname "$0")/.."
if (( $# < 2 )); then
    sed -n '2,14p' "$0"
    exit 2
fi
before=$1 after=$2
shift 2
ROUNDS=${ROUNDS:-3}
out=${OUT:-target/echo-lab/compare}
rm -rf "$out"
mkdir -p "$out"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    builds=(before after)
    if (( round % 2 == 0 )); then builds=(after before); fi
    for build in "${builds[@]}"; do
        exe=$before
        [[ $build == after ]] && exe=$after
        echo "== round $round: $build ($exe)"
        "$exe" demo --rounds 1 --idle-conns 0 "$@" --out "$out/$build-$round" >"$out/$build-$round.log" 2>&1 \
            || { echo "   failed: see $out/$build-$round.log"; exit 1; }
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys, collections
out, rounds = sys.argv[1], int(sys.argv[2])
runs = collections.defaultdict(list)   # (runtime, conns, size, build) -> [result]
for build in ("before", "after"):
    for r in range(1, rounds + 1):
        for res in json.load(open(f"{out}/{build}-{r}/demo.json"))["results"]:
            runs[(res["runtime"], res["conns"], res["size"], build)].append(res)
def spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs)
keys = sorted({k[:3] for k in runs}, key=lambda k: (k[1], k[2], k[0]))
fields = [("cpu_us_per_echo", "CPU µs/echo", 2), ("user_us_per_echo", "user µs", 2),
          ("system_us_per_echo", "system µs", 2), ("syscalls_per_echo", "syscalls/echo", 3),
          ("p99_us", "p99 µs", 0), ("msgs_per_sec", "msgs/s", 0)]
for field, name, prec in fields:
    print(f"\n{name}: median (min–max) over {rounds} rounds; after/before")
    for runtime, conns, size in keys:
        cells = []
        medians = {}
        for build in ("before", "after"):
            s = spread([res.get(field) for res in runs[(runtime, conns, size, build)]])
            if s is None:
                cells.append(f"{build} -")
                continue
            medians[build] = s[0]
            cells.append(f"{build} {s[0]:.{prec}f} ({s[1]:.{prec}f}–{s[2]:.{prec}f})")
        ratio = ""
        if medians.get("before"):
            ratio = f"{medians.get('after', float('nan')) / medians['before']:.2f}x"
        print(f"  {runtime:15} {conns:>5} x {size:>6} B   {cells[0]:32} {cells[1]:32} {ratio}")
PY
