//! The backends: three ways to build a proactor, behind one surface.
//!
//! - [`uring`]: Linux io_uring. The kernel performs the operation itself; one syscall submits
//!   and reaps a whole turn's operations.
//! - [`aio`]: POSIX aio (glibc's `aio_read`/`aio_write`), where glibc's helper threads perform
//!   it with plain blocking syscalls; accept and connect, which POSIX aio lacks, run on this
//!   crate's own helper threads.
//! - [`epoll`]: completion emulated on readiness: the backend queues the operation, waits with
//!   epoll until its socket is ready, and performs it itself (as Boost.Asio does).
//! - `sim` (cargo feature `sim`, for tests): a model of the kernel, deterministic from a seed,
//!   that behaves like any of the three as the driver sees it, with seeded faults.
//!
//! Each implements [`Io`] over the vocabulary of [`io`] ([`Request`] in, [`Completion`] out);
//! [`open`] picks one. Nothing above this module knows which one it runs on: what differs is
//! stated as [`Facts`].

pub(crate) mod aio;
pub(crate) mod epoll;
pub(crate) mod io;
#[cfg(feature = "sim")]
pub(crate) mod sim;
pub(crate) mod uring;

use std::io as stdio;

use executor::Notifier;

pub use self::io::{AioNotify, Backend};
pub(crate) use self::io::{BufId, Completion, Config, Destination, Facts, Gauges, Io, Request};
use crate::bufring::BufRing;

/// A backend, set up: its surface, and the provided-buffer ring it receives into, if it has one.
pub(crate) struct Opened {
    pub(crate) io: Box<dyn Io>,
    pub(crate) ring: Option<BufRing>,
    /// The simulated kernel's handle, for [`Backend::Sim`].
    #[cfg(feature = "sim")]
    pub(crate) sim: Option<sim::SimKernel>,
}

/// Sets up the backend `config` asks for. [`Backend::Auto`] is io_uring, or epoll where
/// io_uring cannot be set up, with one line on stderr that says why.
pub(crate) fn open(config: &Config, notifier: &Notifier) -> stdio::Result<Opened> {
    let make = |io: Box<dyn Io>, ring: Option<BufRing>| Opened {
        io,
        ring,
        #[cfg(feature = "sim")]
        sim: None,
    };
    let uring = |(io, ring): (uring::Uring, Option<BufRing>)| make(Box::new(io), ring);
    let epoll = || -> stdio::Result<Opened> { Ok(make(Box::new(epoll::Epoll::new(notifier)?), None)) };
    match config.backend {
        Backend::IoUring => uring::Uring::new(config).map(uring),
        Backend::Auto => match uring::Uring::new(config) {
            Ok(opened) => Ok(uring(opened)),
            Err(e) => {
                // The error is one sentence that names the reason (see
                // `uring::explain_setup_error`).
                eprintln!("proactor: running on epoll (completion emulated on readiness) because {e}");
                epoll()
            }
        },
        Backend::PosixAio => Ok(make(Box::new(aio::Aio::new(config, notifier)?), None)),
        Backend::Epoll => epoll(),
        #[cfg(feature = "sim")]
        Backend::Sim => {
            let (io, ring, sim) = sim::open(config)?;
            Ok(Opened { io: Box::new(io), ring, sim: Some(sim) })
        }
    }
}
