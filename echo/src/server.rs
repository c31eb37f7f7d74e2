//! [`handle`](crate::handle) as a TCP server on each runtime, with
//! [`handle_udp`](crate::udp::handle_udp) beside it on the same address if asked.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::IdleTimeout;

/// The runtimes an echo server can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// `reactor`: epoll, readiness.
    Reactor,
    /// `proactor` on io_uring: completion.
    Uring,
    /// `proactor` on POSIX aio (glibc): completion, emulated with helper threads; glibc's
    /// notifications reach the loop as the [`AioNotify`](proactor::AioNotify) says.
    Aio(proactor::AioNotify),
    /// `proactor` on epoll: completion emulated on a readiness loop (the driver performs each
    /// operation when its socket is ready), as Boost.Asio does; also io_uring's fallback.
    ProactorEpoll,
}

impl RuntimeKind {
    /// Every runtime (POSIX aio with each of its notifications), in the order they are
    /// presented.
    pub const ALL: [RuntimeKind; 6] = [
        RuntimeKind::Reactor,
        RuntimeKind::Uring,
        RuntimeKind::Aio(proactor::AioNotify::Thread),
        RuntimeKind::Aio(proactor::AioNotify::Signal),
        RuntimeKind::Aio(proactor::AioNotify::Suspend),
        RuntimeKind::ProactorEpoll,
    ];

    /// POSIX aio with its default notification (`aio` on the command line).
    pub const AIO: RuntimeKind = RuntimeKind::Aio(proactor::AioNotify::Suspend);

    /// The name used on the command line (`aio-thread`, `aio-signal`, `aio-suspend` for aio;
    /// plain `aio` is read as [`RuntimeKind::AIO`]).
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Reactor => "reactor",
            RuntimeKind::Uring => "uring",
            RuntimeKind::Aio(proactor::AioNotify::Thread) => "aio-thread",
            RuntimeKind::Aio(proactor::AioNotify::Signal) => "aio-signal",
            RuntimeKind::Aio(proactor::AioNotify::Suspend) => "aio-suspend",
            RuntimeKind::ProactorEpoll => "proactor-epoll",
        }
    }

    /// Whether this is the POSIX aio backend (with any notification).
    pub fn is_aio(self) -> bool {
        matches!(self, RuntimeKind::Aio(_))
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<RuntimeKind, String> {
        if s == "aio" {
            return Ok(RuntimeKind::AIO);
        }
        RuntimeKind::ALL.into_iter().find(|kind| kind.name() == s).ok_or_else(|| {
            format!(
                "unknown runtime {s:?} (expected one of: reactor, uring, aio, aio-thread, aio-signal, \
                 aio-suspend, proactor-epoll)"
            )
        })
    }
}

/// How [`serve_until`] treats connections.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeOptions {
    /// Most connections open at once, over every server sharing the same [`Stats`]. Past it, a
    /// new connection is accepted and closed at once (its peer reads end of stream).
    pub max_conns: Option<usize>,
    /// A connection that receives nothing for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// After [`Shutdown::trigger`], how long open connections may still run.
    pub grace: Duration,
    /// Print one line of the runtime's own counters (`reactor::stats`, `proactor::stats`) per
    /// second on stderr, as rates; one line per runtime thread.
    pub stats_every: Option<Duration>,
    /// Which handler serves each connection.
    pub handler: Handler,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            max_conns: None,
            idle_timeout: None,
            grace: Duration::from_secs(2),
            stats_every: None,
            handler: Handler::Owned,
        }
    }
}

/// Which echo serves each connection of [`serve_until`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Handler {
    /// [`handle`](crate::handle), on the owned-buffer contract ([`Connection`](crate::Connection)).
    #[default]
    Owned,
    /// The same echo as a handler written against `futures_io::AsyncRead` and `AsyncWrite`
    /// does it (see [`echo_futures_io`]): on the proactor, through the bridge that copies
    /// between the caller's slices and buffers the stream owns. For measuring that copy; not
    /// with [`ServeOptions::idle_timeout`] (an [`IdleTimeout`] wraps a `Connection`).
    FuturesIo,
}

/// The echo written against futures-io's traits, as a handler of the ecosystem does it: read
/// into a buffer of its own (8 KiB, what `futures::io::copy` uses), write all of what came,
/// and close (flush, then shut the write side down) at the end of stream. Written with the
/// traits' poll methods, which is what `AsyncReadExt::read` and `AsyncWriteExt::write_all`
/// come down to.
pub async fn echo_futures_io<S>(mut stream: S) -> io::Result<()>
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        let n = poll_fn(|cx| Pin::new(&mut stream).poll_read(cx, &mut buf)).await?;
        if n == 0 {
            break;
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match poll_fn(|cx| Pin::new(&mut stream).poll_write(cx, rest)).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                written => rest = &rest[written..],
            }
        }
    }
    poll_fn(|cx| Pin::new(&mut stream).poll_close(cx)).await
}

/// Tells servers to stop: from any thread (a signal-handling thread, say), any number of times.
///
/// Servers waiting on it are woken through their runtime's wakers, which may be woken from any
/// thread.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<Event>);

impl Shutdown {
    /// A shutdown not triggered yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Tells every server waiting on this to stop accepting and wind down.
    pub fn trigger(&self) {
        self.0.fire();
    }

    /// Whether [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.0.count() > 0
    }

    fn poll_triggered(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_beyond(0, cx).map(|_| ())
    }
}

/// Something that happens from any thread, any number of times, and wakes the tasks waiting
/// for it (through their runtime's wakers, which may be woken from any thread).
#[derive(Debug, Default)]
struct Event {
    count: AtomicU64,
    wakers: Mutex<Vec<Waker>>,
}

impl Event {
    fn fire(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|p| p.into_inner()));
        wakers.into_iter().for_each(Waker::wake);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Ready with the count once it is past `seen`.
    fn poll_beyond(&self, seen: u64, cx: &mut Context<'_>) -> Poll<u64> {
        if self.count() > seen {
            return Poll::Ready(self.count());
        }
        let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        // Checked again under the lock: a `fire` in between has either seen this waker or
        // counted first.
        match self.count() {
            now if now > seen => Poll::Ready(now),
            _ => Poll::Pending,
        }
    }
}

/// Counters shared by the servers of one process (one per thread).
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicUsize,
    refused: AtomicU64,
    idle_closed: AtomicU64,
    dropped: AtomicU64,
    /// Inside a `--max-conns` episode: the limit was hit and no connection has closed since.
    refusing: AtomicBool,
    idle_logged: Mutex<Option<Instant>>,
    /// Requests for a line of each runtime's counters (see [`Stats::request_counters`]).
    snapshots: Event,
}

/// At most one line per this long about idle connections.
const IDLE_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Stats {
    /// Asks every runtime serving with these stats to print one line of its own counters on
    /// stderr, at once (from any thread): `counters [THREAD] syscalls=N` followed by every
    /// counter. `echo-lab serve` does this on SIGUSR1.
    pub fn request_counters(&self) {
        self.snapshots.fire();
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections closed at once because `max_conns` were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Connections closed for receiving nothing for `idle_timeout`.
    pub fn idle_closed(&self) -> u64 {
        self.idle_closed.load(Ordering::SeqCst)
    }

    /// Connections still open at the end of the grace period, and dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }

    fn note_idle(&self, timeout: Duration) {
        let n = self.idle_closed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut logged = self.idle_logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if logged.is_none_or(|at| now.duration_since(at) >= IDLE_LOG_INTERVAL) {
            *logged = Some(now);
            eprintln!(
                "echo: {n} idle connection{} closed so far (nothing received for {} s)",
                if n == 1 { "" } else { "s" },
                timeout.as_secs_f64()
            );
        }
    }
}

/// The connections of one server (one runtime, one thread).
#[derive(Default)]
struct Local {
    open: Cell<usize>,
    drained: RefCell<Option<Waker>>,
}

impl Local {
    /// Completes when no connection of this server is open.
    async fn drained(&self) {
        poll_fn(|cx| {
            if self.open.get() == 0 {
                Poll::Ready(())
            } else {
                *self.drained.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// One open connection, counted in [`Stats`] and [`Local`] while it lives.
struct Admitted {
    stats: Arc<Stats>,
    local: Rc<Local>,
    max_conns: Option<usize>,
}

impl Admitted {
    /// Counts a new connection in, or `None` (counting it as refused) if `max_conns` are open.
    fn admit(stats: &Arc<Stats>, local: &Rc<Local>, max_conns: Option<usize>) -> Option<Admitted> {
        let before = stats.open.fetch_add(1, Ordering::SeqCst);
        if let Some(max) = max_conns.filter(|&max| before >= max) {
            stats.open.fetch_sub(1, Ordering::SeqCst);
            stats.refused.fetch_add(1, Ordering::SeqCst);
            if !stats.refusing.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "echo: --max-conns {max} reached: closing new connections at once until one \
                     closes"
                );
            }
            return None;
        }
        local.open.set(local.open.get() + 1);
        Some(Admitted { stats: stats.clone(), local: local.clone(), max_conns })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let before = self.stats.open.fetch_sub(1, Ordering::SeqCst);
        if self.max_conns.is_some_and(|max| before <= max) {
            self.stats.refusing.store(false, Ordering::SeqCst);
        }
        let open = self.local.open.get() - 1;
        self.local.open.set(open);
        if open == 0 {
            if let Some(waker) = self.local.drained.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// Runs `handle` for every connection `listener` accepts, on `kind`, on this thread, until
/// the runtime cannot start. Connection errors end only their connection.
pub fn serve(kind: RuntimeKind, listener: std::net::TcpListener) -> io::Result<()> {
    serve_until(kind, listener, None, &ServeOptions::default(), &Shutdown::new(), &Arc::default(), || {})
}

/// The accept loop, the echo loop and the graceful stop of [`serve_until`], for the runtime
/// whose crate is `$rt` (the two runtimes have the same API but no common trait).
macro_rules! serve_on {
    ($rt:ident, $runtime:expr, $kind:expr, $listener:expr, $udp:expr, $opts:expr, $shutdown:expr, $stats:expr, $started:expr) => {{
        let (kind, opts, shutdown, stats): (RuntimeKind, &ServeOptions, &Shutdown, &Arc<Stats>) =
            ($kind, $opts, $shutdown, $stats);
        let (listener, udp): (_, Option<std::net::UdpSocket>) = ($listener, $udp);
        let started = $started;
        $runtime.block_on(async move {
            let listener = $rt::net::TcpListener::from_std(listener)?;
            // UDP echo on the same address: one task, one socket, every peer.
            if let Some(udp) = udp {
                let socket = $rt::net::UdpSocket::from_std(udp)?;
                $rt::spawn(async move {
                    if let Err(e) = crate::udp::handle_udp(socket).await {
                        eprintln!("echo ({kind}): udp: {e}");
                    }
                });
            }
            started();
            let local = Rc::new(Local::default());
            {
                let stats = stats.clone();
                let name = std::thread::current().name().unwrap_or("main").to_string();
                $rt::spawn(async move {
                    // From 0, not the current generation: a request made before this task's
                    // first poll (just after the listening line) is still answered.
                    let mut seen = 0;
                    loop {
                        seen = poll_fn(|cx| stats.snapshots.poll_beyond(seen, cx)).await;
                        let now = $rt::stats();
                        eprintln!("counters [{name}] syscalls={} {now:?}", now.syscalls());
                    }
                });
            }
            if let Some(every) = opts.stats_every {
                let name = std::thread::current().name().unwrap_or("main").to_string();
                $rt::spawn(async move {
                    let mut last = ($rt::stats(), Instant::now());
                    loop {
                        $rt::time::sleep(every).await;
                        let now = ($rt::stats(), Instant::now());
                        let secs = now.1.duration_since(last.1).as_secs_f64();
                        eprintln!("stats [{name}] {}", now.0.since(&last.0).rates_line(secs));
                        last = now;
                    }
                });
            }
            loop {
                let accepted = {
                    let mut accept = pin!(listener.accept());
                    poll_fn(|cx| match shutdown.poll_triggered(cx) {
                        Poll::Ready(()) => Poll::Ready(None),
                        Poll::Pending => accept.as_mut().poll(cx).map(Some),
                    })
                    .await
                };
                let mut stream = match accepted {
                    None => break,
                    Some(Ok((stream, _))) => stream,
                    Some(Err(e)) => {
                        eprintln!("echo ({kind}): accept: {e}");
                        continue;
                    }
                };
                // Refused: dropping the stream closes it at once.
                let Some(admitted) = Admitted::admit(stats, &local, opts.max_conns) else { continue };
                let _ = stream.set_nodelay(true);
                // The one echo handler; an idle timeout only changes what `recv` sees. Separate
                // spawns, not one task with a `match`: each task is then only as large as its own
                // future (an idle connection's memory is mostly its task).
                match (opts.handler, opts.idle_timeout) {
                    // (`&mut stream`: the task then keeps the stream once; an `async fn`'s
                    // argument is held twice in its future, see `crate::handle`.)
                    (Handler::FuturesIo, _) => {
                        $rt::spawn(async move {
                            report(echo_futures_io(&mut stream).await);
                            drop(admitted);
                        });
                    }
                    // (`&mut stream`: the task then keeps the stream once, not also in the handler's
                    // future; see `Connection for &mut C`.)
                    (Handler::Owned, None) => {
                        $rt::spawn(async move {
                            report(crate::handle(&mut stream).await);
                            drop(admitted);
                        });
                    }
                    (Handler::Owned, Some(limit)) => {
                        let stats = admitted.stats.clone();
                        let mut conn =
                            IdleTimeout::new(stream, limit).on_idle(move || stats.note_idle(limit));
                        $rt::spawn(async move {
                            report(crate::handle(&mut conn).await);
                            drop(admitted);
                        });
                    }
                }
            }
            // Stop accepting at once: close the listener, then give the connections the grace.
            drop(listener);
            let _ = $rt::time::timeout(opts.grace, local.drained()).await;
            stats.dropped.fetch_add(local.open.get() as u64, Ordering::SeqCst);
            Ok(())
            // Dropping the runtime drops (and closes) the connections still open.
        })
    }};
}

/// Serves `listener` (and `udp`, if given, with [`handle_udp`](crate::udp::handle_udp)) on a
/// new runtime of `kind` on this thread until `shutdown` is triggered: then closes the
/// listener, waits up to `opts.grace` for open connections to end, and returns (dropping the
/// connections still open, and the UDP socket). Calls `started` once the runtime and the
/// sockets are ready; returns the error otherwise.
pub fn serve_until(
    kind: RuntimeKind,
    listener: std::net::TcpListener,
    udp: Option<std::net::UdpSocket>,
    opts: &ServeOptions,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
    started: impl FnOnce(),
) -> io::Result<()> {
    if opts.handler == Handler::FuturesIo && opts.idle_timeout.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an idle timeout needs the owned-buffer handler (IdleTimeout wraps a Connection)",
        ));
    }
    match kind {
        RuntimeKind::Reactor => {
            let runtime = reactor::Runtime::new()?;
            serve_on!(reactor, runtime, kind, listener, udp, opts, shutdown, stats, started)
        }
        RuntimeKind::Uring | RuntimeKind::Aio(_) | RuntimeKind::ProactorEpoll => {
            let runtime = proactor_runtime(kind)?;
            serve_on!(proactor, runtime, kind, listener, udp, opts, shutdown, stats, started)
        }
    }
}

/// A proactor runtime on the backend `kind` names (io_uring exactly: a server asked to run on
/// io_uring fails where it is unavailable instead of measuring something else). The reactor
/// is not a proactor backend: it gets io_uring's.
pub fn proactor_runtime(kind: RuntimeKind) -> io::Result<proactor::Runtime> {
    match kind {
        RuntimeKind::Aio(notify) => {
            proactor::Builder::new().backend(proactor::Backend::PosixAio).aio_notify(notify).build()
        }
        RuntimeKind::ProactorEpoll => proactor::Builder::new().backend(proactor::Backend::Epoll).build(),
        RuntimeKind::Reactor | RuntimeKind::Uring => {
            proactor::Builder::new().backend(proactor::Backend::IoUring).build()
        }
    }
}

/// A proactor runtime on the POSIX aio backend, with its default notification.
pub fn aio_runtime() -> io::Result<proactor::Runtime> {
    proactor_runtime(RuntimeKind::AIO)
}

fn report(result: io::Result<()>) {
    if let Err(e) = result {
        // A peer that resets or goes away is the peer's business, not worth a line.
        if !matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) {
            eprintln!("echo: connection: {e}");
        }
    }
}

/// Binds `addr` and serves it with `kind` on a new thread; returns the bound address once the
/// runtime is up (or the error that kept it from starting).
pub fn spawn(kind: RuntimeKind, addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    crate::models::sys::set_backlog(&listener, crate::models::sys::BACKLOG)?;
    let local = listener.local_addr()?;
    let (started, start) = mpsc::channel();
    std::thread::Builder::new().name(format!("echo-{kind}")).spawn(move || {
        // Report start-up (io_uring missing, say) to the caller; later errors end the thread.
        let result = serve_checked(kind, listener, started);
        if let Err(e) = result {
            eprintln!("echo ({kind}): {e}");
        }
    })?;
    start.recv().unwrap_or_else(|_| Err(io::Error::other("the server thread died")))?;
    Ok(local)
}

fn serve_checked(
    kind: RuntimeKind,
    listener: std::net::TcpListener,
    started: mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    // Probe the runtime first so the caller hears about a runtime that cannot start.
    if kind != RuntimeKind::Reactor {
        let probe = proactor_runtime(kind);
        if let Err(e) = probe {
            let _ = started.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Ok(());
        }
    }
    let _ = started.send(Ok(()));
    serve(kind, listener)
}

/// Why the aio backend serves no UDP (see `proactor::net::UdpSocket`).
pub const UDP_ON_AIO: &str =
    "POSIX aio has no recvfrom or sendto (aio_read and aio_write carry no address), so the aio backend serves no UDP";

/// Binds UDP `addr` and serves it with [`handle_udp`](crate::udp::handle_udp) on `kind` on a
/// new thread, for as long as the process lives; returns the bound address once the runtime
/// is up (or the error that kept it from starting).
pub fn spawn_udp(kind: RuntimeKind, addr: SocketAddr) -> io::Result<SocketAddr> {
    if kind.is_aio() {
        return Err(io::Error::new(io::ErrorKind::Unsupported, UDP_ON_AIO));
    }
    let socket = std::net::UdpSocket::bind(addr)?;
    let local = socket.local_addr()?;
    let (started, start) = mpsc::channel();
    std::thread::Builder::new().name(format!("echo-udp-{kind}")).spawn(move || {
        let served = match kind {
            RuntimeKind::Reactor => reactor::Runtime::new().and_then(|rt| {
                rt.block_on(async {
                    let socket = reactor::net::UdpSocket::from_std(socket)?;
                    let _ = started.send(Ok(()));
                    crate::udp::handle_udp(socket).await
                })
            }),
            _ => proactor_runtime(kind).and_then(|rt| {
                rt.block_on(async {
                    let socket = proactor::net::UdpSocket::from_std(socket)?;
                    let _ = started.send(Ok(()));
                    crate::udp::handle_udp(socket).await
                })
            }),
        };
        if let Err(e) = served {
            eprintln!("echo ({kind}): udp: {e}");
            let _ = started.send(Err(e));
        }
    })?;
    start.recv().unwrap_or_else(|_| Err(io::Error::other("the server thread died")))?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_aio_is_the_proactors_default_notification_and_every_name_reads_back() {
        assert_eq!("aio".parse::<RuntimeKind>(), Ok(RuntimeKind::Aio(proactor::AioNotify::default())));
        assert_eq!(RuntimeKind::AIO, RuntimeKind::Aio(proactor::AioNotify::default()));
        for kind in RuntimeKind::ALL {
            assert_eq!(kind.name().parse::<RuntimeKind>(), Ok(kind));
        }
    }
}
