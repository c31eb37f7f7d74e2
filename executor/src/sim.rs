//! Hooks for a simulation (cargo feature `sim`): a virtual clock, and the order in which the
//! loop polls woken tasks. Without the feature this module does not exist, and the loop reads
//! `Instant::now()` and polls its run queue first in, first out, as always.
//!
//! A simulated driver (the proactor's `Backend::Sim`) makes a whole run a function of one
//! seed. Two things the loop does would otherwise depend on the machine: the time timers read,
//! and nothing else but the order of the run queue, which is deterministic but always the same
//! (so a seed could never reach the interleavings another order gives). Both hooks are
//! per thread, set by the simulated driver when its runtime is built and cleared when it is
//! dropped:
//!
//! - [`set_clock`]: timers ([`time::now`](crate::time::now), `sleep`, `timeout`, the loop's
//!   park timeout) read this instant instead of the real clock. The driver advances it in its
//!   park, so a run never sleeps: waiting for a timer is a jump of the virtual clock.
//! - [`set_poll_order`]: the loop asks this function which of the `n` queued tasks to poll
//!   next (an index below `n`; anything else means the first).

use std::cell::{Cell, RefCell};
use std::time::Instant;

/// Picks which of `n` queued tasks the loop polls next.
pub type PollOrder = Box<dyn FnMut(usize) -> usize>;

thread_local! {
    static CLOCK: Cell<Option<Instant>> = const { Cell::new(None) };
    static POLL_ORDER: RefCell<Option<PollOrder>> = const { RefCell::new(None) };
}

/// Makes timers on this thread read `now` (`None`: the real clock again).
pub fn set_clock(now: Option<Instant>) {
    CLOCK.set(now);
}

/// The virtual time, if a simulation set one on this thread.
#[inline]
pub(crate) fn clock() -> Option<Instant> {
    CLOCK.get()
}

/// Makes the loop on this thread poll woken tasks in the order `order` picks (`None`: first
/// in, first out again).
pub fn set_poll_order(order: Option<PollOrder>) {
    let old = POLL_ORDER.replace(order);
    drop(old);
}

/// Which of `n` queued tasks to poll next (0 without a hook).
#[inline]
pub(crate) fn pick(n: usize) -> usize {
    POLL_ORDER
        .try_with(|order| match order.try_borrow_mut() {
            Ok(mut order) => order.as_mut().map_or(0, |pick| pick(n)),
            Err(_) => 0,
        })
        .unwrap_or(0)
}

/// How many timers the runtime running on this thread has pending (0 outside a runtime).
pub fn timers_pending() -> usize {
    crate::executor::with_timers(|timers| timers.len()).unwrap_or(0)
}
