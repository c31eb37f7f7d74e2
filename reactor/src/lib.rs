//! A readiness-based async runtime built from scratch on Linux `epoll`: a driver, wakers, a
//! single-threaded executor, TCP and timers, in a few files meant to be read.
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
