//! The loop: a run queue of woken tasks, and the loop that alternates between polling them and
//! asking the driver for I/O.
//!
//! # The loop ([`Runtime::block_on`])
//!
//! ```text
//! loop {
//!     poll up to `event_interval` tasks from the run queue (the block_on future is one of them)
//!     park the driver with a timeout of
//!         0                       if tasks are still queued (just collect what is ready),
//!         until the next timer    if the queue is empty,
//!         none                    if there is no timer either;
//!     wake the tasks whose I/O the driver reported, then the tasks whose timers expired
//! }
//! ```
//!
//! Only "park the driver" differs between the runtimes: the reactor's driver calls
//! `epoll_wait` and reports sockets that became *ready*; the proactor's calls `io_uring_enter`
//! (or waits for glibc's aio threads) and reports operations that *completed*. See [`Park`].
//!
//! Two limits keep one busy task or socket from starving the rest:
//!
//! - **the event interval**: after that many polls the loop checks for I/O even if tasks are
//!   still queued, so tasks that keep waking each other cannot keep ready sockets waiting;
//! - **the budget**: each poll of a task may complete that many I/O operations (the drivers'
//!   futures charge it through [`poll_budget`]); after that, they return `Pending` (waking the
//!   task first), so a task whose socket is always ready goes to the back of the queue instead
//!   of looping forever.
//!
//! # Waking
//!
//! A waker points to the task's `Header`. Waking from the runtime's own thread pushes the task's
//! index onto the local run queue (a `RefCell<VecDeque<u32>>`: no lock, no syscall, no atomic
//! read-modify-write, not even a reference count; see the `task` module). Waking from any other
//! thread pushes the header onto a mutex-protected remote queue and then calls the driver's
//! [`Unpark`] (an eventfd the driver watches), which ends the loop's current or next park; the
//! loop moves it to the run queue then.
//!
//! # Borrowing discipline
//!
//! Runtime state sits in `RefCell`s. No borrow is held while user code runs: a task's future is
//! taken out of its slot to be polled and put back after; wakers collected by the driver and
//! the timers are woken after their borrows end (a driver that wakes some itself, as the
//! reactor's does, holds none of its own borrows meanwhile); the outputs and futures of finished tasks are
//! dropped after the task slab's borrow ends. That is what lets a task `spawn`, drop a
//! `JoinHandle` or close a socket from anywhere, including from a destructor.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_task::waker_ref;
use slab::Slab;

use crate::stats;
use crate::task::{self, BoxFuture, Header, JoinError, JoinHandle, JoinState, Task, MAIN_TASK};
use crate::time::Timers;
use crate::trace::{trace_step, LoopEvent};

/// The seam between the loop and a driver: how the loop waits for I/O.
///
/// The loop calls [`park`](Self::park) once per turn and wakes the wakers it hands back; other
/// threads end a park through the [`Unpark`] handle. That is all the loop needs to know about
/// I/O. The driver's futures (socket reads, accepts, ...) store the task's waker in the driver
/// when they must wait, and [`park`](Self::park) hands it back once the I/O is ready (a
/// readiness driver) or done (a completion driver).
pub trait Park: 'static {
    /// Waits for I/O for at most `timeout` (`None`: until some arrives or [`Unpark::unpark`] is
    /// called; zero: do not sleep, only collect what is there). Moves the wakers of the tasks
    /// the I/O concerns into `wakers`; the loop wakes them after this returns, outside every
    /// borrow of driver state. (A driver may also wake some itself, as long as it holds no
    /// borrow of its state while it does: a waker may run any code. The reactor's does, for
    /// the one task a socket usually has.)
    ///
    /// Returns whether [`Unpark::unpark`] was called since the last park (other threads have
    /// queued tasks for the loop). An error is a bug (a bad fd or argument): the loop panics.
    fn park(&self, timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool>;

    /// The handle other threads use to end a park.
    fn unparker(&self) -> Arc<dyn Unpark>;

    /// The runtime is being dropped: make further I/O fail instead of wait, and move every
    /// stored waker into `wakers`, so that tasks still holding this driver's sockets (outside
    /// the runtime) see an error instead of waiting forever.
    fn shut_down(&self, wakers: &mut Vec<Waker>);
}

/// Ends a driver's [`Park::park`] from any thread.
pub trait Unpark: Send + Sync + fmt::Debug + 'static {
    /// Makes the driver's current or next park return (reporting that it was unparked).
    fn unpark(&self);
}

thread_local! {
    /// The runtime whose `block_on` is running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
    /// I/O operations the task being polled may still complete in this poll.
    static BUDGET: Cell<u32> = const { Cell::new(u32::MAX) };
    /// The address of the driver of the runtime whose `block_on` is running on this thread
    /// (null when none is): what [`runs_driver`] compares with, on every wait of every
    /// operation, without borrowing `CURRENT` and downcasting its driver.
    static RUNNING_DRIVER: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
    /// The run queue of the runtime whose `block_on` is running on this thread, as task indices
    /// ([`MAIN_TASK`] for the `block_on` future): moved here from its `Core` for the duration
    /// (and back after), so that a wake-up on this thread (every I/O event's) reaches it in one
    /// thread-local access, without borrowing `CURRENT`.
    static RUN_QUEUE: RefCell<VecDeque<u32>> = const { RefCell::new(VecDeque::new()) };
    /// The address of that runtime's [`Shared`] (null when none runs), which a waker's header
    /// names: compared, never dereferenced.
    static RUNNING_SHARED: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
}

/// The loop's settings (the driver has its own).
///
/// ```
/// let config = executor::Config::default().task_budget(64).event_interval(31);
/// # let _ = config;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Config {
    task_budget: u32,
    event_interval: u32,
}

impl Default for Config {
    /// A budget of 128 operations per task poll, and I/O checked after every 61 task polls (the
    /// values tokio uses).
    fn default() -> Config {
        Config { task_budget: 128, event_interval: 61 }
    }
}

impl Config {
    /// How many I/O operations a task may complete in one poll before it has to yield (at
    /// least 1).
    pub fn task_budget(mut self, n: u32) -> Config {
        self.task_budget = n.max(1);
        self
    }

    /// How many tasks are polled between two parks of the driver (at least 1).
    pub fn event_interval(mut self, n: u32) -> Config {
        self.event_interval = n.max(1);
        self
    }
}

/// The part of the runtime other threads may touch: the remote run queue and the unparker.
#[derive(Debug)]
pub(crate) struct Shared {
    unpark: Arc<dyn Unpark>,
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
        self.unpark.unpark();
    }
}

/// Wakes the task of `header`: queues its index on the local run queue when called on the thread
/// running its runtime (once: not if it is queued already), or the header on the remote queue
/// (plus an unpark) otherwise.
#[inline]
pub(crate) fn wake(header: &Arc<Header>) {
    if RUNNING_SHARED.get() == Arc::as_ptr(&header.shared) {
        // This thread runs the task's runtime: its local flags are this thread's to touch.
        if header.queue() {
            // The queue is borrowed only for a push or a pop (or by a simulation's pick of the
            // next task, which could wake one), so it is hardly ever refused, but be robust: a
            // refused wake-up goes the remote way. (Nor can the thread-local be gone: `block_on`
            // touched it on entry, and thread-locals are destroyed only once the thread's code,
            // `block_on` included, is done.)
            let pushed =
                RUN_QUEUE.try_with(|queue| queue.try_borrow_mut().map(|mut q| q.push_back(header.id)));
            if !matches!(pushed, Ok(Ok(()))) {
                header.unqueue();
                remote(header);
            }
        }
        return;
    }
    remote(header);

    #[cold]
    fn remote(header: &Arc<Header>) {
        if !header.remote.swap(true, Ordering::AcqRel) {
            header.shared.push_remote(header.clone());
        }
    }
}

/// The task the loop polls next: the first queued, or the one a simulation picks (see `sim`).
#[inline]
fn pop_next(queue: &mut VecDeque<u32>) -> Option<u32> {
    #[cfg(feature = "sim")]
    if queue.len() > 1 {
        let at = crate::sim::pick(queue.len());
        return queue.remove(at).or_else(|| queue.pop_front());
    }
    queue.pop_front()
}

/// Queues task `id` on the run queue of the runtime running on this thread, from the loop's own
/// code (which never holds a borrow of the queue meanwhile).
fn push_local(id: u32) {
    RUN_QUEUE.with_borrow_mut(|queue| queue.push_back(id));
}

/// Charges one I/O operation to the running task's budget; `Pending` (after waking the task)
/// when the budget is spent. Always `Ready` outside a runtime.
///
/// Every driver future that completes an operation calls it first, so that one task cannot
/// keep the loop to itself (see the module docs).
#[inline]
pub fn poll_budget(cx: &mut Context<'_>) -> Poll<()> {
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

/// Runs `f` with the driver of the runtime running on this thread, if that runtime's driver
/// is a `D`.
pub fn with_driver<D: Park, R>(f: impl FnOnce(&Rc<D>) -> R) -> Option<R> {
    CURRENT.with(|current| {
        let current = current.borrow();
        let driver = current.as_ref()?.driver.downcast_ref::<Rc<D>>()?;
        Some(f(driver))
    })
}

/// Whether the runtime running on this thread is the one that owns `driver`.
///
/// A driver's future that is about to wait asks this: only its own runtime can wake it, so
/// waiting anywhere else would be waiting forever.
///
/// One thread-local read: a driver lives at one address while its runtime runs (the runtime
/// holds it in an `Rc`), and two live drivers never share one.
#[inline]
pub fn runs_driver<D: Park>(driver: &D) -> bool {
    RUNNING_DRIVER.get() == (driver as *const D).cast()
}

/// Runs `f` with the timers of the runtime running on this thread.
pub(crate) fn with_timers<R>(f: impl FnOnce(&Rc<Timers>) -> R) -> Option<R> {
    CURRENT.with(|current| current.borrow().as_ref().map(|core| f(&core.timers)))
}

/// The runtime's state, shared (through `Rc`) by the [`Runtime`], the thread-local context
/// while `block_on` runs, and `JoinHandle`s (weakly). Not generic: tasks, wakers and join
/// handles are the same whatever the driver.
pub(crate) struct Core {
    pub(crate) tasks: RefCell<Slab<Task>>,
    /// What `JoinHandle`s wait for, by task slot: a task's entry exists only while its handle
    /// waits for it or holds its output, and goes when the slot is freed. Out of the slab so
    /// that the slot every wake-up and poll touches stays at 32 bytes.
    pub(crate) joins: RefCell<HashMap<usize, JoinState>>,
    run_queue: RefCell<VecDeque<u32>>,
    shared: Arc<Shared>,
    timers: Rc<Timers>,
    /// Scratch list for the wakers a park or the timers hand back.
    wakers: RefCell<Vec<Waker>>,
    /// The driver, as an `Rc<D>`, for [`with_driver`].
    driver: Box<dyn Any>,
    config: Config,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("tasks", &self.tasks.borrow().len())
            .field("run_queue", &self.run_queue.borrow().len())
            .field("config", &self.config)
            .finish()
    }
}

impl Core {
    fn spawn<F>(self: &Rc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let mut tasks = self.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let id =
            u32::try_from(entry.key()).ok().filter(|&id| id != MAIN_TASK).expect("more tasks than 2^32 - 1");
        let header = Arc::new(Header::new(id, self.shared.clone()));
        header.queue();
        let future: BoxFuture = Box::pin(future);
        entry.insert(Task::new(header.clone(), future));
        drop(tasks);
        self.push(id);
        JoinHandle::new(Rc::downgrade(self), header)
    }

    /// Queues task `id` of this runtime (its `QUEUED` flag set): on the thread-local run queue
    /// while this runtime runs, on its own otherwise (moved there when it starts running).
    fn push(&self, id: u32) {
        if RUNNING_SHARED.get() == Arc::as_ptr(&self.shared) {
            push_local(id);
        } else {
            self.run_queue.borrow_mut().push_back(id);
        }
    }

    /// Polls one task (or drops it, if aborted) and records how it finished.
    fn run_task(&self, id: u32) {
        let (mut runnable, local) = {
            let mut tasks = self.tasks.borrow_mut();
            let Some(task) = tasks.get_mut(id as usize) else { return }; // freed while queued
            let local = task.header.unqueue();
            // Not queued: a stale index (another entry for this task, or for the task now in
            // its slot, was polled since; see the `task` module).
            if local & task::QUEUED == 0 {
                return;
            }
            let Some(runnable) = task.runnable.take() else { return }; // finished
            (runnable, local)
        };
        let result = if local & task::ABORTED != 0 {
            Err(JoinError::cancelled())
        } else {
            BUDGET.set(self.config.task_budget);
            stats::bump(|c| &c.tasks_polled);
            trace_step!(LoopEvent::TaskPolled { task: id as usize });
            let polled = {
                let waker = waker_ref(&runnable.header);
                let mut cx = Context::from_waker(&waker);
                panic::catch_unwind(AssertUnwindSafe(|| runnable.future.as_mut().poll_erased(&mut cx)))
            };
            match polled {
                Ok(Poll::Pending) => {
                    trace_step!(LoopEvent::TaskWaits { task: id as usize });
                    // Back into its slot, which is empty (the task cannot have been freed while
                    // it ran: it had not finished); anything else is dropped after the borrow.
                    let stray = match self.tasks.borrow_mut().get_mut(id as usize) {
                        Some(task) if task.runnable.is_none() => {
                            task.runnable = Some(runnable);
                            None
                        }
                        _ => Some(runnable),
                    };
                    drop(stray);
                    return;
                }
                Ok(Poll::Ready(output)) => {
                    trace_step!(LoopEvent::TaskFinished { task: id as usize });
                    Ok(output)
                }
                Err(payload) => Err(JoinError::panic(payload)),
            }
        };
        // A destructor that panics is contained like a poll that panics.
        let result = match panic::catch_unwind(AssertUnwindSafe(move || drop(runnable))) {
            Ok(()) => result,
            Err(payload) => Err(JoinError::panic(payload)),
        };
        self.complete(id as usize, result);
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
            drop(tasks);
            let waker = {
                let mut joins = self.joins.borrow_mut();
                let join = joins.entry(id).or_default();
                join.output = Some(result);
                join.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Parks `driver` (or just collects its I/O, when `idle` is false), then wakes the tasks
    /// it and the expired timers concern.
    fn park<D: Park>(&self, driver: &D, idle: bool) {
        let timeout = if !idle {
            Some(Duration::ZERO)
        } else {
            self.timers.next_deadline().map(|deadline| deadline.saturating_duration_since(crate::time::now()))
        };
        stats::bump(|c| &c.turns);
        stats::bump(if timeout == Some(Duration::ZERO) {
            |c| &c.waits_nonblocking
        } else {
            |c| &c.waits_blocking
        });
        let mut wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        let unparked = match driver.park(timeout, &mut wakers) {
            Ok(unparked) => unparked,
            // A driver fails to wait only on a bad fd or argument, which would be a bug.
            Err(e) => panic!("the runtime's driver failed to wait for I/O: {e}"),
        };
        if unparked {
            let remote = std::mem::take(&mut self.shared.remote().queue);
            stats::add(|c| &c.remote_wakeups, remote.len() as u64);
            for header in remote {
                // A read-modify-write: it reads the waking thread's store, so the poll sees what
                // that thread wrote before it woke the task. A wake-up from there after this
                // point queues the header again.
                header.remote.swap(false, Ordering::AcqRel);
                if header.queue() {
                    push_local(header.id);
                }
            }
        }
        for waker in wakers.drain(..) {
            waker.wake();
        }
        if self.timers.fire(&mut wakers) {
            stats::add(|c| &c.timers_fired, wakers.len() as u64);
            trace_step!(LoopEvent::TimersExpired { count: wakers.len() });
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

/// A single-threaded runtime: a driver `D`, timers, and the executor.
///
/// Tasks run only while [`block_on`](Self::block_on) runs. The runtime is `!Send`: to use
/// several cores, run one runtime per thread (each with its own listener, e.g. with
/// `SO_REUSEPORT`). Dropping it drops every task it still holds, which closes every socket
/// those tasks own.
pub struct Runtime<D: Park> {
    core: Rc<Core>,
    driver: Rc<D>,
}

impl<D: Park> fmt::Debug for Runtime<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime").field("core", &self.core).finish_non_exhaustive()
    }
}

impl<D: Park> Runtime<D> {
    /// A runtime that runs its loop on `driver`.
    ///
    /// `slab_capacity` is how many tasks to make room for up front (see [`slab_capacity`]).
    pub fn new(driver: D, config: Config, slab_capacity: usize) -> Runtime<D> {
        let driver = Rc::new(driver);
        let shared = Arc::new(Shared {
            unpark: driver.unparker(),
            remote: Mutex::new(Remote { open: true, queue: Vec::new() }),
        });
        let core = Core {
            tasks: RefCell::new(Slab::with_capacity(slab_capacity)),
            joins: RefCell::new(HashMap::new()),
            run_queue: RefCell::new(VecDeque::new()),
            shared,
            timers: Rc::new(Timers::default()),
            wakers: RefCell::new(Vec::new()),
            driver: Box::new(driver.clone()),
            config,
        };
        Runtime { core: Rc::new(core), driver }
    }

    /// The driver.
    pub fn driver(&self) -> &Rc<D> {
        &self.driver
    }

    /// Runs `future` to completion on this thread, running spawned tasks meanwhile.
    ///
    /// # Panics
    /// When called from within a runtime on the same thread (that would block the runtime
    /// that is already running), or when `future` panics. The first panic names the caller's
    /// line.
    #[track_caller]
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _enter = Enter::new(&self.core, Rc::as_ptr(&self.driver).cast());
        let core = &*self.core;
        let mut future = pin!(future);
        let main = Arc::new(Header::new(MAIN_TASK, core.shared.clone()));
        main.queue();
        push_local(MAIN_TASK);
        let main_waker = waker_ref(&main);
        loop {
            for _ in 0..core.config.event_interval {
                let Some(id) = RUN_QUEUE.with_borrow_mut(pop_next) else { break };
                if id == MAIN_TASK {
                    // (Not queued: a stale entry, e.g. left by an earlier `block_on`'s future.)
                    if main.unqueue() & task::QUEUED == 0 {
                        continue;
                    }
                    BUDGET.set(core.config.task_budget);
                    stats::bump(|c| &c.tasks_polled);
                    trace_step!(LoopEvent::MainPolled);
                    if let Poll::Ready(output) = future.as_mut().poll(&mut Context::from_waker(&main_waker)) {
                        return output;
                    }
                    trace_step!(LoopEvent::MainWaits);
                } else {
                    core.run_task(id);
                }
            }
            let idle = RUN_QUEUE.with_borrow(VecDeque::is_empty);
            core.park(&*self.driver, idle);
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
}

impl<D: Park> Drop for Runtime<D> {
    fn drop(&mut self) {
        let core = &*self.core;
        // Drop tasks outside the slab's borrow: a future's destructor may drop JoinHandles or
        // sockets, which touch the runtime. (Nothing can spawn onto this runtime meanwhile: it
        // is not running, and `Runtime::spawn` needs `&self`.)
        let tasks: Vec<Task> = core.tasks.borrow_mut().drain().collect();
        for task in tasks {
            drop_contained(task);
        }
        let joins = std::mem::take(&mut *core.joins.borrow_mut());
        for join in joins.into_values() {
            drop_contained(join);
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
        let mut wakers: Vec<Waker> = core.timers.clear().into_values().collect();
        self.driver.shut_down(&mut wakers);
        for waker in wakers {
            waker.wake();
        }
    }
}

/// Marks this thread as running `core` for the duration of a `block_on`.
struct Enter;

impl Enter {
    /// `driver`: the address of the runtime's driver, for [`runs_driver`].
    #[track_caller]
    fn new(core: &Rc<Core>, driver: *const ()) -> Enter {
        // (Checked outside `CURRENT.with`: a panic inside its closure would name this line, not
        // the caller's.)
        assert!(
            CURRENT.with_borrow(Option::is_none),
            "cannot block_on inside a runtime; the running runtime would stall \
             (spawn the future, or await it, instead)"
        );
        CURRENT.set(Some(core.clone()));
        RUNNING_DRIVER.set(driver);
        // The runtime's queue (tasks spawned before it ran) becomes the thread's.
        RUN_QUEUE.with_borrow_mut(|queue| std::mem::swap(queue, &mut core.run_queue.borrow_mut()));
        RUNNING_SHARED.set(Arc::as_ptr(&core.shared));
        Enter
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let core = CURRENT.with(|current| current.borrow_mut().take());
        BUDGET.set(u32::MAX);
        RUNNING_DRIVER.set(std::ptr::null());
        RUNNING_SHARED.set(std::ptr::null());
        // Tasks still queued wait in their runtime for its next `block_on`.
        if let Some(core) = &core {
            RUN_QUEUE.with_borrow_mut(|queue| std::mem::swap(queue, &mut core.run_queue.borrow_mut()));
        }
        drop(core);
    }
}

/// Declares a runtime crate's `Runtime`: a newtype over [`Runtime<D>`] for its driver `D`,
/// which it dereferences to (so `block_on`, `spawn` and `task_count` are the executor's), with
/// a `new()` that builds it from the crate's `Builder` defaults. The crate adds its driver's
/// own accessors in an `impl` block of its own.
///
/// ```ignore
/// executor::runtime_type! {
///     /// A single-threaded readiness runtime.
///     pub struct Runtime(executor::Runtime<Driver>);
/// }
/// ```
#[macro_export]
macro_rules! runtime_type {
    ($(#[doc = $doc:literal])* pub struct $name:ident($inner:ty);) => {
        $(#[doc = $doc])*
        #[derive(Debug)]
        pub struct $name {
            inner: $inner,
        }

        /// The shared executor's runtime does the running: `block_on`, `spawn` and
        /// `task_count` are its methods.
        impl ::std::ops::Deref for $name {
            type Target = $inner;

            fn deref(&self) -> &$inner {
                &self.inner
            }
        }

        impl $name {
            /// A runtime with the default [`Builder`] settings.
            pub fn new() -> ::std::io::Result<$name> {
                Builder::new().build()
            }
        }
    };
}

/// Spawns a task on the runtime running on this thread (either runtime's).
///
/// The future need not be `Send`: it never leaves this thread.
///
/// # Panics
/// When no runtime is running on this thread; the message names the caller's line.
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let handle = CURRENT.with(|current| current.borrow().as_ref().map(|core| core.spawn(future)));
    match handle {
        Some(handle) => handle,
        None => panic!("spawn called outside a runtime (call it inside block_on)"),
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

/// The capacity to reserve for slabs that grow with the number of connections (tasks, and a
/// driver's registrations or operations): the fd limit, capped at 2^20.
///
/// Reserving costs no memory until it is used (a large allocation is fresh `mmap`ed pages,
/// which the kernel maps on first touch), and it means the slab never reallocates: a growing
/// `Vec` copies itself and leaves the old block behind in the heap, which at 10,000
/// connections can cost more resident memory than the slab itself.
pub fn slab_capacity() -> usize {
    crate::sys::nofile_limit().map_or(1024, |n| n.clamp(64, 1 << 20) as usize)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Poll, Waker};
    use std::time::Duration;

    use super::*;

    /// A driver with no I/O: parking returns at once.
    struct NoIo;

    #[derive(Debug)]
    struct NoUnpark;

    impl Unpark for NoUnpark {
        fn unpark(&self) {}
    }

    impl Park for NoIo {
        fn park(&self, _: Option<Duration>, _: &mut Vec<Waker>) -> io::Result<bool> {
            Ok(false)
        }

        fn unparker(&self) -> Arc<dyn Unpark> {
            Arc::new(NoUnpark)
        }

        fn shut_down(&self, _: &mut Vec<Waker>) {}
    }

    #[test]
    fn a_join_handle_leaves_no_join_state_behind_whether_it_is_dropped_or_gets_the_output() {
        let runtime = Runtime::new(NoIo, Config::default(), 16);
        runtime.block_on(async {
            // Waited for once (its join state made), then dropped before the task finishes.
            let mut dropped = spawn(async { yield_now().await });
            let _ = poll_fn(|cx| Poll::Ready(Pin::new(&mut dropped).poll(cx))).await;
            drop(dropped);
            // Waited for until it gives the output.
            let joined = spawn(async {
                yield_now().await;
                7
            });
            assert_eq!(joined.await.unwrap(), 7);
            yield_now().await;
        });
        assert_eq!(runtime.task_count(), 0);
        assert!(runtime.core.joins.borrow().is_empty(), "join state left behind for a freed slot");
    }
}
