//! TCP: [`TcpListener`] and [`TcpStream`], IPv4 and IPv6, with owned buffers; UDP:
//! [`UdpSocket`] (in its own module, `udp`, re-exported here).
//!
//! Every I/O method describes one operation to the kernel (an SQE) and awaits its completion.
//! Buffers are passed by value and handed back with the result (see [`crate::buf`]), because the
//! kernel uses them after the call has returned. Its `unsafe` blocks, like those of `driver`,
//! `buf` and `bufring`, are where memory is handed to the kernel: an SQE built around a
//! pointer into a buffer the operation owns.
//!
//! Accepting uses multishot accept where the kernel supports it (one SQE keeps producing
//! connections; Linux 5.19), stopped while 64 accepted connections wait unclaimed, and
//! single-shot accept otherwise. Sockets are closed through the ring, after every SQE already
//! queued for them.

use std::cell::{OnceCell, RefCell};
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

use futures_task::ArcWake;

use crate::buf::{self, BufResult, IoBuf, IoBufMut, ProvidedBuf};
use crate::bufring::{self, BufRing};
use executor::net::AcceptBackoff;

use crate::driver::{BehindKey, Completion, Driver, Op, Request};
use crate::sys;
use crate::time::{sleep_until, Sleep};

/// The most receive completions a stream may have waiting for its task: past it the
/// multishot receive is stopped (the peer then waits, by TCP's flow control) until the task
/// reads again. Bounds the ring buffers one stream holds while its task is busy. Half of the
/// kernel's burst (a multishot receive loops up to 32 times on a socket with data): a bulk
/// stream whose task is a little behind is not stopped and re-armed over and over.
const RECV_QUEUE_MAX: u16 = 16;

/// Back-pressure for multishot accept: the kernel accepts into the operation's queue whether or
/// not the program calls `accept`. Once this many accepted connections wait there, the driver
/// stops the operation; later connections wait in the kernel's backlog (holding none of our
/// fds) until `accept` drains the queue and arms a new one.
const ACCEPT_QUEUE_MAX: u16 = 64;

pub use crate::udp::{Datagram, UdpSocket};

pub(crate) fn current_driver() -> io::Result<Rc<Driver>> {
    executor::with_driver(Rc::clone).ok_or_else(|| {
        io::Error::other(
            "no proactor runtime is running on this thread (call this inside proactor::block_on)",
        )
    })
}

/// A socket address the kernel writes (accept) or reads (connect), at a stable heap address.
struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    fn empty() -> Box<SockAddr> {
        let (storage, _) = sys::sockaddr_from(&SocketAddr::from(([0, 0, 0, 0], 0)));
        Box::new(SockAddr { storage, len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t })
    }

    fn from(addr: &SocketAddr) -> Box<SockAddr> {
        let (storage, len) = sys::sockaddr_from(addr);
        Box::new(SockAddr { storage, len })
    }
}

/// A TCP socket listening for connections.
///
/// Running out of fds: as in the reactor, an `EMFILE`/`ENFILE` makes the listener back off
/// (5 ms doubling to 200 ms between retries) instead of spinning, the error is returned at most
/// once a second, and queued connections are served once fds are free.
pub struct TcpListener {
    /// Closed through the ring in `Drop`.
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
        let driver = current_driver()?;
        let fd = executor::net::each_addr(addr, |addr| executor::net::listen(&addr, false))?;
        Ok(TcpListener { fd: mem::ManuallyDrop::new(fd), driver, accept: RefCell::default() })
    }

    /// Takes over a listener made elsewhere (with `SO_REUSEPORT`, say). Must be called inside
    /// the runtime that will drive it.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            fd: mem::ManuallyDrop::new(listener.into()),
            driver: current_driver()?,
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
            let (result, addr) = if self.driver.features.multishot_accept {
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
                    let op = unsafe { self.driver.submit((), true, true, |_| Request::AcceptMulti { fd }) };
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
                    self.driver.submit(SockAddr::empty(), false, true, |addr| Request::Accept {
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
    fn drop(&mut self) {
        // Cancel the accept in flight (dropping it) before the fd closes; see TcpStream's Drop.
        drop(std::mem::take(&mut *self.accept.borrow_mut()));
        // SAFETY: the fd is not used after this.
        let fd = unsafe { mem::ManuallyDrop::take(&mut self.fd) };
        self.driver.close_fd(fd);
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

/// A TCP connection. Reads and writes take owned buffers and give them back, except
/// [`write_all_behind`](Self::write_all_behind), which keeps the buffer and returns at once.
///
/// Methods take `&self`: a read and a write can be in flight at the same time (from two futures
/// joined in one task). Two reads in flight at once are allowed by the kernel but split the
/// incoming bytes between them in an unspecified way.
pub struct TcpStream {
    /// Closed through the ring in `Drop`.
    fd: mem::ManuallyDrop<OwnedFd>,
    driver: Rc<Driver>,
    /// Bytes received by reads that were cancelled after the kernel had filled their buffers;
    /// the next reads return them first. Shared with those reads' orphan handlers; made by
    /// the first `read`.
    stash: OnceCell<Rc<RefCell<Stash>>>,
    /// The multishot receive of `read_provided`, once started (on epoll: its pending pick), and
    /// whether one was armed before.
    recv: RefCell<RecvSlot>,
    /// The send behind in flight, or its error, if any (see `write_all_behind`).
    behind: BehindKey,
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
    fn new(fd: OwnedFd, driver: Rc<Driver>) -> TcpStream {
        TcpStream {
            fd: mem::ManuallyDrop::new(fd),
            driver,
            stash: OnceCell::new(),
            recv: RefCell::new(RecvSlot::Never),
            behind: BehindKey::default(),
        }
    }

    /// Connects to `addr`, trying each address it resolves to in turn.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let driver = current_driver()?;
        executor::net::each_addr_async(addr, |addr| TcpStream::connect_addr(driver.clone(), addr)).await
    }

    async fn connect_addr(driver: Rc<Driver>, addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::new(sys::tcp_socket(&addr, false)?, driver);
        let (driver, fd) = (&stream.driver, stream.fd.as_raw_fd());
        // SAFETY: the address is in the boxed SockAddr, which the operation owns until its
        // completion; the socket outlives the operation (it is only dropped after the await).
        let op = unsafe {
            driver.submit(SockAddr::from(&addr), false, false, |addr| Request::Connect {
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
        Ok(TcpStream::new(stream.into(), current_driver()?))
    }

    /// Reads into `buf` from its start, up to [`IoBufMut::bytes_total`] bytes; gives back the
    /// count (0 at end of stream) and the buffer. For a `Vec`, `len()` is then the count.
    ///
    /// Dropping the future before it completes cancels the read without losing data: bytes the
    /// kernel had already received into the buffer are kept for the next read. The next read
    /// waits for such a cancelled read to be over first (on io_uring that is a turn away; on
    /// aio, a read a glibc thread is blocked in ends only when data comes), so bytes always
    /// come back in order.
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        let stash = self.stash.get_or_init(Rc::default).clone();
        async move {
            if let Err(e) = self.behind_error() {
                return (Err(e), buf);
            }
            poll_fn(|cx| stash.borrow_mut().poll_no_reads(&self.driver, cx)).await;
            let start = if stash.borrow().bytes.is_empty() && buf.bytes_total() > 0 {
                let fd = self.fd.as_raw_fd();
                // SAFETY: the pointer and length describe `buf`'s own memory, which stays put
                // (IoBufMut's contract) and is owned by the operation until its completion.
                let op = unsafe {
                    self.driver.submit(buf, false, false, |buf| {
                        let len = buf.bytes_total().min(u32::MAX as usize) as u32;
                        Request::Recv { fd, buf: buf.stable_mut_ptr(), len }
                    })
                };
                stash.borrow_mut().reads += 1;
                let late = stash.clone();
                Ok(op.on_orphan_cqe(move |mut buf, completion| {
                    let mut stash = late.borrow_mut();
                    if let Ok(n) = completion.into_result() {
                        // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
                        unsafe { buf.set_init(n as usize) };
                        stash.bytes.extend_from_slice(&buf.as_init_slice()[..n as usize]);
                        if n > 0 {
                            crate::stats::bump(|c| &c.recvs_kept);
                        }
                    }
                    stash.read_over();
                }))
            } else {
                Err(buf)
            };
            let (n, mut buf) = match start {
                Ok(op) => {
                    let (result, mut buf) = op.await;
                    stash.borrow_mut().read_over();
                    match result.and_then(Completion::into_result) {
                        Ok(n) => {
                            // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
                            unsafe { buf.set_init(n as usize) };
                            (n as usize, buf)
                        }
                        // Bytes a cancelled read received come before the error; the error will
                        // come again on the next read.
                        Err(_) if !stash.borrow().bytes.is_empty() => (0, buf),
                        Err(e) => return (Err(e), buf),
                    }
                }
                Err(buf) => (0, buf),
            };
            let mut stash = stash.borrow_mut();
            if stash.bytes.is_empty() {
                return (Ok(n), buf);
            }
            // A cancelled read got bytes before this one did: those come first.
            stash.bytes.extend_from_slice(&buf.as_init_slice()[..n]);
            let n = buf::fill_from(&mut buf, &stash.bytes);
            stash.bytes.drain(..n);
            (Ok(n), buf)
        }
    }

    /// Receives the next bytes into a buffer the runtime picks from its provided-buffer ring at
    /// the moment they arrive; `None` at end of stream.
    ///
    /// A connection waiting here holds no buffer: one multishot receive stays armed in the
    /// kernel (no SQE per read), and a buffer is taken from the shared ring only when data
    /// comes. Drop the [`ProvidedBuf`] (or write it out) to give the buffer back. When all the
    /// ring's buffers are out, receiving pauses until one is returned. Without kernel support
    /// (Linux < 6.0) each call reads into a new buffer instead. On the epoll backend the driver
    /// takes a buffer from a per-thread pool when the socket is readable: no buffer while idle
    /// there either. Do not mix with [`read`](Self::read)
    /// on the same stream.
    ///
    /// An error of a [send behind](Self::write_all_behind) on this stream comes out here too,
    /// as soon as it is known (the task is woken for it).
    pub async fn read_provided(&self) -> io::Result<Option<ProvidedBuf>> {
        match self.driver.buf_ring() {
            Some(ring) => {
                let mut ticket = BufferTicket { ring, ticket: None };
                poll_fn(|cx| self.poll_read_provided(ring, &mut ticket.ticket, cx)).await
            }
            None if self.driver.picks_buffers() => poll_fn(|cx| self.poll_read_picked(cx)).await,
            None => {
                // An error of a send behind ends the wait too (the read, cancelled, keeps its
                // bytes for the next one): a read in a glibc thread may wait long.
                let mut read = Box::pin(self.read(buf::spare_vec()));
                let (read, buf) = poll_fn(|cx| match self.behind_error() {
                    Err(e) => Poll::Ready((Err(e), Vec::new())),
                    Ok(()) => read.as_mut().poll(cx),
                })
                .await;
                // Wrapped first, so that on error or end of stream the buffer goes back to the
                // spare pool when dropped.
                let buf = ProvidedBuf::owned(buf);
                Ok((read? > 0).then_some(buf))
            }
        }
    }

    fn poll_read_provided(
        &self,
        ring: &Rc<BufRing>,
        ticket: &mut Option<u64>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<ProvidedBuf>>> {
        self.behind_error()?;
        let mut recv = self.recv.borrow_mut();
        loop {
            let op = match &mut *recv {
                RecvSlot::Armed(op) => op,
                RecvSlot::Never | RecvSlot::Ended => {
                    if ring.available() == 0 {
                        // The last receive ended with ENOBUFS: wait for a buffer to come back.
                        ring.wait_for_buffer(ticket, cx.waker());
                        return Poll::Pending;
                    }
                    let fd = self.fd.as_raw_fd();
                    if matches!(*recv, RecvSlot::Ended) {
                        crate::stats::bump(|c| &c.recv_rearms);
                    }
                    // SAFETY: a receive that selects its buffer from the registered ring carries
                    // no pointer; the ring's memory outlives the ring (see `bufring`).
                    let op = unsafe {
                        self.driver
                            .submit((), true, false, |_| Request::RecvMulti { fd, group: bufring::GROUP })
                    };
                    recv.arm(op.spill_unread().limit_queue(RECV_QUEUE_MAX))
                }
            };
            let next = match op.poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    crate::stats::trace_step!(
                        "  wait for the next CQE of the multishot RECV on fd {}: it stays armed in the kernel, no new SQE",
                        self.fd.as_raw_fd()
                    );
                    return Poll::Pending;
                }
            };
            let Some(completion) = next else {
                *recv = RecvSlot::Ended; // the multishot receive ended: arm a new one
                continue;
            };
            let completion = completion?;
            if completion.spilled() {
                // Copied out of the ring while nobody was reading (see `Op::spill_unread`).
                let bytes = op.take_spilled(completion.result.max(0) as usize);
                return Poll::Ready(Ok(Some(ProvidedBuf::owned(bytes))));
            }
            let buffer = completion.buffer();
            return match (completion.into_result(), buffer) {
                (Ok(n), Some(bid)) if n > 0 => Poll::Ready(Ok(Some(ProvidedBuf::from_ring(
                    ring.clone(),
                    bid,
                    completion.offset,
                    n as usize,
                )))),
                (Ok(_), bid) => {
                    bid.into_iter().for_each(|bid| ring.release(bid));
                    Poll::Ready(Ok(None)) // end of stream
                }
                // The ring ran dry, or the driver stopped a receive nobody read (see
                // `Op::spill_unread`): arm a new one.
                (Err(e), _) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECANCELED)) => continue,
                (Err(e), _) => Poll::Ready(Err(e)),
            };
        }
    }

    /// Writes some of `buf` (starting at its first byte); gives back how many bytes were
    /// written, and the buffer.
    ///
    /// After a [send behind](Self::write_all_behind), the write starts once that send is over
    /// (and returns its error, if it failed).
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        // Submitted now if nothing is ahead of it, as every other operation.
        let early = if self.driver.behind_idle(&self.behind, self.fd.as_raw_fd()) {
            Ok(self.send(buf, 0, false))
        } else {
            Err(buf)
        };
        async move {
            let op = match early {
                Ok(op) => op,
                Err(buf) => match self.flush().await {
                    Ok(()) => self.send(buf, 0, false),
                    Err(e) => return (Err(e), buf),
                },
            };
            let (result, buf) = op.await;
            (result.and_then(Completion::into_result).map(|n| n as usize), buf)
        }
    }

    /// Writes all of `buf`, then gives it back.
    ///
    /// After a [send behind](Self::write_all_behind), the write starts once that send is over
    /// (and returns its error, if it failed).
    pub fn write_all<B: IoBuf>(&self, buf: B) -> WriteAll<'_, B> {
        let state = if buf.bytes_init() == 0 {
            Writing::Over(Some(buf))
        } else if self.driver.behind_idle(&self.behind, self.fd.as_raw_fd()) {
            let dontwait = buf.is_shared();
            Writing::Sending(self.send(buf, 0, dontwait))
        } else {
            Writing::AfterBehind(Some(buf))
        };
        WriteAll { stream: self, state, written: 0 }
    }

    /// Hands all of `buf` to the runtime to send, and is ready as soon as the send is submitted
    /// (a "write-behind"): the task goes on without waiting for the kernel to take the bytes,
    /// and is not woken when it has. For buffers the caller is done with: the bytes of
    /// [`read_provided`](Self::read_provided) (an echo, a forwarded message), a response made
    /// for the purpose.
    ///
    /// ```no_run
    /// # async fn echo(stream: proactor::net::TcpStream) -> std::io::Result<()> {
    /// while let Some(received) = stream.read_provided().await? {
    ///     stream.write_all_behind(received).await?; // one wake per message: the receive's
    /// }
    /// stream.flush().await?; // the last send is over (or its error is here)
    /// stream.shutdown(std::net::Shutdown::Write)
    /// # }
    /// ```
    ///
    /// # What the driver does
    ///
    /// The operation's slot owns the buffer until the send is over. When the completion says
    /// every byte was taken, the driver gives the buffer back itself (a ring buffer goes back
    /// to the ring right then, so a connection that goes idle pins none), frees the slot, and
    /// wakes nobody: one wake and one poll of the task per message fewer than
    /// [`write_all`](Self::write_all), whose completion must hand the buffer back to the task. A
    /// short send (the peer's window is full) the driver continues by itself, first copying a
    /// ring buffer's unsent bytes out and giving it back (as `write_all` does: a ring buffer is
    /// sent without waiting first, see [`IoBuf::is_shared`]). The task is woken only if the
    /// send fails, or if one of its calls waits for the send to be over.
    ///
    /// # Order, and errors
    ///
    /// A stream has at most one send behind in flight, so bytes leave in the order they were
    /// handed over: the next `write_all_behind`, [`write`](Self::write) or `write_all` waits
    /// until the one in flight is over, and [`flush`](Self::flush) waits for it. An error of
    /// the send (`EPIPE`, `ECONNRESET`, ...) is kept and returned, once, by the stream's next
    /// call among those, [`read`](Self::read) and `read_provided`; the task that queued the
    /// send is woken for it, so that a task waiting in `read_provided` sees it at once. When
    /// this returns `Ok`, the bytes were handed to the runtime, not yet to the peer.
    ///
    /// # Shutting down, dropping
    ///
    /// [`shutdown`](Self::shutdown) acts at once: `flush().await` first, or the bytes still in
    /// flight may be cut off. Dropping the stream does not cut them off: the driver keeps the
    /// socket open until the send is over, then closes it, so the peer reads every byte and
    /// then the end of stream. (A peer that never reads keeps that socket, and the bytes, until
    /// it resets or the runtime is dropped; dropping the runtime cancels every send in flight.)
    /// Dropping this future before it is ready drops `buf` unsent.
    ///
    /// `buf` is a [`ProvidedBuf`] or a `Vec<u8>` (which becomes one without a copy).
    pub fn write_all_behind(&self, buf: impl Into<ProvidedBuf>) -> WriteBehind<'_> {
        WriteBehind { stream: self, buf: Some(buf.into()) }
    }

    /// Waits until no [send behind](Self::write_all_behind) of this stream is in flight; returns
    /// the error of the last one, if it failed (once).
    pub fn flush(&self) -> impl Future<Output = io::Result<()>> + '_ {
        poll_fn(move |cx| self.driver.poll_behind(&self.behind, self.fd.as_raw_fd(), cx))
    }

    /// Ready once no send behind of this stream is in flight (see [`flush`](Self::flush)), for a
    /// write that holds `buf` meanwhile. If the send ahead is stalled on the peer's window (or
    /// the ring is nearly dry), a ring buffer is copied out and given back first: waiting with
    /// it would pin it for as long as the peer takes to read (as `WriteAll` does for its own).
    fn poll_behind_with<B: IoBuf>(&self, buf: &mut B, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.fd.as_raw_fd();
        let ready = self.driver.poll_behind(&self.behind, fd, cx);
        if ready.is_pending() && buf.is_shared() && self.driver.behind_stalled(&self.behind, fd) {
            crate::stats::bump(|c| &c.sends_detached);
            crate::stats::trace_step!(
                "  the send ahead waits for the peer: copy the {} bytes out of the ring buffer and give it back",
                buf.bytes_init()
            );
            buf.detach();
        }
        ready
    }

    /// The error of this stream's send behind, if one failed (see `write_all_behind`).
    fn behind_error(&self) -> io::Result<()> {
        self.driver.behind_error(&self.behind, self.fd.as_raw_fd())
    }

    /// One `send` of `buf[offset..]`, with `MSG_NOSIGNAL` (a reset peer is `EPIPE`, not a
    /// `SIGPIPE` that kills the process), and `MSG_DONTWAIT` if `dontwait`.
    fn send<B: IoBuf>(&self, buf: B, offset: usize, dontwait: bool) -> Op<B> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: the pointer and length describe `buf[offset..]`, memory owned by the
        // operation until its completion that stays put (IoBuf's contract).
        unsafe {
            self.driver.submit(buf, false, false, |buf| {
                let offset = offset.min(buf.bytes_init());
                let len = (buf.bytes_init() - offset).min(u32::MAX as usize) as u32;
                Request::Send { fd, buf: buf.stable_ptr().add(offset), len, dontwait }
            })
        }
    }
}

/// The epoll backend's `read_provided`.
impl TcpStream {
    /// Receives into a buffer the backend takes only when the socket is readable
    /// ([`Request::RecvPick`]): a waiting connection holds no buffer, as with io_uring's ring.
    ///
    /// The operation lives in the stream (in `recv`, where io_uring keeps its multishot
    /// receive), not in the caller's future: a `read_provided` dropped early (a `timeout`) leaves
    /// it queued for the next call, so nothing is lost, and every connection's task stays as
    /// small as on io_uring. Bytes a cancelled `read` left behind come first.
    fn poll_read_picked(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<ProvidedBuf>>> {
        self.behind_error()?;
        let mut recv = self.recv.borrow_mut();
        let op = match &mut *recv {
            RecvSlot::Armed(op) => op,
            RecvSlot::Never | RecvSlot::Ended => {
                if let Some(stash) = self.stash.get() {
                    let early = mem::take(&mut stash.borrow_mut().bytes);
                    if !early.is_empty() {
                        return Poll::Ready(Ok(Some(ProvidedBuf::owned(early))));
                    }
                }
                let fd = self.fd.as_raw_fd();
                // SAFETY: the request carries no pointer (the backend owns the buffer it picks).
                let op = unsafe { self.driver.submit((), false, false, |_| Request::RecvPick { fd }) };
                recv.arm(op)
            }
        };
        let (completion, ()) = ready!(Pin::new(op).poll(cx));
        *recv = RecvSlot::Ended;
        let completion = completion?;
        let picked = completion.buffer().and_then(|id| self.driver.take_picked(id));
        completion.into_result()?;
        Poll::Ready(Ok(picked.map(ProvidedBuf::owned)))
    }
}

executor::socket_options!(TcpStream, |stream| stream.fd.as_fd());

/// A stream's receive operation (see `TcpStream::recv`), and whether one was armed before
/// (the next one is then a re-arm, counted as `recv_rearms`). An enum rather than an `Option`
/// and a flag: the two empty states take the operation's niche, so this is as small as
/// `Option<Op<()>>`, and every stream (every connection's task) 8 bytes smaller.
enum RecvSlot {
    Never,
    Ended,
    Armed(Op<()>),
}

impl RecvSlot {
    /// Stores `op` and returns it.
    fn arm(&mut self, op: Op<()>) -> &mut Op<()> {
        *self = RecvSlot::Armed(op);
        match self {
            RecvSlot::Armed(op) => op,
            RecvSlot::Never | RecvSlot::Ended => unreachable!("just armed"),
        }
    }
}

/// What cancelled reads of a stream left behind (see `TcpStream::stash`).
#[derive(Default)]
struct Stash {
    /// Received by reads whose futures were gone; the next reads return them first.
    bytes: Vec<u8>,
    /// Reads submitted and not over yet, cancelled ones included.
    reads: usize,
    /// Reads waiting for `reads` to reach 0 (several tasks may share a stream).
    waiters: Vec<Waker>,
}

impl Stash {
    /// Ready once no earlier read is still in flight (or the runtime is gone, when none ever
    /// will be over).
    fn poll_no_reads(&mut self, driver: &Driver, cx: &mut Context<'_>) -> Poll<()> {
        if self.reads == 0 || !driver.is_alive() {
            return Poll::Ready(());
        }
        if !self.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            self.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn read_over(&mut self) {
        self.reads -= 1;
        if self.reads == 0 {
            self.waiters.drain(..).for_each(Waker::wake);
        }
    }
}

/// A `read_provided`'s place in the queue of readers waiting for a ring buffer, left when the
/// future is dropped.
pub(crate) struct BufferTicket<'a> {
    pub(crate) ring: &'a BufRing,
    pub(crate) ticket: Option<u64>,
}

impl Drop for BufferTicket<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.ring.stop_waiting(ticket);
        }
    }
}

/// The future of [`TcpStream::write_all`]: one `send` after another until every byte is out.
///
/// A named future rather than an `async fn` so that the buffer is stored once (inside the
/// operation in flight): it is part of the state of every connection task that writes.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WriteAll<'a, B: IoBuf> {
    stream: &'a TcpStream,
    state: Writing<B>,
    written: usize,
}

/// Where a [`WriteAll`] is.
enum Writing<B: IoBuf> {
    /// Waiting for the stream's send behind to be over before the first send.
    AfterBehind(Option<B>),
    /// A send in flight.
    Sending(Op<B>),
    /// Nothing (more) to send: the buffer goes back at the next poll (`None` once it has).
    Over(Option<B>),
}

impl<B: IoBuf> fmt::Debug for WriteAll<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteAll").field("written", &self.written).finish()
    }
}

impl<B: IoBuf> Future for WriteAll<'_, B> {
    type Output = BufResult<(), B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let op = match &mut this.state {
                Writing::Sending(op) => op,
                Writing::Over(buf) => {
                    return Poll::Ready((Ok(()), buf.take().expect("WriteAll polled after completion")))
                }
                Writing::AfterBehind(buf) => {
                    let behind = ready!(this
                        .stream
                        .poll_behind_with(buf.as_mut().expect("WriteAll polled after completion"), cx));
                    let buf = buf.take().expect("WriteAll polled after completion");
                    if let Err(e) = behind {
                        this.state = Writing::Over(None);
                        return Poll::Ready((Err(e), buf));
                    }
                    let dontwait = buf.is_shared();
                    this.state = Writing::Sending(this.stream.send(buf, 0, dontwait));
                    continue;
                }
            };
            let (result, mut buf) = ready!(Pin::new(op).poll(cx));
            match result.and_then(Completion::into_result) {
                Ok(0) => {
                    this.state = Writing::Over(None);
                    return Poll::Ready((Err(io::ErrorKind::WriteZero.into()), buf));
                }
                Ok(n) => this.written += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Only a send without waiting ends like this: the peer's window is full.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.state = Writing::Over(None);
                    return Poll::Ready((Err(e), buf));
                }
            }
            if this.written >= buf.bytes_init() {
                this.state = Writing::Over(None);
                return Poll::Ready((Ok(()), buf));
            }
            if buf.is_shared() {
                // The peer is not taking the bytes as fast as they come: wait for it with a
                // copy of our own, and give the ring buffer back for the other connections.
                crate::stats::bump(|c| &c.sends_detached);
                crate::stats::trace_step!(
                    "  the peer's window is full: copy the {} unsent bytes out of the ring buffer and give it back",
                    buf.bytes_init() - this.written
                );
                buf.detach();
            }
            this.state = Writing::Sending(this.stream.send(buf, this.written, false));
        }
    }
}

/// The future of [`TcpStream::write_all_behind`]: waits for the stream's send behind in flight
/// to be over, if one is, then submits the send and is ready.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WriteBehind<'a> {
    stream: &'a TcpStream,
    /// Until submitted.
    buf: Option<ProvidedBuf>,
}

impl fmt::Debug for WriteBehind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehind").field("buf", &self.buf).finish()
    }
}

impl Future for WriteBehind<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(executor::poll_budget(cx));
        let stream = self.stream;
        let fd = stream.fd.as_raw_fd();
        ready!(stream.poll_behind_with(self.buf.as_mut().expect("WriteBehind polled after completion"), cx))?;
        let buf = self.buf.take().expect("WriteBehind polled after completion");
        if buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(stream.driver.send_behind(&stream.behind, fd, buf, cx.waker()))
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
        // SAFETY: the fd is not used after this.
        let fd = unsafe { mem::ManuallyDrop::take(&mut self.fd) };
        // A send behind still in flight keeps the socket open until it is over: its bytes go
        // out before the end of stream (see `write_all_behind`).
        if let Some(fd) = self.driver.drop_behind(&self.behind, fd) {
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

    /// A stream is part of every connection's task, idle ones included.
    #[test]
    fn a_stream_stays_small() {
        assert_eq!(mem::size_of::<RecvSlot>(), mem::size_of::<Option<Op<()>>>());
        assert!(mem::size_of::<TcpStream>() <= 72, "TcpStream is {} bytes", mem::size_of::<TcpStream>());
    }
}
