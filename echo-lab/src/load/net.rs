//! The load's sockets: connecting (with retries), the poller that watches them, and the bytes
//! each message carries.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::options::Options;
use crate::sys;

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
