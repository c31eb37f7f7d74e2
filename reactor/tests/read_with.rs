//! `TcpStream::read_with`: one readiness check and one read, with the buffer picked by a
//! closure that runs only once the socket is ready.

mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use common::within;
use reactor::net::{ReadyRead, TcpStream};

/// A reactor stream connected to a blocking std peer.
async fn connected() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

/// Writes `bytes` to `peer` from another thread after a pause, so that the reader waits first.
fn write_later(
    mut peer: std::net::TcpStream,
    bytes: &'static [u8],
) -> std::thread::JoinHandle<std::net::TcpStream> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        peer.write_all(bytes).unwrap();
        peer
    })
}

/// One read into a fresh buffer, counting the calls in `calls`.
fn read_counted(calls: &Cell<u32>) -> impl FnMut(&mut ReadyRead<'_>) -> io::Result<Vec<u8>> + '_ {
    move |ready| {
        calls.set(calls.get() + 1);
        let mut buf = vec![0; 64];
        let n = ready.read(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

#[test]
fn the_closure_runs_only_once_the_socket_is_ready() {
    within(Duration::from_secs(10), || {
        reactor::block_on(async {
            let (mut stream, peer) = connected().await;
            let writer = write_later(peer, b"late");
            let calls = Cell::new(0);
            let got = stream.read_with(read_counted(&calls)).await.unwrap();
            assert_eq!(got, b"late");
            assert_eq!(calls.get(), 1, "the closure ran before the socket was readable");
            writer.join().unwrap();
        })
    });
}

#[test]
fn a_closure_that_reads_until_would_block_keeps_what_it_read_and_the_next_one_waits() {
    within(Duration::from_secs(10), || {
        reactor::block_on(async {
            let (mut stream, mut peer) = connected().await;
            peer.write_all(&[7; 3000]).unwrap();
            stream.readable().await.unwrap();
            reactor::time::sleep(Duration::from_millis(20)).await; // all of it arrives
            let before = reactor::stats();
            let drained = stream
                .read_with(|ready| {
                    let (mut all, mut buf) = (Vec::new(), [0; 1000]);
                    loop {
                        match ready.read(&mut buf) {
                            Ok(0) => return Ok(all),
                            Ok(n) => all.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(all),
                            Err(e) => return Err(e),
                        }
                    }
                })
                .await
                .unwrap();
            // Three full reads, then EAGAIN: the bytes are kept, and readiness is cleared.
            assert_eq!(drained, [7; 3000]);
            assert_eq!(reactor::stats().since(&before).would_block, 1);
            let writer = write_later(peer, b"next");
            let calls = Cell::new(0);
            assert_eq!(stream.read_with(read_counted(&calls)).await.unwrap(), b"next");
            assert_eq!(calls.get(), 1, "readiness was not cleared by the EAGAIN: the closure ran early");
            writer.join().unwrap();
        })
    });
}

#[test]
fn on_stale_readiness_what_the_closure_returned_is_dropped_and_it_runs_again_at_the_next_event() {
    within(Duration::from_secs(10), || {
        reactor::block_on(async {
            let (mut stream, mut peer) = connected().await;
            peer.write_all(b"x").unwrap();
            stream.readable().await.unwrap();
            // The byte is taken through a second descriptor of the same socket: the readiness
            // the stream holds is now stale.
            let mut thief = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned().unwrap());
            assert_eq!(thief.read(&mut [0; 8]).unwrap(), 1);
            let writer = write_later(peer, b"y");
            let before = reactor::stats();
            let calls = Cell::new(0);
            let n = stream
                .read_with(|ready| {
                    calls.set(calls.get() + 1);
                    // Swallows the error: the runtime must still see that the read got nothing.
                    Ok(ready.read(&mut [0; 8]).unwrap_or(0))
                })
                .await
                .unwrap();
            assert_eq!(n, 1, "the result of the read that got EAGAIN was returned");
            assert_eq!(calls.get(), 2);
            assert_eq!(reactor::stats().since(&before).would_block, 1);
            writer.join().unwrap();
        })
    });
}
