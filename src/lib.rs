//! # odesens
//!
//! Solve ordinary differential equations and compute how their solutions change with parameters and
//! initial values. This crate is the facade: it re-exports the solver ([`odesens_solver`]) and the
//! sensitivity crate ([`odesens_sensitivity`]), and holds the shared [`models`] used by tests,
//! examples and benches.
//!
//! ```
//! use odesens::prelude::*;
//! use odesens::models::DoublePendulum;
//!
//! let problem = OdeProblem::new(
//!     DoublePendulum,
//!     vec![2.0, 2.0, 0.0, 0.0],
//!     DoublePendulum::standard_params(),
//!     (0.0, 10.0),
//! )
//! .unwrap();
//! let sol = solve(&problem, &SolverOptions::default().tol(1e-8)).unwrap();
//! assert!(sol.stats.accepted_steps > 100);
//! ```
#![warn(missing_docs)]

/// Models with known behaviour ([`odesens_models`]).
pub use odesens_models as models;

pub use odesens_sensitivity as sensitivity;
pub use odesens_solver as solver;
pub use odesens_solver::*;

/// The names most programs need.
pub mod prelude {
    pub use odesens_solver::{
        Atol, Controller, Direction, EventAction, EventSpec, Integrator, Method, OdeProblem,
        OdeSystem, PiController, PredictiveController, Saving, Scalar, Solution, SolverError,
        SolverOptions, Statistics, StepOutcome, StepReplay, solve,
    };
}

/// The README's Rust examples, compiled and run as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The docs pages' Rust examples, compiled and run as doc tests.
#[doc = include_str!("../docs/derivatives.md")]
#[cfg(doctest)]
pub struct DocsDerivatives;

/// See [`DocsDerivatives`].
#[doc = include_str!("../docs/events.md")]
#[cfg(doctest)]
pub struct DocsEvents;

/// See [`DocsDerivatives`].
#[doc = include_str!("../docs/stiff.md")]
#[cfg(doctest)]
pub struct DocsStiff;

/// See [`DocsDerivatives`].
#[doc = include_str!("../docs/custom_model.md")]
#[cfg(doctest)]
pub struct DocsCustomModel;
