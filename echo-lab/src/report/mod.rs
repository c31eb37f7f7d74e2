//! What the reports share: the numbers of their tables and JSON documents, the SVG bar charts
//! ([`svg`]), and the directory they are written to.
//!
//! What a report holds is its command's: `bench` prints a load's [`Report`](crate::load::report::Report),
//! `demo` its table, notes, `demo.json` and `demo.svg` (`demo/report.rs`), `lab` its table,
//! `lab.md`, `lab.json` and `lab.svg` (`lab.rs`); with `--record DIR`, any of them a dated
//! markdown record of the run ([`record`]).

use std::path::PathBuf;

use serde_json::{json, Value};

pub mod record;
pub mod svg;

/// Rounds `x` to `digits` decimals (for JSON people read).
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// `null` in JSON for a value that could not be computed.
pub fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// `x` with `prec` decimals, or "n/a": a table's cell.
pub fn num(x: f64, prec: usize) -> String {
    if x.is_finite() {
        format!("{x:.prec$}")
    } else {
        "n/a".into()
    }
}

/// `$CARGO_TARGET_DIR/echo-lab`, else the `target` directory the executable is in, else
/// `./target/echo-lab`.
pub fn default_out_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("echo-lab");
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors().find(|p| p.file_name().is_some_and(|n| n == "target")).map(PathBuf::from)
    });
    from_exe.unwrap_or_else(|| PathBuf::from("target")).join("echo-lab")
}
