//! Criterion suites beyond the double pendulum (which has `solve` and `sensitivity`): solves and gradients
//! by forward sensitivities and by the discrete adjoint (keep-all) on Lorenz, Robertson, HIRES and the
//! 2-D Brusselator, each gradient also as a ratio to one solve of the same problem in the same run.
//!
//! - Lorenz (σ, ρ, β = 10, 28, 8/3; u0 = (1, 0, 0); t ∈ [0, 1]; G = ‖u(1)‖²): Tsit5, Vern7, Vern9 solves at
//!   rtol = atol = 1e-6, 1e-9, 1e-12; gradients (3 parameters + 3 initial values) with Tsit5 at 1e-8.
//! - Robertson to t = 1e5 (G = Σ y1(t_k)² at t = 1, 10, 1e3, 1e5; rtol 1e-6, atol 1e-12): RadauIIA5 and
//!   Kvaerno5, gradients with respect to 3 rate constants + 3 initial values.
//! - HIRES (G = ‖u(321.8122)‖², tol 1e-7): RadauIIA5, 12 rate constants + 8 initial values.
//! - Brusselator N = 5 (the BrussScaling loss, Kvaerno5, rtol 1e-7, atol 1e-5): gradients with respect to
//!   all 100 parameters and 50 initial values.
//!
//! Run: `cargo bench --bench suites` (writes `data/benchmarks/suites.json`).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use ndarray::Array2;
use odesens::models::{Brusselator2D, Hires, Lorenz, Robertson};
use odesens::prelude::*;
use odesens::sensitivity::{
    Checkpointing, LeastSquares, Objective, SensitivityAlgorithm, SquaredNormAt, gradient,
};

mod common;
use common::median_ns;

fn lorenz() -> OdeProblem<Lorenz> {
    OdeProblem::new(
        Lorenz,
        vec![1.0, 0.0, 0.0],
        Lorenz::classic_params(),
        (0.0, 1.0),
    )
    .expect("valid")
}

fn robertson_loss() -> LeastSquares {
    let times = vec![1.0, 10.0, 1e3, 1e5];
    LeastSquares::new(times, Array2::zeros((4, 3))).expect("valid")
}

fn brusselator_loss(n: usize) -> LeastSquares {
    let times: Vec<f64> = (0..=10).map(|k| 0.1 * f64::from(k)).collect();
    let data = Array2::from_elem((times.len(), 2 * n * n), 1.0);
    LeastSquares::new(times, data).expect("valid")
}

/// Benches `solve`, `forward_gradient` and `adjoint_gradient` of one problem under `group/label_*`.
fn gradients<M: OdeSystem, O: Objective>(
    c: &mut Criterion,
    id: &str,
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
) {
    let mut group = c.benchmark_group("suites");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let solve_opts = options.clone().save_end_only();
    group.bench_function(format!("{id}_solve"), |b| {
        b.iter(|| solve(black_box(problem), &solve_opts).expect("solve"))
    });
    group.bench_function(format!("{id}_forward"), |b| {
        b.iter(|| {
            gradient(
                black_box(problem),
                options,
                objective,
                &SensitivityAlgorithm::Forward,
            )
            .expect("forward")
        })
    });
    group.bench_function(format!("{id}_adjoint"), |b| {
        b.iter(|| {
            gradient(
                black_box(problem),
                options,
                objective,
                &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
            )
            .expect("adjoint")
        })
    });
    group.finish();
}

const LORENZ_SOLVES: [(Method, f64); 9] = [
    (Method::Tsit5, 1e-6),
    (Method::Tsit5, 1e-9),
    (Method::Tsit5, 1e-12),
    (Method::Vern7, 1e-6),
    (Method::Vern7, 1e-9),
    (Method::Vern7, 1e-12),
    (Method::Vern9, 1e-6),
    (Method::Vern9, 1e-9),
    (Method::Vern9, 1e-12),
];

/// (id, description) of every gradient case, for the report.
const GRADIENT_CASES: [(&str, &str); 5] = [
    ("lorenz_Tsit5", "Lorenz, Tsit5 1e-8, 6 directions"),
    (
        "robertson_RadauIIA5",
        "Robertson to 1e5, RadauIIA5, 6 directions",
    ),
    (
        "robertson_Kvaerno5",
        "Robertson to 1e5, Kvaerno5, 6 directions",
    ),
    ("hires_RadauIIA5", "HIRES, RadauIIA5 1e-7, 20 directions"),
    (
        "brusselator5_Kvaerno5",
        "Brusselator N = 5, Kvaerno5, 150 directions",
    ),
];

fn benches(c: &mut Criterion) {
    let problem = lorenz();
    {
        let mut group = c.benchmark_group("suites");
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        for (method, tol) in LORENZ_SOLVES {
            let opts = SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only();
            group.bench_function(format!("lorenz_solve_{}_{tol:.0e}", method.name()), |b| {
                b.iter(|| solve(black_box(&problem), &opts).expect("solve"))
            });
        }
        group.finish();
    }
    let lorenz_opts = SolverOptions::default().tol(1e-8);
    gradients(
        c,
        "lorenz_Tsit5",
        &problem,
        &lorenz_opts,
        &SquaredNormAt::new(1.0),
    );
    let robertson = Robertson::problem(1e5).expect("valid");
    for method in [Method::RadauIIA5, Method::Kvaerno5] {
        let opts = SolverOptions::default()
            .method(method)
            .rtol(1e-6)
            .atol(1e-12)
            .max_steps(1_000_000);
        gradients(
            c,
            &format!("robertson_{}", method.name()),
            &robertson,
            &opts,
            &robertson_loss(),
        );
    }
    let hires = Hires::problem().expect("valid");
    gradients(
        c,
        "hires_RadauIIA5",
        &hires,
        &SolverOptions::default().method(Method::RadauIIA5).tol(1e-7),
        &SquaredNormAt::new(Hires::T_END),
    );
    let bruss = Brusselator2D::problem(5).expect("valid");
    gradients(
        c,
        "brusselator5_Kvaerno5",
        &bruss,
        &SolverOptions::default()
            .method(Method::Kvaerno5)
            .rtol(1e-7)
            .atol(1e-5),
        &brusselator_loss(5),
    );
}

fn report() {
    let problem = lorenz();
    println!("\n{:<36} {:>12} {:>10}", "Lorenz solve", "median", "error");
    // Reference u(1) by Vern9 at 1e-14.
    let reference = solve(
        &problem,
        &SolverOptions::default()
            .method(Method::Vern9)
            .tol(1e-14)
            .save_end_only(),
    )
    .expect("reference")
    .u_end;
    let mut solves = Vec::new();
    for (method, tol) in LORENZ_SOLVES {
        let id = format!("suites/lorenz_solve_{}_{tol:.0e}", method.name());
        let Some(t) = median_ns(&id) else {
            continue;
        };
        let sol = solve(
            &problem,
            &SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only(),
        )
        .expect("solve");
        let err = sol
            .u_end
            .iter()
            .zip(reference.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("{id:<36} {:>9.1} µs {err:>10.1e}", t / 1e3);
        solves.push(serde_json::json!({
            "id": id, "method": method.name(), "tol": tol, "median_time_s": t * 1e-9,
            "error_u_end": err, "accepted_steps": sol.stats.accepted_steps,
        }));
    }
    println!(
        "\n{:<24} {:>11} {:>11} {:>11} {:>10} {:>10}",
        "gradient", "solve", "forward", "adjoint", "fwd/solve", "adj/solve"
    );
    let mut rows = Vec::new();
    for (id, what) in GRADIENT_CASES {
        let get = |kind: &str| median_ns(&format!("suites/{id}_{kind}"));
        let (Some(s), Some(f), Some(a)) = (get("solve"), get("forward"), get("adjoint")) else {
            continue;
        };
        println!(
            "{id:<24} {:>8.3} ms {:>8.3} ms {:>8.3} ms {:>10.1} {:>10.1}",
            s / 1e6,
            f / 1e6,
            a / 1e6,
            f / s,
            a / s
        );
        rows.push(serde_json::json!({
            "id": id, "set_up": what, "solve_s": s * 1e-9, "forward_s": f * 1e-9,
            "adjoint_s": a * 1e-9, "forward_over_solve": f / s, "adjoint_over_solve": a / s,
        }));
    }
    common::write_report(
        "suites.json",
        &serde_json::json!({
            "command": "cargo bench --bench suites",
            "lorenz_solves": solves,
            "gradients": rows,
        }),
    );
}

fn main() {
    common::run(benches, report);
}
