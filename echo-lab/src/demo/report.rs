//! The demo's report: a table per load (medians, and min–max below) with notes on what each
//! column means, `demo.json` (every round), and `demo.svg` (bars with whiskers).

use serde_json::{json, Value};

use super::args::{servers, DemoArgs};
use super::results::{Load, Round, Runtime, Syscalls, VsTokio};
use crate::harness::rounds::Spread;
use crate::load::report::Report;
use crate::report::{finite, num, round, svg};
use crate::server::Server;

/// One round of one runtime, as JSON.
pub fn round_json(server: Server, r: &Round) -> Value {
    let shown = r.syscalls_shown(server);
    json!({
        "round": r.round,
        "position": r.position,
        "msgs_per_sec": round(r.msgs_per_sec(), 1),
        "p50_us": round(r.report.latency_us(0.5), 2),
        "p99_us": round(r.p99_us(), 2),
        "p999_us": round(r.report.latency_us(0.999), 2),
        "server_cpu_s": round(r.cpu_s, 6),
        "server_user_s": round(r.user_s, 3),
        "server_system_s": round(r.system_s, 3),
        "cpu_us_per_echo": finite(round(r.cpu_us_per_echo(), 3)),
        "user_us_per_echo": finite(round(r.user_us_per_echo(), 3)),
        "system_us_per_echo": finite(round(r.system_us_per_echo(), 3)),
        "syscalls_per_echo": finite(round(shown.map_or(f64::NAN, Syscalls::per_echo), 3)),
        "syscalls": shown.ok().map(|s| s.count),
        "syscall_window_echoes": shown.ok().map(|s| s.echoes),
        "syscall_window_s": shown.ok().map(|s| round(s.window_s, 6)),
        "perf_syscalls_per_echo": finite(round(r.perf_per_echo(), 3)),
        "perf_syscalls": r.perf.as_ref().ok().map(|s| s.count),
        "idle_rss_before_kb": r.idle.as_ref().ok().map(|i| i.before_kb),
        "idle_rss_after_kb": r.idle.as_ref().ok().map(|i| i.after_kb),
        "idle_bytes_per_conn": finite(round(r.idle_bytes_per_conn(), 1)),
        "msgs": r.report.msgs,
        "errors": r.report.errors,
        "mismatches": r.report.mismatches,
    })
}

/// One runtime under one load, as JSON: the medians and ranges, then every round.
pub fn runtime_json(load: &Load, rt: &Runtime) -> Value {
    let mut v = serde_json::Map::new();
    v.insert("runtime".into(), json!(rt.server.name()));
    v.insert("conns".into(), json!(load.conns));
    v.insert("size".into(), json!(load.size));
    rt.spread(Round::msgs_per_sec).json("msgs_per_sec", 1, &mut v);
    rt.spread(Round::p99_us).json("p99_us", 2, &mut v);
    rt.spread(Round::cpu_us_per_echo).json("cpu_us_per_echo", 3, &mut v);
    rt.spread(Round::user_us_per_echo).json("user_us_per_echo", 3, &mut v);
    rt.spread(Round::system_us_per_echo).json("system_us_per_echo", 3, &mut v);
    match load.vs_tokio(rt) {
        Some(vs) => {
            vs.ratio.json("cpu_ratio_to_tokio", 3, &mut v);
            v.insert("within_noise".into(), json!(vs.within_noise));
        }
        None => {
            let one = if rt.server == Server::Tokio { json!(1.0) } else { Value::Null };
            for key in ["cpu_ratio_to_tokio", "cpu_ratio_to_tokio_min", "cpu_ratio_to_tokio_max"] {
                v.insert(key.into(), one.clone());
            }
            v.insert("within_noise".into(), Value::Null);
        }
    }
    rt.syscalls_per_echo().json("syscalls_per_echo", 3, &mut v);
    v.insert("syscalls_source".into(), json!(rt.syscalls_source()));
    v.insert("syscalls_error".into(), json!(rt.syscalls_error()));
    rt.spread(Round::perf_per_echo).json("perf_syscalls_per_echo", 3, &mut v);
    let perf_error = rt.rounds.iter().find_map(|r| r.perf.as_ref().err());
    v.insert("perf_error".into(), json!(perf_error));
    v.insert(
        "idle_conns".into(),
        json!(rt.rounds.iter().find_map(|r| r.idle.as_ref().ok().map(|i| i.conns))),
    );
    rt.spread(Round::idle_bytes_per_conn).json("idle_bytes_per_conn", 1, &mut v);
    v.insert("idle_error".into(), json!(rt.rounds.iter().find_map(|r| r.idle.as_ref().err())));
    let sum = |f: fn(&Report) -> u64| rt.rounds.iter().map(|r| f(&r.report)).sum::<u64>();
    v.insert("msgs".into(), json!(sum(|r| r.msgs)));
    v.insert("errors".into(), json!(sum(|r| r.errors)));
    v.insert("mismatches".into(), json!(sum(|r| r.mismatches)));
    v.insert("rounds".into(), rt.rounds.iter().map(|r| round_json(rt.server, r)).collect());
    Value::Object(v)
}

/// `min–max`, or "n/a".
pub fn range(s: &Spread, prec: usize) -> String {
    if s.min.is_finite() {
        format!("{:.prec$}–{:.prec$}", s.min, s.max)
    } else {
        "n/a".into()
    }
}

/// The table's columns, after the runtime's name.
const COLUMNS: [&str; 7] =
    ["msgs/s", "p99 µs", "CPU µs/echo", "user µs/echo", "vs tokio", "syscalls/echo", "idle B/conn"];

/// The table of one load: per runtime, a line of medians and a line of min–max below it.
pub fn print_table(load: &Load, a: &DemoArgs) {
    println!();
    println!(
        "{} {}, {} B messages: median of {} round{} (min–max below)",
        load.conns,
        if a.udp { "UDP sockets" } else { "conns" },
        load.size,
        a.rounds,
        if a.rounds == 1 { "" } else { "s" }
    );
    // As wide as the longest name (`proactor-epoll-futures-io`).
    let width = load.runtimes.iter().map(|rt| rt.server.name().len()).max().unwrap_or(0).max(10);
    let line = |first: &str, cells: [String; 7]| {
        println!(
            "{first:<width$}  {:>13}  {:>13}  {:>12}  {:>12}  {:>12}  {:>13}  {:>11}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        );
    };
    line("runtime", COLUMNS.map(String::from));
    for rt in &load.runtimes {
        let (msgs, p99) = (rt.spread(Round::msgs_per_sec), rt.spread(Round::p99_us));
        let (cpu, user) = (rt.spread(Round::cpu_us_per_echo), rt.spread(Round::user_us_per_echo));
        let (sys, idle) = (rt.syscalls_per_echo(), rt.spread(Round::idle_bytes_per_conn));
        let (vs, vs_range) = match load.vs_tokio(rt) {
            Some(VsTokio { within_noise: true, ratio }) => {
                ("within noise".to_string(), range(&ratio, 2) + "×")
            }
            Some(VsTokio { within_noise: false, ratio }) => {
                (num(ratio.median, 2) + "×", range(&ratio, 2) + "×")
            }
            None if rt.server == Server::Tokio => ("baseline".to_string(), String::new()),
            None => ("n/a".to_string(), String::new()),
        };
        let p99_prec = if p99.max < 100.0 { 1 } else { 0 };
        line(
            rt.server.name(),
            [
                num(msgs.median, 0),
                num(p99.median, p99_prec),
                num(cpu.median, 2),
                num(user.median, 2),
                vs,
                num(sys.median, 2),
                num(idle.median, 0),
            ],
        );
        line(
            "",
            [
                range(&msgs, 0),
                range(&p99, p99_prec),
                range(&cpu, 2),
                range(&user, 2),
                vs_range,
                range(&sys, 2),
                range(&idle, 0),
            ],
        );
    }
}

/// What the tables' columns mean, and what could not be measured.
pub fn print_notes(loads: &[Load], a: &DemoArgs) {
    let all: Vec<&Runtime> = loads.iter().flat_map(|l| &l.runtimes).collect();
    let rounds = || all.iter().flat_map(|rt| &rt.rounds);
    let errors: u64 = rounds().map(|r| r.report.errors).sum();
    let mismatches: u64 = rounds().map(|r| r.report.mismatches).sum();
    let names: Vec<&str> = servers(a).iter().map(|s| s.name()).collect();
    let mut reversed = names.clone();
    reversed.reverse();
    println!();
    println!("(every echo verified: {errors} errors, {mismatches} mismatches)");
    println!(
        "(rounds interleaved: {}, then {}, ...; a fresh server each time; {} s windows)",
        names.join(" "),
        reversed.join(" "),
        a.secs
    );
    println!(
        "(CPU µs/echo: the server's user + system time per echo; user µs/echo: its user-mode part, \
         the runtime's own work; the rest is the kernel's, mostly TCP)"
    );
    println!(
        "(vs tokio: CPU µs/echo over tokio's in the same round; \"within noise\" where the two \
         runtimes' min–max ranges of CPU µs/echo overlap)"
    );
    println!(
        "(syscalls/echo: each runtime's own counters, on the thread that runs it; tokio and mio, which have \
         none: perf)"
    );
    let cross: Vec<String> = all
        .iter()
        .filter(|rt| rt.rounds.iter().any(|r| r.syscalls.is_ok()))
        .map(|rt| format!("{} {}", rt.server.name(), num(rt.spread(Round::perf_per_echo).median, 2)))
        .collect();
    if !cross.is_empty() {
        println!("(perf stat, same windows: {})", cross.join(", "));
    }
    let mut said = Vec::new();
    for rt in all.iter().filter(|rt| rt.syscalls_per_echo().median.is_nan()) {
        if let Some(why) = rt.syscalls_error() {
            if !said.contains(&rt.server) {
                said.push(rt.server);
                println!("({} syscalls/echo n/a: {why})", rt.server.name());
            }
        }
    }
    if let Some(why) = rounds().find_map(|r| r.idle.as_ref().err()) {
        println!("(idle B/conn n/a: {why})");
    }
    println!();
}

/// The SVG: per load, CPU per echo (its user part darker), syscalls per echo and idle memory
/// per connection, each bar the median with a whisker over the min–max.
pub fn demo_svg(loads: &[Load], a: &DemoArgs) -> String {
    let mut panels = Vec::new();
    for load in loads {
        let bars = |f: &dyn Fn(&Runtime) -> Spread, inner: &dyn Fn(&Runtime) -> f64| -> Vec<svg::Bar> {
            load.runtimes
                .iter()
                .map(|rt| {
                    let s = f(rt);
                    svg::Bar {
                        label: rt.server.name().to_string(),
                        value: s.median,
                        range: s.min.is_finite().then_some((s.min, s.max)),
                        inner: inner(rt),
                    }
                })
                .collect()
        };
        let what =
            if loads.len() > 1 { format!("{} conns, {} B: ", load.conns, load.size) } else { String::new() };
        panels.push(svg::Panel {
            title: format!("{what}Server CPU per echo (dark: user time)"),
            unit: "µs".into(),
            decimals: 2,
            bars: bars(&|rt| rt.spread(Round::cpu_us_per_echo), &|rt| {
                rt.spread(Round::user_us_per_echo).median
            }),
        });
        panels.push(svg::Panel {
            title: format!("{what}Server syscalls per echo"),
            unit: "".into(),
            decimals: 2,
            bars: bars(&Runtime::syscalls_per_echo, &|_| f64::NAN),
        });
        panels.push(svg::Panel {
            title: format!("{what}Server memory per idle connection ({} conns)", a.idle_conns),
            unit: "B".into(),
            decimals: 0,
            bars: bars(&|rt| rt.spread(Round::idle_bytes_per_conn), &|_| f64::NAN),
        });
    }
    let load = match (a.conns.as_slice(), a.size.as_slice()) {
        ([conns], [size]) => format!("{conns} conns, {size} B messages, "),
        _ => String::new(),
    };
    let title = format!(
        "echo-lab demo: {load}median and min–max of {} round{} (lower is better)",
        a.rounds,
        if a.rounds == 1 { "" } else { "s" }
    );
    svg::panels(&title, &panels)
}
