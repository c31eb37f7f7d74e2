//! A stream's sends: [`TcpStream::write`], [`TcpStream::write_all`] and its future
//! [`WriteAll`], and sends behind ([`TcpStream::write_all_behind`], [`WriteBehind`]), which the
//! driver finishes by itself.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::stream::TcpStream;
use crate::backend::{Completion, Request};
use crate::buf::{BufResult, IoBuf, ProvidedBuf};
use crate::driver::op::Op;

impl TcpStream {
    /// Writes some of `buf` (starting at its first byte); gives back how many bytes were
    /// written, and the buffer.
    ///
    /// After a [send behind](Self::write_all_behind), the write starts once that send is over
    /// (and returns its error, if it failed).
    pub fn write<B: IoBuf>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        // Submitted now if nothing is ahead of it, as every other operation.
        let early = if self.driver.behind_idle(&self.behind, self.fd.as_raw_fd()) {
            Ok(self.send(buf, 0, false))
        } else {
            Err(buf)
        };
        async move {
            let op = match early {
                Ok(op) => op,
                Err(buf) => match self.flush().await {
                    Ok(()) => self.send(buf, 0, false),
                    Err(e) => return (Err(e), buf),
                },
            };
            let (result, buf) = op.await;
            (result.and_then(Completion::into_result).map(|n| n as usize), buf)
        }
    }

    /// Writes all of `buf`, then gives it back.
    ///
    /// After a [send behind](Self::write_all_behind), the write starts once that send is over
    /// (and returns its error, if it failed).
    pub fn write_all<B: IoBuf>(&self, buf: B) -> WriteAll<'_, B> {
        let state = if buf.bytes_init() == 0 {
            Writing::Over(Some(buf))
        } else if self.driver.behind_idle(&self.behind, self.fd.as_raw_fd()) {
            let dontwait = buf.is_shared();
            Writing::Sending(self.send(buf, 0, dontwait))
        } else {
            Writing::AfterBehind(Some(buf))
        };
        WriteAll { stream: self, state, written: 0 }
    }

    /// Hands all of `buf` to the runtime to send, and is ready as soon as the send is submitted
    /// (a "write-behind"): the task goes on without waiting for the kernel to take the bytes,
    /// and is not woken when it has. For buffers the caller is done with: the bytes of
    /// [`read_provided`](Self::read_provided) (an echo, a forwarded message), a response made
    /// for the purpose.
    ///
    /// ```no_run
    /// # async fn echo(stream: proactor::net::TcpStream) -> std::io::Result<()> {
    /// while let Some(received) = stream.read_provided().await? {
    ///     stream.write_all_behind(received).await?; // one wake per message: the receive's
    /// }
    /// stream.flush().await?; // the last send is over (or its error is here)
    /// stream.shutdown(std::net::Shutdown::Write)
    /// # }
    /// ```
    ///
    /// # What the driver does
    ///
    /// The operation's slot owns the buffer until the send is over. When the completion says
    /// every byte was taken, the driver gives the buffer back itself (a ring buffer goes back
    /// to the ring right then, so a connection that goes idle pins none), frees the slot, and
    /// wakes nobody: one wake and one poll of the task per message fewer than
    /// [`write_all`](Self::write_all), whose completion must hand the buffer back to the task. A
    /// short send (the peer's window is full) the driver continues by itself, first copying a
    /// ring buffer's unsent bytes out and giving it back (as `write_all` does: a ring buffer is
    /// sent without waiting first, see [`IoBuf::is_shared`]). The task is woken only if the
    /// send fails, or if one of its calls waits for the send to be over.
    ///
    /// # Order, and errors
    ///
    /// A stream has at most one send behind in flight, so bytes leave in the order they were
    /// handed over: the next `write_all_behind`, [`write`](Self::write) or `write_all` waits
    /// until the one in flight is over, and [`flush`](Self::flush) waits for it. An error of
    /// the send (`EPIPE`, `ECONNRESET`, ...) is kept and returned, once, by the stream's next
    /// call among those, [`read`](Self::read) and `read_provided`; the task that queued the
    /// send is woken for it, so that a task waiting in `read_provided` sees it at once. When
    /// this returns `Ok`, the bytes were handed to the runtime, not yet to the peer.
    ///
    /// # Shutting down, dropping
    ///
    /// [`shutdown`](Self::shutdown) acts at once: `flush().await` first, or the bytes still in
    /// flight may be cut off. Dropping the stream does not cut them off: the driver keeps the
    /// socket open until the send is over, then closes it, so the peer reads every byte and
    /// then the end of stream. (A peer that never reads keeps that socket, and the bytes, until
    /// it resets or the runtime is dropped; dropping the runtime cancels every send in flight.)
    /// Dropping this future before it is ready drops `buf` unsent.
    ///
    /// `buf` is a [`ProvidedBuf`] or a `Vec<u8>` (which becomes one without a copy).
    pub fn write_all_behind(&self, buf: impl Into<ProvidedBuf>) -> WriteBehind<'_> {
        WriteBehind { stream: self, buf: Some(buf.into()) }
    }

    /// Waits until no [send behind](Self::write_all_behind) of this stream is in flight; returns
    /// the error of the last one, if it failed (once).
    pub fn flush(&self) -> impl Future<Output = io::Result<()>> + '_ {
        poll_fn(move |cx| self.driver.poll_behind(&self.behind, self.fd.as_raw_fd(), cx))
    }

    /// Ready once no send behind of this stream is in flight (see [`flush`](Self::flush)), for a
    /// write that holds `buf` meanwhile. If the send ahead is stalled on the peer's window (or
    /// the ring is nearly dry), a ring buffer is copied out and given back first: waiting with
    /// it would pin it for as long as the peer takes to read (as `WriteAll` does for its own).
    fn poll_behind_with<B: IoBuf>(&self, buf: &mut B, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.fd.as_raw_fd();
        let ready = self.driver.poll_behind(&self.behind, fd, cx);
        if ready.is_pending() && buf.is_shared() && self.driver.behind_stalled(&self.behind, fd) {
            crate::stats::bump(|c| &c.sends_detached);
            crate::stats::trace_step!(crate::trace::Event::AheadStalledCopy { bytes: buf.bytes_init() });
            buf.detach();
        }
        ready
    }

    /// One `send` of `buf[offset..]`, with `MSG_NOSIGNAL` (a reset peer is `EPIPE`, not a
    /// `SIGPIPE` that kills the process), and `MSG_DONTWAIT` if `dontwait`.
    fn send<B: IoBuf>(&self, buf: B, offset: usize, dontwait: bool) -> Op<B> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: the pointer and length describe `buf[offset..]`, memory owned by the
        // operation until its completion that stays put (IoBuf's contract).
        unsafe {
            self.driver.submit(buf, false, |buf| {
                let offset = offset.min(buf.bytes_init());
                let len = (buf.bytes_init() - offset).min(u32::MAX as usize) as u32;
                Request::Send { fd, buf: buf.stable_ptr().add(offset), len, dontwait }
            })
        }
    }
}

/// The future of [`TcpStream::write_all`]: one `send` after another until every byte is out.
///
/// A named future rather than an `async fn` so that the buffer is stored once (inside the
/// operation in flight): it is part of the state of every connection task that writes.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WriteAll<'a, B: IoBuf> {
    stream: &'a TcpStream,
    state: Writing<B>,
    written: usize,
}

/// Where a [`WriteAll`] is.
enum Writing<B: IoBuf> {
    /// Waiting for the stream's send behind to be over before the first send.
    AfterBehind(Option<B>),
    /// A send in flight.
    Sending(Op<B>),
    /// Nothing (more) to send: the buffer goes back at the next poll (`None` once it has).
    Over(Option<B>),
}

impl<B: IoBuf> fmt::Debug for WriteAll<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteAll").field("written", &self.written).finish()
    }
}

impl<B: IoBuf> Future for WriteAll<'_, B> {
    type Output = BufResult<(), B>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            let op = match &mut this.state {
                Writing::Sending(op) => op,
                Writing::Over(buf) => {
                    return Poll::Ready((Ok(()), buf.take().expect("WriteAll polled after completion")))
                }
                Writing::AfterBehind(buf) => {
                    let behind = ready!(this
                        .stream
                        .poll_behind_with(buf.as_mut().expect("WriteAll polled after completion"), cx));
                    let buf = buf.take().expect("WriteAll polled after completion");
                    if let Err(e) = behind {
                        this.state = Writing::Over(None);
                        return Poll::Ready((Err(e), buf));
                    }
                    let dontwait = buf.is_shared();
                    this.state = Writing::Sending(this.stream.send(buf, 0, dontwait));
                    continue;
                }
            };
            let (result, mut buf) = ready!(Pin::new(op).poll(cx));
            match result.and_then(Completion::into_result) {
                Ok(0) => {
                    this.state = Writing::Over(None);
                    return Poll::Ready((Err(io::ErrorKind::WriteZero.into()), buf));
                }
                Ok(n) => this.written += n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Only a send without waiting ends like this: the peer's window is full.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.state = Writing::Over(None);
                    return Poll::Ready((Err(e), buf));
                }
            }
            if this.written >= buf.bytes_init() {
                this.state = Writing::Over(None);
                return Poll::Ready((Ok(()), buf));
            }
            if buf.is_shared() {
                // The peer is not taking the bytes as fast as they come: wait for it with a
                // copy of our own, and give the ring buffer back for the other connections.
                crate::stats::bump(|c| &c.sends_detached);
                crate::stats::trace_step!(crate::trace::Event::WindowFullCopy {
                    bytes: buf.bytes_init() - this.written
                });
                buf.detach();
            }
            this.state = Writing::Sending(this.stream.send(buf, this.written, false));
        }
    }
}

/// The future of [`TcpStream::write_all_behind`]: waits for the stream's send behind in flight
/// to be over, if one is, then submits the send and is ready.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WriteBehind<'a> {
    stream: &'a TcpStream,
    /// Until submitted.
    buf: Option<ProvidedBuf>,
}

impl fmt::Debug for WriteBehind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehind").field("buf", &self.buf).finish()
    }
}

impl Future for WriteBehind<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = self.stream;
        let fd = stream.fd.as_raw_fd();
        // (Checked inline first: the send ahead is almost always over, as an echo's is.)
        if !stream.driver.behind_idle(&stream.behind, fd) {
            let buf = self.buf.as_mut().expect("WriteBehind polled after completion");
            ready!(stream.poll_behind_with(buf, cx))?;
        }
        // Charged once it goes ahead, not while it waits for the send ahead of it (see `Op`).
        std::task::ready!(executor::poll_budget(cx));
        let buf = self.buf.take().expect("WriteBehind polled after completion");
        if buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(stream.driver.send_behind(&stream.behind, fd, buf, cx.waker()))
    }
}
