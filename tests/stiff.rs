//! Stiff test problems with published reference values (data/reference/stiff.json): what the explicit
//! methods do with them.

use odesens::models::{Hires, Robertson};
use odesens::prelude::*;

#[test]
fn hires_with_explicit_methods_matches_the_reference() {
    // HIRES is only mildly stiff: explicit methods get there, with many stability-limited steps.
    for (method, tol, bound) in [(Method::Vern9, 1e-12, 1e-9), (Method::Tsit5, 1e-10, 1e-7)] {
        let sol = solve(
            &Hires::problem().unwrap(),
            &SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only()
                .max_steps(1_000_000),
        )
        .unwrap();
        let err = sol
            .u_end
            .iter()
            .zip(Hires::REFERENCE)
            .map(|(a, b)| ((a - b) / b).abs())
            .fold(0.0, f64::max);
        println!(
            "HIRES {} tol {tol:.0e}: max relative error {err:.1e}; {} steps, {} stability-limited",
            method.name(),
            sol.stats.accepted_steps,
            sol.stats.stability_limited_steps
        );
        assert!(err < bound, "{err:e}");
    }
}

#[test]
fn robertson_is_flagged_stiff_and_explicit_methods_stop_cleanly() {
    // Short span: an explicit method gets there, flagging stiffness; the mass stays 1.
    let sol = solve(
        &Robertson::problem(1.0).unwrap(),
        &SolverOptions::default()
            .rtol(1e-6)
            .atol(1e-10)
            .save_end_only()
            .max_steps(1_000_000),
    )
    .unwrap();
    let mass: f64 = sol.u_end.iter().sum();
    println!(
        "Robertson to t = 1 by Tsit5: {} steps, {} stability-limited, stiff from t = {:?}",
        sol.stats.accepted_steps,
        sol.stats.stability_limited_steps,
        sol.stats.stiffness_detected_at
    );
    assert!(sol.stats.stiffness_detected_at.is_some());
    assert!((mass - 1.0).abs() < 1e-9);
    // t = 1: y1 = 0.9664597373330035 (Hairer's reference run).
    assert!((sol.u_end[0] - 0.9664597373330035).abs() < 1e-5);
    // To t = 1e5 an explicit method would need ~1e9 steps: a clear error, not a hang or a wrong answer.
    let err = solve(
        &Robertson::problem(Robertson::REFERENCE[0].0).unwrap(),
        &SolverOptions::default().save_end_only().max_steps(20_000),
    )
    .unwrap_err();
    match err {
        SolverError::MaxStepsReached { t, max_steps } => {
            println!(
                "Robertson to t = 1e5 by Tsit5: stopped at t = {t:.3} after {max_steps} steps"
            );
            assert!(t < 1e3);
        }
        e => panic!("expected MaxStepsReached, got {e:?}"),
    }
}
