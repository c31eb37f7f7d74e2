//! [`IdleTimeout`]: a connection that ends itself after a silence, on every runtime.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use crate::Connection;

/// A [`Connection`] whose [`recv`](Connection::recv) reports end of stream once nothing has
/// arrived for `limit`: a handler written against `Connection` then ends as if the peer had
/// closed (the echo handler shuts its side down and returns `Ok`). Everything else passes
/// through.
///
/// It works on every runtime: timers belong to the executor both runtimes share
/// (`reactor::time` and `proactor::time` are one module, re-exported here as
/// [`time`](crate::time)). The wait is one timer per `recv`, dropped when data comes first;
/// the receive it cancels loses nothing (on the proactor a multishot receive stays armed, and a
/// dropped read keeps its bytes for the next one).
///
/// [`on_idle`](Self::on_idle) runs a closure when the limit is hit (to count or log it), so
/// the caller can tell a silent peer from one that closed.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use std::time::Duration;
///
/// use echo::IdleTimeout;
///
/// reactor::block_on(async {
///     let listener = reactor::net::TcpListener::bind("127.0.0.1:0")?;
///     let mut client = reactor::net::TcpStream::connect(listener.local_addr()?).await?;
///     let (stream, _) = listener.accept().await?;
///     // The echo handler, on a connection that ends after 50 ms of silence.
///     let idle = Rc::new(Cell::new(false));
///     let conn = IdleTimeout::new(stream, Duration::from_millis(50)).on_idle({
///         let idle = idle.clone();
///         move || idle.set(true)
///     });
///     let server = reactor::spawn(echo::handle(conn));
///
///     client.write_all(b"hi").await?;
///     let mut buf = [0; 2];
///     let mut got = 0;
///     while got < 2 {
///         got += client.read(&mut buf[got..]).await?;
///     }
///     assert_eq!(&buf, b"hi");
///     // Then the client says nothing: the server ends its side.
///     assert_eq!(client.read(&mut buf).await?, 0);
///     server.await.unwrap()?;
///     assert!(idle.get());
///     Ok::<_, std::io::Error>(())
/// })?;
/// # Ok::<_, std::io::Error>(())
/// ```
///
/// For any other future, [`time::timeout`](crate::time::timeout) gives up on it after a
/// duration, on either runtime.
pub struct IdleTimeout<C, F = fn()> {
    conn: C,
    limit: Duration,
    on_idle: F,
}

impl<C: fmt::Debug, F> fmt::Debug for IdleTimeout<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleTimeout")
            .field("conn", &self.conn)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<C: Connection> IdleTimeout<C> {
    /// `conn`, ended after `limit` without receiving anything.
    pub fn new(conn: C, limit: Duration) -> IdleTimeout<C> {
        IdleTimeout { conn, limit, on_idle: || {} }
    }
}

impl<C: Connection, F: FnMut()> IdleTimeout<C, F> {
    /// Runs `on_idle` each time the limit is hit (once per connection with a handler that
    /// stops at end of stream), just before `recv` reports end of stream.
    pub fn on_idle<G: FnMut()>(self, on_idle: G) -> IdleTimeout<C, G> {
        IdleTimeout { conn: self.conn, limit: self.limit, on_idle }
    }

    /// The silence after which `recv` reports end of stream.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The connection inside.
    pub fn get_ref(&self) -> &C {
        &self.conn
    }

    /// The connection inside, unwrapped.
    pub fn into_inner(self) -> C {
        self.conn
    }
}

impl<C: Connection, F: FnMut()> Connection for IdleTimeout<C, F> {
    type Buf = C::Buf;

    async fn recv(&mut self) -> io::Result<Option<C::Buf>> {
        let IdleTimeout { conn, limit, on_idle } = self;
        let mut received = pin!(conn.recv());
        let mut expired = pin!(executor::time::sleep(*limit));
        poll_fn(|cx| {
            if let Poll::Ready(received) = received.as_mut().poll(cx) {
                return Poll::Ready(received);
            }
            match expired.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    on_idle();
                    Poll::Ready(Ok(None))
                }
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    async fn send_all(&mut self, buf: C::Buf) -> io::Result<()> {
        self.conn.send_all(buf).await
    }

    async fn send_vec(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.conn.send_vec(buf).await
    }

    async fn shutdown_write(&mut self) -> io::Result<()> {
        self.conn.shutdown_write().await
    }
}
