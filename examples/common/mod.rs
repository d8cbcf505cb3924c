//! Helpers shared by the examples: argument parsing and line plots (PNG via plotters, with the DejaVu
//! Sans font shipped in `data/fonts` so that no system font library is needed).

#![allow(dead_code)]

use std::path::PathBuf;

use plotters::prelude::*;

/// The DejaVu Sans font (Bitstream Vera license, see data/fonts/DejaVuSans-LICENSE.txt).
static FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans.ttf");

/// Registers the shipped font as "sans-serif" (idempotent).
pub fn init_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the shipped font data/fonts/DejaVuSans.ttf is valid"));
    });
}

/// The value of `--out DIR`, or `default`; the directory is created.
pub fn out_dir(default: &str) -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// One named series of (x, y) points.
pub struct Series<'a> {
    pub label: &'a str,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

/// The smallest and largest x and y over the points of `series` that pass `keep`.
fn bounds(series: &[Series], keep: impl Fn(&(f64, f64)) -> bool) -> (f64, f64, f64, f64) {
    let mut b = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| keep(p))
    {
        b = (b.0.min(x), b.1.max(x), b.2.min(y), b.3.max(y));
    }
    b
}

/// Draws the series as lines on one chart and writes a PNG.
pub fn line_plot(
    path: &std::path::Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    init_fonts();
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1, y0, y1) = bounds(series, |_| true);
    let pad = 0.05 * (y1 - y0).max(1e-12);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Draws the series as lines with markers on log–log axes and writes a PNG.
pub fn loglog_plot(
    path: &std::path::Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    init_fonts();
    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1, y0, y1) = bounds(series, |p| p.0 > 0.0 && p.1 > 0.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x0 / 1.3..x1 * 1.3).log_scale(),
            (y0 / 3.0..y1 * 3.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for s in series {
        let color = s.color;
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0 > 0.0 && p.1 > 0.0)
            .collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Five distinguishable colours for the methods.
pub const PALETTE: [RGBColor; 5] = [
    RGBColor(25, 90, 200),
    RGBColor(200, 40, 40),
    RGBColor(30, 150, 60),
    RGBColor(150, 60, 170),
    RGBColor(230, 140, 20),
];

/// Median wall time (seconds) of `repeats` runs of `f`.
pub fn median_time<F: FnMut()>(mut f: F, repeats: usize) -> f64 {
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median wall time (seconds) of runs of `f`: at least `min_runs`, and more until `min_seconds` have
/// passed (at most 1001 runs).
pub fn median_time_for<F: FnMut()>(mut f: F, min_runs: usize, min_seconds: f64) -> f64 {
    let start = std::time::Instant::now();
    let mut times = Vec::new();
    while times.len() < min_runs.max(1)
        || (start.elapsed().as_secs_f64() < min_seconds && times.len() < 1001)
    {
        let t = std::time::Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median wall times (seconds) of several computations run in turn (a, b, c, a, b, c, …), so that all
/// see the same machine conditions: at least `min_runs` rounds, more until `min_seconds` have passed
/// (at most 1001 rounds).
pub fn median_times_interleaved(
    fs: &mut [&mut dyn FnMut()],
    min_runs: usize,
    min_seconds: f64,
) -> Vec<f64> {
    let start = std::time::Instant::now();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); fs.len()];
    let mut rounds = 0;
    while rounds < min_runs.max(1) || (start.elapsed().as_secs_f64() < min_seconds && rounds < 1001)
    {
        for (f, t) in fs.iter_mut().zip(times.iter_mut()) {
            let s = std::time::Instant::now();
            f();
            t.push(s.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

/// Draws the series as lines with markers on a linear x and a logarithmic y axis and writes a PNG.
pub fn semilogy_plot(
    path: &std::path::Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    init_fonts();
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (x0, x1, y0, y1) = bounds(series, |p| p.1 > 0.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 / 2.0..y1 * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    for s in series {
        let color = s.color;
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1 > 0.0).collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}
