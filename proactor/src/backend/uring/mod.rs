//! The io_uring backend: operations go in through the submission queue (SQ), results come back
//! through the completion queue (CQ).
//!
//! Each [`Request`] becomes one SQE whose `user_data` is the operation's slot in the driver.
//! SQEs pile up while tasks run and go to the kernel in one `io_uring_enter` per loop turn
//! ([`Uring::turn`]), which also waits for completions; this batching is what brings syscalls
//! per operation far below one. The kernel performs the operation itself, asynchronously: no
//! thread of ours (and none hidden in a library) blocks on a socket.
//!
//! # Full queues
//!
//! A full SQ is submitted to the kernel, and the push retried. The CQ is drained completely
//! every turn; should it overflow anyway (more completions in flight than it holds), the kernel
//! keeps the extra CQEs (`IORING_FEAT_NODROP`) and flags the ring, and the next
//! `io_uring_enter` (the `io-uring` crate adds `IORING_ENTER_GETEVENTS` when it sees the flag)
//! moves them into the CQ: nothing is lost.
//!
//! # Registered files
//!
//! An SQE names its socket by fd, and the kernel then looks the fd up and takes a reference to
//! the file for every operation (`fget`/`fput`: atomic counts, some 1.5-2 % of an echo
//! server's CPU here). A *registered* file is looked up in the ring's own table instead, with
//! no count to change. The ring registers a sparse table at set-up (as many entries as the fd
//! limit allows, at most [`FILES_MAX`]) and puts each socket's file in the entry of its own fd
//! number the first time a receive or send is started on it (`io_uring_register`, once per
//! socket); its SQEs then name the entry (`IOSQE_FIXED_FILE`). Listening and connecting
//! sockets are left out (an accept or a connect is once per connection). Closing goes through
//! the ring: an `IORING_OP_FILES_UPDATE` SQE empties the entry, then the close SQE, both after
//! every SQE already queued for the socket, which the kernel has looked up by then (it issues
//! SQEs in order; an operation in flight keeps the file). Every socket an operation was started
//! on is closed this way (`Io::close_fd`): a socket closed behind the ring's back would stay
//! open in the table.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use executor::Notifier;

use crate::backend::io::{Backend, BufId, Completion, Config, Facts, Gauges, Io, Request};
use crate::bufring::BufRing;
use crate::stats;
use crate::sys;
use crate::trace;

mod ring;

/// How many completions a batching wait gathers at most (see `Uring::batch_wait`).
const BATCH: usize = 64;

/// The most entries of the registered-file table (see the module docs): fds at or above it
/// are named by number.
const FILES_MAX: u32 = 1 << 16;

/// What `IORING_OP_FILES_UPDATE` writes into an entry to empty it (the kernel reads it when it
/// issues the SQE: a static outlives every SQE).
static NO_FILE: [i32; 1] = [-1];

/// The provided-buffer ring by default when the kernel consumes buffers incrementally: 128
/// buffers of 16 KiB at first (2 MiB, growing by as much under load). A large message then
/// arrives in 16 KiB pieces (tokio's read size), small ones share a buffer, and one burst of
/// a multishot receive (the kernel loops up to 32 times on a socket with data before it
/// yields) takes at most a quarter of the ring. Larger buffers made those bursts drain the
/// ring and grow it for a single fast sender. Without incremental consumption, the
/// `Builder`'s default of 128 buffers of 4 KiB.
const INCREMENTAL_DEFAULT: (u16, u32) = (128, 16 * 1024);

/// `user_data` of the notifier's poll; operation slots are slab indices, far below these.
const NOTIFY_TOKEN: u64 = u64::MAX;
/// `user_data` of cancel requests and wait timeouts, whose own CQEs carry nothing we need.
const IGNORED_TOKEN: u64 = u64::MAX - 1;

/// What the kernel's io_uring supports, probed at start-up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UringFeatures {
    pub(crate) multishot_accept: bool,
    /// `SEND` takes a destination address (`sqe->addr2`, Linux 6.0).
    send_to: bool,
    /// `io_uring_enter` takes a timeout argument (`IORING_FEAT_EXT_ARG`, Linux 5.11).
    ext_arg: bool,
    /// `io_uring_enter` takes a minimum wait (`IORING_FEAT_MIN_TIMEOUT`, Linux 6.12).
    min_timeout: bool,
}

/// The ring. Lives on the runtime's thread.
pub(crate) struct Uring {
    ring: RefCell<IoUring>,
    pub(crate) features: UringFeatures,
    /// Whether the notifier's poll is in the kernel (it is single-shot: re-armed after it fires).
    notify_armed: Cell<bool>,
    /// How long a wait may gather completions before returning with the first (`None`: return
    /// at the first completion). Only where the kernel supports it.
    batch_wait: Option<Duration>,
    /// Turns that found the CQ overflowed into the kernel's backlog (see the module docs).
    cq_overflows: Cell<u64>,
    /// Per operation slot, what its CQEs need to be read right ([`DATAGRAM`], [`LIMITED`]):
    /// a CQE says neither which buffer group it took from nor how its SQE was built.
    tags: RefCell<Vec<u8>>,
    /// The kernel ends a multishot receive at a byte limit (the SQE's `optlen`, Linux 6.17):
    /// true until one such SQE is refused with `EINVAL` (see `receive_limit`).
    limits: Cell<bool>,
    /// The registered-file table's size (0: none; see the module docs), and which fds are in
    /// it (a bit per fd).
    files: u32,
    registered: RefCell<Vec<u64>>,
    /// Timespec of a pending `IORING_OP_TIMEOUT` (kernels without `EXT_ARG`): the kernel reads
    /// it when the SQE is submitted, so it lives here, at a stable address, until then.
    wait_timeout: Box<RefCell<types::Timespec>>,
    /// The operation of each slot's SQE, for the trace (filled only while tracing).
    #[cfg(feature = "trace")]
    names: RefCell<Vec<Option<trace::Op>>>,
}

/// Turns an `io_uring_setup` failure into one sentence that says what happened and what to do.
pub(crate) fn explain_setup_error(e: io::Error) -> io::Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let message = match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring is not available: this kernel does not provide it (ENOSYS); \
             use the readiness runtime instead (--runtime reactor)"
            .to_string(),
        Some(libc::EPERM) if disabled > 0 => format!(
            "io_uring is disabled on this machine (sysctl kernel.io_uring_disabled = {disabled}); \
             enable it as root with `sysctl kernel.io_uring_disabled=0`, or use --runtime reactor"
        ),
        Some(libc::EPERM) => "io_uring is not permitted for this process (EPERM): a seccomp policy, \
             as in many containers, blocks it; allow io_uring_setup in the policy, or use --runtime reactor"
            .to_string(),
        Some(libc::ENOMEM) => "io_uring could not allocate or lock memory for its rings (ENOMEM): raise \
             the locked-memory limit (ulimit -l), use a smaller ring, or use --runtime reactor"
            .to_string(),
        _ => format!("io_uring could not be set up ({e}); use --runtime reactor"),
    };
    io::Error::new(e.kind(), message)
}

impl Uring {
    /// Sets up the ring (and the provided-buffer ring, if asked for and supported).
    pub(crate) fn new(config: &Config) -> io::Result<(Uring, Option<BufRing>)> {
        if let Some(errno) = config.inject_setup_errno {
            return Err(explain_setup_error(io::Error::from_raw_os_error(errno)));
        }
        // Completions of socket operations are finished by "task work" run in this thread's
        // context. By default the kernel interrupts the thread to run it as soon as it is queued;
        // DEFER_TASKRUN (Linux 6.1, with SINGLE_ISSUER: only this thread submits, which an `Rc`
        // driver guarantees) runs it only when the loop enters the ring to reap, in one batch.
        // TASKRUN_FLAG makes the kernel say, in the SQ flags, when such work is pending.
        let build = |defer_taskrun: bool| {
            let mut builder = IoUring::builder();
            if let Some(idle) = config.sqpoll_idle {
                builder.setup_sqpoll(idle.as_millis().min(u32::MAX as u128) as u32);
            } else if defer_taskrun {
                builder.setup_single_issuer().setup_defer_taskrun().setup_taskrun_flag();
            }
            builder.build(config.entries.max(2))
        };
        let ring = match build(true) {
            // An older kernel that does not know the flags.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => build(false),
            other => other,
        }
        .map_err(explain_setup_error)?;
        let mut probe = Probe::new();
        let probed = ring.submitter().register_probe(&mut probe).is_ok();
        // Buffer rings need Linux 5.19 (registration fails with EINVAL before); multishot
        // receive came with 6.0, which the probe cannot show directly (same opcode as a plain
        // receive), so zero-copy send, new in the same release, stands in for it.
        let buf_ring = match config.provided_buffers {
            Some((count, size)) if config.multishot && probed && probe.is_supported(opcode::SendZc::CODE) => {
                // The descriptor ring is registered at its largest: as many buffers as the
                // memory limit allows (a power of two, at most 32768), at least `count`.
                let register = |count: u16, size: u32, incremental: bool| {
                    let by_limit = (config.ring_memory_limit / size as usize).clamp(1, 32768);
                    let max =
                        (1usize << by_limit.ilog2()).max(usize::from(count).next_power_of_two()).min(32768);
                    ring::register(&ring, crate::bufring::GROUP, count, max as u16, size, incremental).ok()
                };
                // With incremental consumption, large buffers cost nothing for small messages
                // (many share one buffer) and save completions and sends for large ones.
                let (inc_count, inc_size) = INCREMENTAL_DEFAULT;
                match (config.incremental_buffers, config.buffers_default) {
                    (true, true) => {
                        register(inc_count, inc_size, true).or_else(|| register(count, size, false))
                    }
                    (true, false) => register(count, size, true).or_else(|| register(count, size, false)),
                    (false, _) => register(count, size, false),
                }
            }
            _ => None,
        };
        let features = UringFeatures {
            // Multishot accept shares its opcode with plain accept, so the probe cannot tell;
            // IORING_OP_SOCKET came in the same release (5.19) and stands in for it.
            multishot_accept: config.multishot && probed && probe.is_supported(opcode::Socket::CODE),
            // SEND with an address shares its opcode with plain SEND; zero-copy send came in the
            // same release (6.0) and stands in for it.
            send_to: probed && probe.is_supported(opcode::SendZc::CODE),
            ext_arg: ring.params().is_feature_ext_arg(),
            min_timeout: ring.params().is_feature_min_timeout(),
        };
        // The registered-file table (sparse: Linux 5.19), as large as the fd limit (the kernel
        // refuses more) up to FILES_MAX.
        let files = if probed && probe.is_supported(opcode::Socket::CODE) {
            let size = executor::sys::nofile_limit().unwrap_or(0).min(u64::from(FILES_MAX)) as u32;
            if size > 0 {
                ring.submitter().register_files_sparse(size).map_or(0, |()| size)
            } else {
                0
            }
        } else {
            0
        };
        let uring = Uring {
            ring: RefCell::new(ring),
            files,
            registered: RefCell::new(Vec::new()),
            features,
            notify_armed: Cell::new(false),
            batch_wait: config.batch_wait.filter(|_| features.min_timeout),
            cq_overflows: Cell::new(0),
            tags: RefCell::new(Vec::new()),
            limits: Cell::new(config.receive_limits),
            wait_timeout: Box::new(RefCell::new(types::Timespec::new())),
            #[cfg(feature = "trace")]
            names: RefCell::new(Vec::new()),
        };
        Ok((uring, buf_ring))
    }

    /// Pushes `entry` onto the SQ, submitting to make room if the SQ is full.
    ///
    /// # Safety
    /// Every pointer in `entry` must stay valid until the entry's CQE arrives.
    unsafe fn push(&self, entry: &squeue::Entry) -> io::Result<()> {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: the caller guarantees the entry's pointers outlive its completion.
            if unsafe { ring.submission().push(entry) }.is_ok() {
                stats::bump(|c| &c.sqes);
                return Ok(());
            }
            // The SQ is full: hand it to the kernel and try again.
            stats::bump(|c| &c.sys_io_uring_enter);
            stats::trace_step!(trace::Event::SqFull);
            match ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.kind() == io::ErrorKind::Interrupted => {
                    // EBUSY: the CQ is backed up; completions must be reaped first. They stay
                    // in the CQ until the next turn; entering with GETEVENTS flushes the
                    // kernel's overflow list so the SQ drains.
                    stats::bump(|c| &c.sys_io_uring_enter);
                    ring.submit_and_wait(0)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues the SQE for `request`, with `index` as its `user_data`.
    ///
    /// # Safety
    /// Every pointer in `request` must stay valid until the operation's CQE arrives.
    unsafe fn queue(&self, index: usize, request: &Request) -> io::Result<()> {
        // Receives and sends name the socket's registered file (see the module docs).
        let file = match *request {
            Request::Recv { fd, .. }
            | Request::RecvMulti { fd, .. }
            | Request::Send { fd, .. }
            | Request::RecvMsg { fd, .. }
            | Request::SendMsg { fd, .. }
            | Request::SendTo { fd, .. }
            | Request::RecvMsgMulti { fd, .. } => self.registered_file(fd),
            _ => None,
        };
        // `opcode::X::new(target, ..)` with the socket's entry in the table if it has one, else
        // its fd (the two are different types).
        macro_rules! on {
            ($fd:expr, |$t:ident| $build:expr) => {
                match file {
                    Some(entry) => {
                        let $t = types::Fixed(entry);
                        $build
                    }
                    None => {
                        let $t = types::Fd($fd);
                        $build
                    }
                }
            };
        }
        let entry = match *request {
            Request::Accept { fd, addr, len } => {
                opcode::Accept::new(types::Fd(fd), addr, len).flags(libc::SOCK_CLOEXEC).build()
            }
            Request::AcceptMulti { fd } => {
                opcode::AcceptMulti::new(types::Fd(fd)).flags(libc::SOCK_CLOEXEC).build()
            }
            Request::Connect { fd, addr, len } => opcode::Connect::new(types::Fd(fd), addr, len).build(),
            Request::Recv { fd, buf, len } => on!(fd, |t| opcode::Recv::new(t, buf, len).build()),
            Request::RecvMulti { fd, group, limit } => match limit {
                0 => on!(fd, |t| opcode::RecvMulti::new(t, group).build()),
                _ if !self.limits.get() => on!(fd, |t| opcode::RecvMulti::new(t, group).build()),
                // `len` caps each completion too (a receive is otherwise as large as the piece of
                // buffer it lands in), so that the last one overshoots the limit by less than it.
                limit => {
                    receive_limit(on!(fd, |t| opcode::RecvMulti::new(t, group).len(limit).build()), limit)
                }
            },
            // Not offered here (`Facts::picks_buffers` is false).
            Request::RecvPick { .. } => return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
            // MSG_NOSIGNAL: a reset peer is EPIPE, not a SIGPIPE that kills the process.
            Request::Send { fd, buf, len, dontwait } => {
                let flags = libc::MSG_NOSIGNAL | if dontwait { libc::MSG_DONTWAIT } else { 0 };
                on!(fd, |t| opcode::Send::new(t, buf, len).flags(flags).build())
            }
            // MSG_TRUNC: the result is the datagram's real length, even if it did not fit.
            Request::RecvMsg { fd, msg } => {
                on!(fd, |t| opcode::RecvMsg::new(t, msg).flags(libc::MSG_TRUNC as u32).build())
            }
            Request::SendMsg { fd, msg } => {
                on!(fd, |t| opcode::SendMsg::new(t, msg).flags(libc::MSG_NOSIGNAL as u32).build())
            }
            // SEND with a destination (Linux 6.0): the kernel copies in the address alone.
            Request::SendTo { fd, len, to } => {
                // SAFETY: the destination is the operation's until its completion (the
                // request's contract); the kernel reads the buffer and the address from it.
                let to = unsafe { &*to };
                on!(fd, |t| opcode::Send::new(t, to.buf, len)
                    .dest_addr(to.addr_ptr())
                    .dest_addr_len(to.addr_len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build())
            }
            Request::RecvMsgMulti { fd, msg, group } => {
                on!(fd, |t| opcode::RecvMsgMulti::new(t, msg, group).build())
            }
        };
        {
            let mut tags = self.tags.borrow_mut();
            if tags.len() <= index {
                tags.resize(index + 1, 0);
            }
            tags[index] = match request {
                Request::RecvMsgMulti { .. } => DATAGRAM,
                Request::RecvMulti { limit, .. } if *limit > 0 && self.limits.get() => LIMITED,
                _ => 0,
            };
        }
        #[cfg(feature = "trace")]
        if executor::trace::on() {
            let op = request.traced();
            stats::trace_step!(trace::Event::SqeQueued { user_data: index, op });
            let mut names = self.names.borrow_mut();
            if names.len() <= index {
                names.resize(index + 1, None);
            }
            names[index] = Some(op);
        }
        // SAFETY: the caller guarantees the request's pointers outlive the operation.
        unsafe { self.push(&entry.user_data(index as u64)) }
    }

    /// Submits the SQEs queued so far, if any (one `io_uring_enter`).
    fn submit(&self) {
        let mut ring = self.ring.borrow_mut();
        if !ring.submission().is_empty() {
            stats::bump(|c| &c.sys_io_uring_enter);
            let _ = ring.submit();
        }
    }

    /// Closes `fd` through the ring: the close SQE follows, in SQ order, every SQE already
    /// queued that names the fd, so none of them can resolve the number after it was reused
    /// (with SQPOLL, `submit` does not wait for the SQ thread to consume the SQ). `now` submits
    /// it at once (outside the runtime, nothing might turn the ring for a while).
    fn close(&self, fd: OwnedFd, now: bool) {
        let raw = fd.into_raw_fd();
        self.unregister_file(raw);
        let entry = opcode::Close::new(types::Fd(raw)).build().user_data(IGNORED_TOKEN);
        stats::trace_step!(trace::Event::CloseQueued { fd: raw });
        // SAFETY: a close request carries no pointers.
        let pushed = unsafe { self.push(&entry) }.is_ok();
        if now {
            self.submit();
        }
        if !pushed {
            // SAFETY: the push failed, so `raw` is still ours.
            drop(unsafe { sys::owned_fd(raw) });
        }
    }

    /// The entry of `fd` in the registered-file table, putting the socket's file there on its
    /// first operation (one `io_uring_register`); `None` where there is no table, `fd` is beyond
    /// it, or the kernel refused.
    fn registered_file(&self, fd: RawFd) -> Option<u32> {
        let entry = u32::try_from(fd).ok().filter(|&entry| entry < self.files)?;
        let (word, bit) = (entry as usize / 64, 1u64 << (entry % 64));
        let mut registered = self.registered.borrow_mut();
        if registered.get(word).is_some_and(|w| w & bit != 0) {
            return Some(entry);
        }
        stats::bump(|c| &c.sys_other);
        self.ring.borrow().submitter().register_files_update(entry, &[fd]).ok()?;
        stats::bump(|c| &c.files_registered);
        if registered.len() <= word {
            registered.resize(word + 1, 0);
        }
        registered[word] |= bit;
        Some(entry)
    }

    /// Empties `fd`'s entry in the registered-file table, if it has one, by an SQE that follows
    /// every one already queued (see the module docs).
    fn unregister_file(&self, fd: RawFd) {
        let Some(entry) = u32::try_from(fd).ok().filter(|&entry| entry < self.files) else { return };
        let (word, bit) = (entry as usize / 64, 1u64 << (entry % 64));
        {
            let mut registered = self.registered.borrow_mut();
            match registered.get_mut(word) {
                Some(w) if *w & bit != 0 => *w &= !bit,
                _ => return,
            }
        }
        let update = opcode::FilesUpdate::new(NO_FILE.as_ptr(), 1).offset(entry as i32).build();
        // SAFETY: the SQE points to a static, which outlives it.
        if unsafe { self.push(&update.user_data(IGNORED_TOKEN)) }.is_err() {
            // The SQ cannot take it: empty the entry now, after handing over what is queued
            // (whose operations look the file up when they are issued).
            self.submit();
            stats::bump(|c| &c.sys_other);
            let _ = self.ring.borrow().submitter().register_files_update(entry, &NO_FILE);
        }
    }

    /// Asks the kernel to cancel the operation in `index` (its CQE then comes with `-ECANCELED`,
    /// or with its result if it won the race).
    fn cancel_op(&self, index: usize) {
        let entry = opcode::AsyncCancel::new(index as u64).build().user_data(IGNORED_TOKEN);
        stats::bump(|c| &c.cancels);
        stats::trace_step!(trace::Event::CancelQueued { user_data: index });
        // SAFETY: a cancel request carries no pointers.
        if unsafe { self.push(&entry) }.is_err() {
            // Cannot even submit: the operation completes on its own eventually (or never, for
            // an idle socket, which then keeps its slot until the runtime is dropped).
        }
    }

    fn arm_notifier(&self, notifier: &Notifier) {
        if self.notify_armed.get() {
            return;
        }
        // Single-shot, re-armed after each notification: one SQE per burst of remote wake-ups,
        // and it works on every kernel with io_uring (multishot poll needs 5.13).
        let entry = opcode::PollAdd::new(types::Fd(notifier.fd().as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(NOTIFY_TOKEN);
        // SAFETY: a poll request carries no pointers; the eventfd outlives the ring (the driver
        // owns both, and drops the ring first).
        if unsafe { self.push(&entry) }.is_ok() {
            self.notify_armed.set(true);
        }
    }

    /// One turn: submit every queued SQE, wait for a completion if `timeout` is not zero
    /// (at most `timeout`, forever if `None`), then hand every operation's CQE to `complete`.
    ///
    /// Returns whether the notifier fired, i.e. whether another thread posted work.
    fn reap(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool> {
        self.arm_notifier(notifier);
        self.enter(timeout)?;
        let mut notified = false;
        let mut ring = self.ring.borrow_mut();
        let mut reaped = 0;
        stats::trace_step!(trace::Event::Cqes { count: ring.completion().len() });
        let tags = self.tags.borrow();
        for cqe in ring.completion() {
            reaped += 1;
            match cqe.user_data() {
                NOTIFY_TOKEN => {
                    stats::trace_step!(trace::Event::NotifierCqe);
                    notifier.drain();
                    notified = true;
                    if !cqueue::more(cqe.flags()) {
                        self.notify_armed.set(false);
                    }
                }
                IGNORED_TOKEN => {}
                index => {
                    let index = index as usize;
                    let tag = tags.get(index).copied().unwrap_or(0);
                    let mut completion = completion_of(&cqe, tag & DATAGRAM != 0);
                    if tag & LIMITED != 0 && completion.result == -libc::EINVAL && !completion.more {
                        // A kernel before 6.17 reads `optlen` as a field it refuses (and one
                        // before 6.11 a multishot `len`): receive without the limit from now on
                        // (the driver stops such receives itself), and have this one re-armed.
                        self.limits.set(false);
                        completion.result = -libc::ECANCELED;
                    }
                    stats::trace_step!(trace::Event::Cqe {
                        user_data: index,
                        op: self.op_of(index),
                        result: completion.result,
                        ring_buffer: match completion.buffer {
                            Some(BufId::Ring(b) | BufId::Datagram(b)) => Some(b),
                            _ => None,
                        },
                        more: completion.more,
                    });
                    complete(index, completion)
                }
            }
        }
        drop(tags);
        drop(ring);
        stats::batch(reaped);
        self.arm_notifier(notifier);
        Ok(notified)
    }

    /// The single `io_uring_enter` of a turn.
    fn enter(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut ring = self.ring.borrow_mut();
        if ring.submission().cq_overflow() {
            self.cq_overflows.set(self.cq_overflows.get() + 1);
        }
        let queued = ring.submission().len();
        // Nothing to submit, no wait, nothing held in the kernel: the CQ is read without a syscall.
        let entering = timeout != Some(Duration::ZERO)
            || queued > 0
            || ring.submission().cq_overflow()
            || ring.submission().taskrun();
        if entering {
            stats::bump(|c| &c.sys_io_uring_enter);
            stats::trace_step!(trace::Event::Enter {
                submit: queued,
                wait: match timeout {
                    Some(Duration::ZERO) => trace::UringWait::No,
                    None => trace::UringWait::Forever,
                    Some(t) => trace::UringWait::AtMost(t),
                },
            });
        } else {
            stats::trace_step!(trace::Event::CqRead);
        }
        let result = match timeout {
            // Nothing to submit and no wait: the CQ ring is read without entering the kernel
            // (unless the kernel holds overflowed CQEs, which only an enter brings back).
            Some(Duration::ZERO) if !entering => Ok(0),
            Some(Duration::ZERO) => ring.submit(),
            // Batching (Linux 6.12): wait for up to BATCH completions, but once `min_wait` has
            // passed return as soon as there is one. Fewer enters under load, for at most
            // `min_wait` of extra latency.
            timeout if self.batch_wait.is_some() => {
                let min_wait = self.batch_wait.unwrap_or_default().as_micros().min(u32::MAX as u128) as u32;
                let ts = timeout.map(types::Timespec::from);
                let args = types::SubmitArgs::new().min_wait_usec(min_wait);
                match &ts {
                    Some(ts) => ring.submitter().submit_with_args(BATCH, &args.timespec(ts)),
                    None => ring.submitter().submit_with_args(BATCH, &args),
                }
            }
            None => ring.submit_and_wait(1),
            Some(timeout) if self.features.ext_arg => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                ring.submitter().submit_with_args(1, &args)
            }
            Some(timeout) => {
                drop(ring);
                *self.wait_timeout.borrow_mut() = types::Timespec::from(timeout);
                let ts: *const types::Timespec = &*self.wait_timeout.borrow();
                // count(1): the timer also ends when any completion arrives, instead of staying
                // armed in the kernel after an early wake-up.
                let entry = opcode::Timeout::new(ts).count(1).build().user_data(IGNORED_TOKEN);
                // SAFETY: the timespec lives in the box, which outlives the ring; the kernel
                // copies it at submission, which the enter below does.
                unsafe { self.push(&entry)? };
                self.ring.borrow().submit_and_wait(1)
            }
        };
        match result {
            Ok(_) => Ok(()),
            // ETIME: the wait's timeout expired; EINTR: a signal; EBUSY: the CQ is full, and
            // reaping it is exactly what comes next; EAGAIN/ENOMEM: the kernel could not
            // allocate for a submission right now, which the next turn retries.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ENOMEM)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// A slot's tag: its request receives into the datagram ring (a `RecvMsgMulti`), so a buffer
/// its CQE names is of that ring ([`BufId::Datagram`]).
const DATAGRAM: u8 = 1;
/// A slot's tag: its request is a multishot receive the kernel was asked to end at a byte
/// limit.
const LIMITED: u8 = 2;

/// `entry` (a multishot `RECV`) with the kernel asked to end it once `limit` bytes came: the
/// SQE's `optlen` (Linux 6.17), which the `io-uring` crate does not set. Older kernels read
/// that field as `file_index` and refuse the SQE with `EINVAL`.
fn receive_limit(entry: squeue::Entry, limit: u32) -> squeue::Entry {
    /// Where `optlen` sits in `struct io_uring_sqe` (after `buf_group` and `personality`).
    const OPTLEN: usize = 44;
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's 64-byte `io_uring_sqe`
    // (checked above), a plain-old-data struct: any bytes are a valid value of it.
    let mut sqe: [u8; 64] = unsafe { std::mem::transmute(entry) };
    sqe[OPTLEN..OPTLEN + 4].copy_from_slice(&limit.to_ne_bytes());
    // SAFETY: as above; only the `optlen` field changed.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(sqe) }
}

/// The completion a CQE reports, in the driver's terms: its buffer, if the kernel picked one
/// (of the datagram ring if `datagram`), and whether more follow.
fn completion_of(cqe: &cqueue::Entry, datagram: bool) -> Completion {
    let flags = cqe.flags();
    let buffer =
        cqueue::buffer_select(flags)
            .map(|bid| if datagram { BufId::Datagram(bid) } else { BufId::Ring(bid) });
    Completion {
        buffer,
        more: cqueue::more(flags),
        filling: cqueue::buffer_more(flags),
        ..Completion::of(cqe.result())
    }
}

impl Io for Uring {
    fn facts(&self) -> Facts {
        Facts {
            kind: Backend::IoUring,
            multishot_accept: self.features.multishot_accept,
            picks_buffers: false,
            messages: true,
            send_to: self.features.send_to,
        }
    }

    unsafe fn start(&self, index: usize, request: &Request) -> io::Result<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.queue(index, request) }
    }

    fn cancel(&self, index: usize, _force: bool) -> bool {
        self.cancel_op(index);
        false
    }

    fn close_fd(&self, fd: OwnedFd, now: bool) {
        self.close(fd, now);
    }

    fn submit_pending(&self) {
        self.submit();
    }

    fn turn(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool> {
        self.reap(timeout, notifier, complete)
    }

    /// Another provided-buffer ring (the datagram ring: whole buffers, never incremental).
    fn buffer_ring(
        &self,
        group: u16,
        initial: u16,
        max: u16,
        size: u32,
        incremental: bool,
    ) -> Option<BufRing> {
        ring::register(&self.ring.borrow(), group, initial, max, size, incremental).ok()
    }

    fn gauges(&self) -> Gauges {
        Gauges { queue_overflows: self.cq_overflows.get(), threads: None }
    }
}

impl Uring {
    /// The operation of the SQE of slot `index`, for the trace.
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    fn op_of(&self, index: usize) -> Option<trace::Op> {
        #[cfg(feature = "trace")]
        return self.names.borrow().get(index).copied().flatten();
        #[cfg(not(feature = "trace"))]
        {
            let _ = index;
            None
        }
    }
}
