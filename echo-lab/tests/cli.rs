//! The `echo-lab` program, run as users run it: `serve`, `bench`, `demo`.
//!
//! Every child is killed when its guard drops (test failures included), every wait is bounded,
//! and everything stays on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_echo-lab");

/// A child process killed and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Waits up to `limit` for the child to exit.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The first line of `out`, within `limit`.
fn first_line(out: ChildStdout, limit: Duration) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(limit).expect("no line from the child in time")
}

/// Starts `echo-lab serve --runtime RUNTIME` on a free loopback port; returns it and its
/// address, parsed from the line it prints.
fn serve(runtime: &str) -> (Guard, SocketAddr) {
    let mut child = Guard(
        Command::new(EXE)
            .args(["serve", "--runtime", runtime, "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start echo-lab serve"),
    );
    let line = first_line(child.0.stdout.take().unwrap(), Duration::from_secs(10));
    let line = line.trim_end();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.strip_suffix(&format!(", runtime {runtime})")))
        // (aio serves no UDP; the others answer it on the same address)
        .and_then(|rest| rest.strip_suffix(" (tcp and udp").or_else(|| rest.strip_suffix(" (tcp")))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, addr.parse().expect("an address"))
}

/// Runs `echo-lab ARGS` to completion, killing it after `limit`.
fn run(args: &[&str], limit: Duration) -> Output {
    let mut child = Guard(
        Command::new(EXE)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start echo-lab"),
    );
    let (mut out, mut err) = (child.0.stdout.take().unwrap(), child.0.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = child.wait_for(limit).unwrap_or_else(|| panic!("echo-lab {args:?} took over {limit:?}"));
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn echo_once(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hello, echo-lab\n").unwrap();
    let mut back = [0u8; 16];
    s.read_exact(&mut back).expect("the echo");
    assert_eq!(&back, b"hello, echo-lab\n");
}

fn sigterm(child: &Child) {
    // SAFETY: plain syscall on the pid of a child that has not been reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

#[test]
fn serve_echoes_and_exits_0_on_sigterm() {
    // `aio` by the names it prints: one per notification.
    for runtime in ["reactor", "uring", "aio-thread", "aio-signal", "aio-suspend", "tokio", "mio"] {
        let (mut server, addr) = serve(runtime);
        echo_once(addr);
        sigterm(&server.0);
        let status = server.wait_for(Duration::from_secs(5)).expect("the server exits on SIGTERM");
        assert!(status.success(), "{runtime}: exit status {status}");
    }
}

/// `serve` answers UDP on the TCP address (not on aio, which says why), and `bench --udp`
/// verifies the echoes of the largest datagram.
#[test]
fn serve_answers_udp_on_the_same_address_and_bench_udp_verifies_it() {
    for runtime in ["reactor", "uring", "proactor-epoll", "tokio"] {
        let (_server, addr) = serve(runtime);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for datagram in [&b""[..], b"hello, udp"] {
            client.send_to(datagram, addr).unwrap();
            let mut back = [0u8; 64];
            let (n, from) = client.recv_from(&mut back).expect("the UDP echo");
            assert_eq!((&back[..n], from), (datagram, addr), "{runtime}");
        }
        let out = run(
            &[
                "bench",
                "--udp",
                "--addr",
                &addr.to_string(),
                "--conns",
                "2",
                "--size",
                "65507",
                // The window must see an echo, on a loaded machine too: counted from the start.
                "--secs",
                "1",
                "--warmup",
                "0",
                "--json",
            ],
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "{runtime}: {}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(report["mode"], "udp");
        assert_eq!(report["mismatches"], 0, "{runtime}");
        assert!(report["msgs"].as_u64().unwrap() > 0, "{runtime}");
    }
}

#[test]
fn serve_reports_an_address_in_use_in_one_sentence() {
    let (_server, addr) = serve("reactor");
    let out = run(&["serve", "--runtime", "reactor", "--addr", &addr.to_string()], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already in use"), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bench_json_verifies_every_echo() {
    let (_server, addr) = serve("reactor");
    let out = run(
        &["bench", "--addr", &addr.to_string(), "--json", "--secs", "1", "--warmup", "0.2", "--conns", "4"],
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    for field in ["msgs", "msgs_per_sec", "mb_per_sec", "p50_us", "p99_us", "p999_us", "errors", "mismatches"]
    {
        assert!(v.get(field).is_some(), "no {field} in {v}");
    }
    assert_eq!(v["mismatches"], 0);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["conns"], 4);
    assert!(v["msgs"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn bench_without_a_server_fails_cleanly() {
    // Bind, then drop: a loopback port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = run(
        &["bench", "--addr", &addr.to_string(), "--secs", "1", "--connect-timeout", "0.5"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "stderr: {err}");
}

/// The cells of a line of the demo's table (separated by two spaces or more).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect()
}

#[test]
fn demo_runs_interleaved_rounds_and_reports_medians_with_their_spread() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("echo-lab-demo-test");
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(
        &[
            "demo",
            "--rounds",
            "2",
            "--secs",
            "0.5",
            "--warmup",
            "0.1",
            "--conns",
            "4",
            "--idle-conns",
            "50",
            "--syscall-secs",
            "0.3",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    for column in
        ["msgs/s", "p99 µs", "CPU µs/echo", "user µs/echo", "vs tokio", "syscalls/echo", "idle B/conn"]
    {
        assert!(stdout.contains(column), "no {column} column: {stdout}");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    // (`aio` is the default notification, `aio-suspend`.)
    for runtime in ["reactor", "uring", "aio-suspend", "proactor-epoll", "tokio"] {
        let at = lines.iter().position(|l| l.starts_with(runtime));
        let at = at.unwrap_or_else(|| panic!("no {runtime} row: {stdout}"));
        // runtime, msgs/s, p99, CPU µs/echo, user µs/echo, vs tokio, syscalls/echo, idle B/conn;
        // then the same figures' min–max on the line below.
        let (row, spread) = (cells(lines[at]), cells(lines[at + 1]));
        assert_eq!(row.len(), 8, "{runtime} row: {}", lines[at]);
        assert!(spread.len() >= 6, "{runtime} min–max row: {}", lines[at + 1]);
        assert!(spread[0].contains('–'), "{runtime} min–max row: {}", lines[at + 1]);
        assert!(row[3].parse::<f64>().is_ok_and(|n| n > 0.0), "CPU µs/echo in {row:?}");
        assert!(row[4].parse::<f64>().is_ok_and(|n| n >= 0.0), "user µs/echo in {row:?}");
        // A ratio, or the plain mark that there is no telling the two apart.
        match runtime {
            "tokio" => assert_eq!(row[5], "baseline"),
            _ => assert!(row[5] == "within noise" || row[5].ends_with('×'), "vs tokio in {row:?}"),
        }
        // The runtimes count their own syscalls (no perf needed); aio's only perf counts (its
        // I/O runs on glibc's threads), where it can count the server whole; tokio's come from
        // perf, if this machine has it.
        match runtime {
            "reactor" | "uring" | "proactor-epoll" => {
                assert!(row[6].parse::<f64>().is_ok_and(|n| n > 0.0), "syscalls/echo in {row:?}")
            }
            "aio-suspend" => assert!(
                row[6] == "n/a" || row[6].parse::<f64>().is_ok_and(|n| n > 0.0),
                "syscalls/echo in {row:?}"
            ),
            _ => {}
        }
        // Idle memory needs only /proc, so it is always measured.
        assert!(row[7].parse::<f64>().is_ok(), "idle B/conn in {row:?}");
    }
    let json = std::fs::read_to_string(dir.join("demo.json")).expect("demo.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("demo.json parses");
    assert_eq!(v["rounds"], 2, "{v}");
    assert_eq!(v["idle_conns"], 50, "{v}");
    assert_eq!(v["syscall_secs"], 0.3, "{v}");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{v}");
    for r in results {
        let runtime = r["runtime"].as_str().unwrap();
        assert_eq!(r["mismatches"], 0, "{r}");
        assert_eq!(r["conns"], 4, "{r}");
        // Every round is kept, in interleaved order: first in round 1 is last in round 2.
        let rounds = r["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 2, "{r}");
        assert_eq!(rounds[0]["round"], 1, "{r}");
        assert_eq!(rounds[1]["round"], 2, "{r}");
        let position = |i: usize| rounds[i]["position"].as_u64().unwrap();
        assert_eq!(position(0) + position(1), 6, "{runtime}: positions {} and {}", position(0), position(1));
        for round in rounds {
            assert_eq!(round["mismatches"], 0, "{round}");
            assert!(round["msgs_per_sec"].as_f64().unwrap() > 0.0, "{round}");
            assert!(round["cpu_us_per_echo"].as_f64().is_some_and(|x| x > 0.0), "{round}");
            assert!(round["user_us_per_echo"].as_f64().is_some_and(|x| x >= 0.0), "{round}");
        }
        // The median lies within the min–max, for each figure.
        for key in ["cpu_us_per_echo", "user_us_per_echo", "msgs_per_sec", "idle_bytes_per_conn"] {
            let (lo, mid, hi) =
                (r[format!("{key}_min")].as_f64(), r[key].as_f64(), r[format!("{key}_max")].as_f64());
            let (lo, mid, hi) = (lo.expect(key), mid.expect(key), hi.expect(key));
            assert!(lo <= mid && mid <= hi, "{runtime} {key}: {lo} {mid} {hi}");
        }
        // The CPU ratio to tokio has its spread, and says whether it is within noise.
        match runtime {
            "tokio" => assert_eq!(r["cpu_ratio_to_tokio"], 1.0, "{r}"),
            _ => {
                let (lo, hi) = (r["cpu_ratio_to_tokio_min"].as_f64(), r["cpu_ratio_to_tokio_max"].as_f64());
                assert!(lo.unwrap() <= hi.unwrap(), "{r}");
                assert!(r["within_noise"].is_boolean(), "{r}");
            }
        }
        // Where the count comes from: the runtimes' own counters, perf for tokio, none for aio.
        match runtime {
            "reactor" | "uring" | "proactor-epoll" => {
                assert_eq!(r["syscalls_source"], "runtime counters", "{r}")
            }
            // Never its own counters: perf's count of the server whole, or the reason there is none.
            "aio-suspend" => assert!(
                r["syscalls_source"] == "perf"
                    || r["syscalls_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("glibc") || e.contains("perf")),
                "{r}"
            ),
            _ => {}
        }
        // Counted, with the window's echoes; or not, and the row says why.
        match r["syscalls_per_echo"].as_f64() {
            Some(n) => {
                assert!(n > 0.0, "{r}");
                assert!(rounds[0]["syscall_window_echoes"].as_u64().unwrap() > 0, "{r}");
            }
            None => assert!(r["syscalls_error"].is_string(), "{r}"),
        }
        assert_eq!(r["idle_conns"], 50, "{r}");
        assert!(rounds[0]["idle_rss_before_kb"].as_u64().unwrap() > 0, "{r}");
        assert!(rounds[0]["idle_rss_after_kb"].as_u64().is_some(), "{r}");
    }
    let svg = std::fs::read_to_string(dir.join("demo.svg")).expect("demo.svg");
    let doc = roxmltree::Document::parse(&svg).expect("demo.svg is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    for panel in ["CPU per echo", "syscalls per echo", "per idle connection"] {
        assert!(svg.contains(panel), "no {panel} panel in the SVG");
    }
    // The spread: a whisker (a path) for every runtime's CPU bar.
    assert!(doc.descendants().filter(|n| n.has_tag_name("path")).count() >= 4, "{svg}");
}

#[test]
fn demo_takes_lists_of_runtimes_and_loads() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("echo-lab-demo-lists-test");
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(
        &[
            "demo",
            "--runtimes",
            "reactor,tokio",
            "--conns",
            "1,3",
            "--size",
            "100",
            "--rounds",
            "1",
            "--secs",
            "0.3",
            "--warmup",
            "0",
            "--idle-conns",
            "0",
            "--syscall-secs",
            "0",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(40),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    for load in ["1 conns, 100 B messages", "3 conns, 100 B messages"] {
        assert!(stdout.contains(load), "no table for {load}: {stdout}");
    }
    assert!(!stdout.lines().any(|l| l.starts_with("uring")), "{stdout}");
    let json = std::fs::read_to_string(dir.join("demo.json")).expect("demo.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("demo.json parses");
    let got: Vec<(String, u64, u64)> = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["runtime"].as_str().unwrap().to_string(),
                r["conns"].as_u64().unwrap(),
                r["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = [("reactor", 1), ("tokio", 1), ("reactor", 3), ("tokio", 3)]
        .map(|(r, c)| (r.to_string(), c, 100))
        .into();
    assert_eq!(got, want);
}

#[test]
fn bench_bulk_and_shortconn_verify_every_echo() {
    let (_server, addr) = serve("uring");
    for mode in ["bulk", "shortconn"] {
        // The window is the only thing timed: it must see an echo. Counted from the start (no
        // warm-up) and two seconds long, as a half-second one saw none once on a loaded machine.
        let out = run(
            &["bench", "--addr", &addr.to_string(), "--mode", mode, "--json", "--secs", "2", "--warmup", "0"],
            Duration::from_secs(20),
        );
        assert!(out.status.success(), "{mode}: stderr: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["mode"], mode);
        assert_eq!(v["mismatches"], 0, "{v}");
        assert_eq!(v["errors"], 0, "{v}");
        assert!(v["msgs"].as_u64().unwrap() > 0, "{v}");
    }
}

/// A server that echoes everything with the last byte of each read flipped.
fn corrupting_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    buf[n - 1] ^= 1;
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn bench_catches_a_server_that_corrupts_the_echo() {
    let addr = corrupting_server();
    for mode in ["pingpong", "bulk"] {
        let out = run(
            &[
                "bench",
                "--addr",
                &addr.to_string(),
                "--mode",
                mode,
                "--json",
                "--conns",
                "2",
                "--secs",
                "0.3",
            ],
            Duration::from_secs(20),
        );
        assert_eq!(out.status.code(), Some(1), "{mode}: a corrupted echo must fail the run");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        assert_eq!(v["mismatches"], 2, "{mode}: {v}");
    }
}

#[test]
fn trace_shows_readiness_steps_on_the_reactor_and_completion_steps_on_uring_and_aio() {
    let expected: [(&str, &[&str]); 3] = [
        (
            "reactor",
            &["epoll_wait(", ": readable", "read(fd ", "bytes) → 7 bytes", ", 7 bytes) → 7 bytes", " polled"],
        ),
        (
            "uring",
            &[
                "io_uring_enter: submit",
                "queued SQE RECV (multishot",
                "(multishot RECV): result 7",
                "queued SQE SEND 7 bytes",
                "(SEND): result 7",
                "stays armed in the kernel, no new SQE",
            ],
        ),
        (
            "aio",
            &[
                "aio_read(fd",
                "handed to glibc",
                "aio_write(fd",
                "aio_suspend(",
                "accept on fd",
                "helper thread",
            ],
        ),
    ];
    for (runtime, steps) in expected {
        let out = run(&["trace", "--runtime", runtime, "--messages", "3"], Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{runtime}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        for i in 1..=3 {
            assert!(
                stdout.contains(&format!("── message {i}: the client sends \"hello {i}\"")),
                "{runtime}: {stdout}"
            );
        }
        for step in steps {
            assert!(stdout.contains(step), "{runtime}: no step containing {step:?} in:\n{stdout}");
        }
        // The other design's steps do not appear.
        let foreign = if runtime == "reactor" { "io_uring_enter" } else { "epoll_wait" };
        assert!(!stdout.contains(foreign), "{runtime}: {stdout}");
    }
}

#[test]
fn trace_svg_draws_each_design_from_the_steps_of_its_own_run() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("echo-lab-trace-test.svg");
    let _ = std::fs::remove_file(&path);
    let out = run(&["trace", "--svg", path.to_str().unwrap()], Duration::from_secs(60));
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let svg = std::fs::read_to_string(&path).expect("the SVG");
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let text = |n: roxmltree::Node<'_, '_>| -> String {
        n.descendants()
            .filter(|t| t.has_tag_name("text"))
            .filter_map(|t| t.text())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    // Per design: its lanes, and calls that its run must have made, each on an arrow of the
    // right kind between the right lanes (kind, from, to, words on the arrow).
    type Call = (&'static str, &'static str, &'static str, &'static str);
    let expected: [(&str, &[&str], &[Call]); 3] = [
        (
            "reactor",
            &["client", "kernel", "runtime loop", "task"],
            &[
                ("syscall", "runtime loop", "kernel", "epoll_wait("),
                ("return", "kernel", "runtime loop", "returns 1 event"),
                ("event", "kernel", "runtime loop", "readable"),
                ("wake", "runtime loop", "task", "wake"),
                ("syscall", "task", "kernel", "accept4(fd"),
                ("syscall", "task", "kernel", "epoll_ctl(ADD fd"),
                ("syscall", "task", "kernel", "read(fd"),
                ("syscall", "task", "kernel", "send(fd"),
                ("data", "kernel", "client", "hello 1"),
            ],
        ),
        (
            "uring",
            &["client", "kernel", "runtime loop", "task"],
            &[
                ("syscall", "runtime loop", "kernel", "io_uring_enter: submit 1 SQE"),
                ("sqe", "task", "runtime loop", "SQE multishot RECV"),
                ("sqe", "task", "runtime loop", "SQE SEND 7 bytes"),
                ("cqe", "kernel", "runtime loop", "CQE multishot ACCEPT"),
                ("cqe", "kernel", "runtime loop", "CQE multishot RECV: 7"),
                ("cqe", "kernel", "runtime loop", "CQE SEND: 7"),
                ("wake", "runtime loop", "task", "wake"),
                ("data", "kernel", "client", "hello 1"),
            ],
        ),
        (
            // Plain `aio` is the default notification, `Suspend`.
            "aio-suspend",
            &["client", "kernel", "helper threads", "runtime loop", "task"],
            &[
                ("request", "task", "helper threads", "aio_read(fd"),
                ("request", "task", "helper threads", "aio_write(fd"),
                ("request", "task", "helper threads", "accept(fd"),
                ("syscall", "helper threads", "kernel", "read(fd"),
                ("syscall", "helper threads", "kernel", "write(fd"),
                ("done", "helper threads", "runtime loop", "done: 7"),
                ("syscall", "runtime loop", "helper threads", "aio_suspend("),
                ("wake", "runtime loop", "task", "wake"),
                ("data", "kernel", "client", "hello 1"),
            ],
        ),
    ];
    for (design, lanes, calls) in expected {
        let g = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("design") && n.attribute("id") == Some(design))
            .unwrap_or_else(|| panic!("no {design} diagram"));
        let drawn: Vec<&str> = g.descendants().filter_map(|n| n.attribute("data-lane")).collect();
        for lane in lanes {
            assert!(drawn.contains(lane), "{design}: no {lane} lane in {drawn:?}");
        }
        let arrows: Vec<_> = g
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("arrow ")))
            .map(|n| {
                (n.attribute("class").unwrap(), n.attribute("data-from"), n.attribute("data-to"), text(n))
            })
            .collect();
        for (kind, from, to, words) in calls {
            let found = arrows.iter().any(|(class, f, t, text)| {
                *class == format!("arrow {kind}")
                    && *f == Some(from)
                    && *t == Some(to)
                    && text.contains(words)
            });
            assert!(found, "{design}: no {kind} arrow {from} -> {to} with {words:?} among {arrows:#?}");
        }
        // Drawn from this run: the task reads from the very fd the accept returned.
        if design == "reactor" {
            let accepted = arrows.iter().find_map(|(_, _, _, t)| t.split("new connection, fd ").nth(1));
            let fd: String =
                accepted.expect("the accept's result").chars().take_while(char::is_ascii_digit).collect();
            assert!(arrows.iter().any(|(_, _, _, t)| t.contains(&format!("read(fd {fd},"))), "{arrows:#?}");
        }
        // Each step keeps the runtime's own words, as the arrow's or the note's tooltip.
        assert!(g.descendants().filter(|n| n.has_tag_name("title")).count() >= 10, "{design}");
    }
}

/// Checks that `doc` is a Chrome trace that Perfetto and chrome://tracing load: a
/// `traceEvents` array of events, each with `ph`, `ts` (µs), `name`, `pid` and `tid` of the
/// right types; complete events with a `dur`, instants with a scope, async events with an id
/// (each span begun, then ended); per thread, timestamps in order
/// and complete events nested (one inside another, or one after another). Returns the names
/// of the events other than metadata.
fn check_chrome_trace(doc: &serde_json::Value, runtime: &str) -> std::collections::HashSet<String> {
    use std::collections::{HashMap, HashSet};
    let events = doc["traceEvents"].as_array().unwrap_or_else(|| panic!("{runtime}: no traceEvents array"));
    assert!(events.len() > 10, "{runtime}: only {} events", events.len());
    let mut names = HashSet::new();
    let mut last_ts: HashMap<u64, f64> = HashMap::new();
    let mut open: HashMap<u64, Vec<f64>> = HashMap::new(); // per thread, the ends of enclosing spans
    let mut asyncs: HashMap<String, bool> = HashMap::new(); // id → its span is open
    let eps = 1e-6;
    for e in events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("{runtime}: no ph in {e}"));
        let ts = e["ts"].as_f64().unwrap_or_else(|| panic!("{runtime}: no ts in {e}"));
        let name = e["name"].as_str().unwrap_or_else(|| panic!("{runtime}: no name in {e}"));
        let tid = e["tid"].as_u64().unwrap_or_else(|| panic!("{runtime}: no tid in {e}"));
        assert!(e["pid"].as_u64().is_some(), "{runtime}: no pid in {e}");
        assert!(ts >= 0.0 && ts.is_finite(), "{runtime}: {e}");
        assert!(e.get("args").is_none_or(serde_json::Value::is_object), "{runtime}: {e}");
        if ph == "M" {
            assert!(["process_name", "thread_name"].contains(&name), "{runtime}: {e}");
            assert!(e["args"]["name"].is_string(), "{runtime}: {e}");
            continue;
        }
        names.insert(name.to_string());
        let last = last_ts.entry(tid).or_insert(0.0);
        assert!(ts >= *last, "{runtime}: thread {tid} goes back in time at {e}");
        *last = ts;
        let stack = open.entry(tid).or_default();
        while stack.last().is_some_and(|end| *end <= ts + eps) {
            stack.pop();
        }
        match ph {
            "X" => {
                let dur = e["dur"].as_f64().unwrap_or_else(|| panic!("{runtime}: no dur in {e}"));
                assert!(dur >= 0.0, "{runtime}: {e}");
                if let Some(end) = stack.last() {
                    assert!(ts + dur <= end + eps, "{runtime}: {e} overlaps the span around it");
                }
                stack.push(ts + dur);
            }
            "i" => assert!(["t", "p", "g"].contains(&e["s"].as_str().unwrap_or("")), "{runtime}: {e}"),
            "b" | "e" => {
                assert!(e["cat"].is_string(), "{runtime}: {e}");
                let id = e["id"].as_str().unwrap_or_else(|| panic!("{runtime}: no id in {e}")).to_string();
                // An id may be used again, once its span has ended.
                let was_open = asyncs.insert(id, ph == "b");
                if ph == "b" {
                    assert_ne!(was_open, Some(true), "{runtime}: {e} begins before its id's span ended");
                } else {
                    assert_eq!(was_open, Some(true), "{runtime}: {e} ends a span that did not begin");
                }
            }
            _ => panic!("{runtime}: unexpected phase in {e}"),
        }
    }
    assert!(!asyncs.values().any(|open| *open), "{runtime}: an async span never ends");
    names
}

#[test]
fn trace_chrome_trace_records_a_loaded_run_as_a_timeline_for_each_design() {
    // Per design: the loop's turn, its wait, a task's poll, a receive and a send.
    let expected: [(&str, &[&str]); 4] = [
        ("reactor", &["loop turn", "epoll_wait", "task poll", "readiness event", "read", "send"]),
        ("uring", &["loop turn", "io_uring_enter", "task poll", "CQE RECV", "SQE SEND", "CQE SEND"]),
        (
            "aio",
            &[
                "loop turn",
                "aio_suspend",
                "task poll",
                "aio_read",
                "aio_read done",
                "aio_write",
                "aio_write done",
            ],
        ),
        ("proactor-epoll", &["loop turn", "epoll_wait", "task poll", "recv", "send", "post completion"]),
    ];
    for (runtime, wanted) in expected {
        let path =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("echo-lab-timeline-{runtime}.json"));
        let _ = std::fs::remove_file(&path);
        let args = ["trace", "--runtime", runtime, "--chrome-trace", path.to_str().unwrap()];
        let out = run(
            &[&args[..], &["--conns", "2", "--secs", "0.2", "--max-steps", "3000"]].concat(),
            Duration::from_secs(60),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{runtime}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("recorded ") && stdout.contains("ui.perfetto.dev"), "{runtime}: {stdout}");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("the timeline")).expect("JSON");
        let names = check_chrome_trace(&doc, runtime);
        for name in wanted {
            assert!(names.contains(*name), "{runtime}: no {name:?} event among {names:?}");
        }
        let steps = doc["otherData"]["steps"].as_u64().expect("the number of steps");
        assert!(steps > 0 && steps <= 3000, "{runtime}: {steps} steps recorded");
        let events = doc["traceEvents"].as_array().unwrap();
        // A wait says what ended it; a task poll names its task.
        let waits: &[&str] = &["epoll_wait", "io_uring_enter", "poll", "aio_suspend"];
        assert!(
            events.iter().any(|e| waits.contains(&e["name"].as_str().unwrap())
                && ["events", "cqes", "completions"]
                    .iter()
                    .any(|k| e["args"][k].as_u64().is_some_and(|n| n > 0))),
            "{runtime}: no wait ended by an event or a completion"
        );
        assert!(
            events.iter().any(|e| e["name"] == "task poll" && e["args"]["task"].is_u64()),
            "{runtime}: no task poll with its task's id"
        );
    }
}

#[test]
fn lab_runs_a_small_matrix_and_writes_table_markdown_json_and_svg() {
    let dir = std::env::temp_dir().join(format!("echo-lab-lab-test-{}", std::process::id()));
    let out = run(
        &[
            "lab",
            "--models",
            "reactor,uring,poll,threads",
            "--cells",
            "pingpong-100,shortconn",
            // Every cell's window must see echoes (a hundred threads started on a loaded
            // machine saw none in 0.3 s once): one second, counted from the start.
            "--secs",
            "1",
            "--warmup",
            "0",
            "--out",
            dir.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    for column in
        ["msgs/s", "p99 µs", "CPU µs/msg", "user µs/msg", "KB/conn", "syscalls/msg", "threads", "procs"]
    {
        assert!(stdout.contains(column), "no {column} column: {stdout}");
    }
    for cell in ["pingpong-100", "shortconn"] {
        for model in ["reactor", "uring", "poll", "threads"] {
            assert!(
                stdout.lines().any(|l| l.starts_with(cell) && l.split_whitespace().nth(1) == Some(model)),
                "no {cell} {model} row: {stdout}"
            );
        }
    }
    let json = std::fs::read_to_string(dir.join("lab.json")).expect("lab.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("lab.json parses");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 8, "{v}");
    for r in results {
        assert!(r.get("error").is_none(), "a cell failed: {r}");
        assert_eq!(r["mismatches"], 0, "{r}");
        assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["threads"].as_u64().unwrap() >= 1, "{r}");
    }
    // The thread-per-connection model shows its threads; the runtimes stay at a few.
    let threads = |cell: &str, model: &str| {
        results.iter().find(|r| r["cell"] == cell && r["model"] == model).unwrap()["threads"]
            .as_u64()
            .unwrap()
    };
    assert!(threads("pingpong-100", "threads") >= 100, "{v}");
    assert!(threads("pingpong-100", "reactor") < 10, "{v}");
    assert!(std::fs::read_to_string(dir.join("lab.md")).unwrap().contains("| pingpong-100 | poll |"));
    assert!(std::fs::read_to_string(dir.join("lab.svg")).unwrap().starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_shows_each_aio_notification_and_the_select_and_aio_poll_models() {
    let expected: [(&str, &[&str]); 5] = [
        ("aio-thread", &["poll(notifier, completion eventfd;", "glibc's notification thread", "aio_read(fd"]),
        (
            "aio-signal",
            &[
                "poll(notifier, completion eventfd, signalfd;",
                "glibc's realtime signal, read from the signalfd",
            ],
        ),
        (
            "aio-suspend",
            &["aio_suspend(", "reported by aio_error, after aio_suspend returned", "aio_write(fd"],
        ),
        (
            "select",
            &[
                "select(nfds ",
                "select returned 1",
                "accept4(fd ",
                "read(fd ",
                "bytes) → 7 bytes",
                "write(fd ",
            ],
        ),
        (
            "aio-poll",
            &["IOCB_CMD_POLL on the listener", "io_submit(", "io_getevents(", "poll event: fd ", "write(fd "],
        ),
    ];
    for (runtime, steps) in expected {
        let out = run(&["trace", "--runtime", runtime, "--messages", "2"], Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{runtime}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("── message 2: the client sends \"hello 2\""), "{runtime}: {stdout}");
        for step in steps {
            assert!(stdout.contains(step), "{runtime}: no step containing {step:?} in:\n{stdout}");
        }
    }
    // A model that records nothing is refused with the list of those that do.
    let out = run(&["trace", "--runtime", "poll"], Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("select and aio-poll"));
}

#[test]
fn trace_svg_draws_the_aio_notifications_and_the_select_and_aio_poll_models() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("echo-lab-trace-models-test.svg");
    let _ = std::fs::remove_file(&path);
    let designs = "aio-thread,aio-signal,select,aio-poll";
    let out = run(&["trace", "--svg", path.to_str().unwrap(), "--designs", designs], Duration::from_secs(60));
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let svg = std::fs::read_to_string(&path).expect("the SVG");
    let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let text = |n: roxmltree::Node<'_, '_>| -> String {
        n.descendants()
            .filter(|t| t.has_tag_name("text"))
            .filter_map(|t| t.text())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    type Call = (&'static str, &'static str, &'static str, &'static str);
    let expected: [(&str, &[&str], &[Call]); 4] = [
        (
            "aio-signal",
            &["client", "kernel", "helper threads", "runtime loop", "task"],
            &[
                ("syscall", "runtime loop", "kernel", "signalfd)"),
                ("done", "helper threads", "runtime loop", "realtime signal"),
                ("data", "kernel", "client", "hello 1"),
            ],
        ),
        (
            "aio-thread",
            &["client", "kernel", "helper threads", "runtime loop", "task"],
            &[
                ("syscall", "runtime loop", "kernel", "poll(notifier, completion eventfd)"),
                ("done", "helper threads", "runtime loop", "notification thread"),
                ("data", "kernel", "client", "hello 1"),
            ],
        ),
        (
            "select",
            &["client", "kernel", "runtime loop"],
            &[
                ("syscall", "runtime loop", "kernel", "select(nfds"),
                ("return", "kernel", "runtime loop", "ready"),
                ("syscall", "runtime loop", "kernel", "accept4(fd"),
                ("syscall", "runtime loop", "kernel", "read(fd"),
                ("syscall", "runtime loop", "kernel", "write(fd"),
                ("data", "kernel", "client", "hello 1"),
            ],
        ),
        (
            "aio-poll",
            &["client", "kernel", "runtime loop"],
            &[
                ("syscall", "runtime loop", "kernel", "io_submit("),
                ("syscall", "runtime loop", "kernel", "io_getevents"),
                ("cqe", "kernel", "runtime loop", "event: fd"),
                ("syscall", "runtime loop", "kernel", "read(fd"),
                ("syscall", "runtime loop", "kernel", "write(fd"),
                ("data", "kernel", "client", "hello 1"),
            ],
        ),
    ];
    for (design, lanes, calls) in expected {
        let g = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("design") && n.attribute("id") == Some(design))
            .unwrap_or_else(|| panic!("no {design} diagram"));
        let drawn: Vec<&str> = g.descendants().filter_map(|n| n.attribute("data-lane")).collect();
        for lane in lanes {
            assert!(drawn.contains(lane), "{design}: no {lane} lane in {drawn:?}");
        }
        let arrows: Vec<_> = g
            .descendants()
            .filter(|n| n.attribute("class").is_some_and(|c| c.starts_with("arrow ")))
            .map(|n| {
                (n.attribute("class").unwrap(), n.attribute("data-from"), n.attribute("data-to"), text(n))
            })
            .collect();
        for (kind, from, to, words) in calls {
            let found = arrows.iter().any(|(class, f, t, text)| {
                *class == format!("arrow {kind}")
                    && *f == Some(from)
                    && *t == Some(to)
                    && text.contains(words)
            });
            assert!(found, "{design}: no {kind} arrow {from} -> {to} with {words:?} among {arrows:#?}");
        }
    }
}
