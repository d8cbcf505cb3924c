//! Implicit methods for stiff problems: ESDIRK pairs (TR-BDF2, Kværnø 5(4)) with a simplified Newton
//! iteration, Jacobian reuse and dense LU (faer, [`crate::linalg`]). Every implicit stage solves
//! Y − hγ f(Y) = rhs with the same iteration matrix; the stage derivative is then taken from the stage
//! equation, K = (Y − rhs)/(hγ), and u_{n+1} = Y_s (both pairs are stiffly accurate). The description of
//! TR-BDF2 below carries over with its own coefficients to Kvaerno5 (γ = 0.26, 7 stages, exponent 1/5).
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

use crate::control::{Controller, ControllerMemory, StepController, StepFeedback};
use crate::error::SolverError;
use crate::linalg::{DenseLu, LinearSolver, Lu, SparseLu, SparsityPattern};
use crate::options::{LinearSolverKind, SolverOptions};
use crate::problem::{OdeProblem, check_times};
use crate::solution::Statistics;
use crate::system::OdeSystem;
use crate::tableau::EsdirkTableau;
use crate::tableau::radau5 as radau;
use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::Dual64;

/// Which implicit scheme an [`ImplicitIntegrator`] runs.
#[derive(Debug, Clone, Copy)]
pub enum Scheme {
    /// An ESDIRK pair.
    Esdirk(&'static EsdirkTableau),
    /// Radau IIA of order 5 ([`radau`]).
    Radau5,
}

impl PartialEq for Scheme {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Scheme::Esdirk(a), Scheme::Esdirk(b)) => std::ptr::eq(*a, *b),
            (Scheme::Radau5, Scheme::Radau5) => true,
            _ => false,
        }
    }
}

impl Scheme {
    /// Number of stages (ESDIRK: the explicit first one included).
    pub fn stages(self) -> usize {
        match self {
            Scheme::Esdirk(tab) => tab.c.len(),
            Scheme::Radau5 => 3,
        }
    }

    /// The node c_i of stage i.
    pub fn node(self, i: usize) -> f64 {
        match self {
            Scheme::Esdirk(tab) => tab.c[i],
            Scheme::Radau5 => radau::C[i],
        }
    }

    /// The quadrature weight b_i of stage i (the last row of A: both schemes are stiffly accurate).
    pub fn weight(self, i: usize) -> f64 {
        match self {
            Scheme::Esdirk(tab) => tab.b[i],
            Scheme::Radau5 => radau::A[2][i],
        }
    }

    /// The time of stage i of the step (t, h) ending at `t_next` (exactly `t_next` for c_i = 1, as the
    /// integrator steps there).
    pub fn stage_time(self, i: usize, t: f64, h: f64, t_next: f64) -> f64 {
        let c = self.node(i);
        if c == 1.0 { t_next } else { t + c * h }
    }
}

/// The ESDIRKs' default Newton iteration limit.
const NEWTON_MAX: usize = 8;
/// Attempts in a row (each with a smaller h or a fresh Jacobian) whose Newton iteration met NaN/∞ from
/// the model, before that is reported as [`SolverError::NonFiniteRhs`].
const MAX_NON_FINITE_FAILURES: usize = 10;
/// Radau: Newton iterations allowed (radau5's NIT) and the rate below which the Jacobian is kept (THET).
const RADAU_NIT: usize = 7;
/// What the ESDIRK and Radau code reads of [`crate::ImplicitConfig`], resolved for the method.
#[derive(Debug, Clone, Copy)]
struct Newton {
    max_iterations: usize,
    kappa: f64,
    lu_reuse: f64,
    refresh_rate: f64,
}
const RADAU_THET: f64 = 0.001;

/// Radau IIA's own buffers and controller memory.
struct RadauState {
    /// The complex system as a real 2n × 2n one.
    lu2: Lu,
    /// h of `lu2`'s factorization (0: none).
    factored_h2: f64,
    /// Stage increments Z (3 × n), transformed W, stage derivatives F, the increment ΔW.
    z: Vec<f64>,
    w: Vec<f64>,
    f: Vec<f64>,
    dw: Vec<f64>,
    /// The previous step's collocation polynomial (3 × n), for starting values and dense output.
    cont: Vec<f64>,
    have_cont: bool,
    /// Last accepted h, Gustafsson's memory (h and error of the last accepted step), Newton's rate.
    h_old: f64,
    faccon: f64,
    theta: f64,
    /// Newton iterations of the last attempt.
    newt: usize,
    /// Step-size factor proposed by a failed Newton iteration.
    newton_factor: f64,
    first: bool,
    /// Whether the previous attempt was rejected.
    reject: bool,
    fnewt: f64,
}

/// Working state of an implicit solve: the current point, the stages of the last attempt, the Jacobian and
/// its factorizations.
struct Core<'a, M: OdeSystem> {
    scheme: Scheme,
    problem: &'a OdeProblem<M>,
    n: usize,
    p: Vec<f64>,
    atol: Vec<f64>,
    rtol: f64,
    t: f64,
    u: Vec<f64>,
    /// ESDIRK: stage derivatives K_i, s × n; K_0 = f(t_n, u_n) (FSAL: the last stage of the previous
    /// step). Radau: f(t_n, u_n) in the first n entries.
    k: Vec<f64>,
    /// Stage values Y_i of the last attempt (s × n).
    ys: Vec<f64>,
    /// The stage being solved, and u_{n+1}.
    y: Vec<f64>,
    u_new: Vec<f64>,
    rhs: Vec<f64>,
    delta: Vec<f64>,
    err: Vec<f64>,
    scale: Vec<f64>,
    /// J = ∂f/∂u at the last evaluation point, in the layout of `lu` (column-major n × n, or the
    /// sparse pattern's CSC positions).
    jac: Vec<f64>,
    jac_fresh: bool,
    /// The factorization's hγ (ESDIRK) or h/γ (Radau): `lu` holds I − hg·J. 0: none.
    factored_hg: f64,
    lu: Lu,
    /// Colour of each column and the number of colours (sparse Jacobians).
    colors: Option<(Vec<usize>, usize)>,
    ud: Vec<Dual64>,
    pd: Vec<Dual64>,
    fd: Vec<Dual64>,
    stats: Statistics,
    radau: Option<Box<RadauState>>,
    /// The first non-finite rhs value (t, component, value) met by the last attempt's Newton iteration.
    non_finite: Option<(f64, usize, f64)>,
    /// ESDIRK: the most Newton iterations a stage of the last attempt took (the predictive controller
    /// lowers its safety factor with it).
    newton_last: usize,
    /// ESDIRK: the slowest contraction rate θ of the last attempt's Newton iterations.
    newton_rate: f64,
    /// The Newton and reuse settings.
    newton: Newton,
}

impl<M: OdeSystem> Core<'_, M> {
    /// [`SolverError::NonFiniteRhs`] for the non-finite rhs value the last attempt met, if any.
    fn non_finite_error(&self) -> Option<SolverError> {
        self.non_finite
            .map(|(t, component, value)| SolverError::NonFiniteRhs {
                t,
                component,
                value,
            })
    }

    fn f(&mut self, t: f64, u: &[f64], out: &mut [f64]) {
        self.problem.model().rhs(
            t,
            ArrayView1::from(u),
            ArrayView1::from(&self.p[..]),
            ArrayViewMut1::from(out),
        );
        self.stats.rhs_evaluations += 1;
    }

    /// J at (t, u): the model's own (dense path), or by n forward-mode passes (dense), or one per colour
    /// (sparse).
    fn jacobian(&mut self, t: f64) {
        let n = self.n;
        for (d, &x) in self.pd.iter_mut().zip(&self.p) {
            *d = Dual64::from(x);
        }
        if let (Some((colors, count)), Lu::Sparse(lu)) = (&self.colors, &self.lu) {
            let pattern = lu.pattern();
            for c in 0..*count {
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

    /// Factors M = I − hg·J, unless the current factorization is for an hg within `lu_reuse`
    /// ([`crate::ImplicitConfig`]) of this one (ESDIRK only): simplified Newton converges with a slightly
    /// stale hγ too (as in CVODE), and a sparse LU costs far more than the extra iteration it may take.
    fn factor(&mut self, hg: f64, h: f64) -> Result<(), SolverError> {
        let reuse = match self.scheme {
            Scheme::Esdirk(_) => self.newton.lu_reuse,
            Scheme::Radau5 => 0.0,
        };
        if self.factored_hg != 0.0 && (hg / self.factored_hg - 1.0).abs() <= reuse {
            return Ok(());
        }
        self.refactor(hg, h)
    }

    /// Factors M = I − hg·J.
    fn refactor(&mut self, hg: f64, h: f64) -> Result<(), SolverError> {
        let jac = &self.jac;
        let result = self.lu.factor(&mut |i, j, k| {
            let identity = if i == j { 1.0 } else { 0.0 };
            identity - hg * jac[k]
        });
        self.stats.factorizations += 1;
        self.factored_hg = if result.is_ok() { hg } else { 0.0 };
        singular(result, self.t, h)
    }

    /// Factors Radau's real form of (α + iβ)/h I − J for step size h.
    fn refactor_complex(&mut self, h: f64) -> Result<(), SolverError> {
        let n = self.n;
        let (a, b) = (radau::ALPHA / h, radau::BETA / h);
        let jac = &self.jac;
        let r = self.radau.as_mut().expect("Radau state");
        // Positions of J's entries: dense column-major, or the pattern's (the 2n pattern repeats J's in
        // both diagonal blocks, columns in order, see `complex_pattern`).
        let (sparse_j, result) = match &mut r.lu2 {
            Lu::Dense(lu) => (
                false,
                lu.factor(&mut |i, j, _| {
                    let (bi, bj) = (i / n, j / n);
                    let (ii, jj) = (i % n, j % n);
                    let diag = if ii == jj { 1.0 } else { 0.0 };
                    match (bi, bj) {
                        (0, 0) | (1, 1) => a * diag - jac[jj * n + ii],
                        (0, 1) => -b * diag,
                        _ => b * diag,
                    }
                }),
            ),
            Lu::Sparse(_) => (true, Ok(())),
        };
        let result = if sparse_j {
            let Lu::Sparse(j_lu) = &self.lu else {
                unreachable!("sparse Radau has a sparse J")
            };
            let pattern = j_lu.pattern();
            let Lu::Sparse(lu2) = &mut r.lu2 else {
                unreachable!()
            };
            lu2.factor(&mut |i, j, _| {
                let (bi, bj) = (i / n, j / n);
                let (ii, jj) = (i % n, j % n);
                if bi == bj {
                    let diag = if ii == jj { 1.0 } else { 0.0 };
                    let jv = pattern
                        .col_rows(jj)
                        .binary_search(&ii)
                        .map(|q| jac[pattern.col_range(jj).start + q])
                        .unwrap_or(0.0);
                    a * diag - jv
                } else if bi == 0 {
                    -b
                } else {
                    b
                }
            })
        } else {
            result
        };
        self.stats.factorizations += 1;
        r.factored_h2 = if result.is_ok() { h } else { 0.0 };
        singular(result, self.t, h)
    }

    /// RMS norm of v scaled by `scale`.
    fn norm(&self, v: &[f64]) -> f64 {
        let sum: f64 = v
            .iter()
            .zip(&self.scale)
            .map(|(x, s)| (x / s).powi(2))
            .sum();
        (sum / self.n as f64).sqrt()
    }

    /// Solves Y − hγ f(t, Y) = rhs for ESDIRK stage `i` (initial guess in `y`), writing f(t, Y) into
    /// K_i. Returns whether Newton converged.
    fn newton(&mut self, t: f64, hg: f64, i: usize) -> bool {
        let n = self.n;
        let mut y = std::mem::take(&mut self.y);
        let mut k = std::mem::take(&mut self.k);
        let ki = i * n..(i + 1) * n;
        let mut prev = f64::INFINITY;
        let mut converged = false;
        for iteration in 0..self.newton.max_iterations {
            self.f(t, &y, &mut k[ki.clone()]);
            self.stats.newton_iterations += 1;
            self.newton_last = self.newton_last.max(iteration + 1);
            if let Some(m) = k[ki.clone()].iter().position(|v| !v.is_finite()) {
                self.non_finite.get_or_insert((t, m, k[i * n + m]));
                break;
            }
            for m in 0..n {
                self.delta[m] = self.rhs[m] - y[m] + hg * k[i * n + m];
            }
            self.lu.solve_in_place(&mut self.delta);
            for m in 0..n {
                y[m] += self.delta[m];
            }
            let dn = self.norm(&self.delta);
            if iteration > 0 {
                let theta = dn / prev;
                self.newton_rate = self.newton_rate.max(theta);
                if theta >= 1.0 || !dn.is_finite() {
                    break;
                }
                if theta / (1.0 - theta) * dn <= self.newton.kappa {
                    converged = true;
                    break;
                }
            } else if dn <= 1e-3 * self.newton.kappa {
                converged = true;
                break;
            }
            prev = dn;
        }
        if converged {
            // K_i from the stage equation, (Y_i − rhs)/(hγ), not f(Y_i): f would multiply the Newton
            // residual's stiff components by ‖hγJ‖ (Hairer & Wanner II, §IV.8).
            for m in 0..n {
                k[i * n + m] = (y[m] - self.rhs[m]) / hg;
            }
            self.ys[i * n..(i + 1) * n].copy_from_slice(&y);
        }
        self.y = y;
        self.k = k;
        converged
    }

    /// One step attempt of size h: Ok(Some(err)) with the scaled error norm, Ok(None) if Newton failed.
    fn attempt(&mut self, h: f64) -> Result<Option<f64>, SolverError> {
        self.non_finite = None;
        match self.scheme {
            Scheme::Esdirk(tab) => self.attempt_esdirk(tab, h),
            Scheme::Radau5 => self.attempt_radau(h),
        }
    }

    fn attempt_esdirk(
        &mut self,
        tab: &'static EsdirkTableau,
        h: f64,
    ) -> Result<Option<f64>, SolverError> {
        let n = self.n;
        let hg = h * tab.gamma;
        self.newton_last = 0;
        self.newton_rate = 0.0;
        self.factor(hg, h)?;
        for m in 0..n {
            self.scale[m] = self.atol[m] + self.rtol * self.u[m].abs();
        }
        self.ys[..n].copy_from_slice(&self.u);
        for i in 1..tab.c.len() {
            // rhs = u_n + h Σ_{j<i} a_ij K_j; predictor: the same with K_i ≈ K_{i−1}.
            for m in 0..n {
                let mut acc = 0.0;
                for (j, &a) in tab.a[i].iter().enumerate() {
                    acc += a * self.k[j * n + m];
                }
                self.rhs[m] = self.u[m] + h * acc;
                self.y[m] = self.rhs[m] + hg * self.k[(i - 1) * n + m];
            }
            if !self.newton(self.t + tab.c[i] * h, hg, i) {
                return Ok(None);
            }
        }
        // u_{n+1} = Y_s (stiffly accurate: b is the last row of A) and the filtered error estimate
        // M⁻¹ h Σ (b − b̂) K.
        let s = tab.c.len();
        for m in 0..n {
            let mut e = 0.0;
            for i in 0..s {
                e += (tab.b[i] - tab.bhat[i]) * self.k[i * n + m];
            }
            self.u_new[m] = self.y[m];
            self.err[m] = h * e;
            let (a, b) = (self.u[m].abs(), self.u_new[m].abs());
            self.scale[m] = self.atol[m] + self.rtol * a.max(b);
        }
        self.lu.solve_in_place(&mut self.err);
        let e = self.norm(&self.err);
        Ok(Some(if e.is_finite() { e } else { f64::INFINITY }))
    }

    /// Solves (γ/h I − J) x = b in place: (h/γ)(I − (h/γ)J)⁻¹ b.
    fn solve_e1(&mut self, h: f64, b: &mut [f64]) {
        self.lu.solve_in_place(b);
        let s = h / radau::GAMMA;
        b.iter_mut().for_each(|x| *x *= s);
    }

    fn attempt_radau(&mut self, h: f64) -> Result<Option<f64>, SolverError> {
        let n = self.n;
        let t = self.t;
        self.factor(h / radau::GAMMA, h)?;
        if self.radau.as_ref().expect("Radau state").factored_h2 != h {
            self.refactor_complex(h)?;
        }
        for m in 0..n {
            self.scale[m] = self.atol[m] + self.rtol * self.u[m].abs();
        }
        let mut r = self.radau.take().expect("Radau state");
        // Starting values: the previous collocation polynomial extrapolated, or zero.
        if r.have_cont && r.h_old != 0.0 {
            let c3q = h / r.h_old;
            for i in 0..3 {
                let cq = radau::C[i] * c3q;
                for m in 0..n {
                    let (a1, a2, a3) = (r.cont[m], r.cont[n + m], r.cont[2 * n + m]);
                    r.z[i * n + m] = cq
                        * (a1
                            + (cq - (radau::C[1] - 1.0)) * (a2 + (cq - (radau::C[0] - 1.0)) * a3));
                }
            }
        } else {
            r.z.iter_mut().for_each(|x| *x = 0.0);
        }
        transform(&radau::TI, &r.z, &mut r.w, n);
        let (fac1, alphn, betan) = (radau::GAMMA / h, radau::ALPHA / h, radau::BETA / h);
        r.faccon = r.faccon.max(f64::EPSILON).powf(0.8);
        r.theta = r.theta.abs();
        let mut converged = false;
        let (mut dynold, mut thqold) = (0.0f64, 0.0f64);
        r.newton_factor = 0.5;
        r.newt = 0;
        let nit = self.newton.max_iterations;
        while r.newt < nit {
            for i in 0..3 {
                for m in 0..n {
                    self.y[m] = self.u[m] + r.z[i * n + m];
                }
                let ti = if i == 2 { t + h } else { t + radau::C[i] * h };
                let y = std::mem::take(&mut self.y);
                self.f(ti, &y, &mut r.f[i * n..(i + 1) * n]);
                self.y = y;
            }
            self.stats.newton_iterations += 1;
            if let Some(q) = r.f.iter().position(|v| !v.is_finite()) {
                let (i, m) = (q / n, q % n);
                let ti = if i == 2 { t + h } else { t + radau::C[i] * h };
                self.non_finite.get_or_insert((ti, m, r.f[q]));
                break;
            }
            // Right-hand sides in W coordinates: T⁻¹F − (Λ/h) W.
            transform(&radau::TI, &r.f, &mut r.dw, n);
            for m in 0..n {
                let (w1, w2, w3) = (r.w[m], r.w[n + m], r.w[2 * n + m]);
                r.dw[m] -= fac1 * w1;
                r.dw[n + m] -= alphn * w2 - betan * w3;
                r.dw[2 * n + m] -= betan * w2 + alphn * w3;
            }
            self.solve_e1(h, &mut r.dw[..n]);
            r.lu2.solve_in_place(&mut r.dw[n..]);
            let mut sum = 0.0;
            for i in 0..3 {
                for m in 0..n {
                    sum += (r.dw[i * n + m] / self.scale[m]).powi(2);
                }
            }
            let dyno = (sum / (3 * n) as f64).sqrt();
            if !dyno.is_finite() {
                break;
            }
            if r.newt >= 1 && r.newt < nit {
                let thq = dyno / dynold;
                r.theta = if r.newt == 1 {
                    thq
                } else {
                    (thq * thqold).sqrt()
                };
                thqold = thq;
                if r.theta < 0.99 {
                    r.faccon = r.theta / (1.0 - r.theta);
                    let left = (nit - 1 - r.newt) as i32;
                    let dyth = r.faccon * dyno * r.theta.powi(left) / r.fnewt;
                    if dyth >= 1.0 {
                        let qnewt = dyth.clamp(1e-4, 20.0);
                        r.newton_factor = 0.8 * qnewt.powf(-1.0 / (4.0 + f64::from(left)));
                        break;
                    }
                } else {
                    break;
                }
            }
            dynold = dyno.max(f64::EPSILON);
            for (w, d) in r.w.iter_mut().zip(&r.dw) {
                *w += d;
            }
            transform(&radau::T, &r.w, &mut r.z, n);
            r.newt += 1;
            if r.faccon * dyno <= r.fnewt {
                converged = true;
                break;
            }
        }
        if !converged {
            self.radau = Some(r);
            return Ok(None);
        }
        // u_{n+1} = u_n + Z_3; stage values; the error estimate.
        for m in 0..n {
            self.u_new[m] = self.u[m] + r.z[2 * n + m];
            for i in 0..3 {
                self.ys[i * n + m] = self.u[m] + r.z[i * n + m];
            }
            let (a, b) = (self.u[m].abs(), self.u_new[m].abs());
            self.scale[m] = self.atol[m] + self.rtol * a.max(b);
        }
        for m in 0..n {
            let f2 =
                (radau::D[0] * r.z[m] + radau::D[1] * r.z[n + m] + radau::D[2] * r.z[2 * n + m])
                    / h;
            r.dw[m] = f2;
            self.err[m] = self.k[m] + f2;
        }
        let mut e_vec = std::mem::take(&mut self.err);
        self.solve_e1(h, &mut e_vec);
        let mut err = self.norm(&e_vec);
        if err >= 1.0 && (r.first || r.reject) {
            // Refined estimate (radau5): f at u_n + e instead of f(u_n).
            for m in 0..n {
                self.y[m] = self.u[m] + e_vec[m];
            }
            let (y, mut fy) = (std::mem::take(&mut self.y), std::mem::take(&mut self.delta));
            self.f(t, &y, &mut fy);
            for m in 0..n {
                e_vec[m] = fy[m] + r.dw[m];
            }
            (self.y, self.delta) = (y, fy);
            self.solve_e1(h, &mut e_vec);
            err = self.norm(&e_vec);
        }
        self.err = e_vec;
        self.radau = Some(r);
        Ok(Some(if err.is_finite() { err } else { f64::INFINITY }))
    }
}

/// A factorization's result as the solver's error: a failed pivot is a singular iteration matrix at (t, h).
fn singular(result: Result<(), usize>, t: f64, h: f64) -> Result<(), SolverError> {
    result.map_err(|pivot| SolverError::SingularMatrix { t, h, pivot })
}

/// out_i = Σ_j M_ij v_j for 3 blocks of n.
fn transform(m: &[[f64; 3]; 3], v: &[f64], out: &mut [f64], n: usize) {
    for i in 0..3 {
        for k in 0..n {
            out[i * n + k] = m[i][0] * v[k] + m[i][1] * v[n + k] + m[i][2] * v[2 * n + k];
        }
    }
}

/// The 2n pattern of Radau's real form of the complex matrix: J's pattern in both diagonal blocks and
/// the identity couplings.
fn complex_pattern(p: &SparsityPattern) -> SparsityPattern {
    let n = p.n();
    let mut entries = Vec::with_capacity(2 * p.nnz() + 2 * n);
    for j in 0..n {
        for &i in p.col_rows(j) {
            entries.push((i, j));
            entries.push((n + i, n + j));
        }
        entries.push((n + j, j));
        entries.push((j, n + j));
    }
    SparsityPattern::new(2 * n, entries).expect("inside 2n × 2n")
}

/// The sparsity pattern to factor with, or `None` for dense LU (see [`LinearSolverKind`]).
fn choose_pattern<M: OdeSystem>(
    problem: &OdeProblem<M>,
    kind: LinearSolverKind,
) -> Result<Option<SparsityPattern>, SolverError> {
    let n = problem.n_states();
    if kind == LinearSolverKind::Dense || (kind == LinearSolverKind::Auto && n < 64) {
        return Ok(None);
    }
    let pattern = match problem.model().jacobian_sparsity() {
        Some(entries) => {
            SparsityPattern::new(n, entries).map_err(|(i, j)| SolverError::DimensionMismatch {
                what: "jacobian_sparsity entry (row or column ≥ n)",
                expected: n,
                got: i.max(j),
            })?
        }
        None => problem.detected_pattern(|| detect_pattern(problem)).clone(),
    };
    let sparse_enough = pattern.nnz() * 10 <= n * n;
    Ok((kind == LinearSolverKind::Sparse || sparse_enough).then_some(pattern))
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

/// An accepted implicit step, as [`ImplicitIntegrator::step_accepted`] returns it: everything needed to
/// differentiate it.
#[derive(Debug)]
pub struct ImplicitStep<'s> {
    /// t_n.
    pub t: f64,
    /// The step size h (signed).
    pub h: f64,
    /// t_{n+1} (exactly a tstop when the step ends on one).
    pub t_next: f64,
    /// u_n.
    pub u: &'s [f64],
    /// u_{n+1} (= the last stage value: all schemes here are stiffly accurate).
    pub u_next: &'s [f64],
    /// ESDIRK: the stage derivatives K_i = f(t_n + c_i h, Y_i), row i for stage i (s × n). Radau: f(t_n,
    /// u_n) in the first row.
    pub stages: &'s [f64],
    /// The stage values Y_i (s × n; for ESDIRK Y_0 = u_n).
    pub stage_values: &'s [f64],
    /// The scheme.
    pub scheme: Scheme,
}

impl ImplicitStep<'_> {
    /// The time of stage i (t_{n+1} exactly for c_i = 1).
    pub fn stage_time(&self, i: usize) -> f64 {
        self.scheme.stage_time(i, self.t, self.h, self.t_next)
    }

    /// The stage value Y_i.
    pub fn stage_value(&self, i: usize) -> &[f64] {
        let n = self.u.len();
        &self.stage_values[i * n..(i + 1) * n]
    }
}

/// The state an [`ImplicitIntegrator`] restarts from bit for bit: the point, the first stage, the step
/// size and controller memory, and the Jacobian (its factorizations are recomputed from it).
#[derive(Debug, Clone, Default)]
pub struct ImplicitCheckpoint {
    t: f64,
    u: Vec<f64>,
    k0: Vec<f64>,
    jac: Vec<f64>,
    jac_fresh: bool,
    factored_hg: f64,
    h_abs: f64,
    controller: ControllerMemory,
    last_rejected: bool,
    next_stop: usize,
    steps: usize,
    /// Radau: the collocation polynomial (3n), then h of the complex factorization, h_old, faccon,
    /// theta, and the flags have_cont and first (as 0/1).
    radau: Vec<f64>,
}

impl ImplicitCheckpoint {
    /// Bytes of floating-point data held (state, first stage, Jacobian, controller memory).
    pub fn bytes(&self) -> usize {
        8 * (self.u.len() + self.k0.len() + self.jac.len() + self.radau.len() + 3)
            + std::mem::size_of::<ControllerMemory>()
    }
}

/// Step-by-step driver of an implicit method ([`Method::TrBdf2`](crate::Method::TrBdf2),
/// [`Method::Kvaerno5`](crate::Method::Kvaerno5), [`Method::RadauIIA5`](crate::Method::RadauIIA5)): the
/// same steps as [`crate::solve`] takes, one accepted step at a time, with checkpoints that replay bit for
/// bit — what the sensitivity crate differentiates.
///
/// Rejections (error test or Newton failure) happen inside [`ImplicitIntegrator::step_accepted`]. After
/// a step, [`ImplicitIntegrator::solve_iteration_matrix`] solves with the factorization of that step's
/// iteration matrix (J frozen at some earlier point).
pub struct ImplicitIntegrator<'a, M: OdeSystem> {
    s: Core<'a, M>,
    stops: Vec<f64>,
    next_stop: usize,
    dir: f64,
    fixed_step: Option<f64>,
    h_max: f64,
    max_steps: usize,
    steps: usize,
    /// The step-size controller (resolved), its memory, and k = the error estimate's order + 1.
    controller: Controller,
    memory: ControllerMemory,
    k_err: f64,
    h_abs: f64,
    last_rejected: bool,
    /// The ESDIRK FSAL copy K_s → K_0 is made when the next step starts, so the last step's stages stay
    /// readable.
    fsal_pending: bool,
    t_prev: f64,
    h_last: f64,
    /// Attempts in a row whose Newton iteration met a non-finite rhs value.
    non_finite_failures: usize,
}

impl<'a, M: OdeSystem> ImplicitIntegrator<'a, M> {
    /// Sets up the solve of `problem` (f at t0, J at t0, the initial step) with tstops `options.tstops`
    /// (the saving options are ignored).
    ///
    /// # Errors
    /// Invalid tolerances or times, an explicit method, `dense(true)`, a non-finite f(t0, u0).
    pub fn new(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        let n = problem.n_states();
        let mut atol = options.validated_atol(n)?;
        let mut rtol = options.rtol;
        let scheme = match (options.method, options.method.esdirk_tableau()) {
            (_, Some(tab)) => Scheme::Esdirk(tab),
            (crate::Method::RadauIIA5, None) => Scheme::Radau5,
            _ => {
                return Err(SolverError::UnsupportedMethod {
                    method: options.method,
                    operation: "the implicit step API (ImplicitIntegrator); use Integrator for \
                                explicit methods",
                });
            }
        };
        if scheme == Scheme::Radau5 {
            // RADAU5's tolerance map (its embedded estimate is of order 3).
            let mapped = 0.1 * rtol.max(1e-300).powf(2.0 / 3.0);
            let ratio = if rtol > 0.0 { mapped / rtol } else { 1.0 };
            atol.iter_mut().for_each(|a| *a *= ratio);
            rtol = mapped;
        }
        let (t0, t_end) = (problem.t0(), problem.t_end());
        let dir = (t_end - t0).signum();
        check_times("tstop", &options.tstops, t0, t_end, false)?;
        let mut stops: Vec<f64> = options.tstops.clone();
        stops.push(t_end);
        stops.sort_by(|a, b| (dir * a).total_cmp(&(dir * b)));
        stops.dedup();
        let stages = scheme.stages();
        let pattern = choose_pattern(problem, options.implicit.linear_solver)?;
        let (lu, lu2, colors) = match pattern {
            Some(pattern) => {
                let lu2 = (scheme == Scheme::Radau5)
                    .then(|| Lu::Sparse(Box::new(SparseLu::new(complex_pattern(&pattern)))));
                let colors = Some(pattern.column_colors());
                (Lu::Sparse(Box::new(SparseLu::new(pattern))), lu2, colors)
            }
            None => (
                Lu::Dense(DenseLu::new(n)),
                (scheme == Scheme::Radau5).then(|| Lu::Dense(DenseLu::new(2 * n))),
                None,
            ),
        };
        let radau = lu2.map(|lu2| {
            Box::new(RadauState {
                lu2,
                factored_h2: 0.0,
                z: vec![0.0; 3 * n],
                w: vec![0.0; 3 * n],
                f: vec![0.0; 3 * n],
                dw: vec![0.0; 3 * n],
                cont: vec![0.0; 3 * n],
                have_cont: false,
                h_old: 0.0,
                faccon: 1.0,
                theta: 1.0,
                newt: 0,
                newton_factor: 0.5,
                first: true,
                reject: false,
                fnewt: (10.0 * f64::EPSILON / rtol).max(0.03f64.min(rtol.sqrt())),
            })
        });
        let mut s = Core {
            scheme,
            problem,
            n,
            p: problem.params().to_vec(),
            atol,
            rtol,
            t: t0,
            u: problem.u0().to_vec(),
            k: vec![0.0; stages * n],
            ys: vec![0.0; stages * n],
            y: vec![0.0; n],
            u_new: vec![0.0; n],
            rhs: vec![0.0; n],
            delta: vec![0.0; n],
            err: vec![0.0; n],
            scale: vec![0.0; n],
            jac: vec![0.0; lu.len(n)],
            jac_fresh: false,
            factored_hg: 0.0,
            lu,
            colors,
            ud: vec![Dual64::from(0.0); n],
            pd: vec![Dual64::from(0.0); problem.model().n_params()],
            fd: vec![Dual64::from(0.0); n],
            stats: Statistics::default(),
            radau,
            non_finite: None,
            newton_last: 0,
            newton_rate: 0.0,
            newton: Newton {
                max_iterations: options
                    .implicit
                    .newton_max_iterations
                    .unwrap_or(match scheme {
                        Scheme::Esdirk(_) => NEWTON_MAX,
                        Scheme::Radau5 => RADAU_NIT,
                    }),
                kappa: options.implicit.newton_kappa,
                lu_reuse: options.implicit.lu_reuse,
                refresh_rate: options.implicit.jacobian_refresh_rate,
            },
        };
        let u = s.u.clone();
        let mut k1 = vec![0.0; n];
        s.f(t0, &u, &mut k1);
        if let Some(component) = k1.iter().position(|v| !v.is_finite()) {
            return Err(SolverError::NonFiniteRhs {
                t: t0,
                component,
                value: k1[component],
            });
        }
        s.k[..n].copy_from_slice(&k1);
        s.jacobian(t0);
        // Initial step: h0, or 0.01·‖u‖/‖f‖ bounded by the span (order-2 heuristic).
        let span = (t_end - t0).abs();
        let h_abs = match (options.fixed_step, options.h0) {
            (Some(h), _) | (None, Some(h)) => h,
            (None, None) => {
                for m in 0..n {
                    s.scale[m] = s.atol[m] + s.rtol * s.u[m].abs();
                }
                let (d0, d1) = (s.norm(&s.u), s.norm(&s.k[..n]));
                if d0 < 1e-5 || d1 < 1e-5 {
                    1e-6
                } else {
                    0.01 * d0 / d1
                }
            }
        }
        .min(span)
        .min(options.h_max);
        // k = the error estimate's order + 1 (Radau IIA5's estimate is of order 3).
        let k_err = match scheme {
            Scheme::Esdirk(tab) => f64::from(tab.order.min(tab.embedded_order) + 1),
            Scheme::Radau5 => 4.0,
        };
        let controller = options.controller.resolve(true);
        Ok(Self {
            k_err,
            controller,
            memory: controller.initial_memory(k_err),
            s,
            stops,
            next_stop: 0,
            dir,
            fixed_step: options.fixed_step,
            h_max: options.h_max,
            max_steps: options.max_steps,
            steps: 0,
            h_abs,
            last_rejected: false,
            fsal_pending: false,
            t_prev: t0,
            h_last: 0.0,
            non_finite_failures: 0,
        })
    }

    /// Whether the end of the span has been reached.
    pub fn is_finished(&self) -> bool {
        self.next_stop == self.stops.len()
    }

    /// Current time.
    pub fn t(&self) -> f64 {
        self.s.t
    }

    /// Current state.
    pub fn u(&self) -> &[f64] {
        &self.s.u
    }

    /// Counters so far.
    pub fn stats(&self) -> Statistics {
        self.s.stats
    }

    /// Radau: the collocation polynomial of the last accepted step (3 × n, radau5's divided-difference
    /// form), for dense output; `None` for ESDIRKs.
    pub(crate) fn collocation(&self) -> Option<&[f64]> {
        self.s.radau.as_ref().map(|r| &r.cont[..])
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.s.scheme
    }

    /// What the controller is told about an attempt with error norm `err` and step size `h`.
    fn feedback(&self, err: f64, h: f64) -> StepFeedback {
        let (newton_iterations, newton_max) = match self.s.radau.as_ref() {
            Some(r) => (r.newt, self.s.newton.max_iterations),
            None => (self.s.newton_last, 0),
        };
        StepFeedback {
            err,
            h: h.abs(),
            k: self.k_err,
            newton_iterations,
            newton_max,
            after_rejection: self.last_rejected,
        }
    }

    /// Takes one accepted step (retrying rejected attempts) and returns it.
    ///
    /// # Errors
    /// [`SolverError::AlreadyFinished`], [`SolverError::MaxStepsReached`] (attempts count),
    /// [`SolverError::SingularMatrix`], [`SolverError::NewtonFailed`] when Newton keeps failing with a
    /// fresh Jacobian as h shrinks to round-off level, [`SolverError::StepSizeTooSmall`].
    pub fn step_accepted(&mut self) -> Result<ImplicitStep<'_>, SolverError> {
        if self.is_finished() {
            return Err(SolverError::AlreadyFinished { t: self.s.t });
        }
        let (n, stages) = (self.s.n, self.s.scheme.stages());
        if self.fsal_pending {
            // FSAL: the last stage is f(t_{n+1}, u_{n+1}).
            self.s.k.copy_within((stages - 1) * n..stages * n, 0);
            self.fsal_pending = false;
        }
        let radau = self.s.scheme == Scheme::Radau5;
        let mut newton_failed = false;
        loop {
            if self.steps >= self.max_steps {
                return Err(SolverError::MaxStepsReached {
                    t: self.s.t,
                    max_steps: self.max_steps,
                });
            }
            let stop = self.stops[self.next_stop];
            let remaining = (stop - self.s.t).abs();
            let hits = self.h_abs >= remaining * (1.0 - 1e-12)
                || (self.fixed_step.is_some() && self.h_abs >= remaining * 0.99);
            let h = self.dir * if hits { remaining } else { self.h_abs };
            if h.abs() <= 16.0 * f64::EPSILON * self.s.t.abs().max(1.0) {
                if let (true, Some(e)) = (newton_failed, self.s.non_finite_error()) {
                    return Err(e);
                }
                return Err(if newton_failed {
                    SolverError::NewtonFailed { t: self.s.t, h }
                } else {
                    SolverError::StepSizeTooSmall { t: self.s.t, h }
                });
            }
            self.steps += 1;
            if let Some(r) = self.s.radau.as_mut() {
                r.reject = self.last_rejected;
            }
            let Some(err) = self.s.attempt(h)? else {
                // Newton failed: a fresh Jacobian first (Radau: and a smaller step), then smaller steps.
                self.s.stats.newton_failures += 1;
                self.s.stats.rejected_steps += 1;
                newton_failed = true;
                let fresh = self.s.jac_fresh;
                if let Some(e) = self.s.non_finite_error() {
                    // A model that returns NaN/∞: shrinking h helps only if the trial step was too
                    // large for it; a fixed step cannot shrink, and a run of such failures is the model's.
                    self.non_finite_failures += 1;
                    if self.fixed_step.is_some()
                        || self.non_finite_failures > MAX_NON_FINITE_FAILURES
                    {
                        return Err(e);
                    }
                }
                if self.fixed_step.is_some() && fresh {
                    return Err(SolverError::NewtonFailed { t: self.s.t, h });
                }
                if radau && self.fixed_step.is_none() {
                    let factor = self.s.radau.as_ref().map_or(0.5, |r| r.newton_factor);
                    self.h_abs = h.abs() * factor;
                } else if fresh {
                    self.h_abs = h.abs() * 0.5;
                }
                if !fresh {
                    let t = self.s.t;
                    self.s.jacobian(t);
                }
                self.last_rejected = true;
                continue;
            };
            newton_failed = false;
            if self.fixed_step.is_none() && err > 1.0 {
                self.s.stats.rejected_steps += 1;
                let feedback = self.feedback(err, h);
                self.h_abs = self.controller.rejected(&mut self.memory, &feedback);
                self.last_rejected = true;
                continue;
            }
            // Accept.
            self.non_finite_failures = 0;
            self.s.stats.accepted_steps += 1;
            self.t_prev = self.s.t;
            self.h_last = h;
            self.s.t = if hits { stop } else { self.s.t + h };
            std::mem::swap(&mut self.s.u, &mut self.s.u_new);
            self.s.jac_fresh = false;
            if hits {
                self.next_stop += 1;
            }
            let feedback = self.feedback(err, h);
            let h_new = self.controller.accepted(&mut self.memory, &feedback);
            if radau {
                self.accept_radau(h, h_new, hits);
            } else {
                self.fsal_pending = true;
                if self.s.newton_rate > self.s.newton.refresh_rate {
                    // Newton converged, but slowly: the Jacobian has gone stale. A fresh one at the new
                    // point now costs less than the Newton failure it would otherwise meet.
                    let t = self.s.t;
                    self.s.jacobian(t);
                }
                if self.fixed_step.is_none() {
                    // Keep the factorization when the step barely changes.
                    let q = h_new.min(self.h_max) / h.abs();
                    if !hits && (0.9..=1.2).contains(&q) {
                        self.h_abs = h.abs();
                    } else {
                        self.h_abs = h_new.min(self.h_max);
                    }
                }
            }
            self.last_rejected = false;
            return Ok(self.last_step());
        }
    }

    /// Radau after an accepted step (`h_new`: the controller's next |h|): the collocation polynomial for
    /// the next starting values, f at the new point, a new Jacobian unless Newton converged very fast
    /// (then the step size is kept too when it would grow by less than 20 %, so the LU is reused).
    fn accept_radau(&mut self, h: f64, h_new: f64, hits: bool) {
        let n = self.s.n;
        let mut r = self.s.radau.take().expect("Radau state");
        r.first = false;
        // The collocation polynomial through (0, 0), (c_i, Z_i), in radau5's divided-difference form.
        let (c1, c2) = (radau::C[0], radau::C[1]);
        for m in 0..n {
            let (z1, z2, z3) = (r.z[m], r.z[n + m], r.z[2 * n + m]);
            let ak1 = (z2 - z3) / (c2 - 1.0);
            let ak = (z1 - z2) / (c1 - c2);
            let acont3 = (ak - z1 / c1) / c2;
            let ak2 = (ak - ak1) / (c1 - 1.0);
            r.cont[m] = ak1;
            r.cont[n + m] = ak2;
            r.cont[2 * n + m] = ak2 - acont3;
        }
        r.have_cont = true;
        r.h_old = h;
        let theta = r.theta;
        self.s.radau = Some(r);
        let (t, u) = (self.s.t, std::mem::take(&mut self.s.u));
        let mut f0 = std::mem::take(&mut self.s.delta);
        self.s.f(t, &u, &mut f0);
        self.s.k[..n].copy_from_slice(&f0);
        self.s.delta = f0;
        self.s.u = u;
        if self.fixed_step.is_some() {
            if theta > RADAU_THET {
                self.s.jacobian(t);
            }
            return;
        }
        let h_new = h_new.min(self.h_max);
        let qt = h_new / h.abs();
        if theta <= RADAU_THET && (1.0..=1.2).contains(&qt) && !hits {
            self.h_abs = h.abs();
            return;
        }
        self.h_abs = h_new;
        if theta > RADAU_THET {
            self.s.jacobian(t);
        }
    }

    /// The last accepted step.
    pub(crate) fn last_step(&self) -> ImplicitStep<'_> {
        ImplicitStep {
            t: self.t_prev,
            h: self.h_last,
            t_next: self.s.t,
            u: &self.s.u_new,
            u_next: &self.s.u,
            stages: &self.s.k,
            stage_values: &self.s.ys,
            scheme: self.s.scheme,
        }
    }

    /// Solves M x = b in place with the factorization of the last accepted step's iteration matrix:
    /// ESDIRK M = I − hγJ (b of length n); Radau M = I − h(A ⊗ J) (b of length 3n, through the T transform
    /// and both factorizations). J is the frozen Jacobian the step used.
    pub fn solve_iteration_matrix(&mut self, b: &mut [f64]) {
        self.solve_with(b, false);
    }

    /// Solves Mᵀ x = b in place (see [`ImplicitIntegrator::solve_iteration_matrix`]).
    pub fn solve_iteration_matrix_transpose(&mut self, b: &mut [f64]) {
        self.solve_with(b, true);
    }

    fn solve_with(&mut self, b: &mut [f64], transpose: bool) {
        let s = &mut self.s;
        let Some(r) = s.radau.as_mut() else {
            if transpose {
                s.lu.solve_transpose_in_place(b);
            } else {
                s.lu.solve_in_place(b);
            }
            return;
        };
        // I − h(A ⊗ J) = (T ⊗ I)(hΛ⁻¹ ⊗ I)(Λ/h ⊗ I − I ⊗ J)(T⁻¹ ⊗ I), Λ = T⁻¹A⁻¹T.
        let n = s.n;
        let h = r.h_old;
        let (g, a, be) = (radau::GAMMA / h, radau::ALPHA / h, radau::BETA / h);
        let e1 = h / radau::GAMMA;
        let v = &mut r.dw;
        if !transpose {
            transform(&radau::TI, b, v, n);
            for m in 0..n {
                let (v2, v3) = (v[n + m], v[2 * n + m]);
                v[m] *= g;
                v[n + m] = a * v2 - be * v3;
                v[2 * n + m] = be * v2 + a * v3;
            }
            s.lu.solve_in_place(&mut v[..n]);
            v[..n].iter_mut().for_each(|x| *x *= e1);
            r.lu2.solve_in_place(&mut v[n..]);
            transform(&radau::T, v, b, n);
        } else {
            transform_t(&radau::T, b, v, n);
            s.lu.solve_transpose_in_place(&mut v[..n]);
            v[..n].iter_mut().for_each(|x| *x *= e1);
            r.lu2.solve_transpose_in_place(&mut v[n..]);
            for m in 0..n {
                let (v2, v3) = (v[n + m], v[2 * n + m]);
                v[m] *= g;
                v[n + m] = a * v2 + be * v3;
                v[2 * n + m] = -be * v2 + a * v3;
            }
            transform_t(&radau::TI, v, b, n);
        }
    }

    /// A checkpoint of the current point (before the next step).
    pub fn checkpoint(&self) -> ImplicitCheckpoint {
        let mut cp = ImplicitCheckpoint::default();
        self.checkpoint_into(&mut cp);
        cp
    }

    /// [`ImplicitIntegrator::checkpoint`] into an existing checkpoint, reusing its buffers.
    pub fn checkpoint_into(&self, cp: &mut ImplicitCheckpoint) {
        let (n, stages) = (self.s.n, self.s.scheme.stages());
        let first = if self.fsal_pending { stages - 1 } else { 0 };
        cp.t = self.s.t;
        cp.u.clone_from(&self.s.u);
        cp.k0.clear();
        cp.k0
            .extend_from_slice(&self.s.k[first * n..(first + 1) * n]);
        cp.jac.clone_from(&self.s.jac);
        cp.jac_fresh = self.s.jac_fresh;
        cp.factored_hg = self.s.factored_hg;
        cp.h_abs = self.h_abs;
        cp.controller = self.memory;
        cp.last_rejected = self.last_rejected;
        cp.next_stop = self.next_stop;
        cp.steps = self.steps;
        cp.radau.clear();
        if let Some(r) = self.s.radau.as_ref() {
            cp.radau.extend_from_slice(&r.cont);
            cp.radau.extend_from_slice(&[
                r.factored_h2,
                r.h_old,
                r.faccon,
                r.theta,
                f64::from(u8::from(r.have_cont)),
                f64::from(u8::from(r.first)),
            ]);
        }
    }

    /// Restores a checkpoint taken from an integrator of the same problem and options: the following
    /// steps are bit-for-bit those taken after the checkpoint.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a checkpoint of another size; [`SolverError::SingularMatrix`]
    /// if refactoring fails (it did not when the checkpoint was taken).
    pub fn restore(&mut self, cp: &ImplicitCheckpoint) -> Result<(), SolverError> {
        let n = self.s.n;
        let radau_len = if self.s.radau.is_some() { 3 * n + 6 } else { 0 };
        if cp.u.len() != n || cp.jac.len() != self.s.jac.len() || cp.radau.len() != radau_len {
            return Err(SolverError::DimensionMismatch {
                what: "implicit checkpoint state",
                expected: n,
                got: cp.u.len(),
            });
        }
        self.s.t = cp.t;
        self.s.u.copy_from_slice(&cp.u);
        self.s.k[..n].copy_from_slice(&cp.k0);
        self.s.jac.copy_from_slice(&cp.jac);
        self.s.jac_fresh = cp.jac_fresh;
        self.h_abs = cp.h_abs;
        self.memory = cp.controller;
        self.last_rejected = cp.last_rejected;
        self.next_stop = cp.next_stop;
        self.steps = cp.steps;
        self.fsal_pending = false;
        // The factorizations the next step will use (the same J and h give the same LU bits).
        self.s.factored_hg = 0.0;
        if cp.factored_hg != 0.0 {
            self.s.refactor(cp.factored_hg, cp.h_abs)?;
        }
        if let Some(r) = self.s.radau.as_mut() {
            let x = &cp.radau[3 * n..];
            r.cont.copy_from_slice(&cp.radau[..3 * n]);
            r.factored_h2 = 0.0;
            r.h_old = x[1];
            r.faccon = x[2];
            r.theta = x[3];
            r.have_cont = x[4] != 0.0;
            r.first = x[5] != 0.0;
            if x[0] != 0.0 {
                self.s.refactor_complex(x[0])?;
            }
        }
        Ok(())
    }
}

/// out_j = Σ_i M_ij v_i (Mᵀ) for 3 blocks of n.
fn transform_t(m: &[[f64; 3]; 3], v: &[f64], out: &mut [f64], n: usize) {
    for j in 0..3 {
        for k in 0..n {
            out[j * n + k] = m[0][j] * v[k] + m[1][j] * v[n + k] + m[2][j] * v[2 * n + k];
        }
    }
}

impl crate::stepper::StepStages for ImplicitStep<'_> {
    fn t(&self) -> f64 {
        self.t
    }
    fn h(&self) -> f64 {
        self.h
    }
    fn t_next(&self) -> f64 {
        self.t_next
    }
    fn u(&self) -> &[f64] {
        self.u
    }
    fn u_next(&self) -> &[f64] {
        self.u_next
    }
    fn stages(&self) -> usize {
        self.scheme.stages()
    }
    fn stage_time(&self, i: usize) -> f64 {
        ImplicitStep::stage_time(self, i)
    }
    fn stage_value(&self, i: usize) -> &[f64] {
        ImplicitStep::stage_value(self, i)
    }
    fn weight(&self, i: usize) -> f64 {
        self.scheme.weight(i)
    }
}

impl<M: OdeSystem> crate::stepper::Stepper for ImplicitIntegrator<'_, M> {
    type Checkpoint = ImplicitCheckpoint;
    type Step<'s>
        = ImplicitStep<'s>
    where
        Self: 's;

    fn t(&self) -> f64 {
        ImplicitIntegrator::t(self)
    }
    fn u(&self) -> &[f64] {
        ImplicitIntegrator::u(self)
    }
    fn is_finished(&self) -> bool {
        ImplicitIntegrator::is_finished(self)
    }
    fn stats(&self) -> Statistics {
        ImplicitIntegrator::stats(self)
    }
    fn step_accepted(&mut self) -> Result<ImplicitStep<'_>, SolverError> {
        ImplicitIntegrator::step_accepted(self)
    }
    fn checkpoint_into(&self, cp: &mut ImplicitCheckpoint) {
        ImplicitIntegrator::checkpoint_into(self, cp)
    }
    fn restore(&mut self, cp: &ImplicitCheckpoint) -> Result<(), SolverError> {
        ImplicitIntegrator::restore(self, cp)
    }
    fn checkpoint_bytes(cp: &ImplicitCheckpoint) -> usize {
        cp.bytes()
    }
}
