//! Pinning: the server on CPU 0 (started under `taskset`), the load on a thread pinned to CPU 1,
//! so that they do not take turns on one CPU.

use std::process::{Command, Stdio};

use crate::sys;

/// Whether `taskset` runs here (the servers are started under it to pin them to CPU 0).
pub fn taskset_works() -> bool {
    Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `f` on a new thread, pinned to CPU 1 if `pinned`, and returns its result.
pub fn on_load_cpu<T: Send + 'static>(
    pinned: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        if pinned {
            if let Err(e) = sys::pin_current_thread(1) {
                eprintln!("echo-lab demo: cannot pin the load to CPU 1: {e}");
            }
        }
        f()
    })
    .join()
    .map_err(|_| "the load thread panicked".to_string())
}
