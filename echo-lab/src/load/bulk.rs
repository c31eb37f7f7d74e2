//! `echo-lab bench --mode bulk`: every connection streams blocks and verifies the echo.
//!
//! Each connection sends `size`-byte blocks back to back, block `k` filled from a seed that
//! names the connection and `k`, with at most [`MAX_IN_FLIGHT`] bytes sent and not yet echoed;
//! every echoed byte is compared with what was sent. A block counts when its last byte comes
//! back inside the window; its latency runs from starting to send it to that moment. The same
//! single-threaded mio loop (edge-triggered epoll) as the ping-pong load: reads go on until
//! `WouldBlock`, writes until `WouldBlock` or the in-flight limit (then the next echo read
//! sends more); at the end of the window
//! every connection is closed (bytes still in flight are not counted).

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::net::{connect_all, fill, Poller};
use super::options::{Edge, Options};
use super::progress::Progress;
use super::report::Report;

/// The most bytes a connection has sent and not yet received back.
pub const MAX_IN_FLIGHT: usize = 256 * 1024;

struct Stream {
    sock: Option<TcpStream>,
    id: u64,
    /// The block being sent (valid while `filled`) and how much of it is out.
    send_buf: Vec<u8>,
    filled: bool,
    send_off: usize,
    /// Blocks started so far, and when each of those not yet echoed was started.
    started: u64,
    sent_at: std::collections::VecDeque<Instant>,
    /// The block expected back (valid while `recv_off > 0`), its index, how much has come.
    expect: Vec<u8>,
    recv_blk: u64,
    recv_off: usize,
    want_out: bool,
    msgs: u64,
}

struct Bulk {
    poller: Poller,
    streams: Vec<Stream>,
    open: usize,
    measuring: bool,
    max_blocks: u64,
    scratch: Vec<u8>,
    hist: Histogram<u64>,
    msgs: u64,
    errors: u64,
    mismatches: u64,
}

impl Bulk {
    fn close(&mut self, i: usize, err: Option<io::Error>) {
        if let Some(e) = err {
            eprintln!("bench: connection {i}: {e}");
            self.errors += 1;
        }
        if self.streams[i].sock.take().is_some() {
            self.open -= 1;
        }
    }

    /// Sends as much as the socket and the in-flight limit allow.
    fn write(&mut self, i: usize) {
        let s = &mut self.streams[i];
        let Some(sock) = s.sock.as_ref() else { return };
        let mut blocked = false;
        loop {
            if !s.filled {
                if s.started - s.recv_blk >= self.max_blocks {
                    break; // wait for echoes: reading will call us again
                }
                fill(&mut s.send_buf, (s.id << 40) + s.started);
                s.filled = true;
                s.started += 1;
                s.sent_at.push_back(Instant::now());
            }
            match (&*sock).write(&s.send_buf[s.send_off..]) {
                Ok(n) => {
                    s.send_off += n;
                    if s.send_off == s.send_buf.len() {
                        s.send_off = 0;
                        s.filled = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => return self.close(i, Some(e)),
            }
        }
        if blocked != s.want_out {
            s.want_out = blocked;
            let sock = s.sock.as_mut().expect("open");
            if let Err(e) = self.poller.watch(sock, false, blocked, i) {
                self.close(i, Some(e));
            }
        }
    }

    /// Reads what has arrived and verifies it against what was sent.
    fn read(&mut self, i: usize) {
        loop {
            let Some(sock) = self.streams[i].sock.as_ref() else { return };
            let n = match (&*sock).read(&mut self.scratch) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection");
                    return self.close(i, Some(e));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.close(i, Some(e)),
            };
            let s = &mut self.streams[i];
            let mut got = &self.scratch[..n];
            while !got.is_empty() {
                if s.recv_blk >= s.started {
                    // More bytes than were sent: the server made them up.
                    self.mismatches += 1;
                    eprintln!("bench: connection {i}: the server sent bytes that were never sent to it");
                    return self.close(i, None);
                }
                if s.recv_off == 0 {
                    fill(&mut s.expect, (s.id << 40) + s.recv_blk);
                }
                let m = got.len().min(s.expect.len() - s.recv_off);
                if got[..m] != s.expect[s.recv_off..s.recv_off + m] {
                    self.mismatches += 1;
                    eprintln!("bench: connection {i}: the echo of block {} differs", s.recv_blk);
                    return self.close(i, None);
                }
                got = &got[m..];
                s.recv_off += m;
                if s.recv_off == s.expect.len() {
                    s.recv_off = 0;
                    s.recv_blk += 1;
                    let started = s.sent_at.pop_front().expect("a start time per block in flight");
                    if self.measuring {
                        s.msgs += 1;
                        self.msgs += 1;
                        self.hist.saturating_record((started.elapsed().as_nanos() as u64).max(1));
                    }
                }
            }
        }
        self.write(i);
    }
}

/// Runs the bulk load; `on_edge` is called as each edge of the measured window passes.
pub fn run(opts: &Options, on_edge: &mut dyn FnMut(Edge)) -> Result<Report, String> {
    let socks = connect_all(opts)?;
    let poller = Poller::new()?;
    let mut streams = Vec::with_capacity(socks.len());
    for (i, sock) in socks.into_iter().enumerate() {
        let mut sock = TcpStream::from_std(sock);
        poller.watch(&mut sock, true, false, i).map_err(|e| format!("cannot watch connection {i}: {e}"))?;
        streams.push(Stream {
            sock: Some(sock),
            id: i as u64,
            send_buf: vec![0; opts.size],
            filled: false,
            send_off: 0,
            started: 0,
            sent_at: Default::default(),
            expect: vec![0; opts.size],
            recv_blk: 0,
            recv_off: 0,
            want_out: false,
            msgs: 0,
        });
    }
    let mut b = Bulk {
        poller,
        open: streams.len(),
        streams,
        measuring: false,
        max_blocks: (MAX_IN_FLIGHT / opts.size).max(1) as u64,
        scratch: vec![0; 64 * 1024],
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
        msgs: 0,
        errors: 0,
        mismatches: 0,
    };
    for i in 0..b.streams.len() {
        b.write(i);
    }

    let t_start = Instant::now() + Duration::from_secs_f64(opts.warmup);
    let t_end = t_start + Duration::from_secs_f64(opts.secs);
    let mut w_start = None;
    let mut progress = Progress::new(opts.progress, t_end - t_start + Duration::from_secs_f64(opts.warmup));
    let window = loop {
        let now = Instant::now();
        progress.tick(now, w_start, b.msgs, b.errors, b.mismatches);
        if w_start.is_none() && now >= t_start {
            b.measuring = true;
            on_edge(Edge::Start);
            w_start = Some(Instant::now());
        }
        if now >= t_end || b.open == 0 {
            break match w_start {
                Some(start) => {
                    let window = start.elapsed();
                    on_edge(Edge::End);
                    window
                }
                None => Duration::ZERO,
            };
        }
        let next = if b.measuring { t_end } else { t_start };
        for (i, writable) in b.poller.wait(progress.cap(next.saturating_duration_since(now)))? {
            if writable {
                b.write(i);
            }
            b.read(i);
        }
    };
    progress.clear();
    let stalled = b.streams.iter().filter(|s| s.msgs == 0).count();
    for s in &mut b.streams {
        s.sock = None; // close everything, in-flight bytes included
    }
    Ok(Report {
        opts: opts.clone(),
        window_s: window.as_secs_f64(),
        msgs: b.msgs,
        hist: b.hist,
        errors: b.errors,
        mismatches: b.mismatches,
        stalled,
    })
}
