//! The epoll driver: turns "this fd is ready" into "wake that task".
//!
//! # Registrations
//!
//! Every socket the runtime owns is registered once, when it is created, for
//! `EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET`, and removed once, just before it is
//! closed. Its state, a [`ScheduledIo`] (readiness bits and the waiting task), is shared through
//! an `Rc` by the socket and the driver, so an operation checks, clears and waits for readiness
//! through its own pointer: a `Cell` load or store, no lookup, no borrow flag, no generation.
//!
//! The 64-bit token the kernel hands back with each event is the state's address, and the
//! driver turns it back into a reference when it dispatches the event (in one fenced place, the
//! `token` module). That is sound because of one invariant: **a state outlives every event that
//! can name it.** The driver's registry holds each state from the `epoll_ctl(ADD)` until the fd
//! has left the epoll set (`epoll_ctl(DEL)`, after which no `epoll_wait` reports it); a
//! deregistered state then waits on a release list that is emptied only at the start of the
//! next turn, so the batch being dispatched, which may have been collected before the `DEL`, can
//! never name freed memory. A stale event (its socket closed, its fd number already reused by
//! a new socket) lands in the closed socket's own state, which nobody waits on.
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
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

pub(crate) use executor::readiness::Direction;
pub(crate) use executor::readiness::Exhausted;
use executor::readiness::{self, readiness_of};
use executor::readiness::{ERROR, READABLE, READ_CLOSED, URGENT, WRITABLE, WRITE_CLOSED};
use executor::{Notifier, Park, Unpark};

use crate::stats;
use crate::sys;
use crate::trace;

/// The token of the notifier's eventfd. A registration's token is the address of its state,
/// which is aligned and so never `u64::MAX`.
const NOTIFY_TOKEN: u64 = u64::MAX;

/// A readiness bit of the driver's own, set in every registration when the runtime is dropped:
/// operations then fail instead of waiting forever. It lives in the readiness byte so that an
/// operation's readiness check covers it for free; no event sets it and nothing clears it.
const SHUT_DOWN: u8 = 1 << 7;
const _: () = assert!(
    SHUT_DOWN & (READABLE | WRITABLE | READ_CLOSED | WRITE_CLOSED | ERROR | URGENT) == 0,
    "SHUT_DOWN must be a bit that epoll readiness never uses"
);

/// In [`ScheduledIo::interest`] (and in each entry of the driver's `others` table), a waiter's
/// interest is the readiness bits that concern it: the [`Direction::mask`] of each direction it
/// waits for, so that an event concerns it when `ready & interest != 0`, one test. One more bit,
/// which no readiness bit uses, says that some waiters of this registration are in `others`.
const HAS_OTHERS: u8 = 1 << 7;
const _: () = assert!(
    HAS_OTHERS & (READABLE | WRITABLE | READ_CLOSED | WRITE_CLOSED | ERROR | URGENT) == 0,
    "HAS_OTHERS must be a bit that epoll readiness never uses"
);

/// A direction as the interest of a waiter (see [`HAS_OTHERS`]).
#[inline]
fn bit(direction: Direction) -> u8 {
    direction.mask()
}

#[cold]
fn foreign_runtime() -> io::Error {
    io::Error::other("socket used outside the reactor runtime it was created in")
}

#[cold]
fn runtime_dropped() -> io::Error {
    io::Error::other("the reactor runtime this socket belongs to was dropped")
}

/// The state of one registration: 24 bytes (40 with the `Rc`'s counts, a 48-byte heap
/// block), plus the registry's 8, one per socket.
///
/// Shared by the socket that owns the fd ([`IoSource`]) and the driver (its registry, then its
/// release list). Operations reach it through the socket's `Rc`, the dispatch of an event
/// through its token; both run on the runtime's thread, one at a time, so plain `Cell`s do.
///
/// Usually one task drives a socket (stream I/O takes `&mut self`), so the first waiter's
/// waker is stored inline, with `interest` saying which directions it waits for. Other waiters
/// (several tasks accepting on one listener, the halves of a split stream polled with separate
/// wakers) go to the driver's `others` table, keyed by `index`, and `interest`'s `HAS_OTHERS`
/// bit says that there are some: the rare case costs no space in every connection's state. An
/// event wakes every waiter whose interest it concerns and removes it. Invariant: a waiter waits
/// for a direction only while that direction's readiness bits (see [`Direction::mask`]) are
/// clear.
///
/// The inline waker stays stored after its task was woken (it is woken by reference; its
/// interest bits are cleared): the same task almost always waits on the socket again, and then waiting is one
/// `will_wake` comparison, with no clone and no check of which runtime is running (the task
/// that was stored is one of this driver's runtime). A waker whose interest bits are clear is
/// only that cache, and any other task's waker replaces it.
pub(crate) struct ScheduledIo {
    waker: Cell<Option<Waker>>,
    /// The registration's key in the driver's registry and in `others`; fixed for its life.
    index: u32,
    /// `executor::readiness` bits, plus `SHUT_DOWN`.
    readiness: Cell<u8>,
    /// The readiness bits that concern `waker` (see [`HAS_OTHERS`]), plus `HAS_OTHERS`.
    interest: Cell<u8>,
}

impl fmt::Debug for ScheduledIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduledIo")
            .field("index", &self.index)
            .field("readiness", &self.readiness.get())
            .field("interest", &self.interest.get())
            .finish_non_exhaustive()
    }
}

impl ScheduledIo {
    /// Whether `direction` is ready; an error once the runtime is gone.
    #[inline]
    fn is_ready(&self, direction: Direction) -> io::Result<bool> {
        let readiness = self.readiness.get();
        if readiness & (direction.mask() | SHUT_DOWN) == 0 {
            return Ok(false);
        }
        if readiness & SHUT_DOWN != 0 {
            return Err(runtime_dropped());
        }
        Ok(true)
    }

    /// An operation in `direction` exhausted the readiness it saw.
    #[inline]
    fn clear(&self, direction: Direction, why: Exhausted) {
        let readiness = self.readiness.get();
        let cleared = readiness::exhaust(readiness, direction, why);
        self.readiness.set(readiness & !cleared);
        if why == Exhausted::Short && cleared == READABLE {
            stats::trace_step!(trace::Event::ShortRead { io: trace::Registration::of(self.index) });
        }
    }

    /// Records that the task of `waker` waits for `direction`: `false` (and nothing recorded)
    /// if that task may belong to another runtime than this driver's, which could never wake it.
    ///
    /// Inlined for its common case, the task whose waker is cached inline waiting again (one
    /// `will_wake` comparison); every other case is [`add_waiter_slow`](Self::add_waiter_slow).
    #[inline]
    fn add_waiter(&self, waker: &Waker, direction: Direction, driver: &Driver) -> bool {
        let stored = self.waker.take();
        if stored.as_ref().is_some_and(|stored| stored.will_wake(waker)) {
            // The same task as last time, which was polled by this driver's runtime.
            self.waker.set(stored);
            self.interest.set(self.interest.get() | bit(direction));
            return true;
        }
        self.add_waiter_slow(stored, waker, direction, driver)
    }

    /// [`add_waiter`](Self::add_waiter) when the cached waker (`stored`, taken out of its cell)
    /// is not this task's, or there is none.
    #[inline(never)]
    fn add_waiter_slow(
        &self,
        stored: Option<Waker>,
        waker: &Waker,
        direction: Direction,
        driver: &Driver,
    ) -> bool {
        if !executor::runs_driver::<Driver>(driver) {
            self.waker.set(stored);
            return false;
        }
        let interest = self.interest.get();
        match stored {
            Some(stored) if interest & !HAS_OTHERS != 0 => {
                // Another task waits here already.
                self.waker.set(Some(stored));
                driver.add_other_waiter(self, waker, bit(direction));
            }
            // Empty, or only the cache of a task that no longer waits: this task's now.
            cache => {
                self.waker.set(Some(waker.clone()));
                self.interest.set((interest & HAS_OTHERS) | bit(direction));
                drop(cache);
            }
        }
        true
    }

    /// Wakes the waiters that `ready` concerns: the inline one at once, by reference (it stays
    /// stored, as a cache: see the type's docs); the others' wakers are moved into `wakers`.
    /// Returns how many were woken here (0 or 1).
    ///
    /// Called while the driver holds no borrow of its state (see [`Driver::turn`]): a waker may
    /// run any code. If that code made this task wait here again, or another one, the waker it
    /// stored is kept and the cached one dropped.
    #[inline]
    fn wake_waiters(&self, ready: u8, driver: &Driver, wakers: &mut Vec<Waker>) -> usize {
        let interest = self.interest.get();
        let mut woken = 0;
        if ready & interest != 0 {
            self.interest.set(interest & HAS_OTHERS);
            let stored = self.waker.take();
            if let Some(waker) = &stored {
                waker.wake_by_ref();
                woken = 1;
            }
            let now = self.waker.take();
            self.waker.set(now.or(stored));
        }
        if interest & HAS_OTHERS != 0 && driver.take_other_waiters(self.index, ready, wakers) {
            self.interest.set(self.interest.get() & !HAS_OTHERS);
        }
        woken
    }

    /// Every stored waker, the cached inline one included, into `wakers`.
    fn take_all_waiters(&self, driver: &Driver, wakers: &mut Vec<Waker>) {
        self.interest.set(0);
        wakers.extend(self.waker.take());
        if let Some(others) = driver.others.borrow_mut().remove(&self.index) {
            wakers.extend(others.into_iter().map(|(waker, _)| waker));
        }
    }
}

/// The one place where a registration's state and its epoll token are turned into each other.
mod token {
    use std::rc::Rc;

    use super::ScheduledIo;

    /// The token of `io`: its address.
    pub(super) fn of(io: &Rc<ScheduledIo>) -> u64 {
        Rc::as_ptr(io) as usize as u64
    }

    /// The state whose token is `token`.
    ///
    /// # Safety
    ///
    /// `token` must be the token ([`of`]) of a state that stays alive for `'a`. The driver
    /// guarantees it for every token of an `epoll_wait` batch (other than the notifier's)
    /// until the next turn begins: see the driver's `registry` and `released`.
    pub(super) unsafe fn state<'a>(token: u64) -> &'a ScheduledIo {
        // SAFETY: by the caller's guarantee, `token` is the address of the value of a live
        // `Rc<ScheduledIo>`, which does not move while any `Rc` to it exists and lives for
        // `'a`. Only shared references to it are ever made (its fields are `Cell`s).
        unsafe { &*(token as usize as *const ScheduledIo) }
    }
}

/// Every registration whose fd may be in the epoll set, by index: 8 bytes per registration
/// (an `Rc`, whose niche is the vacant slot), plus 4 per vacant slot.
#[derive(Debug)]
struct Registry {
    slots: Vec<Option<Rc<ScheduledIo>>>,
    /// The vacant slots, the most recently vacated last: reused first.
    vacant: Vec<u32>,
}

impl Registry {
    fn with_capacity(capacity: usize) -> Registry {
        Registry { slots: Vec::with_capacity(capacity), vacant: Vec::new() }
    }

    fn len(&self) -> usize {
        self.slots.len() - self.vacant.len()
    }

    /// The index the next [`insert`](Self::insert) must use.
    fn next_index(&self) -> io::Result<u32> {
        match self.vacant.last() {
            Some(&index) => Ok(index),
            None => u32::try_from(self.slots.len()).map_err(|_| io::Error::other("too many registrations")),
        }
    }

    /// Inserts `io` at its index, which [`next_index`](Self::next_index) gave.
    fn insert(&mut self, io: Rc<ScheduledIo>) {
        let index = io.index;
        if self.vacant.last() == Some(&index) {
            self.vacant.pop();
            self.slots[index as usize] = Some(io);
        } else {
            debug_assert_eq!(index as usize, self.slots.len());
            self.slots.push(Some(io));
        }
    }

    fn remove(&mut self, index: u32) -> Option<Rc<ScheduledIo>> {
        let io = self.slots.get_mut(index as usize)?.take()?;
        self.vacant.push(index);
        Some(io)
    }

    fn iter(&self) -> impl Iterator<Item = &Rc<ScheduledIo>> {
        self.slots.iter().flatten()
    }
}

/// The epoll instance and every registration on it. Lives on the runtime's thread.
#[derive(Debug)]
pub struct Driver {
    epoll: OwnedFd,
    notifier: Arc<Notifier>,
    /// Scratch space `epoll_wait` writes into; its length is the events-per-wait limit.
    events: RefCell<Vec<libc::epoll_event>>,
    /// Every registration whose fd may be in the epoll set: what keeps its state alive while
    /// the kernel may report it, how `shut_down` reaches every waiter, and what
    /// `registrations` counts. Touched only when a socket is registered or deregistered.
    registry: RefCell<Registry>,
    /// States deregistered since the last turn began. Their fds have left the epoll set, but
    /// the batch being dispatched may have been collected before that and name them; freeing
    /// them when the next turn begins, before its `epoll_wait`, means no batch ever names a
    /// freed state (see the module docs).
    released: RefCell<Vec<Rc<ScheduledIo>>>,
    /// The waiters that do not fit in their registration's inline waker, by registration index
    /// (see [`ScheduledIo`]). Usually empty.
    others: RefCell<HashMap<u32, Vec<(Waker, u8)>>>,
    /// False once the runtime is dropped; a registration made after that (there is no way to
    /// make one, but in case) starts shut down.
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
            registry: RefCell::new(Registry::with_capacity(executor::slab_capacity())),
            released: RefCell::new(Vec::new()),
            others: RefCell::new(HashMap::new()),
            alive: Cell::new(true),
        })
    }

    /// The number of fds currently registered.
    pub(crate) fn registrations(&self) -> usize {
        self.registry.borrow().len()
    }

    fn register(&self, fd: BorrowedFd<'_>) -> io::Result<Rc<ScheduledIo>> {
        let mut registry = self.registry.borrow_mut();
        let index = registry.next_index()?;
        let readiness = if self.alive.get() { 0 } else { SHUT_DOWN };
        let io = Rc::new(ScheduledIo {
            waker: Cell::new(None),
            index,
            readiness: Cell::new(readiness),
            interest: Cell::new(0),
        });
        #[cfg(feature = "trace")]
        if executor::trace::on() {
            executor::trace::note_fd(index, fd.as_raw_fd());
        }
        let events = executor::sys::EPOLL_SOCKET_EVENTS;
        sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), events, token::of(&io))?;
        registry.insert(io.clone());
        Ok(io)
    }

    fn deregister(&self, io: &ScheduledIo, fd: BorrowedFd<'_>) {
        // Removing from the epoll set before the fd is closed matters: epoll tracks the open
        // file, not the number, so a dup of this fd elsewhere would keep the registration alive.
        let removed = sys::epoll_del(self.epoll.as_fd(), fd.as_raw_fd()).is_ok();
        let others = if io.interest.get() & HAS_OTHERS != 0 {
            self.others.borrow_mut().remove(&io.index)
        } else {
            None
        };
        io.interest.set(0);
        let waker = io.waker.take();
        if removed {
            let state = self.registry.borrow_mut().remove(io.index);
            debug_assert!(state.as_ref().is_some_and(|state| std::ptr::eq(Rc::as_ptr(state), io)));
            self.released.borrow_mut().extend(state);
        }
        // Otherwise the fd was closed or replaced behind the socket's back (`DEL` fails only
        // then), and the kernel may go on reporting the open file under this token: the state
        // stays in the registry for the driver's life, where such an event finds nobody waiting.
        //
        // Dropped outside every borrow: a waker's drop may run arbitrary code.
        drop((waker, others));
    }

    fn add_other_waiter(&self, io: &ScheduledIo, waker: &Waker, interest: u8) {
        let mut others = self.others.borrow_mut();
        let list = others.entry(io.index).or_default();
        match list.iter_mut().find(|(w, _)| w.will_wake(waker)) {
            Some((_, bits)) => *bits |= interest,
            None => list.push((waker.clone(), interest)),
        }
        io.interest.set(io.interest.get() | HAS_OTHERS);
    }

    /// Moves the wakers of registration `index`'s other waiters that `ready` concerns into
    /// `wakers`; true if none is left.
    fn take_other_waiters(&self, index: u32, ready: u8, wakers: &mut Vec<Waker>) -> bool {
        let mut others = self.others.borrow_mut();
        let Some(list) = others.get_mut(&index) else { return true };
        list.retain(|(waker, interest)| {
            let concerned = ready & *interest != 0;
            if concerned {
                wakers.push(waker.clone());
            }
            !concerned
        });
        let none_left = list.is_empty();
        if none_left {
            others.remove(&index);
        }
        none_left
    }

    /// One `epoll_wait` (bounded by `timeout`, rounded up to whole milliseconds so a timer is
    /// never fired early), then dispatch: apply each event's readiness and wake the tasks it
    /// concerns. A socket's own waiting task is woken at once (a local wake-up just queues it);
    /// the wakers of its other waiters, if any, are moved into `wakers`, and the caller wakes
    /// them after this returns.
    ///
    /// While the batch is dispatched no borrow of driver state is held (the event buffer is
    /// taken out of its cell), because a waker may run any code: drop sockets, register new
    /// ones. It must not free a state the rest of the batch names, which only a nested turn
    /// would do (it empties `released`), so a nested turn is refused: it finds the buffer gone.
    ///
    /// Returns whether the notifier fired, i.e. whether another thread posted work.
    fn turn(&self, timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool> {
        let mut batch = Batch { driver: self, events: self.events.take() };
        if batch.events.is_empty() {
            return Err(io::Error::other("the reactor's driver was parked from within its own dispatch"));
        }
        // States deregistered before this point have left the epoll set: the wait below cannot
        // report them, and the previous batch is done with. (Dropping them runs no user code:
        // `deregister` took their wakers.)
        self.released.borrow_mut().clear();
        let timeout_ms = executor::sys::epoll_timeout(timeout);
        let n = match sys::epoll_wait(self.epoll.as_fd(), &mut batch.events, timeout_ms) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        stats::batch(n);

        let mut notified = false;
        for event in &batch.events[..n] {
            let (token, bits) = (event.u64, event.events);
            if token == NOTIFY_TOKEN {
                stats::trace_step!(trace::SysEvent::Notified);
                self.notifier.drain();
                notified = true;
                continue;
            }
            // SAFETY: every other token of this batch is a registration's, whose state the
            // registry or the release list holds until the next turn begins (and no turn
            // begins while this one dispatches).
            let io = unsafe { token::state(token) };
            let ready = readiness_of(bits);
            io.readiness.set(io.readiness.get() | ready);
            let before = wakers.len();
            let woken = io.wake_waiters(ready, self, wakers);
            stats::trace_step!(trace::Event::Ready {
                io: trace::Registration::of(io.index),
                ready,
                woken: wakers.len() - before + woken,
            });
        }
        Ok(notified)
    }
}

/// An `epoll_wait` batch, taken out of the driver's cell while it is dispatched, and put back
/// when it is done with (even if a waker panics).
struct Batch<'a> {
    driver: &'a Driver,
    events: Vec<libc::epoll_event>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.driver.events.replace(std::mem::take(&mut self.events));
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

    /// Marks every registration shut down and hands back every stored waker, so that tasks
    /// still holding sockets of this runtime (outside it) see an error instead of waiting
    /// forever.
    fn shut_down(&self, wakers: &mut Vec<Waker>) {
        self.alive.set(false);
        for io in self.registry.borrow().iter() {
            io.readiness.set(io.readiness.get() | SHUT_DOWN);
            io.take_all_waiters(self, wakers);
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
    driver: Rc<Driver>,
    io: Rc<ScheduledIo>,
    fd: OwnedFd,
}

impl IoSource {
    /// Registers `fd` with `driver`. The fd must be non-blocking.
    pub(crate) fn new(driver: Rc<Driver>, fd: OwnedFd) -> io::Result<IoSource> {
        let io = driver.register(fd.as_fd())?;
        Ok(IoSource { driver, io, fd })
    }

    #[inline]
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn driver(&self) -> &Rc<Driver> {
        &self.driver
    }

    /// Ready when an operation in `direction` is worth trying, and then charges the task's
    /// budget for it (see `executor`), so a socket that is always ready cannot keep its task
    /// running forever; otherwise the task waits for the direction's next event.
    #[inline]
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>, direction: Direction) -> Poll<io::Result<()>> {
        match self.io.is_ready(direction) {
            Ok(true) => executor::poll_budget(cx).map(Ok),
            Ok(false) => self.wait(cx, direction),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Records that an operation in `direction`, made after [`poll_ready`](Self::poll_ready)
    /// said ready, exhausted the readiness it saw (for operations that make their syscalls
    /// themselves, as [`TcpStream::poll_read_with`](crate::net::TcpStream::poll_read_with)'s
    /// closure does).
    #[inline]
    pub(crate) fn clear(&self, direction: Direction, why: Exhausted) {
        self.io.clear(direction, why);
    }

    /// Records the task as a waiter for `direction`.
    #[inline]
    fn wait(&self, cx: &mut Context<'_>, direction: Direction) -> Poll<io::Result<()>> {
        if self.io.add_waiter(cx.waker(), direction, &self.driver) {
            Poll::Pending
        } else {
            // Only this driver's runtime can wake the task, so it must be the one running (a
            // socket awaited from another runtime would otherwise wait forever).
            Poll::Ready(Err(foreign_runtime()))
        }
    }

    /// Runs the non-blocking syscall `op` once readiness allows, clearing readiness and waiting
    /// again on `EAGAIN`. One readiness check and one budget charge per operation that makes a
    /// syscall.
    ///
    /// `op` returns the syscall's result and whether it proved the direction's readiness
    /// exhausted ([`Exhausted::Short`]: a transfer shorter than asked, which on a stream socket
    /// proves the kernel buffer drained or full; or [`Exhausted::WouldBlock`], from an `op`
    /// that makes several syscalls and got something before the `EAGAIN`). An `op` that gets
    /// nothing but `EAGAIN` returns it as a `WouldBlock` error.
    #[inline]
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        direction: Direction,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<(R, Option<Exhausted>)>,
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
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<(R, Option<Exhausted>)>,
    ) -> io::Result<R> {
        let would_block = || io::Error::from(io::ErrorKind::WouldBlock);
        if !self.io.is_ready(direction)? {
            return Err(would_block());
        }
        self.attempt(direction, &mut op).unwrap_or_else(|| Err(would_block()))
    }

    /// One try of `op` on a ready `direction`: `None` if it would block (readiness is then
    /// cleared), otherwise its result. Retries on `EINTR`.
    #[inline]
    fn attempt<R>(
        &self,
        direction: Direction,
        op: &mut impl FnMut(BorrowedFd<'_>) -> io::Result<(R, Option<Exhausted>)>,
    ) -> Option<io::Result<R>> {
        loop {
            match op(self.fd()) {
                Ok((value, exhausted)) => {
                    if let Some(why) = exhausted {
                        self.io.clear(direction, why);
                    }
                    return Some(Ok(value));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.io.clear(direction, Exhausted::WouldBlock);
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
        self.driver.deregister(&self.io, self.fd.as_fd());
        // The fd itself is closed by `OwnedFd`'s drop, right after: one more syscall.
        stats::bump(|c| &c.sys_other);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Runs `test` inside `block_on` of a runtime on a fresh driver (a task waits only on the
    /// driver of the runtime that polls it), handing it the driver. `test` runs within one
    /// poll: the driver turns only when `test` calls `turn`.
    fn on_a_driver(test: impl FnOnce(&Rc<Driver>)) {
        let runtime = executor::Runtime::new(Driver::new(16).unwrap(), executor::Config::default(), 64);
        runtime.block_on(async { test(runtime.driver()) });
    }

    /// A non-blocking Unix stream pair: the first end registered with `driver`, the second
    /// left to the test as the peer.
    fn registered_pair(driver: &Rc<Driver>) -> (IoSource, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (IoSource::new(driver.clone(), ours.into()).unwrap(), peer)
    }

    /// A waker of its own (wakers of distinct `Task`s never `will_wake` each other).
    fn task_waker() -> Waker {
        counted_waker(|| {}).0
    }

    /// A waker that counts its wakes (the count is the second value) and runs `on_wake` at each.
    fn counted_waker(on_wake: impl Fn() + Send + Sync + 'static) -> (Waker, Arc<Task>) {
        let task = Arc::new(Task { wakes: AtomicUsize::new(0), on_wake: Box::new(on_wake) });
        (futures_task::waker(task.clone()), task)
    }

    struct Task {
        wakes: AtomicUsize,
        on_wake: Box<dyn Fn() + Send + Sync>,
    }

    impl Task {
        fn wakes(&self) -> usize {
            self.wakes.load(Ordering::SeqCst)
        }
    }

    impl futures_task::ArcWake for Task {
        fn wake_by_ref(task: &Arc<Self>) {
            task.wakes.fetch_add(1, Ordering::SeqCst);
            (task.on_wake)();
        }
    }

    #[test]
    fn a_registration_token_is_never_the_notifiers() {
        on_a_driver(|driver| {
            let (source, _peer) = registered_pair(driver);
            assert_ne!(token::of(&source.io), NOTIFY_TOKEN);
            // SAFETY: `source` holds the state alive for the whole borrow.
            let io = unsafe { token::state(token::of(&source.io)) };
            assert!(std::ptr::eq(io, &*source.io));
        });
    }

    #[test]
    fn a_deregistered_state_lives_until_the_next_turn_begins() {
        on_a_driver(|driver| {
            let (source, _peer) = registered_pair(driver);
            let state = Rc::downgrade(&source.io);
            assert_eq!(driver.registrations(), 1);
            drop(source);
            assert_eq!(driver.registrations(), 0);
            assert!(state.upgrade().is_some(), "freed at once: the batch being dispatched could name it");
            driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
            assert!(state.upgrade().is_none(), "still alive after the next turn began");
        });
    }

    #[test]
    fn a_closed_sockets_pending_event_cannot_reach_the_socket_that_reuses_its_slot() {
        on_a_driver(|driver| {
            let (a, mut peer_a) = registered_pair(driver);
            // A second descriptor of the same open file, so that the file (and, had the
            // driver not removed it from the epoll set, its registration) outlives `a`'s close.
            let dup = a.fd().try_clone_to_owned().unwrap();
            let (a_index, a_state) = (a.io.index, Rc::downgrade(&a.io));
            peer_a.write_all(b"a").unwrap(); // an event for `a` is now pending in the kernel
            drop(a);
            // In the same turn, a new socket takes `a`'s registry slot (and most likely its fd
            // number) and gets an event of its own; `a`'s file gets another one.
            let (b, mut peer_b) = registered_pair(driver);
            assert_eq!(b.io.index, a_index, "the slot is reused at once");
            let (waker, task) = counted_waker(|| {});
            assert!(b.io.add_waiter(&waker, Direction::Read, driver));
            peer_b.write_all(b"b").unwrap();
            peer_a.write_all(b"more").unwrap();

            let before = crate::stats();
            let mut wakers = Vec::new();
            driver.turn(Some(Duration::ZERO), &mut wakers).unwrap();
            let s = crate::stats().since(&before);
            assert_eq!(s.events, 1, "only `b`'s event: {s:?}");
            assert_eq!(task.wakes(), 1);
            assert!(wakers.is_empty(), "the inline waiter is woken by the turn itself");
            assert!(b.io.is_ready(Direction::Read).unwrap());
            assert!(a_state.upgrade().is_none(), "`a`'s state was freed when the turn began");
            drop(dup);
        });
    }

    #[test]
    fn a_woken_tasks_cached_waker_is_replaced_by_the_next_task_not_woken_again() {
        on_a_driver(|driver| {
            let (source, mut peer) = registered_pair(driver);
            let ((first, first_task), (second, second_task)) = (counted_waker(|| {}), counted_waker(|| {}));
            assert!(source.io.add_waiter(&first, Direction::Read, driver));
            peer.write_all(b"1").unwrap();
            let mut wakers = Vec::new();
            driver.turn(Some(Duration::ZERO), &mut wakers).unwrap();
            assert_eq!(first_task.wakes(), 1);
            // The first task stops waiting (its readiness is consumed), another one starts.
            source.io.clear(Direction::Read, Exhausted::WouldBlock);
            assert!(source.io.add_waiter(&second, Direction::Read, driver));
            assert!(driver.others.borrow().is_empty(), "a task that no longer waits is no waiter");
            peer.write_all(b"2").unwrap();
            driver.turn(Some(Duration::ZERO), &mut wakers).unwrap();
            assert_eq!((first_task.wakes(), second_task.wakes()), (1, 1), "woke the wrong task");
            assert!(wakers.is_empty());
        });
    }

    #[test]
    fn waiting_outside_the_drivers_runtime_is_refused() {
        let driver = Rc::new(Driver::new(16).unwrap());
        let (source, _peer) = registered_pair(&driver);
        assert!(!source.io.add_waiter(&task_waker(), Direction::Read, &driver));
        assert!(driver.others.borrow().is_empty());
    }

    #[test]
    fn after_shut_down_operations_fail_and_waiters_are_handed_back() {
        on_a_driver(|driver| {
            let (source, _peer) = registered_pair(driver);
            let (first, second) = (task_waker(), task_waker());
            assert!(source.io.add_waiter(&first, Direction::Read, driver));
            assert!(source.io.add_waiter(&second, Direction::Write, driver));
            assert_eq!(driver.others.borrow().len(), 1, "a second task's waker goes to `others`");
            let mut wakers = Vec::new();
            driver.shut_down(&mut wakers);
            assert_eq!(wakers.len(), 2);
            assert!(driver.others.borrow().is_empty());
            assert!(source.io.is_ready(Direction::Read).is_err());
            assert!(source.io.is_ready(Direction::Write).is_err());
        });
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

    thread_local! {
        /// What the wakers of the tests below reach (a waker must be `Send`; these run on the
        /// driver's thread).
        static DRIVER: RefCell<Option<Rc<Driver>>> = const { RefCell::new(None) };
        static SOCKETS: RefCell<Vec<IoSource>> = const { RefCell::new(Vec::new()) };
        /// Per nested turn: whether it was refused, and whether the state released before it
        /// was still alive after it.
        static NESTED: RefCell<Vec<(bool, bool)>> = const { RefCell::new(Vec::new()) };
        static RELEASED: RefCell<Option<std::rc::Weak<ScheduledIo>>> = const { RefCell::new(None) };
    }

    #[test]
    fn a_waker_may_close_and_open_sockets_while_the_batch_is_dispatched() {
        on_a_driver(|driver| {
            let (a, mut peer_a) = registered_pair(driver);
            let (b, mut peer_b) = registered_pair(driver);
            DRIVER.set(Some(driver.clone()));
            // `a`'s waker closes `b` (its state must outlive the batch that names it) and
            // registers a new socket in the slot `b` frees.
            SOCKETS.set(vec![b]);
            let b_state = Rc::downgrade(&SOCKETS.with_borrow(|s| s[0].io.clone()));
            let (a_waker, a_task) = counted_waker(|| {
                drop(SOCKETS.take());
                let driver = DRIVER.with_borrow(|d| d.clone().unwrap());
                SOCKETS.set(vec![registered_pair(&driver).0]);
            });
            let (b_waker, b_task) = counted_waker(|| {});
            assert!(a.io.add_waiter(&a_waker, Direction::Read, driver));
            SOCKETS.with_borrow(|s| assert!(s[0].io.add_waiter(&b_waker, Direction::Read, driver)));
            peer_a.write_all(b"a").unwrap();
            peer_b.write_all(b"b").unwrap();
            driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
            assert_eq!(a_task.wakes(), 1);
            // `b` was closed by `a`'s wake before or after its own event was dispatched; its
            // state lived until the next turn either way, and a closed socket wakes nobody.
            assert!(b_task.wakes() <= 1);
            driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
            assert!(b_state.upgrade().is_none());
            assert_eq!(driver.registrations(), 2, "`a` and the socket opened by its waker");
            SOCKETS.take();
            DRIVER.take();
        });
    }

    #[test]
    fn a_turn_from_within_a_wakers_code_is_refused_and_the_batch_goes_on() {
        on_a_driver(|driver| {
            let (a, mut peer_a) = registered_pair(driver);
            let (b, mut peer_b) = registered_pair(driver);
            let (c, mut peer_c) = registered_pair(driver);
            DRIVER.set(Some(driver.clone()));
            // `c`'s state, released during the batch, must outlive it: the batch may name it.
            RELEASED.set(Some(Rc::downgrade(&c.io)));
            SOCKETS.set(vec![c]);
            let (a_waker, _) = counted_waker(|| {
                drop(SOCKETS.take());
                let driver = DRIVER.with_borrow(|d| d.clone().unwrap());
                let nested = driver.turn(Some(Duration::ZERO), &mut Vec::new());
                let c_alive = RELEASED.with_borrow(|c| c.as_ref().unwrap().upgrade().is_some());
                NESTED.with_borrow_mut(|n| n.push((nested.is_err(), c_alive)));
            });
            let (b_waker, b_task) = counted_waker(|| {});
            assert!(a.io.add_waiter(&a_waker, Direction::Read, driver));
            assert!(b.io.add_waiter(&b_waker, Direction::Read, driver));
            peer_a.write_all(b"a").unwrap();
            peer_b.write_all(b"b").unwrap();
            peer_c.write_all(b"c").unwrap();
            driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
            let nested = NESTED.take();
            assert_eq!(nested, [(true, true)], "a nested turn ran, freeing a state the batch may name");
            assert_eq!(b_task.wakes(), 1, "the rest of the batch was dispatched");
            assert!(a.io.is_ready(Direction::Read).unwrap() && b.io.is_ready(Direction::Read).unwrap());
            // And the driver turns as before once the batch is done.
            peer_a.write_all(b"again").unwrap();
            assert!(driver.turn(Some(Duration::ZERO), &mut Vec::new()).is_ok());
            DRIVER.take();
            RELEASED.take();
        });
    }

    #[test]
    fn a_waiter_stored_by_a_wakers_code_is_kept_not_the_cached_waker() {
        on_a_driver(|driver| {
            let (a, mut peer) = registered_pair(driver);
            SOCKETS.set(vec![a]);
            DRIVER.set(Some(driver.clone()));
            let (next, next_task) = counted_waker(|| {});
            let (first, first_task) = counted_waker(move || {
                // This task's code hands the socket to another task, which waits on it at once.
                let driver = DRIVER.with_borrow(|d| d.clone().unwrap());
                SOCKETS.with_borrow(|s| {
                    s[0].io.clear(Direction::Read, Exhausted::WouldBlock);
                    assert!(s[0].io.add_waiter(&next, Direction::Read, &driver));
                });
            });
            SOCKETS.with_borrow(|s| assert!(s[0].io.add_waiter(&first, Direction::Read, driver)));
            peer.write_all(b"1").unwrap();
            driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
            assert_eq!(first_task.wakes(), 1);
            SOCKETS.with_borrow(|s| s[0].io.clear(Direction::Read, Exhausted::WouldBlock));
            peer.write_all(b"2").unwrap();
            driver.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
            assert_eq!((first_task.wakes(), next_task.wakes()), (1, 1), "the new waiter was lost");
            SOCKETS.take();
            DRIVER.take();
        });
    }
}
