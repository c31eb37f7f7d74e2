//! Cancellation on every runtime: thousands of `timeout`s firing on pending reads and accepts
//! (on the proactor: in-flight operations dropped, their buffers kept by the driver until the
//! kernel or glibc is done). Afterwards every byte sent is still read exactly once and in
//! order, the server still echoes, the runtime's live count (reactor: registered fds;
//! proactor: operations in flight) is back where it started, and no fd is left open.
//!
//! Alone in its test binary, one runtime after the other: it counts this process's fds.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use echo::server::RuntimeKind;
use testkit::{blocking_round_trip, eventually, eventually_async, joined, open_fds, within, Rng};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

/// Connections, and timed-out reads per connection.
const CONNS: u64 = 40;
const READS: u32 = 40;
/// Timed-out accepts.
const ACCEPTS: u64 = 1500;

/// Connects a peer to `listener`'s address on another thread, `n` times, now and then.
fn trickle_connections(addr: SocketAddr, n: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(7);
        for _ in 0..n {
            if let Ok(conn) = std::net::TcpStream::connect(addr) {
                drop(conn);
            }
            std::thread::sleep(Duration::from_micros(rng.range(0, 3000) as u64));
        }
    })
}

/// The part every runtime shares, written once per crate (their read APIs differ: borrowed
/// buffers on the reactor, owned ones on the proactor).
macro_rules! scenario {
    ($rt:ident, $runtime:expr, $live:expr, $read:expr) => {{
        let runtime = std::rc::Rc::new($runtime);
        let live = {
            let runtime = runtime.clone();
            move || $live(&*runtime)
        };
        runtime.block_on(async {
            let live_before = live();
            // An echo server, to check at the end that it still serves.
            let server = $rt::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let server_addr = server.local_addr().unwrap();
            let serving = $rt::spawn(async move {
                loop {
                    if let Ok((stream, _)) = server.accept().await {
                        $rt::spawn(echo::handle(stream));
                    }
                }
            });

            // Accepts that time out, while connections arrive at random moments.
            let listener = $rt::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let connector = trickle_connections(listener.local_addr().unwrap(), 300);
            let mut rng = Rng::new(1);
            let mut accepted = 0;
            for _ in 0..ACCEPTS {
                let wait = Duration::from_micros(rng.range(0, 400) as u64);
                if let Ok(result) = $rt::time::timeout(wait, listener.accept()).await {
                    drop(result.unwrap());
                    accepted += 1;
                }
            }
            connector.join().unwrap();
            drop(listener);
            assert!(accepted > 0, "no accept ever won the race with its timeout");

            // Reads that time out while bytes trickle in: none may be lost or reordered.
            let clients: Vec<_> = (0..CONNS)
                .map(|c| {
                    $rt::spawn(async move {
                        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                        #[allow(unused_mut)]
                        let mut stream =
                            $rt::net::TcpStream::connect(std_listener.local_addr().unwrap()).await.unwrap();
                        let (mut peer, _) = std_listener.accept().unwrap();
                        let mut rng = Rng::new(c + 100);
                        let (mut expected, mut got) = (Vec::new(), Vec::new());
                        for i in 0..READS {
                            if rng.range(0, 3) == 0 {
                                peer.write_all(&i.to_le_bytes()).unwrap();
                                expected.extend_from_slice(&i.to_le_bytes());
                            }
                            let wait = Duration::from_micros(rng.range(0, 2000) as u64);
                            if let Ok(bytes) = $rt::time::timeout(wait, $read(&mut stream)).await {
                                got.extend_from_slice(&bytes.unwrap());
                            }
                        }
                        drop(peer);
                        loop {
                            let bytes = $read(&mut stream).await.unwrap();
                            if bytes.is_empty() {
                                break;
                            }
                            got.extend_from_slice(&bytes);
                        }
                        got == expected
                    })
                })
                .collect();
            for client in clients {
                assert!(client.await.unwrap(), "bytes were lost or reordered by a cancelled read");
            }

            // The server still echoes.
            let echoed = std::thread::spawn(move || blocking_round_trip(server_addr, vec![42; 50_000], 3));
            assert_eq!(joined(echoed).await, vec![42; 50_000]);

            serving.abort();
            let _ = serving.await;
            eventually_async(format!("as few live as the {live_before} before"), || live() <= live_before)
                .await;
        });
    }};
}

async fn reactor_read(stream: &mut reactor::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = [0; 64];
    let n = stream.read(&mut buf).await?;
    Ok(buf[..n].to_vec())
}

async fn proactor_read(stream: &mut proactor::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let (n, buf) = stream.read(Vec::with_capacity(64)).await;
    n?;
    Ok(buf)
}

fn run(kind: RuntimeKind) {
    match kind {
        RuntimeKind::Reactor => {
            scenario!(
                reactor,
                reactor::Runtime::new().unwrap(),
                reactor::Runtime::registered_fds,
                reactor_read
            )
        }
        RuntimeKind::Uring | RuntimeKind::Aio(_) | RuntimeKind::ProactorEpoll => scenario!(
            proactor,
            echo::server::proactor_runtime(kind).unwrap(),
            proactor::Runtime::ops_in_flight,
            proactor_read
        ),
    }
}

#[test]
fn thousands_of_timeouts_on_reads_and_accepts_leave_every_runtime_correct_and_leak_nothing() {
    for kind in RuntimeKind::ALL {
        let fds_before = open_fds();
        within(Duration::from_secs(120), move || run(kind));
        eventually(format!("{kind}: no more fds open than the {fds_before} before"), || {
            open_fds() <= fds_before
        });
    }
}
