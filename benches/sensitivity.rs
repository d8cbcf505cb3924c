//! Criterion bench of the gradient of θ1(10) with respect to all 5 parameters and 4 initial values of
//! the double pendulum benchmark set-up (l1 = l2 = m1 = m2 = 1, u0 = [π/2, π/2, 0, 0], t ∈ [0, 10],
//! Tsit5, rtol = atol = 1e-8), by the discrete adjoint (keep-all and binomial(16)) and by forward
//! sensitivities (9 directions), by the continuous adjoint, and the gradient with one Hessian–vector
//! product, each as a ratio to the plain solve measured in the same run.
//!
//! Run: `cargo bench --bench sensitivity` (writes `data/benchmarks/sensitivity.json`).

use std::hint::black_box;

use criterion::Criterion;
use odesens::models::{DoublePendulum, DoublePendulumWithVjp};
use odesens::prelude::*;
use odesens::sensitivity::{
    Checkpointing, ComponentAt, ContinuousSettings, Gradient, SensitivityAlgorithm, gradient,
    hessian_vector_product,
};

mod common;
use common::median_ns;

fn problem() -> OdeProblem<DoublePendulum> {
    DoublePendulum::bench_problem()
}

fn options() -> SolverOptions {
    SolverOptions::default().tol(1e-8).save_end_only()
}

/// What a case computes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The discrete adjoint with AD vjps.
    Adjoint(Checkpointing),
    /// The discrete adjoint with the model's hand-written vjp (`DoublePendulumWithVjp`).
    AdjointHand(Checkpointing),
    /// Forward sensitivities, 9 directions.
    Forward,
    /// The continuous (interpolating) adjoint at the forward tolerances, segments of 32 steps.
    Continuous,
    /// The gradient and one Hessian–vector product (forward-over-adjoint).
    HessianVector,
}

const CASES: [(&str, Kind); 7] = [
    ("adjoint_keep_all", Kind::Adjoint(Checkpointing::KeepAll)),
    (
        "adjoint_binomial_16",
        Kind::Adjoint(Checkpointing::Binomial { snapshots: 16 }),
    ),
    ("forward_9_directions", Kind::Forward),
    (
        "adjoint_keep_all_hand_vjp",
        Kind::AdjointHand(Checkpointing::KeepAll),
    ),
    (
        "adjoint_binomial_16_hand_vjp",
        Kind::AdjointHand(Checkpointing::Binomial { snapshots: 16 }),
    ),
    ("adjoint_continuous", Kind::Continuous),
    ("hessian_vector_product", Kind::HessianVector),
];

/// The direction of the Hessian–vector product (5 parameters, then 4 initial values).
const V: [f64; 9] = [0.3, -0.2, 0.1, 0.05, 0.4, 1.0, -0.5, 0.25, 0.7];

/// The two models of the same set-up: AD derivatives, and the hand-written vjp.
struct Problems {
    ad: OdeProblem<DoublePendulum>,
    hand: OdeProblem<DoublePendulumWithVjp>,
}

impl Problems {
    fn new() -> Self {
        Self {
            ad: problem(),
            hand: DoublePendulum::bench_problem_with(DoublePendulumWithVjp),
        }
    }
}

fn compute(kind: Kind, problems: &Problems, options: &SolverOptions) -> Gradient {
    let (problem, hand) = (&problems.ad, &problems.hand);
    let objective = ComponentAt::new(0, 10.0);
    match kind {
        Kind::Adjoint(p) => gradient(
            problem,
            options,
            &objective,
            &SensitivityAlgorithm::adjoint(p),
        )
        .expect("adjoint"),
        Kind::AdjointHand(p) => {
            gradient(hand, options, &objective, &SensitivityAlgorithm::adjoint(p)).expect("adjoint")
        }
        Kind::Forward => {
            gradient(problem, options, &objective, &SensitivityAlgorithm::Forward).expect("forward")
        }
        Kind::Continuous => gradient(
            problem,
            options,
            &objective,
            &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
        )
        .expect("continuous adjoint"),
        Kind::HessianVector => {
            hessian_vector_product(problem, options, &objective, &V[..5], &V[5..])
                .expect("hessian-vector product")
                .gradient
        }
    }
}

fn benches(c: &mut Criterion) {
    let problems = Problems::new();
    let options = options();
    c.bench_function("pendulum_gradient/solve", |b| {
        b.iter(|| solve(black_box(&problems.ad), black_box(&options)).expect("solve"))
    });
    for (id, kind) in CASES {
        c.bench_function(&format!("pendulum_gradient/{id}"), |b| {
            b.iter(|| compute(kind, black_box(&problems), &options))
        });
    }
}

fn report() {
    let options = options();
    let Some(solve_ns) = median_ns("pendulum_gradient/solve") else {
        eprintln!("no criterion estimates found");
        return;
    };
    println!(
        "\nGradient of θ1(10) wrt 5 parameters + 4 initial values; plain Tsit5 solve {:.1} µs (median)",
        solve_ns / 1e3
    );
    println!(
        "{:<28} {:>12} {:>8} {:>10} {:>12} {:>11} {:>10} {:>10}",
        "method",
        "median",
        "ratio",
        "rhs (f64)",
        "dual passes",
        "tape sweeps",
        "recomputed",
        "snapshots"
    );
    let mut rows = Vec::new();
    let problems = Problems::new();
    let reference = compute(Kind::Adjoint(Checkpointing::KeepAll), &problems, &options);
    for (id, kind) in CASES {
        let g = compute(kind, &problems, &options);
        let Some(t) = median_ns(&format!("pendulum_gradient/{id}")) else {
            continue;
        };
        let diff = g
            .to_vec()
            .iter()
            .zip(&reference.to_vec())
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-300))
            .fold(0.0, f64::max);
        println!(
            "{id:<28} {:>9.1} µs {:>8.2} {:>10} {:>12} {:>11} {:>10} {:>10}",
            t / 1e3,
            t / solve_ns,
            g.stats.rhs_evaluations(),
            g.stats.derivatives.dual_passes,
            g.stats.derivatives.tape_sweeps,
            g.stats.recomputed_steps,
            g.stats.peak_snapshots
        );
        rows.push(serde_json::json!({
            "id": id, "median_time_s": t * 1e-9, "ratio_to_solve": t / solve_ns,
            "rhs_evaluations": g.stats.rhs_evaluations(), "dual_passes": g.stats.derivatives.dual_passes,
            "tape_sweeps": g.stats.derivatives.tape_sweeps,
            "recomputed_steps": g.stats.recomputed_steps, "peak_snapshots": g.stats.peak_snapshots,
            "peak_checkpoint_bytes": g.stats.peak_checkpoint_bytes,
            "max_rel_diff_to_keep_all_adjoint": diff,
            "gradient_params": g.wrt_params.to_vec(), "gradient_u0": g.wrt_u0.to_vec(),
        }));
    }
    common::write_report(
        "sensitivity.json",
        &serde_json::json!({
            "problem": "double pendulum, l1 = l2 = m1 = m2 = 1, g = 9.80665, u0 = [pi/2, pi/2, 0, 0], t in [0, 10], Tsit5, rtol = atol = 1e-8, G = theta1(10)",
            "command": "cargo bench --bench sensitivity",
            "threads": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "solve_median_time_s": solve_ns * 1e-9,
            "rows": rows,
            "peer_for_scale": { "diffsol_0.18": { "forward_4_params_ratio": 11.0, "discrete_adjoint_ratio": 9.0, "continuous_adjoint_ratio": 17.0 } },
        }),
    );
}

fn main() {
    common::run(benches, report);
}
