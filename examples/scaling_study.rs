//! The scaling study of derivatives (issue 13): time and peak memory of one solve, forward
//! sensitivities, the exact discrete adjoint and the interpolating continuous adjoint, from a few states
//! to 10⁴–10⁵, each case in its own process so that the peaks do not mix.
//!
//! Problems (sparse LU, Kværnø's ESDIRK 5(4) forward; the continuous adjoint's backward solve is the same
//! method, implicit, with the transposed sparse Jacobian):
//! - `brusselator`: SciMLBenchmarks' "BrussScaling" set-up (Ma, Dixit, Innes, Guo & Rackauckas, IEEE
//!   HPEC 2021) — N × N periodic grid, 2N² states, 4N² parameters, t ∈ [0, 1], the L2 loss
//!   G = Σ_k Σ_m (1 − U_m(t_k))²/2 at t_k = 0, 0.1, …, 1, rtol 1e-7, atol 1e-5; grid N = 2 … 64
//!   (128 with `--large`), with SciML's published timings beside ours (another machine);
//! - `heat`: the 2-D heat equation ([`odesens::models::Heat2D`], N² states, N² + 1 parameters), t ∈
//!   [0, 0.05], G = ‖u(T)‖², rtol = atol = 1e-6; N = 32, 100 (316 with `--large`: 10⁵ states);
//! - `advdiff`: 2-D advection–diffusion ([`odesens::models::AdvectionDiffusion2D`], N² states,
//!   N² + 3 parameters), t ∈ [0, 0.2], G = ‖u(T)‖², rtol = atol = 1e-6; N = 32, 100 (316).
//!
//! Forward sensitivities run while their predicted time (the last one scaled by states × parameters)
//! stays under 10 minutes. Each child reports the median of its runs (at least 3 runs or 1 s for
//! small cases, one run beyond 10 s), its peak resident memory (Linux VmHWM), step and stage-system
//! counters, and the memory the adjoint reports for its checkpoints; the gradients of the three
//! derivative methods are compared.
//!
//! Run: `cargo run --release --example scaling_study [-- --out DIR] [--quick | --large]`
//! (default: `data/benchmarks/scaling.json`, `data/figures/scaling_brusselator.png` and
//! `data/figures/scaling_memory.png`; about 15 minutes; `--quick`: N ≤ 5 and N = 16 heat/advection,
//! seconds, as in CI).

mod common;

use std::process::Command;
use std::time::Instant;

use common::{PALETTE, Series, loglog_plot, median_time_for, out_dir};
use ndarray::Array2;
use odesens::LinearSolverKind;
use odesens::models::compare::rel_diff_max_norm;
use odesens::models::{AdvectionDiffusion2D, Brusselator2D, Heat2D};
use odesens::prelude::*;
use odesens::sensitivity::{
    Checkpointing, ContinuousSettings, Directions, Gradient, LeastSquares, Objective,
    SensitivityAlgorithm, SquaredNormAt, forward_directional_derivatives, gradient,
};
use serde_json::{Value, json};

/// SciML's published run (data/reference/brusselator.json, run A): (N, ForwardDiff s, best adjoint s).
const SCIML: [(usize, f64, f64); 8] = [
    (2, 0.00192, 0.00193),
    (3, 0.0241, 0.003),
    (4, 0.103, 0.00531),
    (5, 0.404, 0.00866),
    (8, 10.4, 0.0804),
    (10, 27.3, 0.279),
    (12, 103.0, 0.471),
    (15, 826.0, 1.04),
];

/// What one child process computes.
const CASES: [&str; 4] = ["solve", "forward", "discrete", "continuous"];

/// The process's peak resident memory in MiB (Linux), if known.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The BrussScaling L2 loss at t = 0, 0.1, …, 1.
fn brusselator_loss(n: usize) -> LeastSquares {
    let times: Vec<f64> = (0..=10).map(|k| 0.1 * f64::from(k)).collect();
    let data = Array2::from_elem((times.len(), 2 * n * n), 1.0);
    LeastSquares::new(times, data).expect("valid loss")
}

/// Runs `what` on one problem: median seconds, counters, and the gradient (empty for a solve).
fn measure<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    what: &str,
) -> (f64, Value, Vec<f64>) {
    // One untimed run to see how long a run takes; then the median of more if it was short.
    let clock = Instant::now();
    let run = || -> (Value, Vec<f64>) {
        match what {
            "solve" => {
                let sol = solve(problem, &options.clone().save_end_only()).expect("solve");
                (
                    json!({"accepted_steps": sol.stats.accepted_steps,
                           "factorizations": sol.stats.factorizations,
                           "jacobians": sol.stats.jacobian_evaluations}),
                    Vec::new(),
                )
            }
            "forward" => {
                let f = forward_directional_derivatives(
                    problem,
                    options,
                    objective,
                    &Directions::Parameters,
                )
                .expect("forward");
                (
                    json!({"jvps": f.stats.derivatives.jvp,
                           "exact_stage_factorizations": f.stats.exact_stage_factorizations,
                           "krylov_stage_solves": f.stats.krylov_stage_solves}),
                    f.derivatives.to_vec(),
                )
            }
            "discrete" | "continuous" => {
                let algorithm = if what == "discrete" {
                    SensitivityAlgorithm::adjoint(Checkpointing::KeepAll)
                } else {
                    SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default())
                };
                let g: Gradient =
                    gradient(problem, options, objective, &algorithm).expect("gradient");
                let backward = g.backward.map(|b| b.backward);
                (
                    json!({"vjps": g.stats.derivatives.vjp,
                           "exact_stage_factorizations": g.stats.exact_stage_factorizations,
                           "krylov_stage_solves": g.stats.krylov_stage_solves,
                           "reported_checkpoint_bytes": g.stats.peak_checkpoint_bytes,
                           "checkpoints": g.stats.peak_snapshots,
                           "backward_steps": backward.map(|b| b.accepted_steps),
                           "backward_factorizations": backward.map(|b| b.factorizations)}),
                    g.wrt_params.to_vec(),
                )
            }
            _ => panic!("unknown case {what}"),
        }
    };
    let (counters, grad) = run();
    let first = clock.elapsed().as_secs_f64();
    let seconds = if first > 10.0 {
        first
    } else {
        median_time_for(
            || {
                std::hint::black_box(run());
            },
            3,
            1.0,
        )
    };
    (seconds, counters, grad)
}

/// Options and the objective of a problem, and the case run on them.
fn child(problem: &str, n: usize, what: &str, grad_file: &str) {
    let (seconds, counters, grad) = match problem {
        "brusselator" => {
            let p = Brusselator2D::problem(n).expect("valid");
            let o = SolverOptions::default()
                .method(Method::Kvaerno5)
                .rtol(1e-7)
                .atol(1e-5)
                .linear_solver(LinearSolverKind::Sparse);
            measure(&p, &o, &brusselator_loss(n), what)
        }
        "heat" => {
            let p = Heat2D::problem(n, 0.05).expect("valid");
            let o = SolverOptions::default()
                .method(Method::Kvaerno5)
                .tol(1e-6)
                .linear_solver(LinearSolverKind::Sparse);
            measure(&p, &o, &SquaredNormAt::new(0.05), what)
        }
        "advdiff" => {
            let p = AdvectionDiffusion2D::problem(n, 0.2).expect("valid");
            let o = SolverOptions::default()
                .method(Method::Kvaerno5)
                .tol(1e-6)
                .linear_solver(LinearSolverKind::Sparse);
            measure(&p, &o, &SquaredNormAt::new(0.2), what)
        }
        _ => panic!("unknown problem {problem}"),
    };
    let bytes: Vec<u8> = grad.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(grad_file, bytes).expect("write the gradient");
    let line = json!({"seconds": seconds, "peak_mib": peak_mib(), "counters": counters});
    println!("{line}");
}

/// Runs one case in a child process; `None` if it failed.
fn spawn(
    problem: &str,
    n: usize,
    what: &str,
    scratch: &std::path::Path,
) -> Option<(Value, Vec<f64>)> {
    let grad_file = scratch.join(format!("{problem}_{n}_{what}.bin"));
    let out = Command::new(std::env::current_exe().expect("the example's path"))
        .args(["--case", problem, &n.to_string(), what])
        .arg(&grad_file)
        .output()
        .expect("spawn a case");
    if !out.status.success() {
        eprintln!(
            "{problem} N = {n} {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(line.trim()).expect("a child's JSON line");
    let bytes = std::fs::read(&grad_file).unwrap_or_default();
    let grad = bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Some((value, grad))
}

/// max |a − b| / max |b| (NaN if either is missing).
fn agreement(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return f64::NAN;
    }
    rel_diff_max_norm(a, b)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let n: usize = args[i + 2].parse().expect("N");
        child(&args[i + 1], n, &args[i + 3], &args[i + 4]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let large = args.iter().any(|a| a == "--large");
    let custom = args.iter().any(|a| a == "--out");
    let dir = out_dir("data/benchmarks");
    let fig_dir = if custom {
        dir.clone()
    } else {
        out_dir_plain("data/figures")
    };
    let scratch = std::env::temp_dir().join(format!("odesens_scaling_{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let bruss: Vec<usize> = match (quick, large) {
        (true, _) => vec![2, 3, 5],
        (false, false) => vec![2, 3, 5, 8, 10, 16, 32, 64],
        (false, true) => vec![2, 3, 5, 8, 10, 16, 32, 64, 128],
    };
    let pde: Vec<usize> = match (quick, large) {
        (true, _) => vec![16],
        (false, false) => vec![32, 100],
        (false, true) => vec![32, 100, 316],
    };
    let plan: Vec<(&str, Vec<usize>)> = vec![
        ("brusselator", bruss),
        ("heat", pde.clone()),
        ("advdiff", pde),
    ];
    println!(
        "{:>11} {:>4} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "problem",
        "N",
        "states",
        "params",
        "solve s",
        "fwd s",
        "disc s",
        "cont s",
        "disc/sol",
        "fwd/disc",
        "sol MiB",
        "disc MiB",
        "disc~fwd",
        "cont~disc"
    );
    let mut rows = Vec::new();
    for (problem, grid) in &plan {
        let mut forward_budget: Option<(f64, f64)> = None; // (seconds, states × params) of the last forward
        for &n in grid {
            let (states, params) = match *problem {
                "brusselator" => (2 * n * n, 4 * n * n),
                "heat" => (n * n, n * n + 1),
                _ => (n * n, n * n + 3),
            };
            let size = (states * params) as f64;
            let mut results = serde_json::Map::new();
            let mut grads = std::collections::HashMap::new();
            for what in CASES {
                if what == "forward"
                    && let Some((secs, last)) = forward_budget
                    && secs * size / last > 600.0
                {
                    continue;
                }
                if let Some((value, grad)) = spawn(problem, n, what, &scratch) {
                    if what == "forward" {
                        forward_budget = Some((value["seconds"].as_f64().unwrap_or(0.0), size));
                    }
                    grads.insert(what, grad);
                    results.insert(what.to_string(), value);
                }
            }
            let secs = |w: &str| {
                results
                    .get(w)
                    .and_then(|v| v["seconds"].as_f64())
                    .unwrap_or(f64::NAN)
            };
            let mib = |w: &str| {
                results
                    .get(w)
                    .and_then(|v| v["peak_mib"].as_f64())
                    .unwrap_or(f64::NAN)
            };
            let empty = Vec::new();
            let grad = |w: &str| grads.get(w).unwrap_or(&empty);
            let disc_fwd = agreement(grad("forward"), grad("discrete"));
            let cont_disc = agreement(grad("continuous"), grad("discrete"));
            println!(
                "{problem:>11} {n:>4} {states:>7} {params:>7} {:>9.3e} {:>9.3e} {:>9.3e} {:>9.3e} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {disc_fwd:>9.1e} {cont_disc:>9.1e}",
                secs("solve"),
                secs("forward"),
                secs("discrete"),
                secs("continuous"),
                secs("discrete") / secs("solve"),
                secs("forward") / secs("discrete"),
                mib("solve"),
                mib("discrete"),
            );
            let sciml = SCIML.iter().find(|r| *problem == "brusselator" && r.0 == n);
            rows.push(json!({
                "problem": problem, "N": n, "states": states, "params": params,
                "cases": results,
                "discrete_over_solve": secs("discrete") / secs("solve"),
                "continuous_over_solve": secs("continuous") / secs("solve"),
                "forward_over_discrete": secs("forward") / secs("discrete"),
                "discrete_vs_forward": disc_fwd,
                "continuous_vs_discrete": cont_disc,
                "sciml_forwarddiff_s": sciml.map(|r| r.1),
                "sciml_best_adjoint_s": sciml.map(|r| r.2),
            }));
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    let report = json!({
        "set_up": "each case in its own process: median wall time (>= 3 runs or 1 s; one run beyond \
                   10 s) and peak resident memory (VmHWM, whole process); Kvaerno5 with sparse LU; \
                   forward = forward_directional_derivatives(Parameters), discrete = keep-all \
                   discrete adjoint, continuous = InterpolatingAdjoint (Kvaerno5 backward, implicit, \
                   the forward tolerances); agreements are max |a - b| / max |b| of the parameter \
                   gradients. See the example's docs for problems and tolerances.",
        "command": "cargo run --release --example scaling_study",
        "machine": "2 cores, this repository's CI machine class",
        "sciml_published": "data/reference/brusselator.json (run A, another machine)",
        "rows": rows,
    });
    let json_path = dir.join("scaling.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report).expect("json") + "\n",
    )
    .expect("write json");

    // Brusselator times against parameters, beside SciML's; and peak memory against states.
    let points = |problem: &str, what: &str, key: &str, x: &str| -> Vec<(f64, f64)> {
        report["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["problem"] == problem)
            .filter_map(|r| Some((r[x].as_f64()?, r["cases"][what][key].as_f64()?)))
            .collect()
    };
    let sciml = |k: usize| -> Vec<(f64, f64)> {
        SCIML
            .iter()
            .map(|r| ((4 * r.0 * r.0) as f64, if k == 1 { r.1 } else { r.2 }))
            .collect()
    };
    let times = [
        (
            "odesens one solve",
            points("brusselator", "solve", "seconds", "params"),
            PALETTE[4],
        ),
        (
            "odesens forward sensitivities",
            points("brusselator", "forward", "seconds", "params"),
            PALETTE[0],
        ),
        (
            "odesens discrete adjoint",
            points("brusselator", "discrete", "seconds", "params"),
            PALETTE[1],
        ),
        (
            "odesens continuous adjoint",
            points("brusselator", "continuous", "seconds", "params"),
            PALETTE[3],
        ),
        (
            "SciML ForwardDiff (published, other machine)",
            sciml(1),
            PALETTE[2],
        ),
        (
            "SciML best adjoint (published, other machine)",
            sciml(2),
            RGBColor(120, 120, 120),
        ),
    ];
    let series = as_series(&times);
    let png = fig_dir.join("scaling_brusselator.png");
    loglog_plot(
        &png,
        "Brusselator: gradient of the L2 loss wrt 4N² parameters",
        "number of parameters",
        "seconds",
        &series,
    )
    .expect("plot");
    let memory = [
        (
            "Brusselator solve",
            points("brusselator", "solve", "peak_mib", "states"),
            PALETTE[4],
        ),
        (
            "Brusselator discrete adjoint",
            points("brusselator", "discrete", "peak_mib", "states"),
            PALETTE[1],
        ),
        (
            "Brusselator continuous adjoint",
            points("brusselator", "continuous", "peak_mib", "states"),
            PALETTE[3],
        ),
        (
            "heat discrete adjoint",
            points("heat", "discrete", "peak_mib", "states"),
            PALETTE[0],
        ),
        (
            "advection–diffusion discrete adjoint",
            points("advdiff", "discrete", "peak_mib", "states"),
            PALETTE[2],
        ),
    ];
    let series = as_series(&memory);
    let mem_png = fig_dir.join("scaling_memory.png");
    loglog_plot(&mem_png, "Peak resident memory", "states", "MiB", &series).expect("plot");
    eprintln!(
        "wrote {}, {} and {}",
        json_path.display(),
        png.display(),
        mem_png.display()
    );
}

/// A plot line: label, points, colour.
type Line<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// Plot series from lines.
fn as_series<'a>(lines: &'a [Line<'a>]) -> Vec<Series<'a>> {
    lines
        .iter()
        .map(|(label, points, color)| Series {
            label,
            points: points.clone(),
            color: *color,
        })
        .collect()
}

/// `path`, created.
fn out_dir_plain(path: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {path}: {e}"));
    std::path::PathBuf::from(path)
}

use plotters::style::RGBColor;
