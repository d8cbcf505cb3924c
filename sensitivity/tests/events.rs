//! Forward sensitivities through events: the bouncing ball's bounce times and state against their
//! closed-form derivatives, threshold dosing against central differences, and the derivative
//! computations that do not handle events yet refusing them with a typed error.

use odesens_models::{
    BouncingBall, DoublePendulum, DoublePendulumFlip, ScheduledDoses, ThresholdDosing,
};
use odesens_sensitivity::{
    Checkpointing, ContinuousSettings, Directions, EventTime, EventTimeMisfit, ForwardSettings,
    Gradient, LeastSquares, SensitivityAlgorithm, SensitivityError, SquaredNormAt, check_gradient,
    forward_sensitivities, gradient, hessian_vector_product, objective_value,
};
use odesens_solver::{Method, OdeProblem, SolverOptions};

/// Every method, explicit, implicit Runge–Kutta and multistep.
const ALL_METHODS: [Method; 10] = [
    Method::Tsit5,
    Method::Dp5,
    Method::Bs3,
    Method::Vern7,
    Method::Vern9,
    Method::TrBdf2,
    Method::Kvaerno5,
    Method::RadauIIA5,
    Method::Bdf,
    Method::Ndf,
];

/// The benchmark pendulum released at rest from (θ1, θ2) = (2, 1), stopping at its first flip
/// (t ≤ 10).
fn flip_problem() -> OdeProblem<DoublePendulumFlip> {
    OdeProblem::new(
        DoublePendulumFlip,
        vec![2.0, 1.0, 0.0, 0.0],
        DoublePendulum::bench_params(),
        (0.0, 10.0),
    )
    .unwrap()
}

/// The ball dropped from h0 = 1 at rest, g = 9.81, e = 0.8, on [0, 3] (six bounces).
fn ball_problem() -> OdeProblem<BouncingBall> {
    OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, 0.8], (0.0, 3.0)).unwrap()
}

/// x(T), v(T) after bounce k (t_k < T < t_{k+1}) and their derivatives with respect to (g, e, h0, v0).
fn state_derivatives(h0: f64, g: f64, e: f64, k: usize, t: f64) -> [[f64; 4]; 2] {
    let w1 = (2.0 * g * h0).sqrt();
    let w = e.powi(k as i32) * w1;
    let dw = [
        e.powi(k as i32) * h0 / w1,
        k as f64 * e.powi(k as i32 - 1) * w1,
        e.powi(k as i32) * g / w1,
        0.0,
    ];
    let (tk, dtk) = BouncingBall::bounce_time_derivatives(h0, g, e, k);
    let s = t - tk;
    let mut out = [[0.0; 4]; 2];
    for d in 0..4 {
        let dg = f64::from(u8::from(d == 0));
        // x = w s − g s²/2, v = w − g s, s = T − t_k.
        out[0][d] = dw[d] * s - (w - g * s) * dtk[d] - dg * s * s / 2.0;
        out[1][d] = dw[d] + g * dtk[d] - dg * s;
    }
    out
}

#[test]
fn bouncing_ball_tangents_match_the_closed_form() {
    let (h0, g, e) = (1.0, 9.81, 0.8);
    let t_end = 3.0;
    for method in [
        Method::Tsit5,
        Method::Bs3,
        Method::Vern7,
        Method::Vern9,
        Method::Kvaerno5,
        Method::TrBdf2,
        Method::RadauIIA5,
        Method::Bdf,
        Method::Ndf,
    ] {
        let problem =
            OdeProblem::new(BouncingBall, vec![h0, 0.0], vec![g, e], (0.0, t_end)).unwrap();
        let options = SolverOptions::default().method(method).tol(1e-12);
        let sens = forward_sensitivities(
            &problem,
            &options,
            &Directions::All,
            &[t_end],
            ForwardSettings::default(),
        )
        .unwrap();
        // Directions: parameters (g, e), then initial values (h0, v0).
        assert_eq!(sens.event_times.len(), 6, "{method}");
        // The bounce times carry the solution's error: BDF's is the largest at this tolerance (each
        // bounce restarts it at order 1; its global error is 10–20 tolerances, docs/stiff.md), up to
        // 8.2e-12 relative measured (NDF).
        // The derivatives likewise carry the discretization's error: up to 2.0e-9 measured (NDF).
        let (time_tol, deriv_tol) = if method.is_multistep() {
            (1e-10, 1e-8)
        } else {
            (1e-12, 1e-9)
        };
        let mut worst = 0.0f64;
        for (k, &t) in sens.event_times.iter().enumerate() {
            let (tk, dtk) = BouncingBall::bounce_time_derivatives(h0, g, e, k + 1);
            assert!(
                (t - tk).abs() < time_tol * tk,
                "{method}: t_{} = {t} vs {tk}",
                k + 1
            );
            for (d, &x) in dtk.iter().enumerate() {
                let got = sens.event_time_sensitivities[[k, d]];
                let rel = (got - x).abs() / x.abs().max(1e-3);
                worst = worst.max(rel);
                assert!(
                    rel < deriv_tol,
                    "{method}: dt_{}/dθ_{d} = {got} vs {x}: {rel:e}",
                    k + 1
                );
            }
        }
        let expected = state_derivatives(h0, g, e, 6, t_end);
        for (m, row) in expected.iter().enumerate() {
            for (d, &x) in row.iter().enumerate() {
                let got = sens.sensitivities[[0, m, d]];
                let rel = (got - x).abs() / x.abs().max(1.0);
                worst = worst.max(rel);
                assert!(
                    rel < deriv_tol,
                    "{method}: du_{m}/dθ_{d} = {got} vs {x}: {rel:e}"
                );
            }
        }
        println!("{method}: worst relative error of dt*/dθ and du(T)/dθ {worst:.2e}");
    }
}

#[test]
fn threshold_dosing_gradient_matches_central_differences() {
    let problem = OdeProblem::new(
        ThresholdDosing,
        vec![10.0],
        vec![0.3, 2.0, 5.0],
        (0.0, 12.0),
    )
    .unwrap();
    let objective = SquaredNormAt::new(12.0);
    for method in [
        Method::Tsit5,
        Method::Dp5,
        Method::Vern9,
        Method::Kvaerno5,
        Method::RadauIIA5,
        Method::Bdf,
    ] {
        let options = SolverOptions::default().method(method).tol(1e-11);
        let grad = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::Forward,
        )
        .unwrap();
        let value = objective_value(&problem, &options, &objective).unwrap();
        assert_eq!(grad.value, value, "{method}");
        let check = check_gradient(&problem, &options, &objective, &grad, None).unwrap();
        println!(
            "{method}: forward vs central differences {:.2e}",
            check.max_rel_error
        );
        assert!(check.max_rel_error < 1e-5, "{method}: {check:?}");
        // Dose times: the first one's derivatives in closed form, t₁ = ln(c0/c_min)/k.
        let sens = forward_sensitivities(
            &problem,
            &options,
            &Directions::All,
            &[12.0],
            ForwardSettings::default(),
        )
        .unwrap();
        let (c0, k, c_min) = (10.0f64, 0.3, 2.0);
        let t1 = (c0 / c_min).ln() / k;
        let expected = [-t1 / k, -1.0 / (k * c_min), 0.0, 1.0 / (k * c0)];
        for (d, &x) in expected.iter().enumerate() {
            let got = sens.event_time_sensitivities[[0, d]];
            assert!(
                (got - x).abs() < 1e-8 * x.abs().max(1.0),
                "{method}: dt₁/dθ_{d} {got} vs {x}"
            );
        }
    }
}

#[test]
fn derivatives_that_do_not_handle_events_refuse_them() {
    let problem =
        OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, 0.8], (0.0, 1.0)).unwrap();
    let options = SolverOptions::default();
    let objective = SquaredNormAt::new(1.0);
    assert!(matches!(
        hessian_vector_product(&problem, &options, &objective, &[1.0, 0.0], &[0.0, 0.0]),
        Err(SensitivityError::Unsupported { .. })
    ));
    // Auto chooses the keep-all discrete adjoint, which goes through events.
    let auto = gradient(&problem, &options, &objective, &SensitivityAlgorithm::Auto).unwrap();
    let adjoint = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    assert_eq!(auto.wrt_params, adjoint.wrt_params);
}

#[test]
fn time_event_tangents_match_the_closed_form() {
    // c(T) = c0 e^{−kT} + Σ_d 2 e^{−k(T − t_d)}: dc/dk and dc/dc0 in closed form.
    let (c0, k, t_end) = (1.0f64, 0.5, 5.0);
    let doses = ScheduledDoses::TIMES;
    let (_, [dc_dk, dc_dc0]) = ScheduledDoses::exact(c0, k, t_end);
    for method in [
        Method::Tsit5,
        Method::Vern9,
        Method::Kvaerno5,
        Method::RadauIIA5,
    ] {
        let problem = OdeProblem::new(ScheduledDoses, vec![c0], vec![k], (0.0, t_end)).unwrap();
        let options = SolverOptions::default().method(method).tol(1e-12);
        let sens = forward_sensitivities(
            &problem,
            &options,
            &Directions::All,
            &[t_end],
            ForwardSettings::default(),
        )
        .unwrap();
        assert_eq!(sens.event_times.to_vec(), doses.to_vec(), "{method}");
        assert!(sens.event_time_sensitivities.iter().all(|&x| x == 0.0));
        let (got_k, got_c0) = (sens.sensitivities[[0, 0, 0]], sens.sensitivities[[0, 0, 1]]);
        assert!(
            (got_k - dc_dk).abs() < 1e-9 * dc_dk.abs(),
            "{method}: {got_k} vs {dc_dk}"
        );
        assert!(
            (got_c0 - dc_dc0).abs() < 1e-9 * dc_dc0,
            "{method}: {got_c0} vs {dc_dc0}"
        );
    }
}

/// Threshold dosing whose threshold fires two events at once: event 0 adds the dose D, event 1 then
/// scales by r (c⁺ = r (c⁻ + D), jumps composed in index order); p = [k, c_min, D, r].
#[derive(Clone)]
struct TwoAtOnce;

impl odesens_solver::OdeSystem for TwoAtOnce {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        4
    }
    fn rhs<S: odesens_solver::Scalar>(
        &self,
        _t: S,
        u: ndarray::ArrayView1<S>,
        p: ndarray::ArrayView1<S>,
        mut du: ndarray::ArrayViewMut1<S>,
    ) {
        du[0] = -p[0] * u[0];
    }
    fn n_events(&self) -> usize {
        2
    }
    fn event_spec(&self, _k: usize) -> odesens_solver::EventSpec {
        odesens_solver::EventSpec::crossing(
            odesens_solver::Direction::Falling,
            odesens_solver::EventAction::Jump,
        )
    }
    fn event_condition<S: odesens_solver::Scalar>(
        &self,
        k: usize,
        _t: S,
        u: ndarray::ArrayView1<S>,
        p: ndarray::ArrayView1<S>,
    ) -> S {
        (u[0] - p[1]) * (1.0 + k as f64)
    }
    fn event_jump<S: odesens_solver::Scalar>(
        &self,
        k: usize,
        _t: S,
        u: ndarray::ArrayView1<S>,
        p: ndarray::ArrayView1<S>,
        mut u_new: ndarray::ArrayViewMut1<S>,
    ) {
        u_new[0] = if k == 0 { u[0] + p[2] } else { u[0] * p[3] };
    }
}

#[test]
fn simultaneous_events_compose_and_their_tangents_match_differences() {
    let problem =
        OdeProblem::new(TwoAtOnce, vec![10.0], vec![0.3, 2.0, 5.0, 1.5], (0.0, 12.0)).unwrap();
    let objective = SquaredNormAt::new(12.0);
    for method in [Method::Tsit5, Method::RadauIIA5] {
        let options = SolverOptions::default().method(method).tol(1e-11);
        let sol = odesens_solver::solve(&problem, &options).unwrap();
        assert!(
            sol.events.len() == 2 && sol.events.iter().all(|h| h.events == vec![0, 1]),
            "{method}: {:?}",
            sol.events
        );
        assert!(
            sol.events
                .iter()
                .all(|h| (h.u_after[0] - 1.5 * 7.0).abs() < 1e-8)
        );
        let grad = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::Forward,
        )
        .unwrap();
        let check = check_gradient(&problem, &options, &objective, &grad, None).unwrap();
        assert!(check.max_rel_error < 1e-5, "{method}: {check:?}");
    }
}

/// The largest difference relative to the largest entry of `b`.
fn rel_diff(a: &Gradient, b: &Gradient) -> f64 {
    let scale = b
        .wrt_params
        .iter()
        .chain(b.wrt_u0.iter())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    a.wrt_params
        .iter()
        .chain(a.wrt_u0.iter())
        .zip(b.wrt_params.iter().chain(b.wrt_u0.iter()))
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Forward and discrete adjoint through events agree to round-off, and every checkpoint policy gives
/// the adjoint's bits.
fn adjoint_agrees<M: odesens_solver::OdeSystem>(
    name: &str,
    problem: &OdeProblem<M>,
    objective: &impl odesens_sensitivity::Objective,
    methods: &[Method],
) {
    for &method in methods {
        let options = SolverOptions::default().method(method).tol(1e-10);
        let forward =
            gradient(problem, &options, objective, &SensitivityAlgorithm::Forward).unwrap();
        let keep_all = gradient(
            problem,
            &options,
            objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let diff = rel_diff(&keep_all, &forward);
        println!("{name} {method}: adjoint vs forward {diff:.2e}");
        assert!(diff < 1e-10, "{name} {method}: {keep_all:?} vs {forward:?}");
        assert_eq!(keep_all.value, forward.value, "{name} {method}");
        for policy in [
            Checkpointing::Uniform { every: 3 },
            Checkpointing::Binomial { snapshots: 3 },
            Checkpointing::MemoryBudget { bytes: 2_000 },
        ] {
            let other = gradient(
                problem,
                &options,
                objective,
                &SensitivityAlgorithm::adjoint(policy),
            )
            .unwrap();
            assert_eq!(
                other.wrt_params, keep_all.wrt_params,
                "{name} {method} {policy:?}"
            );
            assert_eq!(other.wrt_u0, keep_all.wrt_u0, "{name} {method} {policy:?}");
        }
    }
}

#[test]
fn discrete_adjoint_through_events_matches_forward_for_every_policy() {
    let methods = ALL_METHODS;
    let ball = ball_problem();
    adjoint_agrees("ball", &ball, &SquaredNormAt::new(3.0), &methods);
    let dosing = OdeProblem::new(
        ThresholdDosing,
        vec![10.0],
        vec![0.3, 2.0, 5.0],
        (0.0, 12.0),
    )
    .unwrap();
    adjoint_agrees(
        "threshold dosing",
        &dosing,
        &SquaredNormAt::new(12.0),
        &methods,
    );
    let both =
        OdeProblem::new(TwoAtOnce, vec![10.0], vec![0.3, 2.0, 5.0, 1.5], (0.0, 12.0)).unwrap();
    adjoint_agrees("two at once", &both, &SquaredNormAt::new(12.0), &methods);
    // Observations at a dose time read the state after the dose.
    let doses = OdeProblem::new(ScheduledDoses, vec![1.0], vec![0.5], (0.0, 5.0)).unwrap();
    let data = ndarray::Array2::from_elem((3, 1), 0.5);
    let fit = LeastSquares::new(vec![2.5, 3.0, 5.0], data).unwrap();
    adjoint_agrees("scheduled doses", &doses, &fit, &methods);
    // And against the closed form: G = ½ Σ (c(t_k) − 0.5)².
    let options = SolverOptions::default().method(Method::Tsit5).tol(1e-12);
    let adjoint = gradient(
        &doses,
        &options,
        &fit,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let (mut dk, mut dc0) = (0.0, 0.0);
    for t in [2.5, 3.0, 5.0] {
        let (c, [ck, cc0]) = ScheduledDoses::exact(1.0, 0.5, t);
        dk += (c - 0.5) * ck;
        dc0 += (c - 0.5) * cc0;
    }
    assert!(
        (adjoint.wrt_params[0] - dk).abs() < 1e-9 * dk.abs(),
        "{} vs {dk}",
        adjoint.wrt_params[0]
    );
    assert!(
        (adjoint.wrt_u0[0] - dc0).abs() < 1e-9 * dc0.abs(),
        "{} vs {dc0}",
        adjoint.wrt_u0[0]
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 24,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x0e7e475),
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

        /// Random balls and methods: every bounce time and its derivatives against the closed form.
        #[test]
        fn random_bouncing_balls(
            h0 in 0.2f64..3.0,
            g in 2.0f64..20.0,
            e in 0.3f64..0.9,
            method in prop::sample::select(vec![
                Method::Tsit5, Method::Dp5, Method::Bs3, Method::Vern7, Method::Vern9,
                Method::TrBdf2, Method::Kvaerno5, Method::RadauIIA5,
            ]),
        ) {
            let t1 = (2.0 * h0 / g).sqrt();
            // Up to the fourth bounce, well before the accumulation point t₁ (1 + e)/(1 − e).
            let t_end = 0.5 * (BouncingBall::bounce_time_derivatives(h0, g, e, 4).0 + BouncingBall::bounce_time_derivatives(h0, g, e, 5).0);
            prop_assume!(t_end > t1);
            let problem = OdeProblem::new(BouncingBall, vec![h0, 0.0], vec![g, e], (0.0, t_end)).unwrap();
            let options = SolverOptions::default().method(method).tol(1e-12);
            let sens = forward_sensitivities(&problem, &options, &Directions::All, &[t_end], ForwardSettings::default()).unwrap();
            prop_assert_eq!(sens.event_times.len(), 4);
            for k in 0..4 {
                let (tk, dtk) = BouncingBall::bounce_time_derivatives(h0, g, e, k + 1);
                prop_assert!((sens.event_times[k] - tk).abs() < 1e-11 * tk);
                for (d, &x) in dtk.iter().enumerate() {
                    let got = sens.event_time_sensitivities[[k, d]];
                    prop_assert!((got - x).abs() < 1e-9 * x.abs().max(1e-3), "{} bounce {} dθ_{}: {} vs {}", method, k + 1, d, got, x);
                }
            }
        }
    }
}

/// u' = 1 from u0 = 0 with the condition (u − p)³, p = 1/2: a crossing with zero slope at the root.
/// Located where g leaves round-off, ~1e-5 from the root, the event's time still has the right
/// derivative, dt*/dp = 1 (g_u and g_p carry the same factor 3 (u − p)², which cancels), and the
/// adjoint agrees; exactly at a zero slope the derivatives report a typed error instead.
#[derive(Clone)]
struct Grazing;

impl odesens_solver::OdeSystem for Grazing {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: odesens_solver::Scalar>(
        &self,
        _t: S,
        _u: ndarray::ArrayView1<S>,
        _p: ndarray::ArrayView1<S>,
        mut du: ndarray::ArrayViewMut1<S>,
    ) {
        du[0] = S::one();
    }
    fn n_events(&self) -> usize {
        1
    }
    fn event_spec(&self, _k: usize) -> odesens_solver::EventSpec {
        odesens_solver::EventSpec::crossing(
            odesens_solver::Direction::Rising,
            odesens_solver::EventAction::Jump,
        )
    }
    fn event_condition<S: odesens_solver::Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ndarray::ArrayView1<S>,
        p: ndarray::ArrayView1<S>,
    ) -> S {
        (u[0] - p[0]).powi(3)
    }
}

#[test]
fn a_root_with_zero_slope_is_located_and_differentiated() {
    let problem = OdeProblem::new(Grazing, vec![0.0], vec![0.5], (0.0, 1.0)).unwrap();
    let options = SolverOptions::default().tol(1e-10);
    let sol = odesens_solver::solve(&problem, &options).unwrap();
    assert_eq!(sol.events.len(), 1);
    assert!((sol.events[0].t - 0.5).abs() < 1e-4, "{}", sol.events[0].t);
    let sens = forward_sensitivities(
        &problem,
        &options,
        &Directions::All,
        &[1.0],
        ForwardSettings::default(),
    )
    .unwrap();
    // dt*/dp = 1, dt*/du0 = −1.
    let dt = sens.event_time_sensitivities.row(0).to_vec();
    assert!(
        (dt[0] - 1.0).abs() < 1e-9 && (dt[1] + 1.0).abs() < 1e-9,
        "{dt:?}"
    );
    let objective = SquaredNormAt::new(1.0);
    let forward = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::Forward,
    )
    .unwrap();
    let adjoint = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    assert!(rel_diff(&adjoint, &forward) < 1e-12);
}

/// Objectives that read event times: the k-th bounce time and a misfit of observed bounce times, by
/// forward sensitivities and the discrete adjoint against the closed form; the time until the double
/// pendulum first flips, forward against adjoint (every policy) and against central differences.
#[test]
fn event_time_objectives_match_the_closed_form_and_each_other() {
    let (h0, g, e) = (1.0, 9.81, 0.8);
    let ball = OdeProblem::new(BouncingBall, vec![h0, 0.0], vec![g, e], (0.0, 3.0)).unwrap();
    let third = EventTime::new(0, 2);
    let observed = vec![0.46, 1.2, 1.8];
    let misfit = EventTimeMisfit::new(0, observed.clone());
    // The closed forms: t_3 and ½ Σ_k (t_k − d_k)², with derivatives for (g, e, h0, v0).
    let (t3, dt3) = BouncingBall::bounce_time_derivatives(h0, g, e, 3);
    let (mut value, mut d_misfit) = (0.0, [0.0; 4]);
    for (k, d) in observed.iter().enumerate() {
        let (tk, dtk) = BouncingBall::bounce_time_derivatives(h0, g, e, k + 1);
        value += 0.5 * (tk - d) * (tk - d);
        for j in 0..4 {
            d_misfit[j] += (tk - d) * dtk[j];
        }
    }
    for method in [Method::Tsit5, Method::Kvaerno5, Method::RadauIIA5] {
        let options = SolverOptions::default().method(method).tol(1e-12);
        for algorithm in [
            SensitivityAlgorithm::Forward,
            SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        ] {
            for (name, grad, (v, d)) in [
                (
                    "t_3",
                    gradient(&ball, &options, &third, &algorithm).unwrap(),
                    (t3, dt3),
                ),
                (
                    "misfit",
                    gradient(&ball, &options, &misfit, &algorithm).unwrap(),
                    (value, d_misfit),
                ),
            ] {
                assert!((grad.value - v).abs() < 1e-11 * v, "{method} {name}");
                let got = grad.to_vec();
                let scale = d.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                for j in 0..4 {
                    let rel = (got[j] - d[j]).abs() / scale;
                    assert!(
                        rel < 1e-9,
                        "{method} {algorithm:?} {name}: ∂/∂θ_{j} = {} vs {}: {rel:e}",
                        got[j],
                        d[j]
                    );
                }
            }
        }
    }
    let methods = ALL_METHODS;
    adjoint_agrees("ball t_3", &ball, &third, &methods);
    adjoint_agrees("ball misfit", &ball, &misfit, &methods);

    // The double pendulum's flip: a stop event; G = t* of the first flip.
    let flip = flip_problem();
    let first = EventTime::first();
    adjoint_agrees(
        "flip time",
        &flip,
        &first,
        &[Method::Tsit5, Method::Vern9, Method::RadauIIA5],
    );
    // Central differences with a small step: the flip time's second derivatives are large (a chaotic
    // system), so the default step's truncation error is 2.7e-5 (measured for four methods alike).
    let options = SolverOptions::default().method(Method::Vern9).tol(1e-13);
    let adjoint = gradient(
        &flip,
        &options,
        &first,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let sol = odesens_solver::solve(&flip, &options).unwrap();
    assert_eq!(adjoint.value, sol.t_end);
    let check = check_gradient(&flip, &options, &first, &adjoint, Some(3e-7)).unwrap();
    println!(
        "flip time {:.12}: adjoint vs central differences {:.2e}",
        adjoint.value, check.max_rel_error
    );
    assert!(check.max_rel_error < 1e-6, "{check:?}");
}

#[test]
fn event_objectives_and_stops_report_bad_requests() {
    let ball = ball_problem();
    let options = SolverOptions::default().tol(1e-8);
    for algorithm in [
        SensitivityAlgorithm::Forward,
        SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    ] {
        // Six bounces before t = 3: the tenth is missing.
        assert!(matches!(
            gradient(&ball, &options, &EventTime::new(0, 9), &algorithm),
            Err(SensitivityError::MissingEvent {
                event: Some(0),
                needed: 10,
                fired: 6
            })
        ));
        // An observation after a stop.
        let flip = flip_problem();
        match gradient(&flip, &options, &SquaredNormAt::new(10.0), &algorithm) {
            Err(SensitivityError::AfterStop { t, t_stop, .. }) => {
                assert_eq!(t, 10.0);
                assert!(t_stop < 10.0);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// The continuous adjoints through events (the transposed event map as λ's jump condition, the
/// backward solve stopping at every event): within 10× the tolerance of the discrete adjoint, for
/// explicit and implicit backward solves, every segment policy, and the backsolve adjoint.
#[test]
fn continuous_adjoint_through_events_matches_the_discrete_one() {
    let ball = ball_problem();
    let dosing = OdeProblem::new(
        ThresholdDosing,
        vec![10.0],
        vec![0.3, 2.0, 5.0],
        (0.0, 12.0),
    )
    .unwrap();
    let doses = OdeProblem::new(ScheduledDoses, vec![1.0], vec![0.5], (0.0, 5.0)).unwrap();
    let fit =
        LeastSquares::new(vec![2.5, 3.0, 5.0], ndarray::Array2::from_elem((3, 1), 0.5)).unwrap();
    let flip = flip_problem();
    let tol = 1e-8;
    let mut worst = 0.0f64;
    let mut check = |name: &str, discrete: &Gradient, continuous: &Gradient| {
        let diff = rel_diff(continuous, discrete);
        worst = worst.max(diff);
        println!("{name}: continuous vs discrete {diff:.2e}");
        assert!(diff < 10.0 * tol, "{name}: {continuous:?} vs {discrete:?}");
    };
    for (method, backward) in [
        (Method::Tsit5, None),
        (Method::Vern9, None),
        (Method::RadauIIA5, None),
        (Method::Tsit5, Some(Method::RadauIIA5)),
    ] {
        let options = SolverOptions::default().method(method).tol(tol);
        let discrete = SensitivityAlgorithm::adjoint(Checkpointing::KeepAll);
        for checkpointing in [
            Checkpointing::KeepAll,
            Checkpointing::Binomial { snapshots: 2 },
        ] {
            let settings = ContinuousSettings {
                method: backward,
                segment_steps: Some(8),
                checkpointing,
                ..Default::default()
            };
            let continuous = SensitivityAlgorithm::InterpolatingAdjoint(settings);
            let label = format!("{method}/{backward:?} {checkpointing:?}");
            let g = SquaredNormAt::new(3.0);
            check(
                &format!("ball {label}"),
                &gradient(&ball, &options, &g, &discrete).unwrap(),
                &gradient(&ball, &options, &g, &continuous).unwrap(),
            );
            let t3 = EventTime::new(0, 2);
            check(
                &format!("ball t_3 {label}"),
                &gradient(&ball, &options, &t3, &discrete).unwrap(),
                &gradient(&ball, &options, &t3, &continuous).unwrap(),
            );
            let g = SquaredNormAt::new(12.0);
            check(
                &format!("dosing {label}"),
                &gradient(&dosing, &options, &g, &discrete).unwrap(),
                &gradient(&dosing, &options, &g, &continuous).unwrap(),
            );
            check(
                &format!("doses {label}"),
                &gradient(&doses, &options, &fit, &discrete).unwrap(),
                &gradient(&doses, &options, &fit, &continuous).unwrap(),
            );
            let first = EventTime::first();
            let tight = SolverOptions::default().method(Method::Vern9).tol(1e-13);
            let truth = gradient(&flip, &tight, &first, &discrete).unwrap();
            let d = gradient(&flip, &options, &first, &discrete).unwrap();
            let c = gradient(&flip, &options, &first, &continuous).unwrap();
            // Chaotic: both gradients are 4e-7 … 2e-6 from the truth at tol 1e-8, and the continuous
            // one is no farther from it than the discrete one.
            let (d_err, c_err, gap) =
                (rel_diff(&d, &truth), rel_diff(&c, &truth), rel_diff(&c, &d));
            println!(
                "flip {label}: discrete vs truth {d_err:.2e}, continuous vs truth {c_err:.2e}, \
                 continuous vs discrete {gap:.2e}"
            );
            assert!(c_err <= 1.1 * d_err && gap < d_err, "flip {label}");
            let same = gradient(
                &flip,
                &options,
                &first,
                &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
                    checkpointing: Checkpointing::KeepAll,
                    ..settings
                }),
            )
            .unwrap();
            assert_eq!(c.to_vec(), same.to_vec(), "{label}: policies differ");
        }
    }
    // Backsolve: u integrated backwards jumps back to u⁻ at each event.
    let options = SolverOptions::default().method(Method::Tsit5).tol(tol);
    let g = SquaredNormAt::new(3.0);
    let backsolve = gradient(
        &ball,
        &options,
        &g,
        &SensitivityAlgorithm::BacksolveAdjoint(ContinuousSettings::default()),
    )
    .unwrap();
    let discrete = gradient(
        &ball,
        &options,
        &g,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    check("ball backsolve", &discrete, &backsolve);
    println!("worst continuous vs discrete through events: {worst:.2e} (tol {tol:e})");
}

/// G = ∫ c dt (the area under the curve of a dosing model).
struct Auc;

impl odesens_sensitivity::Objective for Auc {
    fn has_running_cost(&self) -> bool {
        true
    }
    fn running_cost<S: odesens_solver::Scalar>(
        &self,
        _t: f64,
        u: ndarray::ArrayView1<S>,
        _p: ndarray::ArrayView1<S>,
    ) -> S {
        u[0]
    }
}

/// Running costs through events (the integral as one more state): the area under doses at fixed
/// times against its closed form, forward against every adjoint, and central differences.
#[test]
fn running_costs_through_events_match_the_closed_form_and_each_other() {
    let (c0, k, t_end) = (1.0, 0.5, 5.0);
    let doses = OdeProblem::new(ScheduledDoses, vec![c0], vec![k], (0.0, t_end)).unwrap();
    // AUC = c0 (1 − e^{−kT})/k + Σ_d D (1 − e^{−k(T − t_d)})/k.
    let part = |tau: f64| {
        let e = (-k * tau).exp();
        ((1.0 - e) / k, (tau * e * k - (1.0 - e)) / (k * k))
    };
    let (a, da) = part(t_end);
    let (mut auc, mut d_k, d_c0) = (c0 * a, c0 * da, a);
    for td in ScheduledDoses::TIMES {
        let (a, da) = part(t_end - td);
        auc += ScheduledDoses::DOSE * a;
        d_k += ScheduledDoses::DOSE * da;
    }
    let methods = ALL_METHODS;
    for method in methods {
        let options = SolverOptions::default().method(method).tol(1e-11);
        for algorithm in [
            SensitivityAlgorithm::Forward,
            SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
            SensitivityAlgorithm::interpolating(),
        ] {
            let g = gradient(&doses, &options, &Auc, &algorithm).unwrap();
            let errors = [
                (g.value - auc).abs() / auc,
                (g.wrt_params[0] - d_k).abs() / d_k.abs(),
                (g.wrt_u0[0] - d_c0).abs() / d_c0,
            ];
            println!(
                "AUC {method} {}: {:.1e} {:.1e} {:.1e}",
                algorithm.name(),
                errors[0],
                errors[1],
                errors[2]
            );
            // TR-BDF2 is of order 2: its own error at this tolerance is 7e-9.
            let bound = if method == Method::TrBdf2 { 1e-7 } else { 1e-8 };
            assert!(
                errors.iter().all(|&e| e < bound),
                "{method} {algorithm:?}: {errors:?}"
            );
        }
    }
    adjoint_agrees("doses AUC", &doses, &Auc, &methods);
    let dosing = OdeProblem::new(
        ThresholdDosing,
        vec![10.0],
        vec![0.3, 2.0, 5.0],
        (0.0, 12.0),
    )
    .unwrap();
    adjoint_agrees("threshold dosing AUC", &dosing, &Auc, &methods);
    let ball = ball_problem();
    let height = odesens_sensitivity::IntegralOfSquare::new(0);
    adjoint_agrees("ball ∫x²", &ball, &height, &methods);
    // The threshold's AUC against central differences (tight tolerances).
    for method in [Method::Tsit5, Method::RadauIIA5] {
        let options = SolverOptions::default().method(method).tol(1e-12);
        let g = gradient(
            &dosing,
            &options,
            &Auc,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let check = check_gradient(&dosing, &options, &Auc, &g, None).unwrap();
        println!(
            "threshold dosing AUC {method}: vs central differences {:.1e}",
            check.max_rel_error
        );
        assert!(check.max_rel_error < 1e-6, "{method}: {check:?}");
    }
    // An integral that would end at a moving stop is refused.
    let flip = flip_problem();
    assert!(matches!(
        gradient(
            &flip,
            &SolverOptions::default(),
            &height,
            &SensitivityAlgorithm::Forward
        ),
        Err(SensitivityError::Unsupported { .. })
    ));
}
