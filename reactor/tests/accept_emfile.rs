//! Accepting when the process is out of file descriptors.
//!
//! The server runs in a child process (this same test binary, re-executed through `prlimit`
//! with a soft `RLIMIT_NOFILE` of 64), so that the limit and the 300 client sockets do not
//! disturb other tests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "REACTOR_EMFILE_CHILD";

/// The child's server: an echo server that reports accept errors on stdout, and, for each line
/// on its stdin, its counters (`STATS <accept4 calls> <loop turns>`); it exits after 60 s at
/// the latest.
fn child_server() {
    let (wakes_tx, wakes) = std::sync::mpsc::channel::<testkit::RemoteWake>();
    std::thread::spawn(move || {
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            let Ok(wake) = wakes.recv() else { return };
            wake.fire();
        }
    });
    reactor::block_on(async {
        let listener = reactor::net::TcpListener::bind("127.0.0.1:0").unwrap();
        println!("PORT {}", listener.local_addr().unwrap().port());
        reactor::spawn(async {
            reactor::time::sleep(Duration::from_secs(60)).await;
            std::process::exit(0);
        });
        // Each request for the counters is a remote wake-up of this task: it costs the loop
        // one turn, and nothing while none comes.
        reactor::spawn(async move {
            loop {
                let (wait, wake) = testkit::remote_wake();
                if wakes_tx.send(wake).is_err() {
                    return;
                }
                wait.await;
                let stats = reactor::stats();
                println!("STATS {} {}", stats.sys_accept, stats.turns);
            }
        });
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    reactor::spawn(common::echo_scratch(stream));
                }
                Err(e) => println!("ACCEPT_ERROR {}", e.raw_os_error().unwrap_or(0)),
            }
        }
    });
}

fn echoes(stream: &mut TcpStream, msg: &[u8]) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut back = vec![0; msg.len()];
    stream.write_all(msg).is_ok() && stream.read_exact(&mut back).is_ok() && back == msg
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn accept_recovers_from_fd_exhaustion_without_spinning() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child_server();
    }
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("prlimit")
        .arg("--nofile=64:20000")
        .arg("--")
        .arg(exe)
        .args(["--exact", "accept_recovers_from_fd_exhaustion_without_spinning", "--nocapture"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .expect("running the child through prlimit (util-linux)");
    let mut child = KillOnDrop(child);
    let mut requests = child.0.stdin.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let port = loop {
        let line = lines.recv_timeout(Duration::from_secs(30)).expect("the child printed its port");
        if let Some(port) = line.strip_prefix("PORT ") {
            break port.parse::<u16>().unwrap();
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // 300 connections: the kernel completes every handshake (the backlog is 1024, capped by
    // net.core.somaxconn), but the child can accept only ~55 of them before it runs out of fds.
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(128);
    let total = 300.min(60 + somaxconn);
    let mut clients: Vec<TcpStream> = (0..total).map(|_| TcpStream::connect(addr).unwrap()).collect();
    assert!(echoes(&mut clients[0], b"first"), "the first connections are served");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut errors = Vec::new();
    while errors.is_empty() && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
            errors.extend(line.strip_prefix("ACCEPT_ERROR ").map(str::to_owned));
        }
    }
    assert_eq!(errors, [libc_emfile().to_string()], "the child reported EMFILE");

    // Saturated: the pending connections keep the listener readable. A naive retry loop would
    // call accept4 thousands of times a second here, and turn the loop as often; the back-off
    // (5 ms doubling to 200 ms) allows about five a second. Counted by the child over a window
    // of at least a second: at most 10 + 10 a second is allowed, however slow the machine (a
    // slower one only retries less).
    let mut errors_meanwhile = 0;
    let mut counters = || {
        let asked = Instant::now();
        writeln!(requests, "counters").unwrap();
        loop {
            let line = lines.recv_timeout(testkit::PATIENCE).expect("the child printed its counters");
            if let Some(stats) = line.strip_prefix("STATS ") {
                let mut numbers = stats.split(' ').map(|n| n.parse::<u64>().unwrap());
                return (asked, numbers.next().unwrap(), numbers.next().unwrap());
            }
            assert!(line.starts_with("ACCEPT_ERROR"), "unexpected line from the child: {line}");
            errors_meanwhile += 1;
        }
    };
    let (from, accepts_before, turns_before) = counters();
    std::thread::sleep(Duration::from_secs(1)); // the window: its length is measured below
    let (_, accepts_after, turns_after) = counters();
    let window = from.elapsed().as_secs_f64();
    let allowed = (10.0 + 10.0 * window) as u64;
    let (accepts, turns) = (accepts_after - accepts_before, turns_after - turns_before);
    eprintln!("out of fds: {accepts} accept4 calls and {turns} loop turns in {window:.2} s");
    assert!(accepts <= allowed, "{accepts} accept4 calls in {window:.1} s while out of fds");
    assert!(turns <= 2 * allowed, "{turns} loop turns in {window:.1} s while out of fds");
    assert!(child.0.try_wait().unwrap().is_none(), "the server is still running");

    // Free fds: close all but the last 40 clients (the server has room for ~55). The server
    // sees those close, then accepts the connections that were waiting in the queue, and they
    // echo: nothing was dropped.
    let closed = total - 40;
    clients.drain(..closed);
    for (i, client) in clients.iter_mut().enumerate() {
        assert!(echoes(client, format!("late {i}").as_bytes()), "queued connection {} is served", closed + i);
    }
    // Reported at most once a second, not once per retry (a spinning retry would report
    // thousands).
    let more = errors_meanwhile + lines.try_iter().filter(|l| l.starts_with("ACCEPT_ERROR")).count();
    drop(requests);
    let allowed = started.elapsed().as_secs() as usize + 1;
    assert!(more < allowed, "{} accept errors reported in {:?}", 1 + more, started.elapsed());
}

fn libc_emfile() -> i32 {
    24 // EMFILE on Linux
}
