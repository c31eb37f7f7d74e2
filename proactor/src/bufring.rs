//! A provided-buffer ring: buffers the kernel picks from when data arrives.
//!
//! With ordinary receives, each waiting connection must hand the kernel a buffer *before* any
//! data arrives, so 10,000 idle connections pin 10,000 buffers. A buffer ring inverts that: the
//! runtime gives the kernel one pool of buffers (io_uring: `IORING_REGISTER_PBUF_RING`), and a
//! receive armed with "select a buffer from group N" takes one only at the moment data is
//! there. Combined with multishot receive (one request, a completion per arrival), an idle
//! connection holds no buffer and has nothing to re-submit.
//!
//! # Who owns a buffer
//!
//! A buffer is the kernel's while it is in the ring. A completion that names it
//! ([`BufId::Ring`](crate::backend::BufId::Ring)) hands buffer `bid` to the runtime, which
//! wraps it in a [`ProvidedBuf`](crate::buf::ProvidedBuf) for the user. Dropping that puts the
//! buffer back in the ring. A completion that nobody will read (its operation was dropped)
//! gives its buffer straight back. When every buffer is out, receives end with `ENOBUFS`; the stream then waits
//! until a buffer is returned and re-arms.
//!
//! # Supply follows the load
//!
//! A fixed pool starves under load: at 1,000 connections with a message in flight each, 128
//! buffers run dry, receives end with `ENOBUFS`, and connections queue for buffers and re-arm
//! (a re-arm storm, and waits of tens of milliseconds at the back of the queue). So the pool
//! grows: the backend's ring is registered at its largest size (`max` entries, set by the
//! memory limit), but only `initial` buffers are allocated and provided at first. When fewer
//! than an eighth of the provided buffers are left in the ring, another chunk of `initial`
//! buffers is allocated and provided, until the limit. When load falls and more than three
//! quarters sit unused in the ring, buffers of the newest chunk that come back are retired
//! instead of provided, and the chunk is freed once all of its buffers are home. An idle
//! server holds only the first chunk; an idle connection holds none.
//!
//! Peers that stop reading must not pin this shared memory: see `driver`, where a receive that
//! nobody reads copies its bytes out, and `net`, where a send that would block copies the rest
//! of its buffer out, so that ring buffers go back at once.
//!
//! # Whose ring
//!
//! This pool is the neutral part: chunks, pieces, growth, who waits. How a free buffer reaches
//! the kernel is the backend's ([`Provide`]): io_uring appends a descriptor to a ring it shares
//! with the kernel (`backend::uring`); a backend without such a ring has no pool at all.

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell};
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;

use crate::waiters::WaitQueue;

/// The buffer group id of the streams' ring (the datagram ring's is `udp::GROUP`).
pub(crate) const GROUP: u16 = 0;

/// Where free buffers go: the backend hands each to the kernel, which may fill it from then
/// on, until a completion hands it back to the program.
pub(crate) trait Provide {
    /// Hands buffer `bid`, `len` bytes at `addr`, to the kernel.
    fn provide(&self, bid: u16, addr: *mut u8, len: u32);
}

/// The pool of buffers, owned by the driver and by every
/// [`ProvidedBuf`](crate::buf::ProvidedBuf) (through `Rc`), so the memory outlives both the
/// backend's ring and the last buffer handed out.
pub(crate) struct BufRing {
    /// How buffers reach the kernel (the backend's descriptor ring).
    provider: Box<dyn Provide>,
    /// The buffers, in chunks of `chunk` buffers of `size` bytes: buffer `bid` is in chunk
    /// `bid / chunk`. The kernel writes into those that are in the ring.
    chunks: RefCell<Vec<NonNull<u8>>>,
    /// The most buffers there can be (a power of two): the backend's ring has this many slots.
    max: u16,
    /// Buffers per chunk (the initial pool).
    chunk: u16,
    size: u32,
    /// Buffers currently in the ring (given to the kernel and not yet consumed; with
    /// incremental consumption, a partly filled buffer still counts until the kernel is done
    /// with it).
    available: Cell<u32>,
    /// Per buffer: where the kernel's next piece starts, how many pieces the program holds,
    /// and whether the kernel may still write into it. See `taken` and `release`.
    pieces: RefCell<Vec<Pieces>>,
    /// Buffers of the newest chunk that came back while the pool was shrinking, and so were
    /// not provided again; the chunk is freed when all of them are.
    retired: RefCell<Vec<u16>>,
    /// Tasks whose receive ended for lack of buffers, woken one per buffer that comes back
    /// (see `waiters`).
    waiters: Rc<WaitQueue>,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("max", &self.max)
            .field("buffers", &self.capacity())
            .field("size", &self.size)
            .field("available", &self.available.get())
            .finish()
    }
}

const PAGE: usize = 4096;

/// What [`BufRing`] knows of one buffer while it is out of the ring or partly filled.
#[derive(Clone, Copy, Debug, Default)]
struct Pieces {
    /// Bytes the kernel has written so far (incremental consumption: the next piece starts
    /// here).
    filled: u32,
    /// Pieces handed to the program and not released yet.
    out: u32,
    /// The kernel is done with the buffer (a completion came without `filling`): once
    /// `out` is 0 it goes back to the ring.
    done: bool,
}

impl BufRing {
    fn chunk_layout(&self) -> Layout {
        Layout::from_size_align(usize::from(self.chunk) * self.size as usize, PAGE).expect("a valid layout")
    }

    /// A pool of up to `max` buffers of `size` bytes (`max` a power of two, at most 32768),
    /// the first `initial` of them allocated and handed to `provider` now. Whether the kernel
    /// fills each buffer whole or piece by piece is the backend's business: completions say
    /// ([`taken`](Self::taken)'s `more`).
    pub(crate) fn new(provider: Box<dyn Provide>, initial: u16, max: u16, size: u32) -> io::Result<BufRing> {
        if !max.is_power_of_two() || max > 32768 || size == 0 || initial == 0 || initial > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring: the most entries must be a power of two <= 32768, and at least the initial count",
            ));
        }
        let ring = BufRing {
            provider,
            chunks: RefCell::new(Vec::new()),
            max,
            chunk: initial,
            size,
            available: Cell::new(0),
            pieces: RefCell::new(Vec::new()),
            retired: RefCell::new(Vec::new()),
            waiters: Rc::default(),
        };
        if !ring.grow() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        Ok(ring)
    }

    /// Allocates one more chunk of buffers and hands them to the kernel; false when the limit
    /// is reached or memory is short.
    fn grow(&self) -> bool {
        let retired = std::mem::take(&mut *self.retired.borrow_mut());
        if !retired.is_empty() {
            // The newest chunk was being retired: load is back, so provide its buffers again.
            for bid in retired {
                self.put_in_ring(bid);
            }
            return true;
        }
        let have = self.chunks.borrow().len();
        let first = have * usize::from(self.chunk);
        if first + usize::from(self.chunk) > usize::from(self.max) {
            return false;
        }
        // SAFETY: the layout has a non-zero size.
        let Some(memory) = NonNull::new(unsafe { alloc::alloc(self.chunk_layout()) }) else {
            return false;
        };
        self.chunks.borrow_mut().push(memory);
        self.pieces.borrow_mut().resize(first + usize::from(self.chunk), Pieces::default());
        if have > 0 {
            crate::stats::bump(|c| &c.ring_grown);
            crate::stats::trace_step!(crate::trace::Event::RingGrew {
                added: self.chunk,
                size: self.size,
                now: self.capacity()
            });
        }
        for bid in first..first + usize::from(self.chunk) {
            self.put_in_ring(bid as u16);
        }
        true
    }

    /// How many buffers the pool has now (in the ring or out), retired ones excluded.
    pub(crate) fn capacity(&self) -> u32 {
        (self.chunks.borrow().len() as u32 * u32::from(self.chunk))
            .saturating_sub(self.retired.borrow().len() as u32)
    }

    /// How many buffers the kernel can still pick from.
    pub(crate) fn available(&self) -> u32 {
        self.available.get()
    }

    /// Whether the pool is at its limit with few buffers left: readers that do not read must
    /// then give theirs back (see `Driver::complete`).
    pub(crate) fn scarce(&self) -> bool {
        let at_limit = (self.chunks.borrow().len() + 1) * usize::from(self.chunk) > usize::from(self.max);
        at_limit && self.available() * 8 < self.capacity()
    }

    /// A completion handed the program `n` bytes of buffer `bid`; `more`: the kernel keeps
    /// filling the buffer (its [`filling`](crate::backend::Completion::filling)). Returns where in the
    /// buffer those bytes start. Grows the pool when few buffers are left.
    ///
    /// Every piece handed out this way must be given back with [`release`](Self::release).
    pub(crate) fn taken(&self, bid: u16, n: u32, more: bool) -> u32 {
        let mut pieces = self.pieces.borrow_mut();
        let Some(piece) = pieces.get_mut(usize::from(bid)) else { return 0 };
        let offset = piece.filled;
        piece.filled += n;
        piece.out += 1;
        piece.done = !more;
        drop(pieces);
        if more {
            crate::stats::trace_step!(crate::trace::Event::RingPiece { bid, bytes: n, offset });
        } else {
            self.available.set(self.available.get().saturating_sub(1));
            if self.available() * 8 < self.capacity() {
                self.grow();
            }
        }
        offset
    }

    /// The program is done with a piece of buffer `bid` (see [`taken`](Self::taken)): once the
    /// kernel is done with the buffer and no piece is out, it goes back to the ring.
    pub(crate) fn release(&self, bid: u16) {
        let recycle = {
            let mut pieces = self.pieces.borrow_mut();
            let Some(piece) = pieces.get_mut(usize::from(bid)) else { return };
            piece.out = piece.out.saturating_sub(1);
            let recycle = piece.out == 0 && piece.done;
            if recycle {
                *piece = Pieces::default();
            }
            recycle
        };
        if recycle {
            self.recycle(bid);
        }
    }

    /// Buffer `bid` is free (the kernel and the program are done with it): hands it to the
    /// kernel again, or retires it if the pool is shrinking; wakes the task that has waited
    /// longest for a buffer.
    fn recycle(&self, bid: u16) {
        let chunks = self.chunks.borrow().len();
        let newest = usize::from(bid) / usize::from(self.chunk) == chunks - 1;
        if chunks > 1 && newest && self.available() * 4 > self.capacity() * 3 {
            // Load has fallen: keep this buffer out of the ring, and free its chunk once all
            // of the chunk's buffers are back.
            let all_home = {
                let mut retired = self.retired.borrow_mut();
                retired.push(bid);
                retired.len() == usize::from(self.chunk)
            };
            if all_home {
                self.shrink();
            }
            return;
        }
        crate::stats::trace_step!(crate::trace::Event::RingBufferBack { bid });
        self.put_in_ring(bid);
        self.waiters.wake_one();
    }

    /// Frees the newest chunk, all of whose buffers are retired (none is in the ring or out).
    fn shrink(&self) {
        let memory = self.chunks.borrow_mut().pop().expect("a chunk to free");
        self.retired.borrow_mut().clear();
        let buffers = self.chunks.borrow().len() * usize::from(self.chunk);
        self.pieces.borrow_mut().truncate(buffers);
        crate::stats::bump(|c| &c.ring_shrunk);
        crate::stats::trace_step!(crate::trace::Event::RingShrank { now: self.capacity() });
        // SAFETY: allocated in `grow` with this layout; every buffer of the chunk is retired,
        // so the kernel has none of them and no `ProvidedBuf` points into it.
        unsafe { alloc::dealloc(memory.as_ptr(), self.chunk_layout()) };
    }

    /// Hands buffer `bid` to the kernel.
    fn put_in_ring(&self, bid: u16) {
        debug_assert!(bid < self.max);
        self.provider.provide(bid, self.address(bid), self.size);
        self.available.set(self.available.get() + 1);
    }

    /// Where buffer `bid` starts.
    fn address(&self, bid: u16) -> *mut u8 {
        let (chunk, index) = (usize::from(bid / self.chunk), usize::from(bid % self.chunk));
        let base = self.chunks.borrow()[chunk];
        // SAFETY: `index < chunk`, so the offset stays inside the chunk's allocation.
        unsafe { base.as_ptr().add(index * self.size as usize) }
    }

    /// The `len` bytes at `offset` in buffer `bid`.
    ///
    /// # Safety
    /// They must be a piece a completion handed to the program ([`taken`](Self::taken)) and not
    /// [`release`](Self::release)d since: the kernel does not write there again until then.
    pub(crate) unsafe fn bytes(&self, bid: u16, offset: u32, len: usize) -> &[u8] {
        debug_assert!(bid < self.max && offset as usize + len <= self.size as usize);
        // SAFETY: the caller guarantees the kernel no longer writes these bytes and that they
        // are within the buffer; its chunk stays allocated while a piece of it is out.
        unsafe { std::slice::from_raw_parts(self.address(bid).add(offset as usize), len) }
    }

    /// The tasks waiting for a buffer to come back.
    pub(crate) fn waiters(&self) -> &Rc<WaitQueue> {
        &self.waiters
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `grow` with this layout; the kernel no longer uses them (the
        // backend's ring, and with it the registration, is gone before the pool: see
        // `Driver`), and no ProvidedBuf is left (each holds an Rc to this pool).
        unsafe {
            for memory in self.chunks.borrow().iter() {
                alloc::dealloc(memory.as_ptr(), self.chunk_layout());
            }
        }
    }
}
