//! Matrix-free Newton–Krylov linear algebra: restarted GMRES(m) with right preconditioning ([`Gmres`];
//! Saad & Schultz, SIAM J. Sci. Stat. Comput. 7 (1986) 856–869; Saad, *Iterative Methods for Sparse
//! Linear Systems*, 2nd ed., §9.3.2) and the preconditioners of an iteration matrix M = I − cJ behind
//! one trait ([`Preconditioner`]): incomplete LU without fill on J's sparsity pattern ([`Ilu0`], Saad
//! Algorithm 10.4), block-Jacobi with dense LU of the diagonal blocks ([`BlockJacobi`]), the sparse LU of
//! an older Jacobian kept for many steps ([`LaggedLu`]), or the model's own
//! ([`crate::OdeSystem::preconditioner`]).
//!
//! The operator is applied through a closure (a Jacobian–vector product by forward-mode AD in the
//! implicit methods, a vjp in the adjoints), so no matrix of the operator is ever formed. GMRES and the
//! preconditioners are written here rather than taken from a crate: the operator needs `&mut` access to
//! AD buffers (faer's `LinOp::apply` takes `&self` and requires `Sync`), every buffer must be allocated
//! once at set-up (no allocation per step), and the preconditioners work on the solver's own
//! [`SparsityPattern`] layout.

use serde::{Deserialize, Serialize};

use crate::linalg::{DenseLu, LinearSolver, SparseLu, SparsityPattern};

/// Which preconditioner the GMRES path of [`crate::LinearSolverKind::Gmres`] applies (on the right:
/// GMRES solves M P⁻¹ y = b, x = P⁻¹ y, so its residual is the true one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreconditionerKind {
    /// None (P = I): fully matrix-free, no Jacobian is formed or stored.
    None,
    /// Dense LU of the diagonal blocks of I − cJ of this size (the last block may be smaller); J's
    /// values by one forward-mode pass per colour of its pattern. Suits problems whose strong coupling
    /// is within blocks of consecutive states (the species at one grid point).
    BlockJacobi {
        /// Block size (≥ 1).
        block: usize,
    },
    /// Incomplete LU without fill, ILU(0), of I − cJ on J's sparsity pattern (the default).
    #[default]
    Ilu0,
    /// The exact sparse LU of I − cJ, factored only when the Newton iteration asks for a new
    /// Jacobian or c drifts (`ImplicitConfig::lu_reuse`), and kept as a preconditioner while GMRES
    /// corrects for the drift: the lagged LU of an older Jacobian.
    LaggedLu,
    /// The model's own ([`crate::OdeSystem::preconditioner`]), for example a block or physics-based
    /// one; an error if the model has none.
    Model,
}

/// What a [`Preconditioner`] is set up from: the point where the Newton iteration wants M = I − cJ
/// approximated.
#[derive(Debug, Clone, Copy)]
pub struct PreconditionerSetup<'a> {
    /// Time of the Jacobian.
    pub t: f64,
    /// State of the Jacobian.
    pub u: &'a [f64],
    /// Parameters.
    pub p: &'a [f64],
    /// The shift c of M = I − cJ (h/α for BDF, hγ for the ESDIRKs).
    pub c: f64,
    /// J's sparsity pattern and its values on it (CSC positions, as [`SparsityPattern::col_range`]),
    /// when the preconditioner asked for them ([`Preconditioner::needs_jacobian`]).
    pub jacobian: Option<(&'a SparsityPattern, &'a [f64])>,
}

/// A preconditioner P ≈ M = I − cJ for the GMRES path: set up now and then (when Newton would
/// refactor), applied once per Krylov iteration. Implementations must not allocate in `solve` and
/// `solve_transpose` (the solver's step loop is allocation-free).
///
/// ```
/// use odesens_solver::krylov::{Preconditioner, PreconditionerSetup};
///
/// /// Jacobi: P = diag(I − cJ), for a model whose Jacobian diagonal is −k (decay rates k).
/// struct DecayJacobi { k: Vec<f64>, d: Vec<f64> }
///
/// impl Preconditioner for DecayJacobi {
///     fn needs_jacobian(&self) -> bool { false }
///     fn setup(&mut self, s: &PreconditionerSetup<'_>) -> Result<(), usize> {
///         for (d, k) in self.d.iter_mut().zip(&self.k) {
///             *d = 1.0 + s.c * k;
///         }
///         Ok(())
///     }
///     fn solve(&mut self, z: &mut [f64]) {
///         z.iter_mut().zip(&self.d).for_each(|(z, d)| *z /= d);
///     }
///     fn solve_transpose(&mut self, z: &mut [f64]) {
///         self.solve(z);
///     }
/// }
/// let mut p = DecayJacobi { k: vec![1.0, 100.0], d: vec![0.0; 2] };
/// p.setup(&PreconditionerSetup { t: 0.0, u: &[1.0, 1.0], p: &[], c: 0.1, jacobian: None }).unwrap();
/// let mut z = [1.1, 11.0];
/// p.solve(&mut z);
/// assert_eq!(z, [1.0, 1.0]);
/// ```
pub trait Preconditioner: Send {
    /// Whether [`Preconditioner::setup`] needs J's values on its sparsity pattern (one forward-mode
    /// pass per colour of the pattern's column colouring, or the model's
    /// [`crate::OdeSystem::sparse_jacobian`]). Default `true`.
    fn needs_jacobian(&self) -> bool {
        true
    }

    /// Builds P ≈ I − cJ at the point `setup` describes.
    ///
    /// # Errors
    /// The index of a zero or non-finite pivot (the solver reports a singular iteration matrix).
    fn setup(&mut self, setup: &PreconditionerSetup<'_>) -> Result<(), usize>;

    /// z ← P⁻¹ z.
    fn solve(&mut self, z: &mut [f64]);

    /// z ← P⁻ᵀ z (adjoints).
    fn solve_transpose(&mut self, z: &mut [f64]);
}

/// Entry (i, j) of I − cJ, given J's entry `jac` there.
fn shifted(i: usize, j: usize, c: f64, jac: f64) -> f64 {
    f64::from(u8::from(i == j)) - c * jac
}

/// The Jacobian a built-in preconditioner needs.
fn jacobian<'a>(setup: &PreconditionerSetup<'a>) -> (&'a SparsityPattern, &'a [f64]) {
    setup
        .jacobian
        .expect("the solver passes J to preconditioners that need it")
}

/// ILU(0): P = L̃Ũ with L̃ (unit lower) and Ũ (upper) on the pattern of I − cJ, no fill (Saad,
/// *Iterative Methods for Sparse Linear Systems*, Algorithm 10.4, row-wise IKJ form). Exact for
/// patterns without fill (tridiagonal, and any pattern whose LU has none).
pub struct Ilu0 {
    n: usize,
    /// The pattern by rows (CSR), columns ascending, and each entry's position in the CSC layout.
    row_ptr: Vec<usize>,
    col_idx: Vec<usize>,
    csc_pos: Vec<usize>,
    /// Position of the diagonal in each row.
    diag: Vec<usize>,
    /// L̃ (below the diagonal) and Ũ (diagonal and above), CSR.
    vals: Vec<f64>,
    /// Position of column j in the row being factored, or `usize::MAX`.
    marker: Vec<usize>,
}

impl Ilu0 {
    /// Buffers for `pattern` (which holds the diagonal, as every [`SparsityPattern`] does).
    pub fn new(pattern: &SparsityPattern) -> Self {
        let n = pattern.n();
        let mut row_ptr = vec![0usize; n + 1];
        for j in 0..n {
            for &i in pattern.col_rows(j) {
                row_ptr[i + 1] += 1;
            }
        }
        for i in 0..n {
            row_ptr[i + 1] += row_ptr[i];
        }
        let nnz = pattern.nnz();
        let mut next = row_ptr.clone();
        let (mut col_idx, mut csc_pos) = (vec![0; nnz], vec![0; nnz]);
        // Columns visited in order: each row's columns come out ascending.
        for j in 0..n {
            for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                col_idx[next[i]] = j;
                csc_pos[next[i]] = k;
                next[i] += 1;
            }
        }
        let diag = (0..n)
            .map(|i| {
                (row_ptr[i]..row_ptr[i + 1])
                    .find(|&q| col_idx[q] == i)
                    .expect("patterns hold the diagonal")
            })
            .collect();
        Self {
            n,
            row_ptr,
            col_idx,
            csc_pos,
            diag,
            vals: vec![0.0; nnz],
            marker: vec![usize::MAX; n],
        }
    }
}

impl Preconditioner for Ilu0 {
    fn setup(&mut self, setup: &PreconditionerSetup<'_>) -> Result<(), usize> {
        let (_, jac) = jacobian(setup);
        let c = setup.c;
        for i in 0..self.n {
            for q in self.row_ptr[i]..self.row_ptr[i + 1] {
                self.vals[q] = shifted(i, self.col_idx[q], c, jac[self.csc_pos[q]]);
            }
        }
        for i in 0..self.n {
            let row = self.row_ptr[i]..self.row_ptr[i + 1];
            for q in row.clone() {
                self.marker[self.col_idx[q]] = q;
            }
            for q in self.row_ptr[i]..self.diag[i] {
                let k = self.col_idx[q];
                let l = self.vals[q] / self.vals[self.diag[k]];
                self.vals[q] = l;
                for r in self.diag[k] + 1..self.row_ptr[k + 1] {
                    let at = self.marker[self.col_idx[r]];
                    if at != usize::MAX {
                        self.vals[at] -= l * self.vals[r];
                    }
                }
            }
            for q in row {
                self.marker[self.col_idx[q]] = usize::MAX;
            }
            let d = self.vals[self.diag[i]];
            if d == 0.0 || !d.is_finite() {
                return Err(i);
            }
        }
        Ok(())
    }

    fn solve(&mut self, z: &mut [f64]) {
        for i in 0..self.n {
            let mut s = z[i];
            for q in self.row_ptr[i]..self.diag[i] {
                s -= self.vals[q] * z[self.col_idx[q]];
            }
            z[i] = s;
        }
        for i in (0..self.n).rev() {
            let mut s = z[i];
            for q in self.diag[i] + 1..self.row_ptr[i + 1] {
                s -= self.vals[q] * z[self.col_idx[q]];
            }
            z[i] = s / self.vals[self.diag[i]];
        }
    }

    fn solve_transpose(&mut self, z: &mut [f64]) {
        // Ũᵀ w = z (lower), then L̃ᵀ x = w (unit upper), both as scatters over the rows.
        for i in 0..self.n {
            let w = z[i] / self.vals[self.diag[i]];
            z[i] = w;
            for q in self.diag[i] + 1..self.row_ptr[i + 1] {
                z[self.col_idx[q]] -= self.vals[q] * w;
            }
        }
        for i in (0..self.n).rev() {
            let x = z[i];
            for q in self.row_ptr[i]..self.diag[i] {
                z[self.col_idx[q]] -= self.vals[q] * x;
            }
        }
    }
}

/// Block-Jacobi: P = blockdiag(I − cJ) with blocks of `block` consecutive states (the last may be
/// smaller), each factored by dense LU with partial pivoting ([`DenseLu`]).
pub struct BlockJacobi {
    n: usize,
    block: usize,
    lus: Vec<DenseLu>,
    /// One block of I − cJ, column-major.
    scratch: Vec<f64>,
}

impl BlockJacobi {
    /// Buffers for n states in blocks of `block` (clamped to 1 ..= n).
    pub fn new(n: usize, block: usize) -> Self {
        let block = block.clamp(1, n.max(1));
        let lus = (0..n.div_ceil(block))
            .map(|b| DenseLu::new(block.min(n - b * block)))
            .collect();
        Self {
            n,
            block,
            lus,
            scratch: vec![0.0; block * block],
        }
    }
}

impl Preconditioner for BlockJacobi {
    fn setup(&mut self, setup: &PreconditionerSetup<'_>) -> Result<(), usize> {
        let (pattern, jac) = jacobian(setup);
        let c = setup.c;
        for (b, lu) in self.lus.iter_mut().enumerate() {
            let start = b * self.block;
            let size = self.block.min(self.n - start);
            let block = &mut self.scratch[..size * size];
            block.iter_mut().for_each(|v| *v = 0.0);
            for jj in 0..size {
                let j = start + jj;
                for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                    if (start..start + size).contains(&i) {
                        block[(i - start) + size * jj] = jac[k];
                    }
                }
            }
            lu.factor(&mut |i, j, _| shifted(i, j, c, block[i + size * j]))
                .map_err(|pivot| start + pivot)?;
        }
        Ok(())
    }

    fn solve(&mut self, z: &mut [f64]) {
        for (b, lu) in self.lus.iter_mut().enumerate() {
            let start = b * self.block;
            let end = (start + self.block).min(self.n);
            lu.solve_in_place(&mut z[start..end]);
        }
    }

    fn solve_transpose(&mut self, z: &mut [f64]) {
        for (b, lu) in self.lus.iter_mut().enumerate() {
            let start = b * self.block;
            let end = (start + self.block).min(self.n);
            lu.solve_transpose_in_place(&mut z[start..end]);
        }
    }
}

/// The exact sparse LU of I − cJ ([`SparseLu`]) used as a preconditioner: set up rarely (a lagged
/// Jacobian and shift), so that GMRES corrects for what changed since.
pub struct LaggedLu {
    lu: SparseLu,
}

impl LaggedLu {
    /// The symbolic analysis of `pattern`.
    pub fn new(pattern: &SparsityPattern) -> Self {
        Self {
            lu: SparseLu::new(pattern.clone()),
        }
    }
}

impl Preconditioner for LaggedLu {
    fn setup(&mut self, setup: &PreconditionerSetup<'_>) -> Result<(), usize> {
        let (_, jac) = jacobian(setup);
        let c = setup.c;
        self.lu.factor(&mut |i, j, k| shifted(i, j, c, jac[k]))
    }

    fn solve(&mut self, z: &mut [f64]) {
        self.lu.solve_in_place(z);
    }

    fn solve_transpose(&mut self, z: &mut [f64]) {
        self.lu.solve_transpose_in_place(z);
    }
}

/// Buffers of GMRES(m) for systems of size n.
pub struct Gmres {
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
mod gmres_tests {
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

#[cfg(test)]
mod preconditioner_tests {
    use super::*;

    /// J of a 1-D diffusion–reaction chain with a far coupling: tridiagonal plus the entries (0, n−1)
    /// and (n−1, 0), values in CSC positions of its pattern.
    fn chain(n: usize, far: bool) -> (SparsityPattern, Vec<f64>) {
        let mut entries: Vec<(usize, usize)> =
            (1..n).flat_map(|i| [(i, i - 1), (i - 1, i)]).collect();
        if far {
            entries.extend([(0, n - 1), (n - 1, 0)]);
        }
        let pattern = SparsityPattern::new(n, entries).unwrap();
        let mut vals = vec![0.0; pattern.nnz()];
        for j in 0..n {
            for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                vals[k] = match (i as i64 - j as i64).abs() {
                    0 => -2.0 - 0.1 * i as f64,
                    1 => 1.0 + 0.01 * j as f64,
                    _ => 0.3,
                };
            }
        }
        (pattern, vals)
    }

    /// (I − cJ) x for J on `pattern`; transposed when `t`.
    fn apply(pattern: &SparsityPattern, vals: &[f64], c: f64, x: &[f64], t: bool) -> Vec<f64> {
        let n = pattern.n();
        let mut out = vec![0.0; n];
        for j in 0..n {
            for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                let a = shifted(i, j, c, vals[k]);
                if t {
                    out[j] += a * x[i];
                } else {
                    out[i] += a * x[j];
                }
            }
        }
        out
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
    }

    /// Whether P⁻¹ (and P⁻ᵀ) invert I − cJ exactly: each solve of (I − cJ) x recovers x.
    fn exact_inverse(
        p: &mut dyn Preconditioner,
        pattern: &SparsityPattern,
        vals: &[f64],
        c: f64,
    ) -> f64 {
        let n = pattern.n();
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin() + 1.5).collect();
        let mut worst = 0.0f64;
        for t in [false, true] {
            let mut z = apply(pattern, vals, c, &x, t);
            if t {
                p.solve_transpose(&mut z);
            } else {
                p.solve(&mut z);
            }
            worst = worst.max(max_diff(&z, &x));
        }
        worst
    }

    fn setup<'a>(pattern: &'a SparsityPattern, vals: &'a [f64], c: f64) -> PreconditionerSetup<'a> {
        PreconditionerSetup {
            t: 0.0,
            u: &[],
            p: &[],
            c,
            jacobian: Some((pattern, vals)),
        }
    }

    #[test]
    fn ilu0_and_lagged_lu_are_exact_where_lu_has_no_fill() {
        let (pattern, vals) = chain(40, false);
        let c = 0.7;
        let mut ilu = Ilu0::new(&pattern);
        ilu.setup(&setup(&pattern, &vals, c)).unwrap();
        assert!(exact_inverse(&mut ilu, &pattern, &vals, c) < 1e-13);
        let mut lagged = LaggedLu::new(&pattern);
        lagged.setup(&setup(&pattern, &vals, c)).unwrap();
        assert!(exact_inverse(&mut lagged, &pattern, &vals, c) < 1e-13);
        // With the far corners LU fills in: ILU(0) is then approximate, the sparse LU still exact.
        let (pattern, vals) = chain(40, true);
        let mut ilu = Ilu0::new(&pattern);
        ilu.setup(&setup(&pattern, &vals, c)).unwrap();
        let ilu_err = exact_inverse(&mut ilu, &pattern, &vals, c);
        assert!(ilu_err > 1e-10 && ilu_err < 1.0, "{ilu_err:e}");
        let mut lagged = LaggedLu::new(&pattern);
        lagged.setup(&setup(&pattern, &vals, c)).unwrap();
        assert!(exact_inverse(&mut lagged, &pattern, &vals, c) < 1e-12);
    }

    #[test]
    fn ilu0_transpose_is_the_transpose_of_its_solve() {
        // ⟨P⁻¹a, b⟩ = ⟨a, P⁻ᵀb⟩ for an approximate (filled-in) ILU(0).
        let (pattern, vals) = chain(30, true);
        let mut ilu = Ilu0::new(&pattern);
        ilu.setup(&setup(&pattern, &vals, 1.3)).unwrap();
        let a: Vec<f64> = (0..30).map(|i| (i as f64).cos()).collect();
        let b: Vec<f64> = (0..30).map(|i| (0.3 * i as f64).sin()).collect();
        let (mut pa, mut pb) = (a.clone(), b.clone());
        ilu.solve(&mut pa);
        ilu.solve_transpose(&mut pb);
        let lhs: f64 = pa.iter().zip(&b).map(|(x, y)| x * y).sum();
        let rhs: f64 = a.iter().zip(&pb).map(|(x, y)| x * y).sum();
        assert!(
            (lhs - rhs).abs() < 1e-12 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    #[test]
    fn block_jacobi_is_exact_for_block_diagonal_jacobians_and_reports_singular_blocks() {
        // Blocks of 3 coupled inside, none across: n = 10 (the last block has 1 state).
        let n = 10;
        let entries =
            (0..n).flat_map(|i| (0..n).filter(move |&j| i / 3 == j / 3).map(move |j| (i, j)));
        let pattern = SparsityPattern::new(n, entries).unwrap();
        let vals: Vec<f64> = (0..pattern.nnz())
            .map(|k| ((k * 7 % 5) as f64 - 2.0) * 0.4)
            .collect();
        let mut bj = BlockJacobi::new(n, 3);
        bj.setup(&setup(&pattern, &vals, 0.5)).unwrap();
        assert!(exact_inverse(&mut bj, &pattern, &vals, 0.5) < 1e-13);
        // I − cJ singular in the last block (J = 1/c there): its first state is named.
        let mut singular = vals.clone();
        let last = pattern.col_range(n - 1).start;
        singular[last] = 2.0;
        assert_eq!(bj.setup(&setup(&pattern, &singular, 0.5)), Err(9));
    }

    #[test]
    fn gmres_with_ilu0_converges_in_fewer_iterations_than_without() {
        let (pattern, vals) = chain(200, true);
        let c = 5.0;
        let exact: Vec<f64> = (0..200).map(|i| 1.0 + (i % 7) as f64).collect();
        let b = apply(&pattern, &vals, c, &exact, false);
        let mut ilu = Ilu0::new(&pattern);
        ilu.setup(&setup(&pattern, &vals, c)).unwrap();
        let mut iterations = Vec::new();
        for precondition in [false, true] {
            let mut gm = Gmres::new(200, 30);
            let mut x = vec![0.0; 200];
            let op = |v: &[f64], out: &mut [f64]| {
                out.copy_from_slice(&apply(&pattern, &vals, c, v, false))
            };
            let it = gm
                .solve(&b, &mut x, (1e-12, 2000), op, |z: &mut [f64]| {
                    if precondition {
                        ilu.solve(z)
                    }
                })
                .unwrap();
            assert!(
                max_diff(&x, &exact) < 1e-8,
                "preconditioned: {precondition}"
            );
            iterations.push(it);
        }
        assert!(iterations[1] * 4 < iterations[0], "{iterations:?}");
    }
}
