//! The step-by-step trace (cargo feature `trace`): the proactor's own steps ([`Event`]), and,
//! with the feature, the shared recorder (`start`, `take`, ...: see [`executor::trace`]).
//!
//! The loop's steps ([`LoopEvent`]) and the epoll and `shutdown` steps ([`SysEvent`], which
//! the epoll backend takes too) are the shared executor's. [`Event`] holds the rest, grouped
//! by who takes the step: the io_uring backend (SQEs, `io_uring_enter`, CQEs), the POSIX aio
//! backend (requests handed to glibc or to a helper thread, and their completions), the epoll
//! backend (operations queued, performed at readiness, and posted), the provided-buffer ring,
//! the driver (wakes, spills, sends behind) and the streams.
//!
//! # Adding a step
//!
//! Add a variant to [`Event`] with the step's data as fields (plain values: a step is kept
//! after the operation is over, and read on another thread), its sentence to `Display` (the
//! words `echo-lab trace` prints), and call `stats::trace_step!(trace::Event::Variant { .. })`
//! where it happens. The expression is evaluated only while tracing is on, and compiled out
//! without the feature. The drawings of `echo-lab trace` show a variant they do not know yet
//! as a note in its words; teach them to draw it by matching on it there.

use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::RawFd;

pub use executor::readiness::Direction;
#[cfg(feature = "trace")]
pub use executor::trace::{start, start_at_most, stop, take, Step};
pub use executor::trace::{LoopEvent, SysEvent};

pub use self::op::{AioWait, Behind, Call, Op, Reporter, UringWait};
use self::op::{Outcome, Queued, Sqe};

mod op;
#[cfg(test)]
mod tests;

/// The proactor's steps (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    // ------------------------------------------------------------------ io_uring
    /// The submission queue is full: `io_uring_enter` submits it before an SQE can be queued.
    SqFull,
    /// An SQE queued in the submission ring (no syscall yet).
    SqeQueued {
        /// Its `user_data`: the driver's slot of the operation.
        user_data: usize,
        /// The operation.
        op: Op,
    },
    /// A `CLOSE` SQE, queued after every SQE already queued for the fd.
    CloseQueued {
        /// The fd.
        fd: RawFd,
    },
    /// An `ASYNC_CANCEL` SQE for an operation whose future was dropped.
    CancelQueued {
        /// The cancelled operation's `user_data`.
        user_data: usize,
    },
    /// The turn's `io_uring_enter`: submit the queued SQEs and maybe wait.
    Enter {
        /// SQEs submitted.
        submit: usize,
        /// How long it may wait.
        wait: UringWait,
    },
    /// The turn reads the completion ring without a syscall (nothing to submit, no wait).
    CqRead,
    /// CQEs found in the completion ring.
    Cqes {
        /// How many.
        count: usize,
    },
    /// The CQE of the notifier's poll: another thread woke a task.
    NotifierCqe,
    /// An operation's CQE.
    Cqe {
        /// Its `user_data`.
        user_data: usize,
        /// The operation, if its SQE was queued while tracing.
        op: Option<Op>,
        /// The result: bytes or an fd when `>= 0`, `-errno` otherwise.
        result: i32,
        /// The provided-buffer ring's buffer the bytes are in.
        ring_buffer: Option<u16>,
        /// More CQEs follow from the same SQE (a multishot operation).
        more: bool,
    },

    // ------------------------------------------------------------------ POSIX aio
    /// An accept or connect, which POSIX aio lacks, handed to one of the runtime's helper
    /// threads.
    HelperJob {
        /// Accept (else connect).
        accept: bool,
        /// The socket.
        fd: RawFd,
        /// The request's key (the driver's slot).
        request: usize,
    },
    /// An `aio_read` or `aio_write` handed to glibc, whose helper thread runs a blocking
    /// `read` or `write`.
    AioSubmitted {
        /// `aio_write` (else `aio_read`).
        write: bool,
        /// The fd the request runs on.
        fd: RawFd,
        /// The bytes asked for.
        len: u32,
        /// The request's key.
        request: usize,
    },
    /// The turn's `poll` of the notifier and the completion eventfd (`AioNotify::Thread`), and
    /// the signalfd (`AioNotify::Signal`).
    AioPoll {
        /// How long it may wait.
        wait: AioWait,
        /// The signalfd is polled too.
        signals: bool,
    },
    /// The turn's `aio_suspend` on the requests in glibc and the wake read of the notifier
    /// (`AioNotify::Suspend`).
    AioSuspend {
        /// Requests listed (the wake read included); none when it does not wait.
        requests: usize,
        /// How long it may wait.
        wait: AioWait,
    },
    /// A request is over.
    AioDone {
        /// The request's key.
        request: usize,
        /// Its result (`-errno` on failure).
        result: i32,
        /// Who reported it.
        by: Reporter,
    },

    // ------------------------------------------------------------------ epoll emulation
    /// An operation queued in the driver's queue of its fd, to be performed at readiness.
    Queued {
        /// The operation's index (the driver's slot).
        index: usize,
        /// The operation.
        op: Op,
        /// Which queue of the fd.
        queue: Direction,
        /// The fd is ready already: it is performed at the next turn.
        ready: bool,
    },
    /// A queued operation cancelled before it ran: just removed.
    Dequeued {
        /// The operation's index.
        index: usize,
    },
    /// An epoll readiness event for an fd.
    FdReady {
        /// The fd.
        fd: RawFd,
        /// What it said (`executor::readiness` bits).
        ready: u8,
    },
    /// `connect` started by the backend for an operation.
    Connect {
        /// The socket.
        fd: RawFd,
        /// The operation's index.
        index: usize,
        /// 0, or the errno (`EINPROGRESS`: done when writable).
        result: Result<usize, i32>,
    },
    /// `accept4` performed for an operation.
    Accept {
        /// The listener.
        fd: RawFd,
        /// The operation's index.
        index: usize,
        /// The new fd, or the errno.
        result: Result<usize, i32>,
    },
    /// `getsockopt(SO_ERROR)` after a connect's socket became writable.
    Connected {
        /// The socket.
        fd: RawFd,
        /// The operation's index.
        index: usize,
        /// 0, or the errno.
        result: Result<usize, i32>,
    },
    /// A `recv`, `send`, `recvmsg` or `sendmsg` performed for an operation.
    Transfer {
        /// Which syscall.
        call: Call,
        /// The socket.
        fd: RawFd,
        /// The bytes asked for (1 for a datagram).
        len: usize,
        /// The operation's index.
        index: usize,
        /// The bytes transferred, or the errno (`EAGAIN`: the operation stays queued).
        result: Result<usize, i32>,
    },
    /// A send behind made at once, by the task that hands its bytes over: the socket was known
    /// to be writable and no send was queued on it (see `Io::send_now`).
    SentNow {
        /// The socket.
        fd: RawFd,
        /// The bytes asked for.
        len: usize,
        /// The bytes sent, or the errno (then the send goes to its queue as an operation).
        result: Result<usize, i32>,
    },
    /// A buffer taken for a receive at readiness, not before.
    Picked {
        /// The buffer's id.
        id: u16,
    },
    /// An operation's completion posted to the driver.
    Posted {
        /// The operation's index.
        index: usize,
        /// Its result (`-errno` on failure).
        result: i32,
        /// The buffer picked at readiness the bytes are in.
        picked: Option<u16>,
    },
    /// Completions were posted before the wait: the turn skips `epoll_wait`.
    PostedEarly,

    // ------------------------------------------------------------------ the buffer ring
    /// The provided-buffer ring grows.
    RingGrew {
        /// Buffers added.
        added: u16,
        /// Their size in bytes.
        size: u32,
        /// The buffers it has now.
        now: u32,
    },
    /// A completion took a piece of a ring buffer the kernel goes on filling.
    RingPiece {
        /// The buffer.
        bid: u16,
        /// The piece's bytes.
        bytes: u32,
        /// Where in the buffer it starts.
        offset: u32,
    },
    /// A ring buffer goes back to the ring.
    RingBufferBack {
        /// The buffer.
        bid: u16,
    },
    /// The ring shrinks (load has fallen).
    RingShrank {
        /// The buffers it has now.
        now: u32,
    },

    // ------------------------------------------------------------------ the driver
    /// A completion wakes the task waiting for it.
    Wake,
    /// The send ahead of a waiting call is stalled on the peer: its task is woken, so that it
    /// can give back a ring buffer it holds.
    WakeStalled,
    /// Received bytes copied out of their ring buffer (nobody reads the stream), and the
    /// buffer given back.
    Spilled {
        /// The bytes copied.
        bytes: i32,
        /// The buffer.
        bid: u16,
    },
    /// A stream that holds something waits for room in the memory budget before it receives
    /// again (see `Builder::memory_budget`).
    BudgetRoom {
        /// The stream's fd.
        fd: RawFd,
    },
    /// A stream dropped while its send behind is in flight: the driver closes the fd after.
    DroppedBehind {
        /// The stream's fd.
        fd: RawFd,
    },
    /// The peer of a dropped stream sent data while its send behind was in flight: as a closed
    /// socket would, it resets the connection (the send cancelled, the socket closed).
    DroppedPeerSent {
        /// The stream's fd.
        fd: RawFd,
    },
    /// A send behind was short (the peer's window is full): the driver sends the rest.
    BehindShort {
        /// The bytes it took.
        sent: i32,
        /// The bytes it was asked to send.
        asked: usize,
    },
    /// A send behind is over: complete, or failed.
    BehindOver {
        /// The errno it failed with (0: it sent nothing), or `None`.
        error: Option<i32>,
        /// The ring buffer it sent from, given back (else its own buffer, dropped).
        ring_buffer: Option<u16>,
        /// Who holds it.
        owner: Behind,
        /// The stream's fd.
        fd: RawFd,
    },
    /// A send behind's unsent bytes copied out of the ring buffer, which goes back.
    BehindDetached {
        /// The bytes copied.
        bytes: usize,
        /// The buffer.
        bid: u16,
    },

    // ------------------------------------------------------------------ the streams
    /// A read waits for the next CQE of its multishot receive (no new SQE).
    MultishotWaits {
        /// The stream's fd.
        fd: RawFd,
    },
    /// A write waits behind a stalled send: its ring buffer's bytes are copied out first.
    AheadStalledCopy {
        /// The bytes copied.
        bytes: usize,
    },
    /// A write's send found the peer's window full: its unsent bytes are copied out of the
    /// ring buffer, which goes back.
    WindowFullCopy {
        /// The bytes copied.
        bytes: usize,
    },
}

impl Event {
    /// A syscall's result as the trace keeps it: the count, or the errno.
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    pub(crate) fn result_of(result: Result<usize, &io::Error>) -> Result<usize, i32> {
        result.map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// `s` when `n` is not 1.
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            // io_uring
            Event::SqFull => f.write_str("  the SQ is full: io_uring_enter to submit it"),
            Event::SqeQueued { user_data, op } => {
                write!(f, "  queued SQE {} (user_data {user_data}); no syscall yet", Sqe(op))
            }
            Event::CloseQueued { fd } => {
                write!(f, "  queued SQE CLOSE fd {fd}, after every SQE already queued for it")
            }
            Event::CancelQueued { user_data } => {
                write!(f, "  queued SQE ASYNC_CANCEL for user_data {user_data} (its future was dropped)")
            }
            Event::Enter { submit, wait } => {
                write!(f, "io_uring_enter: submit {submit} SQE{}, ", plural(submit))?;
                match wait {
                    UringWait::No => f.write_str("do not wait"),
                    UringWait::Forever => f.write_str("nothing to run: sleep until a completion arrives"),
                    UringWait::AtMost(t) => {
                        write!(f, "sleep until a completion arrives or {t:?} pass (the next timer)")
                    }
                }
            }
            Event::CqRead => f.write_str("read the CQ ring in shared memory: no syscall"),
            Event::Cqes { count } => write!(f, "  {count} CQE{} in the completion ring", plural(count)),
            Event::NotifierCqe => f.write_str("  CQE of the notifier's poll: another thread woke a task"),
            Event::Cqe { user_data, op, result, ring_buffer, more } => {
                let name = op.map_or("?", Op::name);
                write!(f, "  CQE user_data {user_data} ({name}): result {result}")?;
                if let Some(bid) = ring_buffer {
                    write!(f, ", in ring buffer {bid}")?;
                }
                if more {
                    f.write_str(", more to come from the same SQE")?;
                }
                Ok(())
            }

            // POSIX aio
            Event::HelperJob { accept, fd, request } => write!(
                f,
                "  {} on fd {fd}: POSIX aio has none; handed to one of this runtime's helper threads (request {request})",
                if accept { "accept" } else { "connect" }
            ),
            Event::AioSubmitted { write, fd, len, request } => write!(
                f,
                "  {}(fd {fd}, {len} bytes) handed to glibc (request {request}): a glibc helper thread runs a \
                 blocking {} on it{}",
                if write { "aio_write" } else { "aio_read" },
                if write { "write" } else { "read (after a pread that fails with ESPIPE on a socket)" },
                if write { "" } else { ", and stays blocked there until data comes" }
            ),
            Event::AioPoll { wait, signals } => {
                f.write_str(if signals {
                    "poll(notifier, completion eventfd, signalfd; "
                } else {
                    "poll(notifier, completion eventfd; "
                })?;
                match wait {
                    AioWait::Forever => f.write_str("no timeout")?,
                    AioWait::No => f.write_str("no wait, no syscall")?,
                    AioWait::Rescan => f.write_str("timeout 1 s, to rescan for notifications glibc dropped")?,
                    AioWait::AtMost(t) => write!(f, "timeout {t:?}")?,
                }
                f.write_str(if wait == AioWait::No {
                    "): collect what has finished"
                } else {
                    "): sleep until glibc reports a request done"
                })
            }
            Event::AioSuspend { requests, wait } => {
                match wait {
                    AioWait::No => {
                        return f.write_str("no wait, no syscall: aio_error on each request in glibc")
                    }
                    AioWait::Forever => write!(f, "aio_suspend({requests} requests; no timeout")?,
                    AioWait::Rescan => write!(f, "aio_suspend({requests} requests; timeout 1 s")?,
                    AioWait::AtMost(t) => write!(f, "aio_suspend({requests} requests; timeout {t:?}")?,
                }
                f.write_str(
                    "): sleep until glibc finishes one of them (the wake read of the notifier included), \
                     then aio_error on each",
                )
            }
            Event::AioDone { request, result, by } => {
                write!(f, "  request {request} done: result {result}, reported by ")?;
                match by {
                    Reporter::Glibc { tid } => write!(
                        f,
                        "glibc's notification thread {tid}, a thread created for this one completion"
                    ),
                    Reporter::Helper => f.write_str("a helper thread"),
                    Reporter::Signal => f.write_str("glibc's realtime signal, read from the signalfd"),
                    Reporter::Suspend => f.write_str("aio_error, after aio_suspend returned"),
                }
            }

            // epoll emulation
            Event::Queued { index, op, queue, ready } => write!(
                f,
                "  queued {} (op {index}) in the driver's {} queue of fd {}: {}",
                Queued(op),
                if queue == Direction::Read { "read" } else { "write" },
                op.fd(),
                if ready {
                    "fd is ready: performed at the next turn"
                } else {
                    "performed when epoll says fd is ready; no syscall yet"
                }
            ),
            Event::Dequeued { index } => write!(
                f,
                "  cancel op {index}: it was still in the driver's queue, never handed to the kernel; just removed"
            ),
            Event::FdReady { fd, ready } => {
                write!(f, "  fd {fd}: {} (readiness event)", executor::readiness::words(ready))
            }
            Event::Connect { fd, index, result } => {
                write!(f, "  connect(fd {fd}) for op {index} → {}", Outcome(result))
            }
            Event::Accept { fd, index, result } => {
                write!(f, "  accept4(fd {fd}) for op {index} → {}", Outcome(result))
            }
            Event::Connected { fd, index, result } => {
                write!(f, "  getsockopt(SO_ERROR) on fd {fd} for op {index} → {}", Outcome(result))
            }
            Event::Transfer { call, fd, len, index, result } => write!(
                f,
                "  {}(fd {fd}, {len} bytes) for op {index}, by the driver → {}",
                call.name(),
                Outcome(result)
            ),
            Event::SentNow { fd, len, result } => write!(
                f,
                "  send(fd {fd}, {len} bytes) at once, by the task: fd is writable, no send queued → {}",
                Outcome(result)
            ),
            Event::Picked { id } => {
                write!(f, "  the driver took a 4 KiB buffer for it only now, at readiness (id {id})")
            }
            Event::Posted { index, result, picked } => {
                write!(f, "  post completion of op {index}: result {result}")?;
                match picked {
                    Some(id) => write!(f, ", in picked buffer {id}"),
                    None => Ok(()),
                }
            }
            Event::PostedEarly => f.write_str("  completions posted: back to the tasks without an epoll_wait"),

            // the buffer ring
            Event::RingGrew { added, size, now } => {
                write!(f, "  the buffer ring runs low: {added} more buffers of {size} bytes (now {now})")
            }
            Event::RingPiece { bid, bytes, offset } => write!(
                f,
                "  ring buffer {bid} partly consumed: {bytes} bytes at offset {offset}; the kernel goes on filling it"
            ),
            Event::RingBufferBack { bid } => {
                write!(f, "  ring buffer {bid} goes back to the ring (no syscall: the ring is shared memory)")
            }
            Event::RingShrank { now } => write!(f, "  the buffer ring shrinks back to {now} buffers"),

            // the driver
            Event::Wake => f.write_str("    → wake the task waiting for it"),
            Event::WakeStalled => f.write_str("    → wake the task waiting for it: the send ahead is stalled"),
            Event::Spilled { bytes, bid } => write!(
                f,
                "    nobody reads the stream now: copy the {bytes} bytes out and give ring buffer {bid} back"
            ),
            Event::BudgetRoom { fd } => {
                write!(f, "  the memory budget is taken: fd {fd} waits for room before it receives again")
            }
            Event::DroppedBehind { fd } => write!(
                f,
                "  the stream is dropped with a SEND behind in flight: fd {fd} is closed once it is over"
            ),
            Event::DroppedPeerSent { fd } => write!(
                f,
                "  the peer of dropped fd {fd} sent data: the connection is reset, as a closed socket's would be"
            ),
            Event::BehindShort { sent, asked } => write!(
                f,
                "    SEND took {sent} of {asked} bytes (the peer's window is full): the driver sends the rest itself"
            ),
            Event::BehindOver { error, ring_buffer, owner, fd } => {
                match error {
                    None => f.write_str("    SEND complete: the driver ")?,
                    Some(0) => write!(f, "    SEND failed ({}): the driver ", io::Error::from(io::ErrorKind::WriteZero))?,
                    Some(errno) => write!(f, "    SEND failed ({}): the driver ", io::Error::from_raw_os_error(errno))?,
                }
                match ring_buffer {
                    Some(bid) => write!(f, "gives ring buffer {bid} back; ")?,
                    None => f.write_str("drops the buffer; ")?,
                }
                match (owner, error) {
                    (Behind::Dropped, _) => write!(f, "the stream was dropped: fd {fd} is closed now"),
                    (_, Some(_)) => f.write_str("the stream's next call returns the error"),
                    (Behind::Quiet, None) => f.write_str("the task is not woken"),
                    (Behind::Waited, None) => f.write_str("a call on the stream waits for it"),
                }
            }
            Event::BehindDetached { bytes, bid } => write!(
                f,
                "  the peer's window is full: the driver copies the {bytes} unsent bytes out of ring buffer {bid} and gives it back"
            ),

            // the streams
            Event::MultishotWaits { fd } => write!(
                f,
                "  wait for the next CQE of the multishot RECV on fd {fd}: it stays armed in the kernel, no new SQE"
            ),
            Event::AheadStalledCopy { bytes } => write!(
                f,
                "  the send ahead waits for the peer: copy the {bytes} bytes out of the ring buffer and give it back"
            ),
            Event::WindowFullCopy { bytes } => write!(
                f,
                "  the peer's window is full: copy the {bytes} unsent bytes out of the ring buffer and give it back"
            ),
        }
    }
}

impl executor::trace::Event for Event {
    fn as_any(&self) -> &dyn Any {
        self
    }
}
