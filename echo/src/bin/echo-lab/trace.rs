//! `echo-lab trace`: one connection, a few short messages, and what the runtime did for each,
//! step by step, in the runtime's own words (its `trace` feature).
//!
//! The server runs `echo::handle` on the chosen runtime in this process; the client is a plain
//! blocking socket on another thread, so that only the server's steps are recorded. After each
//! message comes back, the client waits a moment, so that the server finishes its turn and
//! goes back to waiting, and the steps recorded meanwhile are printed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use clap::Args;
use echo::server::RuntimeKind;

/// Options of `echo-lab trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The runtime to trace: reactor (epoll, readiness), uring (io_uring, completion), aio
    /// (POSIX aio, completion made of threads) or proactor-epoll (completion emulated on epoll).
    #[arg(long, default_value = "reactor")]
    pub runtime: RuntimeKind,
    /// How many messages to echo.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub messages: u32,
}

/// What each runtime's design is, in one line, for the header.
fn design(kind: RuntimeKind) -> &'static str {
    match kind {
        RuntimeKind::Reactor => {
            "readiness: epoll says which socket is ready, then the runtime makes the read and write syscalls itself"
        }
        RuntimeKind::Uring => {
            "completion: the runtime queues whole operations (SQEs), the kernel performs them and posts results (CQEs)"
        }
        RuntimeKind::Aio => {
            "completion on POSIX aio: glibc's helper threads perform each operation with a blocking syscall"
        }
        RuntimeKind::ProactorEpoll => {
            "completion emulated on readiness: the driver queues each operation, waits with epoll, performs the syscall itself and posts the completion"
        }
    }
}

fn start() {
    reactor::trace::start();
    proactor::trace::start();
}

fn take() -> Vec<String> {
    let mut steps = reactor::trace::take();
    steps.extend(proactor::trace::take());
    steps
}

fn print_steps(steps: &[String]) {
    if steps.is_empty() {
        println!("   (nothing)");
    }
    for (i, step) in steps.iter().enumerate() {
        println!("{:>4}. {step}", i + 1);
    }
}

/// Lets the server finish what the last client action started and go back to waiting.
fn settle() {
    std::thread::sleep(Duration::from_millis(60));
}

pub fn run(a: &TraceArgs) -> Result<(), String> {
    let kind = a.runtime;
    println!("echo-lab trace: {kind} ({})", design(kind));
    println!(
        "server: echo::handle on {kind}, in this process; client: a blocking socket on another thread\n"
    );
    start();
    let addr: SocketAddr = echo::server::spawn(kind, "127.0.0.1:0".parse().expect("an address"))
        .map_err(|e| format!("cannot start the {kind} server: {e}"))?;
    settle();
    let startup = take();
    println!(
        "── the server starts: {} steps (runtime set-up and the first wait for a connection), not shown",
        startup.len()
    );

    let mut conn = TcpStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    settle();
    println!("\n── the client connects ──");
    print_steps(&take());

    for i in 1..=a.messages {
        let msg = format!("hello {i}");
        conn.write_all(msg.as_bytes()).map_err(|e| format!("send: {e}"))?;
        let mut back = vec![0; msg.len()];
        conn.read_exact(&mut back).map_err(|e| format!("reading the echo: {e}"))?;
        if back != msg.as_bytes() {
            return Err(format!("the echo of {msg:?} came back as {:?}", String::from_utf8_lossy(&back)));
        }
        settle();
        println!("\n── message {i}: the client sends {msg:?} ({} bytes) and gets it back ──", msg.len());
        print_steps(&take());
    }

    conn.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    settle();
    println!("\n── the client closes its side; the server sees end of stream and closes too ──");
    print_steps(&take());
    Ok(())
}
