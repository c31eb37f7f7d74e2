//! Helpers shared by the proactor's integration tests.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use proactor::net::{TcpListener, TcpStream};

pub use testkit::{blocking_round_trip, open_fds, within, Rng};

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
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                proactor::spawn(echo(stream));
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Starts an echo server on its own thread and runtime; returns its address.
pub fn spawn_server_thread() -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        proactor::block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server thread did not start")
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

/// Makes closing `stream` send a RST (SO_LINGER with a zero timeout).
pub fn reset_on_close(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
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
    assert_eq!(rc, 0);
}
