//! What one load run does: the traffic pattern, the connections and message size, the warm-up
//! and the measured window (and the edges of that window, as they pass).

use std::net::SocketAddr;

use clap::ValueEnum;

/// The traffic pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Every connection sends one message, waits for its echo, verifies it, and repeats.
    Pingpong,
    /// Every connection streams `size`-byte blocks (up to 256 KiB in flight) and verifies the
    /// echoed stream: throughput with many bytes per syscall.
    Bulk,
    /// Like pingpong, but every connection is closed after one echo and a new one opened:
    /// accept and connection set-up cost (latency includes the connect).
    Shortconn,
}

impl Mode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pingpong => "pingpong",
            Mode::Bulk => "bulk",
            Mode::Shortconn => "shortconn",
        }
    }
}

/// What one load run does.
#[derive(Clone, Debug)]
pub struct Options {
    /// The traffic pattern.
    pub mode: Mode,
    /// The server.
    pub addr: SocketAddr,
    /// Connections, each with one message in flight.
    pub conns: usize,
    /// Message size, bytes.
    pub size: usize,
    /// Measured window, seconds.
    pub secs: f64,
    /// Warm-up, seconds.
    pub warmup: f64,
    /// How long connecting may take, seconds.
    pub connect_timeout: f64,
    /// Show a live progress bar on stderr (meant for a terminal), updated about once a second.
    pub progress: bool,
}

/// An edge of the measured window, as it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// The window starts: from now on, completed round trips count.
    Start,
    /// The window ends.
    End,
}

fn seconds(s: &str, min_ok: impl Fn(f64) -> bool) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || !min_ok(v) || v > 3600.0 {
        return Err(format!("{s} is out of range"));
    }
    Ok(v)
}

/// Parses a number of seconds in (0, 3600].
pub fn positive(s: &str) -> Result<f64, String> {
    seconds(s, |v| v > 0.0)
}

/// Parses a number of seconds in [0, 3600].
pub fn non_negative(s: &str) -> Result<f64, String> {
    seconds(s, |v| v >= 0.0)
}
