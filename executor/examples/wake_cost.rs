//! What one wait costs the executor, with no I/O at all: N tasks each wait on a fake event
//! source (the waker goes into a list, as a driver's `add_waiter` stores it), the driver's park
//! hands every stored waker back (as one `epoll_wait` that found every socket ready would), the
//! loop wakes and polls them, and so on for a fixed number of rounds.
//!
//! It prints the nanoseconds per wait (one waker stored, handed back, woken, the task queued,
//! popped and polled): the executor's share of one echo, which is what is left when the
//! kernel's work is taken away.
//!
//! Then the same for a wake-up by reference, with no waker stored or handed back: each task wakes
//! itself with `wake_by_ref` and yields (`executor::yield_now`). That is the path of a socket's
//! cached waker, which the reactor's driver wakes by reference: the executor's wake-up, queue,
//! pop and poll alone, where the first figure also counts a waker's clone and drop.
//!
//! ```text
//! cargo run --release -p executor --example wake_cost [TASKS] [ROUNDS]
//! ```

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use executor::{Config, Park, Runtime, Unpark};

/// Wakers stored by waiting tasks, handed back by the next park.
#[derive(Default)]
struct Events {
    waiting: RefCell<Vec<Waker>>,
}

#[derive(Debug)]
struct NoUnpark;

impl Unpark for NoUnpark {
    fn unpark(&self) {}
}

struct Driver(Rc<Events>);

impl Park for Driver {
    fn park(&self, _timeout: Option<Duration>, wakers: &mut Vec<Waker>) -> io::Result<bool> {
        wakers.append(&mut self.0.waiting.borrow_mut());
        Ok(false)
    }

    fn unparker(&self) -> Arc<dyn Unpark> {
        Arc::new(NoUnpark)
    }

    fn shut_down(&self, wakers: &mut Vec<Waker>) {
        wakers.append(&mut self.0.waiting.borrow_mut());
    }
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().expect("a number"));
    let tasks = args.next().unwrap_or(1000);
    let rounds = args.next().unwrap_or(2000);
    let events = Rc::new(Events::default());
    let rt = Runtime::new(Driver(events.clone()), Config::default(), tasks + 1);
    for _ in 0..3 {
        let started = Instant::now();
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let events = events.clone();
                    executor::spawn(async move {
                        for _ in 0..rounds {
                            let mut waited = false;
                            std::future::poll_fn(|cx| {
                                if waited {
                                    return Poll::Ready(());
                                }
                                waited = true;
                                events.waiting.borrow_mut().push(cx.waker().clone());
                                Poll::Pending
                            })
                            .await;
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.await.expect("no task panics");
            }
        });
        let waits = (tasks * rounds) as f64;
        println!(
            "{tasks} tasks × {rounds} waits: {:.1} ns per wait (store the waker, hand it back, wake, queue, poll)",
            started.elapsed().as_nanos() as f64 / waits
        );
    }
    for _ in 0..3 {
        let started = Instant::now();
        rt.block_on(async {
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    executor::spawn(async move {
                        for _ in 0..rounds {
                            executor::yield_now().await;
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.await.expect("no task panics");
            }
        });
        let wakes = (tasks * rounds) as f64;
        println!(
            "{tasks} tasks × {rounds} wake-ups by reference: {:.1} ns per wake-up (wake by reference, queue, poll)",
            started.elapsed().as_nanos() as f64 / wakes
        );
    }
}
