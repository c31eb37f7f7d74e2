#!/usr/bin/env python3
"""How long a server's port stays taken after the server is killed with SIGKILL.

For each server (the reactor's example; the proactor's on io_uring and on epoll) and each
number of open connections (0, 1, 100): start it, open the connections (one echo each), kill it
with SIGKILL, reap it, then try to bind the port (with SO_REUSEADDR, as the runtimes' listeners
do) every 0.5 ms until it works. Prints, per case, the median and the min-max over the rounds
of the time from the kill to the first successful bind, and how long reaping the process took.

On io_uring the kernel closes the ring's files (the listening socket, held by the armed
multishot accept) when it tears the ring down, in a worker, after the process is gone: a
restart inside that window fails with EADDRINUSE.

    scripts/port-after-kill.py             # 20 rounds per case
    ROUNDS=50 scripts/port-after-kill.py
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import time

ROUNDS = int(os.environ.get("ROUNDS", "20"))
PORT = int(os.environ.get("PORT", "7399"))
GIVE_UP_S = 30.0

os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
subprocess.run(
    ["cargo", "build", "--release", "--quiet", "-p", "reactor", "--example", "echo",
     "-p", "proactor", "--example", "uring-echo"],
    check=True,
)
SERVERS = [
    ("reactor", ["target/release/examples/echo"]),
    ("proactor io_uring", ["target/release/examples/uring-echo", "--uring"]),
    ("proactor epoll", ["target/release/examples/uring-echo", "--epoll"]),
]


def bindable():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", PORT))
        s.listen()
        return True
    except OSError:
        return False
    finally:
        s.close()


def one_round(server, conns):
    """Seconds from SIGKILL to reaped, and to the port bindable again (None: gave up)."""
    proc = subprocess.Popen(server + [f"127.0.0.1:{PORT}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        sys.exit(f"{server} did not start: {line!r}")
    clients = []
    for _ in range(conns):
        c = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        c.sendall(b"x")
        c.recv(16)
        clients.append(c)
    killed = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reaped = time.monotonic() - killed
    free = None
    while time.monotonic() - killed < GIVE_UP_S:
        if bindable():
            free = time.monotonic() - killed
            break
        time.sleep(0.0005)
    for c in clients:
        c.close()
    return reaped, free


def ms(values):
    if not values:
        return "-"
    return f"{statistics.median(values) * 1e3:.1f} ms ({min(values) * 1e3:.1f}-{max(values) * 1e3:.1f})"


print(f"{time.strftime('%Y-%m-%d')}, Linux {os.uname().release}, {os.cpu_count()} CPUs, "
      f"{ROUNDS} rounds per case")
print(f"{'server':<20} {'conns':>5}  {'port free after the kill':<28} {'reaped after':<24} gave up")
for name, server in SERVERS:
    for conns in (0, 1, 100):
        rounds = [one_round(server, conns) for _ in range(ROUNDS)]
        free = [f for _, f in rounds if f is not None]
        gave_up = sum(1 for _, f in rounds if f is None)
        print(f"{name:<20} {conns:>5}  {ms(free):<28} {ms([r for r, _ in rounds]):<24} {gave_up}")
