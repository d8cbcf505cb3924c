//! The double pendulum's flip-time map, with the gradient of the flip time.
//!
//! For the benchmark pendulum (l1 = l2 = m1 = m2 = 1, g = 9.80665) released at rest from
//! (θ1(0), θ2(0)) on an n × n grid over [−3, 3]², the time t* until either arm first flips over the
//! top (|θ_k| crosses π: [`DoublePendulumFlip`], a stop event per arm) and its gradient
//! (∂t*/∂θ1(0), ∂t*/∂θ2(0)) by forward sensitivities through the event (the implicit-function
//! theorem on the located root). Points whose energy cannot lift an arm over the top
//! (2 cos θ1 + cos θ2 > 1) are not integrated; the others up to t = 10 s (about 31 √(l/g)).
//! The grid runs in parallel (rayon), once on one thread and once on all, and the speed-up is
//! reported. One point's gradient is checked against central differences of the flip time and
//! against the discrete adjoint of G = t* ([`EventTime::first`], through the stop event).
//!
//! Writes `flip_map.png` (the flip time and |∇t*| side by side, log colour scales) and
//! `flip_map.json` into `out/flip_map/` (`--out DIR`); `--n N` sets the grid (default 200).
//!
//! Run: `cargo run --release --example flip_map [-- --n 200 --out DIR]`.

mod common;

use std::time::Instant;

use ndarray::Array2;
use odesens::models::{DoublePendulum, DoublePendulumFlip};
use odesens::prelude::*;
use odesens::sensitivity::{
    Checkpointing, Directions, EventTime, ForwardSettings, SensitivityAlgorithm,
    forward_sensitivities, gradient,
};
use plotters::prelude::*;
use rayon::prelude::*;
use serde_json::json;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The time limit of each solve.
const T_MAX: f64 = 10.0;
/// The square of initial angles.
const RANGE: f64 = 3.0;

/// The benchmark pendulum released at rest from (θ1, θ2), on [0, T_MAX].
fn released_at(theta1: f64, theta2: f64) -> Res<OdeProblem<DoublePendulumFlip>> {
    Ok(OdeProblem::new(
        DoublePendulumFlip,
        vec![theta1, theta2, 0.0, 0.0],
        DoublePendulum::bench_params(),
        (0.0, T_MAX),
    )?)
}

/// The flip time and its gradient with respect to (θ1(0), θ2(0)), or `None` when the pendulum cannot
/// (by energy) or does not (by T_MAX) flip.
fn flip(theta1: f64, theta2: f64, options: &SolverOptions) -> Res<Option<(f64, [f64; 2])>> {
    if 2.0 * theta1.cos() + theta2.cos() > 1.0 {
        return Ok(None);
    }
    let problem = released_at(theta1, theta2)?;
    let directions = Directions::Custom {
        du0: Array2::from_shape_fn((4, 2), |(i, j)| f64::from(u8::from(i == j))),
        dp: Array2::zeros((5, 2)),
    };
    let sens = forward_sensitivities(
        &problem,
        options,
        &directions,
        &[],
        ForwardSettings::default(),
    )?;
    Ok(sens.event_times.first().map(|&t| {
        let g = &sens.event_time_sensitivities;
        (t, [g[[0, 0]], g[[0, 1]]])
    }))
}

/// The flip time alone, by a plain solve (for central differences).
fn flip_time(theta1: f64, theta2: f64, options: &SolverOptions) -> Res<f64> {
    let problem = released_at(theta1, theta2)?;
    let sol = solve(&problem, &options.clone().save_end_only())?;
    sol.events
        .first()
        .map(|hit| hit.t)
        .ok_or_else(|| "no flip".into())
}

type Grid = Vec<Option<(f64, [f64; 2])>>;

/// The map on an n × n grid, row by row (θ2 down the rows, θ1 along them), in `threads` threads.
fn grid(n: usize, options: &SolverOptions, threads: usize) -> Res<(Grid, f64)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let angle = |k: usize| -RANGE + 2.0 * RANGE * (k as f64 + 0.5) / n as f64;
    let start = Instant::now();
    let cells: Result<Grid, String> = pool.install(|| {
        (0..n * n)
            .into_par_iter()
            .map(|idx| flip(angle(idx % n), angle(idx / n), options).map_err(|e| e.to_string()))
            .collect()
    });
    Ok((cells?, start.elapsed().as_secs_f64()))
}

/// A blue–green–yellow–red ramp for x in [0, 1].
fn ramp(x: f64) -> RGBColor {
    let x = x.clamp(0.0, 1.0);
    let hue = (1.0 - x) * 0.66;
    let c = HSLColor(hue, 0.85, 0.5).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// One panel: `value` per cell on a log scale between its finite extremes; cells without a value grey.
fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    n: usize,
    title: &str,
    value: impl Fn(usize) -> Option<f64>,
) -> Res<()> {
    let logs: Vec<Option<f64>> = (0..n * n)
        .map(|i| {
            value(i)
                .filter(|v| *v > 0.0 && v.is_finite())
                .map(f64::log10)
        })
        .collect();
    let (lo, hi) = logs
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{title} (log10, {lo:.1} blue … {hi:.1} red)"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-RANGE..RANGE, -RANGE..RANGE)?;
    chart
        .configure_mesh()
        .x_desc("θ1(0)")
        .y_desc("θ2(0)")
        .disable_mesh()
        .draw()?;
    let w = 2.0 * RANGE / n as f64;
    chart.draw_series((0..n * n).map(|i| {
        let (x, y) = (-RANGE + w * (i % n) as f64, -RANGE + w * (i / n) as f64);
        let color = match logs[i] {
            Some(v) => ramp((v - lo) / (hi - lo).max(1e-12)),
            None => RGBColor(225, 225, 225),
        };
        Rectangle::new([(x, y), (x + w, y + w)], color.filled())
    }))?;
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let out = common::out_dir("out/flip_map");
    let options = SolverOptions::default().tol(1e-8);

    let threads = rayon::current_num_threads();
    let (cells, seconds_all) = grid(n, &options, threads)?;
    let (cells_one, seconds_one) = grid(n, &options, 1)?;
    if cells != cells_one {
        return Err("the map differs between 1 and several threads".into());
    }
    let integrated = (0..n * n)
        .filter(|&i| {
            let angle = |k: usize| -RANGE + 2.0 * RANGE * (k as f64 + 0.5) / n as f64;
            2.0 * angle(i % n).cos() + angle(i / n).cos() <= 1.0
        })
        .count();
    let flipped = cells.iter().flatten().count();
    println!(
        "{n} × {n} grid: {integrated} points integrated (the rest cannot flip), {flipped} flip before t = {T_MAX}"
    );
    println!(
        "time: {seconds_one:.2} s on 1 thread, {seconds_all:.2} s on {threads}: speed-up {:.2}; {:.3} ms per integrated point (1 thread)",
        seconds_one / seconds_all,
        1e3 * seconds_one / integrated.max(1) as f64
    );

    // One point's gradient against central differences of the flip time (tight tolerances).
    let tight = SolverOptions::default().tol(1e-12);
    let (t1, t2) = (2.0, 1.0);
    let (t_star, grad) = flip(t1, t2, &tight)?.ok_or("the check point flips")?;
    let delta = 1e-6;
    let fd = [
        (flip_time(t1 + delta, t2, &tight)? - flip_time(t1 - delta, t2, &tight)?) / (2.0 * delta),
        (flip_time(t1, t2 + delta, &tight)? - flip_time(t1, t2 - delta, &tight)?) / (2.0 * delta),
    ];
    let fd_error = (0..2)
        .map(|k| (grad[k] - fd[k]).abs() / fd[k].abs())
        .fold(0.0f64, f64::max);
    println!(
        "check at (θ1, θ2) = ({t1}, {t2}): t* = {t_star:.12}, ∇t* = [{:.8}, {:.8}], central differences [{:.8}, {:.8}], relative difference {fd_error:.1e}",
        grad[0], grad[1], fd[0], fd[1]
    );

    // The same gradient by the discrete adjoint of G = t* (one backward pass for all nine entries).
    let adjoint = gradient(
        &released_at(t1, t2)?,
        &tight,
        &EventTime::first(),
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )?;
    let adjoint_error = (0..2)
        .map(|k| (adjoint.wrt_u0[k] - grad[k]).abs() / grad[k].abs())
        .fold(0.0f64, f64::max);
    println!(
        "the discrete adjoint of G = t*: ∇t* = [{:.8}, {:.8}], relative difference to forward {adjoint_error:.1e}",
        adjoint.wrt_u0[0], adjoint.wrt_u0[1]
    );

    common::init_fonts();
    let path = out.join("flip_map.png");
    let root = BitMapBackend::new(&path, (1300, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(650);
    panel(&left, n, "flip time t*", |i| cells[i].map(|c| c.0))?;
    panel(&right, n, "|∇t*| w.r.t. (θ1(0), θ2(0))", |i| {
        cells[i].map(|(_, g)| g[0].hypot(g[1]))
    })?;
    root.present()?;
    let summary = json!({
        "n": n,
        "t_max": T_MAX,
        "integrated_points": integrated,
        "flipped_points": flipped,
        "seconds_one_thread": seconds_one,
        "seconds_all_threads": seconds_all,
        "threads": threads,
        "speed_up": seconds_one / seconds_all,
        "ms_per_integrated_point_one_thread": 1e3 * seconds_one / integrated.max(1) as f64,
        "check": {"theta": [t1, t2], "t_star": t_star, "gradient": grad, "central_differences": fd,
                  "relative_difference": fd_error,
                  "adjoint_gradient": [adjoint.wrt_u0[0], adjoint.wrt_u0[1]],
                  "adjoint_vs_forward": adjoint_error},
    });
    std::fs::write(
        out.join("flip_map.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("wrote {} and flip_map.json", path.display());
    if fd_error > 1e-5 {
        return Err(format!("flip-time gradient off central differences by {fd_error:.1e}").into());
    }
    if adjoint_error > 1e-10 {
        return Err(
            format!("adjoint flip-time gradient off forward by {adjoint_error:.1e}").into(),
        );
    }
    Ok(())
}
