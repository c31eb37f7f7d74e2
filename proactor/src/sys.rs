//! The syscall layer: the plain syscalls of the crate (the blocking calls, glibc aio entry
//! points and realtime-signal plumbing of the POSIX aio backend, the non-blocking `recv`/`send` of the epoll backend; the
//! epoll calls themselves are the shared executor's). Socket set-up, options, addresses and the eventfd are the
//! shared executor's (`executor::sys`), re-exported here.
//!
//! The I/O itself does not happen here: it is described in SQEs (or `aiocb`s) and performed by
//! the kernel or glibc (see `driver`, `uring`, `aio`, `net`, `buf` and `bufring`, the only other
//! places with `unsafe`: where memory is handed over). Each function is a thin wrapper over one
//! libc call (except the epoll backend's `recv` and `send`, made once per message each, which
//! enter the kernel directly: see [`raw`]); fds come back as [`OwnedFd`]; `-1` becomes
//! `io::Error::last_os_error()` through [`cvt`].
//!
//! Sockets are created with `SOCK_CLOEXEC` (never inherited by a child process). They stay
//! blocking: io_uring never blocks on them (it tries without waiting, and otherwise waits for
//! readiness inside the kernel), and glibc's aio helper threads *need* them blocking (they call
//! plain `read`/`write`, which would fail with `EAGAIN` on a non-blocking socket).

use executor::sys::raw;
use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

pub(crate) use executor::sys::{
    eventfd, eventfd_drain, eventfd_signal, local_addr, owned_fd, peer_addr, sockaddr_from, sockaddr_to,
    take_error, tcp_socket,
};

/// Turns a libc return value of `-1` into the thread's `errno` as an `io::Error`. Also counts
/// the syscall (as "other"; see `stats`).
fn cvt<T: PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    crate::stats::bump(|c| &c.sys_other);
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

// ----------------------------------------------------------------------------------------------
// blocking calls for the aio backend's helper threads

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let flags = if nonblocking { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    // SAFETY: F_SETFL takes an int.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) })?;
    Ok(())
}

/// Waits until `fd` has any of `events`, or `cancel` (an eventfd) is readable. Returns whether
/// `cancel` fired. `EINTR` is retried.
pub(crate) fn poll_or_cancel(fd: RawFd, events: i16, cancel: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [
        libc::pollfd { fd, events, revents: 0 },
        libc::pollfd { fd: cancel.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is a live array of two pollfd, and its length is passed.
        match cvt(unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) }) {
            Ok(_) => return Ok(fds[1].revents != 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes (-1: no limit). Returns the
/// `revents` of each; `EINTR` counts as a timeout.
pub(crate) fn poll_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout_ms: i32,
) -> io::Result<[bool; N]> {
    crate::stats::bump(|c| &c.sys_poll);
    let mut pollfds = fds.map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    // SAFETY: `pollfds` is a live array of N pollfd, and its length is passed.
    // (Not through `cvt`, which would count it a second time, as "other".)
    match unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) } {
        -1 => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok([false; N]),
            e => Err(e),
        },
        _ => Ok(pollfds.map(|p| p.revents != 0)),
    }
}

/// `accept4` with `SOCK_CLOEXEC`, writing the peer's address through `addr` and `len`. The new
/// socket is blocking whatever the listener's flags.
///
/// # Safety
/// `addr` must point to writable memory of `*len` bytes and `len` to a live `socklen_t`.
pub(crate) unsafe fn accept(
    fd: RawFd,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> io::Result<OwnedFd> {
    // SAFETY: the caller guarantees `addr` and `len` are valid for writes.
    let new = cvt(unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC) })?;
    // SAFETY: the syscall just created `new`.
    Ok(unsafe { owned_fd(new) })
}

/// `connect`; on a non-blocking socket usually `EINPROGRESS`.
///
/// # Safety
/// `addr` must point to a socket address of `len` bytes.
pub(crate) unsafe fn connect(fd: RawFd, addr: *const libc::sockaddr, len: libc::socklen_t) -> io::Result<()> {
    // SAFETY: the caller guarantees `addr` is readable for `len` bytes.
    cvt(unsafe { libc::connect(fd, addr, len) })?;
    Ok(())
}

// ----------------------------------------------------------------------------------------------
// the epoll backend's operations (counted by the caller, as `sys_epoll_io`)

/// `recv(MSG_DONTWAIT)` of up to `len` bytes into `buf`: never blocks, whatever the socket's
/// flags (the proactor's sockets are blocking, for aio's sake).
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes for the whole call.
///
/// Entered with the `syscall` instruction itself ([`raw`]), as `send` below, rather than
/// glibc's `recv`: see there.
#[inline]
pub(crate) unsafe fn recv(fd: RawFd, buf: *mut u8, len: usize) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT as usize;
    // SAFETY: the caller guarantees `buf` is writable for `len` bytes; recvfrom(2) takes these
    // six arguments, and a null address with length 0 asks for none (`recv`).
    let ret = unsafe { raw::syscall6(libc::SYS_recvfrom, raw::fd(fd), buf as usize, len, flags, 0, 0) };
    raw::result(ret)
}

/// `send(MSG_DONTWAIT | MSG_NOSIGNAL)` of `len` bytes from `buf`: never blocks, and a reset
/// peer is `EPIPE`, not a `SIGPIPE` that kills the process.
///
/// # Safety
/// `buf` must be valid for reads of `len` bytes for the whole call.
///
/// Entered with the `syscall` instruction itself ([`raw`]), not glibc's `send`: glibc's
/// wrappers are thread-cancellation points, which in a multi-threaded process switch
/// asynchronous cancellation on and off around every call (`__pthread_enable_asynccancel`),
/// a cost per message this runtime has no use for (the reactor does the same, through the same `executor::sys::raw`).
#[inline]
pub(crate) unsafe fn send(fd: RawFd, buf: *const u8, len: usize) -> io::Result<usize> {
    let flags = (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as usize;
    // SAFETY: the caller guarantees `buf` is readable for `len` bytes; sendto(2) takes these
    // six arguments, and a null address with length 0 means none (`send`).
    let ret = unsafe { raw::syscall6(libc::SYS_sendto, raw::fd(fd), buf as usize, len, flags, 0, 0) };
    raw::result(ret)
}

/// `sendto(MSG_DONTWAIT | MSG_NOSIGNAL)` of `len` bytes from `buf` as one datagram to the
/// address at `addr` (`addr_len` bytes): never blocks.
///
/// # Safety
/// `buf` must be valid for reads of `len` bytes and `addr` of `addr_len` bytes for the whole
/// call.
pub(crate) unsafe fn send_to(
    fd: RawFd,
    buf: *const u8,
    len: usize,
    addr: *const libc::sockaddr,
    addr_len: libc::socklen_t,
) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: the caller guarantees `buf` and `addr` are readable for their lengths.
    let n = unsafe { libc::sendto(fd, buf.cast(), len, flags, addr, addr_len) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A second fd for the same open socket (close-on-exec).
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int; a stale fd only yields EBADF.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: the syscall just created `new`.
    Ok(unsafe { owned_fd(new) })
}

/// Shuts a socket down by raw fd, ignoring errors: wakes a thread blocked in `read`/`write` on
/// it (which `close` would not).
pub(crate) fn shutdown_raw(fd: RawFd) {
    crate::stats::bump(|c| &c.sys_other);
    // SAFETY: no pointers are passed; a stale fd only yields EBADF/ENOTSOCK.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Closes `fd` (dropping it), counting the `close` syscall.
pub(crate) fn close(fd: OwnedFd) {
    crate::stats::bump(|c| &c.sys_other);
    drop(fd);
}

// ----------------------------------------------------------------------------------------------
// POSIX aio (glibc)

/// glibc's `struct aioinit` (not in the `libc` crate).
#[repr(C)]
struct AioInit {
    aio_threads: libc::c_int,
    aio_num: libc::c_int,
    aio_locks: libc::c_int,
    aio_usedba: libc::c_int,
    aio_debug: libc::c_int,
    aio_numusers: libc::c_int,
    aio_idle_time: libc::c_int,
    aio_reserved: libc::c_int,
}

extern "C" {
    fn aio_init(init: *const AioInit);
}

/// Sizes glibc's aio thread pool: at most `threads` helper threads, room for `requests`
/// requests, idle threads exiting after `idle_secs`. glibc applies the first two only before
/// its first request in the process.
pub(crate) fn aio_configure(threads: u32, requests: u32, idle_secs: u32) {
    let clamp = |n: u32| n.min(i32::MAX as u32) as libc::c_int;
    let init = AioInit {
        aio_threads: clamp(threads),
        aio_num: clamp(requests),
        aio_locks: 0,
        aio_usedba: 0,
        aio_debug: 0,
        aio_numusers: 0,
        aio_idle_time: clamp(idle_secs),
        aio_reserved: 0,
    };
    // SAFETY: `init` is a live, fully initialised struct aioinit; glibc copies it.
    unsafe { aio_init(&init) };
}

/// The notification half of a `struct sigevent` for `SIGEV_THREAD`, laid out as glibc's
/// (`sigev_value`, `sigev_signo`, `sigev_notify`, then the union's `_sigev_thread` member);
/// the `libc` crate does not expose those union fields.
#[repr(C)]
struct SigEventThread {
    value: libc::sigval,
    signo: libc::c_int,
    notify: libc::c_int,
    function: extern "C" fn(libc::sigval),
    attributes: *const libc::pthread_attr_t,
    _pad: [libc::c_int; 8],
}

const _: () = assert!(mem::size_of::<SigEventThread>() == mem::size_of::<libc::sigevent>());

/// Thread attributes for glibc's notification threads: detached, 64 KiB stacks.
struct NotifyAttr(libc::pthread_attr_t);

// SAFETY: the attributes are initialised once and only read afterwards (by pthread_create).
unsafe impl Sync for NotifyAttr {}
// SAFETY: as above; a pthread_attr_t is plain data.
unsafe impl Send for NotifyAttr {}

fn notify_attr() -> &'static libc::pthread_attr_t {
    static ATTR: std::sync::OnceLock<NotifyAttr> = std::sync::OnceLock::new();
    &ATTR
        .get_or_init(|| {
            let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
            // SAFETY: pthread_attr_init initialises the attr; the setters take valid values.
            unsafe {
                libc::pthread_attr_init(attr.as_mut_ptr());
                libc::pthread_attr_setdetachstate(attr.as_mut_ptr(), libc::PTHREAD_CREATE_DETACHED);
                libc::pthread_attr_setstacksize(attr.as_mut_ptr(), 64 * 1024);
                NotifyAttr(attr.assume_init())
            }
        })
        .0
}

/// How glibc reports that a request is over: the aiocb's `aio_sigevent`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Notify {
    /// `SIGEV_THREAD`: `function(value)` runs on a new glibc thread (detached, 64 KiB stack).
    Thread { function: extern "C" fn(libc::sigval), value: *mut libc::c_void },
    /// `SIGEV_SIGNAL`: glibc queues the realtime signal `signo` to the process, carrying `value`.
    Signal { signo: i32, value: *mut libc::c_void },
    /// `SIGEV_NONE`: nothing; the request's end is seen by `aio_suspend` or `aio_error`.
    Nothing,
}

/// A zeroed `aiocb` for `fd`, `buf` and `len`, whose end glibc reports as `notify` says.
pub(crate) fn aiocb(fd: RawFd, buf: *mut u8, len: usize, notify: Notify) -> libc::aiocb {
    // SAFETY: aiocb is plain old data; all-zero bytes are its documented initial state.
    let mut cb: libc::aiocb = unsafe { mem::zeroed() };
    cb.aio_fildes = fd;
    cb.aio_buf = buf.cast();
    cb.aio_nbytes = len;
    match notify {
        Notify::Thread { function, value } => {
            let event = SigEventThread {
                value: libc::sigval { sival_ptr: value },
                signo: 0,
                notify: libc::SIGEV_THREAD,
                function,
                attributes: notify_attr(),
                _pad: [0; 8],
            };
            // SAFETY: SigEventThread has sigevent's size (checked above) and glibc's layout for
            // SIGEV_THREAD; the field is written whole.
            unsafe { (&mut cb.aio_sigevent as *mut libc::sigevent).cast::<SigEventThread>().write(event) };
        }
        Notify::Signal { signo, value } => {
            cb.aio_sigevent.sigev_notify = libc::SIGEV_SIGNAL;
            cb.aio_sigevent.sigev_signo = signo;
            cb.aio_sigevent.sigev_value = libc::sigval { sival_ptr: value };
        }
        Notify::Nothing => cb.aio_sigevent.sigev_notify = libc::SIGEV_NONE,
    }
    cb
}

/// Queues a read (`write == false`) or write described by `cb` with glibc.
///
/// # Safety
/// `cb` and the buffer it names must stay valid, and not move, until the request is over
/// (`aio_error` no longer says `EINPROGRESS`).
pub(crate) unsafe fn aio_submit(cb: *mut libc::aiocb, write: bool) -> io::Result<()> {
    // SAFETY: the caller guarantees `cb` and its buffer outlive the request.
    let ret = unsafe {
        if write {
            libc::aio_write(cb)
        } else {
            libc::aio_read(cb)
        }
    };
    // (Not through `cvt`: glibc queues the request; it is not a syscall of this thread.)
    match ret {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The request's status: `None` while in progress, else its result as a CQE would carry it (a
/// byte count, or `-errno`). Calls `aio_return`, so must be called once the request is over,
/// and once only.
///
/// # Safety
/// `cb` must be a submitted aiocb that is still alive.
pub(crate) unsafe fn aio_finish(cb: *mut libc::aiocb) -> Option<i32> {
    // SAFETY: the caller guarantees `cb` is alive; aio_error only reads it (under glibc's lock).
    match unsafe { libc::aio_error(cb) } {
        libc::EINPROGRESS => None,
        0 => {
            // SAFETY: the request is over; aio_return reads its result once.
            let n = unsafe { libc::aio_return(cb) };
            Some(n.clamp(0, i32::MAX as isize) as i32)
        }
        errno => {
            // SAFETY: as above (the result is -1; reading it releases the request).
            unsafe { libc::aio_return(cb) };
            Some(-errno)
        }
    }
}

/// Whether the request is over (without consuming its result).
///
/// # Safety
/// `cb` must be a submitted aiocb that is still alive.
pub(crate) unsafe fn aio_done(cb: *const libc::aiocb) -> bool {
    // SAFETY: the caller guarantees `cb` is alive.
    unsafe { libc::aio_error(cb) != libc::EINPROGRESS }
}

/// Waits until one of the requests of `list` is over, or `timeout` passes (`None`: no limit).
/// Returns whether one is over (false on a timeout or a signal). glibc walks its list of
/// requests (one entry per fd, in fd order) to find each request listed: a call costs time
/// quadratic in the number of requests in progress, whether or not it waits.
///
/// # Safety
/// Every pointer in `list` must be a submitted aiocb that is still alive.
pub(crate) unsafe fn aio_suspend(
    list: &[*const libc::aiocb],
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    crate::stats::bump(|c| &c.sys_poll);
    let timeout = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let n = libc::c_int::try_from(list.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the caller guarantees every aiocb is alive; `list` and the timespec outlive the call.
    match unsafe { libc::aio_suspend(list.as_ptr(), n, timeout_ptr) } {
        0 => Ok(true),
        _ => match io::Error::last_os_error() {
            e if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => Ok(false),
            e => Err(e),
        },
    }
}

/// Asks glibc to cancel the request (it can only cancel requests still queued; one a helper
/// thread is already blocked in goes on until it finishes). Returns whether the request goes
/// on (`AIO_NOTCANCELED`).
///
/// # Safety
/// `cb` must be a submitted aiocb that is still alive.
pub(crate) unsafe fn aio_cancel(fd: RawFd, cb: *mut libc::aiocb) -> bool {
    // glibc checks the fd with an `fcntl` first: one syscall of this thread.
    crate::stats::bump(|c| &c.sys_other);
    // SAFETY: the caller guarantees `cb` is alive.
    unsafe { libc::aio_cancel(fd, cb) == libc::AIO_NOTCANCELED }
}

// ----------------------------------------------------------------------------------------------
// the realtime signal of `AioNotify::Signal`

/// The signal: the fifth realtime signal glibc leaves to programs.
pub(crate) fn aio_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

fn sigset_of(signo: i32) -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset only fails on an invalid signal
    // number, which leaves the set empty.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), signo);
        set.assume_init()
    }
}

/// Blocks `signo` in the calling thread (and so in the threads it starts from now on).
pub(crate) fn block_signal(signo: i32) -> io::Result<()> {
    let set = sigset_of(signo);
    // SAFETY: `set` is an initialised sigset_t; the old mask is not asked for.
    match unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// A `signalfd` (non-blocking, close-on-exec) that reads `signo` when it is pending for the
/// calling thread or its process.
pub(crate) fn signalfd(signo: i32) -> io::Result<OwnedFd> {
    let set = sigset_of(signo);
    // SAFETY: -1 asks for a new fd; `set` is an initialised sigset_t.
    let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: the syscall just created `fd`.
    Ok(unsafe { owned_fd(fd) })
}

/// Reads up to 32 pending signals from the signalfd `fd`, and pushes the value (`sival_ptr`)
/// of each that glibc's aio sent as `signo` onto `values`. Returns how many it read (0 when
/// none was pending): fewer than 32 means none is left.
pub(crate) fn read_signals(fd: BorrowedFd<'_>, signo: i32, values: &mut Vec<usize>) -> io::Result<usize> {
    // SAFETY: signalfd_siginfo is plain integers, for which all-zero bytes are valid.
    let mut records: [libc::signalfd_siginfo; 32] = unsafe { mem::zeroed() };
    // SAFETY: `records` is writable for its whole size; the kernel writes whole records.
    let n = unsafe { libc::read(fd.as_raw_fd(), records.as_mut_ptr().cast(), mem::size_of_val(&records)) };
    let n = match cvt(n) {
        Ok(n) => n as usize / mem::size_of::<libc::signalfd_siginfo>(),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    values.extend(
        records[..n]
            .iter()
            .filter(|r| r.ssi_signo == signo as u32 && r.ssi_code == libc::SI_ASYNCIO)
            .map(|r| r.ssi_ptr as usize),
    );
    Ok(n)
}

/// What `signo`'s disposition is now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// The default action (for a realtime signal: terminate the process), or ignored.
    Default,
    /// Handled by `handler`.
    Ours,
    /// Handled by someone else.
    Theirs,
}

/// The handler type `sigaction` takes with `SA_SIGINFO`.
pub(crate) type SigInfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Installs `handler` for `signo` (`SA_SIGINFO | SA_RESTART`, every signal blocked while it
/// runs) unless another handler is there already; returns the disposition it found.
pub(crate) fn install_handler(signo: i32, handler: SigInfoHandler) -> io::Result<Disposition> {
    // SAFETY: sigaction is plain data; all-zero bytes are SIG_DFL with no flags.
    let mut old: libc::sigaction = unsafe { mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    if unsafe { libc::sigaction(signo, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let found = match old.sa_sigaction {
        h if h == handler as libc::sighandler_t => return Ok(Disposition::Ours),
        libc::SIG_DFL | libc::SIG_IGN => Disposition::Default,
        _ => return Ok(Disposition::Theirs),
    };
    // SAFETY: as above.
    let mut new: libc::sigaction = unsafe { mem::zeroed() };
    new.sa_sigaction = handler as libc::sighandler_t;
    new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `new.sa_mask` is a live sigset_t; the handler is an `extern "C"` function with
    // the SA_SIGINFO signature.
    unsafe { libc::sigfillset(&mut new.sa_mask) };
    // SAFETY: `new` is fully initialised.
    if unsafe { libc::sigaction(signo, &new, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(found)
}

/// Queues `signo` with `info` to thread `tid` of this process (`rt_tgsigqueueinfo`), from a
/// signal handler: async-signal-safe, errno kept. Returns whether it was queued.
///
/// # Safety
/// `info` must point to a live siginfo.
pub(crate) unsafe fn forward_signal(tid: i32, signo: i32, info: *mut libc::siginfo_t) -> bool {
    // SAFETY: __errno_location returns this thread's errno; the syscall reads `info`, which the
    // caller guarantees, and takes integers otherwise.
    unsafe {
        let errno = *libc::__errno_location();
        let sent = libc::syscall(libc::SYS_rt_tgsigqueueinfo, libc::getpid(), tid, signo, info) == 0;
        *libc::__errno_location() = errno;
        sent
    }
}

/// Writes `message` to stderr with one `write`, from a signal handler (async-signal-safe).
pub(crate) fn write_stderr_raw(message: &[u8]) {
    // SAFETY: `message` is readable for its length; errno is kept as the handler found it.
    unsafe {
        let errno = *libc::__errno_location();
        libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), message.len());
        *libc::__errno_location() = errno;
    }
}

/// The calling thread's id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The soft `RLIMIT_SIGPENDING`: how many signals the user may have queued at once.
pub(crate) fn sigpending_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one live rlimit.
    match unsafe { libc::getrlimit(libc::RLIMIT_SIGPENDING, &mut limit) } {
        0 => limit.rlim_cur,
        _ => u64::MAX,
    }
}

// ----------------------------------------------------------------------------------------------
// the simulated kernel's look at real fds (feature `sim`: its sockets are real fds, their data
// is the model's)

/// The inode of the open file `fd` names (sockets have one each), or `None` if `fd` is not
/// open: tells whether a number still names the socket it named before.
#[cfg(feature = "sim")]
pub(crate) fn inode(fd: RawFd) -> Option<u64> {
    // SAFETY: stat is plain old data; all-zero bytes are a valid value.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one stat into the live struct; a stale fd only yields EBADF.
    cvt(unsafe { libc::fstat(fd, &mut stat) }).ok().map(|_| stat.st_ino)
}

/// The type (`SOCK_STREAM`, `SOCK_DGRAM`) and local address of the socket `fd` names.
#[cfg(feature = "sim")]
pub(crate) fn socket_of(fd: RawFd) -> io::Result<(i32, std::net::SocketAddr)> {
    // SAFETY: the fd is only borrowed for these two calls; a stale one yields EBADF.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let ty = executor::sys::get_int_opt(fd, libc::SOL_SOCKET, libc::SO_TYPE)?;
    Ok((ty, executor::sys::local_addr(fd)?))
}
