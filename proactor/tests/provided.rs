//! Receiving into the provided-buffer ring: byte-exact echo, a ring too small for the load
//! (ENOBUFS), every buffer coming back, and the ring growing with the load and shrinking back
//! when it falls.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{blocking_round_trip, eventually_async, has_ring, joined, pair, within, Rng};
use proactor::net::{TcpListener, TcpStream};

/// The echo of `examples/echo.rs`: receive into ring buffers, write them straight back.
async fn echo_provided(stream: TcpStream) -> std::io::Result<()> {
    loop {
        let Some(received) = stream.read_provided().await? else { break };
        stream.write_all(received).await.0?;
    }
    stream.shutdown(std::net::Shutdown::Write)
}

/// Starts a server on its own thread with a ring of exactly `count` buffers of `size` bytes
/// (whole buffers, and a memory limit that keeps the ring from growing).
fn server(count: u16, size: u32) -> std::net::SocketAddr {
    let runtime = move || {
        proactor::Builder::new()
            .provided_buffers(count, size)
            .incremental_buffers(false)
            .ring_memory_limit(usize::from(count) * size as usize)
            .build()
            .unwrap()
    };
    common::spawn_server(runtime, echo_provided).addr
}

#[test]
fn sixteen_mib_through_ring_buffers_comes_back_byte_exact() {
    let addr = server(128, 4096);
    let data = Rng::new(61).bytes(16 << 20);
    let expected = data.clone();
    let echoed = within(Duration::from_secs(60), move || blocking_round_trip(addr, data, 5));
    assert!(echoed == expected, "echoed {} bytes, sent {}", echoed.len(), expected.len());
}

#[test]
fn a_ring_too_small_for_the_load_pauses_receiving_and_loses_nothing() {
    // Two 1 KiB buffers for twenty connections sending 200 kB each: receives keep running out
    // of buffers (ENOBUFS) and must resume once one is written back.
    let addr = server(2, 1024);
    let clients: Vec<_> = (0..20u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = Rng::new(i + 1).bytes(200_000);
                let echoed = blocking_round_trip(addr, data.clone(), i);
                echoed == data
            })
        })
        .collect();
    within(Duration::from_secs(60), move || {
        for client in clients {
            assert!(client.join().unwrap(), "a connection's echo differs");
        }
    });
}

#[test]
fn every_ring_buffer_comes_back_when_connections_close_with_data_unread() {
    within(Duration::from_secs(30), || {
        let runtime = proactor::Builder::new().provided_buffers(8, 1024).build().unwrap();
        if !has_ring(&runtime, "ring buffers of closed connections") {
            return;
        }
        let full = runtime.ring_buffers_available().unwrap();
        assert_eq!(full, 8);
        runtime.block_on(async {
            for round in 0..10 {
                let (stream, mut peer) = pair().await;
                // Data arrives into ring buffers; the stream reads one and then goes away with
                // the rest still queued in its receive (or on its way into it).
                peer.write_all(&[round; 5000]).unwrap();
                let first = stream.read_provided().await.unwrap().expect("data");
                assert!(first.iter().all(|&b| b == round));
                drop(first);
                drop(stream);
                drop(peer);
            }
            eventually_async("every ring buffer back", || {
                proactor::stats().ring_buffers == Some((full, full))
            })
            .await;
            eventually_async("nothing in flight", || proactor::stats().in_flight == 0).await;
        });
    });
}

#[test]
fn end_of_stream_is_none_and_stays_none() {
    within(Duration::from_secs(10), || {
        proactor::block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(b"last words").unwrap();
            drop(peer);
            let mut got = Vec::new();
            while let Some(buf) = stream.read_provided().await.unwrap() {
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, b"last words");
            assert!(stream.read_provided().await.unwrap().is_none());
        })
    });
}

/// Echoes `len` bytes through a server on this thread's runtime `runtime` (the client runs on
/// another thread), and returns the server's counters for the echo.
fn echo_on(runtime: proactor::Runtime, len: usize, seed: u64) -> proactor::Stats {
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data = Rng::new(seed).bytes(len);
        let expected = data.clone();
        let client = std::thread::spawn(move || blocking_round_trip(addr, data, seed));
        let before = proactor::stats();
        let (stream, _) = listener.accept().await.unwrap();
        echo_provided(stream).await.unwrap();
        let used = proactor::stats().since(&before);
        let echoed = client.join().unwrap();
        assert!(echoed == expected, "echoed {} bytes, sent {}", echoed.len(), expected.len());
        used
    })
}

#[test]
fn large_messages_arrive_in_large_pieces() {
    // With incremental consumption (the default where the kernel has it) a 16 KiB buffer
    // takes a large message in a few pieces; whole 4 KiB buffers would need one receive
    // completion per 4 KiB at least.
    if !testkit::kernel_at_least(6, 12) {
        common::skipped("large messages in large pieces", "incremental consumption needs Linux 6.12");
        return;
    }
    within(Duration::from_secs(60), || {
        for len in [1 << 20, 16 << 20] {
            let runtime = proactor::Runtime::new().unwrap();
            if !has_ring(&runtime, "large messages in large pieces") {
                return;
            }
            let used = echo_on(runtime, len, 7);
            assert_eq!(used.recv_bytes, len as u64);
            assert!(
                used.recvs * 8192 <= len as u64 + 8192,
                "{len} bytes took {} receive completions ({} bytes each)",
                used.recvs,
                used.recv_bytes / used.recvs.max(1)
            );
        }
    });
}

#[test]
fn without_incremental_buffers_large_messages_still_come_back_byte_exact() {
    within(Duration::from_secs(60), || {
        let runtime = proactor::Builder::new().incremental_buffers(false).build().unwrap();
        let used = echo_on(runtime, 1 << 20, 8);
        assert_eq!(used.recv_bytes, 1 << 20);
        // Whole 4 KiB buffers: at least one completion per 4 KiB.
        assert!(used.recvs >= 256, "{used:?}");
    });
}

#[test]
fn a_thousand_connections_keep_their_receives_armed_in_the_first_chunk_of_incremental_buffers() {
    // A thousand connections, each with a 64-byte message in flight, ten times over, on the
    // default ring: with incremental consumption many messages share a 16 KiB buffer, so the
    // first chunk (128 buffers) holds them all. No receive ends with ENOBUFS and none is
    // re-armed, the ring does not grow, and each echo costs one SQE (its send) beyond each
    // connection's one receive and its close.
    const CONNS: usize = 1000;
    const ROUNDS: usize = 10;
    if !testkit::kernel_at_least(6, 12) {
        common::skipped(
            "a thousand connections in the first chunk",
            "incremental consumption needs Linux 6.12",
        );
        return;
    }
    within(Duration::from_secs(60), || {
        let runtime = proactor::Runtime::new().unwrap();
        if !has_ring(&runtime, "a thousand connections in the first chunk") {
            return;
        }
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let clients = std::thread::spawn(move || {
                let mut rounds = testkit::Rounds::connect(addr, CONNS);
                (0..ROUNDS).for_each(|round| rounds.round(round));
            });
            let before = proactor::stats();
            for _ in 0..CONNS {
                let (stream, _) = listener.accept().await.unwrap();
                proactor::spawn(echo_provided(stream));
            }
            joined(clients).await;
            let used = proactor::stats().since(&before);
            let echoes = (CONNS * ROUNDS) as u64;
            assert_eq!(used.sends, echoes, "{used:?}");
            assert_eq!(used.recv_enobufs, 0, "receives ran out of ring buffers: {used:?}");
            assert_eq!(used.recv_rearms, 0, "receives were re-armed: {used:?}");
            assert_eq!(used.ring_grown, 0, "the ring grew: {used:?}");
            // Each echo's send, each connection's receive and close (those of the clients
            // that already hung up: the close SQE and the one emptying the socket's entry in
            // the registered-file table), and the accept re-armed after every 64 connections:
            // no re-arm storm.
            assert!(
                used.sqes <= echoes + 3 * CONNS as u64 + 100,
                "{} SQEs for {echoes} echoes on {CONNS} connections",
                used.sqes
            );
        });
    });
}

/// The echo of `echo_provided`, except that each received buffer is kept until the next one
/// comes (its copy is echoed): every connection holds a ring buffer between its messages.
async fn echo_holding(stream: TcpStream) -> std::io::Result<()> {
    let mut _held = None;
    while let Some(received) = stream.read_provided().await? {
        stream.write_all(received.to_vec()).await.0?;
        _held = Some(received);
    }
    stream.shutdown(std::net::Shutdown::Write)
}

#[test]
fn a_thousand_connections_each_holding_a_ring_buffer_grow_the_ring_and_light_load_shrinks_it_back() {
    // Whole 4 KiB buffers, 128 at first: a thousand connections, each holding the buffer of its
    // last message, need a thousand at once, so the ring must grow (by 128 at a time). Then the
    // connections close, every buffer comes home, and one connection's light traffic cycles the
    // buffers through the ring: the newest chunk's buffers are retired as they come back, and
    // each chunk is freed once all of its buffers are home, until an idle server holds only its
    // first chunk again.
    const CONNS: usize = 1000;
    within(Duration::from_secs(120), || {
        let runtime =
            proactor::Builder::new().provided_buffers(128, 4096).incremental_buffers(false).build().unwrap();
        if !has_ring(&runtime, "the ring grows and shrinks back") {
            return;
        }
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = proactor::spawn(common::serve_with(listener, echo_holding));
            let before = proactor::stats();
            let clients = std::thread::spawn(move || {
                let mut rounds = testkit::Rounds::connect(addr, CONNS);
                (0..3).for_each(|round| rounds.round(round));
            });
            joined(clients).await;
            let grown = proactor::stats().since(&before).ring_grown;
            let (_, total) = proactor::stats().ring_buffers.unwrap();
            assert!(grown >= 7 && total as usize >= CONNS, "grew {grown} times, to {total} buffers");
            // The connections are gone: every buffer comes home.
            eventually_async("every ring buffer home", || {
                let (free, total) = proactor::stats().ring_buffers.unwrap();
                free == total
            })
            .await;
            // Light load: one message at a time on one connection (a client of this runtime,
            // whose reads bring their own buffers), until the ring is back to its first chunk.
            let shrinking = proactor::stats();
            let client = TcpStream::connect(addr).await.unwrap();
            let mut messages = 0u32;
            while proactor::stats().ring_buffers.unwrap().1 > 128 {
                assert!(messages < 50_000, "{messages} messages and the ring is still large");
                client.write_all(messages.to_le_bytes().to_vec()).await.0.unwrap();
                let back = common::read_exact(&client, 4).await.unwrap();
                assert_eq!(back, messages.to_le_bytes());
                messages += 1;
            }
            drop(client);
            let used = proactor::stats().since(&shrinking);
            eprintln!("the ring shrank back to its first chunk after {messages} messages: {used:?}");
            // Counted from the start: a chunk may already be freed while the connections'
            // buffers come home, before the light load starts.
            let shrunk = proactor::stats().since(&before).ring_shrunk;
            assert_eq!(shrunk, grown, "every chunk grown was freed ({shrunk} of {grown}): {used:?}");
            eventually_async("every ring buffer home", || proactor::stats().ring_buffers == Some((128, 128)))
                .await;
            server.abort();
        });
    });
}

#[test]
fn without_a_ring_read_provided_reads_into_buffers_of_its_own_byte_exact() {
    // The path of kernels without buffer rings (before 6.0), forced.
    within(Duration::from_secs(60), || {
        let runtime = proactor::Builder::new().provided_buffers(0, 0).build().unwrap();
        assert_eq!(runtime.ring_buffers_available(), None);
        let used = echo_on(runtime, 1 << 20, 9);
        assert_eq!(used.recv_bytes, 1 << 20);
        assert_eq!(used.recv_spilled + used.recv_enobufs, 0, "{used:?}");
    });
}

#[test]
fn a_chunk_of_the_ring_is_freed_only_once_all_its_buffers_are_home() {
    // Eight whole buffers at first. The ring hands buffers out in the order they were provided
    // (FIFO), which makes every step below exact:
    // 1. Eight messages, each buffer held: the eighth leaves none in the ring, so it grows by a
    //    chunk of eight (buffers 8 to 15), provided behind what is left.
    // 2. The eight held buffers go home, behind the new chunk: sixteen free.
    // 3. The next message lands in buffer 8, of the new chunk: held. Seven more, each dropped
    //    at once, take buffers 9 to 15: with load this low they are retired, not provided again.
    //    The chunk must not be freed: buffer 8 is still out, and its bytes must stay intact.
    // 4. Buffer 8 comes home: now the chunk is freed, and the ring is back to its first chunk.
    within(Duration::from_secs(30), || {
        let runtime = proactor::Builder::new()
            .provided_buffers(8, 4096)
            .incremental_buffers(false)
            .ring_memory_limit(1 << 20)
            .build()
            .unwrap();
        if !has_ring(&runtime, "a chunk freed once its buffers are home") {
            return;
        }
        runtime.block_on(async {
            let (stream, mut peer) = pair().await;
            let mut message = |i: u8| {
                peer.write_all(&[i; 100]).unwrap();
                stream_read(&stream, i)
            };
            let start = proactor::stats();
            let mut held = Vec::new();
            for i in 0..8 {
                held.push(message(i).await);
            }
            let used = proactor::stats().since(&start);
            assert_eq!(used.ring_grown, 1, "{used:?}");
            assert_eq!(proactor::stats().ring_buffers, Some((8, 16)));
            held.clear();
            assert_eq!(proactor::stats().ring_buffers, Some((16, 16)));
            let first_of_new_chunk = message(8).await;
            for i in 9..16 {
                drop(message(i).await);
            }
            let used = proactor::stats().since(&start);
            assert_eq!(used.ring_shrunk, 0, "the chunk was freed with one of its buffers out: {used:?}");
            assert_eq!(proactor::stats().ring_buffers, Some((8, 9)), "seven buffers retired");
            assert!(first_of_new_chunk.iter().all(|&b| b == 8), "the held buffer's bytes changed");
            drop(first_of_new_chunk);
            let used = proactor::stats().since(&start);
            assert_eq!(used.ring_shrunk, 1, "{used:?}");
            assert_eq!(proactor::stats().ring_buffers, Some((8, 8)), "the ring is back to its first chunk");
        });
    });
}

/// The next `read_provided` of `stream`: a message of 100 bytes `i`, in one ring buffer.
async fn stream_read(stream: &TcpStream, i: u8) -> proactor::ProvidedBuf {
    let buf = stream.read_provided().await.unwrap().expect("a message");
    assert_eq!(&buf[..], &[i; 100][..], "message {i} in one receive");
    buf
}

#[test]
fn the_datagram_ring_grows_while_received_datagrams_are_held() {
    // The datagram ring starts with 16 buffers of 64 KiB and grows by 16 whenever at most an
    // eighth is left: 40 datagrams received one by one and all held need two more chunks. A
    // ring that did not grow would leave the 17th receive waiting forever.
    within(Duration::from_secs(30), || {
        let runtime = proactor::Builder::new().backend(proactor::Backend::IoUring).build().unwrap();
        if !has_ring(&runtime, "the datagram ring grows") {
            return;
        }
        runtime.block_on(async {
            let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = socket.local_addr().unwrap();
            let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = proactor::stats();
            let mut held = Vec::new();
            for i in 0..40u8 {
                peer.send_to(&[i; 32], to).unwrap();
                let received = testkit::woken_within(testkit::PATIENCE, socket.recv_from_provided()).await;
                let (datagram, _) = received.unwrap_or_else(|| panic!("datagram {i} never came")).unwrap();
                assert_eq!(&datagram[..], &[i; 32][..]);
                held.push(datagram);
            }
            let used = proactor::stats().since(&start);
            assert_eq!(used.ring_grown, 2, "16 buffers, then 32, then 48: {used:?}");
        });
    });
}
