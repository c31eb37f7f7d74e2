//! Helpers shared by the proactor's integration tests (the runtime-neutral ones are testkit's).
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use proactor::net::{TcpListener, TcpStream};
use proactor::{Backend, Builder, Runtime};

pub use testkit::{
    blocking_round_trip, eventually, eventually_async, joined, open_fds, poll_once, reset_on_close, skipped,
    within, woken_within, Peers, Rng,
};

/// Each backend by name, with how many connections a test of many connections opens on it
/// (POSIX aio blocks a glibc thread per connection waiting to read).
pub const BACKENDS: [(&str, Backend, usize); 3] =
    [("io_uring", Backend::IoUring, 1000), ("epoll", Backend::Epoll, 1000), ("aio", Backend::PosixAio, 100)];

/// A runtime on `backend`, with default settings.
pub fn runtime(backend: Backend) -> Runtime {
    let runtime = Builder::new().backend(backend).build().unwrap();
    assert_eq!(runtime.backend(), backend);
    runtime
}

/// A connected pair: a stream of the running runtime and the blocking std peer at the other
/// end (whose reads give up after `testkit::PATIENCE`).
pub async fn pair() -> (TcpStream, std::net::TcpStream) {
    testkit::pair(TcpStream::connect).await
}

/// Whether `runtime` has a provided-buffer ring, for a test that needs one. Where io_uring with
/// buffer rings and multishot receive is known to exist (Linux 6.0 and later, io_uring not
/// disabled), a runtime without a ring is a bug and fails the test; elsewhere the test says on
/// stderr that it was skipped.
pub fn has_ring(runtime: &Runtime, test: &str) -> bool {
    if runtime.ring_buffers_available().is_some() {
        return true;
    }
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|setting| setting.trim() != "0");
    let expected = testkit::kernel_at_least(6, 0) && !disabled && runtime.backend() == Backend::IoUring;
    assert!(!expected, "{test}: no provided-buffer ring on io_uring and Linux 6.0 or later");
    skipped(test, format!("no provided-buffer ring here ({:?}, or a kernel before 6.0)", runtime.backend()));
    false
}

/// The echo handler: the same buffer goes to the kernel to be filled, then to be written out.
pub async fn echo(stream: TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let (read, back) = stream.read(buf).await;
        if read? == 0 {
            return stream.shutdown(Shutdown::Write);
        }
        let (written, back) = stream.write_all(back).await;
        written?;
        buf = back;
    }
}

/// Accepts forever, serving each connection with `echo` in its own task.
pub async fn serve(listener: TcpListener) {
    serve_with(listener, echo).await
}

/// Accepts forever, serving each connection with `handler` in its own task.
pub async fn serve_with<F>(listener: TcpListener, handler: fn(TcpStream) -> F)
where
    F: Future<Output = io::Result<()>> + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                proactor::spawn(handler(stream));
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// A server on a thread of its own (see [`spawn_server`]).
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    stop: testkit::RemoteWake,
    thread: thread::JoinHandle<()>,
}

impl Server {
    /// Stops accepting, drops the runtime (and with it every connection), and waits for the
    /// thread to end. (A server never stopped lives until the test process exits.)
    pub fn stop(self) {
        self.stop.fire();
        self.thread.join().unwrap();
    }
}

/// Starts a server on its own thread: the runtime `runtime` makes, a listener on an ephemeral
/// loopback port, and `handler` for each connection.
pub fn spawn_server<F>(
    runtime: impl FnOnce() -> Runtime + Send + 'static,
    handler: fn(TcpStream) -> F,
) -> Server
where
    F: Future<Output = io::Result<()>> + 'static,
{
    let (tx, rx) = mpsc::channel();
    let (stopped, stop) = testkit::remote_wake();
    let thread = thread::spawn(move || {
        runtime().block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let server = proactor::spawn(serve_with(listener, handler));
            stopped.await;
            server.abort();
            let _ = server.await;
        })
    });
    let addr = rx.recv_timeout(testkit::PATIENCE).expect("the server thread did not start");
    Server { addr, stop, thread }
}

/// Starts an echo server (`echo`) on its own thread and a default runtime; returns its address.
pub fn spawn_server_thread() -> SocketAddr {
    spawn_server(|| Runtime::new().unwrap(), echo).addr
}

/// Reads exactly `n` bytes (or fewer at end of stream) with owned buffers.
pub async fn read_exact(stream: &TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(n.max(1));
    while out.len() < n {
        let (read, back) = stream.read(buf).await;
        if read? == 0 {
            break;
        }
        out.extend_from_slice(&back);
        buf = back;
    }
    Ok(out)
}

/// A client task: connects, sends `rounds` random messages, checks each echo.
pub async fn echo_client(addr: SocketAddr, seed: u64, rounds: usize, max_len: usize) -> io::Result<bool> {
    let mut rng = Rng::new(seed);
    let stream = TcpStream::connect(addr).await?;
    for _ in 0..rounds {
        let len = rng.range(1, max_len);
        let msg = rng.bytes(len);
        let (written, msg) = stream.write_all(msg).await;
        written?;
        if read_exact(&stream, msg.len()).await? != msg {
            return Ok(false);
        }
    }
    Ok(true)
}
