//! The ESDIRK stages (TR-BDF2, Kvaerno5): each implicit stage solves Y − hγ f(t_i, Y) = rhs by
//! simplified Newton with the shared iteration matrix I − hγJ; u_{n+1} = Y_s and the filtered error
//! estimate (I − hγJ)⁻¹ h Σ (b_i − b̂_i) K_i.

use super::Core;
use crate::error::SolverError;
use crate::linalg::LinearSolver;
use crate::system::OdeSystem;
use crate::tableau::EsdirkTableau;

impl<M: OdeSystem> Core<'_, M> {
    /// Solves Y − hγ f(t, Y) = rhs for ESDIRK stage `i` (initial guess in `y`), writing f(t, Y) into
    /// K_i. Returns whether Newton converged.
    pub(super) fn newton(&mut self, t: f64, hg: f64, i: usize) -> bool {
        let n = self.n;
        let mut y = std::mem::take(&mut self.y);
        let mut k = std::mem::take(&mut self.k);
        let ki = i * n..(i + 1) * n;
        let mut prev = f64::INFINITY;
        let mut converged = false;
        for iteration in 0..self.newton.max_iterations {
            self.f(t, &y, &mut k[ki.clone()]);
            self.stats.newton_iterations += 1;
            if let Some(m) = k[ki.clone()].iter().position(|v| !v.is_finite()) {
                self.non_finite.get_or_insert((t, m, k[i * n + m]));
                break;
            }
            for m in 0..n {
                self.delta[m] = self.rhs[m] - y[m] + hg * k[i * n + m];
            }
            self.lu.solve_in_place(&mut self.delta);
            for m in 0..n {
                y[m] += self.delta[m];
            }
            let dn = self.norm(&self.delta);
            if iteration > 0 {
                let theta = dn / prev;
                self.newton_rate = self.newton_rate.max(theta);
                if theta >= 1.0 || !dn.is_finite() {
                    break;
                }
                if theta / (1.0 - theta) * dn <= self.newton.kappa {
                    converged = true;
                    break;
                }
            } else if dn <= 1e-3 * self.newton.kappa {
                converged = true;
                break;
            }
            prev = dn;
        }
        if converged {
            // K_i from the stage equation, (Y_i − rhs)/(hγ), not f(Y_i): f would multiply the Newton
            // residual's stiff components by ‖hγJ‖ (Hairer & Wanner II, §IV.8).
            for m in 0..n {
                k[i * n + m] = (y[m] - self.rhs[m]) / hg;
            }
            self.ys[i * n..(i + 1) * n].copy_from_slice(&y);
        }
        self.y = y;
        self.k = k;
        converged
    }

    pub(super) fn attempt_esdirk(
        &mut self,
        tab: &'static EsdirkTableau,
        h: f64,
    ) -> Result<Option<f64>, SolverError> {
        let n = self.n;
        let hg = h * tab.gamma;
        self.newton_rate = 0.0;
        self.factor(hg, h)?;
        for m in 0..n {
            self.scale[m] = self.atol[m] + self.rtol * self.u[m].abs();
        }
        self.ys[..n].copy_from_slice(&self.u);
        for i in 1..tab.c.len() {
            // rhs = u_n + h Σ_{j<i} a_ij K_j; predictor: the same with K_i ≈ K_{i−1}.
            for m in 0..n {
                let mut acc = 0.0;
                for (j, &a) in tab.a[i].iter().enumerate() {
                    acc += a * self.k[j * n + m];
                }
                self.rhs[m] = self.u[m] + h * acc;
                self.y[m] = self.rhs[m] + hg * self.k[(i - 1) * n + m];
            }
            if !self.newton(self.t + tab.c[i] * h, hg, i) {
                return Ok(None);
            }
        }
        // u_{n+1} = Y_s (stiffly accurate: b is the last row of A) and the filtered error estimate
        // M⁻¹ h Σ (b − b̂) K.
        let s = tab.c.len();
        for m in 0..n {
            let mut e = 0.0;
            for i in 0..s {
                e += (tab.b[i] - tab.bhat[i]) * self.k[i * n + m];
            }
            self.u_new[m] = self.y[m];
            self.err[m] = h * e;
            let (a, b) = (self.u[m].abs(), self.u_new[m].abs());
            self.scale[m] = self.atol[m] + self.rtol * a.max(b);
        }
        self.lu.solve_in_place(&mut self.err);
        let e = self.norm(&self.err);
        Ok(Some(if e.is_finite() { e } else { f64::INFINITY }))
    }
}
