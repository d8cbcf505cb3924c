//! The forward-vs-adjoint scaling study on the 2-D Brusselator, in the set-up of SciMLBenchmarks'
//! "BrussScaling" (Ma, Dixit, Innes, Guo & Rackauckas, IEEE HPEC 2021): an N × N periodic grid, 2N²
//! states, 4N² parameters (A, B, α^u, α^v at every grid point), t ∈ [0, 1], the L2 loss
//! G = Σ_k Σ_m (1 − U_m(t_k))²/2 at the 11 times t_k = 0, 0.1, …, 1, tolerances abstol 1e-5,
//! reltol 1e-7 (the study's Rodas5 set-up; here with Kværnø's ESDIRK 5(4), since explicit steps are
//! stability-limited on this problem and their discrete derivatives blow up, see `sensitivity/tests/brusselator.rs`).
//!
//! For N = 2, 3, 5, 8, 10 it times the gradient with respect to the 4N² parameters by forward
//! sensitivities (one tangent per parameter) and by the exact discrete adjoint (keep-all checkpoints),
//! interleaved medians, checks that both agree, and writes `brusselator_scaling.json` and
//! `brusselator_scaling.png` (costs against the number of parameters, log–log, beside SciML's published
//! timings) into `--out DIR` (default: the JSON into `data/benchmarks`, the figure into `data/figures`).
//!
//! Run: `cargo run --release --example brusselator_scaling [-- --out DIR] [--quick]`.

mod common;

use common::{PALETTE, Series, loglog_plot, median_times_interleaved, out_dir};
use ndarray::Array2;
use odesens::models::Brusselator2D;
use odesens::prelude::*;
use odesens::sensitivity::{
    Checkpointing, Directions, LeastSquares, SensitivityAlgorithm, forward_directional_derivatives,
    gradient,
};

/// SciML's published run (data/reference/brusselator.json): (N, ForwardDiff s, best adjoint s).
const SCIML: [(usize, f64, f64); 6] = [
    (2, 0.00192, 0.00193),
    (3, 0.0241, 0.003),
    (5, 0.404, 0.00866),
    (8, 10.4, 0.0804),
    (10, 27.3, 0.279),
    (4, 0.103, 0.00531),
];

fn loss(n: usize) -> LeastSquares {
    let times: Vec<f64> = (0..=10).map(|k| 0.1 * f64::from(k)).collect();
    let data = Array2::from_elem((times.len(), 2 * n * n), 1.0);
    LeastSquares::new(times, data).expect("valid loss")
}

/// `path`, created.
fn out_dir_plain(path: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {path}: {e}"));
    std::path::PathBuf::from(path)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let custom = std::env::args().any(|a| a == "--out");
    let dir = out_dir("data/benchmarks");
    let fig_dir = if custom {
        dir.clone()
    } else {
        out_dir_plain("data/figures")
    };
    let grid: &[usize] = if quick { &[2, 3, 5] } else { &[2, 3, 5, 8, 10] };
    let options = SolverOptions::default()
        .method(Method::Kvaerno5)
        .rtol(1e-7)
        .atol(1e-5);
    println!(
        "{:>3} {:>6} {:>7} {:>11} {:>11} {:>11} {:>9} {:>10} {:>8}",
        "N",
        "params",
        "steps",
        "solve [s]",
        "forward [s]",
        "adjoint [s]",
        "fwd/adj",
        "agreement",
        "SciML"
    );
    let mut rows = Vec::new();
    let mut fwd_points = Vec::new();
    let mut adj_points = Vec::new();
    let mut solve_points = Vec::new();
    for &n in grid {
        let problem = Brusselator2D::problem(n).expect("valid");
        let objective = loss(n);
        let np = 4 * n * n;
        let fwd = forward_directional_derivatives(
            &problem,
            &options,
            &objective,
            &Directions::Parameters,
        )
        .expect("forward");
        let adj = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .expect("adjoint");
        let scale = adj.wrt_params.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let agreement = fwd
            .derivatives
            .iter()
            .zip(adj.wrt_params.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale;
        let steps = adj.stats.forward.accepted_steps;
        let solve_opts = options.clone().save_end_only();
        let (min_runs, min_seconds) = if quick { (2, 0.5) } else { (3, 3.0) };
        let times = median_times_interleaved(
            &mut [
                &mut || {
                    std::hint::black_box(solve(&problem, &solve_opts).expect("solve"));
                },
                &mut || {
                    std::hint::black_box(
                        forward_directional_derivatives(
                            &problem,
                            &options,
                            &objective,
                            &Directions::Parameters,
                        )
                        .expect("forward"),
                    );
                },
                &mut || {
                    std::hint::black_box(
                        gradient(
                            &problem,
                            &options,
                            &objective,
                            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
                        )
                        .expect("adjoint"),
                    );
                },
            ],
            min_runs,
            min_seconds,
        );
        let (t_solve, t_fwd, t_adj) = (times[0], times[1], times[2]);
        let sciml = SCIML
            .iter()
            .find(|r| r.0 == n)
            .map(|r| r.1 / r.2)
            .unwrap_or(f64::NAN);
        println!(
            "{n:>3} {np:>6} {steps:>7} {t_solve:>11.2e} {t_fwd:>11.2e} {t_adj:>11.2e} {:>9.1} {agreement:>10.1e} {sciml:>8.1}",
            t_fwd / t_adj
        );
        fwd_points.push((np as f64, t_fwd));
        adj_points.push((np as f64, t_adj));
        solve_points.push((np as f64, t_solve));
        rows.push(serde_json::json!({
            "N": n, "states": 2 * n * n, "params": np, "accepted_steps": steps,
            "rejected_steps": adj.stats.forward.rejected_steps,
            "solve_s": t_solve, "forward_s": t_fwd, "adjoint_s": t_adj,
            "forward_over_adjoint": t_fwd / t_adj,
            "adjoint_over_solve": t_adj / t_solve,
            "forward_over_solve": t_fwd / t_solve,
            "gradient_agreement": agreement,
            "forward_jvps": fwd.stats.derivatives.jvp,
            "adjoint_vjps": adj.stats.derivatives.vjp,
            "forward_exact_stage_factorizations": fwd.stats.exact_stage_factorizations,
            "adjoint_exact_stage_factorizations": adj.stats.exact_stage_factorizations,
            "sciml_forward_over_adjoint": sciml,
            "loss": adj.value,
        }));
    }
    let report = serde_json::json!({
        "set_up": "Brusselator2D (BrussScaling form), t in [0, 1], L2 loss at t = 0, 0.1, ..., 1, \
                   Kvaerno5 rtol 1e-7 atol 1e-5; gradient wrt the 4N^2 parameters; forward = \
                   forward_directional_derivatives(Directions::Parameters), adjoint = adjoint_gradient \
                   (KeepAll); interleaved medians of wall time on this machine",
        "command": "cargo run --release --example brusselator_scaling",
        "sciml_published": "data/reference/brusselator.json (ForwardDiff / best adjoint, run A)",
        "rows": rows,
    });
    let json = dir.join("brusselator_scaling.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&report).expect("json") + "\n",
    )
    .expect("write json");
    let mut sciml: Vec<(usize, f64, f64)> = SCIML.to_vec();
    sciml.sort_by_key(|r| r.0);
    let series = [
        Series {
            label: "odesens forward sensitivities",
            points: fwd_points,
            color: PALETTE[0],
        },
        Series {
            label: "odesens discrete adjoint",
            points: adj_points,
            color: PALETTE[1],
        },
        Series {
            label: "odesens one solve",
            points: solve_points,
            color: PALETTE[4],
        },
        Series {
            label: "SciML ForwardDiff (published, other machine)",
            points: sciml
                .iter()
                .map(|r| ((4 * r.0 * r.0) as f64, r.1))
                .collect(),
            color: PALETTE[2],
        },
        Series {
            label: "SciML best adjoint (published, other machine)",
            points: sciml
                .iter()
                .map(|r| ((4 * r.0 * r.0) as f64, r.2))
                .collect(),
            color: PALETTE[3],
        },
    ];
    let png = fig_dir.join("brusselator_scaling.png");
    loglog_plot(
        &png,
        "Brusselator: gradient of the L2 loss wrt 4N² parameters",
        "number of parameters",
        "seconds",
        &series,
    )
    .expect("plot");
    eprintln!("wrote {} and {}", json.display(), png.display());
}
