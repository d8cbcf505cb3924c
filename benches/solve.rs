//! Criterion bench of the explicit core on the double pendulum benchmark set-up
//! (l1 = l2 = m1 = m2 = 1, u0 = [π/2, π/2, 0, 0], t ∈ [0, 10], rtol = atol = 1e-8).
//!
//! Measures one rhs call and whole solves, then prints — and writes to `data/benchmarks/solve.json` —
//! steps, rejections, evaluations, the error against the reference u(10), the median time per solve and
//! the overhead factor = (time per solve) / (rhs evaluations × time of one rhs call).
//!
//! Run: `cargo bench --bench solve`.

use std::hint::black_box;

use criterion::Criterion;

mod common;
use common::median_ns;
use ndarray::Array1;
use odesens::models::DoublePendulum;
use odesens::prelude::*;

fn problem() -> OdeProblem<DoublePendulum> {
    DoublePendulum::bench_problem()
}

/// One evaluation of the model's right-hand side, kept out of line like the solver's calls.
#[inline(never)]
fn rhs_call(
    t: f64,
    u: ndarray::ArrayView1<f64>,
    p: ndarray::ArrayView1<f64>,
    du: ndarray::ArrayViewMut1<f64>,
) {
    DoublePendulum.rhs(t, u, p, du);
}

/// The solves measured: (bench id, method, tolerance).
const SOLVES: [(&str, Method, f64); 5] = [
    ("tsit5_1e-8", Method::Tsit5, 1e-8),
    ("dp5_1e-8", Method::Dp5, 1e-8),
    ("vern7_1e-8", Method::Vern7, 1e-8),
    ("vern9_1e-8", Method::Vern9, 1e-8),
    ("vern9_1e-10", Method::Vern9, 1e-10),
];

fn benches(c: &mut Criterion) {
    let problem = problem();
    let u = Array1::from(vec![0.3, -0.7, 1.1, -2.3]);
    let p = Array1::from(DoublePendulum::bench_params());
    let mut du = Array1::zeros(4);
    c.bench_function("double_pendulum/rhs", |b| {
        b.iter(|| {
            DoublePendulum.rhs(
                black_box(0.5),
                black_box(u.view()),
                black_box(p.view()),
                du.view_mut(),
            )
        })
    });
    // The same call over the states the Tsit5 solve visits: libm's sin/cos cost depends on the argument,
    // so this is what one evaluation costs inside the solve.
    let states = trajectory(&problem);
    c.bench_function("double_pendulum/rhs_trajectory_batch", |b| {
        b.iter(|| {
            for row in states.rows() {
                rhs_call(0.5, black_box(row), black_box(p.view()), du.view_mut());
                black_box(&du);
            }
        })
    });
    for (id, method, tol) in SOLVES {
        let options = SolverOptions::default()
            .method(method)
            .tol(tol)
            .save_end_only();
        c.bench_function(&format!("double_pendulum/solve_{id}"), |b| {
            b.iter(|| solve(black_box(&problem), black_box(&options)).expect("solve"))
        });
    }
}

/// The states of the Tsit5 solve at rtol = atol = 1e-8, one row per step.
fn trajectory(problem: &OdeProblem<DoublePendulum>) -> ndarray::Array2<f64> {
    solve(problem, &SolverOptions::default().tol(1e-8))
        .expect("solve")
        .states
}

fn report() {
    let problem = problem();
    let Some(rhs_ns) = median_ns("double_pendulum/rhs") else {
        eprintln!(
            "no criterion estimates found (run without --test / a filter that skips the rhs bench)"
        );
        return;
    };
    let batch = trajectory(&problem).nrows() as f64;
    let rhs_traj_ns =
        median_ns("double_pendulum/rhs_trajectory_batch").map_or(f64::NAN, |t| t / batch);
    println!(
        "\nDouble pendulum benchmark set-up, one rhs call: {rhs_ns:.1} ns (median, fixed input), {rhs_traj_ns:.1} ns (median over the trajectory's states)"
    );
    println!("overhead = time per solve / (rhs evaluations × rhs time), against either rhs time");
    println!(
        "{:<12} {:>9} {:>9} {:>10} {:>11} {:>13} {:>9} {:>11}",
        "solve",
        "accepted",
        "rejected",
        "rhs evals",
        "error u(10)",
        "median time",
        "overhead",
        "(traj. rhs)"
    );
    let mut rows = Vec::new();
    for (id, method, tol) in SOLVES {
        let sol = solve(
            &problem,
            &SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only(),
        )
        .expect("solve");
        let err = DoublePendulum::bench_error(sol.u_end.as_slice().expect("contiguous"));
        let Some(t_ns) = median_ns(&format!("double_pendulum/solve_{id}")) else {
            continue;
        };
        let overhead = t_ns / (sol.stats.rhs_evaluations as f64 * rhs_ns);
        let overhead_traj = t_ns / (sol.stats.rhs_evaluations as f64 * rhs_traj_ns);
        println!(
            "{id:<12} {:>9} {:>9} {:>10} {:>11.2e} {:>10.1} µs {:>9.3} {:>11.3}",
            sol.stats.accepted_steps,
            sol.stats.rejected_steps,
            sol.stats.rhs_evaluations,
            err,
            t_ns / 1e3,
            overhead,
            overhead_traj
        );
        rows.push(serde_json::json!({
            "id": id, "method": method.name(), "rtol": tol, "atol": tol,
            "accepted_steps": sol.stats.accepted_steps, "rejected_steps": sol.stats.rejected_steps,
            "rhs_evaluations": sol.stats.rhs_evaluations, "error_u_end": err,
            "median_time_s": t_ns * 1e-9, "overhead_factor": overhead,
            "overhead_factor_vs_trajectory_rhs": overhead_traj,
        }));
    }
    let out = serde_json::json!({
        "problem": "double pendulum, l1 = l2 = m1 = m2 = 1, g = 9.80665, u0 = [pi/2, pi/2, 0, 0], t in [0, 10]",
        "command": "cargo bench --bench solve",
        "machine": format!("{} cores available", std::thread::available_parallelism().map_or(0, |n| n.get())),
        "rhs_median_time_s": rhs_ns * 1e-9,
        "rhs_median_time_over_trajectory_s": rhs_traj_ns * 1e-9,
        "solves": rows,
        "peer_for_scale": { "diffsol_0.18_tsit45_1e-8": { "accepted": 569, "rejected": 84, "rhs": 3918, "time_s": 405e-6, "error_u_end": 2.0e-6, "overhead": 1.45 } },
    });
    common::write_report("solve.json", &out);
}

fn main() {
    common::run(benches, report);
}
