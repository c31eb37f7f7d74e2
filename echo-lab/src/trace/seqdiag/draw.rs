//! The rows drawn as SVG: one column per design, side by side, its lanes as vertical lines,
//! each row an arrow or a note (with the step's words as its tooltip), and a legend below.

use std::fmt::Write;

use echo::models::Model;
use echo::server::RuntimeKind;
use proactor::AioNotify;

use super::row::{Kind, Lane, Row};
use crate::trace::Traced;

/// One design's diagram: its rows, or why it could not be traced.
pub struct Diagram {
    kind: Traced,
    rows: Result<Vec<Row>, String>,
}

impl Diagram {
    /// The diagram of `rows` (read from a trace of `kind`: [`super::read::rows`]), or of the
    /// reason there is none.
    pub fn new(kind: Traced, rows: Result<Vec<Row>, String>) -> Diagram {
        Diagram { kind, rows }
    }

    /// Why this design could not be traced, if it could not.
    pub fn failed(&self) -> Option<&str> {
        self.rows.as_ref().err().map(String::as_str)
    }

    fn lanes(&self) -> &'static [Lane] {
        match self.kind {
            Traced::Runtime(RuntimeKind::Aio(_)) => {
                &[Lane::Client, Lane::Kernel, Lane::Helpers, Lane::Loop, Lane::Task]
            }
            Traced::Runtime(_) => &[Lane::Client, Lane::Kernel, Lane::Loop, Lane::Task],
            // One thread, no tasks: the loop makes every call.
            Traced::Model(_) => &[Lane::Client, Lane::Kernel, Lane::Loop],
        }
    }

    fn title(&self) -> &'static str {
        match self.kind {
            Traced::Runtime(RuntimeKind::Reactor) => "reactor: readiness (epoll)",
            Traced::Runtime(RuntimeKind::Uring) => "uring: completion (io_uring)",
            Traced::Runtime(RuntimeKind::Aio(AioNotify::Thread)) => {
                "aio-thread: completion (POSIX aio, glibc's threads)"
            }
            Traced::Runtime(RuntimeKind::Aio(AioNotify::Signal)) => {
                "aio-signal: POSIX aio, a signal per completion"
            }
            Traced::Runtime(RuntimeKind::Aio(AioNotify::Suspend)) => {
                "aio-suspend: POSIX aio, the loop in aio_suspend"
            }
            Traced::Runtime(RuntimeKind::ProactorEpoll) => "proactor-epoll: completion emulated on readiness",
            Traced::Model(Model::Select) => "select: readiness (select(2), the seed's model)",
            Traced::Model(_) => "aio-poll: readiness through Linux AIO (IOCB_CMD_POLL)",
        }
    }
}

// Layout, pixels.
const GAP: f64 = 150.0; // between lanes
const SIDE: f64 = 70.0; // from a column's edge to its first and last lane
const COLUMN_GAP: f64 = 24.0;
const TOP: f64 = 62.0; // the title above the columns
const HEAD: f64 = 58.0; // a column's title and lane names
const CHAR: f64 = 5.8; // the width of a character at 11 px (sans-serif, on average)

fn row_height(row: &Row) -> f64 {
    match row {
        Row::Phase(_) => 34.0,
        Row::Arrow { ret: Some(_), .. } => 44.0,
        Row::Arrow { sub: Some(_), .. } => 38.0,
        Row::Arrow { .. } => 26.0,
        Row::Note { .. } => 24.0,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A label centred on `x`, on a white ground so that lane lines do not cross it, kept inside
/// `[left, right]`.
fn label(s: &mut String, x: f64, y: f64, text: &str, size: f64, colour: &str, (left, right): (f64, f64)) {
    let w = text.chars().count() as f64 * CHAR * size / 11.0 + 6.0;
    let x = x.clamp(left + w / 2.0, (right - w / 2.0).max(left + w / 2.0));
    let _ = writeln!(
        s,
        r#"      <rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="white" opacity="0.85"/>"#,
        x - w / 2.0,
        y - size,
        size + 2.0
    );
    let _ = writeln!(
        s,
        r#"      <text x="{x:.1}" y="{y:.1}" text-anchor="middle" font-size="{size}" fill="{colour}">{}</text>"#,
        escape(text)
    );
}

/// Draws one design's column with its left edge at `x0`; returns its width.
fn column(s: &mut String, d: &Diagram, x0: f64, height: f64) -> f64 {
    let lanes = d.lanes();
    let width = 2.0 * SIDE + GAP * (lanes.len() - 1) as f64;
    let bounds = (x0 + 2.0, x0 + width - 2.0);
    let lane_x = |lane: Lane| x0 + SIDE + GAP * lanes.iter().position(|&l| l == lane).unwrap_or(0) as f64;
    let _ = writeln!(s, r#"  <g class="design" id="{}">"#, d.kind.name());
    let _ = writeln!(
        s,
        r##"    <rect x="{x0}" y="{TOP}" width="{width}" height="{:.1}" fill="#fafafa" stroke="#dddddd"/>"##,
        height - TOP - 8.0
    );
    let _ = writeln!(
        s,
        r#"    <text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        x0 + width / 2.0,
        TOP + 20.0,
        escape(d.title())
    );
    for &lane in lanes {
        let x = lane_x(lane);
        let _ = writeln!(s, r#"    <g class="lane" data-lane="{}">"#, lane.name());
        let _ = writeln!(
            s,
            r#"      <text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12" font-weight="bold">{}</text>"#,
            TOP + 40.0,
            lane.name()
        );
        let _ = writeln!(
            s,
            r##"      <text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#666666">{}</text>"##,
            TOP + 52.0,
            lane.subtitle(d.kind)
        );
        let _ = writeln!(
            s,
            r##"      <line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#bbbbbb" stroke-width="1.5"/>"##,
            TOP + HEAD,
            height - 12.0
        );
        let _ = writeln!(s, "    </g>");
    }
    let mut y = TOP + HEAD + 6.0;
    match &d.rows {
        Err(why) => {
            label(s, x0 + width / 2.0, y + 30.0, &format!("could not trace: {why}"), 12.0, "#b00020", bounds);
        }
        Ok(rows) => {
            for row in rows {
                draw_row(s, row, y, &lane_x, bounds);
                y += row_height(row);
            }
        }
    }
    let _ = writeln!(s, "  </g>");
    width
}

fn draw_row(s: &mut String, row: &Row, y: f64, lane_x: &dyn Fn(Lane) -> f64, bounds: (f64, f64)) {
    match row {
        Row::Phase(title) => {
            let _ = writeln!(s, r#"    <g class="phase">"#);
            let _ = writeln!(
                s,
                r##"      <line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999999" stroke-dasharray="2 3"/>"##,
                bounds.0 + 4.0,
                y + 8.0,
                bounds.1 - 4.0,
                y + 8.0
            );
            label(s, (bounds.0 + bounds.1) / 2.0, y + 24.0, title, 11.5, "#333333", bounds);
            let _ = writeln!(s, "    </g>");
        }
        Row::Note { lane, text, step } => {
            let w = text.chars().count() as f64 * CHAR + 10.0;
            let x = lane_x(*lane).clamp(bounds.0 + w / 2.0, bounds.1 - w / 2.0);
            let _ = writeln!(s, r#"    <g class="note" data-lane="{}">"#, lane.name());
            let _ = writeln!(s, "      <title>{}</title>", escape(step));
            let _ = writeln!(
                s,
                r##"      <rect x="{:.1}" y="{:.1}" width="{w:.1}" height="17" rx="3" fill="#fff8d6" stroke="#d8c77a"/>"##,
                x - w / 2.0,
                y + 2.0
            );
            let _ = writeln!(
                s,
                r##"      <text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11" font-style="italic" fill="#555555">{}</text>"##,
                y + 14.5,
                escape(text)
            );
            let _ = writeln!(s, "    </g>");
        }
        Row::Arrow { from, to, kind, label: text, sub, ret, step } => {
            let (x1, x2) = (lane_x(*from), lane_x(*to));
            let line_y = y + 17.0;
            let colour = kind.colour();
            let _ = writeln!(
                s,
                r#"    <g class="arrow {}" data-from="{}" data-to="{}">"#,
                kind.class(),
                from.name(),
                to.name()
            );
            if !step.is_empty() {
                let _ = writeln!(s, "      <title>{}</title>", escape(step));
            }
            arrow_line(s, x1, x2, line_y, colour, kind.dashed(), *kind == Kind::Data);
            // Labels clear of the arrowheads (4 px either side of the line).
            label(s, (x1 + x2) / 2.0, line_y - 6.0, text, 11.0, colour, bounds);
            if let Some(ret) = ret {
                arrow_line(s, x2, x1, line_y + 8.0, colour, true, false);
                label(s, (x1 + x2) / 2.0, line_y + 23.0, &format!("→ {ret}"), 10.0, colour, bounds);
            } else if let Some(sub) = sub {
                label(s, (x1 + x2) / 2.0, line_y + 16.0, sub, 10.0, "#555555", bounds);
            }
            let _ = writeln!(s, "    </g>");
        }
    }
}

fn arrow_line(s: &mut String, x1: f64, x2: f64, y: f64, colour: &str, dashed: bool, thick: bool) {
    let dir = if x2 > x1 { 1.0 } else { -1.0 };
    let tip = x2 - dir * 2.0;
    let dash = if dashed { r#" stroke-dasharray="5 3""# } else { "" };
    let width = if thick { 2.2 } else { 1.4 };
    let _ = writeln!(
        s,
        r#"      <line x1="{x1:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="{width}"{dash}/>"#,
        tip - dir * 6.0
    );
    let _ = writeln!(
        s,
        r#"      <path d="M{tip:.1} {y:.1} L{:.1} {:.1} L{:.1} {:.1} Z" fill="{colour}"/>"#,
        tip - dir * 9.0,
        y - 4.0,
        tip - dir * 9.0,
        y + 4.0
    );
}

/// The legend's entries.
const LEGEND: [(Kind, &str); 10] = [
    (Kind::Data, "bytes on the wire"),
    (Kind::Syscall, "system call"),
    (Kind::Return, "returns (a wait ends, a result)"),
    (Kind::Event, "readiness event (epoll)"),
    (Kind::Sqe, "SQE written into the ring"),
    (Kind::Cqe, "CQE read from the ring"),
    (Kind::Request, "request handed to a helper thread"),
    (Kind::Done, "request done (aio)"),
    (Kind::Wake, "wake a task"),
    (Kind::Poll, "poll a task / it returns"),
];

/// The whole picture: one column per design, side by side, and a legend below.
pub fn svg(diagrams: &[Diagram]) -> String {
    let rows_height =
        |d: &Diagram| d.rows.as_ref().map_or(80.0, |rows| rows.iter().map(row_height).sum::<f64>());
    let body = diagrams.iter().map(rows_height).fold(0.0, f64::max);
    let columns_bottom = TOP + HEAD + 6.0 + body + 20.0;
    let width = 16.0
        + diagrams.iter().map(|d| 2.0 * SIDE + GAP * (d.lanes().len() - 1) as f64 + COLUMN_GAP).sum::<f64>()
        - COLUMN_GAP
        + 16.0;
    let legend_rows = LEGEND.len().div_ceil(5) as f64;
    let height = columns_bottom + 20.0 + legend_rows * 22.0 + 30.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" "#,
            r#"viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11">"#
        ),
        w = width,
        h = height
    );
    let _ = writeln!(s, r#"  <rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"  <text x="{:.1}" y="26" text-anchor="middle" font-size="18" font-weight="bold">One connection and one echo, step by step: readiness vs completion</text>"#,
        width / 2.0
    );
    let _ = writeln!(
        s,
        r##"  <text x="{:.1}" y="46" text-anchor="middle" font-size="12" fill="#555555">drawn from the trace steps of one run (echo-lab trace --svg); each arrow is a step the runtime recorded (hover for its words), the client's arrows are the test client's own calls</text>"##,
        width / 2.0
    );
    let mut x = 16.0;
    for d in diagrams {
        x += column(&mut s, d, x, columns_bottom) + COLUMN_GAP;
    }
    // The legend.
    let mut y = columns_bottom + 26.0;
    let _ = writeln!(s, r#"  <g class="legend">"#);
    for chunk in LEGEND.chunks(5) {
        let mut lx = 40.0;
        for (kind, what) in chunk {
            arrow_line(&mut s, lx, lx + 40.0, y - 4.0, kind.colour(), kind.dashed(), *kind == Kind::Data);
            let _ = writeln!(
                s,
                r#"    <text x="{:.1}" y="{y:.1}" font-size="12">{}</text>"#,
                lx + 48.0,
                escape(what)
            );
            lx += (width - 80.0) / 5.0;
        }
        y += 22.0;
    }
    let _ = writeln!(s, "  </g>");
    s.push_str("</svg>\n");
    s
}
