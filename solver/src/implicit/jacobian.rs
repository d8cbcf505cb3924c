//! The Jacobian J = ∂f/∂u of an implicit solve: by the model's own dense or sparse Jacobian, by n
//! forward-mode passes, or by one pass per colour of a column colouring of its sparsity pattern (Curtis, Powell &
//! Reid 1974); the pattern declared by the model or detected by AD.

use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::Dual64;

use super::Core;
use crate::error::SolverError;
use crate::linalg::{Lu, SparsityPattern};
use crate::options::LinearSolverKind;
use crate::problem::OdeProblem;
use crate::system::OdeSystem;

impl<M: OdeSystem> Core<'_, M> {
    /// J at (t, u): the model's own (dense path), or by n forward-mode passes (dense), or one per colour
    /// (sparse).
    pub(super) fn jacobian(&mut self, t: f64) {
        let n = self.n;
        for (d, &x) in self.pd.iter_mut().zip(&self.p) {
            *d = Dual64::from(x);
        }
        if let (Some((colors, count)), Lu::Sparse(lu)) = (&self.colors, &self.lu) {
            let pattern = lu.pattern();
            let model = self.problem.model();
            let own = model.sparse_jacobian(t, &self.u, &self.p, pattern, &mut self.jac);
            for c in (0..*count).filter(|_| !own) {
                for (i, d) in self.ud.iter_mut().enumerate() {
                    *d = Dual64::new(self.u[i], f64::from(u8::from(colors[i] == c)));
                }
                self.problem.model().rhs(
                    Dual64::from(t),
                    ArrayView1::from(&self.ud[..]),
                    ArrayView1::from(&self.pd[..]),
                    ArrayViewMut1::from(&mut self.fd[..]),
                );
                // Column j of colour c: its rows' derivatives are the seed's (no other column of
                // this colour touches them).
                for j in (0..n).filter(|&j| colors[j] == c) {
                    for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                        self.jac[k] = self.fd[i].eps;
                    }
                }
            }
        } else if !self
            .problem
            .model()
            .jacobian(t, &self.u, &self.p, &mut self.jac)
        {
            for j in 0..n {
                for (i, d) in self.ud.iter_mut().enumerate() {
                    *d = Dual64::new(self.u[i], f64::from(u8::from(i == j)));
                }
                self.problem.model().rhs(
                    Dual64::from(t),
                    ArrayView1::from(&self.ud[..]),
                    ArrayView1::from(&self.pd[..]),
                    ArrayViewMut1::from(&mut self.fd[..]),
                );
                for i in 0..n {
                    self.jac[j * n + i] = self.fd[i].eps;
                }
            }
        }
        self.stats.jacobian_evaluations += 1;
        self.jac_fresh = true;
        self.factored_hg = 0.0;
        if let Some(r) = self.radau.as_mut() {
            r.factored_h2 = 0.0;
        }
    }
}

/// The sparsity pattern to factor with, or `None` for dense LU (see [`LinearSolverKind`]).
pub(super) fn choose_pattern<M: OdeSystem>(
    problem: &OdeProblem<M>,
    kind: LinearSolverKind,
) -> Result<Option<SparsityPattern>, SolverError> {
    let n = problem.n_states();
    if kind == LinearSolverKind::Dense || (kind == LinearSolverKind::Auto && n < 64) {
        return Ok(None);
    }
    let pattern = problem.jacobian_pattern()?;
    let sparse_enough = pattern.nnz() * 10 <= n * n;
    Ok((kind == LinearSolverKind::Sparse || sparse_enough).then_some(pattern))
}
