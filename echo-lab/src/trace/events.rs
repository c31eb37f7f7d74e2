//! The runtimes' steps as the drawings see them: each step downcast to the enum of the crate
//! that took it ([`of`]), so that [`super::seqdiag`] and [`super::timeline`] match on variants
//! and read fields. The words of a step (its `Display`) are only ever shown, never read.

use executor::trace::{LoopEvent, Step, SysEvent};
use proactor::trace::Op;
use reactor::trace::Registration;

/// A step, as one of the vocabularies the lab knows.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The shared loop's (tasks polled, timers).
    Loop(&'a LoopEvent),
    /// The shared syscall layer's (epoll, `shutdown`).
    Sys(&'a SysEvent),
    /// The reactor's driver's.
    Reactor(&'a reactor::trace::Event),
    /// The proactor's (its backends, driver, buffer ring and streams).
    Proactor(&'a proactor::trace::Event),
    /// A classic model's (`select`, `aio-poll`, and the connections they share).
    Model(&'a echo::models::trace::Event),
    /// A vocabulary the lab does not know (drawn as its words).
    Other,
}

/// What `step` is.
pub fn of(step: &Step) -> Event<'_> {
    if let Some(e) = step.get::<LoopEvent>() {
        Event::Loop(e)
    } else if let Some(e) = step.get::<SysEvent>() {
        Event::Sys(e)
    } else if let Some(e) = step.get::<reactor::trace::Event>() {
        Event::Reactor(e)
    } else if let Some(e) = step.get::<proactor::trace::Event>() {
        Event::Proactor(e)
    } else if let Some(e) = step.get::<echo::models::trace::Event>() {
        Event::Model(e)
    } else {
        Event::Other
    }
}

/// An epoll timeout as the trace shows it ("no timeout", "timeout 0", "timeout 12 ms").
pub fn epoll_timeout(ms: i32) -> String {
    match ms {
        -1 => "no timeout".into(),
        0 => "timeout 0".into(),
        ms => format!("timeout {ms} ms"),
    }
}

/// An io_uring operation's opcode, with "multishot" for a multishot one ("multishot RECV").
pub fn opcode(op: Op) -> String {
    if op.is_multishot() {
        format!("multishot {}", op.opcode())
    } else {
        op.opcode().to_string()
    }
}

/// A reactor registration as the drawings name it: "fd 7", or "registration 2" when its fd was
/// registered before the recording started.
pub fn registration(io: Registration) -> String {
    match io.fd {
        Some(fd) => format!("fd {fd}"),
        None => format!("registration {}", io.index),
    }
}

/// Readiness bits in words ("readable, writable").
pub fn readiness(ready: u8) -> String {
    executor::readiness::words(ready)
}
