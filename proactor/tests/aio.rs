//! The POSIX aio backend: the same echo behaviour as io_uring (every byte back, in order, at
//! any size and chunking; 1,000 connections; cancelled reads lose nothing; timeouts work), and
//! no request, fd or thread left behind once connections close; each case for each way glibc's
//! notifications reach the loop ([`AioNotify`]).
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
use proactor::time::{sleep, timeout};
use proactor::{AioNotify, Backend, Builder, Runtime};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

/// glibc sizes its pool once per process: every case uses the same size, room for the
/// 1,000-connection case's server side.
const AIO_THREADS: u32 = 1100;

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

/// A case run for each notification.
type EachNotify = fn(AioNotify);

/// The cases run for each notification, in the order they run (each as `name::notify`).
const EACH_NOTIFY: [(&str, EachNotify); 10] = [
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
    (
        "a_wake_from_another_thread_ends_a_wait_that_nothing_else_would_end",
        a_wake_from_another_thread_ends_a_wait_that_nothing_else_would_end,
    ),
    (
        "an_idle_loop_sleeps_in_a_few_waits_instead_of_spinning",
        an_idle_loop_sleeps_in_a_few_waits_instead_of_spinning,
    ),
    (
        "a_read_started_while_a_write_blocks_runs_beside_it",
        a_read_started_while_a_write_blocks_runs_beside_it,
    ),
];

/// The cases about one notification, or none, run once each after those.
const ONCE: [(&str, fn()); 3] = [
    (
        "signal_mode_blocks_its_signal_in_the_runtime_thread",
        signal_mode_blocks_its_signal_in_the_runtime_thread,
    ),
    (
        "signal_mode_refuses_a_signal_that_another_handler_owns",
        signal_mode_refuses_a_signal_that_another_handler_owns,
    ),
    (
        "this_binary_blocks_the_aio_signal_from_its_first_thread_on",
        this_binary_blocks_the_aio_signal_from_its_first_thread_on,
    ),
];

/// Runs every case (or those whose name contains the first argument), each checked to leave no
/// thread and no fd behind: every thread it started must have exited, every fd it opened be
/// closed, once it is over.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut all: Vec<(String, Box<dyn Fn()>)> = Vec::new();
    for (name, case) in EACH_NOTIFY {
        for notify in AioNotify::ALL {
            all.push((format!("{name}::{notify}"), Box::new(move || case(notify))));
        }
    }
    for (name, case) in ONCE {
        all.push((name.to_string(), Box::new(case)));
    }
    if args.iter().any(|arg| arg == "--list") {
        all.iter().for_each(|(name, _)| println!("{name}: test"));
        return;
    }
    let filter = args.iter().find(|arg| !arg.starts_with('-'));
    let cases: Vec<_> =
        all.iter().filter(|(name, _)| filter.as_ref().is_none_or(|f| name.contains(f.as_str()))).collect();
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

fn sixteen_mib_with_random_chunking_comes_back_byte_exact(notify: AioNotify) {
    let server = common::spawn_server(move || aio(notify), common::echo);
    let addr = server.addr;
    let data = Rng::new(16).bytes(16 << 20);
    let echoed = within(Duration::from_secs(60), {
        let data = data.clone();
        move || blocking_round_trip(addr, data, 7)
    });
    assert!(echoed == data, "echoed bytes differ from the bytes sent");
    server.stop();
}

fn a_thousand_concurrent_connections_all_echo_and_leave_no_request_behind(notify: AioNotify) {
    within(Duration::from_secs(120), move || {
        aio(notify).block_on(async {
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

fn thousands_of_timeouts_on_pending_reads_lose_and_reorder_nothing(notify: AioNotify) {
    within(Duration::from_secs(60), move || {
        aio(notify).block_on(async {
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

fn a_timeout_around_an_idle_read_fires_and_the_stream_stays_usable(notify: AioNotify) {
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
}

fn dropping_a_listener_with_an_accept_in_flight_frees_its_helper_thread(notify: AioNotify) {
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

fn dropping_the_runtime_with_reads_blocked_in_glibc_closes_every_socket(notify: AioNotify) {
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

fn connect_refused_and_ipv6_work_through_the_helper_threads(notify: AioNotify) {
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
}

fn a_wake_from_another_thread_ends_a_wait_that_nothing_else_would_end(notify: AioNotify) {
    within(Duration::from_secs(20), move || {
        aio(notify).block_on(async {
            // No request in glibc and no timer: only the other thread's wake can end the
            // loop's wait (with `Suspend`, through the wake read of the notifier).
            for round in 0..20u32 {
                let (tx, rx) = futures::channel::oneshot::channel();
                let sender = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    tx.send(round).unwrap();
                });
                assert_eq!(rx.await.unwrap(), round);
                joined(sender).await;
            }
        })
    });
}

fn an_idle_loop_sleeps_in_a_few_waits_instead_of_spinning(notify: AioNotify) {
    within(Duration::from_secs(20), move || {
        let runtime = aio(notify);
        // A read blocked in glibc, so that each way has a request to wait on.
        let waits = runtime.block_on(async {
            let (stream, _peer) = pair().await;
            let reader = proactor::spawn(async move {
                let _ = stream.read(vec![0; 16]).await;
            });
            eventually_async("the read blocked in glibc", || threads_in_use().0 == 1).await;
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
}

fn signal_mode_blocks_its_signal_in_the_runtime_thread() {
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

fn signal_mode_refuses_a_signal_that_another_handler_owns() {
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

fn this_binary_blocks_the_aio_signal_from_its_first_thread_on() {
    // What a program using `AioNotify::Signal` must do (see `before_main!` above): the first
    // thread (its tid is the pid) blocks the signal, and so does every thread started from it.
    let mask = |status: String| -> u64 {
        let hex = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim().to_string();
        u64::from_str_radix(&hex, 16).unwrap()
    };
    let bit = 1u64 << (AioNotify::signal() - 1);
    let main = std::fs::read_to_string(format!("/proc/self/task/{}/status", std::process::id())).unwrap();
    assert_ne!(mask(main) & bit, 0, "the first thread does not block the aio signal");
    let started = std::thread::spawn(|| std::fs::read_to_string("/proc/thread-self/status").unwrap());
    assert_ne!(
        mask(started.join().unwrap()) & bit,
        0,
        "a thread started later does not block the aio signal"
    );
}

/// Sets the socket's kernel buffers small, so that a few KiB fill its window.
fn small_buffers(fd: i32) {
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let bytes: libc::c_int = 4 << 10;
        // SAFETY: passes a pointer to a live int and its size; the fd is an open socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
    }
}

/// A read started while the stream's write is blocked in glibc (the peer writes back before it
/// reads again, and this side's window is full) runs beside that write, not behind it: glibc
/// queues requests per fd, so it goes on the other of the fd and its `dup`. (It once went on the
/// fd the write blocked, behind it, and the two sides waited for each other forever.)
fn a_read_started_while_a_write_blocks_runs_beside_it(notify: AioNotify) {
    const TOTAL: usize = 128 << 10;
    within(Duration::from_secs(30), move || {
        aio(notify).block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (mut peer, _) = listener.accept().unwrap();
            // Small kernel buffers: the echoes fill this side's window after a few KiB.
            use std::os::fd::AsRawFd;
            small_buffers(stream.as_raw_fd());
            small_buffers(peer.as_raw_fd());
            let echo = std::thread::spawn(move || {
                let mut buf = vec![0; 64 << 10];
                while let Ok(n @ 1..) = peer.read(&mut buf) {
                    if peer.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
            let sent = Rng::new(7).bytes(TOTAL);
            let write = async {
                let (written, _) = stream.write_all(sent.clone()).await;
                written.unwrap();
            };
            let read = read_exact(&stream, TOTAL);
            let ((), got) = futures::join!(write, read);
            assert!(got.unwrap() == sent, "the echo differs from what was sent");
            drop(stream);
            echo.join().unwrap();
        });
    });
}
