//! Horizontal bar charts, one panel per metric, as hand-written SVG text.

use std::fmt::Write;

/// One bar: a value, and optionally its range (drawn as a whisker) and a part of it (drawn
/// darker from the left). A value that is not finite (not measured) is drawn as no bar and
/// labelled "n/a".
pub struct Bar {
    /// The runtime's name, left of the bar.
    pub label: String,
    /// The bar's length.
    pub value: f64,
    /// The lowest and highest value measured: a whisker across the bar's end.
    pub range: Option<(f64, f64)>,
    /// A part of the value drawn darker (NaN: none).
    pub inner: f64,
}

impl Bar {
    /// A plain bar.
    pub fn new(label: impl Into<String>, value: f64) -> Bar {
        Bar { label: label.into(), value, range: None, inner: f64::NAN }
    }
}

/// One panel: a title, a unit, and one bar per runtime.
pub struct Panel {
    /// The panel's heading.
    pub title: String,
    /// Written after each value.
    pub unit: String,
    /// Decimals shown for each value.
    pub decimals: usize,
    /// One bar per runtime.
    pub bars: Vec<Bar>,
}

const LEFT: f64 = 110.0; // room for the labels
const BAR_MAX: f64 = 380.0;
const ROW: f64 = 34.0;
const PANEL_HEAD: f64 = 34.0;
const PANEL_GAP: f64 = 18.0;
const TOP: f64 = 40.0;
const WIDTH: f64 = LEFT + BAR_MAX + 230.0;

/// Renders the panels one below the other under `title`; each panel's bars are scaled to its
/// largest value.
pub fn panels(title: &str, panels: &[Panel]) -> String {
    let height =
        TOP + panels.iter().map(|p| PANEL_HEAD + ROW * p.bars.len() as f64 + PANEL_GAP).sum::<f64>() + 4.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" "#,
            r#"viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="14">"#
        ),
        width = WIDTH,
        height = height
    );
    let _ = writeln!(s, r#"  <rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"  <text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let mut y = TOP;
    for p in panels {
        panel(&mut s, p, y);
        y += PANEL_HEAD + ROW * p.bars.len() as f64 + PANEL_GAP;
    }
    s.push_str("</svg>\n");
    s
}

/// Writes one panel whose heading sits at `top`.
fn panel(s: &mut String, p: &Panel, top: f64) {
    let colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#9c755f"];
    let darker = ["#2b4a6f", "#a35a10", "#346430", "#9a2f31", "#3f7a75", "#74466a", "#634a3b"];
    let max = p
        .bars
        .iter()
        .flat_map(|b| [b.value, b.range.map_or(f64::NAN, |r| r.1)])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let scale = |v: f64| if max > 0.0 && v.is_finite() && v > 0.0 { v / max * BAR_MAX } else { 0.0 };
    let _ = writeln!(s, "  <g>");
    let _ = writeln!(
        s,
        r#"    <text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        top + 18.0,
        escape(&p.title)
    );
    let fmt = |v: f64| format!("{v:.prec$}", prec = p.decimals);
    for (i, bar) in p.bars.iter().enumerate() {
        let y = top + PANEL_HEAD + ROW * i as f64;
        let len = scale(bar.value);
        let _ = writeln!(
            s,
            r#"    <text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 17.0,
            escape(&bar.label)
        );
        let colour = colours[i % colours.len()];
        let _ = writeln!(s, r#"    <rect x="{LEFT}" y="{y}" width="{len:.1}" height="24" fill="{colour}"/>"#);
        if bar.inner.is_finite() {
            let inner = scale(bar.inner.min(bar.value));
            let dark = darker[i % darker.len()];
            let _ =
                writeln!(s, r#"    <rect x="{LEFT}" y="{y}" width="{inner:.1}" height="24" fill="{dark}"/>"#);
        }
        let mut end = len;
        let mut text = if bar.value.is_finite() {
            format!("{} {}", fmt(bar.value), p.unit).trim_end().to_string()
        } else {
            "n/a".to_string()
        };
        if let Some((lo, hi)) = bar.range.filter(|_| bar.value.is_finite()) {
            let (x0, x1, mid) = (LEFT + scale(lo), LEFT + scale(hi), y + 12.0);
            let _ = writeln!(
                s,
                concat!(
                    r#"    <path d="M{x0:.1} {mid} H{x1:.1} M{x0:.1} {t} V{b} M{x1:.1} {t} V{b}" "#,
                    r#"stroke="black" stroke-width="1.5" fill="none"/>"#
                ),
                x0 = x0,
                x1 = x1,
                mid = mid,
                t = y + 5.0,
                b = y + 19.0
            );
            end = end.max(scale(hi));
            text = format!("{text} ({}–{})", fmt(lo), fmt(hi));
        }
        let _ =
            writeln!(s, r#"    <text x="{:.1}" y="{}">{}</text>"#, LEFT + end + 6.0, y + 17.0, escape(&text));
    }
    let _ = writeln!(s, "  </g>");
}

/// Escapes text for SVG/XML content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
