//! The solve driver: [`solve`] runs a problem to the end with any method and collects the saved
//! output; [`Method::AutoTsit5Radau5`] joins an explicit and an implicit run.

use ndarray::{Array1, Array2};

use crate::erk::Integrator;
use crate::error::SolverError;
use crate::implicit::{ImplicitIntegrator, Scheme};
use crate::options::{Saving, SolverOptions};
use crate::problem::{OdeProblem, check_times};
use crate::solution::{DenseKind, DenseOutput, Solution, Statistics};
use crate::system::OdeSystem;
use crate::tableau::Method;

/// Solves `problem` with `options`.
///
/// # Errors
/// Invalid settings ([`SolverError::InvalidTolerance`], [`SolverError::InvalidOption`],
/// [`SolverError::TimeOutsideSpan`], [`SolverError::UnsortedTimes`], ...) before the first step; during the
/// solve [`SolverError::NonFiniteRhs`], [`SolverError::StepSizeTooSmall`], [`SolverError::MaxStepsReached`].
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
    if options.method.is_implicit() {
        return solve_implicit(problem, options);
    }
    if options.method == Method::AutoTsit5Radau5 {
        return solve_auto(problem, options);
    }
    let mut integrator = Integrator::new(problem, options)?;
    integrator.run()?;
    Ok(integrator.into_solution())
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
    let mut it = Integrator::new(problem, &options.clone().method(Method::Tsit5))?;
    while !it.is_finished() && it.stats().stiffness_detected_at.is_none() {
        it.step_accepted()?;
    }
    if it.is_finished() {
        let mut sol = it.into_solution();
        sol.method = Method::AutoTsit5Radau5;
        return Ok(sol);
    }
    let (t_switch, u_switch) = (it.t(), it.u().to_vec());
    let first = it.into_solution();
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
    let second = solve_implicit(&sub, &rest)?;
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
        dense: None,
    })
}

/// Solves `problem` with an implicit method ([`Method::TrBdf2`], [`Method::Kvaerno5`]); called by
/// [`solve`].
///
/// Supported options: tolerances, `h0`, `h_max`, `max_steps`, `tstops`, saving every step, at the end,
/// or at `save_at` times (by the method's continuous extension, as for explicit methods: ESDIRK cubic
/// Hermite, Radau its collocation polynomial), `fixed_step`, `dense(true)`.
///
/// # Errors
/// As [`solve`]; [`SolverError::SingularMatrix`] when the iteration matrix I − hγJ is singular
/// (naming t and h); [`SolverError::NewtonFailed`] when Newton keeps failing as h shrinks;
fn solve_implicit<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
) -> Result<Solution, SolverError> {
    let n = problem.n_states();
    let (t0, t_end) = (problem.t0(), problem.t_end());
    let save_at: Vec<f64> = match &options.saving {
        Saving::At(times) => {
            check_times("save_at", times, t0, t_end, true)?;
            times.clone()
        }
        _ => Vec::new(),
    };
    let dir = (t_end - t0).signum();
    let mut it = ImplicitIntegrator::new(problem, options)?;
    let kind = match it.scheme() {
        Scheme::Esdirk(_) => DenseKind::Hermite,
        Scheme::Radau5 => DenseKind::Radau,
    };
    let mut dense = options.dense.then(|| DenseOutput::with_kind(kind, n));
    let mut k = vec![0.0; kind.stages() * n];
    let mut w = vec![0.0; kind.stages()];
    let mut y = vec![0.0; n];
    let (mut times, mut states) = (
        Vec::with_capacity(save_at.len()),
        Vec::with_capacity(save_at.len() * n),
    );
    let save_every = matches!(options.saving, Saving::EveryStep);
    let mut next_save = 0;
    if save_every || save_at.first() == Some(&t0) {
        times.push(t0);
        states.extend_from_slice(it.u());
        next_save = usize::from(save_at.first() == Some(&t0));
    }
    while !it.is_finished() {
        it.step_accepted()?;
        let step = it.last_step();
        let (t, h, t_next) = (step.t, step.h, step.t_next);
        // Save times inside the step come from the method's continuous extension (as for explicit
        // methods); one at the step's end takes the step's value.
        let inside = save_at
            .get(next_save)
            .is_some_and(|&ts| dir * (ts - t_next) <= 0.0);
        if dense.is_some() || inside {
            let last = step.scheme.stages() - 1;
            for m in 0..n {
                let delta = (step.u_next[m] - step.u[m]) / h;
                match kind {
                    DenseKind::Hermite => {
                        k[m] = step.stages[m];
                        k[n + m] = step.stages[last * n + m];
                        k[2 * n + m] = delta;
                    }
                    _ => k[m] = delta,
                }
            }
            if let (DenseKind::Radau, Some(cont)) = (kind, it.collocation()) {
                for (x, c) in k[n..].iter_mut().zip(cont) {
                    *x = c / h;
                }
            }
            let step = it.last_step();
            while let Some(&ts) = save_at.get(next_save) {
                if dir * (ts - t_next) >= 0.0 {
                    break;
                }
                kind.eval_step((t, h, ts), step.u, &k, &mut y, &mut w);
                times.push(ts);
                states.extend_from_slice(&y);
                next_save += 1;
            }
            if let Some(d) = dense.as_mut() {
                d.push(t, h, step.u, &k);
            }
        }
        let at_save = save_at.get(next_save) == Some(&t_next);
        if at_save {
            next_save += 1;
        }
        if save_every || at_save || (it.is_finished() && matches!(options.saving, Saving::EndOnly))
        {
            times.push(t_next);
            states.extend_from_slice(it.u());
        }
    }
    let rows = times.len();
    Ok(Solution {
        method: options.method,
        times: Array1::from(times),
        states: Array2::from_shape_vec((rows, n), states).expect("rows × n values"),
        u_end: Array1::from(it.u().to_vec()),
        stats: it.stats(),
        t0,
        t_end,
        dense,
    })
}
