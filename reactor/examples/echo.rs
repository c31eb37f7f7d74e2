//! The shortest complete echo server on the reactor.
//!
//! ```text
//! cargo run --release -p reactor --example echo -- 127.0.0.1:7000
//! ```
//!
//! A connection that waits for data holds no buffer: it awaits readiness, then reads into this
//! thread's scratch buffer and writes straight back from it. Only bytes the socket will not take
//! yet (the client reads slower than it writes) are copied into a buffer of their own.

use std::cell::RefCell;
use std::io;

use reactor::net::{TcpListener, TcpStream};

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let result: io::Result<()> = reactor::block_on(async {
        let listener = TcpListener::bind(&addr)?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    reactor::spawn(async move {
                        if let Err(e) = echo(stream).await {
                            eprintln!("connection error: {e}");
                        }
                    });
                }
                // Reported once when fds run out; the listener then backs off by itself.
                Err(e) => eprintln!("accept error: {e}"),
            }
        }
    });
    if let Err(e) = result {
        eprintln!("echo: cannot listen on {addr}: {e}");
        std::process::exit(1);
    }
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    loop {
        stream.readable().await?;
        let unsent = SCRATCH.with_borrow_mut(|buf| -> io::Result<Option<Vec<u8>>> {
            let n = match stream.try_read(buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(Vec::new())),
                Err(e) => return Err(e),
            };
            let written = match stream.try_write(&buf[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            Ok(Some(buf[written..n].to_vec()))
        })?;
        match unsent {
            None => return stream.shutdown(std::net::Shutdown::Write), // end of stream: echo it
            Some(rest) => stream.write_all(&rest).await?,
        }
    }
}
