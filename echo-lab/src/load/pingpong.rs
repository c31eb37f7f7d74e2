//! The ping-pong load (`echo-lab bench`'s default mode): N connections, each with exactly one
//! `size`-byte message in flight; every echo is checked byte for byte before the next message
//! is sent. One thread, one mio poller (edge-triggered epoll), so the load can be pinned to one
//! core and costs about one `send` + one `recv` + a share of `epoll_wait` per message. Timeline:
//! connect all -> warm-up (not counted) -> measured window -> drain (finish in-flight, close).
//! Only round trips that *complete* inside the window are counted; the window's edges are
//! reported to a callback as they pass (so the caller can sample the server's CPU time there).
//! Shortconn is the same loop with a new connection for every message.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::net::{connect_all, connect_retry, fill, Poller};
use super::options::{Edge, Mode, Options};
use super::progress::Progress;
use super::report::Report;

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
pub fn run(opts: &Options, on_edge: &mut dyn FnMut(Edge)) -> Result<Report, String> {
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
