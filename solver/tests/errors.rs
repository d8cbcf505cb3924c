//! Every error variant is reachable from bad input, and none of them is a panic.

use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_models::{DoublePendulum, ExponentialDecay, LotkaVolterra};
use odesens_solver::*;

/// du/dt = u², whose solution 1/(1 − t) blows up at t = 1.
struct BlowUp;
impl OdeSystem for BlowUp {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, _p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = u[0] * u[0];
    }
}

/// A model that returns NaN in component 1 once t > 1 (a user's bug).
struct NanAfterOne;
impl OdeSystem for NanAfterOne {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, _p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = -u[0];
        du[1] = if t.re() > 1.0 {
            S::from(f64::NAN)
        } else {
            -u[1]
        };
    }
}

fn decay() -> OdeProblem<ExponentialDecay> {
    OdeProblem::new(ExponentialDecay, vec![1.0], vec![1.0], (0.0, 1.0)).unwrap()
}

fn solve_err<M: OdeSystem>(p: &OdeProblem<M>, o: SolverOptions) -> SolverError {
    solve(p, &o).expect_err("must fail")
}

#[test]
fn invalid_tolerances_name_the_valid_range() {
    let p = decay();
    for (options, name) in [
        (SolverOptions::default().rtol(-1e-3), "rtol"),
        (SolverOptions::default().rtol(1.5), "rtol"),
        (SolverOptions::default().rtol(f64::NAN), "rtol"),
        (SolverOptions::default().atol(f64::INFINITY), "atol[0]"),
        (SolverOptions::default().atol(-1.0), "atol[0]"),
        (SolverOptions::default().rtol(0.0).atol(0.0), "atol[0]"),
    ] {
        match solve_err(&p, options) {
            SolverError::InvalidTolerance {
                name: got, valid, ..
            } => {
                assert_eq!(got, name);
                assert!(!valid.is_empty());
            }
            e => panic!("expected InvalidTolerance, got {e:?}"),
        }
    }
    let msg = solve_err(&p, SolverOptions::default().rtol(2.0)).to_string();
    assert!(
        msg.contains("rtol") && msg.contains("0 <= rtol < 1"),
        "{msg}"
    );
}

#[test]
fn dimension_mismatches_say_expected_and_got() {
    assert_eq!(
        OdeProblem::new(
            DoublePendulum,
            vec![0.0; 3],
            DoublePendulum::bench_params(),
            (0.0, 1.0)
        )
        .unwrap_err(),
        SolverError::DimensionMismatch {
            what: "u0",
            expected: 4,
            got: 3
        }
    );
    assert_eq!(
        OdeProblem::new(DoublePendulum, vec![0.0; 4], vec![1.0; 4], (0.0, 1.0)).unwrap_err(),
        SolverError::DimensionMismatch {
            what: "p",
            expected: 5,
            got: 4
        }
    );
    let p = OdeProblem::new(
        LotkaVolterra,
        vec![1.0, 1.0],
        LotkaVolterra::classic_params(),
        (0.0, 1.0),
    )
    .unwrap();
    assert_eq!(
        solve_err(&p, SolverOptions::default().atol(vec![1e-6; 3])),
        SolverError::DimensionMismatch {
            what: "atol",
            expected: 2,
            got: 3
        }
    );
}

#[test]
fn non_finite_inputs_and_empty_spans() {
    assert!(matches!(
        OdeProblem::new(ExponentialDecay, vec![f64::NAN], vec![1.0], (0.0, 1.0)),
        Err(SolverError::NonFiniteInput { what: "u0", index: 0, value }) if value.is_nan()
    ));
    assert!(matches!(
        OdeProblem::new(ExponentialDecay, vec![1.0], vec![f64::INFINITY], (0.0, 1.0)),
        Err(SolverError::NonFiniteInput {
            what: "p",
            index: 0,
            ..
        })
    ));
    assert!(matches!(
        OdeProblem::new(ExponentialDecay, vec![1.0], vec![1.0], (1.0, 1.0)),
        Err(SolverError::InvalidTimeSpan { .. })
    ));
    assert!(matches!(
        OdeProblem::new(ExponentialDecay, vec![1.0], vec![1.0], (0.0, f64::NAN)),
        Err(SolverError::InvalidTimeSpan { .. })
    ));
}

#[test]
fn invalid_options_are_rejected_before_the_first_step() {
    let p = decay();
    for (options, name) in [
        (SolverOptions::default().h0(-0.1), "h0"),
        (SolverOptions::default().fixed_step(0.0), "fixed_step"),
        (SolverOptions::default().h_max(0.0), "h_max"),
        (SolverOptions::default().max_steps(0), "max_steps"),
        (
            SolverOptions::default().controller(PiController {
                safety: 2.0,
                ..Default::default()
            }),
            "controller.safety",
        ),
        (
            SolverOptions::default().controller(PiController {
                q_max: 0.5,
                ..Default::default()
            }),
            "controller.q_max",
        ),
    ] {
        match solve_err(&p, options) {
            SolverError::InvalidOption { name: got, .. } => assert_eq!(got, name),
            e => panic!("expected InvalidOption for {name}, got {e:?}"),
        }
    }
}

#[test]
fn times_outside_the_span_or_unsorted() {
    let p = decay();
    assert!(matches!(
        solve_err(&p, SolverOptions::default().save_at(vec![0.5, 1.5])),
        SolverError::TimeOutsideSpan { what: "save_at", t, .. } if t == 1.5
    ));
    assert!(matches!(
        solve_err(&p, SolverOptions::default().tstops(vec![-0.5])),
        SolverError::TimeOutsideSpan { what: "tstop", .. }
    ));
    assert!(matches!(
        solve_err(&p, SolverOptions::default().save_at(vec![0.5, 0.2])),
        SolverError::UnsortedTimes {
            what: "save_at",
            index: 1,
            ..
        }
    ));
    // Backward in time, save times must decrease.
    let back = OdeProblem::new(ExponentialDecay, vec![1.0], vec![1.0], (1.0, 0.0)).unwrap();
    assert!(matches!(
        solve_err(&back, SolverOptions::default().save_at(vec![0.2, 0.5])),
        SolverError::UnsortedTimes { .. }
    ));
    let sol = solve(&p, &SolverOptions::default().dense(true)).unwrap();
    assert!(matches!(
        sol.interpolate(1.2),
        Err(SolverError::TimeOutsideSpan {
            what: "interpolation",
            ..
        })
    ));
    let plain = solve(&p, &SolverOptions::default()).unwrap();
    assert_eq!(
        plain.interpolate(0.5).unwrap_err(),
        SolverError::NoDenseOutput
    );
}

#[test]
fn non_finite_rhs_reports_time_and_component() {
    let p = OdeProblem::new(NanAfterOne, vec![1.0, 1.0], Vec::<f64>::new(), (0.0, 2.0)).unwrap();
    for options in [
        SolverOptions::default(),
        SolverOptions::default().method(Method::Vern9),
        SolverOptions::default().fixed_step(0.1),
    ] {
        match solve_err(&p, options) {
            SolverError::NonFiniteRhs {
                t,
                component,
                value,
            } => {
                assert!(t > 1.0 && t <= 2.0, "t = {t}");
                assert_eq!(component, 1);
                assert!(value.is_nan());
            }
            e => panic!("expected NonFiniteRhs, got {e:?}"),
        }
    }
}

#[test]
fn blow_up_ends_with_step_size_too_small() {
    let p = OdeProblem::new(BlowUp, vec![1.0], Vec::<f64>::new(), (0.0, 2.0)).unwrap();
    let err = solve_err(&p, SolverOptions::default().max_steps(1_000_000));
    match err {
        SolverError::StepSizeTooSmall { t, h } => {
            assert!((t - 1.0).abs() < 1e-6, "t = {t}");
            assert!(h.abs() < 1e-10, "h = {h}");
        }
        e => panic!("expected StepSizeTooSmall, got {e:?}"),
    }
}

#[test]
fn max_steps_reports_where_it_stopped() {
    let p = DoublePendulum::standard_problem(10.0).unwrap();
    match solve_err(&p, SolverOptions::default().tol(1e-10).max_steps(50)) {
        SolverError::MaxStepsReached { t, max_steps } => {
            assert_eq!(max_steps, 50);
            assert!(t > 0.0 && t < 10.0);
        }
        e => panic!("expected MaxStepsReached, got {e:?}"),
    }
}

#[test]
fn stepping_past_the_end_is_an_error() {
    let p = decay();
    let options = SolverOptions::default();
    let mut integrator = Integrator::new(&p, &options).unwrap();
    integrator.run().unwrap();
    assert!(matches!(integrator.step(), Err(SolverError::AlreadyFinished { t }) if t == 1.0));
}

/// A system with no states (a user's empty model).
#[derive(Debug)]
struct Empty;
impl OdeSystem for Empty {
    fn n_states(&self) -> usize {
        0
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: Scalar>(&self, _t: S, _u: ArrayView1<S>, _p: ArrayView1<S>, _du: ArrayViewMut1<S>) {}
}

#[test]
fn a_system_with_zero_states_is_rejected_when_the_problem_is_built() {
    // Before: every solve and derivative panicked with an index out of bounds in its error handling.
    let err = OdeProblem::new(Empty, Vec::<f64>::new(), vec![1.0], (0.0, 1.0)).unwrap_err();
    assert_eq!(err, SolverError::EmptySystem);
    assert!(err.to_string().contains("zero states"), "{err}");
}

#[test]
fn calls_out_of_order_are_misuse_not_a_value_out_of_range() {
    let p = decay();
    let mut integrator = Integrator::new(&p, &SolverOptions::default()).unwrap();
    match integrator.decide(None) {
        Err(SolverError::Misuse { call, .. }) => assert!(call.contains("decide"), "{call}"),
        other => panic!("expected Misuse, got {other:?}"),
    }
    // A step's continuous extension exists only between its acceptance and the next attempt.
    let mut out = [0.0];
    match Stepper::interpolate(&mut integrator, 0.5, &mut out) {
        Err(SolverError::Misuse { call, .. }) => assert!(call.contains("interpolate"), "{call}"),
        other => panic!("expected Misuse, got {other:?}"),
    }
    integrator.propose().unwrap();
    assert!(matches!(
        integrator.interpolate(0.01, &mut out),
        Err(SolverError::Misuse { .. })
    ));
    let kvaerno = SolverOptions::default().method(Method::Kvaerno5);
    let mut implicit = ImplicitIntegrator::new(&p, &kvaerno).unwrap();
    let mut dense = implicit.new_dense_output();
    match implicit.push_dense(&mut dense) {
        Err(SolverError::Misuse { call, .. }) => assert!(call.contains("push_dense"), "{call}"),
        other => panic!("expected Misuse, got {other:?}"),
    }
    let (t, t_next) = {
        let step = implicit.step_accepted().unwrap();
        (step.t, step.t_next)
    };
    implicit.interpolate(t_next, &mut out).unwrap();
    assert_eq!(out[0], implicit.u()[0]);
    implicit.interpolate(0.5 * (t + t_next), &mut out).unwrap();
    assert!(out[0] < 1.0 && out[0] > implicit.u()[0]);
    // The automatic method cannot join dense outputs: the method says what it does not support.
    let auto = SolverOptions::default()
        .method(Method::AutoTsit5Radau5)
        .dense(true);
    assert!(matches!(
        solve_err(&p, auto),
        SolverError::UnsupportedMethod {
            method: Method::AutoTsit5Radau5,
            ..
        }
    ));
}
