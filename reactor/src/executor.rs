//! The executor: a run queue of woken tasks, and the loop that alternates between polling them
//! and asking the driver for I/O.
//!
//! # The loop (`Runtime::block_on`)
//!
//! ```text
//! loop {
//!     poll up to `event_interval` tasks from the run queue (the block_on future is one of them)
//!     turn the driver: epoll_wait with timeout
//!         0                       if tasks are still queued (just collect what is ready),
//!         until the next timer    if the queue is empty,
//!         forever                 if there is no timer either;
//!     wake the tasks whose sockets became ready, then the tasks whose timers expired
//! }
//! ```
//!
//! Two limits keep one busy task or socket from starving the rest:
//!
//! - **the event interval**: after that many polls the loop checks for I/O even if tasks are
//!   still queued, so tasks that keep waking each other cannot keep ready sockets waiting;
//! - **the budget**: each poll of a task may complete that many I/O operations; after that, its
//!   socket operations return `Pending` (waking the task first), so a task reading from a socket
//!   that is always ready goes to the back of the queue instead of looping forever.
//!
//! # Waking
//!
//! A waker points to the task's [`Header`]. Waking from the runtime's own thread pushes it onto
//! the local run queue (a `RefCell<VecDeque>`, no lock, no syscall). Waking from any other
//! thread pushes it onto a mutex-protected remote queue and then rings the driver's
//! [`Notifier`] (an eventfd), which the loop drains after its next
//! `epoll_wait`.
//!
//! # Borrowing discipline
//!
//! Runtime state sits in `RefCell`s. No borrow is held while user code runs: a task's future is
//! taken out of its slot to be polled and put back after; wakers collected by the driver and
//! the timers are woken after their borrows end; the outputs and futures of finished tasks are
//! dropped after the task slab's borrow ends. That is what lets a task `spawn`, drop a
//! `JoinHandle` or close a socket from anywhere, including from a destructor.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_task::waker_ref;
use slab::Slab;

use crate::driver::{Driver, Notifier};
use crate::stats;
use crate::task::{self, BoxFuture, Header, JoinError, JoinHandle, Task, MAIN_TASK};
use crate::time::Timers;

thread_local! {
    /// The runtime whose `block_on` is running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
    /// I/O operations the task being polled may still complete in this poll.
    static BUDGET: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// Settings of a [`Runtime`]; see [`Builder`].
#[derive(Clone, Debug)]
struct Config {
    events_per_wait: usize,
    task_budget: u32,
    event_interval: u32,
}

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = reactor::Builder::new().events_per_wait(256).task_budget(64).build().unwrap();
/// assert_eq!(rt.block_on(async { 6 * 7 }), 42);
/// ```
#[derive(Debug)]
pub struct Builder {
    config: Config,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: 1024 events per wait, a budget of 128 operations per task poll, and I/O
    /// checked after every 61 task polls (the values tokio uses).
    pub fn new() -> Builder {
        Builder { config: Config { events_per_wait: 1024, task_budget: 128, event_interval: 61 } }
    }

    /// How many events one `epoll_wait` may return (at least 1). More events are not lost when
    /// the limit is hit; they come with the next wait.
    pub fn events_per_wait(mut self, n: usize) -> Builder {
        self.config.events_per_wait = n.max(1);
        self
    }

    /// How many I/O operations a task may complete in one poll before it has to yield (at
    /// least 1).
    pub fn task_budget(mut self, n: u32) -> Builder {
        self.config.task_budget = n.max(1);
        self
    }

    /// How many tasks are polled between two checks for I/O (at least 1).
    pub fn event_interval(mut self, n: u32) -> Builder {
        self.config.event_interval = n.max(1);
        self
    }

    /// Creates the epoll instance and its eventfd.
    pub fn build(self) -> io::Result<Runtime> {
        let driver = Rc::new(Driver::new(self.config.events_per_wait)?);
        let shared = Arc::new(Shared {
            notifier: driver.notifier().clone(),
            remote: Mutex::new(Remote { open: true, queue: Vec::new() }),
        });
        let core = Core {
            driver,
            timers: Rc::new(Timers::default()),
            tasks: RefCell::new(Slab::with_capacity(crate::driver::slab_capacity())),
            run_queue: RefCell::new(VecDeque::new()),
            shared,
            wakers: RefCell::new(Vec::new()),
            config: self.config,
        };
        Ok(Runtime { core: Rc::new(core) })
    }
}

/// The part of the runtime other threads may touch: the remote run queue and the notifier.
#[derive(Debug)]
pub(crate) struct Shared {
    notifier: Arc<Notifier>,
    remote: Mutex<Remote>,
}

#[derive(Debug)]
struct Remote {
    /// False once the runtime is dropped; wake-ups are then ignored. Clearing the queue at that
    /// point also breaks the cycle header → shared → queue → header.
    open: bool,
    queue: Vec<Arc<Header>>,
}

impl Shared {
    fn remote(&self) -> std::sync::MutexGuard<'_, Remote> {
        // The lock is never held across code that can panic, but be robust anyway.
        self.remote.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push_remote(&self, header: Arc<Header>) {
        {
            let mut remote = self.remote();
            if !remote.open {
                return;
            }
            remote.queue.push(header);
        }
        self.notifier.notify();
    }
}

/// Queues a woken task: on the local run queue when called on the runtime's thread, on the
/// remote queue (plus an eventfd write) otherwise. The caller has set the `SCHEDULED` bit.
pub(crate) fn schedule(header: Arc<Header>) {
    // One thread-local access on this hot path: the header is taken out of `pending` only when
    // it goes onto the local run queue.
    let mut pending = Some(header);
    let _ = CURRENT.try_with(|current| {
        if let Ok(Some(core)) = current.try_borrow().as_deref() {
            if pending.as_ref().is_some_and(|header| Arc::ptr_eq(&core.shared, &header.shared)) {
                core.run_queue.borrow_mut().extend(pending.take());
            }
        }
    });
    if let Some(header) = pending {
        let shared = header.shared.clone();
        shared.push_remote(header);
    }
}

/// Charges one I/O operation to the running task's budget; `Pending` (after waking the task)
/// when the budget is spent. Always `Ready` outside this runtime.
pub(crate) fn poll_budget(cx: &mut Context<'_>) -> Poll<()> {
    BUDGET.with(|budget| match budget.get() {
        0 => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        u32::MAX => Poll::Ready(()),
        n => {
            budget.set(n - 1);
            Poll::Ready(())
        }
    })
}

/// Whether the runtime running on this thread is the one that owns `driver`.
pub(crate) fn runs_driver(driver: &Driver) -> bool {
    CURRENT.with(|current| current.borrow().as_ref().is_some_and(|core| std::ptr::eq(&*core.driver, driver)))
}

/// Runs `f` with the runtime running on this thread.
pub(crate) fn with_current<R>(f: impl FnOnce(&Rc<Core>) -> R) -> Option<R> {
    CURRENT.with(|current| current.borrow().as_ref().map(f))
}

pub(crate) fn no_runtime_error() -> io::Error {
    io::Error::other("no reactor runtime is running on this thread (call this inside reactor::block_on)")
}

/// The runtime's state, shared (through `Rc`) by the [`Runtime`], the thread-local context
/// while `block_on` runs, and `JoinHandle`s (weakly).
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) driver: Rc<Driver>,
    pub(crate) timers: Rc<Timers>,
    pub(crate) tasks: RefCell<Slab<Task>>,
    run_queue: RefCell<VecDeque<Arc<Header>>>,
    shared: Arc<Shared>,
    /// Scratch list for the wakers a driver turn or the timers hand back.
    wakers: RefCell<Vec<Waker>>,
    config: Config,
}

impl Core {
    fn spawn<F>(self: &Rc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let header = Arc::new(Header::new(entry.key(), self.shared.clone()));
        header.set(task::SCHEDULED);
        let future: BoxFuture = Box::pin(future);
        entry.insert(Task::new(header.clone(), future));
        drop(tasks);
        self.run_queue.borrow_mut().push_back(header.clone());
        JoinHandle::new(Rc::downgrade(self), header)
    }

    /// Polls one task (or drops it, if aborted) and records how it finished.
    fn run_task(&self, header: &Arc<Header>) {
        let (mut future, aborted) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(header.id).filter(|t| Arc::ptr_eq(&t.header, header)) else {
                return; // finished and freed while its header was still queued
            };
            let Some(future) = task.future.take() else { return }; // finished
            (future, header.is(task::ABORTED))
        };
        let result = if aborted {
            Err(JoinError::cancelled())
        } else {
            BUDGET.set(self.config.task_budget);
            let waker = waker_ref(header);
            let mut cx = Context::from_waker(&waker);
            stats::bump(|c| &c.tasks_polled);
            stats::trace_step!("task {} polled", header.id);
            match panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll_erased(&mut cx))) {
                Ok(Poll::Pending) => {
                    stats::trace_step!("task {} waits", header.id);
                    if let Some(task) = self.tasks.borrow_mut().get_mut(header.id) {
                        task.future = Some(future);
                    }
                    return;
                }
                Ok(Poll::Ready(output)) => {
                    stats::trace_step!("task {} finished", header.id);
                    Ok(output)
                }
                Err(payload) => Err(JoinError::panic(payload)),
            }
        };
        // A destructor that panics is contained like a poll that panics.
        let result = match panic::catch_unwind(AssertUnwindSafe(move || drop(future))) {
            Ok(()) => result,
            Err(payload) => Err(JoinError::panic(payload)),
        };
        self.complete(header.id, result);
    }

    fn complete(&self, id: usize, result: Result<Box<dyn Any>, JoinError>) {
        let mut tasks = self.tasks.borrow_mut();
        let Some(task) = tasks.get_mut(id) else { return };
        if task.header.is(task::DETACHED) {
            let task = tasks.remove(id);
            drop(tasks);
            drop(task);
            drop_contained(result);
        } else {
            task.header.set(task::FINISHED);
            let join = task.join.get_or_insert_with(Box::default);
            join.output = Some(result);
            let waker = join.waker.take();
            drop(tasks);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Waits for I/O (or just collects it, when `idle` is false), then wakes the tasks it and
    /// the expired timers concern.
    fn park(&self, idle: bool) {
        let timeout = if !idle {
            Some(Duration::ZERO)
        } else {
            self.timers.next_deadline().map(|deadline| deadline.saturating_duration_since(Instant::now()))
        };
        stats::bump(|c| &c.turns);
        let mut wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        let notified = match self.driver.turn(timeout, &mut wakers) {
            Ok(notified) => notified,
            // epoll_wait can only fail on a bad fd or buffer, which would be a bug here.
            Err(e) => panic!("reactor: epoll_wait failed: {e}"),
        };
        if notified {
            let remote = std::mem::take(&mut self.shared.remote().queue);
            stats::add(|c| &c.remote_wakeups, remote.len() as u64);
            self.run_queue.borrow_mut().extend(remote);
        }
        for waker in wakers.drain(..) {
            waker.wake();
        }
        if self.timers.fire(&mut wakers) {
            stats::add(|c| &c.timers_fired, wakers.len() as u64);
            stats::trace_step!(
                "{} timer{} expired: wake {}",
                wakers.len(),
                if wakers.len() == 1 { "" } else { "s" },
                if wakers.len() == 1 { "its task" } else { "their tasks" }
            );
            for waker in wakers.drain(..) {
                waker.wake();
            }
        }
        *self.wakers.borrow_mut() = wakers;
    }
}

/// Drops a task's output or panic payload; a panic in its destructor is swallowed, because
/// nobody is left to receive it.
fn drop_contained<T>(value: T) {
    let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(value)));
}

/// A single-threaded readiness runtime: an epoll driver, timers, and an executor.
///
/// Tasks run only while [`block_on`](Self::block_on) runs. The runtime is `!Send`: to use
/// several cores, run one runtime per thread (each with its own listener, e.g. with
/// `SO_REUSEPORT`). Dropping it drops every task it still holds, which closes every socket
/// those tasks own.
#[derive(Debug)]
pub struct Runtime {
    core: Rc<Core>,
}

impl Runtime {
    /// A runtime with the default [`Builder`] settings.
    pub fn new() -> io::Result<Runtime> {
        Builder::new().build()
    }

    /// Runs `future` to completion on this thread, running spawned tasks meanwhile.
    ///
    /// # Panics
    /// When called from within a runtime on the same thread (that would block the runtime
    /// that is already running), or when `future` panics.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _enter = Enter::new(&self.core);
        let core = &*self.core;
        let mut future = pin!(future);
        let main = Arc::new(Header::new(MAIN_TASK, core.shared.clone()));
        main.set(task::SCHEDULED);
        core.run_queue.borrow_mut().push_back(main.clone());
        let main_waker = waker_ref(&main);
        loop {
            for _ in 0..core.config.event_interval {
                let Some(header) = core.run_queue.borrow_mut().pop_front() else { break };
                header.unschedule();
                if Arc::ptr_eq(&header, &main) {
                    BUDGET.set(core.config.task_budget);
                    stats::bump(|c| &c.tasks_polled);
                    stats::trace_step!("the block_on future (here: the accept loop) polled");
                    if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(&main_waker)) {
                        return output;
                    }
                    stats::trace_step!("the block_on future waits");
                } else {
                    core.run_task(&header);
                }
            }
            let idle = core.run_queue.borrow().is_empty();
            core.park(idle);
        }
    }

    /// Spawns a task on this runtime; it starts running at the next `block_on`.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.core.spawn(future)
    }

    /// How many spawned tasks the runtime holds (running, or finished but not yet joined).
    pub fn task_count(&self) -> usize {
        self.core.tasks.borrow().len()
    }

    /// How many fds are registered with the driver.
    pub fn registered_fds(&self) -> usize {
        self.core.driver.registrations()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let core = &*self.core;
        // Drop tasks outside the slab's borrow: a future's destructor may drop JoinHandles or
        // sockets, which touch the runtime. (Nothing can spawn onto this runtime meanwhile: it
        // is not running, and `Runtime::spawn` needs `&self`.)
        let tasks: Vec<Task> = core.tasks.borrow_mut().drain().collect();
        for task in tasks {
            drop_contained(task);
        }
        core.run_queue.borrow_mut().clear();
        {
            let mut remote = core.shared.remote();
            remote.open = false;
            remote.queue.clear();
        }
        // Sockets and timers of this runtime that outlive it (moved out of `block_on`) and are
        // awaited elsewhere: wake them, so that sockets report an error and timers re-register
        // with the runtime polling them, instead of waiting forever.
        let timers = core.timers.clear();
        let wakers = core.driver.shut_down();
        for waker in timers.into_values().chain(wakers) {
            waker.wake();
        }
    }
}

/// Marks this thread as running `core` for the duration of a `block_on`.
struct Enter;

impl Enter {
    fn new(core: &Rc<Core>) -> Enter {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            assert!(
                current.is_none(),
                "reactor: cannot block_on inside a runtime; the running runtime would stall \
                 (spawn the future, or await it, instead)"
            );
            *current = Some(core.clone());
        });
        Enter
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let core = CURRENT.with(|current| current.borrow_mut().take());
        BUDGET.set(u32::MAX);
        drop(core);
    }
}

/// Runs `future` to completion on a new [`Runtime`] with default settings, then drops the
/// runtime (and with it every task still running).
///
/// # Panics
/// When the runtime cannot be created (no epoll instance or eventfd could be made: fd or
/// memory exhaustion), when called inside a runtime, or when `future` panics.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match Runtime::new() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => panic!("reactor: cannot create the runtime (epoll_create1/eventfd failed): {e}"),
    }
}

/// Spawns a task on the runtime running on this thread.
///
/// The future need not be `Send`: it never leaves this thread.
///
/// # Panics
/// When no runtime is running on this thread.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match with_current(|core| core.spawn(future)) {
        Some(handle) => handle,
        None => panic!("reactor::spawn called outside a runtime (call it inside reactor::block_on)"),
    }
}

/// Yields to the other tasks once: the current task goes to the back of the run queue.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
