//! The one echo handler (`echo::handle`) on every runtime: the same behaviour everywhere.
//! Clients are plain blocking std sockets on their own threads, independent of the runtimes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use conformance::server;
use echo::server::RuntimeKind;
use testkit::{blocking_round_trip, within, Rng};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

fn for_each_runtime(test: impl Fn(RuntimeKind)) {
    for kind in RuntimeKind::ALL {
        // Names the runtime in the output of a test that fails or hangs.
        eprintln!("on {kind}");
        test(kind);
    }
}

#[test]
fn random_payloads_in_random_chunks_come_back_byte_exact() {
    for_each_runtime(|kind| {
        let addr = server(kind, false);
        let clients: Vec<_> = (0..16u64)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut rng = Rng::new(c + 1);
                    let len = rng.range(1, 400_000);
                    let data = rng.bytes(len);
                    blocking_round_trip(addr, data.clone(), c) == data
                })
            })
            .collect();
        within(Duration::from_secs(60), move || {
            for client in clients {
                assert!(client.join().unwrap(), "{kind}: an echo differs from what was sent");
            }
        });
    });
}

#[test]
fn sixteen_mib_comes_back_byte_exact() {
    for_each_runtime(|kind| {
        let addr = server(kind, false);
        let data = Rng::new(7).bytes(16 << 20);
        let expected = data.clone();
        let echoed = within(Duration::from_secs(60), move || blocking_round_trip(addr, data, 3));
        assert!(echoed == expected, "{kind}: echoed {} bytes of {}", echoed.len(), expected.len());
    });
}

#[test]
fn half_close_gets_all_data_then_end_of_stream() {
    for_each_runtime(|kind| {
        let addr = server(kind, false);
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"everything before the close").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).unwrap(); // returns only at the server's end of stream
        assert_eq!(echoed, b"everything before the close", "{kind}");
    });
}

#[test]
fn a_thousand_connections_at_once_all_echo() {
    for_each_runtime(|kind| {
        let addr = server(kind, false);
        // The clients run on the reactor, 1,000 tasks on one thread.
        let ok = within(Duration::from_secs(60), move || {
            reactor::block_on(async move {
                let clients: Vec<_> = (0..1000u32).map(|i| reactor::spawn(client(addr, i))).collect();
                let mut ok = 0;
                for client in clients {
                    ok += matches!(client.await, Ok(Ok(true))) as usize;
                }
                ok
            })
        });
        assert_eq!(ok, 1000, "{kind}: connections that echoed correctly");
    });
}

async fn client(addr: SocketAddr, i: u32) -> std::io::Result<bool> {
    let mut stream = reactor::net::TcpStream::connect(addr).await?;
    let msg = format!("connection {i} says hello").into_bytes();
    stream.write_all(&msg).await?;
    let mut back = vec![0; msg.len()];
    let mut got = 0;
    while got < back.len() {
        match stream.read(&mut back[got..]).await? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    Ok(back == msg)
}

#[test]
fn ipv6_loopback_echoes() {
    for_each_runtime(|kind| {
        let addr = server(kind, true);
        assert!(addr.is_ipv6());
        let echoed =
            within(Duration::from_secs(20), move || blocking_round_trip(addr, b"over six".to_vec(), 1));
        assert_eq!(echoed, b"over six", "{kind}");
    });
}
