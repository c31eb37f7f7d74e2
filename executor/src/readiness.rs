//! Readiness as edge-triggered epoll reports it, and the protocol that keeps it right: what the
//! reactor's driver and the proactor's epoll backend both follow.
//!
//! A socket is registered once for [`EPOLL_SOCKET_EVENTS`](crate::sys::EPOLL_SOCKET_EVENTS).
//! With `EPOLLET` the kernel reports a transition to ready once and then stays silent until the
//! next transition (or new arrival), so readiness is state the program keeps, in a byte of bits:
//!
//! 1. an event *sets* bits ([`readiness_of`]); it never clears them;
//! 2. an operation that finds its direction ready ([`Direction::mask`]) just does the syscall;
//! 3. only when the syscall says `EAGAIN` is the direction's readiness cleared, and the
//!    operation then waits for the next edge. A transfer shorter than asked proves the same
//!    without the extra syscall (the receive queue is empty, or the send buffer full), and also
//!    clears it: that shortcut saves the `read` that would return `EAGAIN` after every message.
//!    One exception: a TCP read stops short at an urgent-data mark (`MSG_OOB`) with more data
//!    behind it, so once the socket reports urgent data (`EPOLLPRI`) short reads no longer clear
//!    anything until a read gets `EAGAIN` ([`exhaust`]).
//!
//! Forgetting step 3 busy-loops; clearing at the wrong time hangs forever, because no further
//! edge will come for data that is already waiting. The peer's half-close and a hang-up are
//! final: their bits are never cleared, so reads (and writes) keep being tried and return end
//! of stream (or the error).

/// Input is waiting (`EPOLLIN`).
pub const READABLE: u8 = 1 << 0;
/// The send buffer has room (`EPOLLOUT`).
pub const WRITABLE: u8 = 1 << 1;
/// The peer shut down its write side (`EPOLLRDHUP`) or the connection hung up (`EPOLLHUP`):
/// reads return 0 from now on. Never cleared.
pub const READ_CLOSED: u8 = 1 << 2;
/// The connection hung up: writes fail from now on. Never cleared.
pub const WRITE_CLOSED: u8 = 1 << 3;
/// `EPOLLERR`: the next syscall returns the socket's error. Cleared by `EAGAIN` like the
/// direction bits: `EPOLLERR` also means "the error queue is not empty" (timestamps,
/// zero-copy notifications), which reads and writes do not consume.
pub const ERROR: u8 = 1 << 4;
/// `EPOLLPRI`: urgent (out-of-band) data arrived. Not a reason to read, but it disables the
/// short-read shortcut until a read gets `EAGAIN`.
pub const URGENT: u8 = 1 << 5;

/// Which half of a socket an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Reads, accepts.
    Read,
    /// Writes, connects.
    Write,
}

impl Direction {
    /// The bits that make an operation in this direction worth trying.
    #[inline]
    pub fn mask(self) -> u8 {
        match self {
            Direction::Read => READABLE | READ_CLOSED | ERROR,
            Direction::Write => WRITABLE | WRITE_CLOSED | ERROR,
        }
    }

    /// The bits an `EAGAIN` in this direction clears (the closed bits are final).
    #[inline]
    pub fn cleared_by_eagain(self) -> u8 {
        match self {
            Direction::Read => READABLE | ERROR | URGENT,
            Direction::Write => WRITABLE | ERROR,
        }
    }
}

/// Why an operation gave up the readiness it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// The syscall said `EAGAIN`.
    WouldBlock,
    /// The syscall transferred less than asked.
    Short,
}

/// The bits an operation in `direction` that exhausted readiness (`why`) clears from
/// `readiness` (0 when it proves nothing: a short read while urgent data is pending).
#[inline]
pub fn exhaust(readiness: u8, direction: Direction, why: Exhausted) -> u8 {
    match (why, direction) {
        (Exhausted::WouldBlock, _) => direction.cleared_by_eagain(),
        (Exhausted::Short, Direction::Read) if readiness & URGENT != 0 => 0,
        (Exhausted::Short, Direction::Read) => READABLE,
        (Exhausted::Short, Direction::Write) => WRITABLE,
    }
}

/// Translates epoll's event bits into readiness bits.
///
/// One table lookup for the five low event bits (computed at compile time by `translate`)
/// and one test for `EPOLLRDHUP`: it runs once per event, on the path of every message.
#[inline]
pub fn readiness_of(events: u32) -> u8 {
    const LOW: u32 = 0x1f;
    const _: () = assert!(
        (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == LOW,
        "the five event bits the table covers are the low five"
    );
    static TABLE: [u8; LOW as usize + 1] = {
        let mut table = [0; LOW as usize + 1];
        let mut events = 0;
        while events <= LOW {
            table[events as usize] = translate(events);
            events += 1;
        }
        table
    };
    let ready = TABLE[(events & LOW) as usize];
    if events & libc::EPOLLRDHUP as u32 != 0 {
        ready | READ_CLOSED
    } else {
        ready
    }
}

/// The translation itself, bit by bit.
const fn translate(events: u32) -> u8 {
    let mut ready = 0;
    if events & libc::EPOLLIN as u32 != 0 {
        ready |= READABLE;
    }
    if events & libc::EPOLLPRI as u32 != 0 {
        ready |= URGENT;
    }
    if events & libc::EPOLLOUT as u32 != 0 {
        ready |= WRITABLE;
    }
    if events & libc::EPOLLRDHUP as u32 != 0 {
        ready |= READ_CLOSED;
    }
    if events & libc::EPOLLHUP as u32 != 0 {
        ready |= READ_CLOSED | WRITE_CLOSED;
    }
    if events & libc::EPOLLERR as u32 != 0 {
        ready |= ERROR;
    }
    ready
}

/// The readiness bits in words, for the trace.
pub fn words(ready: u8) -> String {
    let words: Vec<&str> = [
        (READABLE, "readable"),
        (WRITABLE, "writable"),
        (READ_CLOSED, "peer closed its side"),
        (WRITE_CLOSED, "write side closed"),
        (ERROR, "error"),
        (URGENT, "urgent data"),
    ]
    .into_iter()
    .filter(|(bit, _)| ready & bit != 0)
    .map(|(_, word)| word)
    .collect();
    words.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoll_bits_map_to_readiness() {
        assert_eq!(readiness_of(libc::EPOLLIN as u32), READABLE);
        assert_eq!(readiness_of(libc::EPOLLOUT as u32), WRITABLE);
        assert_eq!(readiness_of((libc::EPOLLIN | libc::EPOLLRDHUP) as u32), READABLE | READ_CLOSED);
        assert_eq!(readiness_of(libc::EPOLLHUP as u32), READ_CLOSED | WRITE_CLOSED);
        assert_eq!(readiness_of(libc::EPOLLERR as u32) & Direction::Write.mask(), ERROR);
    }

    #[test]
    fn the_table_translates_every_combination_of_event_bits_as_the_bits_do() {
        let bits =
            [libc::EPOLLIN, libc::EPOLLPRI, libc::EPOLLOUT, libc::EPOLLERR, libc::EPOLLHUP, libc::EPOLLRDHUP];
        for combination in 0..1u32 << bits.len() {
            let events = (0..bits.len())
                .filter(|i| combination & 1 << i != 0)
                .fold(libc::EPOLLET as u32, |events, i| events | bits[i] as u32);
            assert_eq!(readiness_of(events), translate(events), "events {events:#x}");
        }
    }

    #[test]
    fn a_short_read_clears_nothing_while_urgent_data_is_pending() {
        assert_eq!(exhaust(READABLE, Direction::Read, Exhausted::Short), READABLE);
        assert_eq!(exhaust(READABLE | URGENT, Direction::Read, Exhausted::Short), 0);
        assert_eq!(exhaust(READABLE | URGENT, Direction::Read, Exhausted::WouldBlock) & URGENT, URGENT);
        assert_eq!(exhaust(READ_CLOSED, Direction::Read, Exhausted::WouldBlock) & READ_CLOSED, 0);
    }
}
