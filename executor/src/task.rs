//! Tasks: what a spawned future becomes, how it is woken, and how its result comes back.
//!
//! A task is split in two, because a [`Waker`] must be `Send + Sync` while the future need not
//! be (this runtime is single-threaded, so a task may hold `Rc`s):
//!
//! - the **header** ([`Header`], in an `Arc`) is all a waker points to: the task's index in the
//!   runtime's task slab and a few flags. Waking it on the runtime's own thread sets its
//!   `QUEUED` flag and, if it was clear, queues the task's index (see `executor::wake`); the flag
//!   is what makes a burst of wake-ups queue the task once. Waking it from another thread goes
//!   through the remote queue instead, which the header's `remote` flag guards the same way;
//! - the **body** ([`Task`], in the runtime's slab, never leaving its thread) holds the boxed
//!   future, then its output until the [`JoinHandle`] takes it.
//!
//! The output is type-erased (`Box<dyn Any>`, no allocation for `()`) so that one slab can hold
//! tasks of every output type; the typed [`JoinHandle<T>`] downcasts it back.
//!
//! # No atomic read-modify-write on the runtime's own thread
//!
//! A wake-up and a poll are each one per message on a busy socket, so they are kept to plain
//! loads and stores: an atomic read-modify-write (a `lock`-prefixed instruction on x86-64) costs
//! many times a plain store and orders the memory accesses around it, and counting a reference,
//! setting a bit and clearing it would make four of them per message (the hand-written loops the
//! runtimes are measured against make none). So:
//!
//! - the flags a wake-up and a poll touch ([`QUEUED`], and the lifecycle bits) are touched only on
//!   the runtime's thread (the waker checks that it runs there first; the task slab and
//!   `JoinHandle`s never leave it), so they are relaxed atomic loads and stores, which compile to
//!   plain moves: an atomic type only because a waker must be `Sync`;
//! - the run queue holds task indices, not `Arc`s, so queueing takes no reference; a stale index
//!   (its task finished and was freed while queued, and the slot may hold a new task) is told by
//!   the slot's `QUEUED` flag being clear, or, if a new task sits there and is queued itself, it
//!   is that task's poll, which its own index would have made anyway;
//! - the executor polls with a waker made from a second `Arc` of the header that the task's
//!   [`Runnable`] keeps, moved out of the slot with the future, so no reference is taken per poll.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Weak;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_task::ArcWake;

use crate::executor::{Core, Shared};

/// The id the `block_on` future uses in its header: it is not in the task slab.
pub(crate) const MAIN_TASK: u32 = u32::MAX;

/// Flags of [`Header`]'s `local` byte: read and written only on the runtime's thread.
///
/// The task's index is in the run queue (or about to be): set when it is queued, cleared just
/// before it is polled, so that a wake-up during the poll queues it again.
pub(crate) const QUEUED: u8 = 1 << 0;
/// The task completed, panicked or was cancelled.
pub(crate) const FINISHED: u8 = 1 << 1;
/// The `JoinHandle` was dropped: free the slot as soon as the task finishes.
pub(crate) const DETACHED: u8 = 1 << 2;
/// `JoinHandle::abort` was called: drop the future instead of polling it.
pub(crate) const ABORTED: u8 = 1 << 3;

/// What a waker points to. See the module docs.
///
/// The lifecycle bits live here rather than in [`Task`] only to keep the slab entry, of which
/// a server has one per connection, at 32 bytes.
#[derive(Debug)]
pub(crate) struct Header {
    /// Index in the runtime's task slab ([`MAIN_TASK`] for the `block_on` future).
    pub(crate) id: u32,
    /// Set by a wake-up on another thread when it puts the header on the runtime's remote
    /// queue; cleared (with a read-modify-write, so that the loop sees what the waking thread
    /// wrote before) when the loop moves it to the run queue. A burst of remote wake-ups thus
    /// queues it (and unparks the loop) once.
    pub(crate) remote: AtomicBool,
    /// [`QUEUED`], [`FINISHED`], [`DETACHED`], [`ABORTED`]: only ever touched on the runtime's
    /// thread (see the module docs), with relaxed loads and stores.
    local: AtomicU8,
    pub(crate) shared: Arc<Shared>,
}

impl Header {
    pub(crate) fn new(id: u32, shared: Arc<Shared>) -> Header {
        Header { id, remote: AtomicBool::new(false), local: AtomicU8::new(0), shared }
    }

    /// The task's key in the runtime's slab.
    #[inline]
    pub(crate) fn slot(&self) -> usize {
        self.id as usize
    }

    /// Runtime thread only, as for every local flag.
    #[inline]
    pub(crate) fn is(&self, flag: u8) -> bool {
        self.local.load(Ordering::Relaxed) & flag != 0
    }

    /// Runtime thread only.
    #[inline]
    pub(crate) fn set(&self, flag: u8) {
        self.local.store(self.local.load(Ordering::Relaxed) | flag, Ordering::Relaxed);
    }

    /// Sets [`QUEUED`]; true if it was clear, i.e. if the caller must queue the task. Runtime
    /// thread only.
    #[inline]
    pub(crate) fn queue(&self) -> bool {
        let local = self.local.load(Ordering::Relaxed);
        self.local.store(local | QUEUED, Ordering::Relaxed);
        local & QUEUED == 0
    }

    /// Clears [`QUEUED`], returning the local flags as they were: the executor calls it just
    /// before polling the task, and skips the poll if `QUEUED` was clear (a stale queue entry).
    /// Runtime thread only.
    #[inline]
    pub(crate) fn unqueue(&self) -> u8 {
        let local = self.local.load(Ordering::Relaxed);
        self.local.store(local & !QUEUED, Ordering::Relaxed);
        local
    }
}

impl ArcWake for Header {
    fn wake(self: Arc<Self>) {
        crate::executor::wake(&self);
    }

    fn wake_by_ref(arc_self: &Arc<Self>) {
        crate::executor::wake(arc_self);
    }
}

/// A future whose output is type-erased, so that one slab holds tasks of every output type.
///
/// Implemented for every future directly (no wrapper future, whose state would hold a second
/// copy of the spawned future's).
pub(crate) trait ErasedFuture {
    fn poll_erased(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Box<dyn Any>>;
}

impl<F> ErasedFuture for F
where
    F: Future,
    F::Output: 'static,
{
    fn poll_erased(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Box<dyn Any>> {
        self.poll(cx).map(|output| Box::new(output) as Box<dyn Any>)
    }
}

pub(crate) type BoxFuture = Pin<Box<dyn ErasedFuture>>;

/// The body of a task, kept in the runtime's slab.
///
/// Kept small (32 bytes), because a server has one per connection: the output and the joining
/// task's waker live in a [`JoinState`] in the runtime's table of joins (`Core::joins`), made
/// only when a `JoinHandle` waits for the task or the task finishes while its handle is still
/// alive (never, for a detached task), and removed when the slot is freed.
pub(crate) struct Task {
    /// What identifies the task to its `JoinHandle` (which holds the same `Arc`).
    pub(crate) header: Arc<Header>,
    /// `None` while the executor has it out of the slot to poll it, and once the task finished.
    pub(crate) runnable: Option<Runnable>,
}

/// What the executor takes out of a task's slot to poll it: the future, and a second `Arc` of
/// the header for the poll's waker, which the executor can then lend without taking a reference
/// (the slot's own `Arc` stays in the slot, which no borrow may hold while user code runs).
pub(crate) struct Runnable {
    pub(crate) header: Arc<Header>,
    pub(crate) future: BoxFuture,
}

impl Task {
    pub(crate) fn new(header: Arc<Header>, future: BoxFuture) -> Task {
        Task { header: header.clone(), runnable: Some(Runnable { header, future }) }
    }

    pub(crate) fn finished(&self) -> bool {
        self.header.is(FINISHED)
    }
}

/// What a `JoinHandle` waits for.
#[derive(Default)]
pub(crate) struct JoinState {
    pub(crate) output: Option<Result<Box<dyn Any>, JoinError>>,
    pub(crate) waker: Option<Waker>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task").field("id", &self.header.id).field("finished", &self.finished()).finish()
    }
}

/// Why a task produced no output.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    Cancelled,
    Panic(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    pub(crate) fn cancelled() -> JoinError {
        JoinError { repr: Repr::Cancelled }
    }

    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError { repr: Repr::Panic(payload) }
    }

    /// The task was aborted, or its runtime was dropped before it finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The panic payload, to re-raise with `std::panic::resume_unwind`.
    ///
    /// # Panics
    /// If the task did not panic.
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.repr {
            Repr::Panic(payload) => payload,
            Repr::Cancelled => panic!("JoinError::into_panic on a task that was cancelled, not panicked"),
        }
    }

    fn panic_message(&self) -> Option<&str> {
        match &self.repr {
            Repr::Panic(p) => {
                p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str))
            }
            Repr::Cancelled => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled, _) => f.write_str("task was cancelled"),
            (Repr::Panic(_), Some(msg)) => write!(f, "task panicked: {msg}"),
            (Repr::Panic(_), None) => f.write_str("task panicked"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {}

/// An owned permission to await a spawned task's output.
///
/// Awaiting it gives `Ok(output)`, or `Err(JoinError)` if the task panicked or was cancelled.
/// Dropping it detaches the task, which keeps running. [`abort`](Self::abort) cancels it: its
/// future is dropped the next time the executor gets to it.
pub struct JoinHandle<T> {
    core: Weak<Core>,
    header: Arc<Header>,
    _output: PhantomData<T>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("id", &self.header.id).finish()
    }
}

impl<T: 'static> JoinHandle<T> {
    pub(crate) fn new(core: Weak<Core>, header: Arc<Header>) -> JoinHandle<T> {
        JoinHandle { core, header, _output: PhantomData }
    }

    /// Runs `f` on this handle's task slot, if the runtime and the task are still there.
    fn with_task<R>(&self, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let core = self.core.upgrade()?;
        let mut tasks = core.tasks.borrow_mut();
        let task = tasks.get_mut(self.header.slot()).filter(|t| Arc::ptr_eq(&t.header, &self.header))?;
        Some(f(task))
    }

    /// Cancels the task. Its future is dropped (not polled again) the next time the runtime
    /// runs it, and awaiting this handle then gives a cancelled [`JoinError`]. No effect on a
    /// task that already finished.
    pub fn abort(&self) {
        let running = self.with_task(|task| {
            task.header.set(ABORTED);
            !task.finished()
        });
        if running == Some(true) {
            futures_task::ArcWake::wake_by_ref(&self.header);
        }
    }

    /// Whether the task has finished (completed, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.with_task(|task| task.finished()).unwrap_or(true)
    }
}

impl<T: 'static> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// # Panics
    /// When polled again after it returned its output.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(core) = self.core.upgrade() else {
            return Poll::Ready(Err(JoinError::cancelled()));
        };
        let mut tasks = core.tasks.borrow_mut();
        let id = self.header.slot();
        let Some(task) = tasks.get_mut(id).filter(|t| Arc::ptr_eq(&t.header, &self.header)) else {
            // Freed: the runtime dropped the task (it was shut down), or this handle already
            // returned the output.
            return Poll::Ready(Err(JoinError::cancelled()));
        };
        if !task.finished() {
            drop(tasks);
            let mut joins = core.joins.borrow_mut();
            let join = joins.entry(id).or_default();
            let mut replaced = None;
            if !join.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                replaced = join.waker.replace(cx.waker().clone());
            }
            drop(joins);
            drop(replaced); // outside the borrow: dropping a waker may run code
            return Poll::Pending;
        }
        let removed = tasks.remove(id);
        drop(tasks);
        drop(removed); // (its future is gone: it finished)
        let join = core.joins.borrow_mut().remove(&id);
        let result = join.and_then(|join| join.output).expect("a finished task's output is stored");
        Poll::Ready(result.map(|output| match output.downcast::<T>() {
            Ok(output) => *output,
            Err(_) => unreachable!("a task's output has the JoinHandle's type"),
        }))
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let Some(core) = self.core.upgrade() else { return };
        let mut tasks = core.tasks.borrow_mut();
        let id = self.header.slot();
        let Some(task) = tasks.get_mut(id).filter(|t| Arc::ptr_eq(&t.header, &self.header)) else { return };
        let removed = if !task.finished() {
            task.header.set(DETACHED);
            None
        } else {
            Some(tasks.remove(id))
        };
        drop(tasks);
        let join = core.joins.borrow_mut().remove(&id);
        // The output's destructor (and a waker's) runs outside the borrows: it may touch the
        // runtime.
        drop((removed, join));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_its_counts_is_32_bytes_and_a_task_slot_32() {
        assert_eq!(std::mem::size_of::<Header>(), 16, "the Arc adds its two counts: 32 bytes");
        assert_eq!(std::mem::size_of::<Task>(), 32);
        // (The slab's entry is as large: its vacant variant fits in the header's null niche.)
        assert_eq!(std::mem::size_of::<Option<Task>>(), 32);
    }

    /// A driver with no I/O: parking returns at once.
    struct NoIo;

    #[derive(Debug)]
    struct NoUnpark;

    impl crate::Unpark for NoUnpark {
        fn unpark(&self) {}
    }

    impl crate::Park for NoIo {
        fn park(&self, _: Option<std::time::Duration>, _: &mut Vec<Waker>) -> std::io::Result<bool> {
            Ok(false)
        }

        fn unparker(&self) -> Arc<dyn crate::Unpark> {
            Arc::new(NoUnpark)
        }

        fn shut_down(&self, _: &mut Vec<Waker>) {}
    }

    #[test]
    fn a_task_freed_while_queued_costs_the_next_task_in_its_slot_no_extra_poll() {
        use std::cell::Cell;
        use std::future::poll_fn;
        use std::rc::Rc;

        let runtime = crate::Runtime::new(NoIo, crate::Config::default(), 16);
        let polls = Rc::new(Cell::new(0));
        runtime.block_on(async {
            // Wakes itself in its last poll, so its index is queued again when it is freed.
            let first = crate::spawn(poll_fn(|cx| {
                cx.waker().wake_by_ref();
                Poll::Ready(())
            }));
            drop(first);
            crate::yield_now().await;
            // Takes the freed slot: the stale index now names it, and so does its own.
            let counted = polls.clone();
            let second = crate::spawn(poll_fn(move |_| {
                counted.set(counted.get() + 1);
                Poll::<()>::Pending
            }));
            for _ in 0..3 {
                crate::yield_now().await;
            }
            drop(second);
        });
        assert_eq!(polls.get(), 1, "a stale queue entry polled the slot's new task a second time");
    }
}
