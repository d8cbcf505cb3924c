//! Linear method-of-lines PDEs on N × N grids with exact answers: the 2-D heat equation (a Dirichlet
//! eigenmode decays exactly) and 2-D advection–diffusion (mass is conserved exactly). Both have one
//! parameter per grid point (a source), so gradients have as many components as states, and a sparse
//! 5-point Jacobian pattern.

use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeProblem, OdeSystem, Scalar, SolverError};

/// The (row, column) pairs of a 5-point stencil on an N × N grid, periodic or with the neighbours
/// outside the grid left out (Dirichlet).
fn five_point_pattern(n: usize, periodic: bool) -> Vec<(usize, usize)> {
    let mut entries = Vec::with_capacity(5 * n * n);
    for j in 0..n {
        for i in 0..n {
            let k = i + j * n;
            entries.push((k, k));
            let neighbours = [
                (i.checked_sub(1), Some(j)),
                ((i + 1 < n).then_some(i + 1), Some(j)),
                (Some(i), j.checked_sub(1)),
                (Some(i), (j + 1 < n).then_some(j + 1)),
            ];
            for (ni, nj) in neighbours {
                match (ni, nj, periodic) {
                    (Some(a), Some(b), _) => entries.push((k, a + b * n)),
                    (_, _, true) => {
                        let a = ni.unwrap_or(if i == 0 { n - 1 } else { 0 });
                        let b = nj.unwrap_or(if j == 0 { n - 1 } else { 0 });
                        entries.push((k, a + b * n));
                    }
                    _ => {}
                }
            }
        }
    }
    entries
}

/// The 2-D heat equation on the unit square with zero Dirichlet boundary, on the N × N interior points
/// x_i = (i + 1)h, y_j = (j + 1)h, h = 1/(N + 1), state u_k at k = i + jN:
///
/// u' = κ Δ_h u + s,   Δ_h the 5-point Laplacian / h²,
///
/// parameters p = [κ, s_0, …, s_{N²−1}] (N² + 1). The grid function φ_k = sin(πx_i) sin(πy_j) is an
/// eigenvector of Δ_h with eigenvalue μ = −(8/h²) sin²(πh/2), so from u0 = φ with s = 0 the semi-discrete
/// solution is exactly u(t) = e^{μκt} φ ([`Heat2D::mode_factor`]).
#[derive(Debug, Clone, Copy)]
pub struct Heat2D {
    /// Interior points per direction N (≥ 1).
    pub n: usize,
}

impl Heat2D {
    /// The eigenmode φ_k = sin(πx_i) sin(πy_j).
    pub fn mode(n: usize) -> Vec<f64> {
        let h = 1.0 / (n as f64 + 1.0);
        let pi = std::f64::consts::PI;
        (0..n * n)
            .map(|k| {
                let (i, j) = (k % n, k / n);
                (pi * (i + 1) as f64 * h).sin() * (pi * (j + 1) as f64 * h).sin()
            })
            .collect()
    }

    /// The eigenvalue μ = −(8/h²) sin²(πh/2) of Δ_h for [`Heat2D::mode`].
    pub fn mode_eigenvalue(n: usize) -> f64 {
        let h = 1.0 / (n as f64 + 1.0);
        -8.0 / (h * h) * (std::f64::consts::PI * h / 2.0).sin().powi(2)
    }

    /// e^{μκt}: u(t) = e^{μκt} φ from u0 = φ without sources.
    pub fn mode_factor(n: usize, kappa: f64, t: f64) -> f64 {
        (Self::mode_eigenvalue(n) * kappa * t).exp()
    }

    /// From u0 = φ with κ = 1 and no sources on t ∈ [0, t_end] (stiffness 8/h² ≈ 8N²).
    ///
    /// # Errors
    /// [`SolverError`] for n = 0 or a non-finite or empty span.
    pub fn problem(n: usize, t_end: f64) -> Result<OdeProblem<Heat2D>, SolverError> {
        let mut p = vec![0.0; n * n + 1];
        p[0] = 1.0;
        OdeProblem::new(Heat2D { n }, Self::mode(n), p, (0.0, t_end))
    }
}

impl OdeSystem for Heat2D {
    fn n_states(&self) -> usize {
        self.n * self.n
    }
    fn n_params(&self) -> usize {
        self.n * self.n + 1
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let n = self.n;
        let h = 1.0 / (n as f64 + 1.0);
        let kappa = p[0] * (1.0 / (h * h));
        let zero = S::from(0.0);
        for j in 0..n {
            for i in 0..n {
                let k = i + j * n;
                let west = if i > 0 { u[k - 1] } else { zero };
                let east = if i + 1 < n { u[k + 1] } else { zero };
                let south = if j > 0 { u[k - n] } else { zero };
                let north = if j + 1 < n { u[k + n] } else { zero };
                du[k] = kappa * (west + east + south + north - u[k] * 4.0) + p[1 + k];
            }
        }
    }
    fn jacobian_sparsity(&self) -> Option<Vec<(usize, usize)>> {
        Some(five_point_pattern(self.n, false))
    }
}

/// 2-D advection–diffusion on the periodic unit square, N × N points x_i = i/N, y_j = j/N, h = 1/N,
/// state u_k at k = i + jN:
///
/// u' = D Δ_h u − a_x δ_x u − a_y δ_y u + s,
///
/// Δ_h the 5-point Laplacian / h², δ the first-order upwind difference / h (backward for a ≥ 0, forward
/// for a < 0); parameters p = [D, a_x, a_y, s_0, …, s_{N²−1}] (N² + 3). Every column of the operator sums
/// to zero, so the mass M(t) = h² Σ_k u_k(t) obeys M' = h² Σ_k s_k exactly, and Runge–Kutta methods keep
/// linear invariants: M(T) = M(0) + T h² Σ s for every method and step sequence, with ∂M(T)/∂s_k = T h²
/// and ∂M(T)/∂(D, a_x, a_y) = 0.
#[derive(Debug, Clone, Copy)]
pub struct AdvectionDiffusion2D {
    /// Points per direction N (≥ 3).
    pub n: usize,
}

impl AdvectionDiffusion2D {
    /// A Gaussian bump u0 = exp(−((x − 0.3)² + (y − 0.3)²)/0.01) (periodic distance).
    pub fn initial_state(n: usize) -> Vec<f64> {
        let h = 1.0 / n as f64;
        let wrap = |d: f64| d - d.round();
        (0..n * n)
            .map(|k| {
                let (x, y) = ((k % n) as f64 * h, (k / n) as f64 * h);
                let (dx, dy) = (wrap(x - 0.3), wrap(y - 0.3));
                (-(dx * dx + dy * dy) / 0.01).exp()
            })
            .collect()
    }

    /// D = 0.01, a = (1, 0.5), no sources, on t ∈ [0, t_end] (Péclet number |a|h/D ≈ 112/N).
    ///
    /// # Errors
    /// [`SolverError`] for n = 0 or a non-finite or empty span.
    pub fn problem(n: usize, t_end: f64) -> Result<OdeProblem<AdvectionDiffusion2D>, SolverError> {
        let mut p = vec![0.0; n * n + 3];
        p[..3].copy_from_slice(&[0.01, 1.0, 0.5]);
        OdeProblem::new(
            AdvectionDiffusion2D { n },
            Self::initial_state(n),
            p,
            (0.0, t_end),
        )
    }
}

impl OdeSystem for AdvectionDiffusion2D {
    fn n_states(&self) -> usize {
        self.n * self.n
    }
    fn n_params(&self) -> usize {
        self.n * self.n + 3
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let n = self.n;
        let h = 1.0 / n as f64;
        let (d, ax, ay) = (p[0] * (1.0 / (h * h)), p[1] * (1.0 / h), p[2] * (1.0 / h));
        let (x_back, y_back) = (p[1].re() >= 0.0, p[2].re() >= 0.0);
        for j in 0..n {
            let (jm, jp) = ((j + n - 1) % n, (j + 1) % n);
            for i in 0..n {
                let (im, ip) = ((i + n - 1) % n, (i + 1) % n);
                let k = i + j * n;
                let (w, e, s, nn) = (u[im + j * n], u[ip + j * n], u[i + jm * n], u[i + jp * n]);
                let uk = u[k];
                let dx = if x_back { uk - w } else { e - uk };
                let dy = if y_back { uk - s } else { nn - uk };
                du[k] = d * (w + e + s + nn - uk * 4.0) - ax * dx - ay * dy + p[3 + k];
            }
        }
    }
    fn jacobian_sparsity(&self) -> Option<Vec<(usize, usize)>> {
        Some(five_point_pattern(self.n, true))
    }
}
