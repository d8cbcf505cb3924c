//! Forward sensitivities and discrete adjoints: against each other (same discrete solution, ≤ 1e-10),
//! against finite differences, against closed forms and the course's reference values; checkpointing.

#![allow(clippy::needless_range_loop)] // index loops mirror (time, state, direction) indices

use ndarray::{Array2, array};
use odesens_models::compare::rel_diff_max_norm;
use odesens_models::{
    DoublePendulum, ExponentialDecay, LinearOscillator, Lorenz, LotkaVolterra, VanDerPol,
};
use odesens_sensitivity::{
    Checkpointing, ComponentAt, Directions, ForwardSettings, Gradient, IntegralOfSquare,
    LeastSquares, Objective, SensitivityAlgorithm, SensitivityError, SquaredNormAt, WeightedSumAt,
    binomial_recomputations, check_gradient, forward_sensitivities, gradient,
};
use odesens_solver::*;

fn rel_diff(a: &Gradient, b: &Gradient) -> f64 {
    // Relative to the size of the first.
    rel_diff_max_norm(&b.to_vec(), &a.to_vec())
}

fn bitwise_equal(a: &Gradient, b: &Gradient) -> bool {
    a.wrt_params
        .iter()
        .zip(b.wrt_params.iter())
        .all(|(x, y)| x.to_bits() == y.to_bits())
        && a.wrt_u0
            .iter()
            .zip(b.wrt_u0.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

const POLICIES: [Checkpointing; 4] = [
    Checkpointing::Uniform { every: 7 },
    Checkpointing::Binomial { snapshots: 5 },
    Checkpointing::Binomial { snapshots: 1 },
    Checkpointing::MemoryBudget { bytes: 2000 },
];

fn check_all_methods<M: OdeSystem, O: Objective>(
    name: &str,
    problem: &OdeProblem<M>,
    objective: &O,
    tol: f64,
) {
    for method in Method::ALL {
        let options = SolverOptions::default()
            .method(method)
            .tol(tol)
            .max_steps(1_000_000);
        let keep_all = gradient(
            problem,
            &options,
            objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let forward =
            gradient(problem, &options, objective, &SensitivityAlgorithm::Forward).unwrap();
        let d = rel_diff(&keep_all, &forward);
        println!(
            "{name} {method}: |adjoint − forward| / |grad| = {d:.2e}, G = {}",
            keep_all.value
        );
        assert!(
            d <= 1e-10,
            "{name} {method}: adjoint and forward differ by {d:e}"
        );
        assert_eq!(
            keep_all.value.to_bits(),
            forward.value.to_bits(),
            "{name} {method}: G"
        );
        for policy in POLICIES {
            let g = gradient(
                problem,
                &options,
                objective,
                &SensitivityAlgorithm::adjoint(policy),
            )
            .unwrap();
            assert!(
                bitwise_equal(&g, &keep_all),
                "{name} {method}: {policy:?} is not bitwise keep-all"
            );
        }
    }
}

#[test]
fn adjoint_equals_forward_on_the_double_pendulum() {
    let p = DoublePendulum::standard_params();
    let problem = OdeProblem::new(DoublePendulum, vec![2.0, 2.0, 0.0, 0.0], p, (0.0, 2.0)).unwrap();
    check_all_methods("pendulum θ1(2)", &problem, &ComponentAt::new(0, 2.0), 1e-8);
    let data = Array2::from_shape_fn((3, 4), |(k, i)| 0.1 * (k + i) as f64);
    let ls = LeastSquares::new(vec![0.5, 1.25, 2.0], data).unwrap();
    check_all_methods("pendulum least squares", &problem, &ls, 1e-7);
}

#[test]
fn adjoint_equals_forward_on_lotka_volterra_and_lorenz() {
    let lv = OdeProblem::new(
        LotkaVolterra,
        vec![1.0, 1.0],
        LotkaVolterra::classic_params(),
        (0.0, 5.0),
    )
    .unwrap();
    check_all_methods("Lotka–Volterra ∫x²", &lv, &IntegralOfSquare::new(0), 1e-8);
    check_all_methods(
        "Lotka–Volterra wᵀu(5)",
        &lv,
        &WeightedSumAt::new(vec![1.0, -2.0], 5.0),
        1e-8,
    );
    let lorenz = OdeProblem::new(
        Lorenz,
        vec![1.0, 0.0, 0.0],
        Lorenz::classic_params(),
        (0.0, 1.0),
    )
    .unwrap();
    check_all_methods("Lorenz ‖u(1)‖²", &lorenz, &SquaredNormAt::new(1.0), 1e-8);
}

#[test]
fn gradients_agree_with_finite_differences() {
    let cases: Vec<(String, f64)> = {
        let mut v = Vec::new();
        let pend = DoublePendulum::standard_problem(2.0).unwrap();
        let options = SolverOptions::default().method(Method::Vern9).tol(1e-12);
        let objective = SquaredNormAt::new(2.0);
        let g = gradient(
            &pend,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let check = check_gradient(&pend, &options, &objective, &g, None).unwrap();
        v.push(("pendulum".to_string(), check.max_rel_error));
        let lv = OdeProblem::new(
            LotkaVolterra,
            vec![1.0, 1.0],
            LotkaVolterra::classic_params(),
            (0.0, 5.0),
        )
        .unwrap();
        let objective = IntegralOfSquare::new(1);
        let g = gradient(&lv, &options, &objective, &SensitivityAlgorithm::Forward).unwrap();
        let check = check_gradient(&lv, &options, &objective, &g, None).unwrap();
        v.push(("Lotka–Volterra".to_string(), check.max_rel_error));
        v
    };
    for (name, err) in cases {
        println!("{name}: max relative error against central differences {err:.2e}");
        assert!(err < 1e-6, "{name}: {err:e}");
    }
}

#[test]
fn closed_form_gradients() {
    // Exponential decay: G = u(T) = u0 e^{−kT}: dG/dk = −T G, dG/du0 = e^{−kT}.
    let (u0, k, t) = (1.5, 0.8, 2.0);
    let problem = OdeProblem::new(ExponentialDecay, vec![u0], vec![k], (0.0, t)).unwrap();
    let g = gradient(
        &problem,
        &SolverOptions::default().tol(1e-12),
        &ComponentAt::new(0, t),
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let exact = u0 * (-k * t).exp();
    assert!(
        (g.wrt_params[0] + t * exact).abs() < 1e-9,
        "dG/dk = {}",
        g.wrt_params[0]
    );
    assert!((g.wrt_u0[0] - (-k * t).exp()).abs() < 1e-9);
    // Damped oscillator: G = x(T); derivatives of the closed form by central differences of it.
    let (w, z, x0, v0, t) = (1.3, 0.1, 1.0, -0.4, 3.0);
    let problem = OdeProblem::new(LinearOscillator, vec![x0, v0], vec![w, z], (0.0, t)).unwrap();
    let g = gradient(
        &problem,
        &SolverOptions::default().method(Method::Vern9).tol(1e-13),
        &ComponentAt::new(0, t),
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let x = |w: f64, z: f64, x0: f64, v0: f64| LinearOscillator::exact([x0, v0], w, z, 0.0, t)[0];
    let d = 1e-6;
    let exact = [
        (x(w + d, z, x0, v0) - x(w - d, z, x0, v0)) / (2.0 * d),
        (x(w, z + d, x0, v0) - x(w, z - d, x0, v0)) / (2.0 * d),
        (x(w, z, x0 + d, v0) - x(w, z, x0 - d, v0)) / (2.0 * d),
        (x(w, z, x0, v0 + d) - x(w, z, x0, v0 - d)) / (2.0 * d),
    ];
    let ours = [g.wrt_params[0], g.wrt_params[1], g.wrt_u0[0], g.wrt_u0[1]];
    for (a, b) in ours.iter().zip(exact) {
        assert!(
            (a - b).abs() < 1e-8 * b.abs().max(1.0),
            "{a} vs closed form {b}"
        );
    }
}

#[test]
fn course_adjoint_matches_the_reference() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("../../data/reference/double_pendulum.json")).unwrap();
    let want: Vec<f64> = reference["course"]["grad_u0_G_converged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let g_ref = reference["course"]["G_norm_squared_u_end"]
        .as_f64()
        .unwrap();
    let problem = DoublePendulum::standard_problem(2.0).unwrap();
    for method in [Method::Tsit5, Method::Vern9] {
        let options = SolverOptions::default().method(method).tol(1e-12);
        let g = gradient(
            &problem,
            &options,
            &SquaredNormAt::new(2.0),
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let err = g
            .wrt_u0
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / b.abs())
            .fold(0.0, f64::max);
        println!(
            "{method}: ∇u0 G = {:?}, max relative error {err:.2e}; G = {}",
            g.wrt_u0.to_vec(),
            g.value
        );
        assert!(err < 1e-8, "{method}: {err:e}");
        assert!((g.value - g_ref).abs() / g_ref < 1e-10);
    }
}

#[test]
fn forward_sensitivities_at_save_times_match_finite_differences() {
    let problem = OdeProblem::new(
        LotkaVolterra,
        vec![1.0, 1.0],
        LotkaVolterra::classic_params(),
        (0.0, 3.0),
    )
    .unwrap();
    let options = SolverOptions::default().method(Method::Vern9).tol(1e-12);
    let times = vec![0.0, 1.0, 2.0, 3.0];
    let fs = forward_sensitivities(
        &problem,
        &options,
        &Directions::All,
        &times,
        ForwardSettings::default(),
    )
    .unwrap();
    assert_eq!(fs.sensitivities.shape(), &[4, 2, 6]);
    // At t0: ∂u/∂p = 0, ∂u/∂u0 = I.
    assert_eq!(fs.sensitivities[[0, 0, 4]], 1.0);
    assert_eq!(fs.sensitivities[[0, 1, 0]], 0.0);
    let d = 1e-6;
    for j in 0..6 {
        let (mut pp, mut pm) = (problem.params().clone(), problem.params().clone());
        let (mut up, mut um) = (problem.u0().clone(), problem.u0().clone());
        if j < 4 {
            pp[j] += d;
            pm[j] -= d;
        } else {
            up[j - 4] += d;
            um[j - 4] -= d;
        }
        let solve_at = |u0, p| {
            solve(
                &OdeProblem::new(LotkaVolterra, u0, p, (0.0, 3.0)).unwrap(),
                &options
                    .clone()
                    .save_at(times.clone())
                    .tstops(vec![1.0, 2.0]),
            )
            .unwrap()
        };
        let (sp, sm) = (solve_at(up, pp), solve_at(um, pm));
        for k in 1..4 {
            for m in 0..2 {
                let fd = (sp.states[[k, m]] - sm.states[[k, m]]) / (2.0 * d);
                let ours = fs.sensitivities[[k, m, j]];
                assert!(
                    (ours - fd).abs() < 1e-6 * fd.abs().max(1.0),
                    "t = {}, u{m}, direction {j}: {ours} vs {fd}",
                    times[k]
                );
            }
        }
    }
}

#[test]
fn binomial_checkpointing_recomputes_the_optimal_number_of_steps() {
    assert_eq!(binomial_recomputations(1000, 10), 3636);
    assert_eq!(binomial_recomputations(2, 1), 1);
    assert_eq!(binomial_recomputations(3, 1), 3);
    // Exactly 1000 fixed steps.
    let problem = OdeProblem::new(ExponentialDecay, vec![1.0], vec![0.3], (0.0, 1.0)).unwrap();
    let options = SolverOptions::default().fixed_step(1e-3);
    let objective = ComponentAt::new(0, 1.0);
    let keep_all = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    assert_eq!(keep_all.stats.forward.accepted_steps, 1000);
    let g = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: 10 }),
    )
    .unwrap();
    println!(
        "binomial(10), 1000 steps: {} recomputed, peak {} snapshots",
        g.stats.recomputed_steps, g.stats.peak_snapshots
    );
    assert_eq!(g.stats.recomputed_steps, 3636);
    assert!(g.stats.peak_snapshots <= 10);
    assert!(bitwise_equal(&g, &keep_all));
    for s in [1, 2, 3, 7, 50] {
        let l = 137;
        let problem =
            OdeProblem::new(ExponentialDecay, vec![1.0], vec![0.3], (0.0, 0.137)).unwrap();
        let g = gradient(
            &problem,
            &options,
            &objective_at(0.137),
            &SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: s }),
        )
        .unwrap();
        assert_eq!(
            g.stats.recomputed_steps,
            binomial_recomputations(l, s),
            "s = {s}"
        );
        assert!(g.stats.peak_snapshots <= s);
    }
}

fn objective_at(t: f64) -> ComponentAt {
    ComponentAt::new(0, t)
}

#[test]
fn long_van_der_pol_solve_within_a_64_kib_budget() {
    // μ = 1 on its limit cycle (period ≈ 6.663): ≥ 10^5 accepted steps.
    let problem = OdeProblem::new(
        VanDerPol,
        vec![2.008_619_860_874_843, 0.0],
        vec![1.0],
        (0.0, 400.0),
    )
    .unwrap();
    let options = SolverOptions::default()
        .method(Method::Bs3)
        .tol(1e-9)
        .max_steps(10_000_000);
    let objective = SquaredNormAt::new(400.0);
    let keep_all = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let l = keep_all.stats.forward.accepted_steps;
    let budget = 64 * 1024;
    let g = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::MemoryBudget { bytes: budget }),
    )
    .unwrap();
    let s = g.stats.peak_snapshots;
    let optimal = binomial_recomputations(l, budget / (g.stats.peak_checkpoint_bytes / s.max(1)));
    println!(
        "Van der Pol: {l} steps, {s} snapshots, peak {} bytes, {} recomputed (optimum {optimal})",
        g.stats.peak_checkpoint_bytes, g.stats.recomputed_steps
    );
    assert!(l >= 100_000, "only {l} steps");
    assert!(bitwise_equal(&g, &keep_all));
    assert!(g.stats.peak_checkpoint_bytes <= budget);
    assert!(g.stats.recomputed_steps as f64 <= 1.1 * optimal as f64);
}

#[test]
fn bad_input_is_reported() {
    let problem = OdeProblem::new(
        LotkaVolterra,
        vec![1.0, 1.0],
        LotkaVolterra::classic_params(),
        (0.0, 2.0),
    )
    .unwrap();
    let options = SolverOptions::default();
    assert!(matches!(
        gradient(&problem, &options, &ComponentAt::new(0, 3.0), &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll)),
        Err(SensitivityError::Solver(SolverError::TimeOutsideSpan { t, .. })) if t == 3.0
    ));
    let ls = LeastSquares::new(vec![1.0, 0.5], Array2::zeros((2, 2))).unwrap();
    assert!(matches!(
        gradient(
            &problem,
            &options,
            &ls,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll)
        ),
        Err(SensitivityError::Solver(SolverError::UnsortedTimes {
            index: 1,
            ..
        }))
    ));
    assert!(matches!(
        gradient(
            &problem,
            &options,
            &WeightedSumAt::new(vec![1.0; 3], 2.0),
            &SensitivityAlgorithm::Forward
        ),
        Err(SensitivityError::DimensionMismatch {
            expected: 2,
            got: 3,
            ..
        })
    ));
    let bad = Directions::Custom {
        du0: Array2::zeros((3, 1)),
        dp: Array2::zeros((4, 1)),
    };
    assert!(matches!(
        forward_sensitivities(&problem, &options, &bad, &[1.0], ForwardSettings::default()),
        Err(SensitivityError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        gradient(
            &problem,
            &options,
            &SquaredNormAt::new(2.0),
            &SensitivityAlgorithm::adjoint(Checkpointing::MemoryBudget { bytes: 8 })
        ),
        Err(SensitivityError::InvalidSetting { .. })
    ));
    assert!(matches!(
        gradient(
            &problem,
            &options,
            &SquaredNormAt::new(2.0),
            &SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: 0 })
        ),
        Err(SensitivityError::InvalidSetting { .. })
    ));
}

/// A model whose Jacobian is NaN (f = √|u|·… at u = 0 has an infinite derivative): the forward solve is
/// fine, the backward pass is not.
struct SqrtAtZero;
impl OdeSystem for SqrtAtZero {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, _p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = u[1].abs().sqrt();
        du[1] = u[1] * 0.0;
    }
}

use ndarray::{ArrayView1, ArrayViewMut1};

#[test]
fn nan_in_the_backward_pass_names_the_time() {
    let problem =
        OdeProblem::new(SqrtAtZero, array![0.0, 0.0], Vec::<f64>::new(), (0.0, 1.0)).unwrap();
    let err = gradient(
        &problem,
        &SolverOptions::default(),
        &ComponentAt::new(0, 1.0),
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap_err();
    assert!(
        matches!(err, SensitivityError::NonFiniteDerivative { t, .. } if (0.0..1.0).contains(&t)),
        "{err:?}"
    );
}

#[test]
fn hand_written_vjp_matches_automatic_differentiation() {
    use odesens_models::DoublePendulumWithVjp;
    use odesens_sensitivity::derivatives::{Derivatives, VjpMode};
    // n + p = 9 > CHUNK: the default AD route is reverse mode; the Jacobian route is checked too.
    let mut ad = Derivatives::new(&DoublePendulum);
    assert_eq!(ad.ad_vjp_route(), VjpMode::Reverse);
    let mut jac = Derivatives::new(&DoublePendulum).with_vjp_mode(VjpMode::Jacobian);
    let mut hand = Derivatives::new(&DoublePendulumWithVjp);
    let p = [1.1, 0.7, 0.3, 0.45, 9.81];
    for k in 0..20 {
        let x = f64::from(k);
        let u = [
            0.3 + 0.5 * x.sin(),
            -1.2 + 0.3 * x,
            0.7 * x.cos(),
            -2.0 + 0.2 * x,
        ];
        let lambda = [0.2 * x - 1.0, 1.5, -0.3 * x.sin(), 0.8 + 0.1 * x];
        let (mut ua, mut pa, mut uh, mut ph) = ([0.0; 4], [0.0; 5], [0.0; 4], [0.0; 5]);
        let (mut uj, mut pj) = ([0.0; 4], [0.0; 5]);
        ad.vjp_add(0.0, &u, &p, &lambda, &mut ua, &mut pa);
        jac.vjp_add(0.0, &u, &p, &lambda, &mut uj, &mut pj);
        hand.vjp_add(0.0, &u, &p, &lambda, &mut uh, &mut ph);
        for ((a, h), j) in ua
            .iter()
            .chain(&pa)
            .zip(uh.iter().chain(&ph))
            .zip(uj.iter().chain(&pj))
        {
            assert!(
                (a - h).abs() <= 1e-12 * a.abs().max(1.0),
                "reverse AD {a} vs hand-written {h}"
            );
            assert!(
                (j - h).abs() <= 1e-12 * j.abs().max(1.0),
                "Jacobian AD {j} vs hand-written {h}"
            );
        }
    }
    assert_eq!(hand.counts.dual_passes, 0);
    assert_eq!((ad.counts.tape_sweeps, ad.counts.dual_passes), (20, 0));
    assert_eq!((jac.counts.tape_sweeps, jac.counts.dual_passes), (0, 40));
    // And the adjoint gradient through it agrees with forward sensitivities.
    let problem = OdeProblem::new(
        DoublePendulumWithVjp,
        vec![2.0, 2.0, 0.0, 0.0],
        DoublePendulum::standard_params(),
        (0.0, 2.0),
    )
    .unwrap();
    let options = SolverOptions::default().tol(1e-9);
    let objective = SquaredNormAt::new(2.0);
    let a = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let f = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::Forward,
    )
    .unwrap();
    assert!(rel_diff(&a, &f) <= 1e-10);
}

#[test]
fn tangent_error_control_steers_the_steps_and_sharpens_the_tangents() {
    use odesens_sensitivity::{ForwardSettings, forward_sensitivities};
    // The chaotic pendulum: ∂u/∂u0 grows by orders of magnitude, the state does not.
    let problem = DoublePendulum::standard_problem(5.0).unwrap();
    let times = [5.0];
    let reference = forward_sensitivities(
        &problem,
        &SolverOptions::default().method(Method::Vern9).tol(1e-13),
        &Directions::InitialValues,
        &times,
        ForwardSettings::default(),
    )
    .unwrap();
    let options = SolverOptions::default().tol(1e-6);
    let plain = forward_sensitivities(
        &problem,
        &options,
        &Directions::InitialValues,
        &times,
        ForwardSettings::default(),
    )
    .unwrap();
    let controlled = forward_sensitivities(
        &problem,
        &options,
        &Directions::InitialValues,
        &times,
        ForwardSettings {
            tangent_error_control: true,
        },
    )
    .unwrap();
    let err = |fs: &odesens_sensitivity::ForwardSensitivities| {
        let scale = reference
            .sensitivities
            .iter()
            .fold(0.0f64, |m, x| m.max(x.abs()));
        fs.sensitivities
            .iter()
            .zip(reference.sensitivities.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / scale
    };
    let (e_plain, e_controlled) = (err(&plain), err(&controlled));
    println!(
        "rtol = atol = 1e-6: tangent error {e_plain:.2e} in {} steps (plain), {e_controlled:.2e} in {} steps (tangents in the error control)",
        plain.stats.forward.accepted_steps, controlled.stats.forward.accepted_steps
    );
    // The tangents now steer the steps (the RMS runs over state and tangent components, so the sequence
    // differs from the plain solve's), and the tangents are more accurate.
    assert_ne!(
        controlled.stats.forward.accepted_steps,
        plain.stats.forward.accepted_steps
    );
    assert!(e_controlled < 0.5 * e_plain);
}

/// G = √u_0(1): its gradient is infinite where u_0(1) = 0.
struct SqrtAtOne;
impl Objective for SqrtAtOne {
    fn observation_times(&self) -> &[f64] {
        &[1.0]
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u[0].sqrt()
    }
}

#[test]
fn a_non_finite_objective_gradient_is_an_error() {
    let problem = OdeProblem::new(ExponentialDecay, vec![0.0], vec![1.0], (0.0, 1.0)).unwrap();
    let options = SolverOptions::default();
    for result in [
        gradient(
            &problem,
            &options,
            &SqrtAtOne,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        ),
        gradient(
            &problem,
            &options,
            &SqrtAtOne,
            &SensitivityAlgorithm::Forward,
        ),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, SensitivityError::NonFiniteDerivative { t, .. } if t == 1.0),
            "{err:?}"
        );
    }
}

#[test]
fn binomial_reversal_with_as_many_snapshots_as_steps_does_not_recurse() {
    // 300 000 fixed steps and room for all of them: the reversal's nesting is 300 000 deep, which must
    // not live on the call stack.
    let problem = OdeProblem::new(ExponentialDecay, vec![1.0], vec![0.3], (0.0, 3.0)).unwrap();
    let options = SolverOptions::default()
        .method(Method::Bs3)
        .fixed_step(1e-5)
        .max_steps(1_000_000);
    let objective = ComponentAt::new(0, 3.0);
    let g = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::MemoryBudget { bytes: 1 << 30 }),
    )
    .unwrap();
    assert_eq!(g.stats.forward.accepted_steps, 300_000);
    assert_eq!(g.stats.recomputed_steps, 300_000 - 1);
    let exact = (-0.3f64 * 3.0).exp();
    assert!((g.wrt_u0[0] - exact).abs() < 1e-12);
}

#[test]
fn a_uniform_interval_longer_than_the_solve_is_one_segment() {
    let problem = OdeProblem::new(ExponentialDecay, vec![1.0], vec![0.3], (0.0, 1.0)).unwrap();
    let options = SolverOptions::default().fixed_step(0.01);
    let objective = ComponentAt::new(0, 1.0);
    let keep_all = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let g = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::Uniform {
            every: usize::MAX / 2,
        }),
    )
    .unwrap();
    assert!(bitwise_equal(&g, &keep_all));
    assert_eq!(g.stats.recomputed_steps, 99);
    assert_eq!(g.stats.peak_snapshots, 100);
}

#[test]
fn recorded_adjoint_trajectory_matches_the_closed_form_and_jumps_at_observations() {
    use odesens_sensitivity::{AdjointSettings, SensitivityAlgorithm, gradient};
    // du/dt = −k u, G = Σ_k u(t_k)² at t = 1, 2: λ(t) = Σ_{t_k > t} 2 u(t_k) e^{−k (t_k − t)}.
    let (u0, k) = (1.5, 0.8);
    let problem = OdeProblem::new(ExponentialDecay, vec![u0], vec![k], (0.0, 2.0)).unwrap();
    let times = vec![1.0, 2.0];
    let data = Array2::zeros((2, 1));
    let objective = LeastSquares::new(times.clone(), data).unwrap();
    let settings = AdjointSettings {
        record_trajectory: true,
        ..Default::default()
    };
    let options = SolverOptions::default().tol(1e-12);
    let g = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::DiscreteAdjoint(AdjointSettings {
            checkpointing: Checkpointing::Binomial { snapshots: 3 },
            ..settings
        }),
    )
    .unwrap();
    let plain = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    assert!(bitwise_equal(&g, &plain));
    assert!(plain.adjoint.is_none());
    let traj = g.adjoint.expect("recorded");
    let u = |t: f64| ExponentialDecay::exact(u0, k, 0.0, t);
    // LeastSquares is ½ Σ ‖u(t_k) − d_k‖², so each observation adds u(t_k).
    let lambda = |t: f64, after_jump_at_t: bool| -> f64 {
        times
            .iter()
            .filter(|&&tk| tk > t || (tk == t && after_jump_at_t))
            .map(|&tk| u(tk) * (-k * (tk - t)).exp())
            .sum()
    };
    let (ts, ls) = (traj.times.to_vec(), traj.lambda.column(0).to_vec());
    assert_eq!(
        (ts[0], ls[0]),
        (2.0, 0.0),
        "before the terminal observation"
    );
    assert_eq!(ts[1], 2.0);
    assert_eq!(*ts.last().unwrap(), 0.0);
    assert_eq!(ls.last().unwrap().to_bits(), g.wrt_u0[0].to_bits());
    assert!(ts.windows(2).all(|w| w[1] <= w[0]), "times run backwards");
    let mut seen_one = 0;
    for (r, (&t, &l)) in ts.iter().zip(&ls).enumerate() {
        // A repeated time is the value after the jump.
        let after = r > 0 && ts[r - 1] == t;
        seen_one += usize::from(t == 1.0);
        let want = lambda(t, after);
        assert!((l - want).abs() < 1e-9, "λ({t}) = {l}, want {want}");
    }
    assert_eq!(seen_one, 2, "t = 1 before and after its jump");
}

#[test]
fn directional_derivatives_are_gradient_projections() {
    use odesens_sensitivity::forward_directional_derivatives;
    let problem = DoublePendulum::standard_problem(2.0).unwrap();
    let options = SolverOptions::default().tol(1e-9);
    let objective = SquaredNormAt::new(2.0);
    let full = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::Forward,
    )
    .unwrap();
    let params =
        forward_directional_derivatives(&problem, &options, &objective, &Directions::Parameters)
            .unwrap();
    assert_eq!(params.value.to_bits(), full.value.to_bits());
    assert_eq!(params.derivatives.len(), 5);
    for (a, b) in params.derivatives.iter().zip(full.wrt_params.iter()) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }
    // One custom direction (all u0 and p at once): the gradient's dot product with it.
    let du0 = Array2::from_shape_vec((4, 1), vec![1.0, -0.5, 0.25, 2.0]).unwrap();
    let dp = Array2::from_shape_vec((5, 1), vec![0.1, 0.2, -0.3, 0.0, 1.0]).unwrap();
    let want: f64 = full.wrt_u0.dot(&du0.column(0)) + full.wrt_params.dot(&dp.column(0));
    let one = forward_directional_derivatives(
        &problem,
        &options,
        &objective,
        &Directions::Custom { du0, dp },
    )
    .unwrap();
    assert!((one.derivatives[0] - want).abs() <= 1e-10 * want.abs());
    assert_eq!(one.stats.derivatives.dual_passes, one.stats.derivatives.jvp);
}

#[test]
fn driven_pendulum_gradients_agree_for_any_number_of_knots() {
    use odesens_models::DrivenDoublePendulum;
    // With a zero torque it is the course's pendulum.
    let (u, t) = ([0.3, -1.1, 0.7, 2.0], 0.9);
    let mut driven = [0.0; 4];
    let mut plain = [0.0; 4];
    let zero = vec![0.0; 6];
    let model = DrivenDoublePendulum {
        knots: 6,
        horizon: 2.0,
    };
    model.rhs(
        t,
        ndarray::ArrayView1::from(&u[..]),
        ndarray::ArrayView1::from(&zero[..]),
        ndarray::ArrayViewMut1::from(&mut driven[..]),
    );
    let p = DoublePendulum::standard_params();
    DoublePendulum.rhs(
        t,
        ndarray::ArrayView1::from(&u[..]),
        ndarray::ArrayView1::from(&p[..]),
        ndarray::ArrayViewMut1::from(&mut plain[..]),
    );
    for (a, b) in driven.iter().zip(plain) {
        assert!((a - b).abs() <= 1e-14 * b.abs().max(1.0));
    }
    assert_eq!(model.knot_times().len(), 4);
    assert!((model.knot_times()[3] - 1.6).abs() < 1e-15);
    // t = 0.9 of [0, 2] with 6 knots (every 0.4 s): between knots 2 and 3 with weight 0.25; only
    // those two control values move f, in the ratio 0.75 : 0.25.
    let (k, w) = model.interval(0.9);
    assert_eq!(k, 2);
    assert!((w - 0.25).abs() < 1e-12);
    let mut der = odesens_sensitivity::derivatives::Derivatives::new(&model);
    let (mut ub, mut pb) = ([0.0; 4], [0.0; 6]);
    der.vjp_add(t, &u, &zero, &[0.0, 0.0, 1.0, 0.0], &mut ub, &mut pb);
    assert_eq!((pb[0], pb[1], pb[4], pb[5]), (0.0, 0.0, 0.0, 0.0));
    assert!((pb[2] / pb[3] - 3.0).abs() < 1e-12, "{pb:?}");
    for knots in [1, 12] {
        let problem = DrivenDoublePendulum::problem(knots, 2.0).unwrap();
        let options = SolverOptions::default()
            .method(Method::Vern9)
            .tol(1e-12)
            .tstops(problem.model().knot_times());
        let objective = SquaredNormAt::new(2.0);
        let a = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let f = gradient(
            &problem,
            &options,
            &objective,
            &SensitivityAlgorithm::Forward,
        )
        .unwrap();
        assert!(rel_diff(&a, &f) <= 1e-10, "{knots} knots");
        assert_eq!(a.stats.derivatives.dual_passes > 0, knots + 4 <= 8);
        let check = check_gradient(&problem, &options, &objective, &a, None).unwrap();
        assert!(check.max_rel_error < 1e-5, "{knots} knots: {check:?}");
    }
}

#[test]
fn auto_picks_one_of_the_algorithms_and_gives_its_bits() {
    use odesens_models::Robertson;
    use odesens_sensitivity::{SensitivityAlgorithm, gradient};
    let problem = DoublePendulum::standard_problem(1.0).unwrap();
    let options = SolverOptions::default().tol(1e-8);
    let objective = SquaredNormAt::new(1.0);
    let auto = gradient(&problem, &options, &objective, &SensitivityAlgorithm::Auto).unwrap();
    let fwd = gradient(
        &problem,
        &options,
        &objective,
        &SensitivityAlgorithm::Forward,
    )
    .unwrap();
    let keep_all = SensitivityAlgorithm::adjoint(Checkpointing::KeepAll);
    let adj = gradient(&problem, &options, &objective, &keep_all).unwrap();
    assert!(auto.to_vec() == fwd.to_vec() || auto.to_vec() == adj.to_vec());
    // Implicit methods: the cost model does not cover them; Auto takes the keep-all adjoint.
    let robertson = Robertson::problem(10.0).unwrap();
    let options = SolverOptions::default().method(Method::RadauIIA5).tol(1e-6);
    let objective = SquaredNormAt::new(10.0);
    let auto = gradient(
        &robertson,
        &options,
        &objective,
        &SensitivityAlgorithm::Auto,
    )
    .unwrap();
    let adj = gradient(&robertson, &options, &objective, &keep_all).unwrap();
    assert_eq!(auto.to_vec(), adj.to_vec());
    assert_eq!(SensitivityAlgorithm::default(), SensitivityAlgorithm::Auto);
}
