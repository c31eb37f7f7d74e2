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
//! disguise"). The README has the numbers.
//!
//! # How this backend uses it
//!
//! - **Ownership.** Each request's `aiocb` lives in a heap block ([`Pending`]) shared, through
//!   an `Arc`, between the driver and glibc's notification; the buffer it names belongs to the
//!   operation (or, once its future is dropped, to the driver's slot). Neither is freed before
//!   the request is over and `aio_return` has been called, exactly once, by the driver. (The
//!   seed's `server_aio.c` keeps its `aiocb` in a loop iteration's stack frame, which dies while
//!   glibc still writes into it: the classic proactor bug.)
//! - **Notification: `SIGEV_THREAD`.** glibc calls [`on_aio_complete`] on a *new thread*
//!   for every completed request; it queues the request for the driver and writes an eventfd
//!   the driver `poll`s, together with the runtime's notifier, with the nearest timer as the
//!   timeout. The alternatives were worse for a library: `SIGEV_SIGNAL` (realtime signal plus
//!   `signalfd`) needs the signal blocked in *every* thread of the process, which a library
//!   cannot ensure, or it kills the process or interrupts foreign threads, and realtime signals
//!   can overflow their queue; `aio_suspend` cannot also wait for the notifier or an fd, and
//!   scans every request on each call. The price of `SIGEV_THREAD` is a thread creation per
//!   completion (glibc's, with the small stack this module asks for), on top of the helper
//!   thread that did the work. If glibc cannot create that thread it drops the notification
//!   silently; the driver therefore rescans requests still in glibc once a second and takes one
//!   found finished twice in a row. One more trap: glibc starts each notification thread with
//!   an *empty* signal mask. A program that blocks SIGTERM in all its threads and `sigwait`s for
//!   it must also install a handler, or a SIGTERM delivered to such a thread terminates the
//!   process (`echo-lab serve` forwards it to its signal thread).
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

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use executor::Notifier;

use crate::backend::io::{Backend, Completion, Config, Facts, Gauges, Io, Request};
use crate::stats;
use crate::sys;
use crate::trace;

/// How often requests still in glibc are checked for a lost notification.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// At most one "out of aio threads" warning per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(1);
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
    /// The thread that reported it (glibc's notification thread, or a helper), when tracing.
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
}

impl Aio {
    pub(crate) fn new(config: &Config) -> io::Result<Aio> {
        GLIBC_THREADS.get_or_init(|| {
            let threads = config.aio_threads.max(1);
            sys::aio_configure(threads, threads, GLIBC_IDLE_SECS);
            threads as usize
        });
        Ok(Aio {
            finished: Arc::new(Finished { queue: Mutex::new(Vec::new()), fd: sys::eventfd()? }),
            fds: RefCell::default(),
            keys: RefCell::default(),
            ready: RefCell::default(),
            helpers: Arc::new(Helpers::default()),
            in_glibc: Cell::new(0),
            last_scan: Cell::new(Instant::now()),
            warned: Cell::new(None),
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
            Request::RecvMsg { .. } | Request::SendMsg { .. } | Request::RecvMsgMulti { .. } => {
                return self.refuse(key, libc::EOPNOTSUPP)
            }
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
        let pending = Arc::new_cyclic(|weak: &std::sync::Weak<Pending>| {
            // The notification's value: a strong reference, made below once the Arc exists.
            let cb = sys::aiocb(io_fd, buf, len as usize, on_aio_complete, weak.as_ptr().cast_mut().cast());
            pending(Work::Aio { cb: UnsafeCell::new(cb) })
        });
        // The reference glibc's notification takes back (`on_aio_complete`).
        let for_glibc = Arc::into_raw(pending.clone());
        debug_assert_eq!(for_glibc, Arc::as_ptr(&pending));
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
                // SAFETY: glibc did not take the request, so its reference is ours again.
                drop(unsafe { Arc::from_raw(for_glibc) });
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
        let mut timeout = if ready.is_empty() { timeout } else { Some(Duration::ZERO) };
        if self.in_glibc.get() > 0 {
            timeout = Some(timeout.map_or(SCAN_INTERVAL, |t| t.min(SCAN_INTERVAL)));
        }
        let mut notified = false;
        stats::trace_step!(trace::Event::AioPoll {
            wait: match timeout {
                None => trace::AioWait::Forever,
                Some(t) if t.is_zero() => trace::AioWait::No,
                Some(t) if t == SCAN_INTERVAL => trace::AioWait::Rescan,
                Some(t) => trace::AioWait::AtMost(t),
            }
        });
        if timeout != Some(Duration::ZERO) {
            // Round up: waking before the timer is due would only make the loop turn again.
            let ms = timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32);
            let [remote, done] = sys::poll_readable([notifier.fd(), self.finished.fd.as_fd()], ms)?;
            notified = remote;
            if done {
                let _ = sys::eventfd_drain(self.finished.fd.as_fd());
            }
        }
        if notified || notifier.is_pending() {
            notifier.drain();
            notified = true;
        }
        let finished = std::mem::take(&mut *lock(&self.finished.queue));
        stats::batch(ready.len() + finished.len());
        for (key, completion) in ready {
            self.keys.borrow_mut().remove(&key);
            complete(key, completion);
        }
        for pending in finished {
            self.finish(&pending, complete);
        }
        if self.last_scan.get().elapsed() >= SCAN_INTERVAL {
            self.last_scan.set(Instant::now());
            self.rescan(complete);
        }
        Ok(notified)
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
            by: match pending.cb() {
                Some(_) => trace::Reporter::Glibc { tid: pending.reported_by.load(Ordering::Relaxed) },
                None => trace::Reporter::Helper,
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
            if let Some(result) = pending.take_result() {
                self.retire(&pending, Completion::of(result), complete);
            }
        }
    }
}

impl Io for Aio {
    fn facts(&self) -> Facts {
        Facts { kind: Backend::PosixAio, multishot_accept: false, picks_buffers: false, messages: false }
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
        // Fds whose close waited for requests that never finished: close them now; a thread
        // still blocked on one holds its own reference to the socket.
        self.fds.get_mut().clear();
        // Requests glibc still runs no longer count against the limit of later runtimes (they
        // end as soon as their sockets, shut down by the driver, let them).
        IN_GLIBC.fetch_sub(self.in_glibc.get(), Ordering::AcqRel);
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
