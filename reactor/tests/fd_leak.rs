//! Alone in its test binary, so that no other test opens fds while it counts them.

mod common;

use std::time::Duration;

use common::{open_fds, serve, within};
use reactor::net::{TcpListener, TcpStream};

#[test]
fn ten_thousand_short_connections_leak_no_fd_and_no_registration() {
    let before = open_fds();
    let (registered_while_idle, clients_ok) = within(Duration::from_secs(120), || {
        let runtime = reactor::Runtime::new().unwrap();
        let result = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            reactor::spawn(serve(listener));
            let mut ok = 0;
            // 10,000 connections, 100 at a time: connect, echo 4 bytes, close.
            for batch in 0..100u32 {
                let clients: Vec<_> = (0..100u32)
                    .map(|i| {
                        reactor::spawn(async move {
                            let mut stream = TcpStream::connect(addr).await?;
                            let msg = (batch * 100 + i).to_le_bytes();
                            stream.write_all(&msg).await?;
                            let mut back = [0; 4];
                            let mut got = 0;
                            while got < 4 {
                                match stream.read(&mut back[got..]).await? {
                                    0 => break,
                                    n => got += n,
                                }
                            }
                            Ok::<bool, std::io::Error>(back == msg)
                        })
                    })
                    .collect();
                for client in clients {
                    ok += matches!(client.await, Ok(Ok(true))) as usize;
                }
            }
            ok
        });
        // Let the server tasks see end of stream and finish (bounded): then only the accept
        // loop is left as a task, and only the listener as a registration (a closed socket
        // leaves the registry at once; its state is freed when the next turn begins).
        common::eventually("only the accept loop and its listener left", || {
            runtime.block_on(reactor::time::sleep(Duration::from_millis(1)));
            runtime.task_count() == 1 && runtime.registered_fds() == 1
        });
        let registered = runtime.registered_fds();
        assert_eq!(runtime.task_count(), 1, "tasks still alive besides the accept loop");
        drop(runtime);
        (registered, result)
    });
    assert_eq!(clients_ok, 10_000);
    assert_eq!(registered_while_idle, 1, "registrations left besides the listener");
    common::eventually("as many fds open as before the runtime was created", || open_fds() <= before);
}
