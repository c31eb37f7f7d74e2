//! Counters of the runtime's own work (the step-by-step trace's vocabulary is
//! [`crate::trace`]'s).
//!
//! The counters are plain integers (`Cell<u64>`) of the thread the runtime runs on, bumped
//! where the work happens: the backends (`uring`, `aio`, `epoll`) count their syscalls and requests,
//! `driver` the completions; the loop's own (turns, polls, timers, set-up syscalls) are the
//! shared executor's ([`executor::stats::LoopStats`]). They cost an add each and no lock. [`stats`](crate::stats()) takes a snapshot; [`Stats::since`] turns two
//! snapshots into the work done in between. Syscalls made by glibc's aio threads are not this
//! thread's and are not counted (the aio counters count their requests instead).
//!
//! The trace hooks (`trace_step!`) compile to nothing without the `trace` feature; with it,
//! each is one check of a flag until `trace::start()` turns tracing on.

executor::counters! {
    counters {
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
    /// Bytes the receives brought (`recv_bytes / recvs` is the bytes per receive completion).
    recv_bytes,
    /// Multishot receives that ended because the provided-buffer ring was empty (`ENOBUFS`).
    recv_enobufs,
    /// Multishot receives armed again after one ended (`ENOBUFS`, a full queue, the kernel).
    recv_rearms,
    /// Received chunks copied out of a ring buffer because nobody was reading the stream when
    /// they came, with the ring at its limit and nearly dry (the ring buffer went straight
    /// back; the bytes are still held for the connection).
    recv_spilled,
    /// Receives cancelled after their bytes or datagram had come (a `timeout` around a read
    /// that lost the race): what they received was kept for the next receive of the stream or
    /// socket (TCP `read`, UDP `recv_from` and `recv`).
    recvs_kept,
    /// Stream receives that used up their allowance (see `Builder::connection_budget`): ended
    /// by the kernel at the limit, or stopped by the driver where the kernel cannot.
    recv_limited,
    /// Times a stream had to wait before it could receive again: its own send behind held its
    /// connection's budget, or the memory budget was taken (see `Builder::memory_budget`).
    recv_paused,
    /// Sends of a ring buffer that found the peer's window full and continued from a copy,
    /// giving the ring buffer back.
    sends_detached,
    /// Sends behind queued (`TcpStream::write_all_behind`): the driver finishes each itself.
    sends_behind,
    /// Sends behind the driver finished without waking anybody: complete, and no call of the
    /// stream waiting for them (a dropped stream's count too). Ideally every send behind.
    sends_quiet,
    /// `SEND`s the driver submitted again for the rest of a short send behind (or one whose
    /// first try, without waiting, found the peer's window full).
    sends_continued,
    /// Datagrams the kernel dropped on this thread's UDP sockets because their receive buffer
    /// was full: each socket's count (`SO_MEMINFO`), read when [`stats`](crate::stats()) is
    /// called (one `getsockopt` per UDP socket, not counted here) and when a socket is dropped.
    datagrams_dropped,
    /// Chunks of buffers the provided-buffer ring grew by under pressure.
    ring_grown,
    /// Chunks it freed again once the load fell.
    ring_shrunk,
    /// io_uring: `io_uring_enter` syscalls (submitting, waiting, or both at once). With SQPOLL,
    /// submitting while the kernel's SQ thread is awake needs no syscall, but is counted.
    sys_io_uring_enter,
    /// io_uring: SQEs queued (operations, cancels, closes, timeouts, the notifier's poll).
    sqes,
    /// io_uring: cancel requests (`IORING_OP_ASYNC_CANCEL`) for operations dropped early.
    cancels,
    /// io_uring: sockets put in the ring's registered-file table (once per socket, at its first
    /// receive or send; an `io_uring_register` each, also counted as other).
    files_registered,
    /// aio: requests handed to glibc (`aio_read` / `aio_write`), each run by a glibc thread.
    aio_requests,
    /// aio: accepts and connects handed to this crate's helper threads.
    aio_helper_jobs,
    /// aio: glibc requests reported over: by a notification thread (one new glibc thread each),
    /// a signal, or `aio_error` after `aio_suspend`, as the runtime's `AioNotify` says.
    aio_notifications,
    /// aio: requests refused because every glibc thread was taken.
    aio_refused,
    /// aio: the loop's waits for completions, the notifier and timers: `poll` syscalls, or
    /// `aio_suspend` calls with `AioNotify::Suspend`.
    sys_poll,
    /// epoll: `epoll_wait` syscalls of the loop (its wait for readiness, the notifier and timers).
    sys_epoll_wait,
    /// epoll: `epoll_ctl` syscalls (a socket is added once, when the backend first sees it, and
    /// removed once, when it is closed; never per operation).
    sys_epoll_ctl,
    /// epoll: the `recv` and `send` syscalls the backend performs for operations, including
    /// those that found nothing to do (its `accept4` and `connect` count as other).
    sys_epoll_io,
    /// epoll: operation syscalls that found nothing to do (`EAGAIN`); the operation waits in
    /// its queue for the next readiness event.
    would_block,
    /// Other syscalls on this thread: socket set-up, `shutdown`, eventfds, `aio_cancel`'s check
    /// of the fd, and on aio the `close` of sockets (io_uring closes them with an SQE).
    sys_other,
    }
    batch completions, max {
        /// The most completions one turn reaped (over the whole run, not a difference).
        max_completions
    }
    gauges {
        /// Operations in flight when the snapshot was taken (a gauge, not a counter).
        in_flight: u64,
        /// Bytes the runtime held for connections when the snapshot was taken: received and
        /// not yet taken by their tasks, and sends behind in flight (see
        /// `Builder::memory_budget`).
        held_bytes: u64,
        /// The most bytes it has held for connections at once.
        held_peak: u64,
        /// Streams waiting for room in the memory budget when the snapshot was taken.
        streams_waiting: u64,
        /// Free and total buffers of the provided-buffer ring when the snapshot was taken
        /// (io_uring with a ring only).
        ring_buffers: Option<(u32, u32)>,
        /// Threads the aio backend uses when the snapshot was taken: requests in glibc (each
        /// holds a glibc helper thread) and this runtime's own accept/connect helpers, as
        /// [`Runtime::aio_threads_in_use`](crate::Runtime::aio_threads_in_use) says (aio only).
        aio_threads_in_use: Option<(usize, usize)>,
    }
}

impl Stats {
    /// All syscalls counted on the runtime's thread.
    pub fn syscalls(&self) -> u64 {
        self.sys_io_uring_enter
            + self.sys_poll
            + self.sys_epoll_wait
            + self.sys_epoll_ctl
            + self.sys_epoll_io
            + self.sys_other
    }

    /// One compact line of rates, for the work in `self` (a [`since`](Self::since)
    /// difference) over `secs` seconds.
    pub fn rates_line(&self, secs: f64) -> String {
        let rate = |n: u64| executor::stats::per_sec(n, secs);
        let per_wait = if self.turns == 0 { 0.0 } else { self.completions as f64 / self.turns as f64 };
        let backend = if self.sys_epoll_wait > 0 {
            format!(
                "epoll_wait {} · recv+send {} (EAGAIN {}) · epoll_ctl {}",
                rate(self.sys_epoll_wait),
                rate(self.sys_epoll_io),
                rate(self.would_block),
                rate(self.sys_epoll_ctl)
            )
        } else if self.aio_requests + self.aio_helper_jobs > 0 {
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
             timers {} · recv {} send {} accept {}{}{} · syscalls {}: {backend} other {} · in flight {} · \
             held {} (peak {}) · receives limited {} paused {} · waiting {}{}",
            rate(self.turns),
            rate(self.waits_blocking),
            self.max_completions,
            rate(self.tasks_polled),
            rate(self.remote_wakeups),
            rate(self.timers_fired),
            rate(self.recvs),
            rate(self.sends),
            rate(self.accepts),
            dropped(self.datagrams_dropped),
            if self.sends_behind == 0 {
                String::new()
            } else {
                format!(
                    " · sends behind {} (quiet {}, continued {})",
                    rate(self.sends_behind),
                    rate(self.sends_quiet),
                    rate(self.sends_continued)
                )
            },
            rate(self.syscalls()),
            rate(self.sys_other),
            self.in_flight,
            bytes(self.held_bytes),
            bytes(self.held_peak),
            rate(self.recv_limited),
            rate(self.recv_paused),
            self.streams_waiting,
            match self.ring_buffers {
                Some((free, total)) => format!(
                    " · ring buffers free {free}/{total} (grew {} shrank {}) · B/recv {:.0} · ENOBUFS {} \
                     re-arms {} spilled {} sends detached {}",
                    self.ring_grown,
                    self.ring_shrunk,
                    if self.recvs == 0 { 0.0 } else { self.recv_bytes as f64 / self.recvs as f64 },
                    rate(self.recv_enobufs),
                    rate(self.recv_rearms),
                    rate(self.recv_spilled),
                    rate(self.sends_detached),
                ),
                None => String::new(),
            },
        )
    }
}

/// The datagrams the kernel dropped, if any: a count, not a rate (each one is news).
pub(crate) fn dropped(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" · UDP datagrams dropped {n} (the socket's receive buffer was full)")
    }
}

/// `n` bytes, short ("12.3 MiB").
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} B"),
    }
}

/// This thread's counters, the gauges left at their defaults (`stats()` fills them in).
pub(crate) fn counters() -> Stats {
    add(|c| &c.datagrams_dropped, DROPS.with(executor::net::DropLedger::take_new));
    snapshot()
}

thread_local! {
    /// The thread's UDP sockets, whose kernel drop counts `counters()` reads.
    static DROPS: executor::net::DropLedger = const { executor::net::DropLedger::new() };
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

pub(crate) use executor::trace_step;
