//! `echo-lab bench`: loads an echo server with the load generator ([`crate::load`]: ping-pong,
//! bulk, shortconn, or UDP ping-pong), verifying every byte, and prints what it measured.

use std::net::ToSocketAddrs;
use std::time::Duration;

use clap::Args;

use crate::load::options::{non_negative, positive, Mode, Options};
use crate::load::{bulk, pingpong, udp};
use crate::sys;

/// Options of `echo-lab bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The echo server's address.
    #[arg(long)]
    pub addr: String,
    /// The traffic pattern.
    #[arg(long, value_enum, default_value = "pingpong")]
    pub mode: Mode,
    /// Connections, each with one message in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub conns: u32,
    /// Message size, bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub size: u32,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 5.0, value_parser = positive)]
    pub secs: f64,
    /// Warm-up before the window, seconds (traffic flows, nothing is counted).
    #[arg(long, default_value_t = 1.0, value_parser = non_negative)]
    pub warmup: f64,
    /// Give up if not every connection is established within this many seconds.
    #[arg(long, default_value_t = 10.0, value_parser = positive)]
    pub connect_timeout: f64,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
    /// Ping-pong UDP datagrams instead (RFC 862's UDP echo, on the same address): --conns
    /// sockets, each with one --size-byte datagram in flight (at most 65,507 bytes), every
    /// echo verified, a datagram not echoed within --loss-timeout counted lost.
    #[arg(long)]
    pub udp: bool,
    /// With --udp: how long to wait for an echo before counting the datagram lost, in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub loss_timeout: u64,
    /// With --udp: each socket sends exactly N datagrams, and every one counts (no warm-up,
    /// no window: --secs and --warmup are ignored); the run ends when each has come back or
    /// been given up on. For questions about loss: `--conns 50 --size 65507 --count 100`
    /// against `serve` loses none when the server's receive buffer holds the burst.
    #[arg(long, value_name = "N", requires = "udp", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// `echo-lab bench`.
pub fn run_cli(a: &BenchArgs) -> Result<(), String> {
    let addr = a
        .addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {:?}: {e}", a.addr))?
        .next()
        .ok_or_else(|| format!("{:?} resolves to no address", a.addr))?;
    let opts = Options {
        mode: a.mode,
        addr,
        conns: a.conns as usize,
        size: a.size as usize,
        secs: a.secs,
        warmup: a.warmup,
        connect_timeout: a.connect_timeout,
        progress: sys::stderr_is_tty(),
    };
    if a.udp {
        let report = udp::run(&opts, Duration::from_millis(a.loss_timeout), a.count, &mut |_| {})?;
        if a.json {
            println!("{}", report.to_json());
        } else {
            println!("{}", report.human());
        }
        if report.report.mismatches > 0 {
            return Err(format!("{} echoes differed from what was sent", report.report.mismatches));
        }
        if report.report.msgs == 0 {
            return Err(format!(
                "no echo came back from {} (UDP) in the window: is it a UDP echo server?",
                opts.addr
            ));
        }
        return Ok(());
    }
    let report = match a.mode {
        Mode::Pingpong | Mode::Shortconn => pingpong::run(&opts, &mut |_| {})?,
        Mode::Bulk => bulk::run(&opts, &mut |_| {})?,
    };
    if a.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.human());
    }
    if report.mismatches > 0 {
        return Err(format!("{} echoes differed from what was sent", report.mismatches));
    }
    if report.msgs == 0 {
        return Err(format!("no echo came back from {} in the window: is it an echo server?", opts.addr));
    }
    Ok(())
}
