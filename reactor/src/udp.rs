//! UDP: [`UdpSocket`], IPv4 and IPv6, with borrowed buffers.
//!
//! Readiness fits datagrams well: one socket serves every peer, and when epoll reports it
//! readable the task takes datagrams with `recvfrom` until the kernel says `EAGAIN`, each with
//! its source address, into a buffer it only lends for the syscall. The edge-triggered
//! protocol is the streams' one (`executor::readiness`) with one difference: a datagram
//! shorter than the buffer proves nothing about the queue behind it (each `recvfrom` returns
//! one datagram), so only `EAGAIN` clears readiness, never a "short" read.
//!
//! Every receive passes `MSG_TRUNC`, so a datagram larger than the buffer is detected and
//! returned as an error ([`DatagramTruncated`](crate::net::DatagramTruncated)) rather than as
//! its first bytes.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use executor::net::{check_datagram, each_addr};

use crate::driver::{Direction, Exhausted, IoSource};
use crate::sys;

/// A UDP socket: datagrams to and from any peer, or, once [`connect`](Self::connect)ed, to and
/// from one.
///
/// Methods take `&self`, so several tasks (or futures) may send and receive on one socket at
/// once; each datagram goes to exactly one receiver.
///
/// # Datagrams the kernel dropped
///
/// When datagrams arrive faster than the socket is read, its receive buffer fills (see
/// [`set_recv_buffer_size`](Self::set_recv_buffer_size)) and the kernel drops the next ones.
/// The kernel counts them per socket: [`drops`](Self::drops) reads this socket's count, and the
/// runtime's [`Stats::datagrams_dropped`](crate::Stats::datagrams_dropped) sums the new drops of
/// every socket of the thread, read when [`stats`](crate::stats()) is called and when a socket
/// is dropped (one `getsockopt` per socket then, none per datagram).
pub struct UdpSocket {
    io: IoSource,
    /// The socket's key in the thread's drop ledger (see `stats::watch_drops`).
    ledger_key: usize,
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.io.fd().as_raw_fd())
            .field("local", &self.local_addr().ok())
            .finish()
    }
}

impl UdpSocket {
    /// Binds to `addr` (the first address it resolves to that works). Port 0 picks a free
    /// port; see [`local_addr`](Self::local_addr). Must be called inside the runtime that will
    /// drive it.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        let driver = crate::net::current_driver()?;
        each_addr(addr, |addr| {
            let fd = executor::net::udp_bind(&addr, true)?;
            UdpSocket::new(IoSource::new(driver.clone(), fd)?)
        })
    }

    /// Takes over a socket made elsewhere, switching it to non-blocking mode. Must be called
    /// inside the runtime that will drive it.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        UdpSocket::new(IoSource::new(crate::net::current_driver()?, socket.into())?)
    }

    fn new(io: IoSource) -> io::Result<UdpSocket> {
        let ledger_key = crate::stats::watch_drops(io.fd());
        Ok(UdpSocket { io, ledger_key })
    }

    /// How many datagrams the kernel has dropped on this socket since it was made, because its
    /// receive buffer was full (`SO_MEMINFO`'s count, a `u32` that wraps; Linux 4.6).
    pub fn drops(&self) -> io::Result<u32> {
        executor::net::drops(self.io.fd())
    }

    /// Asks the kernel for a receive buffer of `bytes` (`SO_RCVBUF`): how much of the datagrams
    /// that arrived and were not read yet the socket may hold before the kernel drops the next
    /// ones. The default (`net.core.rmem_default`, often 208 KiB) holds three of the largest
    /// datagrams. Linux doubles the value for its bookkeeping and clamps it to the
    /// `net.core.rmem_max` sysctl; [`recv_buffer_size`](Self::recv_buffer_size) says what it
    /// kept.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<()> {
        executor::net::set_recv_buffer_size(self.io.fd(), bytes)
    }

    /// The receive buffer as the kernel keeps it (see
    /// [`set_recv_buffer_size`](Self::set_recv_buffer_size)).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        executor::net::recv_buffer_size(self.io.fd())
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.io.fd())
    }

    /// The address it is connected to (`ENOTCONN` if it is not).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sys::peer_addr(self.io.fd())
    }

    /// Connects to `addr` (the first address it resolves to that works): [`send`](Self::send)
    /// goes there, [`recv`](Self::recv) only takes datagrams from there, and an ICMP error about
    /// it (nobody listens there: `ECONNREFUSED`) is reported by the next call. Nothing is sent;
    /// it does not wait.
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(addr, |addr| sys::connect(self.io.fd(), &addr))
    }

    /// Receives one datagram into `buf`: its length and its source. A datagram larger than
    /// `buf` is an error ([`DatagramTruncated`](crate::net::DatagramTruncated), kind
    /// `InvalidData`), and is gone.
    pub fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + 'a {
        poll_fn(move |cx| self.io.poll_io(cx, Direction::Read, |fd| recv_op(fd, buf)))
    }

    /// Receives one datagram from the connected peer into `buf` (see
    /// [`recv_from`](Self::recv_from)).
    pub fn recv<'a>(&'a self, buf: &'a mut [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        let received = self.recv_from(buf);
        async move { received.await.map(|(n, _)| n) }
    }

    /// Sends `buf` as one datagram to `target`; returns its length.
    pub fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        target: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + 'a {
        poll_fn(move |cx| {
            self.io.poll_io(cx, Direction::Write, |fd| Ok((sys::send_to(fd, buf, Some(&target))?, None)))
        })
    }

    /// Sends `buf` as one datagram to the connected peer.
    pub fn send<'a>(&'a self, buf: &'a [u8]) -> impl Future<Output = io::Result<usize>> + 'a {
        poll_fn(move |cx| {
            self.io.poll_io(cx, Direction::Write, |fd| Ok((sys::send_to(fd, buf, None)?, None)))
        })
    }

    /// Waits until a datagram (or an error) is waiting. Spurious readiness is possible: a
    /// following [`try_recv_from`](Self::try_recv_from) may still return `WouldBlock`.
    pub fn readable(&self) -> impl Future<Output = io::Result<()>> + '_ {
        poll_fn(|cx| self.io.poll_ready(cx, Direction::Read))
    }

    /// Receives without waiting: `WouldBlock` if no datagram is there.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.io.try_io(Direction::Read, |fd| recv_op(fd, buf))
    }

    /// Reads and clears the socket's pending error (`SO_ERROR`): an ICMP error about an earlier
    /// datagram, on a connected socket.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        sys::take_error(self.io.fd())
    }
}

/// One `recvfrom`; never "short" (a datagram shorter than the buffer says nothing about the
/// ones queued behind it), and a cut datagram is an error.
fn recv_op(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<((usize, SocketAddr), Option<Exhausted>)> {
    let (len, from) = sys::recv_from(fd, buf)?;
    Ok(((check_datagram(len, buf.len(), Some(from))?, from), None))
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        // Before `io` closes the fd.
        crate::stats::forget_drops(self.ledger_key);
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.io.fd().as_raw_fd()
    }
}
