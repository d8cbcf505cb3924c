//! The exact discrete adjoint: the gradient of the computed solution's objective with respect to every
//! parameter and initial value, at a cost that does not grow with their number.
//!
//! Each accepted step n (t_n, h, stage inputs Y_i) is differentiated in reverse (A. Sandu, "On the
//! properties of Runge–Kutta discrete adjoints", 2006; W. Hager 2000): given λ = ∂G/∂u_{n+1},
//! for i = s … 1: K̄_i = h b_i λ + h Σ_{j>i} a_ji Ȳ_j, Ȳ_i = f_u(Y_i)ᵀ K̄_i (+ h b_i ∂r/∂u for an integral
//! term), p̄ += f_p(Y_i)ᵀ K̄_i (+ h b_i ∂r/∂p); then λ_n = λ + Σ_i Ȳ_i, plus ∂g_k/∂u at observation times.
//! ∇_{u0} G = λ_0, ∇_p G = p̄. The step sequence is frozen, so this is the gradient of the discrete
//! solution to round-off. The FSAL stage of a step (weight 0, no later stage) has K̄ = 0 and is skipped; the
//! next step's first stage is differentiated as f(t_{n+1}, u_{n+1}), which it equals bit for bit.
//!
//! Steps are revisited from checkpoints ([`Checkpointing`]): a checkpoint restores the integrator so that
//! it retakes the same steps bit for bit, rejections included.

use ndarray::Array1;
use odesens_solver::{AcceptedStep, Integrator, OdeProblem, OdeSystem, SolverOptions};

use crate::ad::derivatives::{Derivatives, VjpMode};
use crate::checkpointing::{Checkpointing, Reversal, forward_with_checkpoints, reverse};
use crate::common::{
    AdjointTrajectory, Gradient, ObjectiveTracker, SensitivityStats, check_objective,
    derivative_options, observation_jump, stats_since,
};
use crate::error::{SensitivityError, check_finite};
use crate::objective::Objective;

/// The backward pass's working state.
struct Engine<'a, 'o, M: OdeSystem, O: Objective> {
    replay: Integrator<'a, M>,
    der: Derivatives<'a, M>,
    tracker: ObjectiveTracker<'o, O>,
    p: Vec<f64>,
    lambda: Vec<f64>,
    p_bar: Vec<f64>,
    acc: Vec<f64>,
    y_bar: Vec<f64>,
    sum_y: Vec<f64>,
    /// Observations not yet added, counted from the start (the next one to add is `obs_left − 1`).
    obs_left: usize,
    /// Rows [t, λ(t)] in the order the backward pass meets them, when recording.
    trajectory: Option<Vec<f64>>,
    stats: SensitivityStats,
}

impl<'a, M: OdeSystem, O: Objective> Reversal for Engine<'a, '_, M, O> {
    type S = Integrator<'a, M>;

    fn replay(&mut self) -> &mut Integrator<'a, M> {
        &mut self.replay
    }

    /// Takes the next step from the integrator's current state and differentiates it backwards.
    fn adjoint_current(&mut self) -> Result<(), SensitivityError> {
        let step = self.replay.step_accepted()?;
        adjoint_step(
            &step,
            &mut self.der,
            &mut self.tracker,
            &self.p,
            &mut self.lambda,
            &mut self.p_bar,
            &mut self.acc,
            &mut self.y_bar,
            &mut self.sum_y,
            &mut self.obs_left,
            &mut self.trajectory,
        )?;
        if let Some(rec) = self.trajectory.as_mut() {
            rec.push(step.t);
            rec.extend_from_slice(&self.lambda);
        }
        Ok(())
    }
}

/// Differentiates one accepted step backwards (see the module docs); λ and p̄ are updated in place.
#[allow(clippy::too_many_arguments)]
fn adjoint_step<M: OdeSystem, O: Objective>(
    step: &AcceptedStep<'_>,
    der: &mut Derivatives<'_, M>,
    tracker: &mut ObjectiveTracker<'_, O>,
    p: &[f64],
    lambda: &mut [f64],
    p_bar: &mut [f64],
    acc: &mut [f64],
    y_bar: &mut [f64],
    sum_y: &mut [f64],
    obs_left: &mut usize,
    trajectory: &mut Option<Vec<f64>>,
) -> Result<(), SensitivityError> {
    let n = lambda.len();
    let tab = step.tableau();
    let h = step.h;
    // The value before an observation's jump (and at the end of the span).
    if let Some(rec) = trajectory.as_mut()
        && rec.is_empty()
    {
        rec.push(step.t_next);
        rec.extend_from_slice(lambda);
    }
    // Observation at the end of the step: λ += ∂g/∂u(u_{n+1}), p̄ += ∂g/∂p.
    observation_jump(
        tracker,
        obs_left,
        (step.t_next, step.u_next, p),
        lambda,
        p_bar,
        trajectory,
    )?;
    let s = tab.stages;
    let last = if tab.fsal { s - 1 } else { s };
    acc[..last * n].iter_mut().for_each(|x| *x = 0.0);
    sum_y.iter_mut().for_each(|x| *x = 0.0);
    let running = tracker.objective().has_running_cost();
    for i in (0..last).rev() {
        // K̄_i = h b_i λ + Σ_{j>i} h a_ji Ȳ_j (accumulated in acc_i).
        let hb = h * tab.b[i];
        let kbar = &mut acc[i * n..(i + 1) * n];
        if hb != 0.0 {
            for (k, l) in kbar.iter_mut().zip(lambda.iter()) {
                *k += hb * l;
            }
        }
        y_bar.iter_mut().for_each(|x| *x = 0.0);
        let ti = step.stage_time(i);
        let yi = step.stage_input(i);
        if kbar.iter().any(|&x| x != 0.0) {
            let kb: &[f64] = kbar;
            der.vjp_add(ti, yi, p, kb, y_bar, p_bar);
        }
        if running && hb != 0.0 {
            tracker.running_gradient(ti, yi, p)?;
            for (y, g) in y_bar.iter_mut().zip(&tracker.g_u) {
                *y += hb * g;
            }
            for (pb, g) in p_bar.iter_mut().zip(&tracker.g_p) {
                *pb += hb * g;
            }
        }
        // Scatter h a_ij Ȳ_i into the accumulators of the earlier stages j.
        for &(j, a) in tab.a[i] {
            let ha = h * a;
            for (x, y) in acc[j * n..(j + 1) * n].iter_mut().zip(y_bar.iter()) {
                *x += ha * y;
            }
        }
        for (sy, y) in sum_y.iter_mut().zip(y_bar.iter()) {
            *sy += y;
        }
    }
    for (l, sy) in lambda.iter_mut().zip(sum_y.iter()) {
        *l += sy;
    }
    check_finite("adjoint λ", step.t, lambda)?;
    check_finite("adjoint p̄", step.t, p_bar)
}

/// Settings of the exact discrete adjoint ([`crate::SensitivityAlgorithm::DiscreteAdjoint`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdjointSettings {
    /// How the backward pass gets back to the forward steps (default: keep every step).
    pub checkpointing: Checkpointing,
    /// Keep λ(t) at every step boundary in [`Gradient::adjoint`] (memory ∝ steps).
    pub record_trajectory: bool,
    /// How vjps are computed by AD when the model has no hand-written one.
    pub vjp: VjpMode,
}

/// The gradient of `objective` with respect to every parameter and initial value by the exact discrete
/// adjoint, revisiting steps as `settings.checkpointing` says (the driver behind
/// [`crate::SensitivityAlgorithm::DiscreteAdjoint`]).
///
/// # Stiff problems
/// This is the exact derivative of the computed solution with its steps frozen. When an explicit
/// method's steps are limited by stability rather than accuracy (`stats.forward.stiffness_detected_at`
/// is set), that derivative can be far from the derivative of the solve (the frozen steps amplify stiff
/// components of the adjoint): check it with [`crate::check_gradient`], or use the interpolating
/// adjoint, whose backward solve controls its own error.
///
/// # Errors
/// Solver errors (also from replays); objective errors (wrong size, observation times outside the span
/// or unsorted); [`SensitivityError::InvalidSetting`] for zero snapshots, a zero uniform interval or a
/// memory budget below one checkpoint; [`SensitivityError::NonFiniteDerivative`] if λ or p̄ becomes
/// NaN/∞ (naming the step's time).
pub(crate) fn adjoint_gradient<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    settings: &AdjointSettings,
) -> Result<Gradient, SensitivityError> {
    let checkpointing = settings.checkpointing;
    check_objective(problem, objective)?;
    let (n, np) = (problem.n_states(), problem.model().n_params());
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    if opts.method.is_implicit() {
        return crate::implicit::adjoint(
            problem,
            &opts,
            objective,
            checkpointing,
            (settings.vjp, settings.record_trajectory),
        );
    }
    let p = problem.params().to_vec();

    // Forward pass: G, the step count, and the checkpoints the policy keeps.
    let mut forward = Integrator::new(problem, &opts)?;
    let t0 = problem.t0();
    let u0 = problem.u0().to_vec();
    let mut record =
        forward_with_checkpoints(&mut forward, objective, &p, (t0, &u0), checkpointing)?;

    let n_obs = objective.observation_times().len();
    let mut e = Engine {
        replay: Integrator::new(problem, &opts)?,
        der: Derivatives::new(problem.model()).with_vjp_mode(settings.vjp),
        tracker: ObjectiveTracker::new(objective, n, np),
        p: p.clone(),
        lambda: vec![0.0; n],
        p_bar: vec![0.0; np],
        acc: vec![0.0; opts.method.tableau().stages * n],
        y_bar: vec![0.0; n],
        sum_y: vec![0.0; n],
        obs_left: n_obs,
        trajectory: settings.record_trajectory.then(Vec::new),
        stats: SensitivityStats {
            forward: forward.stats(),
            ..Default::default()
        },
    };
    let replay_start = e.replay.stats();
    let cost = reverse(&mut e, checkpointing, &mut record)?;
    e.stats.peak_snapshots = cost.peak_snapshots;
    e.stats.recomputed_steps = cost.recomputed_steps;
    e.stats.peak_checkpoint_bytes = cost.peak_checkpoint_bytes;
    let mut back = e;
    // An observation at t0 adds ∂g/∂u0 directly.
    observation_jump(
        &mut back.tracker,
        &mut back.obs_left,
        (t0, &u0, &p),
        &mut back.lambda,
        &mut back.p_bar,
        &mut back.trajectory,
    )?;
    let adjoint = back
        .trajectory
        .take()
        .map(|rec| AdjointTrajectory::from_rows(rec, n));
    back.stats.recomputation = stats_since(&replay_start, &back.replay.stats());
    back.stats.derivatives = back.der.counts;
    Ok(Gradient {
        value: record.value,
        wrt_params: Array1::from(back.p_bar),
        wrt_u0: Array1::from(back.lambda),
        stats: back.stats,
        adjoint,
        backward: None,
        u0_reconstructed: None,
    })
}
