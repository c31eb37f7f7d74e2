//! The shortest complete echo server on the proactor: on the default backend (io_uring, or
//! epoll where io_uring cannot be set up, with a line on stderr saying why), or on the one
//! named by `--uring`, `--aio` or `--epoll`.
//!
//! ```text
//! cargo run --release -p proactor --example uring-echo -- 127.0.0.1:7000
//! cargo run --release -p proactor --example uring-echo -- 127.0.0.1:7000 --aio
//! cargo run --release -p proactor --example uring-echo -- 127.0.0.1:7000 --epoll
//! ```
//!
//! On io_uring a waiting connection holds no buffer: one multishot receive stays armed in the
//! kernel, which picks a buffer from the runtime's provided-buffer ring when data arrives; that
//! buffer then goes back to the kernel to be written out, and returns to the ring. On aio the
//! same code reads into a fresh 4 KiB buffer, and a waiting connection holds a glibc thread. On
//! epoll the driver takes a buffer when the socket is readable, so again a waiting connection
//! holds none.
//!
//! SIGINT (Ctrl-C) or SIGTERM stops it: the accept loop loses a `select!` against the signal,
//! the listener and then the runtime (with every connection) are dropped, and it exits. Killed
//! with SIGKILL instead, on io_uring it can leave its port taken for a moment: see the crate
//! docs, "Stopping a server".

use std::future::Future;

use futures::FutureExt;
use proactor::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let backend = if flag("--aio") {
        proactor::Backend::PosixAio
    } else if flag("--epoll") {
        proactor::Backend::Epoll
    } else if flag("--uring") {
        proactor::Backend::IoUring
    } else {
        proactor::Backend::Auto
    };
    let addr =
        args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let runtime = match proactor::Builder::new().backend(backend).build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(1);
        }
    };
    let stop = termination().unwrap_or_else(|e| {
        eprintln!("echo: cannot catch signals: {e}");
        std::process::exit(1);
    });
    let result: std::io::Result<()> = runtime.block_on(async {
        let listener = TcpListener::bind(&addr)?;
        println!("listening on {} ({:?})", listener.local_addr()?, proactor::Runtime::backend(&runtime));
        let accepting = async {
            loop {
                match listener.accept().await {
                    Ok((stream, _peer)) => {
                        proactor::spawn(serve(stream));
                    }
                    Err(e) => eprintln!("accept error: {e}"),
                }
            }
        };
        futures::select! {
            signal = stop.fuse() => eprintln!("echo: stopping on signal {signal}"),
            () = accepting.fuse() => {}
        }
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("echo: cannot listen on {addr}: {e}");
        std::process::exit(1);
    }
}

/// Completes with the signal's number on the first SIGINT or SIGTERM: a thread waits for them
/// (`signal-hook`), and a oneshot channel brings the news to the task (its waker may be woken
/// from any thread).
fn termination() -> std::io::Result<impl Future<Output = i32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let (caught, received) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = caught.send(signal);
        }
    });
    Ok(received.map(|signal| signal.unwrap_or(SIGTERM)))
}

async fn serve(stream: TcpStream) {
    if let Err(e) = echo(&stream).await {
        eprintln!("connection error: {e}");
    }
}

async fn echo(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // Waiting here holds no buffer: the kernel takes one from the runtime's ring when data
    // arrives, and writing it out gives it back.
    loop {
        // (A `let`, not `while let`: a `while let` keeps its scrutinee's temporaries until the
        // end of the body, which would make every connection's task bigger.)
        let Some(received) = stream.read_provided().await? else { break };
        stream.write_all(received).await.0?;
    }
    stream.shutdown(std::net::Shutdown::Write)
}
