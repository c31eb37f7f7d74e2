//! UDP echo (RFC 862): every datagram that arrives is sent back to where it came from.
//!
//! [`handle_udp`] is written once, against the [`Datagrams`] contract, and runs unchanged on
//! both runtimes, as [`handle`](crate::handle) does for TCP. The contract has the same shape
//! (the runtime picks the receive buffer; the send takes it by value), for the same reason, and
//! each runtime shows its own way to fill it:
//!
//! - on the reactor, `recv_from` waits for readiness, then `recvfrom`s into a 64 KiB buffer
//!   (one per thread) until `EAGAIN`;
//! - on the proactor (io_uring), `recv_from` is `recv_from_provided`: one multishot `RECVMSG`
//!   stays armed for every peer, and each datagram arrives with its source address in a
//!   buffer the kernel takes from the runtime's datagram ring; sending it back returns the
//!   buffer to the ring.
//!
//! One socket serves every peer, so what concerns one peer must not stop it: a datagram that
//! did not fit (it is detected with `MSG_TRUNC`, never echoed cut), an ICMP error about a peer
//! that went away (`ECONNREFUSED` on the next call), a send the kernel refused. Those are
//! skipped (see [`executor::net::is_datagram_error`]); only an error of the socket itself ends
//! the handler.
//!
//! ```no_run
//! fn main() -> std::io::Result<()> {
//!     reactor::block_on(async {
//!         let socket = reactor::net::UdpSocket::bind("127.0.0.1:7000")?;
//!         echo::udp::handle_udp(socket).await
//!     })
//! }
//! ```

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;

use executor::net::{is_datagram_error, MAX_DATAGRAM};

/// A datagram socket the UDP echo handler (or any handler written in this style) runs on.
#[allow(async_fn_in_trait)]
pub trait Datagrams {
    /// A buffer holding one received datagram, which can be sent as it is.
    type Buf: AsRef<[u8]>;

    /// Receives the next datagram, in a buffer the runtime chooses, with its source.
    async fn recv_from(&mut self) -> io::Result<(Self::Buf, SocketAddr)>;

    /// Sends `buf` as one datagram to `to`, taking it by value.
    async fn send_to(&mut self, buf: Self::Buf, to: SocketAddr) -> io::Result<()>;
}

/// The UDP echo handler: every datagram received is sent back to its source, forever.
/// Errors that concern one datagram or one peer are skipped; it returns only an error of the
/// socket itself.
pub async fn handle_udp<D: Datagrams>(mut socket: D) -> io::Result<()> {
    loop {
        let (datagram, from) = match socket.recv_from().await {
            Ok(received) => received,
            Err(e) if is_datagram_error(&e) => continue,
            Err(e) => return Err(e),
        };
        match socket.send_to(datagram, from).await {
            Ok(()) => {}
            Err(e) if is_datagram_error(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

thread_local! {
    /// The reactor's receive buffer: one per thread, lent to each `recvfrom`.
    static SPARE: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A datagram received on the reactor, in this thread's 64 KiB buffer, which it gives back
/// when dropped.
#[derive(Debug)]
pub struct ReactorDatagram {
    bytes: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for ReactorDatagram {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for ReactorDatagram {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        let _ = SPARE.try_with(|spare| *spare.borrow_mut() = Some(bytes));
    }
}

impl Datagrams for reactor::net::UdpSocket {
    type Buf = ReactorDatagram;

    async fn recv_from(&mut self) -> io::Result<(ReactorDatagram, SocketAddr)> {
        let bytes = SPARE.with_borrow_mut(Option::take).unwrap_or_else(|| vec![0; MAX_DATAGRAM]);
        let mut datagram = ReactorDatagram { bytes, len: 0 };
        let (len, from) = reactor::net::UdpSocket::recv_from(self, &mut datagram.bytes).await?;
        datagram.len = len;
        Ok((datagram, from))
    }

    async fn send_to(&mut self, buf: ReactorDatagram, to: SocketAddr) -> io::Result<()> {
        reactor::net::UdpSocket::send_to(self, buf.as_ref(), to).await.map(drop)
    }
}

impl Datagrams for proactor::net::UdpSocket {
    type Buf = proactor::net::Datagram;

    async fn recv_from(&mut self) -> io::Result<(proactor::net::Datagram, SocketAddr)> {
        self.recv_from_provided().await
    }

    // A send behind: the driver gives the buffer back to the ring when the send is over, and
    // the task is not woken for it.
    async fn send_to(&mut self, buf: proactor::net::Datagram, to: SocketAddr) -> io::Result<()> {
        proactor::net::UdpSocket::send_to_behind(self, buf, to)
    }
}
