//! The libc calls the model servers need and std does not offer: `poll`, `fork`/`waitpid`,
//! the `fcntl`s of signal-driven I/O, and signal masks. Each is a thin wrapper over one call;
//! this is the only module of the models with `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Listen backlog for the servers: std's `TcpListener::bind` listens with 128, which a burst of
/// a thousand connections overflows (the dropped SYNs are retried after 1, 3, 7... seconds).
pub const BACKLOG: i32 = 4096;

/// Sets the listen backlog of an already listening socket (capped by `net.core.somaxconn`).
pub fn set_backlog(listener: &std::net::TcpListener, backlog: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a socket the caller owns, with an int; calling it again only resizes
    // the queue.
    cvt(unsafe { libc::listen(listener.as_raw_fd(), backlog) })?;
    Ok(())
}

/// `poll(2)` over `fds`; `timeout` `None` waits forever, and is rounded up to whole
/// milliseconds (rounding down would turn the last fraction of a wait into a spin of
/// zero-timeout calls). `EINTR` counts as a timeout (0).
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32);
    // SAFETY: `fds` is a live, writable slice of pollfd and its length is passed with it.
    match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// What `fork` returned on each side.
#[derive(Debug)]
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(libc::pid_t),
    /// In the child. A child of a multi-threaded process has only the thread that forked: it
    /// must not take locks another thread may have held (the allocator's, stdio's) and should
    /// end with [`exit_child`].
    Child,
}

/// `fork(2)`.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork takes no arguments; the caller handles the child's restrictions (see
    // `Forked::Child`).
    match cvt(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends a forked child at once (`_exit`: no atexit handlers, no stdio flush, nothing that could
/// take a lock).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Closes every fd of this process above stderr except `keep` (`close_range(2)`, two calls):
/// a forked child must not hold the parent's other sockets, or closing them in the parent
/// would not end those connections. Async-signal-safe: fine in a forked child.
pub fn close_other_fds(keep: RawFd) {
    let keep = keep.max(3) as libc::c_uint;
    // SAFETY: close_range takes plain integers; closing fds the child does not use is its
    // purpose, and nothing in the child refers to them afterwards.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, keep - 1, 0 as libc::c_uint);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0 as libc::c_uint);
    }
}

/// Reaps every child that has exited, without waiting.
pub fn reap_children() {
    let mut status = 0;
    // SAFETY: `status` is a live int the kernel writes each exit status into.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}

/// Makes the parent's death kill this (child) process: no orphaned connection handlers.
pub fn die_with_parent() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// The id of the calling thread.
pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The first realtime signal number (glibc reserves a few below it).
pub fn sigrtmin() -> libc::c_int {
    libc::SIGRTMIN()
}

/// Blocks `signals` in the calling thread (threads it starts later inherit the mask).
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    // SAFETY: `set` is initialised by sigemptyset before use; the mask change is per thread.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A signal taken by [`wait_signal`]: its number, and for I/O signals the fd (`si_fd`) the
/// kernel put in its siginfo.
#[derive(Clone, Copy, Debug)]
pub struct Signal {
    /// The signal number.
    pub signo: libc::c_int,
    /// The fd the I/O signal concerns (0 for other signals).
    pub fd: RawFd,
}

/// The layout of siginfo's fields for `SIGPOLL`/`F_SETSIG` signals on Linux (`si_band`, `si_fd`
/// after the three leading ints), which the `libc` crate does not expose.
#[repr(C)]
struct SigPollInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    #[cfg(target_pointer_width = "64")]
    _pad: libc::c_int,
    band: libc::c_long,
    fd: libc::c_int,
}

/// Waits up to `timeout` for one of `signals` (which must be blocked in this thread) and takes
/// it; `None` on timeout.
pub fn wait_signal(signals: &[libc::c_int], timeout: Duration) -> io::Result<Option<Signal>> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is initialised by sigemptyset; `info` is a zeroed siginfo_t the kernel
    // fills; `ts` is a live timespec.
    let (ret, info) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        let mut info: libc::siginfo_t = std::mem::zeroed();
        (libc::sigtimedwait(&set, &mut info, &ts), info)
    };
    match cvt(ret) {
        Ok(signo) => {
            // SAFETY: siginfo_t is larger than SigPollInfo, whose fields sit where the kernel
            // writes si_band and si_fd for poll-type signals (zero for others).
            let poll = unsafe { &*(&info as *const libc::siginfo_t).cast::<SigPollInfo>() };
            Ok(Some(Signal { signo, fd: poll.fd }))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets up signal-driven I/O on `fd`: non-blocking, `O_ASYNC`, owned by the calling thread
/// (`F_SETOWN_EX` with `F_OWNER_TID`, so the signals go to this thread, not any thread of the
/// process), and signalling with `signo` (`F_SETSIG`: a queued realtime signal whose siginfo
/// names the fd) instead of plain `SIGIO`.
pub fn set_signal_driven(fd: RawFd, signo: libc::c_int) -> io::Result<()> {
    #[repr(C)]
    struct FOwnerEx {
        kind: libc::c_int,
        pid: libc::pid_t,
    }
    // From <fcntl.h> (Linux); the `libc` crate lacks them on this target.
    const F_OWNER_TID: libc::c_int = 0;
    const F_SETSIG: libc::c_int = 10;
    const F_SETOWN_EX: libc::c_int = 15;
    let owner = FOwnerEx { kind: F_OWNER_TID, pid: gettid() };
    // SAFETY: fcntl on an fd the caller owns; F_SETOWN_EX reads a live f_owner_ex struct,
    // F_SETSIG and F_SETFL take ints.
    unsafe {
        cvt(libc::fcntl(fd, F_SETOWN_EX, &owner as *const FOwnerEx))?;
        cvt(libc::fcntl(fd, F_SETSIG, signo))?;
        let flags = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK | libc::O_ASYNC))?;
    }
    Ok(())
}
