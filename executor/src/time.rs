//! Timers: [`sleep`], [`sleep_until`] and [`timeout`].
//!
//! Pending timers sit in an ordered map keyed by `(deadline, id)`, so the nearest deadline is
//! the first key. The loop turns it into the timeout of its park: the reactor's `epoll_wait`
//! rounds it *up* to whole milliseconds (epoll's resolution), the proactor's `io_uring_enter`
//! keeps nanoseconds. After each park the loop wakes every timer whose deadline is not after
//! [`now()`]: a timer may fire late (up to a millisecond on epoll), never early. A [`Sleep`]
//! also checks the clock itself when polled, so it completes only once its deadline has passed
//! whatever woke it. `now()` is `Instant::now()`, or a simulation's virtual clock (cargo
//! feature `sim`), which its driver advances instead of sleeping.
//!
//! Timers belong to the loop, not to a driver: the same `Sleep` works on either runtime.
//!
//! Dropping a `Sleep` removes its entry (O(log n)), which is what makes `timeout` around an
//! operation that usually finishes first cheap: the timer is never fired, just removed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::executor;

type TimerKey = (Instant, u64);

/// The runtime's pending timers.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    entries: RefCell<BTreeMap<TimerKey, Waker>>,
    next_id: Cell<u64>,
}

impl Timers {
    fn insert(&self, deadline: Instant, waker: Waker) -> TimerKey {
        let key = (deadline, self.next_id.get());
        self.next_id.set(key.1 + 1);
        self.entries.borrow_mut().insert(key, waker);
        key
    }

    /// Stores `waker` for `key`; re-inserts the entry if it already fired.
    fn update(&self, key: TimerKey, waker: &Waker) {
        let mut entries = self.entries.borrow_mut();
        let replaced = match entries.get_mut(&key) {
            Some(stored) if stored.will_wake(waker) => None,
            Some(stored) => Some(std::mem::replace(stored, waker.clone())),
            None => entries.insert(key, waker.clone()),
        };
        drop(entries);
        drop(replaced); // outside the borrow: dropping a waker may run code
    }

    fn remove(&self, key: TimerKey) {
        let removed = self.entries.borrow_mut().remove(&key);
        drop(removed);
    }

    /// How many timers are pending.
    #[cfg(feature = "sim")]
    pub(crate) fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries.borrow().first_key_value().map(|(key, _)| key.0)
    }

    /// Moves the wakers of every expired timer into `wakers`; returns whether there were any.
    pub(crate) fn fire(&self, wakers: &mut Vec<Waker>) -> bool {
        let mut entries = self.entries.borrow_mut();
        if entries.is_empty() {
            return false;
        }
        let now = now();
        let before = wakers.len();
        while let Some(entry) = entries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            wakers.push(entry.remove());
        }
        wakers.len() > before
    }

    /// Removes every timer; the caller drops them outside this borrow.
    pub(crate) fn clear(&self) -> BTreeMap<TimerKey, Waker> {
        std::mem::take(&mut *self.entries.borrow_mut())
    }
}

/// The time timers read: `Instant::now()`, or the virtual clock of a simulation running on
/// this thread (cargo feature `sim`, see `executor::sim`).
#[inline]
pub fn now() -> Instant {
    #[cfg(feature = "sim")]
    if let Some(now) = crate::sim::clock() {
        return now;
    }
    Instant::now()
}

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
///
/// It registers with the runtime running on the thread that polls it (and moves to another
/// runtime if polled there later).
///
/// # Panics
/// When polled outside a runtime.
#[derive(Debug)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Sleep {
    deadline: Instant,
    entry: Option<(Rc<Timers>, TimerKey)>,
}

impl Sleep {
    /// The instant this future completes at.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        now() >= self.deadline
    }

    /// Moves the deadline (earlier or later); the future becomes pending again if the new
    /// deadline is in the future.
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = deadline;
    }

    fn cancel(&mut self) {
        if let Some((timers, key)) = self.entry.take() {
            timers.remove(key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if now() >= self.deadline {
            self.cancel();
            return Poll::Ready(());
        }
        let Some(current) = executor::with_timers(Rc::clone) else {
            panic!("time::Sleep polled outside a runtime (await it inside block_on)");
        };
        match &self.entry {
            Some((timers, key)) if Rc::ptr_eq(timers, &current) => timers.update(*key, cx.waker()),
            _ => {
                self.cancel();
                let key = current.insert(self.deadline, cx.waker().clone());
                self.entry = Some((current, key));
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Completes once `duration` has passed (never earlier; up to about a millisecond later).
pub fn sleep(duration: Duration) -> Sleep {
    let now = now();
    // A duration too long to represent means "never", in practice: cap it at ~30 years.
    let deadline = now.checked_add(duration).unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
    sleep_until(deadline)
}

/// Completes once `deadline` has passed.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, entry: None }
}

/// The error of [`timeout`]: the deadline passed before the future completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for io::Error {
    fn from(e: Elapsed) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}

/// Runs `future`, giving up once `duration` has passed.
///
/// On timeout `future` is dropped, which cancels it. On the reactor a socket read just forgets
/// its interest (readiness-based I/O has nothing in flight); on the proactor the operation is
/// cancelled in the kernel and its buffer stays with the driver until the cancellation
/// completes. Either way the socket stays usable and no data is lost.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut deadline = sleep(duration);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(&mut deadline).poll(cx).map(|()| Err(Elapsed(())))
    })
    .await
}
