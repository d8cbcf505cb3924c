//! Automatic differentiation of the model: the one place that differentiates ([`derivatives`]), the
//! forward-mode multi-direction dual [`lanes::Lanes`] and the reverse-mode tape [`tape::Var`], with the
//! scalar trait implementations they share.

pub mod derivatives;
pub mod lanes;
mod scalar_impls;
pub mod tape;
