//! A horizontal bar chart as hand-written SVG text.

use std::fmt::Write;

/// Renders one bar per `(label, value)`, scaled to the largest value, with `title` on top and
/// each value written after its bar with `unit`.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    const LEFT: f64 = 110.0; // room for the labels
    const BAR_MAX: f64 = 380.0;
    const ROW: f64 = 34.0;
    const TOP: f64 = 44.0;
    let width = LEFT + BAR_MAX + 130.0;
    let height = TOP + ROW * bars.len() as f64 + 16.0;
    let max = bars.iter().map(|(_, v)| *v).filter(|v| v.is_finite()).fold(0.0, f64::max);
    let colours = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2"];

    let mut s = String::new();
    let _ = writeln!(
        s,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" "#,
            r#"viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="14">"#
        ),
        width = width,
        height = height
    );
    let _ = writeln!(s, r#"  <rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"  <text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let len = if max > 0.0 && value.is_finite() { value / max * BAR_MAX } else { 0.0 };
        let colour = colours[i % colours.len()];
        let _ = writeln!(
            s,
            r#"  <text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 17.0,
            escape(label)
        );
        let _ = writeln!(s, r#"  <rect x="{LEFT}" y="{y}" width="{len:.1}" height="24" fill="{colour}"/>"#);
        let text = if value.is_finite() { format!("{value:.2} {unit}") } else { "n/a".to_string() };
        let _ =
            writeln!(s, r#"  <text x="{:.1}" y="{}">{}</text>"#, LEFT + len + 6.0, y + 17.0, escape(&text));
    }
    s.push_str("</svg>\n");
    s
}

/// Escapes text for SVG/XML content.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
