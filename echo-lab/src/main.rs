//! `echo-lab`: serve the echo handler on each runtime, load it, and compare the runtimes.
//!
//! - `echo-lab serve --runtime reactor|uring|aio|tokio|mio [--addr A]`: an echo server;
//! - `echo-lab bench --addr A`: a ping-pong load that verifies every byte and reports
//!   throughput and latency;
//! - `echo-lab demo`: both of the above, for every runtime and the tokio baseline, in
//!   interleaved rounds, as one comparison table of medians and ranges (plus
//!   `target/echo-lab/demo.json` and `demo.svg`);
//! - `echo-lab trace --runtime reactor|uring|aio`: what the runtime does for each message, step
//!   by step; `--svg FILE` draws it for every design as sequence diagrams side by side;
//!   `--chrome-trace FILE` records a short loaded run as a timeline for Perfetto;
//! - `echo-lab lab`: the seed's I/O models, the runtimes and tokio under the same loads;
//! - `echo-lab stall`: clients that send and never read: each server's memory, and how long
//!   a newcomer waits meanwhile.
//!
//! # How it fits together
//!
//! Each layer uses only the ones below it:
//!
//! - the commands: [`serve`], [`bench`](mod@bench), [`demo`], [`lab`], [`stall`], [`trace`] (its drawings too:
//!   `trace::seqdiag`, `trace::timeline`);
//! - [`load`]: the load generator (ping-pong, shortconn, bulk, UDP), every byte verified;
//!   [`harness`]: the server under test in a child process, pinned, sampled at the edges of the
//!   load's window, in interleaved rounds;
//! - [`server`]: which servers there are; [`baseline`]: the tokio and mio baselines;
//!   [`report`]: what the reports share (numbers, SVG bar charts); [`sys`]: the OS facilities,
//!   through nix and signal-hook.

mod baseline;
mod bench;
mod demo;
mod harness;
mod lab;
mod load;
mod report;
mod serve;
mod server;
mod stall;
mod sys;
mod trace;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Readiness (epoll) vs completion (io_uring) echo servers: serve, load, compare.
#[derive(Parser, Debug)]
#[command(name = "echo-lab", version)]
struct Cli {
    /// Parse the arguments and exit without running anything (the docs test checks the
    /// documented commands with it).
    #[arg(long, global = true, hide = true)]
    check_args: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an echo server until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Load an echo server (ping-pong, bulk or short connections), verifying every byte.
    Bench(bench::BenchArgs),
    /// Serve and load every runtime in turn and print one comparison table.
    Demo(demo::DemoArgs),
    /// Echo a few messages on one connection and show what the runtime did, step by step (or,
    /// with --chrome-trace, record a loaded run as a timeline for Perfetto).
    Trace(trace::TraceArgs),
    /// Run every I/O model (the seed's five, the runtimes, tokio) under the same loads.
    Lab(lab::LabArgs),
    /// Clients that send and never read: how much each server's memory grows, and how long a
    /// newcomer waits for its echo meanwhile.
    Stall(stall::StallArgs),
}

fn main() -> ExitCode {
    // `--record DIR` is added to the measuring commands here (report/record.rs).
    let matches = report::record::add_option(Cli::command()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.check_args {
        return ExitCode::SUCCESS;
    }
    if let Some(dir) = report::record::requested(&matches) {
        return report::record::run(&dir, &cli.command, &matches);
    }
    let result = match cli.command {
        Command::Serve(a) => serve::run(&a),
        Command::Bench(a) => bench::run_cli(&a),
        Command::Demo(a) => demo::run(&a),
        Command::Trace(a) => trace::run(&a),
        Command::Lab(a) => lab::run(&a),
        Command::Stall(a) => stall::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-lab: {e}");
            ExitCode::FAILURE
        }
    }
}
