//! The interpolating continuous adjoint with an implicit backward solve (issue 13, item 3): λ' = −f_uᵀλ
//! by Kvaerno5, Radau IIA5 or BDF with Newton on the transposed Jacobian (dense, or sparse on the forward
//! problem's pattern transposed), q by the backward method's stage quadrature. Checked against the exact
//! discrete adjoint (within 10× the tolerances), against itself across linear algebra and checkpointing,
//! and for the settings it cannot honour.

use odesens_models::compare::rel_diff_max_norm as rel_diff;
use odesens_models::{Brusselator2D, Robertson};
use odesens_sensitivity::{
    Checkpointing, ContinuousSettings, Gradient, IntegralOfSquare, LeastSquares, Objective,
    SensitivityAlgorithm, SensitivityError, SquaredNormAt, gradient,
};
use odesens_solver::*;

const BACKWARD: [Method; 3] = [Method::Kvaerno5, Method::RadauIIA5, Method::Bdf];

/// The forward method that goes with a backward one: itself, except Radau IIA5 for BDF. A BDF forward
/// solve's exact discrete gradient carries BDF's own error, larger than the continuous gradient's.
/// On Robertson ∫y2² against Radau at rtol 1e-11, the discrete BDF gradient is 3.0e-6 off at this
/// test's tolerances (rtol 1e-8, atol 1e-12), 3.6e-7 with atol 1e-14 and 1.3e-7 at rtol 1e-10. The
/// continuous gradient on the same BDF forward solves is 1.4e-8, 8.5e-9 and 2.8e-10 off. The
/// difference between the two therefore does not measure the backward solve.
fn forward_method(backward: Method) -> Method {
    if backward.is_multistep() {
        Method::RadauIIA5
    } else {
        backward
    }
}

fn options(method: Method, (rtol, atol): (f64, f64)) -> SolverOptions {
    SolverOptions::default()
        .method(forward_method(method))
        .rtol(rtol)
        .atol(atol)
        .max_steps(1_000_000)
}

fn continuous(method: Method, checkpointing: Checkpointing) -> SensitivityAlgorithm {
    SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
        method: Some(method),
        checkpointing,
        ..Default::default()
    })
}

fn discrete<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    opts: &SolverOptions,
    objective: &O,
) -> Gradient {
    gradient(
        problem,
        opts,
        objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap()
}

/// The continuous gradient's bound relative to the tolerance. Radau's forward dense output is its
/// collocation polynomial. Kvaerno5's is the cubic Hermite interpolant of the step ends (as in
/// OrdinaryDiffEq and diffrax), whose error in u(t), not the backward solve, limits the gradient (on the
/// Brusselator N = 16 the backward tolerance is already 100× tighter than the forward one). BDF's
/// backward solve (on Radau's forward one, see [`forward_method`]) has the global error of a multistep
/// method, 10–60 tolerances.
fn bound(method: Method) -> f64 {
    if method == Method::RadauIIA5 {
        10.0
    } else {
        100.0
    }
}

#[test]
fn robertson_implicit_backward_solve_matches_the_discrete_adjoint() {
    // Robertson to t = 1e5 (stiff: an explicit backward solve would need ~1e7 steps), observed at four
    // times (four jumps of λ), and a running cost, so both the observation jumps and the quadrature of
    // r_p and f_pᵀλ are exercised.
    let problem = Robertson::problem(1e5).unwrap();
    let times = vec![1.0, 10.0, 1e3, 1e5];
    let data = ndarray::Array2::zeros((times.len(), 3));
    let observed = LeastSquares::new(times, data).unwrap();
    let integral = IntegralOfSquare::new(1);
    let tol = (1e-8, 1e-12);
    for method in BACKWARD {
        let opts = options(method, tol);
        let algorithm = continuous(method, Checkpointing::KeepAll);
        // ∫ y2² dt has λ ~ 1e-8 (y2 ~ 1e-5): the backward atol must be set on λ's scale, as in CVODES
        // (with the forward atol 1e-12 the error was 7e-4 in 33 backward steps).
        let small_lambda = SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
            method: Some(method),
            atol: Some(1e-16),
            ..Default::default()
        });
        let checks: [(&str, Gradient, Gradient); 2] = [
            (
                "observations",
                discrete(&problem, &opts, &observed),
                gradient(&problem, &opts, &observed, &algorithm).unwrap(),
            ),
            (
                "integral of y2²",
                discrete(&problem, &opts, &integral),
                gradient(&problem, &opts, &integral, &small_lambda).unwrap(),
            ),
        ];
        for (what, exact, cont) in checks {
            let rel = rel_diff(&cont.to_vec(), &exact.to_vec());
            let back = cont.backward.unwrap().backward;
            println!(
                "Robertson {what}, {}: continuous vs discrete {rel:.1e}; backward {} steps, {} \
                 Jacobians, {} LU; forward {} steps",
                method.name(),
                back.accepted_steps,
                back.jacobian_evaluations,
                back.factorizations,
                cont.stats.forward.accepted_steps
            );
            // Measured (observations, integral): Kvaerno5 1.4e-7, 8.5e-8; Radau IIA5 7.7e-8, 5.4e-8;
            // BDF 4.1e-7, 1.3e-7.
            assert!(rel < bound(method) * tol.0, "{}: {rel:e}", method.name());
            assert_eq!(cont.value, exact.value);
            // A stiff backward solve in about as many steps as the forward one.
            assert!(back.accepted_steps < 10 * cont.stats.forward.accepted_steps);
            assert!(back.jacobian_evaluations > 0 && back.factorizations > 0);
        }
    }
}

#[test]
fn brusselator_sparse_backward_solve_matches_the_discrete_adjoint() {
    // N = 16: 512 states, 1,024 parameters; the sparse path transposes the forward pattern.
    let problem = Brusselator2D::problem(16).unwrap();
    let objective = SquaredNormAt::new(problem.t_end());
    let tol = (1e-7, 1e-9);
    for method in BACKWARD {
        let opts = options(method, tol).linear_solver(LinearSolverKind::Sparse);
        let exact = discrete(&problem, &opts, &objective);
        let algorithm = SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
            method: Some(method),
            rtol: Some(tol.0 / 100.0),
            atol: Some(tol.1 / 100.0),
            ..Default::default()
        });
        let cont = gradient(&problem, &opts, &objective, &algorithm).unwrap();
        let rel = rel_diff(&cont.to_vec(), &exact.to_vec());
        let back = cont.backward.unwrap().backward;
        println!(
            "Brusselator N = 16, {}: continuous vs discrete {rel:.1e}; backward {} steps, {} Jacobians, \
             {} LU, {} Newton iterations; forward {} steps",
            method.name(),
            back.accepted_steps,
            back.jacobian_evaluations,
            back.factorizations,
            back.newton_iterations,
            cont.stats.forward.accepted_steps
        );
        // Measured: Kvaerno5 6.9e-6, Radau IIA5 1.1e-7, BDF 4.8e-8.
        assert!(rel < bound(method) * tol.0, "{}: {rel:e}", method.name());
    }
}

#[test]
fn sparse_and_dense_backward_solves_agree() {
    // N = 6 (72 states): the transposed sparse Jacobian against the dense −f_uᵀ, forward and backward
    // with the same linear algebra.
    let problem = Brusselator2D::problem(6).unwrap();
    let objective = SquaredNormAt::new(problem.t_end());
    for method in BACKWARD {
        let run = |kind| {
            let opts = options(method, (1e-8, 1e-10)).linear_solver(kind);
            gradient(
                &problem,
                &opts,
                &objective,
                &continuous(method, Checkpointing::KeepAll),
            )
            .unwrap()
        };
        let (sparse, dense) = (run(LinearSolverKind::Sparse), run(LinearSolverKind::Dense));
        let rel = rel_diff(&sparse.to_vec(), &dense.to_vec());
        let steps = |g: &Gradient| g.backward.unwrap().backward.accepted_steps;
        println!(
            "{}: sparse vs dense {rel:.1e}; backward steps {} / {}",
            method.name(),
            steps(&sparse),
            steps(&dense)
        );
        assert!(rel < 1e-9, "{}: {rel:e}", method.name());
        assert_eq!(steps(&sparse), steps(&dense));
    }
}

#[test]
fn checkpointing_policies_replay_the_implicit_backward_solve_bit_for_bit() {
    let problem = Robertson::problem(1e3).unwrap();
    let objective = IntegralOfSquare::new(0);
    for method in BACKWARD {
        let opts = options(method, (1e-6, 1e-10));
        let run = |checkpointing| {
            let algorithm = SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
                method: Some(method),
                segment_steps: Some(4),
                checkpointing,
                ..Default::default()
            });
            gradient(&problem, &opts, &objective, &algorithm).unwrap()
        };
        let all = run(Checkpointing::KeepAll);
        for checkpointing in [
            Checkpointing::Binomial { snapshots: 2 },
            Checkpointing::MemoryBudget { bytes: 4096 },
        ] {
            let other = run(checkpointing);
            assert_eq!(other.to_vec(), all.to_vec(), "{checkpointing:?}");
            assert!(other.stats.recomputed_steps > 0);
        }
    }
}

#[test]
fn settings_an_implicit_backward_solve_cannot_honour_are_errors() {
    let problem = Robertson::problem(10.0).unwrap();
    let objective = IntegralOfSquare::new(0);
    let opts = options(Method::Kvaerno5, (1e-6, 1e-10));
    let settings = ContinuousSettings {
        quadrature_in_error_norm: true,
        ..Default::default()
    };
    let err = gradient(
        &problem,
        &opts,
        &objective,
        &SensitivityAlgorithm::InterpolatingAdjoint(settings),
    )
    .unwrap_err();
    assert!(
        matches!(err, SensitivityError::InvalidSetting { name, .. } if name.contains("quadrature")),
        "{err}"
    );
    let err = gradient(
        &problem,
        &opts,
        &objective,
        &SensitivityAlgorithm::BacksolveAdjoint(ContinuousSettings::default()),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SensitivityError::UnsupportedMethod {
                method: Method::Kvaerno5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("backsolve"), "{err}");
}
