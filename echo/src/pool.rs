//! A per-thread pool of receive buffers for the readiness runtime.
//!
//! A connection waiting for data holds no buffer; when data is there it takes one from this
//! pool, and the buffer comes back when the [`PooledBuf`] is dropped (after it was sent). In
//! steady state nothing is allocated per message.

use std::cell::RefCell;

/// The size of each buffer.
pub const BUF_SIZE: usize = 16 * 1024;
/// Buffers kept for reuse per thread; more are allocated (and freed) on demand.
const KEEP: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer from the pool, holding `len` received bytes; returns to the pool when dropped.
#[derive(Debug)]
pub struct PooledBuf {
    bytes: Vec<u8>,
    len: usize,
}

impl PooledBuf {
    /// Takes a buffer from this thread's pool (or allocates one).
    #[inline]
    pub fn take() -> PooledBuf {
        let bytes = FREE.with_borrow_mut(Vec::pop).unwrap_or_else(|| vec![0; BUF_SIZE]);
        PooledBuf { bytes, len: 0 }
    }

    /// The whole buffer, to read into.
    #[inline]
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Records that the first `len` bytes hold data.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.bytes.len());
    }
}

impl AsRef<[u8]> for PooledBuf {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for PooledBuf {
    #[inline]
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        FREE.with_borrow_mut(|free| {
            if free.len() < KEEP {
                free.push(bytes);
            }
        });
    }
}
