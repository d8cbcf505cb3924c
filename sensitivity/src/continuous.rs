//! The continuous adjoint: the adjoint ODE solved backwards in time with its own method and tolerances.
//!
//! With λ(t) = ∂G/∂u(t) (the course's v = −λ) and G = Σ_k g_k(t_k, u(t_k), p) + ∫ r(t, u, p) dt:
//!
//! λ' = −f_uᵀ λ − r_uᵀ,   q' = −f_pᵀ λ − r_pᵀ,   integrated from t_end down to t0,
//!
//! with λ(t_end) = q(t_end) = 0 and jumps λ += ∂g_k/∂u, q += ∂g_k/∂p at every observation time. Then
//! ∇_{u0}G = λ(t0) and ∇_pG = q(t0) = Σ_k ∂g_k/∂p + ∫ (f_pᵀλ + r_pᵀ) dt. (SUNDIALS CVODES and
//! SciMLSensitivity's `InterpolatingAdjoint` solve this system; Hindmarsh et al. 2005, Rackauckas et al.
//! 2020.)
//!
//! Unlike the discrete adjoint ([`crate::SensitivityAlgorithm::DiscreteAdjoint`]), this is the derivative of the *exact*
//! solution approximated by two solves, so it agrees with the discrete gradient only to the tolerances;
//! in exchange the backward solve picks its own steps. Two ways to know u(t) during it:
//!
//! - [`continuous_adjoint_gradient`] (interpolating): the forward solve stores a checkpoint every few
//!   steps; each segment is recomputed from its checkpoint with dense output just before the backward
//!   solve crosses it. Memory ∝ checkpoints + one segment.
//! - [`backsolve_adjoint_gradient`]: u is integrated backwards alongside λ from u(t_end), storing
//!   nothing. **Unstable for chaotic or dissipative systems**: the reversed flow amplifies errors like
//!   e^{λ_max (t_end − t)}, so the reconstructed u(t) leaves the true trajectory and the gradient with
//!   it. It is offered for comparison; the result reports how far u(t0) came back from u0.
//!
//! The quadrature q rides along but by default is left out of the backward solve's error norm (the
//! "seminorm" of Kidger, Chen & Lyons, "Hey, that's not an ODE", 2021): it is an integral of already
//! controlled quantities and, with many parameters, would otherwise dictate the steps.

use std::sync::Mutex;

use ndarray::{Array1, ArrayView1, ArrayViewMut1};
use odesens_solver::{
    DenseOutput, Integrator, Method, OdeProblem, OdeSystem, Scalar, SolverOptions, Statistics,
    Stepper,
};

use crate::ad::derivatives::Derivatives;
use crate::checkpointing::{Action, Checkpointing, Stack, revolve};
use crate::common::{
    Gradient, ObjectiveTracker, SensitivityStats, check_objective, derivative_options, forward_pass,
};
use crate::error::{SensitivityError, check_finite};
use crate::objective::Objective;
use crate::step_diff::{Capability, StepDiff, WithStepper, dispatch, require};

/// Settings of the backward solve.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContinuousSettings {
    /// Method of the backward solve (`None`: the forward one).
    pub method: Option<Method>,
    /// Relative tolerance of the backward solve (`None`: the forward one).
    pub rtol: Option<f64>,
    /// Absolute tolerance of the backward solve (`None`: the forward one's scalar atol, or 1e-6).
    pub atol: Option<f64>,
    /// Put the quadrature q (one component per parameter) in the error norm too (default: no, the
    /// seminorm).
    pub quadrature_in_error_norm: bool,
    /// Forward steps per segment (`None`: 32); every segment start is a tstop of the backward solve,
    /// and one segment's dense output is held at a time.
    pub segment_steps: Option<usize>,
    /// Which segment-start checkpoints to keep, as for the discrete adjoint: `KeepAll` (every segment),
    /// `Uniform { every }` (segments of `every` steps, all kept), `Binomial { snapshots }` or
    /// `MemoryBudget { bytes }` (Griewank–Walther reversal over the segments, recomputing from the
    /// snapshots).
    pub checkpointing: Checkpointing,
}

/// The backward solve's counters, beside the gradient.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct BackwardStats {
    /// The backward integrator's steps and rhs evaluations (one vjp each).
    pub backward: Statistics,
    /// Checkpointed segments.
    pub segments: usize,
}

/// Where the adjoint system gets u(t).
enum Source {
    /// Dense output of the current forward segment, recomputed from a checkpoint.
    Segment {
        dense: Option<DenseOutput>,
        u: Vec<f64>,
        scratch: Vec<f64>,
    },
    /// u is the first n components of the backward state.
    Backsolve,
}

struct Inner<'a, 'o, M: OdeSystem, O: Objective> {
    source: Source,
    der: Derivatives<'a, M>,
    tracker: ObjectiveTracker<'o, O>,
    p: Vec<f64>,
    u_bar: Vec<f64>,
    p_bar: Vec<f64>,
    running: bool,
    /// The first failure inside the rhs (reported after the step).
    error: Option<SensitivityError>,
}

/// The adjoint ODE as an [`OdeSystem`] for the solver: state [λ, q] (or [u, λ, q] for backsolve).
/// Evaluated in f64 only: for other scalar types the rhs passes values through and drops derivatives
/// (the backward system is never differentiated).
struct AdjointSystem<'a, 'o, M: OdeSystem, O: Objective> {
    n: usize,
    np: usize,
    backsolve: bool,
    model: &'a M,
    inner: Mutex<Inner<'a, 'o, M, O>>,
}

impl<'a, 'o, M: OdeSystem, O: Objective> AdjointSystem<'a, 'o, M, O> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<'a, 'o, M, O>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs a segment's dense output; returns the previous one (for reuse).
    fn set_dense(&self, new: Option<DenseOutput>) -> Option<DenseOutput> {
        let mut inner = self.lock();
        match &mut inner.source {
            Source::Segment { dense, scratch, .. } => {
                let need = new.as_ref().map_or(0, DenseOutput::scratch_len);
                scratch.resize(need, 0.0);
                std::mem::replace(dense, new)
            }
            Source::Backsolve => None,
        }
    }

    /// Observation jumps at t (the observations `obs[.. obs_left]` not yet added, the last ones first):
    /// λ += ∂g/∂u(u(t)), q += ∂g/∂p. Returns whether z changed.
    fn jump(
        &self,
        obs: &[f64],
        t: f64,
        z: &mut [f64],
        obs_left: &mut usize,
    ) -> Result<bool, SensitivityError> {
        let n = self.n;
        let offset = if self.backsolve { n } else { 0 };
        let mut jumped = false;
        while *obs_left > 0 && obs[*obs_left - 1] == t {
            let k = *obs_left - 1;
            let mut guard = self.lock();
            let inner = &mut *guard;
            let u: Vec<f64> = match &mut inner.source {
                Source::Segment { dense, u, scratch } => {
                    let dense = dense
                        .as_ref()
                        .ok_or(odesens_solver::SolverError::NoDenseOutput)?;
                    dense.interpolate_into(t, u, scratch)?;
                    u.clone()
                }
                Source::Backsolve => z[..n].to_vec(),
            };
            inner.tracker.observation_gradient(k, &u, &inner.p)?;
            for (l, g) in z[offset..offset + n].iter_mut().zip(&inner.tracker.g_u) {
                *l += g;
            }
            for (q, g) in z[offset + n..].iter_mut().zip(&inner.tracker.g_p) {
                *q += g;
            }
            *obs_left -= 1;
            jumped = true;
        }
        Ok(jumped)
    }

    fn eval(&self, t: f64, z: &[f64], dz: &mut [f64]) {
        let (n, np) = (self.n, self.np);
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let offset = if self.backsolve { n } else { 0 };
        let lambda = &z[offset..offset + n];
        let u: &[f64] = match &mut inner.source {
            Source::Segment { dense, u, scratch } => {
                let dense = dense
                    .as_ref()
                    .expect("a segment is installed before the backward solve");
                // The initial-step probe may look past the segment: clamp to it.
                let (a, b) = dense.span().expect("a replayed segment");
                let (lo, hi) = (a.min(b), a.max(b));
                if let Err(e) = dense.interpolate_into(t.clamp(lo, hi), u, scratch) {
                    inner.error.get_or_insert(e.into());
                }
                u
            }
            Source::Backsolve => {
                // u' = f(t, u, p).
                self.model.rhs(
                    t,
                    ArrayView1::from(&z[..n]),
                    ArrayView1::from(&inner.p[..]),
                    ArrayViewMut1::from(&mut dz[..n]),
                );
                &z[..n]
            }
        };
        inner.u_bar.iter_mut().for_each(|x| *x = 0.0);
        inner.p_bar.iter_mut().for_each(|x| *x = 0.0);
        inner
            .der
            .vjp_add(t, u, &inner.p, lambda, &mut inner.u_bar, &mut inner.p_bar);
        if inner.running {
            match inner.tracker.running_gradient(t, u, &inner.p) {
                Ok(_) => {
                    for (a, g) in inner.u_bar.iter_mut().zip(&inner.tracker.g_u) {
                        *a += g;
                    }
                    for (a, g) in inner.p_bar.iter_mut().zip(&inner.tracker.g_p) {
                        *a += g;
                    }
                }
                Err(e) => {
                    inner.error.get_or_insert(e);
                }
            }
        }
        for (d, a) in dz[offset..offset + n].iter_mut().zip(&inner.u_bar) {
            *d = -a;
        }
        for (d, a) in dz[offset + n..offset + n + np].iter_mut().zip(&inner.p_bar) {
            *d = -a;
        }
    }
}

impl<M: OdeSystem, O: Objective> OdeSystem for AdjointSystem<'_, '_, M, O> {
    fn n_states(&self) -> usize {
        if self.backsolve {
            2 * self.n + self.np
        } else {
            self.n + self.np
        }
    }
    fn n_params(&self) -> usize {
        0
    }
    fn rhs<S: Scalar>(&self, t: S, z: ArrayView1<S>, _p: ArrayView1<S>, mut dz: ArrayViewMut1<S>) {
        let zf: Vec<f64> = z.iter().map(|x| x.re()).collect();
        let mut df = vec![0.0; zf.len()];
        self.eval(t.re(), &zf, &mut df);
        for (d, v) in dz.iter_mut().zip(df) {
            *d = S::from(v);
        }
    }
}

/// The backward options: method, tolerances, tstops, error norm.
fn backward_options(
    options: &SolverOptions,
    settings: &ContinuousSettings,
    tstops: Vec<f64>,
    controlled: usize,
    total: usize,
) -> SolverOptions {
    let atol = settings.atol.unwrap_or(match &options.atol {
        odesens_solver::Atol::Scalar(a) => *a,
        odesens_solver::Atol::PerComponent(_) => 1e-6,
    });
    let mut o = SolverOptions::default()
        .method(settings.method.unwrap_or(options.method))
        .rtol(settings.rtol.unwrap_or(options.rtol))
        .atol(atol)
        .tstops(tstops)
        .save_end_only()
        .max_steps(options.max_steps);
    o.controller = options.controller;
    if !settings.quadrature_in_error_norm && controlled < total {
        o = o.error_norm_components(controlled);
    }
    o
}

/// The gradient of `objective` by the continuous adjoint (the driver behind
/// [`crate::SensitivityAlgorithm::InterpolatingAdjoint`] and, with `backsolve`,
/// [`crate::SensitivityAlgorithm::BacksolveAdjoint`]).
///
/// Interpolating: one forward solve storing a checkpoint every `segment_steps` steps, then the adjoint
/// ODE backwards with `settings`' method and tolerances, each forward segment recomputed with dense
/// output when the backward solve reaches it. Backsolve: u is integrated backwards with λ from
/// u(t_end) and nothing is stored — **unreliable for chaotic or strongly dissipative systems** (see the
/// module docs); [`Gradient::u0_reconstructed`] shows how far the reversed solve drifted.
///
/// # Errors
/// Solver errors of either solve; objective errors; [`SensitivityError::InvalidSetting`] for
/// `segment_steps` = 0; [`SensitivityError::NonFiniteDerivative`] if λ or q becomes NaN/∞;
/// [`SensitivityError::UnsupportedMethod`] for an implicit backward method (not yet; the forward solve may be
/// implicit).
pub(crate) fn continuous_gradient<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    settings: ContinuousSettings,
    backsolve: bool,
) -> Result<Gradient, SensitivityError> {
    run(problem, options, objective, settings, backsolve)
}

/// The backward solve in progress: its integrator, the observations still to add, the state buffer.
struct Backward<'s, 'b, 'a, 'o, M: OdeSystem, O: Objective> {
    /// Built at the first `run_to`, once the last segment's dense output is installed (the integrator
    /// evaluates the rhs when it starts).
    back: Option<Integrator<'b, AdjointSystem<'a, 'o, M, O>>>,
    problem: &'b OdeProblem<AdjointSystem<'a, 'o, M, O>>,
    options: &'s SolverOptions,
    system: &'s AdjointSystem<'a, 'o, M, O>,
    obs: &'o [f64],
    obs_left: usize,
    z: Vec<f64>,
    t0: f64,
    t_end: f64,
}

impl<M: OdeSystem, O: Objective> Backward<'_, '_, '_, '_, M, O> {
    /// Integrates backwards down to `t_stop` (a tstop), adding observation jumps on the way; the first
    /// call first adds the observations at t_end.
    fn run_to(&mut self, t_stop: f64) -> Result<(), SensitivityError> {
        if self.back.is_none() {
            let mut back = Integrator::new(self.problem, self.options)?;
            self.z.copy_from_slice(back.u());
            if self
                .system
                .jump(self.obs, self.t_end, &mut self.z, &mut self.obs_left)?
            {
                back.set_state(&self.z)?;
            }
            self.back = Some(back);
        }
        let back = self.back.as_mut().expect("built above");
        let offset = if self.system.backsolve {
            self.system.n
        } else {
            0
        };
        while !back.is_finished() && back.t() != t_stop {
            back.step()?;
            if let Some(e) = self.system.lock().error.take() {
                return Err(e);
            }
            let t = back.t();
            check_finite("adjoint λ", t, &back.u()[offset..])?;
            if back.accepted_step().is_none() || t == self.t0 {
                continue;
            }
            self.z.copy_from_slice(back.u());
            if self
                .system
                .jump(self.obs, t, &mut self.z, &mut self.obs_left)?
            {
                back.set_state(&self.z)?;
            }
        }
        Ok(())
    }
}

/// The forward segment of `len` steps from the replay's current point, with dense output, installed in
/// the adjoint system.
fn load_segment<S: Stepper, M: OdeSystem, O: Objective>(
    replay: &mut S,
    system: &AdjointSystem<'_, '_, M, O>,
    spare: &mut Option<DenseOutput>,
    len: usize,
) -> Result<(), SensitivityError> {
    let mut dense = spare.take().unwrap_or_else(|| replay.new_dense_output());
    dense.clear();
    for _ in 0..len {
        replay.step_accepted()?;
        replay.push_dense(&mut dense)?;
    }
    *spare = system.set_dense(Some(dense));
    Ok(())
}

fn run<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    settings: ContinuousSettings,
    backsolve: bool,
) -> Result<Gradient, SensitivityError> {
    check_objective(problem, objective)?;
    if settings.segment_steps == Some(0) {
        return Err(SensitivityError::InvalidSetting {
            name: "ContinuousSettings.segment_steps",
            value: 0.0,
            valid: ">= 1",
        });
    }
    // The forward segments replay with any stepper; the backward solve is explicit for now.
    require(
        settings.method.unwrap_or(options.method),
        Capability::ContinuousAdjoint,
    )?;
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    dispatch(
        opts.method,
        Job {
            problem,
            options,
            opts: &opts,
            objective,
            settings,
            backsolve,
        },
    )
}

/// The continuous adjoint, written once over the forward stepper.
struct Job<'a, 'j, M: OdeSystem, O: Objective> {
    problem: &'a OdeProblem<M>,
    /// The user's options (tolerances and tstops of the backward solve) and the derivative options of
    /// the forward solve.
    options: &'j SolverOptions,
    opts: &'j SolverOptions,
    objective: &'j O,
    settings: ContinuousSettings,
    backsolve: bool,
}

impl<'a, M: OdeSystem, O: Objective> WithStepper<'a, M> for Job<'a, '_, M, O> {
    type Out = Result<Gradient, SensitivityError>;

    fn run<S: StepDiff<'a, M>>(self) -> Self::Out {
        let Job {
            problem,
            options,
            opts,
            objective,
            settings,
            backsolve,
        } = self;
        continuous::<S, M, O>(problem, (options, opts), objective, settings, backsolve)
    }
}

/// The continuous adjoint with forward stepper `S` (see [`continuous_gradient`]).
fn continuous<'a, S: StepDiff<'a, M>, M: OdeSystem, O: Objective>(
    problem: &'a OdeProblem<M>,
    (options, opts): (&SolverOptions, &SolverOptions),
    objective: &O,
    settings: ContinuousSettings,
    backsolve: bool,
) -> Result<Gradient, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    let (t0, t_end) = (problem.t0(), problem.t_end());
    let p = problem.params().to_vec();
    let u0 = problem.u0().to_vec();

    // Segments of `seg` forward steps; which of their starting checkpoints the forward pass keeps.
    let mut forward = S::start(problem, opts)?;
    let initial = forward.checkpoint();
    let cp_bytes = S::checkpoint_bytes(&initial);
    let snapshots = settings.checkpointing.snapshots(cp_bytes)?;
    let (seg, keep_all) = match settings.checkpointing {
        Checkpointing::Uniform { every } => (every, true),
        Checkpointing::KeepAll => (settings.segment_steps.unwrap_or(32), true),
        Checkpointing::Binomial { .. } | Checkpointing::MemoryBudget { .. } => {
            (settings.segment_steps.unwrap_or(32), false)
        }
    };
    let mut stored: Vec<S::Checkpoint> = Vec::new();
    let mut starts: Vec<f64> = Vec::new();
    let (value, steps) = forward_pass(&mut forward, objective, &p, (t0, &u0), |integ, k| {
        if !backsolve && k.is_multiple_of(seg) {
            starts.push(integ.t());
            if keep_all {
                stored.push(integ.checkpoint());
            }
        }
    })?;
    let u_end = forward.u().to_vec();
    let forward_stats = forward.stats();
    let units = starts.len();

    // Backward system and its options: tstops at observations, segment starts and the user's tstops
    // (discontinuities of the model, which the backward solve must not step across either).
    let obs = objective.observation_times();
    let mut stops: Vec<f64> = obs.to_vec();
    stops.extend(starts.iter().copied());
    stops.extend(options.tstops.iter().copied());
    stops.retain(|&t| t != t0 && t != t_end);
    let back_dir = (t0 - t_end).signum();
    stops.sort_by(|a, b| (back_dir * a).total_cmp(&(back_dir * b)));
    stops.dedup();
    let controlled = if backsolve { 2 * n } else { n };
    let total = controlled + np;
    let bopts = backward_options(options, &settings, stops, controlled, total);

    let source = if backsolve {
        Source::Backsolve
    } else {
        Source::Segment {
            dense: None,
            u: vec![0.0; n],
            scratch: Vec::new(),
        }
    };
    let system = AdjointSystem {
        n,
        np,
        backsolve,
        model: problem.model(),
        inner: Mutex::new(Inner {
            source,
            der: Derivatives::new(problem.model()),
            tracker: ObjectiveTracker::new(objective, n, np),
            p: p.clone(),
            u_bar: vec![0.0; n],
            p_bar: vec![0.0; np],
            running: objective.has_running_cost(),
            error: None,
        }),
    };
    let mut z = vec![0.0; total];
    if backsolve {
        z[..n].copy_from_slice(&u_end);
    }
    let back_problem = OdeProblem::new(system, z.clone(), Vec::<f64>::new(), (t_end, t0))?;
    let system = back_problem.model();
    let mut bw = Backward {
        back: None,
        problem: &back_problem,
        options: &bopts,
        system,
        obs,
        obs_left: obs.len(),
        z,
        t0,
        t_end,
    };

    let mut recomputation = Statistics::default();
    let mut peak_snapshots = 0;
    let mut recomputed_steps = 0;
    if backsolve {
        bw.run_to(t0)?;
    } else {
        let mut replay = S::start(problem, opts)?;
        let mut spare: Option<DenseOutput> = None;
        let len = |j: usize| (steps - j * seg).min(seg);
        if keep_all {
            for j in (0..units).rev() {
                replay.restore(&stored[j])?;
                load_segment(&mut replay, system, &mut spare, len(j))?;
                bw.run_to(starts[j])?;
            }
            peak_snapshots = stored.len();
        } else {
            // Binomial reversal over the segments.
            let mut st = Stack::new(initial, snapshots);
            revolve(units, snapshots.min(units.max(1)), |action| match action {
                Action::Reverse { slot, advance } => {
                    replay.restore(&st.items[slot])?;
                    for _ in 0..advance * seg {
                        replay.step_accepted()?;
                    }
                    recomputed_steps += advance * seg;
                    // The unit reversed: slot's unit + advance.
                    let j = unit_of(&starts, replay.t());
                    load_segment(&mut replay, system, &mut spare, len(j))?;
                    bw.run_to(starts[j])
                }
                Action::Store { slot, advance } => {
                    replay.restore(&st.items[slot])?;
                    for _ in 0..advance * seg {
                        replay.step_accepted()?;
                    }
                    recomputed_steps += advance * seg;
                    st.push(&replay);
                    Ok(())
                }
                Action::Release => {
                    st.pop();
                    Ok(())
                }
            })?;
            peak_snapshots = st.peak;
        }
        bw.run_to(t0)?;
        recomputation = replay.stats();
    }
    let back = bw.back.take().expect("the backward solve ran");
    let mut z = std::mem::take(&mut bw.z);
    z.copy_from_slice(back.u());
    let mut obs_left = bw.obs_left;
    system.jump(obs, t0, &mut z, &mut obs_left)?;
    let backward = back.stats();
    let inner = system.lock();
    let offset = if backsolve { n } else { 0 };
    let stats = SensitivityStats {
        forward: forward_stats,
        recomputation,
        recomputed_steps,
        peak_snapshots,
        peak_checkpoint_bytes: peak_snapshots * cp_bytes,
        derivatives: inner.der.counts,
        exact_stage_factorizations: 0,
        krylov_stage_solves: 0,
    };
    Ok(Gradient {
        value,
        wrt_params: Array1::from(z[offset + n..].to_vec()),
        wrt_u0: Array1::from(z[offset..offset + n].to_vec()),
        stats,
        adjoint: None,
        backward: Some(BackwardStats {
            backward,
            segments: units,
        }),
        u0_reconstructed: backsolve.then(|| Array1::from(z[..n].to_vec())),
    })
}

/// The index of the segment starting at t.
fn unit_of(starts: &[f64], t: f64) -> usize {
    starts
        .iter()
        .position(|&s| s == t)
        .expect("segments start at step boundaries the replay reaches exactly")
}
