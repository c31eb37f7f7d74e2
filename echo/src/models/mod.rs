//! The seed document's I/O models (the Chinese article "Linux I/O models" this project started
//! from) as small, readable echo servers, one module each, to be measured beside the runtimes
//! (`echo-lab lab`).
//!
//! Each module's top comment explains its model, what it costs, and where the seed is right or
//! wrong about it. All of them serve the same echo behaviour as `echo::handle`: every byte back,
//! in order, until end of stream; then the write side is shut down.
//!
//! - [`threads`]: blocking sockets, one thread per connection.
//! - [`fork`]: blocking sockets, one process per connection, as in the seed.
//! - [`nonblocking`]: one thread polling `O_NONBLOCK` sockets round-robin, with back-off.
//! - [`select`]: a `select(2)` readiness loop, honest about `FD_SETSIZE`.
//! - [`poll`]: a `poll(2)` readiness loop, the O(n) ancestor of epoll.
//! - [`sigio`]: signal-driven I/O with a realtime signal per socket (`F_SETSIG`).
//! - [`aio_poll`]: Linux native AIO's poll requests (`IOCB_CMD_POLL`): readiness reported
//!   through a completion ring, one-shot, re-armed after each event.
//!
//! [`trace`] names the steps of `select` and `aio-poll` for `echo-lab trace` (cargo feature
//! `trace`), as the runtimes' own vocabularies do.
//!
//! The readiness (`reactor`) and completion (`proactor`: io_uring, POSIX aio) models are the
//! runtimes themselves. The only `unsafe` of these servers is in [`sys`]: thin wrappers over
//! the libc calls std does not offer (`select` and its sets, `poll`, `fork`, `fcntl` for
//! signal-driven I/O, signal masks, the AIO syscalls).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;

pub mod aio_poll;
pub mod fork;
pub mod nonblocking;
pub mod poll;
pub mod select;
pub mod sigio;
pub mod sys;
pub mod threads;
pub mod trace;

/// One of the classic I/O-model servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// Blocking sockets, a thread per connection.
    Threads,
    /// Blocking sockets, a process per connection.
    Fork,
    /// One thread, non-blocking sockets polled in turn.
    Nonblocking,
    /// One thread, a `select(2)` loop (connections past `FD_SETSIZE` are closed).
    Select,
    /// One thread, a `poll(2)` loop.
    Poll,
    /// One thread, signal-driven I/O.
    Sigio,
    /// One thread, Linux native AIO poll requests (`IOCB_CMD_POLL`, Linux 4.18).
    AioPoll,
}

impl Model {
    /// Every model, in the seed's order.
    pub const ALL: [Model; 7] = [
        Model::Threads,
        Model::Fork,
        Model::Nonblocking,
        Model::Select,
        Model::Poll,
        Model::Sigio,
        Model::AioPoll,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Threads => "threads",
            Model::Fork => "fork",
            Model::Nonblocking => "nonblocking",
            Model::Select => "select",
            Model::Poll => "poll",
            Model::Sigio => "sigio",
            Model::AioPoll => "aio-poll",
        }
    }

    /// Serves `listener` on this thread, forever (or until an error that stops the whole
    /// server; a single connection's errors only end that connection).
    pub fn serve(self, listener: TcpListener) -> io::Result<()> {
        match self {
            Model::Threads => threads::serve(listener),
            Model::Fork => fork::serve(listener),
            Model::Nonblocking => nonblocking::serve(listener),
            Model::Select => select::serve(listener),
            Model::Poll => poll::serve(listener),
            Model::Sigio => sigio::serve(listener),
            Model::AioPoll => aio_poll::serve(listener),
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(s: &str) -> Result<Model, String> {
        Model::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Model::ALL.iter().map(|m| m.name()).collect();
            format!("unknown model {s:?} (expected one of: {})", names.join(", "))
        })
    }
}

/// What an `accept` error means to an accept loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcceptFailure {
    /// The listener itself is unusable: accepting again would fail the same way.
    Listener,
    /// One connection failed before it was taken (Linux reports a pending connection's network
    /// errors through `accept`), or a signal interrupted the call: accept again at once.
    Connection,
    /// Out of fds or memory (or something unexpected): the connection stays in the backlog and
    /// an immediate retry would fail again, so wait before the next accept.
    Resources,
}

/// Sorts an `accept` error, the same way for every model.
pub(crate) fn accept_failure(e: &io::Error) -> AcceptFailure {
    match e.raw_os_error() {
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EFAULT) => AcceptFailure::Listener,
        Some(
            libc::ECONNABORTED
            | libc::EPROTO
            | libc::EPERM
            | libc::EINTR
            | libc::EAGAIN
            | libc::ETIMEDOUT
            | libc::ENETDOWN
            | libc::ENETUNREACH
            | libc::ENOPROTOOPT
            | libc::EHOSTDOWN
            | libc::EHOSTUNREACH
            | libc::ENONET
            | libc::EOPNOTSUPP,
        ) => AcceptFailure::Connection,
        _ => AcceptFailure::Resources,
    }
}

/// Binds `addr` and serves it with `model` on a new thread; returns the bound address.
pub fn spawn(model: Model, addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    sys::set_backlog(&listener, sys::BACKLOG)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name(format!("echo-{model}")).spawn(move || {
        if let Err(e) = model.serve(listener) {
            eprintln!("echo ({model}): {e}");
        }
    })?;
    Ok(local)
}
