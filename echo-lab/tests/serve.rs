//! `echo-lab serve` options, run as users run them: graceful shutdown on SIGTERM, `--threads`,
//! `--max-conns` and `--idle-timeout`, on the reactor and on io_uring; the futures-io echo
//! (`--runtime RUNTIME-futures-io`) on every runtime.
//!
//! Every child is killed when its guard drops (test failures included), every wait is bounded,
//! and everything stays on loopback.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_echo-lab");
const RUNTIMES: [&str; 4] = ["reactor", "uring", "aio", "proactor-epoll"];
/// How long any single read from the server may take.
const IO_LIMIT: Duration = Duration::from_secs(5);

/// A running `echo-lab serve`, killed and reaped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Option<JoinHandle<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `echo-lab serve --runtime RUNTIME --addr 127.0.0.1:0 EXTRA...` and reads its
    /// address from the line it prints.
    fn start(runtime: &str, extra: &[&str]) -> Server {
        let child = Command::new(EXE)
            .args(["serve", "--runtime", runtime, "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start echo-lab serve");
        let mut server = Server { child, addr: "127.0.0.1:0".parse().unwrap(), stderr: None };
        let mut err = server.child.stderr.take().unwrap();
        server.stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }));
        let out = server.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("no line from the server in time");
        let line = line.trim_end();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.strip_suffix(&format!(", runtime {runtime})")))
            .and_then(|rest| rest.strip_suffix(" (tcp and udp").or_else(|| rest.strip_suffix(" (tcp")))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        server.addr = addr.parse().expect("an address");
        server
    }

    fn terminate(&self) {
        // SAFETY: plain syscall on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
    }

    /// Waits up to `limit` for the server to exit; returns its status and its stderr.
    fn wait_for(&mut self, limit: Duration) -> (ExitStatus, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let err = self.stderr.take().map(|h| h.join().unwrap()).unwrap_or_default();
                return (status, err);
            }
            assert!(Instant::now() < end, "the server did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn connect(&self) -> TcpStream {
        let conn = TcpStream::connect(self.addr).expect("connect");
        conn.set_read_timeout(Some(IO_LIMIT)).unwrap();
        conn.set_write_timeout(Some(IO_LIMIT)).unwrap();
        conn
    }
}

/// Sends `msg` and reads back exactly as many bytes, which must be the same.
fn exchange(conn: &mut TcpStream, msg: &[u8]) {
    conn.write_all(msg).expect("send");
    let mut back = vec![0; msg.len()];
    conn.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

/// Reads until end of stream (a reset counts as one too), within `IO_LIMIT`.
fn expect_closed(conn: &mut TcpStream) {
    let mut buf = [0; 64];
    match conn.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes from a connection that should be closed"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected end of stream, got {e}"),
    }
}

#[test]
fn sigterm_lets_a_client_in_mid_conversation_finish() {
    for runtime in RUNTIMES {
        let mut server = Server::start(runtime, &["--grace", "5"]);
        let mut conn = server.connect();
        exchange(&mut conn, b"before the signal");

        server.terminate();
        // The listener closes at once: new connections are refused.
        let end = Instant::now() + IO_LIMIT;
        while TcpStream::connect(server.addr).is_ok() {
            assert!(Instant::now() < end, "{runtime}: still accepting after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The open connection still works, and ends as the client chooses.
        exchange(&mut conn, b"after the signal");
        conn.shutdown(Shutdown::Write).unwrap();
        expect_closed(&mut conn);

        let (status, err) = server.wait_for(Duration::from_secs(4));
        assert!(status.success(), "{runtime}: {status}; stderr: {err}");
        // 1, or 2 if a refusal probe above got in before the signal was handled.
        let line = err.lines().find(|l| l.starts_with("shutting down: ")).unwrap_or_default();
        assert!(
            ["1 connection still open", "2 connections still open"].iter().any(|n| line.contains(n))
                && line.ends_with(", waiting up to 5 s"),
            "{runtime}: {err}"
        );
        assert!(err.lines().any(|l| l == "stopped"), "{runtime}: {err}");
    }
}

#[test]
fn sigterm_drops_connections_still_open_after_the_grace_period() {
    for runtime in RUNTIMES {
        let mut server = Server::start(runtime, &["--grace", "0.5"]);
        let mut conn = server.connect();
        exchange(&mut conn, b"hello");
        server.terminate();
        // The client keeps its connection open; the server closes it after the grace period.
        expect_closed(&mut conn);
        let (status, err) = server.wait_for(Duration::from_secs(4));
        assert!(status.success(), "{runtime}: {status}; stderr: {err}");
        assert!(
            err.contains("stopped (1 connection dropped at the end of the grace period)"),
            "{runtime}: {err}"
        );
    }
}

#[test]
fn two_threads_serve_many_connections() {
    const CLIENTS: usize = 16;
    const CONNS_PER_CLIENT: usize = 8;
    for runtime in RUNTIMES {
        let mut server = Server::start(runtime, &["--threads", "2"]);
        let addr = server.addr;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut conns: Vec<TcpStream> = (0..CONNS_PER_CLIENT)
                        .map(|_| {
                            let conn = TcpStream::connect(addr).expect("connect");
                            conn.set_read_timeout(Some(IO_LIMIT)).unwrap();
                            conn
                        })
                        .collect();
                    for round in 0..10 {
                        for (i, conn) in conns.iter_mut().enumerate() {
                            exchange(conn, format!("client {c} conn {i} round {round}").as_bytes());
                        }
                    }
                    for conn in &mut conns {
                        conn.shutdown(Shutdown::Write).unwrap();
                        expect_closed(conn);
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("a client failed");
        }
        server.terminate();
        let (status, err) = server.wait_for(Duration::from_secs(4));
        assert!(status.success(), "{runtime}: {status}; stderr: {err}");
        assert!(err.lines().any(|l| l == "stopped"), "{runtime}: {err}");
    }
}

#[test]
fn max_conns_closes_the_connection_past_the_limit_and_keeps_serving() {
    for runtime in RUNTIMES {
        let mut server = Server::start(runtime, &["--max-conns", "2"]);
        let mut first = server.connect();
        let mut second = server.connect();
        // Both admitted before the third arrives.
        exchange(&mut first, b"one");
        exchange(&mut second, b"two");

        // As documented: accepted and closed at once.
        let mut third = server.connect();
        expect_closed(&mut third);
        let mut fourth = server.connect();
        expect_closed(&mut fourth);

        exchange(&mut first, b"one again");
        exchange(&mut second, b"two again");

        // Once one closes, a new connection is served again.
        first.shutdown(Shutdown::Write).unwrap();
        expect_closed(&mut first);
        drop(first);
        let end = Instant::now() + IO_LIMIT;
        let mut fifth = loop {
            let mut conn = server.connect();
            let _ = conn.write_all(b"five");
            let mut back = [0; 4];
            match conn.read_exact(&mut back) {
                Ok(()) if &back == b"five" => break conn,
                // The server may not have counted the first one out yet: try again.
                _ => assert!(Instant::now() < end, "{runtime}: never served again after one closed"),
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        exchange(&mut fifth, b"still here");
        exchange(&mut second, b"two, third time");
        drop((second, fifth));

        server.terminate();
        let (status, err) = server.wait_for(Duration::from_secs(4));
        assert!(status.success(), "{runtime}: {status}; stderr: {err}");
        // One line for the episode (third and fourth), not one per connection.
        let episode_lines = err.lines().filter(|l| l.contains("--max-conns 2 reached")).count();
        assert_eq!(episode_lines, 1, "{runtime}: {err}");
        assert!(err.contains("refused by --max-conns"), "{runtime}: {err}");
    }
}

#[test]
fn idle_timeout_closes_an_idle_client_and_keeps_a_busy_one() {
    for runtime in RUNTIMES {
        let mut server = Server::start(runtime, &["--idle-timeout", "1"]);
        let mut idle = server.connect();
        exchange(&mut idle, b"then nothing");
        // The idle client's silence starts now; a reader thread notes when the server closes it.
        let silent_since = Instant::now();
        let closed_after = std::thread::spawn(move || {
            expect_closed(&mut idle);
            silent_since.elapsed()
        });
        let mut busy = server.connect();
        for i in 0..5 {
            exchange(&mut busy, format!("busy {i}").as_bytes());
            std::thread::sleep(Duration::from_millis(300));
        }
        let waited = closed_after.join().expect("the idle client was not closed");
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&waited),
            "{runtime}: the idle client was closed after {waited:?} of silence, not about 1 s"
        );
        exchange(&mut busy, b"still open");

        server.terminate();
        let (status, err) = server.wait_for(Duration::from_secs(4));
        assert!(status.success(), "{runtime}: {status}; stderr: {err}");
        assert!(err.contains("1 idle connection closed so far"), "{runtime}: {err}");
    }
}

#[test]
fn tokio_rejects_the_options_it_does_not_have() {
    let out = Command::new(EXE)
        .args(["serve", "--runtime", "tokio", "--addr", "127.0.0.1:0", "--threads", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run echo-lab");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("need --runtime reactor, uring, aio or proactor-epoll"), "{err}");
}

#[test]
fn the_futures_io_echo_serves_on_every_runtime_and_stops_on_sigterm() {
    for runtime in RUNTIMES {
        let name = format!("{runtime}-futures-io");
        let mut server = Server::start(&name, &["--grace", "5"]);
        let mut conn = server.connect();
        exchange(&mut conn, b"hello");
        // Larger than the handler's 8 KiB buffer: several reads and writes, in order.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        exchange(&mut conn, &big);
        conn.shutdown(Shutdown::Write).unwrap();
        expect_closed(&mut conn);
        server.terminate();
        let (status, err) = server.wait_for(Duration::from_secs(4));
        assert!(status.success(), "{name}: {status}; stderr: {err}");
        assert!(err.lines().any(|l| l == "stopped"), "{name}: {err}");
    }
}

#[test]
fn the_futures_io_echo_rejects_an_idle_timeout() {
    let out = Command::new(EXE)
        .args(["serve", "--runtime", "uring-futures-io", "--addr", "127.0.0.1:0", "--idle-timeout", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run echo-lab");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--idle-timeout needs the owned-buffer echo"), "{err}");
}
