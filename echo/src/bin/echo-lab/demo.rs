//! `echo-lab demo`: every runtime and the tokio baseline, served and loaded in turn, in one
//! comparison table.
//!
//! Each server runs as a child process (`echo-lab serve`, on an ephemeral loopback port),
//! pinned to CPU 0 with `taskset` when the machine has two CPUs or more; the load runs in this
//! process on a thread pinned to CPU 1. The server's CPU time (user + system, from the process
//! CPU clock or `/proc/PID/stat`) is sampled at the edges of the measured window and divided
//! by the round trips completed in it: CPU µs per echo, the figure the runtimes compete on.
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

use crate::bench::{self, round, Edge, Mode, Options, Report};
use crate::perf::Perf;
use crate::serve::Server;
use crate::{svg, sys};

/// Options of `echo-lab demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Length of each measured window, seconds.
    #[arg(long, default_value_t = 3.0, value_parser = bench::positive)]
    pub secs: f64,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 0.5, value_parser = bench::non_negative)]
    pub warmup: f64,
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub conns: u32,
    /// Message size, bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub size: u32,
    /// Idle connections opened (and pinged once each) per runtime to measure the server's
    /// memory per connection; 0 skips the measurement.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub idle_conns: u32,
    /// Length of the separate window in which the server's syscalls are counted with
    /// `perf stat`, seconds; 0 skips the measurement.
    #[arg(long, default_value_t = 1.0, value_parser = bench::non_negative)]
    pub syscall_secs: f64,
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

/// One server's measurements.
struct Row {
    server: Server,
    report: Report,
    /// Server CPU time over the window, seconds.
    cpu_s: f64,
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

impl Row {
    fn cpu_us_per_echo(&self) -> f64 {
        if self.report.msgs == 0 {
            f64::NAN
        } else {
            self.cpu_s * 1e6 / self.report.msgs as f64
        }
    }

    /// The runtime's own count; for tokio, which has none, perf's.
    fn syscalls_shown(&self) -> Result<&Syscalls, &String> {
        match (&self.syscalls, &self.perf) {
            (Ok(own), _) => Ok(own),
            (Err(_), Ok(perf)) if self.server == Server::Tokio => Ok(perf),
            (Err(why), _) => Err(why),
        }
    }

    fn syscalls_per_echo(&self) -> f64 {
        self.syscalls_shown().map_or(f64::NAN, Syscalls::per_echo)
    }

    fn syscalls_source(&self) -> Option<&'static str> {
        match (&self.syscalls, self.syscalls_shown()) {
            (Ok(_), _) => Some("runtime counters"),
            (Err(_), Ok(_)) => Some("perf"),
            _ => None,
        }
    }

    fn idle_bytes_per_conn(&self) -> f64 {
        self.idle.as_ref().map_or(f64::NAN, Idle::bytes_per_conn)
    }
}

/// What `measure` does besides the CPU window.
struct Extras {
    /// Length of the syscall window, seconds (0: none).
    syscall_secs: f64,
    /// Idle connections to open (0: none).
    idle_conns: usize,
    /// Set once perf has failed: why. Later runtimes do not try again.
    perf_broken: Option<String>,
}

/// `echo-lab demo`.
pub fn run(a: &DemoArgs) -> Result<(), String> {
    sys::raise_nofile();
    let pinned = sys::cpus() >= 2 && taskset_works();
    let opts = |addr| Options {
        mode: Mode::Pingpong,
        addr,
        conns: a.conns as usize,
        size: a.size as usize,
        secs: a.secs,
        warmup: a.warmup,
        connect_timeout: 10.0,
        progress: false,
    };
    let mut extras = Extras {
        syscall_secs: a.syscall_secs,
        idle_conns: a.idle_conns as usize,
        perf_broken: (a.syscall_secs == 0.0).then(|| "skipped (--syscall-secs 0)".to_string()),
    };
    eprintln!(
        "echo-lab demo: {} conns, {} B messages, {} s per runtime{}",
        a.conns,
        a.size,
        a.secs,
        if pinned { "; servers on CPU 0, load on CPU 1" } else { "; not pinned (needs 2 CPUs and taskset)" }
    );

    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for server in Server::ALL {
        let aio_threads = a.conns.saturating_add(a.idle_conns).saturating_add(64);
        let (guard, addr) = match start_server(server, pinned, aio_threads) {
            Ok(started) => started,
            Err(e) => {
                eprintln!("echo-lab demo: skipping {server}: {e}");
                skipped.push((server, e));
                continue;
            }
        };
        let row = measure(server, guard, opts(addr), pinned, &mut extras)?;
        eprintln!("  {server}: {:.0} msgs/s", row.report.msgs_per_sec());
        rows.push(row);
    }
    if rows.is_empty() {
        return Err("no server could be started".into());
    }

    let tokio_cpu = rows.iter().find(|r| r.server == Server::Tokio).map(Row::cpu_us_per_echo);
    let ratio = |r: &Row| tokio_cpu.map_or(f64::NAN, |t| r.cpu_us_per_echo() / t);
    print_table(&rows, &ratio);
    let syscall_note = extras.perf_broken.clone();
    let idle_note = rows.iter().find_map(|r| r.idle.as_ref().err().cloned());

    let out = a.out.clone().unwrap_or_else(default_out_dir);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let results: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "runtime": r.server.name(),
                "msgs_per_sec": round(r.report.msgs_per_sec(), 1),
                "p50_us": round(r.report.latency_us(0.5), 2),
                "p99_us": round(r.report.latency_us(0.99), 2),
                "p999_us": round(r.report.latency_us(0.999), 2),
                "server_cpu_s": round(r.cpu_s, 6),
                "cpu_us_per_echo": finite(round(r.cpu_us_per_echo(), 3)),
                "cpu_ratio_to_tokio": finite(round(ratio(r), 3)),
                "syscalls_per_echo": finite(round(r.syscalls_per_echo(), 3)),
                "syscalls_source": r.syscalls_source(),
                "syscalls": r.syscalls_shown().ok().map(|s| s.count),
                "syscall_window_echoes": r.syscalls_shown().ok().map(|s| s.echoes),
                "syscall_window_s": r.syscalls_shown().ok().map(|s| round(s.window_s, 6)),
                "syscalls_error": r.syscalls_shown().err(),
                "perf_syscalls_per_echo": finite(round(r.perf.as_ref().map_or(f64::NAN, Syscalls::per_echo), 3)),
                "perf_syscalls": r.perf.as_ref().ok().map(|s| s.count),
                "perf_error": r.perf.as_ref().err(),
                "idle_conns": r.idle.as_ref().ok().map(|i| i.conns),
                "idle_rss_before_kb": r.idle.as_ref().ok().map(|i| i.before_kb),
                "idle_rss_after_kb": r.idle.as_ref().ok().map(|i| i.after_kb),
                "idle_bytes_per_conn": finite(round(r.idle_bytes_per_conn(), 1)),
                "idle_error": r.idle.as_ref().err(),
                "msgs": r.report.msgs,
                "errors": r.report.errors,
                "mismatches": r.report.mismatches,
            })
        })
        .collect();
    let doc = json!({
        "conns": a.conns,
        "size": a.size,
        "secs": a.secs,
        "warmup": a.warmup,
        "idle_conns": a.idle_conns,
        "syscall_secs": a.syscall_secs,
        "syscalls_note": syscall_note,
        "idle_note": idle_note,
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
    let bars = |f: &dyn Fn(&Row) -> f64| -> Vec<(String, f64)> {
        rows.iter().map(|r| (r.server.name().to_string(), f(r))).collect()
    };
    let panels = [
        svg::Panel {
            title: "Server CPU per echo".into(),
            unit: "µs".into(),
            decimals: 2,
            bars: bars(&Row::cpu_us_per_echo),
        },
        svg::Panel {
            title: "Server syscalls per echo".into(),
            unit: "".into(),
            decimals: 2,
            bars: bars(&Row::syscalls_per_echo),
        },
        svg::Panel {
            title: format!("Server memory per idle connection ({} conns)", a.idle_conns),
            unit: "B".into(),
            decimals: 0,
            bars: bars(&Row::idle_bytes_per_conn),
        },
    ];
    let title = format!("echo-lab demo: {} conns, {} B messages (lower is better)", a.conns, a.size);
    std::fs::write(&svg_path, svg::panels(&title, &panels))
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());

    let bad: u64 = rows.iter().map(|r| r.report.mismatches).sum();
    if bad > 0 {
        return Err(format!("{bad} echoes differed from what was sent"));
    }
    Ok(())
}

/// `null` in JSON for a value that could not be computed.
fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn print_table(rows: &[Row], ratio: &dyn Fn(&Row) -> f64) {
    println!();
    println!(
        "{:<10} {:>12} {:>10} {:>18} {:>10} {:>14} {:>12}",
        "runtime", "msgs/s", "p99 µs", "server CPU µs/echo", "vs tokio", "syscalls/echo", "idle B/conn"
    );
    for r in rows {
        let opt = |x: f64, prec: usize| if x.is_finite() { format!("{x:.prec$}") } else { "n/a".into() };
        println!(
            "{:<10} {:>12.0} {:>10.1} {:>18} {:>10} {:>14} {:>12}",
            r.server.name(),
            r.report.msgs_per_sec(),
            r.report.latency_us(0.99),
            opt(r.cpu_us_per_echo(), 2),
            opt(ratio(r), 2).to_string() + if ratio(r).is_finite() { "×" } else { "" },
            opt(r.syscalls_per_echo(), 2),
            opt(r.idle_bytes_per_conn(), 0),
        );
    }
    let (errors, mismatches) =
        rows.iter().fold((0, 0), |(e, m), r| (e + r.report.errors, m + r.report.mismatches));
    println!("(every echo verified: {errors} errors, {mismatches} mismatches)");
    println!("(syscalls/echo: each runtime's own counters, on the thread that runs it; tokio, which has none: perf)");
    let cross: Vec<String> = rows
        .iter()
        .filter(|r| r.syscalls.is_ok())
        .map(|r| match &r.perf {
            Ok(perf) => format!("{} {:.2}", r.server.name(), perf.per_echo()),
            Err(_) => format!("{} n/a", r.server.name()),
        })
        .collect();
    if !cross.is_empty() {
        println!("(perf stat, same windows: {})", cross.join(", "));
    }
    for r in rows {
        if let Err(why) = r.syscalls_shown() {
            println!("({} syscalls/echo n/a: {why})", r.server.name());
        }
    }
    if let Some(why) = rows.iter().find_map(|r| r.idle.as_ref().err()) {
        println!("(idle B/conn n/a: {why})");
    }
    println!();
}

/// `$CARGO_TARGET_DIR/echo-lab`, else the `target` directory the executable is in, else
/// `./target/echo-lab`.
pub(crate) fn default_out_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("echo-lab");
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors().find(|p| p.file_name().is_some_and(|n| n == "target")).map(PathBuf::from)
    });
    from_exe.unwrap_or_else(|| PathBuf::from("target")).join("echo-lab")
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

    // Read the `listening on ADDR (runtime NAME)` line, or the error, in bounded time.
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
) -> Result<Row, String> {
    let pid = guard.0.id();
    let addr = opts.addr;
    let load_opts = opts.clone();
    let (report, cpu_s) = on_load_cpu(pinned, move || {
        let (mut start, mut end) = (None, None);
        let report = bench::pingpong(&load_opts, &mut |edge| {
            let cpu = sys::process_cpu_s(pid).ok();
            match edge {
                Edge::Start => start = cpu,
                Edge::End => end = cpu,
            }
        })?;
        let cpu_s = match (start, end) {
            (Some(s), Some(e)) => e - s,
            _ => f64::NAN,
        };
        Ok::<_, String>((report, cpu_s))
    })??;
    let alive = |guard: &mut ChildGuard| match guard.0.try_wait() {
        Ok(Some(status)) => Err(format!("the {server} server exited during the run ({status})")),
        _ => Ok(()),
    };
    alive(&mut guard)?;

    let own_counters = match server {
        Server::Tokio | Server::Model(_) => Err(format!("{server} has no counters here")),
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
    } else if let (Err(why), true) = (&own_counters, server != Server::Tokio) {
        (Err(why.clone()), Err("not counted".to_string()))
    } else {
        let window = Options { secs: extras.syscall_secs, warmup: opts.warmup.clamp(0.3, 0.5), ..opts };
        let use_perf = extras.perf_broken.is_none();
        let (own, perf) = count_syscalls(pid, window, pinned, own_counters, use_perf)?;
        if let Err(why) = &perf {
            if use_perf {
                eprintln!("echo-lab demo: no perf cross-check: {why}");
                extras.perf_broken = Some(why.clone());
            }
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
    Ok(Row { server, report, cpu_s, syscalls, perf, idle })
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
        let report = bench::pingpong(&opts, &mut |edge| {
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
        let mut s = bench::connect_retry(addr, deadline).map_err(ctx)?;
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
