//! The readiness limit: a hand-written, edge-triggered mio echo loop (`serve --runtime mio`).
//!
//! No tasks, no wakers, no futures: one `Poll`, a slab of connections, and for each readiness
//! event the syscalls an echo needs and nothing else. A runtime on epoll cannot do less work
//! per message, so its user CPU per echo is the floor the reactor is measured against (the
//! kernel's share is the same for both). It follows the same protocol as the reactor: every
//! socket registered once, for both directions, edge-triggered; a read shorter than the buffer
//! proves the socket drained (no `EAGAIN` round trip); bytes that do not fit in the send
//! buffer are kept, and the connection stops reading until they are out (backpressure).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// The read size (tokio's baseline reads 4 KiB too); one scratch buffer for every connection.
const READ_SIZE: usize = 4096;

struct Conn {
    stream: TcpStream,
    /// Received but not yet sent (the send buffer was full); reading waits until it is empty.
    unsent: Vec<u8>,
    /// The peer closed its side: once `unsent` is out, shut ours down and close.
    eof: bool,
}

/// Serves `listener` until the process is signalled.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut scratch = vec![0u8; READ_SIZE];
    // After an accept error (EMFILE, say) the listener's edge is spent: retry on a timer.
    let mut retry_accept = false;
    loop {
        let timeout = retry_accept.then_some(Duration::from_millis(10));
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if retry_accept || events.iter().any(|e| e.token() == LISTENER) {
            retry_accept = accept_all(&listener, &poll, &mut conns);
        }
        for event in events.iter() {
            let Token(key) = event.token();
            if event.token() == LISTENER {
                continue;
            }
            let Some(conn) = conns.get_mut(key) else { continue };
            if !drive(conn, &mut scratch) {
                let conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut { conn.stream });
            }
        }
    }
}

/// Accepts until `WouldBlock`; true if an error means trying again later.
fn accept_all(listener: &mio::net::TcpListener, poll: &Poll, conns: &mut Slab<Conn>) -> bool {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll.registry().register(&mut stream, Token(entry.key()), interest).is_ok() {
                    entry.insert(Conn { stream, unsent: Vec::new(), eof: false });
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
            Err(e) => {
                eprintln!("echo (mio): accept: {e}");
                return true;
            }
        }
    }
}

/// Does everything a readiness event allows: flush what is unsent, then read and echo until
/// the socket is drained (a short read) or the send buffer is full. False when the connection
/// is over.
fn drive(conn: &mut Conn, scratch: &mut [u8]) -> bool {
    loop {
        while !conn.unsent.is_empty() {
            match conn.stream.write(&conn.unsent) {
                Ok(n) => drop(conn.unsent.drain(..n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true, // wait for writable
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if conn.eof {
            let _ = conn.stream.shutdown(Shutdown::Write);
            return false;
        }
        let n = match conn.stream.read(scratch) {
            Ok(0) => {
                conn.eof = true;
                continue;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let mut sent = 0;
        while sent < n {
            match conn.stream.write(&scratch[sent..n]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        conn.unsent.extend_from_slice(&scratch[sent..n]);
        if n < scratch.len() && conn.unsent.is_empty() {
            // Drained: the next bytes bring a new edge.
            return true;
        }
    }
}
