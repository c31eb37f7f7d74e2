//! The POSIX aio backend: the same echo behaviour as io_uring (every byte back, in order, at
//! any size and chunking; 1,000 connections; cancelled reads lose nothing; timeouts work), and
//! no fd or thread left behind once connections close.
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
use proactor::{Backend, Builder, Runtime};

/// glibc sizes its pool once per process: every test uses the same size, room for the
/// 1,000-connection test's server side.
const AIO_THREADS: u32 = 1100;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn aio() -> Runtime {
    let runtime = Builder::new().backend(Backend::PosixAio).aio_threads(AIO_THREADS).build().unwrap();
    assert_eq!(runtime.backend(), Backend::PosixAio);
    runtime
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
fn aio_server() -> (SocketAddr, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = aio();
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
    let (addr, stop, server) = aio_server();
    let data = Rng::new(16).bytes(16 << 20);
    let echoed = within(Duration::from_secs(60), {
        let data = data.clone();
        move || blocking_round_trip(addr, data, 7)
    });
    assert!(echoed == data, "echoed bytes differ from the bytes sent");
    stop.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn a_thousand_concurrent_connections_all_echo_and_leave_no_fd_or_thread_behind() {
    let _serial = serial();
    let (fds_before, threads_before) = (open_fds(), threads());
    let (addr, stop, server) = aio_server();
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
    let fds_before = open_fds();
    within(Duration::from_secs(60), || {
        let rt = std::rc::Rc::new(aio());
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
}

#[test]
fn a_timeout_around_an_idle_read_fires_and_the_stream_stays_usable() {
    let _serial = serial();
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

#[test]
fn dropping_a_listener_with_an_accept_in_flight_leaks_no_fd_or_thread() {
    let _serial = serial();
    let (fds_before, threads_before) = (open_fds(), threads());
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
                drop(connector.join().unwrap());
            }
            sleep(Duration::from_millis(50)).await;
        });
    });
    assert!(settles_to(fds_before, open_fds) <= fds_before, "fds leaked");
    assert!(settles_to(threads_before, threads) <= threads_before, "threads leaked");
}

#[test]
fn dropping_the_runtime_with_reads_blocked_in_glibc_closes_every_socket() {
    let _serial = serial();
    let fds_before = open_fds();
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
}

#[test]
fn connect_refused_and_ipv6_work_through_the_helper_threads() {
    let _serial = serial();
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

/// A read started while the stream's write is blocked in glibc (the peer writes back before it
/// reads again, and this side's window is full) runs beside that write, not behind it: glibc
/// queues requests per fd, so it goes on the other of the fd and its `dup`. (It once went on the
/// fd the write blocked, behind it, and the two sides waited for each other forever.)
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

#[test]
fn a_read_started_while_a_write_blocks_runs_beside_it() {
    let _serial = serial();
    const TOTAL: usize = 128 << 10;
    within(Duration::from_secs(30), || {
        aio().block_on(async {
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
