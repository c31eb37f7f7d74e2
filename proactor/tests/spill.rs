//! A receive that nobody reads, on a ring at its memory limit: its completions give their ring
//! buffers back at once, their bytes copied out ("spilled"); past the connection's allowance
//! (`Builder::connection_budget`, 64 KiB by default) the receive is stopped, so that the peer
//! waits (TCP's flow control) instead of the runtime holding more;
//! and when the ring runs dry (ENOBUFS) every unread receive is swept the same way. When the
//! task reads again, it gets every byte, in order: the spilled ones first, then the rest from
//! a receive armed again.
//!
//! The ring's state decides which path runs, so each test sets it up exactly: whole buffers
//! (no incremental consumption), a memory limit equal to the first chunk (the ring cannot
//! grow), and a known number of buffers held by the test.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{eventually_async, has_ring, pair, within};
use proactor::net::TcpStream;
use proactor::{Builder, Runtime};

/// The most bytes a receive nobody reads may take: the connection's allowance (the default of
/// `Builder::connection_budget`, which these runtimes keep).
const ALLOWANCE: usize = 64 * 1024;

/// A ring of `count` whole buffers of `size` bytes that cannot grow.
fn ring_at_its_limit(count: u16, size: u32) -> Runtime {
    Builder::new()
        .provided_buffers(count, size)
        .incremental_buffers(false)
        .ring_memory_limit(usize::from(count) * size as usize)
        .build()
        .unwrap()
}

/// The chunks the first test sends: one ring buffer each. Larger than `ALLOWANCE` divided by
/// the queue's bound (16 completions), so that the allowance, not the bound, stops the
/// receive.
const CHUNK: usize = 8 * 1024;

/// Chunk `i` of a stream: `CHUNK` bytes that say where they belong.
fn chunk(i: usize) -> Vec<u8> {
    (0..CHUNK).map(|j| (i * 7 + j) as u8 ^ (i >> 8) as u8).collect()
}

/// Reads from `stream` with `read_provided` until `expected.len()` bytes came; checks them.
async fn read_all(stream: &TcpStream, expected: &[u8]) {
    let mut got = Vec::with_capacity(expected.len());
    while got.len() < expected.len() {
        got.extend_from_slice(&stream.read_provided().await.unwrap().expect("more data"));
    }
    assert!(got == expected, "{} bytes read back, not the {} sent in order", got.len(), expected.len());
}

#[test]
fn a_receive_nobody_reads_spills_up_to_its_limit_then_stops_and_the_rest_comes_in_order_later() {
    within(Duration::from_secs(60), || {
        let runtime = ring_at_its_limit(16, CHUNK as u32);
        if !has_ring(&runtime, "spill up to the limit") {
            return;
        }
        runtime.block_on(async {
            // Another stream holds 15 of the 16 buffers: one is left, so the ring is scarce (at
            // its limit, with less than an eighth free) but never dry.
            let (holder, mut holder_peer) = pair().await;
            let mut held = Vec::new();
            for i in 0..15u8 {
                holder_peer.write_all(&[i; 100]).unwrap();
                held.push(holder.read_provided().await.unwrap().expect("a message"));
            }
            assert_eq!(proactor::stats().ring_buffers, Some((1, 16)));

            // The stream under test arms its receive (a first read), then its task reads no more.
            let (stream, mut peer) = pair().await;
            peer.write_all(b"first").unwrap();
            assert_eq!(&*stream.read_provided().await.unwrap().unwrap(), b"first");
            let start = proactor::stats();
            // One chunk at a time, each received (and spilled) before the next is sent, until
            // one stays in the kernel: the receive was stopped. (io_uring receives during the
            // loop's wait for completions: ten turns without a spill are ten chances missed.)
            let mut sent = Vec::new();
            loop {
                assert!(sent.len() < 100, "{} chunks sent and the receive was never stopped", sent.len());
                peer.write_all(&chunk(sent.len())).unwrap();
                sent.push(chunk(sent.len()));
                // The chunk is in the stream's socket (acknowledged) before the turns count.
                eventually_async("the chunk arrived", || testkit::unacknowledged_bytes(&peer) == 0).await;
                let (spilled, turns) = (proactor::stats().recv_spilled, proactor::stats().turns);
                eventually_async("the chunk spilled, or ten turns passed", || {
                    let now = proactor::stats();
                    now.recv_spilled > spilled || now.turns >= turns + 10
                })
                .await;
                if proactor::stats().recv_spilled == spilled {
                    assert_eq!(testkit::unread_bytes(&stream), CHUNK, "the last chunk waits in the kernel");
                    break;
                }
                assert_eq!(proactor::stats().ring_buffers, Some((1, 16)), "a spilled chunk kept its buffer");
            }
            let used = proactor::stats().since(&start);
            // Stopped at the limit: the cancel goes out with the next turn, and the chunk that
            // came meanwhile may still be taken.
            let limit = (ALLOWANCE / CHUNK) as u64;
            assert!(
                (limit..=limit + 1).contains(&used.recv_spilled),
                "stopped after {} chunks: {used:?}",
                sent.len() - 1
            );
            assert_eq!(used.recv_bytes, used.recv_spilled * CHUNK as u64, "{used:?}");
            // More comes meanwhile; it waits in the kernel.
            for _ in 0..20 {
                peer.write_all(&chunk(sent.len())).unwrap();
                sent.push(chunk(sent.len()));
            }
            assert_eq!(proactor::stats().since(&start).recv_bytes, used.recv_bytes, "received past the stop");
            // The task reads again: the spilled bytes first, then a new receive brings the rest,
            // every byte in order.
            read_all(&stream, &sent.concat()).await;
            let used = proactor::stats().since(&start);
            assert!(used.recv_rearms >= 1, "the stopped receive was not armed again: {used:?}");
            drop(held);
        });
    });
}

#[test]
fn when_the_ring_runs_dry_every_receive_nobody_reads_gives_its_buffers_back() {
    within(Duration::from_secs(60), || {
        let runtime = ring_at_its_limit(8, 4096);
        if !has_ring(&runtime, "the sweep on ENOBUFS") {
            return;
        }
        runtime.block_on(async {
            // Two streams with their receives armed; the test's task then reads neither.
            let (unread, mut unread_peer) = pair().await;
            let (other, mut other_peer) = pair().await;
            for (stream, peer) in [(&unread, &mut unread_peer), (&other, &mut other_peer)] {
                peer.write_all(b"armed").unwrap();
                assert_eq!(&*stream.read_provided().await.unwrap().unwrap(), b"armed");
            }
            let start = proactor::stats();
            // 64 KiB at once: the receive takes all 8 buffers (queued for a task that does not
            // read), then finds none (ENOBUFS). The driver then copies every unread receive's
            // bytes out and gives the buffers back.
            let sent: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
            unread_peer.write_all(&sent).unwrap();
            eventually_async("the ring ran dry and every buffer came back", || {
                let now = proactor::stats();
                now.since(&start).recv_enobufs > 0 && now.ring_buffers == Some((8, 8))
            })
            .await;
            let used = proactor::stats().since(&start);
            assert!(used.recv_spilled >= 8, "the queued receives were not copied out: {used:?}");
            // The other stream is served from the ring meanwhile.
            other_peer.write_all(b"second").unwrap();
            assert_eq!(&*other.read_provided().await.unwrap().unwrap(), b"second");
            // And the unread stream loses nothing: the copies, then the rest from the kernel.
            read_all(&unread, &sent).await;
            assert!(proactor::stats().since(&start).recv_rearms >= 1);
        });
    });
}
