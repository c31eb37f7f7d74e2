//! What a simulated run is made of: its [`SimConfig`] (the mode, the fault sites and their
//! rates, the kernel's sizes), all drawn from one seed by [`SimConfig::from_seed`], and the
//! seeded generator every choice of the run comes from.

use std::fmt;

/// Which real backend the simulated kernel behaves like, as the driver sees it (its
/// facts, and how operations start, finish and are cancelled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Like io_uring: requests queue in a submission queue handed over once per turn, a
    /// completion queue of bounded size (completions past it wait in an overflow list), a
    /// provided-buffer ring that multishot receives take from, sends that do not wait for the
    /// peer's window when asked, cancels that race with the operation.
    Uring,
    /// Like the epoll emulation: operations wait in a queue per socket and direction and are
    /// performed in order when the socket is ready (with spurious readiness and `EAGAIN` at
    /// readiness), receives pick their buffer at readiness, cancels of queued operations are
    /// exact.
    Epoll,
    /// Like POSIX aio: one operation at a time per socket and direction (a read lane and a
    /// write lane), no `recvmsg`/`sendmsg`, no provided buffers; the running read cannot be
    /// cancelled (only a forced cancel shuts the socket down to end it).
    Aio,
}

impl Mode {
    /// Every mode, in a fixed order.
    pub const ALL: [Mode; 3] = [Mode::Uring, Mode::Epoll, Mode::Aio];
}

macro_rules! sites {
    ($($(#[doc = $doc:literal])* $site:ident = $name:literal,)*) => {
        /// A fault site: a place where the simulated kernel may do something other than the
        /// plain, prompt success, as a real kernel may. Each is switched on or off per seed and,
        /// when on, fires with its seeded rate.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Site {
            $($(#[doc = $doc])* $site,)*
        }

        impl Site {
            /// Every site, in a fixed order.
            pub const ALL: &'static [Site] = &[$(Site::$site,)*];

            /// The site's name, as the summary line prints it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Site::$site => $name,)*
                }
            }
        }
    };
}

sites! {
    /// A completion is held back for a while (virtual time) before it is delivered.
    Delay = "delay",
    /// The completions of one turn are delivered in another order (those of one operation
    /// keep theirs).
    Reorder = "reorder",
    /// A receive takes fewer bytes than were there.
    ShortRead = "short_read",
    /// A send takes fewer bytes than there was room for.
    ShortWrite = "short_write",
    /// A send that must not wait finds no room (`EAGAIN`), though there was some.
    Eagain = "eagain",
    /// A send, or a read on the aio mode's helper thread, is interrupted by a signal
    /// (`EINTR`) before it moved a byte.
    Eintr = "eintr",
    /// The peer resets the connection, seen first by a receive (`ECONNRESET`).
    Reset = "reset",
    /// The peer is gone, seen first by a send (`EPIPE`); the connection is dead.
    Epipe = "epipe",
    /// A cancel wins against an operation that could have completed (its data stays in the
    /// socket); left alone, such an operation completes with its real result.
    CancelWins = "cancel_wins",
    /// A cancel loses against an operation that could not complete yet: it goes on, and
    /// completes for real if it can within a while (the cancel acts at the end of it).
    CancelLoses = "cancel_loses",
    /// A cancel finds the operation already completed (`ENOENT`): its real result is
    /// delivered, late.
    CancelEnoent = "cancel_enoent",
    /// A cancel finds the operation running (`EALREADY`): it takes effect only after a while,
    /// and the operation may complete for real meanwhile.
    CancelEalready = "cancel_ealready",
    /// A multishot receive ends with data (its completion without `more`), as the kernel ends
    /// one for its own reasons.
    MultishotEnd = "multishot_end",
    /// A multishot receive ends with `ENOBUFS` though the ring had buffers.
    Enobufs = "enobufs",
    /// The completion queue is full: completions wait in the overflow list and come a turn
    /// later.
    CqOverflow = "cq_overflow",
    /// The submission queue is full when a request is pushed: the backend submits to make
    /// room.
    SqFull = "sq_full",
    /// A request is refused at once (the submission queue stays full, or aio is out of
    /// threads): the operation fails before it starts.
    StartFails = "start_fails",
    /// The turn's submit fails (`EBUSY`, `EINTR`): the requests stay queued for the next turn.
    SubmitFails = "submit_fails",
    /// Epoll mode: a readiness edge for a socket that has nothing (the syscall says `EAGAIN`).
    SpuriousReady = "spurious_ready",
    /// Epoll mode: the syscall says `EAGAIN` at readiness; the operation waits for the next
    /// edge.
    EagainAtReady = "eagain_ready",
}

/// How often each fault site fires: a rate per 10,000 chances, 0 for off.
#[derive(Clone, PartialEq, Eq)]
pub struct Faults {
    rates: Vec<u16>,
}

impl Faults {
    /// Every site off.
    pub fn none() -> Faults {
        Faults { rates: vec![0; Site::ALL.len()] }
    }

    /// The rate of `site`, per 10,000 chances.
    pub fn rate(&self, site: Site) -> u16 {
        self.rates[site as usize]
    }

    /// Sets the rate of `site`, per 10,000 chances (0: off).
    pub fn set(&mut self, site: Site, per_10k: u16) {
        self.rates[site as usize] = per_10k.min(10_000);
    }

    /// The sites that are on.
    pub fn on(&self) -> impl Iterator<Item = Site> + '_ {
        Site::ALL.iter().copied().filter(|&site| self.rate(site) > 0)
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.on().map(|site| (site.name(), self.rate(site)))).finish()
    }
}

/// A bug planted in the runtime on purpose, to show that the seeds catch it (cargo feature
/// `sim-mutants`; without it there is none). Each is a class of bug that published completion
/// runtimes have shipped.
#[cfg(feature = "sim-mutants")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutant {
    /// Dropping an operation's future frees its buffer at once, while the kernel may still
    /// write into it.
    FreeDroppedBuffer,
    /// A dropped stream closes its fd at once, behind the backend's back, with operations on it
    /// still in flight.
    CloseWithOpInFlight,
    /// A stream whose multishot receive ended with `ENOBUFS` never arms another one.
    NoRearmAfterEnobufs,
    /// A read does not wait for an earlier, cancelled read to be over: that read's late bytes
    /// can come after newer ones.
    LateBytesAfterNewer,
    /// Completions that overflowed the completion queue are dropped.
    DropOverflowedCompletion,
    /// An accept that completed after it was cancelled leaks the connection's fd.
    LeakCancelledAccept,
    /// A short send behind is taken as complete: the rest of its bytes are lost.
    LoseShortSendBehind,
    /// A completion nobody reads keeps its buffer: it never goes back to the ring (or to the
    /// backend's picked buffers).
    KeepDiscardedBuffer,
}

#[cfg(feature = "sim-mutants")]
impl Mutant {
    /// Every planted bug.
    pub const ALL: [Mutant; 8] = [
        Mutant::FreeDroppedBuffer,
        Mutant::CloseWithOpInFlight,
        Mutant::NoRearmAfterEnobufs,
        Mutant::LateBytesAfterNewer,
        Mutant::DropOverflowedCompletion,
        Mutant::LeakCancelledAccept,
        Mutant::LoseShortSendBehind,
        Mutant::KeepDiscardedBuffer,
    ];

    /// Its name, for `SIM_MUTANT` and the report.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::FreeDroppedBuffer => "free_dropped_buffer",
            Mutant::CloseWithOpInFlight => "close_with_op_in_flight",
            Mutant::NoRearmAfterEnobufs => "no_rearm_after_enobufs",
            Mutant::LateBytesAfterNewer => "late_bytes_after_newer",
            Mutant::DropOverflowedCompletion => "drop_overflowed_completion",
            Mutant::LeakCancelledAccept => "leak_cancelled_accept",
            Mutant::LoseShortSendBehind => "lose_short_send_behind",
            Mutant::KeepDiscardedBuffer => "keep_discarded_buffer",
        }
    }

    /// The mutant called `name`.
    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Everything a simulated run is made of. [`SimConfig::from_seed`] draws it all from a seed;
/// the fields can be changed afterwards (a test that needs one fault site on, say).
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: the kernel's choices, the faults and the order the executor polls tasks in
    /// all come from it.
    pub seed: u64,
    /// Which backend the kernel behaves like.
    pub mode: Mode,
    /// Which fault sites are on, and how often they fire.
    pub faults: Faults,
    /// How often (per 10,000 picks) the executor polls a task other than the first queued.
    pub shuffle_polls: u16,
    /// The submission queue's size (uring mode).
    pub sq_entries: usize,
    /// The completion queue's size (uring mode).
    pub cq_entries: usize,
    /// Whether the ring's buffers are filled piece by piece (uring mode).
    pub incremental: bool,
    /// Whether the kernel ends a multishot receive at its byte limit itself (uring mode; as
    /// Linux 6.17), or the driver must stop it.
    pub receive_limits: bool,
    /// The most completions one multishot receive produces in one turn of the kernel.
    pub burst: u32,
    /// The least and the most bytes a connection's receive queue holds (the peer's sends wait
    /// past it), drawn per connection.
    pub window: (u32, u32),
    /// How many of the last steps the kernel keeps, to print when the seed fails.
    pub steps_kept: usize,
    /// The planted bug to run with, if any.
    #[cfg(feature = "sim-mutants")]
    pub mutant: Option<Mutant>,
}

impl SimConfig {
    /// A run drawn from `seed`: the mode, which fault sites are on (each with even odds) and
    /// their rates (1 % to 25 %; those that end a connection or an operation for good, a
    /// quarter or an eighth of that, or few connections would live long enough to reach
    /// anything else), the queue sizes, the windows.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = Rng::new(seed ^ 0x5eed_c0f1_6000_0000);
        let mode = Mode::ALL[rng.below(3) as usize];
        let mut faults = Faults::none();
        for &site in Site::ALL {
            if rng.chance(5_000) {
                let rate = 100 + rng.below(2_400) as u16;
                faults.set(
                    site,
                    match site {
                        Site::Reset | Site::Epipe => rate / 4,
                        Site::StartFails => rate / 8,
                        _ => rate,
                    },
                );
            }
        }
        let small = rng.chance(5_000);
        SimConfig {
            seed,
            mode,
            faults,
            shuffle_polls: [0, 3_000, 10_000][rng.below(3) as usize],
            sq_entries: if small { 2 + rng.below(6) as usize } else { 64 },
            cq_entries: if small { 2 + rng.below(6) as usize } else { 128 },
            incremental: rng.chance(5_000),
            receive_limits: rng.chance(5_000),
            burst: 1 + rng.below(4) as u32,
            window: if rng.chance(5_000) { (64, 2_048) } else { (4_096, 65_536) },
            steps_kept: 200,
            #[cfg(feature = "sim-mutants")]
            mutant: None,
        }
    }
}

/// The run's source of choices: SplitMix64, small and good enough to spread a seed over many
/// decisions; the same seed gives the same sequence on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with odds `per_10k` in 10,000.
    pub fn chance(&mut self, per_10k: u16) -> bool {
        per_10k > 0 && self.below(10_000) < u64::from(per_10k)
    }
}
