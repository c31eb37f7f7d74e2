//! The epoll driver: turns "this fd is ready" into "wake that task".
//!
//! # Registrations
//!
//! Every socket the runtime owns is registered once, when it is created, for
//! `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET`, and removed once, just before it is
//! closed.
//! Its state lives in a [`Slab`] of [`ScheduledIo`] slots. The 64-bit token the kernel hands
//! back with each event packs the slot index with a *generation*: a counter bumped on every
//! registration. An event whose generation does not match the slot's is stale (its fd was closed
//! and the slot reused) and wakes nobody. Deregistered slots are also not freed at once but put
//! on a release list that is emptied at the start of the next turn, so that a slot index can
//! never be reused while an `epoll_wait` batch that might name it is being dispatched.
//!
//! # Why edge-triggered
//!
//! With `EPOLLET` the kernel reports a transition to ready once and then stays silent until
//! the next transition. The alternatives are level-triggered (reported on every wait while
//! ready, so a slow consumer makes every `epoll_wait` return the same fds again) and
//! `EPOLLONESHOT` (one report, then an `epoll_ctl(MOD)` syscall to re-arm: one extra syscall per
//! wait, per socket). Edge-triggered needs no syscall to re-arm, which is what keeps an echo
//! near two syscalls per message (`read` + `write`, with `epoll_wait` shared by all the sockets
//! that became ready together). The price is a protocol the runtime must follow exactly: events
//! set readiness bits, only an `EAGAIN` (or a transfer shorter than asked) clears them. It is
//! written down once, in `executor::readiness`, with the bits and their epoll mapping, and the
//! proactor's epoll backend follows it too.
//!
//! # Why no tick is needed here
//!
//! In a multi-threaded driver, clearing races with new events: a task sees readiness, `read`
//! says `EAGAIN`, a packet arrives and the driver thread sets the bit again, *then* the task's
//! stale clear erases it, and the task sleeps with data waiting. tokio guards against this with
//! a tick (an event counter) recorded with the readiness, so a clear only applies to the
//! readiness it observed. This driver runs on the tasks' own thread and applies events only
//! between task polls, while an operation observes readiness, makes its syscall and clears in
//! one synchronous step. No event can land in between, so the clear is always about the
//! latest readiness; an edge that comes later sets the bit again and wakes the stored waker.
//!
//! # Cross-thread wake-ups
//!
//! A [`Notifier`] is an eventfd in the same epoll set. Another thread calls
//! [`Notifier::notify`], which writes the eventfd only if no notification is already pending
//! (an atomic flag), so a burst of remote wake-ups costs one `write` and one `read`.

use std::cell::{Cell, RefCell};
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub(crate) use executor::readiness::Direction;
use executor::readiness::{self, readiness_of, Exhausted, READABLE};
use executor::{Notifier, Park, Unpark};
use slab::Slab;

use crate::stats;
use crate::sys;

/// The token of the notifier's eventfd; registration tokens never reach it because slab
/// indices are below `u32::MAX`.
const NOTIFY_TOKEN: u64 = u64::MAX;

/// A direction as an interest bit of a waiting waker.
fn bit(direction: Direction) -> u8 {
    match direction {
        Direction::Read => 1,
        Direction::Write => 2,
    }
}

/// Identifies one registration: slab index plus generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    index: u32,
    generation: NonZeroU32,
}

impl Key {
    fn token(self) -> u64 {
        (u64::from(self.generation.get()) << 32) | u64::from(self.index)
    }

    /// `None` for a token no registration can have (generation 0).
    fn from_token(token: u64) -> Option<Key> {
        Some(Key { index: token as u32, generation: NonZeroU32::new((token >> 32) as u32)? })
    }
}

/// The driver's state for one registered fd: 32 bytes (and so is its slab entry), one per
/// connection.
///
/// Usually one task drives a socket (stream I/O takes `&mut self`), so the first waiter's
/// waker is stored inline, with `interest` saying which directions it waits for. Other waiters
/// (several tasks accepting on one listener, the halves of a split stream polled with separate
/// wakers) go to `others`, allocated only then. An event wakes every waiter whose interest it
/// concerns and removes it. Invariant: a waiter waits for a direction only while that
/// direction's readiness bits (see [`Direction::mask`]) are clear.
#[derive(Debug)]
struct ScheduledIo {
    /// Never zero, which lets the slab store a vacant entry in this field's spare value and
    /// keep its entries at 32 bytes.
    generation: NonZeroU32,
    readiness: u8,
    /// `Direction::bit`s `waker` waits for.
    interest: u8,
    waker: Option<Waker>,
    // A box around the Vec keeps this field at one pointer when empty (the common case).
    #[allow(clippy::box_collection)]
    others: Option<Box<Vec<(Waker, u8)>>>,
}

impl ScheduledIo {
    /// Records that the task of `waker` waits for `direction`.
    fn add_waiter(&mut self, waker: &Waker, direction: Direction) {
        match &self.waker {
            None => {
                self.waker = Some(waker.clone());
                self.interest = bit(direction);
            }
            Some(w) if w.will_wake(waker) => self.interest |= bit(direction),
            Some(_) => {
                let others = self.others.get_or_insert_with(Box::default);
                match others.iter_mut().find(|(w, _)| w.will_wake(waker)) {
                    Some((_, interest)) => *interest |= bit(direction),
                    None => others.push((waker.clone(), bit(direction))),
                }
            }
        }
    }

    /// Moves the wakers of the waiters that `ready` concerns into `wakers`.
    fn take_waiters(&mut self, ready: u8, wakers: &mut Vec<Waker>) {
        if ready & interest_mask(self.interest) != 0 {
            self.interest = 0;
            wakers.extend(self.waker.take());
        }
        if let Some(others) = &mut self.others {
            others.retain(|(waker, interest)| {
                let concerned = ready & interest_mask(*interest) != 0;
                if concerned {
                    wakers.push(waker.clone());
                }
                !concerned
            });
            if others.is_empty() {
                self.others = None;
            }
        }
    }
}

/// The readiness bits that concern a waker waiting for the directions in `interest`.
fn interest_mask(interest: u8) -> u8 {
    let mut mask = 0;
    for direction in [Direction::Read, Direction::Write] {
        if interest & bit(direction) != 0 {
            mask |= direction.mask();
        }
    }
    mask
}

/// The epoll instance and every registration on it. Lives on the runtime's thread.
#[derive(Debug)]
pub struct Driver {
    epoll: OwnedFd,
    notifier: Arc<Notifier>,
    /// Scratch space `epoll_wait` writes into; its length is the events-per-wait limit.
    events: RefCell<Vec<libc::epoll_event>>,
    ios: RefCell<Slab<ScheduledIo>>,
    /// Slots deregistered since the last turn; freed at the start of the next one.
    released: RefCell<Vec<u32>>,
    next_generation: Cell<NonZeroU32>,
    /// False once the runtime is dropped: operations fail instead of waiting forever.
    alive: Cell<bool>,
}

impl Driver {
    pub(crate) fn new(events_per_wait: usize) -> io::Result<Driver> {
        let epoll = sys::epoll_create()?;
        let notifier = Notifier::new()?;
        let events = (libc::EPOLLIN | libc::EPOLLET) as u32;
        sys::epoll_ctl(epoll.as_fd(), libc::EPOLL_CTL_ADD, notifier.fd().as_raw_fd(), events, NOTIFY_TOKEN)?;
        Ok(Driver {
            epoll,
            notifier: Arc::new(notifier),
            events: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; events_per_wait.max(1)]),
            ios: RefCell::new(Slab::with_capacity(executor::slab_capacity())),
            released: RefCell::new(Vec::new()),
            next_generation: Cell::new(NonZeroU32::MIN),
            alive: Cell::new(true),
        })
    }

    /// The number of fds currently registered (released slots not yet freed included).
    pub(crate) fn registrations(&self) -> usize {
        self.ios.borrow().len()
    }

    fn register(&self, fd: BorrowedFd<'_>) -> io::Result<Key> {
        let generation = self.next_generation.get();
        self.next_generation.set(generation.checked_add(1).unwrap_or(NonZeroU32::MIN));
        let mut ios = self.ios.borrow_mut();
        let entry = ios.vacant_entry();
        let index = u32::try_from(entry.key())
            .ok()
            .filter(|&i| i != u32::MAX)
            .ok_or_else(|| io::Error::other("too many registrations"))?;
        let key = Key { index, generation };
        let events = executor::sys::EPOLL_SOCKET_EVENTS;
        #[cfg(feature = "trace")]
        if executor::trace::on() {
            executor::trace::note_fd(index, fd.as_raw_fd());
        }
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), events, key.token())?;
        entry.insert(ScheduledIo { generation, readiness: 0, interest: 0, waker: None, others: None });
        Ok(key)
    }

    fn deregister(&self, key: Key, fd: BorrowedFd<'_>) {
        // Removing from the epoll set before the fd is closed matters: epoll tracks the open
        // file, not the number, so a dup of this fd elsewhere would keep the registration alive.
        let _ = sys::epoll_del(self.epoll.as_fd(), fd.as_raw_fd());
        let wakers = {
            let mut ios = self.ios.borrow_mut();
            match ios.get_mut(key.index as usize) {
                Some(io) if io.generation == key.generation => {
                    io.readiness = 0;
                    self.released.borrow_mut().push(key.index);
                    io.interest = 0;
                    (io.waker.take(), io.others.take())
                }
                _ => (None, None),
            }
        };
        // Dropped outside the borrow: a waker's drop may run arbitrary code.
        drop(wakers);
    }

    /// Whether `direction` of `key` is ready; an error once the runtime is gone.
    fn is_ready(&self, key: Key, direction: Direction) -> io::Result<bool> {
        if !self.alive.get() {
            return Err(io::Error::other("the reactor runtime this socket belongs to was dropped"));
        }
        let ios = self.ios.borrow();
        match ios.get(key.index as usize).filter(|io| io.generation == key.generation) {
            Some(io) => Ok(io.readiness & direction.mask() != 0),
            None => Err(io::Error::other("socket is no longer registered")),
        }
    }

    /// `Ready` if `direction` of `key` is ready; otherwise records the task as a waiter and
    /// returns `Pending`.
    fn poll_ready(&self, key: Key, cx: &mut Context<'_>, direction: Direction) -> Poll<io::Result<()>> {
        if self.is_ready(key, direction)? {
            return Poll::Ready(Ok(()));
        }
        // About to wait: only this driver's runtime can wake the task, so it must be the one
        // running (a socket awaited from another runtime would otherwise wait forever).
        if !executor::runs_driver::<Driver>(self) {
            return Poll::Ready(Err(io::Error::other(
                "socket used outside the reactor runtime it was created in",
            )));
        }
        self.ios.borrow_mut()[key.index as usize].add_waiter(cx.waker(), direction);
        Poll::Pending
    }

    /// An operation in `direction` exhausted the readiness it saw.
    fn clear_readiness(&self, key: Key, direction: Direction, why: Exhausted) {
        let mut ios = self.ios.borrow_mut();
        let Some(io) = ios.get_mut(key.index as usize).filter(|io| io.generation == key.generation) else {
            return;
        };
        let cleared = readiness::exhaust(io.readiness, direction, why);
        if why == Exhausted::Short && cleared == READABLE {
            stats::trace_step!(
                "  short read: {} is drained; forget its readiness without an EAGAIN round trip",
                stats::trace_fd(key.index)
            );
        }
        io.readiness &= !cleared;
    }

    /// One `epoll_wait` (bounded by `timeout`, rounded up to whole milliseconds so a timer is
    /// never fired early), then dispatch: apply each event's readiness and move the wakers it
    /// concerns into `wakers`. The caller wakes them after this returns, outside every borrow
    /// of driver state.
    ///
    /// Returns whether the notifier fired, i.e. whether another thread posted work.
    fn turn(&self, timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool> {
        {
            let mut ios = self.ios.borrow_mut();
            for index in self.released.borrow_mut().drain(..) {
                ios.remove(index as usize);
            }
        }
        let timeout_ms = executor::sys::epoll_timeout(timeout);
        let mut events = self.events.borrow_mut();
        let n = match sys::epoll_wait(self.epoll.as_fd(), &mut events, timeout_ms) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        stats::batch(n);

        let mut notified = false;
        let mut ios = self.ios.borrow_mut();
        for event in &events[..n] {
            let (token, bits) = (event.u64, event.events);
            if token == NOTIFY_TOKEN {
                stats::trace_step!("  the notifier's eventfd: another thread woke a task");
                self.notifier.drain();
                notified = true;
                continue;
            }
            let Some(key) = Key::from_token(token) else { continue };
            let Some(io) = ios.get_mut(key.index as usize) else { continue };
            if io.generation != key.generation {
                continue; // stale: the fd was closed and its slot reused
            }
            let ready = readiness_of(bits);
            io.readiness |= ready;
            let before = wakers.len();
            io.take_waiters(ready, wakers);
            stats::trace_step!(
                "  {}: {} → {}",
                stats::trace_fd(key.index),
                readiness::words(ready),
                match wakers.len() - before {
                    0 => "no task waits for it yet; remembered".to_string(),
                    1 => "wake the task waiting for it".to_string(),
                    n => format!("wake the {n} tasks waiting for it"),
                }
            );
        }
        Ok(notified)
    }
}

/// The seam to the shared loop: parking the reactor is one `epoll_wait`.
impl Park for Driver {
    fn park(&self, timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool> {
        self.turn(timeout, wakers)
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        self.notifier.clone()
    }

    /// Marks the driver dead and hands back every stored waker, so that tasks still holding
    /// sockets of this runtime (outside it) see an error instead of waiting forever.
    fn shut_down(&self, wakers: &mut Vec<Waker>) {
        self.alive.set(false);
        let mut ios = self.ios.borrow_mut();
        for (_, io) in ios.iter_mut() {
            io.take_waiters(u8::MAX, wakers);
        }
    }
}

/// An fd registered with a [`Driver`]: the building block of every socket type.
///
/// Owns the fd. Dropping it removes the fd from the epoll set and then closes it.
#[derive(Debug)]
pub(crate) struct IoSource {
    // Field order matters only for readability: `Drop` deregisters explicitly before the fd
    // is closed by `OwnedFd`'s own drop.
    driver: std::rc::Rc<Driver>,
    key: Key,
    fd: OwnedFd,
}

impl IoSource {
    /// Registers `fd` with `driver`. The fd must be non-blocking.
    pub(crate) fn new(driver: std::rc::Rc<Driver>, fd: OwnedFd) -> io::Result<IoSource> {
        let key = driver.register(fd.as_fd())?;
        Ok(IoSource { driver, key, fd })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn driver(&self) -> &std::rc::Rc<Driver> {
        &self.driver
    }

    /// Ready when an operation in `direction` is worth trying. Charges the task's budget (see
    /// `executor`), so a socket that is always ready cannot keep its task running forever.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>, direction: Direction) -> Poll<io::Result<()>> {
        std::task::ready!(executor::poll_budget(cx));
        self.driver.poll_ready(self.key, cx, direction)
    }

    /// Runs the non-blocking syscall `op` once readiness allows, clearing readiness and waiting
    /// again on `EAGAIN`.
    ///
    /// `op` returns the syscall's result and whether the transfer was short (fewer bytes than
    /// asked, which on a stream socket also proves the kernel buffer is drained or full).
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<(R, bool)>,
    ) -> Poll<io::Result<R>> {
        loop {
            std::task::ready!(self.poll_ready(cx, direction))?;
            if let Some(result) = self.attempt(direction, &mut op) {
                return Poll::Ready(result);
            }
        }
    }

    /// Like [`poll_io`](Self::poll_io) but never waits (and charges no budget): `WouldBlock`
    /// when the direction is not ready or the syscall says `EAGAIN`.
    pub(crate) fn try_io<R>(
        &self,
        direction: Direction,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<(R, bool)>,
    ) -> io::Result<R> {
        let would_block = || io::Error::from(io::ErrorKind::WouldBlock);
        if !self.driver.is_ready(self.key, direction)? {
            return Err(would_block());
        }
        self.attempt(direction, &mut op).unwrap_or_else(|| Err(would_block()))
    }

    /// One try of `op` on a ready `direction`: `None` if it would block (readiness is then
    /// cleared), otherwise its result. Retries on `EINTR`.
    fn attempt<R>(
        &self,
        direction: Direction,
        op: &mut impl FnMut(BorrowedFd<'_>) -> io::Result<(R, bool)>,
    ) -> Option<io::Result<R>> {
        loop {
            match op(self.fd()) {
                Ok((value, short)) => {
                    if short {
                        self.driver.clear_readiness(self.key, direction, Exhausted::Short);
                    }
                    return Some(Ok(value));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.driver.clear_readiness(self.key, direction, Exhausted::WouldBlock);
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Drop for IoSource {
    fn drop(&mut self) {
        self.driver.deregister(self.key, self.fd.as_fd());
        // The fd itself is closed by `OwnedFd`'s drop, right after: one more syscall.
        stats::bump(|c| &c.sys_other);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_collide_with_the_notifier() {
        let key = Key { index: u32::MAX - 1, generation: NonZeroU32::MAX };
        assert_eq!(Key::from_token(key.token()), Some(key));
        assert_ne!(key.token(), NOTIFY_TOKEN);
    }

    #[test]
    fn a_turn_that_sees_the_notifier_re_arms_it() {
        let driver = Driver::new(16).unwrap();
        let notifier = driver.notifier.clone();
        notifier.notify();
        assert!(driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap());
        // Drained by the turn: the next notify writes the eventfd again.
        assert!(!notifier.is_pending());
        notifier.notify();
        assert_eq!(executor::sys::eventfd_drain(notifier.fd()).unwrap(), 1);
        assert!(!driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap());
    }
}
