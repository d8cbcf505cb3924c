use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeProblem, OdeSystem, Scalar};

/// The 2-D Brusselator on an N×N periodic grid with one parameter per grid point and field, as in
/// SciMLBenchmarks' "BrussScaling" forward-vs-adjoint study (Ma, Dixit, Innes, Guo & Rackauckas, IEEE HPEC
/// 2021; data/reference/brusselator.json).
///
/// Grid x_i = i/(N−1), y_j = j/(N−1) (i, j = 0 … N−1), Δx = 1/(N−1), periodic wrap of the neighbour indices
/// (x = 0 and x = 1 are neighbours; for N = 2 both neighbours are the same point and count twice).
/// State u_k at k = i + jN, v_k at N² + k (2N² states); parameters A (p[0..N²]), B (p[N²..2N²]),
/// α^u (p[2N²..3N²]), α^v (p[3N²..4N²]) (4N²):
///
/// u' = α^u Δu/Δx² + B + u²v − (A + 1)u + f(x, y, t),   v' = α^v Δv/Δx² + A u − u²v,
///
/// Δ the 5-point stencil, f = 5 inside the disc (x − 0.3)² + (y − 0.6)² ≤ 0.1² for t ≥ 1.1, else 0.
#[derive(Debug, Clone, Copy)]
pub struct Brusselator2D {
    /// Grid points per direction N (≥ 2).
    pub n: usize,
}

impl Brusselator2D {
    /// The benchmark's parameters: A = 3.4, B = 1, α^u = α^v = 10 at every point.
    pub fn default_params(n: usize) -> Vec<f64> {
        let m = n * n;
        [3.4, 1.0, 10.0, 10.0]
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, m))
            .collect()
    }

    /// u(x, y, 0) = 22 (y(1 − y))^{3/2}, v(x, y, 0) = 27 (x(1 − x))^{3/2}.
    pub fn initial_state(n: usize) -> Vec<f64> {
        let h = 1.0 / (n as f64 - 1.0);
        let mut u0 = vec![0.0; 2 * n * n];
        for j in 0..n {
            for i in 0..n {
                let (x, y) = (i as f64 * h, j as f64 * h);
                u0[i + j * n] = 22.0 * (y * (1.0 - y)).powf(1.5);
                u0[n * n + i + j * n] = 27.0 * (x * (1.0 - x)).powf(1.5);
            }
        }
        u0
    }

    /// The benchmark's problem on t ∈ [0, 1].
    ///
    /// # Errors
    /// [`odesens_solver::SolverError::DimensionMismatch`] never for n ≥ 2 (the sizes follow from n).
    pub fn problem(n: usize) -> Result<OdeProblem<Brusselator2D>, odesens_solver::SolverError> {
        OdeProblem::new(
            Brusselator2D { n },
            Self::initial_state(n),
            Self::default_params(n),
            (0.0, 1.0),
        )
    }
}

impl OdeSystem for Brusselator2D {
    fn n_states(&self) -> usize {
        2 * self.n * self.n
    }
    fn n_params(&self) -> usize {
        4 * self.n * self.n
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let n = self.n;
        let m = n * n;
        let h = 1.0 / (n as f64 - 1.0);
        let inv_h2 = 1.0 / (h * h);
        let forcing_on = t.re() >= 1.1;
        for j in 0..n {
            let (jm, jp) = ((j + n - 1) % n, (j + 1) % n);
            for i in 0..n {
                let (im, ip) = ((i + n - 1) % n, (i + 1) % n);
                let k = i + j * n;
                let (a, b, au, av) = (p[k], p[m + k], p[2 * m + k], p[3 * m + k]);
                let (uk, vk) = (u[k], u[m + k]);
                let lap_u =
                    u[im + j * n] + u[ip + j * n] + u[i + jp * n] + u[i + jm * n] - uk * 4.0;
                let lap_v =
                    u[m + im + j * n] + u[m + ip + j * n] + u[m + i + jp * n] + u[m + i + jm * n]
                        - vk * 4.0;
                let uuv = uk * uk * vk;
                let (x, y) = (i as f64 * h, j as f64 * h);
                let f = if forcing_on && (x - 0.3).powi(2) + (y - 0.6).powi(2) <= 0.01 {
                    5.0
                } else {
                    0.0
                };
                du[k] = au * lap_u * inv_h2 + b + uuv - (a + 1.0) * uk + f;
                du[m + k] = av * lap_v * inv_h2 + a * uk - uuv;
            }
        }
    }

    /// The 5-point stencil in each field plus the local u–v coupling: 12 entries per grid point.
    fn jacobian_sparsity(&self) -> Option<Vec<(usize, usize)>> {
        let n = self.n;
        let m = n * n;
        let mut entries = Vec::with_capacity(12 * m);
        for j in 0..n {
            for i in 0..n {
                let k = i + j * n;
                let neighbours = [
                    k,
                    (i + n - 1) % n + j * n,
                    (i + 1) % n + j * n,
                    i + ((j + n - 1) % n) * n,
                    i + ((j + 1) % n) * n,
                ];
                for c in neighbours {
                    entries.push((k, c));
                    entries.push((m + k, m + c));
                }
                entries.push((k, m + k));
                entries.push((m + k, k));
            }
        }
        Some(entries)
    }
}
