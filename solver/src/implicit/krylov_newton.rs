//! The GMRES path of the BDF Newton iteration ([`crate::LinearSolverKind::Gmres`]): each correction
//! solves (I − cJ(y)) Δ = r with J(y)v by one forward-mode pass at the current iterate (or the model's
//! own jvp), preconditioned on the right by a [`Preconditioner`] that is set up where the direct path
//! would refactor. No n × n matrix is formed; J's values on its sparsity pattern are formed only for
//! preconditioners that need them.

use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::Dual64;

use super::jacobian::JacobianEvaluator;
use crate::error::SolverError;
use crate::krylov::{
    BlockJacobi, Gmres, Ilu0, LaggedLu, Preconditioner, PreconditionerKind, PreconditionerSetup,
};
use crate::linalg::SparsityPattern;
use crate::problem::OdeProblem;
use crate::system::OdeSystem;

/// CVODE's ε_lin: the linear residual's weighted RMS norm is held below ε_lin × the Newton tolerance.
const EPS_LIN: f64 = 0.05;
/// GMRES cycles (of `restart` iterations each) before a linear solve counts as failed.
const MAX_CYCLES: usize = 5;

/// Buffers and preconditioner of the GMRES path.
pub(super) struct KrylovNewton {
    gmres: Gmres,
    max_iterations: usize,
    precond: Option<Box<dyn Preconditioner>>,
    /// J's pattern and column colouring: known when the preconditioner needs J's values or the
    /// model declares its sparsity (then the derivatives use it too).
    pattern: Option<(SparsityPattern, Vec<usize>, usize)>,
    /// The point of the last Jacobian: (t, u), where the preconditioner is set up.
    pub jac_t: f64,
    pub jac_u: Vec<f64>,
    ud: Vec<Dual64>,
    pd: Vec<Dual64>,
    fd: Vec<Dual64>,
    zeros_p: Vec<f64>,
    /// The unscaled direction and product of one operator application, the scaled right-hand side and
    /// iterate.
    v: Vec<f64>,
    jv: Vec<f64>,
    b: Vec<f64>,
    x: Vec<f64>,
}

impl KrylovNewton {
    /// Set-up for `problem` with restart length `restart` and preconditioner `kind`.
    ///
    /// # Errors
    /// [`SolverError::InvalidOption`] for [`PreconditionerKind::Model`] with a model that has none;
    /// errors of [`OdeProblem::jacobian_pattern`].
    pub fn new<M: OdeSystem>(
        problem: &OdeProblem<M>,
        restart: usize,
        kind: PreconditionerKind,
    ) -> Result<Self, SolverError> {
        let n = problem.n_states();
        let model = problem.model();
        let needs_pattern = !matches!(kind, PreconditionerKind::None | PreconditionerKind::Model)
            || model.jacobian_sparsity().is_some();
        let pattern = if needs_pattern {
            let pattern = problem.jacobian_pattern()?;
            let (colors, count) = pattern.column_colors();
            Some((pattern, colors, count))
        } else {
            None
        };
        let built: Option<Box<dyn Preconditioner>> = match (kind, &pattern) {
            (PreconditionerKind::None, _) => None,
            (PreconditionerKind::Model, _) => Some(model.preconditioner().ok_or(
                SolverError::InvalidOption {
                    name: "implicit.linear_solver.preconditioner",
                    value: 0.0,
                    valid: "PreconditionerKind::Model needs OdeSystem::preconditioner to return one",
                },
            )?),
            (PreconditionerKind::Ilu0, Some((p, ..))) => Some(Box::new(Ilu0::new(p))),
            (PreconditionerKind::LaggedLu, Some((p, ..))) => Some(Box::new(LaggedLu::new(p))),
            (PreconditionerKind::BlockJacobi { block }, Some(_)) => {
                Some(Box::new(BlockJacobi::new(n, block)))
            }
            (_, None) => unreachable!("built-in preconditioners have the pattern"),
        };
        let np = problem.params().len();
        Ok(Self {
            gmres: Gmres::new(n, restart),
            max_iterations: MAX_CYCLES * restart,
            precond: built,
            pattern,
            jac_t: problem.t0(),
            jac_u: problem.u0().to_vec(),
            ud: vec![Dual64::from(0.0); n],
            pd: problem.params().iter().map(|&x| Dual64::from(x)).collect(),
            fd: vec![Dual64::from(0.0); n],
            zeros_p: vec![0.0; np],
            v: vec![0.0; n],
            jv: vec![0.0; n],
            b: vec![0.0; n],
            x: vec![0.0; n],
        })
    }

    /// Whether a preconditioner is set up (the solver counts its set-ups as factorizations).
    pub fn has_preconditioner(&self) -> bool {
        self.precond.is_some()
    }

    /// Entries of J that set-up evaluates (0 when no preconditioner needs them).
    pub fn jacobian_len(&self) -> usize {
        match (&self.precond, &self.pattern) {
            (Some(p), Some((pattern, ..))) if p.needs_jacobian() => pattern.nnz(),
            _ => 0,
        }
    }

    /// J's pattern and colouring, if known.
    pub fn sparsity(&self) -> Option<(&SparsityPattern, &[usize], usize)> {
        self.pattern.as_ref().map(|(p, c, k)| (p, &c[..], *k))
    }

    /// A Jacobian evaluator for the preconditioner's J (colours of the pattern).
    pub fn evaluator(&self, n: usize, np: usize) -> JacobianEvaluator {
        let colors = self.pattern.as_ref().map(|(_, c, k)| (c.clone(), *k));
        JacobianEvaluator::new(n, np, colors)
    }

    /// The pattern J is evaluated on (see [`KrylovNewton::jacobian_len`]).
    pub fn jacobian_pattern(&self) -> Option<&SparsityPattern> {
        (self.jacobian_len() > 0).then(|| &self.pattern.as_ref().expect("pattern").0)
    }

    /// Sets the preconditioner up for I − cJ at the last Jacobian's point, with J's values `jac` on
    /// the pattern (empty when not needed).
    ///
    /// # Errors
    /// The preconditioner's failed pivot.
    pub fn setup(&mut self, p: &[f64], c: f64, jac: &[f64]) -> Result<(), usize> {
        let Some(precond) = self.precond.as_mut() else {
            return Ok(());
        };
        let jacobian = match &self.pattern {
            Some((pattern, ..)) if !jac.is_empty() => Some((pattern, jac)),
            _ => None,
        };
        precond.setup(&PreconditionerSetup {
            t: self.jac_t,
            u: &self.jac_u,
            p,
            c,
            jacobian,
        })
    }

    /// Solves (I − cJ(t, y)) x = r in place (r becomes x) to the weighted RMS residual
    /// ε_lin × `newton_tol` (weights 1/`scale`): GMRES on the scaled system S⁻¹(I − cJ)S x̃ = S⁻¹r.
    /// Returns the Krylov iterations, or `Err` with them when GMRES did not converge (or met a
    /// non-finite value).
    pub fn solve<M: OdeSystem>(
        &mut self,
        model: &M,
        (t, y, p): (f64, &[f64], &[f64]),
        c: f64,
        r: &mut [f64],
        (scale, newton_tol): (&[f64], f64),
    ) -> Result<usize, usize> {
        let n = r.len();
        for m in 0..n {
            self.b[m] = r[m] / scale[m];
            self.x[m] = 0.0;
        }
        let b_norm = self.b.iter().map(|v| v * v).sum::<f64>().sqrt();
        if b_norm == 0.0 {
            r.iter_mut().for_each(|v| *v = 0.0);
            return Ok(0);
        }
        let target = EPS_LIN * newton_tol * (n as f64).sqrt();
        let Self {
            gmres,
            max_iterations,
            precond,
            ud,
            pd,
            fd,
            zeros_p,
            v,
            jv,
            b,
            x,
            ..
        } = self;
        let mut applied = 0usize;
        let apply = |xs: &[f64], out: &mut [f64]| {
            applied += 1;
            for m in 0..n {
                v[m] = xs[m] * scale[m];
            }
            if !model.jvp(t, y, p, v, zeros_p, jv) {
                for m in 0..n {
                    ud[m] = Dual64::new(y[m], v[m]);
                }
                model.rhs(
                    Dual64::from(t),
                    ArrayView1::from(&ud[..]),
                    ArrayView1::from(&pd[..]),
                    ArrayViewMut1::from(&mut fd[..]),
                );
                for m in 0..n {
                    jv[m] = fd[m].eps;
                }
            }
            for m in 0..n {
                out[m] = (v[m] - c * jv[m]) / scale[m];
            }
        };
        let result = match precond.as_mut() {
            Some(pc) => gmres.solve(
                b,
                x,
                (target / b_norm, *max_iterations),
                apply,
                |z: &mut [f64]| {
                    for (zm, s) in z.iter_mut().zip(scale) {
                        *zm *= s;
                    }
                    pc.solve(z);
                    for (zm, s) in z.iter_mut().zip(scale) {
                        *zm /= s;
                    }
                },
            ),
            None => gmres.solve(b, x, (target / b_norm, *max_iterations), apply, |_| {}),
        };
        for m in 0..n {
            r[m] = x[m] * scale[m];
        }
        let iterations = applied;
        match result {
            Ok(_) => Ok(iterations),
            Err(_) => Err(iterations),
        }
    }
}
