//! A write queued on io_uring with SQPOLL when its stream is dropped never reaches the socket
//! that gets the fd number next. A file of its own, so that it runs alone: it needs the number
//! it closed to be reused by the next socket this process opens, which a test opening sockets
//! on a parallel thread could take first. It depends on the real kernel's SQ thread and timing;
//! the driver's rule behind it (an fd is closed through the backend, after the operations
//! queued on it) is also checked deterministically by `tests/simulation.rs`
//! (`a_send_queued_at_a_drop_never_reaches_the_next_socket_with_its_fd`).

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::within;
use proactor::net::TcpStream;
use proactor::time::sleep;

async fn pair(listener: &std::net::TcpListener) -> (TcpStream, std::net::TcpStream) {
    let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (peer, _) = listener.accept().unwrap();
    (stream, peer)
}

#[test]
fn with_sqpoll_a_write_queued_before_close_never_reaches_the_next_socket_with_that_fd() {
    // With SQPOLL the kernel thread may read an SQE after `submit` returned; closing the fd
    // directly could let a queued write resolve the number after it was reused.
    within(Duration::from_secs(60), || {
        let runtime = proactor::Builder::new().sqpoll(Duration::from_millis(1)).build().unwrap();
        runtime.block_on(async {
            let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut reused = 0;
            for round in 0..100 {
                let (stream, _peer) = pair(&front).await;
                let fd = stream.as_raw_fd();
                sleep(Duration::from_millis(2)).await; // let the SQ thread go to sleep
                                                       // The write's SQE is queued; its future and the stream go away at once.
                drop(stream.write(&b"SECRET"[..]));
                drop(stream);
                if round % 4 == 0 {
                    // Every fourth round lets the ring close the fd before the next socket is
                    // opened, so that its number is reused; the other rounds open it while the
                    // write and the close may still wait in the SQ.
                    proactor::yield_now().await;
                    std::thread::sleep(Duration::from_millis(2));
                }
                let mut next = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
                let (mut next_peer, _) = other.accept().unwrap();
                if next.as_raw_fd() == fd || next_peer.as_raw_fd() == fd {
                    reused += 1;
                }
                sleep(Duration::from_millis(5)).await;
                // Whichever new socket got the number, a misdirected write lands at one of the
                // two ends of the new connection.
                for end in [&mut next, &mut next_peer] {
                    end.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                    let mut buf = [0u8; 16];
                    if let Ok(n) = end.read(&mut buf) {
                        assert_ne!(&buf[..n], b"SECRET", "round {round}: bytes went to another connection");
                    }
                }
            }
            // Otherwise the test checked nothing: the number must have been reused at times.
            eprintln!("the closed stream's fd number was reused in {reused} of 100 rounds");
            assert!(reused > 0, "the closed stream's fd number was never reused");
        })
    });
}
