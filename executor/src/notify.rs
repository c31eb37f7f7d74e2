//! [`Notifier`]: the [`Unpark`] of both drivers, an eventfd the driver watches.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::executor::Unpark;
use crate::sys;

/// Wakes a driver's thread from another thread: an eventfd that the driver watches along with
/// its I/O (the reactor puts it in its epoll set; io_uring polls it with a multishot poll; the
/// aio backend `poll`s it).
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
    /// Set by the first `notify` after the driver last drained the eventfd; later calls see it
    /// set and skip the `write` syscall. This is what keeps a burst of cross-thread wake-ups
    /// at one syscall.
    pending: AtomicBool,
}

impl Notifier {
    /// A new eventfd with nothing pending.
    pub fn new() -> std::io::Result<Notifier> {
        Ok(Notifier { fd: sys::eventfd()?, pending: AtomicBool::new(false) })
    }

    /// The eventfd, for the driver to watch.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Makes the eventfd readable, unless a notification is already pending.
    pub fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            // The only possible failure is a counter overflow, which still leaves it readable.
            let _ = sys::eventfd_signal(self.fd.as_fd());
        }
    }

    /// Whether a `notify` happened since the last [`drain`](Self::drain).
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Called by the driver when the eventfd was reported readable.
    pub fn drain(&self) {
        // Clear the flag before anyone looks at the work the notifier announced, so that work
        // posted after that look writes the eventfd again.
        let _ = sys::eventfd_drain(self.fd.as_fd());
        self.pending.store(false, Ordering::Release);
    }
}

impl Unpark for Notifier {
    fn unpark(&self) {
        self.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_notifications_writes_the_eventfd_once() {
        let notifier = Notifier::new().unwrap();
        for _ in 0..3 {
            notifier.notify();
        }
        // The eventfd counts writes: one write, then two skipped.
        assert_eq!(sys::eventfd_drain(notifier.fd()).unwrap(), 1);
        // After a drain, the next notify writes again.
        notifier.drain();
        notifier.notify();
        assert_eq!(sys::eventfd_drain(notifier.fd()).unwrap(), 1);
    }
}
