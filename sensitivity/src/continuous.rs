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
use odesens_solver::linalg::SparsityPattern;
use odesens_solver::{
    BdfIntegrator, DenseOutput, EventHit, EventLocator, ImplicitIntegrator, Integrator,
    LinearSolverKind, Method, OdeProblem, OdeSystem, Scalar, SolverError, SolverOptions,
    Statistics, StepStages, Stepper,
};

use crate::ad::derivatives::Derivatives;
use crate::checkpointing::{Action, Checkpointing, Stack, revolve};
use crate::common::{
    EventRecord, Gradient, ObjectiveTracker, SensitivityStats, check_objective, derivative_options,
    forward_pass,
};
use crate::error::{SensitivityError, check_finite};
use crate::events::EventAdjoint;
use crate::objective::{Firing, Objective};
use crate::step_diff::{Capability, StepDiff, StepFamily, WithStepper, dispatch, require};

/// Settings of the backward solve.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContinuousSettings {
    /// Method of the backward solve (`None`: the forward one). Explicit or implicit: an implicit method
    /// solves λ' = −f_uᵀλ − r_uᵀ with Newton on the iteration matrix I − hγ(−f_uᵀ) (the transposed
    /// Jacobian, sparse when the forward problem's is: its pattern transposed, its values by the
    /// forward problem's colouring) and integrates q outside Newton by the method's own quadrature,
    /// q_{n+1} = q_n + h Σ_i b_i (−f_pᵀλ − r_pᵀ)(t_i, Λ_i), one vjp per stage (CVODES' `CVodeQuadB`
    /// idea; BDF/NDF: I − c(−f_uᵀ), and 3-point Gauss on each step's interpolating polynomial). The
    /// user's [`SolverOptions::implicit`] settings apply to it. After a Kvaerno5 forward
    /// solve the accuracy is limited by its cubic Hermite dense output, whatever this method
    /// (docs/stiff.md).
    pub method: Option<Method>,
    /// Relative tolerance of the backward solve (`None`: the forward one).
    pub rtol: Option<f64>,
    /// Absolute tolerance of the backward solve (`None`: the forward one's scalar atol, or 1e-6).
    pub atol: Option<f64>,
    /// Put the quadrature q (one component per parameter) in the error norm too (default: no, the
    /// seminorm). Explicit backward methods only: an implicit one integrates q outside its error norm.
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
    /// The backward integrator's steps, rhs evaluations (one vjp each), and for an implicit method its
    /// Jacobians (each one sparse or dense f_u at u(t), transposed) and factorizations.
    pub backward: Statistics,
    /// Checkpointed segments.
    pub segments: usize,
}

/// What the backward integrator's state holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// [λ, q]: an explicit backward method, u from the forward segments' dense output.
    Joint,
    /// [u, λ, q]: the backsolve adjoint.
    Backsolve,
    /// [λ] alone: an implicit backward method; q is integrated outside Newton from the stages.
    LambdaOnly,
}

/// The model's Jacobian pattern, its colouring, and its transpose: the sparse path of −f_uᵀ.
struct Transposed {
    model: SparsityPattern,
    colors: (Vec<usize>, usize),
    transposed: SparsityPattern,
    /// Position in `transposed` of each entry of `model` (in `model`'s CSC order).
    map: Vec<usize>,
}

impl Transposed {
    fn new(model: SparsityPattern) -> Self {
        let n = model.n();
        let entries = (0..n).flat_map(|j| model.col_rows(j).iter().map(move |&i| (j, i)));
        let transposed = SparsityPattern::new(n, entries.collect::<Vec<_>>())
            .expect("a transposed n × n pattern stays inside n × n");
        let mut map = vec![0; model.nnz()];
        for j in 0..n {
            for (k, &i) in model.col_range(j).zip(model.col_rows(j)) {
                // Entry (i, j) of f_u is entry (j, i) of f_uᵀ: column i, row j.
                let rows = transposed.col_rows(i);
                let at = rows.binary_search(&j).expect("every entry is transposed");
                map[k] = transposed.col_range(i).start + at;
            }
        }
        let colors = model.column_colors();
        Self {
            model,
            colors,
            transposed,
            map,
        }
    }
}

/// Where the adjoint system gets u(t).
enum Source {
    /// Dense output of the current forward segment, recomputed from a checkpoint.
    Segment {
        dense: Option<DenseOutput>,
        scratch: Vec<f64>,
    },
    /// u is the first n components of the backward state.
    Backsolve,
}

struct Inner<'a, 'o, M: OdeSystem, O: Objective> {
    source: Source,
    /// u(t) interpolated from the segment.
    u: Vec<f64>,
    der: Derivatives<'a, M>,
    tracker: ObjectiveTracker<'o, O>,
    p: Vec<f64>,
    u_bar: Vec<f64>,
    p_bar: Vec<f64>,
    /// The values of f_u on the model's pattern (sparse implicit backward solve).
    jac_values: Vec<f64>,
    running: bool,
    /// The first failure inside the rhs (reported after the step).
    error: Option<SensitivityError>,
}

impl<M: OdeSystem, O: Objective> Inner<'_, '_, M, O> {
    /// u(t) from the installed segment into `self.u`. Stages with c_i > 1 (Kvaerno5) look past the
    /// segment's start, into the segment not yet recomputed: the boundary step's polynomial is extended
    /// there (clamping t to the segment instead put heat-equation gradients 1e-3 off; see
    /// [`reach_stops`]). The explicit integrator's initial-step probe may look further: it gets u at
    /// one step beyond.
    fn load_u(&mut self, t: f64) -> Result<(), SensitivityError> {
        let Source::Segment { dense, scratch } = &mut self.source else {
            return Ok(());
        };
        let dense = dense.as_ref().ok_or(SolverError::NoDenseOutput)?;
        dense.extrapolate_into(t, &mut self.u, scratch)?;
        Ok(())
    }

    /// u_bar = λᵀ f_u + r_u, p_bar = λᵀ f_p + r_p at (t, u) (`u` = `self.u` unless given).
    fn adjoint_products(&mut self, t: f64, u: Option<&[f64]>, lambda: &[f64]) {
        let u = u.unwrap_or(&self.u);
        self.u_bar.iter_mut().for_each(|x| *x = 0.0);
        self.p_bar.iter_mut().for_each(|x| *x = 0.0);
        self.der
            .vjp_add(t, u, &self.p, lambda, &mut self.u_bar, &mut self.p_bar);
        if self.running {
            match self.tracker.running_gradient(t, u, &self.p) {
                Ok(_) => {
                    for (a, g) in self.u_bar.iter_mut().zip(&self.tracker.g_u) {
                        *a += g;
                    }
                    for (a, g) in self.p_bar.iter_mut().zip(&self.tracker.g_p) {
                        *a += g;
                    }
                }
                Err(e) => {
                    self.error.get_or_insert(e);
                }
            }
        }
    }
}

/// The adjoint ODE as an [`OdeSystem`] for the solver: state [λ, q], [u, λ, q] or [λ] (see [`Layout`]).
/// Evaluated in f64 only: for other scalar types the rhs passes values through and drops derivatives
/// (the backward system is never differentiated; an implicit backward method gets its Jacobian from
/// [`OdeSystem::jacobian`] or [`OdeSystem::sparse_jacobian`] below, and its pattern is always declared,
/// so it is never detected through the rhs).
struct AdjointSystem<'a, 'o, M: OdeSystem, O: Objective> {
    n: usize,
    np: usize,
    layout: Layout,
    model: &'a M,
    /// The sparse path of an implicit backward solve (`None`: dense −f_uᵀ).
    transposed: Option<Transposed>,
    inner: Mutex<Inner<'a, 'o, M, O>>,
}

impl<'a, 'o, M: OdeSystem, O: Objective> AdjointSystem<'a, 'o, M, O> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<'a, 'o, M, O>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where λ starts in the integrator's state.
    fn offset(&self) -> usize {
        if self.layout == Layout::Backsolve {
            self.n
        } else {
            0
        }
    }

    /// Installs a segment's dense output; returns the previous one (for reuse).
    fn set_dense(&self, new: Option<DenseOutput>) -> Option<DenseOutput> {
        let mut inner = self.lock();
        match &mut inner.source {
            Source::Segment { dense, scratch } => {
                let need = new.as_ref().map_or(0, DenseOutput::scratch_len);
                scratch.resize(need, 0.0);
                std::mem::replace(dense, new)
            }
            Source::Backsolve => None,
        }
    }

    /// Observation jumps at t (the observations `obs[.. obs_left]` not yet added, the last ones first):
    /// λ += ∂g/∂u(u(t)), q += ∂g/∂p. `z` is the integrator's state, `q_outside` the quadrature when it
    /// is not part of it. Returns whether z changed.
    fn jump(
        &self,
        obs: &[f64],
        t: f64,
        z: &mut [f64],
        q_outside: &mut [f64],
        obs_left: &mut usize,
    ) -> Result<bool, SensitivityError> {
        let (n, offset) = (self.n, self.offset());
        let mut jumped = false;
        while *obs_left > 0 && obs[*obs_left - 1] == t {
            let k = *obs_left - 1;
            let mut guard = self.lock();
            let inner = &mut *guard;
            if self.layout == Layout::Backsolve {
                inner.u.copy_from_slice(&z[..n]);
            } else {
                inner.load_u(t)?;
            }
            inner.tracker.observation_gradient(k, &inner.u, &inner.p)?;
            let (lambda, q) = match self.layout {
                Layout::LambdaOnly => (&mut z[..], &mut q_outside[..]),
                _ => z[offset..].split_at_mut(n),
            };
            for (l, g) in lambda.iter_mut().zip(&inner.tracker.g_u) {
                *l += g;
            }
            for (q, g) in q.iter_mut().zip(&inner.tracker.g_p) {
                *q += g;
            }
            *obs_left -= 1;
            jumped = true;
        }
        Ok(jumped)
    }

    /// The adjoint's jump at an event (`hit`, its `firings`): λ⁺ ↦ λ⁻ and q += the parameters' part,
    /// by the transposed event map ([`EventAdjoint`]: the continuous adjoint's jump condition, the
    /// same as the discrete one's); backsolve's u jumps back to u⁻.
    fn event_jump(
        &self,
        hit: &EventHit,
        firings: &[Firing],
        ev: &mut EventAdjoint,
        z: &mut [f64],
        q_outside: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let (n, offset) = (self.n, self.offset());
        let mut guard = self.lock();
        let inner = &mut *guard;
        ev.firings.clear();
        ev.firings.extend_from_slice(firings);
        if self.layout == Layout::Backsolve {
            z[..n].copy_from_slice(&hit.u_before);
        }
        let (lambda, q) = match self.layout {
            Layout::LambdaOnly => (&mut z[..], &mut q_outside[..]),
            _ => z[offset..].split_at_mut(n),
        };
        ev.apply(
            &mut inner.der,
            self.model,
            hit,
            (&mut inner.tracker, &inner.p),
            lambda,
            q,
        )
    }

    fn eval(&self, t: f64, z: &[f64], dz: &mut [f64]) {
        let (n, offset) = (self.n, self.offset());
        let mut guard = self.lock();
        let inner = &mut *guard;
        let lambda = &z[offset..offset + n];
        let u = if self.layout == Layout::Backsolve {
            // u' = f(t, u, p).
            self.model.rhs(
                t,
                ArrayView1::from(&z[..n]),
                ArrayView1::from(&inner.p[..]),
                ArrayViewMut1::from(&mut dz[..n]),
            );
            Some(&z[..n])
        } else {
            if let Err(e) = inner.load_u(t) {
                inner.error.get_or_insert(e);
            }
            None
        };
        inner.adjoint_products(t, u, lambda);
        for (d, a) in dz[offset..offset + n].iter_mut().zip(&inner.u_bar) {
            *d = -a;
        }
        if self.layout != Layout::LambdaOnly {
            for (d, a) in dz[offset + n..].iter_mut().zip(&inner.p_bar) {
                *d = -a;
            }
        }
    }

    /// q += w (−f_pᵀλ − r_pᵀ)(t, u(t)): one stage of the quadrature of an implicit backward step.
    fn quadrature(
        &self,
        t: f64,
        lambda: &[f64],
        w: f64,
        q: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.load_u(t)?;
        inner.adjoint_products(t, None, lambda);
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        for (q, a) in q.iter_mut().zip(&inner.p_bar) {
            *q -= w * a;
        }
        Ok(())
    }

    /// The Jacobian −f_uᵀ(u(t)) of λ' in column-major order (dense implicit backward solve).
    fn dense_jacobian(&self, t: f64, jac: &mut [f64]) -> Result<(), SensitivityError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.load_u(t)?;
        // f_u row-major is f_uᵀ column-major.
        let d = inner.der.state_jacobian(t, &inner.u, &inner.p);
        for (x, v) in jac.iter_mut().zip(d) {
            *x = -v;
        }
        Ok(())
    }

    /// The values of −f_uᵀ(u(t)) on the transposed pattern (sparse implicit backward solve).
    fn transposed_jacobian(
        &self,
        t: f64,
        tp: &Transposed,
        values: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.load_u(t)?;
        inner.jac_values.resize(tp.model.nnz(), 0.0);
        let (colors, count) = (&tp.colors.0[..], tp.colors.1);
        inner.der.sparse_jacobian(
            (t, &inner.u, &inner.p),
            &tp.model,
            (colors, count),
            &mut inner.jac_values,
        );
        for (&at, v) in tp.map.iter().zip(&inner.jac_values) {
            values[at] = -v;
        }
        Ok(())
    }

    /// Records a failure found where the solver's interface cannot return it.
    fn fail(&self, e: SensitivityError) {
        self.lock().error.get_or_insert(e);
    }
}

impl<M: OdeSystem, O: Objective> OdeSystem for AdjointSystem<'_, '_, M, O> {
    fn n_states(&self) -> usize {
        match self.layout {
            Layout::Joint => self.n + self.np,
            Layout::Backsolve => 2 * self.n + self.np,
            Layout::LambdaOnly => self.n,
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
    fn jacobian(&self, t: f64, _z: &[f64], _p: &[f64], jac: &mut [f64]) -> bool {
        if self.layout != Layout::LambdaOnly {
            return false;
        }
        if let Err(e) = self.dense_jacobian(t, jac) {
            jac.iter_mut().for_each(|x| *x = 0.0);
            self.fail(e);
        }
        true
    }
    fn sparse_jacobian(
        &self,
        t: f64,
        _z: &[f64],
        _p: &[f64],
        pattern: &SparsityPattern,
        values: &mut [f64],
    ) -> bool {
        let Some(tp) = self.transposed.as_ref() else {
            return false;
        };
        let result = if pattern == &tp.transposed {
            self.transposed_jacobian(t, tp, values)
        } else {
            Err(SensitivityError::Solver(SolverError::Misuse {
                call: "AdjointSystem::sparse_jacobian",
                expected: "the transposed pattern the adjoint system declared",
            }))
        };
        if let Err(e) = result {
            values.iter_mut().for_each(|x| *x = 0.0);
            self.fail(e);
        }
        true
    }
    fn jacobian_sparsity(&self) -> Option<Vec<(usize, usize)>> {
        let tp = self.transposed.as_ref()?;
        let t = &tp.transposed;
        Some(
            (0..t.n())
                .flat_map(|j| t.col_rows(j).iter().map(move |&i| (i, j)))
                .collect(),
        )
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
    let method = settings.method.unwrap_or(options.method);
    let mut o = SolverOptions::default()
        .method(method)
        .rtol(settings.rtol.unwrap_or(options.rtol))
        .atol(atol)
        .tstops(tstops)
        .save_end_only()
        .max_steps(options.max_steps);
    o.controller = options.controller;
    if method.is_implicit() {
        o.implicit = options.implicit;
    }
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
/// ODE backwards with `settings`' method (explicit or implicit) and tolerances, each forward segment
/// recomputed with dense output when the backward solve reaches it. Backsolve: u is integrated
/// backwards with λ from u(t_end) and nothing is stored — **unreliable for chaotic or strongly
/// dissipative systems** (see the module docs); [`Gradient::u0_reconstructed`] shows how far the
/// reversed solve drifted.
///
/// # Errors
/// Solver errors of either solve; objective errors; [`SensitivityError::InvalidSetting`] for
/// `segment_steps` = 0 or `quadrature_in_error_norm` with an implicit backward method;
/// [`SensitivityError::NonFiniteDerivative`] if λ or q becomes NaN/∞;
/// [`SensitivityError::UnsupportedMethod`] for backsolve with an implicit backward method.
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
struct Backward<'s, 'a, 'o, M: OdeSystem, O: Objective, B, F> {
    /// Built at the first `run_to` by `make`, once the last segment's dense output is installed (the
    /// integrator evaluates the rhs, and an implicit one the Jacobian, when it starts).
    back: Option<B>,
    make: F,
    system: &'s AdjointSystem<'a, 'o, M, O>,
    obs: &'o [f64],
    obs_left: usize,
    /// The integrator's state, and q when it is integrated outside ([`Layout::LambdaOnly`]).
    z: Vec<f64>,
    q: Vec<f64>,
    /// The forward pass's events, the last ones first to be crossed.
    events: BackwardEvents<'s>,
    t0: f64,
    t_end: f64,
}

/// The events the backward solve crosses: the forward pass's record, each firing's events, how many
/// are still ahead (counted from the start), and the transposed event map's buffers.
struct BackwardEvents<'s> {
    record: &'s EventRecord,
    firings: Vec<Vec<Firing>>,
    left: usize,
    adjoint: EventAdjoint,
}

impl<'s, 'a, 'o, M: OdeSystem, O: Objective, B: Stepper, F: FnMut() -> Result<B, SolverError>>
    Backward<'s, 'a, 'o, M, O, B, F>
{
    /// The backward solve of `system` from the state `z` (and `q`, see [`Layout`]) at `t_end`, its
    /// integrator built by `make` at the first [`Backward::run_to`].
    fn new(
        make: F,
        system: &'s AdjointSystem<'a, 'o, M, O>,
        (obs, events): (&'o [f64], &'s EventRecord),
        (z, q): (Vec<f64>, Vec<f64>),
        (t0, t_end): (f64, f64),
    ) -> Self {
        Self {
            back: None,
            make,
            system,
            obs,
            obs_left: obs.len(),
            z,
            q,
            events: BackwardEvents {
                record: events,
                firings: crate::common::firings_of(events, system.model.n_events()),
                left: events.len(),
                adjoint: EventAdjoint::new(system.model),
            },
            t0,
            t_end,
        }
    }

    /// At t: the observation jumps, then the jumps of the events that fired at t (an observation at
    /// an event time reads the state after it). Returns whether z changed.
    fn jumps_at(&mut self, t: f64) -> Result<bool, SensitivityError> {
        let mut changed =
            self.system
                .jump(self.obs, t, &mut self.z, &mut self.q, &mut self.obs_left)?;
        let ev = &mut self.events;
        while ev.left > 0 && ev.record[ev.left - 1].1.t == t {
            ev.left -= 1;
            self.system.event_jump(
                &ev.record[ev.left].1,
                &ev.firings[ev.left],
                &mut ev.adjoint,
                &mut self.z,
                &mut self.q,
            )?;
            changed = true;
        }
        Ok(changed)
    }

    /// The failure recorded inside the adjoint system, else `result`'s.
    fn first_error<T>(&self, result: Result<T, SolverError>) -> Result<T, SensitivityError> {
        match self.system.lock().error.take() {
            Some(e) => Err(e),
            None => Ok(result?),
        }
    }

    /// Integrates backwards down to `t_stop` (a tstop), adding observation and event jumps on the way;
    /// the first call first adds those at t_end.
    fn run_to(&mut self, t_stop: f64) -> Result<(), SensitivityError> {
        if self.back.is_none() {
            let made = (self.make)();
            let mut back = self.first_error(made)?;
            self.z.copy_from_slice(back.u());
            if self.jumps_at(self.t_end)? {
                back.set_state(&self.z)?;
            }
            self.back = Some(back);
        }
        let mut back = self.back.take().expect("built above");
        let result = self.run_built(&mut back, t_stop);
        self.back = Some(back);
        result
    }

    /// [`Backward::run_to`] with the integrator built.
    fn run_built(&mut self, back: &mut B, t_stop: f64) -> Result<(), SensitivityError> {
        let offset = self.system.offset();
        let quadrature = self.system.layout == Layout::LambdaOnly;
        while !back.is_finished() && back.t() != t_stop {
            {
                let step = back.step_accepted();
                if let Some(e) = self.system.lock().error.take() {
                    return Err(e);
                }
                let step = step?;
                if quadrature {
                    // q_{n+1} = q_n + h Σ_i b_i (−f_pᵀλ − r_pᵀ)(t_i, Λ_i).
                    for i in 0..step.stages() {
                        let w = step.h() * step.weight(i);
                        if w != 0.0 {
                            self.system.quadrature(
                                step.stage_time(i),
                                step.stage_value(i),
                                w,
                                &mut self.q,
                            )?;
                        }
                    }
                }
            }
            let t = back.t();
            check_finite("adjoint λ", t, &back.u()[offset..])?;
            check_finite("adjoint quadrature q", t, &self.q)?;
            if t == self.t0 {
                continue;
            }
            self.z.copy_from_slice(back.u());
            if self.jumps_at(t)? {
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
    // The forward segments replay with any stepper; the backward solve takes any method, except that
    // backsolve's is explicit.
    let backward_method = settings.method.unwrap_or(options.method);
    if backsolve {
        require(backward_method, Capability::BacksolveAdjoint)?;
    }
    if settings.quadrature_in_error_norm && backward_method.is_implicit() {
        return Err(SensitivityError::InvalidSetting {
            name: "ContinuousSettings.quadrature_in_error_norm",
            value: 1.0,
            valid: "false with an implicit backward method (it integrates q outside its error norm)",
        });
    }
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

/// The forward pass's record: segments starting at `starts` with the steps from `first_steps` (of
/// `seg` steps, or fewer where an event cut a segment short: every event ends one), their checkpoints
/// (all of them if `keep_all`, else a binomial reversal from `initial` with `snapshots` slots), and the
/// events.
struct Segments<'e, C> {
    initial: C,
    stored: Vec<C>,
    starts: Vec<f64>,
    first_steps: Vec<usize>,
    keep_all: bool,
    snapshots: usize,
    steps: usize,
    events: &'e EventRecord,
}

/// Replays the forward steps `steps` from the replay's current point, restarting it after each event
/// as the forward pass did.
fn advance_steps<S: Stepper>(
    replay: &mut S,
    steps: std::ops::Range<usize>,
    events: &EventRecord,
) -> Result<(), SensitivityError> {
    for k in steps {
        replay.step_accepted()?;
        if let Ok(i) = events.binary_search_by_key(&k, |(step, _)| *step) {
            let hit = &events[i].1;
            if !hit.stop {
                replay.restart_at(hit.t, &hit.u_after)?;
            }
        }
    }
    Ok(())
}

/// What the reversal returns: the final integrator state and q, the backward counters, and the replay's.
struct Reversed {
    z: Vec<f64>,
    q: Vec<f64>,
    obs_left: usize,
    backward: Statistics,
    recomputation: Statistics,
    peak_snapshots: usize,
    recomputed_steps: usize,
}

/// The backward solve over the segments in reverse, each recomputed from its checkpoint (or by binomial
/// reversal) with dense output just before the backward integrator crosses it.
fn reverse<'a, S: StepDiff<'a, M>, M: OdeSystem, O: Objective, B: Stepper>(
    (problem, opts): (&'a OdeProblem<M>, &SolverOptions),
    segments: Segments<'_, S::Checkpoint>,
    mut bw: Backward<'_, '_, '_, M, O, B, impl FnMut() -> Result<B, SolverError>>,
    backsolve: bool,
) -> Result<Reversed, SensitivityError> {
    let system = bw.system;
    let Segments {
        initial,
        stored,
        starts,
        first_steps,
        keep_all,
        snapshots,
        steps,
        events,
    } = segments;
    let units = starts.len();
    let mut recomputation = Statistics::default();
    let mut peak_snapshots = 0;
    let mut recomputed_steps = 0;
    if backsolve {
        bw.run_to(bw.t0)?;
    } else {
        let mut replay = S::start(problem, opts)?;
        let mut spare: Option<DenseOutput> = None;
        // The steps of unit j.
        let unit = |j: usize| first_steps[j]..first_steps.get(j + 1).copied().unwrap_or(steps);
        if keep_all {
            for j in (0..units).rev() {
                replay.restore(&stored[j])?;
                load_segment(&mut replay, system, &mut spare, unit(j).len())?;
                bw.run_to(starts[j])?;
            }
            peak_snapshots = stored.len();
        } else {
            // Binomial reversal over the segments; the unit each slot's checkpoint stands before.
            let mut st = Stack::new(initial, snapshots);
            let mut at = vec![0usize; 1];
            let mut advance =
                |replay: &mut S, from: usize, count: usize| -> Result<(), SensitivityError> {
                    if count > 0 {
                        let range = unit(from).start..unit(from + count - 1).end;
                        recomputed_steps += range.len();
                        advance_steps(replay, range, events)?;
                    }
                    Ok(())
                };
            revolve(units, snapshots.min(units.max(1)), |action| match action {
                Action::Reverse {
                    slot,
                    advance: count,
                } => {
                    replay.restore(&st.items[slot])?;
                    advance(&mut replay, at[slot], count)?;
                    let j = at[slot] + count;
                    load_segment(&mut replay, system, &mut spare, unit(j).len())?;
                    bw.run_to(starts[j])
                }
                Action::Store {
                    slot,
                    advance: count,
                } => {
                    replay.restore(&st.items[slot])?;
                    advance(&mut replay, at[slot], count)?;
                    let new = st.push(&replay);
                    at.resize(new + 1, 0);
                    at[new] = at[slot] + count;
                    Ok(())
                }
                Action::Release => {
                    st.pop();
                    Ok(())
                }
            })?;
            peak_snapshots = st.peak;
        }
        bw.run_to(bw.t0)?;
        recomputation = replay.stats();
    }
    let back = bw.back.take().expect("the backward solve ran");
    let mut z = std::mem::take(&mut bw.z);
    z.copy_from_slice(back.u());
    Ok(Reversed {
        z,
        q: std::mem::take(&mut bw.q),
        obs_left: bw.obs_left,
        backward: back.stats(),
        recomputation,
        peak_snapshots,
        recomputed_steps,
    })
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
    let mut first_steps: Vec<usize> = Vec::new();
    // Where each segment's first step ends.
    let mut first_ends: Vec<f64> = Vec::new();
    let mut locator = EventLocator::new(problem, opts)?;
    let locator = (!locator.is_empty()).then_some(&mut locator);
    let (value, steps, events) = forward_pass(
        &mut forward,
        objective,
        &p,
        (t0, &u0),
        locator,
        |integ, k, restarted| {
            if backsolve {
                return;
            }
            if first_steps.last().is_some_and(|&f| f + 1 == k) {
                first_ends.push(integ.t());
            }
            // A segment every `seg` steps, and one after each event (u jumps there).
            if first_steps
                .last()
                .is_none_or(|&f| restarted || k - f == seg)
            {
                first_steps.push(k);
                starts.push(integ.t());
                if keep_all {
                    stored.push(integ.checkpoint());
                }
            }
        },
    )?;
    // A stop ends the span at its t*, with the state there.
    let (t_last, u_end) = match events.last() {
        Some((_, hit)) if hit.stop => (hit.t, hit.u_after.clone()),
        _ => (t_end, forward.u().to_vec()),
    };
    first_ends.resize(starts.len(), t_last);
    let forward_stats = forward.stats();
    let units = starts.len();

    // Backward system and its options: tstops at observations, segment starts and the user's tstops
    // (discontinuities of the model, which the backward solve must not step across either).
    let obs = objective.observation_times();
    let mut stops: Vec<f64> = obs.to_vec();
    stops.extend(starts.iter().copied());
    stops.extend(events.iter().map(|(_, hit)| hit.t));
    stops.extend(options.tstops.iter().copied());
    stops.extend([t0, t_end]);
    stops.sort_by(f64::total_cmp);
    // Reach stops closer to another stop than round-off could resolve would ask for a step the
    // schedule refuses as too small: leave those out.
    let backward_method = settings.method.unwrap_or(options.method);
    let reach: Vec<f64> = reach_stops(backward_method, &starts, &first_ends, t_last)
        .into_iter()
        .filter(|&r| {
            let at = stops.partition_point(|&s| s < r);
            let far = |i: Option<usize>| {
                i.and_then(|i| stops.get(i))
                    .is_none_or(|&s| (s - r).abs() > 1e-12 * r.abs().max(1.0))
            };
            far(Some(at)) && far(at.checked_sub(1))
        })
        .collect();
    stops.extend(reach);
    stops.retain(|&t| t != t0 && t != t_end && (t - t_last) * (t0 - t_last) > 0.0);
    let back_dir = (t0 - t_end).signum();
    stops.sort_by(|a, b| (back_dir * a).total_cmp(&(back_dir * b)));
    stops.dedup();
    let layout = if backsolve {
        Layout::Backsolve
    } else if StepFamily::of(backward_method) != StepFamily::ExplicitRk {
        Layout::LambdaOnly
    } else {
        Layout::Joint
    };
    let (controlled, total) = match layout {
        Layout::Joint => (n, n + np),
        Layout::Backsolve => (2 * n, 2 * n + np),
        Layout::LambdaOnly => (n, n),
    };
    let bopts = backward_options(options, &settings, stops, controlled, total);
    // The transposed pattern whenever the backward solve may go sparse (its pattern must be declared:
    // detection through the f64-only rhs would see none).
    let transposed = (layout == Layout::LambdaOnly
        && bopts.implicit.linear_solver != LinearSolverKind::Dense)
        .then(|| problem.jacobian_pattern().map(Transposed::new))
        .transpose()?;

    let source = if backsolve {
        Source::Backsolve
    } else {
        Source::Segment {
            dense: None,
            scratch: Vec::new(),
        }
    };
    let system = AdjointSystem {
        n,
        np,
        layout,
        model: problem.model(),
        transposed,
        inner: Mutex::new(Inner {
            source,
            u: vec![0.0; n],
            der: Derivatives::new(problem.model()),
            tracker: ObjectiveTracker::new(objective, n, np),
            p: p.clone(),
            u_bar: vec![0.0; n],
            p_bar: vec![0.0; np],
            jac_values: Vec::new(),
            running: objective.has_running_cost(),
            error: None,
        }),
    };
    let mut z = vec![0.0; total];
    if backsolve {
        z[..n].copy_from_slice(&u_end);
    }
    let q = vec![0.0; if layout == Layout::LambdaOnly { np } else { 0 }];
    let back_problem = OdeProblem::new(system, z.clone(), Vec::<f64>::new(), (t_last, t0))?;
    let system = back_problem.model();
    let segments = Segments {
        initial,
        stored,
        starts,
        first_steps,
        keep_all,
        snapshots,
        steps,
        events: &events,
    };
    let mut rev = if layout == Layout::LambdaOnly && backward_method.is_multistep() {
        let make = || BdfIntegrator::new(&back_problem, &bopts);
        let bw = Backward::new(make, system, (obs, &events), (z, q), (t0, t_last));
        reverse::<S, M, O, _>((problem, opts), segments, bw, backsolve)?
    } else if layout == Layout::LambdaOnly {
        let make = || ImplicitIntegrator::new(&back_problem, &bopts);
        let bw = Backward::new(make, system, (obs, &events), (z, q), (t0, t_last));
        reverse::<S, M, O, _>((problem, opts), segments, bw, backsolve)?
    } else {
        let make = || Integrator::new(&back_problem, &bopts);
        let bw = Backward::new(make, system, (obs, &events), (z, q), (t0, t_last));
        reverse::<S, M, O, _>((problem, opts), segments, bw, backsolve)?
    };
    let mut obs_left = rev.obs_left;
    system.jump(obs, t0, &mut rev.z, &mut rev.q, &mut obs_left)?;
    let inner = system.lock();
    let offset = system.offset();
    let (lambda, q) = match layout {
        Layout::LambdaOnly => (&rev.z[..], &rev.q[..]),
        _ => rev.z[offset..].split_at(n),
    };
    let stats = SensitivityStats {
        forward: forward_stats,
        recomputation: rev.recomputation,
        recomputed_steps: rev.recomputed_steps,
        peak_snapshots: rev.peak_snapshots,
        peak_checkpoint_bytes: rev.peak_snapshots * cp_bytes,
        derivatives: inner.der.counts,
        exact_stage_factorizations: 0,
        krylov_stage_solves: 0,
    };
    Ok(Gradient {
        value,
        wrt_params: Array1::from(q.to_vec()),
        wrt_u0: Array1::from(lambda.to_vec()),
        stats,
        adjoint: None,
        backward: Some(BackwardStats {
            backward: rev.backward,
            segments: units,
        }),
        u0_reconstructed: backsolve.then(|| Array1::from(rev.z[..n].to_vec())),
    })
}

/// How far before a segment's start (in lengths of its first step) a stage may read u(t): the cubic
/// Hermite polynomial of that step extended by θ has an error growing like θ²(1 + θ)², 2.9 at θ = 0.9
/// against 1/16 inside the step. On the Brusselator N = 5 at loose tolerances the continuous gradient
/// was 7.6e-4 off the truth with a reach of 0.9, 1.2e-4 with 0.25, and 5.6e-5 without these stops (see
/// the open issue on tstops in docs/stiff.md).
const REACH: f64 = 0.25;

/// Extra tstops of the backward solve for a method with a node c_max > 1 (Kvaerno5's c_2 ≈ 1.23): a step
/// of size H ending at a point d after a segment's start evaluates u at d − (c_max − 1)H, before that
/// start, in the segment not yet recomputed, where the installed segment's first step (length h_f) is
/// extended ([`DenseOutput::extrapolate_into`]). Stops at d_0 = ρ h_f/(c_max − 1) and
/// d_{k+1} = d_k + (d_k + ρ h_f)/(c_max − 1) after each start, ρ = [`REACH`] (a geometric sequence, a
/// handful per segment), keep every stage within ρ h_f of the start. Without them the parameter
/// gradient was 4.4e-4 off at tol 1e-8 (the property tests' case), converging at order ~3.
fn reach_stops(method: Method, starts: &[f64], first_ends: &[f64], t_end: f64) -> Vec<f64> {
    let c_max = method
        .esdirk_tableau()
        .map_or(1.0, |tab| tab.c.iter().copied().fold(1.0, f64::max));
    let mut stops = Vec::new();
    if c_max <= 1.0 {
        return stops;
    }
    let over = c_max - 1.0;
    for (j, (&start, &first_end)) in starts.iter().zip(first_ends).enumerate() {
        let end = starts.get(j + 1).copied().unwrap_or(t_end);
        let (h_f, len, dir) = (
            (first_end - start).abs(),
            (end - start).abs(),
            (end - start).signum(),
        );
        let reach = REACH * h_f;
        let mut d = reach / over;
        while d < len && h_f > 0.0 {
            stops.push(start + dir * d);
            d += (d + reach) / over;
        }
    }
    stops
}
