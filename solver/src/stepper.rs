//! What every integrator offers the code that differentiates it: one accepted step at a time, the
//! step's stages, and checkpoints from which the same steps replay bit for bit.
//!
//! A step n maps u_n to u_{n+1} through stages with values Y_i at times t_i = t_n + c_i h and weights
//! b_i (u_{n+1} = u_n + h Σ_i b_i f(t_i, Y_i) for explicit pairs; for the stiffly accurate implicit
//! schemes u_{n+1} is the last stage value and b the last row of A). [`StepStages`] exposes exactly that;
//! a quadrature of a running cost over the step is then h Σ_i b_i r(t_i, Y_i), the same rule for every
//! method.

use crate::error::SolverError;
use crate::solution::{DenseOutput, Statistics};

/// An accepted step's times, states and stages.
pub trait StepStages {
    /// t_n.
    fn t(&self) -> f64;
    /// The signed step size h.
    fn h(&self) -> f64;
    /// t_{n+1} (exactly a tstop when the step ends on one).
    fn t_next(&self) -> f64;
    /// u_n.
    fn u(&self) -> &[f64];
    /// u_{n+1}.
    fn u_next(&self) -> &[f64];
    /// Number of stages s.
    fn stages(&self) -> usize;
    /// The time t_n + c_i h of stage i (t_{n+1} exactly for c_i = 1).
    fn stage_time(&self, i: usize) -> f64;
    /// The stage value Y_i.
    fn stage_value(&self, i: usize) -> &[f64];
    /// The quadrature weight b_i of stage i.
    fn weight(&self, i: usize) -> f64;
}

/// A borrowed step is viewed like the step itself.
impl<T: StepStages + ?Sized> StepStages for &T {
    fn t(&self) -> f64 {
        (**self).t()
    }
    fn h(&self) -> f64 {
        (**self).h()
    }
    fn t_next(&self) -> f64 {
        (**self).t_next()
    }
    fn u(&self) -> &[f64] {
        (**self).u()
    }
    fn u_next(&self) -> &[f64] {
        (**self).u_next()
    }
    fn stages(&self) -> usize {
        (**self).stages()
    }
    fn stage_time(&self, i: usize) -> f64 {
        (**self).stage_time(i)
    }
    fn stage_value(&self, i: usize) -> &[f64] {
        (**self).stage_value(i)
    }
    fn weight(&self, i: usize) -> f64 {
        (**self).weight(i)
    }
}

/// An integrator advanced one accepted step at a time, with checkpoints: what forward sensitivities and
/// adjoints drive ([`crate::Integrator`] for explicit methods, [`crate::ImplicitIntegrator`] for the
/// implicit ones).
pub trait Stepper {
    /// Everything needed to replay the steps after a point bit for bit.
    type Checkpoint: Clone + Default;
    /// The view of an accepted step.
    type Step<'s>: StepStages
    where
        Self: 's;

    /// Current time.
    fn t(&self) -> f64;
    /// Current state.
    fn u(&self) -> &[f64];
    /// Whether the end of the span has been reached.
    fn is_finished(&self) -> bool;
    /// Counters so far.
    fn stats(&self) -> Statistics;
    /// Takes steps until one is accepted (rejections in between are part of the replay) and returns it.
    ///
    /// # Errors
    /// The integrator's errors ([`SolverError::AlreadyFinished`] after the end).
    fn step_accepted(&mut self) -> Result<Self::Step<'_>, SolverError>;
    /// Takes steps until one is accepted, like [`Stepper::step_accepted`] without the view of the step
    /// (the solve loop's hot path).
    ///
    /// # Errors
    /// As [`Stepper::step_accepted`].
    fn advance(&mut self) -> Result<(), SolverError> {
        self.step_accepted().map(|_| ())
    }
    /// Replaces the current state by `u` (a jump), keeping t, the step size and the controller's memory;
    /// the next step starts afresh from u (first stage recomputed).
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a wrong length, [`SolverError::NonFiniteInput`] for NaN/∞;
    /// implicit methods evaluate f(t, u) at once and report [`SolverError::NonFiniteRhs`].
    fn set_state(&mut self, u: &[f64]) -> Result<(), SolverError>;
    /// Moves the integrator to `t` inside (or at the end of) the step just accepted and replaces the
    /// state by `u` — an event located at t, after its jump: the tstops after t are ahead again and the
    /// next step starts afresh from (t, u), like [`Stepper::set_state`].
    ///
    /// # Errors
    /// As [`Stepper::set_state`]; [`SolverError::NonFiniteInput`] for a non-finite t.
    fn restart_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError>;
    /// Writes the current point into `cp`, reusing its buffers.
    fn checkpoint_into(&self, cp: &mut Self::Checkpoint);
    /// Resumes from a checkpoint of an integrator of the same problem and options.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a checkpoint of another problem; implicit methods may
    /// report a failed refactorization.
    fn restore(&mut self, cp: &Self::Checkpoint) -> Result<(), SolverError>;
    /// Bytes a checkpoint holds (for memory budgets).
    fn checkpoint_bytes(cp: &Self::Checkpoint) -> usize;
    /// u at `t` in [t_n, t_{n+1}] of the step just accepted, by the method's continuous extension.
    ///
    /// # Errors
    /// [`SolverError::Misuse`] unless a step was just accepted (and no attempt started since);
    /// [`SolverError::NonFiniteRhs`] from an extra interpolation stage.
    fn interpolate(&mut self, t: f64, out: &mut [f64]) -> Result<(), SolverError>;
    /// Appends the step just accepted to `dense` (made by [`Stepper::new_dense_output`]).
    ///
    /// # Errors
    /// As [`Stepper::interpolate`].
    fn push_dense(&mut self, dense: &mut DenseOutput) -> Result<(), SolverError>;
    /// An empty dense output for this method's steps.
    fn new_dense_output(&self) -> DenseOutput;

    /// A new checkpoint of the current point.
    fn checkpoint(&self) -> Self::Checkpoint {
        let mut cp = Self::Checkpoint::default();
        self.checkpoint_into(&mut cp);
        cp
    }
}
