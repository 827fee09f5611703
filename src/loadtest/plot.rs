//! `--plot DIR`: one SVG chart per measurement, its p50, p90, p99 and max over the run.
//!
//! Samples are grouped into time windows (about 50 per run, 100 ms to 10 s each) by when
//! they were taken; each window's percentiles come from its own histogram. Charts are SVG
//! written by plotters' SVG backend, which emits text as SVG `<text>` and so needs no font
//! files or system libraries.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::record::{Collected, Metric, Sample};
use super::report::Percentiles;

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 540);

/// Writes `DIR/<metric>.svg` for every measurement that has samples; returns the files.
///
/// # Errors
///
/// A message naming the file or directory that could not be written.
pub fn write_charts(dir: &Path, collected: &Collected) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for metric in Metric::ALL {
        let samples = collected.samples(metric);
        if samples.is_empty() {
            continue;
        }
        let path = dir.join(format!("{}.svg", metric.name()));
        chart(&path, metric, samples).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// One window's percentiles: its middle in seconds since the start, and the values.
fn windows(samples: &[Sample]) -> Vec<(f64, Percentiles)> {
    let last = samples.iter().map(|s| s.at_ms).max().unwrap_or(0);
    let width = (last / 50).clamp(100, 10_000);
    let mut buckets: Vec<Vec<Sample>> =
        vec![Vec::new(); usize::try_from(last / width + 1).unwrap_or(1)];
    for s in samples {
        if let Some(bucket) = usize::try_from(s.at_ms / width)
            .ok()
            .and_then(|i| buckets.get_mut(i))
        {
            bucket.push(*s);
        }
    }
    buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| !b.is_empty())
        .map(|(i, b)| {
            let middle = (i as f64 + 0.5) * width as f64 / 1000.0;
            (middle, Percentiles::of(b, 2))
        })
        .collect()
}

/// One line of a chart: its legend, colour, and the value it takes from a window.
type Line = (&'static str, RGBColor, fn(&Percentiles) -> f64);

fn chart(path: &Path, metric: Metric, samples: &[Sample]) -> Result<(), String> {
    let points = windows(samples);
    let x_max = points.last().map_or(1.0, |(x, _)| x * 1.05).max(0.2);
    let y_max = points
        .iter()
        .map(|(_, p)| p.max)
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} latency over time", metric.label()),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("milliseconds")
        .draw()
        .map_err(|e| e.to_string())?;
    let series: [Line; 4] = [
        // Largest first, so a line hidden under an equal one is the less telling one.
        ("max", RED, |p| p.max),
        ("p99", RGBColor(230, 120, 0), |p| p.p99),
        ("p90", GREEN, |p| p.p90),
        ("p50", BLUE, |p| p.p50),
    ];
    for (label, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, p)| (*x, value(p))),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
