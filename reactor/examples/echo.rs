//! The shortest complete echo server on the reactor.
//!
//! ```text
//! cargo run --release -p reactor --example echo -- 127.0.0.1:7000
//! ```
//!
//! A connection that waits for data holds no buffer: it awaits readiness, then reads into this
//! thread's scratch buffer and writes straight back from it. Only bytes the socket will not take
//! yet (the client reads slower than it writes) are copied into a buffer of their own.
//!
//! SIGINT (Ctrl-C) or SIGTERM stops it: the accept loop loses a `select!` against the signal,
//! the listener and then the runtime (with every connection) are dropped, and it exits.

use std::cell::RefCell;
use std::future::Future;
use std::io;

use futures::FutureExt;
use reactor::net::{TcpListener, TcpStream};

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let stop = termination().unwrap_or_else(|e| {
        eprintln!("echo: cannot catch signals: {e}");
        std::process::exit(1);
    });
    let result: io::Result<()> = reactor::block_on(async {
        let listener = TcpListener::bind(&addr)?;
        println!("listening on {}", listener.local_addr()?);
        let accepting = async {
            loop {
                match listener.accept().await {
                    Ok((stream, _peer)) => {
                        reactor::spawn(serve(stream));
                    }
                    // Reported once when fds run out; the listener then backs off by itself.
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
fn termination() -> io::Result<impl Future<Output = i32>> {
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

async fn serve(mut stream: TcpStream) {
    if let Err(e) = echo(&mut stream).await {
        eprintln!("connection error: {e}");
    }
}

async fn echo(stream: &mut TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        stream.readable().await?;
        let unsent = match SCRATCH.with_borrow_mut(|buf| echo_ready(stream, buf))? {
            Step::Idle => continue,
            Step::End => return stream.shutdown(std::net::Shutdown::Write),
            Step::Unsent(unsent) => unsent,
        };
        stream.write_all(&unsent).await?;
    }
}

enum Step {
    /// Nothing to read after all, or all of it written back.
    Idle,
    /// The client closed its side.
    End,
    /// Bytes the socket did not take yet: they need a buffer of their own.
    Unsent(Box<[u8]>),
}

/// Reads what is there into `buf` and writes as much of it back as the socket takes.
fn echo_ready(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<Step> {
    let n = match stream.try_read(buf) {
        Ok(0) => return Ok(Step::End),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Idle),
        Err(e) => return Err(e),
    };
    let written = match stream.try_write(&buf[..n]) {
        Ok(written) => written,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    Ok(if written == n { Step::Idle } else { Step::Unsent(buf[written..n].into()) })
}
