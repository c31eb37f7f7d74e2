//! The POSIX aio backend: the same echo behaviour as io_uring (every byte back, in order, at
//! any size and chunking; 1,000 connections; cancelled reads lose nothing; timeouts work), and
//! no fd or thread left behind once connections close; each test for each way glibc's
//! notifications reach the loop ([`AioNotify`]).
//!
//! Alone in its test binary and run one test at a time: the tests count this process's fds and
//! threads, and glibc's aio thread pool is shared by the whole process.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::{blocking_round_trip, echo_client, open_fds, read_exact, serve, within, Rng};
use proactor::net::{TcpListener, TcpStream};
use proactor::time::{sleep, timeout};
use proactor::{AioNotify, Backend, Builder, Runtime};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

/// glibc sizes its pool once per process: every test uses the same size, room for the
/// 1,000-connection test's server side.
const AIO_THREADS: u32 = 1100;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn aio(notify: AioNotify) -> Runtime {
    let runtime = Builder::new()
        .backend(Backend::PosixAio)
        .aio_threads(AIO_THREADS)
        .aio_notify(notify)
        .build()
        .unwrap();
    assert_eq!(runtime.backend(), Backend::PosixAio);
    runtime
}

/// Runs `test` once for each notification, saying which one failed.
fn for_each_notify(test: impl Fn(AioNotify)) {
    for notify in AioNotify::ALL {
        eprintln!("notify: {notify}");
        test(notify);
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// Waits (bounded) until `measure` returns at most `target`; returns its last value. (Fewer is
/// no leak: idle glibc threads of an earlier test may exit meanwhile.)
fn settles_to(target: usize, measure: impl Fn() -> usize) -> usize {
    for _ in 0..200 {
        if measure() <= target {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    measure()
}

/// An aio echo server on its own thread; returns its address and a sender that stops it.
fn aio_server(notify: AioNotify) -> (SocketAddr, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = aio(notify);
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let server = proactor::spawn(serve(listener));
            while stop_rx.try_recv().is_err() {
                sleep(Duration::from_millis(10)).await;
            }
            server.abort();
            let _ = server.await;
        });
    });
    (addr_rx.recv_timeout(Duration::from_secs(10)).unwrap(), stop_tx, thread)
}

#[test]
fn sixteen_mib_with_random_chunking_comes_back_byte_exact() {
    let _serial = serial();
    for_each_notify(|notify| {
        let (addr, stop, server) = aio_server(notify);
        let data = Rng::new(16).bytes(16 << 20);
        let echoed = within(Duration::from_secs(60), {
            let data = data.clone();
            move || blocking_round_trip(addr, data, 7)
        });
        assert!(echoed == data, "echoed bytes differ from the bytes sent");
        stop.send(()).unwrap();
        server.join().unwrap();
    });
}

#[test]
fn a_thousand_concurrent_connections_all_echo_and_leave_no_fd_or_thread_behind() {
    let _serial = serial();
    for_each_notify(|notify| {
        let (fds_before, threads_before) = (open_fds(), threads());
        let (addr, stop, server) = aio_server(notify);
        // The clients run on io_uring in this thread: a thousand aio clients would need a thousand
        // more glibc threads.
        let ok = within(Duration::from_secs(90), move || {
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
        assert_eq!(ok, 1000);
        stop.send(()).unwrap();
        server.join().unwrap();
        // glibc's idle helper threads exit after a second; the runtime's own helpers with it.
        assert!(settles_to(threads_before, threads) <= threads_before, "threads left behind");
        assert!(settles_to(fds_before, open_fds) <= fds_before, "fds left behind");
    });
}

/// A connected pair: an aio stream and the std stream at the other end.
async fn pair() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

#[test]
fn thousands_of_timeouts_on_pending_reads_lose_and_reorder_nothing() {
    let _serial = serial();
    for_each_notify(|notify| {
        let fds_before = open_fds();
        within(Duration::from_secs(60), move || {
            let rt = std::rc::Rc::new(aio(notify));
            let ops = {
                let rt = rt.clone();
                move || rt.ops_in_flight()
            };
            rt.block_on(async {
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
                                if let Ok((read, buf)) =
                                    timeout(wait, stream.read(Vec::with_capacity(64))).await
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
                for _ in 0..200 {
                    if ops() == 0 {
                        break;
                    }
                    sleep(Duration::from_millis(5)).await;
                }
                assert_eq!(ops(), 0, "operations left in flight");
            });
        });
        assert!(settles_to(fds_before, open_fds) <= fds_before, "fds leaked");
    });
}

#[test]
fn a_timeout_around_an_idle_read_fires_and_the_stream_stays_usable() {
    let _serial = serial();
    for_each_notify(|notify| {
        within(Duration::from_secs(20), move || {
            aio(notify).block_on(async {
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
    });
}

#[test]
fn dropping_a_listener_with_an_accept_in_flight_leaks_no_fd_or_thread() {
    let _serial = serial();
    for_each_notify(|notify| {
        let (fds_before, threads_before) = (open_fds(), threads());
        within(Duration::from_secs(60), move || {
            aio(notify).block_on(async {
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
                    drop(connector.join().unwrap());
                }
                sleep(Duration::from_millis(50)).await;
            });
        });
        assert!(settles_to(fds_before, open_fds) <= fds_before, "fds leaked");
        assert!(settles_to(threads_before, threads) <= threads_before, "threads leaked");
    });
}

#[test]
fn dropping_the_runtime_with_reads_blocked_in_glibc_closes_every_socket() {
    let _serial = serial();
    for_each_notify(|notify| {
        let fds_before = open_fds();
        let peers = within(Duration::from_secs(30), move || {
            let runtime = aio(notify);
            let peers = runtime.block_on(async {
                let mut peers = Vec::new();
                for _ in 0..20 {
                    let (stream, peer) = pair().await;
                    proactor::spawn(async move {
                        let _ = stream.read(vec![0; 1024]).await;
                    });
                    peers.push(peer);
                }
                sleep(Duration::from_millis(20)).await;
                peers
            });
            assert_eq!(runtime.aio_threads_in_use().map(|(glibc, _)| glibc), Some(20));
            drop(runtime);
            peers
        });
        for mut peer in peers {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0, "a socket was left open");
        }
        assert!(settles_to(fds_before, open_fds) <= fds_before, "fds leaked");
    });
}

#[test]
fn connect_refused_and_ipv6_work_through_the_helper_threads() {
    let _serial = serial();
    for_each_notify(|notify| {
        within(Duration::from_secs(20), move || {
            aio(notify).block_on(async {
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
    });
}

#[test]
fn a_wake_from_another_thread_ends_a_wait_that_nothing_else_would_end() {
    let _serial = serial();
    for_each_notify(|notify| {
        within(Duration::from_secs(20), move || {
            aio(notify).block_on(async {
                // No request in glibc and no timer: only the other thread's wake can end the
                // loop's wait (with `Suspend`, through the wake read of the notifier).
                for round in 0..20u32 {
                    let (tx, rx) = futures::channel::oneshot::channel();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(5));
                        tx.send(round).unwrap();
                    });
                    assert_eq!(rx.await.unwrap(), round);
                }
            })
        });
    });
}

#[test]
fn an_idle_loop_sleeps_in_a_few_waits_instead_of_spinning() {
    let _serial = serial();
    for_each_notify(|notify| {
        within(Duration::from_secs(20), move || {
            let runtime = aio(notify);
            // A read blocked in glibc, so that each way has a request to wait on.
            let waits = runtime.block_on(async {
                let (stream, _peer) = pair().await;
                let reader = proactor::spawn(async move {
                    let _ = stream.read(vec![0; 16]).await;
                });
                sleep(Duration::from_millis(20)).await;
                let before = proactor::stats();
                sleep(Duration::from_millis(300)).await;
                let waits = proactor::stats().since(&before).sys_poll;
                reader.abort();
                waits
            });
            // One wait for the timer (two if it wakes just early); a loop that spins (a wake
            // read that completes at once, say) waits thousands of times.
            assert!(waits <= 10, "{notify}: {waits} waits in 300 ms of idleness");
        });
    });
}

#[test]
fn signal_mode_blocks_its_signal_in_the_runtime_thread() {
    let _serial = serial();
    let bit = 1u64 << (AioNotify::signal() - 1);
    let blocked = move || {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let hex = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim().to_string();
        u64::from_str_radix(&hex, 16).unwrap() & bit != 0
    };
    let (before, after) = within(Duration::from_secs(20), move || {
        // This binary blocks it everywhere (see `before_main!`): unblock it in this thread
        // first, as in a thread the program did not prepare.
        // SAFETY: sigset functions on a live sigset_t; pthread_sigmask reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, AioNotify::signal());
            assert_eq!(libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()), 0);
        }
        let before = blocked();
        let runtime = aio(AioNotify::Signal);
        let after = blocked();
        drop(runtime);
        (before, after)
    });
    assert!(!before, "the signal was still blocked");
    assert!(after, "building a Signal runtime did not block its signal in its thread");
}

#[test]
fn signal_mode_refuses_a_signal_that_another_handler_owns() {
    let _serial = serial();
    extern "C" fn theirs(_: libc::c_int) {}
    let signo = AioNotify::signal();
    // SAFETY: sigaction reads and writes live structs; the handler is a plain extern "C" fn.
    let old = unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = theirs as *const () as libc::sighandler_t;
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signo, &new, &mut old), 0);
        old
    };
    let built = Builder::new()
        .backend(Backend::PosixAio)
        .aio_threads(AIO_THREADS)
        .aio_notify(AioNotify::Signal)
        .build()
        .map(drop);
    // SAFETY: as above: the disposition found is put back.
    unsafe { assert_eq!(libc::sigaction(signo, &old, std::ptr::null_mut()), 0) };
    let e = built.expect_err("built on a signal another handler owns");
    assert!(e.to_string().contains("another handler"), "{e}");
    // With the signal free again, it builds.
    drop(aio(AioNotify::Signal));
}

#[test]
fn this_binary_blocks_the_aio_signal_from_its_first_thread_on() {
    // What a program using `AioNotify::Signal` must do (see `before_main!` above): the first
    // thread (its tid is the pid) blocks the signal, and so does every thread libtest started.
    let mask = |status: String| -> u64 {
        let hex = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim().to_string();
        u64::from_str_radix(&hex, 16).unwrap()
    };
    let bit = 1u64 << (AioNotify::signal() - 1);
    let main = std::fs::read_to_string(format!("/proc/self/task/{}/status", std::process::id())).unwrap();
    assert_ne!(mask(main) & bit, 0, "the first thread does not block the aio signal");
    let this = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert_ne!(mask(this) & bit, 0, "this test's thread does not block the aio signal");
}
