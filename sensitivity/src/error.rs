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
    /// An observation (or save) time lies outside the integration span.
    #[error("{what} time {t} lies outside the span [{lo}, {hi}]")]
    TimeOutsideSpan {
        /// Which list of times.
        what: &'static str,
        /// The offending time.
        t: f64,
        /// Lower end of the span.
        lo: f64,
        /// Upper end of the span.
        hi: f64,
    },
    /// Observation (or save) times are not strictly monotone in the direction of integration.
    #[error(
        "{what} times must be strictly monotone in the direction of integration; entry {index} = {t} is not"
    )]
    UnsortedTimes {
        /// Which list of times.
        what: &'static str,
        /// Index of the first entry out of order.
        index: usize,
        /// Its value.
        t: f64,
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

/// Checks that `times` lie in [t0, t_end] (either orientation) and are strictly monotone towards t_end.
pub(crate) fn check_times(
    what: &'static str,
    times: &[f64],
    t0: f64,
    t_end: f64,
) -> Result<(), SensitivityError> {
    let dir = (t_end - t0).signum();
    let (lo, hi) = if dir > 0.0 { (t0, t_end) } else { (t_end, t0) };
    for (index, &t) in times.iter().enumerate() {
        if !(t >= lo && t <= hi) {
            return Err(SensitivityError::TimeOutsideSpan { what, t, lo, hi });
        }
        if index > 0
            && !(dir * (t - times[index - 1]))
                .partial_cmp(&0.0)
                .is_some_and(|o| o.is_gt())
        {
            return Err(SensitivityError::UnsortedTimes { what, index, t });
        }
    }
    Ok(())
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
