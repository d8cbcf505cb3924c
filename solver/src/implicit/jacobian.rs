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
    /// J at (t, u) into `jac` (see [`JacobianEvaluator::evaluate`]); the factorizations made with the
    /// old J are void.
    pub(super) fn jacobian(&mut self, t: f64) {
        self.jw.evaluate(
            self.problem.model(),
            t,
            &self.u,
            &self.p,
            match &self.lu {
                Lu::Sparse(lu) => Some(lu.pattern()),
                Lu::Dense(_) => None,
            },
            &mut self.jac,
        );
        self.stats.jacobian_evaluations += 1;
        self.jac_fresh = true;
        self.factored_hg = 0.0;
        if let Some(r) = self.radau.as_mut() {
            r.factored_h2 = 0.0;
        }
    }
}

/// Evaluates J = ∂f/∂u for an iteration matrix: the model's own dense or sparse Jacobian, or n
/// forward-mode passes (dense), or one pass per colour of the pattern's column colouring (sparse).
pub(crate) struct JacobianEvaluator {
    /// Colour of each column and the number of colours (sparse Jacobians).
    pub colors: Option<(Vec<usize>, usize)>,
    ud: Vec<Dual64>,
    pd: Vec<Dual64>,
    fd: Vec<Dual64>,
}

impl JacobianEvaluator {
    /// Buffers for n states and np parameters; `colors` for a sparse `Lu`.
    pub fn new(n: usize, np: usize, colors: Option<(Vec<usize>, usize)>) -> Self {
        Self {
            colors,
            ud: vec![Dual64::from(0.0); n],
            pd: vec![Dual64::from(0.0); np],
            fd: vec![Dual64::from(0.0); n],
        }
    }

    /// J at (t, u) with parameters p into `jac`: on `pattern` (its CSC positions) when given and the
    /// evaluator has its colouring, else column-major n × n.
    pub fn evaluate<M: OdeSystem>(
        &mut self,
        model: &M,
        t: f64,
        u: &[f64],
        p: &[f64],
        pattern: Option<&SparsityPattern>,
        jac: &mut [f64],
    ) {
        let n = u.len();
        for (d, &x) in self.pd.iter_mut().zip(p) {
            *d = Dual64::from(x);
        }
        if let (Some((colors, count)), Some(pattern)) = (&self.colors, pattern) {
            let own = model.sparse_jacobian(t, u, p, pattern, jac);
            for c in (0..*count).filter(|_| !own) {
                for (i, d) in self.ud.iter_mut().enumerate() {
                    *d = Dual64::new(u[i], f64::from(u8::from(colors[i] == c)));
                }
                model.rhs(
                    Dual64::from(t),
                    ArrayView1::from(&self.ud[..]),
                    ArrayView1::from(&self.pd[..]),
                    ArrayViewMut1::from(&mut self.fd[..]),
                );
                // Column j of colour c: its rows' derivatives are the seed's (no other column of
                // this colour touches them).
                for j in (0..n).filter(|&j| colors[j] == c) {
                    for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                        jac[k] = self.fd[i].eps;
                    }
                }
            }
        } else if !model.jacobian(t, u, p, jac) {
            for j in 0..n {
                for (i, d) in self.ud.iter_mut().enumerate() {
                    *d = Dual64::new(u[i], f64::from(u8::from(i == j)));
                }
                model.rhs(
                    Dual64::from(t),
                    ArrayView1::from(&self.ud[..]),
                    ArrayView1::from(&self.pd[..]),
                    ArrayViewMut1::from(&mut self.fd[..]),
                );
                for i in 0..n {
                    jac[j * n + i] = self.fd[i].eps;
                }
            }
        }
    }
}

/// The sparsity pattern to factor with, or `None` for dense LU (see [`LinearSolverKind`]).
pub(super) fn choose_pattern<M: OdeSystem>(
    problem: &OdeProblem<M>,
    kind: LinearSolverKind,
) -> Result<Option<SparsityPattern>, SolverError> {
    let n = problem.n_states();
    debug_assert!(
        !matches!(kind, LinearSolverKind::Gmres { .. }),
        "the GMRES path chooses its own pattern"
    );
    if kind == LinearSolverKind::Dense || (kind == LinearSolverKind::Auto && n < 64) {
        return Ok(None);
    }
    let pattern = problem.jacobian_pattern()?;
    let sparse_enough = pattern.nnz() * 10 <= n * n;
    Ok((kind == LinearSolverKind::Sparse || sparse_enough).then_some(pattern))
}
