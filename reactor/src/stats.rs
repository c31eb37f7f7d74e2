//! Counters of the runtime's own work, and (with the `trace` cargo feature) a step-by-step
//! trace of it in plain words.
//!
//! The counters are plain integers (`Cell<u64>`) of the thread the runtime runs on, bumped
//! where the work happens: the syscalls in `sys`, the waits in `driver`, the polls in
//! `executor`, the timers in `time`. They cost an add each and no lock. [`stats`] takes a
//! snapshot; [`Stats::since`] turns two snapshots into the work done in between.
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
                Stats { $( $name: self.$name.get(), )+ max_events: self.max_events.get() }
            }
        }

        impl Stats {
            /// The work done between `earlier` and `self` (`max_events` stays `self`'s).
            pub fn since(&self, earlier: &Stats) -> Stats {
                Stats { $( $name: self.$name.wrapping_sub(earlier.$name), )+ max_events: self.max_events }
            }
        }
    };
}

counters! {
    /// Loop turns: times the executor looked for I/O (one `epoll_wait` each).
    turns,
    /// `epoll_wait` calls that could sleep (no task was runnable).
    waits_blocking,
    /// `epoll_wait` calls with a zero timeout (tasks were runnable: events only collected).
    waits_nonblocking,
    /// Events the waits returned (the notifier's included).
    events,
    /// Task polls (the `block_on` future's included).
    tasks_polled,
    /// Tasks woken from another thread (taken from the remote queue).
    remote_wakeups,
    /// Timers that expired and woke their task.
    timers_fired,
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
        let rate = |n: u64| per_sec(n, secs);
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

/// `n` over `secs` as a short rate ("12.3k/s").
fn per_sec(n: u64, secs: f64) -> String {
    let r = if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if r >= 10_000.0 {
        format!("{:.0}k/s", r / 1000.0)
    } else if r >= 1000.0 {
        format!("{:.1}k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
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
    return trace::fd_of(index);
    #[cfg(not(feature = "trace"))]
    format!("registration {index}")
}

/// Records a step of the trace (with the `trace` feature, and once tracing is on).
macro_rules! trace_step {
    ($($arg:tt)*) => {{
        #[cfg(feature = "trace")]
        {
            if $crate::stats::trace::on() {
                $crate::stats::trace::step(format!($($arg)*));
            }
        }
        #[cfg(not(feature = "trace"))]
        {
            // Type-checks the arguments (so they count as used) and compiles to nothing.
            let _ = || format!($($arg)*);
        }
    }};
}
pub(crate) use trace_step;

/// The step-by-step trace (cargo feature `trace`): what the runtime does, in plain words, in
/// the order it does it. For learning, not for production: every step is a formatted string.
#[cfg(feature = "trace")]
pub mod trace {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static ON: AtomicBool = AtomicBool::new(false);
    static STEPS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    /// The fd of each registration, while tracing (the driver itself keeps no fd).
    static FDS: Mutex<Option<HashMap<u32, i32>>> = Mutex::new(None);

    /// Starts recording, in every runtime of the process.
    pub fn start() {
        ON.store(true, Ordering::Release);
    }

    /// Stops recording.
    pub fn stop() {
        ON.store(false, Ordering::Release);
    }

    /// Takes the steps recorded so far.
    pub fn take() -> Vec<String> {
        std::mem::take(&mut *STEPS.lock().unwrap_or_else(|p| p.into_inner()))
    }

    #[doc(hidden)]
    pub fn on() -> bool {
        ON.load(Ordering::Relaxed)
    }

    pub(crate) fn step(step: String) {
        STEPS.lock().unwrap_or_else(|p| p.into_inner()).push(step);
    }

    pub(crate) fn note_fd(registration: u32, fd: i32) {
        FDS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(registration, fd);
    }

    pub(crate) fn fd_of(registration: u32) -> String {
        let fds = FDS.lock().unwrap_or_else(|p| p.into_inner());
        match fds.as_ref().and_then(|fds| fds.get(&registration)) {
            Some(fd) => format!("fd {fd}"),
            None => format!("registration {registration}"),
        }
    }
}
