//! The model of the kernel: sockets and their bytes, the fd table, the operations in flight,
//! the queues a completion takes on its way to the driver, the provided-buffer ring, and the
//! checks of what the driver promises, all in one value ([`Kernel`]) that only the runtime's
//! thread touches.
//!
//! # What is real and what is modelled
//!
//! Every fd is a real one: the listener and the connecting sockets the runtime made, and for
//! each accepted connection a placeholder socket this model opens with `socket(2)`, whose
//! number the real kernel picks (the lowest free one, so numbers are reused for real). A real
//! fd is only an identity here: the bytes, connections, windows and errors are the model's,
//! and nothing is ever sent through one. An fd is really closed when the model says the
//! kernel would close it (after the operations on it, in the mode's way).
//!
//! # One turn
//!
//! 1. (uring) The submission queue is handed over: requests start, cancels and closes act, in
//!    queue order.
//! 2. The kernel makes progress: every operation that can complete does, in the order the
//!    operations started (epoll and aio: only the first of each socket's queue or lane).
//! 3. Completions whose time has come move to the completion queue (past its size, to the
//!    overflow list, which drains first next turn).
//! 4. If nothing is there and the runtime may wait, virtual time jumps to the next thing that
//!    will happen (a delayed completion, a cancel that takes effect late) or to the timeout,
//!    and steps 2 and 3 run again. Nothing sleeps.
//! 5. The completions go to the driver, each checked against the ledger of operations.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use slab::Slab;

use super::config::{Mode, Rng, SimConfig, Site};
use crate::backend::io::{BufId, Completion, Request};
use crate::sys;

/// A socket of the model, named by a number that is never reused (unlike its fd's).
pub(super) type SockId = u64;

/// The most turns one run may take: past it, the run is stuck in a loop that never waits.
const MAX_TURNS: u64 = 200_000;
/// The most virtual time one run may take.
const MAX_TIME: Duration = Duration::from_secs(3_600);
/// Bytes of canary the model writes at the start of a receive's buffer (see `Canary`).
const CANARY: usize = 8;

/// What an operation is, as far as the model cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Accept,
    Connect,
    Recv,
    RecvPick,
    RecvMulti,
    Send,
    Other,
}

impl Kind {
    fn of(request: &Request) -> Kind {
        match request {
            Request::Accept { .. } => Kind::Accept,
            Request::Connect { .. } => Kind::Connect,
            Request::Recv { .. } => Kind::Recv,
            Request::RecvPick { .. } => Kind::RecvPick,
            Request::RecvMulti { .. } => Kind::RecvMulti,
            Request::Send { .. } => Kind::Send,
            _ => Kind::Other,
        }
    }

    /// The queue (epoll) or lane (aio) it waits in: 0 for reading, 1 for writing.
    fn direction(self, mode: Mode) -> u8 {
        match self {
            Kind::Send => 1,
            Kind::Connect if mode == Mode::Epoll => 1,
            _ => 0,
        }
    }
}

/// Where an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Pushed onto the submission queue, not submitted yet (uring).
    Queued,
    /// With the kernel.
    Active,
    /// Its last completion was made; it waits to be delivered.
    Ended,
}

/// What a cancel left behind on an operation that goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cancel {
    None,
    /// It takes effect at this virtual time (`EALREADY`, or a cancel that lost); until then
    /// the operation may complete for real.
    Late(Duration),
}

/// The bytes the model wrote at the start of a receive's buffer when the operation started.
/// The buffer is the kernel's until the operation ends, so nobody else may write there; a
/// buffer freed meanwhile (the test's allocator poisons freed memory) or reused by another
/// owner shows as a changed canary.
#[derive(Clone, Copy, Debug)]
struct Canary {
    at: *mut u8,
    len: usize,
    bytes: [u8; CANARY],
}

/// One operation the driver started and has not yet seen end: the ledger's entry.
#[derive(Debug)]
struct Op {
    seq: u64,
    request: Request,
    kind: Kind,
    sock: SockId,
    state: State,
    cancel: Cancel,
    canary: Option<Canary>,
    /// A send's bytes when it started: they must be the same when the kernel reads them.
    sum: u64,
    /// Bytes a multishot receive has brought (for its limit).
    brought: u32,
    /// Not before this virtual time (epoll: `EAGAIN` at readiness, wait for the next edge).
    not_before: Duration,
    /// The due time of its last completion, so that its completions keep their order.
    last_due: Duration,
}

/// A stream socket's state in the model.
#[derive(Debug, Default)]
struct Stream {
    /// The other end, while it exists.
    peer: Option<SockId>,
    /// Bytes that arrived and were not received yet.
    rx: VecDeque<u8>,
    /// The peer closed: end of stream once `rx` is empty.
    eof: bool,
    /// The connection was reset: receives fail with `ECONNRESET`.
    reset: bool,
    /// Sends fail with `EPIPE`.
    dead: bool,
    /// The most bytes `rx` holds.
    window: usize,
    /// The port this end pretends to have (for the peer address an accept reports).
    port: u16,
}

#[derive(Debug)]
enum SockKind {
    Listener {
        addr: SocketAddr,
        backlog: VecDeque<SockId>,
    },
    Stream(Stream),
    /// A socket the model cannot run (a UDP socket, say): operations on it fail.
    Unsupported,
}

#[derive(Debug)]
struct Sock {
    /// Its number while it is open.
    fd: Option<RawFd>,
    /// The inode of its open file (to tell that its number names it still).
    ino: u64,
    kind: SockKind,
    /// The driver asked to close it: nothing may start on it any more.
    close_queued: bool,
    /// Aio: the fd is held until the operations on it are over.
    closing: Option<OwnedFd>,
    /// Operations were started on it (its fd must then be closed through the backend).
    ops_ever: bool,
    /// Aio: shut down to end the operation a helper thread runs.
    shut: bool,
}

impl Sock {
    fn stream(&self) -> Option<&Stream> {
        match &self.kind {
            SockKind::Stream(stream) => Some(stream),
            _ => None,
        }
    }

    fn stream_mut(&mut self) -> Option<&mut Stream> {
        match &mut self.kind {
            SockKind::Stream(stream) => Some(stream),
            _ => None,
        }
    }
}

/// An entry of the submission queue (uring mode).
#[derive(Debug)]
enum Sqe {
    Start(usize),
    Cancel { index: usize, seq: u64, force: bool },
    Close(SockId, OwnedFd),
}

/// A completion the kernel made, with the virtual time it may be delivered at.
#[derive(Clone, Copy, Debug)]
pub(super) struct Made {
    due: Duration,
    pub(super) index: usize,
    seq: u64,
    pub(super) completion: Completion,
}

/// Where a buffer of the ring is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufState {
    /// In the ring, for the kernel to fill.
    InRing,
    /// Taken by a completion not delivered yet.
    Taken,
    /// Handed to the driver.
    Delivered,
}

/// The provided-buffer ring as the kernel sees it: the buffers the driver provided, in order.
#[derive(Debug, Default)]
struct Ring {
    fifo: VecDeque<(u16, *mut u8, u32)>,
    /// Incremental consumption: bytes already taken of the buffer at the head.
    head_filled: u32,
    state: Vec<Option<BufState>>,
}

/// One step of the run, hashed into the trace hash and kept (the last `steps_kept`) to print.
#[derive(Clone, Copy, Debug)]
pub(super) enum Event {
    Turn { now: Duration, wait: Option<Duration> },
    Start { index: usize, seq: u64, kind: u8, sock: SockId, len: u32 },
    Cancel { index: usize, seq: u64, force: bool },
    Close { sock: SockId },
    Made { index: usize, seq: u64, result: i32, more: bool },
    Delivered { index: usize, result: i32, more: bool, bid: Option<u16> },
    Fault(Site),
    Pick { queued: usize, at: usize },
    Provide { bid: u16 },
    Connected { client: SockId, server: SockId },
    Accepted { sock: SockId },
    Gone { sock: SockId },
}

impl Event {
    fn words(&self) -> [u64; 6] {
        match *self {
            Event::Turn { now, wait } => {
                [1, now.as_nanos() as u64, wait.map_or(u64::MAX, |w| w.as_nanos() as u64), 0, 0, 0]
            }
            Event::Start { index, seq, kind, sock, len } => {
                [2, index as u64, seq, u64::from(kind), sock, u64::from(len)]
            }
            Event::Cancel { index, seq, force } => [3, index as u64, seq, u64::from(force), 0, 0],
            Event::Close { sock } => [4, sock, 0, 0, 0, 0],
            Event::Made { index, seq, result, more } => {
                [5, index as u64, seq, result as u64, u64::from(more), 0]
            }
            Event::Delivered { index, result, more, bid } => {
                [6, index as u64, result as u64, u64::from(more), bid.map_or(u64::MAX, u64::from), 0]
            }
            Event::Fault(site) => [7, site as u64, 0, 0, 0, 0],
            Event::Pick { queued, at } => [8, queued as u64, at as u64, 0, 0, 0],
            Event::Provide { bid } => [9, u64::from(bid), 0, 0, 0, 0],
            Event::Connected { client, server } => [10, client, server, 0, 0, 0],
            Event::Accepted { sock } => [11, sock, 0, 0, 0, 0],
            Event::Gone { sock } => [12, sock, 0, 0, 0, 0],
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::Turn { now, wait } => write!(f, "turn at {now:?} (may wait {wait:?})"),
            Event::Start { index, seq, kind, sock, len } => {
                write!(f, "op #{seq} (slot {index}) starts: kind {kind} on socket {sock}, {len} bytes")
            }
            Event::Cancel { index, seq, force } => {
                write!(f, "cancel of op #{seq} (slot {index}), force {force}")
            }
            Event::Close { sock } => write!(f, "socket {sock} closed"),
            Event::Made { index, seq, result, more } => {
                write!(f, "op #{seq} (slot {index}) completes: {result}, more {more}")
            }
            Event::Delivered { index, result, more, bid } => {
                write!(f, "delivered to slot {index}: {result}, more {more}, buffer {bid:?}")
            }
            Event::Fault(site) => write!(f, "fault: {}", site.name()),
            Event::Pick { queued, at } => write!(f, "executor polls task {at} of {queued} queued"),
            Event::Provide { bid } => write!(f, "buffer {bid} provided"),
            Event::Connected { client, server } => write!(f, "socket {client} connected to {server}"),
            Event::Accepted { sock } => write!(f, "socket {sock} accepted"),
            Event::Gone { sock } => write!(f, "socket {sock} gone"),
        }
    }
}

/// The model. See the module docs.
pub(crate) struct Kernel {
    pub(crate) config: SimConfig,
    rng: Rng,
    faults_on: bool,
    fired: Vec<u64>,
    /// The real instant virtual time 0 stands for.
    origin: Instant,
    now: Duration,
    turns: u64,
    fds: BTreeMap<RawFd, SockId>,
    socks: BTreeMap<SockId, Sock>,
    next_sock: SockId,
    /// The ledger: every operation started and not yet seen to end, by the driver's slot.
    ops: BTreeMap<usize, Op>,
    next_seq: u64,
    sq: VecDeque<Sqe>,
    made: VecDeque<Made>,
    overflow: VecDeque<Made>,
    overflows: u64,
    /// The due time of the last completion that took a piece of the ring: the driver learns
    /// where each piece starts from the order they come in, so they keep that order.
    ring_due: Duration,
    ring: Option<Ring>,
    /// Buffers receives picked (epoll mode), until the driver takes them.
    picked: Slab<Vec<u8>>,
    /// Listeners that were closed: connecting to one is refused.
    refused: Vec<SocketAddr>,
    /// Sockets found closed behind the backend's back, to let go at the next probe (see
    /// `closed_behind`).
    unseen: Vec<SockId>,
    violations: Vec<String>,
    hash: u64,
    recent: VecDeque<Event>,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("seed", &self.config.seed)
            .field("mode", &self.config.mode)
            .field("now", &self.now)
            .field("ops", &self.ops.len())
            .finish_non_exhaustive()
    }
}

/// FNV-1a over 64-bit words: a hash of the run that is the same on every machine and replay.
fn fnv(mut hash: u64, words: &[u64]) -> u64 {
    for word in words {
        for byte in word.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// A checksum of `len` bytes at `at`.
///
/// # Safety
/// The bytes must be readable (an operation's buffer, which the kernel may read until the
/// operation ends).
unsafe fn checksum(at: *const u8, len: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    // SAFETY: the caller's guarantee.
    let bytes = unsafe { std::slice::from_raw_parts(at, len) };
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash: u64, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Kernel {
    pub(super) fn new(config: SimConfig) -> Kernel {
        Kernel {
            rng: Rng::new(config.seed),
            faults_on: true,
            fired: vec![0; Site::ALL.len()],
            origin: Instant::now(),
            now: Duration::ZERO,
            turns: 0,
            fds: BTreeMap::new(),
            socks: BTreeMap::new(),
            next_sock: 1,
            ops: BTreeMap::new(),
            next_seq: 1,
            sq: VecDeque::new(),
            made: VecDeque::new(),
            overflow: VecDeque::new(),
            overflows: 0,
            ring_due: Duration::ZERO,
            ring: None,
            picked: Slab::new(),
            refused: Vec::new(),
            unseen: Vec::new(),
            violations: Vec::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            recent: VecDeque::new(),
            config,
        }
    }

    // ------------------------------------------------------------------------------------------
    // the run: events, faults, time

    pub(super) fn note(&mut self, event: Event) {
        self.hash = fnv(self.hash, &event.words());
        if self.recent.len() >= self.config.steps_kept {
            self.recent.pop_front();
        }
        self.recent.push_back(event);
    }

    /// Whether fault `site` fires now.
    fn fault(&mut self, site: Site) -> bool {
        let rate = self.config.faults.rate(site);
        if !self.faults_on || rate == 0 || !self.rng.chance(rate) {
            return false;
        }
        self.fired[site as usize] += 1;
        self.note(Event::Fault(site));
        true
    }

    /// Whether fault `site` is on (for the sites that shape the kernel: the queues' sizes).
    fn site_on(&self, site: Site) -> bool {
        self.faults_on && self.config.faults.rate(site) > 0
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 100 {
            self.violations.push(format!("[{:?}, turn {}] {what}", self.now, self.turns));
        }
    }

    /// The virtual clock, as an instant.
    pub(super) fn instant(&self) -> Instant {
        self.origin + self.now
    }

    pub(crate) fn set_faults(&mut self, on: bool) {
        self.faults_on = on;
    }

    pub(crate) fn set_rate(&mut self, site: Site, per_10k: u16) {
        self.config.faults.set(site, per_10k);
    }

    pub(crate) fn now(&self) -> Duration {
        self.now
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn violations(&self) -> &[String] {
        &self.violations
    }

    pub(crate) fn fired(&self) -> Vec<(Site, u64)> {
        Site::ALL.iter().map(|&site| (site, self.fired[site as usize])).collect()
    }

    pub(crate) fn recent(&self) -> Vec<String> {
        self.recent.iter().map(ToString::to_string).collect()
    }

    pub(super) fn overflows(&self) -> u64 {
        self.overflows
    }

    /// Which of `queued` tasks the executor polls next.
    pub(super) fn pick(&mut self, queued: usize) -> usize {
        let at = if self.rng.chance(self.config.shuffle_polls) {
            self.rng.below(queued as u64) as usize
        } else {
            0
        };
        self.note(Event::Pick { queued, at });
        at
    }

    // ------------------------------------------------------------------------------------------
    // the fd table

    fn new_sock(&mut self, fd: Option<RawFd>, ino: u64, kind: SockKind) -> SockId {
        let id = self.next_sock;
        self.next_sock += 1;
        let sock = Sock { fd, ino, kind, close_queued: false, closing: None, ops_ever: false, shut: false };
        self.socks.insert(id, sock);
        if let Some(fd) = fd {
            self.fds.insert(fd, id);
        }
        id
    }

    /// A stream socket's end, with a window drawn for it.
    fn new_stream(&mut self) -> Stream {
        let (lo, hi) = self.config.window;
        let window = self.rng.between(u64::from(lo), u64::from(hi)) as usize;
        Stream { window, port: 40_000 + (self.next_sock % 20_000) as u16, ..Stream::default() }
    }

    /// The socket `fd` names now. A number the table has, whose open file is no longer the one
    /// it had, was closed behind the backend's back (and maybe reused): the old socket is
    /// taken as closed then, which is a violation if operations were ever started on it.
    fn resolve(&mut self, fd: RawFd) -> Option<SockId> {
        let id = *self.fds.get(&fd)?;
        let ino = sys::inode(fd);
        if ino == Some(self.socks[&id].ino) {
            return Some(id);
        }
        self.closed_behind(id);
        None
    }

    /// Socket `id`'s fd was closed without the backend (see `resolve`).
    ///
    /// Its number is forgotten at once (it may name another socket now), but the socket is let
    /// go only at the next probe, in the order of the sockets' ids: when the real kernel reuses
    /// a number depends on every fd of the process (other threads' too), and the run must not.
    fn closed_behind(&mut self, id: SockId) {
        let Some(sock) = self.socks.get_mut(&id) else { return };
        let Some(fd) = sock.fd.take() else { return };
        self.fds.remove(&fd);
        if sock.ops_ever {
            self.violation(format!(
                "fd {fd} (socket {id}) was closed behind the backend's back, after operations on it"
            ));
        }
        self.unseen.push(id);
    }

    /// The socket of an fd the model has not seen (a listener's first accept, a stream's
    /// connect, or a socket the model cannot run).
    fn adopt(&mut self, fd: RawFd, request: &Request) -> Option<SockId> {
        let ino = sys::inode(fd)?;
        let kind = match (request, sys::socket_of(fd)) {
            (Request::Accept { .. }, Ok((libc::SOCK_STREAM, addr))) => {
                SockKind::Listener { addr, backlog: VecDeque::new() }
            }
            (Request::Connect { .. }, Ok((libc::SOCK_STREAM, _))) => SockKind::Stream(self.new_stream()),
            _ => SockKind::Unsupported,
        };
        Some(self.new_sock(Some(fd), ino, kind))
    }

    /// Probes the fds of sockets no operation ever used (or all, `all`): the driver may close
    /// those itself (an accepted connection nobody took), and the peer must then see the end
    /// of stream; any other closed behind the backend's back is a violation.
    fn probe(&mut self, all: bool) {
        let probed: Vec<(SockId, RawFd)> = self
            .socks
            .iter()
            .filter(|(_, sock)| all || (!sock.ops_ever && !sock.close_queued))
            .filter_map(|(&id, sock)| sock.fd.map(|fd| (id, fd)))
            .collect();
        for (id, fd) in probed {
            if sys::inode(fd) != Some(self.socks[&id].ino) {
                self.closed_behind(id);
            }
        }
        let mut unseen = std::mem::take(&mut self.unseen);
        unseen.sort_unstable();
        for id in unseen {
            self.release_if_idle(id);
        }
    }

    /// Socket `id` is gone once its fd is closed and no operation holds it: its peer sees the
    /// end of stream (or a reset, if bytes were left unread), its backlog is refused.
    fn release_if_idle(&mut self, id: SockId) {
        let Some(sock) = self.socks.get(&id) else { return };
        if sock.fd.is_some() || self.ops.values().any(|op| op.sock == id && op.state != State::Ended) {
            return;
        }
        let sock = self.socks.remove(&id).expect("checked above");
        self.note(Event::Gone { sock: id });
        match sock.kind {
            SockKind::Stream(stream) => {
                if let Some(peer) = stream.peer.and_then(|peer| self.socks.get_mut(&peer)) {
                    if let Some(other) = peer.stream_mut() {
                        other.peer = None;
                        other.dead = true;
                        if stream.rx.is_empty() {
                            other.eof = true;
                        } else {
                            other.reset = true;
                        }
                    }
                }
            }
            SockKind::Listener { addr, backlog } => {
                self.refused.push(addr);
                for pending in backlog {
                    // Connected, never accepted: it has no fd. Its client is reset.
                    let client = self.socks.get(&pending).and_then(Sock::stream).and_then(|s| s.peer);
                    if let Some(sock) = self.socks.get_mut(&pending).and_then(Sock::stream_mut) {
                        sock.rx.clear();
                    }
                    self.release_if_idle(pending);
                    if let Some(client) =
                        client.and_then(|c| self.socks.get_mut(&c)).and_then(Sock::stream_mut)
                    {
                        client.reset = true;
                        client.dead = true;
                    }
                }
            }
            SockKind::Unsupported => {}
        }
    }

    /// Kills the connection of socket `id`: both ends reset.
    fn reset_pair(&mut self, id: SockId) {
        let peer = self.socks.get(&id).and_then(Sock::stream).and_then(|s| s.peer);
        for end in [Some(id), peer].into_iter().flatten() {
            if let Some(stream) = self.socks.get_mut(&end).and_then(Sock::stream_mut) {
                stream.reset = true;
                stream.dead = true;
                stream.rx.clear();
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // the driver's requests

    /// Starts operation `index` (see `Io::start`). `Err` if it is refused at once.
    ///
    /// # Safety
    /// The request's pointers must stay valid until the operation's last completion.
    pub(super) unsafe fn start(&mut self, index: usize, request: Request) -> Result<(), i32> {
        if self.fault(Site::StartFails) {
            return Err(match self.config.mode {
                Mode::Uring => libc::EBUSY,
                Mode::Epoll => libc::ENOMEM,
                Mode::Aio => libc::EAGAIN,
            });
        }
        let kind = Kind::of(&request);
        let fd = request.fd();
        let sock = match self.resolve(fd) {
            Some(sock) => Some(sock),
            None => self.adopt(fd, &request),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(old) = self.ops.get(&index) {
            let old = old.seq;
            self.violation(format!("slot {index} started op #{seq} while its op #{old} has not ended"));
        }
        let sock_id = sock.unwrap_or(0);
        let mut op = Op {
            seq,
            request,
            kind,
            sock: sock_id,
            state: if self.config.mode == Mode::Uring { State::Queued } else { State::Active },
            cancel: Cancel::None,
            canary: None,
            sum: 0,
            brought: 0,
            not_before: Duration::ZERO,
            last_due: Duration::ZERO,
        };
        let len = match request {
            Request::Recv { len, .. } | Request::Send { len, .. } => len,
            _ => 0,
        };
        self.note(Event::Start { index, seq, kind: kind as u8, sock: sock_id, len });
        match sock.and_then(|id| self.socks.get_mut(&id)) {
            None => {
                self.violation(format!("op #{seq} started on fd {fd}, which names no open socket"));
                op.state = State::Active;
                self.ops.insert(index, op);
                self.make(index, Completion::error(libc::EBADF), false);
                return Ok(());
            }
            Some(sock) if sock.close_queued => {
                self.violation(format!("op #{seq} started on fd {fd} after the driver closed it"));
            }
            Some(sock) => sock.ops_ever = true,
        }
        // SAFETY: the caller's guarantee: the buffer is the operation's until its end.
        unsafe { self.check_buffers(seq, &request, &mut op) };
        self.ops.insert(index, op);
        if self.config.mode == Mode::Uring {
            self.push(Sqe::Start(index));
        }
        Ok(())
    }

    /// The buffers of a new operation: a receive's must not be any other operation's in
    /// flight; it gets its canary. A send's bytes are summed.
    ///
    /// # Safety
    /// The request's buffer must be the operation's until its end.
    unsafe fn check_buffers(&mut self, seq: u64, request: &Request, op: &mut Op) {
        let (at, len, writes) = match *request {
            Request::Recv { buf, len, .. } => (buf as usize, len as usize, true),
            Request::Send { buf, len, .. } => (buf as usize, len as usize, false),
            _ => return,
        };
        if len == 0 {
            return;
        }
        let clash = self.ops.values().find(|other| {
            let (o_at, o_len, o_writes) = match other.request {
                Request::Recv { buf, len, .. } => (buf as usize, len as usize, true),
                Request::Send { buf, len, .. } => (buf as usize, len as usize, false),
                _ => return false,
            };
            (writes || o_writes) && at < o_at + o_len && o_at < at + len
        });
        if let Some(other) = clash {
            let other = other.seq;
            self.violation(format!(
                "op #{seq}'s buffer overlaps the buffer of op #{other}, which the kernel still owns"
            ));
        }
        if writes {
            let n = len.min(CANARY);
            let mut bytes = [0u8; CANARY];
            for (i, byte) in bytes.iter_mut().enumerate() {
                *byte = (seq.rotate_left(8 * i as u32) as u8) ^ 0x5a;
            }
            // SAFETY: the buffer is the kernel's from now on (the caller's guarantee), `n` bytes
            // of it at least.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, n) };
            op.canary = Some(Canary { at: at as *mut u8, len: n, bytes });
        } else {
            // SAFETY: the caller's guarantee: readable until the operation ends.
            op.sum = unsafe { checksum(at as *const u8, len) };
        }
    }

    /// Whether op `seq`'s receive buffer still holds the canary; a violation if not.
    fn canary_intact(&mut self, index: usize) -> bool {
        let Some(op) = self.ops.get_mut(&index) else { return true };
        // Checked once: the kernel writes its bytes over it next.
        let Some(canary) = op.canary.take() else { return true };
        // SAFETY: the buffer is the kernel's until the operation ends (the driver's promise
        // this very check tests; the test's allocator keeps freed memory mapped and poisoned).
        let now = unsafe { std::slice::from_raw_parts(canary.at, canary.len) };
        if now == &canary.bytes[..canary.len] {
            return true;
        }
        let seq = op.seq;
        self.violation(format!(
            "op #{seq}'s receive buffer changed while the kernel owned it (freed, or reused, before the op ended)"
        ));
        false
    }

    /// Asks to cancel operation `index` (see `Io::cancel`); whether the socket was shut down.
    pub(super) fn cancel(&mut self, index: usize, force: bool) -> bool {
        let Some(op) = self.ops.get(&index) else { return false };
        let seq = op.seq;
        self.note(Event::Cancel { index, seq, force });
        match self.config.mode {
            Mode::Uring => {
                self.push(Sqe::Cancel { index, seq, force });
                false
            }
            Mode::Epoll => {
                // Queued operations are dequeued, exactly; one that ran has completed.
                if self.ops[&index].state == State::Active {
                    self.make(index, Completion::error(libc::ECANCELED), false);
                }
                false
            }
            Mode::Aio => {
                let op = &self.ops[&index];
                if op.state != State::Active {
                    return false;
                }
                let running = self.is_head(index);
                match op.kind {
                    // On a helper thread of this crate, with a cancel eventfd; or still in the
                    // lane: exact.
                    Kind::Accept | Kind::Connect => {}
                    _ if !running => {}
                    // glibc runs it in a thread blocked in read or write: aio_cancel cannot stop
                    // it. Only shutting the socket down ends it (forced).
                    _ if force => {
                        let sock = op.sock;
                        if let Some(sock) = self.socks.get_mut(&sock) {
                            sock.shut = true;
                        }
                        return true;
                    }
                    _ => return false,
                }
                self.make(index, Completion::error(libc::ECANCELED), false);
                false
            }
        }
    }

    /// Closes `fd` after the operations started on it (see `Io::close_fd`); `now`: submit at
    /// once.
    pub(super) fn close_fd(&mut self, fd: OwnedFd, now: bool) {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        let Some(id) = self.resolve(raw) else {
            // A socket no operation ever named (or closed behind our back): just close it.
            drop(fd);
            return;
        };
        let sock = self.socks.get_mut(&id).expect("resolved");
        if std::mem::replace(&mut sock.close_queued, true) {
            self.violation(format!("fd {raw} (socket {id}) closed twice"));
        }
        match self.config.mode {
            Mode::Uring => {
                self.push(Sqe::Close(id, fd));
                if now {
                    self.submit();
                }
            }
            _ => self.close_now(id, fd),
        }
    }

    /// The close of socket `id` takes effect.
    fn close_now(&mut self, id: SockId, fd: OwnedFd) {
        self.note(Event::Close { sock: id });
        let on_it: Vec<usize> = self
            .ops
            .iter()
            .filter(|(_, op)| op.sock == id && op.state == State::Active)
            .map(|(&index, _)| index)
            .collect();
        match self.config.mode {
            // The operations submitted hold the socket (not the number) until they end.
            Mode::Uring => {}
            // The operations still queued on it are cancelled.
            Mode::Epoll => {
                for index in on_it {
                    self.make(index, Completion::error(libc::ECANCELED), false);
                }
            }
            // The running ones are ended by a shutdown, the queued ones cancelled; the fd is
            // closed once none is left.
            Mode::Aio => {
                let mut running = false;
                for index in on_it {
                    if self.is_head(index) && !matches!(self.ops[&index].kind, Kind::Accept | Kind::Connect) {
                        running = true;
                    } else {
                        self.make(index, Completion::error(libc::ECANCELED), false);
                    }
                }
                if running {
                    let sock = self.socks.get_mut(&id).expect("closing");
                    sock.shut = true;
                    sock.closing = Some(fd);
                    return;
                }
            }
        }
        self.really_close(id, fd);
    }

    /// The real `close` of socket `id`'s fd: its number is free for reuse from now on.
    fn really_close(&mut self, id: SockId, fd: OwnedFd) {
        if let Some(sock) = self.socks.get_mut(&id) {
            if let Some(raw) = sock.fd.take() {
                self.fds.remove(&raw);
            }
        }
        drop(fd);
        self.release_if_idle(id);
    }

    // ------------------------------------------------------------------------------------------
    // the submission queue (uring mode)

    fn push(&mut self, sqe: Sqe) {
        if self.site_on(Site::SqFull) && self.sq.len() >= self.config.sq_entries {
            self.fired[Site::SqFull as usize] += 1;
            self.note(Event::Fault(Site::SqFull));
            self.submit();
        }
        self.sq.push_back(sqe);
    }

    /// Hands the submission queue over: requests start, cancels and closes act, in order.
    pub(super) fn submit(&mut self) {
        while let Some(sqe) = self.sq.pop_front() {
            match sqe {
                Sqe::Start(index) => self.submitted(index),
                Sqe::Cancel { index, seq, force } => self.cancel_now(index, seq, force),
                Sqe::Close(id, fd) => self.close_now(id, fd),
            }
        }
    }

    /// Operation `index` reaches the kernel, which resolves its fd now: a number closed and
    /// reused since the request was queued names another socket.
    fn submitted(&mut self, index: usize) {
        let Some(op) = self.ops.get(&index) else { return };
        if op.state != State::Queued {
            return;
        }
        let (seq, sock, fd) = (op.seq, op.sock, op.request.fd());
        if self.fds.get(&fd) != Some(&sock) || sys::inode(fd) != self.socks.get(&sock).map(|s| s.ino) {
            self.violation(format!(
                "op #{seq} was queued on fd {fd}, whose number was closed and reused before it was submitted"
            ));
        }
        self.ops.get_mut(&index).expect("queued").state = State::Active;
    }

    /// A cancel reaches the kernel (uring): see `Site::Cancel*` for the ways it can go.
    fn cancel_now(&mut self, index: usize, seq: u64, force: bool) {
        let Some(op) = self.ops.get(&index) else { return };
        if op.state != State::Active {
            return; // ENOENT: it completed already
        }
        if op.seq != seq {
            let other = op.seq;
            self.violation(format!("a cancel meant for op #{seq} hit op #{other} in the same slot"));
        }
        if force {
            self.end_cancelled(index);
            return;
        }
        let late = |k: &mut Kernel| k.now + Duration::from_micros(k.rng.between(50, 20_000));
        if self.can_complete(index) {
            // Left alone, it would have completed as its data came, before the cancel acts.
            if self.fault(Site::CancelWins) {
                self.end_cancelled(index);
            } else if self.fault(Site::CancelEalready) {
                let deadline = late(self);
                self.ops.get_mut(&index).expect("active").cancel = Cancel::Late(deadline);
            } else {
                // Its real result; late if the cancel found it done already (ENOENT).
                let delayed = self.fault(Site::CancelEnoent);
                self.attempt(index, delayed);
                if self.ops.get(&index).is_some_and(|op| op.state == State::Active) {
                    self.end_cancelled(index); // a multishot one: what it brought, then the end
                }
            }
        } else if self.fault(Site::CancelLoses) || self.fault(Site::CancelEalready) {
            // It goes on for a while, and completes for real if it can meanwhile.
            let deadline = late(self);
            self.ops.get_mut(&index).expect("active").cancel = Cancel::Late(deadline);
        } else {
            self.end_cancelled(index);
        }
    }

    fn end_cancelled(&mut self, index: usize) {
        self.make(index, Completion::error(libc::ECANCELED), false);
    }

    // ------------------------------------------------------------------------------------------
    // the kernel's progress

    /// Whether operation `index` is the first of its socket's queue (epoll) or lane (aio).
    fn is_head(&self, index: usize) -> bool {
        let op = &self.ops[&index];
        let direction = op.kind.direction(self.config.mode);
        !self.ops.values().any(|other| {
            other.sock == op.sock
                && other.state == State::Active
                && other.seq < op.seq
                && other.kind.direction(self.config.mode) == direction
        })
    }

    /// Every operation that can complete does (see the module docs).
    fn progress(&mut self) {
        let mut order: Vec<(u64, usize)> =
            self.ops.iter().filter(|(_, op)| op.state == State::Active).map(|(&i, op)| (op.seq, i)).collect();
        order.sort_unstable();
        let mut lanes = HashSet::new();
        for (_, index) in order {
            let Some(op) = self.ops.get(&index) else { continue };
            if op.state != State::Active {
                continue;
            }
            if self.config.mode != Mode::Uring
                && !lanes.insert((op.sock, op.kind.direction(self.config.mode)))
            {
                continue; // not the first of its queue or lane
            }
            if let Cancel::Late(deadline) = op.cancel {
                if self.now >= deadline {
                    self.end_cancelled(index);
                    continue;
                }
            }
            if self.now < op.not_before {
                continue;
            }
            if self.config.mode == Mode::Epoll {
                if !self.can_complete(index) {
                    // An edge for a socket with nothing for it: the syscall says EAGAIN.
                    self.fault(Site::SpuriousReady);
                    continue;
                }
                if self.fault(Site::EagainAtReady) {
                    let wait = Duration::from_micros(self.rng.between(10, 2_000));
                    self.ops.get_mut(&index).expect("active").not_before = self.now + wait;
                    continue;
                }
            }
            self.attempt(index, false);
        }
        // Aio: fds whose last operation is over are closed now.
        let closing: Vec<SockId> = self
            .socks
            .iter()
            .filter(|(id, sock)| {
                sock.closing.is_some()
                    && !self.ops.values().any(|op| op.sock == **id && op.state == State::Active)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in closing {
            let fd = self.socks.get_mut(&id).and_then(|sock| sock.closing.take()).expect("closing");
            self.really_close(id, fd);
        }
    }

    /// Whether operation `index` would complete if tried now.
    fn can_complete(&self, index: usize) -> bool {
        let op = &self.ops[&index];
        let Some(sock) = self.socks.get(&op.sock) else { return true };
        match (&sock.kind, op.kind) {
            (SockKind::Listener { backlog, .. }, Kind::Accept) => !backlog.is_empty(),
            (_, Kind::Connect) => true,
            (SockKind::Stream(stream), Kind::Recv | Kind::RecvPick | Kind::RecvMulti) => {
                stream.reset || stream.eof || sock.shut || !stream.rx.is_empty()
            }
            (SockKind::Stream(stream), Kind::Send) => {
                let room = stream
                    .peer
                    .and_then(|peer| self.socks.get(&peer))
                    .and_then(Sock::stream)
                    .map_or(0, |peer| peer.window.saturating_sub(peer.rx.len()));
                stream.dead || stream.reset || sock.shut || room > 0 || self.dontwait(&op.request)
            }
            _ => true,
        }
    }

    /// Whether a send must not wait for room (only io_uring passes `MSG_DONTWAIT` on).
    fn dontwait(&self, request: &Request) -> bool {
        matches!(request, Request::Send { dontwait: true, .. }) && self.config.mode == Mode::Uring
    }

    /// Tries operation `index` once; it completes (a completion made, `delayed` if a cancel
    /// found it done already) or waits.
    fn attempt(&mut self, index: usize, delayed: bool) {
        let op = &self.ops[&index];
        let (kind, request, sock) = (op.kind, op.request, op.sock);
        match (kind, request) {
            (Kind::Accept, Request::Accept { addr, len, .. }) => self.accept(index, sock, addr, len, delayed),
            (Kind::Connect, Request::Connect { addr, len, .. }) => {
                self.connect(index, sock, addr, len, delayed)
            }
            (Kind::Recv | Kind::RecvPick, _) => self.receive(index, sock, delayed),
            (Kind::RecvMulti, Request::RecvMulti { limit, .. }) => {
                self.receive_multi(index, sock, limit, delayed)
            }
            (Kind::Send, Request::Send { buf, len, .. }) => self.send(index, sock, buf, len, delayed),
            _ => self.make(index, Completion::error(libc::EOPNOTSUPP), delayed),
        }
    }

    fn accept(
        &mut self,
        index: usize,
        id: SockId,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
        delayed: bool,
    ) {
        let Some(SockKind::Listener { backlog, .. }) = self.socks.get_mut(&id).map(|s| &mut s.kind) else {
            return self.make(index, Completion::error(libc::EINVAL), delayed);
        };
        let Some(server) = backlog.pop_front() else { return };
        let placeholder = executor::sys::tcp_socket(&SocketAddr::from(([127, 0, 0, 1], 0)), false);
        let Ok(placeholder) = placeholder else {
            if let Some(SockKind::Listener { backlog, .. }) = self.socks.get_mut(&id).map(|s| &mut s.kind) {
                backlog.push_front(server);
            }
            return self.make(index, Completion::error(libc::EMFILE), delayed);
        };
        let fd = placeholder.into_raw_fd();
        if let Some(&old) = self.fds.get(&fd) {
            // The real kernel gave out a number the table still has: it was closed behind the
            // backend's back.
            self.closed_behind(old);
        }
        let ino = sys::inode(fd).unwrap_or(0);
        let sock = self.socks.get_mut(&server).expect("in the backlog");
        sock.fd = Some(fd);
        sock.ino = ino;
        self.fds.insert(fd, server);
        self.note(Event::Accepted { sock: server });
        let peer = self.socks[&server].stream().and_then(|s| s.peer).and_then(|p| self.socks.get(&p));
        let port = peer.and_then(Sock::stream).map_or(1, |s| s.port);
        let (storage, storage_len) = executor::sys::sockaddr_from(&SocketAddr::from(([127, 0, 0, 1], port)));
        // SAFETY: the request's address storage and length are the operation's until its
        // completion (`start`'s contract); at most `*len` bytes are written.
        unsafe {
            let room = (*len).min(storage_len) as usize;
            std::ptr::copy_nonoverlapping(
                (&storage as *const libc::sockaddr_storage).cast::<u8>(),
                addr.cast::<u8>(),
                room,
            );
            *len = storage_len;
        }
        self.make(index, Completion::of(fd), delayed);
    }

    fn connect(
        &mut self,
        index: usize,
        client: SockId,
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
        delayed: bool,
    ) {
        // SAFETY: the request's address is the operation's until its completion, `len` bytes.
        let to = unsafe {
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
            std::ptr::copy_nonoverlapping(
                addr.cast::<u8>(),
                (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
                n,
            );
            executor::sys::sockaddr_to(&storage, len)
        };
        let Ok(to) = to else { return self.make(index, Completion::error(libc::EINVAL), delayed) };
        let listener = self.socks.iter().find_map(|(&id, sock)| match &sock.kind {
            SockKind::Listener { addr, .. } if *addr == to && !sock.close_queued => Some(id),
            _ => None,
        });
        let Some(listener) = listener else {
            if self.refused.contains(&to) {
                self.make(index, Completion::error(libc::ECONNREFUSED), delayed);
            }
            return; // the listener has not been seen yet: wait for it
        };
        let mut server = self.new_stream();
        server.peer = Some(client);
        let server = self.new_sock(None, 0, SockKind::Stream(server));
        if let Some(stream) = self.socks.get_mut(&client).and_then(Sock::stream_mut) {
            stream.peer = Some(server);
        }
        if let Some(SockKind::Listener { backlog, .. }) = self.socks.get_mut(&listener).map(|s| &mut s.kind) {
            backlog.push_back(server);
        }
        self.note(Event::Connected { client, server });
        self.make(index, Completion::of(0), delayed);
    }

    /// A single-shot receive (`Recv` into the operation's buffer, or `RecvPick` into one the
    /// backend picks now).
    fn receive(&mut self, index: usize, id: SockId, delayed: bool) {
        let mode = self.config.mode;
        let Some(sock) = self.socks.get(&id) else {
            return self.make(index, Completion::error(libc::EBADF), delayed);
        };
        let Some(stream) = sock.stream() else {
            return self.make(index, Completion::error(libc::EOPNOTSUPP), delayed);
        };
        let (reset, eof, shut, waiting) = (stream.reset, stream.eof, sock.shut, stream.rx.len());
        if waiting > 0 && !reset && stream.peer.is_some() && self.fault(Site::Reset) {
            self.reset_pair(id);
            return self.make(index, Completion::error(libc::ECONNRESET), delayed);
        }
        if reset {
            return self.make(index, Completion::error(libc::ECONNRESET), delayed);
        }
        if waiting == 0 {
            if eof || shut {
                self.make(index, Completion::of(0), delayed);
            }
            return;
        }
        if mode == Mode::Aio && self.fault(Site::Eintr) {
            return self.make(index, Completion::error(libc::EINTR), delayed);
        }
        let request = self.ops[&index].request;
        let room = match request {
            Request::Recv { len, .. } => len as usize,
            _ => crate::buf::OWNED_SIZE,
        };
        let mut n = waiting.min(room);
        if n > 1 && self.fault(Site::ShortRead) {
            n = self.rng.between(1, n as u64 - 1) as usize;
        }
        if !self.canary_intact(index) {
            // Writing into memory the kernel no longer owns would corrupt someone else's.
            return self.make(index, Completion::error(libc::EFAULT), delayed);
        }
        let stream = self.socks.get_mut(&id).and_then(Sock::stream_mut).expect("a stream");
        let bytes: Vec<u8> = stream.rx.drain(..n).collect();
        let completion = match request {
            Request::Recv { buf, .. } => {
                // SAFETY: the buffer is the operation's, `len >= n` bytes, until its completion
                // (`start`'s contract), and the canary says nobody else has it.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, n) };
                Completion::of(n as i32)
            }
            _ => {
                let mut picked = crate::buf::spare_vec();
                picked.extend_from_slice(&bytes);
                let id = self.picked.insert(picked) as u16;
                Completion { buffer: Some(BufId::Picked(id)), ..Completion::of(n as i32) }
            }
        };
        self.make(index, completion, delayed);
    }

    /// A multishot receive into the ring: up to `burst` completions now.
    fn receive_multi(&mut self, index: usize, id: SockId, limit: u32, delayed: bool) {
        let Some(stream) = self.socks.get(&id).and_then(Sock::stream) else {
            return self.make(index, Completion::error(libc::EBADF), delayed);
        };
        if !stream.rx.is_empty() && !stream.reset && stream.peer.is_some() && self.fault(Site::Reset) {
            self.reset_pair(id);
        }
        let limited = limit > 0 && self.config.receive_limits;
        for _ in 0..self.config.burst {
            let stream = self.socks.get(&id).and_then(Sock::stream).expect("a stream");
            if stream.reset {
                return self.make(index, Completion::error(libc::ECONNRESET), delayed);
            }
            if stream.rx.is_empty() {
                if stream.eof {
                    self.make(index, Completion::of(0), delayed);
                }
                return;
            }
            let waiting = stream.rx.len();
            let ring = self.ring.as_ref().expect("a multishot receive needs the ring");
            if ring.fifo.is_empty() || self.fault(Site::Enobufs) {
                return self.make(index, Completion::error(libc::ENOBUFS), delayed);
            }
            let ring = self.ring.as_ref().expect("checked");
            let (bid, at, size) = ring.fifo[0];
            let offset = if self.config.incremental { ring.head_filled } else { 0 };
            let brought = self.ops[&index].brought;
            let mut n = waiting.min((size - offset) as usize);
            if limited {
                n = n.min(limit.saturating_sub(brought) as usize);
            }
            if n > 1 && self.fault(Site::ShortRead) {
                n = self.rng.between(1, n as u64 - 1) as usize;
            }
            let stream = self.socks.get_mut(&id).and_then(Sock::stream_mut).expect("a stream");
            let bytes: Vec<u8> = stream.rx.drain(..n).collect();
            // SAFETY: buffer `bid` is in the ring, so the kernel's to fill, `size` bytes from
            // `at`; `offset + n <= size`.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), at.add(offset as usize), n) };
            let ring = self.ring.as_mut().expect("checked");
            let filling = self.config.incremental && offset + (n as u32) < size;
            if filling {
                ring.head_filled += n as u32;
            } else {
                ring.fifo.pop_front();
                ring.head_filled = 0;
                ring.state[usize::from(bid)] = Some(BufState::Taken);
            }
            let op = self.ops.get_mut(&index).expect("active");
            op.brought += n as u32;
            let mut more = !(limited && op.brought >= limit);
            if more && self.fault(Site::MultishotEnd) {
                more = false;
            }
            let completion =
                Completion { buffer: Some(BufId::Ring(bid)), more, filling, ..Completion::of(n as i32) };
            self.make(index, completion, delayed);
            if !more {
                return;
            }
        }
    }

    fn send(&mut self, index: usize, id: SockId, buf: *const u8, len: u32, delayed: bool) {
        let dontwait = self.dontwait(&self.ops[&index].request);
        let Some(sock) = self.socks.get(&id) else {
            return self.make(index, Completion::error(libc::EBADF), delayed);
        };
        let Some(stream) = sock.stream() else {
            return self.make(index, Completion::error(libc::EOPNOTSUPP), delayed);
        };
        if stream.reset {
            return self.make(index, Completion::error(libc::ECONNRESET), delayed);
        }
        if stream.dead || sock.shut || stream.peer.is_none() {
            return self.make(index, Completion::error(libc::EPIPE), delayed);
        }
        let peer = stream.peer.expect("checked");
        if self.fault(Site::Epipe) {
            self.reset_pair(id);
            return self.make(index, Completion::error(libc::EPIPE), delayed);
        }
        if self.fault(Site::Eintr) {
            return self.make(index, Completion::error(libc::EINTR), delayed);
        }
        let room = self.socks[&peer].stream().map_or(0, |p| p.window.saturating_sub(p.rx.len()));
        if room == 0 || (dontwait && self.fault(Site::Eagain)) {
            if dontwait {
                self.make(index, Completion::error(libc::EAGAIN), delayed);
            }
            return;
        }
        let mut n = (len as usize).min(room);
        if n > 1 && self.fault(Site::ShortWrite) {
            n = self.rng.between(1, n as u64 - 1) as usize;
        }
        let (seq, sum) = (self.ops[&index].seq, self.ops[&index].sum);
        // SAFETY: the buffer is the operation's, `len` bytes, until its completion.
        if len > 0 && unsafe { checksum(buf, len as usize) } != sum {
            self.violation(format!("op #{seq}'s send buffer changed while the kernel owned it"));
        }
        // SAFETY: as above; `n <= len`.
        let bytes = unsafe { std::slice::from_raw_parts(buf, n) };
        let peer = self.socks.get_mut(&peer).and_then(Sock::stream_mut).expect("the peer is a stream");
        peer.rx.extend(bytes);
        self.make(index, Completion::of(n as i32), delayed);
    }

    /// Operation `index` completes with `completion` (its last one unless `more`); delivered
    /// now, or later if `delayed` or the `Delay` fault fires.
    fn make(&mut self, index: usize, completion: Completion, delayed: bool) {
        let delay = if delayed || self.fault(Site::Delay) {
            Duration::from_micros(self.rng.between(10, 5_000))
        } else {
            Duration::ZERO
        };
        let Some(op) = self.ops.get_mut(&index) else { return };
        let mut due = (self.now + delay).max(op.last_due);
        if op.kind == Kind::RecvMulti {
            due = due.max(self.ring_due);
            self.ring_due = due;
        }
        op.last_due = due;
        let seq = op.seq;
        let sock = op.sock;
        if !completion.more {
            self.canary_intact(index);
        }
        let op = self.ops.get_mut(&index).expect("live");
        if !completion.more {
            op.state = State::Ended;
        }
        self.note(Event::Made { index, seq, result: completion.result, more: completion.more });
        self.made.push_back(Made { due, index, seq, completion });
        if !completion.more {
            self.release_if_idle(sock);
        }
    }

    // ------------------------------------------------------------------------------------------
    // a turn

    /// The first half of a turn (see the module docs): returns the completions to deliver.
    pub(super) fn turn(&mut self, timeout: Option<Duration>) -> Result<Vec<Made>, String> {
        self.turns += 1;
        if self.turns > MAX_TURNS {
            return Err(format!(
                "stuck: {MAX_TURNS} turns without the run ending (a loop that never waits?)"
            ));
        }
        if self.now > MAX_TIME {
            return Err(format!("stuck: {MAX_TIME:?} of virtual time without the run ending"));
        }
        // Each turn costs a little time, so that delayed completions come due even when tasks
        // never let the runtime wait.
        self.now += Duration::from_micros(self.rng.between(1, 20));
        self.note(Event::Turn { now: self.now, wait: timeout });
        self.probe(false);
        let submitted = if self.config.mode == Mode::Uring && self.fault(Site::SubmitFails) {
            false
        } else {
            self.submit();
            true
        };
        self.progress();
        let mut cq = self.fill_cq();
        if cq.is_empty() && submitted && timeout != Some(Duration::ZERO) {
            if self.config.mode == Mode::Epoll && self.fault(Site::SpuriousReady) {
                return Ok(cq); // woken by an edge that brings nothing
            }
            // About to wait: a socket closed behind the backend's back (which a real kernel
            // would have told its peer at once) is found now, not only when its number is
            // reused.
            self.probe(true);
            self.progress();
            cq = self.fill_cq();
        }
        if cq.is_empty() && submitted && timeout != Some(Duration::ZERO) {
            let next = self.next_event();
            let wait = match (next, timeout) {
                (None, None) => return Err(
                    "deadlock: the runtime waits for I/O with no timer, and the kernel has nothing pending"
                        .to_string(),
                ),
                (Some(at), None) => at.saturating_sub(self.now),
                (None, Some(timeout)) => timeout,
                (Some(at), Some(timeout)) => at.saturating_sub(self.now).min(timeout),
            };
            self.now += wait;
            self.progress();
            cq = self.fill_cq();
        }
        if cq.len() > 1 && self.fault(Site::Reorder) {
            // Another order across operations; each operation's completions keep theirs, and so
            // do those of all multishot receives (the driver learns where each piece of a ring
            // buffer starts from the order they come in, as from a real kernel).
            let group = |k: &Kernel, made: &Made| match k.ops.get(&made.index) {
                Some(op) if op.kind == Kind::RecvMulti => usize::MAX,
                _ => made.index,
            };
            let mut keys: BTreeMap<usize, u64> = BTreeMap::new();
            for made in &cq {
                let key = self.rng.next_u64();
                keys.entry(group(self, made)).or_insert(key);
            }
            let keyed: Vec<u64> = cq.iter().map(|made| keys[&group(self, made)]).collect();
            let mut order: Vec<usize> = (0..cq.len()).collect();
            order.sort_by_key(|&i| keyed[i]);
            cq = order.into_iter().map(|i| cq[i]).collect();
        }
        Ok(cq)
    }

    /// When the next thing the kernel waits for happens, if anything.
    fn next_event(&self) -> Option<Duration> {
        let made = self.made.iter().map(|m| m.due).min();
        let ops = self
            .ops
            .values()
            .filter(|op| op.state == State::Active)
            .flat_map(|op| {
                let late = match op.cancel {
                    Cancel::Late(at) => Some(at),
                    Cancel::None => None,
                };
                [late, (op.not_before > self.now).then_some(op.not_before)]
            })
            .flatten()
            .min();
        let overflow = (!self.overflow.is_empty()).then_some(self.now);
        [made, ops, overflow].into_iter().flatten().min()
    }

    /// Moves due completions into the completion queue, past its size into the overflow
    /// list (which goes first, next turn). Returns the queue.
    fn fill_cq(&mut self) -> Vec<Made> {
        let size = if self.config.mode == Mode::Uring && self.site_on(Site::CqOverflow) {
            self.config.cq_entries
        } else {
            usize::MAX
        };
        let mut cq = Vec::new();
        while cq.len() < size {
            let Some(made) = self.overflow.pop_front() else { break };
            cq.push(made);
        }
        let mut later = VecDeque::new();
        while let Some(made) = self.made.pop_front() {
            if made.due > self.now {
                later.push_back(made);
            } else if cq.len() < size && self.overflow.is_empty() {
                cq.push(made);
            } else {
                self.fired[Site::CqOverflow as usize] += 1;
                self.note(Event::Fault(Site::CqOverflow));
                if planted!(DropOverflowedCompletion) {
                    continue;
                }
                self.overflow.push_back(made);
            }
        }
        if !self.overflow.is_empty() {
            self.overflows += 1;
        }
        self.made = later;
        cq
    }

    /// A completion is about to be delivered: the ledger's check and bookkeeping.
    pub(super) fn deliver(&mut self, made: &Made) {
        let Made { index, seq, completion, .. } = *made;
        let bid = match completion.buffer {
            Some(BufId::Ring(bid)) => Some(bid),
            _ => None,
        };
        self.note(Event::Delivered { index, result: completion.result, more: completion.more, bid });
        match self.ops.get(&index) {
            Some(op) if op.seq == seq => {}
            _ => self.violation(format!("a completion of op #{seq} came after the op had ended")),
        }
        if let (Some(bid), false) = (bid, completion.filling) {
            if let Some(state) = self.ring.as_mut().and_then(|r| r.state.get_mut(usize::from(bid))) {
                *state = Some(BufState::Delivered);
            }
        }
        if !completion.more {
            self.ops.remove(&index);
        }
    }

    // ------------------------------------------------------------------------------------------
    // the ring

    /// Sets up the ring the driver will provide buffers to.
    pub(super) fn make_ring(&mut self) {
        self.ring = Some(Ring::default());
    }

    /// The driver provides buffer `bid`: it must be in no other place.
    pub(super) fn provide(&mut self, bid: u16, at: *mut u8, len: u32) {
        self.note(Event::Provide { bid });
        let Some(ring) = self.ring.as_mut() else { return };
        let slot = usize::from(bid);
        if ring.state.len() <= slot {
            ring.state.resize(slot + 1, None);
        }
        match ring.state[slot] {
            Some(BufState::InRing) => {
                self.violation(format!("buffer {bid} provided while it was in the ring already"))
            }
            Some(BufState::Taken) => {
                self.violation(format!("buffer {bid} provided while a completion not yet delivered holds it"))
            }
            _ => {}
        }
        let ring = self.ring.as_mut().expect("checked");
        ring.state[slot] = Some(BufState::InRing);
        ring.fifo.push_back((bid, at, len));
    }

    /// How many buffers are in the ring.
    pub(crate) fn ring_len(&self) -> Option<usize> {
        self.ring.as_ref().map(|ring| ring.fifo.len())
    }

    pub(super) fn take_picked(&mut self, id: u16) -> Option<Vec<u8>> {
        self.picked.try_remove(usize::from(id))
    }

    // ------------------------------------------------------------------------------------------
    // what is left

    /// What the model still holds: operations, open sockets, picked buffers. Empty at idle.
    pub(crate) fn leftovers(&mut self) -> Vec<String> {
        self.probe(false);
        let mut left = Vec::new();
        for (index, op) in &self.ops {
            left.push(format!("op #{} (slot {index}, {:?}) has not ended", op.seq, op.kind));
        }
        let open: Vec<RawFd> = self.fds.keys().copied().collect();
        if !open.is_empty() {
            left.push(format!("{} fds still open in the model: {open:?}", open.len()));
        }
        if !self.picked.is_empty() {
            left.push(format!("{} picked buffers never taken", self.picked.len()));
        }
        left
    }

    /// The model's state, a line per operation and socket, for a failure report.
    pub(crate) fn dump(&self) -> Vec<String> {
        let ops = self.ops.iter().map(|(index, op)| {
            format!(
                "op #{} slot {index}: {:?} on socket {}, {:?}, cancel {:?}, brought {}",
                op.seq, op.kind, op.sock, op.state, op.cancel, op.brought
            )
        });
        let socks = self.socks.iter().map(|(id, sock)| {
            let what = match &sock.kind {
                SockKind::Listener { addr, backlog } => format!("listener {addr}, backlog {backlog:?}"),
                SockKind::Stream(s) => format!(
                    "stream to {:?}, {} bytes waiting (window {}), eof {} reset {} dead {}",
                    s.peer,
                    s.rx.len(),
                    s.window,
                    s.eof,
                    s.reset,
                    s.dead
                ),
                SockKind::Unsupported => "unsupported".to_string(),
            };
            format!(
                "socket {id} (fd {:?}{}{}): {what}",
                sock.fd,
                if sock.close_queued { ", closing" } else { "" },
                if sock.shut { ", shut down" } else { "" }
            )
        });
        let ring = self.ring.as_ref().map(|r| format!("ring: {} buffers in it", r.fifo.len()));
        ops.chain(socks).chain(ring).collect()
    }

    /// After the runtime is gone: every fd must be closed, every operation ended. Closes what
    /// is left (so the process does not leak it) and records the violations.
    pub(super) fn finish(&mut self) {
        self.submit();
        let fds: Vec<RawFd> = self.fds.keys().copied().collect();
        for fd in fds {
            let id = self.fds[&fd];
            if sys::inode(fd) != Some(self.socks[&id].ino) {
                self.closed_behind(id);
                continue;
            }
            self.violation(format!("fd {fd} (socket {id}) is still open after the runtime was dropped"));
            self.fds.remove(&fd);
            // SAFETY: the model's placeholder or the runtime's socket that nobody closed: the
            // runtime is gone, so nothing else will.
            drop(unsafe { sys::owned_fd(fd) });
        }
        for op in self.ops.values() {
            let what = format!("op #{} ({:?}) never reached its end", op.seq, op.kind);
            self.violations.push(what);
        }
        self.ops.clear();
        for sock in self.socks.values_mut() {
            drop(sock.closing.take());
        }
    }
}
