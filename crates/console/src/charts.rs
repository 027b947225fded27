//! Charts drawn on the server as SVG with plotters: stacked bars per day and a line. The
//! SVG is inline in the page (no script, nothing fetched), scales with its container, and
//! carries a label for screen readers; each chart's numbers are also in a table on its page.

use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord};
use plotters::coord::types::{RangedCoordf64, RangedCoordusize};
use plotters::coord::Shift;
use plotters::prelude::*;

const SIZE: (u32, u32) = (760, 300);

/// One stacked part of each bar.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub values: Vec<f64>,
}

/// The palette: distinguishable for the common colour-vision deficiencies (Okabe–Ito).
pub const BLUE: RGBColor = RGBColor(0, 114, 178);
pub const ORANGE: RGBColor = RGBColor(230, 159, 0);
pub const GREEN: RGBColor = RGBColor(0, 158, 115);

/// Bars per label (a day), each stacked from `series` bottom to top.
pub fn stacked_bars(label: &str, x_labels: &[String], series: &[Series<'_>], y_desc: &str) -> String {
    let mut svg = String::new();
    let drawn = draw_bars(&mut svg, x_labels, series, y_desc);
    finish(svg, drawn, label)
}

/// A line over the labels, `values` in percent (None: no point that day).
pub fn percent_line(label: &str, x_labels: &[String], values: &[Option<f64>], y_desc: &str) -> String {
    let mut svg = String::new();
    let drawn = draw_line(&mut svg, x_labels, values, y_desc);
    finish(svg, drawn, label)
}

type Drawn = Result<(), String>;

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<SegmentedCoord<RangedCoordusize>, RangedCoordf64>>;

/// The frame both kinds share: a slot per label, a value axis from 0 to `y_top`, the mesh.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    x_labels: &[String],
    y_top: f64,
    y_desc: &str,
    y_format: &dyn Fn(&f64) -> String,
) -> Result<Chart<'a, 'b>, String> {
    let n = x_labels.len().max(1);
    root.fill(&WHITE).map_err(text)?;
    let mut chart = ChartBuilder::on(root)
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(72)
        .build_cartesian_2d((0..n).into_segmented(), 0.0..y_top)
        .map_err(text)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n.min(10))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => x_labels.get(*i).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .y_desc(y_desc)
        .y_label_formatter(y_format)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(text)?;
    Ok(chart)
}

fn draw_bars(svg: &mut String, x_labels: &[String], series: &[Series<'_>], y_desc: &str) -> Drawn {
    let n = x_labels.len().max(1);
    let top =
        (0..n).map(|i| series.iter().map(|s| s.values.get(i).copied().unwrap_or(0.0)).sum::<f64>()).fold(0.0, f64::max);
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    let mut chart = frame(&root, x_labels, nice_top(top), y_desc, &|v| short(*v))?;
    let mut base = vec![0.0; n];
    for s in series {
        let color = s.color;
        let bars: Vec<_> = (0..n)
            .map(|i| {
                let value = s.values.get(i).copied().unwrap_or(0.0);
                let from = base[i];
                base[i] += value;
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), from), (SegmentValue::Exact(i + 1), from + value)],
                    color.filled(),
                );
                bar.set_margin(0, 0, 4, 4);
                bar
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(text)?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(text)?;
    root.present().map_err(text)
}

fn draw_line(svg: &mut String, x_labels: &[String], values: &[Option<f64>], y_desc: &str) -> Drawn {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    let mut chart = frame(&root, x_labels, 100.0, y_desc, &|v| format!("{v:.0} %"))?;
    let points: Vec<(SegmentValue<usize>, f64)> =
        values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (SegmentValue::CenterOf(i), v))).collect();
    chart.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2))).map_err(text)?;
    chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, BLUE.filled()))).map_err(text)?;
    root.present().map_err(text)
}

/// The SVG with a label for assistive technology and a size that follows its container.
fn finish(svg: String, drawn: Drawn, label: &str) -> String {
    if let Err(e) = drawn {
        tracing::error!(error = %e, chart = label, "cannot draw a chart");
        return String::new();
    }
    let label = minijinja::HtmlEscape(label).to_string();
    svg.replacen("<svg ", &format!("<svg role=\"img\" aria-label=\"{label}\" class=\"chart\" "), 1)
}

/// A round number a little above `top`, so the tallest bar does not touch the frame.
fn nice_top(top: f64) -> f64 {
    if top <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(top.log10().floor());
    let steps = [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];
    steps.iter().map(|s| s * magnitude).find(|v| *v >= top * 1.05).unwrap_or(10.0 * magnitude)
}

/// 1234 → "1.2k", 0.00042 → "0.00042".
fn short(v: f64) -> String {
    let abs = v.abs();
    if abs >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if abs >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if abs >= 1.0 || abs == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').to_owned()
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_lines_are_labelled_svg() {
        let labels = vec!["12-01".to_owned(), "12-02".to_owned()];
        let series = [
            Series { name: "input", color: BLUE, values: vec![10.0, 20.0] },
            Series { name: "cached", color: GREEN, values: vec![5.0, 0.0] },
        ];
        let svg = stacked_bars("tokens per day", &labels, &series, "tokens");
        assert!(svg.starts_with("<svg role=\"img\" aria-label=\"tokens per day\""), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("12-02") && svg.contains("cached"));
        let line = percent_line("hit rate", &labels, &[Some(50.0), None], "%");
        assert!(line.contains("<polyline") || line.contains("<path"), "{line}");
        assert_eq!(nice_top(95.0), 100.0);
        assert_eq!(short(1500.0), "1.5k");
    }
}
