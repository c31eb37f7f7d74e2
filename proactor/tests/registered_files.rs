//! io_uring's registered files (see the `backend::uring` module docs): each socket goes into the
//! ring's table once, at its first receive or send, not per operation; a dropped stream's socket
//! really closes (the table's reference goes with it: the peer reads the end of the stream, and
//! a reset one a reset); an entry freed by a close serves the socket that gets the number next.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;

use common::{within, Peers};
use proactor::net::TcpStream;
use proactor::{Backend, Builder};

/// Where io_uring has sparse file tables (Linux 5.19) and is not disabled, a runtime without
/// registered files is a bug; elsewhere the test says it was skipped.
fn must_register() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|setting| setting.trim() != "0");
    testkit::kernel_at_least(5, 19) && !disabled
}

#[test]
fn a_socket_is_registered_once_and_closes_for_its_peer_when_dropped() {
    within(std::time::Duration::from_secs(60), || {
        let Ok(runtime) = Builder::new().backend(Backend::IoUring).build() else {
            assert!(!must_register(), "no io_uring runtime on a kernel that has one");
            return common::skipped("registered files", "no io_uring here");
        };
        runtime.block_on(async {
            let peers = Peers::new();
            let before = proactor::stats();
            const ROUNDS: usize = 50;
            for generation in 0..3 {
                let mut pairs = Vec::new();
                for _ in 0..4 {
                    pairs.push(peers.pair(TcpStream::connect).await);
                }
                // Each stream echoes ROUNDS messages through reads and writes of its own.
                for round in 0..ROUNDS {
                    for (i, (_, peer)) in pairs.iter_mut().enumerate() {
                        peer.write_all(&[(generation * 100 + i * 10 + round % 10) as u8; 100]).unwrap();
                    }
                    for (i, (stream, peer)) in pairs.iter_mut().enumerate() {
                        let got = common::read_exact(stream, 100).await.unwrap();
                        assert_eq!(got, vec![(generation * 100 + i * 10 + round % 10) as u8; 100]);
                        let (written, _) = stream.write_all(got).await;
                        written.unwrap();
                        let mut echo = [0; 100];
                        peer.read_exact(&mut echo).unwrap();
                    }
                }
                // Dropped streams close for their peers: end of stream, not a wait. (The close
                // goes through the ring: a short sleep lets the loop turn and submit it.)
                for (stream, mut peer) in pairs {
                    drop(stream);
                    proactor::time::sleep(std::time::Duration::from_millis(1)).await;
                    let mut rest = Vec::new();
                    peer.read_to_end(&mut rest).expect("the end of stream, within the read timeout");
                    assert!(rest.is_empty());
                    peer.shutdown(Shutdown::Both).ok();
                }
            }
            let used = proactor::stats().since(&before);
            if used.files_registered == 0 {
                assert!(
                    !must_register(),
                    "no socket registered on a kernel with sparse file tables: {used:?}"
                );
                return common::skipped(
                    "registered files",
                    "this kernel's io_uring has no sparse file table",
                );
            }
            // Once per socket (12 streams over three generations, whose fd numbers were reused),
            // not per operation (some 1,200 receives and sends).
            assert_eq!(used.files_registered, 12, "{used:?}");
        });
    });
}
