//! Helpers shared by the runtimes' tests. Not part of any runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

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
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
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
