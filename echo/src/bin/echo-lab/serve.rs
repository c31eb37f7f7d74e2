//! `echo-lab serve`: the echo server on one runtime, until SIGINT or SIGTERM.

use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::str::FromStr;

use clap::Args;
use echo::server::RuntimeKind;

use crate::sys;

/// A server to run: one of the project's runtimes, or the tokio baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// `echo::handle` on one of the project's runtimes.
    Runtime(RuntimeKind),
    /// The idiomatic tokio echo loop on a `current_thread` runtime: the baseline.
    Tokio,
}

impl Server {
    /// Every server, in the order they are presented.
    pub const ALL: [Server; 3] =
        [Server::Runtime(RuntimeKind::Reactor), Server::Runtime(RuntimeKind::Uring), Server::Tokio];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Server::Runtime(kind) => kind.name(),
            Server::Tokio => "tokio",
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
        Server::ALL
            .into_iter()
            .find(|server| server.name() == s)
            .ok_or_else(|| format!("unknown runtime {s:?} (expected one of: reactor, uring, tokio)"))
    }
}

/// Options of `echo-lab serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The runtime to serve on: reactor (epoll), uring (io_uring) or tokio (the baseline).
    #[arg(long, default_value = "reactor")]
    pub runtime: Server,
    /// The address to listen on; port 0 picks a free port (the line printed at start names it).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,
}

/// Runs the server; returns only if it cannot start (SIGINT/SIGTERM exit the process with 0).
pub fn run(a: &ServeArgs) -> Result<(), String> {
    // Before any thread starts, so that every thread inherits the blocked signals.
    sys::on_termination(|_| {
        eprintln!("shutting down");
        std::process::exit(0);
    })
    .map_err(|e| format!("cannot set up signal handling: {e}"))?;
    sys::raise_nofile();

    let listener = TcpListener::bind(a.addr).map_err(|e| bind_error(a.addr, &e))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Create the runtime (or a probe of it) now, so that a machine without io_uring, or out of
    // file descriptors, gets the reason instead of a listen line.
    let tokio_rt = match a.runtime {
        Server::Runtime(RuntimeKind::Reactor) => {
            reactor::Runtime::new().map_err(|e| runtime_error(a.runtime, &e))?;
            None
        }
        Server::Runtime(RuntimeKind::Uring) => {
            proactor::Runtime::new().map_err(|e| runtime_error(a.runtime, &e))?;
            None
        }
        Server::Tokio => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| runtime_error(a.runtime, &e))?,
        ),
    };

    let mut out = io::stdout().lock();
    writeln!(out, "listening on {local} (runtime {})", a.runtime)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(out);

    let result = match (a.runtime, tokio_rt) {
        (_, Some(rt)) => serve_tokio(&rt, listener),
        (Server::Runtime(kind), None) => echo::server::serve(kind, listener),
        (Server::Tokio, None) => unreachable!("the tokio runtime is built above"),
    };
    result.map_err(|e| runtime_error(a.runtime, &e))
}

/// One sentence for a bind failure, with what to do about it.
fn bind_error(addr: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "address {addr} is already in use: stop the other server, or pass another --addr \
             (port 0 picks a free one)"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("{addr} is not an address of this machine: pass --addr 127.0.0.1:PORT")
        }
        io::ErrorKind::PermissionDenied => {
            format!("not allowed to listen on {addr}: pick a port above 1023")
        }
        _ => too_many_files(e).unwrap_or_else(|| format!("cannot listen on {addr}: {e}")),
    }
}

/// One sentence for a runtime that failed to start or stopped.
fn runtime_error(server: Server, e: &io::Error) -> String {
    too_many_files(e).unwrap_or_else(|| format!("the {server} runtime failed: {e}"))
}

fn too_many_files(e: &io::Error) -> Option<String> {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)).then(|| {
        "too many open files: raise the limit (for example `ulimit -n 65536`) and start again".to_string()
    })
}

/// The baseline: the idiomatic tokio echo loop (read into a 4 KiB buffer, `write_all`) on a
/// `current_thread` runtime (`rt`), on this thread.
fn serve_tokio(rt: &tokio::runtime::Runtime, listener: TcpListener) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    listener.set_nonblocking(true)?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => sock,
                // EMFILE, say: keep serving the connections we have instead of exiting.
                Err(e) => {
                    eprintln!("echo (tokio): accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if sock.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}
