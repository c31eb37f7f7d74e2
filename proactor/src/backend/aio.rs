//! The POSIX aio backend: the proactor model on `aio_read`/`aio_write`, as glibc provides them.
//!
//! # What POSIX aio on a socket really is
//!
//! Linux has no asynchronous socket I/O behind the POSIX aio calls. glibc implements them in
//! user space: `aio_read` queues the request, and a pool of glibc helper threads performs it
//! with a plain *blocking* `pread` (which fails with `ESPIPE` on a socket) and then `read`. A
//! read on an idle connection therefore holds a helper thread, blocked in `read`, until a byte
//! arrives. glibc runs one request at a time per fd, and at most `aio_threads` requests in all
//! (20 unless `aio_init` says otherwise); beyond that, requests wait for a thread. So N idle
//! connections each with a pending read need N threads, or every other connection starves:
//! this is a thread-per-connection server, with the threads hidden inside libc ("threads in
//! disguise"). The guide's chapter 9 (`docs/09-seed-models.md`) has the numbers.
//!
//! # How this backend uses it
//!
//! - **Ownership.** Each request's `aiocb` lives in a heap block ([`Pending`]) shared, through
//!   an `Arc`, between the driver and glibc's notification; the buffer it names belongs to the
//!   operation (or, once its future is dropped, to the driver's slot). Neither is freed before
//!   the request is over and `aio_return` has been called, exactly once, by the driver. (The
//!   seed's `server_aio.c` keeps its `aiocb` in a loop iteration's stack frame, which dies while
//!   glibc still writes into it: the classic proactor bug.)
//! - **Notification.** How the loop hears that glibc finished a request is the runtime's
//!   choice ([`Builder::aio_notify`](crate::Builder::aio_notify)); see the next section.
//! - **One read and one write per socket at a time.** glibc serialises requests per fd number:
//!   a write would wait behind a read blocked on the same socket (after a `timeout` around a
//!   read, say, a "ping" would wait until the peer speaks). The driver keeps two lanes per
//!   socket, reads (with accept and connect) and writes, each running one request at a time;
//!   later requests wait in the driver's lane, where cancelling them is exact and immediate, and
//!   completions of one lane arrive in submission order (a cancelled read's late bytes are
//!   stashed before the next read runs). A request that starts while the other lane's is in
//!   progress goes to glibc on the other of the fd and a `dup` of it (made once, kept until the
//!   socket closes), so glibc runs it beside the first, in either order.
//! - **Cancellation.** A request still queued in the driver is cancelled on the spot; one in
//!   glibc gets `aio_cancel`, which works only if no helper thread has started it yet. A read
//!   already blocked in a helper thread goes on until data comes (its bytes are then kept for
//!   the next read, as with io_uring). When the socket is closed, the driver first shuts it down
//!   (`shutdown` wakes a thread blocked in `read`, which `close` would not) and closes the fd only
//!   once every request on it is over, so no request can run on a reused fd number. The one
//!   case that costs the connection: an operation awaited in a runtime other than its own (a
//!   programming error) must be reaped at once, and a read glibc already runs can only be ended
//!   by shutting the socket down; on io_uring the stream stays usable.
//! - **Accept and connect.** POSIX aio has neither. As a proactor emulation does, a small pool
//!   of this crate's own helper threads performs them: each waits in `poll` on the socket and on
//!   a per-request cancel eventfd, then calls `accept4` (or finishes a non-blocking `connect`)
//!   and posts the completion like glibc's notification does.
//! - **The thread limit.** glibc's pool is sized once per process, with `aio_init` before the
//!   first request ([`Builder::aio_threads`](crate::Builder::aio_threads), 1024 by default). The
//!   driver never hands glibc more requests than that at once: beyond it, a request fails at
//!   once with `EAGAIN` and a warning on stderr (at most one a second) saying why, instead of
//!   waiting behind idle connections forever.
//!
//! # Three ways to hear that a request is over
//!
//! glibc's helper thread does the I/O in every case; what differs is how the news reaches the
//! loop, and what that costs per completion.
//!
//! - **`AioNotify::Thread` (`SIGEV_THREAD`).** glibc calls [`on_aio_complete`] on a *new
//!   thread* for every finished request (glibc's `pthread_create`, with the small stack this
//!   module asks for); it queues the request for the driver and writes an eventfd the driver
//!   `poll`s, together with the runtime's notifier, with the nearest timer as the timeout. It
//!   works in any program, at the price of a thread created and destroyed per completion, on
//!   top of the helper thread that did the work. If glibc cannot create that thread it drops
//!   the notification silently (its `pthread_create` failure check is `< 0`, which never
//!   holds); the driver therefore rescans requests still in glibc once a second and takes one
//!   found finished twice in a row. One more trap: glibc starts each notification thread with
//!   an *empty* signal mask. A program that blocks SIGTERM in all its threads and `sigwait`s
//!   for it must also install a handler, or a SIGTERM delivered to such a thread terminates the
//!   process (`echo-lab serve` forwards it to its signal thread).
//! - **`AioNotify::Signal` (`SIGEV_SIGNAL`).** glibc's helper thread queues a realtime signal
//!   (`rt_sigqueueinfo`, one syscall) carrying the request; the loop `poll`s a `signalfd` beside
//!   the notifier and the eventfd, and reads up to 32 signals per `read`. A signal is sent to
//!   the *process*: the kernel delivers it to any thread that does not block it, whose default
//!   action for a realtime signal is to terminate the process. A library cannot block it in
//!   threads it did not start, so: the runtime's thread blocks it when the runtime is built;
//!   the program is told to block it in every thread ([`AioNotify::block_signal`] on the main
//!   thread before it starts others; `echo-lab serve` does); and a handler of this crate
//!   catches it on any thread that does not, forwards it to a runtime's thread
//!   (`rt_tgsigqueueinfo`) and says so once on stderr: no notification is lost, at the price of
//!   a second delivery, but the thread it landed on was interrupted, and a call there that the
//!   kernel does not restart after a handler (a socket read with a timeout, `poll`, ...) fails
//!   with `EINTR` (the hostile suite's blocking client saw exactly that until its test binaries
//!   blocked the signal before `main`). glibc's `SIGEV_THREAD` notification threads start with
//!   every signal unblocked: a `Thread` runtime beside a `Signal` one brings strays. Building fails, with a sentence, if another handler owns the signal (a
//!   stranger's pointer must never be taken for a request) or if `RLIMIT_SIGPENDING` is below
//!   the number of requests that may be in flight: past it glibc's `sigqueue` fails, and glibc
//!   then reports the request, already performed (a read's bytes gone), as failed with
//!   `EAGAIN`. A lost signal is found by the same rescan as a lost thread.
//! - **`AioNotify::Suspend` (`SIGEV_NONE`), the default.** No notification at all: the loop blocks in
//!   `aio_suspend` on the list of its requests in glibc, and on return asks `aio_error` of each
//!   (glibc takes its global lock for each). `aio_suspend` waits only for requests, so to be
//!   woken by another thread (or by an accept helper) the list also holds a dummy `aio_read`
//!   of 8 bytes from the notifier's eventfd, made blocking: a wake-up's `write` completes it,
//!   and the loop clears the notifier and submits it again ([`WakeRead`]). It holds one glibc
//!   thread for the runtime's life (so a runtime serves one waiting read fewer than
//!   `aio_threads`). The cost is glibc's: `aio_suspend` finds each listed request by walking
//!   its list of requests (one entry per fd, sorted by fd), so one call costs time quadratic in
//!   the connections, whether it sleeps or not; and the loop's scan is linear.
//!
//! The numbers, and why `Suspend` is the default, are in [`AioNotify`]'s docs.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use executor::Notifier;

use crate::backend::io::{AioNotify, Backend, Completion, Config, Facts, Gauges, Io, Request};
use crate::stats;
use crate::sys;
use crate::trace;

/// How often requests still in glibc are checked for a lost notification.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// At most one "out of aio threads" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(1);
/// `Suspend` without its wake read (glibc could not take it): the longest wait, after which the
/// loop looks at the notifier and tries to arm the read again.
const UNARMED_WAIT: Duration = Duration::from_millis(10);
/// Idle glibc helper threads exit after this many seconds.
const GLIBC_IDLE_SECS: u32 = 1;

/// The size of glibc's aio thread pool in this process: set by the first aio driver (glibc
/// ignores later `aio_init` calls once it has started a request).
static GLIBC_THREADS: OnceLock<usize> = OnceLock::new();
/// Requests of this process in glibc right now, across all aio drivers (they share the pool).
static IN_GLIBC: AtomicUsize = AtomicUsize::new(0);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves the data consistent (pushes and takes only).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where finished requests go: a queue, and an eventfd written when it becomes non-empty.
struct Finished {
    queue: Mutex<Vec<Arc<Pending>>>,
    fd: OwnedFd,
}

impl Finished {
    /// Called on glibc's notification thread or on a helper thread.
    fn post(&self, pending: Arc<Pending>) {
        let was_empty = {
            let mut queue = lock(&self.queue);
            let was_empty = queue.is_empty();
            queue.push(pending);
            was_empty
        };
        // The driver empties the queue whole; only the first post since then needs to wake it.
        if was_empty {
            let _ = sys::eventfd_signal(self.fd.as_fd());
        }
    }
}

/// One request in progress, shared by the driver and whoever performs it (glibc or a helper
/// thread), which hands it back through [`Finished::post`].
struct Pending {
    key: usize,
    /// The socket's fd (the driver's key for it; a write may run on a `dup` of it).
    fd: RawFd,
    /// The fd glibc runs it on: `fd`, or for a write possibly its `dup`.
    io_fd: RawFd,
    /// In the write lane (else the read lane).
    write: bool,
    /// Weak: a notification that comes after the driver is gone has nobody to tell.
    finished: std::sync::Weak<Finished>,
    work: Work,
    /// A rescan found it finished without a notification (see the module docs).
    seen_done: AtomicBool,
    /// The thread that reported it (glibc's notification thread, with `AioNotify::Thread`),
    /// when tracing.
    #[cfg(feature = "trace")]
    reported_by: AtomicI32,
}

enum Work {
    /// A glibc request. glibc reads and writes the aiocb while the request is in progress; the
    /// driver touches it only through `aio_error`/`aio_return`/`aio_cancel`.
    Aio { cb: UnsafeCell<libc::aiocb> },
    /// An accept or connect on one of this crate's helper threads.
    Job { request: Request, cancel: OwnedFd, result: AtomicI32 },
}

// SAFETY: the aiocb is shared with glibc the way POSIX prescribes (glibc's threads fill it in
// under glibc's lock; this crate reads it only through glibc's functions). A job's request
// holds pointers into the operation's resources, which outlive the job (the driver frees them
// only after the job is posted back), and only the one helper thread running the job uses them.
unsafe impl Send for Pending {}
// SAFETY: see above; the remaining fields are atomics or immutable.
unsafe impl Sync for Pending {}

impl Pending {
    /// The aiocb, for glibc's functions.
    fn cb(&self) -> Option<*mut libc::aiocb> {
        match &self.work {
            Work::Aio { cb } => Some(cb.get()),
            Work::Job { .. } => None,
        }
    }

    /// The result, once the request is over; `None` while it is not. For a glibc request this
    /// calls `aio_return`, so the driver calls it once per request.
    fn take_result(&self) -> Option<i32> {
        match &self.work {
            // SAFETY: the aiocb was submitted and lives as long as `self`.
            Work::Aio { cb } => unsafe { sys::aio_finish(cb.get()) },
            Work::Job { result, .. } => Some(result.load(Ordering::Acquire)),
        }
    }
}

/// glibc's `SIGEV_THREAD` notification, run on a new thread when a request is over.
extern "C" fn on_aio_complete(value: libc::sigval) {
    // SAFETY: the value is the `Arc<Pending>` leaked into the aiocb at submission; glibc
    // notifies each request once, so this reference is taken back once.
    let pending = unsafe { Arc::from_raw(value.sival_ptr as *const Pending) };
    #[cfg(feature = "trace")]
    if executor::trace::on() {
        // SAFETY: gettid has no arguments.
        pending.reported_by.store(unsafe { libc::gettid() }, Ordering::Relaxed);
    }
    post(pending);
}

/// `AioNotify::Suspend`'s way to be woken by another thread: an `aio_read` of the notifier's
/// eventfd (made blocking), always in glibc and in every `aio_suspend` list. A wake-up from
/// another thread (or an accept helper's post, which writes the same eventfd) makes glibc's
/// thread return from its `read`, which ends `aio_suspend`. The loop then clears the notifier
/// and arms the read again: a `write` and a `read` of the eventfd and a new request, per
/// wake-up from outside; none per I/O completion. It holds one glibc thread for the runtime's
/// life.
struct WakeRead {
    /// The aiocb and the 8 bytes it reads into, boxed so that they stay put while glibc has
    /// them (never freed while the read is in glibc: see `Drop`).
    block: Box<WakeBlock>,
    /// A dup of the notifier's eventfd (the same open file, so the same counter and flags).
    fd: OwnedFd,
    /// The read is in glibc.
    armed: Cell<bool>,
}

struct WakeBlock {
    cb: UnsafeCell<libc::aiocb>,
    counter: UnsafeCell<u64>,
}

impl WakeBlock {
    fn new() -> WakeBlock {
        // SAFETY: aiocb is plain old data; all-zero bytes are its documented initial state.
        WakeBlock { cb: UnsafeCell::new(unsafe { std::mem::zeroed() }), counter: 0.into() }
    }
}

impl WakeRead {
    fn new(notifier: &Notifier) -> io::Result<WakeRead> {
        let fd = sys::dup(notifier.fd().as_raw_fd())?;
        // glibc's thread must block in `read` until another thread writes (a non-blocking
        // eventfd would end the read at once with EAGAIN). Only this backend reads the
        // notifier, and only once it is readable (see `take`).
        sys::set_nonblocking(fd.as_fd(), false)?;
        let block = Box::new(WakeBlock::new());
        let wake = WakeRead { block, fd, armed: Cell::new(false) };
        wake.arm();
        Ok(wake)
    }

    fn cb(&self) -> *mut libc::aiocb {
        self.block.cb.get()
    }

    /// Hands the read to glibc, if it is not there already (a failure leaves it unarmed: the
    /// loop then waits in short steps and tries again).
    fn arm(&self) {
        if self.armed.get() {
            return;
        }
        IN_GLIBC.fetch_add(1, Ordering::AcqRel);
        let cb = sys::aiocb(self.fd.as_raw_fd(), self.block.counter.get().cast(), 8, sys::Notify::Nothing);
        // SAFETY: the read is not in glibc (not armed), so nobody else touches the aiocb.
        unsafe { self.cb().write(cb) };
        // SAFETY: the aiocb and the counter are in the box, which stays put and is not freed
        // while the read is in glibc.
        match unsafe { sys::aio_submit(self.cb(), false) } {
            Ok(()) => self.armed.set(true),
            Err(_) => {
                IN_GLIBC.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Whether the read completed (another thread wrote the eventfd). If so, clears the
    /// notifier and arms the read again.
    fn take(&self, notifier: &Notifier) -> bool {
        // SAFETY: the read is in glibc (armed) and its aiocb alive.
        if !self.armed.get() || !unsafe { sys::aio_done(self.cb()) } {
            return false;
        }
        // SAFETY: as above; the request is over, and its result is read once.
        let _ = unsafe { sys::aio_finish(self.cb()) };
        self.armed.set(false);
        IN_GLIBC.fetch_sub(1, Ordering::AcqRel);
        // The read took the counter; `drain` reads it again to clear the notifier's flag, and
        // the eventfd is blocking now: give it something to read.
        let _ = sys::eventfd_signal(self.fd.as_fd());
        notifier.drain();
        self.arm();
        true
    }
}

impl Drop for WakeRead {
    fn drop(&mut self) {
        if self.armed.get() {
            // End the read (it takes this write), and wait for glibc to be done with the box.
            let _ = sys::eventfd_signal(self.fd.as_fd());
            let list = [self.cb().cast_const()];
            for _ in 0..100 {
                // SAFETY: the read is in glibc and its aiocb alive.
                if unsafe { sys::aio_done(self.cb()) } {
                    break;
                }
                // SAFETY: as above.
                let _ = unsafe { sys::aio_suspend(&list, Some(Duration::from_millis(10))) };
            }
            // SAFETY: as above.
            if unsafe { sys::aio_done(self.cb()) } {
                // SAFETY: the request is over; its result is read once.
                let _ = unsafe { sys::aio_finish(self.cb()) };
                IN_GLIBC.fetch_sub(1, Ordering::AcqRel);
            } else {
                // glibc still has it: never free what it may write into.
                Box::leak(std::mem::replace(&mut self.block, Box::new(WakeBlock::new())));
            }
        }
        // Remote wakers may still write the notifier; leave it as it was made.
        let _ = sys::set_nonblocking(self.fd.as_fd(), true);
    }
}

/// Hands a finished request back to its driver, if the driver still exists.
fn post(pending: Arc<Pending>) {
    if let Some(finished) = pending.finished.upgrade() {
        finished.post(pending);
    }
}

/// Requests of one direction of a socket: the one in progress and the ones waiting for it.
#[derive(Default)]
struct Lane {
    running: Option<Arc<Pending>>,
    waiting: VecDeque<(usize, Request)>,
}

impl Lane {
    fn is_idle(&self) -> bool {
        self.running.is_none() && self.waiting.is_empty()
    }
}

/// The requests of one socket, in two lanes; the `dup` writes go to glibc on once a write ran
/// beside a read; and the fd itself once its owner closed it while requests were still on it.
#[derive(Default)]
struct FdQueue {
    read: Lane,
    write: Lane,
    dup: Option<OwnedFd>,
    close: Option<OwnedFd>,
}

impl FdQueue {
    fn lane(&mut self, write: bool) -> &mut Lane {
        if write {
            &mut self.write
        } else {
            &mut self.read
        }
    }

    fn is_idle(&self) -> bool {
        self.read.is_idle() && self.write.is_idle()
    }

    /// The fd glibc should run a request on: never the one the other lane's request runs on,
    /// so that glibc's per-fd queue does not hold one direction behind the other (a read behind
    /// a write blocked on a full window, say, when the peer writes back before it reads). Writes
    /// go to the `dup` once it exists, reads to the fd itself, each to the other when the other
    /// lane runs there; the `dup` is made the first time both run at once.
    fn io_fd(&mut self, fd: RawFd, write: bool) -> RawFd {
        let busy = self.lane(!write).running.as_ref().map(|other| other.io_fd);
        let dup = self.dup.as_ref().map(|dup| dup.as_raw_fd());
        let preferred = if write { dup.unwrap_or(fd) } else { fd };
        if busy != Some(preferred) {
            return preferred;
        }
        match dup {
            Some(dup) if dup != preferred => dup,
            Some(_) => fd,
            None => {
                // Without a spare fd, it waits behind the other, as glibc alone would do.
                self.dup = sys::dup(fd).ok();
                self.dup.as_ref().map_or(fd, |dup| dup.as_raw_fd())
            }
        }
    }
}

fn is_write(request: &Request) -> bool {
    matches!(request, Request::Send { .. })
}

/// The aio backend. Lives on the runtime's thread.
pub(crate) struct Aio {
    /// How glibc's notifications reach the loop (see the module docs).
    notify: AioNotify,
    finished: Arc<Finished>,
    fds: RefCell<HashMap<RawFd, FdQueue>>,
    /// The fd and lane (write or not) of every operation in flight, by key.
    keys: RefCell<HashMap<usize, (RawFd, bool)>>,
    /// Completions known without waiting (cancelled in the queue, refused), for the next turn.
    ready: RefCell<Vec<(usize, Completion)>>,
    helpers: Arc<Helpers>,
    /// Requests this driver has in glibc.
    in_glibc: Cell<usize>,
    last_scan: Cell<Instant>,
    warned: Cell<Option<Instant>>,
    /// `AioNotify::Signal`: the signalfd the loop reads glibc's signals from.
    signals: Option<OwnedFd>,
    /// `AioNotify::Suspend`: the dummy read of the notifier's eventfd that ends `aio_suspend`
    /// when another thread wakes the loop.
    wake_read: Option<WakeRead>,
    /// `AioNotify::Suspend`: the list `aio_suspend` waits on, kept between turns for its memory.
    suspend_list: RefCell<Vec<*const libc::aiocb>>,
}

impl Aio {
    pub(crate) fn new(config: &Config, notifier: &Notifier) -> io::Result<Aio> {
        GLIBC_THREADS.get_or_init(|| {
            let threads = config.aio_threads.max(1);
            sys::aio_configure(threads, threads, GLIBC_IDLE_SECS);
            threads as usize
        });
        let notify = config.aio_notify;
        let signals = match notify {
            AioNotify::Signal => Some(signal::listen(Aio::thread_limit())?),
            _ => None,
        };
        // With `Suspend` the loop sleeps in `aio_suspend`, which only a request can end: the
        // helpers' posts write the notifier's eventfd (through a dup), which the dummy read
        // waits on, instead of an eventfd of their own.
        let finished_fd = match notify {
            AioNotify::Suspend => sys::dup(notifier.fd().as_raw_fd())?,
            _ => sys::eventfd()?,
        };
        let wake_read = match notify {
            AioNotify::Suspend => Some(WakeRead::new(notifier)?),
            _ => None,
        };
        Ok(Aio {
            notify,
            finished: Arc::new(Finished { queue: Mutex::new(Vec::new()), fd: finished_fd }),
            fds: RefCell::default(),
            keys: RefCell::default(),
            ready: RefCell::default(),
            helpers: Arc::new(Helpers::default()),
            in_glibc: Cell::new(0),
            last_scan: Cell::new(Instant::now()),
            warned: Cell::new(None),
            signals,
            wake_read,
            suspend_list: RefCell::default(),
        })
    }

    /// The size of glibc's aio thread pool in this process.
    fn thread_limit() -> usize {
        GLIBC_THREADS.get().copied().unwrap_or(20)
    }

    /// Requests this driver has in glibc right now.
    fn requests_in_glibc(&self) -> usize {
        self.in_glibc.get()
    }

    /// Helper threads (for accept and connect) alive now.
    fn helper_threads(&self) -> usize {
        lock(&self.helpers.state).threads.len()
    }

    /// Starts the operation `key`: now, or once the requests before it on the same fd are over.
    ///
    /// # Safety
    /// Every pointer in `request` must stay valid until the operation's completion is reported.
    unsafe fn enqueue(&self, key: usize, request: Request) -> io::Result<()> {
        let (fd, write) = (request.fd(), is_write(&request));
        self.keys.borrow_mut().insert(key, (fd, write));
        let mut fds = self.fds.borrow_mut();
        let queue = fds.entry(fd).or_default();
        if queue.lane(write).is_idle() {
            let io_fd = queue.io_fd(fd, write);
            // SAFETY: the caller's guarantee, passed on.
            queue.lane(write).running = unsafe { self.launch(key, request, io_fd) };
        } else {
            queue.lane(write).waiting.push_back((key, request));
        }
        Ok(())
    }

    /// Hands `request` to glibc (to run on `io_fd`) or a helper thread. A request that cannot
    /// start completes with its error at the next turn (and `None` comes back).
    ///
    /// # Safety
    /// As for `start`.
    unsafe fn launch(&self, key: usize, request: Request, io_fd: RawFd) -> Option<Arc<Pending>> {
        let (fd, write) = (request.fd(), is_write(&request));
        let finished = Arc::downgrade(&self.finished);
        let pending = |work| Pending {
            key,
            fd,
            io_fd,
            write,
            finished: finished.clone(),
            work,
            seen_done: false.into(),
            #[cfg(feature = "trace")]
            reported_by: AtomicI32::new(0),
        };
        let (buf, len) = match request {
            Request::Recv { buf, len, .. } => (buf, len),
            Request::Send { buf, len, .. } => (buf.cast_mut(), len),
            Request::Accept { .. } | Request::Connect { .. } => {
                let cancel = match sys::eventfd() {
                    Ok(cancel) => cancel,
                    Err(e) => return self.refuse(key, e.raw_os_error().unwrap_or(libc::ENOMEM)),
                };
                let job = Arc::new(pending(Work::Job { request, cancel, result: AtomicI32::new(0) }));
                stats::bump(|c| &c.aio_helper_jobs);
                stats::trace_step!(trace::Event::HelperJob {
                    accept: matches!(request, Request::Accept { .. }),
                    fd,
                    request: key,
                });
                self.helpers.run(job.clone());
                return Some(job);
            }
            // Not offered here (`Facts`, and no buffer ring).
            Request::AcceptMulti { .. } | Request::RecvMulti { .. } => {
                return self.refuse(key, libc::EOPNOTSUPP)
            }
            Request::RecvPick { .. } => return self.refuse(key, libc::EOPNOTSUPP),
            // POSIX aio has no recvmsg/sendmsg (`aio_read`/`aio_write` carry no address:
            // `Facts::messages` is false); `udp` refuses them with a sentence before they get
            // here.
            Request::RecvMsg { .. }
            | Request::SendMsg { .. }
            | Request::SendTo { .. }
            | Request::RecvMsgMulti { .. } => return self.refuse(key, libc::EOPNOTSUPP),
        };
        // The thread limit: past it glibc would queue the request behind others that may wait
        // forever (reads on idle connections). Refuse, and say why.
        let limit = Aio::thread_limit();
        if IN_GLIBC.fetch_add(1, Ordering::AcqRel) >= limit {
            IN_GLIBC.fetch_sub(1, Ordering::AcqRel);
            self.warn_exhausted(limit);
            stats::bump(|c| &c.aio_refused);
            return self.refuse(key, libc::EAGAIN);
        }
        let notify = self.notify;
        let pending = Arc::new_cyclic(|weak: &std::sync::Weak<Pending>| {
            // The notification's value: a strong reference, made below once the Arc exists.
            let value = weak.as_ptr().cast_mut().cast();
            let how = match notify {
                AioNotify::Thread => sys::Notify::Thread { function: on_aio_complete, value },
                AioNotify::Signal => sys::Notify::Signal { signo: sys::aio_signal(), value },
                AioNotify::Suspend => sys::Notify::Nothing,
            };
            pending(Work::Aio { cb: UnsafeCell::new(sys::aiocb(io_fd, buf, len as usize, how)) })
        });
        // The reference glibc's notification hands back (`on_aio_complete`, or the signal's
        // value); with `Suspend` there is none: the driver's own references keep it alive.
        let for_glibc = (notify != AioNotify::Suspend).then(|| Arc::into_raw(pending.clone()));
        if let (AioNotify::Signal, Some(ptr)) = (notify, for_glibc) {
            signal::expect(ptr);
        }
        let cb = pending.cb().expect("a glibc request");
        // SAFETY: the aiocb is in the Arc's heap block, which stays put and alive until glibc's
        // notification has run (it holds a reference) and the driver has called aio_return; the
        // buffer is the operation's, kept until the completion is reported (the caller's
        // guarantee).
        match unsafe { sys::aio_submit(cb, write) } {
            Ok(()) => {
                self.in_glibc.set(self.in_glibc.get() + 1);
                stats::bump(|c| &c.aio_requests);
                stats::trace_step!(trace::Event::AioSubmitted { write, fd: io_fd, len, request: key });
                Some(pending)
            }
            Err(e) => {
                IN_GLIBC.fetch_sub(1, Ordering::AcqRel);
                if let Some(ptr) = for_glibc {
                    if notify == AioNotify::Signal {
                        signal::forget(ptr);
                    }
                    // SAFETY: glibc did not take the request, so its reference is ours again.
                    drop(unsafe { Arc::from_raw(ptr) });
                }
                self.refuse(key, e.raw_os_error().unwrap_or(libc::EAGAIN))
            }
        }
    }

    fn refuse(&self, key: usize, errno: i32) -> Option<Arc<Pending>> {
        self.ready.borrow_mut().push((key, Completion::error(errno)));
        None
    }

    fn warn_exhausted(&self, limit: usize) {
        let now = Instant::now();
        if self.warned.get().is_none_or(|at| now.duration_since(at) >= WARN_INTERVAL) {
            self.warned.set(Some(now));
            eprintln!(
                "proactor (aio): all {limit} glibc aio threads are taken by requests in progress \
                 (a pending read on an idle connection holds one); refusing new requests with \
                 EAGAIN instead of queueing them behind those; raise Builder::aio_threads"
            );
        }
    }

    /// Cancels the operation `key` (see the module docs). `force` also shuts the socket down
    /// when a helper thread is already blocked on it, for operations nobody would ever reap
    /// otherwise (the runtime is going away).
    ///
    /// Returns whether it shut the socket down (a result of the operation other than bytes
    /// transferred is then the shutdown's doing, not the peer's).
    fn cancel_request(&self, key: usize, force: bool) -> bool {
        let Some(&(fd, write)) = self.keys.borrow().get(&key) else { return false };
        let mut fds = self.fds.borrow_mut();
        let Some(queue) = fds.get_mut(&fd) else { return false };
        let lane = queue.lane(write);
        if let Some(at) = lane.waiting.iter().position(|(k, _)| *k == key) {
            lane.waiting.remove(at);
            self.ready.borrow_mut().push((key, Completion::error(libc::ECANCELED)));
            return false;
        }
        let Some(pending) = lane.running.as_ref().filter(|p| p.key == key) else { return false };
        match &pending.work {
            Work::Aio { cb } => {
                // SAFETY: the request is in glibc and its aiocb alive (held by `pending`); glibc
                // knows it by the fd it runs on (a write's may be the dup).
                let goes_on = unsafe { sys::aio_cancel(pending.io_fd, cb.get()) };
                // Only a request glibc could not cancel needs the socket shut down to end.
                if force && goes_on {
                    sys::shutdown_raw(fd);
                }
                force && goes_on
            }
            Work::Job { cancel, .. } => {
                let _ = sys::eventfd_signal(cancel.as_fd());
                false
            }
        }
    }

    /// Closes `fd` now, or, if requests are still on it, once they are over (after shutting the
    /// socket down, which ends a read or write blocked in a helper thread).
    fn close(&self, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let mut fds = self.fds.borrow_mut();
        match fds.get_mut(&raw) {
            Some(queue) if !queue.is_idle() => {
                let in_glibc = |lane: &Lane| lane.running.as_ref().is_some_and(|p| p.cb().is_some());
                if in_glibc(&queue.read) || in_glibc(&queue.write) {
                    sys::shutdown_raw(raw);
                }
                for (key, _) in queue.read.waiting.drain(..).chain(queue.write.waiting.drain(..)) {
                    self.ready.borrow_mut().push((key, Completion::error(libc::ECANCELED)));
                }
                queue.close = Some(fd);
            }
            _ => {
                let queue = fds.remove(&raw);
                drop(fds);
                if let Some(dup) = queue.and_then(|q| q.dup) {
                    sys::close(dup);
                }
                sys::close(fd);
            }
        }
    }

    /// One turn: wait (unless `timeout` is zero) until a request finishes, the notifier fires
    /// or `timeout` passes, then report every finished request to `complete` and start the
    /// next request of each fd that became free.
    fn wait(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool> {
        let ready = std::mem::take(&mut *self.ready.borrow_mut());
        let timeout = if ready.is_empty() { timeout } else { Some(Duration::ZERO) };
        let (notified, mine) = match self.notify {
            AioNotify::Suspend => self.suspend(timeout, notifier)?,
            AioNotify::Thread | AioNotify::Signal => self.poll(timeout, notifier)?,
        };
        let finished = std::mem::take(&mut *lock(&self.finished.queue));
        stats::batch(ready.len() + finished.len() + mine.len());
        for (key, completion) in ready {
            self.keys.borrow_mut().remove(&key);
            complete(key, completion);
        }
        for pending in finished.iter().chain(&mine) {
            self.finish(pending, complete);
        }
        // (`Suspend` looked at every request already.)
        if self.notify != AioNotify::Suspend && self.last_scan.get().elapsed() >= SCAN_INTERVAL {
            self.last_scan.set(Instant::now());
            self.rescan(complete);
        }
        Ok(notified)
    }

    /// The wait of `Thread` and `Signal`: `poll` the notifier, the eventfd that glibc's
    /// notification threads and the helpers write, and (`Signal`) the signalfd. Returns whether
    /// the notifier fired, and the requests of this driver that signals reported.
    fn poll(&self, timeout: Option<Duration>, notifier: &Notifier) -> io::Result<(bool, Vec<Arc<Pending>>)> {
        let mut timeout = timeout;
        if self.in_glibc.get() > 0 && timeout != Some(Duration::ZERO) {
            timeout = Some(timeout.map_or(SCAN_INTERVAL, |t| t.min(SCAN_INTERVAL)));
        }
        stats::trace_step!(trace::Event::AioPoll {
            wait: match timeout {
                None => trace::AioWait::Forever,
                Some(t) if t.is_zero() => trace::AioWait::No,
                Some(t) if t == SCAN_INTERVAL => trace::AioWait::Rescan,
                Some(t) => trace::AioWait::AtMost(t),
            },
            signals: self.signals.is_some(),
        });
        let mut notified = false;
        // Without a wait there is no syscall, unless signals may be pending: they can only be
        // read from the signalfd.
        let mut signalled = timeout == Some(Duration::ZERO) && self.in_glibc.get() > 0;
        if timeout != Some(Duration::ZERO) {
            // Round up: waking before the timer is due would only make the loop turn again.
            let ms = timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32);
            let done = match &self.signals {
                Some(signals) => {
                    let [remote, done, signal] =
                        sys::poll_readable([notifier.fd(), self.finished.fd.as_fd(), signals.as_fd()], ms)?;
                    (notified, signalled) = (remote, signal);
                    done
                }
                None => {
                    let [remote, done] = sys::poll_readable([notifier.fd(), self.finished.fd.as_fd()], ms)?;
                    notified = remote;
                    done
                }
            };
            if done {
                let _ = sys::eventfd_drain(self.finished.fd.as_fd());
            }
        }
        if notified || notifier.is_pending() {
            notifier.drain();
            notified = true;
        }
        let mine = match (&self.signals, signalled) {
            (Some(signals), true) => signal::take(signals.as_fd(), &self.finished)?,
            _ => Vec::new(),
        };
        Ok((notified, mine))
    }

    /// The wait of `Suspend`: `aio_suspend` on every request this driver has in glibc and on
    /// the dummy read of the notifier's eventfd. Returns whether the notifier fired, and every
    /// request of this driver that glibc has finished.
    fn suspend(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
    ) -> io::Result<(bool, Vec<Arc<Pending>>)> {
        let wake = self.wake_read.as_ref().expect("Suspend has a wake read");
        // Without the dummy read (glibc could not take it), nothing would end a wait early:
        // wait a little at a time, and try to arm it again.
        let mut timeout = if notifier.is_pending() { Some(Duration::ZERO) } else { timeout };
        wake.arm();
        if !wake.armed.get() {
            timeout = Some(timeout.map_or(UNARMED_WAIT, |t| t.min(UNARMED_WAIT)));
        }
        let mut list = self.suspend_list.borrow_mut();
        list.clear();
        if timeout != Some(Duration::ZERO) {
            if wake.armed.get() {
                list.push(wake.cb().cast_const());
            }
            for queue in self.fds.borrow().values() {
                for lane in [&queue.read, &queue.write] {
                    if let Some(cb) = lane.running.as_ref().and_then(|p| p.cb()) {
                        list.push(cb.cast_const());
                    }
                }
            }
        }
        stats::trace_step!(trace::Event::AioSuspend {
            requests: list.len(),
            wait: match timeout {
                None => trace::AioWait::Forever,
                Some(t) if t.is_zero() => trace::AioWait::No,
                Some(t) => trace::AioWait::AtMost(t),
            },
        });
        if !list.is_empty() {
            // SAFETY: every aiocb listed is in glibc and alive: the running requests' are held
            // by their lanes, the wake read's by `self`, and nothing drops them during the call.
            unsafe { sys::aio_suspend(&list, timeout)? };
        } else if timeout != Some(Duration::ZERO) {
            // Nothing to wait on at all (the wake read is not armed): sleep the bounded time.
            std::thread::sleep(timeout.unwrap_or(UNARMED_WAIT));
        }
        list.clear();
        let notified = wake.take(notifier) || notifier.is_pending();
        Ok((notified, self.finished_in_glibc()))
    }

    /// `Suspend`: every request of this driver that glibc has finished (`aio_error` on each:
    /// glibc sends no word of its own).
    fn finished_in_glibc(&self) -> Vec<Arc<Pending>> {
        self.fds
            .borrow()
            .values()
            .flat_map(|q| [q.read.running.as_ref(), q.write.running.as_ref()])
            .flatten()
            // SAFETY: the request is in glibc and its aiocb alive (held by the lane).
            .filter(|p| p.cb().is_some_and(|cb| unsafe { sys::aio_done(cb) }))
            .cloned()
            .collect()
    }

    /// Reports a request glibc or a helper posted back (unless a rescan already did).
    fn finish(&self, pending: &Arc<Pending>, complete: &mut dyn FnMut(usize, Completion)) {
        let current = self
            .fds
            .borrow_mut()
            .get_mut(&pending.fd)
            .and_then(|q| q.lane(pending.write).running.as_ref())
            .is_some_and(|r| Arc::ptr_eq(r, pending));
        if !current {
            return; // reported by a rescan already
        }
        let Some(result) = pending.take_result() else {
            return; // cannot happen (glibc notifies after the result is set); the rescan would take it
        };
        if pending.cb().is_some() {
            stats::bump(|c| &c.aio_notifications);
        }
        #[cfg(feature = "trace")]
        stats::trace_step!(trace::Event::AioDone {
            request: pending.key,
            result,
            by: match (pending.cb(), self.notify) {
                (None, _) => trace::Reporter::Helper,
                (Some(_), AioNotify::Thread) => {
                    trace::Reporter::Glibc { tid: pending.reported_by.load(Ordering::Relaxed) }
                }
                (Some(_), AioNotify::Signal) => trace::Reporter::Signal,
                (Some(_), AioNotify::Suspend) => trace::Reporter::Suspend,
            },
        });
        self.retire(pending, Completion::of(result), complete);
    }

    /// A request is over: report it, and start the next one on its fd (or close the fd).
    fn retire(
        &self,
        pending: &Arc<Pending>,
        completion: Completion,
        complete: &mut dyn FnMut(usize, Completion),
    ) {
        if pending.cb().is_some() {
            self.in_glibc.set(self.in_glibc.get() - 1);
            IN_GLIBC.fetch_sub(1, Ordering::AcqRel);
        }
        self.keys.borrow_mut().remove(&pending.key);
        complete(pending.key, completion);
        let mut fds = self.fds.borrow_mut();
        let Some(queue) = fds.get_mut(&pending.fd) else { return };
        queue.lane(pending.write).running = None;
        while queue.lane(pending.write).running.is_none() {
            match queue.lane(pending.write).waiting.pop_front() {
                Some((key, request)) => {
                    let io_fd = queue.io_fd(pending.fd, pending.write);
                    // SAFETY: the request was queued by `start`, whose caller guaranteed its
                    // pointers until its completion, which has not been reported yet.
                    queue.lane(pending.write).running = unsafe { self.launch(key, request, io_fd) };
                }
                None => break,
            }
        }
        if queue.is_idle() && (queue.close.is_some() || queue.dup.is_none()) {
            // Nothing left on this fd: forget it, closing it (and its dup) if its owner already
            // let go. (A dup is kept, with the entry, until the owner closes the fd.)
            let queue = fds.remove(&pending.fd);
            drop(fds);
            if let Some(queue) = queue {
                queue.close.into_iter().chain(queue.dup).for_each(sys::close);
            }
        }
    }

    /// Takes requests that glibc finished but whose notification never came (glibc drops it
    /// when it cannot create the notification thread): finished at two scans in a row.
    fn rescan(&self, complete: &mut dyn FnMut(usize, Completion)) {
        let lost: Vec<Arc<Pending>> = self
            .fds
            .borrow()
            .values()
            .flat_map(|q| [q.read.running.as_ref(), q.write.running.as_ref()])
            .flatten()
            .filter(|p| match p.cb() {
                Some(cb) => {
                    // SAFETY: the request is in glibc and its aiocb alive (held by `p`).
                    let done = unsafe { sys::aio_done(cb) };
                    done && p.seen_done.swap(true, Ordering::AcqRel)
                }
                None => false,
            })
            .cloned()
            .collect();
        for pending in lost {
            if self.notify == AioNotify::Signal {
                // The signal was lost (its queue was full, or it was forwarded to a thread that
                // had just gone): take back the reference it carried.
                signal::reclaim(&pending);
            }
            if let Some(result) = pending.take_result() {
                self.retire(&pending, Completion::of(result), complete);
            }
        }
    }
}

impl Io for Aio {
    fn facts(&self) -> Facts {
        Facts {
            kind: Backend::PosixAio,
            multishot_accept: false,
            picks_buffers: false,
            messages: false,
            send_to: false,
        }
    }

    unsafe fn start(&self, index: usize, request: &Request) -> io::Result<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe { self.enqueue(index, *request) }
    }

    fn cancel(&self, index: usize, force: bool) -> bool {
        self.cancel_request(index, force)
    }

    fn close_fd(&self, fd: OwnedFd, _now: bool) {
        self.close(fd);
    }

    fn turn(
        &self,
        timeout: Option<Duration>,
        notifier: &Notifier,
        complete: &mut dyn FnMut(usize, Completion),
    ) -> io::Result<bool> {
        self.wait(timeout, notifier, complete)
    }

    fn gauges(&self) -> Gauges {
        Gauges { queue_overflows: 0, threads: Some((self.requests_in_glibc(), self.helper_threads())) }
    }
}

impl Drop for Aio {
    fn drop(&mut self) {
        // The driver has reaped (or given up on) every operation; stop the helper threads.
        self.helpers.shut_down();
        if self.notify == AioNotify::Suspend {
            // glibc holds no reference to a request here (no notification carries one): one
            // still in progress keeps its aiocb, leaked, since glibc will still write into it.
            for queue in self.fds.get_mut().values() {
                for pending in [&queue.read.running, &queue.write.running].into_iter().flatten() {
                    // SAFETY: the request is in glibc and its aiocb alive (held by the lane).
                    if pending.cb().is_some_and(|cb| unsafe { !sys::aio_done(cb) }) {
                        std::mem::forget(pending.clone());
                    }
                }
            }
        }
        // Fds whose close waited for requests that never finished: close them now; a thread
        // still blocked on one holds its own reference to the socket.
        self.fds.get_mut().clear();
        if self.signals.is_some() {
            signal::leave();
        }
        // Requests glibc still runs no longer count against the limit of later runtimes (they
        // end as soon as their sockets, shut down by the driver, let them).
        IN_GLIBC.fetch_sub(self.in_glibc.get(), Ordering::AcqRel);
    }
}

// ----------------------------------------------------------------------------------------------
// the realtime signal of `AioNotify::Signal`

mod signal {
    //! What `AioNotify::Signal` shares across the process: the signal's handler, which runtime
    //! threads listen for it, and which requests' references glibc's signals carry.
    //!
    //! glibc queues the signal to the *process* (`rt_sigqueueinfo`), which the kernel delivers to
    //! any thread that does not block it, or leaves pending while every thread blocks it. Each
    //! signal-mode runtime blocks it in its own thread and reads it from a `signalfd`, which sees
    //! the signals pending for its thread and for the process: so any such runtime may read a
    //! signal meant for another, and posts it to its owner. Two things can go wrong, and are made
    //! safe here:
    //!
    //! - A thread that does not block the signal would have it delivered: by default a realtime
    //!   signal terminates the process. So a handler is installed ([`on_stray`]), which forwards
    //!   the signal to a listening runtime's thread (`rt_tgsigqueueinfo`: queued to that thread,
    //!   where it stays pending for its signalfd) and says once on stderr what to do about it.
    //! - A value read from the signalfd is a pointer only if this crate sent it: [`EXPECTED`]
    //!   holds every reference handed to glibc in a signal, and a value is turned back into a
    //!   reference only if it is taken out of it (so once, and never a stranger's).

    use super::*;

    /// The `Arc<Pending>` references that glibc's signals carry, as addresses.
    static EXPECTED: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
    /// The threads of the runtimes listening (each blocks the signal and reads a signalfd).
    static LISTENERS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
    /// The thread a stray signal is forwarded to (the first listener; 0: none).
    static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
    static STRAY_WARNED: AtomicBool = AtomicBool::new(false);

    /// Sets up the calling (runtime) thread to hear the signal: the process's handler, the
    /// signal blocked here, and a signalfd. `in_flight`: the most requests that may be in
    /// glibc at once, each of which may have a signal queued.
    pub(super) fn listen(in_flight: usize) -> io::Result<OwnedFd> {
        let signo = sys::aio_signal();
        if sys::install_handler(signo, on_stray)? == sys::Disposition::Theirs {
            return Err(io::Error::other(format!(
                "AioNotify::Signal needs the realtime signal {signo} (SIGRTMIN+4), which another handler \
                 in this process owns; use AioNotify::Thread or AioNotify::Suspend"
            )));
        }
        let queue = sys::sigpending_limit();
        if queue < in_flight as u64 {
            // Past it glibc's sigqueue fails, and glibc then reports the request (already
            // performed: a read's bytes are gone) as failed with EAGAIN.
            return Err(io::Error::other(format!(
                "AioNotify::Signal queues a signal per finished request, up to {in_flight} at once \
                 (Builder::aio_threads), but RLIMIT_SIGPENDING (ulimit -i) allows {queue}; raise it, \
                 lower aio_threads, or use AioNotify::Thread"
            )));
        }
        sys::block_signal(signo)?;
        let fd = sys::signalfd(signo)?;
        let mut listeners = lock(&LISTENERS);
        listeners.push(sys::gettid());
        FORWARD_TO.store(listeners[0], Ordering::Release);
        Ok(fd)
    }

    /// The calling thread's runtime is going: stray signals go to another listener, if any.
    /// (The signal stays blocked in this thread: signals of requests it left in glibc may
    /// still come, and another listener reads them.)
    pub(super) fn leave() {
        let tid = sys::gettid();
        let mut listeners = lock(&LISTENERS);
        listeners.retain(|&t| t != tid);
        FORWARD_TO.store(listeners.first().copied().unwrap_or(0), Ordering::Release);
    }

    /// `reference` (an `Arc<Pending>` made raw) is about to go to glibc in a signal.
    pub(super) fn expect(reference: *const Pending) {
        lock(&EXPECTED).insert(reference as usize);
    }

    /// glibc refused the request: its signal will never come.
    pub(super) fn forget(reference: *const Pending) {
        lock(&EXPECTED).remove(&(reference as usize));
    }

    /// A request found finished without its signal: takes back the reference the signal
    /// would have carried, unless its signal came after all.
    pub(super) fn reclaim(pending: &Arc<Pending>) {
        let reference = Arc::as_ptr(pending);
        if lock(&EXPECTED).remove(&(reference as usize)) {
            // SAFETY: it was in EXPECTED, so it is a reference made raw at submission that no
            // signal has given back (whoever removes it takes it back, once).
            drop(unsafe { Arc::from_raw(reference) });
        }
    }

    /// Reads every signal pending on `fd`: returns the requests of the driver whose queue is
    /// `own`, and posts the others' to their drivers.
    pub(super) fn take(fd: BorrowedFd<'_>, own: &Arc<Finished>) -> io::Result<Vec<Arc<Pending>>> {
        let mut values = Vec::new();
        while sys::read_signals(fd, sys::aio_signal(), &mut values)? == 32 {}
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let taken: Vec<Arc<Pending>> = {
            let mut expected = lock(&EXPECTED);
            values
                .into_iter()
                .filter(|value| expected.remove(value))
                // SAFETY: it was in EXPECTED: a reference made raw at submission, given back once.
                .map(|value| unsafe { Arc::from_raw(value as *const Pending) })
                .collect()
        };
        let mut mine = Vec::with_capacity(taken.len());
        for pending in taken {
            if std::sync::Weak::as_ptr(&pending.finished) == Arc::as_ptr(own) {
                mine.push(pending);
            } else {
                post(pending);
            }
        }
        Ok(mine)
    }

    /// The handler: runs only on a thread that does not block the signal. Forwards the signal
    /// to a listening runtime's thread (where it is blocked, so it waits for its signalfd),
    /// and warns once. Async-signal-safe: atomics and two syscalls.
    extern "C" fn on_stray(signo: libc::c_int, info: *mut libc::siginfo_t, _context: *mut libc::c_void) {
        let to = FORWARD_TO.load(Ordering::Acquire);
        // (Not to this thread itself: it does not block the signal, which would come back.
        // A signal not forwarded is found by the rescan, a second or two later.)
        // If the listener has just gone, the signal is lost and the rescan finds the request.
        if to != 0 && to != sys::gettid() {
            // SAFETY: the kernel passes a live siginfo to an SA_SIGINFO handler.
            unsafe { sys::forward_signal(to, signo, info) };
        }
        if !STRAY_WARNED.swap(true, Ordering::AcqRel) {
            sys::write_stderr_raw(
                b"proactor (aio): glibc's notification signal reached a thread that does not block it; \
                  forwarded to the runtime, at the cost of a second delivery each time: block it in every \
                  thread (proactor::AioNotify::block_signal() on the main thread, before starting others)\n",
            );
        }
    }
}

// ----------------------------------------------------------------------------------------------
// helper threads for accept and connect

/// The pool of threads that perform accepts and connects. Threads are created when a job finds
/// none idle, and live until the driver is dropped.
#[derive(Default)]
struct Helpers {
    state: Mutex<HelperState>,
    wake: Condvar,
}

#[derive(Default)]
struct HelperState {
    jobs: VecDeque<Arc<Pending>>,
    idle: usize,
    shutdown: bool,
    threads: Vec<JoinHandle<()>>,
}

impl Helpers {
    fn run(self: &Arc<Self>, job: Arc<Pending>) {
        let mut state = lock(&self.state);
        state.jobs.push_back(job);
        if state.idle > 0 {
            state.idle -= 1;
            self.wake.notify_one();
            return;
        }
        let helpers = self.clone();
        let spawned = std::thread::Builder::new()
            .name("proactor-aio-helper".into())
            .stack_size(64 * 1024)
            .spawn(move || helpers.work());
        match spawned {
            Ok(thread) => state.threads.push(thread),
            Err(e) => {
                // No thread: fail the job (it is still queued, and nobody will take it).
                if let Some(job) = state.jobs.pop_back() {
                    if let Work::Job { result, .. } = &job.work {
                        result.store(-e.raw_os_error().unwrap_or(libc::EAGAIN), Ordering::Release);
                    }
                    drop(state);
                    post(job);
                }
            }
        }
    }

    fn work(&self) {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                drop(state);
                if let Work::Job { request, cancel, result } = &job.work {
                    result.store(perform(request, cancel.as_fd()), Ordering::Release);
                }
                post(job);
                state = lock(&self.state);
                continue;
            }
            if state.shutdown {
                return;
            }
            state.idle += 1;
            state = self.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            // `run` took us off the idle count when it woke us; a spurious wake-up did not.
            if state.jobs.is_empty() && !state.shutdown {
                state.idle = state.idle.saturating_sub(1);
            }
        }
    }

    fn shut_down(&self) {
        let threads = {
            let mut state = lock(&self.state);
            state.shutdown = true;
            self.wake.notify_all();
            std::mem::take(&mut state.threads)
        };
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Performs an accept or connect, blocking this helper thread until it is done or `cancel`
/// fires; returns the result as a CQE would carry it.
fn perform(request: &Request, cancel: BorrowedFd<'_>) -> i32 {
    let errno = |e: io::Error| -e.raw_os_error().unwrap_or(libc::EIO);
    match *request {
        Request::Accept { fd, addr, len } => {
            // Accept without blocking after each wait, so that a connection another acceptor
            // took does not leave this thread stuck in accept4.
            // SAFETY: the listener outlives the operation (its owner closes it through the
            // driver, which waits for this job first).
            if let Err(e) = sys::set_nonblocking(unsafe { BorrowedFd::borrow_raw(fd) }, true) {
                return errno(e);
            }
            loop {
                match sys::poll_or_cancel(fd, libc::POLLIN, cancel) {
                    Ok(true) => return -libc::ECANCELED,
                    Ok(false) => {}
                    Err(e) => return errno(e),
                }
                // SAFETY: `addr` and `len` point into the operation's SockAddr, alive until
                // this job is posted back.
                match unsafe { sys::accept(fd, addr, len) } {
                    Ok(new) => return new.into_raw_fd(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return errno(e),
                }
            }
        }
        Request::Connect { fd, addr, len } => {
            // SAFETY: the socket outlives the operation (see above).
            let socket = unsafe { BorrowedFd::borrow_raw(fd) };
            let result = (|| {
                sys::set_nonblocking(socket, true)?;
                // SAFETY: `addr` points into the operation's SockAddr of `len` bytes.
                match unsafe { sys::connect(fd, addr, len) } {
                    Ok(()) => return Ok(0),
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                if sys::poll_or_cancel(fd, libc::POLLOUT, cancel)? {
                    return Ok(-libc::ECANCELED);
                }
                Ok(sys::take_error(socket)?.map_or(0, |e| -e.raw_os_error().unwrap_or(libc::EIO)))
            })();
            // glibc's threads need the socket blocking again.
            let restored = sys::set_nonblocking(socket, false);
            match (result, restored) {
                (Ok(result), Ok(())) => result,
                (Err(e), _) | (Ok(_), Err(e)) => errno(e),
            }
        }
        _ => -libc::EOPNOTSUPP,
    }
}
