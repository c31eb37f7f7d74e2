//! Races between operations, sockets and tasks that once lost data, wake-ups or connections.

mod common;

use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use common::{eventually_async, has_ring, pair, reset_on_close, within, woken_within, Peers};
use proactor::net::{TcpListener, TcpStream};
use proactor::time::timeout;

#[test]
fn a_client_that_resets_before_it_is_accepted_is_skipped_not_an_error() {
    for multishot in [true, false] {
        within(Duration::from_secs(10), move || {
            let runtime = proactor::Builder::new().multishot(multishot).build().unwrap();
            runtime.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let doomed = std::net::TcpStream::connect(addr).unwrap();
                reset_on_close(&doomed);
                drop(doomed);
                let good = std::net::TcpStream::connect(addr).unwrap();
                // The reset connection may still be handed over (its reads then fail), or be
                // skipped; either way accept must not fail, and the good client comes next.
                for _ in 0..2 {
                    let (_, peer) =
                        listener.accept().await.unwrap_or_else(|e| panic!("multishot {multishot}: {e}"));
                    if peer == good.local_addr().unwrap() {
                        return;
                    }
                }
                panic!("the good client was not accepted");
            })
        });
    }
}

#[test]
fn two_tasks_accepting_on_one_listener_both_get_connections() {
    for multishot in [true, false] {
        within(Duration::from_secs(10), move || {
            let runtime = proactor::Builder::new().multishot(multishot).build().unwrap();
            runtime.block_on(async {
                let listener = Rc::new(TcpListener::bind("127.0.0.1:0").unwrap());
                let addr = listener.local_addr().unwrap();
                let acceptors: Vec<_> = (0..2)
                    .map(|_| {
                        let listener = listener.clone();
                        proactor::spawn(async move { listener.accept().await.map(drop) })
                    })
                    .collect();
                // Both acceptors are polled (and wait) before any connection comes: each must be
                // woken for one.
                proactor::yield_now().await;
                let _clients = [
                    std::net::TcpStream::connect(addr).unwrap(),
                    std::net::TcpStream::connect(addr).unwrap(),
                ];
                for acceptor in acceptors {
                    let accepted = timeout(Duration::from_secs(2), acceptor).await;
                    accepted.expect("an acceptor was never woken").unwrap().unwrap();
                }
            })
        });
    }
}

#[test]
fn a_remote_wake_up_survives_a_ring_reaped_from_another_runtime() {
    within(Duration::from_secs(10), || {
        let a = proactor::Runtime::new().unwrap();
        let (stream, _peer) = a.block_on(pair());
        let (wait, wake) = testkit::remote_wake();
        let task = a.spawn(wait);
        a.block_on(proactor::yield_now()); // the task is polled: it registers its waker
                                           // A's remote queue and its eventfd.
        std::thread::spawn(move || wake.fire()).join().unwrap();
        // An A operation awaited in runtime B: B cancels and reaps it on A's ring, seeing A's
        // notification on the way. A must still find the task in its remote queue.
        let b = proactor::Runtime::new().unwrap();
        let (read, _) = b.block_on(stream.read(Vec::with_capacity(8)));
        assert!(read.is_err());
        a.block_on(task).unwrap();
    });
}

#[test]
fn a_reader_that_gave_up_waiting_for_a_ring_buffer_does_not_take_the_next_ones_turn() {
    within(Duration::from_secs(10), || {
        // One whole buffer (no incremental consumption, which would let the others share it),
        // and a memory limit that keeps the ring from growing past it.
        let runtime = proactor::Builder::new()
            .provided_buffers(1, 4096)
            .incremental_buffers(false)
            .ring_memory_limit(4096)
            .build()
            .unwrap();
        if !has_ring(&runtime, "a reader that gave up waiting for a buffer") {
            return;
        }
        runtime.block_on(async {
            let peers = Peers::new();
            let (s1, mut p1) = peers.pair(TcpStream::connect).await;
            let (s2, mut p2) = peers.pair(TcpStream::connect).await;
            let (s3, mut p3) = peers.pair(TcpStream::connect).await;
            p1.write_all(b"one").unwrap();
            let held = s1.read_provided().await.unwrap().unwrap(); // the only buffer is out
            p2.write_all(b"two").unwrap();
            p3.write_all(b"three").unwrap();
            // s2's reader gives up while waiting for a buffer.
            assert!(timeout(Duration::from_millis(30), s2.read_provided()).await.is_err());
            let third =
                proactor::spawn(async move { s3.read_provided().await.map(|b| b.map(|b| b.to_vec())) });
            proactor::yield_now().await; // the third reader is polled: it waits for a buffer
            assert!(!third.is_finished());
            drop(held);
            let got = woken_within(Duration::from_secs(10), third)
                .await
                .expect("the waiting reader was never woken");
            assert_eq!(got.unwrap().unwrap().unwrap(), b"three");
            drop(s2);
        })
    });
}

#[test]
fn a_stream_nobody_reads_does_not_keep_the_ring_from_the_others() {
    // A stream whose task stopped reading (blocked elsewhere, say in a send to a peer that
    // does not read) while its peer keeps sending: its receives must not hold the shared ring.
    within(Duration::from_secs(10), || {
        let runtime =
            proactor::Builder::new().provided_buffers(4, 4096).ring_memory_limit(4 * 4096).build().unwrap();
        if !has_ring(&runtime, "a stream nobody reads") {
            return;
        }
        runtime.block_on(async {
            let peers = Peers::new();
            let (s1, mut p1) = peers.pair(TcpStream::connect).await;
            let (s2, mut p2) = peers.pair(TcpStream::connect).await;
            p1.write_all(b"first").unwrap();
            assert_eq!(&*s1.read_provided().await.unwrap().unwrap(), b"first"); // s1's receive is armed
                                                                                // s1 is not read now; its peer sends far more than the whole ring.
            let sent: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
            let before = proactor::stats();
            p1.write_all(&sent).unwrap();
            eventually_async("s1's receive took the ring's buffers, then gave them back", || {
                let now = proactor::stats();
                now.since(&before).recv_spilled > 0
                    && now.ring_buffers.is_some_and(|(free, total)| free == total)
            })
            .await;
            p2.write_all(b"second").unwrap();
            let got = woken_within(Duration::from_secs(10), s2.read_provided())
                .await
                .expect("a stream nobody reads kept every ring buffer: the other stream starved");
            assert_eq!(&*got.unwrap().unwrap(), b"second");
            // Nothing of s1's was lost or reordered on the way.
            let mut received = Vec::new();
            while received.len() < sent.len() {
                received.extend_from_slice(&s1.read_provided().await.unwrap().unwrap());
            }
            assert_eq!(received, sent);
        })
    });
}
