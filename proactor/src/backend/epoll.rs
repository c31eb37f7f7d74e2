//! The epoll backend: completion emulated on readiness.
//!
//! This is the third way to build a proactor, and the one most programs that say "proactor"
//! run on Linux: Boost.Asio's sockets work like this. The caller hands over a whole operation
//! (fd, buffer) exactly as on io_uring; the backend keeps it in a queue, waits with epoll until
//! the socket is ready, performs the `recv`/`send`/`accept4` itself, and posts the completion.
//! The `net` API, owned buffers, `read_provided`, timers and the executor are the same as on the
//! other backends; only who performs the operation changes. It is also what runs when io_uring
//! is not there ([`Backend::Auto`]): missing from the kernel, disabled by
//! `kernel.io_uring_disabled`, or blocked by a container's seccomp policy.
//!
//! # How it works
//!
//! - **One registration per socket.** The first operation on an fd adds it to the epoll set,
//!   edge-triggered, for input and output at once
//!   ([`EPOLL_SOCKET_EVENTS`](executor::sys::EPOLL_SOCKET_EVENTS)); it is removed when the fd
//!   is closed, never per operation. The token packs the fd with a generation, so an event left
//!   over from a closed fd whose number was reused wakes nothing.
//! - **Readiness is the reactor's.** Events set readiness bits, and only `EAGAIN` or a transfer
//!   shorter than asked clears them: the protocol and bits of `executor::readiness`, the very
//!   code the `reactor` crate runs. As in the reactor, no tick is needed: events are applied and
//!   operations performed on the same thread, in the same turn.
//! - **Two queues per socket**, reads (and accepts) and writes (and connects), each performed in
//!   order when its direction is ready.
//! - **Performed as it is started, when the socket is known to be ready** in its direction and
//!   nothing is queued ahead of it: an echo's send, on a socket whose last send went out whole,
//!   is made while the task that started it runs, as the reactor's task makes it; its
//!   completion is posted at the next turn. Only `EAGAIN` sends it to its queue. Where the
//!   readiness bits say "not ready" (a receive after one that came short), nothing is tried:
//!   that try would be an `EAGAIN` syscall the reactor does not make either.
//! - **A send behind goes out from the task** ([`Io::send_now`]): on the same conditions the
//!   driver has the backend send the bytes at once, before it takes a slot for the operation;
//!   a send that goes out whole (the usual case: an echo on a socket with room) is over there
//!   and then, with no slot, no record in the driver, no completion, as the reactor's send.
//!   Only the rest of a short send becomes an operation.
//! - **Sockets stay blocking** (glibc's aio threads need them so, and the socket layer is
//!   shared): `recv` and `send` pass `MSG_DONTWAIT`. Listeners and connecting sockets, where
//!   no such flag exists, are switched to `O_NONBLOCK` once.
//! - **`read_provided` takes a buffer at readiness.** A `RecvPick` request carries no buffer:
//!   when the socket is readable, the backend takes one from the thread's pool of spare 4 KiB
//!   buffers, receives into it, and names it in the completion ([`BufId::Picked`]); `net` takes
//!   it from here by that id. So an
//!   idle connection holds no buffer, as on io_uring; there is no shared ring to run dry, and
//!   because each receive is asked for by the task, a peer whose echoes are not read back cannot
//!   make buffers pile up.
//!
//! # Cancelling
//!
//! Trivial here, and exact. An operation that has not run is in a queue of this backend and
//! nowhere else: nothing was handed to the kernel, so dropping its future removes it from the
//! queue and its completion (`ECANCELED`) is posted at the next turn. An operation that has run
//! is over (a syscall here is never "in flight"): its completion is posted already, or waits
//! for the next turn in `ready`, so there is no race with data: the driver's orphan handling
//! (bytes kept for the next read, an accepted fd closed) covers the only case, a completion its
//! future never looked at.
//!
//! # What the emulation costs
//!
//! Against the reactor: the same syscalls (`epoll_wait` shared by every socket ready at once,
//! then one `recv` or `send` each), plus the completion step of each receive: the operation is
//! queued, the backend performs it, stores the result in the operation's slot and wakes the
//! task, which then takes the result and buffer back. The reactor's task makes the syscall
//! itself, on the poll that found the socket ready; here the task does so only for a send
//! behind on a writable socket (`send_now`), and an operation started on a ready socket is
//! performed at once but completes at the next turn. That is a few hundred nanoseconds of user
//! time per echo, no extra syscall.
//!
//! Against io_uring: every operation is its own syscall, made by this thread (io_uring hands a
//! whole turn's operations to the kernel in one `io_uring_enter`, and the kernel performs them,
//! often before the data would have made an epoll event), and each wait is an `epoll_wait`
//! (`io_uring_enter` submits and waits at once). What the kernel cannot do for us here is batch:
//! about two syscalls per echo plus the shared waits, where io_uring needs well under one.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use executor::readiness::{self, readiness_of, Direction, Exhausted};
use executor::Notifier;
use slab::Slab;

use crate::backend::io::{Backend, BufId, Completion, Facts, Io, Request};
use crate::buf::{self, ProvidedBuf};
use crate::stats;
use crate::sys;
use crate::trace;

/// The token of the notifier's eventfd; fd tokens never reach it (their generation is below
/// `u32::MAX`).
const NOTIFY_TOKEN: u64 = u64::MAX;
/// How many events one `epoll_wait` returns at most.
const EVENTS_PER_WAIT: usize = 1024;
/// Buffer ids are 16 bits (as io_uring's): at most this many picked buffers wait for `net`.
const MAX_PICKED: usize = u16::MAX as usize;

/// An operation waiting for its socket, in the slot of its operation index (see `Waiting`).
/// A queued `Connect` is one whose `connect` said `EINPROGRESS` (see `Epoll::start`): it is
/// done when the socket is writable.
#[derive(Clone, Copy, Debug)]
struct Queued {
    request: Request,
    /// The next operation in the same queue (its index + 1), 0 for none.
    next: u32,
}

/// The operations waiting in one direction of a socket, oldest first: a list linked through
/// [`Waiting`], by operation index + 1 (0: empty). Eight bytes per direction, whatever the
/// length: an idle socket's state stays small.
#[derive(Clone, Copy, Debug, Default)]
struct Queue {
    head: u32,
    tail: u32,
}

/// Every queued operation, by operation index (the driver's slot): the storage of the queues.
#[derive(Debug, Default)]
struct Waiting(Vec<Option<Queued>>);

impl Waiting {
    fn get(&self, index: usize) -> Option<Queued> {
        self.0.get(index).copied().flatten()
    }

    fn push(&mut self, queue: &mut Queue, index: usize, request: Request) {
        if self.0.len() <= index {
            self.0.resize(index + 1, None);
        }
        self.0[index] = Some(Queued { request, next: 0 });
        let link = index as u32 + 1;
        match queue.tail {
            0 => queue.head = link,
            tail => self.0[tail as usize - 1].as_mut().expect("the tail is queued").next = link,
        }
        queue.tail = link;
    }

    /// The oldest operation of `queue`.
    fn front(&self, queue: &Queue) -> Option<(usize, Request)> {
        let index = (queue.head as usize).checked_sub(1)?;
        self.get(index).map(|queued| (index, queued.request))
    }

    fn pop(&mut self, queue: &mut Queue) -> Option<usize> {
        let index = (queue.head as usize).checked_sub(1)?;
        let queued = self.0[index].take()?;
        queue.head = queued.next;
        if queue.head == 0 {
            queue.tail = 0;
        }
        Some(index)
    }

    /// Removes operation `index` from `queue`; whether it was there.
    fn remove(&mut self, queue: &mut Queue, index: usize) -> bool {
        let link = index as u32 + 1;
        let mut prev = 0;
        let mut at = queue.head;
        while at != 0 && at != link {
            prev = at;
            at = self.0[at as usize - 1].map_or(0, |q| q.next);
        }
        if at == 0 {
            return false;
        }
        let next = self.0[index].take().map_or(0, |q| q.next);
        match prev {
            0 => queue.head = next,
            prev => self.0[prev as usize - 1].as_mut().expect("queued").next = next,
        }
        if queue.tail == link {
            queue.tail = prev;
        }
        true
    }

    /// Empties `queue`; returns its operations' indices.
    fn drain(&mut self, queue: &mut Queue) -> Vec<usize> {
        let mut drained = Vec::new();
        while let Some(index) = self.pop(queue) {
            drained.push(index);
        }
        drained
    }
}

/// What the backend knows of one fd.
#[derive(Debug)]
struct FdState {
    /// Part of the epoll token; never 0 or `u32::MAX`.
    generation: u32,
    /// `executor::readiness` bits.
    readiness: u8,
    /// Switched to `O_NONBLOCK` by this backend (listeners and connecting sockets).
    nonblocking: bool,
    reads: Queue,
    writes: Queue,
}

impl FdState {
    fn queue(&mut self, direction: Direction) -> &mut Queue {
        match direction {
            Direction::Read => &mut self.reads,
            Direction::Write => &mut self.writes,
        }
    }
}

/// What one try of an operation came to.
enum Outcome {
    /// It is over: post this completion. `short`: it transferred less than asked.
    Done(Completion, bool),
    /// `EAGAIN`: the direction is not ready after all; wait for the next edge.
    WouldBlock,
    /// Interrupted by a signal: try again now.
    Again,
    /// Not now, for a reason of this backend's (every buffer id taken): try again next turn.
    Later,
}

/// The epoll backend. Lives on the runtime's thread.
pub(crate) struct Epoll {
    epoll: OwnedFd,
    /// Scratch space `epoll_wait` writes into.
    events: RefCell<Vec<libc::epoll_event>>,
    /// By fd number; `None` for fds this backend has not seen (or has seen closed).
    fds: RefCell<Vec<Option<FdState>>>,
    next_generation: Cell<u32>,
    /// Every operation waiting in a queue, by operation index.
    waiting: RefCell<Waiting>,
    /// Fds that got an operation while ready, to be performed at the next turn.
    dirty: RefCell<Vec<RawFd>>,
    /// Completions known outside a turn (cancelled, connected at once), for the next turn.
    ready: RefCell<Vec<(usize, Completion)>>,
    /// Buffers `RecvPick` filled, by the id their completion names, until `net` takes them.
    picked: RefCell<Slab<Vec<u8>>>,
    /// The last turn returned without `epoll_wait` (see `turn`).
    skipped_wait: Cell<bool>,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll").field("epoll", &self.epoll).finish_non_exhaustive()
    }
}

impl Epoll {
    /// The epoll set, with `notifier`'s eventfd in it.
    pub(crate) fn new(notifier: &Notifier) -> io::Result<Epoll> {
        stats::bump(|c| &c.sys_other);
        let epoll = executor::sys::epoll_create()?;
        stats::bump(|c| &c.sys_epoll_ctl);
        let events = (libc::EPOLLIN | libc::EPOLLET) as u32;
        executor::sys::epoll_ctl(
            epoll.as_fd(),
            libc::EPOLL_CTL_ADD,
            notifier.fd().as_raw_fd(),
            events,
            NOTIFY_TOKEN,
        )?;
        Ok(Epoll {
            epoll,
            events: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT]),
            fds: RefCell::new(Vec::new()),
            next_generation: Cell::new(1),
            waiting: RefCell::default(),
            dirty: RefCell::new(Vec::new()),
            ready: RefCell::new(Vec::new()),
            picked: RefCell::new(Slab::new()),
            skipped_wait: Cell::new(false),
        })
    }

    /// Queues operation `index` on its socket (registering the socket the first time).
    ///
    /// # Safety
    /// Every pointer in `request` must stay valid until the operation's completion is reported.
    unsafe fn queue(&self, index: usize, request: Request) -> io::Result<()> {
        let (fd, direction) = match request {
            Request::Accept { fd, .. } | Request::Recv { fd, .. } | Request::RecvPick { fd } => {
                (fd, Direction::Read)
            }
            Request::Send { fd, .. } | Request::Connect { fd, .. } => (fd, Direction::Write),
            Request::RecvMsg { fd, .. } => (fd, Direction::Read),
            Request::SendMsg { fd, .. } | Request::SendTo { fd, .. } => (fd, Direction::Write),
            // Not offered here (`Facts`, and no buffer ring).
            Request::AcceptMulti { .. } | Request::RecvMulti { .. } | Request::RecvMsgMulti { .. } => {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
            }
        };
        if let Request::Connect { addr, len, .. } = request {
            // Connect before the socket is watched: an unconnected socket reports a hang-up,
            // which would mark it closed for good.
            // SAFETY: the fd is the operation's socket, alive until its completion.
            sys::set_nonblocking(unsafe { BorrowedFd::borrow_raw(fd) }, true)?;
            // SAFETY: `addr` points to `len` bytes of socket address the operation owns.
            let connected = unsafe { sys::connect(fd, addr, len) };
            stats::trace_step!(trace::Event::Connect {
                fd,
                index,
                result: trace::Event::result_of(connected.as_ref().map(|()| 0)),
            });
            match connected {
                Ok(()) => {
                    self.ready.borrow_mut().push((index, Completion::of(0)));
                    return Ok(());
                }
                // In progress (EINTR too: the connect goes on in the background). A new socket:
                // nothing an earlier fd of its number left applies to it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => {
                    self.forget(fd)
                }
                Err(e) => {
                    self.ready.borrow_mut().push((index, Completion::error(errno(&e))));
                    return Ok(());
                }
            }
        }
        let mut fds = self.fds.borrow_mut();
        let state = self.state_for(&mut fds, fd)?;
        if matches!(request, Request::Accept { .. }) && !state.nonblocking {
            // accept4 has no MSG_DONTWAIT: a listener shared with another acceptor could
            // otherwise block this thread after a readiness event someone else consumed.
            // SAFETY: the fd is the operation's listener, alive until its completion.
            sys::set_nonblocking(unsafe { BorrowedFd::borrow_raw(fd) }, true)?;
            state.nonblocking = true;
        }
        if state.readiness & direction.mask() != 0 && state.queue(direction).head == 0 {
            // Ready, and nothing queued ahead of it: performed now (see the module docs).
            drop(fds);
            // SAFETY: the caller's guarantee: the request's pointers are valid until its
            // completion, which is not reported yet.
            if unsafe { self.perform_now(fd, direction, index, request) } {
                return Ok(());
            }
            fds = self.fds.borrow_mut();
        }
        let Some(state) = fds.get_mut(fd as usize).and_then(Option::as_mut) else {
            unreachable!("the fd's state was made above")
        };
        self.waiting.borrow_mut().push(state.queue(direction), index, request);
        let ready = state.readiness & direction.mask() != 0;
        drop(fds);
        if ready {
            self.dirty.borrow_mut().push(fd);
        }
        stats::trace_step!(trace::Event::Queued { index, op: request.traced(), queue: direction, ready });
        Ok(())
    }

    /// Performs operation `index` on `fd`, ready in `direction` with nothing queued ahead of it,
    /// as it is started: its completion is posted at the next turn. Returns false if it must
    /// be queued after all (`EAGAIN`: the readiness was stale, and is cleared now; or every
    /// buffer id is taken).
    ///
    /// # Safety
    /// The request's pointers must be valid until its completion is reported.
    unsafe fn perform_now(&self, fd: RawFd, direction: Direction, index: usize, request: Request) -> bool {
        let (completion, short) = loop {
            // SAFETY: the caller's guarantee.
            match unsafe { self.attempt(index, request) } {
                Outcome::Done(completion, short) => break (completion, short),
                Outcome::Again => continue,
                Outcome::WouldBlock => {
                    if let Some(state) = self.fds.borrow_mut()[fd as usize].as_mut() {
                        state.readiness &=
                            !readiness::exhaust(state.readiness, direction, Exhausted::WouldBlock);
                    }
                    return false;
                }
                Outcome::Later => return false,
            }
        };
        if short {
            if let Some(state) = self.fds.borrow_mut()[fd as usize].as_mut() {
                state.readiness &= !readiness::exhaust(state.readiness, direction, Exhausted::Short);
            }
        }
        if matches!(request, Request::Accept { .. }) && completion.result >= 0 {
            self.forget(completion.result);
        }
        self.ready.borrow_mut().push((index, completion));
        true
    }

    /// The state of `fd`, made (and the fd added to the epoll set) if this is its first use.
    fn state_for<'a>(&self, fds: &'a mut Vec<Option<FdState>>, fd: RawFd) -> io::Result<&'a mut FdState> {
        let slot = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        if fds.len() <= slot {
            fds.resize_with(slot + 1, || None);
        }
        if fds[slot].is_none() {
            let generation = self.next_generation.get();
            self.next_generation.set(if generation >= u32::MAX - 1 { 1 } else { generation + 1 });
            let token = (u64::from(generation) << 32) | u64::from(fd as u32);
            let events = executor::sys::EPOLL_SOCKET_EVENTS;
            stats::bump(|c| &c.sys_epoll_ctl);
            let added =
                match executor::sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_ADD, fd, events, token) {
                    // Still in the set under an old token (closed behind this backend's back, the
                    // number reused while a dup kept the registration): take it over.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        stats::bump(|c| &c.sys_epoll_ctl);
                        executor::sys::epoll_ctl(self.epoll.as_fd(), libc::EPOLL_CTL_MOD, fd, events, token)
                    }
                    other => other,
                };
            added?;
            stats::trace_step!(trace::SysEvent::EpollAdd { fd });
            fds[slot] = Some(FdState {
                generation,
                readiness: 0,
                nonblocking: false,
                reads: Queue::default(),
                writes: Queue::default(),
            });
        }
        Ok(fds[slot].as_mut().expect("just made"))
    }

    /// Cancels operation `index` if it has not run: it leaves its queue, and its completion
    /// (`ECANCELED`) comes at the next turn. One that has run already posted its completion.
    fn dequeue(&self, index: usize) {
        let mut waiting = self.waiting.borrow_mut();
        let Some(queued) = waiting.get(index) else { return };
        let fd = queued.request.fd();
        let mut fds = self.fds.borrow_mut();
        let Some(state) = fds.get_mut(fd.max(0) as usize).and_then(Option::as_mut) else { return };
        if waiting.remove(&mut state.reads, index) || waiting.remove(&mut state.writes, index) {
            self.ready.borrow_mut().push((index, Completion::error(libc::ECANCELED)));
            stats::trace_step!(trace::Event::Dequeued { index });
        }
    }

    /// Closes `fd`: the operations still queued on it are cancelled (none may run on a reused
    /// fd number), it leaves the epoll set, and is closed.
    fn close(&self, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let state = self.fds.borrow_mut().get_mut(raw.max(0) as usize).and_then(Option::take);
        if let Some(mut state) = state {
            let mut waiting = self.waiting.borrow_mut();
            let mut queued = waiting.drain(&mut state.reads);
            queued.extend(waiting.drain(&mut state.writes));
            drop(waiting);
            for index in queued {
                self.ready.borrow_mut().push((index, Completion::error(libc::ECANCELED)));
            }
            // Removing it before the close matters: epoll watches the open file, not the
            // number, so a dup elsewhere would keep the registration (and its events) alive.
            stats::bump(|c| &c.sys_epoll_ctl);
            let _ = executor::sys::epoll_del(self.epoll.as_fd(), raw);
            stats::trace_step!(trace::SysEvent::EpollDel { fd: raw });
        }
        sys::close(fd);
    }

    /// One turn: post what is known already, perform the operations started on ready sockets,
    /// wait (unless `timeout` is zero or something was posted) for readiness, then perform the
    /// operations each event allows and post their completions to `complete`. A turn that
    /// posted completions before waiting returns without the wait, unless the previous turn
    /// did so too.
    ///
    /// Returns whether the notifier fired, i.e. whether another thread posted work.
    fn run(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool> {
        let mut posted = 0;
        let known = std::mem::take(&mut *self.ready.borrow_mut());
        for (index, completion) in known {
            stats::trace_step!(trace::Event::Posted {
                index,
                result: completion.result,
                picked: match completion.buffer {
                    Some(BufId::Picked(id)) => Some(id),
                    _ => None,
                },
            });
            complete(index, completion);
            posted += 1;
        }
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for fd in dirty {
            posted += self.perform(fd, complete);
        }
        // Completions posted already (a send on a writable socket, usually): the woken tasks
        // should run now, and an `epoll_wait(0)` would mostly find nothing. Skip it, but
        // never twice in a row, so that sockets always ready cannot keep events waiting.
        if posted > 0 && !self.skipped_wait.replace(true) {
            stats::trace_step!(trace::Event::PostedEarly);
            stats::batch(posted);
            return Ok(false);
        }
        self.skipped_wait.set(false);
        let timeout = if posted > 0 { Some(Duration::ZERO) } else { timeout };
        let timeout_ms = executor::sys::epoll_timeout(timeout);
        stats::trace_step!(trace::SysEvent::EpollWait { timeout_ms });
        stats::bump(|c| &c.sys_epoll_wait);
        let mut events = self.events.borrow_mut();
        let n = match executor::sys::epoll_wait(self.epoll.as_fd(), &mut events, timeout_ms) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        stats::trace_step!(trace::SysEvent::EpollReturned { events: n });
        let mut notified = false;
        for event in &events[..n] {
            let (token, bits) = (event.u64, event.events);
            if token == NOTIFY_TOKEN {
                stats::trace_step!(trace::SysEvent::Notified);
                notifier.drain();
                notified = true;
                continue;
            }
            let fd = token as u32 as RawFd;
            let ready = readiness_of(bits);
            {
                let mut fds = self.fds.borrow_mut();
                let Some(state) = fds.get_mut(fd.max(0) as usize).and_then(Option::as_mut) else { continue };
                if u64::from(state.generation) != token >> 32 {
                    continue; // stale: the fd was closed and its number reused
                }
                state.readiness |= ready;
                stats::trace_step!(trace::Event::FdReady { fd, ready });
            }
            posted += self.perform(fd, complete);
        }
        drop(events);
        stats::batch(posted);
        Ok(notified)
    }

    /// Performs the operations queued on `fd` while their direction is ready, posting each
    /// completion; returns how many it posted.
    fn perform(&self, fd: RawFd, complete: &mut dyn FnMut(usize, Completion)) -> usize {
        let slot = fd.max(0) as usize;
        let mut posted = 0;
        for direction in [Direction::Read, Direction::Write] {
            loop {
                let waiting = {
                    let mut fds = self.fds.borrow_mut();
                    let Some(state) = fds.get_mut(slot).and_then(Option::as_mut) else { return posted };
                    if state.readiness & direction.mask() == 0 {
                        break;
                    }
                    match self.waiting.borrow().front(state.queue(direction)) {
                        Some(front) => front,
                        None => break,
                    }
                };
                let (index, request) = waiting;
                // SAFETY: the operation is still queued, so its completion has not been
                // reported, and `start`'s caller guaranteed its pointers until then.
                let outcome = unsafe { self.attempt(index, request) };
                let mut fds = self.fds.borrow_mut();
                let Some(state) = fds[slot].as_mut() else { return posted };
                match outcome {
                    Outcome::Done(completion, short) => {
                        self.waiting.borrow_mut().pop(state.queue(direction));
                        if short {
                            let cleared = readiness::exhaust(state.readiness, direction, Exhausted::Short);
                            state.readiness &= !cleared;
                        }
                        drop(fds);
                        if matches!(request, Request::Accept { .. }) && completion.result >= 0 {
                            self.forget(completion.result);
                        }
                        stats::trace_step!(trace::Event::Posted {
                            index,
                            result: completion.result,
                            picked: match completion.buffer {
                                Some(BufId::Picked(id)) => Some(id),
                                _ => None,
                            },
                        });
                        complete(index, completion);
                        posted += 1;
                    }
                    Outcome::WouldBlock => {
                        state.readiness &=
                            !readiness::exhaust(state.readiness, direction, Exhausted::WouldBlock);
                        break;
                    }
                    Outcome::Again => {}
                    Outcome::Later => {
                        drop(fds);
                        self.dirty.borrow_mut().push(fd);
                        break;
                    }
                }
            }
        }
        posted
    }

    /// A new fd (accepted, or a socket being connected) starts with no state: whatever an
    /// earlier fd of the same number left (closed behind this backend's back) must not apply.
    fn forget(&self, fd: RawFd) {
        if let Some(state) = self.fds.borrow_mut().get_mut(fd.max(0) as usize) {
            *state = None;
        }
    }

    /// One try of a queued operation's syscall.
    ///
    /// # Safety
    /// The request's pointers must be valid (the operation's completion not yet reported).
    unsafe fn attempt(&self, index: usize, request: Request) -> Outcome {
        match request {
            Request::Recv { fd, buf, len } => {
                stats::bump(|c| &c.sys_epoll_io);
                // SAFETY: the caller's guarantee: `buf` is the operation's, `len` bytes long.
                let received = unsafe { sys::recv(fd, buf, len as usize) };
                trace_io(trace::Call::Recv, fd, index, len as usize, &received);
                transferred(received, len as usize)
            }
            Request::RecvPick { fd } => {
                if self.picked.borrow().len() >= MAX_PICKED {
                    return Outcome::Later;
                }
                let mut picked = buf::spare_vec();
                stats::bump(|c| &c.sys_epoll_io);
                // SAFETY: `picked` is a live Vec, writable for its capacity.
                let received = unsafe { sys::recv(fd, picked.as_mut_ptr(), picked.capacity()) };
                trace_io(trace::Call::Recv, fd, index, picked.capacity(), &received);
                match received {
                    Ok(n) if n > 0 => {
                        let short = n < picked.capacity();
                        // SAFETY: the kernel wrote `n <= capacity` bytes at the start.
                        unsafe { picked.set_len(n) };
                        let id = self.picked.borrow_mut().insert(picked) as u16;
                        stats::trace_step!(trace::Event::Picked { id });
                        let completion =
                            Completion { buffer: Some(BufId::Picked(id)), ..Completion::of(n as i32) };
                        Outcome::Done(completion, short)
                    }
                    other => {
                        // Back to the spare pool: end of stream, an error, or nothing after all.
                        drop(ProvidedBuf::owned(picked));
                        transferred(other, 1)
                    }
                }
            }
            Request::Send { fd, buf, len, .. } => {
                stats::bump(|c| &c.sys_epoll_io);
                // SAFETY: the caller's guarantee: `buf` is the operation's, `len` bytes long.
                let sent = unsafe { sys::send(fd, buf, len as usize) };
                trace_io(trace::Call::Send, fd, index, len as usize, &sent);
                transferred(sent, len as usize)
            }
            Request::Accept { fd, addr, len } => {
                // SAFETY: the caller's guarantee: `addr` and `len` are the operation's.
                let accepted = unsafe { sys::accept(fd, addr, len) }.map(|new| new.into_raw_fd());
                stats::trace_step!(trace::Event::Accept {
                    fd,
                    index,
                    result: trace::Event::result_of(accepted.as_ref().map(|&new| new as usize)),
                });
                match accepted {
                    Ok(new) => Outcome::Done(Completion::of(new), false),
                    Err(e) => failed(e),
                }
            }
            Request::Connect { fd, .. } => {
                // Writable after EINPROGRESS: the connection is up, or has failed.
                // SAFETY: the fd is the operation's socket, alive until its completion.
                let socket = unsafe { BorrowedFd::borrow_raw(fd) };
                let result = match sys::take_error(socket) {
                    Ok(Some(e)) | Err(e) => Err(e),
                    Ok(None) => sys::peer_addr(socket).map(|_| ()),
                };
                stats::trace_step!(trace::Event::Connected {
                    fd,
                    index,
                    result: trace::Event::result_of(result.as_ref().map(|()| 0)),
                });
                match result {
                    Ok(()) => Outcome::Done(Completion::of(0), false),
                    // Not connected yet (a spurious edge): wait for the next one.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Outcome::WouldBlock,
                    Err(e) => failed(e),
                }
            }
            // A datagram receive or send is never "short" (`asked` 0): a datagram shorter than
            // the buffer says nothing about the ones queued behind it; only EAGAIN clears.
            Request::RecvMsg { fd, msg } => {
                stats::bump(|c| &c.sys_epoll_io);
                // SAFETY: the caller's guarantee: `msg` and the buffer and address it points to
                // are the operation's.
                let received = unsafe { executor::sys::recvmsg(fd, msg, libc::MSG_DONTWAIT) };
                trace_io(trace::Call::RecvMsg, fd, index, 1, &received);
                transferred(received, 0)
            }
            Request::SendMsg { fd, msg } => {
                stats::bump(|c| &c.sys_epoll_io);
                // SAFETY: as above.
                let sent = unsafe { executor::sys::sendmsg(fd, msg, libc::MSG_DONTWAIT) };
                trace_io(trace::Call::SendMsg, fd, index, 1, &sent);
                transferred(sent, 0)
            }
            Request::SendTo { fd, len, to } => {
                stats::bump(|c| &c.sys_epoll_io);
                // SAFETY: as above: the destination, its buffer and its address are the
                // operation's, until its completion.
                let sent = unsafe {
                    let to = &*to;
                    sys::send_to(fd, to.buf, len as usize, to.addr_ptr(), to.addr_len)
                };
                trace_io(trace::Call::SendTo, fd, index, 1, &sent);
                transferred(sent, 0)
            }
            Request::AcceptMulti { .. } | Request::RecvMulti { .. } | Request::RecvMsgMulti { .. } => {
                Outcome::Done(Completion::error(libc::EOPNOTSUPP), false)
            }
        }
    }
}

impl Io for Epoll {
    fn facts(&self) -> Facts {
        Facts {
            kind: Backend::Epoll,
            multishot_accept: false,
            picks_buffers: true,
            messages: true,
            send_to: true,
        }
    }

    unsafe fn start(&self, index: usize, request: &Request) -> io::Result<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.queue(index, *request) }
    }

    fn cancel(&self, index: usize, _force: bool) -> bool {
        self.dequeue(index);
        false
    }

    fn close_fd(&self, fd: OwnedFd, _now: bool) {
        self.close(fd);
    }

    fn turn(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool> {
        self.run(timeout, notifier, complete)
    }

    fn take_picked(&self, id: u16) -> Option<Vec<u8>> {
        self.picked.borrow_mut().try_remove(usize::from(id))
    }

    fn send_now(&self, fd: RawFd, bytes: &[u8]) -> Option<usize> {
        let mut fds = self.fds.borrow_mut();
        let state = fds.get_mut(usize::try_from(fd).ok()?)?.as_mut()?;
        if state.readiness & Direction::Write.mask() == 0 || state.writes.head != 0 || bytes.is_empty() {
            return None;
        }
        stats::bump(|c| &c.sys_epoll_io);
        // SAFETY: `bytes` is valid for reads of its length for the whole call.
        let sent = unsafe { sys::send(fd, bytes.as_ptr(), bytes.len()) };
        stats::trace_step!(trace::Event::SentNow {
            fd,
            len: bytes.len(),
            result: trace::Event::result_of(sent.as_ref().copied()),
        });
        match sent {
            Ok(n) => {
                if n < bytes.len() {
                    state.readiness &=
                        !readiness::exhaust(state.readiness, Direction::Write, Exhausted::Short);
                }
                (n > 0).then_some(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    stats::bump(|c| &c.would_block);
                    state.readiness &=
                        !readiness::exhaust(state.readiness, Direction::Write, Exhausted::WouldBlock);
                }
                None
            }
        }
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The outcome of a failed syscall.
fn failed(e: io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::WouldBlock => {
            stats::bump(|c| &c.would_block);
            Outcome::WouldBlock
        }
        io::ErrorKind::Interrupted => Outcome::Again,
        _ => Outcome::Done(Completion::error(errno(&e)), false),
    }
}

/// The outcome of a `recv` or `send` of up to `asked` bytes.
fn transferred(result: io::Result<usize>, asked: usize) -> Outcome {
    match result {
        Ok(n) => Outcome::Done(Completion::of(n.min(i32::MAX as usize) as i32), n > 0 && n < asked),
        Err(e) => failed(e),
    }
}

fn trace_io(call: trace::Call, fd: RawFd, index: usize, len: usize, result: &io::Result<usize>) {
    let result = trace::Event::result_of(result.as_ref().copied());
    stats::trace_step!(trace::Event::Transfer { call, fd, len, index, result });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_keeps_order_and_removes_from_anywhere() {
        let (mut waiting, mut queue) = (Waiting::default(), Queue::default());
        (0..4).for_each(|i| waiting.push(&mut queue, i, Request::RecvPick { fd: 3 }));
        assert!(waiting.remove(&mut queue, 2));
        assert!(!waiting.remove(&mut queue, 2));
        assert!(waiting.remove(&mut queue, 0));
        assert!(waiting.remove(&mut queue, 3));
        waiting.push(&mut queue, 5, Request::RecvPick { fd: 3 });
        assert_eq!(waiting.front(&queue).map(|(i, _)| i), Some(1));
        assert_eq!(waiting.drain(&mut queue), [1, 5]);
        assert!(waiting.pop(&mut queue).is_none());
        assert_eq!((queue.head, queue.tail), (0, 0));
    }

    #[test]
    fn an_idle_socket_costs_a_few_dozen_bytes_here() {
        assert!(std::mem::size_of::<Option<FdState>>() <= 32);
        assert!(std::mem::size_of::<Option<Queued>>() <= 32);
    }
}
