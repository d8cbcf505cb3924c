//! The sensitivity crate's error type.

use odesens_solver::SolverError;
use thiserror::Error;

/// What can go wrong when computing derivatives of a solution.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SensitivityError {
    /// The forward solve (or a replay of it) failed.
    #[error(transparent)]
    Solver(#[from] SolverError),
    /// A vector has the wrong length.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// What was being checked.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A derivative (tangent, adjoint or objective gradient) became NaN or infinite.
    #[error("non-finite {what} at t = {t}: component {component} = {value}")]
    NonFiniteDerivative {
        /// Which quantity (`"adjoint λ"`, `"tangent"`, `"objective gradient"`).
        what: &'static str,
        /// Time of the step or observation.
        t: f64,
        /// Component index.
        component: usize,
        /// Its value.
        value: f64,
    },
    /// The method cannot be differentiated this way (yet): the operation names what is missing and what
    /// to use instead.
    #[error("method {method} does not support {operation}")]
    UnsupportedMethod {
        /// The method of the solver options.
        method: odesens_solver::Method,
        /// What was asked of it.
        operation: &'static str,
    },
    /// The model uses a feature that no derivative computation handles yet (the operation says which).
    #[error("unsupported: {operation}")]
    Unsupported {
        /// What was asked, and why it cannot be done.
        operation: &'static str,
    },
    /// An objective reads an event that did not fire as often as it needs (`event`: `None` for any).
    #[error("the objective reads firing {needed} of event {event:?}, but it fired {fired} times")]
    MissingEvent {
        /// The event read (`None`: any event).
        event: Option<usize>,
        /// The firings needed.
        needed: usize,
        /// The firings that happened.
        fired: usize,
    },
    /// A save or observation time lies after an event that stopped the integration.
    #[error(
        "{what} time {t} lies after the stop at t* = {t_stop} (an event stopped the integration; \
             the span's end moves with θ: read the stop with an event term, e.g. EventTime)"
    )]
    AfterStop {
        /// `"observation"` or `"save"`.
        what: &'static str,
        /// The time asked for.
        t: f64,
        /// Where the integration stopped.
        t_stop: f64,
    },
    /// A setting is outside its valid range.
    #[error("invalid setting {name} = {value}: must be {valid}")]
    InvalidSetting {
        /// The setting.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The valid range, in words.
        valid: &'static str,
    },
}

/// Checks observation or save times against the span (t0 allowed), with the solver's check.
pub(crate) fn check_times(
    what: &'static str,
    times: &[f64],
    t0: f64,
    t_end: f64,
) -> Result<(), SensitivityError> {
    Ok(odesens_solver::check_times(what, times, t0, t_end, true)?)
}

/// The first non-finite entry of `v`, as an error.
pub(crate) fn check_finite(what: &'static str, t: f64, v: &[f64]) -> Result<(), SensitivityError> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(component) => Err(SensitivityError::NonFiniteDerivative {
            what,
            t,
            component,
            value: v[component],
        }),
        None => Ok(()),
    }
}
