//! `echo-lab stall`: clients that send and never read, and what they do to a server.
//!
//! For each server and each number of stalled clients, in interleaved rounds: start the server,
//! open the clients, and let each write 64 KiB at a time, without blocking, whenever its socket
//! takes more, and never read, so that the server's echoes stall and everything it takes in
//! stays somewhere. Newcomers come twice, `--newcomers` of them each time, one after the other,
//! each timing one small echo: after `--busy-secs`, while the clients' bytes still flow (the
//! kernel's socket buffers take megabytes per connection before anything stalls), and once
//! they are stalled (nothing more got in for a second; at most `--secs` after the start).
//! Reported: how much the server's resident memory grew (its peak over the window, against
//! before the clients came), the newcomers' median and worst round trip each time, and when
//! the clients stalled, and how many TCP retransmission timeouts the kernel counted meanwhile:
//! the bytes the clients push fill the kernel's TCP memory (`net.ipv4.tcp_mem`), it drops
//! segments, and a newcomer whose segment was dropped waits 200 ms or more for its resend,
//! on any server.
//!
//! A readiness server reads only when its handler asks, so a stalled client fills the kernel's
//! socket buffers and then its own sends block: the server holds one buffer per connection. A
//! completion server commits buffers before data arrives, and must say "enough" itself (the
//! proactor's memory budget, `Builder::connection_budget` and `memory_budget`).

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

use crate::harness::child::start_server;
use crate::harness::rounds::{order, Spread};
use crate::load::options::positive;
use crate::report::{default_out_dir, num};
use crate::server::Server;

/// Options of `echo-lab stall`.
#[derive(Args, Debug)]
pub struct StallArgs {
    /// Servers to compare, comma-separated, in the order of the first round.
    #[arg(long, value_delimiter = ',', default_value = "reactor,uring,proactor-epoll,tokio")]
    pub runtimes: Vec<Server>,
    /// Stalled clients; a comma-separated list measures each number in turn.
    #[arg(long, value_delimiter = ',', default_value = "1000,3000",
          value_parser = clap::value_parser!(u32).range(1..=15_000))]
    pub clients: Vec<u32>,
    /// Rounds: every server is measured once per round, the order reversed on alternate rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// How long the clients push before the first newcomers come (while the bytes still flow),
    /// seconds.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    pub busy_secs: f64,
    /// The most the clients push before the second newcomers come, seconds: sooner once they
    /// are stalled (nothing more got into the server's sockets for a second).
    #[arg(long, default_value_t = 30.0, value_parser = positive)]
    pub secs: f64,
    /// Newcomers timed per server and round, one after the other.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub newcomers: u32,
    /// Where to write stall.json [default: TARGET/echo-lab].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One server's run with some number of stalled clients.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Peak resident memory over the window, minus before the clients came, MiB.
    growth_mib: f64,
    /// The newcomers' round trips while the clients' bytes flowed, ms.
    busy: Spread,
    /// When the clients stalled, seconds after they started (`None`: not within `--secs`).
    stalled_s: Option<f64>,
    /// The newcomers' round trips once the clients had stalled, ms.
    stalled: Spread,
    /// TCP retransmission timeouts on the machine during the run (see `tcp_timeouts`).
    timeouts: Option<u64>,
    /// Bytes the clients got into the server's sockets, MiB.
    pushed_mib: f64,
}

/// The kernel's count of TCP retransmission timeouts so far, system-wide (`TcpExt:
/// TCPTimeouts` in `/proc/net/netstat`): a segment dropped under TCP memory pressure (the
/// clients' stalled bytes fill `net.ipv4.tcp_mem`) is sent again only after one, 200 ms at
/// least, whichever server runs. `None` where the file cannot be read.
fn tcp_timeouts() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == "TCPTimeouts")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn measure(server: Server, clients: u32, a: &StallArgs) -> Result<Run, String> {
    // A connection may hold two glibc threads: a read, and a write blocked by a full window.
    let aio_threads = 2 * clients + a.newcomers + 64;
    let (guard, addr) = start_server(server, false, aio_threads)?;
    let pid = guard.0.id();
    thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
    let timeouts_before = tcp_timeouts();
    let mut streams = Vec::with_capacity(clients as usize);
    for i in 0..clients {
        let stream = TcpStream::connect(addr).map_err(|e| format!("stalled client {i}: {e}"))?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        streams.push(stream);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let pusher = {
        let (stop, pushed) = (stop.clone(), pushed.clone());
        thread::spawn(move || push(streams, &stop, &pushed))
    };
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let started = Instant::now();
    let newcomers = |first: u32| -> Result<Spread, String> {
        let mut times = Vec::new();
        for i in first..first + a.newcomers {
            times.push(newcomer(addr, i).map_err(|e| format!("newcomer {i}: {e}"))?);
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Spread::of(times))
    };
    thread::sleep(Duration::from_secs_f64(a.busy_secs));
    let busy = newcomers(0);
    // Stalled: nothing more pushed for a second, sampled every 100 ms.
    let mut stalled_s = None;
    let mut last = (pushed.load(Ordering::Relaxed), Instant::now());
    while busy.is_ok() && started.elapsed().as_secs_f64() < a.secs {
        thread::sleep(Duration::from_millis(100));
        let now = pushed.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            stalled_s = Some((last.1 - started).as_secs_f64());
            break;
        }
    }
    let stalled = busy.as_ref().map_err(Clone::clone).and_then(|_| newcomers(a.newcomers));
    stop.store(true, Ordering::Relaxed);
    let _ = pusher.join();
    let _ = sampler.join();
    drop(guard);
    let (busy, stalled) = (busy?, stalled?);
    Ok(Run {
        growth_mib: peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / 1024.0,
        busy,
        stalled_s,
        stalled,
        timeouts: tcp_timeouts().zip(timeouts_before).map(|(after, before)| after.saturating_sub(before)),
        pushed_mib: pushed.load(Ordering::Relaxed) as f64 / f64::from(1 << 20),
    })
}

/// Writes 64 KiB whenever a client's socket takes it, until `stop`; never reads.
fn push(mut streams: Vec<TcpStream>, stop: &AtomicBool, pushed: &AtomicU64) {
    let chunk = vec![b'x'; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        let mut progress = false;
        for stream in &mut streams {
            match stream.write(&chunk) {
                Ok(n) => {
                    pushed.fetch_add(n as u64, Ordering::Relaxed);
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {} // the server gave up on it: nothing more to push there
            }
        }
        if !progress {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// One newcomer: connect, send a short message, read it back; its round trip in ms.
fn newcomer(addr: SocketAddr, i: u32) -> io::Result<f64> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let message = format!("newcomer {i:05}");
    stream.write_all(message.as_bytes())?;
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back)?;
    if back != message.as_bytes() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the echo differs"));
    }
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

pub fn run(a: &StallArgs) -> Result<(), String> {
    let mut servers: Vec<Server> = Vec::new();
    for &s in &a.runtimes {
        if !servers.contains(&s) {
            servers.push(s);
        }
    }
    let mut records = Vec::new();
    for &clients in &a.clients {
        println!(
            "{clients} clients that write 64 KiB whenever they can and never read; {} newcomers, one echo each, \
             after {} s (while the bytes flow) and once the clients stall (at most {} s; {} rounds)",
            a.newcomers, a.busy_secs, a.secs, a.rounds
        );
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); servers.len()];
        for round in 1..=a.rounds {
            for i in order(servers.len(), round) {
                match measure(servers[i], clients, a) {
                    Ok(run) => runs[i].push(run),
                    Err(e) => eprintln!("  {} (round {round}): {e}", servers[i]),
                }
            }
        }
        let columns = [
            "server",
            "RSS growth, MiB",
            "newcomer while busy, ms",
            "stalled after",
            "newcomer once stalled, ms",
            "TCP timeouts",
        ];
        let units = ["", "", "median · worst", "s", "median · worst", "in the run"];
        for row in [columns, units] {
            println!(
                "  {:<16} {:>20} {:>26} {:>14} {:>26} {:>14}",
                row[0], row[1], row[2], row[3], row[4], row[5]
            );
        }
        for (server, runs) in servers.iter().zip(&runs) {
            let growth = Spread::of(runs.iter().map(|r| r.growth_mib));
            let median = |f: fn(&Run) -> &Spread| Spread::of(runs.iter().map(|r| f(r).median));
            let worst = |f: fn(&Run) -> &Spread| Spread::of(runs.iter().map(|r| f(r).max));
            let (busy_median, busy_worst) = (median(|r| &r.busy), worst(|r| &r.busy));
            let (stalled_median, stalled_worst) = (median(|r| &r.stalled), worst(|r| &r.stalled));
            let stalled_after = Spread::of(runs.iter().map(|r| r.stalled_s.unwrap_or(f64::NAN)));
            let never = runs.iter().filter(|r| r.stalled_s.is_none()).count();
            let cell = |s: &Spread, prec: usize| {
                format!("{} ({}–{})", num(s.median, prec), num(s.min, prec), num(s.max, prec))
            };
            // A time cell: the median of the rounds' medians, and the worst of all rounds.
            let times = |m: &Spread, w: &Spread| format!("{} · {}", num(m.median, 2), num(w.max, 1));
            let timeouts = Spread::of(runs.iter().filter_map(|r| r.timeouts).map(|t| t as f64));
            println!(
                "  {:<16} {:>20} {:>26} {:>14} {:>26} {:>14}",
                server.name(),
                cell(&growth, 1),
                times(&busy_median, &busy_worst),
                match never {
                    0 => num(stalled_after.median, 1),
                    n => format!("{} ({n} never)", num(stalled_after.median, 1)),
                },
                times(&stalled_median, &stalled_worst),
                num(timeouts.median, 0),
            );
            let mut record = serde_json::Map::new();
            record.insert("server".into(), json!(server.name()));
            record.insert("clients".into(), json!(clients));
            record.insert("rounds".into(), json!(runs.len()));
            growth.json("rss_growth_mib", 1, &mut record);
            busy_median.json("busy_newcomer_median_ms", 2, &mut record);
            busy_worst.json("busy_newcomer_worst_ms", 1, &mut record);
            stalled_after.json("stalled_after_s", 1, &mut record);
            record.insert("never_stalled".into(), json!(never));
            stalled_median.json("newcomer_median_ms", 2, &mut record);
            stalled_worst.json("newcomer_worst_ms", 1, &mut record);
            timeouts.json("tcp_timeouts", 0, &mut record);
            Spread::of(runs.iter().map(|r| r.pushed_mib)).json("pushed_mib", 0, &mut record);
            records.push(Value::Object(record));
        }
    }
    let dir = a.out.clone().unwrap_or_else(default_out_dir);
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("stall.json");
    let doc = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "newcomers": a.newcomers,
        "busy_secs": a.busy_secs,
        "secs": a.secs,
        "results": records,
    });
    fs::write(&path, serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
