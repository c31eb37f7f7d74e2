//! What both runtimes share: the executor, and beneath it the layer their drivers share.
//!
//! The executor is tasks and wakers, the run queue and the loop, the budget, timers, panic
//! containment, remote wakes and counters. It knows nothing of epoll or io_uring: it runs its
//! loop on any driver that implements [`Park`], the seam between the loop and the I/O. The
//! layer beneath is not the loop's but the drivers': the syscall wrappers both use (eventfd,
//! sockets, addresses, epoll), edge-triggered readiness and its protocol (the reactor's driver
//! and the proactor's epoll backend follow the same one), and what both runtimes' socket types
//! have in common. They live here because both runtimes depend on this crate and on nothing
//! else of the project.
//!
//! The guide's chapter 1, `docs/01-one-loop.md` in the repository, walks through this crate
//! (the loop, tasks and wakers, the `Park` seam, timers) with commands to run.
//!
//! The `reactor` crate plugs in an epoll driver (it reports sockets that became *ready*); the
//! `proactor` crate an io_uring or POSIX aio driver (it reports operations that *completed*).
//! Readiness versus completion is a driver choice plus a buffer contract; the loop is this one.
//!
//! The shortest complete driver waits for nothing but time and for other threads: its park is
//! a condition variable's timed wait. Everything else (tasks, timers, wakers from other
//! threads) is the executor's:
//!
//! ```
//! use std::io;
//! use std::sync::{Arc, Condvar, Mutex};
//! use std::task::Waker;
//! use std::time::{Duration, Instant};
//!
//! use executor::{Config, Park, Runtime, Unpark};
//!
//! /// A driver without I/O: `park` sleeps until the timeout or an unpark.
//! #[derive(Debug, Default)]
//! struct Sleeper {
//!     unparked: Mutex<bool>,
//!     wake: Condvar,
//! }
//!
//! impl Unpark for Sleeper {
//!     fn unpark(&self) {
//!         *self.unparked.lock().unwrap() = true;
//!         self.wake.notify_one();
//!     }
//! }
//!
//! struct Driver(Arc<Sleeper>);
//!
//! impl Park for Driver {
//!     fn park(&self, timeout: Option<Duration>, _io: &mut Vec<Waker>) -> io::Result<bool> {
//!         let guard = self.0.unparked.lock().unwrap();
//!         let timeout = timeout.unwrap_or(Duration::MAX);
//!         let (mut unparked, _) = self.0.wake.wait_timeout_while(guard, timeout, |u| !*u).unwrap();
//!         Ok(std::mem::take(&mut *unparked))
//!     }
//!
//!     fn unparker(&self) -> Arc<dyn Unpark> {
//!         self.0.clone()
//!     }
//!
//!     fn shut_down(&self, _io: &mut Vec<Waker>) {}
//! }
//!
//! let rt = Runtime::new(Driver(Arc::default()), Config::default(), 64);
//! let started = Instant::now();
//! let sum = rt.block_on(async {
//!     // A timer: the loop parks the driver until its deadline.
//!     let timer = executor::spawn(async {
//!         executor::time::sleep(Duration::from_millis(20)).await;
//!         1
//!     });
//!     // A wake from another thread: the waker queues the task remotely and unparks.
//!     let (tx, rx) = std::sync::mpsc::channel::<Waker>();
//!     std::thread::spawn(move || rx.recv().unwrap().wake());
//!     let mut sent = false;
//!     std::future::poll_fn(|cx| {
//!         if sent {
//!             return std::task::Poll::Ready(());
//!         }
//!         sent = true;
//!         tx.send(cx.waker().clone()).unwrap();
//!         std::task::Poll::Pending
//!     })
//!     .await;
//!     timer.await.unwrap() + 41
//! });
//! assert_eq!(sum, 42);
//! assert!(started.elapsed() >= Duration::from_millis(20));
//! ```
//!
//! # How it fits together
//!
//! The loop:
//!
//! - `task`: what a spawned future becomes; [`JoinHandle`], [`JoinError`].
//! - `executor`: [`Park`] and [`Unpark`], the loop ([`Runtime::block_on`]), the budget
//!   ([`poll_budget`]), [`spawn`].
//! - [`time`]: timers, which belong to the loop and so work on every driver.
//! - [`Notifier`]: the eventfd both drivers use as their [`Unpark`].
//! - [`stats`]: the loop's counters; [`trace`]: the step-by-step trace, its recorder and the
//!   loop's steps.
//!
//! What the drivers share, beneath the loop:
//!
//! - [`sys`]: the syscall wrappers both drivers use (eventfd, socket set-up and options,
//!   addresses, the fd limit, epoll), each a thin safe wrapper over one libc call.
//! - [`readiness`]: edge-triggered epoll's readiness bits and the protocol that keeps them
//!   right, for the reactor's driver and the proactor's epoll backend.
//! - [`net`]: what both runtimes' socket types share (address resolution, the listen backlog,
//!   accept-error classes and back-off, stream options, the UDP socket's set-up and which
//!   datagram errors concern one peer only).

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

mod executor;
pub mod net;
mod notify;
pub mod readiness;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod sys;
mod task;
pub mod time;
pub mod trace;

pub use executor::{
    poll_budget, runs_driver, slab_capacity, spawn, with_driver, yield_now, Config, Park, Runtime, Unpark,
};
pub use notify::Notifier;
pub use task::{JoinError, JoinHandle};
