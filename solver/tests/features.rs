//! Integrator features: tstops, save times, dense output, per-component atol, fixed steps, the step API,
//! serialization.

use odesens_models::{DoublePendulum, ExponentialDecay, Kepler, LinearOscillator};
use odesens_solver::*;

fn kepler(t_end: f64) -> OdeProblem<Kepler> {
    OdeProblem::new(
        Kepler,
        Kepler::u0(0.5).to_vec(),
        Vec::<f64>::new(),
        (0.0, t_end),
    )
    .unwrap()
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn tstops_are_hit_exactly() {
    let tstops = vec![0.1, 1.0 / 3.0, 2.0, 2.0 + 1e-9, 4.7];
    let sol = solve(
        &kepler(5.0),
        &SolverOptions::default().tstops(tstops.clone()),
    )
    .unwrap();
    for ts in tstops {
        assert!(
            sol.times.iter().any(|&t| t == ts),
            "tstop {ts} not a step point"
        );
    }
    assert_eq!(*sol.times.last().unwrap(), 5.0);
}

#[test]
fn save_at_values_match_the_exact_solution_for_every_method() {
    let times: Vec<f64> = (0..=50).map(|i| 0.1 * f64::from(i)).collect();
    for method in Method::ALL {
        let sol = solve(
            &kepler(5.0),
            &SolverOptions::default()
                .method(method)
                .tol(1e-10)
                .save_at(times.clone()),
        )
        .unwrap();
        assert_eq!(sol.times.to_vec(), times);
        for (i, &t) in times.iter().enumerate() {
            let err = max_err(&sol.states.row(i).to_vec(), &Kepler::exact(0.5, t));
            assert!(err < 1e-7, "{method} at t = {t}: {err:e}");
        }
        // No extra stages are spent beyond what the save times need.
        if !method.tableau().has_extra_stages() {
            assert_eq!(sol.stats.interpolation_rhs_evaluations, 0);
        }
    }
}

#[test]
fn dense_output_interpolates_anywhere() {
    for method in Method::ALL {
        let problem = kepler(4.0);
        let sol = solve(
            &problem,
            &SolverOptions::default()
                .method(method)
                .tol(1e-11)
                .dense(true),
        )
        .unwrap();
        for i in 0..=97 {
            let t = 4.0 * f64::from(i) / 97.0;
            let u = sol.interpolate(t).unwrap();
            let err = max_err(u.as_slice().unwrap(), &Kepler::exact(0.5, t));
            assert!(err < 1e-7, "{method} at t = {t}: {err:e}");
        }
        // At step points the interpolant reproduces the steps.
        let steps = solve(
            &problem,
            &SolverOptions::default().method(method).tol(1e-11),
        )
        .unwrap();
        for (i, &t) in steps.times.iter().enumerate() {
            let u = sol.interpolate(t).unwrap();
            assert!(
                max_err(u.as_slice().unwrap(), &steps.states.row(i).to_vec()) < 1e-13,
                "{method} node {t}"
            );
        }
    }
}

#[test]
fn backward_integration_with_save_at_and_dense() {
    let problem = OdeProblem::new(
        LinearOscillator,
        vec![1.0, 0.0],
        vec![1.5, 0.05],
        (3.0, -1.0),
    )
    .unwrap();
    let times = vec![3.0, 2.0, 0.5, -1.0];
    let sol = solve(
        &problem,
        &SolverOptions::default()
            .tol(1e-11)
            .save_at(times.clone())
            .dense(true),
    )
    .unwrap();
    for (i, &t) in times.iter().enumerate() {
        let exact = LinearOscillator::exact([1.0, 0.0], 1.5, 0.05, 3.0, t);
        assert!(
            max_err(&sol.states.row(i).to_vec(), &exact) < 1e-9,
            "t = {t}"
        );
        let u = sol
            .interpolate(t - if t > -1.0 { 0.3 } else { 0.0 })
            .unwrap();
        let t_i = t - if t > -1.0 { 0.3 } else { 0.0 };
        assert!(
            max_err(
                u.as_slice().unwrap(),
                &LinearOscillator::exact([1.0, 0.0], 1.5, 0.05, 3.0, t_i)
            ) < 1e-9
        );
    }
}

#[test]
fn per_component_atol_controls_each_component() {
    // A tiny component with a loose scalar atol is solved inaccurately; a per-component atol fixes it.
    let problem = OdeProblem::new(
        LinearOscillator,
        vec![1e-6, 0.0],
        vec![1.0, 0.0],
        (0.0, 10.0),
    )
    .unwrap();
    let exact = LinearOscillator::exact([1e-6, 0.0], 1.0, 0.0, 0.0, 10.0);
    let loose = solve(&problem, &SolverOptions::default().rtol(1e-10).atol(1e-3)).unwrap();
    let tight = solve(
        &problem,
        &SolverOptions::default()
            .rtol(1e-10)
            .atol(vec![1e-16, 1e-16]),
    )
    .unwrap();
    let e_loose = (loose.u_end[0] - exact[0]).abs() / 1e-6;
    let e_tight = (tight.u_end[0] - exact[0]).abs() / 1e-6;
    assert!(
        e_tight < 1e-8,
        "relative error with per-component atol: {e_tight:e}"
    );
    assert!(e_loose > 100.0 * e_tight);
}

#[test]
fn fixed_step_mode_takes_exactly_the_steps_asked() {
    let problem = OdeProblem::new(ExponentialDecay, vec![1.0], vec![1.0], (0.0, 1.0)).unwrap();
    let sol = solve(&problem, &SolverOptions::default().fixed_step(0.1)).unwrap();
    assert_eq!(sol.stats.accepted_steps, 10);
    assert_eq!(sol.stats.rejected_steps, 0);
    // Tsit5 is FSAL: 6 evaluations a step plus the first.
    assert_eq!(sol.stats.rhs_evaluations, 61);
    assert_eq!(*sol.times.last().unwrap(), 1.0);
}

#[test]
fn step_api_matches_solve_bit_for_bit() {
    let problem = DoublePendulum::standard_problem(3.0).unwrap();
    let options = SolverOptions::default().tol(1e-9);
    let full = solve(&problem, &options).unwrap();
    let mut integrator = Integrator::new(&problem, &options).unwrap();
    let mut accepted = 0;
    loop {
        match integrator.step().unwrap() {
            StepOutcome::Accepted => accepted += 1,
            StepOutcome::Rejected => {}
            StepOutcome::Finished => {
                accepted += 1;
                break;
            }
        }
    }
    assert_eq!(accepted, full.stats.accepted_steps);
    assert_eq!(integrator.u(), full.u_end.as_slice().unwrap());
    assert_eq!(integrator.stats(), full.stats);
}

#[test]
fn statistics_pin_the_benchmark_solve() {
    // Pinned counts of the benchmark problem (Tsit5, rtol = atol = 1e-8): a change of the controller or
    // of a tableau shows up here.
    let problem = DoublePendulum::bench_problem();
    let sol = solve(
        &problem,
        &SolverOptions::default().tol(1e-8).save_end_only(),
    )
    .unwrap();
    println!("{:?}", sol.stats);
    assert_eq!(
        sol.stats,
        Statistics {
            accepted_steps: 698,
            rejected_steps: 3,
            rhs_evaluations: 4208,
            interpolation_rhs_evaluations: 0,
            // Accuracy-limited: not one step near the stability boundary.
            stability_limited_steps: 0,
            stiffness_detected_at: None,
            ..Default::default()
        }
    );
}

#[test]
fn solution_serializes_to_json() {
    let problem = OdeProblem::new(ExponentialDecay, vec![1.0], vec![1.0], (0.0, 1.0)).unwrap();
    let sol = solve(
        &problem,
        &SolverOptions::default().save_at(vec![0.0, 0.5, 1.0]),
    )
    .unwrap();
    let json = serde_json::to_value(&sol).unwrap();
    assert_eq!(json["method"], "Tsit5");
    assert_eq!(json["times"]["data"].as_array().unwrap().len(), 3);
    assert!(json["stats"]["accepted_steps"].as_u64().unwrap() > 0);
    let back: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&sol).unwrap()).unwrap();
    assert_eq!(back, json);
}

#[test]
fn step_replay_reproduces_every_step_bit_for_bit() {
    let problem = DoublePendulum::standard_problem(2.0).unwrap();
    for method in Method::ALL {
        let options = SolverOptions::default()
            .method(method)
            .tol(1e-8)
            .tstops(vec![0.5, 1.0]);
        let mut integrator = Integrator::new(&problem, &options).unwrap();
        let mut replay = StepReplay::new(method, 4).unwrap();
        let s = method.tableau().stages;
        let mut checked = 0;
        while !integrator.is_finished() {
            integrator.step().unwrap();
            if let Some(step) = integrator.accepted_step() {
                replay.replay(
                    problem.model(),
                    problem.params().view(),
                    step.t,
                    step.h,
                    step.t_next,
                    step.u,
                );
                assert_eq!(
                    replay.u_next(),
                    step.u_next,
                    "{method}: u_(n+1) at t = {}",
                    step.t
                );
                for i in 0..s {
                    assert_eq!(
                        replay.stage_input(i),
                        step.stage_input(i),
                        "{method}: Y_{i}"
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, integrator.stats().accepted_steps);
    }
}

/// Van der Pol (μ = 10) with a third component q' = a·sin(50 t) riding along (p = [μ, a]): outside the
/// error norm it must not change the steps of any method, explicit or implicit.
struct WithRider;

impl OdeSystem for WithRider {
    fn n_states(&self) -> usize {
        3
    }
    fn n_params(&self) -> usize {
        2
    }
    fn rhs<S: Scalar>(
        &self,
        t: S,
        u: ndarray::ArrayView1<S>,
        p: ndarray::ArrayView1<S>,
        mut du: ndarray::ArrayViewMut1<S>,
    ) {
        du[0] = u[1];
        du[1] = p[0] * (S::one() - u[0] * u[0]) * u[1] - u[0];
        du[2] = (t * 50.0).sin() * p[1];
    }
}

#[test]
fn components_outside_the_error_norm_do_not_vote_for_any_method() {
    let rider = |a: f64| {
        OdeProblem::new(WithRider, vec![2.0, 0.0, 0.0], vec![10.0, a], (0.0, 5.0)).unwrap()
    };
    let (loud, quiet) = (rider(1e6), rider(0.0));
    for method in [
        Method::Tsit5,
        Method::Vern9,
        Method::TrBdf2,
        Method::Kvaerno5,
        Method::RadauIIA5,
    ] {
        let options = SolverOptions::default().method(method).tol(1e-7);
        let voting = solve(&loud, &options).unwrap();
        let seminorm = options.clone().error_norm_components(2);
        let (a, b) = (
            solve(&loud, &seminorm).unwrap(),
            solve(&quiet, &seminorm).unwrap(),
        );
        println!(
            "{method}: {} steps with q voting, {} without",
            voting.stats.accepted_steps, a.stats.accepted_steps
        );
        assert!(
            voting.stats.accepted_steps > a.stats.accepted_steps,
            "{method}"
        );
        // The same steps and bits as with a silent q.
        assert_eq!(a.stats, b.stats, "{method}");
        assert_eq!(a.u_end[0], b.u_end[0], "{method}");
        assert_eq!(a.u_end[1], b.u_end[1], "{method}");
    }
}
