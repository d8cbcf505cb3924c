//! Restarted GMRES(m) with right preconditioning (Saad & Schultz 1986; Saad, *Iterative Methods for
//! Sparse Linear Systems*, §9.3.2), for the exact stage systems of sparse implicit problems: the operator
//! is a jvp or vjp of the model, the preconditioner the step's own factorization.
//!
//! Written here rather than taken from faer's `operator` module or a crate: the operator needs `&mut`
//! access to the AD buffers and the integrator's factorization (faer's `LinOp::apply` takes `&self` and
//! requires `Sync`), and the buffers must be allocated once per derivative computation.

/// Buffers of GMRES(m) for systems of size n.
pub(super) struct Gmres {
    n: usize,
    m: usize,
    /// The Krylov basis v_0 … v_m (row j = v_j).
    v: Vec<f64>,
    /// The Hessenberg matrix, column-major (m + 1) × m, then rotated to upper triangular.
    h: Vec<f64>,
    cs: Vec<f64>,
    sn: Vec<f64>,
    g: Vec<f64>,
    y: Vec<f64>,
    w: Vec<f64>,
    z: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Gmres {
    /// Buffers for size n and restart length m.
    pub fn new(n: usize, m: usize) -> Self {
        Self {
            n,
            m,
            v: vec![0.0; (m + 1) * n],
            h: vec![0.0; (m + 1) * m],
            cs: vec![0.0; m],
            sn: vec![0.0; m],
            g: vec![0.0; m + 1],
            y: vec![0.0; m],
            w: vec![0.0; n],
            z: vec![0.0; n],
        }
    }

    /// Solves A x = b from the initial guess in `x`, with A v by `apply(v, out)` and the right
    /// preconditioner z ← P⁻¹ z by `precond`. Converged when the residual's 2-norm is at most
    /// `tol` · ‖b‖: returns the iterations taken. After `max_iters` without convergence returns the
    /// relative residual ‖b − A x‖ / ‖b‖ of the last iterate, left in `x` (∞ on a non-finite value).
    pub fn solve(
        &mut self,
        b: &[f64],
        x: &mut [f64],
        (tol, max_iters): (f64, usize),
        mut apply: impl FnMut(&[f64], &mut [f64]),
        mut precond: impl FnMut(&mut [f64]),
    ) -> Result<usize, f64> {
        let (n, m) = (self.n, self.m);
        let b_norm = dot(b, b).sqrt();
        let target = tol * b_norm;
        let mut iters = 0;
        loop {
            // r = b − A x into v_0.
            apply(x, &mut self.w);
            for ((v, bi), wi) in self.v[..n].iter_mut().zip(b).zip(&self.w) {
                *v = bi - wi;
            }
            let beta = dot(&self.v[..n], &self.v[..n]).sqrt();
            if !beta.is_finite() {
                return Err(f64::INFINITY);
            }
            if beta <= target {
                return Ok(iters);
            }
            if iters >= max_iters {
                return Err(beta / b_norm);
            }
            self.v[..n].iter_mut().for_each(|v| *v /= beta);
            self.g.iter_mut().for_each(|g| *g = 0.0);
            self.g[0] = beta;
            let mut k = 0;
            while k < m && iters < max_iters {
                // w = A P⁻¹ v_k, orthogonalized against v_0 … v_k (modified Gram–Schmidt).
                self.z.copy_from_slice(&self.v[k * n..(k + 1) * n]);
                precond(&mut self.z);
                apply(&self.z, &mut self.w);
                let col = &mut self.h[k * (m + 1)..(k + 1) * (m + 1)];
                for (i, hik) in col.iter_mut().enumerate().take(k + 1) {
                    let vi = &self.v[i * n..(i + 1) * n];
                    *hik = dot(&self.w, vi);
                    for (w, v) in self.w.iter_mut().zip(vi) {
                        *w -= *hik * v;
                    }
                }
                let norm = dot(&self.w, &self.w).sqrt();
                col[k + 1] = norm;
                if norm > 0.0 {
                    for (v, w) in self.v[(k + 1) * n..(k + 2) * n].iter_mut().zip(&self.w) {
                        *v = w / norm;
                    }
                }
                // Earlier rotations, then a new one that zeroes h_{k+1,k}.
                for i in 0..k {
                    let (a, b) = (col[i], col[i + 1]);
                    col[i] = self.cs[i] * a + self.sn[i] * b;
                    col[i + 1] = -self.sn[i] * a + self.cs[i] * b;
                }
                let r = col[k].hypot(col[k + 1]);
                if r == 0.0 || !r.is_finite() {
                    return Err(f64::INFINITY);
                }
                (self.cs[k], self.sn[k]) = (col[k] / r, col[k + 1] / r);
                col[k] = r;
                col[k + 1] = 0.0;
                self.g[k + 1] = -self.sn[k] * self.g[k];
                self.g[k] *= self.cs[k];
                k += 1;
                iters += 1;
                if self.g[k].abs() <= target || norm == 0.0 {
                    break;
                }
            }
            // y = H⁻¹ g (upper triangular k × k), x += P⁻¹ V y.
            for i in (0..k).rev() {
                let mut s = self.g[i];
                for j in i + 1..k {
                    s -= self.h[j * (m + 1) + i] * self.y[j];
                }
                self.y[i] = s / self.h[i * (m + 1) + i];
            }
            self.z.iter_mut().for_each(|z| *z = 0.0);
            for (j, &yj) in self.y[..k].iter().enumerate() {
                for (z, v) in self.z.iter_mut().zip(&self.v[j * n..(j + 1) * n]) {
                    *z += yj * v;
                }
            }
            precond(&mut self.z);
            for (xi, zi) in x.iter_mut().zip(&self.z) {
                *xi += zi;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_a_nonsymmetric_system_with_and_without_preconditioning() {
        // A = tridiag(−1, 4, −2) + a far corner, n = 50; b = A · (1, 2, …).
        let n = 50;
        let apply = |x: &[f64], out: &mut [f64]| {
            for i in 0..n {
                let mut s = 4.0 * x[i];
                if i > 0 {
                    s -= x[i - 1];
                }
                if i + 1 < n {
                    s -= 2.0 * x[i + 1];
                }
                if i == 0 {
                    s += 0.5 * x[n - 1];
                }
                out[i] = s;
            }
        };
        let exact: Vec<f64> = (0..n).map(|i| (i + 1) as f64).collect();
        let mut b = vec![0.0; n];
        apply(&exact, &mut b);
        for (m, jacobi) in [(10, false), (10, true), (60, false)] {
            let mut gm = Gmres::new(n, m);
            let mut x = vec![0.0; n];
            let iters = gm
                .solve(&b, &mut x, (1e-12, 500), apply, |z: &mut [f64]| {
                    if jacobi {
                        z.iter_mut().for_each(|v| *v /= 4.0);
                    }
                })
                .expect("converges");
            let err = x
                .iter()
                .zip(&exact)
                .fold(0.0f64, |e, (a, b)| e.max((a - b).abs()));
            assert!(
                err < 1e-9 * n as f64,
                "m = {m}: error {err:e} after {iters}"
            );
            assert!(iters > 0);
        }
        // Not enough iterations: reported, not hidden.
        let mut gm = Gmres::new(n, 2);
        let mut x = vec![0.0; n];
        let residual = gm.solve(&b, &mut x, (1e-14, 3), apply, |_| {}).unwrap_err();
        assert!(residual > 1e-14 && residual < 1.0, "{residual:e}");
    }
}
