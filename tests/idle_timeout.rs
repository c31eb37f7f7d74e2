//! `echo::IdleTimeout` on every runtime: a connection that falls silent is ended (the client
//! reads end of stream after its echo) and `on_idle` runs for it; a connection whose peer
//! closes ends without `on_idle`. The timers are the executor's, so one type serves both
//! runtimes.
//!
//! No wall-clock assertions: each client sends its bytes before the server accepts it (the
//! client signals the server from its thread), so no stall of the machine can make the limit
//! expire before data that was already there.

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use echo::server::RuntimeKind;
use echo::IdleTimeout;
use testkit::{remote_wake, within, RemoteWake};

// `AioNotify::Signal` needs its signal blocked in every thread of the process (a thread that
// does not block it may be interrupted by it): blocked before `main`, in the thread that every
// other thread of this test binary descends from.
testkit::before_main!({
    let _ = proactor::AioNotify::block_signal();
});

const LIMIT: Duration = Duration::from_millis(100);

/// The clients, on a thread: a silent one (`ping`, its echo, then silence until the server ends
/// it) and one that closes (`bye`, end of stream, its echo). Each fires its wake once its bytes
/// are sent, so the server accepts it only then.
fn clients(addr: SocketAddr, silent_sent: RemoteWake, closer_sent: RemoteWake) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut silent = TcpStream::connect(addr).unwrap();
        silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        silent.write_all(b"ping").unwrap();
        silent_sent.fire();
        let mut echoed = [0; 4];
        silent.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"ping");
        let mut rest = Vec::new();
        silent.read_to_end(&mut rest).expect("the server ends a silent connection");
        assert!(rest.is_empty(), "{rest:?}");

        let mut closer = TcpStream::connect(addr).unwrap();
        closer.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        closer.write_all(b"bye").unwrap();
        closer.shutdown(Shutdown::Write).unwrap();
        closer_sent.fire();
        let mut echoed = Vec::new();
        closer.read_to_end(&mut echoed).unwrap();
        assert_eq!(echoed, b"bye");
    })
}

/// One runtime's run: returns whether `on_idle` ran for (the silent, the closing) connection.
macro_rules! scenario {
    ($rt:ident, $runtime:expr) => {{
        let (silent_wait, silent_sent) = remote_wake();
        let (closer_wait, closer_sent) = remote_wake();
        let (silent_idle, closer_idle) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let counter = |count: &Rc<Cell<u32>>| {
            let count = count.clone();
            move || count.set(count.get() + 1)
        };
        let client = $runtime.block_on(async {
            let listener = $rt::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let client = clients(listener.local_addr().unwrap(), silent_sent, closer_sent);
            silent_wait.await;
            let (stream, _) = listener.accept().await.unwrap();
            let conn = IdleTimeout::new(stream, LIMIT).on_idle(counter(&silent_idle));
            let silent = $rt::spawn(echo::handle(conn));
            closer_wait.await;
            let (stream, _) = listener.accept().await.unwrap();
            let conn = IdleTimeout::new(stream, LIMIT).on_idle(counter(&closer_idle));
            let closer = $rt::spawn(echo::handle(conn));
            silent.await.unwrap().unwrap();
            closer.await.unwrap().unwrap();
            client
        });
        client.join().unwrap();
        (silent_idle.get(), closer_idle.get())
    }};
}

#[test]
fn a_silent_connection_is_ended_and_a_closing_one_is_not_counted_idle() {
    within(Duration::from_secs(120), || {
        let reactor = scenario!(reactor, reactor::Runtime::new().unwrap());
        assert_eq!(reactor, (1, 0), "reactor");
        for kind in RuntimeKind::ALL.into_iter().filter(|&kind| kind != RuntimeKind::Reactor) {
            let proactor = scenario!(proactor, echo::server::proactor_runtime(kind).unwrap());
            assert_eq!(proactor, (1, 0), "{kind}");
        }
    });
}
