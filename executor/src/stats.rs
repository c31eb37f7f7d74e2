//! Counters of the loop's own work (the step-by-step trace is [`trace`](crate::trace)'s).
//!
//! The counters are plain integers (`Cell<u64>`) of the thread the loop runs on, bumped where
//! the work happens: the turns and polls in `executor`, the timers in the loop's park, the
//! set-up syscalls in `sys`. They cost an add each and no lock. Each runtime adds the counters
//! of its driver and exposes both as one `Stats` snapshot (`reactor::stats()`,
//! `proactor::stats()`).

use std::cell::Cell;

/// A snapshot of this thread's loop counters (see [`loop_stats`]). Counters only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// Loop turns: times the loop parked the driver.
    pub turns: u64,
    /// Parks that could sleep (no task was runnable).
    pub waits_blocking: u64,
    /// Parks with a zero timeout (tasks were runnable: I/O only collected).
    pub waits_nonblocking: u64,
    /// Task polls (the `block_on` future's included).
    pub tasks_polled: u64,
    /// Tasks woken from another thread (taken from the remote queue).
    pub remote_wakeups: u64,
    /// Timers that expired and woke their task.
    pub timers_fired: u64,
    /// Syscalls of the shared set-up layer ([`sys`](crate::sys)): sockets, options, `bind`,
    /// `listen`, `shutdown`, the eventfd.
    pub sys_setup: u64,
}

pub(crate) struct Counters {
    pub(crate) turns: Cell<u64>,
    pub(crate) waits_blocking: Cell<u64>,
    pub(crate) waits_nonblocking: Cell<u64>,
    pub(crate) tasks_polled: Cell<u64>,
    pub(crate) remote_wakeups: Cell<u64>,
    pub(crate) timers_fired: Cell<u64>,
    pub(crate) sys_setup: Cell<u64>,
}

thread_local! {
    static COUNTERS: Counters = const {
        Counters {
            turns: Cell::new(0),
            waits_blocking: Cell::new(0),
            waits_nonblocking: Cell::new(0),
            tasks_polled: Cell::new(0),
            remote_wakeups: Cell::new(0),
            timers_fired: Cell::new(0),
            sys_setup: Cell::new(0),
        }
    };
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

/// A snapshot of the loop counters of this thread.
pub fn loop_stats() -> LoopStats {
    COUNTERS
        .try_with(|c| LoopStats {
            turns: c.turns.get(),
            waits_blocking: c.waits_blocking.get(),
            waits_nonblocking: c.waits_nonblocking.get(),
            tasks_polled: c.tasks_polled.get(),
            remote_wakeups: c.remote_wakeups.get(),
            timers_fired: c.timers_fired.get(),
            sys_setup: c.sys_setup.get(),
        })
        .unwrap_or_default()
}

/// Declares a runtime's counters: its `Stats` snapshot type (the loop's counters, then the
/// driver's), the thread-local `Counters` its driver bumps, and the functions around them:
/// `bump` and `add` (one counter), `batch` (a park's batch size and the largest batch), and
/// `snapshot`.
///
/// ```ignore
/// executor::counters! {
///     counters {
///         /// Events the waits returned.
///         events,
///         /// Other syscalls (the shared set-up syscalls are added to it).
///         sys_other,
///     }
///     batch events, max {
///         /// The most events one wait returned (over the whole run, not a difference).
///         max_events
///     }
///     gauges {}
/// }
/// ```
///
/// The counter list must contain `sys_other`: the snapshot adds the shared layer's set-up
/// syscalls ([`LoopStats::sys_setup`]) to it. Gauges are values at the time of the snapshot,
/// filled in by the runtime's `stats()` (they start as `Default::default()`).
#[macro_export]
macro_rules! counters {
    (
        counters { $( $(#[doc = $doc:literal])+ $name:ident, )+ }
        batch $batch:ident, max { $(#[doc = $max_doc:literal])+ $max:ident }
        gauges { $( $(#[doc = $gauge_doc:literal])+ $gauge:ident: $gauge_ty:ty, )* }
    ) => {
        /// A snapshot of this thread's runtime counters (see [`stats`]). Counters only grow;
        /// subtract two snapshots with [`Stats::since`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            /// Loop turns: times the executor parked the driver to look for I/O.
            pub turns: u64,
            /// Parks that could sleep (no task was runnable).
            pub waits_blocking: u64,
            /// Parks with a zero timeout (tasks were runnable: I/O only collected).
            pub waits_nonblocking: u64,
            /// Task polls (the `block_on` future's included).
            pub tasks_polled: u64,
            /// Tasks woken from another thread (taken from the remote queue).
            pub remote_wakeups: u64,
            /// Timers that expired and woke their task.
            pub timers_fired: u64,
            $( $(#[doc = $doc])+ pub $name: u64, )+
            $(#[doc = $max_doc])+
            pub $max: u64,
            $( $(#[doc = $gauge_doc])+ pub $gauge: $gauge_ty, )*
        }

        /// The driver's counters, bumped where the work happens.
        pub(crate) struct Counters {
            $( pub(crate) $name: ::std::cell::Cell<u64>, )+
            pub(crate) $max: ::std::cell::Cell<u64>,
        }

        impl Counters {
            const fn new() -> Counters {
                Counters { $( $name: ::std::cell::Cell::new(0), )+ $max: ::std::cell::Cell::new(0) }
            }

            fn snapshot(&self) -> Stats {
                let shared = $crate::stats::loop_stats();
                let mut stats = Stats {
                    turns: shared.turns,
                    waits_blocking: shared.waits_blocking,
                    waits_nonblocking: shared.waits_nonblocking,
                    tasks_polled: shared.tasks_polled,
                    remote_wakeups: shared.remote_wakeups,
                    timers_fired: shared.timers_fired,
                    $( $name: self.$name.get(), )+
                    $max: self.$max.get(),
                    $( $gauge: Default::default(), )*
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

        thread_local! {
            static COUNTERS: Counters = const { Counters::new() };
        }

        /// Adds 1 to the counter `field` picks.
        pub(crate) fn bump(field: fn(&Counters) -> &::std::cell::Cell<u64>) {
            add(field, 1);
        }

        /// Adds `n` to the counter `field` picks.
        pub(crate) fn add(field: fn(&Counters) -> &::std::cell::Cell<u64>, n: u64) {
            // try_with: a socket closed while the thread exits still counts its syscall safely.
            let _ = COUNTERS.try_with(|c| {
                let cell = field(c);
                cell.set(cell.get().wrapping_add(n));
            });
        }

        /// Records the size of one park's batch (of events or completions).
        pub(crate) fn batch(n: usize) {
            let _ = COUNTERS.try_with(|c| {
                c.$batch.set(c.$batch.get() + n as u64);
                c.$max.set(c.$max.get().max(n as u64));
            });
        }

        /// This thread's counters (the gauges left at their defaults).
        fn snapshot() -> Stats {
            COUNTERS.try_with(Counters::snapshot).unwrap_or_default()
        }
    };
}

/// `n` over `secs` as a short rate ("12.3k/s"), for the runtimes' one-line summaries.
pub fn per_sec(n: u64, secs: f64) -> String {
    let r = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if r >= 10_000.0 {
        format!("{:.0}k/s", r / 1000.0)
    } else if r >= 1000.0 {
        format!("{:.1}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}
