//! A write started on a stream whose future and stream are dropped at once never reaches the
//! socket that gets the stream's fd number next, on each backend (and io_uring with SQPOLL).
//!
//! A file of its own, so that it runs apart from the other tests of the crate (each test file
//! is a process of its own, and cargo runs them one after another), and its tests one at a
//! time: each needs the fd number a stream closed to be the one the next socket this process
//! opens gets, which a test opening or closing sockets on a parallel thread could take first.
//! The driver's rule behind them (an fd is closed through the backend, after the operations
//! queued on it) is also checked deterministically by `tests/simulation.rs`
//! (`a_send_queued_at_a_drop_never_reaches_the_next_socket_with_its_fd`).

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{eventually_async, within, Peers};
use proactor::net::TcpStream;
use proactor::{Backend, Builder, Runtime};

/// The tests of this file run one at a time (see the file's description).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a test of fd reuse knows about when a backend closes a dropped stream's fd.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Close {
    /// Not before the loop turns: the close goes through the ring, after the write's SQE, which
    /// is not even submitted yet (plain io_uring). The number cannot be reused in between.
    AtTheNextTurn,
    /// At once (the epoll emulation: its queued operations are cancelled first, so none can
    /// run on the number once it is reused). The next socket gets the number.
    AtOnce,
    /// Either: SQPOLL's kernel thread may submit the write and the close before the next socket
    /// is opened; aio closes at once unless glibc still runs the write.
    Either,
}

/// A write is started on a stream (its operation handed to the backend: on io_uring, its SQE
/// queued) and its future and the stream are dropped at once, before the loop turns. Every fd
/// number below the stream's is taken first, so that if the stream's fd were closed at once, the
/// very next socket this process opens (a connection to another listener) would get its
/// number. Once the runtime has finished the write and the close, that socket must not have
/// received the write's bytes: what its peer reads first is a mark sent on it after.
///
/// When it passes it proves, for each of `rounds` rounds: no write started on a stream lands
/// on a socket opened after the stream was dropped, whether or not that socket got the number;
/// and that the number was reused (or not) as `close` says.
fn a_dropped_write_never_reaches_the_next_socket_with_its_fd(
    name: &str,
    runtime: Runtime,
    close: Close,
    rounds: u32,
) {
    runtime.block_on(async {
        let front = Peers::new();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut reused = 0;
        for round in 0..rounds {
            let (stream, _peer) = front.pair(TcpStream::connect).await;
            let fd = stream.as_raw_fd();
            let holes = testkit::fill_fd_holes_below(fd);
            drop(stream.write(&b"SECRET"[..]));
            drop(stream);
            let mut next = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
            let (mut next_peer, _) = other.accept().unwrap();
            drop(holes);
            let got_the_number = next.as_raw_fd() == fd;
            reused += u32::from(got_the_number);
            match close {
                Close::AtTheNextTurn => {
                    assert!(!got_the_number, "{name}, round {round}: fd {fd} closed before the loop turned")
                }
                Close::AtOnce => {
                    assert!(got_the_number, "{name}, round {round}: fd {fd} was not closed at once")
                }
                Close::Either => {}
            }
            // The write and the close are over once nothing is in flight.
            eventually_async(format!("{name}: the write's operation over"), || {
                proactor::stats().in_flight == 0
            })
            .await;
            next.write_all(b"MARK").unwrap();
            next_peer.set_read_timeout(Some(testkit::PATIENCE)).unwrap();
            let mut first = [0; 4];
            next_peer.read_exact(&mut first).unwrap();
            assert_eq!(
                &first, b"MARK",
                "{name}, round {round}: the dropped stream's write reached the next socket"
            );
        }
        eprintln!(
            "{name}: the dropped stream's fd number went to the next socket in {reused} of {rounds} rounds"
        );
    });
}

#[test]
fn on_io_uring_a_dropped_write_never_reaches_the_next_socket_with_its_fd() {
    let _serial = one_at_a_time();
    within(Duration::from_secs(60), || {
        let runtime = Builder::new().backend(Backend::IoUring).build().unwrap();
        a_dropped_write_never_reaches_the_next_socket_with_its_fd(
            "io_uring",
            runtime,
            Close::AtTheNextTurn,
            20,
        );
    });
}

#[test]
fn with_sqpoll_a_dropped_write_never_reaches_the_next_socket_with_its_fd() {
    // With SQPOLL the kernel's thread reads SQEs on its own, at any moment, also after the
    // stream is gone: a close made at once (not through the ring, after the write's SQE) would
    // let it resolve the write's fd number after the next socket got it.
    let _serial = one_at_a_time();
    within(Duration::from_secs(60), || {
        let runtime =
            Builder::new().backend(Backend::IoUring).sqpoll(Duration::from_millis(1)).build().unwrap();
        a_dropped_write_never_reaches_the_next_socket_with_its_fd("SQPOLL", runtime, Close::Either, 100);
    });
}

#[test]
fn on_the_epoll_emulation_a_dropped_write_never_reaches_the_next_socket_with_its_fd() {
    let _serial = one_at_a_time();
    within(Duration::from_secs(60), || {
        let runtime = Builder::new().backend(Backend::Epoll).build().unwrap();
        a_dropped_write_never_reaches_the_next_socket_with_its_fd("epoll", runtime, Close::AtOnce, 20);
    });
}

#[test]
fn on_aio_a_dropped_write_never_reaches_the_next_socket_with_its_fd() {
    let _serial = one_at_a_time();
    within(Duration::from_secs(60), || {
        let runtime = Builder::new().backend(Backend::PosixAio).build().unwrap();
        a_dropped_write_never_reaches_the_next_socket_with_its_fd("aio", runtime, Close::Either, 20);
    });
}
