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

/// The thread id of the thread that waits for SIGINT/SIGTERM (0 until it runs).
static SIGNAL_THREAD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Handler for SIGINT/SIGTERM delivered to a thread that has them unblocked: passes the signal
/// on to the waiting thread.
extern "C" fn forward_signal(sig: libc::c_int) {
    let tid = SIGNAL_THREAD.load(std::sync::atomic::Ordering::Acquire);
    if tid != 0 {
        // SAFETY: errno is this thread's; it is restored so that the interrupted code does not
        // see the syscall's errno. tgkill is a plain, async-signal-safe syscall.
        unsafe {
            let errno = *libc::__errno_location();
            libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig);
            *libc::__errno_location() = errno;
        }
    }
}

/// Blocks SIGINT, SIGTERM and SIGUSR1 in this thread (and the threads it starts later), then
/// waits for them on a new thread: calls `on_usr1` for each SIGUSR1, and `on_signal` for the
/// first SIGINT or SIGTERM, there. A second SIGINT or SIGTERM exits at once (status 1): the way
/// out of a grace period one does not want to wait for.
///
/// Call it before starting any other thread. Blocking alone is not enough: threads this program
/// does not create may unblock every signal (glibc's POSIX aio starts each `SIGEV_THREAD`
/// notification on a thread with an empty signal mask), and a SIGTERM delivered there would take
/// its default action, ending the process without `on_signal`. So a handler is installed too,
/// which hands such a signal to the waiting thread.
pub fn on_termination(
    on_signal: impl FnOnce(i32) + Send + 'static,
    on_usr1: impl Fn() + Send + 'static,
) -> io::Result<()> {
    // SAFETY: `set` is initialised by sigemptyset before use; the mask change is per thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        set
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut on_signal = Some(on_signal);
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let tid = echo::models::sys::gettid();
        SIGNAL_THREAD.store(tid, std::sync::atomic::Ordering::Release);
        let _ = ready_tx.send(());
        loop {
            let mut sig = 0;
            // SAFETY: `set` is a valid signal set and `sig` a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if sig == libc::SIGUSR1 {
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
    ready_rx.recv().map_err(|_| io::Error::other("the signal thread did not start"))?;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the
        // handler only makes an async-signal-safe syscall.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
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
