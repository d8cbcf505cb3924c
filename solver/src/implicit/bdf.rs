//! Variable-step, variable-order BDF and NDF, orders 1–5: the quasi-constant step-size form of
//! Shampine & Reichelt's ode15s (L. F. Shampine and M. W. Reichelt, "The MATLAB ODE Suite", SIAM J.
//! Sci. Comput. 18 (1997) 1–22, §2), as SciPy's `BDF` also implements it.
//!
//! The solution is carried as backward differences on a uniform grid of the current step h:
//! D_0 = y_n, D_j = ∇^j y_n (j = 1 … k + 2, k the order). A step to t_{n+1} = t_n + h predicts
//! y⁽⁰⁾ = Σ_{j=0}^{k} D_j and solves the corrector of the NDF of order k (BDF: κ_k = 0),
//!
//! (1 − κ_k) γ_k (y_{n+1} − y⁽⁰⁾) + Σ_{j=1}^{k} γ_j D_j = h f(t_{n+1}, y_{n+1}),  γ_j = Σ_{i=1}^{j} 1/i,
//!
//! by simplified Newton with the iteration matrix I − c J, c = h / ((1 − κ_k) γ_k), J an old Jacobian
//! (refreshed only when Newton fails with a stale one). The local error is estimated as
//! (κ_k γ_k + 1/(k+1)) ∇^{k+1} y_{n+1}. After k + 1 steps of equal size the order may move to k ± 1,
//! whichever allows the largest next step; the step then grows at most 2×, and changes only when the
//! order does or the factor leaves (0.9, 2) (as diffsol's BDF). A step-size change interpolates the
//! differences to the new grid (D ← (R U)ᵀ D, Shampine & Reichelt eq. (2.5)). The continuous extension on [t_n, t_{n+1}] is the
//! interpolating polynomial through y_{n+1}, y_n, …: y(t) = D_0 + Σ_{j=1}^{k} D_j Π_{m=0}^{j−1} (t −
//! t_{n+1} + m h) / ((m + 1) h).

use ndarray::{ArrayView1, ArrayViewMut1};

use super::jacobian::{JacobianEvaluator, choose_pattern};
use super::krylov_newton::KrylovNewton;
use super::{factor_shifted, singular};
use crate::control::Controller;
use crate::error::SolverError;
use crate::linalg::{DenseLu, LinearSolver, Lu, SparseLu, SparsityPattern};
use crate::options::{LinearSolverKind, SolverOptions};
use crate::problem::OdeProblem;
use crate::schedule::{Landing, Refusal, Schedule};
use crate::solution::{DenseKind, DenseOutput, Statistics};
use crate::stepper::{StepStages, Stepper};
use crate::system::OdeSystem;
use crate::tableau::Method;

/// The highest order.
pub const MAX_ORDER: usize = crate::tableau::BDF_MAX_ORDER;
/// Rows of the difference array: D_0 … D_{MAX_ORDER + 2}.
const ROWS: usize = MAX_ORDER + 3;
/// Newton iterations per attempt (ode15s: 4).
const NEWTON_MAXITER: usize = 4;
/// The smallest step-size factor after a rejection.
const MIN_FACTOR: f64 = 0.2;
/// Accepted steps after which the iteration matrix is refactored, and the Jacobian re-evaluated
/// (CVODE's MSBP = 20 and MSBJ = 50).
const MAX_STEPS_PER_FACTORIZATION: usize = 20;
const MAX_STEPS_PER_JACOBIAN: usize = 50;
/// After an accepted step the step size changes by a factor within [1/2, 2], and only when the
/// order changes or the factor leaves the band (0.9, 2): the step is kept otherwise, so the
/// differences stay on one grid and the factorization stays valid (diffsol's BDF; CVODE keeps h
/// unless it can grow by 1.5). With the growth capped at 10 and no band (SciPy's rule), Robertson
/// at rtol 1e-8 ended 22 local tolerances from the reference in 693 steps and 1,460 rhs
/// evaluations; with this rule 10.6 in 818 steps and 1,342.
const MAX_FACTOR: f64 = 2.0;
const KEEP_BAND: (f64, f64) = (0.9, 2.0);
const MIN_ACCEPTED_FACTOR: f64 = 0.5;
/// The NDF shifts κ_k of Shampine & Reichelt (1997), Table 1 (κ_5 = 0: the order-5 NDF is not more
/// efficient than BDF5 at equal stability).
const NDF_KAPPA: [f64; MAX_ORDER + 1] = [0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0];

/// A linear map of the differences D_0 … D_k: new D_j = Σ_i W_ij D_i (identity outside the order's
/// block).
pub type DifferenceMap = [[f64; MAX_ORDER + 1]; MAX_ORDER + 1];

/// The identity [`DifferenceMap`].
const IDENTITY: DifferenceMap = {
    let mut w = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
    let mut i = 0;
    while i <= MAX_ORDER {
        w[i][i] = 1.0;
        i += 1;
    }
    w
};

/// γ_k, α_k = (1 − κ_k) γ_k and the error constants κ_k γ_k + 1/(k + 1), k = 0 … 5.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    gamma: [f64; MAX_ORDER + 1],
    alpha: [f64; MAX_ORDER + 1],
    error_const: [f64; MAX_ORDER + 1],
}

impl Coefficients {
    fn new(kappa: &[f64; MAX_ORDER + 1]) -> Self {
        let mut gamma = [0.0; MAX_ORDER + 1];
        for k in 1..=MAX_ORDER {
            gamma[k] = gamma[k - 1] + 1.0 / k as f64;
        }
        let mut alpha = [0.0; MAX_ORDER + 1];
        let mut error_const = [0.0; MAX_ORDER + 1];
        for k in 0..=MAX_ORDER {
            alpha[k] = (1.0 - kappa[k]) * gamma[k];
            error_const[k] = kappa[k] * gamma[k] + 1.0 / (k + 1) as f64;
        }
        Self {
            gamma,
            alpha,
            error_const,
        }
    }
}

/// R(k, ρ) of Shampine & Reichelt eq. (2.5): R_{0j} = 1, R_{ij} = Π_{m=1}^{i} (m − 1 − ρ j)/m
/// (i, j = 0 … k), into the top-left (k+1) × (k+1) block of `r`.
fn compute_r(order: usize, factor: f64, r: &mut [[f64; MAX_ORDER + 1]; MAX_ORDER + 1]) {
    for j in 0..=order {
        r[0][j] = 1.0;
    }
    for i in 1..=order {
        r[i][0] = 0.0;
        for j in 1..=order {
            r[i][j] = r[i - 1][j] * ((i - 1) as f64 - factor * j as f64) / i as f64;
        }
    }
}

/// The state a [`BdfIntegrator`] restarts from bit for bit: t, the differences, the order and step
/// size, the Jacobian and the step size its factorization was made for.
#[derive(Debug, Clone, Default)]
pub struct BdfCheckpoint {
    t: f64,
    h_abs: f64,
    order: usize,
    n_equal_steps: usize,
    /// D_0 … D_{k+2} (the rows the next step reads).
    d: Vec<f64>,
    jac: Vec<f64>,
    /// GMRES path: the Jacobian's point (t, then u), where the preconditioner is set up.
    jac_point: Vec<f64>,
    jac_current: bool,
    jac_valid: bool,
    factored_c: f64,
    newton_rate: f64,
    steps_since_lu: usize,
    steps_since_jac: usize,
    next_stop: usize,
    attempts: usize,
    pending: DifferenceMap,
    start: Option<f64>,
}

impl BdfCheckpoint {
    /// Bytes the checkpoint occupies (the struct and its vectors' capacities).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 8 * (self.d.capacity() + self.jac.capacity() + self.jac_point.capacity())
    }
}

/// The nodes and weights of 3-point Gauss–Legendre quadrature on [0, 1]: a running cost over a BDF step
/// is integrated on the step's interpolating polynomial (degree k ≤ 5, which the rule integrates
/// exactly), so the quadrature keeps the order of the solution.
pub const QUADRATURE: ([f64; 3], [f64; 3]) = {
    // c = 1/2 ∓ √15/10, 1/2; b = 5/18, 8/18, 5/18.
    const R: f64 = 0.387_298_334_620_741_7;
    (
        [0.5 - R, 0.5, 0.5 + R],
        [5.0 / 18.0, 8.0 / 18.0, 5.0 / 18.0],
    )
};

/// An accepted BDF step, as [`BdfIntegrator::step_accepted`] returns it.
///
/// Viewed as [`StepStages`], a step has three stages: the values of its interpolating polynomial at
/// the [`QUADRATURE`] nodes t_n + c_i h with weights b_i (a running cost over the step is integrated
/// by that rule).
#[derive(Debug)]
pub struct BdfStep<'s> {
    /// t_n.
    pub t: f64,
    /// The signed step size h.
    pub h: f64,
    /// t_{n+1}.
    pub t_next: f64,
    /// y_n.
    pub u: &'s [f64],
    /// y_{n+1}.
    pub u_next: &'s [f64],
    /// The order k of the formula that took the step.
    pub order: usize,
    /// The interpolations of the differences to new grids since the previous step, composed: the
    /// step read D_pre = Wᵀ D, D the differences the previous step left (or the start made).
    pub map: &'s DifferenceMap,
    /// Some(h₀) when the step is the first since a start or restart at t_n: the differences it
    /// began from were D_0 = y_n, D_1 = h₀ f(t_n, y_n), the rest 0.
    pub start: Option<f64>,
    /// The corrector's c = h/α_k: y_{n+1} − y⁽⁰⁾ + ψ = c f(t_{n+1}, y_{n+1}) with the prediction
    /// y⁽⁰⁾ = Σ_{j=0}^{k} D_pre,j and ψ = Σ_{j=1}^{k} `psi_weights[j]` D_pre,j (γ_j/α_k).
    pub c: f64,
    /// γ_j/α_k, j = 1 … k (index 0 unused).
    pub psi_weights: [f64; MAX_ORDER + 1],
    /// The interpolating polynomial's values at t_n + c_i h, i = 0, 1, 2 (3 × n, row-major).
    pub stage_values: &'s [f64],
}

impl StepStages for BdfStep<'_> {
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
        3
    }
    fn stage_time(&self, i: usize) -> f64 {
        self.t + QUADRATURE.0[i] * self.h
    }
    fn stage_value(&self, i: usize) -> &[f64] {
        let n = self.u.len();
        &self.stage_values[i * n..(i + 1) * n]
    }
    fn weight(&self, i: usize) -> f64 {
        QUADRATURE.1[i]
    }
}

/// Step-by-step driver of [`Method::Bdf`] and [`Method::Ndf`] (see the module docs): the same steps as
/// [`crate::solve`] takes, one accepted step at a time, with checkpoints that replay bit for bit.
pub struct BdfIntegrator<'a, M: OdeSystem> {
    problem: &'a OdeProblem<M>,
    method: Method,
    n: usize,
    p: Vec<f64>,
    atol: Vec<f64>,
    rtol: f64,
    /// Components in the error norms (the first `norm_n`).
    norm_n: usize,
    coef: Coefficients,
    newton_tol: f64,
    /// The Newton contraction rate carried from step to step (1 after a factorization).
    newton_rate: f64,
    /// Accepted steps since the last factorization and since the last Jacobian.
    steps_since_lu: usize,
    steps_since_jac: usize,
    max_order: usize,
    lu_reuse: f64,
    schedule: Schedule,
    t: f64,
    h_abs: f64,
    order: usize,
    n_equal_steps: usize,
    /// D_0 … D_{MAX_ORDER + 2}, row-major (ROWS × n).
    d: Vec<f64>,
    /// Scratch rows for the interpolation of the differences.
    d_tmp: Vec<f64>,
    /// J in the layout of `lu`, and whether it was evaluated for the step being attempted.
    jac: Vec<f64>,
    jac_current: bool,
    /// Whether `jac` is finite (a Jacobian evaluated where the model is NaN/∞ is not).
    jac_valid: bool,
    /// The direct path's factorization of I − cJ, or the GMRES path (exactly one of them).
    lu: Option<Lu>,
    krylov: Option<Box<KrylovNewton>>,
    /// The c of the factorization I − cJ in `lu` (0: none), or of the GMRES path's preconditioner.
    factored_c: f64,
    jw: JacobianEvaluator,
    y_predict: Vec<f64>,
    psi: Vec<f64>,
    y: Vec<f64>,
    /// The accumulated Newton correction y_{n+1} − y⁽⁰⁾.
    corr: Vec<f64>,
    f: Vec<f64>,
    dy: Vec<f64>,
    scale: Vec<f64>,
    stats: Statistics,
    /// The first non-finite rhs value (t, component, value) met by the last attempt.
    non_finite: Option<(f64, usize, f64)>,
    /// The last accepted step: start, signed size, y_n, and its interpolating polynomial's
    /// coefficients D_j / h (MAX_ORDER × n, zero beyond its order).
    has_step: bool,
    t_prev: f64,
    h_last: f64,
    last_order: usize,
    u_prev: Vec<f64>,
    dense_k: Vec<f64>,
    dense_w: Vec<f64>,
    /// The interpolations of the differences since the last accepted step (or start), composed, and
    /// the h₀ of the start when no step was accepted since it (for the derivatives: [`BdfStep`]).
    pending: DifferenceMap,
    start_h: Option<f64>,
    /// The last accepted step's [`BdfStep::map`], [`BdfStep::start`] and [`BdfStep::c`].
    last_map: DifferenceMap,
    last_start: Option<f64>,
    last_c: f64,
    /// The last step's interpolant at the quadrature nodes (3 × n), and the interpolation weights
    /// a_j at the nodes (the same for every step: computed once).
    quad_y: Vec<f64>,
    quad_w: [[f64; MAX_ORDER]; 3],
}

impl<'a, M: OdeSystem> BdfIntegrator<'a, M> {
    /// Sets up the solve of `problem` with `options` (method [`Method::Bdf`] or [`Method::Ndf`]):
    /// f(t0, u0), J(t0, u0) and the initial step (`h0`, or Hairer's estimate for order 1).
    ///
    /// # Errors
    /// Invalid tolerances or options; [`SolverError::UnsupportedMethod`] for another method, a
    /// fixed step (the order is raised step by step from 1, so a fixed step gives no fixed order) or a
    /// controller other than the method's own; [`SolverError::NonFiniteRhs`] for a non-finite
    /// f(t0, u0).
    pub fn new(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        let method = options.method;
        let kappa = match method {
            Method::Bdf => [0.0; MAX_ORDER + 1],
            Method::Ndf => NDF_KAPPA,
            _ => {
                return Err(SolverError::UnsupportedMethod {
                    method,
                    operation: "BdfIntegrator (use Integrator or ImplicitIntegrator)",
                });
            }
        };
        let n = problem.n_states();
        let mut atol = options.validated_atol(n)?;
        if options.fixed_step.is_some() {
            return Err(SolverError::UnsupportedMethod {
                method,
                operation: "fixed_step: BDF raises its order step by step from 1 and chooses its \
                            own steps; use tolerances, or a Runge–Kutta method for fixed steps",
            });
        }
        if options.controller != Controller::MethodDefault {
            return Err(SolverError::UnsupportedMethod {
                method,
                operation: "a step-size controller: BDF chooses step and order together \
                            (Controller::MethodDefault)",
            });
        }
        let rtol = options.rtol;
        let norm_n = options.error_norm_components.unwrap_or(n).min(n);
        atol.iter_mut()
            .skip(norm_n)
            .for_each(|a| *a = f64::INFINITY);
        let (t0, t_end) = (problem.t0(), problem.t_end());
        let schedule = Schedule::new(options, (t0, t_end), Landing::Reach)?;
        let np = problem.model().n_params();
        let (lu, krylov, jw, jac_len) = match options.implicit.linear_solver {
            LinearSolverKind::Gmres {
                restart,
                preconditioner,
            } => {
                let krylov = KrylovNewton::new(problem, restart, preconditioner)?;
                let jw = krylov.evaluator(n, np);
                let len = krylov.jacobian_len();
                (None, Some(Box::new(krylov)), jw, len)
            }
            kind => {
                let (lu, colors) = match choose_pattern(problem, kind)? {
                    Some(pattern) => {
                        let colors = Some(pattern.column_colors());
                        (Lu::Sparse(Box::new(SparseLu::new(pattern))), colors)
                    }
                    None => (Lu::Dense(DenseLu::new(n)), None),
                };
                let len = lu.len(n);
                (Some(lu), None, JacobianEvaluator::new(n, np, colors), len)
            }
        };
        // κ = 0.03 of the error norm (`ImplicitConfig::newton_kappa`, as the ESDIRKs and diffsol's BDF),
        // but no less than 10 ε / rtol.
        let r = rtol.max(100.0 * f64::EPSILON);
        let newton_tol = (10.0 * f64::EPSILON / r).max(options.implicit.newton_kappa);
        let mut s = Self {
            problem,
            method,
            n,
            p: problem.params().to_vec(),
            atol,
            rtol,
            norm_n,
            coef: Coefficients::new(&kappa),
            newton_tol,
            newton_rate: 1.0,
            steps_since_lu: 0,
            steps_since_jac: 0,
            max_order: options.implicit.bdf_max_order,
            lu_reuse: options.implicit.lu_reuse,
            schedule,
            t: t0,
            h_abs: 0.0,
            order: 1,
            n_equal_steps: 0,
            d: vec![0.0; ROWS * n],
            d_tmp: vec![0.0; (MAX_ORDER + 1) * n],
            jac: vec![0.0; jac_len],
            jac_current: false,
            jac_valid: false,
            lu,
            krylov,
            factored_c: 0.0,
            jw,
            y_predict: vec![0.0; n],
            psi: vec![0.0; n],
            y: vec![0.0; n],
            corr: vec![0.0; n],
            f: vec![0.0; n],
            dy: vec![0.0; n],
            scale: vec![0.0; n],
            stats: Statistics::default(),
            non_finite: None,
            has_step: false,
            t_prev: t0,
            h_last: 0.0,
            last_order: 1,
            u_prev: vec![0.0; n],
            dense_k: vec![0.0; MAX_ORDER * n],
            dense_w: vec![0.0; MAX_ORDER],
            pending: IDENTITY,
            start_h: None,
            last_map: IDENTITY,
            last_start: None,
            last_c: 0.0,
            quad_y: vec![0.0; 3 * n],
            quad_w: QUADRATURE.0.map(|theta| {
                let mut w = [0.0; MAX_ORDER];
                crate::tableau::bdf_dense_weights(theta, &mut w);
                w
            }),
        };
        let u0 = problem.u0().to_vec();
        s.f_at(t0, &u0)?;
        let span = (t_end - t0).abs();
        let h_abs = match options.h0 {
            Some(h) => h,
            None => s.initial_step(&u0)?,
        }
        .min(span)
        .min(options.h_max);
        s.start(&u0, h_abs);
        s.jacobian(t0, &u0);
        Ok(s)
    }

    /// f(t, u) into `self.f`, counted; [`SolverError::NonFiniteRhs`] if not finite.
    fn f_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        self.eval_f(t, u);
        match self.f.iter().position(|v| !v.is_finite()) {
            Some(component) => Err(SolverError::NonFiniteRhs {
                t,
                component,
                value: self.f[component],
            }),
            None => Ok(()),
        }
    }

    fn eval_f(&mut self, t: f64, u: &[f64]) {
        self.problem.model().rhs(
            t,
            ArrayView1::from(u),
            ArrayView1::from(&self.p[..]),
            ArrayViewMut1::from(&mut self.f[..]),
        );
        self.stats.rhs_evaluations += 1;
    }

    /// J(t, u) into `jac`; the factorization is void. Records a non-finite entry as the attempt's
    /// non-finite value (the Jacobian is then invalid and evaluated again before the next
    /// factorization).
    fn jacobian(&mut self, t: f64, u: &[f64]) {
        let pattern = match (&self.lu, &self.krylov) {
            (Some(Lu::Sparse(lu)), _) => Some(lu.pattern()),
            (_, Some(k)) => k.jacobian_pattern(),
            _ => None,
        };
        if self.lu.is_some() || pattern.is_some() {
            self.jw
                .evaluate(self.problem.model(), t, u, &self.p, pattern, &mut self.jac);
            self.stats.jacobian_evaluations += 1;
        }
        if let Some(k) = self.krylov.as_mut() {
            // The point the preconditioner is set up at (J itself, if needed, is in `jac`).
            k.jac_t = t;
            k.jac_u.copy_from_slice(u);
        }
        self.jac_current = true;
        self.factored_c = 0.0;
        self.steps_since_jac = 0;
        self.jac_valid = self.jac.iter().all(|v| v.is_finite());
        if !self.jac_valid {
            let k = self.jac.iter().position(|v| !v.is_finite()).unwrap_or(0);
            self.non_finite = Some((t, k, self.jac[k]));
        }
    }

    /// Order 1 from (t, u) with f(t, u) in `self.f`: D_0 = u, D_1 = h f.
    fn start(&mut self, u: &[f64], h_abs: f64) {
        let n = self.n;
        let h = self.schedule.dir() * h_abs;
        self.d.iter_mut().for_each(|x| *x = 0.0);
        self.d[..n].copy_from_slice(u);
        for (d, &f) in self.d[n..2 * n].iter_mut().zip(&self.f) {
            *d = h * f;
        }
        self.h_abs = h_abs;
        self.order = 1;
        self.n_equal_steps = 0;
        self.has_step = false;
        self.pending = IDENTITY;
        self.start_h = Some(h);
    }

    /// Hairer's starting step for an order-1 error estimate (Hairer, Nørsett & Wanner, *Solving ODEs
    /// I*, §II.4; as SciPy's BDF starts): h0 = 0.01 ‖u‖/‖f‖, an Euler step to estimate ‖f'‖,
    /// h1 = (0.01 / max(‖f‖, ‖f'‖))^{1/2}, h = min(100 h0, h1). f(t0, u0) is in `self.f` (and is left
    /// there); costs one rhs evaluation.
    fn initial_step(&mut self, u0: &[f64]) -> Result<f64, SolverError> {
        let (n, dir, t0) = (self.n, self.schedule.dir(), self.t);
        for i in 0..n {
            self.scale[i] = self.atol[i] + self.rtol * u0[i].abs();
        }
        let d0 = self.norm(u0);
        let d1 = self.norm(&self.f);
        let span = (self.problem.t_end() - t0).abs();
        let h0 = if d0 < 1e-5 || d1 < 1e-5 {
            1e-6
        } else {
            0.01 * d0 / d1
        }
        .min(span);
        for i in 0..n {
            self.y[i] = u0[i] + dir * h0 * self.f[i];
        }
        self.psi.copy_from_slice(&self.f);
        let y = std::mem::take(&mut self.y);
        let result = self.f_at(t0 + dir * h0, &y);
        self.y = y;
        std::mem::swap(&mut self.psi, &mut self.f);
        result?;
        for i in 0..n {
            self.dy[i] = self.psi[i] - self.f[i];
        }
        let d2 = self.norm(&self.dy) / h0;
        let dmax = d1.max(d2);
        let h1 = if dmax <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / dmax).sqrt()
        };
        Ok((100.0 * h0).min(h1).min(span))
    }

    /// RMS norm of v / scale over the components in the error norm.
    fn norm(&self, v: &[f64]) -> f64 {
        let k = self.norm_n;
        let sum: f64 = v
            .iter()
            .zip(&self.scale)
            .take(k)
            .map(|(x, s)| (x / s).powi(2))
            .sum();
        (sum / k.max(1) as f64).sqrt()
    }

    /// Interpolates D_0 … D_k (k the current order) from step h to step ρh: D ← (R(k, ρ) U(k))ᵀ D with
    /// U = R(k, 1) (Shampine & Reichelt eq. (2.5)).
    fn change_d(&mut self, factor: f64) {
        let (n, k) = (self.n, self.order);
        let mut r = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
        let mut u = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
        compute_r(k, factor, &mut r);
        compute_r(k, 1.0, &mut u);
        let mut ru = [[0.0; MAX_ORDER + 1]; MAX_ORDER + 1];
        for i in 0..=k {
            for j in 0..=k {
                ru[i][j] = (0..=k).map(|m| r[i][m] * u[m][j]).sum();
            }
        }
        // new D_j = Σ_i RU_ij D_i.
        self.d_tmp[..(k + 1) * n].iter_mut().for_each(|x| *x = 0.0);
        for j in 0..=k {
            for i in 0..=k {
                let w = ru[i][j];
                let (dst, src) = (j * n, i * n);
                for m in 0..n {
                    self.d_tmp[dst + m] += w * self.d[src + m];
                }
            }
        }
        self.d[..(k + 1) * n].copy_from_slice(&self.d_tmp[..(k + 1) * n]);
        self.n_equal_steps = 0;
        // pending ← pending · RU on the order's block.
        let old = self.pending;
        for (i, row) in self.pending.iter_mut().enumerate().take(k + 1) {
            for (j, w) in row.iter_mut().enumerate().take(k + 1) {
                *w = (0..=k).map(|m| old[i][m] * ru[m][j]).sum();
            }
        }
    }

    /// Simplified Newton on the corrector at t_new with c = h/α_k, CVODE's way (Hindmarsh et al.,
    /// ACM TOMS 31 (2005) §2.1): the contraction rate θ is carried from step to step (reset to 1 with
    /// every factorization; each new ratio ‖Δ_m‖/‖Δ_{m−1}‖ raises it, and it decays at most by 0.3
    /// per iteration), the iteration has converged when ‖Δ‖ min(1, θ/(1 − θ)) is below the
    /// tolerance — so a well-predicted step can converge in one iteration — and gives up when θ ≥ 1
    /// or θ^{m_left}/(1 − θ)‖Δ‖ shows that the remaining iterations cannot make it (ode15s).
    /// Returns (converged, iterations).
    fn newton(&mut self, t_new: f64, c: f64) -> (bool, usize) {
        self.y.copy_from_slice(&self.y_predict);
        self.corr.iter_mut().for_each(|x| *x = 0.0);
        let mut dy_norm_old: Option<f64> = None;
        for k in 0..NEWTON_MAXITER {
            let y = std::mem::take(&mut self.y);
            self.eval_f(t_new, &y);
            self.y = y;
            if let Some(component) = self.f.iter().position(|v| !v.is_finite()) {
                self.non_finite = Some((t_new, component, self.f[component]));
                return (false, k + 1);
            }
            for m in 0..self.n {
                self.dy[m] = c * self.f[m] - self.psi[m] - self.corr[m];
            }
            match (&mut self.lu, &mut self.krylov) {
                (Some(lu), _) => lu.solve_in_place(&mut self.dy),
                (None, Some(krylov)) => {
                    let solved = krylov.solve(
                        self.problem.model(),
                        (t_new, &self.y, &self.p),
                        c,
                        &mut self.dy,
                        (&self.scale, self.newton_tol),
                    );
                    self.stats.linear_iterations += match solved {
                        Ok(iterations) | Err(iterations) => iterations,
                    };
                    if solved.is_err() {
                        // GMRES did not reach its tolerance: an inexact Newton failure (CVODE's
                        // recoverable linear-solver failure), retried with a fresh preconditioner.
                        return (false, k + 1);
                    }
                }
                (None, None) => unreachable!("one linear path"),
            }
            let dy_norm = self.norm(&self.dy);
            if let Some(old) = dy_norm_old {
                let rate = (dy_norm / old).max(0.3 * self.newton_rate);
                self.newton_rate = rate;
                if rate >= 1.0
                    || rate.powi((NEWTON_MAXITER - k) as i32) / (1.0 - rate) * dy_norm
                        > self.newton_tol
                {
                    return (false, k + 1);
                }
            }
            for m in 0..self.n {
                self.y[m] += self.dy[m];
                self.corr[m] += self.dy[m];
            }
            let rate = self.newton_rate;
            let factor = if rate < 1.0 {
                (rate / (1.0 - rate)).min(1.0)
            } else {
                1.0
            };
            if dy_norm * factor <= self.newton_tol {
                return (true, k + 1);
            }
            dy_norm_old = Some(dy_norm);
        }
        (false, NEWTON_MAXITER)
    }

    /// Factors I − cJ (direct path) or sets the preconditioner up for it (GMRES path).
    fn factor(&mut self, c: f64) -> Result<(), usize> {
        match (&mut self.lu, &mut self.krylov) {
            (Some(lu), _) => factor_shifted(lu, &self.jac, c),
            (None, Some(krylov)) => krylov.setup(&self.p, c, &self.jac),
            (None, None) => unreachable!("one linear path"),
        }
    }

    /// The sparsity pattern of the iteration matrix and its column colouring (colour of each column,
    /// number of colours) when the solve uses sparse LU.
    pub fn sparsity(&self) -> Option<(&SparsityPattern, &[usize], usize)> {
        match (&self.lu, &self.jw.colors, &self.krylov) {
            (Some(Lu::Sparse(lu)), Some((colors, count)), _) => {
                Some((lu.pattern(), colors, *count))
            }
            (None, _, Some(krylov)) => krylov.sparsity(),
            _ => None,
        }
    }

    /// Whether the end of the span has been reached.
    pub fn is_finished(&self) -> bool {
        self.schedule.is_finished()
    }

    /// Current time.
    pub fn t(&self) -> f64 {
        self.t
    }

    /// Current state (D_0).
    pub fn u(&self) -> &[f64] {
        &self.d[..self.n]
    }

    /// The order the next step will use.
    pub fn order(&self) -> usize {
        self.order
    }

    /// Counters so far.
    pub fn stats(&self) -> Statistics {
        self.stats
    }

    /// The method ([`Method::Bdf`] or [`Method::Ndf`]).
    pub fn method(&self) -> Method {
        self.method
    }

    /// Takes one accepted step (retrying rejected attempts) and returns it.
    ///
    /// # Errors
    /// [`SolverError::AlreadyFinished`], [`SolverError::MaxStepsReached`] (attempts count),
    /// [`SolverError::SingularMatrix`], [`SolverError::NewtonFailed`] when Newton keeps failing with a
    /// fresh Jacobian as h shrinks to round-off level (or [`SolverError::NonFiniteRhs`] if the model
    /// returned NaN/∞ there), [`SolverError::StepSizeTooSmall`].
    pub fn step_accepted(&mut self) -> Result<BdfStep<'_>, SolverError> {
        if self.is_finished() {
            return Err(SolverError::AlreadyFinished { t: self.t });
        }
        self.has_step = false;
        let n = self.n;
        let mut newton_failed = false;
        loop {
            let attempt = match self.schedule.attempt(self.t, self.h_abs) {
                Ok(attempt) => attempt,
                Err(Refusal::MaxSteps) => {
                    return Err(SolverError::MaxStepsReached {
                        t: self.t,
                        max_steps: self.schedule.max_steps(),
                    });
                }
                Err(Refusal::TooSmall { h }) => {
                    return Err(match (newton_failed, self.non_finite) {
                        (true, Some((t, component, value))) => SolverError::NonFiniteRhs {
                            t,
                            component,
                            value,
                        },
                        (true, None) => SolverError::NewtonFailed { t: self.t, h },
                        (false, _) => SolverError::StepSizeTooSmall { t: self.t, h },
                    });
                }
            };
            if attempt.h_abs != self.h_abs {
                // Landing on a stop or capped by h_max: the differences move to the new grid.
                self.change_d(attempt.h_abs / self.h_abs);
                self.h_abs = attempt.h_abs;
            }
            let (h, t_new, k) = (attempt.h, attempt.t_new, self.order);
            let alpha = self.coef.alpha[k];
            for m in 0..n {
                let mut y = 0.0;
                let mut psi = 0.0;
                for j in 0..=k {
                    y += self.d[j * n + m];
                }
                for j in 1..=k {
                    psi += self.coef.gamma[j] * self.d[j * n + m];
                }
                self.y_predict[m] = y;
                self.psi[m] = psi / alpha;
                self.scale[m] = self.atol[m] + self.rtol * y.abs();
            }
            let c = h / alpha;
            self.non_finite = None;
            let (converged, iterations) = loop {
                if !self.jac_valid {
                    // The last Jacobian met NaN/∞: a new one at the current point.
                    let mut at = std::mem::take(&mut self.y);
                    at.copy_from_slice(&self.d[..n]);
                    self.jacobian(self.t, &at);
                    self.y = at;
                    if let (false, Some((t, component, value))) = (self.jac_valid, self.non_finite)
                    {
                        return Err(SolverError::NonFiniteRhs {
                            t,
                            component,
                            value,
                        });
                    }
                }
                // The factorization is kept while c stays within `lu_reuse` of the factored one
                // (simplified Newton with a slightly stale c converges) and for at most 20 steps;
                // the Jacobian for at most 50 (CVODE's MSBP and MSBJ).
                if !self.jac_current && self.steps_since_jac >= MAX_STEPS_PER_JACOBIAN {
                    let y = std::mem::take(&mut self.y_predict);
                    self.jacobian(t_new, &y);
                    self.y_predict = y;
                    if !self.jac_valid {
                        break (false, 0);
                    }
                }
                if self.factored_c == 0.0
                    || (c / self.factored_c - 1.0).abs() > self.lu_reuse
                    || self.steps_since_lu >= MAX_STEPS_PER_FACTORIZATION
                {
                    let result = self.factor(c);
                    self.stats.factorizations +=
                        usize::from(self.krylov.as_ref().is_none_or(|k| k.has_preconditioner()));
                    self.factored_c = if result.is_ok() { c } else { 0.0 };
                    self.newton_rate = 1.0;
                    self.steps_since_lu = 0;
                    singular(result, self.t, h)?;
                }
                let (converged, iterations) = self.newton(t_new, c);
                self.stats.newton_iterations += iterations;
                if converged || self.jac_current {
                    break (converged, iterations);
                }
                let y = std::mem::take(&mut self.y_predict);
                self.jacobian(t_new, &y);
                self.y_predict = y;
                if !self.jac_valid {
                    break (false, 0);
                }
            };
            if !converged {
                self.stats.newton_failures += 1;
                self.stats.rejected_steps += 1;
                newton_failed = true;
                if let Some((t, component, value)) = self.non_finite
                    && self.schedule.non_finite()
                {
                    return Err(SolverError::NonFiniteRhs {
                        t,
                        component,
                        value,
                    });
                }
                self.h_abs *= 0.5;
                self.change_d(0.5);
                continue;
            }
            newton_failed = false;
            let safety =
                0.9 * (2 * NEWTON_MAXITER + 1) as f64 / (2 * NEWTON_MAXITER + iterations) as f64;
            for m in 0..n {
                self.scale[m] = self.atol[m] + self.rtol * self.y[m].abs();
                self.dy[m] = self.coef.error_const[k] * self.corr[m];
            }
            let error_norm = self.norm(&self.dy);
            if error_norm > 1.0 {
                self.stats.rejected_steps += 1;
                let factor = MIN_FACTOR.max(safety * error_norm.powf(-1.0 / (k + 1) as f64));
                self.h_abs *= factor;
                self.change_d(factor);
                continue;
            }
            // Accept: the differences of the new point.
            self.schedule.accepted(&attempt);
            self.stats.accepted_steps += 1;
            self.u_prev.copy_from_slice(&self.d[..n]);
            self.t_prev = self.t;
            self.h_last = h;
            self.last_order = k;
            self.last_map = self.pending;
            self.last_start = self.start_h.take();
            self.last_c = c;
            self.pending = IDENTITY;
            self.t = t_new;
            self.jac_current = false;
            self.steps_since_lu += 1;
            self.steps_since_jac += 1;
            self.n_equal_steps += 1;
            for m in 0..n {
                self.d[(k + 2) * n + m] = self.corr[m] - self.d[(k + 1) * n + m];
                self.d[(k + 1) * n + m] = self.corr[m];
            }
            for j in (0..=k).rev() {
                for m in 0..n {
                    self.d[j * n + m] += self.d[(j + 1) * n + m];
                }
            }
            for j in 0..MAX_ORDER {
                for m in 0..n {
                    self.dense_k[j * n + m] = if j < k {
                        self.d[(j + 1) * n + m] / h
                    } else {
                        0.0
                    };
                }
            }
            // The interpolant at the quadrature nodes, before the differences move to a new grid.
            for (i, weights) in self.quad_w.iter().enumerate() {
                let row = &mut self.quad_y[i * n..(i + 1) * n];
                row.copy_from_slice(&self.d[..n]);
                for j in 1..=k {
                    let a = weights[j - 1];
                    for (y, &dj) in row.iter_mut().zip(&self.d[j * n..(j + 1) * n]) {
                        *y += a * dj;
                    }
                }
            }
            self.has_step = true;
            if self.n_equal_steps > k {
                self.choose_order(safety, error_norm);
            }
            return Ok(self.last_step());
        }
    }

    /// After k + 1 equal steps: the order among k − 1, k, k + 1 (within 1 ..= max order) that allows
    /// the largest next step by its error estimate (error constants times ∇^k y, the corrector's ∇^{k+1}
    /// y, ∇^{k+2} y), and that step: within [1/2, 2] of the last, kept unless the order changes or the
    /// factor leaves (0.9, 2) (see [`MAX_FACTOR`]).
    fn choose_order(&mut self, safety: f64, error_norm: f64) {
        let (n, k) = (self.n, self.order);
        let estimate = |s: &Self, order: usize, row: usize| -> f64 {
            let c = s.coef.error_const[order];
            let sum: f64 = (0..s.norm_n)
                .map(|m| (c * s.d[row * n + m] / s.scale[m]).powi(2))
                .sum();
            (sum / s.norm_n.max(1) as f64).sqrt()
        };
        let error_m = if k > 1 {
            estimate(self, k - 1, k)
        } else {
            f64::INFINITY
        };
        let error_p = if k < self.max_order {
            estimate(self, k + 1, k + 2)
        } else {
            f64::INFINITY
        };
        let norms = [error_m, error_norm, error_p];
        let mut best = (0, f64::NEG_INFINITY);
        for (i, &e) in norms.iter().enumerate() {
            // e = 0 allows any step (the factor is capped below); e = ∞ none.
            let factor = e.powf(-1.0 / (k + i) as f64);
            if factor > best.1 {
                best = (i, factor);
            }
        }
        self.order = k + best.0 - 1;
        let factor = (safety * best.1).clamp(MIN_ACCEPTED_FACTOR, MAX_FACTOR);
        if best.0 != 1 || factor >= KEEP_BAND.1 || factor <= KEEP_BAND.0 {
            self.h_abs *= factor;
            self.change_d(factor);
        }
    }

    /// The last accepted step.
    fn last_step(&self) -> BdfStep<'_> {
        let k = self.last_order;
        let mut psi_weights = [0.0; MAX_ORDER + 1];
        for (j, w) in psi_weights.iter_mut().enumerate().take(k + 1).skip(1) {
            *w = self.coef.gamma[j] / self.coef.alpha[k];
        }
        BdfStep {
            t: self.t_prev,
            h: self.h_last,
            t_next: self.t,
            u: &self.u_prev,
            u_next: &self.d[..self.n],
            order: k,
            map: &self.last_map,
            start: self.last_start,
            c: self.last_c,
            psi_weights,
            stage_values: &self.quad_y,
        }
    }

    fn require_step(&self, call: &'static str) -> Result<(), SolverError> {
        if self.has_step {
            Ok(())
        } else {
            Err(SolverError::Misuse {
                call,
                expected: "called after a step was accepted and before the next attempt",
            })
        }
    }

    /// Replaces the current state by `u` (a jump), restarting at order 1 from (t, u) with the current
    /// step size; the Jacobian is kept (refreshed when Newton fails).
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`], [`SolverError::NonFiniteInput`],
    /// [`SolverError::NonFiniteRhs`] for f(t, u).
    pub fn set_state(&mut self, u: &[f64]) -> Result<(), SolverError> {
        if u.len() != self.n {
            return Err(SolverError::DimensionMismatch {
                what: "state",
                expected: self.n,
                got: u.len(),
            });
        }
        crate::problem::check_finite("state", u)?;
        self.f_at(self.t, u)?;
        let h_abs = self.h_abs;
        self.start(u, h_abs);
        Ok(())
    }

    /// Moves to `t` inside (or at the end of) the step just accepted with state `u` (an event after its
    /// jump) and restarts there at order 1.
    ///
    /// # Errors
    /// As [`BdfIntegrator::set_state`]; [`SolverError::NonFiniteInput`] for a non-finite t.
    pub fn restart_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        crate::problem::check_finite("restart time", &[t])?;
        let t_old = self.t;
        self.t = t;
        if let Err(e) = self.set_state(u) {
            self.t = t_old;
            return Err(e);
        }
        self.schedule.rewind(t);
        Ok(())
    }

    /// A checkpoint of the current point, into `cp` (reusing its buffers).
    pub fn checkpoint_into(&self, cp: &mut BdfCheckpoint) {
        let rows = (self.order + 3).min(ROWS);
        cp.t = self.t;
        cp.h_abs = self.h_abs;
        cp.order = self.order;
        cp.n_equal_steps = self.n_equal_steps;
        cp.d.clear();
        cp.d.extend_from_slice(&self.d[..rows * self.n]);
        cp.jac.clone_from(&self.jac);
        cp.jac_point.clear();
        if let Some(k) = &self.krylov {
            cp.jac_point.push(k.jac_t);
            cp.jac_point.extend_from_slice(&k.jac_u);
        }
        cp.jac_current = self.jac_current;
        cp.jac_valid = self.jac_valid;
        cp.newton_rate = self.newton_rate;
        cp.steps_since_lu = self.steps_since_lu;
        cp.steps_since_jac = self.steps_since_jac;
        cp.factored_c = self.factored_c;
        (cp.next_stop, cp.attempts) = self.schedule.position();
        cp.pending = self.pending;
        cp.start = self.start_h;
    }

    /// Restores a checkpoint of an integrator of the same problem and options: the following steps are
    /// bit for bit those taken after the checkpoint.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a checkpoint of another problem;
    /// [`SolverError::SingularMatrix`] if refactoring fails.
    pub fn restore(&mut self, cp: &BdfCheckpoint) -> Result<(), SolverError> {
        let n = self.n;
        let rows = (cp.order + 3).min(ROWS);
        let point = if self.krylov.is_some() { n + 1 } else { 0 };
        if cp.d.len() != rows * n || cp.jac.len() != self.jac.len() || cp.jac_point.len() != point {
            return Err(SolverError::DimensionMismatch {
                what: "BDF checkpoint state",
                expected: rows * n,
                got: cp.d.len(),
            });
        }
        self.t = cp.t;
        self.h_abs = cp.h_abs;
        self.order = cp.order;
        self.n_equal_steps = cp.n_equal_steps;
        self.d[..rows * n].copy_from_slice(&cp.d);
        self.d[rows * n..].iter_mut().for_each(|x| *x = 0.0);
        self.jac.copy_from_slice(&cp.jac);
        if let (Some(k), [t, u @ ..]) = (self.krylov.as_mut(), &cp.jac_point[..]) {
            k.jac_t = *t;
            k.jac_u.copy_from_slice(u);
        }
        self.jac_current = cp.jac_current;
        self.jac_valid = cp.jac_valid;
        self.newton_rate = cp.newton_rate;
        self.steps_since_lu = cp.steps_since_lu;
        self.steps_since_jac = cp.steps_since_jac;
        self.schedule.restore((cp.next_stop, cp.attempts));
        self.pending = cp.pending;
        self.start_h = cp.start;
        self.has_step = false;
        self.factored_c = 0.0;
        if cp.factored_c != 0.0 {
            let result = self.factor(cp.factored_c);
            singular(result, cp.t, cp.h_abs)?;
            self.factored_c = cp.factored_c;
        }
        Ok(())
    }

    /// u at `t` in [t_n, t_{n+1}] of the step just accepted, by the interpolating polynomial.
    ///
    /// # Errors
    /// [`SolverError::Misuse`] unless a step was just accepted.
    pub fn interpolate(&mut self, t: f64, out: &mut [f64]) -> Result<(), SolverError> {
        self.require_step("BdfIntegrator::interpolate")?;
        DenseKind::Bdf.eval_step(
            (self.t_prev, self.h_last, t),
            &self.d[..self.n],
            &self.dense_k,
            out,
            &mut self.dense_w,
        );
        Ok(())
    }

    /// Appends the step just accepted to `dense`.
    ///
    /// # Errors
    /// As [`BdfIntegrator::interpolate`].
    pub fn push_dense(&mut self, dense: &mut DenseOutput) -> Result<(), SolverError> {
        self.require_step("BdfIntegrator::push_dense")?;
        dense.push(self.t_prev, self.h_last, &self.d[..self.n], &self.dense_k);
        Ok(())
    }
}

impl<M: OdeSystem> Stepper for BdfIntegrator<'_, M> {
    type Checkpoint = BdfCheckpoint;
    type Step<'s>
        = BdfStep<'s>
    where
        Self: 's;

    fn t(&self) -> f64 {
        self.t
    }
    fn u(&self) -> &[f64] {
        BdfIntegrator::u(self)
    }
    fn is_finished(&self) -> bool {
        BdfIntegrator::is_finished(self)
    }
    fn stats(&self) -> Statistics {
        self.stats
    }
    fn step_accepted(&mut self) -> Result<BdfStep<'_>, SolverError> {
        BdfIntegrator::step_accepted(self)
    }
    fn set_state(&mut self, u: &[f64]) -> Result<(), SolverError> {
        BdfIntegrator::set_state(self, u)
    }
    fn restart_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        BdfIntegrator::restart_at(self, t, u)
    }
    fn checkpoint_into(&self, cp: &mut BdfCheckpoint) {
        BdfIntegrator::checkpoint_into(self, cp)
    }
    fn restore(&mut self, cp: &BdfCheckpoint) -> Result<(), SolverError> {
        BdfIntegrator::restore(self, cp)
    }
    fn checkpoint_bytes(cp: &BdfCheckpoint) -> usize {
        cp.bytes()
    }
    fn interpolate(&mut self, t: f64, out: &mut [f64]) -> Result<(), SolverError> {
        BdfIntegrator::interpolate(self, t, out)
    }
    fn push_dense(&mut self, dense: &mut DenseOutput) -> Result<(), SolverError> {
        BdfIntegrator::push_dense(self, dense)
    }
    fn new_dense_output(&self) -> DenseOutput {
        DenseOutput::with_kind(DenseKind::Bdf, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Scalar;

    /// y' = −(y − sin t) + cos t, exact y = sin t (linear in y: one Newton iteration with the exact
    /// Jacobian solves the corrector exactly).
    struct Forced;
    impl OdeSystem for Forced {
        fn n_states(&self) -> usize {
            1
        }
        fn n_params(&self) -> usize {
            0
        }
        fn rhs<S: Scalar>(
            &self,
            t: S,
            u: ArrayView1<S>,
            _p: ArrayView1<S>,
            mut du: ArrayViewMut1<S>,
        ) {
            du[0] = -(u[0] - t.sin()) + t.cos();
        }
    }

    /// The error at t = 1 of `method` at fixed order k and fixed step h, started from the exact
    /// history (D_j = ∇^j y(0) on the grid 0, −h, −2h, …), with no step or order changes.
    fn fixed_order_error(method: Method, k: usize, steps: usize) -> f64 {
        let h = 1.0 / steps as f64;
        let problem = OdeProblem::new(Forced, vec![0.0], vec![], (0.0, 1.0)).unwrap();
        let mut opts = SolverOptions::default().method(method).rtol(0.5).atol(1e6);
        opts.h0 = Some(h);
        opts.implicit.lu_reuse = 0.0;
        let mut it = BdfIntegrator::new(&problem, &opts).unwrap();
        // Backward differences of the exact values y(−jh), j = 0 … k.
        let mut diffs: Vec<f64> = (0..=k).map(|j| (-(j as f64) * h).sin()).collect();
        it.d.iter_mut().for_each(|x| *x = 0.0);
        for j in 0..=k {
            it.d[j] = diffs[0];
            for i in 0..k - j {
                diffs[i] -= diffs[i + 1];
            }
        }
        it.order = k;
        it.h_abs = h;
        while !it.is_finished() {
            it.n_equal_steps = 0;
            let step = it.step_accepted().unwrap();
            assert_eq!(step.order, k);
        }
        (it.u()[0] - 1.0f64.sin()).abs()
    }

    #[test]
    fn fixed_order_formulas_converge_with_their_order() {
        for method in Method::MULTISTEP {
            for k in 1..=MAX_ORDER {
                let (coarse, fine) = (
                    fixed_order_error(method, k, 40),
                    fixed_order_error(method, k, 80),
                );
                let order = (coarse / fine).log2();
                println!(
                    "{} order {k}: errors {coarse:.3e}, {fine:.3e}: observed order {order:.3}",
                    method.name()
                );
                assert!(
                    (order - k as f64).abs() < 0.15,
                    "{method:?} k = {k}: {order}"
                );
            }
        }
    }

    #[test]
    fn step_size_changes_interpolate_the_differences_exactly_for_polynomials() {
        // y = t³ on a grid of step 1: rescaling the differences to step ρ must give the differences
        // of t³ on the grid of step ρ (degree 3 ≤ k = 4: exact).
        let k = 4;
        let y = |t: f64| t * t * t - 2.0 * t + 1.0;
        let diffs_at = |h: f64| -> Vec<f64> {
            let mut d: Vec<f64> = (0..=k).map(|j| y(-(j as f64) * h)).collect();
            let mut out = Vec::new();
            for j in 0..=k {
                out.push(d[0]);
                for i in 0..k - j {
                    d[i] -= d[i + 1];
                }
            }
            out
        };
        let problem = OdeProblem::new(Forced, vec![0.0], vec![], (0.0, 1.0)).unwrap();
        let opts = SolverOptions::default().method(Method::Bdf);
        let mut it = BdfIntegrator::new(&problem, &opts).unwrap();
        it.order = k;
        it.d[..=k].copy_from_slice(&diffs_at(1.0));
        it.change_d(0.37);
        for (got, want) in it.d[..=k].iter().zip(diffs_at(0.37)) {
            assert!((got - want).abs() < 1e-13, "{got} vs {want}");
        }
    }
}
