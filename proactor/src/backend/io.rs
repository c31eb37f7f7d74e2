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
    /// a blocking syscall, and the loop hears of each completion the way
    /// [`Builder::aio_notify`](crate::Builder::aio_notify) says ([`AioNotify`]). Portable, and a
    /// lesson in why io_uring exists; see the `aio` module.
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

/// How the POSIX aio backend hears that glibc finished a request (see
/// [`Builder::aio_notify`](crate::Builder::aio_notify)). glibc's helper threads do the I/O in
/// every case; this is only how the news reaches the runtime's loop.
///
/// Measured (`echo-lab demo --runtimes aio-thread,aio-signal,aio-suspend,reactor --conns
/// 64,1000 --rounds 7 --secs 4 --idle-conns 0`, 2026-12-06, 2 shared vCPUs under a load
/// average of 16 to 26: server CPU per 64-byte echo, median of 7 interleaved rounds, and
/// syscalls per echo counted by perf over every thread of the server):
///
/// | connections | `Thread` | `Signal` | `Suspend` | (reactor, epoll) |
/// |---|---|---|---|---|
/// | 64 | 74 µs, 38 syscalls | 49 µs, 24 | **43 µs, 17** | 5.1 µs, 2.0 |
/// | 1,000 | 120 µs, 44 | 146 µs, 26 | **85 µs, 19** | 5.1 µs, 2.0 |
///
/// Round by round, `Suspend` used 0.56× (0.37–0.88) `Thread`'s CPU at 64 connections and 0.72×
/// (0.47–0.96) at 1,000; `Signal` 0.65× at 64 but 1.22× at 1,000 (the kernel walks the
/// process's threads, here 2,000 of glibc's, for each process-directed signal). Most of every
/// way's cost is glibc's own, the same in all three: its helper threads' hand-offs and the
/// threads its pool starts and ends (see the `aio` module).
///
/// `Suspend` is the default: the cheapest at both loads. Its price grows with the connections:
/// glibc finds each request of an `aio_suspend` list by walking its list of requests, so a
/// wait costs time quadratic in the connections (the user time per echo went from 10 µs at 64
/// to 35 µs at 1,000, while `Thread`'s cost per completion stays flat); past a few thousand
/// connections (more than the default [`Builder::aio_threads`](crate::Builder::aio_threads)
/// allows) `Thread` would be cheaper. It also holds one glibc thread per runtime for its wake
/// read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AioNotify {
    /// `SIGEV_THREAD`: glibc starts a new thread for each finished request, which queues it for
    /// the loop and writes an eventfd the loop `poll`s. Works in any program; costs a thread
    /// creation per completion.
    Thread,
    /// `SIGEV_SIGNAL`: glibc queues a realtime signal ([`AioNotify::signal`]) carrying the
    /// request, and the loop reads the signals from a `signalfd` it `poll`s. The signal must be
    /// blocked in every thread of the process ([`AioNotify::block_signal`] on the main thread
    /// before it starts any other). A notification that lands on a thread that does not block
    /// it is caught by this crate's handler and forwarded to a runtime's thread (nothing is
    /// lost, and a warning is printed once), but that thread was interrupted: a call of its
    /// that is not restarted after a handler (a socket read with a timeout, `poll`,
    /// `epoll_wait`, ...) fails with `EINTR`. glibc's own `SIGEV_THREAD` notification threads
    /// (a `Thread` runtime in the same process) unblock every signal. Building fails if
    /// another handler owns the signal, or if `RLIMIT_SIGPENDING` is below the number of
    /// requests that may be in flight.
    Signal,
    /// No notification (`SIGEV_NONE`): the loop blocks in `aio_suspend` on the list of its
    /// requests in glibc, plus a dummy `aio_read` of the runtime's notifier eventfd, which
    /// another thread's wake-up (or an accept helper) completes. Each wait costs glibc a search
    /// of its request list per request listed: quadratic in the number of connections. The
    /// default.
    #[default]
    Suspend,
}

impl AioNotify {
    /// Every way, in the order they are presented.
    pub const ALL: [AioNotify; 3] = [AioNotify::Thread, AioNotify::Signal, AioNotify::Suspend];

    /// The name used on command lines: `thread`, `signal`, `suspend`.
    pub fn name(self) -> &'static str {
        match self {
            AioNotify::Thread => "thread",
            AioNotify::Signal => "signal",
            AioNotify::Suspend => "suspend",
        }
    }

    /// The realtime signal [`AioNotify::Signal`] uses: `SIGRTMIN() + 4` (glibc keeps the first
    /// realtime signals for itself; `SIGRTMIN()` is the first it leaves to programs). Reserved
    /// for this crate in a program that asks for `Signal`.
    pub fn signal() -> i32 {
        crate::sys::aio_signal()
    }

    /// Blocks [`signal`](Self::signal) in the calling thread, and so in every thread it starts
    /// afterwards (threads inherit their creator's mask). A program that uses
    /// [`AioNotify::Signal`] calls this on its main thread before starting any other thread;
    /// the runtime's own thread blocks it when the runtime is built.
    pub fn block_signal() -> io::Result<()> {
        crate::sys::block_signal(Self::signal())
    }
}

impl std::fmt::Display for AioNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AioNotify {
    type Err = String;

    fn from_str(s: &str) -> Result<AioNotify, String> {
        AioNotify::ALL.into_iter().find(|n| n.name() == s).ok_or_else(|| {
            format!("unknown aio notification {s:?} (expected one of: thread, signal, suspend)")
        })
    }
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
    /// How the aio backend hears of finished requests.
    pub(crate) aio_notify: AioNotify,
    /// The most bytes the runtime holds for one connection (see `driver::budget`).
    pub(crate) connection_budget: u64,
    /// The most bytes it holds for all connections together.
    pub(crate) memory_budget: u64,
    /// A testing hook: false makes the io_uring backend act as a kernel that cannot end a
    /// receive at a byte limit (before Linux 6.17), so that the driver's own stop is tested.
    pub(crate) receive_limits: bool,
    /// The simulated kernel's run, for [`Backend::Sim`].
    #[cfg(feature = "sim")]
    pub(crate) sim: Option<super::sim::config::SimConfig>,
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
    /// Send the `len` bytes `to` names as one datagram to its address: `sendto`, without a
    /// `msghdr` for the kernel to copy in (only where [`Facts::send_to`]). One pointer, not
    /// the buffer's and the address's: the request stays 24 bytes, and with it every queued
    /// operation of the epoll backend (an idle socket's cost).
    SendTo {
        fd: RawFd,
        len: u32,
        to: *const Destination,
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
            | Request::SendTo { fd, .. }
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
            Request::SendTo { fd, len, .. } => trace::Op::SendTo { fd, len },
            Request::RecvMsgMulti { fd, group, .. } => trace::Op::RecvMsgMulti { fd, group },
        }
    }

    /// Whether the request goes on producing completions until it is cancelled or ends.
    pub(crate) fn is_multishot(&self) -> bool {
        matches!(self, Request::AcceptMulti { .. } | Request::RecvMulti { .. } | Request::RecvMsgMulti { .. })
    }
}

/// What a [`Request::SendTo`] sends: the bytes (`len` of them at `buf`, the request's length)
/// and the address, at a stable place the operation owns until its completion.
#[derive(Debug)]
pub(crate) struct Destination {
    /// The first byte to send.
    pub(crate) buf: *const u8,
    /// The address, `addr_len` bytes of it.
    pub(crate) addr: libc::sockaddr_storage,
    /// The address's length.
    pub(crate) addr_len: libc::socklen_t,
}

impl Destination {
    /// The address as the syscalls take it.
    pub(crate) fn addr_ptr(&self) -> *const libc::sockaddr {
        (&self.addr as *const libc::sockaddr_storage).cast()
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
/// of source address, room for `control_room` bytes of control messages (`cmsghdr`s, as
/// `recvmsg` writes them; this crate's receives ask for none, so only their room is skipped),
/// then the payload. A backend that offers the request writes this layout.
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
    /// are too short for the header and the rooms, or report more control data than its room.
    pub(crate) fn parse(bytes: &[u8], name_room: usize, control_room: usize) -> Option<DatagramOut<'_>> {
        let word = |i: usize| -> Option<usize> {
            let field: [u8; 4] = bytes.get(i * 4..i * 4 + 4)?.try_into().ok()?;
            Some(u32::from_ne_bytes(field) as usize)
        };
        let (name_len, control_len, len, flags) = (word(0)?, word(1)?, word(2)?, word(3)?);
        let start = DATAGRAM_HEADER.checked_add(name_room)?.checked_add(control_room)?;
        if bytes.len() < start || control_len > control_room {
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
    /// A send can carry a destination address itself ([`Request::SendTo`]); otherwise a
    /// datagram to an address is a [`Request::SendMsg`].
    pub(crate) send_to: bool,
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

    /// Sends `bytes` on the stream socket `fd` now, from the caller's memory, if this backend
    /// can do so without waiting and without overtaking an operation it holds on `fd` (the
    /// epoll backend: the socket is known to be writable and no send is queued on it). Returns
    /// how many bytes the kernel took (at least one); `None` if nothing was sent, and the caller
    /// starts an operation as usual (a backend that performs operations only in the kernel or
    /// in its turns never sends here). An error is not reported here: the operation the caller
    /// then starts meets it again and reports it as its completion.
    fn send_now(&self, fd: RawFd, bytes: &[u8]) -> Option<usize> {
        let _ = (fd, bytes);
        None
    }

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
        with_control(name_len, len, flags, name_room, &[], 0, payload)
    }

    fn with_control(
        name_len: u32,
        len: u32,
        flags: i32,
        name_room: usize,
        control: &[u8],
        control_room: usize,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [name_len, control.len() as u32, len, flags as u32] {
            bytes.extend_from_slice(&word.to_ne_bytes());
        }
        bytes.extend((0..name_room).map(|i| i as u8));
        bytes.extend_from_slice(control);
        bytes.resize(bytes.len() + control_room - control.len(), 0xee);
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_datagram_reads_back_as_laid_out() {
        let bytes = datagram(16, 5, 0, 28, b"hello");
        let out = DatagramOut::parse(&bytes, 28, 0).expect("long enough");
        assert_eq!(out.name, &bytes[16..32]);
        assert_eq!(&bytes[out.payload.clone()], b"hello");
        assert_eq!((out.len, out.truncated), (5, false));
    }

    #[test]
    fn control_data_sits_between_the_address_and_the_payload() {
        let control = [1u8; 24];
        let bytes = with_control(16, 5, 0, 28, &control, 32, b"hello");
        let out = DatagramOut::parse(&bytes, 28, 32).expect("long enough");
        assert_eq!(&bytes[out.payload.clone()], b"hello");
        // No control data this time: the room is there, empty.
        let bytes = with_control(16, 5, 0, 28, &[], 32, b"hello");
        let out = DatagramOut::parse(&bytes, 28, 32).expect("long enough");
        assert_eq!(&bytes[out.payload.clone()], b"hello");
        // More control data than its room is a layout this parser does not know.
        let bytes = with_control(16, 5, 0, 28, &[1; 40], 40, b"hello");
        assert!(DatagramOut::parse(&bytes, 28, 32).is_none());
    }

    #[test]
    fn a_cut_datagram_says_so_and_a_short_buffer_is_refused() {
        let bytes = datagram(28, 9000, libc::MSG_TRUNC, 28, b"abc");
        let out = DatagramOut::parse(&bytes, 28, 0).expect("long enough");
        assert!(out.truncated);
        assert_eq!((out.len, out.payload.len()), (9000, 3));
        assert!(DatagramOut::parse(&bytes[..20], 28, 0).is_none());
        assert!(DatagramOut::parse(&bytes[..10], 0, 0).is_none());
    }
}
