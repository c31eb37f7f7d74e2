//! The libc calls the model servers need and std does not offer: `select` and its descriptor
//! sets, `poll`, `fork`/`waitpid`, the `fcntl`s of signal-driven I/O, signal masks, and Linux
//! native AIO (`io_setup`, `io_submit`, `io_getevents`, `io_destroy`, which glibc does not wrap:
//! raw syscalls). Each is a thin wrapper over one call; this is the only module of the models
//! with `unsafe`.
#![allow(unsafe_code)]

use std::fmt;
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

// ---------------------------------------------------------------------------------------------
// select(2)

/// How many fds a `select(2)` descriptor set can hold: it is a bitmap of this many bits
/// (128 bytes), indexed by fd number. Raising the fd limit (`ulimit -n`) does not change it.
pub const FD_SETSIZE: usize = libc::FD_SETSIZE;

/// A `select(2)` descriptor set that refuses the fds it cannot hold.
///
/// C's `FD_SET(fd, &set)` does not check `fd`: with `fd >= FD_SETSIZE` it sets a bit past the
/// end of the 128-byte set, in whatever lies after it (usually the caller's stack), and
/// `select` called with `nfds > FD_SETSIZE` reads and writes that far past each set too.
/// glibc built with `_FORTIFY_SOURCE` aborts instead; the `libc` crate's `FD_SET` panics.
/// Here [`FdSet::insert`] says no, and `nfds` comes from the set itself, so it never exceeds
/// `FD_SETSIZE`.
pub struct FdSet {
    set: libc::fd_set,
    /// One more than the highest fd inserted since the last [`FdSet::clear`] (0 if none):
    /// `select`'s `nfds`. Invariant: at most `FD_SETSIZE`.
    end: libc::c_int,
}

impl FdSet {
    /// An empty set.
    pub fn new() -> FdSet {
        // SAFETY: fd_set is a plain array of integers, for which all zeroes is a valid value
        // (the empty set, which is also what FD_ZERO writes).
        FdSet { set: unsafe { std::mem::zeroed() }, end: 0 }
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        // SAFETY: `self.set` is a live, writable fd_set.
        unsafe { libc::FD_ZERO(&mut self.set) };
        self.end = 0;
    }

    /// Whether `fd` can be put in a set: `0 <= fd < FD_SETSIZE`.
    pub fn fits(fd: RawFd) -> bool {
        usize::try_from(fd).is_ok_and(|fd| fd < FD_SETSIZE)
    }

    /// Adds `fd`; `false`, and the set unchanged, if it does not fit (see [`FdSet::fits`]).
    pub fn insert(&mut self, fd: RawFd) -> bool {
        if !FdSet::fits(fd) {
            return false;
        }
        // SAFETY: `self.set` is a live, writable fd_set, and `fd` was just checked to be in
        // 0..FD_SETSIZE, so the bit is inside it.
        unsafe { libc::FD_SET(fd, &mut self.set) };
        self.end = self.end.max(fd + 1);
        true
    }

    /// Whether `fd` is in the set (`false` for an fd that cannot be).
    pub fn contains(&self, fd: RawFd) -> bool {
        // SAFETY: `self.set` is a live fd_set, and the bit is inside it (checked first).
        FdSet::fits(fd) && unsafe { libc::FD_ISSET(fd, &self.set) }
    }

    /// One more than the highest fd inserted since the last [`FdSet::clear`]: `select`'s
    /// `nfds` for this set.
    pub fn end(&self) -> RawFd {
        self.end
    }

    /// How many fds are in the set (a walk of its bits up to [`FdSet::end`]).
    pub fn count(&self) -> usize {
        (0..self.end).filter(|&fd| self.contains(fd)).count()
    }
}

impl Default for FdSet {
    fn default() -> FdSet {
        FdSet::new()
    }
}

impl fmt::Debug for FdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries((0..self.end).filter(|&fd| self.contains(fd))).finish()
    }
}

/// `select(2)` over `read` and `write` (no exception set: out-of-band data is not used here;
/// a socket with a pending error is reported readable and writable). `timeout` `None` waits
/// forever, and is rounded up to whole microseconds. On return each set holds only its ready
/// fds; `EINTR` counts as a timeout (0, both sets emptied: Linux leaves them unchanged on
/// error, which would read as "everything ready").
pub fn select(read: &mut FdSet, write: &mut FdSet, timeout: Option<Duration>) -> io::Result<usize> {
    let nfds = read.end.max(write.end);
    let mut tv = timeout.map(|t| {
        let micros = t.as_nanos().div_ceil(1_000);
        libc::timeval {
            tv_sec: (micros / 1_000_000).min(libc::time_t::MAX as u128) as libc::time_t,
            tv_usec: (micros % 1_000_000) as libc::suseconds_t,
        }
    });
    let tv_ptr = tv.as_mut().map_or(std::ptr::null_mut(), |tv| tv as *mut libc::timeval);
    // SAFETY: both sets are live, writable fd_sets, and `nfds` is at most FD_SETSIZE (the
    // invariant of `FdSet::end`), so the kernel reads and writes only bits inside them; the
    // exception set is null; `tv_ptr` is null or a live timeval the kernel may update.
    let ret = unsafe { libc::select(nfds, &mut read.set, &mut write.set, std::ptr::null_mut(), tv_ptr) };
    match cvt(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            read.clear();
            write.clear();
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Linux native AIO (io_setup, io_submit, io_getevents, io_destroy)

/// `IOCB_CMD_POLL` (linux/aio_abi.h, Linux 4.18): wait until the fd has one of the events in
/// `aio_buf`.
const IOCB_CMD_POLL: u16 = 5;

/// `struct iocb` of linux/aio_abi.h: what `io_submit` reads. The kernel copies it in during
/// the call (and writes `aio_key`), and keeps nothing of it afterwards but the `aio_data`
/// value and the iocb's address, both returned in the request's [`IoEvent`].
///
/// The header orders `aio_key` and `aio_rw_flags` by byte order, so that the pair reads the
/// same as the 64-bit field it once was; on a little-endian target (x86-64) `aio_key` comes
/// first. No padding: every field sits at a multiple of its size (checked below).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Iocb {
    /// Returned as is in the event's `data`.
    aio_data: u64,
    #[cfg(target_endian = "little")]
    aio_key: u32,
    /// `__kernel_rwf_t`: `RWF_*` flags for reads and writes; must be 0 for a poll.
    aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    aio_key: u32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    /// For a poll: the events to wait for (a 16-bit `POLL*` mask; more bits are `EINVAL`).
    aio_buf: u64,
    /// For a poll: 0.
    aio_nbytes: u64,
    /// For a poll: 0.
    aio_offset: i64,
    aio_reserved2: u64,
    /// `IOCB_FLAG_*`: none here (`IOCB_FLAG_RESFD` would also signal an eventfd).
    aio_flags: u32,
    aio_resfd: u32,
}

/// `struct io_event` of linux/aio_abi.h: one completion, as `io_getevents` copies it out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct IoEvent {
    /// The request's `aio_data`.
    data: u64,
    /// The address of the iocb it came from (not used: `data` names the request).
    obj: u64,
    /// For a poll: the ready events (`POLL*`), or a negative errno.
    res: i64,
    res2: i64,
}

// The layout of linux/aio_abi.h (64 and 32 bytes), checked at compile time.
const _: () = {
    assert!(std::mem::size_of::<Iocb>() == 64);
    assert!(std::mem::offset_of!(Iocb, aio_lio_opcode) == 16);
    assert!(std::mem::offset_of!(Iocb, aio_fildes) == 20);
    assert!(std::mem::offset_of!(Iocb, aio_buf) == 24);
    assert!(std::mem::offset_of!(Iocb, aio_flags) == 56);
    assert!(std::mem::offset_of!(Iocb, aio_resfd) == 60);
    assert!(std::mem::size_of::<IoEvent>() == 32);
};
#[cfg(target_endian = "little")]
const _: () =
    assert!(std::mem::offset_of!(Iocb, aio_key) == 8 && std::mem::offset_of!(Iocb, aio_rw_flags) == 12);

/// One poll request for [`AioContext::submit_polls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollRequest {
    /// The fd to wait on. The kernel holds a reference to its file until the request
    /// completes: closing the fd meanwhile does not close the socket.
    pub fd: RawFd,
    /// The events to wait for (`libc::POLLIN`, `libc::POLLOUT`, ...); `POLLERR` and `POLLHUP`
    /// are always reported.
    pub events: i16,
    /// A value of the caller's, returned in the request's [`PollEvent`].
    pub data: u64,
}

/// One completed poll request, from [`AioContext::wait`].
#[derive(Debug)]
pub struct PollEvent {
    /// The request's [`PollRequest::data`].
    pub data: u64,
    /// The events that were ready, or the request's error.
    pub result: io::Result<i16>,
}

/// A Linux native AIO context (`io_setup`): a completion ring of a fixed size that requests
/// submitted to it complete into, destroyed (`io_destroy`) on drop.
///
/// Not POSIX aio (`aio_read`, which glibc runs on helper threads): this is the kernel's own
/// interface, which glibc does not wrap, called through `libc::syscall`.
pub struct AioContext {
    /// The kernel's name for the context (`aio_context_t`: the user address at which the
    /// kernel mapped the ring).
    id: libc::c_ulong,
    capacity: usize,
    /// Scratch space, kept between calls: the iocbs `submit_polls` builds, and the events
    /// `wait` receives. The kernel touches them only during those calls.
    iocbs: Vec<Iocb>,
    events: Vec<IoEvent>,
}

impl AioContext {
    /// `io_setup(capacity)`: a context in which `capacity` requests can be in flight at once
    /// (a completed request holds its slot until [`AioContext::wait`] takes its event).
    ///
    /// `EAGAIN` when the sum over the system of all contexts' capacities would pass
    /// `fs.aio-max-nr`; `ENOSYS` on a kernel without AIO (`CONFIG_AIO=n`); `EPERM` or `ENOSYS`
    /// when a seccomp policy forbids it.
    pub fn new(capacity: u32) -> io::Result<AioContext> {
        let mut id: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context's id into `id`, a live c_ulong that must be 0
        // on entry, and reads nothing else.
        let ret = unsafe {
            libc::syscall(libc::SYS_io_setup, capacity as libc::c_uint, &mut id as *mut libc::c_ulong)
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AioContext { id, capacity: capacity as usize, iocbs: Vec::new(), events: Vec::new() })
    }

    /// How many requests can be in flight at once (the `io_setup` argument).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `io_submit`: one `IOCB_CMD_POLL` request per entry of `polls`, in one call. Returns how
    /// many the kernel took, from the front (it stops at the first it cannot take, and takes at
    /// most [`AioContext::capacity`] per call); `Err` when it took none, with the error of
    /// `polls[0]`: `EAGAIN` when the ring has no free slot, `EBADF` for a bad fd, `EINVAL`
    /// for a kernel without `IOCB_CMD_POLL` (before 4.18).
    pub fn submit_polls(&mut self, polls: &[PollRequest]) -> io::Result<usize> {
        if polls.is_empty() {
            return Ok(0);
        }
        self.iocbs.clear();
        self.iocbs.extend(polls.iter().map(|p| Iocb {
            aio_data: p.data,
            aio_lio_opcode: IOCB_CMD_POLL,
            aio_fildes: p.fd as u32,
            aio_buf: u64::from(p.events as u16),
            ..Iocb::default()
        }));
        let mut ptrs: Vec<*mut Iocb> = self.iocbs.iter_mut().map(|iocb| iocb as *mut Iocb).collect();
        // SAFETY: `ptrs` holds `ptrs.len()` pointers to live, writable iocbs (the kernel writes
        // each one's aio_key); both arrays outlive the call, and the kernel keeps no pointer
        // into them afterwards (it copies each iocb; the address only comes back as a number
        // in `IoEvent::obj`).
        let ret = unsafe {
            libc::syscall(libc::SYS_io_submit, self.id, ptrs.len() as libc::c_long, ptrs.as_mut_ptr())
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }

    /// `io_getevents`: waits up to `timeout` (`None`: forever) for at least one completion, then
    /// takes up to `max` into `out` (appended). Returns how many; `EINTR` counts as a timeout.
    pub fn wait(
        &mut self,
        out: &mut Vec<PollEvent>,
        max: usize,
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let max = max.max(1);
        self.events.clear();
        self.events.resize(max, IoEvent::default());
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
        // SAFETY: `self.events` holds `max` writable io_events, into which the kernel copies at
        // most `max` completions; `ts_ptr` is null or a live timespec, only read.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.id,
                1 as libc::c_long,
                max as libc::c_long,
                self.events.as_mut_ptr(),
                ts_ptr,
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(e) };
        }
        let n = ret as usize;
        out.extend(self.events[..n].iter().map(|ev| PollEvent {
            data: ev.data,
            result: if ev.res < 0 {
                Err(io::Error::from_raw_os_error(-ev.res as i32))
            } else {
                Ok(ev.res as u16 as i16)
            },
        }));
        Ok(n)
    }
}

impl fmt::Debug for AioContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AioContext").field("id", &self.id).field("capacity", &self.capacity).finish()
    }
}

impl Drop for AioContext {
    /// `io_destroy`: cancels the requests still in flight and waits until they are gone; their
    /// events, and those not yet taken, are discarded.
    fn drop(&mut self) {
        // SAFETY: io_destroy takes the context id only; nothing refers to the context after.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.id) };
    }
}
