//! The 2-D Brusselator of SciMLBenchmarks' "BrussScaling": the loss at the benchmark's parameters against
//! reference values (data/reference/brusselator.json); stiffness detection, and what it means for
//! derivatives of explicit solves.

use ndarray::Array2;
use odesens_models::Brusselator2D;
use odesens_sensitivity::{
    Checkpointing, ContinuousSettings, Directions, ForwardSettings, LeastSquares,
    SensitivityAlgorithm, forward_directional_derivatives, forward_sensitivities, gradient,
    objective_value,
};
use odesens_solver::*;

/// G = Σ_k Σ_m (1 − U_m(t_k))²/2 at t = 0, 0.1, …, 1.
fn loss(n: usize) -> LeastSquares {
    let times: Vec<f64> = (0..=10).map(|k| 0.1 * f64::from(k)).collect();
    let data = Array2::from_elem((times.len(), 2 * n * n), 1.0);
    LeastSquares::new(times, data).unwrap()
}

#[test]
fn loss_matches_the_reference_values() {
    // SciPy Radau/DOP853 agreeing to 12 digits (shared reference notes, copied to data/reference).
    for (n, want) in [
        (3, 72.8957837289),
        (4, 170.704372654),
        (5, 296.823653920),
        (8, 827.360985405),
    ] {
        let problem = Brusselator2D::problem(n).unwrap();
        let options = SolverOptions::default().method(Method::Vern9).tol(1e-12);
        let g = objective_value(&problem, &options, &loss(n)).unwrap();
        println!("N = {n}: G = {g:.10} (reference {want})");
        assert!((g - want).abs() < 1e-9 * want, "N = {n}: {g} vs {want}");
    }
}

#[test]
fn stability_limited_explicit_solves_are_flagged_and_the_continuous_adjoint_copes() {
    // N = 4 (32 states, 64 parameters) at the benchmark's tolerances: Tsit5's steps are limited by
    // stability (diffusion eigenvalues down to −720), not accuracy. The solution is fine, but the exact
    // derivative of that computed solution with its steps frozen is not the derivative of the solve: the
    // tangents carry stiff components that the frozen steps amplify (|R(hλ)| > 1 now and then).
    let n = 4;
    let problem = Brusselator2D::problem(n).unwrap();
    let objective = loss(n);
    let options = SolverOptions::default().rtol(1e-7).atol(1e-5);
    // Reference: the discrete adjoint of 1000 fixed steps, well inside the stability region.
    let reference = gradient(
        &problem,
        &SolverOptions::default().fixed_step(1e-3),
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let rel = |g: &ndarray::Array1<f64>| {
        let scale = reference
            .wrt_params
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs()));
        g.iter()
            .zip(reference.wrt_params.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale
    };
    let discrete = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let stats = discrete.stats.forward;
    println!(
        "N = 4: {} of {} steps stability-limited, stiffness detected at t = {:?}; discrete adjoint error {:.1e}",
        stats.stability_limited_steps,
        stats.accepted_steps,
        stats.stiffness_detected_at,
        rel(&discrete.wrt_params)
    );
    assert!(stats.stiffness_detected_at.is_some());
    assert!(
        rel(&discrete.wrt_params) > 1.0,
        "the hazard this test documents"
    );
    // Forward sensitivities differentiate the same frozen steps and blow up alike ...
    let forward =
        forward_directional_derivatives(&problem, &options, &objective, &Directions::Parameters)
            .unwrap();
    assert!(rel(&forward.derivatives) > 1.0);
    // ... while the continuous adjoint, whose backward solve controls its own error, is right.
    let continuous = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
    )
    .unwrap();
    let err = rel(&continuous.wrt_params);
    println!("N = 4: continuous adjoint error {err:.1e}");
    assert!(err < 1e-6, "{err:e}");
    // And so are forward sensitivities with the tangents in the error control.
    let controlled = forward_sensitivities(
        &problem,
        &options,
        &Directions::InitialValues,
        &[1.0],
        ForwardSettings {
            tangent_error_control: true,
        },
    )
    .unwrap();
    assert!(controlled.sensitivities.iter().all(|x| x.abs() < 1e3));
}

#[test]
fn stiffness_detection() {
    use odesens_models::{DoublePendulum, VanDerPol};
    let pendulum = solve(
        &DoublePendulum::bench_problem(),
        &SolverOptions::default().tol(1e-8).save_end_only(),
    )
    .unwrap();
    assert_eq!(pendulum.stats.stability_limited_steps, 0);
    assert_eq!(pendulum.stats.stiffness_detected_at, None);
    let vdp = OdeProblem::new(VanDerPol, vec![2.0, 0.0], vec![1000.0], (0.0, 10.0)).unwrap();
    for method in Method::ALL {
        let sol = solve(
            &vdp,
            &SolverOptions::default()
                .method(method)
                .tol(1e-6)
                .save_end_only(),
        )
        .unwrap();
        println!("{}: {:?}", method.name(), sol.stats);
        let t = sol
            .stats
            .stiffness_detected_at
            .expect("Van der Pol μ = 1000 is stiff");
        println!(
            "{}: boundary {:.3}, {} of {} steps stability-limited, detected at t = {t:.3}",
            method.name(),
            method.tableau().real_stability_boundary(),
            sol.stats.stability_limited_steps,
            sol.stats.accepted_steps
        );
        assert!(t < 0.1);
        assert!(sol.stats.stability_limited_steps * 2 > sol.stats.accepted_steps);
    }
    // The real stability boundaries of the stability polynomials (DP5: 3.3, BS3: 2.5 in the literature).
    assert!((Method::Dp5.tableau().real_stability_boundary() - 3.306).abs() < 2e-3);
    assert!((Method::Bs3.tableau().real_stability_boundary() - 2.512).abs() < 2e-3);
}
