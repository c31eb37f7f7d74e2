//! The sequence diagrams of `echo-lab trace --svg`: the steps of a real trace, read back from
//! the runtimes' own words, drawn as arrows between lanes (the client, the kernel, glibc's
//! threads for aio, the runtime's loop, the task), one design per column.
//!
//! Each step becomes one row: a syscall is an arrow into the kernel (with its result on a
//! dashed arrow back, when the step gives one), an SQE an arrow from the task into the ring the
//! loop submits, a CQE or an epoll event an arrow from the kernel to the loop, a wake an arrow
//! from the loop to the task, and so on. A step this reader does not know is kept as a note on
//! the loop's lane, in the runtime's words: nothing of the run is left out, and nothing is
//! drawn that the run did not do. Each arrow's `<title>` (a tooltip in a browser) holds the
//! step as the runtime worded it.

use std::fmt::Write;

use echo::server::RuntimeKind;

use crate::trace::{Client, Phase};

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
    fn name(self) -> &'static str {
        match self {
            Lane::Client => "client",
            Lane::Kernel => "kernel",
            Lane::Helpers => "helper threads",
            Lane::Loop => "runtime loop",
            Lane::Task => "task",
        }
    }

    fn subtitle(self, kind: RuntimeKind) -> &'static str {
        match (self, kind) {
            (Lane::Client, _) => "a blocking socket",
            (Lane::Kernel, RuntimeKind::Reactor | RuntimeKind::ProactorEpoll) => "TCP, epoll",
            (Lane::Kernel, RuntimeKind::Uring) => "TCP, io_uring",
            (Lane::Kernel, RuntimeKind::Aio) => "TCP",
            (Lane::Helpers, _) => "glibc's aio, accept",
            (Lane::Loop, _) => "waits, wakes tasks",
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
    fn class(self) -> &'static str {
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

    fn colour(self) -> &'static str {
        match self {
            Kind::Syscall | Kind::Return => "#1f5fa8",
            Kind::Sqe | Kind::Request => "#d2691e",
            Kind::Cqe | Kind::Event | Kind::Done => "#2e8b57",
            Kind::Wake => "#8e44ad",
            Kind::Poll => "#666666",
            Kind::Data => "#111111",
        }
    }

    fn dashed(self) -> bool {
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

/// One design's diagram: its rows, or why it could not be traced.
pub struct Diagram {
    kind: RuntimeKind,
    rows: Result<Vec<Row>, String>,
}

impl Diagram {
    /// The diagram of `phases` (a trace of `kind`), or of the reason there is none.
    pub fn new(kind: RuntimeKind, phases: Result<Vec<Phase>, String>) -> Diagram {
        Diagram { kind, rows: phases.map(|phases| rows(kind, &phases)) }
    }

    /// Why this design could not be traced, if it could not.
    pub fn failed(&self) -> Option<&str> {
        self.rows.as_ref().err().map(String::as_str)
    }

    fn lanes(&self) -> &'static [Lane] {
        match self.kind {
            RuntimeKind::Aio => &[Lane::Client, Lane::Kernel, Lane::Helpers, Lane::Loop, Lane::Task],
            _ => &[Lane::Client, Lane::Kernel, Lane::Loop, Lane::Task],
        }
    }

    fn title(&self) -> &'static str {
        match self.kind {
            RuntimeKind::Reactor => "reactor: readiness (epoll)",
            RuntimeKind::Uring => "uring: completion (io_uring)",
            RuntimeKind::Aio => "aio: completion (POSIX aio, glibc's threads)",
            RuntimeKind::ProactorEpoll => "proactor-epoll: completion emulated on readiness",
        }
    }
}

fn arrow(from: Lane, to: Lane, kind: Kind, label: impl Into<String>, step: &str) -> Row {
    Row::Arrow { from, to, kind, label: label.into(), sub: None, ret: None, step: step.to_string() }
}

fn with_sub(mut row: Row, text: impl Into<String>) -> Row {
    if let Row::Arrow { sub, .. } = &mut row {
        *sub = Some(text.into());
    }
    row
}

fn with_ret(mut row: Row, text: impl Into<String>) -> Row {
    if let Row::Arrow { ret, .. } = &mut row {
        *ret = Some(text.into());
    }
    row
}

fn note(lane: Lane, text: impl Into<String>, step: &str) -> Row {
    Row::Note { lane, text: text.into(), step: step.to_string() }
}

/// `text` up to (not including) the first of `stops`, trimmed.
pub(crate) fn before<'a>(text: &'a str, stops: &[&str]) -> &'a str {
    let end = stops.iter().filter_map(|s| text.find(s)).min().unwrap_or(text.len());
    text[..end].trim()
}

/// The number after `word` in `text` ("result 7" → 7).
pub(crate) fn number_after(text: &str, word: &str) -> Option<i64> {
    let rest = &text[text.find(word)? + word.len()..];
    let digits: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
    digits.parse().ok()
}

/// What a pending aio request is: the blocking call a helper thread makes for it.
#[derive(Clone, Debug)]
struct Pending {
    call: String,
    /// Whether its completion sends the echo (a write).
    sends: bool,
}

/// Reads the steps of each phase into rows. The client's own actions (connect, send, and
/// reading the echo once the server has sent it) are added where they happened.
fn rows(kind: RuntimeKind, phases: &[Phase]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut pending: std::collections::HashMap<i64, Pending> = Default::default();
    for phase in phases {
        rows.push(Row::Phase(phase.title.clone()));
        let message = match &phase.client {
            Client::Connects => {
                rows.push(arrow(Lane::Client, Lane::Kernel, Kind::Data, "connect()", ""));
                None
            }
            Client::Echoes(msg) => {
                let label = format!("send(\"{msg}\")");
                rows.push(with_sub(arrow(Lane::Client, Lane::Kernel, Kind::Data, label, ""), "the message"));
                Some(msg.clone())
            }
            Client::Closes => {
                rows.push(arrow(Lane::Client, Lane::Kernel, Kind::Data, "shutdown(Write)", ""));
                None
            }
        };
        let mut echoed = false;
        for step in &phase.steps {
            let (row, sent) = read_step(kind, step, &mut pending);
            rows.extend(row);
            if let (true, false, Some(msg)) = (sent, echoed, &message) {
                echoed = true;
                let label = format!("recv() → \"{msg}\"");
                rows.push(with_sub(arrow(Lane::Kernel, Lane::Client, Kind::Data, label, ""), "the echo"));
            }
        }
    }
    rows
}

/// One step as rows, and whether it sent bytes to the client (the echo).
fn read_step(
    kind: RuntimeKind,
    step: &str,
    pending: &mut std::collections::HashMap<i64, Pending>,
) -> (Vec<Row>, bool) {
    let s = step.trim();
    let sent_bytes = |s: &str| number_after(s, "→").is_some_and(|n| n > 0);
    let one = |row| (vec![row], false);

    // Steps common to the executors.
    if let Some(rest) = s.strip_prefix("task ") {
        let id = before(rest, &[" "]);
        return one(if rest.ends_with("polled") {
            arrow(Lane::Loop, Lane::Task, Kind::Poll, format!("poll task {id}"), step)
        } else if rest.ends_with("waits") {
            arrow(Lane::Task, Lane::Loop, Kind::Poll, "Pending", step)
        } else if rest.ends_with("finished") {
            arrow(Lane::Task, Lane::Loop, Kind::Poll, "Ready: finished", step)
        } else {
            note(Lane::Loop, s, step)
        });
    }
    if s.starts_with("the block_on future") {
        return one(if s.ends_with("polled") {
            arrow(Lane::Loop, Lane::Task, Kind::Poll, "poll the accept loop", step)
        } else if s.ends_with("waits") {
            arrow(Lane::Task, Lane::Loop, Kind::Poll, "Pending (accept loop)", step)
        } else {
            note(Lane::Loop, s, step)
        });
    }
    if s.starts_with("→ wake") {
        return one(arrow(Lane::Loop, Lane::Task, Kind::Wake, "wake", step));
    }
    if s.starts_with("shutdown(") {
        return one(arrow(Lane::Task, Lane::Kernel, Kind::Syscall, before(s, &[":"]), step));
    }
    // A send behind that the proactor's driver finishes by itself: no arrow to the task, which
    // is the point ("SEND complete: the driver gives ring buffer 0 back; the task is not woken").
    if s.starts_with("SEND complete") || s.starts_with("SEND failed") || s.starts_with("SEND took") {
        return one(note(Lane::Loop, s.replace("; the task is not woken", ": no wake"), step));
    }

    match kind {
        // The emulation's steps are the reactor's epoll steps plus its completions; those it
        // does not name become notes.
        RuntimeKind::Reactor | RuntimeKind::ProactorEpoll => read_reactor_step(s, step, sent_bytes(s)),
        RuntimeKind::Uring => read_uring_step(s, step),
        RuntimeKind::Aio => read_aio_step(s, step, pending),
    }
}

fn read_reactor_step(s: &str, step: &str, sent_bytes: bool) -> (Vec<Row>, bool) {
    let one = |row| (vec![row], false);
    if s.starts_with("epoll_wait(") {
        let call = format!("{})", before(s, &[")"]));
        return one(with_sub(arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, call, step), "sleeps"));
    }
    if let Some(rest) = s.strip_prefix("epoll_wait returned ") {
        return one(arrow(Lane::Kernel, Lane::Loop, Kind::Return, format!("returns {rest}"), step));
    }
    // "fd 7: readable, writable → wake the task waiting for it", "fd 7: writable → no task ...".
    if let (true, Some((what, then))) = (s.starts_with("fd "), s.split_once(" → ")) {
        if then.starts_with("wake") {
            let (fd, ready) = what.split_once(": ").unwrap_or((what, ""));
            let row = arrow(Lane::Loop, Lane::Task, Kind::Wake, format!("wake ({fd} {ready})"), step);
            return (
                vec![arrow(Lane::Kernel, Lane::Loop, Kind::Event, format!("event: {what}"), step), row],
                false,
            );
        }
        let row = with_sub(
            arrow(Lane::Kernel, Lane::Loop, Kind::Event, format!("event: {what}"), step),
            before(then, &[";"]),
        );
        return one(row);
    }
    // Syscalls the task makes: "read(fd 7, 16384 bytes) → 7 bytes", "accept4(fd 3) → new ...".
    for call in ["read(", "send(", "write(", "recv(", "accept4(", "epoll_ctl("] {
        if s.starts_with(call) {
            let (call_text, result) = match s.split_once(" → ") {
                Some((c, r)) => (c.to_string(), Some(r.to_string())),
                None => (format!("{})", before(s, &[")"])), None),
            };
            let row = arrow(Lane::Task, Lane::Kernel, Kind::Syscall, call_text, step);
            let row = match result {
                Some(r) => with_ret(row, r),
                None => with_sub(row, before(s.split_once(": ").map_or("", |p| p.1), &[","])),
            };
            let sends = (call == "send(" || call == "write(") && sent_bytes;
            return (vec![row], sends);
        }
    }
    if s.starts_with("short read") {
        return one(note(Lane::Task, before(s, &[";"]), step));
    }
    one(note(Lane::Loop, s, step))
}

fn read_uring_step(s: &str, step: &str) -> (Vec<Row>, bool) {
    let one = |row| (vec![row], false);
    if let Some(rest) = s.strip_prefix("io_uring_enter: ") {
        let (what, why) = rest.split_once(", ").unwrap_or((rest, ""));
        let sub = if why.contains("sleep") { "and sleep until a completion" } else { before(why, &[":"]) };
        return one(with_sub(
            arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, format!("io_uring_enter: {what}"), step),
            sub,
        ));
    }
    if s.starts_with("the SQ is full") {
        return one(with_sub(
            arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, "io_uring_enter", step),
            "the SQ is full",
        ));
    }
    if s.contains("in the completion ring") {
        return one(arrow(Lane::Kernel, Lane::Loop, Kind::Return, s, step));
    }
    if let Some(rest) = s.strip_prefix("CQE ") {
        // "CQE user_data 1 (multishot RECV): result 7, in ring buffer 0, more to come ..."
        if let (Some(open), Some(close)) = (rest.find('('), rest.find(')')) {
            let op = &rest[open + 1..close];
            let result = number_after(rest, "result");
            let label = match result {
                Some(r) => format!("CQE {op}: {r}"),
                None => format!("CQE {op}"),
            };
            let mut sub: Vec<&str> = Vec::new();
            if let Some(buf) = rest.find("ring buffer") {
                sub.push(before(&rest[buf..], &[","]));
            }
            if rest.contains("more to come") {
                sub.push("more to come");
            }
            let row = arrow(Lane::Kernel, Lane::Loop, Kind::Cqe, label, step);
            let row = if sub.is_empty() { row } else { with_sub(row, sub.join(", ")) };
            let sends = (op.contains("SEND") || op.contains("WRITE")) && result.is_some_and(|r| r > 0);
            return (vec![row], sends);
        }
        // "CQE of the notifier's poll: another thread woke a task"
        return one(with_sub(
            arrow(Lane::Kernel, Lane::Loop, Kind::Cqe, before(s, &[":"]), step),
            before(s.split_once(": ").map_or("", |p| p.1), &[";"]),
        ));
    }
    if let Some(rest) = s.strip_prefix("queued SQE ") {
        // "RECV (multishot, buffers ...) on fd 7 (user_data 1); no syscall yet", "SEND 7 bytes on
        // fd 7 (user_data 2); ...", "CLOSE fd 7, after every SQE ...".
        let mut label = String::new();
        let mut depth = 0;
        for c in before(rest, &[";", ", after"]).chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => label.push(c),
                _ => {}
            }
        }
        let mut label = format!("SQE {}", label.split_whitespace().collect::<Vec<_>>().join(" "));
        if rest.contains("multishot") {
            label = label.replacen("SQE ", "SQE multishot ", 1);
        }
        return one(with_sub(
            arrow(Lane::Task, Lane::Loop, Kind::Sqe, label, step),
            "into the SQ ring: no syscall",
        ));
    }
    if s.starts_with("wait for the next CQE") {
        return one(note(Lane::Task, "the multishot RECV stays armed: no new SQE", step));
    }
    // The driver's steps (a CQE took a piece of the buffer; a send behind gave it back).
    if s.starts_with("ring buffer") {
        return one(note(Lane::Loop, before(s, &["("]).to_string() + " (shared memory)", step));
    }
    if s.starts_with("read the CQ ring") {
        return one(note(Lane::Loop, "reads the CQ ring: no syscall", step));
    }
    one(note(Lane::Loop, s, step))
}

fn read_aio_step(
    s: &str,
    step: &str,
    pending: &mut std::collections::HashMap<i64, Pending>,
) -> (Vec<Row>, bool) {
    let one = |row| (vec![row], false);
    if s.starts_with("poll(") {
        let call = format!("{})", before(s, &[";", ")"]));
        let sub = s.find("timeout").map_or("sleeps", |t| before(&s[t..], &[",", ")"]));
        return one(with_sub(arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, call, step), sub));
    }
    if let Some(rest) = s.strip_prefix("request ") {
        // "request 1 done: result 7, reported by glibc's notification thread 5611, a thread ..."
        let id = number_after(rest, "").unwrap_or(-1);
        let result = number_after(rest, "result");
        let mut out = Vec::new();
        let mut sends = false;
        if let Some(p) = pending.remove(&id) {
            let r = result.map_or("done".to_string(), |r| format!("{} → {r}", p.call));
            out.push(arrow(Lane::Kernel, Lane::Helpers, Kind::Return, r, step));
            sends = p.sends && result.is_some_and(|r| r > 0);
        }
        let by = if s.contains("notification thread") {
            "by glibc's notification thread, new for this completion"
        } else {
            before(s.split_once(", reported ").map_or("", |p| p.1), &[","])
        };
        let label = match result {
            Some(r) => format!("request {id} done: {r}"),
            None => format!("request {id} done"),
        };
        out.push(with_sub(arrow(Lane::Helpers, Lane::Loop, Kind::Done, label, step), by));
        return (out, sends);
    }
    for (call, blocking) in [("aio_read(", "read"), ("aio_write(", "write")] {
        if let Some(rest) = s.strip_prefix(call) {
            // "aio_read(fd 8, 4096 bytes) handed to glibc (request 1): a glibc helper thread runs
            // a blocking read (after a pread that fails with ESPIPE on a socket) on it, ..."
            let args = before(rest, &[")"]);
            let fd = before(args, &[","]);
            let id = number_after(s, "(request").unwrap_or(-1);
            let mut out = vec![with_sub(
                arrow(Lane::Task, Lane::Helpers, Kind::Request, format!("{call}{args})"), step),
                format!("request {id}, handed to glibc"),
            )];
            if s.contains("pread that fails with ESPIPE") {
                out.push(with_ret(
                    arrow(Lane::Helpers, Lane::Kernel, Kind::Syscall, format!("pread({fd})"), step),
                    "ESPIPE",
                ));
            }
            let waits =
                if s.contains("until data comes") { "blocks until data comes" } else { "a blocking call" };
            out.push(with_sub(
                arrow(Lane::Helpers, Lane::Kernel, Kind::Syscall, format!("{blocking}({fd})"), step),
                waits,
            ));
            pending.insert(id, Pending { call: format!("{blocking}({fd})"), sends: blocking == "write" });
            return (out, false);
        }
    }
    if let Some(rest) = s.strip_prefix("accept on ") {
        // "accept on fd 3: POSIX aio has none; handed to one of this runtime's helper threads
        // (request 0)"
        let fd = before(rest, &[":"]);
        let id = number_after(s, "(request").unwrap_or(-1);
        pending.insert(id, Pending { call: format!("accept({fd})"), sends: false });
        return (
            vec![
                with_sub(
                    arrow(Lane::Task, Lane::Helpers, Kind::Request, format!("accept({fd})"), step),
                    format!("request {id}: POSIX aio has no accept"),
                ),
                with_sub(
                    arrow(Lane::Helpers, Lane::Kernel, Kind::Syscall, format!("accept({fd})"), step),
                    "blocks",
                ),
            ],
            false,
        );
    }
    one(note(Lane::Loop, s, step))
}

// Layout, pixels.
const GAP: f64 = 150.0; // between lanes
const SIDE: f64 = 70.0; // from a column's edge to its first and last lane
const COLUMN_GAP: f64 = 24.0;
const TOP: f64 = 62.0; // the title above the columns
const HEAD: f64 = 58.0; // a column's title and lane names
const CHAR: f64 = 5.8; // the width of a character at 11 px (sans-serif, on average)

fn row_height(row: &Row) -> f64 {
    match row {
        Row::Phase(_) => 34.0,
        Row::Arrow { ret: Some(_), .. } => 44.0,
        Row::Arrow { sub: Some(_), .. } => 38.0,
        Row::Arrow { .. } => 26.0,
        Row::Note { .. } => 24.0,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A label centred on `x`, on a white ground so that lane lines do not cross it, kept inside
/// `[left, right]`.
fn label(s: &mut String, x: f64, y: f64, text: &str, size: f64, colour: &str, (left, right): (f64, f64)) {
    let w = text.chars().count() as f64 * CHAR * size / 11.0 + 6.0;
    let x = x.clamp(left + w / 2.0, (right - w / 2.0).max(left + w / 2.0));
    let _ = writeln!(
        s,
        r#"      <rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="white" opacity="0.85"/>"#,
        x - w / 2.0,
        y - size,
        size + 2.0
    );
    let _ = writeln!(
        s,
        r#"      <text x="{x:.1}" y="{y:.1}" text-anchor="middle" font-size="{size}" fill="{colour}">{}</text>"#,
        escape(text)
    );
}

/// Draws one design's column with its left edge at `x0`; returns its width.
fn column(s: &mut String, d: &Diagram, x0: f64, height: f64) -> f64 {
    let lanes = d.lanes();
    let width = 2.0 * SIDE + GAP * (lanes.len() - 1) as f64;
    let bounds = (x0 + 2.0, x0 + width - 2.0);
    let lane_x = |lane: Lane| x0 + SIDE + GAP * lanes.iter().position(|&l| l == lane).unwrap_or(0) as f64;
    let _ = writeln!(s, r#"  <g class="design" id="{}">"#, d.kind.name());
    let _ = writeln!(
        s,
        r##"    <rect x="{x0}" y="{TOP}" width="{width}" height="{:.1}" fill="#fafafa" stroke="#dddddd"/>"##,
        height - TOP - 8.0
    );
    let _ = writeln!(
        s,
        r#"    <text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        x0 + width / 2.0,
        TOP + 20.0,
        escape(d.title())
    );
    for &lane in lanes {
        let x = lane_x(lane);
        let _ = writeln!(s, r#"    <g class="lane" data-lane="{}">"#, lane.name());
        let _ = writeln!(
            s,
            r#"      <text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12" font-weight="bold">{}</text>"#,
            TOP + 40.0,
            lane.name()
        );
        let _ = writeln!(
            s,
            r##"      <text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#666666">{}</text>"##,
            TOP + 52.0,
            lane.subtitle(d.kind)
        );
        let _ = writeln!(
            s,
            r##"      <line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#bbbbbb" stroke-width="1.5"/>"##,
            TOP + HEAD,
            height - 12.0
        );
        let _ = writeln!(s, "    </g>");
    }
    let mut y = TOP + HEAD + 6.0;
    match &d.rows {
        Err(why) => {
            label(s, x0 + width / 2.0, y + 30.0, &format!("could not trace: {why}"), 12.0, "#b00020", bounds);
        }
        Ok(rows) => {
            for row in rows {
                draw_row(s, row, y, &lane_x, bounds);
                y += row_height(row);
            }
        }
    }
    let _ = writeln!(s, "  </g>");
    width
}

fn draw_row(s: &mut String, row: &Row, y: f64, lane_x: &dyn Fn(Lane) -> f64, bounds: (f64, f64)) {
    match row {
        Row::Phase(title) => {
            let _ = writeln!(s, r#"    <g class="phase">"#);
            let _ = writeln!(
                s,
                r##"      <line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999999" stroke-dasharray="2 3"/>"##,
                bounds.0 + 4.0,
                y + 8.0,
                bounds.1 - 4.0,
                y + 8.0
            );
            label(s, (bounds.0 + bounds.1) / 2.0, y + 24.0, title, 11.5, "#333333", bounds);
            let _ = writeln!(s, "    </g>");
        }
        Row::Note { lane, text, step } => {
            let w = text.chars().count() as f64 * CHAR + 10.0;
            let x = lane_x(*lane).clamp(bounds.0 + w / 2.0, bounds.1 - w / 2.0);
            let _ = writeln!(s, r#"    <g class="note" data-lane="{}">"#, lane.name());
            let _ = writeln!(s, "      <title>{}</title>", escape(step));
            let _ = writeln!(
                s,
                r##"      <rect x="{:.1}" y="{:.1}" width="{w:.1}" height="17" rx="3" fill="#fff8d6" stroke="#d8c77a"/>"##,
                x - w / 2.0,
                y + 2.0
            );
            let _ = writeln!(
                s,
                r##"      <text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11" font-style="italic" fill="#555555">{}</text>"##,
                y + 14.5,
                escape(text)
            );
            let _ = writeln!(s, "    </g>");
        }
        Row::Arrow { from, to, kind, label: text, sub, ret, step } => {
            let (x1, x2) = (lane_x(*from), lane_x(*to));
            let line_y = y + 17.0;
            let colour = kind.colour();
            let _ = writeln!(
                s,
                r#"    <g class="arrow {}" data-from="{}" data-to="{}">"#,
                kind.class(),
                from.name(),
                to.name()
            );
            if !step.is_empty() {
                let _ = writeln!(s, "      <title>{}</title>", escape(step));
            }
            arrow_line(s, x1, x2, line_y, colour, kind.dashed(), *kind == Kind::Data);
            // Labels clear of the arrowheads (4 px either side of the line).
            label(s, (x1 + x2) / 2.0, line_y - 6.0, text, 11.0, colour, bounds);
            if let Some(ret) = ret {
                arrow_line(s, x2, x1, line_y + 8.0, colour, true, false);
                label(s, (x1 + x2) / 2.0, line_y + 23.0, &format!("→ {ret}"), 10.0, colour, bounds);
            } else if let Some(sub) = sub {
                label(s, (x1 + x2) / 2.0, line_y + 16.0, sub, 10.0, "#555555", bounds);
            }
            let _ = writeln!(s, "    </g>");
        }
    }
}

fn arrow_line(s: &mut String, x1: f64, x2: f64, y: f64, colour: &str, dashed: bool, thick: bool) {
    let dir = if x2 > x1 { 1.0 } else { -1.0 };
    let tip = x2 - dir * 2.0;
    let dash = if dashed { r#" stroke-dasharray="5 3""# } else { "" };
    let width = if thick { 2.2 } else { 1.4 };
    let _ = writeln!(
        s,
        r#"      <line x1="{x1:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="{width}"{dash}/>"#,
        tip - dir * 6.0
    );
    let _ = writeln!(
        s,
        r#"      <path d="M{tip:.1} {y:.1} L{:.1} {:.1} L{:.1} {:.1} Z" fill="{colour}"/>"#,
        tip - dir * 9.0,
        y - 4.0,
        tip - dir * 9.0,
        y + 4.0
    );
}

/// The legend's entries.
const LEGEND: [(Kind, &str); 10] = [
    (Kind::Data, "bytes on the wire"),
    (Kind::Syscall, "system call"),
    (Kind::Return, "returns (a wait ends, a result)"),
    (Kind::Event, "readiness event (epoll)"),
    (Kind::Sqe, "SQE written into the ring"),
    (Kind::Cqe, "CQE read from the ring"),
    (Kind::Request, "request handed to a helper thread"),
    (Kind::Done, "request done (aio)"),
    (Kind::Wake, "wake a task"),
    (Kind::Poll, "poll a task / it returns"),
];

/// The whole picture: one column per design, side by side, and a legend below.
pub fn svg(diagrams: &[Diagram]) -> String {
    let rows_height =
        |d: &Diagram| d.rows.as_ref().map_or(80.0, |rows| rows.iter().map(row_height).sum::<f64>());
    let body = diagrams.iter().map(rows_height).fold(0.0, f64::max);
    let columns_bottom = TOP + HEAD + 6.0 + body + 20.0;
    let width = 16.0
        + diagrams.iter().map(|d| 2.0 * SIDE + GAP * (d.lanes().len() - 1) as f64 + COLUMN_GAP).sum::<f64>()
        - COLUMN_GAP
        + 16.0;
    let legend_rows = LEGEND.len().div_ceil(5) as f64;
    let height = columns_bottom + 20.0 + legend_rows * 22.0 + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" "#,
            r#"viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11">"#
        ),
        w = width,
        h = height
    );
    let _ = writeln!(s, r#"  <rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"  <text x="{:.1}" y="26" text-anchor="middle" font-size="18" font-weight="bold">One connection and one echo, step by step: readiness vs completion</text>"#,
        width / 2.0
    );
    let _ = writeln!(
        s,
        r##"  <text x="{:.1}" y="46" text-anchor="middle" font-size="12" fill="#555555">drawn from the trace steps of one run (echo-lab trace --svg); each arrow is a step the runtime recorded (hover for its words), the client's arrows are the test client's own calls</text>"##,
        width / 2.0
    );
    let mut x = 16.0;
    for d in diagrams {
        x += column(&mut s, d, x, columns_bottom) + COLUMN_GAP;
    }
    // The legend.
    let mut y = columns_bottom + 26.0;
    let _ = writeln!(s, r#"  <g class="legend">"#);
    for chunk in LEGEND.chunks(5) {
        let mut lx = 40.0;
        for (kind, what) in chunk {
            arrow_line(&mut s, lx, lx + 40.0, y - 4.0, kind.colour(), kind.dashed(), *kind == Kind::Data);
            let _ = writeln!(
                s,
                r#"    <text x="{:.1}" y="{y:.1}" font-size="12">{}</text>"#,
                lx + 48.0,
                escape(what)
            );
            lx += (width - 80.0) / 5.0;
        }
        y += 22.0;
    }
    let _ = writeln!(s, "  </g>");
    s.push_str("</svg>\n");
    s
}
