//! Backpressure: peers that stop reading decide neither the server's memory nor who is served.
//!
//! Each test runs the echo (`read_provided`, then a send behind) on one backend, with a small
//! memory budget, and 200 clients that each write until the kernel says no more (`EAGAIN`)
//! and never read. Every socket gets small kernel buffers, so that the echoes stall, and the
//! clients' writes block, after a few dozen KiB instead of megabytes of kernel memory. The runtime's own gauges
//! (published by a task on the server's thread) say what it holds; no test measures time.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use proactor::net::{TcpListener, TcpStream};
use proactor::{AioNotify, Backend, Builder, Stats};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

const CLIENTS: usize = 200;
const CONNECTION_BUDGET: usize = 64 << 10;
const MEMORY_BUDGET: usize = 1 << 20;
/// What a stream that holds nothing may still receive under pressure (16 KiB), and the most the
/// last completion of a receive may pass its allowance by (as much again).
const RESERVE: u64 = 32 << 10;

/// What client `client` sends from byte `offset` on, into `out`: a sequence that repeats every
/// 256 bytes, shifted per client (a lost, repeated or reordered piece shows).
fn pattern(client: usize, offset: u64, out: &mut [u8]) {
    let start = (client as u64 * 7 + offset) as u8;
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = start.wrapping_add(k as u8);
    }
}

fn set_buffer(fd: i32, option: libc::c_int, bytes: libc::c_int) {
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
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

async fn echo(stream: TcpStream) -> io::Result<()> {
    while let Some(received) = stream.read_provided().await? {
        stream.write_all_behind(received).await?;
    }
    stream.flush().await
}

/// An echo server on its own thread: its address, and the latest snapshot of its counters.
fn start(
    backend: Backend,
    notify: AioNotify,
    kernel_limits: bool,
) -> (SocketAddr, Arc<Mutex<Option<Stats>>>) {
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(Mutex::new(None));
    let published = stats.clone();
    thread::spawn(move || {
        let runtime = Builder::new()
            .backend(backend)
            .aio_notify(notify)
            .connection_budget(CONNECTION_BUDGET)
            .memory_budget(MEMORY_BUDGET)
            .kernel_receive_limits(kernel_limits)
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            proactor::spawn(async move {
                loop {
                    *published.lock().unwrap() = Some(proactor::stats());
                    proactor::time::sleep(Duration::from_millis(5)).await;
                }
            });
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                set_buffer(stream.as_raw_fd(), libc::SO_SNDBUF, 8 << 10);
                set_buffer(stream.as_raw_fd(), libc::SO_RCVBUF, 8 << 10);
                proactor::spawn(echo(stream));
            }
        })
    });
    (rx.recv_timeout(Duration::from_secs(10)).expect("server thread"), stats)
}

/// The server's latest snapshot, once one is taken after `after` (a count of its turns).
fn snapshot(stats: &Mutex<Option<Stats>>) -> Stats {
    for _ in 0..2000 {
        if let Some(stats) = *stats.lock().unwrap() {
            return stats;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("the server published no counters");
}

/// Waits (boundedly) until the server has taken two snapshots after now, and returns the last.
fn fresh(stats: &Mutex<Option<Stats>>) -> Stats {
    let turns = snapshot(stats).turns;
    for _ in 0..2000 {
        let now = snapshot(stats);
        if now.turns > turns + 2 {
            return now;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("the server's loop does not turn");
}

struct Client {
    stream: StdStream,
    sent: u64,
    received: u64,
}

/// Every client writes until none can write more for a while (the server stopped taking bytes).
fn write_until_blocked(clients: &mut [Client]) {
    let mut bytes: Vec<u8> = vec![0; 16 << 10];
    let mut idle_rounds = 0;
    for _ in 0..20_000 {
        let mut progress = false;
        for (i, client) in clients.iter_mut().enumerate() {
            pattern(i, client.sent, &mut bytes);
            match client.stream.write(&bytes) {
                Ok(n) => {
                    client.sent += n as u64;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client {i}: {e}"),
            }
        }
        idle_rounds = if progress { 0 } else { idle_rounds + 1 };
        if idle_rounds >= 40 {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("the clients could always write more: nothing pushes back");
}

/// Every client reads until it got back all it sent, checking each byte.
fn read_everything_back(clients: &mut [Client]) {
    let mut buf = vec![0u8; 64 << 10];
    let mut expected = vec![0u8; 64 << 10];
    for _ in 0..200_000 {
        let mut done = true;
        for (i, client) in clients.iter_mut().enumerate() {
            if client.received == client.sent {
                continue;
            }
            done = false;
            match client.stream.read(&mut buf) {
                Ok(0) => panic!("client {i}: end of stream after {} of {}", client.received, client.sent),
                Ok(n) => {
                    pattern(i, client.received, &mut expected[..n]);
                    if buf[..n] != expected[..n] {
                        let k = (0..n).find(|&k| buf[k] != expected[k]).unwrap_or(0);
                        panic!("client {i}: byte {} differs", client.received + k as u64);
                    }
                    client.received += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client {i}: {e}"),
            }
        }
        if done {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("not every echo came back");
}

fn stalled_clients_hold_the_budget_a_newcomer_is_served_and_reading_drains_everything(
    backend: Backend,
    kernel_limits: bool,
) {
    stalled_clients_on(backend, AioNotify::default(), kernel_limits);
}

fn stalled_clients_on(backend: Backend, notify: AioNotify, kernel_limits: bool) {
    let (addr, stats) = start(backend, notify, kernel_limits);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let stream = StdStream::connect(addr).unwrap();
            set_buffer(stream.as_raw_fd(), libc::SO_RCVBUF, 4 << 10);
            set_buffer(stream.as_raw_fd(), libc::SO_SNDBUF, 8 << 10);
            stream.set_nonblocking(true).unwrap();
            Client { stream, sent: 0, received: 0 }
        })
        .collect();
    write_until_blocked(&mut clients);
    let stalled = fresh(&stats);
    // Where the kernel cannot end a receive at its allowance, the driver stops it, and what the
    // kernel took into the ring in that turn still arrives: at most a socket's receive queue
    // (the server's sockets have 8 KiB, which the kernel doubles) per stream.
    let overshoot = if kernel_limits { 0 } else { 2 * (16 << 10) };
    let bound = MEMORY_BUDGET as u64 + CLIENTS as u64 * (RESERVE + overshoot);
    eprintln!(
        "{backend:?}: clients wrote {} KiB each on average; the server holds {} KiB (peak {} KiB, bound {} KiB), \
         {} receives paused, {} limited",
        clients.iter().map(|c| c.sent).sum::<u64>() / CLIENTS as u64 / 1024,
        stalled.held_bytes / 1024,
        stalled.held_peak / 1024,
        bound / 1024,
        stalled.recv_paused,
        stalled.recv_limited,
    );
    assert!(
        stalled.held_peak <= bound,
        "{backend:?}: held {} bytes at most, bound {bound}",
        stalled.held_peak
    );
    if let Some((_, total)) = stalled.ring_buffers {
        // The default ring: 16 KiB buffers, 16 MiB at most.
        assert!(u64::from(total) * (16 << 10) <= 16 << 20, "{backend:?}: the ring grew to {total} buffers");
    }

    // A newcomer is served while they all wait.
    let mut newcomer = StdStream::connect(addr).unwrap();
    newcomer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    newcomer.write_all(b"hello").unwrap();
    let mut echoed = [0u8; 5];
    newcomer.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello");
    drop(newcomer);

    // Reading again drains everything, in order, byte for byte.
    read_everything_back(&mut clients);
    drop(clients);
    for _ in 0..4000 {
        let now = fresh(&stats);
        if now.held_bytes == 0 && now.streams_waiting == 0 {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let now = snapshot(&stats);
    panic!(
        "{backend:?}: still {} bytes held, {} streams waiting after every client left",
        now.held_bytes, now.streams_waiting
    );
}

#[test]
fn on_io_uring() {
    if Builder::new().backend(Backend::IoUring).build().is_err() {
        eprintln!("skipped: io_uring cannot be set up here");
        return;
    }
    stalled_clients_hold_the_budget_a_newcomer_is_served_and_reading_drains_everything(
        Backend::IoUring,
        true,
    );
}

/// As on a kernel before 6.17, where the driver, not the kernel, stops a receive at its
/// allowance (and the pieces already under way still come).
#[test]
fn on_io_uring_without_kernel_limits() {
    if Builder::new().backend(Backend::IoUring).build().is_err() {
        eprintln!("skipped: io_uring cannot be set up here");
        return;
    }
    stalled_clients_hold_the_budget_a_newcomer_is_served_and_reading_drains_everything(
        Backend::IoUring,
        false,
    );
}

#[test]
fn on_the_epoll_emulation() {
    stalled_clients_hold_the_budget_a_newcomer_is_served_and_reading_drains_everything(Backend::Epoll, true);
}

#[test]
fn on_posix_aio() {
    stalled_clients_hold_the_budget_a_newcomer_is_served_and_reading_drains_everything(
        Backend::PosixAio,
        true,
    );
}

#[test]
fn on_posix_aio_notified_by_signals() {
    stalled_clients_on(Backend::PosixAio, AioNotify::Signal, true);
}

#[test]
fn on_posix_aio_notified_by_threads() {
    stalled_clients_on(Backend::PosixAio, AioNotify::Thread, true);
}

/// A stream whose own send behind holds more than its connection budget, and whose peer waits
/// for it to read before it reads again (an echo server, whose echoes fill this side's window),
/// still receives: its send waits on the peer, the peer on it. (A stream holding its budget in
/// a send behind once did not receive until that send was over: the two waited for each other
/// forever. Found by the simulation, `SIM_SEED=690`.)
#[test]
fn a_stream_whose_send_behind_waits_on_an_echo_peer_still_receives() {
    for backend in [Backend::Auto, Backend::Epoll, Backend::PosixAio] {
        sends_behind_against_an_echo_peer(backend, 8 << 20, 256 << 10);
    }
}

/// The same with a memory budget smaller than a send behind and a read's worth together, and
/// sends behind of 8 KiB, well inside the connection's budget: there is never room in the
/// memory budget for a stream that holds its send, so it must not wait for room. (With a
/// memory budget under 16 KiB such a stream once waited for room that never came, its send
/// for the peer, the peer for it to read: forever. Found by the simulation, `SIM_SEED=855`.)
#[test]
fn under_a_memory_budget_smaller_than_a_send_and_a_read_a_stream_still_receives() {
    for backend in [Backend::Auto, Backend::Epoll, Backend::PosixAio] {
        sends_behind_against_an_echo_peer(backend, 12 << 10, 8 << 10);
    }
}

/// A stream sends 256 KiB behind, in sends of `chunk` bytes (each waits for the one ahead),
/// with a connection budget of 64 KiB and `memory_budget`, to a peer that echoes with blocking
/// calls, while its task reads the echo: everything must come back within 20 s.
fn sends_behind_against_an_echo_peer(backend: Backend, memory_budget: usize, chunk: usize) {
    const TOTAL: usize = 256 << 10;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A peer that echoes with blocking calls: it reads only once its write is through.
    let peer = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        set_buffer(stream.as_raw_fd(), libc::SO_RCVBUF, 16 << 10);
        set_buffer(stream.as_raw_fd(), libc::SO_SNDBUF, 16 << 10);
        let mut buf = vec![0; 64 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let runtime = Builder::new()
            .backend(backend)
            .connection_budget(64 << 10)
            .memory_budget(memory_budget)
            .build()
            .unwrap();
        let got = runtime.block_on(async {
            let stream = TcpStream::connect(addr).await.unwrap();
            set_buffer(stream.as_raw_fd(), libc::SO_RCVBUF, 16 << 10);
            set_buffer(stream.as_raw_fd(), libc::SO_SNDBUF, 16 << 10);
            let mut sent = vec![0u8; TOTAL];
            pattern(1, 0, &mut sent);
            let write = async {
                for piece in sent.chunks(chunk) {
                    stream.write_all_behind(piece.to_vec()).await.unwrap();
                }
                stream.flush().await.unwrap();
            };
            let read = async {
                let mut got = Vec::with_capacity(TOTAL);
                while got.len() < TOTAL {
                    match stream.read_provided().await.unwrap() {
                        Some(buf) => got.extend_from_slice(&buf),
                        None => break,
                    }
                }
                got
            };
            let ((), got) = futures::join!(write, read);
            assert!(got == sent, "the echo differs from what was sent");
            got.len()
        });
        let _ = done_tx.send(got);
    });
    let got = done_rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(
        got,
        Ok(TOTAL),
        "{backend:?}, memory budget {memory_budget}, sends of {chunk}: the stream and its echo peer waited for each other"
    );
    peer.join().unwrap();
}
