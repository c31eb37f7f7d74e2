//! Sends behind: sends the driver finishes by itself, without the task
//! ([`TcpStream::write_all_behind`](crate::net::TcpStream::write_all_behind)).
//!
//! An ordinary operation ([`Op`](super::Op)) ends with a wake: its completion is stored in the
//! slot, the task is woken and polled, and takes the result and the buffer back. For a send
//! whose buffer the task has no further use for (an echo's, a response's), that second wake
//! and poll per message do nothing but hand back a buffer to be dropped; on io_uring they were
//! a quarter of the runtime's own time in a ping-pong echo. A completion design can skip them,
//! which a readiness design cannot: the bytes were handed over with the operation, so the
//! driver itself can finish it.
//!
//! # A send's life
//!
//! 1. [`Driver::send_behind`] takes a slot, a [`Lifecycle::Behind`] that owns the bytes and a
//!    clone of the task's waker, and submits the `SEND`. The caller goes on at once.
//! 2. Its completion comes to [`Driver::behind_completed`], during the turn:
//!    - **complete** (every byte taken): the bytes go back now (a ring buffer to the ring, so
//!      that a connection that then goes idle pins none) and the slot is freed. Nobody is woken
//!      (`sends_quiet`), unless a call of the stream waits for this send to be over.
//!    - **short**, or **`EAGAIN`** (a ring buffer's first try does not wait for the peer's
//!      window, see [`IoBuf::is_shared`](crate::IoBuf::is_shared)): after the turn, the driver
//!      copies the unsent rest of a ring buffer out and gives the ring buffer back, then sends
//!      the rest from the same slot ([`Driver::continue_behind`], `sends_continued`). The task
//!      is not woken for this either (the driver can do it alone, and must be able to, for a
//!      stream dropped meanwhile), except once if a call of the stream waits behind the send:
//!      that call then gives back the ring buffer it holds, rather than keep it for as long as
//!      the peer takes to read ([`Driver::behind_stalled`]).
//!    - **failed**: the bytes go back, the slot keeps the error ([`Lifecycle::BehindFailed`])
//!      and the task is woken; the stream's next call returns the error and frees the slot.
//! 3. The stream knows its last send behind by slot index ([`BehindKey`]). The slot may have
//!    been freed and taken by another operation since: it is still this stream's only while it
//!    is a `Behind` or `BehindFailed` *of the stream's fd*. That test is exact, because an fd
//!    number belongs to one open stream at a time, a stream has at most one send behind, and a
//!    dropped stream's number stays taken (the slot owns the fd) until its send is over.
//!
//! # Dropping the stream
//!
//! The bytes must still go out, before the end of stream. So a stream dropped with a send behind
//! in flight hands its fd to the slot ([`Owner::Dropped`]), and the driver closes it (through
//! [`Driver::close_fd`], after every operation queued on it) once the send is over, short sends
//! continued. Closing at once would not do on any backend: the epoll backend's `close_fd` cancels
//! the operations still queued on the fd, aio's shuts the socket down to end the requests still
//! running, and on io_uring a short send could not be continued on a closed fd. A peer that never
//! reads keeps such an fd open (the bytes, copied out of the ring, held) until it reads or
//! resets, or the runtime is dropped: dropping the runtime cancels every send behind.

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use super::{runtime_gone, wrong_runtime, AfterTurn, Completion, Driver, Lifecycle, Request};
use crate::buf::ProvidedBuf;
use crate::stats;
use crate::sys;

/// A stream's handle on its send behind: the slot of the last one it queued, which may since be
/// over and the slot freed (see the module docs for how the driver tells).
#[derive(Debug, Default)]
pub(crate) struct BehindKey(std::cell::Cell<Option<usize>>);

/// A send the driver finishes by itself: the slot of a [`Lifecycle::Behind`].
pub(crate) struct Behind {
    /// The bytes; the kernel reads `bytes[sent..]` while a `SEND` is in flight, so they stay
    /// put (and a ring buffer stays out of the ring) until its completion.
    bytes: Bytes,
    /// How many bytes earlier `SEND`s of this one took (short sends the driver continued).
    sent: usize,
    fd: RawFd,
    owner: Owner,
    /// A call of the stream (a second send, `flush`) waits for this send to be over: wake the
    /// task at the end, whatever it is.
    waited: bool,
    /// A try came back short or with `EAGAIN`: the peer's window is full, and the send may take
    /// a while (see [`Driver::behind_stalled`]).
    stalled: bool,
}

/// Who hears of a send behind.
enum Owner {
    /// The stream is open: the task that queued the send is woken if it fails (so that a task
    /// waiting in `read_provided` sees the error at once) or if `waited`.
    Stream(Waker),
    /// The stream was dropped: the driver owns the fd, and closes it once the send is over.
    Dropped,
}

/// The bytes of a send behind, in the slot.
///
/// Not a [`ProvidedBuf`], which carries its ring: every connection's slot has room for the
/// largest operation, and this is 8 bytes smaller. The driver's own ring is the ring; the bytes
/// go back through [`Driver::release_bytes`].
pub(crate) enum Bytes {
    /// A piece of buffer `bid` of the driver's provided-buffer ring.
    Ring { bid: u16, offset: u32, len: u32 },
    /// Bytes of their own (a buffer of the spare pool, or the caller's `Vec`).
    Owned(Vec<u8>),
}

impl Bytes {
    fn len(&self) -> usize {
        match self {
            Bytes::Ring { len, .. } => *len as usize,
            Bytes::Owned(bytes) => bytes.len(),
        }
    }
}

impl BehindKey {
    /// The slot of this stream's send behind, if it still holds one (or its error): `fd` is
    /// the stream's.
    fn slot<'a>(&self, ops: &'a mut Slab<Lifecycle>, fd: RawFd) -> Option<(usize, &'a mut Lifecycle)> {
        let index = self.0.get()?;
        let mine = matches!(
            ops.get(index),
            Some(Lifecycle::Behind(Behind { fd: of, .. }) | Lifecycle::BehindFailed { fd: of, .. }) if *of == fd
        );
        if !mine {
            // Over (and the slot freed, maybe taken since): forget it.
            self.0.set(None);
            return None;
        }
        Some((index, &mut ops[index]))
    }
}

/// The send behind in slot `index` failed with `result`: the slot keeps the error for the
/// stream's next call (or is freed, if the stream was dropped); returns what the slot held.
fn fail(ops: &mut Slab<Lifecycle>, index: usize, result: i32) -> Behind {
    let Lifecycle::Behind(Behind { fd, .. }) = ops[index] else { unreachable!("a send behind's slot") };
    let Lifecycle::Behind(behind) =
        std::mem::replace(&mut ops[index], Lifecycle::BehindFailed { fd, result })
    else {
        unreachable!()
    };
    if matches!(behind.owner, Owner::Dropped) {
        ops.remove(index);
    }
    behind
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
        let mut ops = self.ops.borrow_mut();
        debug_assert!(key.slot(&mut ops, fd).is_none(), "a stream's previous send behind is over");
        let behind =
            Behind { bytes, sent: 0, fd, owner: Owner::Stream(waker.clone()), waited: false, stalled: false };
        let request = self.send_request(&behind);
        let index = ops.insert(Lifecycle::Behind(behind));
        drop(ops);
        // SAFETY: the request points into the slot's bytes (a ring piece the slot holds out of
        // the ring, or a Vec's heap memory, which does not move with the slot), and the slot
        // keeps them until the operation's completion (see `behind_completed`).
        match unsafe { self.start(index, &request) } {
            Ok(()) => {
                key.0.set(Some(index));
                stats::bump(|c| &c.sends_behind);
                Ok(())
            }
            Err(e) => {
                if let Lifecycle::Behind(behind) = self.ops.borrow_mut().remove(index) {
                    self.release_bytes(behind.bytes);
                }
                Err(e)
            }
        }
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
    pub(crate) fn poll_behind(
        &self,
        key: &BehindKey,
        fd: RawFd,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let mut ops = self.ops.borrow_mut();
        let Some((index, slot)) = key.slot(&mut ops, fd) else { return Poll::Ready(Ok(())) };
        match slot {
            Lifecycle::Behind(behind) => {
                if !self.alive.get() {
                    return Poll::Ready(Err(runtime_gone()));
                }
                if !executor::runs_driver::<Driver>(self) {
                    return Poll::Ready(Err(wrong_runtime()));
                }
                if let Owner::Stream(waker) = &mut behind.owner {
                    if !waker.will_wake(cx.waker()) {
                        *waker = cx.waker().clone();
                    }
                }
                behind.waited = true;
                Poll::Pending
            }
            Lifecycle::BehindFailed { result, .. } => {
                let error = error_of(*result);
                ops.remove(index);
                key.0.set(None);
                Poll::Ready(Err(error))
            }
            _ => unreachable!("`BehindKey::slot` returns a Behind or BehindFailed slot"),
        }
    }

    /// The error the stream's last send behind failed with, if it did (returned once); `Ok`
    /// while it is in flight, or once it is over.
    pub(crate) fn behind_error(&self, key: &BehindKey, fd: RawFd) -> io::Result<()> {
        if key.0.get().is_none() {
            return Ok(());
        }
        let mut ops = self.ops.borrow_mut();
        match key.slot(&mut ops, fd) {
            Some((index, Lifecycle::BehindFailed { result, .. })) => {
                let error = error_of(*result);
                ops.remove(index);
                key.0.set(None);
                Err(error)
            }
            _ => Ok(()),
        }
    }

    /// Whether the stream's send behind in flight may take a while: the peer's window was full
    /// (or the ring is at its limit and nearly dry). A call that waits for it should not hold a
    /// ring buffer meanwhile.
    pub(crate) fn behind_stalled(&self, key: &BehindKey, fd: RawFd) -> bool {
        let scarce = self.buf_ring.as_ref().is_some_and(|ring| ring.scarce());
        match key.slot(&mut self.ops.borrow_mut(), fd) {
            Some((_, Lifecycle::Behind(behind))) => behind.stalled || scarce,
            _ => false,
        }
    }

    /// Whether the stream has no send behind in flight and no error of one to report: a send
    /// may start now without overtaking one.
    pub(crate) fn behind_idle(&self, key: &BehindKey, fd: RawFd) -> bool {
        key.0.get().is_none() || key.slot(&mut self.ops.borrow_mut(), fd).is_none()
    }

    /// The stream is being dropped: if its send behind is in flight, the slot takes `fd` and the
    /// driver closes it once the send is over (see the module docs); otherwise `fd` comes back,
    /// to be closed now. An error nobody will read any more is dropped.
    pub(crate) fn drop_behind(&self, key: &BehindKey, fd: OwnedFd) -> Option<OwnedFd> {
        let raw = fd.as_raw_fd();
        let mut ops = self.ops.borrow_mut();
        match key.slot(&mut ops, raw) {
            Some((_, Lifecycle::Behind(behind))) => {
                stats::trace_step!(
                    "  the stream is dropped with a SEND behind in flight: fd {raw} is closed once it is over"
                );
                behind.owner = Owner::Dropped;
                // The slot owns the number now (closed in `finish_behind`).
                let _ = fd.into_raw_fd();
                None
            }
            Some((index, _)) => {
                ops.remove(index);
                Some(fd)
            }
            None => Some(fd),
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
        let Some(Lifecycle::Behind(behind)) = ops.get_mut(index) else {
            unreachable!("a send behind's completion comes to its Behind slot")
        };
        let (result, asked) = (completion.result, behind.bytes.len() - behind.sent);
        if result > 0 {
            behind.sent += (result as usize).min(asked);
        }
        if behind.sent == behind.bytes.len() {
            let Lifecycle::Behind(behind) = ops.remove(index) else { unreachable!() };
            self.finish_behind(behind, None, wakers, after);
            return;
        }
        // Short, or a ring buffer's first try found the window full (EAGAIN), or a signal.
        let again = result > 0 || result == -libc::EAGAIN || result == -libc::EINTR;
        if again && self.alive.get() {
            let newly_stalled = !std::mem::replace(&mut behind.stalled, true);
            stats::trace_step!(
                "    SEND took {} of {asked} bytes (the peer's window is full): the driver sends the rest itself",
                result.max(0)
            );
            if let (true, true, Owner::Stream(waker)) = (newly_stalled, behind.waited, &behind.owner) {
                // A call waits behind this send, maybe with a ring buffer: it should not hold
                // it for as long as the peer takes (see `behind_stalled`).
                stats::trace_step!("    → wake the task waiting for it: the send ahead is stalled");
                wakers.push(waker.clone());
            }
            after.behind.push(index);
            return;
        }
        // Failed (a send that takes nothing is an error too, and so is one cut by the runtime's
        // drop).
        let result = if again || result > 0 { -libc::ECANCELED } else { result };
        let behind = fail(ops, index, result);
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
        let Behind { bytes, fd, owner, waited, .. } = behind;
        #[cfg(feature = "trace")]
        if executor::trace::on() {
            let what = match &bytes {
                Bytes::Ring { bid, .. } => format!("gives ring buffer {bid} back"),
                Bytes::Owned(_) => "drops the buffer".to_string(),
            };
            match failed {
                None => stats::trace_step!(
                    "    SEND complete: the driver {what}; {}",
                    match (&owner, waited) {
                        (Owner::Stream(_), false) => "the task is not woken".to_string(),
                        (Owner::Stream(_), true) => "a call on the stream waits for it".to_string(),
                        (Owner::Dropped, _) => format!("the stream was dropped: fd {fd} is closed now"),
                    }
                ),
                Some(result) => stats::trace_step!(
                    "    SEND failed ({}): the driver {what}; {}",
                    error_of(result),
                    match owner {
                        Owner::Stream(_) => "the stream's next call returns the error".to_string(),
                        Owner::Dropped => format!("the stream was dropped: fd {fd} is closed now"),
                    }
                ),
            }
        }
        after.released.push(bytes);
        match owner {
            Owner::Stream(waker) if waited || failed.is_some() => {
                stats::trace_step!("    → wake the task waiting for it");
                wakers.push(waker);
            }
            Owner::Stream(_) => stats::bump(|c| &c.sends_quiet),
            Owner::Dropped => {
                if failed.is_none() {
                    stats::bump(|c| &c.sends_quiet);
                }
                after.close.push(fd);
            }
        }
    }

    /// After a turn: sends the rest of the send behind in slot `index`, which was short (see
    /// the module docs). A ring buffer's unsent bytes are copied out first and the ring buffer
    /// given back: the peer's window is full, and a ring buffer must not wait on it.
    pub(super) fn continue_behind(&self, index: usize, wakers: &mut Vec<Waker>, after: &mut AfterTurn) {
        let mut ops = self.ops.borrow_mut();
        let Some(Lifecycle::Behind(behind)) = ops.get_mut(index) else { return };
        if let Bytes::Ring { bid, offset, len } = behind.bytes {
            let ring = self.buf_ring.as_ref().expect("a ring piece comes from the driver's ring");
            let sent = behind.sent.min(len as usize);
            // SAFETY: a CQE handed this piece to the program, and it goes back to the ring only
            // below, after the copy.
            let rest = unsafe { ring.bytes(bid, offset, len as usize) }[sent..].to_vec();
            stats::bump(|c| &c.sends_detached);
            stats::trace_step!(
                "  the peer's window is full: the driver copies the {} unsent bytes out of ring buffer {bid} and gives it back",
                rest.len()
            );
            behind.bytes = Bytes::Owned(rest);
            behind.sent = 0;
            after.released.push(Bytes::Ring { bid, offset, len });
        }
        let request = self.send_request(behind);
        drop(ops);
        stats::bump(|c| &c.sends_continued);
        // SAFETY: as in `send_behind`: the request points into the slot's bytes, kept there
        // until this operation's completion.
        if let Err(e) = unsafe { self.start(index, &request) } {
            let result = -e.raw_os_error().unwrap_or(libc::EIO);
            let behind = fail(&mut self.ops.borrow_mut(), index, result);
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
        // SAFETY: the stream handed its fd to the send's slot (`drop_behind`), which was its only
        // owner, and the slot is gone.
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
