//! Cross-runtime integration tests live in this package's test targets (see Cargo.toml); this
//! library holds nothing but what they share.

use std::net::SocketAddr;

use echo::server::RuntimeKind;

/// Starts an echo server on `kind` on an ephemeral loopback port (IPv4 or IPv6).
pub fn server(kind: RuntimeKind, ipv6: bool) -> SocketAddr {
    let addr: SocketAddr = if ipv6 { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
    echo::server::spawn(kind, addr).unwrap_or_else(|e| panic!("starting the {kind} server: {e}"))
}
