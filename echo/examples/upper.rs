//! Writing your own handler against `echo::Connection`: an echo that upper-cases ASCII, in a
//! few lines, run unchanged on either runtime.
//!
//! ```text
//! cargo run -p echo --example upper -- reactor 127.0.0.1:7001   # or: uring
//! printf 'hello\n' | nc -N 127.0.0.1 7001                       # HELLO
//! ```

use std::io;

use echo::Connection;

/// The handler: everything received comes back upper-cased, then end of stream.
async fn shout<C: Connection>(mut conn: C) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        let Some(received) = conn.recv().await? else { break };
        out.clear();
        out.extend(received.as_ref().iter().map(u8::to_ascii_uppercase));
        drop(received); // give the runtime its buffer back before waiting to send
        let (sent, back) = conn.send_vec(out).await;
        sent?;
        out = back;
    }
    conn.shutdown_write().await
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let runtime = args.next().unwrap_or_else(|| "reactor".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7001".into());
    match runtime.as_str() {
        "reactor" => reactor::block_on(async {
            let listener = reactor::net::TcpListener::bind(&addr)?;
            println!("listening on {} (runtime reactor)", listener.local_addr()?);
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                reactor::spawn(shout(stream));
            }
        }),
        "uring" => proactor::Runtime::new()?.block_on(async {
            let listener = proactor::net::TcpListener::bind(&addr)?;
            println!("listening on {} (runtime uring)", listener.local_addr()?);
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                proactor::spawn(shout(stream));
            }
        }),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown runtime {other:?} (reactor or uring)"),
        )),
    }
}
