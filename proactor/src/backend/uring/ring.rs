//! io_uring's side of a provided-buffer ring: the descriptor ring it shares with the kernel.
//!
//! `max` descriptors `{addr, len, bid}` in page-aligned memory, registered with
//! `IORING_REGISTER_PBUF_RING` as one buffer group. The kernel consumes descriptors from the
//! head; the runtime appends free buffers at the tail (a 16-bit counter stored in the first
//! descriptor's reserved field, published with a release store so the kernel sees the
//! descriptor before the new tail). The pool of buffers itself (chunks, growth, who holds
//! what) is the neutral [`BufRing`]; this is its [`Provide`].

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use crate::bufring::{BufRing, Provide};

/// `IOU_PBUF_RING_INC`: the kernel consumes each buffer piece by piece (Linux 6.12).
const IOU_PBUF_RING_INC: u16 = 2;

const PAGE: usize = 4096;

/// The descriptor ring of one buffer group, shared with the kernel.
struct Descriptors {
    /// `max` descriptors, page-aligned.
    entries: NonNull<BufRingEntry>,
    max: u16,
    /// The next tail value to publish (wrapping).
    tail: Cell<u16>,
}

fn layout(max: u16) -> Layout {
    Layout::from_size_align(usize::from(max) * std::mem::size_of::<BufRingEntry>(), PAGE)
        .expect("a valid layout")
}

impl Provide for Descriptors {
    fn provide(&self, bid: u16, addr: *mut u8, len: u32) {
        let tail = self.tail.get();
        let slot = usize::from(tail & (self.max - 1));
        // SAFETY: `slot < max`, so the descriptor is inside the allocation; the kernel only
        // reads descriptors between its head and the published tail, and this one is at the
        // tail, not yet published.
        unsafe {
            let entry = &mut *self.entries.as_ptr().add(slot);
            entry.set_addr(addr as u64);
            entry.set_len(len);
            entry.set_bid(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail field lives in the first descriptor's reserved bytes, which are
        // valid and suitably aligned for a u16; the kernel reads it concurrently, hence the
        // atomic store. Release orders the descriptor writes above before the new tail.
        unsafe {
            let tail_ptr = BufRingEntry::tail(self.entries.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail_ptr).store(tail, Ordering::Release);
        }
    }
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: allocated in `register` with this layout; the kernel no longer reads it: the
        // pool that owns this is dropped after the ring, and with it the registration, is gone
        // (or `register` unregistered it).
        unsafe { alloc::dealloc(self.entries.as_ptr().cast(), layout(self.max)) };
    }
}

/// Registers a ring of up to `max` buffers of `size` bytes with `ring` as buffer group `group`
/// (`max` a power of two, at most 32768), and allocates and provides the first `initial` of
/// them. With `incremental`, the kernel consumes each buffer piece by piece (Linux 6.12); a
/// kernel that cannot makes this fail, and nothing stays registered.
pub(super) fn register(
    ring: &IoUring,
    group: u16,
    initial: u16,
    max: u16,
    size: u32,
    incremental: bool,
) -> io::Result<BufRing> {
    if !max.is_power_of_two() || max > 32768 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "buffer ring: max must be a power of two <= 32768",
        ));
    }
    // SAFETY: the layout has a non-zero size.
    let entries = unsafe { alloc::alloc_zeroed(layout(max)) };
    let Some(entries) = NonNull::new(entries.cast::<BufRingEntry>()) else {
        return Err(io::ErrorKind::OutOfMemory.into());
    };
    let descriptors = Descriptors { entries, max, tail: Cell::new(0) };
    let flags = if incremental { IOU_PBUF_RING_INC } else { 0 };
    // SAFETY: the descriptors are page-aligned, zeroed (tail 0) and `max` long, and stay
    // allocated until `Descriptors::drop`, which only runs once the ring (and with it the
    // registration) is gone: the driver drops its backend before its pools. If registering
    // fails, the kernel did not take them.
    unsafe { ring.submitter().register_buf_ring_with_flags(entries.as_ptr() as u64, max, group, flags) }?;
    BufRing::new(Box::new(descriptors), initial, max, size).inspect_err(|_| {
        // Out of memory for the first chunk: the pool freed the descriptors already. No request
        // names this group yet (it was registered just now), so the kernel has not read them;
        // let it forget the group.
        let _ = ring.submitter().unregister_buf_ring(group);
    })
}
