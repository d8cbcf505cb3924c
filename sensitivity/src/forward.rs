//! Forward sensitivities: tangents u̇ = ∂u/∂θ propagated stage by stage alongside the solution.
//!
//! For a direction θ with u̇_0 = ∂u0/∂θ and ṗ = ∂p/∂θ, each accepted step of the forward solve is
//! differentiated by its scheme's [`StepDiff::tangent_step`] (explicit RK: Ẏ_i = u̇_n + h Σ_j a_ij K̇_j,
//! K̇_i = f_u(t_i, Y_i) Ẏ_i + f_p(t_i, Y_i) ṗ, u̇_{n+1} = u̇_n + h Σ_i b_i K̇_i; implicit schemes solve their
//! stage equations' tangents exactly). With the step sequence frozen this is the exact derivative of the
//! computed solution. One driver for every stepper family. Explicit directions are split into balanced
//! blocks of at most [`crate::ad::derivatives::CHUNK`], one per thread (rayon); each stage costs one
//! `Lanes` pass per block (or the model's hand-written jvp per direction). Implicit directions share one
//! block, which reuses the step's factorization for all of them. By default the tangents are not part of
//! the error control; [`ForwardSettings::tangent_error_control`] puts them in (explicit methods; all
//! directions then share one block).

use ndarray::{Array1, Array2, Array3};
use odesens_solver::{EventLocator, OdeProblem, OdeSystem, SolverOptions, StepStages};
use rayon::prelude::*;

use crate::ad::derivatives::Derivatives;
use crate::common::{
    ChunkResult, Gradient, SensitivityStats, TangentRecord, add_directional, check_objective,
    derivative_options,
};
use crate::cost_model::forward_blocks;
use crate::error::{SensitivityError, check_times};
use crate::events::EventTangents;
use crate::objective::{FiringCounter, Objective};
use crate::step_diff::{
    Capability, StepDiff, StepFamily, Tangents, WithStepper, dispatch, require,
};

/// Which directions to differentiate along.
#[derive(Debug, Clone, PartialEq)]
pub enum Directions {
    /// Every parameter, then every initial value (np + n directions).
    All,
    /// Every parameter.
    Parameters,
    /// Every initial value.
    InitialValues,
    /// Arbitrary directions: column d of `du0` (n × nd) and of `dp` (np × nd) is direction d.
    Custom {
        /// ∂u0/∂θ_d, one column per direction.
        du0: Array2<f64>,
        /// ∂p/∂θ_d, one column per direction.
        dp: Array2<f64>,
    },
}

impl Directions {
    /// The seed matrices (n × nd, np × nd).
    fn seeds(&self, n: usize, np: usize) -> Result<(Array2<f64>, Array2<f64>), SensitivityError> {
        let eye = |rows: usize, cols: usize, offset: usize| {
            Array2::from_shape_fn((rows, cols), |(i, j)| f64::from(u8::from(j == i + offset)))
        };
        Ok(match self {
            Directions::All => (eye(n, np + n, np), eye(np, np + n, 0)),
            Directions::Parameters => (Array2::zeros((n, np)), eye(np, np, 0)),
            Directions::InitialValues => (eye(n, n, 0), Array2::zeros((np, n))),
            Directions::Custom { du0, dp } => {
                if du0.nrows() != n {
                    return Err(SensitivityError::DimensionMismatch {
                        what: "Custom du0 rows (states)",
                        expected: n,
                        got: du0.nrows(),
                    });
                }
                if dp.nrows() != np {
                    return Err(SensitivityError::DimensionMismatch {
                        what: "Custom dp rows (parameters)",
                        expected: np,
                        got: dp.nrows(),
                    });
                }
                if dp.ncols() != du0.ncols() {
                    return Err(SensitivityError::DimensionMismatch {
                        what: "Custom dp columns (directions)",
                        expected: du0.ncols(),
                        got: dp.ncols(),
                    });
                }
                (du0.clone(), dp.clone())
            }
        })
    }
}

/// Solution and tangents at the requested times.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForwardSensitivities {
    /// The save times.
    pub times: Array1<f64>,
    /// u at the save times (time × state).
    pub states: Array2<f64>,
    /// ∂u/∂θ at the save times (time × state × direction).
    pub sensitivities: Array3<f64>,
    /// The times t* of the events that fired ([`odesens_solver::events`]), in order.
    pub event_times: Array1<f64>,
    /// dt*/dθ of each event time (event × direction), by the implicit-function theorem on the
    /// interpolant's root (0 for time events).
    pub event_time_sensitivities: Array2<f64>,
    /// Counters.
    pub stats: SensitivityStats,
}

/// Propagates one block of directions (columns `cols` of the seeds) along a fresh forward solve with the
/// stepper `S` (one step's tangent by [`StepDiff::tangent_step`]); with `error_control` the tangents'
/// error estimates join the step-size control.
#[allow(clippy::too_many_arguments)]
fn run_chunk<'a, S: StepDiff<'a, M>, M: OdeSystem, O: Objective>(
    problem: &'a OdeProblem<M>,
    options: &SolverOptions,
    du0: &Array2<f64>,
    dp: &Array2<f64>,
    cols: std::ops::Range<usize>,
    save_times: &[f64],
    objective: Option<&O>,
    error_control: bool,
) -> Result<ChunkResult, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    let p = problem.params().to_vec();
    let mut stepper = S::start(problem, options)?;
    let mut work = stepper.work(n, np);
    let mut tg = Tangents::new(du0, dp, cols, stepper.stage_count());
    let mut der = Derivatives::new(problem.model());
    let mut rec = TangentRecord::new(objective, save_times, (n, np), tg.c);
    rec.record(problem.t0(), &problem.u0().to_vec(), &p, &tg.udot, &tg.pdot)?;
    // Events: located as the solver does, the tangents carried across them by the saltation map.
    let mut events = EventLocator::new(problem, options)?;
    let has_events = !events.is_empty();
    let mut event_tangents = EventTangents::new(problem.model(), tg.c);
    let mut counter = FiringCounter::new(problem.model().n_events());
    let mut firings = Vec::new();
    let (mut udot_n, mut s_minus) = (Vec::new(), Vec::new());
    if has_events {
        if objective.is_some_and(|o| o.has_running_cost()) {
            return Err(SensitivityError::Unsupported {
                operation: "running costs (integral terms) with events: the quadrature over a step \
                            cut by an event is not implemented yet",
            });
        }
        if error_control {
            return Err(SensitivityError::Unsupported {
                operation: "tangents in the error control with events",
            });
        }
        events.start(problem.t0(), &problem.u0().to_vec())?;
        udot_n = tg.udot.clone();
        s_minus = tg.udot.clone();
    }
    while !stepper.is_finished() {
        let t_prev = stepper.t();
        if has_events {
            udot_n.copy_from_slice(&tg.udot);
        }
        let t_next = {
            let step = stepper.tangent_step(&mut work, &mut der, &mut tg, &p, error_control)?;
            if let Some(tr) = rec.tracker.as_mut()
                && tr.objective().has_running_cost()
            {
                // h Σ_i b_i r(t_i, Y_i): the same sum, in the same order, as the objective's quadrature.
                let mut q = 0.0;
                for i in 0..step.stages() {
                    let b = step.weight(i);
                    if b != 0.0 {
                        q +=
                            b * tr.running_gradient(step.stage_time(i), step.stage_value(i), &p)?;
                        add_directional(
                            tr,
                            step.h() * b,
                            tg.stage(i),
                            &tg.pdot,
                            &mut rec.d_objective,
                        );
                    }
                }
                rec.value += step.h() * q;
            }
            step.t_next()
        };
        let located = if has_events {
            events.locate(&mut stepper, t_prev)?
        } else {
            None
        };
        match located {
            None => rec.record(t_next, stepper.u(), &p, &tg.udot, &tg.pdot)?,
            Some(t_star) => {
                if t_star == t_next {
                    s_minus.copy_from_slice(&tg.udot);
                } else {
                    stepper.tangent_at(
                        &mut work,
                        &mut der,
                        &mut tg,
                        &p,
                        t_star,
                        &udot_n,
                        &mut s_minus,
                    )?;
                }
                let hit = events.fire(&mut stepper, t_prev)?;
                event_tangents.apply(
                    &mut der,
                    problem.model(),
                    &hit,
                    &p,
                    &tg.pdot,
                    &s_minus,
                    &mut tg.udot,
                )?;
                counter.next(&hit.events, &mut firings);
                let dt = &event_tangents.dt[event_tangents.dt.len() - tg.c..];
                rec.record_event(
                    (&firings, &hit, &p),
                    dt,
                    &event_tangents.u_minus_dot,
                    &tg.pdot,
                )?;
                // An observation or save time at t* reads the state after the jump.
                rec.record(t_star, &hit.u_after, &p, &tg.udot, &tg.pdot)?;
                if hit.stop {
                    // The event times and their sensitivities are the result; nothing after t* is.
                    if let Some((what, t)) = rec.pending() {
                        return Err(SensitivityError::AfterStop {
                            what,
                            t,
                            t_stop: t_star,
                        });
                    }
                    break;
                }
            }
        }
    }
    if let Some(o) = objective {
        o.check_events(&counter.counts)?;
    }
    let stats = SensitivityStats {
        forward: stepper.stats(),
        derivatives: der.counts,
        exact_stage_factorizations: S::exact_stage_factorizations(&work),
        krylov_stage_solves: S::krylov_stage_solves(&work),
        ..Default::default()
    };
    Ok(ChunkResult {
        saved: rec.saved,
        states: rec.states,
        d_objective: rec.d_objective,
        value: rec.value,
        stats,
        event_times: event_tangents.times,
        event_dt: event_tangents.dt,
    })
}

/// Splits `nd` directions into chunks and runs them in parallel.
fn run_all<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    du0: &Array2<f64>,
    dp: &Array2<f64>,
    save_times: &[f64],
    objective: Option<&O>,
    error_control: bool,
) -> Result<Vec<(std::ops::Range<usize>, ChunkResult)>, SensitivityError> {
    if error_control {
        require(options.method, Capability::TangentErrorControl)?;
    }
    dispatch(
        options.method,
        Chunks {
            problem,
            options,
            seeds: (du0, dp),
            save_times,
            objective,
            error_control,
        },
    )
}

/// Forward tangents in blocks, written once over [`StepDiff`].
struct Chunks<'a, 'j, M: OdeSystem, O: Objective> {
    problem: &'a OdeProblem<M>,
    options: &'j SolverOptions,
    seeds: (&'j Array2<f64>, &'j Array2<f64>),
    save_times: &'j [f64],
    objective: Option<&'j O>,
    error_control: bool,
}

impl<'a, M: OdeSystem, O: Objective> WithStepper<'a, M> for Chunks<'a, '_, M, O> {
    type Out = Result<Vec<(std::ops::Range<usize>, ChunkResult)>, SensitivityError>;

    fn run<S: StepDiff<'a, M>>(self) -> Self::Out {
        let (du0, dp) = self.seeds;
        let nd = du0.ncols();
        // Balanced blocks, one per thread where possible, at most CHUNK directions each. All directions
        // share one block when the tangents are in the error control (one step sequence), and for the
        // implicit families, whose tangents share the step's factorization across directions.
        let block = if self.error_control || S::FAMILY != StepFamily::ExplicitRk {
            nd.max(1)
        } else {
            forward_blocks(nd, rayon::current_num_threads()).0
        };
        let ranges: Vec<std::ops::Range<usize>> = (0..nd.div_ceil(block).max(1))
            .map(|c| c * block..((c + 1) * block).min(nd))
            .collect();
        ranges
            .into_par_iter()
            .map(|r| {
                run_chunk::<S, M, O>(
                    self.problem,
                    self.options,
                    du0,
                    dp,
                    r.clone(),
                    self.save_times,
                    self.objective,
                    self.error_control,
                )
                .map(|res| (r, res))
            })
            .collect()
    }
}

fn add_stats(total: &mut SensitivityStats, s: &SensitivityStats) {
    total.forward.accepted_steps += s.forward.accepted_steps;
    total.forward.rejected_steps += s.forward.rejected_steps;
    total.forward.rhs_evaluations += s.forward.rhs_evaluations;
    total.forward.interpolation_rhs_evaluations += s.forward.interpolation_rhs_evaluations;
    total.derivatives.jvp += s.derivatives.jvp;
    total.derivatives.vjp += s.derivatives.vjp;
    total.derivatives.dual_passes += s.derivatives.dual_passes;
    total.derivatives.tape_sweeps += s.derivatives.tape_sweeps;
    total.exact_stage_factorizations += s.exact_stage_factorizations;
    total.krylov_stage_solves += s.krylov_stage_solves;
}

/// Settings of [`forward_sensitivities`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardSettings {
    /// Include the tangents' error estimates (h Σ b̃_i K̇_i, scaled like the state's) in the step-size
    /// control, as solvers of the forward-sensitivity ODE do. The steps then differ from those of the plain
    /// solve, and all directions are propagated in one block (no parallel blocks). Default: off — the
    /// tangents are then the exact derivatives of the plain solve's computed solution.
    pub tangent_error_control: bool,
}

/// Forward sensitivities ∂u(t)/∂θ at `save_at` times (which become tstops, so the values are step values,
/// not interpolated) for the given directions.
///
/// Stiff problems: as for the discrete adjoint, tangents of stability-limited explicit steps
/// (`stats.forward.stiffness_detected_at` set) can blow up; [`ForwardSettings::tangent_error_control`]
/// makes the steps follow the tangents too.
///
/// `settings` (default: plain tangents) can put the tangents into the error control.
///
/// # Errors
/// Solver errors; [`SensitivityError::DimensionMismatch`] for custom directions of the wrong size;
/// [`SensitivityError::Solver`] with `TimeOutsideSpan` / `UnsortedTimes` for bad save times;
/// [`SensitivityError::NonFiniteDerivative`] if a tangent becomes NaN/∞.
pub fn forward_sensitivities<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    directions: &Directions,
    save_at: &[f64],
    settings: ForwardSettings,
) -> Result<ForwardSensitivities, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    check_times("save_at", save_at, problem.t0(), problem.t_end())?;
    let (du0, dp) = directions.seeds(n, np)?;
    let nd = du0.ncols();
    let opts = derivative_options(problem, options, &[save_at])?;
    let chunks = run_all::<M, crate::objective::SquaredNormAt>(
        problem,
        &opts,
        &du0,
        &dp,
        save_at,
        None,
        settings.tangent_error_control,
    )?;
    let nt = save_at.len();
    let mut sens = Array3::zeros((nt, n, nd));
    let mut states = Array2::zeros((nt, n));
    let mut stats = SensitivityStats::default();
    for (r, res) in &chunks {
        for k in 0..nt {
            for m in 0..n {
                states[[k, m]] = res.states[k * n + m];
                for (lane, col) in r.clone().enumerate() {
                    sens[[k, m, col]] = res.saved[(k * n + m) * r.len() + lane];
                }
            }
        }
        add_stats(&mut stats, &res.stats);
    }
    // Every block takes the same steps and meets the same events.
    let event_times = chunks
        .first()
        .map(|(_, res)| res.event_times.clone())
        .unwrap_or_default();
    let mut event_sens = Array2::zeros((event_times.len(), nd));
    for (r, res) in &chunks {
        for e in 0..event_times.len() {
            for (lane, col) in r.clone().enumerate() {
                event_sens[[e, col]] = res.event_dt[e * r.len() + lane];
            }
        }
    }
    Ok(ForwardSensitivities {
        times: Array1::from(save_at.to_vec()),
        states,
        sensitivities: sens,
        event_times: Array1::from(event_times),
        event_time_sensitivities: event_sens,
        stats,
    })
}

/// Derivatives of an objective along chosen directions, from [`forward_directional_derivatives`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirectionalDerivatives {
    /// G(p, u0).
    pub value: f64,
    /// dG/dθ_d = ∇_{u0}G·∂u0/∂θ_d + ∇_pG·∂p/∂θ_d, one per direction (in the order of [`Directions`]).
    pub derivatives: Array1<f64>,
    /// Counters.
    pub stats: SensitivityStats,
}

/// dG/dθ along each of `directions` by forward sensitivities: one tangent per direction, so the cost
/// grows with their number (e.g. [`Directions::Parameters`] for the gradient with respect to the
/// parameters only).
///
/// # Errors
/// As [`forward_sensitivities`], and objective errors (wrong size, observation times).
pub fn forward_directional_derivatives<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    directions: &Directions,
) -> Result<DirectionalDerivatives, SensitivityError> {
    if crate::running::augments(problem, objective) {
        // With events the running cost is a state: the directions get a zero row for it.
        let (n, np) = (problem.n_states(), problem.model().n_params());
        let (du0, dp) = directions.seeds(n, np)?;
        let mut dz0 = Array2::zeros((n + 1, du0.ncols()));
        dz0.slice_mut(ndarray::s![..n, ..]).assign(&du0);
        let augmented = Directions::Custom { du0: dz0, dp };
        return crate::running::with_running_cost(problem, options, objective, |p, o, obj| {
            directional_of(p, o, obj, &augmented)
        });
    }
    directional_of(problem, options, objective, directions)
}

/// [`forward_directional_derivatives`] without the augmented path for running costs with events.
fn directional_of<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    directions: &Directions,
) -> Result<DirectionalDerivatives, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    check_objective(problem, objective)?;
    let (du0, dp) = directions.seeds(n, np)?;
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    let chunks = run_all(problem, &opts, &du0, &dp, &[], Some(objective), false)?;
    let mut derivatives = Array1::zeros(du0.ncols());
    let mut stats = SensitivityStats::default();
    let mut value = 0.0;
    for (r, res) in &chunks {
        for (lane, col) in r.clone().enumerate() {
            derivatives[col] = res.d_objective[lane];
        }
        value = res.value;
        add_stats(&mut stats, &res.stats);
    }
    // An overflow in G or its derivatives (u0 = 1e308, say) is an error, not an answer.
    let t_end = problem.t_end();
    crate::error::check_finite("objective G", t_end, &[value])?;
    crate::error::check_finite("dG/dθ", t_end, derivatives.as_slice().expect("contiguous"))?;
    Ok(DirectionalDerivatives {
        value,
        derivatives,
        stats,
    })
}

/// The gradient of `objective` with respect to every parameter and initial value by forward
/// sensitivities (np + n directions; cost grows with their number): the driver behind
/// [`crate::SensitivityAlgorithm::Forward`].
///
/// # Errors
/// As [`forward_sensitivities`], and objective errors (wrong size, observation times).
pub(crate) fn forward_gradient<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
) -> Result<Gradient, SensitivityError> {
    let np = problem.model().n_params();
    let DirectionalDerivatives {
        value,
        derivatives,
        stats,
    } = directional_of(problem, options, objective, &Directions::All)?;
    let grad = derivatives.as_slice().expect("contiguous");
    Ok(Gradient {
        value,
        wrt_params: Array1::from(grad[..np].to_vec()),
        wrt_u0: Array1::from(grad[np..].to_vec()),
        stats,
        adjoint: None,
        backward: None,
        u0_reconstructed: None,
    })
}
