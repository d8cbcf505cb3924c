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

use ndarray::{Array1, Array2};
use odesens_solver::{AcceptedStep, Checkpoint, Integrator, OdeProblem, OdeSystem, SolverOptions};

use crate::common::{
    Gradient, ObjectiveTracker, SensitivityStats, check_objective, derivative_options,
    forward_pass, stage_time,
};
use crate::derivatives::{Derivatives, VjpMode};
use crate::error::{SensitivityError, check_finite};
use crate::objective::Objective;

/// How the backward pass gets back to the steps of the forward solve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum Checkpointing {
    /// A checkpoint at every step: no recomputation beyond each step's own replay; memory ∝ steps.
    #[default]
    KeepAll,
    /// A checkpoint every `every` steps; each segment is recomputed once, storing its steps' checkpoints.
    Uniform {
        /// Steps between stored checkpoints (≥ 1).
        every: usize,
    },
    /// Griewank–Walther binomial checkpointing ("Revolve") with at most `snapshots` checkpoints stored at
    /// once (the initial one included): for l steps the fewest possible steps are recomputed,
    /// t(l, s) = r·l − β(s+1, r−1), β(s, r) = C(s+r, s), r minimal with β(s, r) ≥ l. l is found by the
    /// forward solve, which also evaluates G.
    Binomial {
        /// Checkpoints stored at once (≥ 1).
        snapshots: usize,
    },
    /// Binomial checkpointing with as many snapshots as fit in `bytes`.
    MemoryBudget {
        /// Bytes of checkpoint data allowed.
        bytes: usize,
    },
}

impl Checkpointing {
    /// Checks the policy's settings and returns how many snapshots a binomial reversal may hold
    /// (`cp_bytes`: the size of one checkpoint; 0 for keep-all and uniform).
    pub(crate) fn snapshots(self, cp_bytes: usize) -> Result<usize, SensitivityError> {
        match self {
            Checkpointing::Uniform { every: 0 } => Err(SensitivityError::InvalidSetting {
                name: "Uniform.every",
                value: 0.0,
                valid: ">= 1",
            }),
            Checkpointing::Binomial { snapshots: 0 } => Err(SensitivityError::InvalidSetting {
                name: "Binomial.snapshots",
                value: 0.0,
                valid: ">= 1",
            }),
            Checkpointing::MemoryBudget { bytes } if bytes < cp_bytes => {
                Err(SensitivityError::InvalidSetting {
                    name: "MemoryBudget.bytes",
                    value: bytes as f64,
                    valid: "at least the size of one checkpoint (state, first stage and scalars)",
                })
            }
            Checkpointing::Binomial { snapshots } => Ok(snapshots),
            Checkpointing::MemoryBudget { bytes } => Ok(bytes / cp_bytes),
            Checkpointing::KeepAll | Checkpointing::Uniform { .. } => Ok(0),
        }
    }
}

/// β(s, r) = C(s + r, s) (saturating).
fn beta(s: usize, r: usize) -> usize {
    // C(s + r, min(s, r)) by the multiplicative formula, saturating at usize::MAX.
    let k = s.min(r);
    let mut c: u128 = 1;
    for i in 1..=k as u128 {
        c = c * (s.max(r) as u128 + i) / i;
        if c > usize::MAX as u128 {
            return usize::MAX;
        }
    }
    c as usize
}

/// Griewank–Walther's minimal number of recomputed steps t(l, s) for l steps and s snapshots.
pub fn binomial_recomputations(l: usize, s: usize) -> usize {
    if l <= 1 {
        return 0;
    }
    if s <= 1 {
        return l * (l - 1) / 2;
    }
    let mut r = 0;
    while beta(s, r) < l {
        r += 1;
    }
    r * l - if r == 0 { 0 } else { beta(s + 1, r - 1) }
}

/// The optimal first advance for reversing l > 1 steps with c ≥ 2 snapshots:
/// l̂ = max(β(c, r−2), l − β(c−1, r)) clamped to [1, l−1] (checked against a brute-force recursion in
/// the tests).
fn binomial_split(l: usize, c: usize) -> usize {
    let mut r = 0;
    while beta(c, r) < l {
        r += 1;
    }
    let a = if r >= 2 { beta(c, r - 2) } else { 0 };
    let b = l.saturating_sub(beta(c - 1, r));
    a.max(b).clamp(1, l - 1)
}

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

impl<M: OdeSystem, O: Objective> Engine<'_, '_, M, O> {
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

    /// Restores `cp` and advances `steps` accepted steps (recomputation).
    fn advance_from(&mut self, cp: &Checkpoint, steps: usize) -> Result<(), SensitivityError> {
        self.replay.restore(cp)?;
        for _ in 0..steps {
            self.replay.step_accepted()?;
        }
        self.stats.recomputed_steps += steps;
        Ok(())
    }
}

/// Stored checkpoints: a stack whose buffers are reused.
pub(crate) struct Stack {
    pub(crate) items: Vec<Checkpoint>,
    depth: usize,
    pub(crate) peak: usize,
}

impl Stack {
    /// A stack holding `first` in slot 0, with room for `capacity` checkpoints.
    pub(crate) fn new(first: Checkpoint, capacity: usize) -> Self {
        let mut items = Vec::with_capacity(capacity.max(1));
        items.push(first);
        Self {
            items,
            depth: 1,
            peak: 1,
        }
    }

    /// Stores the integrator's current point; returns its slot.
    pub(crate) fn push<M: OdeSystem>(&mut self, integrator: &Integrator<'_, M>) -> usize {
        if self.depth == self.items.len() {
            self.items.push(Checkpoint::default());
        }
        integrator.checkpoint_into(&mut self.items[self.depth]);
        self.depth += 1;
        self.peak = self.peak.max(self.depth);
        self.depth - 1
    }

    pub(crate) fn pop(&mut self) {
        self.depth -= 1;
    }
}

/// One move of a binomial reversal over "units" (steps, or segments of steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Restore the checkpoint in `slot`, advance `advance` units, then reverse the next unit.
    Reverse { slot: usize, advance: usize },
    /// Restore the checkpoint in `slot`, advance `advance` units, store a new checkpoint (the next slot).
    Store { slot: usize, advance: usize },
    /// Release the most recent checkpoint.
    Release,
}

/// Work of the binomial reversal.
enum Work {
    /// Reverse units [a, b) from the checkpoint in `slot` (taken at unit a) with `c` snapshots usable,
    /// that one included.
    Reverse {
        slot: usize,
        a: usize,
        b: usize,
        c: usize,
    },
    /// Release the most recent snapshot.
    Release,
}

/// Reverses units [0, l) from the checkpoint in slot 0 with `c` snapshots (Griewank–Walther), emitting
/// the moves to `act` in order: to reverse [a, b), advance l̂ units, store a snapshot, reverse
/// [a + l̂, b) with c − 1, release it, reverse [a, a + l̂) with c; with one snapshot left every unit is
/// reached from the range's checkpoint. Units are reversed in strictly decreasing order. The recursion
/// runs on an explicit work list, so its depth (up to the number of snapshots) does not use the call
/// stack.
pub(crate) fn revolve(
    l: usize,
    c: usize,
    mut act: impl FnMut(Action) -> Result<(), SensitivityError>,
) -> Result<(), SensitivityError> {
    let mut depth = 1;
    let mut work = vec![Work::Reverse {
        slot: 0,
        a: 0,
        b: l,
        c,
    }];
    while let Some(item) = work.pop() {
        let (slot, a, b, c) = match item {
            Work::Release => {
                act(Action::Release)?;
                depth -= 1;
                continue;
            }
            Work::Reverse { slot, a, b, c } => (slot, a, b, c),
        };
        let l = b - a;
        if l == 0 {
            continue;
        }
        if l == 1 {
            act(Action::Reverse { slot, advance: 0 })?;
        } else if c <= 1 {
            for j in (a..b).rev() {
                act(Action::Reverse {
                    slot,
                    advance: j - a,
                })?;
            }
        } else {
            let lh = binomial_split(l, c);
            act(Action::Store { slot, advance: lh })?;
            let m = depth;
            depth += 1;
            work.push(Work::Reverse {
                slot,
                a,
                b: a + lh,
                c,
            });
            work.push(Work::Release);
            work.push(Work::Reverse {
                slot: m,
                a: a + lh,
                b,
                c: c - 1,
            });
        }
    }
    Ok(())
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
        let ti = stage_time(tab.c[i], step);
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

/// The jump of λ at an observation: if the next observation (counting back) is at `t`,
/// λ += ∂g_k/∂u(u, p), p̄ += ∂g_k/∂p, and (t, λ) after the jump is recorded.
pub(crate) fn observation_jump<O: Objective>(
    tracker: &mut ObjectiveTracker<'_, O>,
    obs_left: &mut usize,
    (t, u, p): (f64, &[f64], &[f64]),
    lambda: &mut [f64],
    p_bar: &mut [f64],
    trajectory: &mut Option<Vec<f64>>,
) -> Result<(), SensitivityError> {
    if *obs_left == 0 || tracker.times()[*obs_left - 1] != t {
        return Ok(());
    }
    tracker.observation_gradient(*obs_left - 1, u, p)?;
    for (l, g) in lambda.iter_mut().zip(&tracker.g_u) {
        *l += g;
    }
    for (pb, g) in p_bar.iter_mut().zip(&tracker.g_p) {
        *pb += g;
    }
    *obs_left -= 1;
    if let Some(rec) = trajectory.as_mut() {
        rec.push(t);
        rec.extend_from_slice(lambda);
    }
    Ok(())
}

/// Settings of [`adjoint_gradient_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdjointSettings {
    /// Keep λ(t) at every step boundary in [`Gradient::adjoint`] (memory ∝ steps).
    pub record_trajectory: bool,
    /// How vjps are computed by AD when the model has no hand-written one.
    pub vjp: VjpMode,
}

/// The adjoint λ(t) = ∂G/∂u(t) along the backward pass, as recorded by [`adjoint_gradient_with`].
///
/// Rows are in the order the backward pass meets them, from t_end to t0. Each step boundary t_n holds
/// λ_n, the adjoint after stepping back over step n, before the observations at t_n are added; where an
/// observation at t_k makes λ jump by ∂g_k/∂u, t_k appears twice: before and after the jump. The last
/// row is λ_0 = ∇_{u0}G. The course notes plot v(t) = −λ(t).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdjointTrajectory {
    /// Times, from t_end to t0.
    pub times: Array1<f64>,
    /// λ at those times (time × state).
    pub lambda: Array2<f64>,
}

impl AdjointTrajectory {
    /// The table from recorded rows [t, λ(t)] (n + 1 values each).
    pub(crate) fn from_rows(rows: Vec<f64>, n: usize) -> Self {
        let count = rows.len() / (n + 1);
        let table = Array2::from_shape_vec((count, n + 1), rows).expect("rows of n + 1");
        Self {
            times: table.column(0).to_owned(),
            lambda: table.slice(ndarray::s![.., 1..]).to_owned(),
        }
    }
}

/// The gradient of `objective` with respect to every parameter and initial value by the exact discrete
/// adjoint, revisiting steps as `checkpointing` says.
///
/// # Stiff problems
/// This is the exact derivative of the computed solution with its steps frozen. When an explicit
/// method's steps are limited by stability rather than accuracy (`stats.forward.stiffness_detected_at`
/// is set), that derivative can be far from the derivative of the solve (the frozen steps amplify stiff
/// components of the adjoint): check it with [`crate::check_gradient`], or use
/// [`crate::continuous_adjoint_gradient`], whose backward solve controls its own error.
///
/// # Errors
/// Solver errors (also from replays); objective errors (wrong size, observation times outside the span
/// or unsorted); [`SensitivityError::InvalidSetting`] for zero snapshots, a zero uniform interval or a
/// memory budget below one checkpoint; [`SensitivityError::NonFiniteDerivative`] if λ or p̄ becomes
/// NaN/∞ (naming the step's time).
pub fn adjoint_gradient<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    checkpointing: Checkpointing,
) -> Result<Gradient, SensitivityError> {
    adjoint_gradient_with(
        problem,
        options,
        objective,
        checkpointing,
        AdjointSettings::default(),
    )
}

/// [`adjoint_gradient`] with settings: record the adjoint trajectory λ(t), choose the AD route of vjps.
///
/// # Errors
/// As [`adjoint_gradient`].
pub fn adjoint_gradient_with<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    checkpointing: Checkpointing,
    settings: AdjointSettings,
) -> Result<Gradient, SensitivityError> {
    check_objective(problem, objective)?;
    let (n, np) = (problem.n_states(), problem.model().n_params());
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    if opts.method.is_implicit() {
        return crate::implicit::adjoint(problem, &opts, objective, checkpointing, settings);
    }
    let p = problem.params().to_vec();

    // Forward pass: G, the step count, and the checkpoints the policy keeps.
    let mut forward = Integrator::new(problem, &opts)?;
    let t0 = problem.t0();
    let u0 = problem.u0().to_vec();
    let initial = forward.checkpoint();
    let cp_bytes = initial.bytes();
    let snapshots = checkpointing.snapshots(cp_bytes)?;
    let keep_every = match checkpointing {
        Checkpointing::KeepAll => Some(1),
        Checkpointing::Uniform { every } => Some(every),
        _ => None,
    };
    let mut stored: Vec<Checkpoint> = Vec::new();
    let (value, steps) = forward_pass(&mut forward, objective, &p, (t0, &u0), |integrator, k| {
        if keep_every.is_some_and(|every| k.is_multiple_of(every)) {
            stored.push(integrator.checkpoint());
        }
    })?;

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
    let peak_snapshots = match checkpointing {
        Checkpointing::KeepAll | Checkpointing::Uniform { every: 1 } => {
            for cp in stored.iter().rev() {
                e.replay.restore(cp)?;
                e.adjoint_current()?;
            }
            stored.len()
        }
        Checkpointing::Uniform { every } => {
            // The stored checkpoints plus one segment's (its first is a stored one).
            let mut segment: Vec<Checkpoint> = vec![Checkpoint::default(); every.min(steps.max(1))];
            for (c, cp) in stored.iter().enumerate().rev() {
                let len = (steps - c * every).min(every);
                e.replay.restore(cp)?;
                segment[0].clone_from(cp);
                for slot in segment.iter_mut().take(len).skip(1) {
                    e.replay.step_accepted()?;
                    e.replay.checkpoint_into(slot);
                }
                e.stats.recomputed_steps += len - 1;
                for slot in segment[..len].iter().rev() {
                    e.replay.restore(slot)?;
                    e.adjoint_current()?;
                }
            }
            stored.len() + every.min(steps.max(1)) - 1
        }
        Checkpointing::Binomial { .. } | Checkpointing::MemoryBudget { .. } => {
            let mut st = Stack::new(initial, snapshots);
            revolve(steps, snapshots.min(steps.max(1)), |action| match action {
                Action::Reverse { slot, advance } => {
                    e.advance_from(&st.items[slot], advance)?;
                    e.adjoint_current()
                }
                Action::Store { slot, advance } => {
                    e.advance_from(&st.items[slot], advance)?;
                    st.push(&e.replay);
                    Ok(())
                }
                Action::Release => {
                    st.pop();
                    Ok(())
                }
            })?;
            st.peak
        }
    };
    e.stats.peak_snapshots = peak_snapshots;
    e.stats.peak_checkpoint_bytes = peak_snapshots * cp_bytes;
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
    let end = back.replay.stats();
    back.stats.recomputation.accepted_steps = end.accepted_steps - replay_start.accepted_steps;
    back.stats.recomputation.rejected_steps = end.rejected_steps - replay_start.rejected_steps;
    back.stats.recomputation.rhs_evaluations = end.rhs_evaluations - replay_start.rhs_evaluations;
    back.stats.derivatives = back.der.counts;
    Ok(Gradient {
        value,
        wrt_params: Array1::from(back.p_bar),
        wrt_u0: Array1::from(back.lambda),
        stats: back.stats,
        adjoint,
    })
}

#[cfg(test)]
mod tests {
    use super::{binomial_recomputations, binomial_split};

    /// T(l, c) by brute force: the fewest advances to reverse l steps with c snapshots.
    fn brute_force(max_l: usize, max_c: usize) -> Vec<Vec<usize>> {
        let mut t = vec![vec![0usize; max_c + 1]; max_l + 1];
        for l in 2..=max_l {
            t[l][1] = l * (l - 1) / 2;
            for c in 2..=max_c {
                t[l][c] = (1..l)
                    .map(|lh| lh + t[l - lh][c - 1] + t[lh][c])
                    .min()
                    .unwrap();
            }
        }
        t
    }

    #[test]
    fn closed_form_and_split_are_optimal() {
        let t = brute_force(90, 7);
        for l in 2..=90 {
            for c in 1..=7 {
                assert_eq!(binomial_recomputations(l, c), t[l][c], "t({l}, {c})");
                if c >= 2 {
                    let lh = binomial_split(l, c);
                    assert_eq!(
                        lh + t[l - lh][c - 1] + t[lh][c],
                        t[l][c],
                        "split of ({l}, {c})"
                    );
                }
            }
        }
    }
}
