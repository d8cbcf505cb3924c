//! The tangent and the exact discrete adjoint of a BDF/NDF step ([`BdfIntegrator`]).
//!
//! The state a BDF step maps is the whole difference array D = (D_0 … D_{k+2}), D_0 = y_n, not y_n
//! alone. With the step sizes, orders and interpolations frozen as the solve chose them, one accepted
//! step is a composition of linear maps and one implicit equation (Shampine & Reichelt 1997, §2; the
//! solver's module docs):
//!
//! 1. D_pre = Wᵀ D on rows 0 … k: the step-size changes since the previous step, composed
//!    ([`BdfStep::map`]);
//! 2. y⁽⁰⁾ = Σ_{j=0}^{k} D_pre,j, ψ = Σ_{j=1}^{k} (γ_j/α_k) D_pre,j, and y = y_{n+1} solving
//!    y − y⁽⁰⁾ + ψ = c f(t_{n+1}, y, p), c = h/α_k; the correction e = y − y⁽⁰⁾;
//! 3. D_{k+2} = e − D_pre,{k+1}, D_{k+1} = e, D_j = D_pre,j + D_{j+1} for j = k … 0.
//!
//! A start (or restart after an event) at (t, u) makes D_0 = u, D_1 = h₀ f(t, u, p), the rest 0.
//!
//! With M = I − c f_u(t_{n+1}, y) the implicit equation differentiates to M ẏ = ẏ⁽⁰⁾ − ψ̇ + c f_p ṗ.
//! The tangent carries Ḋ (every row, every lane) through 1–3; the adjoint carries Λ = ∂G/∂D backwards
//! through their transposes, with μ = M⁻ᵀ λ_e, λ_e the adjoint of e: λ_{y⁽⁰⁾} = μ − λ_e, λ_ψ = −μ,
//! p̄ += c f_pᵀ μ. Row 0 of Λ is the adjoint λ of the state that the drivers see; rows 1 … k + 2 live
//! in the scheme's buffers from one step's adjoint to the previous one's. Newton's iterate is taken
//! as the corrector's exact solution (as for the Runge–Kutta stages), and M is the exact matrix at
//! y_{n+1}, built by AD (dense, with [f_u f_p]) or by the colouring on the solve's sparsity pattern and
//! factored for every step.

#![allow(clippy::needless_range_loop)] // row and component loops over several equal-length buffers

use odesens_solver::linalg::LinearSolver;
use odesens_solver::tableau::{BDF_MAX_ORDER, bdf_dense_weights};
use odesens_solver::{
    BDF_QUADRATURE, BdfIntegrator, DifferenceMap, EventHit, OdeProblem, OdeSystem, SolverError,
    SolverOptions, StepStages,
};

use super::StageLinear;
use crate::ad::derivatives::Derivatives;
use crate::error::{SensitivityError, check_finite};
use crate::events::EventAdjoint;
use crate::objective::Objective;
use crate::step_diff::{AdjointState, StepDiff, StepFamily, Tangents};

/// Rows of the difference array: D_0 … D_{MAX_ORDER + 2}.
const ROWS: usize = BDF_MAX_ORDER + 3;

/// A copy of one accepted BDF step.
pub(crate) struct BdfData {
    t: f64,
    h: f64,
    t_next: f64,
    u: Vec<f64>,
    u_next: Vec<f64>,
    order: usize,
    map: DifferenceMap,
    start: Option<f64>,
    c: f64,
    psi_weights: [f64; BDF_MAX_ORDER + 1],
    /// The interpolant at the quadrature nodes (3 × n).
    ys: Vec<f64>,
}

impl BdfData {
    fn new(n: usize) -> Self {
        Self {
            t: 0.0,
            h: 0.0,
            t_next: 0.0,
            u: vec![0.0; n],
            u_next: vec![0.0; n],
            order: 1,
            map: [[0.0; BDF_MAX_ORDER + 1]; BDF_MAX_ORDER + 1],
            start: None,
            c: 0.0,
            psi_weights: [0.0; BDF_MAX_ORDER + 1],
            ys: vec![0.0; 3 * n],
        }
    }

    /// Takes the next accepted step of `it` and copies it.
    fn take<M: OdeSystem>(&mut self, it: &mut BdfIntegrator<'_, M>) -> Result<(), SolverError> {
        let step = it.step_accepted()?;
        self.t = step.t;
        self.h = step.h;
        self.t_next = step.t_next;
        self.u.copy_from_slice(step.u);
        self.u_next.copy_from_slice(step.u_next);
        self.order = step.order;
        self.map = *step.map;
        self.start = step.start;
        self.c = step.c;
        self.psi_weights = step.psi_weights;
        self.ys.copy_from_slice(step.stage_values);
        Ok(())
    }

    /// a_j(θ) of the step's interpolating polynomial at θ = (t − t_n)/h (index j − 1), zero beyond its
    /// order.
    fn dense_weights(&self, theta: f64) -> [f64; BDF_MAX_ORDER] {
        let mut a = [0.0; BDF_MAX_ORDER];
        bdf_dense_weights(theta, &mut a);
        a.iter_mut().skip(self.order).for_each(|x| *x = 0.0);
        a
    }
}

impl StepStages for BdfData {
    fn t(&self) -> f64 {
        self.t
    }
    fn h(&self) -> f64 {
        self.h
    }
    fn t_next(&self) -> f64 {
        self.t_next
    }
    fn u(&self) -> &[f64] {
        &self.u
    }
    fn u_next(&self) -> &[f64] {
        &self.u_next
    }
    // As `BdfStep`: the interpolant at the Gauss nodes.
    fn stages(&self) -> usize {
        3
    }
    fn stage_time(&self, i: usize) -> f64 {
        self.t + BDF_QUADRATURE.0[i] * self.h
    }
    fn stage_value(&self, i: usize) -> &[f64] {
        let n = self.u.len();
        &self.ys[i * n..(i + 1) * n]
    }
    fn weight(&self, i: usize) -> f64 {
        BDF_QUADRATURE.1[i]
    }
}

/// The BDF buffers: the step's copy, the exact corrector matrices, Ḋ of every lane (tangents) and Λ
/// (adjoint).
pub(crate) struct BdfWork {
    step: BdfData,
    lin: StageLinear,
    /// Ḋ, ROWS × (n × lanes), after the last step (sized on the first tangent step).
    dd: Vec<f64>,
    /// Scratch rows for the interpolation maps, and ẏ⁽⁰⁾ (n × lanes).
    tmp: Vec<f64>,
    pred: Vec<f64>,
    /// Λ, ROWS × n: the adjoint of the differences after the step being differentiated (row 0 is
    /// copied from and to the drivers' λ).
    lam: Vec<f64>,
    lam_tmp: Vec<f64>,
    mu: Vec<f64>,
    seed: Vec<f64>,
    u_scratch: Vec<f64>,
}

/// new D_j = Σ_i W_ij D_i for j = 0 … k, rows of `len` values (the rest unchanged).
fn apply_map(w: &DifferenceMap, k: usize, d: &mut [f64], tmp: &mut [f64], len: usize) {
    tmp[..(k + 1) * len].iter_mut().for_each(|x| *x = 0.0);
    for j in 0..=k {
        for i in 0..=k {
            let wij = w[i][j];
            if wij != 0.0 {
                for x in 0..len {
                    tmp[j * len + x] += wij * d[i * len + x];
                }
            }
        }
    }
    d[..(k + 1) * len].copy_from_slice(&tmp[..(k + 1) * len]);
}

/// The transpose: new Λ_i = Σ_j W_ij Λ_j for i = 0 … k.
fn apply_map_transpose(w: &DifferenceMap, k: usize, lam: &mut [f64], tmp: &mut [f64], n: usize) {
    tmp[..(k + 1) * n].iter_mut().for_each(|x| *x = 0.0);
    for i in 0..=k {
        for j in 0..=k {
            let wij = w[i][j];
            if wij != 0.0 {
                for m in 0..n {
                    tmp[i * n + m] += wij * lam[j * n + m];
                }
            }
        }
    }
    lam[..(k + 1) * n].copy_from_slice(&tmp[..(k + 1) * n]);
}

impl BdfWork {
    /// Solves M x = b + c f_p ṗ for every lane, b given in `tg.next` (n × lanes) and x returned in
    /// the first rows of `tg.ydot`; M = I − c f_u at (t_{n+1}, y_{n+1}) factored exactly.
    fn solve_corrector<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
    ) -> Result<(), SensitivityError> {
        let (step, lin) = (&self.step, &mut self.lin);
        let (n, c, np) = (lin.n, tg.c, p.len());
        let nc = n * c;
        let (t, cc, h) = (step.t_next, step.c, step.h);
        lin.y.copy_from_slice(&step.u_next);
        if lin.sparse.is_some() {
            lin.factor_sparse(der, (t, p), cc, h)?;
            let sp = lin.sparse.as_mut().expect("sparse");
            sp.prepare(nc, np);
            der.jvp_block(t, &lin.y, p, &sp.zeros, &tg.pdot, &mut tg.out, c);
            let lu = sp.lu.as_mut().expect("factored");
            for lane in 0..c {
                for m in 0..n {
                    let x = m * c + lane;
                    lin.col[m] = tg.next[x] + cc * tg.out[x];
                }
                lu.solve_in_place(&mut lin.col);
                for m in 0..n {
                    tg.ydot[m * c + lane] = lin.col[m];
                }
            }
        } else {
            let jac = lin.factor_exact(der, t, p, cc, h)?;
            super::solve_exact_lanes(
                lin.exact.as_mut().expect("factored"),
                &mut lin.col,
                (jac, cc),
                (&tg.next, &tg.pdot),
                &mut tg.ydot[..nc],
            );
        }
        Ok(())
    }

    /// μ = M⁻ᵀ `self.mu` in place (M as in [`BdfWork::solve_corrector`]).
    fn solve_corrector_transpose<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        p: &[f64],
    ) -> Result<(), SensitivityError> {
        let (step, lin) = (&self.step, &mut self.lin);
        let (t, cc, h) = (step.t_next, step.c, step.h);
        lin.y.copy_from_slice(&step.u_next);
        if lin.sparse.is_some() {
            lin.factor_sparse(der, (t, p), cc, h)?;
            let lu = lin.sparse.as_mut().and_then(|sp| sp.lu.as_mut());
            lu.expect("factored").solve_transpose_in_place(&mut self.mu);
        } else {
            lin.factor_exact(der, t, p, cc, h)?;
            lin.exact
                .as_mut()
                .expect("factored")
                .solve_transpose_in_place(&mut self.mu);
        }
        Ok(())
    }

    /// Λ after the step (rows 0 … ROWS − 1, row 0 the drivers' λ with the running cost's term
    /// added) to Λ before it, p̄ accumulating; then, at a start, Λ_0 += h₀ f_uᵀ Λ_1 (p̄ += h₀ f_pᵀ
    /// Λ_1) and the other rows cleared. Returns with Λ_0 the λ of y_n.
    fn reverse_step<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        p: &[f64],
        p_bar: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let n = self.step.u.len();
        let k = self.step.order;
        let lam = &mut self.lam;
        // Step 3 transposed: λ_e = Λ_{k+2} + Λ_{k+1} + Σ_{j≤k} Λ_j; Λ_pre,i = Σ_{j≤i} Λ_j (i ≤ k),
        // Λ_pre,{k+1} = −Λ_{k+2}, Λ_pre,{k+2} = 0.
        for m in 0..n {
            let mut prefix = 0.0;
            for j in 0..=k {
                prefix += lam[j * n + m];
                lam[j * n + m] = prefix;
            }
            let (l1, l2) = (lam[(k + 1) * n + m], lam[(k + 2) * n + m]);
            self.mu[m] = prefix + l1 + l2;
            lam[(k + 1) * n + m] = -l2;
            lam[(k + 2) * n + m] = 0.0;
        }
        // Step 2 transposed: λ_e stays in `seed`, μ = M⁻ᵀ λ_e.
        self.seed.copy_from_slice(&self.mu);
        self.solve_corrector_transpose(der, p)?;
        let (step, lam) = (&self.step, &mut self.lam);
        for m in 0..n {
            let mu = self.mu[m];
            let l_pred = mu - self.seed[m];
            for j in 0..=k {
                lam[j * n + m] += l_pred - step.psi_weights[j] * mu;
            }
            self.seed[m] = step.c * mu;
        }
        self.u_scratch.iter_mut().for_each(|x| *x = 0.0);
        der.vjp_add(
            step.t_next,
            &step.u_next,
            p,
            &self.seed,
            &mut self.u_scratch,
            p_bar,
        );
        // Step 1 transposed.
        apply_map_transpose(&step.map, k, lam, &mut self.lam_tmp, n);
        if let Some(h0) = step.start {
            for m in 0..n {
                self.seed[m] = h0 * lam[n + m];
            }
            let (l0, _) = lam.split_at_mut(n);
            der.vjp_add(step.t, &step.u, p, &self.seed, l0, p_bar);
            lam[n..].iter_mut().for_each(|x| *x = 0.0);
        }
        Ok(())
    }

    /// The step's running-cost term h ∂r/∂u(t_{n+1}, y_{n+1}) into Λ_0 (p̄ += h ∂r/∂p), when the
    /// objective has one.
    fn add_running<O: Objective>(
        &mut self,
        st: &mut AdjointState<'_, O>,
    ) -> Result<(), SensitivityError> {
        if st.tracker.objective().has_running_cost() {
            let n = self.step.u.len();
            let step = &self.step;
            for i in 0..3 {
                // Y_i = D_0 + Σ_j a_j(c_i) D_j: Λ_j += a_j(c_i) h b_i ∂r/∂u(Y_i).
                self.seed.iter_mut().for_each(|x| *x = 0.0);
                st.add_running(
                    (step.stage_time(i), step.stage_value(i)),
                    step.h * step.weight(i),
                    &mut self.seed,
                )?;
                let a = step.dense_weights(BDF_QUADRATURE.0[i]);
                for m in 0..n {
                    self.lam[m] += self.seed[m];
                }
                for (j, &aj) in a.iter().enumerate() {
                    for m in 0..n {
                        self.lam[(j + 1) * n + m] += aj * self.seed[m];
                    }
                }
            }
        }
        Ok(())
    }
}

impl<'a, M: OdeSystem + 'a> StepDiff<'a, M> for BdfIntegrator<'a, M> {
    const FAMILY: StepFamily = StepFamily::Multistep;
    type Work = BdfWork;
    type View<'w>
        = &'w BdfData
    where
        Self: 'w;

    fn start(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        BdfIntegrator::new(problem, options)
    }

    fn stage_count(&self) -> usize {
        3
    }

    fn work(&self, n: usize, _np: usize) -> BdfWork {
        BdfWork {
            step: BdfData::new(n),
            lin: StageLinear::new(n, self.sparsity()),
            dd: Vec::new(),
            tmp: Vec::new(),
            pred: Vec::new(),
            lam: vec![0.0; ROWS * n],
            lam_tmp: vec![0.0; (BDF_MAX_ORDER + 1) * n],
            mu: vec![0.0; n],
            seed: vec![0.0; n],
            u_scratch: vec![0.0; n],
        }
    }

    fn exact_stage_factorizations(work: &BdfWork) -> usize {
        work.lin.fallbacks
    }

    fn tangent_step<'w>(
        &'w mut self,
        work: &'w mut BdfWork,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
        error_control: bool,
    ) -> Result<&'w BdfData, SensitivityError> {
        // The drivers check `Capability::TangentErrorControl` before they start.
        debug_assert!(
            !error_control,
            "BDF tangents follow the plain solve's steps"
        );
        work.step.take(self)?;
        let nc = tg.udot.len();
        let c = tg.c;
        if work.dd.len() != ROWS * nc {
            work.dd = vec![0.0; ROWS * nc];
            work.tmp = vec![0.0; (BDF_MAX_ORDER + 1) * nc];
            work.pred = vec![0.0; nc];
        }
        let step = &work.step;
        let k = step.order;
        if let Some(h0) = step.start {
            // Ḋ_0 = u̇, Ḋ_1 = h₀ (f_u u̇ + f_p ṗ) at the start.
            work.dd.iter_mut().for_each(|x| *x = 0.0);
            work.dd[..nc].copy_from_slice(&tg.udot);
            let (d0, rest) = work.dd.split_at_mut(nc);
            der.jvp_block(step.t, &step.u, p, d0, &tg.pdot, &mut rest[..nc], c);
            rest[..nc].iter_mut().for_each(|x| *x *= h0);
        }
        apply_map(&step.map, k, &mut work.dd, &mut work.tmp, nc);
        // ẏ⁽⁰⁾ and the corrector's right-hand side ẏ⁽⁰⁾ − ψ̇.
        for x in 0..nc {
            let mut pred = 0.0;
            let mut psi = 0.0;
            for j in 0..=k {
                let v = work.dd[j * nc + x];
                pred += v;
                psi += step.psi_weights[j] * v;
            }
            work.pred[x] = pred;
            tg.next[x] = pred - psi;
        }
        work.solve_corrector(der, tg, p)?;
        // ė = ẏ − ẏ⁽⁰⁾ and the update of the differences.
        let dd = &mut work.dd;
        for x in 0..nc {
            let e = tg.ydot[x] - work.pred[x];
            dd[(k + 2) * nc + x] = e - dd[(k + 1) * nc + x];
            dd[(k + 1) * nc + x] = e;
            for j in (0..=k).rev() {
                dd[j * nc + x] += dd[(j + 1) * nc + x];
            }
        }
        tg.udot.copy_from_slice(&dd[..nc]);
        // Ẏ_i at the quadrature nodes.
        for (i, &theta) in BDF_QUADRATURE.0.iter().enumerate() {
            let a = work.step.dense_weights(theta);
            let row = &mut tg.ydot[i * nc..(i + 1) * nc];
            row.copy_from_slice(&dd[..nc]);
            for (j, &aj) in a.iter().enumerate() {
                for (y, v) in row.iter_mut().zip(&dd[(j + 1) * nc..(j + 2) * nc]) {
                    *y += aj * v;
                }
            }
        }
        check_finite("tangent", work.step.t_next, &tg.udot)?;
        Ok(&work.step)
    }

    fn tangent_at(
        &mut self,
        work: &mut BdfWork,
        _der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        _p: &[f64],
        t: f64,
        _udot_n: &[f64],
        out: &mut [f64],
    ) -> Result<(), SensitivityError> {
        // ẏ(t) = Ḋ_0 + Σ_j a_j(θ) Ḋ_j with the differences after the step.
        let nc = tg.udot.len();
        let a = work.step.dense_weights((t - work.step.t) / work.step.h);
        out.copy_from_slice(&work.dd[..nc]);
        for (j, &aj) in a.iter().enumerate() {
            if aj != 0.0 {
                let row = &work.dd[(j + 1) * nc..(j + 2) * nc];
                for (o, v) in out.iter_mut().zip(row) {
                    *o += aj * v;
                }
            }
        }
        Ok(())
    }

    fn adjoint_step<O: Objective>(
        &mut self,
        work: &mut BdfWork,
        der: &mut Derivatives<'_, M>,
        st: &mut AdjointState<'_, O>,
    ) -> Result<(), SensitivityError> {
        work.step.take(self)?;
        st.enter(work.step.t_next, &work.step.u_next)?;
        let n = st.lambda.len();
        work.lam[..n].copy_from_slice(&st.lambda);
        work.add_running(st)?;
        work.reverse_step(der, &st.p, &mut st.p_bar)?;
        st.lambda.copy_from_slice(&work.lam[..n]);
        st.leave(work.step.t)
    }

    fn adjoint_event_step<O: Objective>(
        &mut self,
        work: &mut BdfWork,
        der: &mut Derivatives<'_, M>,
        st: &mut AdjointState<'_, O>,
        event: (&M, &EventHit, &mut EventAdjoint),
    ) -> Result<(), SensitivityError> {
        work.step.take(self)?;
        let t_star = event.1.t;
        st.enter(t_star, &event.1.u_after)?;
        st.cross_event(der, event)?;
        // u⁻ = D_0 + Σ_j a_j(θ*) D_j: Λ_j = a_j λ⁻. The integration restarted at t*, so nothing after
        // it reads this step's differences otherwise.
        let n = st.lambda.len();
        let a = work
            .step
            .dense_weights((t_star - work.step.t) / work.step.h);
        work.lam.iter_mut().for_each(|x| *x = 0.0);
        work.lam[..n].copy_from_slice(&st.lambda);
        for (j, &aj) in a.iter().enumerate() {
            for m in 0..n {
                work.lam[(j + 1) * n + m] = aj * st.lambda[m];
            }
        }
        work.add_running(st)?;
        work.reverse_step(der, &st.p, &mut st.p_bar)?;
        st.lambda.copy_from_slice(&work.lam[..n]);
        st.leave(work.step.t)
    }
}
