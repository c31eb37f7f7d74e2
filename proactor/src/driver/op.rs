//! The future of one operation ([`Op`]), and what happens when it is dropped early.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::slot::{DetachedOwner, Finish, Lifecycle};
use super::{runtime_gone, wrong_runtime, Driver};
use crate::backend::{Completion, Request};

enum OpState {
    /// In flight in slot `index`.
    InFlight(usize),
    /// Never submitted (the runtime was gone, or the backend refused it).
    Failed(Option<io::Error>),
    /// The result was returned.
    Done,
}

/// One operation in flight: a future of its [`Completion`], together with the resources the
/// kernel may touch, which it hands back when the operation is over.
///
/// Dropping it before then orphans the resources into the driver and cancels the operation
/// (see the driver's docs).
#[must_use = "an operation does nothing useful unless awaited"]
pub(crate) struct Op<T: 'static> {
    driver: Rc<Driver>,
    state: OpState,
    /// `Some` until handed back to the caller or to the driver.
    resources: Option<T>,
    result_is_fd: bool,
    /// Called with the resources and the completion if the completion arrives after this
    /// future was dropped (see the driver's docs).
    /// (Boxed twice: a thin pointer keeps every `Op` 8 bytes smaller, and most have none.)
    #[allow(clippy::type_complexity)]
    on_orphan_cqe: Option<Box<Box<dyn FnOnce(T, Completion)>>>,
}

impl Driver {
    /// Starts an operation: takes a slot, and hands the backend the request `build` makes.
    ///
    /// # Safety
    /// Every pointer in the request must point into `resources` (into heap memory it owns,
    /// which does not move when `resources` does) or to memory that lives for `'static`.
    pub(crate) unsafe fn submit<T: 'static>(
        self: &Rc<Self>,
        resources: T,
        result_is_fd: bool,
        build: impl FnOnce(&mut T) -> Request,
    ) -> Op<T> {
        let mut resources = resources;
        if !self.alive.get() {
            return Op::failed(self.clone(), resources, runtime_gone());
        }
        let request = build(&mut resources);
        let lifecycle =
            if request.is_multishot() { Lifecycle::multishot() } else { Lifecycle::Waiting(None) };
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
}

impl Driver {
    /// Starts an operation nobody waits for: its slot is orphaned from the start (there is no
    /// [`Op`], so nothing to cancel), and `finish` gets the resources and the completion when it
    /// comes, after the turn that reaps it. Nobody is woken. (A datagram sent behind, see
    /// `UdpSocket::send_to_behind`: one wake and one poll of its task fewer than an `Op`.)
    ///
    /// # Safety
    /// As for [`submit`](Driver::submit): every pointer in the request must point into
    /// `resources` (into heap memory it owns, which does not move when `resources` does) or to
    /// memory that lives for `'static`.
    pub(crate) unsafe fn submit_detached<T: 'static>(
        self: &Rc<Self>,
        resources: T,
        build: impl FnOnce(&mut T) -> Request,
        finish: impl FnOnce(T, Completion) + 'static,
    ) -> io::Result<()> {
        let mut resources = resources;
        if !self.alive.get() {
            return Err(runtime_gone());
        }
        let request = build(&mut resources);
        debug_assert!(!request.is_multishot(), "a multishot operation needs an Op to end it");
        let finish: super::slot::Finish = Box::new(move |completion| finish(resources, completion));
        let orphaned = Lifecycle::Orphaned { finish: Some(finish), handled: true, result_is_fd: false };
        let index = self.ops.borrow_mut().insert(orphaned);
        // SAFETY: the caller guarantees the pointers are owned by `resources`, which the slot
        // keeps (in `finish`) until this operation's completion arrives.
        if let Err(e) = unsafe { self.start(index, &request) } {
            let slot = self.ops.borrow_mut().remove(index);
            drop(slot); // the resources, outside the borrow
            return Err(e);
        }
        Ok(())
    }

    /// As [`submit_detached`](Driver::submit_detached), for resources that `owner` keeps
    /// under `key` (and drops in [`DetachedOwner::finish`], called after the turn that reaps
    /// the last completion): nothing is allocated for the operation. On an error nothing was
    /// started, and the resources are still the caller's to drop.
    ///
    /// # Safety
    /// Every pointer in `request` must point into what `owner` keeps under `key` (into heap
    /// memory that does not move) until `finish` is called for it, or to `'static` memory.
    pub(crate) unsafe fn submit_detached_to(
        self: &Rc<Self>,
        owner: Rc<dyn DetachedOwner>,
        key: usize,
        request: Request,
    ) -> io::Result<()> {
        if !self.alive.get() {
            return Err(runtime_gone());
        }
        debug_assert!(!request.is_multishot(), "a multishot operation needs an Op to end it");
        let index = self.ops.borrow_mut().insert(Lifecycle::Detached { owner, key });
        // SAFETY: the caller guarantees the pointers are owned by what `owner` keeps under
        // `key` until its `finish`, which only this slot's last completion calls.
        if let Err(e) = unsafe { self.start(index, &request) } {
            let slot = self.ops.borrow_mut().remove(index);
            drop(slot); // the owner, outside the borrow
            return Err(e);
        }
        Ok(())
    }
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

    /// Cancels the operation and turns the driver, on this thread, until its last completion is
    /// in (at most about a second): afterwards nothing in the kernel refers to what it used (the
    /// socket, say, which can then be closed at once). Inside the runtime too: what that turn
    /// completes for other operations is stored and their tasks woken as in any turn.
    pub(crate) fn cancel_and_wait(self) {
        let OpState::InFlight(index) = self.state else { return };
        let driver = self.driver.clone();
        drop(self); // orphans the resources and asks the backend to cancel
        driver.settle(index);
    }

    /// Whether the operation was submitted and its result not yet returned.
    pub(crate) fn in_flight(&self) -> bool {
        matches!(self.state, OpState::InFlight(_))
    }

    /// Asks the backend to cancel the operation, which is still awaited: its completion comes
    /// as usual (`ECANCELED`, or its result if it won the race). `force`: also when that means
    /// shutting the socket down (see `Driver::cancel`).
    pub(crate) fn cancel(&self, force: bool) {
        if let OpState::InFlight(index) = self.state {
            let _ = self.driver.cancel(index, force);
        }
    }

    /// Lets the operation run on without its future, which is gone: `on_end` gets the resources
    /// and the last completion. Unlike dropping it, nothing is cancelled. Returns its slot,
    /// while it is in flight.
    pub(crate) fn detach(mut self, on_end: impl FnOnce(T, Completion) + 'static) -> Option<usize> {
        let OpState::InFlight(index) = self.state else { return None };
        let mut ops = self.driver.ops.borrow_mut();
        let slot = ops.get_mut(index)?;
        if !matches!(slot, Lifecycle::Waiting(_)) {
            return None; // completed already: dropped (and discarded) below
        }
        let resources = self.resources.take();
        let finish: Finish = Box::new(move |completion| {
            if let Some(resources) = resources {
                on_end(resources, completion);
            }
        });
        *slot = Lifecycle::Orphaned { finish: Some(finish), handled: true, result_is_fd: self.result_is_fd };
        self.state = OpState::Done;
        Some(index)
    }

    /// Sets what to do with the resources and the completion if it only arrives after
    /// this future was dropped (by default they are just dropped).
    pub(crate) fn on_orphan_cqe(mut self, handler: impl FnOnce(T, Completion) + 'static) -> Op<T> {
        self.on_orphan_cqe = Some(Box::new(Box::new(handler)));
        self
    }

    /// Bounds the completions a multishot operation may queue before it is stopped: once
    /// `max` are waiting, the driver cancels it (completions already under way still arrive,
    /// then a last one ends it, usually with `ECANCELED`). At most 255.
    pub(crate) fn limit_queue(self, max: u16) -> Op<T> {
        if let OpState::InFlight(index) = self.state {
            if let Some(Lifecycle::Multishot { max_queued, .. }) = self.driver.ops.borrow_mut().get_mut(index)
            {
                *max_queued = max.min(u16::from(u8::MAX)) as u8;
            }
        }
        self
    }

    /// Makes a multishot receive into the ring a stream's (see `budget` and `spill`): its
    /// bytes are held for the connection until the task takes them, it is stopped once it
    /// brought `allowance` bytes (0: never), and a completion that arrives while no task waits
    /// for it may have its bytes copied out of the ring (fetched with
    /// [`take_spilled`](Self::take_spilled)), so that a stream whose task is stuck (a send to
    /// a peer that does not read) holds no shared buffer.
    pub(crate) fn stream_receive(self, allowance: u32) -> Op<T> {
        if let OpState::InFlight(index) = self.state {
            if let Some(Lifecycle::Multishot { stream, remaining, .. }) =
                self.driver.ops.borrow_mut().get_mut(index)
            {
                *stream = true;
                *remaining = allowance;
            }
        }
        self
    }

    /// The `n` bytes of a completion that says it was [`spilled`](Completion::spilled).
    pub(crate) fn take_spilled(&mut self, n: usize) -> Vec<u8> {
        let OpState::InFlight(index) = self.state else { return Vec::new() };
        let mut spills = self.driver.spills.borrow_mut();
        let Some(spilled) = spills.get_mut(&index) else { return Vec::new() };
        let n = n.min(spilled.len());
        if n == spilled.len() {
            return spills.remove(&index).unwrap_or_default();
        }
        // A copy of exactly these bytes: the spill's own capacity (sized for all it held) stays
        // with the spill, and leaves with its last bytes.
        let taken = spilled[..n].to_vec();
        spilled.drain(..n);
        taken
    }

    /// Whether [`poll_next`](Self::poll_next) has something to return now (a completion, or
    /// the end): a caller that charges its task's budget does so only then.
    pub(crate) fn next_ready(&self) -> bool {
        let OpState::InFlight(index) = self.state else { return true };
        match self.driver.ops.borrow().get(index) {
            Some(Lifecycle::Multishot { queue, ended, .. }) => queue.len() > 0 || *ended,
            _ => true,
        }
    }

    /// The next completion of a multishot operation: `None` once it has ended (the last
    /// completion, without `more`, was returned).
    #[inline]
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Completion>>> {
        let index = match &mut self.state {
            OpState::InFlight(index) => *index,
            OpState::Failed(error) => return Poll::Ready(error.take().map(Err)),
            OpState::Done => return Poll::Ready(None),
        };
        let mut ops = self.driver.ops.borrow_mut();
        let Some(Lifecycle::Multishot { queue, waker, ended, stream, .. }) = ops.get_mut(index) else {
            unreachable!("poll_next on a single-shot operation")
        };
        if let Some(completion) = queue.pop_front() {
            if *stream && completion.result > 0 {
                // The task has the bytes now.
                self.driver.budget.release(completion.result as u64);
            }
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
        // The task's budget is charged for an operation that completes, not for one that
        // waits: a task that polls a waiting operation first (a `select!`) must still have
        // budget for one whose completion is there.
        let result = match &mut this.state {
            OpState::Done => panic!("operation polled after it completed"),
            OpState::Failed(error) => {
                std::task::ready!(executor::poll_budget(cx));
                Err(error.take().unwrap_or_else(runtime_gone))
            }
            OpState::InFlight(index) => {
                let index = *index;
                let mut ops = this.driver.ops.borrow_mut();
                match &mut ops[index] {
                    Lifecycle::Completed(completion) => {
                        std::task::ready!(executor::poll_budget(cx));
                        let completion = *completion;
                        ops.remove(index);
                        Ok(completion)
                    }
                    // Only this backend's runtime reaps its completions. If it is gone, or
                    // another runtime is the one running, waiting would never end: cancel the
                    // operation and reap its completion here, synchronously, so the resources
                    // can be handed back safely.
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
        let index = match &mut self.state {
            OpState::InFlight(index) => *index,
            // Never submitted, and dropped before its error was returned: its orphan handler
            // still hears how it ended (a read counted as in flight until then, say).
            OpState::Failed(error) => {
                if let (Some(handler), Some(resources)) = (self.on_orphan_cqe.take(), self.resources.take()) {
                    let errno = error.as_ref().and_then(io::Error::raw_os_error).unwrap_or(libc::ECANCELED);
                    handler(resources, Completion::error(errno));
                }
                return;
            }
            OpState::Done => return,
        };
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
            Lifecycle::Multishot { queue, ended, stream, remaining, .. } => {
                let queued = std::mem::take(queue).into_vec();
                let ended = *ended;
                if *stream {
                    // Its bytes and what is left of its allowance go back to the budget (what
                    // comes after this is discarded as it arrives).
                    let held: u64 = queued.iter().map(|c| c.result.max(0) as u64).sum();
                    self.driver.budget.release(held);
                    self.driver.budget.unreserve(u64::from(std::mem::take(remaining)));
                }
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
            // In flight: the resources move into the slot until the completion, and the
            // operation is cancelled.
            Lifecycle::Waiting(_) => {
                if planted!(FreeDroppedBuffer) {
                    drop(self.resources.take());
                }
                let (resources, handler) = (self.resources.take(), self.on_orphan_cqe.take());
                let handled = handler.is_some();
                let finish: Finish = Box::new(move |completion| {
                    if let (Some(resources), Some(handler)) = (resources, handler) {
                        handler(resources, completion);
                    }
                });
                *slot =
                    Lifecycle::Orphaned { finish: Some(finish), handled, result_is_fd: self.result_is_fd };
                drop(ops);
                let _ = self.driver.cancel(index, false);
            }
            Lifecycle::Orphaned { .. } | Lifecycle::Detached { .. } => {
                unreachable!("a live Op's slot is never orphaned")
            }
            Lifecycle::Behind { .. } | Lifecycle::BehindFailed { .. } => {
                unreachable!("a send behind has no Op")
            }
        }
    }
}
