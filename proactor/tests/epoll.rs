//! The epoll backend: completion emulated on readiness, with the same API as io_uring's.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::{blocking_round_trip, echo_client, eventually_async, joined, serve, within, Rng};
use proactor::net::{TcpListener, TcpStream};
use proactor::time::timeout;
use proactor::{Backend, Runtime};

fn runtime() -> Runtime {
    common::runtime(Backend::Epoll)
}

/// Starts an epoll echo server on its own thread; returns its address.
fn spawn_server() -> std::net::SocketAddr {
    common::spawn_server(runtime, common::echo).addr
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
            let (stream, mut peer) = common::pair().await;
            // A read times out before anything comes (the peer writes only afterwards): it
            // never ran, so cancelling it is just taking it out of the driver's queue (done at
            // the next turn).
            assert!(timeout(Duration::from_millis(20), stream.read(Vec::with_capacity(64))).await.is_err());
            eventually_async("the cancelled read left nothing in flight", || {
                proactor::stats().in_flight == 0
            })
            .await;
            // read_provided's pick stays queued in the stream when its future is dropped; the
            // next call gets what it receives.
            assert!(timeout(Duration::from_millis(20), stream.read_provided()).await.is_err());
            peer.write_all(b"late bytes").unwrap();
            let mut got = Vec::new();
            while got.len() < 10 {
                got.extend_from_slice(&stream.read_provided().await.unwrap().unwrap());
            }
            assert_eq!(got, b"late bytes");
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
            let (stream, mut peer) = common::pair().await;
            // Small socket buffers: 8 MiB cannot fit in them.
            testkit::small_buffers(&stream, 16 << 10);
            testkit::small_buffers(&peer, 16 << 10);
            let big = Rng::new(9).bytes(8 << 20);
            let expected = big.clone();
            let before = proactor::stats();
            let writer = proactor::spawn(async move {
                let (written, _) = stream.write_all(big).await;
                written.unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
            });
            // The peer reads nothing until a send of the write has come back short (the socket
            // buffers are full) and the rest waits in the driver's queue for the socket to
            // become writable again.
            eventually_async("a send of the write came back short", || {
                proactor::stats().since(&before).sends > 0
            })
            .await;
            assert!(!writer.is_finished(), "8 MiB fit without the peer reading");
            assert_eq!(proactor::stats().in_flight, 1, "the rest of the write waits in the driver");
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                peer.read_to_end(&mut got).unwrap();
                got
            });
            writer.await.unwrap();
            assert!(joined(reader).await == expected);
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
    // Every receive and send completed was one syscall of the driver's, and every other such
    // syscall found nothing to do (`would_block` also counts the accepts that did).
    assert!(work.sys_epoll_io >= work.recvs + work.sends, "{work:?}");
    assert!(work.sys_epoll_io <= work.recvs + work.sends + work.would_block, "{work:?}");
    assert_eq!(work.sys_io_uring_enter + work.sqes + work.aio_requests, 0, "{work:?}");
}

#[test]
fn a_send_behind_on_a_writable_socket_is_made_by_the_task_with_no_operation() {
    within(Duration::from_secs(20), || {
        runtime().block_on(async {
            let (stream, mut peer) = common::pair().await;
            // One message in: the socket is watched, and its event said writable too.
            peer.write_all(b"ping").unwrap();
            let got = stream.read_provided().await.unwrap().unwrap();
            assert_eq!(&got[..], b"ping");
            let before = proactor::stats();
            stream.write_all_behind(got).await.unwrap();
            // Sent already, by this task: nothing is left in the driver, and the peer gets the
            // bytes while this thread (the runtime's) blocks in its read, turning nothing.
            assert_eq!(proactor::stats().in_flight, 0);
            let work = proactor::stats().since(&before);
            assert_eq!((work.sends_behind, work.sends_quiet, work.sys_epoll_io), (1, 1, 1), "{work:?}");
            peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut back = [0; 4];
            peer.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"ping");
        })
    });
}

#[test]
fn a_send_behind_that_goes_out_short_at_once_sends_the_rest_in_order() {
    within(Duration::from_secs(30), || {
        runtime().block_on(async {
            let (stream, mut peer) = common::pair().await;
            // Small socket buffers: the first send takes only part of 4 MiB.
            testkit::small_buffers(&stream, 16 << 10);
            testkit::small_buffers(&peer, 16 << 10);
            peer.write_all(b"go").unwrap();
            assert_eq!(&stream.read_provided().await.unwrap().unwrap()[..], b"go");
            let big = Rng::new(11).bytes(4 << 20);
            let expected = big.clone();
            let before = proactor::stats();
            stream.write_all_behind(big).await.unwrap();
            let work = proactor::stats().since(&before);
            assert_eq!(work.sends_quiet, 0, "4 MiB went out at once: {work:?}");
            assert_eq!(proactor::stats().in_flight, 1, "the rest waits in the driver");
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                peer.read_to_end(&mut got).unwrap();
                got
            });
            stream.flush().await.unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            assert!(joined(reader).await == expected, "the bytes came back out of order or twice");
        })
    });
}
