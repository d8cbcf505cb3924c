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
use crate::error::SensitivityError;

/// Buffers of the tangent map through events, and the event times' sensitivities found so far.
pub(crate) struct EventTangents {
    actions: Vec<EventAction>,
    c: usize,
    f_minus: Vec<f64>,
    f_plus: Vec<f64>,
    s: Vec<f64>,
    w: Vec<f64>,
    x: Vec<f64>,
    x_new: Vec<f64>,
    u_cur: Vec<f64>,
    u_new: Vec<f64>,
    zeros: Vec<f64>,
    /// t* of every firing, in order.
    pub times: Vec<f64>,
    /// dt*/dθ of every firing, `c` lanes each.
    pub dt: Vec<f64>,
}

impl EventTangents {
    /// Buffers for `model`'s events and `c` directions.
    pub fn new<M: OdeSystem>(model: &M, c: usize) -> Self {
        let (n, np) = (model.n_states(), model.n_params());
        Self {
            actions: (0..model.n_events())
                .map(|k| model.event_spec(k).action)
                .collect(),
            c,
            f_minus: vec![0.0; n],
            f_plus: vec![0.0; n],
            s: vec![0.0; n],
            w: vec![0.0; np],
            x: vec![0.0; n],
            x_new: vec![0.0; n],
            u_cur: vec![0.0; n],
            u_new: vec![0.0; n],
            zeros: vec![0.0; np],
            times: Vec::new(),
            dt: Vec::new(),
        }
    }

    /// Maps s⁻ (`s_minus`, n × c: the interpolant's tangent at t*) across the firing `hit` to s⁺ in
    /// `out` (n × c), recording dt*/dθ.
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
        let n = self.f_minus.len();
        let np = self.w.len();
        let rhs = |u: &[f64], f: &mut [f64]| {
            model.rhs(
                t,
                ArrayView1::from(u),
                ArrayView1::from(p),
                ArrayViewMut1::from(f),
            )
        };
        rhs(&hit.u_before, &mut self.f_minus);
        rhs(&hit.u_after, &mut self.f_plus);
        // g_t + g_u f⁻, the same for every direction.
        let denominator = match hit.located_by {
            Some(k) => {
                let d =
                    der.condition_jvp(k, (t, 1.0), &hit.u_before, &self.f_minus, p, &self.zeros);
                if d == 0.0 || !d.is_finite() {
                    return Err(SensitivityError::NonFiniteDerivative {
                        what: "event time: the condition's rate g_t + g_u f vanishes at t* (a \
                               grazing root)",
                        t,
                        component: k,
                        value: d,
                    });
                }
                Some((k, d))
            }
            None => None,
        };
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
                self.x[m] = self.s[m] + self.f_minus[m] * dt;
            }
            self.u_cur.copy_from_slice(&hit.u_before);
            for &k in &hit.events {
                if self.actions[k] == EventAction::Jump {
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
            for m in 0..n {
                out[m * c + lane] = self.x[m] - self.f_plus[m] * dt;
            }
            self.dt.push(dt);
        }
        self.times.push(t);
        crate::error::check_finite("tangent after an event", t, out)
    }
}
