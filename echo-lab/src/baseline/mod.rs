//! The baselines the runtimes are measured against, on the crates people use:
//!
//! - [`tokio`]: what users would pick, tokio's `current_thread` runtime with the idiomatic
//!   echo loop;
//! - [`mio`]: the readiness limit, a hand-written edge-triggered mio loop with no tasks, wakers
//!   or futures.

pub mod mio;
pub mod tokio;
