//! Sends behind: sends the driver finishes by itself, without the task
//! ([`TcpStream::write_all_behind`](crate::net::TcpStream::write_all_behind)).
//!
//! An ordinary operation ([`Op`](super::op::Op)) ends with a wake: its completion is stored in the
//! slot, the task is woken and polled, and takes the result and the buffer back. For a send
//! whose buffer the task has no further use for (an echo's, a response's), that second wake
//! and poll per message do nothing but hand back a buffer to be dropped; on io_uring they were
//! a quarter of the runtime's own time in a ping-pong echo. A completion design can skip them,
//! which a readiness design cannot: the bytes were handed over with the operation, so the
//! driver itself can finish it.
//!
//! # A send's life
//!
//! 1. [`Driver::send_behind`] takes an operation slot, a [`Lifecycle::Behind`], and a record
//!    (`Behind`, in `Driver::behinds`) that owns the bytes and a clone of the task's waker,
//!    and submits the `SEND`. The caller goes on at once. (The record is the largest thing an
//!    operation holds; kept out of the slot, it does not make every connection's slot larger:
//!    only sends in flight have one.) A backend that can send at once (`Io::send_now`: the
//!    epoll emulation, on a socket known to be writable) is asked first: a send that goes out
//!    whole is over before any of this, and only the rest of a short one is submitted.
//! 2. Its completion comes to [`Driver::behind_completed`], during the turn:
//!    - **complete** (every byte taken): the bytes go back now (a ring buffer to the ring, so
//!      that a connection that then goes idle pins none), the slot and the record are freed.
//!      Nobody is woken
//!      (`sends_quiet`), unless a call of the stream waits for this send to be over.
//!    - **short**, or **`EAGAIN`** (a ring buffer's first try does not wait for the peer's
//!      window, see [`IoBuf::is_shared`](crate::IoBuf::is_shared)): after the turn, the driver
//!      copies the unsent rest of a ring buffer out and gives the ring buffer back, then sends
//!      the rest from the same slot ([`Driver::continue_behind`], `sends_continued`). The task
//!      is not woken for this either (the driver can do it alone, and must be able to, for a
//!      stream dropped meanwhile), except once if a call of the stream waits behind the send:
//!      that call then gives back the ring buffer it holds, rather than keep it for as long as
//!      the peer takes to read ([`Driver::behind_stalled`]).
//!    - **failed**: the bytes go back, the record is freed, the slot keeps the error
//!      (`Lifecycle::BehindFailed`) and the task is woken; the stream's next call returns the
//!      error and frees the slot.
//! 3. The stream knows its last send behind by slot index ([`BehindKey`]). The slot may have
//!    been freed and taken by another operation since: it is still this stream's only while it
//!    is a `Behind` or `BehindFailed` *of the stream's fd*. That test is exact, because an fd
//!    number belongs to one open stream at a time, a stream has at most one send behind, and a
//!    dropped stream's number stays taken (the slot owns the fd) until its send is over.
//!
//! # Dropping the stream
//!
//! The bytes must still go out, before the end of stream. So a stream dropped with a send behind
//! in flight hands its fd to the send's record (`Owner::Dropped`), and the driver closes it (through
//! [`Driver::close_fd`], after every operation queued on it) once the send is over, short sends
//! continued. Closing at once would not do on any backend: the epoll backend's `close_fd` cancels
//! the operations still queued on the fd, aio's shuts the socket down to end the requests still
//! running, and on io_uring a short send could not be continued on a closed fd. A peer that never
//! reads keeps such an fd open (the bytes, copied out of the ring, held) until it reads or
//! resets, or the runtime is dropped: dropping the runtime cancels every send behind.
//!
//! Meanwhile the socket answers the peer as a closed one would (`Driver::watch_dropped`): a
//! one-byte receive watches it, and if the peer sends anything the send is cancelled and the
//! socket closed with those bytes unread, which resets the connection, as the kernel does when
//! data reaches a closed socket. Otherwise a peer that reads only once its own writes are
//! through (an echo with blocking calls, whose echoes fill this side's window) and the send,
//! waiting for that peer to read, would wait for each other forever. A peer that only reads
//! gets every byte, then the end of stream.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::slot::{Behind, Bytes, Lifecycle, Owner};
use super::{runtime_gone, wrong_runtime, AfterTurn, Driver};
use crate::backend::{Completion, Request};
use crate::buf::ProvidedBuf;
use crate::stats;
use crate::sys;

/// A stream's handle on its send behind: the slot of the last one it queued, which may since be
/// over and the slot freed (see the module docs for how the driver tells). `NONE` for none; a
/// `u32` (not an `Option<usize>`), to keep every stream, and so every connection's task, 8 bytes
/// smaller.
#[derive(Debug)]
pub(crate) struct BehindKey(std::cell::Cell<u32>);

impl Default for BehindKey {
    fn default() -> Self {
        BehindKey(std::cell::Cell::new(NONE))
    }
}

const NONE: u32 = u32::MAX;

impl BehindKey {
    fn get(&self) -> Option<usize> {
        let index = self.0.get();
        (index != NONE).then_some(index as usize)
    }

    /// `index` as a key: `None` past `u32` (a slab of four thousand million operations is out of
    /// reach long before).
    fn of(index: usize) -> Option<u32> {
        u32::try_from(index).ok().filter(|&index| index != NONE)
    }

    fn clear(&self) {
        self.0.set(NONE);
    }
}

/// What a stream's [`BehindKey`] finds: its send behind in flight (its record, `behind`), or the
/// error it failed with (`-errno`, 0 for a send that took nothing) in operation slot `op`.
enum Found {
    InFlight { behind: usize },
    Failed { op: usize, result: i32 },
}

/// The send behind in slot `op` failed with `result` (its record already taken out): the slot
/// keeps the error for the stream's next call, or is freed if the stream was dropped.
fn fail(ops: &mut Slab<Lifecycle>, op: usize, behind: &Behind, result: i32) {
    match behind.owner {
        Owner::Stream(_) => ops[op] = Lifecycle::BehindFailed { fd: behind.fd, result },
        Owner::Dropped { .. } => drop(ops.remove(op)),
    }
}

/// The error a failed send behind keeps: `-errno`, or 0 for a send that took nothing.
fn error_of(result: i32) -> io::Error {
    match result {
        0 => io::ErrorKind::WriteZero.into(),
        result => io::Error::from_raw_os_error(-result),
    }
}

impl Driver {
    /// Queues a send of all of `buf` on `fd` that the driver finishes by itself (see the module
    /// docs); `waker` is the queuing task's. The stream's previous send behind must be over
    /// ([`poll_behind`](Self::poll_behind) said so).
    pub(crate) fn send_behind(
        self: &Rc<Self>,
        key: &BehindKey,
        fd: RawFd,
        buf: ProvidedBuf,
        waker: &Waker,
    ) -> io::Result<()> {
        if !self.alive.get() {
            return Err(runtime_gone());
        }
        let bytes = match (buf.into_parts(self.buf_ring.as_ref()), &self.buf_ring) {
            (Ok((bid, offset, len)), Some(_)) => Bytes::Ring { bid, offset, len },
            (Ok(_), None) => unreachable!("a ring piece comes from the driver's ring"),
            (Err(bytes), _) => Bytes::Owned(bytes),
        };
        debug_assert!(self.find_behind(key, fd).is_none(), "a stream's previous send behind is over");
        // A backend that can send at once (the epoll emulation, on a socket known to be
        // writable) does, from the task, as the reactor would: a send that goes out whole then
        // needs no slot, no record and no completion (see `Io::send_now`).
        let sent = match &bytes {
            Bytes::Owned(owned) => self.io.send_now(fd, owned).unwrap_or(0),
            Bytes::Ring { .. } => 0,
        };
        if sent == bytes.len() {
            // Counted as a send behind whose completion woke nobody.
            stats::bump(|c| &c.sends_behind);
            stats::bump(|c| &c.sends);
            stats::bump(|c| &c.sends_quiet);
            key.clear();
            self.release_bytes(bytes);
            return Ok(());
        }
        let held = bytes.len();
        let behind = Behind {
            bytes,
            sent,
            fd,
            owner: Owner::Stream(waker.clone()),
            waited: false,
            stalled: false,
            held,
        };
        let request = self.send_request(&behind);
        let record = self.behinds.borrow_mut().insert(behind);
        let index = self.ops.borrow_mut().insert(Lifecycle::Behind { record, fd });
        let give_up = |error: io::Error| {
            self.ops.borrow_mut().remove(index);
            let behind = self.behinds.borrow_mut().remove(record);
            self.release_bytes(behind.bytes);
            Err(error)
        };
        let Some(as_key) = BehindKey::of(index) else {
            return give_up(io::Error::other("too many operations in flight"));
        };
        // SAFETY: the request points into the record's bytes (a ring piece the record holds out
        // of the ring, or a Vec's heap memory, which does not move with the record), and the
        // record keeps them until the operation's completion (see `behind_completed`).
        match unsafe { self.start_behind(index, &request) } {
            Ok(()) => {
                key.0.set(as_key);
                stats::bump(|c| &c.sends_behind);
                // Held for the connection until the send is over (see `budget`).
                self.budget.hold(held as u64);
                Ok(())
            }
            Err(e) => give_up(e),
        }
    }

    /// This stream's send behind, if it still has one in flight (or its error): `fd` is the
    /// stream's. Forgets the key of one that is over.
    #[inline]
    fn find_behind(&self, key: &BehindKey, fd: RawFd) -> Option<Found> {
        let op = key.get()?;
        let found = match self.ops.borrow().get(op) {
            Some(&Lifecycle::Behind { record, fd: of }) if of == fd => {
                Some(Found::InFlight { behind: record })
            }
            Some(&Lifecycle::BehindFailed { fd: of, result }) if of == fd => {
                Some(Found::Failed { op, result })
            }
            _ => None,
        };
        if found.is_none() {
            // Over (and the slot freed, maybe taken since): forget it.
            key.clear();
        }
        found
    }

    /// Returns the error a stream's send behind failed with (once: the slot is freed).
    fn take_error(&self, key: &BehindKey, op: usize, result: i32) -> io::Error {
        self.ops.borrow_mut().remove(op);
        key.clear();
        error_of(result)
    }

    /// The `SEND` of what is left of `behind`: a ring buffer's first try does not wait for the
    /// peer's window (see `IoBuf::is_shared`).
    fn send_request(&self, behind: &Behind) -> Request {
        let (bytes, dontwait) = match &behind.bytes {
            Bytes::Ring { bid, offset, len } => {
                let ring = self.buf_ring.as_ref().expect("a ring piece comes from the driver's ring");
                // SAFETY: a CQE handed this piece to the program, and it goes back to the ring
                // only when the send is over (`release_bytes`).
                (unsafe { ring.bytes(*bid, *offset, *len as usize) }, true)
            }
            Bytes::Owned(bytes) => (&bytes[..], false),
        };
        let rest = &bytes[behind.sent.min(bytes.len())..];
        let len = rest.len().min(u32::MAX as usize) as u32;
        Request::Send { fd: behind.fd, buf: rest.as_ptr(), len, dontwait }
    }

    /// Ready once the stream's send behind is over: `Ok`, or the error it failed with (returned
    /// once). Otherwise the task waits, woken when the send is over.
    #[inline]
    pub(crate) fn poll_behind(
        &self,
        key: &BehindKey,
        fd: RawFd,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        match self.find_behind(key, fd) {
            None => Poll::Ready(Ok(())),
            Some(Found::Failed { op, result }) => Poll::Ready(Err(self.take_error(key, op, result))),
            Some(Found::InFlight { behind }) => {
                if !self.alive.get() {
                    return Poll::Ready(Err(runtime_gone()));
                }
                if !executor::runs_driver::<Driver>(self) {
                    return Poll::Ready(Err(wrong_runtime()));
                }
                let behind = &mut self.behinds.borrow_mut()[behind];
                if let Owner::Stream(waker) = &mut behind.owner {
                    if !waker.will_wake(cx.waker()) {
                        *waker = cx.waker().clone();
                    }
                }
                behind.waited = true;
                Poll::Pending
            }
        }
    }

    /// The bytes the stream's send behind in flight holds for its connection (0 for none).
    pub(crate) fn behind_held(&self, key: &BehindKey, fd: RawFd) -> u64 {
        match self.find_behind(key, fd) {
            Some(Found::InFlight { behind }) => self.behinds.borrow()[behind].held as u64,
            _ => 0,
        }
    }

    /// The error the stream's last send behind failed with, if it did (returned once); `Ok`
    /// while it is in flight, or once it is over.
    #[inline]
    pub(crate) fn behind_error(&self, key: &BehindKey, fd: RawFd) -> io::Result<()> {
        match self.find_behind(key, fd) {
            Some(Found::Failed { op, result }) => Err(self.take_error(key, op, result)),
            _ => Ok(()),
        }
    }

    /// Whether the stream's send behind in flight may take a while: the peer's window was full
    /// (or the ring is at its limit and nearly dry). A call that waits for it should not hold a
    /// ring buffer meanwhile.
    pub(crate) fn behind_stalled(&self, key: &BehindKey, fd: RawFd) -> bool {
        let scarce = self.buf_ring.as_ref().is_some_and(|ring| ring.scarce());
        match self.find_behind(key, fd) {
            Some(Found::InFlight { behind }) => self.behinds.borrow()[behind].stalled || scarce,
            _ => false,
        }
    }

    /// Whether the stream has no send behind in flight and no error of one to report: a send
    /// may start now without overtaking one.
    #[inline]
    pub(crate) fn behind_idle(&self, key: &BehindKey, fd: RawFd) -> bool {
        key.get().is_none() || self.find_behind(key, fd).is_none()
    }

    /// The stream is being dropped: if its send behind is in flight, the slot takes `fd` and the
    /// driver closes it once the send is over (see the module docs); otherwise `fd` comes back,
    /// to be closed now. An error nobody will read any more is dropped.
    pub(crate) fn drop_behind(self: &Rc<Self>, key: &BehindKey, fd: OwnedFd) -> Option<OwnedFd> {
        let raw = fd.as_raw_fd();
        match self.find_behind(key, raw) {
            Some(Found::InFlight { behind }) => {
                stats::trace_step!(crate::trace::Event::DroppedBehind { fd: raw });
                // Dropped outside the borrow (a waker).
                let owner = std::mem::replace(
                    &mut self.behinds.borrow_mut()[behind].owner,
                    Owner::Dropped { watch: None, reset: false },
                );
                drop(owner);
                // The record owns the number now (closed in `finish_behind`).
                let _ = fd.into_raw_fd();
                let send = key.get().expect("a send in flight has a key");
                self.keep_watching(behind, send, raw);
                None
            }
            Some(Found::Failed { op, .. }) => {
                self.ops.borrow_mut().remove(op);
                Some(fd)
            }
            None => Some(fd),
        }
    }

    /// Watches the socket of the dropped stream whose send behind (record `record`) is in slot
    /// `send` (see `watch_dropped`). If the backend refuses the receive, nothing can watch it:
    /// the connection is reset at once, as `close(2)` would have it.
    fn keep_watching(self: &Rc<Self>, record: usize, send: usize, fd: RawFd) {
        let watch = self.watch_dropped(fd, send);
        let mut behinds = self.behinds.borrow_mut();
        let Some(Behind { owner: Owner::Dropped { watch: slot, reset }, .. }) = behinds.get_mut(record)
        else {
            return;
        };
        *slot = watch;
        if watch.is_none() {
            *reset = true;
            drop(behinds);
            let _ = self.cancel(send, true);
        }
    }

    /// Starts the receive that watches a dropped stream's socket for data from the peer while
    /// its send behind (in slot `send`) goes on: the socket answers such data as a closed
    /// socket does, by resetting the connection (see the module docs). Returns its slot.
    fn watch_dropped(self: &Rc<Self>, fd: RawFd, send: usize) -> Option<usize> {
        // SAFETY: the request points into the Vec's heap memory (one byte), which the operation
        // owns until its completion.
        let op = unsafe {
            self.submit(Vec::<u8>::with_capacity(1), false, |buf| Request::Recv {
                fd,
                buf: buf.as_mut_ptr(),
                len: 1,
            })
        };
        let driver = Rc::downgrade(self);
        op.detach(move |_, completion| {
            if let Some(driver) = driver.upgrade() {
                driver.watch_over(send, fd, completion.result);
            }
        })
    }

    /// The watch of a dropped stream (whose send behind is in slot `send`) is over, with
    /// `result`: the peer sent data, so the send is cancelled and the socket closed (with those
    /// bytes unread: a reset); a signal interrupted it, so it watches again; or it ended
    /// otherwise (the peer's end of stream, the send over, an error).
    fn watch_over(self: &Rc<Self>, send: usize, fd: RawFd, result: i32) {
        let record = match self.ops.borrow().get(send) {
            Some(&Lifecycle::Behind { record, .. }) => record,
            _ => return,
        };
        let mut behinds = self.behinds.borrow_mut();
        let Some(Behind { fd: of, owner: Owner::Dropped { watch, reset }, .. }) = behinds.get_mut(record)
        else {
            return;
        };
        if *of != fd {
            return;
        }
        *watch = None;
        *reset = result > 0;
        drop(behinds);
        if result == -libc::EINTR {
            self.keep_watching(record, send, fd);
        } else if result > 0 {
            stats::trace_step!(crate::trace::Event::DroppedPeerSent { fd });
            // Forced: a send glibc's thread is blocked in (aio) ends only if the socket is shut
            // down, and the connection is being reset anyway.
            let _ = self.cancel(send, true);
        }
    }

    /// A completion of the send behind in slot `index`, during the turn (see the module docs).
    pub(super) fn behind_completed(
        &self,
        ops: &mut Slab<Lifecycle>,
        index: usize,
        completion: Completion,
        wakers: &mut Vec<Waker>,
        after: &mut AfterTurn,
    ) {
        let Some(&Lifecycle::Behind { record, .. }) = ops.get(index) else {
            unreachable!("a send behind's completion comes to its Behind slot")
        };
        let mut behinds = self.behinds.borrow_mut();
        let behind = &mut behinds[record];
        let (result, asked) = (completion.result, behind.bytes.len() - behind.sent);
        if result > 0 {
            behind.sent += (result as usize).min(asked);
            if planted!(LoseShortSendBehind) {
                behind.sent = behind.bytes.len();
            }
        }
        if behind.sent == behind.bytes.len() {
            ops.remove(index);
            let behind = behinds.remove(record);
            drop(behinds);
            self.finish_behind(behind, None, wakers, after);
            return;
        }
        // Short, or a ring buffer's first try found the window full (EAGAIN), or a signal; not
        // if the stream was dropped and its peer sent data meanwhile (the connection is reset).
        let reset = matches!(behind.owner, Owner::Dropped { reset: true, .. });
        let again = (result > 0 || result == -libc::EAGAIN || result == -libc::EINTR) && !reset;
        if again && self.alive.get() {
            let newly_stalled = !std::mem::replace(&mut behind.stalled, true);
            stats::trace_step!(crate::trace::Event::BehindShort { sent: result.max(0), asked });
            if let (true, true, Owner::Stream(waker)) = (newly_stalled, behind.waited, &behind.owner) {
                // A call waits behind this send, maybe with a ring buffer: it should not hold
                // it for as long as the peer takes (see `behind_stalled`).
                stats::trace_step!(crate::trace::Event::WakeStalled);
                wakers.push(waker.clone());
            }
            after.behind.push(index);
            return;
        }
        // Failed (a send that takes nothing is an error too, and so is one cut by the runtime's
        // drop or by a reset).
        let result = if again || reset || result > 0 { -libc::ECANCELED } else { result };
        let behind = behinds.remove(record);
        drop(behinds);
        fail(ops, index, &behind, result);
        self.finish_behind(behind, Some(result), wakers, after);
    }

    /// A send behind is over (`failed` with `-errno`, or complete): its bytes go back, its
    /// task is woken if it must be, its fd closed if the stream was dropped.
    fn finish_behind(
        &self,
        behind: Behind,
        failed: Option<i32>,
        wakers: &mut Vec<Waker>,
        after: &mut AfterTurn,
    ) {
        let Behind { bytes, fd, owner, waited, held, .. } = behind;
        self.budget.release(held as u64);
        stats::trace_step!(crate::trace::Event::BehindOver {
            error: failed.map(|result| -result),
            ring_buffer: match bytes {
                Bytes::Ring { bid, .. } => Some(bid),
                Bytes::Owned(_) => None,
            },
            owner: match owner {
                Owner::Stream(_) if waited => crate::trace::Behind::Waited,
                Owner::Stream(_) => crate::trace::Behind::Quiet,
                Owner::Dropped { .. } => crate::trace::Behind::Dropped,
            },
            fd,
        });
        after.released.push(bytes);
        match owner {
            Owner::Stream(waker) if waited || failed.is_some() => {
                stats::trace_step!(crate::trace::Event::Wake);
                wakers.push(waker);
            }
            Owner::Stream(_) => stats::bump(|c| &c.sends_quiet),
            Owner::Dropped { watch, .. } => {
                if failed.is_none() {
                    stats::bump(|c| &c.sends_quiet);
                }
                // The watch ends before the close (the backend acts in this order).
                after.to_cancel.extend(watch);
                after.close.push(fd);
            }
        }
    }

    /// After a turn: sends the rest of the send behind in slot `index`, which was short (see
    /// the module docs). A ring buffer's unsent bytes are copied out first and the ring buffer
    /// given back: the peer's window is full, and a ring buffer must not wait on it.
    pub(super) fn continue_behind(&self, index: usize, wakers: &mut Vec<Waker>, after: &mut AfterTurn) {
        let Some(&Lifecycle::Behind { record, .. }) = self.ops.borrow().get(index) else { return };
        let mut behinds = self.behinds.borrow_mut();
        let behind = &mut behinds[record];
        if let Owner::Dropped { reset: true, .. } = behind.owner {
            // Its stream's peer sent data since: the connection is reset, the rest not sent.
            let behind = behinds.remove(record);
            drop(behinds);
            fail(&mut self.ops.borrow_mut(), index, &behind, -libc::ECANCELED);
            return self.finish_behind(behind, Some(-libc::ECANCELED), wakers, after);
        }
        if let Bytes::Ring { bid, offset, len } = behind.bytes {
            let ring = self.buf_ring.as_ref().expect("a ring piece comes from the driver's ring");
            let sent = behind.sent.min(len as usize);
            // SAFETY: a CQE handed this piece to the program, and it goes back to the ring only
            // below, after the copy.
            let rest = unsafe { ring.bytes(bid, offset, len as usize) }[sent..].to_vec();
            stats::bump(|c| &c.sends_detached);
            stats::trace_step!(crate::trace::Event::BehindDetached { bytes: rest.len(), bid });
            behind.bytes = Bytes::Owned(rest);
            behind.sent = 0;
            after.released.push(Bytes::Ring { bid, offset, len });
        }
        let request = self.send_request(behind);
        drop(behinds);
        stats::bump(|c| &c.sends_continued);
        // SAFETY: as in `send_behind`: the request points into the record's bytes, kept there
        // until this operation's completion.
        if let Err(e) = unsafe { self.start_behind(index, &request) } {
            let result = -e.raw_os_error().unwrap_or(libc::EIO);
            let behind = self.behinds.borrow_mut().remove(record);
            fail(&mut self.ops.borrow_mut(), index, &behind, result);
            self.finish_behind(behind, Some(result), wakers, after);
        }
    }

    /// Gives the bytes of a send behind back: a ring piece to the ring, a buffer of the spare
    /// pool to the pool.
    pub(super) fn release_bytes(&self, bytes: Bytes) {
        match bytes {
            Bytes::Ring { bid, .. } => {
                if let Some(ring) = &self.buf_ring {
                    ring.release(bid);
                }
            }
            Bytes::Owned(bytes) => drop(ProvidedBuf::owned(bytes)),
        }
    }

    /// Closes the fd of a dropped stream whose send behind is over.
    pub(super) fn close_behind(&self, fd: RawFd) {
        // SAFETY: the stream handed its fd to the send's record (`drop_behind`), which was its
        // only owner, and the record is gone.
        self.close_fd(unsafe { sys::owned_fd(fd) });
    }

    /// A waker to wake at the runtime's shut-down: a task waiting for this send behind.
    pub(super) fn behind_waiter(behind: &Behind) -> Option<Waker> {
        match (&behind.owner, behind.waited) {
            (Owner::Stream(waker), true) => Some(waker.clone()),
            _ => None,
        }
    }
}
