//! Tasks: what a spawned future becomes, how it is woken, and how its result comes back.
//!
//! A task is split in two, because a [`Waker`] must be `Send + Sync` while the future need not
//! be (this runtime is single-threaded, so a task may hold `Rc`s):
//!
//! - the **header** ([`Header`], in an `Arc`) is all a waker points to: the task's index in the
//!   runtime's task slab and a small state word. Waking sets its `SCHEDULED` bit and, if it
//!   was clear, queues the header (see `executor::schedule`). The bit is what makes a burst of
//!   wake-ups queue the task once;
//! - the **body** ([`Task`], in the runtime's slab, never leaving its thread) holds the boxed
//!   future, then its output until the [`JoinHandle`] takes it.
//!
//! The output is type-erased (`Box<dyn Any>`, no allocation for `()`) so that one slab can hold
//! tasks of every output type; the typed [`JoinHandle<T>`] downcasts it back.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::rc::Weak;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_task::ArcWake;

use crate::executor::{Core, Shared};

/// The id the `block_on` future uses in its header: it is not in the task slab.
pub(crate) const MAIN_TASK: u32 = u32::MAX;

/// Bits of [`Header::state`].
///
/// The task sits in a run queue. Set by a wake-up (on any thread); cleared just before the task
/// is polled, so that a wake-up during the poll queues it again.
pub(crate) const SCHEDULED: u32 = 1 << 0;
/// The task completed, panicked or was cancelled. Runtime thread only.
pub(crate) const FINISHED: u32 = 1 << 1;
/// The `JoinHandle` was dropped: free the slot as soon as the task finishes. Runtime thread only.
pub(crate) const DETACHED: u32 = 1 << 2;
/// `JoinHandle::abort` was called: drop the future instead of polling it. Runtime thread only.
pub(crate) const ABORTED: u32 = 1 << 3;

/// What a waker points to. See the module docs.
///
/// The lifecycle bits live here rather than in [`Task`] only to keep the slab entry, of which
/// a server has one per connection, at 32 bytes.
#[derive(Debug)]
pub(crate) struct Header {
    /// Index in the runtime's task slab ([`MAIN_TASK`] for the `block_on` future). 32 bits, so
    /// that with the state it takes one word: the header is then 32 bytes with the `Arc`'s
    /// counts, and every field of it is touched by each wake-up and poll.
    pub(crate) id: u32,
    /// A 32-bit word, though four bits are used: setting one bit and testing it is then one
    /// instruction (`lock bts` on x86-64), where a byte needs a compare-and-swap loop.
    /// (`Header` field order is the compiler's; all three fit in 16 bytes.)
    state: AtomicU32,
    pub(crate) shared: Arc<Shared>,
}

impl Header {
    pub(crate) fn new(id: u32, shared: Arc<Shared>) -> Header {
        Header { id, state: AtomicU32::new(0), shared }
    }

    /// The task's key in the runtime's slab.
    #[inline]
    pub(crate) fn slot(&self) -> usize {
        self.id as usize
    }

    pub(crate) fn is(&self, flag: u32) -> bool {
        self.state.load(Ordering::Acquire) & flag != 0
    }

    pub(crate) fn set(&self, flag: u32) {
        self.state.fetch_or(flag, Ordering::AcqRel);
    }

    /// Clears `SCHEDULED`; the executor calls it just before polling the task.
    pub(crate) fn unschedule(&self) {
        self.state.fetch_and(!SCHEDULED, Ordering::AcqRel);
    }

    /// Sets `SCHEDULED`; true if it was clear, i.e. if the caller must queue the task.
    fn schedule(&self) -> bool {
        self.state.fetch_or(SCHEDULED, Ordering::AcqRel) & SCHEDULED == 0
    }
}

impl ArcWake for Header {
    fn wake(self: Arc<Self>) {
        if self.schedule() {
            crate::executor::schedule(self);
        }
    }

    fn wake_by_ref(arc_self: &Arc<Self>) {
        if arc_self.schedule() {
            crate::executor::schedule(arc_self.clone());
        }
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
/// task's waker live in a [`JoinState`] that is allocated only when a `JoinHandle` waits for
/// the task or the task finishes while its handle is still alive (never, for a detached task).
pub(crate) struct Task {
    pub(crate) header: Arc<Header>,
    /// `None` while the executor has it out of the slot to poll it, and once the task finished.
    pub(crate) future: Option<BoxFuture>,
    pub(crate) join: Option<Box<JoinState>>,
}

impl Task {
    pub(crate) fn new(header: Arc<Header>, future: BoxFuture) -> Task {
        Task { header, future: Some(future), join: None }
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
            let join = task.join.get_or_insert_with(Box::default);
            let mut replaced = None;
            if !join.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                replaced = join.waker.replace(cx.waker().clone());
            }
            drop(tasks);
            drop(replaced); // outside the borrow: dropping a waker may run code
            return Poll::Pending;
        }
        let removed = tasks.remove(id);
        drop(tasks);
        let result = removed.join.and_then(|join| join.output).expect("a finished task's output is stored");
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
        if !task.finished() {
            task.header.set(DETACHED);
            let join = task.join.take();
            drop(tasks);
            drop(join);
        } else {
            let removed = tasks.remove(id);
            drop(tasks);
            // The output's destructor runs outside the borrow: it may touch the runtime.
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_with_its_counts_is_32_bytes_and_a_task_slot_32() {
        assert_eq!(std::mem::size_of::<Header>(), 16, "the Arc adds its two counts: 32 bytes");
        assert_eq!(std::mem::size_of::<Task>(), 32);
    }
}
