//! Hostile conditions, on every runtime (reactor, uring, aio, proactor-epoll): what a real network does to a
//! server. Each test names the behaviour it checks; after each fault the server must still echo
//! correctly.
//!
//! Most servers run in this process (`echo::server::spawn`). Tests that need a process of their
//! own (an fd limit, 10,000 connections) start this test binary again as a child that only
//! serves (`child_server`, selected by the `HOSTILE_CHILD` environment variable).

use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use conformance::server;
use echo::server::RuntimeKind;
use testkit::{blocking_round_trip, cpu_ticks, reset_on_close as linger_zero, within, Rng, PATIENCE};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

const IO_LIMIT: Duration = Duration::from_secs(20);

/// Tests that measure this process (memory) run alone; the others share.
static MEASURING: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    MEASURING.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn for_each_runtime(test: impl Fn(RuntimeKind)) {
    for kind in RuntimeKind::ALL {
        test(kind);
    }
}

/// A server name ("reactor", "poll", ...) for messages.
type Name = &'static str;

/// Runs `test` on every runtime and on each of the seed's classic models, each on a fresh
/// server (for the faults where a model fits: the models have no panic hook, no limits, and
/// need a thread or process per connection).
fn for_every_server(test: impl Fn(Name, SocketAddr)) {
    for kind in RuntimeKind::ALL {
        test(kind.name(), server(kind, false));
    }
    for model in models() {
        let own_process = match model {
            // A process per connection forks the process it runs in: in this one, that copies
            // every thread, socket and buffer of the tests running beside it (10,000 sockets,
            // say), which on a loaded machine made an echo wait longer than its limit behind a
            // thousand forks. A small process of its own forks fast.
            echo::models::Model::Fork => Some(20_000),
            // select(2) cannot watch an fd of 1,024 or more (FD_SETSIZE), and this process's fd
            // numbers go far past that (another test holds 10,000 client ends at once): in a
            // process of its own, a fault's connections get fds below it.
            echo::models::Model::Select => Some(4096),
            _ => None,
        };
        if let Some(nofile) = own_process {
            let server = ChildServer::start(model, nofile);
            test(model.name(), server.addr);
            continue;
        }
        let addr = echo::models::spawn(model, "127.0.0.1:0".parse().unwrap())
            .unwrap_or_else(|e| panic!("starting the {model} server: {e}"));
        test(model.name(), addr);
    }
}

/// The seed's classic models to run the faults on: all of them, except the process per
/// connection under AddressSanitizer, where each fork copies the sanitizer's state (a thousand
/// connections took over a minute and saturated a CPU). The sanitizer is there for the
/// runtimes' unsafe code; the fork model has none of it.
fn models() -> impl Iterator<Item = echo::models::Model> {
    let sanitized = under_address_sanitizer();
    echo::models::Model::ALL.into_iter().filter(move |model| {
        let skip = sanitized && *model == echo::models::Model::Fork;
        if skip {
            eprintln!("fork: skipped under AddressSanitizer (a process per connection, each a copy of the sanitizer's state)");
        }
        !skip
    })
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(IO_LIMIT)).unwrap();
    conn.set_write_timeout(Some(IO_LIMIT)).unwrap();
    conn
}

/// Sends `msg` and reads exactly as many bytes back.
fn exchange(conn: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    conn.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    conn.read_exact(&mut back).unwrap();
    back
}

/// The server still echoes a fresh connection byte for byte.
fn still_echoes(kind: impl std::fmt::Display + Send + 'static, addr: SocketAddr) {
    let data = Rng::new(99).bytes(100_000);
    // A generous limit: a thread- or process-per-connection model may still be reaping the
    // fault's connections while other tests load both cores (or under a sanitizer); a server
    // that stopped serving still fails, and says which it was.
    let echoed = std::panic::catch_unwind(|| {
        within(STILL_ECHOES_LIMIT, {
            let data = data.clone();
            move || blocking_round_trip(addr, data, 5)
        })
    })
    .unwrap_or_else(|_| panic!("{kind}: no echo within {STILL_ECHOES_LIMIT:?} after the fault"));
    assert!(echoed == data, "{kind}: the server no longer echoes correctly");
}

const STILL_ECHOES_LIMIT: Duration = Duration::from_secs(60);

#[test]
fn clients_that_reset_mid_stream_while_the_server_writes_do_not_disturb_it() {
    let _shared = shared();
    for_every_server(|kind, addr| {
        for _ in 0..30 {
            let mut conn = connect(addr);
            conn.set_nonblocking(true).unwrap();
            // Never read: the echo fills this socket's receive buffer, the server's writes
            // block, and then the connection is reset under them.
            let chunk = [0x5A; 64 * 1024];
            for _ in 0..8 {
                match conn.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{kind}: {e}"),
                }
            }
            linger_zero(&conn);
        }
        still_echoes(kind, addr);
    });
}

#[test]
fn a_mebibyte_of_binary_with_nuls_in_ragged_chunks_comes_back_exact() {
    let _shared = shared();
    for_every_server(|kind, addr| {
        // Runs of NULs, of 0xFF and of random bytes: nothing treats the data as text.
        let mut rng = Rng::new(3);
        let mut data = Vec::with_capacity(1 << 20);
        while data.len() < 1 << 20 {
            let run = rng.range(1, 300);
            match rng.range(0, 3) {
                0 => data.extend(std::iter::repeat_n(0u8, run)),
                1 => data.extend(std::iter::repeat_n(0xFFu8, run)),
                _ => data.extend(rng.bytes(run)),
            }
        }
        data.truncate(1 << 20);
        let echoed = within(IO_LIMIT, {
            let data = data.clone();
            move || {
                let conn = connect(addr);
                let mut writer = conn.try_clone().unwrap();
                conn.set_nodelay(true).unwrap();
                let sender = std::thread::spawn(move || {
                    let mut rng = Rng::new(4);
                    let mut rest = &data[..];
                    while !rest.is_empty() {
                        // 1 to 3,000 bytes, with a pause now and then so that segments go out
                        // separately: the server sees the stream in ragged pieces.
                        let n = rng.range(1, 3000).min(rest.len());
                        writer.write_all(&rest[..n]).unwrap();
                        rest = &rest[n..];
                        if rng.range(0, 40) == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                let mut echoed = Vec::new();
                let mut reader = conn;
                reader.read_to_end(&mut echoed).unwrap();
                sender.join().unwrap();
                echoed
            }
        });
        assert_eq!(echoed.len(), data.len(), "{kind}");
        assert!(echoed == data, "{kind}: the echo differs from what was sent");
    });
}

#[test]
fn a_thousand_connections_that_close_without_a_byte_leave_the_server_serving() {
    let _shared = shared();
    for_every_server(|kind, addr| {
        for i in 0..1000 {
            let conn = connect(addr);
            if i % 2 == 0 {
                linger_zero(&conn); // half of them reset, half close cleanly
            }
        }
        still_echoes(kind, addr);
    });
}

#[test]
fn five_hundred_connections_opened_at_once_all_echo() {
    let _shared = shared();
    for_every_server(|kind, addr| {
        within(Duration::from_secs(60), move || {
            // Opened in one burst, before any of them speaks.
            let mut conns: Vec<TcpStream> = (0..500).map(|_| connect(addr)).collect();
            for (i, conn) in conns.iter_mut().enumerate() {
                conn.write_all(format!("connection {i:03}").as_bytes()).unwrap();
            }
            for (i, conn) in conns.iter_mut().enumerate() {
                let mut back = [0; 14];
                conn.read_exact(&mut back).unwrap();
                assert_eq!(&back, format!("connection {i:03}").as_bytes(), "{kind}");
            }
        });
    });
}

/// The resident memory of this process, in KiB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether this process runs under AddressSanitizer: its x86-64 shadow memory layout leaves an
/// inaccessible gap mapped at a fixed address.
fn under_address_sanitizer() -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().any(|l| l.starts_with("8fff7000-") && l.contains("---p"))
}

/// The byte at stream position `i` of the slow-reader test: a pattern, so that 32 MiB can be
/// sent and checked without holding them.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

#[test]
fn a_slow_reader_gets_backpressure_not_a_server_that_buffers_everything() {
    const TOTAL: u64 = 32 << 20;
    // Alone: this test measures the memory of the whole process.
    let _alone = MEASURING.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    for_each_runtime(|kind| {
        let addr = server(kind, false);
        let before = rss_kb();
        let peak = within(Duration::from_secs(120), move || {
            let conn = connect(addr);
            let mut writer = conn.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let mut block = vec![0; 64 * 1024];
                let mut sent = 0u64;
                while sent < TOTAL {
                    for (j, b) in block.iter_mut().enumerate() {
                        *b = pattern(sent + j as u64);
                    }
                    writer.write_all(&block).unwrap();
                    sent += block.len() as u64;
                }
                writer.shutdown(Shutdown::Write).unwrap();
            });
            // Read slowly: 16 KiB, then a pause, while the sender pushes as fast as it can.
            let mut reader = conn;
            let mut buf = [0; 16 * 1024];
            let (mut got, mut peak) = (0u64, 0u64);
            let mut round = 0u64;
            loop {
                let n = reader.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                for (j, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, pattern(got + j as u64), "byte {} differs", got + j as u64);
                }
                got += n as u64;
                round += 1;
                if round % 4 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if round % 64 == 0 {
                    peak = peak.max(rss_kb());
                }
            }
            sender.join().unwrap();
            assert_eq!(got, TOTAL);
            peak
        });
        // The server holds one buffer per connection (and the kernel its socket buffers, which
        // are not in this process's RSS): 32 MiB through it must not show up here. (Measured:
        // under 1 MiB of growth; a server that buffered the stream would add 32 MiB.)
        let grown_kb = peak.saturating_sub(before);
        eprintln!("{kind}: memory grew by {grown_kb} KiB while 32 MiB went through a slow reader");
        // Under AddressSanitizer the process's memory follows the sanitizer's own bookkeeping
        // (shadow memory, quarantine, state kept for every thread, and aio starts two threads
        // per echo): 6 to 20 MiB here, whatever the server holds. The data is checked anyway.
        if !under_address_sanitizer() {
            assert!(grown_kb < 16 * 1024, "{kind}: memory grew by {grown_kb} KiB while 32 MiB went through");
        }
    });
}

/// A connection that panics when it receives the bytes `PANIC`: a handler bug, triggered by the
/// network.
struct PanicOn<C>(C);

impl<C: echo::Connection> echo::Connection for PanicOn<C> {
    type Buf = C::Buf;

    async fn recv(&mut self) -> std::io::Result<Option<C::Buf>> {
        let received = self.0.recv().await?;
        if let Some(buf) = &received {
            if buf.as_ref().windows(5).any(|w| w == b"PANIC") {
                panic!("the handler met the input it cannot take");
            }
        }
        Ok(received)
    }

    async fn send_all(&mut self, buf: C::Buf) -> std::io::Result<()> {
        self.0.send_all(buf).await
    }

    async fn send_vec(&mut self, buf: Vec<u8>) -> (std::io::Result<()>, Vec<u8>) {
        self.0.send_vec(buf).await
    }

    async fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.0.shutdown_write().await
    }
}

/// An echo server whose handler panics on `PANIC`, on a thread of its own.
fn panicking_server(kind: RuntimeKind) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    macro_rules! serve {
        ($rt:ident, $runtime:expr) => {{
            let runtime = $runtime;
            runtime.block_on(async move {
                let listener = $rt::net::TcpListener::bind("127.0.0.1:0").unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        $rt::spawn(echo::handle(PanicOn(stream)));
                    }
                }
            })
        }};
    }
    std::thread::spawn(move || match kind {
        RuntimeKind::Reactor => serve!(reactor, reactor::Runtime::new().unwrap()),
        RuntimeKind::Uring | RuntimeKind::Aio(_) | RuntimeKind::ProactorEpoll => {
            serve!(proactor, echo::server::proactor_runtime(kind).unwrap())
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

#[test]
fn a_handler_that_panics_ends_only_its_own_connection() {
    let _shared = shared();
    for_each_runtime(|kind| {
        let addr = panicking_server(kind);
        let mut bystander = connect(addr);
        assert_eq!(exchange(&mut bystander, b"hello"), b"hello", "{kind}");

        let mut victim = connect(addr);
        victim.write_all(b"PANIC").unwrap();
        let mut buf = [0; 16];
        match victim.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("{kind}: the panicking connection was not closed: {other:?}"),
        }

        assert_eq!(exchange(&mut bystander, b"still here"), b"still here", "{kind}");
        let mut newcomer = connect(addr);
        assert_eq!(exchange(&mut newcomer, b"new"), b"new", "{kind}");
    });
}

// ------------------------------------------------------------------------------------------
// tests with a server process of their own

/// A server child process; killed when dropped.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
    /// A line written here asks a runtime's child for its counters (see `child_server`).
    requests: ChildStdin,
    /// The child's stderr, line by line.
    stderr: mpsc::Receiver<String>,
}

/// A runtime's counters that show whether its accept loop backs off: accept attempts (accept4
/// syscalls on the reactor, accept completions on the proactor, failed ones included) and loop
/// turns.
#[derive(Debug, Clone, Copy)]
struct AcceptCounters {
    accepts: u64,
    turns: u64,
}

impl ChildServer {
    /// Starts this test binary again, serving `kind` with the soft fd limit set to `nofile`.
    /// `kind` is a runtime's or a classic model's name.
    fn start(kind: impl std::fmt::Display, nofile: u64) -> ChildServer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_server", "--ignored", "--nocapture", "--test-threads", "1"])
            .env("HOSTILE_CHILD", format!("{kind} {nofile}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                // (libtest may have printed "test child_server ... " on the same line.)
                if let Some((_, addr)) = line.split_once("child listening on ") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (stderr_tx, stderr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if stderr_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let requests = child.stdin.take().unwrap();
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the {kind} child server did not start");
        };
        ChildServer { child, addr, requests, stderr: stderr_rx }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for a line of the child's stderr that `wanted` accepts, and returns it.
    fn stderr_line(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("never on the child's stderr within {PATIENCE:?}: {what}"),
            }
        }
    }

    /// A runtime's child's counters, now.
    fn counters(&mut self) -> AcceptCounters {
        writeln!(self.requests, "counters").unwrap();
        let line = self.stderr_line("a line of counters", |line| line.starts_with("counters ["));
        let field = |name: &str| -> Option<u64> {
            let at = line.find(&format!(" {name}: "))? + name.len() + 3;
            line[at..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        };
        let accepts = field("sys_accept").or_else(|| field("accepts")).expect("an accept counter");
        AcceptCounters { accepts, turns: field("turns").expect("the loop's turns") }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set_nofile(soft: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write one live rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// Not a test: the body of `ChildServer` (runs only with `HOSTILE_CHILD` set).
#[test]
#[ignore = "run by the other tests as a child process"]
fn child_server() {
    let Ok(spec) = std::env::var("HOSTILE_CHILD") else { return };
    // Die with the test process, whatever happens to it.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let (kind, nofile) = spec.split_once(' ').unwrap();
    set_nofile(nofile.parse().unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    echo::models::sys::set_backlog(&listener, echo::models::sys::BACKLOG).unwrap();
    println!("child listening on {}", listener.local_addr().unwrap());
    match kind.parse::<RuntimeKind>() {
        Ok(kind) => {
            // Each line on stdin asks the runtime for a line of its counters, on stderr.
            let stats = std::sync::Arc::new(echo::server::Stats::default());
            let requests = stats.clone();
            std::thread::spawn(move || {
                for _ in std::io::stdin().lines().map_while(Result::ok) {
                    requests.request_counters();
                }
            });
            let (options, shutdown) = (echo::server::ServeOptions::default(), echo::server::Shutdown::new());
            drop(echo::server::serve_until(kind, listener, None, &options, &shutdown, &stats, || {}));
        }
        Err(_) => drop(kind.parse::<echo::models::Model>().unwrap().serve(listener)),
    }
}

#[test]
fn ten_thousand_connections_held_open_all_echo() {
    let _shared = shared();
    // This process holds the client ends: raise its own soft fd limit (the hard limit on the
    // machines this runs on is 20,000).
    set_nofile(u64::MAX);
    for_each_runtime(|kind| {
        // aio needs a glibc thread per waiting connection, and stops being useful well before
        // 10,000 on two cores. Its pool is 1,024 threads here, and an echo
        // may have its write in glibc beside the connection's next read: 500 connections stay
        // within it (1,000 did not, on a loaded machine: requests were refused, EAGAIN).
        let conns = if kind.is_aio() { 500 } else { 10_000 };
        let mut server = ChildServer::start(kind, 20_000);
        let addr = server.addr;
        within(Duration::from_secs(120), move || {
            let mut open: Vec<TcpStream> = Vec::with_capacity(conns);
            for i in 0..conns {
                let mut attempt = 0;
                let conn = loop {
                    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                        Ok(conn) => break conn,
                        // The listen backlog can overflow during the burst: retry.
                        Err(_) if attempt < 50 => {
                            attempt += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => panic!("{kind}: connection {i}: {e}"),
                    }
                };
                conn.set_read_timeout(Some(IO_LIMIT)).unwrap();
                open.push(conn);
            }
            // Every connection open at once, and every one echoes.
            for (i, conn) in open.iter_mut().enumerate() {
                conn.write_all(&(i as u32).to_le_bytes()).unwrap();
            }
            for (i, conn) in open.iter_mut().enumerate() {
                let mut back = [0; 4];
                conn.read_exact(&mut back).unwrap_or_else(|e| panic!("{kind}: connection {i}: {e}"));
                assert_eq!(u32::from_le_bytes(back), i as u32, "{kind}");
            }
        });
        assert!(server.alive(), "{kind}: the server died");
        still_echoes(kind, server.addr);
    });
}

#[test]
fn out_of_fds_the_server_neither_crashes_nor_spins_and_serves_again_once_clients_leave() {
    let _shared = shared();
    let runtimes = RuntimeKind::ALL.map(|k| (k.name(), true));
    for (kind, counted) in runtimes.into_iter().chain(models().map(|m| (m.name(), false))) {
        let mut server = ChildServer::start(kind, 128);
        let addr = server.addr;
        // 300 connections against 128 fds: the server accepts until EMFILE; the rest wait in the
        // kernel's backlog. (The process per connection never runs out: its parent closes each
        // connection it hands to a child.)
        let clients: Vec<TcpStream> = (0..300)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
            .collect();
        assert!(clients.len() >= 200, "{kind}: only {} connections got through", clients.len());
        // Saturated: the pending connections keep the listener ready, and the accept loop must
        // back off, not spin.
        if counted {
            server.stderr_line("the server ran out of fds", |line| line.contains("os error 24"));
            // A runtime counts its own accepts and turns: with the back-off (5 ms doubling to
            // 200 ms) about five of each a second, where a spinning loop makes thousands. At
            // most 10 + 10 a second of the window are allowed, however slow the machine (a
            // slower one only retries less).
            let started = Instant::now();
            let before = server.counters();
            std::thread::sleep(Duration::from_secs(1)); // the window: its length is measured
            let after = server.counters();
            let window = started.elapsed().as_secs_f64();
            let allowed = (10.0 + 10.0 * window) as u64;
            let (accepts, turns) = (after.accepts - before.accepts, after.turns - before.turns);
            eprintln!("{kind}: {} of 300 connections in, out of fds: {accepts} accepts and {turns} turns in {window:.1} s", clients.len());
            assert!(
                accepts <= allowed,
                "{kind}: {accepts} accept attempts in {window:.1} s while out of fds"
            );
            assert!(turns <= 2 * allowed, "{kind}: {turns} loop turns in {window:.1} s while out of fds");
        } else {
            // The classic models count nothing: their CPU time it is. A model that backs off
            // uses next to none in a second; one that spins uses most of a core in every second.
            // The first seconds may still see it finish the work of the burst: it passes as soon
            // as one second of five is quiet.
            let pid = server.child.id();
            let used = (0..5)
                .map(|_| {
                    let before = cpu_ticks(pid);
                    std::thread::sleep(Duration::from_secs(1));
                    cpu_ticks(pid) - before
                })
                .find(|&used| used < 30);
            eprintln!("{kind}: {} of 300 connections in, out of fds: {used:?}% of a CPU", clients.len());
            assert!(
                used.is_some(),
                "{kind}: the server used 30% of a CPU or more in each of 5 seconds while out of fds"
            );
        }
        assert!(server.alive(), "{kind}: the server died when it ran out of fds");

        drop(clients);
        let end = Instant::now() + PATIENCE;
        loop {
            let served =
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok().and_then(|mut conn| {
                    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    conn.write_all(b"back").ok()?;
                    let mut buf = [0; 4];
                    conn.read_exact(&mut buf).ok()?;
                    Some(buf)
                });
            if served == Some(*b"back") {
                break;
            }
            assert!(Instant::now() < end, "{kind}: never served again after the clients left");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(server.alive(), "{kind}");
        still_echoes(kind, addr);
    }
}
