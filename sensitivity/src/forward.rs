//! Forward sensitivities: tangents u̇ = ∂u/∂θ propagated stage by stage alongside the solution.
//!
//! For a direction θ with u̇_0 = ∂u0/∂θ and ṗ = ∂p/∂θ, each accepted step (t_n, h) of the forward solve is
//! differentiated with the same tableau (DESIGN.md): Ẏ_i = u̇_n + h Σ_j a_ij K̇_j,
//! K̇_i = f_u(t_i, Y_i) Ẏ_i + f_p(t_i, Y_i) ṗ, u̇_{n+1} = u̇_n + h Σ_i b_i K̇_i. With the step sequence frozen
//! this is the exact derivative of the computed solution. Directions are processed in chunks of
//! [`crate::derivatives::CHUNK`] (one dual-number pass per stage for the whole chunk), and chunks run in
//! parallel with rayon. Tangents are not part of the error control.

use ndarray::{Array1, Array2, Array3};
use odesens_solver::{Integrator, OdeProblem, OdeSystem, SolverOptions};
use rayon::prelude::*;

use crate::common::{
    DIRECTION_CHUNK, Gradient, ObjectiveTracker, SensitivityStats, check_objective,
    derivative_options, stage_time,
};
use crate::derivatives::Derivatives;
use crate::error::{SensitivityError, check_finite, check_times};
use crate::objective::Objective;

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
    /// Counters.
    pub stats: SensitivityStats,
}

/// What one chunk produces.
struct ChunkResult {
    /// Tangents at the save times, (time, state, lane).
    saved: Vec<f64>,
    states: Vec<f64>,
    /// dG/dθ per lane.
    d_objective: [f64; DIRECTION_CHUNK],
    value: f64,
    stats: SensitivityStats,
}

/// Propagates one chunk of directions (columns `cols` of the seeds) along a fresh forward solve.
#[allow(clippy::too_many_arguments)]
fn run_chunk<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    du0: &Array2<f64>,
    dp: &Array2<f64>,
    cols: std::ops::Range<usize>,
    save_times: &[f64],
    objective: Option<&O>,
) -> Result<ChunkResult, SensitivityError> {
    const C: usize = DIRECTION_CHUNK;
    let (n, np) = (problem.n_states(), problem.model().n_params());
    let p = problem.params().to_vec();
    let lanes = cols.len();
    let mut udot = vec![0.0; n * C];
    let mut pdot = vec![0.0; np * C];
    for (lane, col) in cols.clone().enumerate() {
        for m in 0..n {
            udot[m * C + lane] = du0[[m, col]];
        }
        for m in 0..np {
            pdot[m * C + lane] = dp[[m, col]];
        }
    }
    let mut integrator = Integrator::new(problem, options)?;
    let tab = options.method.tableau();
    let s = tab.stages;
    let mut kdot = vec![0.0; s * n * C];
    let mut ydot = vec![0.0; n * C];
    let mut der = Derivatives::new(problem.model());
    let mut tracker = objective.map(|o| ObjectiveTracker::new(o, n, np));
    let mut d_objective = [0.0; C];
    let mut value = 0.0;
    let mut saved = Vec::with_capacity(save_times.len() * n * C);
    let mut states = Vec::with_capacity(save_times.len() * n);
    let mut next_save = 0;
    let u0 = problem.u0().to_vec();
    let t0 = problem.t0();
    // Observations and saves at t0.
    let add_observation = |tr: &mut ObjectiveTracker<O>,
                           k: usize,
                           u: &[f64],
                           udot: &[f64],
                           d: &mut [f64; C]|
     -> f64 {
        tr.observation_gradient(k, u, &p);
        for lane in 0..C {
            let mut acc = 0.0;
            for m in 0..n {
                acc += tr.g_u[m] * udot[m * C + lane];
            }
            for m in 0..np {
                acc += tr.g_p[m] * pdot[m * C + lane];
            }
            d[lane] += acc;
        }
        tr.observe(k, u, &p)
    };
    if let Some(tr) = tracker.as_mut()
        && tr.times().first() == Some(&t0)
    {
        value += add_observation(tr, 0, &u0, &udot, &mut d_objective);
        tr.next = 1;
    }
    if save_times.first() == Some(&t0) {
        saved.extend_from_slice(&udot);
        states.extend_from_slice(&u0);
        next_save = 1;
    }
    let last = if tab.fsal { s - 1 } else { s };
    while !integrator.is_finished() {
        let step = integrator.step_accepted()?;
        let h = step.h;
        // Σ_i b_i r(t_i, Y_i): the same sum, in the same order, as the objective's quadrature.
        let mut q = 0.0;
        for i in 0..last {
            // Ẏ_i = u̇_n + h Σ_j a_ij K̇_j
            ydot.copy_from_slice(&udot);
            for &(j, a) in tab.a[i] {
                let ha = h * a;
                for (y, k) in ydot.iter_mut().zip(&kdot[j * n * C..(j + 1) * n * C]) {
                    *y += ha * k;
                }
            }
            let ti = stage_time(tab.c[i], &step);
            der.jvp_block(
                ti,
                step.stage_input(i),
                &p,
                &ydot,
                &pdot,
                &mut kdot[i * n * C..(i + 1) * n * C],
                lanes,
            );
            if let Some(tr) = tracker.as_mut()
                && tr.objective().has_running_cost()
                && tab.b[i] != 0.0
            {
                let hb = h * tab.b[i];
                q += tab.b[i] * tr.running_gradient(ti, step.stage_input(i), &p);
                for (lane, d) in d_objective.iter_mut().enumerate() {
                    let mut acc = 0.0;
                    for m in 0..n {
                        acc += tr.g_u[m] * ydot[m * C + lane];
                    }
                    for m in 0..np {
                        acc += tr.g_p[m] * pdot[m * C + lane];
                    }
                    *d += hb * acc;
                }
            }
        }
        value += h * q;
        // u̇_{n+1} = u̇_n + h Σ b_i K̇_i
        for (i, &b) in tab.b.iter().enumerate() {
            if b != 0.0 {
                let hb = h * b;
                for (u, k) in udot.iter_mut().zip(&kdot[i * n * C..(i + 1) * n * C]) {
                    *u += hb * k;
                }
            }
        }
        check_finite("tangent", step.t_next, &udot)?;
        let t_next = step.t_next;
        if let Some(tr) = tracker.as_mut()
            && tr.times().get(tr.next) == Some(&t_next)
        {
            let k = tr.next;
            value += add_observation(tr, k, step.u_next, &udot, &mut d_objective);
            tr.next += 1;
        }
        if save_times.get(next_save) == Some(&t_next) {
            saved.extend_from_slice(&udot);
            states.extend_from_slice(step.u_next);
            next_save += 1;
        }
    }
    let stats = SensitivityStats {
        forward: integrator.stats(),
        derivatives: der.counts,
        ..Default::default()
    };
    Ok(ChunkResult {
        saved,
        states,
        d_objective,
        value,
        stats,
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
) -> Result<Vec<(std::ops::Range<usize>, ChunkResult)>, SensitivityError> {
    let nd = du0.ncols();
    // Balanced blocks, one per thread where possible, at most DIRECTION_CHUNK directions each.
    let threads = rayon::current_num_threads().max(1);
    let block = nd.div_ceil(threads).clamp(1, DIRECTION_CHUNK);
    let ranges: Vec<std::ops::Range<usize>> = (0..nd.div_ceil(block).max(1))
        .map(|c| c * block..((c + 1) * block).min(nd))
        .collect();
    ranges
        .into_par_iter()
        .map(|r| {
            run_chunk(problem, options, du0, dp, r.clone(), save_times, objective)
                .map(|res| (r, res))
        })
        .collect()
}

fn add_stats(total: &mut SensitivityStats, s: &SensitivityStats) {
    total.forward.accepted_steps += s.forward.accepted_steps;
    total.forward.rejected_steps += s.forward.rejected_steps;
    total.forward.rhs_evaluations += s.forward.rhs_evaluations;
    total.forward.interpolation_rhs_evaluations += s.forward.interpolation_rhs_evaluations;
    total.derivatives.jvp += s.derivatives.jvp;
    total.derivatives.vjp += s.derivatives.vjp;
    total.derivatives.dual_passes += s.derivatives.dual_passes;
}

/// Forward sensitivities ∂u(t)/∂θ at `save_at` times (which become tstops, so the values are step values,
/// not interpolated) for the given directions.
///
/// # Errors
/// Solver errors; [`SensitivityError::DimensionMismatch`] for custom directions of the wrong size;
/// [`SensitivityError::TimeOutsideSpan`] / [`SensitivityError::UnsortedTimes`] for bad save times;
/// [`SensitivityError::NonFiniteDerivative`] if a tangent becomes NaN/∞.
pub fn forward_sensitivities<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    directions: &Directions,
    save_at: &[f64],
) -> Result<ForwardSensitivities, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    check_times("save_at", save_at, problem.t0(), problem.t_end())?;
    let (du0, dp) = directions.seeds(n, np)?;
    let nd = du0.ncols();
    let opts = derivative_options(problem, options, &[save_at])?;
    let chunks =
        run_all::<M, crate::objective::SquaredNormAt>(problem, &opts, &du0, &dp, save_at, None)?;
    let nt = save_at.len();
    let mut sens = Array3::zeros((nt, n, nd));
    let mut states = Array2::zeros((nt, n));
    let mut stats = SensitivityStats::default();
    for (r, res) in &chunks {
        for k in 0..nt {
            for m in 0..n {
                states[[k, m]] = res.states[k * n + m];
                for (lane, col) in r.clone().enumerate() {
                    sens[[k, m, col]] = res.saved[(k * n + m) * DIRECTION_CHUNK + lane];
                }
            }
        }
        add_stats(&mut stats, &res.stats);
    }
    Ok(ForwardSensitivities {
        times: Array1::from(save_at.to_vec()),
        states,
        sensitivities: sens,
        stats,
    })
}

/// The gradient of `objective` with respect to every parameter and initial value by forward
/// sensitivities (np + n directions; cost grows with their number).
///
/// # Errors
/// As [`forward_sensitivities`], and objective errors (wrong size, observation times).
pub fn forward_gradient<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
) -> Result<Gradient, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    check_objective(problem, objective)?;
    let (du0, dp) = Directions::All.seeds(n, np)?;
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    let chunks = run_all(problem, &opts, &du0, &dp, &[], Some(objective))?;
    let mut grad = vec![0.0; np + n];
    let mut stats = SensitivityStats::default();
    let mut value = 0.0;
    for (r, res) in &chunks {
        for (lane, col) in r.clone().enumerate() {
            grad[col] = res.d_objective[lane];
        }
        value = res.value;
        add_stats(&mut stats, &res.stats);
    }
    Ok(Gradient {
        value,
        wrt_params: Array1::from(grad[..np].to_vec()),
        wrt_u0: Array1::from(grad[np..].to_vec()),
        stats,
    })
}
