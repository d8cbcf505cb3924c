//! Criterion work-precision bench of the implicit methods on the stiff test set: Robertson to t = 1e5 and
//! HIRES to t = 321.8122, TR-BDF2 and Kvaerno5 at several tolerances; the error in units of the local
//! tolerance against the Bari test set's references (data/reference/stiff.json) beside each median.
//!
//! Also the 2-D Brusselator at N = 32 (2048 states, the BrussScaling form) with Kvaerno5 at rtol 1e-6,
//! atol 1e-6 on the sparse path (coloured Jacobian, faer sparse LU) and on the dense one.
//!
//! And the gradient of ‖u(1e5)‖² on Robertson (rtol 1e-8, atol 1e-10) by forward sensitivities and the
//! keep-all discrete adjoint for each implicit method and BDF, beside its solve (`stiff_gradient/…`).
//!
//! Run: `cargo bench --bench stiff` (writes `data/benchmarks/stiff.json`).

use std::hint::black_box;

use criterion::Criterion;
use odesens::models::{Brusselator2D, Hires, Robertson};
use odesens::prelude::*;
use odesens::sensitivity::{Checkpointing, SensitivityAlgorithm, SquaredNormAt, gradient};
use odesens::solver::LinearSolverKind;

mod common;
use common::median_ns;

const TOLERANCES: [f64; 3] = [1e-6, 1e-8, 1e-10];

/// (id, problem name, method, rtol); atol = rtol·1e-6 for Robertson (y2 ~ 1e-8), rtol for HIRES.
fn cases() -> Vec<(String, &'static str, Method, f64)> {
    let mut v = Vec::new();
    for problem in ["robertson", "hires"] {
        for method in Method::IMPLICIT {
            for tol in TOLERANCES {
                v.push((
                    format!("stiff/{problem}_{}_{tol:.0e}", method.name()),
                    problem,
                    method,
                    tol,
                ));
            }
        }
    }
    v
}

fn options(problem: &str, method: Method, tol: f64) -> SolverOptions {
    let atol = if problem == "robertson" {
        tol * 1e-6
    } else {
        tol
    };
    SolverOptions::default()
        .method(method)
        .rtol(tol)
        .atol(atol)
        .save_end_only()
        .max_steps(1_000_000)
}

/// u(t_end), statistics, and the error in units of atol + rtol·|y|.
fn run(problem: &str, method: Method, tol: f64) -> (Solution, f64) {
    let opts = options(problem, method, tol);
    let (sol, reference): (Solution, Vec<f64>) = if problem == "robertson" {
        let (t, y) = Robertson::REFERENCE[0];
        (
            solve(&Robertson::problem(t).expect("valid"), &opts).expect("solve"),
            y.to_vec(),
        )
    } else {
        (
            solve(&Hires::problem().expect("valid"), &opts).expect("solve"),
            Hires::REFERENCE.to_vec(),
        )
    };
    let atol = if problem == "robertson" {
        tol * 1e-6
    } else {
        tol
    };
    let err = sol
        .u_end
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs() / (atol + tol * b.abs()))
        .fold(0.0, f64::max);
    (sol, err)
}

/// The Brusselator cases: (id, method, linear solver). (Radau's dense path would factor a dense
/// 4096 × 4096 real form of its complex system: not benchmarked.)
const BRUSSELATOR: [(&str, Method, LinearSolverKind); 3] = [
    (
        "stiff/brusselator32_Kvaerno5_sparse",
        Method::Kvaerno5,
        LinearSolverKind::Sparse,
    ),
    (
        "stiff/brusselator32_Kvaerno5_dense",
        Method::Kvaerno5,
        LinearSolverKind::Dense,
    ),
    (
        "stiff/brusselator32_RadauIIA5_sparse",
        Method::RadauIIA5,
        LinearSolverKind::Sparse,
    ),
];

fn brusselator_options(method: Method, kind: LinearSolverKind) -> SolverOptions {
    SolverOptions::default()
        .method(method)
        .tol(1e-6)
        .save_end_only()
        .linear_solver(kind)
}

fn benches(c: &mut Criterion) {
    let bruss = Brusselator2D::problem(32).expect("valid");
    let mut group = c.benchmark_group("stiff");
    group.sample_size(10);
    for (id, method, kind) in BRUSSELATOR {
        let opts = brusselator_options(method, kind);
        group.bench_function(id.trim_start_matches("stiff/"), |b| {
            b.iter(|| solve(black_box(&bruss), &opts).expect("solve"))
        });
    }
    group.finish();
    // Gradients on Robertson: forward and keep-all adjoint beside the solve, per implicit method.
    let stiff_robertson = Robertson::problem(1e5).expect("valid");
    let objective = SquaredNormAt::new(1e5);
    let mut group = c.benchmark_group("stiff_gradient");
    group.sample_size(20);
    for method in Method::IMPLICIT.into_iter().chain([Method::Bdf]) {
        let opts = SolverOptions::default()
            .method(method)
            .rtol(1e-8)
            .atol(1e-10)
            .save_end_only();
        group.bench_function(format!("robertson_{}_solve", method.name()), |b| {
            b.iter(|| solve(black_box(&stiff_robertson), &opts).expect("solve"))
        });
        for (name, algorithm) in [
            ("forward", SensitivityAlgorithm::Forward),
            (
                "adjoint",
                SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
            ),
        ] {
            group.bench_function(format!("robertson_{}_{name}", method.name()), |b| {
                b.iter(|| {
                    gradient(black_box(&stiff_robertson), &opts, &objective, &algorithm)
                        .expect("gradient")
                })
            });
        }
    }
    group.finish();
    let robertson = Robertson::problem(Robertson::REFERENCE[0].0).expect("valid");
    let hires = Hires::problem().expect("valid");
    for (id, problem, method, tol) in cases() {
        let opts = options(problem, method, tol);
        c.bench_function(&id, |b| {
            b.iter(|| {
                if problem == "robertson" {
                    solve(black_box(&robertson), &opts).expect("solve")
                } else {
                    solve(black_box(&hires), &opts).expect("solve")
                }
            })
        });
    }
}

fn report() {
    println!(
        "\n{:<32} {:>11} {:>7} {:>6} {:>6} {:>8} {:>12}",
        "case", "median", "steps", "jac", "LU", "newton", "error [tol]"
    );
    let mut rows = Vec::new();
    for (id, problem, method, tol) in cases() {
        let Some(t) = median_ns(&id) else {
            continue;
        };
        let (sol, err) = run(problem, method, tol);
        let s = sol.stats;
        println!(
            "{id:<32} {:>8.3} ms {:>7} {:>6} {:>6} {:>8} {:>12.1}",
            t / 1e6,
            s.accepted_steps,
            s.jacobian_evaluations,
            s.factorizations,
            s.newton_iterations,
            err
        );
        rows.push(serde_json::json!({
            "id": id, "problem": problem, "method": method.name(), "rtol": tol,
            "median_time_s": t * 1e-9, "accepted_steps": s.accepted_steps,
            "rejected_steps": s.rejected_steps, "jacobian_evaluations": s.jacobian_evaluations,
            "factorizations": s.factorizations, "newton_iterations": s.newton_iterations,
            "error_in_tolerances": err,
        }));
    }
    let bruss = Brusselator2D::problem(32).expect("valid");
    let mut bruss_rows = Vec::new();
    for (id, method, kind) in BRUSSELATOR {
        let Some(t) = median_ns(id) else {
            continue;
        };
        let s = solve(&bruss, &brusselator_options(method, kind))
            .expect("solve")
            .stats;
        println!(
            "{id:<32} {:>8.3} ms {:>7} {:>6} {:>6} {:>8}",
            t / 1e6,
            s.accepted_steps,
            s.jacobian_evaluations,
            s.factorizations,
            s.newton_iterations
        );
        bruss_rows.push(serde_json::json!({
            "id": id, "method": method.name(), "linear_solver": format!("{kind:?}"),
            "median_time_s": t * 1e-9,
            "accepted_steps": s.accepted_steps, "jacobian_evaluations": s.jacobian_evaluations,
            "factorizations": s.factorizations, "newton_iterations": s.newton_iterations,
        }));
    }
    if let (Some(sparse), Some(dense)) = (median_ns(BRUSSELATOR[0].0), median_ns(BRUSSELATOR[1].0))
    {
        println!(
            "Brusselator N = 32: dense / sparse time = {:.1}",
            dense / sparse
        );
    }
    common::write_report(
        "stiff.json",
        &serde_json::json!({
            "problems": "Robertson to t = 1e5 (atol = 1e-6·rtol), HIRES to t = 321.8122 (atol = rtol); references: Bari test set",
            "command": "cargo bench --bench stiff",
            "rows": rows,
            "brusselator_n32": {
                "set_up": "Brusselator2D::problem(32): 2048 states, t in [0, 1], rtol = atol = 1e-6",
                "rows": bruss_rows,
            },
        }),
    );
}

fn main() {
    common::run(benches, report);
}
