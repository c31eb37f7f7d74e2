//! The driver: every operation in flight, whichever backend performs it.
//!
//! Three backends sit behind it, chosen with [`Builder::backend`](crate::Builder::backend): the
//! three ways to build a proactor.
//!
//! - `uring`: Linux io_uring. The kernel performs the operation itself.
//! - `aio`: POSIX aio (glibc's `aio_read`/`aio_write`), where glibc's helper threads perform
//!   it with plain blocking syscalls; accept and connect, which POSIX aio lacks, run on this
//!   crate's own helper threads.
//! - `epoll`: completion emulated on readiness: the backend queues the operation, waits with
//!   epoll until its socket is ready, and performs it itself (as Boost.Asio does).
//!
//! All see the same [`Request`]s (what to do, with pointers into memory the operation owns)
//! and report the same [`Completion`]s (a syscall-style result); everything else here (the
//! slots, the futures, what happens when a future is dropped early) is shared.
//!
//! # An operation's life
//!
//! 1. A future ([`Op`]) is created with everything the kernel will touch (buffer, socket
//!    address storage) moved into it, at heap addresses that do not change when the future
//!    moves. It takes a slot in the driver's [`Slab`] of operations; the slot index is the
//!    operation's key (the SQE's `user_data`, for io_uring), and the request goes to the backend.
//! 2. The executor keeps running tasks, which start more operations. Once per loop turn it
//!    turns the driver: the backend submits what is queued (io_uring: one `io_uring_enter` for
//!    all of it) and waits for a completion if no task is runnable, bounded by the nearest timer.
//! 3. Each completion names its slot; the driver stores the result there and wakes the future,
//!    which takes result and resources back and hands them to the caller.
//!
//! # Dropping an operation early
//!
//! The kernel (or a glibc thread) may still write into the buffer after the future is gone (a
//! `timeout` around a read, say). So dropping an unfinished `Op` does not free anything: it
//! moves the resources into the slot ([`Lifecycle::Orphaned`]) and asks the backend to cancel
//! the operation. The slot and the resources are freed only when the operation's own completion
//! arrives (cancelled or not). If that completion carries a new fd (an accept that won the
//! race), the fd is closed.
//!
//! An operation can also win the race with *data*: a receive that completes just as it is
//! cancelled has taken bytes out of the socket, and nobody is waiting for them any more. An
//! operation can therefore carry an *orphan handler* that gets the resources and the late
//! completion; `net` uses it to keep those bytes for the stream's next read, so cancelling a
//! read (a `timeout` around it, say) never loses data.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use executor::{Notifier, Park, Unpark};
use slab::Slab;

use crate::aio::Aio;
use crate::bufring::BufRing;
use crate::epoll::Epoll;
use crate::stats;
use crate::sys;
use crate::uring::{self, Uring};

mod behind;
pub(crate) use behind::BehindKey;

/// The result of one operation (one CQE, for io_uring).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion {
    /// The syscall-style result: a byte count or fd when `>= 0`, `-errno` otherwise.
    pub(crate) result: i32,
    /// The CQE's flags (io_uring; 0 for aio).
    pub(crate) flags: u32,
    /// Where the bytes start in the provided buffer the completion names (incremental
    /// consumption fills a buffer piece by piece; 0 otherwise). Set by the driver.
    pub(crate) offset: u32,
}

impl Completion {
    /// A completion with result `-errno`.
    pub(crate) fn error(errno: i32) -> Completion {
        Completion { result: -errno, flags: 0, offset: 0 }
    }

    /// The result as `io::Result`.
    pub(crate) fn into_result(self) -> io::Result<u32> {
        if self.result >= 0 {
            Ok(self.result as u32)
        } else {
            Err(io::Error::from_raw_os_error(-self.result))
        }
    }

    /// The provided buffer the kernel picked for this completion, if any.
    pub(crate) fn buffer(&self) -> Option<u16> {
        uring::selected_buffer(self)
    }

    /// Whether more completions follow for this (multishot) operation.
    fn more(&self) -> bool {
        uring::more(self)
    }

    /// The buffer of the datagram ring (see `udp`) the kernel picked for this completion, if
    /// any. `buffer` does not name it: that one is of the shared ring.
    pub(crate) fn datagram_buffer(&self) -> Option<u16> {
        (self.flags & DGRAM_BUFFER != 0).then_some((self.flags >> 16) as u16)
    }

    /// Whether the bytes of this receive were copied out of their ring buffer (see
    /// `Op::take_spilled`).
    pub(crate) fn spilled(&self) -> bool {
        self.flags & SPILLED != 0
    }
}

/// Copies the bytes of every queued completion that holds a ring buffer into `spilled` (in
/// queue order, so they leave in order) and gives the buffers back (through `after`).
fn spill_queue(ring: &BufRing, queue: &mut Queue, spilled: &mut Vec<u8>, after: &mut AfterTurn) {
    for completion in queue.iter_mut() {
        let (Some(bid), true) = (completion.buffer(), completion.result > 0) else { continue };
        // SAFETY: the CQE handed this piece of buffer `bid` to the runtime; it goes back to
        // the ring only after this copy (through `after.discarded`).
        spilled.extend_from_slice(unsafe { ring.bytes(bid, completion.offset, completion.result as usize) });
        stats::bump(|c| &c.recv_spilled);
        after.discarded.push((*completion, false));
        completion.flags = uring::without_buffer(completion.flags) | SPILLED;
    }
}

/// A flag of ours in [`Completion::flags`], in a bit io_uring leaves unused: the completion's
/// bytes were copied into the driver's spill (its ring buffer was given back).
const SPILLED: u32 = 1 << 15;

/// A flag of ours in [`Completion::flags`]: the buffer id in the upper 16 bits is of the
/// datagram ring (buffer group `udp::GROUP`), not of the shared ring. The driver moves
/// `IORING_CQE_F_BUFFER` here as the CQE comes in (`Driver::datagram_completion`), so that
/// nothing meant for the shared ring ever gives it a datagram buffer.
const DGRAM_BUFFER: u32 = 1 << 14;

/// The most bytes a receive nobody reads may spill before it is stopped: then the peer waits
/// (TCP's flow control) until the stream reads again.
const SPILL_MAX: usize = 64 * 1024;

const KIND_ACCEPT: u8 = 1;
const KIND_CONNECT: u8 = 2;
const KIND_RECV: u8 = 3;
const KIND_SEND: u8 = 4;
/// A multishot receive into the datagram ring.
const KIND_RECV_DGRAM: u8 = 5;

/// The counter kind of a request.
fn kind_of(request: &Request) -> u8 {
    match request {
        Request::Accept { .. } | Request::AcceptMulti { .. } => KIND_ACCEPT,
        Request::Connect { .. } => KIND_CONNECT,
        Request::Recv { .. } | Request::RecvMulti { .. } | Request::RecvPick { .. } => KIND_RECV,
        Request::Send { .. } => KIND_SEND,
        Request::RecvMsg { .. } => KIND_RECV,
        Request::SendMsg { .. } => KIND_SEND,
        Request::RecvMsgMulti { .. } => KIND_RECV_DGRAM,
    }
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
    /// Accept connections until cancelled (io_uring only: [`Features::multishot_accept`]).
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
    /// Receive into provided buffers until cancelled (io_uring only: [`Driver::buf_ring`]).
    RecvMulti {
        fd: RawFd,
        group: u16,
    },
    /// Receive into a buffer the backend picks when data is there, and names in the completion
    /// like a provided buffer (epoll only: [`Driver::picks_buffers`]).
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
    /// what `msg` describes: the buffer, and where its source address goes.
    RecvMsg {
        fd: RawFd,
        msg: *mut libc::msghdr,
    },
    /// Send one datagram (`sendmsg`) from what `msg` describes (to its address, if any).
    SendMsg {
        fd: RawFd,
        msg: *const libc::msghdr,
    },
    /// Receive datagrams into buffers of group `group` until cancelled, each laid out as
    /// `io_uring_recvmsg_out`, source address, payload (io_uring only:
    /// [`Driver::datagram_ring`]). `msg` gives the layout (its name and control lengths).
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
}

/// The completions a multishot operation has queued for its future, oldest first.
///
/// The first one is kept inline: a stream whose task keeps up (the common case, and an idle
/// one) never has more than one waiting, so it needs no allocation at all, and no buffer is
/// left allocated in every idle connection's slot after its first message.
#[derive(Default)]
struct Queue {
    first: Option<Completion>,
    /// Those after `first` (none while `first` is `None`); boxed, so that the usual queue of
    /// at most one costs 8 bytes here, in every slot, instead of a `Vec`'s 24.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Completion>>>,
}

impl Queue {
    fn push(&mut self, completion: Completion) {
        if self.first.is_none() {
            self.first = Some(completion);
        } else {
            self.rest.get_or_insert_with(Box::default).push(completion);
        }
    }

    fn pop_front(&mut self) -> Option<Completion> {
        let first = self.first.take()?;
        if let Some(rest) = self.rest.as_mut().filter(|rest| !rest.is_empty()) {
            self.first = Some(rest.remove(0));
        }
        Some(first)
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    fn iter(&self) -> impl Iterator<Item = &Completion> {
        self.first.iter().chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Completion> {
        self.first.iter_mut().chain(self.rest.iter_mut().flat_map(|rest| rest.iter_mut()))
    }

    fn into_vec(self) -> Vec<Completion> {
        self.first.into_iter().chain(self.rest.into_iter().flat_map(|rest| *rest)).collect()
    }
}

/// The state of one operation slot.
enum Lifecycle {
    /// With the backend; the future waits (its waker, once it has been polled).
    Waiting(Option<Waker>),
    /// The completion arrived; the future has not looked yet.
    Completed(Completion),
    /// The future was dropped before the completion. What the kernel may still touch lives
    /// here until the completion arrives; `result_is_fd` says whether a successful result is
    /// an fd to close.
    ///
    /// `finish` owns the resources (and calls the orphan handler, if the operation has one);
    /// `handled` says the handler deals with the completion, otherwise it is discarded (its fd
    /// closed, its buffer given back).
    Orphaned { finish: Option<Box<dyn FnOnce(Completion)>>, handled: bool, result_is_fd: bool },
    /// A multishot operation: every CQE is queued for the future, until one comes without
    /// `IORING_CQE_F_MORE`.
    /// (A [`Queue`]: it is almost always empty or holds one, which it keeps inline.)
    /// `max_queued` (0: no bound) makes the driver cancel the operation once that many
    /// completions wait (`stopping` then records that it did).
    /// `spill` (receives into the ring): a completion that arrives while nobody waits for it has
    /// its bytes copied into the driver's `spills` and its ring buffer given back at once; past
    /// `SPILL_MAX` bytes the operation is cancelled (see `Op::spill_unread`).
    Multishot {
        queue: Queue,
        waker: Option<Waker>,
        ended: bool,
        stopping: bool,
        max_queued: u16,
        spill: bool,
    },
    /// A send the driver finishes by itself, and wakes nobody for unless it fails or a call of
    /// its stream waits for it (see `behind`): the index of its record (the bytes, the task's
    /// waker) in `Driver::behinds`.
    Behind(usize),
    /// A send behind that failed: the error (`-errno`, 0 for a send that took nothing) waits
    /// for the stream's next call. No operation is in flight.
    BehindFailed { fd: RawFd, result: i32 },
}

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
}

/// Settings the driver needs from the runtime's builder.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
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
    /// Ask for incremental buffer consumption (`IOU_PBUF_RING_INC`, Linux 6.12).
    pub(crate) incremental_buffers: bool,
    /// `provided_buffers` is the default, not the user's choice: with incremental consumption
    /// the ring then uses fewer, larger buffers (`INCREMENTAL_DEFAULT`).
    pub(crate) buffers_default: bool,
    /// See `Uring::batch_wait`.
    pub(crate) batch_wait: Option<Duration>,
    /// The most requests the aio backend hands to glibc at once (the size of its thread pool).
    pub(crate) aio_threads: u32,
}

/// What the backend supports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features {
    /// One accept operation keeps producing connections (io_uring, Linux 5.19).
    pub(crate) multishot_accept: bool,
}

/// The backend the driver runs on.
enum Io {
    Uring(Uring),
    Aio(Aio),
    Epoll(Epoll),
}

/// The backend, and every operation in flight on it. Lives on the runtime's thread.
pub struct Driver {
    /// Declared (and so dropped) before `buf_ring`: the registration dies with the ring, and
    /// only then may the buffers be freed.
    io: Io,
    /// The provided-buffer ring, where the kernel supports it (see `bufring`).
    buf_ring: Option<Rc<BufRing>>,
    /// The datagram ring (see `udp`), made by the first UDP socket that receives with it; `None`
    /// inside where it cannot be (not io_uring, or no provided-buffer rings). Declared after
    /// `io` for the same reason as `buf_ring`.
    dgram_ring: std::cell::OnceCell<Option<Rc<BufRing>>>,
    ops: RefCell<Slab<Lifecycle>>,
    /// What kind of operation each slot holds (a `Kind` as u8), for the counters.
    kinds: RefCell<Vec<u8>>,
    /// The records of the sends behind in flight (see `behind`), apart from the slots: larger
    /// than anything else an operation holds, they would make every slot larger.
    behinds: RefCell<Slab<behind::Behind>>,
    /// Bytes of receives that arrived while nobody read them, per operation slot (see
    /// `Lifecycle::Multishot`). Only streams whose task is busy elsewhere have an entry.
    spills: RefCell<std::collections::HashMap<usize, Vec<u8>>>,
    /// The lists of `AfterTurn`, kept between turns (see there).
    after: RefCell<AfterTurn>,
    notifier: Arc<Notifier>,
    /// The notifier fired since the executor last looked: set by any turn (also the ones
    /// `cancel_and_reap` runs), consumed by the executor's `park`.
    notified: Cell<bool>,
    pub(crate) features: Features,
    /// False once the runtime is dropped: new operations fail instead of waiting forever.
    alive: Cell<bool>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("backend", &self.backend())
            .field("in_flight", &self.ops.borrow().len())
            .finish()
    }
}

/// What a turn leaves to do once its borrows are released (dropping resources may run
/// arbitrary code, and giving a ring buffer back may wake a task). Kept in the driver from turn
/// to turn, so that its lists keep their memory: a turn that finishes sends behind allocates
/// nothing.
#[derive(Default)]
struct AfterTurn {
    /// The ring ran dry: take the ring buffers back from receives nobody reads.
    sweep: bool,
    to_cancel: Vec<usize>,
    discarded: Vec<(Completion, bool)>,
    #[allow(clippy::type_complexity)]
    finished_orphans: Vec<(Box<dyn FnOnce(Completion)>, Completion)>,
    /// Sends behind that were short: the driver sends the rest (`Driver::continue_behind`).
    behind: Vec<usize>,
    /// Bytes of sends behind that are over, to give back.
    released: Vec<behind::Bytes>,
    /// Fds of dropped streams whose send behind is over, to close.
    close: Vec<RawFd>,
}

impl Driver {
    pub(crate) fn new(config: &DriverConfig) -> io::Result<Driver> {
        let notifier = Notifier::new()?;
        let uring = |uring: Uring, buf_ring: Option<BufRing>| {
            let features = Features { multishot_accept: uring.features.multishot_accept };
            (Io::Uring(uring), buf_ring.map(Rc::new), features)
        };
        let single_shot = Features { multishot_accept: false };
        let (io, buf_ring, features) = match config.backend {
            Backend::IoUring => {
                let (ring, buf_ring) = Uring::new(config)?;
                uring(ring, buf_ring)
            }
            Backend::Auto => match Uring::new(config) {
                Ok((ring, buf_ring)) => uring(ring, buf_ring),
                Err(e) => {
                    // The error is one sentence that names the reason (see
                    // `uring::explain_setup_error`).
                    eprintln!("proactor: running on epoll (completion emulated on readiness) because {e}");
                    (Io::Epoll(Epoll::new(&notifier)?), None, single_shot)
                }
            },
            Backend::PosixAio => (Io::Aio(Aio::new(config)?), None, single_shot),
            Backend::Epoll => (Io::Epoll(Epoll::new(&notifier)?), None, single_shot),
        };
        Ok(Driver {
            io,
            buf_ring,
            dgram_ring: std::cell::OnceCell::new(),
            ops: RefCell::new(Slab::with_capacity(executor::slab_capacity())),
            kinds: RefCell::new(Vec::new()),
            behinds: RefCell::new(Slab::new()),
            spills: RefCell::new(std::collections::HashMap::new()),
            after: RefCell::default(),
            notifier: Arc::new(notifier),
            notified: Cell::new(false),
            features,
            alive: Cell::new(true),
        })
    }

    /// False once the runtime is dropped.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.get()
    }

    /// Which backend this driver runs on.
    pub(crate) fn backend(&self) -> Backend {
        match self.io {
            Io::Uring(_) => Backend::IoUring,
            Io::Aio(_) => Backend::PosixAio,
            Io::Epoll(_) => Backend::Epoll,
        }
    }

    /// The aio backend, if that is the one.
    pub(crate) fn aio(&self) -> Option<&Aio> {
        match &self.io {
            Io::Aio(aio) => Some(aio),
            Io::Uring(_) | Io::Epoll(_) => None,
        }
    }

    /// Whether the backend picks receive buffers itself, at readiness ([`Request::RecvPick`]):
    /// the epoll backend's `read_provided`.
    pub(crate) fn picks_buffers(&self) -> bool {
        matches!(self.io, Io::Epoll(_))
    }

    /// The buffer a [`Request::RecvPick`] completion names (`Completion::buffer`), handed over
    /// to the caller; `None` if it was taken already.
    pub(crate) fn take_picked(&self, id: u16) -> Option<Vec<u8>> {
        match &self.io {
            Io::Epoll(epoll) => epoll.take_picked(id),
            Io::Uring(_) | Io::Aio(_) => None,
        }
    }

    /// The provided-buffer ring, if the kernel supports multishot receive into one.
    pub(crate) fn buf_ring(&self) -> Option<&Rc<BufRing>> {
        self.buf_ring.as_ref()
    }

    /// The datagram ring: a second provided-buffer ring, buffer group `group`, of buffers of
    /// `size` bytes (`initial` at first, growing to `max`), made on first use; `None` where
    /// the kernel has no provided-buffer rings (and on the other backends).
    pub(crate) fn datagram_ring(
        &self,
        group: u16,
        initial: u16,
        max: u16,
        size: u32,
    ) -> Option<&Rc<BufRing>> {
        self.dgram_ring
            .get_or_init(|| match (&self.io, &self.buf_ring) {
                (Io::Uring(uring), Some(_)) => {
                    uring.register_buf_ring(group, initial, max, size).ok().map(Rc::new)
                }
                _ => None,
            })
            .as_ref()
    }

    /// A CQE of a multishot datagram receive names its buffer with the same flag as one of the
    /// shared ring: move it to [`DGRAM_BUFFER`] (see there), and count it taken from its ring.
    fn datagram_completion(&self, kind: u8, completion: Completion) -> Completion {
        if kind != KIND_RECV_DGRAM || completion.buffer().is_none() {
            return completion;
        }
        if let (Some(ring), Some(bid)) = (self.dgram_ring.get().and_then(Option::as_ref), completion.buffer())
        {
            // Whole buffers: a datagram is never split, so the ring is not incremental.
            ring.taken(bid, completion.result.max(0) as u32, false);
        }
        Completion {
            result: completion.result,
            flags: uring::without_buffer(completion.flags) | DGRAM_BUFFER,
            offset: 0,
        }
    }

    /// A completion nobody will read: close the fd it produced, give back the buffer it took.
    fn discard(&self, completion: Completion, result_is_fd: bool) {
        if let (Some(bid), Some(ring)) =
            (completion.datagram_buffer(), self.dgram_ring.get().and_then(Option::as_ref))
        {
            ring.release(bid);
        }
        if result_is_fd && completion.result >= 0 {
            // SAFETY: the completion of an fd-producing operation carries a new fd, and its
            // future is gone (or is dropping it), so nobody else will take it.
            drop(unsafe { sys::owned_fd(completion.result) });
        }
        if let (Some(bid), Some(ring)) = (completion.buffer(), &self.buf_ring) {
            ring.release(bid);
        }
        if let (Some(id), true) = (completion.buffer(), self.picks_buffers()) {
            drop(self.take_picked(id));
        }
    }

    /// How many turns found completions held back in the kernel because the CQ was full.
    pub(crate) fn cq_overflows(&self) -> u64 {
        match &self.io {
            Io::Uring(uring) => uring.cq_overflows(),
            Io::Aio(_) | Io::Epoll(_) => 0,
        }
    }

    /// Operations whose completion has not arrived yet (including orphaned ones).
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.borrow().len()
    }

    /// Starts an operation: takes a slot, and hands the backend the request `build` makes.
    ///
    /// # Safety
    /// Every pointer in the request must point into `resources` (into heap memory it owns,
    /// which does not move when `resources` does) or to memory that lives for `'static`.
    pub(crate) unsafe fn submit<T: 'static>(
        self: &Rc<Self>,
        resources: T,
        multishot: bool,
        result_is_fd: bool,
        build: impl FnOnce(&mut T) -> Request,
    ) -> Op<T> {
        let mut resources = resources;
        if !self.alive.get() {
            return Op::failed(self.clone(), resources, runtime_gone());
        }
        let request = build(&mut resources);
        let lifecycle = if multishot {
            Lifecycle::Multishot {
                queue: Queue::default(),
                waker: None,
                ended: false,
                stopping: false,
                max_queued: 0,
                spill: false,
            }
        } else {
            Lifecycle::Waiting(None)
        };
        let index = self.ops.borrow_mut().insert(lifecycle);
        // SAFETY: the caller guarantees the pointers are owned by `resources`, which the Op
        // keeps (or hands to the slot when dropped) until this operation's completion arrives.
        match unsafe { self.start(index, &request) } {
            Ok(()) => Op {
                driver: self.clone(),
                state: OpState::InFlight(index),
                resources: Some(resources),
                result_is_fd,
                on_orphan_cqe: None,
            },
            Err(e) => {
                self.ops.borrow_mut().remove(index);
                Op::failed(self.clone(), resources, e)
            }
        }
    }

    /// Hands the backend `request`, the operation of slot `index` (which its completion names).
    ///
    /// # Safety
    /// Every pointer in the request must stay valid until the operation's completion arrives.
    unsafe fn start(&self, index: usize, request: &Request) -> io::Result<()> {
        {
            let mut kinds = self.kinds.borrow_mut();
            if kinds.len() <= index {
                kinds.resize(index + 1, 0);
            }
            kinds[index] = kind_of(request);
        }
        match &self.io {
            // SAFETY: the caller's guarantee, passed on.
            Io::Uring(uring) => unsafe { uring.start(index, request) },
            // SAFETY: the caller's guarantee, passed on.
            Io::Aio(aio) => unsafe { aio.start(index, *request) },
            // SAFETY: the caller's guarantee, passed on.
            Io::Epoll(epoll) => unsafe { epoll.start(index, *request) },
        }
    }

    /// Hands the backend what is queued, if anything (io_uring: one `io_uring_enter`).
    pub(crate) fn submit_pending(&self) {
        if let Io::Uring(uring) = &self.io {
            uring.submit_pending();
        }
    }

    /// Closes `fd` after every operation already started on it: none of them may resolve the
    /// number after it was reused (see each backend's `close_fd`).
    pub(crate) fn close_fd(&self, fd: OwnedFd) {
        match &self.io {
            // Inside the runtime the next turn submits it; outside, nothing might turn the ring
            // for a while, and the fd (a bound port, say) should not stay open that long.
            Io::Uring(uring) => uring.close_fd(fd, !executor::runs_driver::<Driver>(self)),
            Io::Aio(aio) => aio.close_fd(fd),
            Io::Epoll(epoll) => epoll.close_fd(fd),
        }
    }

    /// Asks the backend to cancel the operation in `index` (its completion then comes with
    /// `-ECANCELED`, or with its result if it won the race). `force` (aio): also when that
    /// means shutting the socket down, for operations nobody else would ever reap.
    ///
    /// Returns whether the socket was shut down to do it (aio).
    fn cancel(&self, index: usize, force: bool) -> bool {
        match &self.io {
            Io::Uring(uring) => {
                uring.cancel(index);
                false
            }
            Io::Aio(aio) => aio.cancel(index, force),
            Io::Epoll(epoll) => {
                epoll.cancel(index);
                false
            }
        }
    }

    /// Cancels the operation in `index` and drives the backend on this thread until its
    /// completion is in. For operations awaited when this driver's runtime is not running
    /// (dropped, or another runtime is), when nobody else would reap the completion.
    fn cancel_and_reap(&self, index: usize) -> Completion {
        let shut_down = self.cancel(index, true);
        loop {
            let completed = match self.ops.borrow().get(index) {
                Some(Lifecycle::Completed(completion)) => Some(*completion),
                _ => None,
            };
            if let Some(completion) = completed {
                self.ops.borrow_mut().remove(index);
                // After shutting the socket down, an end of stream or error is the shutdown's
                // doing: report the cancellation. Bytes that did arrive are a real result.
                if shut_down && completion.result <= 0 {
                    return Completion::error(libc::ECANCELED);
                }
                return completion;
            }
            let mut wakers = Vec::new();
            if let Err(e) = self.turn(Some(Duration::from_millis(10)), &mut wakers) {
                // Returning the resources now could let the kernel write into freed memory.
                panic!("proactor: the driver failed while reaping a cancelled operation: {e}");
            }
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    /// One turn: hand the backend what is queued, wait for a completion if `timeout` is not
    /// zero (at most `timeout`, forever if `None`), then store every completion in its slot and
    /// move the wakers of the operations they finish into `wakers`.
    ///
    /// Returns whether the notifier fired, i.e. whether another thread posted work.
    fn turn(&self, timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool> {
        // (Taken out for the turn: a turn run meanwhile, should one be, starts with empty lists.)
        let mut after = std::mem::take(&mut *self.after.borrow_mut());
        let turned = {
            let mut ops = self.ops.borrow_mut();
            let complete = |index, completion| self.complete(&mut ops, index, completion, wakers, &mut after);
            match &self.io {
                Io::Uring(uring) => uring.turn(timeout, &self.notifier, complete),
                Io::Aio(aio) => aio.turn(timeout, &self.notifier, complete),
                Io::Epoll(epoll) => epoll.turn(timeout, &self.notifier, complete),
            }
        };
        let notified = turned.as_ref().is_ok_and(|notified| *notified);
        if notified {
            self.notified.set(true);
        }
        if after.sweep {
            after.sweep = false;
            self.sweep_unread(&mut after);
        }
        // Resources of orphaned operations, and fds they produced, are dropped outside the
        // borrows: dropping may run arbitrary code.
        for index in after.to_cancel.drain(..) {
            let _ = self.cancel(index, false);
        }
        for (completion, result_is_fd) in after.discarded.drain(..) {
            self.discard(completion, result_is_fd);
        }
        for (finish, completion) in after.finished_orphans.drain(..) {
            finish(completion);
        }
        let mut short = std::mem::take(&mut after.behind);
        for index in short.drain(..) {
            self.continue_behind(index, wakers, &mut after);
        }
        after.behind = short;
        for bytes in after.released.drain(..) {
            self.release_bytes(bytes);
        }
        for fd in after.close.drain(..) {
            self.close_behind(fd);
        }
        *self.after.borrow_mut() = after;
        turned
    }

    /// The ring ran dry: every receive whose completions wait for a task that is not reading
    /// (blocked elsewhere, say in a send to a peer that does not read) has their bytes copied
    /// out and their ring buffers given back, so that such streams cannot starve the others.
    fn sweep_unread(&self, after: &mut AfterTurn) {
        let Some(ring) = &self.buf_ring else { return };
        let mut ops = self.ops.borrow_mut();
        let mut spills = self.spills.borrow_mut();
        for (index, slot) in ops.iter_mut() {
            let Lifecycle::Multishot { queue, waker: None, spill: true, .. } = slot else { continue };
            spill_queue(ring, queue, spills.entry(index).or_default(), after);
        }
    }

    /// Stores one completion in the slot `index`.
    fn complete(
        &self,
        ops: &mut Slab<Lifecycle>,
        index: usize,
        completion: Completion,
        wakers: &mut Vec<Waker>,
        after: &mut AfterTurn,
    ) {
        // One look at the slot's kind, for the datagram flag and the counters.
        let kind = self.kinds.borrow().get(index).copied().unwrap_or(0);
        let mut completion = self.datagram_completion(kind, completion);
        if let (Some(bid), Some(ring)) = (completion.buffer(), &self.buf_ring) {
            completion.offset =
                ring.taken(bid, completion.result.max(0) as u32, uring::buffer_more(&completion));
        }
        if !ops.contains(index) {
            // No operation owns it (cannot happen: a slot lives until its last CQE); still,
            // give back what it took.
            after.discarded.push((completion, false));
            return;
        }
        if completion.result != -libc::ECANCELED {
            match kind {
                KIND_ACCEPT => stats::bump(|c| &c.accepts),
                KIND_CONNECT => stats::bump(|c| &c.connects),
                KIND_RECV => {
                    stats::bump(|c| &c.recvs);
                    stats::add(|c| &c.recv_bytes, completion.result.max(0) as u64);
                    if completion.result == -libc::ENOBUFS {
                        stats::bump(|c| &c.recv_enobufs);
                    }
                }
                KIND_SEND => stats::bump(|c| &c.sends),
                KIND_RECV_DGRAM => stats::bump(|c| &c.recvs),
                _ => {}
            }
        }
        let slot = &mut ops[index];
        if let Lifecycle::Behind(_) = slot {
            return self.behind_completed(ops, index, completion, wakers, after);
        }
        match slot {
            Lifecycle::Waiting(waker) => {
                if waker.is_some() {
                    stats::trace_step!("    → wake the task waiting for it");
                }
                wakers.extend(waker.take());
                *slot = Lifecycle::Completed(completion);
            }
            Lifecycle::Multishot { queue, waker, ended, stopping, max_queued, spill } => {
                let mut completion = completion;
                if completion.result == -libc::ENOBUFS && *spill {
                    after.sweep = true;
                }
                if let (true, None, Some(bid), Some(ring)) =
                    (*spill, &waker, completion.buffer(), &self.buf_ring)
                {
                    // Only when the ring is at its limit and nearly empty: copying costs, and
                    // until then the queue bound (`limit_queue`) keeps what a stream holds small.
                    // Bytes leave through `spills` in the order they were copied in, so a
                    // completion is copied only if none before it still holds a ring buffer
                    // (the sweep copies those, in queue order, when the ring runs dry).
                    let behind_ring = queue.iter().any(|queued| queued.buffer().is_some());
                    if completion.result > 0 && ring.scarce() && !behind_ring {
                        // Nobody is reading this stream (its task is busy, or blocked in a
                        // send to a peer that does not read): do not let it pin a ring buffer.
                        let mut spills = self.spills.borrow_mut();
                        let spilled = spills.entry(index).or_default();
                        // SAFETY: the CQE handed buffer `bid` to the runtime with `result`
                        // bytes, and it goes back to the ring only below, after the copy.
                        spilled.extend_from_slice(unsafe {
                            ring.bytes(bid, completion.offset, completion.result as usize)
                        });
                        let full = spilled.len() >= SPILL_MAX;
                        drop(spills);
                        stats::bump(|c| &c.recv_spilled);
                        stats::trace_step!(
                            "    nobody reads the stream now: copy the {} bytes out and give ring buffer {bid} back",
                            completion.result
                        );
                        after.discarded.push((completion, false));
                        completion.flags = uring::without_buffer(completion.flags) | SPILLED;
                        if full && completion.more() && !*stopping {
                            // Enough held for a reader that does not read: stop receiving.
                            *stopping = true;
                            after.to_cancel.push(index);
                        }
                    }
                }
                queue.push(completion);
                *ended = !completion.more();
                let nobody_waits = waker.is_none();
                if !nobody_waits {
                    stats::trace_step!("    → wake the task waiting for it");
                }
                wakers.extend(waker.take());
                if !*ended && !*stopping && *max_queued > 0 && queue.len() >= usize::from(*max_queued) {
                    *stopping = true;
                    after.to_cancel.push(index);
                }
                if let (true, true, Some(ring)) = (*spill, nobody_waits, &self.buf_ring) {
                    if queue.len() > usize::from(*max_queued) && ring.scarce() {
                        // Past the bound, before the cancel is in (the kernel receives in bursts,
                        // up to 32 buffers for a socket with data), with the ring at its limit
                        // and nearly dry: a task that is not reading must not hold them. Copy
                        // the queue out, in order.
                        spill_queue(ring, queue, self.spills.borrow_mut().entry(index).or_default(), after);
                    }
                }
            }
            Lifecycle::Orphaned { finish, handled, result_is_fd } => {
                if !*handled {
                    after.discarded.push((completion, *result_is_fd));
                }
                if !completion.more() {
                    after.finished_orphans.extend(finish.take().map(|finish| (finish, completion)));
                    ops.remove(index);
                }
            }
            Lifecycle::Completed(_) => unreachable!("a second completion for a single-shot operation"),
            Lifecycle::Behind(_) | Lifecycle::BehindFailed { .. } => {
                unreachable!("a send behind's completion goes to `behind_completed`; a failed one has none")
            }
        }
    }
}

/// The seam to the shared loop: parking the proactor is one turn of its backend (io_uring: one
/// `io_uring_enter` that submits and waits; aio: a `poll` of the completion eventfd; epoll: one
/// `epoll_wait`, and the operations it made ready performed).
impl Park for Driver {
    fn park(&self, timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool> {
        // A turn run meanwhile by `cancel_and_reap` may have seen the notifier fire: then the
        // remote queue has work, and this park must not sleep.
        let timeout = if self.notified.get() { Some(Duration::ZERO) } else { timeout };
        self.turn(timeout, wakers)?;
        Ok(self.notified.replace(false))
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        self.notifier.clone()
    }

    /// Marks the driver dead and hands back every stored waker, so that operations still
    /// awaited outside the runtime see an error instead of waiting forever.
    fn shut_down(&self, wakers: &mut Vec<Waker>) {
        self.alive.set(false);
        for (_, slot) in self.ops.borrow_mut().iter_mut() {
            match slot {
                Lifecycle::Waiting(waker) | Lifecycle::Multishot { waker, .. } => wakers.extend(waker.take()),
                Lifecycle::Behind(record) => {
                    wakers.extend(Driver::behind_waiter(&self.behinds.borrow()[*record]))
                }
                _ => {}
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Operations may still be in the kernel (or a glibc thread), pointing at buffers held
        // by orphaned slots (and by futures that outlived the runtime). Cancel everything and
        // wait for the completions, for a bounded time, before those buffers go away.
        // SQEs still queued (closes of sockets dropped in the last turn, say) would be thrown
        // away with the ring: submit them.
        self.submit_pending();
        let pending: Vec<usize> = self.ops.borrow().iter().map(|(index, _)| index).collect();
        for index in pending {
            let _ = self.cancel(index, true);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.in_flight() > 0 && std::time::Instant::now() < deadline {
            let mut wakers = Vec::new();
            if self.turn(Some(Duration::from_millis(10)), &mut wakers).is_err() {
                break;
            }
            // Completed-but-unclaimed slots (and errors of sends behind nobody will read) no
            // longer point into anything; drop them.
            self.ops
                .borrow_mut()
                .retain(|_, slot| !matches!(slot, Lifecycle::Completed(_) | Lifecycle::BehindFailed { .. }));
        }
        // Whatever is left (the kernel did not answer in time) is leaked on purpose rather
        // than freed under the kernel's feet.
        let leftover = std::mem::take(&mut *self.ops.borrow_mut());
        if !leftover.is_empty() {
            std::mem::forget(leftover);
            std::mem::forget(std::mem::take(&mut *self.behinds.borrow_mut()));
            // Their receives may still fill ring buffers: keep that memory too.
            std::mem::forget(self.buf_ring.clone());
            std::mem::forget(self.dgram_ring.get().cloned());
        }
    }
}

fn wrong_runtime() -> io::Error {
    io::Error::other("operation awaited outside the proactor runtime it was started in")
}

fn runtime_gone() -> io::Error {
    io::Error::other("the proactor runtime this operation belongs to was dropped")
}

enum OpState {
    /// In flight in slot `index`.
    InFlight(usize),
    /// Never submitted (the runtime was gone, or the SQ push failed).
    Failed(Option<io::Error>),
    /// The result was returned.
    Done,
}

/// One operation in flight: a future of its [`Completion`], together with the resources the
/// kernel may touch, which it hands back when the operation is over.
///
/// Dropping it before then orphans the resources into the driver and cancels the operation
/// (see the module docs).
#[must_use = "an operation does nothing useful unless awaited"]
pub(crate) struct Op<T: 'static> {
    driver: Rc<Driver>,
    state: OpState,
    /// `Some` until handed back to the caller or to the driver.
    resources: Option<T>,
    result_is_fd: bool,
    /// Called with the resources and the completion if the CQE arrives after this future was
    /// dropped (see the module docs).
    /// (Boxed twice: a thin pointer keeps every `Op` 8 bytes smaller, and most have none.)
    #[allow(clippy::type_complexity)]
    on_orphan_cqe: Option<Box<Box<dyn FnOnce(T, Completion)>>>,
}

impl<T: 'static> Op<T> {
    fn failed(driver: Rc<Driver>, resources: T, error: io::Error) -> Op<T> {
        Op {
            driver,
            state: OpState::Failed(Some(error)),
            resources: Some(resources),
            result_is_fd: false,
            on_orphan_cqe: None,
        }
    }

    /// Whether the operation was submitted and its result not yet returned.
    pub(crate) fn in_flight(&self) -> bool {
        matches!(self.state, OpState::InFlight(_))
    }

    /// Sets what to do with the resources and the completion if it only arrives after
    /// this future was dropped (by default they are just dropped).
    pub(crate) fn on_orphan_cqe(mut self, handler: impl FnOnce(T, Completion) + 'static) -> Op<T> {
        self.on_orphan_cqe = Some(Box::new(Box::new(handler)));
        self
    }

    /// Bounds the completions a multishot operation may queue before it is stopped: once
    /// `max` are waiting, the driver cancels it (completions already under way still arrive,
    /// then a last one ends it, usually with `ECANCELED`).
    pub(crate) fn limit_queue(self, max: u16) -> Op<T> {
        if let OpState::InFlight(index) = self.state {
            if let Some(Lifecycle::Multishot { max_queued, .. }) = self.driver.ops.borrow_mut().get_mut(index)
            {
                *max_queued = max;
            }
        }
        self
    }

    /// Makes a multishot receive into the ring give its ring buffers back when nobody reads it:
    /// a completion that arrives while no task waits for it has its bytes copied out (fetched
    /// with [`take_spilled`](Self::take_spilled)), and past `SPILL_MAX` bytes the receive is
    /// stopped, so that a stream whose task is stuck (a send to a peer that does not read)
    /// holds no shared buffer and stops taking data.
    pub(crate) fn spill_unread(self) -> Op<T> {
        if let OpState::InFlight(index) = self.state {
            if let Some(Lifecycle::Multishot { spill, .. }) = self.driver.ops.borrow_mut().get_mut(index) {
                *spill = true;
            }
        }
        self
    }

    /// The `n` bytes of a completion that [`Completion::spilled`] says were copied out.
    pub(crate) fn take_spilled(&mut self, n: usize) -> Vec<u8> {
        let OpState::InFlight(index) = self.state else { return Vec::new() };
        let mut spills = self.driver.spills.borrow_mut();
        let Some(spilled) = spills.get_mut(&index) else { return Vec::new() };
        let n = n.min(spilled.len());
        if n == spilled.len() {
            return spills.remove(&index).unwrap_or_default();
        }
        let rest = spilled.split_off(n);
        std::mem::replace(spilled, rest)
    }

    /// The next completion of a multishot operation: `None` once it has ended (the last CQE,
    /// without `IORING_CQE_F_MORE`, was returned).
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Completion>>> {
        let index = match &mut self.state {
            OpState::InFlight(index) => *index,
            OpState::Failed(error) => return Poll::Ready(error.take().map(Err)),
            OpState::Done => return Poll::Ready(None),
        };
        let mut ops = self.driver.ops.borrow_mut();
        let Some(Lifecycle::Multishot { queue, waker, ended, .. }) = ops.get_mut(index) else {
            unreachable!("poll_next on a single-shot operation")
        };
        if let Some(completion) = queue.pop_front() {
            return Poll::Ready(Some(Ok(completion)));
        }
        if *ended {
            ops.remove(index);
            drop(ops);
            self.driver.spills.borrow_mut().remove(&index);
            self.state = OpState::Done;
            return Poll::Ready(None);
        }
        if !self.driver.alive.get() {
            return Poll::Ready(Some(Err(runtime_gone())));
        }
        if !executor::runs_driver::<Driver>(&self.driver) {
            return Poll::Ready(Some(Err(wrong_runtime())));
        }
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<T: 'static + Unpin> Future for Op<T> {
    /// The completion (or the error that kept the operation from being submitted), and the
    /// resources back.
    type Output = (io::Result<Completion>, T);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        std::task::ready!(executor::poll_budget(cx));
        let result = match &mut this.state {
            OpState::Done => panic!("operation polled after it completed"),
            OpState::Failed(error) => Err(error.take().unwrap_or_else(runtime_gone)),
            OpState::InFlight(index) => {
                let index = *index;
                let mut ops = this.driver.ops.borrow_mut();
                match &mut ops[index] {
                    Lifecycle::Completed(completion) => {
                        let completion = *completion;
                        ops.remove(index);
                        Ok(completion)
                    }
                    // Only this ring's runtime reaps its CQEs. If it is gone, or another runtime
                    // is the one running, waiting would never end: cancel the operation and reap
                    // its CQE here, synchronously, so the resources can be handed back safely.
                    Lifecycle::Waiting(_)
                        if !this.driver.alive.get() || !executor::runs_driver::<Driver>(&this.driver) =>
                    {
                        drop(ops);
                        let completion = this.driver.cancel_and_reap(index);
                        if completion.result == -libc::ECANCELED {
                            Err(if this.driver.alive.get() { wrong_runtime() } else { runtime_gone() })
                        } else {
                            Ok(completion) // it finished before the cancel: a real result
                        }
                    }
                    Lifecycle::Waiting(waker) => {
                        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *waker = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                    _ => unreachable!("a single-shot operation's slot is Waiting or Completed"),
                }
            }
        };
        this.state = OpState::Done;
        let resources = this.resources.take().expect("resources are held until completion");
        Poll::Ready((result, resources))
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let OpState::InFlight(index) = self.state else { return };
        let mut ops = self.driver.ops.borrow_mut();
        let Some(slot) = ops.get_mut(index) else { return };
        match slot {
            // Finished, but nobody saw the result: it goes to the orphan handler (a read's
            // bytes to the stream's stash) or is discarded (an fd closed, a buffer given back).
            Lifecycle::Completed(completion) => {
                let completion = *completion;
                ops.remove(index);
                drop(ops);
                match (self.on_orphan_cqe.take(), self.resources.take()) {
                    (Some(handler), Some(resources)) => handler(resources, completion),
                    _ => self.driver.discard(completion, self.result_is_fd),
                }
            }
            Lifecycle::Multishot { queue, ended, .. } => {
                let queued = std::mem::take(queue).into_vec();
                let ended = *ended;
                self.driver.spills.borrow_mut().remove(&index);
                if ended {
                    ops.remove(index);
                } else {
                    *slot =
                        Lifecycle::Orphaned { finish: None, handled: false, result_is_fd: self.result_is_fd };
                }
                drop(ops);
                for completion in queued {
                    self.driver.discard(completion, self.result_is_fd);
                }
                if !ended {
                    let _ = self.driver.cancel(index, false);
                }
            }
            // In flight: the resources move into the slot until the CQE, and the operation is
            // cancelled.
            Lifecycle::Waiting(_) => {
                let (resources, handler) = (self.resources.take(), self.on_orphan_cqe.take());
                let handled = handler.is_some();
                let finish: Box<dyn FnOnce(Completion)> = Box::new(move |completion| {
                    if let (Some(resources), Some(handler)) = (resources, handler) {
                        handler(resources, completion);
                    }
                });
                *slot =
                    Lifecycle::Orphaned { finish: Some(finish), handled, result_is_fd: self.result_is_fd };
                drop(ops);
                let _ = self.driver.cancel(index, false);
            }
            Lifecycle::Orphaned { .. } => unreachable!("a live Op's slot is never orphaned"),
            Lifecycle::Behind(_) | Lifecycle::BehindFailed { .. } => {
                unreachable!("a send behind has no Op")
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection has a slot (its multishot receive's), and every slot the room of the
    /// largest kind (a multishot operation's; a send behind keeps its record apart).
    #[test]
    fn an_operation_slot_stays_small() {
        assert!(std::mem::size_of::<Lifecycle>() <= 48, "{}", std::mem::size_of::<Lifecycle>());
    }
}
