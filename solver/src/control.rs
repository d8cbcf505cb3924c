//! Step-size controllers: settings as types behind one trait, their memory as a small separate state.
//!
//! A step of size h with scaled error norm err (≤ 1 accepted) proposes the next size h' = q·h. With
//! k = (the order the error estimate is of) + 1 — the embedded order + 1 for explicit pairs, the lower
//! of the two orders + 1 for the ESDIRK pairs, 4 for Radau IIA5 (its estimate is of order 3):
//!
//! - [`PiController`] (Gustafsson 1991; Hairer & Wanner, *Solving ODEs II*, §IV.2, eq. (2.43c)):
//!   q = clamp(safety · err_n^(−β1/k) · err_{n−1}^(β2/k), q_min, q_max), no growth right after a
//!   rejection, q = max(q_min, safety · err^(−1/k)) after one. The explicit methods' default.
//! - [`PredictiveController`] (Gustafsson, "Control-theoretic techniques for stepsize selection in
//!   implicit Runge–Kutta methods", ACM TOMS 20 (1994); RADAU5, Hairer & Wanner II §IV.8, eq. (8.21)):
//!   q = min(q_I, q_G) with the I-controller q_I = fac · err_n^(−1/k), fac = min(safety,
//!   safety·(2m + 1)/(m_n + 2m)) lowered when Newton needed many of its m iterations (Radau reports
//!   its iterations, as RADAU5; the ESDIRKs report none, since a step sequence that jumps with an
//!   integer count made finite-difference checks of their sensitivities noisy), and the predictive
//!   q_G = safety · (h_n / h_{n−1}) · (err_{n−1} / err_n²)^(1/k), both clamped to [q_min, q_max]. It
//!   anticipates a growing error instead of reacting to it, which cuts rejected steps of stiff solves.
//!   The implicit methods' default.
//!
//! [`Controller`] names one of them in [`crate::SolverOptions`]; every adaptive method honours every
//! controller (fixed-step solves have none).

use serde::{Deserialize, Serialize};

use crate::error::SolverError;
use crate::fastmath;

/// The PI controller's memory of the previous error norm is floored here (as in OrdinaryDiffEq's
/// `qoldinit`), so that one very accurate step does not license a huge next one.
const MIN_ERR_PREV: f64 = 1e-4;

/// What a controller is told about a step attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFeedback {
    /// The scaled error norm (≤ 1: accepted).
    pub err: f64,
    /// |h| of the attempt.
    pub h: f64,
    /// k: the error estimate's order + 1.
    pub k: f64,
    /// Newton iterations the attempt took (0 for explicit methods), and the most it may take.
    pub newton_iterations: usize,
    /// The iteration limit of the method's Newton solver (0 for explicit methods).
    pub newton_max: usize,
    /// Whether the previous attempt was rejected.
    pub after_rejection: bool,
}

/// A controller's memory between steps (what a checkpoint must hold to replay the steps bit for bit).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ControllerMemory {
    /// PI: β2/k · log2(err_{n−1}).
    pub err_prev_log: f64,
    /// Predictive: |h| and error norm of the last accepted step (0 before the first).
    pub h_accepted: f64,
    /// See [`ControllerMemory::h_accepted`].
    pub err_accepted: f64,
}

/// A step-size controller: immutable settings; the memory lives beside it in the integrator.
pub trait StepController {
    /// The memory a solve starts with, for a method whose estimate has order k − 1.
    fn initial_memory(&self, k: f64) -> ControllerMemory;
    /// The next |h| after an accepted step (`fb.err` ≤ 1), updating the memory.
    fn accepted(&self, memory: &mut ControllerMemory, fb: &StepFeedback) -> f64;
    /// The |h| to retry with after a rejected step (`fb.err` > 1).
    fn rejected(&self, memory: &mut ControllerMemory, fb: &StepFeedback) -> f64;
    /// Checks the settings.
    ///
    /// # Errors
    /// [`SolverError::InvalidOption`] naming the setting and its valid range.
    fn validate(&self) -> Result<(), SolverError>;
}

/// The PI step-size controller (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PiController {
    /// Safety factor (default 0.9).
    pub safety: f64,
    /// Proportional gain numerator: β1 = beta1 / k (default 0.7).
    pub beta1: f64,
    /// Integral gain numerator: β2 = beta2 / k (default 0.4).
    pub beta2: f64,
    /// Smallest step ratio h_{n+1}/h_n (default 0.2).
    pub q_min: f64,
    /// Largest step ratio h_{n+1}/h_n (default 10).
    pub q_max: f64,
}

impl Default for PiController {
    fn default() -> Self {
        Self {
            safety: 0.9,
            beta1: 0.7,
            beta2: 0.4,
            q_min: 0.2,
            q_max: 10.0,
        }
    }
}

impl StepController for PiController {
    fn initial_memory(&self, k: f64) -> ControllerMemory {
        ControllerMemory {
            err_prev_log: self.beta2 / k * fastmath::log2(MIN_ERR_PREV),
            ..Default::default()
        }
    }

    /// q = safety · err^(−β1/k) · err_prev^(β2/k), by one log2 and one exp2 of `fastmath`.
    #[inline]
    fn accepted(&self, memory: &mut ControllerMemory, fb: &StepFeedback) -> f64 {
        let q_max = if fb.after_rejection { 1.0 } else { self.q_max };
        let log_err = fastmath::log2(fb.err.max(f64::MIN_POSITIVE));
        let q = (self.safety * fastmath::exp2(memory.err_prev_log - self.beta1 / fb.k * log_err))
            .clamp(self.q_min, q_max);
        memory.err_prev_log = self.beta2 / fb.k * log_err.max(fastmath::log2(MIN_ERR_PREV));
        fb.h * q
    }

    #[inline]
    fn rejected(&self, _memory: &mut ControllerMemory, fb: &StepFeedback) -> f64 {
        fb.h * (self.safety * fastmath::exp2(-(1.0 / fb.k) * fastmath::log2(fb.err)))
            .max(self.q_min)
    }

    fn validate(&self) -> Result<(), SolverError> {
        check_safety(self.safety)?;
        in_range(
            "controller.beta1",
            self.beta1,
            self.beta1.is_finite() && self.beta1 > 0.0,
            "finite, > 0",
        )?;
        in_range(
            "controller.beta2",
            self.beta2,
            self.beta2.is_finite() && self.beta2 >= 0.0,
            "finite, >= 0",
        )?;
        check_ratio_limits(self.q_min, self.q_max)
    }
}

/// Gustafsson's predictive controller (see the module docs); RADAU5's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictiveController {
    /// Safety factor (default 0.9).
    pub safety: f64,
    /// Smallest step ratio h_{n+1}/h_n (default 0.2).
    pub q_min: f64,
    /// Largest step ratio h_{n+1}/h_n (default 8).
    pub q_max: f64,
    /// The step ratio after a rejection of the very first step (default 0.1, as RADAU5).
    pub q_first_rejection: f64,
}

impl Default for PredictiveController {
    fn default() -> Self {
        Self {
            safety: 0.9,
            q_min: 0.2,
            q_max: 8.0,
            q_first_rejection: 0.1,
        }
    }
}

impl PredictiveController {
    /// h/h' of the I-controller part, err^(1/k)/fac, clamped (RADAU5's QUOT).
    #[inline]
    fn quotient(&self, fb: &StepFeedback) -> f64 {
        let fac = if fb.newton_max == 0 {
            self.safety
        } else {
            let m = fb.newton_max;
            let cfac = self.safety * (1.0 + 2.0 * m as f64);
            self.safety
                .min(cfac / (fb.newton_iterations + 2 * m) as f64)
        };
        (fb.err.powf(1.0 / fb.k) / fac).clamp(1.0 / self.q_max, 1.0 / self.q_min)
    }
}

impl StepController for PredictiveController {
    fn initial_memory(&self, _k: f64) -> ControllerMemory {
        ControllerMemory::default()
    }

    fn accepted(&self, memory: &mut ControllerMemory, fb: &StepFeedback) -> f64 {
        let err = fb.err.max(1e-10);
        let fb = StepFeedback { err, ..*fb };
        let mut quot = self.quotient(&fb);
        if memory.h_accepted != 0.0 {
            let facgus = (memory.h_accepted / fb.h)
                * (err * err / memory.err_accepted).powf(1.0 / fb.k)
                / self.safety;
            quot = quot.max(facgus.clamp(1.0 / self.q_max, 1.0 / self.q_min));
        }
        memory.h_accepted = fb.h;
        memory.err_accepted = err.max(1e-2);
        let h = fb.h / quot;
        if fb.after_rejection { h.min(fb.h) } else { h }
    }

    fn rejected(&self, memory: &mut ControllerMemory, fb: &StepFeedback) -> f64 {
        if memory.h_accepted == 0.0 {
            fb.h * self.q_first_rejection
        } else {
            fb.h / self.quotient(fb)
        }
    }

    fn validate(&self) -> Result<(), SolverError> {
        check_safety(self.safety)?;
        in_range(
            "controller.q_first_rejection",
            self.q_first_rejection,
            self.q_first_rejection > 0.0 && self.q_first_rejection < 1.0,
            "in (0, 1)",
        )?;
        check_ratio_limits(self.q_min, self.q_max)
    }
}

/// The step-size controller of a solve ([`crate::SolverOptions::controller`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Controller {
    /// The method's own: [`PiController`] for explicit methods, [`PredictiveController`] for the
    /// implicit ones (used directly as a [`StepController`], it acts as the default PI controller).
    #[default]
    MethodDefault,
    /// A PI controller, for any method.
    Pi(PiController),
    /// Gustafsson's predictive controller, for any method (explicit methods take no Newton
    /// iterations, so its safety factor is not lowered for them).
    Predictive(PredictiveController),
}

impl From<PiController> for Controller {
    fn from(c: PiController) -> Self {
        Controller::Pi(c)
    }
}

impl From<PredictiveController> for Controller {
    fn from(c: PredictiveController) -> Self {
        Controller::Predictive(c)
    }
}

impl Controller {
    /// The controller a method runs: [`Controller::MethodDefault`] resolved (`implicit`: the method is
    /// implicit).
    pub fn resolve(self, implicit: bool) -> Controller {
        match (self, implicit) {
            (Controller::MethodDefault, false) => Controller::Pi(PiController::default()),
            (Controller::MethodDefault, true) => {
                Controller::Predictive(PredictiveController::default())
            }
            (c, _) => c,
        }
    }
}

impl Controller {
    /// The smallest step ratio h'/h the controller allows (the shrink after a non-finite trial step).
    pub fn q_min(&self) -> f64 {
        match self {
            Controller::Pi(c) => c.q_min,
            Controller::Predictive(c) => c.q_min,
            Controller::MethodDefault => PiController::default().q_min,
        }
    }
}

impl StepController for Controller {
    fn initial_memory(&self, k: f64) -> ControllerMemory {
        match self {
            Controller::Pi(c) => c.initial_memory(k),
            Controller::Predictive(c) => c.initial_memory(k),
            Controller::MethodDefault => PiController::default().initial_memory(k),
        }
    }

    #[inline]
    fn accepted(&self, memory: &mut ControllerMemory, fb: &StepFeedback) -> f64 {
        match self {
            Controller::Pi(c) => c.accepted(memory, fb),
            Controller::Predictive(c) => c.accepted(memory, fb),
            Controller::MethodDefault => PiController::default().accepted(memory, fb),
        }
    }

    #[inline]
    fn rejected(&self, memory: &mut ControllerMemory, fb: &StepFeedback) -> f64 {
        match self {
            Controller::Pi(c) => c.rejected(memory, fb),
            Controller::Predictive(c) => c.rejected(memory, fb),
            Controller::MethodDefault => PiController::default().rejected(memory, fb),
        }
    }

    fn validate(&self) -> Result<(), SolverError> {
        match self {
            Controller::Pi(c) => c.validate(),
            Controller::Predictive(c) => c.validate(),
            Controller::MethodDefault => Ok(()),
        }
    }
}

/// `Ok` when `ok`, else [`SolverError::InvalidOption`] naming the setting and its valid range.
pub(crate) fn in_range(
    name: &'static str,
    value: f64,
    ok: bool,
    valid: &'static str,
) -> Result<(), SolverError> {
    if ok {
        Ok(())
    } else {
        Err(SolverError::InvalidOption { name, value, valid })
    }
}

fn check_safety(safety: f64) -> Result<(), SolverError> {
    in_range(
        "controller.safety",
        safety,
        safety > 0.0 && safety <= 1.0,
        "in (0, 1]",
    )
}

fn check_ratio_limits(q_min: f64, q_max: f64) -> Result<(), SolverError> {
    in_range(
        "controller.q_min",
        q_min,
        q_min > 0.0 && q_min < 1.0,
        "in (0, 1)",
    )?;
    in_range(
        "controller.q_max",
        q_max,
        q_max > 1.0 && q_max.is_finite(),
        "finite, > 1",
    )
}
