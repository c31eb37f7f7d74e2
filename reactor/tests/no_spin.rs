//! Waiting costs no CPU: situations that used to make the loop spin instead of sleeping in
//! `epoll_wait`. Each test counts the loop's turns while it waits: a loop that sleeps turns once
//! or twice in half a second (the timer that ends the wait), one that spins thousands of times,
//! however loaded the machine.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use common::within;
use futures::stream::{FuturesUnordered, StreamExt};
use reactor::net::{TcpListener, TcpStream};
use reactor::time::{sleep, timeout};

/// Lets the runtime wait for half a second and returns how many times its loop turned
/// meanwhile (a sleeping loop: once or twice, and a few more for late TCP acknowledgements;
/// a spinning one: thousands, even on a loaded machine).
async fn turns_while_waiting() -> u64 {
    let before = reactor::stats().turns;
    sleep(Duration::from_millis(500)).await;
    reactor::stats().turns - before
}

#[test]
fn two_tasks_accepting_on_one_listener_sleep_and_both_get_connections() {
    within(Duration::from_secs(20), || {
        reactor::block_on(async {
            let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
            let addr = listener.local_addr().unwrap();
            let acceptors: Vec<_> = (0..2)
                .map(|_| {
                    let listener = listener.clone();
                    reactor::spawn(async move { listener.accept().await.map(|_| ()) })
                })
                .collect();
            let spent = turns_while_waiting().await;
            assert!(spent <= 20, "two idle acceptors turned the loop {spent} times in 0.5 s");
            let _a = TcpStream::connect(addr).await.unwrap();
            let _b = TcpStream::connect(addr).await.unwrap();
            for acceptor in acceptors {
                timeout(Duration::from_secs(5), acceptor)
                    .await
                    .expect("both acceptors are woken")
                    .unwrap()
                    .unwrap();
            }
        })
    });
}

#[test]
fn split_halves_waiting_under_separate_wakers_sleep() {
    within(Duration::from_secs(20), || {
        reactor::block_on(async {
            let peer_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut stream = TcpStream::connect(peer_listener.local_addr().unwrap()).await.unwrap();
            let (peer, _) = peer_listener.accept().unwrap(); // never reads, never writes
            let (mut reader, mut writer) = TcpStream::split(&mut stream);
            let big = vec![0u8; 64 << 20];
            let mut buf = [0u8; 16];
            // Each sub-future of FuturesUnordered gets its own waker: the read waits for data,
            // the write for room in the send buffer (the peer never reads).
            let mut both = FuturesUnordered::new();
            type Half<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + 'a>>;
            both.push(Box::pin(async { reader.read(&mut buf).await.map(drop) }) as Half<'_>);
            both.push(Box::pin(async { writer.write_all(&big).await }));
            let waiting = async {
                let _ = both.next().await;
                unreachable!("neither half can finish");
            };
            let spent = futures::select_biased! {
                spent = futures::FutureExt::fuse(turns_while_waiting()) => spent,
                () = futures::FutureExt::fuse(waiting) => unreachable!(),
            };
            assert!(spent <= 20, "two waiting halves turned the loop {spent} times in 0.5 s");
            drop(peer);
        })
    });
}

#[test]
fn a_socket_with_a_nonempty_error_queue_sleeps() {
    // Transmit timestamps land in the socket's error queue, which raises EPOLLERR without being
    // consumed by reads or writes. Treating that as permanent readiness spins.
    within(Duration::from_secs(20), || {
        reactor::block_on(async {
            let peer_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut stream = TcpStream::connect(peer_listener.local_addr().unwrap()).await.unwrap();
            let (mut peer, _) = peer_listener.accept().unwrap();
            enable_tx_timestamps(stream.as_raw_fd());
            stream.write_all(b"timestamp me").await.unwrap();
            let mut got = [0u8; 12];
            peer.read_exact(&mut got).unwrap();
            let mut buf = [0u8; 16];
            let spent = futures::select_biased! {
                spent = futures::FutureExt::fuse(turns_while_waiting()) => spent,
                _ = futures::FutureExt::fuse(stream.read(&mut buf)) => unreachable!("the peer sent nothing"),
            };
            assert!(
                spent <= 20,
                "a read waiting on a socket with queued timestamps turned the loop {spent} times in 0.5 s"
            );
        })
    });
}

fn enable_tx_timestamps(fd: i32) {
    let flags: libc::c_int =
        (libc::SOF_TIMESTAMPING_TX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE) as libc::c_int;
    // SAFETY: passes a pointer to a live c_int and its size; `fd` is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (&flags as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TIMESTAMPING: {}", std::io::Error::last_os_error());
}
