//! What each step is on the timeline, read from its variant and fields: the start or end of
//! a task's poll, the start or end of the loop's wait, or an instant with its name and args.

use executor::trace::{LoopEvent, SysEvent};
use proactor::trace::{AioWait, Event as P, UringWait};
use reactor::trace::Event as R;
use serde_json::{Map, Value};

use crate::trace::events::{epoll_timeout, readiness, Event};

/// A task's poll starts: ("task poll", Some(3)), or the accept loop's ("accept loop poll", None).
pub(super) fn poll_start(event: Event<'_>) -> Option<(&'static str, Option<usize>)> {
    match event {
        Event::Loop(LoopEvent::MainPolled) => Some(("accept loop poll", None)),
        Event::Loop(&LoopEvent::TaskPolled { task }) => Some(("task poll", Some(task))),
        _ => None,
    }
}

/// A poll ends: "waits" (it returned Pending) or "finished".
pub(super) fn poll_end(event: Event<'_>) -> Option<&'static str> {
    match event {
        Event::Loop(LoopEvent::MainWaits | LoopEvent::TaskWaits { .. }) => Some("waits"),
        Event::Loop(LoopEvent::TaskFinished { .. }) => Some("finished"),
        _ => None,
    }
}

/// The step that starts a wait: its name, its args, and whether it ends at the next step
/// (aio's poll, which records nothing when it returns).
pub(super) fn wait_start(event: Event<'_>) -> Option<(String, Map<String, Value>, bool)> {
    let mut args = Map::new();
    match event {
        Event::Sys(&SysEvent::EpollWait { timeout_ms }) => {
            args.insert("timeout".into(), epoll_timeout(timeout_ms).into());
            Some(("epoll_wait".into(), args, false))
        }
        Event::Proactor(&P::Enter { submit, wait }) => {
            args.insert("sqes_submitted".into(), submit.into());
            args.insert("sleeps".into(), (wait != UringWait::No).into());
            Some(("io_uring_enter".into(), args, false))
        }
        Event::Proactor(P::CqRead) => Some(("read the CQ ring (no syscall)".into(), args, false)),
        Event::Proactor(&P::AioPoll { wait, .. }) => {
            args.insert("timeout".into(), aio_timeout(wait).into());
            let name = if wait == AioWait::No { "collect (no syscall)" } else { "poll" };
            Some((name.into(), args, true))
        }
        Event::Proactor(&P::AioSuspend { requests, wait }) => {
            args.insert("timeout".into(), aio_timeout(wait).into());
            args.insert("requests".into(), requests.into());
            let name = if wait == AioWait::No { "collect (aio_error on each)" } else { "aio_suspend" };
            Some((name.into(), args, true))
        }
        _ => None,
    }
}

/// An aio wait's timeout in words.
fn aio_timeout(wait: AioWait) -> String {
    match wait {
        AioWait::Forever => "no timeout".to_string(),
        AioWait::No => "no wait".to_string(),
        AioWait::Rescan => "timeout 1 s".to_string(),
        AioWait::AtMost(t) => format!("timeout {t:?}"),
    }
}

/// The step that ends a wait, and what ended it.
pub(super) fn wait_end(event: Event<'_>) -> Option<Map<String, Value>> {
    let mut args = Map::new();
    match event {
        Event::Sys(&SysEvent::EpollReturned { events }) => args.insert("events".into(), events.into()),
        Event::Proactor(&P::Cqes { count }) => args.insert("cqes".into(), count.into()),
        _ => return None,
    };
    Some(args)
}

/// A syscall's result as an arg: the number, or the error's name.
fn result_arg(result: Result<usize, i32>) -> Value {
    match result {
        Ok(n) => n.into(),
        Err(libc::EAGAIN) => "EAGAIN".into(),
        Err(libc::EINPROGRESS) => "EINPROGRESS".into(),
        Err(_) => "error".into(),
    }
}

/// An instant's name and its args (the step's words are added too).
pub(super) fn instant(event: Event<'_>) -> (String, Map<String, Value>) {
    let mut args = Map::new();
    let mut put = |key: &str, v: Value| {
        args.insert(key.into(), v);
    };
    let name: String = match event {
        Event::Loop(LoopEvent::TimersExpired { .. }) => "timers expired".into(),
        Event::Sys(&SysEvent::Shutdown { fd, .. }) => {
            put("fd", fd.into());
            "shutdown".into()
        }
        Event::Sys(&(SysEvent::EpollAdd { fd } | SysEvent::EpollDel { fd })) => {
            put("fd", fd.into());
            "epoll_ctl".into()
        }
        Event::Sys(SysEvent::Notified) | Event::Proactor(P::NotifierCqe) => {
            "notified (another thread woke a task)".into()
        }
        // "fd 7: readable, writable → wake the task waiting for it" (or "registration 2: ...",
        // for an fd registered before the recording started)
        Event::Reactor(&R::Ready { io, ready, .. }) => {
            if let Some(fd) = io.fd {
                put("fd", fd.into());
            }
            put("readiness", readiness(ready).into());
            "readiness event".into()
        }
        Event::Proactor(&P::FdReady { fd, ready }) => {
            put("fd", fd.into());
            put("readiness", readiness(ready).into());
            "readiness event".into()
        }
        Event::Reactor(R::ShortRead { .. }) => "short read".into(),
        Event::Reactor(&R::Accepted { listener, fd }) => {
            put("fd", listener.into());
            put("result", fd.into());
            "accept4".into()
        }
        Event::Reactor(&R::Io { call, fd, result, .. }) => {
            put("fd", fd.into());
            put("result", result_arg(result));
            call.name().into()
        }
        Event::Proactor(event) => return proactor_instant(event),
        _ => "step".into(),
    };
    (name, args)
}

/// [`instant`] for the proactor's steps.
fn proactor_instant(event: &P) -> (String, Map<String, Value>) {
    let mut args = Map::new();
    let mut put = |key: &str, v: Value| {
        args.insert(key.into(), v);
    };
    let name: String = match *event {
        P::SqeQueued { user_data, op } => {
            put("user_data", user_data.into());
            format!("SQE {}", op.opcode())
        }
        P::CloseQueued { .. } => "SQE CLOSE".into(),
        P::CancelQueued { user_data } => {
            put("user_data", user_data.into());
            "SQE ASYNC_CANCEL".into()
        }
        P::Cqe { user_data, op, result, ring_buffer, .. } => {
            put("user_data", user_data.into());
            put("result", result.into());
            if let Some(bid) = ring_buffer {
                put("ring_buffer", bid.into());
            }
            match op {
                Some(op) => format!("CQE {}", op.opcode()),
                // Queued before the recording started, so its operation was not kept; but
                // only a receive takes a buffer from the ring.
                None if ring_buffer.is_some() => "CQE RECV".into(),
                None => "CQE".into(),
            }
        }
        P::SqFull => "the SQ is full".into(),
        P::AioDone { request, result, .. } => {
            put("request", request.into());
            put("result", result.into());
            "request done".into()
        }
        P::AioSubmitted { write, fd, request, .. } => {
            put("fd", fd.into());
            put("request", request.into());
            if write { "aio_write" } else { "aio_read" }.into()
        }
        P::HelperJob { accept, request, .. } => {
            put("request", request.into());
            if accept { "accept (helper thread)" } else { "connect (helper thread)" }.into()
        }
        // The epoll backend: "queued SEND 7 bytes on fd 7 (op 1) in the driver's write queue ..."
        P::Queued { index, op, .. } => {
            put("op", index.into());
            format!("queued {}", op.opcode())
        }
        P::Dequeued { .. } => "cancel op N".into(),
        P::Posted { index, result, .. } => {
            put("op", index.into());
            put("result", result.into());
            "post completion".into()
        }
        P::PostedEarly => "completions posted".into(),
        P::Picked { .. } => "buffer picked at readiness".into(),
        P::Connect { fd, index, result }
        | P::Accept { fd, index, result }
        | P::Connected { fd, index, result } => {
            put("fd", fd.into());
            put("op", index.into());
            put("result", result_arg(result));
            match event {
                P::Connect { .. } => "connect",
                P::Accept { .. } => "accept4",
                _ => "getsockopt",
            }
            .into()
        }
        P::SentNow { fd, result, .. } => {
            put("fd", fd.into());
            put("result", result_arg(result));
            "send".into()
        }
        P::Transfer { call, fd, index, result, .. } => {
            put("fd", fd.into());
            put("op", index.into());
            put("result", result_arg(result));
            call.name().into()
        }
        P::RingGrew { .. } => "the buffer ring runs low".into(),
        P::RingPiece { .. } => "ring buffer N partly consumed".into(),
        P::RingBufferBack { .. } => "ring buffer N goes back to the ring".into(),
        P::RingShrank { .. } => "the buffer ring shrinks back to N buffers".into(),
        P::Wake | P::WakeStalled => "wake".into(),
        P::Spilled { .. } => "nobody reads the stream now".into(),
        P::DroppedBehind { .. } => "the stream is dropped with a SEND behind in flight".into(),
        P::BehindShort { .. } => "SEND took N of N bytes".into(),
        P::BehindOver { error: None, .. } => "SEND complete".into(),
        P::BehindOver { error: Some(_), .. } => "SEND failed".into(),
        P::BehindDetached { .. } | P::WindowFullCopy { .. } => "the peer's window is full".into(),
        P::MultishotWaits { .. } => "wait for the next CQE of the multishot RECV on fd N".into(),
        P::AheadStalledCopy { .. } => "the send ahead waits for the peer".into(),
        _ => "step".into(),
    };
    (name, args)
}
