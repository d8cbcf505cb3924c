//! The tangent and adjoint of an explicit Runge–Kutta step.
//!
//! With stages Y_i = u_n + h Σ_{j<i} a_ij K_j, K_i = f(t_i, Y_i, p), u_{n+1} = u_n + h Σ_i b_i K_i:
//!
//! - **tangent**: Ẏ_i = u̇_n + h Σ_j a_ij K̇_j, K̇_i = f_u(t_i, Y_i) Ẏ_i + f_p(t_i, Y_i) ṗ,
//!   u̇_{n+1} = u̇_n + h Σ_i b_i K̇_i;
//! - **adjoint** (A. Sandu, "On the properties of Runge–Kutta discrete adjoints", 2006; W. Hager 2000):
//!   given λ = ∂G/∂u_{n+1}, for i = s … 1: K̄_i = h b_i λ + h Σ_{j>i} a_ji Ȳ_j, Ȳ_i = f_u(Y_i)ᵀ K̄_i
//!   (+ h b_i ∂r/∂u for an integral term), p̄ += f_p(Y_i)ᵀ K̄_i (+ h b_i ∂r/∂p); then λ_n = λ + Σ_i Ȳ_i.
//!
//! The FSAL stage of a step (weight 0, no later stage) has K̄ = 0 and is skipped; the next step's first
//! stage is differentiated as f(t_{n+1}, u_{n+1}), which it equals bit for bit.

use odesens_solver::{
    AcceptedStep, EventHit, ExplicitTableau, Integrator, OdeProblem, OdeSystem, SolverError,
    SolverOptions, StepOutcome,
};

use super::{AdjointState, StepDiff, StepFamily, Tangents};
use crate::ad::derivatives::Derivatives;
use crate::error::{SensitivityError, check_finite};
use crate::events::EventAdjoint;
use crate::objective::Objective;

/// The explicit adjoint's buffers.
pub(crate) struct ErkWork {
    /// K̄_i of every stage (s × n), accumulated from the later stages.
    acc: Vec<f64>,
    y_bar: Vec<f64>,
    sum_y: Vec<f64>,
    /// Interpolation weights (all stages).
    w: Vec<f64>,
    /// Events: K̇ of every stage of the interpolant, the inputs of its extra stages, one Ẏ (sized at
    /// the first event).
    kdot_all: Vec<f64>,
    y_extra: Vec<f64>,
    ydot: Vec<f64>,
}

/// The stages that are differentiated: all but a FSAL stage.
fn differentiated_stages(tab: &ExplicitTableau) -> usize {
    if tab.fsal { tab.stages - 1 } else { tab.stages }
}

/// K̇_i for stages `0..last` of `step` (Ẏ_i = u̇_n + h Σ_j a_ij K̇_j), with u̇_n = `tg.udot`.
fn stage_tangents<M: OdeSystem>(
    tg: &mut Tangents,
    der: &mut Derivatives<'_, M>,
    step: &AcceptedStep<'_>,
    p: &[f64],
    last: usize,
) {
    let tab = step.tableau();
    let (n, c, h) = (step.u.len(), tg.c, step.h);
    for i in 0..last {
        let ydot = &mut tg.ydot[i * n * c..(i + 1) * n * c];
        ydot.copy_from_slice(&tg.udot);
        for &(j, a) in tab.a[i] {
            let ha = h * a;
            for (y, k) in ydot.iter_mut().zip(&tg.kdot[j * n * c..(j + 1) * n * c]) {
                *y += ha * k;
            }
        }
        der.jvp_block(
            step.stage_time(i),
            step.stage_input(i),
            p,
            ydot,
            &tg.pdot,
            &mut tg.kdot[i * n * c..(i + 1) * n * c],
            c,
        );
    }
}

/// u̇_{n+1} = u̇_n + h Σ b_i K̇_i into `tg.next`.
fn advance(tg: &mut Tangents, tab: &ExplicitTableau, h: f64, n: usize) {
    let c = tg.c;
    tg.next.copy_from_slice(&tg.udot);
    for (i, &b) in tab.b.iter().enumerate() {
        if b != 0.0 {
            let hb = h * b;
            for (u, k) in tg.next.iter_mut().zip(&tg.kdot[i * n * c..(i + 1) * n * c]) {
                *u += hb * k;
            }
        }
    }
}

/// Σ r² over the tangents' scaled error estimates h Σ b̃_i K̇_i (all stages computed).
fn error_sum(tg: &Tangents, tab: &ExplicitTableau, h: f64, atol: &[f64], rtol: f64) -> f64 {
    let c = tg.c;
    let n = tg.udot.len() / c;
    let mut sum = 0.0;
    for (m, &atol_m) in atol.iter().enumerate().take(n) {
        for lane in 0..c {
            let mut e = 0.0;
            for (i, &bt) in tab.btilde.iter().enumerate() {
                if bt != 0.0 {
                    e += bt * tg.kdot[(i * n + m) * c + lane];
                }
            }
            let (a, b) = (tg.udot[m * c + lane].abs(), tg.next[m * c + lane].abs());
            let r = h * e / (atol_m + rtol * a.max(b));
            sum += r * r;
        }
    }
    sum
}

impl<'a, M: OdeSystem + 'a> StepDiff<'a, M> for Integrator<'a, M> {
    const FAMILY: StepFamily = StepFamily::ExplicitRk;
    type Work = ErkWork;
    type View<'w>
        = AcceptedStep<'w>
    where
        Self: 'w;

    fn start(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        Integrator::new(problem, options)
    }

    fn stage_count(&self) -> usize {
        self.options().method.tableau().stages
    }

    fn work(&self, n: usize, _np: usize) -> ErkWork {
        ErkWork {
            acc: vec![0.0; self.options().method.tableau().stages * n],
            y_bar: vec![0.0; n],
            sum_y: vec![0.0; n],
            w: vec![0.0; self.options().method.tableau().total_stages()],
            kdot_all: Vec::new(),
            y_extra: Vec::new(),
            ydot: Vec::new(),
        }
    }

    fn exact_stage_factorizations(_: &ErkWork) -> usize {
        0
    }

    fn tangent_step<'w>(
        &'w mut self,
        _work: &'w mut ErkWork,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
        error_control: bool,
    ) -> Result<AcceptedStep<'w>, SensitivityError> {
        let tab = self.options().method.tableau();
        let (s, c) = (tab.stages, tg.c);
        let n = tg.udot.len() / c;
        let last = differentiated_stages(tab);
        if error_control {
            // Every stage (the FSAL one too: its b̃ is not zero), then let the tangents' errors vote.
            loop {
                let proposal = self.propose()?;
                stage_tangents(tg, der, &proposal.step, p, last);
                advance(tg, tab, proposal.step.h, n);
                if tab.fsal {
                    // Ẏ_s = u̇_{n+1}: K̇_s at (t_{n+1}, u_{n+1}).
                    let (t_next, u_next) = (proposal.step.t_next, proposal.step.u_next);
                    der.jvp_block(
                        t_next,
                        u_next,
                        p,
                        &tg.next,
                        &tg.pdot,
                        &mut tg.kdot[(s - 1) * n * c..s * n * c],
                        c,
                    );
                }
                let extra = error_sum(tg, tab, proposal.step.h, proposal.atol, proposal.rtol);
                if self.decide(Some((extra, n * c)))? != StepOutcome::Rejected {
                    break;
                }
            }
        } else {
            let step = self.step_accepted()?;
            stage_tangents(tg, der, &step, p, last);
            advance(tg, tab, step.h, n);
        }
        std::mem::swap(&mut tg.udot, &mut tg.next);
        let step = self.accepted_step().expect("a step was just accepted");
        check_finite("tangent", step.t_next, &tg.udot)?;
        Ok(step)
    }

    fn tangent_at(
        &mut self,
        work: &mut ErkWork,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
        t: f64,
        udot_n: &[f64],
        out: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let tab = self.options().method.tableau();
        let (s, total, c) = (tab.stages, tab.total_stages(), tg.c);
        let nc = udot_n.len();
        let n = nc / c;
        // K̇ of every stage of the interpolant, in `work.kdot_all` (total × n × c).
        work.kdot_all.resize(total * nc, 0.0);
        work.kdot_all[..s * nc].copy_from_slice(&tg.kdot[..s * nc]);
        if total > s {
            work.y_extra.resize((total - s) * n, 0.0);
            self.extra_stage_inputs(&mut work.y_extra)?;
        }
        let step = self.accepted_step().expect("a step was just accepted");
        let h = step.h;
        let ErkWork {
            y_extra,
            ydot,
            kdot_all,
            w,
            ..
        } = work;
        ydot.resize(nc, 0.0);
        if tab.fsal {
            // K̇ of the FSAL stage f(t_{n+1}, u_{n+1}), which the plain tangent step skips.
            der.jvp_block(
                step.t_next,
                step.u_next,
                p,
                &tg.udot,
                &tg.pdot,
                &mut kdot_all[(s - 1) * nc..s * nc],
                c,
            );
        }
        // The Verner pairs' extra stages: Ẏ_j = u̇_n + h Σ_l a_jl K̇_l (u̇_{n+1} for the end-point
        // stage), K̇_j = f_u Ẏ_j + f_p ṗ at their inputs.
        for i in s..total {
            let ti = if Some(i) == tab.end_stage {
                ydot.copy_from_slice(&tg.udot);
                step.t_next
            } else {
                ydot.copy_from_slice(udot_n);
                for &(j, a) in tab.a[i] {
                    let ha = h * a;
                    for (y, k) in ydot.iter_mut().zip(&kdot_all[j * nc..(j + 1) * nc]) {
                        *y += ha * k;
                    }
                }
                step.t + tab.c[i] * h
            };
            der.jvp_block(
                ti,
                &y_extra[(i - s) * n..(i - s + 1) * n],
                p,
                ydot,
                &tg.pdot,
                &mut kdot_all[i * nc..(i + 1) * nc],
                c,
            );
        }
        tab.dense_weights((t - step.t) / h, w);
        out.copy_from_slice(udot_n);
        for (i, &wi) in w.iter().enumerate() {
            if wi != 0.0 {
                let hw = h * wi;
                for (o, k) in out.iter_mut().zip(&kdot_all[i * nc..(i + 1) * nc]) {
                    *o += hw * k;
                }
            }
        }
        Ok(())
    }

    fn adjoint_step<O: Objective>(
        &mut self,
        work: &mut ErkWork,
        der: &mut Derivatives<'_, M>,
        st: &mut AdjointState<'_, O>,
    ) -> Result<(), SensitivityError> {
        let step = self.step_accepted()?;
        st.enter(step.t_next, step.u_next)?;
        reverse_stages(work, der, st, &step, None)?;
        st.leave(step.t)
    }

    fn adjoint_event_step<O: Objective>(
        &mut self,
        work: &mut ErkWork,
        der: &mut Derivatives<'_, M>,
        st: &mut AdjointState<'_, O>,
        (model, hit, events): (&M, &EventHit, &mut EventAdjoint),
    ) -> Result<(), SensitivityError> {
        let tab = self.options().method.tableau();
        self.step_accepted()?;
        if tab.has_extra_stages() {
            // The Verner pairs' interpolants use extra stages: their inputs, for their vjps.
            let n = st.lambda.len();
            work.y_extra
                .resize((tab.total_stages() - tab.stages) * n, 0.0);
            work.acc.resize(tab.total_stages() * n, 0.0);
            self.extra_stage_inputs(&mut work.y_extra)?;
        }
        let step = self.accepted_step().expect("a step was just accepted");
        st.enter(hit.t, &hit.u_after)?;
        st.cross_event(der, (model, hit, events))?;
        let mut w = std::mem::take(&mut work.w);
        tab.dense_weights((hit.t - step.t) / step.h, &mut w);
        let result = reverse_stages(work, der, st, &step, Some(&w));
        work.w = w;
        result?;
        st.leave(step.t)
    }
}

/// λ_{n+1} ↦ λ_n through the stages of `step`, for the output u_n + h Σ_i β_i K_i: β = b (the step's
/// end; the FSAL stage, with b = 0 and no later stage, skipped; the running cost's stage terms added)
/// or β = `weights`, the continuous extension's w(θ) at an event (every stage, the FSAL one
/// f(t_{n+1}, u_{n+1}) and the Verner pairs' extra ones included, their inputs in `work.y_extra`). Given λ on that output, for i = s … 1:
/// K̄_i = h β_i λ + Σ_{j>i} h a_ji Ȳ_j, Ȳ_i = f_u(Y_i)ᵀ K̄_i, p̄ += f_p(Y_i)ᵀ K̄_i; λ_n = λ + Σ_i Ȳ_i.
fn reverse_stages<M: OdeSystem, O: Objective>(
    work: &mut ErkWork,
    der: &mut Derivatives<'_, M>,
    st: &mut AdjointState<'_, O>,
    step: &AcceptedStep<'_>,
    weights: Option<&[f64]>,
) -> Result<(), SensitivityError> {
    let n = st.lambda.len();
    let tab = step.tableau();
    let h = step.h;
    let last = match weights {
        None => differentiated_stages(tab),
        Some(_) => tab.total_stages(),
    };
    let ErkWork {
        acc,
        y_bar,
        sum_y,
        y_extra,
        ..
    } = work;
    acc[..last * n].iter_mut().for_each(|x| *x = 0.0);
    sum_y.iter_mut().for_each(|x| *x = 0.0);
    let running = weights.is_none() && st.tracker.objective().has_running_cost();
    for i in (0..last).rev() {
        // K̄_i = h β_i λ + Σ_{j>i} h a_ji Ȳ_j (accumulated in acc_i).
        let hb = h * weights.map_or_else(|| tab.b[i], |w| w[i]);
        let kbar = &mut acc[i * n..(i + 1) * n];
        if hb != 0.0 {
            for (k, l) in kbar.iter_mut().zip(st.lambda.iter()) {
                *k += hb * l;
            }
        }
        y_bar.iter_mut().for_each(|x| *x = 0.0);
        // The FSAL and end-point stages are evaluated at u_{n+1}, the other extra stages at their
        // inputs.
        let end_point = (tab.fsal && i == tab.stages - 1) || Some(i) == tab.end_stage;
        let ti = if end_point {
            step.t_next
        } else if i >= tab.stages {
            step.t + tab.c[i] * h
        } else {
            step.stage_time(i)
        };
        let yi = if end_point {
            step.u_next
        } else if i >= tab.stages {
            &y_extra[(i - tab.stages) * n..(i - tab.stages + 1) * n]
        } else {
            step.stage_input(i)
        };
        if kbar.iter().any(|&x| x != 0.0) {
            let kb: &[f64] = kbar;
            der.vjp_add(ti, yi, &st.p, kb, y_bar, &mut st.p_bar);
        }
        if running && hb != 0.0 {
            st.add_running((ti, yi), hb, y_bar)?;
        }
        // Scatter h a_ij Ȳ_i into the accumulators of the earlier stages j (an extra end-point stage
        // reads u_{n+1} = u_n + h Σ_j b_j K_j).
        if Some(i) == tab.end_stage && !tab.fsal {
            for (j, &b) in tab.b.iter().enumerate() {
                let hb = h * b;
                if hb != 0.0 {
                    for (x, y) in acc[j * n..(j + 1) * n].iter_mut().zip(y_bar.iter()) {
                        *x += hb * y;
                    }
                }
            }
        } else {
            for &(j, a) in tab.a[i] {
                let ha = h * a;
                for (x, y) in acc[j * n..(j + 1) * n].iter_mut().zip(y_bar.iter()) {
                    *x += ha * y;
                }
            }
        }
        for (sy, y) in sum_y.iter_mut().zip(y_bar.iter()) {
            *sy += y;
        }
    }
    for (l, sy) in st.lambda.iter_mut().zip(sum_y.iter()) {
        *l += sy;
    }
    Ok(())
}
