//! Implicit methods for stiff problems: TR-BDF2 with a simplified Newton iteration, Jacobian reuse and
//! dense LU (faer, [`crate::linalg`]).
//!
//! TR-BDF2 (Bank, Coughran, Fichtner, Grosse, Rose & Smith 1985; as an ESDIRK pair in Hosea & Shampine,
//! "Analysis and implementation of TR-BDF2", Appl. Numer. Math. 20 (1996) 21–37), γ = 2 − √2, d = γ/2,
//! w = √2/4:
//!
//! Y2 = u_n + h d (K1 + K2) (trapezoidal rule to t_n + γh),  Y3 = u_n + h (w K1 + w K2 + d K3) (BDF2),
//! u_{n+1} = Y3, K_i = f(t_n + c_i h, Y_i), c = (0, γ, 1).
//!
//! Both implicit stages solve Y − h d f(Y) = rhs with the same iteration matrix M = I − h d J, factored
//! once per step size and reused (the Jacobian J too, until Newton struggles). The error estimate
//! e = h Σ (b_i − b̂_i) K_i with b̂ = ((1 − w)/3, (3w + 1)/3, d/3) is filtered, M⁻¹e (Hosea & Shampine
//! §3), so that it stays bounded for stiff components. The method is L-stable and stiffly accurate, of
//! order 2; steps are controlled with exponent 1/3.
//!
//! Newton (Hairer & Wanner, *Solving ODEs II*, §IV.8): Y ← Y − M⁻¹(Y − h d f(Y) − rhs) with the
//! convergence rate θ_k = ‖ΔY_k‖/‖ΔY_{k−1}‖; converged when θ/(1 − θ)‖ΔY‖ ≤ κ = 0.03 (in the error
//! norm); failed when θ ≥ 1 or after 8 iterations. A failure with an old Jacobian recomputes it and
//! retries; a failure with a fresh one halves the step.

#![allow(clippy::needless_range_loop)] // component loops over several equal-length buffers

use crate::error::SolverError;
use crate::integrator::check_times;
use crate::linalg::{DenseLu, LinearSolver};
use crate::options::{Saving, SolverOptions};
use crate::problem::OdeProblem;
use crate::solution::{Solution, Statistics};
use crate::system::OdeSystem;
use crate::tableau::Method;
use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1};
use num_dual::Dual64;

const GAMMA: f64 = 2.0 - std::f64::consts::SQRT_2;
const D: f64 = GAMMA / 2.0;
const W: f64 = std::f64::consts::SQRT_2 / 4.0;
/// b − b̂ for the error estimate.
const E: [f64; 3] = [W - (1.0 - W) / 3.0, W - (3.0 * W + 1.0) / 3.0, D - D / 3.0];
const NEWTON_MAX: usize = 8;
const KAPPA: f64 = 0.03;

/// Working state of a TR-BDF2 solve.
struct TrBdf2<'a, M: OdeSystem> {
    problem: &'a OdeProblem<M>,
    n: usize,
    p: Vec<f64>,
    atol: Vec<f64>,
    rtol: f64,
    t: f64,
    u: Vec<f64>,
    k1: Vec<f64>,
    k2: Vec<f64>,
    k3: Vec<f64>,
    y2: Vec<f64>,
    y3: Vec<f64>,
    rhs: Vec<f64>,
    delta: Vec<f64>,
    err: Vec<f64>,
    scale: Vec<f64>,
    /// J = ∂f/∂u at the last evaluation point, column-major n × n.
    jac: Vec<f64>,
    jac_fresh: bool,
    /// h·d of the current factorization (0: none).
    factored_hd: f64,
    lu: DenseLu,
    ud: Vec<Dual64>,
    pd: Vec<Dual64>,
    fd: Vec<Dual64>,
    stats: Statistics,
}

impl<'a, M: OdeSystem> TrBdf2<'a, M> {
    fn f(&mut self, t: f64, u: &[f64], out: &mut [f64]) {
        self.problem.model().rhs(
            t,
            ArrayView1::from(u),
            ArrayView1::from(&self.p[..]),
            ArrayViewMut1::from(out),
        );
        self.stats.rhs_evaluations += 1;
    }

    /// J at (t, u) by n forward-mode passes.
    fn jacobian(&mut self, t: f64) {
        let n = self.n;
        for (d, &x) in self.pd.iter_mut().zip(&self.p) {
            *d = Dual64::from(x);
        }
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
        self.stats.jacobian_evaluations += 1;
        self.jac_fresh = true;
        self.factored_hd = 0.0;
    }

    /// Factors M = I − hd J (unless already factored for this hd).
    fn factor(&mut self, hd: f64, h: f64) -> Result<(), SolverError> {
        if self.factored_hd == hd {
            return Ok(());
        }
        let (n, jac) = (self.n, &self.jac);
        let result = self.lu.factor(&mut |i, j| {
            let identity = if i == j { 1.0 } else { 0.0 };
            identity - hd * jac[j * n + i]
        });
        self.stats.factorizations += 1;
        match result {
            Ok(()) => {
                self.factored_hd = hd;
                Ok(())
            }
            Err(pivot) => Err(SolverError::SingularMatrix {
                t: self.t,
                h,
                pivot,
            }),
        }
    }

    /// RMS norm of v scaled by atol + rtol·|u|.
    fn norm(&self, v: &[f64]) -> f64 {
        let sum: f64 = v
            .iter()
            .zip(&self.scale)
            .map(|(x, s)| (x / s).powi(2))
            .sum();
        (sum / self.n as f64).sqrt()
    }

    /// Solves Y − hd f(t, Y) = rhs for Y (initial guess in `y`), writing f(t, Y) into `k`. Returns
    /// whether Newton converged.
    fn newton(&mut self, t: f64, hd: f64, which: usize) -> bool {
        let n = self.n;
        let mut y = std::mem::take(if which == 2 {
            &mut self.y2
        } else {
            &mut self.y3
        });
        let mut k = std::mem::take(if which == 2 {
            &mut self.k2
        } else {
            &mut self.k3
        });
        let mut prev = f64::INFINITY;
        let mut converged = false;
        for iteration in 0..NEWTON_MAX {
            self.f(t, &y, &mut k);
            self.stats.newton_iterations += 1;
            if k.iter().any(|v| !v.is_finite()) {
                break;
            }
            for m in 0..n {
                self.delta[m] = self.rhs[m] - y[m] + hd * k[m];
            }
            self.lu.solve_in_place(&mut self.delta);
            for m in 0..n {
                y[m] += self.delta[m];
            }
            let dn = self.norm(&self.delta);
            if iteration > 0 {
                let theta = dn / prev;
                if theta >= 1.0 || !dn.is_finite() {
                    break;
                }
                if theta / (1.0 - theta) * dn <= KAPPA {
                    converged = true;
                    break;
                }
            } else if dn <= 1e-3 * KAPPA {
                converged = true;
                break;
            }
            prev = dn;
        }
        if converged {
            self.f(t, &y, &mut k);
            converged = k.iter().all(|v| v.is_finite());
        }
        if which == 2 {
            self.y2 = y;
            self.k2 = k;
        } else {
            self.y3 = y;
            self.k3 = k;
        }
        converged
    }

    /// One step attempt of size h: Ok(Some(err)) with the scaled error norm, Ok(None) if Newton failed.
    fn attempt(&mut self, h: f64) -> Result<Option<f64>, SolverError> {
        let n = self.n;
        let hd = h * D;
        self.factor(hd, h)?;
        for m in 0..n {
            self.scale[m] = self.atol[m] + self.rtol * self.u[m].abs();
        }
        // Stage 2: trapezoidal rule to t + γh, predicted by explicit Euler.
        for m in 0..n {
            self.rhs[m] = self.u[m] + hd * self.k1[m];
            self.y2[m] = self.u[m] + GAMMA * h * self.k1[m];
        }
        if !self.newton(self.t + GAMMA * h, hd, 2) {
            return Ok(None);
        }
        // Stage 3: BDF2 to t + h, predicted by extrapolating through u_n and Y2.
        for m in 0..n {
            self.rhs[m] = self.u[m] + h * W * (self.k1[m] + self.k2[m]);
            self.y3[m] = self.u[m] + (self.y2[m] - self.u[m]) / GAMMA;
        }
        if !self.newton(self.t + h, hd, 3) {
            return Ok(None);
        }
        // Filtered error estimate M⁻¹ h Σ (b − b̂) K.
        for m in 0..n {
            self.err[m] = h * (E[0] * self.k1[m] + E[1] * self.k2[m] + E[2] * self.k3[m]);
            let (a, b) = (self.u[m].abs(), self.y3[m].abs());
            self.scale[m] = self.atol[m] + self.rtol * a.max(b);
        }
        self.lu.solve_in_place(&mut self.err);
        let e = self.norm(&self.err);
        Ok(Some(if e.is_finite() { e } else { f64::INFINITY }))
    }
}

/// Solves `problem` with an implicit method ([`Method::TrBdf2`]); called by [`crate::solve`].
///
/// Supported options: tolerances, `h0`, `h_max`, `max_steps`, `tstops`, saving every step, at the end,
/// or at `save_at` times (made tstops: exact step values, no interpolation), `fixed_step`. Not yet:
/// `dense(true)`, the step API ([`crate::Integrator`]) and derivatives.
///
/// # Errors
/// As [`crate::solve`]; [`SolverError::SingularMatrix`] when the iteration matrix I − hγJ/2 is singular
/// (naming t and h); [`SolverError::StepSizeTooSmall`] when Newton keeps failing as h shrinks;
/// [`SolverError::InvalidOption`] for `dense(true)`.
pub(crate) fn solve_implicit<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
) -> Result<Solution, SolverError> {
    let n = problem.n_states();
    let atol = options.validated_atol(n)?;
    if options.dense {
        return Err(SolverError::InvalidOption {
            name: "dense (with an implicit method)",
            value: 1.0,
            valid: "false: implicit methods have no dense output yet",
        });
    }
    let (t0, t_end) = (problem.t0(), problem.t_end());
    let dir = (t_end - t0).signum();
    check_times("tstop", &options.tstops, t0, t_end, false)?;
    let mut stops: Vec<f64> = options.tstops.clone();
    let save_at: Vec<f64> = match &options.saving {
        Saving::At(times) => {
            check_times("save_at", times, t0, t_end, true)?;
            times.clone()
        }
        _ => Vec::new(),
    };
    stops.extend(save_at.iter().copied().filter(|&t| t != t0));
    stops.push(t_end);
    stops.sort_by(|a, b| (dir * a).total_cmp(&(dir * b)));
    stops.dedup();

    let mut s = TrBdf2 {
        problem,
        n,
        p: problem.params().to_vec(),
        atol,
        rtol: options.rtol,
        t: t0,
        u: problem.u0().to_vec(),
        k1: vec![0.0; n],
        k2: vec![0.0; n],
        k3: vec![0.0; n],
        y2: vec![0.0; n],
        y3: vec![0.0; n],
        rhs: vec![0.0; n],
        delta: vec![0.0; n],
        err: vec![0.0; n],
        scale: vec![0.0; n],
        jac: vec![0.0; n * n],
        jac_fresh: false,
        factored_hd: 0.0,
        lu: DenseLu::new(n),
        ud: vec![Dual64::from(0.0); n],
        pd: vec![Dual64::from(0.0); problem.model().n_params()],
        fd: vec![Dual64::from(0.0); n],
        stats: Statistics::default(),
    };
    let mut times = Vec::new();
    let mut states = Vec::new();
    let save_every = matches!(options.saving, Saving::EveryStep);
    if save_every || save_at.first() == Some(&t0) {
        times.push(t0);
        states.extend_from_slice(&s.u);
    }
    let (t, u) = (s.t, s.u.clone());
    let mut k1 = vec![0.0; n];
    s.f(t, &u, &mut k1);
    if let Some(component) = k1.iter().position(|v| !v.is_finite()) {
        return Err(SolverError::NonFiniteRhs {
            t,
            component,
            value: k1[component],
        });
    }
    s.k1 = k1;
    s.jacobian(t0);

    // Initial step: h0, or 0.01·‖u‖/‖f‖ bounded by the span (order-2 heuristic).
    let span = (t_end - t0).abs();
    let mut h_abs = match (options.fixed_step, options.h0) {
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => {
            for m in 0..n {
                s.scale[m] = s.atol[m] + s.rtol * s.u[m].abs();
            }
            let (d0, d1) = (s.norm(&s.u.clone()), s.norm(&s.k1.clone()));
            if d0 < 1e-5 || d1 < 1e-5 {
                1e-6
            } else {
                0.01 * d0 / d1
            }
        }
    }
    .min(span)
    .min(options.h_max);
    let mut next_stop = 0;
    let mut steps = 0usize;
    let mut last_rejected = false;
    while next_stop < stops.len() {
        if steps >= options.max_steps {
            return Err(SolverError::MaxStepsReached {
                t: s.t,
                max_steps: options.max_steps,
            });
        }
        let stop = stops[next_stop];
        let remaining = (stop - s.t).abs();
        let hits = h_abs >= remaining * (1.0 - 1e-12)
            || (options.fixed_step.is_some() && h_abs >= remaining * 0.99);
        let h = dir * if hits { remaining } else { h_abs };
        if h.abs() <= 16.0 * f64::EPSILON * s.t.abs().max(1.0) {
            return Err(SolverError::StepSizeTooSmall { t: s.t, h });
        }
        steps += 1;
        let outcome = s.attempt(h)?;
        let Some(err) = outcome else {
            // Newton failed: a fresh Jacobian first, then a smaller step.
            s.stats.newton_failures += 1;
            s.stats.rejected_steps += 1;
            if !s.jac_fresh {
                s.jacobian(s.t);
            } else if options.fixed_step.is_some() {
                return Err(SolverError::StepSizeTooSmall { t: s.t, h });
            } else {
                h_abs = h.abs() * 0.5;
            }
            last_rejected = true;
            continue;
        };
        if options.fixed_step.is_none() && err > 1.0 {
            s.stats.rejected_steps += 1;
            h_abs = h.abs() * (0.9 * err.powf(-1.0 / 3.0)).max(0.2);
            last_rejected = true;
            continue;
        }
        // Accept.
        s.stats.accepted_steps += 1;
        s.t = if hits { stop } else { s.t + h };
        std::mem::swap(&mut s.u, &mut s.y3);
        std::mem::swap(&mut s.k1, &mut s.k3);
        s.jac_fresh = false;
        if hits {
            next_stop += 1;
        }
        let save = save_every
            || (hits && save_at.contains(&s.t))
            || (next_stop == stops.len() && matches!(options.saving, Saving::EndOnly));
        if save {
            times.push(s.t);
            states.extend_from_slice(&s.u);
        }
        if options.fixed_step.is_none() {
            let growth = if last_rejected { 1.0 } else { 5.0 };
            let q = (0.9 * err.max(1e-10).powf(-1.0 / 3.0)).clamp(0.2, growth);
            // Keep the factorization when the step barely changes.
            if !hits && (0.9..=1.2).contains(&q) {
                h_abs = h.abs();
            } else {
                h_abs = (h.abs() * q).min(options.h_max);
            }
        }
        last_rejected = false;
    }
    let rows = times.len();
    Ok(Solution {
        method: Method::TrBdf2,
        times: Array1::from(times),
        states: Array2::from_shape_vec((rows, n), states).expect("rows × n values"),
        u_end: Array1::from(s.u.clone()),
        stats: s.stats,
        t0,
        t_end,
        dense: None,
    })
}
