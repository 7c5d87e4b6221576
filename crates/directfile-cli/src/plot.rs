//! An SVG with two panels: the latency CDF per backend (log latency axis) and IOPS over time.
//! Written by hand: a few hundred elements do not need a plotting crate.

use std::fmt::Write as _;

use crate::bench::stats::{Measurement, TIMELINE_INTERVAL};
use crate::units::format_bytes;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 400.0;
const MARGIN_LEFT: f64 = 90.0;
const MARGIN_RIGHT: f64 = 210.0;
const MARGIN_TOP: f64 = 60.0;
const MARGIN_BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A rectangle in SVG coordinates for the inside of one panel's axes.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Frame {
    fn for_panel(index: usize) -> Frame {
        Frame {
            left: MARGIN_LEFT,
            top: index as f64 * PANEL_HEIGHT + MARGIN_TOP,
            width: WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
            height: PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM,
        }
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }

    fn right(&self) -> f64 {
        self.left + self.width
    }
}

/// Renders the SVG document for `measurements` (one per backend).
pub fn render(measurements: &[Measurement]) -> String {
    let mut svg = String::new();
    let height = PANEL_HEIGHT * 2.0;
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let workload = measurements
        .first()
        .map(|m| {
            format!(
                "{} {} QD{}{}",
                m.workload.rw,
                format_bytes(m.workload.bs_bytes),
                m.workload.qd,
                if m.workload.dsync { " O_DSYNC" } else { "" }
            )
        })
        .unwrap_or_default();
    latency_panel(&mut svg, measurements, &workload);
    iops_panel(&mut svg, measurements, &workload);
    svg.push_str("</svg>\n");
    svg
}

/// One curve of a latency CDF panel.
pub struct CdfSeries<'a> {
    /// Legend name.
    pub name: &'a str,
    /// (latency in µs, fraction within it), ascending.
    pub cdf: &'a [(f64, f64)],
    /// The median shown in the legend, in µs.
    pub p50_us: f64,
}

/// Renders a one-panel SVG: the latency CDF of each series (log latency axis).
pub fn render_cdf(title_text: &str, y_label: &str, series: &[CdfSeries<'_>]) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{PANEL_HEIGHT}" viewBox="0 0 {WIDTH} {PANEL_HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{PANEL_HEIGHT}" fill="white"/>"#
    );
    cdf_panel(&mut svg, series, title_text, y_label);
    svg.push_str("</svg>\n");
    svg
}

fn latency_panel(svg: &mut String, measurements: &[Measurement], workload: &str) {
    let series: Vec<CdfSeries<'_>> = measurements
        .iter()
        .map(|m| CdfSeries {
            name: &m.backend,
            cdf: &m.latency_cdf,
            p50_us: m.lat_us_p50,
        })
        .collect();
    cdf_panel(
        svg,
        &series,
        &format!("Latency distribution (CDF), {workload}"),
        "ops completed within latency",
    );
}

fn cdf_panel(svg: &mut String, series: &[CdfSeries<'_>], title_text: &str, y_label: &str) {
    let frame = Frame::for_panel(0);
    let values = series
        .iter()
        .flat_map(|m| m.cdf.iter().map(|point| point.0))
        .filter(|&us| us > 0.0 && us.is_finite());
    let (low, high) = values.fold((f64::INFINITY, 0.0f64), |(low, high), us| {
        (low.min(us), high.max(us))
    });
    let (decade_low, decade_high) = if high > 0.0 {
        let low = low.log10().floor();
        let high = high.log10().ceil();
        (low, if high > low { high } else { low + 1.0 })
    } else {
        (0.0, 3.0)
    };
    let x_of = |us: f64| {
        let position = (us.max(1e-9).log10() - decade_low) / (decade_high - decade_low);
        frame.left + position.clamp(0.0, 1.0) * frame.width
    };
    let y_of = |fraction: f64| frame.bottom() - fraction.clamp(0.0, 1.0) * frame.height;

    title(svg, &frame, title_text);
    // Y grid: every 10 %.
    for step in 0..=10 {
        let fraction = step as f64 / 10.0;
        let y = y_of(fraction);
        grid_line(svg, frame.left, y, frame.right(), y);
        tick_label_left(svg, &frame, y, &format!("{}%", step * 10));
    }
    // X grid: decades, with 2x and 5x minor lines.
    let mut decade = decade_low;
    while decade <= decade_high + 1e-9 {
        let base = 10f64.powf(decade);
        let x = x_of(base);
        grid_line(svg, x, frame.top, x, frame.bottom());
        tick_label_below(svg, &frame, x, &format_latency_us(base));
        if decade < decade_high {
            for multiple in [2.0, 5.0] {
                let x = x_of(base * multiple);
                let _ = writeln!(
                    svg,
                    r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eeeeee"/>"##,
                    frame.top,
                    frame.bottom()
                );
            }
        }
        decade += 1.0;
    }
    axes(svg, &frame, "latency (log scale)", y_label);
    for (index, measurement) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<String> = measurement
            .cdf
            .iter()
            .filter(|point| point.0.is_finite())
            .map(|&(us, fraction)| format!("{:.1},{:.1}", x_of(us), y_of(fraction)))
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
        let note = format!("p50 {}", format_latency_us(measurement.p50_us));
        legend_entry(svg, &frame, index, color, measurement.name, &note);
    }
}

fn iops_panel(svg: &mut String, measurements: &[Measurement], workload: &str) {
    let frame = Frame::for_panel(1);
    let interval_s = TIMELINE_INTERVAL.as_secs_f64();
    let longest = measurements
        .iter()
        .map(|m| m.iops_timeline.len())
        .max()
        .unwrap_or(0);
    let duration_s = (longest as f64 * interval_s).max(interval_s);
    let peak = measurements
        .iter()
        .flat_map(|m| m.iops_timeline.iter().copied())
        .fold(0.0f64, f64::max);
    let (y_step, y_max) = nice_axis(if peak > 0.0 { peak * 1.05 } else { 1.0 });
    let (x_step, x_max) = nice_axis(duration_s);
    let x_of = |seconds: f64| frame.left + (seconds / x_max).clamp(0.0, 1.0) * frame.width;
    let y_of = |iops: f64| frame.bottom() - (iops / y_max).clamp(0.0, 1.0) * frame.height;

    title(
        svg,
        &frame,
        &format!(
            "IOPS over time ({} ms buckets), {workload}",
            TIMELINE_INTERVAL.as_millis()
        ),
    );
    let mut tick = 0.0;
    while tick <= y_max + y_step * 1e-6 {
        let y = y_of(tick);
        grid_line(svg, frame.left, y, frame.right(), y);
        tick_label_left(svg, &frame, y, &format_si(tick));
        tick += y_step;
    }
    let mut tick = 0.0;
    while tick <= x_max + x_step * 1e-6 {
        let x = x_of(tick);
        grid_line(svg, x, frame.top, x, frame.bottom());
        tick_label_below(svg, &frame, x, &format!("{} s", trim_number(tick)));
        tick += x_step;
    }
    axes(svg, &frame, "time since start (s)", "IOPS (ops/s)");
    for (index, measurement) in measurements.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        if !measurement.iops_timeline.is_empty() {
            // Each bucket is drawn at its midpoint.
            let points: Vec<String> = measurement
                .iops_timeline
                .iter()
                .enumerate()
                .map(|(bucket, &iops)| {
                    let seconds = (bucket as f64 + 0.5) * interval_s;
                    format!("{:.1},{:.1}", x_of(seconds), y_of(iops))
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
        }
        let note = if measurement.iops_timeline.is_empty() {
            format!("{} IOPS, no timeline", format_si(measurement.iops))
        } else {
            format!("{} IOPS", format_si(measurement.iops))
        };
        legend_entry(svg, &frame, index, color, &measurement.backend, &note);
    }
}

fn title(svg: &mut String, frame: &Frame, text: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        frame.left + frame.width / 2.0,
        frame.top - 22.0,
        escape(text)
    );
}

fn grid_line(svg: &mut String, x1: f64, y1: f64, x2: f64, y2: f64) {
    let _ = writeln!(
        svg,
        r##"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="#dddddd"/>"##
    );
}

fn tick_label_left(svg: &mut String, frame: &Frame, y: f64, text: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        frame.left - 8.0,
        y + 4.0,
        escape(text)
    );
}

fn tick_label_below(svg: &mut String, frame: &Frame, x: f64, text: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        frame.bottom() + 18.0,
        escape(text)
    );
}

fn axes(svg: &mut String, frame: &Frame, x_label: &str, y_label: &str) {
    let _ = writeln!(
        svg,
        r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        frame.left, frame.top, frame.width, frame.height
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        frame.left + frame.width / 2.0,
        frame.bottom() + 42.0,
        escape(x_label)
    );
    let (x, y) = (frame.left - 62.0, frame.top + frame.height / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"#,
        escape(y_label)
    );
}

fn legend_entry(
    svg: &mut String,
    frame: &Frame,
    index: usize,
    color: &str,
    name: &str,
    note: &str,
) {
    let x = frame.right() + 16.0;
    let y = frame.top + 10.0 + index as f64 * 40.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/>"#,
        x + 24.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-weight="bold">{}</text>"#,
        x + 30.0,
        y + 4.0,
        escape(name)
    );
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555555">{}</text>"##,
        x + 30.0,
        y + 19.0,
        escape(note)
    );
}

/// A tick step of 1, 2 or 5 x 10^k giving about 5-8 ticks, and the axis end (a multiple of it).
fn nice_axis(max: f64) -> (f64, f64) {
    let rough = max / 6.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|multiple| multiple * magnitude)
        .find(|&step| step >= rough)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

fn format_latency_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim_number(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim_number(us / 1e3))
    } else {
        format!("{} µs", trim_number(us))
    }
}

fn format_si(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", trim_number(value / 1e6))
    } else if value >= 1e3 {
        format!("{}k", trim_number(value / 1e3))
    } else {
        trim_number(value)
    }
}

fn trim_number(value: f64) -> String {
    // Three significant digits are plenty on a plot: 335 µs, 52.5k, 1.25 ms.
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if !text.contains('.') {
        return text;
    }
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Rw;
    use crate::bench::stats::WorkloadLabel;

    fn measurement(backend: &str, scale: f64, timeline: bool) -> Measurement {
        Measurement {
            backend: backend.to_string(),
            workload: WorkloadLabel {
                rw: Rw::Randwrite,
                bs_bytes: 4096,
                qd: 32,
                dsync: false,
            },
            runtime_s: 1.0,
            ops: 1000,
            iops: 1000.0 * scale,
            bw_bytes_per_s: 4096000.0,
            lat_us_p50: 80.0 * scale,
            lat_us_p99: 200.0,
            lat_us_p999: 400.0,
            lat_us_max: 900.0,
            allocs_per_op: Some(0.0),
            cpu_usr_s: 0.1,
            cpu_sys_s: 0.2,
            latency_cdf: vec![
                (20.0, 0.0),
                (80.0 * scale, 0.5),
                (200.0, 0.99),
                (900.0, 1.0),
            ],
            iops_timeline: if timeline {
                vec![900.0, 1000.0, 1100.0]
            } else {
                Vec::new()
            },
        }
    }

    /// Checks that every element is closed in order (a small well-formedness check).
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "nested '<' in {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.trim()),
                    "mismatched </{name}>"
                );
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    #[test]
    fn svg_is_well_formed_with_labels_and_one_curve_per_backend() {
        let svg = render(&[
            measurement("uring", 1.0, true),
            measurement("fio", 1.2, false),
        ]);
        assert_well_formed(&svg);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        for label in [
            "latency (log scale)",
            "ops completed within latency",
            "time since start (s)",
            "IOPS (ops/s)",
            "100 µs",
            "50%",
            "uring",
            "fio",
            "randwrite 4 KiB QD32",
        ] {
            assert!(svg.contains(label), "missing {label}");
        }
        // Two CDF curves and one timeline (fio has none).
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_input_still_renders() {
        let svg = render(&[]);
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(10.0), (2.0, 10.0));
        assert_eq!(nice_axis(5.0), (1.0, 5.0));
        assert_eq!(nice_axis(123_000.0), (50_000.0, 150_000.0));
        assert_eq!(format_latency_us(1000.0), "1 ms");
        assert_eq!(format_latency_us(10.0), "10 µs");
        assert_eq!(format_si(52_500.0), "52.5k");
    }
}
