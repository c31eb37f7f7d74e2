//! Blocking sockets, one thread per connection: the seed's first model (同步阻塞 I/O), with a
//! thread where the seed forks a process (see [`super::fork`] for that one).
//!
//! The acceptor blocks in `accept`; each connection gets its own thread, which blocks in `read`,
//! writes back what it read, and repeats until end of stream. It is the plainest of the models:
//! the kernel's scheduler is the event loop, and each connection's code is a straight line.
//!
//! What it costs. Each connection holds a kernel task and a stack (64 KiB reserved here; the
//! pages it touches, mostly the 16 KiB buffer, stay resident until the thread ends), and
//! creating and ending a thread costs a `clone`, an `mmap` and an `munmap` per connection. Each
//! message wakes a sleeping thread and puts it back to sleep: two context switches and the
//! scheduler's run-queue work, where an event loop serves every ready socket in one wakeup.
//! With thousands of busy connections, that switching and the cache misses of thousands of
//! stacks are what the C10K problem was about.
//!
//! Where the seed is right and wrong. It says a blocked caller uses no CPU: true while a
//! connection is idle (ten thousand idle threads cost memory, not time), but it leaves out the
//! cost of waking up, paid on every message. Its C server reads once into a fixed 1 KiB buffer
//! and sends `strlen(buff)` bytes back, so binary data stops at the first NUL, longer (or
//! split) messages are cut, and the connection ends after one read; an `accept` error exits
//! the server. This version echoes exactly the bytes read until end of stream, whatever their
//! content or chunking, then shuts down the write side so the client reads EOF after all data.
//! A failed connection ends only itself; a thread that cannot be created closes only its
//! connection; running out of file descriptors backs off instead of exiting or spinning.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::AcceptFailure;

/// The stack reserved for each connection's thread (std's default is 2 MiB).
const STACK_SIZE: usize = 64 * 1024;
/// The buffer each connection reads into, on its thread's stack.
const BUF_SIZE: usize = 16 * 1024;
/// The first and the longest sleep after `accept` runs out of resources.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// The shortest time between two log lines of one kind.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Serves `listener` forever, one thread per connection. Returns only if the listener itself
/// fails (a closed or invalid socket).
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let mut accept_errors = AcceptErrors::new("threads");
    let mut spawn_log = RateLimitedLog::default();
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_errors.handle(e)?;
                continue;
            }
        };
        accept_errors.reset();
        let _ = stream.set_nodelay(true);
        let spawned = thread::Builder::new().stack_size(STACK_SIZE).spawn(move || echo(&mut { stream }));
        if let Err(e) = spawned {
            // The closure and the connection it owns were dropped, which closes it.
            spawn_log.log(format_args!("echo (threads): cannot start a thread ({e}); closing a connection"));
        }
    }
}

/// Echoes `stream` until end of stream, then shuts down its write side. Any error ends the
/// connection quietly. Allocates nothing (the buffer is on the stack), so a forked child may
/// run it too (see [`super::fork`]).
pub(super) fn echo(stream: &mut TcpStream) {
    let mut buf = [0u8; BUF_SIZE];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

/// What an accept loop (this module's and [`super::fork`]'s) does with an `accept` error:
/// skip the errors of one connection, back off when the process runs out of resources, and
/// give up only when the listener itself is broken.
pub(super) struct AcceptErrors {
    model: &'static str,
    backoff: Duration,
    log: RateLimitedLog,
}

impl AcceptErrors {
    /// Error handling for the accept loop of `model` (the name used in log lines).
    pub(super) fn new(model: &'static str) -> AcceptErrors {
        AcceptErrors { model, backoff: FIRST_BACKOFF, log: RateLimitedLog::default() }
    }

    /// Called after a successful `accept`: the next shortage starts with a short sleep again.
    pub(super) fn reset(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// Handles `e`: `Ok` to accept again (after a sleep, if needed), `Err` if the listener is
    /// unusable.
    pub(super) fn handle(&mut self, e: io::Error) -> io::Result<()> {
        match super::accept_failure(&e) {
            AcceptFailure::Listener => Err(e),
            AcceptFailure::Connection => Ok(()),
            // Sleep instead of spinning on an accept that would fail again at once.
            AcceptFailure::Resources => {
                let (model, backoff) = (self.model, self.backoff);
                self.log.log(format_args!("echo ({model}): accept: {e}; retrying in {backoff:?}"));
                thread::sleep(backoff);
                self.backoff = (backoff * 2).min(MAX_BACKOFF);
                Ok(())
            }
        }
    }
}

/// Writes a line to stderr at most once per second, so that a persistent error does not flood
/// the log (the lines in between are dropped).
#[derive(Default)]
pub(super) struct RateLimitedLog {
    last: Option<Instant>,
}

impl RateLimitedLog {
    /// Writes `line` unless a line was written less than a second ago.
    pub(super) fn log(&mut self, line: fmt::Arguments<'_>) {
        let now = Instant::now();
        if self.last.is_none_or(|last| now.duration_since(last) >= LOG_INTERVAL) {
            self.last = Some(now);
            eprintln!("{line}");
        }
    }
}
