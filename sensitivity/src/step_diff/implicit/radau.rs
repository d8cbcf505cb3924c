//! The tangent and adjoint of a Radau IIA step.
//!
//! The three stages are coupled: Y = 1 ⊗ u_n + h (A ⊗ I) K, K_j = f(t_j, Y_j), u_{n+1} = Y_3. With
//! M = I − h(A ⊗ I) blockdiag(J_1, J_2, J_3) (one 3n system):
//!
//! - **tangents**: M Ẏ = 1 ⊗ u̇_n + h (A ⊗ I)(f_p(Y_j) ṗ)_j, u̇_{n+1} = Ẏ_3;
//! - **adjoint**: Mᵀ μ = c, i.e. μ_j − J_jᵀ ν_j = c_j with ν_j = h Σ_i a_ij μ_i, c_3 = λ (+ h b_j ∂r/∂u
//!   for an integral term); then λ_n = Σ_j μ_j and p̄ += Σ_j f_p(Y_j)ᵀ ν_j.
//!
//! The iterations are preconditioned by the step's transformed factorizations (one real, one complex
//! n × n system), with the dense 3n × 3n matrix as the exact fallback.

#![allow(clippy::needless_range_loop)] // component loops over several equal-length buffers

use odesens_solver::linalg::{DenseLu, LinearSolver, SparseLu};
use odesens_solver::{ImplicitIntegrator, OdeSystem, SolverError, radau};

use super::{ImplicitWork, Richardson, StageLinear, StepData, max_abs};
use crate::ad::derivatives::Derivatives;
use crate::error::SensitivityError;
use crate::objective::Objective;
use crate::step_diff::{AdjointState, Tangents};

impl StageLinear {
    /// Factors M = I − h(A ⊗ I) blockdiag(J_1, J_2, J_3) with the exact stage Jacobians (kept in
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
            step.copy_stage(j, &mut self.y);
            let t = step.scheme.stage_time(j, step.t, h, step.t_next);
            let jac = der.jacobian(t, &self.y, p);
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
}

impl StageLinear {
    /// Sparse route: factors the 3n matrix I − h(A ⊗ I) blockdiag(J_1, J_2, J_3) on the pattern of J in
    /// every block, with the stage Jacobians by compressed forward mode.
    fn factor_sparse_radau<M: OdeSystem>(
        &mut self,
        der: &mut Derivatives<'_, M>,
        step: &StepData,
        p: &[f64],
    ) -> Result<(), SensitivityError> {
        let (n, h) = (self.n, step.h);
        let sp = self.sparse.as_mut().expect("the sparse route");
        let nnz = sp.pattern.nnz();
        sp.vals.resize(3 * nnz, 0.0);
        for j in 0..3 {
            step.copy_stage(j, &mut self.y);
            let t = step.scheme.stage_time(j, step.t, h, step.t_next);
            der.sparse_jacobian(
                (t, &self.y, p),
                &sp.pattern,
                (&sp.colors, sp.n_colors),
                &mut sp.vals[j * nnz..(j + 1) * nnz],
            );
        }
        self.fallbacks += 1;
        if sp.lu3.is_none() {
            let lu3 = SparseLu::new(sp.radau_pattern());
            sp.starts3 = (0..3 * n)
                .map(|c| lu3.pattern().col_range(c).start)
                .collect();
            sp.lu3 = Some(lu3);
        }
        let (pattern, vals, starts) = (&sp.pattern, &sp.vals, &sp.starts3);
        let lu3 = sp.lu3.as_mut().expect("built above");
        // Column c = (bj, q) of the 3n pattern holds J's column q once per block row, in order.
        lu3.factor(&mut |r, c, k| {
            let (bj, q) = (c / n, c % n);
            let len = pattern.col_rows(q).len();
            let local = k - starts[c];
            let (bi, pos) = (local / len, pattern.col_range(q).start + local % len);
            debug_assert_eq!(bi, r / n);
            f64::from(u8::from(r == c)) - h * radau::A[bi][bj] * vals[bj * nnz + pos]
        })
        .map_err(|pivot| SolverError::SingularMatrix {
            t: step.t,
            h,
            pivot,
        })?;
        Ok(())
    }
}

/// Ẏ = 1 ⊗ u̇_n + h (A ⊗ I) K̇, K̇_j = J_j Ẏ_j + f_p ṗ (one coupled 3n system per lane) for the step in
/// `w.step`; u̇_{n+1} = Ẏ_3 into `tg.udot`.
pub(super) fn tangent<M: OdeSystem>(
    it: &mut ImplicitIntegrator<'_, M>,
    w: &mut ImplicitWork,
    der: &mut Derivatives<'_, M>,
    tg: &mut Tangents,
    p: &[f64],
) -> Result<(), SensitivityError> {
    let (step, lin) = (&w.step, &mut w.lin);
    let (n, c, np) = (lin.n, tg.c, p.len());
    let nc = n * c;
    let h = step.h;
    let stage_time = |i: usize| step.scheme.stage_time(i, step.t, h, step.t_next);
    for i in 0..3 {
        tg.ydot[i * nc..(i + 1) * nc].copy_from_slice(&tg.udot);
    }
    let mut converged = false;
    let mut rule = Richardson::new();
    for _ in 0..lin.iterations(np) {
        for i in 0..3 {
            step.copy_stage(i, &mut lin.y);
            der.jvp_block(
                stage_time(i),
                &lin.y,
                p,
                &tg.ydot[i * nc..(i + 1) * nc],
                &tg.pdot,
                &mut tg.kdot[i * nc..(i + 1) * nc],
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
                        acc += radau::A[i][j] * tg.kdot[j * nc + x];
                    }
                    lin.col3[i * n + m] = tg.udot[x] + h * acc - tg.ydot[i * nc + x];
                }
            }
            it.solve_iteration_matrix(&mut lin.col3);
            for i in 0..3 {
                for m in 0..n {
                    let d = lin.col3[i * n + m];
                    tg.ydot[i * nc + m * c + lane] += d;
                    change = change.max(d.abs());
                }
            }
        }
        if let Some(done) = rule.stop(change, max_abs(&tg.ydot[..3 * nc])) {
            converged = done;
            break;
        }
    }
    if !converged && lin.sparse.is_some() {
        // Sparse: f_p(Y_j) ṗ by jvps with zero state directions (into K̇_j, free after the iteration).
        let sp = lin.sparse.as_mut().expect("sparse");
        sp.prepare(nc, np);
        for j in 0..3 {
            step.copy_stage(j, &mut lin.y);
            let kdot = &mut tg.kdot[j * nc..(j + 1) * nc];
            der.jvp_block(stage_time(j), &lin.y, p, &sp.zeros, &tg.pdot, kdot, c);
        }
        lin.factor_sparse_radau(der, step, p)?;
        let lu3 = lin.sparse.as_mut().and_then(|sp| sp.lu3.as_mut());
        let lu3 = lu3.expect("factored");
        for lane in 0..c {
            for i in 0..3 {
                for m in 0..n {
                    let x = m * c + lane;
                    let acc: f64 = (0..3).map(|j| radau::A[i][j] * tg.kdot[j * nc + x]).sum();
                    lin.col3[i * n + m] = tg.udot[x] + h * acc;
                }
            }
            lu3.solve_in_place(&mut lin.col3);
            for i in 0..3 {
                for m in 0..n {
                    tg.ydot[i * nc + m * c + lane] = lin.col3[i * n + m];
                }
            }
        }
    } else if !converged {
        lin.factor_exact_radau(der, step, p)?;
        let cols = n + np;
        for lane in 0..c {
            for i in 0..3 {
                for m in 0..n {
                    let mut acc = 0.0;
                    for j in 0..3 {
                        let row =
                            &lin.jacs[j * n * cols + m * cols + n..j * n * cols + (m + 1) * cols];
                        let fp: f64 = (0..np).map(|q| row[q] * tg.pdot[q * c + lane]).sum();
                        acc += radau::A[i][j] * fp;
                    }
                    lin.col3[i * n + m] = tg.udot[m * c + lane] + h * acc;
                }
            }
            lin.exact3
                .as_mut()
                .expect("factored")
                .solve_in_place(&mut lin.col3);
            for i in 0..3 {
                for m in 0..n {
                    tg.ydot[i * nc + m * c + lane] = lin.col3[i * n + m];
                }
            }
        }
    }
    Ok(())
}

/// μ of the three stages of the step in `w.step` from λ = `st.lambda` (see the module docs); p̄ and the
/// running cost's terms are added to `st`.
pub(super) fn adjoint<M: OdeSystem, O: Objective>(
    it: &mut ImplicitIntegrator<'_, M>,
    w: &mut ImplicitWork,
    der: &mut Derivatives<'_, M>,
    st: &mut AdjointState<'_, O>,
    alpha: [f64; 3],
) -> Result<(), SensitivityError> {
    let n = st.lambda.len();
    let step = &w.step;
    let h = step.h;
    let stage_time = |i: usize| step.scheme.stage_time(i, step.t, h, step.t_next);
    let (cvec, resid) = (&mut w.c3, &mut w.r3);
    // The output Σ_j α_j Y_j (+ a multiple of u_n): λ on u_{n+1} = Y_3 for a plain step.
    cvec.iter_mut().for_each(|x| *x = 0.0);
    for (j, &a) in alpha.iter().enumerate() {
        if a != 0.0 {
            for (c, l) in cvec[j * n..(j + 1) * n].iter_mut().zip(&st.lambda) {
                *c = a * l;
            }
        }
    }
    if st.tracker.objective().has_running_cost() {
        for j in 0..3 {
            let hb = h * radau::A[2][j];
            step.copy_stage(j, &mut w.lin.y);
            st.add_running((stage_time(j), &w.lin.y), hb, &mut cvec[j * n..(j + 1) * n])?;
        }
    }
    w.mu.copy_from_slice(cvec);
    let nu = |mu: &[f64], j: usize, m: usize| -> f64 {
        h * (0..3).map(|i| radau::A[i][j] * mu[i * n + m]).sum::<f64>()
    };
    let mut converged = false;
    let mut rule = Richardson::new();
    for _ in 0..w.lin.iterations(st.p.len()) {
        // Residual c + (J_jᵀ ν_j)_j − μ, then μ += M_frozen⁻ᵀ residual.
        for j in 0..3 {
            for m in 0..n {
                w.g[m] = nu(&w.mu, j, m);
            }
            step.copy_stage(j, &mut w.lin.y);
            let r = &mut resid[j * n..(j + 1) * n];
            r.copy_from_slice(&cvec[j * n..(j + 1) * n]);
            der.vjp_add(stage_time(j), &w.lin.y, &st.p, &w.g, r, &mut w.p_scratch);
            for (x, mu) in r.iter_mut().zip(&w.mu[j * n..(j + 1) * n]) {
                *x -= mu;
            }
        }
        it.solve_iteration_matrix_transpose(resid);
        let mut change = 0.0f64;
        for (mu, d) in w.mu.iter_mut().zip(resid.iter()) {
            *mu += d;
            change = change.max(d.abs());
        }
        if let Some(done) = rule.stop(change, max_abs(&w.mu)) {
            converged = done;
            break;
        }
    }
    if !converged && w.lin.sparse.is_some() {
        w.lin.factor_sparse_radau(der, step, &st.p)?;
        w.mu.copy_from_slice(cvec);
        let lu3 = w.lin.sparse.as_mut().and_then(|sp| sp.lu3.as_mut());
        lu3.expect("factored").solve_transpose_in_place(&mut w.mu);
    } else if !converged {
        w.lin.factor_exact_radau(der, step, &st.p)?;
        w.mu.copy_from_slice(cvec);
        w.lin
            .exact3
            .as_mut()
            .expect("factored")
            .solve_transpose_in_place(&mut w.mu);
    }
    // p̄ += f_p(Y_j)ᵀ ν_j.
    for j in 0..3 {
        for m in 0..n {
            w.g[m] = nu(&w.mu, j, m);
        }
        step.copy_stage(j, &mut w.lin.y);
        w.lin.col.iter_mut().for_each(|x| *x = 0.0);
        der.vjp_add(
            stage_time(j),
            &w.lin.y,
            &st.p,
            &w.g,
            &mut w.lin.col,
            &mut st.p_bar,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use odesens_models::Brusselator2D;
    use odesens_solver::{LinearSolverKind, Method, SolverOptions};

    /// The sparse 3n stage matrix solves like the dense one (Radau's stage iterations converge on the
    /// test problems, so the fallback is checked here directly, on a real step).
    #[test]
    fn sparse_and_dense_radau_stage_matrices_agree() {
        let problem = Brusselator2D::problem(4).unwrap();
        let options = SolverOptions::default()
            .method(Method::RadauIIA5)
            .rtol(1e-7)
            .atol(1e-5)
            .linear_solver(LinearSolverKind::Sparse);
        let mut it = ImplicitIntegrator::new(&problem, &options).unwrap();
        let (n, p) = (problem.n_states(), problem.params().to_vec());
        let mut step = StepData::new(it.scheme(), n);
        step.take(&mut it).unwrap();
        step.take(&mut it).unwrap();
        let mut der = Derivatives::new(problem.model());
        let mut lin = StageLinear::new(n, it.sparsity());
        assert!(lin.sparse.is_some());
        lin.factor_exact_radau(&mut der, &step, &p).unwrap();
        lin.factor_sparse_radau(&mut der, &step, &p).unwrap();
        let b: Vec<f64> = (0..3 * n)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 5.0)
            .collect();
        for transpose in [false, true] {
            let (mut x_dense, mut x_sparse) = (b.clone(), b.clone());
            let dense = lin.exact3.as_mut().unwrap();
            let sparse = lin.sparse.as_mut().unwrap().lu3.as_mut().unwrap();
            if transpose {
                dense.solve_transpose_in_place(&mut x_dense);
                sparse.solve_transpose_in_place(&mut x_sparse);
            } else {
                dense.solve_in_place(&mut x_dense);
                sparse.solve_in_place(&mut x_sparse);
            }
            let scale = x_dense.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let diff = x_dense
                .iter()
                .zip(&x_sparse)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-12 * scale,
                "transpose {transpose}: {diff:e} of {scale:e}"
            );
        }
        assert_eq!(lin.fallbacks, 2);
    }
}
