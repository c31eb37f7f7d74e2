//! The steps of a traced run read back into rows, from the runtimes' own words: the steps
//! common to the executors first, then each design's (the reactor's and the epoll emulation's,
//! io_uring's, POSIX aio's). A step this reader does not know becomes a note on the loop's lane.

use echo::server::RuntimeKind;

use super::row::{arrow, note, with_ret, with_sub, Kind, Lane, Row};
use crate::trace::record::{Client, Phase};
use crate::trace::words::{before, number_after};

/// What a pending aio request is: the blocking call a helper thread makes for it.
#[derive(Clone, Debug)]
struct Pending {
    call: String,
    /// Whether its completion sends the echo (a write).
    sends: bool,
}

/// Reads the steps of each phase into rows. The client's own actions (connect, send, and
/// reading the echo once the server has sent it) are added where they happened.
pub fn rows(kind: RuntimeKind, phases: &[Phase]) -> Vec<Row> {
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
