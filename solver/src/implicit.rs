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

use crate::error::SolverError;
use crate::integrator::check_times;
use crate::linalg::{DenseLu, LinearSolver, Lu, SparseLu, SparsityPattern};
use crate::options::{LinearSolverKind, Saving, SolverOptions};
use crate::problem::OdeProblem;
use crate::solution::{Solution, Statistics};
use crate::system::OdeSystem;
use ndarray::{Array1, Array2, ArrayView1, ArrayViewMut1};
use num_dual::Dual64;

/// An ESDIRK pair: explicit first stage, the same diagonal γ on every implicit stage (one iteration
/// matrix I − hγJ for all of them), stiffly accurate (b = the last row of A).
#[derive(Debug)]
pub struct EsdirkTableau {
    /// Name.
    pub name: &'static str,
    /// Order of the solution.
    pub order: u32,
    /// Order of the embedded solution.
    pub embedded_order: u32,
    /// The diagonal γ.
    pub gamma: f64,
    /// Nodes c_i.
    pub c: &'static [f64],
    /// Strictly lower part of A, row i has i entries (the diagonal is γ for i ≥ 1, 0 for i = 0).
    pub a: &'static [&'static [f64]],
    /// Weights b (= last row of A with γ).
    pub b: &'static [f64],
    /// Embedded weights b̂.
    pub bhat: &'static [f64],
}

const TRBDF2_G: f64 = 2.0 - std::f64::consts::SQRT_2;
const TRBDF2_D: f64 = TRBDF2_G / 2.0;
const TRBDF2_W: f64 = std::f64::consts::SQRT_2 / 4.0;

/// TR-BDF2 as an ESDIRK pair (Hosea & Shampine 1996): γ = d = (2 − √2)/2, w = √2/4.
pub static TRBDF2: EsdirkTableau = EsdirkTableau {
    name: "TRBDF2",
    order: 2,
    embedded_order: 3,
    gamma: TRBDF2_D,
    c: &[0.0, TRBDF2_G, 1.0],
    a: &[&[], &[TRBDF2_D], &[TRBDF2_W, TRBDF2_W]],
    b: &[TRBDF2_W, TRBDF2_W, TRBDF2_D],
    bhat: &[
        (1.0 - TRBDF2_W) / 3.0,
        (3.0 * TRBDF2_W + 1.0) / 3.0,
        TRBDF2_D / 3.0,
    ],
};

/// Kværnø's ESDIRK 5(4), 7 stages, γ = 0.26, L-stable and stiffly accurate, the embedded solution being
/// stage 6 (A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit first stage",
/// BIT 44 (2004) 489–502; coefficients as in OrdinaryDiffEq.jl's `Kvaerno5Tableau` and diffrax).
pub static KVAERNO5: EsdirkTableau = EsdirkTableau {
    name: "Kvaerno5",
    order: 5,
    embedded_order: 4,
    gamma: 0.26,
    c: &[
        0.0,
        0.52,
        1.230333209967908,
        0.8957659843500759,
        0.43639360985864756,
        1.0,
        1.0,
    ],
    a: &[
        &[],
        &[0.26],
        &[0.13, 0.84033320996790809],
        &[
            0.22371961478320505,
            0.47675532319799699,
            -0.06470895363112615,
        ],
        &[
            0.16648564323248321,
            0.10450018841591720,
            0.03631482272098715,
            -0.13090704451073998,
        ],
        &[
            0.13855640231268224,
            0.0,
            -0.04245337201752043,
            0.02446657898003141,
            0.61943039072480676,
        ],
        &[
            0.13659751177640291,
            0.0,
            -0.05496908796538376,
            -0.04118626728321046,
            0.62993304899016403,
            0.06962479448202728,
        ],
    ],
    b: &[
        0.13659751177640291,
        0.0,
        -0.05496908796538376,
        -0.04118626728321046,
        0.62993304899016403,
        0.06962479448202728,
        0.26,
    ],
    bhat: &[
        0.13855640231268224,
        0.0,
        -0.04245337201752043,
        0.02446657898003141,
        0.61943039072480676,
        0.26,
        0.0,
    ],
};

const NEWTON_MAX: usize = 8;
const KAPPA: f64 = 0.03;
/// Relative change of hγ up to which the iteration matrix's factorization is kept.
const LU_REUSE: f64 = 0.3;

/// Working state of an ESDIRK solve: the current point, the stages of the last attempt, the Jacobian and
/// its factorization.
struct Esdirk<'a, M: OdeSystem> {
    tab: &'static EsdirkTableau,
    problem: &'a OdeProblem<M>,
    n: usize,
    p: Vec<f64>,
    atol: Vec<f64>,
    rtol: f64,
    t: f64,
    u: Vec<f64>,
    /// Stage derivatives K_i, s × n; K_0 = f(t_n, u_n) (FSAL: the last stage of the previous step).
    k: Vec<f64>,
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
    /// hγ of the current factorization (0: none).
    factored_hg: f64,
    lu: Lu,
    /// Colour of each column and the number of colours (sparse Jacobians).
    colors: Option<(Vec<usize>, usize)>,
    ud: Vec<Dual64>,
    pd: Vec<Dual64>,
    fd: Vec<Dual64>,
    stats: Statistics,
}

impl<M: OdeSystem> Esdirk<'_, M> {
    fn f(&mut self, t: f64, u: &[f64], out: &mut [f64]) {
        self.problem.model().rhs(
            t,
            ArrayView1::from(u),
            ArrayView1::from(&self.p[..]),
            ArrayViewMut1::from(out),
        );
        self.stats.rhs_evaluations += 1;
    }

    /// J at (t, u) by n forward-mode passes (dense), or one per colour (sparse).
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
            self.stats.jacobian_evaluations += 1;
            self.jac_fresh = true;
            self.factored_hg = 0.0;
            return;
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
        self.factored_hg = 0.0;
    }

    /// Factors M = I − hγ J, unless the current factorization is for a hγ within [`LU_REUSE`] of this
    /// one: simplified Newton converges with a slightly stale hγ too (as in CVODE), and a sparse LU costs
    /// far more than the extra iteration it may take.
    fn factor(&mut self, hg: f64, h: f64) -> Result<(), SolverError> {
        if self.factored_hg != 0.0 && (hg / self.factored_hg - 1.0).abs() <= LU_REUSE {
            return Ok(());
        }
        self.refactor(hg, h)
    }

    /// Factors M = I − hγ J.
    fn refactor(&mut self, hg: f64, h: f64) -> Result<(), SolverError> {
        let jac = &self.jac;
        let result = self.lu.factor(&mut |i, j, k| {
            let identity = if i == j { 1.0 } else { 0.0 };
            identity - hg * jac[k]
        });
        self.stats.factorizations += 1;
        match result {
            Ok(()) => {
                self.factored_hg = hg;
                Ok(())
            }
            Err(pivot) => {
                self.factored_hg = 0.0;
                Err(SolverError::SingularMatrix {
                    t: self.t,
                    h,
                    pivot,
                })
            }
        }
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

    /// Solves Y − hγ f(t, Y) = rhs for stage `i` (initial guess in `y`), writing f(t, Y) into K_i.
    /// Returns whether Newton converged.
    fn newton(&mut self, t: f64, hg: f64, i: usize) -> bool {
        let n = self.n;
        let mut y = std::mem::take(&mut self.y);
        let mut k = std::mem::take(&mut self.k);
        let ki = i * n..(i + 1) * n;
        let mut prev = f64::INFINITY;
        let mut converged = false;
        for iteration in 0..NEWTON_MAX {
            self.f(t, &y, &mut k[ki.clone()]);
            self.stats.newton_iterations += 1;
            if k[ki.clone()].iter().any(|v| !v.is_finite()) {
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
            // K_i from the stage equation, (Y_i − rhs)/(hγ), not f(Y_i): f would multiply the Newton
            // residual's stiff components by ‖hγJ‖ (Hairer & Wanner II, §IV.8).
            for m in 0..n {
                k[i * n + m] = (y[m] - self.rhs[m]) / hg;
            }
        }
        self.y = y;
        self.k = k;
        converged
    }

    /// One step attempt of size h: Ok(Some(err)) with the scaled error norm, Ok(None) if Newton failed.
    fn attempt(&mut self, h: f64) -> Result<Option<f64>, SolverError> {
        let (n, tab) = (self.n, self.tab);
        let hg = h * tab.gamma;
        self.factor(hg, h)?;
        for m in 0..n {
            self.scale[m] = self.atol[m] + self.rtol * self.u[m].abs();
        }
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
        None => detect_pattern(problem),
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
/// differentiate it (the stage derivatives K_i, from which the stage values follow).
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
    /// u_{n+1} = Y_s.
    pub u_next: &'s [f64],
    /// K_i = f(t_n + c_i h, Y_i), row i for stage i (s × n).
    pub stages: &'s [f64],
    /// The method.
    pub tableau: &'static EsdirkTableau,
}

impl ImplicitStep<'_> {
    /// The time of stage i (t_{n+1} exactly for c_i = 1).
    pub fn stage_time(&self, i: usize) -> f64 {
        let c = self.tableau.c[i];
        if c == 1.0 {
            self.t_next
        } else {
            self.t + c * self.h
        }
    }

    /// The stage value Y_i = u_n + h Σ_{j<i} a_ij K_j + hγ K_i into `out` (Y_0 = u_n, Y_s = u_{n+1}).
    pub fn stage_value(&self, i: usize, out: &mut [f64]) {
        let (tab, n, h) = (self.tableau, self.u.len(), self.h);
        if i == 0 {
            out.copy_from_slice(self.u);
            return;
        }
        if i + 1 == tab.c.len() {
            out.copy_from_slice(self.u_next);
            return;
        }
        for m in 0..n {
            let mut acc = tab.gamma * self.stages[i * n + m];
            for (j, &a) in tab.a[i].iter().enumerate() {
                acc += a * self.stages[j * n + m];
            }
            out[m] = self.u[m] + h * acc;
        }
    }
}

/// The state an [`ImplicitIntegrator`] restarts from bit for bit: the point, the first stage, the step
/// size and controller memory, and the Jacobian (its factorization is recomputed from it).
#[derive(Debug, Clone, Default)]
pub struct ImplicitCheckpoint {
    t: f64,
    u: Vec<f64>,
    k0: Vec<f64>,
    jac: Vec<f64>,
    jac_fresh: bool,
    factored_hg: f64,
    h_abs: f64,
    last_rejected: bool,
    next_stop: usize,
    steps: usize,
}

impl ImplicitCheckpoint {
    /// Bytes of floating-point data held (state, first stage, Jacobian, scalars).
    pub fn bytes(&self) -> usize {
        8 * (self.u.len() + self.k0.len() + self.jac.len() + 5)
    }
}

/// Step-by-step driver of an implicit method ([`Method::TrBdf2`](crate::Method::TrBdf2),
/// [`Method::Kvaerno5`](crate::Method::Kvaerno5)): the same steps as [`crate::solve`] takes, one accepted
/// step at a time, with checkpoints that replay bit for bit — what the sensitivity crate differentiates.
///
/// Rejections (error test or Newton failure) happen inside [`ImplicitIntegrator::step_accepted`]. After
/// a step, [`ImplicitIntegrator::solve_iteration_matrix`] solves with the factorization of that step's
/// iteration matrix M = I − hγJ (J frozen at some earlier point).
pub struct ImplicitIntegrator<'a, M: OdeSystem> {
    s: Esdirk<'a, M>,
    stops: Vec<f64>,
    next_stop: usize,
    dir: f64,
    fixed_step: Option<f64>,
    h_max: f64,
    max_steps: usize,
    steps: usize,
    exponent: f64,
    h_abs: f64,
    last_rejected: bool,
    /// The FSAL copy K_s → K_0 is made when the next step starts, so the last step's stages stay readable.
    fsal_pending: bool,
    t_prev: f64,
    h_last: f64,
}

impl<'a, M: OdeSystem> ImplicitIntegrator<'a, M> {
    /// Sets up the solve of `problem` (f at t0, J at t0, the initial step) with tstops `options.tstops`
    /// (the saving options are ignored).
    ///
    /// # Errors
    /// Invalid tolerances or times, an explicit method, `dense(true)`, a non-finite f(t0, u0).
    pub fn new(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        Self::with_stops(problem, options, &[])
    }

    fn with_stops(
        problem: &'a OdeProblem<M>,
        options: &SolverOptions,
        extra_stops: &[f64],
    ) -> Result<Self, SolverError> {
        let n = problem.n_states();
        let atol = options.validated_atol(n)?;
        let Some(tab) = options.method.esdirk_tableau() else {
            return Err(SolverError::InvalidOption {
                name: "method (explicit) for the implicit step API",
                value: f64::NAN,
                valid: "an implicit method (TrBdf2, Kvaerno5)",
            });
        };
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
        stops.extend(extra_stops.iter().copied().filter(|&t| t != t0));
        stops.push(t_end);
        stops.sort_by(|a, b| (dir * a).total_cmp(&(dir * b)));
        stops.dedup();
        let stages = tab.c.len();
        let mut s = Esdirk {
            tab,
            problem,
            n,
            p: problem.params().to_vec(),
            atol,
            rtol: options.rtol,
            t: t0,
            u: problem.u0().to_vec(),
            k: vec![0.0; stages * n],
            y: vec![0.0; n],
            u_new: vec![0.0; n],
            rhs: vec![0.0; n],
            delta: vec![0.0; n],
            err: vec![0.0; n],
            scale: vec![0.0; n],
            jac: Vec::new(),
            jac_fresh: false,
            factored_hg: 0.0,
            lu: Lu::Dense(DenseLu::new(0)),
            colors: None,
            ud: vec![Dual64::from(0.0); n],
            pd: vec![Dual64::from(0.0); problem.model().n_params()],
            fd: vec![Dual64::from(0.0); n],
            stats: Statistics::default(),
        };
        s.lu = match choose_pattern(problem, options.linear_solver)? {
            Some(pattern) => {
                s.colors = Some(pattern.column_colors());
                Lu::Sparse(Box::new(SparseLu::new(pattern)))
            }
            None => Lu::Dense(DenseLu::new(n)),
        };
        s.jac = vec![0.0; s.lu.len(n)];
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
        Ok(Self {
            exponent: -1.0 / f64::from(tab.order.min(tab.embedded_order) + 1),
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

    /// The method's tableau.
    pub fn tableau(&self) -> &'static EsdirkTableau {
        self.s.tab
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
        let (n, stages) = (self.s.n, self.s.tab.c.len());
        if self.fsal_pending {
            // FSAL: the last stage is f(t_{n+1}, u_{n+1}).
            self.s.k.copy_within((stages - 1) * n..stages * n, 0);
            self.fsal_pending = false;
        }
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
                return Err(if newton_failed {
                    SolverError::NewtonFailed { t: self.s.t, h }
                } else {
                    SolverError::StepSizeTooSmall { t: self.s.t, h }
                });
            }
            self.steps += 1;
            let Some(err) = self.s.attempt(h)? else {
                // Newton failed: a fresh Jacobian first, then a smaller step.
                self.s.stats.newton_failures += 1;
                self.s.stats.rejected_steps += 1;
                newton_failed = true;
                if !self.s.jac_fresh {
                    let t = self.s.t;
                    self.s.jacobian(t);
                } else if self.fixed_step.is_some() {
                    return Err(SolverError::NewtonFailed { t: self.s.t, h });
                } else {
                    self.h_abs = h.abs() * 0.5;
                }
                self.last_rejected = true;
                continue;
            };
            newton_failed = false;
            if self.fixed_step.is_none() && err > 1.0 {
                self.s.stats.rejected_steps += 1;
                self.h_abs = h.abs() * (0.9 * err.powf(self.exponent)).max(0.2);
                self.last_rejected = true;
                continue;
            }
            // Accept.
            self.s.stats.accepted_steps += 1;
            self.t_prev = self.s.t;
            self.h_last = h;
            self.s.t = if hits { stop } else { self.s.t + h };
            std::mem::swap(&mut self.s.u, &mut self.s.u_new);
            self.fsal_pending = true;
            self.s.jac_fresh = false;
            if hits {
                self.next_stop += 1;
            }
            if self.fixed_step.is_none() {
                let growth = if self.last_rejected { 1.0 } else { 5.0 };
                let q = (0.9 * err.max(1e-10).powf(self.exponent)).clamp(0.2, growth);
                // Keep the factorization when the step barely changes.
                if !hits && (0.9..=1.2).contains(&q) {
                    self.h_abs = h.abs();
                } else {
                    self.h_abs = (h.abs() * q).min(self.h_max);
                }
            }
            self.last_rejected = false;
            return Ok(self.last_step());
        }
    }

    /// The last accepted step.
    fn last_step(&self) -> ImplicitStep<'_> {
        ImplicitStep {
            t: self.t_prev,
            h: self.h_last,
            t_next: self.s.t,
            u: &self.s.u_new,
            u_next: &self.s.u,
            stages: &self.s.k,
            tableau: self.s.tab,
        }
    }

    /// Solves M x = b in place with the factorization of the last accepted step's iteration matrix
    /// M = I − hγJ (J: the frozen Jacobian it was built from).
    pub fn solve_iteration_matrix(&mut self, b: &mut [f64]) {
        self.s.lu.solve_in_place(b);
    }

    /// Solves Mᵀ x = b in place (see [`ImplicitIntegrator::solve_iteration_matrix`]).
    pub fn solve_iteration_matrix_transpose(&mut self, b: &mut [f64]) {
        self.s.lu.solve_transpose_in_place(b);
    }

    /// A checkpoint of the current point (before the next step).
    pub fn checkpoint(&self) -> ImplicitCheckpoint {
        let mut cp = ImplicitCheckpoint::default();
        self.checkpoint_into(&mut cp);
        cp
    }

    /// [`ImplicitIntegrator::checkpoint`] into an existing checkpoint, reusing its buffers.
    pub fn checkpoint_into(&self, cp: &mut ImplicitCheckpoint) {
        let (n, stages) = (self.s.n, self.s.tab.c.len());
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
        cp.last_rejected = self.last_rejected;
        cp.next_stop = self.next_stop;
        cp.steps = self.steps;
    }

    /// Restores a checkpoint taken from an integrator of the same problem and options: the following
    /// steps are bit-for-bit those taken after the checkpoint.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a checkpoint of another size; [`SolverError::SingularMatrix`]
    /// if refactoring fails (it did not when the checkpoint was taken).
    pub fn restore(&mut self, cp: &ImplicitCheckpoint) -> Result<(), SolverError> {
        let n = self.s.n;
        if cp.u.len() != n || cp.jac.len() != self.s.jac.len() {
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
        // The factorization the next step will use (the same J and hγ give the same LU bits).
        self.s.factored_hg = 0.0;
        if cp.factored_hg != 0.0 {
            self.s.refactor(cp.factored_hg, cp.h_abs)?;
        }
        self.h_abs = cp.h_abs;
        self.last_rejected = cp.last_rejected;
        self.next_stop = cp.next_stop;
        self.steps = cp.steps;
        self.fsal_pending = false;
        Ok(())
    }
}

/// Solves `problem` with an implicit method ([`Method::TrBdf2`], [`Method::Kvaerno5`]); called by
/// [`crate::solve`].
///
/// Supported options: tolerances, `h0`, `h_max`, `max_steps`, `tstops`, saving every step, at the end,
/// or at `save_at` times (made tstops: exact step values, no interpolation), `fixed_step`. Not yet:
/// `dense(true)`.
///
/// # Errors
/// As [`crate::solve`]; [`SolverError::SingularMatrix`] when the iteration matrix I − hγJ is singular
/// (naming t and h); [`SolverError::NewtonFailed`] when Newton keeps failing as h shrinks;
/// [`SolverError::InvalidOption`] for `dense(true)`.
pub(crate) fn solve_implicit<M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
) -> Result<Solution, SolverError> {
    let n = problem.n_states();
    let (t0, t_end) = (problem.t0(), problem.t_end());
    let save_at: Vec<f64> = match &options.saving {
        Saving::At(times) => {
            check_times("save_at", times, t0, t_end, true)?;
            times.clone()
        }
        _ => Vec::new(),
    };
    let mut it = ImplicitIntegrator::with_stops(problem, options, &save_at)?;
    let mut times = Vec::new();
    let mut states = Vec::new();
    let save_every = matches!(options.saving, Saving::EveryStep);
    let mut next_save = 0;
    if save_every || save_at.first() == Some(&t0) {
        times.push(t0);
        states.extend_from_slice(it.u());
        next_save = usize::from(save_at.first() == Some(&t0));
    }
    while !it.is_finished() {
        let t_next = it.step_accepted()?.t_next;
        let at_save = save_at.get(next_save) == Some(&t_next);
        if at_save {
            next_save += 1;
        }
        if save_every || at_save || (it.is_finished() && matches!(options.saving, Saving::EndOnly))
        {
            times.push(t_next);
            states.extend_from_slice(it.u());
        }
    }
    let rows = times.len();
    Ok(Solution {
        method: options.method,
        times: Array1::from(times),
        states: Array2::from_shape_vec((rows, n), states).expect("rows × n values"),
        u_end: Array1::from(it.u().to_vec()),
        stats: it.stats(),
        t0,
        t_end,
        dense: None,
    })
}
