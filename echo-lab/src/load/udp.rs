//! `echo-lab bench --udp`: datagram ping-pong against a UDP echo server.
//!
//! N client sockets (each connected to the server, so the kernel delivers only its echoes),
//! each with exactly one `size`-byte datagram in flight; every echo is checked byte for byte
//! before the next datagram is sent. One thread, one mio poller, as for TCP. UDP may lose a
//! datagram (or its echo): a datagram not echoed within the loss timeout is counted lost and
//! the socket sends the next one, so a loss costs one timeout, never a hang. An echo that comes
//! back after its timeout (late) is recognised and ignored; anything else that does not match
//! what is in flight is a mismatch.
//!
//! With a count (`--count N`) there is no window: each socket sends N datagrams, every one
//! counts, and the run ends when each has come back or been given up on: "did any get lost?"
//! is then a question about a known number of datagrams. Beside the loss, the report gives
//! what the kernel says it dropped meanwhile (`RcvbufErrors` of `/proc/net/snmp` and
//! `/proc/net/snmp6`: datagrams that found a socket's receive buffer full, on any socket of the
//! machine, the load's own and other programs' included).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Interest, Token};
use serde_json::Value;

use super::net::fill;
use super::options::{Edge, Options};
use super::progress::Progress;
use super::report::Report;

/// The largest datagram a UDP echo can carry over IPv4 (65,535 less the IP and UDP headers).
pub const MAX_SIZE: usize = 65_507;

/// How many of a socket's timed-out datagrams are remembered, to recognise their late echoes.
const LATE_KEPT: usize = 8;

/// A UDP ping-pong's report: the TCP report's fields, plus datagrams lost.
#[derive(Debug)]
pub struct UdpReport {
    /// Round trips, latency, mismatches (`errors`: sockets that failed).
    pub report: Report,
    /// Datagrams whose echo did not come back within the loss timeout.
    pub lost: u64,
    /// Echoes that came back after their timeout (ignored).
    pub late: u64,
    /// Datagrams the kernel dropped during the run because a socket's receive buffer was full
    /// (on any socket of the machine); `None` where `/proc/net/snmp` cannot be read.
    pub rcvbuf_errors: Option<u64>,
}

impl UdpReport {
    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut json = self.report.to_json();
        json["mode"] = "udp".into();
        json["lost"] = self.lost.into();
        json["late"] = self.late.into();
        json["rcvbuf_errors"] = self.rcvbuf_errors.into();
        json
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let text =
            self.report.human().replacen("pingpong", "udp ping-pong", 1).replacen(" conns,", " sockets,", 1);
        let kernel = match self.rcvbuf_errors {
            Some(n) => {
                format!("   dropped by the kernel, receive buffer full: {n} (RcvbufErrors, whole machine)")
            }
            None => String::new(),
        };
        format!(
            "{text}\n  lost {} (no echo within the timeout)   late echoes {}{kernel}",
            self.lost, self.late
        )
    }
}

/// The kernel's count of datagrams dropped because a receive buffer was full, over all UDP
/// sockets (IPv4 and IPv6) of the machine: `RcvbufErrors` in `/proc/net/snmp` and
/// `Udp6RcvbufErrors` in `/proc/net/snmp6`.
pub fn rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let at = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    let v4: u64 = values.split_whitespace().nth(at)?.parse().ok()?;
    let v6 = std::fs::read_to_string("/proc/net/snmp6").ok().and_then(|snmp6| {
        snmp6.lines().find_map(|l| l.strip_prefix("Udp6RcvbufErrors")?.trim().parse::<u64>().ok())
    });
    Some(v4 + v6.unwrap_or(0))
}

struct Client {
    sock: mio::net::UdpSocket,
    seq: u64,
    out: Vec<u8>,
    sent_at: Instant,
    /// Sequence numbers of datagrams given up on, newest last.
    late: VecDeque<u64>,
    msgs: u64,
    /// Datagrams it may still send (`u64::MAX` when the run is a window).
    left: u64,
    /// A datagram is in flight (sent, neither echoed nor given up on).
    waiting: bool,
}

/// Runs the ping-pong of `opts` (its `conns` are sockets) with `timeout` as the loss timeout;
/// with `count`, each socket sends that many datagrams, all counted, instead of ping-ponging
/// through a warm-up and a window.
pub fn run(
    opts: &Options,
    timeout: Duration,
    count: Option<u64>,
    on_edge: &mut dyn FnMut(Edge),
) -> Result<UdpReport, String> {
    if opts.size > MAX_SIZE {
        return Err(format!("a UDP datagram holds at most {MAX_SIZE} bytes (asked: {})", opts.size));
    }
    let mut poll = mio::Poll::new().map_err(|e| format!("cannot create a poller: {e}"))?;
    let mut events = mio::Events::with_capacity(1024);
    let local: SocketAddr =
        if opts.addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("an address");
    let mut clients = Vec::with_capacity(opts.conns);
    for i in 0..opts.conns {
        let sock = std::net::UdpSocket::bind(local).map_err(|e| format!("cannot bind a UDP socket: {e}"))?;
        sock.connect(opts.addr).map_err(|e| format!("cannot connect a UDP socket to {}: {e}", opts.addr))?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut sock = mio::net::UdpSocket::from_std(sock);
        poll.registry().register(&mut sock, Token(i), Interest::READABLE).map_err(|e| e.to_string())?;
        clients.push(Client {
            sock,
            seq: (i as u64) << 40,
            out: vec![0; opts.size],
            sent_at: Instant::now(),
            late: VecDeque::new(),
            msgs: 0,
            left: count.unwrap_or(u64::MAX),
            waiting: false,
        });
    }
    let drops_before = rcvbuf_errors();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds");
    let (mut msgs, mut lost, mut late, mut mismatches, mut errors) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut failed = vec![false; clients.len()];
    // Sends the socket's next datagram, if it may send one.
    let send = |c: &mut Client, now: Instant| -> io::Result<()> {
        c.waiting = false;
        if c.left == 0 {
            return Ok(());
        }
        c.left -= 1;
        c.seq += 1;
        fill(&mut c.out, c.seq);
        c.sent_at = now;
        c.waiting = true;
        c.sock.send(&c.out).map(drop)
    };
    let now = Instant::now();
    for (i, c) in clients.iter_mut().enumerate() {
        if send(c, now).is_err() {
            (failed[i], errors) = (true, errors + 1);
        }
    }
    // A count has no warm-up and no window: it ends when every datagram is accounted for
    // (each within its loss timeout, so the run is bounded).
    let (warmup, secs) = match count {
        Some(_) => (0.0, 3600.0 * 24.0),
        None => (opts.warmup, opts.secs),
    };
    let t_start = now + Duration::from_secs_f64(warmup);
    let t_end = t_start + Duration::from_secs_f64(secs);
    let (mut w_start, mut w_end, mut measuring, mut ended) = (t_start, t_end, false, false);
    let mut progress = Progress::new(opts.progress, t_end - now);
    let mut inb = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        progress.tick(now, measuring.then_some(w_start), msgs, errors, mismatches);
        if !measuring && !ended && now >= t_start {
            measuring = true;
            on_edge(Edge::Start);
            w_start = Instant::now();
        }
        if measuring && now >= t_end {
            (measuring, ended) = (false, true);
            w_end = Instant::now();
            on_edge(Edge::End);
        }
        if ended || failed.iter().all(|&f| f) {
            break;
        }
        // Loss: a datagram whose echo is overdue is given up on, and the next one sent.
        let mut next_deadline = if measuring { t_end } else { t_start };
        for (i, c) in clients.iter_mut().enumerate() {
            if failed[i] || !c.waiting {
                continue;
            }
            let due = c.sent_at + timeout;
            if now >= due {
                lost += u64::from(measuring);
                c.late.push_back(c.seq);
                if c.late.len() > LATE_KEPT {
                    c.late.pop_front();
                }
                if send(c, now).is_err() {
                    (failed[i], errors) = (true, errors + 1);
                }
            } else {
                next_deadline = next_deadline.min(due);
            }
        }
        // A count ends when no socket has a datagram in flight (nor one to send: see `send`).
        if count.is_some() && clients.iter().zip(&failed).all(|(c, &f)| f || !c.waiting) {
            break;
        }
        let wait = progress.cap(next_deadline.saturating_duration_since(now));
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("waiting for events: {e}")),
        }
        for event in events.iter() {
            let i = event.token().0;
            let c = &mut clients[i];
            // Edge-triggered: read until WouldBlock.
            loop {
                let n = match c.sock.recv(&mut inb) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // ECONNREFUSED (nobody at the server's port yet, or any more): the datagram
                    // in flight is lost; its timeout sends the next one.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                    Err(_) => {
                        if !failed[i] {
                            (failed[i], errors) = (true, errors + 1);
                        }
                        break;
                    }
                };
                let echo = &inb[..n];
                if c.waiting && echo == &c.out[..] {
                    let now = Instant::now();
                    if measuring {
                        msgs += 1;
                        c.msgs += 1;
                        let _ = hist.record((now - c.sent_at).as_nanos().max(1) as u64);
                    }
                    if send(c, now).is_err() {
                        (failed[i], errors) = (true, errors + 1);
                        break;
                    }
                } else if is_late(c, echo) {
                    late += 1;
                } else {
                    mismatches += 1;
                }
            }
        }
    }
    if !ended {
        w_end = Instant::now().max(w_start);
        if measuring {
            on_edge(Edge::End);
        }
    }
    progress.clear();
    let stalled = clients.iter().filter(|c| c.msgs == 0).count();
    Ok(UdpReport {
        report: Report {
            opts: opts.clone(),
            window_s: w_end.saturating_duration_since(w_start).as_secs_f64(),
            msgs,
            hist,
            errors,
            mismatches,
            stalled,
        },
        lost,
        late,
        rcvbuf_errors: match (drops_before, rcvbuf_errors()) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        },
    })
}

/// Whether `echo` is the echo of one of the datagrams `c` gave up on.
fn is_late(c: &Client, echo: &[u8]) -> bool {
    if echo.len() != c.out.len() {
        return false;
    }
    let mut expected = vec![0; echo.len()];
    c.late.iter().any(|&seq| {
        fill(&mut expected, seq);
        expected == echo
    })
}
