//! The load generator: connections (or UDP sockets) driven from one thread by one mio poller
//! (edge-triggered epoll), apart from the runtimes under test, so that a bug in them cannot hide
//! in the tool that measures them; every echo is verified byte for byte.
//!
//! A run: connect all -> warm-up (not counted) -> measured window -> drain. Only round trips
//! that complete inside the window are counted, and the window's edges are reported to a
//! callback as they pass ([`options::Edge`]), so that the caller can sample the server there
//! (its CPU time, its counters, perf).
//!
//! - [`options`]: what a run does (the traffic pattern, connections, sizes, times);
//! - [`report`]: what it measured (round trips, latency histogram, errors, mismatches);
//! - [`net`]: connecting, the poller, and the bytes each message carries;
//! - [`progress`]: the live progress bar on a terminal;
//! - the loads: [`pingpong`] (and shortconn), [`bulk`], [`udp`].

pub mod bulk;
pub mod net;
pub mod options;
pub mod pingpong;
pub mod progress;
pub mod report;
pub mod udp;
