//! Counters of the runtime's own work (the step-by-step trace's vocabulary is
//! [`crate::trace`]'s).
//!
//! The counters are plain integers (`Cell<u64>`) of the thread the runtime runs on, bumped
//! where the work happens: the syscalls in `sys`, the events in `driver`; the loop's own
//! (turns, polls, timers, set-up syscalls) are the shared executor's
//! ([`executor::stats::LoopStats`]). They cost an add each and no lock. [`stats`] takes a
//! snapshot of both; [`Stats::since`] turns two snapshots into the work done in between.

use executor::net::DropLedger;

executor::counters! {
    counters {
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
    /// Datagrams the kernel dropped on this thread's UDP sockets because their receive buffer
    /// was full: each socket's count (`SO_MEMINFO`), read when [`stats`] is called (one
    /// `getsockopt` per UDP socket, not counted here) and when a socket is dropped.
    datagrams_dropped,
    /// Other syscalls: socket set-up (`socket`, `bind`, `listen`, `connect`, options),
    /// `shutdown`, `close`, the eventfd.
    sys_other,
    }
    batch events, max {
        /// The most events one `epoll_wait` returned (over the whole run, not a difference).
        max_events
    }
    gauges {}
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
             syscalls {}: read {} write {} epoll_wait {} epoll_ctl {} accept {} other {} · EAGAIN {}{}",
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
            if self.datagrams_dropped == 0 {
                String::new()
            } else {
                format!(
                    " · UDP datagrams dropped {} (the socket's receive buffer was full)",
                    self.datagrams_dropped
                )
            },
        )
    }
}

/// A snapshot of the counters of the runtime(s) running on this thread (a runtime runs on one
/// thread; see [`Stats`] for what each counter means).
pub fn stats() -> Stats {
    add(|c| &c.datagrams_dropped, DROPS.with(DropLedger::take_new));
    snapshot()
}

thread_local! {
    /// The thread's UDP sockets, whose kernel drop counts `stats()` reads.
    static DROPS: DropLedger = const { DropLedger::new() };
}

/// Starts counting a new UDP socket's drops in `datagrams_dropped`: its key.
pub(crate) fn watch_drops(fd: std::os::fd::BorrowedFd<'_>) -> usize {
    DROPS.with(|ledger| ledger.watch(fd))
}

/// Stops counting the drops of the UDP socket of `key` (still open), adding its last ones.
pub(crate) fn forget_drops(key: usize) {
    // try_with: a socket dropped while the thread exits.
    let new = DROPS.try_with(|ledger| ledger.forget(key)).unwrap_or(0);
    add(|c| &c.datagrams_dropped, new);
}

/// Counts one read or send syscall in the counter `calls` picks and, if it said `EAGAIN`, in
/// `would_block`: one thread-local access for both, on the path of every message.
#[inline]
pub(crate) fn count_io(calls: fn(&Counters) -> &std::cell::Cell<u64>, would_block: bool) {
    let _ = COUNTERS.try_with(|c| {
        let calls = calls(c);
        calls.set(calls.get().wrapping_add(1));
        if would_block {
            c.would_block.set(c.would_block.get().wrapping_add(1));
        }
    });
}

/// Whether the step-by-step trace is recording: one relaxed load and a predictable branch with
/// the `trace` feature, a constant `false` without. Hooks whose event takes work to build
/// test it first and keep that work in a cold function.
#[inline]
pub(crate) fn tracing() -> bool {
    #[cfg(feature = "trace")]
    return executor::trace::on();
    #[cfg(not(feature = "trace"))]
    false
}

pub(crate) use executor::trace_step;
