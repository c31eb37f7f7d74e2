//! The executor and the start-up path of the io_uring runtime (and its fallback to epoll).

mod common;

use std::time::{Duration, Instant};

use common::{spawn_server_thread, within};
use proactor::net::TcpStream;
use proactor::time::{sleep, timeout};

#[test]
fn io_uring_unavailable_is_one_clear_sentence_not_a_panic() {
    for (errno, expect) in [
        (libc_enosys(), "does not provide it"),
        (libc_eperm(), "--runtime reactor"),
        (libc_enomem(), "ulimit -l"),
    ] {
        let err = proactor::Builder::new()
            .backend(proactor::Backend::IoUring)
            .inject_setup_error(errno)
            .build()
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains(expect), "errno {errno}: {message}");
        assert!(message.contains("io_uring"), "{message}");
        assert!(!message.contains('\n'), "one sentence: {message}");
    }
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_cannot_be_set_up_and_still_serves() {
    for errno in [libc_enosys(), libc_eperm()] {
        let runtime = proactor::Builder::new().inject_setup_error(errno).build().unwrap();
        assert_eq!(runtime.backend(), proactor::Backend::Epoll, "errno {errno}");
        let echoed = runtime.block_on(async {
            let listener = proactor::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            proactor::spawn(common::serve(listener));
            common::echo_client(addr, 7, 5, 3000).await.unwrap()
        });
        assert!(echoed, "errno {errno}");
    }
}

#[test]
fn auto_is_the_default_and_is_io_uring_wherever_io_uring_can_be_set_up() {
    assert_eq!(proactor::Backend::default(), proactor::Backend::Auto);
    let auto = proactor::Runtime::new().unwrap().backend();
    match proactor::Builder::new().backend(proactor::Backend::IoUring).build() {
        Ok(_) => assert_eq!(auto, proactor::Backend::IoUring, "Auto fell back although io_uring works here"),
        Err(e) => {
            assert_eq!(auto, proactor::Backend::Epoll, "Auto without io_uring ({e})");
            common::skipped("Auto choosing io_uring", format!("io_uring cannot be set up here: {e}"));
        }
    }
}

fn libc_enosys() -> i32 {
    38
}
fn libc_eperm() -> i32 {
    1
}
fn libc_enomem() -> i32 {
    12
}

#[test]
fn a_panicking_task_is_reported_and_leaves_others_running() {
    proactor::block_on(async {
        let survivor = proactor::spawn(async {
            sleep(Duration::from_millis(30)).await;
            "survived"
        });
        let doomed = proactor::spawn(async {
            sleep(Duration::from_millis(5)).await;
            panic!("boom on purpose");
        });
        let err = doomed.await.unwrap_err();
        assert!(err.is_panic());
        assert!(err.to_string().contains("boom on purpose"));
        assert_eq!(survivor.await.unwrap(), "survived");
    });
}

#[test]
fn sleep_never_returns_early() {
    proactor::block_on(async {
        let handles: Vec<_> = [0u64, 1, 2, 3, 5, 8, 13, 21, 34]
            .iter()
            .map(|&ms| {
                proactor::spawn(async move {
                    let duration = Duration::from_millis(ms) + Duration::from_micros(ms * 37 % 1000);
                    let start = Instant::now();
                    sleep(duration).await;
                    (duration, start.elapsed())
                })
            })
            .collect();
        for handle in handles {
            let (asked, slept) = handle.await.unwrap();
            assert!(slept >= asked, "asked for {asked:?}, woke after {slept:?}");
        }
    });
}

#[test]
fn timeout_around_a_pending_read_fires_and_the_stream_stays_usable() {
    let addr = spawn_server_thread();
    within(Duration::from_secs(10), move || {
        proactor::block_on(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let start = Instant::now();
            // The echo server has nothing to send back yet.
            assert!(timeout(Duration::from_millis(50), stream.read(Vec::with_capacity(16))).await.is_err());
            assert!(start.elapsed() >= Duration::from_millis(50));
            let (written, _) = stream.write_all(&b"late"[..]).await;
            written.unwrap();
            assert_eq!(common::read_exact(&stream, 4).await.unwrap(), b"late");
        })
    });
}

#[test]
fn a_waker_fired_from_another_thread_wakes_a_parked_ring() {
    within(Duration::from_secs(10), || {
        let (wait, wake) = testkit::remote_wake();
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            wake.fire();
        });
        proactor::block_on(async {
            proactor::spawn(wait).await.unwrap();
        });
        other.join().unwrap();
    });
}

#[test]
fn operations_outside_a_runtime_are_errors_not_panics() {
    let err = proactor::net::TcpListener::bind("127.0.0.1:0").unwrap_err();
    assert!(err.to_string().contains("no proactor runtime"), "{err}");
}

#[test]
fn an_operation_awaited_in_another_runtime_is_an_error_not_a_hang() {
    within(Duration::from_secs(10), || {
        let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = proactor::Runtime::new().unwrap();
        let stream = a.block_on(TcpStream::connect(peer.local_addr().unwrap())).unwrap();
        let b = proactor::Runtime::new().unwrap();
        let (result, buf) = b.block_on(stream.read(Vec::with_capacity(8)));
        let err = result.unwrap_err();
        assert!(err.to_string().contains("outside the proactor runtime"), "{err}");
        assert_eq!(buf.capacity(), 8, "the buffer comes back");
    });
}

#[test]
fn a_sleep_outlives_its_runtime_and_completes_in_another() {
    within(Duration::from_secs(5), || {
        let first = proactor::Runtime::new().unwrap();
        let mut pending = Box::pin(sleep(Duration::from_millis(50)));
        first.block_on(async {
            assert!(timeout(Duration::from_millis(1), pending.as_mut()).await.is_err());
        });
        drop(first);
        proactor::block_on(pending);
    });
}

/// An operation that is still waiting does not spend its task's budget: with a budget of one
/// operation per poll, a task that selects over a read on a quiet stream and a read whose data
/// is there gets the second. (Each poll once charged the quiet read first and returned
/// `Pending`, so the ready one never had budget left: the task was woken, polled and woken
/// again forever. Found by the simulation, `SIM_SEED=1`.)
#[test]
fn a_waiting_operation_does_not_spend_the_task_budget() {
    for backend in [proactor::Backend::Auto, proactor::Backend::Epoll, proactor::Backend::PosixAio] {
        within(Duration::from_secs(10), move || {
            let runtime = proactor::Builder::new().backend(backend).task_budget(1).build().unwrap();
            runtime.block_on(async {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let quiet = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
                let _quiet_peer = listener.accept().unwrap();
                let busy = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
                let (mut busy_peer, _) = listener.accept().unwrap();
                std::io::Write::write_all(&mut busy_peer, b"ready").unwrap();
                use futures::FutureExt;
                let mut idle = std::pin::pin!(quiet.read(Vec::with_capacity(8)).fuse());
                let mut ready = std::pin::pin!(busy.read(Vec::with_capacity(8)).fuse());
                futures::select_biased! {
                    _ = idle => panic!("nothing was sent on the quiet stream"),
                    (n, buf) = ready => assert_eq!(&buf[..n.unwrap()], b"ready"),
                }
            });
        });
    }
}

/// A futures-io read with a task budget of one operation per poll gets its bytes: the receive
/// that completes is charged, and nothing before it. (`poll_read` once charged the budget
/// itself, then the receive's completion found none left: the task was woken, polled and woken
/// again forever, on every backend. Found by the simulation's futures-io handlers,
/// `SIM_SEED=4`.)
#[test]
fn a_futures_io_read_with_a_task_budget_of_one_gets_its_bytes() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    for backend in [proactor::Backend::Auto, proactor::Backend::Epoll, proactor::Backend::PosixAio] {
        within(Duration::from_secs(20), move || {
            let runtime = proactor::Builder::new().backend(backend).task_budget(1).build().unwrap();
            runtime.block_on(async {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let mut stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
                let (mut peer, _) = listener.accept().unwrap();
                std::io::Write::write_all(&mut peer, b"ready").unwrap();
                let mut buf = [0u8; 8];
                let read = timeout(Duration::from_secs(5), AsyncReadExt::read(&mut stream, &mut buf)).await;
                let n = read.expect("the read spun without its bytes").unwrap();
                assert_eq!(&buf[..n], b"ready");
                AsyncWriteExt::write_all(&mut stream, b"back").await.unwrap();
                AsyncWriteExt::flush(&mut stream).await.unwrap();
                let mut back = [0u8; 4];
                std::io::Read::read_exact(&mut peer, &mut back).unwrap();
                assert_eq!(&back, b"back");
            });
        });
    }
}
