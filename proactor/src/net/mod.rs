//! TCP: [`TcpListener`] and [`TcpStream`], IPv4 and IPv6, with owned buffers; UDP:
//! [`UdpSocket`] (in its own module, `udp`, re-exported here).
//!
//! Every I/O method describes one operation to the kernel (an SQE, on io_uring) and awaits its
//! completion. Buffers are passed by value and handed back with the result (see
//! [`crate::buf`]), because the kernel uses them after the call has returned. The `unsafe`
//! blocks here, like those of `driver`, `buf` and `bufring`, are where memory is handed to the
//! kernel: a request built around a pointer into a buffer the operation owns.
//!
//! - `listener`: [`TcpListener`]; accepting uses multishot accept where the backend has it (one
//!   request keeps producing connections), stopped while 64 accepted connections wait
//!   unclaimed, and single-shot accept otherwise.
//! - `stream`: [`TcpStream`], connecting, closing (through the backend, after every operation
//!   already started on the socket); `read` its receives and the future [`ReadProvided`],
//!   `write` its sends and the futures [`WriteAll`] and [`WriteBehind`];
//! - `compat`: the futures-io traits on [`TcpStream`], `&TcpStream` and its halves
//!   ([`ReadHalf`], [`WriteHalf`]): a buffer the stream owns bridges the slice `poll_read`
//!   lends and the buffer a completion needs, and `poll_write` sends a copy behind; `held`,
//!   what those reads keep in the stream between polls.

mod addr;
mod compat;
mod held;
mod listener;
mod read;
mod stream;
mod write;

pub use crate::udp::{Datagram, UdpSocket};
pub use compat::{ReadHalf, WriteHalf};
pub use executor::net::{is_datagram_error, DatagramTruncated, MAX_DATAGRAM};
pub use listener::TcpListener;
pub use read::ReadProvided;
pub use stream::TcpStream;
pub use write::{WriteAll, WriteBehind};
