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

/// Starts a server on its own thread with `count` ring buffers of `size` bytes.
fn server(count: u16, size: u32) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = proactor::Builder::new().provided_buffers(count, size).build().unwrap();
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
