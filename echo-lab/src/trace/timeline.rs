//! The steps of a traced run as a timeline: Chrome trace-event JSON, which Perfetto
//! (ui.perfetto.dev) and chrome://tracing open (`echo-lab trace --chrome-trace FILE`).
//!
//! The events are derived from the steps' texts (the runtimes' own words, as in
//! [`super::seqdiag`]) and their timestamps; one track per thread that recorded steps:
//!
//! - `loop turn` (a complete event, `X`): from the step that starts a turn of the loop (the wait,
//!   or the driver's first step after the tasks ran) to the start of the next turn: the wait,
//!   what ended it, and the tasks it woke;
//! - the wait (`epoll_wait`, `io_uring_enter`, `poll`, or a read of the CQ ring that needs no
//!   syscall), with what ended it in its args (`events`, `cqes`, `completions`);
//! - `task poll` (and `accept loop poll`): one poll of a task, its id and whether it finished;
//! - everything else as an instant (`i`) with the step's words in its args: the syscalls
//!   (`read`, `send`, `recv`, `accept4`, `epoll_ctl`, ...), SQEs and CQEs with their results,
//!   aio requests and their completions, readiness events and wake-ups;
//! - an operation in flight (an async span, `b`/`e`, on the process's tracks): from its SQE (or
//!   aio request, or the epoll backend's queued operation) to its completion, when both were
//!   recorded.
//!
//! A span whose start or end was not recorded (the run was cut by the step limit) is left out.

use std::collections::HashMap;
use std::time::Instant;

use reactor::trace::Step;
use serde_json::{json, Map, Value};

use super::words::{before, number_after};

/// One event, before it is placed in time order.
struct Event {
    /// Nanoseconds since the first step.
    ts: u64,
    /// For complete events, nanoseconds.
    dur: Option<u64>,
    /// Everything else (`ph`, `name`, `cat`, `pid`, `tid`, `args`, ...).
    body: Map<String, Value>,
}

/// An open span: when it started, its name and its args so far.
struct Open {
    at: u64,
    name: String,
    args: Map<String, Value>,
}

/// An operation from its start (an SQE, an aio request, a queued operation) to its end.
struct Op {
    start: u64,
    end: u64,
    name: String,
    fd: Option<i64>,
    result: Option<i64>,
}

/// Counts, for the summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Loop turns drawn (those whose start and end were recorded).
    pub turns: usize,
    /// Waits drawn.
    pub waits: usize,
    /// Task polls drawn.
    pub polls: usize,
    /// Every event in the file (metadata included).
    pub events: usize,
}

/// The timeline of one thread, built step by step.
struct Track {
    pid: u32,
    tid: u64,
    events: Vec<Event>,
    turn: Option<Open>,
    /// The open turn has had its wait.
    waited: bool,
    /// The last driver step was followed by task polls: the next driver step starts a turn.
    in_tasks: bool,
    turns: u64,
    poll: Option<Open>,
    wait: Option<Open>,
    /// The open wait ends at the next step (aio's poll says nothing when it returns).
    wait_ends_at_next: bool,
    /// The index of the last aio wait, which counts the completions reported after it.
    reaping: Option<usize>,
    /// Operations in flight: key (`uring 5`, `aio 1`, `op 3`) → (start, name, fd).
    in_flight: HashMap<String, (u64, String, Option<i64>)>,
    /// Operations whose start and end were both recorded.
    ops: Vec<Op>,
    counts: Counts,
}

impl Track {
    fn new(pid: u32, tid: u64) -> Track {
        Track {
            pid,
            tid,
            events: Vec::new(),
            turn: None,
            waited: false,
            in_tasks: false,
            turns: 0,
            poll: None,
            wait: None,
            wait_ends_at_next: false,
            reaping: None,
            in_flight: HashMap::new(),
            ops: Vec::new(),
            counts: Counts::default(),
        }
    }

    fn push(&mut self, ph: &str, cat: &str, name: &str, ts: u64, dur: Option<u64>, args: Map<String, Value>) {
        let mut body = Map::new();
        body.insert("ph".into(), ph.into());
        body.insert("cat".into(), cat.into());
        body.insert("name".into(), name.into());
        body.insert("pid".into(), self.pid.into());
        body.insert("tid".into(), self.tid.into());
        if ph == "i" {
            body.insert("s".into(), "t".into()); // an instant of this thread
        }
        body.insert("args".into(), Value::Object(args));
        self.events.push(Event { ts, dur, body });
    }

    fn complete(&mut self, cat: &str, open: Open, end: u64) -> usize {
        self.push("X", cat, &open.name, open.at, Some(end.saturating_sub(open.at)), open.args);
        self.events.len() - 1
    }

    /// Closes the open turn (if any) at `at` and opens the next one.
    fn new_turn(&mut self, at: u64) {
        if let Some(turn) = self.turn.take() {
            self.complete("loop", turn, at);
            self.counts.turns += 1;
        }
        self.turns += 1;
        let mut args = Map::new();
        args.insert("turn".into(), self.turns.into());
        args.insert("task_polls".into(), 0.into());
        self.turn = Some(Open { at, name: "loop turn".into(), args });
        self.waited = false;
        self.in_tasks = false;
    }

    fn close_wait(&mut self, at: u64, ended_by: Map<String, Value>) {
        if let Some(mut wait) = self.wait.take() {
            wait.args.extend(ended_by);
            let index = self.complete("wait", wait, at);
            self.counts.waits += 1;
            if self.wait_ends_at_next {
                self.reaping = Some(index);
            }
        }
        self.wait_ends_at_next = false;
    }

    /// An operation ends now: kept for an async span from its start ([`Track::op_spans`]).
    fn finish_op(&mut self, key: &str, at: u64, result: Option<i64>) {
        let Some((start, name, fd)) = self.in_flight.remove(key) else { return };
        self.ops.push(Op { start, end: at, name, fd, result });
    }

    /// The operations that ended, as async spans (`b` then `e`) on the process's tracks; each
    /// id is a lane, reused once its operation ended, so that the spans take as many tracks
    /// as there were operations in flight at once, not one each.
    fn op_spans(&mut self) {
        let mut ops = std::mem::take(&mut self.ops);
        ops.sort_by_key(|op| op.start);
        let mut lanes: HashMap<String, Vec<u64>> = HashMap::new(); // per name, each lane's end
        for op in ops {
            let ends = lanes.entry(op.name.clone()).or_default();
            let lane = match ends.iter().position(|end| *end <= op.start) {
                Some(lane) => lane,
                None => {
                    ends.push(0);
                    ends.len() - 1
                }
            };
            ends[lane] = op.end;
            let id = format!("{} {}.{}", op.name, self.tid, lane + 1);
            let mut args = Map::new();
            if let Some(fd) = op.fd {
                args.insert("fd".into(), fd.into());
            }
            self.push("b", "in flight", &op.name, op.start, None, args);
            self.events.last_mut().expect("just pushed").body.insert("id".into(), id.clone().into());
            let mut args = Map::new();
            if let Some(r) = op.result {
                args.insert("result".into(), r.into());
            }
            self.push("e", "in flight", &op.name, op.end, None, args);
            self.events.last_mut().expect("just pushed").body.insert("id".into(), id.into());
        }
    }

    fn step(&mut self, at: u64, text: &str) {
        if self.wait.is_some() && self.wait_ends_at_next {
            self.close_wait(at, Map::new());
        }
        let s = text.trim_start();

        // Task polls.
        if let Some((name, task)) = poll_start(s) {
            let mut args = Map::new();
            if let Some(task) = task {
                args.insert("task".into(), task.into());
            }
            self.poll = Some(Open { at, name: name.into(), args });
            self.in_tasks = true;
            self.reaping = None;
            return;
        }
        if let Some(outcome) = poll_end(s) {
            if let Some(mut poll) = self.poll.take() {
                poll.args.insert("then".into(), outcome.into());
                self.complete("task", poll, at);
                self.counts.polls += 1;
                if let Some(turn) = &mut self.turn {
                    let n = turn.args["task_polls"].as_u64().unwrap_or(0);
                    turn.args.insert("task_polls".into(), (n + 1).into());
                }
            }
            return;
        }

        // The loop's own steps: the first after the tasks ran starts a turn.
        let driver = self.poll.is_none();
        let wait = wait_start(s);
        if driver && (self.in_tasks || (wait.is_some() && (self.turn.is_none() || self.waited))) {
            self.new_turn(at);
        }
        if let Some((name, args, ends_at_next)) = wait {
            self.close_wait(at, Map::new()); // cannot happen: every wait ends before the next
            self.wait = Some(Open { at, name, args });
            self.wait_ends_at_next = ends_at_next;
            self.waited = true;
            return;
        }
        if let Some(ended_by) = wait_end(s) {
            self.close_wait(at, ended_by);
            return;
        }

        let (name, mut args) = instant(s);
        args.insert("step".into(), s.into());
        self.track_op(s, at, &name, &args);
        self.push("i", "step", &name, at, None, args);
    }

    /// Follows operations from their start to their completion.
    fn track_op(&mut self, s: &str, at: u64, name: &str, args: &Map<String, Value>) {
        let fd = number_after(s, "fd ");
        let result = args.get("result").and_then(Value::as_i64);
        if let Some(rest) = s.strip_prefix("queued SQE ") {
            if let Some(user_data) = number_after(s, "(user_data") {
                let op = rest.split_whitespace().next().unwrap_or("SQE");
                let op = if rest.contains("(multishot") { format!("multishot {op}") } else { op.to_string() };
                self.in_flight.insert(format!("uring {user_data}"), (at, op, fd));
            }
        } else if s.starts_with("CQE user_data ") {
            if !s.contains("more to come") {
                if let Some(user_data) = number_after(s, "user_data") {
                    self.finish_op(&format!("uring {user_data}"), at, result);
                }
            }
        } else if name == "aio_read" || name == "aio_write" || name == "accept (helper thread)" {
            if let Some(request) = number_after(s, "(request") {
                let op = name.trim_end_matches(" (helper thread)").to_string();
                self.in_flight.insert(format!("aio {request}"), (at, op, fd));
            }
        } else if s.starts_with("request ") {
            if let (Some(request), Some(index)) = (number_after(s, "request"), self.reaping) {
                let args = self.events[index].body.get_mut("args").and_then(Value::as_object_mut);
                if let Some(args) = args {
                    let n = args.get("completions").and_then(Value::as_u64).unwrap_or(0);
                    args.insert("completions".into(), (n + 1).into());
                }
                self.finish_op(&format!("aio {request}"), at, result);
            } else if let Some(request) = number_after(s, "request") {
                self.finish_op(&format!("aio {request}"), at, result);
            }
        } else if let Some(rest) = s.strip_prefix("queued ") {
            if let Some(op_index) = number_after(s, "(op") {
                let op = rest.split_whitespace().next().unwrap_or("op").to_string();
                self.in_flight.insert(format!("op {op_index}"), (at, op, fd));
            }
        } else if s.starts_with("post completion of op ") {
            if let Some(op_index) = number_after(s, "of op") {
                self.finish_op(&format!("op {op_index}"), at, result);
            }
        }
    }

    /// The aio wait's name for the completions it reports, once known.
    fn name_done(&self, s: &str) -> Option<String> {
        let request = number_after(s, "request")?;
        self.in_flight.get(&format!("aio {request}")).map(|(_, op, _)| format!("{op} done"))
    }
}

/// "task 3 polled" → ("task poll", Some(3)); the accept loop's poll → ("accept loop poll", None).
fn poll_start(s: &str) -> Option<(&'static str, Option<i64>)> {
    if s.starts_with("the block_on future") && s.ends_with(" polled") {
        return Some(("accept loop poll", None));
    }
    let rest = s.strip_prefix("task ")?.strip_suffix(" polled")?;
    Some(("task poll", Some(rest.parse().ok()?)))
}

/// "task 3 waits" → "waits" (it returned Pending); "task 3 finished" → "finished".
fn poll_end(s: &str) -> Option<&'static str> {
    if s == "the block_on future waits" {
        return Some("waits");
    }
    let rest = s.strip_prefix("task ")?;
    let (id, what) = rest.split_once(' ')?;
    id.parse::<u64>().ok()?;
    match what {
        "waits" => Some("waits"),
        "finished" => Some("finished"),
        _ => None,
    }
}

/// The step that starts a wait: its name, its args, and whether it ends at the next step
/// (aio's poll, which records nothing when it returns).
fn wait_start(s: &str) -> Option<(String, Map<String, Value>, bool)> {
    let mut args = Map::new();
    if let Some(rest) = s.strip_prefix("epoll_wait(") {
        // "epoll_wait(no timeout): nothing to run: sleep until an fd is ready"
        args.insert("timeout".into(), before(rest, &[")"]).into());
        return Some(("epoll_wait".into(), args, false));
    }
    if let Some(rest) = s.strip_prefix("io_uring_enter: submit ") {
        // "io_uring_enter: submit 1 SQE, nothing to run: sleep until a completion arrives"
        args.insert("sqes_submitted".into(), number_after(rest, "").unwrap_or(0).into());
        args.insert("sleeps".into(), (!rest.contains("do not wait")).into());
        return Some(("io_uring_enter".into(), args, false));
    }
    if s.starts_with("read the CQ ring") {
        return Some(("read the CQ ring (no syscall)".into(), args, false));
    }
    if let Some(rest) = s.strip_prefix("poll(") {
        // "poll(notifier, completion eventfd; timeout 1 s, ...): sleep until glibc reports..."
        let how = before(rest.split_once("; ").map_or("", |p| p.1), &[")", ","]);
        args.insert("timeout".into(), how.into());
        let name = if s.contains("no syscall") { "collect (no syscall)" } else { "poll" };
        return Some((name.into(), args, true));
    }
    None
}

/// The step that ends a wait, and what ended it.
fn wait_end(s: &str) -> Option<Map<String, Value>> {
    let mut args = Map::new();
    if let Some(rest) = s.strip_prefix("epoll_wait returned ") {
        args.insert("events".into(), number_after(rest, "")?.into());
        return Some(args);
    }
    if s.contains(" in the completion ring") {
        args.insert("cqes".into(), number_after(s, "")?.into());
        return Some(args);
    }
    None
}

/// An instant's name and the args read from its words (the words themselves are added too).
fn instant(s: &str) -> (String, Map<String, Value>) {
    let mut args = Map::new();
    let mut put = |key: &str, v: Option<i64>| {
        if let Some(v) = v {
            args.insert(key.into(), v.into());
        }
    };
    let name = if let Some(rest) = s.strip_prefix("queued SQE ") {
        // "queued SQE RECV (multishot, ...) on fd 7 (user_data 1); no syscall yet"
        put("user_data", number_after(s, "(user_data"));
        format!("SQE {}", rest.split_whitespace().next().unwrap_or(""))
    } else if let Some(rest) = s.strip_prefix("CQE user_data ") {
        // "CQE user_data 1 (multishot RECV): result 7, in ring buffer 0, more to come ..."
        put("user_data", number_after(rest, ""));
        put("result", number_after(s, "result"));
        put("ring_buffer", number_after(s, "ring buffer"));
        let op = rest.split_once('(').map_or("", |p| before(p.1, &[")"]));
        match op.rsplit(' ').next().filter(|op| !op.is_empty() && *op != "?") {
            Some(op) => format!("CQE {op}"),
            // Queued before the recording started, so its name was not kept; but only a
            // receive takes a buffer from the ring.
            None if s.contains("in ring buffer") => "CQE RECV".into(),
            None => "CQE".into(),
        }
    } else if s.starts_with("CQE of the notifier") || s.starts_with("the notifier's eventfd") {
        "notified (another thread woke a task)".into()
    } else if let Some(rest) = s.strip_prefix("request ") {
        // "request 1 done: result 7, reported by glibc's notification thread 5611, ..."
        put("request", number_after(rest, ""));
        put("result", number_after(s, "result"));
        "request done".into()
    } else if let Some(rest) = s.strip_prefix("post completion of op ") {
        put("op", number_after(rest, ""));
        put("result", number_after(s, "result"));
        "post completion".into()
    } else if let Some(rest) = s.strip_prefix("queued ") {
        // The epoll backend: "queued SEND 7 bytes on fd 7 (op 1) in the driver's write queue ..."
        put("op", number_after(s, "(op"));
        format!("queued {}", rest.split_whitespace().next().unwrap_or(""))
    } else if s.starts_with("accept on fd") {
        put("request", number_after(s, "(request"));
        "accept (helper thread)".into()
    } else if s.starts_with("→ wake") {
        "wake".into()
    } else if let Some((what, ready)) = readiness(s) {
        // "fd 7: readable, writable → wake the task waiting for it" (or "registration 2: ...",
        // for an fd registered before the recording started)
        if let Some(fd) = what.strip_prefix("fd ") {
            put("fd", fd.parse().ok());
        }
        args.insert("readiness".into(), before(ready, &["→", "("]).into());
        "readiness event".into()
    } else if s.starts_with("the driver took a") {
        "buffer picked at readiness".into()
    } else if s.contains("timer") && s.contains("expired") {
        "timers expired".into()
    } else if let Some(call) = call_name(s) {
        // "read(fd 7, 16384 bytes) → 7 bytes", "recv(fd 7, 4096 bytes) for op 1, by the driver → 7",
        // "aio_read(fd 8, 4096 bytes) handed to glibc (request 1): ..."
        put("fd", number_after(s, "(fd"));
        put("request", number_after(s, "(request"));
        put("op", number_after(s, "for op"));
        if let Some((_, result)) = s.split_once("→ ") {
            let result = before(result, &[":"]);
            match result.split(' ').next().and_then(|n| n.parse::<i64>().ok()) {
                Some(n) => put("result", Some(n)),
                None => {
                    args.insert("result".into(), result.into());
                }
            }
        }
        call.to_string()
    } else {
        // Anything else: its first words, numbers left out (so that the same kind of step
        // has the same name).
        let mut name = String::new();
        for word in before(s, &[":", "(", ";"]).split(' ') {
            if name.len() + word.len() > 60 {
                name.push_str(" …");
                break;
            }
            if !name.is_empty() {
                name.push(' ');
            }
            name.push_str(if word.chars().all(|c| c.is_ascii_digit()) { "N" } else { word });
        }
        name
    };
    (name, args)
}

/// "fd 7: readable → ..." → ("fd 7", "readable → ..."); also "registration 2: ...".
fn readiness(s: &str) -> Option<(&str, &str)> {
    let (what, ready) = s.split_once(": ")?;
    let (word, number) = what.split_once(' ')?;
    (matches!(word, "fd" | "registration") && number.parse::<u64>().is_ok()).then_some((what, ready))
}

/// The syscall or library call a step starts with ("read(fd 7, ..." → "read").
fn call_name(s: &str) -> Option<&str> {
    let (name, _) = s.split_once('(')?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .then_some(name)
}

/// Microseconds, with nanoseconds as decimals.
fn micros(ns: u64) -> Value {
    json!(ns as f64 / 1000.0)
}

/// The steps as a Chrome trace (`{"traceEvents": [...], "otherData": {...}}`), and what it
/// holds. `process` names the process's track; `other` goes in `otherData`.
pub fn chrome_trace(steps: &[Step], process: &str, other: Value) -> (Value, Counts) {
    let pid = std::process::id();
    let t0: Option<Instant> = steps.iter().map(|s| s.at).min();
    let mut tracks: Vec<(String, Track)> = Vec::new();
    for step in steps {
        let at = t0.map_or(0, |t0| step.at.saturating_duration_since(t0).as_nanos() as u64);
        let index = match tracks.iter().position(|(name, _)| *name == step.thread) {
            Some(i) => i,
            None => {
                tracks.push((step.thread.clone(), Track::new(pid, tracks.len() as u64 + 1)));
                tracks.len() - 1
            }
        };
        let track = &mut tracks[index].1;
        // aio: a completion is named after its request, known only to this track.
        let text = step.to_string();
        let renamed = track.name_done(text.trim_start());
        let before_len = track.events.len();
        track.step(at, &text);
        if let Some(name) = renamed {
            for event in &mut track.events[before_len..] {
                if event.body["name"] == "request done" {
                    event.body.insert("name".into(), name.clone().into());
                }
            }
        }
    }

    let mut counts = Counts::default();
    let mut meta = vec![json!({
        "ph": "M", "name": "process_name", "ts": 0, "pid": pid, "tid": 0,
        "args": { "name": process },
    })];
    let mut events = Vec::new();
    for (name, mut track) in tracks {
        track.op_spans();
        meta.push(json!({
            "ph": "M", "name": "thread_name", "ts": 0, "pid": pid, "tid": track.tid,
            "args": { "name": name },
        }));
        counts.turns += track.counts.turns;
        counts.waits += track.counts.waits;
        counts.polls += track.counts.polls;
        events.extend(track.events);
    }
    // Time order; a span before what it encloses (the longer first).
    events.sort_by_key(|e| (e.ts, std::cmp::Reverse(e.dur.unwrap_or(0))));
    let events = events.into_iter().map(|e| {
        let mut body = e.body;
        body.insert("ts".into(), micros(e.ts));
        if let Some(dur) = e.dur {
            body.insert("dur".into(), micros(dur));
        }
        Value::Object(body)
    });
    let all: Vec<Value> = meta.into_iter().chain(events).collect();
    counts.events = all.len();
    (json!({ "traceEvents": all, "displayTimeUnit": "ns", "otherData": other }), counts)
}
