//! The POSIX aio backend: the same echo behaviour as io_uring (every byte back, in order, at
//! any size and chunking; 1,000 connections; cancelled reads lose nothing; timeouts work), and
//! no request, fd or thread left behind once connections close.
//!
//! Not run by libtest (`harness = false` in Cargo.toml): `main` runs the cases one after the
//! other, alone in the process, because they compare this process's threads and fds before and
//! after each case, and glibc's aio thread pool is the whole process's. The runtime's own gauge
//! of the threads it uses (`Stats::aio_threads_in_use`) is checked as well.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{
    blocking_round_trip, echo_client, eventually, eventually_async, joined, open_fds, pair, read_exact,
    serve, within, Rng,
};
use proactor::net::{TcpListener, TcpStream};
use proactor::time::timeout;
use proactor::{Backend, Builder, Runtime};

/// glibc sizes its pool once per process: every case uses the same size, room for the
/// 1,000-connection case's server side.
const AIO_THREADS: u32 = 1100;

fn aio() -> Runtime {
    let runtime = Builder::new().backend(Backend::PosixAio).aio_threads(AIO_THREADS).build().unwrap();
    assert_eq!(runtime.backend(), Backend::PosixAio);
    runtime
}

/// The cases, in the order they run.
const CASES: [(&str, fn()); 7] = [
    (
        "sixteen_mib_with_random_chunking_comes_back_byte_exact",
        sixteen_mib_with_random_chunking_comes_back_byte_exact,
    ),
    (
        "a_thousand_concurrent_connections_all_echo_and_leave_no_request_behind",
        a_thousand_concurrent_connections_all_echo_and_leave_no_request_behind,
    ),
    (
        "thousands_of_timeouts_on_pending_reads_lose_and_reorder_nothing",
        thousands_of_timeouts_on_pending_reads_lose_and_reorder_nothing,
    ),
    (
        "a_timeout_around_an_idle_read_fires_and_the_stream_stays_usable",
        a_timeout_around_an_idle_read_fires_and_the_stream_stays_usable,
    ),
    (
        "dropping_a_listener_with_an_accept_in_flight_frees_its_helper_thread",
        dropping_a_listener_with_an_accept_in_flight_frees_its_helper_thread,
    ),
    (
        "dropping_the_runtime_with_reads_blocked_in_glibc_closes_every_socket",
        dropping_the_runtime_with_reads_blocked_in_glibc_closes_every_socket,
    ),
    (
        "connect_refused_and_ipv6_work_through_the_helper_threads",
        connect_refused_and_ipv6_work_through_the_helper_threads,
    ),
];

/// Runs every case (or those whose name contains the first argument), each checked to leave no
/// thread and no fd behind: every thread it started must have exited, every fd it opened be
/// closed, once it is over.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--list") {
        CASES.iter().for_each(|(name, _)| println!("{name}: test"));
        return;
    }
    let filter = args.iter().find(|arg| !arg.starts_with('-'));
    let cases: Vec<_> =
        CASES.iter().filter(|(name, _)| filter.as_ref().is_none_or(|f| name.contains(f.as_str()))).collect();
    println!("\nrunning {} tests", cases.len());
    for (name, case) in &cases {
        print!("test {name} ... ");
        std::io::stdout().flush().unwrap();
        let (threads, fds) = (testkit::thread_ids(), open_fds());
        case();
        // glibc's idle helper threads exit after a second; the runtime's own helpers with it.
        eventually(format!("{name}: every thread it started has exited"), || {
            testkit::thread_ids().is_subset(&threads)
        });
        eventually(format!("{name}: every fd it opened is closed"), || open_fds() <= fds);
        println!("ok");
    }
    println!("\ntest result: ok. {} passed; 0 failed\n", cases.len());
}

/// Requests in glibc and helper threads of the aio runtime running on this thread.
fn threads_in_use() -> (usize, usize) {
    proactor::stats().aio_threads_in_use.expect("an aio runtime")
}

fn sixteen_mib_with_random_chunking_comes_back_byte_exact() {
    let server = common::spawn_server(aio, common::echo);
    let addr = server.addr;
    let data = Rng::new(16).bytes(16 << 20);
    let echoed = within(Duration::from_secs(60), {
        let data = data.clone();
        move || blocking_round_trip(addr, data, 7)
    });
    assert!(echoed == data, "echoed bytes differ from the bytes sent");
    server.stop();
}

fn a_thousand_concurrent_connections_all_echo_and_leave_no_request_behind() {
    within(Duration::from_secs(120), || {
        aio().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = proactor::spawn(serve(listener));
            // The clients run on io_uring on a thread of their own: a thousand aio clients would
            // need a thousand more glibc threads.
            let clients = std::thread::spawn(move || {
                proactor::block_on(async move {
                    let handles: Vec<_> =
                        (0..1000u64).map(|i| proactor::spawn(echo_client(addr, i + 1, 3, 3000))).collect();
                    let mut ok = 0;
                    for handle in handles {
                        ok += matches!(handle.await, Ok(Ok(true))) as usize;
                    }
                    ok
                })
            });
            assert_eq!(joined(clients).await, 1000);
            // Every connection is closed: no request may stay in glibc (each would hold a
            // glibc thread).
            eventually_async("no request left in glibc", || threads_in_use().0 == 0).await;
            server.abort();
        })
    });
}

fn thousands_of_timeouts_on_pending_reads_lose_and_reorder_nothing() {
    within(Duration::from_secs(60), || {
        aio().block_on(async {
            // 50 connections, each timing out 40 reads in a row while data trickles in at random
            // moments. On aio a read blocked in a glibc thread cannot be cancelled: it completes
            // when data comes, and its bytes must reach the next read first.
            let clients: Vec<_> = (0..50u64)
                .map(|c| {
                    proactor::spawn(async move {
                        let mut rng = Rng::new(c + 1);
                        let (stream, mut peer) = pair().await;
                        let (mut expected, mut got) = (Vec::new(), Vec::new());
                        for i in 0..40u32 {
                            if rng.range(0, 3) == 0 {
                                peer.write_all(&i.to_le_bytes()).unwrap();
                                expected.extend_from_slice(&i.to_le_bytes());
                            }
                            let wait = Duration::from_micros(rng.range(0, 2000) as u64);
                            if let Ok((read, buf)) = timeout(wait, stream.read(Vec::with_capacity(64))).await
                            {
                                read.unwrap();
                                got.extend_from_slice(&buf);
                            }
                        }
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
            eprint!("({} cancelled reads kept their bytes for the next read) ", proactor::stats().recvs_kept);
            eventually_async("no operation left in flight", || proactor::stats().in_flight == 0).await;
            assert_eq!(threads_in_use().0, 0, "requests left in glibc");
        });
    });
}

fn a_timeout_around_an_idle_read_fires_and_the_stream_stays_usable() {
    within(Duration::from_secs(20), || {
        aio().block_on(async {
            let (stream, mut peer) = pair().await;
            let started = std::time::Instant::now();
            let timed_out = timeout(Duration::from_millis(50), stream.read(vec![0; 64])).await;
            assert!(timed_out.is_err());
            assert!(started.elapsed() >= Duration::from_millis(50));
            peer.write_all(b"late").unwrap();
            assert_eq!(read_exact(&stream, 4).await.unwrap(), b"late");
            // And writes work after it.
            stream.write_all(&b"back"[..]).await.0.unwrap();
            let mut got = [0; 4];
            peer.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"back");
        })
    });
}

fn dropping_a_listener_with_an_accept_in_flight_frees_its_helper_thread() {
    within(Duration::from_secs(60), || {
        aio().block_on(async {
            for round in 0..30u64 {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let connector = std::thread::spawn(move || {
                    (0..5).filter_map(|_| std::net::TcpStream::connect(addr).ok()).collect::<Vec<_>>()
                });
                let wait = Duration::from_micros(Rng::new(round + 1).range(0, 3000) as u64);
                if let Ok(accepted) = timeout(wait, listener.accept()).await {
                    drop(accepted.unwrap());
                }
                drop(listener);
                drop(joined(connector).await);
            }
            // Every cancelled accept is over: its helper thread saw the cancel (a helper that
            // did not would wait on the listener, kept open for it, forever). How many helpers
            // there are says nothing: one that is slow to come back to the idle ones (on a
            // loaded machine) makes the next round start another; they all exit with the
            // runtime, which `main` checks.
            eventually_async("every accept over", || proactor::stats().in_flight == 0).await;
            assert_eq!(threads_in_use().0, 0, "requests left in glibc");
        });
    });
}

fn dropping_the_runtime_with_reads_blocked_in_glibc_closes_every_socket() {
    let peers = within(Duration::from_secs(30), || {
        let runtime = aio();
        let peers = runtime.block_on(async {
            let mut peers = Vec::new();
            for _ in 0..20 {
                let (stream, peer) = pair().await;
                proactor::spawn(async move {
                    let _ = stream.read(vec![0; 1024]).await;
                });
                peers.push(peer);
            }
            eventually_async("every read blocked in glibc", || threads_in_use().0 == 20).await;
            peers
        });
        assert_eq!(runtime.aio_threads_in_use().map(|(glibc, _)| glibc), Some(20));
        drop(runtime);
        peers
    });
    for mut peer in peers {
        assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0, "a socket was left open");
    }
}

fn connect_refused_and_ipv6_work_through_the_helper_threads() {
    within(Duration::from_secs(20), || {
        aio().block_on(async {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let err = TcpStream::connect(closed).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

            let listener =
                TcpListener::bind("[::1]:0").expect("binding [::1] (is IPv6 loopback configured?)");
            let addr = listener.local_addr().unwrap();
            let server = proactor::spawn(serve(listener));
            assert!(echo_client(addr, 5, 10, 20_000).await.unwrap());
            server.abort();
        })
    });
}
