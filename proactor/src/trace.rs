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
use std::time::Duration;

pub use executor::readiness::Direction;
#[cfg(feature = "trace")]
pub use executor::trace::{start, start_at_most, stop, take, Step};
pub use executor::trace::{LoopEvent, SysEvent};

use crate::backend::Request;

/// An operation as the trace names it: what its request asks, without the pointers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the request's: the socket, the length, the ring's group
pub enum Op {
    /// Accept one connection.
    Accept { fd: RawFd },
    /// Accept connections until cancelled (io_uring's multishot accept).
    AcceptMulti { fd: RawFd },
    /// Connect.
    Connect { fd: RawFd },
    /// Receive up to `len` bytes into the operation's buffer.
    Recv { fd: RawFd, len: u32 },
    /// Receive into buffers of ring `group` until cancelled (io_uring's multishot receive).
    RecvMulti { fd: RawFd, group: u16 },
    /// Receive into a buffer the backend picks when data is there (the epoll backend).
    RecvPick { fd: RawFd },
    /// Send `len` bytes; with `dontwait`, only what fits in the peer's window now.
    Send { fd: RawFd, len: u32, dontwait: bool },
    /// Receive one datagram and its source.
    RecvMsg { fd: RawFd },
    /// Send one datagram.
    SendMsg { fd: RawFd },
    /// Receive datagrams into buffers of ring `group` until cancelled.
    RecvMsgMulti { fd: RawFd, group: u16 },
}

impl Op {
    /// The operation `request` asks for.
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    pub(crate) fn of(request: &Request) -> Op {
        match *request {
            Request::Accept { fd, .. } => Op::Accept { fd },
            Request::AcceptMulti { fd } => Op::AcceptMulti { fd },
            Request::Connect { fd, .. } => Op::Connect { fd },
            Request::Recv { fd, len, .. } => Op::Recv { fd, len },
            Request::RecvMulti { fd, group } => Op::RecvMulti { fd, group },
            Request::RecvPick { fd } => Op::RecvPick { fd },
            Request::Send { fd, len, dontwait, .. } => Op::Send { fd, len, dontwait },
            Request::RecvMsg { fd, .. } => Op::RecvMsg { fd },
            Request::SendMsg { fd, .. } => Op::SendMsg { fd },
            Request::RecvMsgMulti { fd, group, .. } => Op::RecvMsgMulti { fd, group },
        }
    }

    /// The socket it operates on.
    pub fn fd(self) -> RawFd {
        match self {
            Op::Accept { fd }
            | Op::AcceptMulti { fd }
            | Op::Connect { fd }
            | Op::Recv { fd, .. }
            | Op::RecvMulti { fd, .. }
            | Op::RecvPick { fd }
            | Op::Send { fd, .. }
            | Op::RecvMsg { fd }
            | Op::SendMsg { fd }
            | Op::RecvMsgMulti { fd, .. } => fd,
        }
    }

    /// Whether one request goes on producing completions.
    pub fn is_multishot(self) -> bool {
        matches!(self, Op::AcceptMulti { .. } | Op::RecvMulti { .. } | Op::RecvMsgMulti { .. })
    }

    /// Whether it sends bytes to the peer.
    pub fn sends(self) -> bool {
        matches!(self, Op::Send { .. } | Op::SendMsg { .. })
    }

    /// Its io_uring opcode ("RECV" for a multishot receive too).
    pub fn opcode(self) -> &'static str {
        match self {
            Op::Accept { .. } | Op::AcceptMulti { .. } => "ACCEPT",
            Op::Connect { .. } => "CONNECT",
            Op::Recv { .. } | Op::RecvMulti { .. } | Op::RecvPick { .. } => "RECV",
            Op::Send { .. } => "SEND",
            Op::RecvMsg { .. } | Op::RecvMsgMulti { .. } => "RECVMSG",
            Op::SendMsg { .. } => "SENDMSG",
        }
    }

    /// Its name in the trace's sentences ("RECV", "multishot RECV").
    pub fn name(self) -> &'static str {
        match self {
            Op::Accept { .. } => "ACCEPT",
            Op::AcceptMulti { .. } => "multishot ACCEPT",
            Op::Connect { .. } => "CONNECT",
            Op::Recv { .. } => "RECV",
            Op::RecvMulti { .. } => "multishot RECV",
            Op::RecvPick { .. } => "RECV (buffer picked at readiness)",
            Op::Send { .. } => "SEND",
            Op::RecvMsg { .. } => "RECVMSG",
            Op::SendMsg { .. } => "SENDMSG",
            Op::RecvMsgMulti { .. } => "multishot RECVMSG",
        }
    }
}

/// How long `io_uring_enter` may wait for a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UringWait {
    /// It does not wait (tasks are runnable).
    No,
    /// Until a completion arrives (nothing to run, no timer).
    Forever,
    /// Until a completion arrives or this much time passes (the next timer).
    AtMost(Duration),
}

/// How long the aio backend's `poll` may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AioWait {
    /// Until something happens.
    Forever,
    /// Not at all (no syscall: what has finished is collected).
    No,
    /// One second, to rescan for notifications glibc dropped (requests are in glibc's hands).
    Rescan,
    /// This long (the next timer).
    AtMost(Duration),
}

/// Who reported an aio request done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// glibc's notification thread, created for this one completion (its thread id).
    Glibc {
        /// The thread's id (`gettid`).
        tid: i32,
    },
    /// One of this runtime's helper threads (an accept or connect).
    Helper,
}

/// The syscall the epoll backend performs for an operation, once its socket is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `recv`.
    Recv,
    /// `send`.
    Send,
    /// `recvmsg` (a datagram).
    RecvMsg,
    /// `sendmsg` (a datagram).
    SendMsg,
}

impl Call {
    /// The syscall's name.
    pub fn name(self) -> &'static str {
        match self {
            Call::Recv => "recv",
            Call::Send => "send",
            Call::RecvMsg => "recvmsg",
            Call::SendMsg => "sendmsg",
        }
    }

    /// Whether it sends bytes to the peer.
    pub fn sends(self) -> bool {
        matches!(self, Call::Send | Call::SendMsg)
    }
}

/// Who holds a send behind when it is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behind {
    /// Its stream, and a call on it waits for the send (it is woken).
    Waited,
    /// Its stream, and nobody waits for it (nobody is woken, unless it failed).
    Quiet,
    /// Nobody: the stream was dropped, and the driver closes its fd now.
    Dropped,
}

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
    /// The turn's `poll` of the notifier and the completion eventfd.
    AioPoll {
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
    /// A stream dropped while its send behind is in flight: the driver closes the fd after.
    DroppedBehind {
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

/// The epoll backend's words for an operation's syscall result.
struct Outcome(Result<usize, i32>);

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ok(n) => write!(f, "{n}"),
            Err(libc::EAGAIN) => {
                f.write_str("EAGAIN: not ready after all; the op stays queued until the next readiness event")
            }
            Err(libc::EINPROGRESS) => f.write_str("EINPROGRESS: done when writable"),
            Err(errno) => write!(f, "error: {}", io::Error::from_raw_os_error(errno)),
        }
    }
}

/// An operation as io_uring's SQE does it.
struct Sqe(Op);

impl fmt::Display for Sqe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::Accept { fd } => write!(f, "ACCEPT on fd {fd}"),
            Op::AcceptMulti { fd } => write!(f, "ACCEPT (multishot: one SQE, a CQE per connection) on fd {fd}"),
            Op::Connect { fd } => write!(f, "CONNECT fd {fd}"),
            Op::Recv { fd, len } => write!(f, "RECV fd {fd} into a {len}-byte buffer"),
            Op::RecvMulti { fd, .. } => {
                write!(f, "RECV (multishot, buffers picked from the ring when data comes) on fd {fd}")
            }
            Op::RecvPick { fd } => write!(f, "RECV fd {fd}, buffer picked at readiness"),
            Op::Send { fd, len, dontwait: false } => write!(f, "SEND {len} bytes on fd {fd}"),
            Op::Send { fd, len, dontwait: true } => write!(
                f,
                "SEND {len} bytes on fd {fd}, without waiting (a ring buffer: a full window must not pin it)"
            ),
            Op::RecvMsg { fd } => write!(f, "RECVMSG on fd {fd}: one datagram and its source address"),
            Op::SendMsg { fd } => write!(f, "SENDMSG on fd {fd}: one datagram"),
            Op::RecvMsgMulti { fd, group } => write!(
                f,
                "RECVMSG (multishot: one SQE for every peer, a CQE per datagram with its source, buffers from group {group}) on fd {fd}"
            ),
        }
    }
}

/// An operation as the epoll backend queues it.
struct Queued(Op);

impl fmt::Display for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::Accept { fd } => write!(f, "ACCEPT on fd {fd}"),
            Op::Connect { fd } => write!(f, "CONNECT fd {fd}"),
            Op::Recv { fd, len } => write!(f, "RECV fd {fd} into a {len}-byte buffer"),
            Op::RecvPick { fd } => write!(f, "RECV fd {fd} (no buffer yet: one is taken when data is there)"),
            Op::Send { fd, len, .. } => write!(f, "SEND {len} bytes on fd {fd}"),
            Op::RecvMsg { fd } => write!(f, "RECVMSG fd {fd} (one datagram and its source)"),
            Op::SendMsg { fd } => write!(f, "SENDMSG fd {fd} (one datagram)"),
            Op::AcceptMulti { fd } | Op::RecvMulti { fd, .. } | Op::RecvMsgMulti { fd, .. } => {
                write!(f, "multishot op on fd {fd}")
            }
        }
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
            Event::AioPoll { wait } => {
                f.write_str("poll(notifier, completion eventfd; ")?;
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
            Event::AioDone { request, result, by } => {
                write!(f, "  request {request} done: result {result}, reported by ")?;
                match by {
                    Reporter::Glibc { tid } => write!(
                        f,
                        "glibc's notification thread {tid}, a thread created for this one completion"
                    ),
                    Reporter::Helper => f.write_str("a helper thread"),
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
            Event::DroppedBehind { fd } => write!(
                f,
                "  the stream is dropped with a SEND behind in flight: fd {fd} is closed once it is over"
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step says what it did in the words `echo-lab trace` has always printed.
    #[test]
    fn each_step_reads_as_its_sentence() {
        let recv = Op::RecvMulti { fd: 7, group: 0 };
        let send = Op::Send { fd: 7, len: 7, dontwait: true };
        let cases: Vec<(Event, &str)> = vec![
            (Event::SqFull, "  the SQ is full: io_uring_enter to submit it"),
            (
                Event::SqeQueued { user_data: 1, op: recv },
                "  queued SQE RECV (multishot, buffers picked from the ring when data comes) on fd 7 (user_data 1); no syscall yet",
            ),
            (
                Event::SqeQueued { user_data: 2, op: send },
                "  queued SQE SEND 7 bytes on fd 7, without waiting (a ring buffer: a full window must not pin it) (user_data 2); no syscall yet",
            ),
            (Event::CloseQueued { fd: 7 }, "  queued SQE CLOSE fd 7, after every SQE already queued for it"),
            (
                Event::CancelQueued { user_data: 3 },
                "  queued SQE ASYNC_CANCEL for user_data 3 (its future was dropped)",
            ),
            (
                Event::Enter { submit: 1, wait: UringWait::Forever },
                "io_uring_enter: submit 1 SQE, nothing to run: sleep until a completion arrives",
            ),
            (Event::Enter { submit: 0, wait: UringWait::No }, "io_uring_enter: submit 0 SQEs, do not wait"),
            (
                Event::Enter { submit: 2, wait: UringWait::AtMost(Duration::from_millis(5)) },
                "io_uring_enter: submit 2 SQEs, sleep until a completion arrives or 5ms pass (the next timer)",
            ),
            (Event::CqRead, "read the CQ ring in shared memory: no syscall"),
            (Event::Cqes { count: 1 }, "  1 CQE in the completion ring"),
            (Event::Cqes { count: 2 }, "  2 CQEs in the completion ring"),
            (Event::NotifierCqe, "  CQE of the notifier's poll: another thread woke a task"),
            (
                Event::Cqe { user_data: 1, op: Some(recv), result: 7, ring_buffer: Some(0), more: true },
                "  CQE user_data 1 (multishot RECV): result 7, in ring buffer 0, more to come from the same SQE",
            ),
            (
                Event::Cqe { user_data: 4, op: None, result: -104, ring_buffer: None, more: false },
                "  CQE user_data 4 (?): result -104",
            ),
            (
                Event::HelperJob { accept: true, fd: 3, request: 0 },
                "  accept on fd 3: POSIX aio has none; handed to one of this runtime's helper threads (request 0)",
            ),
            (
                Event::AioSubmitted { write: false, fd: 8, len: 4096, request: 1 },
                "  aio_read(fd 8, 4096 bytes) handed to glibc (request 1): a glibc helper thread runs a blocking \
                 read (after a pread that fails with ESPIPE on a socket) on it, and stays blocked there until data comes",
            ),
            (
                Event::AioSubmitted { write: true, fd: 9, len: 7, request: 2 },
                "  aio_write(fd 9, 7 bytes) handed to glibc (request 2): a glibc helper thread runs a blocking write on it",
            ),
            (
                Event::AioPoll { wait: AioWait::Rescan },
                "poll(notifier, completion eventfd; timeout 1 s, to rescan for notifications glibc dropped): \
                 sleep until glibc reports a request done",
            ),
            (
                Event::AioPoll { wait: AioWait::No },
                "poll(notifier, completion eventfd; no wait, no syscall): collect what has finished",
            ),
            (
                Event::AioPoll { wait: AioWait::AtMost(Duration::from_millis(3)) },
                "poll(notifier, completion eventfd; timeout 3ms): sleep until glibc reports a request done",
            ),
            (
                Event::AioDone { request: 1, result: 7, by: Reporter::Glibc { tid: 5611 } },
                "  request 1 done: result 7, reported by glibc's notification thread 5611, a thread created for this one completion",
            ),
            (
                Event::AioDone { request: 0, result: 8, by: Reporter::Helper },
                "  request 0 done: result 8, reported by a helper thread",
            ),
            (
                Event::Queued { index: 1, op: Op::RecvPick { fd: 7 }, queue: Direction::Read, ready: false },
                "  queued RECV fd 7 (no buffer yet: one is taken when data is there) (op 1) in the driver's read \
                 queue of fd 7: performed when epoll says fd is ready; no syscall yet",
            ),
            (
                Event::Queued { index: 2, op: send, queue: Direction::Write, ready: true },
                "  queued SEND 7 bytes on fd 7 (op 2) in the driver's write queue of fd 7: fd is ready: performed at the next turn",
            ),
            (
                Event::Dequeued { index: 2 },
                "  cancel op 2: it was still in the driver's queue, never handed to the kernel; just removed",
            ),
            (Event::FdReady { fd: 7, ready: 1 }, "  fd 7: readable (readiness event)"),
            (
                Event::Connect { fd: 5, index: 0, result: Err(libc::EINPROGRESS) },
                "  connect(fd 5) for op 0 → EINPROGRESS: done when writable",
            ),
            (Event::Accept { fd: 3, index: 0, result: Ok(7) }, "  accept4(fd 3) for op 0 → 7"),
            (
                Event::Connected { fd: 5, index: 0, result: Err(libc::ECONNREFUSED) },
                "  getsockopt(SO_ERROR) on fd 5 for op 0 → error: Connection refused (os error 111)",
            ),
            (
                Event::Transfer { call: Call::Recv, fd: 7, len: 4096, index: 1, result: Err(libc::EAGAIN) },
                "  recv(fd 7, 4096 bytes) for op 1, by the driver → EAGAIN: not ready after all; the op stays \
                 queued until the next readiness event",
            ),
            (
                Event::Transfer { call: Call::SendMsg, fd: 7, len: 1, index: 1, result: Ok(9) },
                "  sendmsg(fd 7, 1 bytes) for op 1, by the driver → 9",
            ),
            (Event::Picked { id: 3 }, "  the driver took a 4 KiB buffer for it only now, at readiness (id 3)"),
            (
                Event::Posted { index: 1, result: 7, picked: Some(3) },
                "  post completion of op 1: result 7, in picked buffer 3",
            ),
            (Event::Posted { index: 1, result: -125, picked: None }, "  post completion of op 1: result -125"),
            (Event::PostedEarly, "  completions posted: back to the tasks without an epoll_wait"),
            (
                Event::RingGrew { added: 64, size: 4096, now: 128 },
                "  the buffer ring runs low: 64 more buffers of 4096 bytes (now 128)",
            ),
            (
                Event::RingPiece { bid: 0, bytes: 7, offset: 7 },
                "  ring buffer 0 partly consumed: 7 bytes at offset 7; the kernel goes on filling it",
            ),
            (
                Event::RingBufferBack { bid: 4 },
                "  ring buffer 4 goes back to the ring (no syscall: the ring is shared memory)",
            ),
            (Event::RingShrank { now: 64 }, "  the buffer ring shrinks back to 64 buffers"),
            (Event::Wake, "    → wake the task waiting for it"),
            (Event::WakeStalled, "    → wake the task waiting for it: the send ahead is stalled"),
            (
                Event::Spilled { bytes: 7, bid: 2 },
                "    nobody reads the stream now: copy the 7 bytes out and give ring buffer 2 back",
            ),
            (
                Event::DroppedBehind { fd: 7 },
                "  the stream is dropped with a SEND behind in flight: fd 7 is closed once it is over",
            ),
            (
                Event::BehindShort { sent: 0, asked: 100 },
                "    SEND took 0 of 100 bytes (the peer's window is full): the driver sends the rest itself",
            ),
            (
                Event::BehindOver { error: None, ring_buffer: Some(0), owner: Behind::Quiet, fd: 7 },
                "    SEND complete: the driver gives ring buffer 0 back; the task is not woken",
            ),
            (
                Event::BehindOver { error: None, ring_buffer: None, owner: Behind::Waited, fd: 7 },
                "    SEND complete: the driver drops the buffer; a call on the stream waits for it",
            ),
            (
                Event::BehindOver { error: None, ring_buffer: None, owner: Behind::Dropped, fd: 7 },
                "    SEND complete: the driver drops the buffer; the stream was dropped: fd 7 is closed now",
            ),
            (
                Event::BehindOver { error: Some(libc::EPIPE), ring_buffer: Some(1), owner: Behind::Quiet, fd: 7 },
                "    SEND failed (Broken pipe (os error 32)): the driver gives ring buffer 1 back; the stream's \
                 next call returns the error",
            ),
            (
                Event::BehindOver { error: Some(0), ring_buffer: None, owner: Behind::Dropped, fd: 7 },
                "    SEND failed (write zero): the driver drops the buffer; the stream was dropped: fd 7 is closed now",
            ),
            (
                Event::BehindDetached { bytes: 90, bid: 1 },
                "  the peer's window is full: the driver copies the 90 unsent bytes out of ring buffer 1 and gives it back",
            ),
            (
                Event::MultishotWaits { fd: 7 },
                "  wait for the next CQE of the multishot RECV on fd 7: it stays armed in the kernel, no new SQE",
            ),
            (
                Event::AheadStalledCopy { bytes: 7 },
                "  the send ahead waits for the peer: copy the 7 bytes out of the ring buffer and give it back",
            ),
            (
                Event::WindowFullCopy { bytes: 5 },
                "  the peer's window is full: copy the 5 unsent bytes out of the ring buffer and give it back",
            ),
        ];
        for (event, sentence) in cases {
            assert_eq!(event.to_string(), sentence, "{event:?}");
        }
    }
}
