//! The few OS facilities `echo-lab` needs, through nix and signal-hook: file limits, CPU
//! pinning, a process's CPU time and memory, signals to other processes and to this one.

use std::fs;
use std::io;

use nix::sys::signal::{self, SigSet, Signal};
use nix::unistd::Pid;

/// Raises the soft RLIMIT_NOFILE to the hard limit (many connections need many fds).
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            // Failure only leaves the old limit.
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// How many CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)?;
    Ok(())
}

/// Sends `sig` to process `pid`.
pub fn kill(pid: u32, sig: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::other(format!("no such process {pid}")))?;
    signal::kill(Pid::from_raw(pid), sig)?;
    Ok(())
}

/// User + system CPU time of process `pid` (all its threads), in seconds.
///
/// Read at nanosecond resolution from the process CPU-time clock when allowed, else from
/// `/proc/PID/stat` (clock ticks).
pub fn process_cpu_s(pid: u32) -> io::Result<f64> {
    let clock = i32::try_from(pid)
        .ok()
        .and_then(|pid| nix::time::clock_getcpuclockid(Pid::from_raw(pid)).ok())
        .and_then(|clock| clock.now().ok());
    match clock {
        Some(ts) => Ok(ts.tv_sec() as f64 + ts.tv_nsec() as f64 * 1e-9),
        None => stat_times(pid).map(|t| t.user_s + t.system_s),
    }
}

/// The CPU times of a process from `/proc/PID/stat`, seconds (clock-tick resolution:
/// 10 ms with the usual `CLK_TCK` of 100).
#[derive(Clone, Copy, Debug, Default)]
pub struct StatTimes {
    /// Time its threads ran in user mode (field 14, `utime`).
    pub user_s: f64,
    /// Time the kernel ran on its behalf (field 15, `stime`).
    pub system_s: f64,
    /// User + system time of the children it has waited for (fields 16 and 17).
    pub reaped_children_s: f64,
    /// The user-mode part of `reaped_children_s` (field 16).
    pub reaped_children_user_s: f64,
}

/// Reads [`StatTimes`] of process `pid`.
pub fn stat_times(pid: u32) -> io::Result<StatTimes> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: the fields after it start at 3.
    let f: Vec<&str> = s[s.rfind(')').unwrap_or(0) + 1..].split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) as f64;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Ok(StatTimes {
        user_s: field(14) / hz,
        system_s: field(15) / hz,
        reaped_children_s: (field(16) + field(17)) / hz,
        reaped_children_user_s: field(16) / hz,
    })
}

/// Handles SIGINT, SIGTERM and SIGUSR1 on a thread of their own: calls `on_usr1` for each
/// SIGUSR1, and `on_signal` for the first SIGINT or SIGTERM, there. A second SIGINT or SIGTERM
/// exits at once (status 1): the way out of a grace period one does not want to wait for.
///
/// Call it before starting any other thread: it blocks the three signals in the calling thread,
/// so that the threads started after it (the runtimes') inherit the mask and never see a
/// signal (an `epoll_wait` or `io_uring_enter` cut short by EINTR, or a syscall of its own in
/// their counters). Only the signal thread unblocks them, so the kernel delivers them there,
/// where signal-hook's handler hands them to the loop below. Threads this program does not
/// create may unblock every signal (glibc's POSIX aio starts each `SIGEV_THREAD` notification
/// on a thread with an empty signal mask); a signal delivered there runs the same handler,
/// which only writes to signal-hook's pipe, so it still reaches the loop instead of taking its
/// default action.
pub fn on_termination(
    on_signal: impl FnOnce(i32) + Send + 'static,
    on_usr1: impl Fn() + Send + 'static,
) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR1] {
        set.add(sig);
    }
    set.thread_block()?;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
    let mut on_signal = Some(on_signal);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Err(e) = set.thread_unblock() {
            eprintln!("cannot unblock signals on the signal thread: {e}");
        }
        for sig in signals.forever() {
            if sig == SIGUSR1 {
                on_usr1();
                continue;
            }
            match on_signal.take() {
                Some(on_signal) => on_signal(sig),
                None => {
                    eprintln!("second signal: exiting at once");
                    std::process::exit(1);
                }
            }
        }
    })?;
    Ok(())
}

/// Whether standard error is a terminal.
pub fn stderr_is_tty() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal()
}

/// The resident set size of process `pid` (`VmRSS` in `/proc/PID/status`), in KiB.
pub fn vmrss_kb(pid: u32) -> io::Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}
