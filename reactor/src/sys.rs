//! The syscall layer: every `unsafe` syscall of the crate lives here, and nothing else does:
//! `accept4`, `read` and `send` (and, counted here, the shared `recvfrom` and `sendto` of UDP).
//! (The crate's one other `unsafe`, turning an epoll token back into the registration it
//! names, is fenced in the driver's `token` module.) The epoll calls, socket set-up, options,
//! addresses and the eventfd are the shared executor's (`executor::sys`, which the proactor's
//! epoll backend uses too); the epoll ones are wrapped here to count and trace them as this
//! runtime's.
//!
//! Each function is a thin, safe wrapper over one syscall: a libc call, except `read` and
//! `send`, the two every message makes, which enter the kernel directly (see `executor::sys::raw`). File
//! descriptors come back as [`OwnedFd`], so closing is never forgotten and never done twice. A
//! return value of `-1` becomes `io::Error::last_os_error()` through [`cvt`] (a raw `-errno`
//! becomes the same error); nothing here retries or interprets errors, that is the caller's
//! business. Each syscall is counted (see `stats`), with one
//! thread-local access; a `read` or `send` that says `EAGAIN` is counted in the same access.
//!
//! Sockets are created with `SOCK_NONBLOCK | SOCK_CLOEXEC` (and accepted with `accept4` and the
//! same flags), so a descriptor is never blocking, and is never inherited by a child process,
//! not even for the instant between two syscalls.

use executor::sys::raw;
use std::io;
use std::mem::{self, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

pub(crate) use executor::sys::{
    connect, local_addr, owned_fd, peer_addr, sockaddr_to, take_error, tcp_socket,
};

use crate::stats;
use crate::trace::{Call, Event, SysEvent};

/// Turns a libc return value of `-1` into the thread's `errno` as an `io::Error`.
#[inline]
fn cvt<T: PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

// ----------------------------------------------------------------------------------------------
// epoll

/// `epoll_create1(EPOLL_CLOEXEC)` (the shared wrapper, counted here).
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    stats::bump(|c| &c.sys_other);
    executor::sys::epoll_create()
}

/// `epoll_ctl(ADD | MOD)` with an event mask and the 64-bit token the kernel hands back.
pub(crate) fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    token: u64,
) -> io::Result<()> {
    stats::bump(|c| &c.sys_epoll_ctl);
    executor::sys::epoll_ctl(epoll, op, fd, events, token)?;
    executor::trace_step!(SysEvent::EpollAdd { fd });
    Ok(())
}

/// `epoll_ctl(EPOLL_CTL_DEL)`.
pub(crate) fn epoll_del(epoll: BorrowedFd<'_>, fd: RawFd) -> io::Result<()> {
    stats::bump(|c| &c.sys_epoll_ctl);
    executor::sys::epoll_del(epoll, fd)?;
    executor::trace_step!(SysEvent::EpollDel { fd });
    Ok(())
}

/// `epoll_wait` into `events`; returns how many entries at the front were filled.
/// `timeout_ms` is -1 to wait forever, 0 to return at once.
pub(crate) fn epoll_wait(
    epoll: BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> io::Result<usize> {
    executor::trace_step!(SysEvent::EpollWait { timeout_ms });
    stats::bump(|c| &c.sys_epoll_wait);
    let n = executor::sys::epoll_wait(epoll, events, timeout_ms)?;
    executor::trace_step!(SysEvent::EpollReturned { events: n });
    Ok(n)
}

// ----------------------------------------------------------------------------------------------
// sockets

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`: the new connection and its peer address.
pub(crate) fn accept(fd: BorrowedFd<'_>) -> io::Result<(OwnedFd, SocketAddr)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    stats::bump(|c| &c.sys_accept);
    // SAFETY: the kernel writes at most `len` bytes of address into `storage`, which is live and
    // large enough for any address family, and updates `len`.
    let conn = cvt(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            storage.as_mut_ptr().cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    executor::trace_step!(Event::Accepted { listener: fd.as_raw_fd(), fd: conn });
    // SAFETY: accept4 just created `conn`.
    let conn = unsafe { owned_fd(conn) };
    // SAFETY: zero-initialised sockaddr_storage is a valid value, and the kernel filled in `len`
    // bytes of it.
    let storage = unsafe { storage.assume_init() };
    Ok((conn, sockaddr_to(&storage, len)?))
}

/// `read` into `buf`; 0 means end of stream.
///
/// Entered with the `syscall` instruction itself (see [`raw`]) rather than glibc's `read`, and
/// `send` below likewise: glibc's wrappers are thread-cancellation points, which in a
/// multi-threaded process switch asynchronous cancellation on and off around every call
/// (`__pthread_enable_asynccancel`), and even its generic `syscall(2)` costs a call, an
/// argument shuffle and an `errno` store: costs per message this runtime has no use for.
#[inline]
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call; read(2) takes
    // exactly these three arguments.
    let ret = unsafe {
        raw::syscall6(libc::SYS_read, raw::fd(fd.as_raw_fd()), buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0)
    };
    let result = raw::result(ret);
    counted_io(Call::Read, |c| &c.sys_read, fd, buf.len(), &result);
    result
}

/// `send(MSG_NOSIGNAL)`: like `write`, but a reset peer gives `EPIPE` instead of killing the
/// process with `SIGPIPE`. (`sendto` with no address is `send`; entered directly, see
/// [`read`].)
#[inline]
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL as usize;
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call; sendto(2)
    // takes these six arguments, and a null address with length 0 means none.
    let ret = unsafe {
        raw::syscall6(
            libc::SYS_sendto,
            raw::fd(fd.as_raw_fd()),
            buf.as_ptr() as usize,
            buf.len(),
            flags,
            0,
            0,
        )
    };
    let result = raw::result(ret);
    counted_io(Call::Send, |c| &c.sys_write, fd, buf.len(), &result);
    result
}

/// `recvfrom` of one datagram into `buf`: its real length (more than `buf.len()` if it was
/// cut) and its source.
pub(crate) fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let result = executor::sys::recv_from(fd, buf, 0);
    let len = result.as_ref().map(|&(n, _)| n).map_err(clone_error);
    counted_io(Call::RecvFrom, |c| &c.sys_read, fd, buf.len(), &len);
    result
}

/// `sendto` of `buf` as one datagram, to `to` (`None`: the connected peer).
pub(crate) fn send_to(fd: BorrowedFd<'_>, buf: &[u8], to: Option<&SocketAddr>) -> io::Result<usize> {
    let result = executor::sys::send_to(fd, buf, to, 0);
    counted_io(Call::SendTo, |c| &c.sys_write, fd, buf.len(), &result.as_ref().copied().map_err(clone_error));
    result
}

fn clone_error(e: &io::Error) -> io::Error {
    e.raw_os_error().map_or_else(|| io::Error::new(e.kind(), e.to_string()), io::Error::from_raw_os_error)
}

/// Counts a read or send syscall in the counter `calls` picks, and an `EAGAIN` (it found
/// nothing to do) in the same thread-local access; traces either.
#[inline]
fn counted_io(
    call: Call,
    calls: fn(&stats::Counters) -> &std::cell::Cell<u64>,
    fd: BorrowedFd<'_>,
    len: usize,
    result: &io::Result<usize>,
) {
    let would_block = matches!(result, Err(e) if e.raw_os_error() == Some(libc::EAGAIN));
    stats::count_io(calls, would_block);
    if stats::tracing() {
        trace_io(call, fd, len, result);
    }
}

#[cold]
fn trace_io(call: Call, fd: BorrowedFd<'_>, len: usize, result: &io::Result<usize>) {
    executor::trace_step!(Event::Io { call, fd: fd.as_raw_fd(), len, result: Event::result_of(result) });
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn read_and_send_report_bytes_eagain_end_of_stream_and_epipe() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        let e = read(ours.as_fd(), &mut buf).unwrap_err();
        assert_eq!((e.kind(), e.raw_os_error()), (io::ErrorKind::WouldBlock, Some(libc::EAGAIN)));
        peer.write_all(b"abc").unwrap();
        assert_eq!(read(ours.as_fd(), &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(send(ours.as_fd(), b"hello").unwrap(), 5);
        let mut echoed = [0u8; 5];
        peer.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"hello");
        drop(peer);
        assert_eq!(read(ours.as_fd(), &mut buf).unwrap(), 0, "end of stream");
        // MSG_NOSIGNAL: an error, not a SIGPIPE that kills the test.
        assert_eq!(send(ours.as_fd(), b"x").unwrap_err().raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn an_error_number_comes_back_as_it_is() {
        // send(2) on a file that is not a socket.
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(send(file.as_fd(), b"x").unwrap_err().raw_os_error(), Some(libc::ENOTSOCK));
        assert_eq!(read(file.as_fd(), &mut [0u8; 4]).unwrap(), 0);
    }
}
