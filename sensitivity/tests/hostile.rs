//! Hostile input at every public door (issue 18, item 2): generated bad values (NaN, ±∞, subnormals,
//! ±0, ±1e308, negative sizes, empty and mismatched arrays, unsorted and duplicate times, tolerances at
//! and beyond their limits, absurd budgets and step limits) through the constructors, options and
//! entry points of both crates, the event models and objectives included. Each call must return a
//! typed error or an answer whose numbers are finite: never a panic (caught and counted) and never a
//! hang (every case is bounded by the step and event limits). A model that panics inside its rhs
//! surfaces the panic to the caller, and the library stays usable on that thread afterwards.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ndarray::{Array2, ArrayView1, ArrayViewMut1};
use odesens_models::{BouncingBall, ExponentialDecay, ThresholdDosing};
use odesens_sensitivity::{
    Checkpointing, ComponentAt, ContinuousSettings, Directions, EventTime, EventTimeMisfit,
    ForwardSettings, IntegralOfSquare, LeastSquares, SensitivityAlgorithm, SquaredNormAt,
    check_gradient, forward_sensitivities, gradient, hessian_vector_product,
};
use odesens_solver::{Atol, Method, OdeProblem, OdeSystem, Scalar, SolverOptions, solve};

/// The generated bad (and a few good) scalar values.
const VALUES: [f64; 12] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    5e-324,
    0.0,
    -0.0,
    1e308,
    -1e308,
    -1.0,
    1e-300,
    0.5,
    2.0,
];

/// What a door returned: the numbers of its answer, or an error's message.
type Outcome = Result<Vec<f64>, String>;

/// Tallies of the doors tried.
#[derive(Default)]
struct Tally {
    tried: usize,
    errors: usize,
    answers: usize,
    failures: Vec<String>,
}

impl Tally {
    /// Runs `door` with the value `x`: a panic, or an answer with a non-finite number, is a failure.
    fn run(&mut self, name: &str, x: f64, door: impl FnOnce() -> Outcome) {
        self.tried += 1;
        match catch_unwind(AssertUnwindSafe(door)) {
            Err(_) => self.failures.push(format!("{name}({x:e}): panicked")),
            Ok(Err(_)) => self.errors += 1,
            Ok(Ok(values)) => {
                if values.iter().all(|v| v.is_finite()) {
                    self.answers += 1;
                } else {
                    self.failures
                        .push(format!("{name}({x:e}): non-finite answer {values:?}"));
                }
            }
        }
    }
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn decay(u0: f64, k: f64, span: (f64, f64)) -> Result<OdeProblem<ExponentialDecay>, String> {
    OdeProblem::new(ExponentialDecay, vec![u0], vec![k], span).map_err(err)
}

/// The end state of a solve.
fn solved<M: OdeSystem>(problem: &OdeProblem<M>, options: &SolverOptions) -> Outcome {
    let sol = solve(problem, options).map_err(err)?;
    Ok(sol.u_end.to_vec())
}

/// A gradient's value and entries.
fn grad_of(g: odesens_sensitivity::Gradient) -> Vec<f64> {
    let mut v = vec![g.value];
    v.extend(g.to_vec());
    v
}

/// Every solver door with the value x, for one method.
fn solver_doors(t: &mut Tally, method: Method, x: f64) {
    let base = SolverOptions::default().method(method).max_steps(20_000);
    let name = |door: &str| format!("{method} {door}");
    t.run(&name("u0"), x, || {
        solved(&decay(x, 0.5, (0.0, 1.0))?, &base)
    });
    t.run(&name("p"), x, || solved(&decay(1.0, x, (0.0, 1.0))?, &base));
    t.run(&name("t_end"), x, || {
        solved(&decay(1.0, 0.5, (0.0, x))?, &base)
    });
    t.run(&name("t0"), x, || {
        solved(&decay(1.0, 0.5, (x, 1.0))?, &base)
    });
    let p = decay(1.0, 0.5, (0.0, 1.0)).expect("valid");
    t.run(&name("rtol"), x, || solved(&p, &base.clone().rtol(x)));
    t.run(&name("atol"), x, || solved(&p, &base.clone().atol(x)));
    t.run(&name("atol per component"), x, || {
        solved(&p, &base.clone().atol(Atol::PerComponent(vec![x])))
    });
    t.run(&name("atol of the wrong length"), x, || {
        solved(&p, &base.clone().atol(Atol::PerComponent(vec![x, x])))
    });
    t.run(&name("h0"), x, || solved(&p, &base.clone().h0(x)));
    t.run(&name("h_max"), x, || solved(&p, &base.clone().h_max(x)));
    t.run(&name("fixed_step"), x, || {
        solved(&p, &base.clone().fixed_step(x))
    });
    t.run(&name("max_steps"), x, || {
        solved(&p, &base.clone().max_steps(x.clamp(0.0, 1e6) as usize))
    });
    t.run(&name("tstops"), x, || {
        solved(&p, &base.clone().tstops(vec![x]))
    });
    t.run(&name("tstops unsorted"), x, || {
        solved(&p, &base.clone().tstops(vec![0.7, x, 0.2]))
    });
    t.run(&name("save_at"), x, || {
        solved(&p, &base.clone().save_at(vec![x]))
    });
    t.run(&name("save_at duplicated"), x, || {
        solved(&p, &base.clone().save_at(vec![x, x]))
    });
    t.run(&name("error_norm_components"), x, || {
        solved(
            &p,
            &base
                .clone()
                .error_norm_components(x.abs().min(9.0) as usize),
        )
    });
    t.run(&name("newton_kappa"), x, || {
        let mut o = base.clone();
        o.implicit.newton_kappa = x;
        solved(&p, &o)
    });
    t.run(&name("lu_reuse"), x, || {
        let mut o = base.clone();
        o.implicit.lu_reuse = x;
        solved(&p, &o)
    });
    t.run(&name("jacobian_refresh_rate"), x, || {
        let mut o = base.clone();
        o.implicit.jacobian_refresh_rate = x;
        solved(&p, &o)
    });
    // Events: hostile parameters of the condition and the jump, and the event limits.
    t.run(&name("ball restitution"), x, || {
        let ball = OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, x], (0.0, 3.0))
            .map_err(err)?;
        solved(&ball, &base.clone().max_events(1000))
    });
    t.run(&name("ball gravity"), x, || {
        let ball =
            OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![x, 0.8], (0.0, 3.0)).map_err(err)?;
        solved(&ball, &base.clone().max_events(1000))
    });
    t.run(&name("dose"), x, || {
        let dosing = OdeProblem::new(ThresholdDosing, vec![10.0], vec![0.3, 2.0, x], (0.0, 12.0))
            .map_err(err)?;
        solved(&dosing, &base.clone().max_events(1000))
    });
    t.run(&name("event_samples"), x, || {
        let ball = OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, 0.8], (0.0, 3.0))
            .map_err(err)?;
        solved(
            &ball,
            &base.clone().event_samples(x.abs().min(1e4) as usize),
        )
    });
    t.run(&name("max_events"), x, || {
        let ball = OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, 0.8], (0.0, 3.0))
            .map_err(err)?;
        solved(&ball, &base.clone().max_events(x.clamp(0.0, 1e6) as usize))
    });
}

/// Every derivative door with the value x, for one method.
fn sensitivity_doors(t: &mut Tally, method: Method, x: f64) {
    let base = SolverOptions::default().method(method).max_steps(20_000);
    let name = |door: &str| format!("{method} {door}");
    let adjoint = SensitivityAlgorithm::adjoint(Checkpointing::KeepAll);
    let algorithms = [
        SensitivityAlgorithm::Forward,
        adjoint,
        SensitivityAlgorithm::interpolating(),
        SensitivityAlgorithm::Auto,
    ];
    let p = decay(1.0, 0.5, (0.0, 1.0)).expect("valid");
    for algorithm in &algorithms {
        let door = |d: &str| name(&format!("{} {d}", algorithm.name()));
        t.run(&door("u0"), x, || {
            let g = gradient(
                &decay(x, 0.5, (0.0, 1.0))?,
                &base,
                &SquaredNormAt::new(1.0),
                algorithm,
            );
            Ok(grad_of(g.map_err(err)?))
        });
        t.run(&door("p"), x, || {
            let g = gradient(
                &decay(1.0, x, (0.0, 1.0))?,
                &base,
                &SquaredNormAt::new(1.0),
                algorithm,
            );
            Ok(grad_of(g.map_err(err)?))
        });
        t.run(&door("observation time"), x, || {
            Ok(grad_of(
                gradient(&p, &base, &ComponentAt::new(0, x), algorithm).map_err(err)?,
            ))
        });
        t.run(&door("component"), x, || {
            let c = ComponentAt::new(x.abs().min(9.0) as usize, 1.0);
            Ok(grad_of(gradient(&p, &base, &c, algorithm).map_err(err)?))
        });
        t.run(&door("least-squares data"), x, || {
            let ls =
                LeastSquares::new(vec![0.5, 1.0], Array2::from_elem((2, 1), x)).map_err(err)?;
            Ok(grad_of(gradient(&p, &base, &ls, algorithm).map_err(err)?))
        });
        t.run(&door("least-squares times"), x, || {
            let ls = LeastSquares::new(vec![x, 0.5], Array2::zeros((2, 1))).map_err(err)?;
            Ok(grad_of(gradient(&p, &base, &ls, algorithm).map_err(err)?))
        });
        t.run(&door("integral"), x, || {
            let q = decay(x, 0.5, (0.0, 1.0))?;
            Ok(grad_of(
                gradient(&q, &base, &IntegralOfSquare::new(0), algorithm).map_err(err)?,
            ))
        });
        t.run(&door("rtol"), x, || {
            let o = base.clone().rtol(x);
            Ok(grad_of(
                gradient(&p, &o, &SquaredNormAt::new(1.0), algorithm).map_err(err)?,
            ))
        });
        t.run(&door("ball restitution"), x, || {
            let ball = OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, x], (0.0, 3.0))
                .map_err(err)?;
            let o = base.clone().max_events(1000);
            Ok(grad_of(
                gradient(&ball, &o, &SquaredNormAt::new(3.0), algorithm).map_err(err)?,
            ))
        });
        t.run(&door("bounce-time misfit"), x, || {
            let ball = OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, 0.8], (0.0, 3.0))
                .map_err(err)?;
            let misfit = EventTimeMisfit::new(0, vec![0.45, x]);
            Ok(grad_of(
                gradient(&ball, &base, &misfit, algorithm).map_err(err)?,
            ))
        });
        t.run(&door("event time index"), x, || {
            let ball = OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, 0.8], (0.0, 3.0))
                .map_err(err)?;
            let which = EventTime::new(x.abs().min(9.0) as usize, x.abs().min(50.0) as usize);
            Ok(grad_of(
                gradient(&ball, &base, &which, algorithm).map_err(err)?,
            ))
        });
        t.run(&door("dosing area"), x, || {
            let dosing =
                OdeProblem::new(ThresholdDosing, vec![10.0], vec![0.3, x, 5.0], (0.0, 12.0))
                    .map_err(err)?;
            let o = base.clone().max_events(1000);
            Ok(grad_of(
                gradient(&dosing, &o, &IntegralOfSquare::new(0), algorithm).map_err(err)?,
            ))
        });
    }
    let count = x.abs().min(1e6) as usize;
    for (door, algorithm) in [
        (
            "uniform every",
            SensitivityAlgorithm::adjoint(Checkpointing::Uniform { every: count }),
        ),
        (
            "binomial snapshots",
            SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: count }),
        ),
        (
            "memory budget",
            SensitivityAlgorithm::adjoint(Checkpointing::MemoryBudget { bytes: count }),
        ),
        (
            "continuous segment steps",
            SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
                segment_steps: Some(count),
                ..Default::default()
            }),
        ),
        (
            "continuous rtol",
            SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
                rtol: Some(x),
                ..Default::default()
            }),
        ),
        (
            "continuous atol",
            SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings {
                atol: Some(x),
                ..Default::default()
            }),
        ),
        (
            "backsolve rtol",
            SensitivityAlgorithm::BacksolveAdjoint(ContinuousSettings {
                rtol: Some(x),
                ..Default::default()
            }),
        ),
    ] {
        t.run(&name(door), x, || {
            Ok(grad_of(
                gradient(&p, &base, &SquaredNormAt::new(1.0), &algorithm).map_err(err)?,
            ))
        });
    }
    t.run(&name("forward save_at"), x, || {
        let s = forward_sensitivities(
            &p,
            &base,
            &Directions::All,
            &[x],
            ForwardSettings::default(),
        )
        .map_err(err)?;
        Ok(s.sensitivities.iter().copied().collect())
    });
    t.run(&name("custom directions"), x, || {
        let directions = Directions::Custom {
            du0: Array2::from_elem((1, 2), x),
            dp: Array2::from_elem((1, 2), 1.0),
        };
        let s = forward_sensitivities(&p, &base, &directions, &[1.0], ForwardSettings::default())
            .map_err(err)?;
        Ok(s.sensitivities.iter().copied().collect())
    });
    t.run(&name("mismatched directions"), x, || {
        let directions = Directions::Custom {
            du0: Array2::from_elem((1, 2), x),
            dp: Array2::from_elem((1, 3), 1.0),
        };
        let s = forward_sensitivities(&p, &base, &directions, &[1.0], ForwardSettings::default())
            .map_err(err)?;
        Ok(s.sensitivities.iter().copied().collect())
    });
    if !method.is_implicit() {
        t.run(&name("H·v direction"), x, || {
            let h = hessian_vector_product(&p, &base, &SquaredNormAt::new(1.0), &[x], &[1.0])
                .map_err(err)?;
            Ok(h.to_vec())
        });
        t.run(&name("H·v of the wrong length"), x, || {
            let h = hessian_vector_product(&p, &base, &SquaredNormAt::new(1.0), &[x, x], &[])
                .map_err(err)?;
            Ok(h.to_vec())
        });
    }
    t.run(&name("check_gradient step"), x, || {
        let objective = SquaredNormAt::new(1.0);
        let g = gradient(&p, &base, &objective, &SensitivityAlgorithm::Forward).map_err(err)?;
        let c = check_gradient(&p, &base, &objective, &g, Some(x)).map_err(err)?;
        Ok(vec![c.max_rel_error])
    });
}

#[test]
fn hostile_values_at_every_door_give_typed_errors_or_finite_answers() {
    let mut t = Tally::default();
    for method in [
        Method::Tsit5,
        Method::Vern9,
        Method::Kvaerno5,
        Method::RadauIIA5,
        Method::Bdf,
    ] {
        for x in VALUES {
            solver_doors(&mut t, method, x);
            sensitivity_doors(&mut t, method, x);
        }
    }
    println!(
        "hostile input: {} (door × value × method) cases, {} typed errors, {} finite answers, {} failures",
        t.tried,
        t.errors,
        t.answers,
        t.failures.len()
    );
    assert!(t.failures.is_empty(), "{:#?}", t.failures);
}

/// du/dt = −k u, whose rhs panics for k < 0 (a model bug the library must survive).
struct PanicsForNegativeK;

impl OdeSystem for PanicsForNegativeK {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        assert!(p[0].re() >= 0.0, "the model refuses k < 0");
        du[0] = -p[0] * u[0];
    }
}

#[test]
fn a_panicking_model_surfaces_and_leaves_the_library_usable() {
    let objective = SquaredNormAt::new(1.0);
    let options = SolverOptions::default().tol(1e-10);
    let good = OdeProblem::new(PanicsForNegativeK, vec![1.0], vec![0.5], (0.0, 1.0)).unwrap();
    let bad = OdeProblem::new(PanicsForNegativeK, vec![1.0], vec![-0.5], (0.0, 1.0)).unwrap();
    let algorithms = [
        SensitivityAlgorithm::Forward,
        SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        SensitivityAlgorithm::adjoint(Checkpointing::Binomial { snapshots: 2 }),
        SensitivityAlgorithm::interpolating(),
    ];
    // The reference: computed before any panic.
    let before: Vec<Vec<f64>> = algorithms
        .iter()
        .map(|a| gradient(&good, &options, &objective, a).unwrap().to_vec())
        .collect();
    for (algorithm, expected) in algorithms.iter().zip(&before) {
        // The panic reaches the caller (as documented for models that panic) ...
        let caught = catch_unwind(AssertUnwindSafe(|| {
            gradient(&bad, &options, &objective, algorithm)
        }));
        assert!(caught.is_err(), "{algorithm:?}: the panic must surface");
        // ... and the same thread computes the same bits afterwards (tapes and buffers reset).
        let after = gradient(&good, &options, &objective, algorithm)
            .unwrap()
            .to_vec();
        assert_eq!(&after, expected, "{algorithm:?}");
    }
    // H·v records nested tapes: the same after a panic inside it.
    let hv = |p: &OdeProblem<PanicsForNegativeK>| {
        hessian_vector_product(p, &options, &objective, &[1.0], &[0.0])
    };
    let reference = hv(&good).unwrap().to_vec();
    assert!(catch_unwind(AssertUnwindSafe(|| hv(&bad))).is_err());
    assert_eq!(hv(&good).unwrap().to_vec(), reference);
}
