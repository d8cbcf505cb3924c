//! # odesens-sensitivity
//!
//! Derivatives of ODE solutions: forward sensitivities and adjoints, built on `odesens-solver`.
//! This crate is the home of that work; its first methods are being built (see the project's issue
//! tracker), and it re-exports the solver so that downstream code can already depend on it.
#![warn(missing_docs)]

pub use odesens_solver as solver;
