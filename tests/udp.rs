//! UDP echo (RFC 862) on every runtime that can serve it (reactor; proactor on io_uring and on
//! epoll; POSIX aio refuses, and only connected sockets work there), over IPv4 and IPv6:
//! byte-exact echoes from 0 to 65,507 bytes, many sockets on one runtime, a peer that
//! disappears, truncation detection, a flood that must not starve another socket, and receives
//! cancelled without losing the next datagram. Loopback only; every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use echo::server::RuntimeKind;
use testkit::{eventually, eventually_async, poll_once, within, Rng};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

/// The details if `e` is a truncated datagram, named through a runtime's `net` as a program
/// would (both runtimes' `net::DatagramTruncated` are the one type).
fn as_truncated(e: &std::io::Error) -> Option<&proactor::net::DatagramTruncated> {
    let cut: Option<&reactor::net::DatagramTruncated> = e.get_ref().and_then(|inner| inner.downcast_ref());
    cut
}

/// The runtimes that serve UDP.
const SERVING: [RuntimeKind; 3] = [RuntimeKind::Reactor, RuntimeKind::Uring, RuntimeKind::ProactorEpoll];

const LOOPBACKS: [&str; 2] = ["127.0.0.1:0", "[::1]:0"];

/// Sizes from 0 to 65,507, dense near the edges: every size up to 64, each power of two and
/// its neighbours, the IPv4 fragment edge, and the last 32 sizes.
fn sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (0..=64).collect();
    for shift in 7..=16 {
        let p = 1usize << shift;
        sizes.extend([p - 1, p, p + 1]);
    }
    sizes.extend([1472, 1473, 8972, 8973, 32_000, 65_000]);
    sizes.extend(65_476..=65_507);
    sizes.retain(|&n| n <= 65_507);
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// A blocking client socket of `server`'s family, with a receive timeout.
fn client_for(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }.parse().unwrap();
    let socket = UdpSocket::bind(local).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket
}

/// Sends `data` to `server` and returns the echo (none if nothing came back in time).
fn round_trip(client: &UdpSocket, server: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    client.send_to(data, server).unwrap();
    let mut buf = vec![0; 65_536];
    let (n, from) = client.recv_from(&mut buf).ok()?;
    assert_eq!(from, server, "the echo comes from the server's address");
    buf.truncate(n);
    Some(buf)
}

#[test]
fn every_size_from_0_to_65507_bytes_echoes_byte_exact_on_every_runtime_and_family() {
    within(Duration::from_secs(120), || {
        let mut rng = Rng::new(17);
        for kind in SERVING {
            for local in LOOPBACKS {
                let server = echo::server::spawn_udp(kind, local.parse().unwrap()).unwrap();
                let client = client_for(server);
                for n in sizes() {
                    let data = rng.bytes(n);
                    let echoed = round_trip(&client, server, &data)
                        .unwrap_or_else(|| panic!("{kind} {local}: no echo of {n} bytes"));
                    assert!(echoed == data, "{kind} {local}: the echo of {n} bytes differs");
                }
            }
        }
    });
}

#[test]
fn many_sockets_on_one_runtime_and_many_peers_on_one_socket_all_get_their_echoes() {
    within(Duration::from_secs(60), || {
        for kind in SERVING {
            // 32 server sockets on one runtime (one thread), each with 8 peers.
            let servers = sockets_on_one_runtime(kind, 32);
            let peers: Vec<UdpSocket> = (0..8).map(|_| client_for(servers[0])).collect();
            for (s, server) in servers.iter().enumerate() {
                for (p, peer) in peers.iter().enumerate() {
                    peer.send_to(format!("{s}/{p}").as_bytes(), server).unwrap();
                }
            }
            for peer in &peers {
                let mut got = Vec::new();
                let mut buf = [0; 64];
                for _ in &servers {
                    let (n, _) = peer.recv_from(&mut buf).expect("every echo comes back");
                    got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                got.sort();
                let p =
                    peers.iter().position(|q| q.local_addr().unwrap() == peer.local_addr().unwrap()).unwrap();
                let mut want: Vec<String> = (0..servers.len()).map(|s| format!("{s}/{p}")).collect();
                want.sort();
                assert_eq!(got, want, "{kind}");
            }
        }
    });
}

#[test]
fn a_peer_that_disappears_does_not_stop_the_server() {
    within(Duration::from_secs(60), || {
        for kind in SERVING {
            let server = echo::server::spawn_udp(kind, "127.0.0.1:0".parse().unwrap()).unwrap();
            // Peers that send and close before the echo: the server's replies go to closed
            // ports (ICMP port unreachable comes back).
            for _ in 0..50 {
                let gone = client_for(server);
                gone.send_to(&[1; 100], server).unwrap();
                drop(gone);
            }
            let client = client_for(server);
            assert_eq!(
                round_trip(&client, server, b"still there").as_deref(),
                Some(&b"still there"[..]),
                "{kind}"
            );
        }
    });
}

/// A connected socket of each runtime hears `ECONNREFUSED` after sending where nobody
/// listens, and goes on working.
#[test]
fn a_connected_socket_reports_a_refused_peer_and_keeps_working() {
    within(Duration::from_secs(60), || {
        let nobody = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap() // closed when `s` drops: nobody listens there
        };
        let echo = echo::server::spawn_udp(RuntimeKind::Reactor, "127.0.0.1:0".parse().unwrap()).unwrap();
        reactor::block_on(async {
            let socket = reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(nobody).unwrap();
            socket.send(b"anyone?").await.unwrap();
            let mut buf = [0; 16];
            let refused = reactor::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await;
            let e = refused.expect("an answer in time").expect_err("nobody listens");
            assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
            socket.connect(echo).unwrap();
            socket.send(b"hello").await.unwrap();
            let n = socket.recv(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hello");
        });
        for kind in RuntimeKind::ALL.into_iter().filter(|&kind| kind != RuntimeKind::Reactor) {
            echo::server::proactor_runtime(kind).unwrap().block_on(async {
                let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(nobody).unwrap();
                socket.send(&b"anyone?"[..]).await.0.unwrap();
                let refused =
                    proactor::time::timeout(Duration::from_secs(5), socket.recv(Vec::with_capacity(16)))
                        .await;
                let e = refused.expect("an answer in time").0.expect_err("nobody listens");
                assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{kind}");
                socket.connect(echo).unwrap();
                socket.send(&b"hello"[..]).await.0.unwrap();
                let (n, buf) = socket.recv(Vec::with_capacity(16)).await;
                assert_eq!(n.unwrap(), 5, "{kind}");
                assert_eq!(buf, b"hello", "{kind}");
            });
        }
    });
}

#[test]
fn a_datagram_larger_than_the_buffer_is_reported_truncated_not_returned_cut() {
    within(Duration::from_secs(60), || {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        reactor::block_on(async {
            let socket = reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = socket.local_addr().unwrap();
            client.send_to(&[7; 200], to).unwrap();
            client.send_to(&[8; 100], to).unwrap();
            let mut buf = [0; 100];
            let e = socket.recv_from(&mut buf).await.expect_err("200 bytes do not fit 100");
            let cut = as_truncated(&e).expect("a truncation error");
            assert_eq!((cut.len, cut.capacity, cut.from), (200, 100, Some(client.local_addr().unwrap())));
            // The next datagram, exactly the buffer's size, fits.
            assert_eq!(socket.recv_from(&mut buf).await.unwrap().0, 100);
            assert_eq!(buf, [8; 100]);
        });
        for kind in [RuntimeKind::Uring, RuntimeKind::ProactorEpoll] {
            echo::server::proactor_runtime(kind).unwrap().block_on(async {
                let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let to = socket.local_addr().unwrap();
                client.send_to(&[7; 200], to).unwrap();
                client.send_to(&[8; 100], to).unwrap();
                let (received, _) = socket.recv_from(Vec::with_capacity(100)).await;
                let e = received.expect_err("200 bytes do not fit 100");
                assert_eq!(as_truncated(&e).map(|t| (t.len, t.capacity)), Some((200, 100)), "{kind}");
                let (received, buf) = socket.recv_from(Vec::with_capacity(100)).await;
                assert_eq!(received.unwrap().0, 100, "{kind}");
                assert_eq!(buf, [8; 100], "{kind}");
            });
        }
    });
}

#[test]
fn posix_aio_refuses_recv_from_and_send_to_with_a_reason() {
    echo::server::aio_runtime().unwrap().block_on(async {
        let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = socket.local_addr().unwrap();
        let (sent, _) = socket.send_to(vec![1], to).await;
        let e = sent.expect_err("no aio sendto");
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("POSIX aio"), "{e}");
        let (received, _) = socket.recv_from(Vec::with_capacity(8)).await;
        assert_eq!(received.expect_err("no aio recvfrom").kind(), std::io::ErrorKind::Unsupported);
    });
    assert!(echo::server::spawn_udp(RuntimeKind::AIO, "127.0.0.1:0".parse().unwrap()).is_err());
}

/// Receives time out again and again while datagrams arrive at random moments: every datagram
/// is received exactly once, in order (one sender on loopback keeps order), whether the
/// receive that took it from the kernel was still awaited or had just been cancelled.
#[test]
fn cancelled_receives_lose_no_datagram() {
    within(Duration::from_secs(60), || {
        const N: u32 = 200;
        let sender = |to: SocketAddr| {
            std::thread::spawn(move || {
                let client = UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut rng = Rng::new(3);
                for i in 0..N {
                    std::thread::sleep(Duration::from_micros(rng.range(0, 1500) as u64));
                    client.send_to(&i.to_be_bytes(), to).unwrap();
                }
            })
        };
        reactor::block_on(async {
            let socket = reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let sending = sender(socket.local_addr().unwrap());
            let mut next = 0u32;
            let mut buf = [0; 8];
            while next < N {
                let wait = Duration::from_micros(300);
                if let Ok(received) = reactor::time::timeout(wait, socket.recv_from(&mut buf)).await {
                    assert_eq!(received.unwrap().0, 4);
                    assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()), next);
                    next += 1;
                }
            }
            sending.join().unwrap();
        });
        for kind in [RuntimeKind::Uring, RuntimeKind::ProactorEpoll] {
            echo::server::proactor_runtime(kind).unwrap().block_on(async {
                let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let sending = sender(socket.local_addr().unwrap());
                let (mut next, mut cancelled) = (0u32, 0);
                while next < N {
                    let wait = Duration::from_micros(300);
                    match proactor::time::timeout(wait, socket.recv_from(Vec::with_capacity(8))).await {
                        Ok((received, buf)) => {
                            assert_eq!(received.unwrap().0, 4, "{kind}");
                            assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()), next, "{kind}");
                            next += 1;
                        }
                        Err(_) => cancelled += 1,
                    }
                }
                assert!(cancelled > 0, "{kind}: some receives were cancelled");
                sending.join().unwrap();
                // The multishot receive too: dropping a waiting `recv_from_provided` loses nothing.
                let client = UdpSocket::bind("127.0.0.1:0").unwrap();
                let to = socket.local_addr().unwrap();
                let timed_out =
                    proactor::time::timeout(Duration::from_millis(20), socket.recv_from_provided()).await;
                assert!(timed_out.is_err(), "{kind}: nothing was sent yet");
                client.send_to(b"after", to).unwrap();
                let (datagram, from) = socket.recv_from_provided().await.unwrap();
                assert_eq!((&datagram[..], from), (&b"after"[..], client.local_addr().unwrap()), "{kind}");
            });
        }
    });
}

/// One peer floods one socket as fast as it can while another socket of the same runtime is
/// pinged: the budget makes the flooded socket's task yield, so every ping is answered, and the
/// flood goes on being echoed. (A ping lost to the flood's load on loopback is sent again;
/// a runtime that starved the pinged socket would answer none.)
#[test]
fn a_flood_on_one_socket_does_not_starve_another() {
    within(Duration::from_secs(90), || {
        for kind in SERVING {
            let servers = sockets_on_one_runtime(kind, 2);
            let (flooded, pinged) = (servers[0], servers[1]);
            let stop = Arc::new(AtomicBool::new(false));
            let flood_echoes = Arc::new(AtomicU64::new(0));
            // The flood: one thread sends without pause (one syscall a datagram, where the
            // server needs two: its socket's buffer stays full, so the socket is always ready),
            // another counts the echoes.
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let flooder = {
                let (stop, socket) = (stop.clone(), socket.try_clone().unwrap());
                socket.set_nonblocking(true).unwrap();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = socket.send_to(&[0; 1000], flooded);
                    }
                })
            };
            let counter = {
                let (stop, flood_echoes) = (stop.clone(), flood_echoes.clone());
                std::thread::spawn(move || {
                    let mut buf = [0; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if socket.recv_from(&mut buf).is_ok() {
                            flood_echoes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            };
            eventually(format!("{kind}: the flood is being echoed"), || {
                flood_echoes.load(Ordering::Relaxed) > 0
            });
            let client = client_for(pinged);
            client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            for i in 0..20u8 {
                let mut sent = 0;
                loop {
                    assert!(sent < 30, "{kind}: ping {i} sent {sent} times, never answered");
                    client.send_to(&[i; 32], pinged).unwrap();
                    sent += 1;
                    // Echoes of pings sent again may come late: skip them.
                    let mut buf = [0; 64];
                    let mut answered = false;
                    while let Ok((n, _)) = client.recv_from(&mut buf) {
                        if buf[..n] == [i; 32] {
                            answered = true;
                            break;
                        }
                    }
                    if answered {
                        break;
                    }
                }
            }
            // And the flooded socket is still served.
            let after = flood_echoes.load(Ordering::Relaxed);
            eventually(format!("{kind}: the flood is still being echoed"), || {
                flood_echoes.load(Ordering::Relaxed) > after
            });
            stop.store(true, Ordering::Relaxed);
            flooder.join().unwrap();
            counter.join().unwrap();
        }
    });
}

/// The budget is what keeps a flooded socket's task from holding its thread: with a budget of 4
/// operations per poll, a socket with 300 datagrams queued is read to the end, one datagram at
/// a time, while another task counts how often it gets to run. The reader must yield (once per
/// 4 receives) though every receive finds a datagram at once.
/// (io_uring and the epoll emulation wait a loop turn for every operation, so they yield at
/// each; the reactor, which makes the syscall itself, yields only for the budget.)
#[test]
fn an_always_ready_socket_cannot_keep_its_task_running() {
    const QUEUED: u32 = 300;
    for kind in SERVING {
        within(Duration::from_secs(30), move || {
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            // Sends QUEUED datagrams to the runtime's socket, all queued before it reads; then
            // reads them one by one while another task counts its turns.
            macro_rules! run {
                ($rt:ident, $runtime:expr, |$socket:ident| $recv:expr) => {
                    $runtime.block_on(async {
                        let $socket = $rt::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                        let to = $socket.local_addr().unwrap();
                        room_for_many_datagrams(&$socket);
                        for i in 0..QUEUED {
                            client.send_to(&i.to_be_bytes(), to).unwrap();
                        }
                        let ran = std::rc::Rc::new(std::cell::Cell::new(0u32));
                        let counting = ran.clone();
                        let other = $rt::spawn(async move {
                            loop {
                                counting.set(counting.get() + 1);
                                $rt::yield_now().await;
                            }
                        });
                        // The first receive waits for the socket to be known readable (the other
                        // task runs meanwhile); from then on every receive finds a datagram.
                        {
                            let $socket = &$socket;
                            assert_eq!($recv, 0, "{kind}: datagram 0");
                        }
                        let before = ran.get();
                        for i in 1..QUEUED {
                            assert_eq!($recv, i, "{kind}: datagram {i}");
                        }
                        let ran = ran.get() - before;
                        other.abort();
                        assert!(
                            ran >= QUEUED / 128,
                            "{kind}: the other task ran {ran} times during {QUEUED} receives"
                        );
                    })
                };
            }
            match kind {
                RuntimeKind::Reactor => {
                    run!(reactor, reactor::Builder::new().task_budget(4).build().unwrap(), |socket| {
                        let mut buf = [0; 8];
                        let (n, _) = socket.recv_from(&mut buf).await.unwrap();
                        u32::from_be_bytes(buf[..n].try_into().unwrap())
                    })
                }
                _ => run!(proactor, budget_of_four(kind), |socket| {
                    let (received, buf) = socket.recv_from(Vec::with_capacity(8)).await;
                    received.unwrap();
                    u32::from_be_bytes(buf[..].try_into().unwrap())
                }),
            }
        });
    }
}

/// A proactor runtime on `kind`'s backend with a budget of 4 operations per task poll.
fn budget_of_four(kind: RuntimeKind) -> proactor::Runtime {
    let backend =
        if kind == RuntimeKind::Uring { proactor::Backend::IoUring } else { proactor::Backend::Epoll };
    proactor::Builder::new().backend(backend).task_budget(4).build().unwrap()
}

/// Raises a socket's receive buffer (the kernel doubles the value, up to its limit): room for
/// hundreds of small datagrams.
fn room_for_many_datagrams(socket: &impl std::os::fd::AsRawFd) {
    let room: libc::c_int = 1 << 20;
    // SAFETY: passes a pointer to a live c_int and its size; the fd is a socket.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&room as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_RCVBUF): {}", std::io::Error::last_os_error());
}

/// `n` echo sockets served by one runtime on one thread; their addresses.
fn sockets_on_one_runtime(kind: RuntimeKind, n: usize) -> Vec<SocketAddr> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || match kind {
        RuntimeKind::Reactor => reactor::block_on(async move {
            let sockets: Vec<_> =
                (0..n).map(|_| reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
            tx.send(sockets.iter().map(|s| s.local_addr().unwrap()).collect::<Vec<_>>()).unwrap();
            let tasks: Vec<_> =
                sockets.into_iter().map(|s| reactor::spawn(echo::udp::handle_udp(s))).collect();
            for task in tasks {
                let _ = task.await;
            }
        }),
        _ => echo::server::proactor_runtime(kind).unwrap().block_on(async move {
            let sockets: Vec<_> =
                (0..n).map(|_| proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
            tx.send(sockets.iter().map(|s| s.local_addr().unwrap()).collect::<Vec<_>>()).unwrap();
            let tasks: Vec<_> =
                sockets.into_iter().map(|s| proactor::spawn(echo::udp::handle_udp(s))).collect();
            for task in tasks {
                let _ = task.await;
            }
        }),
    });
    rx.recv_timeout(testkit::PATIENCE).unwrap()
}

#[test]
fn a_receive_cancelled_after_its_datagram_came_keeps_it_for_the_next_one_in_order() {
    // The first receive takes datagram A from the kernel; its future is dropped before anyone
    // saw that. The next receive must return A (kept for it), then B, not B first, which a
    // receive started at once would take from the kernel. Made to happen, and checked to have
    // happened (`recvs_kept`): on each backend the loop turns with A's completion stored in the
    // operation and nobody looking; on io_uring also with the receive in the kernel when A
    // comes and its cancel queued before the loop turns again.
    for kind in [RuntimeKind::Uring, RuntimeKind::ProactorEpoll] {
        within(Duration::from_secs(10), move || {
            echo::server::proactor_runtime(kind).unwrap().block_on(async move {
                let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
                let to = socket.local_addr().unwrap();
                let next_two = || async {
                    for expected in [&b"A"[..], b"B"] {
                        let (received, buf) = socket.recv_from(Vec::with_capacity(8)).await;
                        received.unwrap();
                        assert_eq!(buf, expected, "{kind}");
                    }
                };

                // Completed, not yet seen.
                let mut first = Box::pin(socket.recv_from(Vec::with_capacity(8)));
                assert!(poll_once(first.as_mut()).await.is_pending(), "{kind}: nothing was sent yet");
                peer.send_to(b"A", to).unwrap();
                peer.send_to(b"B", to).unwrap();
                let start = proactor::stats();
                eventually_async(format!("{kind}: the first receive completed"), || {
                    proactor::stats().since(&start).recvs > 0
                })
                .await;
                drop(first);
                assert_eq!(proactor::stats().since(&start).recvs_kept, 1, "{kind}: A was not kept");
                next_two().await;

                // In the kernel when A comes, the cancel queued before the loop turns again.
                if kind == RuntimeKind::Uring {
                    let mut first = Box::pin(socket.recv_from(Vec::with_capacity(8)));
                    assert!(poll_once(first.as_mut()).await.is_pending(), "{kind}: nothing was sent yet");
                    proactor::yield_now().await; // the loop turns: the kernel has the receive
                    peer.send_to(b"A", to).unwrap();
                    peer.send_to(b"B", to).unwrap();
                    let start = proactor::stats();
                    drop(first);
                    next_two().await;
                    if proactor::stats().since(&start).recvs_kept == 0 {
                        testkit::skipped(
                            "a receive cancelled in the kernel after its datagram came",
                            "this kernel cancelled the receive before it took A",
                        );
                    }
                }
            })
        });
    }
}

/// An echo server of `kind` on its own thread whose socket asks for a receive buffer of
/// `recv_buffer` bytes: its address, the size the kernel kept, and the sender to say "start
/// reading" with (until then datagrams wait in the socket's buffer).
fn sized_echo_server(
    kind: RuntimeKind,
    recv_buffer: usize,
) -> (SocketAddr, usize, std::sync::mpsc::Sender<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (go, start) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || match kind {
        RuntimeKind::Reactor => reactor::block_on(async move {
            let socket = reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_recv_buffer_size(recv_buffer).unwrap();
            tx.send((socket.local_addr().unwrap(), socket.recv_buffer_size().unwrap())).unwrap();
            let _ = start.recv(); // (blocks the runtime's thread: nothing else runs on it yet)
            let _ = echo::udp::handle_udp(socket).await;
        }),
        _ => echo::server::proactor_runtime(kind).unwrap().block_on(async move {
            let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_recv_buffer_size(recv_buffer).unwrap();
            tx.send((socket.local_addr().unwrap(), socket.recv_buffer_size().unwrap())).unwrap();
            let _ = start.recv();
            let _ = echo::udp::handle_udp(socket).await;
        }),
    });
    let (addr, kept) = rx.recv().unwrap();
    (addr, kept, go)
}

/// 50 peers send a datagram of the largest size each at once, 10 times over, to an echo
/// server whose receive buffer holds such a burst: every one of the 500 comes back. The first
/// burst arrives before the server reads at all, so all 50 must fit in the buffer at once
/// (the kernel's default, 208 KiB, holds three of them); the others race the server's reads.
/// Counted, not timed: a datagram is lost if its echo does not come within 10 s.
#[test]
fn a_receive_buffer_sized_for_the_burst_loses_no_datagram_of_fifty_peers() {
    const PEERS: usize = 50;
    const ROUNDS: usize = 10;
    const SIZE: usize = 65_507;
    // Each 65,507-byte datagram costs about 66.5 KB of the buffer as the kernel counts it (twice
    // the size asked), so 2 MiB holds about 63.
    const BUFFER: usize = 2 << 20;
    within(Duration::from_secs(180), || {
        for kind in SERVING {
            let rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
                .ok()
                .and_then(|max| max.trim().parse::<usize>().ok());
            if rmem_max.is_some_and(|max| max < BUFFER) {
                eprintln!(
                    "skipped: net.core.rmem_max ({rmem_max:?}) is below {BUFFER}, too small for the burst"
                );
                return;
            }
            let (server, kept, go) = sized_echo_server(kind, BUFFER);
            assert!(kept >= BUFFER, "{kind}: the kernel kept a receive buffer of {kept} bytes");
            let peers: Vec<UdpSocket> = (0..PEERS)
                .map(|_| {
                    let peer = client_for(server);
                    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    peer
                })
                .collect();
            let mut rng = Rng::new(5);
            let mut buf = vec![0; SIZE + 1];
            let (mut echoed, mut lost) = (0, 0usize);
            for round in 0..ROUNDS {
                let sent: Vec<Vec<u8>> = peers
                    .iter()
                    .map(|peer| {
                        let mut data = rng.bytes(SIZE);
                        data[0] = round as u8;
                        peer.send_to(&data, server).unwrap();
                        data
                    })
                    .collect();
                if round == 0 {
                    go.send(()).unwrap();
                }
                for (peer, data) in peers.iter().zip(&sent) {
                    if lost > 0 {
                        // The round's echoes have had 10 s to come: do not wait that long again.
                        peer.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                    }
                    match peer.recv_from(&mut buf) {
                        Ok((n, _)) => {
                            assert!(buf[..n] == data[..], "{kind}: an echo differs");
                            echoed += 1;
                        }
                        Err(_) => lost += 1,
                    }
                }
                assert_eq!(lost, 0, "{kind}: round {round}: datagrams lost of {PEERS}");
            }
            assert_eq!(echoed, PEERS * ROUNDS, "{kind}: echoes");
        }
    });
}

/// A socket whose receive buffer holds about two datagrams is sent 40 while it does not read:
/// the kernel drops most. Every datagram sent is then either received or counted, at once, in
/// the runtime's `datagrams_dropped` and in the socket's own `drops()`, on every runtime and
/// way of receiving (POSIX aio: a connected socket's `recv`); the drops a socket had when it
/// closed are counted too.
#[test]
fn every_datagram_is_received_or_counted_as_dropped_by_the_kernel() {
    const BURST: u64 = 40;
    /// Sends the burst, checks the counts, then receives what the kernel kept: `receive` takes
    /// one (or times out, `false`), `dropped` reads the runtime's count since the start, `own`
    /// the socket's.
    async fn account<F: std::future::Future<Output = bool>>(
        label: &str,
        client: &UdpSocket,
        to: SocketAddr,
        mut receive: impl FnMut() -> F,
        dropped: impl Fn() -> u64,
        own: impl Fn() -> u32,
    ) {
        for _ in 0..BURST {
            client.send_to(&[1; 1000], to).unwrap();
        }
        let counted = dropped();
        assert!(counted > 0, "{label}: a buffer of two datagrams dropped some of {BURST}");
        assert_eq!(u64::from(own()), counted, "{label}: the socket's count and the runtime's");
        let mut received = 0u64;
        while receive().await {
            received += 1;
            assert!(received <= BURST, "{label}: more received than sent");
        }
        assert_eq!(received + dropped(), BURST, "{label}: received {received}, dropped {}", dropped());
        // Another burst, unread: drops the socket's ledger has not read when it closes.
        for _ in 0..BURST {
            client.send_to(&[3; 1000], to).unwrap();
        }
    }
    within(Duration::from_secs(60), || {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wait = Duration::from_millis(100);
        reactor::block_on(async {
            let before = reactor::stats().datagrams_dropped;
            let socket = reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_recv_buffer_size(1).unwrap(); // the kernel's least
            let receive = || async {
                let mut buf = [0; 2048];
                let received = reactor::time::timeout(wait, socket.recv_from(&mut buf)).await;
                received.map(|r| r.expect("a datagram")).is_ok()
            };
            let to = socket.local_addr().unwrap();
            let dropped = || reactor::stats().datagrams_dropped - before;
            account("reactor", &client, to, receive, dropped, || socket.drops().unwrap()).await;
            let own = socket.drops().unwrap();
            drop(socket);
            assert_eq!(dropped(), u64::from(own), "reactor: a closed socket's drops are all counted");
        });
        let mut cases: Vec<(RuntimeKind, bool)> = Vec::new();
        for kind in [RuntimeKind::Uring, RuntimeKind::ProactorEpoll] {
            cases.extend([(kind, true), (kind, false)]);
        }
        cases.push((RuntimeKind::Aio(proactor::AioNotify::default()), false));
        for (kind, provided) in cases {
            let aio = matches!(kind, RuntimeKind::Aio(_));
            echo::server::proactor_runtime(kind).unwrap().block_on(async {
                let before = proactor::stats().datagrams_dropped;
                let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.set_recv_buffer_size(1).unwrap();
                if aio {
                    // (aio reads carry no address: a connected socket's recv.)
                    socket.connect(client.local_addr().unwrap()).unwrap();
                }
                let receive = || {
                    let socket = &socket;
                    async move {
                        if provided {
                            let received = proactor::time::timeout(wait, socket.recv_from_provided()).await;
                            received.map(|r| r.expect("a datagram")).is_ok()
                        } else if aio {
                            let received =
                                proactor::time::timeout(wait, socket.recv(Vec::with_capacity(2048))).await;
                            received.map(|(r, _)| r.expect("a datagram")).is_ok()
                        } else {
                            let received = socket.recv_from(Vec::with_capacity(2048));
                            let received = proactor::time::timeout(wait, received).await;
                            received.map(|(r, _)| r.expect("a datagram")).is_ok()
                        }
                    }
                };
                let way = if provided {
                    "recv_from_provided"
                } else if aio {
                    "recv"
                } else {
                    "recv_from"
                };
                let label = format!("{kind}, {way}");
                let to = socket.local_addr().unwrap();
                let dropped = || proactor::stats().datagrams_dropped - before;
                account(&label, &client, to, receive, dropped, || socket.drops().unwrap()).await;
                let own = socket.drops().unwrap();
                drop(socket);
                assert_eq!(dropped(), u64::from(own), "{label}: a closed socket's drops are all counted");
            });
        }
    });
}

/// Datagrams sent behind all arrive, in order on loopback; a send behind that fails (a datagram
/// larger than UDP allows: `EMSGSIZE`) is reported, once, by the next `send_to_behind`, whose
/// own datagram goes out all the same. POSIX aio, without sendto, refuses at once.
#[test]
fn sends_behind_arrive_and_a_failed_one_is_reported_by_the_next() {
    within(Duration::from_secs(60), || {
        for kind in [RuntimeKind::Uring, RuntimeKind::ProactorEpoll] {
            let peer = client_for("127.0.0.1:1".parse().unwrap());
            peer.set_nonblocking(true).unwrap();
            let to = peer.local_addr().unwrap();
            echo::server::proactor_runtime(kind).unwrap().block_on(async {
                let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                for i in 0..10u8 {
                    socket.send_to_behind(vec![i], to).unwrap();
                }
                socket.send_to_behind(vec![0; 70_000], to).expect("queued: the kernel says no later");
                let mut sent = 10u8;
                let mut reported = None;
                for _ in 0..100 {
                    // A turn of the loop: the failed send's completion comes in.
                    proactor::time::sleep(Duration::from_millis(1)).await;
                    let result = socket.send_to_behind(vec![sent], to);
                    sent += 1;
                    if let Err(e) = result {
                        reported = Some(e);
                        break;
                    }
                }
                let e = reported.expect("the failed send is reported");
                assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE), "{kind}: {e}");
                socket.send_to_behind(vec![sent], to).expect("reported once only");
                sent += 1;
                // Every datagram arrives, in order (one sender, loopback).
                let (mut got, mut buf) = (Vec::new(), [0; 8]);
                for _ in 0..1000 {
                    match peer.recv_from(&mut buf) {
                        Ok((n, _)) => got.extend_from_slice(&buf[..n]),
                        Err(_) => proactor::time::sleep(Duration::from_millis(1)).await,
                    }
                    if got.len() == usize::from(sent) {
                        break;
                    }
                }
                assert_eq!(got, (0..sent).collect::<Vec<u8>>(), "{kind}");
            });
        }
        echo::server::aio_runtime().unwrap().block_on(async {
            let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let e =
                socket.send_to_behind(vec![1], "127.0.0.1:9".parse().unwrap()).expect_err("no aio sendto");
            assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
        });
    });
}
