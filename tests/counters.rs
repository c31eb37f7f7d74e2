//! The runtimes' own counters (`reactor::stats`, `proactor::stats`) against known work: one
//! connection, N echoes, then end of stream. Each server runs on a thread of its own, and its
//! counters are that thread's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use testkit::within;

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

const N: u64 = 50;

/// Runs `run` (a server of one connection) on a thread of its own with a fresh listener;
/// returns the listener's address and the thread, whose result is the server's counters.
fn serve_one<S: Send + 'static>(
    run: impl FnOnce(std::net::TcpListener) -> S + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<S>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, std::thread::spawn(move || run(listener)))
}

/// The client: N messages, each echoed, then end of stream.
fn client(addr: SocketAddr) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..N {
        let msg = format!("message {i:04}");
        conn.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
}

macro_rules! one_connection {
    ($rt:ident, $runtime:expr) => {{
        let (tx, rx) = mpsc::channel();
        let (addr, server) = serve_one(move |listener| {
            let runtime = $runtime;
            let before = $rt::stats();
            runtime.block_on(async move {
                let listener = $rt::net::TcpListener::from_std(listener).unwrap();
                tx.send(()).unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                echo::handle(stream).await.unwrap();
            });
            $rt::stats().since(&before)
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        within(Duration::from_secs(30), move || client(addr));
        server.join().unwrap()
    }};
}

#[test]
fn the_reactor_counts_a_read_and_a_write_per_echo_and_a_share_of_one_wait() {
    let s = one_connection!(reactor, reactor::Runtime::new().unwrap());
    // N messages plus the end of stream; each message is one read and one send.
    assert!(s.sys_read > N, "{s:?}");
    assert!(s.sys_write >= N, "{s:?}");
    assert_eq!(s.sys_accept, 1, "{s:?}");
    // The listener and the connection are each registered once and removed once: nothing is
    // re-armed per message (edge-triggered).
    assert_eq!(s.sys_epoll_ctl, 4, "{s:?}");
    // A ping-pong client makes the server sleep once per message.
    assert!(s.sys_epoll_wait >= N && s.waits_blocking >= N, "{s:?}");
    assert!(s.events >= N && s.max_events >= 1, "{s:?}");
    assert!(s.tasks_polled >= N && s.turns >= N, "{s:?}");
    // A short read clears readiness: no EAGAIN round trip per message.
    assert!(s.would_block < N / 2, "{s:?}");
    let per_echo = s.syscalls() as f64 / N as f64;
    assert!((2.0..4.0).contains(&per_echo), "{per_echo} syscalls per echo: {s:?}");
}

/// `echo::handle` on the proactor sends behind: each echo's send completes in the driver, which
/// wakes nobody (`quiet` of the N at least); the handler is polled once per echo (the receive's
/// wake), once more for each send that did wake it, and a few times for the accept, the first
/// receive and the end of stream.
fn assert_one_poll_per_echo(s: &proactor::Stats, quiet: u64) {
    assert_eq!(s.sends_behind, N, "{s:?}");
    assert!(s.sends_quiet >= quiet, "sends behind that woke the task: {s:?}");
    let woke = N - s.sends_quiet;
    assert!(s.tasks_polled <= N + woke + 10, "{} polls for {N} echoes: {s:?}", s.tasks_polled);
}

#[test]
fn the_reactor_echo_reads_once_per_message_and_never_gets_eagain() {
    let s = one_connection!(reactor, reactor::Runtime::new().unwrap());
    // Each message is read once, by a read shorter than the buffer, which clears readiness: the
    // next `recv` waits for the next event instead of trying a read that would say EAGAIN. One
    // more read gets the end of stream.
    assert_eq!(s.would_block, 0, "{s:?}");
    assert_eq!(s.sys_read, N + 1, "{s:?}");
    assert_eq!(s.sys_write, N, "{s:?}");
}

#[test]
fn io_uring_counts_a_recv_and_a_send_completion_per_echo_and_no_sqe_per_recv() {
    let s =
        one_connection!(proactor, echo::server::proactor_runtime(echo::server::RuntimeKind::Uring).unwrap());
    assert!(s.recvs > N, "{s:?}"); // N messages and the end of stream
    assert!(s.sends >= N, "{s:?}");
    assert_eq!(s.accepts, 1, "{s:?}");
    assert!(s.completions >= 2 * N, "{s:?}");
    // One SQE per send; the receives come from one multishot RECV, not an SQE each.
    assert!(s.sqes >= N && s.sqes < N + 20, "{} SQEs for {N} echoes: {s:?}", s.sqes);
    assert!(s.sys_io_uring_enter >= N, "{s:?}");
    assert_eq!(s.aio_requests, 0, "{s:?}");
    assert_one_poll_per_echo(&s, N);
}

#[test]
fn aio_counts_a_glibc_request_and_a_notification_per_read_and_per_write_whatever_the_notification() {
    for notify in proactor::AioNotify::ALL {
        let kind = echo::server::RuntimeKind::Aio(notify);
        let s = one_connection!(proactor, echo::server::proactor_runtime(kind).unwrap());
        assert!(s.recvs > N && s.sends >= N, "{notify}: {s:?}");
        assert_eq!(s.accepts, 1, "{notify}: {s:?}");
        // Every read and write is a glibc request, reported by a notification (a thread, a
        // signal, or found over after aio_suspend).
        assert!(s.aio_requests > 2 * N, "{notify}: {s:?}");
        assert!(s.aio_notifications > 2 * N, "{notify}: {s:?}");
        // The accept ran on the runtime's own helper thread.
        assert_eq!(s.aio_helper_jobs, 1, "{notify}: {s:?}");
        assert_eq!(s.sys_io_uring_enter + s.sqes, 0, "{notify}: {s:?}");
        // The loop's waits: poll, or aio_suspend.
        assert!(s.sys_poll >= 1, "{notify}: {s:?}");
        // glibc may report the next message's read before the echo's write (each by a thread
        // of its own): the next send behind then waits for the write, and is woken at its end.
        // How often depends on glibc's threads' timing (23 of 50 quiet once, under load), so no
        // share of quiet sends is required here; each send that woke the task must still cost
        // it no more than one poll.
        assert_one_poll_per_echo(&s, 0);
    }
}

#[test]
fn proactor_epoll_performs_a_recv_and_a_send_per_echo_for_the_task_and_registers_once() {
    let kind = echo::server::RuntimeKind::ProactorEpoll;
    let s = one_connection!(proactor, echo::server::proactor_runtime(kind).unwrap());
    assert!(s.recvs > N && s.sends >= N, "{s:?}"); // N messages and the end of stream
    assert_eq!(s.accepts, 1, "{s:?}");
    // Each receive is a completion; a send behind on a writable socket goes out from the task
    // at once (`Io::send_now`), with none: counted as a send that woke nobody.
    assert!(s.completions >= N, "{s:?}");
    assert!(s.sends_quiet >= N / 2, "{s:?}");
    // The driver made each receive itself, the task each send, and a short receive clears
    // readiness: no EAGAIN round trip per message.
    assert!(s.sys_epoll_io >= 2 * N, "{s:?}");
    assert!(s.would_block < N / 2, "{s:?}");
    // The listener and the connection are each added once and removed once.
    assert_eq!(s.sys_epoll_ctl, 4, "{s:?}");
    assert!(s.sys_epoll_wait >= N, "{s:?}");
    assert_eq!(s.sys_io_uring_enter + s.sqes + s.aio_requests, 0, "{s:?}");
    let per_echo = s.syscalls() as f64 / N as f64;
    assert!((2.0..4.0).contains(&per_echo), "{per_echo} syscalls per echo: {s:?}");
    assert_one_poll_per_echo(&s, N);
}
