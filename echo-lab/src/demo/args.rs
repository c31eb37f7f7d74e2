//! The options of `echo-lab demo`.

use std::path::PathBuf;

use clap::Args;

use crate::load::options::{non_negative, positive};
use crate::server::Server;

/// Options of `echo-lab demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Runtimes to compare, comma-separated, in the order of the first round: reactor, uring,
    /// aio, proactor-epoll, tokio (the baseline the CPU ratio is taken to), or one of the
    /// classic models.
    #[arg(long, value_delimiter = ',', default_value = "reactor,uring,aio,proactor-epoll,tokio")]
    pub runtimes: Vec<Server>,
    /// Rounds: every runtime is measured once per round, the order reversed on alternate
    /// rounds; the table shows the median and the min–max over the rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Length of each measured window, seconds.
    #[arg(long, default_value_t = 2.0, value_parser = positive)]
    pub secs: f64,
    /// Warm-up before each window, seconds.
    #[arg(long, default_value_t = 0.5, value_parser = non_negative)]
    pub warmup: f64,
    /// Connections, each with one message in flight; a comma-separated list measures each
    /// load in turn (one table each).
    #[arg(long, value_delimiter = ',', default_value = "64",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub conns: Vec<u32>,
    /// Message size, bytes; a comma-separated list measures each size with each --conns.
    #[arg(long, value_delimiter = ',', default_value = "64",
          value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub size: Vec<u32>,
    /// Idle connections opened (and pinged once each) per runtime and round to measure the
    /// server's memory per connection; 0 skips the measurement.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub idle_conns: u32,
    /// Length of the separate window in which the server's syscalls are counted (its own
    /// counters, and `perf stat` where it works), seconds; 0 skips the measurement.
    #[arg(long, default_value_t = 0.5, value_parser = non_negative)]
    pub syscall_secs: f64,
    /// Ping-pong UDP datagrams instead of TCP messages (the servers answer UDP on the same
    /// address; see `bench --udp`): --conns is then the number of client sockets. Runtimes
    /// that serve no UDP (aio, the classic models) are skipped; idle memory is not measured.
    #[arg(long)]
    pub udp: bool,
    /// Where to write demo.json and demo.svg [default: TARGET/echo-lab, where TARGET is
    /// $CARGO_TARGET_DIR, or the `target` directory this program was built in, or ./target].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The runtimes to compare, each once, in the order given.
pub fn servers(a: &DemoArgs) -> Vec<Server> {
    let mut servers: Vec<Server> = Vec::new();
    for &s in &a.runtimes {
        if !servers.contains(&s) {
            servers.push(s);
        }
    }
    servers
}
