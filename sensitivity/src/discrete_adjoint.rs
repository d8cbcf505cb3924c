//! The exact discrete adjoint: the gradient of the computed solution's objective with respect to every
//! parameter and initial value, at a cost that does not grow with their number.
//!
//! Each accepted step n is differentiated in reverse by its scheme's [`StepDiff::adjoint_step`]
//! (λ_n = (∂u_{n+1}/∂u_n)ᵀ λ_{n+1}, p̄ += (∂u_{n+1}/∂p)ᵀ λ_{n+1}, plus the running cost's stage terms);
//! at observation times λ jumps by ∂g_k/∂u. ∇_{u0} G = λ_0, ∇_p G = p̄. The step sequence is frozen, so
//! this is the gradient of the discrete solution to round-off. One driver for every stepper family.
//!
//! Steps are revisited from checkpoints ([`Checkpointing`]): a checkpoint restores the integrator so that
//! it retakes the same steps bit for bit, rejections included.

use ndarray::Array1;
use odesens_solver::{EventLocator, OdeProblem, OdeSystem, SolverOptions};

use crate::ad::derivatives::{Derivatives, VjpMode};
use crate::checkpointing::{Checkpointing, Reversal, forward_with_checkpoints, reverse};
use crate::common::{
    AdjointTrajectory, Gradient, SensitivityStats, check_objective, derivative_options, stats_since,
};
use crate::error::SensitivityError;
use crate::events::EventAdjoint;
use crate::objective::{Firing, Objective};
use crate::step_diff::{AdjointState, StepDiff, WithStepper, dispatch};

/// The backward pass's working state.
struct Engine<'a, 'o, 'e, M: OdeSystem + 'a, S: StepDiff<'a, M>, O: Objective> {
    replay: S,
    work: S::Work,
    der: Derivatives<'a, M>,
    state: AdjointState<'o, O>,
    model: &'a M,
    /// The forward pass's events, by step, their firings, and the transposed event map's buffers.
    events: &'e crate::common::EventRecord,
    firings: Vec<Vec<Firing>>,
    event_adjoint: EventAdjoint,
}

impl<'a, M: OdeSystem + 'a, S: StepDiff<'a, M>, O: Objective> Engine<'a, '_, '_, M, S, O> {
    /// The index (in the record) of the event that fired in step `step`, if any.
    fn event_index(&self, step: usize) -> Option<usize> {
        self.events.binary_search_by_key(&step, |(k, _)| *k).ok()
    }

    /// The event that fired in step `step`, if any.
    fn event_of(&self, step: usize) -> Option<&odesens_solver::EventHit> {
        self.event_index(step).map(|i| &self.events[i].1)
    }
}

impl<'a, M: OdeSystem + 'a, S: StepDiff<'a, M>, O: Objective> Reversal
    for Engine<'a, '_, '_, M, S, O>
{
    type S = S;

    fn replay(&mut self) -> &mut S {
        &mut self.replay
    }

    /// Takes the next step from the integrator's current state and differentiates it backwards; a
    /// step an event cut is differentiated up to the event, through the event's map.
    fn adjoint_current(&mut self, step: usize) -> Result<(), SensitivityError> {
        match self.event_index(step) {
            None => self
                .replay
                .adjoint_step(&mut self.work, &mut self.der, &mut self.state),
            Some(i) => {
                let hit = &self.events[i].1;
                self.event_adjoint.firings.clone_from(&self.firings[i]);
                self.replay.adjoint_event_step(
                    &mut self.work,
                    &mut self.der,
                    &mut self.state,
                    (self.model, hit, &mut self.event_adjoint),
                )
            }
        }
    }

    fn advance_replay(&mut self, step: usize) -> Result<(), SensitivityError> {
        self.replay.advance()?;
        if let Some(hit) = self.event_of(step) {
            let (t, u) = (hit.t, hit.u_after.clone());
            self.replay.restart_at(t, &u)?;
        }
        Ok(())
    }
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
    check_objective(problem, objective)?;
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    dispatch(
        opts.method,
        Job {
            problem,
            options: &opts,
            objective,
            settings,
        },
    )
}

/// The discrete adjoint, written once over [`StepDiff`].
struct Job<'a, 'j, M: OdeSystem, O: Objective> {
    problem: &'a OdeProblem<M>,
    options: &'j SolverOptions,
    objective: &'j O,
    settings: &'j AdjointSettings,
}

impl<'a, M: OdeSystem, O: Objective> WithStepper<'a, M> for Job<'a, '_, M, O> {
    type Out = Result<Gradient, SensitivityError>;

    fn run<S: StepDiff<'a, M>>(self) -> Self::Out {
        let Job {
            problem,
            options,
            objective,
            settings,
        } = self;
        let checkpointing = settings.checkpointing;
        let (n, np) = (problem.n_states(), problem.model().n_params());
        let p = problem.params().to_vec();
        let (t0, u0) = (problem.t0(), problem.u0().to_vec());

        // Forward pass: G, the step count, and the checkpoints the policy keeps.
        let mut forward = S::start(problem, options)?;
        let mut locator = EventLocator::new(problem, options)?;
        let locator = (!locator.is_empty()).then_some(&mut locator);
        let mut record = forward_with_checkpoints(
            &mut forward,
            objective,
            &p,
            (t0, &u0),
            locator,
            checkpointing,
        )?;
        let events = std::mem::take(&mut record.events);

        let replay = S::start(problem, options)?;
        let mut e = Engine {
            work: replay.work(n, np),
            replay,
            der: Derivatives::new(problem.model()).with_vjp_mode(settings.vjp),
            state: AdjointState::new(objective, n, &p, settings.record_trajectory),
            model: problem.model(),
            firings: crate::common::firings_of(&events, problem.model().n_events()),
            events: &events,
            event_adjoint: EventAdjoint::new(problem.model()),
        };
        let replay_start = e.replay.stats();
        let cost = reverse(&mut e, checkpointing, &mut record)?;
        // An observation at t0 adds ∂g/∂u0 directly.
        e.state.observe(t0, &u0)?;
        let adjoint = e
            .state
            .trajectory
            .take()
            .map(|rec| AdjointTrajectory::from_rows(rec, n));
        let stats = SensitivityStats {
            forward: forward.stats(),
            recomputation: stats_since(&replay_start, &e.replay.stats()),
            recomputed_steps: cost.recomputed_steps,
            peak_snapshots: cost.peak_snapshots,
            peak_checkpoint_bytes: cost.peak_checkpoint_bytes,
            derivatives: e.der.counts,
            exact_stage_factorizations: S::exact_stage_factorizations(&e.work),
            krylov_stage_solves: S::krylov_stage_solves(&e.work),
        };
        Ok(Gradient {
            value: record.value,
            wrt_params: Array1::from(e.state.p_bar),
            wrt_u0: Array1::from(e.state.lambda),
            stats,
            adjoint,
            backward: None,
            u0_reconstructed: None,
        })
    }
}
