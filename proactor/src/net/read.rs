//! A stream's receives: [`TcpStream::read`] into the caller's buffer, and
//! [`TcpStream::read_provided`] into one the runtime picks when data arrives (from the
//! provided-buffer ring, at readiness, or a buffer of its own, whichever the backend offers).

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::mem;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use super::stream::{RecvSlot, TcpStream};
use crate::backend::{BufId, Completion, Request};
use crate::buf::{self, BufResult, IoBufMut, ProvidedBuf};
use crate::bufring::{self, BufRing};
use crate::driver::Receive;
use crate::waiters::Ticket;

/// The error of a read into a buffer with no room.
fn no_room() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "read into a buffer with no room (a Vec's capacity is its room: Vec::new() has none; use \
         Vec::with_capacity(n)); a read of 0 bytes would look like end of stream",
    )
}

/// The most receive completions a stream may have waiting for its task: past it the
/// multishot receive is stopped (the peer then waits, by TCP's flow control) until the task
/// reads again. Bounds the ring buffers one stream holds while its task is busy. Half of the
/// kernel's burst (a multishot receive loops up to 32 times on a socket with data): a bulk
/// stream whose task is a little behind is not stopped and re-armed over and over.
const RECV_QUEUE_MAX: u16 = 16;

impl TcpStream {
    /// Reads into `buf` from its start, up to [`IoBufMut::bytes_total`] bytes; gives back the
    /// count (0 at end of stream) and the buffer. For a `Vec`, `len()` is then the count: its
    /// capacity is the room (make it with `Vec::with_capacity`), and what it held is replaced
    /// (use [`read_append`](Self::read_append) to keep it).
    ///
    /// A buffer with no room (`Vec::new()`, whose capacity is 0) is an error
    /// (`InvalidInput`), not a read of 0 bytes: `Ok(0)` means only end of stream here, so that
    /// a server cannot mistake a buffer it forgot to size for a peer that closed.
    ///
    /// Dropping the future before it completes cancels the read without losing data: bytes the
    /// kernel had already received into the buffer are kept for the next read. The next read
    /// waits for such a cancelled read to be over first (on io_uring that is a turn away; on
    /// aio, a read a glibc thread is blocked in ends only when data comes), so bytes always
    /// come back in order.
    ///
    /// An error of a [send behind](Self::write_all_behind) on this stream comes out here
    /// (once), also while the read waits: the wait ends with it.
    pub fn read<B: IoBufMut>(&self, buf: B) -> impl Future<Output = BufResult<usize, B>> + '_ {
        let stash = self.stash.get_or_init(Rc::default).clone();
        async move {
            if buf.bytes_total() == 0 {
                return (Err(no_room()), buf);
            }
            if let Err(e) = self.behind_error() {
                return (Err(e), buf);
            }
            if !planted!(LateBytesAfterNewer) {
                poll_fn(|cx| stash.borrow_mut().poll_no_reads(&self.driver, cx)).await;
            }
            let start = if stash.borrow().bytes.is_empty() {
                let fd = self.fd.as_raw_fd();
                // SAFETY: the pointer and length describe `buf`'s own memory, which stays put
                // (IoBufMut's contract) and is owned by the operation until its completion.
                let op = unsafe {
                    self.driver.submit(buf, false, |buf| {
                        let len = buf.bytes_total().min(u32::MAX as usize) as u32;
                        Request::Recv { fd, buf: buf.stable_mut_ptr(), len }
                    })
                };
                stash.borrow_mut().reads += 1;
                let late = stash.clone();
                Ok(op.on_orphan_cqe(move |mut buf, completion| {
                    let mut stash = late.borrow_mut();
                    if let Ok(n) = completion.into_result() {
                        // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
                        unsafe { buf.set_init(n as usize) };
                        stash.bytes.extend_from_slice(&buf.as_init_slice()[..n as usize]);
                        if n > 0 {
                            crate::stats::bump(|c| &c.recvs_kept);
                        }
                    }
                    stash.read_over();
                }))
            } else {
                Err(buf)
            };
            let (n, mut buf) = match start {
                Ok(mut op) => {
                    // A send behind of this stream that fails meanwhile ends the wait (its
                    // peer may be waiting for those bytes before it sends any): the read is
                    // cancelled, forced (on aio a read a glibc thread is blocked in ends only
                    // so), and what it brought in the race is kept for the next read.
                    let mut failed = None;
                    let (result, mut buf) = poll_fn(|cx| {
                        if failed.is_none() && op.in_flight() {
                            if let Err(e) = self.behind_error() {
                                failed = Some(e);
                                op.cancel(true);
                            }
                        }
                        Pin::new(&mut op).poll(cx)
                    })
                    .await;
                    stash.borrow_mut().read_over();
                    let result = result.and_then(Completion::into_result);
                    if let Some(e) = failed {
                        if let Ok(n @ 1..) = result {
                            // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
                            unsafe { buf.set_init(n as usize) };
                            stash.borrow_mut().bytes.extend_from_slice(&buf.as_init_slice()[..n as usize]);
                        }
                        return (Err(e), buf);
                    }
                    match result {
                        Ok(n) => {
                            // SAFETY: the kernel wrote `n` bytes at the start of the buffer.
                            unsafe { buf.set_init(n as usize) };
                            (n as usize, buf)
                        }
                        // Bytes a cancelled read received come before the error; the error will
                        // come again on the next read.
                        Err(_) if !stash.borrow().bytes.is_empty() => (0, buf),
                        Err(e) => return (Err(e), buf),
                    }
                }
                Err(buf) => (0, buf),
            };
            let mut stash = stash.borrow_mut();
            if stash.bytes.is_empty() {
                return (Ok(n), buf);
            }
            // A cancelled read got bytes before this one did: those come first.
            stash.bytes.extend_from_slice(&buf.as_init_slice()[..n]);
            let n = buf::fill_from(&mut buf, &stash.bytes);
            stash.bytes.drain(..n);
            (Ok(n), buf)
        }
    }

    /// Reads into the spare capacity of `buf`, after the bytes it holds, and gives back the
    /// count (0 at end of stream) and the buffer, whose `len()` grew by it: a partial message
    /// (half a line, say) accumulates without a copy. As [`read`](Self::read), a `buf` with no
    /// spare capacity is an error; reserve room first (`buf.reserve(n)`).
    ///
    /// ```no_run
    /// # async fn line(stream: &proactor::net::TcpStream) -> std::io::Result<Vec<u8>> {
    /// let mut line = Vec::with_capacity(256);
    /// while !line.contains(&b'\n') {
    ///     if line.len() == line.capacity() {
    ///         line.reserve(256);
    ///     }
    ///     let (read, back) = stream.read_append(line).await;
    ///     line = back;
    ///     if read? == 0 {
    ///         break; // end of stream
    ///     }
    /// }
    /// # Ok(line)
    /// # }
    /// ```
    pub fn read_append(&self, buf: Vec<u8>) -> impl Future<Output = BufResult<usize, Vec<u8>>> + '_ {
        let read = self.read(buf::Append::new(buf));
        async move {
            let (result, buf) = read.await;
            (result, buf.into_inner())
        }
    }

    /// Receives the next bytes into a buffer the runtime picks from its provided-buffer ring at
    /// the moment they arrive; `None` at end of stream.
    ///
    /// A connection waiting here holds no buffer: one multishot receive stays armed in the
    /// kernel (no SQE per read), and a buffer is taken from the shared ring only when data
    /// comes. Drop the [`ProvidedBuf`] (or write it out) to give the buffer back. When all the
    /// ring's buffers are out, receiving pauses until one is returned. Without kernel support
    /// (Linux < 6.0) each call reads into a new buffer instead. On the epoll backend the driver
    /// takes a buffer from a per-thread pool when the socket is readable: no buffer while idle
    /// there either. Do not mix with [`read`](Self::read)
    /// on the same stream.
    ///
    /// An error of a [send behind](Self::write_all_behind) on this stream comes out here too,
    /// as soon as it is known (the task is woken for it).
    pub fn read_provided(&self) -> ReadProvided<'_> {
        ReadProvided { stream: self, ticket: Ticket::default(), read: None }
    }

    pub(super) fn poll_read_provided(
        &self,
        ring: &Rc<BufRing>,
        ticket: &mut Ticket,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<ProvidedBuf>>> {
        self.behind_error()?;
        let mut recv = self.recv.borrow_mut();
        loop {
            let op = match &mut *recv {
                RecvSlot::Armed(op) => op,
                RecvSlot::Never | RecvSlot::Ended => {
                    if ring.available() == 0 {
                        // The last receive ended with ENOBUFS: wait for a buffer to come back.
                        ticket.wait(ring.waiters(), cx.waker());
                        return Poll::Pending;
                    }
                    let fd = self.fd.as_raw_fd();
                    // How much it may receive before the receive ends (see `driver::budget`).
                    let limit = ready!(self.driver.poll_allowance(&self.behind, fd, ticket, cx))?;
                    ticket.leave();
                    if matches!(*recv, RecvSlot::Ended) {
                        crate::stats::bump(|c| &c.recv_rearms);
                    }
                    // SAFETY: a receive that selects its buffer from the registered ring carries
                    // no pointer; the ring's memory outlives the ring (see `bufring`).
                    let op = unsafe {
                        self.driver.submit((), false, |_| Request::RecvMulti {
                            fd,
                            group: bufring::GROUP,
                            limit,
                        })
                    };
                    recv.arm(op.stream_receive(limit).limit_queue(RECV_QUEUE_MAX))
                }
            };
            let next = match op.poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    crate::stats::trace_step!(crate::trace::Event::MultishotWaits {
                        fd: self.fd.as_raw_fd()
                    });
                    return Poll::Pending;
                }
            };
            let Some(completion) = next else {
                *recv = RecvSlot::Ended; // the multishot receive ended: arm a new one
                continue;
            };
            let completion = completion?;
            if completion.spilled {
                // Copied out of the ring while nobody was reading (see `Op::spill_unread`).
                let bytes = op.take_spilled(completion.result.max(0) as usize);
                return Poll::Ready(Ok(Some(ProvidedBuf::owned(bytes))));
            }
            let buffer = match completion.buffer {
                Some(BufId::Ring(bid)) => Some(bid),
                _ => None,
            };
            return match (completion.into_result(), buffer) {
                (Ok(n), Some(bid)) if n > 0 => Poll::Ready(Ok(Some(ProvidedBuf::from_ring(
                    ring.clone(),
                    bid,
                    completion.offset,
                    n as usize,
                )))),
                (Ok(_), bid) => {
                    bid.into_iter().for_each(|bid| ring.release(bid));
                    Poll::Ready(Ok(None)) // end of stream
                }
                // The ring ran dry, or the driver stopped a receive nobody read (see
                // `Op::spill_unread`): arm a new one.
                (Err(e), _) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ECANCELED)) => {
                    if planted!(NoRearmAfterEnobufs) && e.raw_os_error() == Some(libc::ENOBUFS) {
                        return Poll::Pending;
                    }
                    continue;
                }
                (Err(e), _) => Poll::Ready(Err(e)),
            };
        }
    }
}

/// The future of [`TcpStream::read_provided`].
///
/// A named future rather than an `async fn`: every message of an echo makes one, and its poll
/// goes straight to the stream's (no state machine around it, nor its drop glue).
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ReadProvided<'a> {
    stream: &'a TcpStream,
    /// Where it waits for a ring buffer or for room in the memory budget, if it does (io_uring).
    ticket: Ticket,
    /// Without a ring or a backend that picks buffers: the read into a buffer of the runtime's,
    /// once started.
    #[allow(clippy::type_complexity)]
    read: Option<Pin<Box<dyn Future<Output = BufResult<usize, Vec<u8>>> + 'a>>>,
}

impl fmt::Debug for ReadProvided<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadProvided").field("stream", &self.stream).finish()
    }
}

impl Future for ReadProvided<'_> {
    type Output = io::Result<Option<ProvidedBuf>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let stream = this.stream;
        match stream.driver.receive() {
            Receive::Ring(ring) => stream.poll_read_provided(ring, &mut this.ticket, cx),
            Receive::Pick => stream.poll_read_picked(cx),
            Receive::Read => {
                // An error of a send behind ends the wait too (the read, cancelled, keeps its
                // bytes for the next one): a read in a glibc thread may wait long.
                let read = this.read.get_or_insert_with(|| Box::pin(stream.read(buf::spare_vec())));
                let (read, buf) = match stream.behind_error() {
                    Err(e) => (Err(e), Vec::new()),
                    Ok(()) => ready!(read.as_mut().poll(cx)),
                };
                this.read = None;
                // Wrapped first, so that on error or end of stream the buffer goes back to the
                // spare pool when dropped.
                let buf = ProvidedBuf::owned(buf);
                Poll::Ready(read.map(|n| (n > 0).then_some(buf)))
            }
        }
    }
}

/// The epoll backend's `read_provided`.
impl TcpStream {
    /// Receives into a buffer the backend takes only when the socket is readable
    /// ([`Request::RecvPick`]): a waiting connection holds no buffer, as with io_uring's ring.
    ///
    /// The operation lives in the stream (in `recv`, where io_uring keeps its multishot
    /// receive), not in the caller's future: a `read_provided` dropped early (a `timeout`) leaves
    /// it queued for the next call, so nothing is lost, and every connection's task stays as
    /// small as on io_uring. Bytes a cancelled `read` left behind come first.
    pub(super) fn poll_read_picked(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<ProvidedBuf>>> {
        self.behind_error()?;
        let mut recv = self.recv.borrow_mut();
        let op = match &mut *recv {
            RecvSlot::Armed(op) => op,
            RecvSlot::Never | RecvSlot::Ended => {
                if let Some(stash) = self.stash.get() {
                    let early = mem::take(&mut stash.borrow_mut().bytes);
                    if !early.is_empty() {
                        return Poll::Ready(Ok(Some(ProvidedBuf::owned(early))));
                    }
                }
                let fd = self.fd.as_raw_fd();
                // SAFETY: the request carries no pointer (the backend owns the buffer it picks).
                let op = unsafe { self.driver.submit((), false, |_| Request::RecvPick { fd }) };
                recv.arm(op)
            }
        };
        let (completion, ()) = ready!(Pin::new(op).poll(cx));
        *recv = RecvSlot::Ended;
        let completion = completion?;
        let picked = match completion.buffer {
            Some(BufId::Picked(id)) => self.driver.take_picked(id),
            _ => None,
        };
        completion.into_result()?;
        Poll::Ready(Ok(picked.map(ProvidedBuf::owned)))
    }
}
