//! Linear algebra for implicit methods, behind a trait: dense LU with partial pivoting by faer.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::lu::partial_pivoting::{factor, solve};
use faer::perm::PermRef;
use faer::{Mat, Par};

/// A factorization of an n×n iteration matrix, reused for many right-hand sides.
pub trait LinearSolver {
    /// Factors the matrix that `fill(i, j)` describes (entry (i, j)).
    ///
    /// # Errors
    /// The index of the first pivot that is not finite or below 1e-14 × the largest entry (singular to
    /// working precision).
    fn factor(&mut self, fill: &mut dyn FnMut(usize, usize) -> f64) -> Result<(), usize>;

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
    fn factor(&mut self, fill: &mut dyn FnMut(usize, usize) -> f64) -> Result<(), usize> {
        let n = self.n;
        let mut largest = 0.0f64;
        for j in 0..n {
            for i in 0..n {
                let v = fill(i, j);
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
        let n = self.n;
        for (i, &v) in b.iter().enumerate() {
            self.rhs[(i, 0)] = v;
        }
        let perm = PermRef::new_checked(&self.perm, &self.perm_inv, n);
        solve::solve_in_place(
            self.lu.as_ref(),
            self.lu.as_ref(),
            perm,
            self.rhs.as_mut(),
            Par::Seq,
            MemStack::new(&mut self.buffer),
        );
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.rhs[(i, 0)];
        }
    }

    fn solve_transpose_in_place(&mut self, b: &mut [f64]) {
        let n = self.n;
        for (i, &v) in b.iter().enumerate() {
            self.rhs[(i, 0)] = v;
        }
        let perm = PermRef::new_checked(&self.perm, &self.perm_inv, n);
        solve::solve_transpose_in_place(
            self.lu.as_ref(),
            self.lu.as_ref(),
            perm,
            self.rhs.as_mut(),
            Par::Seq,
            MemStack::new(&mut self.buffer),
        );
        for (i, v) in b.iter_mut().enumerate() {
            *v = self.rhs[(i, 0)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DenseLu, LinearSolver};

    #[test]
    fn solves_and_reports_singular_pivots() {
        let a = [[4.0, 3.0, 2.0], [2.0, 1.0, 3.0], [3.0, 2.0, 1.0]];
        let mut lu = DenseLu::new(3);
        lu.factor(&mut |i, j| a[i][j]).unwrap();
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
        lu.factor(&mut |i, j| if i == j { 2.0 } else { 0.0 })
            .unwrap();
        let mut y = [2.0, 4.0, 6.0];
        lu.solve_in_place(&mut y);
        assert_eq!(y, [1.0, 2.0, 3.0]);
        let singular = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]];
        assert!(lu.factor(&mut |i, j| singular[i][j]).is_err());
    }
}
