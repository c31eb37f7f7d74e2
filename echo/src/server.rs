//! [`handle`](crate::handle) as a TCP server on each runtime.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc;

use crate::Connection;

/// The runtimes an echo server can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// `reactor`: epoll, readiness.
    Reactor,
    /// `proactor` on io_uring: completion.
    Uring,
}

impl RuntimeKind {
    /// Every runtime, in the order they are presented.
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Reactor, RuntimeKind::Uring];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Reactor => "reactor",
            RuntimeKind::Uring => "uring",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<RuntimeKind, String> {
        RuntimeKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| format!("unknown runtime {s:?} (expected one of: reactor, uring)"))
    }
}

/// Runs `handle` for every connection `listener` accepts, on `kind`, on this thread, until
/// the runtime cannot start. Connection errors end only their connection.
pub fn serve(kind: RuntimeKind, listener: std::net::TcpListener) -> io::Result<()> {
    match kind {
        RuntimeKind::Reactor => reactor::block_on(async {
            let listener = reactor::net::TcpListener::from_std(listener)?;
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        stream.set_nodelay(true)?;
                        reactor::spawn(serve_connection(stream));
                    }
                    Err(e) => eprintln!("echo ({kind}): accept: {e}"),
                }
            }
        }),
        RuntimeKind::Uring => proactor::Runtime::new()?.block_on(async {
            let listener = proactor::net::TcpListener::from_std(listener)?;
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        stream.set_nodelay(true)?;
                        proactor::spawn(serve_connection(stream));
                    }
                    Err(e) => eprintln!("echo ({kind}): accept: {e}"),
                }
            }
        }),
    }
}

async fn serve_connection<C: Connection>(conn: C) {
    if let Err(e) = crate::handle(conn).await {
        // A peer that resets or goes away is the peer's business, not worth a line.
        if !matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) {
            eprintln!("echo: connection: {e}");
        }
    }
}

/// Binds `addr` and serves it with `kind` on a new thread; returns the bound address once the
/// runtime is up (or the error that kept it from starting).
pub fn spawn(kind: RuntimeKind, addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let (started, start) = mpsc::channel();
    std::thread::Builder::new().name(format!("echo-{kind}")).spawn(move || {
        // Report start-up (io_uring missing, say) to the caller; later errors end the thread.
        let result = serve_checked(kind, listener, started);
        if let Err(e) = result {
            eprintln!("echo ({kind}): {e}");
        }
    })?;
    start.recv().unwrap_or_else(|_| Err(io::Error::other("the server thread died")))?;
    Ok(local)
}

fn serve_checked(
    kind: RuntimeKind,
    listener: std::net::TcpListener,
    started: mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    // Probe the runtime first so the caller hears about a runtime that cannot start.
    if kind == RuntimeKind::Uring {
        if let Err(e) = proactor::Runtime::new() {
            let _ = started.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Ok(());
        }
    }
    let _ = started.send(Ok(()));
    serve(kind, listener)
}
