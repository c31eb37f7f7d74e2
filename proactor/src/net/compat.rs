//! futures-io for [`TcpStream`]: `AsyncRead`, `AsyncBufRead` and `AsyncWrite` on the stream,
//! `AsyncRead` and `AsyncWrite` on `&TcpStream`, and the halves of [`TcpStream::split`], so that
//! a handler written with the ecosystem's tools (`futures::io::BufReader`, `read_line`,
//! `futures::io::copy`, a codec) runs on the proactor unchanged.
//!
//! # The bridge, and its price
//!
//! `poll_read(&mut [u8])` lends a buffer for the call only; a completion needs one that
//! outlives it (the kernel fills it after the call has returned). So the stream owns the
//! buffer: a receive completes into it, exactly as for
//! [`read_provided`](TcpStream::read_provided) (a provided-buffer ring buffer on io_uring, a
//! buffer picked at readiness on epoll, a buffer of the stream's own on aio), and `poll_read`
//! copies out what fits the caller's slice, keeping the rest for the next poll.
//! [`AsyncBufRead::poll_fill_buf`] hands out those bytes where they are, without that copy
//! (`read_line`, `read_until` and `futures::io::copy_buf` use it).
//!
//! `poll_write(&[u8])` copies the bytes into a buffer of its own and hands it to the driver as a
//! [send behind](TcpStream::write_all_behind): it is ready as soon as the send is submitted, and
//! the driver finishes the send alone (short sends included). A stream has one send behind in
//! flight at a time, so the next `poll_write` waits until the previous one is over, and bytes
//! leave in order. [`AsyncWrite::poll_flush`] waits for the last one; `poll_close` flushes,
//! then shuts the write side down.
//!
//! So each byte is copied once more than with the owned-buffer API on the way in (unless read
//! through `poll_fill_buf`), and once more on the way out. That is the price of lending
//! buffers to a completion runtime; the owned-buffer API ([`read_provided`](TcpStream::read_provided),
//! [`write_all_behind`](TcpStream::write_all_behind)) does not pay it.
//!
//! # Cancellation
//!
//! - A `poll_read` (or `poll_fill_buf`) that returned `Pending` leaves its receive in flight,
//!   owned by the stream, not by the future that polled it. Dropping that future (a `select!`,
//!   a `timeout`) loses no bytes: the next `poll_read` on the stream gets them, in order. The
//!   stream also keeps its place in the queue for a ring buffer or for room in the memory
//!   budget, until it reads again or is dropped.
//! - Bytes received and not read yet stay in the stream too (a `poll_read` with a small slice,
//!   a `poll_fill_buf` followed by a partial `consume`). A ring buffer is not pinned for them
//!   when buffers are short, nor while the task waits for a send behind that the peer's window
//!   stalls: the rest is copied out and the ring buffer given back.
//! - A `poll_write` that returned `Ready(Ok(n))` has taken the first `n` bytes: they are sent
//!   whatever happens to the future or the stream (dropping the stream closes it only once they
//!   are out). `poll_flush` waits until they are, and returns the send's error, if it failed.
//!   As with every send behind, that error comes out once, from the stream's next call that
//!   reports errors of sends behind: `poll_write`, `poll_flush`, `poll_close`, or a read.
//! - Dropping the stream is its usual drop: the receive in flight is cancelled, bytes not read
//!   are dropped with it, a send behind still goes out before the end of stream.
//!
//! Use either this or the owned-buffer reads on one stream, not both: bytes held for the one
//! are not seen by the other.

use std::fmt;
use std::future::Future;
use std::io;
use std::mem;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_io::{AsyncBufRead, AsyncRead, AsyncWrite};

use super::held::ReadState;
use super::stream::TcpStream;
use crate::backend::{Completion, Request};
use crate::buf::{self, IoBufMut, ProvidedBuf};
use crate::driver::op::Op;
use crate::driver::Receive;

/// The most one `poll_write` takes: the default budget of a connection (a send behind counts
/// against it until it is over). `write_all` calls again for the rest.
const WRITE_MAX: usize = 64 * 1024;

/// Where the stream reads into a buffer of its own (aio; io_uring without buffer rings): the
/// most one receive asks for. It is sized by the caller's slice, from
/// [`buf::OWNED_SIZE`](crate::buf) up to this.
const READ_MAX: usize = 64 * 1024;

/// What `poll_fill_buf` receives into there: it has no caller's slice to size the buffer by,
/// so it takes what a `futures::io::BufReader` would have held.
const FILL_SIZE: usize = 8 * 1024;

/// The reading half of a [`TcpStream`], from [`TcpStream::split`]: `AsyncRead` and
/// `AsyncBufRead`. It holds the stream's futures-io read state while it lives, and gives it
/// back (unread bytes and a receive in flight included) when dropped.
pub struct ReadHalf<'a> {
    stream: &'a TcpStream,
    /// `Some` until dropped.
    state: Option<Box<ReadState>>,
}

/// The writing half of a [`TcpStream`], from [`TcpStream::split`]: `AsyncWrite`.
#[derive(Debug)]
pub struct WriteHalf<'a> {
    stream: &'a TcpStream,
}

impl fmt::Debug for ReadHalf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHalf").field("stream", self.stream).field("state", &self.state).finish()
    }
}

impl Drop for ReadHalf<'_> {
    fn drop(&mut self) {
        self.stream.compat.set(self.state.take());
    }
}

impl TcpStream {
    /// Splits the stream into a half that reads and a half that writes, which can be used at
    /// the same time (from two futures joined in one task, say `futures::io::copy` from one to
    /// the other). Both implement the futures-io traits; see the `compat` module docs.
    ///
    /// ```no_run
    /// # async fn demo(mut stream: proactor::net::TcpStream) -> std::io::Result<()> {
    /// use futures::io::AsyncWriteExt;
    ///
    /// let (mut reader, mut writer) = stream.split();
    /// futures::io::copy_buf(&mut reader, &mut writer).await?; // an echo, until end of stream
    /// writer.close().await // the last bytes are out, then the write side is shut down
    /// # }
    /// ```
    pub fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        let state = self.compat.take().unwrap_or_default();
        let stream = &*self;
        (ReadHalf { stream, state: Some(state) }, WriteHalf { stream })
    }

    /// Runs `f` on the stream's futures-io read state, made on first use. (Taken out of the
    /// stream meanwhile: a `Cell`, so the stream stays 8 bytes larger, not 16.)
    fn with_read_state<T>(&self, f: impl FnOnce(&mut ReadState) -> T) -> T {
        let mut state = self.compat.take().unwrap_or_default();
        let out = f(&mut state);
        self.compat.set(Some(state));
        out
    }

    /// Ready once `state` holds bytes not read yet, or the end of stream: the next receive
    /// completed, into a buffer the runtime picked (or one of `want` bytes, where the stream
    /// reads into a buffer of its own). It stays in flight, in the stream, while this is pending.
    fn poll_fill(&self, state: &mut ReadState, want: usize, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The task's budget is charged by the receive that completes (see `Op`), not here: a
        // charge for waiting would leave a task with a budget of 1 none for the completion,
        // and it would be woken, polled and woken again forever.
        while state.unread().is_empty() && !state.ended {
            (state.held, state.at) = (None, 0);
            let received = match self.driver.receive() {
                Receive::Ring(ring) => self.poll_read_provided(ring, &mut state.ticket, cx),
                Receive::Pick => self.poll_read_picked(cx),
                Receive::Read => self.poll_read_owned(&mut state.read, want, cx),
            };
            match ready!(received) {
                Ok(Some(bytes)) => state.held = Some(bytes),
                Ok(None) => state.ended = true,
                // A receive a signal interrupted (aio's helper thread) is made again: the
                // ecosystem's helpers (`futures::io::copy_buf`, `read_exact`) give up on
                // `Interrupted`.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// One receive into a buffer of the stream's own (`want` bytes, within bounds), kept in
    /// `read` while in flight; `None` at end of stream. Bytes a cancelled
    /// [`read`](Self::read) left behind come first.
    fn poll_read_owned(
        &self,
        read: &mut Option<Op<Vec<u8>>>,
        want: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<ProvidedBuf>>> {
        // An error of a send behind comes out here too (the read stays in flight).
        self.behind_error()?;
        let op = match read {
            Some(op) => op,
            None => {
                if let Some(stash) = self.stash.get() {
                    let mut stash = stash.borrow_mut();
                    ready!(stash.poll_no_reads(&self.driver, cx));
                    if !stash.bytes.is_empty() {
                        return Poll::Ready(Ok(Some(ProvidedBuf::owned(mem::take(&mut stash.bytes)))));
                    }
                }
                let size = want.clamp(buf::OWNED_SIZE, READ_MAX);
                let buf = if size == buf::OWNED_SIZE { buf::spare_vec() } else { Vec::with_capacity(size) };
                let fd = self.fd.as_raw_fd();
                // SAFETY: the pointer and length describe the Vec's heap memory, which does not
                // move with it and which the operation owns until its completion.
                let op = unsafe {
                    self.driver.submit(buf, false, |buf| {
                        let len = buf.bytes_total().min(u32::MAX as usize) as u32;
                        Request::Recv { fd, buf: buf.stable_mut_ptr(), len }
                    })
                };
                read.insert(op)
            }
        };
        let (result, mut buf) = ready!(Pin::new(op).poll(cx));
        *read = None;
        let n = match result.and_then(Completion::into_result) {
            Ok(n) => n as usize,
            Err(e) => {
                drop(ProvidedBuf::owned(buf)); // back to the spare pool
                return Poll::Ready(Err(e));
            }
        };
        // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
        unsafe { buf.set_init(n) };
        // Wrapped first, so that at end of stream it goes back to the spare pool when dropped.
        let buf = ProvidedBuf::owned(buf);
        Poll::Ready(Ok((n > 0).then_some(buf)))
    }

    /// `AsyncRead::poll_read`, with the read state.
    fn poll_read_with(
        &self,
        state: &mut ReadState,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_fill(state, buf.len(), cx))?;
        let unread = state.unread();
        let n = unread.len().min(buf.len());
        buf[..n].copy_from_slice(&unread[..n]);
        state.consume(n);
        if self.driver.buf_ring().is_some_and(|ring| ring.scarce()) {
            state.detach();
        }
        Poll::Ready(Ok(n))
    }

    /// `AsyncWrite::poll_write`: a copy of up to [`WRITE_MAX`] bytes of `buf`, sent behind.
    fn poll_write_copy(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_send_over(cx))?;
        // A peer that always has room must not keep this task running forever. Charged once
        // the write goes ahead, not while it waits for the send ahead of it (see `Op`).
        ready!(executor::poll_budget(cx));
        let n = buf.len().min(WRITE_MAX);
        let copy = if n <= buf::OWNED_SIZE {
            // Goes back to the spare pool when the send is over.
            let mut copy = buf::spare_vec();
            copy.extend_from_slice(&buf[..n]);
            copy
        } else {
            buf[..n].to_vec()
        };
        self.driver.send_behind(&self.behind, self.fd.as_raw_fd(), ProvidedBuf::owned(copy), cx.waker())?;
        Poll::Ready(Ok(n))
    }

    /// `AsyncWrite::poll_flush`: ready once the stream's send behind is over, with its error if
    /// it failed. While the peer's window stalls it, unread bytes in a ring buffer are copied
    /// out (see `ReadState::detach`): the task waits here, and may wait long.
    fn poll_send_over(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.fd.as_raw_fd();
        let over = self.driver.poll_behind(&self.behind, fd, cx);
        if over.is_pending() && self.driver.behind_stalled(&self.behind, fd) {
            // (Not there while a `ReadHalf` holds it: then it stays.)
            if let Some(mut state) = self.compat.take() {
                state.detach();
                self.compat.set(Some(state));
            }
        }
        over
    }

    /// `AsyncWrite::poll_close`: flush, then shut the write side down.
    fn poll_close_write(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_over(cx))?;
        Poll::Ready(self.shutdown(Shutdown::Write))
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let stream = &*self;
        stream.with_read_state(|state| stream.poll_read_with(state, cx, buf))
    }
}

impl AsyncRead for &TcpStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let stream: &TcpStream = &self;
        stream.with_read_state(|state| stream.poll_read_with(state, cx, buf))
    }
}

/// Hands out the received bytes where they landed (a ring buffer on io_uring): no copy into a
/// `BufReader`'s buffer. (Not for `&TcpStream`, whose shared state cannot lend its bytes.)
impl AsyncBufRead for TcpStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        {
            let stream = &*this;
            ready!(stream.with_read_state(|state| stream.poll_fill(state, FILL_SIZE, cx)))?;
        }
        Poll::Ready(Ok(this.compat.get_mut().as_deref().map_or(&[], ReadState::unread)))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        if let Some(state) = self.get_mut().compat.get_mut() {
            state.consume(amt);
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_copy(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send_over(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close_write(cx)
    }
}

impl AsyncWrite for &TcpStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_copy(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send_over(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close_write(cx)
    }
}

impl ReadHalf<'_> {
    fn state(&mut self) -> &mut ReadState {
        self.state.as_mut().expect("a ReadHalf holds the state until dropped")
    }
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let stream = this.stream;
        stream.poll_read_with(this.state(), cx, buf)
    }
}

impl AsyncBufRead for ReadHalf<'_> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        let stream = this.stream;
        ready!(stream.poll_fill(this.state(), FILL_SIZE, cx))?;
        Poll::Ready(Ok(this.state().unread()))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().state().consume(amt);
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.stream.poll_write_copy(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_send_over(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_close_write(cx)
    }
}
