//! Synchronous non-blocking I/O (the seed's 同步非阻塞 I/O), done the way its TODO suggests: one
//! thread, every socket `O_NONBLOCK` (the listener too), and a loop that goes round them in turn.
//! Each pass accepts whatever is waiting, then, for each connection, writes its pending bytes or,
//! when it has none, reads once and writes back what came. A call that cannot proceed fails at
//! once with `EWOULDBLOCK`, and the loop moves on to the next socket.
//!
//! Cost. Nothing tells the loop which sockets are ready, so it asks every one, each pass: with n
//! connections a pass is about n + 1 syscalls, of which only the ready ones do any work. Left to
//! itself the loop spins at 100% of a core while idle. Here, when a whole pass moved nothing, it
//! sleeps: 50 µs at first, doubling up to 5 ms, reset to zero on any progress. That trades the
//! spinning for up to 5 ms of extra latency after a quiet spell; idle, it still wakes 200 times a
//! second to make n + 1 useless syscalls. Memory: one 16 KiB buffer per connection. A connection
//! with unsent bytes is not read: that is the backpressure, a slow reader's data waits in the
//! kernel's socket buffers, not here.
//!
//! The seed is right that this is worse than select, and why: the wasted user/kernel round trips
//! (and, with the back-off, the trade between wasted CPU and latency), which readiness
//! notification removes; see [`super::poll`], which reuses this file's connection and accept
//! logic and only adds a way to wait. Its TODO's two threads with a recv list and a send list are
//! not needed: one connection only alternates between reading and writing, so one list will do.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

use super::trace::{Call, Event};
use super::AcceptFailure;

/// The one buffer of a connection: at most this many bytes wait to be echoed.
const BUF_SIZE: usize = 16 * 1024;

// The first sleep after a pass that moved nothing, and the longest.
const IDLE_SLEEP_MIN: Duration = Duration::from_micros(50);
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(5);

// The pause of accepts when out of file descriptors: the first, and the longest.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Serves `listener` forever, polling every socket in turn on this thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut gate = AcceptGate::new();
    let mut conns: Vec<Conn> = Vec::new();
    let mut sleep = Duration::ZERO;
    loop {
        let accepted = gate.accept_all(&listener, &mut conns)?;
        let pumped = step_all(&mut conns);
        sleep = next_sleep(sleep, accepted || pumped);
        if !sleep.is_zero() {
            thread::sleep(sleep);
        }
    }
}

/// Gives every connection one step, dropping the finished or failed ones; whether any moved.
fn step_all(conns: &mut Vec<Conn>) -> bool {
    let mut progress = false;
    conns.retain_mut(|conn| match conn.step() {
        Ok(Step::Idle) => true,
        Ok(Step::Progress) => {
            progress = true;
            true
        }
        Ok(Step::Closed) | Err(_) => {
            progress = true;
            false
        }
    });
    progress
}

/// The back-off: no sleep after progress, else 50 µs, doubling up to 5 ms.
fn next_sleep(current: Duration, progress: bool) -> Duration {
    if progress {
        Duration::ZERO
    } else if current.is_zero() {
        IDLE_SLEEP_MIN
    } else {
        (current * 2).min(IDLE_SLEEP_MAX)
    }
}

/// What one [`Conn::step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing: every call would have blocked.
    Idle,
    /// Some bytes moved.
    Progress,
    /// End of stream, everything echoed, write side shut down: drop the connection.
    Closed,
}

/// One echo connection: a non-blocking socket and at most one buffer of bytes still to send.
#[derive(Debug)]
pub(super) struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// The unsent bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Conn {
    /// Makes `stream` non-blocking, with `TCP_NODELAY`.
    pub(super) fn new(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: vec![0; BUF_SIZE].into_boxed_slice(), start: 0, end: 0 })
    }

    /// The socket's fd.
    pub(super) fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Whether bytes wait to be sent (and so the connection must not be read).
    pub(super) fn has_pending(&self) -> bool {
        self.start < self.end
    }

    /// Sends the pending bytes; if none remain, reads once and sends what came. At end of stream
    /// (which is only seen with nothing pending) shuts the write side down. Never blocks.
    pub(super) fn step(&mut self) -> io::Result<Step> {
        let flushed = self.flush()?;
        if self.has_pending() {
            return Ok(if flushed { Step::Progress } else { Step::Idle });
        }
        let read = self.stream.read(&mut self.buf);
        executor::trace_step!(Event::io(Call::Read, self.fd(), self.buf.len(), &read));
        match read {
            Ok(0) => {
                executor::trace_step!(Event::Shutdown { fd: self.fd() });
                self.stream.shutdown(Shutdown::Write)?;
                Ok(Step::Closed)
            }
            Ok(n) => {
                (self.start, self.end) = (0, n);
                self.flush()?;
                Ok(Step::Progress)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Ok(if flushed { Step::Progress } else { Step::Idle })
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Step::Progress),
            Err(e) => Err(e),
        }
    }

    /// Writes pending bytes until none remain or the socket is full; whether any were written.
    fn flush(&mut self) -> io::Result<bool> {
        let mut wrote = false;
        while self.has_pending() {
            let wrote_now = self.stream.write(&self.buf[self.start..self.end]);
            executor::trace_step!(Event::io(Call::Write, self.fd(), self.end - self.start, &wrote_now));
            match wrote_now {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(wrote)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        executor::trace_step!(Event::Closed { fd: self.fd() });
    }
}

/// Accepting, with a pause when the process or system is out of file descriptors: the pending
/// connection stays in the backlog, so retrying at once would fail again at once, forever.
#[derive(Debug)]
pub(super) struct AcceptGate {
    backoff: Duration,
    resume_at: Option<Instant>,
    last_log: Option<Instant>,
}

impl AcceptGate {
    /// An open gate.
    pub(super) fn new() -> AcceptGate {
        AcceptGate { backoff: Duration::ZERO, resume_at: None, last_log: None }
    }

    /// How long accepts stay paused from `now`; `None` when they may go on.
    pub(super) fn paused_for(&self, now: Instant) -> Option<Duration> {
        self.resume_at.filter(|&at| at > now).map(|at| at - now)
    }

    /// Accepts every waiting connection (non-blocking `listener`) into `conns`, unless paused;
    /// whether anything happened. Only errors of the listener itself are returned.
    pub(super) fn accept_all(&mut self, listener: &TcpListener, conns: &mut Vec<Conn>) -> io::Result<bool> {
        if self.paused_for(Instant::now()).is_some() {
            return Ok(false);
        }
        let mut progress = false;
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    executor::trace_step!(Event::Accepted {
                        listener: listener.as_raw_fd(),
                        fd: stream.as_raw_fd()
                    });
                    self.backoff = Duration::ZERO;
                    // A socket that cannot be set up is dropped, like a failed connection.
                    conns.extend(Conn::new(stream).ok());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                Err(e) => match super::accept_failure(&e) {
                    AcceptFailure::Listener => return Err(e),
                    // That connection is gone: go on.
                    AcceptFailure::Connection => {}
                    AcceptFailure::Resources => {
                        self.pause(&e);
                        return Ok(progress);
                    }
                },
            }
            progress = true;
        }
    }

    /// Pauses accepts for 5 ms, doubling up to 200 ms; logs at most once a second.
    fn pause(&mut self, e: &io::Error) {
        let now = Instant::now();
        self.backoff = (self.backoff * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        self.resume_at = Some(now + self.backoff);
        if self.last_log.is_none_or(|at| now - at >= Duration::from_secs(1)) {
            eprintln!("echo: accept: {e}; pausing accepts for {:?}", self.backoff);
            self.last_log = Some(now);
        }
    }
}
