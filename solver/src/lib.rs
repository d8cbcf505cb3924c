//! # odesens-solver
//!
//! Runge–Kutta integrators, explicit and implicit, with adaptive steps (step-size controllers as types,
//! [`control`]; Hairer's initial step), exact tstops, save times by dense output, a fixed-step mode, the
//! methods' own continuous extensions, and dense or sparse LU for the implicit ones ([`linalg`]).
//! The model interface [`OdeSystem`] is generic over the scalar type so that the sensitivity crate can
//! differentiate it exactly by forward-mode AD.
//!
//! | method | order | stages | FSAL | dense-output order |
//! |---|---|---|---|---|
//! | [`Method::Tsit5`] (default) | 5(4) | 7 | yes | 4 |
//! | [`Method::Dp5`] | 5(4) | 7 | yes | 4 |
//! | [`Method::Bs3`] | 3(2) | 4 | yes | 3 |
//! | [`Method::Vern7`] | 7(6) | 10 (+6 lazy) | no | 7 |
//! | [`Method::Vern9`] | 9(8) | 16 (+10 lazy) | no | 9 |
//! | [`Method::TrBdf2`] (implicit, stiff; [`solve`], [`ImplicitIntegrator`]) | 2(3) | 3 | yes | 3 (Hermite) |
//! | [`Method::Kvaerno5`] (implicit, stiff; [`solve`], [`ImplicitIntegrator`]) | 5(4) | 7 | yes | 3 (Hermite) |
//! | [`Method::RadauIIA5`] (implicit, stiff; [`solve`], [`ImplicitIntegrator`]) | 5(3) | 3 | no | 3 (collocation) |
//! | [`Method::Bdf`] (multistep, stiff; [`solve`], [`BdfIntegrator`]) | 1–5 (variable) | 1 (Newton) | — | k (interpolating polynomial) |
//! | [`Method::Ndf`] (ode15s' NDF, same code) | 1–5 (variable) | 1 (Newton) | — | k |
//! | [`Method::AutoTsit5Radau5`] (opt-in switching; [`solve`]) | — | — | — | — |
#![warn(missing_docs)]
#![allow(clippy::excessive_precision)]

pub mod control;
mod driver;
mod erk;
mod error;
mod event_spec;
pub mod events;
mod fastmath;
mod implicit;
pub mod krylov;
pub mod linalg;
mod options;
mod problem;
mod schedule;
mod solution;
mod stepper;
mod system;
pub mod tableau;

pub use control::{Controller, PiController, PredictiveController};
pub use driver::solve;
pub use erk::{AcceptedStep, Checkpoint, Integrator, ProposedStep, StepOutcome, StepReplay};
pub use error::SolverError;
pub use events::{Direction, EventAction, EventHit, EventLocator, EventSpec, Trigger};
pub use implicit::bdf::{
    BdfCheckpoint, BdfIntegrator, BdfStep, DifferenceMap, QUADRATURE as BDF_QUADRATURE,
};
pub use implicit::{
    ImplicitCheckpoint, ImplicitIntegrator, ImplicitStep, Scheme, collocation_differences,
};
pub use options::{Atol, ImplicitConfig, LinearSolverKind, Saving, SolverOptions};
pub use problem::{OdeProblem, check_times, detect_pattern};
pub use solution::{DenseOutput, Solution, Statistics};
pub use stepper::{StepStages, Stepper};
pub use system::{OdeSystem, Scalar};
pub use tableau::radau5 as radau;
pub use tableau::{EsdirkTableau, ExplicitTableau, Method};

/// Re-export of the dual-number crate, so models can name its traits without a separate dependency.
pub use num_dual;
