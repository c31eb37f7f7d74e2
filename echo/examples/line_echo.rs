//! A handler written with the ecosystem's tools, `futures::io` and nothing of either runtime,
//! run unchanged on every runtime: a line echo (`BufReader::read_line` + `write_all`), or a
//! byte echo through `futures::io::copy` between the stream's split halves.
//!
//! ```text
//! cargo run -p echo --example line_echo -- --runtime uring --addr 127.0.0.1:7002
//! printf 'hello\nworld\n' | nc -N 127.0.0.1 7002                # hello, world
//! cargo run -p echo --example line_echo -- --runtime aio --copy  # bytes, not lines
//! ```
//!
//! `--runtime` is named as for `echo-lab serve --runtime`: `reactor` (epoll, readiness), or the
//! proactor on `uring` (io_uring), `aio` (POSIX aio) or `proactor-epoll` (completion emulated on
//! epoll). Both runtimes' `TcpStream`s implement `futures_io::AsyncRead` and `AsyncWrite`, so
//! the same generic functions serve them; on the proactor each byte is copied once more than
//! with its owned-buffer API (`echo::handle`), into and out of buffers the stream owns: the
//! price of lending buffers to a completion runtime (see `proactor::net`'s `compat` docs).
//! SIGINT (Ctrl-C) or SIGTERM stops it.

use std::future::Future;
use std::io;

use echo::server::RuntimeKind;
use futures::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use futures::FutureExt;

/// Each line back as it comes, until end of stream; then the write side is closed.
async fn line_echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> io::Result<()> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            break;
        }
        stream.get_mut().write_all(line.as_bytes()).await?;
    }
    stream.into_inner().close().await
}

/// Every byte back, through `futures::io::copy` from the read half to the write half.
async fn copy_echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> io::Result<()> {
    let (reader, mut writer) = stream.split();
    futures::io::copy(reader, &mut writer).await?;
    writer.close().await
}

/// Which of the two, on `stream`; a connection's error is printed, unless the peer went away.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(stream: S, copy: bool) {
    let result = if copy { copy_echo(stream).await } else { line_echo(stream).await };
    if let Err(e) = result {
        if !matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) {
            eprintln!("line_echo: connection: {e}");
        }
    }
}

fn main() -> io::Result<()> {
    let (mut kind, mut addr, mut copy) = (RuntimeKind::Reactor, "127.0.0.1:7002".to_string(), false);
    let mut args = std::env::args().skip(1);
    let usage = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: line_echo [--runtime reactor|uring|aio|proactor-epoll] [--addr ADDR] [--copy]",
        )
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runtime" => {
                kind = args
                    .next()
                    .ok_or_else(usage)?
                    .parse()
                    .map_err(|e: String| io::Error::new(io::ErrorKind::InvalidInput, e))?
            }
            "--addr" => addr = args.next().ok_or_else(usage)?,
            "--copy" => copy = true,
            _ => return Err(usage()),
        }
    }
    let stop = termination()?;
    let what = if copy { "copy" } else { "lines" };
    match kind {
        RuntimeKind::Reactor => reactor::Runtime::new()?.block_on(async {
            let listener = reactor::net::TcpListener::bind(&addr)?;
            println!("listening on {} (runtime {kind}, {what})", listener.local_addr()?);
            let accepting = async {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    reactor::spawn(serve_one(stream, copy));
                }
            };
            until_stopped(stop, accepting).await;
            Ok(())
        }),
        // The proactor on the backend `kind` names, exactly.
        RuntimeKind::Uring | RuntimeKind::Aio | RuntimeKind::ProactorEpoll => {
            echo::server::proactor_runtime(kind)?.block_on(async {
                let listener = proactor::net::TcpListener::bind(&addr)?;
                println!("listening on {} (runtime {kind}, {what})", listener.local_addr()?);
                let accepting = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        proactor::spawn(serve_one(stream, copy));
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
        signal = stop.fuse() => eprintln!("line_echo: stopping on signal {signal}"),
        () = accepting.fuse() => {}
    }
}

/// Completes with the signal's number on the first SIGINT or SIGTERM (see `upper.rs`).
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
