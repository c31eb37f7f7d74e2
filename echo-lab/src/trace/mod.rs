//! `echo-lab trace`: one connection, a few short messages, and what the runtime did for each,
//! step by step, in the runtime's own words (its `trace` feature).
//!
//! The server runs `echo::handle` on the chosen runtime in this process; the client is a plain
//! blocking socket on another thread, so that only the server's steps are recorded. After each
//! message comes back, the client waits a moment, so that the server finishes its turn and
//! goes back to waiting, and the steps recorded meanwhile are printed.
//!
//! `--svg FILE` traces every design, each in a child process of its own, which reads its steps
//! into the rows of its sequence diagram and hands them over as JSON; this process draws the
//! diagrams side by side ([`seqdiag`]).
//!
//! `--chrome-trace FILE` records a short loaded run instead (`--conns` connections
//! ping-ponging for `--secs` seconds, with the load generator of `echo-lab bench`), at most
//! `--max-steps` steps of it, as a timeline that Perfetto and chrome://tracing open
//! ([`timeline`]).
//!
//! - [`record`](mod@record): one traced run, as phases (what the client did, and the server's steps);
//! - [`seqdiag`]: those phases drawn as sequence diagrams;
//! - [`timeline`]: the steps of a loaded run as a Chrome trace;
//! - [`events`]: what the two drawings share to read the steps: each downcast to its crate's
//!   enum, whose variants they match on (a step's sentence is only ever shown).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use echo::models::Model;
use echo::server::RuntimeKind;
use executor::trace::{self as recorder, Step};
use serde_json::{json, Value};

use self::record::{record, Client, Phase};
use self::seqdiag::row::Row;
pub use self::traced::Traced;
use crate::load::options::{positive, Edge, Mode, Options};
use crate::load::pingpong;
use crate::report::round;

pub mod events;
pub mod record;
pub mod seqdiag;
#[cfg(test)]
mod test_steps;
pub mod timeline;
mod traced;

/// Options of `echo-lab trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The runtime to trace: reactor (epoll, readiness), uring (io_uring, completion), aio
    /// (POSIX aio, completion made of threads; aio-thread, aio-signal, aio-suspend for each of
    /// its notifications), proactor-epoll (completion emulated on epoll), or one of the classic
    /// models that record their steps: select, aio-poll.
    #[arg(long, default_value = "reactor")]
    pub runtime: Traced,
    /// How many messages to echo.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub messages: u32,
    /// Print the steps as one JSON object (phases, each with its steps) instead of text.
    #[arg(long, conflicts_with_all = ["svg", "chrome_trace"])]
    pub json: bool,
    /// For --svg, which runs this in a child process per design: print, as JSON, the rows of
    /// the sequence diagram of the connection and its first echo, read from the steps.
    #[arg(long, hide = true, conflicts_with_all = ["json", "svg", "chrome_trace"])]
    pub diagram_rows: bool,
    /// Trace every design of --designs (--runtime is ignored), each in a child process, and
    /// draw the connection and its first echo as sequence diagrams side by side in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "chrome_trace")]
    pub svg: Option<PathBuf>,
    /// With --svg: the designs to draw, comma-separated, one column each (any --runtime).
    #[arg(long, value_delimiter = ',', default_value = "reactor,uring,aio", requires = "svg")]
    pub designs: Vec<Traced>,
    /// Record a short loaded run on --runtime (--conns connections ping-ponging for --secs
    /// seconds) and write it to FILE as a timeline in Chrome's trace-event JSON, which
    /// Perfetto (ui.perfetto.dev) and chrome://tracing open.
    #[arg(long, value_name = "FILE")]
    pub chrome_trace: Option<PathBuf>,
    /// With --chrome-trace: connections, each with one 64-byte message in flight.
    #[arg(long, default_value_t = 4, requires = "chrome_trace",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub conns: u32,
    /// With --chrome-trace: how long the load runs, seconds (after 0.1 s of warm-up); the
    /// recording covers its start, until --max-steps steps are held.
    #[arg(long, default_value_t = 1.0, requires = "chrome_trace", value_parser = positive)]
    pub secs: f64,
    /// With --chrome-trace: stop recording after this many steps (a loaded runtime takes
    /// hundreds of thousands a second, and every one becomes an event in FILE).
    #[arg(long, default_value_t = 20_000, requires = "chrome_trace",
          value_parser = clap::value_parser!(u64).range(100..=2_000_000))]
    pub max_steps: u64,
}

/// What each runtime's design is, in one line, for the header.
pub fn design(kind: Traced) -> &'static str {
    let kind = match kind {
        Traced::Runtime(kind) => kind,
        Traced::Model(Model::Select) => {
            return "readiness with select(2): the loop rebuilds two fd bitmaps, sleeps in select, then tests every connection's bit and reads and writes itself";
        }
        Traced::Model(_) => {
            return "readiness through Linux AIO: one-shot IOCB_CMD_POLL requests, io_getevents reports the ready fds, the loop reads and writes itself and arms them again";
        }
    };
    match kind {
        RuntimeKind::Reactor => {
            "readiness: epoll says which socket is ready, then the runtime makes the read and write syscalls itself"
        }
        RuntimeKind::Uring => {
            "completion: the runtime queues whole operations (SQEs), the kernel performs them and posts results (CQEs)"
        }
        RuntimeKind::Aio(proactor::AioNotify::Thread) => {
            "completion on POSIX aio: glibc's helper threads perform each operation with a blocking syscall, \
             and a new glibc thread reports each completion"
        }
        RuntimeKind::Aio(proactor::AioNotify::Signal) => {
            "completion on POSIX aio: glibc's helper threads perform each operation with a blocking syscall, \
             and a realtime signal, read from a signalfd, reports each completion"
        }
        RuntimeKind::Aio(proactor::AioNotify::Suspend) => {
            "completion on POSIX aio: glibc's helper threads perform each operation with a blocking syscall, \
             and the loop sleeps in aio_suspend on all its requests"
        }
        RuntimeKind::ProactorEpoll => {
            "completion emulated on readiness: the driver queues each operation, waits with epoll, performs the syscall itself and posts the completion"
        }
    }
}

fn print_steps(steps: &[Step]) {
    if steps.is_empty() {
        println!("   (nothing)");
    }
    for (i, step) in steps.iter().enumerate() {
        println!("{:>4}. {step}", i + 1);
    }
}

pub fn run(a: &TraceArgs) -> Result<(), String> {
    if a.runtime == Traced::Runtime(RuntimeKind::Aio(proactor::AioNotify::Signal)) {
        // The server runs in this process: block its signal before any thread starts.
        proactor::AioNotify::block_signal().map_err(|e| format!("cannot block the aio signal: {e}"))?;
    }
    if let Some(path) = &a.svg {
        return draw(path, &a.designs);
    }
    if let Some(path) = &a.chrome_trace {
        return chrome_trace(a, path);
    }
    let kind = a.runtime;
    let (startup, phases) = record(kind, a.messages)?;
    if a.diagram_rows {
        let steps: usize = phases.iter().map(|p| p.steps.len()).sum();
        // The connection, and its first echo.
        let shown: Vec<Phase> =
            phases.into_iter().filter(|p| !matches!(p.client, Client::Closes)).take(2).collect();
        let rows: Vec<Value> = seqdiag::read::rows(kind, &shown).iter().map(Row::to_json).collect();
        println!("{}", json!({ "runtime": kind.name(), "steps": steps, "rows": rows }));
        return Ok(());
    }
    if a.json {
        let phases: Vec<Value> = phases.iter().map(Phase::to_json).collect();
        let doc = json!({ "runtime": kind.name(), "startup_steps": startup, "phases": phases });
        println!("{doc}");
        return Ok(());
    }
    println!("echo-lab trace: {kind} ({})", design(kind));
    match kind {
        Traced::Runtime(_) => println!(
            "server: echo::handle on {kind}, in this process; client: a blocking socket on another thread\n"
        ),
        Traced::Model(_) => println!(
            "server: the {kind} model's echo loop, in this process; client: a blocking socket on another thread\n"
        ),
    }
    println!(
        "── the server starts: {startup} steps (runtime set-up and the first wait for a connection), not shown",
    );
    for phase in &phases {
        println!("\n── {} ──", phase.title);
        print_steps(&phase.steps);
    }
    Ok(())
}

/// Traces one design in a child process (`trace --diagram-rows`): how many steps it took, and
/// the rows of its diagram, or why not.
fn trace_child(kind: Traced) -> Result<(usize, Vec<Row>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let out = Command::new(exe)
        .args(["trace", "--runtime", kind.name(), "--messages", "1", "--diagram-rows"])
        .output()
        .map_err(|e| format!("cannot run the {kind} trace: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.trim().trim_start_matches("echo-lab: ").to_string());
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("the {kind} trace: {e}"))?;
    let rows = v["rows"].as_array().and_then(|rows| rows.iter().map(Row::from_json).collect());
    match (v["steps"].as_u64(), rows) {
        (Some(steps), Some(rows)) => Ok((steps as usize, rows)),
        _ => Err(format!("the {kind} trace has no diagram")),
    }
}

/// `echo-lab trace --svg FILE`.
fn draw(path: &PathBuf, designs: &[Traced]) -> Result<(), String> {
    let mut diagrams = Vec::new();
    for &kind in designs {
        let traced = trace_child(kind);
        match &traced {
            Ok((steps, _)) => eprintln!("  {kind}: {steps} steps"),
            Err(why) => eprintln!("  {kind}: could not trace: {why}"),
        }
        diagrams.push(seqdiag::draw::Diagram::new(kind, traced.map(|(_, rows)| rows)));
    }
    if diagrams.iter().all(|d| d.failed().is_some()) {
        return Err("no design could be traced".into());
    }
    std::fs::write(path, seqdiag::draw::svg(&diagrams))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `echo-lab trace --chrome-trace FILE`.
fn chrome_trace(a: &TraceArgs, path: &Path) -> Result<(), String> {
    let kind = a.runtime;
    let max = a.max_steps as usize;
    let addr: SocketAddr = kind.spawn().map_err(|e| format!("cannot start the {kind} server: {e}"))?;
    let opts = Options {
        mode: Mode::Pingpong,
        addr,
        conns: a.conns as usize,
        size: 64,
        secs: a.secs,
        warmup: 0.1,
        connect_timeout: 10.0,
        progress: false,
    };
    // Record from the start of the measured window (connections up, traffic flowing) until
    // its end or `max` steps, whichever comes first.
    let report = pingpong::run(&opts, &mut |edge| match edge {
        Edge::Start => {
            recorder::take(); // nothing, unless something recorded before
            recorder::start_at_most(max);
        }
        Edge::End => recorder::stop(),
    })?;
    let steps = recorder::take();
    if report.mismatches > 0 {
        return Err(format!("{} echoes differed from what was sent", report.mismatches));
    }
    if steps.is_empty() {
        return Err(format!("the {kind} server recorded no step under load"));
    }
    let first = steps.iter().map(|s| s.at).min().expect("steps");
    let last = steps.iter().map(|s| s.at).max().expect("steps");
    let span_ms = last.duration_since(first).as_secs_f64() * 1e3;
    let capped = steps.len() >= max;
    let process = format!("echo-lab: echo server on {kind}, {} connections ping-ponging", a.conns);
    let other = json!({
        "runtime": kind.name(),
        "design": design(kind),
        "conns": a.conns,
        "message_bytes": 64,
        "secs": a.secs,
        "steps": steps.len(),
        "max_steps": max,
        "capped": capped,
        "recorded_ms": round(span_ms, 3),
        "echoes_per_sec": round(report.msgs_per_sec(), 1),
    });
    let (doc, counts) = timeline::chrome_trace(&steps, &process, other);
    let text = serde_json::to_string(&doc).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;

    println!("echo-lab trace: {kind} under load ({})", design(kind));
    println!(
        "load: {} connections ping-ponging 64-byte messages for {} s, {:.0} echoes/s \
         (slower while recording: every step is stored, with its time and thread, behind a lock)",
        a.conns,
        a.secs,
        report.msgs_per_sec()
    );
    if capped {
        println!(
            "recorded {} steps, the first {span_ms:.1} ms of the run: the limit (--max-steps {max}) was \
             reached, and the rest of the run was not recorded",
            steps.len(),
        );
    } else {
        println!(
            "recorded {} steps over {span_ms:.1} ms: the whole run (below --max-steps {max})",
            steps.len()
        );
    }
    println!(
        "wrote {}: {} events ({} loop turns, {} waits, {} task polls)",
        path.display(),
        counts.events,
        counts.turns,
        counts.waits,
        counts.polls
    );
    println!("open it in Perfetto (ui.perfetto.dev → Open trace file) or chrome://tracing (Load)");
    Ok(())
}
