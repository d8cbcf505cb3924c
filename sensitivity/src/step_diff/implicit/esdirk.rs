//! The tangent and adjoint of an ESDIRK step.
//!
//! One accepted step with stages Y_0 = u_n and, for i ≥ 1,
//!
//! F_i(Y) = Y_i − u_n − h Σ_{j<i} a_ij f(t_j, Y_j, p) − hγ f(t_i, Y_i, p) = 0,  u_{n+1} = Y_{s−1}.
//!
//! With J_i = f_u(t_i, Y_i) and M_i = I − hγ J_i:
//!
//! - **tangents**: M_i Ẏ_i = u̇_n + h Σ_{j<i} a_ij K̇_j + hγ f_p(Y_i) ṗ, K̇_i = J_i Ẏ_i + f_p ṗ;
//! - **adjoint**: with σ_i = h Σ_{k>i} a_ki μ_k, M_iᵀ μ_i = δ_{i,s−1} λ + J_iᵀ σ_i (+ h b_i ∂r/∂u for an
//!   integral term), then λ_n = Σ_i μ_i and p̄ += f_p(Y_i)ᵀ (σ_i + hγ μ_i).

#![allow(clippy::needless_range_loop)] // component loops over several equal-length buffers

use odesens_solver::linalg::LinearSolver;
use odesens_solver::{EsdirkTableau, ImplicitIntegrator, OdeSystem, Scheme};

use super::{ImplicitWork, KRYLOV, Richardson, StepData, krylov_ok, max_abs};
use crate::ad::derivatives::Derivatives;
use crate::error::SensitivityError;
use crate::objective::Objective;
use crate::step_diff::{AdjointState, Tangents};

/// The ESDIRK tableau of `step`.
fn tableau(step: &StepData) -> &'static EsdirkTableau {
    match step.scheme {
        Scheme::Esdirk(tab) => tab,
        Scheme::Radau5 => unreachable!("an ESDIRK step"),
    }
}

/// Propagates u̇_n = `tg.udot` through the step in `w.step`; afterwards `tg.ydot` holds every Ẏ_i.
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
    let (tab, h) = (tableau(step), step.h);
    let hg = h * tab.gamma;
    tg.ydot[..nc].copy_from_slice(&tg.udot);
    der.jvp_block(
        step.t,
        &step.u,
        p,
        &tg.udot,
        &tg.pdot,
        &mut tg.kdot[..nc],
        c,
    );
    let s = step.scheme.stages();
    for i in 1..s {
        let ti = step.scheme.stage_time(i, step.t, h, step.t_next);
        step.copy_stage(i, &mut lin.y);
        // r = u̇_n + h Σ_{j<i} a_ij K̇_j; predictor Ẏ_i = r + hγ K̇_{i−1}.
        for x in 0..nc {
            let mut acc = 0.0;
            for (j, &a) in tab.a[i].iter().enumerate() {
                acc += a * tg.kdot[j * nc + x];
            }
            tg.next[x] = tg.udot[x] + h * acc;
            tg.ydot[i * nc + x] = tg.next[x] + hg * tg.kdot[(i - 1) * nc + x];
        }
        let mut converged = false;
        let mut rule = Richardson::new();
        for _ in 0..lin.iterations(np) {
            let ydot = &mut tg.ydot[i * nc..(i + 1) * nc];
            der.jvp_block(ti, &lin.y, p, ydot, &tg.pdot, &mut tg.out, c);
            // δ = M⁻¹(r + hγ(J_i Ẏ + f_p ṗ) − Ẏ), column by column.
            let mut change = 0.0f64;
            for lane in 0..c {
                for m in 0..n {
                    let x = m * c + lane;
                    lin.col[m] = tg.next[x] + hg * tg.out[x] - ydot[x];
                }
                it.solve_iteration_matrix(&mut lin.col);
                for m in 0..n {
                    ydot[m * c + lane] += lin.col[m];
                    change = change.max(lin.col[m].abs());
                }
            }
            if let Some(done) = rule.stop(change, max_abs(ydot)) {
                converged = done;
                break;
            }
        }
        if !converged && lin.sparse.is_some() {
            // Sparse: M_i Ẏ = r + hγ f_p ṗ, f_p ṗ by jvps with zero state directions; by GMRES
            // preconditioned by the step's factorization, else by sparse LU of M_i.
            let sp = lin.sparse.as_mut().expect("sparse");
            sp.prepare(nc, np);
            der.jvp_block(ti, &lin.y, p, &sp.zeros, &tg.pdot, &mut tg.out, c);
            let mut solved = true;
            for lane in 0..c {
                for m in 0..n {
                    let x = m * c + lane;
                    sp.b[m] = tg.next[x] + hg * tg.out[x];
                    sp.x[m] = tg.ydot[i * nc + x];
                }
                let y = &lin.y;
                let zeros_p = &sp.zeros_p;
                let apply = |v: &[f64], out: &mut [f64]| {
                    der.jvp_block(ti, y, p, v, zeros_p, out, 1);
                    for (o, v) in out.iter_mut().zip(v) {
                        *o = v - hg * *o;
                    }
                };
                let precond = |z: &mut [f64]| it.solve_iteration_matrix(z);
                if !krylov_ok(sp.gmres.solve(&sp.b, &mut sp.x, KRYLOV, apply, precond)) {
                    solved = false;
                    break;
                }
                sp.krylov += 1;
                for m in 0..n {
                    tg.ydot[i * nc + m * c + lane] = sp.x[m];
                }
            }
            if !solved {
                lin.factor_sparse(der, (ti, p), hg, h)?;
                let lu = lin.sparse.as_mut().and_then(|sp| sp.lu.as_mut());
                let lu = lu.expect("factored");
                for lane in 0..c {
                    for m in 0..n {
                        let x = m * c + lane;
                        lin.col[m] = tg.next[x] + hg * tg.out[x];
                    }
                    lu.solve_in_place(&mut lin.col);
                    for m in 0..n {
                        tg.ydot[i * nc + m * c + lane] = lin.col[m];
                    }
                }
            }
        } else if !converged {
            // Factor M_i exactly: Ẏ = M_i⁻¹(r + hγ f_p ṗ).
            let jac = lin.factor_exact(der, ti, p, hg, h)?;
            super::solve_exact_lanes(
                lin.exact.as_mut().expect("factored"),
                &mut lin.col,
                (jac, hg),
                (&tg.next, &tg.pdot),
                &mut tg.ydot[i * nc..(i + 1) * nc],
            );
        }
        // K̇_i from the stage equation.
        for x in 0..nc {
            tg.kdot[i * nc + x] = (tg.ydot[i * nc + x] - tg.next[x]) / hg;
        }
    }
    Ok(())
}

/// μ_i of every stage of the step in `w.step` from λ = `st.lambda` (see the module docs); p̄ and the
/// running cost's terms are added to `st`.
pub(super) fn adjoint<M: OdeSystem, O: Objective>(
    it: &mut ImplicitIntegrator<'_, M>,
    w: &mut ImplicitWork,
    der: &mut Derivatives<'_, M>,
    st: &mut AdjointState<'_, O>,
) -> Result<(), SensitivityError> {
    let n = st.lambda.len();
    let step = &w.step;
    let (h, s) = (step.h, step.scheme.stages());
    let running = st.tracker.objective().has_running_cost();
    let tab = tableau(step);
    let hg = h * tab.gamma;
    for i in (0..s).rev() {
        let ti = step.scheme.stage_time(i, step.t, h, step.t_next);
        step.copy_stage(i, &mut w.lin.y);
        // σ_i = h Σ_{k>i} a_ki μ_k; c_i = δ_{i,s−1} λ + h b_i ∂r/∂u.
        for m in 0..n {
            let mut acc = 0.0;
            for k in i + 1..s {
                acc += tab.a[k][i] * w.mu[k * n + m];
            }
            w.sigma[m] = h * acc;
            w.c[m] = if i + 1 == s { st.lambda[m] } else { 0.0 };
        }
        let hb = h * step.scheme.weight(i);
        if running && hb != 0.0 {
            st.add_running((ti, &w.lin.y), hb, &mut w.c)?;
        }
        let mu = &mut w.mu[i * n..(i + 1) * n];
        if i == 0 {
            // Y_0 = u_n is explicit: μ_0 = c_0 + J_0ᵀ σ_0, p̄ += f_pᵀ σ_0.
            mu.copy_from_slice(&w.c);
            if w.sigma.iter().any(|&x| x != 0.0) {
                der.vjp_add(ti, &w.lin.y, &st.p, &w.sigma, mu, &mut st.p_bar);
            }
            continue;
        }
        // M_iᵀ μ = c + J_iᵀ σ by x ← x + M⁻ᵀ(c + J_iᵀ(σ + hγ x) − x), from x = c. Sparse problems go
        // to GMRES at once: with the same preconditioner and one vjp per iteration it needs fewer
        // iterations, and the fixed-point iteration stalled in 90 of the 144 stage systems of the
        // Brusselator N = 32 after 10 iterations on average (1,572 vjps in all against 1,250).
        mu.copy_from_slice(&w.c);
        let mut converged = false;
        let mut rule = Richardson::new();
        let fixed_point = if w.lin.sparse.is_some() {
            0
        } else {
            w.lin.iterations(st.p.len())
        };
        for _ in 0..fixed_point {
            for m in 0..n {
                w.g[m] = w.sigma[m] + hg * mu[m];
            }
            w.lin.col.copy_from_slice(&w.c);
            der.vjp_add(ti, &w.lin.y, &st.p, &w.g, &mut w.lin.col, &mut w.p_scratch);
            for m in 0..n {
                w.lin.col[m] -= mu[m];
            }
            it.solve_iteration_matrix_transpose(&mut w.lin.col);
            let mut change = 0.0f64;
            for m in 0..n {
                mu[m] += w.lin.col[m];
                change = change.max(w.lin.col[m].abs());
            }
            if let Some(done) = rule.stop(change, max_abs(mu)) {
                converged = done;
                break;
            }
        }
        if !converged && w.lin.sparse.is_some() {
            // Sparse: M_iᵀ μ = c + J_iᵀ σ (J_iᵀ σ by a vjp), by GMRES preconditioned by the step's
            // factorization, else by sparse LU of M_i.
            let sp = w.lin.sparse.as_mut().expect("sparse");
            sp.prepare(n, st.p.len());
            sp.b.copy_from_slice(&w.c);
            der.vjp_add(ti, &w.lin.y, &st.p, &w.sigma, &mut sp.b, &mut w.p_scratch);
            sp.x.copy_from_slice(mu);
            let (y, p, scratch) = (&w.lin.y, &st.p, &mut w.p_scratch);
            let apply = |v: &[f64], out: &mut [f64]| {
                out.iter_mut().for_each(|o| *o = 0.0);
                der.vjp_add(ti, y, p, v, out, scratch);
                for (o, v) in out.iter_mut().zip(v) {
                    *o = v - hg * *o;
                }
            };
            let precond = |z: &mut [f64]| it.solve_iteration_matrix_transpose(z);
            if krylov_ok(sp.gmres.solve(&sp.b, &mut sp.x, KRYLOV, apply, precond)) {
                sp.krylov += 1;
                mu.copy_from_slice(&sp.x);
            } else {
                mu.copy_from_slice(&sp.b);
                w.lin.factor_sparse(der, (ti, &st.p), hg, h)?;
                let lu = w.lin.sparse.as_mut().and_then(|sp| sp.lu.as_mut());
                lu.expect("factored").solve_transpose_in_place(mu);
            }
        } else if !converged {
            let jac = w.lin.factor_exact(der, ti, &st.p, hg, h)?;
            let cols = n + st.p.len();
            for m in 0..n {
                let mut acc = w.c[m];
                for r in 0..n {
                    acc += jac[r * cols + m] * w.sigma[r];
                }
                mu[m] = acc;
            }
            w.lin
                .exact
                .as_mut()
                .expect("factored")
                .solve_transpose_in_place(mu);
        }
        // p̄ += f_p(Y_i)ᵀ (σ_i + hγ μ_i).
        for m in 0..n {
            w.g[m] = w.sigma[m] + hg * mu[m];
        }
        w.lin.col.iter_mut().for_each(|x| *x = 0.0);
        der.vjp_add(ti, &w.lin.y, &st.p, &w.g, &mut w.lin.col, &mut st.p_bar);
    }
    Ok(())
}
