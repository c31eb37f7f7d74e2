//! Helpers shared by the reactor's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use reactor::net::{TcpListener, TcpStream};

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

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

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 16 * 1024]);
}

/// The echo handler of `examples/echo.rs`: waits for readiness, reads into a per-thread scratch
/// buffer, writes back; only unsent bytes get a buffer of their own. Shuts down the write side
/// at end of stream.
pub async fn echo_scratch(mut stream: TcpStream) -> io::Result<()> {
    loop {
        stream.readable().await?;
        let unsent = SCRATCH.with_borrow_mut(|buf| -> io::Result<Option<Vec<u8>>> {
            let n = match stream.try_read(buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(Vec::new())),
                Err(e) => return Err(e),
            };
            let written = match stream.try_write(&buf[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            Ok(Some(buf[written..n].to_vec()))
        })?;
        match unsent {
            None => return stream.shutdown(Shutdown::Write),
            Some(rest) => stream.write_all(&rest).await?,
        }
    }
}

/// The plain echo handler: `read` into an owned buffer, `write_all` it back.
pub async fn echo_plain(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0; 8 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Accepts forever, serving each connection with `echo_scratch` in its own task.
pub async fn serve(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                reactor::spawn(echo_scratch(stream));
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Starts an echo server on its own thread and runtime; returns its address. The thread lives
/// until the test process exits.
pub fn spawn_server_thread() -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        reactor::block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server thread did not start")
}

/// Runs `f` on a new thread and fails the test (instead of hanging it) if it takes longer
/// than `limit`.
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
