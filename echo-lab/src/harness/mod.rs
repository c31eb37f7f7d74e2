//! The measuring harness `demo` and `lab` share: the server under test in a child process of
//! its own, pinned to one CPU while the load runs on another, sampled at the edges of the
//! load's measured window, in interleaved rounds.
//!
//! - [`child`]: start a server (`echo-lab serve`) as a child process, and never leave one behind;
//! - [`pin`]: the server on CPU 0 (`taskset`), the load on a thread pinned to CPU 1;
//! - [`sample`]: what is read from the server: CPU time, memory, threads and processes (its
//!   children's too), and its runtime's own syscall counters;
//! - [`perf`]: its syscalls as `perf stat` counts them, switched on and off at the window's edges;
//! - [`rounds`]: the order of interleaved rounds, and a figure's median and range over them.

pub mod child;
pub mod perf;
pub mod pin;
pub mod rounds;
pub mod sample;
