//! UDP echo (RFC 862) on every runtime that can serve it (reactor; proactor on io_uring and on
//! epoll; POSIX aio refuses, and only connected sockets work there), over IPv4 and IPv6:
//! byte-exact echoes from 0 to 65,507 bytes, many sockets at once, a peer that disappears,
//! truncation detection, a flood that must not starve another socket, and receives cancelled
//! without losing the next datagram. Loopback only; every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use echo::server::RuntimeKind;
use testkit::{within, Rng};

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
            // 32 server sockets on one runtime, each with 8 peers.
            let servers: Vec<SocketAddr> = (0..32)
                .map(|_| echo::server::spawn_udp(kind, "127.0.0.1:0".parse().unwrap()).unwrap())
                .collect();
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
        for kind in [RuntimeKind::Uring, RuntimeKind::ProactorEpoll, RuntimeKind::Aio] {
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
    assert!(echo::server::spawn_udp(RuntimeKind::Aio, "127.0.0.1:0".parse().unwrap()).is_err());
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
/// pinged: the budget makes the flooded socket's task yield, so the pings are answered.
#[test]
fn a_flood_on_one_socket_does_not_starve_another() {
    within(Duration::from_secs(90), || {
        for kind in SERVING {
            let (flooded, pinged) = two_sockets_on_one_runtime(kind);
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flooder = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                    socket.set_nonblocking(true).unwrap(); // never block on the echoes it ignores
                    let mut buf = [0; 2048];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = socket.send_to(&[0; 1000], flooded);
                        while socket.recv_from(&mut buf).is_ok() {}
                    }
                })
            };
            std::thread::sleep(Duration::from_millis(100));
            let client = client_for(pinged);
            client.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let started = Instant::now();
            let mut answered = 0;
            for i in 0..20u8 {
                // (A ping can be lost to the flood's load on loopback; most must come back.)
                if round_trip(&client, pinged, &[i; 32]).is_some_and(|echo| echo == [i; 32]) {
                    answered += 1;
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            flooder.join().unwrap();
            assert!(
                answered >= 15,
                "{kind}: only {answered} of 20 pings answered in {:?}",
                started.elapsed()
            );
        }
    });
}

/// Two echo sockets served by one runtime on one thread.
fn two_sockets_on_one_runtime(kind: RuntimeKind) -> (SocketAddr, SocketAddr) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || match kind {
        RuntimeKind::Reactor => reactor::block_on(async move {
            let a = reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = reactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.send((a.local_addr().unwrap(), b.local_addr().unwrap())).unwrap();
            reactor::spawn(echo::udp::handle_udp(a));
            let _ = echo::udp::handle_udp(b).await;
        }),
        _ => echo::server::proactor_runtime(kind).unwrap().block_on(async move {
            let a = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.send((a.local_addr().unwrap(), b.local_addr().unwrap())).unwrap();
            proactor::spawn(echo::udp::handle_udp(a));
            let _ = echo::udp::handle_udp(b).await;
        }),
    });
    rx.recv().unwrap()
}

#[test]
fn a_receive_cancelled_after_its_datagram_came_does_not_let_the_next_one_overtake_it() {
    // The first receive is in the kernel when datagrams A and B arrive; its future is dropped
    // before the loop has seen its completion (A). The next receive must return A (kept for
    // it), not B, which a receive submitted at once would take from the kernel first.
    for kind in [RuntimeKind::Uring, RuntimeKind::ProactorEpoll] {
        within(Duration::from_secs(10), move || {
            echo::server::proactor_runtime(kind).unwrap().block_on(async move {
                let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
                let to = socket.local_addr().unwrap();
                let mut first = Box::pin(socket.recv_from(Vec::with_capacity(8)));
                // Polled once (submitted), then the loop turns (the kernel has it).
                std::future::poll_fn(|cx| {
                    assert!(std::future::Future::poll(first.as_mut(), cx).is_pending());
                    std::task::Poll::Ready(())
                })
                .await;
                proactor::yield_now().await;
                peer.send_to(b"A", to).unwrap();
                peer.send_to(b"B", to).unwrap();
                std::thread::sleep(Duration::from_millis(20)); // both are in the kernel
                drop(first);
                let (received, buf) = socket.recv_from(Vec::with_capacity(8)).await;
                received.unwrap();
                assert_eq!(buf, b"A", "{kind}");
                let (received, buf) = socket.recv_from(Vec::with_capacity(8)).await;
                received.unwrap();
                assert_eq!(buf, b"B", "{kind}");
            })
        });
    }
}
