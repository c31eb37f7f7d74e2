//! Signal-driven I/O: one thread, and the kernel tells it which socket to look at.
//!
//! The seed installs a `SIGIO` handler and finds the model useless for TCP: a stream socket
//! raises `SIGIO` for many reasons and the handler cannot tell which socket, or why. Two Linux
//! additions answer that. `F_SETSIG` makes a socket raise a realtime signal instead, and a
//! realtime signal is queued (one per event, not merged) with a siginfo naming the fd
//! (`si_fd`) and the event (`si_band`: `POLLIN`, `POLLOUT`, ...). And instead of a handler,
//! which could do almost nothing safely, the signals are blocked in this thread before any
//! socket is set up, so they stay queued until `sigtimedwait` takes them one by one: a
//! readiness loop, like `poll`'s, with the kernel keeping the list of ready fds.
//!
//! The signal is `SIGRTMIN + 2`, not `SIGRTMIN`: other libraries (profilers, runtimes, GCs)
//! tend to claim the first realtime signals. The listener and each accepted socket are owned by
//! this thread (`F_OWNER_TID`), so their signals are queued for it alone even when other
//! threads of the process leave them unblocked. A signal for the listener means "accept"; for a
//! connection, read and write until the socket would block. Signals are edge-like (one per new
//! segment or freed send space, none for data already waiting), so a signalled socket stays in
//! a ready list until it would block (`EAGAIN`), and a new socket starts there, for data that
//! came before it. The ready list is served round-robin, a few syscalls per socket per turn,
//! collecting newly queued signals between turns: one busy connection cannot hold up the others.
//!
//! Realtime signals are queued per user up to `RLIMIT_SIGPENDING` (`ulimit -i`); when the
//! queue is full the kernel sends a plain `SIGIO` instead, which names no fd. That is the
//! fallback: on `SIGIO`, try the listener and every connection. The loop also does this full
//! scan at least once a second, cheap insurance against any notification lost some other
//! way. A queued signal can name an fd already closed: an unknown fd is ignored, and a reused
//! one just costs a read that would block. The price of the model: a signal per event, each a
//! system call to take, most finding the work already done.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::nonblocking::{self, Step};
use super::sys;

/// The longest time between two full scans of every socket.
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// After a failed accept (out of fds), the first pause before trying again; it doubles
/// with each failure up to [`PAUSE_MAX`].
const PAUSE_MIN: Duration = Duration::from_millis(5);
const PAUSE_MAX: Duration = Duration::from_millis(200);

/// Serves `listener` forever, on this thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let signo = sys::sigrtmin() + 2;
    // Blocked before any socket can raise them: queued, never delivered to a handler.
    sys::block_signals(&[signo, libc::SIGIO])?;
    sys::set_signal_driven(listener.as_raw_fd(), signo)?;
    let mut server = Server {
        listener,
        signo,
        conns: HashMap::new(),
        ready: VecDeque::new(),
        accept_at: None,
        pause: PAUSE_MIN,
        warned_at: None,
    };
    // Connections that arrived before the listener was signal-driven raised no signal.
    server.accept_all();
    let mut next_scan = Instant::now() + SCAN_EVERY;
    loop {
        // Sleep for a signal only when no socket is waiting for its turn; otherwise just
        // collect the signals already queued, then give every ready socket a turn.
        let wake = server.accept_at.map_or(next_scan, |at| at.min(next_scan));
        let mut wait = if server.ready.is_empty() {
            wake.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        while let Some(signal) = sys::wait_signal(&[signo, libc::SIGIO], wait)? {
            if signal.signo == signo {
                server.signalled(signal.fd);
            } else {
                server.scan(); // plain SIGIO: the realtime queue overflowed
            }
            wait = Duration::ZERO;
        }
        server.serve_ready();
        let now = Instant::now();
        if server.accept_at.is_some_and(|at| now >= at) {
            server.accept_at = None;
            server.accept_all();
        }
        if now >= next_scan {
            server.scan();
            next_scan = now + SCAN_EVERY;
        }
    }
}

struct Server {
    listener: TcpListener,
    /// The realtime signal the sockets raise.
    signo: libc::c_int,
    conns: HashMap<RawFd, Conn>,
    /// Connections to serve, in turn: signalled, and not yet found to be blocked.
    ready: VecDeque<RawFd>,
    /// While accepting is paused after a failure: when to try again.
    accept_at: Option<Instant>,
    /// The next pause, should accepting fail again.
    pause: Duration,
    /// When an accept failure was last reported (at most one line a second).
    warned_at: Option<Instant>,
}

impl Server {
    /// Handles a signal for `fd`: accept, or queue the connection for its turn.
    fn signalled(&mut self, fd: RawFd) {
        if fd == self.listener.as_raw_fd() {
            self.accept_all();
        } else {
            self.make_ready(fd); // (an fd closed since the signal was queued is ignored)
        }
    }

    fn make_ready(&mut self, fd: RawFd) {
        if let Some(conn) = self.conns.get_mut(&fd) {
            if !conn.queued {
                conn.queued = true;
                self.ready.push_back(fd);
            }
        }
    }

    /// Gives each connection waiting for its turn a few syscalls' worth of echoing: round-robin,
    /// so that one busy connection cannot hold up the others. One still busy goes back in line.
    fn serve_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(fd) = self.ready.pop_front() else { break };
            let Some(conn) = self.conns.get_mut(&fd) else { continue };
            conn.queued = false;
            match conn.advance(TURN) {
                Turn::Blocked => {}
                Turn::More => {
                    conn.queued = true;
                    self.ready.push_back(fd);
                }
                Turn::Over => drop(self.conns.remove(&fd)), // closes it
            }
        }
    }

    /// Tries every socket: the fallback when signals were lost.
    fn scan(&mut self) {
        self.accept_all();
        let fds: Vec<RawFd> = self.conns.keys().copied().collect();
        for fd in fds {
            self.make_ready(fd);
        }
    }

    /// Accepts every pending connection, unless accepting is paused.
    fn accept_all(&mut self) {
        while self.accept_at.is_none() {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    self.pause = PAUSE_MIN;
                    self.add(stream);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if super::accept_failure(&e) == super::AcceptFailure::Connection => {}
                // Out of fds or memory (or a broken listener, which also gets no busy retry):
                // pause accepting; connections go on being served, and may close and free fds.
                Err(e) => {
                    let now = Instant::now();
                    if self.warned_at.is_none_or(|at| now - at >= Duration::from_secs(1)) {
                        eprintln!("echo (sigio): accept: {e}; pausing accepts for {:?}", self.pause);
                        self.warned_at = Some(now);
                    }
                    self.accept_at = Some(now + self.pause);
                    self.pause = (self.pause * 2).min(PAUSE_MAX);
                }
            }
        }
    }

    /// Makes a new connection signal-driven, then serves what it already has.
    fn add(&mut self, stream: TcpStream) {
        let Ok(conn) = nonblocking::Conn::new(stream) else { return }; // ends only this connection
        let fd = conn.fd();
        if sys::set_signal_driven(fd, self.signo).is_err() {
            return;
        }
        self.conns.insert(fd, Conn { conn, queued: false });
        self.make_ready(fd);
    }
}

/// Steps (each a few syscalls at most) a ready connection may take per turn, before the next
/// one's turn.
const TURN: usize = 8;

/// What a connection's turn ended with.
enum Turn {
    /// The socket would block: its next signal brings it back.
    Blocked,
    /// It used its turn and may have more to do.
    More,
    /// Echoed to the end of its stream and shut down, or failed: to be closed.
    Over,
}

/// One connection: the same echo state as [`nonblocking`]'s (one buffer, no reading while
/// output is pending), and whether it is in the server's ready list.
struct Conn {
    conn: nonblocking::Conn,
    queued: bool,
}

impl Conn {
    /// Echoes for at most `budget` steps, or until the socket would block.
    fn advance(&mut self, budget: usize) -> Turn {
        for _ in 0..budget {
            match self.conn.step() {
                Ok(Step::Progress) => {}
                Ok(Step::Idle) => return Turn::Blocked,
                Ok(Step::Closed) | Err(_) => return Turn::Over,
            }
        }
        Turn::More
    }
}
