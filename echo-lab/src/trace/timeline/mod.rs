//! The steps of a traced run as a timeline: Chrome trace-event JSON, which Perfetto
//! (ui.perfetto.dev) and chrome://tracing open (`echo-lab trace --chrome-trace FILE`).
//!
//! The events are derived from the steps' variants and fields (as in [`super::seqdiag`]) and
//! their timestamps; one track per thread that recorded steps:
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
//!
//! What each step is (a poll's start or end, a wait's, an instant and its args) is read from
//! its variant in [`kinds`]; this module builds the tracks from that.

use std::collections::HashMap;
use std::time::Instant;

use executor::trace::Step;
use proactor::trace::Event as P;
use serde_json::{json, Map, Value};

use self::kinds::{instant, poll_end, poll_start, wait_end, wait_start};
use super::events::{self, opcode, Event};

mod kinds;

/// One event of the Chrome trace, before it is placed in time order.
struct TraceEvent {
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
    events: Vec<TraceEvent>,
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
        self.events.push(TraceEvent { ts, dur, body });
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

    fn step(&mut self, at: u64, event: Event<'_>, words: &str) {
        if self.wait.is_some() && self.wait_ends_at_next {
            self.close_wait(at, Map::new());
        }

        // Task polls.
        if let Some((name, task)) = poll_start(event) {
            let mut args = Map::new();
            if let Some(task) = task {
                args.insert("task".into(), task.into());
            }
            self.poll = Some(Open { at, name: name.into(), args });
            self.in_tasks = true;
            self.reaping = None;
            return;
        }
        if let Some(outcome) = poll_end(event) {
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
        let wait = wait_start(event);
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
        if let Some(ended_by) = wait_end(event) {
            self.close_wait(at, ended_by);
            return;
        }

        let (name, mut args) = instant(event);
        args.insert("step".into(), words.trim_start().into());
        self.track_op(event, at, &name);
        self.push("i", "step", &name, at, None, args);
    }

    /// Follows operations from their start to their completion.
    fn track_op(&mut self, event: Event<'_>, at: u64, name: &str) {
        let Event::Proactor(event) = event else { return };
        let fd = |fd: i32| Some(i64::from(fd));
        match *event {
            P::SqeQueued { user_data, op } => {
                self.in_flight.insert(format!("uring {user_data}"), (at, opcode(op), fd(op.fd())));
            }
            P::Cqe { user_data, result, more: false, .. } => {
                self.finish_op(&format!("uring {user_data}"), at, Some(result.into()));
            }
            P::AioSubmitted { fd: io_fd, request, .. } => {
                self.in_flight.insert(format!("aio {request}"), (at, name.to_string(), fd(io_fd)));
            }
            P::HelperJob { accept, fd: socket, request } => {
                let op = if accept { "accept" } else { "connect" };
                self.in_flight.insert(format!("aio {request}"), (at, op.to_string(), fd(socket)));
            }
            P::AioDone { request, result, .. } => {
                if let Some(index) = self.reaping {
                    let args = self.events[index].body.get_mut("args").and_then(Value::as_object_mut);
                    if let Some(args) = args {
                        let n = args.get("completions").and_then(Value::as_u64).unwrap_or(0);
                        args.insert("completions".into(), (n + 1).into());
                    }
                }
                self.finish_op(&format!("aio {request}"), at, Some(result.into()));
            }
            P::Queued { index, op, .. } => {
                self.in_flight.insert(format!("op {index}"), (at, op.opcode().to_string(), fd(op.fd())));
            }
            P::Posted { index, result, .. } => {
                self.finish_op(&format!("op {index}"), at, Some(result.into()))
            }
            _ => {}
        }
    }

    /// The aio wait's name for the completions it reports, once known.
    fn name_done(&self, event: Event<'_>) -> Option<String> {
        let Event::Proactor(&P::AioDone { request, .. }) = event else { return None };
        self.in_flight.get(&format!("aio {request}")).map(|(_, op, _)| format!("{op} done"))
    }
}

/// Microseconds, with nanoseconds as decimals.
fn micros(ns: u64) -> Value {
    json!(ns as f64 / 1000.0)
}

/// The steps as a Chrome trace (`{"traceEvents": [...], "otherData": {...}}`), and what it
/// holds. `process` names the process's track; `other` goes in `otherData`.
pub fn chrome_trace(steps: &[Step], process: &str, other: Value) -> (Value, Counts) {
    chrome_trace_worded(steps, &|step| step.to_string(), process, other)
}

/// [`chrome_trace`], with `words` giving each step's words (the `step` arg of its instant).
pub(crate) fn chrome_trace_worded(
    steps: &[Step],
    words: &dyn Fn(&Step) -> String,
    process: &str,
    other: Value,
) -> (Value, Counts) {
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
        let event = events::of(step);
        let renamed = track.name_done(event);
        let before_len = track.events.len();
        track.step(at, event, &words(step));
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

#[cfg(test)]
mod tests {
    use echo::server::RuntimeKind;

    use super::*;
    use crate::trace::test_steps::{echo_phases, Unworded};

    /// The timeline comes from the steps' variants and fields: steps reworded make the same
    /// events, with only the words themselves (each instant's `step` arg) changed.
    #[test]
    fn reworded_steps_make_the_same_timeline() {
        for kind in RuntimeKind::ALL {
            let steps: Vec<Step> = echo_phases(kind).into_iter().flat_map(|phase| phase.steps).collect();
            let unworded = Unworded::new(&steps.iter().collect::<Vec<_>>());
            let (doc, counts) = chrome_trace(&steps, "echo", json!({}));
            let (again, _) = chrome_trace_worded(&steps, &|step| unworded.reworded(step), "echo", json!({}));
            assert!(counts.turns >= 3 && counts.polls >= 3, "{kind}: {counts:?}");
            let events = |doc: &Value| -> Vec<Value> {
                let mut events = doc["traceEvents"].as_array().expect("events").clone();
                for event in &mut events {
                    if let Some(step) = event["args"]["step"].as_str().map(str::to_string) {
                        event["args"]["step"] = unworded.text(&step).into();
                    }
                }
                events
            };
            assert_eq!(events(&doc), events(&again), "{kind}");
            let names: Vec<&str> =
                doc["traceEvents"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
            let expected: &[&str] = match kind {
                RuntimeKind::Reactor => &["epoll_wait", "readiness event", "read", "send", "accept4"],
                RuntimeKind::Uring => &["io_uring_enter", "SQE RECV", "CQE RECV", "SQE SEND", "CQE SEND"],
                RuntimeKind::Aio(proactor::AioNotify::Suspend) => {
                    &["aio_suspend", "aio_read", "aio_read done", "aio_write done", "accept (helper thread)"]
                }
                RuntimeKind::Aio(_) => {
                    &["poll", "aio_read", "aio_read done", "aio_write done", "accept (helper thread)"]
                }
                RuntimeKind::ProactorEpoll => {
                    &["epoll_wait", "queued RECV", "recv", "send", "post completion"]
                }
            };
            for name in expected {
                assert!(names.contains(name), "{kind}: no {name:?} in {names:?}");
            }
        }
    }
}
