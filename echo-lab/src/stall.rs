//! `echo-lab stall`: clients that send and never read, and what they do to a server.
//!
//! For each server and each number of stalled clients, in interleaved rounds: start the server,
//! open the clients, and let each write 64 KiB at a time, without blocking, whenever its socket
//! takes more, and never read, so that the server's echoes stall and everything it takes in
//! stays somewhere. After `--secs`, while they go on pushing, a newcomer connects `--newcomers`
//! times, one after the other, and times one small echo each. Reported: how much the server's
//! resident memory grew (its peak over the window, against before the clients came), and the
//! newcomers' median and worst round trip.
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
    /// How long the clients push before the newcomers come, seconds.
    #[arg(long, default_value_t = 4.0, value_parser = positive)]
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
    /// The newcomers' round trips, ms.
    median_ms: f64,
    worst_ms: f64,
    /// Bytes the clients got into the server's sockets, MiB.
    pushed_mib: f64,
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
    let aio_threads = clients + a.newcomers + 64;
    let (guard, addr) = start_server(server, false, aio_threads)?;
    let pid = guard.0.id();
    thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid);
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
    thread::sleep(Duration::from_secs_f64(a.secs));
    let mut times = Vec::new();
    let mut failure = None;
    for i in 0..a.newcomers {
        match newcomer(addr, i) {
            Ok(ms) => times.push(ms),
            Err(e) => {
                failure = Some(format!("newcomer {i}: {e}"));
                break;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = pusher.join();
    let _ = sampler.join();
    drop(guard);
    if let Some(failure) = failure {
        return Err(failure);
    }
    let spread = Spread::of(times.iter().copied());
    Ok(Run {
        growth_mib: peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / 1024.0,
        median_ms: spread.median,
        worst_ms: spread.max,
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
            "{clients} clients that write 64 KiB whenever they can and never read; then {} newcomers, one \
             echo each ({} rounds, {} s of pushing each)",
            a.newcomers, a.rounds, a.secs
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
        println!(
            "  {:<16} {:>24} {:>26} {:>22}",
            "server", "RSS growth, MiB", "newcomer median, ms", "newcomer worst, ms"
        );
        for (server, runs) in servers.iter().zip(&runs) {
            let growth = Spread::of(runs.iter().map(|r| r.growth_mib));
            let median = Spread::of(runs.iter().map(|r| r.median_ms));
            let worst = Spread::of(runs.iter().map(|r| r.worst_ms));
            let cell = |s: &Spread, prec: usize| {
                format!("{} ({}–{})", num(s.median, prec), num(s.min, prec), num(s.max, prec))
            };
            println!(
                "  {:<16} {:>24} {:>26} {:>22}",
                server.name(),
                cell(&growth, 1),
                cell(&median, 2),
                format!("{} (max {})", num(worst.median, 1), num(worst.max, 1))
            );
            let mut record = serde_json::Map::new();
            record.insert("server".into(), json!(server.name()));
            record.insert("clients".into(), json!(clients));
            record.insert("rounds".into(), json!(runs.len()));
            growth.json("rss_growth_mib", 1, &mut record);
            median.json("newcomer_median_ms", 2, &mut record);
            worst.json("newcomer_worst_ms", 1, &mut record);
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
        "secs": a.secs,
        "results": records,
    });
    fs::write(&path, serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
