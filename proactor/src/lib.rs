//! A completion-based async runtime built from scratch on Linux `io_uring` (and on the two
//! other ways to build a proactor: POSIX aio's threads, and completion emulated on an epoll
//! readiness loop): a driver, owned buffers, a single-threaded executor, TCP and timers, in a
//! few files meant to be read. By default ([`Backend::Auto`]) it runs on io_uring, or on epoll
//! where io_uring cannot be set up. The guide walks through it: chapters 3 to 5
//! (`docs/03-completion.md`, `docs/04-buffers-and-backpressure.md`,
//! `docs/05-three-proactors.md` in the repository), and 11 for the simulated kernel.
//!
//! ```no_run
//! use proactor::net::TcpListener;
//!
//! fn main() -> std::io::Result<()> {
//!     proactor::block_on(async {
//!         let listener = TcpListener::bind("127.0.0.1:7000")?;
//!         loop {
//!             let (stream, _peer) = listener.accept().await?;
//!             proactor::spawn(async move {
//!                 let mut buf = Vec::with_capacity(4096);
//!                 loop {
//!                     // The buffer goes to the kernel and comes back with the result.
//!                     let (read, back) = stream.read(buf).await;
//!                     match read {
//!                         Ok(0) | Err(_) => break,
//!                         Ok(_) => {}
//!                     }
//!                     let (written, back) = stream.write_all(back).await;
//!                     if written.is_err() {
//!                         break;
//!                     }
//!                     buf = back;
//!                 }
//!             });
//!         }
//!     })
//! }
//! ```
//!
//! # With `futures`' combinators
//!
//! Its futures are ordinary futures, so the `futures` crate works as it does on tokio:
//! `join!` runs futures side by side in one task, `select!` takes whichever finishes first and
//! drops the other. Dropping a read in flight cancels it without losing data: bytes the kernel
//! had already put in its buffer go to the next read (see
//! [`TcpStream::read`](net::TcpStream::read)).
//!
//! ```
//! use std::time::Duration;
//!
//! use futures::FutureExt;
//! use proactor::net::{TcpListener, TcpStream};
//!
//! proactor::block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     // Connect and accept at once, in one task.
//!     let (client, accepted) =
//!         futures::join!(TcpStream::connect(listener.local_addr()?), listener.accept());
//!     let (client, (server, _)) = (client?, accepted?);
//!
//!     // A read against a timer: nothing was sent, so the timer wins, and the read, handed to
//!     // the kernel already, is cancelled.
//!     futures::select! {
//!         (read, _buf) = server.read(Vec::with_capacity(64)).fuse() => unreachable!("{read:?}"),
//!         () = proactor::time::sleep(Duration::from_millis(10)).fuse() => {}
//!     }
//!
//!     // What is sent afterwards comes to the next read.
//!     client.write_all(b"hello".to_vec()).await.0?;
//!     let (read, buf) = server.read(Vec::with_capacity(64)).await;
//!     assert_eq!(&buf[..read?], b"hello");
//!     Ok::<_, std::io::Error>(())
//! })?;
//! # Ok::<_, std::io::Error>(())
//! ```
//!
//! # With the ecosystem's I/O traits (futures-io)
//!
//! [`TcpStream`](net::TcpStream) also implements `futures_io`'s `AsyncRead`, `AsyncBufRead` and
//! `AsyncWrite` (and so do `&TcpStream` and the halves of
//! [`TcpStream::split`](net::TcpStream::split)), so a handler written against those traits
//! (`futures::io::BufReader` and `read_line`, `futures::io::copy`, a codec) runs here unchanged,
//! as on the reactor. The price: each byte is copied once more than with the owned-buffer API,
//! between the caller's slices and buffers the stream owns (a read that loses a `select!` loses
//! no bytes there either: see [`net`]).
//!
//! ```
//! use futures::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
//! use proactor::net::{TcpListener, TcpStream};
//!
//! /// Written against the traits alone: it runs on either runtime.
//! async fn greet<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> std::io::Result<()> {
//!     let mut stream = BufReader::new(stream);
//!     let mut name = String::new();
//!     stream.read_line(&mut name).await?;
//!     let stream = stream.get_mut();
//!     stream.write_all(format!("hello, {}\n", name.trim_end()).as_bytes()).await?;
//!     stream.close().await // the bytes are out, then the end of stream
//! }
//!
//! proactor::block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let (client, accepted) =
//!         futures::join!(TcpStream::connect(listener.local_addr()?), listener.accept());
//!     let (mut client, (server, _)) = (client?, accepted?);
//!     proactor::spawn(greet(server));
//!     // On a `TcpStream` itself, its own (owned-buffer) `read` and `write_all` come before the
//!     // traits' methods of the same names: call those by the trait's path.
//!     AsyncWriteExt::write_all(&mut client, b"world\n").await?;
//!     let mut reply = String::new();
//!     client.read_to_string(&mut reply).await?;
//!     assert_eq!(reply, "hello, world\n");
//!     Ok::<_, std::io::Error>(())
//! })?;
//! # Ok::<_, std::io::Error>(())
//! ```
//!
//! # How it fits together
//!
//! Read the modules in this order (`cargo doc -p proactor --document-private-items --open`),
//! from the kernel up:
//!
//! - `sys` (private): plain syscalls for socket set-up, the eventfd, socket addresses, and
//!   glibc's aio entry points.
//! - `backend` (private): three ways to build a proactor behind one surface (`backend::io`:
//!   the `Request`s the driver hands over, the `Completion`s it hears back, and the few verbs
//!   of the `Io` trait). `backend::uring` is io_uring: the slot index is the SQE's
//!   `user_data`, and SQEs pile up while tasks run and go to the kernel in one
//!   `io_uring_enter` per loop turn. `backend::aio` is POSIX aio ([`Backend::PosixAio`]):
//!   glibc's helper threads perform each request with a blocking syscall; read its docs for
//!   why POSIX aio on sockets is thread-per-connection in disguise. `backend::epoll` is
//!   completion emulated on readiness ([`Backend::Epoll`], and [`Backend::Auto`]'s fallback):
//!   operations wait in per-socket queues until epoll says the socket is ready, then the
//!   backend performs them and posts their completions.
//! - `bufring` (private): the provided-buffer ring, a pool the kernel picks receive buffers
//!   from when data arrives, growing and shrinking with the load.
//! - `driver` (private): operations are futures that own what the kernel touches; each takes
//!   a slab slot and hands its backend a `Request`. Dropping an operation early moves its
//!   buffer into the driver and cancels it; the buffer is freed when the completion comes.
//!   Receives nobody reads are spilled; sends behind are finished by the driver alone.
//! - `runtime`: [`Runtime`] and [`Builder`]: the shared `executor` crate's loop (the very one
//!   the `reactor` crate runs), parked in this crate's driver instead of in `epoll_wait`.
//! - [`buf`]: the owned-buffer contract ([`IoBuf`], [`IoBufMut`], [`BufResult`] and
//!   [`BufResultExt`]).
//! - [`net`] and [`time`]: what programs use. UDP's [`net::UdpSocket`] lives in `udp`
//!   (private, re-exported in `net`): a multishot `RECVMSG` for every peer, and the second
//!   provided-buffer ring it receives into.
//!
//! # Watching it work
//!
//! [`stats()`] returns this thread's counters of the runtime's own work (see [`Stats`] for each
//! one). With the cargo feature `trace`, `trace::start()` records every step the runtime takes,
//! each a value whose `Display` is the step in plain words ([`trace`]; `echo-lab trace` prints
//! and draws them).
//!
//! # Readiness versus completion
//!
//! The `reactor` crate waits for "ready" and then makes the syscall itself, so a borrowed
//! `&mut [u8]` is enough. Here the kernel performs the read *later*, into memory it was given
//! earlier, so the buffer must be owned by the operation until the kernel is done with it, even
//! if the caller stops waiting.
//!
//! # Stopping a server, and what SIGKILL leaves behind
//!
//! A server that handles SIGINT and SIGTERM, returns from `block_on` and drops its runtime
//! before exiting (as `examples/echo.rs` does: its accept loop loses a `select!` against the
//! signal) leaves nothing behind: a new process can bind its port at once.
//!
//! A process that dies without running destructors (SIGKILL, SIGTERM left at its default
//! action, `abort`, the OOM killer) leaves its io_uring ring to the kernel, which tears it down
//! in a worker after the process has gone. Its listening socket is closed only then: the
//! operations still armed in the ring (the multishot accept, receives) hold references to it,
//! and until they are cancelled it still listens. A restart inside that window fails with
//! `EADDRINUSE` ("Address already in use"). `SO_REUSEADDR`, which
//! [`TcpListener::bind`](net::TcpListener::bind) sets (as std's listeners do), does not help:
//! it lets a new socket bind over connections in `TIME_WAIT`, not over a socket that still
//! listens. On the reactor and on the epoll backend the kernel closes the socket as the process
//! exits. `scripts/port-after-kill.py` measures the window (2026-12-06, Linux 6.18, 2 shared
//! vCPUs, 50 kills per case): on io_uring the port was free again a median 9 ms after the kill
//! with connections open (at most 18 ms) and 1 ms after it without; on the reactor and the
//! epoll backend about 1 ms either way.
//!
//! So:
//!
//! - handle SIGINT and SIGTERM and stop through the runtime, so that a normal stop never
//!   leaves the port behind;
//! - after a kill, retry `bind` on `EADDRINUSE` for a while (every 10 ms for a second, say)
//!   instead of giving up at once; a supervisor that restarts servers does the same;
//! - or never let the port go: a supervisor (systemd's socket activation, for one) holds the
//!   listening socket and hands it to each new process, which takes it over with
//!   [`TcpListener::from_std`](net::TcpListener::from_std).

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

/// Whether the planted bug `$mutant` (a `sim::Mutant`) is on in the runtime running on this
/// thread (cargo feature `sim-mutants`). Without the feature it is the constant `false`, and
/// the compiler removes the branch it guards.
macro_rules! planted {
    ($mutant:ident) => {{
        #[cfg(feature = "sim-mutants")]
        let planted = crate::backend::sim::planted(crate::backend::sim::Mutant::$mutant);
        #[cfg(not(feature = "sim-mutants"))]
        let planted = false;
        planted
    }};
}

mod backend;
pub mod buf;
mod bufring;
mod driver;
pub mod net;
mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
mod stats;
mod sys;
pub mod trace;
mod udp;
mod waiters;

pub use backend::{AioNotify, Backend};
pub use buf::{BufResult, BufResultExt, IoBuf, IoBufMut, ProvidedBuf};
pub use executor::time;
pub use executor::{spawn, yield_now, JoinError, JoinHandle};
pub use runtime::{block_on, stats, Builder, Runtime};
pub use stats::Stats;
