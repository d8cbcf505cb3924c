//! Scalar functionals of a solution:
//! G(p, u0) = Σ_k g_k(t_k, u(t_k), p) + ∫_{t0}^{T} r(t, u, p) dt + Σ_j c_j(t*_j, u(t*_j), p).
//!
//! Observation times t_k become tstops of the solve, so u(t_k) is a step value (no interpolation) and the
//! adjoint λ jumps by ∂g_k/∂u there. A terminal cost is an observation at T. The integral is computed
//! with the solve's own stages, q_{n+1} = q_n + h Σ_i b_i r(t_n + c_i h, Y_i, p), so that its gradient is
//! exact for the discrete scheme. The event terms c_j read the firings of the model's events
//! ([`odesens_solver::events`]): their times t*_j, which move with θ, and the states located there
//! (for example G = t*₁, the time of a first bounce or of a pendulum's flip, or a misfit of observed
//! event times); their gradients go through dt*/dθ ([`Objective::event_cost`]).

use ndarray::{Array2, ArrayView1};
use odesens_solver::Scalar;

use crate::error::SensitivityError;

/// One event among those that fired at one time, as an objective's event cost sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Firing {
    /// The event's index k.
    pub event: usize,
    /// How often event k fired before (0 the first time).
    pub occurrence: usize,
    /// The firing's index among all firings of the solve (several events firing together share it).
    pub index: usize,
    /// The event's position among those firing together (0 for the first, in the order their actions
    /// were applied).
    pub rank: usize,
}

/// Counts firings along a solve, naming each event that fires ([`Firing`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct FiringCounter {
    /// Firings so far per event.
    pub counts: Vec<usize>,
    index: usize,
}

impl FiringCounter {
    /// A counter for `n_events` events.
    pub fn new(n_events: usize) -> Self {
        Self {
            counts: vec![0; n_events],
            index: 0,
        }
    }

    /// The events of the next firing, `events` in the order they fired, into `out` (cleared first).
    pub fn next(&mut self, events: &[usize], out: &mut Vec<Firing>) {
        out.clear();
        for (rank, &event) in events.iter().enumerate() {
            out.push(Firing {
                event,
                occurrence: self.counts[event],
                index: self.index,
                rank,
            });
            self.counts[event] += 1;
        }
        self.index += 1;
    }
}

/// A scalar objective; generic over the scalar type so that its gradients come by AD.
///
/// # Requirements
/// Observation times sorted in the direction of integration, inside the span (t0 allowed).
pub trait Objective: Sync {
    /// The observation times t_k (default: none).
    fn observation_times(&self) -> &[f64] {
        &[]
    }

    /// g_k(t_k, u, p) for observation `k` (called only for the times of
    /// [`Objective::observation_times`]; the default, for objectives without observations, is zero).
    fn observation<S: Scalar>(&self, k: usize, t: f64, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
        let _ = (k, t, p);
        u[0] * S::from(0.0)
    }

    /// Whether the integral term ∫ r dt is present (default: no). With events it is integrated as one
    /// more state of the solve (see [`crate::gradient`]).
    fn has_running_cost(&self) -> bool {
        false
    }

    /// The integrand r(t, u, p) (default: zero).
    fn running_cost<S: Scalar>(&self, t: f64, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
        let _ = (t, p);
        u[0] * S::from(0.0)
    }

    /// Whether the objective has event terms ([`Objective::event_cost`]; default: no).
    fn has_event_cost(&self) -> bool {
        false
    }

    /// The term c(t*, u⁻, p) added for each event that fires: `firing` names the event and how often it
    /// fired before, t* is the event time (generic like u, so that ∂c/∂t* comes by AD and enters the
    /// gradient through dt*/dθ), u⁻ = u(t*) the state located at the event before any jump
    /// (default: zero).
    ///
    /// With s⁻ = ∂u⁻/∂θ at fixed time, dc/dθ = c_t dt*/dθ + c_u (s⁻ + f⁻ dt*/dθ) + c_p ṗ.
    fn event_cost<S: Scalar>(&self, firing: Firing, t: S, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
        let _ = (firing, u, p);
        t * S::from(0.0)
    }

    /// Checks the firings of a solve against what the event terms need (`counts[k]`: how often event k
    /// fired); the default accepts any.
    ///
    /// # Errors
    /// [`SensitivityError::MissingEvent`] when an event the objective reads did not fire often enough.
    fn check_events(&self, counts: &[usize]) -> Result<(), SensitivityError> {
        let _ = counts;
        Ok(())
    }

    /// Checks the objective against a system of `n` states (the default accepts any).
    ///
    /// # Errors
    /// [`SensitivityError::DimensionMismatch`] when the objective was built for another size.
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        let _ = n;
        Ok(())
    }
}

/// One component of the state at time t: G = u_c(t).
#[derive(Debug, Clone)]
pub struct ComponentAt {
    times: [f64; 1],
    component: usize,
}

impl ComponentAt {
    /// G = u_component(t).
    pub fn new(component: usize, t: f64) -> Self {
        Self {
            times: [t],
            component,
        }
    }
}

impl Objective for ComponentAt {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u[self.component]
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.component >= n {
            return Err(SensitivityError::DimensionMismatch {
                what: "ComponentAt component (must be < n)",
                expected: n,
                got: self.component,
            });
        }
        Ok(())
    }
}

/// A weighted sum of the state at time t: G = wᵀu(t).
#[derive(Debug, Clone)]
pub struct WeightedSumAt {
    times: [f64; 1],
    weights: Vec<f64>,
}

impl WeightedSumAt {
    /// G = Σ_i w_i u_i(t).
    pub fn new(weights: Vec<f64>, t: f64) -> Self {
        Self {
            times: [t],
            weights,
        }
    }
}

impl Objective for WeightedSumAt {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u.iter()
            .zip(&self.weights)
            .fold(S::from(0.0), |acc, (&x, &w)| acc + x * w)
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.weights.len() != n {
            return Err(SensitivityError::DimensionMismatch {
                what: "WeightedSumAt weights",
                expected: n,
                got: self.weights.len(),
            });
        }
        Ok(())
    }
}

/// The squared norm of the state at time t: G = ‖u(t)‖² (the course's adjoint example).
#[derive(Debug, Clone)]
pub struct SquaredNormAt {
    times: [f64; 1],
}

impl SquaredNormAt {
    /// G = ‖u(t)‖².
    pub fn new(t: f64) -> Self {
        Self { times: [t] }
    }
}

impl Objective for SquaredNormAt {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, _k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u.iter().fold(S::from(0.0), |acc, &x| acc + x * x)
    }
}

/// Least squares against data: G = Σ_k ½ Σ_i (u_i(t_k) − d_ki)².
#[derive(Debug, Clone)]
pub struct LeastSquares {
    times: Vec<f64>,
    data: Array2<f64>,
}

impl LeastSquares {
    /// Data `data[[k, i]]` observed at `times[k]`.
    ///
    /// # Errors
    /// [`SensitivityError::DimensionMismatch`] when the data has not one row per time.
    pub fn new(times: Vec<f64>, data: Array2<f64>) -> Result<Self, SensitivityError> {
        if data.nrows() != times.len() {
            return Err(SensitivityError::DimensionMismatch {
                what: "LeastSquares data rows",
                expected: times.len(),
                got: data.nrows(),
            });
        }
        Ok(Self { times, data })
    }
}

impl Objective for LeastSquares {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, k: usize, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        let row = self.data.row(k);
        u.iter()
            .zip(row.iter())
            .fold(S::from(0.0), |acc, (&x, &d)| {
                let r = x - d;
                acc + r * r * 0.5
            })
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.data.ncols() != n {
            return Err(SensitivityError::DimensionMismatch {
                what: "LeastSquares data columns",
                expected: n,
                got: self.data.ncols(),
            });
        }
        Ok(())
    }
}

/// The integral of one component squared: G = ∫_{t0}^{T} u_c(t)² dt.
#[derive(Debug, Clone)]
pub struct IntegralOfSquare {
    component: usize,
}

impl IntegralOfSquare {
    /// G = ∫ u_component² dt.
    pub fn new(component: usize) -> Self {
        Self { component }
    }
}

impl Objective for IntegralOfSquare {
    fn has_running_cost(&self) -> bool {
        true
    }
    fn running_cost<S: Scalar>(&self, _t: f64, u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        u[self.component] * u[self.component]
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        if self.component >= n {
            return Err(SensitivityError::DimensionMismatch {
                what: "IntegralOfSquare component (must be < n)",
                expected: n,
                got: self.component,
            });
        }
        Ok(())
    }
}

/// The time of an event: G = t* of the `occurrence`-th firing of event `event` (0 the first), or of the
/// first firing of any event ([`EventTime::first`]), e.g. the time until a double pendulum first flips.
#[derive(Debug, Clone, Copy)]
pub struct EventTime {
    /// `None`: the first firing of any event.
    event: Option<(usize, usize)>,
}

impl EventTime {
    /// G = t* of the `occurrence`-th firing of event `event` (0 the first).
    pub fn new(event: usize, occurrence: usize) -> Self {
        Self {
            event: Some((event, occurrence)),
        }
    }

    /// G = t* of the solve's first firing, whichever event fired.
    pub fn first() -> Self {
        Self { event: None }
    }
}

impl Objective for EventTime {
    fn has_event_cost(&self) -> bool {
        true
    }
    fn event_cost<S: Scalar>(&self, f: Firing, t: S, _u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        let read = match self.event {
            Some((event, occurrence)) => f.event == event && f.occurrence == occurrence,
            None => f.index == 0 && f.rank == 0,
        };
        if read { t } else { t * S::from(0.0) }
    }
    fn check_events(&self, counts: &[usize]) -> Result<(), SensitivityError> {
        let (event, needed) = match self.event {
            Some((event, occurrence)) => (Some(event), occurrence + 1),
            None => (None, 1),
        };
        let fired = match event {
            Some(k) => counts.get(k).copied().unwrap_or(0),
            None => counts.iter().sum(),
        };
        if fired < needed {
            return Err(SensitivityError::MissingEvent {
                event,
                needed,
                fired,
            });
        }
        Ok(())
    }
}

/// Least squares on event times: G = ½ Σ_i (t*_i − d_i)² over the first `observed.len()` firings
/// t*_i of event `event` (e.g. observed bounce times).
#[derive(Debug, Clone)]
pub struct EventTimeMisfit {
    event: usize,
    observed: Vec<f64>,
}

impl EventTimeMisfit {
    /// Event `event`'s firings against the times `observed` (in order).
    pub fn new(event: usize, observed: Vec<f64>) -> Self {
        Self { event, observed }
    }
}

impl Objective for EventTimeMisfit {
    fn has_event_cost(&self) -> bool {
        true
    }
    fn event_cost<S: Scalar>(&self, f: Firing, t: S, _u: ArrayView1<S>, _p: ArrayView1<S>) -> S {
        match self.observed.get(f.occurrence) {
            Some(&d) if f.event == self.event => {
                let r = t - d;
                r * r * 0.5
            }
            _ => t * S::from(0.0),
        }
    }
    fn check_events(&self, counts: &[usize]) -> Result<(), SensitivityError> {
        let fired = counts.get(self.event).copied().unwrap_or(0);
        if fired < self.observed.len() {
            return Err(SensitivityError::MissingEvent {
                event: Some(self.event),
                needed: self.observed.len(),
                fired,
            });
        }
        Ok(())
    }
}
