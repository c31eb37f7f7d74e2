//! `echo-lab lab`: every I/O model of the seed document, the three runtimes and the tokio
//! baseline, under the same loads, measured side by side.
//!
//! Cells: ping-pong with 1, 100 and 1,000 connections (long connections); 1,000 idle
//! connections held open while 10 others ping-pong (where a readiness API's cost per idle
//! connection shows); and short connections (connect, echo, close, 16 clients). For each model and cell a fresh server process is
//! started, pinned to CPU 0, and loaded from CPU 1; at the edges of the measured window the lab
//! samples the server's CPU time (its children's too, for `fork`), its syscalls (the runtimes'
//! own counters for reactor and uring, `perf stat` attached to the process for the others), and
//! at the end of the window its memory (PSS of the process and its children, against the same
//! server before any connection) and its threads and processes. A cell that a model cannot do
//! ends with the reason, within a bounded time.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use crate::harness::child::start_server;
use crate::harness::perf::Perf;
use crate::harness::pin::{on_load_cpu, taskset_works};
use crate::harness::sample::{
    counter_snapshot, end_children, threads_of, tree, tree_cpu_s, tree_pss_kb, tree_user_s,
};
use crate::load::net::connect_retry;
use crate::load::options::{non_negative, positive, Edge, Mode, Options};
use crate::load::pingpong;
use crate::load::report::Report;
use crate::report::{default_out_dir, finite, num, round, svg};
use crate::server::Server;
use crate::sys;

/// Options of `echo-lab lab`.
#[derive(Args, Debug)]
pub struct LabArgs {
    /// Models to run, comma-separated (default: all): reactor, uring, aio, proactor-epoll, tokio,
    /// mio, threads, fork, nonblocking, select, poll, sigio, aio-poll.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<Server>,
    /// Cells to run, comma-separated (default: all): pingpong-1, pingpong-100,
    /// pingpong-1000, idle1000-pingpong10, shortconn.
    #[arg(long, value_delimiter = ',')]
    pub cells: Vec<Cell>,
    /// Length of each measured window, seconds.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub secs: f64,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 0.3, value_parser = non_negative)]
    pub warmup: f64,
    /// Message size, bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub size: u32,
    /// Where to write lab.json, lab.md and lab.svg (default: target/echo-lab).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One load of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Long connections: this many, each with one message in flight.
    Pingpong(usize),
    /// `idle` connections held open, silent, while `busy` others ping-pong.
    Mixed { idle: usize, busy: usize },
    /// Short connections: 16 clients, each connecting, echoing once and closing, over and over.
    Shortconn,
}

impl Cell {
    const ALL: [Cell; 5] = [
        Cell::Pingpong(1),
        Cell::Pingpong(100),
        Cell::Pingpong(1000),
        Cell::Mixed { idle: 1000, busy: 10 },
        Cell::Shortconn,
    ];

    fn name(self) -> String {
        match self {
            Cell::Pingpong(n) => format!("pingpong-{n}"),
            Cell::Mixed { idle, busy } => format!("idle{idle}-pingpong{busy}"),
            Cell::Shortconn => "shortconn".to_string(),
        }
    }

    /// Connections the load generator drives.
    fn conns(self) -> usize {
        match self {
            Cell::Pingpong(n) => n,
            Cell::Mixed { busy, .. } => busy,
            Cell::Shortconn => 16,
        }
    }

    /// Connections held open without a word.
    fn idle(self) -> usize {
        match self {
            Cell::Mixed { idle, .. } => idle,
            _ => 0,
        }
    }
}

impl std::str::FromStr for Cell {
    type Err = String;

    fn from_str(s: &str) -> Result<Cell, String> {
        Cell::ALL.into_iter().find(|c| c.name() == s).ok_or_else(|| {
            format!(
                "unknown cell {s:?} (expected one of: pingpong-1, pingpong-100, pingpong-1000, \
                 idle1000-pingpong10, shortconn)"
            )
        })
    }
}

/// What one model did in one cell.
struct Outcome {
    server: Server,
    cell: Cell,
    result: Result<Measured, String>,
}

struct Measured {
    report: Report,
    cpu_s: f64,
    /// The user-mode part of `cpu_s` (`/proc/PID/stat`, clock ticks): the server's own work,
    /// as opposed to the kernel's.
    user_s: f64,
    /// Syscalls in the window, and who counted them.
    syscalls: Result<(u64, &'static str), String>,
    /// PSS of the server and its children before any connection and at the window's end, KiB.
    pss_kb: (u64, u64),
    threads: u64,
    processes: u64,
}

impl Measured {
    fn per_msg(&self, x: f64) -> f64 {
        if self.report.msgs == 0 {
            f64::NAN
        } else {
            x / self.report.msgs as f64
        }
    }

    fn cpu_us_per_msg(&self) -> f64 {
        self.per_msg(self.cpu_s * 1e6)
    }

    fn user_us_per_msg(&self) -> f64 {
        self.per_msg(self.user_s * 1e6)
    }

    fn syscalls_per_msg(&self) -> f64 {
        self.syscalls.as_ref().map_or(f64::NAN, |(n, _)| self.per_msg(*n as f64))
    }

    /// Memory per connection, bytes: long connections only, and from 100 of them (one
    /// connection's memory is lost in the noise of a process that has just started).
    /// Connections that got at least one echo in the window (the others waited, unaccepted
    /// or unserved, the whole time).
    fn served(&self) -> usize {
        self.report.opts.conns - self.report.stalled
    }

    /// Memory per connection served (idle ones included), bytes.
    fn bytes_per_conn(&self, cell: Cell) -> f64 {
        let grown = (self.pss_kb.1 as f64 - self.pss_kb.0 as f64) * 1024.0;
        match cell {
            Cell::Pingpong(n) if n >= 100 => grown / self.served().max(1) as f64,
            Cell::Mixed { idle, .. } => grown / (idle + self.served()).max(1) as f64,
            _ => f64::NAN,
        }
    }
}

/// Opens `n` connections to `addr` that each echo one byte, then stay open and silent.
fn open_idle(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpStream>, String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    (0..n)
        .map(|i| {
            let why = |e: std::io::Error| format!("idle connection {} of {n}: {e}", i + 1);
            let mut s = connect_retry(addr, deadline).map_err(why)?;
            s.set_read_timeout(Some(Duration::from_secs(10))).map_err(why)?;
            let mut back = [0u8; 1];
            s.write_all(b"i").and_then(|()| s.read_exact(&mut back)).map_err(why)?;
            Ok(s)
        })
        .collect()
}

/// Runs one cell against a fresh server.
fn run_cell(server: Server, cell: Cell, a: &LabArgs, pinned: bool) -> Result<Measured, String> {
    let aio_threads = (cell.conns() + cell.idle() + 64) as u32;
    let (mut process, addr) = start_server(server, pinned, aio_threads)?;
    let pid = process.0.id();
    let own_counters = matches!(
        server.kind(),
        Some(
            echo::server::RuntimeKind::Reactor
                | echo::server::RuntimeKind::Uring
                | echo::server::RuntimeKind::ProactorEpoll
        )
    );
    std::thread::sleep(Duration::from_millis(100));
    let pss_before = tree_pss_kb(pid);
    // The idle connections: each echoes one byte (so the server has accepted it and waits on
    // it), then stays silent until the cell ends.
    let idle = open_idle(addr, cell.idle())?;
    let perf = if own_counters { Err("runtime counters used".to_string()) } else { Perf::start(pid) };
    let opts = Options {
        mode: match cell {
            Cell::Pingpong(_) | Cell::Mixed { .. } => Mode::Pingpong,
            Cell::Shortconn => Mode::Shortconn,
        },
        addr,
        conns: cell.conns(),
        size: a.size as usize,
        secs: a.secs,
        warmup: a.warmup,
        connect_timeout: 10.0,
        progress: false,
    };
    let counts = process.1.take().expect("the counts channel");
    let (report, edges, perf) = on_load_cpu(pinned, move || {
        let mut perf = perf;
        let mut edges: Vec<((f64, f64), Result<u64, String>)> = Vec::new();
        let mut at_end = (0, 0, 0);
        let report = pingpong::run(&opts, &mut |edge| {
            let own = if own_counters { counter_snapshot(pid, &counts) } else { Ok(0) };
            if let Ok(perf) = &mut perf {
                let _ = if edge == Edge::Start { perf.enable() } else { perf.disable() };
            }
            edges.push(((tree_cpu_s(pid), tree_user_s(pid)), own));
            if edge == Edge::End {
                at_end = (tree_pss_kb(pid), threads_of(pid), tree(pid).len() as u64);
            }
        });
        (report, (edges, at_end), perf)
    })?;
    let report = report?;
    let (edges, (pss_after, threads, processes)) = edges;
    if report.mismatches > 0 {
        return Err(format!("{} echoes differed from what was sent", report.mismatches));
    }
    drop(idle);
    let [((cpu0, user0), own0), ((cpu1, user1), own1)] =
        <[_; 2]>::try_from(edges).map_err(|_| "the window did not complete".to_string())?;
    let syscalls = if own_counters {
        match (own0, own1) {
            (Ok(a), Ok(b)) => Ok((b.saturating_sub(a), "runtime")),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    } else {
        // The children first (the `fork` model's), so that they are not orphaned mid-write.
        end_children(pid);
        drop(process);
        let counted = perf.and_then(Perf::finish).map(|n| (n, "perf"));
        if server == Server::Model(echo::models::Model::Fork) {
            // perf attached to a running process counted between none and a third of the
            // syscalls of the children forked after it attached (it adds a child's count when
            // the child exits, and here that raced with perf's own end): not shown.
            counted.and(Err("not counted: perf, attached to the running server, misses the syscalls of \
                 children it forks"
                .to_string()))
        } else {
            counted
        }
    };
    Ok(Measured {
        report,
        cpu_s: cpu1 - cpu0,
        user_s: user1 - user0,
        syscalls,
        pss_kb: (pss_before, pss_after),
        threads,
        processes,
    })
}

const COLUMNS: [&str; 11] = [
    "cell",
    "model",
    "served",
    "msgs/s",
    "p99 µs",
    "CPU µs/msg",
    "user µs/msg",
    "KB/conn",
    "syscalls/msg",
    "threads",
    "procs",
];

fn cells_of(o: &Outcome) -> Vec<String> {
    match &o.result {
        Ok(m) => vec![
            o.cell.name(),
            o.server.name().to_string(),
            match o.cell {
                Cell::Shortconn => "-".to_string(),
                _ => format!("{}/{}", m.served(), m.report.opts.conns),
            },
            format!("{:.0}", m.report.msgs_per_sec()),
            format!("{:.0}", m.report.latency_us(0.99)),
            num(m.cpu_us_per_msg(), 1),
            num(m.user_us_per_msg(), 2),
            num(m.bytes_per_conn(o.cell) / 1024.0, 1),
            num(m.syscalls_per_msg(), 2),
            m.threads.to_string(),
            m.processes.to_string(),
        ],
        Err(why) => vec![o.cell.name(), o.server.name().to_string(), format!("could not run: {why}")],
    }
}

fn print_table(outcomes: &[Outcome]) {
    println!();
    println!(
        "{:<20} {:<12} {:>9} {:>9} {:>9} {:>11} {:>12} {:>8} {:>13} {:>8} {:>6}",
        COLUMNS[0],
        COLUMNS[1],
        COLUMNS[2],
        COLUMNS[3],
        COLUMNS[4],
        COLUMNS[5],
        COLUMNS[6],
        COLUMNS[7],
        COLUMNS[8],
        COLUMNS[9],
        COLUMNS[10]
    );
    for o in outcomes {
        let c = cells_of(o);
        if c.len() == 3 {
            println!("{:<20} {:<12} {}", c[0], c[1], c[2]);
        } else {
            println!(
                "{:<20} {:<12} {:>9} {:>9} {:>9} {:>11} {:>12} {:>8} {:>13} {:>8} {:>6}",
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
            );
        }
    }
    println!(
        "(served: connections that got an echo in the window; msgs/s: echoes per second, or connections per \
         second for shortconn; CPU µs/msg: the server's user + system time per message, user µs/msg its \
         user-mode part (the runtime's own work; the rest is the kernel's); syscalls: the runtimes' own counters for reactor and uring, perf for the \
         others; KB/conn: the server's PSS per connection served, children included)"
    );
    let mut said = Vec::new();
    for o in outcomes {
        if let Ok(Measured { syscalls: Err(why), .. }) = &o.result {
            if !said.contains(&o.server) {
                said.push(o.server);
                println!("({} syscalls/msg n/a: {why})", o.server.name());
            }
        }
    }
}

fn markdown(outcomes: &[Outcome]) -> String {
    let mut md = format!("| {} |\n|{}\n", COLUMNS.join(" | "), "---|".repeat(COLUMNS.len()));
    for o in outcomes {
        let mut c = cells_of(o);
        c.resize(COLUMNS.len(), String::new());
        md.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    md
}

fn to_json(o: &Outcome) -> Value {
    let base = json!({ "cell": o.cell.name(), "model": o.server.name() });
    match &o.result {
        Err(why) => json!({ "cell": o.cell.name(), "model": o.server.name(), "error": why }),
        Ok(m) => {
            let mut v = base;
            let f = |x: f64| finite(round(x, 3));
            v["msgs_per_sec"] = f(m.report.msgs_per_sec());
            v["p99_us"] = f(m.report.latency_us(0.99));
            v["msgs"] = json!(m.report.msgs);
            v["conns"] = json!(m.report.opts.conns);
            v["served"] = json!(m.served());
            v["idle_conns"] = json!(o.cell.idle());
            v["cpu_us_per_msg"] = f(m.cpu_us_per_msg());
            v["user_us_per_msg"] = f(m.user_us_per_msg());
            v["bytes_per_conn"] = f(m.bytes_per_conn(o.cell));
            v["pss_kb_before"] = json!(m.pss_kb.0);
            v["pss_kb_after"] = json!(m.pss_kb.1);
            v["syscalls_per_msg"] = f(m.syscalls_per_msg());
            v["syscalls_source"] = json!(m.syscalls.as_ref().ok().map(|s| s.1));
            v["syscalls_error"] = json!(m.syscalls.as_ref().err());
            v["threads"] = json!(m.threads);
            v["processes"] = json!(m.processes);
            v["errors"] = json!(m.report.errors);
            v["mismatches"] = json!(m.report.mismatches);
            v
        }
    }
}

/// `echo-lab lab`.
pub fn run(a: &LabArgs) -> Result<(), String> {
    sys::raise_nofile();
    let models = if a.models.is_empty() { Server::everything() } else { a.models.clone() };
    let cells = if a.cells.is_empty() { Cell::ALL.to_vec() } else { a.cells.clone() };
    let pinned = sys::cpus() >= 2 && taskset_works();
    eprintln!(
        "echo-lab lab: {} models × {} cells, {} s windows{}",
        models.len(),
        cells.len(),
        a.secs,
        if pinned { "; servers on CPU 0, load on CPU 1" } else { "" }
    );
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for &cell in &cells {
        for &server in &models {
            let result = run_cell(server, cell, a, pinned);
            match &result {
                Ok(m) => eprintln!(
                    "  {:<14} {:<12} {:>9.0} msgs/s",
                    cell.name(),
                    server.name(),
                    m.report.msgs_per_sec()
                ),
                Err(why) => eprintln!("  {:<20} {:<12} could not run: {why}", cell.name(), server.name()),
            }
            outcomes.push(Outcome { server, cell, result });
        }
    }
    print_table(&outcomes);
    let out = a.out.clone().unwrap_or_else(default_out_dir);
    fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let doc = json!({
        "secs": a.secs,
        "warmup": a.warmup,
        "size": a.size,
        "cpus": sys::cpus(),
        "pinned": pinned,
        "elapsed_s": round(started.elapsed().as_secs_f64(), 1),
        "results": outcomes.iter().map(to_json).collect::<Vec<_>>(),
    });
    let write = |name: &str, text: String| {
        let path = out.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    write("lab.json", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?)?;
    write("lab.md", markdown(&outcomes))?;
    let panels: Vec<svg::Panel> = cells
        .iter()
        .map(|&cell| svg::Panel {
            title: format!("{}: msgs/s", cell.name()),
            unit: "/s".into(),
            decimals: 0,
            bars: outcomes
                .iter()
                .filter(|o| o.cell == cell)
                .map(|o| {
                    svg::Bar::new(
                        o.server.name(),
                        o.result.as_ref().map_or(f64::NAN, |m| m.report.msgs_per_sec()),
                    )
                })
                .collect(),
        })
        .collect();
    write("lab.svg", svg::panels("echo-lab lab: the I/O models side by side", &panels))?;
    eprintln!("wrote {}/lab.{{json,md,svg}} in {:.0} s", out.display(), started.elapsed().as_secs_f64());
    Ok(())
}
