//! A socket address at a stable heap address, for the kernel to read (connect) or write
//! (accept) while the operation is in flight.

use std::mem;
use std::net::SocketAddr;

use crate::sys;

/// A socket address the kernel writes (accept) or reads (connect), at a stable heap address.
pub(super) struct SockAddr {
    pub(super) storage: libc::sockaddr_storage,
    pub(super) len: libc::socklen_t,
}

impl SockAddr {
    pub(super) fn empty() -> Box<SockAddr> {
        let (storage, _) = sys::sockaddr_from(&SocketAddr::from(([0, 0, 0, 0], 0)));
        Box::new(SockAddr { storage, len: mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t })
    }

    pub(super) fn from(addr: &SocketAddr) -> Box<SockAddr> {
        let (storage, len) = sys::sockaddr_from(addr);
        Box::new(SockAddr { storage, len })
    }
}
