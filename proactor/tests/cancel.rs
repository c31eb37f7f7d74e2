//! Dropping operations before they complete: buffers stay owned by the runtime until the CQE
//! arrives, nothing is corrupted, no fd leaks. Alone in its test binary because it counts fds.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{open_fds, read_exact, serve, within, Rng};
use proactor::net::{TcpListener, TcpStream};
use proactor::time::{sleep, timeout};

/// The tests count this process's fds, so they must not run at the same time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This process's fd count once it stops changing. Sockets are closed through the ring, and a
/// close the kernel finishes on a worker thread can land a little after the runtime is gone.
fn settled_fds() -> usize {
    let mut last = open_fds();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        let now = open_fds();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// A connected pair: a proactor stream and the std stream at the other end.
async fn pair() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

/// Turns the loop until no operation is in flight (bounded).
async fn settle(runtime_ops: impl Fn() -> usize) -> usize {
    for _ in 0..200 {
        if runtime_ops() == 0 {
            break;
        }
        sleep(Duration::from_millis(5)).await;
    }
    runtime_ops()
}

#[test]
fn a_dropped_read_keeps_its_buffer_until_the_cqe_and_corrupts_nothing() {
    let _serial = serial();
    let fds_before = settled_fds();
    within(Duration::from_secs(30), || {
        let runtime = proactor::Runtime::new().unwrap();
        let rt = std::rc::Rc::new(runtime);
        let ops = {
            let rt = rt.clone();
            move || rt.ops_in_flight()
        };
        rt.block_on(async {
            let (stream, mut peer) = pair().await;
            // A read the kernel holds a buffer for, abandoned by its timeout.
            let timed_out = timeout(Duration::from_millis(20), stream.read(vec![0xAA; 4096])).await;
            assert!(timed_out.is_err());
            // The cancellation completes on a later turn; until then the slot (and the buffer)
            // belong to the driver.
            assert_eq!(settle(&ops).await, 0, "the orphaned read's slot was never freed");
            // Data sent now goes to the next read, whole and in order.
            peer.write_all(b"after the timeout").unwrap();
            assert_eq!(read_exact(&stream, 17).await.unwrap(), b"after the timeout");
            assert_eq!(ops(), 0);
        });
    });
    assert_eq!(settled_fds(), fds_before);
}

#[test]
fn thousands_of_timeouts_on_pending_reads_leave_the_server_correct() {
    let _serial = serial();
    let fds_before = settled_fds();
    within(Duration::from_secs(60), || {
        let rt = std::rc::Rc::new(proactor::Runtime::new().unwrap());
        let ops = {
            let rt = rt.clone();
            move || rt.ops_in_flight()
        };
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = proactor::spawn(serve(listener));
            // 50 connections, each timing out 40 reads in a row while data trickles in at
            // random moments: some reads are cancelled, some complete just before the cancel.
            let clients: Vec<_> = (0..50u64)
                .map(|c| {
                    proactor::spawn(async move {
                        let mut rng = Rng::new(c + 1);
                        let (stream, mut peer) = pair().await;
                        let mut expected = Vec::new();
                        let mut got = Vec::new();
                        for i in 0..40u32 {
                            if rng.range(0, 3) == 0 {
                                let chunk = i.to_le_bytes();
                                peer.write_all(&chunk).unwrap();
                                expected.extend_from_slice(&chunk);
                            }
                            let wait = Duration::from_micros(rng.range(0, 2000) as u64);
                            if let Ok((read, buf)) = timeout(wait, stream.read(Vec::with_capacity(64))).await
                            {
                                read.unwrap();
                                got.extend_from_slice(&buf);
                            }
                        }
                        // Whatever the cancelled reads did not take is still in the socket.
                        drop(peer);
                        loop {
                            let (read, buf) = stream.read(Vec::with_capacity(64)).await;
                            if read.unwrap() == 0 {
                                break;
                            }
                            got.extend_from_slice(&buf);
                        }
                        got == expected
                    })
                })
                .collect();
            for client in clients {
                assert!(client.await.unwrap(), "bytes were lost or reordered by a cancelled read");
            }
            // And the echo server still echoes.
            assert!(common::echo_client(addr, 99, 5, 5000).await.unwrap());
            server.abort();
            let _ = server.await;
            assert_eq!(settle(&ops).await, 0, "operations left in flight");
        });
    });
    assert_eq!(settled_fds(), fds_before);
}

#[test]
fn dropping_a_listener_with_an_accept_in_flight_leaks_no_fd() {
    let _serial = serial();
    for multishot in [true, false] {
        let fds_before = settled_fds();
        within(Duration::from_secs(60), move || {
            let runtime = proactor::Builder::new().multishot(multishot).build().unwrap();
            runtime.block_on(async {
                for round in 0..50u64 {
                    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                    let addr = listener.local_addr().unwrap();
                    // Connections arrive while the accept is in flight and while it is cancelled.
                    let connector = std::thread::spawn(move || {
                        (0..10).filter_map(|_| std::net::TcpStream::connect(addr).ok()).collect::<Vec<_>>()
                    });
                    let wait = Duration::from_micros(Rng::new(round + 1).range(0, 3000) as u64);
                    if let Ok(accepted) = timeout(wait, listener.accept()).await {
                        drop(accepted.unwrap());
                    }
                    drop(listener);
                    drop(connector.join().unwrap());
                }
                sleep(Duration::from_millis(50)).await;
            });
        });
        assert_eq!(settled_fds(), fds_before, "fds leaked (multishot accept: {multishot})");
    }
}

#[test]
fn dropping_the_runtime_with_operations_in_flight_is_clean() {
    let _serial = serial();
    let fds_before = settled_fds();
    let peers = within(Duration::from_secs(30), || {
        let runtime = proactor::Runtime::new().unwrap();
        let peers = runtime.block_on(async {
            let mut peers = Vec::new();
            for _ in 0..20 {
                let (stream, peer) = pair().await;
                // Each task waits in a read forever.
                proactor::spawn(async move {
                    let _ = stream.read(vec![0; 1024]).await;
                });
                peers.push(peer);
            }
            sleep(Duration::from_millis(20)).await;
            peers
        });
        assert!(runtime.ops_in_flight() >= 20);
        drop(runtime);
        peers
    });
    // The tasks' sockets were closed: every peer sees end of stream.
    for mut peer in peers {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(std::io::Read::read(&mut peer, &mut [0; 8]).unwrap(), 0);
    }
    assert_eq!(settled_fds(), fds_before);
}

#[test]
fn a_listener_nobody_accepts_on_stops_accepting_and_loses_no_connection() {
    let _serial = serial();
    within(Duration::from_secs(60), || {
        proactor::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // One connection arms the (multishot) accept; then nobody calls accept for a while.
            let _first = std::net::TcpStream::connect(addr).unwrap();
            drop(listener.accept().await.unwrap());
            // A first burst: the kernel may accept all of it in one go (it drains the backlog
            // whenever the accept runs), which fills the queue past its bound.
            let before_first = open_fds();
            let mut clients: Vec<_> = (0..100).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
            sleep(Duration::from_millis(100)).await;
            // The bound below means something only if the queue did fill: at least 64 (the
            // queue's bound) of the first burst were accepted into it, on top of the clients.
            let accepted_first = open_fds().saturating_sub(before_first + 100);
            assert!(accepted_first >= 64, "only {accepted_first} of the first burst were accepted");
            // From then on the accept is stopped: a second burst stays in the kernel's backlog
            // and costs this process no fd.
            let before = open_fds();
            clients.extend((0..100).map(|_| std::net::TcpStream::connect(addr).unwrap()));
            sleep(Duration::from_millis(100)).await;
            let accepted_meanwhile = open_fds().saturating_sub(before + 100);
            assert!(
                accepted_meanwhile <= 8,
                "{accepted_meanwhile} more connections accepted that nobody asked for"
            );
            // None of the connections is lost: each one is accepted when asked for.
            for i in 0..clients.len() {
                let accepted = timeout(Duration::from_secs(5), listener.accept()).await;
                accepted.unwrap_or_else(|_| panic!("connection {i} never accepted")).unwrap();
            }
        })
    });
}
