//! The step-by-step trace (cargo feature `trace`): the reactor's own steps ([`Event`]), and,
//! with the feature, the shared recorder (`start`, `take`, ...: see
//! [`executor::trace`]).
//!
//! The loop's steps ([`LoopEvent`]) and the epoll and `shutdown` steps ([`SysEvent`]) are the
//! shared executor's; the reactor's driver adds what readiness is about: the events it hands
//! to tasks, and the reads and sends the tasks make themselves. Each step's `Display` is its
//! sentence; to add a step, add a variant and its sentence here and call
//! `executor::trace_step!(Event::Variant { .. })` where it happens.

use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::RawFd;

use executor::readiness;
#[cfg(feature = "trace")]
pub use executor::trace::{start, start_at_most, stop, take, Step};
pub use executor::trace::{LoopEvent, SysEvent};

/// A registration of the driver, as the trace names it: by its fd when the fd was noted while
/// tracing (the driver itself keeps no fd), else by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The registration's index in the driver's registry.
    pub index: u32,
    /// Its fd, if it was registered while tracing.
    pub fd: Option<RawFd>,
}

impl Registration {
    /// Registration `index`, with its fd if tracing noted it.
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    pub(crate) fn of(index: u32) -> Registration {
        #[cfg(feature = "trace")]
        let fd = executor::trace::fd_of(index);
        #[cfg(not(feature = "trace"))]
        let fd = None;
        Registration { index, fd }
    }
}

impl fmt::Display for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fd {
            Some(fd) => write!(f, "fd {fd}"),
            None => write!(f, "registration {}", self.index),
        }
    }
}

/// A syscall a task makes on a socket once it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `read` (a stream).
    Read,
    /// `send` (a stream).
    Send,
    /// `recvfrom` (a datagram and its source).
    RecvFrom,
    /// `sendto` (a datagram).
    SendTo,
}

impl Call {
    /// The syscall's name.
    pub fn name(self) -> &'static str {
        match self {
            Call::Read => "read",
            Call::Send => "send",
            Call::RecvFrom => "recvfrom",
            Call::SendTo => "sendto",
        }
    }

    /// Whether it sends bytes to the peer.
    pub fn sends(self) -> bool {
        matches!(self, Call::Send | Call::SendTo)
    }
}

/// The reactor's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An epoll event for a registration: its readiness is recorded, and the tasks waiting for
    /// it are woken.
    Ready {
        /// Whose event.
        io: Registration,
        /// What it said (`executor::readiness` bits).
        ready: u8,
        /// How many tasks it woke (0: none waited; the readiness is remembered).
        woken: usize,
    },
    /// A read returned less than asked: the socket is drained, and its read readiness is
    /// cleared without a read that would say `EAGAIN`.
    ShortRead {
        /// Whose.
        io: Registration,
    },
    /// `accept4` returned a connection.
    Accepted {
        /// The listener.
        listener: RawFd,
        /// The new connection.
        fd: RawFd,
    },
    /// A task's `read`, `send`, `recvfrom` or `sendto`.
    Io {
        /// Which syscall.
        call: Call,
        /// On which socket.
        fd: RawFd,
        /// The bytes asked for (the buffer's length).
        len: usize,
        /// The bytes it transferred, or its errno (`EAGAIN`: nothing to do after all).
        result: Result<usize, i32>,
    },
}

impl Event {
    /// A syscall's result as the trace keeps it.
    #[cfg_attr(not(feature = "trace"), allow(dead_code))]
    pub(crate) fn result_of(result: &io::Result<usize>) -> Result<usize, i32> {
        match result {
            Ok(n) => Ok(*n),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Ready { io, ready, woken } => {
                write!(f, "  {io}: {} → ", readiness::words(ready))?;
                match woken {
                    0 => f.write_str("no task waits for it yet; remembered"),
                    1 => f.write_str("wake the task waiting for it"),
                    n => write!(f, "wake the {n} tasks waiting for it"),
                }
            }
            Event::ShortRead { io } => {
                write!(f, "  short read: {io} is drained; forget its readiness without an EAGAIN round trip")
            }
            Event::Accepted { listener, fd } => write!(f, "accept4(fd {listener}) → new connection, fd {fd}"),
            Event::Io { call, fd, len, result } => {
                write!(f, "{}(fd {fd}, {len} bytes) → ", call.name())?;
                match result {
                    Ok(n) => write!(f, "{n} bytes"),
                    Err(libc::EAGAIN) => {
                        f.write_str("EAGAIN: nothing to do after all; wait for the next readiness event")
                    }
                    Err(errno) => write!(f, "error: {}", io::Error::from_raw_os_error(errno)),
                }
            }
        }
    }
}

impl executor::trace::Event for Event {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step says what it did in the words `echo-lab trace` has always printed.
    #[test]
    fn each_step_reads_as_its_sentence() {
        let fd7 = Registration { index: 1, fd: Some(7) };
        let cases = [
            (
                Event::Ready { io: fd7, ready: readiness::READABLE | readiness::WRITABLE, woken: 1 },
                "  fd 7: readable, writable → wake the task waiting for it",
            ),
            (
                Event::Ready {
                    io: Registration { index: 2, fd: None },
                    ready: readiness::WRITABLE,
                    woken: 0,
                },
                "  registration 2: writable → no task waits for it yet; remembered",
            ),
            (
                Event::Ready { io: fd7, ready: readiness::READABLE, woken: 2 },
                "  fd 7: readable → wake the 2 tasks waiting for it",
            ),
            (
                Event::ShortRead { io: fd7 },
                "  short read: fd 7 is drained; forget its readiness without an EAGAIN round trip",
            ),
            (Event::Accepted { listener: 3, fd: 7 }, "accept4(fd 3) → new connection, fd 7"),
            (
                Event::Io { call: Call::Read, fd: 7, len: 16384, result: Ok(7) },
                "read(fd 7, 16384 bytes) → 7 bytes",
            ),
            (
                Event::Io { call: Call::Send, fd: 7, len: 7, result: Err(libc::EAGAIN) },
                "send(fd 7, 7 bytes) → EAGAIN: nothing to do after all; wait for the next readiness event",
            ),
            (
                Event::Io { call: Call::RecvFrom, fd: 8, len: 64, result: Err(libc::ECONNREFUSED) },
                "recvfrom(fd 8, 64 bytes) → error: Connection refused (os error 111)",
            ),
        ];
        for (event, sentence) in cases {
            assert_eq!(event.to_string(), sentence, "{event:?}");
        }
    }
}
