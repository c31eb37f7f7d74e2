//! `echo-lab serve`: the echo server on one runtime (on one or more threads), until SIGINT or
//! SIGTERM, which stop it gracefully. It answers TCP and, on the same address, UDP (RFC 862),
//! unless `--no-udp`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;
use echo::server::{Handler, RuntimeKind, ServeOptions, Shutdown, Stats};

use crate::baseline;
use crate::server::Server;
use crate::sys;

/// Options of `echo-lab serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The runtime to serve on: reactor (epoll), uring (io_uring), aio (POSIX aio, glibc's
    /// helper threads), proactor-epoll (the proactor with completion emulated on epoll),
    /// tokio (the baseline), mio (a hand-written edge-triggered loop: the readiness limit), or
    /// one of the seed's classic models: threads
    /// (a thread per connection), fork (a process per connection), nonblocking (one thread
    /// polling every socket), select (a select(2) loop), poll (a poll(2) loop), sigio
    /// (signal-driven I/O), aio-poll (Linux AIO poll requests). A runtime's name followed by
    /// -futures-io (reactor-futures-io, uring-futures-io, aio-futures-io,
    /// proactor-epoll-futures-io) serves the same echo written against futures-io's AsyncRead
    /// and AsyncWrite instead of the owned-buffer contract (not with --idle-timeout).
    #[arg(long, default_value = "reactor")]
    pub runtime: Server,
    /// The address to listen on; port 0 picks a free port (the line printed at start names it).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,
    /// Runtimes to run, one per thread, each with its own listener on --addr (SO_REUSEPORT:
    /// the kernel spreads new connections over them). Not with tokio.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Most connections open at once (over all threads). Connection N+1 is accepted and closed
    /// at once (its client reads end of stream); one line is logged each time the limit is
    /// reached, not one per connection. Not with tokio.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: Option<u64>,
    /// Close a connection that receives nothing for SECS seconds (fractions allowed). Not with
    /// tokio.
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    pub idle_timeout: Option<Duration>,
    /// On SIGINT or SIGTERM: stop accepting at once, let open connections finish for up to SECS
    /// seconds, drop those still open, and exit 0. (The tokio baseline exits at once.)
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    pub grace: Duration,
    /// With --runtime aio: the size of glibc's aio thread pool, i.e. how many connections may
    /// wait in a read at once (each holds a thread). Past it, new reads are refused (the
    /// connection is closed) with a warning, rather than queued behind idle connections.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub aio_threads: u32,
    /// Do not answer UDP. By default the server also echoes datagrams on the same address and
    /// port (RFC 862's UDP echo), with reactor, uring, proactor-epoll and tokio (not aio: POSIX
    /// aio has no recvfrom/sendto; nor the classic models).
    #[arg(long)]
    pub no_udp: bool,
    /// Print the runtime's own counters once a second on stderr, as rates: loop turns, waits,
    /// events or completions per wait, task polls, syscalls by kind (one line per runtime
    /// thread; see the runtime's `Stats` docs for each counter). Not with tokio.
    #[arg(long)]
    pub stats: bool,
}

fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    parse_secs(s).and_then(|d| {
        if d.is_zero() {
            Err("0 would close every connection at once".into())
        } else {
            Ok(d)
        }
    })
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is not a number of seconds (0 or more)"))
}

/// Runs the server; returns when it has stopped after SIGINT/SIGTERM (Ok), or if it cannot start.
pub fn run(a: &ServeArgs) -> Result<(), String> {
    if matches!(a.runtime, Server::Tokio | Server::Mio | Server::Model(_))
        && (a.threads > 1 || a.max_conns.is_some() || a.idle_timeout.is_some() || a.stats)
    {
        return Err(
            "--threads, --max-conns, --idle-timeout and --stats need --runtime reactor, uring, aio or proactor-epoll".into(),
        );
    }
    if matches!(a.runtime, Server::FuturesIo(_)) && a.idle_timeout.is_some() {
        return Err("--idle-timeout needs the owned-buffer echo (a runtime name without -futures-io)".into());
    }
    let shutdown = Shutdown::new();
    let stats = Arc::new(Stats::default());
    // Before any thread starts, so that every thread inherits the blocked signals.
    let on_signal = {
        let (runtime, grace, shutdown, stats) = (a.runtime, a.grace, shutdown.clone(), stats.clone());
        move |_| {
            if matches!(runtime, Server::Tokio | Server::Mio | Server::Model(_)) {
                // No graceful stop for these: exit at once (a fork model's children die with
                // the process, see `echo::models::fork`).
                eprintln!("shutting down");
                std::process::exit(0);
            }
            let open = stats.open();
            eprintln!(
                "shutting down: {open} connection{} still open, waiting up to {} s",
                if open == 1 { "" } else { "s" },
                grace.as_secs_f64()
            );
            shutdown.trigger();
        }
    };
    let on_usr1 = {
        let stats = stats.clone();
        move || stats.request_counters()
    };
    sys::on_termination(on_signal, on_usr1).map_err(|e| format!("cannot set up signal handling: {e}"))?;
    sys::raise_nofile();

    let (kind, handler) = match a.runtime {
        Server::Runtime(kind) => (kind, Handler::Owned),
        Server::FuturesIo(kind) => (kind, Handler::FuturesIo),
        Server::Tokio => return run_tokio(a),
        Server::Mio => return run_model(a, baseline::mio::serve),
        Server::Model(model) => return run_model(a, |listener| model.serve(listener)),
    };
    probe(a, kind)?;
    let listeners = listeners(a.addr, a.threads.into()).map_err(|e| bind_error(a.addr, &e))?;
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let udp_on = !a.no_udp && kind != RuntimeKind::Aio;
    let udp: Vec<Option<UdpSocket>> = if udp_on {
        udp_sockets(local, a.threads.into())
            .map_err(|e| bind_error(local, &e))?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        (0..a.threads).map(|_| None).collect()
    };

    let opts = ServeOptions {
        max_conns: a.max_conns.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        idle_timeout: a.idle_timeout,
        grace: a.grace,
        stats_every: a.stats.then_some(Duration::from_secs(1)),
        handler,
    };
    let threads = start_threads(a, kind, listeners, udp, &opts, &shutdown, &stats)?;

    let mut out = io::stdout().lock();
    writeln!(out, "listening on {local} ({}, runtime {})", protocols(udp_on), a.runtime)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(out);
    if !a.no_udp && kind == RuntimeKind::Aio {
        eprintln!("no UDP: {}", echo::server::UDP_ON_AIO);
    }

    let mut result = Ok(());
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(runtime_error(a.runtime, &e)),
            Err(_) => result = Err(format!("the {} runtime failed: a server thread panicked", a.runtime)),
        }
    }
    result?;
    print_stopped(&stats);
    Ok(())
}

/// Creates a runtime of `kind` and drops it, so that a machine without io_uring, or out of file
/// descriptors, gets the reason instead of a listen line.
fn probe(a: &ServeArgs, kind: RuntimeKind) -> Result<(), String> {
    match kind {
        RuntimeKind::Reactor => drop(reactor::Runtime::new().map_err(|e| runtime_error(a.runtime, &e))?),
        RuntimeKind::Uring | RuntimeKind::ProactorEpoll => {
            drop(echo::server::proactor_runtime(kind).map_err(|e| runtime_error(a.runtime, &e))?)
        }
        // The first aio runtime of the process sizes glibc's thread pool for all of them.
        RuntimeKind::Aio => drop(
            proactor::Builder::new()
                .backend(proactor::Backend::PosixAio)
                .aio_threads(a.aio_threads)
                .build()
                .map_err(|e| runtime_error(a.runtime, &e))?,
        ),
    }
    Ok(())
}

/// Starts one server thread per listener (with its UDP socket, if any), and waits until each
/// has started; if one cannot, stops them all and says why.
fn start_threads(
    a: &ServeArgs,
    kind: RuntimeKind,
    listeners: Vec<TcpListener>,
    mut udp: Vec<Option<UdpSocket>>,
    opts: &ServeOptions,
    shutdown: &Shutdown,
    stats: &Arc<Stats>,
) -> Result<Vec<JoinHandle<io::Result<()>>>, String> {
    let (started, start) = mpsc::channel::<io::Result<()>>();
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (opts, stop, stats, started) = (opts.clone(), shutdown.clone(), stats.clone(), started.clone());
        let udp = udp[i].take();
        let thread = std::thread::Builder::new().name(format!("echo-{kind}-{i}")).spawn(move || {
            let ready = started.clone();
            let result = echo::server::serve_until(kind, listener, udp, &opts, &stop, &stats, move || {
                let _ = ready.send(Ok(()));
            });
            if let Err(e) = &result {
                // Heard only if the server failed before it started.
                let _ = started.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            result
        });
        match thread {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                shutdown.trigger();
                return Err(format!("cannot start a server thread: {e}"));
            }
        }
    }
    drop(started);
    let mut failure = None;
    for _ in 0..threads.len() {
        match start.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure = Some(runtime_error(a.runtime, &e));
                break;
            }
            Err(_) => {
                failure = Some(format!("the {} runtime failed: a server thread died", a.runtime));
                break;
            }
        }
    }
    if let Some(failure) = failure {
        shutdown.trigger();
        threads.into_iter().for_each(|t| drop(t.join()));
        return Err(failure);
    }
    Ok(threads)
}

/// The last line: `stopped`, with what became of the connections still open, if anything.
fn print_stopped(stats: &Stats) {
    let mut notes = Vec::new();
    let mut note = |n: u64, what: &str| {
        if n > 0 {
            notes.push(format!("{n} connection{} {what}", if n == 1 { "" } else { "s" }));
        }
    };
    note(stats.dropped(), "dropped at the end of the grace period");
    note(stats.idle_closed(), "closed idle");
    note(stats.refused(), "refused by --max-conns");
    if notes.is_empty() {
        eprintln!("stopped");
    } else {
        eprintln!("stopped ({})", notes.join(", "));
    }
}

/// Serves with one of the classic models (or the mio baseline) until SIGINT or SIGTERM (which
/// exit the process).
fn run_model(a: &ServeArgs, serve: impl FnOnce(TcpListener) -> io::Result<()>) -> Result<(), String> {
    let model = a.runtime;
    let listener = TcpListener::bind(a.addr).map_err(|e| bind_error(a.addr, &e))?;
    echo::models::sys::set_backlog(&listener, echo::models::sys::BACKLOG).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {local} (tcp, runtime {model})")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(out);
    serve(listener).map_err(|e| format!("the {model} server stopped: {e}"))
}

/// Serves with the tokio baseline until SIGINT or SIGTERM (which exit the process).
fn run_tokio(a: &ServeArgs) -> Result<(), String> {
    let listener = TcpListener::bind(a.addr).map_err(|e| bind_error(a.addr, &e))?;
    echo::models::sys::set_backlog(&listener, echo::models::sys::BACKLOG).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let udp = if a.no_udp { None } else { Some(UdpSocket::bind(local).map_err(|e| bind_error(local, &e))?) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| runtime_error(a.runtime, &e))?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {local} ({}, runtime {})", protocols(udp.is_some()), a.runtime)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    drop(out);
    baseline::tokio::serve(&rt, listener, udp).map_err(|e| runtime_error(a.runtime, &e))
}

/// What the listening line says is served.
fn protocols(udp: bool) -> &'static str {
    if udp {
        "tcp and udp"
    } else {
        "tcp"
    }
}

/// `n` UDP sockets on `addr` (the TCP listeners' address, port included): one plain one for one
/// thread, otherwise `n` sharing it with `SO_REUSEPORT` (the kernel spreads peers over them).
fn udp_sockets(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    if n == 1 {
        return Ok(vec![UdpSocket::bind(addr)?]);
    }
    use socket2::{Domain, Socket, Type};
    (0..n)
        .map(|_| {
            let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
            sock.set_reuse_port(true)?;
            sock.bind(&addr.into())?;
            Ok(sock.into())
        })
        .collect()
}

/// `n` listeners on `addr`: one plain one (as `TcpListener::bind` makes it) for one thread;
/// otherwise `n` sharing the address with `SO_REUSEPORT` (the first picks the port if `addr`
/// has port 0, the others bind that port).
fn listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    if n == 1 {
        let listener = TcpListener::bind(addr)?;
        echo::models::sys::set_backlog(&listener, echo::models::sys::BACKLOG)?;
        return Ok(vec![listener]);
    }
    let first = reuseport_listener(addr)?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..n {
        all.push(reuseport_listener(addr)?);
    }
    Ok(all)
}

/// A listening socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
fn reuseport_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    // socket2 makes it close-on-exec.
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&addr.into())?;
    sock.listen(echo::models::sys::BACKLOG)?;
    Ok(sock.into())
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
