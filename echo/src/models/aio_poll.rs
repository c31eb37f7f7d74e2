//! Linux native AIO as a readiness API: `IOCB_CMD_POLL` (Linux 4.18), the "aio-poll" of the
//! seed's last line ("in RedHat's tests epoll beats aio-poll").
//!
//! What it is. Linux's own asynchronous I/O interface (`io_setup`, `io_submit`, `io_getevents`:
//! libaio's API, made for `O_DIRECT` file I/O) is not POSIX aio, which glibc runs on helper
//! threads (the proactor's aio backend). Since 4.18 it also takes a poll request: an iocb with
//! opcode `IOCB_CMD_POLL`, an fd, and an event mask. The kernel checks the fd at once and, if
//! it is not ready, hooks the request on the fd's wait queue; when the fd becomes ready, the
//! request completes, and an event carrying the ready mask lands in the context's completion
//! ring, where `io_getevents` takes it. So it is a readiness model that reports through a
//! completion queue: the loop still does every `read` and `write` itself, as after `poll` or
//! `epoll_wait`. (Seastar's `linux-aio` reactor backend is built on it.)
//!
//! The loop. One context; the listener and each connection have at most one poll request in
//! flight: `POLLIN`, or `POLLOUT` while the connection has bytes to send (the backpressure, as
//! in [`super::poll`]). A request is one-shot: after its event the connection takes one step
//! ([`super::nonblocking`]'s connection: non-blocking reads and writes) and is armed again, and
//! all the re-arms of a loop turn go to the kernel in one `io_submit`. A connection is closed
//! only after its request has completed, never with one in flight: the kernel holds a
//! reference to the file of a polled fd, so closing the fd would not close the socket (and its
//! peer would wait), and the request's `data`, the fd number, could come back naming a newer
//! connection that reused it. No stop mechanism: like the other models, it serves until the
//! thread or process ends.
//!
//! How it differs from epoll. epoll keeps an interest set in the kernel: a socket is added once
//! (`epoll_ctl`) and stays; level-triggered, it is reported while it is ready, edge-triggered
//! once per change, and nothing needs re-arming. aio-poll keeps no interest set: a request is
//! one wait, used up by its completion, so every event is followed by a re-arm: an iocb copied
//! in, the socket's poll called again, its wait queue joined again. That is epoll's
//! `EPOLLONESHOT`, except that the re-arms batch (one `io_submit` carries every re-arm of a
//! turn, where `epoll_ctl` takes one fd per call). Per message, then, the loop makes
//! `io_getevents` and `io_submit` calls (each shared by every event of its turn) where
//! level-triggered epoll makes only `epoll_wait`.
//!
//! Capacity. A context's ring is sized at `io_setup` and cannot grow, and every request holds a
//! slot until its event is taken. The context starts with [`FIRST_CAPACITY`] slots; when more
//! requests must be in flight, a context twice as large (or more) replaces it: the old one is
//! destroyed (`io_destroy` cancels its requests and waits for them; the events it still held are
//! dropped, which loses nothing, since a poll request checks the socket as it is submitted and
//! finds the same readiness again) and every request is submitted anew. The sizes of all the
//! system's contexts together are bounded by `fs.aio-max-nr` (65,536 by default); when no
//! larger context can be made, a new connection that finds no free slot is closed, with one log
//! line a second.
//!
//! The seed's claim. "In RedHat's tests epoll beats aio-poll" comes with no numbers and no
//! date, and an AIO poll existed as experimental patches long before the mainline one (the
//! opcode 5 sat reserved, commented out, in linux/aio_abi.h for years before 4.18): what was
//! measured need not be this code. What the design predicts is above: one system call more per
//! turn than level-triggered epoll, and the socket's wait queue joined and left once per event.
//! What it costs here, in interleaved rounds beside epoll (the hand-written `mio` loop, and the
//! `reactor` runtime), `poll` and `select` (`echo-lab demo --runtimes
//! select,poll,aio-poll,reactor,mio --conns 100,1000 --rounds 5 --secs 3 --idle-conns 0`, and
//! the same with `--conns 1,10 --secs 2`; 2026-12-06, 2 shared vCPUs, load average 14 to 21;
//! medians, and round-by-round ratios with their min–max): with 1 connection, 4 syscalls per echo
//! against epoll's 3 (the re-arm's `io_submit`), and 1.12× (1.07–1.21) the mio loop's CPU; with
//! 10, 2.7 against 2.2 and 1.20× (1.05–1.29); with 100 and 1,000 busy connections every one of
//! the five makes 2.0 syscalls per echo (a turn's `io_submit` and `io_getevents`, like
//! `epoll_wait`, serve as many events as are ready) and their CPU per echo (4.4 to 5.7 µs, 93 %
//! of it the kernel's TCP) is the same within the noise. So epoll beats aio-poll by a syscall
//! per turn, which shows when turns are small, and not when they are full. A second run (the
//! same command with `--rounds 5 --secs 3`, 2026-12-06, load average 8 to 13; the record is
//! `docs/measurements/2026-12-06-demo-100-1000conns-64b-select-poll-aio-poll-reactor-mio-5rounds-3secs-0idle-conns.md`)
//! agreed at 100 connections, but at 1,000 found aio-poll at 1.42× (1.01–1.76) the mio loop's
//! CPU per echo round by round, with the same syscalls and user time: kernel time, the cost of
//! a one-shot request per event. `docs/09-seed-models.md` weighs the two runs.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::nonblocking::{AcceptGate, Conn, Step};
use super::sys::{AioContext, PollEvent, PollRequest};
use super::threads::RateLimitedLog;
use super::trace::Event;

/// The slots of the first context: requests that can be in flight at once before it is
/// replaced by a larger one.
pub const FIRST_CAPACITY: u32 = 256;

/// The most events taken per `io_getevents`.
const BATCH: usize = 256;

/// The `data` of the listener's request (a connection's is its fd, never negative).
const LISTENER: u64 = u64::MAX;

/// Serves `listener` forever with a Linux AIO poll loop on this thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let ctx = AioContext::new(FIRST_CAPACITY).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "io_setup failed ({e}): this kernel (or the container's seccomp policy) offers no Linux \
                 native AIO; the poll and reactor servers do the same with poll(2) and epoll"
            ),
        )
    })?;
    let mut server = Server {
        ctx,
        in_flight: 0,
        listener,
        listening: Listening::Paused,
        gate: AcceptGate::new(),
        conns: HashMap::new(),
        rearm: Vec::new(),
        fresh: Vec::new(),
        requests: Vec::new(),
        log: RateLimitedLog::default(),
    };
    // Connections that arrived before the first request are found by this first accept.
    server.accept()?;
    let mut events = Vec::with_capacity(BATCH);
    loop {
        server.submit()?;
        // While accepts are paused (out of fds), wake up when they may resume.
        let paused = server.gate.paused_for(Instant::now());
        if server.in_flight == 0 {
            // Nothing to wait for but the end of the pause (an empty ring would wait forever).
            std::thread::sleep(paused.unwrap_or(Duration::ZERO));
        } else {
            executor::trace_step!(Event::GetEvents { in_flight: server.in_flight });
            let taken = server.ctx.wait(&mut events, BATCH, paused)?;
            executor::trace_step!(Event::GetEventsReturned { events: taken });
        }
        for event in events.drain(..) {
            server.completed(event)?;
        }
        if server.listening == Listening::Paused && server.gate.paused_for(Instant::now()).is_none() {
            server.accept()?;
        }
    }
}

/// Where the listener's request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listening {
    /// Submitted, its event not yet taken.
    InFlight,
    /// To be submitted by the next `submit`.
    Armed,
    /// Not armed: accepts are paused (out of fds) until the gate opens.
    Paused,
}

/// The loop's state. Between two turns every connection is in exactly one place: in flight
/// (its request submitted, its event not yet taken), or in `rearm` or `fresh`, waiting for the
/// turn's `io_submit`.
struct Server {
    ctx: AioContext,
    /// Requests submitted whose events have not been taken: at most `ctx.capacity()`.
    in_flight: usize,
    listener: TcpListener,
    listening: Listening,
    gate: AcceptGate,
    conns: HashMap<RawFd, Conn>,
    /// Connections whose request completed this turn, to be armed again.
    rearm: Vec<RawFd>,
    /// Connections accepted this turn, to be armed for the first time.
    fresh: Vec<RawFd>,
    /// Scratch for `submit`.
    requests: Vec<PollRequest>,
    log: RateLimitedLog,
}

impl Server {
    /// Handles one completion: accept, or one step of the connection; then the connection waits
    /// for the next `submit`, or is closed.
    fn completed(&mut self, event: PollEvent) -> io::Result<()> {
        self.in_flight -= 1;
        executor::trace_step!(Event::PollReady {
            fd: (event.data != LISTENER).then_some(event.data as RawFd),
            revents: event.result.as_ref().map_or(0, |&revents| revents),
        });
        if event.data == LISTENER {
            self.listening = Listening::Paused;
            return match event.result {
                Ok(_) => self.accept(),
                Err(e) => Err(e),
            };
        }
        let fd = event.data as RawFd;
        let Some(conn) = self.conns.get_mut(&fd) else {
            debug_assert!(false, "an event for fd {fd}, which has no connection");
            return Ok(());
        };
        // An error of the request itself (none is expected for a socket) ends the connection;
        // POLLERR and POLLHUP come as events, and the step's read or write reports them.
        let keep = event.result.is_ok() && matches!(conn.step(), Ok(Step::Idle | Step::Progress));
        if keep {
            self.rearm.push(fd);
        } else {
            self.conns.remove(&fd); // closes it: nothing is in flight for it
        }
        Ok(())
    }

    /// Accepts every waiting connection (unless accepts are paused) and arms the listener
    /// (unless they are paused now). Only errors of the listener itself are returned.
    fn accept(&mut self) -> io::Result<()> {
        let mut accepted = Vec::new();
        self.gate.accept_all(&self.listener, &mut accepted)?;
        for conn in accepted {
            let fd = conn.fd();
            self.conns.insert(fd, conn);
            self.fresh.push(fd);
        }
        if self.gate.paused_for(Instant::now()).is_none() {
            self.listening = Listening::Armed;
        }
        Ok(())
    }

    /// Submits this turn's requests (the listener's, the re-arms, then the new connections') in
    /// one `io_submit`, or more if the kernel takes them in parts. Makes room first.
    fn submit(&mut self) -> io::Result<()> {
        let listener = usize::from(self.listening == Listening::Armed);
        let wanted = self.in_flight + listener + self.rearm.len() + self.fresh.len();
        if wanted > self.ctx.capacity() {
            self.grow(wanted);
        }
        self.requests.clear();
        if self.listening == Listening::Armed {
            self.requests.push(PollRequest {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                data: LISTENER,
            });
        }
        for fd in self.rearm.drain(..).chain(self.fresh.drain(..)) {
            let events = if self.conns[&fd].has_pending() { libc::POLLOUT } else { libc::POLLIN };
            self.requests.push(PollRequest { fd, events, data: fd as u64 });
        }
        for request in &self.requests {
            executor::trace_step!(Event::PollArmed {
                fd: (request.data != LISTENER).then_some(request.fd),
                writable: request.events == libc::POLLOUT,
            });
        }
        // Past the capacity (only when no larger context could be made), the last requests,
        // the new connections', are refused: a re-arm reuses the slot its event freed.
        let room = self.ctx.capacity() - self.in_flight;
        if self.requests.len() > room {
            let refused = self.requests.len() - room;
            for request in self.requests.drain(room..) {
                self.conns.remove(&request.fd);
            }
            let capacity = self.ctx.capacity();
            self.log.log(format_args!(
                "echo (aio-poll): {refused} connection(s) closed: the AIO context is full ({capacity} requests) \
                 and no larger one can be made (fs.aio-max-nr)"
            ));
        }
        let mut done = 0;
        while done < self.requests.len() {
            match self.ctx.submit_polls(&self.requests[done..]) {
                Ok(n) => {
                    executor::trace_step!(Event::Submitted { requests: n });
                    if self.requests[done..done + n].iter().any(|r| r.data == LISTENER) {
                        self.listening = Listening::InFlight;
                    }
                    self.in_flight += n;
                    done += n;
                }
                // The kernel refused requests[done]; it did not look at the ones after it.
                Err(e) if self.requests[done].data == LISTENER => {
                    return Err(if e.raw_os_error() == Some(libc::EINVAL) {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "io_submit(IOCB_CMD_POLL): {e}: this kernel has no AIO poll (Linux 4.18+)"
                            ),
                        )
                    } else {
                        e
                    });
                }
                Err(e) => {
                    let fd = self.requests[done].fd;
                    self.conns.remove(&fd); // ends only that connection
                    self.log.log(format_args!("echo (aio-poll): io_submit: {e}; a connection closed"));
                    done += 1;
                }
            }
        }
        Ok(())
    }

    /// Replaces the context with one of at least `wanted` slots (twice the old at least), and
    /// queues every request that was in flight to be submitted again. On failure (past
    /// `fs.aio-max-nr`, or out of memory) keeps the old one.
    fn grow(&mut self, wanted: usize) {
        let capacity = wanted.max(2 * self.ctx.capacity()).next_power_of_two();
        let bigger = match u32::try_from(capacity) {
            Ok(capacity) => AioContext::new(capacity),
            Err(_) => Err(io::ErrorKind::InvalidInput.into()),
        };
        let bigger = match bigger {
            Ok(bigger) => bigger,
            Err(e) => {
                self.log.log(format_args!(
                    "echo (aio-poll): io_setup({capacity}): {e}; the context stays as it is"
                ));
                return;
            }
        };
        // Dropping the old context destroys it: its requests are cancelled and waited for,
        // and the events it still held are gone. Every connection not waiting in `rearm` or
        // `fresh` had its request in flight there: submit it again.
        self.ctx = bigger;
        self.in_flight = 0;
        if self.listening == Listening::InFlight {
            self.listening = Listening::Armed;
        }
        let waiting: HashSet<RawFd> = self.rearm.iter().chain(&self.fresh).copied().collect();
        self.rearm.extend(self.conns.keys().filter(|fd| !waiting.contains(fd)));
    }
}
