//! Regression tests from a review of the POSIX aio backend (each failed before its fix), with
//! their io_uring twins. Run one at a time: glibc's aio pool is shared by the process.

mod common;

use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use common::{eventually_async, pair, within, woken_within};
use proactor::time::timeout;
use proactor::{AioNotify, Backend, Builder, Runtime};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn aio(notify: AioNotify) -> Runtime {
    Builder::new().backend(Backend::PosixAio).aio_threads(256).aio_notify(notify).build().unwrap()
}

/// An aio runtime with each notification.
const AIO: [fn() -> Runtime; 3] =
    [|| aio(AioNotify::Thread), || aio(AioNotify::Signal), || aio(AioNotify::Suspend)];

/// Two tasks waiting behind a cancelled read (a stream shared by two tasks) are both woken when
/// it is over (the stash once kept a single waker, and the first task waited forever).
fn two_waiters(make: fn() -> Runtime, gap: bool) {
    within(Duration::from_secs(20), move || {
        make().block_on(async {
            let (stream, mut peer) = pair().await;
            let stream = Rc::new(stream);
            // A read that times out: on aio it stays blocked in glibc (reads = 1).
            assert!(timeout(Duration::from_millis(20), stream.read(vec![0; 64])).await.is_err());
            // (Each read is bounded: a lost wake-up ends it with `None` instead of a hang.)
            let b = {
                let s = stream.clone();
                proactor::spawn(async move { woken_within(testkit::PATIENCE, s.read(vec![0; 64])).await })
            };
            if gap {
                proactor::yield_now().await; // B is polled, alone: it waits behind the cancelled read
            }
            let c = {
                let s = stream.clone();
                proactor::spawn(async move { woken_within(testkit::PATIENCE, s.read(vec![0; 64])).await })
            };
            proactor::yield_now().await; // both wait
            assert!(!b.is_finished() && !c.is_finished());
            peer.write_all(b"abc").unwrap();
            // "def" only once one of them has "abc": then each gets one of the two.
            eventually_async("a reader got the first bytes", || b.is_finished() || c.is_finished()).await;
            peer.write_all(b"def").unwrap();
            let rc = c.await.unwrap();
            let rb = b.await.unwrap();
            let got_c = rc.map(|(r, buf)| (r.unwrap(), buf));
            let got_b = rb.map(|(r, buf)| (r.unwrap(), buf));
            assert!(got_c.is_some(), "task C never woke");
            assert!(got_b.is_some(), "task B's read hung although the stream had data (lost wake-up)");
        })
    });
}

#[test]
fn aio_two_tasks_waiting_behind_a_cancelled_read_are_both_woken() {
    let _s = serial();
    for make in AIO {
        two_waiters(make, true);
    }
}

#[test]
fn uring_two_tasks_waiting_behind_a_cancelled_read_are_both_woken() {
    let _s = serial();
    // On io_uring the cancelled read is over within a turn, so the window is a single turn;
    // run for comparison.
    two_waiters(|| Builder::new().build().unwrap(), false);
}

/// After a read times out (on aio it stays blocked in a glibc thread until data comes), a write
/// on the same stream must not wait behind it: the peer may be waiting for that write ("ping").
#[test]
fn aio_write_after_a_read_timeout_is_not_blocked_until_the_peer_speaks() {
    let _s = serial();
    for make in AIO {
        within(Duration::from_secs(20), move || {
            make().block_on(async {
                let (stream, mut peer) = pair().await;
                assert!(timeout(Duration::from_millis(20), stream.read(vec![0; 64])).await.is_err());
                let w = woken_within(testkit::PATIENCE, stream.write_all(&b"ping"[..])).await;
                assert!(w.is_some(), "write_all hung behind the timed-out read (peer waits for our ping)");
                let mut got = [0; 4];
                peer.read_exact(&mut got).unwrap();
            })
        });
    }
}

/// Awaiting an operation in another runtime is an error, not a hang; on io_uring the operation
/// is cancelled and the stream stays usable.
fn wrong_runtime(make: fn() -> Runtime) {
    within(Duration::from_secs(20), move || {
        let a = make();
        let (stream, mut peer) = a.block_on(pair());
        let b = Builder::new().build().unwrap();
        let err = b.block_on(async { stream.read(vec![0; 16]).await.0 });
        assert!(err.is_err());
        a.block_on(async {
            peer.write_all(b"hello").unwrap();
            let (r, buf) =
                woken_within(testkit::PATIENCE, stream.read(vec![0; 16])).await.expect("the read hung");
            assert_eq!(r.unwrap(), 5, "stream dead after a wrong-runtime await");
            assert_eq!(&buf[..], b"hello");
            stream.write_all(&b"x"[..]).await.0.unwrap();
        });
        let mut one = [0; 1];
        assert_eq!(peer.read(&mut one).unwrap(), 1);
    });
}

/// On aio a read glibc already runs cannot be cancelled, and its buffer cannot be handed back
/// while glibc may still write into it: the driver then shuts the socket down to end it
/// (documented in the `aio` module). A read glibc had not started yet is simply cancelled. Either
/// way the await ends at once with an error, and the stream is then either still usable or
/// visibly closed: never a stream that silently swallows data.
#[test]
fn aio_wrong_runtime_await_is_an_error_and_leaves_a_usable_or_closed_stream_not_a_hang() {
    let _s = serial();
    for make in AIO {
        wrong_runtime_on_aio(make);
    }
}

fn wrong_runtime_on_aio(make: fn() -> Runtime) {
    within(Duration::from_secs(20), move || {
        let a = make();
        let (stream, mut peer) = a.block_on(pair());
        let other = Builder::new().build().unwrap();
        // (A hang is caught by `within`.)
        let err = other.block_on(async { stream.read(vec![0; 16]).await.0 });
        assert!(err.is_err());
        peer.write_all(b"x").unwrap();
        let read = a.block_on(async { woken_within(testkit::PATIENCE, stream.read(vec![0; 16])).await });
        match read {
            // Cancelled before glibc ran it: the stream works.
            Some((Ok(1), buf)) => assert_eq!(&buf[..], b"x"),
            // Shut down to end it: end of stream here, and the peer sees the connection end.
            Some((Ok(0) | Err(_), _)) => match peer.read(&mut [0; 1]) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("the stream is dead but the peer was not told: {other:?}"),
            },
            other => panic!("the stream neither works nor ended: {other:?}"),
        }
    });
}

#[test]
fn uring_wrong_runtime_await_leaves_the_stream_usable() {
    let _s = serial();
    wrong_runtime(|| Builder::new().build().unwrap());
}
