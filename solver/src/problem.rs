//! An initial value problem: a model with its initial state, parameters and time span.

use ndarray::{Array1, ArrayView1, ArrayViewMut1};
use num_dual::Dual64;

use crate::error::SolverError;
use crate::linalg::SparsityPattern;
use crate::system::OdeSystem;

/// The initial value problem du/dt = f(t, u, p), u(t0) = u0, on the span from `t0` to `t_end`.
///
/// `t_end < t0` integrates backwards in time. Built by [`OdeProblem::new`], which checks dimensions and
/// finiteness, so a problem that exists is well formed.
#[derive(Debug, Clone)]
pub struct OdeProblem<M> {
    model: M,
    u0: Array1<f64>,
    p: Array1<f64>,
    t0: f64,
    t_end: f64,
    /// The Jacobian's sparsity pattern once an implicit solve has detected it by AD (the sparse path of a
    /// model that declares none): detected once per problem, not once per solve.
    detected_pattern: std::sync::OnceLock<SparsityPattern>,
}

/// Checks that every entry of `values` is finite.
pub(crate) fn check_finite(what: &'static str, values: &[f64]) -> Result<(), SolverError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(SolverError::NonFiniteInput {
            what,
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

impl<M: OdeSystem> OdeProblem<M> {
    /// Builds a problem, validating it.
    ///
    /// # Errors
    /// [`SolverError::EmptySystem`] for a model with zero states,
    /// [`SolverError::DimensionMismatch`] if `u0` or `p` do not match the model,
    /// [`SolverError::NonFiniteInput`] for NaN/∞ entries, [`SolverError::InvalidTimeSpan`] if `t0 == t_end`
    /// or either is not finite.
    pub fn new(
        model: M,
        u0: impl Into<Array1<f64>>,
        p: impl Into<Array1<f64>>,
        (t0, t_end): (f64, f64),
    ) -> Result<Self, SolverError> {
        let u0 = u0.into();
        let p = p.into();
        if model.n_states() == 0 {
            return Err(SolverError::EmptySystem);
        }
        if u0.len() != model.n_states() {
            return Err(SolverError::DimensionMismatch {
                what: "u0",
                expected: model.n_states(),
                got: u0.len(),
            });
        }
        if p.len() != model.n_params() {
            return Err(SolverError::DimensionMismatch {
                what: "p",
                expected: model.n_params(),
                got: p.len(),
            });
        }
        if !t0.is_finite() || !t_end.is_finite() || t0 == t_end {
            return Err(SolverError::InvalidTimeSpan { t0, t_end });
        }
        check_finite("u0", u0.as_slice().unwrap_or(&u0.to_vec()))?;
        check_finite("p", p.as_slice().unwrap_or(&p.to_vec()))?;
        Ok(Self {
            model,
            u0,
            p,
            t0,
            t_end,
            detected_pattern: std::sync::OnceLock::new(),
        })
    }

    /// The same problem with other initial values (validated like [`OdeProblem::new`]).
    pub fn with_u0(&self, u0: impl Into<Array1<f64>>) -> Result<Self, SolverError>
    where
        M: Clone,
    {
        Self::new(
            self.model.clone(),
            u0,
            self.p.clone(),
            (self.t0, self.t_end),
        )
    }

    /// The same problem with other parameters (validated like [`OdeProblem::new`]).
    pub fn with_params(&self, p: impl Into<Array1<f64>>) -> Result<Self, SolverError>
    where
        M: Clone,
    {
        Self::new(
            self.model.clone(),
            self.u0.clone(),
            p,
            (self.t0, self.t_end),
        )
    }

    /// The same problem on another time span (validated like [`OdeProblem::new`]).
    pub fn with_span(&self, span: (f64, f64)) -> Result<Self, SolverError>
    where
        M: Clone,
    {
        Self::new(self.model.clone(), self.u0.clone(), self.p.clone(), span)
    }

    /// The same initial values, parameters and span for another model (e.g. the same equations with a
    /// hand-written vjp), validated like [`OdeProblem::new`].
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] if `model`'s sizes differ.
    pub fn with_model<N: OdeSystem>(&self, model: N) -> Result<OdeProblem<N>, SolverError> {
        OdeProblem::new(
            model,
            self.u0.clone(),
            self.p.clone(),
            (self.t0, self.t_end),
        )
    }

    /// The sparsity pattern of the Jacobian ∂f/∂u that the sparse path of implicit methods uses: the
    /// model's [`OdeSystem::jacobian_sparsity`] if it declares one, else the pattern detected by AD
    /// ([`detect_pattern`], computed on the first call only); the diagonal always included.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a declared entry outside n × n.
    pub fn jacobian_pattern(&self) -> Result<SparsityPattern, SolverError> {
        let n = self.n_states();
        match self.model.jacobian_sparsity() {
            Some(entries) => {
                SparsityPattern::new(n, entries).map_err(|(i, j)| SolverError::DimensionMismatch {
                    what: "jacobian_sparsity entry (row or column ≥ n)",
                    expected: n,
                    got: i.max(j),
                })
            }
            None => Ok(self
                .detected_pattern
                .get_or_init(|| detect_pattern(self))
                .clone()),
        }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }
    /// Initial state u0.
    pub fn u0(&self) -> &Array1<f64> {
        &self.u0
    }
    /// Parameters p.
    pub fn params(&self) -> &Array1<f64> {
        &self.p
    }
    /// Start time t0.
    pub fn t0(&self) -> f64 {
        self.t0
    }
    /// End time t_end (may be less than t0).
    pub fn t_end(&self) -> f64 {
        self.t_end
    }
    /// Number of states.
    pub fn n_states(&self) -> usize {
        self.u0.len()
    }
}

/// Checks that `times` lie in the span [t0, t_end] (either orientation; t0 itself only if `allow_t0`) and
/// are strictly monotone in the direction of integration.
///
/// # Errors
/// [`SolverError::TimeOutsideSpan`] or [`SolverError::UnsortedTimes`] naming `what`.
pub fn check_times(
    what: &'static str,
    times: &[f64],
    t0: f64,
    t_end: f64,
    allow_t0: bool,
) -> Result<(), SolverError> {
    let dir = (t_end - t0).signum();
    let (lo, hi) = if dir > 0.0 { (t0, t_end) } else { (t_end, t0) };
    for (index, &t) in times.iter().enumerate() {
        if !(t >= lo && t <= hi) || (!allow_t0 && t == t0) {
            return Err(SolverError::TimeOutsideSpan { what, t, lo, hi });
        }
        // `is_gt` is false for NaN as well as for repeats and reversals.
        if index > 0
            && !(dir * (t - times[index - 1]))
                .partial_cmp(&0.0)
                .is_some_and(|o| o.is_gt())
        {
            return Err(SolverError::UnsortedTimes { what, index, t });
        }
    }
    Ok(())
}

/// The pattern of ∂f/∂u by forward-mode AD, column by column, at two states perturbed from u0 (and
/// parameters perturbed by 1 %), so that an entry is missed only if it vanishes at both.
pub fn detect_pattern<M: OdeSystem>(problem: &OdeProblem<M>) -> SparsityPattern {
    let n = problem.n_states();
    let model = problem.model();
    let t = Dual64::from(problem.t0());
    let mut entries = Vec::new();
    let mut ud = vec![Dual64::from(0.0); n];
    let mut fd = vec![Dual64::from(0.0); n];
    for (trial, shift) in [(0usize, 0.37), (1, 0.61)] {
        let pd: Vec<Dual64> = problem
            .params()
            .iter()
            .enumerate()
            .map(|(k, &x)| Dual64::from(x * (1.0 + 0.01 * (((k + trial) % 7) as f64 - 3.0) / 3.0)))
            .collect();
        let base: Vec<f64> = problem
            .u0()
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                x + (x.abs() + 0.1) * shift * (1.0 + ((i * 7 + trial) % 11) as f64 / 11.0)
            })
            .collect();
        for j in 0..n {
            for (i, d) in ud.iter_mut().enumerate() {
                *d = Dual64::new(base[i], f64::from(u8::from(i == j)));
            }
            model.rhs(
                t,
                ArrayView1::from(&ud[..]),
                ArrayView1::from(&pd[..]),
                ArrayViewMut1::from(&mut fd[..]),
            );
            entries.extend((0..n).filter(|&i| fd[i].eps != 0.0).map(|i| (i, j)));
        }
    }
    SparsityPattern::new(n, entries).expect("entries inside n × n")
}
