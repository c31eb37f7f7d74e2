//! Counters of the runtime's own work, and (with the `trace` cargo feature) a step-by-step
//! trace of it in plain words.
//!
//! The counters are plain integers (`Cell<u64>`) of the thread the runtime runs on, bumped
//! where the work happens: the syscalls in `sys`, the events in `driver`; the loop's own
//! (turns, polls, timers, set-up syscalls) are the shared executor's
//! ([`executor::stats::LoopStats`]). They cost an add each and no lock. [`stats`] takes a
//! snapshot of both; [`Stats::since`] turns two snapshots into the work done in between.
//!
//! The trace (cargo feature `trace`) is the executor's: the driver adds its steps to it.

use std::cell::Cell;

macro_rules! counters {
    ($( $(#[doc = $doc:literal])+ $name:ident, )+) => {
        /// A snapshot of this thread's runtime counters (see [`stats`]). Counters only grow;
        /// subtract two snapshots with [`Stats::since`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            /// Loop turns: times the executor looked for I/O (one `epoll_wait` each).
            pub turns: u64,
            /// `epoll_wait` calls that could sleep (no task was runnable).
            pub waits_blocking: u64,
            /// `epoll_wait` calls with a zero timeout (tasks were runnable: events only collected).
            pub waits_nonblocking: u64,
            /// Task polls (the `block_on` future's included).
            pub tasks_polled: u64,
            /// Tasks woken from another thread (taken from the remote queue).
            pub remote_wakeups: u64,
            /// Timers that expired and woke their task.
            pub timers_fired: u64,
            $( $(#[doc = $doc])+ pub $name: u64, )+
            /// The most events one `epoll_wait` returned (over the whole run, not a difference).
            pub max_events: u64,
        }

        pub(crate) struct Counters {
            $( pub(crate) $name: Cell<u64>, )+
            pub(crate) max_events: Cell<u64>,
        }

        impl Counters {
            const fn new() -> Counters {
                Counters { $( $name: Cell::new(0), )+ max_events: Cell::new(0) }
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
                    max_events: self.max_events.get(),
                };
                stats.sys_other += shared.sys_setup;
                stats
            }
        }

        impl Stats {
            /// The work done between `earlier` and `self` (`max_events` stays `self`'s).
            pub fn since(&self, earlier: &Stats) -> Stats {
                Stats {
                    turns: self.turns.wrapping_sub(earlier.turns),
                    waits_blocking: self.waits_blocking.wrapping_sub(earlier.waits_blocking),
                    waits_nonblocking: self.waits_nonblocking.wrapping_sub(earlier.waits_nonblocking),
                    tasks_polled: self.tasks_polled.wrapping_sub(earlier.tasks_polled),
                    remote_wakeups: self.remote_wakeups.wrapping_sub(earlier.remote_wakeups),
                    timers_fired: self.timers_fired.wrapping_sub(earlier.timers_fired),
                    $( $name: self.$name.wrapping_sub(earlier.$name), )+
                    max_events: self.max_events,
                }
            }
        }
    };
}

counters! {
    /// Events the waits returned (the notifier's included).
    events,
    /// `epoll_wait` syscalls.
    sys_epoll_wait,
    /// `epoll_ctl` syscalls (registering and removing sockets; edge-triggered, so never per
    /// message).
    sys_epoll_ctl,
    /// `read` syscalls on sockets.
    sys_read,
    /// `send` syscalls on sockets.
    sys_write,
    /// `accept4` syscalls.
    sys_accept,
    /// Reads and writes that found nothing to do (`EAGAIN`): the price of readiness being a
    /// hint. A short read clears readiness without one.
    would_block,
    /// Other syscalls: socket set-up (`socket`, `bind`, `listen`, `connect`, options),
    /// `shutdown`, `close`, the eventfd.
    sys_other,
}

impl Stats {
    /// All syscalls counted.
    pub fn syscalls(&self) -> u64 {
        self.sys_epoll_wait
            + self.sys_epoll_ctl
            + self.sys_read
            + self.sys_write
            + self.sys_accept
            + self.sys_other
    }

    /// One compact line of rates, for the work in `self` (a [`since`](Self::since)
    /// difference) over `secs` seconds.
    pub fn rates_line(&self, secs: f64) -> String {
        let rate = |n: u64| executor::stats::per_sec(n, secs);
        let per_wait =
            if self.sys_epoll_wait == 0 { 0.0 } else { self.events as f64 / self.sys_epoll_wait as f64 };
        format!(
            "turns {} (blocking {}) · events/wait {per_wait:.1} (max {}) · polls {} · remote {} · timers {} · \
             syscalls {}: read {} write {} epoll_wait {} epoll_ctl {} accept {} other {} · EAGAIN {}",
            rate(self.turns),
            rate(self.waits_blocking),
            self.max_events,
            rate(self.tasks_polled),
            rate(self.remote_wakeups),
            rate(self.timers_fired),
            rate(self.syscalls()),
            rate(self.sys_read),
            rate(self.sys_write),
            rate(self.sys_epoll_wait),
            rate(self.sys_epoll_ctl),
            rate(self.sys_accept),
            rate(self.sys_other),
            rate(self.would_block),
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

/// Records the size of one wait's batch of events.
pub(crate) fn wait_returned(events: usize) {
    let _ = COUNTERS.try_with(|c| {
        c.events.set(c.events.get() + events as u64);
        c.max_events.set(c.max_events.get().max(events as u64));
    });
}

/// A snapshot of the counters of the runtime(s) running on this thread (a runtime runs on one
/// thread; see [`Stats`] for what each counter means).
pub fn stats() -> Stats {
    COUNTERS.with(Counters::snapshot)
}

/// How the trace names registration `index` ("fd 7").
#[cfg_attr(not(feature = "trace"), allow(dead_code))]
pub(crate) fn trace_fd(index: u32) -> String {
    #[cfg(feature = "trace")]
    return executor::trace::fd_of(index);
    #[cfg(not(feature = "trace"))]
    format!("registration {index}")
}

pub(crate) use executor::trace_step;
