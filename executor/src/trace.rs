//! The step-by-step trace: what a runtime does, in the order it does it, for learning (cargo
//! feature `trace`; `echo-lab trace` prints and draws it).
//!
//! A step is a value, not a sentence. Each crate names its own steps in an enum with typed
//! fields (the fd, the operation's index, the result, the buffer, ...): the loop's are
//! [`LoopEvent`], those of the syscall layer both drivers share are [`SysEvent`], and each
//! driver has its own (`reactor::trace::Event`, `proactor::trace::Event`). Their `Display` is
//! the step in plain words, which is what a printer shows; a tool that draws the steps matches
//! on the variants and reads the fields, so rewording a sentence cannot break a drawing.
//!
//! The vocabulary is here with or without the feature (the hooks type-check their events
//! either way). The recorder is the feature's: without it, [`trace_step!`](crate::trace_step)
//! compiles to nothing; with it, each hook is one relaxed load and a test until `start()`
//! turns recording on, and only then builds its event. Recording is for learning, not for
//! production: every step is a small allocation and a lock.
//!
//! # Adding a step
//!
//! Add a variant (with the data as fields) to the crate's enum, its sentence to the enum's
//! `Display`, and call `trace_step!(Event::Variant { .. })` where it happens. A tool that does
//! not know the variant shows its sentence.

use std::any::Any;
use std::fmt;
use std::net::Shutdown;
use std::os::fd::RawFd;

/// A step of the trace: a value with its sentence as `Display`, which tools can downcast to
/// its crate's enum (see [`as_any`](Event::as_any)).
pub trait Event: fmt::Display + fmt::Debug + Send + Sync + 'static {
    /// The step as `Any`, to downcast to the enum it is (`step.as_any().downcast_ref::<E>()`).
    fn as_any(&self) -> &dyn Any;
}

/// The loop's steps: tasks polled, and timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoopEvent {
    /// The loop polls task `task`.
    TaskPolled {
        /// The task's id.
        task: usize,
    },
    /// Task `task` returned `Pending`: it waits for a wake.
    TaskWaits {
        /// The task's id.
        task: usize,
    },
    /// Task `task` returned `Ready`.
    TaskFinished {
        /// The task's id.
        task: usize,
    },
    /// The loop polls the `block_on` future (in the echo servers, the accept loop).
    MainPolled,
    /// The `block_on` future returned `Pending`.
    MainWaits,
    /// Timers expired, and their tasks are woken.
    TimersExpired {
        /// How many.
        count: usize,
    },
}

impl fmt::Display for LoopEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LoopEvent::TaskPolled { task } => write!(f, "task {task} polled"),
            LoopEvent::TaskWaits { task } => write!(f, "task {task} waits"),
            LoopEvent::TaskFinished { task } => write!(f, "task {task} finished"),
            LoopEvent::MainPolled => f.write_str("the block_on future (here: the accept loop) polled"),
            LoopEvent::MainWaits => f.write_str("the block_on future waits"),
            LoopEvent::TimersExpired { count: 1 } => f.write_str("1 timer expired: wake its task"),
            LoopEvent::TimersExpired { count } => write!(f, "{count} timers expired: wake their tasks"),
        }
    }
}

impl Event for LoopEvent {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The steps of the syscall layer both drivers share ([`sys`](crate::sys)): `shutdown`, and
/// epoll, which the reactor's driver and the proactor's epoll backend wait with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SysEvent {
    /// `shutdown(fd, how)`.
    Shutdown {
        /// The socket.
        fd: RawFd,
        /// Which direction.
        how: Shutdown,
    },
    /// `epoll_ctl(EPOLL_CTL_ADD)`: the socket joins the epoll set, for its lifetime.
    EpollAdd {
        /// The socket.
        fd: RawFd,
    },
    /// `epoll_ctl(EPOLL_CTL_DEL)`: the socket leaves the epoll set before it is closed.
    EpollDel {
        /// The socket.
        fd: RawFd,
    },
    /// The loop enters `epoll_wait`.
    EpollWait {
        /// Its timeout as the syscall takes it: -1 for none, 0 not to sleep, else milliseconds.
        timeout_ms: i32,
    },
    /// `epoll_wait` returned.
    EpollReturned {
        /// How many events it returned.
        events: usize,
    },
    /// An event of the notifier's eventfd: another thread woke a task of this loop.
    Notified,
}

impl fmt::Display for SysEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SysEvent::Shutdown { fd, how } => write!(
                f,
                "  shutdown(fd {fd}, {how:?}): {}",
                if how == Shutdown::Write {
                    "the peer reads end of stream after everything sent"
                } else {
                    "closes that direction"
                }
            ),
            SysEvent::EpollAdd { fd } => write!(
                f,
                "epoll_ctl(ADD fd {fd}): watch it for input and output, edge-triggered, once for its lifetime"
            ),
            SysEvent::EpollDel { fd } => {
                write!(f, "epoll_ctl(DEL fd {fd}): stop watching it (it is being closed)")
            }
            SysEvent::EpollWait { timeout_ms } => {
                match timeout_ms {
                    -1 => f.write_str("epoll_wait(no timeout)")?,
                    ms => write!(f, "epoll_wait(timeout {ms}{})", if ms == 0 { "" } else { " ms" })?,
                }
                f.write_str(if timeout_ms == 0 {
                    ": collect events without sleeping"
                } else {
                    ": nothing to run: sleep until an fd is ready"
                })
            }
            SysEvent::EpollReturned { events } => {
                write!(f, "epoll_wait returned {events} event{}", if events == 1 { "" } else { "s" })
            }
            SysEvent::Notified => f.write_str("  the notifier's eventfd: another thread woke a task"),
        }
    }
}

impl Event for SysEvent {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Records a step of the trace: `trace_step!(event)`, where `event` is an expression that
/// builds a value of a type implementing [`Event`] (with the `trace` feature of the crate it
/// is used in, and once tracing is on; otherwise `event` is not evaluated).
///
/// Each runtime's `trace` feature turns on this crate's, so `cfg(feature = "trace")`, which is
/// evaluated in the crate that uses the macro, implies that the recorder exists. Without the
/// feature, the expression is type-checked (its variables count as used) and compiles to
/// nothing.
#[macro_export]
macro_rules! trace_step {
    ($event:expr) => {{
        #[cfg(feature = "trace")]
        {
            if $crate::trace::on() {
                $crate::trace::record($event);
            }
        }
        #[cfg(not(feature = "trace"))]
        {
            let _ = || $event;
        }
    }};
}
pub(crate) use crate::trace_step;

#[cfg(feature = "trace")]
pub use self::recorder::*;

/// The recorder: one list of steps for the whole process, behind a lock.
#[cfg(feature = "trace")]
mod recorder {
    use std::collections::HashMap;
    use std::fmt;
    use std::os::fd::RawFd;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::Event;

    static ON: AtomicBool = AtomicBool::new(false);
    static STEPS: Mutex<Vec<Step>> = Mutex::new(Vec::new());
    /// Recording stops by itself once this many steps are held ([`start_at_most`]).
    static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
    /// The fd of each registration, while tracing (the reactor's driver keeps no fd).
    static FDS: Mutex<Option<HashMap<u32, RawFd>>> = Mutex::new(None);

    /// One recorded step: when (and on which thread) it happened, and what.
    #[derive(Clone, Debug)]
    pub struct Step {
        /// When the step was recorded.
        pub at: Instant,
        /// The recording thread's name, or its id when it has none.
        pub thread: String,
        /// The step: one of the crates' events ([`get`](Step::get) downcasts it).
        pub event: Arc<dyn Event>,
    }

    impl Step {
        /// The step as the event type `E`, if it is one.
        pub fn get<E: Event>(&self) -> Option<&E> {
            self.event.as_any().downcast_ref()
        }
    }

    /// The step in plain words (its event's `Display`).
    impl fmt::Display for Step {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.event.fmt(f)
        }
    }

    /// Starts recording, in every runtime of the process.
    pub fn start() {
        start_at_most(usize::MAX);
    }

    /// Starts recording, and stops by itself once `max` steps are held (a loaded runtime
    /// takes hundreds of thousands of steps a second). [`take`] makes room again, but
    /// recording stays stopped until the next start.
    pub fn start_at_most(max: usize) {
        LIMIT.store(max, Ordering::Relaxed);
        ON.store(true, Ordering::Release);
    }

    /// Stops recording.
    pub fn stop() {
        ON.store(false, Ordering::Release);
    }

    /// Takes the steps recorded so far, with when and where each happened.
    pub fn take() -> Vec<Step> {
        std::mem::take(&mut *STEPS.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether tracing is on: every hook's one predictable branch (inlined into the caller's
    /// crate, so a hook costs a relaxed load and a test while tracing is off).
    #[doc(hidden)]
    #[inline]
    pub fn on() -> bool {
        ON.load(Ordering::Relaxed)
    }

    /// Records `event` (the hooks' [`trace_step!`](crate::trace_step) calls this once
    /// [`on`] said yes).
    #[doc(hidden)]
    pub fn record<E: Event>(event: E) {
        let at = Instant::now();
        let current = std::thread::current();
        let thread = match current.name() {
            Some(name) => name.to_string(),
            None => format!("{:?}", current.id()),
        };
        let event: Arc<dyn Event> = Arc::new(event);
        let mut steps = STEPS.lock().unwrap_or_else(|p| p.into_inner());
        let limit = LIMIT.load(Ordering::Relaxed);
        if steps.len() < limit {
            steps.push(Step { at, thread, event });
        }
        if steps.len() >= limit {
            ON.store(false, Ordering::Release);
        }
    }

    /// Remembers the fd of the reactor's registration `registration`, for its steps.
    #[doc(hidden)]
    pub fn note_fd(registration: u32, fd: RawFd) {
        FDS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(registration, fd);
    }

    /// The fd of the reactor's registration `registration`, if it was noted while tracing.
    #[doc(hidden)]
    pub fn fd_of(registration: u32) -> Option<RawFd> {
        let fds = FDS.lock().unwrap_or_else(|p| p.into_inner());
        fds.as_ref().and_then(|fds| fds.get(&registration)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_steps_say_what_they_did() {
        assert_eq!(LoopEvent::TimersExpired { count: 1 }.to_string(), "1 timer expired: wake its task");
        assert_eq!(LoopEvent::TimersExpired { count: 3 }.to_string(), "3 timers expired: wake their tasks");
        assert_eq!(
            SysEvent::EpollWait { timeout_ms: -1 }.to_string(),
            "epoll_wait(no timeout): nothing to run: sleep until an fd is ready"
        );
        assert_eq!(
            SysEvent::EpollWait { timeout_ms: 0 }.to_string(),
            "epoll_wait(timeout 0): collect events without sleeping"
        );
        assert_eq!(
            SysEvent::EpollWait { timeout_ms: 12 }.to_string(),
            "epoll_wait(timeout 12 ms): nothing to run: sleep until an fd is ready"
        );
        assert_eq!(SysEvent::EpollReturned { events: 1 }.to_string(), "epoll_wait returned 1 event");
        assert_eq!(
            SysEvent::Shutdown { fd: 7, how: Shutdown::Write }.to_string(),
            "  shutdown(fd 7, Write): the peer reads end of stream after everything sent"
        );
    }
}
