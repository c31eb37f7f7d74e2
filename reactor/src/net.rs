//! TCP: [`TcpListener`] and [`TcpStream`], IPv4 and IPv6; UDP: [`UdpSocket`] (in its own
//! module, `udp`, re-exported here).
//!
//! Each socket is an `IoSource`: a non-blocking fd registered with the runtime's epoll
//! driver. An operation first asks the driver whether its direction is ready; if so it makes
//! the syscall directly, and only when the kernel says `EAGAIN` does the task wait for the next
//! readiness edge. The buffer is borrowed only for the duration of that syscall, which is why a
//! readiness runtime can take `&mut [u8]` and a completion runtime cannot.
//!
//! # Holding no buffer while idle
//!
//! A connection that is waiting for data does not need a buffer at all: await
//! [`TcpStream::readable`], then [`TcpStream::try_read`] into a buffer that is only borrowed
//! for that moment (a per-thread scratch buffer, for instance). `reactor/examples/echo.rs` does
//! exactly that, so 10,000 idle connections cost only their task and registration.
//! [`TcpStream::read_with`] does the same in one step (one readiness check, one `read`): its
//! closure runs only once the socket is ready, and picks the buffer then.

use std::cell::RefCell;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use executor::net::{each_addr, AcceptBackoff};

use crate::driver::{Direction, Driver, Exhausted, IoSource};
use crate::sys;
use crate::time::sleep_until;

pub use crate::udp::UdpSocket;
/// A receive whose datagram did not fit the buffer fails with this inside its `io::Error`:
///
/// ```
/// use reactor::net::{DatagramTruncated, UdpSocket};
///
/// reactor::block_on(async {
///     let socket = UdpSocket::bind("127.0.0.1:0")?;
///     socket.send_to(&[7; 200], socket.local_addr()?).await?;
///     let e = socket.recv_from(&mut [0; 100]).await.unwrap_err();
///     let cut = e.get_ref().and_then(|inner| inner.downcast_ref::<DatagramTruncated>());
///     assert_eq!(cut.map(|cut| (cut.len, cut.capacity)), Some((200, 100)));
///     Ok::<_, std::io::Error>(())
/// })?;
/// # Ok::<_, std::io::Error>(())
/// ```
pub use executor::net::DatagramTruncated;
pub use executor::net::{is_datagram_error, MAX_DATAGRAM};

pub(crate) fn current_driver() -> io::Result<Rc<Driver>> {
    executor::with_driver(Rc::clone).ok_or_else(|| {
        io::Error::other("no reactor runtime is running on this thread (call this inside reactor::block_on)")
    })
}

/// A TCP socket listening for connections.
///
/// # Running out of file descriptors
///
/// When `accept` fails with `EMFILE`/`ENFILE` (or the kernel is out of buffers), the pending
/// connection stays in the kernel's queue and the listener stays readable, so naively retrying
/// would spin at 100% CPU. Instead the listener backs off: each `accept` waits 5 ms, 10 ms, ...
/// up to 200 ms between retries, until one succeeds. The failure is returned to the caller (to
/// log) at most once a second; the other retries are silent. Queued clients are not dropped:
/// they are served as soon as descriptors are free again.
pub struct TcpListener {
    io: IoSource,
    /// Each waiting `accept` sleeps until its pause is over on its own timer, so any number of
    /// tasks may accept on one listener.
    backoff: RefCell<AcceptBackoff>,
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("fd", &self.io.fd().as_raw_fd())
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

impl TcpListener {
    /// Binds to `addr` (with `SO_REUSEADDR`) and listens. Port 0 picks a free port; see
    /// [`local_addr`](Self::local_addr).
    ///
    /// Must be called inside the runtime that will drive it.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let driver = current_driver()?;
        each_addr(addr, |addr| TcpListener::from_fd(driver.clone(), executor::net::listen(&addr, true)?))
    }

    /// Takes over a listener made elsewhere (for example with `SO_REUSEPORT` set), switching it
    /// to non-blocking mode. Must be called inside the runtime that will drive it.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        TcpListener::from_fd(current_driver()?, listener.into())
    }

    fn from_fd(driver: Rc<Driver>, fd: OwnedFd) -> io::Result<TcpListener> {
        Ok(TcpListener { io: IoSource::new(driver, fd)?, backoff: RefCell::default() })
    }

    /// Waits for a connection and returns it with the peer's address.
    ///
    /// Errors that concern only one connection (it was reset before it was accepted, say) are
    /// skipped. On fd exhaustion see the type's docs. Several tasks may accept at once.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        loop {
            let pause_until = self.backoff.borrow().pause_until();
            if let Some(until) = pause_until {
                sleep_until(until).await;
            }
            let accepted = poll_fn(|cx| {
                self.io.poll_io(cx, Direction::Read, |fd| sys::accept(fd).map(|conn| (conn, None)))
            })
            .await;
            match accepted {
                Ok((fd, peer)) => {
                    self.backoff.borrow_mut().succeeded();
                    return TcpStream::from_fd(self.io.driver().clone(), fd).map(|stream| (stream, peer));
                }
                Err(e) => {
                    if let Some(e) = self.backoff.borrow_mut().failed(e) {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.io.fd())
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.fd().as_raw_fd()
    }
}

/// A TCP connection.
///
/// Reads and writes take `&mut self`, so one task at a time waits on each direction; use
/// [`split`](Self::split) to read and write concurrently from two futures. Also implements
/// `futures_io::AsyncRead` and `AsyncWrite`, so the `futures` crate's combinators work on it.
pub struct TcpStream {
    io: IoSource,
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("fd", &self.io.fd().as_raw_fd())
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

executor::socket_options!(TcpStream, |stream| stream.io.fd());

impl TcpStream {
    /// Connects to `addr`, trying each address it resolves to in turn.
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let driver = current_driver()?;
        executor::net::each_addr_async(addr, |addr| TcpStream::connect_addr(driver.clone(), addr)).await
    }

    async fn connect_addr(driver: Rc<Driver>, addr: SocketAddr) -> io::Result<TcpStream> {
        let fd = sys::tcp_socket(&addr, true)?;
        match sys::connect(fd.as_fd(), &addr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let stream = TcpStream::from_fd(driver, fd)?;
        // The connection is established (or has failed) once the socket is writable.
        poll_fn(|cx| stream.io.poll_io(cx, Direction::Write, |fd| connect_result(fd).map(|()| ((), None))))
            .await?;
        Ok(stream)
    }

    /// Takes over a connected socket made elsewhere, switching it to non-blocking mode. Must
    /// be called inside the runtime that will drive it.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        TcpStream::from_fd(current_driver()?, stream.into())
    }

    fn from_fd(driver: Rc<Driver>, fd: OwnedFd) -> io::Result<TcpStream> {
        Ok(TcpStream { io: IoSource::new(driver, fd)? })
    }

    /// Reads some bytes into `buf`; `Ok(0)` means the peer closed its side (or `buf` is
    /// empty).
    pub fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        poll_fn(move |cx| self.poll_read_shared(cx, buf))
    }

    /// Writes some bytes from `buf`, returning how many were written.
    pub fn write<'a>(&'a mut self, buf: &'a [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        poll_fn(move |cx| self.poll_write_shared(cx, buf))
    }

    /// Writes all of `buf`.
    #[inline]
    pub fn write_all<'a>(&'a mut self, buf: &'a [u8]) -> impl Future<Output = io::Result<()>> + 'a {
        write_all(self, buf)
    }

    /// Waits until the socket is readable, then calls `f`, which makes the read through
    /// [`ReadyRead::read`] into a buffer of its choosing: a task waiting for data holds no
    /// buffer, and takes one only when there is something to read. One readiness check and one
    /// `read` syscall per call, where [`readable`](Self::readable) then
    /// [`try_read`](Self::try_read) checks readiness twice.
    ///
    /// If that `read` would block after all (readiness is a hint), what `f` returned is dropped
    /// (with the buffer in it) and `f` runs again at the next readiness event; anything else `f`
    /// returns, errors included, is the result.
    ///
    /// ```no_run
    /// # async fn demo(stream: &mut reactor::net::TcpStream) -> std::io::Result<()> {
    /// let received = stream
    ///     .read_with(|ready| {
    ///         let mut buf = vec![0; 4096]; // or one from a pool
    ///         let n = ready.read(&mut buf)?;
    ///         buf.truncate(n);
    ///         Ok(buf)
    ///     })
    ///     .await?;
    /// # let _ = received; Ok(()) }
    /// ```
    pub fn read_with<'a, T: 'a>(
        &'a mut self,
        mut f: impl FnMut(&mut ReadyRead<'_>) -> io::Result<T> + 'a,
    ) -> impl Future<Output = io::Result<T>> + 'a {
        poll_fn(move |cx| self.poll_read_with(cx, &mut f))
    }

    /// The poll behind [`read_with`](Self::read_with), for hand-written futures.
    #[inline]
    pub fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut ReadyRead<'_>) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        // Not through `IoSource::poll_io`: the closure's result is the result (no `Result` of a
        // `Result` to unwrap, on the path of every message), and `ReadyRead::read` retries
        // `EINTR` itself.
        loop {
            ready!(self.io.poll_ready(cx, Direction::Read))?;
            let mut ready = ReadyRead { fd: self.io.fd(), got_some: false, exhausted: None };
            let result = f(&mut ready);
            match ready.exhausted {
                // Nothing read, stale readiness: wait for the next event, and call `f` again then.
                Some(Exhausted::WouldBlock) if !ready.got_some => {
                    self.io.clear(Direction::Read, Exhausted::WouldBlock);
                    continue;
                }
                Some(why) => self.io.clear(Direction::Read, why),
                None => {}
            }
            return Poll::Ready(result);
        }
    }

    /// Waits until the socket is readable (data, end of stream, or an error is waiting).
    /// Spurious readiness is possible: a following [`try_read`](Self::try_read) may still
    /// return `WouldBlock`.
    pub fn readable(&mut self) -> impl Future<Output = io::Result<()>> + '_ {
        poll_fn(|cx| self.io.poll_ready(cx, Direction::Read))
    }

    /// Waits until the socket is writable.
    pub fn writable(&mut self) -> impl Future<Output = io::Result<()>> + '_ {
        poll_fn(|cx| self.io.poll_ready(cx, Direction::Write))
    }

    /// Reads without waiting: `WouldBlock` if no data is there.
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io.try_io(Direction::Read, |fd| read_op(fd, buf))
    }

    /// Writes without waiting: `WouldBlock` if the send buffer is full.
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.io.try_io(Direction::Write, |fd| write_op(fd, buf))
    }

    /// Splits the stream into a read half and a write half that can be used at the same time
    /// (for example from two futures joined in one task).
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        (ReadHalf { stream: self }, WriteHalf { stream: self })
    }

    #[inline]
    fn poll_read_shared(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.io.poll_io(cx, Direction::Read, |fd| read_op(fd, buf))
    }

    #[inline]
    fn poll_write_shared(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.io.poll_io(cx, Direction::Write, |fd| write_op(fd, buf))
    }
}

/// The read [`TcpStream::read_with`] lends its closure, on a socket that was ready.
#[derive(Debug)]
pub struct ReadyRead<'a> {
    fd: BorrowedFd<'a>,
    /// Whether a read returned something (bytes, or the end of stream).
    got_some: bool,
    /// What the last read proved about readiness.
    exhausted: Option<Exhausted>,
}

impl ReadyRead<'_> {
    /// One `read` syscall into `buf` (retried on `EINTR`): the bytes read, 0 at end of stream
    /// (or if `buf` is empty). `WouldBlock` when there is nothing to read; if no read of this
    /// run of the closure got anything, whatever the closure returns is then dropped and it
    /// runs again at the next readiness event. So a closure may read until `WouldBlock`, or
    /// stop earlier.
    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match read_op(self.fd, buf) {
                Ok((n, exhausted)) => {
                    self.got_some = true;
                    self.exhausted = exhausted;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        self.exhausted = Some(Exhausted::WouldBlock);
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// `read`, reporting a short read: fewer bytes than asked (but not end of stream) means the
/// socket's receive queue is empty, so readiness can be cleared without another syscall.
#[inline]
fn read_op(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<Exhausted>)> {
    let n = sys::read(fd, buf)?;
    Ok((n, (n > 0 && n < buf.len()).then_some(Exhausted::Short)))
}

/// `send`, reporting a short write: the send buffer is full.
#[inline]
fn write_op(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<(usize, Option<Exhausted>)> {
    let n = sys::send(fd, buf)?;
    Ok((n, (n < buf.len()).then_some(Exhausted::Short)))
}

/// The outcome of a non-blocking connect, once the socket reported writable.
fn connect_result(fd: BorrowedFd<'_>) -> io::Result<()> {
    if let Some(e) = sys::take_error(fd)? {
        return Err(e);
    }
    // Writable with no error but not connected: a spurious wake-up; wait for the next edge.
    match sys::peer_addr(fd) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(io::ErrorKind::WouldBlock.into()),
        Err(e) => Err(e),
    }
}

/// Writes all of `buf`. A plain `poll_fn` rather than an `async fn`, so the future is just the
/// two references: it is part of the state of every connection task that awaits it.
#[inline]
fn write_all<'a>(stream: &'a TcpStream, mut buf: &'a [u8]) -> impl Future<Output = io::Result<()>> + 'a {
    poll_fn(move |cx| {
        while !buf.is_empty() {
            let n = ready!(stream.poll_write_shared(cx, buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            buf = &buf[n..];
        }
        Poll::Ready(Ok(()))
    })
}

impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd()
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.fd().as_raw_fd()
    }
}

impl futures_io::AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.poll_read_shared(cx, buf)
    }
}

impl futures_io::AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_shared(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // nothing is buffered in user space
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown(Shutdown::Write))
    }
}

/// The reading half of a [`TcpStream`], from [`TcpStream::split`].
#[derive(Debug)]
pub struct ReadHalf<'a> {
    stream: &'a TcpStream,
}

/// The writing half of a [`TcpStream`], from [`TcpStream::split`].
#[derive(Debug)]
pub struct WriteHalf<'a> {
    stream: &'a TcpStream,
}

impl ReadHalf<'_> {
    /// Like [`TcpStream::read`].
    pub fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        let stream: &'a TcpStream = self.stream;
        poll_fn(move |cx| stream.poll_read_shared(cx, buf))
    }
}

impl WriteHalf<'_> {
    /// Like [`TcpStream::write`].
    pub fn write<'a>(&'a mut self, buf: &'a [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        let stream: &'a TcpStream = self.stream;
        poll_fn(move |cx| stream.poll_write_shared(cx, buf))
    }

    /// Like [`TcpStream::write_all`].
    pub fn write_all<'a>(&'a mut self, buf: &'a [u8]) -> impl Future<Output = io::Result<()>> + 'a {
        write_all(self.stream, buf)
    }

    /// Shuts down the write side of the connection.
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }
}

impl futures_io::AsyncRead for ReadHalf<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.stream.poll_read_shared(cx, buf)
    }
}

impl futures_io::AsyncWrite for WriteHalf<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream.poll_write_shared(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown())
    }
}
