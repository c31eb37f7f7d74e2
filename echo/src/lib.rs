//! One echo handler, every runtime. The guide's chapters 9 and 10 (`docs/09-seed-models.md`,
//! `docs/10-your-own-server.md` in the repository) walk through the models and through writing
//! your own handler.
//!
//! [`handle`] is written once, against the [`Connection`] contract, and runs unchanged on the
//! readiness runtime (`reactor`) and on the completion runtime (`proactor`):
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     // On the reactor; on io_uring it is the same with `proactor::` in place of `reactor::`.
//!     reactor::block_on(async {
//!         let listener = reactor::net::TcpListener::bind("127.0.0.1:7000")?;
//!         loop {
//!             let Ok((stream, _)) = listener.accept().await else { continue };
//!             reactor::spawn(echo::handle(stream));
//!         }
//!     })
//! }
//! ```
//!
//! UDP has its handler too, [`udp::handle_udp`], written once the same way against
//! [`udp::Datagrams`].
//!
//! A handler written against [`Connection`] runs on every runtime, and so do its helpers:
//! [`IdleTimeout`] ends a connection after a silence, and [`time`] (the timers both runtimes
//! share) has `sleep` and `timeout` for everything else.
//!
//! # The contract, and why it takes buffers by value
//!
//! A completion runtime hands the buffer to the kernel for the whole operation, so the only
//! shape it can offer safely is "take the buffer, give it back with the result": `recv` gives a
//! buffer it owns, `send_all` takes one. A readiness runtime could lend `&mut [u8]`, but
//! implements the owned shape trivially. The contract also lets each runtime pick the buffer at
//! the moment data arrives, so that a waiting connection holds none:
//!
//! - on the reactor, `recv` awaits readiness and only then takes a buffer from a per-thread
//!   pool (and `send_all` returns it there);
//! - on the proactor, `recv` is `read_provided`: the kernel picks a buffer from the runtime's
//!   provided-buffer ring when data arrives, and sending it out gives it back to the ring.
//!
//! Handlers written with the ecosystem's tools instead (`futures_io::AsyncRead` and
//! `AsyncWrite`: `futures::io::BufReader`, `read_line`, `copy`) run on both runtimes too, since
//! both `TcpStream`s implement those traits (`examples/line_echo.rs`). On the proactor that
//! costs a copy each way, between the handler's slices and buffers the stream owns;
//! [`server::Handler::FuturesIo`] serves the same echo that way, to measure it.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]
#![deny(unsafe_code)]

use std::io;
use std::net::Shutdown;

mod idle;
pub mod models;
pub mod pool;
pub mod server;
pub mod udp;

pub use idle::IdleTimeout;

/// Timers for handlers written once for every runtime: `sleep`, `timeout`, `Sleep`.
///
/// They belong to the executor both runtimes share, so they work on either: `reactor::time`
/// and `proactor::time` are this same module.
pub use executor::time;

/// A byte stream the echo handler (or any handler written in this style) runs on.
///
/// The runtimes here are single-threaded, so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Connection {
    /// A buffer of received bytes, which can be sent as it is.
    type Buf: AsRef<[u8]>;

    /// Receives the next bytes, in a buffer the runtime chooses; `None` at end of stream.
    async fn recv(&mut self) -> io::Result<Option<Self::Buf>>;

    /// Hands all of `buf` to the runtime to send, taking it by value (a completion runtime gives
    /// it to the kernel).
    ///
    /// When this returns, the bytes are the runtime's, not necessarily the peer's yet: a
    /// completion runtime may still be sending them behind the handler's back (the proactor
    /// does, and wakes nobody when they are out). They leave in order, before anything sent
    /// later and before `shutdown_write`'s end of stream. So an error of this send may come out
    /// of the next call instead (`recv`, `send_all`, `send_vec` or `shutdown_write`).
    async fn send_all(&mut self, buf: Self::Buf) -> io::Result<()>;

    /// Sends all of a buffer the handler made itself, and gives it back to be reused (once the
    /// kernel has taken every byte).
    async fn send_vec(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>);

    /// Shuts down the write side once everything sent before is out: the peer reads it all,
    /// then end of stream. Returns the error of an earlier send, if one failed and was not
    /// reported yet.
    async fn shutdown_write(&mut self) -> io::Result<()>;
}

/// The echo handler: everything received is sent back, in order, until end of stream; then
/// the write side is shut down.
///
/// (A function that returns an `async` block rather than an `async fn`: an `async fn` moves its
/// argument from the future's captured arguments into a local of its body, and the two are not
/// laid over each other, so the connection would be held twice for as long as it lives. The
/// block uses the captured connection in place. The `handle_future_holds_the_connection_once`
/// test keeps it so, and prints the size (`cargo test -p echo --lib handle_future --
/// --nocapture`); with the `async fn` it failed at 1,072 bytes for a 512-byte connection.)
#[allow(clippy::manual_async_fn)] // (on purpose: see above)
pub fn handle<C: Connection>(mut conn: C) -> impl std::future::Future<Output = io::Result<()>> {
    async move {
        loop {
            // (`let`, not `while let`: the scrutinee's temporaries would otherwise live across
            // the send and make every connection's task larger.)
            let Some(received) = conn.recv().await? else { break };
            conn.send_all(received).await?;
        }
        conn.shutdown_write().await
    }
}

/// A connection lent to a handler: the handler's future then holds a pointer, not the
/// connection. A task that owns a connection and does more than run the handler on it (the
/// server's: report the result, then leave the count of open connections) keeps it once this
/// way; moving it into `handle(conn)` would keep it twice, in the task's own state and in the
/// handler's, for as long as the connection lives (an idle one included).
impl<C: Connection> Connection for &mut C {
    type Buf = C::Buf;

    fn recv(&mut self) -> impl std::future::Future<Output = io::Result<Option<C::Buf>>> {
        (**self).recv()
    }

    fn send_all(&mut self, buf: C::Buf) -> impl std::future::Future<Output = io::Result<()>> {
        (**self).send_all(buf)
    }

    fn send_vec(&mut self, buf: Vec<u8>) -> impl std::future::Future<Output = (io::Result<()>, Vec<u8>)> {
        (**self).send_vec(buf)
    }

    fn shutdown_write(&mut self) -> impl std::future::Future<Output = io::Result<()>> {
        (**self).shutdown_write()
    }
}

impl Connection for reactor::net::TcpStream {
    type Buf = pool::PooledBuf;

    // One readiness check and one `read` per message. The closure runs only once the socket is
    // ready, so a waiting connection holds no buffer; on a stale readiness (`EAGAIN`) the
    // buffer goes back to the pool and the closure runs again at the next event.
    fn recv(&mut self) -> impl std::future::Future<Output = io::Result<Option<pool::PooledBuf>>> {
        self.read_with(|ready| {
            let mut buf = pool::PooledBuf::take();
            match ready.read(buf.spare())? {
                0 => Ok(None),
                n => {
                    buf.set_len(n);
                    Ok(Some(buf))
                }
            }
        })
    }

    // A `poll_fn` holding the buffer and a count, not an `async fn` awaiting
    // `write_all(buf.as_ref())`, which held the buffer beside `write_all`'s future and its
    // borrowed slice: a larger task, whose extra cache lines were cold at every echo once
    // 1,000 connections take turns (`scripts/echo-instructions.sh` with CACHE=1 on 2026-12-06:
    // last-level misses per echo 5.40 -> 2.52, instructions 711 -> 690; idle memory per
    // connection 334 -> 281 B).
    fn send_all(&mut self, buf: pool::PooledBuf) -> impl std::future::Future<Output = io::Result<()>> {
        let mut sent = 0;
        std::future::poll_fn(move |cx| {
            let bytes = buf.as_ref();
            while sent < bytes.len() {
                let n = std::task::ready!(futures_io::AsyncWrite::poll_write(
                    std::pin::Pin::new(&mut *self),
                    cx,
                    &bytes[sent..]
                ))?;
                if n == 0 {
                    return std::task::Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                sent += n;
            }
            std::task::Poll::Ready(Ok(()))
        })
    }

    async fn send_vec(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        (self.write_all(&buf).await, buf)
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Connection for proactor::net::TcpStream {
    type Buf = proactor::ProvidedBuf;

    async fn recv(&mut self) -> io::Result<Option<proactor::ProvidedBuf>> {
        self.read_provided().await
    }

    // A send behind: ready once submitted; the driver gives the buffer back to the ring when
    // the kernel has taken it, without waking the task (one wake per echo, the receive's). Not
    // an `async fn`: that would keep `buf` in its state next to the future that owns it, and
    // this state is part of every connection's task, idle ones included.
    fn send_all(&mut self, buf: proactor::ProvidedBuf) -> impl std::future::Future<Output = io::Result<()>> {
        self.write_all_behind(buf)
    }

    async fn send_vec(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.write_all(buf).await
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        // The last send behind must be out before the end of stream (and its error reported).
        self.flush().await?;
        self.shutdown(Shutdown::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection of a known, large size whose operations finish at once.
    struct Big {
        _bytes: [u8; 512],
    }

    impl Connection for Big {
        type Buf = Vec<u8>;
        async fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        async fn send_all(&mut self, _: Vec<u8>) -> io::Result<()> {
            Ok(())
        }
        async fn send_vec(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
            (Ok(()), buf)
        }
        async fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Every idle connection's task holds `handle`'s future: the connection must be in it once
    /// (an `async fn handle(mut conn: C)` holds it twice, 1,024 bytes and more here).
    #[test]
    fn handle_future_holds_the_connection_once() {
        let future = handle(Big { _bytes: [0; 512] });
        let size = std::mem::size_of_val(&future);
        eprintln!("handle's future for a 512-byte connection: {size} bytes");
        assert!(size < 2 * 512, "handle's future is {size} bytes for a 512-byte connection");
        assert!(size >= 512);
    }
}
