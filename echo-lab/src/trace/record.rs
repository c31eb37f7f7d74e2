//! One traced run of the echo server: the server on one runtime in this process, a client on a
//! blocking socket that connects, echoes a few messages and closes, and the server's steps
//! recorded for each of those client actions (its phases).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use executor::trace::Step;
use serde_json::{json, Value};

use super::Traced;

/// Starts recording the steps of every runtime (`trace` feature: both runtimes record into
/// the shared executor's recorder).
fn start() {
    executor::trace::start();
}

/// The steps recorded since the last call.
fn take() -> Vec<Step> {
    executor::trace::take()
}

/// What the client did in a phase of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    /// It connected.
    Connects,
    /// It sent this message and read it back.
    Echoes(String),
    /// It shut down its side and read to end of stream.
    Closes,
}

/// One client action and the server's steps it caused.
#[derive(Clone, Debug)]
pub struct Phase {
    /// What the client did.
    pub client: Client,
    /// The heading printed above the steps.
    pub title: String,
    /// The server's steps, in order.
    pub steps: Vec<Step>,
}

impl Phase {
    pub fn to_json(&self) -> Value {
        let (client, message) = match &self.client {
            Client::Connects => ("connects", None),
            Client::Echoes(msg) => ("echoes", Some(msg.as_str())),
            Client::Closes => ("closes", None),
        };
        let steps: Vec<String> = self.steps.iter().map(ToString::to_string).collect();
        json!({ "client": client, "message": message, "title": self.title, "steps": steps })
    }
}

/// Lets the server finish what the last client action started and go back to waiting.
fn settle() {
    std::thread::sleep(Duration::from_millis(60));
}

/// Starts a server on `kind`, connects, echoes `messages` messages and closes; returns how
/// many steps the start-up took, and the steps of each client action.
pub fn record(kind: Traced, messages: u32) -> Result<(usize, Vec<Phase>), String> {
    start();
    let addr: SocketAddr = kind.spawn().map_err(|e| format!("cannot start the {kind} server: {e}"))?;
    settle();
    let startup = take().len();
    let mut phases = Vec::new();

    let mut conn = TcpStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    settle();
    phases.push(Phase { client: Client::Connects, title: "the client connects".into(), steps: take() });

    for i in 1..=messages {
        let msg = format!("hello {i}");
        conn.write_all(msg.as_bytes()).map_err(|e| format!("send: {e}"))?;
        let mut back = vec![0; msg.len()];
        conn.read_exact(&mut back).map_err(|e| format!("reading the echo: {e}"))?;
        if back != msg.as_bytes() {
            return Err(format!("the echo of {msg:?} came back as {:?}", String::from_utf8_lossy(&back)));
        }
        settle();
        let title = format!("message {i}: the client sends {msg:?} ({} bytes) and gets it back", msg.len());
        phases.push(Phase { client: Client::Echoes(msg), title, steps: take() });
    }

    conn.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    settle();
    phases.push(Phase {
        client: Client::Closes,
        title: "the client closes its side; the server sees end of stream and closes too".into(),
        steps: take(),
    });
    Ok((startup, phases))
}
