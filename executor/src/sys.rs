//! The syscalls both drivers share: the eventfd that wakes a loop from another thread, socket
//! set-up and options, socket addresses, the fd limit, and epoll (the reactor's driver and the
//! proactor's epoll backend wait on the same calls).
//!
//! Each function is a thin, safe wrapper over one libc call. File descriptors come back as
//! [`OwnedFd`], so closing is never forgotten and never done twice. A return value of `-1`
//! becomes `io::Error::last_os_error()`; nothing here retries or interprets errors, that is the
//! caller's business. Every call is counted (`LoopStats::sys_setup`), except the epoll calls:
//! those are each driver's hot path, and each counts (and traces) them in its own counters.
//!
//! Sockets are created close-on-exec, so a descriptor is never inherited by a child process,
//! not even for the instant between two syscalls. The reactor makes them non-blocking (it
//! waits for readiness itself); the proactor leaves them blocking (io_uring never blocks on a
//! socket, and glibc's aio threads need blocking ones).

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::stats;

/// Turns a libc return value of `-1` into the thread's `errno` as an `io::Error`, and counts
/// the syscall.
fn cvt<T: PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    stats::bump(|c| &c.sys_setup);
    check(ret)
}

/// Takes ownership of a descriptor a syscall (or a completion) just created.
///
/// # Safety
/// `fd` must be a newly created descriptor (the result of a successful syscall or completion
/// that creates one), owned by nobody else.
pub unsafe fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees `fd` is open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// ----------------------------------------------------------------------------------------------
// eventfd

/// A non-blocking, close-on-exec eventfd with counter 0.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers are passed; flags are valid constants.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: the syscall just created `fd`.
    Ok(unsafe { owned_fd(fd) })
}

/// Adds 1 to the eventfd counter, which makes it readable.
pub fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64, the size an eventfd requires.
    cvt(unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) })?;
    Ok(())
}

/// Resets the eventfd counter to 0 and returns what it was (WouldBlock if it already was 0).
pub fn eventfd_drain(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64, the size an eventfd requires.
    cvt(unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) })?;
    Ok(value)
}

// ----------------------------------------------------------------------------------------------
// epoll (uncounted: the callers count them as their own)

/// The events a socket is registered for, once for its whole life: input, output, the peer's
/// half-close, urgent data, edge-triggered (errors and hang-ups are always reported). An edge
/// is reported once per transition to ready (or per new arrival), so no syscall re-arms it;
/// in exchange the caller must treat readiness as set by events and cleared only by an
/// `EAGAIN` (or a transfer shorter than asked), never otherwise.
pub const EPOLL_SOCKET_EVENTS: u32 =
    (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLPRI | libc::EPOLLET) as u32;

/// Turns `-1` into the thread's `errno`, without counting (see [`cvt`]).
fn check<T: PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: no pointers are passed; the flag is a valid constant.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: the syscall just created `fd`.
    Ok(unsafe { owned_fd(fd) })
}

/// `epoll_ctl(ADD | MOD)` with an event mask and the 64-bit token the kernel hands back.
pub fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    token: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: `event` is a valid, initialised epoll_event that outlives the call; the kernel
    // copies it and keeps no pointer to it.
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event) })?;
    Ok(())
}

/// `epoll_ctl(EPOLL_CTL_DEL)`.
pub fn epoll_del(epoll: BorrowedFd<'_>, fd: RawFd) -> io::Result<()> {
    // SAFETY: kernels since 2.6.9 ignore the event pointer for DEL, so null is allowed.
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) })?;
    Ok(())
}

/// `epoll_wait` into `events`; returns how many entries at the front were filled.
/// `timeout_ms` is -1 to wait forever, 0 to return at once.
pub fn epoll_wait(
    epoll: BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> io::Result<usize> {
    let max = events.len().min(i32::MAX as usize) as i32;
    // SAFETY: `events` is a valid, writable buffer of `max` epoll_event entries for the whole
    // call; the kernel writes at most `max` of them.
    let n = check(unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) })?;
    Ok(n as usize)
}

/// A timeout as `epoll_wait` takes it: -1 for none, else whole milliseconds rounded *up*, so a
/// timer is never fired early (waking before it is due would only make the loop turn again).
pub fn epoll_timeout(timeout: Option<std::time::Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32,
    }
}

// ----------------------------------------------------------------------------------------------
// sockets

/// A close-on-exec TCP socket of the family of `addr`, non-blocking if asked.
pub fn tcp_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    socket(addr, libc::SOCK_STREAM, libc::IPPROTO_TCP, nonblocking)
}

/// A close-on-exec UDP socket of the family of `addr`, non-blocking if asked.
pub fn udp_socket(addr: &SocketAddr, nonblocking: bool) -> io::Result<OwnedFd> {
    socket(addr, libc::SOCK_DGRAM, libc::IPPROTO_UDP, nonblocking)
}

fn socket(addr: &SocketAddr, ty: i32, protocol: i32, nonblocking: bool) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    let ty = ty | libc::SOCK_CLOEXEC | if nonblocking { libc::SOCK_NONBLOCK } else { 0 };
    // SAFETY: no pointers are passed; the arguments are valid constants.
    let fd = cvt(unsafe { libc::socket(domain, ty, protocol) })?;
    // SAFETY: the syscall just created `fd`.
    Ok(unsafe { owned_fd(fd) })
}

/// `setsockopt` with an `int` value.
pub fn set_int_opt(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `getsockopt` of an `int` value.
pub fn get_int_opt(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into the live c_int and updates `len`.
    cvt(unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&mut value as *mut i32).cast(), &mut len) })?;
    Ok(value)
}

/// `SO_MEMINFO` (include/uapi/asm-generic/socket.h; the libc crate has the indices, not the
/// option).
const SO_MEMINFO: i32 = 55;
/// The counters `SO_MEMINFO` writes: `SK_MEMINFO_RMEM_ALLOC` through `SK_MEMINFO_DROPS`.
const SK_MEMINFO_VARS: usize = libc::SK_MEMINFO_DROPS as usize + 1;

/// The socket's memory counters (`getsockopt(SO_MEMINFO)`, Linux 4.6), indexed by the
/// `SK_MEMINFO_*` constants. (A kernel that knows fewer writes fewer: the rest stay 0.)
pub fn meminfo(fd: BorrowedFd<'_>) -> io::Result<[u32; SK_MEMINFO_VARS]> {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into the live array and updates `len`.
    cvt(unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, SO_MEMINFO, info.as_mut_ptr().cast(), &mut len)
    })?;
    Ok(info)
}

/// The pending error of a socket (`SO_ERROR`), which reading also clears.
pub fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let err = get_int_opt(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// `bind` to `addr`.
pub fn bind(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr_from(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for the whole call.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(())
}

/// `listen` with a queue of `backlog` connections.
pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: no pointers are passed.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// `connect`. On a non-blocking socket this usually fails with `EINPROGRESS`; the caller waits
/// for writability and then reads `SO_ERROR`.
pub fn connect(fd: BorrowedFd<'_>, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr_from(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes for the whole call.
    cvt(unsafe { libc::connect(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(())
}

/// The address the socket is bound to (`getsockname`).
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    sockname(fd, libc::getsockname)
}

/// The address of the connected peer (`getpeername`).
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddr> {
    sockname(fd, libc::getpeername)
}

type SocknameFn = unsafe extern "C" fn(i32, *mut libc::sockaddr, *mut libc::socklen_t) -> i32;

fn sockname(fd: BorrowedFd<'_>, f: SocknameFn) -> io::Result<SocketAddr> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `f` is getsockname or getpeername; the kernel writes at most `len` bytes into the
    // live, large-enough `storage` and updates `len`.
    cvt(unsafe { f(fd.as_raw_fd(), storage.as_mut_ptr().cast(), &mut len) })?;
    // SAFETY: zero-initialised sockaddr_storage is a valid value, partly overwritten above.
    let storage = unsafe { storage.assume_init() };
    sockaddr_to(&storage, len)
}

/// `shutdown` of one direction or both.
pub fn shutdown(fd: BorrowedFd<'_>, how: Shutdown) -> io::Result<()> {
    crate::trace_step!(crate::trace::SysEvent::Shutdown { fd: fd.as_raw_fd(), how });
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: no pointers are passed.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), how) })?;
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// datagrams (uncounted: each runtime counts them as its own reads and writes)
//
// Every receive passes `MSG_TRUNC`: on a UDP socket the result is then the datagram's *real*
// length, even when it was longer than the buffer (the kernel copied only what fits and dropped
// the rest). A result larger than the buffer is how a truncated datagram is told from one that
// fitted exactly; see `net::DatagramTruncated`.

/// `recvfrom(MSG_TRUNC | flags)` of one datagram into `buf`: its real length (larger than
/// `buf.len()` if it was cut) and its source address.
pub fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> io::Result<(usize, SocketAddr)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes, and `storage` for `len` bytes of
    // address (large enough for any family), for the whole call; the kernel updates `len`.
    let n = check(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_TRUNC,
            storage.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    // SAFETY: zero-initialised sockaddr_storage is a valid value, partly overwritten above.
    let storage = unsafe { storage.assume_init() };
    Ok((n as usize, sockaddr_to(&storage, len)?))
}

/// `sendto(MSG_NOSIGNAL | flags)` of `buf` as one datagram, to `to` (or, with `None`, to the
/// address the socket is connected to).
pub fn send_to(fd: BorrowedFd<'_>, buf: &[u8], to: Option<&SocketAddr>, flags: i32) -> io::Result<usize> {
    let (storage, len) = match to {
        Some(to) => sockaddr_from(to),
        // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
        None => (unsafe { mem::zeroed() }, 0),
    };
    let name =
        if to.is_some() { (&storage as *const libc::sockaddr_storage).cast() } else { std::ptr::null() };
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes, and `name` is null or points to a
    // sockaddr of `len` bytes, for the whole call.
    let n = check(unsafe {
        libc::sendto(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags | libc::MSG_NOSIGNAL, name, len)
    })?;
    Ok(n as usize)
}

/// `recvmsg(MSG_TRUNC | flags)`: one datagram into what `msg` describes; its real length.
///
/// # Safety
/// `msg` must point to a valid `msghdr` whose buffers (iovecs, name) are valid for writes of
/// their stated lengths for the whole call.
pub unsafe fn recvmsg(fd: RawFd, msg: *mut libc::msghdr, flags: i32) -> io::Result<usize> {
    // SAFETY: the caller guarantees `msg` and its buffers are valid.
    let n = check(unsafe { libc::recvmsg(fd, msg, flags | libc::MSG_TRUNC) })?;
    Ok(n as usize)
}

/// `sendmsg(MSG_NOSIGNAL | flags)`: one datagram from what `msg` describes.
///
/// # Safety
/// `msg` must point to a valid `msghdr` whose buffers (iovecs, name) are valid for reads of
/// their stated lengths for the whole call.
pub unsafe fn sendmsg(fd: RawFd, msg: *const libc::msghdr, flags: i32) -> io::Result<usize> {
    // SAFETY: the caller guarantees `msg` and its buffers are valid.
    let n = check(unsafe { libc::sendmsg(fd, msg, flags | libc::MSG_NOSIGNAL) })?;
    Ok(n as usize)
}

/// System calls entered directly, for those made per message (the reactor's `read` and
/// `send`, the epoll emulation's `recv` and `send`): glibc's wrappers are thread-cancellation
/// points, which in a multi-threaded process switch asynchronous cancellation on and off
/// around every call, a cost per message these runtimes have no use for.
///
/// On x86-64 Linux a syscall is one instruction with the number and up to six arguments in
/// fixed registers, returning the result or `-errno` in one register (the kernel's ABI, which is
/// stable). Elsewhere glibc's `syscall(2)` does the same in a function, and its result is
/// turned into the same convention.
pub mod raw {
    use std::io;
    use std::os::fd::RawFd;

    /// An fd as a full register's worth (sign-extended, as the kernel reads an `int`).
    #[inline]
    pub fn fd(fd: RawFd) -> usize {
        fd as isize as usize
    }

    /// A raw return value as a result: the kernel returns `-errno` (-4095..=-1) on failure.
    #[inline]
    pub fn result(ret: isize) -> io::Result<usize> {
        if (-4095..0).contains(&ret) {
            Err(io::Error::from_raw_os_error(-ret as i32))
        } else {
            Ok(ret as usize)
        }
    }

    /// Makes syscall `nr` with six arguments (unused ones 0); returns the result or `-errno`.
    ///
    /// # Safety
    ///
    /// As for the syscall itself: every pointer argument must be valid for what the kernel
    /// does with it (reads or writes of the given length) for the duration of the call.
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[inline]
    pub unsafe fn syscall6(
        nr: libc::c_long,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> isize {
        let ret: isize;
        // SAFETY: the x86-64 Linux syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10,
        // r8, r9, result in rax; the instruction clobbers rcx and r11 and nothing else, and does
        // not touch the stack. Memory the arguments point to is the caller's contract (the asm
        // is not marked `nomem`, so the compiler assumes it may read and write any of it).
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d, in("r8") e, in("r9") f,
                lateout("rcx") _, lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// Elsewhere: glibc's `syscall(2)`, its `-1` and `errno` turned into `-errno`.
    ///
    /// # Safety
    ///
    /// As for the syscall itself (see the x86-64 version).
    #[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
    #[inline]
    pub unsafe fn syscall6(
        nr: libc::c_long,
        a: usize,
        b: usize,
        c: usize,
        d: usize,
        e: usize,
        f: usize,
    ) -> isize {
        // SAFETY: the caller's contract is the syscall's; the arguments are passed unchanged.
        let ret = unsafe { libc::syscall(nr, a, b, c, d, e, f) } as isize;
        if ret == -1 {
            -(io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) as isize)
        } else {
            ret
        }
    }
}

// ----------------------------------------------------------------------------------------------
// limits

/// The soft `RLIMIT_NOFILE`: how many fds this process may have open.
pub fn nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: the kernel writes one rlimit into the live struct.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    Ok(limit.rlim_cur)
}

// ----------------------------------------------------------------------------------------------
// socket addresses

/// Encodes a `SocketAddr` as the C `sockaddr_in` / `sockaddr_in6` inside a `sockaddr_storage`.
pub fn sockaddr_from(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned at least as, sockaddr_in.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned at least as, sockaddr_in6.
            unsafe { (&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Decodes the address the kernel wrote into `storage`.
pub fn sockaddr_to(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> io::Result<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as i32 {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family is AF_INET and the kernel wrote a whole sockaddr_in; storage is
            // aligned for it.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = u32::from_be(sin.sin_addr.s_addr).into();
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family is AF_INET6 and the kernel wrote a whole sockaddr_in6; storage
            // is aligned for it.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        family => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected socket address family {family} (length {len})"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip_through_the_c_layout() {
        for text in ["127.0.0.1:7000", "0.0.0.0:0", "[::1]:65535", "[fe80::1%3]:80"] {
            let addr: SocketAddr = text.parse().unwrap();
            let (storage, len) = sockaddr_from(&addr);
            assert_eq!(sockaddr_to(&storage, len).unwrap(), addr, "{text}");
        }
    }
}
