//! One derivative per scheme: [`StepDiff`], the tangent and the adjoint of one accepted step, implemented
//! once for each stepper family (explicit RK in [`erk`], ESDIRK, Radau IIA and BDF/NDF in [`implicit`]).
//!
//! A step Φ_n: (u_n, p) ↦ u_{n+1} with its step size frozen has the tangent map
//! u̇_{n+1} = ∂Φ/∂u u̇_n + ∂Φ/∂p ṗ and the adjoint map λ_n = (∂Φ/∂u)ᵀ λ_{n+1}, p̄ += (∂Φ/∂p)ᵀ λ_{n+1}. The
//! drivers — forward sensitivities ([`crate::forward`]), the discrete adjoint with every checkpointing
//! policy ([`crate::discrete_adjoint`], [`crate::checkpointing`]) and the gradient check's objective
//! pass — are written once over these two maps; what lies between two steps (observations, running
//! costs, saving, the adjoint trajectory) is handled by the drivers and the shared state here.
//!
//! What a family cannot differentiate yet is a [`Capability`] that [`require`] checks in one place.

pub(crate) mod erk;
pub(crate) mod implicit;

use odesens_solver::{
    BdfIntegrator, EventHit, ImplicitIntegrator, Integrator, Method, OdeProblem, OdeSystem,
    SolverError, SolverOptions, StepStages, Stepper,
};

use crate::ad::derivatives::Derivatives;
use crate::common::{ObjectiveTracker, observation_jump};
use crate::error::{SensitivityError, check_finite};
use crate::events::EventAdjoint;
use crate::objective::Objective;

/// The stepper families, each with its [`StepDiff`] implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepFamily {
    /// Explicit Runge–Kutta pairs ([`Integrator`]).
    ExplicitRk,
    /// ESDIRK and Radau IIA ([`ImplicitIntegrator`]).
    Implicit,
    /// BDF and NDF ([`BdfIntegrator`]).
    Multistep,
}

impl StepFamily {
    /// The family that takes `method`'s steps.
    pub fn of(method: Method) -> Self {
        if method.is_multistep() {
            StepFamily::Multistep
        } else if method.is_implicit() {
            StepFamily::Implicit
        } else {
            StepFamily::ExplicitRk
        }
    }

    /// Whether this family can do `capability`.
    pub fn supports(self, capability: Capability) -> bool {
        match (self, capability) {
            (StepFamily::ExplicitRk, _) => true,
            (StepFamily::Implicit | StepFamily::Multistep, _) => false,
        }
    }
}

/// Derivative computations that not every stepper family offers yet. Tangents and the discrete adjoint
/// (with every checkpointing policy) are offered by all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capability {
    /// Tangents in the step-size control ([`crate::ForwardSettings::tangent_error_control`]).
    TangentErrorControl,
    /// Hessian–vector products (forward-over-adjoint of the explicit stages).
    HessianVector,
    /// The backward solve of the backsolve adjoint (u integrated backwards beside λ).
    BacksolveAdjoint,
    /// The cost model's kernel measurements.
    CostModel,
}

impl Capability {
    fn operation(self) -> &'static str {
        match self {
            Capability::TangentErrorControl => {
                "tangents in the error control (explicit methods only for now; implicit tangents \
                 follow the plain solve's steps)"
            }
            Capability::HessianVector => "Hessian–vector products (explicit methods only for now)",
            Capability::BacksolveAdjoint => {
                "the backsolve adjoint's backward solve (explicit methods only: choose an explicit \
                 ContinuousSettings::method such as Tsit5, or the interpolating adjoint, which takes \
                 implicit backward methods)"
            }
            Capability::CostModel => "the cost model (explicit methods only for now)",
        }
    }
}

/// [`SensitivityError::UnsupportedMethod`] unless `method`'s family offers `capability`.
pub(crate) fn require(method: Method, capability: Capability) -> Result<(), SensitivityError> {
    if StepFamily::of(method).supports(capability) {
        Ok(())
    } else {
        Err(SensitivityError::UnsupportedMethod {
            method,
            operation: capability.operation(),
        })
    }
}

/// Tangents of a block of `c` directions, row-major (component, lane): u̇ (n × c), ṗ (np × c), and per
/// stage Ẏ_i and K̇_i (s × n × c), with scratch rows of n × c for the schemes.
pub(crate) struct Tangents {
    pub c: usize,
    pub udot: Vec<f64>,
    pub pdot: Vec<f64>,
    pub kdot: Vec<f64>,
    pub ydot: Vec<f64>,
    /// Explicit: u̇_{n+1} before it replaces u̇_n. Implicit: the stage's right-hand side r.
    pub next: Vec<f64>,
    /// Implicit: a jvp's output.
    pub out: Vec<f64>,
}

impl Tangents {
    /// Column `cols` of the seeds (n × nd, np × nd) as the tangents at t0 of a scheme with `s` stages.
    pub fn new(
        du0: &ndarray::Array2<f64>,
        dp: &ndarray::Array2<f64>,
        cols: std::ops::Range<usize>,
        s: usize,
    ) -> Self {
        let (n, np, c) = (du0.nrows(), dp.nrows(), cols.len());
        let mut tg = Self {
            c,
            udot: vec![0.0; n * c],
            pdot: vec![0.0; np * c],
            kdot: vec![0.0; s * n * c],
            ydot: vec![0.0; s * n * c],
            next: vec![0.0; n * c],
            out: vec![0.0; n * c],
        };
        for (lane, col) in cols.enumerate() {
            for m in 0..n {
                tg.udot[m * c + lane] = du0[[m, col]];
            }
            for m in 0..np {
                tg.pdot[m * c + lane] = dp[[m, col]];
            }
        }
        tg
    }

    /// Ẏ_i of every lane (n × c).
    pub fn stage(&self, i: usize) -> &[f64] {
        let nc = self.udot.len();
        &self.ydot[i * nc..(i + 1) * nc]
    }
}

/// The adjoint state every scheme's step adjoint updates: λ, p̄, the observations still to add, and the
/// recorded trajectory.
pub(crate) struct AdjointState<'o, O: Objective> {
    pub tracker: ObjectiveTracker<'o, O>,
    pub p: Vec<f64>,
    pub lambda: Vec<f64>,
    pub p_bar: Vec<f64>,
    /// Observations not yet added, counted from the start (the next one to add is `obs_left − 1`).
    obs_left: usize,
    /// Rows [t, λ(t)] in the order the backward pass meets them, when recording.
    pub trajectory: Option<Vec<f64>>,
}

impl<'o, O: Objective> AdjointState<'o, O> {
    /// λ = 0, p̄ = 0 before the last step.
    pub fn new(objective: &'o O, n: usize, p: &[f64], record_trajectory: bool) -> Self {
        Self {
            tracker: ObjectiveTracker::new(objective, n, p.len()),
            p: p.to_vec(),
            lambda: vec![0.0; n],
            p_bar: vec![0.0; p.len()],
            obs_left: objective.observation_times().len(),
            trajectory: record_trajectory.then(Vec::new),
        }
    }

    /// At the end t_{n+1} of a step, before its adjoint: the trajectory's first row (at the end of the
    /// span), then the observation at t_{n+1} (λ += ∂g/∂u(u_{n+1}), p̄ += ∂g/∂p).
    pub fn enter(&mut self, t_next: f64, u_next: &[f64]) -> Result<(), SensitivityError> {
        if let Some(rec) = self.trajectory.as_mut()
            && rec.is_empty()
        {
            rec.push(t_next);
            rec.extend_from_slice(&self.lambda);
        }
        self.observe(t_next, u_next)
    }

    /// At the start t_n of a step, after its adjoint: λ and p̄ must be finite; (t_n, λ_n) is recorded.
    pub fn leave(&mut self, t: f64) -> Result<(), SensitivityError> {
        check_finite("adjoint λ", t, &self.lambda)?;
        check_finite("adjoint p̄", t, &self.p_bar)?;
        if let Some(rec) = self.trajectory.as_mut() {
            rec.push(t);
            rec.extend_from_slice(&self.lambda);
        }
        Ok(())
    }

    /// The running cost's term of a stage with weight h b_i = `hb` at (t, y): `into` += hb ∂r/∂u,
    /// p̄ += hb ∂r/∂p.
    pub fn add_running(
        &mut self,
        (t, y): (f64, &[f64]),
        hb: f64,
        into: &mut [f64],
    ) -> Result<(), SensitivityError> {
        self.tracker.running_gradient(t, y, &self.p)?;
        for (x, g) in into.iter_mut().zip(&self.tracker.g_u) {
            *x += hb * g;
        }
        for (pb, g) in self.p_bar.iter_mut().zip(&self.tracker.g_p) {
            *pb += hb * g;
        }
        Ok(())
    }

    /// At an event (`hit` of `model`): λ⁺ ↦ λ⁻ and p̄ by the transposed event map `events`, with
    /// the objective's event terms.
    ///
    /// # Errors
    /// As [`EventAdjoint::apply`].
    pub fn cross_event<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        (model, hit, events): (&M, &EventHit, &mut EventAdjoint),
    ) -> Result<(), SensitivityError> {
        events.apply(
            der,
            model,
            hit,
            (&mut self.tracker, &self.p),
            &mut self.lambda,
            &mut self.p_bar,
        )
    }

    /// The observation due at t (if any): λ += ∂g_k/∂u(u), p̄ += ∂g_k/∂p.
    pub fn observe(&mut self, t: f64, u: &[f64]) -> Result<(), SensitivityError> {
        observation_jump(
            &mut self.tracker,
            &mut self.obs_left,
            (t, u, &self.p),
            &mut self.lambda,
            &mut self.p_bar,
            &mut self.trajectory,
        )
    }
}

/// The tangent and the adjoint of one accepted step of a stepper family (see the module docs). The
/// stepper advances itself: each call takes the next accepted step from the current point, so a
/// checkpoint restored before it makes the call differentiate that step.
pub(crate) trait StepDiff<'a, M: OdeSystem + 'a>: Stepper + Sized {
    /// The family, for capability checks.
    const FAMILY: StepFamily;
    /// The scheme's buffers (allocated once per derivative computation).
    type Work;
    /// The accepted step a tangent call leaves behind (stage times, values and weights).
    type View<'w>: StepStages
    where
        Self: 'w;

    /// A stepper for `problem` with (derivative) options `options`.
    ///
    /// # Errors
    /// The stepper's construction errors.
    fn start(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError>;
    /// The number of stages (rows of [`Tangents::ydot`]).
    fn stage_count(&self) -> usize;
    /// The scheme's buffers for `n` states and `np` parameters.
    fn work(&self, n: usize, np: usize) -> Self::Work;
    /// Stage systems solved with exactly factored stage Jacobians so far.
    fn exact_stage_factorizations(work: &Self::Work) -> usize;
    /// Stage systems solved by a Krylov method so far (sparse implicit problems).
    fn krylov_stage_solves(_work: &Self::Work) -> usize {
        0
    }

    /// Takes the next accepted step and maps `tg.udot` = u̇_n to u̇_{n+1}; afterwards `tg.ydot` holds
    /// Ẏ_i for every stage of nonzero weight. With `error_control` the tangents' error estimates join
    /// the step-size control (only where [`Capability::TangentErrorControl`] is offered).
    ///
    /// # Errors
    /// Solver errors; [`SensitivityError::NonFiniteDerivative`] if u̇_{n+1} is not finite.
    fn tangent_step<'w>(
        &'w mut self,
        work: &'w mut Self::Work,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
        error_control: bool,
    ) -> Result<Self::View<'w>, SensitivityError>;

    /// The tangent of the continuous extension of the step just taken by [`StepDiff::tangent_step`] at
    /// `t` inside it, at fixed t: u̇_n + h Σ_i w_i(θ) k̇_i with the scheme's interpolation weights and the
    /// tangents of its coefficient rows (explicit pairs: the stages K̇_i; ESDIRK: K̇ at both ends and the
    /// tangent of (u_{n+1} − u_n)/h; Radau: the same linear map of the stage tangents Ẏ_i − u̇_n), into
    /// `out` (n × c). `udot_n` is u̇_n of the step, `tg.udot` u̇_{n+1}. The Verner pairs' extra
    /// interpolation stages get their tangents here (one jvp block each).
    ///
    /// # Errors
    /// Solver errors from the extra stages.
    #[allow(clippy::too_many_arguments)]
    fn tangent_at(
        &mut self,
        work: &mut Self::Work,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
        t: f64,
        udot_n: &[f64],
        out: &mut [f64],
    ) -> Result<(), SensitivityError>;

    /// Takes the next accepted step and maps λ_{n+1} to λ_n (p̄ accumulating ∂Φ/∂pᵀ λ and the running
    /// cost's stage terms), calling [`AdjointState::enter`] before and [`AdjointState::leave`] after.
    ///
    /// # Errors
    /// Solver errors; [`SensitivityError::NonFiniteDerivative`] if λ or p̄ is not finite.
    fn adjoint_step<O: Objective>(
        &mut self,
        work: &mut Self::Work,
        der: &mut Derivatives<'_, M>,
        state: &mut AdjointState<'_, O>,
    ) -> Result<(), SensitivityError>;

    /// Like [`StepDiff::adjoint_step`] for a step that an event cut at t* (`event`: the model, the
    /// firing, the transposed event map's buffers): [`AdjointState::enter`] at (t*, u⁺), λ⁺ mapped to
    /// λ⁻ by [`EventAdjoint`], then the transpose of the step's continuous extension at t* (the tangent
    /// of [`StepDiff::tangent_at`]) to λ_n.
    ///
    /// # Errors
    /// As [`StepDiff::adjoint_step`]; [`SensitivityError::Unsupported`] where the family cannot
    /// transpose its interpolant yet.
    fn adjoint_event_step<O: Objective>(
        &mut self,
        work: &mut Self::Work,
        der: &mut Derivatives<'_, M>,
        state: &mut AdjointState<'_, O>,
        event: (&M, &EventHit, &mut EventAdjoint),
    ) -> Result<(), SensitivityError>;
}

/// A computation written once over [`StepDiff`]; [`dispatch`] runs it with the stepper of a method.
pub(crate) trait WithStepper<'a, M: OdeSystem + 'a> {
    /// What the computation returns.
    type Out;
    /// Runs the computation with stepper type `S`.
    fn run<S: StepDiff<'a, M>>(self) -> Self::Out;
}

/// Runs `job` with the stepper family of `method` (the one place that maps methods to steppers).
pub(crate) fn dispatch<'a, M: OdeSystem + 'a, J: WithStepper<'a, M>>(
    method: Method,
    job: J,
) -> J::Out {
    match StepFamily::of(method) {
        StepFamily::ExplicitRk => job.run::<Integrator<'a, M>>(),
        StepFamily::Implicit => job.run::<ImplicitIntegrator<'a, M>>(),
        StepFamily::Multistep => job.run::<BdfIntegrator<'a, M>>(),
    }
}
