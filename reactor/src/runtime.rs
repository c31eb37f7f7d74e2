//! [`Runtime`] and [`Builder`]: the shared executor's loop, run on the epoll driver.
//!
//! The loop itself (the run queue, the budget, timers, remote wakes) is the `executor` crate's;
//! see its docs. Here it parks in [`Driver`]'s `epoll_wait`:
//!
//! ```text
//! loop {
//!     poll up to `event_interval` woken tasks
//!     epoll_wait, with timeout 0 if tasks are still queued, else until the next timer
//!     wake the tasks whose sockets became ready, then those whose timers expired
//! }
//! ```

use std::future::Future;
use std::io;

use crate::driver::Driver;

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = reactor::Builder::new().events_per_wait(256).task_budget(64).build().unwrap();
/// assert_eq!(rt.block_on(async { 6 * 7 }), 42);
/// ```
#[derive(Debug)]
pub struct Builder {
    events_per_wait: usize,
    config: executor::Config,
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
        Builder { events_per_wait: 1024, config: executor::Config::default() }
    }

    /// How many events one `epoll_wait` may return (at least 1). More events are not lost when
    /// the limit is hit; they come with the next wait.
    pub fn events_per_wait(mut self, n: usize) -> Builder {
        self.events_per_wait = n.max(1);
        self
    }

    /// How many I/O operations a task may complete in one poll before it has to yield (at
    /// least 1).
    pub fn task_budget(mut self, n: u32) -> Builder {
        self.config = self.config.task_budget(n);
        self
    }

    /// How many tasks are polled between two checks for I/O (at least 1).
    pub fn event_interval(mut self, n: u32) -> Builder {
        self.config = self.config.event_interval(n);
        self
    }

    /// Creates the epoll instance and its eventfd.
    pub fn build(self) -> io::Result<Runtime> {
        let driver = Driver::new(self.events_per_wait)?;
        Ok(Runtime { inner: executor::Runtime::new(driver, self.config, executor::slab_capacity()) })
    }
}

executor::runtime_type! {
    /// A single-threaded readiness runtime: an epoll driver, timers, and the shared executor.
    ///
    /// Tasks run only while [`block_on`](executor::Runtime::block_on) runs. The runtime is `!Send`: to use
    /// several cores, run one runtime per thread (each with its own listener, e.g. with
    /// `SO_REUSEPORT`). Dropping it drops every task it still holds, which closes every socket
    /// those tasks own.
    pub struct Runtime(executor::Runtime<Driver>);
}

impl Runtime {
    /// How many fds are registered with the driver.
    pub fn registered_fds(&self) -> usize {
        self.inner.driver().registrations()
    }
}

/// Runs `future` to completion on a new [`Runtime`] with default settings, then drops the
/// runtime (and with it every task still running).
///
/// # Panics
/// When the runtime cannot be created (no epoll instance or eventfd could be made: fd or
/// memory exhaustion), when called inside a runtime, or when `future` panics.
#[track_caller]
pub fn block_on<F: Future>(future: F) -> F::Output {
    match Runtime::new() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => panic!("reactor: cannot create the runtime (epoll_create1/eventfd failed): {e}"),
    }
}
