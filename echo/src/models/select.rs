//! I/O multiplexing with `select(2)`, the call the seed's multiplexing section (异步阻塞 I/O ---
//! Reactor 模式) describes (its code then uses epoll): one thread, non-blocking sockets, and a
//! loop that blocks in one `select` over two descriptor sets, one for reading and one for
//! writing, then does only the accepts, reads and writes it reported ready. The connections are
//! [`super::nonblocking`]'s and the loop is [`super::poll`]'s, interest included (`read` when a
//! connection has nothing to send, `write`, and not `read`, when it has: the backpressure); only
//! the way of naming the sockets differs: a bitmap per kind of event, indexed by fd number.
//!
//! Cost. A set is both an argument and a result: the kernel copies `nfds` bits of each set in,
//! checks every fd whose bit is set (calls its poll, joins its wait queue, leaves it on return),
//! and writes the ready subset back over the set. So the loop rebuilds both sets before every
//! call (here from the connection list, O(n)), and afterwards tests every connection's bit
//! (O(n) again), even when one socket of a thousand was ready. `nfds` is the highest fd + 1: the
//! kernel walks the bitmaps up to the highest fd in use, however few are watched. `poll(2)` has
//! the same O(n) shape with an array of 8-byte entries instead of bitmaps; epoll keeps the
//! interest set in the kernel and hands back only the ready fds (see [`super::poll`]). Idle, the
//! thread sleeps in the kernel and uses no CPU.
//!
//! `FD_SETSIZE`. A set is a fixed bitmap of 1,024 bits: an fd numbered 1,024 or more does not
//! fit, whatever `ulimit -n` says. C's `FD_SET` does not check, and writes past the set (memory
//! corruption; see [`sys::FdSet`]). Here the set refuses such an fd, and a connection that gets
//! one is closed at once (its client reads end of stream, or a reset if it had sent data) with
//! one log line for the whole run, not one per connection; the server keeps serving the rest.
//! `accept` returns the lowest free fd number, so this happens only when fds 0 to 1,023 are all
//! in use: in a process that holds little else, at about a thousand connections at once. A
//! listener past `FD_SETSIZE` is an error at start.
//!
//! The seed's claims. "select is not very efficient": that is the O(n) above, and it grows with
//! the connections, idle ones included; at ten connections it is nothing. "A select (or epoll)
//! server is not necessarily faster than threads with blocking I/O at low connection counts,
//! and may have more latency": true by construction, since a message costs `select`, `read` and
//! `write` where a blocking thread needs `read` and `write`, with the same one wakeup; the
//! advantage is many connections on one thread, not speed per connection. `echo-lab lab
//! --models select,threads,poll` puts both ends side by side (pingpong-1, pingpong-1000).
//! "select does not allow more than one thread to wait on the same descriptor set": true of a
//! set in memory, since the kernel overwrites it with the result (each caller needs its own
//! copy), but nothing forbids several threads to `select` on copies of the same fds: then the
//! kernel has no shared object, every thread joins every socket's wait queue, all of them wake
//! for the same event, and they must agree among themselves who reads. epoll's interest list is
//! a kernel object several threads can wait on, with `EPOLLEXCLUSIVE` or `EPOLLONESHOT` to hand
//! each event to one of them.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use super::nonblocking::{AcceptGate, Conn, Step};
use super::sys::{self, FdSet, FD_SETSIZE};
use super::trace::Event;

/// Serves `listener` forever with a `select(2)` loop on this thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    let listen_fd = listener.as_raw_fd();
    if !FdSet::fits(listen_fd) {
        return Err(io::Error::other(format!(
            "the listener is fd {listen_fd}, past select(2)'s FD_SETSIZE ({FD_SETSIZE})"
        )));
    }
    listener.set_nonblocking(true)?;
    let mut gate = AcceptGate::new();
    let mut conns: Vec<Conn> = Vec::new();
    let (mut read, mut write) = (FdSet::new(), FdSet::new());
    let mut warned = false;
    loop {
        let paused = gate.paused_for(Instant::now());
        fill_sets(&mut read, &mut write, paused.is_none().then_some(listen_fd), &conns);
        executor::trace_step!(Event::Select {
            nfds: read.end().max(write.end()),
            reads: read.count(),
            writes: write.count()
        });
        // While accepts are paused, wake up when they may resume.
        let ready = sys::select(&mut read, &mut write, paused)?;
        executor::trace_step!(Event::SelectReturned { ready });
        conns.retain_mut(|conn| {
            let ready = read.contains(conn.fd()) || write.contains(conn.fd());
            !ready || matches!(conn.step(), Ok(Step::Idle | Step::Progress))
        });
        if read.contains(listen_fd) {
            let old = conns.len();
            gate.accept_all(&listener, &mut conns)?;
            refuse_unselectable(&mut conns, old, &mut warned);
        }
    }
}

/// Rebuilds both sets: the listener's read bit (`None` while accepts are paused), then each
/// connection's read bit, or its write bit while it has bytes to send. Every connection's fd
/// fits: [`refuse_unselectable`] closed the others.
fn fill_sets(read: &mut FdSet, write: &mut FdSet, listener: Option<RawFd>, conns: &[Conn]) {
    read.clear();
    write.clear();
    if let Some(fd) = listener {
        read.insert(fd);
    }
    for conn in conns {
        let set = if conn.has_pending() { &mut *write } else { &mut *read };
        let fitted = set.insert(conn.fd());
        debug_assert!(fitted, "a connection past FD_SETSIZE was kept");
    }
}

/// Closes the connections accepted into `conns[new..]` whose fd cannot go in a set, and says so
/// once per run.
fn refuse_unselectable(conns: &mut Vec<Conn>, new: usize, warned: &mut bool) {
    let mut i = new;
    while i < conns.len() {
        let fd = conns[i].fd();
        if FdSet::fits(fd) {
            i += 1;
            continue;
        }
        drop(conns.swap_remove(i)); // closes it
        if !*warned {
            *warned = true;
            eprintln!(
                "echo (select): a connection got fd {fd}, past select(2)'s FD_SETSIZE ({FD_SETSIZE}): closed; \
                 every such connection is closed (said once), the others are served"
            );
        }
    }
}
