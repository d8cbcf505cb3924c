//! Property tests (issue 18, item 1, first family): generated linear systems u' = A(p) u + b with
//! random stable and mildly unstable spectra, random methods, tolerances, objectives and checkpoint
//! policies. Properties:
//!
//! - forward sensitivities and the exact discrete adjoint give the same gradient (≤ 1e-10 relative:
//!   both are exact derivatives of the same discrete solution);
//! - every checkpoint policy gives the keep-all adjoint bit for bit;
//! - both are within a stated multiple of the tolerance of the true gradient (forward sensitivities
//!   with Vern9 at tolerance 1e-13, far tighter than any case);
//! - the interpolating continuous adjoint is within a stated multiple of the tolerance too.
//!
//! A second family differentiates first integrals of nonlinear flows (Kepler, Lotka–Volterra), whose
//! gradients are known exactly; a third, decay chains, against Bateman's closed form. The stiff
//! multistep methods BDF and NDF are drawn in every family.
//!
//! proptest shrinks a failing case and records it in `proptest-regressions/properties.txt`, which is
//! replayed first on every later run (commit it: it is the named regression case).

use ndarray::{Array2, ArrayView1, ArrayViewMut1};
use odesens_models::compare::rel_diff_max_norm;
use odesens_sensitivity::{
    Checkpointing, ContinuousSettings, Gradient, IntegralOfSquare, LeastSquares, Objective,
    SensitivityAlgorithm, SquaredNormAt, WeightedSumAt, gradient,
};
use odesens_solver::*;
use proptest::prelude::*;

/// u' = A(p) u + b with A(p) = A0 + Σ_k p_k e_{i_k} e_{j_k}ᵀ: each parameter adds to one entry of A.
#[derive(Debug, Clone)]
struct RandomLinear {
    n: usize,
    /// A0 row-major.
    a0: Vec<f64>,
    b: Vec<f64>,
    /// The entry (i_k, j_k) each parameter adds to.
    entries: Vec<(usize, usize)>,
}

impl OdeSystem for RandomLinear {
    fn n_states(&self) -> usize {
        self.n
    }
    fn n_params(&self) -> usize {
        self.entries.len()
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let n = self.n;
        for i in 0..n {
            let mut acc = S::from(self.b[i]);
            for j in 0..n {
                acc += u[j] * self.a0[i * n + j];
            }
            du[i] = acc;
        }
        for (k, &(i, j)) in self.entries.iter().enumerate() {
            du[i] += p[k] * u[j];
        }
    }
}

/// One generated case.
#[derive(Debug, Clone)]
struct Case {
    system: RandomLinear,
    u0: Vec<f64>,
    p: Vec<f64>,
    t_end: f64,
    method: Method,
    tol: f64,
    objective: usize,
}

const METHODS: [Method; 7] = [
    Method::Tsit5,
    Method::Dp5,
    Method::Vern7,
    Method::Kvaerno5,
    Method::RadauIIA5,
    Method::Bdf,
    Method::Ndf,
];

fn case() -> impl Strategy<Value = Case> {
    (2usize..=6, 1usize..=4).prop_flat_map(|(n, np)| {
        (
            prop::collection::vec(-1.0f64..1.0, n * n),
            // The diagonal shift: eigenvalues from about −3 (stable) to +0.3 (mildly unstable).
            -0.3f64..2.0,
            prop::collection::vec(-1.0f64..1.0, n),
            prop::collection::vec((0..n, 0..n), np),
            prop::collection::vec(-1.0f64..1.0, n),
            prop::collection::vec(-0.5f64..0.5, np),
            (
                1.0f64..2.0,
                0..METHODS.len(),
                prop::sample::select(vec![1e-6, 1e-8]),
                0..4usize,
            ),
        )
            .prop_map(
                move |(a, shift, b, entries, u0, p, (t_end, m, tol, objective))| {
                    let mut a0 = a;
                    for i in 0..n {
                        a0[i * n + i] -= shift;
                    }
                    Case {
                        system: RandomLinear { n, a0, b, entries },
                        u0,
                        p,
                        t_end,
                        method: METHODS[m],
                        tol,
                        objective,
                    }
                },
            )
    })
}

/// Cases per property: 48 (CI), or `ODESENS_CASES` (the large run, docs/testing.md).
fn cases() -> u32 {
    std::env::var("ODESENS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// err/tol ≤ bound, or (with `ODESENS_PROPERTY_STATS` set, to measure the bounds) a line
/// `STAT what method err/tol` on stdout instead of the check.
fn within(what: &str, method: Method, err: f64, tol: f64, bound: f64) -> Result<(), TestCaseError> {
    if std::env::var_os("ODESENS_PROPERTY_STATS").is_some() {
        println!("STAT {what} {method} {:.3e}", err / tol);
        return Ok(());
    }
    prop_assert!(
        err <= bound * tol,
        "{what}: {err:e} at tol {tol:e} ({method}, bound {bound:e} × tol)"
    );
    Ok(())
}

/// The gradient of the case's objective by an algorithm.
type GradientOf =
    Box<dyn Fn(&OdeProblem<RandomLinear>, &SolverOptions, &SensitivityAlgorithm) -> Gradient>;

/// The gradient of `o` by an algorithm, as a boxed closure.
fn boxed<O: Objective + 'static>(o: O) -> GradientOf {
    Box::new(move |p, opts, alg| gradient(p, opts, &o, alg).expect("a gradient"))
}

/// The case's objective (‖u(T)‖², wᵀu(T), ∫ u_0² dt, or a least-squares misfit at three times), as the
/// gradient by an algorithm.
fn objective(c: &Case) -> GradientOf {
    let n = c.system.n;
    let t = c.t_end;
    match c.objective {
        0 => boxed(SquaredNormAt::new(t)),
        1 => boxed(WeightedSumAt::new(
            (0..n).map(|i| 1.0 - 0.3 * i as f64).collect(),
            t,
        )),
        2 => boxed(IntegralOfSquare::new(0)),
        _ => {
            let times = vec![0.3 * t, 0.7 * t, t];
            let data = Array2::from_shape_fn((3, n), |(k, i)| 0.1 * (k + i) as f64);
            boxed(LeastSquares::new(times, data).expect("valid"))
        }
    }
}

fn check(c: &Case) -> Result<(), TestCaseError> {
    let problem = OdeProblem::new(c.system.clone(), c.u0.clone(), c.p.clone(), (0.0, c.t_end))
        .expect("a valid problem");
    let g = objective(c);
    let opts = SolverOptions::default()
        .method(c.method)
        .rtol(c.tol)
        .atol(c.tol)
        .max_steps(200_000);
    let forward = g(&problem, &opts, &SensitivityAlgorithm::Forward).to_vec();
    let keep_all = g(
        &problem,
        &opts,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .to_vec();
    let agreement = rel_diff_max_norm(&keep_all, &forward);
    prop_assert!(agreement <= 1e-10, "forward vs adjoint {agreement:e}");
    for policy in [
        Checkpointing::Binomial { snapshots: 2 },
        Checkpointing::Uniform { every: 3 },
        Checkpointing::MemoryBudget { bytes: 1 << 12 },
    ] {
        let other = g(&problem, &opts, &SensitivityAlgorithm::adjoint(policy)).to_vec();
        prop_assert_eq!(&other, &keep_all, "{:?}", policy);
    }
    let truth_opts = SolverOptions::default()
        .method(Method::Vern9)
        .rtol(1e-13)
        .atol(1e-13)
        .max_steps(200_000);
    let truth = g(&problem, &truth_opts, &SensitivityAlgorithm::Forward).to_vec();
    let err = rel_diff_max_norm(&keep_all, &truth);
    // The global error of a solution controlled locally at tol, propagated over t ≤ 2 with growth up
    // to e^{0.6}. Worst discrete error / tol over 10⁴ cases: Vern7 0.04, DP5 28, Tsit5 66, Radau IIA5
    // 132, Kvaerno5 1.5e3; BDF 198 and NDF 3.4e3 over 4,000 cases (~570 each; NDF's 99th percentile
    // 82). The NDF outlier is the case's, not the method's: BDF gives 3.4e3 on it too, Radau IIA5 130,
    // the ratio stays at 2.5e3–3.8e3 from tol 1e-7 to 1e-10 (the error is proportional to tol), and
    // u(T) itself is within 6 tolerances; the tangents are not in the error control. Stated bounds:
    // 1e3 × tol, 3e3 × tol for Kvaerno5, 1e4 × tol for NDF.
    let bound = match c.method {
        Method::Kvaerno5 => 3e3,
        Method::Ndf => 1e4,
        _ => 1e3,
    };
    within("linear discrete", c.method, err, c.tol, bound)?;
    let continuous = g(
        &problem,
        &opts,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
    )
    .to_vec();
    let err = rel_diff_max_norm(&continuous, &truth);
    // The continuous adjoint (its backward method is the forward one by default) reads u(t) from the
    // forward dense output. Worst error / tol over 10⁴ cases: Vern7 0.5, Tsit5 4.6, DP5 12, Radau IIA5
    // 114; Kvaerno5 1.7e3, whatever the backward method: its dense output is the cubic Hermite
    // interpolant of the step ends (as in OrdinaryDiffEq and diffrax), of order 3 against its steps' 5,
    // and its steps are long. BDF 839 and NDF 964 over 4,000 cases (the backward solve is the
    // multistep method too, of low order where it restarts). Stated bounds: 300 × tol, and 5,000 × tol
    // after Kvaerno5, BDF and NDF.
    let bound = match c.method {
        Method::Kvaerno5 | Method::Bdf | Method::Ndf => 5e3,
        _ => 3e2,
    };
    within("linear continuous", c.method, err, c.tol, bound)?;
    Ok(())
}

proptest! {
    // A fixed seed: CI sees the same 48 cases every run (edit the seed or the count to explore further;
    // failures found so are replayed first from properties.proptest-regressions).
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x0de5e45),
        ..ProptestConfig::default()
    })]

    #[test]
    fn gradients_of_random_linear_systems(c in case()) {
        check(&c)?;
    }
}

/// A minimized case of the continuous-adjoint property (found with 600 cases), Kvaerno5 as the backward
/// method after a Tsit5 solve: a stable 2 × 2 system, tol 1e-8. Kvaerno5's stage at c_2 ≈ 1.23 reaches
/// past segment starts, into the segment not yet recomputed; before the extra backward tstops of
/// `reach_stops` the parameter gradient was 4.4e-4 off (converging at order ~3), now 4.6e-7.
#[test]
fn kvaerno5_backward_stages_past_a_segment_start() {
    let c = Case {
        system: RandomLinear {
            n: 2,
            a0: vec![
                -1.832084411678993,
                0.9662042881083709,
                -0.89633918161923,
                -2.805272509857122,
            ],
            b: vec![-0.1628517650447623, 0.061976412928247814],
            entries: vec![(0, 1)],
        },
        u0: vec![-0.3068889467341803, -0.978546128385293],
        p: vec![-0.23192482191146144],
        t_end: 1.6377857256587858,
        method: Method::Kvaerno5,
        tol: 1e-8,
        objective: 0,
    };
    let problem = OdeProblem::new(c.system.clone(), c.u0.clone(), c.p.clone(), (0.0, c.t_end))
        .expect("valid");
    let g = objective(&c);
    let truth_opts = SolverOptions::default().method(Method::Vern9).tol(1e-13);
    let truth = g(&problem, &truth_opts, &SensitivityAlgorithm::Forward).to_vec();
    let opts = SolverOptions::default().method(Method::Tsit5).tol(1e-12);
    let kvaerno_backward = SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
        method: Some(Method::Kvaerno5),
        rtol: Some(c.tol),
        atol: Some(c.tol),
        ..Default::default()
    });
    let err = rel_diff_max_norm(&g(&problem, &opts, &kvaerno_backward).to_vec(), &truth);
    println!("Kvaerno5 backward at tol 1e-8: {err:.1e}");
    assert!(err <= 1e2 * c.tol, "{err:e}");
}

/// The second family (nonlinear, exact answers from conserved quantities): for a first integral I of
/// the flow, I(u(T), p) = I(u0, p) for every u0 and p, so the gradient of G = I(u(T), p) is
/// ∇_{u0}G = ∇_u I(u0, p) and ∇_pG = ∂_p I(u0, p), known exactly whatever the integrator. Kepler's
/// energy and angular momentum (random bound orbits), and the Lotka–Volterra invariant (random rates
/// and initial populations).
mod conserved {
    use super::*;
    use odesens_models::{Kepler, LotkaVolterra};

    /// G = I(u(T), p) for a first integral I.
    struct Invariant<F> {
        times: [f64; 1],
        value: F,
    }

    /// The first integrals, generic over the scalar.
    trait FirstIntegral: Sync + Send {
        fn eval<S: Scalar>(&self, u: ArrayView1<S>, p: ArrayView1<S>) -> S;
    }

    impl<F: FirstIntegral> Objective for Invariant<F> {
        fn observation_times(&self) -> &[f64] {
            &self.times
        }
        fn observation<S: Scalar>(
            &self,
            _k: usize,
            _t: f64,
            u: ArrayView1<S>,
            p: ArrayView1<S>,
        ) -> S {
            self.value.eval(u, p)
        }
    }

    /// Kepler's energy ½|v|² − 1/|q|.
    struct Energy;
    impl FirstIntegral for Energy {
        fn eval<S: Scalar>(&self, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
            (u[2] * u[2] + u[3] * u[3]) * 0.5 - (u[0] * u[0] + u[1] * u[1]).sqrt().recip()
        }
    }

    /// Kepler's angular momentum q1 v2 − q2 v1.
    struct Momentum;
    impl FirstIntegral for Momentum {
        fn eval<S: Scalar>(&self, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
            u[0] * u[3] - u[1] * u[2]
        }
    }

    /// Lotka–Volterra's V = δx − γ ln x + βy − α ln y.
    struct PredatorPrey;
    impl FirstIntegral for PredatorPrey {
        fn eval<S: Scalar>(&self, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
            p[2] * u[0] - p[3] * u[0].ln() + p[1] * u[1] - p[0] * u[1].ln()
        }
    }

    /// One generated case: the system, its start, the exact gradient (parameters, then u0).
    #[derive(Debug, Clone)]
    pub(super) struct NonlinearCase {
        kepler: bool,
        /// Kepler: energy (0) or angular momentum (1).
        which: usize,
        u0: Vec<f64>,
        p: Vec<f64>,
        t_end: f64,
        method: Method,
        tol: f64,
    }

    const NONLINEAR_METHODS: [Method; 9] = [
        Method::Tsit5,
        Method::Dp5,
        Method::Vern7,
        Method::Vern9,
        Method::Bs3,
        Method::Kvaerno5,
        Method::RadauIIA5,
        Method::Bdf,
        Method::Ndf,
    ];

    impl NonlinearCase {
        /// A Lotka–Volterra case (the invariant as objective).
        pub(crate) fn lotka_volterra(
            u0: [f64; 2],
            p: [f64; 4],
            t_end: f64,
            method: Method,
            tol: f64,
        ) -> Self {
            Self {
                kepler: false,
                which: 0,
                u0: u0.to_vec(),
                p: p.to_vec(),
                t_end,
                method,
                tol,
            }
        }
    }

    pub(super) fn nonlinear_case() -> impl Strategy<Value = NonlinearCase> {
        (
            any::<bool>(),
            0..2usize,
            // Kepler: radius, direction, speed as a fraction of escape speed, flight angle.
            (0.6f64..1.4, 0.0f64..6.2, 0.5f64..0.85, -0.6f64..0.6),
            // Lotka–Volterra: populations and rates around the classic ones.
            (
                0.5f64..2.0,
                0.5f64..2.0,
                prop::collection::vec(0.7f64..1.3, 4),
            ),
            1.0f64..6.0,
            0..NONLINEAR_METHODS.len(),
            prop::sample::select(vec![1e-6, 1e-8]),
        )
            .prop_map(
                |(kepler, which, (r, phi, speed, angle), (x, y, scale), t_end, m, tol)| {
                    let (u0, p) = if kepler {
                        let v = speed * (2.0 / r).sqrt();
                        let (s, c) = phi.sin_cos();
                        let (vs, vc) = (phi + std::f64::consts::FRAC_PI_2 + angle).sin_cos();
                        (vec![r * c, r * s, v * vc, v * vs], vec![])
                    } else {
                        let p = LotkaVolterra::classic_params()
                            .iter()
                            .zip(&scale)
                            .map(|(a, b)| a * b)
                            .collect();
                        (vec![x, y], p)
                    };
                    NonlinearCase {
                        kepler,
                        which,
                        u0,
                        p,
                        t_end,
                        method: NONLINEAR_METHODS[m],
                        tol,
                    }
                },
            )
    }

    /// The exact gradient (parameters, then u0) of I(u(T), p) = I(u0, p).
    fn exact(c: &NonlinearCase) -> Vec<f64> {
        let u = &c.u0;
        if c.kepler {
            if c.which == 0 {
                let r3 = (u[0] * u[0] + u[1] * u[1]).powf(1.5);
                vec![u[0] / r3, u[1] / r3, u[2], u[3]]
            } else {
                vec![u[3], -u[2], -u[1], u[0]]
            }
        } else {
            let p = &c.p;
            let (x, y) = (u[0], u[1]);
            // ∂V/∂(α, β, δ, γ), then ∂V/∂(x, y).
            vec![-y.ln(), y, x, -x.ln(), p[2] - p[3] / x, p[1] - p[0] / y]
        }
    }

    /// The gradient of the case's objective by `algorithm`, as one vector.
    fn gradient_by(
        c: &NonlinearCase,
        opts: &SolverOptions,
        algorithm: &SensitivityAlgorithm,
    ) -> Vec<f64> {
        fn run<M: OdeSystem, F: FirstIntegral>(
            model: M,
            c: &NonlinearCase,
            f: F,
            opts: &SolverOptions,
            algorithm: &SensitivityAlgorithm,
        ) -> Vec<f64> {
            let problem = OdeProblem::new(model, c.u0.clone(), c.p.clone(), (0.0, c.t_end))
                .expect("a valid problem");
            let objective = Invariant {
                times: [c.t_end],
                value: f,
            };
            gradient(&problem, opts, &objective, algorithm)
                .expect("a gradient")
                .to_vec()
        }
        match (c.kepler, c.which) {
            (true, 0) => run(Kepler, c, Energy, opts, algorithm),
            (true, _) => run(Kepler, c, Momentum, opts, algorithm),
            (false, _) => run(LotkaVolterra, c, PredatorPrey, opts, algorithm),
        }
    }

    pub(super) fn check_nonlinear(c: &NonlinearCase) -> Result<(), TestCaseError> {
        let opts = SolverOptions::default()
            .method(c.method)
            .rtol(c.tol)
            .atol(c.tol)
            .max_steps(200_000);
        let forward = gradient_by(c, &opts, &SensitivityAlgorithm::Forward);
        let keep_all = gradient_by(
            c,
            &opts,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        );
        let agreement = rel_diff_max_norm(&keep_all, &forward);
        // Both differentiate the same steps. With the implicit methods' stage systems iterated to a
        // relative change of 1e-13 one case in ~2,000 (kvaerno5_lotka_volterra_forward_matches_adjoint)
        // differed by 4.4e-10; small dense problems now factor their exact stage matrices (1.5e-11).
        let agreement_bound = 1e-10;
        prop_assert!(
            agreement <= agreement_bound,
            "forward vs adjoint {agreement:e} ({})",
            c.method
        );
        let binomial = gradient_by(
            c,
            &opts,
            &SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: 3 }),
        );
        prop_assert_eq!(&binomial, &keep_all);
        let exact = exact(c);
        let err = rel_diff_max_norm(&keep_all, &exact);
        // The global error over up to six time units of eccentric orbits (speeds up to 0.85 of the
        // escape speed) or predator–prey cycles, amplified in ∇I where a population is small: worst
        // discrete error / tol over 10⁴ cases Vern9 114, Vern7 150, BS3 528, Tsit5 2.6e3, Radau IIA5
        // 4.8e3, DP5 8.9e3. Kvaerno5's embedded estimate falls ~10× below its true local error at the
        // step sizes of tol 1e-6 (the error is O(h⁶) with a large constant, the estimate O(h⁵)), so its
        // global error is 10–50 × tol on u and up to 1.6e5 × tol in this gradient
        // (kvaerno5_lotka_volterra_forward_matches_adjoint). BDF 2.1e4 and NDF 4.3e4 over 4,000 cases
        // (~430 each): order ≤ 5 with small steps, the error accumulating over many of them. Stated
        // bounds: 1e4 × tol, 1.5e5 × tol for BDF and NDF, 3e5 × tol for Kvaerno5.
        let bound = match c.method {
            Method::Kvaerno5 => 3e5,
            Method::Bdf | Method::Ndf => 1.5e5,
            _ => 1e4,
        };
        within("nonlinear discrete", c.method, err, c.tol, bound)?;
        let continuous = gradient_by(
            c,
            &opts,
            &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
        );
        let err = rel_diff_max_norm(&continuous, &exact);
        // Worst continuous error / tol over 10⁴ cases: Vern7 14, Vern9 35, Tsit5 210, BS3 590, DP5
        // 1.4e3, Radau IIA5 4.8e3; Kvaerno5 1.6e5 (its estimate, above, and its cubic Hermite dense
        // output, as in the linear family); BDF 3.7e4, NDF 2.1e4 over 4,000 cases. Stated bounds:
        // 1e4 × tol, 1.5e5 × tol for BDF and NDF, and 3e5 × tol for Kvaerno5.
        let bound = match c.method {
            Method::Kvaerno5 => 3e5,
            Method::Bdf | Method::Ndf => 1.5e5,
            _ => 1e4,
        };
        within("nonlinear continuous", c.method, err, c.tol, bound)?;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x1de5e45),
        ..ProptestConfig::default()
    })]

    #[test]
    fn gradients_of_first_integrals_are_exact(c in conserved::nonlinear_case()) {
        conserved::check_nonlinear(&c)?;
    }
}

/// A minimized case of the nonlinear family (10⁴-case run): Kvaerno5 on Lotka–Volterra at tol 1e-6,
/// where forward and adjoint must agree to round-off.
#[test]
fn kvaerno5_lotka_volterra_forward_matches_adjoint() {
    let c = conserved::NonlinearCase::lotka_volterra(
        [1.9731904541825485, 0.5],
        [1.0499999999999998, 0.7, 3.767092276003467, 0.7],
        5.27559417697113,
        Method::Kvaerno5,
        1e-6,
    );
    conserved::check_nonlinear(&c).unwrap();
}

/// The third family (closed forms): radioactive decay chains A_1 → A_2 → … → A_n with random distinct
/// rates, u_1' = −λ_1 u_1, u_m' = λ_{m−1} u_{m−1} − λ_m u_m, parameters p = λ (λ_n = 0 makes the last
/// member stable, and then Σ u_m is conserved). Bateman's solution (H. Bateman, Proc. Cambridge Philos.
/// Soc. 15, 1910), superposed over the members present at t = 0,
///
/// u_m(t) = Σ_{k≤m} u0_k (Π_{i=k}^{m−1} λ_i) Σ_{i=k}^{m} e^{−λ_i t} / Π_{j=k..m, j≠i} (λ_j − λ_i),
///
/// is evaluated in `Dual64`, once per input, so the exact gradient of G = wᵀu(T) comes from the closed
/// form itself, independently of every integrator. Checked: forward vs discrete adjoint, binomial vs
/// keep-all, and the discrete and continuous adjoints against the closed form. The stiff methods (BDF, NDF, TR-BDF2) join the
/// explicit and implicit Runge–Kutta methods here.
mod decay {
    use super::*;
    use num_dual::{Dual64, DualNum};

    /// The chain of `n` members.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct DecayChain {
        pub(super) n: usize,
    }

    impl OdeSystem for DecayChain {
        fn n_states(&self) -> usize {
            self.n
        }
        fn n_params(&self) -> usize {
            self.n
        }
        fn rhs<S: Scalar>(
            &self,
            _t: S,
            u: ArrayView1<S>,
            p: ArrayView1<S>,
            mut du: ArrayViewMut1<S>,
        ) {
            for m in 0..self.n {
                du[m] = -(p[m] * u[m]);
                if m > 0 {
                    du[m] += p[m - 1] * u[m - 1];
                }
            }
        }
    }

    /// Bateman's u(t) for rates `lam` and start `u0`, in dual numbers.
    fn bateman(lam: &[Dual64], u0: &[Dual64], t: f64) -> Vec<Dual64> {
        let n = lam.len();
        (0..n)
            .map(|m| {
                let mut total = Dual64::from(0.0);
                for k in 0..=m {
                    let mut product = Dual64::from(1.0);
                    for &l in &lam[k..m] {
                        product *= l;
                    }
                    let mut sum = Dual64::from(0.0);
                    for i in k..=m {
                        let mut denominator = Dual64::from(1.0);
                        for j in (k..=m).filter(|&j| j != i) {
                            denominator *= lam[j] - lam[i];
                        }
                        sum += (-lam[i] * t).exp() / denominator;
                    }
                    total += u0[k] * product * sum;
                }
                total
            })
            .collect()
    }

    /// One generated chain.
    #[derive(Debug, Clone)]
    pub(super) struct ChainCase {
        pub(super) rates: Vec<f64>,
        pub(super) u0: Vec<f64>,
        pub(super) weights: Vec<f64>,
        pub(super) t_end: f64,
        pub(super) method: Method,
        pub(super) tol: f64,
    }

    const CHAIN_METHODS: [Method; 9] = [
        Method::Tsit5,
        Method::Dp5,
        Method::Vern9,
        Method::Bs3,
        Method::Kvaerno5,
        Method::RadauIIA5,
        Method::TrBdf2,
        Method::Bdf,
        Method::Ndf,
    ];

    pub(super) fn chain_case() -> impl Strategy<Value = ChainCase> {
        (2..7usize)
            .prop_flat_map(|n| {
                (
                    // Rates at least 0.1 apart (Bateman divides by their differences): the m-th in
                    // [0.1 + 0.6m, 0.6 + 0.6m), shuffled; the last one 0 (a stable end) half the time.
                    prop::collection::vec(0.1f64..0.6, n),
                    Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                    any::<bool>(),
                    prop::collection::vec(0.0f64..1.0, n),
                    prop::collection::vec(-1.0f64..1.0, n),
                    0.5f64..4.0,
                    0..CHAIN_METHODS.len(),
                    prop::sample::select(vec![1e-6, 1e-8]),
                )
            })
            .prop_map(|(offsets, order, stable, u0, weights, t_end, m, tol)| {
                let n = offsets.len();
                let mut rates: Vec<f64> = order
                    .iter()
                    .zip(&offsets)
                    .map(|(&slot, o)| o + 0.6 * slot as f64)
                    .collect();
                if stable {
                    rates[n - 1] = 0.0;
                }
                ChainCase {
                    rates,
                    u0,
                    weights,
                    t_end,
                    method: CHAIN_METHODS[m],
                    tol,
                }
            })
    }

    /// The exact gradient of G = wᵀu(T) (rates, then u0) from Bateman's solution in `Dual64`.
    pub(super) fn exact(c: &ChainCase) -> Vec<f64> {
        let n = c.rates.len();
        (0..2 * n)
            .map(|seed| {
                let lift = |x: &[f64], offset: usize| -> Vec<Dual64> {
                    x.iter()
                        .enumerate()
                        .map(|(i, &v)| Dual64::new(v, if i + offset == seed { 1.0 } else { 0.0 }))
                        .collect()
                };
                let u = bateman(&lift(&c.rates, 0), &lift(&c.u0, n), c.t_end);
                u.iter().zip(&c.weights).map(|(x, w)| x.eps * w).sum()
            })
            .collect()
    }

    pub(super) fn check_chain(c: &ChainCase) -> Result<(), TestCaseError> {
        let n = c.rates.len();
        let problem = OdeProblem::new(
            DecayChain { n },
            c.u0.clone(),
            c.rates.clone(),
            (0.0, c.t_end),
        )
        .expect("a valid problem");
        let objective = WeightedSumAt::new(c.weights.clone(), c.t_end);
        let opts = SolverOptions::default()
            .method(c.method)
            .rtol(c.tol)
            .atol(c.tol)
            .max_steps(200_000);
        let by = |algorithm: &SensitivityAlgorithm| {
            gradient(&problem, &opts, &objective, algorithm)
                .expect("a gradient")
                .to_vec()
        };
        let forward = by(&SensitivityAlgorithm::Forward);
        let keep_all = by(&SensitivityAlgorithm::adjoint(Checkpointing::KeepAll));
        let agreement = rel_diff_max_norm(&keep_all, &forward);
        prop_assert!(
            agreement <= 1e-10,
            "forward vs adjoint {agreement:e} ({})",
            c.method
        );
        let binomial = by(&SensitivityAlgorithm::adjoint(Checkpointing::Binomial {
            snapshots: 2,
        }));
        prop_assert_eq!(&binomial, &keep_all);
        let exact = exact(c);
        let err = rel_diff_max_norm(&keep_all, &exact);
        // The global error over t ≤ 4. Worst error / tol over 4,000 cases (~450 each): Vern9 0.04,
        // Tsit5 2.3, DP5 6.1, Radau IIA5 16, BS3 151, BDF 380, Kvaerno5 856, NDF 1.2e3, TR-BDF2
        // 2.5e3. Stated bounds: 1e3 × tol, 1e4 × tol for BDF, NDF, Kvaerno5 and TR-BDF2.
        let bound = match c.method {
            Method::Bdf | Method::Ndf | Method::Kvaerno5 | Method::TrBdf2 => 1e4,
            _ => 1e3,
        };
        within("chain discrete", c.method, err, c.tol, bound)?;
        let continuous = by(&SensitivityAlgorithm::InterpolatingAdjoint(
            ContinuousSettings::default(),
        ));
        let err = rel_diff_max_norm(&continuous, &exact);
        // The interpolating continuous adjoint (backward method = forward method). Worst error / tol
        // over 4,000 cases: Vern9 0.007, Tsit5 1.1, DP5 1.4, BS3 16, Radau IIA5 25, NDF 31, BDF 38,
        // Kvaerno5 75, TR-BDF2 1.5e3. Stated bounds: 1e3 × tol, 1e4 × tol for TR-BDF2.
        let bound = if c.method == Method::TrBdf2 { 1e4 } else { 1e3 };
        within("chain continuous", c.method, err, c.tol, bound)?;
        Ok(())
    }
}

/// Bateman's closed form checked on its own: with a stable end the chain conserves Σ u_m (so the
/// closed form's derivatives are known), and on a chain without one the closed form's gradient agrees
/// with forward sensitivities of a Vern9 solve at 1e-12.
#[test]
fn bateman_closed_form_is_consistent() {
    let c = decay::ChainCase {
        rates: vec![1.3, 0.4, 2.2, 0.0],
        u0: vec![0.7, 0.1, 0.0, 0.2],
        weights: vec![1.0, 1.0, 1.0, 1.0],
        t_end: 2.5,
        method: Method::Vern9,
        tol: 1e-12,
    };
    // With λ_4 = 0, Σ u(T) = Σ u0 whatever λ_1 … λ_3: ∂/∂λ_{1..3} = 0 and ∂/∂u0 = 1. λ_4 itself lets mass
    // leave the chain: ∂/∂λ_4 = −∫₀ᵀ u_4 dt < 0.
    let g = decay::exact(&c);
    for (i, x) in g.iter().enumerate() {
        if i == 3 {
            assert!(*x < -0.1, "∂/∂λ_4 = {x}");
            continue;
        }
        let want = if i < 3 { 0.0 } else { 1.0 };
        assert!((x - want).abs() < 1e-13, "component {i}: {x}");
    }
    // And the integrator agrees with the closed form (Vern9 at 1e-12) on a chain without a stable end.
    let c = decay::ChainCase {
        rates: vec![1.3, 0.4, 2.2, 0.9],
        weights: vec![0.5, -1.0, 0.3, 2.0],
        ..c
    };
    let problem = OdeProblem::new(
        decay::DecayChain { n: 4 },
        c.u0.clone(),
        c.rates.clone(),
        (0.0, c.t_end),
    )
    .unwrap();
    let opts = SolverOptions::default().method(Method::Vern9).tol(1e-12);
    let numeric = gradient(
        &problem,
        &opts,
        &WeightedSumAt::new(c.weights.clone(), c.t_end),
        &SensitivityAlgorithm::Forward,
    )
    .unwrap()
    .to_vec();
    let err = rel_diff_max_norm(&numeric, &decay::exact(&c));
    assert!(err < 1e-10, "{err:e}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xba7e3a),
        ..ProptestConfig::default()
    })]

    #[test]
    fn gradients_of_decay_chains_match_bateman(c in decay::chain_case()) {
        decay::check_chain(&c)?;
    }
}
