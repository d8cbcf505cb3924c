//! Solver settings: method, tolerances, step control, what to save.

use serde::{Deserialize, Serialize};

use crate::control::{Controller, StepController, in_range};
use crate::error::SolverError;
use crate::tableau::Method;

/// Absolute tolerance: one value for all components, or one per component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Atol {
    /// The same atol for every component.
    Scalar(f64),
    /// atol_i for component i (length n).
    PerComponent(Vec<f64>),
}

impl From<f64> for Atol {
    fn from(v: f64) -> Self {
        Atol::Scalar(v)
    }
}

impl From<Vec<f64>> for Atol {
    fn from(v: Vec<f64>) -> Self {
        Atol::PerComponent(v)
    }
}

/// Which solution values a solve stores.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Saving {
    /// t0 and every accepted step (the default).
    #[default]
    EveryStep,
    /// Exactly these times, in the direction of integration, computed by the method's dense output
    /// (a time equal to a step end takes the step's value itself).
    At(Vec<f64>),
    /// Only the final state.
    EndOnly,
}

/// Settings of a solve. Build with [`SolverOptions::default`] and the builder methods; everything is
/// validated when the solve starts.
///
/// ```
/// use odesens_solver::{Method, SolverOptions};
/// let opts = SolverOptions::default().method(Method::Vern7).rtol(1e-10).atol(1e-12).save_at(vec![0.5, 1.0]);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolverOptions {
    /// The Runge–Kutta pair (default Tsit5).
    pub method: Method,
    /// Relative tolerance, 0 ≤ rtol < 1 (default 1e-6).
    pub rtol: f64,
    /// Absolute tolerance(s), ≥ 0 (default 1e-6).
    pub atol: Atol,
    /// Initial step size magnitude; `None` chooses it by Hairer's algorithm.
    pub h0: Option<f64>,
    /// Largest step size magnitude (default ∞).
    pub h_max: f64,
    /// Maximum number of steps, accepted plus rejected (default 100 000).
    pub max_steps: usize,
    /// What to store.
    pub saving: Saving,
    /// Times the integrator must step to exactly (observation times, discontinuities); t_end is always one.
    pub tstops: Vec<f64>,
    /// Store every step's stages so that [`crate::Solution::interpolate`] works anywhere in the span.
    /// Verner methods then also evaluate their extra interpolation stages on every step.
    pub dense: bool,
    /// Fixed step size magnitude: no error control, steps of this size (the last one before each tstop
    /// shortened or stretched by at most 1% to land on it).
    pub fixed_step: Option<f64>,
    /// The step-size controller (default: the method's own, [`Controller::MethodDefault`]).
    pub controller: Controller,
    /// Error-control only the first k components (`None`: all). The others (e.g. quadratures riding
    /// along) are integrated with the same steps but do not vote on them: the "seminorm" of Kidger,
    /// Chen & Lyons, "Hey, that's not an ODE" (2021).
    pub error_norm_components: Option<usize>,
    /// Settings only the implicit methods use: linear algebra, Newton, Jacobian and LU reuse.
    pub implicit: ImplicitConfig,
    /// Events: interior points of each step at which the conditions are sampled, besides the step's
    /// end, so that several crossings inside one step are found (default 4; 0 tests the ends only).
    #[serde(default = "default_event_samples")]
    pub event_samples: usize,
    /// Events: the most that may fire in one solve before [`SolverError::TooManyEvents`] (default
    /// 100 000).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
}

fn default_event_samples() -> usize {
    4
}

fn default_max_events() -> usize {
    100_000
}

/// Settings of the implicit methods' nonlinear and linear solves (Hairer & Wanner, *Solving ODEs II*,
/// §IV.8). Explicit methods ignore them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImplicitConfig {
    /// Linear algebra of the iteration matrix (default [`LinearSolverKind::Auto`]).
    pub linear_solver: LinearSolverKind,
    /// Newton iterations per stage system before the attempt counts as failed (`None`: the method's
    /// own, 8 for the ESDIRKs, 7 for Radau IIA5 as in RADAU5).
    pub newton_max_iterations: Option<usize>,
    /// ESDIRKs: Newton has converged when θ/(1 − θ)·‖ΔY‖ ≤ κ in the error norm (θ the contraction
    /// rate); default κ = 0.03. (Radau uses RADAU5's own rule, which scales with rtol.)
    pub newton_kappa: f64,
    /// ESDIRKs: the factorization of I − hγJ is kept while hγ stays within this relative change of the
    /// factored one (default 0.2; 0 refactors whenever h changes).
    pub lu_reuse: f64,
    /// ESDIRKs: the Jacobian is recomputed after an accepted step whose Newton iteration contracted
    /// more slowly than this rate (default 0.3); otherwise only when Newton fails.
    pub jacobian_refresh_rate: f64,
    /// BDF/NDF ([`Method::Bdf`], [`Method::Ndf`]): the highest order, 1 ..= 5 (default 5; ode15s'
    /// `MaxOrder`, CVODE's `maxord`). Lower it for problems whose eigenvalues lie near the imaginary
    /// axis, where the higher orders are not stable.
    #[serde(default = "default_bdf_max_order")]
    pub bdf_max_order: usize,
}

fn default_bdf_max_order() -> usize {
    crate::tableau::BDF_MAX_ORDER
}

impl Default for ImplicitConfig {
    fn default() -> Self {
        Self {
            linear_solver: LinearSolverKind::Auto,
            newton_max_iterations: None,
            newton_kappa: 0.03,
            lu_reuse: 0.2,
            jacobian_refresh_rate: 0.3,
            bdf_max_order: default_bdf_max_order(),
        }
    }
}

impl ImplicitConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`SolverError::InvalidOption`] naming the setting and its valid range.
    pub fn validate(&self) -> Result<(), SolverError> {
        if let Some(m) = self.newton_max_iterations {
            in_range(
                "implicit.newton_max_iterations",
                m as f64,
                (1..=100).contains(&m),
                "1 ..= 100",
            )?;
        }
        let kappa = self.newton_kappa;
        in_range(
            "implicit.newton_kappa",
            kappa,
            kappa > 0.0 && kappa < 1.0,
            "in (0, 1)",
        )?;
        let reuse = self.lu_reuse;
        in_range(
            "implicit.lu_reuse",
            reuse,
            (0.0..1.0).contains(&reuse),
            "in [0, 1)",
        )?;
        let rate = self.jacobian_refresh_rate;
        in_range(
            "implicit.jacobian_refresh_rate",
            rate,
            rate > 0.0 && !rate.is_nan(),
            "> 0 (may be ∞: refresh only when Newton fails)",
        )?;
        if let LinearSolverKind::Gmres {
            restart,
            preconditioner,
        } = self.linear_solver
        {
            in_range(
                "implicit.linear_solver.restart",
                restart as f64,
                (1..=500).contains(&restart),
                "1 ..= 500",
            )?;
            if let crate::krylov::PreconditionerKind::BlockJacobi { block } = preconditioner {
                in_range(
                    "implicit.linear_solver.preconditioner.block",
                    block as f64,
                    block >= 1,
                    "≥ 1",
                )?;
            }
        }
        let order = self.bdf_max_order;
        in_range(
            "implicit.bdf_max_order",
            order as f64,
            (1..=crate::tableau::BDF_MAX_ORDER).contains(&order),
            "1 ..= 5",
        )
    }
}

/// How implicit methods store and factor the iteration matrix I − hγJ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinearSolverKind {
    /// Dense below 64 states; from 64 on, sparse when the Jacobian's pattern (declared by
    /// [`crate::OdeSystem::jacobian_sparsity`] or detected) fills at most 10 % of the matrix.
    #[default]
    Auto,
    /// Dense LU; the Jacobian by n forward-mode passes.
    Dense,
    /// Sparse LU; the Jacobian by one forward-mode pass per colour of its pattern.
    Sparse,
    /// Matrix-free Newton–Krylov ([`Method::Bdf`](crate::Method::Bdf) and
    /// [`Method::Ndf`](crate::Method::Ndf)): each Newton correction solves (I − cJ(y)) Δ = r by
    /// restarted GMRES ([`crate::krylov::Gmres`]) with J(y)v by one forward-mode pass (or the model's
    /// [`crate::OdeSystem::jvp`]) at the current iterate — an inexact Newton method, no n × n matrix
    /// anywhere. The linear tolerance is CVODE's ε_lin rule (Hindmarsh et al., ACM TOMS 31 (2005)
    /// §2.1): the residual's weighted RMS norm at most 0.05 × the Newton tolerance; at most
    /// `5 × restart` iterations, after which the Newton iteration counts as failed (the step is retried
    /// smaller, with a fresh preconditioner). The preconditioner is set up where the direct path would
    /// refactor (c drifting by more than `lu_reuse`, every 20 steps, after a Newton failure).
    Gmres {
        /// Krylov vectors kept before a restart (1 ..= 500; 20 is a good start). Memory: (restart + 1) n.
        restart: usize,
        /// The right preconditioner.
        preconditioner: crate::krylov::PreconditionerKind,
    },
}

impl Default for SolverOptions {
    fn default() -> Self {
        Self {
            method: Method::Tsit5,
            rtol: 1e-6,
            atol: Atol::Scalar(1e-6),
            h0: None,
            h_max: f64::INFINITY,
            max_steps: 100_000,
            saving: Saving::EveryStep,
            tstops: Vec::new(),
            dense: false,
            fixed_step: None,
            controller: Controller::MethodDefault,
            error_norm_components: None,
            implicit: ImplicitConfig::default(),
            event_samples: default_event_samples(),
            max_events: default_max_events(),
        }
    }
}

impl SolverOptions {
    /// Sets the method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }
    /// Sets the relative tolerance.
    pub fn rtol(mut self, rtol: f64) -> Self {
        self.rtol = rtol;
        self
    }
    /// Sets the absolute tolerance (scalar, or a `Vec` per component).
    pub fn atol(mut self, atol: impl Into<Atol>) -> Self {
        self.atol = atol.into();
        self
    }
    /// Sets rtol and a scalar atol to the same value.
    pub fn tol(self, tol: f64) -> Self {
        self.rtol(tol).atol(tol)
    }
    /// Sets the initial step size magnitude.
    pub fn h0(mut self, h0: f64) -> Self {
        self.h0 = Some(h0);
        self
    }
    /// Sets the largest step size magnitude.
    pub fn h_max(mut self, h_max: f64) -> Self {
        self.h_max = h_max;
        self
    }
    /// Sets the maximum number of steps.
    pub fn max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = max_steps;
        self
    }
    /// Saves at exactly these times.
    pub fn save_at(mut self, times: Vec<f64>) -> Self {
        self.saving = Saving::At(times);
        self
    }
    /// Saves t0 and every step.
    pub fn save_every_step(mut self) -> Self {
        self.saving = Saving::EveryStep;
        self
    }
    /// Saves only the final state.
    pub fn save_end_only(mut self) -> Self {
        self.saving = Saving::EndOnly;
        self
    }
    /// Sets the tstops.
    pub fn tstops(mut self, tstops: Vec<f64>) -> Self {
        self.tstops = tstops;
        self
    }
    /// Chooses the linear algebra of implicit methods (a shortcut for `implicit.linear_solver`).
    pub fn linear_solver(mut self, kind: LinearSolverKind) -> Self {
        self.implicit.linear_solver = kind;
        self
    }
    /// Sets the implicit methods' configuration.
    pub fn implicit(mut self, config: ImplicitConfig) -> Self {
        self.implicit = config;
        self
    }

    /// Turns dense output on or off.
    pub fn dense(mut self, dense: bool) -> Self {
        self.dense = dense;
        self
    }
    /// Error-control only the first `k` components (see [`SolverOptions::error_norm_components`]).
    pub fn error_norm_components(mut self, k: usize) -> Self {
        self.error_norm_components = Some(k);
        self
    }

    /// Sets the interior points per step at which event conditions are sampled.
    pub fn event_samples(mut self, samples: usize) -> Self {
        self.event_samples = samples;
        self
    }
    /// Sets the most events one solve may fire.
    pub fn max_events(mut self, max_events: usize) -> Self {
        self.max_events = max_events;
        self
    }

    /// Fixed-step mode with step size magnitude `h`.
    pub fn fixed_step(mut self, h: f64) -> Self {
        self.fixed_step = Some(h);
        self
    }
    /// Sets the step-size controller (a [`crate::PiController`], a [`crate::PredictiveController`] or
    /// a [`Controller`]).
    pub fn controller(mut self, controller: impl Into<Controller>) -> Self {
        self.controller = controller.into();
        self
    }

    /// Checks every setting for a system with `n` components; returns atol expanded to length n.
    pub(crate) fn validated_atol(&self, n: usize) -> Result<Vec<f64>, SolverError> {
        if !(self.rtol.is_finite() && (0.0..1.0).contains(&self.rtol)) {
            return Err(SolverError::InvalidTolerance {
                name: "rtol".into(),
                value: self.rtol,
                valid: "finite, 0 <= rtol < 1",
            });
        }
        let atol = match &self.atol {
            Atol::Scalar(a) => vec![*a; n],
            Atol::PerComponent(v) => {
                if v.len() != n {
                    return Err(SolverError::DimensionMismatch {
                        what: "atol",
                        expected: n,
                        got: v.len(),
                    });
                }
                v.clone()
            }
        };
        for (i, &a) in atol.iter().enumerate() {
            if !(a.is_finite() && a >= 0.0) {
                return Err(SolverError::InvalidTolerance {
                    name: format!("atol[{i}]"),
                    value: a,
                    valid: "finite, >= 0",
                });
            }
            if a == 0.0 && self.rtol == 0.0 && self.fixed_step.is_none() {
                return Err(SolverError::InvalidTolerance {
                    name: format!("atol[{i}]"),
                    value: a,
                    valid: "> 0 when rtol = 0",
                });
            }
        }
        let positive = |name: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(SolverError::InvalidOption {
                    name,
                    value: v,
                    valid: "finite and > 0",
                })
            }
        };
        if let Some(h0) = self.h0 {
            positive("h0", h0)?;
        }
        if let Some(h) = self.fixed_step {
            positive("fixed_step", h)?;
        }
        if self.h_max.is_nan() || self.h_max <= 0.0 {
            return Err(SolverError::InvalidOption {
                name: "h_max",
                value: self.h_max,
                valid: "> 0 (may be ∞)",
            });
        }
        if let Some(k) = self.error_norm_components
            && !(1..=n).contains(&k)
        {
            return Err(SolverError::InvalidOption {
                name: "error_norm_components",
                value: k as f64,
                valid: "1 ..= number of states",
            });
        }
        if self.max_steps == 0 {
            return Err(SolverError::InvalidOption {
                name: "max_steps",
                value: 0.0,
                valid: ">= 1",
            });
        }
        self.controller.validate()?;
        self.implicit.validate()?;
        Ok(atol)
    }
}
