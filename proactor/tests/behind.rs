//! Sends behind (`TcpStream::write_all_behind`): the driver finishes each send by itself, so a
//! ping-pong echo wakes its task once per message; every byte still arrives, in order and
//! before the end of stream, whatever the peer does; errors come out of the stream's next call;
//! ring buffers are never held for a peer that does not read. On every backend.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use common::{
    blocking_round_trip, eventually_async, has_ring, joined, pair, reset_on_close, within, woken_within,
    Peers, Rng,
};
use proactor::net::{TcpListener, TcpStream};
use proactor::{AioNotify, Backend, Builder, Runtime};
use testkit::remote_wake;

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

/// The echo of `echo::handle` on the proactor: what comes in goes back out as a send behind;
/// at end of stream, the last send is waited for, then the write side shut down.
async fn echo_behind(stream: TcpStream) -> io::Result<()> {
    loop {
        let Some(received) = stream.read_provided().await? else { break };
        stream.write_all_behind(received).await?;
    }
    stream.flush().await?;
    stream.shutdown(Shutdown::Write)
}

/// Each backend (aio with each of its notifications), by name, with how many connections a
/// test of many connections opens on it (POSIX aio blocks a glibc thread per connection
/// waiting to read).
const BACKENDS: [(&str, (Backend, AioNotify), usize); 5] = [
    ("io_uring", (Backend::IoUring, AioNotify::Thread), 1000),
    ("epoll", (Backend::Epoll, AioNotify::Thread), 1000),
    ("aio-thread", (Backend::PosixAio, AioNotify::Thread), 100),
    ("aio-signal", (Backend::PosixAio, AioNotify::Signal), 100),
    ("aio-suspend", (Backend::PosixAio, AioNotify::Suspend), 100),
];

/// A runtime on `backend` with `notify` (which only the aio backend reads).
fn runtime((backend, notify): (Backend, AioNotify)) -> Runtime {
    let runtime = Builder::new().backend(backend).aio_notify(notify).build().unwrap();
    assert_eq!(runtime.backend(), backend);
    runtime
}

/// `echo_behind` on a socket with small buffers: a peer that reads late stalls its sends.
async fn echo_behind_small_buffers(stream: TcpStream) -> io::Result<()> {
    testkit::small_buffers(&stream, 16 << 10);
    echo_behind(stream).await
}

/// Starts a server running `echo_behind` on its own thread and runtime; returns its address.
fn spawn_server(backend: (Backend, AioNotify)) -> SocketAddr {
    common::spawn_server(move || runtime(backend), echo_behind).addr
}

#[test]
fn a_ping_pong_echo_polls_its_task_once_per_message_plus_once_per_send_that_woke_it() {
    // Connections each with one 64-byte message in flight, round after round. The counters are
    // taken around the measured rounds only, once round 0's sends are over (the block_on future
    // waits for the client's signal, woken from its thread: it is polled twice in the window).
    const ROUNDS: usize = 20;
    for (name, backend, conns) in BACKENDS {
        let used = within(Duration::from_secs(120), move || {
            runtime(backend).block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let (warm, warm_fire) = remote_wake();
                let (done, done_fire) = remote_wake();
                let (counting, counting_rx) = mpsc::channel();
                let clients = std::thread::spawn(move || {
                    let mut rounds = testkit::Rounds::connect(addr, conns);
                    rounds.round(0); // every connection accepted, its receive armed, its task polled
                    warm_fire.fire();
                    counting_rx.recv().unwrap();
                    (1..=ROUNDS).for_each(|round| rounds.round(round));
                    done_fire.fire();
                });
                for _ in 0..conns {
                    let (stream, _) = listener.accept().await.unwrap();
                    proactor::spawn(echo_behind(stream));
                }
                warm.await;
                // Every send of round 0 over, none of them to count in the window: only the
                // connections' receives are in flight (and io_uring's multishot accept, armed).
                let idle = conns + usize::from(backend.0 == Backend::IoUring);
                eventually_async("round 0's sends over", || proactor::stats().in_flight == idle as u64).await;
                let before = proactor::stats();
                counting.send(()).unwrap();
                done.await;
                let used = proactor::stats().since(&before);
                clients.join().unwrap();
                used
            })
        });
        let echoes = (conns * ROUNDS) as u64;
        let per_echo = |n: u64| n as f64 / echoes as f64;
        eprintln!(
            "{name}: per echo: task polls {:.3}, sends behind {:.3}, quiet {:.3}, SQEs {:.3}",
            per_echo(used.tasks_polled),
            per_echo(used.sends_behind),
            per_echo(used.sends_quiet),
            per_echo(used.sqes)
        );
        assert_eq!(used.sends_behind, echoes, "{name}: every echo is a send behind: {used:?}");
        // One poll per echo (the receive's wake), one more for each send that woke the task,
        // and the block_on future's two. On aio a few more, with glibc's threads' timing (seen:
        // up to 3 extra polls in 2,000 echoes on aio-suspend under load, and once 37 with a build
        // running beside; the cause is not pinned down): a slack of 5 %. A spurious wake per echo
        // would still be 2,000 more. (The aio rows are named aio-thread, aio-signal and
        // aio-suspend.)
        let woke = used.sends_behind - used.sends_quiet;
        let aio_slack = if name.starts_with("aio") { echoes / 20 } else { 0 };
        assert!(
            used.tasks_polled <= echoes + woke + 2 + aio_slack,
            "{name}: {} task polls for {echoes} echoes of which {woke} sends woke the task: {used:?}",
            used.tasks_polled
        );
        // (On aio, glibc may report a connection's next read before its echo's write, each
        // by a thread of its own: the next send then waits for the write and is woken at its
        // end. Rare here, where a connection's next message waits for the whole round.)
        let quiet = if name.starts_with("aio") { 0.5 } else { 0.95 };
        assert!(per_echo(used.sends_quiet) >= quiet, "{name}: sends that woke a task: {used:?}");
        assert_eq!(used.sends_continued, 0, "{name}: 64-byte sends came back short: {used:?}");
        if name == "io_uring" {
            assert!(
                per_echo(used.sqes) <= 1.05,
                "{name}: {:.2} SQEs per echo: {used:?}",
                per_echo(used.sqes)
            );
        }
    }
}

#[test]
fn one_and_sixteen_mib_come_back_byte_exact_and_in_order() {
    for (name, backend, _) in BACKENDS {
        let addr = spawn_server(backend);
        for (len, seed) in [(1 << 20, 1), (16 << 20, 2)] {
            let data = Rng::new(seed).bytes(len);
            let echoed = within(Duration::from_secs(120), {
                let data = data.clone();
                move || blocking_round_trip(addr, data, seed)
            });
            assert!(
                echoed.len() == len && echoed == data,
                "{name}: {len} bytes sent, {} came back",
                echoed.len()
            );
        }
    }
}

#[test]
fn a_peer_that_stops_reading_starves_no_other_connection_and_gets_every_byte_in_order() {
    // A fixed ring of 8 buffers. The peer sends 8 MiB and reads nothing for a while: the
    // server's sends stall on the full window, and its task waits in a second send behind with
    // the next message. Nothing may hold a ring buffer meanwhile (the receive, stopped, gives
    // its back too): the whole ring is free, and another connection echoes as usual. Then the
    // peer reads, and gets every byte in order.
    const LEN: usize = 8 << 20;
    within(Duration::from_secs(120), || {
        let runtime = Builder::new()
            .provided_buffers(8, 4096)
            .incremental_buffers(false)
            .ring_memory_limit(8 * 4096)
            .build();
        let runtime = runtime.unwrap();
        if !has_ring(&runtime, "a peer that stops reading") {
            return;
        }
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let data = Rng::new(11).bytes(LEN);
            let expected = data.clone();
            let (read_fire, read) = mpsc::channel::<()>();
            let slow = std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                let mut writer = conn.try_clone().unwrap();
                let sender = std::thread::spawn(move || {
                    writer.write_all(&data).unwrap();
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                read.recv().unwrap();
                let mut echoed = Vec::new();
                conn.read_to_end(&mut echoed).unwrap();
                sender.join().unwrap();
                echoed
            });
            let (stream, _) = listener.accept().await.unwrap();
            let server = proactor::spawn(echo_behind(stream));
            // Until the server's sends stall, and the ring buffers they held are back.
            eventually_async("the server's sends stalled", || proactor::stats().sends_continued > 0).await;
            eventually_async("every ring buffer free while the peer does not read", || {
                let (free, total) = proactor::stats().ring_buffers.unwrap();
                free == total
            })
            .await;
            // Another connection is served meanwhile.
            let other = std::thread::spawn(move || blocking_round_trip(addr, b"still served".to_vec(), 3));
            let (other_stream, _) = listener.accept().await.unwrap();
            proactor::spawn(echo_behind(other_stream));
            assert_eq!(joined(other).await, b"still served", "another connection was not echoed");
            assert!(!server.is_finished(), "the slow peer's echo ended before it read");
            read_fire.send(()).unwrap();
            server.await.unwrap().unwrap();
            let echoed = slow.join().unwrap();
            assert!(echoed.len() == LEN && echoed == expected, "{} of {LEN} bytes came back", echoed.len());
            eventually_async("every ring buffer back once the echo is over", || {
                let (free, total) = proactor::stats().ring_buffers.unwrap();
                free == total
            })
            .await;
        });
    });
}

#[test]
fn ring_buffers_sent_behind_into_a_full_window_go_back_to_the_ring_while_they_wait() {
    // Messages arrive in ring buffers; then the peer's window is filled (without waiting, until
    // it stays full) and the ring buffers are sent behind, in order, from a task. The first
    // finds the window full (its first try does not wait): the driver must copy it out and give
    // it back, not keep it until the peer reads; the next ones, waiting for the first, must not
    // keep theirs either. Then the peer reads all of it, in order.
    use std::os::fd::AsRawFd;
    within(Duration::from_secs(60), || {
        let size = 256 * 1024;
        let runtime = Builder::new()
            .provided_buffers(8, size)
            .incremental_buffers(false)
            .ring_memory_limit(8 * size as usize);
        let runtime = runtime.build().unwrap();
        if !has_ring(&runtime, "ring buffers sent behind into a full window") {
            return;
        }
        let total = runtime.ring_buffers_available().unwrap();
        runtime.block_on(async {
            let (stream, mut peer) = pair().await;
            // Fixed windows (no automatic growth): once full, nothing makes room but the peer
            // reading.
            testkit::send_buffer(&stream, 16 << 10);
            testkit::receive_buffer(&peer, 16 << 10);
            let stream = std::rc::Rc::new(stream);
            let free = || proactor::stats().ring_buffers.unwrap().0;
            let mut rng = Rng::new(17);
            let mut pieces = Vec::new();
            let mut message = Vec::new();
            for _ in 0..2 {
                let part = rng.bytes(100 * 1024);
                peer.write_all(&part).unwrap();
                let mut got = 0;
                while got < part.len() {
                    let piece = stream.read_provided().await.unwrap().expect("data");
                    got += piece.len();
                    pieces.push(piece);
                }
                message.extend_from_slice(&part);
            }
            assert_eq!(free(), total - pieces.len() as u32, "each piece in a ring buffer of its own");
            // Two ring buffers, the first to be in flight and the second to wait behind it; the
            // rest as copies (the test holds them until their turn, not a send behind).
            let copies: Vec<Vec<u8>> = pieces.split_off(2).iter().map(|piece| piece.to_vec()).collect();
            assert_eq!(free(), total - 2);
            // Until the window is full, even for a byte: a small send still fits in the room
            // left in the last segment queued. (With both buffers fixed, once a pass adds
            // nothing, nothing makes room but the peer reading.)
            let mut expected = Vec::new();
            loop {
                let before = expected.len();
                for size in [65536, 4096, 256, 16, 1] {
                    loop {
                        let chunk = vec![b'f'; size];
                        // SAFETY: sends from a live buffer of that length on the stream's open
                        // socket.
                        let sent = unsafe {
                            libc::send(stream.as_raw_fd(), chunk.as_ptr().cast(), size, libc::MSG_DONTWAIT)
                        };
                        if sent < 0 {
                            assert_eq!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock);
                            break;
                        }
                        expected.extend_from_slice(&chunk[..sent as usize]);
                    }
                }
                if expected.len() == before {
                    break;
                }
                proactor::yield_now().await;
            }
            expected.extend_from_slice(&message);
            let sender = proactor::spawn({
                let stream = stream.clone();
                async move {
                    for piece in pieces {
                        stream.write_all_behind(piece).await.unwrap();
                    }
                    for copy in copies {
                        stream.write_all_behind(copy).await.unwrap();
                    }
                }
            });
            // Every ring buffer comes back while the peer still does not read.
            eventually_async("every ring buffer back while the sends behind wait for the peer", || {
                free() == total
            })
            .await;
            let s = proactor::stats();
            // Both ring buffers were copied out: the one in flight by the driver, the one
            // waiting behind it by the call that holds it. And no send is over.
            assert!(s.sends_detached >= 2, "a ring buffer was not copied out: {s:?}");
            assert_eq!(s.sends_quiet, 0, "a send got through the full window: {s:?}");
            let reader = std::thread::spawn(move || {
                let mut got = vec![0; expected.len()];
                peer.read_exact(&mut got).unwrap();
                got == expected
            });
            sender.await.unwrap();
            stream.flush().await.unwrap();
            assert!(joined(reader).await, "the bytes came back out of order");
        });
    });
}

#[test]
fn a_failed_send_behind_wakes_a_task_waiting_to_read_with_its_error_and_the_server_serves_on() {
    // The stream's write side is shut down, so its next send fails (EPIPE) while the peer,
    // silent, gives the receive nothing: only the send's error can end the wait in
    // `read_provided`, and it must, at once, once. Then the runtime serves other connections.
    for (name, backend, _) in BACKENDS {
        within(Duration::from_secs(30), move || {
            runtime(backend).block_on(async move {
                let peers = Peers::new();
                let (stream, _peer) = peers.pair(TcpStream::connect).await;
                stream.shutdown(Shutdown::Write).unwrap();
                stream.write_all_behind(b"too late".to_vec()).await.expect("submitted");
                // (The limit is polled first: a read polled once more when the limit fires would
                // find the error too, and hide a missing wake.)
                let read = woken_within(Duration::from_secs(10), stream.read_provided()).await;
                let error = read.expect("the failed send did not end the wait").expect_err("an error");
                assert_eq!(error.raw_os_error(), Some(libc::EPIPE), "{name}: {error}");
                // Reported once.
                stream.flush().await.unwrap();
                // The same through `flush`.
                stream.write_all_behind(b"too late again".to_vec()).await.expect("submitted");
                let error = stream.flush().await.expect_err("the send's error");
                assert_eq!(error.raw_os_error(), Some(libc::EPIPE), "{name}: {error}");
                drop(stream);

                let (stream, mut peer) = peers.pair(TcpStream::connect).await;
                peer.write_all(b"hello").unwrap();
                peer.shutdown(Shutdown::Write).unwrap();
                echo_behind(stream).await.unwrap();
                let mut back = Vec::new();
                peer.read_to_end(&mut back).unwrap();
                assert_eq!(back, b"hello", "{name}");
            })
        });
    }
}

#[test]
fn a_failed_send_behind_wakes_a_task_waiting_in_the_receive_it_had_armed_before() {
    // As above, but the stream has read once, so its multishot receive (io_uring) is armed when
    // the send is queued: the send's record then keeps no waker of its own, and its failure
    // must wake the task through the waker stored in that receive.
    for (name, backend, _) in BACKENDS {
        within(Duration::from_secs(30), move || {
            runtime(backend).block_on(async move {
                let peers = Peers::new();
                let (stream, mut peer) = peers.pair(TcpStream::connect).await;
                peer.write_all(b"first").unwrap();
                let first = stream.read_provided().await.unwrap().expect("the first bytes");
                assert_eq!(&first[..], b"first", "{name}");
                drop(first);
                stream.shutdown(Shutdown::Write).unwrap();
                stream.write_all_behind(b"too late".to_vec()).await.expect("submitted");
                let read = woken_within(Duration::from_secs(10), stream.read_provided()).await;
                let error = read.expect("the failed send did not end the wait").expect_err("an error");
                assert_eq!(error.raw_os_error(), Some(libc::EPIPE), "{name}: {error}");
                // The stream reads on: the peer's next bytes come.
                peer.write_all(b"more").unwrap();
                let more = stream.read_provided().await.unwrap().expect("more bytes");
                assert_eq!(&more[..], b"more", "{name}");
            })
        });
    }
}

#[test]
fn a_peer_that_resets_gets_the_error_on_the_next_call_and_the_server_serves_on() {
    for (name, backend, _) in BACKENDS {
        let addr = spawn_server(backend);
        within(Duration::from_secs(30), move || {
            runtime(backend).block_on(async move {
                let (stream, peer) = pair().await;
                reset_on_close(&peer);
                drop(peer);
                eventually_async("the reset came in", || testkit::tcp_state(&stream) == testkit::TCP_CLOSE)
                    .await;
                // Submitted, then failed in the kernel; the error comes out of the next call.
                let mut error = None;
                for _ in 0..3 {
                    if let Err(e) = stream.write_all_behind(vec![7; 4096]).await {
                        error = Some(e);
                        break;
                    }
                }
                let error = match error {
                    Some(error) => error,
                    None => stream.flush().await.expect_err("a send to a reset peer failed"),
                };
                assert!(
                    matches!(error.raw_os_error(), Some(libc::ECONNRESET | libc::EPIPE)),
                    "{name}: {error}"
                );
            });
        });
        // The echo server, some of whose peers reset, keeps serving.
        for i in 0..20 {
            let conn = std::net::TcpStream::connect(addr).unwrap();
            let mut conn = conn;
            conn.write_all(&[i; 10_000]).unwrap();
            reset_on_close(&conn);
        }
        let echoed = within(Duration::from_secs(30), move || blocking_round_trip(addr, vec![5; 100_000], 9));
        assert!(echoed == vec![5; 100_000], "{name}: the server stopped serving");
    }
}

/// How a stream with a large send behind in flight ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// `flush`, then `shutdown(Write)`; the stream is kept until the peer has read everything.
    FlushThenShutdown,
    /// Dropped at once, the send still in flight.
    Drop,
}

#[test]
fn shutting_down_after_a_flushed_send_behind_delivers_every_byte_then_end_of_stream() {
    check_end_of_stream_after_a_large_send_behind(End::FlushThenShutdown);
}

#[test]
fn dropping_the_stream_with_its_send_behind_in_flight_delivers_every_byte_then_end_of_stream() {
    check_end_of_stream_after_a_large_send_behind(End::Drop);
}

/// Sends 1 MiB behind to a peer that does not read yet, with socket buffers far smaller than
/// that: the send is stalled, still in flight (checked). Then ends the stream with `end` and
/// lets the peer read, which must get every byte, in order, then end of stream; and the
/// runtime is left with nothing in flight.
fn check_end_of_stream_after_a_large_send_behind(end: End) {
    const LEN: usize = 1 << 20;
    for (name, backend, _) in BACKENDS {
        within(Duration::from_secs(60), move || {
            runtime(backend).block_on(async move {
                let (stream, mut peer) = pair().await;
                testkit::small_buffers(&stream, 16 << 10);
                testkit::small_buffers(&peer, 16 << 10);
                let data = Rng::new(21).bytes(LEN);
                let expected = data.clone();
                let (start_reading, reading) = mpsc::channel::<()>();
                let arrived = peer.try_clone().unwrap();
                let reader = std::thread::spawn(move || {
                    reading.recv().unwrap();
                    let mut got = Vec::new();
                    peer.read_to_end(&mut got).map(|_| got)
                });
                let before = proactor::stats();
                stream.write_all_behind(data).await.unwrap();
                // Under way (bytes reached the peer), and not over (the peer reads nothing yet,
                // and 1 MiB does not fit in the sockets' buffers).
                eventually_async(format!("{name}: the send behind under way"), || {
                    testkit::unread_bytes(&arrived) > 0
                })
                .await;
                let at_the_end = proactor::stats().since(&before);
                assert_eq!(at_the_end.sends_quiet, 0, "{name}: the send was over already: {at_the_end:?}");
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                match end {
                    End::FlushThenShutdown => {
                        start_reading.send(()).unwrap();
                        stream.flush().await.unwrap();
                        stream.shutdown(Shutdown::Write).unwrap();
                        // The stream (and so the socket) is kept until the peer has read it all.
                        let got = joined(reader).await.expect("end of stream, not an error");
                        assert!(got == expected, "{name}: {} of {LEN} bytes, then end of stream", got.len());
                        drop(stream);
                    }
                    End::Drop => {
                        drop(stream);
                        // The driver holds the socket until the send is over.
                        assert!(testkit::fd_open(fd), "{name}: the socket was closed under its send behind");
                        assert!(proactor::stats().in_flight >= 1, "{name}: the send behind is not in flight");
                        start_reading.send(()).unwrap();
                        let got = joined(reader).await.expect("end of stream, not an error");
                        assert!(got == expected, "{name}: {} of {LEN} bytes, then end of stream", got.len());
                    }
                }
                eventually_async(format!("{name}: nothing left in flight"), || {
                    proactor::stats().in_flight == 0
                })
                .await;
            });
        });
    }
}

/// A stream dropped with its send behind in flight, whose peer writes back instead of reading
/// (an echo with blocking calls: it reads again only once its write is through), answers the
/// peer as a closed socket does: the connection is reset, the peer's write fails, and the
/// runtime is left with nothing in flight. (The socket once stayed open for the send, which
/// waited for the peer, which waited for the dropped stream to read: both forever. Found by
/// the simulation, `SIM_SEED=70`.)
#[test]
fn a_dropped_stream_whose_peer_writes_back_instead_of_reading_is_reset() {
    for (name, backend, _) in BACKENDS {
        within(Duration::from_secs(60), move || {
            runtime(backend).block_on(async move {
                let (stream, mut peer) = pair().await;
                // Small kernel buffers: the echoes fill this side's window after a few KiB.
                testkit::small_buffers(&stream, 4 << 10);
                testkit::small_buffers(&peer, 4 << 10);
                let echo = std::thread::spawn(move || {
                    let mut buf = vec![0; 64 << 10];
                    loop {
                        match peer.read(&mut buf) {
                            Ok(0) => return Ok(()),
                            Ok(n) => peer.write_all(&buf[..n])?,
                            Err(e) => return Err(e),
                        }
                    }
                });
                stream.write_all_behind(vec![7; 8 << 20]).await.unwrap();
                drop(stream);
                eventually_async(format!("{name}: the peer's echo thread ended"), || echo.is_finished())
                    .await;
                let ended = echo.join().unwrap();
                // Not the peer's read timeout (`testkit::PATIENCE`, what the old bug gave): the
                // reset. On aio the close shuts the socket down first (to wake glibc's thread
                // blocked in the write), which sends a FIN before the close's reset, so the peer
                // may read the end of the stream first (seen once under load, aio-signal).
                let timed_out =
                    |e: &io::Error| matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut);
                let ok = match &ended {
                    Err(e) => !timed_out(e),
                    Ok(()) => name.starts_with("aio"),
                };
                assert!(ok, "{name}: the peer's read or write should fail on the reset, got {ended:?}");
                eventually_async(format!("{name}: no operation left in flight"), || {
                    proactor::stats().in_flight == 0
                })
                .await;
            });
        });
    }
}

#[test]
fn sends_behind_on_one_stream_leave_in_order_with_writes_between_them() {
    // Many sends behind in a row (each waits for the one ahead), mixed with `write_all` (which
    // waits for the send behind ahead of it too): the peer reads them in order.
    for (name, backend, _) in BACKENDS {
        within(Duration::from_secs(60), move || {
            runtime(backend).block_on(async move {
                let (stream, mut peer) = pair().await;
                let mut rng = Rng::new(5);
                let chunks: Vec<Vec<u8>> = (0..200)
                    .map(|_| {
                        let len = rng.range(1, 100_000);
                        rng.bytes(len)
                    })
                    .collect();
                let expected: Vec<u8> = chunks.concat();
                let reader = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    peer.read_to_end(&mut got).map(|_| got)
                });
                for (i, chunk) in chunks.into_iter().enumerate() {
                    if i % 7 == 3 {
                        let (written, _) = stream.write_all(chunk).await;
                        written.unwrap();
                    } else {
                        stream.write_all_behind(chunk).await.unwrap();
                    }
                }
                stream.flush().await.unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                let got = joined(reader).await.unwrap();
                assert!(
                    got == expected,
                    "{name}: {} bytes came back, {} sent, or out of order",
                    got.len(),
                    expected.len()
                );
            })
        });
    }
}

#[test]
fn a_runtime_dropped_with_sends_behind_in_flight_cancels_them_and_closes_the_sockets() {
    // Streams held by tasks when the runtime goes, each with a send stalled behind a peer that
    // does not read (checked): dropping the runtime must not hang, and must close the sockets
    // (each peer then reads what reached it, and the end of the stream or a reset, instead of
    // waiting).
    const STREAMS: u64 = 4;
    for (name, backend, _) in BACKENDS {
        within(Duration::from_secs(30), move || {
            let runtime = runtime(backend);
            let peers = runtime.block_on(async {
                let before = proactor::stats();
                let mut peers = Vec::new();
                for _ in 0..STREAMS {
                    let (stream, peer) = pair().await;
                    testkit::small_buffers(&stream, 16 << 10);
                    testkit::small_buffers(&peer, 16 << 10);
                    peers.push(peer);
                    proactor::spawn(async move {
                        while stream.write_all_behind(vec![1; 1 << 20]).await.is_ok() {}
                        std::future::pending::<()>().await;
                        drop(stream);
                    });
                }
                eventually_async(format!("{name}: every stream's send behind submitted"), || {
                    proactor::stats().since(&before).sends_behind >= STREAMS
                })
                .await;
                let used = proactor::stats().since(&before);
                // A mebibyte cannot get through 16 KiB buffers: each stream's first send is
                // still in flight (no second one was submitted, none is over).
                assert_eq!((used.sends_behind, used.sends_quiet), (STREAMS, 0), "{name}: {used:?}");
                peers
            });
            assert!(runtime.ops_in_flight() >= STREAMS as usize, "{name}: the sends are not in flight");
            drop(runtime);
            for mut peer in peers {
                let mut sink = vec![0; 1 << 20];
                loop {
                    match peer.read(&mut sink) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                        // This thread ran the ring: the kernel's task work for the sends it
                        // cancelled as the ring went can interrupt a blocking read here (EINTR,
                        // not restarted, as the peer has a read timeout). Read again.
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => panic!("{name}: the socket was left open ({e})"),
                    }
                }
            }
        });
    }
}

#[test]
fn a_failed_send_behind_comes_out_of_the_next_read_write_or_write_all_once() {
    // The stream's write side is shut down, so its send behind fails (EPIPE). Once the driver
    // has its completion, the stream's next call among `read`, `write` and `write_all` returns
    // that error (the call does nothing else), and only that call: the next one works.
    #[derive(Clone, Copy, Debug)]
    enum Call {
        Read,
        Write,
        WriteAll,
    }
    for (name, backend, _) in BACKENDS {
        for call in [Call::Read, Call::Write, Call::WriteAll] {
            within(Duration::from_secs(30), move || {
                runtime(backend).block_on(async move {
                    let (stream, mut peer) = pair().await;
                    stream.shutdown(Shutdown::Write).unwrap();
                    let before = proactor::stats();
                    stream.write_all_behind(b"too late".to_vec()).await.expect("submitted");
                    eventually_async(format!("{name}: the send behind failed"), || {
                        proactor::stats().since(&before).sends > 0
                    })
                    .await;
                    let error = match call {
                        Call::Read => stream.read(Vec::with_capacity(8)).await.0.map(drop),
                        Call::Write => stream.write(&b"x"[..]).await.0.map(drop),
                        Call::WriteAll => stream.write_all(&b"x"[..]).await.0,
                    }
                    .expect_err("the send behind's error");
                    assert_eq!(error.raw_os_error(), Some(libc::EPIPE), "{name} {call:?}: {error}");
                    // Reported once: the next call is an ordinary one.
                    match call {
                        Call::Read => {
                            peer.write_all(b"after").unwrap();
                            assert_eq!(common::read_exact(&stream, 5).await.unwrap(), b"after", "{name}");
                        }
                        Call::Write | Call::WriteAll => {
                            // The write side is shut down: an ordinary send fails with EPIPE too,
                            // so tell them apart by the flush, which has nothing left to report.
                            stream.flush().await.expect("the error was reported once");
                        }
                    }
                })
            });
        }
    }
}

#[test]
fn ring_buffers_come_home_after_sends_behind_with_incremental_buffers() {
    // The default ring (incremental consumption, where the kernel has it): many messages share
    // a ring buffer, each echoed as a send behind of its own piece; some of the sends stall
    // behind a peer that reads late. Once the echoes are over, every ring buffer is home.
    if !testkit::kernel_at_least(6, 12) {
        common::skipped(
            "incremental ring buffers and sends behind",
            "incremental consumption needs Linux 6.12",
        );
        return;
    }
    within(Duration::from_secs(60), || {
        let runtime = proactor::Runtime::new().unwrap();
        if !has_ring(&runtime, "incremental ring buffers and sends behind") {
            return;
        }
        let total = runtime.ring_buffers_available().unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = proactor::spawn(common::serve_with(listener, echo_behind_small_buffers));
            let before = proactor::stats();
            // Small messages, many to a buffer, from several connections at once.
            let small: Vec<_> = (0..8u64)
                .map(|i| std::thread::spawn(move || blocking_round_trip(addr, Rng::new(i).bytes(100_000), i)))
                .collect();
            // And a peer that sends 512 KiB and reads nothing until the server's sends behind have
            // stalled on its window.
            let (go, reading) = mpsc::channel::<()>();
            let slow = std::thread::spawn(move || {
                let conn = std::net::TcpStream::connect(addr).unwrap();
                testkit::small_buffers(&conn, 16 << 10);
                conn.set_read_timeout(Some(testkit::PATIENCE)).unwrap();
                let data = Rng::new(99).bytes(512 << 10);
                let mut writer = conn.try_clone().unwrap();
                let sending = data.clone();
                let sender = std::thread::spawn(move || {
                    writer.write_all(&sending).unwrap();
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                reading.recv().unwrap();
                let mut echoed = Vec::new();
                (&conn).read_to_end(&mut echoed).unwrap();
                sender.join().unwrap();
                echoed == data
            });
            eventually_async("a send behind stalled", || {
                proactor::stats().since(&before).sends_continued > 0
            })
            .await;
            go.send(()).unwrap();
            for (i, client) in small.into_iter().enumerate() {
                assert!(joined(client).await == Rng::new(i as u64).bytes(100_000), "connection {i}");
            }
            assert!(joined(slow).await, "the slow peer's echo differs");
            let used = proactor::stats().since(&before);
            assert!(used.sends_behind > 0 && used.sends_continued > 0, "{used:?}");
            eventually_async("every ring buffer home after the echoes", || {
                proactor::stats().ring_buffers == Some((total, total))
            })
            .await;
            server.abort();
        });
    });
}
