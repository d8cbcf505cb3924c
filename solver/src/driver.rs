//! The solve driver: [`solve`] runs a problem to the end with any method and collects the saved
//! output — every step, the end, or `save_at` times by the method's continuous extension — and the dense
//! output, once for every [`Stepper`]; [`Method::AutoTsit5Radau5`] joins an explicit and an implicit run.

use ndarray::{Array1, Array2};

use crate::erk::Integrator;
use crate::error::SolverError;
use crate::events::{EventLocator, with_event_tstops};
use crate::implicit::ImplicitIntegrator;
use crate::implicit::bdf::BdfIntegrator;
use crate::options::{Saving, SolverOptions};
use crate::problem::{OdeProblem, check_times};
use crate::solution::{Solution, Statistics};
use crate::stepper::Stepper;
use crate::system::OdeSystem;
use crate::tableau::Method;

/// Solves `problem` with `options`.
///
/// # Errors
/// Invalid settings ([`SolverError::InvalidTolerance`], [`SolverError::InvalidOption`],
/// [`SolverError::TimeOutsideSpan`], [`SolverError::UnsortedTimes`], ...) before the first step; during the
/// solve [`SolverError::NonFiniteRhs`], [`SolverError::StepSizeTooSmall`], [`SolverError::MaxStepsReached`];
/// implicit methods also [`SolverError::SingularMatrix`] when the iteration matrix is singular (naming t
/// and h) and [`SolverError::NewtonFailed`] when Newton keeps failing as h shrinks.
///
/// # Example
/// ```
/// use ndarray::{array, ArrayView1, ArrayViewMut1};
/// use odesens_solver::{solve, OdeProblem, OdeSystem, Scalar, SolverOptions};
///
/// struct Decay;
/// impl OdeSystem for Decay {
///     fn n_states(&self) -> usize { 1 }
///     fn n_params(&self) -> usize { 1 }
///     fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
///         du[0] = -p[0] * u[0];
///     }
/// }
///
/// let problem = OdeProblem::new(Decay, array![1.0], array![0.5], (0.0, 2.0)).unwrap();
/// let sol = solve(&problem, &SolverOptions::default().tol(1e-10)).unwrap();
/// assert!((sol.u_end[0] - (-1.0f64).exp()).abs() < 1e-9);
/// ```
pub fn solve<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
) -> Result<Solution, SolverError> {
    let options = &*with_event_tstops(problem, options)?;
    if options.method.is_multistep() {
        let mut it = BdfIntegrator::new(problem, options)?;
        return drive(&mut it, problem, options, |_| false);
    }
    if options.method.is_implicit() {
        let mut it = ImplicitIntegrator::new(problem, options)?;
        return drive(&mut it, problem, options, |_| false);
    }
    if options.method == Method::AutoTsit5Radau5 {
        if problem.model().n_events() > 0 {
            return Err(SolverError::UnsupportedMethod {
                method: Method::AutoTsit5Radau5,
                operation: "events: choose a fixed method",
            });
        }
        return solve_auto(problem, options);
    }
    let mut it = Integrator::new(problem, options)?;
    drive(&mut it, problem, options, |_| false)
}

/// [`Method::AutoTsit5Radau5`]: Tsit5 until its stiffness test fires, then Radau IIA5 from that point on,
/// the saved output and the counters joined.
fn solve_auto<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
) -> Result<Solution, SolverError> {
    if options.dense {
        return Err(SolverError::UnsupportedMethod {
            method: Method::AutoTsit5Radau5,
            operation: "dense output (dense(true)): the two methods' dense outputs are not joined; \
                        choose a fixed method",
        });
    }
    let explicit = options.clone().method(Method::Tsit5);
    let mut it = Integrator::new(problem, &explicit)?;
    let mut first = drive(&mut it, problem, &explicit, |it| {
        it.stats().stiffness_detected_at.is_some()
    })?;
    if it.is_finished() {
        first.method = Method::AutoTsit5Radau5;
        return Ok(first);
    }
    let (t_switch, u_switch) = (it.t(), it.u().to_vec());
    let dir = (problem.t_end() - problem.t0()).signum();
    let after = |times: &[f64]| -> Vec<f64> {
        times
            .iter()
            .copied()
            .filter(|&t| dir * (t - t_switch) > 0.0)
            .collect()
    };
    let mut rest = options
        .clone()
        .method(Method::RadauIIA5)
        .tstops(after(&options.tstops))
        .max_steps(
            options
                .max_steps
                .saturating_sub(first.stats.accepted_steps + first.stats.rejected_steps)
                .max(1),
        );
    rest.h0 = None;
    if let Saving::At(times) = &options.saving {
        rest.saving = Saving::At(after(times));
    }
    let sub = OdeProblem::new(
        problem.model(),
        u_switch,
        problem.params().to_vec(),
        (t_switch, problem.t_end()),
    )?;
    let mut implicit = ImplicitIntegrator::new(&sub, &rest)?;
    let second = drive(&mut implicit, &sub, &rest, |_| false)?;
    // Join: the implicit part's first row repeats the switch point when every step is saved.
    let skip = usize::from(matches!(options.saving, Saving::EveryStep));
    let n = problem.n_states();
    let mut times = first.times.to_vec();
    times.extend(second.times.iter().skip(skip));
    let mut states: Vec<f64> = first.states.iter().copied().collect();
    states.extend(second.states.rows().into_iter().skip(skip).flatten());
    let (a, b) = (first.stats, second.stats);
    let stats = Statistics {
        accepted_steps: a.accepted_steps + b.accepted_steps,
        rejected_steps: a.rejected_steps + b.rejected_steps,
        rhs_evaluations: a.rhs_evaluations + b.rhs_evaluations,
        interpolation_rhs_evaluations: a.interpolation_rhs_evaluations,
        stability_limited_steps: a.stability_limited_steps,
        jacobian_evaluations: b.jacobian_evaluations,
        factorizations: b.factorizations,
        newton_iterations: b.newton_iterations,
        linear_iterations: b.linear_iterations,
        newton_failures: b.newton_failures,
        stiffness_detected_at: a.stiffness_detected_at,
        switched_to_implicit_at: Some(t_switch),
    };
    let rows = times.len();
    Ok(Solution {
        method: Method::AutoTsit5Radau5,
        times: Array1::from(times),
        states: Array2::from_shape_vec((rows, n), states).expect("rows × n values"),
        u_end: second.u_end,
        stats,
        t0: problem.t0(),
        t_end: problem.t_end(),
        events: Vec::new(),
        dense: None,
    })
}

/// Runs `stepper` (built for `problem` and `options`) until the end of the span or until `pause` says
/// so after a step, saving as `options.saving` asks — every step, the end only, or `save_at` times, which
/// inside a step come from the method's continuous extension (explicit pairs: their interpolants; ESDIRK:
/// cubic Hermite; Radau: the collocation polynomial) and at a step's end are the step's value — and
/// recording the dense output with `options.dense`. The one solve loop for every stepper.
///
/// # Errors
/// The stepper's errors; [`SolverError::TimeOutsideSpan`] / [`SolverError::UnsortedTimes`] for bad save
/// times.
fn drive<S: Stepper, M: OdeSystem>(
    stepper: &mut S,
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    pause: impl Fn(&S) -> bool,
) -> Result<Solution, SolverError> {
    let n = problem.n_states();
    let (t0, t_end) = (problem.t0(), problem.t_end());
    let save_at: &[f64] = match &options.saving {
        Saving::At(times) => {
            check_times("save_at", times, t0, t_end, true)?;
            times
        }
        _ => &[],
    };
    let dir = (t_end - t0).signum();
    let mut dense = options.dense.then(|| stepper.new_dense_output());
    let mut y = vec![0.0; n];
    let rows = match options.saving {
        Saving::At(_) => save_at.len(),
        Saving::EndOnly => 1,
        Saving::EveryStep => 256,
    };
    let (mut times, mut states) = (Vec::with_capacity(rows), Vec::with_capacity(rows * n));
    let save_every = matches!(options.saving, Saving::EveryStep);
    let mut next_save = 0;
    if save_every || save_at.first() == Some(&stepper.t()) {
        times.push(stepper.t());
        states.extend_from_slice(stepper.u());
        next_save = usize::from(save_at.first() == Some(&stepper.t()));
    }
    let mut events = EventLocator::new(problem, options)?;
    let has_events = !events.is_empty();
    let mut hits = Vec::new();
    let mut stopped_at = None;
    if has_events {
        events.start(stepper.t(), stepper.u())?;
    }
    while !stepper.is_finished() && !pause(stepper) {
        let t_prev = stepper.t();
        stepper.advance()?;
        let located = if has_events {
            events.locate(stepper, t_prev)?
        } else {
            None
        };
        let t_next = located.unwrap_or(stepper.t());
        // Save times inside the step (before an event in it) come from the continuous extension; one
        // at its end takes the step's value.
        while let Some(&ts) = save_at.get(next_save) {
            if dir * (ts - t_next) >= 0.0 {
                break;
            }
            stepper.interpolate(ts, &mut y)?;
            times.push(ts);
            states.extend_from_slice(&y);
            next_save += 1;
        }
        if let Some(d) = dense.as_mut() {
            stepper.push_dense(d)?;
        }
        if located.is_some() {
            let hit = events.fire(stepper, t_prev)?;
            // Every-step saving keeps both sides of a jump; a save time at t* takes u⁺ (at the next
            // step's start), or the final state if the integration stops here.
            let finished = hit.stop || stepper.is_finished();
            if save_every {
                times.push(hit.t);
                states.extend_from_slice(&hit.u_before);
                if hit.u_after != hit.u_before {
                    times.push(hit.t);
                    states.extend_from_slice(&hit.u_after);
                }
            }
            if finished {
                if save_at.get(next_save) == Some(&hit.t) {
                    next_save += 1;
                    times.push(hit.t);
                    states.extend_from_slice(&hit.u_after);
                }
                if matches!(options.saving, Saving::EndOnly) {
                    times.push(hit.t);
                    states.extend_from_slice(&hit.u_after);
                }
            }
            let stop = hit.stop;
            if stop {
                stopped_at = Some(hit.t);
                y.copy_from_slice(&hit.u_after);
            }
            hits.push(hit);
            if stop {
                break;
            }
            continue;
        }
        let at_save = save_at.get(next_save) == Some(&t_next);
        if at_save {
            next_save += 1;
        }
        let at_end = stepper.is_finished() && matches!(options.saving, Saving::EndOnly);
        if save_every || at_save || at_end {
            times.push(t_next);
            states.extend_from_slice(stepper.u());
        }
    }
    // A stop ends the solution at t* with the state after the events there.
    let u_end = match stopped_at {
        Some(_) => y,
        None => stepper.u().to_vec(),
    };
    let rows = times.len();
    Ok(Solution {
        method: options.method,
        times: Array1::from(times),
        states: Array2::from_shape_vec((rows, n), states).expect("rows × n values"),
        u_end: Array1::from(u_end),
        stats: stepper.stats(),
        t0,
        t_end: stopped_at.unwrap_or(t_end),
        events: hits,
        dense,
    })
}
