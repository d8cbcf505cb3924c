//! Forward sensitivities and the exact discrete adjoint of implicit (ESDIRK and Radau IIA) solves.
//!
//! One accepted step of an ESDIRK method with stages Y_0 = u_n and, for i ≥ 1,
//!
//! F_i(Y) = Y_i − u_n − h Σ_{j<i} a_ij f(t_j, Y_j, p) − hγ f(t_i, Y_i, p) = 0,  u_{n+1} = Y_{s−1},
//!
//! is differentiated as the map u_n ↦ u_{n+1} with its stage equations solved exactly and h frozen
//! (the Newton iterates are close to that solution, to a fraction κ of the error tolerance). With
//! J_i = f_u(t_i, Y_i) and M_i = I − hγ J_i:
//!
//! - **tangents**: M_i Ẏ_i = u̇_n + h Σ_{j<i} a_ij K̇_j + hγ f_p(Y_i) ṗ, K̇_i = J_i Ẏ_i + f_p ṗ;
//! - **adjoint**: with σ_i = h Σ_{k>i} a_ki μ_k, M_iᵀ μ_i = δ_{i,s−1} λ + J_iᵀ σ_i (+ h b_i ∂r/∂u for an
//!   integral term), then λ_n = Σ_i μ_i and p̄ += f_p(Y_i)ᵀ (σ_i + hγ μ_i).
//!
//! The stage systems use the exact stage Jacobians J_i, reached through jvps (tangents) or vjps (adjoint)
//! in a Richardson iteration preconditioned by the step's own factorization of I − hγJ (J frozen at some
//! earlier point, as Newton used it): x ← x + M⁻¹(b − M_i x), which contracts at Newton's rate. When it
//! does not reach a relative change of 1e-13 within a few iterations, J_i is computed by AD and M_i
//! factored (counted in `exact_stage_factorizations`).
//!
//! Radau IIA's three stages are coupled: M = I − h(A ⊗ I) blockdiag(J_1, J_2, J_3) is one 3n system,
//! preconditioned by the step's transformed factorizations (one real, one complex n × n system), with
//! the dense 3n × 3n matrix as the exact fallback.

#![allow(clippy::needless_range_loop)] // component loops over several equal-length buffers

use ndarray::{Array1, Array2};
use odesens_solver::linalg::{DenseLu, LinearSolver};
use odesens_solver::{
    EsdirkTableau, ImplicitIntegrator, OdeProblem, OdeSystem, Scheme, SolverError, SolverOptions,
    radau,
};

use crate::ad::derivatives::{Derivatives, VjpMode};
use crate::checkpointing::{Checkpointing, Reversal, forward_with_checkpoints, reverse};
use crate::common::{
    AdjointTrajectory, ChunkResult, Gradient, ObjectiveTracker, SensitivityStats, TangentRecord,
    add_directional, observation_jump, stats_since,
};
use crate::error::{SensitivityError, check_finite};
use crate::objective::Objective;

/// Relative change at which a stage's linear iteration has converged.
const LINEAR_TOL: f64 = 1e-13;
/// Iterations before a stage's exact matrix is factored instead.
const LINEAR_MAX: usize = 12;

/// A copy of one accepted step (the integrator is needed mutably while the step is differentiated).
struct StepData {
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

    fn stages(&self) -> usize {
        self.scheme.stages()
    }

    /// The ESDIRK tableau (ESDIRK paths only).
    fn tab(&self) -> &'static EsdirkTableau {
        match self.scheme {
            Scheme::Esdirk(tab) => tab,
            Scheme::Radau5 => unreachable!("an ESDIRK step"),
        }
    }

    fn stage_time(&self, i: usize) -> f64 {
        self.scheme.stage_time(i, self.t, self.h, self.t_next)
    }

    /// Y_i.
    fn stage_value(&self, i: usize, out: &mut [f64]) {
        let n = self.u.len();
        out.copy_from_slice(&self.ys[i * n..(i + 1) * n]);
    }
}

/// The stopping rule of the preconditioned stage iterations: converged when the update is below
/// [`LINEAR_TOL`] of the iterate, stalled when it is not finite or shrinks by less than half.
struct Richardson {
    prev: f64,
}

enum Verdict {
    Converged,
    Stalled,
    Continue,
}

impl Richardson {
    fn new() -> Self {
        Self {
            prev: f64::INFINITY,
        }
    }

    /// The verdict on an update of max-norm `change` to an iterate of max-norm `size`.
    fn verdict(&mut self, change: f64, size: f64) -> Verdict {
        if change <= LINEAR_TOL * size || size == 0.0 {
            Verdict::Converged
        } else if !change.is_finite() || change > 0.5 * self.prev {
            Verdict::Stalled
        } else {
            self.prev = change;
            Verdict::Continue
        }
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
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
}

impl StageLinear {
    fn new(n: usize) -> Self {
        Self {
            n,
            y: vec![0.0; n],
            col: vec![0.0; n],
            exact: None,
            fallbacks: 0,
            col3: vec![0.0; 3 * n],
            jacs: Vec::new(),
            exact3: None,
        }
    }

    /// Radau: factors M = I − h(A ⊗ I) blockdiag(J_1, J_2, J_3) with the exact stage Jacobians (kept in
    /// `jacs`).
    fn factor_exact_radau<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        step: &StepData,
        p: &[f64],
    ) -> Result<(), SensitivityError> {
        let (n, np, h) = (self.n, p.len(), step.h);
        let cols = n + np;
        self.jacs.resize(3 * n * cols, 0.0);
        for j in 0..3 {
            step.stage_value(j, &mut self.y);
            let jac = der.jacobian(step.stage_time(j), &self.y, p);
            self.jacs[j * n * cols..(j + 1) * n * cols].copy_from_slice(jac);
        }
        self.fallbacks += 1;
        let jacs = &self.jacs;
        self.exact3
            .get_or_insert_with(|| DenseLu::new(3 * n))
            .factor(&mut |r, c, _| {
                let (i, m, j, q) = (r / n, r % n, c / n, c % n);
                let identity = f64::from(u8::from(r == c));
                identity - h * radau::A[i][j] * jacs[j * n * cols + m * cols + q]
            })
            .map_err(|pivot| SolverError::SingularMatrix {
                t: step.t,
                h,
                pivot,
            })?;
        Ok(())
    }

    /// Factors M_i = I − hγ J_i with J_i by AD at (t, Y_i); returns [f_u f_p] row-major.
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

/// Tangents of `c` directions (row-major (component, lane)).
struct ImplicitTangents {
    c: usize,
    udot: Vec<f64>,
    pdot: Vec<f64>,
    kdot: Vec<f64>,
    ydot: Vec<f64>,
    r: Vec<f64>,
    out: Vec<f64>,
}

impl ImplicitTangents {
    /// Propagates u̇_n through `step` (see the module docs); afterwards `ydot` holds every Ẏ_i and
    /// `udot` holds u̇_{n+1}.
    fn step<M: OdeSystem>(
        &mut self,
        it: &mut ImplicitIntegrator<'_, M>,
        der: &mut Derivatives<'_, M>,
        lin: &mut StageLinear,
        step: &StepData,
        p: &[f64],
    ) -> Result<(), SensitivityError> {
        if step.scheme == Scheme::Radau5 {
            return self.step_radau(it, der, lin, step, p);
        }
        let (n, c, np) = (lin.n, self.c, p.len());
        let nc = n * c;
        let (tab, h) = (step.tab(), step.h);
        let hg = h * tab.gamma;
        self.ydot[..nc].copy_from_slice(&self.udot);
        der.jvp_block(
            step.t,
            &step.u,
            p,
            &self.udot,
            &self.pdot,
            &mut self.kdot[..nc],
            c,
        );
        for i in 1..step.stages() {
            let ti = step.stage_time(i);
            step.stage_value(i, &mut lin.y);
            // r = u̇_n + h Σ_{j<i} a_ij K̇_j; predictor Ẏ_i = r + hγ K̇_{i−1}.
            for x in 0..nc {
                let mut acc = 0.0;
                for (j, &a) in tab.a[i].iter().enumerate() {
                    acc += a * self.kdot[j * nc + x];
                }
                self.r[x] = self.udot[x] + h * acc;
                self.ydot[i * nc + x] = self.r[x] + hg * self.kdot[(i - 1) * nc + x];
            }
            let mut converged = false;
            let mut rule = Richardson::new();
            for _ in 0..LINEAR_MAX {
                let ydot = &mut self.ydot[i * nc..(i + 1) * nc];
                der.jvp_block(ti, &lin.y, p, ydot, &self.pdot, &mut self.out, c);
                // δ = M⁻¹(r + hγ(J_i Ẏ + f_p ṗ) − Ẏ), column by column.
                let mut change = 0.0f64;
                for lane in 0..c {
                    for m in 0..n {
                        let x = m * c + lane;
                        lin.col[m] = self.r[x] + hg * self.out[x] - ydot[x];
                    }
                    it.solve_iteration_matrix(&mut lin.col);
                    for m in 0..n {
                        ydot[m * c + lane] += lin.col[m];
                        change = change.max(lin.col[m].abs());
                    }
                }
                match rule.verdict(change, max_abs(ydot)) {
                    Verdict::Converged => {
                        converged = true;
                        break;
                    }
                    Verdict::Stalled => break,
                    Verdict::Continue => {}
                }
            }
            if !converged {
                // Factor M_i exactly: Ẏ = M_i⁻¹(r + hγ f_p ṗ).
                let jac = lin.factor_exact(der, ti, p, hg, h)?;
                let cols = n + np;
                for lane in 0..c {
                    for m in 0..n {
                        let mut fp = 0.0;
                        for q in 0..np {
                            fp += jac[m * cols + n + q] * self.pdot[q * c + lane];
                        }
                        lin.col[m] = self.r[m * c + lane] + hg * fp;
                    }
                    lin.exact
                        .as_mut()
                        .expect("factored")
                        .solve_in_place(&mut lin.col);
                    for m in 0..n {
                        self.ydot[i * nc + m * c + lane] = lin.col[m];
                    }
                }
            }
            // K̇_i from the stage equation.
            for x in 0..nc {
                self.kdot[i * nc + x] = (self.ydot[i * nc + x] - self.r[x]) / hg;
            }
        }
        let s = step.stages();
        self.udot.copy_from_slice(&self.ydot[(s - 1) * nc..s * nc]);
        check_finite("tangent", step.t_next, &self.udot)
    }

    /// Radau IIA: Ẏ = 1 ⊗ u̇_n + h (A ⊗ I) K̇, K̇_j = J_j Ẏ_j + f_p ṗ (one coupled 3n system per lane),
    /// preconditioned by the step's transformed factorizations; u̇_{n+1} = Ẏ_3.
    fn step_radau<M: OdeSystem>(
        &mut self,
        it: &mut ImplicitIntegrator<'_, M>,
        der: &mut Derivatives<'_, M>,
        lin: &mut StageLinear,
        step: &StepData,
        p: &[f64],
    ) -> Result<(), SensitivityError> {
        let (n, c, np) = (lin.n, self.c, p.len());
        let nc = n * c;
        let h = step.h;
        for i in 0..3 {
            self.ydot[i * nc..(i + 1) * nc].copy_from_slice(&self.udot);
        }
        let mut converged = false;
        let mut rule = Richardson::new();
        for _ in 0..LINEAR_MAX {
            for i in 0..3 {
                step.stage_value(i, &mut lin.y);
                der.jvp_block(
                    step.stage_time(i),
                    &lin.y,
                    p,
                    &self.ydot[i * nc..(i + 1) * nc],
                    &self.pdot,
                    &mut self.kdot[i * nc..(i + 1) * nc],
                    c,
                );
            }
            let mut change = 0.0f64;
            for lane in 0..c {
                for i in 0..3 {
                    for m in 0..n {
                        let x = m * c + lane;
                        let mut acc = 0.0;
                        for j in 0..3 {
                            acc += radau::A[i][j] * self.kdot[j * nc + x];
                        }
                        lin.col3[i * n + m] = self.udot[x] + h * acc - self.ydot[i * nc + x];
                    }
                }
                it.solve_iteration_matrix(&mut lin.col3);
                for i in 0..3 {
                    for m in 0..n {
                        let d = lin.col3[i * n + m];
                        self.ydot[i * nc + m * c + lane] += d;
                        change = change.max(d.abs());
                    }
                }
            }
            match rule.verdict(change, max_abs(&self.ydot[..3 * nc])) {
                Verdict::Converged => {
                    converged = true;
                    break;
                }
                Verdict::Stalled => break,
                Verdict::Continue => {}
            }
        }
        if !converged {
            lin.factor_exact_radau(der, step, p)?;
            let cols = n + np;
            for lane in 0..c {
                for i in 0..3 {
                    for m in 0..n {
                        let mut acc = 0.0;
                        for j in 0..3 {
                            let row = &lin.jacs
                                [j * n * cols + m * cols + n..j * n * cols + (m + 1) * cols];
                            let fp: f64 = (0..np).map(|q| row[q] * self.pdot[q * c + lane]).sum();
                            acc += radau::A[i][j] * fp;
                        }
                        lin.col3[i * n + m] = self.udot[m * c + lane] + h * acc;
                    }
                }
                lin.exact3
                    .as_mut()
                    .expect("factored")
                    .solve_in_place(&mut lin.col3);
                for i in 0..3 {
                    for m in 0..n {
                        self.ydot[i * nc + m * c + lane] = lin.col3[i * n + m];
                    }
                }
            }
        }
        self.udot.copy_from_slice(&self.ydot[2 * nc..3 * nc]);
        check_finite("tangent", step.t_next, &self.udot)
    }
}

/// Forward sensitivities of an implicit solve for the directions (du0, dp) (columns), all in one block.
pub(crate) fn forward<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    du0: &Array2<f64>,
    dp: &Array2<f64>,
    save_times: &[f64],
    objective: Option<&O>,
) -> Result<ChunkResult, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    let c = du0.ncols();
    let p = problem.params().to_vec();
    let mut it = ImplicitIntegrator::new(problem, options)?;
    let scheme = it.scheme();
    let s = scheme.stages();
    let mut tg = ImplicitTangents {
        c,
        udot: vec![0.0; n * c],
        pdot: vec![0.0; np * c],
        kdot: vec![0.0; s * n * c],
        ydot: vec![0.0; s * n * c],
        r: vec![0.0; n * c],
        out: vec![0.0; n * c],
    };
    for lane in 0..c {
        for m in 0..n {
            tg.udot[m * c + lane] = du0[[m, lane]];
        }
        for m in 0..np {
            tg.pdot[m * c + lane] = dp[[m, lane]];
        }
    }
    let mut der = Derivatives::new(problem.model());
    let mut lin = StageLinear::new(n);
    let mut step = StepData::new(scheme, n);
    let mut rec = TangentRecord::new(objective, save_times, (n, np), c);
    rec.record(problem.t0(), &problem.u0().to_vec(), &p, &tg.udot, &tg.pdot)?;
    let mut yi = vec![0.0; n];
    while !it.is_finished() {
        step.take(&mut it)?;
        tg.step(&mut it, &mut der, &mut lin, &step, &p)?;
        if let Some(tr) = rec.tracker.as_mut()
            && tr.objective().has_running_cost()
        {
            let mut q = 0.0;
            for i in 0..s {
                let b = scheme.weight(i);
                if b != 0.0 {
                    step.stage_value(i, &mut yi);
                    q += b * tr.running_gradient(step.stage_time(i), &yi, &p)?;
                    let ydot = &tg.ydot[i * n * c..(i + 1) * n * c];
                    add_directional(tr, step.h * b, ydot, &tg.pdot, &mut rec.d_objective);
                }
            }
            rec.value += step.h * q;
        }
        rec.record(step.t_next, &step.u_next, &p, &tg.udot, &tg.pdot)?;
    }
    let mut stats = SensitivityStats {
        forward: it.stats(),
        derivatives: der.counts,
        ..Default::default()
    };
    stats.exact_stage_factorizations = lin.fallbacks;
    Ok(ChunkResult {
        saved: rec.saved,
        states: rec.states,
        d_objective: rec.d_objective,
        value: rec.value,
        stats,
    })
}

/// The backward pass: a replaying integrator and the adjoint state.
struct Engine<'a, 'o, M: OdeSystem, O: Objective> {
    replay: ImplicitIntegrator<'a, M>,
    der: Derivatives<'a, M>,
    lin: StageLinear,
    tracker: ObjectiveTracker<'o, O>,
    step: StepData,
    p: Vec<f64>,
    lambda: Vec<f64>,
    p_bar: Vec<f64>,
    /// μ_i of every stage (s × n).
    mu: Vec<f64>,
    sigma: Vec<f64>,
    c: Vec<f64>,
    g: Vec<f64>,
    /// Radau: the right-hand side and residual of the coupled 3n system.
    c3: Vec<f64>,
    r3: Vec<f64>,
    p_scratch: Vec<f64>,
    obs_left: usize,
    trajectory: Option<Vec<f64>>,
}

impl<'a, M: OdeSystem, O: Objective> Reversal for Engine<'a, '_, M, O> {
    type S = ImplicitIntegrator<'a, M>;

    fn replay(&mut self) -> &mut ImplicitIntegrator<'a, M> {
        &mut self.replay
    }

    fn adjoint_current(&mut self) -> Result<(), SensitivityError> {
        self.step_back()
    }
}

impl<M: OdeSystem, O: Objective> Engine<'_, '_, M, O> {
    /// Takes the next step from the replay's current point and differentiates it backwards.
    fn step_back(&mut self) -> Result<(), SensitivityError> {
        self.step.take(&mut self.replay)?;
        let n = self.lambda.len();
        let step = &self.step;
        let h = step.h;
        let s = step.stages();
        let p = &self.p[..];
        if let Some(rec) = self.trajectory.as_mut()
            && rec.is_empty()
        {
            rec.push(step.t_next);
            rec.extend_from_slice(&self.lambda);
        }
        observation_jump(
            &mut self.tracker,
            &mut self.obs_left,
            (step.t_next, &step.u_next, p),
            &mut self.lambda,
            &mut self.p_bar,
            &mut self.trajectory,
        )?;
        let running = self.tracker.objective().has_running_cost();
        if step.scheme == Scheme::Radau5 {
            self.reverse_radau(running)?;
        } else {
            let tab = step.tab();
            let hg = h * tab.gamma;
            for i in (0..s).rev() {
                let ti = step.stage_time(i);
                step.stage_value(i, &mut self.lin.y);
                // σ_i = h Σ_{k>i} a_ki μ_k; c_i = δ_{i,s−1} λ + h b_i ∂r/∂u.
                for m in 0..n {
                    let mut acc = 0.0;
                    for k in i + 1..s {
                        acc += tab.a[k][i] * self.mu[k * n + m];
                    }
                    self.sigma[m] = h * acc;
                    self.c[m] = if i + 1 == s { self.lambda[m] } else { 0.0 };
                }
                let hb = h * step.scheme.weight(i);
                if running && hb != 0.0 {
                    self.tracker.running_gradient(ti, &self.lin.y, p)?;
                    for (c, g) in self.c.iter_mut().zip(&self.tracker.g_u) {
                        *c += hb * g;
                    }
                    for (pb, g) in self.p_bar.iter_mut().zip(&self.tracker.g_p) {
                        *pb += hb * g;
                    }
                }
                let mu = &mut self.mu[i * n..(i + 1) * n];
                if i == 0 {
                    // Y_0 = u_n is explicit: μ_0 = c_0 + J_0ᵀ σ_0, p̄ += f_pᵀ σ_0.
                    mu.copy_from_slice(&self.c);
                    if self.sigma.iter().any(|&x| x != 0.0) {
                        self.der
                            .vjp_add(ti, &self.lin.y, p, &self.sigma, mu, &mut self.p_bar);
                    }
                    continue;
                }
                // M_iᵀ μ = c + J_iᵀ σ by x ← x + M⁻ᵀ(c + J_iᵀ(σ + hγ x) − x), from x = c.
                mu.copy_from_slice(&self.c);
                let mut converged = false;
                let mut rule = Richardson::new();
                for _ in 0..LINEAR_MAX {
                    for m in 0..n {
                        self.g[m] = self.sigma[m] + hg * mu[m];
                    }
                    self.lin.col.copy_from_slice(&self.c);
                    self.der.vjp_add(
                        ti,
                        &self.lin.y,
                        p,
                        &self.g,
                        &mut self.lin.col,
                        &mut self.p_scratch,
                    );
                    for m in 0..n {
                        self.lin.col[m] -= mu[m];
                    }
                    self.replay
                        .solve_iteration_matrix_transpose(&mut self.lin.col);
                    let mut change = 0.0f64;
                    for m in 0..n {
                        mu[m] += self.lin.col[m];
                        change = change.max(self.lin.col[m].abs());
                    }
                    match rule.verdict(change, max_abs(mu)) {
                        Verdict::Converged => {
                            converged = true;
                            break;
                        }
                        Verdict::Stalled => break,
                        Verdict::Continue => {}
                    }
                }
                if !converged {
                    let jac = self.lin.factor_exact(&mut self.der, ti, p, hg, h)?;
                    let cols = n + p.len();
                    for m in 0..n {
                        let mut acc = self.c[m];
                        for r in 0..n {
                            acc += jac[r * cols + m] * self.sigma[r];
                        }
                        mu[m] = acc;
                    }
                    self.lin
                        .exact
                        .as_mut()
                        .expect("factored")
                        .solve_transpose_in_place(mu);
                }
                // p̄ += f_p(Y_i)ᵀ (σ_i + hγ μ_i).
                for m in 0..n {
                    self.g[m] = self.sigma[m] + hg * mu[m];
                }
                self.lin.col.iter_mut().for_each(|x| *x = 0.0);
                self.der.vjp_add(
                    ti,
                    &self.lin.y,
                    p,
                    &self.g,
                    &mut self.lin.col,
                    &mut self.p_bar,
                );
            }
        }
        // λ_n = Σ_i μ_i.
        for m in 0..n {
            self.lambda[m] = (0..s).map(|i| self.mu[i * n + m]).sum();
        }
        let t = self.step.t;
        check_finite("adjoint λ", t, &self.lambda)?;
        check_finite("adjoint p̄", t, &self.p_bar)?;
        if let Some(rec) = self.trajectory.as_mut() {
            rec.push(t);
            rec.extend_from_slice(&self.lambda);
        }
        Ok(())
    }

    /// Radau IIA backwards: Mᵀμ = c with M = I − h(A ⊗ I) blockdiag(J_j), i.e. μ_j − J_jᵀ ν_j = c_j,
    /// ν_j = h Σ_i a_ij μ_i, c_3 = λ (+ h b_j ∂r/∂u); then p̄ += Σ_j f_p(Y_j)ᵀ ν_j.
    fn reverse_radau(&mut self, running: bool) -> Result<(), SensitivityError> {
        let n = self.lambda.len();
        let h = self.step.h;
        let p = &self.p[..];
        // Buffers taken for the duration (put back below: no allocation).
        let (mut cvec, mut resid) = (std::mem::take(&mut self.c3), std::mem::take(&mut self.r3));
        cvec.iter_mut().for_each(|x| *x = 0.0);
        cvec[2 * n..].copy_from_slice(&self.lambda);
        if running {
            for j in 0..3 {
                let hb = h * radau::A[2][j];
                self.step.stage_value(j, &mut self.lin.y);
                self.tracker
                    .running_gradient(self.step.stage_time(j), &self.lin.y, p)?;
                for (x, g) in cvec[j * n..(j + 1) * n].iter_mut().zip(&self.tracker.g_u) {
                    *x += hb * g;
                }
                for (pb, g) in self.p_bar.iter_mut().zip(&self.tracker.g_p) {
                    *pb += hb * g;
                }
            }
        }
        self.mu.copy_from_slice(&cvec);
        let nu = |mu: &[f64], j: usize, m: usize| -> f64 {
            h * (0..3).map(|i| radau::A[i][j] * mu[i * n + m]).sum::<f64>()
        };
        let mut converged = false;
        let mut rule = Richardson::new();
        for _ in 0..LINEAR_MAX {
            // Residual c + (J_jᵀ ν_j)_j − μ, then μ += M_frozen⁻ᵀ residual.
            for j in 0..3 {
                for m in 0..n {
                    self.g[m] = nu(&self.mu, j, m);
                }
                self.step.stage_value(j, &mut self.lin.y);
                let r = &mut resid[j * n..(j + 1) * n];
                r.copy_from_slice(&cvec[j * n..(j + 1) * n]);
                self.der.vjp_add(
                    self.step.stage_time(j),
                    &self.lin.y,
                    p,
                    &self.g,
                    r,
                    &mut self.p_scratch,
                );
                for (x, mu) in r.iter_mut().zip(&self.mu[j * n..(j + 1) * n]) {
                    *x -= mu;
                }
            }
            self.replay.solve_iteration_matrix_transpose(&mut resid);
            let mut change = 0.0f64;
            for (mu, d) in self.mu.iter_mut().zip(&resid) {
                *mu += d;
                change = change.max(d.abs());
            }
            match rule.verdict(change, max_abs(&self.mu)) {
                Verdict::Converged => {
                    converged = true;
                    break;
                }
                Verdict::Stalled => break,
                Verdict::Continue => {}
            }
        }
        if !converged {
            self.lin.factor_exact_radau(&mut self.der, &self.step, p)?;
            self.mu.copy_from_slice(&cvec);
            self.lin
                .exact3
                .as_mut()
                .expect("factored")
                .solve_transpose_in_place(&mut self.mu);
        }
        // p̄ += f_p(Y_j)ᵀ ν_j.
        for j in 0..3 {
            for m in 0..n {
                self.g[m] = nu(&self.mu, j, m);
            }
            self.step.stage_value(j, &mut self.lin.y);
            self.lin.col.iter_mut().for_each(|x| *x = 0.0);
            self.der.vjp_add(
                self.step.stage_time(j),
                &self.lin.y,
                p,
                &self.g,
                &mut self.lin.col,
                &mut self.p_bar,
            );
        }
        (self.c3, self.r3) = (cvec, resid);
        Ok(())
    }
}

/// The exact discrete adjoint of an implicit solve (called by the discrete adjoint's driver).
pub(crate) fn adjoint<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    checkpointing: Checkpointing,
    (vjp, record_trajectory): (VjpMode, bool),
) -> Result<Gradient, SensitivityError> {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    let p = problem.params().to_vec();
    let (t0, u0) = (problem.t0(), problem.u0().to_vec());
    let mut forward = ImplicitIntegrator::new(problem, options)?;
    let scheme = forward.scheme();
    let mut record =
        forward_with_checkpoints(&mut forward, objective, &p, (t0, &u0), checkpointing)?;

    let s = scheme.stages();
    let mut e = Engine {
        replay: ImplicitIntegrator::new(problem, options)?,
        der: Derivatives::new(problem.model()).with_vjp_mode(vjp),
        lin: StageLinear::new(n),
        tracker: ObjectiveTracker::new(objective, n, np),
        step: StepData::new(scheme, n),
        p: p.clone(),
        lambda: vec![0.0; n],
        p_bar: vec![0.0; np],
        mu: vec![0.0; s * n],
        sigma: vec![0.0; n],
        c: vec![0.0; n],
        g: vec![0.0; n],
        c3: vec![0.0; 3 * n],
        r3: vec![0.0; 3 * n],
        p_scratch: vec![0.0; np],
        obs_left: objective.observation_times().len(),
        trajectory: record_trajectory.then(Vec::new),
    };
    let replay_start = e.replay.stats();
    let cost = reverse(&mut e, checkpointing, &mut record)?;
    // An observation at t0 adds ∂g/∂u0 directly.
    observation_jump(
        &mut e.tracker,
        &mut e.obs_left,
        (t0, &u0, &p),
        &mut e.lambda,
        &mut e.p_bar,
        &mut e.trajectory,
    )?;
    let adjoint = e
        .trajectory
        .take()
        .map(|rec| AdjointTrajectory::from_rows(rec, n));
    let recomputation = stats_since(&replay_start, &e.replay.stats());
    Ok(Gradient {
        value: record.value,
        wrt_params: Array1::from(e.p_bar),
        wrt_u0: Array1::from(e.lambda),
        stats: SensitivityStats {
            forward: forward.stats(),
            recomputation,
            recomputed_steps: cost.recomputed_steps,
            peak_snapshots: cost.peak_snapshots,
            peak_checkpoint_bytes: cost.peak_checkpoint_bytes,
            derivatives: e.der.counts,
            exact_stage_factorizations: e.lin.fallbacks,
        },
        adjoint,
        backward: None,
        u0_reconstructed: None,
    })
}
