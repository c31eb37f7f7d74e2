//! Blocking sockets, one process per connection: the seed's own server (同步阻塞 I/O), done
//! right.
//!
//! The parent accepts; for each connection it forks, and the child echoes on blocking sockets
//! until end of stream, then exits. The parent closes its copy of the connection, reaps the
//! children that have exited, and accepts again.
//!
//! What it costs. A whole process per connection: `fork` copies the parent's page tables (the
//! pages are shared copy-on-write, and each page a child writes to faults and is copied), so
//! every connection pays a cost that grows with the parent's memory, plus an exit and a
//! `waitpid`. Each message costs two context switches, as with threads, and switching between
//! processes also switches address spaces. What it buys is isolation: a child that crashes,
//! leaks or corrupts memory takes down its own connection only.
//!
//! Where the seed is right and wrong. Its history is right: this is how early servers worked,
//! and a process per connection does not reach C10K. A blocked child uses no CPU while its
//! connection is idle, but every message wakes it. Its C server has bugs this one does not: it
//! reads once into a 1 KiB buffer and echoes `strlen(buff)` bytes (binary data is cut at the
//! first NUL, long or split messages are cut); it never calls `waitpid`, so every finished
//! child stays a zombie (its strace shows the ignored `SIGCHLD`); the child leaves with
//! `return`, which flushes stdio buffers copied from the parent; an `accept` error exits the
//! server. Here the child echoes exactly the bytes read until end of stream and shuts down its
//! write side, then leaves with `_exit`; the parent reaps after every accept and at least every
//! 100 ms, and backs off when it runs out of file descriptors.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::sys::{self, Forked};
use super::threads::{echo, AcceptErrors, RateLimitedLog};

/// The longest the parent waits for a connection before it reaps exited children again.
const REAP_INTERVAL: Duration = Duration::from_millis(100);

/// Serves `listener` forever, one process per connection. Returns only if the listener itself
/// fails.
///
/// The children are killed if the thread that runs this function ends (`PR_SET_PDEATHSIG`
/// follows the forking thread, not the process). Reaping uses `waitpid(-1)`, so it also
/// collects any other child of this process: do not mix it with `std::process` children.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    // Non-blocking, and waited on with a timeout: a blocking accept would leave zombies
    // behind whenever connections stop arriving.
    listener.set_nonblocking(true)?;
    let mut accept_errors = AcceptErrors::new("fork");
    let mut fork_log = RateLimitedLog::default();
    loop {
        sys::reap_children();
        if !readable(&listener, REAP_INTERVAL)? {
            continue;
        }
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                accept_errors.handle(e)?;
                continue;
            }
        };
        accept_errors.reset();
        // On Linux an accepted socket does not inherit O_NONBLOCK; the child relies on it.
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        match sys::fork() {
            Ok(Forked::Child) => serve_child(listener, stream),
            Ok(Forked::Parent(_)) => {}
            Err(e) => fork_log.log(format_args!("echo (fork): cannot fork ({e}); closing a connection")),
        }
        // The parent's copy of the connection is closed here; the child keeps its own.
    }
}

/// Waits up to `timeout` for a connection to accept; `false` on timeout or signal.
fn readable(listener: &TcpListener, timeout: Duration) -> io::Result<bool> {
    let mut fds = [libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    Ok(sys::poll(&mut fds, Some(timeout))? > 0)
}

/// The child: serves `stream`, then exits. Never returns.
///
/// After `fork`, the child has a copy of the whole address space but only the thread that
/// called `fork`. Any lock another thread held at that instant (the allocator's, stdout's and
/// stderr's, any `Mutex`) stays locked forever in the child, with no thread to release it. So
/// from here on the child must not allocate, print, panic (unwinding allocates and prints) or
/// run exit handlers: it uses a stack buffer and plain `read`/`write`/`shutdown`/`close`
/// calls, stops quietly on any error, and leaves with `_exit`.
///
/// The child also inherits every file descriptor the process had open (close-on-exec does not
/// apply without `exec`): it closes the listener, but other descriptors of a multi-threaded
/// process stay open in it until it exits.
fn serve_child(listener: TcpListener, mut stream: TcpStream) -> ! {
    sys::die_with_parent();
    // Every other fd of the parent (the listener, other connections, and in a test process
    // anything else) is closed at once: the child holds only its own connection, so a peer
    // closing elsewhere is seen by whoever should see it.
    sys::close_other_fds(stream.as_raw_fd());
    std::mem::forget(listener); // already closed by close_other_fds
    echo(&mut stream);
    drop(stream);
    sys::exit_child(0)
}
