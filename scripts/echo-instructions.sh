#!/usr/bin/env bash
# User-space instructions per echo of each runtime's server, counted by valgrind's callgrind:
# deterministic where CPU time on a shared machine is not, so it can decide between two builds
# whose difference is a few percent.
#
# For each runtime and connection count the server runs under callgrind twice, each time served
# by a client (inline below) that opens the connections, then makes exactly N echoes of 64 B
# (one message in flight per connection, every echo verified), then closes them all; the server
# is then stopped with SIGTERM, and callgrind writes its total. The runs differ only in N (N1,
# then N2), so the difference of the totals over N2 - N1 is the cost of one echo, with start-up,
# connecting and shutting down taken out.
#
# The server is slowed some 50x under callgrind, so each epoll_wait returns many events (as
# under heavy load); the client's pace does not change the count much, but it can a little
# (batching), which is why N2 - N1 is large.
#
#   scripts/echo-instructions.sh                              # reactor and mio, 256 and 1,000 conns
#   RUNTIMES="reactor mio tokio" CONNS=256 N1=20000 N2=120000 scripts/echo-instructions.sh
#   LAB=/path/to/another/echo-lab scripts/echo-instructions.sh    # a build to compare
#   KEEP=1 ...: keep the callgrind files (OUT, default target/echo-lab/instr) for callgrind_annotate
#   VALGRIND_ARGS="--dump-instr=yes" KEEP=1 ...: with per-instruction counts (for an annotated disassembly)
#   CACHE=1 ...: also data cache misses per echo, simulated by callgrind with a 48 KiB L1 and a
#       256 KiB last level. A proxy for how many distinct cache lines an echo touches that an
#       earlier echo's work evicted: the kernel's share of the work (most of it) is not
#       simulated, so the last level stands for what is left of the real 2 MiB L2 after it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIMES=${RUNTIMES:-reactor mio}
CONNS=${CONNS:-256 1000}
N1=${N1:-20000}
N2=${N2:-100000}
if [[ -n "${CACHE:-}" ]]; then
    VALGRIND_ARGS="${VALGRIND_ARGS:-} --cache-sim=yes --D1=49152,12,64 --LL=262144,8,64"
fi
command -v valgrind >/dev/null || { echo "valgrind is needed"; exit 1; }
if [[ -z "${LAB:-}" ]]; then
    cargo build --release -p echo-lab
fi
lab=${LAB:-target/release/echo-lab}
out=${OUT:-target/echo-lab/instr}
mkdir -p "$out"
port=$((7600 + RANDOM % 300))

client=$(cat <<'PY'
import selectors, socket, sys, time
port, conns, total = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 120
socks = []
while len(socks) < conns:
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close()
        if time.time() > deadline:
            sys.exit("the server did not come up")
        time.sleep(0.2)
        continue
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    socks.append(s)
sel = selectors.DefaultSelector()
msg = bytes(range(64))
sent = done = 0
got = {}
for s in socks[:min(conns, total)]:
    s.send(msg); sent += 1; got[s] = b""
    sel.register(s, selectors.EVENT_READ)
while done < total:
    events = sel.select(timeout=60)
    if not events:
        sys.exit("no echo for 60 s")
    for key, _ in events:
        s = key.fileobj
        data = s.recv(4096)
        if not data:
            sys.exit("the server closed a connection")
        got[s] += data
        while len(got[s]) >= 64:
            if got[s][:64] != msg:
                sys.exit("a wrong echo")
            got[s] = got[s][64:]
            done += 1
            if sent < total:
                s.send(msg); sent += 1
for s in socks:
    s.close()
PY
)

run() { # runtime conns n -> prints the server's totals: instructions (and with CACHE, L1 and LL misses)
    local rt=$1 conns=$2 n=$3 file="$out/callgrind-$1-$2-$3.out"
    port=$((port + 1))
    # io_uring's loop waits in io_uring_enter, which valgrind does not let other threads run
    # beside (its lock stays held), so the thread that handles SIGTERM would never run once the
    # load stops: --stats makes that loop wake each second (a timer, a few instructions a second).
    local wake=()
    [[ $rt == uring* ]] && wake=(--stats)
    # shellcheck disable=SC2086
    valgrind --tool=callgrind ${VALGRIND_ARGS:-} --callgrind-out-file="$file" "$lab" serve --runtime "$rt" \
        --addr "127.0.0.1:$port" --no-udp --grace 5 "${wake[@]}" >/dev/null 2>"$out/valgrind.log" &
    local server=$!
    python3 -c "$client" "$port" "$conns" "$n"
    kill -TERM "$server"; wait "$server" 2>/dev/null || true
    # Ir, or with the cache simulation: Ir, D1 misses (read + write), LL misses (read + write).
    awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
         /^(summary|totals):/ { if ("D1mr" in col) print $col["Ir"] "," $col["D1mr"] + $col["D1mw"] "," $col["DLmr"] + $col["DLmw"];
                                else print $2; exit }' "$file"
    [[ -n "${KEEP:-}" ]] || rm -f "$file"
}

printf "%-10s %6s %14s %14s %10s %10s %10s\n" runtime conns "Ir (N1=$N1)" "Ir (N2=$N2)" "Ir/echo" \
    "${CACHE:+D1 miss/echo}" "${CACHE:+LL miss/echo}"
for conns in $CONNS; do
    for rt in $RUNTIMES; do
        a=$(run "$rt" "$conns" "$N1")
        b=$(run "$rt" "$conns" "$N2")
        awk -v rt="$rt" -v c="$conns" -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN {
            split(a, x, ","); split(b, y, ","); n = n2 - n1
            printf "%-10s %6d %14d %14d %10.1f", rt, c, x[1], y[1], (y[1] - x[1]) / n
            if (3 in x) printf " %10.2f %10.2f", (y[2] - x[2]) / n, (y[3] - x[3]) / n
            printf "\n" }'
    done
done
echo "(callgrind, user-space instructions of the whole server process; 64 B echoes; per echo = difference / (N2 - N1))"
