//! What forward sensitivities and adjoints share: the solve set-up for an objective, the objective's
//! evaluation along the steps, and the statistics.

use ndarray::ArrayView1;
use odesens_solver::{OdeProblem, OdeSystem, SolverOptions, Statistics, StepStages, Stepper};
use serde::Serialize;

use crate::ad::derivatives::{ChunkDual, DerivativeCounts, ScalarGradient};
use crate::error::{SensitivityError, check_finite, check_times};
use crate::objective::{Firing, FiringCounter, Objective};

/// Counters of a derivative computation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SensitivityStats {
    /// The forward solve's counters (for forward sensitivities: summed over the parallel chunks).
    pub forward: Statistics,
    /// Counters of the steps recomputed from checkpoints (adjoints: every replayed step, rejections
    /// included).
    pub recomputation: Statistics,
    /// Steps advanced from checkpoints only to reach a later step (Griewank's recomputation count; the
    /// replay that each adjoint step makes of its own step is not included).
    pub recomputed_steps: usize,
    /// Checkpoints stored at the peak.
    pub peak_snapshots: usize,
    /// Bytes of checkpoints held at the peak: each checkpoint's struct and vectors (state, first
    /// stage, implicit methods' Jacobian and Radau's polynomial) and the spare room of the container
    /// holding them. The steppers' and the adjoint's own working buffers are not counted.
    pub peak_checkpoint_bytes: usize,
    /// Derivative evaluations (jvp, vjp, dual passes).
    pub derivatives: DerivativeCounts,
    /// Implicit methods: stage systems of the tangents or the adjoint solved with the exact stage
    /// Jacobians factored (one Jacobian and one LU each): every one of small dense problems (n + p ≤ 16),
    /// and otherwise those that the iteration preconditioned by the step's own factorization did not
    /// settle within a few iterations.
    pub exact_stage_factorizations: usize,
    /// Implicit methods on sparse problems: stage systems solved by GMRES preconditioned by the step's
    /// factorization (no exact factorization needed): every stage system of an ESDIRK adjoint, and the
    /// others where the fixed-point iteration with that preconditioner did not settle.
    pub krylov_stage_solves: usize,
}

impl SensitivityStats {
    /// All rhs evaluations in f64: forward solve plus recomputation.
    pub fn rhs_evaluations(&self) -> usize {
        self.forward.rhs_evaluations + self.recomputation.rhs_evaluations
    }
}

/// The gradient of an objective with respect to the parameters and the initial values.
#[derive(Debug, Clone, Serialize)]
pub struct Gradient {
    /// G(p, u0).
    pub value: f64,
    /// ∂G/∂p.
    pub wrt_params: ndarray::Array1<f64>,
    /// ∂G/∂u0.
    pub wrt_u0: ndarray::Array1<f64>,
    /// Counters.
    pub stats: SensitivityStats,
    /// The adjoint trajectory λ(t), when [`crate::AdjointSettings::record_trajectory`] asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjoint: Option<crate::AdjointTrajectory>,
    /// The continuous adjoints: the backward solve's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backward: Option<crate::BackwardStats>,
    /// The backsolve adjoint: u(t0) as reconstructed by integrating u backwards from u(t_end) (how far
    /// it is from u0 says how far the reversed solve drifted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u0_reconstructed: Option<ndarray::Array1<f64>>,
}

impl Gradient {
    /// The whole gradient as one vector: ∂G/∂p, then ∂G/∂u0.
    pub fn to_vec(&self) -> Vec<f64> {
        self.wrt_params
            .iter()
            .chain(self.wrt_u0.iter())
            .copied()
            .collect()
    }
}

/// Merges sorted time lists (in the direction `dir`), dropping repeats and `t0`.
pub(crate) fn merge_times(a: &[f64], b: &[f64], t0: f64, dir: f64) -> Vec<f64> {
    let mut all: Vec<f64> = a.iter().chain(b).copied().filter(|&t| t != t0).collect();
    all.sort_by(|x, y| (dir * x).total_cmp(&(dir * y)));
    all.dedup();
    all
}

/// Solver options for a derivative computation: the user's tolerances and method, with `extra` times
/// (observations, save times) added to the tstops, and nothing stored.
pub(crate) fn derivative_options<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    extra: &[&[f64]],
) -> Result<SolverOptions, SensitivityError> {
    if options.method == odesens_solver::Method::AutoTsit5Radau5 {
        return Err(SensitivityError::UnsupportedMethod {
            method: options.method,
            operation: "derivatives: they differentiate one method's steps (choose a fixed method, \
                        e.g. Tsit5, Kvaerno5 or RadauIIA5)",
        });
    }
    let (t0, t_end) = (problem.t0(), problem.t_end());
    let dir = (t_end - t0).signum();
    let mut tstops = options.tstops.clone();
    for times in extra {
        tstops = merge_times(&tstops, times, t0, dir);
    }
    // Time events are tstops, as in the solver's own solve.
    let with_events = odesens_solver::events::with_event_tstops(problem, options)?;
    tstops = merge_times(&tstops, &with_events.tstops, t0, dir);
    Ok(options.clone().tstops(tstops).save_end_only().dense(false))
}

/// [`SensitivityError::Unsupported`] for a model with events, for the derivative computations that do
/// not differentiate through them yet (adjoints, H·v, the cost model): they would skip the events, and
/// the derivatives would silently be those of another solution.
pub(crate) fn reject_events<M: OdeSystem>(
    problem: &OdeProblem<M>,
    operation: &'static str,
) -> Result<(), SensitivityError> {
    if problem.model().n_events() > 0 {
        return Err(SensitivityError::Unsupported { operation });
    }
    Ok(())
}

/// Validates an objective for `problem`.
pub(crate) fn check_objective<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    objective: &O,
) -> Result<(), SensitivityError> {
    objective.check(problem.n_states())?;
    check_times(
        "observation",
        objective.observation_times(),
        problem.t0(),
        problem.t_end(),
    )
}

/// Evaluates the objective along a solve and, on request, its gradients at the observations and stages.
pub(crate) struct ObjectiveTracker<'o, O: Objective> {
    objective: &'o O,
    times: &'o [f64],
    /// Index of the next observation (forward order).
    pub next: usize,
    grad: ScalarGradient,
    /// ∂g/∂u and ∂g/∂p of the last gradient evaluation.
    pub g_u: Vec<f64>,
    pub g_p: Vec<f64>,
    /// Sums of the event terms' gradients.
    event_u: Vec<f64>,
    event_p: Vec<f64>,
}

impl<'o, O: Objective> ObjectiveTracker<'o, O> {
    pub fn new(objective: &'o O, n: usize, np: usize) -> Self {
        Self {
            objective,
            times: objective.observation_times(),
            next: 0,
            grad: ScalarGradient::new(n, np),
            g_u: vec![0.0; n],
            g_p: vec![0.0; np],
            event_u: Vec::new(),
            event_p: Vec::new(),
        }
    }

    pub fn times(&self) -> &'o [f64] {
        self.times
    }

    pub fn objective(&self) -> &'o O {
        self.objective
    }

    /// g_k(u, p).
    pub fn observe(&self, k: usize, u: &[f64], p: &[f64]) -> f64 {
        self.objective.observation::<f64>(
            k,
            self.times[k],
            ArrayView1::from(u),
            ArrayView1::from(p),
        )
    }

    /// Gradient of g_k at (u, p) into `g_u`, `g_p`.
    ///
    /// # Errors
    /// [`SensitivityError::NonFiniteDerivative`] if the gradient is not finite.
    pub fn observation_gradient(
        &mut self,
        k: usize,
        u: &[f64],
        p: &[f64],
    ) -> Result<(), SensitivityError> {
        let (objective, t) = (self.objective, self.times[k]);
        self.grad
            .gradient(u, p, &mut self.g_u, &mut self.g_p, |ud, pd| {
                objective.observation::<ChunkDual>(k, t, ud, pd)
            });
        self.check(t)
    }

    /// Gradient of the running cost r(t, u, p) into `g_u`, `g_p`; returns r.
    ///
    /// # Errors
    /// [`SensitivityError::NonFiniteDerivative`] if the gradient is not finite.
    pub fn running_gradient(
        &mut self,
        t: f64,
        u: &[f64],
        p: &[f64],
    ) -> Result<f64, SensitivityError> {
        let objective = self.objective;
        let r = self
            .grad
            .gradient(u, p, &mut self.g_u, &mut self.g_p, |ud, pd| {
                objective.running_cost::<ChunkDual>(t, ud, pd)
            });
        self.check(t)?;
        Ok(r)
    }

    /// Σ of the event terms c(t*, u⁻, p) of `firings` (one firing's events).
    pub fn event_value(&self, firings: &[Firing], t: f64, u: &[f64], p: &[f64]) -> f64 {
        firings
            .iter()
            .map(|&f| {
                self.objective
                    .event_cost::<f64>(f, t, ArrayView1::from(u), ArrayView1::from(p))
            })
            .sum()
    }

    /// The gradient of the event terms of `firings` at (t*, u⁻, p): ∂c/∂u into `g_u`, ∂c/∂p into
    /// `g_p` (summed over the firings); returns ∂c/∂t*.
    ///
    /// # Errors
    /// [`SensitivityError::NonFiniteDerivative`] if the gradient is not finite.
    pub fn event_gradient(
        &mut self,
        firings: &[Firing],
        t: f64,
        u: &[f64],
        p: &[f64],
    ) -> Result<f64, SensitivityError> {
        let objective = self.objective;
        let (n, np) = (u.len(), p.len());
        self.event_u.resize(n, 0.0);
        self.event_p.resize(np, 0.0);
        self.event_u.iter_mut().for_each(|x| *x = 0.0);
        self.event_p.iter_mut().for_each(|x| *x = 0.0);
        let mut c_t = 0.0;
        for &f in firings {
            self.grad
                .gradient(u, p, &mut self.g_u, &mut self.g_p, |ud, pd| {
                    objective.event_cost::<ChunkDual>(f, ChunkDual::constant(t), ud, pd)
                });
            for (a, g) in self.event_u.iter_mut().zip(&self.g_u) {
                *a += g;
            }
            for (a, g) in self.event_p.iter_mut().zip(&self.g_p) {
                *a += g;
            }
            // ∂c/∂t*: one pass with t* seeded.
            let mut eps = [0.0; crate::ad::derivatives::CHUNK];
            eps[0] = 1.0;
            let (uc, pc) = self.grad.constants(u, p);
            c_t += objective
                .event_cost::<ChunkDual>(
                    f,
                    ChunkDual::new(t, eps),
                    ArrayView1::from(uc),
                    ArrayView1::from(pc),
                )
                .eps[0];
        }
        self.g_u.copy_from_slice(&self.event_u);
        self.g_p.copy_from_slice(&self.event_p);
        self.check(t)?;
        if !c_t.is_finite() {
            return Err(SensitivityError::NonFiniteDerivative {
                what: "objective gradient ∂c/∂t* (event term)",
                t,
                component: 0,
                value: c_t,
            });
        }
        Ok(c_t)
    }

    fn check(&self, t: f64) -> Result<(), SensitivityError> {
        check_finite("objective gradient ∂g/∂u", t, &self.g_u)?;
        check_finite("objective gradient ∂g/∂p", t, &self.g_p)
    }

    /// The running cost's contribution h Σ_i b_i r(t_i, Y_i, p) of an accepted step.
    pub fn quadrature(&self, step: &impl StepStages, p: &[f64]) -> f64 {
        let mut q = 0.0;
        for i in 0..step.stages() {
            let b = step.weight(i);
            if b != 0.0 {
                q += b * self.objective.running_cost::<f64>(
                    step.stage_time(i),
                    ArrayView1::from(step.stage_value(i)),
                    ArrayView1::from(p),
                );
            }
        }
        step.h() * q
    }
}

/// dG/dθ_lane += weight · (∇_u g · u̇_lane + ∇_p g · ṗ_lane) for every lane, with the gradient held in
/// `tr` and tangents in row-major (component, lane) layouts of `d.len()` lanes.
pub(crate) fn add_directional<O: Objective>(
    tr: &ObjectiveTracker<'_, O>,
    weight: f64,
    udot: &[f64],
    pdot: &[f64],
    d: &mut [f64],
) {
    let c = d.len();
    for (lane, dl) in d.iter_mut().enumerate() {
        let mut acc = 0.0;
        for (m, g) in tr.g_u.iter().enumerate() {
            acc += g * udot[m * c + lane];
        }
        for (m, g) in tr.g_p.iter().enumerate() {
            acc += g * pdot[m * c + lane];
        }
        *dl += weight * acc;
    }
}

/// What forward tangents of some lanes record along a solve: G and dG/dθ per lane (with an objective),
/// and the tangents and states at the save times.
pub(crate) struct TangentRecord<'o, O: Objective> {
    pub tracker: Option<ObjectiveTracker<'o, O>>,
    save_times: &'o [f64],
    next_save: usize,
    pub d_objective: Vec<f64>,
    pub value: f64,
    pub saved: Vec<f64>,
    pub states: Vec<f64>,
}

impl<'o, O: Objective> TangentRecord<'o, O> {
    /// The first save (`"save"`) or observation (`"observation"`) time still ahead, if any.
    pub fn pending(&self) -> Option<(&'static str, f64)> {
        if let Some(&t) = self.save_times.get(self.next_save) {
            return Some(("save", t));
        }
        self.tracker
            .as_ref()
            .and_then(|tr| tr.times().get(tr.next))
            .map(|&t| ("observation", t))
    }

    /// For `lanes` directions of a system with n states and np parameters.
    pub fn new(
        objective: Option<&'o O>,
        save_times: &'o [f64],
        (n, np): (usize, usize),
        lanes: usize,
    ) -> Self {
        Self {
            tracker: objective.map(|o| ObjectiveTracker::new(o, n, np)),
            save_times,
            next_save: 0,
            d_objective: vec![0.0; lanes],
            value: 0.0,
            saved: Vec::with_capacity(save_times.len() * n * lanes),
            states: Vec::with_capacity(save_times.len() * n),
        }
    }

    /// At t0 and at every step end: the observation due at t (G += g_k(u), dG/dθ += ∇g_k·(u̇, ṗ)) and
    /// the save due at t.
    pub fn record(
        &mut self,
        t: f64,
        u: &[f64],
        p: &[f64],
        udot: &[f64],
        pdot: &[f64],
    ) -> Result<(), SensitivityError> {
        if let Some(tr) = self.tracker.as_mut()
            && tr.times().get(tr.next) == Some(&t)
        {
            let k = tr.next;
            tr.observation_gradient(k, u, p)?;
            add_directional(tr, 1.0, udot, pdot, &mut self.d_objective);
            self.value += tr.observe(k, u, p);
            tr.next += 1;
        }
        if self.save_times.get(self.next_save) == Some(&t) {
            self.saved.extend_from_slice(udot);
            self.states.extend_from_slice(u);
            self.next_save += 1;
        }
        Ok(())
    }
}

impl<O: Objective> TangentRecord<'_, O> {
    /// At a firing (`firings` of `hit`, parameters `p`): G += Σ c(t*, u⁻, p) and
    /// dG/dθ += c_t dt*/dθ + c_u u̇⁻ + c_p ṗ per lane, with `dt` = dt*/dθ per lane and `u_minus_dot` =
    /// du⁻/dθ = s⁻ + f⁻ dt*/dθ (n × lanes).
    ///
    /// # Errors
    /// [`SensitivityError::NonFiniteDerivative`] if the event terms' gradient is not finite.
    pub fn record_event(
        &mut self,
        (firings, hit, p): (&[Firing], &odesens_solver::EventHit, &[f64]),
        dt: &[f64],
        u_minus_dot: &[f64],
        pdot: &[f64],
    ) -> Result<(), SensitivityError> {
        let Some(tr) = self.tracker.as_mut() else {
            return Ok(());
        };
        if !tr.objective().has_event_cost() {
            return Ok(());
        }
        self.value += tr.event_value(firings, hit.t, &hit.u_before, p);
        let c_t = tr.event_gradient(firings, hit.t, &hit.u_before, p)?;
        for (d, dt) in self.d_objective.iter_mut().zip(dt) {
            *d += c_t * dt;
        }
        add_directional(tr, 1.0, u_minus_dot, pdot, &mut self.d_objective);
        Ok(())
    }
}

/// The events of a forward pass: the step in which each fired (its index among the accepted steps)
/// and the firing.
pub(crate) type EventRecord = Vec<(usize, odesens_solver::EventHit)>;

/// Runs `stepper` to the end, evaluating G = Σ_k g_k + h Σ_i b_i r(t_i, Y_i) + Σ_j c_j along the steps
/// (the same quadrature for every method, [`StepStages`]); `before_step(stepper, k, restarted)` is
/// called before the k-th accepted step (for checkpoints), `restarted` telling whether an event cut the
/// step before and the stepper restarted after it. With `events`, the model's events are located and fired after
/// each step as the solver does (an observation at an event time reads the state after the jump; the
/// event terms c_j read t* and the state before it); a stop ends the pass at t*. Returns G, the number
/// of steps and the events. The one forward pass of every derivative computation and every stepper.
///
/// # Errors
/// Solver and objective errors; [`SensitivityError::Unsupported`] for running costs with events;
/// [`SensitivityError::AfterStop`] for observations after a stop; [`SensitivityError::MissingEvent`]
/// from [`Objective::check_events`].
pub(crate) fn forward_pass<S: Stepper, O: Objective, M: OdeSystem>(
    stepper: &mut S,
    objective: &O,
    p: &[f64],
    (t0, u0): (f64, &[f64]),
    mut events: Option<&mut odesens_solver::EventLocator<'_, M>>,
    mut before_step: impl FnMut(&S, usize, bool),
) -> Result<(f64, usize, EventRecord), SensitivityError> {
    let mut tracker = ObjectiveTracker::new(objective, u0.len(), p.len());
    let mut value = 0.0;
    if tracker.times().first() == Some(&t0) {
        value += tracker.observe(0, u0, p);
        tracker.next = 1;
    }
    let running = objective.has_running_cost();
    let mut hits = Vec::new();
    let mut counter = FiringCounter::new(events.as_ref().map_or(0, |ev| ev.n_events()));
    let mut firings = Vec::new();
    if let Some(ev) = events.as_mut() {
        if running {
            return Err(SensitivityError::Unsupported {
                operation: "running costs (integral terms) with events: the quadrature over a step \
                            cut by an event is not implemented yet",
            });
        }
        ev.start(t0, u0)?;
    }
    let mut steps = 0;
    let mut stopped = None;
    while !stepper.is_finished() {
        let restarted = steps > 0 && hits.last().is_some_and(|(k, _)| k + 1 == steps);
        before_step(stepper, steps, restarted);
        let t_prev = stepper.t();
        let t_next = {
            let step = stepper.step_accepted()?;
            if running {
                value += tracker.quadrature(&step, p);
            }
            step.t_next()
        };
        let located = match events.as_mut() {
            Some(ev) => ev.locate(stepper, t_prev)?,
            None => None,
        };
        let observed_at = match located {
            Some(_) => {
                let ev = events.as_mut().expect("events located");
                let hit = ev.fire(stepper, t_prev)?;
                counter.next(&hit.events, &mut firings);
                value += tracker.event_value(&firings, hit.t, &hit.u_before, p);
                if hit.stop {
                    stopped = Some(hit.t);
                }
                let t = hit.t;
                hits.push((steps, hit));
                t
            }
            None => t_next,
        };
        if tracker.times().get(tracker.next) == Some(&observed_at) {
            let u = match hits.last() {
                Some((k, hit)) if *k == steps => &hit.u_after[..],
                _ => stepper.u(),
            };
            value += tracker.observe(tracker.next, u, p);
            tracker.next += 1;
        }
        steps += 1;
        if let Some(t_stop) = stopped {
            if let Some(&t) = tracker.times().get(tracker.next) {
                return Err(SensitivityError::AfterStop {
                    what: "observation",
                    t,
                    t_stop,
                });
            }
            break;
        }
    }
    objective.check_events(&counter.counts)?;
    check_finite("objective G", stepper.t(), &[value])?;
    Ok((value, steps, hits))
}

/// The events of each firing of a forward pass ([`Firing`]), in order.
pub(crate) fn firings_of(record: &EventRecord, n_events: usize) -> Vec<Vec<Firing>> {
    let mut counter = FiringCounter::new(n_events);
    record
        .iter()
        .map(|(_, hit)| {
            let mut out = Vec::new();
            counter.next(&hit.events, &mut out);
            out
        })
        .collect()
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

/// What one block of directions produces.
pub(crate) struct ChunkResult {
    /// Tangents at the save times, (time, state, lane) with `lanes` lanes.
    pub saved: Vec<f64>,
    pub states: Vec<f64>,
    /// dG/dθ per lane.
    pub d_objective: Vec<f64>,
    pub value: f64,
    pub stats: SensitivityStats,
    /// Event times t*, and dt*/dθ per event and lane.
    pub event_times: Vec<f64>,
    pub event_dt: Vec<f64>,
}

/// The adjoint λ(t) = ∂G/∂u(t) along the backward pass, as recorded by the discrete adjoint with
/// [`crate::AdjointSettings::record_trajectory`].
///
/// Rows are in the order the backward pass meets them, from t_end to t0. Each step boundary t_n holds
/// λ_n, the adjoint after stepping back over step n, before the observations at t_n are added; where an
/// observation at t_k makes λ jump by ∂g_k/∂u, t_k appears twice: before and after the jump. The last
/// row is λ_0 = ∇_{u0}G. The course notes plot v(t) = −λ(t).
#[derive(Debug, Clone, Serialize)]
pub struct AdjointTrajectory {
    /// Times, from t_end to t0.
    pub times: ndarray::Array1<f64>,
    /// λ at those times (time × state).
    pub lambda: ndarray::Array2<f64>,
}

impl AdjointTrajectory {
    /// The table from recorded rows [t, λ(t)] (n + 1 values each).
    pub(crate) fn from_rows(rows: Vec<f64>, n: usize) -> Self {
        let count = rows.len() / (n + 1);
        let table = ndarray::Array2::from_shape_vec((count, n + 1), rows).expect("rows of n + 1");
        Self {
            times: table.column(0).to_owned(),
            lambda: table.slice(ndarray::s![.., 1..]).to_owned(),
        }
    }
}

/// The counters of `end` accumulated since `start` (a replaying integrator's work).
pub(crate) fn stats_since(start: &Statistics, end: &Statistics) -> Statistics {
    Statistics {
        accepted_steps: end.accepted_steps - start.accepted_steps,
        rejected_steps: end.rejected_steps - start.rejected_steps,
        rhs_evaluations: end.rhs_evaluations - start.rhs_evaluations,
        interpolation_rhs_evaluations: end.interpolation_rhs_evaluations
            - start.interpolation_rhs_evaluations,
        stability_limited_steps: end.stability_limited_steps - start.stability_limited_steps,
        jacobian_evaluations: end.jacobian_evaluations - start.jacobian_evaluations,
        factorizations: end.factorizations - start.factorizations,
        newton_iterations: end.newton_iterations - start.newton_iterations,
        linear_iterations: end.linear_iterations - start.linear_iterations,
        newton_failures: end.newton_failures - start.newton_failures,
        stiffness_detected_at: None,
        switched_to_implicit_at: None,
    }
}
