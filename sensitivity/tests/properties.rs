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

const METHODS: [Method; 5] = [
    Method::Tsit5,
    Method::Dp5,
    Method::Vern7,
    Method::Kvaerno5,
    Method::RadauIIA5,
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
    // to e^{0.6}: stated bound 1000 × tol.
    prop_assert!(
        err <= 1e3 * c.tol,
        "discrete vs truth {err:e} at tol {:e}",
        c.tol
    );
    let continuous = g(
        &problem,
        &opts,
        &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
    )
    .to_vec();
    let err = rel_diff_max_norm(&continuous, &truth);
    // The continuous adjoint (its backward method is the forward one by default) reads u(t) from the
    // forward dense output. Worst error / tol over 600 cases: Tsit5 3.4, DP5 0.8, Vern7 0.6, Radau IIA5
    // 2.9; Kvaerno5 3.3e3, whatever the backward method: its dense output is the cubic Hermite
    // interpolant of the step ends (as in OrdinaryDiffEq and diffrax), of order 3 against its steps' 5,
    // and its steps are long. Stated bounds: 100 × tol, and 5,000 × tol after Kvaerno5.
    let bound = if c.method == Method::Kvaerno5 {
        5e3
    } else {
        1e2
    };
    prop_assert!(
        err <= bound * c.tol,
        "continuous vs truth {err:e} at tol {:e}",
        c.tol
    );
    Ok(())
}

proptest! {
    // A fixed seed: CI sees the same 48 cases every run (edit the seed or the count to explore further;
    // failures found so are replayed first from properties.proptest-regressions).
    #![proptest_config(ProptestConfig {
        cases: 48,
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
