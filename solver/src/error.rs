//! The solver's error type.

use thiserror::Error;

/// Everything that can go wrong when setting up or running a solve.
///
/// Each variant carries the facts needed to act on it: the offending value, the valid range, the time and
/// component where a model misbehaved. No function of this crate panics on user input; it returns one of
/// these instead.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum SolverError {
    /// A tolerance is outside its valid range (or not finite).
    #[error("invalid tolerance {name} = {value:e}: must be {valid}")]
    InvalidTolerance {
        /// Which tolerance (`"rtol"`, `"atol"`, `"atol[3]"`, ...).
        name: String,
        /// The value given.
        value: f64,
        /// The valid range, in words.
        valid: &'static str,
    },
    /// A vector has the wrong length.
    #[error("dimension mismatch in {what}: expected {expected}, got {got}")]
    DimensionMismatch {
        /// What was being checked (`"u0"`, `"p"`, `"atol"`, ...).
        what: &'static str,
        /// The length the model or problem requires.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// An input value is NaN or infinite.
    #[error("{what}[{index}] = {value} is not finite")]
    NonFiniteInput {
        /// Which input (`"u0"`, `"p"`, `"t0"`, ...).
        what: &'static str,
        /// The index of the offending entry (0 for scalars).
        index: usize,
        /// The value given.
        value: f64,
    },
    /// The time span is empty or not finite.
    #[error("invalid time span: t0 = {t0}, t_end = {t_end} (need finite values with t_end != t0)")]
    InvalidTimeSpan {
        /// Start time.
        t0: f64,
        /// End time.
        t_end: f64,
    },
    /// The iteration matrix I − hγJ of an implicit method is singular (to working precision).
    #[error(
        "singular iteration matrix at t = {t}, h = {h:e} (pivot {pivot}): reduce h_max or check the model's Jacobian"
    )]
    SingularMatrix {
        /// Time of the step.
        t: f64,
        /// The step size tried.
        h: f64,
        /// The index of the failing pivot.
        pivot: usize,
    },
    /// A solver option is outside its valid range.
    #[error("invalid option {name} = {value}: must be {valid}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// The value given.
        value: f64,
        /// The valid range, in words.
        valid: &'static str,
    },
    /// A requested time (save time, tstop, interpolation point) lies outside the integration span.
    #[error("{what} time {t} lies outside the span [{lo}, {hi}]")]
    TimeOutsideSpan {
        /// Which list the time came from.
        what: &'static str,
        /// The offending time.
        t: f64,
        /// Lower end of the span.
        lo: f64,
        /// Upper end of the span.
        hi: f64,
    },
    /// A list of times is not sorted in the direction of integration (or has repeats or NaN).
    #[error(
        "{what} times must be strictly monotone in the direction of integration; entry {index} = {t} is not"
    )]
    UnsortedTimes {
        /// Which list.
        what: &'static str,
        /// Index of the first entry out of order.
        index: usize,
        /// Its value.
        t: f64,
    },
    /// The model's right-hand side returned NaN or ±∞.
    #[error(
        "the right-hand side returned a non-finite value at t = {t}: du[{component}] = {value}"
    )]
    NonFiniteRhs {
        /// Time of the evaluation.
        t: f64,
        /// Component of du that is not finite.
        component: usize,
        /// Its value.
        value: f64,
    },
    /// The adaptive step size fell below the smallest step that still advances time.
    #[error("step size too small at t = {t}: h = {h:e}")]
    StepSizeTooSmall {
        /// Time reached.
        t: f64,
        /// Step size that was about to be tried.
        h: f64,
    },
    /// Newton's iteration of an implicit method failed to converge even with a fresh Jacobian while the
    /// step shrank to round-off level (or at the fixed step size).
    #[error(
        "Newton's iteration did not converge at t = {t} with h = {h:e}, even with a fresh Jacobian"
    )]
    NewtonFailed {
        /// Time reached.
        t: f64,
        /// The last step size tried.
        h: f64,
    },
    /// The solve took more steps than allowed by `max_steps`.
    #[error("maximum number of steps ({max_steps}) reached at t = {t}")]
    MaxStepsReached {
        /// Time reached.
        t: f64,
        /// The limit.
        max_steps: usize,
    },
    /// `interpolate` was called on a solution that was solved without dense output.
    #[error(
        "no dense output stored: solve with `SolverOptions::dense(true)` to interpolate anywhere"
    )]
    NoDenseOutput,
    /// The model has no states: an ODE system needs at least one component.
    #[error("the model has zero states (n_states() = 0): an ODE system needs at least one")]
    EmptySystem,
    /// The method cannot do what was asked of it (an operation it does not support yet, or by nature).
    #[error("method {method} does not support {operation}")]
    UnsupportedMethod {
        /// The method asked for.
        method: crate::tableau::Method,
        /// What it was asked to do, and what to use instead.
        operation: &'static str,
    },
    /// A call out of order or a combination of settings that cannot go together (not a value out of
    /// range: that is [`SolverError::InvalidOption`]).
    #[error("API misuse: {call}: {expected}")]
    Misuse {
        /// The call or setting.
        call: &'static str,
        /// What is expected instead.
        expected: &'static str,
    },
    /// An event's condition returned NaN or ±∞.
    #[error("event {event}'s condition is not finite at t = {t}: g = {value}")]
    NonFiniteEvent {
        /// Time of the evaluation.
        t: f64,
        /// The event.
        event: usize,
        /// Its value.
        value: f64,
    },
    /// An event's jump left the state NaN or ±∞.
    #[error("event {event}'s jump at t = {t} left u[{component}] = {value}")]
    NonFiniteJump {
        /// The event time.
        t: f64,
        /// The event.
        event: usize,
        /// Component of u⁺ that is not finite.
        component: usize,
        /// Its value.
        value: f64,
    },
    /// Events accumulate: an event that just fired would fire again within round-off of its time (a
    /// Zeno point, like a bouncing ball coming to rest, or a grazing contact).
    #[error(
        "event {event} accumulates at t = {t}: it would fire again within round-off of its last firing (Zeno behaviour); end the span before t or change the model there"
    )]
    EventAccumulation {
        /// Where the events accumulate.
        t: f64,
        /// The event.
        event: usize,
    },
    /// More events fired than `max_events` allows.
    #[error("more than max_events = {max_events} events fired (the last at t = {t})")]
    TooManyEvents {
        /// Time of the event beyond the limit.
        t: f64,
        /// The limit.
        max_events: usize,
    },
    /// The integrator has already reached the end of the span.
    #[error("the integration has already finished at t = {t}")]
    AlreadyFinished {
        /// Final time.
        t: f64,
    },
}
