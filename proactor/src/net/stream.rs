//! [`TcpStream`]: a connection, its state, connecting, and closing. Its reads are in `read`,
//! its writes in `write`.

use std::cell::{Cell, OnceCell, RefCell};
use std::fmt;
use std::io;
use std::mem;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::addr::SockAddr;
use super::held::ReadState;
use crate::backend::{Completion, Request};
use crate::driver::behind::BehindKey;
use crate::driver::op::Op;
use crate::driver::Driver;
use crate::sys;

/// A TCP connection. Reads and writes take owned buffers and give them back, except
/// [`write_all_behind`](Self::write_all_behind), which keeps the buffer and returns at once.
///
/// Methods take `&self`: a read and a write can be in flight at the same time (from two futures
/// joined in one task). Two reads in flight at once are allowed by the kernel but split the
/// incoming bytes between them in an unspecified way.
///
/// It also implements `futures_io::AsyncRead`, `AsyncBufRead` and `AsyncWrite` (as do
/// `&TcpStream` and the halves of [`split`](Self::split)), through buffers the stream owns: see
/// the `compat` module.
pub struct TcpStream {
    /// Closed through the backend in `Drop`.
    pub(super) fd: mem::ManuallyDrop<OwnedFd>,
    pub(super) driver: Rc<Driver>,
    /// Bytes received by reads that were cancelled after the kernel had filled their buffers;
    /// the next reads return them first. Shared with those reads' orphan handlers; made by
    /// the first `read`.
    pub(super) stash: OnceCell<Rc<RefCell<Stash>>>,
    /// The multishot receive of `read_provided`, once started (on epoll: its pending pick), and
    /// whether one was armed before.
    pub(super) recv: RefCell<RecvSlot>,
    /// The send behind in flight, or its error, if any (see `write_all_behind`).
    pub(super) behind: BehindKey,
    /// What futures-io reads keep between polls (see `compat`): made by the first one, so a
    /// stream that never uses futures-io pays this pointer only. Taken out while it is polled,
    /// and by a [`ReadHalf`](super::ReadHalf) for as long as it lives.
    pub(super) compat: Cell<Option<Box<ReadState>>>,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.fd.as_raw_fd())
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

impl TcpStream {
    pub(super) fn new(fd: OwnedFd, driver: Rc<Driver>) -> TcpStream {
        TcpStream {
            fd: mem::ManuallyDrop::new(fd),
            driver,
            stash: OnceCell::new(),
            recv: RefCell::new(RecvSlot::Never),
            behind: BehindKey::default(),
            compat: Cell::new(None),
        }
    }

    /// Connects to `addr`, trying each address it resolves to in turn.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let driver = Driver::current()?;
        executor::net::each_addr_async(addr, |addr| TcpStream::connect_addr(driver.clone(), addr)).await
    }

    async fn connect_addr(driver: Rc<Driver>, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::new(sys::tcp_socket(&addr, false)?, driver);
        let (driver, fd) = (&stream.driver, stream.fd.as_raw_fd());
        // SAFETY: the address is in the boxed SockAddr, which the operation owns until its
        // completion; the socket outlives the operation (it is only dropped after the await).
        let op = unsafe {
            driver.submit(SockAddr::from(&addr), false, |addr| Request::Connect {
                fd,
                addr: (&addr.storage as *const libc::sockaddr_storage).cast(),
                len: addr.len,
            })
        };
        let (result, _addr) = op.await;
        result.and_then(Completion::into_result)?;
        Ok(stream)
    }

    /// Takes over a connected socket made elsewhere. Must be called inside the runtime that
    /// will drive it.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        Ok(TcpStream::new(stream.into(), Driver::current()?))
    }

    /// The error of this stream's send behind, if one failed (see `write_all_behind`).
    #[inline]
    pub(super) fn behind_error(&self) -> io::Result<()> {
        self.driver.behind_error(&self.behind, self.fd.as_raw_fd())
    }
}

executor::socket_options!(TcpStream, |stream| stream.fd.as_fd());

/// A stream's receive operation (see `TcpStream::recv`), and whether one was armed before
/// (the next one is then a re-arm, counted as `recv_rearms`). An enum rather than an `Option`
/// and a flag: the two empty states take the operation's niche, so this is as small as
/// `Option<Op<()>>`, and every stream (every connection's task) 8 bytes smaller.
pub(super) enum RecvSlot {
    Never,
    Ended,
    Armed(Op<()>),
}

impl RecvSlot {
    /// Stores `op` and returns it.
    pub(super) fn arm(&mut self, op: Op<()>) -> &mut Op<()> {
        *self = RecvSlot::Armed(op);
        match self {
            RecvSlot::Armed(op) => op,
            RecvSlot::Never | RecvSlot::Ended => unreachable!("just armed"),
        }
    }
}

/// What cancelled reads of a stream left behind (see `TcpStream::stash`).
#[derive(Default)]
pub(super) struct Stash {
    /// Received by reads whose futures were gone; the next reads return them first.
    pub(super) bytes: Vec<u8>,
    /// Reads submitted and not over yet, cancelled ones included.
    pub(super) reads: usize,
    /// Reads waiting for `reads` to reach 0 (several tasks may share a stream).
    waiters: Vec<Waker>,
}

impl Stash {
    /// Ready once no earlier read is still in flight (or the runtime is gone, when none ever
    /// will be over).
    pub(super) fn poll_no_reads(&mut self, driver: &Driver, cx: &mut Context<'_>) -> Poll<()> {
        if self.reads == 0 || !driver.is_alive() {
            return Poll::Ready(());
        }
        if !self.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(super) fn read_over(&mut self) {
        self.reads -= 1;
        if self.reads == 0 {
            self.waiters.drain(..).for_each(Waker::wake);
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // An SQE naming this fd may still sit in the SQ (a read whose future was just dropped,
        // say). Hand it to the kernel before the fd number is closed and possibly reused, or
        // the kernel would apply it to whatever socket gets the number next. Closing through
        // the ring orders the close after them (SQPOLL included); the multishot receive is
        // cancelled first, so its file reference does not keep the socket open.
        drop(mem::replace(self.recv.get_mut(), RecvSlot::Ended));
        drop(self.compat.take()); // a futures-io read in flight is cancelled the same way
                                  // SAFETY: the fd is not used after this.
        let fd = unsafe { mem::ManuallyDrop::take(&mut self.fd) };
        // A send behind still in flight keeps the socket open until it is over: its bytes go
        // out before the end of stream (see `write_all_behind`).
        if let Some(fd) = self.driver.drop_behind(&self.behind, fd) {
            if planted!(CloseWithOpInFlight) {
                return drop(fd);
            }
            self.driver.close_fd(fd);
        }
    }
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream is part of every connection's task, idle ones included. (72 bytes, and the
    /// pointer to the futures-io read state, made only by streams that use it.)
    #[test]
    fn a_stream_stays_small() {
        assert_eq!(mem::size_of::<RecvSlot>(), mem::size_of::<Option<Op<()>>>());
        assert_eq!(mem::size_of::<Cell<Option<Box<ReadState>>>>(), mem::size_of::<usize>());
        assert!(mem::size_of::<TcpStream>() <= 80, "TcpStream is {} bytes", mem::size_of::<TcpStream>());
    }
}
