//! What a sequence diagram is made of: the lanes (who acts), the rows (a phase's heading, an
//! arrow from one lane to another, a note on one lane), and what each arrow stands for.

use echo::models::Model;
use echo::server::RuntimeKind;
use serde_json::{json, Value};

use crate::trace::Traced;

/// A vertical line of the diagram: who acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The test's client socket.
    Client,
    /// The kernel: sockets, epoll, io_uring.
    Kernel,
    /// glibc's aio threads and the runtime's accept helpers (aio only).
    Helpers,
    /// The runtime's loop: waits, events, completions, wakes.
    Loop,
    /// The task running `echo::handle` (and the accept loop, the `block_on` future).
    Task,
}

impl Lane {
    const ALL: [Lane; 5] = [Lane::Client, Lane::Kernel, Lane::Helpers, Lane::Loop, Lane::Task];

    /// The lane named `name` (see [`name`](Self::name)).
    pub fn named(name: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|lane| lane.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Lane::Client => "client",
            Lane::Kernel => "kernel",
            Lane::Helpers => "helper threads",
            Lane::Loop => "runtime loop",
            Lane::Task => "task",
        }
    }

    pub fn subtitle(self, kind: Traced) -> &'static str {
        use Traced::{Model as M, Runtime as R};
        match (self, kind) {
            (Lane::Client, _) => "a blocking socket",
            (Lane::Kernel, R(RuntimeKind::Reactor | RuntimeKind::ProactorEpoll)) => "TCP, epoll",
            (Lane::Kernel, R(RuntimeKind::Uring)) => "TCP, io_uring",
            (Lane::Kernel, R(RuntimeKind::Aio(_))) => "TCP",
            (Lane::Kernel, M(Model::Select)) => "TCP, select",
            (Lane::Kernel, M(_)) => "TCP, the AIO ring",
            (Lane::Helpers, _) => "glibc's aio, accept",
            (Lane::Loop, R(_)) => "waits, wakes tasks",
            (Lane::Loop, M(_)) => "the one thread: waits, reads, writes",
            (Lane::Task, _) => "echo::handle",
        }
    }
}

/// What an arrow stands for (its colour and line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A system call (solid).
    Syscall,
    /// A blocking wait returning, or a result coming back (dashed).
    Return,
    /// A submission queue entry written into the ring (no syscall).
    Sqe,
    /// A completion queue entry read from the ring.
    Cqe,
    /// A readiness event from epoll.
    Event,
    /// A request handed to a helper thread (aio).
    Request,
    /// A helper thread reporting a request done (aio).
    Done,
    /// The loop waking a task.
    Wake,
    /// The loop polling a task, or the task returning to the loop.
    Poll,
    /// Bytes on the wire, between the client and the kernel.
    Data,
}

impl Kind {
    const ALL: [Kind; 10] = [
        Kind::Syscall,
        Kind::Return,
        Kind::Sqe,
        Kind::Cqe,
        Kind::Event,
        Kind::Request,
        Kind::Done,
        Kind::Wake,
        Kind::Poll,
        Kind::Data,
    ];

    /// The kind whose class is `class` (see [`class`](Self::class)).
    pub fn of_class(class: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.class() == class)
    }

    pub fn class(self) -> &'static str {
        match self {
            Kind::Syscall => "syscall",
            Kind::Return => "return",
            Kind::Sqe => "sqe",
            Kind::Cqe => "cqe",
            Kind::Event => "event",
            Kind::Request => "request",
            Kind::Done => "done",
            Kind::Wake => "wake",
            Kind::Poll => "poll",
            Kind::Data => "data",
        }
    }

    pub fn colour(self) -> &'static str {
        match self {
            Kind::Syscall | Kind::Return => "#1f5fa8",
            Kind::Sqe | Kind::Request => "#d2691e",
            Kind::Cqe | Kind::Event | Kind::Done => "#2e8b57",
            Kind::Wake => "#8e44ad",
            Kind::Poll => "#666666",
            Kind::Data => "#111111",
        }
    }

    pub fn dashed(self) -> bool {
        matches!(self, Kind::Return | Kind::Poll)
    }
}

/// One row of a diagram.
#[derive(Clone, Debug)]
pub enum Row {
    /// A heading across the columns: what the client does next.
    Phase(String),
    /// An arrow from one lane to another.
    Arrow {
        from: Lane,
        to: Lane,
        kind: Kind,
        /// Above the arrow: the call, as the step names it.
        label: String,
        /// Below the arrow, smaller: what came back, or a short why.
        sub: Option<String>,
        /// For a syscall that returned in the same step: its result, drawn as a dashed arrow
        /// back.
        ret: Option<String>,
        /// The step as the runtime worded it.
        step: String,
    },
    /// A remark on one lane.
    Note { lane: Lane, text: String, step: String },
}

impl Row {
    /// The row as JSON (for `trace --svg`, whose child processes read the rows and hand them
    /// over).
    pub fn to_json(&self) -> Value {
        match self {
            Row::Phase(title) => json!({ "phase": title }),
            Row::Arrow { from, to, kind, label, sub, ret, step } => json!({
                "from": from.name(), "to": to.name(), "kind": kind.class(), "label": label,
                "sub": sub, "ret": ret, "step": step,
            }),
            Row::Note { lane, text, step } => json!({ "lane": lane.name(), "note": text, "step": step }),
        }
    }

    /// The row [`to_json`](Self::to_json) wrote.
    pub fn from_json(v: &Value) -> Option<Row> {
        let text = |key: &str| v[key].as_str().map(str::to_string);
        if let Some(title) = text("phase") {
            return Some(Row::Phase(title));
        }
        if let Some(note) = text("note") {
            return Some(Row::Note {
                lane: Lane::named(v["lane"].as_str()?)?,
                text: note,
                step: text("step")?,
            });
        }
        Some(Row::Arrow {
            from: Lane::named(v["from"].as_str()?)?,
            to: Lane::named(v["to"].as_str()?)?,
            kind: Kind::of_class(v["kind"].as_str()?)?,
            label: text("label")?,
            sub: text("sub"),
            ret: text("ret"),
            step: text("step")?,
        })
    }
}

pub fn arrow(from: Lane, to: Lane, kind: Kind, label: impl Into<String>, step: &str) -> Row {
    Row::Arrow { from, to, kind, label: label.into(), sub: None, ret: None, step: step.to_string() }
}

pub fn with_sub(mut row: Row, text: impl Into<String>) -> Row {
    if let Row::Arrow { sub, .. } = &mut row {
        *sub = Some(text.into());
    }
    row
}

pub fn with_ret(mut row: Row, text: impl Into<String>) -> Row {
    if let Row::Arrow { ret, .. } = &mut row {
        *ret = Some(text.into());
    }
    row
}

pub fn note(lane: Lane, text: impl Into<String>, step: &str) -> Row {
    Row::Note { lane, text: text.into(), step: step.to_string() }
}
