//! `--record DIR`: a measuring command's run as a dated markdown record
//! (`echo-lab/src/report/record.rs`, `docs/measurements/README.md`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_echo-lab");

/// Runs echo-lab with `args`, killed if it takes longer than a minute.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start echo-lab");
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn records(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(dir).map_or(Vec::new(), |d| d.flatten().map(|e| e.path()).collect());
    files.sort();
    files
}

/// The text between the line after `heading`'s first fence and the closing fence.
fn fenced_after<'a>(md: &'a str, heading: &str) -> &'a str {
    let from = md.find(heading).unwrap_or_else(|| panic!("no {heading} in:\n{md}"));
    let rest = &md[from..];
    let start = rest.find("```text\n").expect("a text block") + "```text\n".len();
    let end = rest[start..].find("\n```").expect("its end") + start;
    &rest[start..end]
}

#[test]
fn a_recorded_demo_keeps_its_command_machine_settings_and_output_and_the_same_day_replaces_it() {
    let dir = fresh_dir("record-demo");
    let out_dir = fresh_dir("record-demo-out");
    let args = [
        "demo",
        "--runtimes",
        "reactor",
        "--rounds",
        "1",
        "--secs",
        "0.2",
        "--warmup",
        "0",
        "--conns",
        "2",
        "--idle-conns",
        "0",
        "--syscall-secs",
        "0",
        "--out",
        out_dir.to_str().unwrap(),
        "--record",
        dir.to_str().unwrap(),
    ];
    let first = run(&args);
    assert!(first.status.success(), "stderr: {}", String::from_utf8_lossy(&first.stderr));
    let second = run(&args);
    assert!(second.status.success(), "stderr: {}", String::from_utf8_lossy(&second.stderr));

    // One file, named by the date and the arguments: the second run replaced the first.
    let files = records(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    let (date, slug) = name.split_at(10);
    assert!(
        date.len() == 10
            && date.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }),
        "{name}"
    );
    assert_eq!(slug, "-demo-2conns-64b-reactor-1rounds-0.2secs-0warmup-0idle-conns-0syscall-secs.md");

    let md = fs::read_to_string(&files[0]).unwrap();
    // The command line as given, the record option included.
    let command = fenced_after(&md, "## Command");
    assert!(command.ends_with(&args.join(" ")), "{command}");
    // The output exactly as printed (the second run's), on standard output as it came.
    let printed = String::from_utf8_lossy(&second.stdout);
    assert_eq!(fenced_after(&md, "## Output"), printed.trim_end_matches('\n'));
    assert!(printed.contains("2 conns, 64 B messages: median of 1 round"), "{printed}");
    // The date and time, the machine, the commit.
    assert!(md.contains(&format!("| date | {date} ")), "{md}");
    for row in
        ["| commit | ", "| kernel | Linux ", "| CPU | ", "| memory | ", "| load average (1, 5, 15 min) | "]
    {
        assert!(md.contains(row), "no {row:?} in:\n{md}");
    }
    // Every setting, given or default.
    assert!(md.contains("| `--rounds` | `1` | given |"), "{md}");
    assert!(md.contains("| `--size` | `64` | default |"), "{md}");
    assert!(md.contains("## How to read it\n\nEach runtime has two lines"), "{md}");
}

#[test]
fn a_failed_run_writes_no_record_and_fails_as_the_command_did() {
    let dir = fresh_dir("record-failed");
    // Nothing listens on port 1: the bench cannot connect.
    let out = run(&[
        "bench",
        "--addr",
        "127.0.0.1:1",
        "--secs",
        "0.1",
        "--connect-timeout",
        "0.3",
        "--record",
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no record written"), "{stderr}");
    assert!(records(&dir).is_empty(), "{:?}", records(&dir));
}

#[test]
fn only_the_measuring_commands_take_record() {
    let dir = fresh_dir("record-serve");
    let out = run(&["serve", "--record", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    for command in ["demo", "lab", "stall", "bench"] {
        let help = run(&[command, "--help"]);
        assert!(String::from_utf8_lossy(&help.stdout).contains("--record <DIR>"), "{command}");
    }
}
