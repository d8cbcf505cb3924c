//! The explicit Runge–Kutta integrator: step control, tstops, statistics, errors, and the continuous
//! extension of the last accepted step ([`kernels`]: the step itself; [`replay`]: steps replayed from
//! checkpoints). Saving and dense output are the driver's ([`crate::solve`]).
//!
//! [`Integrator`] owns every buffer of a solve; they are allocated in [`Integrator::new`] and the step
//! loop allocates nothing.

mod kernels;
mod replay;

pub use replay::StepReplay;

use kernels::{combine, eval, main_stages, rms_scaled, sparse, stage_input};

use crate::control::{Controller, ControllerMemory, StepController, StepFeedback};
use crate::error::SolverError;
use crate::options::{Saving, SolverOptions};
use crate::problem::{OdeProblem, check_times};
use crate::schedule::{Attempt, Landing, Refusal, Schedule};
use crate::solution::{DenseOutput, Statistics};
use crate::system::OdeSystem;
use crate::tableau::{ExplicitTableau, Method};

/// What [`Integrator::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// A step was accepted; the integration goes on.
    Accepted,
    /// A step was rejected and will be retried with a smaller h.
    Rejected,
    /// A step was accepted and reached t_end.
    Finished,
}

/// A step attempt computed by [`Integrator::propose`]: its stages, and the tolerances with which the
/// caller should scale error terms of its own.
#[derive(Debug, Clone, Copy)]
pub struct ProposedStep<'b> {
    /// The attempt's times, states and stage inputs (u_next is the proposed u_{n+1}).
    pub step: AcceptedStep<'b>,
    /// Absolute tolerances per state component.
    pub atol: &'b [f64],
    /// Relative tolerance.
    pub rtol: f64,
}

/// The state of an [`Integrator`] between steps, from which the solve can be replayed bit for bit
/// ([`Integrator::checkpoint_into`], [`Integrator::restore`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    /// Time.
    pub t: f64,
    /// State u(t).
    pub u: Vec<f64>,
    /// f(t, u) when the integrator had it (FSAL methods), else empty.
    pub k1: Vec<f64>,
    /// Magnitude of the next step to try.
    pub h_abs: f64,
    /// The step-size controller's memory.
    pub controller: ControllerMemory,
    /// Whether the last attempted step was rejected.
    pub last_rejected: bool,
    /// Index of the next tstop.
    pub next_tstop: usize,
    /// Steps attempted so far.
    pub steps_taken: usize,
    /// Whether t_end was reached.
    pub finished: bool,
}

impl Checkpoint {
    /// Bytes the checkpoint occupies: the struct itself and the capacity of its vectors (state,
    /// first stage).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + (self.u.capacity() + self.k1.capacity()) * std::mem::size_of::<f64>()
    }
}

/// The step just accepted by [`Integrator::step`]: what forward sensitivities need.
#[derive(Debug, Clone, Copy)]
pub struct AcceptedStep<'b> {
    /// Start time t_n.
    pub t: f64,
    /// Signed step size h_n (t_{n+1} = `t_next`).
    pub h: f64,
    /// End time t_{n+1}.
    pub t_next: f64,
    /// u_n.
    pub u: &'b [f64],
    /// u_{n+1}.
    pub u_next: &'b [f64],
    tab: &'static ExplicitTableau,
    ys: &'b [f64],
}

impl AcceptedStep<'_> {
    /// The time t_n + c_i h of stage i (t_{n+1} exactly for c_i = 1, as the integrator steps there).
    pub fn stage_time(&self, i: usize) -> f64 {
        let c = self.tab.c[i];
        if c == 1.0 {
            self.t_next
        } else {
            self.t + c * self.h
        }
    }

    /// Stage input Y_i (Y_1 = u_n; for FSAL methods Y_s = u_{n+1}).
    pub fn stage_input(&self, i: usize) -> &[f64] {
        stage_input(self.tab, self.u.len(), i, self.u, self.u_next, self.ys)
    }

    /// The method's tableau.
    pub fn tableau(&self) -> &'static ExplicitTableau {
        self.tab
    }
}

/// A running solve, advanced one step at a time by [`Integrator::step`] (or to the end by
/// [`Integrator::run`]).
pub struct Integrator<'a, M: OdeSystem> {
    problem: &'a OdeProblem<M>,
    tab: &'static ExplicitTableau,
    options: SolverOptions,
    n: usize,
    atol: Vec<f64>,
    /// The step-size controller (resolved) and k = embedded order + 1.
    controller: Controller,
    k_err: f64,
    /// Nonzero weights b_i and b̃_i as sparse rows.
    b_row: Vec<(usize, f64)>,
    btilde_row: Vec<(usize, f64)>,
    /// Zeros, the base of the error sum.
    zeros: Vec<f64>,
    // State.
    t: f64,
    /// Magnitude of the next step to try.
    h_abs: f64,
    u: Vec<f64>,
    u_new: Vec<f64>,
    /// Stages, `total_stages × n`.
    k: Vec<f64>,
    /// Stage inputs Y_i of the main stages, `stages × n`.
    ys: Vec<f64>,
    /// Scratch stage input (initial step, extra stages, interpolation).
    y: Vec<f64>,
    /// t_n and h of the last accepted step, if the last step was accepted.
    last_accepted: Option<(f64, f64)>,
    /// The step proposed by `propose`, awaiting `decide`.
    pending: Option<Attempt>,
    /// tstops, `max_steps` and non-finite retries (positions restored with checkpoints).
    schedule: Schedule,
    /// (h, t_new) of the last attempt, if it was rejected for NaN/∞ (its stages are still in `k`).
    non_finite_attempt: Option<(f64, f64)>,
    /// Components in the error norm (the first `norm_n`).
    norm_n: usize,
    /// 0.95 × the method's real stability boundary, and which of the last 20 accepted steps were
    /// stability-limited (one bit each).
    stiff_threshold: f64,
    stiff_window: u32,
    err: Vec<f64>,
    scale: Vec<f64>,
    weights: Vec<f64>,
    /// The controller's memory.
    memory: ControllerMemory,
    /// Whether k[0] holds f(t, u) (after the pending copy below).
    k1_fresh: bool,
    /// The stage slot whose value f(t_{n+1}, u_{n+1}) becomes k[0] before the next step (FSAL, or an
    /// interpolation stage at the end point): copied lazily, so that the last step's stages stay intact
    /// for its continuous extension until then.
    k1_from: Option<usize>,
    extras_fresh: bool,
    last_rejected: bool,
    stats: Statistics,
}

impl<'a, M: OdeSystem> Integrator<'a, M> {
    /// Validates the settings, allocates all buffers, evaluates f(t0, u0) and picks the first step.
    ///
    /// # Errors
    /// As [`crate::solve`].
    pub fn new(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        if options.method.is_implicit() || options.method == Method::AutoTsit5Radau5 {
            return Err(SolverError::UnsupportedMethod {
                method: options.method,
                operation: "the explicit step API (Integrator); use ImplicitIntegrator or solve()",
            });
        }
        let n = problem.n_states();
        let atol = options.validated_atol(n)?;
        let (t0, t_end) = (problem.t0(), problem.t_end());
        let schedule = Schedule::new(options, (t0, t_end), Landing::Stretch)?;
        if let Saving::At(times) = &options.saving {
            check_times("save_at", times, t0, t_end, true)?;
        }
        let tab = options.method.tableau();
        let total = tab.total_stages();
        let k_err = f64::from(tab.embedded_order + 1);
        let controller = options.controller.resolve(false);
        let u0 = problem
            .u0()
            .as_slice()
            .map(<[f64]>::to_vec)
            .unwrap_or_else(|| problem.u0().to_vec());

        let mut integrator = Self {
            problem,
            tab,
            options: options.clone(),
            n,
            atol,
            controller,
            k_err,
            b_row: sparse(tab.b),
            btilde_row: sparse(tab.btilde),
            zeros: vec![0.0; n],
            t: t0,
            h_abs: 0.0,
            u: u0.clone(),
            u_new: u0,
            k: vec![0.0; total * n],
            ys: vec![0.0; tab.stages * n],
            y: vec![0.0; n],
            last_accepted: None,
            pending: None,
            schedule,
            non_finite_attempt: None,
            norm_n: options.error_norm_components.unwrap_or(n),
            stiff_threshold: 0.95 * options.method.stability_boundary(),
            stiff_window: 0,
            err: vec![0.0; n],
            scale: vec![0.0; n],
            weights: vec![0.0; total],
            memory: controller.initial_memory(k_err),
            k1_fresh: false,
            k1_from: None,
            extras_fresh: false,
            last_rejected: false,
            stats: Statistics::default(),
        };
        integrator.eval_stage(0, t0, Source::U);
        if let Some(e) = integrator.non_finite_stage(0..1, (t0, 0.0, t0)) {
            return Err(e);
        }
        integrator.k1_fresh = true;
        integrator.h_abs = match (integrator.options.fixed_step, integrator.options.h0) {
            (Some(h), _) => h,
            (None, Some(h0)) => h0,
            (None, None) => integrator.initial_step()?,
        }
        .min(integrator.options.h_max);
        Ok(integrator)
    }

    /// Current time.
    pub fn t(&self) -> f64 {
        self.t
    }

    /// Current state.
    pub fn u(&self) -> &[f64] {
        &self.u
    }

    /// Magnitude of the next step to try.
    pub fn next_step_size(&self) -> f64 {
        self.h_abs
    }

    /// Counters so far.
    pub fn stats(&self) -> Statistics {
        self.stats
    }

    /// Whether t_end has been reached.
    pub fn is_finished(&self) -> bool {
        self.schedule.is_finished()
    }

    /// The step just accepted (after [`Integrator::step`] returned `Accepted` or `Finished`): t_n, h,
    /// u_n, u_{n+1} and the stage inputs, as forward sensitivities need them. `None` after a rejection.
    pub fn accepted_step(&self) -> Option<AcceptedStep<'_>> {
        // After acceptance `u` holds u_{n+1} and `u_new` holds u_n (the buffers were swapped).
        self.last_accepted.map(|(t, h)| AcceptedStep {
            t,
            h,
            t_next: self.t,
            u: &self.u_new,
            u_next: &self.u,
            tab: self.tab,
            ys: &self.ys,
        })
    }

    /// The solver options in use.
    pub fn options(&self) -> &SolverOptions {
        &self.options
    }

    /// Writes into `cp` everything needed to replay the solve from the current point bit for bit: t, u,
    /// the first stage f(t, u) when it is known (FSAL), the next step size and the controller's state.
    /// Reuses `cp`'s buffers (no allocation once they have the right size).
    pub fn checkpoint_into(&self, cp: &mut Checkpoint) {
        cp.t = self.t;
        cp.u.clear();
        cp.u.extend_from_slice(&self.u);
        cp.k1.clear();
        if self.k1_fresh {
            let slot = self.k1_from.unwrap_or(0);
            cp.k1
                .extend_from_slice(&self.k[slot * self.n..(slot + 1) * self.n]);
        }
        cp.h_abs = self.h_abs;
        cp.controller = self.memory;
        cp.last_rejected = self.last_rejected;
        (cp.next_tstop, cp.steps_taken) = self.schedule.position();
        cp.finished = self.schedule.is_finished();
    }

    /// A new [`Checkpoint`] of the current point.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut cp = Checkpoint::default();
        self.checkpoint_into(&mut cp);
        cp
    }

    /// Resumes from a checkpoint taken by an integrator of the same problem and options: the steps it
    /// takes from then on are bit for bit those of the original solve. Statistics keep accumulating, so
    /// they count the recomputation.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] if the checkpoint's state has the wrong length.
    pub fn restore(&mut self, cp: &Checkpoint) -> Result<(), SolverError> {
        let n = self.n;
        if cp.u.len() != n || !(cp.k1.is_empty() || cp.k1.len() == n) {
            return Err(SolverError::DimensionMismatch {
                what: "checkpoint state",
                expected: n,
                got: cp.u.len(),
            });
        }
        self.t = cp.t;
        self.u.copy_from_slice(&cp.u);
        self.k1_fresh = !cp.k1.is_empty();
        self.k1_from = None;
        if self.k1_fresh {
            self.k[..n].copy_from_slice(&cp.k1);
        }
        self.h_abs = cp.h_abs;
        self.memory = cp.controller;
        self.last_rejected = cp.last_rejected;
        self.schedule.restore((cp.next_tstop, cp.steps_taken));
        self.last_accepted = None;
        self.pending = None;
        self.extras_fresh = false;
        self.non_finite_attempt = None;
        Ok(())
    }

    /// Takes steps until one is accepted; returns it (rejections in between are part of the replay).
    ///
    /// # Errors
    /// As [`Integrator::step`].
    pub fn step_accepted(&mut self) -> Result<AcceptedStep<'_>, SolverError> {
        loop {
            if self.step()? != StepOutcome::Rejected {
                break;
            }
        }
        Ok(self.accepted_step().expect("the last step was accepted"))
    }

    /// Replaces the current state u by `u` (e.g. a jump at an event), keeping t, the step size and the
    /// controller's state; the first stage is recomputed at the next step.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a wrong length, [`SolverError::NonFiniteInput`] for NaN/∞.
    pub fn set_state(&mut self, u: &[f64]) -> Result<(), SolverError> {
        if u.len() != self.n {
            return Err(SolverError::DimensionMismatch {
                what: "state",
                expected: self.n,
                got: u.len(),
            });
        }
        crate::problem::check_finite("state", u)?;
        self.u.copy_from_slice(u);
        self.k1_fresh = false;
        self.k1_from = None;
        self.extras_fresh = false;
        self.last_accepted = None;
        self.pending = None;
        self.non_finite_attempt = None;
        Ok(())
    }

    /// Moves to `t` inside (or at the end of) the step just accepted with state `u` (an event after its
    /// jump): the tstops after t are ahead again; the next step starts afresh from (t, u) with the step
    /// size the controller proposed.
    ///
    /// # Errors
    /// As [`Integrator::set_state`]; [`SolverError::NonFiniteInput`] for a non-finite t.
    pub fn restart_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        crate::problem::check_finite("restart time", &[t])?;
        self.set_state(u)?;
        self.t = t;
        self.schedule.rewind(t);
        Ok(())
    }

    /// Steps until t_end.
    ///
    /// # Errors
    /// As [`crate::solve`].
    pub fn run(&mut self) -> Result<(), SolverError> {
        while !self.is_finished() {
            self.step()?;
        }
        Ok(())
    }

    /// Evaluates stage `i`: K_i = f(t, x) with x = u or y.
    ///
    /// No finiteness test here (it would cost a pass over K_i per stage): a NaN or ∞ anywhere reaches the
    /// error norm or u_{n+1}, which are tested once per step, and [`Self::non_finite_stage`] then finds it.
    #[inline]
    fn eval_stage(&mut self, i: usize, t: f64, source: Source) {
        let n = self.n;
        let x: &[f64] = match source {
            Source::U => &self.u,
            Source::Y => &self.y,
        };
        eval(
            self.problem.model(),
            self.problem.params().view(),
            t,
            x,
            &mut self.k[i * n..(i + 1) * n],
        );
        self.stats.rhs_evaluations += 1;
    }

    /// The error for the first non-finite value among stages `stages` of the step (t_n, h, t_new)
    /// (evaluated at `t_n + c_i h`, or at `t_new` for c_i = 1), if any.
    fn non_finite_stage(
        &self,
        stages: std::ops::Range<usize>,
        (t_n, h, t_new): (f64, f64, f64),
    ) -> Option<SolverError> {
        let n = self.n;
        for i in stages {
            let k = &self.k[i * n..(i + 1) * n];
            if let Some(component) = k.iter().position(|v| !v.is_finite()) {
                let c = self.tab.c[i];
                let t = if c == 1.0 { t_new } else { t_n + c * h };
                return Some(SolverError::NonFiniteRhs {
                    t,
                    component,
                    value: k[component],
                });
            }
        }
        None
    }

    /// The error for a step whose error norm or new state is not finite: the first non-finite stage, or
    /// else the first non-finite component of u_{n+1} (an overflow in the stage sums).
    fn non_finite_error(&self, h: f64, t_new: f64) -> SolverError {
        self.non_finite_stage(0..self.tab.stages, (self.t, h, t_new))
            .unwrap_or_else(|| {
                let component = self.u_new.iter().position(|v| !v.is_finite()).unwrap_or(0);
                SolverError::NonFiniteRhs {
                    t: t_new,
                    component,
                    value: self.u_new[component],
                }
            })
    }

    /// Hairer's starting step size (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4, algorithm on p. 169):
    /// h0 = 0.01 ‖u0‖/‖f0‖, one explicit Euler step to estimate ‖f'‖, h1 = (0.01 / max(‖f0‖, ‖f'‖))^{1/(p+1)},
    /// h = min(100 h0, h1). Uses stage slot 1 as scratch; costs one rhs evaluation.
    fn initial_step(&mut self) -> Result<f64, SolverError> {
        let (n, dir) = (self.n, self.schedule.dir());
        for i in 0..n {
            self.scale[i] = self.atol[i] + self.options.rtol * self.u[i].abs();
        }
        let k = self.norm_n;
        let d0 = rms_scaled(&self.u[..k], &self.scale[..k]);
        let d1 = rms_scaled(&self.k[..k], &self.scale[..k]);
        let span = (self.problem.t_end() - self.t).abs();
        let mut h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        };
        h0 = h0.min(span).min(self.options.h_max);
        for i in 0..n {
            self.y[i] = self.u[i] + dir * h0 * self.k[i];
        }
        self.eval_stage(1, self.t + dir * h0, Source::Y);
        if let Some(component) = self.k[n..2 * n].iter().position(|v| !v.is_finite()) {
            let t = self.t + dir * h0;
            return Err(SolverError::NonFiniteRhs {
                t,
                component,
                value: self.k[n + component],
            });
        }
        for i in 0..n {
            self.err[i] = self.k[n + i] - self.k[i];
        }
        let d2 = rms_scaled(&self.err[..k], &self.scale[..k]) / h0;
        let dmax = d1.max(d2);
        let h1 = if dmax <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / dmax).powf(1.0 / f64::from(self.tab.order + 1))
        };
        Ok((100.0 * h0).min(h1).min(span))
    }

    /// The last accepted step's (t_n, h), unless another step has been attempted since.
    fn last_step(&self, call: &'static str) -> Result<(f64, f64), SolverError> {
        match (self.last_accepted, self.pending) {
            (Some(step), None) => Ok(step),
            _ => Err(SolverError::Misuse {
                call,
                expected: "called after a step was accepted and before the next attempt",
            }),
        }
    }

    /// Evaluates the extra stages of the continuous extension of the step just accepted (t_n, h), once.
    /// The integrator has advanced: `u_new` holds u_n, `u` holds u_{n+1} and t = t_{n+1}.
    fn ensure_extras(&mut self, (t_n, h): (f64, f64)) -> Result<(), SolverError> {
        if self.extras_fresh || !self.tab.has_extra_stages() {
            return Ok(());
        }
        let (n, t_new) = (self.n, self.t);
        for i in self.tab.stages..self.tab.total_stages() {
            if Some(i) == self.tab.end_stage {
                self.eval_stage(i, t_new, Source::U);
            } else {
                combine(&mut self.y, &self.u_new, h, self.tab.a[i], &self.k, n);
                self.eval_stage(i, t_n + self.tab.c[i] * h, Source::Y);
            }
            self.stats.interpolation_rhs_evaluations += 1;
        }
        let extras = self.tab.stages..self.tab.total_stages();
        if let Some(e) = self.non_finite_stage(extras, (t_n, h, t_new)) {
            return Err(e);
        }
        self.extras_fresh = true;
        if let (false, Some(e)) = (self.k1_fresh, self.tab.end_stage) {
            // The end-point stage is f(t_{n+1}, u_{n+1}): the next step's first stage for free.
            self.k1_from = Some(e);
            self.k1_fresh = true;
        }
        Ok(())
    }

    /// u at `t` in [t_n, t_{n+1}] of the step just accepted, by the method's continuous extension
    /// (u_{n+1} itself at t_{n+1}); evaluates the extra stages of the Verner pairs once per step.
    ///
    /// # Errors
    /// [`SolverError::Misuse`] unless a step was just accepted; [`SolverError::NonFiniteRhs`] from an
    /// extra stage.
    pub fn interpolate(&mut self, t: f64, out: &mut [f64]) -> Result<(), SolverError> {
        let (t_n, h) = self.last_step("Integrator::interpolate")?;
        if t == self.t {
            out.copy_from_slice(&self.u);
            return Ok(());
        }
        self.ensure_extras((t_n, h))?;
        let theta = (t - t_n) / h;
        self.tab.dense_weights(theta, &mut self.weights);
        let n = self.n;
        out.copy_from_slice(&self.u_new);
        for (i, &w) in self.weights.iter().enumerate() {
            if w != 0.0 {
                let hw = h * w;
                for (o, &kv) in out.iter_mut().zip(&self.k[i * n..(i + 1) * n]) {
                    *o += hw * kv;
                }
            }
        }
        Ok(())
    }

    /// The inputs Y_j of the continuous extension's extra stages of the step just accepted (the Verner
    /// pairs': rows j = stages … total_stages − 1 of the tableau, Y_j = u_n + h Σ_l a_jl K_l, or u_{n+1}
    /// for the end-point stage), into `out` ((total − stages) × n), evaluating those stages first if
    /// needed. Derivative code differentiates the interpolant through them.
    ///
    /// # Errors
    /// As [`Integrator::interpolate`].
    pub fn extra_stage_inputs(&mut self, out: &mut [f64]) -> Result<(), SolverError> {
        let (t_n, h) = self.last_step("Integrator::extra_stage_inputs")?;
        self.ensure_extras((t_n, h))?;
        let n = self.n;
        for (r, i) in (self.tab.stages..self.tab.total_stages()).enumerate() {
            let row = &mut out[r * n..(r + 1) * n];
            if Some(i) == self.tab.end_stage {
                row.copy_from_slice(&self.u);
            } else {
                combine(row, &self.u_new, h, self.tab.a[i], &self.k, n);
            }
        }
        Ok(())
    }

    /// Appends the step just accepted to `dense` (made by [`Integrator::new_dense_output`]).
    ///
    /// # Errors
    /// As [`Integrator::interpolate`].
    pub fn push_dense(&mut self, dense: &mut DenseOutput) -> Result<(), SolverError> {
        let (t_n, h) = self.last_step("Integrator::push_dense")?;
        self.ensure_extras((t_n, h))?;
        dense.push(t_n, h, &self.u_new, &self.k);
        Ok(())
    }

    /// An empty dense output for this method's steps.
    pub fn new_dense_output(&self) -> DenseOutput {
        DenseOutput::new(self.tab, self.n)
    }

    /// Computes the step's main stages and u_new for a step of signed size `h` ending at `t_new`.
    #[inline]
    fn compute_stages(&mut self, h: f64, t_new: f64) {
        let evaluations = main_stages(
            self.tab,
            &self.b_row,
            self.problem.model(),
            self.problem.params().view(),
            (self.t, h, t_new),
            &self.u,
            &mut self.u_new,
            &mut self.k,
            &mut self.ys,
        );
        self.stats.rhs_evaluations += evaluations;
    }

    /// Hairer's stiffness test on the accepted step: h·ρ with ρ ≈ ‖K_s − K_{s−1}‖ / ‖Y_s − Y_{s−1}‖ from
    /// the last two stages, against 0.95 × the real stability boundary.
    fn stiffness_test(&mut self, h: f64) {
        let (n, s) = (self.n, self.tab.stages);
        if s < 2 || self.options.fixed_step.is_some() {
            return;
        }
        let ya = stage_input(self.tab, n, s - 2, &self.u, &self.u_new, &self.ys);
        let yb = stage_input(self.tab, n, s - 1, &self.u, &self.u_new, &self.ys);
        let (ka, kb) = (
            &self.k[(s - 2) * n..(s - 1) * n],
            &self.k[(s - 1) * n..s * n],
        );
        let (mut dk, mut dy) = (0.0, 0.0);
        for m in 0..n {
            dk += (kb[m] - ka[m]) * (kb[m] - ka[m]);
            dy += (yb[m] - ya[m]) * (yb[m] - ya[m]);
        }
        // The last 20 accepted steps, one bit each (1 = stability-limited).
        let limited = dy > 0.0 && h.abs() * (dk / dy).sqrt() >= self.stiff_threshold;
        self.stiff_window = ((self.stiff_window << 1) | u32::from(limited)) & 0xF_FFFF;
        if limited {
            self.stats.stability_limited_steps += 1;
            if self.stiff_window.count_ones() >= 15 && self.stats.stiffness_detected_at.is_none() {
                self.stats.stiffness_detected_at = Some(self.t);
            }
        }
    }

    /// Σ_i r_i² and n for the error norm RMS(r_i), r_i = e_i / (atol_i + rtol·max(|u_n,i|, |u_{n+1},i|)),
    /// e = h Σ b̃_i K_i.
    #[inline]
    fn error_sum(&mut self, h: f64) -> (f64, usize) {
        let n = self.n;
        // err = Σ b̃_i K_i, then e = h · err.
        combine(
            &mut self.err,
            &self.zeros,
            1.0,
            &self.btilde_row,
            &self.k,
            n,
        );
        let rtol = self.options.rtol;
        let (err, u, u_new, atol) = (
            &self.err[..n],
            &self.u[..n],
            &self.u_new[..n],
            &self.atol[..n],
        );
        let k = self.norm_n;
        let mut sum = 0.0;
        for m in 0..k {
            let (a, b) = (u[m].abs(), u_new[m].abs());
            let r = h * err[m] / (atol[m] + rtol * if a > b { a } else { b });
            sum += r * r;
        }
        (sum, k)
    }

    /// Takes one step (accepted or rejected).
    ///
    /// # Errors
    /// As [`crate::solve`]; [`SolverError::AlreadyFinished`] after t_end.
    pub fn step(&mut self) -> Result<StepOutcome, SolverError> {
        self.propose()?;
        self.decide(None)
    }

    /// Computes the stages of the next step attempt without deciding on it: call [`Integrator::decide`]
    /// next. Lets a caller add error terms of its own (for example forward-sensitivity tangents) to the
    /// step-size control. [`Integrator::step`] is `propose` followed by `decide(None)`.
    ///
    /// # Errors
    /// As [`Integrator::step`].
    pub fn propose(&mut self) -> Result<ProposedStep<'_>, SolverError> {
        if self.is_finished() {
            return Err(SolverError::AlreadyFinished { t: self.t });
        }
        let attempt =
            self.schedule
                .attempt(self.t, self.h_abs)
                .map_err(|refusal| match refusal {
                    Refusal::MaxSteps => SolverError::MaxStepsReached {
                        t: self.t,
                        max_steps: self.schedule.max_steps(),
                    },
                    // Approaching a point past which the model is NaN/∞: report that, not the step size.
                    Refusal::TooSmall { h } => match self.non_finite_attempt {
                        Some((h, t_new)) => self.non_finite_error(h, t_new),
                        None => SolverError::StepSizeTooSmall { t: self.t, h },
                    },
                })?;
        if let Some(slot) = self.k1_from.take() {
            let n = self.n;
            self.k.copy_within(slot * n..(slot + 1) * n, 0);
        }
        if !self.k1_fresh {
            self.eval_stage(0, self.t, Source::U);
            self.k1_fresh = true;
        }
        let Attempt { h, t_new, .. } = attempt;
        self.compute_stages(h, t_new);
        self.pending = Some(attempt);
        Ok(ProposedStep {
            step: AcceptedStep {
                t: self.t,
                h,
                t_next: t_new,
                u: &self.u,
                u_next: &self.u_new,
                tab: self.tab,
                ys: &self.ys,
            },
            atol: &self.atol,
            rtol: self.options.rtol,
        })
    }

    /// Accepts or rejects the step computed by [`Integrator::propose`]. `extra` = (Σ r_j², m) adds m
    /// scaled error terms r_j = e_j / (atol + rtol·max(|x_n|, |x_{n+1}|)) of the caller's own quantities to
    /// the error norm, which becomes RMS over all n + m terms.
    ///
    /// # Errors
    /// As [`Integrator::step`]; [`SolverError::InvalidOption`] if no step was proposed.
    pub fn decide(&mut self, extra: Option<(f64, usize)>) -> Result<StepOutcome, SolverError> {
        let Some(attempt) = self.pending.take() else {
            return Err(SolverError::Misuse {
                call: "Integrator::decide without a pending Integrator::propose",
                expected: "decide called once after each propose",
            });
        };
        let Attempt {
            h, h_abs, t_new, ..
        } = attempt;
        let mut non_finite = false;
        let accept = match self.options.fixed_step {
            Some(_) => true,
            None => {
                let (sum, count) = self.error_sum(h);
                let (extra_sum, extra_count) = extra.unwrap_or((0.0, 0));
                let err = ((sum + extra_sum) / (count + extra_count) as f64).sqrt();
                if !err.is_finite() {
                    // A trial step too large for a stiff or fast-growing model can overflow: reject it
                    // and shrink h; a model that stays non-finite however small h gets is an error.
                    if self.schedule.non_finite() {
                        return Err(self.non_finite_error(h, t_new));
                    }
                    non_finite = true;
                    self.h_abs = h_abs * self.controller.q_min();
                    false
                } else {
                    let feedback = StepFeedback {
                        err,
                        h: h_abs,
                        k: self.k_err,
                        newton_iterations: 0,
                        newton_max: 0,
                        after_rejection: self.last_rejected,
                    };
                    if err <= 1.0 {
                        self.h_abs = self.controller.accepted(&mut self.memory, &feedback);
                        true
                    } else {
                        self.h_abs = self.controller.rejected(&mut self.memory, &feedback);
                        false
                    }
                }
            }
        };
        if !accept {
            self.non_finite_attempt = non_finite.then_some((h, t_new));
            self.stats.rejected_steps += 1;
            self.last_rejected = true;
            self.last_accepted = None;
            return Ok(StepOutcome::Rejected);
        }
        if self.options.fixed_step.is_none() {
            self.last_rejected = false;
        } else if !self.u_new.iter().sum::<f64>().is_finite() {
            return Err(self.non_finite_error(h, t_new));
        }
        self.stats.accepted_steps += 1;
        self.schedule.accepted(&attempt);
        self.non_finite_attempt = None;
        self.extras_fresh = false;
        self.last_accepted = Some((self.t, h));
        self.stiffness_test(h);

        // Advance. The stages stay for the step's continuous extension; a FSAL stage becomes the next
        // step's first when that step starts.
        self.t = t_new;
        std::mem::swap(&mut self.u, &mut self.u_new);
        self.k1_from = self.tab.fsal.then_some(self.tab.stages - 1);
        self.k1_fresh = self.tab.fsal;
        Ok(if self.is_finished() {
            StepOutcome::Finished
        } else {
            StepOutcome::Accepted
        })
    }
}

/// Which buffer a stage is evaluated at.
#[derive(Clone, Copy)]
enum Source {
    U,
    Y,
}

impl crate::stepper::StepStages for AcceptedStep<'_> {
    fn t(&self) -> f64 {
        self.t
    }
    fn h(&self) -> f64 {
        self.h
    }
    fn t_next(&self) -> f64 {
        self.t_next
    }
    fn u(&self) -> &[f64] {
        self.u
    }
    fn u_next(&self) -> &[f64] {
        self.u_next
    }
    fn stages(&self) -> usize {
        self.tab.stages
    }
    fn stage_time(&self, i: usize) -> f64 {
        AcceptedStep::stage_time(self, i)
    }
    fn stage_value(&self, i: usize) -> &[f64] {
        self.stage_input(i)
    }
    fn weight(&self, i: usize) -> f64 {
        self.tab.b[i]
    }
}

impl<M: OdeSystem> crate::stepper::Stepper for Integrator<'_, M> {
    type Checkpoint = Checkpoint;
    type Step<'s>
        = AcceptedStep<'s>
    where
        Self: 's;

    fn t(&self) -> f64 {
        Integrator::t(self)
    }
    fn u(&self) -> &[f64] {
        Integrator::u(self)
    }
    fn is_finished(&self) -> bool {
        Integrator::is_finished(self)
    }
    fn stats(&self) -> Statistics {
        Integrator::stats(self)
    }
    fn step_accepted(&mut self) -> Result<AcceptedStep<'_>, SolverError> {
        Integrator::step_accepted(self)
    }
    #[inline]
    fn advance(&mut self) -> Result<(), SolverError> {
        while self.step()? == StepOutcome::Rejected {}
        Ok(())
    }
    fn set_state(&mut self, u: &[f64]) -> Result<(), SolverError> {
        Integrator::set_state(self, u)
    }
    fn restart_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        Integrator::restart_at(self, t, u)
    }
    fn checkpoint_into(&self, cp: &mut Checkpoint) {
        Integrator::checkpoint_into(self, cp)
    }
    fn restore(&mut self, cp: &Checkpoint) -> Result<(), SolverError> {
        Integrator::restore(self, cp)
    }
    fn checkpoint_bytes(cp: &Checkpoint) -> usize {
        cp.bytes()
    }
    fn interpolate(&mut self, t: f64, out: &mut [f64]) -> Result<(), SolverError> {
        Integrator::interpolate(self, t, out)
    }
    fn push_dense(&mut self, dense: &mut DenseOutput) -> Result<(), SolverError> {
        Integrator::push_dense(self, dense)
    }
    fn new_dense_output(&self) -> DenseOutput {
        Integrator::new_dense_output(self)
    }
}
