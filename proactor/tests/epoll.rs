//! The epoll backend: completion emulated on readiness, with the same API as io_uring's.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{blocking_round_trip, echo_client, serve, within, Rng};
use proactor::net::{TcpListener, TcpStream};
use proactor::time::{sleep, timeout};
use proactor::{Backend, Builder, Runtime};

fn runtime() -> Runtime {
    Builder::new().backend(Backend::Epoll).build().unwrap()
}

/// Starts an epoll echo server on its own thread; returns its address.
fn spawn_server() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await
        })
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn the_runtime_says_it_runs_on_epoll() {
    assert_eq!(runtime().backend(), Backend::Epoll);
}

#[test]
fn sixteen_mib_with_random_chunking_comes_back_byte_exact() {
    let addr = spawn_server();
    let data = Rng::new(3).bytes(16 << 20);
    let echoed = within(Duration::from_secs(60), {
        let data = data.clone();
        move || blocking_round_trip(addr, data, 5)
    });
    assert!(echoed == data, "echoed bytes differ from the bytes sent");
}

#[test]
fn a_thousand_concurrent_connections_all_echo() {
    let ok = within(Duration::from_secs(60), || {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            proactor::spawn(serve(listener));
            let clients: Vec<_> =
                (0..1000).map(|i| proactor::spawn(echo_client(addr, i + 1, 3, 3000))).collect();
            let mut ok = 0;
            for client in clients {
                ok += matches!(client.await, Ok(Ok(true))) as usize;
            }
            ok
        })
    });
    assert_eq!(ok, 1000);
}

#[test]
fn read_provided_gets_each_message_in_a_buffer_picked_at_readiness() {
    within(Duration::from_secs(20), || {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                for msg in [&b"one"[..], b"two", b"three"] {
                    conn.write_all(msg).unwrap();
                    let mut back = vec![0; msg.len()];
                    conn.read_exact(&mut back).unwrap();
                    assert_eq!(back, msg);
                }
                conn.shutdown(Shutdown::Write).unwrap();
            });
            let (stream, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            while let Some(buf) = stream.read_provided().await.unwrap() {
                got.extend_from_slice(&buf);
                let (written, _) = stream.write_all(buf).await;
                written.unwrap();
            }
            assert_eq!(got, b"onetwothree");
            client.join().unwrap();
        })
    });
}

#[test]
fn a_read_dropped_before_data_comes_loses_nothing() {
    within(Duration::from_secs(20), || {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let peer = std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                std::thread::sleep(Duration::from_millis(100));
                conn.write_all(b"late bytes").unwrap();
                conn
            });
            let (stream, _) = listener.accept().await.unwrap();
            // A read times out before anything comes: it never ran, so cancelling it is just
            // taking it out of the driver's queue (done at the next turn).
            assert!(timeout(Duration::from_millis(20), stream.read(Vec::with_capacity(64))).await.is_err());
            sleep(Duration::from_millis(1)).await;
            assert_eq!(proactor::stats().in_flight, 0, "the cancelled read left nothing behind");
            // read_provided's pick stays queued in the stream when its future is dropped; the
            // next call gets what it receives.
            assert!(timeout(Duration::from_millis(20), stream.read_provided()).await.is_err());
            let mut got = Vec::new();
            while got.len() < 10 {
                got.extend_from_slice(&stream.read_provided().await.unwrap().unwrap());
            }
            assert_eq!(got, b"late bytes");
            drop(peer.join().unwrap());
        })
    });
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    runtime().block_on(async {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = TcpStream::connect(port).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn a_write_to_a_peer_that_does_not_read_waits_then_completes() {
    within(Duration::from_secs(30), || {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let big = Rng::new(9).bytes(8 << 20);
            let expected = big.clone();
            let reader = std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                // Let the server fill the socket buffers first.
                std::thread::sleep(Duration::from_millis(200));
                let mut got = Vec::new();
                conn.read_to_end(&mut got).unwrap();
                got
            });
            let (stream, _) = listener.accept().await.unwrap();
            let (written, _) = stream.write_all(big).await;
            written.unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            drop(stream);
            sleep(Duration::from_millis(1)).await;
            assert!(reader.join().unwrap() == expected);
        })
    });
}

#[test]
fn counters_show_readiness_waits_and_the_syscalls_the_driver_made() {
    let rt = runtime();
    let before = proactor::stats();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        proactor::spawn(serve(listener));
        assert!(echo_client(addr, 1, 10, 100).await.unwrap());
    });
    let work = proactor::stats().since(&before);
    assert!(work.sys_epoll_wait > 0);
    // 10 echoes, two sides: at least 20 sends and 20 receives, each its own syscall.
    assert!(work.sys_epoll_io >= 40, "{work:?}");
    assert_eq!(work.sys_io_uring_enter, 0);
    assert!(work.syscalls() >= work.sys_epoll_io + work.sys_epoll_wait);
}
