//! Executor behaviour: spawning, joining, panics, aborts, cross-thread wake-ups, fairness,
//! timers, and what dropping the runtime does.

mod common;

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{blocking_round_trip, serve, spawn_server_thread, within};
use reactor::net::{TcpListener, TcpStream};
use reactor::time::{sleep, timeout};

#[test]
fn block_on_returns_the_output_and_runs_spawned_tasks() {
    let sum = reactor::block_on(async {
        let handles: Vec<_> = (1..=10u64).map(|i| reactor::spawn(async move { i * i })).collect();
        let mut sum = 0;
        for handle in handles {
            sum += handle.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, 385);
}

#[test]
fn a_panicking_task_is_reported_and_leaves_others_running() {
    let addr = spawn_server_thread();
    reactor::block_on(async move {
        let survivor = reactor::spawn(async {
            sleep(Duration::from_millis(30)).await;
            "survived"
        });
        let doomed = reactor::spawn(async {
            sleep(Duration::from_millis(5)).await;
            panic!("boom on purpose");
        });
        let err = doomed.await.unwrap_err();
        assert!(err.is_panic());
        assert!(err.to_string().contains("boom on purpose"), "{err}");
        assert_eq!(survivor.await.unwrap(), "survived");
    });
    // Panicking connection handlers end only their own connection.
    let echoed = within(Duration::from_secs(20), || {
        reactor::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            reactor::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    reactor::spawn(async move {
                        let mut buf = [0; 64];
                        let n = stream.read(&mut buf).await.unwrap();
                        assert!(&buf[..n] != b"panic", "handler panics on this input");
                        stream.write_all(&buf[..n]).await.unwrap();
                    });
                }
            });
            let mut victim = TcpStream::connect(addr).await.unwrap();
            victim.write_all(b"panic").await.unwrap();
            let mut buf = [0; 64];
            // The panicking task dropped its stream: the victim sees end of stream or a reset.
            assert!(matches!(victim.read(&mut buf).await, Ok(0) | Err(_)));
            let mut other = TcpStream::connect(addr).await.unwrap();
            other.write_all(b"fine").await.unwrap();
            let n = other.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        })
    });
    assert_eq!(echoed, b"fine");
    let _ = addr;
}

#[test]
fn abort_cancels_a_task_and_drops_its_future() {
    struct SetOnDrop(Rc<Cell<bool>>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    reactor::block_on(async {
        let dropped = Rc::new(Cell::new(false));
        let guard = SetOnDrop(dropped.clone());
        let handle = reactor::spawn(async move {
            let _guard = guard;
            sleep(Duration::from_secs(3600)).await;
        });
        reactor::yield_now().await; // let it start and park on its timer
        assert!(!handle.is_finished());
        handle.abort();
        let err = handle.await.unwrap_err();
        assert!(err.is_cancelled());
        assert!(dropped.get(), "the aborted task's future was dropped");
    });
}

#[test]
fn a_detached_task_keeps_running() {
    reactor::block_on(async {
        let done = Rc::new(Cell::new(false));
        let flag = done.clone();
        drop(reactor::spawn(async move {
            sleep(Duration::from_millis(10)).await;
            flag.set(true);
        }));
        common::eventually_async("the detached task ran to its end", || done.get()).await;
    });
}

#[test]
fn a_waker_fired_from_another_thread_wakes_a_parked_loop() {
    // Nothing else can wake the loop: no timers, no sockets. It sleeps in epoll_wait(-1) until
    // the other thread's wake writes the eventfd.
    within(Duration::from_secs(10), || {
        let (wait, wake) = testkit::remote_wake();
        let waker_thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            wake.fire();
        });
        let started = Instant::now();
        reactor::block_on(async {
            // A spawned task, not just the main future, is woken through the remote queue.
            reactor::spawn(wait).await.unwrap();
        });
        assert!(started.elapsed() >= Duration::from_millis(100));
        waker_thread.join().unwrap();
    });
}

#[test]
fn a_task_that_never_stops_yielding_does_not_starve_io() {
    // Without a bound on polls between I/O checks, the run queue is never empty, the loop never
    // reaches epoll_wait, and the echo below never completes.
    let addr = spawn_server_thread();
    let echoed = within(Duration::from_secs(20), move || {
        reactor::block_on(async move {
            let stop = Rc::new(Cell::new(false));
            let spin = stop.clone();
            reactor::spawn(async move {
                while !spin.get() {
                    reactor::yield_now().await;
                }
            });
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"through").await.unwrap();
            let mut buf = [0; 16];
            let n = stream.read(&mut buf).await.unwrap();
            stop.set(true);
            buf[..n].to_vec()
        })
    });
    assert_eq!(echoed, b"through");
}

#[test]
fn an_always_ready_socket_cannot_monopolise_the_loop() {
    // One task reads a flooded socket one byte at a time: each read fills its buffer, so
    // readiness is never cleared and, without a budget, the task would never yield. The
    // budget makes it yield every 128 reads; the other task counts how often it got to run.
    let (flood_addr_tx, flood_addr_rx) = std::sync::mpsc::channel();
    let flooder = std::thread::spawn(move || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        flood_addr_tx.send(listener.local_addr().unwrap()).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let chunk = [1u8; 65536];
        // Until the reader hangs up (bounded: the reader stops after 100 kB).
        while std::io::Write::write_all(&mut stream, &chunk).is_ok() {}
    });
    let addr = flood_addr_rx.recv().unwrap();
    let ran = within(Duration::from_secs(30), move || {
        reactor::block_on(async move {
            let counter = Rc::new(Cell::new(0u32));
            let count = counter.clone();
            let stop = Rc::new(Cell::new(false));
            let spin = stop.clone();
            let other = reactor::spawn(async move {
                while !spin.get() {
                    count.set(count.get() + 1);
                    reactor::yield_now().await;
                }
            });
            let mut stream = TcpStream::connect(addr).await.unwrap();
            common::eventually_async("the socket filled up", || testkit::unread_bytes(&stream) >= 65536)
                .await;
            let mut byte = [0u8; 1];
            let before = counter.get();
            for _ in 0..100_000 {
                assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
            }
            let ran = counter.get() - before;
            stop.set(true);
            other.await.unwrap();
            ran
        })
    });
    flooder.join().unwrap();
    assert!(ran >= 100, "the other task ran only {ran} times during 100,000 reads");
}

#[test]
fn each_read_charges_the_budget_once() {
    // A socket that is always ready (its peer keeps it full), read a byte at a time by a task
    // with a budget of 4 operations per poll: exactly every 4 reads the budget makes it yield,
    // so 400 reads take 100 polls. Charging twice per read would take 200.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let flooder = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = std::io::Write::write_all(&mut stream, &[1u8; 65536]);
        stream // kept open until the reader is done
    });
    let polls = within(Duration::from_secs(30), move || {
        let runtime = reactor::Builder::new().task_budget(4).build().unwrap();
        runtime.block_on(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // 400 bytes waiting, and more behind them: every read finds its byte at once.
            common::eventually_async("the socket filled up", || testkit::unread_bytes(&stream) >= 65536)
                .await;
            let mut byte = [0u8; 1];
            let before = reactor::stats();
            for _ in 0..400 {
                assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
            }
            reactor::stats().since(&before).tasks_polled
        })
    });
    drop(flooder.join().unwrap());
    assert!((99..=102).contains(&polls), "400 one-byte reads took {polls} polls with a budget of 4");
}

#[test]
fn sleep_never_returns_early() {
    reactor::block_on(async {
        let handles: Vec<_> = [0u64, 1, 2, 3, 5, 8, 13, 21, 34, 55]
            .iter()
            .flat_map(|&ms| (0..5).map(move |_| ms))
            .map(|ms| {
                reactor::spawn(async move {
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
    let (server_tx, server_rx) = std::sync::mpsc::channel::<std::net::TcpStream>();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        server_tx.send(stream).unwrap();
    });
    within(Duration::from_secs(10), move || {
        reactor::block_on(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut peer_stream = server_rx.recv().unwrap();
            let mut buf = [0; 16];
            let start = Instant::now();
            let result = timeout(Duration::from_millis(50), stream.read(&mut buf)).await;
            assert!(result.is_err(), "nothing was sent, so the read must time out");
            assert!(start.elapsed() >= Duration::from_millis(50));
            // The timed-out read left nothing behind: the next read gets the data.
            std::io::Write::write_all(&mut peer_stream, b"late").unwrap();
            let n = stream.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"late");
            // And a timeout around something quick does not fire.
            assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
        })
    });
    peer.join().unwrap();
}

#[test]
fn dropping_the_runtime_drops_tasks_and_closes_their_sockets() {
    let addr = spawn_server_thread();
    let client = std::net::TcpStream::connect(addr).unwrap();
    let runtime = reactor::Runtime::new().unwrap();
    // A task holding a connection and waiting forever.
    let (tx, rx) = std::sync::mpsc::channel();
    let listener_addr = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        reactor::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tx.send(()).unwrap();
            let _keep = stream;
            sleep(Duration::from_secs(3600)).await;
        });
        addr
    });
    let mut held = std::net::TcpStream::connect(listener_addr).unwrap();
    runtime.block_on(common::eventually_async("the task accepted the connection", || rx.try_recv().is_ok()));
    assert_eq!(runtime.task_count(), 1);
    assert_eq!(runtime.registered_fds(), 2, "the listener (moved into the task) and the accepted stream");
    drop(runtime);
    held.set_read_timeout(Some(testkit::PATIENCE)).unwrap();
    let mut buf = [0; 8];
    assert_eq!(held.read(&mut buf).unwrap(), 0, "the task's socket was closed");
    // The unrelated server thread is unaffected.
    drop(client);
    assert_eq!(blocking_round_trip(addr, b"ok".to_vec(), 2), b"ok");
}

#[test]
fn a_socket_used_after_its_runtime_is_gone_reports_an_error() {
    let runtime = reactor::Runtime::new().unwrap();
    let listener = runtime.block_on(async { TcpListener::bind("127.0.0.1:0").unwrap() });
    drop(runtime);
    let other = reactor::Runtime::new().unwrap();
    let err = other.block_on(async { listener.accept().await.unwrap_err() });
    assert!(err.to_string().contains("dropped"), "{err}");
}

#[test]
#[should_panic(expected = "cannot block_on inside a runtime")]
fn block_on_inside_a_runtime_panics_with_a_clear_message() {
    reactor::block_on(async { reactor::block_on(async {}) });
}

#[test]
fn socket_calls_outside_a_runtime_are_errors_not_panics() {
    let err = TcpListener::bind("127.0.0.1:0").unwrap_err();
    assert!(err.to_string().contains("no reactor runtime"), "{err}");
}

#[test]
fn the_builder_settings_still_echo_correctly() {
    let ok = within(Duration::from_secs(30), move || {
        let runtime =
            reactor::Builder::new().events_per_wait(1).task_budget(1).event_interval(1).build().unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            reactor::spawn(serve(listener));
            let clients: Vec<_> = (0..20)
                .map(|i| {
                    reactor::spawn(async move {
                        let mut stream = TcpStream::connect(addr).await.unwrap();
                        let msg = vec![i as u8; 10_000];
                        stream.write_all(&msg).await.unwrap();
                        stream.shutdown(std::net::Shutdown::Write).unwrap();
                        let mut back = Vec::new();
                        let mut buf = [0; 1000];
                        loop {
                            match stream.read(&mut buf).await.unwrap() {
                                0 => break back == msg,
                                n => back.extend_from_slice(&buf[..n]),
                            }
                        }
                    })
                })
                .collect();
            let mut ok = 0;
            for client in clients {
                ok += client.await.unwrap() as usize;
            }
            ok
        })
    });
    assert_eq!(ok, 20);
}

#[test]
fn a_sleep_outlives_its_runtime_and_completes_in_another() {
    within(Duration::from_secs(5), || {
        let first = reactor::Runtime::new().unwrap();
        let mut pending = Box::pin(sleep(Duration::from_millis(50)));
        first.block_on(async {
            // Register the timer with the first runtime, then give up on it.
            assert!(timeout(Duration::from_millis(1), pending.as_mut()).await.is_err());
        });
        drop(first);
        reactor::block_on(pending);
    });
}

#[test]
fn a_socket_awaited_in_another_runtime_is_an_error_not_a_hang() {
    let a = reactor::Runtime::new().unwrap();
    let listener = a.block_on(async { TcpListener::bind("127.0.0.1:0").unwrap() });
    let b = reactor::Runtime::new().unwrap();
    let err = b.block_on(async { listener.accept().await.unwrap_err() });
    assert!(err.to_string().contains("outside the reactor runtime"), "{err}");
}
