//! `echo-lab bench`: a load generator that verifies every byte (ping-pong and shortconn here,
//! bulk in [`crate::bulk`]).
//!
//! Ping-pong: N connections, each with exactly one `size`-byte message in flight; every echo is checked
//! byte for byte before the next message is sent. One thread, one mio poller (edge-triggered
//! epoll), so the load can be pinned to one core and costs about one `send` + one `recv` + a
//! share of `epoll_wait` per message. Timeline:
//! connect all -> warm-up (not counted) -> measured window -> drain (finish in-flight, close).
//! Only round trips that *complete* inside the window are counted; the window's edges are
//! reported to a callback as they pass (so the caller can sample the server's CPU time there).
//! Shortconn is the same loop with a new connection for every message.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mio::{Interest, Token};
use serde_json::{json, Value};

use crate::report::round;
use crate::sys;

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

/// The live progress line of `echo-lab bench` (when stderr is a terminal): a bar over the
/// warm-up and the window, with msgs/s so far, errors and mismatches, updated about once a
/// second and cleared at the end.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// When the bar started (the load's start).
    t0: Instant,
    next: Instant,
}

impl Progress {
    /// A progress bar over `total` (warm-up and window), shown only if `on`.
    pub fn new(on: bool, total: Duration) -> Progress {
        let bar = on.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total.as_millis() as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("  [{bar:30}] {msg}").expect("a valid template");
            bar.set_style(style.progress_chars("=> "));
            bar.set_message("warming up");
            bar
        });
        let now = Instant::now();
        Progress { bar, t0: now, next: now + Duration::from_secs(1) }
    }

    /// How long the load loop may sleep before the next update is due.
    pub fn cap(&self, wait: Duration) -> Duration {
        if self.bar.is_some() {
            wait.min(self.next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))
        } else {
            wait
        }
    }

    /// Updates the line if an update is due: `w_start` is when the measured window opened
    /// (None during the warm-up), `msgs` the round trips counted since.
    pub fn tick(&mut self, now: Instant, w_start: Option<Instant>, msgs: u64, errors: u64, mismatches: u64) {
        let Some(bar) = &self.bar else { return };
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        let what = match w_start {
            // The first fraction of a second of the window gives no meaningful rate yet.
            Some(t) if now.saturating_duration_since(t) >= Duration::from_millis(250) => {
                let rate = msgs as f64 / now.saturating_duration_since(t).as_secs_f64();
                format!("{rate:.0} msgs/s so far")
            }
            Some(_) => "measuring".to_string(),
            None => "warming up".to_string(),
        };
        bar.set_position(now.saturating_duration_since(self.t0).as_millis() as u64);
        bar.set_message(format!("{what}   errors {errors}   mismatches {mismatches}"));
    }

    /// Erases the line (if one was drawn).
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// An edge of the measured window, as it passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// The window starts: from now on, completed round trips count.
    Start,
    /// The window ends.
    End,
}

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
        let report = crate::udp::pingpong(&opts, Duration::from_millis(a.loss_timeout), &mut |_| {})?;
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
        Mode::Pingpong | Mode::Shortconn => pingpong(&opts, &mut |_| {})?,
        Mode::Bulk => crate::bulk::run(&opts, &mut |_| {})?,
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

/// Connects (retrying for up to `deadline`: a full accept queue drops SYNs) with TCP_NODELAY.
pub fn connect_retry(addr: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    let mut backoff = Duration::from_millis(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match TcpStream::connect_timeout(
            &addr,
            left.clamp(Duration::from_millis(1), Duration::from_secs(3)),
        ) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => e,
        };
        if Instant::now() + backoff >= deadline {
            return Err(err);
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Connects `opts.conns` non-blocking sockets to `opts.addr`, within `opts.connect_timeout`.
pub fn connect_all(opts: &Options) -> Result<Vec<TcpStream>, String> {
    sys::raise_nofile();
    let deadline = Instant::now() + Duration::from_secs_f64(opts.connect_timeout);
    let mut socks = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        let sock = connect_retry(opts.addr, deadline).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                format!(
                    "too many open files at connection {} of {}: raise the limit (`ulimit -n`) \
                     or use fewer --conns",
                    i + 1,
                    opts.conns
                )
            } else {
                format!(
                    "cannot connect to {} (connection {} of {}): {e}; is an echo server listening there?",
                    opts.addr,
                    i + 1,
                    opts.conns
                )
            }
        })?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        socks.push(sock);
    }
    Ok(socks)
}

#[derive(PartialEq, Clone, Copy)]
enum Phase {
    Warmup,
    Measure,
    Drain,
}

struct Conn {
    sock: Option<mio::net::TcpStream>, // None once closed (error, mismatch, or drained)
    out: Vec<u8>,
    inb: Vec<u8>,
    wrote: usize,
    got: usize,
    seq: u64,
    sent_at: Instant,
    want_out: bool, // registered for writability because a send was partial
    msgs: u64,      // completed inside the window
}

/// Message content: differs per connection and per message, so a server that mixes up
/// connections, replays stale data, or reorders bytes is caught.
pub fn fill(buf: &mut [u8], seq: u64) {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The load generator's event loop: mio's `Poll` (epoll, edge-triggered), apart from the
/// runtimes under test, so that a bug in them cannot hide in the tool that measures them.
/// Edge-triggered means: after an event, read (or write) until `WouldBlock`, or until there is
/// surely nothing more to read (a whole echo has come back and nothing else was sent).
pub struct Poller {
    poll: mio::Poll,
    events: mio::Events,
}

impl Poller {
    /// A new poller.
    pub fn new() -> Result<Poller, String> {
        let poll = mio::Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
        Ok(Poller { poll, events: mio::Events::with_capacity(1024) })
    }

    /// Watches `sock` (new if `add`) for input, and for output too if `writable`, as `token`.
    pub fn watch(
        &self,
        sock: &mut mio::net::TcpStream,
        add: bool,
        writable: bool,
        token: usize,
    ) -> io::Result<()> {
        let interest = if writable { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        if add {
            self.poll.registry().register(sock, Token(token), interest)
        } else {
            self.poll.registry().reregister(sock, Token(token), interest)
        }
    }

    /// Waits up to `timeout` for events; returns the `(token, writable)` of each (none on EINTR).
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<(usize, bool)>, String> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(self.events.iter().map(|ev| (ev.token().0, ev.is_writable())).collect()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Vec::new()),
            Err(e) => Err(format!("waiting for events: {e}")),
        }
    }
}

struct Load {
    poller: Poller,
    addr: SocketAddr,
    /// Reconnect after every echo (`Mode::Shortconn`).
    shortconn: bool,
    conns: Vec<Conn>,
    open: usize,
    phase: Phase,
    hist: Histogram<u64>,
    msgs: u64,
    errors: u64,
    mismatches: u64,
}

impl Load {
    fn watch(&mut self, i: usize, add: bool, out: bool) {
        let Some(sock) = self.conns[i].sock.as_mut() else { return };
        if let Err(e) = self.poller.watch(sock, add, out, i) {
            self.close(i, Some(e));
        }
    }

    fn close(&mut self, i: usize, err: Option<io::Error>) {
        if let Some(e) = err {
            if self.phase != Phase::Drain {
                eprintln!("bench: connection {i}: {e}");
            }
            self.errors += 1;
        }
        if self.conns[i].sock.take().is_some() {
            self.open -= 1; // closing the fd also removes it from the epoll set
        }
    }

    /// Starts the next message on connection `i` at time `now`.
    fn send_next(&mut self, i: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.seq += 1;
        fill(&mut c.out, c.seq);
        c.wrote = 0;
        c.got = 0;
        c.sent_at = now;
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_ref() else { return };
        while c.wrote < c.out.len() {
            match (&*sock).write(&c.out[c.wrote..]) {
                Ok(n) => c.wrote += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.close(i, Some(e)),
            }
        }
        let want = c.wrote < c.out.len();
        if want != c.want_out {
            c.want_out = want;
            self.watch(i, false, want);
        }
    }

    fn readable(&mut self, i: usize) {
        loop {
            let c = &mut self.conns[i];
            let Some(sock) = c.sock.as_ref() else { return };
            match (&*sock).read(&mut c.inb[c.got..]) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection");
                    return self.close(i, Some(e));
                }
                Ok(n) => c.got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.close(i, Some(e)),
            }
            if c.got < c.inb.len() {
                continue;
            }
            // A whole echo: verify, count, and send the next one.
            let now = Instant::now();
            if c.inb != c.out || c.wrote != c.out.len() {
                eprintln!("bench: connection {i}: the echo of message {} differs", c.seq & 0xFF_FFFF_FFFF);
                self.mismatches += 1;
                return self.close(i, None);
            }
            if self.phase == Phase::Measure {
                c.msgs += 1;
                self.msgs += 1;
                let ns = (now - c.sent_at).as_nanos() as u64;
                self.hist.saturating_record(ns.max(1));
            }
            if self.phase == Phase::Drain {
                return self.close(i, None);
            }
            if self.shortconn && !self.reconnect(i) {
                return;
            }
            self.send_next(i, now);
            return;
        }
    }

    /// Closes connection `i` and opens a new one in its place; false if that failed.
    fn reconnect(&mut self, i: usize) -> bool {
        self.conns[i].sock = None;
        let deadline = Instant::now() + Duration::from_secs(1);
        match connect_retry(self.addr, deadline).and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(sock) => {
                self.conns[i].sock = Some(mio::net::TcpStream::from_std(sock));
                self.conns[i].want_out = false;
                self.watch(i, true, false);
                self.conns[i].sock.is_some()
            }
            Err(e) => {
                self.open -= 1;
                self.errors += 1;
                eprintln!("bench: connection {i}: reconnect: {e}");
                false
            }
        }
    }
}

/// Runs the ping-pong (or shortconn) load; `on_edge` is called as each edge of the measured window passes.
///
/// Bounded in time: connecting gives up after `connect_timeout`, and in-flight messages get 1 s after the
/// window to come back.
pub fn pingpong(opts: &Options, on_edge: &mut dyn FnMut(Edge)) -> Result<Report, String> {
    let socks = connect_all(opts)?;
    let mut conns = Vec::with_capacity(opts.conns);
    for (i, sock) in socks.into_iter().enumerate() {
        conns.push(Conn {
            sock: Some(mio::net::TcpStream::from_std(sock)),
            out: vec![0; opts.size],
            inb: vec![0; opts.size],
            wrote: 0,
            got: 0,
            seq: (i as u64) << 40,
            sent_at: Instant::now(),
            want_out: false,
            msgs: 0,
        });
    }
    let mut l = Load {
        poller: Poller::new()?,
        addr: opts.addr,
        shortconn: opts.mode == Mode::Shortconn,
        open: conns.len(),
        conns,
        phase: Phase::Warmup,
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
        msgs: 0,
        errors: 0,
        mismatches: 0,
    };
    let now = Instant::now();
    for i in 0..l.conns.len() {
        l.watch(i, true, false);
        l.send_next(i, now);
    }

    let t_start = now + Duration::from_secs_f64(opts.warmup);
    let t_end = t_start + Duration::from_secs_f64(opts.secs);
    let t_drain = t_end + Duration::from_secs(1);
    let (mut w_start, mut w_end) = (t_start, t_end);
    let mut progress = Progress::new(opts.progress, t_end - now);
    loop {
        let now = Instant::now();
        if l.phase != Phase::Drain {
            let started = (l.phase == Phase::Measure).then_some(w_start);
            progress.tick(now, started, l.msgs, l.errors, l.mismatches);
        }
        if l.phase == Phase::Warmup && now >= t_start {
            l.phase = Phase::Measure;
            on_edge(Edge::Start);
            w_start = Instant::now();
        }
        if l.phase == Phase::Measure && now >= t_end {
            l.phase = Phase::Drain;
            w_end = Instant::now();
            on_edge(Edge::End);
        }
        if l.open == 0 || now >= t_drain {
            break;
        }
        let next = match l.phase {
            Phase::Warmup => t_start,
            Phase::Measure => t_end,
            Phase::Drain => t_drain,
        };
        for (i, writable) in l.poller.wait(progress.cap(next.saturating_duration_since(now)))? {
            if writable {
                l.flush(i);
            }
            // Errors and hang-ups surface as an error or end of stream from recv.
            l.readable(i);
        }
    }
    if l.phase != Phase::Drain {
        // Every connection died before the window ended.
        w_end = Instant::now().max(w_start);
        if l.phase == Phase::Measure {
            on_edge(Edge::End);
        }
    }
    progress.clear();
    let stalled = l.conns.iter().filter(|c| c.msgs == 0).count();
    Ok(Report {
        opts: opts.clone(),
        window_s: w_end.saturating_duration_since(w_start).as_secs_f64(),
        msgs: l.msgs,
        hist: l.hist,
        errors: l.errors,
        mismatches: l.mismatches,
        stalled,
    })
}
