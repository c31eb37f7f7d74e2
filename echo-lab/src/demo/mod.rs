//! `echo-lab demo`: every runtime and the tokio baseline, served and loaded in interleaved
//! rounds, in one comparison table per load.
//!
//! On a shared machine one window moves by tens of percent: a runtime measured alone in one
//! window can come out ahead or behind by chance. So the demo measures like a benchmark: every
//! runtime once per round, the order reversed on alternate rounds (reactor uring aio tokio,
//! then tokio aio uring reactor, ...), each round on a fresh server; and it reports, per
//! runtime, the median and the min–max over the rounds of each figure, and the CPU ratio to
//! tokio taken round by round (both measured minutes apart at most), marked "within noise"
//! where the two runtimes' min–max ranges of CPU per echo overlap.
//!
//! Each server runs as a child process (`echo-lab serve`, on an ephemeral loopback port),
//! pinned to CPU 0 with `taskset` when the machine has two CPUs or more; the load runs in this
//! process on a thread pinned to CPU 1. The server's CPU time is sampled at the edges of the
//! measured window and divided by the round trips completed in it: CPU µs per echo, the figure
//! the runtimes compete on (total from the process CPU clock; its user part, the runtime's own
//! work as opposed to the kernel's, from `/proc/PID/stat`).
//!
//! Then, with the same server still running:
//! - syscalls per echo: a second, short ping-pong window (`--syscall-secs`) during which
//!   `perf stat -e raw_syscalls:sys_enter` counts the server's system calls, switched on and
//!   off at the window's edges ([`crate::harness::perf`]), divided by the echoes completed in it. Kept
//!   apart from the CPU window so that perf's overhead does not inflate the CPU figure;
//! - idle memory per connection: `--idle-conns` connections opened and pinged once each (so
//!   the server has surely accepted and served them), and the growth of the server's `VmRSS`
//!   divided by their number.
//!
//! - [`args`]: the options;
//! - [`measure`](mod@measure): one server in one round;
//! - [`results`]: what was measured, and the figures drawn from it;
//! - [`report`]: the table, `demo.json` and `demo.svg`.

use serde_json::{json, Value};

use self::args::servers;
use self::measure::{measure, Extras};
use self::report::{demo_svg, print_notes, print_table, runtime_json};
use self::results::{Load, Runtime};
use crate::harness::child::start_server;
use crate::harness::pin::taskset_works;
use crate::harness::rounds;
use crate::load::options::{Mode, Options};
use crate::load::udp;
use crate::report::default_out_dir;
use crate::server::Server;
use crate::sys;

pub mod args;
pub mod measure;
pub mod report;
pub mod results;

pub use self::args::DemoArgs;

/// `echo-lab demo`.
pub fn run(a: &DemoArgs) -> Result<(), String> {
    sys::raise_nofile();
    let pinned = sys::cpus() >= 2 && taskset_works();
    let mut skipped: Vec<(Server, String)> = Vec::new();
    let mut servers = servers(a);
    if a.udp {
        // Skipped with the reason rather than measured at zero.
        for &server in &servers {
            let aio = server.kind() == Some(echo::server::RuntimeKind::Aio);
            if aio || matches!(server, Server::Model(_)) {
                let why = if aio {
                    echo::server::UDP_ON_AIO.to_string()
                } else {
                    format!("the {server} model serves no UDP")
                };
                eprintln!("echo-lab demo: skipping {server}: {why}");
                skipped.push((server, why));
            }
        }
        servers.retain(|s| !skipped.iter().any(|(t, _)| t == s));
    }
    let mut extras = Extras {
        udp: a.udp,
        syscall_secs: a.syscall_secs,
        idle_conns: if a.udp { 0 } else { a.idle_conns as usize },
        perf_broken: (a.syscall_secs == 0.0).then(|| "skipped (--syscall-secs 0)".to_string()),
        perf_worked: false,
    };
    eprintln!(
        "echo-lab demo: {} × {} s per runtime and load, interleaved{}",
        a.rounds,
        a.secs,
        if pinned { "; servers on CPU 0, load on CPU 1" } else { "; not pinned (needs 2 CPUs and taskset)" }
    );

    let mut loads = Vec::new();
    for &conns in &a.conns {
        for &size in &a.size {
            if a.udp && size as usize > udp::MAX_SIZE {
                return Err(format!("--udp: a datagram holds at most {} bytes", udp::MAX_SIZE));
            }
            eprintln!("{conns} {}, {size} B messages:", if a.udp { "UDP sockets" } else { "conns" });
            let mut load = Load {
                conns,
                size,
                runtimes: servers.iter().map(|&server| Runtime { server, rounds: Vec::new() }).collect(),
            };
            for round in 1..=a.rounds {
                for (position, i) in rounds::order(load.runtimes.len(), round).into_iter().enumerate() {
                    let server = load.runtimes[i].server;
                    if skipped.iter().any(|(s, _)| *s == server) {
                        continue;
                    }
                    let aio_threads = conns.saturating_add(a.idle_conns).saturating_add(64);
                    let (guard, addr) = match start_server(server, pinned, aio_threads) {
                        Ok(started) => started,
                        Err(e) => {
                            eprintln!("echo-lab demo: skipping {server}: {e}");
                            skipped.push((server, e));
                            continue;
                        }
                    };
                    let opts = Options {
                        mode: Mode::Pingpong,
                        addr,
                        conns: conns as usize,
                        size: size as usize,
                        secs: a.secs,
                        warmup: a.warmup,
                        connect_timeout: 10.0,
                        progress: false,
                    };
                    let mut r = measure(server, guard, opts, pinned, &mut extras)?;
                    (r.round, r.position) = (round, position + 1);
                    eprintln!(
                        "  round {round}/{}: {:<8} {:>9.0} msgs/s {:>8.2} µs CPU/echo",
                        a.rounds,
                        server.name(),
                        r.msgs_per_sec(),
                        r.cpu_us_per_echo()
                    );
                    load.runtimes[i].rounds.push(r);
                }
            }
            load.runtimes.retain(|r| !r.rounds.is_empty());
            if load.runtimes.is_empty() {
                return Err("no server could be started".into());
            }
            loads.push(load);
        }
    }

    for load in &loads {
        print_table(load, a);
    }
    print_notes(&loads, a);

    let out = a.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let results: Vec<Value> =
        loads.iter().flat_map(|load| load.runtimes.iter().map(move |rt| runtime_json(load, rt))).collect();
    let doc = json!({
        "rounds": a.rounds,
        "order": "every runtime once per round, in the order of `runtimes`, reversed on even rounds; \
                  a fresh server each time",
        "runtimes": servers.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "conns": a.conns,
        "udp": a.udp,
        "size": a.size,
        "secs": a.secs,
        "warmup": a.warmup,
        "idle_conns": a.idle_conns,
        "syscall_secs": a.syscall_secs,
        "syscalls_note": extras.perf_broken,
        "cpus": sys::cpus(),
        "pinned": pinned,
        "results": results,
        "skipped": skipped.iter().map(|(s, e)| json!({"runtime": s.name(), "reason": e})).collect::<Vec<_>>(),
    });
    let json_path = out.join("demo.json");
    let svg_path = out.join("demo.svg");
    let pretty = serde_json::to_string_pretty(&doc).expect("JSON values serialise");
    std::fs::write(&json_path, pretty + "\n")
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    std::fs::write(&svg_path, demo_svg(&loads, a))
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());

    let bad: u64 =
        loads.iter().flat_map(|l| &l.runtimes).flat_map(|r| &r.rounds).map(|r| r.report.mismatches).sum();
    if bad > 0 {
        return Err(format!("{bad} echoes differed from what was sent"));
    }
    Ok(())
}
