//! What the driver keeps for each operation: its slot's state, the completions a multishot
//! operation has queued, and the record of a send behind.

use std::os::fd::RawFd;
use std::task::Waker;

use crate::backend::Completion;

/// The completions a multishot operation has queued for its future, oldest first.
///
/// The first one is kept inline: a stream whose task keeps up (the common case, and an idle
/// one) never has more than one waiting, so it needs no allocation at all, and no buffer is
/// left allocated in every idle connection's slot after its first message.
#[derive(Default)]
pub(crate) struct Queue {
    first: Option<Completion>,
    /// Those after `first` (none while `first` is `None`); boxed, so that the usual queue of
    /// at most one costs 8 bytes here, in every slot, instead of a `Vec`'s 24.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Completion>>>,
}

impl Queue {
    pub(crate) fn push(&mut self, completion: Completion) {
        if self.first.is_none() {
            self.first = Some(completion);
        } else {
            self.rest.get_or_insert_with(Box::default).push(completion);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Completion> {
        let first = self.first.take()?;
        if let Some(rest) = self.rest.as_mut().filter(|rest| !rest.is_empty()) {
            self.first = Some(rest.remove(0));
        }
        Some(first)
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Completion> {
        self.first.iter().chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Completion> {
        self.first.iter_mut().chain(self.rest.iter_mut().flat_map(|rest| rest.iter_mut()))
    }

    pub(crate) fn into_vec(self) -> Vec<Completion> {
        self.first.into_iter().chain(self.rest.into_iter().flat_map(|rest| *rest)).collect()
    }
}

/// A dropped operation's resources and orphan handler, run with its late completion.
pub(crate) type Finish = Box<dyn FnOnce(Completion)>;

/// Who keeps the resources of operations nobody waits for, each under a key of its own (see
/// [`Lifecycle::Detached`]): so that such an operation costs no allocation (a [`Finish`]
/// box) of its own. A UDP socket's sends behind are kept this way.
pub(crate) trait DetachedOwner {
    /// The operation under `key` is over: drop its resources, note its result.
    fn finish(&self, key: usize, completion: Completion);
}

/// The state of one operation slot.
pub(crate) enum Lifecycle {
    /// With the backend; the future waits (its waker, once it has been polled).
    Waiting(Option<Waker>),
    /// The completion arrived; the future has not looked yet.
    Completed(Completion),
    /// The future was dropped before the completion. What the kernel may still touch lives
    /// here until the completion arrives; `result_is_fd` says whether a successful result is
    /// an fd to close.
    ///
    /// `finish` owns the resources (and calls the orphan handler, if the operation has one);
    /// `handled` says the handler deals with the completion, otherwise it is discarded (its fd
    /// closed, its buffer given back).
    Orphaned { finish: Option<Finish>, handled: bool, result_is_fd: bool },
    /// An operation nobody waits for whose resources `owner` keeps under `key` (see
    /// [`DetachedOwner`]), told of its last completion after the turn. As `Orphaned` with
    /// `handled`, without a box per operation.
    Detached { owner: std::rc::Rc<dyn DetachedOwner>, key: usize },
    /// A multishot operation: every completion is queued for the future, until one comes
    /// without `more`. (A [`Queue`]: it is almost always empty or holds one, which it keeps
    /// inline.)
    ///
    /// `max_queued` (0: no bound) makes the driver cancel the operation once that many
    /// completions wait (`stopping` then records that it did).
    ///
    /// `stream`: a stream's receive into the ring. Its bytes are held for the connection until
    /// the task takes them (see `budget`); `remaining` is what is left of its allowance, past
    /// which the driver stops it; and a completion that arrives while nobody waits for it may
    /// have its bytes copied into the driver's spill and its ring buffer given back (see
    /// `spill`).
    Multishot {
        queue: Queue,
        waker: Option<Waker>,
        remaining: u32,
        max_queued: u8,
        ended: bool,
        stopping: bool,
        stream: bool,
    },
    /// A send the driver finishes by itself, and wakes nobody for unless it fails or a call of
    /// its stream waits for it (see `behind`): the index of its [`Behind`] record in
    /// `Driver::behinds`, and its stream's fd (the record's too: kept here as well, so that a
    /// stream asking after its send, a few times per message, reads one slot and no record).
    Behind { record: usize, fd: RawFd },
    /// A send behind that failed: the error (`-errno`, 0 for a send that took nothing) waits
    /// for the stream's next call. No operation is in flight.
    BehindFailed { fd: RawFd, result: i32 },
}

impl Lifecycle {
    /// A multishot operation's slot, just started.
    pub(crate) fn multishot() -> Lifecycle {
        Lifecycle::Multishot {
            queue: Queue::default(),
            waker: None,
            remaining: 0,
            max_queued: 0,
            ended: false,
            stopping: false,
            stream: false,
        }
    }
}

/// A send the driver finishes by itself: the record a [`Lifecycle::Behind`] slot names.
pub(crate) struct Behind {
    /// The bytes; the kernel reads `bytes[sent..]` while a `SEND` is in flight, so they stay
    /// put (and a ring buffer stays out of the ring) until its completion. (A `Vec`'s heap
    /// memory does not move when the slab of records grows.)
    pub(crate) bytes: Bytes,
    /// How many bytes earlier `SEND`s of this one took (short sends the driver continued).
    pub(crate) sent: usize,
    pub(crate) fd: RawFd,
    pub(crate) owner: Owner,
    /// A call of the stream (a second send, `flush`) waits for this send to be over: wake the
    /// task at the end, whatever it is.
    pub(crate) waited: bool,
    /// A try came back short or with `EAGAIN`: the peer's window is full, and the send may take
    /// a while.
    pub(crate) stalled: bool,
    /// The bytes it holds for its connection (see `budget`): its length when it was queued.
    pub(crate) held: usize,
}

/// Who hears of a send behind.
pub(crate) enum Owner {
    /// The stream is open: the task that queued the send is woken if it fails (so that a task
    /// waiting in `read_provided` sees the error at once) or if the record is `waited`.
    Stream(Waker),
    /// The stream was dropped: the driver owns the fd, and closes it once the send is over.
    /// `watch` is the slot of the receive that watches for data from the peer meanwhile (see
    /// `Driver::watch_dropped`), while it is in flight; `reset` says it saw some, so the send
    /// ends at its next completion, whatever it says, and the connection is reset.
    Dropped { watch: Option<usize>, reset: bool },
}

/// The bytes of a send behind.
///
/// Not a [`ProvidedBuf`](crate::ProvidedBuf), which carries its ring: this is 8 bytes
/// smaller. The driver's own ring is the ring; the bytes go back through
/// `Driver::release_bytes`.
pub(crate) enum Bytes {
    /// A piece of buffer `bid` of the driver's provided-buffer ring.
    Ring { bid: u16, offset: u32, len: u32 },
    /// Bytes of their own (a buffer of the spare pool, or the caller's `Vec`).
    Owned(Vec<u8>),
}

impl Bytes {
    pub(crate) fn len(&self) -> usize {
        match self {
            Bytes::Ring { len, .. } => *len as usize,
            Bytes::Owned(bytes) => bytes.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection has a slot (its multishot receive's), and every slot the room of the
    /// largest kind (a multishot operation's; a send behind keeps its record apart).
    #[test]
    fn an_operation_slot_stays_small() {
        assert!(std::mem::size_of::<Lifecycle>() <= 48, "{}", std::mem::size_of::<Lifecycle>());
    }
}
