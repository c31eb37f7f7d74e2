//! The seed's classic I/O models (`echo::models`) pass the same echo checks as the runtimes, at
//! a smaller scale: random payloads in random chunks, binary data, half-close, a hundred
//! connections at once, a slow reader, resets, IPv6.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use echo::models::{self, Model};
use testkit::{blocking_round_trip, within, Rng};

fn server(model: Model, ipv6: bool) -> SocketAddr {
    let addr: SocketAddr = if ipv6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
    models::spawn(model, addr).unwrap_or_else(|e| panic!("starting the {model} server: {e}"))
}

fn for_each_model(test: impl Fn(Model)) {
    for model in Model::ALL {
        test(model);
    }
}

#[test]
fn random_payloads_in_random_chunks_come_back_byte_exact() {
    for_each_model(|model| {
        let addr = server(model, false);
        let clients: Vec<_> = (0..8u64)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new(c + 1);
                    let len = rng.range(1, 300_000);
                    let data = rng.bytes(len);
                    blocking_round_trip(addr, data.clone(), c) == data
                })
            })
            .collect();
        within(Duration::from_secs(60), move || {
            for client in clients {
                assert!(client.join().unwrap(), "{model}: an echo differs from what was sent");
            }
        });
    });
}

#[test]
fn a_mebibyte_with_nuls_comes_back_and_half_close_ends_the_stream() {
    for_each_model(|model| {
        let addr = server(model, false);
        let mut data = Rng::new(9).bytes(1 << 20);
        data[1000..5000].fill(0);
        let expected = data.clone();
        let echoed = within(Duration::from_secs(60), move || blocking_round_trip(addr, data, 4));
        assert!(
            echoed == expected,
            "{model}: {} of {} bytes, or different bytes",
            echoed.len(),
            expected.len()
        );
    });
}

#[test]
fn a_hundred_connections_at_once_all_echo() {
    for_each_model(|model| {
        let addr = server(model, false);
        within(Duration::from_secs(60), move || {
            let mut conns: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(addr).unwrap()).collect();
            for round in 0..3 {
                for (i, conn) in conns.iter_mut().enumerate() {
                    conn.write_all(format!("{model} {i:03} {round}").as_bytes()).unwrap();
                }
                for (i, conn) in conns.iter_mut().enumerate() {
                    let expected = format!("{model} {i:03} {round}");
                    let mut back = vec![0; expected.len()];
                    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    conn.read_exact(&mut back).unwrap();
                    assert_eq!(back, expected.as_bytes(), "{model}");
                }
            }
        });
    });
}

#[test]
fn a_slow_reader_gets_everything_in_order() {
    for_each_model(|model| {
        let addr = server(model, false);
        let data = Rng::new(5).bytes(4 << 20);
        let expected = data.clone();
        let echoed = within(Duration::from_secs(60), move || {
            let conn = TcpStream::connect(addr).unwrap();
            let mut writer = conn.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                writer.write_all(&data).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut reader = conn;
            let mut echoed = Vec::new();
            let mut buf = [0; 8192];
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                echoed.extend_from_slice(&buf[..n]);
                std::thread::sleep(Duration::from_micros(200));
            }
            sender.join().unwrap();
            echoed
        });
        assert!(echoed == expected, "{model}: the slow reader's bytes differ");
    });
}

#[test]
fn resets_do_not_disturb_the_server_and_ipv6_works() {
    for_each_model(|model| {
        let addr = server(model, false);
        for _ in 0..10 {
            let mut conn = TcpStream::connect(addr).unwrap();
            let _ = conn.write_all(&[1; 100_000]);
            // Dropped with unread data: the kernel sends a reset.
        }
        let echoed =
            within(Duration::from_secs(20), move || blocking_round_trip(addr, b"still here".to_vec(), 1));
        assert_eq!(echoed, b"still here", "{model}");

        let addr = server(model, true);
        let echoed =
            within(Duration::from_secs(20), move || blocking_round_trip(addr, b"over six".to_vec(), 2));
        assert_eq!(echoed, b"over six", "{model}");
    });
}
