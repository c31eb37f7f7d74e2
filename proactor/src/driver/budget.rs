//! Backpressure: how many bytes the runtime holds for each connection and in all, and how much
//! a stream may receive next.
//!
//! # Why a completion runtime must build it
//!
//! A readiness runtime gets backpressure from the kernel for free: it reads only when a task
//! asks, so a peer whose echoes nobody reads fills the kernel's socket buffers, and then its
//! own sends block. Completion does not: a multishot receive keeps filling buffers whether or
//! not the task wants them, and a send behind lets the task move on before its bytes are out.
//! The buffer is committed before the data arrives, so the runtime, not the kernel, must say
//! "enough", or any client that stops reading decides how much memory the server uses.
//!
//! # What counts
//!
//! A stream *holds* the bytes its multishot receive brought that its task has not taken yet
//! (in ring buffers, or copied out of them: see `spill`), and the bytes of its send behind in
//! flight (a ring piece, a copy of one, or the caller's `Vec`). Bytes the task has taken are
//! the task's, as in a readiness runtime. The driver keeps the sum over all streams, and its
//! peak.
//!
//! # The rule
//!
//! A stream's multishot receive is armed with an *allowance*: the most bytes it may bring
//! before it ends. On Linux 6.17 and later the kernel itself stops it there (the SQE's
//! `optlen`, with each completion capped by its `len` too, so that the last one passes the
//! limit by less than the allowance). Elsewhere the driver cancels it once the allowance is
//! used up, and what the kernel already took into the ring in that turn still arrives: up to
//! the socket's receive queue per stream.
//!
//! The allowance is reserved in the memory budget when the receive is armed (so that a
//! thousand streams armed at once cannot each be promised the same room), turns into held
//! bytes as they arrive, and what is left of it is given back when the receive ends. It is
//! the smaller of what is left of the connection's budget (its send behind counts) and what
//! is left of the memory budget (all streams' bytes and promises count), and:
//!
//! - a stream that holds nothing always gets at least [`MIN_ALLOWANCE`]: quiet and new
//!   connections are served whatever the others hold (each stream served this way can add
//!   about twice that past the memory budget);
//! - so does a stream whose own send behind leaves it less than that of its connection's
//!   budget: it never waits for its own send to be over, because that send may be waiting for
//!   the peer, and the peer for this stream to read (an echo peer whose replies fill this
//!   side's window, with a task that reads while it sends: the two would wait for each other
//!   forever). Its connection then holds at most its budget and that least. The same holds
//!   where its send behind leaves less than that of the memory budget itself (a budget
//!   smaller than a send and a read's worth): the room it would wait for could never come;
//! - a stream that holds something when less than [`MIN_ALLOWANCE`] is left of the memory
//!   budget waits, first come first served, until there is room (or until its own send behind
//!   is over: it then holds nothing). So under pressure the streams that hold something wait,
//!   and one whose peer reads again goes on as soon as its send is out.
//!
//! An armed receive keeps its allowance until it ends: a connection that goes quiet after a
//! burst keeps its promise of room until its next bytes use it up. Under pressure new
//! receives get the least, so what quiet connections keep is bounded by the budget too.
//!
//! A task re-arms its receive only when it reads. A stream whose task is stuck (in a send to a
//! peer that does not read) therefore receives nothing past its allowance: the peer's bytes
//! wait in the kernel's socket buffers, and TCP's flow control stops the peer, exactly as with
//! readiness. Receives that are asked for one at a time (`read`, and `read_provided` on the
//! epoll and aio backends) hold nothing the task did not ask for; only their sends behind
//! count.

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::behind::BehindKey;
use super::Driver;
use crate::stats;
use crate::waiters::{Ticket, WaitQueue};

/// The least a stream that holds nothing may always receive: enough for a request or a line,
/// and a read's worth as tokio's idiomatic loop takes it (16 KiB), small enough that many
/// connections served under pressure add little. With 4 KiB, 1,000 connections echoing 64 KiB
/// messages under the default memory budget moved them in small steps, at about twice the CPU
/// per echo (`scripts/compare-builds.sh` at `--conns 1000 --size 65536`; CHANGELOG.md, round 3).
pub(crate) const MIN_ALLOWANCE: u64 = 16 * 1024;

/// The memory budget of one driver (see the module docs).
#[derive(Debug)]
pub(crate) struct Budget {
    /// The most one connection holds.
    per_connection: u64,
    /// The most all connections hold together (past it, only streams that hold nothing get
    /// their [`MIN_ALLOWANCE`]).
    total: u64,
    held: Cell<u64>,
    /// Allowances of the receives armed now that their bytes have not used yet.
    reserved: Cell<u64>,
    peak: Cell<u64>,
    /// Streams waiting for room in `total`.
    waiters: Rc<WaitQueue>,
}

/// Why a stream may not receive now: the memory budget is taken.
struct Room;

impl Budget {
    pub(crate) fn new(per_connection: u64, total: u64) -> Budget {
        Budget {
            per_connection,
            total,
            held: Cell::new(0),
            reserved: Cell::new(0),
            peak: Cell::new(0),
            waiters: Rc::default(),
        }
    }

    /// A receive was armed with `allowance`.
    pub(crate) fn reserve(&self, allowance: u64) {
        self.reserved.set(self.reserved.get() + allowance);
    }

    /// A receive brought `n` bytes, `within` of them inside its allowance (reserved already).
    pub(crate) fn receive(&self, n: u64, within: u64) {
        self.reserved.set(self.reserved.get().saturating_sub(within));
        self.hold(n);
    }

    /// A receive ended with `unused` of its allowance left.
    pub(crate) fn unreserve(&self, unused: u64) {
        if unused > 0 {
            self.reserved.set(self.reserved.get().saturating_sub(unused));
            self.wake();
        }
    }

    /// `n` more bytes are held for a stream.
    pub(crate) fn hold(&self, n: u64) {
        let held = self.held.get() + n;
        self.held.set(held);
        if held > self.peak.get() {
            self.peak.set(held);
        }
    }

    /// `n` bytes held for a stream are not any more; wakes as many waiting streams as the
    /// room now left could serve.
    pub(crate) fn release(&self, n: u64) {
        self.held.set(self.held.get().saturating_sub(n));
        self.wake();
    }

    /// What is neither held nor promised.
    fn room(&self) -> u64 {
        self.total.saturating_sub(self.held.get() + self.reserved.get())
    }

    /// Wakes as many waiting streams as the room now left could serve.
    fn wake(&self) {
        let mut room = self.room() / MIN_ALLOWANCE;
        while room > 0 && self.waiters.wake_one() {
            room -= 1;
        }
    }

    /// Bytes held for all streams now, and at most so far.
    pub(crate) fn held(&self) -> (u64, u64) {
        (self.held.get(), self.peak.get())
    }

    /// Streams waiting for room in the memory budget.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// The allowance of a stream that holds `own` bytes (see the module docs).
    fn allowance(&self, own: u64) -> Result<u32, Room> {
        let least = MIN_ALLOWANCE.min(self.per_connection);
        let mine = self.per_connection.saturating_sub(own);
        let allowance = mine.min(self.room());
        match allowance {
            allowance if allowance >= least => Ok(allowance.min(u64::from(u32::MAX)) as u32),
            // Nothing held, or its own send behind takes its connection's budget, or leaves
            // less than the least of the memory budget (room it could wait for never comes).
            _ if own == 0 || mine < least || self.total.saturating_sub(own) < least => Ok(least as u32),
            _ => Err(Room),
        }
    }
}

impl Driver {
    /// How many bytes the stream (`key` and `fd` name its sends behind) may receive next:
    /// ready with its allowance, or waiting (`ticket` is its place in the queue for room in
    /// the memory budget) until it may receive. An error of its send behind comes out here.
    pub(crate) fn poll_allowance(
        &self,
        key: &BehindKey,
        fd: RawFd,
        ticket: &mut Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<u32>> {
        loop {
            let waited = ticket.waits_in(&self.budget.waiters);
            match self.budget.allowance(self.behind_held(key, fd)) {
                Ok(allowance) => {
                    ticket.leave();
                    self.budget.reserve(u64::from(allowance));
                    return Poll::Ready(Ok(allowance));
                }
                Err(Room) => {
                    // It holds something: its send behind. Once that is over it holds nothing
                    // and may receive its least at once, whatever the room: be woken for that
                    // too, not only for room (which streams that hold more may keep taken).
                    match self.poll_behind(key, fd, cx) {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                    stats::trace_step!(crate::trace::Event::BudgetRoom { fd });
                    if !waited {
                        stats::bump(|c| &c.recv_paused);
                    }
                    ticket.wait(&self.budget.waiters, cx.waker());
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_gets_the_smaller_room_and_one_holding_nothing_always_gets_the_least() {
        let budget = Budget::new(64 << 10, 256 << 10);
        assert!(matches!(budget.allowance(0), Ok(a) if a == 64 << 10));
        assert!(matches!(budget.allowance(16 << 10), Ok(a) if a == 48 << 10));
        // Its own send behind takes its budget: it still gets the least (see the module docs).
        assert!(matches!(budget.allowance(62 << 10), Ok(a) if u64::from(a) == MIN_ALLOWANCE));
        // So does one whose send behind leaves less than the least of the memory budget.
        let small = Budget::new(64 << 10, 12 << 10);
        small.hold(8 << 10);
        assert!(matches!(small.allowance(8 << 10), Ok(a) if u64::from(a) == MIN_ALLOWANCE));
        budget.hold(254 << 10);
        assert!(matches!(budget.allowance(0), Ok(a) if u64::from(a) == MIN_ALLOWANCE));
        assert!(matches!(budget.allowance(1), Err(Room)));
        budget.release(254 << 10);
        assert_eq!(budget.held(), (0, 254 << 10));
        // Allowances promised count until their bytes come or the receive ends.
        budget.reserve(200 << 10);
        assert!(matches!(budget.allowance(0), Ok(a) if a == 56 << 10));
        budget.receive(10 << 10, 10 << 10);
        assert_eq!(budget.held().0, 10 << 10);
        assert!(matches!(budget.allowance(0), Ok(a) if a == 56 << 10));
        budget.unreserve(190 << 10);
        assert!(matches!(budget.allowance(0), Ok(a) if a == 64 << 10));
    }
}
