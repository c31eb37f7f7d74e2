//! Horizontal bar charts, one panel per metric, as hand-written SVG text.

use std::fmt::Write;

/// One panel: a title, a unit, and one `(label, value)` bar per runtime. A value that is not
/// finite (not measured) is drawn as no bar and labelled "n/a".
pub struct Panel {
    /// The panel's heading.
    pub title: String,
    /// Written after each value.
    pub unit: String,
    /// Decimals shown for each value.
    pub decimals: usize,
    /// One bar per runtime.
    pub bars: Vec<(String, f64)>,
}

const LEFT: f64 = 110.0; // room for the labels
const BAR_MAX: f64 = 380.0;
const ROW: f64 = 34.0;
const PANEL_HEAD: f64 = 34.0;
const PANEL_GAP: f64 = 18.0;
const TOP: f64 = 40.0;
const WIDTH: f64 = LEFT + BAR_MAX + 150.0;

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
    let colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"];
    let max = p.bars.iter().map(|(_, v)| *v).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let _ = writeln!(s, "  <g>");
    let _ = writeln!(
        s,
        r#"    <text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        top + 18.0,
        escape(&p.title)
    );
    for (i, (label, value)) in p.bars.iter().enumerate() {
        let y = top + PANEL_HEAD + ROW * i as f64;
        let len = if max > 0.0 && value.is_finite() && *value > 0.0 { value / max * BAR_MAX } else { 0.0 };
        let colour = colours[i % colours.len()];
        let _ = writeln!(
            s,
            r#"    <text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 17.0,
            escape(label)
        );
        let _ = writeln!(s, r#"    <rect x="{LEFT}" y="{y}" width="{len:.1}" height="24" fill="{colour}"/>"#);
        let text = if value.is_finite() {
            format!("{value:.prec$} {}", p.unit, prec = p.decimals).trim_end().to_string()
        } else {
            "n/a".to_string()
        };
        let _ =
            writeln!(s, r#"    <text x="{:.1}" y="{}">{}</text>"#, LEFT + len + 6.0, y + 17.0, escape(&text));
    }
    let _ = writeln!(s, "  </g>");
}

/// Escapes text for SVG/XML content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
