//! The io_uring driver: operations go in through the submission queue (SQ), results come back
//! through the completion queue (CQ).
//!
//! # An operation's life
//!
//! 1. A future ([`Op`]) is created with everything the kernel will touch (buffer, socket
//!    address storage) moved into it, at heap addresses that do not change when the future
//!    moves. It takes a slot in the driver's [`Slab`] of operations; the slot index is the
//!    SQE's `user_data`, and the SQE is pushed onto the SQ. No syscall yet.
//! 2. The executor keeps running tasks, which push more SQEs. Once per loop turn it enters the
//!    kernel once (`io_uring_enter`: submit everything queued, and wait for at least one
//!    completion if no task is runnable, bounded by the nearest timer). This batching is what
//!    brings syscalls per operation far below one.
//! 3. Each CQE names its slot through `user_data`; the driver stores the result there and wakes
//!    the future, which takes result and resources back and hands them to the caller.
//!
//! # Dropping an operation early
//!
//! The kernel may still write into the buffer after the future is gone (a `timeout` around a
//! read, say). So dropping an unfinished `Op` does not free anything: it moves the resources
//! into the slot ([`Lifecycle::Orphaned`]) and submits an `IORING_OP_ASYNC_CANCEL` for it. The
//! slot and the resources are freed only when the operation's own CQE arrives (cancelled or
//! not). If that CQE carries a new fd (an accept that won the race), the fd is closed.
//!
//! An operation can also win the race with *data*: a receive that completes just as it is
//! cancelled has taken bytes out of the socket, and nobody is waiting for them any more. An
//! operation can therefore carry an *orphan handler* that gets the resources and the late
//! completion; `net` uses it to keep those bytes for the stream's next read, so cancelling a
//! read (a `timeout` around it, say) never loses data.
//!
//! # Full queues
//!
//! A full SQ is submitted to the kernel, and the push retried. The CQ is drained completely
//! every turn; should it overflow anyway (more completions in flight than it holds), the kernel
//! keeps the extra CQEs (`IORING_FEAT_NODROP`) and flags the ring, and the next
//! `io_uring_enter` (the `io-uring` crate adds `IORING_ENTER_GETEVENTS` when it sees the flag)
//! moves them into the CQ: nothing is lost.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use slab::Slab;

use crate::bufring::BufRing;
use crate::sys;

/// How many completions a batching wait gathers at most (see `Driver::batch_wait`).
const BATCH: usize = 64;

/// `user_data` of the notifier's poll; operation slots are slab indices, far below these.
const NOTIFY_TOKEN: u64 = u64::MAX;
/// `user_data` of cancel requests and wait timeouts, whose own CQEs carry nothing we need.
const IGNORED_TOKEN: u64 = u64::MAX - 1;

/// The result of one CQE.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion {
    /// The syscall-style result: a byte count or fd when `>= 0`, `-errno` otherwise.
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl Completion {
    /// The result as `io::Result`.
    pub(crate) fn into_result(self) -> io::Result<u32> {
        if self.result >= 0 {
            Ok(self.result as u32)
        } else {
            Err(io::Error::from_raw_os_error(-self.result))
        }
    }
}

/// The state of one operation slot.
enum Lifecycle {
    /// In the SQ or in the kernel; the future waits (its waker, once it has been polled).
    Waiting(Option<Waker>),
    /// The CQE arrived; the future has not looked yet.
    Completed(Completion),
    /// The future was dropped before the CQE. What the kernel may still touch lives here until
    /// the CQE arrives; `result_is_fd` says whether a successful result is an fd to close.
    ///
    /// `finish` owns the resources (and calls the orphan handler, if the operation has one);
    /// `handled` says the handler deals with the completion, otherwise it is discarded (its fd
    /// closed, its buffer given back).
    Orphaned { finish: Option<Box<dyn FnOnce(Completion)>>, handled: bool, result_is_fd: bool },
    /// A multishot operation: every CQE is queued for the future, until one comes without
    /// `IORING_CQE_F_MORE`.
    /// (A `Vec`, not a `VecDeque`: it is almost always empty or holds one, and is 8 bytes
    /// smaller in each slot.)
    /// `max_queued` (0: no bound) makes the driver cancel the operation once that many
    /// completions wait (`stopping` then records that it did).
    Multishot { queue: Vec<Completion>, waker: Option<Waker>, ended: bool, stopping: bool, max_queued: u16 },
}

/// Settings the driver needs from the runtime's builder.
#[derive(Clone, Debug)]
pub(crate) struct DriverConfig {
    pub(crate) entries: u32,
    pub(crate) sqpoll_idle: Option<Duration>,
    /// A testing hook: fail `io_uring_setup` with this errno, as a kernel without io_uring,
    /// with it disabled, or behind a seccomp policy would.
    pub(crate) inject_setup_errno: Option<i32>,
    /// Use multishot operations where the kernel has them.
    pub(crate) multishot: bool,
    /// Buffers (count, a power of two, and size) of the provided-buffer ring; `None` for none.
    pub(crate) provided_buffers: Option<(u16, u32)>,
    /// See `Driver::batch_wait`.
    pub(crate) batch_wait: Option<Duration>,
}

/// What the kernel's io_uring supports, probed at start-up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features {
    pub(crate) multishot_accept: bool,
    /// `io_uring_enter` takes a timeout argument (`IORING_FEAT_EXT_ARG`, Linux 5.11).
    ext_arg: bool,
    /// `io_uring_enter` takes a minimum wait (`IORING_FEAT_MIN_TIMEOUT`, Linux 6.12).
    min_timeout: bool,
}

/// The ring, and every operation in flight on it. Lives on the runtime's thread.
pub(crate) struct Driver {
    /// Declared (and so dropped) before `buf_ring`: the registration dies with the ring, and
    /// only then may the buffers be freed.
    ring: RefCell<IoUring>,
    /// The provided-buffer ring, where the kernel supports it (see `bufring`).
    buf_ring: Option<Rc<BufRing>>,
    ops: RefCell<Slab<Lifecycle>>,
    notifier: Arc<Notifier>,
    /// Whether the notifier's poll is in the kernel (it is single-shot: re-armed after it fires).
    notify_armed: Cell<bool>,
    /// The notifier fired since the executor last looked: set by any turn (also the ones
    /// `cancel_and_reap` runs), consumed by the executor's `park`.
    notified: Cell<bool>,
    pub(crate) features: Features,
    /// False once the runtime is dropped: new operations fail instead of waiting forever.
    alive: Cell<bool>,
    /// How long a wait may gather completions before returning with the first (`None`: return
    /// at the first completion). Only where the kernel supports it.
    batch_wait: Option<Duration>,
    /// Turns that found the CQ overflowed into the kernel's backlog (see the module docs).
    cq_overflows: Cell<u64>,
    /// Timespec of a pending `IORING_OP_TIMEOUT` (kernels without `EXT_ARG`): the kernel reads
    /// it when the SQE is submitted, so it lives here, at a stable address, until then.
    wait_timeout: Box<RefCell<types::Timespec>>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("in_flight", &self.ops.borrow().len()).finish()
    }
}

/// The capacity to reserve for slabs that grow with the number of connections: the fd limit,
/// capped at 2^20. Reserving costs no memory until used (fresh pages are mapped on first
/// touch), and the slab then never reallocates, which would copy it and leave the old block
/// behind in the heap.
pub(crate) fn slab_capacity() -> usize {
    sys::nofile_limit().map_or(1024, |n| n.clamp(64, 1 << 20) as usize)
}

/// Turns an `io_uring_setup` failure into one sentence that says what happened and what to do.
fn explain_setup_error(e: io::Error) -> io::Error {
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

impl Driver {
    pub(crate) fn new(config: &DriverConfig) -> io::Result<Driver> {
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
                BufRing::register(&ring, count, size).ok().map(Rc::new)
            }
            _ => None,
        };
        let features = Features {
            // Multishot accept shares its opcode with plain accept, so the probe cannot tell;
            // IORING_OP_SOCKET came in the same release (5.19) and stands in for it.
            multishot_accept: config.multishot && probed && probe.is_supported(opcode::Socket::CODE),
            ext_arg: ring.params().is_feature_ext_arg(),
            min_timeout: ring.params().is_feature_min_timeout(),
        };
        let notifier = Notifier { fd: sys::eventfd()?, pending: AtomicBool::new(false) };
        Ok(Driver {
            ring: RefCell::new(ring),
            buf_ring,
            ops: RefCell::new(Slab::with_capacity(slab_capacity())),
            notifier: Arc::new(notifier),
            notify_armed: Cell::new(false),
            notified: Cell::new(false),
            features,
            alive: Cell::new(true),
            cq_overflows: Cell::new(0),
            batch_wait: config.batch_wait.filter(|_| features.min_timeout),
            wait_timeout: Box::new(RefCell::new(types::Timespec::new())),
        })
    }

    pub(crate) fn has_notified(&self) -> bool {
        self.notified.get()
    }

    pub(crate) fn take_notified(&self) -> bool {
        self.notified.replace(false)
    }

    pub(crate) fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// The provided-buffer ring, if the kernel supports multishot receive into one.
    pub(crate) fn buf_ring(&self) -> Option<&Rc<BufRing>> {
        self.buf_ring.as_ref()
    }

    /// A completion nobody will read: close the fd it produced, give back the buffer it took.
    fn discard(&self, completion: Completion, result_is_fd: bool) {
        if result_is_fd && completion.result >= 0 {
            // SAFETY: the CQE of an fd-producing operation carries a new fd, and its future is
            // gone (or is dropping it), so nobody else will take it.
            drop(unsafe { sys::owned_fd(completion.result) });
        }
        if let (Some(bid), Some(ring)) = (cqueue::buffer_select(completion.flags), &self.buf_ring) {
            ring.provide(bid);
        }
    }

    /// How many turns found completions held back in the kernel because the CQ was full.
    pub(crate) fn cq_overflows(&self) -> u64 {
        self.cq_overflows.get()
    }

    /// Operations whose CQE has not arrived yet (including orphaned ones).
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.borrow().len()
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
                return Ok(());
            }
            // The SQ is full: hand it to the kernel and try again.
            match ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) || e.kind() == io::ErrorKind::Interrupted => {
                    // EBUSY: the CQ is backed up; completions must be reaped first. They stay
                    // in the CQ until the next turn; entering with GETEVENTS flushes the
                    // kernel's overflow list so the SQ drains.
                    ring.submit_and_wait(0)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts an operation: takes a slot, and pushes the SQE `build` makes for it.
    ///
    /// # Safety
    /// Every pointer in the SQE must point into `resources` (into heap memory it owns, which
    /// does not move when `resources` does) or to memory that lives for `'static`.
    pub(crate) unsafe fn submit<T: 'static>(
        self: &Rc<Self>,
        resources: T,
        multishot: bool,
        result_is_fd: bool,
        build: impl FnOnce(&mut T) -> squeue::Entry,
    ) -> Op<T> {
        let mut resources = resources;
        if !self.alive.get() {
            return Op::failed(self.clone(), resources, runtime_gone());
        }
        let entry = build(&mut resources);
        let lifecycle = if multishot {
            Lifecycle::Multishot {
                queue: Vec::new(),
                waker: None,
                ended: false,
                stopping: false,
                max_queued: 0,
            }
        } else {
            Lifecycle::Waiting(None)
        };
        let index = self.ops.borrow_mut().insert(lifecycle);
        let entry = entry.user_data(index as u64);
        // SAFETY: the caller guarantees the pointers are owned by `resources`, which the Op
        // keeps (or hands to the slot when dropped) until this entry's CQE arrives.
        match unsafe { self.push(&entry) } {
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

    /// Submits the SQEs queued so far, if any (one `io_uring_enter`).
    pub(crate) fn submit_pending(&self) {
        let mut ring = self.ring.borrow_mut();
        if !ring.submission().is_empty() {
            let _ = ring.submit();
        }
    }

    /// Closes `fd` through the ring: the close SQE follows, in SQ order, every SQE already
    /// queued that names the fd, so none of them can resolve the number after it was reused
    /// (with SQPOLL, `submit` does not wait for the SQ thread to consume the SQ).
    pub(crate) fn close_fd(&self, fd: OwnedFd) {
        use std::os::fd::IntoRawFd;
        let raw = fd.into_raw_fd();
        let entry = opcode::Close::new(types::Fd(raw)).build().user_data(IGNORED_TOKEN);
        // SAFETY: a close request carries no pointers.
        let pushed = unsafe { self.push(&entry) }.is_ok();
        // Inside the runtime the next turn submits it; outside, nothing might turn the ring
        // for a while, and the fd (a bound port, say) should not stay open that long.
        if !crate::executor::runs_driver(self) {
            self.submit_pending();
        }
        if !pushed {
            // SAFETY: the push failed, so `raw` is still ours.
            drop(unsafe { sys::owned_fd(raw) });
        }
    }

    /// Asks the kernel to cancel the operation in `index` (its CQE then comes with `-ECANCELED`,
    /// or with its result if it won the race).
    fn cancel(&self, index: usize) {
        let entry = opcode::AsyncCancel::new(index as u64).build().user_data(IGNORED_TOKEN);
        // SAFETY: a cancel request carries no pointers.
        if unsafe { self.push(&entry) }.is_err() {
            // Cannot even submit: the operation completes on its own eventually (or never, for
            // an idle socket, which then keeps its slot until the runtime is dropped).
        }
    }

    /// Cancels the operation in `index` and drives the ring on this thread until its CQE is in.
    /// For operations awaited when this ring's runtime is not running (dropped, or another
    /// runtime is), when nobody else would reap the CQE.
    fn cancel_and_reap(&self, index: usize) -> Completion {
        self.cancel(index);
        loop {
            let completed = match self.ops.borrow().get(index) {
                Some(Lifecycle::Completed(completion)) => Some(*completion),
                _ => None,
            };
            if let Some(completion) = completed {
                self.ops.borrow_mut().remove(index);
                return completion;
            }
            let mut wakers = Vec::new();
            if let Err(e) = self.turn(Some(Duration::from_millis(10)), &mut wakers) {
                // Returning the resources now could let the kernel write into freed memory.
                panic!("proactor: io_uring_enter failed while reaping a cancelled operation: {e}");
            }
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    fn arm_notifier(&self) {
        if self.notify_armed.get() {
            return;
        }
        // Single-shot, re-armed after each notification: one SQE per burst of remote wake-ups,
        // and it works on every kernel with io_uring (multishot poll needs 5.13).
        let entry = opcode::PollAdd::new(types::Fd(self.notifier.fd.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(NOTIFY_TOKEN);
        // SAFETY: a poll request carries no pointers; the eventfd outlives the ring (both are
        // owned by the driver, and the ring is dropped... see `Drop for Driver`).
        if unsafe { self.push(&entry) }.is_ok() {
            self.notify_armed.set(true);
        }
    }

    /// One turn: submit every queued SQE, wait for a completion if `timeout` is not zero
    /// (at most `timeout`, forever if `None`), then reap every CQE: store results in their
    /// slots and move the wakers of the operations they finish into `wakers`.
    ///
    /// Returns whether the notifier fired, i.e. whether another thread posted work.
    pub(crate) fn turn(&self, timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool> {
        self.arm_notifier();
        self.enter(timeout)?;
        let mut notified = false;
        let mut to_cancel = Vec::new();
        let mut discarded = Vec::new();
        let mut finished_orphans = Vec::new();
        let mut ring = self.ring.borrow_mut();
        let mut ops = self.ops.borrow_mut();
        for cqe in ring.completion() {
            let completion = Completion { result: cqe.result(), flags: cqe.flags() };
            match cqe.user_data() {
                NOTIFY_TOKEN => {
                    self.notifier.drain();
                    notified = true;
                    self.notified.set(true);
                    if !cqueue::more(completion.flags) {
                        self.notify_armed.set(false);
                    }
                }
                IGNORED_TOKEN => {}
                index => {
                    let index = index as usize;
                    if let (Some(_), Some(ring)) = (cqueue::buffer_select(completion.flags), &self.buf_ring) {
                        ring.taken();
                    }
                    let Some(slot) = ops.get_mut(index) else { continue };
                    match slot {
                        Lifecycle::Waiting(waker) => {
                            wakers.extend(waker.take());
                            *slot = Lifecycle::Completed(completion);
                        }
                        Lifecycle::Multishot { queue, waker, ended, stopping, max_queued } => {
                            queue.push(completion);
                            *ended = !cqueue::more(completion.flags);
                            wakers.extend(waker.take());
                            if !*ended
                                && !*stopping
                                && *max_queued > 0
                                && queue.len() >= usize::from(*max_queued)
                            {
                                *stopping = true;
                                to_cancel.push(index);
                            }
                        }
                        Lifecycle::Orphaned { finish, handled, result_is_fd } => {
                            if !*handled {
                                discarded.push((completion, *result_is_fd));
                            }
                            if !cqueue::more(completion.flags) {
                                finished_orphans.extend(finish.take().map(|finish| (finish, completion)));
                                ops.remove(index);
                            }
                        }
                        Lifecycle::Completed(_) => unreachable!("a second CQE for a single-shot operation"),
                    }
                }
            }
        }
        drop(ops);
        drop(ring);
        // Resources of orphaned operations, and fds they produced, are dropped outside the
        // borrows: dropping may run arbitrary code.
        for index in to_cancel {
            self.cancel(index);
        }
        for (completion, result_is_fd) in discarded {
            self.discard(completion, result_is_fd);
        }
        for (finish, completion) in finished_orphans {
            finish(completion);
        }
        if !self.notify_armed.get() {
            self.arm_notifier();
        }
        Ok(notified)
    }

    /// The single `io_uring_enter` of a turn.
    fn enter(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut ring = self.ring.borrow_mut();
        if ring.submission().cq_overflow() {
            self.cq_overflows.set(self.cq_overflows.get() + 1);
        }
        let result = match timeout {
            // Nothing to submit and no wait: the CQ ring is read without entering the kernel
            // (unless the kernel holds overflowed CQEs, which only an enter brings back).
            Some(Duration::ZERO)
                if ring.submission().is_empty()
                    && !ring.submission().cq_overflow()
                    && !ring.submission().taskrun() =>
            {
                Ok(0)
            }
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
                // SAFETY: the timespec lives in the driver's box, which outlives the ring; the
                // kernel copies it at submission, which the enter below does.
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

    /// Marks the driver dead and hands back every stored waker, so that operations still
    /// awaited outside the runtime see an error instead of waiting forever.
    pub(crate) fn shut_down(&self) -> Vec<Waker> {
        self.alive.set(false);
        let mut wakers = Vec::new();
        for (_, slot) in self.ops.borrow_mut().iter_mut() {
            match slot {
                Lifecycle::Waiting(waker) | Lifecycle::Multishot { waker, .. } => wakers.extend(waker.take()),
                _ => {}
            }
        }
        wakers
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Operations may still be in the kernel, pointing at buffers held by orphaned slots
        // (and by futures that outlived the runtime). Cancel everything and wait for the
        // CQEs, for a bounded time, before the ring and those buffers go away.
        // SQEs still queued (closes of sockets dropped in the last turn, say) would be thrown
        // away with the ring: submit them.
        self.submit_pending();
        let pending: Vec<usize> = self.ops.borrow().iter().map(|(index, _)| index).collect();
        for index in pending {
            self.cancel(index);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.in_flight() > 0 && std::time::Instant::now() < deadline {
            let mut wakers = Vec::new();
            if self.turn(Some(Duration::from_millis(10)), &mut wakers).is_err() {
                break;
            }
            // Completed-but-unclaimed slots no longer point into anything; drop them.
            self.ops.borrow_mut().retain(|_, slot| !matches!(slot, Lifecycle::Completed(_)));
        }
        // Whatever is left (the kernel did not answer in time) is leaked on purpose rather
        // than freed under the kernel's feet.
        let leftover = std::mem::take(&mut *self.ops.borrow_mut());
        if !leftover.is_empty() {
            std::mem::forget(leftover);
            // Their receives may still fill ring buffers: keep that memory too.
            std::mem::forget(self.buf_ring.clone());
        }
    }
}

fn wrong_runtime() -> io::Error {
    io::Error::other("operation awaited outside the proactor runtime it was started in")
}

fn runtime_gone() -> io::Error {
    io::Error::other("the proactor runtime this operation belongs to was dropped")
}

/// Wakes the driver's thread from another thread: an eventfd the ring polls (re-armed after
/// each notification).
#[derive(Debug)]
pub(crate) struct Notifier {
    fd: OwnedFd,
    /// Set by the first `notify` after the driver last drained the eventfd; later calls skip
    /// the `write` syscall.
    pending: AtomicBool,
}

impl Notifier {
    pub(crate) fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            let _ = sys::eventfd_signal(self.fd.as_fd());
        }
    }

    fn drain(&self) {
        let _ = sys::eventfd_drain(self.fd.as_fd());
        self.pending.store(false, Ordering::Release);
    }
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

    /// Sets what to do with the resources and the completion if the CQE only arrives after
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
        if !queue.is_empty() {
            let completion = queue.remove(0);
            return Poll::Ready(Some(Ok(completion)));
        }
        if *ended {
            ops.remove(index);
            drop(ops);
            self.state = OpState::Done;
            return Poll::Ready(None);
        }
        if !self.driver.alive.get() {
            return Poll::Ready(Some(Err(runtime_gone())));
        }
        if !crate::executor::runs_driver(&self.driver) {
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
        std::task::ready!(crate::executor::poll_budget(cx));
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
                        if !this.driver.alive.get() || !crate::executor::runs_driver(&this.driver) =>
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
                let queued = std::mem::take(queue);
                let ended = *ended;
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
                    self.driver.cancel(index);
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
                self.driver.cancel(index);
            }
            Lifecycle::Orphaned { .. } => unreachable!("a live Op's slot is never orphaned"),
        }
    }
}
