//! Owned buffers: what a completion runtime needs instead of `&mut [u8]`.
//!
//! The kernel reads from or writes into an operation's buffer *after* the call that starts the
//! operation has returned, and possibly after the future that owns the operation was dropped.
//! A borrowed slice cannot promise to live that long, so every I/O method of this crate takes
//! its buffer by value and gives it back with the result, on success and on error alike:
//!
//! ```text
//! let (result, buf) = stream.read(Vec::with_capacity(4096)).await;
//! let n = result?;            // buf.len() == n: the bytes read
//! let (result, buf) = stream.write_all(buf).await;
//! ```
//!
//! [`BufResult`]'s docs show the ways to take such a pair apart, [`BufResultExt`] the two that
//! make `?` read naturally.
//!
//! The traits are `unsafe` to implement because the runtime hands their pointers to the kernel:
//! an implementation must keep them valid, and unchanged when the value is moved, for as long
//! as the value lives and is not accessed otherwise.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::ops::Deref;
use std::rc::Rc;

use crate::bufring::BufRing;

/// The result of an operation with the buffer handed back: `(result, buffer)`, on success and
/// on error alike.
///
/// The kernel uses the buffer while the operation runs, so every I/O method takes it by value
/// (`read(buf)`, not `read(&mut buf)`) and gives it back in the pair. There are three ways to
/// take the pair apart:
///
/// - `let (result, buf) = ...;` keeps the buffer whatever happened, to reuse it after an error
///   too;
/// - `.with_buf()?` ([`BufResultExt::with_buf`]): the value and the buffer, or the error (the
///   buffer is dropped with it);
/// - `.without_buf()?` ([`BufResultExt::without_buf`], or `.0?`): the value alone, when the
///   buffer is not needed any more.
///
/// A buffer to write must be owned as well: `write_all(&out)` does not compile (the kernel may
/// still read the bytes after a borrow would have ended, so only `&'static` bytes can be lent).
/// Pass `out` itself and take it back from the result, or a literal `b"..."`.
///
/// ```
/// use proactor::net::{TcpListener, TcpStream};
/// use proactor::BufResultExt;
///
/// proactor::block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     let client = TcpStream::connect(listener.local_addr()?).await?;
///     let (server, _) = listener.accept().await?;
///
///     // A literal; nothing to take back.
///     client.write_all(b"hello").await.without_buf()?;
///
///     // The count and the buffer (for a `Vec`, `len()` is then the count), or the error.
///     let (n, buf) = server.read(Vec::with_capacity(64)).await.with_buf()?;
///     assert_eq!(&buf[..n], b"hello");
///
///     // The pair itself: the buffer comes back whatever happened, to be reused.
///     let mut reply = buf;
///     reply.extend_from_slice(b", world");
///     let (written, reply) = server.write_all(reply).await;
///     written?;
///     assert_eq!(reply, b"hello, world"); // given back as it was, to clear and reuse
///     Ok::<_, std::io::Error>(())
/// })?;
/// # Ok::<_, std::io::Error>(())
/// ```
pub type BufResult<T, B> = (io::Result<T>, B);

/// `?` on a [`BufResult`], for when the buffer is needed only with the value, or not at all.
///
/// Implemented for every `BufResult`; bring it in with `use proactor::BufResultExt;`. See
/// [`BufResult`] for an example.
pub trait BufResultExt<T, B>: sealed::Sealed {
    /// The value and the buffer, or the error; on error the buffer is dropped:
    /// `let (n, buf) = stream.read(buf).await.with_buf()?;`
    fn with_buf(self) -> io::Result<(T, B)>;

    /// The value alone; the buffer is dropped: `stream.write_all(out).await.without_buf()?;`
    fn without_buf(self) -> io::Result<T>;
}

impl<T, B> BufResultExt<T, B> for BufResult<T, B> {
    fn with_buf(self) -> io::Result<(T, B)> {
        let (result, buf) = self;
        result.map(|value| (value, buf))
    }

    fn without_buf(self) -> io::Result<T> {
        self.0
    }
}

mod sealed {
    /// Keeps [`BufResultExt`](super::BufResultExt) to `BufResult`.
    pub trait Sealed {}

    impl<T, B> Sealed for super::BufResult<T, B> {}
}

/// A buffer the kernel may read from (the source of a write).
///
/// # Safety
/// `stable_ptr()` must be valid for reads of `bytes_init()` bytes, and must not change when
/// the value is moved, while the value is alive and not mutated.
pub unsafe trait IoBuf: Unpin + 'static {
    /// Where the bytes start.
    fn stable_ptr(&self) -> *const u8;
    /// How many bytes are initialised (and will be written out).
    fn bytes_init(&self) -> usize;

    /// The initialised bytes.
    fn as_init_slice(&self) -> &[u8] {
        // SAFETY: the trait's contract: `stable_ptr` is valid for reads of `bytes_init` bytes
        // while `self` is alive and not mutated, which the shared borrow guarantees.
        unsafe { std::slice::from_raw_parts(self.stable_ptr(), self.bytes_init()) }
    }

    /// Whether the bytes live in memory shared by every connection (a provided-buffer ring
    /// buffer), which a send blocked by a peer that does not read must not hold. A write of
    /// such a buffer tries without waiting first; if the peer's window is full, it calls
    /// [`detach`](Self::detach) and waits with its own copy. False for ordinary buffers.
    #[doc(hidden)]
    fn is_shared(&self) -> bool {
        false
    }

    /// Moves the bytes into memory of the buffer's own and gives the shared memory back (see
    /// [`is_shared`](Self::is_shared)). Afterwards `stable_ptr` points to the copy.
    #[doc(hidden)]
    fn detach(&mut self) {}
}

/// A buffer the kernel may write into (the target of a read).
///
/// A read fills the buffer from its start, up to [`bytes_total`](Self::bytes_total), then
/// calls [`set_init`](Self::set_init) with the number of bytes it got.
///
/// # Safety
/// `stable_mut_ptr()` must be valid for writes of `bytes_total()` bytes, and must not change
/// when the value is moved, while the value is alive and not accessed otherwise.
pub unsafe trait IoBufMut: IoBuf {
    /// Where the kernel writes.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// How many bytes the kernel may write.
    fn bytes_total(&self) -> usize;
    /// Records that the first `n` bytes now hold what was read.
    ///
    /// # Safety
    /// The first `n` bytes (`n <= bytes_total()`) must be initialised.
    unsafe fn set_init(&mut self, n: usize);
}

// SAFETY: a Vec's heap buffer does not move when the Vec does; `as_ptr` is valid for `len`.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

/// A read replaces the contents: afterwards `len()` is the number of bytes read. The kernel
/// may fill the whole capacity (`Vec::with_capacity` is the natural way to make one).
// SAFETY: the heap buffer does not move with the Vec and is valid for `capacity` bytes.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, n: usize) {
        // SAFETY: the caller guarantees the first `n <= capacity` bytes are initialised.
        unsafe { self.set_len(n) }
    }
}

/// A `Vec`'s spare capacity as the target of a read: the bytes read are appended after its
/// contents (see [`TcpStream::read_append`](crate::net::TcpStream::read_append)). As an
/// [`IoBuf`], it is the bytes appended so far.
pub(crate) struct Append {
    vec: Vec<u8>,
    /// Where the appended part starts: the `Vec`'s length when it was wrapped.
    start: usize,
}

impl Append {
    pub(crate) fn new(vec: Vec<u8>) -> Append {
        Append { start: vec.len(), vec }
    }

    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.vec
    }
}

// SAFETY: the pointer is `start` bytes into the Vec's heap buffer, which does not move when the
// Vec does; `bytes_init` counts the initialised bytes after it.
unsafe impl IoBuf for Append {
    fn stable_ptr(&self) -> *const u8 {
        self.vec[self.start..].as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.vec.len() - self.start
    }
}

// SAFETY: the spare capacity after `start` is valid for writes of `capacity - start` bytes and
// does not move with the Vec.
unsafe impl IoBufMut for Append {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.vec.spare_capacity_mut().as_mut_ptr().cast()
    }
    fn bytes_total(&self) -> usize {
        self.vec.capacity() - self.start
    }
    unsafe fn set_init(&mut self, n: usize) {
        // SAFETY: the caller guarantees the `n <= bytes_total` bytes after `start` are
        // initialised.
        unsafe { self.vec.set_len(self.start + n) }
    }
}

// SAFETY: a boxed slice's heap memory does not move when the box does.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

/// A read writes at the start; the length stays that of the slice (use the returned count).
// SAFETY: the heap memory does not move with the box and is valid for `len` bytes.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
    unsafe fn set_init(&mut self, _n: usize) {}
}

// SAFETY: 'static data never moves and is never freed.
unsafe impl IoBuf for &'static [u8] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: 'static data never moves and is never freed.
unsafe impl<const N: usize> IoBuf for &'static [u8; N] {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        N
    }
}

// SAFETY: 'static data never moves and is never freed.
unsafe impl IoBuf for &'static str {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: a String's heap buffer does not move when the String does.
unsafe impl IoBuf for String {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

/// Copies as much of `src` as fits into `buf` (from its start) and records it as `buf`'s
/// contents; returns how many bytes were copied.
pub(crate) fn fill_from<B: IoBufMut>(buf: &mut B, src: &[u8]) -> usize {
    let n = src.len().min(buf.bytes_total());
    // SAFETY: `stable_mut_ptr` is valid for writes of `bytes_total >= n` bytes (the trait's
    // contract), `src` is valid for `n` reads, and the two cannot overlap (`buf` is borrowed
    // mutably); the first `n` bytes are then initialised.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), buf.stable_mut_ptr(), n);
        buf.set_init(n);
    }
    n
}

/// Bytes received into a buffer the runtime picked from its provided-buffer ring (see
/// [`TcpStream::read_provided`](crate::net::TcpStream::read_provided)).
///
/// Dereferences to the bytes received. Dropping it gives the buffer back to the ring, so hold
/// it only as long as needed; it can be passed to `write`/`write_all` as is (it is an
/// [`IoBuf`]), and goes back to the ring once that write is done with it.
pub struct ProvidedBuf {
    inner: Provided,
}

enum Provided {
    /// `len` bytes at `offset` in buffer `bid` of the ring (the whole buffer holds one piece,
    /// or, with incremental consumption, several).
    Ring { ring: Rc<BufRing>, bid: u16, offset: u32, len: usize },
    /// Without a ring (older kernels): an ordinary buffer.
    Owned(Vec<u8>),
}

/// Size of the buffers `read_provided` reads into without a ring.
pub(crate) const OWNED_SIZE: usize = 4096;
/// At most this many of them are kept per thread for reuse (4 MiB; io_uring's ring may grow
/// to 16 MiB for the same job, see `Builder::ring_memory_limit`). The pool must hold as many
/// as are out at once: on the epoll backend a turn receives on every readable socket before
/// the first of those buffers comes back (when its send is over, a turn later), so a turn of
/// a thousand echoes takes a thousand. With 64 kept, every receive past the 64th of a turn
/// allocates 4 KiB and its send frees it: 2,165–2,246 against 2,004 user instructions per
/// echo at 256 connections (`scripts/echo-instructions.sh`, 2026-12-06, 2 shared vCPUs).
const SPARE_MAX: usize = 1024;

thread_local! {
    /// Buffers of `read_provided` without a ring (the epoll and aio backends, older kernels),
    /// kept for the next read: a fresh 4 KiB per message would cost a malloc and a free every
    /// time. Only buffers that were in use at once come here: the pool's size is the peak of
    /// buffers out, up to `SPARE_MAX`.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of `OWNED_SIZE` bytes' capacity, reused if one is spare.
pub(crate) fn spare_vec() -> Vec<u8> {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(OWNED_SIZE))
}

impl ProvidedBuf {
    /// Copies the bytes out of the ring into a buffer of their own, and gives the ring buffer
    /// back (see `IoBuf::is_shared`).
    fn detach_from_ring(&mut self) {
        if let Provided::Ring { .. } = self.inner {
            let copy = self.to_vec();
            if let Provided::Ring { ring, bid, .. } =
                std::mem::replace(&mut self.inner, Provided::Owned(copy))
            {
                ring.release(bid);
            }
        }
    }

    pub(crate) fn from_ring(ring: Rc<BufRing>, bid: u16, offset: u32, len: usize) -> ProvidedBuf {
        ProvidedBuf { inner: Provided::Ring { ring, bid, offset, len } }
    }

    pub(crate) fn owned(bytes: Vec<u8>) -> ProvidedBuf {
        ProvidedBuf { inner: Provided::Owned(bytes) }
    }

    /// Takes the buffer apart for a send the driver finishes by itself: a piece of `ring`
    /// (`bid`, `offset`, `len`), whose release is the caller's from now on, or bytes of their
    /// own (a piece of another ring is copied out, and given back to it).
    pub(crate) fn into_parts(self, ring: Option<&Rc<BufRing>>) -> Result<(u16, u32, u32), Vec<u8>> {
        // Taken apart without this value's `Drop` (which would look for a piece to release or
        // a buffer to pool, once per send behind): what is left in it, an empty `Vec`, holds
        // nothing to free.
        let inner =
            std::mem::replace(&mut std::mem::ManuallyDrop::new(self).inner, Provided::Owned(Vec::new()));
        match inner {
            // The piece is the caller's now.
            Provided::Ring { ring: of, bid, offset, len }
                if ring.is_some_and(|ring| Rc::ptr_eq(ring, &of)) =>
            {
                Ok((bid, offset, len as u32))
            }
            Provided::Owned(bytes) => Err(bytes),
            inner @ Provided::Ring { .. } => {
                let mut other = ProvidedBuf { inner };
                other.detach_from_ring();
                match std::mem::replace(&mut other.inner, Provided::Owned(Vec::new())) {
                    Provided::Owned(bytes) => Err(bytes),
                    Provided::Ring { .. } => unreachable!("detached above"),
                }
            }
        }
    }
}

/// An ordinary buffer as a `ProvidedBuf`, for the calls that take one
/// ([`TcpStream::write_all_behind`](crate::net::TcpStream::write_all_behind)). No copy, no
/// allocation.
impl From<Vec<u8>> for ProvidedBuf {
    fn from(bytes: Vec<u8>) -> ProvidedBuf {
        ProvidedBuf::owned(bytes)
    }
}

impl ProvidedBuf {
    /// The number of bytes, without finding them (as `Deref` to the bytes would, for a piece
    /// of the ring: the address of its buffer).
    #[inline]
    pub fn len(&self) -> usize {
        match &self.inner {
            Provided::Ring { len, .. } => *len,
            Provided::Owned(bytes) => bytes.len(),
        }
    }

    /// Whether it holds no bytes (see [`len`](Self::len)).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Deref for ProvidedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: a CQE handed buffer `bid` to the runtime with `len` bytes, and it is not
            // provided again until this value is dropped.
            Provided::Ring { ring, bid, offset, len } => unsafe { ring.bytes(*bid, *offset, *len) },
            Provided::Owned(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for ProvidedBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for ProvidedBuf {
    fn drop(&mut self) {
        match &mut self.inner {
            Provided::Ring { ring, bid, .. } => ring.release(*bid),
            Provided::Owned(bytes) if bytes.capacity() == OWNED_SIZE => {
                let mut bytes = std::mem::take(bytes);
                bytes.clear();
                // (try_with: during thread exit the pool may be gone; the buffer is then freed.)
                let _ = SPARE.try_with(|spare| {
                    let mut spare = spare.borrow_mut();
                    if spare.len() < SPARE_MAX {
                        spare.push(bytes);
                    }
                });
            }
            Provided::Owned(_) => {}
        }
    }
}

impl fmt::Debug for ProvidedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (source, bid) = match &self.inner {
            Provided::Ring { bid, .. } => ("ring", Some(*bid)),
            Provided::Owned(_) => ("owned", None),
        };
        f.debug_struct("ProvidedBuf")
            .field("source", &source)
            .field("bid", &bid)
            .field("len", &self.len())
            .finish()
    }
}

// SAFETY: the bytes live in the ring's heap memory (or the Vec's), which does not move when the
// value does and stays allocated (and out of the kernel's hands) until the value is dropped.
unsafe impl IoBuf for ProvidedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.deref().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.deref().len()
    }

    fn is_shared(&self) -> bool {
        matches!(self.inner, Provided::Ring { .. })
    }

    fn detach(&mut self) {
        self.detach_from_ring();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_buf_gives_the_buffer_on_success_and_the_error_otherwise() {
        let ok: BufResult<usize, Vec<u8>> = (Ok(3), b"abc".to_vec());
        assert_eq!(ok.with_buf().unwrap(), (3, b"abc".to_vec()));
        let failed: BufResult<usize, Vec<u8>> = (Err(io::ErrorKind::BrokenPipe.into()), Vec::new());
        assert_eq!(failed.with_buf().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        let failed: BufResult<usize, Vec<u8>> = (Err(io::ErrorKind::BrokenPipe.into()), Vec::new());
        assert_eq!(failed.without_buf().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_static_byte_string_is_a_buffer_to_write() {
        let literal: &'static [u8; 5] = b"hello";
        assert_eq!(literal.as_init_slice(), b"hello");
    }
}
