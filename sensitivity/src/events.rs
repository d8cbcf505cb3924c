//! Tangents through events: the event time's sensitivity and the jump of the tangent (saltation).
//!
//! The solver locates t* as the root of g(t, ũ(t)) on the step's continuous extension ũ and continues
//! from u⁺ = h(t*, u⁻, p), u⁻ = ũ(t*). With s⁻ = ∂ũ(t*)/∂θ at fixed t* (the tangent of the
//! interpolant, [`crate::step_diff::StepDiff::tangent_at`]), f⁻ = f(t*, u⁻) and f⁺ = f(t*, u⁺), the
//! implicit-function theorem on g(t*, u⁻) = 0 and the chain rule through the jump give
//!
//! dt*/dθ = −(g_u s⁻ + g_p ṗ) / (g_t + g_u f⁻),
//! s⁺ = h_u (s⁻ + f⁻ dt*/dθ) + h_t dt*/dθ + h_p ṗ − f⁺ dt*/dθ,
//!
//! (the saltation matrix; ../shared/DESIGN.md; e.g. Hiskens & Pai, IEEE Trans. Circuits Syst. I 47
//! (2000) 204–220). s⁺ is the tangent at fixed time just after the event, from which the next steps'
//! tangents continue. Time events (fixed t*) have dt*/dθ = 0. Several events firing at one t* compose
//! their jumps in index order with the t* of the event that located it. Each product is one `Dual64`
//! pass through the model's generic condition or jump ([`Derivatives::condition_jvp`],
//! [`Derivatives::jump_jvp`]).

use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{EventAction, EventHit, OdeSystem};

use crate::ad::derivatives::Derivatives;
use crate::common::ObjectiveTracker;
use crate::error::SensitivityError;
use crate::objective::{Firing, Objective};

/// What the tangent map and its transpose share: each event's action, f on both sides of the jump,
/// and zero seeds.
struct Sides {
    actions: Vec<EventAction>,
    f_minus: Vec<f64>,
    f_plus: Vec<f64>,
    zeros_u: Vec<f64>,
    zeros_p: Vec<f64>,
}

impl Sides {
    fn new<M: OdeSystem>(model: &M) -> Self {
        let (n, np) = (model.n_states(), model.n_params());
        Self {
            actions: (0..model.n_events())
                .map(|k| model.event_spec(k).action)
                .collect(),
            f_minus: vec![0.0; n],
            f_plus: vec![0.0; n],
            zeros_u: vec![0.0; n],
            zeros_p: vec![0.0; np],
        }
    }

    /// f⁻ = f(t*, u⁻) and f⁺ = f(t*, u⁺), and the rate g_t + g_u f⁻ of the condition that located
    /// t* (the implicit-function theorem's denominator), if one did.
    ///
    /// # Errors
    /// [`SensitivityError::NonFiniteDerivative`] when the rate vanishes (a grazing root: t* is not
    /// differentiable) or is not finite.
    fn evaluate<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        model: &M,
        hit: &EventHit,
        p: &[f64],
    ) -> Result<Option<(usize, f64)>, SensitivityError> {
        for (u, f) in [
            (&hit.u_before, &mut self.f_minus),
            (&hit.u_after, &mut self.f_plus),
        ] {
            model.rhs(
                hit.t,
                ArrayView1::from(&u[..]),
                ArrayView1::from(p),
                ArrayViewMut1::from(&mut f[..]),
            );
        }
        let Some(k) = hit.located_by else {
            return Ok(None);
        };
        let d = der.condition_jvp(
            k,
            (hit.t, 1.0),
            &hit.u_before,
            &self.f_minus,
            p,
            &self.zeros_p,
        );
        if d == 0.0 || !d.is_finite() {
            return Err(SensitivityError::NonFiniteDerivative {
                what: "event time: the condition's rate g_t + g_u f vanishes at t* (a grazing root)",
                t: hit.t,
                component: k,
                value: d,
            });
        }
        Ok(Some((k, d)))
    }

    /// Whether event k jumps.
    fn jumps(&self, k: usize) -> bool {
        self.actions[k] == EventAction::Jump
    }
}

/// Buffers of the tangent map through events, and the event times' sensitivities found so far.
pub(crate) struct EventTangents {
    sides: Sides,
    c: usize,
    s: Vec<f64>,
    w: Vec<f64>,
    x: Vec<f64>,
    x_new: Vec<f64>,
    u_cur: Vec<f64>,
    u_new: Vec<f64>,
    /// t* of every firing, in order.
    pub times: Vec<f64>,
    /// dt*/dθ of every firing, `c` lanes each.
    pub dt: Vec<f64>,
    /// The last firing's du⁻/dθ = s⁻ + f⁻ dt*/dθ (n × c): the tangent of the state at the moving
    /// event, for the objective's event terms.
    pub u_minus_dot: Vec<f64>,
}

impl EventTangents {
    /// Buffers for `model`'s events and `c` directions.
    pub fn new<M: OdeSystem>(model: &M, c: usize) -> Self {
        let (n, np) = (model.n_states(), model.n_params());
        Self {
            sides: Sides::new(model),
            c,
            s: vec![0.0; n],
            w: vec![0.0; np],
            x: vec![0.0; n],
            x_new: vec![0.0; n],
            u_cur: vec![0.0; n],
            u_new: vec![0.0; n],
            times: Vec::new(),
            dt: Vec::new(),
            u_minus_dot: vec![0.0; n * c],
        }
    }

    /// Maps s⁻ (`s_minus`, n × c: the interpolant's tangent at t*) across the firing `hit` to s⁺ in
    /// `out` (n × c), recording dt*/dθ. At a stop nothing continues at fixed time: `out` is the
    /// tangent of the final state u(t*) itself, s⁻ + f⁻ dt*/dθ.
    ///
    /// # Errors
    /// [`SensitivityError::NonFiniteDerivative`] when g_t + g_u f⁻ vanishes (a grazing root: t* is not
    /// differentiable) or a tangent is not finite.
    #[allow(clippy::too_many_arguments)]
    pub fn apply<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        model: &M,
        hit: &EventHit,
        p: &[f64],
        pdot: &[f64],
        s_minus: &[f64],
        out: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let (t, c) = (hit.t, self.c);
        let (n, np) = (self.s.len(), self.w.len());
        // g_t + g_u f⁻, the same for every direction.
        let denominator = self.sides.evaluate(der, model, hit, p)?;
        for lane in 0..c {
            for m in 0..n {
                self.s[m] = s_minus[m * c + lane];
            }
            for j in 0..np {
                self.w[j] = pdot[j * c + lane];
            }
            let dt = match denominator {
                Some((k, d)) => {
                    -der.condition_jvp(k, (t, 0.0), &hit.u_before, &self.s, p, &self.w) / d
                }
                None => 0.0,
            };
            for m in 0..n {
                self.x[m] = self.s[m] + self.sides.f_minus[m] * dt;
                self.u_minus_dot[m * c + lane] = self.x[m];
            }
            self.u_cur.copy_from_slice(&hit.u_before);
            for &k in &hit.events {
                if self.sides.jumps(k) {
                    der.jump_jvp(
                        k,
                        (t, dt),
                        (&self.u_cur, &self.x),
                        (p, &self.w),
                        &mut self.u_new,
                        &mut self.x_new,
                    );
                    std::mem::swap(&mut self.u_cur, &mut self.u_new);
                    std::mem::swap(&mut self.x, &mut self.x_new);
                }
            }
            // f⁺ dt*: the later steps start at the moving t* (none after a stop).
            let shift = if hit.stop { 0.0 } else { dt };
            for m in 0..n {
                out[m * c + lane] = self.x[m] - self.sides.f_plus[m] * shift;
            }
            self.dt.push(dt);
        }
        self.times.push(t);
        crate::error::check_finite("tangent after an event", t, out)
    }
}

/// The transpose of the tangent map through an event ([`EventTangents`]), for the discrete adjoint:
/// given λ⁺ = ∂G/∂u just after the event (at fixed time), λ⁻ on s⁻ and the parameters' part, by
///
/// x̄ = λ⁺, dt̄ = −f⁺·λ⁺; through each jump (last first) x̄ ← h_uᵀ x̄, dt̄ += h_t·x̄, p̄ += h_pᵀ x̄;
/// then with the objective's event terms c(t*, u⁻, p) x̄ += c_u, dt̄ += c_t, p̄ += c_p;
/// then dt̄ += f⁻·x̄ and λ⁻ = x̄ − (dt̄ / (g_t + g_u f⁻)) g_u, p̄ −= (dt̄ / (g_t + g_u f⁻)) g_p.
/// At a stop λ⁺ is on the final state u(t*) itself (no f⁺ term: nothing continues).
///
/// The same map is the jump condition of the continuous adjoint at an event.
///
/// The Jacobian columns of the condition and the jumps come from `Dual64` passes (one per input), so
/// the adjoint of an event costs O(n + p) model evaluations: events are rare beside steps.
pub(crate) struct EventAdjoint {
    sides: Sides,
    x_bar: Vec<f64>,
    x_new: Vec<f64>,
    unit_u: Vec<f64>,
    unit_p: Vec<f64>,
    col: Vec<f64>,
    value: Vec<f64>,
    u: Vec<f64>,
    /// The jumping events of the firing, and the states before each jump (u⁻ first).
    jumps: Vec<usize>,
    chain: Vec<f64>,
    /// The events of the firing being mapped, as the objective's event terms see them (set by the
    /// caller).
    pub firings: Vec<Firing>,
}

impl EventAdjoint {
    /// Buffers for `model`'s events.
    pub fn new<M: OdeSystem>(model: &M) -> Self {
        let (n, np) = (model.n_states(), model.n_params());
        Self {
            sides: Sides::new(model),
            x_bar: vec![0.0; n],
            x_new: vec![0.0; n],
            unit_u: vec![0.0; n],
            unit_p: vec![0.0; np],
            col: vec![0.0; n],
            value: vec![0.0; n],
            u: vec![0.0; n],
            jumps: Vec::new(),
            chain: Vec::new(),
            firings: Vec::new(),
        }
    }

    /// Maps λ⁺ (in `lambda`) across the firing `hit` (its events in `self.firings`) to λ⁻, adding the
    /// parameters' part to `p_bar` and the gradient of `tracker`'s event terms.
    ///
    /// # Errors
    /// As [`EventTangents::apply`]; a non-finite gradient of the event terms.
    #[allow(clippy::too_many_arguments)]
    pub fn apply<M: OdeSystem, O: Objective>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        model: &M,
        hit: &EventHit,
        (tracker, p): (&mut ObjectiveTracker<'_, O>, &[f64]),
        lambda: &mut [f64],
        p_bar: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let t = hit.t;
        let (n, np) = (self.u.len(), self.unit_p.len());
        let denominator = self.sides.evaluate(der, model, hit, p)?;
        let Sides {
            f_minus,
            f_plus,
            zeros_u,
            zeros_p,
            ..
        } = &self.sides;
        // The states before each jump, recomputed as the forward map met them.
        self.jumps.clear();
        self.jumps
            .extend(hit.events.iter().copied().filter(|&k| self.sides.jumps(k)));
        self.chain.clear();
        self.chain.extend_from_slice(&hit.u_before);
        for (j, &k) in self.jumps.iter().enumerate() {
            self.u.copy_from_slice(&self.chain[j * n..(j + 1) * n]);
            der.jump_jvp(
                k,
                (t, 0.0),
                (&self.u, zeros_u),
                (p, zeros_p),
                &mut self.value,
                &mut self.col,
            );
            self.chain.extend_from_slice(&self.value);
        }
        self.x_bar.copy_from_slice(lambda);
        let mut dt_bar: f64 = if hit.stop { 0.0 } else { -dot(f_plus, lambda) };
        for (j, &k) in self.jumps.iter().enumerate().rev() {
            let u = &self.chain[j * n..(j + 1) * n];
            // h_t · x̄.
            der.jump_jvp(
                k,
                (t, 1.0),
                (u, zeros_u),
                (p, zeros_p),
                &mut self.value,
                &mut self.col,
            );
            dt_bar += dot(&self.col, &self.x_bar);
            // h_uᵀ x̄, column by column.
            for i in 0..n {
                self.unit_u[i] = 1.0;
                der.jump_jvp(
                    k,
                    (t, 0.0),
                    (u, &self.unit_u),
                    (p, zeros_p),
                    &mut self.value,
                    &mut self.col,
                );
                self.unit_u[i] = 0.0;
                self.x_new[i] = dot(&self.col, &self.x_bar);
            }
            // p̄ += h_pᵀ x̄.
            for (jp, pb) in p_bar.iter_mut().enumerate().take(np) {
                self.unit_p[jp] = 1.0;
                der.jump_jvp(
                    k,
                    (t, 0.0),
                    (u, zeros_u),
                    (p, &self.unit_p),
                    &mut self.value,
                    &mut self.col,
                );
                self.unit_p[jp] = 0.0;
                *pb += dot(&self.col, &self.x_bar);
            }
            std::mem::swap(&mut self.x_bar, &mut self.x_new);
        }
        if tracker.objective().has_event_cost() {
            dt_bar += tracker.event_gradient(&self.firings, t, &hit.u_before, p)?;
            for (x, g) in self.x_bar.iter_mut().zip(&tracker.g_u) {
                *x += g;
            }
            for (pb, g) in p_bar.iter_mut().zip(&tracker.g_p) {
                *pb += g;
            }
        }
        dt_bar += dot(f_minus, &self.x_bar);
        lambda.copy_from_slice(&self.x_bar);
        if let Some((k, d)) = denominator {
            let scale = -dt_bar / d;
            for (i, l) in lambda.iter_mut().enumerate() {
                self.unit_u[i] = 1.0;
                *l +=
                    scale * der.condition_jvp(k, (t, 0.0), &hit.u_before, &self.unit_u, p, zeros_p);
                self.unit_u[i] = 0.0;
            }
            for (jp, pb) in p_bar.iter_mut().enumerate().take(np) {
                self.unit_p[jp] = 1.0;
                *pb +=
                    scale * der.condition_jvp(k, (t, 0.0), &hit.u_before, zeros_u, p, &self.unit_p);
                self.unit_p[jp] = 0.0;
            }
        }
        crate::error::check_finite("adjoint λ before an event", t, lambda)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
