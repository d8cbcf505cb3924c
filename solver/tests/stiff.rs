//! Stiff test problems with published reference values (data/reference/stiff.json): what the explicit
//! methods do with them.

use odesens_models::compare::rel_diff_componentwise;
use odesens_models::{Hires, Robertson};
use odesens_solver::*;

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

#[test]
fn implicit_methods_match_robertson_and_hires_references() {
    for method in Method::IMPLICIT {
        for (t_end, want) in Robertson::REFERENCE {
            let sol = solve(
                &Robertson::problem(t_end).unwrap(),
                &SolverOptions::default()
                    .method(method)
                    .rtol(1e-8)
                    .atol(1e-14)
                    .save_end_only(),
            )
            .unwrap();
            let u = sol.u_end.as_slice().unwrap();
            let err = rel_diff_componentwise(u, &want, 1e-20);
            // Error in units of the tolerance asked for, atol + rtol·|y|.
            let scaled = u
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs() / (1e-14 + 1e-8 * b.abs()))
                .fold(0.0, f64::max);
            println!(
                "Robertson t = {t_end:e}, {} rtol 1e-8, atol 1e-14: max relative error {err:.1e} ({scaled:.0} \
                 tolerances); {} steps ({} rejected), {} Jacobians, {} LU, {} Newton iterations, {} Newton failures",
                method.name(),
                sol.stats.accepted_steps,
                sol.stats.rejected_steps,
                sol.stats.jacobian_evaluations,
                sol.stats.factorizations,
                sol.stats.newton_iterations,
                sol.stats.newton_failures
            );
            // The global error within a few hundred local tolerances, the mass conserved.
            assert!(scaled < 500.0, "{}: t = {t_end}: {scaled}", method.name());
            assert!((u.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let sol = solve(
            &Hires::problem().unwrap(),
            &SolverOptions::default()
                .method(method)
                .tol(1e-9)
                .save_end_only(),
        )
        .unwrap();
        let err = rel_diff_componentwise(sol.u_end.as_slice().unwrap(), &Hires::REFERENCE, 1e-20);
        let scaled = sol
            .u_end
            .iter()
            .zip(Hires::REFERENCE)
            .map(|(a, b)| (a - b).abs() / (1e-9 + 1e-9 * b.abs()))
            .fold(0.0, f64::max);
        println!(
            "HIRES {} tol 1e-9: max relative error {err:.1e} ({scaled:.0} tolerances); {} steps, {} Jacobians, \
             {} LU",
            method.name(),
            sol.stats.accepted_steps,
            sol.stats.jacobian_evaluations,
            sol.stats.factorizations
        );
        assert!(scaled < 500.0, "{}: {scaled}", method.name());
    }
}

/// Prothero–Robinson: y' = λ(y − φ(t)) + φ'(t), φ = sin, y(0) = 0, exact y = sin t; stiff for λ ≪ 0.
#[derive(Clone, Copy)]
struct ProtheroRobinson;
impl OdeSystem for ProtheroRobinson {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: Scalar>(
        &self,
        t: S,
        u: ndarray::ArrayView1<S>,
        p: ndarray::ArrayView1<S>,
        mut du: ndarray::ArrayViewMut1<S>,
    ) {
        du[0] = p[0] * (u[0] - t.sin()) + t.cos();
    }
}

#[test]
fn implicit_methods_converge_with_their_order() {
    // Mildly stiff (λ = −10): the classical orders show with fixed steps.
    let problem = OdeProblem::new(ProtheroRobinson, vec![0.0], vec![-10.0], (0.0, 2.0)).unwrap();
    for (method, steps, order) in [
        (Method::TrBdf2, [0.02, 0.01, 0.005], 2.0),
        (Method::Kvaerno5, [0.05, 0.025, 0.0125], 5.0),
        (Method::RadauIIA5, [0.1, 0.05, 0.025], 5.0),
    ] {
        let errors: Vec<(f64, f64)> = steps
            .iter()
            .map(|&h| {
                let sol = solve(
                    &problem,
                    &SolverOptions::default()
                        .method(method)
                        .fixed_step(h)
                        .save_end_only(),
                )
                .unwrap();
                (h, (sol.u_end[0] - 2.0f64.sin()).abs())
            })
            .collect();
        let slope = (errors[0].1 / errors[2].1).ln() / (errors[0].0 / errors[2].0).ln();
        println!(
            "{} on Prothero–Robinson λ = −10: errors {errors:?}, order {slope:.3}",
            method.name()
        );
        assert!(
            (slope - order).abs() < 0.2,
            "{}: order {slope}",
            method.name()
        );
        // Very stiff (λ = −1e6): L-stability keeps large steps accurate.
        let stiff = problem.with_params(vec![-1e6]).unwrap();
        let sol = solve(
            &stiff,
            &SolverOptions::default()
                .method(method)
                .fixed_step(0.1)
                .save_end_only(),
        )
        .unwrap();
        assert!(
            (sol.u_end[0] - 2.0f64.sin()).abs() < 1e-6,
            "{}",
            method.name()
        );
    }
}

#[test]
fn trbdf2_errors_are_clear() {
    // I − h d J = 0 when λ = 1/(h d): a singular iteration matrix at the first step.
    let d = (2.0 - std::f64::consts::SQRT_2) / 2.0;
    let h = 0.1;
    let p = OdeProblem::new(ProtheroRobinson, vec![0.0], vec![1.0 / (h * d)], (0.0, 1.0)).unwrap();
    match solve(
        &p,
        &SolverOptions::default()
            .method(Method::TrBdf2)
            .fixed_step(h),
    ) {
        Err(SolverError::SingularMatrix { t, h: hh, pivot }) => {
            assert_eq!((t, pivot), (0.0, 0));
            assert!((hh - h).abs() < 1e-15);
        }
        other => panic!("expected SingularMatrix, got {other:?}"),
    }
    // The explicit step API is not for implicit methods (they have `ImplicitIntegrator`).
    let r = Robertson::problem(1.0).unwrap();
    let implicit = SolverOptions::default().method(Method::TrBdf2);
    assert!(matches!(
        Integrator::new(&r, &implicit),
        Err(SolverError::UnsupportedMethod {
            method: Method::TrBdf2,
            ..
        })
    ));
    assert!(matches!(
        StepReplay::new(Method::Kvaerno5, 3),
        Err(SolverError::UnsupportedMethod {
            method: Method::Kvaerno5,
            ..
        })
    ));
    assert!(matches!(
        solve(&r, &implicit.clone().max_steps(3)),
        Err(SolverError::MaxStepsReached { max_steps: 3, .. })
    ));
}

#[test]
fn kvaerno5_matches_the_stiff_van_der_pol_reference() {
    use odesens_models::VanDerPol;
    // Bari test set "vdpolm": μ = 1000, y0 = (2, 0), y(2000) = (1.706167732170469, −8.928097010248125e-4).
    let want = [1.706167732170469, -8.928097010248125e-4];
    let problem = OdeProblem::new(VanDerPol, vec![2.0, 0.0], vec![1000.0], (0.0, 2000.0)).unwrap();
    for (method, tol, bound) in [
        (Method::Kvaerno5, 1e-9, 1e-5),
        (Method::TrBdf2, 1e-9, 1e-5),
        (Method::RadauIIA5, 1e-9, 1e-5),
    ] {
        let sol = solve(
            &problem,
            &SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only()
                .max_steps(1_000_000),
        )
        .unwrap();
        let err = rel_diff_componentwise(sol.u_end.as_slice().unwrap(), &want, 1e-20);
        println!(
            "Van der Pol μ = 1000 to t = 2000, {} tol {tol:.0e}: max relative error {err:.1e}; {} steps ({} \
             rejected), {} Jacobians, {} LU",
            method.name(),
            sol.stats.accepted_steps,
            sol.stats.rejected_steps,
            sol.stats.jacobian_evaluations,
            sol.stats.factorizations
        );
        assert!(err < bound, "{}: {err:e}", method.name());
    }
}

#[test]
fn auto_switching_starts_explicit_and_switches_when_stiff() {
    use odesens_models::Lorenz;
    // Robertson: Tsit5 alone stops at t ≈ 24 after 20 000 steps; the automatic method switches early.
    // (With atol = 1e-14 Tsit5's steps stay accuracy-limited — by the stiff components' error — until
    // t ≈ 24.8, and the switch comes only there: Hairer's test looks at h·ρ, not at the step count.)
    let (t_end, want) = Robertson::REFERENCE[0];
    let problem = Robertson::problem(t_end).unwrap();
    let opts = SolverOptions::default()
        .method(Method::AutoTsit5Radau5)
        .rtol(1e-6)
        .atol(1e-10);
    let sol = solve(&problem, &opts.clone().save_at(vec![1.0, 1e3, t_end])).unwrap();
    let at = sol.stats.switched_to_implicit_at.expect("switched");
    let err = rel_diff_componentwise(sol.u_end.as_slice().unwrap(), &want, 1e-20);
    println!(
        "Robertson auto: switched at t = {at:.3e} (stiffness detected at {:?}), {} steps ({} stability-limited \
         before the switch), {} Jacobians; max relative error {err:.1e}",
        sol.stats.stiffness_detected_at,
        sol.stats.accepted_steps,
        sol.stats.stability_limited_steps,
        sol.stats.jacobian_evaluations
    );
    assert!(at < 1.0, "{at}");
    assert!(err < 1e-4, "{err:e}");
    assert_eq!(sol.times.to_vec(), vec![1.0, 1e3, t_end]);
    assert_eq!(sol.method, Method::AutoTsit5Radau5);
    // Every step saved: times strictly increasing through the switch.
    let every = solve(&problem, &opts.clone().save_every_step()).unwrap();
    assert!(every.times.to_vec().windows(2).all(|w| w[1] > w[0]));
    assert_eq!(every.times.len(), every.stats.accepted_steps + 1);
    // A non-stiff problem never switches and is Tsit5's solve.
    let lorenz = OdeProblem::new(
        Lorenz,
        vec![1.0, 0.0, 0.0],
        vec![10.0, 28.0, 8.0 / 3.0],
        (0.0, 1.0),
    )
    .unwrap();
    let auto = solve(
        &lorenz,
        &SolverOptions::default().method(Method::AutoTsit5Radau5),
    )
    .unwrap();
    let tsit5 = solve(&lorenz, &SolverOptions::default()).unwrap();
    assert_eq!(auto.stats.switched_to_implicit_at, None);
    assert_eq!(auto.u_end, tsit5.u_end);
    // (That derivatives need a fixed method is tested with the sensitivity crate:
    // `derivatives_of_the_automatic_method_say_it_is_unsupported`.)
}

#[test]
fn implicit_dense_output_has_its_order() {
    // Interpolation error at step midpoints on Prothero–Robinson (λ = −10, exact sin t): the Hermite
    // cubic and Radau's collocation polynomial are O(h⁴) locally; TR-BDF2's own O(h²) error dominates.
    let problem = OdeProblem::new(ProtheroRobinson, vec![0.0], vec![-10.0], (0.0, 2.0)).unwrap();
    for (method, want) in [
        (Method::TrBdf2, 2.0),
        (Method::Kvaerno5, 4.0),
        (Method::RadauIIA5, 4.0),
    ] {
        let err = |h: f64| {
            let sol = solve(
                &problem,
                &SolverOptions::default()
                    .method(method)
                    .fixed_step(h)
                    .dense(true)
                    .save_end_only(),
            )
            .unwrap();
            let steps = (2.0 / h).round() as usize;
            (0..steps)
                .map(|k| {
                    let t = (k as f64 + 0.5) * h;
                    (sol.interpolate(t).unwrap()[0] - t.sin()).abs()
                })
                .fold(0.0, f64::max)
        };
        let (coarse, fine) = (err(0.04), err(0.01));
        let slope = (coarse / fine).ln() / 4.0f64.ln();
        println!(
            "{} dense output at midpoints: errors {coarse:.2e} (h = 0.04), {fine:.2e} (h = 0.01): order {slope:.2}",
            method.name()
        );
        assert!((slope - want).abs() < 0.3, "{}: {slope}", method.name());
    }
}

/// du/dt = −u, but the model returns NaN from t = 0.5 on (a model that breaks down).
#[derive(Clone, Copy)]
struct BreaksAtHalf;
impl OdeSystem for BreaksAtHalf {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(
        &self,
        t: S,
        u: ndarray::ArrayView1<S>,
        _p: ndarray::ArrayView1<S>,
        mut du: ndarray::ArrayViewMut1<S>,
    ) {
        du[0] = if t.re() >= 0.5 {
            u[0] * f64::NAN
        } else {
            -u[0]
        };
    }
}

#[test]
fn a_non_finite_rhs_in_an_implicit_solve_ends_with_a_clear_error() {
    let problem = OdeProblem::new(BreaksAtHalf, vec![1.0], vec![], (0.0, 1.0)).unwrap();
    for method in Method::IMPLICIT {
        // Adaptive: every attempt reaching 0.5 meets NaN, h shrinks: NonFiniteRhs at a stage time ≥ 0.5
        // just after 0.5, with the component and value (it used to be reported as NewtonFailed).
        match solve(&problem, &SolverOptions::default().method(method)) {
            Err(SolverError::NonFiniteRhs {
                t,
                component,
                value,
            }) => {
                println!("{}: NonFiniteRhs at t = {t}", method.name());
                assert!((0.5..0.5 + 1e-6).contains(&t), "t = {t}");
                assert_eq!(component, 0);
                assert!(value.is_nan());
            }
            other => panic!("{}: expected NonFiniteRhs, got {other:?}", method.name()),
        }
        // Fixed steps: the first failing step (from t = 0.3, h = 0.3), at one of its stage times
        // t + c_i h (Kvaerno5 has a node c = 1.23).
        match solve(
            &problem,
            &SolverOptions::default().method(method).fixed_step(0.3),
        ) {
            Err(SolverError::NonFiniteRhs { t, component, .. }) => {
                assert!((0.5..=0.3 + 1.25 * 0.3).contains(&t), "t = {t}");
                assert_eq!(component, 0);
            }
            other => panic!("{}: expected NonFiniteRhs, got {other:?}", method.name()),
        }
    }
}

/// Robertson with a hand-written Jacobian (column-major).
#[derive(Clone, Copy)]
struct RobertsonHandJacobian;
impl OdeSystem for RobertsonHandJacobian {
    fn n_states(&self) -> usize {
        3
    }
    fn n_params(&self) -> usize {
        3
    }
    fn rhs<S: Scalar>(
        &self,
        t: S,
        y: ndarray::ArrayView1<S>,
        p: ndarray::ArrayView1<S>,
        dy: ndarray::ArrayViewMut1<S>,
    ) {
        Robertson.rhs(t, y, p, dy);
    }
    fn jacobian(&self, _t: f64, y: &[f64], p: &[f64], jac: &mut [f64]) -> bool {
        let (k1, k2, k3) = (p[0], p[1], p[2]);
        let col = [
            [-k1, k1, 0.0],
            [k3 * y[2], -k3 * y[2] - 2.0 * k2 * y[1], 2.0 * k2 * y[1]],
            [k3 * y[1], -k3 * y[1], 0.0],
        ];
        for (j, c) in col.iter().enumerate() {
            jac[3 * j..3 * j + 3].copy_from_slice(c);
        }
        true
    }
    fn sparse_jacobian(
        &self,
        t: f64,
        y: &[f64],
        p: &[f64],
        pattern: &linalg::SparsityPattern,
        values: &mut [f64],
    ) -> bool {
        SPARSE_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut dense = [0.0; 9];
        self.jacobian(t, y, p, &mut dense);
        for j in 0..3 {
            for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                values[k] = dense[3 * j + i];
            }
        }
        true
    }
}

/// Robertson to `t_end` with AD's Jacobian and with the hand-written one: the same Jacobian to
/// round-off, so the same steps and the same answer (checked here); the hand-written one's solution.
fn ad_and_hand(t_end: f64, opts: &SolverOptions, method: Method) -> Solution {
    let ad = solve(&Robertson::problem(t_end).unwrap(), opts).unwrap();
    let hand = solve(
        &OdeProblem::new(
            RobertsonHandJacobian,
            vec![1.0, 0.0, 0.0],
            Robertson::PARAMS.to_vec(),
            (0.0, t_end),
        )
        .unwrap(),
        opts,
    )
    .unwrap();
    assert_eq!(
        ad.stats.accepted_steps,
        hand.stats.accepted_steps,
        "{}",
        method.name()
    );
    let diff = rel_diff_componentwise(
        hand.u_end.as_slice().unwrap(),
        ad.u_end.as_slice().unwrap(),
        1e-20,
    );
    assert!(diff < 1e-9, "{}: {diff:e}", method.name());
    hand
}

/// Calls of `RobertsonHandJacobian::sparse_jacobian`.
static SPARSE_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[test]
fn a_hand_written_sparse_jacobian_replaces_the_coloured_passes() {
    let (t_end, _) = Robertson::REFERENCE[0];
    for method in Method::IMPLICIT {
        let opts = SolverOptions::default()
            .method(method)
            .rtol(1e-8)
            .atol(1e-14)
            .save_end_only()
            .linear_solver(LinearSolverKind::Sparse);
        let before = SPARSE_CALLS.load(std::sync::atomic::Ordering::Relaxed);
        let hand = ad_and_hand(t_end, &opts, method);
        let calls = SPARSE_CALLS.load(std::sync::atomic::Ordering::Relaxed) - before;
        assert_eq!(calls, hand.stats.jacobian_evaluations, "{}", method.name());
    }
}

#[test]
fn an_implicit_integrator_continues_from_a_jumped_state() {
    // u' = −k u, u(0) = 1, k = 3: at t = 1 the state is doubled; then u(2) = 2 e^{−3} e^{−3}.
    let k = 3.0;
    let problem = OdeProblem::new(
        odesens_models::ExponentialDecay,
        vec![1.0],
        vec![k],
        (0.0, 2.0),
    )
    .unwrap();
    for method in Method::IMPLICIT {
        let opts = SolverOptions::default()
            .method(method)
            .rtol(1e-9)
            .atol(1e-12)
            .tstops(vec![1.0]);
        let mut it = ImplicitIntegrator::new(&problem, &opts).unwrap();
        while it.t() < 1.0 {
            it.step_accepted().unwrap();
        }
        assert_eq!(it.t(), 1.0);
        let jumped = 2.0 * it.u()[0];
        // Bad states are refused and leave the integrator usable.
        assert!(matches!(
            it.set_state(&[1.0, 2.0]),
            Err(SolverError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            it.set_state(&[f64::NAN]),
            Err(SolverError::NonFiniteInput { .. })
        ));
        it.set_state(&[jumped]).unwrap();
        // Interpolating the step before the jump is no longer possible.
        assert!(matches!(
            it.interpolate(1.0, &mut [0.0]),
            Err(SolverError::Misuse { .. })
        ));
        while !it.is_finished() {
            it.step_accepted().unwrap();
        }
        let want = 2.0 * (-2.0 * k).exp();
        let err = (it.u()[0] - want).abs() / want;
        // The same span without the jump: the jump must not cost accuracy.
        let plain = solve(&problem, &opts).unwrap().u_end[0];
        let plain_err = (plain - (-2.0 * k).exp()).abs() / (-2.0 * k).exp();
        println!(
            "{}: relative error after the jump {err:.1e}, without {plain_err:.1e}",
            method.name()
        );
        assert!(
            err < 2.0 * plain_err.max(1e-9),
            "{}: {err:e}",
            method.name()
        );
    }
}

#[test]
fn a_hand_written_jacobian_replaces_ad() {
    let (t_end, want) = Robertson::REFERENCE[0];
    for method in Method::IMPLICIT {
        let opts = SolverOptions::default()
            .method(method)
            .rtol(1e-8)
            .atol(1e-14)
            .save_end_only();
        let hand = ad_and_hand(t_end, &opts, method);
        assert!(rel_diff_componentwise(hand.u_end.as_slice().unwrap(), &want, 1e-20) < 1e-5);
    }
}

/// du/dt = −sign(u) from u = 1: u reaches 0 at t = 1, where the stage equations
/// Y + hγ sign(Y) = u_n have no solution once u_n < hγ (a discontinuous model).
#[derive(Clone, Copy)]
struct SignDecay;
impl OdeSystem for SignDecay {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(
        &self,
        _t: S,
        u: ndarray::ArrayView1<S>,
        _p: ndarray::ArrayView1<S>,
        mut du: ndarray::ArrayViewMut1<S>,
    ) {
        du[0] = S::from(if u[0].re() >= 0.0 { -1.0 } else { 1.0 });
    }
}

#[test]
fn newton_failure_ends_with_a_clear_error() {
    let problem = OdeProblem::new(SignDecay, vec![1.0], vec![], (0.0, 2.0)).unwrap();
    for method in Method::IMPLICIT {
        // (Adaptive steps chatter across u = 0 in tiny steps until max_steps: not a Newton failure.)
        // Fixed steps: the first step whose stage equations have no solution (near t = 1).
        match solve(
            &problem,
            &SolverOptions::default().method(method).fixed_step(0.3),
        ) {
            Err(SolverError::NewtonFailed { t, h }) => {
                println!("{}: fixed step: NewtonFailed at t = {t}", method.name());
                assert!((0.85..1.25).contains(&t) && h == 0.3, "t = {t}, h = {h}");
            }
            other => panic!("{}: expected NewtonFailed, got {other:?}", method.name()),
        }
    }
}

#[test]
fn the_predictive_controller_keeps_kvaerno5_from_rejecting_steps() {
    use odesens_models::VanDerPol;
    // Issue 12: with the I-controller it had, Kvaerno5 rejected 311 of 1,230 attempts here; the
    // predictive controller (the implicit methods' default) must keep rejections ≤ 10 % of accepted.
    let problem = OdeProblem::new(VanDerPol, vec![2.0, 0.0], vec![1000.0], (0.0, 2000.0)).unwrap();
    let options = SolverOptions::default()
        .method(Method::Kvaerno5)
        .tol(1e-9)
        .save_end_only();
    let default = solve(&problem, &options).unwrap();
    let explicit_predictive = solve(
        &problem,
        &options.clone().controller(PredictiveController::default()),
    )
    .unwrap();
    let s = default.stats;
    println!(
        "Kvaerno5, Van der Pol μ = 1000, tol 1e-9: {} accepted, {} rejected ({:.1} %)",
        s.accepted_steps,
        s.rejected_steps,
        100.0 * s.rejected_steps as f64 / s.accepted_steps as f64
    );
    assert!(s.rejected_steps * 10 <= s.accepted_steps, "{s:?}");
    assert_eq!(
        default.u_end, explicit_predictive.u_end,
        "the default is predictive"
    );
    // The option is honoured: a PI controller (the old I-controller's settings) takes other steps and
    // rejects far more of them.
    let pi = solve(
        &problem,
        &options.clone().controller(PiController {
            safety: 0.9,
            beta1: 1.0,
            beta2: 0.0,
            q_min: 0.2,
            q_max: 5.0,
        }),
    )
    .unwrap();
    println!(
        "with the PI controller: {} accepted, {} rejected",
        pi.stats.accepted_steps, pi.stats.rejected_steps
    );
    assert!(pi.stats.rejected_steps > 2 * s.rejected_steps);
}

#[test]
fn every_method_honours_every_controller() {
    use odesens_models::VanDerPol;
    let problem = OdeProblem::new(VanDerPol, vec![2.0, 0.0], vec![10.0], (0.0, 20.0)).unwrap();
    let controllers: [Controller; 3] = [
        Controller::MethodDefault,
        PiController::default().into(),
        PredictiveController::default().into(),
    ];
    for method in [
        Method::Tsit5,
        Method::Vern9,
        Method::TrBdf2,
        Method::Kvaerno5,
        Method::RadauIIA5,
    ] {
        let mut ends = Vec::new();
        for c in controllers {
            let sol = solve(
                &problem,
                &SolverOptions::default()
                    .method(method)
                    .tol(1e-8)
                    .controller(c)
                    .save_end_only(),
            )
            .unwrap();
            // The same answer to the tolerance, by different step sequences.
            assert!((sol.u_end[0] - ends.first().copied().unwrap_or(sol.u_end[0])).abs() < 1e-5);
            ends.push(sol.u_end[0]);
        }
        // The explicit default is PI and the implicit default predictive: one of the two others
        // reproduces the default bit for bit, the other does not.
        let same_as_default = ends[1..].iter().filter(|&&e| e == ends[0]).count();
        assert_eq!(same_as_default, 1, "{method}: {ends:?}");
    }
    // Bad settings name themselves.
    let bad = PredictiveController {
        q_first_rejection: 1.5,
        ..Default::default()
    };
    assert!(matches!(
        solve(&problem, &SolverOptions::default().controller(bad)),
        Err(SolverError::InvalidOption {
            name: "controller.q_first_rejection",
            ..
        })
    ));
}

#[test]
fn save_at_interpolates_for_implicit_methods_as_for_explicit_ones() {
    use odesens_models::VanDerPol;
    let problem = OdeProblem::new(VanDerPol, vec![2.0, 0.0], vec![10.0], (0.0, 20.0)).unwrap();
    let times: Vec<f64> = (1..40).map(|k| 0.5 * f64::from(k) + 0.013).collect();
    let reference = solve(
        &problem,
        &SolverOptions::default()
            .method(Method::RadauIIA5)
            .tol(1e-13)
            .save_at(times.clone()),
    )
    .unwrap();
    for method in Method::IMPLICIT {
        let opts = SolverOptions::default().method(method).tol(1e-8);
        let at = solve(&problem, &opts.clone().save_at(times.clone())).unwrap();
        let end = solve(&problem, &opts.clone().save_end_only()).unwrap();
        // The save times no longer cut steps: the same steps, the same end.
        assert_eq!(
            at.stats.accepted_steps, end.stats.accepted_steps,
            "{method}"
        );
        assert_eq!(at.u_end, end.u_end, "{method}");
        assert_eq!(at.times.to_vec(), times);
        // The saved values come from the dense output the solve would store with dense(true).
        let dense = solve(&problem, &opts.clone().dense(true)).unwrap();
        let mut worst = 0.0f64;
        for (k, &t) in times.iter().enumerate() {
            let d = dense.interpolate(t).unwrap();
            for m in 0..2 {
                assert_eq!(at.states[[k, m]], d[m], "{method} at t = {t}");
                let e = (at.states[[k, m]] - reference.states[[k, m]]).abs()
                    / reference.states[[k, m]].abs().max(1.0);
                worst = worst.max(e);
            }
        }
        println!("{method}: save_at by interpolation, worst error {worst:.1e}");
        // Cubic interpolants between steps of a tol-1e-8 solve (TR-BDF2 is second order).
        let bound = if method == Method::TrBdf2 { 1e-3 } else { 1e-5 };
        assert!(worst < bound, "{method}: {worst:e}");
    }
}

#[test]
fn dense_output_extends_its_end_steps_by_one_step() {
    // Kvaerno5's stage at c_2 ≈ 1.23 samples u beyond a step: a dense output must answer just past its
    // span with the boundary step's polynomial, and not further than one step.
    let k = 2.0;
    let problem = OdeProblem::new(
        odesens_models::ExponentialDecay,
        vec![1.0],
        vec![k],
        (0.0, 1.0),
    )
    .unwrap();
    let opts = SolverOptions::default()
        .method(Method::Kvaerno5)
        .rtol(1e-10)
        .atol(1e-12);
    let mut it = ImplicitIntegrator::new(&problem, &opts).unwrap();
    let mut dense = it.new_dense_output();
    let (mut h_first, mut h_last) = (0.0, 0.0);
    while !it.is_finished() {
        let t = it.t();
        it.step_accepted().unwrap();
        h_last = it.t() - t;
        if t == 0.0 {
            h_first = h_last;
        }
        it.push_dense(&mut dense).unwrap();
    }
    let (mut out, mut scratch) = ([0.0], vec![0.0; dense.scratch_len()]);
    let beyond = 1.0 + 0.23 * h_last;
    assert!(matches!(
        dense.interpolate_into(beyond, &mut out, &mut scratch),
        Err(SolverError::TimeOutsideSpan { .. })
    ));
    dense
        .extrapolate_into(beyond, &mut out, &mut scratch)
        .unwrap();
    let err = (out[0] - (-k * beyond).exp()).abs() / (-k * beyond).exp();
    println!(
        "extrapolated 0.23 h = {:.3e} past the end: {err:.1e}",
        0.23 * h_last
    );
    assert!(err < 1e-6, "{err:e}");
    // Before the start likewise, and inside it agrees with interpolation bit for bit.
    let before = -0.5 * h_first;
    dense
        .extrapolate_into(before, &mut out, &mut scratch)
        .unwrap();
    assert!((out[0] - (-k * before).exp()).abs() < 1e-6);
    let mut inside = [0.0];
    dense
        .interpolate_into(0.5, &mut inside, &mut scratch)
        .unwrap();
    dense.extrapolate_into(0.5, &mut out, &mut scratch).unwrap();
    assert_eq!(out, inside);
    // Further out, t is brought back to one step beyond the end.
    let mut limit = [0.0];
    dense
        .extrapolate_into(1.0 + h_last, &mut limit, &mut scratch)
        .unwrap();
    dense
        .extrapolate_into(10.0, &mut out, &mut scratch)
        .unwrap();
    assert_eq!(out, limit);
}
