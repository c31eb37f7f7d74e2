//! The aio backend at its thread limit: with glibc's pool sized to 8 threads, 8 idle
//! connections each holding a read take them all (7 with `AioNotify::Suspend`, whose wake read
//! holds one). The next read must fail at once (EAGAIN) instead of queueing behind reads that
//! may never finish, and the server must serve again as soon as threads are free; for each
//! notification. Alone in its binary: glibc sizes its pool once per process.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::within;
use proactor::net::{TcpListener, TcpStream};
use proactor::time::timeout;
use proactor::{AioNotify, Backend, Builder};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

#[test]
fn past_the_thread_limit_reads_are_refused_at_once_and_serving_resumes_when_threads_free_up() {
    for notify in AioNotify::ALL {
        eprintln!("notify: {notify}");
        limit_holds(notify);
    }
}

fn limit_holds(notify: AioNotify) {
    // The wake read of `Suspend` holds a thread of its own.
    let readers = if notify == AioNotify::Suspend { 7 } else { 8 };
    within(Duration::from_secs(30), move || {
        let runtime =
            Builder::new().backend(Backend::PosixAio).aio_threads(8).aio_notify(notify).build().unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // Idle connections, each with a read blocked in a glibc thread, take every thread.
            let mut idle = Vec::new();
            let mut held = Vec::new();
            for _ in 0..readers {
                let peer = std::net::TcpStream::connect(addr).unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                held.push(proactor::spawn(async move {
                    let (read, buf) = stream.read(vec![0; 16]).await;
                    (read.map(|_| buf), stream)
                }));
                idle.push(peer);
            }
            // (The gauge counts the runtime's requests, not `Suspend`'s wake read.)
            common::eventually_async("every idle read blocked in a glibc thread", || {
                proactor::stats().aio_threads_in_use.map(|(glibc, _)| glibc) == Some(readers)
            })
            .await;

            // One read more: refused at once, not queued forever.
            let mut ninth_peer = std::net::TcpStream::connect(addr).unwrap();
            let (ninth, _) = listener.accept().await.unwrap();
            ninth_peer.write_all(b"hi").unwrap();
            let refused = timeout(Duration::from_secs(5), ninth.read(vec![0; 16])).await;
            let (read, _) = refused.expect("the read waited instead of being refused");
            assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::EAGAIN));

            // One idle connection speaks: its thread is free again, and the ninth connection is
            // served, with nothing lost.
            idle[0].write_all(b"x").unwrap();
            let (read, stream) = held.remove(0).await.unwrap();
            assert_eq!(read.unwrap(), b"x");
            drop(stream);
            let (read, buf) = timeout(Duration::from_secs(5), ninth.read(vec![0; 16])).await.unwrap();
            assert_eq!(read.unwrap(), 2);
            assert_eq!(buf, b"hi");
            ninth.write_all(buf).await.0.unwrap();
            let mut back = [0; 2];
            ninth_peer.read_exact(&mut back).unwrap();
            assert_eq!(&back, b"hi");

            // Connecting still works too (it uses the runtime's own helper threads).
            drop(TcpStream::connect(addr).await.unwrap());
        })
    });
}
