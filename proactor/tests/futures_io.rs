//! The futures-io traits on the proactor's `TcpStream`, on each backend (io_uring, epoll, POSIX
//! aio): what the bridge promises beyond echoing bytes (the conformance tests echo through it
//! on every runtime). A `poll_read` left pending and dropped loses nothing; bytes a small
//! `poll_read` or a partial `consume` leave stay in the stream, also across a dropped
//! `ReadHalf`; `poll_write` is ready before the bytes are out, and they still go out when the
//! stream is dropped; `poll_flush` reports a send's error; `poll_close` shuts the write side
//! only.
//!
//! The peer is a blocking std socket on loopback; each step waits (bounded) for what it needs.
//!
//! (`TcpStream`'s own owned-buffer methods `read`, `write_all`, `flush` and `split` come before
//! the extension traits' of the same names in method calls on a `TcpStream`, so these tests
//! call the traits' by path; generic code, written against the traits, does not see them.)

mod common;

use std::future::{poll_fn, Future};
use std::io::{Read, Write};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use common::{reset_on_close, within, Rng};
use futures::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use proactor::net::TcpStream;
use proactor::time::sleep;
use proactor::{Backend, Builder, Runtime};

const LIMIT: Duration = Duration::from_secs(60);

const BACKENDS: [Backend; 3] = [Backend::IoUring, Backend::Epoll, Backend::PosixAio];

fn runtime(backend: Backend) -> Runtime {
    let runtime = Builder::new().backend(backend).build().unwrap();
    assert_eq!(runtime.backend(), backend);
    runtime
}

/// Runs `test` on a fresh runtime of each backend, each in bounded time.
fn on_every_backend<F, Fut>(test: F)
where
    F: Fn(Backend) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = ()>,
{
    for backend in BACKENDS {
        within(LIMIT, move || runtime(backend).block_on(test(backend)));
    }
}

/// A connected pair: a proactor stream and the std stream at the other end.
async fn pair() -> (TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    (stream, peer)
}

/// Waits (bounded) until this runtime's receives have brought `n` more bytes than `before`.
async fn received(before: u64, n: u64) {
    for _ in 0..2000 {
        if proactor::stats().recv_bytes >= before + n {
            return;
        }
        sleep(Duration::from_millis(1)).await;
    }
    panic!("the runtime did not receive {n} bytes");
}

#[test]
fn a_pending_poll_read_dropped_loses_no_bytes() {
    on_every_backend(|backend| async move {
        let (stream, mut peer) = pair().await;
        let mut buf = [0u8; 64];
        // Polled once with nothing sent: pending, its receive in flight. Then dropped.
        {
            let mut shared = &stream;
            let mut read = pin!(AsyncReadExt::read(&mut shared, &mut buf));
            let polled = poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            assert!(polled.is_pending(), "{backend:?}: a read with nothing sent completed");
        }
        // The bytes arrive while no future waits: into the receive the stream still owns.
        let before = proactor::stats().recv_bytes;
        peer.write_all(b"kept by the stream").unwrap();
        received(before, 18).await;
        let mut got = vec![0u8; 18];
        (&stream).read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"kept by the stream", "{backend:?}");
    });
}

#[test]
fn reads_that_lose_a_race_with_a_timer_mid_message_lose_no_bytes() {
    on_every_backend(|backend| async move {
        let (mut stream, mut peer) = pair().await;
        let message = Rng::new(7).bytes(256 * 1024);
        let sent = message.clone();
        // Ragged writes with pauses, so that many reads are pending when their timer fires.
        let writer = std::thread::spawn(move || {
            let mut rng = Rng::new(8);
            let mut rest = &sent[..];
            while !rest.is_empty() {
                let n = rng.range(1, 16 * 1024).min(rest.len());
                peer.write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
                std::thread::sleep(Duration::from_micros(rng.range(0, 3000) as u64));
            }
            peer
        });
        let (mut got, mut lost_races) = (Vec::new(), 0);
        let mut buf = vec![0u8; 3000];
        for _ in 0..1_000_000 {
            if got.len() == message.len() {
                break;
            }
            let mut read = pin!(AsyncReadExt::read(&mut stream, &mut buf));
            let mut timer = pin!(sleep(Duration::from_micros(500)));
            let outcome = poll_fn(|cx| match read.as_mut().poll(cx) {
                Poll::Ready(n) => Poll::Ready(Some(n.unwrap())),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await;
            match outcome {
                Some(0) => panic!("{backend:?}: end of stream after {} bytes", got.len()),
                Some(n) => got.extend_from_slice(&buf[..n]),
                None => lost_races += 1,
            }
        }
        drop(writer.join().unwrap());
        assert!(got == message, "{backend:?}: the bytes read differ from the bytes sent");
        assert!(lost_races > 0, "{backend:?}: no read was ever dropped pending; the test tested nothing");
    });
}

#[test]
fn a_small_poll_read_and_a_partial_consume_keep_the_rest_for_the_next_read() {
    on_every_backend(|backend| async move {
        let (mut stream, mut peer) = pair().await;
        peer.write_all(b"0123456789").unwrap();
        let mut one = [0u8; 1];
        stream.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"0", "{backend:?}");
        // The rest is held by the stream: fill_buf hands it out where it is.
        let held = stream.fill_buf().await.unwrap().to_vec();
        assert!(!held.is_empty() && b"123456789".starts_with(&held), "{backend:?}: {held:?}");
        stream.consume_unpin(2);
        let mut rest = Vec::new();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"3456789", "{backend:?}");
        // After the end of stream, reads keep returning 0.
        assert_eq!(AsyncReadExt::read(&mut stream, &mut one).await.unwrap(), 0, "{backend:?}");
    });
}

#[test]
fn a_dropped_read_half_gives_its_unread_bytes_back_to_the_stream() {
    on_every_backend(|backend| async move {
        let (mut stream, mut peer) = pair().await;
        peer.write_all(b"hello").unwrap();
        {
            let (mut reader, _writer) = TcpStream::split(&mut stream);
            let mut one = [0u8; 1];
            reader.read_exact(&mut one).await.unwrap();
            assert_eq!(&one, b"h", "{backend:?}");
        }
        peer.write_all(b", world").unwrap();
        let mut rest = [0u8; 11];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ello, world", "{backend:?}");
    });
}

#[test]
fn split_halves_echo_a_mebibyte_through_copy_buf_while_the_peer_writes() {
    on_every_backend(|backend| async move {
        let (mut stream, peer) = pair().await;
        let message = Rng::new(11).bytes(1 << 20);
        let sent = message.clone();
        let mut peer_writer = peer.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let mut rng = Rng::new(12);
            let mut rest = &sent[..];
            while !rest.is_empty() {
                let n = rng.range(1, 64 * 1024).min(rest.len());
                peer_writer.write_all(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            peer_writer.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let reader_thread = std::thread::spawn(move || {
            let mut peer = peer;
            let mut echoed = Vec::new();
            peer.read_to_end(&mut echoed).unwrap();
            echoed
        });
        let (mut reader, mut writer) = TcpStream::split(&mut stream);
        let copied = futures::io::copy_buf(&mut reader, &mut writer).await.unwrap();
        writer.close().await.unwrap();
        assert_eq!(copied, message.len() as u64, "{backend:?}");
        sender.join().unwrap();
        let echoed = reader_thread.join().unwrap();
        assert!(echoed == message, "{backend:?}: the echo differs from the bytes sent");
    });
}

#[test]
fn poll_write_is_ready_before_the_bytes_are_out_and_dropping_the_stream_still_sends_them() {
    on_every_backend(|backend| async move {
        let (mut stream, mut peer) = pair().await;
        let message = Rng::new(5).bytes(1 << 20);
        let reader = std::thread::spawn(move || {
            let mut echoed = Vec::new();
            peer.read_to_end(&mut echoed).unwrap();
            echoed
        });
        // 1 MiB is more than loopback's socket buffers take at once: at least the last
        // write is still in flight when write_all returns.
        AsyncWriteExt::write_all(&mut stream, &message).await.unwrap();
        drop(stream);
        // The runtime turns meanwhile (dropping it would cancel the send still in flight).
        for _ in 0..30_000 {
            if reader.is_finished() {
                break;
            }
            sleep(Duration::from_millis(1)).await;
        }
        let echoed = reader.join().unwrap();
        assert!(echoed == message, "{backend:?}: the peer did not get every byte before end of stream");
    });
}

#[test]
fn poll_flush_reports_the_error_of_a_send_to_a_reset_peer() {
    on_every_backend(|backend| async move {
        let (mut stream, peer) = pair().await;
        reset_on_close(&peer);
        drop(peer);
        // Writes are taken at once; the reset shows in the send behind, and comes out of a
        // later write or the flush.
        let mut error = None;
        for _ in 0..1000 {
            let written = AsyncWriteExt::write_all(&mut stream, &[7u8; 4096]).await;
            let flushed = AsyncWriteExt::flush(&mut stream).await;
            if let Some(e) = written.err().or(flushed.err()) {
                error = Some(e);
                break;
            }
        }
        let error = error.unwrap_or_else(|| panic!("{backend:?}: no error writing to a reset peer"));
        assert!(
            matches!(error.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
            "{backend:?}: {error}"
        );
    });
}

#[test]
fn poll_close_sends_the_end_of_stream_and_the_stream_still_reads() {
    on_every_backend(|backend| async move {
        let (mut stream, mut peer) = pair().await;
        AsyncWriteExt::write_all(&mut stream, b"last words").await.unwrap();
        stream.close().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words", "{backend:?}");
        peer.write_all(b"still heard\n").unwrap();
        let mut line = String::new();
        futures::io::BufReader::new(&mut stream).read_line(&mut line).await.unwrap();
        assert_eq!(line, "still heard\n", "{backend:?}");
    });
}

#[test]
fn bytes_a_small_poll_read_leaves_do_not_pin_ring_buffers_when_they_run_short() {
    within(LIMIT, || {
        // Eight ring buffers at most, one message each.
        let runtime = Builder::new()
            .backend(Backend::IoUring)
            .incremental_buffers(false)
            .provided_buffers(8, 4096)
            .ring_memory_limit(8 * 4096)
            .build()
            .unwrap();
        if runtime.ring_buffers_available().is_none() {
            eprintln!("skipped: no provided-buffer ring on this kernel");
            return;
        }
        runtime.block_on(async {
            let mut conns = Vec::new();
            for i in 0..32u8 {
                let (stream, mut peer) = pair().await;
                peer.write_all(&[i; 100]).unwrap();
                conns.push((stream, peer));
            }
            // One byte of each: the other 99 stay in the stream, 32 streams for 8 buffers.
            for (i, (stream, _)) in conns.iter_mut().enumerate() {
                let mut one = [0u8; 1];
                stream.read_exact(&mut one).await.unwrap();
                assert_eq!(one[0], i as u8);
            }
            for (i, (stream, _)) in conns.iter_mut().enumerate() {
                let mut rest = [0u8; 99];
                stream.read_exact(&mut rest).await.unwrap();
                assert_eq!(rest, [i as u8; 99]);
            }
        });
    });
}
