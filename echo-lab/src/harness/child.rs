//! The server under test as a child process (`echo-lab serve --runtime NAME` on an ephemeral
//! loopback port), killed and reaped whatever happens to the parent.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::server::Server;

/// The server process, killed and reaped when dropped, so that every exit path, errors and
/// panics included, leaves no server behind; and the syscall counts it prints on SIGUSR1 (its
/// runtime's own counters, `counters [THREAD] syscalls=N ...` lines).
pub struct ChildGuard(pub Child, pub Option<mpsc::Receiver<u64>>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `echo-lab serve` for `server` on an ephemeral loopback port; returns it with the
/// address it listens on.
/// `aio_threads` sizes the aio server's thread pool: every connection the demo holds open at
/// once (load plus idle) keeps a read pending, which holds one thread.
pub fn start_server(
    server: Server,
    pinned: bool,
    aio_threads: u32,
) -> Result<(ChildGuard, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(["serve", "--runtime", server.name(), "--addr", "127.0.0.1:0"]);
    if server.kind() == Some(echo::server::RuntimeKind::Aio) {
        cmd.args(["--aio-threads", &aio_threads.to_string()]);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // If this process dies without dropping the guard (a signal, say), the kernel kills the
    // server: no server outlives the demo.
    // SAFETY: prctl is async-signal-safe, and the closure touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            echo::models::sys::die_with_parent();
            Ok(())
        });
    }
    let (counts_tx, counts_rx) = mpsc::channel();
    let mut guard =
        ChildGuard(cmd.spawn().map_err(|e| format!("cannot start the server: {e}"))?, Some(counts_rx));

    // Read the `listening on ADDR (PROTOCOLS, runtime NAME)` line, or the error, in bounded time.
    let stdout = guard.0.stdout.take().expect("stdout is piped");
    let stderr = guard.0.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let (etx, erx) = mpsc::channel();
    std::thread::spawn(move || {
        // Forward the server's complaints, keeping the first line for an error message.
        let mut first = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("counters [") {
                let count =
                    line.split_once("syscalls=").and_then(|(_, rest)| rest.split(' ').next()?.parse().ok());
                if let Some(count) = count {
                    let _ = counts_tx.send(count);
                }
                continue;
            }
            if first.is_none() {
                first = Some(line.clone());
                let _ = etx.send(line.clone());
            }
            eprintln!("  [{server} server] {line}");
        }
    });
    let line =
        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "did not start within 10 s".to_string())?;
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse::<SocketAddr>().ok());
    match addr {
        Some(addr) => Ok((guard, addr)),
        None => {
            let _ = guard.0.wait();
            let why = erx.recv_timeout(Duration::from_secs(1)).unwrap_or_else(|_| "it exited".into());
            Err(why.trim_start_matches("echo-lab: ").to_string())
        }
    }
}
