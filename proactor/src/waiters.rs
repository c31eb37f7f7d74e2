//! A first-come, first-served queue of tasks waiting for a shared resource (a ring buffer, room
//! in the memory budget), woken one at a time as the resource comes back.
//!
//! Waking every waiter for each unit that comes back would make a resource under pressure
//! quadratic, and the last in line could be overtaken forever. Each entry has a ticket,
//! increasing, which its [`Ticket`] removes when the waiting future is dropped, so a waiter
//! that gave up cannot swallow the wake-up meant for one still waiting.
//!
//! A queue is shared (`Rc`) and a ticket holds it: a ticket is then not a borrow, so it can be
//! kept between polls by something that is not a future (a stream's futures-io read state,
//! see `net::compat`), and still leaves its queue when dropped.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

/// The queue; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    waiters: RefCell<VecDeque<(u64, Waker)>>,
    next_ticket: Cell<u64>,
}

impl WaitQueue {
    /// Registers `waker` to be woken in turn. `ticket` is the caller's place in the queue:
    /// kept (with the waker updated) if still queued, else a new one is taken at the back.
    fn wait(&self, ticket: &mut Option<u64>, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        if let Some(queued) = ticket.and_then(|t| waiters.binary_search_by_key(&t, |(t, _)| *t).ok()) {
            if !waiters[queued].1.will_wake(waker) {
                waiters[queued].1 = waker.clone();
            }
            return;
        }
        let t = self.next_ticket.get();
        self.next_ticket.set(t + 1);
        waiters.push_back((t, waker.clone()));
        *ticket = Some(t);
    }

    /// Leaves the queue (the waiting future was dropped, or got what it waited for).
    fn stop_waiting(&self, ticket: u64) {
        let mut waiters = self.waiters.borrow_mut();
        if let Ok(queued) = waiters.binary_search_by_key(&ticket, |(t, _)| *t) {
            let removed = waiters.remove(queued);
            drop(waiters);
            drop(removed);
        }
    }

    /// Wakes the task that has waited longest, if any; whether there was one.
    pub(crate) fn wake_one(&self) -> bool {
        let waiter = self.waiters.borrow_mut().pop_front();
        match waiter {
            Some((_, waker)) => {
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// How many tasks wait.
    pub(crate) fn len(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// A waiting future's place in a [`WaitQueue`] (in one at a time: a stream waits for a ring
/// buffer or for room in the memory budget, never both), left when the future is dropped.
#[derive(Debug, Default)]
pub(crate) struct Ticket {
    place: Option<(Rc<WaitQueue>, u64)>,
}

impl Ticket {
    /// Waits (or goes on waiting) in `queue`, leaving the queue it waited in before, if another.
    pub(crate) fn wait(&mut self, queue: &Rc<WaitQueue>, waker: &Waker) {
        let mut ticket = match &self.place {
            Some((in_queue, ticket)) if Rc::ptr_eq(in_queue, queue) => Some(*ticket),
            _ => {
                self.leave();
                None
            }
        };
        queue.wait(&mut ticket, waker);
        self.place = ticket.map(|ticket| (queue.clone(), ticket));
    }

    /// Whether it waits in `queue`.
    pub(crate) fn waits_in(&self, queue: &WaitQueue) -> bool {
        self.place.as_ref().is_some_and(|(in_queue, _)| std::ptr::eq(&**in_queue, queue))
    }

    /// Leaves the queue it waits in, if any. (Inlined: every `read_provided` leaves once,
    /// almost always from no queue.)
    #[inline]
    pub(crate) fn leave(&mut self) {
        if let Some((queue, ticket)) = self.place.take() {
            queue.stop_waiting(ticket);
        }
    }
}

impl Drop for Ticket {
    #[inline]
    fn drop(&mut self) {
        if self.place.is_some() {
            self.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(AtomicUsize);
    impl futures_task::ArcWake for Count {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn waiters_are_woken_in_order_and_a_dropped_one_takes_no_wake() {
        let queue = Rc::new(WaitQueue::default());
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::new(Count(AtomicUsize::new(0)))).collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| futures_task::waker(c.clone())).collect();
        let mut tickets: Vec<Ticket> = (0..3).map(|_| Ticket::default()).collect();
        for (ticket, waker) in tickets.iter_mut().zip(&wakers) {
            ticket.wait(&queue, waker);
        }
        tickets[0].wait(&queue, &wakers[0]); // again: keeps its place
        assert!(tickets[0].waits_in(&queue));
        assert_eq!(queue.len(), 3);
        drop(tickets.remove(1)); // the middle one gives up
        assert!(queue.wake_one());
        assert!(queue.wake_one());
        assert!(!queue.wake_one());
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::Relaxed)).collect();
        assert_eq!(woken, [1, 0, 1]);
    }

    #[test]
    fn a_ticket_waits_in_one_queue_at_a_time() {
        let (first, second) = (Rc::new(WaitQueue::default()), Rc::new(WaitQueue::default()));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures_task::waker(count.clone());
        let mut ticket = Ticket::default();
        ticket.wait(&first, &waker);
        ticket.wait(&second, &waker);
        assert_eq!((first.len(), second.len()), (0, 1));
        drop(ticket);
        assert_eq!(second.len(), 0);
    }
}
