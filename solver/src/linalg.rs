//! Linear algebra for implicit methods, behind a trait: dense LU with partial pivoting and sparse LU
//! (both faer), and the sparsity pattern of a Jacobian with a column colouring, so that a sparse
//! Jacobian costs one forward-mode pass per colour instead of one per column (Curtis, Powell & Reid,
//! "On the estimation of sparse Jacobian matrices", IMA J. Appl. Math. 13 (1974) 117–120).

use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::linalg::lu::partial_pivoting::{factor, solve};
use faer::perm::PermRef;
use faer::sparse::linalg::LuError;
use faer::sparse::linalg::lu::{LuSymbolicParams, NumericLu, SymbolicLu, factorize_symbolic_lu};
use faer::sparse::{SparseColMatRef, SymbolicSparseColMatRef};
use faer::{Conj, Mat, Par};

/// A factorization of an n×n iteration matrix, reused for many right-hand sides.
pub trait LinearSolver {
    /// Factors the matrix that `fill(i, j, k)` describes: entry (i, j), stored at position k of the
    /// solver's layout (`LinearSolver::position`; column-major i + n·j for dense, the CSC position of
    /// the pattern for sparse). Only the pattern's entries are asked for.
    ///
    /// # Errors
    /// The index of the first pivot that is not finite or below 1e-14 × the largest entry (singular to
    /// working precision).
    fn factor(&mut self, fill: &mut dyn FnMut(usize, usize, usize) -> f64) -> Result<(), usize>;

    /// Solves A x = b in place (b becomes x) with the last factorization.
    fn solve_in_place(&mut self, b: &mut [f64]);

    /// Solves Aᵀ x = b in place with the last factorization (for adjoints).
    fn solve_transpose_in_place(&mut self, b: &mut [f64]);
}

/// Dense LU with partial pivoting (faer), all buffers allocated once.
pub struct DenseLu {
    n: usize,
    lu: Mat<f64>,
    perm: Vec<usize>,
    perm_inv: Vec<usize>,
    rhs: Mat<f64>,
    buffer: MemBuffer,
}

impl DenseLu {
    /// Buffers for n×n systems.
    pub fn new(n: usize) -> Self {
        let req = factor::lu_in_place_scratch::<usize, f64>(n, n, Par::Seq, Default::default())
            .or(solve::solve_in_place_scratch::<usize, f64>(n, 1, Par::Seq))
            .or(solve::solve_transpose_in_place_scratch::<usize, f64>(
                n,
                1,
                Par::Seq,
            ));
        Self {
            n,
            lu: Mat::zeros(n, n),
            perm: vec![0; n],
            perm_inv: vec![0; n],
            rhs: Mat::zeros(n, 1),
            buffer: MemBuffer::new(req),
        }
    }
}

impl LinearSolver for DenseLu {
    fn factor(&mut self, fill: &mut dyn FnMut(usize, usize, usize) -> f64) -> Result<(), usize> {
        let n = self.n;
        let mut largest = 0.0f64;
        for j in 0..n {
            for i in 0..n {
                let v = fill(i, j, i + n * j);
                largest = largest.max(v.abs());
                self.lu[(i, j)] = v;
            }
        }
        let _ = factor::lu_in_place(
            self.lu.as_mut(),
            &mut self.perm,
            &mut self.perm_inv,
            Par::Seq,
            MemStack::new(&mut self.buffer),
            Default::default(),
        );
        match (0..n).find(|&k| {
            let d = self.lu[(k, k)];
            !d.is_finite() || d.abs() <= 1e-14 * largest
        }) {
            Some(k) => Err(k),
            None => Ok(()),
        }
    }

    fn solve_in_place(&mut self, b: &mut [f64]) {
        self.solve_with(b, false);
    }

    fn solve_transpose_in_place(&mut self, b: &mut [f64]) {
        self.solve_with(b, true);
    }
}

/// Up to this size dense solves run the substitutions below instead of faer's (hand-written on purpose:
/// for the small systems of stiff ODEs — Robertson has 3 states — faer's per-call machinery of
/// permutation checks, scratch matrices and SIMD dispatch cost 60 % of a whole Kvaerno5 solve under
/// callgrind, the arithmetic a few percent). The factorization stays faer's; the substitutions round
/// differently from faer's vectorized ones (last-bit differences, tested against faer to 1e-13).
const SMALL_DENSE: usize = 16;

impl DenseLu {
    /// Solves with the factors P A = L U in place: A x = b as L U x = P b, or Aᵀ x = b as Uᵀ Lᵀ (P x) = b.
    /// Column-oriented substitutions (each solved component updates the ones after it).
    fn solve_small(&self, b: &mut [f64], transpose: bool) {
        let n = self.n;
        let lu = &self.lu;
        let mut x = [0.0f64; SMALL_DENSE];
        let x = &mut x[..n];
        if !transpose {
            for (i, xi) in x.iter_mut().enumerate() {
                *xi = b[self.perm[i]];
            }
            // L y = P b (unit lower), then U x = y.
            for j in 0..n {
                let xj = x[j];
                for i in j + 1..n {
                    x[i] -= lu[(i, j)] * xj;
                }
            }
            for j in (0..n).rev() {
                x[j] *= 1.0 / lu[(j, j)];
                let xj = x[j];
                for i in 0..j {
                    x[i] -= lu[(i, j)] * xj;
                }
            }
            b[..n].copy_from_slice(x);
        } else {
            x.copy_from_slice(&b[..n]);
            // Uᵀ z = b (lower, pivots on the diagonal), then Lᵀ w = z (unit upper), x = Pᵀ w; each as
            // column-oriented substitutions on the transposed factors.
            for j in 0..n {
                x[j] *= 1.0 / lu[(j, j)];
                let xj = x[j];
                for i in j + 1..n {
                    x[i] -= lu[(j, i)] * xj;
                }
            }
            for j in (0..n).rev() {
                let xj = x[j];
                for i in 0..j {
                    x[i] -= lu[(j, i)] * xj;
                }
            }
            for (i, &xi) in x.iter().enumerate() {
                b[self.perm[i]] = xi;
            }
        }
    }

    fn solve_with(&mut self, b: &mut [f64], transpose: bool) {
        let n = self.n;
        if n <= SMALL_DENSE {
            self.solve_small(b, transpose);
        } else {
            self.solve_faer(b, transpose);
        }
    }

    /// The solve by faer (any size).
    fn solve_faer(&mut self, b: &mut [f64], transpose: bool) {
        let n = self.n;
        for (i, &v) in b.iter().enumerate() {
            self.rhs[(i, 0)] = v;
        }
        let perm = PermRef::new_checked(&self.perm, &self.perm_inv, n);
        let (lu, rhs, stack) = (
            self.lu.as_ref(),
            self.rhs.as_mut(),
            MemStack::new(&mut self.buffer),
        );
        if transpose {
            solve::solve_transpose_in_place(lu, lu, perm, rhs, Par::Seq, stack);
        } else {
            solve::solve_in_place(lu, lu, perm, rhs, Par::Seq, stack);
        }
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.rhs[(i, 0)];
        }
    }
}

/// The sparsity pattern of an n × n Jacobian in compressed sparse columns (rows sorted, the diagonal
/// always included, since the iteration matrix I − hγJ has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsityPattern {
    n: usize,
    col_ptr: Vec<usize>,
    row_idx: Vec<usize>,
}

impl SparsityPattern {
    /// The pattern of the entries (row, column), plus the diagonal; repeats are merged.
    ///
    /// # Errors
    /// The first entry outside the n × n matrix.
    pub fn new(
        n: usize,
        entries: impl IntoIterator<Item = (usize, usize)>,
    ) -> Result<Self, (usize, usize)> {
        let mut cols: Vec<Vec<usize>> = (0..n).map(|j| vec![j]).collect();
        for (i, j) in entries {
            if i >= n || j >= n {
                return Err((i, j));
            }
            cols[j].push(i);
        }
        let mut col_ptr = Vec::with_capacity(n + 1);
        let mut row_idx = Vec::new();
        col_ptr.push(0);
        for mut rows in cols {
            rows.sort_unstable();
            rows.dedup();
            row_idx.extend_from_slice(&rows);
            col_ptr.push(row_idx.len());
        }
        Ok(Self {
            n,
            col_ptr,
            row_idx,
        })
    }

    /// Dimension n.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Stored entries (diagonal included).
    pub fn nnz(&self) -> usize {
        self.row_idx.len()
    }

    /// Rows of column j's entries, sorted; their positions are `col_range(j)`.
    pub fn col_rows(&self, j: usize) -> &[usize] {
        &self.row_idx[self.col_ptr[j]..self.col_ptr[j + 1]]
    }

    /// Positions of column j's entries in the CSC layout.
    pub fn col_range(&self, j: usize) -> std::ops::Range<usize> {
        self.col_ptr[j]..self.col_ptr[j + 1]
    }

    /// A colouring of the columns such that no two columns of one colour share a row (greedy, in column
    /// order): the Jacobian then follows from one Jacobian–vector product per colour, the seed being the
    /// sum of that colour's unit vectors. Returns the colour of each column and the number of colours.
    pub fn column_colors(&self) -> (Vec<usize>, usize) {
        let n = self.n;
        // Columns of each row (CSR of the pattern).
        let mut row_cols: Vec<Vec<usize>> = vec![Vec::new(); n];
        for j in 0..n {
            for &i in self.col_rows(j) {
                row_cols[i].push(j);
            }
        }
        let mut color = vec![usize::MAX; n];
        let mut forbidden_by = vec![usize::MAX; n + 1];
        let mut count = 0;
        for j in 0..n {
            for &i in self.col_rows(j) {
                for &k in &row_cols[i] {
                    if color[k] != usize::MAX {
                        forbidden_by[color[k]] = j;
                    }
                }
            }
            let c = (0..=n)
                .find(|&c| forbidden_by[c] != j)
                .expect("n + 1 colours suffice");
            color[j] = c;
            count = count.max(c + 1);
        }
        (color, count)
    }
}

/// Sparse LU with partial pivoting (faer; fill-reducing COLAMD column order), the symbolic analysis done
/// once for the pattern.
pub struct SparseLu {
    pattern: SparsityPattern,
    symbolic: SymbolicLu<usize>,
    numeric: NumericLu<usize, f64>,
    values: Vec<f64>,
    rhs: Mat<f64>,
    buffer: MemBuffer,
}

impl SparseLu {
    /// The symbolic analysis of `pattern`.
    ///
    /// # Panics
    /// Only if faer cannot allocate its symbolic structures.
    pub fn new(pattern: SparsityPattern) -> Self {
        let n = pattern.n;
        let symbolic = factorize_symbolic_lu(
            SymbolicSparseColMatRef::new_checked(n, n, &pattern.col_ptr, None, &pattern.row_idx),
            LuSymbolicParams::default(),
        )
        .expect("symbolic LU of a square pattern");
        let req = StackReq::any_of(&[
            symbolic.factorize_numeric_lu_scratch::<f64>(Par::Seq, Default::default()),
            symbolic.solve_in_place_scratch::<f64>(1, Par::Seq),
            symbolic.solve_transpose_in_place_scratch::<f64>(1, Par::Seq),
        ]);
        Self {
            values: vec![0.0; pattern.nnz()],
            pattern,
            symbolic,
            numeric: NumericLu::new(),
            rhs: Mat::zeros(n, 1),
            buffer: MemBuffer::new(req),
        }
    }

    /// The pattern.
    pub fn pattern(&self) -> &SparsityPattern {
        &self.pattern
    }

    fn solve_with(&mut self, b: &mut [f64], transpose: bool) {
        for (i, &v) in b.iter().enumerate() {
            self.rhs[(i, 0)] = v;
        }
        let lu = faer::sparse::linalg::lu::LuRef::new_unchecked(&self.symbolic, &self.numeric);
        let stack = MemStack::new(&mut self.buffer);
        if transpose {
            lu.solve_transpose_in_place_with_conj(Conj::No, self.rhs.as_mut(), Par::Seq, stack);
        } else {
            lu.solve_in_place_with_conj(Conj::No, self.rhs.as_mut(), Par::Seq, stack);
        }
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.rhs[(i, 0)];
        }
    }
}

impl LinearSolver for SparseLu {
    fn factor(&mut self, fill: &mut dyn FnMut(usize, usize, usize) -> f64) -> Result<(), usize> {
        let n = self.pattern.n;
        let mut largest = 0.0f64;
        for j in 0..n {
            for k in self.pattern.col_range(j) {
                let v = fill(self.pattern.row_idx[k], j, k);
                if !v.is_finite() {
                    return Err(j);
                }
                largest = largest.max(v.abs());
                self.values[k] = v;
            }
        }
        let p = &self.pattern;
        let a = SparseColMatRef::new(
            SymbolicSparseColMatRef::new_checked(n, n, &p.col_ptr, None, &p.row_idx),
            &self.values,
        );
        let result = self.symbolic.factorize_numeric_lu(
            &mut self.numeric,
            a,
            Par::Seq,
            MemStack::new(&mut self.buffer),
            Default::default(),
        );
        match result {
            Ok(_) => {}
            Err(LuError::SymbolicSingular { index }) => return Err(index),
            Err(LuError::Generic(_)) => return Err(0),
        }
        // A zero or non-finite pivot shows up as a non-finite solution of a probe system.
        self.rhs.fill(1.0);
        let lu = faer::sparse::linalg::lu::LuRef::new_unchecked(&self.symbolic, &self.numeric);
        lu.solve_in_place_with_conj(
            Conj::No,
            self.rhs.as_mut(),
            Par::Seq,
            MemStack::new(&mut self.buffer),
        );
        let bound = 1e14 / largest.max(f64::MIN_POSITIVE);
        match (0..n).find(|&i| {
            let x = self.rhs[(i, 0)];
            !x.is_finite() || x.abs() > bound
        }) {
            Some(i) => Err(i),
            None => Ok(()),
        }
    }

    fn solve_in_place(&mut self, b: &mut [f64]) {
        self.solve_with(b, false);
    }

    fn solve_transpose_in_place(&mut self, b: &mut [f64]) {
        self.solve_with(b, true);
    }
}

/// Dense or sparse LU, as an implicit solve chooses.
pub enum Lu {
    /// [`DenseLu`].
    Dense(DenseLu),
    /// [`SparseLu`].
    Sparse(Box<SparseLu>),
}

impl Lu {
    /// Entries stored by the layout (n² or the pattern's nnz).
    pub fn len(&self, n: usize) -> usize {
        match self {
            Lu::Dense(_) => n * n,
            Lu::Sparse(s) => s.pattern.nnz(),
        }
    }
}

impl LinearSolver for Lu {
    fn factor(&mut self, fill: &mut dyn FnMut(usize, usize, usize) -> f64) -> Result<(), usize> {
        match self {
            Lu::Dense(d) => d.factor(fill),
            Lu::Sparse(s) => s.factor(fill),
        }
    }
    fn solve_in_place(&mut self, b: &mut [f64]) {
        match self {
            Lu::Dense(d) => d.solve_in_place(b),
            Lu::Sparse(s) => s.solve_in_place(b),
        }
    }
    fn solve_transpose_in_place(&mut self, b: &mut [f64]) {
        match self {
            Lu::Dense(d) => d.solve_transpose_in_place(b),
            Lu::Sparse(s) => s.solve_transpose_in_place(b),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The small-system substitutions agree with faer's solve to round-off (both orientations).
    #[test]
    fn small_dense_solves_agree_with_faer() {
        use super::{DenseLu, LinearSolver, SMALL_DENSE};
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for n in 1..=SMALL_DENSE {
            for trial in 0..20 {
                let a: Vec<f64> = (0..n * n)
                    .map(|k| {
                        rand()
                            * if k % (n + 1) == 0 {
                                1.0 + trial as f64
                            } else {
                                1.0
                            }
                    })
                    .collect();
                let mut lu = DenseLu::new(n);
                if lu.factor(&mut |i, j, _| a[i + n * j]).is_err() {
                    continue;
                }
                for transpose in [false, true] {
                    let b: Vec<f64> = (0..n).map(|_| rand()).collect();
                    let mut ours = b.clone();
                    lu.solve_small(&mut ours, transpose);
                    let mut faers = b.clone();
                    lu.solve_faer(&mut faers, transpose);
                    let scale = faers.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                    let diff = ours
                        .iter()
                        .zip(&faers)
                        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
                    assert!(
                        diff <= 1e-13 * scale.max(1.0),
                        "n = {n}, transpose = {transpose}: {ours:?} vs {faers:?}"
                    );
                }
            }
        }
    }

    use super::{DenseLu, LinearSolver};

    #[test]
    fn solves_and_reports_singular_pivots() {
        let a = [[4.0, 3.0, 2.0], [2.0, 1.0, 3.0], [3.0, 2.0, 1.0]];
        let mut lu = DenseLu::new(3);
        lu.factor(&mut |i, j, _| a[i][j]).unwrap();
        let mut x = [1.0, 2.0, 3.0];
        lu.solve_in_place(&mut x);
        for (i, row) in a.iter().enumerate() {
            let s: f64 = row.iter().zip(&x).map(|(a, x)| a * x).sum();
            assert!((s - [1.0, 2.0, 3.0][i]).abs() < 1e-13);
        }
        let mut z = [1.0, 2.0, 3.0];
        lu.solve_transpose_in_place(&mut z);
        for j in 0..3 {
            let s: f64 = (0..3).map(|i| a[i][j] * z[i]).sum();
            assert!((s - [1.0, 2.0, 3.0][j]).abs() < 1e-13);
        }
        // Refactor the same buffers with another matrix.
        lu.factor(&mut |i, j, _| if i == j { 2.0 } else { 0.0 })
            .unwrap();
        let mut y = [2.0, 4.0, 6.0];
        lu.solve_in_place(&mut y);
        assert_eq!(y, [1.0, 2.0, 3.0]);
        let singular = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]];
        assert!(lu.factor(&mut |i, j, _| singular[i][j]).is_err());
    }
}
