//! What a stream's futures-io reads keep between polls (see `compat`): the bytes received and
//! not handed out yet, and the receive in flight. A leaf of `net`, so that the stream can hold
//! it and `compat` work on it without the two importing each other.

use std::fmt;

use crate::buf::{IoBuf, ProvidedBuf};
use crate::driver::op::Op;
use crate::waiters::Ticket;

/// What futures-io reads keep between polls (see the module docs), in the stream.
#[derive(Default)]
pub(crate) struct ReadState {
    /// Bytes received and not handed out yet: `held[at..]`.
    pub(super) held: Option<ProvidedBuf>,
    pub(super) at: usize,
    /// The end of stream was received: every later read returns 0 without asking the kernel.
    pub(super) ended: bool,
    /// The stream's place in the queue for a ring buffer, or for room in the memory budget
    /// (`read_provided` keeps it in its future; here there is no future to keep it in).
    pub(super) ticket: Ticket,
    /// The receive in flight, where the stream reads into a buffer of its own (aio).
    pub(super) read: Option<Op<Vec<u8>>>,
}

impl fmt::Debug for ReadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadState")
            .field("unread", &self.unread().len())
            .field("ended", &self.ended)
            .field("reading", &self.read.is_some())
            .finish()
    }
}

impl ReadState {
    /// The bytes received and not handed out yet.
    pub(super) fn unread(&self) -> &[u8] {
        self.held.as_deref().map_or(&[], |held| &held[self.at.min(held.len())..])
    }

    /// `n` of the unread bytes were handed out; a buffer whose bytes are all out goes back.
    pub(super) fn consume(&mut self, n: usize) {
        self.at += n;
        if self.held.as_ref().is_some_and(|held| self.at >= held.len()) {
            (self.held, self.at) = (None, 0);
        }
    }

    /// Copies the unread bytes out of a ring buffer into memory of their own, and gives the
    /// ring buffer back to the other connections.
    pub(super) fn detach(&mut self) {
        if self.held.as_ref().is_some_and(IoBuf::is_shared) {
            let rest = self.unread().to_vec();
            (self.held, self.at) = (Some(ProvidedBuf::owned(rest)), 0);
        }
    }
}
