//! Echo correctness: every byte comes back, in order, whatever the size and chunking.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{blocking_round_trip, echo_plain, serve, spawn_server_thread, within, Rng};
use futures::{AsyncReadExt, AsyncWriteExt};
use reactor::net::{TcpListener, TcpStream};

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

#[test]
fn runtime_client_and_server_echo_through_async_read_write() {
    // Client and server both on this runtime: the client writes and reads concurrently through
    // the `futures_io` traits on the two halves of one stream.
    let data = Rng::new(3).bytes(4 << 20);
    let expected = data.clone();
    let echoed = within(Duration::from_secs(60), move || {
        reactor::block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            reactor::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                echo_plain(stream).await.unwrap();
            });
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // Explicit: `futures::AsyncReadExt::split` (by value) would win method resolution.
            let (mut reader, mut writer) = TcpStream::split(&mut stream);
            let send = async {
                let mut rng = Rng::new(9);
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let n = rng.range(1, 100_000).min(rest.len());
                    writer.write_all(&rest[..n]).await.unwrap();
                    rest = &rest[n..];
                }
                writer.close().await.unwrap();
            };
            let mut echoed = Vec::new();
            let receive = reader.read_to_end(&mut echoed);
            let ((), received) = futures::join!(send, receive);
            received.unwrap();
            echoed
        })
    });
    assert!(echoed == expected, "echoed {} bytes, sent {}", echoed.len(), expected.len());
}

#[test]
fn a_thousand_concurrent_connections_all_echo() {
    let results = within(Duration::from_secs(60), || {
        reactor::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            reactor::spawn(serve(listener));
            let clients: Vec<_> = (0..1000u64)
                .map(|i| {
                    reactor::spawn(async move {
                        let mut rng = Rng::new(i + 1);
                        let mut stream = TcpStream::connect(addr).await?;
                        for _ in 0..3 {
                            let len = rng.range(1, 3000);
                            let msg = rng.bytes(len);
                            stream.write_all(&msg).await?;
                            let mut back = vec![0; msg.len()];
                            let mut got = 0;
                            while got < back.len() {
                                match stream.read(&mut back[got..]).await? {
                                    0 => return Ok(false),
                                    n => got += n,
                                }
                            }
                            if back != msg {
                                return Ok(false);
                            }
                        }
                        Ok::<bool, std::io::Error>(true)
                    })
                })
                .collect();
            let mut ok = 0;
            for client in clients {
                if matches!(client.await, Ok(Ok(true))) {
                    ok += 1;
                }
            }
            ok
        })
    });
    assert_eq!(results, 1000, "connections that echoed correctly");
}

#[test]
fn ipv6_loopback_echoes() {
    let echoed = within(Duration::from_secs(20), || {
        reactor::block_on(async {
            let listener = match TcpListener::bind("[::1]:0") {
                Ok(listener) => listener,
                Err(e) => panic!("binding [::1]: {e} (is IPv6 loopback configured?)"),
            };
            let addr = listener.local_addr().unwrap();
            assert!(addr.is_ipv6());
            reactor::spawn(serve(listener));
            let mut stream = TcpStream::connect(addr).await.unwrap();
            assert!(stream.peer_addr().unwrap().is_ipv6());
            stream.write_all(b"over six").await.unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
            let mut back = Vec::new();
            let mut buf = [0; 64];
            loop {
                match stream.read(&mut buf).await.unwrap() {
                    0 => break back,
                    n => back.extend_from_slice(&buf[..n]),
                }
            }
        })
    });
    assert_eq!(echoed, b"over six");
}

#[test]
fn half_close_gets_every_byte_then_end_of_stream() {
    let addr = spawn_server_thread();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let data = Rng::new(5).bytes(300_000);
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    stream.read_to_end(&mut echoed).unwrap(); // returns only at the server's end of stream
    sender.join().unwrap();
    assert!(echoed == data);
}

#[test]
fn many_short_bursts_in_tiny_writes_never_hang() {
    // Clients on their own threads send bursts split into several tiny writes, so readiness
    // edges keep arriving while the server reads, and reads often come back short. Clearing
    // readiness when data is still waiting hangs a client; the read timeout turns that into a
    // failure.
    let addr = spawn_server_thread();
    let clients: Vec<_> = (0..8u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(100 + c);
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                for round in 0..1500 {
                    let len = rng.range(1, 300);
                    let burst = rng.bytes(len);
                    let mut rest = &burst[..];
                    while !rest.is_empty() {
                        let n = rng.range(1, 64).min(rest.len());
                        stream.write_all(&rest[..n]).unwrap();
                        rest = &rest[n..];
                    }
                    let mut back = vec![0; burst.len()];
                    if let Err(e) = stream.read_exact(&mut back) {
                        panic!("client {c}, round {round}: no echo ({e}): a readiness edge was lost");
                    }
                    assert_eq!(back, burst);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let err = reactor::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        TcpStream::connect(addr).await.unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn peers_that_reset_mid_stream_do_not_disturb_the_server() {
    let addr = spawn_server_thread();
    // Each client writes 200 kB and closes without reading: the echo piles up unread in its
    // receive queue, so the close sends a RST while the server is still writing.
    for _ in 0..20 {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = stream.write_all(&[7; 200_000]);
    }
    let echoed = blocking_round_trip(addr, b"still here".to_vec(), 1);
    assert_eq!(echoed, b"still here");
}

#[test]
fn urgent_data_in_the_middle_of_a_stream_does_not_stall_the_rest() {
    // A TCP read stops short at the urgent mark with more data queued behind it: a short read
    // must not be taken as "drained" then, or the rest waits forever.
    let peer_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = peer_listener.local_addr().unwrap();
    let got = within(Duration::from_secs(20), move || {
        reactor::block_on(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let (mut peer, _) = peer_listener.accept().unwrap();
            peer.write_all(b"hello").unwrap();
            send_urgent(&peer, b'X');
            peer.write_all(b"world").unwrap();
            // Everything is in the receive queue before the first read (acknowledged: the
            // receive queue's own count stops at the urgent mark).
            common::eventually_async("all of it arrived", || testkit::unacknowledged_bytes(&peer) == 0).await;
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 10 {
                match reactor::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
                    Ok(n) => got.extend_from_slice(&buf[..n.unwrap()]),
                    Err(_) => panic!(
                        "stalled after {:?}: data behind the urgent mark was never read",
                        String::from_utf8_lossy(&got)
                    ),
                }
            }
            got
        })
    });
    // The urgent byte itself is out of band (no SO_OOBINLINE), so it is not in the stream.
    assert_eq!(got, b"helloworld");
}

fn send_urgent(stream: &std::net::TcpStream, byte: u8) {
    use std::os::fd::AsRawFd;
    // SAFETY: sends one byte from a live local; the fd is a connected socket owned by `stream`.
    let sent = unsafe { libc::send(stream.as_raw_fd(), (&byte as *const u8).cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1, "send(MSG_OOB): {}", std::io::Error::last_os_error());
}
