//! The main job: the chaotic double pendulum of MIT 18.063 (*Matrix Calculus*), its derivatives, the
//! adjoint, and when forward or adjoint mode is the cheaper choice.
//!
//! Reproduces the course notebook (notes/double-pendulum-sensitivity.ipynb: l1 = l2 = 1,
//! m1 = m2 = 0.1, g = 9.80665, u0 = [2, 2, 0, 0]) and goes beyond it. Writes into `out/double_pendulum/`
//! (`--out DIR` to change):
//!
//! 1. `chaos.png`: θ2(t) for θ2(0) = 2 and 2.001, and both bobs' x–y paths;
//! 2. `sensitivity.png`: |∂θ2(t)/∂θ2(0)| by forward sensitivities and by central differences
//!    (δ = 1e-5), and their relative difference;
//! 3. `adjoint.png`: v(t) = −λ(t) for G = ‖u(2)‖², time running backwards as in the course;
//! 4. `gradient.png`: ∇G with respect to u0 and (l1, l2, m1, m2, g) by adjoint, forward and finite
//!    differences, and their relative differences;
//! 5. `cost_scaling.png`: time of a forward and of an adjoint gradient against the number of parameters
//!    of a driven pendulum (a torque given by P control values), measured and predicted, crossover marked;
//! 6. `lyapunov.png`: ‖∂u(t)/∂u0‖ and the fitted exponent (a finite-time Lyapunov estimate);
//!
//! and `summary.json`, printed as a table with the course's own numbers beside ours.
//!
//! Run: `cargo run --release --example double_pendulum [-- --out DIR]`.

mod common;

use std::path::Path;
use std::time::Instant;

use odesens::models::{DoublePendulum, DrivenDoublePendulum};
use odesens::prelude::*;
use odesens::sensitivity::{
    AdjointSettings, Checkpointing, CostModel, Directions, ForwardSettings, Gradient,
    SensitivityAlgorithm, SquaredNormAt, check_gradient, forward_directional_derivatives,
    forward_sensitivities, gradient,
};
use plotters::prelude::*;
use serde_json::json;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The course's printed numbers and the converged reference (data/reference/double_pendulum.json).
const COURSE_ADJOINT: [f64; 4] = [
    17.425299831388337,
    -37.713013164436575,
    -3.517135042260177,
    -27.855982336366683,
];
const COURSE_FORWARD: [f64; 4] = [
    17.425310160434833,
    -37.71304988180739,
    -3.517137064485507,
    -27.856006327870684,
];
const COURSE_REL_DIFF: f64 = 8.995586393219922e-7;
const REFERENCE_G: f64 = 16.17702794007155;
const REFERENCE_GRAD: [f64; 4] = [
    17.425312841735636,
    -37.713050020140706,
    -3.5171346790112943,
    -27.856004409073314,
];
const PARAM_NAMES: [&str; 5] = ["l1", "l2", "m1", "m2", "g"];

/// Progress on stderr.
struct Progress {
    start: Instant,
    stage: usize,
}

impl Progress {
    fn stage(&mut self, what: &str) {
        self.stage += 1;
        eprintln!(
            "[{:>5.1} s] {}/7 {what}",
            self.start.elapsed().as_secs_f64(),
            self.stage
        );
    }
}

/// max_i |a_i − b_i| / max_i |b_i|.
fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
}

fn grad_vec(g: &Gradient) -> (Vec<f64>, Vec<f64>) {
    (g.wrt_u0.to_vec(), g.wrt_params.to_vec())
}

fn main() -> Res<()> {
    let out = common::out_dir("out/double_pendulum");
    common::init_fonts();
    let mut progress = Progress {
        start: Instant::now(),
        stage: 0,
    };
    println!(
        "Double pendulum (MIT 18.063): l1 = l2 = 1, m1 = m2 = 0.1, g = 9.80665, u0 = [2, 2, 0, 0]\n"
    );

    // The first second of a process on a shared virtual machine often runs slow: warm up before timing.
    progress.stage("chaos: θ2(0) = 2 and 2.001 (and a 1 s warm-up)");
    let warm = Instant::now();
    while warm.elapsed().as_secs_f64() < 1.0 {
        drop(solve(
            &DoublePendulum::standard_problem(2.0)?,
            &SolverOptions::default().tol(1e-10),
        ));
    }
    chaos(&out)?;

    progress.stage("forward sensitivity ∂θ2/∂θ2(0) and central differences");
    let sens_fd = sensitivity_figure(&out)?;

    progress.stage("the notebook: G = ‖u(2)‖², adjoint, forward, finite differences");
    let notebook = notebook(&out)?;

    progress.stage("which mode? cost model of the course problem");
    let mode = which_mode(&notebook)?;

    progress.stage("cost against the number of parameters (driven pendulum, P = 1 … 256)");
    let scaling = cost_scaling(&out)?;

    progress.stage("growth of ‖∂u(t)/∂u0‖: finite-time Lyapunov exponent");
    let lyapunov = lyapunov(&out)?;

    progress.stage("summary");
    let summary = json!({
        "notebook": notebook.json,
        "params_gradient": {
            "names": PARAM_NAMES,
            "adjoint": notebook.adjoint.1,
            "forward": notebook.forward.1,
            "finite_difference": notebook.fd.1,
        },
        "timing": notebook.timing,
        "cost_scaling": scaling.rows,
        "crossover": scaling.crossover,
        "which_mode": mode,
        "sensitivity_vs_finite_difference": sens_fd,
        "lyapunov_estimate": lyapunov.exponent,
        "lyapunov_fit": lyapunov.json,
    });
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
    println!(
        "\nwrote {} and the figures in {}",
        path.display(),
        out.display()
    );
    eprintln!("[{:>5.1} s] done", progress.start.elapsed().as_secs_f64());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// 1. Chaos

fn chaos(out: &Path) -> Res<()> {
    let times: Vec<f64> = (0..=2000).map(|i| 0.005 * f64::from(i)).collect();
    let options = SolverOptions::default()
        .method(Method::Vern9)
        .tol(1e-12)
        .save_at(times);
    let a = solve(&DoublePendulum::standard_problem(10.0)?, &options)?;
    let b = solve(
        &DoublePendulum::standard_problem(10.0)?.with_u0(vec![2.0, 2.001, 0.0, 0.0])?,
        &options,
    )?;
    // When do they part: |Δθ2| > 0.1 rad.
    let parted = a
        .times
        .iter()
        .zip(a.states.column(1).iter().zip(b.states.column(1)))
        .find(|(_, (x, y))| (*x - *y).abs() > 0.1)
        .map_or(f64::NAN, |(t, _)| *t);
    println!(
        "θ2(0) = 2 and 2.001 (Vern9, tol 1e-12): |Δθ2| first exceeds 0.1 rad at t = {parted:.2} s"
    );

    let path = out.join("chaos.png");
    let root = BitMapBackend::new(&path, (1500, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Double pendulum: two starts 0.001 rad apart (u0 = [2, θ2(0), 0, 0])",
        ("sans-serif", 26),
    )?;
    let (left, right) = root.split_horizontally(900);
    let theta = |s: &Solution| -> Vec<(f64, f64)> {
        s.times
            .iter()
            .zip(s.states.column(1))
            .map(|(&t, &x)| (t, x))
            .collect()
    };
    let (ta, tb) = (theta(&a), theta(&b));
    let (lo, hi) = ta
        .iter()
        .chain(&tb)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
            (l.min(p.1), h.max(p.1))
        });
    let mut chart = ChartBuilder::on(&left)
        .caption("θ2(t): the course's chaos figure", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..10.0, (lo - 0.3)..(hi + 0.3))?;
    chart
        .configure_mesh()
        .x_desc("time t [s]")
        .y_desc("θ2 [rad]")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    for (pts, label, color) in [(ta, "θ2(0) = 2", BLUE), (tb, "θ2(0) = 2.001", RED)] {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(parted, lo - 0.3), (parted, hi + 0.3)],
        BLACK.mix(0.5).stroke_width(1),
    )))?;
    chart.draw_series(std::iter::once(Text::new(
        format!("|Δθ2| > 0.1 rad from t = {parted:.2} s"),
        (parted + 0.1, hi + 0.1),
        ("sans-serif", 15),
    )))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;

    let mut chart = ChartBuilder::on(&right)
        .caption("bob paths, θ2(0) = 2 (t ≤ 10 s)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(-2.1..2.1, -2.1..2.1)?;
    chart
        .configure_mesh()
        .x_desc("x [m]")
        .y_desc("y [m]")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    let pos: Vec<[f64; 4]> = a
        .states
        .rows()
        .into_iter()
        .map(|u| DoublePendulum::positions(&u.to_vec(), 1.0, 1.0))
        .collect();
    let bob2 = RGBColor(200, 40, 40);
    chart
        .draw_series(LineSeries::new(
            pos.iter().map(|q| (q[2], q[3])),
            bob2.stroke_width(1),
        ))?
        .label("lower bob (m2)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], bob2.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            pos.iter().map(|q| (q[0], q[1])),
            BLUE.stroke_width(2),
        ))?
        .label("upper bob (m1)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let start = pos[0];
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(0.0, 0.0), (start[0], start[1]), (start[2], start[3])],
        BLACK.stroke_width(2),
    )))?;
    chart.draw_series(
        [(start[0], start[1]), (start[2], start[3])]
            .into_iter()
            .map(|p| Circle::new(p, 6, BLACK.filled())),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    println!("wrote {}", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// 2. Forward sensitivity against finite differences

fn sensitivity_figure(out: &Path) -> Res<serde_json::Value> {
    let problem = DoublePendulum::standard_problem(10.0)?;
    let times: Vec<f64> = (0..=500).map(|i| 0.02 * f64::from(i)).collect();
    let options = SolverOptions::default().method(Method::Vern9).tol(1e-12);
    let mut du0 = ndarray::Array2::zeros((4, 1));
    du0[[1, 0]] = 1.0;
    let directions = Directions::Custom {
        du0,
        dp: ndarray::Array2::zeros((5, 1)),
    };
    let fwd = forward_sensitivities(
        &problem,
        &options,
        &directions,
        &times,
        ForwardSettings::default(),
    )?;
    let delta = 1e-5;
    let solve_at = |theta2: f64| -> Res<Solution> {
        Ok(solve(
            &problem.with_u0(vec![2.0, theta2, 0.0, 0.0])?,
            &options.clone().save_at(times.clone()),
        )?)
    };
    let (plus, minus) = (solve_at(2.0 + delta)?, solve_at(2.0 - delta)?);
    let mut sens = Vec::new();
    let mut fd = Vec::new();
    let mut rel = Vec::new();
    for (k, &t) in times.iter().enumerate() {
        let s = fwd.sensitivities[[k, 1, 0]];
        let d = (plus.states[[k, 1]] - minus.states[[k, 1]]) / (2.0 * delta);
        sens.push((t, s.abs()));
        fd.push((t, d.abs()));
        rel.push((t, ((d - s) / s).abs()));
    }
    let at = |t: f64| {
        let k = times.iter().position(|&x| x >= t).expect("in span");
        (sens[k].1, rel[k].1)
    };
    let median_rel = |lo: f64, hi: f64| {
        let mut v: Vec<f64> = rel
            .iter()
            .filter(|p| p.0 >= lo && p.0 <= hi && p.1.is_finite())
            .map(|p| p.1)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let max_sens = sens.iter().fold(0.0f64, |m, p| m.max(p.1));
    println!(
        "∂θ2(t)/∂θ2(0) (Vern9, 1e-12): |·| at t = 10 is {:.3e} (max {:.3e}); central differences δ = 1e-5: \
         median relative difference {:.1e} on t ≤ 5, {:.1e} on 5 < t ≤ 10",
        at(10.0).0,
        max_sens,
        median_rel(0.02, 5.0),
        median_rel(5.0, 10.0)
    );

    let path = out.join("sensitivity.png");
    let root = BitMapBackend::new(&path, (1100, 850)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Sensitivity of θ2(t) to θ2(0): forward mode against finite differences (Vern9, tol 1e-12)",
        ("sans-serif", 22),
    )?;
    let (top, bottom) = root.split_vertically(500);
    let ymax = max_sens * 3.0;
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..10.0, (1e-3..ymax).log_scale())?;
    chart
        .configure_mesh()
        .y_desc("|∂θ2(t)/∂θ2(0)| [rad/rad]")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            sens.iter().map(|&(t, s)| (t, s.max(1e-3))),
            BLUE.stroke_width(2),
        ))?
        .label("forward sensitivity (exact derivative of the computed solution)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(
            fd.iter()
                .step_by(4)
                .map(|&(t, s)| Circle::new((t, s.max(1e-3)), 3, RED.filled())),
        )?
        .label("central difference, δ = 1e-5 (every 4th point)")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, RED.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(0.0..10.0, (1e-12..1.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time t [s]")
        .y_desc("|FD − forward| / |forward|")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            rel.iter()
                .filter(|p| p.0 > 0.0)
                .map(|&(t, r)| (t, r.clamp(1e-12, 1.0))),
            RGBColor(30, 150, 60).stroke_width(2),
        ))?
        .label("relative difference (spikes where ∂θ2/∂θ2(0) crosses zero)")
        .legend(|(x, y)| {
            PathElement::new(
                vec![(x, y), (x + 20, y)],
                RGBColor(30, 150, 60).stroke_width(2),
            )
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    println!("wrote {}", path.display());
    Ok(json!({
        "delta": delta,
        "abs_sensitivity_at_10": at(10.0).0,
        "max_abs_sensitivity": max_sens,
        "median_rel_diff_t_le_5": median_rel(0.02, 5.0),
        "median_rel_diff_5_to_10": median_rel(5.0, 10.0),
    }))
}

// ---------------------------------------------------------------------------------------------------
// 3, 4. The notebook: G = ‖u(2)‖²

struct Notebook {
    adjoint: (Vec<f64>, Vec<f64>),
    forward: (Vec<f64>, Vec<f64>),
    fd: (Vec<f64>, Vec<f64>),
    timing: serde_json::Value,
    json: serde_json::Value,
}

fn notebook(out: &Path) -> Res<Notebook> {
    let problem = DoublePendulum::standard_problem(2.0)?;
    let options = SolverOptions::default().tol(1e-12);
    let objective = SquaredNormAt::new(2.0);
    let settings = AdjointSettings {
        record_trajectory: true,
        ..Default::default()
    };
    let adj = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::DiscreteAdjoint(AdjointSettings {
            checkpointing: Checkpointing::KeepAll,
            ..settings
        }),
    )?;
    let fwd = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::Forward,
    )?;
    let check = check_gradient(&problem, &options, &objective, &adj, None)?;
    let (a, f) = (grad_vec(&adj), grad_vec(&fwd));
    let fd = (check.fd_u0.to_vec(), check.fd_params.to_vec());
    let all = |g: &(Vec<f64>, Vec<f64>)| -> Vec<f64> { g.0.iter().chain(&g.1).copied().collect() };
    let rel_af = rel_diff(&all(&a), &all(&f));
    let rel_fd = rel_diff(&all(&fd), &all(&f));
    let rel_ref = rel_diff(&a.0, &REFERENCE_GRAD);
    let g_rel_ref = (adj.value - REFERENCE_G).abs() / REFERENCE_G;

    // Timing: one plain solve, one forward and one adjoint gradient, run in turn (medians).
    let plain = options.clone().save_end_only().tstops(vec![2.0]);
    let t = common::median_times_interleaved(
        &mut [
            &mut || drop(solve(&problem, &plain)),
            &mut || {
                drop(gradient(
                    &problem,
                    &options,
                    &objective,
                    &SensitivityAlgorithm::Forward,
                ))
            },
            &mut || {
                drop(gradient(
                    &problem,
                    &options,
                    &objective,
                    &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
                ))
            },
        ],
        21,
        1.0,
    );
    let (solve_s, forward_s, adjoint_s) = (t[0], t[1], t[2]);

    println!(
        "\nThe notebook: G(u0) = ‖u(2)‖², ∇_u0 G (Tsit5, rtol = atol = 1e-12; course: reltol 1e-10)"
    );
    println!(
        "  G = {:.14} (reference {REFERENCE_G:.14}, relative difference {g_rel_ref:.1e})",
        adj.value
    );
    println!(
        "  {:<34} {:>20} {:>20} {:>20} {:>20}",
        "", "∂G/∂θ1(0)", "∂G/∂θ2(0)", "∂G/∂θ̇1(0)", "∂G/∂θ̇2(0)"
    );
    let row = |name: &str, v: &[f64]| {
        println!(
            "  {:<34} {:>20.12} {:>20.12} {:>20.12} {:>20.12}",
            name, v[0], v[1], v[2], v[3]
        );
    };
    row("course, adjoint −v(0)", &COURSE_ADJOINT);
    row("course, forward 2 J(2)ᵀu(2)", &COURSE_FORWARD);
    row("odesens, adjoint", &a.0);
    row("odesens, forward", &f.0);
    row("odesens, central differences", &fd.0);
    row("converged reference", &REFERENCE_GRAD);
    println!(
        "  relative difference adjoint/forward: course {COURSE_REL_DIFF:.1e}, odesens {rel_af:.1e}; \
         odesens vs reference {rel_ref:.1e}; course adjoint vs reference {:.1e}",
        rel_diff(&COURSE_ADJOINT, &REFERENCE_GRAD)
    );
    println!("  finite differences (δ = 6e-6·max(|θ|, 1)) vs forward: {rel_fd:.1e}");
    println!("\n  ∂G/∂p (the course did not compute these):");
    println!(
        "  {:<8} {:>22} {:>22} {:>22}",
        "param", "adjoint", "forward", "central difference"
    );
    for (k, name) in PARAM_NAMES.iter().enumerate() {
        println!(
            "  {:<8} {:>22.14} {:>22.14} {:>22.10}",
            name, a.1[k], f.1[k], fd.1[k]
        );
    }
    println!(
        "  (the dynamics depend on the masses only through m2/(m1 + m2), so ∂G/∂m1 = −∂G/∂m2: {:.3e})",
        a.1[2] + a.1[3]
    );
    println!(
        "\n  cost (medians of ≥ 21 interleaved runs): solve {:.3} ms, forward gradient (9 directions) {:.3} ms = {:.1}×, \
         adjoint gradient {:.3} ms = {:.1}×",
        solve_s * 1e3,
        forward_s * 1e3,
        forward_s / solve_s,
        adjoint_s * 1e3,
        adjoint_s / solve_s
    );

    adjoint_figure(out, &adj)?;
    gradient_figure(out, &a, &f, &fd)?;

    Ok(Notebook {
        json: json!({
            "t0": 2.0,
            "method": "Tsit5",
            "rtol": 1e-12,
            "atol": 1e-12,
            "G": adj.value,
            "G_reference": REFERENCE_G,
            "grad_u0_adjoint": a.0,
            "grad_u0_forward": f.0,
            "grad_u0_finite_difference": fd.0,
            "grad_u0_reference": REFERENCE_GRAD,
            "rel_diff_adjoint_forward": rel_af,
            "rel_diff_finite_difference_forward": rel_fd,
            "rel_diff_adjoint_reference": rel_ref,
            "course_printed": {
                "adjoint": COURSE_ADJOINT,
                "forward": COURSE_FORWARD,
                "rel_diff_adjoint_forward": COURSE_REL_DIFF,
            },
        }),
        timing: json!({
            "problem": "notebook G = ‖u(2)‖², Tsit5, rtol = atol = 1e-12, medians of ≥ 21 interleaved runs (≥ 1 s)",
            "solve_s": solve_s,
            "forward_gradient_s": forward_s,
            "adjoint_gradient_s": adjoint_s,
            "forward_over_solve": forward_s / solve_s,
            "adjoint_over_solve": adjoint_s / solve_s,
        }),
        adjoint: a,
        forward: f,
        fd,
    })
}

fn adjoint_figure(out: &Path, adj: &Gradient) -> Res<()> {
    let traj = adj.adjoint.as_ref().expect("recorded");
    let path = out.join("adjoint.png");
    let root = BitMapBackend::new(&path, (1100, 620)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = traj
        .lambda
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(-x), h.max(-x))
        });
    let pad = 0.05 * (hi - lo);
    // Time runs backwards, as the adjoint is solved: t = 2 on the left.
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Adjoint v(t) = −λ(t) for G = ‖u(2)‖²: v(2) = −2u(2), solved back to v(0) = −∇_u0 G",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(2.0..0.0, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("time t [s] (running backwards)")
        .y_desc("v(t) = −∂G/∂u(t)")
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    let names = [
        "v1 (θ1)",
        "v2 (θ2)",
        "v3 (θ1' = dθ1/dt)",
        "v4 (θ2' = dθ2/dt)",
    ];
    for (k, name) in names.iter().enumerate() {
        let color = common::PALETTE[k];
        // Skip the row before the terminal jump (λ = 0 before the observation at t = 2).
        let pts: Vec<(f64, f64)> = traj
            .times
            .iter()
            .zip(traj.lambda.column(k))
            .skip(1)
            .map(|(&t, &l)| (t, -l))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    println!("wrote {}", path.display());
    Ok(())
}

type Split = (Vec<f64>, Vec<f64>);

fn gradient_figure(out: &Path, a: &Split, f: &Split, fd: &Split) -> Res<()> {
    let labels = [
        "θ1(0)", "θ2(0)", "θ1'(0)", "θ2'(0)", "l1", "l2", "m1", "m2", "g",
    ];
    let cat = |g: &Split| -> Vec<f64> { g.0.iter().chain(&g.1).copied().collect() };
    let (va, vf, vd) = (cat(a), cat(f), cat(fd));
    let path = out.join("gradient.png");
    let root = BitMapBackend::new(&path, (1200, 850)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "∇G, G = ‖u(2)‖²: adjoint, forward and central differences (Tsit5, tol 1e-12)",
        ("sans-serif", 22),
    )?;
    let (top, bottom) = root.split_vertically(480);
    let (lo, hi) = va
        .iter()
        .fold((0.0f64, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
    let n = labels.len();
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), (lo * 1.1)..(hi * 1.15))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let k = x.round();
            if (x - k).abs() < 1e-9 && k >= 0.0 && (k as usize) < labels.len() {
                labels[k as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("∂G/∂(·)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    let methods = [
        ("adjoint", &va, common::PALETTE[0]),
        ("forward", &vf, common::PALETTE[1]),
        ("central difference", &vd, common::PALETTE[2]),
    ];
    for (m, (name, vals, color)) in methods.iter().enumerate() {
        let color = *color;
        let w = 0.26;
        let x0 = -0.39 + w * m as f64;
        chart
            .draw_series(vals.iter().enumerate().map(|(k, &v)| {
                let x = k as f64 + x0;
                Rectangle::new([(x, 0.0), (x + w * 0.95, v)], color.filled())
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), (1e-17..1e-3).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let k = x.round();
            if (x - k).abs() < 1e-9 && k >= 0.0 && (k as usize) < labels.len() {
                labels[k as usize].to_string()
            } else {
                String::new()
            }
        })
        .x_desc("derivative with respect to")
        .y_desc("relative difference to forward")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    let scale = vf.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (name, vals, color, dx) in [
        (
            "|adjoint − forward| / max|∇G|",
            &va,
            common::PALETTE[0],
            -0.1,
        ),
        (
            "|central difference − forward| / max|∇G|",
            &vd,
            common::PALETTE[2],
            0.1,
        ),
    ] {
        chart
            .draw_series(vals.iter().zip(&vf).enumerate().map(|(k, (v, w))| {
                let r = ((v - w).abs() / scale).max(1.1e-17);
                Circle::new((k as f64 + dx, r), 6, color.filled())
            }))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    println!("wrote {}", path.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Which mode?

fn which_mode(notebook: &Notebook) -> Res<serde_json::Value> {
    let problem = DoublePendulum::standard_problem(2.0)?;
    let options = SolverOptions::default().tol(1e-12);
    let objective = SquaredNormAt::new(2.0);
    let cost = CostModel::measure(&problem, &options, &objective)?;
    let prediction = cost.predict(9);
    let measured_forward = notebook.timing["forward_gradient_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let measured_adjoint = notebook.timing["adjoint_gradient_s"]
        .as_f64()
        .unwrap_or(f64::NAN);
    println!(
        "\nWhich mode? Course problem, 9 directions: solve {:.3} ms ({} steps), kernels rhs {:.0} ns, \
         jvp {:.0} ns ({:.1} rhs), 8-direction block {:.0} ns ({:.1} rhs), vjp {:.0} ns ({:.1} rhs); \
         {} threads run {:.2}× faster than one, a fork–join costs {:.0} µs",
        cost.solve_s * 1e3,
        cost.accepted_steps,
        cost.rhs_s * 1e9,
        cost.jvp_s * 1e9,
        cost.jvp_s / cost.rhs_s,
        cost.jvp_block_s * 1e9,
        cost.jvp_block_s / cost.rhs_s,
        cost.vjp_s * 1e9,
        cost.vjp_s / cost.rhs_s,
        cost.threads,
        cost.parallel_speedup,
        cost.fork_join_s * 1e6
    );
    println!(
        "  predicted forward {:.3} ms, adjoint {:.3} ms → {:?}; measured forward {:.3} ms, adjoint {:.3} ms → {}; \
         predicted crossover at {} directions",
        prediction.forward_s * 1e3,
        prediction.adjoint_s * 1e3,
        prediction.recommended,
        measured_forward * 1e3,
        measured_adjoint * 1e3,
        if measured_forward <= measured_adjoint {
            "Forward"
        } else {
            "Adjoint"
        },
        cost.crossover()
            .map_or("none".to_string(), |d| d.to_string())
    );
    Ok(json!({
        "problem": "notebook, 9 directions (4 initial values + 5 parameters)",
        "cost_model": cost,
        "prediction": prediction,
        "measured_forward_s": measured_forward,
        "measured_adjoint_s": measured_adjoint,
        "predicted_crossover_directions": cost.crossover(),
    }))
}

// ---------------------------------------------------------------------------------------------------
// 5. Cost against the number of parameters

struct Scaling {
    rows: Vec<serde_json::Value>,
    crossover: serde_json::Value,
}

/// The crossover P*: where a least-squares line through ln(forward/adjoint) against ln P, over the points
/// where the two costs are within a factor 4 of each other, crosses zero. Near the crossover the two
/// costs differ by less than this machine's timing noise over a range of P, so a single sign change
/// is not a stable estimate; the local fit is. `None` if fewer than two points are that close or the
/// fitted trend does not rise.
fn crossing(ps: &[f64], forward: &[f64], adjoint: &[f64]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = ps
        .iter()
        .zip(forward.iter().zip(adjoint))
        .map(|(p, (f, a))| (p.ln(), (f / a).ln()))
        .filter(|&(_, r)| r.abs() <= 4f64.ln())
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let m = pts.len() as f64;
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.0 / m, b + p.1 / m));
    let (sxy, sxx) = pts.iter().fold((0.0, 0.0), |(a, b), p| {
        (a + (p.0 - mx) * (p.1 - my), b + (p.0 - mx) * (p.0 - mx))
    });
    let slope = sxy / sxx;
    (slope > 0.0).then(|| (mx - my / slope).exp())
}

fn cost_scaling(out: &Path) -> Res<Scaling> {
    let t_end = 5.0;
    let options = SolverOptions::default().tol(1e-8);
    let objective = SquaredNormAt::new(t_end);
    let terms = [1usize, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256];
    let mut rows = Vec::new();
    let (mut ps, mut fw, mut ad, mut pf, mut pa) = (vec![], vec![], vec![], vec![], vec![]);
    println!(
        "\nCost against the number of parameters P (driven pendulum, torque from P control values, G = ‖u(5)‖², \
         Tsit5 1e-8, medians; {} threads)",
        rayon::current_num_threads()
    );
    println!(
        "  {:>4} {:>12} {:>12} {:>12} {:>9} {:>14} {:>14} {:>9}",
        "P",
        "solve",
        "forward",
        "adjoint",
        "fwd/adj",
        "pred. forward",
        "pred. adjoint",
        "pred. f/a"
    );
    for &p in &terms {
        let problem = DrivenDoublePendulum::problem(p, t_end)?;
        let cost = CostModel::measure(&problem, &options, &objective)?;
        let t = common::median_times_interleaved(
            &mut [
                &mut || {
                    drop(forward_directional_derivatives(
                        &problem,
                        &options,
                        &objective,
                        &Directions::Parameters,
                    ))
                },
                &mut || {
                    drop(gradient(
                        &problem,
                        &options,
                        &objective,
                        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
                    ))
                },
            ],
            11,
            2.0,
        );
        let (forward, adjoint) = (t[0], t[1]);
        let pred = cost.predict(p);
        println!(
            "  {:>4} {:>9.3} ms {:>9.3} ms {:>9.3} ms {:>9.2} {:>11.3} ms {:>11.3} ms {:>9.2}",
            p,
            cost.solve_s * 1e3,
            forward * 1e3,
            adjoint * 1e3,
            forward / adjoint,
            pred.forward_s * 1e3,
            pred.adjoint_s * 1e3,
            pred.forward_s / pred.adjoint_s
        );
        rows.push(json!({
            "n_params": p,
            "solve_s": cost.solve_s,
            "forward_s": forward,
            "adjoint_s": adjoint,
            "predicted_forward_s": pred.forward_s,
            "predicted_adjoint_s": pred.adjoint_s,
            "vjp_over_rhs": cost.vjp_s / cost.rhs_s,
            "jvp_block_over_rhs": cost.jvp_block_s / cost.rhs_s,
        }));
        ps.push(p as f64);
        fw.push(forward);
        ad.push(adjoint);
        pf.push(pred.forward_s);
        pa.push(pred.adjoint_s);
    }
    let measured = crossing(&ps, &fw, &ad);
    let predicted = crossing(&ps, &pf, &pa);
    let ratio = match (measured, predicted) {
        (Some(m), Some(p)) => Some((m / p).max(p / m)),
        _ => None,
    };
    println!(
        "  crossover (fit of ln(forward/adjoint) vs ln P where within 4×): measured P ≈ {}, predicted P ≈ {} \
         (factor {} apart)",
        measured.map_or("none in range".into(), |x| format!("{x:.1}")),
        predicted.map_or("none in range".into(), |x| format!("{x:.1}")),
        ratio.map_or("n/a".into(), |r| format!("{r:.2}"))
    );

    let path = out.join("cost_scaling.png");
    let root = BitMapBackend::new(&path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = fw.iter().chain(&ad).chain(&pf).chain(&pa);
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Gradient cost vs number of parameters P (driven double pendulum, Tsit5 1e-8)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d((0.8..320.0).log_scale(), (lo / 2.0..hi * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("number of parameters P (forward: P tangent directions)")
        .y_desc("wall time per gradient [s]")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    let fc = common::PALETTE[1];
    let ac = common::PALETTE[0];
    let line =
        |v: &[f64]| -> Vec<(f64, f64)> { ps.iter().copied().zip(v.iter().copied()).collect() };
    chart
        .draw_series(LineSeries::new(line(&fw), fc.stroke_width(3)))?
        .label("forward sensitivities, measured (median)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], fc.stroke_width(3)));
    chart.draw_series(
        line(&fw)
            .into_iter()
            .map(|p| Circle::new(p, 5, fc.filled())),
    )?;
    chart
        .draw_series(LineSeries::new(line(&ad), ac.stroke_width(3)))?
        .label("adjoint (reverse-mode vjp), measured (median)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ac.stroke_width(3)));
    chart.draw_series(
        line(&ad)
            .into_iter()
            .map(|p| Circle::new(p, 5, ac.filled())),
    )?;
    chart
        .draw_series(DashedLineSeries::new(line(&pf), 8, 6, fc.stroke_width(2)))?
        .label("forward, predicted by CostModel")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], fc.mix(0.6).stroke_width(2))
        });
    chart
        .draw_series(DashedLineSeries::new(line(&pa), 8, 6, ac.stroke_width(2)))?
        .label("adjoint, predicted by CostModel")
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], ac.mix(0.6).stroke_width(2))
        });
    for (x, label, color) in [
        (measured, "measured crossover", BLACK),
        (predicted, "predicted crossover", RGBColor(120, 120, 120)),
    ] {
        if let Some(x) = x {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, lo / 2.0), (x, hi * 2.0)],
                color.stroke_width(2),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{label} P ≈ {x:.1}"),
                (x * 1.08, if label.starts_with('m') { hi } else { hi / 2.2 }),
                ("sans-serif", 16).into_font().color(&color),
            )))?;
        }
    }
    chart.draw_series(std::iter::once(Text::new(
        "crossover: where a least-squares line through ln(forward/adjoint) vs ln P (points within 4×) crosses 0",
        (1.0, lo / 1.6),
        ("sans-serif", 14),
    )))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    println!("wrote {}", path.display());
    Ok(Scaling {
        rows,
        crossover: json!({
            "measured_n_params": measured,
            "predicted_n_params": predicted,
            "factor_apart": ratio,
        }),
    })
}

// ---------------------------------------------------------------------------------------------------
// 6. Finite-time Lyapunov exponent

struct Lyapunov {
    exponent: f64,
    json: serde_json::Value,
}

fn lyapunov(out: &Path) -> Res<Lyapunov> {
    let t_end = 40.0;
    let problem = DoublePendulum::standard_problem(t_end)?;
    let times: Vec<f64> = (0..=800).map(|i| 0.05 * f64::from(i)).collect();
    let options = SolverOptions::default().method(Method::Vern9).tol(1e-12);
    let fwd = forward_sensitivities(
        &problem,
        &options,
        &Directions::InitialValues,
        &times,
        ForwardSettings::default(),
    )?;
    // ‖∂u(t)/∂u0‖ in the Frobenius norm (within a factor 2 of the spectral norm for 4 × 4).
    let norms: Vec<(f64, f64)> = times
        .iter()
        .enumerate()
        .map(|(k, &t)| {
            let j = fwd.sensitivities.index_axis(ndarray::Axis(0), k);
            (t, j.iter().map(|x| x * x).sum::<f64>().sqrt())
        })
        .collect();
    // Least-squares fit ln‖J‖ = c + λ t on t ≥ 2 s.
    let fit: Vec<(f64, f64)> = norms
        .iter()
        .filter(|p| p.0 >= 2.0)
        .map(|&(t, n)| (t, n.ln()))
        .collect();
    let m = fit.len() as f64;
    let (st, sy) = fit.iter().fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mt, my) = (st / m, sy / m);
    let (sty, stt) = fit.iter().fold((0.0, 0.0), |(a, b), p| {
        (a + (p.0 - mt) * (p.1 - my), b + (p.0 - mt) * (p.0 - mt))
    });
    let lambda = sty / stt;
    let c = my - lambda * mt;
    let last = norms.last().expect("times").1;
    let windows: Vec<f64> = [10.0, 20.0, 30.0, 40.0]
        .iter()
        .map(|&t| {
            let k = times.iter().position(|&x| x >= t).expect("in span");
            norms[k].1.ln() / t
        })
        .collect();
    println!(
        "\nGrowth of ‖∂u(t)/∂u0‖_F (Vern9, 1e-12, t ≤ {t_end}): {:.3e} at t = {t_end}; fitted exponent \
         λ ≈ {lambda:.3} 1/s (ln‖J‖ = {c:.2} + λt on t ≥ 2 s); ln‖J(T)‖/T for T = 10, 20, 30, 40: \
         {:.3}, {:.3}, {:.3}, {:.3}",
        last, windows[0], windows[1], windows[2], windows[3]
    );

    let path = out.join("lyapunov.png");
    let root = BitMapBackend::new(&path, (1100, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let hi = norms.iter().fold(1.0f64, |m, p| m.max(p.1)) * 5.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Growth of the sensitivity ‖∂u(t)/∂u0‖: finite-time Lyapunov exponent λ ≈ {lambda:.2} 1/s"
            ),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_end, (0.1..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("time t [s]")
        .y_desc("‖∂u(t)/∂u0‖_F")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()?;
    chart
        .draw_series(LineSeries::new(norms.clone(), BLUE.stroke_width(2)))?
        .label("forward sensitivities (4 directions, Vern9 1e-12)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(DashedLineSeries::new(
            [0.0, t_end].map(|t| (t, (c + lambda * t).exp())),
            10,
            6,
            RED.stroke_width(2),
        ))?
        .label(format!("fit exp({c:.2} + {lambda:.3} t), t ≥ 2 s"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    println!("wrote {}", path.display());
    Ok(Lyapunov {
        exponent: lambda,
        json: json!({
            "norm": "Frobenius",
            "t_end": t_end,
            "fit_window": [2.0, t_end],
            "intercept": c,
            "ln_norm_over_t": { "10": windows[0], "20": windows[1], "30": windows[2], "40": windows[3] },
            "norm_at_t_end": last,
        }),
    })
}
