//! The steps of the `select` and `aio-poll` models, for `echo-lab trace` (cargo feature
//! `trace`): the same kind of vocabulary as the runtimes' (`executor::trace`), recorded
//! through the same recorder, so that a trace of a model prints and draws like a runtime's.
//!
//! A step is a value with typed fields; its `Display` is the step in plain words, which is all
//! a printer shows, while a drawing matches on the variants. Without the feature the hooks
//! compile to nothing (see `executor::trace_step!`). The connections these models share
//! ([`super::nonblocking`]'s) record their `accept4`, `read`, `write` and `shutdown` too, so
//! the other single-threaded models would record those if traced; only `select` and `aio-poll`
//! record their waits.

use std::any::Any;
use std::fmt;
use std::os::fd::RawFd;

/// A syscall a model makes on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `read(2)`.
    Read,
    /// `write(2)`.
    Write,
}

impl Call {
    /// The syscall's name.
    pub fn name(self) -> &'static str {
        match self {
            Call::Read => "read",
            Call::Write => "write",
        }
    }
}

/// A step of a classic model's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `select(2)` is called with both sets rebuilt.
    Select {
        /// Its `nfds`: the highest fd in either set, plus one (the kernel walks the bits up
        /// to it).
        nfds: RawFd,
        /// Fds in the read set (the listener's included).
        reads: usize,
        /// Fds in the write set (connections with bytes still to send).
        writes: usize,
    },
    /// `select(2)` returned.
    SelectReturned {
        /// The bits left set in both sets: how many fds are ready.
        ready: usize,
    },
    /// An `IOCB_CMD_POLL` request put in this turn's `io_submit` (aio-poll).
    PollArmed {
        /// The fd it waits on (`None`: the listener).
        fd: Option<RawFd>,
        /// It waits for `POLLOUT` (else `POLLIN`).
        writable: bool,
    },
    /// The turn's `io_submit` of its poll requests (aio-poll).
    Submitted {
        /// Requests the kernel took.
        requests: usize,
    },
    /// The loop enters `io_getevents` (aio-poll).
    GetEvents {
        /// Requests in flight: one slot of the completion ring each.
        in_flight: usize,
    },
    /// `io_getevents` returned (aio-poll).
    GetEventsReturned {
        /// Events taken.
        events: usize,
    },
    /// A poll request completed: its fd is ready (aio-poll).
    PollReady {
        /// The fd (`None`: the listener).
        fd: Option<RawFd>,
        /// The ready events, in `poll(2)`'s bits (`POLLIN`, `POLLOUT`, `POLLHUP`, ...).
        revents: i16,
    },
    /// `accept4` took a connection.
    Accepted {
        /// The listener.
        listener: RawFd,
        /// The new connection.
        fd: RawFd,
    },
    /// A `read` or `write` on a connection.
    Io {
        /// Which.
        call: Call,
        /// The connection.
        fd: RawFd,
        /// The bytes asked for.
        len: usize,
        /// Bytes moved, or the errno (`EAGAIN`: nothing to read, no room to write).
        result: Result<usize, i32>,
    },
    /// End of stream read, everything echoed: `shutdown(fd, Write)`.
    Shutdown {
        /// The connection.
        fd: RawFd,
    },
    /// The model closes a connection (end of stream, or an error).
    Closed {
        /// The connection.
        fd: RawFd,
    },
}

impl Event {
    /// The step of a `read` or `write` that returned `result`.
    pub(crate) fn io(call: Call, fd: RawFd, len: usize, result: &std::io::Result<usize>) -> Event {
        let result = match result {
            Ok(n) => Ok(*n),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EIO)),
        };
        Event::Io { call, fd, len, result }
    }
}

fn listener_or(fd: Option<RawFd>) -> String {
    fd.map_or_else(|| "the listener".to_string(), |fd| format!("fd {fd}"))
}

/// `poll(2)` bits in words.
fn revents_words(revents: i16) -> String {
    let names = [
        (libc::POLLIN, "POLLIN"),
        (libc::POLLOUT, "POLLOUT"),
        (libc::POLLERR, "POLLERR"),
        (libc::POLLHUP, "POLLHUP"),
        (libc::POLLRDHUP, "POLLRDHUP"),
    ];
    let words: Vec<&str> =
        names.iter().filter(|(bit, _)| revents & bit != 0).map(|(_, name)| *name).collect();
    if words.is_empty() {
        format!("{revents:#x}")
    } else {
        words.join("|")
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Select { nfds, reads, writes } => write!(
                f,
                "select(nfds {nfds}, {reads} fd{} to read, {writes} to write; no timeout): both sets rebuilt \
                 from the connection list, copied in; sleep until one is ready",
                if reads == 1 { "" } else { "s" }
            ),
            Event::SelectReturned { ready } => write!(
                f,
                "select returned {ready}: the sets now hold only the ready fds; test every connection's bit"
            ),
            Event::PollArmed { fd, writable } => write!(
                f,
                "  IOCB_CMD_POLL on {} for {}: one-shot, armed again after each event",
                listener_or(fd),
                if writable { "POLLOUT" } else { "POLLIN" }
            ),
            Event::Submitted { requests } => write!(
                f,
                "io_submit({requests} poll request{}): the kernel checks each socket and hooks the not-ready \
                 ones on its wait queue",
                if requests == 1 { "" } else { "s" }
            ),
            Event::GetEvents { in_flight } => write!(
                f,
                "io_getevents(min 1; {in_flight} request{} in flight): sleep until a polled fd is ready",
                if in_flight == 1 { "" } else { "s" }
            ),
            Event::GetEventsReturned { events } => {
                write!(f, "io_getevents returned {events} event{}", if events == 1 { "" } else { "s" })
            }
            Event::PollReady { fd, revents } => {
                write!(
                    f,
                    "  poll event: {} is ready ({}); its request is used up",
                    listener_or(fd),
                    revents_words(revents)
                )
            }
            Event::Accepted { listener, fd } => {
                write!(f, "  accept4(fd {listener}) → new connection, fd {fd}")
            }
            Event::Io { call, fd, len, result } => {
                write!(f, "  {}(fd {fd}, {len} bytes) → ", call.name())?;
                match result {
                    Ok(n) => write!(f, "{n} bytes"),
                    Err(libc::EAGAIN) => f.write_str("EAGAIN"),
                    Err(errno) => write!(f, "{}", std::io::Error::from_raw_os_error(errno)),
                }
            }
            Event::Shutdown { fd } => {
                write!(f, "  shutdown(fd {fd}, Write): end of stream read, everything echoed")
            }
            Event::Closed { fd } => write!(f, "  close(fd {fd})"),
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

    #[test]
    fn the_models_steps_say_what_they_did() {
        assert_eq!(
            Event::Io { call: Call::Read, fd: 5, len: 16384, result: Err(libc::EAGAIN) }.to_string(),
            "  read(fd 5, 16384 bytes) → EAGAIN"
        );
        assert_eq!(
            Event::PollReady { fd: None, revents: libc::POLLIN }.to_string(),
            "  poll event: the listener is ready (POLLIN); its request is used up"
        );
        assert_eq!(
            Event::SelectReturned { ready: 1 }.to_string().split(':').next(),
            Some("select returned 1")
        );
    }
}
