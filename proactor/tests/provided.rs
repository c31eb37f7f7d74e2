//! Receiving into the provided-buffer ring: byte-exact echo, a ring too small for the load
//! (ENOBUFS), and every buffer coming back.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{blocking_round_trip, within, Rng};
use proactor::net::{TcpListener, TcpStream};
use proactor::time::sleep;

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
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = proactor::Builder::new()
            .provided_buffers(count, size)
            .incremental_buffers(false)
            .ring_memory_limit(usize::from(count) * size as usize)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                proactor::spawn(echo_provided(stream));
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
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
        let full = runtime.ring_buffers_available().expect("this kernel has buffer rings");
        assert_eq!(full, 8);
        runtime.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            for round in 0..10 {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut peer, _) = listener.accept().unwrap();
                // Data arrives into ring buffers; the stream reads one and then goes away with
                // the rest still queued in its receive.
                peer.write_all(&[round; 5000]).unwrap();
                let first = stream.read_provided().await.unwrap().expect("data");
                assert!(first.iter().all(|&b| b == round));
                sleep(Duration::from_millis(10)).await;
                drop(first);
                drop(stream);
                drop(peer);
            }
            sleep(Duration::from_millis(50)).await;
        });
        assert_eq!(runtime.ring_buffers_available(), Some(full), "ring buffers leaked");
        assert_eq!(runtime.ops_in_flight(), 0);
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
    // With incremental consumption (the default where the kernel has it) a 64 KiB buffer
    // takes a large message in a few pieces; whole 4 KiB buffers would need one receive
    // completion per 4 KiB at least.
    within(Duration::from_secs(60), || {
        for len in [1 << 20, 16 << 20] {
            let runtime = proactor::Runtime::new().unwrap();
            if runtime.ring_buffers_available().is_none() {
                return; // no buffer ring on this kernel
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
fn a_thousand_connections_keep_their_receives_armed() {
    // A thousand connections, each with a message in flight, ten times over: the ring grows
    // to the load instead of running dry, so no receive ends with ENOBUFS and none is re-armed,
    // and each echo costs one SQE (its send) beyond each connection's one receive and close.
    const CONNS: usize = 1000;
    const ROUNDS: usize = 10;
    within(Duration::from_secs(60), || {
        let runtime = proactor::Runtime::new().unwrap();
        if runtime.ring_buffers_available().is_none() {
            return;
        }
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let clients = std::thread::spawn(move || {
                let mut conns: Vec<std::net::TcpStream> =
                    (0..CONNS).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
                for round in 0..ROUNDS {
                    for (i, conn) in conns.iter_mut().enumerate() {
                        let mut message = format!("{round:02} message {i:04}").into_bytes();
                        message.resize(64, b'.');
                        conn.write_all(&message).unwrap();
                    }
                    for (i, conn) in conns.iter_mut().enumerate() {
                        let mut back = [0u8; 64];
                        std::io::Read::read_exact(conn, &mut back).unwrap();
                        assert_eq!(&back[..15], format!("{round:02} message {i:04}").as_bytes());
                    }
                }
            });
            let before = proactor::stats();
            for _ in 0..CONNS {
                let (stream, _) = listener.accept().await.unwrap();
                proactor::spawn(echo_provided(stream));
            }
            while !clients.is_finished() {
                sleep(Duration::from_millis(5)).await;
            }
            clients.join().unwrap();
            let used = proactor::stats().since(&before);
            let echoes = (CONNS * ROUNDS) as u64;
            assert_eq!(used.sends, echoes, "{used:?}");
            assert_eq!(used.recv_enobufs, 0, "receives ran out of ring buffers: {used:?}");
            assert_eq!(used.recv_rearms, 0, "receives were re-armed: {used:?}");
            // Each echo's send, each connection's receive and close (those of the clients
            // that already hung up), and the accept re-armed after every 64 connections: no
            // re-arm storm.
            assert!(
                used.sqes <= echoes + 2 * CONNS as u64 + 100,
                "{} SQEs for {echoes} echoes on {CONNS} connections",
                used.sqes
            );
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
