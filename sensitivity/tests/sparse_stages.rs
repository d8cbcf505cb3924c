//! The exact stage systems of implicit derivatives on a sparse problem go through sparse LU with
//! coloured stage Jacobians (issue 13): the same gradients as the dense route to round-off, agreeing with
//! forward tangents, with the fallback counted.

use odesens_models::Brusselator2D;
use odesens_sensitivity::{
    Checkpointing, Directions, Gradient, SensitivityAlgorithm, SquaredNormAt,
    forward_directional_derivatives, gradient,
};
use odesens_solver::*;

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().chain(b).fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f64::max)
}

fn tolerances(method: Method, (rtol, atol): (f64, f64), kind: LinearSolverKind) -> SolverOptions {
    SolverOptions::default()
        .method(method)
        .rtol(rtol)
        .atol(atol)
        .linear_solver(kind)
}

/// The keep-all discrete adjoint with sparse, then dense LU.
fn sparse_and_dense<M: OdeSystem>(
    problem: &OdeProblem<M>,
    objective: &SquaredNormAt,
    options: impl Fn(LinearSolverKind) -> SolverOptions,
) -> (Gradient, Gradient) {
    let adjoint = SensitivityAlgorithm::adjoint(Checkpointing::KeepAll);
    let run = |kind| gradient(problem, &options(kind), objective, &adjoint).unwrap();
    (run(LinearSolverKind::Sparse), run(LinearSolverKind::Dense))
}

#[test]
fn sparse_exact_stage_systems_match_the_dense_route() {
    // N = 6: 72 states, 144 parameters; the benchmark's tolerances.
    let problem = Brusselator2D::problem(6).unwrap();
    let objective = SquaredNormAt::new(1.0);
    // BDF factors the exact corrector matrix of every step: sparse LU on the solve's pattern.
    for method in [Method::Kvaerno5, Method::RadauIIA5, Method::Bdf] {
        let options = |kind| tolerances(method, (1e-7, 1e-5), kind);
        let (sparse, dense) = sparse_and_dense(&problem, &objective, options);
        let rel = max_rel_diff(&sparse.to_vec(), &dense.to_vec());
        println!(
            "{}: sparse vs dense {rel:.1e}; exact stage factorizations {} sparse ({} by GMRES), {} dense",
            method.name(),
            sparse.stats.exact_stage_factorizations,
            sparse.stats.krylov_stage_solves,
            dense.stats.exact_stage_factorizations
        );
        assert!(rel < 1e-9, "{}: {rel:e}", method.name());
        // The forward tangents along one direction of the parameters, the same route.
        let np = problem.model().n_params();
        let dp = ndarray::Array2::from_shape_fn((np, 1), |(q, _)| ((q % 7) as f64 - 3.0) / 3.0);
        let du0 = ndarray::Array2::zeros((problem.n_states(), 1));
        let along = forward_directional_derivatives(
            &problem,
            &options(LinearSolverKind::Sparse),
            &objective,
            &Directions::Custom {
                du0,
                dp: dp.clone(),
            },
        )
        .unwrap();
        let projected: f64 = sparse
            .wrt_params
            .iter()
            .zip(dp.column(0))
            .map(|(g, d)| g * d)
            .sum();
        let d = along.derivatives[0];
        let rel = (d - projected).abs() / d.abs();
        println!(
            "{}: forward {d:.12e} vs adjoint·v {projected:.12e} ({rel:.1e})",
            method.name()
        );
        assert!(rel < 1e-9, "{}: {rel:e}", method.name());
    }
}

#[test]
fn robertson_on_the_sparse_route_matches_the_dense_route() {
    // Robertson forced onto sparse LU (its 3 × 3 pattern is full): the stiff stage systems that the
    // frozen-Jacobian iteration does not settle go to GMRES, and to sparse LU where GMRES fails.
    let problem = odesens_models::Robertson::problem(1e5).unwrap();
    let objective = SquaredNormAt::new(1e5);
    for method in [Method::Kvaerno5, Method::TrBdf2] {
        let (sparse, dense) = sparse_and_dense(&problem, &objective, |kind| {
            tolerances(method, (1e-6, 1e-10), kind)
        });
        let rel = max_rel_diff(&sparse.to_vec(), &dense.to_vec());
        println!(
            "{}: sparse vs dense {rel:.1e}; sparse route: {} by GMRES, {} by sparse LU; dense: {}",
            method.name(),
            sparse.stats.krylov_stage_solves,
            sparse.stats.exact_stage_factorizations,
            dense.stats.exact_stage_factorizations
        );
        assert!(rel < 1e-9, "{}: {rel:e}", method.name());
        assert!(sparse.stats.krylov_stage_solves + sparse.stats.exact_stage_factorizations > 0);
    }
}
