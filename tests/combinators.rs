//! `futures`' combinators on both runtimes, as a tokio user would write them: `join!` of reads
//! and timers in one task, `select!` between a read and a timer in both outcomes, and on the
//! proactor (io_uring, epoll, POSIX aio) a read that loses a `select!` gives up no bytes: the
//! next read gets them, also when they had already arrived in the losing read's buffer. On the
//! reactor, `futures::io::BufReader` and `read_line` over a `TcpStream`.
//!
//! The peer is a blocking std socket on loopback, written from the task itself (a few bytes
//! never block), so every step happens in a known order.

use std::io::Write;
use std::net::TcpStream as StdStream;
use std::pin::pin;
use std::time::Duration;

use echo::server::RuntimeKind;
use futures::{future, select, select_biased, FutureExt};
use testkit::within;

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

const LIMIT: Duration = Duration::from_secs(60);
/// A timer that must never win (its branch panics): long enough for any stalled machine.
const NEVER: Duration = Duration::from_secs(30);

#[test]
fn join_and_select_work_on_the_reactor() {
    use futures::AsyncReadExt;
    use reactor::net::{TcpListener, TcpStream};
    use reactor::time::sleep;

    within(LIMIT, || {
        reactor::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (connected, accepted) = future::join(TcpStream::connect(addr), listener.accept()).await;
            // `b`'s peer is one of ours, `a`'s a std socket.
            let (mut b, _) = accepted.unwrap();
            let mut peer_b = connected.unwrap();
            let mut peer_a = StdStream::connect(addr).unwrap();
            let (mut a, _) = listener.accept().await.unwrap();

            // join!: two reads on two streams and a timer, in one task.
            peer_a.write_all(b"to a").unwrap();
            peer_b.write_all(b"to b").await.unwrap();
            let (mut buf_a, mut buf_b) = ([0; 4], [0; 4]);
            let (read_a, read_b, ()) = futures::join!(
                a.read_exact(&mut buf_a),
                b.read_exact(&mut buf_b),
                sleep(Duration::from_millis(1))
            );
            read_a.unwrap();
            read_b.unwrap();
            assert_eq!((&buf_a, &buf_b), (b"to a", b"to b"));

            // select!: nothing sent, so the timer wins over the read...
            let mut buf = [0; 64];
            let timer_won = select! {
                read = a.read(&mut buf).fuse() => panic!("read {read:?} with nothing sent"),
                () = sleep(Duration::from_millis(10)).fuse() => true,
            };
            assert!(timer_won);
            // ... and with bytes sent, the read wins over the timer, and gets them all.
            peer_a.write_all(b"after the timer").unwrap();
            let n = select! {
                read = a.read(&mut buf).fuse() => read.unwrap(),
                () = sleep(NEVER).fuse() => panic!("the read did not complete"),
            };
            let mut rest = vec![0; 15 - n];
            a.read_exact(&mut rest).await.unwrap();
            assert_eq!([&buf[..n], &rest].concat(), b"after the timer");

            // futures::io::BufReader over the stream, and read_line.
            use futures::AsyncBufReadExt;
            peer_a.write_all(b"first line\nsecond").unwrap();
            let mut reader = futures::io::BufReader::new(a);
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, "first line\n");
            peer_a.write_all(b" line\n").unwrap();
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, "second line\n");
            drop(peer_a);
            line.clear();
            assert_eq!(reader.read_line(&mut line).await.unwrap(), 0, "end of stream");
        })
    });
}

/// Reads from `stream` until `n` bytes have come (each read may bring fewer).
async fn read_n(stream: &proactor::net::TcpStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let (read, buf) = stream.read(Vec::with_capacity(n - got.len())).await;
        assert!(read.unwrap() > 0, "end of stream after {got:?}");
        got.extend_from_slice(&buf);
    }
    got
}

#[test]
fn join_and_select_work_on_the_proactor_and_a_losing_read_keeps_its_bytes() {
    use proactor::net::{TcpListener, TcpStream};
    use proactor::time::sleep;

    within(LIMIT, || {
        for kind in RuntimeKind::ALL.into_iter().filter(|&kind| kind != RuntimeKind::Reactor) {
            let runtime = echo::server::proactor_runtime(kind).unwrap();
            runtime.block_on(async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let (connected, accepted) = futures::join!(TcpStream::connect(addr), listener.accept());
                // `b`'s peer is one of ours, `a`'s a std socket.
                let (b, _) = accepted.unwrap();
                let peer_b = connected.unwrap();
                let mut peer_a = StdStream::connect(addr).unwrap();
                let (a, _) = listener.accept().await.unwrap();

                // join!: two reads on two streams and a timer, in one task.
                peer_a.write_all(b"to a").unwrap();
                peer_b.write_all(b"to b").await.0.unwrap();
                let (got_a, got_b, ()) =
                    futures::join!(read_n(&a, 4), read_n(&b, 4), sleep(Duration::from_millis(1)));
                assert_eq!((&got_a[..], &got_b[..]), (&b"to a"[..], &b"to b"[..]), "{kind}");

                // select!: nothing sent, so the timer wins; the read, in flight, is dropped
                // (cancelled) when the select! ends...
                let timer_won = select! {
                    (read, _) = a.read(Vec::with_capacity(64)).fuse() => panic!("{kind}: read {read:?}"),
                    () = sleep(Duration::from_millis(10)).fuse() => true,
                };
                assert!(timer_won);
                // ... and the bytes sent afterwards come to the next read.
                peer_a.write_all(b"after the timer").unwrap();
                let got = select! {
                    got = read_n(&a, 15).fuse() => got,
                    () = sleep(NEVER).fuse() => panic!("{kind}: the read did not complete"),
                };
                assert_eq!(got, b"after the timer", "{kind}");

                // A read that loses after its bytes arrived: submitted, then the bytes come
                // while nobody polls it (the kernel, or glibc's thread, may complete it into
                // its buffer meanwhile), then another branch wins and it is dropped. The next
                // read must get the bytes, whichever way the race went.
                let lost = {
                    let mut read = pin!(a.read(Vec::with_capacity(64)).fuse());
                    assert!(futures::poll!(read.as_mut()).is_pending(), "{kind}");
                    peer_a.write_all(b"raced").unwrap();
                    sleep(Duration::from_millis(50)).await;
                    select_biased! {
                        () = future::ready(()).fuse() => true,
                        _ = read => false,
                    }
                };
                assert!(lost);
                let got = proactor::time::timeout(NEVER, read_n(&a, 5)).await;
                assert_eq!(got.unwrap_or_else(|_| panic!("{kind}: the bytes were lost")), b"raced", "{kind}");
            });
        }
    });
}
