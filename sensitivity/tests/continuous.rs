//! The continuous adjoint (interpolating and backsolve) against the exact discrete adjoint.

use odesens_models::compare::rel_diff_max_norm;
use odesens_models::{DoublePendulum, LotkaVolterra};
use odesens_sensitivity::{
    Checkpointing, ContinuousSettings, Gradient, IntegralOfSquare, SensitivityAlgorithm,
    SquaredNormAt, gradient,
};
use odesens_solver::*;

fn rel_diff(a: &Gradient, b: &Gradient) -> f64 {
    rel_diff_max_norm(&a.to_vec(), &b.to_vec())
}

#[test]
fn continuous_adjoint_converges_to_the_discrete_one() {
    let problem = DoublePendulum::standard_problem(2.0).unwrap();
    let objective = SquaredNormAt::new(2.0);
    let reference = gradient(
        &problem,
        &SolverOptions::default().method(Method::Vern9).tol(1e-13),
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    for tol in [1e-4, 1e-6, 1e-8, 1e-10, 1e-12] {
        let options = SolverOptions::default().tol(tol);
        let c = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
        )
        .unwrap();
        let d = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        println!(
            "tol {tol:.0e}: continuous {:.2e}, discrete {:.2e} (to the reference); backward steps {}, segments {}",
            rel_diff(&c, &reference),
            rel_diff(&d, &reference),
            c.backward.unwrap().backward.accepted_steps,
            c.backward.unwrap().segments
        );
    }
}

/// Relative difference to the converged discrete gradient, continuous and discrete, per tolerance.
fn convergence_table<M: OdeSystem, O: odesens_sensitivity::Objective>(
    name: &str,
    problem: &OdeProblem<M>,
    objective: &O,
) -> Vec<(f64, f64, f64)> {
    let reference = gradient(
        problem,
        &SolverOptions::default().method(Method::Vern9).tol(1e-14),
        objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let mut rows = Vec::new();
    for tol in [1e-4, 1e-6, 1e-8, 1e-10, 1e-12] {
        let options = SolverOptions::default().tol(tol);
        let c = gradient(
            problem,
            &options,
            objective,
            &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
        )
        .unwrap();
        let d = gradient(
            problem,
            &options,
            objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let row = (tol, rel_diff(&c, &reference), rel_diff(&d, &reference));
        println!(
            "{name}: tol {tol:.0e}: continuous {:.2e}, discrete {:.2e}, ratio {:.2}; backward steps {}",
            row.1,
            row.2,
            row.1 / row.2,
            c.backward.unwrap().backward.accepted_steps
        );
        rows.push(row);
    }
    rows
}

#[test]
fn continuous_adjoint_is_as_accurate_as_the_discrete_one() {
    let pendulum = DoublePendulum::standard_problem(2.0).unwrap();
    let lv = OdeProblem::new(
        LotkaVolterra,
        vec![1.0, 1.0],
        LotkaVolterra::classic_params(),
        (0.0, 5.0),
    )
    .unwrap();
    let data = ndarray::Array2::from_shape_vec((3, 2), vec![1.0, 2.0, 3.0, 0.5, 0.2, 1.0]).unwrap();
    let observations = odesens_sensitivity::LeastSquares::new(vec![0.5, 1.25, 5.0], data).unwrap();
    let tables = [
        convergence_table("pendulum ‖u(2)‖²", &pendulum, &SquaredNormAt::new(2.0)),
        convergence_table("Lotka–Volterra ∫x²", &lv, &IntegralOfSquare::new(0)),
        convergence_table(
            "Lotka–Volterra least squares at 3 times",
            &lv,
            &observations,
        ),
    ];
    for rows in tables {
        let mut last = f64::INFINITY;
        for (tol, cont, disc) in rows {
            // Converges with the tolerance, and within 3× of the discrete adjoint's own error.
            assert!(cont < 50.0 * tol, "tol {tol:e}: {cont:e}");
            assert!(cont < last, "no convergence at tol {tol:e}");
            assert!(
                cont <= 3.0 * disc.max(1e-13),
                "tol {tol:e}: {cont:e} vs discrete {disc:e}"
            );
            last = cont;
        }
    }
}

/// The discrete adjoint at Vern9, 1e-13 (with `tstops`): a converged reference.
fn reference<M: OdeSystem>(problem: &OdeProblem<M>, tstops: Vec<f64>) -> Gradient {
    gradient(
        problem,
        &SolverOptions::default()
            .method(Method::Vern9)
            .tol(1e-13)
            .tstops(tstops),
        &SquaredNormAt::new(problem.t_end()),
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap()
}

/// Backward steps and rhs (= vjp) evaluations with the quadrature out of / in the error norm; returns
/// both gradients' relative differences to `reference`.
fn seminorm_counts<M: OdeSystem>(
    name: &str,
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    reference: &Gradient,
) -> (f64, f64) {
    let objective = SquaredNormAt::new(problem.t_end());
    let semi = gradient(
        problem,
        options,
        &objective,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
    )
    .unwrap();
    let full = gradient(
        problem,
        options,
        &objective,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
            quadrature_in_error_norm: true,
            ..Default::default()
        }),
    )
    .unwrap();
    let (s, f) = (
        semi.backward.unwrap().backward,
        full.backward.unwrap().backward,
    );
    let (ds, df) = (rel_diff(&semi, reference), rel_diff(&full, reference));
    println!(
        "{name}: seminorm {} steps ({} rejected, {} rhs = vjps), error {ds:.1e}; full norm {} steps \
         ({} rejected, {} rhs), error {df:.1e}",
        s.accepted_steps,
        s.rejected_steps,
        s.rhs_evaluations,
        f.accepted_steps,
        f.rejected_steps,
        f.rhs_evaluations,
    );
    (ds, df)
}

#[test]
fn seminorm_counts_with_few_and_many_parameters() {
    use odesens_models::DrivenDoublePendulum;
    let options = SolverOptions::default().tol(1e-8);
    let pendulum = DoublePendulum::standard_problem(2.0).unwrap();
    let (s, f) = seminorm_counts(
        "double pendulum, 5 parameters",
        &pendulum,
        &options,
        &reference(&pendulum, vec![]),
    );
    assert!(s < 1e-6 && f < 1e-6);
    let many = DrivenDoublePendulum::problem(128, 2.0).unwrap();
    let knots = many.model().knot_times();
    let exact = reference(&many, knots.clone());
    // The torque has kinks at the 126 interior knots; with them as tstops (as a careful user would):
    let (s, f) = seminorm_counts(
        "driven pendulum, 128 parameters, knots as tstops",
        &many,
        &options.clone().tstops(knots),
        &exact,
    );
    assert!(s < 1e-6 && f < 1e-6);
    // Without: the quadratures' integrands have kinks the error control must resolve.
    let (s, f) = seminorm_counts("driven pendulum, 128 parameters", &many, &options, &exact);
    assert!(s < 1e-2 && f < 1e-2);
}

#[test]
fn backsolve_drifts_on_the_chaotic_pendulum() {
    let options = SolverOptions::default().tol(1e-10);
    let mut drift = Vec::new();
    for t_end in [1.0, 2.0, 5.0, 10.0, 20.0] {
        let problem = DoublePendulum::standard_problem(t_end).unwrap();
        let objective = SquaredNormAt::new(t_end);
        let back = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::BacksolveAdjoint(ContinuousSettings::default()),
        )
        .unwrap();
        let interp = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
        )
        .unwrap();
        let discrete = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let u0 = back.u0_reconstructed.clone().unwrap();
        let err = u0
            .iter()
            .zip(problem.u0())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "T = {t_end:>4}: |u0 reconstructed − u0| = {err:.2e}; gradient vs discrete: backsolve {:.1e}, interpolating {:.1e}",
            rel_diff(&back, &discrete),
            rel_diff(&interp, &discrete)
        );
        drift.push(err);
    }
    // The reversed solve loses the trajectory: the drift grows by orders of magnitude with T.
    assert!(drift[0] < 1e-7, "{drift:?}");
    assert!(drift[4] > 1e3 * drift[0], "{drift:?}");
}

#[test]
fn backward_solve_with_its_own_method_and_bad_settings() {
    use odesens_sensitivity::{SensitivityError, hessian_vector_product};
    let problem = DoublePendulum::standard_problem(2.0).unwrap();
    let objective = SquaredNormAt::new(2.0);
    let reference = gradient(
        &problem,
        &SolverOptions::default().method(Method::Vern9).tol(1e-13),
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    // Forward by Vern9 (dense output with its extra stages), backward by BS3 or DP5 at other tolerances.
    for (method, tol, bound) in [(Method::Bs3, 1e-9, 1e-7), (Method::Dp5, 1e-11, 1e-9)] {
        let settings = ContinuousSettings {
            method: Some(method),
            rtol: Some(tol),
            atol: Some(tol),
            segment_steps: Some(7),
            ..Default::default()
        };
        let c = gradient(
            &problem,
            &SolverOptions::default().method(Method::Vern9).tol(1e-12),
            &objective,
            &SensitivityAlgorithm::InterpolatingAdjoint(settings),
        )
        .unwrap();
        let err = rel_diff(&c, &reference);
        println!("forward Vern9 1e-12, backward {method:?} {tol:.0e}: {err:.1e}");
        assert!(err < bound, "{method:?}: {err:e}");
    }
    // Bad settings are errors, not panics.
    let bad = gradient(
        &problem,
        &SolverOptions::default(),
        &objective,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
            segment_steps: Some(0),
            ..Default::default()
        }),
    );
    assert!(matches!(bad, Err(SensitivityError::InvalidSetting { .. })));
    let bad = gradient(
        &problem,
        &SolverOptions::default(),
        &objective,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
            rtol: Some(-1.0),
            ..Default::default()
        }),
    );
    assert!(matches!(bad, Err(SensitivityError::Solver(_))), "{bad:?}");
    let bad = hessian_vector_product(
        &problem,
        &SolverOptions::default(),
        &objective,
        &[1.0; 4],
        &[0.0; 4],
    );
    assert!(matches!(
        bad,
        Err(SensitivityError::DimensionMismatch {
            expected: 5,
            got: 4,
            ..
        })
    ));
    let bad = solve(&problem, &SolverOptions::default().error_norm_components(5));
    assert!(matches!(
        bad,
        Err(SolverError::InvalidOption {
            name: "error_norm_components",
            ..
        })
    ));
}

#[test]
fn checkpointing_policies_give_the_same_continuous_adjoint() {
    let problem = DoublePendulum::standard_problem(10.0).unwrap();
    let objective = SquaredNormAt::new(10.0);
    let options = SolverOptions::default().tol(1e-9);
    let run = |checkpointing: Checkpointing| {
        gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
                checkpointing,
                segment_steps: Some(16),
                ..Default::default()
            }),
        )
        .unwrap()
    };
    let all = run(Checkpointing::KeepAll);
    let segments = all.backward.unwrap().segments;
    assert!(segments > 20, "{segments} segments");
    assert_eq!(all.stats.peak_snapshots, segments);
    assert_eq!(all.stats.recomputed_steps, 0);
    let bits = |g: &Gradient| -> Vec<u64> { g.to_vec().iter().map(|x| x.to_bits()).collect() };
    for policy in [
        Checkpointing::Uniform { every: 16 },
        Checkpointing::Binomial { snapshots: 3 },
        Checkpointing::Binomial { snapshots: 1 },
        Checkpointing::MemoryBudget { bytes: 500 },
    ] {
        let c = run(policy);
        println!(
            "{policy:?}: {} segments, peak {} snapshots ({} B), {} steps recomputed",
            c.backward.unwrap().segments,
            c.stats.peak_snapshots,
            c.stats.peak_checkpoint_bytes,
            c.stats.recomputed_steps
        );
        assert_eq!(bits(&c), bits(&all), "{policy:?}");
        if let Checkpointing::Binomial { snapshots } = policy {
            assert!(c.stats.peak_snapshots <= snapshots);
            // Revolve over the segments: t(l, s) segments recomputed, each of 16 steps.
            let want = odesens_sensitivity::binomial_recomputations(segments, snapshots);
            assert_eq!(c.stats.recomputed_steps, 16 * want, "{policy:?}");
        }
    }
    let tiny = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
            checkpointing: Checkpointing::MemoryBudget { bytes: 8 },
            ..Default::default()
        }),
    );
    assert!(matches!(
        tiny,
        Err(odesens_sensitivity::SensitivityError::InvalidSetting { .. })
    ));
}
