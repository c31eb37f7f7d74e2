//! A datagram sent behind costs no allocation of its own: its buffer and address live in the
//! socket's table of sends in flight, not in a box per datagram. Counted with an allocator
//! that counts, in a test binary of its own (the count is process-wide).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PAYLOAD: &[u8] = b"a datagram sent behind";
/// Datagrams per burst: no more than the socket keeps addresses for (its pool of 64), so that
/// none needs a new one.
const N: usize = 32;
const BURSTS: usize = 8;

/// Sends `N` datagrams behind (a burst, all of them in flight at once in the worst case) and turns the loop until `receiver` has them all and every send's completion is
/// in; the allocations meanwhile.
async fn burst(
    runtime: &proactor::Runtime,
    socket: &proactor::net::UdpSocket,
    receiver: &std::net::UdpSocket,
) -> usize {
    let to = receiver.local_addr().unwrap();
    let mut buf = [0u8; 64];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        socket.send_to_behind(PAYLOAD, to).unwrap();
    }
    let mut got = 0;
    for _ in 0..100_000 {
        while let Ok((n, _)) = receiver.recv_from(&mut buf) {
            assert_eq!(&buf[..n], PAYLOAD);
            got += 1;
        }
        if got == N && runtime.ops_in_flight() == 0 {
            break;
        }
        proactor::yield_now().await;
    }
    assert_eq!(got, N, "every datagram arrives (loopback)");
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

#[test]
fn a_datagram_sent_behind_allocates_nothing_of_its_own() {
    for backend in [proactor::Backend::IoUring, proactor::Backend::Epoll] {
        let Ok(runtime) = proactor::Builder::new().backend(backend).build() else { continue };
        runtime.block_on(async {
            let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            receiver.set_nonblocking(true).unwrap();
            let socket = proactor::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // The first burst grows what is reused afterwards (slabs, queues, pools).
            burst(&runtime, &socket, &receiver).await;
            let mut allocations = 0;
            for _ in 0..BURSTS {
                allocations += burst(&runtime, &socket, &receiver).await;
            }
            // (A few a burst, on epoll: what its turns allocate; one a datagram or more before.)
            let sent = N * BURSTS;
            assert!(
                allocations < sent / 4,
                "{backend:?}: {allocations} allocations for {sent} datagrams sent behind"
            );
        });
    }
}
