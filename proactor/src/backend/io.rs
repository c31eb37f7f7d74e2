//! The one vocabulary between the driver and its backends, and the surface each backend
//! implements.
//!
//! The driver speaks to every backend in [`Request`]s (what to do, with pointers into memory
//! the operation owns) and hears back [`Completion`]s (a syscall-style result, and where the
//! bytes landed), through the few verbs of [`Io`]. Nothing here is any one backend's: io_uring's
//! CQE flags, aio's `aiocb` and epoll's readiness bits stay inside their backend, which
//! translates them into this vocabulary. What differs between backends in a way the layers
//! above must know (can one accept keep producing connections? where does a receive take its
//! buffer?) is stated once, as [`Facts`], not asked as "which backend is this?".

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use executor::Notifier;

use crate::bufring::BufRing;
use crate::trace;

/// Which backend performs the I/O (see [`Builder::backend`](crate::Builder::backend)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// io_uring if it can be set up here, otherwise [`Epoll`](Backend::Epoll), with a one-line
    /// notice on stderr that names the reason (the `kernel.io_uring_disabled` sysctl, a seccomp
    /// policy, a kernel without io_uring). The default. A runtime reports the backend it got
    /// ([`Runtime::backend`](crate::Runtime::backend)), never `Auto`.
    #[default]
    Auto,
    /// Linux io_uring: the kernel performs each operation; one syscall submits and reaps many.
    /// Building fails, with the reason in one sentence, where io_uring is unavailable.
    IoUring,
    /// POSIX aio as glibc implements it: a pool of helper threads performs each operation with
    /// a blocking syscall, and a new thread reports each completion. Portable, and a lesson in
    /// why io_uring exists; see the `aio` module.
    PosixAio,
    /// Completion emulated on readiness (what Boost.Asio does on Linux): the driver waits with
    /// epoll until a socket is ready, performs the operation itself, and posts its completion.
    /// Works wherever epoll does (containers that block io_uring included); costs about two
    /// syscalls per echo where io_uring batches. See the `epoll` module.
    Epoll,
    /// A model of the kernel, deterministic from a seed, for tests (cargo feature `sim`; see
    /// [`sim`](crate::sim)). Built with [`Builder::sim`](crate::Builder::sim).
    #[cfg(feature = "sim")]
    Sim,
}

/// Settings the driver and its backends take from the runtime's builder.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) backend: Backend,
    pub(crate) entries: u32,
    pub(crate) sqpoll_idle: Option<Duration>,
    /// A testing hook: fail `io_uring_setup` with this errno, as a kernel without io_uring,
    /// with it disabled, or behind a seccomp policy would.
    pub(crate) inject_setup_errno: Option<i32>,
    /// Use multishot operations where the kernel has them.
    pub(crate) multishot: bool,
    /// Buffers (count at first, and size) of the provided-buffer ring; `None` for none.
    pub(crate) provided_buffers: Option<(u16, u32)>,
    /// The most memory the provided-buffer ring may grow to, in bytes.
    pub(crate) ring_memory_limit: usize,
    /// Ask for incremental buffer consumption (the kernel fills a buffer piece by piece).
    pub(crate) incremental_buffers: bool,
    /// `provided_buffers` is the default, not the user's choice: a backend that fills buffers
    /// piece by piece may then use fewer, larger ones.
    pub(crate) buffers_default: bool,
    /// How long a wait may gather completions (see `Builder::batch_wait`).
    pub(crate) batch_wait: Option<Duration>,
    /// The most requests the aio backend hands to glibc at once (the size of its thread pool).
    pub(crate) aio_threads: u32,
    /// The most bytes the runtime holds for one connection (see `driver::budget`).
    pub(crate) connection_budget: u64,
    /// The most bytes it holds for all connections together.
    pub(crate) memory_budget: u64,
    /// A testing hook: false makes the io_uring backend act as a kernel that cannot end a
    /// receive at a byte limit (before Linux 6.17), so that the driver's own stop is tested.
    pub(crate) receive_limits: bool,
    /// The simulated kernel's run, for [`Backend::Sim`].
    #[cfg(feature = "sim")]
    pub(crate) sim: Option<crate::sim::SimConfig>,
}

/// What an operation asks of the backend. Pointers point into memory the operation owns (its
/// resources, which stay put until the completion) and must stay valid until then.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Request {
    /// Accept one connection; the peer's address goes to `addr` (`*len` bytes, updated).
    Accept {
        fd: RawFd,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    },
    /// Accept connections until cancelled (only where [`Facts::multishot_accept`]).
    AcceptMulti {
        fd: RawFd,
    },
    Connect {
        fd: RawFd,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
    },
    /// Receive up to `len` bytes into `buf`.
    Recv {
        fd: RawFd,
        buf: *mut u8,
        len: u32,
    },
    /// Receive into buffers of the provided-buffer ring `group` until cancelled (only where the
    /// backend gave the driver a ring: [`Io::buffer_ring`]). Each completion names its buffer
    /// ([`BufId::Ring`]). With a `limit` (0: none), it ends by itself once that many bytes came
    /// (its last completion has no `more`), where the backend can; the driver stops it
    /// otherwise.
    RecvMulti {
        fd: RawFd,
        group: u16,
        limit: u32,
    },
    /// Receive into a buffer the backend picks when data is there, and names in the completion
    /// ([`BufId::Picked`]; only where [`Facts::picks_buffers`]).
    RecvPick {
        fd: RawFd,
    },
    /// Send `len` bytes from `buf` (never raising `SIGPIPE`); with `dontwait`, only what
    /// fits now (`EAGAIN` if nothing does) instead of waiting for the peer's window.
    Send {
        fd: RawFd,
        buf: *const u8,
        len: u32,
        dontwait: bool,
    },
    /// Receive one datagram (`recvmsg` with `MSG_TRUNC`: the result is its real length) into
    /// what `msg` describes: the buffer, and where its source address goes (only where
    /// [`Facts::messages`]).
    RecvMsg {
        fd: RawFd,
        msg: *mut libc::msghdr,
    },
    /// Send one datagram (`sendmsg`) from what `msg` describes, to its address if any (only
    /// where [`Facts::messages`]).
    SendMsg {
        fd: RawFd,
        msg: *const libc::msghdr,
    },
    /// Receive datagrams into buffers of ring `group` until cancelled, each laid out as
    /// `io_uring_recvmsg_out`, source address, payload (only with a datagram ring:
    /// [`Io::buffer_ring`]). `msg` gives the layout (its name and control lengths). Each
    /// completion names its buffer ([`BufId::Datagram`]).
    RecvMsgMulti {
        fd: RawFd,
        msg: *const libc::msghdr,
        group: u16,
    },
}

impl Request {
    /// The fd the request operates on.
    pub(crate) fn fd(&self) -> RawFd {
        match *self {
            Request::Accept { fd, .. }
            | Request::AcceptMulti { fd }
            | Request::Connect { fd, .. }
            | Request::Recv { fd, .. }
            | Request::RecvMulti { fd, .. }
            | Request::RecvPick { fd }
            | Request::Send { fd, .. }
            | Request::RecvMsg { fd, .. }
            | Request::SendMsg { fd, .. }
            | Request::RecvMsgMulti { fd, .. } => fd,
        }
    }

    /// The operation as the trace names it.
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    pub(crate) fn traced(&self) -> trace::Op {
        match *self {
            Request::Accept { fd, .. } => trace::Op::Accept { fd },
            Request::AcceptMulti { fd } => trace::Op::AcceptMulti { fd },
            Request::Connect { fd, .. } => trace::Op::Connect { fd },
            Request::Recv { fd, len, .. } => trace::Op::Recv { fd, len },
            Request::RecvMulti { fd, group, limit } => trace::Op::RecvMulti { fd, group, limit },
            Request::RecvPick { fd } => trace::Op::RecvPick { fd },
            Request::Send { fd, len, dontwait, .. } => trace::Op::Send { fd, len, dontwait },
            Request::RecvMsg { fd, .. } => trace::Op::RecvMsg { fd },
            Request::SendMsg { fd, .. } => trace::Op::SendMsg { fd },
            Request::RecvMsgMulti { fd, group, .. } => trace::Op::RecvMsgMulti { fd, group },
        }
    }

    /// Whether the request goes on producing completions until it is cancelled or ends.
    pub(crate) fn is_multishot(&self) -> bool {
        matches!(self, Request::AcceptMulti { .. } | Request::RecvMulti { .. } | Request::RecvMsgMulti { .. })
    }
}

/// A buffer a completion's bytes are in, which the operation did not bring: one the backend
/// took when the data came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BufId {
    /// Buffer `.0` of the streams' provided-buffer ring.
    Ring(u16),
    /// Buffer `.0` of the datagram ring (see `udp`).
    Datagram(u16),
    /// A buffer the backend took at readiness, held by the backend under this id until
    /// [`Io::take_picked`].
    Picked(u16),
}

/// The end of one operation, or one result of a multishot operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Completion {
    /// The syscall-style result: a byte count or fd when `>= 0`, `-errno` otherwise.
    pub(crate) result: i32,
    /// The buffer the backend received into, if it picked one.
    pub(crate) buffer: Option<BufId>,
    /// A multishot operation goes on: more completions follow from the same request.
    pub(crate) more: bool,
    /// The backend goes on filling `buffer` after these bytes (a ring buffer consumed piece by
    /// piece): the buffer is not whole yet.
    pub(crate) filling: bool,
    /// Where the bytes start in `buffer` (piece by piece consumption; 0 otherwise). Set by the
    /// driver, which tracks the ring.
    pub(crate) offset: u32,
    /// The bytes were copied out of their ring buffer into the driver's spill, and the buffer
    /// given back (`buffer` is then `None`). Set by the driver.
    pub(crate) spilled: bool,
}

impl Completion {
    /// A completion with `result` and nothing else.
    pub(crate) const fn of(result: i32) -> Completion {
        Completion { result, buffer: None, more: false, filling: false, offset: 0, spilled: false }
    }

    /// A completion with result `-errno`.
    pub(crate) const fn error(errno: i32) -> Completion {
        Completion::of(-errno)
    }

    /// The result as `io::Result`.
    pub(crate) fn into_result(self) -> io::Result<u32> {
        if self.result >= 0 {
            Ok(self.result as u32)
        } else {
            Err(io::Error::from_raw_os_error(-self.result))
        }
    }
}

/// One datagram as a [`Request::RecvMsgMulti`] lays it out in its buffer: a 16-byte header
/// (the address's length, the control data's, the payload's real length, the `recvmsg`
/// flags: Linux's `io_uring_recvmsg_out`, in native byte order), room for `name_room` bytes
/// of source address, then the payload. A backend that offers the request writes this layout.
#[derive(Debug)]
pub(crate) struct DatagramOut<'a> {
    /// The source address (its first `name_room` bytes, if it was longer).
    pub(crate) name: &'a [u8],
    /// Where the payload is in the buffer, and how much of it is there.
    pub(crate) payload: std::ops::Range<usize>,
    /// The datagram's real length (more than the payload's if it was cut).
    pub(crate) len: usize,
    /// The payload was cut (`MSG_TRUNC`).
    pub(crate) truncated: bool,
}

/// The length of [`DatagramOut`]'s header.
pub(crate) const DATAGRAM_HEADER: usize = 16;

impl DatagramOut<'_> {
    /// Reads the datagram in `bytes` (what the backend filled of the buffer); `None` if they
    /// are too short for the header and the address room.
    pub(crate) fn parse(bytes: &[u8], name_room: usize) -> Option<DatagramOut<'_>> {
        let word = |i: usize| -> Option<usize> {
            let field: [u8; 4] = bytes.get(i * 4..i * 4 + 4)?.try_into().ok()?;
            Some(u32::from_ne_bytes(field) as usize)
        };
        let (name_len, control_len, len, flags) = (word(0)?, word(1)?, word(2)?, word(3)?);
        let start = DATAGRAM_HEADER.checked_add(name_room)?;
        if bytes.len() < start || control_len != 0 {
            return None;
        }
        Some(DatagramOut {
            name: &bytes[DATAGRAM_HEADER..DATAGRAM_HEADER + name_len.min(name_room)],
            payload: start..bytes.len(),
            len,
            truncated: flags as i32 & libc::MSG_TRUNC != 0,
        })
    }
}

/// What a backend can do, in the terms the layers above decide by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Facts {
    /// Which backend this is: reported by `Runtime::backend` and in the counters' summary,
    /// never used to decide behaviour.
    pub(crate) kind: Backend,
    /// One accept keeps producing connections ([`Request::AcceptMulti`]).
    pub(crate) multishot_accept: bool,
    /// Receives can take their buffer at readiness ([`Request::RecvPick`]).
    pub(crate) picks_buffers: bool,
    /// `recvmsg`/`sendmsg` exist: datagrams carry addresses and report truncation.
    pub(crate) messages: bool,
}

/// What a backend reports of itself at a snapshot (for `stats()` and the `Runtime`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gauges {
    /// Turns that found completions held back in the kernel because its queue was full.
    pub(crate) queue_overflows: u64,
    /// Threads in use: requests in progress on library threads, and the backend's own
    /// helpers (POSIX aio only).
    pub(crate) threads: Option<(usize, usize)>,
}

/// A backend: what performs the operations the driver hands it, and reports their ends.
///
/// The driver owns the operations (a slot each, named by `index` here) and everything they
/// touch; a backend owns only its own machinery. Its contract, for every backend:
///
/// - Every operation [`start`](Self::start)ed (that returned `Ok`) gets exactly one completion
///   through [`turn`](Self::turn) without `more`, after any number with `more` (multishot).
///   A cancelled one too: `-ECANCELED`, or its real result if it won the race.
/// - Until that last completion, the backend may read and write the memory the request points
///   to; after it, never.
/// - [`close_fd`](Self::close_fd) closes the fd only after every operation started on it has
///   stopped using the number (none resolves it after it was reused).
pub(crate) trait Io {
    /// What this backend can do.
    fn facts(&self) -> Facts;

    /// Hands the backend `request`, the operation of slot `index` (which its completions name).
    ///
    /// # Safety
    /// Every pointer in the request must stay valid until the operation's last completion.
    unsafe fn start(&self, index: usize, request: &Request) -> io::Result<()>;

    /// Asks the backend to cancel operation `index` (its completion then comes with
    /// `-ECANCELED`, or with its result if it won the race). `force`: also when that means
    /// shutting the socket down, for an operation nobody else would ever reap. Returns whether
    /// the socket was shut down to do it.
    fn cancel(&self, index: usize, force: bool) -> bool;

    /// Closes `fd` after every operation already started on it (see the trait's docs). `now`:
    /// outside the runtime, where nothing may turn the backend for a while.
    fn close_fd(&self, fd: OwnedFd, now: bool);

    /// Hands the kernel what is queued, if the backend queues (one syscall for all of it).
    fn submit_pending(&self) {}

    /// One turn: hand over what is queued, wait for a completion if `timeout` is not zero (at
    /// most `timeout`, forever if `None`), and report every completion to `complete`. Returns
    /// whether `notifier` fired (another thread posted work).
    fn turn(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool>;

    /// A provided-buffer ring the backend receives into (group `group`, `initial` buffers of
    /// `size` bytes at first, growing to `max`; the kernel fills each piece by piece if
    /// `incremental` and it can), or `None` where it has none.
    fn buffer_ring(
        &self,
        group: u16,
        initial: u16,
        max: u16,
        size: u32,
        incremental: bool,
    ) -> Option<BufRing> {
        let _ = (group, initial, max, size, incremental);
        None
    }

    /// The buffer a [`BufId::Picked`] completion names, handed over to its new owner; `None`
    /// if it was taken already (or the backend picks none).
    fn take_picked(&self, id: u16) -> Option<Vec<u8>> {
        let _ = id;
        None
    }

    /// The backend's gauges now.
    fn gauges(&self) -> Gauges {
        Gauges::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(name_len: u32, len: u32, flags: i32, name_room: usize, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [name_len, 0, len, flags as u32] {
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        bytes.extend((0..name_room).map(|i| i as u8));
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_datagram_reads_back_as_laid_out() {
        let bytes = datagram(16, 5, 0, 28, b"hello");
        let out = DatagramOut::parse(&bytes, 28).expect("long enough");
        assert_eq!(out.name, &bytes[16..32]);
        assert_eq!(&bytes[out.payload.clone()], b"hello");
        assert_eq!((out.len, out.truncated), (5, false));
    }

    #[test]
    fn a_cut_datagram_says_so_and_a_short_buffer_is_refused() {
        let bytes = datagram(28, 9000, libc::MSG_TRUNC, 28, b"abc");
        let out = DatagramOut::parse(&bytes, 28).expect("long enough");
        assert!(out.truncated);
        assert_eq!((out.len, out.payload.len()), (9000, 3));
        assert!(DatagramOut::parse(&bytes[..20], 28).is_none());
        assert!(DatagramOut::parse(&bytes[..10], 0).is_none());
    }
}
