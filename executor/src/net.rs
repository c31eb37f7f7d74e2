//! What both runtimes' socket types share: address resolution, listening sockets, how accept
//! errors are classified and backed off, the socket-option methods of a stream, and for UDP
//! the bound socket, the truncated-datagram error and which datagram errors concern only one
//! peer.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys;

/// The listen backlog: how many connections the kernel queues before `accept` takes them
/// (Linux caps it at `net.core.somaxconn`).
pub const BACKLOG: i32 = 1024;

/// First and longest pause of the accept back-off after fd exhaustion.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(200);
/// At most one fd-exhaustion error per this interval is returned by `accept`.
const ACCEPT_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Tries `f` on each address `addr` resolves to; returns the first success or the last error.
///
/// Resolving a host name blocks the thread (it is `getaddrinfo`); IP literals do not.
pub fn each_addr<A: ToSocketAddrs, T>(
    addr: A,
    mut f: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last_err = None;
    for addr in addr.to_socket_addrs()? {
        match f(addr) {
            Ok(value) => return Ok(value),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing")))
}

/// [`each_addr`] for an asynchronous `f` (a connect): tries each address in turn.
pub async fn each_addr_async<A, T, F, Fut>(addr: A, mut f: F) -> io::Result<T>
where
    A: ToSocketAddrs,
    F: FnMut(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = io::Result<T>>,
{
    let mut last_err = None;
    for addr in addr.to_socket_addrs()? {
        match f(addr).await {
            Ok(value) => return Ok(value),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing")))
}

/// A TCP socket bound to `addr` (with `SO_REUSEADDR`) and listening with [`BACKLOG`].
pub fn listen(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let fd = sys::tcp_socket(addr, nonblocking)?;
    sys::set_int_opt(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    sys::bind(fd.as_fd(), addr)?;
    sys::listen(fd.as_fd(), BACKLOG)?;
    Ok(fd)
}

/// Errors of accept that concern only the connection being accepted (or a signal): the
/// listener itself is fine, so accepting just goes on (as accept(2) advises).
pub fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// Errors of accept that mean "no resources for another fd right now".
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// What a listener does after a failed accept, and when it may try again.
///
/// When accept fails with `EMFILE`/`ENFILE` (or the kernel is out of buffers), the pending
/// connection stays in the kernel's queue and the listener stays ready, so naively retrying
/// would spin at 100% CPU. Instead the listener backs off: 5 ms, 10 ms, ... up to 200 ms
/// between retries, until one succeeds. The failure is returned to the caller (to log) at most
/// once a second; the other retries are silent. Queued clients are not dropped: they are
/// served as soon as descriptors are free again.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// The current pause; `None` when the last accept succeeded.
    delay: Option<Duration>,
    /// No accept before this instant.
    pause_until: Option<Instant>,
    /// When an exhaustion error was last returned to the caller.
    reported: Option<Instant>,
}

impl AcceptBackoff {
    /// Until when the listener must wait before its next accept, if it must.
    pub fn pause_until(&self) -> Option<Instant> {
        self.pause_until.filter(|&until| crate::time::now() < until)
    }

    /// An accept succeeded: no more pause.
    pub fn succeeded(&mut self) {
        (self.delay, self.pause_until) = (None, None);
    }

    /// An accept failed with `e`: `None` to accept again (after [`pause_until`](Self::pause_until)),
    /// or the error to return to the caller.
    pub fn failed(&mut self, e: io::Error) -> Option<io::Error> {
        if is_connection_error(&e) {
            return None;
        }
        if !is_resource_exhaustion(&e) {
            return Some(e);
        }
        let delay = self.delay.map_or(ACCEPT_BACKOFF_MIN, |d| (d * 2).min(ACCEPT_BACKOFF_MAX));
        let now = crate::time::now();
        (self.delay, self.pause_until) = (Some(delay), Some(now + delay));
        if self.reported.is_none_or(|at| now.duration_since(at) >= ACCEPT_REPORT_INTERVAL) {
            self.reported = Some(now);
            return Some(e);
        }
        None
    }
}

/// Implements the socket-option methods every TCP stream of both runtimes has
/// (`shutdown`, `set_nodelay`, `nodelay`, `peer_addr`, `local_addr`, `take_error`) on a type,
/// given how to borrow its fd: `socket_options!(TcpStream, |s| s.io.fd())`.
#[macro_export]
macro_rules! socket_options {
    ($ty:ty, |$s:ident| $fd:expr) => {
        impl $ty {
            /// Shuts down the read side, the write side (the peer reads end of stream once it
            /// has read everything sent before) or both.
            pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
                let $s = self;
                $crate::sys::shutdown($fd, how)
            }

            /// Sets `TCP_NODELAY`: send small writes at once instead of waiting to coalesce
            /// them (Nagle's algorithm). Request/response protocols want this.
            pub fn set_nodelay(&self, nodelay: bool) -> std::io::Result<()> {
                let $s = self;
                $crate::sys::set_int_opt($fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, nodelay.into())
            }

            /// Whether `TCP_NODELAY` is set.
            pub fn nodelay(&self) -> std::io::Result<bool> {
                let $s = self;
                Ok($crate::sys::get_int_opt($fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
            }

            /// The remote address.
            pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                let $s = self;
                $crate::sys::peer_addr($fd)
            }

            /// The local address.
            pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
                let $s = self;
                $crate::sys::local_addr($fd)
            }

            /// Reads and clears the socket's pending error (`SO_ERROR`).
            pub fn take_error(&self) -> std::io::Result<Option<std::io::Error>> {
                let $s = self;
                $crate::sys::take_error($fd)
            }
        }
    };
}

// ----------------------------------------------------------------------------------------------
// UDP

/// The largest UDP payload: an IPv6 datagram's (65,535 bytes less the 8-byte UDP header);
/// IPv4's is 65,507. A receive buffer this large never truncates (jumbograms aside).
pub const MAX_DATAGRAM: usize = 65_527;

/// A UDP socket bound to `addr`.
pub fn udp_bind(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    let fd = sys::udp_socket(addr, nonblocking)?;
    sys::bind(fd.as_fd(), addr)?;
    Ok(fd)
}

/// The error of a receive whose datagram was larger than the buffer: the kernel kept only
/// what fitted and dropped the rest, so the bytes received are not the datagram that was sent.
/// Both runtimes return it (as an `io::Error` of kind `InvalidData`, see [`truncated`])
/// instead of the cut bytes, so that nobody echoes or parses half a datagram by accident. The
/// datagram is gone; the next receive returns the next one.
///
/// Each runtime re-exports it as `net::DatagramTruncated` (`reactor::net`, `proactor::net`), so
/// a program can match on it without depending on this crate: `e.get_ref().and_then(|inner|
/// inner.downcast_ref::<DatagramTruncated>())`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramTruncated {
    /// The datagram's real length.
    pub len: usize,
    /// The size of the buffer it did not fit.
    pub capacity: usize,
    /// Who sent it, where known.
    pub from: Option<SocketAddr>,
}

impl fmt::Display for DatagramTruncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a datagram of {} bytes", self.len)?;
        if let Some(from) = self.from {
            write!(f, " from {from}")?;
        }
        write!(f, " did not fit the {}-byte buffer (truncated by the kernel, discarded)", self.capacity)
    }
}

impl std::error::Error for DatagramTruncated {}

/// The `io::Error` for a datagram of `len` bytes that did not fit `capacity`.
pub fn truncated(len: usize, capacity: usize, from: Option<SocketAddr>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, DatagramTruncated { len, capacity, from })
}

/// The details if `e` is a truncated datagram (see [`DatagramTruncated`]).
pub fn as_truncated(e: &io::Error) -> Option<&DatagramTruncated> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<DatagramTruncated>())
}

/// Errors of a datagram receive or send that concern one datagram or one peer, not the socket:
/// a server answering many peers goes on after them.
///
/// - `ECONNREFUSED` (and the other ICMP-reported errors: host or network unreachable, ...): an
///   earlier datagram reached a port where nobody listens (a client that went away); the kernel
///   reports it on the next call, once.
/// - `EMSGSIZE`, `ENOBUFS`, `ENOMEM`, `EPERM`/`EACCES` (a firewall), `EINTR`, `EAGAIN`: about
///   this one send.
/// - A datagram that did not fit the buffer ([`DatagramTruncated`]).
pub fn is_datagram_error(e: &io::Error) -> bool {
    as_truncated(e).is_some()
        || matches!(
            e.raw_os_error(),
            Some(
                libc::ECONNREFUSED
                    | libc::ECONNRESET
                    | libc::EHOSTUNREACH
                    | libc::ENETUNREACH
                    | libc::EHOSTDOWN
                    | libc::ENETDOWN
                    | libc::ENONET
                    | libc::EPROTO
                    | libc::ETIMEDOUT
                    | libc::EMSGSIZE
                    | libc::ENOBUFS
                    | libc::ENOMEM
                    | libc::EPERM
                    | libc::EACCES
                    | libc::EINTR
                    | libc::EAGAIN
            )
        )
}

/// A receive's result as the caller sees it: the datagram's real length `len` (the receive
/// passed `MSG_TRUNC`) becomes [`truncated`] when it exceeds `capacity`.
pub fn check_datagram(len: usize, capacity: usize, from: Option<SocketAddr>) -> io::Result<usize> {
    if len > capacity {
        Err(truncated(len, capacity, from))
    } else {
        Ok(len)
    }
}

// ----------------------------------------------------------------------------------------------
// UDP socket sizing and the kernel's drop count

/// Asks the kernel for a receive buffer of `bytes` (`SO_RCVBUF`): how much a socket may hold
/// of datagrams that arrived and were not read yet; past it the kernel drops them. Linux
/// doubles the value (the other half pays for its bookkeeping) and clamps it to the
/// `net.core.rmem_max` sysctl; [`recv_buffer_size`] reads back what it kept.
pub fn set_recv_buffer_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let bytes = i32::try_from(bytes).unwrap_or(i32::MAX);
    sys::set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)
}

/// The socket's receive buffer as the kernel keeps it (`SO_RCVBUF`): twice what was asked
/// (see [`set_recv_buffer_size`]), or the `net.core.rmem_default` sysctl if nobody asked.
pub fn recv_buffer_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    Ok(sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?.max(0) as usize)
}

/// How many datagrams the kernel has dropped on this socket so far because its receive buffer
/// was full: the socket's own count (`sk_drops`), read with `getsockopt(SO_MEMINFO)` (Linux 4.6).
/// A `u32` that wraps; [`DropLedger`] turns the counts into new drops.
///
/// Read on demand, it costs nothing per datagram. (`SO_RXQ_OVFL` would carry the same count
/// on every datagram as a control message; measured here, writing and reading that message was
/// some 4 % of a UDP echo server's CPU, so the runtimes ask the socket instead.)
pub fn drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(sys::meminfo(fd)?[libc::SK_MEMINFO_DROPS as usize])
}

/// The UDP sockets of one runtime's thread whose kernel drop counts ([`drops`]) the runtime
/// adds to its statistics: each socket is watched from when it is made until it is dropped
/// (before its fd closes), and [`take_new`](Self::take_new) reads every watched socket's count,
/// one `getsockopt` each, when the statistics are read.
#[derive(Debug, Default)]
pub struct DropLedger {
    /// Per watched socket, its fd and the count last read (what is older is accounted for).
    sockets: std::cell::RefCell<slab::Slab<(std::os::fd::RawFd, u32)>>,
}

impl DropLedger {
    /// No sockets watched.
    pub const fn new() -> DropLedger {
        DropLedger { sockets: std::cell::RefCell::new(slab::Slab::new()) }
    }

    /// Starts watching `fd`: drops from now on are new (those before are the socket's past).
    /// Returns the key for [`forget`](Self::forget). A kernel that cannot say (before 4.6) just
    /// reports none.
    pub fn watch(&self, fd: BorrowedFd<'_>) -> usize {
        use std::os::fd::AsRawFd;
        let now = drops(fd).unwrap_or(0);
        self.sockets.borrow_mut().insert((fd.as_raw_fd(), now))
    }

    /// Stops watching the socket of `key`, which must still be open: its drops since the last
    /// read.
    pub fn forget(&self, key: usize) -> u64 {
        let Some((fd, seen)) = self.sockets.borrow_mut().try_remove(key) else {
            return 0;
        };
        new_drops(fd, seen).1
    }

    /// The drops of every watched socket since the last read.
    pub fn take_new(&self) -> u64 {
        let mut sockets = self.sockets.borrow_mut();
        let mut new = 0;
        for (_, (fd, seen)) in sockets.iter_mut() {
            let (now, more) = new_drops(*fd, *seen);
            *seen = now;
            new += more;
        }
        new
    }
}

/// The count of open socket `fd` and how many drops are new since `seen`.
fn new_drops(fd: std::os::fd::RawFd, seen: u32) -> (u32, u64) {
    // SAFETY: the ledger holds fds of sockets that forget their key before they close.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    match drops(fd) {
        Ok(now) => (now, u64::from(now.wrapping_sub(seen))),
        Err(_) => (seen, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_counts_a_sockets_drops_from_when_it_is_watched() {
        use std::net::UdpSocket;
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_recv_buffer_size(receiver.as_fd(), 1).unwrap(); // the kernel's least: some 2 datagrams
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        let burst = |n| {
            for _ in 0..n {
                sender.send_to(&[7; 1000], to).unwrap();
            }
        };
        burst(20);
        let before = drops(receiver.as_fd()).unwrap();
        assert!(before > 0, "a buffer of two datagrams dropped some of 20");
        let ledger = DropLedger::new();
        let key = ledger.watch(receiver.as_fd());
        assert_eq!(ledger.take_new(), 0, "drops before it was watched are not new");
        burst(20); // the buffer is still full: every one is dropped
        assert_eq!(ledger.take_new(), 20);
        assert_eq!(ledger.take_new(), 0, "read once");
        burst(5);
        assert_eq!(ledger.forget(key), 5);
        burst(5);
        assert_eq!(ledger.take_new(), 0, "forgotten");
        assert_eq!(ledger.forget(key), 0);
    }
}
