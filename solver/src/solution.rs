//! The result of a solve: saved states, statistics and (optionally) the dense output.

use ndarray::{Array1, Array2};
use serde::Serialize;

use crate::error::SolverError;
use crate::tableau::{ExplicitTableau, Method};

/// Counters of a solve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Statistics {
    /// Accepted steps.
    pub accepted_steps: usize,
    /// Rejected steps (error estimate above tolerance).
    pub rejected_steps: usize,
    /// All evaluations of the right-hand side, including the initial-step selection and the extra
    /// interpolation stages.
    pub rhs_evaluations: usize,
    /// The part of `rhs_evaluations` spent on extra stages of the continuous extension.
    pub interpolation_rhs_evaluations: usize,
    /// Accepted steps whose size was limited by stability rather than accuracy: h·ρ ≥ 0.95 × the method's
    /// real stability boundary, ρ ≈ ‖K_s − K_{s−1}‖ / ‖Y_s − Y_{s−1}‖ estimated from the last two stages
    /// (Hairer & Wanner, *Solving ODEs II*, §IV.2, the stiffness test of DOPRI5).
    pub stability_limited_steps: usize,
    /// Jacobian evaluations (implicit methods).
    pub jacobian_evaluations: usize,
    /// LU factorizations of the iteration matrix (implicit methods), or set-ups of the GMRES path's
    /// preconditioner.
    pub factorizations: usize,
    /// Newton iterations, each one rhs evaluation and one solve with the factorization (implicit methods).
    pub newton_iterations: usize,
    /// Jacobian–vector products of the GMRES path ([`crate::LinearSolverKind::Gmres`]): one per
    /// Krylov iteration and one per (re)start for the residual.
    pub linear_iterations: usize,
    /// Newton iterations that failed to converge, each a rejected step (implicit methods).
    pub newton_failures: usize,
    /// Where 15 of 20 consecutive accepted steps had been stability-limited (the problem is stiff for
    /// this explicit method there; Hairer's DOPRI5 asks for 15 in a row, which tstops can interrupt),
    /// if that happened.
    pub stiffness_detected_at: Option<f64>,
    /// [`Method::AutoTsit5Radau5`]: where the solve switched from the explicit to the implicit method, if
    /// it did.
    pub switched_to_implicit_at: Option<f64>,
}

/// Which continuous extension a [`DenseOutput`] evaluates.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DenseKind {
    /// The explicit method's own (stages as stored by the integrator).
    Explicit(&'static ExplicitTableau),
    /// Cubic Hermite through u_n, u_{n+1} and the derivatives f_n, f_{n+1} (ESDIRK methods, as
    /// OrdinaryDiffEq does for them): stored "stages" f_n, f_{n+1}, (u_{n+1} − u_n)/h.
    Hermite,
    /// Radau IIA's collocation polynomial (stage order 3): stored "stages" (u_{n+1} − u_n)/h and
    /// RADAU5's divided differences / h.
    Radau,
    /// BDF's interpolating polynomial: the stored "u_n" is D_0 = u_{n+1}, the stored "stages" the
    /// backward differences D_1 … D_k divided by h (zero beyond the step's order k).
    Bdf,
}

impl DenseKind {
    pub(crate) fn stages(self) -> usize {
        match self {
            DenseKind::Explicit(tab) => tab.total_stages(),
            DenseKind::Hermite => 3,
            DenseKind::Radau => 4,
            DenseKind::Bdf => crate::tableau::BDF_MAX_ORDER,
        }
    }

    /// u(t) = u_n + h Σ_i w_i(θ) k_i, θ = (t − t_n)/h, inside the step (t_n, h) with stored stages `k`
    /// (`w`: scratch of at least [`DenseKind::stages`] weights).
    pub(crate) fn eval_step(
        self,
        (tn, h, t): (f64, f64, f64),
        u: &[f64],
        k: &[f64],
        out: &mut [f64],
        w: &mut [f64],
    ) {
        let n = u.len();
        self.weights((t - tn) / h, w);
        out.copy_from_slice(u);
        for (i, &wi) in w[..self.stages()].iter().enumerate() {
            if wi != 0.0 {
                let hw = h * wi;
                for (o, &kv) in out.iter_mut().zip(&k[i * n..(i + 1) * n]) {
                    *o += hw * kv;
                }
            }
        }
    }

    /// Weights w_i(θ) with u(t_n + θh) = u_n + h Σ_i w_i(θ) k_i.
    pub(crate) fn weights(self, theta: f64, w: &mut [f64]) {
        match self {
            DenseKind::Explicit(tab) => tab.dense_weights(theta, w),
            DenseKind::Hermite => {
                // u_n + θΔ + θ(θ−1)[(1−2θ)Δ + (θ−1)h f_n + θ h f_{n+1}], Δ = u_{n+1} − u_n.
                let tm = theta - 1.0;
                w[0] = theta * tm * tm;
                w[1] = theta * theta * tm;
                w[2] = theta + theta * tm * (1.0 - 2.0 * theta);
            }
            DenseKind::Bdf => {
                // The BDF step stores D_0 = u_{n+1} in place of u_n and k_j = D_{j+1}/h: the
                // interpolating polynomial D_0 + Σ_j D_j Π_{m<j} (θ − 1 + m)/(m + 1).
                crate::tableau::bdf_dense_weights(theta, w);
            }
            DenseKind::Radau => {
                // u_{n+1} + s(c₁ + (s − c₂ + 1)(c₂' + (s − c₁ + 1)c₃)), s = θ − 1 (radau5's CONTR5).
                let (c1, c2) = (crate::tableau::radau5::C[0], crate::tableau::radau5::C[1]);
                if theta < 0.5 {
                    // The same polynomial written from the step's start, in θ itself: it passes
                    // through u_n at θ = 0, so w_i(θ) − w_i(0) changes nothing in exact arithmetic,
                    // and near the start neither u_{n+1} − u_n cancels nor does s = θ − 1 round θ
                    // away (round-off ~ε‖u_{n+1} − u_n‖ in the end form, which events restarting
                    // there meet).
                    w[0] = 0.0;
                    w[1] = theta;
                    w[2] = theta * (theta - 1.0 - c2);
                    w[3] = theta * (theta * (theta - (c1 + c2 + 1.0)) + (c1 * c2 + c1 + c2));
                } else {
                    let s = theta - 1.0;
                    let (c1m1, c2m1) = (c1 - 1.0, c2 - 1.0);
                    w[0] = 1.0;
                    w[1] = s;
                    w[2] = s * (s - c2m1);
                    w[3] = s * (s - c2m1) * (s - c1m1);
                }
            }
        }
    }
}

/// The stage values of every accepted step, enough to evaluate the method's continuous extension
/// anywhere in the span.
#[derive(Debug, Clone)]
pub struct DenseOutput {
    pub(crate) kind: DenseKind,
    pub(crate) n: usize,
    /// Step start times t_n (in the direction of integration).
    pub(crate) t: Vec<f64>,
    /// Signed step sizes h_n.
    pub(crate) h: Vec<f64>,
    /// u_n, n values per step.
    pub(crate) u: Vec<f64>,
    /// All stages (main and extra) K_i, total_stages × n values per step.
    pub(crate) k: Vec<f64>,
}

impl DenseOutput {
    pub(crate) fn new(tableau: &'static ExplicitTableau, n: usize) -> Self {
        Self::with_kind(DenseKind::Explicit(tableau), n)
    }

    pub(crate) fn with_kind(kind: DenseKind, n: usize) -> Self {
        Self {
            kind,
            n,
            t: Vec::new(),
            h: Vec::new(),
            u: Vec::new(),
            k: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, t: f64, h: f64, u: &[f64], k: &[f64]) {
        self.t.push(t);
        self.h.push(h);
        self.u.extend_from_slice(u);
        self.k.extend_from_slice(k);
    }

    /// Removes every step (keeping the buffers), to record another segment into.
    pub fn clear(&mut self) {
        self.t.clear();
        self.h.clear();
        self.u.clear();
        self.k.clear();
    }

    /// The covered interval [first step's start, last step's end] (in the direction of integration),
    /// or `None` if empty.
    pub fn span(&self) -> Option<(f64, f64)> {
        let (&t0, &tn, &hn) = (self.t.first()?, self.t.last()?, self.h.last()?);
        Some((t0, tn + hn))
    }

    /// Length of the scratch buffer [`DenseOutput::interpolate_into`] needs.
    pub fn scratch_len(&self) -> usize {
        self.kind.stages()
    }

    /// u(t) by the method's continuous extension into `out` (length n), with a caller's scratch buffer
    /// of [`DenseOutput::scratch_len`] (so repeated calls allocate nothing).
    ///
    /// # Errors
    /// [`SolverError::NoDenseOutput`] if empty; [`SolverError::TimeOutsideSpan`] for t outside the
    /// stored steps; [`SolverError::DimensionMismatch`] for wrong buffer lengths.
    pub fn interpolate_into(
        &self,
        t: f64,
        out: &mut [f64],
        scratch: &mut [f64],
    ) -> Result<(), SolverError> {
        let (a, b) = self.span().ok_or(SolverError::NoDenseOutput)?;
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        if !(t >= lo && t <= hi) {
            return Err(SolverError::TimeOutsideSpan {
                what: "dense output",
                t,
                lo,
                hi,
            });
        }
        self.check_buffers(out, scratch)?;
        self.eval(t, out, scratch);
        Ok(())
    }

    /// Checks the lengths of an evaluation's output and scratch buffers.
    fn check_buffers(&self, out: &[f64], scratch: &[f64]) -> Result<(), SolverError> {
        if out.len() != self.n {
            return Err(SolverError::DimensionMismatch {
                what: "interpolation output",
                expected: self.n,
                got: out.len(),
            });
        }
        if scratch.len() != self.scratch_len() {
            return Err(SolverError::DimensionMismatch {
                what: "interpolation scratch",
                expected: self.scratch_len(),
                got: scratch.len(),
            });
        }
        Ok(())
    }

    /// u(t) like [`DenseOutput::interpolate_into`], but for t outside the stored steps by extending the
    /// nearest step's polynomial up to one length of that step beyond the span (further out, t is
    /// brought back to that limit). Stages with nodes c_i > 1 (Kvaerno5's c_2 ≈ 1.23) sample u just
    /// beyond a step: a backward solve over recomputed segments meets them at every segment start.
    ///
    /// # Errors
    /// [`SolverError::NoDenseOutput`] if empty; [`SolverError::DimensionMismatch`] for wrong buffer
    /// lengths.
    pub fn extrapolate_into(
        &self,
        t: f64,
        out: &mut [f64],
        scratch: &mut [f64],
    ) -> Result<(), SolverError> {
        let (a, b) = self.span().ok_or(SolverError::NoDenseOutput)?;
        // a is the first step's start, b the last step's end, in the direction of integration.
        let (h_first, h_last) = (self.h[0], self.h[self.h.len() - 1]);
        let (lo, hi) = if a <= b {
            (a - h_first.abs(), b + h_last.abs())
        } else {
            (b - h_last.abs(), a + h_first.abs())
        };
        if t.is_nan() {
            return self.interpolate_into(t, out, scratch);
        }
        self.check_buffers(out, scratch)?;
        self.eval(t.clamp(lo, hi), out, scratch);
        Ok(())
    }

    /// Number of stored steps.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether no step is stored.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// Evaluates u(t) into `out`, given a scratch buffer for the weights: on the step containing t, or
    /// for t outside the steps on the first or last one's polynomial.
    fn eval(&self, t: f64, out: &mut [f64], w: &mut [f64]) {
        let dir = self.h[0].signum();
        // Index of the step whose interval contains t: last step with dir·t_n <= dir·t.
        let idx = self
            .t
            .partition_point(|&tn| dir * tn <= dir * t)
            .saturating_sub(1);
        let (tn, h) = (self.t[idx], self.h[idx]);
        let n = self.n;
        let s = self.kind.stages();
        self.kind.eval_step(
            (tn, h, t),
            &self.u[idx * n..(idx + 1) * n],
            &self.k[idx * s * n..(idx + 1) * s * n],
            out,
            w,
        );
    }
}

/// The solution of an initial value problem.
#[derive(Debug, Clone, Serialize)]
pub struct Solution {
    /// The method used.
    pub method: Method,
    /// Saved times (in the direction of integration).
    pub times: Array1<f64>,
    /// Saved states, one row per saved time.
    pub states: Array2<f64>,
    /// The final state u(t_end), whatever was saved.
    pub u_end: Array1<f64>,
    /// Counters.
    pub stats: Statistics,
    /// Start of the span.
    pub t0: f64,
    /// End of the span: t_end, or the time of an event that stopped the integration.
    pub t_end: f64,
    /// The events that fired, in order ([`crate::events`]).
    pub events: Vec<crate::event_spec::EventHit>,
    #[serde(skip)]
    pub(crate) dense: Option<DenseOutput>,
}

impl Solution {
    /// The solution at any time of the span by the method's continuous extension (see the methods table
    /// for its order).
    ///
    /// # Errors
    /// [`SolverError::NoDenseOutput`] unless solved with `dense(true)`; [`SolverError::TimeOutsideSpan`]
    /// for t outside [t0, t_end].
    pub fn interpolate(&self, t: f64) -> Result<Array1<f64>, SolverError> {
        let mut out = Array1::zeros(self.u_end.len());
        self.interpolate_into(t, out.as_slice_mut().expect("contiguous"))?;
        Ok(out)
    }

    /// Like [`Solution::interpolate`], writing into `out` (length n).
    pub fn interpolate_into(&self, t: f64, out: &mut [f64]) -> Result<(), SolverError> {
        let dense = self.dense.as_ref().ok_or(SolverError::NoDenseOutput)?;
        let (lo, hi) = if self.t0 <= self.t_end {
            (self.t0, self.t_end)
        } else {
            (self.t_end, self.t0)
        };
        if !(t >= lo && t <= hi) {
            return Err(SolverError::TimeOutsideSpan {
                what: "interpolation",
                t,
                lo,
                hi,
            });
        }
        if out.len() != dense.n {
            return Err(SolverError::DimensionMismatch {
                what: "interpolation output",
                expected: dense.n,
                got: out.len(),
            });
        }
        if t == self.t_end {
            out.copy_from_slice(self.u_end.as_slice().expect("contiguous"));
            return Ok(());
        }
        let mut w = vec![0.0; dense.scratch_len()];
        dense.eval(t, out, &mut w);
        Ok(())
    }

    /// The dense output, if stored.
    pub fn dense_output(&self) -> Option<&DenseOutput> {
        self.dense.as_ref()
    }
}
