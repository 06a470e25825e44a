//! `--plot FILE.svg`: time to first audio over the run, and its percentile
//! curve.

use plotters::prelude::*;

use crate::stats::Report;

/// Why the plot could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("plot: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// Draws the two charts side by side into an SVG file.
pub fn svg(report: &Report, path: &std::path::Path) -> Result<(), PlotError> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(600);

    let max_t = report.timeline.iter().map(|p| p[0]).fold(1.0, f64::max);
    let max_ms = report.timeline.iter().map(|p| p[1]).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("Time to first audio over the run", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..max_t, 0.0..max_ms)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            report
                .timeline
                .iter()
                .map(|p| Circle::new((p[0], p[1]), 2, BLUE.filled())),
        )
        .map_err(err)?;

    let curve_max = report.ttfa_curve.iter().map(|p| p[1]).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .caption("Time to first audio by percentile", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..100.0, 0.0..curve_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            report.ttfa_curve.iter().map(|p| (p[0], p[1])),
            RED.stroke_width(2),
        ))
        .map_err(err)?;
    chart
        .draw_series(
            report
                .ttfa_curve
                .iter()
                .map(|p| Circle::new((p[0], p[1]), 3, RED.filled())),
        )
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
