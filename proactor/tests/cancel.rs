//! Dropping operations before they complete: buffers stay owned by the runtime until the CQE
//! arrives, nothing is corrupted, no fd leaks. Alone in its test binary because it counts fds.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{eventually, eventually_async, open_fds, pair, read_exact, serve, within, Rng};
use proactor::net::TcpListener;
use proactor::time::timeout;

/// The tests count this process's fds, so they must not run at the same time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits until this process has no more fds open than `before`: sockets are closed through
/// the ring, and a close the kernel finishes on a worker thread can land a little after the
/// runtime is gone.
fn no_more_fds_than(before: usize, what: &str) {
    eventually(format!("{what}: no more than the {before} fds open before"), || open_fds() <= before);
}

/// Turns the loop until no operation is in flight (bounded).
async fn settle() {
    eventually_async("no operation in flight", || proactor::stats().in_flight == 0).await;
}

#[test]
fn a_dropped_read_keeps_its_buffer_until_the_cqe_and_corrupts_nothing() {
    let _serial = serial();
    let fds_before = open_fds();
    within(Duration::from_secs(30), || {
        proactor::Runtime::new().unwrap().block_on(async {
            let (stream, mut peer) = pair().await;
            // A read the kernel holds a buffer for, abandoned by its timeout.
            let timed_out = timeout(Duration::from_millis(20), stream.read(vec![0xAA; 4096])).await;
            assert!(timed_out.is_err());
            // The cancellation completes on a later turn; until then the slot (and the buffer)
            // belong to the driver.
            settle().await;
            // Data sent now goes to the next read, whole and in order.
            peer.write_all(b"after the timeout").unwrap();
            assert_eq!(read_exact(&stream, 17).await.unwrap(), b"after the timeout");
            assert_eq!(proactor::stats().in_flight, 0);
        });
    });
    no_more_fds_than(fds_before, "a dropped read");
}

#[test]
fn thousands_of_timeouts_on_pending_reads_leave_the_server_correct() {
    let _serial = serial();
    let fds_before = open_fds();
    within(Duration::from_secs(60), || {
        proactor::Runtime::new().unwrap().block_on(async {
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
            settle().await;
        });
    });
    no_more_fds_than(fds_before, "thousands of timeouts");
}

#[test]
fn dropping_a_listener_with_an_accept_in_flight_leaks_no_fd() {
    let _serial = serial();
    for multishot in [true, false] {
        let fds_before = open_fds();
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
                    drop(common::joined(connector).await);
                }
                settle().await;
            });
        });
        no_more_fds_than(fds_before, &format!("dropped listeners (multishot accept: {multishot})"));
    }
}

#[test]
fn dropping_the_runtime_with_operations_in_flight_is_clean() {
    let _serial = serial();
    let fds_before = open_fds();
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
            eventually_async("every task waits in its read", || proactor::stats().in_flight >= 20).await;
            peers
        });
        assert!(runtime.ops_in_flight() >= 20);
        drop(runtime);
        peers
    });
    // The tasks' sockets were closed: every peer sees end of stream.
    for mut peer in peers {
        assert_eq!(std::io::Read::read(&mut peer, &mut [0; 8]).unwrap(), 0);
    }
    no_more_fds_than(fds_before, "a dropped runtime");
}

#[test]
fn a_listener_nobody_accepts_on_stops_accepting_and_loses_no_connection() {
    let _serial = serial();
    within(Duration::from_secs(60), || {
        let runtime = proactor::Runtime::new().unwrap();
        if runtime.backend() != proactor::Backend::IoUring {
            common::skipped("a listener nobody accepts on", "no io_uring (the bound is multishot accept's)");
            return;
        }
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // One connection arms the (multishot) accept; then nobody calls accept for a while.
            let _first = std::net::TcpStream::connect(addr).unwrap();
            drop(listener.accept().await.unwrap());
            // A first burst: the kernel may accept all of it in one go (it drains the backlog
            // whenever the accept runs), which fills the queue past its bound: at least 64 (the
            // queue's bound) of it are accepted, and then the accept is stopped.
            let start = proactor::stats();
            let mut clients: Vec<_> = (0..100).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
            eventually_async(
                "the queue of accepted connections filled to its bound, and the accept was stopped",
                || {
                    let used = proactor::stats().since(&start);
                    used.accepts >= 64 && used.cancels >= 1
                },
            )
            .await;
            // (The cancel goes out with the next turn; accepts under way until then still come.
            // io_uring accepts while the loop waits for completions: ten turns without an accept
            // are ten chances missed.)
            let turns = proactor::stats().turns;
            eventually_async("ten turns", || proactor::stats().turns >= turns + 10).await;
            // From then on the accept is stopped: a second burst stays in the kernel's backlog
            // and costs this process no fd.
            let (accepted, turns) = (proactor::stats().since(&start).accepts, proactor::stats().turns);
            assert!(accepted <= 100, "{accepted} accepted of 100");
            clients.extend((0..100).map(|_| std::net::TcpStream::connect(addr).unwrap()));
            eventually_async("ten turns", || proactor::stats().turns >= turns + 10).await;
            let meanwhile = proactor::stats().since(&start).accepts - accepted;
            assert!(meanwhile == 0, "{meanwhile} more connections accepted that nobody asked for");
            // None of the connections is lost: each one is accepted when asked for.
            for i in 0..clients.len() {
                let accepted = common::woken_within(testkit::PATIENCE, listener.accept()).await;
                accepted.unwrap_or_else(|| panic!("connection {i} never accepted")).unwrap();
            }
        })
    });
}
