//! Helpers shared by the runtimes' tests. Not part of any runtime.
//!
//! Waiting: a test never sleeps for a fixed time and then asserts; it waits for the condition
//! itself, with a bound far above what the condition takes on a loaded machine
//! ([`eventually`], [`eventually_async`], [`joined`]), so that the bound is reached only when
//! the condition will never hold, and the failure names what did not happen.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::mpsc;
use std::task::Poll;
use std::thread;
use std::time::{Duration, Instant};

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is replaced by 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Runs `f` on a new thread and fails the test (instead of hanging it) if it takes longer
/// than `limit`. A panic in `f` is re-raised.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        // The closure panicked before sending: re-raise its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within {limit:?}: hung?"),
    }
}

/// Sends `data` through a blocking std client in random-sized writes (from a second thread),
/// shuts down its write side, and returns everything read back until end of stream.
pub fn blocking_round_trip(addr: SocketAddr, data: Vec<u8>, seed: u64) -> Vec<u8> {
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = rng.range(1, 64 * 1024).min(rest.len());
            writer.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    let mut reader = stream;
    reader.read_to_end(&mut echoed).expect("reading the echo");
    sender.join().unwrap();
    echoed
}

/// How long [`eventually`] and its siblings wait for a condition before they fail the test:
/// far above anything a condition of these tests takes on a loaded two-core machine, so that
/// only a condition that will never hold reaches it.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The pauses between two looks at a condition: 1 ms, doubling to 16 ms.
fn pauses() -> impl Iterator<Item = Duration> {
    (0..).map(|i: u32| Duration::from_millis(1 << i.min(4)))
}

/// Waits (blocking this thread) until `condition` holds; fails the test, naming `what` did not
/// happen, if it has not within [`PATIENCE`]. Not inside a runtime: its loop would not turn
/// (use [`eventually_async`] there).
#[track_caller]
pub fn eventually(what: impl Display, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    for pause in pauses() {
        if condition() {
            return;
        }
        assert!(Instant::now() < deadline, "never happened within {PATIENCE:?}: {what}");
        thread::sleep(pause);
    }
}

/// [`eventually`] inside a runtime (either: the timers are the shared executor's): sleeps on the
/// runtime's timer between looks, so that the loop turns and the runtime does its work.
pub async fn eventually_async(what: impl Display, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    for pause in pauses() {
        if condition() {
            return;
        }
        assert!(Instant::now() < deadline, "never happened within {PATIENCE:?}: {what}");
        executor::time::sleep(pause).await;
    }
}

/// Joins `thread` from inside a runtime without blocking its loop (the thread may be a client
/// of a server this loop runs): waits, bounded by [`PATIENCE`], until it has finished.
pub async fn joined<T>(thread: thread::JoinHandle<T>) -> T {
    eventually_async("the thread finished", || thread.is_finished()).await;
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Polls `future` once (inside a runtime, with the task's waker): `Ready` with its output, or
/// `Pending` after it has registered for a wake-up (an operation submitted, say).
pub async fn poll_once<F: Future + ?Sized>(mut future: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

/// `future`'s output if it is *woken* with it within `limit`, `None` otherwise. The limit's
/// timer is polled first: a future polled once more when the limit fires could find its
/// result then and hide a wake-up that never came.
pub async fn woken_within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut limit = std::pin::pin!(executor::time::sleep(limit));
    std::future::poll_fn(|cx| match limit.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(None),
        Poll::Pending => future.as_mut().poll(cx).map(Some),
    })
    .await
}

/// A loopback listener whose accepted ends are the peers of the streams a runtime connects to it
/// ([`pair`](Self::pair)).
#[derive(Debug)]
pub struct Peers(std::net::TcpListener);

impl Default for Peers {
    fn default() -> Self {
        Peers::new()
    }
}

impl Peers {
    /// A listener on an ephemeral loopback port.
    pub fn new() -> Peers {
        Peers(std::net::TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.0.local_addr().unwrap()
    }

    /// A connected pair: the stream `connect` makes (a runtime's `TcpStream::connect`), and the
    /// blocking std peer at the other end, whose reads give up after [`PATIENCE`].
    pub async fn pair<S, F>(&self, connect: impl FnOnce(SocketAddr) -> F) -> (S, std::net::TcpStream)
    where
        F: Future<Output = io::Result<S>>,
    {
        let stream = connect(self.addr()).await.expect("connecting to the peer listener");
        // The connection is in the backlog already: this accept does not block.
        let (peer, _) = self.0.accept().unwrap();
        peer.set_read_timeout(Some(PATIENCE)).unwrap();
        (stream, peer)
    }
}

/// [`Peers::pair`] on a listener of its own.
pub async fn pair<S, F>(connect: impl FnOnce(SocketAddr) -> F) -> (S, std::net::TcpStream)
where
    F: Future<Output = io::Result<S>>,
{
    Peers::new().pair(connect).await
}

/// Makes closing `stream` send a reset (RST) instead of an orderly FIN: `SO_LINGER` with a zero
/// timeout.
pub fn reset_on_close(stream: &impl std::os::fd::AsRawFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: passes a pointer to a live linger struct and its size; the fd is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER): {}", io::Error::last_os_error());
}

/// How many bytes wait unread in the socket's receive queue (`FIONREAD`).
pub fn unread_bytes(socket: &impl std::os::fd::AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, to a live local.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "ioctl(FIONREAD): {}", io::Error::last_os_error());
    n as usize
}

/// Shrinks a socket's send and receive buffers to about `bytes` each (see [`send_buffer`]).
pub fn small_buffers(socket: &impl std::os::fd::AsRawFd, bytes: i32) {
    send_buffer(socket, bytes);
    receive_buffer(socket, bytes);
}

/// Sets a socket's send buffer to about `bytes` (the kernel doubles the value it is given, and
/// has a floor), and so turns its automatic growth off: a sender whose peer does not read then
/// stalls after some kilobytes instead of megabytes.
pub fn send_buffer(socket: &impl std::os::fd::AsRawFd, bytes: i32) {
    set_int_option(socket, libc::SO_SNDBUF, bytes);
}

/// Sets a socket's receive buffer to about `bytes` (see [`send_buffer`]): the window it offers
/// its peer stops growing.
pub fn receive_buffer(socket: &impl std::os::fd::AsRawFd, bytes: i32) {
    set_int_option(socket, libc::SO_RCVBUF, bytes);
}

fn set_int_option(socket: &impl std::os::fd::AsRawFd, option: libc::c_int, value: libc::c_int) {
    // SAFETY: passes a pointer to a live c_int and its size; the fd is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt({option}): {}", io::Error::last_os_error());
}

/// The TCP state of a socket (`TCP_INFO`'s `tcpi_state`): [`TCP_CLOSE`] once a reset came in,
/// for instance. Reading it changes nothing (unlike `SO_ERROR`, which clears the error).
pub fn tcp_state(socket: &impl std::os::fd::AsRawFd) -> u8 {
    // SAFETY: tcp_info is plain old data; all-zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live struct and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(TCP_INFO): {}", io::Error::last_os_error());
    info.tcpi_state
}

/// `tcpi_state` of a closed connection (see [`tcp_state`]).
pub const TCP_CLOSE: u8 = 7;

/// Whether fd number `fd` is open in this process.
pub fn fd_open(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; an unused number gives EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Opens `/dev/null` on every free fd number below `fd`, and returns those files: while they
/// are kept, the lowest free number is above `fd`, so that once `fd` is closed the next fd this
/// process opens gets `fd`'s number. (Only meaningful while no other thread opens fds.)
pub fn fill_fd_holes_below(fd: std::os::fd::RawFd) -> Vec<std::fs::File> {
    use std::os::fd::AsRawFd;
    let mut holes = Vec::new();
    loop {
        let file = std::fs::File::open("/dev/null").unwrap();
        if file.as_raw_fd() > fd {
            return holes; // `file` closes: its number is above `fd`
        }
        holes.push(file);
    }
}

/// How many bytes sent on the socket its peer has not acknowledged yet (`SIOCOUTQ`): 0 once
/// everything sent is in the peer's receive queue (or read).
pub fn unacknowledged_bytes(socket: &impl std::os::fd::AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int through the pointer, to a live local.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "ioctl(SIOCOUTQ): {}", io::Error::last_os_error());
    n as usize
}

/// Blocking clients of an echo server that go round by round: in each, every connection sends
/// one 64-byte message naming the round and itself, then every echo is read back and checked.
/// Each connection has one message in flight at a time, all of them at once.
#[derive(Debug)]
pub struct Rounds {
    conns: Vec<std::net::TcpStream>,
}

impl Rounds {
    /// `n` connections to `addr`.
    pub fn connect(addr: SocketAddr, n: usize) -> Rounds {
        let conns = (0..n)
            .map(|_| {
                let conn = std::net::TcpStream::connect(addr).unwrap();
                conn.set_read_timeout(Some(PATIENCE)).unwrap();
                conn
            })
            .collect();
        Rounds { conns }
    }

    /// One round (numbered `round`, below 100).
    pub fn round(&mut self, round: usize) {
        let message = |round: usize, i: usize| {
            let mut message = format!("{round:02} message {i:05}").into_bytes();
            message.resize(64, b'.');
            message
        };
        for (i, conn) in self.conns.iter_mut().enumerate() {
            conn.write_all(&message(round, i)).unwrap();
        }
        for (i, conn) in self.conns.iter_mut().enumerate() {
            let mut back = [0u8; 64];
            conn.read_exact(&mut back).unwrap();
            assert_eq!(back[..], message(round, i)[..], "round {round}, connection {i}: not its echo");
        }
    }
}

/// The ids of this process's threads now.
pub fn thread_ids() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Says on stderr that a test (or a part of one) did not run here, and why: a test that finds
/// nothing to test must not pass in silence.
pub fn skipped(what: impl Display, why: impl Display) {
    eprintln!("skipped: {what}: {why}");
}

/// Whether the running kernel is at least `major.minor` (from `uname -r`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers =
        release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    let running = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    running >= (major, minor)
}

/// How many fds this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// utime + stime of process `pid`, in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A future that completes once another thread calls [`RemoteWake::fire`]: the way to test
/// that a waker woken from another thread reaches a runtime.
#[derive(Debug)]
pub struct WaitForRemote {
    shared: std::sync::Arc<RemoteShared>,
}

/// The other thread's side of a [`WaitForRemote`].
#[derive(Debug, Clone)]
pub struct RemoteWake {
    shared: std::sync::Arc<RemoteShared>,
}

#[derive(Debug, Default)]
struct RemoteShared {
    fired: std::sync::atomic::AtomicBool,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

/// A future and the handle that completes it from another thread.
pub fn remote_wake() -> (WaitForRemote, RemoteWake) {
    let shared = std::sync::Arc::new(RemoteShared::default());
    (WaitForRemote { shared: shared.clone() }, RemoteWake { shared })
}

impl RemoteWake {
    /// Marks the future ready and wakes it: waits (however slow the machine) until the future
    /// has been polled and registered its waker, then wakes it from this thread.
    pub fn fire(&self) {
        self.shared.fired.store(true, std::sync::atomic::Ordering::Release);
        loop {
            if let Some(waker) = self.shared.waker.lock().unwrap().take() {
                return waker.wake();
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl std::future::Future for WaitForRemote {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        *self.shared.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.shared.fired.load(std::sync::atomic::Ordering::Acquire) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Runs `$body` in the process's first thread before `main`, from the executable's
/// `.init_array`: for what must hold in every thread of a test binary (a signal blocked, as
/// `proactor::AioNotify::Signal` asks), since every thread libtest starts descends from that
/// one and inherits its signal mask. The body runs before Rust's `main`: plain libc calls only.
#[macro_export]
macro_rules! before_main {
    ($body:block) => {
        #[used]
        #[link_section = ".init_array"]
        static BEFORE_MAIN: extern "C" fn() = {
            extern "C" fn before_main() $body
            before_main
        };
    };
}
