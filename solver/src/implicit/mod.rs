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

pub(crate) mod bdf;
mod esdirk;
mod jacobian;
mod krylov_newton;
mod radau_iia;

use jacobian::{JacobianEvaluator, choose_pattern};
use radau_iia::{RadauState, complex_pattern, transform, transform_t};

use crate::control::{Controller, ControllerMemory, StepController, StepFeedback};
use crate::error::SolverError;
use crate::linalg::{DenseLu, LinearSolver, Lu, SparseLu, SparsityPattern};
use crate::options::SolverOptions;
use crate::problem::OdeProblem;
use crate::schedule::{Landing, Refusal, Schedule};
use crate::solution::{DenseKind, DenseOutput, Statistics};
use crate::system::OdeSystem;
use crate::tableau::EsdirkTableau;
use crate::tableau::radau5 as radau;
use ndarray::{ArrayView1, ArrayViewMut1};

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

    /// The continuous extension of the scheme's steps (ESDIRK: cubic Hermite; Radau: collocation).
    pub(crate) fn dense_kind(self) -> DenseKind {
        match self {
            Scheme::Esdirk(_) => DenseKind::Hermite,
            Scheme::Radau5 => DenseKind::Radau,
        }
    }

    /// Number of coefficient rows of the continuous extension (ESDIRK: 3, Radau: 4), see
    /// [`Scheme::dense_weights`].
    pub fn dense_len(self) -> usize {
        self.dense_kind().stages()
    }

    /// Weights w_i(θ) of the step's continuous extension u(t_n + θh) = u_n + h Σ_i w_i(θ) k_i, whose
    /// rows k_i are, for the ESDIRKs' cubic Hermite, f(t_n, u_n), f(t_{n+1}, u_{n+1}) and
    /// (u_{n+1} − u_n)/h; for Radau IIA, (u_{n+1} − u_n)/h and the collocation polynomial's divided
    /// differences [`collocation_differences`] of the stage increments Z_i = Y_i − u_n, divided by h.
    /// Linear in the k_i: the tangent of the interpolant is the same sum over their tangents.
    pub fn dense_weights(self, theta: f64, w: &mut [f64]) {
        self.dense_kind().weights(theta, w)
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

/// Radau IIA5's collocation polynomial through (0, 0) and (c_i, z_i) in RADAU5's divided-difference form
/// (the `CONT` rows of its dense output), for one component: linear in z.
pub fn collocation_differences(z1: f64, z2: f64, z3: f64) -> [f64; 3] {
    let (c1, c2) = (radau::C[0], radau::C[1]);
    let ak1 = (z2 - z3) / (c2 - 1.0);
    let ak = (z1 - z2) / (c1 - c2);
    let acont3 = (ak - z1 / c1) / c2;
    let ak2 = (ak - ak1) / (c1 - 1.0);
    [ak1, ak2, ak2 - acont3]
}

/// The ESDIRKs' default Newton iteration limit.
const NEWTON_MAX: usize = 8;
/// Radau: Newton iterations allowed (radau5's NIT) and the rate below which the Jacobian is kept (THET).
pub(crate) const RADAU_NIT: usize = 7;
/// What the ESDIRK and Radau code reads of [`crate::ImplicitConfig`], resolved for the method.
#[derive(Debug, Clone, Copy)]
struct Newton {
    max_iterations: usize,
    kappa: f64,
    lu_reuse: f64,
    refresh_rate: f64,
}
pub(crate) const RADAU_THET: f64 = 0.001;

/// Working state of an implicit solve: the current point, the stages of the last attempt, the Jacobian and
/// its factorizations.
struct Core<'a, M: OdeSystem> {
    scheme: Scheme,
    problem: &'a OdeProblem<M>,
    n: usize,
    p: Vec<f64>,
    atol: Vec<f64>,
    rtol: f64,
    /// Components in the error norms (the first `norm_n`).
    norm_n: usize,
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
    /// The Jacobian's evaluation (and the column colouring of sparse ones).
    jw: JacobianEvaluator,
    stats: Statistics,
    radau: Option<Box<RadauState>>,
    /// The first non-finite rhs value (t, component, value) met by the last attempt's Newton iteration.
    non_finite: Option<(f64, usize, f64)>,
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
        let result = factor_shifted(&mut self.lu, &self.jac, hg);
        self.stats.factorizations += 1;
        self.factored_hg = if result.is_ok() { hg } else { 0.0 };
        singular(result, self.t, h)
    }

    /// RMS norm of v scaled by `scale`, over the components in the error norm.
    fn norm(&self, v: &[f64]) -> f64 {
        let sum: f64 = v
            .iter()
            .zip(&self.scale)
            .take(self.norm_n)
            .map(|(x, s)| (x / s).powi(2))
            .sum();
        (sum / self.norm_n.max(1) as f64).sqrt()
    }

    /// One step attempt of size h: Ok(Some(err)) with the scaled error norm, Ok(None) if Newton failed.
    fn attempt(&mut self, h: f64) -> Result<Option<f64>, SolverError> {
        self.non_finite = None;
        match self.scheme {
            Scheme::Esdirk(tab) => self.attempt_esdirk(tab, h),
            Scheme::Radau5 => self.attempt_radau(h),
        }
    }
}

/// Factors I − c·J into `lu`, with J in the layout of `lu` (the iteration matrix of every implicit
/// method here). Err(pivot) for a singular matrix.
fn factor_shifted(lu: &mut Lu, jac: &[f64], c: f64) -> Result<(), usize> {
    lu.factor(&mut |i, j, k| {
        let identity = if i == j { 1.0 } else { 0.0 };
        identity - c * jac[k]
    })
}

/// A factorization's result as the solver's error: a failed pivot is a singular iteration matrix at (t, h).
fn singular(result: Result<(), usize>, t: f64, h: f64) -> Result<(), SolverError> {
    result.map_err(|pivot| SolverError::SingularMatrix { t, h, pivot })
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
    /// Bytes the checkpoint occupies: the struct itself and the capacity of its vectors (state,
    /// first stage, Jacobian, Radau's collocation polynomial and scalars).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 8 * (self.u.capacity()
                + self.k0.capacity()
                + self.jac.capacity()
                + self.radau.capacity())
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
    /// tstops, `max_steps` and non-finite retries (positions restored with checkpoints).
    schedule: Schedule,
    fixed_step: Option<f64>,
    h_max: f64,
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
    /// Whether a step was accepted and no attempt has started since (its continuous extension is
    /// available), and whether `dense_k` holds that extension's coefficients.
    has_step: bool,
    dense_ready: bool,
    /// The continuous extension of the last step (ESDIRK: cubic Hermite from K_0, K_s and the secant;
    /// Radau: the collocation polynomial), and the weights of one evaluation.
    dense_k: Vec<f64>,
    dense_w: Vec<f64>,
}

impl<'a, M: OdeSystem> ImplicitIntegrator<'a, M> {
    /// Sets up the solve of `problem` (f at t0, J at t0, the initial step) with tstops `options.tstops`
    /// (the saving options are ignored).
    ///
    /// # Errors
    /// Invalid tolerances or times, an explicit method, a non-finite f(t0, u0).
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
        // Components outside the error norm (`error_norm_components`) weigh nothing: an infinite atol
        // scales them to 0 in every norm (error estimate, Newton's convergence, initial step).
        let norm_n = options.error_norm_components.unwrap_or(n).min(n);
        atol.iter_mut()
            .skip(norm_n)
            .for_each(|a| *a = f64::INFINITY);
        let (t0, t_end) = (problem.t0(), problem.t_end());
        let schedule = Schedule::new(options, (t0, t_end), Landing::Reach)?;
        let stages = scheme.stages();
        if matches!(
            options.implicit.linear_solver,
            crate::LinearSolverKind::Gmres { .. }
        ) {
            return Err(SolverError::UnsupportedMethod {
                method: options.method,
                operation: "LinearSolverKind::Gmres: the matrix-free Newton–Krylov path serves \
                            Method::Bdf and Method::Ndf so far; use sparse LU here",
            });
        }
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
            norm_n,
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
            jw: JacobianEvaluator::new(n, problem.model().n_params(), colors),
            stats: Statistics::default(),
            radau,
            non_finite: None,
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
        let dense_kind = scheme.dense_kind();
        Ok(Self {
            k_err,
            controller,
            memory: controller.initial_memory(k_err),
            s,
            schedule,
            fixed_step: options.fixed_step,
            h_max: options.h_max,
            h_abs,
            last_rejected: false,
            fsal_pending: false,
            t_prev: t0,
            h_last: 0.0,
            has_step: false,
            dense_ready: false,
            dense_k: vec![0.0; dense_kind.stages() * n],
            dense_w: vec![0.0; dense_kind.stages()],
        })
    }

    /// Whether the end of the span has been reached.
    pub fn is_finished(&self) -> bool {
        self.schedule.is_finished()
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

    /// Replaces the current state u by `u` (a jump: an event, an adjoint's observation), keeping t, the
    /// step size, the controller's memory and the Jacobian (refreshed as usual when Newton slows down).
    /// The first stage f(t, u) is recomputed now, and Radau's next Newton iteration starts from zero
    /// instead of the previous step's collocation polynomial.
    ///
    /// # Errors
    /// [`SolverError::DimensionMismatch`] for a wrong length, [`SolverError::NonFiniteInput`] for NaN/∞
    /// in `u`, [`SolverError::NonFiniteRhs`] if f(t, u) is not finite.
    pub fn set_state(&mut self, u: &[f64]) -> Result<(), SolverError> {
        let n = self.s.n;
        if u.len() != n {
            return Err(SolverError::DimensionMismatch {
                what: "state",
                expected: n,
                got: u.len(),
            });
        }
        crate::problem::check_finite("state", u)?;
        let t = self.s.t;
        let mut f0 = std::mem::take(&mut self.s.delta);
        self.s.f(t, u, &mut f0);
        let result = match f0.iter().position(|v| !v.is_finite()) {
            Some(component) => Err(SolverError::NonFiniteRhs {
                t,
                component,
                value: f0[component],
            }),
            None => {
                self.s.u.copy_from_slice(u);
                self.s.k[..n].copy_from_slice(&f0);
                self.fsal_pending = false;
                if let Some(r) = self.s.radau.as_mut() {
                    r.have_cont = false;
                }
                self.has_step = false;
                self.dense_ready = false;
                Ok(())
            }
        };
        self.s.delta = f0;
        result
    }

    /// Moves to `t` inside (or at the end of) the step just accepted with state `u` (an event after its
    /// jump): f(t, u) is evaluated, the tstops after t are ahead again, and the next step starts from
    /// (t, u) with the step size the controller proposed.
    ///
    /// # Errors
    /// As [`ImplicitIntegrator::set_state`]; [`SolverError::NonFiniteInput`] for a non-finite t.
    pub fn restart_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        crate::problem::check_finite("restart time", &[t])?;
        let t_old = self.s.t;
        self.s.t = t;
        if let Err(e) = self.set_state(u) {
            self.s.t = t_old;
            return Err(e);
        }
        self.schedule.rewind(t);
        Ok(())
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.s.scheme
    }

    /// The sparsity pattern of the iteration matrix and the column colouring of its Jacobian, when the
    /// solve factors it by sparse LU (`None`: dense LU). Derivative code uses them for the exact stage
    /// matrices, so that a sparse problem never meets a dense n × n matrix.
    pub fn sparsity(&self) -> Option<(&SparsityPattern, &[usize], usize)> {
        match (&self.s.lu, &self.s.jw.colors) {
            (Lu::Sparse(lu), Some((colors, count))) => Some((lu.pattern(), colors, *count)),
            _ => None,
        }
    }

    /// What the controller is told about an attempt with error norm `err` and step size `h`.
    fn feedback(&self, err: f64, h: f64) -> StepFeedback {
        let (newton_iterations, newton_max) = match self.s.radau.as_ref() {
            Some(r) => (r.newt, self.s.newton.max_iterations),
            // The ESDIRKs report no iteration count (see `crate::control`): with it the step sequence
            // jumped with an integer count, and finite differences of Van der Pol μ = 1000 at tol 1e-10
            // disagreed with the exact tangents by 6e-4 instead of 1e-5.
            None => (0, 0),
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
        self.has_step = false;
        if self.fsal_pending {
            // FSAL: the last stage is f(t_{n+1}, u_{n+1}).
            self.s.k.copy_within((stages - 1) * n..stages * n, 0);
            self.fsal_pending = false;
        }
        let radau = self.s.scheme == Scheme::Radau5;
        let mut newton_failed = false;
        loop {
            let attempt = match self.schedule.attempt(self.s.t, self.h_abs) {
                Ok(attempt) => attempt,
                Err(Refusal::MaxSteps) => {
                    return Err(SolverError::MaxStepsReached {
                        t: self.s.t,
                        max_steps: self.schedule.max_steps(),
                    });
                }
                Err(Refusal::TooSmall { h }) => {
                    if let (true, Some(e)) = (newton_failed, self.s.non_finite_error()) {
                        return Err(e);
                    }
                    return Err(if newton_failed {
                        SolverError::NewtonFailed { t: self.s.t, h }
                    } else {
                        SolverError::StepSizeTooSmall { t: self.s.t, h }
                    });
                }
            };
            let (h, hits) = (attempt.h, attempt.hits_stop);
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
                    if self.schedule.non_finite() || self.fixed_step.is_some() {
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
            self.schedule.accepted(&attempt);
            self.s.stats.accepted_steps += 1;
            self.t_prev = self.s.t;
            self.h_last = h;
            self.s.t = attempt.t_new;
            std::mem::swap(&mut self.s.u, &mut self.s.u_new);
            self.s.jac_fresh = false;
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
            self.has_step = true;
            self.dense_ready = false;
            return Ok(self.last_step());
        }
    }

    /// The kind of continuous extension of this scheme's steps.
    fn dense_kind(&self) -> DenseKind {
        self.s.scheme.dense_kind()
    }

    /// The coefficients of the last accepted step's continuous extension into `dense_k`, once per step.
    fn ensure_dense(&mut self, call: &'static str) -> Result<(), SolverError> {
        if !self.has_step {
            return Err(SolverError::Misuse {
                call,
                expected: "called after a step was accepted and before the next attempt",
            });
        }
        if self.dense_ready {
            return Ok(());
        }
        let kind = self.dense_kind();
        let (n, h) = (self.s.n, self.h_last);
        let last = self.s.scheme.stages() - 1;
        let k = &mut self.dense_k;
        for m in 0..n {
            let delta = (self.s.u[m] - self.s.u_new[m]) / h;
            match kind {
                DenseKind::Hermite => {
                    k[m] = self.s.k[m];
                    k[n + m] = self.s.k[last * n + m];
                    k[2 * n + m] = delta;
                }
                _ => k[m] = delta,
            }
        }
        if let Some(r) = self.s.radau.as_ref() {
            for (x, c) in k[n..].iter_mut().zip(&r.cont) {
                *x = c / h;
            }
        }
        self.dense_ready = true;
        Ok(())
    }

    /// u at `t` in [t_n, t_{n+1}] of the step just accepted, by the scheme's continuous extension
    /// (ESDIRK: cubic Hermite; Radau: the collocation polynomial).
    ///
    /// # Errors
    /// [`SolverError::Misuse`] unless a step was just accepted.
    pub fn interpolate(&mut self, t: f64, out: &mut [f64]) -> Result<(), SolverError> {
        self.ensure_dense("ImplicitIntegrator::interpolate")?;
        let kind = self.dense_kind();
        let (t_n, h) = (self.t_prev, self.h_last);
        kind.eval_step(
            (t_n, h, t),
            &self.s.u_new,
            &self.dense_k,
            out,
            &mut self.dense_w,
        );
        Ok(())
    }

    /// Appends the step just accepted to `dense` (made by [`ImplicitIntegrator::new_dense_output`]).
    ///
    /// # Errors
    /// As [`ImplicitIntegrator::interpolate`].
    pub fn push_dense(&mut self, dense: &mut DenseOutput) -> Result<(), SolverError> {
        self.ensure_dense("ImplicitIntegrator::push_dense")?;
        dense.push(self.t_prev, self.h_last, &self.s.u_new, &self.dense_k);
        Ok(())
    }

    /// An empty dense output for this scheme's steps.
    pub fn new_dense_output(&self) -> DenseOutput {
        DenseOutput::with_kind(self.dense_kind(), self.s.n)
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
        (cp.next_stop, cp.steps) = self.schedule.position();
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
        self.schedule.restore((cp.next_stop, cp.steps));
        self.fsal_pending = false;
        self.has_step = false;
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
    fn set_state(&mut self, u: &[f64]) -> Result<(), SolverError> {
        ImplicitIntegrator::set_state(self, u)
    }
    fn restart_at(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        ImplicitIntegrator::restart_at(self, t, u)
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
    fn interpolate(&mut self, t: f64, out: &mut [f64]) -> Result<(), SolverError> {
        ImplicitIntegrator::interpolate(self, t, out)
    }
    fn push_dense(&mut self, dense: &mut DenseOutput) -> Result<(), SolverError> {
        ImplicitIntegrator::push_dense(self, dense)
    }
    fn new_dense_output(&self) -> DenseOutput {
        ImplicitIntegrator::new_dense_output(self)
    }
}
