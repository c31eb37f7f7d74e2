//! Measuring one server in one round: the load on CPU 1 with the server's CPU time sampled at
//! the window's edges, then its syscalls over a second window (its own counters, and perf),
//! then its memory per idle connection.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::results::{counted_by_perf, Idle, Round, Syscalls};
use crate::harness::child::ChildGuard;
use crate::harness::perf::Perf;
use crate::harness::pin::on_load_cpu;
use crate::harness::sample::counter_snapshot;
use crate::load::net::connect_retry;
use crate::load::options::{Edge, Options};
use crate::load::report::Report;
use crate::load::{pingpong, udp};
use crate::server::Server;
use crate::sys;

/// What `measure` does besides the CPU window.
pub struct Extras {
    /// Length of the syscall window, seconds (0: none).
    pub syscall_secs: f64,
    /// Idle connections to open (0: none).
    pub idle_conns: usize,
    /// Set once perf has failed before it ever worked (not installed, not allowed): why.
    /// Later windows do not try again.
    pub perf_broken: Option<String>,
    /// Whether perf has counted a window: then a later failure is that window's alone.
    pub perf_worked: bool,
    /// `--udp`: the load is datagrams.
    pub udp: bool,
}

/// How long `--udp` waits for an echo before counting the datagram lost.
const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// One ping-pong window: TCP messages, or UDP datagrams if `udp` (losses are reported on
/// stderr; the report counts only echoes that came back).
pub fn pingpong(opts: &Options, udp: bool, on_edge: &mut dyn FnMut(Edge)) -> Result<Report, String> {
    if !udp {
        return pingpong::run(opts, on_edge);
    }
    let udp = udp::run(opts, UDP_LOSS_TIMEOUT, on_edge)?;
    if udp.lost > 0 {
        eprintln!("echo-lab demo: {} datagrams lost (no echo within {UDP_LOSS_TIMEOUT:?})", udp.lost);
    }
    Ok(udp.report)
}

/// Loads `server` (already started, as `guard`) from a thread pinned to CPU 1, sampling the
/// server's CPU time at the window's edges; then counts its syscalls over a second window and
/// measures its memory per idle connection, as `extras` asks; kills the server when done.
pub fn measure(
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
        Server::Runtime(echo::server::RuntimeKind::Aio)
        | Server::FuturesIo(echo::server::RuntimeKind::Aio) => {
            Err("not counted for aio: its I/O syscalls are made by \
             glibc's threads, which neither its counters nor perf follow reliably (see the README)"
                .to_string())
        }
        Server::Runtime(_) | Server::FuturesIo(_) => Ok(guard.1.take().expect("the counts channel")),
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

/// A count of syscalls over a window, or why there is none.
type Counted = Result<Syscalls, String>;

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
