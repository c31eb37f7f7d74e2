//! The few OS calls `echo-lab` needs: file limits, CPU pinning, process CPU time and memory,
//! signals, terminals.

use std::fs;
use std::io;

/// Raises the soft RLIMIT_NOFILE to the hard limit (many connections need many fds).
pub fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit with cur <= max. Failure only leaves the old limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
}

/// How many CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: `set` is a plain bit set, zeroed and then filled by the libc macros.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// User + system CPU time of process `pid` (all its threads), in seconds.
///
/// Read at nanosecond resolution from the process CPU-time clock when allowed, else from
/// fields 14 and 15 of `/proc/PID/stat` (clock ticks).
pub fn process_cpu_s(pid: u32) -> io::Result<f64> {
    let mut clk: libc::clockid_t = 0;
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: both out-pointers are valid for writes.
    let ok = unsafe {
        libc::clock_getcpuclockid(pid as i32, &mut clk) == 0 && libc::clock_gettime(clk, &mut ts) == 0
    };
    if ok {
        return Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9);
    }
    let s = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the parenthesised command name start at field 3.
    let f: Vec<&str> = s[s.rfind(')').unwrap_or(0) + 1..].split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: plain syscall.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((field(14) + field(15)) as f64 / hz)
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts later), then waits for
/// either on a new thread and calls `on_signal` there.
///
/// Call it before starting any other thread, so that no thread takes the signal's default
/// action (terminating the process without `on_signal`).
pub fn on_termination(on_signal: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    // SAFETY: `set` is initialised by sigemptyset before use; the mask change is per thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        set
    };
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set and `sig` a valid out-pointer.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        on_signal(sig);
    })?;
    Ok(())
}

/// Whether standard error is a terminal.
pub fn stderr_is_tty() -> bool {
    // SAFETY: plain syscall, no pointers.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

/// The resident set size of process `pid` (`VmRSS` in `/proc/PID/status`), in KiB.
pub fn vmrss_kb(pid: u32) -> io::Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}
