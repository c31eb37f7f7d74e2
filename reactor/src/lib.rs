//! A readiness-based async runtime built from scratch on Linux `epoll`: a driver, wakers, a
//! single-threaded executor, TCP and timers, in a few files meant to be read. The guide's
//! chapter 2, `docs/02-readiness.md` in the repository, walks through it.
//!
//! ```no_run
//! use reactor::net::TcpListener;
//!
//! fn main() -> std::io::Result<()> {
//!     reactor::block_on(async {
//!         let listener = TcpListener::bind("127.0.0.1:7000")?;
//!         loop {
//!             // An error here is per-connection or fd exhaustion (reported, then backed off).
//!             let Ok((mut stream, _peer)) = listener.accept().await else { continue };
//!             reactor::spawn(async move {
//!                 let mut buf = vec![0; 4096];
//!                 loop {
//!                     match stream.read(&mut buf).await {
//!                         Ok(0) | Err(_) => break,
//!                         Ok(n) => if stream.write_all(&buf[..n]).await.is_err() { break },
//!                     }
//!                 }
//!             });
//!         }
//!     })
//! }
//! ```
//!
//! # With `futures`' combinators
//!
//! Its futures are ordinary futures, and [`net::TcpStream`] implements `futures-io`'s
//! `AsyncRead` and `AsyncWrite`, so the `futures` crate works as it does on tokio: `join!` runs
//! futures side by side in one task, `select!` takes whichever finishes first (and drops the
//! other, which for a read here loses nothing: readiness I/O has nothing in flight), and
//! `futures::io::BufReader` reads lines.
//!
//! ```
//! use std::time::Duration;
//!
//! use futures::{AsyncBufReadExt, FutureExt};
//! use reactor::net::{TcpListener, TcpStream};
//!
//! reactor::block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     // Connect and accept at once, in one task.
//!     let (client, accepted) =
//!         futures::join!(TcpStream::connect(listener.local_addr()?), listener.accept());
//!     let (mut client, (mut server, _)) = (client?, accepted?);
//!
//!     // A read against a timer: nothing was sent, so the timer wins.
//!     let mut buf = [0; 64];
//!     futures::select! {
//!         read = server.read(&mut buf).fuse() => unreachable!("read {read:?}"),
//!         () = reactor::time::sleep(Duration::from_millis(10)).fuse() => {}
//!     }
//!
//!     // Lines, through a buffered reader.
//!     client.write_all(b"hello\nworld\n").await?;
//!     let mut reader = futures::io::BufReader::new(server);
//!     let mut line = String::new();
//!     reader.read_line(&mut line).await?;
//!     assert_eq!(line, "hello\n");
//!     Ok::<_, std::io::Error>(())
//! })?;
//! # Ok::<_, std::io::Error>(())
//! ```
//!
//! # How it fits together
//!
//! Read the modules in this order; each builds only on the ones before it. The private ones
//! are documented too: `cargo doc -p reactor --document-private-items --open`.
//!
//! - `sys` (private): every `unsafe` syscall (epoll, eventfd, sockets), each a
//!   thin safe wrapper.
//! - `driver` (private): the epoll instance. Sockets are registered once, edge-triggered; each
//!   event sets readiness bits in the socket's registration state (which the socket points to,
//!   and whose address is the event's token) and wakes the task waiting on it. The module docs
//!   explain the edge-triggered protocol, why a stale event can never reach freed or reused
//!   state, and why no tick is needed to keep a readiness edge from being lost.
//! - `runtime`: [`Runtime`] and [`Builder`]: the shared `executor` crate's loop (tasks,
//!   wakers, [`JoinHandle`], the budget, timers, remote wakes), parked in the driver's
//!   `epoll_wait`: poll woken tasks, then `epoll_wait` (with the nearest timer as its
//!   timeout), then wake the tasks whose sockets or timers fired. The driver is the only part
//!   that is the reactor's own; the `proactor` crate runs the same loop on io_uring.
//! - [`net`] and [`time`] (the executor's timers, re-exported): what programs use. UDP's
//!   [`net::UdpSocket`] lives in `udp` (private), re-exported in `net`.
//!
//! # Readiness versus completion
//!
//! Here the kernel says "this socket is ready" and the program then makes the `read` or
//! `write` itself, so the buffer is borrowed only during that syscall: `read(&mut [u8])` is
//! safe, and dropping a read future leaves nothing behind. A completion runtime (the sibling
//! `proactor` crate) hands the kernel the buffer for the whole operation, so it must own it.
//!
//! # Limits
//!
//! One runtime runs on one thread (`!Send`); for several cores run one runtime per thread.
//! Wakers are `Send + Sync` and may be woken from any thread.
//!
//! # Watching it work
//!
//! [`stats()`] returns this thread's counters of the runtime's own work (see [`Stats`] for each
//! one). With the cargo feature `trace`, `trace::start()` records every step the runtime takes,
//! each a value whose `Display` is the step in plain words ([`trace`]; `echo-lab trace` prints
//! and draws them).

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

mod driver;
pub mod net;
mod runtime;
mod stats;
mod sys;
pub mod trace;
mod udp;

pub use executor::time;
pub use executor::{spawn, yield_now, JoinError, JoinHandle};
pub use runtime::{block_on, Builder, Runtime};
pub use stats::{stats, Stats};
