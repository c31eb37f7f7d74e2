//! A simulated kernel: the proactor's promises checked under seeded faults (cargo feature
//! `sim`; compiled out without it).
//!
//! Tests that race real sockets against timers reach the interesting cases (a cancel that
//! loses to its data, a completion held back in an overflowing queue, an fd number reused
//! while an operation on the old socket is still in flight) only by luck of timing. Here a
//! fourth backend ([`Backend::Sim`](crate::Backend::Sim)) is a model of the kernel: one 64-bit
//! seed decides every choice it makes, every fault it injects and the order in which the
//! executor polls woken tasks, on a virtual clock that never sleeps. A failing seed replays
//! exactly; the seeds that pass are thousands of schedules no real run would try in order.
//! This is the idea of FoundationDB's simulation and TigerBeetle's VOPR, applied to one
//! runtime's driver.
//!
//! ```no_run
//! # #[cfg(feature = "sim")] {
//! use proactor::sim::SimConfig;
//!
//! let rt = proactor::Builder::new().sim(SimConfig::from_seed(42)).build().unwrap();
//! let sim = rt.sim().unwrap();
//! rt.block_on(async { /* a workload on sockets bound to 127.0.0.1:0 */ });
//! assert!(sim.leftovers().is_empty());
//! drop(rt);
//! assert!(sim.violations().is_empty(), "{:?}", sim.violations());
//! # }
//! ```
//!
//! # Running it
//!
//! ```text
//! cargo test --release -p proactor --features sim --test simulation            # default seeds
//! SIM_SEEDS=3000 cargo test --release -p proactor --features sim --test simulation
//! SIM_SEED=1234 cargo test --release -p proactor --features sim --test simulation   # one seed
//! cargo test --release -p proactor --features sim-mutants --test simulation    # + planted bugs
//! ```
//!
//! A failing seed prints `SIM_SEED=<seed>` with what broke and the last steps of the run;
//! setting that variable replays exactly that seed, and prints `trace hash <hex>`, a hash of
//! every step of the run (identical on every replay). The run ends with one line:
//! `simulation: <N> seeds, <F> failures; faults fired: <site>=<count> ...`, every site
//! listed, so that one that never fires shows.
//!
//! # The model
//!
//! Sockets are real fds used as identities (the runtime's own listener and connecting
//! sockets, and for each accepted connection a placeholder from `socket(2)`, so the real
//! kernel hands out the numbers and reuses them); connections, bytes, windows and errors are
//! the model's. Three [`Mode`]s give the driver what each real backend gives it: io_uring
//! (a submission queue handed over per turn, a completion queue that overflows, a ring of
//! provided buffers for multishot receives, sends that do not wait), the epoll emulation
//! (queues per socket and direction, buffers picked at readiness) and POSIX aio (one
//! operation per lane, no `recvmsg`, a running read that cannot be cancelled).
//!
//! # What is checked
//!
//! After every step of the driver (each request, cancel, close and turn), against a ledger
//! kept beside the runtime ([`Sim::violations`]):
//!
//! - every operation reaches exactly one end: a slot is never reused before its operation's
//!   last completion, and no completion comes after it;
//! - a buffer handed to the kernel is not freed, reused or changed before its operation ends
//!   (a canary at the start of each receive's buffer, a checksum of each send's; the test's
//!   allocator poisons freed memory, so a freed buffer breaks its canary);
//! - an fd is closed through the backend, never behind its back while operations were started
//!   on it, no operation starts on an fd the driver has closed, and none queued before a close
//!   runs on the number's next socket;
//! - every ring buffer is in exactly one place (the ring, a completion on its way, the driver).
//!
//! At idle, and after the runtime is dropped ([`Sim::leftovers`]): no operation in flight, no
//! fd open, no picked or ring buffer out, no send behind or spilled bytes, no stream waiting
//! for the memory budget and no byte held in it, no timer pending. The test (`tests/
//! simulation.rs`) checks the rest: every byte echoed back in order (or the stream reports
//! an error), and every task finished within a bound of virtual time once the faults are off.
//!
//! # Fault sites
//!
//! Each seed switches every [`Site`] on or off (even odds) and gives those on a rate (1 % to
//! 25 % of their chances; a quarter or an eighth of that for the ones that end a connection or
//! refuse a request, so that connections live long enough to reach the rest): completions
//! delayed (`delay`) and delivered in another order (`reorder`); short receives and sends;
//! `EAGAIN` for a send that must not wait; `EINTR`; resets seen by a receive (`ECONNRESET`) or
//! a send (`EPIPE`); cancels that win against an operation that could complete, lose (it runs
//! on, and completes for real if it can), find it done already (`ENOENT`: its result comes
//! late) or find it running (`EALREADY`: the cancel acts late); a multishot receive ended with
//! data (no `more`); `ENOBUFS` though the ring has buffers; a small completion queue that
//! overflows (completions held back, delivered a turn later); a small submission queue that
//! fills (the backend submits to make room); requests refused at once; a turn's submit that
//! fails (the requests stay queued); and, in the epoll mode, spurious readiness and `EAGAIN` at
//! readiness. [`Sim::fired`] counts them.
//!
//! # Planted bugs
//!
//! With the feature `sim-mutants`, `SimConfig::mutant` plants one of eight known bugs in the
//! runtime itself (each a one-line change, the constant `false` without the feature):
//! freeing a dropped operation's buffer, closing a dropped stream's fd behind the backend's
//! back, not re-arming a receive after `ENOBUFS`, a read that does not wait for a cancelled one
//! (late bytes after newer ones), dropping completions that overflowed the queue, leaking the fd
//! of an accept that completed after its cancel, taking a short send behind as complete, and
//! keeping the buffer of a completion nobody reads. The mutants run of `tests/simulation.rs`
//! passes only if the seeds catch every one (`mutants: 8 planted, 8 caught`).
//!
//! # What it cannot check
//!
//! The real kernel's timing and its own bugs: the model completes operations when its rules
//! and the seed say so, not when a NIC, the scheduler or glibc's threads would, and the three
//! real backends' own code (the SQE encoding, epoll's readiness bits, glibc's aio) does not run
//! at all. That is what the real-kernel suites are for (`tests/races.rs`, `tests/cancel.rs`, ...).
//! A model also only finds what its rules allow: a behaviour of the kernel it does not know
//! (a new CQE flag, say) it cannot produce. Sockets made by the model have no real
//! connection, so real syscalls on them (`peer_addr`, `shutdown`, socket options) fail or
//! say nothing; workloads use the operations. UDP is not modelled (its operations fail with
//! `EOPNOTSUPP`), nor is multishot accept. Wakes from other threads are not seen while the
//! model waits (a run is one thread).

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

#[cfg(feature = "sim-mutants")]
pub use crate::backend::sim::Mutant;
pub use crate::backend::sim::{Faults, Mode, Rng, SimConfig, Site};

use crate::backend::sim::Kernel;

/// A handle on a simulated runtime's kernel ([`Runtime::sim`](crate::Runtime::sim)), which
/// outlives the runtime: what it checked, what it fired, its trace hash.
#[derive(Clone)]
pub struct Sim {
    kernel: Rc<RefCell<Kernel>>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim").field("kernel", &self.kernel.borrow()).finish()
    }
}

impl Sim {
    pub(crate) fn new(kernel: Rc<RefCell<Kernel>>) -> Sim {
        Sim { kernel }
    }

    /// The run's configuration.
    pub fn config(&self) -> SimConfig {
        self.kernel.borrow().config.clone()
    }

    /// Switches every fault site off (for a liveness phase) or back on.
    pub fn set_faults(&self, on: bool) {
        self.kernel.borrow_mut().set_faults(on);
    }

    /// Sets how often `site` fires from now on, per 10,000 chances (0: off).
    pub fn set_rate(&self, site: Site, per_10k: u16) {
        self.kernel.borrow_mut().set_rate(site, per_10k);
    }

    /// What broke so far: each a sentence, with the virtual time and turn it was seen at.
    pub fn violations(&self) -> Vec<String> {
        self.kernel.borrow().violations().to_vec()
    }

    /// How many times each fault site fired, every site listed.
    pub fn fired(&self) -> Vec<(Site, u64)> {
        self.kernel.borrow().fired()
    }

    /// A hash of every step of the run so far (requests, cancels, closes, completions, faults,
    /// the executor's picks): the same on every replay of the seed.
    pub fn trace_hash(&self) -> u64 {
        self.kernel.borrow().hash()
    }

    /// The virtual time since the runtime was built.
    pub fn elapsed(&self) -> Duration {
        self.kernel.borrow().now()
    }

    /// The kernel's state now (every operation and socket), for a failure report.
    pub fn dump(&self) -> Vec<String> {
        self.kernel.borrow().dump()
    }

    /// The last steps of the run, oldest first, for a failure report.
    pub fn recent(&self) -> Vec<String> {
        self.kernel.borrow().recent()
    }

    /// What is still held, each a sentence: empty when the runtime is idle. Inside the
    /// runtime this also looks at the driver (operations in flight, sends behind, spilled
    /// bytes, the memory budget, the ring, timers).
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = self.kernel.borrow_mut().leftovers();
        if let Ok(driver) = crate::driver::Driver::current() {
            left.extend(driver.leftovers());
            let in_ring = self.kernel.borrow().ring_len();
            if let (Some(ring), Some(in_ring)) = (driver.buf_ring(), in_ring) {
                if ring.available() as usize != in_ring {
                    left.push(format!(
                        "the driver counts {} buffers in the ring, the kernel has {in_ring}",
                        ring.available()
                    ));
                }
            }
            let timers = executor::sim::timers_pending();
            if timers > 0 {
                left.push(format!("{timers} timers pending"));
            }
        }
        left
    }
}
