//! Running costs with events: ∫ r dt integrated as one more state, so that every derivative
//! computation differentiates it through the events with no quadrature of its own.
//!
//! An event cuts a step short at t*, and the running cost's stage quadrature h Σ_i b_i r(Y_i) covers
//! the whole step. Instead, for a model with events the integral becomes a state of the augmented
//! system z = (u, q), q' = r(t, u, p), q(t0) = 0, with q passed unchanged through every jump and left
//! out of the error norm (`error_norm_components`: the seminorm, so an explicit method takes the same
//! steps as without it). Then q(t*) is read on the step's own interpolant like u, and its derivatives
//! through events (dt*/dθ, the saltation map, which for q adds (r(t*, u⁻) − r(t*, u⁺)) dt*/dθ) come
//! from the same maps as the state's. The objective becomes Σ_k g_k + q(t_end) (an observation of q at
//! the end of the span) with the same event terms. Hand-written Jacobians and products of the model
//! are not used on this path (the augmented rhs is differentiated by AD).

use ndarray::{ArrayView1, ArrayViewMut1, s};
use odesens_solver::{
    Atol, EventAction, EventSpec, OdeProblem, OdeSystem, Scalar, SolverError, SolverOptions,
};

use crate::common::Gradient;
use crate::error::SensitivityError;
use crate::objective::{Firing, Objective};

/// The model with the running cost as its last state: z = (u, q), q' = r(t, u, p).
pub(crate) struct WithRunningCost<'m, M, O> {
    model: &'m M,
    objective: &'m O,
    n: usize,
}

impl<M: OdeSystem, O: Objective> OdeSystem for WithRunningCost<'_, M, O> {
    fn n_states(&self) -> usize {
        self.n + 1
    }
    fn n_params(&self) -> usize {
        self.model.n_params()
    }
    fn rhs<S: Scalar>(&self, t: S, z: ArrayView1<S>, p: ArrayView1<S>, mut dz: ArrayViewMut1<S>) {
        let n = self.n;
        let u = z.slice(s![..n]);
        self.model.rhs(t, u, p, dz.slice_mut(s![..n]));
        // r reads t as a number: no derivative of the solution needs f_t.
        dz[n] = self.objective.running_cost(t.re(), u, p);
    }
    fn jacobian_sparsity(&self) -> Option<Vec<(usize, usize)>> {
        // The model's pattern and a full row for r_u (q itself influences nothing).
        self.model.jacobian_sparsity().map(|mut pattern| {
            pattern.extend((0..self.n).map(|j| (self.n, j)));
            pattern
        })
    }
    fn n_events(&self) -> usize {
        self.model.n_events()
    }
    fn event_spec(&self, k: usize) -> EventSpec {
        self.model.event_spec(k)
    }
    fn event_condition<S: Scalar>(&self, k: usize, t: S, z: ArrayView1<S>, p: ArrayView1<S>) -> S {
        self.model.event_condition(k, t, z.slice(s![..self.n]), p)
    }
    fn event_jump<S: Scalar>(
        &self,
        k: usize,
        t: S,
        z: ArrayView1<S>,
        p: ArrayView1<S>,
        mut z_new: ArrayViewMut1<S>,
    ) {
        // q is left as it is (z_new holds a copy of z).
        let n = self.n;
        self.model
            .event_jump(k, t, z.slice(s![..n]), p, z_new.slice_mut(s![..n]));
    }
    fn event_fired(&self, k: usize, armed: &mut [bool]) {
        self.model.event_fired(k, armed);
    }
}

/// The objective on the augmented state: the same observations and event terms on u, and q at the
/// end of the span.
pub(crate) struct WithFinalIntegral<'o, O> {
    objective: &'o O,
    times: Vec<f64>,
    /// The objective's own observations (the last time may be an added t_end).
    own: usize,
    n: usize,
}

impl<O: Objective> Objective for WithFinalIntegral<'_, O> {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, k: usize, t: f64, z: ArrayView1<S>, p: ArrayView1<S>) -> S {
        let u = z.slice(s![..self.n]);
        let q = if k + 1 == self.times.len() {
            z[self.n]
        } else {
            z[self.n] * S::from(0.0)
        };
        if k < self.own {
            self.objective.observation(k, t, u, p) + q
        } else {
            q
        }
    }
    fn has_event_cost(&self) -> bool {
        self.objective.has_event_cost()
    }
    fn event_cost<S: Scalar>(&self, firing: Firing, t: S, z: ArrayView1<S>, p: ArrayView1<S>) -> S {
        self.objective
            .event_cost(firing, t, z.slice(s![..self.n]), p)
    }
    fn check_events(&self, counts: &[usize]) -> Result<(), SensitivityError> {
        self.objective.check_events(counts)
    }
    fn check(&self, n: usize) -> Result<(), SensitivityError> {
        self.objective.check(n - 1)
    }
}

/// Whether `objective` on `problem` takes the augmented path: a running cost with events.
pub(crate) fn augments<M: OdeSystem, O: Objective>(problem: &OdeProblem<M>, objective: &O) -> bool {
    problem.model().n_events() > 0 && objective.has_running_cost()
}

/// Runs `job` on the augmented problem, objective and options, and maps its gradient back (drops
/// ∂G/∂q0 = 1 and q's rows).
///
/// # Errors
/// [`SensitivityError::Unsupported`] for a model with an event that stops (the integral would end
/// at the moving t*, which no observation reads); the objective's own errors; `job`'s.
pub(crate) fn with_running_cost<M: OdeSystem, O: Objective, T>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    job: impl FnOnce(
        &OdeProblem<WithRunningCost<'_, M, O>>,
        &SolverOptions,
        &WithFinalIntegral<'_, O>,
    ) -> Result<T, SensitivityError>,
) -> Result<T, SensitivityError> {
    let model = problem.model();
    let n = problem.n_states();
    if (0..model.n_events()).any(|k| model.event_spec(k).action == EventAction::Stop) {
        return Err(SensitivityError::Unsupported {
            operation: "running costs (integral terms) with an event that stops the integration",
        });
    }
    objective.check(n)?;
    let mut z0 = problem.u0().to_vec();
    z0.push(0.0);
    let augmented = OdeProblem::new(
        WithRunningCost {
            model,
            objective,
            n,
        },
        z0,
        problem.params().to_owned(),
        (problem.t0(), problem.t_end()),
    )?;
    let mut times = objective.observation_times().to_vec();
    let own = times.len();
    if times.last() != Some(&problem.t_end()) {
        times.push(problem.t_end());
    }
    let final_integral = WithFinalIntegral {
        objective,
        times,
        own,
        n,
    };
    let mut opts = options.clone();
    opts.error_norm_components = Some(opts.error_norm_components.unwrap_or(n).min(n));
    if let Atol::PerComponent(a) = &mut opts.atol {
        if a.len() != n {
            return Err(SolverError::DimensionMismatch {
                what: "atol",
                expected: n,
                got: a.len(),
            }
            .into());
        }
        // Any positive value: q is outside the error norm.
        a.push(1.0);
    }
    job(&augmented, &opts, &final_integral)
}

/// The gradient of the augmented problem as the original's: ∂G/∂q0 and q's adjoint dropped.
pub(crate) fn strip_gradient(mut g: Gradient, n: usize) -> Gradient {
    g.wrt_u0 = g.wrt_u0.slice(s![..n]).to_owned();
    if let Some(adjoint) = g.adjoint.as_mut() {
        adjoint.lambda = adjoint.lambda.slice(s![.., ..n]).to_owned();
    }
    if let Some(u0) = g.u0_reconstructed.as_mut() {
        *u0 = u0.slice(s![..n]).to_owned();
    }
    g
}
