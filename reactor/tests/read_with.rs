//! `TcpStream::read_with`: one readiness check and one read, with the buffer picked by a
//! closure that runs only once the socket is ready.

mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use common::{eventually_async, pair as connected, poll_once, within};
use reactor::net::{ReadyRead, TcpStream};

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

/// Polls `stream.read_with(read_counted(calls))` once, which must find nothing to read (the
/// closure not called), then has `peer` write `bytes`, and awaits the read: what it returns.
async fn read_after_the_first_poll(
    stream: &mut TcpStream,
    peer: &mut std::net::TcpStream,
    bytes: &[u8],
    calls: &Cell<u32>,
) -> Vec<u8> {
    let mut read = std::pin::pin!(stream.read_with(read_counted(calls)));
    assert!(poll_once(read.as_mut()).await.is_pending(), "nothing was sent yet");
    assert_eq!(calls.get(), 0, "the closure ran before the socket was readable");
    peer.write_all(bytes).unwrap();
    read.await.unwrap()
}

#[test]
fn the_closure_runs_only_once_the_socket_is_ready() {
    within(Duration::from_secs(10), || {
        reactor::block_on(async {
            let (mut stream, mut peer) = connected().await;
            let calls = Cell::new(0);
            let got = read_after_the_first_poll(&mut stream, &mut peer, b"late", &calls).await;
            assert_eq!(got, b"late");
            assert_eq!(calls.get(), 1, "the closure ran more than once for one readiness");
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
            eventually_async("all of it arrived", || testkit::unread_bytes(&stream) == 3000).await;
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
            // Readiness was cleared by the EAGAIN: the next closure waits for new bytes.
            let calls = Cell::new(0);
            assert_eq!(read_after_the_first_poll(&mut stream, &mut peer, b"next", &calls).await, b"next");
            assert_eq!(calls.get(), 1);
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
            let before = reactor::stats();
            let calls = Cell::new(0);
            let mut read = std::pin::pin!(stream.read_with(|ready| {
                calls.set(calls.get() + 1);
                // Swallows the error: the runtime must still see that the read got nothing.
                Ok(ready.read(&mut [0; 8]).unwrap_or(0))
            }));
            // The first poll runs the closure on the stale readiness: EAGAIN, so it waits.
            assert!(
                poll_once(read.as_mut()).await.is_pending(),
                "the result of the read that got EAGAIN was returned"
            );
            assert_eq!(calls.get(), 1);
            peer.write_all(b"y").unwrap();
            assert_eq!(read.await.unwrap(), 1);
            assert_eq!(calls.get(), 2);
            assert_eq!(reactor::stats().since(&before).would_block, 1);
        })
    });
}
