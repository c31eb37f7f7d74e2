//! I/O multiplexing with `poll(2)` (the seed's 异步阻塞 I/O --- Reactor 模式, shown there with
//! select): one thread, non-blocking sockets, and a loop that blocks in one `poll` over all of
//! them, then does only the accepts, reads and writes it reported ready. It is [`super::nonblocking`]
//! plus a way to wait. Interest follows each connection's state: `POLLIN` when it has no unsent
//! bytes, `POLLOUT` (and not `POLLIN`: the backpressure) when it has. The listener's `POLLIN` is
//! dropped while accepts are paused for lack of fds; level-triggered, it would wake poll at once.
//!
//! Cost. Idle, the thread sleeps in the kernel and uses no CPU. A message costs one syscall more
//! than blocking I/O (poll, then read and write), as the seed says of select. But each call is
//! O(n) in the connections, not in the ready ones: the whole pollfd array is copied into the
//! kernel, every socket is checked and its wait queue joined and left, the array is copied back,
//! and user space scans it for results (and here rebuilds it each loop, also O(n)). epoll keeps
//! the interest list in the kernel, changed by `epoll_ctl` only when interest changes, and a
//! socket's wakeup puts it on a ready list, so `epoll_wait` costs O(ready). Memory: one 16 KiB
//! buffer per connection, plus 8 bytes of pollfd.
//!
//! The seed is right that the gain over blocking threads is many connections per thread, not
//! speed per connection, and that select/poll scale badly with many mostly idle connections
//! (poll only drops select's FD_SETSIZE limit and bitmaps). It is wrong that epoll uses mmap to
//! share the kernel's socket buffers with user space: epoll shares no buffers; it only keeps the
//! interest set in the kernel and reports readiness. The data is still copied by read and write,
//! exactly as after poll or select.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::nonblocking::{AcceptGate, Conn, Step};
use super::sys;

/// Serves `listener` forever with a `poll(2)` loop on this thread.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut gate = AcceptGate::new();
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        let paused = gate.paused_for(Instant::now());
        fill_pollfds(&mut fds, &listener, paused.is_none(), &conns);
        // While accepts are paused, wake up when they may resume.
        sys::poll(&mut fds, paused)?;
        step_ready(&fds[1..], &mut conns);
        if fds[0].revents != 0 {
            gate.accept_all(&listener, &mut conns)?;
        }
    }
}

/// Rebuilds `fds`: the listener first (with no events while accepts are paused), then one
/// entry per connection, in `conns` order.
fn fill_pollfds(fds: &mut Vec<libc::pollfd>, listener: &TcpListener, accepting: bool, conns: &[Conn]) {
    fds.clear();
    let listen_events = if accepting { libc::POLLIN } else { 0 };
    fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: listen_events, revents: 0 });
    for conn in conns {
        let events = if conn.has_pending() { libc::POLLOUT } else { libc::POLLIN };
        fds.push(libc::pollfd { fd: conn.fd(), events, revents: 0 });
    }
}

/// Steps each connection whose entry in `ready` (parallel to `conns`) has any event, including
/// `POLLERR`/`POLLHUP`, which the next read or write then reports; drops the finished ones.
fn step_ready(ready: &[libc::pollfd], conns: &mut Vec<Conn>) {
    let mut revents = ready.iter().map(|p| p.revents);
    conns.retain_mut(|conn| {
        let is_ready = revents.next().is_some_and(|r| r != 0);
        !is_ready || matches!(conn.step(), Ok(Step::Idle | Step::Progress))
    });
}
