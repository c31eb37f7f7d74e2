//! Counters of the runtime's own work, and (with the `trace` cargo feature) a step-by-step
//! trace of it in plain words.
//!
//! The counters are plain integers (`Cell<u64>`) of the thread the runtime runs on, bumped
//! where the work happens: the backends (`uring`, `aio`) count their syscalls and requests,
//! `driver` the completions; the loop's own (turns, polls, timers, set-up syscalls) are the
//! shared executor's ([`executor::stats::LoopStats`]). They cost an add each and no lock. [`stats`] takes a snapshot; [`Stats::since`] turns two
//! snapshots into the work done in between. Syscalls made by glibc's aio threads are not this
//! thread's and are not counted (the aio counters count their requests instead).
//!
//! The trace hooks compile to nothing without the `trace` feature; with it, each is one check
//! of a flag until `trace::start()` turns tracing on.

use std::cell::Cell;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// A snapshot of this thread's runtime counters (see [`stats`]). Counters only grow;
        /// subtract two snapshots with [`Stats::since`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            /// Loop turns: times the executor looked for completions.
            pub turns: u64,
            /// Turns that could sleep (no task was runnable).
            pub waits_blocking: u64,
            /// Turns with a zero timeout (tasks were runnable: completions only collected).
            pub waits_nonblocking: u64,
            /// Task polls (the `block_on` future's included).
            pub tasks_polled: u64,
            /// Tasks woken from another thread (taken from the remote queue).
            pub remote_wakeups: u64,
            /// Timers that expired and woke their task.
            pub timers_fired: u64,
            $( $(#[doc = $doc])+ pub $name: u64, )+
            /// The most completions one turn reaped (over the whole run, not a difference).
            pub max_completions: u64,
            /// Operations in flight when the snapshot was taken (a gauge, not a counter).
            pub in_flight: u64,
            /// Free and total buffers of the provided-buffer ring when the snapshot was taken
            /// (io_uring with a ring only).
            pub ring_buffers: Option<(u32, u32)>,
        }

        pub(crate) struct Counters {
            $( pub(crate) $name: Cell<u64>, )+
            pub(crate) max_completions: Cell<u64>,
        }

        impl Counters {
            const fn new() -> Counters {
                Counters { $( $name: Cell::new(0), )+ max_completions: Cell::new(0) }
            }

            fn snapshot(&self) -> Stats {
                let shared = executor::stats::loop_stats();
                let mut stats = Stats {
                    turns: shared.turns,
                    waits_blocking: shared.waits_blocking,
                    waits_nonblocking: shared.waits_nonblocking,
                    tasks_polled: shared.tasks_polled,
                    remote_wakeups: shared.remote_wakeups,
                    timers_fired: shared.timers_fired,
                    $( $name: self.$name.get(), )+
                    max_completions: self.max_completions.get(),
                    in_flight: 0,
                    ring_buffers: None,
                };
                stats.sys_other += shared.sys_setup;
                stats
            }
        }

        impl Stats {
            /// The work done between `earlier` and `self` (the maximum and the gauges stay
            /// `self`'s).
            pub fn since(&self, earlier: &Stats) -> Stats {
                Stats {
                    turns: self.turns.wrapping_sub(earlier.turns),
                    waits_blocking: self.waits_blocking.wrapping_sub(earlier.waits_blocking),
                    waits_nonblocking: self.waits_nonblocking.wrapping_sub(earlier.waits_nonblocking),
                    tasks_polled: self.tasks_polled.wrapping_sub(earlier.tasks_polled),
                    remote_wakeups: self.remote_wakeups.wrapping_sub(earlier.remote_wakeups),
                    timers_fired: self.timers_fired.wrapping_sub(earlier.timers_fired),
                    $( $name: self.$name.wrapping_sub(earlier.$name), )+
                    ..*self
                }
            }
        }
    };
}

counters! {
    /// Completions reaped (CQEs on io_uring, finished requests on aio).
    completions,
    /// Accepts completed (each connection of a multishot accept counts).
    accepts,
    /// Connects completed.
    connects,
    /// Receives completed (each CQE of a multishot receive counts; on aio, each `aio_read`).
    recvs,
    /// Sends completed (on aio, each `aio_write`).
    sends,
    /// io_uring: `io_uring_enter` syscalls (submitting, waiting, or both at once). With SQPOLL,
    /// submitting while the kernel's SQ thread is awake needs no syscall, but is counted.
    sys_io_uring_enter,
    /// io_uring: SQEs queued (operations, cancels, closes, timeouts, the notifier's poll).
    sqes,
    /// io_uring: cancel requests (`IORING_OP_ASYNC_CANCEL`) for operations dropped early.
    cancels,
    /// aio: requests handed to glibc (`aio_read` / `aio_write`), each run by a glibc thread.
    aio_requests,
    /// aio: accepts and connects handed to this crate's helper threads.
    aio_helper_jobs,
    /// aio: glibc notifications received (one new glibc thread each).
    aio_notifications,
    /// aio: requests refused because every glibc thread was taken.
    aio_refused,
    /// aio: `poll` syscalls of the loop (its wait for completions, the notifier and timers).
    sys_poll,
    /// Other syscalls on this thread: socket set-up, `shutdown`, eventfds, `aio_cancel`'s check
    /// of the fd, and on aio the `close` of sockets (io_uring closes them with an SQE).
    sys_other,
}

impl Stats {
    /// All syscalls counted on the runtime's thread.
    pub fn syscalls(&self) -> u64 {
        self.sys_io_uring_enter + self.sys_poll + self.sys_other
    }

    /// One compact line of rates, for the work in `self` (a [`since`](Self::since)
    /// difference) over `secs` seconds.
    pub fn rates_line(&self, secs: f64) -> String {
        let rate = |n: u64| executor::stats::per_sec(n, secs);
        let per_wait = if self.turns == 0 { 0.0 } else { self.completions as f64 / self.turns as f64 };
        let backend = if self.aio_requests + self.aio_helper_jobs > 0 {
            format!(
                "aio requests {} (notifications {}, helper jobs {}, refused {}) poll {}",
                rate(self.aio_requests),
                rate(self.aio_notifications),
                rate(self.aio_helper_jobs),
                rate(self.aio_refused),
                rate(self.sys_poll)
            )
        } else {
            format!(
                "io_uring_enter {} · SQEs {} · cancels {}",
                rate(self.sys_io_uring_enter),
                rate(self.sqes),
                rate(self.cancels)
            )
        };
        format!(
            "turns {} (blocking {}) · completions/turn {per_wait:.1} (max {}) · polls {} · remote {} · \
             timers {} · recv {} send {} accept {} · syscalls {}: {backend} other {} · in flight {}{}",
            rate(self.turns),
            rate(self.waits_blocking),
            self.max_completions,
            rate(self.tasks_polled),
            rate(self.remote_wakeups),
            rate(self.timers_fired),
            rate(self.recvs),
            rate(self.sends),
            rate(self.accepts),
            rate(self.syscalls()),
            rate(self.sys_other),
            self.in_flight,
            match self.ring_buffers {
                Some((free, total)) => format!(" · ring buffers free {free}/{total}"),
                None => String::new(),
            },
        )
    }
}

thread_local! {
    static COUNTERS: Counters = const { Counters::new() };
}

/// Adds 1 to the counter `field` picks.
pub(crate) fn bump(field: fn(&Counters) -> &Cell<u64>) {
    add(field, 1);
}

/// Adds `n` to the counter `field` picks.
pub(crate) fn add(field: fn(&Counters) -> &Cell<u64>, n: u64) {
    // try_with: a socket closed while the thread exits still counts its syscall safely.
    let _ = COUNTERS.try_with(|c| {
        let cell = field(c);
        cell.set(cell.get().wrapping_add(n));
    });
}

/// Records the size of one turn's batch of completions.
pub(crate) fn turn_reaped(completions: usize) {
    let _ = COUNTERS.try_with(|c| {
        c.completions.set(c.completions.get() + completions as u64);
        c.max_completions.set(c.max_completions.get().max(completions as u64));
    });
}

/// A snapshot of the counters of the runtime(s) running on this thread (a runtime runs on one
/// thread; see [`Stats`] for what each counter means). Inside a runtime, the gauges
/// (`in_flight`, `ring_buffers`) are that runtime's.
pub fn stats() -> Stats {
    let mut stats = COUNTERS.try_with(Counters::snapshot).unwrap_or_default();
    executor::with_driver(|driver: &std::rc::Rc<crate::driver::Driver>| {
        stats.in_flight = driver.in_flight() as u64;
        stats.ring_buffers = driver.buf_ring().map(|ring| (ring.available(), ring.capacity()));
    });
    stats
}

pub(crate) use executor::trace_step;
