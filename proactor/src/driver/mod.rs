//! The driver: every operation in flight, whichever backend performs it.
//!
//! The backend (see `backend`, chosen with [`Builder::backend`](crate::Builder::backend))
//! performs operations; the driver owns them. It sees every backend through the same surface
//! (`backend::Io`): it hands over `Request`s (what to do, with pointers into memory the
//! operation owns) and hears back `Completion`s (a syscall-style result, and the buffer the
//! bytes landed in); everything else here (the slots, the futures, what happens when a future
//! is dropped early) is the same for all of them.
//!
//! Read it in this order: this file (the driver, its turn, what it does with each
//! completion), `slot` (what a slot holds), `op` (the future of one operation, and dropping it
//! early), `spill` (receives nobody reads), `behind` (sends the driver finishes alone).
//!
//! # An operation's life
//!
//! 1. A future (`op::Op`) is created with everything the kernel will touch (buffer, socket
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
//! moves the resources into the slot (`Lifecycle::Orphaned`) and asks the backend to cancel
//! the operation. The slot and the resources are freed only when the operation's own completion
//! arrives (cancelled or not). If that completion carries a new fd (an accept that won the
//! race), the fd is closed.
//!
//! An operation can also win the race with *data*: a receive that completes just as it is
//! cancelled has taken bytes out of the socket, and nobody is waiting for them any more. An
//! operation can therefore carry an *orphan handler* that gets the resources and the late
//! completion; `net` uses it to keep those bytes for the stream's next read, so cancelling a
//! read (a `timeout` around it, say) never loses data.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use executor::{Notifier, Park, Unpark};
use slab::Slab;

use crate::backend::{self, Backend, BufId, Completion, Config, Facts, Gauges, Io};
use crate::bufring::BufRing;
use crate::stats;
use crate::sys;

pub(crate) mod behind;
pub(crate) mod budget;
pub(crate) mod op;
pub(crate) mod slot;
mod spill;

use budget::Budget;
pub(crate) use slot::DetachedOwner;
use slot::{Behind, Bytes, Finish, Lifecycle};

const KIND_ACCEPT: u8 = 1;
const KIND_CONNECT: u8 = 2;
const KIND_RECV: u8 = 3;
const KIND_SEND: u8 = 4;
/// A multishot receive into the datagram ring.
const KIND_RECV_DGRAM: u8 = 5;

/// Where a stream's receives take their buffers, on this backend (`TcpStream::read_provided`).
pub(crate) enum Receive<'a> {
    /// One multishot receive stays armed; the kernel picks a buffer of this ring when data
    /// comes.
    Ring(&'a Rc<BufRing>),
    /// One receive at a time, whose buffer the backend takes at readiness.
    Pick,
    /// One read at a time, into a buffer of the caller's.
    Read,
}

/// The backend, and every operation in flight on it. Lives on the runtime's thread.
pub struct Driver {
    /// Declared (and so dropped) before `buf_ring`: the registration dies with the backend, and
    /// only then may the buffers be freed.
    io: Box<dyn Io>,
    facts: Facts,
    /// The provided-buffer ring, where the backend has one (see `bufring`).
    buf_ring: Option<Rc<BufRing>>,
    /// The datagram ring (see `udp`), made by the first UDP socket that receives with it; `None`
    /// inside where it cannot be (no provided-buffer rings). Declared after `io` for the same
    /// reason as `buf_ring`.
    dgram_ring: OnceCell<Option<Rc<BufRing>>>,
    ops: RefCell<Slab<Lifecycle>>,
    /// What kind of operation each slot holds (a `KIND_` constant), for the counters; not
    /// written for sends behind, whose slots say it (see `count`).
    kinds: RefCell<Vec<u8>>,
    /// The records of the sends behind in flight (see `behind`), apart from the slots: larger
    /// than anything else an operation holds, they would make every slot larger.
    behinds: RefCell<Slab<Behind>>,
    /// Bytes of receives that arrived while nobody read them, per operation slot (see
    /// `spill`). Only streams whose task is busy elsewhere have an entry.
    spills: RefCell<HashMap<usize, Vec<u8>>>,
    /// The lists of `AfterTurn`, kept between turns (see there).
    after: RefCell<AfterTurn>,
    /// What the runtime holds for connections, and how much more a stream may receive.
    budget: Budget,
    notifier: Arc<Notifier>,
    /// The notifier fired since the executor last looked: set by any turn (also the ones
    /// `cancel_and_reap` runs), consumed by the executor's `park`.
    notified: Cell<bool>,
    /// False once the runtime is dropped: new operations fail instead of waiting forever.
    alive: Cell<bool>,
    /// The simulated kernel's handle ([`Backend::Sim`]).
    #[cfg(feature = "sim")]
    sim: Option<crate::backend::sim::SimKernel>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("backend", &self.facts.kind)
            .field("in_flight", &self.ops.borrow().len())
            .finish()
    }
}

/// What a turn leaves to do once its borrows are released (dropping resources may run
/// arbitrary code, and giving a ring buffer back may wake a task). Kept in the driver from turn
/// to turn, so that its lists keep their memory: a turn that finishes sends behind allocates
/// nothing.
#[derive(Default)]
pub(crate) struct AfterTurn {
    /// The ring ran dry: take the ring buffers back from receives nobody reads.
    sweep: bool,
    to_cancel: Vec<usize>,
    /// Completions nobody will read, and whether their result is an fd to close.
    discarded: Vec<(Completion, bool)>,
    finished_orphans: Vec<(Finish, Completion)>,
    /// Detached operations that are over, for their owners (see `Lifecycle::Detached`).
    finished_detached: Vec<(Rc<dyn DetachedOwner>, usize, Completion)>,
    /// Sends behind that were short: the driver sends the rest (`Driver::continue_behind`).
    behind: Vec<usize>,
    /// Bytes of sends behind that are over, to give back.
    released: Vec<Bytes>,
    /// Fds of dropped streams whose send behind is over, to close.
    close: Vec<RawFd>,
}

pub(crate) fn wrong_runtime() -> io::Error {
    io::Error::other("operation awaited outside the proactor runtime it was started in")
}

pub(crate) fn runtime_gone() -> io::Error {
    io::Error::other("the proactor runtime this operation belongs to was dropped")
}

impl Driver {
    pub(crate) fn new(config: &Config) -> io::Result<Driver> {
        let notifier = Notifier::new()?;
        let opened = backend::open(config, &notifier)?;
        Ok(Driver {
            #[cfg(feature = "sim")]
            sim: opened.sim,
            facts: opened.io.facts(),
            io: opened.io,
            buf_ring: opened.ring.map(Rc::new),
            dgram_ring: OnceCell::new(),
            ops: RefCell::new(Slab::with_capacity(executor::slab_capacity())),
            kinds: RefCell::new(Vec::new()),
            behinds: RefCell::new(Slab::new()),
            spills: RefCell::new(HashMap::new()),
            after: RefCell::default(),
            budget: Budget::new(config.connection_budget, config.memory_budget),
            notifier: Arc::new(notifier),
            notified: Cell::new(false),
            alive: Cell::new(true),
        })
    }

    /// The driver of the proactor runtime running on this thread.
    pub(crate) fn current() -> io::Result<Rc<Driver>> {
        executor::with_driver(Rc::clone).ok_or_else(|| {
            io::Error::other(
                "no proactor runtime is running on this thread (call this inside proactor::block_on)",
            )
        })
    }

    /// The simulated kernel's handle, on [`Backend::Sim`].
    #[cfg(feature = "sim")]
    pub(crate) fn sim(&self) -> Option<&crate::backend::sim::SimKernel> {
        self.sim.as_ref()
    }

    /// What the driver still holds, each a sentence (see `sim::Sim::leftovers`).
    #[cfg(feature = "sim")]
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let in_flight = self.in_flight();
        if in_flight > 0 {
            left.push(format!("{in_flight} operation slots in use"));
        }
        if !self.behinds.borrow().is_empty() {
            left.push(format!("{} sends behind in flight", self.behinds.borrow().len()));
        }
        if !self.spills.borrow().is_empty() {
            left.push(format!("{} streams with spilled bytes", self.spills.borrow().len()));
        }
        let (held, _, waiting) = self.held();
        if held > 0 || waiting > 0 {
            left.push(format!("the memory budget holds {held} bytes, {waiting} streams wait for it"));
        }
        if let Some(ring) = &self.buf_ring {
            if ring.available() != ring.capacity() || ring.waiters().len() > 0 {
                left.push(format!(
                    "the ring has {} of its {} buffers, {} tasks wait for one",
                    ring.available(),
                    ring.capacity(),
                    ring.waiters().len()
                ));
            }
        }
        left
    }

    /// False once the runtime is dropped.
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.get()
    }

    /// What the backend can do.
    pub(crate) fn facts(&self) -> &Facts {
        &self.facts
    }

    /// Which backend this driver runs on.
    pub(crate) fn backend(&self) -> Backend {
        self.facts.kind
    }

    /// The backend's gauges now.
    pub(crate) fn gauges(&self) -> Gauges {
        self.io.gauges()
    }

    /// Where a stream's receives take their buffers here.
    pub(crate) fn receive(&self) -> Receive<'_> {
        match &self.buf_ring {
            Some(ring) => Receive::Ring(ring),
            None if self.facts.picks_buffers => Receive::Pick,
            None => Receive::Read,
        }
    }

    /// The buffer a [`BufId::Picked`] completion names, handed over to the caller; `None` if
    /// it was taken already.
    pub(crate) fn take_picked(&self, id: u16) -> Option<Vec<u8>> {
        self.io.take_picked(id)
    }

    /// The provided-buffer ring, if the backend receives into one.
    pub(crate) fn buf_ring(&self) -> Option<&Rc<BufRing>> {
        self.buf_ring.as_ref()
    }

    /// The datagram ring: a second provided-buffer ring, buffer group `group`, of buffers of
    /// `size` bytes (`initial` at first, growing to `max`), made on first use; `None` where
    /// the backend has no provided-buffer rings.
    #[inline]
    pub(crate) fn datagram_ring(
        &self,
        group: u16,
        initial: u16,
        max: u16,
        size: u32,
    ) -> Option<&Rc<BufRing>> {
        self.dgram_ring
            .get_or_init(|| match &self.buf_ring {
                // Whole buffers: a datagram is never split.
                Some(_) => self.io.buffer_ring(group, initial, max, size, false).map(Rc::new),
                None => None,
            })
            .as_ref()
    }

    /// Bytes held for all connections now and at most so far, and streams waiting for room.
    pub(crate) fn held(&self) -> (u64, u64, usize) {
        let (now, peak) = self.budget.held();
        (now, peak, self.budget.waiting())
    }

    /// Operations whose completion has not arrived yet (including orphaned ones).
    pub(crate) fn in_flight(&self) -> usize {
        self.ops.borrow().len()
    }

    /// Hands the backend `request`, the operation of slot `index` (which its completion names).
    ///
    /// # Safety
    /// Every pointer in the request must stay valid until the operation's completion arrives.
    unsafe fn start(&self, index: usize, request: &backend::Request) -> io::Result<()> {
        {
            let mut kinds = self.kinds.borrow_mut();
            if kinds.len() <= index {
                kinds.resize(index + 1, 0);
            }
            kinds[index] = match request {
                backend::Request::Accept { .. } | backend::Request::AcceptMulti { .. } => KIND_ACCEPT,
                backend::Request::Connect { .. } => KIND_CONNECT,
                backend::Request::Recv { .. }
                | backend::Request::RecvMulti { .. }
                | backend::Request::RecvPick { .. }
                | backend::Request::RecvMsg { .. } => KIND_RECV,
                backend::Request::RecvMsgMulti { .. } => KIND_RECV_DGRAM,
                backend::Request::Send { .. }
                | backend::Request::SendMsg { .. }
                | backend::Request::SendTo { .. } => KIND_SEND,
            };
        }
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.io.start(index, request) }
    }

    /// [`start`](Self::start) for the `SEND` of a send behind in slot `index`, which does not
    /// record its kind: its slot says it (see `count`), and two writes per message are saved.
    ///
    /// # Safety
    /// As for `start`.
    unsafe fn start_behind(&self, index: usize, request: &backend::Request) -> io::Result<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.io.start(index, request) }
    }

    /// Hands the backend what is queued, if anything (io_uring: one `io_uring_enter`).
    pub(crate) fn submit_pending(&self) {
        self.io.submit_pending();
    }

    /// Closes `fd` after every operation already started on it: none of them may resolve the
    /// number after it was reused (see `backend::Io`).
    pub(crate) fn close_fd(&self, fd: OwnedFd) {
        // Inside the runtime the next turn hands it over; outside, nothing might turn the
        // backend for a while, and the fd (a bound port, say) should not stay open that long.
        self.io.close_fd(fd, !executor::runs_driver::<Driver>(self));
    }

    /// Asks the backend to cancel the operation in `index` (its completion then comes with
    /// `-ECANCELED`, or with its result if it won the race). `force`: also when that means
    /// shutting the socket down, for operations nobody else would ever reap.
    ///
    /// Returns whether the socket was shut down to do it.
    fn cancel(&self, index: usize, force: bool) -> bool {
        self.io.cancel(index, force)
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

    /// Turns the backend until the operation in slot `index`, cancelled already, is over (its
    /// slot freed), for at most about a second.
    fn settle(&self, index: usize) {
        for _ in 0..100 {
            if !self.ops.borrow().contains(index) {
                return;
            }
            let mut wakers = Vec::new();
            if self.turn(Some(Duration::from_millis(10)), &mut wakers).is_err() {
                return;
            }
            wakers.into_iter().for_each(Waker::wake);
        }
    }

    /// Closes `fd` as [`close_fd`](Self::close_fd) does, handing the close to the backend at
    /// once (io_uring: submitted now, not at the next turn): once every operation on it is over
    /// (see `Op::cancel_and_wait`), the socket is closed when this returns.
    pub(crate) fn close_fd_now(&self, fd: OwnedFd) {
        self.io.close_fd(fd, true);
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
            let mut complete =
                |index, completion| self.complete(&mut ops, index, completion, wakers, &mut after);
            self.io.turn(timeout, &self.notifier, &mut complete)
        };
        if turned.as_ref().is_ok_and(|notified| *notified) {
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
        for (owner, key, completion) in after.finished_detached.drain(..) {
            owner.finish(key, completion);
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

    /// Stores one completion in the slot `index`.
    fn complete(
        &self,
        ops: &mut Slab<Lifecycle>,
        index: usize,
        mut completion: Completion,
        wakers: &mut Vec<Waker>,
        after: &mut AfterTurn,
    ) {
        // The ring learns which piece of which buffer the kernel handed over.
        match completion.buffer {
            Some(BufId::Ring(bid)) => {
                if let Some(ring) = &self.buf_ring {
                    completion.offset = ring.taken(bid, completion.result.max(0) as u32, completion.filling);
                }
            }
            Some(BufId::Datagram(bid)) => {
                if let Some(ring) = self.dgram_ring.get().and_then(Option::as_ref) {
                    ring.taken(bid, completion.result.max(0) as u32, false);
                }
            }
            Some(BufId::Picked(_)) | None => {}
        }
        if !ops.contains(index) {
            // No operation owns it (cannot happen: a slot lives until its last completion);
            // still, give back what it took.
            after.discarded.push((completion, false));
            return;
        }
        let slot = &mut ops[index];
        self.count(index, slot, &completion);
        match slot {
            Lifecycle::Behind { .. } => self.behind_completed(ops, index, completion, wakers, after),
            Lifecycle::Waiting(waker) => {
                if waker.is_some() {
                    stats::trace_step!(crate::trace::Event::Wake);
                }
                wakers.extend(waker.take());
                *slot = Lifecycle::Completed(completion);
            }
            Lifecycle::Multishot { .. } => self.multishot_completed(index, slot, completion, wakers, after),
            Lifecycle::Orphaned { finish, handled, result_is_fd } => {
                if !*handled {
                    after.discarded.push((completion, *result_is_fd));
                }
                if !completion.more {
                    after.finished_orphans.extend(finish.take().map(|finish| (finish, completion)));
                    ops.remove(index);
                }
            }
            Lifecycle::Detached { .. } => {
                if !completion.more {
                    if let Lifecycle::Detached { owner, key } = ops.remove(index) {
                        after.finished_detached.push((owner, key, completion));
                    }
                }
            }
            Lifecycle::Completed(_) => unreachable!("a second completion for a single-shot operation"),
            Lifecycle::BehindFailed { .. } => unreachable!("a failed send behind has no operation in flight"),
        }
    }

    /// Counts a completion of the operation in slot `index` (a cancelled one counts nowhere).
    fn count(&self, index: usize, slot: &Lifecycle, completion: &Completion) {
        if completion.result == -libc::ECANCELED {
            return;
        }
        let kind = match slot {
            // The slots of the two completions of every echo say what they are: no lookup.
            Lifecycle::Behind { .. } => KIND_SEND,
            Lifecycle::Multishot { stream: true, .. } => KIND_RECV,
            _ => self.kinds.borrow().get(index).copied().unwrap_or(0),
        };
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

    /// A completion nobody will read: close the fd it produced, give back the buffer it took.
    fn discard(&self, completion: Completion, result_is_fd: bool) {
        if result_is_fd && completion.result >= 0 && !planted!(LeakCancelledAccept) {
            // SAFETY: the completion of an fd-producing operation carries a new fd, and its
            // future is gone (or is dropping it), so nobody else will take it.
            drop(unsafe { sys::owned_fd(completion.result) });
        }
        if planted!(KeepDiscardedBuffer) {
            return;
        }
        match completion.buffer {
            Some(BufId::Ring(bid)) => {
                if let Some(ring) = &self.buf_ring {
                    ring.release(bid);
                }
            }
            Some(BufId::Datagram(bid)) => {
                if let Some(ring) = self.dgram_ring.get().and_then(Option::as_ref) {
                    ring.release(bid);
                }
            }
            Some(BufId::Picked(id)) => drop(self.take_picked(id)),
            None => {}
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
                Lifecycle::Behind { record, .. } => {
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
        // (The timers' clock: a simulated kernel's virtual one, which its turns advance.)
        let deadline = executor::time::now() + Duration::from_secs(1);
        while self.in_flight() > 0 && executor::time::now() < deadline {
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
