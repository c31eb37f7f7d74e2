//! [`TcpListener`]: accepting connections, with multishot accept where the backend has it.

use std::cell::RefCell;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::mem;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use executor::net::AcceptBackoff;
use futures_task::ArcWake;

use super::addr::SockAddr;
use super::stream::TcpStream;
use crate::backend::{Completion, Request};
use crate::driver::op::Op;
use crate::driver::Driver;
use crate::sys;
use executor::time::{sleep_until, Sleep};

/// Back-pressure for multishot accept: the kernel accepts into the operation's queue whether or
/// not the program calls `accept`. Once this many accepted connections wait there, the driver
/// stops the operation; later connections wait in the kernel's backlog (holding none of our
/// fds) until `accept` drains the queue and arms a new one.
const ACCEPT_QUEUE_MAX: u16 = 64;

/// A TCP socket listening for connections.
///
/// Running out of fds: as in the reactor, an `EMFILE`/`ENFILE` makes the listener back off
/// (5 ms doubling to 200 ms between retries) instead of spinning, the error is returned at most
/// once a second, and queued connections are served once fds are free.
pub struct TcpListener {
    /// Closed through the backend in `Drop`.
    fd: mem::ManuallyDrop<OwnedFd>,
    driver: Rc<Driver>,
    accept: RefCell<AcceptState>,
}

#[derive(Default)]
struct AcceptState {
    /// The multishot accept in flight, if the kernel supports it.
    multishot: Option<Op<()>>,
    /// The single-shot accept in flight otherwise.
    single: Option<Op<Box<SockAddr>>>,
    backoff: AcceptBackoff,
    pause: Option<Sleep>,
    /// Every task waiting in `accept`. The accept operation and the pause store a single
    /// waker, this one's, which wakes them all; one gets the connection, the others wait again.
    waiting: Arc<AcceptWaiters>,
}

/// The tasks waiting in `accept` on one listener (see `AcceptState::waiting`).
#[derive(Default)]
struct AcceptWaiters {
    wakers: Mutex<Vec<Waker>>,
}

impl AcceptWaiters {
    fn add(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }
}

impl ArcWake for AcceptWaiters {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        let wakers =
            std::mem::take(&mut *arc_self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.fd.as_raw_fd())
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

impl TcpListener {
    /// Binds to `addr` (with `SO_REUSEADDR`) and listens. Must be called inside the runtime
    /// that will drive it.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let driver = Driver::current()?;
        let fd = executor::net::each_addr(addr, |addr| executor::net::listen(&addr, false))?;
        Ok(TcpListener { fd: mem::ManuallyDrop::new(fd), driver, accept: RefCell::default() })
    }

    /// Takes over a listener made elsewhere (with `SO_REUSEPORT`, say). Must be called inside
    /// the runtime that will drive it.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            fd: mem::ManuallyDrop::new(listener.into()),
            driver: Driver::current()?,
            accept: RefCell::default(),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.fd.as_fd())
    }

    /// Waits for a connection and returns it with the peer's address. Connection-level errors
    /// are skipped; see the type's docs for fd exhaustion.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let waiting = {
            let state = self.accept.borrow();
            state.waiting.add(cx.waker());
            futures_task::waker(state.waiting.clone())
        };
        let cx = &mut Context::from_waker(&waiting);
        loop {
            let mut state = self.accept.borrow_mut();
            if let Some(pause) = state.pause.as_mut() {
                ready!(Pin::new(pause).poll(cx));
                state.pause = None;
            }
            let (result, addr) = if self.driver.facts().multishot_accept {
                ready!(self.poll_multishot(&mut state, cx))
            } else {
                ready!(self.poll_single(&mut state, cx))
            };
            let accepted = result.and_then(|fd| {
                // SAFETY: a successful accept's result is a new fd that nobody else owns.
                let fd = unsafe { sys::owned_fd(fd as RawFd) };
                let peer = match addr {
                    Some(addr) => addr,
                    // A peer that reset before the accept: getpeername says ENOTCONN; skip it
                    // like any other connection-level error.
                    None => sys::peer_addr(fd.as_fd()).map_err(|e| match e.raw_os_error() {
                        Some(libc::ENOTCONN) => io::Error::from_raw_os_error(libc::ECONNABORTED),
                        _ => e,
                    })?,
                };
                Ok((TcpStream::new(fd, self.driver.clone()), peer))
            });
            match accepted {
                Ok(accepted) => {
                    state.backoff.succeeded();
                    return Poll::Ready(Ok(accepted));
                }
                Err(e) => {
                    let report = state.backoff.failed(e);
                    state.pause = state.backoff.pause_until().map(sleep_until);
                    if let Some(e) = report {
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }

    /// The next completion of the multishot accept, re-arming it when it has ended.
    fn poll_multishot(
        &self,
        state: &mut AcceptState,
        cx: &mut Context<'_>,
    ) -> Poll<(io::Result<u32>, Option<SocketAddr>)> {
        loop {
            let op = match &mut state.multishot {
                Some(op) => op,
                None => {
                    let fd = self.fd.as_raw_fd();
                    // SAFETY: a multishot accept carries no pointers (no address is returned).
                    let op = unsafe { self.driver.submit((), true, |_| Request::AcceptMulti { fd }) };
                    state.multishot.insert(op.limit_queue(ACCEPT_QUEUE_MAX))
                }
            };
            match ready!(op.poll_next(cx)) {
                // Stopped by the queue bound (see `ACCEPT_QUEUE_MAX`): not an error.
                Some(Ok(completion)) if completion.result == -libc::ECANCELED => continue,
                Some(completion) => return Poll::Ready((completion.and_then(Completion::into_result), None)),
                None => state.multishot = None, // ended: re-arm
            }
        }
    }

    fn poll_single(
        &self,
        state: &mut AcceptState,
        cx: &mut Context<'_>,
    ) -> Poll<(io::Result<u32>, Option<SocketAddr>)> {
        let op = match &mut state.single {
            Some(op) => op,
            None => {
                let fd = self.fd.as_raw_fd();
                // SAFETY: the address storage and its length are in the boxed SockAddr, which the
                // operation owns until its completion.
                let op = unsafe {
                    self.driver.submit(SockAddr::empty(), true, |addr| Request::Accept {
                        fd,
                        addr: (&mut addr.storage as *mut libc::sockaddr_storage).cast(),
                        len: &mut addr.len,
                    })
                };
                state.single.insert(op)
            }
        };
        let (result, addr) = ready!(Pin::new(op).poll(cx));
        state.single = None;
        let peer = sys::sockaddr_to(&addr.storage, addr.len).ok();
        Poll::Ready((result.and_then(Completion::into_result), peer))
    }
}

impl Drop for TcpListener {
    /// Stops listening before it returns: the accept in flight is cancelled and reaped (a
    /// multishot accept keeps a reference to the socket in the kernel until its last
    /// completion), then the socket is closed, so that the port can be bound again at once (by
    /// this program, or by the next one started right after this one exits).
    fn drop(&mut self) {
        let AcceptState { multishot, single, .. } = std::mem::take(&mut *self.accept.borrow_mut());
        multishot.into_iter().for_each(Op::cancel_and_wait);
        single.into_iter().for_each(Op::cancel_and_wait);
        // SAFETY: the fd is not used after this.
        let fd = unsafe { mem::ManuallyDrop::take(&mut self.fd) };
        self.driver.close_fd_now(fd);
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
