//! The tangent and adjoint of an implicit step (ESDIRK in [`esdirk`], Radau IIA in [`radau`], BDF/NDF
//! in [`bdf`]), with the exact stage systems they share.
//!
//! A step is differentiated as the map u_n ↦ u_{n+1} with its stage equations solved exactly and h
//! frozen (the Newton iterates are close to that solution, to a fraction κ of the error tolerance). The
//! stage systems use the exact stage Jacobians J_i, reached through jvps (tangents) or vjps (adjoint) in
//! a Richardson iteration preconditioned by the step's own factorization of the iteration matrix (J
//! frozen at some earlier point, as Newton used it): x ← x + M⁻¹(b − M_exact x), which contracts at
//! Newton's rate. When it does not reach a relative change of 1e-13 within a few iterations, the exact
//! matrix is built from J_i by AD and factored (counted in `exact_stage_factorizations`); small dense
//! problems (n + p ≤ 16) factor it at once.

mod bdf;
mod esdirk;
mod radau;

use odesens_solver::krylov::Gmres;
use odesens_solver::linalg::{DenseLu, LinearSolver, SparseLu, SparsityPattern};
use odesens_solver::{
    EventHit, ImplicitIntegrator, OdeProblem, OdeSystem, Scheme, SolverError, SolverOptions,
    StepStages,
};

use super::{AdjointState, StepDiff, StepFamily, Tangents};
use crate::ad::derivatives::Derivatives;
use crate::error::{SensitivityError, check_finite};
use crate::events::EventAdjoint;
use crate::objective::Objective;

/// Relative change at which a stage's linear iteration has converged.
const LINEAR_TOL: f64 = 1e-13;
/// Iterations before a stage's exact matrix is factored instead.
const LINEAR_MAX: usize = 12;
/// Dense problems with n + p at most this factor every stage's exact matrix at once: its Jacobian
/// [f_u f_p] takes one or two dual passes and its LU a few hundred flops, about what two iterations
/// cost, and the stage systems are then solved to round-off (with the iteration, forward and adjoint
/// differed by up to 4.4e-10 on Kvaerno5 Lotka–Volterra cases; factored, 1.5e-11).
const EXACT_SMALL: usize = 16;
/// Sparse problems, when the iteration above stalls: GMRES's relative residual and iteration limit.
const KRYLOV: (f64, usize) = (1e-12, 40);
/// The residual still accepted when GMRES stagnates above its target (round-off in the jvps or vjps of a
/// stiff stage: 9 of 98 stage systems of the Brusselator N = 64 stalled between 1e-12 and 1e-10) before
/// the sparse LU of the exact stage matrix.
const KRYLOV_ACCEPT: f64 = 1e-10;
/// GMRES's restart length.
const KRYLOV_RESTART: usize = 20;

/// Whether a GMRES result is good enough: converged, or stagnated within [`KRYLOV_ACCEPT`].
fn krylov_ok(result: Result<usize, f64>) -> bool {
    match result {
        Ok(_) => true,
        Err(residual) => residual <= KRYLOV_ACCEPT,
    }
}

/// A copy of one accepted step (the integrator is needed mutably while the step is differentiated).
pub(crate) struct StepData {
    scheme: Scheme,
    t: f64,
    h: f64,
    t_next: f64,
    u: Vec<f64>,
    u_next: Vec<f64>,
    /// Stage values Y_i (s × n).
    ys: Vec<f64>,
}

impl StepData {
    fn new(scheme: Scheme, n: usize) -> Self {
        Self {
            scheme,
            t: 0.0,
            h: 0.0,
            t_next: 0.0,
            u: vec![0.0; n],
            u_next: vec![0.0; n],
            ys: vec![0.0; scheme.stages() * n],
        }
    }

    /// Takes the next accepted step of `it` and copies it.
    fn take<M: OdeSystem>(
        &mut self,
        it: &mut ImplicitIntegrator<'_, M>,
    ) -> Result<(), SolverError> {
        let step = it.step_accepted()?;
        self.t = step.t;
        self.h = step.h;
        self.t_next = step.t_next;
        self.u.copy_from_slice(step.u);
        self.u_next.copy_from_slice(step.u_next);
        self.ys.copy_from_slice(step.stage_values);
        Ok(())
    }

    /// Y_i into `out`.
    fn copy_stage(&self, i: usize, out: &mut [f64]) {
        let n = self.u.len();
        out.copy_from_slice(&self.ys[i * n..(i + 1) * n]);
    }
}

impl StepStages for StepData {
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
    fn stages(&self) -> usize {
        self.scheme.stages()
    }
    fn stage_time(&self, i: usize) -> f64 {
        self.scheme.stage_time(i, self.t, self.h, self.t_next)
    }
    fn stage_value(&self, i: usize) -> &[f64] {
        let n = self.u.len();
        &self.ys[i * n..(i + 1) * n]
    }
    fn weight(&self, i: usize) -> f64 {
        self.scheme.weight(i)
    }
}

/// The stopping rule of the preconditioned stage iterations: converged when the update is below
/// [`LINEAR_TOL`] of the iterate, stalled when it is not finite or shrinks by less than half.
struct Richardson {
    prev: f64,
}

impl Richardson {
    fn new() -> Self {
        Self {
            prev: f64::INFINITY,
        }
    }

    /// After an update of max-norm `change` to an iterate of max-norm `size`: `Some(true)` when
    /// converged, `Some(false)` when stalled, `None` to go on.
    fn stop(&mut self, change: f64, size: f64) -> Option<bool> {
        if change <= LINEAR_TOL * size || size == 0.0 {
            Some(true)
        } else if !change.is_finite() || change > 0.5 * self.prev {
            Some(false)
        } else {
            self.prev = change;
            None
        }
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// The exact stage matrices of a problem solved with sparse LU, on the iteration matrix's pattern: the
/// stage Jacobians by compressed forward mode ([`Derivatives::sparse_jacobian`]) and sparse LU, so that
/// no dense n × n (or n × p) matrix is ever formed.
struct SparseExact {
    pattern: SparsityPattern,
    colors: Vec<usize>,
    n_colors: usize,
    /// f_u at the stage point(s) on `pattern` (Radau: the three stages' in turn).
    vals: Vec<f64>,
    /// ESDIRK: the LU of I − hγ J_i; Radau: the LU of the 3n matrix I − h(A ⊗ I) blockdiag(J_j) on the
    /// pattern of every block (both allocated on first use).
    lu: Option<SparseLu>,
    lu3: Option<SparseLu>,
    /// Where each column of the 3n pattern starts.
    starts3: Vec<usize>,
    /// Zero state directions, for f_p ṗ products by jvps (n × lanes), and zero parameter directions
    /// (np), for J v by jvps.
    zeros: Vec<f64>,
    zeros_p: Vec<f64>,
    /// GMRES for one column of a stage system: its buffers, right-hand side and iterate.
    gmres: Gmres,
    b: Vec<f64>,
    x: Vec<f64>,
    /// Stage systems solved by GMRES.
    krylov: usize,
}

impl SparseExact {
    /// Sizes the zero directions for `lanes_n` = n × lanes and `np` parameters (no allocation once
    /// they are large enough).
    fn prepare(&mut self, lanes_n: usize, np: usize) {
        if self.zeros.len() < lanes_n {
            self.zeros.resize(lanes_n, 0.0);
        }
        self.zeros.truncate(lanes_n);
        self.zeros_p.resize(np, 0.0);
    }

    /// The 3n pattern of Radau's coupled stage matrix: J's pattern in each of the 3 × 3 blocks.
    fn radau_pattern(&self) -> SparsityPattern {
        let n = self.pattern.n();
        let entries = (0..n).flat_map(|q| {
            self.pattern.col_rows(q).iter().flat_map(move |&i| {
                (0..3).flat_map(move |bi| (0..3).map(move |bj| (bi * n + i, bj * n + q)))
            })
        });
        SparsityPattern::new(3 * n, entries).expect("entries inside the 3n matrix")
    }
}

/// Buffers and the exact-matrix fallback shared by tangents and adjoints.
struct StageLinear {
    n: usize,
    y: Vec<f64>,
    col: Vec<f64>,
    /// The exact n × n LU (allocated on first use: most steps never need it).
    exact: Option<DenseLu>,
    fallbacks: usize,
    /// Radau: a 3n vector, the three stage Jacobians [f_u f_p] (row-major), the exact 3n × 3n LU
    /// (allocated on first use).
    col3: Vec<f64>,
    jacs: Vec<f64>,
    exact3: Option<DenseLu>,
    /// The sparse route (problems solved with sparse LU).
    sparse: Option<SparseExact>,
}

impl StageLinear {
    /// The preconditioned iterations a stage system may take before its exact matrix is factored:
    /// none for small dense problems ([`EXACT_SMALL`]).
    fn iterations(&self, np: usize) -> usize {
        if self.sparse.is_none() && self.n + np <= EXACT_SMALL {
            0
        } else {
            LINEAR_MAX
        }
    }

    fn new(n: usize, sparsity: Option<(&SparsityPattern, &[usize], usize)>) -> Self {
        Self {
            n,
            y: vec![0.0; n],
            col: vec![0.0; n],
            exact: None,
            fallbacks: 0,
            col3: vec![0.0; 3 * n],
            jacs: Vec::new(),
            exact3: None,
            sparse: sparsity.map(|(pattern, colors, n_colors)| SparseExact {
                pattern: pattern.clone(),
                colors: colors.to_vec(),
                n_colors,
                vals: Vec::new(),
                lu: None,
                lu3: None,
                starts3: Vec::new(),
                zeros: Vec::new(),
                zeros_p: Vec::new(),
                gmres: Gmres::new(n, KRYLOV_RESTART),
                b: vec![0.0; n],
                x: vec![0.0; n],
                krylov: 0,
            }),
        }
    }

    /// Sparse route: factors M_i = I − hγ J_i with J_i at (t, Y_i = `self.y`) on the pattern.
    fn factor_sparse<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        (t, p): (f64, &[f64]),
        hg: f64,
        h: f64,
    ) -> Result<(), SensitivityError> {
        let sp = self.sparse.as_mut().expect("the sparse route");
        sp.vals.resize(sp.pattern.nnz(), 0.0);
        der.sparse_jacobian(
            (t, &self.y, p),
            &sp.pattern,
            (&sp.colors, sp.n_colors),
            &mut sp.vals,
        );
        self.fallbacks += 1;
        let vals = &sp.vals;
        let lu = sp
            .lu
            .get_or_insert_with(|| SparseLu::new(sp.pattern.clone()));
        lu.factor(&mut |i, j, k| f64::from(u8::from(i == j)) - hg * vals[k])
            .map_err(|pivot| SolverError::SingularMatrix { t, h, pivot })?;
        Ok(())
    }

    /// Factors M_i = I − hγ J_i with J_i by AD at (t, Y_i = `self.y`); returns [f_u f_p] row-major.
    fn factor_exact<'d, M: OdeSystem>(
        &mut self,
        der: &'d mut Derivatives<'_, M>,
        t: f64,
        p: &[f64],
        hg: f64,
        h: f64,
    ) -> Result<&'d [f64], SensitivityError> {
        let (n, np) = (self.n, p.len());
        let jac = der.jacobian(t, &self.y, p);
        self.fallbacks += 1;
        let cols = n + np;
        self.exact
            .get_or_insert_with(|| DenseLu::new(n))
            .factor(&mut |i, j, _| f64::from(u8::from(i == j)) - hg * jac[i * cols + j])
            .map_err(|pivot| SolverError::SingularMatrix { t, h, pivot })?;
        Ok(jac)
    }
}

/// x = M⁻¹(b + hg f_p ṗ) for every lane, with the exact LU of M in `exact`, [f_u f_p] = `jac` (row-major
/// n × (n + np)) and `col` (n) as scratch; `b`, `x` and `pdot` in the lanes' row-major layout.
fn solve_exact_lanes(
    exact: &mut DenseLu,
    col: &mut [f64],
    (jac, hg): (&[f64], f64),
    (b, pdot): (&[f64], &[f64]),
    x: &mut [f64],
) {
    let n = col.len();
    let c = b.len() / n.max(1);
    let np = pdot.len() / c.max(1);
    let cols = n + np;
    for lane in 0..c {
        for m in 0..n {
            let mut fp = 0.0;
            for q in 0..np {
                fp += jac[m * cols + n + q] * pdot[q * c + lane];
            }
            col[m] = b[m * c + lane] + hg * fp;
        }
        exact.solve_in_place(col);
        for m in 0..n {
            x[m * c + lane] = col[m];
        }
    }
}

/// The implicit schemes' buffers: the step's copy, the stage systems, and the adjoint's stage vectors.
pub(crate) struct ImplicitWork {
    step: StepData,
    lin: StageLinear,
    /// μ_i of every stage (s × n).
    mu: Vec<f64>,
    sigma: Vec<f64>,
    c: Vec<f64>,
    g: Vec<f64>,
    /// Radau: the right-hand side and residual of the coupled 3n system.
    c3: Vec<f64>,
    r3: Vec<f64>,
    p_scratch: Vec<f64>,
}

impl<'a, M: OdeSystem + 'a> StepDiff<'a, M> for ImplicitIntegrator<'a, M> {
    const FAMILY: StepFamily = StepFamily::Implicit;
    type Work = ImplicitWork;
    type View<'w>
        = &'w StepData
    where
        Self: 'w;

    fn start(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        ImplicitIntegrator::new(problem, options)
    }

    fn stage_count(&self) -> usize {
        self.scheme().stages()
    }

    fn work(&self, n: usize, np: usize) -> ImplicitWork {
        let scheme = self.scheme();
        ImplicitWork {
            step: StepData::new(scheme, n),
            lin: StageLinear::new(n, self.sparsity()),
            mu: vec![0.0; scheme.stages() * n],
            sigma: vec![0.0; n],
            c: vec![0.0; n],
            g: vec![0.0; n],
            c3: vec![0.0; 3 * n],
            r3: vec![0.0; 3 * n],
            p_scratch: vec![0.0; np],
        }
    }

    fn exact_stage_factorizations(work: &ImplicitWork) -> usize {
        work.lin.fallbacks
    }

    fn krylov_stage_solves(work: &ImplicitWork) -> usize {
        work.lin.sparse.as_ref().map_or(0, |sp| sp.krylov)
    }

    fn tangent_step<'w>(
        &'w mut self,
        work: &'w mut ImplicitWork,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
        error_control: bool,
    ) -> Result<&'w StepData, SensitivityError> {
        // The drivers check `Capability::TangentErrorControl` before they start.
        debug_assert!(
            !error_control,
            "implicit tangents follow the plain solve's steps"
        );
        work.step.take(self)?;
        if work.step.scheme == Scheme::Radau5 {
            radau::tangent(self, work, der, tg, p)?;
        } else {
            esdirk::tangent(self, work, der, tg, p)?;
        }
        // Both schemes are stiffly accurate: u̇_{n+1} = Ẏ of the last stage.
        let nc = tg.udot.len();
        let last = work.step.scheme.stages() - 1;
        tg.udot
            .copy_from_slice(&tg.ydot[last * nc..(last + 1) * nc]);
        check_finite("tangent", work.step.t_next, &tg.udot)?;
        Ok(&work.step)
    }

    fn tangent_at(
        &mut self,
        work: &mut ImplicitWork,
        der: &mut Derivatives<'_, M>,
        tg: &mut Tangents,
        p: &[f64],
        t: f64,
        udot_n: &[f64],
        out: &mut [f64],
    ) -> Result<(), SensitivityError> {
        let step = &work.step;
        let (c, h, nc) = (tg.c, step.h, udot_n.len());
        let mut w = [0.0; 4];
        step.scheme.dense_weights((t - step.t) / h, &mut w);
        if step.scheme == Scheme::Radau5 {
            // Rows (u_{n+1} − u_n)/h and the divided differences of Z_i = Y_i − u_n, over h.
            for x in 0..nc {
                let z = |i: usize| tg.ydot[i * nc + x] - udot_n[x];
                let d = odesens_solver::collocation_differences(z(0), z(1), z(2));
                let k0 = (tg.udot[x] - udot_n[x]) / h;
                out[x] =
                    udot_n[x] + h * (w[0] * k0 + (w[1] * d[0] + w[2] * d[1] + w[3] * d[2]) / h);
            }
        } else {
            // Hermite rows f(t_n, u_n), f(t_{n+1}, u_{n+1}), (u_{n+1} − u_n)/h: K̇ at both ends.
            let (k_start, k_end) = (&mut tg.next, &mut tg.out);
            der.jvp_block(step.t, &step.u, p, udot_n, &tg.pdot, k_start, c);
            der.jvp_block(step.t_next, &step.u_next, p, &tg.udot, &tg.pdot, k_end, c);
            for x in 0..nc {
                let delta = (tg.udot[x] - udot_n[x]) / h;
                out[x] = udot_n[x] + h * (w[0] * k_start[x] + w[1] * k_end[x] + w[2] * delta);
            }
        }
        Ok(())
    }

    fn adjoint_event_step<O: Objective>(
        &mut self,
        work: &mut ImplicitWork,
        der: &mut Derivatives<'_, M>,
        st: &mut AdjointState<'_, O>,
        (model, hit, events): (&M, &EventHit, &mut EventAdjoint),
    ) -> Result<(), SensitivityError> {
        work.step.take(self)?;
        st.enter(hit.t, &hit.u_after)?;
        st.cross_event(der, (model, hit, events))?;
        let step = &work.step;
        let (n, h) = (st.lambda.len(), step.h);
        let mut w = [0.0; 4];
        step.scheme.dense_weights((hit.t - step.t) / h, &mut w);
        let lambda_minus = st.lambda.clone();
        let mut direct = vec![0.0; n];
        let s = step.scheme.stages();
        if step.scheme == Scheme::Radau5 {
            // u_n + w0 z_3 + Σ_i w_i d_i(z), z_j = Y_j − u_n, d the collocation differences (linear):
            // = u_n + Σ_j α_j z_j, so the step's own adjoint with the seeds α_j λ⁻ on Y_j, and
            // (1 − Σ_j α_j) λ⁻ on u_n directly.
            let mut alpha = [0.0; 3];
            for (j, a) in alpha.iter_mut().enumerate() {
                let unit = |i: usize| f64::from(u8::from(i == j));
                let d = odesens_solver::collocation_differences(unit(0), unit(1), unit(2));
                *a = w[0] * unit(2) + w[1] * d[0] + w[2] * d[1] + w[3] * d[2];
            }
            let rest = 1.0 - alpha.iter().sum::<f64>();
            for (d, l) in direct.iter_mut().zip(&lambda_minus) {
                *d = rest * l;
            }
            radau::adjoint(self, work, der, st, alpha)?;
        } else {
            // The Hermite interpolant u_n + h (w0 f(t_n, u_n) + w1 f(t_{n+1}, u_{n+1}) + w2 Δ/h),
            // Δ = u_{n+1} − u_n, transposed: λ on u_{n+1} is w2 λ⁻ + f_uᵀ(end) h w1 λ⁻, then the
            // step's own adjoint, plus the direct part (1 − w2) λ⁻ + f_uᵀ(start) h w0 λ⁻.
            let mut end = vec![0.0; n];
            let seed: Vec<f64> = lambda_minus.iter().map(|l| h * w[1] * l).collect();
            der.vjp_add(
                step.t_next,
                &step.u_next,
                &st.p,
                &seed,
                &mut end,
                &mut st.p_bar,
            );
            let seed: Vec<f64> = lambda_minus.iter().map(|l| h * w[0] * l).collect();
            der.vjp_add(step.t, &step.u, &st.p, &seed, &mut direct, &mut st.p_bar);
            for m in 0..n {
                st.lambda[m] = w[2] * lambda_minus[m] + end[m];
                direct[m] += (1.0 - w[2]) * lambda_minus[m];
            }
            esdirk::adjoint(self, work, der, st)?;
        }
        for (m, d) in direct.iter().enumerate() {
            st.lambda[m] = (0..s).map(|i| work.mu[i * n + m]).sum::<f64>() + d;
        }
        st.leave(work.step.t)
    }

    fn adjoint_step<O: Objective>(
        &mut self,
        work: &mut ImplicitWork,
        der: &mut Derivatives<'_, M>,
        st: &mut AdjointState<'_, O>,
    ) -> Result<(), SensitivityError> {
        work.step.take(self)?;
        st.enter(work.step.t_next, &work.step.u_next)?;
        if work.step.scheme == Scheme::Radau5 {
            radau::adjoint(self, work, der, st, [0.0, 0.0, 1.0])?;
        } else {
            esdirk::adjoint(self, work, der, st)?;
        }
        // λ_n = Σ_i μ_i.
        let n = st.lambda.len();
        let s = work.step.scheme.stages();
        for m in 0..n {
            st.lambda[m] = (0..s).map(|i| work.mu[i * n + m]).sum();
        }
        st.leave(work.step.t)
    }
}
