//! What `echo-lab trace` can trace: the runtimes, and the classic models that record their
//! steps (`echo::models::trace`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

use echo::models::Model;
use echo::server::RuntimeKind;

/// A server whose steps `echo-lab trace` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traced {
    /// `echo::handle` on one of the runtimes.
    Runtime(RuntimeKind),
    /// One of the classic models that record their steps: `select`, `aio-poll`.
    Model(Model),
}

impl Traced {
    /// The classic models with steps of their own.
    pub const MODELS: [Model; 2] = [Model::Select, Model::AioPoll];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Traced::Runtime(kind) => kind.name(),
            Traced::Model(model) => model.name(),
        }
    }

    /// Starts the server on an ephemeral loopback port on a thread of this process; returns
    /// its address.
    pub fn spawn(self) -> io::Result<SocketAddr> {
        let addr = "127.0.0.1:0".parse().expect("an address");
        match self {
            Traced::Runtime(kind) => echo::server::spawn(kind, addr),
            Traced::Model(model) => echo::models::spawn(model, addr),
        }
    }
}

impl fmt::Display for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Traced {
    type Err = String;

    fn from_str(s: &str) -> Result<Traced, String> {
        if let Ok(kind) = s.parse::<RuntimeKind>() {
            return Ok(Traced::Runtime(kind));
        }
        Traced::MODELS.into_iter().find(|m| m.name() == s).map(Traced::Model).ok_or_else(|| {
            format!(
                "no trace for {s:?}: the runtimes (reactor, uring, aio, aio-thread, aio-signal, aio-suspend, \
                 proactor-epoll) and the models select and aio-poll record their steps"
            )
        })
    }
}
