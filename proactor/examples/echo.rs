//! The shortest complete echo server on the proactor (io_uring).
//!
//! ```text
//! cargo run --release -p proactor --example uring-echo -- 127.0.0.1:7000
//! ```
//!
//! Each read hands the connection's buffer to the kernel, which gives it back filled; the same
//! buffer then goes back to the kernel to be written out.

use proactor::net::{TcpListener, TcpStream};

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let runtime = match proactor::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("echo: {e}");
            std::process::exit(1);
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async {
        let listener = TcpListener::bind(&addr)?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    proactor::spawn(serve(stream));
                }
                Err(e) => eprintln!("accept error: {e}"),
            }
        }
    });
    if let Err(e) = result {
        eprintln!("echo: cannot listen on {addr}: {e}");
        std::process::exit(1);
    }
}

async fn serve(stream: TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        eprintln!("connection error: {e}");
        return;
    }
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (read, back) = stream.read(buf).await;
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("connection error: {e}");
                return;
            }
        }
        let (written, back) = stream.write_all(back).await;
        if let Err(e) = written {
            eprintln!("connection error: {e}");
            return;
        }
        buf = back;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
