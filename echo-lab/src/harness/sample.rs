//! What is read from a server while the load runs: its runtime's own syscall counters, and
//! (from /proc) the CPU time, memory, threads and processes of the server and its children.

use std::fs;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::sys;

/// The syscalls server `pid` has made so far, by its runtime's own counters: it prints them on
/// SIGUSR1, and its stderr reader passes the count on through `counts`.
pub fn counter_snapshot(pid: u32, counts: &mpsc::Receiver<u64>) -> Result<u64, String> {
    sys::kill(pid, nix::sys::signal::Signal::SIGUSR1)
        .map_err(|e| format!("cannot signal the server: {e}"))?;
    counts
        .recv_timeout(Duration::from_secs(2))
        .map_err(|_| "the server did not print its counters".to_string())
}

/// The server's processes: itself and its children (the `fork` model's), from /proc.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                pids.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    pids
}

/// CPU seconds of the server, its live children, and the children it has reaped.
pub fn tree_cpu_s(pid: u32) -> f64 {
    let reaped = sys::stat_times(pid).map_or(0.0, |t| t.reaped_children_s);
    reaped + tree(pid).into_iter().map(|p| sys::process_cpu_s(p).unwrap_or(0.0)).sum::<f64>()
}

/// User-mode CPU seconds of the server, its live children, and the children it has reaped.
pub fn tree_user_s(pid: u32) -> f64 {
    let reaped = sys::stat_times(pid).map_or(0.0, |t| t.reaped_children_user_s);
    reaped + tree(pid).into_iter().map(|p| sys::stat_times(p).map_or(0.0, |t| t.user_s)).sum::<f64>()
}

/// Proportional set size of the server and its children, KiB (shared pages split between them).
pub fn tree_pss_kb(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// Kills the server's child processes (the `fork` model's) and waits, up to 2 s, until each
/// has exited.
pub fn end_children(pid: u32) {
    let children: Vec<u32> = tree(pid).into_iter().skip(1).collect();
    for &child in &children {
        let _ = sys::kill(child, nix::sys::signal::Signal::SIGKILL);
    }
    let exited = |child: u32| {
        fs::read_to_string(format!("/proc/{child}/stat"))
            .map_or(true, |s| s[s.rfind(')').unwrap_or(0)..].split_whitespace().nth(1) == Some("Z"))
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !children.iter().all(|&c| exited(c)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many threads process `pid` has (`Threads:` in `/proc/PID/status`; 0 if unknown).
pub fn threads_of(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}
