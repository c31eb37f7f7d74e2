//! What the demo measured: each server's rounds under each load, and the figures the table,
//! the JSON and the SVG show (medians and ranges over the rounds, the ratio to tokio).

use crate::harness::rounds::Spread;
use crate::load::report::Report;
use crate::server::Server;

/// One server's measurements in one round.
pub struct Round {
    /// The round, from 1.
    pub round: u32,
    /// Its place in the round's order, from 1.
    pub position: usize,
    pub report: Report,
    /// Server CPU time over the window, seconds: total (process CPU clock), and user and
    /// system time (`/proc/PID/stat`, clock ticks).
    pub cpu_s: f64,
    pub user_s: f64,
    pub system_s: f64,
    /// The syscall window as the runtime's own counters saw it, or why there is none.
    pub syscalls: Result<Syscalls, String>,
    /// The same window as `perf stat` saw it, or why not.
    pub perf: Result<Syscalls, String>,
    /// The idle-connection memory measurement, or why there is none.
    pub idle: Result<Idle, String>,
}

/// The server's syscalls over a window of the load.
pub struct Syscalls {
    /// System calls the server made in the window.
    pub count: u64,
    /// Echoes completed in the same window.
    pub echoes: u64,
    /// Length of the window, seconds.
    pub window_s: f64,
}

impl Syscalls {
    pub fn per_echo(&self) -> f64 {
        if self.echoes == 0 {
            f64::NAN
        } else {
            self.count as f64 / self.echoes as f64
        }
    }
}

/// The server's resident memory before and after opening `conns` idle connections.
pub struct Idle {
    pub conns: usize,
    pub before_kb: u64,
    pub after_kb: u64,
}

impl Idle {
    /// Bytes of resident memory per idle connection (negative if the RSS shrank).
    pub fn bytes_per_conn(&self) -> f64 {
        (self.after_kb as f64 - self.before_kb as f64) * 1024.0 / self.conns.max(1) as f64
    }
}

impl Round {
    pub fn per_echo_us(&self, seconds: f64) -> f64 {
        if self.report.msgs == 0 {
            f64::NAN
        } else {
            seconds * 1e6 / self.report.msgs as f64
        }
    }

    pub fn cpu_us_per_echo(&self) -> f64 {
        self.per_echo_us(self.cpu_s)
    }

    pub fn user_us_per_echo(&self) -> f64 {
        self.per_echo_us(self.user_s)
    }

    pub fn system_us_per_echo(&self) -> f64 {
        self.per_echo_us(self.system_s)
    }

    pub fn msgs_per_sec(&self) -> f64 {
        self.report.msgs_per_sec()
    }

    pub fn p99_us(&self) -> f64 {
        self.report.latency_us(0.99)
    }

    /// The runtime's own count; perf's for the servers [`counted_by_perf`].
    pub fn syscalls_shown(&self, server: Server) -> Result<&Syscalls, &String> {
        match (&self.syscalls, &self.perf) {
            (Ok(own), _) => Ok(own),
            (Err(_), Ok(perf)) if counted_by_perf(server) => Ok(perf),
            (Err(why), _) => Err(why),
        }
    }

    pub fn perf_per_echo(&self) -> f64 {
        self.perf.as_ref().map_or(f64::NAN, Syscalls::per_echo)
    }

    pub fn idle_bytes_per_conn(&self) -> f64 {
        self.idle.as_ref().map_or(f64::NAN, Idle::bytes_per_conn)
    }
}

/// One runtime under one load: its rounds, and the spreads of its figures.
pub struct Runtime {
    pub server: Server,
    pub rounds: Vec<Round>,
}

impl Runtime {
    pub fn spread(&self, f: impl Fn(&Round) -> f64) -> Spread {
        Spread::of(self.rounds.iter().map(f))
    }

    pub fn syscalls_per_echo(&self) -> Spread {
        self.spread(|r| r.syscalls_shown(self.server).map_or(f64::NAN, Syscalls::per_echo))
    }

    /// Where the syscall count comes from, if it was counted.
    pub fn syscalls_source(&self) -> Option<&'static str> {
        let r = self.rounds.first()?;
        match (&r.syscalls, r.syscalls_shown(self.server)) {
            (Ok(_), _) => Some("runtime counters"),
            (Err(_), Ok(_)) => Some("perf"),
            _ => None,
        }
    }

    pub fn syscalls_error(&self) -> Option<&String> {
        self.rounds.iter().find_map(|r| r.syscalls_shown(self.server).err())
    }
}

/// One load (connections × message size) and every runtime measured under it.
pub struct Load {
    pub conns: u32,
    pub size: u32,
    pub runtimes: Vec<Runtime>,
}

/// How a runtime's CPU per echo compares with tokio's under the same load.
pub struct VsTokio {
    /// The runtime's CPU µs/echo over tokio's, round by round.
    pub ratio: Spread,
    /// Whether the two min–max ranges of CPU µs/echo overlap: then the ratio means nothing.
    pub within_noise: bool,
}

impl Load {
    pub fn tokio(&self) -> Option<&Runtime> {
        self.runtimes.iter().find(|r| r.server == Server::Tokio)
    }

    /// None for tokio itself, or without tokio.
    pub fn vs_tokio(&self, rt: &Runtime) -> Option<VsTokio> {
        let tokio = self.tokio().filter(|t| t.server != rt.server)?;
        let ratios = rt.rounds.iter().filter_map(|r| {
            let t = tokio.rounds.iter().find(|t| t.round == r.round)?;
            Some(r.cpu_us_per_echo() / t.cpu_us_per_echo())
        });
        let ratio = Spread::of(ratios);
        let within_noise = rt.spread(Round::cpu_us_per_echo).overlaps(&tokio.spread(Round::cpu_us_per_echo));
        Some(VsTokio { ratio, within_noise })
    }
}

/// Whether the demo counts `server`'s syscalls with perf alone: the baselines and the classic
/// models, which have no counters of their own, and aio, whose I/O syscalls glibc's threads
/// make (counted whole only where perf can count a cgroup of the server's own: see
/// `harness::perf`).
pub fn counted_by_perf(server: Server) -> bool {
    matches!(
        server,
        Server::Tokio | Server::Mio | Server::Model(_) | Server::Runtime(echo::server::RuntimeKind::Aio(_))
    )
}
