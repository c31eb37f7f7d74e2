//! Which server to run: `echo::handle` on one of the project's runtimes (or the same echo
//! written against futures-io's traits), a baseline (tokio, mio), or one of the seed's classic
//! models. `serve` runs one; `demo` and `lab` start each in a child process
//! (`serve --runtime NAME`).

use std::fmt;
use std::str::FromStr;

use echo::models::Model;
use echo::server::RuntimeKind;

/// A server to run: `echo::handle` on one of the project's runtimes, a baseline (tokio, mio),
/// or one of the seed's classic models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// `echo::handle` on one of the project's runtimes.
    Runtime(RuntimeKind),
    /// The echo written against `futures_io::AsyncRead` and `AsyncWrite`
    /// (`echo::server::echo_futures_io`) on one of the project's runtimes: on the proactor,
    /// through the bridge that copies between the handler's slices and buffers the stream owns.
    /// Named `RUNTIME-futures-io`.
    FuturesIo(RuntimeKind),
    /// The idiomatic tokio echo loop on a `current_thread` runtime: the baseline.
    Tokio,
    /// A hand-written edge-triggered mio loop: the readiness limit (see `baseline::mio`).
    Mio,
    /// One of the seed document's classic I/O-model servers (`echo::models`).
    Model(Model),
}

impl Server {
    /// Every server, in the order they are presented.
    pub const ALL: [Server; 6] = [
        Server::Runtime(RuntimeKind::Reactor),
        Server::Runtime(RuntimeKind::Uring),
        Server::Runtime(RuntimeKind::Aio),
        Server::Runtime(RuntimeKind::ProactorEpoll),
        Server::Tokio,
        Server::Mio,
    ];

    /// Every I/O model (what `lab` runs by default): the runtimes, the baselines, and the
    /// classic models.
    pub fn everything() -> Vec<Server> {
        let mut all = Server::ALL.to_vec();
        all.extend(Model::ALL.map(Server::Model));
        all
    }

    /// Every server `serve` knows: those, and the runtimes with the futures-io echo.
    pub fn known() -> Vec<Server> {
        let mut all = Server::everything();
        all.extend(RuntimeKind::ALL.map(Server::FuturesIo));
        all
    }

    /// The project's runtime it runs on, if it is one of them.
    pub fn kind(self) -> Option<RuntimeKind> {
        match self {
            Server::Runtime(kind) | Server::FuturesIo(kind) => Some(kind),
            Server::Tokio | Server::Mio | Server::Model(_) => None,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Server::Runtime(kind) => kind.name(),
            Server::FuturesIo(kind) => match kind {
                RuntimeKind::Reactor => "reactor-futures-io",
                RuntimeKind::Uring => "uring-futures-io",
                RuntimeKind::Aio => "aio-futures-io",
                RuntimeKind::ProactorEpoll => "proactor-epoll-futures-io",
            },
            Server::Tokio => "tokio",
            Server::Mio => "mio",
            Server::Model(model) => model.name(),
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Server {
    type Err = String;

    fn from_str(s: &str) -> Result<Server, String> {
        Server::known().into_iter().find(|server| server.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Server::known().into_iter().map(Server::name).collect();
            format!("unknown runtime {s:?} (expected one of: {})", names.join(", "))
        })
    }
}
