//! A completion-based async runtime built from scratch on Linux `io_uring` (and on the two
//! other ways to build a proactor: POSIX aio's threads, and completion emulated on an epoll
//! readiness loop): a driver, owned buffers, a single-threaded executor, TCP and timers, in a
//! few files meant to be read. By default ([`Backend::Auto`]) it runs on io_uring, or on epoll
//! where io_uring cannot be set up.
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
//! - [`buf`]: the owned-buffer contract ([`IoBuf`], [`IoBufMut`], [`BufResult`]).
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

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

mod backend;
pub mod buf;
mod bufring;
mod driver;
pub mod net;
mod runtime;
mod stats;
mod sys;
pub mod trace;
mod udp;

pub use backend::Backend;
pub use buf::{BufResult, IoBuf, IoBufMut, ProvidedBuf};
pub use executor::time;
pub use executor::{spawn, yield_now, JoinError, JoinHandle};
pub use runtime::{block_on, stats, Builder, Runtime};
pub use stats::Stats;
