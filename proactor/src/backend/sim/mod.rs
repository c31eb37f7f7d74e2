//! The fourth backend: a model of the kernel, deterministic from a seed, for tests (cargo
//! feature `sim`; see [`crate::sim`] for how to run it and what it checks).
//!
//! It implements [`Io`] like the three real backends, but nothing it does reaches a real
//! socket's data: [`kernel`] keeps the sockets, their bytes and the operations in flight, and
//! decides from the seed when each operation completes, with which result, and which faults a
//! real kernel could produce happen on the way. Three modes ([`Mode`]) give the driver the
//! [`Facts`] and the behaviour of io_uring, of the epoll emulation and of POSIX aio, so that
//! the driver's paths for each are the ones exercised:
//!
//! | mode  | accept       | receive (`read_provided`)     | send            | cancel                     |
//! |-------|--------------|-------------------------------|-----------------|----------------------------|
//! | uring | single-shot, | multishot into the ring,      | may not wait    | races: wins, loses, late,  |
//! |       | with address | limits, incremental buffers   | (`EAGAIN`)      | already done               |
//! | epoll | single-shot  | a buffer picked at readiness  | waits for room  | exact while queued         |
//! | aio   | single-shot  | `read` into a spare buffer    | one per lane    | none for the running read  |
//!
//! Multishot accept is never offered: an accept then carries the peer's address in its
//! request, and the driver asks nothing the model could only answer with a real syscall on a
//! socket that has no real connection (`getpeername`).
//!
//! The backend also installs the executor's two hooks (`executor::sim`) for its runtime's
//! thread: the virtual clock, which its turns advance instead of sleeping, and the order in
//! which the loop polls woken tasks, drawn from the same seed.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::{Rc, Weak};
use std::time::Duration;

use executor::Notifier;

use crate::backend::io::{Backend, Completion, Config, Facts, Gauges, Io, Request};
use crate::bufring::{BufRing, Provide};

pub(crate) mod config;
mod kernel;

#[cfg(feature = "sim-mutants")]
pub use config::Mutant;
pub use config::{Faults, Mode, Rng, SimConfig, Site};
pub(crate) use kernel::Kernel;

/// The model, shared by the backend, the driver and the test's `proactor::sim::Sim` handle.
pub(crate) type SimKernel = Rc<RefCell<Kernel>>;

#[cfg(feature = "sim-mutants")]
thread_local! {
    /// The bug planted in the runtime running on this thread (see [`planted`]).
    static PLANTED: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Whether `mutant` is the bug planted in the runtime running on this thread.
#[cfg(feature = "sim-mutants")]
pub(crate) fn planted(mutant: Mutant) -> bool {
    PLANTED.get() == Some(mutant)
}

/// The simulated backend: the model, shared with the test's `proactor::sim::Sim` handle.
pub(crate) struct SimIo {
    kernel: Rc<RefCell<Kernel>>,
}

impl std::fmt::Debug for SimIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimIo").field("kernel", &self.kernel.borrow()).finish()
    }
}

/// How the ring's free buffers reach the model's kernel.
struct Provider(Weak<RefCell<Kernel>>);

impl Provide for Provider {
    fn provide(&self, bid: u16, addr: *mut u8, len: u32) {
        if let Some(kernel) = self.0.upgrade() {
            kernel.borrow_mut().provide(bid, addr, len);
        }
    }
}

/// Sets up the simulated backend `config.sim` describes: the model, its ring (uring mode, if
/// the runtime has provided buffers), and the executor's hooks on this thread.
pub(crate) fn open(config: &Config) -> io::Result<(SimIo, Option<BufRing>, SimKernel)> {
    let sim = config
        .sim
        .clone()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "Backend::Sim needs Builder::sim"))?;
    let mode = sim.mode;
    #[cfg(feature = "sim-mutants")]
    PLANTED.set(sim.mutant);
    let kernel = Rc::new(RefCell::new(Kernel::new(sim)));
    let ring = match (mode, config.provided_buffers) {
        (Mode::Uring, Some((count, size))) => {
            kernel.borrow_mut().make_ring();
            // As the io_uring backend sizes its ring: as many buffers as the memory limit allows
            // (a power of two, at most 32768), at least `count`.
            let by_limit = (config.ring_memory_limit / size as usize).clamp(1, 32768);
            let max = (1usize << by_limit.ilog2()).max(usize::from(count).next_power_of_two()).min(32768);
            Some(BufRing::new(Box::new(Provider(Rc::downgrade(&kernel))), count, max as u16, size)?)
        }
        _ => None,
    };
    executor::sim::set_clock(Some(kernel.borrow().instant()));
    let picker = Rc::downgrade(&kernel);
    executor::sim::set_poll_order(Some(Box::new(move |queued| {
        picker.upgrade().map_or(0, |kernel| kernel.borrow_mut().pick(queued))
    })));
    let handle = kernel.clone();
    Ok((SimIo { kernel }, ring, handle))
}

impl Io for SimIo {
    fn facts(&self) -> Facts {
        let mode = self.kernel.borrow().config.mode;
        Facts {
            kind: Backend::Sim,
            multishot_accept: false,
            picks_buffers: mode == Mode::Epoll,
            messages: mode != Mode::Aio,
            // UDP is not modelled: its requests (`SendTo` too) fail with `EOPNOTSUPP`.
            send_to: false,
        }
    }

    unsafe fn start(&self, index: usize, request: &Request) -> io::Result<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.kernel.borrow_mut().start(index, *request) }.map_err(io::Error::from_raw_os_error)
    }

    fn cancel(&self, index: usize, force: bool) -> bool {
        self.kernel.borrow_mut().cancel(index, force)
    }

    fn close_fd(&self, fd: OwnedFd, now: bool) {
        self.kernel.borrow_mut().close_fd(fd, now);
    }

    fn submit_pending(&self) {
        self.kernel.borrow_mut().submit();
    }

    fn turn(
        &self,
        timeout: Option<Duration>,
        _notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool> {
        let batch = {
            let mut kernel = self.kernel.borrow_mut();
            let batch = kernel.turn(timeout).map_err(io::Error::other)?;
            executor::sim::set_clock(Some(kernel.instant()));
            batch
        };
        // Delivered outside the borrow: the driver gives buffers back to the ring (and so to
        // this model) while it takes completions.
        for made in batch {
            self.kernel.borrow_mut().deliver(&made);
            complete(made.index, made.completion);
        }
        Ok(false)
    }

    fn take_picked(&self, id: u16) -> Option<Vec<u8>> {
        self.kernel.borrow_mut().take_picked(id)
    }

    fn gauges(&self) -> Gauges {
        Gauges { queue_overflows: self.kernel.borrow().overflows(), threads: None }
    }
}

impl Drop for SimIo {
    fn drop(&mut self) {
        // The runtime is gone: what is left open is a leak, what has not ended never will.
        self.kernel.borrow_mut().finish();
        executor::sim::set_clock(None);
        executor::sim::set_poll_order(None);
        #[cfg(feature = "sim-mutants")]
        PLANTED.set(None);
    }
}
