//! Handlers written only against `futures::io`, as a third party writes them (a line echo on
//! `BufReader::read_line` + `write_all`; an echo through `split` + `futures::io::copy`; an echo
//! whose every read races a timer), built unchanged for the reactor's and the proactor's
//! `TcpStream` and served on every runtime and backend: reactor, io_uring, POSIX aio, and the
//! proactor on epoll. Byte-exact with ragged writes, 1 MiB lines and 4 MiB streams; the peer's
//! half-close; a peer that resets mid-message; reads dropped pending mid-message lose nothing.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::pin;
use std::sync::mpsc;
use std::time::Duration;

use echo::server::RuntimeKind;
use futures::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use testkit::{blocking_round_trip, within, Rng};

const LIMIT: Duration = Duration::from_secs(120);

// ---- The third party's handlers: futures::io only, nothing of either runtime. ----

/// A line echo: each line back as it comes (the last one may lack its newline).
async fn line_echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> io::Result<()> {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            break;
        }
        stream.get_mut().write_all(line.as_bytes()).await?;
    }
    stream.into_inner().close().await
}

/// An echo through `futures::io::copy`, from the read half to the write half.
async fn copy_echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> io::Result<()> {
    let (reader, mut writer) = stream.split();
    futures::io::copy(reader, &mut writer).await?;
    writer.close().await
}

/// An echo whose every read races a short timer: a read that loses is dropped pending, often
/// in the middle of a message. Returns how many reads lost.
async fn racing_echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> io::Result<u64> {
    use futures::future::{select, Either};
    let mut buf = vec![0u8; 3000];
    let mut lost = 0;
    loop {
        let read = stream.read(&mut buf);
        let timer = echo::time::sleep(Duration::from_micros(300));
        match select(read, pin!(timer)).await {
            Either::Left((read, _)) => match read? {
                0 => break,
                n => stream.write_all(&buf[..n]).await?,
            },
            Either::Right(((), _)) => lost += 1,
        }
    }
    stream.close().await?;
    Ok(lost)
}

// ---- Serving them on each runtime. ----

#[derive(Clone, Copy, Debug)]
enum Handler {
    Lines,
    Copy,
    Racing,
}

/// Runs `handler` on `stream` (either runtime's); the outcome, with the lost races of `Racing`.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(handler: Handler, stream: S) -> io::Result<u64> {
    match handler {
        Handler::Lines => line_echo(stream).await.map(|()| 0),
        Handler::Copy => copy_echo(stream).await.map(|()| 0),
        Handler::Racing => racing_echo(stream).await,
    }
}

/// Serves `handler` on a runtime of `kind` on its own thread; returns the address and each
/// connection's outcome as it ends.
fn serve(kind: RuntimeKind, handler: Handler) -> (SocketAddr, mpsc::Receiver<io::Result<u64>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, outcomes) = mpsc::channel();
    std::thread::spawn(move || match kind {
        RuntimeKind::Reactor => reactor::block_on(async move {
            let listener = reactor::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let done = done.clone();
                reactor::spawn(async move { drop(done.send(run(handler, stream).await)) });
            }
        }),
        _ => echo::server::proactor_runtime(kind).unwrap().block_on(async move {
            let listener = proactor::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let done = done.clone();
                proactor::spawn(async move { drop(done.send(run(handler, stream).await)) });
            }
        }),
    });
    (addr, outcomes)
}

/// Every runtime and backend, with `handler`.
fn each_runtime(handler: Handler, test: impl Fn(RuntimeKind, SocketAddr, &mpsc::Receiver<io::Result<u64>>)) {
    for kind in RuntimeKind::ALL {
        let (addr, outcomes) = serve(kind, handler);
        test(kind, addr, &outcomes);
    }
}

/// Random printable lines of random lengths (a few up to 1 MiB), the last without its newline.
fn lines(seed: u64, total: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(total + (1 << 20));
    while out.len() < total {
        let len = if rng.range(0, 50) == 0 { rng.range(64 << 10, 1 << 20) } else { rng.range(0, 3000) };
        out.extend((0..len).map(|_| b' ' + (rng.next_u64() % 95) as u8));
        out.push(b'\n');
    }
    out.extend_from_slice(b"no newline at the end");
    out
}

#[test]
fn a_line_echo_on_futures_io_is_byte_exact_with_ragged_writes_on_every_runtime() {
    each_runtime(Handler::Lines, |kind, addr, outcomes| {
        let data = lines(kind as u64 + 1, 3 << 20);
        let echoed = within(LIMIT, {
            let data = data.clone();
            move || blocking_round_trip(addr, data, 9)
        });
        assert!(echoed == data, "{kind}: the echoed lines differ from the lines sent");
        outcomes.recv_timeout(LIMIT).unwrap().unwrap_or_else(|e| panic!("{kind}: {e}"));
    });
}

#[test]
fn copy_between_split_halves_echoes_four_mebibytes_byte_exact_on_every_runtime() {
    each_runtime(Handler::Copy, |kind, addr, outcomes| {
        let data = Rng::new(kind as u64 + 20).bytes(4 << 20);
        let echoed = within(LIMIT, {
            let data = data.clone();
            move || blocking_round_trip(addr, data, 21)
        });
        assert!(echoed == data, "{kind}: the echo differs from the bytes sent");
        outcomes.recv_timeout(LIMIT).unwrap().unwrap_or_else(|e| panic!("{kind}: {e}"));
    });
}

#[test]
fn a_peer_that_half_closes_reads_every_byte_then_the_end_of_stream_on_every_runtime() {
    for handler in [Handler::Lines, Handler::Copy] {
        each_runtime(handler, |kind, addr, outcomes| {
            let mut peer = TcpStream::connect(addr).unwrap();
            peer.set_read_timeout(Some(LIMIT)).unwrap();
            peer.write_all(b"one\ntwo\nthree").unwrap();
            peer.shutdown(Shutdown::Write).unwrap();
            let mut echoed = Vec::new();
            peer.read_to_end(&mut echoed).unwrap();
            assert_eq!(echoed, b"one\ntwo\nthree", "{kind} {handler:?}");
            outcomes.recv_timeout(LIMIT).unwrap().unwrap_or_else(|e| panic!("{kind} {handler:?}: {e}"));
        });
    }
}

#[test]
fn a_peer_that_resets_mid_message_ends_its_handler_and_the_next_peer_is_served_on_every_runtime() {
    for handler in [Handler::Lines, Handler::Copy] {
        each_runtime(handler, |kind, addr, outcomes| {
            let peer = TcpStream::connect(addr).unwrap();
            peer.set_read_timeout(Some(LIMIT)).unwrap();
            let (mut writer, mut reader) = (&peer, &peer);
            // One line echoed: the handler runs (a peer reset before it is accepted is never
            // served at all).
            writer.write_all(b"first\n").unwrap();
            let mut first = [0u8; 6];
            reader.read_exact(&mut first).unwrap();
            assert_eq!(&first, b"first\n", "{kind} {handler:?}");
            // Half a line, then a reset (SO_LINGER 0) without reading the echo.
            writer.write_all(&[b'x'; 256 << 10]).unwrap();
            reset_on_close(&peer);
            drop(peer);
            // The handler ends (an error, or a short end of stream), it does not hang.
            let ended = outcomes.recv_timeout(LIMIT);
            assert!(ended.is_ok(), "{kind} {handler:?}: the handler of a reset peer did not end");
            let echoed = within(LIMIT, move || blocking_round_trip(addr, b"next\n".to_vec(), 3));
            assert_eq!(echoed, b"next\n", "{kind} {handler:?}");
        });
    }
}

#[test]
fn reads_dropped_pending_mid_message_lose_no_bytes_on_every_runtime() {
    each_runtime(Handler::Racing, |kind, addr, outcomes| {
        let data = Rng::new(kind as u64 + 40).bytes(512 << 10);
        let echoed = within(LIMIT, {
            let data = data.clone();
            move || paced_round_trip(addr, data, 41)
        });
        assert!(echoed == data, "{kind}: the echo differs from the bytes sent");
        let lost = outcomes.recv_timeout(LIMIT).unwrap().unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(lost > 0, "{kind}: no read was dropped pending; the test tested nothing");
    });
}

/// Like `blocking_round_trip`, with pauses of up to 2 ms between the ragged writes, so that
/// reads wait (and lose races) in the middle of the stream.
fn paced_round_trip(addr: SocketAddr, data: Vec<u8>, seed: u64) -> Vec<u8> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut rest = &data[..];
        while !rest.is_empty() {
            let n = rng.range(1, 16 << 10).min(rest.len());
            writer.write_all(&rest[..n]).unwrap();
            rest = &rest[n..];
            std::thread::sleep(Duration::from_micros(rng.range(0, 2000) as u64));
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    let mut reader = stream;
    reader.read_to_end(&mut echoed).expect("reading the echo");
    sender.join().unwrap();
    echoed
}

/// Makes closing `stream` send a RST (SO_LINGER with a zero timeout).
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: passes a pointer to a live linger struct and its size; the fd is an open socket.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}
