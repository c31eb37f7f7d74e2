//! [`Runtime`] and [`Builder`]: the shared executor's loop, run on a completion driver.
//!
//! The loop itself (the run queue, the budget, timers, remote wakes) is the `executor` crate's,
//! the same as the reactor's; see its docs. Here it parks in [`Driver`]'s turn:
//!
//! ```text
//! loop {
//!     poll up to `event_interval` woken tasks (their operations queue SQEs meanwhile)
//!     one io_uring_enter that submits every queued SQE and
//!         waits for no completion   if tasks are still queued,
//!         waits until the next timer for at least one completion, if the queue is empty;
//!     reap the CQ: wake the tasks whose operations completed, then those whose timers expired
//! }
//! ```

use std::future::Future;
use std::io;
use std::time::Duration;

use crate::backend::{AioNotify, Backend, Config};
use crate::driver::Driver;

executor::runtime_type! {
    /// A single-threaded completion runtime: an io_uring (or POSIX aio, or epoll-emulated)
    /// driver, timers, and the shared executor.
    ///
    /// Tasks run only while [`block_on`](executor::Runtime::block_on) runs. The runtime is `!Send`: to use
    /// several cores, run one runtime per thread (each with its own listener, e.g. with
    /// `SO_REUSEPORT`). Dropping it drops every task it still holds, which closes every socket
    /// those tasks own, then waits (boundedly) for the kernel to give back every buffer.
    pub struct Runtime(executor::Runtime<Driver>);
}

impl Runtime {
    /// How many times the completion queue overflowed into the kernel's backlog. Those
    /// completions are not lost (the next `io_uring_enter` brings them back), but a ring that
    /// overflows often is too small for its load.
    pub fn cq_overflows(&self) -> u64 {
        self.inner.driver().gauges().queue_overflows
    }

    /// How many buffers of the provided-buffer ring the kernel can pick from right now
    /// (`None` without a ring). Buffers out of the ring are held by `ProvidedBuf`s or queued
    /// for a stream that has not read them yet.
    pub fn ring_buffers_available(&self) -> Option<u32> {
        self.inner.driver().buf_ring().map(|ring| ring.available())
    }

    /// Which backend performs this runtime's I/O.
    pub fn backend(&self) -> Backend {
        self.inner.driver().backend()
    }

    /// Threads the aio backend uses right now: glibc requests in progress (each holds a glibc
    /// helper thread) and this runtime's own accept/connect helpers. `None` on io_uring, which
    /// uses no threads.
    pub fn aio_threads_in_use(&self) -> Option<(usize, usize)> {
        self.inner.driver().gauges().threads
    }

    /// The simulated kernel of a runtime built with [`Builder::sim`] (`None` otherwise): what it
    /// checked, and its trace hash. The handle outlives the runtime.
    #[cfg(feature = "sim")]
    pub fn sim(&self) -> Option<crate::sim::Sim> {
        self.inner.driver().sim().cloned().map(crate::sim::Sim::new)
    }

    /// How many operations are in flight (submitted, CQE not yet reaped), including those
    /// whose futures were dropped and that wait for their cancellation to complete.
    pub fn ops_in_flight(&self) -> usize {
        self.inner.driver().in_flight()
    }
}

/// Configures and builds a [`Runtime`].
///
/// ```
/// let rt = proactor::Builder::new().ring_entries(256).task_budget(64).build().unwrap();
/// assert_eq!(rt.block_on(async { 6 * 7 }), 42);
/// ```
#[derive(Debug)]
pub struct Builder {
    driver: Config,
    config: executor::Config,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// The defaults: [`Backend::Auto`] (io_uring, or epoll where io_uring cannot be set up), a
    /// ring of 1024 SQEs (the CQ is twice that), no SQPOLL thread, a budget of 128 operations
    /// per task poll, and the backend turned after every 61 task polls.
    ///
    /// Why `Auto` by default: a program written for this crate should run wherever Linux runs,
    /// and io_uring is often not there (Docker's default seccomp profile blocks it, hardened
    /// kernels set `kernel.io_uring_disabled`). The same program then runs on the epoll
    /// emulation, with the same API and semantics, slower by the syscalls io_uring would have
    /// batched, and says so in one line on stderr; [`Runtime::backend`] tells the program which
    /// one it got. Ask for [`Backend::IoUring`] to fail instead, as a benchmark of io_uring
    /// should (`echo-lab serve --runtime uring` does).
    pub fn new() -> Builder {
        Builder {
            driver: Config {
                backend: Backend::Auto,
                aio_threads: 1024,
                aio_notify: AioNotify::default(),
                connection_budget: 64 << 10,
                memory_budget: 8 << 20,
                receive_limits: true,
                entries: 1024,
                sqpoll_idle: None,
                inject_setup_errno: None,
                multishot: true,
                provided_buffers: Some((128, 4096)),
                ring_memory_limit: 16 << 20,
                incremental_buffers: true,
                buffers_default: true,
                batch_wait: None,
                #[cfg(feature = "sim")]
                sim: None,
            },
            config: executor::Config::default(),
        }
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

    /// Which backend performs the I/O: [`Backend::Auto`] (the default: io_uring, else epoll),
    /// [`Backend::IoUring`], [`Backend::PosixAio`] or [`Backend::Epoll`]. The API is the same;
    /// the io_uring-only settings below are ignored by the others, and on aio a stream runs one
    /// operation at a time (see `Backend`).
    ///
    /// ```
    /// use proactor::{Backend, Builder};
    /// let rt = Builder::new().backend(Backend::PosixAio).build().unwrap();
    /// assert_eq!(rt.backend(), Backend::PosixAio);
    /// ```
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.driver.backend = backend;
        self
    }

    /// The size of glibc's aio thread pool (aio backend only), 1024 by default: how many
    /// operations may be in progress at once, which on sockets means how many connections may
    /// wait in a read (each blocks a glibc thread until data comes). Past it, operations fail
    /// at once with `EAGAIN` and a warning on stderr. glibc sizes the pool once per process, so
    /// only the first aio runtime's setting counts.
    pub fn aio_threads(mut self, n: u32) -> Builder {
        self.driver.aio_threads = n.max(1);
        self
    }

    /// How the aio backend hears that glibc finished a request (aio backend only):
    /// [`AioNotify::Suspend`] (the default: the loop waits in `aio_suspend` on all its
    /// requests), [`AioNotify::Thread`] (a new glibc thread per completion) or
    /// [`AioNotify::Signal`] (a realtime signal per completion, read through a `signalfd`; the
    /// program must block the signal in every thread, see there). glibc's threads do the I/O
    /// in each case; [`AioNotify`] has what each costs, measured.
    ///
    /// ```
    /// use proactor::{AioNotify, Backend, Builder};
    /// let rt = Builder::new().backend(Backend::PosixAio).aio_notify(AioNotify::Signal).build().unwrap();
    /// assert_eq!(rt.block_on(async { 6 * 7 }), 42);
    /// ```
    pub fn aio_notify(mut self, notify: AioNotify) -> Builder {
        self.driver.aio_notify = notify;
        self
    }

    /// The number of SQ entries (rounded up to a power of two by the kernel; the CQ gets twice
    /// as many). A full SQ is submitted and refilled, and an overflowing CQ is kept by the
    /// kernel, so a small ring is slower, never wrong.
    pub fn ring_entries(mut self, n: u32) -> Builder {
        self.driver.entries = n.max(2);
        self
    }

    /// Starts a kernel thread that polls the SQ (`IORING_SETUP_SQPOLL`), so submitting needs no
    /// syscall while it is awake; it sleeps after `idle` without work. Costs a core's worth of
    /// polling while busy.
    pub fn sqpoll(mut self, idle: Duration) -> Builder {
        self.driver.sqpoll_idle = Some(idle);
        self
    }

    /// Whether to use multishot operations (one SQE, many completions: accept since Linux
    /// 5.19) where the kernel supports them; on by default. Off, every accept is its own SQE.
    pub fn multishot(mut self, enabled: bool) -> Builder {
        self.driver.multishot = enabled;
        self
    }

    /// The provided-buffer ring that [`TcpStream::read_provided`](crate::net::TcpStream::read_provided)
    /// receives into: `count` buffers of `size` bytes at first (by default 128 of 16 KiB with
    /// [incremental consumption](Self::incremental_buffers), else 128 of 4 KiB), and
    /// `count` more each time it runs low, up to [`ring_memory_limit`](Self::ring_memory_limit);
    /// it shrinks back when load falls. `count == 0` means no ring (`read_provided` then reads
    /// into a new buffer each time).
    pub fn provided_buffers(mut self, count: u16, size: u32) -> Builder {
        self.driver.provided_buffers = (count > 0 && size > 0).then_some((count, size));
        self.driver.buffers_default = false;
        self
    }

    /// Whether the kernel may fill each ring buffer piece by piece (`IOU_PBUF_RING_INC`,
    /// Linux 6.12; on by default, and ignored by older kernels). Then one buffer holds many
    /// small messages, or a large one arrives in a few large pieces instead of many small
    /// buffers: the default ring becomes 128 buffers of 16 KiB (growing by as much), instead
    /// of 128 of 4 KiB. Off, each receive takes a whole buffer.
    pub fn incremental_buffers(mut self, enabled: bool) -> Builder {
        self.driver.incremental_buffers = enabled;
        self
    }

    /// The most bytes the runtime holds for one connection (64 KiB by default, about a socket
    /// buffer): received and not yet taken by its task, and its send behind in flight. A
    /// stream's receive ends once it brought that much (minus its send behind, but at least 4
    /// KiB: a stream never waits for its own send to be over), and is armed
    /// again when the task reads, so a peer whose task does not read is held back by TCP's flow
    /// control, as with readiness. At least 4 KiB.
    pub fn connection_budget(mut self, bytes: usize) -> Builder {
        self.driver.connection_budget = (bytes as u64).max(4096);
        self
    }

    /// The most bytes the runtime holds for all connections together (8 MiB by default).
    /// Past it, a stream that holds something waits before it receives again, first come
    /// first served, while a stream that holds nothing may still receive a read's worth
    /// (16 KiB): quiet and new connections are served whatever the others hold, and each can
    /// add at most about twice that past the budget. The provided-buffer ring, where received
    /// bytes land first, is bounded on its own ([`ring_memory_limit`](Self::ring_memory_limit)):
    /// what a server holds is at most the two together, plus that little per connection.
    pub fn memory_budget(mut self, bytes: usize) -> Builder {
        self.driver.memory_budget = bytes as u64;
        self
    }

    /// The most memory the provided-buffer ring may grow to under load (16 MiB by default; at
    /// most 32768 buffers). Past it, receives wait for a buffer to come back, in arrival order.
    pub fn ring_memory_limit(mut self, bytes: usize) -> Builder {
        self.driver.ring_memory_limit = bytes;
        self
    }

    /// Lets each wait for completions gather more of them: it returns with the first
    /// completion only once `min_wait` has passed (or when 64 are in), instead of at once.
    /// Under load this cuts the `io_uring_enter` calls per operation; it adds up to `min_wait`
    /// of latency to a lone request. Needs Linux 6.12 (ignored before). Off by default.
    pub fn batch_wait(mut self, min_wait: Duration) -> Builder {
        self.driver.batch_wait = Some(min_wait);
        self
    }

    /// A testing hook: have io_uring receive as on a kernel that cannot end a receive at a byte
    /// limit (before Linux 6.17), where the driver stops a receive that used up its allowance
    /// itself (see [`connection_budget`](Self::connection_budget)).
    #[doc(hidden)]
    pub fn kernel_receive_limits(mut self, enabled: bool) -> Builder {
        self.driver.receive_limits = enabled;
        self
    }

    /// A testing hook: make io_uring's set-up fail as if `io_uring_setup` had failed with
    /// `errno` (`ENOSYS` without io_uring, `EPERM` when it is disabled or blocked by seccomp):
    /// `build` then fails on [`Backend::IoUring`], and falls back to epoll on [`Backend::Auto`].
    #[doc(hidden)]
    pub fn inject_setup_error(mut self, errno: i32) -> Builder {
        self.driver.inject_setup_errno = Some(errno);
        self
    }

    /// Runs on a simulated kernel ([`Backend::Sim`]): a model that behaves like one of the real
    /// backends and injects faults, every choice drawn from `config`'s seed, on a virtual
    /// clock. For tests; see [`sim`](crate::sim).
    #[cfg(feature = "sim")]
    pub fn sim(mut self, config: crate::sim::SimConfig) -> Builder {
        self.driver.backend = Backend::Sim;
        self.driver.sim = Some(config);
        self
    }

    /// Sets up the backend. When io_uring is unavailable (missing, disabled, blocked by seccomp,
    /// out of locked memory), [`Backend::Auto`] falls back to epoll and prints that sentence on
    /// stderr; [`Backend::IoUring`] fails with it.
    pub fn build(self) -> io::Result<Runtime> {
        let driver = Driver::new(&self.driver)?;
        Ok(Runtime { inner: executor::Runtime::new(driver, self.config, executor::slab_capacity()) })
    }
}

/// Runs `future` to completion on a new [`Runtime`] with default settings, then drops the
/// runtime (and with it every task still running).
///
/// # Panics
/// When the runtime cannot be created (io_uring unavailable: see [`Builder::build`] for a
/// fallible way), when called inside a runtime, or when `future` panics.
#[track_caller]
pub fn block_on<F: Future>(future: F) -> F::Output {
    match Runtime::new() {
        Ok(runtime) => runtime.block_on(future),
        Err(e) => panic!("proactor: cannot create the runtime: {e}"),
    }
}

/// A snapshot of the counters of the runtime(s) running on this thread (a runtime runs on one
/// thread; see [`Stats`](crate::Stats) for what each counter means). Inside a runtime, the
/// gauges (`in_flight`, `held_bytes`, `held_peak`, `streams_waiting`, `ring_buffers`,
/// `aio_threads_in_use`) are that runtime's.
pub fn stats() -> crate::stats::Stats {
    let mut stats = crate::stats::counters();
    executor::with_driver(|driver: &std::rc::Rc<Driver>| {
        stats.in_flight = driver.in_flight() as u64;
        let (held, peak, waiting) = driver.held();
        (stats.held_bytes, stats.held_peak, stats.streams_waiting) = (held, peak, waiting as u64);
        stats.ring_buffers = driver.buf_ring().map(|ring| (ring.available(), ring.capacity()));
        stats.aio_threads_in_use = driver.gauges().threads;
    });
    stats
}
