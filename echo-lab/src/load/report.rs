//! What a load run measured, as one JSON object or for people.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::options::{Mode, Options};
use crate::report::round;

/// The result of one load run.
#[derive(Debug)]
pub struct Report {
    /// The options it ran with.
    pub opts: Options,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Round trips (in bulk mode: blocks) completed inside the window.
    pub msgs: u64,
    /// Latency of those round trips (blocks: from starting to send one to receiving its
    /// last byte back), nanoseconds.
    pub hist: Histogram<u64>,
    /// Connections that failed (I/O error, or the server closed them).
    pub errors: u64,
    /// Echoes that differed from what was sent.
    pub mismatches: u64,
    /// Connections that completed no round trip inside the window.
    pub stalled: usize,
}

impl Report {
    /// Round trips per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.window_s.max(1e-9)
    }

    /// Megabytes (10^6) echoed per second, one direction.
    pub fn mb_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.opts.size as f64 / 1e6
    }

    /// The latency at quantile `q`, microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "mode": self.opts.mode.name(),
            "addr": self.opts.addr.to_string(),
            "conns": self.opts.conns,
            "size": self.opts.size,
            "secs": self.opts.secs,
            "window_s": round(self.window_s, 6),
            "msgs": self.msgs,
            "msgs_per_sec": round(self.msgs_per_sec(), 1),
            "mb_per_sec": round(self.mb_per_sec(), 3),
            "p50_us": round(self.latency_us(0.5), 2),
            "p99_us": round(self.latency_us(0.99), 2),
            "p999_us": round(self.latency_us(0.999), 2),
            "max_us": round(self.hist.max() as f64 / 1000.0, 2),
            "errors": self.errors,
            "mismatches": self.mismatches,
            "stalled_conns": self.stalled,
        })
    }

    /// The report for people.
    pub fn human(&self) -> String {
        format!(
            "{} against {}: {} conns, {} B messages, {:.2} s window\n\
             \x20 {:>12.0} {}/s   {:>8.2} MB/s echoed\n\
             \x20 latency p50 {:.1} µs   p99 {:.1} µs   p999 {:.1} µs   max {:.1} µs\n\
             \x20 errors {}   mismatches {}   stalled connections {}",
            self.opts.mode.name(),
            self.opts.addr,
            self.opts.conns,
            self.opts.size,
            self.window_s,
            self.msgs_per_sec(),
            if self.opts.mode == Mode::Bulk { "blocks" } else { "msgs" },
            self.mb_per_sec(),
            self.latency_us(0.5),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.hist.max() as f64 / 1000.0,
            self.errors,
            self.mismatches,
            self.stalled,
        )
    }
}
