//! Agreement with reference values from the literature and with conserved quantities.

use odesens_models::{
    Arenstorf, DoublePendulum, ExponentialDecay, LinearOscillator, LotkaVolterra,
};
use odesens_solver::*;
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(include_str!("../../data/reference/double_pendulum.json"))
        .expect("valid JSON")
}

fn vec_of(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn double_pendulum_u10_matches_reference_for_every_method() {
    let r = reference();
    let bench = &r["bench"];
    let u_ref = vec_of(&bench["u_end"]);
    let problem = OdeProblem::new(
        DoublePendulum,
        vec_of(&bench["u0"]),
        DoublePendulum::bench_params(),
        (0.0, 10.0),
    )
    .unwrap();
    for method in Method::ALL {
        let options = SolverOptions::default()
            .method(method)
            .tol(1e-12)
            .save_end_only()
            .max_steps(1_000_000);
        let sol = solve(&problem, &options).unwrap();
        let err = u_ref
            .iter()
            .zip(&sol.u_end)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("{method}: |u(10) − ref| = {err:.2e}, {:?}", sol.stats);
        // The reference is printed to 13 significant digits (≈ 1e-12 absolute on θ̇ ≈ 10).
        assert!(err < 1e-8, "{method}: error {err:e} at rtol = atol = 1e-12");
    }
}

#[test]
fn double_pendulum_course_norm_at_t2() {
    let r = reference();
    let course = &r["course"];
    let problem = OdeProblem::new(
        DoublePendulum,
        vec_of(&course["u0"]),
        DoublePendulum::standard_params(),
        (0.0, 2.0),
    )
    .unwrap();
    let sol = solve(
        &problem,
        &SolverOptions::default()
            .method(Method::Vern9)
            .tol(1e-13)
            .save_end_only(),
    )
    .unwrap();
    let g: f64 = sol.u_end.iter().map(|x| x * x).sum();
    let g_ref = course["G_norm_squared_u_end"].as_f64().unwrap();
    assert!(
        (g - g_ref).abs() / g_ref < 1e-10,
        "G = {g}, reference {g_ref}"
    );
}

#[test]
fn double_pendulum_energy_drift_is_bounded() {
    let p = DoublePendulum::standard_params();
    let problem = OdeProblem::new(
        DoublePendulum,
        vec![2.0, 2.0, 0.0, 0.0],
        p.clone(),
        (0.0, 10.0),
    )
    .unwrap();
    for (method, tol, bound) in [
        (Method::Tsit5, 1e-12, 1e-9),
        (Method::Vern9, 1e-12, 1e-9),
        (Method::Tsit5, 1e-8, 1e-5),
    ] {
        let sol = solve(&problem, &SolverOptions::default().method(method).tol(tol)).unwrap();
        let drift = DoublePendulum::max_energy_drift(&sol.states, &p);
        println!(
            "{method} tol {tol:e}: max relative energy drift {drift:.2e} over {} steps",
            sol.times.len()
        );
        assert!(
            drift < bound,
            "{method} at {tol:e}: energy drift {drift:e} ≥ {bound:e}"
        );
    }
}

#[test]
fn arenstorf_orbit_closes_after_one_period() {
    let problem = OdeProblem::new(
        Arenstorf,
        Arenstorf::U0.to_vec(),
        vec![Arenstorf::MU],
        (0.0, Arenstorf::PERIOD),
    )
    .unwrap();
    for (method, tol, bound) in [
        (Method::Vern9, 1e-13, 1e-8),
        (Method::Vern7, 1e-12, 1e-7),
        (Method::Tsit5, 1e-12, 1e-6),
        (Method::Dp5, 1e-12, 1e-6),
    ] {
        let sol = solve(
            &problem,
            &SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only(),
        )
        .unwrap();
        let gap = sol
            .u_end
            .iter()
            .zip(Arenstorf::U0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "{method}: |u(T) − u0| = {gap:.2e} ({} steps)",
            sol.stats.accepted_steps
        );
        assert!(gap < bound, "{method}: orbit does not close: {gap:e}");
    }
}

#[test]
fn lotka_volterra_invariant_is_conserved() {
    let p = LotkaVolterra::classic_params();
    let problem = OdeProblem::new(LotkaVolterra, vec![1.0, 1.0], p.clone(), (0.0, 30.0)).unwrap();
    let sol = solve(
        &problem,
        &SolverOptions::default().method(Method::Vern7).tol(1e-11),
    )
    .unwrap();
    let v0 = LotkaVolterra::invariant(&[1.0, 1.0], &p);
    for row in sol.states.rows() {
        assert!((LotkaVolterra::invariant(&row.to_vec(), &p) - v0).abs() < 1e-8);
    }
}

#[test]
fn closed_form_solutions_forward_and_backward() {
    // Forward and backward in time, at a tight tolerance.
    for (t0, t1) in [(0.0, 3.0), (3.0, 0.0), (-1.0, -4.0)] {
        let problem = OdeProblem::new(ExponentialDecay, vec![2.0], vec![0.7], (t0, t1)).unwrap();
        let sol = solve(&problem, &SolverOptions::default().tol(1e-11)).unwrap();
        let exact = ExponentialDecay::exact(2.0, 0.7, t0, t1);
        assert!(
            (sol.u_end[0] - exact).abs() < 1e-9 * exact.abs().max(1.0),
            "decay {t0} → {t1}"
        );
        assert_eq!(*sol.times.last().unwrap(), t1);
        let osc =
            OdeProblem::new(LinearOscillator, vec![1.0, -0.5], vec![2.0, 0.1], (t0, t1)).unwrap();
        let sol = solve(
            &osc,
            &SolverOptions::default().method(Method::Vern7).tol(1e-12),
        )
        .unwrap();
        let exact = LinearOscillator::exact([1.0, -0.5], 2.0, 0.1, t0, t1);
        for (got, want) in sol.u_end.iter().zip(exact) {
            assert!((got - want).abs() < 1e-9, "oscillator {t0} → {t1}");
        }
    }
}
