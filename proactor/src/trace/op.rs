//! The parts of the proactor's steps: the operation a request asks for ([`Op`]), and the
//! small vocabularies some steps carry (how long a wait may be, who reported a completion,
//! which syscall, who holds a send behind), with the words each takes in a sentence.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// An operation as the trace names it: what its request asks, without the pointers (see
/// `Request::traced`).
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
    /// Receive into buffers of ring `group` until cancelled (io_uring's multishot receive), or
    /// until `limit` bytes came (0: no limit; see `Builder::connection_budget`).
    RecvMulti { fd: RawFd, group: u16, limit: u32 },
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

/// The epoll backend's words for an operation's syscall result.
pub(super) struct Outcome(pub(super) Result<usize, i32>);

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
pub(super) struct Sqe(pub(super) Op);

impl fmt::Display for Sqe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Op::Accept { fd } => write!(f, "ACCEPT on fd {fd}"),
            Op::AcceptMulti { fd } => write!(f, "ACCEPT (multishot: one SQE, a CQE per connection) on fd {fd}"),
            Op::Connect { fd } => write!(f, "CONNECT fd {fd}"),
            Op::Recv { fd, len } => write!(f, "RECV fd {fd} into a {len}-byte buffer"),
            Op::RecvMulti { fd, limit: 0, .. } => {
                write!(f, "RECV (multishot, buffers picked from the ring when data comes) on fd {fd}")
            }
            Op::RecvMulti { fd, limit, .. } => write!(
                f,
                "RECV (multishot, buffers picked from the ring when data comes) on fd {fd}, until {limit} bytes came"
            ),
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
pub(super) struct Queued(pub(super) Op);

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
