//! `--record DIR`: a measuring command's run kept as a dated markdown record.
//!
//! `echo-lab demo --record docs/measurements` runs the demo as usual and, if it succeeds, writes
//! `docs/measurements/2026-12-06-demo-64conns-64b.md`: the exact command line, the date and
//! time (UTC), the machine (kernel, CPU model and cores, memory, the load average at the start
//! and at the end), the commit (and whether the tree had uncommitted changes), every setting
//! (given or default), the output exactly as printed, and how to read it. The date is the
//! system clock's (UTC); the rest of the name is a slug of the arguments: the command, its
//! load, then every option given on the command line. So the same command run again on the
//! same day replaces its record, and on another day adds one. `docs/measurements/README.md`
//! says how records are kept and quoted.
//!
//! How: the command runs again as a child of this process, with the same arguments but
//! `--record`, its standard output piped through this process (shown as it comes, and kept),
//! its standard error and input inherited. So the record holds what the terminal showed on
//! standard output, and nothing in the measuring commands knows about records.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory};

use crate::Command;

/// The commands that measure, and take `--record`.
const RECORDED: [&str; 4] = ["demo", "lab", "stall", "bench"];

/// `cli` with `--record DIR` added to each measuring command.
pub fn add_option(cli: clap::Command) -> clap::Command {
    RECORDED.into_iter().fold(cli, |cli, name| {
        cli.mut_subcommand(name, |sub| {
            sub.arg(
                Arg::new("record")
                    .long("record")
                    .value_name("DIR")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help(
                        "Also write the run as a dated markdown record in DIR (command, date, \
                         machine, commit, settings, output; docs/measurements/README.md): \
                         DIR/YYYY-MM-DD-SLUG.md, replaced by the same command on the same day",
                    ),
            )
        })
    })
}

/// The directory `--record` names, if the command was given one.
pub fn requested(matches: &ArgMatches) -> Option<PathBuf> {
    let (name, sub) = matches.subcommand()?;
    if !RECORDED.contains(&name) {
        return None;
    }
    sub.get_one::<PathBuf>("record").cloned()
}

/// Runs the command again without `--record`, shows its output and, if it succeeds, writes the
/// record into `dir`.
pub fn run(dir: &Path, command: &Command, matches: &ArgMatches) -> ExitCode {
    match record(dir, command, matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("echo-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn record(dir: &Path, command: &Command, matches: &ArgMatches) -> Result<ExitCode, String> {
    let (name, sub) = matches.subcommand().ok_or("no command")?;
    let args: Vec<OsString> = std::env::args_os().collect();
    let started = SystemTime::now();
    let clock = Instant::now();
    let load_start = load_average();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut child = Process::new(&exe)
        .args(without_record(&args[1..]))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let mut output = Vec::new();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut shown = std::io::stdout().lock();
    loop {
        let start = output.len();
        match reader.read_until(b'\n', &mut output) {
            Ok(0) => break,
            Ok(_) => {
                // Shown as it comes; a closed terminal does not stop the measurement.
                let _ = shown.write_all(&output[start..]).and_then(|()| shown.flush());
            }
            Err(e) => return Err(format!("cannot read the command's output: {e}")),
        }
    }
    drop(shown);
    let status = child.wait().map_err(|e| format!("cannot wait for the command: {e}"))?;
    if !status.success() {
        eprintln!("echo-lab: the command failed ({status}): no record written");
        let code = status.code().map_or(1, |c| c.clamp(1, 255)) as u8;
        return Ok(ExitCode::from(code));
    }
    let run = Run {
        args: &args,
        name,
        started,
        elapsed_s: clock.elapsed().as_secs_f64(),
        load: (load_start, load_average()),
        output: String::from_utf8_lossy(&output).into_owned(),
    };
    let settings = settings(name, sub);
    let path = dir.join(format!("{}-{}.md", utc(started).0, slug(command, name, sub)));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(&path, markdown(&run, &settings))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("echo-lab: recorded in {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// `args` without `--record DIR` (or `--record=DIR`).
fn without_record(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter();
    let mut removed = false;
    while let Some(arg) = it.next() {
        if !removed && arg == "--record" {
            it.next();
            removed = true;
        } else if !removed && arg.to_str().is_some_and(|a| a.starts_with("--record=")) {
            removed = true;
        } else {
            out.push(arg.clone());
        }
    }
    out
}

/// What one run was.
struct Run<'a> {
    args: &'a [OsString],
    name: &'a str,
    started: SystemTime,
    elapsed_s: f64,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages at the start and at the end.
    load: (String, String),
    /// Its standard output.
    output: String,
}

/// One option of the command: its flag, its value(s), and whether it was given or a default.
struct Setting {
    flag: String,
    value: String,
    from: &'static str,
}

/// The options of `name`, as `sub` has them, in the order `--help` lists them.
fn settings(name: &str, sub: &ArgMatches) -> Vec<Setting> {
    let cli = add_option(crate::Cli::command());
    let Some(cmd) = cli.find_subcommand(name) else { return Vec::new() };
    cmd.get_arguments()
        .filter(|arg| {
            let id = arg.get_id().as_str();
            !arg.is_hide_set() && !matches!(id, "help" | "version" | "record") && arg.get_long().is_some()
        })
        .map(|arg| {
            let id = arg.get_id().as_str();
            let value = match sub.try_get_raw(id) {
                Ok(Some(values)) => values.map(|v| v.to_string_lossy()).collect::<Vec<_>>().join(","),
                _ => String::new(),
            };
            let from = match sub.value_source(id) {
                Some(ValueSource::CommandLine) => "given",
                Some(ValueSource::EnvVariable) => "environment",
                Some(ValueSource::DefaultValue) => "default",
                _ => "not set",
            };
            Setting { flag: format!("--{}", arg.get_long().unwrap_or(id)), value, from }
        })
        .collect()
}

/// The record's name after its date: the command and its load (always), then each option given
/// on the command line (numbers before their option's name, `3rounds`; other values as they
/// are; flags by their name), in the order `--help` lists them; `--out` left out.
fn slug(command: &Command, name: &str, sub: &ArgMatches) -> String {
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join("-");
    let (mut parts, covered): (Vec<String>, &[&str]) = match command {
        Command::Demo(a) => {
            (vec![format!("{}conns", list(&a.conns)), format!("{}b", list(&a.size))], &["conns", "size"])
        }
        Command::Lab(a) => (vec![format!("{}b", a.size)], &["size"]),
        Command::Stall(a) => (vec![format!("{}clients", list(&a.clients))], &["clients"]),
        Command::Bench(a) => (
            vec![a.mode.name().to_string(), format!("{}conns", a.conns), format!("{}b", a.size)],
            &["mode", "conns", "size"],
        ),
        _ => (Vec::new(), &[]),
    };
    parts.insert(0, name.to_string());
    let cli = add_option(crate::Cli::command());
    if let Some(cmd) = cli.find_subcommand(name) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if covered.contains(&id)
                || matches!(id, "record" | "out")
                || sub.value_source(id) != Some(ValueSource::CommandLine)
            {
                continue;
            }
            let long = arg.get_long().unwrap_or(id);
            if matches!(arg.get_action(), ArgAction::SetTrue) {
                parts.push(long.to_string());
                continue;
            }
            let Ok(Some(values)) = sub.try_get_raw(id) else { continue };
            let values: Vec<String> = values.map(|v| v.to_string_lossy().into_owned()).collect();
            let numeric = values.iter().all(|v| v.parse::<f64>().is_ok());
            parts.push(if numeric { format!("{}{long}", values.join("-")) } else { values.join("-") });
        }
    }
    sanitize(&parts.join("-"))
}

/// Lower case, `[a-z0-9.]` and single dashes; at most 100 characters (a longer slug is cut and
/// ends with a hash of the whole, so that it stays unique).
fn sanitize(slug: &str) -> String {
    let mut out = String::new();
    for c in slug.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '.' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches(|c| c == '-' || c == '.').to_string();
    if out.len() <= 100 {
        return out;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash =
        out.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{}-{:08x}", out[..90].trim_end_matches('-'), hash as u32)
}

/// The record.
fn markdown(run: &Run<'_>, settings: &[Setting]) -> String {
    let (date, time) = utc(run.started);
    let mut md = String::new();
    let _ = writeln!(md, "# echo-lab {}, {date}\n", run.name);
    let _ = writeln!(
        md,
        "A measurement record written by the command below (`--record`); never edited by hand. \
         [README.md](README.md) in this directory says how records are made and quoted.\n"
    );
    let _ = writeln!(md, "## Command\n\n```text\n{}\n```\n", command_line(run.args));
    let _ = writeln!(md, "## Run\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| date | {date} {time} UTC, took {:.1} s |", run.elapsed_s);
    let _ = writeln!(md, "| commit | {} |", commit());
    let _ = writeln!(md, "| kernel | Linux {} |", read_trimmed("/proc/sys/kernel/osrelease"));
    let _ = writeln!(md, "| CPU | {}, {} cores online |", cpu_model(), crate::sys::cpus());
    let _ = writeln!(md, "| memory | {} |", memory());
    let _ = writeln!(
        md,
        "| load average (1, 5, 15 min) | {} at the start, {} at the end |\n",
        run.load.0, run.load.1
    );
    let _ = writeln!(md, "## Settings\n");
    let _ = writeln!(md, "| option | value | |\n|---|---|---|");
    for s in settings {
        let value = if s.value.is_empty() { String::new() } else { format!("`{}`", s.value) };
        let _ = writeln!(md, "| `{}` | {value} | {} |", s.flag, s.from);
    }
    let _ = writeln!(md, "\n## Output\n\nAs printed on standard output:\n");
    let _ = writeln!(md, "```text\n{}\n```\n", run.output.trim_end_matches('\n'));
    let _ = writeln!(md, "## How to read it\n\n{}", how_to_read(run.name));
    md
}

/// A note on what the figures of each command are.
fn how_to_read(name: &str) -> &'static str {
    match name {
        "demo" => {
            "Each runtime has two lines: the medians over the rounds, and below them the lowest and \
             highest round (min–max). The rounds are interleaved: every runtime once per round, the \
             order reversed on alternate rounds, a fresh server each time, the server on one CPU and \
             the load on the other. Compare runtimes within one record, and read a difference smaller \
             than the ranges as noise: on a shared machine one window moves by tens of percent. The \
             notes under the table say where each figure comes from."
        }
        "stall" => {
            "Each cell is the median over the rounds with the lowest and highest round in brackets \
             (the newcomers' worst: the median of each round's worst, and the worst of all). The \
             rounds are interleaved: every server once per round, the order reversed on alternate \
             rounds, a fresh server each time."
        }
        "lab" => {
            "One window per model and cell, no rounds: each figure is a single measurement, and on a \
             shared machine single windows move by 10–30 % from run to run. Read differences smaller \
             than that as noise; `echo-lab demo` measures in interleaved rounds with ranges."
        }
        "bench" => {
            "One window against one server: a single measurement, no rounds and no range. Compare it \
             only with runs made the same way on the same machine, better in interleaved rounds (as \
             `echo-lab demo` does)."
        }
        _ => "",
    }
}

/// The command line as a shell would take it back.
fn command_line(args: &[OsString]) -> String {
    args.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            let plain =
                !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "_-./,:=+@%".contains(c));
            if plain {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(YYYY-MM-DD, HH:MM:SS)` of `t`, in UTC.
fn utc(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    (format!("{y:04}-{m:02}-{d:02}"), format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60))
}

/// The proleptic Gregorian date of the day `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string())
}

/// `/proc/loadavg`'s three averages, as `uptime` shows them.
fn load_average() -> String {
    let all = read_trimmed("/proc/loadavg");
    all.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn memory() -> String {
    let kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    });
    kib.map_or_else(|| "unknown".to_string(), |k: u64| format!("{:.1} GiB", k as f64 / f64::from(1 << 20)))
}

/// The commit of the checkout this runs in, and whether its tracked files had changes;
/// "unknown" outside this project's repository.
fn commit() -> String {
    let git = |args: &[&str]| {
        let out = Process::new("git").args(args).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let in_repo = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top).join("echo-lab/Cargo.toml").is_file());
    let (Some(head), true) = (git(&["rev-parse", "--short", "HEAD"]), in_repo) else {
        return "unknown (not run in the project's repository)".to_string();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(s) if s.is_empty() => head,
        Some(_) => format!("{head}, with uncommitted changes"),
        None => format!("{head} (whether the tree had changes: unknown)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // 2000-02-29 (a leap day of a century divisible by 400) and 2026-12-06.
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
    }

    #[test]
    fn record_option_is_removed_in_both_spellings() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            without_record(&args(&["demo", "--record", "d", "--conns", "4"])),
            args(&["demo", "--conns", "4"])
        );
        assert_eq!(without_record(&args(&["lab", "--record=d"])), args(&["lab"]));
    }

    #[test]
    fn slugs_are_lower_case_words_and_long_ones_stay_unique() {
        assert_eq!(sanitize("Demo--256-1000conns-64b-reactor,uring"), "demo-256-1000conns-64b-reactor-uring");
        let (a, b) = (sanitize(&"x".repeat(120)), sanitize(&format!("{}y", "x".repeat(119))));
        assert!(a.len() <= 100 && b.len() <= 100 && a != b, "{a} {b}");
    }
}
