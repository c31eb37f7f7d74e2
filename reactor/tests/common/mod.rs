//! Helpers shared by the reactor's integration tests.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

use std::cell::RefCell;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use reactor::net::{TcpListener, TcpStream};

pub use testkit::{
    blocking_round_trip, eventually, eventually_async, joined, open_fds, poll_once, within, Rng,
};

/// A connected pair: a stream of the running runtime and the blocking std peer at the other
/// end (whose reads give up after `testkit::PATIENCE`).
pub async fn pair() -> (TcpStream, std::net::TcpStream) {
    testkit::pair(TcpStream::connect).await
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
