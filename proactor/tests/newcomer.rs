//! The traps a first server falls into, closed: a read into a buffer with no room is an
//! error (not a read that looks like end of stream), a partial message accumulates in the
//! free tail of a buffer, and a listener dropped inside the runtime frees its port before the
//! drop returns. On every backend.

use std::future::Future;
use std::io::{self, Write};
use std::net::TcpStream as StdStream;

use proactor::net::TcpListener;
use proactor::{Backend, Builder};

fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Epoll, Backend::PosixAio];
    if Builder::new().backend(Backend::IoUring).build().is_ok() {
        backends.push(Backend::IoUring);
    } else {
        eprintln!("io_uring skipped: it cannot be set up here");
    }
    backends
}

fn on<F: std::future::Future>(backend: Backend, f: impl FnOnce() -> F) -> F::Output {
    Builder::new().backend(backend).build().expect("runtime").block_on(f())
}

#[test]
fn a_read_into_a_buffer_with_no_room_is_an_error_not_end_of_stream() {
    for backend in backends() {
        on(backend, || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let (read, buf) = stream.read(Vec::new()).await;
            let e = read.expect_err("a read into Vec::new() must not say 0 bytes");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{backend:?}: {e}");
            assert!(e.to_string().contains("with_capacity"), "{backend:?}: {e}");
            // The stream is fine: the next read with room gets the bytes.
            client.write_all(b"hi").unwrap();
            let (read, buf) = stream.read(Vec::with_capacity(buf.capacity() + 16)).await;
            assert_eq!((read.unwrap(), &buf[..]), (2, &b"hi"[..]), "{backend:?}");
        });
    }
}

#[test]
fn read_append_accumulates_a_line_in_the_free_tail() {
    for backend in backends() {
        on(backend, || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = StdStream::connect(listener.local_addr().unwrap()).unwrap();
            client.set_nodelay(true).unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let mut line = Vec::with_capacity(4);
            let mut reads = 0;
            for piece in [&b"hel"[..], b"lo, ", b"world\n"] {
                client.write_all(piece).unwrap();
                // Read until this piece is in: the kernel may hand it over in parts.
                let want = line.len() + piece.len();
                while line.len() < want {
                    if line.len() == line.capacity() {
                        line.reserve(4);
                    }
                    let (read, back) = stream.read_append(line).await;
                    line = back;
                    assert!(read.unwrap() > 0, "{backend:?}: end of stream");
                    reads += 1;
                }
            }
            assert_eq!(line, b"hello, world\n", "{backend:?}");
            assert!(reads >= 3, "{backend:?}: {reads} reads");
            // A full buffer has no room: an error, as for a read.
            let full = std::mem::take(&mut line);
            let mut full = full;
            full.shrink_to_fit();
            let (read, _) = stream.read_append(full).await;
            assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidInput, "{backend:?}");
        });
    }
}

#[test]
fn a_dropped_listener_frees_its_port_before_the_drop_returns() {
    for backend in backends() {
        on(backend, || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // An accept in flight (a multishot one on io_uring) keeps a reference to the socket
            // in the kernel: poll it once, so that it is armed, then drop it with the listener.
            {
                let accept = std::pin::pin!(listener.accept());
                let waker = futures_task::noop_waker();
                let mut cx = std::task::Context::from_waker(&waker);
                assert!(accept.poll(&mut cx).is_pending());
            }
            drop(listener);
            // No turn of the loop since: the port must be free already.
            let again = TcpListener::bind(addr);
            assert!(again.is_ok(), "{backend:?}: {:?}", again.err());
        });
    }
}
