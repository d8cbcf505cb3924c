//! # odesens-models
//!
//! Models with known behaviour, shared by the tests of every odesens crate, the examples and the
//! benches (re-exported as `odesens::models`), and the comparison helpers those tests use
//! ([`compare`]).
//!
//! Each is an [`OdeSystem`](odesens_solver::OdeSystem) whose right-hand side is generic over the
//! scalar, so every one can be differentiated exactly. Where a closed-form solution exists it is
//! provided.
#![warn(missing_docs)]
#![allow(clippy::excessive_precision)]

mod arenstorf;
mod brusselator;
pub mod compare;
mod double_pendulum;
mod driven_pendulum;
mod events;
mod exp_sin_cos;
mod kepler;
mod linear;
mod lorenz;
mod lotka_volterra;
mod pde;
mod stiff;
mod van_der_pol;

pub use arenstorf::Arenstorf;
pub use brusselator::Brusselator2D;
pub use double_pendulum::{DoublePendulum, DoublePendulumWithVjp};
pub use driven_pendulum::DrivenDoublePendulum;
pub use events::{BouncingBall, DoublePendulumFlip, ScheduledDoses, ThresholdDosing};
pub use exp_sin_cos::ExpSinCos;
pub use kepler::Kepler;
pub use linear::{ExponentialDecay, LinearOscillator};
pub use lorenz::Lorenz;
pub use lotka_volterra::LotkaVolterra;
pub use pde::{AdvectionDiffusion2D, Heat2D};
pub use stiff::{Hires, Oregonator, Pollu, Robertson};
pub use van_der_pol::VanDerPol;
