//! Models with known behaviour, shared by tests, examples and benches.
//!
//! Each is an [`OdeSystem`](crate::OdeSystem) whose right-hand side is generic over the scalar, so every
//! one can be differentiated exactly. Where a closed-form solution exists it is provided.

mod arenstorf;
mod brusselator;
mod double_pendulum;
mod driven_pendulum;
mod exp_sin_cos;
mod kepler;
mod linear;
mod lorenz;
mod lotka_volterra;
mod stiff;
mod van_der_pol;

pub use arenstorf::Arenstorf;
pub use brusselator::Brusselator2D;
pub use double_pendulum::{DoublePendulum, DoublePendulumWithVjp};
pub use driven_pendulum::DrivenDoublePendulum;
pub use exp_sin_cos::ExpSinCos;
pub use kepler::Kepler;
pub use linear::{ExponentialDecay, LinearOscillator};
pub use lorenz::Lorenz;
pub use lotka_volterra::LotkaVolterra;
pub use stiff::{Hires, Robertson};
pub use van_der_pol::VanDerPol;
