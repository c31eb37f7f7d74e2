//! The baseline users would pick: tokio's `current_thread` runtime and its idiomatic echo loop
//! (`serve --runtime tokio`).

use std::io;
use std::net::{TcpListener, UdpSocket};

/// The baseline: the idiomatic tokio echo loop (read into a 4 KiB buffer, `write_all`) on a
/// `current_thread` runtime (`rt`), on this thread; and for UDP, `recv_from` into a 64 KiB
/// buffer and `send_to` back.
pub fn serve(rt: &tokio::runtime::Runtime, listener: TcpListener, udp: Option<UdpSocket>) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    listener.set_nonblocking(true)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        if let Some(udp) = udp {
            udp.set_nonblocking(true)?;
            let socket = tokio::net::UdpSocket::from_std(udp)?;
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                loop {
                    // Errors about one peer (ECONNREFUSED from an ICMP error, ...) are skipped.
                    if let Ok((n, from)) = socket.recv_from(&mut buf).await {
                        let _ = socket.send_to(&buf[..n], from).await;
                    }
                }
            });
        }
        loop {
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                // EMFILE, say: keep serving the connections we have instead of exiting.
                Err(e) => {
                    eprintln!("echo (tokio): accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if sock.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
