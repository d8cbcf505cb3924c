//! Events: location on the step's interpolant, jumps, stops, time events, several roots in one step,
//! simultaneous events, and bad input (NaN conditions and jumps, Zeno accumulation, limits).

use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_models::{BouncingBall, ScheduledDoses, ThresholdDosing};
use odesens_solver::{
    Direction, EventAction, EventSpec, Method, OdeProblem, OdeSystem, Scalar, SolverError,
    SolverOptions, solve,
};

const ALL: [Method; 8] = [
    Method::Tsit5,
    Method::Dp5,
    Method::Bs3,
    Method::Vern7,
    Method::Vern9,
    Method::TrBdf2,
    Method::Kvaerno5,
    Method::RadauIIA5,
];

fn ulps(a: f64, b: f64) -> f64 {
    (a - b).abs() / (f64::EPSILON * a.abs().max(b.abs()))
}

/// The ball's flight is a quadratic, which every method and interpolant here reproduces exactly, so
/// the bounce times and the state after several bounces match the closed form to round-off.
#[test]
fn bouncing_ball_matches_the_closed_form_for_every_method() {
    let (h0, g, e) = (1.0, 9.81, 0.8);
    let t_end = 3.0;
    for method in ALL {
        let problem =
            OdeProblem::new(BouncingBall, vec![h0, 0.0], vec![g, e], (0.0, t_end)).unwrap();
        let sol = solve(
            &problem,
            &SolverOptions::default().method(method).tol(1e-10),
        )
        .unwrap();
        let expected: Vec<f64> = (1..)
            .map(|k| BouncingBall::bounce_time(h0, g, e, k))
            .take_while(|&t| t < t_end)
            .collect();
        assert_eq!(sol.events.len(), expected.len(), "{method}: bounces");
        for (k, (hit, &t)) in sol.events.iter().zip(&expected).enumerate() {
            let rel = (hit.t - t).abs() / t;
            assert!(
                rel < 1e-12,
                "{method}: bounce {} at {} vs {t}: {rel:e}",
                k + 1,
                hit.t
            );
            assert_eq!(hit.events, vec![0]);
            assert!(hit.u_before[0].abs() < 1e-12 && hit.u_after[1] > 0.0);
            assert_eq!(hit.u_after[1], -e * hit.u_before[1]);
        }
        let exact = BouncingBall::exact(h0, g, e, t_end);
        // The height relative to itself, the speed relative to the first impact speed.
        let w1 = g * BouncingBall::bounce_time(h0, g, e, 1);
        for (i, scale) in [(0, exact[0].abs()), (1, w1)] {
            let err = (sol.u_end[i] - exact[i]).abs() / scale;
            assert!(
                err < 1e-10,
                "{method}: u(T)[{i}] = {} vs {}: {err:e}",
                sol.u_end[i],
                exact[i]
            );
        }
    }
}

#[test]
fn threshold_dosing_fires_at_the_closed_form_times() {
    let (c0, k, c_min, dose) = (10.0, 0.3, 2.0, 5.0);
    for method in [
        Method::Tsit5,
        Method::Vern9,
        Method::Kvaerno5,
        Method::RadauIIA5,
    ] {
        let problem =
            OdeProblem::new(ThresholdDosing, vec![c0], vec![k, c_min, dose], (0.0, 24.0)).unwrap();
        let sol = solve(
            &problem,
            &SolverOptions::default().method(method).tol(1e-11),
        )
        .unwrap();
        assert!(
            sol.events.len() >= 5,
            "{method}: {} doses",
            sol.events.len()
        );
        for (j, hit) in sol.events.iter().enumerate() {
            let t = ThresholdDosing::dose_time(c0, k, c_min, dose, j + 1);
            assert!(
                (hit.t - t).abs() < 1e-8 * t,
                "{method}: dose {} at {} vs {t}",
                j + 1,
                hit.t
            );
            assert!((hit.u_after[0] - (c_min + dose)).abs() < 1e-8);
        }
    }
}

/// u' = 0 lets the solver's steps grow tenfold each, the last one spanning (0.111…, 1]; a condition
/// with two roots inside it is found twice by sampling the step (and not at all by end-point tests
/// alone).
struct TwoRoots;

impl OdeSystem for TwoRoots {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(
        &self,
        _t: S,
        _u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut du: ArrayViewMut1<S>,
    ) {
        du[0] = S::zero();
    }
    fn n_events(&self) -> usize {
        1
    }
    fn event_spec(&self, _k: usize) -> EventSpec {
        EventSpec::crossing(Direction::Either, EventAction::Jump)
    }
    fn event_condition<S: Scalar>(
        &self,
        _k: usize,
        t: S,
        _u: ArrayView1<S>,
        _p: ArrayView1<S>,
    ) -> S {
        (t - 0.3) * (t - 0.6)
    }
    fn event_jump<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut u_new: ArrayViewMut1<S>,
    ) {
        u_new[0] = u[0] + S::one();
    }
}

#[test]
fn two_roots_in_one_step_are_both_found() {
    let problem = OdeProblem::new(TwoRoots, vec![0.0], vec![], (0.0, 1.0)).unwrap();
    for method in ALL {
        let sol = solve(&problem, &SolverOptions::default().method(method)).unwrap();
        let times: Vec<f64> = sol.events.iter().map(|h| h.t).collect();
        assert_eq!(times.len(), 2, "{method}: {times:?}");
        assert!(
            ulps(times[0], 0.3) <= 4.0 && ulps(times[1], 0.6) <= 4.0,
            "{method}: {times:?}"
        );
        assert_eq!(sol.u_end[0], 2.0);
    }
    // With the end points only, both roots inside the last step (0.111…, 1] go unseen: the
    // documented limit of sign tests.
    let sol = solve(&problem, &SolverOptions::default().event_samples(0)).unwrap();
    assert!(sol.events.is_empty());
}

/// u = [sin t], events on u by direction, a stop, and two identical conditions (simultaneous).
struct Sine {
    direction: Direction,
    stop_at: Option<f64>,
}

impl OdeSystem for Sine {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(&self, t: S, _u: ArrayView1<S>, _p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = t.cos();
        du[1] = S::zero();
    }
    fn n_events(&self) -> usize {
        3
    }
    fn event_spec(&self, k: usize) -> EventSpec {
        match k {
            0 | 1 => EventSpec::crossing(self.direction, EventAction::Jump),
            _ => match self.stop_at {
                Some(_) => EventSpec::crossing(Direction::Rising, EventAction::Stop),
                None => EventSpec::crossing(Direction::Rising, EventAction::Stop).disarmed(),
            },
        }
    }
    fn event_condition<S: Scalar>(&self, k: usize, t: S, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        match k {
            0 => u[0],
            1 => u[0] * 2.0,
            _ => t - self.stop_at.unwrap_or(0.0),
        }
    }
    fn event_jump<S: Scalar>(
        &self,
        k: usize,
        _t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut u_new: ArrayViewMut1<S>,
    ) {
        // Counts firings: event 0 adds 1, event 1 adds 10.
        u_new[1] = u[1] + if k == 0 { S::one() } else { S::from(10.0) };
    }
}

#[test]
fn directions_stops_and_simultaneous_events() {
    let pi = std::f64::consts::PI;
    for method in [
        Method::Tsit5,
        Method::Vern7,
        Method::Kvaerno5,
        Method::RadauIIA5,
    ] {
        let options = SolverOptions::default().method(method).tol(1e-10);
        let run = |direction, stop_at| {
            let model = Sine { direction, stop_at };
            let problem = OdeProblem::new(model, vec![0.0, 0.0], vec![], (0.0, 7.0)).unwrap();
            solve(&problem, &options).unwrap()
        };
        // sin t crosses 0 at π (falling) and 2π (rising); both conditions fire together each time.
        let either = run(Direction::Either, None);
        let times: Vec<f64> = either.events.iter().map(|h| h.t).collect();
        assert_eq!(times.len(), 2, "{method}: {times:?}");
        assert!((times[0] - pi).abs() < 1e-8 && (times[1] - 2.0 * pi).abs() < 1e-8);
        assert!(either.events.iter().all(|h| h.events == vec![0, 1]));
        assert_eq!(either.u_end[1], 22.0);
        let rising = run(Direction::Rising, None);
        assert_eq!(rising.events.len(), 1);
        assert!((rising.events[0].t - 2.0 * pi).abs() < 1e-8);
        let falling = run(Direction::Falling, None);
        assert_eq!(falling.events.len(), 1);
        assert!((falling.events[0].t - pi).abs() < 1e-8);
        // A stop at t = 5: the solution ends there.
        let stopped = run(Direction::Either, Some(5.0));
        assert_eq!(stopped.events.len(), 2, "{method}");
        assert!(stopped.events[1].stop && stopped.events[1].events == vec![2]);
        assert!(
            ulps(stopped.t_end, 5.0) <= 4.0,
            "{method}: {}",
            stopped.t_end
        );
        // u(t*) is the interpolant's: Kvaerno5's cubic Hermite is far less accurate than the steps.
        let interpolation = if method == Method::Kvaerno5 {
            1e-6
        } else {
            1e-8
        };
        assert!(
            (stopped.u_end[0] - 5f64.sin()).abs() < interpolation,
            "{method}"
        );
        assert_eq!(stopped.times[stopped.times.len() - 1], stopped.t_end);
    }
}

#[test]
fn time_events_jump_at_their_times_and_save_at_reads_both_sides() {
    let k = 0.5f64;
    let exact = |t: f64| ScheduledDoses::exact(1.0, k, t).0;
    for method in [Method::Tsit5, Method::Kvaerno5, Method::RadauIIA5] {
        let problem = OdeProblem::new(ScheduledDoses, vec![1.0], vec![k], (0.0, 5.0)).unwrap();
        let options = SolverOptions::default()
            .method(method)
            .tol(1e-11)
            .save_at(vec![0.5, 1.0, 3.0, 5.0]);
        let sol = solve(&problem, &options).unwrap();
        let times: Vec<f64> = sol.events.iter().map(|h| h.t).collect();
        assert_eq!(times, vec![1.0, 2.5, 4.0], "{method}");
        // A save time at a dose takes the value after it.
        for (row, &t) in sol.times.iter().enumerate() {
            assert!(
                (sol.states[[row, 0]] - exact(t)).abs() < 1e-8,
                "{method}: t = {t}"
            );
        }
        assert_eq!(sol.times.to_vec(), vec![0.5, 1.0, 3.0, 5.0]);
        assert!((sol.u_end[0] - exact(5.0)).abs() < 1e-8);
        // Every-step saving keeps both sides of each jump.
        let every = solve(&problem, &SolverOptions::default().method(method)).unwrap();
        let at_one: Vec<f64> = (0..every.times.len())
            .filter(|&r| every.times[r] == 1.0)
            .map(|r| every.states[[r, 0]])
            .collect();
        assert_eq!(at_one.len(), 2);
        assert!((at_one[1] - at_one[0] - 2.0).abs() < 1e-12);
    }
}

/// A model whose event condition or jump misbehaves in the ways bad input can.
struct Hostile {
    bad_condition: bool,
}

impl OdeSystem for Hostile {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(
        &self,
        _t: S,
        _u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut du: ArrayViewMut1<S>,
    ) {
        du[0] = S::one();
    }
    fn n_events(&self) -> usize {
        1
    }
    fn event_spec(&self, _k: usize) -> EventSpec {
        EventSpec::crossing(Direction::Rising, EventAction::Jump)
    }
    fn event_condition<S: Scalar>(
        &self,
        _k: usize,
        t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
    ) -> S {
        if self.bad_condition && t.re() > 0.5 {
            S::from(f64::NAN)
        } else {
            u[0] - 1.0
        }
    }
    fn event_jump<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        _u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut u_new: ArrayViewMut1<S>,
    ) {
        u_new[0] = S::from(f64::INFINITY);
    }
}

#[test]
fn bad_conditions_jumps_and_zeno_points_are_typed_errors() {
    let options = SolverOptions::default();
    let nan = OdeProblem::new(
        Hostile {
            bad_condition: true,
        },
        vec![0.0],
        vec![],
        (0.0, 2.0),
    )
    .unwrap();
    match solve(&nan, &options) {
        Err(SolverError::NonFiniteEvent { t, event: 0, value }) => {
            assert!(t > 0.5 && value.is_nan())
        }
        other => panic!("{other:?}"),
    }
    let inf = OdeProblem::new(
        Hostile {
            bad_condition: false,
        },
        vec![0.0],
        vec![],
        (0.0, 2.0),
    )
    .unwrap();
    match solve(&inf, &options) {
        Err(SolverError::NonFiniteJump {
            t,
            event: 0,
            component: 0,
            value,
        }) => assert!((t - 1.0).abs() < 1e-12 && value.is_infinite()),
        other => panic!("{other:?}"),
    }
    // A ball with e = 0.5 bounces infinitely often before t∞ = 3 t₁: a typed error near t∞, for every
    // method, never a hang or a ball that falls through the floor.
    let (h0, g, e) = (1.0f64, 9.81, 0.5);
    let t_inf = (2.0 * h0 / g).sqrt() * (1.0 + e) / (1.0 - e);
    for method in ALL {
        let problem = OdeProblem::new(BouncingBall, vec![h0, 0.0], vec![g, e], (0.0, 5.0)).unwrap();
        match solve(
            &problem,
            &SolverOptions::default().method(method).tol(1e-10),
        ) {
            Err(SolverError::EventAccumulation { t, event: 0 }) => {
                assert!((t - t_inf).abs() < 1e-6, "{method}: at {t} vs {t_inf}")
            }
            other => panic!("{method}: {other:?}"),
        }
        let few = SolverOptions::default().method(method).max_events(10);
        assert!(matches!(
            solve(&problem, &few),
            Err(SolverError::TooManyEvents { max_events: 10, .. })
        ));
    }
    let zero = SolverOptions::default().max_events(0);
    let problem =
        OdeProblem::new(BouncingBall, vec![1.0, 0.0], vec![9.81, 0.5], (0.0, 1.0)).unwrap();
    assert!(matches!(
        solve(&problem, &zero),
        Err(SolverError::InvalidOption {
            name: "max_events",
            ..
        })
    ));
    assert!(matches!(
        solve(
            &problem,
            &SolverOptions::default().event_samples(usize::MAX)
        ),
        Err(SolverError::InvalidOption {
            name: "event_samples",
            ..
        })
    ));
    let auto = SolverOptions::default().method(Method::AutoTsit5Radau5);
    assert!(matches!(
        solve(&problem, &auto),
        Err(SolverError::UnsupportedMethod { .. })
    ));
}

/// Time events outside the span are rejected like tstops.
struct LateDose;

impl OdeSystem for LateDose {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(
        &self,
        _t: S,
        _u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut du: ArrayViewMut1<S>,
    ) {
        du[0] = S::zero();
    }
    fn n_events(&self) -> usize {
        1
    }
    fn event_spec(&self, _k: usize) -> EventSpec {
        EventSpec::at_times(vec![0.5, 3.0], EventAction::Jump)
    }
}

#[test]
fn time_events_outside_the_span_are_rejected() {
    let problem = OdeProblem::new(LateDose, vec![0.0], vec![], (0.0, 1.0)).unwrap();
    assert!(matches!(
        solve(&problem, &SolverOptions::default()),
        Err(SolverError::TimeOutsideSpan { what: "event", t, .. }) if t == 3.0
    ));
}

/// u = [t, count]: event 0 (u₀ crosses 1/2) adds 10 and then disarms itself and arms event 1, doses of 1
/// at t = 0.25 and 0.75 that start disarmed: only the second dose is given.
struct Rearm;

impl OdeSystem for Rearm {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(
        &self,
        _t: S,
        _u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut du: ArrayViewMut1<S>,
    ) {
        du[0] = S::one();
        du[1] = S::zero();
    }
    fn n_events(&self) -> usize {
        2
    }
    fn event_spec(&self, k: usize) -> EventSpec {
        match k {
            0 => EventSpec::crossing(Direction::Either, EventAction::Jump),
            _ => EventSpec::at_times(vec![0.25, 0.75], EventAction::Jump).disarmed(),
        }
    }
    fn event_condition<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
    ) -> S {
        u[0] - 0.5
    }
    fn event_jump<S: Scalar>(
        &self,
        k: usize,
        _t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut u_new: ArrayViewMut1<S>,
    ) {
        u_new[1] = u[1] + if k == 0 { S::from(10.0) } else { S::one() };
    }
    fn event_fired(&self, k: usize, armed: &mut [bool]) {
        if k == 0 {
            armed[0] = false;
            armed[1] = true;
        }
    }
}

#[test]
fn events_arm_and_disarm_each_other() {
    let problem = OdeProblem::new(Rearm, vec![0.0, 0.0], vec![], (0.0, 1.0)).unwrap();
    for method in [Method::Tsit5, Method::RadauIIA5] {
        let sol = solve(&problem, &SolverOptions::default().method(method)).unwrap();
        let fired: Vec<(f64, Vec<usize>)> =
            sol.events.iter().map(|h| (h.t, h.events.clone())).collect();
        assert_eq!(fired.len(), 2, "{method}: {fired:?}");
        assert!((fired[0].0 - 0.5).abs() < 1e-12 && fired[0].1 == vec![0]);
        assert_eq!(fired[1], (0.75, vec![1]));
        assert_eq!(sol.u_end[1], 11.0);
    }
}
