//! Writing your own handler against `echo::Connection`: an echo that upper-cases ASCII, in a
//! few lines, run unchanged on every runtime.
//!
//! ```text
//! cargo run -p echo --example upper -- reactor 127.0.0.1:7001   # or: uring, aio, proactor-epoll
//! printf 'hello\n' | nc -N 127.0.0.1 7001                       # HELLO
//! ```
//!
//! The runtime is named as for `echo-lab serve --runtime`: `reactor` (epoll, readiness), or the
//! proactor on `uring` (io_uring, and nothing else: it fails where io_uring is unavailable),
//! `aio` (POSIX aio) or `proactor-epoll` (completion emulated on epoll). SIGINT (Ctrl-C) or
//! SIGTERM stops it: the accept loop loses a `select!` against the signal, the listener and
//! then the runtime (with every connection) are dropped, and it exits.

use std::future::Future;
use std::io;

use echo::server::RuntimeKind;
use echo::Connection;
use futures::FutureExt;

/// The handler: everything received comes back upper-cased, then end of stream.
async fn shout<C: Connection>(mut conn: C) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        let Some(received) = conn.recv().await? else { break };
        out.clear();
        out.extend(received.as_ref().iter().map(u8::to_ascii_uppercase));
        drop(received); // give the runtime its buffer back before waiting to send
        let (sent, back) = conn.send_vec(out).await;
        sent?;
        out = back;
    }
    conn.shutdown_write().await
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let kind: RuntimeKind = args
        .next()
        .unwrap_or_else(|| "reactor".into())
        .parse()
        .map_err(|e: String| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    let stop = termination()?;
    match kind {
        RuntimeKind::Reactor => reactor::Runtime::new()?.block_on(async {
            let listener = reactor::net::TcpListener::bind(&addr)?;
            println!("listening on {} (runtime {kind})", listener.local_addr()?);
            let accepting = async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    reactor::spawn(shout(stream));
                }
            };
            until_stopped(stop, accepting).await;
            Ok(())
        }),
        // The proactor on the backend `kind` names, exactly.
        RuntimeKind::Uring | RuntimeKind::Aio(_) | RuntimeKind::ProactorEpoll => {
            echo::server::proactor_runtime(kind)?.block_on(async {
                let listener = proactor::net::TcpListener::bind(&addr)?;
                println!("listening on {} (runtime {kind})", listener.local_addr()?);
                let accepting = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        proactor::spawn(shout(stream));
                    }
                };
                until_stopped(stop, accepting).await;
                Ok(())
            })
        }
    }
}

/// Runs `accepting` until `stop` completes; then both are dropped (the listener with them).
async fn until_stopped(stop: impl Future<Output = i32>, accepting: impl Future<Output = ()>) {
    futures::select! {
        signal = stop.fuse() => eprintln!("upper: stopping on signal {signal}"),
        () = accepting.fuse() => {}
    }
}

/// Completes with the signal's number on the first SIGINT or SIGTERM: a thread waits for them
/// (`signal-hook`), and a oneshot channel brings the news to the task (its waker may be woken
/// from any thread, so the same future serves every runtime).
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
