//! Echo correctness on io_uring: every byte comes back, in order, whatever the size and
//! chunking, through any size of ring.

mod common;

use std::time::Duration;

use common::{blocking_round_trip, echo_client, serve, spawn_server_thread, within, Rng};
use proactor::net::{TcpListener, TcpStream};

#[test]
fn sixteen_mib_with_random_chunking_comes_back_byte_exact() {
    let addr = spawn_server_thread();
    let data = Rng::new(16).bytes(16 << 20);
    let echoed = within(Duration::from_secs(60), {
        let data = data.clone();
        move || blocking_round_trip(addr, data, 7)
    });
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed bytes differ from the bytes sent");
}

fn run_clients(
    runtime: proactor::Runtime,
    clients: u64,
    rounds: usize,
    max_len: usize,
) -> (usize, proactor::Runtime) {
    let ok = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        proactor::spawn(serve(listener));
        let handles: Vec<_> =
            (0..clients).map(|i| proactor::spawn(echo_client(addr, i + 1, rounds, max_len))).collect();
        let mut ok = 0;
        for handle in handles {
            ok += matches!(handle.await, Ok(Ok(true))) as usize;
        }
        ok
    });
    (ok, runtime)
}

#[test]
fn a_thousand_concurrent_connections_all_echo() {
    let ok =
        within(Duration::from_secs(60), || run_clients(proactor::Runtime::new().unwrap(), 1000, 3, 3000).0);
    assert_eq!(ok, 1000);
}

#[test]
fn a_tiny_ring_under_a_hundred_busy_connections_loses_nothing() {
    // 4 SQ entries for 200+ operations in flight: the SQ fills up on almost every turn and must be
    // submitted and refilled; the 8-entry CQ overflows into the kernel's backlog and must be
    // brought back. Every echo still has to be exact.
    let (ok, overflows) = within(Duration::from_secs(60), || {
        let runtime = proactor::Builder::new().ring_entries(4).build().unwrap();
        let (ok, runtime) = run_clients(runtime, 100, 20, 2000);
        (ok, runtime.cq_overflows())
    });
    assert_eq!(ok, 100);
    assert!(overflows > 0, "the test did not exercise the CQ-overflow path");
}

#[test]
fn ipv6_loopback_echoes() {
    let echoed = within(Duration::from_secs(20), || {
        proactor::block_on(async {
            let listener =
                TcpListener::bind("[::1]:0").expect("binding [::1] (is IPv6 loopback configured?)");
            let addr = listener.local_addr().unwrap();
            assert!(addr.is_ipv6());
            proactor::spawn(serve(listener));
            let stream = TcpStream::connect(addr).await.unwrap();
            assert!(stream.peer_addr().unwrap().is_ipv6());
            let (written, _) = stream.write_all(&b"over six"[..]).await;
            written.unwrap();
            common::read_exact(&stream, 8).await.unwrap()
        })
    });
    assert_eq!(echoed, b"over six");
}

#[test]
fn peers_that_reset_mid_stream_do_not_disturb_the_server() {
    use std::io::Write;
    let addr = spawn_server_thread();
    for _ in 0..20 {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let _ = stream.write_all(&[7; 200_000]);
    }
    assert_eq!(blocking_round_trip(addr, b"still here".to_vec(), 1), b"still here");
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let err = proactor::block_on(async {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        TcpStream::connect(addr).await.unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn batching_waits_still_echo_every_byte_and_answer_a_lone_request() {
    let ok = within(Duration::from_secs(60), || {
        let runtime = proactor::Builder::new().batch_wait(Duration::from_micros(200)).build().unwrap();
        // A lone client: the wait must return with its single completion.
        let (lone, runtime) = run_clients(runtime, 1, 20, 100);
        let (many, _) = run_clients(runtime, 100, 10, 2000);
        (lone, many)
    });
    assert_eq!(ok, (1, 100));
}
