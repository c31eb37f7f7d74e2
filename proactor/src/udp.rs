//! UDP: [`UdpSocket`], IPv4 and IPv6, with owned buffers, and on io_uring one multishot
//! receive for every peer.
//!
//! # Two ways to receive
//!
//! - [`UdpSocket::recv_from`] takes a buffer by value, as every read of this crate does: one
//!   `RECVMSG` operation (io_uring) or one `recvmsg` at readiness (the epoll backend) per
//!   datagram, its source address written into storage the operation owns.
//! - [`UdpSocket::recv_from_provided`] holds no buffer while it waits. On io_uring one
//!   multishot `RECVMSG` (Linux 6.0) stays armed for the socket, that is for every peer at
//!   once, and each datagram arrives in its own CQE, in a buffer the kernel takes from the
//!   *datagram ring* at that moment, laid out as `io_uring_recvmsg_out` (16 bytes: the lengths
//!   and flags), the source address, then the payload. Elsewhere it is `recv_from` into a
//!   buffer of the runtime's.
//!
//! # The datagram ring
//!
//! A second provided-buffer ring (buffer group [`GROUP`], beside the streams' group 0) rather
//! than the streams' ring: those buffers are 4 KiB, sized for a stream, which the kernel fills
//! a piece at a time. A datagram cannot be split across buffers: a multishot receive puts the
//! whole header, address and payload in one, and what does not fit is lost. So these buffers
//! hold the largest datagram there is (65,527 bytes of IPv6 payload) plus the 16-byte header
//! and the 28-byte address: 64 KiB and a little. The ring starts with 16 of them (1 MiB) and
//! grows by 16 while it runs low, up to 128 (8 MiB), like the streams' ring (see `bufring`);
//! it is made by the first socket that uses it, so a program without UDP holds none.
//! Truncation is still checked (`MSG_TRUNC` in the header's flags), and reported as for every
//! receive: as [`DatagramTruncated`](crate::net::DatagramTruncated), never as the first bytes
//! of a datagram.
//!
//! While the task is busy, completions queue up to [`QUEUE_MAX`]; then the driver stops the
//! receive (datagrams wait in the socket's buffer, and past it the kernel drops them, which
//! is what UDP does under overload) until the task reads again and re-arms it. When the ring
//! is empty the receive ends with `ENOBUFS` and waits for a buffer to come back.
//!
//! # Cancelling
//!
//! Dropping a `recv_from` future cancels its operation; one that completed with a datagram in
//! the race keeps it (bytes and source) for the socket's next receive, so none is lost. The
//! multishot receive belongs to the socket, not to a `recv_from_provided` future: dropping
//! that future loses nothing either.
//!
//! # What it costs
//!
//! At a ping-pong load one datagram is about one `io_uring_enter` (the receive stays armed;
//! the send is queued and goes in with the next enter), half the reactor's `recvfrom` +
//! `sendto`. A send to an address is a `SEND` with a destination (Linux 6.0), so the kernel
//! copies in the address alone, not a `msghdr` and its iovec (`SENDMSG` before 6.0). And
//! [`send_to_behind`](UdpSocket::send_to_behind), which the echo uses, is finished by the
//! driver: the task is not woken for the send's completion. User-space instructions per
//! datagram, counted by callgrind (`scripts/udp-instructions.sh`: 16 sockets x 500 datagrams,
//! 2026-12-06, this project's 2-vCPU machine): io_uring 3,200 at 64 B and 1,400 B with
//! `send_to` and `SENDMSG`, 2,240 with `send_to_behind` and `SEND`, 2,070 with the address
//! boxes reused and the source address read straight from the ring buffer, 1,980 with the
//! sends behind kept in a table of the socket's, 1,860 (64 B) and 1,880 (1,400 B) with each
//! key of that table keeping its own address box and a received datagram keeping its
//! payload's address, 1,750 (64 B) with the driver's and the buffers' fast paths inlined;
//! tokio's current-thread runtime 930, the reactor 740. (Drop counts cost nothing per datagram:
//! see [`UdpSocket`]'s docs.)
//!
//! # POSIX aio
//!
//! POSIX aio has no `recvfrom` or `sendto`: `aio_read` and `aio_write` carry no address. On
//! that backend [`recv_from`](UdpSocket::recv_from), [`send_to`](UdpSocket::send_to) and
//! `recv_from_provided` fail with `Unsupported` and a sentence that says so. A *connected*
//! socket works: [`recv`](UdpSocket::recv) and [`send`](UdpSocket::send) are `aio_read` and
//! `aio_write` (a `read` or `write` of one datagram on a glibc helper thread), except that
//! `read` cannot see `MSG_TRUNC`: there a datagram larger than the buffer is cut silently, so
//! pass buffers of [`MAX_DATAGRAM`] bytes.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::mem;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::rc::Rc;
use std::task::{ready, Context, Poll, Waker};

use executor::net::{check_datagram, each_addr, truncated, MAX_DATAGRAM};

use crate::backend::io::{DatagramOut, DATAGRAM_HEADER};
use crate::backend::{BufId, Completion, Destination, Request};
use crate::buf::{self, BufResult, IoBuf, IoBufMut};
use crate::bufring::BufRing;
use crate::driver::op::Op;
use crate::driver::{DetachedOwner, Driver};
use crate::sys;
use crate::waiters::Ticket;

/// The buffer group of the datagram ring (the streams' ring is group 0).
pub(crate) const GROUP: u16 = 1;
/// Buffers the datagram ring starts with, and adds each time it runs low.
const RING_BUFFERS: u16 = 16;
/// The most buffers it grows to.
const RING_BUFFERS_MAX: u16 = 128;
/// Room for the source address: a `sockaddr_in6`, which also holds a `sockaddr_in`.
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();
/// One buffer: header, address and the largest payload, rounded up to 64 bytes. (No room for
/// control data: the receives ask for none; see [`UdpSocket`]'s docs on drops.)
const RING_BUFFER_SIZE: u32 = ((DATAGRAM_HEADER + NAME_LEN + MAX_DATAGRAM).div_ceil(64) * 64) as u32;
/// The most datagrams the multishot receive queues for a task that is not reading.
pub const QUEUE_MAX: u16 = 32;

/// A datagram operation that needs an address, on a backend that cannot carry one.
fn no_addresses(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "UDP {what} is not possible on the POSIX aio backend: aio_read and aio_write carry no \
             socket address (there is no aio recvfrom or sendto); connect the socket and use recv \
             and send, or use another backend"
        ),
    )
}

/// A `msghdr` with its one `iovec` and its socket address, at a stable heap address (boxed):
/// what `recvmsg` and `sendmsg` (and io_uring's `RECVMSG` and `SENDMSG`) read, and where the
/// kernel writes the source of a datagram. `hdr` points into `iov` and `addr`; `iov` into the
/// operation's buffer.
struct Msg {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
}

impl Msg {
    /// For `len` bytes at `buf`, with room for a source address (`name`), or with `to` as the
    /// destination, or with no address (a connected socket).
    fn new(buf: *mut u8, len: usize, name: Name<'_>) -> Box<Msg> {
        let (addr, addr_len) = match name {
            Name::To(to) => sys::sockaddr_from(to),
            Name::From | Name::None => sys::sockaddr_from(&SocketAddr::from(([0, 0, 0, 0], 0))),
        };
        // SAFETY: msghdr is plain old data; all-zero bytes are a valid (empty) value.
        let hdr: libc::msghdr = unsafe { mem::zeroed() };
        let iov = libc::iovec { iov_base: buf.cast(), iov_len: len };
        let mut msg = Box::new(Msg { hdr, iov, addr });
        msg.hdr.msg_iov = &mut msg.iov;
        msg.hdr.msg_iovlen = 1;
        let (name_ptr, name_len) = match name {
            Name::To(_) => (&mut msg.addr as *mut libc::sockaddr_storage, addr_len),
            Name::From => {
                (&mut msg.addr as *mut libc::sockaddr_storage, mem::size_of::<libc::sockaddr_storage>() as _)
            }
            Name::None => (std::ptr::null_mut(), 0),
        };
        msg.hdr.msg_name = name_ptr.cast();
        msg.hdr.msg_namelen = name_len;
        msg
    }

    /// The template of the multishot receive: only its name and control lengths count.
    fn multishot() -> Box<Msg> {
        let mut msg = Msg::new(std::ptr::null_mut(), 0, Name::None);
        msg.hdr = multishot_layout();
        msg
    }

    /// The source address the kernel wrote.
    fn source(&self) -> Option<SocketAddr> {
        sys::sockaddr_to(&self.addr, self.hdr.msg_namelen).ok()
    }
}

/// The layout of a multishot receive's buffers, as its `msghdr` gives it: room for a
/// [`NAME_LEN`]-byte address, none for control data, no iovec (the buffer is the ring's).
fn multishot_layout() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero bytes are a valid (empty) value.
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_namelen = NAME_LEN as libc::socklen_t;
    hdr
}

/// A datagram's destination, at a stable heap address (boxed), for a [`Request::SendTo`]; its
/// buffer pointer is set when the request is made.
type Target = Destination;

/// Boxed [`Target`]s kept for reuse, at most this many per thread: a `send_to` takes one per
/// datagram, and a box from the pool costs a `Vec` pop where a new one costs a `malloc` and
/// later a `free` (156 of the 2,236 user-space instructions a datagram took on io_uring, see
/// the module docs). Sends behind keep theirs in the socket's table (`SentBehind::targets`).
const TARGETS_MAX: usize = 64;

thread_local! {
    // Boxes, not the values: each is handed to a send whose request points into it, and must
    // stay at its address while the send is in flight, wherever the pool's vector moves.
    #[allow(clippy::vec_box)]
    static TARGETS: RefCell<Vec<Box<Target>>> = const { RefCell::new(Vec::new()) };
}

/// A boxed [`Target`] for `to`, from the thread's pool when it has one; it goes back to the
/// pool when dropped.
struct PooledTarget(Option<Box<Target>>);

impl PooledTarget {
    fn new(to: &SocketAddr) -> PooledTarget {
        let (addr, len) = sys::sockaddr_from(to);
        let reused = TARGETS.try_with(|pool| pool.borrow_mut().pop()).ok().flatten();
        let target = match reused {
            Some(mut target) => {
                (target.addr, target.addr_len) = (addr, len);
                target
            }
            None => Box::new(Target { buf: std::ptr::null(), addr, addr_len: len }),
        };
        PooledTarget(Some(target))
    }

    fn get_mut(&mut self) -> &mut Target {
        self.0.as_mut().expect("a target until dropped")
    }
}

impl Drop for PooledTarget {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            // (try_with: during thread exit the pool may be gone; the box is then freed.)
            let _ = TARGETS.try_with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < TARGETS_MAX {
                    pool.push(target);
                }
            });
        }
    }
}

/// What a send's operation owns besides its buffer: a `msghdr`, or only an address, or nothing
/// (a connected socket's send, or a send behind whose address its table keeps).
enum Sending {
    Msg(Box<Msg>),
    To(PooledTarget),
    Nothing,
}

#[derive(Clone, Copy)]
enum Name<'a> {
    From,
    To(&'a SocketAddr),
    None,
}

/// Datagrams that receives cancelled in the race with their completion had already taken:
/// the next receives return them first.
type Stash = Rc<RefCell<VecDeque<(Vec<u8>, Option<SocketAddr>)>>>;

/// Receives whose future was dropped while their operation was in flight: until each one's
/// completion is in (its datagram stashed, or its cancellation confirmed), a new receive must
/// wait, or it could take a later datagram from the kernel before the stash gets an earlier one.
#[derive(Default)]
struct Orphans {
    count: Cell<usize>,
    waiters: RefCell<Vec<Waker>>,
}

impl Orphans {
    fn poll_none(&self, cx: &mut Context<'_>, driver: &Driver) -> Poll<()> {
        if self.count.get() == 0 || !driver.is_alive() {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }

    fn over(&self) {
        self.count.set(self.count.get().saturating_sub(1));
        if self.count.get() == 0 {
            let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
            waiters.into_iter().for_each(Waker::wake);
        }
    }
}

/// A receive's operation, counted as an orphan if dropped while in flight (the receive's
/// future went away before its completion).
struct Receive<T: 'static> {
    op: Option<Op<T>>,
    orphans: Rc<Orphans>,
}

impl<T: 'static + Unpin> Future for Receive<T> {
    type Output = BufResult<Completion, T>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let op = self.op.as_mut().expect("Receive polled after completion");
        let output = ready!(std::pin::Pin::new(op).poll(cx));
        self.op = None;
        Poll::Ready(output)
    }
}

impl<T: 'static> Drop for Receive<T> {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            // Before the operation is dropped: a completed one runs its orphan handler (which
            // counts it over) as it goes.
            if op.in_flight() {
                self.orphans.count.set(self.orphans.count.get() + 1);
            }
            drop(op);
        }
    }
}

/// A UDP socket: datagrams to and from any peer, or, once [`connect`](Self::connect)ed, to and
/// from one. Every method takes `&self` and owned buffers (see [`crate::buf`]).
///
/// # Datagrams the kernel dropped
///
/// When datagrams arrive faster than the socket is read, its receive buffer fills (see
/// [`set_recv_buffer_size`](Self::set_recv_buffer_size)) and the kernel drops the next ones.
/// The kernel counts them per socket: [`drops`](Self::drops) reads this socket's count, and the
/// runtime's [`Stats::datagrams_dropped`](crate::Stats::datagrams_dropped) sums the new drops of
/// every socket of the thread, read when [`stats`](crate::stats()) is called and when a socket
/// is dropped (one `getsockopt` per socket then, none per datagram; on every backend).
pub struct UdpSocket {
    /// Closed through the driver in `Drop`, after every operation already started on it.
    fd: mem::ManuallyDrop<OwnedFd>,
    driver: Rc<Driver>,
    stash: Stash,
    orphans: Rc<Orphans>,
    /// The multishot receive of `recv_from_provided`, once started.
    recv: RefCell<Option<Op<Box<Msg>>>>,
    /// The socket's key in the thread's drop ledger (see `stats::watch_drops`).
    ledger_key: usize,
    /// The error (`-errno`; 0: none) of a send behind, for the next `send_to_behind`.
    behind_error: Rc<Cell<i32>>,
    /// The sends behind in flight, with the buffer type of the first one (a [`SentBehind`]):
    /// their resources live here rather than in a box each. Sends of another buffer type
    /// (rare: a program sends one kind) take the boxed way.
    sent_behind: std::cell::OnceCell<Rc<dyn Any>>,
}

/// A socket's sends behind in flight, of buffer type `B`, by key: what each one's operation
/// owns until its completion (see `UdpSocket::send_to_behind`). Shared with the driver's
/// slots, so it outlives the socket while a send is in flight.
struct SentBehind<B> {
    sends: RefCell<slab::Slab<(B, Sending)>>,
    /// Where the `SEND` under each key of `sends` goes, where sends carry a destination
    /// (`Facts::send_to`; the entry in `sends` then holds `Sending::Nothing`): boxed, since
    /// the request points into it, and kept for the next send under the same key once a send
    /// is over, so that a datagram sent behind takes no box from anywhere (neither `malloc`
    /// nor the thread's pool of [`PooledTarget`]s).
    #[allow(clippy::vec_box)]
    targets: RefCell<Vec<Box<Target>>>,
    /// The socket's `behind_error`.
    failed: Rc<Cell<i32>>,
}

impl<B> DetachedOwner for SentBehind<B> {
    fn finish(&self, key: usize, completion: Completion) {
        let resources = self.sends.borrow_mut().try_remove(key);
        drop(resources); // (a ring buffer goes back to its ring: outside the borrow)
        if completion.result < 0 && completion.result != -libc::ECANCELED {
            self.failed.set(completion.result);
        }
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("local", &self.local_addr().ok())
            .finish()
    }
}

impl UdpSocket {
    /// Binds to `addr` (the first address it resolves to that works). Port 0 picks a free
    /// port; see [`local_addr`](Self::local_addr). Must be called inside the runtime that will
    /// drive it.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        let driver = Driver::current()?;
        let fd = each_addr(addr, |addr| executor::net::udp_bind(&addr, false))?;
        Ok(UdpSocket::new(fd, driver))
    }

    /// Takes over a socket made elsewhere (it must be in blocking mode, as sockets of this
    /// crate are). Must be called inside the runtime that will drive it.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        Ok(UdpSocket::new(socket.into(), Driver::current()?))
    }

    fn new(fd: OwnedFd, driver: Rc<Driver>) -> UdpSocket {
        let ledger_key = crate::stats::watch_drops(fd.as_fd());
        UdpSocket {
            fd: mem::ManuallyDrop::new(fd),
            driver,
            stash: Stash::default(),
            orphans: Rc::default(),
            recv: RefCell::new(None),
            ledger_key,
            behind_error: Rc::default(),
            sent_behind: std::cell::OnceCell::new(),
        }
    }

    /// Asks the kernel for a receive buffer of `bytes` (`SO_RCVBUF`): how much of the datagrams
    /// that arrived and were not read yet the socket may hold before the kernel drops the next
    /// ones. The default (`net.core.rmem_default`, often 208 KiB) holds three of the largest
    /// datagrams. Linux doubles the value for its bookkeeping and clamps it to the
    /// `net.core.rmem_max` sysctl; [`recv_buffer_size`](Self::recv_buffer_size) says what it
    /// kept.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<()> {
        executor::net::set_recv_buffer_size(self.fd.as_fd(), bytes)
    }

    /// The receive buffer as the kernel keeps it (see
    /// [`set_recv_buffer_size`](Self::set_recv_buffer_size)).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        executor::net::recv_buffer_size(self.fd.as_fd())
    }

    /// How many datagrams the kernel has dropped on this socket since it was made, because its
    /// receive buffer was full (`SO_MEMINFO`'s count, a `u32` that wraps; Linux 4.6).
    pub fn drops(&self) -> io::Result<u32> {
        executor::net::drops(self.fd.as_fd())
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sys::local_addr(self.fd.as_fd())
    }

    /// The address it is connected to (`ENOTCONN` if it is not).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sys::peer_addr(self.fd.as_fd())
    }

    /// Connects to `addr` (the first address it resolves to that works): [`send`](Self::send)
    /// goes there, [`recv`](Self::recv) only takes datagrams from there, and an ICMP error about
    /// it (nobody listens there: `ECONNREFUSED`) is reported by the next call. Nothing is sent;
    /// it does not wait (a UDP connect is one syscall that returns at once).
    pub fn connect<A: ToSocketAddrs>(&self, addr: A) -> io::Result<()> {
        each_addr(addr, |addr| executor::sys::connect(self.fd.as_fd(), &addr))
    }

    /// Reads and clears the socket's pending error (`SO_ERROR`).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        sys::take_error(self.fd.as_fd())
    }

    /// Receives one datagram into `buf` (from its start, up to [`IoBufMut::bytes_total`]
    /// bytes): its length and its source, and the buffer back. A datagram larger than the
    /// buffer is an error ([`DatagramTruncated`](crate::net::DatagramTruncated), kind
    /// `InvalidData`) and is gone.
    /// Not on the POSIX aio backend (see the module docs).
    pub fn recv_from<B: IoBufMut>(
        &self,
        buf: B,
    ) -> impl Future<Output = BufResult<(usize, SocketAddr), B>> + '_ {
        let received = self.recv_msg(buf, true);
        async move {
            let (result, buf) = received.await;
            (result.map(|(n, from)| (n, from.unwrap_or_else(|| unspecified(&self.local_addr())))), buf)
        }
    }

    /// Receives one datagram from the connected peer into `buf` (see
    /// [`recv_from`](Self::recv_from)).
    pub fn recv<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        let received = self.recv_msg(buf, false);
        async move {
            let (result, buf) = received.await;
            (result.map(|(n, _)| n), buf)
        }
    }

    /// Sends `buf` as one datagram to `target`; gives back its length and the buffer. Not on
    /// the POSIX aio backend (see the module docs).
    pub fn send_to<B: IoBuf>(
        &self,
        buf: B,
        target: SocketAddr,
    ) -> impl Future<Output = BufResult<usize, B>> + '_ {
        self.send_msg(buf, Some(target))
    }

    /// Sends `buf` as one datagram to the connected peer.
    pub fn send<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        self.send_msg(buf, None)
    }

    /// Receives the next datagram into a buffer the runtime picks when it arrives; see the
    /// module docs. On io_uring one multishot receive serves every call (and every peer); do
    /// not mix with [`recv_from`](Self::recv_from) on the same socket.
    pub async fn recv_from_provided(&self) -> io::Result<(Datagram, SocketAddr)> {
        if let Some((bytes, from)) = self.stash.borrow_mut().pop_front() {
            return Ok((Datagram::owned(bytes), from.unwrap_or_else(|| unspecified(&self.local_addr()))));
        }
        match self.driver.datagram_ring(GROUP, RING_BUFFERS, RING_BUFFERS_MAX, RING_BUFFER_SIZE) {
            Some(ring) => {
                let mut ticket = Ticket::default();
                poll_fn(|cx| self.poll_recv_provided(ring, &mut ticket, cx)).await
            }
            None => {
                let (received, buf) = self.recv_from(spare_vec()).await;
                let buf = Datagram::owned(buf); // back to the spare pool if this failed
                received.map(|(_, from)| (buf, from))
            }
        }
    }

    fn poll_recv_provided(
        &self,
        ring: &Rc<BufRing>,
        ticket: &mut Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Datagram, SocketAddr)>> {
        let mut recv = self.recv.borrow_mut();
        loop {
            let op = match &mut *recv {
                Some(op) => op,
                None => {
                    if ring.available() == 0 {
                        // The last receive ended with ENOBUFS: wait for a buffer to come back.
                        ticket.wait(ring.waiters(), cx.waker());
                        return Poll::Pending;
                    }
                    let fd = self.fd.as_raw_fd();
                    // SAFETY: the msghdr is boxed in the operation's resources, which it owns
                    // until its last completion; the kernel reads only its lengths. The buffers
                    // are the registered ring's, whose memory outlives the ring.
                    let op = unsafe {
                        self.driver.submit(Msg::multishot(), false, |msg| Request::RecvMsgMulti {
                            fd,
                            msg: &msg.hdr,
                            group: GROUP,
                        })
                    };
                    recv.insert(op.limit_queue(QUEUE_MAX))
                }
            };
            if op.next_ready() {
                // A peer that floods this socket must not keep its task running forever (the
                // budget is charged for a datagram that is there, not while waiting for one).
                ready!(executor::poll_budget(cx));
            }
            let Some(completion) = ready!(op.poll_next(cx)) else {
                *recv = None; // the multishot receive ended: arm a new one
                continue;
            };
            let completion = completion?;
            let bid = match completion.buffer {
                Some(BufId::Datagram(bid)) => Some(bid),
                _ => None,
            };
            return match (completion.into_result(), bid) {
                (Ok(n), Some(bid)) => Poll::Ready(parse(ring, bid, n as usize)),
                // A completion without a buffer carries no datagram: none to return.
                (Ok(_), None) => continue,
                // The ring ran dry, or the driver stopped a receive nobody read: arm a new one.
                (Err(e), _) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECANCELED)) => continue,
                (Err(e), _) => Poll::Ready(Err(e)),
            };
        }
    }

    /// One `RECVMSG` (io_uring), one `recvmsg` at readiness (epoll), or an `aio_read` (aio, a
    /// connected socket only).
    fn recv_msg<B: IoBufMut>(
        &self,
        buf: B,
        want_source: bool,
    ) -> impl Future<Output = BufResult<(usize, Option<SocketAddr>), B>> + 'static {
        let (driver, stash, orphans) = (self.driver.clone(), self.stash.clone(), self.orphans.clone());
        // Without recvmsg (POSIX aio) a connected socket reads, and nothing says where from.
        let plain = !driver.facts().messages;
        let fd = self.fd.as_raw_fd();
        async move {
            // Receives cancelled earlier may still bring a datagram (to the stash): wait for them,
            // so that datagrams keep their order.
            poll_fn(|cx| orphans.poll_none(cx, &driver)).await;
            let stashed = stash.borrow_mut().pop_front();
            let op = match (stashed, plain, want_source) {
                (Some((bytes, from)), _, _) => {
                    let mut buf = buf;
                    if bytes.len() > buf.bytes_total() {
                        return (Err(truncated(bytes.len(), buf.bytes_total(), from)), buf);
                    }
                    buf::fill_from(&mut buf, &bytes);
                    return (Ok((bytes.len(), from)), buf);
                }
                (None, true, true) => return (Err(no_addresses("recv_from")), buf),
                // SAFETY: the pointer and length describe the buffer's memory, owned by the
                // operation until its completion, that stays put (IoBufMut's contract).
                (None, true, false) => unsafe {
                    driver.submit((buf, None), false, |(buf, _)| Request::Recv {
                        fd,
                        buf: buf.stable_mut_ptr(),
                        len: buf.bytes_total().min(u32::MAX as usize) as u32,
                    })
                },
                (None, false, _) => {
                    let name = if want_source { Name::From } else { Name::None };
                    let mut buf = buf;
                    let msg = Msg::new(buf.stable_mut_ptr(), buf.bytes_total(), name);
                    // SAFETY: the msghdr, the address storage it names and the buffer its iovec
                    // points into are the operation's resources (a boxed Msg and a buffer whose
                    // memory stays put), owned by it until its completion.
                    unsafe {
                        driver.submit((buf, Some(msg)), false, |(_, msg)| Request::RecvMsg {
                            fd,
                            msg: &mut msg.as_mut().expect("a msghdr").hdr,
                        })
                    }
                }
            };
            // A receive that won the race with its cancel keeps its datagram for the next one.
            let (stash, over) = (stash.clone(), orphans.clone());
            let op = op.on_orphan_cqe(move |(mut buf, msg), completion| {
                over.over();
                let n = match completion.into_result() {
                    Ok(n) if n as usize <= buf.bytes_total() => n as usize,
                    _ => return, // an error, or a datagram that did not fit: nothing to keep
                };
                // SAFETY: the kernel wrote `n <= bytes_total` bytes at the start of the buffer.
                unsafe { buf.set_init(n) };
                let from = msg.and_then(|msg| msg.source());
                stash.borrow_mut().push_back((buf.as_init_slice()[..n].to_vec(), from));
                crate::stats::bump(|c| &c.recvs_kept);
            });
            let receive = Receive { op: Some(op), orphans };
            let ((mut buf, msg), result) = {
                let (result, resources) = receive.await;
                (resources, result)
            };
            let n = match result.and_then(Completion::into_result) {
                Ok(n) => n as usize,
                Err(e) => return (Err(e), buf),
            };
            let capacity = buf.bytes_total();
            // SAFETY: the kernel wrote `min(n, capacity)` bytes at the start of the buffer (`n`
            // is the datagram's real length, which MSG_TRUNC reports even when it did not fit).
            unsafe { buf.set_init(n.min(capacity)) };
            let from = msg.and_then(|msg| msg.source());
            // (aio's `read` cannot report a cut datagram: `n` is then at most the capacity.)
            match check_datagram(n, capacity, from) {
                Ok(n) => (Ok((n, from)), buf),
                Err(e) => (Err(e), buf),
            }
        }
    }

    /// What a send of `buf` to `to` (`None`: the connected peer) owns besides the buffer: an
    /// address for a `SEND` with a destination (io_uring on Linux 6.0, `sendto` on epoll), a
    /// `msghdr` for a `SENDMSG` (io_uring before 6.0), nothing for a plain send (a connected
    /// socket on aio); `None` where a datagram cannot carry an address (aio).
    fn sending<B: IoBuf>(&self, buf: &B, to: Option<SocketAddr>) -> Option<Sending> {
        let facts = self.driver.facts();
        match (facts.messages, to) {
            (false, Some(_)) => None,
            (false, None) => Some(Sending::Nothing),
            (true, Some(to)) if facts.send_to => Some(Sending::To(PooledTarget::new(&to))),
            (true, to) => {
                let name = to.as_ref().map_or(Name::None, Name::To);
                Some(Sending::Msg(Msg::new(buf.stable_ptr().cast_mut(), buf.bytes_init(), name)))
            }
        }
    }

    /// One `SEND` with a destination or `SENDMSG` (io_uring), one `sendto` or `sendmsg` at
    /// readiness (epoll), or an `aio_write` (aio, a connected socket only).
    fn send_msg<B: IoBuf>(
        &self,
        buf: B,
        to: Option<SocketAddr>,
    ) -> impl Future<Output = BufResult<usize, B>> + '_ {
        let fd = self.fd.as_raw_fd();
        let op = match self.sending(&buf, to) {
            None => Err(buf),
            Some(sending) => {
                // SAFETY: the buffer's bytes (read only: a send) and what `sending` made (the
                // boxed address or msghdr) are the operation's resources, owned by it until its
                // completion, at addresses that do not change (IoBuf's contract, and boxes).
                let op = unsafe { self.driver.submit((buf, sending), false, |r| send_request(fd, r)) };
                Ok(op)
            }
        };
        async move {
            match op {
                Ok(op) => {
                    let (result, (buf, _)) = op.await;
                    (result.and_then(Completion::into_result).map(|n| n as usize), buf)
                }
                Err(buf) => (Err(no_addresses("send_to")), buf),
            }
        }
    }

    /// Queues `buf` as one datagram to `target` and returns at once: a send the driver
    /// finishes by itself. When its completion comes, the driver drops `buf` (a [`Datagram`]'s
    /// ring buffer goes back to the ring) and wakes nobody, where [`send_to`](Self::send_to)
    /// wakes the task to hand the buffer back: one wake and one poll of the task per datagram
    /// fewer, for a buffer the task has no further use for (an echo's, a response's).
    ///
    /// An error of the send (`EMSGSIZE`, `EPERM` from a firewall, ...) is kept, and returned,
    /// once, by the socket's next `send_to_behind`, which queues its own datagram all the
    /// same; an error that comes at once (on POSIX aio, which has no sendto, or with the
    /// runtime gone) is returned at once, `buf` dropped unsent. So an `Err` means a datagram
    /// was lost, this one or an earlier one. Datagrams queued one after the other leave in that
    /// order unless the socket's send buffer is full, when the kernel may let a later one
    /// overtake (UDP promises no order).
    pub fn send_to_behind<B: IoBuf>(&self, buf: B, target: SocketAddr) -> io::Result<()> {
        let fd = self.fd.as_raw_fd();
        let facts = self.driver.facts();
        if !facts.messages {
            return Err(no_addresses("send_to_behind"));
        }
        if let Some(table) = self.sent_behind::<B>() {
            let (key, request) = {
                let mut sends = table.sends.borrow_mut();
                let entry = sends.vacant_entry();
                let key = entry.key();
                if facts.send_to {
                    // The table's own destination for this key (see `SentBehind::targets`).
                    let mut targets = table.targets.borrow_mut();
                    while targets.len() <= key {
                        let (addr, addr_len) = sys::sockaddr_from(&SocketAddr::from(([0, 0, 0, 0], 0)));
                        targets.push(Box::new(Target { buf: std::ptr::null(), addr, addr_len }));
                    }
                    let to = &mut *targets[key];
                    (to.addr, to.addr_len) = sys::sockaddr_from(&target);
                    // (IoBuf's contract: the pointer stays valid when `buf` moves into the slab.)
                    to.buf = buf.stable_ptr();
                    let len = buf.bytes_init().min(u32::MAX as usize) as u32;
                    let to: *const Target = to;
                    entry.insert((buf, Sending::Nothing));
                    (key, Request::SendTo { fd, len, to })
                } else {
                    let Some(sending) = self.sending(&buf, Some(target)) else {
                        return Err(no_addresses("send_to_behind"));
                    };
                    (key, send_request(fd, entry.insert((buf, sending))))
                }
            };
            // SAFETY: as in `send_msg`: the buffer and what `sending` made (or the table's
            // destination for `key`) are the operation's resources, kept in `table` under `key`
            // (heap memory that does not move when the slab or the vector of destinations
            // does) until its completion calls `finish`.
            if let Err(e) = unsafe { self.driver.submit_detached_to(table.clone(), key, request) } {
                let resources = table.sends.borrow_mut().try_remove(key);
                drop(resources);
                return Err(e);
            }
            return match self.behind_error.replace(0) {
                0 => Ok(()),
                result => Err(io::Error::from_raw_os_error(-result)),
            };
        }
        let Some(sending) = self.sending(&buf, Some(target)) else {
            return Err(no_addresses("send_to_behind"));
        };
        let failed = self.behind_error.clone();
        let finish = move |resources: (B, Sending), completion: Completion| {
            drop(resources);
            if completion.result < 0 && completion.result != -libc::ECANCELED {
                failed.set(completion.result);
            }
        };
        // SAFETY: as in `send_msg`: the buffer and what `sending` made are the operation's
        // resources (moved into its slot), owned by it until its completion.
        unsafe { self.driver.submit_detached((buf, sending), |r| send_request(fd, r), finish)? };
        match self.behind_error.replace(0) {
            0 => Ok(()),
            result => Err(io::Error::from_raw_os_error(-result)),
        }
    }
}

impl UdpSocket {
    /// The table of this socket's sends behind, if they are of buffer type `B` (made by the
    /// first send behind).
    fn sent_behind<B: IoBuf>(&self) -> Option<Rc<SentBehind<B>>> {
        let table = self.sent_behind.get_or_init(|| {
            Rc::new(SentBehind::<B> {
                sends: RefCell::default(),
                targets: RefCell::default(),
                failed: self.behind_error.clone(),
            })
        });
        table.clone().downcast::<SentBehind<B>>().ok()
    }
}

/// The request of a send of `buf` with what [`UdpSocket::sending`] made for it.
fn send_request<B: IoBuf>(fd: RawFd, (buf, sending): &mut (B, Sending)) -> Request {
    let len = buf.bytes_init().min(u32::MAX as usize) as u32;
    match sending {
        Sending::Nothing => Request::Send { fd, buf: buf.stable_ptr(), len, dontwait: false },
        Sending::To(target) => {
            let to = target.get_mut();
            to.buf = buf.stable_ptr();
            Request::SendTo { fd, len, to }
        }
        Sending::Msg(msg) => Request::SendMsg { fd, msg: &msg.hdr },
    }
}

/// The unspecified address of `local`'s family: the source of a datagram whose address the
/// kernel did not report (a connected socket's receive, where the caller knows the peer).
fn unspecified(local: &io::Result<SocketAddr>) -> SocketAddr {
    match local {
        Ok(SocketAddr::V6(_)) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    }
}

/// The socket address in `name`, a `sockaddr_in` or `sockaddr_in6` as the kernel wrote it into a
/// ring buffer: read from the bytes (in the C layout: the family in native byte order, the port
/// and the address in network byte order), where copying them into a `sockaddr_storage` first
/// would clear and copy 128 bytes per datagram.
fn source_of(name: &[u8]) -> io::Result<SocketAddr> {
    let bytes = |range: std::ops::Range<usize>| name.get(range);
    let family = bytes(0..2).map(|f| i32::from(u16::from_ne_bytes([f[0], f[1]])));
    let port = |n: &[u8]| u16::from_be_bytes([n[2], n[3]]);
    match family {
        Some(libc::AF_INET) if name.len() >= mem::size_of::<libc::sockaddr_in>() => {
            let ip: [u8; 4] = name[4..8].try_into().expect("4 bytes");
            Ok(SocketAddr::from((ip, port(name))))
        }
        Some(libc::AF_INET6) if name.len() >= mem::size_of::<libc::sockaddr_in6>() => {
            let word = |at: usize| u32::from_ne_bytes(name[at..at + 4].try_into().expect("4 bytes"));
            let ip: [u8; 16] = name[8..24].try_into().expect("16 bytes");
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(ip.into(), port(name), word(4), word(24))))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected socket address of {} bytes, family {family:?}", name.len()),
        )),
    }
}

/// The datagram in ring buffer `bid`, `n` bytes of which the kernel filled: header, source
/// address, payload. The buffer goes back to the ring unless it is returned as a [`Datagram`].
fn parse(ring: &Rc<BufRing>, bid: u16, n: usize) -> io::Result<(Datagram, SocketAddr)> {
    let given_back = || ring.release(bid);
    // SAFETY: the completion handed buffer `bid` to the runtime with `n` bytes (at most the
    // buffer size); it goes back to the ring only when the Datagram (or `given_back`) says so.
    let bytes = unsafe { ring.bytes(bid, 0, n.min(RING_BUFFER_SIZE as usize)) };
    let Some(out) = DatagramOut::parse(bytes, NAME_LEN, 0) else {
        given_back();
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a multishot RECVMSG buffer too short for its header",
        ));
    };
    let from = source_of(out.name);
    let (len, payload, payload_len, truncated_payload) =
        (out.len, NonNull::from(&bytes[out.payload.clone()]).cast::<u8>(), out.payload.len(), out.truncated);
    let from = match from {
        Ok(from) => from,
        Err(e) => {
            given_back();
            return Err(e);
        }
    };
    if truncated_payload || payload_len != len {
        given_back();
        let room = RING_BUFFER_SIZE as usize - DATAGRAM_HEADER - NAME_LEN;
        return Err(truncated(len, room, Some(from)));
    }
    Ok((Datagram { inner: Inner::Ring { ring: ring.clone(), bid, payload, len: len as u32 } }, from))
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        // Cancel the multishot receive before the fd closes (see TcpStream's Drop).
        drop(self.recv.get_mut().take());
        crate::stats::forget_drops(self.ledger_key);
        // SAFETY: the fd is not used after this.
        let fd = unsafe { mem::ManuallyDrop::take(&mut self.fd) };
        self.driver.close_fd(fd);
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The bytes of a received datagram ([`UdpSocket::recv_from_provided`]): in a buffer of the
/// datagram ring, which goes back to the ring when this is dropped, or in a buffer of its own.
///
/// Dereferences to the payload. It is an [`IoBuf`], so it can be sent back as it is
/// (`send_to(datagram, from)`), and goes back to the ring once that send is done with it.
pub struct Datagram {
    inner: Inner,
}

enum Inner {
    /// `len` bytes at `payload`, in buffer `bid` of the datagram ring. (The address, not an
    /// offset in the buffer: a send reads the payload's address and length, and finding a
    /// buffer's address in the ring costs a division and a borrow each time.)
    Ring {
        ring: Rc<BufRing>,
        bid: u16,
        len: u32,
        payload: NonNull<u8>,
    },
    Owned(Vec<u8>),
}

/// Buffers of `recv_from_provided` without the ring, kept for reuse: at most this many per
/// thread.
const SPARE_MAX: usize = 4;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of [`MAX_DATAGRAM`] bytes' capacity, reused if one is spare.
fn spare_vec() -> Vec<u8> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(MAX_DATAGRAM))
}

impl Datagram {
    fn owned(bytes: Vec<u8>) -> Datagram {
        Datagram { inner: Inner::Owned(bytes) }
    }
}

impl Deref for Datagram {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: a CQE handed the buffer to the runtime with the payload there (checked by
            // `parse`, which took the pointer); it is not provided again, nor its chunk freed
            // (the ring is kept alive by `ring`), until this value is dropped.
            Inner::Ring { payload, len, .. } => unsafe {
                std::slice::from_raw_parts(payload.as_ptr(), *len as usize)
            },
            Inner::Owned(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Datagram {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Ring { ring, bid, .. } => ring.release(*bid),
            Inner::Owned(bytes) if bytes.capacity() == MAX_DATAGRAM => {
                let mut bytes = mem::take(bytes);
                bytes.clear();
                // (try_with: during thread exit the pool may be gone; the buffer is then freed.)
                let _ = SPARE.try_with(|spare| {
                    let mut spare = spare.borrow_mut();
                    if spare.len() < SPARE_MAX {
                        spare.push(bytes);
                    }
                });
            }
            Inner::Owned(_) => {}
        }
    }
}

impl fmt::Debug for Datagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bid = match &self.inner {
            Inner::Ring { bid, .. } => Some(*bid),
            Inner::Owned(_) => None,
        };
        f.debug_struct("Datagram").field("ring_buffer", &bid).field("len", &self.len()).finish()
    }
}

// SAFETY: the bytes live in the ring's heap memory (or the Vec's), which does not move when the
// value does and stays allocated (and out of the kernel's hands) until the value is dropped.
unsafe impl IoBuf for Datagram {
    fn stable_ptr(&self) -> *const u8 {
        self.deref().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.deref().len()
    }

    fn is_shared(&self) -> bool {
        matches!(self.inner, Inner::Ring { .. })
    }

    fn detach(&mut self) {
        if self.is_shared() {
            let copy = self.to_vec();
            if let Inner::Ring { ring, bid, .. } = mem::replace(&mut self.inner, Inner::Owned(copy)) {
                ring.release(bid);
            }
        }
    }
}
