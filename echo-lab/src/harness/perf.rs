//! Counting a process's system calls over a window with `perf stat`.
//!
//! `perf stat -e raw_syscalls:sys_enter -x, ...` is started disabled (`-D -1`) and switched on
//! and off through a control FIFO (`--control fifo:CTL,ACK`) at the exact edges of the load's
//! measured window, so the syscall count and the echo count cover the same interval. Every
//! failure is an error string: the caller shows "n/a" and why.
//!
//! Which tasks it counts: where this process may create a cgroup (v2), the server is moved into
//! a cgroup of its own and perf counts the cgroup on every CPU (`-a -G`): every thread and
//! child process the server has or will have, from their first syscall. Otherwise perf attaches
//! to the process (`-p PID`), which counts the threads that exist when it attaches and misses
//! most of what threads and children started later do (measured here: a fifth of an aio
//! server's syscalls, whose glibc starts a thread per completion); [`Perf::whole`] says which.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A running, initially disabled `perf stat` attached to one process.
pub struct Perf {
    child: Option<Child>,
    /// The cgroup perf counts, when it counts one.
    cgroup: Option<Cgroup>,
    ctl: File,
    ack: File,
    dir: PathBuf,
}

fn mkfifo(p: &Path) -> io::Result<()> {
    let _ = fs::remove_file(p);
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    Ok(())
}

impl Perf {
    /// Starts `perf stat` on `pid`, counting nothing until [`Perf::enable`].
    pub fn start(pid: u32) -> Result<Perf, String> {
        let dir = std::env::temp_dir().join(format!("echo-lab-perf-{}-{pid}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (ctl, ack) = (dir.join("ctl"), dir.join("ack"));
        let setup = || -> io::Result<(File, File)> {
            mkfifo(&ctl)?;
            mkfifo(&ack)?;
            // O_RDWR on a FIFO never blocks on Linux, whatever perf is doing.
            let open = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
            Ok((open(&ctl)?, open(&ack)?))
        };
        let (ctl_f, ack_f) = match setup() {
            Ok(files) => files,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(format!("cannot make perf's control FIFOs: {e}"));
            }
        };
        let cgroup = Cgroup::enter(pid).ok();
        let mut perf = Perf { child: None, cgroup, ctl: ctl_f, ack: ack_f, dir };
        let stderr = File::create(perf.dir.join("stderr")).map_err(|e| e.to_string())?;
        let mut command = Command::new("perf");
        command
            .args(["stat", "-e", "raw_syscalls:sys_enter", "-D", "-1", "-x", ","])
            .arg("--control")
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .arg("-o")
            .arg(perf.dir.join("out.csv"));
        match &perf.cgroup {
            Some(cgroup) => command.args(["-a", "-G", &cgroup.name]),
            None => command.args(["-p", &pid.to_string()]),
        };
        let child =
            command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    "perf is not installed".to_string()
                } else {
                    format!("cannot run perf: {e}")
                }
            })?;
        perf.child = Some(child);
        Ok(perf)
    }

    /// Whether perf counts every thread and child process of the server, those started after
    /// it attached included (a cgroup of its own), or only the threads there when it attached.
    pub fn whole(&self) -> bool {
        self.cgroup.is_some()
    }

    /// What perf said on stderr (first line), or how it exited, for an error message.
    fn why(&mut self) -> String {
        let said = fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        let said = said.lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string);
        let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        match (said, exited) {
            (Some(line), _) => format!("perf: {line}"),
            (None, Some(status)) => format!("perf exited ({status})"),
            (None, None) => "perf did not answer within 5 s".to_string(),
        }
    }

    /// Sends `cmd` and waits (up to 5 s: perf may still be attaching) for perf's `ack`.
    fn command(&mut self, cmd: &str) -> Result<(), String> {
        if writeln!(self.ctl, "{cmd}").is_err() {
            return Err(self.why());
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // Poll in short steps so that a perf that died is noticed quickly.
            let mut fds = [PollFd::new(self.ack.as_fd(), PollFlags::POLLIN)];
            if poll(&mut fds, PollTimeout::from(50u16)) == Ok(1) {
                let mut buf = [0u8; 16];
                return match self.ack.read(&mut buf) {
                    Ok(n) if buf[..n].starts_with(b"ack") => Ok(()),
                    _ => Err(self.why()),
                };
            }
            let dead = self.child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if dead || Instant::now() >= deadline {
                return Err(self.why());
            }
        }
    }

    /// Starts counting.
    pub fn enable(&mut self) -> Result<(), String> {
        self.command("enable")
    }

    /// Stops counting.
    pub fn disable(&mut self) -> Result<(), String> {
        self.command("disable")
    }

    /// Stops perf; returns the number of syscalls counted while enabled.
    pub fn finish(mut self) -> Result<u64, String> {
        let Some(mut child) = self.child.take() else { return Err("perf is not running".into()) };
        // The pid of a child not reaped yet: it cannot be another process's.
        let _ = crate::sys::kill(child.id(), nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("perf did not exit within 5 s".into());
                }
            }
        }
        let csv = fs::read_to_string(self.dir.join("out.csv")).unwrap_or_default();
        let Some(line) = csv.lines().find(|l| l.contains("raw_syscalls:sys_enter")) else {
            return Err(self.why());
        };
        line.split(',')
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .map_err(|_| format!("perf counted nothing: {line}"))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A cgroup (v2) of its own for the server, which perf counts whole: every thread and child
/// process the server has or starts lands in it. Left when dropped: the server goes back to
/// the cgroup it came from, and the cgroup is removed.
struct Cgroup {
    /// Its name under the cgroup2 mount, as `perf -G` takes it.
    name: String,
    path: PathBuf,
    /// The server's cgroup before, as a directory.
    before: PathBuf,
    pid: u32,
}

impl Cgroup {
    fn enter(pid: u32) -> io::Result<Cgroup> {
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        let root = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
                (kind == "cgroup2").then(|| PathBuf::from(dir))
            })
            .next()
            .ok_or_else(|| io::Error::other("no cgroup2 mount"))?;
        let own = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let before = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| io::Error::other("no cgroup2 line"))?;
        let before = root.join(before.trim_start_matches('/'));
        let name = format!("echo-lab-{}-{pid}", std::process::id());
        let path = root.join(&name);
        fs::create_dir(&path)?;
        let cgroup = Cgroup { name, path, before, pid };
        fs::write(cgroup.path.join("cgroup.procs"), pid.to_string())?;
        Ok(cgroup)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The server, and any child process it started (they were born in this cgroup); one
        // that has exited has left already.
        let procs = fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in std::iter::once(self.pid.to_string()).chain(procs.lines().map(str::to_string)) {
            let _ = fs::write(self.before.join("cgroup.procs"), pid);
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
