//! A provided-buffer ring: buffers the kernel picks from when data arrives.
//!
//! With ordinary receives, each waiting connection must hand the kernel a buffer *before* any
//! data arrives, so 10,000 idle connections pin 10,000 buffers. A buffer ring inverts that: the
//! runtime registers one pool of buffers with the ring (`IORING_REGISTER_PBUF_RING`), and a
//! receive armed with "select a buffer from group N" takes one only at the moment data is
//! there. Combined with multishot receive (one SQE, a CQE per arrival), an idle connection
//! holds no buffer and has nothing to re-submit.
//!
//! # The ring
//!
//! `entries` descriptors `{addr, len, bid}` in page-aligned memory shared with the kernel. The
//! kernel consumes descriptors from the head; the runtime appends returned buffers at the tail
//! (a 16-bit counter stored in the first descriptor's reserved field, published with a
//! release store so the kernel sees the descriptor before the new tail).
//!
//! # Who owns a buffer
//!
//! A buffer is the kernel's while its descriptor is in the ring. A CQE with
//! `IORING_CQE_F_BUFFER` hands buffer `bid` to the runtime, which wraps it in a
//! [`ProvidedBuf`](crate::buf::ProvidedBuf) for the user. Dropping that puts the descriptor
//! back at the tail. A CQE that nobody will read (its operation was dropped) gives its buffer
//! straight back. When every buffer is out, receives end with `ENOBUFS`; the stream then waits
//! until a buffer is returned and re-arms.

use std::alloc::{self, Layout};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::Waker;

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id of the runtime's one ring.
pub(crate) const GROUP: u16 = 0;

/// The ring of buffer descriptors and the buffers, owned by the driver and by every
/// [`ProvidedBuf`](crate::buf::ProvidedBuf) (through `Rc`), so the memory outlives both the
/// registration and the last buffer handed out.
pub(crate) struct BufRing {
    /// `entries` descriptors, page-aligned; shared with the kernel.
    descriptors: NonNull<BufRingEntry>,
    /// `entries * size` bytes of buffers; the kernel writes into those in the ring.
    memory: NonNull<u8>,
    entries: u16,
    size: u32,
    /// The next tail value to publish (wrapping).
    tail: Cell<u16>,
    /// Buffers currently in the ring (given to the kernel and not yet consumed).
    available: Cell<u32>,
    /// Tasks whose receive ended for lack of buffers, oldest first, woken one per buffer that
    /// comes back (waking all of them for each buffer would make a ring under pressure
    /// quadratic). Each entry has a ticket, increasing, which its future removes when dropped,
    /// so a reader that gave up cannot swallow the wake-up meant for one still waiting.
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: Cell<u64>,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("entries", &self.entries)
            .field("size", &self.size)
            .field("available", &self.available.get())
            .finish()
    }
}

const PAGE: usize = 4096;

impl BufRing {
    fn descriptors_layout(entries: u16) -> Layout {
        Layout::from_size_align(usize::from(entries) * std::mem::size_of::<BufRingEntry>(), PAGE)
            .expect("a valid layout")
    }

    fn memory_layout(entries: u16, size: u32) -> Layout {
        Layout::from_size_align(usize::from(entries) * size as usize, PAGE).expect("a valid layout")
    }

    /// Allocates `entries` buffers of `size` bytes (`entries` a power of two, at most 32768),
    /// registers them with `ring` and hands them all to the kernel.
    pub(crate) fn register(ring: &IoUring, entries: u16, size: u32) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring: entries must be a power of two <= 32768",
            ));
        }
        let descriptors_layout = Self::descriptors_layout(entries);
        let memory_layout = Self::memory_layout(entries, size);
        // SAFETY: both layouts have a non-zero size.
        let (descriptors, memory) =
            unsafe { (alloc::alloc_zeroed(descriptors_layout), alloc::alloc(memory_layout)) };
        let (Some(descriptors), Some(memory)) =
            (NonNull::new(descriptors.cast::<BufRingEntry>()), NonNull::new(memory))
        else {
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let buf_ring = BufRing {
            descriptors,
            memory,
            entries,
            size,
            tail: Cell::new(0),
            available: Cell::new(0),
            waiters: RefCell::new(VecDeque::new()),
            next_ticket: Cell::new(0),
        };
        // SAFETY: the descriptors are page-aligned, zeroed (tail 0) and `entries` long, and
        // stay allocated until `Drop`, which only runs once the ring (and with it the
        // registration) is gone: the driver drops its ring before its `Rc<BufRing>`.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(descriptors.as_ptr() as u64, entries, GROUP, 0)?;
        }
        for bid in 0..entries {
            buf_ring.provide(bid);
        }
        Ok(buf_ring)
    }

    /// How many buffers the ring has in all.
    pub(crate) fn capacity(&self) -> u32 {
        u32::from(self.entries)
    }

    /// How many buffers the kernel can still pick from.
    pub(crate) fn available(&self) -> u32 {
        self.available.get()
    }

    /// Hands buffer `bid` to the kernel (at the tail of the ring), and wakes the task that has
    /// waited longest for a buffer.
    pub(crate) fn provide(&self, bid: u16) {
        crate::stats::trace_step!(
            "  ring buffer {bid} goes back to the ring (no syscall: the ring is shared memory)"
        );
        debug_assert!(bid < self.entries);
        let tail = self.tail.get();
        let slot = usize::from(tail & (self.entries - 1));
        // SAFETY: `slot < entries`, so the descriptor is inside the allocation; the kernel only
        // reads descriptors between its head and the published tail, and this one is at the
        // tail, not yet published. The buffer address is inside `memory`.
        unsafe {
            let entry = &mut *self.descriptors.as_ptr().add(slot);
            entry.set_addr(self.memory.as_ptr().add(usize::from(bid) * self.size as usize) as u64);
            entry.set_len(self.size);
            entry.set_bid(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail field lives in the first descriptor's reserved bytes, which are
        // valid and suitably aligned for a u16; the kernel reads it concurrently, hence the
        // atomic store. Release orders the descriptor writes above before the new tail.
        unsafe {
            let tail_ptr = BufRingEntry::tail(self.descriptors.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail_ptr).store(tail, Ordering::Release);
        }
        self.available.set(self.available.get() + 1);
        let waiter = self.waiters.borrow_mut().pop_front();
        if let Some((_, waiter)) = waiter {
            waiter.wake();
        }
    }

    /// A CQE took a buffer out of the ring.
    pub(crate) fn taken(&self) {
        self.available.set(self.available.get().saturating_sub(1));
    }

    /// The first `len` bytes of buffer `bid`.
    ///
    /// # Safety
    /// The buffer must be out of the ring (handed to the runtime by a CQE and not provided
    /// again since), and `len` at most the buffer size.
    pub(crate) unsafe fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert!(bid < self.entries && len <= self.size as usize);
        // SAFETY: the caller guarantees the kernel no longer writes this buffer and that
        // `len` is within it; `memory` is allocated for `entries * size` bytes.
        unsafe {
            std::slice::from_raw_parts(self.memory.as_ptr().add(usize::from(bid) * self.size as usize), len)
        }
    }

    /// Registers `waker` to be woken when a buffer is returned. `ticket` is the caller's place
    /// in the queue: kept (with the waker updated) if still queued, else a new one is taken.
    pub(crate) fn wait_for_buffer(&self, ticket: &mut Option<u64>, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        if let Some(queued) = ticket.and_then(|t| waiters.binary_search_by_key(&t, |(t, _)| *t).ok()) {
            if !waiters[queued].1.will_wake(waker) {
                waiters[queued].1 = waker.clone();
            }
            return;
        }
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        waiters.push_back((t, waker.clone()));
        *ticket = Some(t);
    }

    /// Leaves the queue (the waiting future was dropped or got what it wanted).
    pub(crate) fn stop_waiting(&self, ticket: u64) {
        let mut waiters = self.waiters.borrow_mut();
        if let Ok(queued) = waiters.binary_search_by_key(&ticket, |(t, _)| *t) {
            let removed = waiters.remove(queued);
            drop(waiters);
            drop(removed);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with these layouts; the kernel no longer uses them
        // (see `register`), and no ProvidedBuf is left (each holds an Rc to this ring).
        unsafe {
            alloc::dealloc(self.descriptors.as_ptr().cast(), Self::descriptors_layout(self.entries));
            alloc::dealloc(self.memory.as_ptr(), Self::memory_layout(self.entries, self.size));
        }
    }
}
