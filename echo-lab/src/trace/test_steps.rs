//! For the drawings' tests: the steps of one connection and one echo on each design, as the
//! runtimes record them (copied from real traces), and a way to reword them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use echo::server::RuntimeKind;
use executor::readiness::{READABLE, READ_CLOSED, WRITABLE};
use executor::trace::{Event, LoopEvent as L, Step, SysEvent as S};
use proactor::trace::{AioWait, Behind, Call, Direction, Event as P, Op, Reporter, UringWait};
use proactor::AioNotify;
use reactor::trace::{Call as Syscall, Event as R, Registration};

use super::record::{Client, Phase};

/// Steps one microsecond apart, on thread `echo-test`.
fn steps(events: Vec<Arc<dyn Event>>) -> Vec<Step> {
    let t0 = Instant::now();
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Step {
            at: t0 + Duration::from_micros(i as u64),
            thread: "echo-test".into(),
            event,
        })
        .collect()
}

macro_rules! events {
    ($($e:expr),* $(,)?) => { steps(vec![$(Arc::new($e) as Arc<dyn Event>),*]) };
}

fn phase(client: Client, steps: Vec<Step>) -> Phase {
    Phase { title: format!("{client:?}"), client, steps }
}

/// The client connects, echoes "hello 1" and closes, and what `kind` did for each.
pub fn echo_phases(kind: RuntimeKind) -> Vec<Phase> {
    let task = L::TaskPolled { task: 1 };
    let waits = L::TaskWaits { task: 1 };
    let [connects, echoes, closes] = match kind {
        RuntimeKind::Reactor => {
            let (listener, fd7) =
                (Registration { index: 0, fd: Some(3) }, Registration { index: 1, fd: Some(7) });
            let forever = S::EpollWait { timeout_ms: -1 };
            [
                events![
                    S::EpollReturned { events: 1 },
                    R::Ready { io: listener, ready: READABLE, woken: 1 },
                    L::MainPolled,
                    R::Accepted { listener: 3, fd: 7 },
                    S::EpollAdd { fd: 7 },
                    L::MainWaits,
                    task,
                    waits,
                    forever,
                    S::EpollReturned { events: 1 },
                    R::Ready { io: fd7, ready: WRITABLE, woken: 0 },
                    forever,
                ],
                events![
                    S::EpollReturned { events: 1 },
                    R::Ready { io: fd7, ready: READABLE | WRITABLE, woken: 1 },
                    task,
                    R::Io { call: Syscall::Read, fd: 7, len: 16384, result: Ok(7) },
                    R::ShortRead { io: fd7 },
                    R::Io { call: Syscall::Send, fd: 7, len: 7, result: Ok(7) },
                    waits,
                    forever,
                ],
                events![
                    S::EpollReturned { events: 1 },
                    R::Ready { io: fd7, ready: READABLE | READ_CLOSED, woken: 1 },
                    task,
                    R::Io { call: Syscall::Read, fd: 7, len: 16384, result: Ok(0) },
                    S::Shutdown { fd: 7, how: std::net::Shutdown::Write },
                    S::EpollDel { fd: 7 },
                    L::TaskFinished { task: 1 },
                    forever,
                ],
            ]
        }
        RuntimeKind::Uring => {
            let (accept, recv) = (Op::AcceptMulti { fd: 3 }, Op::RecvMulti { fd: 7, group: 0, limit: 0 });
            let send = Op::Send { fd: 7, len: 7, dontwait: true };
            let enter = |submit| P::Enter { submit, wait: UringWait::Forever };
            [
                events![
                    P::Cqes { count: 1 },
                    P::Cqe { user_data: 0, op: Some(accept), result: 7, ring_buffer: None, more: true },
                    P::Wake,
                    L::MainPolled,
                    L::MainWaits,
                    task,
                    P::SqeQueued { user_data: 1, op: recv },
                    P::MultishotWaits { fd: 7 },
                    waits,
                    enter(1),
                ],
                events![
                    P::Cqes { count: 1 },
                    P::Cqe { user_data: 1, op: Some(recv), result: 7, ring_buffer: Some(0), more: true },
                    P::RingPiece { bid: 0, bytes: 7, offset: 0 },
                    P::Wake,
                    task,
                    P::SqeQueued { user_data: 2, op: send },
                    P::MultishotWaits { fd: 7 },
                    waits,
                    enter(1),
                    P::Cqes { count: 1 },
                    P::Cqe { user_data: 2, op: Some(send), result: 7, ring_buffer: None, more: false },
                    P::BehindOver { error: None, ring_buffer: Some(0), owner: Behind::Quiet, fd: 7 },
                    enter(0),
                ],
                events![
                    P::Cqes { count: 1 },
                    P::Cqe { user_data: 1, op: Some(recv), result: 0, ring_buffer: None, more: false },
                    P::Wake,
                    task,
                    S::Shutdown { fd: 7, how: std::net::Shutdown::Write },
                    P::CloseQueued { fd: 7 },
                    L::TaskFinished { task: 1 },
                    enter(1),
                    P::Cqes { count: 1 },
                    enter(0),
                ],
            ]
        }
        RuntimeKind::Aio(notify) => {
            // Each notification waits, and reports a glibc request, its own way.
            let (poll, forever, by): (_, _, fn(i32) -> Reporter) = match notify {
                AioNotify::Thread => (
                    P::AioPoll { wait: AioWait::Rescan, signals: false },
                    P::AioPoll { wait: AioWait::Forever, signals: false },
                    |tid| Reporter::Glibc { tid },
                ),
                AioNotify::Signal => (
                    P::AioPoll { wait: AioWait::Rescan, signals: true },
                    P::AioPoll { wait: AioWait::Forever, signals: true },
                    |_| Reporter::Signal,
                ),
                AioNotify::Suspend => (
                    P::AioSuspend { requests: 2, wait: AioWait::Forever },
                    P::AioSuspend { requests: 1, wait: AioWait::Forever },
                    |_| Reporter::Suspend,
                ),
            };
            [
                events![
                    P::AioDone { request: 0, result: 8, by: Reporter::Helper },
                    P::Wake,
                    L::MainPolled,
                    P::HelperJob { accept: true, fd: 3, request: 0 },
                    L::MainWaits,
                    task,
                    P::AioSubmitted { write: false, fd: 8, len: 4096, request: 1 },
                    waits,
                    poll,
                ],
                events![
                    P::AioDone { request: 1, result: 7, by: by(5611) },
                    P::Wake,
                    task,
                    P::AioSubmitted { write: true, fd: 8, len: 7, request: 1 },
                    P::AioSubmitted { write: false, fd: 8, len: 4096, request: 2 },
                    waits,
                    poll,
                    P::AioDone { request: 1, result: 7, by: by(5612) },
                    P::BehindOver { error: None, ring_buffer: None, owner: Behind::Quiet, fd: 8 },
                    poll,
                ],
                events![
                    P::AioDone { request: 2, result: 0, by: by(5613) },
                    P::Wake,
                    task,
                    S::Shutdown { fd: 8, how: std::net::Shutdown::Write },
                    L::TaskFinished { task: 1 },
                    forever,
                ],
            ]
        }
        RuntimeKind::ProactorEpoll => {
            let forever = S::EpollWait { timeout_ms: -1 };
            let read = Direction::Read;
            let recv = |index| P::Queued { index, op: Op::RecvPick { fd: 7 }, queue: read, ready: false };
            [
                events![
                    S::EpollReturned { events: 1 },
                    P::FdReady { fd: 3, ready: READABLE },
                    P::Accept { fd: 3, index: 0, result: Ok(7) },
                    P::Posted { index: 0, result: 7, picked: None },
                    P::Wake,
                    L::MainPolled,
                    P::Accept { fd: 3, index: 0, result: Err(libc::EAGAIN) },
                    P::Queued { index: 0, op: Op::Accept { fd: 3 }, queue: read, ready: false },
                    L::MainWaits,
                    task,
                    S::EpollAdd { fd: 7 },
                    recv(1),
                    waits,
                    forever,
                    S::EpollReturned { events: 1 },
                    P::FdReady { fd: 7, ready: WRITABLE },
                    forever,
                ],
                events![
                    S::EpollReturned { events: 1 },
                    P::FdReady { fd: 7, ready: READABLE | WRITABLE },
                    P::Transfer { call: Call::Recv, fd: 7, len: 4096, index: 1, result: Ok(7) },
                    P::Picked { id: 0 },
                    P::Posted { index: 1, result: 7, picked: Some(0) },
                    P::Wake,
                    task,
                    P::SentNow { fd: 7, len: 7, result: Ok(7) },
                    recv(1),
                    waits,
                    forever,
                ],
                events![
                    S::EpollReturned { events: 1 },
                    P::FdReady { fd: 7, ready: READABLE | WRITABLE | READ_CLOSED },
                    P::Transfer { call: Call::Recv, fd: 7, len: 4096, index: 1, result: Ok(0) },
                    P::Posted { index: 1, result: 0, picked: None },
                    P::Wake,
                    task,
                    S::Shutdown { fd: 7, how: std::net::Shutdown::Write },
                    S::EpollDel { fd: 7 },
                    L::TaskFinished { task: 1 },
                    forever,
                ],
            ]
        }
    };
    vec![
        phase(Client::Connects, connects),
        phase(Client::Echoes("hello 1".into()), echoes),
        phase(Client::Closes, closes),
    ]
}

/// Each step reworded ("reworded sentence 3": the same words, the same rewording), and a way
/// to compare what was drawn from the real words with what was drawn from the reworded ones:
/// both with every step's words (as they are, trimmed, or reworded) replaced by the same
/// placeholder.
pub struct Unworded {
    /// Per step: its event, its words, and its words reworded.
    words: Vec<(Arc<dyn Event>, String, String)>,
}

impl Unworded {
    pub fn new(steps: &[&Step]) -> Unworded {
        let mut sentences: Vec<String> = Vec::new();
        let mut words = Vec::new();
        for step in steps {
            let said = step.to_string();
            let n = sentences.iter().position(|s| *s == said).unwrap_or_else(|| {
                sentences.push(said.clone());
                sentences.len() - 1
            });
            words.push((step.event.clone(), said, format!("reworded sentence {n}")));
        }
        Unworded { words }
    }

    /// The step's words, reworded.
    pub fn reworded(&self, step: &Step) -> String {
        let (_, _, reworded) =
            self.words.iter().find(|(event, _, _)| Arc::ptr_eq(event, &step.event)).expect("a known step");
        reworded.clone()
    }

    /// `text` with the words of any step (as they are, trimmed, or reworded) replaced by
    /// the step's placeholder.
    pub fn text(&self, text: &str) -> String {
        for (_, words, reworded) in &self.words {
            if text == words || text == words.trim() || text == reworded {
                return format!("<{reworded}>");
            }
        }
        text.to_string()
    }

    /// A drawing's row, its words replaced (see [`text`](Self::text)).
    pub fn row(&self, row: &super::seqdiag::row::Row) -> String {
        use super::seqdiag::row::Row;
        match row.clone() {
            Row::Arrow { from, to, kind, label, sub, ret, step } => {
                format!("{:?}", Row::Arrow { from, to, kind, label, sub, ret, step: self.text(&step) })
            }
            Row::Note { lane, text, step } => {
                format!("{:?}", Row::Note { lane, text: self.text(&text), step: self.text(&step) })
            }
            phase => format!("{phase:?}"),
        }
    }
}
