//! The steps of a traced run read into rows, by their variants: the steps common to the
//! executors first, then each design's (the reactor's and the epoll emulation's, io_uring's,
//! POSIX aio's). A step this reader does not draw becomes a note on the loop's lane, in its
//! words; otherwise a step's words are only its row's tooltip.

use std::collections::HashMap;
use std::io;

use echo::models::trace::{Call as ModelCall, Event as M};
use echo::server::RuntimeKind;
use executor::trace::{LoopEvent, Step, SysEvent};
use proactor::trace::{AioWait, Behind, Event as P, Op, Reporter, UringWait};
use reactor::trace::Event as R;

use super::row::{arrow, note, with_ret, with_sub, Kind, Lane, Row};
use crate::trace::events::{self, epoll_timeout, opcode, readiness, registration, Event};
use crate::trace::record::{Client, Phase};
use crate::trace::Traced;

/// What a pending aio request is: the blocking call a helper thread makes for it.
#[derive(Clone, Debug)]
struct Pending {
    call: String,
    /// Whether its completion sends the echo (a write).
    sends: bool,
}

/// Reads the steps of each phase into rows. The client's own actions (connect, send, and
/// reading the echo once the server has sent it) are added where they happened.
pub fn rows(kind: Traced, phases: &[Phase]) -> Vec<Row> {
    rows_worded(kind, phases, &|step| step.to_string())
}

/// [`rows`], with `words` giving each step's words (its tooltip, or a note's text).
pub(crate) fn rows_worded(kind: Traced, phases: &[Phase], words: &dyn Fn(&Step) -> String) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut pending: HashMap<usize, Pending> = HashMap::new();
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
            let (row, sent) = read_step(kind, events::of(step), &words(step), &mut pending);
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

/// One row, and no bytes sent.
fn one(row: Row) -> (Vec<Row>, bool) {
    (vec![row], false)
}

/// A step this reader does not draw: a note on the loop's lane, in the step's words.
fn unknown(words: &str) -> (Vec<Row>, bool) {
    one(note(Lane::Loop, words.trim(), words))
}

/// One step as rows, and whether it sent bytes to the client (the echo). `step` is the step's
/// words: only ever a row's tooltip, or the text of a note for a step this reader does not
/// draw.
fn read_step(
    kind: Traced,
    event: Event<'_>,
    step: &str,
    pending: &mut HashMap<usize, Pending>,
) -> (Vec<Row>, bool) {
    // Steps common to the executors.
    match event {
        Event::Loop(&LoopEvent::TaskPolled { task }) => {
            return one(arrow(Lane::Loop, Lane::Task, Kind::Poll, format!("poll task {task}"), step))
        }
        Event::Loop(LoopEvent::TaskWaits { .. }) => {
            return one(arrow(Lane::Task, Lane::Loop, Kind::Poll, "Pending", step))
        }
        Event::Loop(LoopEvent::TaskFinished { .. }) => {
            return one(arrow(Lane::Task, Lane::Loop, Kind::Poll, "Ready: finished", step))
        }
        Event::Loop(LoopEvent::MainPolled) => {
            return one(arrow(Lane::Loop, Lane::Task, Kind::Poll, "poll the accept loop", step))
        }
        Event::Loop(LoopEvent::MainWaits) => {
            return one(arrow(Lane::Task, Lane::Loop, Kind::Poll, "Pending (accept loop)", step))
        }
        Event::Loop(&LoopEvent::TimersExpired { count }) => {
            let label =
                if count == 1 { "a timer expired".to_string() } else { format!("{count} timers expired") };
            return one(note(Lane::Loop, label, step));
        }
        Event::Proactor(P::Wake | P::WakeStalled) => {
            return one(arrow(Lane::Loop, Lane::Task, Kind::Wake, "wake", step))
        }
        Event::Sys(&SysEvent::Shutdown { fd, how }) => {
            let call = format!("shutdown(fd {fd}, {how:?})");
            return one(arrow(Lane::Task, Lane::Kernel, Kind::Syscall, call, step));
        }
        // A send behind that the proactor's driver finishes by itself: no arrow to the task,
        // which is the point ("SEND complete: the driver gives ring buffer 0 back: no wake").
        Event::Proactor(&P::BehindOver { error, ring_buffer, owner, fd }) => {
            let head = match error {
                None => "SEND complete".to_string(),
                Some(0) => format!("SEND failed ({})", io::Error::from(io::ErrorKind::WriteZero)),
                Some(errno) => format!("SEND failed ({})", io::Error::from_raw_os_error(errno)),
            };
            let what = match ring_buffer {
                Some(bid) => format!("gives ring buffer {bid} back"),
                None => "drops the buffer".to_string(),
            };
            let then = match (owner, error) {
                (Behind::Dropped, _) => format!("closes fd {fd}"),
                (_, Some(_)) => "the next call gets the error".to_string(),
                (Behind::Quiet, None) => "no wake".to_string(),
                (Behind::Waited, None) => "the waiting call is woken".to_string(),
            };
            return one(note(Lane::Loop, format!("{head}: the driver {what}: {then}"), step));
        }
        Event::Proactor(&P::BehindShort { sent, asked }) => {
            let text = format!("SEND took {sent} of {asked} bytes: the driver sends the rest");
            return one(note(Lane::Loop, text, step));
        }
        _ => {}
    }
    match kind {
        // The emulation's steps are the reactor's epoll steps plus its completions; those it
        // does not name become notes.
        Traced::Runtime(RuntimeKind::Reactor | RuntimeKind::ProactorEpoll) => read_reactor_step(event, step),
        Traced::Runtime(RuntimeKind::Uring) => read_uring_step(event, step),
        Traced::Runtime(RuntimeKind::Aio(_)) => read_aio_step(event, step, pending),
        Traced::Model(_) => read_model_step(event, step),
    }
}

/// A syscall's result, for the dashed arrow back.
fn result(result: Result<usize, i32>, unit: &str) -> String {
    match result {
        Ok(n) => format!("{n}{unit}"),
        Err(libc::EAGAIN) => "EAGAIN".into(),
        Err(libc::EINPROGRESS) => "EINPROGRESS".into(),
        Err(errno) => format!("error: {}", io::Error::from_raw_os_error(errno)),
    }
}

fn read_reactor_step(event: Event<'_>, step: &str) -> (Vec<Row>, bool) {
    match event {
        Event::Sys(&SysEvent::EpollWait { timeout_ms }) => {
            let call = format!("epoll_wait({})", epoll_timeout(timeout_ms));
            one(with_sub(arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, call, step), "sleeps"))
        }
        Event::Sys(&SysEvent::EpollReturned { events }) => {
            let label = format!("returns {events} event{}", if events == 1 { "" } else { "s" });
            one(arrow(Lane::Kernel, Lane::Loop, Kind::Return, label, step))
        }
        Event::Sys(&SysEvent::EpollAdd { fd }) => one(with_sub(
            arrow(Lane::Task, Lane::Kernel, Kind::Syscall, format!("epoll_ctl(ADD fd {fd})"), step),
            "watch it for input and output",
        )),
        Event::Sys(&SysEvent::EpollDel { fd }) => one(with_sub(
            arrow(Lane::Task, Lane::Kernel, Kind::Syscall, format!("epoll_ctl(DEL fd {fd})"), step),
            "stop watching it (it is being closed)",
        )),
        // An event, and the wake it causes: "fd 7: readable, writable", then "wake (fd 7 ...)".
        Event::Reactor(&R::Ready { io, ready, woken }) => {
            let (io, ready) = (registration(io), readiness(ready));
            let event = arrow(Lane::Kernel, Lane::Loop, Kind::Event, format!("event: {io}: {ready}"), step);
            if woken == 0 {
                return one(with_sub(event, "no task waits for it yet"));
            }
            let wake = arrow(Lane::Loop, Lane::Task, Kind::Wake, format!("wake ({io} {ready})"), step);
            (vec![event, wake], false)
        }
        Event::Proactor(&P::FdReady { fd, ready }) => one(arrow(
            Lane::Kernel,
            Lane::Loop,
            Kind::Event,
            format!("event: fd {fd}: {}", readiness(ready)),
            step,
        )),
        // Syscalls the task makes: "read(fd 7, 16384 bytes) → 7 bytes", "accept4(fd 3) → ...".
        Event::Reactor(&R::Io { call, fd, len, result: r }) => {
            let label = format!("{}(fd {fd}, {len} bytes)", call.name());
            let row =
                with_ret(arrow(Lane::Task, Lane::Kernel, Kind::Syscall, label, step), result(r, " bytes"));
            (vec![row], sent(call.sends(), r))
        }
        Event::Reactor(&R::Accepted { listener, fd }) => one(with_ret(
            arrow(Lane::Task, Lane::Kernel, Kind::Syscall, format!("accept4(fd {listener})"), step),
            format!("new connection, fd {fd}"),
        )),
        Event::Reactor(&R::ShortRead { io }) => {
            one(note(Lane::Task, format!("short read: {} is drained", registration(io)), step))
        }
        // A send behind the task makes itself, on a socket known to be writable.
        Event::Proactor(&P::SentNow { fd, len, result: r }) => {
            let label = format!("send(fd {fd}, {len} bytes)");
            let row =
                with_ret(arrow(Lane::Task, Lane::Kernel, Kind::Syscall, label, step), result(r, " bytes"));
            (vec![row], sent(true, r))
        }
        // The emulation's syscalls, which its driver makes at readiness.
        Event::Proactor(&P::Transfer { call, fd, len, index, result: r }) => {
            let label = format!("{}(fd {fd}, {len} bytes) for op {index}", call.name());
            let row = with_ret(arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, label, step), result(r, ""));
            (vec![row], sent(call.sends(), r))
        }
        Event::Proactor(&P::Accept { fd, index, result: r }) => one(with_ret(
            arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, format!("accept4(fd {fd}) for op {index}"), step),
            result(r, ""),
        )),
        _ => unknown(step),
    }
}

/// Whether a send's result means bytes went to the client.
fn sent(sends: bool, result: Result<usize, i32>) -> bool {
    sends && result.is_ok_and(|n| n > 0)
}

fn read_uring_step(event: Event<'_>, step: &str) -> (Vec<Row>, bool) {
    let Event::Proactor(event) = event else { return unknown(step) };
    match *event {
        P::Enter { submit, wait } => {
            let label = format!("io_uring_enter: submit {submit} SQE{}", if submit == 1 { "" } else { "s" });
            let sub = if wait == UringWait::No { "do not wait" } else { "and sleep until a completion" };
            one(with_sub(arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, label, step), sub))
        }
        P::SqFull => one(with_sub(
            arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, "io_uring_enter", step),
            "the SQ is full",
        )),
        P::Cqes { count } => {
            let label = format!("{count} CQE{} in the completion ring", if count == 1 { "" } else { "s" });
            one(arrow(Lane::Kernel, Lane::Loop, Kind::Return, label, step))
        }
        P::Cqe { op, result, ring_buffer, more, .. } => {
            let label = format!("CQE {}: {result}", op.map_or("?", Op::name));
            let mut sub = Vec::new();
            if let Some(bid) = ring_buffer {
                sub.push(format!("ring buffer {bid}"));
            }
            if more {
                sub.push("more to come".to_string());
            }
            let row = arrow(Lane::Kernel, Lane::Loop, Kind::Cqe, label, step);
            let row = if sub.is_empty() { row } else { with_sub(row, sub.join(", ")) };
            (vec![row], op.is_some_and(Op::sends) && result > 0)
        }
        P::NotifierCqe => one(with_sub(
            arrow(Lane::Kernel, Lane::Loop, Kind::Cqe, "CQE of the notifier's poll", step),
            "another thread woke a task",
        )),
        P::SqeQueued { op, .. } => one(sqe(sqe_label(op), step)),
        P::CloseQueued { fd } => one(sqe(format!("SQE CLOSE fd {fd}"), step)),
        P::CancelQueued { user_data } => {
            one(sqe(format!("SQE ASYNC_CANCEL for user_data {user_data}"), step))
        }
        P::MultishotWaits { .. } => one(note(Lane::Task, "the multishot RECV stays armed: no new SQE", step)),
        // The driver's steps (a CQE took a piece of the buffer; a send behind gave it back).
        P::RingPiece { bid, bytes, offset } => one(note(
            Lane::Loop,
            format!(
                "ring buffer {bid} partly consumed: {bytes} bytes at offset {offset}; the kernel goes on \
                 filling it (shared memory)"
            ),
            step,
        )),
        P::RingBufferBack { bid } => {
            one(note(Lane::Loop, format!("ring buffer {bid} goes back to the ring (shared memory)"), step))
        }
        P::CqRead => one(note(Lane::Loop, "reads the CQ ring: no syscall", step)),
        _ => unknown(step),
    }
}

/// An SQE written into the ring by the task.
fn sqe(label: String, step: &str) -> Row {
    with_sub(arrow(Lane::Task, Lane::Loop, Kind::Sqe, label, step), "into the SQ ring: no syscall")
}

/// An operation's SQE, on its arrow ("SQE multishot RECV on fd 7", "SQE SEND 7 bytes on fd 7").
fn sqe_label(op: Op) -> String {
    match op {
        Op::Accept { fd }
        | Op::AcceptMulti { fd }
        | Op::RecvMulti { fd, .. }
        | Op::RecvMsg { fd }
        | Op::SendMsg { fd }
        | Op::RecvMsgMulti { fd, .. } => format!("SQE {} on fd {fd}", opcode(op)),
        Op::Connect { fd } => format!("SQE CONNECT fd {fd}"),
        Op::Recv { fd, len } => format!("SQE RECV fd {fd} into a {len}-byte buffer"),
        Op::SendTo { fd, len } => format!("SQE SEND {len} bytes to an address on fd {fd}"),
        Op::RecvPick { fd } => format!("SQE RECV fd {fd}, buffer picked at readiness"),
        Op::Send { fd, len, dontwait: false } => format!("SQE SEND {len} bytes on fd {fd}"),
        Op::Send { fd, len, dontwait: true } => format!("SQE SEND {len} bytes on fd {fd}, without waiting"),
    }
}

fn read_aio_step(event: Event<'_>, step: &str, pending: &mut HashMap<usize, Pending>) -> (Vec<Row>, bool) {
    let Event::Proactor(event) = event else { return unknown(step) };
    match *event {
        P::AioPoll { wait, signals } => {
            let sub = match wait {
                AioWait::Forever => "sleeps".to_string(),
                AioWait::No => "no wait, no syscall".to_string(),
                AioWait::Rescan => "timeout 1 s".to_string(),
                AioWait::AtMost(t) => format!("timeout {t:?}"),
            };
            let call = if signals {
                "poll(notifier, completion eventfd, signalfd)"
            } else {
                "poll(notifier, completion eventfd)"
            };
            one(with_sub(arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, call, step), sub))
        }
        // aio_suspend is glibc's: it sleeps on a futex until a helper thread finishes a request.
        P::AioSuspend { requests, wait } => {
            let sub = match wait {
                AioWait::No => return one(note(Lane::Loop, "no wait: aio_error on each request", step)),
                AioWait::Forever => "sleeps".to_string(),
                AioWait::Rescan => "timeout 1 s".to_string(),
                AioWait::AtMost(t) => format!("timeout {t:?}"),
            };
            let call = format!("aio_suspend({requests} requests)");
            one(with_sub(arrow(Lane::Loop, Lane::Helpers, Kind::Syscall, call, step), sub))
        }
        P::AioDone { request, result, by } => {
            let mut out = Vec::new();
            let mut sends = false;
            if let Some(p) = pending.remove(&request) {
                out.push(arrow(
                    Lane::Kernel,
                    Lane::Helpers,
                    Kind::Return,
                    format!("{} → {result}", p.call),
                    step,
                ));
                sends = p.sends && result > 0;
            }
            let by = match by {
                Reporter::Glibc { .. } => "by glibc's notification thread, new for this completion",
                Reporter::Helper => "by a helper thread",
                Reporter::Signal => "by glibc's realtime signal, read from the signalfd",
                Reporter::Suspend => "aio_suspend returns; aio_error says it is over",
            };
            let label = format!("request {request} done: {result}");
            out.push(with_sub(arrow(Lane::Helpers, Lane::Loop, Kind::Done, label, step), by));
            (out, sends)
        }
        // aio_read: a glibc thread's pread fails with ESPIPE on a socket, then it blocks in read.
        P::AioSubmitted { write, fd, len, request } => {
            let (call, blocking) = if write { ("aio_write", "write") } else { ("aio_read", "read") };
            let mut out = vec![with_sub(
                arrow(
                    Lane::Task,
                    Lane::Helpers,
                    Kind::Request,
                    format!("{call}(fd {fd}, {len} bytes)"),
                    step,
                ),
                format!("request {request}, handed to glibc"),
            )];
            if !write {
                out.push(with_ret(
                    arrow(Lane::Helpers, Lane::Kernel, Kind::Syscall, format!("pread(fd {fd})"), step),
                    "ESPIPE",
                ));
            }
            let waits = if write { "a blocking call" } else { "blocks until data comes" };
            out.push(with_sub(
                arrow(Lane::Helpers, Lane::Kernel, Kind::Syscall, format!("{blocking}(fd {fd})"), step),
                waits,
            ));
            pending.insert(request, Pending { call: format!("{blocking}(fd {fd})"), sends: write });
            (out, false)
        }
        // An accept or connect, which POSIX aio lacks, on a helper thread of the runtime.
        P::HelperJob { accept, fd, request } => {
            let what = if accept { "accept" } else { "connect" };
            let call = format!("{what}(fd {fd})");
            pending.insert(request, Pending { call: call.clone(), sends: false });
            (
                vec![
                    with_sub(
                        arrow(Lane::Task, Lane::Helpers, Kind::Request, call.clone(), step),
                        format!("request {request}: POSIX aio has no {what}"),
                    ),
                    with_sub(arrow(Lane::Helpers, Lane::Kernel, Kind::Syscall, call, step), "blocks"),
                ],
                false,
            )
        }
        _ => unknown(step),
    }
}

/// A classic model's steps: one thread that waits (select, or io_submit and io_getevents) and
/// makes every accept, read and write itself.
fn read_model_step(event: Event<'_>, step: &str) -> (Vec<Row>, bool) {
    let Event::Model(event) = event else { return unknown(step) };
    let syscall = |label: String| arrow(Lane::Loop, Lane::Kernel, Kind::Syscall, label, step);
    match *event {
        M::Select { nfds, reads, writes } => one(with_sub(
            syscall(format!("select(nfds {nfds}: {reads} to read, {writes} to write)")),
            "sets rebuilt and copied in; sleeps",
        )),
        M::SelectReturned { ready } => one(with_sub(
            arrow(Lane::Kernel, Lane::Loop, Kind::Return, format!("returns {ready} ready"), step),
            "test every connection's bit",
        )),
        M::PollArmed { fd, writable } => {
            let what = fd.map_or_else(|| "the listener".to_string(), |fd| format!("fd {fd}"));
            let events = if writable { "POLLOUT" } else { "POLLIN" };
            one(note(Lane::Loop, format!("iocb IOCB_CMD_POLL: {what}, {events}"), step))
        }
        M::Submitted { requests } => one(with_sub(
            syscall(format!("io_submit({requests} poll request{})", if requests == 1 { "" } else { "s" })),
            "one-shot: each is used up by its event",
        )),
        M::GetEvents { .. } => one(with_sub(syscall("io_getevents(min 1)".to_string()), "sleeps")),
        M::GetEventsReturned { events } => one(arrow(
            Lane::Kernel,
            Lane::Loop,
            Kind::Return,
            format!("returns {events} event{}", if events == 1 { "" } else { "s" }),
            step,
        )),
        M::PollReady { fd, revents } => {
            let what = fd.map_or_else(|| "the listener".to_string(), |fd| format!("fd {fd}"));
            let ready = if revents & libc::POLLOUT != 0 { "writable" } else { "readable" };
            one(arrow(Lane::Kernel, Lane::Loop, Kind::Cqe, format!("event: {what} {ready}"), step))
        }
        M::Accepted { listener, fd } => {
            one(with_ret(syscall(format!("accept4(fd {listener})")), format!("new connection, fd {fd}")))
        }
        M::Io { call, fd, len, result: r } => {
            let row =
                with_ret(syscall(format!("{}(fd {fd}, {len} bytes)", call.name())), result(r, " bytes"));
            (vec![row], call == ModelCall::Write && r.is_ok_and(|n| n > 0))
        }
        M::Shutdown { fd } => one(syscall(format!("shutdown(fd {fd}, Write)"))),
        M::Closed { fd } => one(syscall(format!("close(fd {fd})"))),
        _ => unknown(step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::test_steps::{echo_phases, Unworded};

    /// The rows come from the steps' variants and fields: steps reworded draw the same rows,
    /// with only the words themselves changed (the tooltips, and the notes of steps this
    /// reader does not draw).
    #[test]
    fn reworded_steps_draw_the_same_rows() {
        for kind in RuntimeKind::ALL {
            let phases = echo_phases(kind);
            let steps: Vec<&Step> = phases.iter().flat_map(|phase| &phase.steps).collect();
            let unworded = Unworded::new(&steps);
            let drawn = rows(Traced::Runtime(kind), &phases);
            let redrawn = rows_worded(Traced::Runtime(kind), &phases, &|step| unworded.reworded(step));
            let arrows = drawn.iter().filter(|row| matches!(row, Row::Arrow { .. })).count();
            assert!(arrows >= 10, "{kind}: {drawn:#?}");
            assert_eq!(drawn.len(), redrawn.len(), "{kind}");
            for (row, again) in drawn.iter().zip(&redrawn) {
                assert_eq!(unworded.row(row), unworded.row(again), "{kind}");
            }
        }
    }
}
