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
//!   off at the window's edges ([`crate::perf`]), divided by the echoes completed in it. Kept
//!   apart from the CPU window so that perf's overhead does not inflate the CPU figure;
//! - idle memory per connection: `--idle-conns` connections opened and pinged once each (so
//!   the server has surely accepted and served them), and the growth of the server's `VmRSS`
//!   divided by their number.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use crate::load::net::connect_retry;
use crate::load::options::{non_negative, positive, Edge, Mode, Options};
use crate::load::report::Report;
use crate::load::{pingpong, udp};
use crate::perf::Perf;
use crate::report::{default_out_dir, finite, num, round, svg};
use crate::server::Server;
use crate::sys;

/// Options of `echo-lab demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Runtimes to compare, comma-separated, in the order of the first round: reactor, uring,
    /// aio, proactor-epoll, tokio (the baseline the CPU ratio is taken to), or one of the
    /// classic models.
    #[arg(long, value_delimiter = ',', default_value = "reactor,uring,aio,proactor-epoll,tokio")]
    pub runtimes: Vec<Server>,
    /// Rounds: every runtime is measured once per round, the order reversed on alternate
    /// rounds; the table shows the median and the min–max over the rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Length of each measured window, seconds.
    #[arg(long, default_value_t = 2.0, value_parser = positive)]
    pub secs: f64,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 0.5, value_parser = non_negative)]
    pub warmup: f64,
    /// Connections, each with one message in flight; a comma-separated list measures each
    /// load in turn (one table each).
    #[arg(long, value_delimiter = ',', default_value = "64",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub conns: Vec<u32>,
    /// Message size, bytes; a comma-separated list measures each size with each --conns.
    #[arg(long, value_delimiter = ',', default_value = "64",
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub size: Vec<u32>,
    /// Idle connections opened (and pinged once each) per runtime and round to measure the
    /// server's memory per connection; 0 skips the measurement.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub idle_conns: u32,
    /// Length of the separate window in which the server's syscalls are counted (its own
    /// counters, and `perf stat` where it works), seconds; 0 skips the measurement.
    #[arg(long, default_value_t = 0.5, value_parser = non_negative)]
    pub syscall_secs: f64,
    /// Ping-pong UDP datagrams instead of TCP messages (the servers answer UDP on the same
    /// address; see `bench --udp`): --conns is then the number of client sockets. Runtimes
    /// that serve no UDP (aio, the classic models) are skipped; idle memory is not measured.
    #[arg(long)]
    pub udp: bool,
    /// Where to write demo.json and demo.svg [default: TARGET/echo-lab, where TARGET is
    /// $CARGO_TARGET_DIR, or the `target` directory this program was built in, or ./target].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A child process that is killed and reaped when dropped, so that every exit path, errors
/// and panics included, leaves no server behind.
/// The server process, and the syscall counts it prints on SIGUSR1 (its runtime's own
/// counters, `counters [THREAD] syscalls=N ...` lines).
pub(crate) struct ChildGuard(pub(crate) Child, pub(crate) Option<mpsc::Receiver<u64>>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One server's measurements in one round.
struct Round {
    /// The round, from 1.
    round: u32,
    /// Its place in the round's order, from 1.
    position: usize,
    report: Report,
    /// Server CPU time over the window, seconds: total (process CPU clock), and user and
    /// system time (`/proc/PID/stat`, clock ticks).
    cpu_s: f64,
    user_s: f64,
    system_s: f64,
    /// The syscall window as the runtime's own counters saw it, or why there is none.
    syscalls: Result<Syscalls, String>,
    /// The same window as `perf stat` saw it, or why not.
    perf: Result<Syscalls, String>,
    /// The idle-connection memory measurement, or why there is none.
    idle: Result<Idle, String>,
}

/// The server's syscalls over a window of the load.
struct Syscalls {
    /// System calls the server made in the window.
    count: u64,
    /// Echoes completed in the same window.
    echoes: u64,
    /// Length of the window, seconds.
    window_s: f64,
}

impl Syscalls {
    fn per_echo(&self) -> f64 {
        if self.echoes == 0 {
            f64::NAN
        } else {
            self.count as f64 / self.echoes as f64
        }
    }
}

/// The server's resident memory before and after opening `conns` idle connections.
struct Idle {
    conns: usize,
    before_kb: u64,
    after_kb: u64,
}

impl Idle {
    /// Bytes of resident memory per idle connection (negative if the RSS shrank).
    fn bytes_per_conn(&self) -> f64 {
        (self.after_kb as f64 - self.before_kb as f64) * 1024.0 / self.conns.max(1) as f64
    }
}

impl Round {
    fn per_echo_us(&self, seconds: f64) -> f64 {
        if self.report.msgs == 0 {
            f64::NAN
        } else {
            seconds * 1e6 / self.report.msgs as f64
        }
    }

    fn cpu_us_per_echo(&self) -> f64 {
        self.per_echo_us(self.cpu_s)
    }

    fn user_us_per_echo(&self) -> f64 {
        self.per_echo_us(self.user_s)
    }

    fn system_us_per_echo(&self) -> f64 {
        self.per_echo_us(self.system_s)
    }

    fn msgs_per_sec(&self) -> f64 {
        self.report.msgs_per_sec()
    }

    fn p99_us(&self) -> f64 {
        self.report.latency_us(0.99)
    }

    /// The runtime's own count; for the baselines (tokio, mio), which have none, perf's.
    fn syscalls_shown(&self, server: Server) -> Result<&Syscalls, &String> {
        match (&self.syscalls, &self.perf) {
            (Ok(own), _) => Ok(own),
            (Err(_), Ok(perf)) if counted_by_perf(server) => Ok(perf),
            (Err(why), _) => Err(why),
        }
    }

    fn perf_per_echo(&self) -> f64 {
        self.perf.as_ref().map_or(f64::NAN, Syscalls::per_echo)
    }

    fn idle_bytes_per_conn(&self) -> f64 {
        self.idle.as_ref().map_or(f64::NAN, Idle::bytes_per_conn)
    }
}

/// The median and the range of a figure over the rounds (NaN where no round measured it).
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }

    fn overlaps(&self, other: &Spread) -> bool {
        self.min <= other.max && other.min <= self.max
    }

    /// `median`, `median_min` and `median_max` keys for JSON (`null` where not measured).
    fn json(&self, key: &str, digits: i32, into: &mut serde_json::Map<String, Value>) {
        into.insert(key.to_string(), finite(round(self.median, digits)));
        into.insert(format!("{key}_min"), finite(round(self.min, digits)));
        into.insert(format!("{key}_max"), finite(round(self.max, digits)));
    }
}

/// One runtime under one load: its rounds, and the spreads of its figures.
struct Runtime {
    server: Server,
    rounds: Vec<Round>,
}

impl Runtime {
    fn spread(&self, f: impl Fn(&Round) -> f64) -> Spread {
        Spread::of(self.rounds.iter().map(f))
    }

    fn syscalls_per_echo(&self) -> Spread {
        self.spread(|r| r.syscalls_shown(self.server).map_or(f64::NAN, Syscalls::per_echo))
    }

    /// Where the syscall count comes from, if it was counted.
    fn syscalls_source(&self) -> Option<&'static str> {
        let r = self.rounds.first()?;
        match (&r.syscalls, r.syscalls_shown(self.server)) {
            (Ok(_), _) => Some("runtime counters"),
            (Err(_), Ok(_)) => Some("perf"),
            _ => None,
        }
    }

    fn syscalls_error(&self) -> Option<&String> {
        self.rounds.iter().find_map(|r| r.syscalls_shown(self.server).err())
    }
}

/// One load (connections × message size) and every runtime measured under it.
struct Load {
    conns: u32,
    size: u32,
    runtimes: Vec<Runtime>,
}

/// How a runtime's CPU per echo compares with tokio's under the same load.
struct VsTokio {
    /// The runtime's CPU µs/echo over tokio's, round by round.
    ratio: Spread,
    /// Whether the two min–max ranges of CPU µs/echo overlap: then the ratio means nothing.
    within_noise: bool,
}

impl Load {
    fn tokio(&self) -> Option<&Runtime> {
        self.runtimes.iter().find(|r| r.server == Server::Tokio)
    }

    /// None for tokio itself, or without tokio.
    fn vs_tokio(&self, rt: &Runtime) -> Option<VsTokio> {
        let tokio = self.tokio().filter(|t| t.server != rt.server)?;
        let ratios = rt.rounds.iter().filter_map(|r| {
            let t = tokio.rounds.iter().find(|t| t.round == r.round)?;
            Some(r.cpu_us_per_echo() / t.cpu_us_per_echo())
        });
        let ratio = Spread::of(ratios);
        let within_noise = rt.spread(Round::cpu_us_per_echo).overlaps(&tokio.spread(Round::cpu_us_per_echo));
        Some(VsTokio { ratio, within_noise })
    }
}

/// What `measure` does besides the CPU window.
struct Extras {
    /// Length of the syscall window, seconds (0: none).
    syscall_secs: f64,
    /// Idle connections to open (0: none).
    idle_conns: usize,
    /// Set once perf has failed before it ever worked (not installed, not allowed): why.
    /// Later windows do not try again.
    perf_broken: Option<String>,
    /// Whether perf has counted a window: then a later failure is that window's alone.
    perf_worked: bool,
    /// `--udp`: the load is datagrams.
    udp: bool,
}

/// How long `--udp` waits for an echo before counting the datagram lost.
const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// One ping-pong window: TCP messages, or UDP datagrams if `udp` (losses are reported on
/// stderr; the report counts only echoes that came back).
fn pingpong(opts: &Options, udp: bool, on_edge: &mut dyn FnMut(Edge)) -> Result<Report, String> {
    if !udp {
        return pingpong::run(opts, on_edge);
    }
    let udp = udp::run(opts, UDP_LOSS_TIMEOUT, on_edge)?;
    if udp.lost > 0 {
        eprintln!("echo-lab demo: {} datagrams lost (no echo within {UDP_LOSS_TIMEOUT:?})", udp.lost);
    }
    Ok(udp.report)
}

/// The runtimes to compare, each once, in the order given.
fn servers(a: &DemoArgs) -> Vec<Server> {
    let mut servers: Vec<Server> = Vec::new();
    for &s in &a.runtimes {
        if !servers.contains(&s) {
            servers.push(s);
        }
    }
    servers
}

/// `echo-lab demo`.
pub fn run(a: &DemoArgs) -> Result<(), String> {
    sys::raise_nofile();
    let pinned = sys::cpus() >= 2 && taskset_works();
    let mut skipped: Vec<(Server, String)> = Vec::new();
    let mut servers = servers(a);
    if a.udp {
        // Skipped with the reason rather than measured at zero.
        for &server in &servers {
            if matches!(server, Server::Runtime(echo::server::RuntimeKind::Aio) | Server::Model(_)) {
                let why = if server == Server::Runtime(echo::server::RuntimeKind::Aio) {
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
                let mut order: Vec<usize> = (0..load.runtimes.len()).collect();
                if round % 2 == 0 {
                    order.reverse();
                }
                for (position, i) in order.into_iter().enumerate() {
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

/// One round of one runtime, as JSON.
fn round_json(server: Server, r: &Round) -> Value {
    let shown = r.syscalls_shown(server);
    json!({
        "round": r.round,
        "position": r.position,
        "msgs_per_sec": round(r.msgs_per_sec(), 1),
        "p50_us": round(r.report.latency_us(0.5), 2),
        "p99_us": round(r.p99_us(), 2),
        "p999_us": round(r.report.latency_us(0.999), 2),
        "server_cpu_s": round(r.cpu_s, 6),
        "server_user_s": round(r.user_s, 3),
        "server_system_s": round(r.system_s, 3),
        "cpu_us_per_echo": finite(round(r.cpu_us_per_echo(), 3)),
        "user_us_per_echo": finite(round(r.user_us_per_echo(), 3)),
        "system_us_per_echo": finite(round(r.system_us_per_echo(), 3)),
        "syscalls_per_echo": finite(round(shown.map_or(f64::NAN, Syscalls::per_echo), 3)),
        "syscalls": shown.ok().map(|s| s.count),
        "syscall_window_echoes": shown.ok().map(|s| s.echoes),
        "syscall_window_s": shown.ok().map(|s| round(s.window_s, 6)),
        "perf_syscalls_per_echo": finite(round(r.perf_per_echo(), 3)),
        "perf_syscalls": r.perf.as_ref().ok().map(|s| s.count),
        "idle_rss_before_kb": r.idle.as_ref().ok().map(|i| i.before_kb),
        "idle_rss_after_kb": r.idle.as_ref().ok().map(|i| i.after_kb),
        "idle_bytes_per_conn": finite(round(r.idle_bytes_per_conn(), 1)),
        "msgs": r.report.msgs,
        "errors": r.report.errors,
        "mismatches": r.report.mismatches,
    })
}

/// One runtime under one load, as JSON: the medians and ranges, then every round.
fn runtime_json(load: &Load, rt: &Runtime) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("runtime".into(), json!(rt.server.name()));
    v.insert("conns".into(), json!(load.conns));
    v.insert("size".into(), json!(load.size));
    rt.spread(Round::msgs_per_sec).json("msgs_per_sec", 1, &mut v);
    rt.spread(Round::p99_us).json("p99_us", 2, &mut v);
    rt.spread(Round::cpu_us_per_echo).json("cpu_us_per_echo", 3, &mut v);
    rt.spread(Round::user_us_per_echo).json("user_us_per_echo", 3, &mut v);
    rt.spread(Round::system_us_per_echo).json("system_us_per_echo", 3, &mut v);
    match load.vs_tokio(rt) {
        Some(vs) => {
            vs.ratio.json("cpu_ratio_to_tokio", 3, &mut v);
            v.insert("within_noise".into(), json!(vs.within_noise));
        }
        None => {
            let one = if rt.server == Server::Tokio { json!(1.0) } else { Value::Null };
            for key in ["cpu_ratio_to_tokio", "cpu_ratio_to_tokio_min", "cpu_ratio_to_tokio_max"] {
                v.insert(key.into(), one.clone());
            }
            v.insert("within_noise".into(), Value::Null);
        }
    }
    rt.syscalls_per_echo().json("syscalls_per_echo", 3, &mut v);
    v.insert("syscalls_source".into(), json!(rt.syscalls_source()));
    v.insert("syscalls_error".into(), json!(rt.syscalls_error()));
    rt.spread(Round::perf_per_echo).json("perf_syscalls_per_echo", 3, &mut v);
    let perf_error = rt.rounds.iter().find_map(|r| r.perf.as_ref().err());
    v.insert("perf_error".into(), json!(perf_error));
    v.insert(
        "idle_conns".into(),
        json!(rt.rounds.iter().find_map(|r| r.idle.as_ref().ok().map(|i| i.conns))),
    );
    rt.spread(Round::idle_bytes_per_conn).json("idle_bytes_per_conn", 1, &mut v);
    v.insert("idle_error".into(), json!(rt.rounds.iter().find_map(|r| r.idle.as_ref().err())));
    let sum = |f: fn(&Report) -> u64| rt.rounds.iter().map(|r| f(&r.report)).sum::<u64>();
    v.insert("msgs".into(), json!(sum(|r| r.msgs)));
    v.insert("errors".into(), json!(sum(|r| r.errors)));
    v.insert("mismatches".into(), json!(sum(|r| r.mismatches)));
    v.insert("rounds".into(), rt.rounds.iter().map(|r| round_json(rt.server, r)).collect());
    Value::Object(v)
}

/// `min–max`, or "n/a".
fn range(s: &Spread, prec: usize) -> String {
    if s.min.is_finite() {
        format!("{:.prec$}–{:.prec$}", s.min, s.max)
    } else {
        "n/a".into()
    }
}

/// The table's columns, after the runtime's name.
const COLUMNS: [&str; 7] =
    ["msgs/s", "p99 µs", "CPU µs/echo", "user µs/echo", "vs tokio", "syscalls/echo", "idle B/conn"];

/// The table of one load: per runtime, a line of medians and a line of min–max below it.
fn print_table(load: &Load, a: &DemoArgs) {
    println!();
    println!(
        "{} {}, {} B messages: median of {} round{} (min–max below)",
        load.conns,
        if a.udp { "UDP sockets" } else { "conns" },
        load.size,
        a.rounds,
        if a.rounds == 1 { "" } else { "s" }
    );
    let line = |first: &str, cells: [String; 7]| {
        println!(
            "{first:<10}  {:>13}  {:>13}  {:>12}  {:>12}  {:>12}  {:>13}  {:>11}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        );
    };
    line("runtime", COLUMNS.map(String::from));
    for rt in &load.runtimes {
        let (msgs, p99) = (rt.spread(Round::msgs_per_sec), rt.spread(Round::p99_us));
        let (cpu, user) = (rt.spread(Round::cpu_us_per_echo), rt.spread(Round::user_us_per_echo));
        let (sys, idle) = (rt.syscalls_per_echo(), rt.spread(Round::idle_bytes_per_conn));
        let (vs, vs_range) = match load.vs_tokio(rt) {
            Some(VsTokio { within_noise: true, ratio }) => {
                ("within noise".to_string(), range(&ratio, 2) + "×")
            }
            Some(VsTokio { within_noise: false, ratio }) => {
                (num(ratio.median, 2) + "×", range(&ratio, 2) + "×")
            }
            None if rt.server == Server::Tokio => ("baseline".to_string(), String::new()),
            None => ("n/a".to_string(), String::new()),
        };
        let p99_prec = if p99.max < 100.0 { 1 } else { 0 };
        line(
            rt.server.name(),
            [
                num(msgs.median, 0),
                num(p99.median, p99_prec),
                num(cpu.median, 2),
                num(user.median, 2),
                vs,
                num(sys.median, 2),
                num(idle.median, 0),
            ],
        );
        line(
            "",
            [
                range(&msgs, 0),
                range(&p99, p99_prec),
                range(&cpu, 2),
                range(&user, 2),
                vs_range,
                range(&sys, 2),
                range(&idle, 0),
            ],
        );
    }
}

/// What the tables' columns mean, and what could not be measured.
fn print_notes(loads: &[Load], a: &DemoArgs) {
    let all: Vec<&Runtime> = loads.iter().flat_map(|l| &l.runtimes).collect();
    let rounds = || all.iter().flat_map(|rt| &rt.rounds);
    let errors: u64 = rounds().map(|r| r.report.errors).sum();
    let mismatches: u64 = rounds().map(|r| r.report.mismatches).sum();
    let names: Vec<&str> = servers(a).iter().map(|s| s.name()).collect();
    let mut reversed = names.clone();
    reversed.reverse();
    println!();
    println!("(every echo verified: {errors} errors, {mismatches} mismatches)");
    println!(
        "(rounds interleaved: {}, then {}, ...; a fresh server each time; {} s windows)",
        names.join(" "),
        reversed.join(" "),
        a.secs
    );
    println!(
        "(CPU µs/echo: the server's user + system time per echo; user µs/echo: its user-mode part, \
         the runtime's own work; the rest is the kernel's, mostly TCP)"
    );
    println!(
        "(vs tokio: CPU µs/echo over tokio's in the same round; \"within noise\" where the two \
         runtimes' min–max ranges of CPU µs/echo overlap)"
    );
    println!(
        "(syscalls/echo: each runtime's own counters, on the thread that runs it; tokio and mio, which have \
         none: perf)"
    );
    let cross: Vec<String> = all
        .iter()
        .filter(|rt| rt.rounds.iter().any(|r| r.syscalls.is_ok()))
        .map(|rt| format!("{} {}", rt.server.name(), num(rt.spread(Round::perf_per_echo).median, 2)))
        .collect();
    if !cross.is_empty() {
        println!("(perf stat, same windows: {})", cross.join(", "));
    }
    let mut said = Vec::new();
    for rt in all.iter().filter(|rt| rt.syscalls_per_echo().median.is_nan()) {
        if let Some(why) = rt.syscalls_error() {
            if !said.contains(&rt.server) {
                said.push(rt.server);
                println!("({} syscalls/echo n/a: {why})", rt.server.name());
            }
        }
    }
    if let Some(why) = rounds().find_map(|r| r.idle.as_ref().err()) {
        println!("(idle B/conn n/a: {why})");
    }
    println!();
}

/// The SVG: per load, CPU per echo (its user part darker), syscalls per echo and idle memory
/// per connection, each bar the median with a whisker over the min–max.
fn demo_svg(loads: &[Load], a: &DemoArgs) -> String {
    let mut panels = Vec::new();
    for load in loads {
        let bars = |f: &dyn Fn(&Runtime) -> Spread, inner: &dyn Fn(&Runtime) -> f64| -> Vec<svg::Bar> {
            load.runtimes
                .iter()
                .map(|rt| {
                    let s = f(rt);
                    svg::Bar {
                        label: rt.server.name().to_string(),
                        value: s.median,
                        range: s.min.is_finite().then_some((s.min, s.max)),
                        inner: inner(rt),
                    }
                })
                .collect()
        };
        let what =
            if loads.len() > 1 { format!("{} conns, {} B: ", load.conns, load.size) } else { String::new() };
        panels.push(svg::Panel {
            title: format!("{what}Server CPU per echo (dark: user time)"),
            unit: "µs".into(),
            decimals: 2,
            bars: bars(&|rt| rt.spread(Round::cpu_us_per_echo), &|rt| {
                rt.spread(Round::user_us_per_echo).median
            }),
        });
        panels.push(svg::Panel {
            title: format!("{what}Server syscalls per echo"),
            unit: "".into(),
            decimals: 2,
            bars: bars(&Runtime::syscalls_per_echo, &|_| f64::NAN),
        });
        panels.push(svg::Panel {
            title: format!("{what}Server memory per idle connection ({} conns)", a.idle_conns),
            unit: "B".into(),
            decimals: 0,
            bars: bars(&|rt| rt.spread(Round::idle_bytes_per_conn), &|_| f64::NAN),
        });
    }
    let load = match (a.conns.as_slice(), a.size.as_slice()) {
        ([conns], [size]) => format!("{conns} conns, {size} B messages, "),
        _ => String::new(),
    };
    let title = format!(
        "echo-lab demo: {load}median and min–max of {} round{} (lower is better)",
        a.rounds,
        if a.rounds == 1 { "" } else { "s" }
    );
    svg::panels(&title, &panels)
}

pub(crate) fn taskset_works() -> bool {
    Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `echo-lab serve` for `server` on an ephemeral loopback port; returns it with the
/// address it listens on.
/// `aio_threads` sizes the aio server's thread pool: every connection the demo holds open at
/// once (load plus idle) keeps a read pending, which holds one thread.
pub(crate) fn start_server(
    server: Server,
    pinned: bool,
    aio_threads: u32,
) -> Result<(ChildGuard, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(["serve", "--runtime", server.name(), "--addr", "127.0.0.1:0"]);
    if server == Server::Runtime(echo::server::RuntimeKind::Aio) {
        cmd.args(["--aio-threads", &aio_threads.to_string()]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // If this process dies without dropping the guard (a signal, say), the kernel kills the
    // server: no server outlives the demo.
    // SAFETY: prctl is async-signal-safe, and the closure touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            echo::models::sys::die_with_parent();
            Ok(())
        });
    }
    let (counts_tx, counts_rx) = mpsc::channel();
    let mut guard =
        ChildGuard(cmd.spawn().map_err(|e| format!("cannot start the server: {e}"))?, Some(counts_rx));

    // Read the `listening on ADDR (PROTOCOLS, runtime NAME)` line, or the error, in bounded time.
    let stdout = guard.0.stdout.take().expect("stdout is piped");
    let stderr = guard.0.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        // Forward the server's complaints, keeping the first line for an error message.
        let mut first = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("counters [") {
                let count =
                    line.split_once("syscalls=").and_then(|(_, rest)| rest.split(' ').next()?.parse().ok());
                if let Some(count) = count {
                    let _ = counts_tx.send(count);
                }
                continue;
            }
            if first.is_none() {
                first = Some(line.clone());
                let _ = etx.send(line.clone());
            }
            eprintln!("  [{server} server] {line}");
        }
    });
    let line =
        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "did not start within 10 s".to_string())?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse::<SocketAddr>().ok());
    match addr {
        Some(addr) => Ok((guard, addr)),
        None => {
            let _ = guard.0.wait();
            let why = erx.recv_timeout(Duration::from_secs(1)).unwrap_or_else(|_| "it exited".into());
            Err(why.trim_start_matches("echo-lab: ").to_string())
        }
    }
}

/// Runs `f` on a new thread, pinned to CPU 1 if `pinned`, and returns its result.
pub(crate) fn on_load_cpu<T: Send + 'static>(
    pinned: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        if pinned {
            if let Err(e) = sys::pin_current_thread(1) {
                eprintln!("echo-lab demo: cannot pin the load to CPU 1: {e}");
            }
        }
        f()
    })
    .join()
    .map_err(|_| "the load thread panicked".to_string())
}

/// Loads `server` (already started, as `guard`) from a thread pinned to CPU 1, sampling the
/// server's CPU time at the window's edges; then counts its syscalls over a second window and
/// measures its memory per idle connection, as `extras` asks; kills the server when done.
fn measure(
    server: Server,
    mut guard: ChildGuard,
    opts: Options,
    pinned: bool,
    extras: &mut Extras,
) -> Result<Round, String> {
    let pid = guard.0.id();
    let addr = opts.addr;
    let load_opts = opts.clone();
    let udp = extras.udp;
    let (report, (cpu_s, user_s, system_s)) = on_load_cpu(pinned, move || {
        // The process CPU clock (nanoseconds) and /proc's user and system ticks, at each edge.
        let sample = || (sys::process_cpu_s(pid).ok(), sys::stat_times(pid).ok());
        let (mut start, mut end) = ((None, None), (None, None));
        let report = pingpong(&load_opts, udp, &mut |edge| match edge {
            Edge::Start => start = sample(),
            Edge::End => end = sample(),
        })?;
        let cpu_s = match (start.0, end.0) {
            (Some(s), Some(e)) => e - s,
            _ => f64::NAN,
        };
        let (user_s, system_s) = match (start.1, end.1) {
            (Some(s), Some(e)) => (e.user_s - s.user_s, e.system_s - s.system_s),
            _ => (f64::NAN, f64::NAN),
        };
        Ok::<_, String>((report, (cpu_s, user_s, system_s)))
    })??;
    let alive = |guard: &mut ChildGuard| match guard.0.try_wait() {
        Ok(Some(status)) => Err(format!("the {server} server exited during the run ({status})")),
        _ => Ok(()),
    };
    alive(&mut guard)?;

    let own_counters = match server {
        Server::Tokio | Server::Mio | Server::Model(_) => Err(format!("{server} has no counters here")),
        Server::Runtime(echo::server::RuntimeKind::Aio) => {
            Err("not counted for aio: its I/O syscalls are made by \
             glibc's threads, which neither its counters nor perf follow reliably (see the README)"
                .to_string())
        }
        Server::Runtime(_) => Ok(guard.1.take().expect("the counts channel")),
    };
    let (syscalls, perf) = if extras.syscall_secs == 0.0 {
        let why = "skipped (--syscall-secs 0)".to_string();
        (Err(why.clone()), Err(why))
    } else if let (Err(why), true) = (&own_counters, !counted_by_perf(server)) {
        (Err(why.clone()), Err("not counted".to_string()))
    } else {
        let window = Options { secs: extras.syscall_secs, warmup: opts.warmup.clamp(0.3, 0.5), ..opts };
        let use_perf = extras.perf_broken.is_none();
        let (own, perf) = count_syscalls(pid, window, pinned, own_counters, use_perf, udp)?;
        match &perf {
            Ok(_) => extras.perf_worked = true,
            Err(why) if use_perf && extras.perf_worked => {
                eprintln!("echo-lab demo: {server}: perf missed this window: {why}");
            }
            Err(why) if use_perf => {
                eprintln!("echo-lab demo: no perf cross-check: {why}");
                extras.perf_broken = Some(why.clone());
            }
            Err(_) => {}
        }
        (own, perf)
    };
    alive(&mut guard)?;

    let idle = if extras.idle_conns == 0 {
        Err("skipped (--idle-conns 0)".to_string())
    } else {
        idle_memory(pid, addr, extras.idle_conns)
    };
    if let Err(why) = &idle {
        if extras.idle_conns > 0 {
            eprintln!("echo-lab demo: {server}: idle B/conn will be n/a: {why}");
        }
    }
    alive(&mut guard)?;
    drop(guard);
    Ok(Round { round: 0, position: 0, report, cpu_s, user_s, system_s, syscalls, perf, idle })
}

/// Whether the demo counts `server`'s syscalls with perf alone: the baselines, which have no
/// counters of their own.
fn counted_by_perf(server: Server) -> bool {
    matches!(server, Server::Tokio | Server::Mio)
}

/// A count of syscalls over a window, or why there is none.
type Counted = Result<Syscalls, String>;

/// The syscalls server `pid` has made so far, by its runtime's own counters: it prints them on
/// SIGUSR1, and its stderr reader passes the count on through `counts`.
pub(crate) fn counter_snapshot(pid: u32, counts: &mpsc::Receiver<u64>) -> Result<u64, String> {
    sys::kill(pid, nix::sys::signal::Signal::SIGUSR1)
        .map_err(|e| format!("cannot signal the server: {e}"))?;
    counts
        .recv_timeout(Duration::from_secs(2))
        .map_err(|_| "the server did not print its counters".to_string())
}

/// A ping-pong window (`opts`) over which the syscalls of process `pid` are counted twice: by
/// its runtime's own counters (`counts`: the server prints them on SIGUSR1, sent at both edges
/// of the window) and, if `use_perf`, by `perf stat`.
///
/// The outer error is a failure of the load itself (the demo fails); the inner ones are why a
/// count could not be made (the demo shows "n/a").
fn count_syscalls(
    pid: u32,
    opts: Options,
    pinned: bool,
    counts: Result<mpsc::Receiver<u64>, String>,
    use_perf: bool,
    udp: bool,
) -> Result<(Counted, Counted), String> {
    // Started before the load, so that perf attaches during the connect and the warm-up.
    let perf = if use_perf { Perf::start(pid) } else { Err("perf is not available".to_string()) };
    let (report, perf, perf_failed, own) = on_load_cpu(pinned, move || {
        let mut perf = perf;
        let mut perf_failed: Option<String> = None;
        // The server's count at the window's start, then its count over the window.
        let mut own: Result<(Option<u64>, Option<u64>), String> =
            counts.as_ref().map(|_| (None, None)).map_err(Clone::clone);
        let snapshot = |counts: &Result<mpsc::Receiver<u64>, String>| {
            counter_snapshot(pid, counts.as_ref().map_err(Clone::clone)?)
        };
        let report = pingpong(&opts, udp, &mut |edge| {
            let at = snapshot(&counts);
            own = match (std::mem::replace(&mut own, Err(String::new())), at, edge) {
                (Ok((None, None)), Ok(start), Edge::Start) => Ok((Some(start), None)),
                (Ok((Some(start), None)), Ok(end), Edge::End) => Ok((Some(start), Some(end))),
                (Err(why), _, _) | (_, Err(why), _) => Err(why),
                _ => Err("the counter snapshots came out of order".to_string()),
            };
            if let (Ok(perf), None) = (&mut perf, &perf_failed) {
                let done = match edge {
                    Edge::Start => perf.enable(),
                    Edge::End => perf.disable(),
                };
                if let Err(why) = done {
                    perf_failed = Some(why);
                }
            }
        });
        (report, perf, perf_failed, own)
    })?;
    let report = report?;
    if report.mismatches > 0 {
        return Err(format!("{} echoes differed from what was sent (syscall window)", report.mismatches));
    }
    let window = |count| Syscalls { count, echoes: report.msgs, window_s: report.window_s };
    let own = match own {
        Ok((Some(start), Some(end))) => Ok(window(end.saturating_sub(start))),
        Ok(_) => Err("the window did not complete".to_string()),
        Err(why) => Err(why),
    };
    let perf = match (perf, perf_failed) {
        (Ok(_), Some(why)) | (Err(why), _) => Err(why),
        (Ok(perf), None) => perf.finish().map(window),
    };
    Ok((own, perf))
}

/// Opens `k` connections to `addr`, pings each once (8 bytes, checked), and returns the
/// resident memory of process `pid` before and after.
fn idle_memory(pid: u32, addr: SocketAddr, k: usize) -> Result<Idle, String> {
    let rss = || sys::vmrss_kb(pid).map_err(|e| format!("cannot read the server's VmRSS: {e}"));
    let before_kb = rss()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut socks = Vec::with_capacity(k);
    for i in 0..k {
        let ctx = |e: std::io::Error| {
            if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                format!("too many open files at idle connection {} of {k}: use fewer --idle-conns", i + 1)
            } else {
                format!("idle connection {} of {k}: {e}", i + 1)
            }
        };
        let mut s = connect_retry(addr, deadline).map_err(ctx)?;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).map_err(ctx)?;
        let msg = (i as u64 | 0xEC40_0000_0000_0000).to_le_bytes();
        let mut back = [0u8; 8];
        s.write_all(&msg).map_err(ctx)?;
        s.read_exact(&mut back).map_err(ctx)?;
        if back != msg {
            return Err(format!("idle connection {} of {k}: the echo differs", i + 1));
        }
        socks.push(s);
    }
    let after_kb = rss()?;
    drop(socks);
    Ok(Idle { conns: k, before_kb, after_kb })
}
