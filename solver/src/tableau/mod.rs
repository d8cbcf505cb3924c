//! Every method's coefficients, as `const` data with their sources: the explicit Runge–Kutta pairs
//! (this module and one file each), the ESDIRK pairs ([`esdirk`]) and Radau IIA of order 5 with
//! RADAU5's transformation ([`radau5`]). Data only: nothing here imports the solver's other modules.
//!
//! Notation (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1): a step of size h from (t_n, u_n) computes
//! stages K_i = f(t_n + c_i h, u_n + h Σ_j a_ij K_j), the solution u_{n+1} = u_n + h Σ_i b_i K_i and the error
//! estimate e = h Σ_i b̃_i K_i with b̃ = b − b̂ (b̂ the embedded pair's weights). The continuous extension
//! (dense output) is u(t_n + θh) = u_n + h Σ_i b_i(θ) K_i, with polynomial weights b_i(θ) that may use
//! *extra* stages beyond the s main ones (Verner's pairs); extra stages are evaluated only when an
//! interpolation inside the step is asked for.

mod bs3;
mod dp5;
pub mod esdirk;
pub mod radau5;
mod tsit5;
mod vern7;
mod vern9;

use serde::{Deserialize, Serialize};

pub use bs3::BS3;
pub use dp5::DP5;
pub use esdirk::{EsdirkTableau, KVAERNO5, TRBDF2};
pub use tsit5::TSIT5;
pub use vern7::VERN7;
pub use vern9::VERN9;

/// An explicit Runge–Kutta pair with a continuous extension.
///
/// Rows of `a` are stored sparsely as `(j, a_ij)` pairs (0-based j < i): Verner's tableaus are mostly
/// zeros, and the stepper skips them for free.
#[derive(Debug)]
pub struct ExplicitTableau {
    /// Short name (`"Tsit5"`).
    pub name: &'static str,
    /// Order p of the propagated solution.
    pub order: u32,
    /// Order of the embedded solution used for the error estimate.
    pub embedded_order: u32,
    /// Number s of main stages, evaluated on every step (the FSAL stage included).
    pub stages: usize,
    /// First same as last: the last main stage is f(t_{n+1}, u_{n+1}) and serves as the next step's first.
    pub fsal: bool,
    /// Index of a stage (main or extra) equal to f(t_{n+1}, u_{n+1}), if any: when it has been evaluated it
    /// is reused as the next step's first stage.
    pub end_stage: Option<usize>,
    /// Nodes c_i for all stages, main then extra.
    pub c: &'static [f64],
    /// Strictly lower triangular coefficients, one sparse row per stage (main then extra).
    pub a: &'static [&'static [(usize, f64)]],
    /// Weights b_i of the main stages.
    pub b: &'static [f64],
    /// Error weights b̃_i = b_i − b̂_i of the main stages.
    pub btilde: &'static [f64],
    /// Order of the continuous extension.
    pub dense_order: u32,
    /// Dense-output weights: row i holds the coefficients of θ, θ², … in b_i(θ) (empty for zero weight);
    /// one row per stage, main then extra.
    pub dense: &'static [&'static [f64]],
}

impl ExplicitTableau {
    /// Total number of stages including the extra ones of the continuous extension.
    pub fn total_stages(&self) -> usize {
        self.c.len()
    }

    /// Whether dense output needs stages beyond the main ones.
    pub fn has_extra_stages(&self) -> bool {
        self.c.len() > self.stages
    }

    /// Number of rhs evaluations a step costs (without the extra stages): s, or s − 1 with FSAL.
    pub fn evaluations_per_step(&self) -> usize {
        if self.fsal {
            self.stages - 1
        } else {
            self.stages
        }
    }

    /// The method's stability boundary on the negative real axis: the largest x with |R(−y)| ≤ 1 for all
    /// y ∈ [0, x], R(z) = 1 + z bᵀ(I − zA)⁻¹𝟙 the stability polynomial (a scan in steps of 0.01 for the
    /// first y with |R(−y)| > 1, then bisection to 1e-12; e.g. ≈ 3.306 for DP5). Evaluated once per
    /// method and process by the integrator (`stability_boundary`).
    pub fn real_stability_boundary(&self) -> f64 {
        let mut k = vec![0.0; self.stages];
        let mut unstable = |y: f64| {
            // Stages of y' = z y from y = 1 with h = 1, z = −y: K_i = z (1 + Σ_j a_ij K_j).
            for i in 0..self.stages {
                let mut acc = 1.0;
                for &(j, a) in self.a[i] {
                    acc += a * k[j];
                }
                k[i] = -y * acc;
            }
            (1.0 + self.b.iter().zip(k.iter()).map(|(b, k)| b * k).sum::<f64>()).abs() > 1.0 + 1e-12
        };
        let mut lo = 0.0;
        while lo < 100.0 {
            let hi = lo + 0.01;
            if unstable(hi) {
                let mut hi = hi;
                while hi - lo > 1e-12 {
                    let mid = 0.5 * (lo + hi);
                    if unstable(mid) {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                return lo;
            }
            lo = hi;
        }
        lo
    }

    /// Writes the dense-output weights b_i(θ) for all stages into `w` (length = total stages).
    #[inline]
    pub fn dense_weights(&self, theta: f64, w: &mut [f64]) {
        for (wi, row) in w.iter_mut().zip(self.dense) {
            // Horner: Σ_k r_k θ^(k+1) = θ (r_0 + θ (r_1 + ...)).
            let mut acc = 0.0;
            for &r in row.iter().rev() {
                acc = acc * theta + r;
            }
            *wi = acc * theta;
        }
    }

    /// The dense-output weights' derivatives d b_i(θ)/dθ, so that u'(t_n + θh) = Σ_i b_i'(θ) K_i.
    pub fn dense_weight_derivatives(&self, theta: f64, w: &mut [f64]) {
        for (wi, row) in w.iter_mut().zip(self.dense) {
            let mut acc = 0.0;
            for (k, &r) in row.iter().enumerate().rev() {
                acc = acc * theta + (k as f64 + 1.0) * r;
            }
            *wi = acc;
        }
    }
}

/// The methods odesens provides: explicit Runge–Kutta pairs, and implicit methods for stiff problems
/// ([`Method::TrBdf2`], [`Method::Kvaerno5`], [`Method::RadauIIA5`]; solved by [`crate::solve`] and
/// [`crate::ImplicitIntegrator`], differentiated by the sensitivity crate's forward and adjoint modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Method {
    /// Tsitouras 5(4), 7 stages (FSAL), 4th-order free interpolant. The default: the most efficient
    /// general-purpose pair at moderate tolerances.
    #[default]
    Tsit5,
    /// Dormand–Prince 5(4) (DOPRI5), 7 stages (FSAL), Hairer's 4th-order dense output.
    Dp5,
    /// Bogacki–Shampine 3(2), 4 stages (FSAL), cubic Hermite continuous extension (3rd order, free).
    Bs3,
    /// Verner's "most efficient" 7(6), 10 stages, 7th-order interpolant with 6 lazy extra stages.
    Vern7,
    /// Verner's "most efficient" 9(8), 16 stages, 9th-order interpolant with 10 lazy extra stages.
    Vern9,
    /// TR-BDF2 (Bank et al. 1985; Hosea & Shampine 1996): an L-stable, stiffly accurate 2nd-order ESDIRK
    /// (a trapezoidal stage to t + γh, γ = 2 − √2, then BDF2), both implicit stages with the same
    /// iteration matrix I − (γ/2)hJ; embedded 3rd-order estimate filtered through that matrix.
    TrBdf2,
    /// Kværnø's ESDIRK 5(4) (2004): 7 stages, γ = 0.26, L-stable, stiffly accurate; the same iteration
    /// matrix for all six implicit stages.
    Kvaerno5,
    /// Radau IIA of order 5 (3 implicit stages, collocation; Hairer & Wanner's RADAU5 with the
    /// transformation to one real and one complex linear system per Newton iteration): L-stable,
    /// stiffly accurate, embedded order 3.
    RadauIIA5,
    /// Variable-step, variable-order BDF, orders 1–5, in the quasi-constant step-size form of ode15s
    /// (Shampine & Reichelt, "The MATLAB ODE Suite", SIAM J. Sci. Comput. 18 (1997) 1–22): backward
    /// differences interpolated on every step-size change, simplified Newton with the Jacobian and its
    /// factorization reused across steps, the order chosen among k − 1, k, k + 1 by the local error
    /// estimates, dense output by the interpolating polynomial. Solved by [`crate::solve`] and
    /// [`crate::BdfIntegrator`]; derivatives not yet.
    Bdf,
    /// The numerical differentiation formulas (NDF, Klopfenstein 1971; Shampine & Reichelt 1997) in the
    /// same code as [`Method::Bdf`]: each order's formula shifted by κ_k (Δ∇^{k+1}) for an error
    /// constant up to 26 % smaller at almost the same stability (ode15s' default).
    Ndf,
    /// Automatic stiffness switching (opt-in): [`Method::Tsit5`] until its stiffness test fires (15 of
    /// 20 consecutive steps limited by stability, [`crate::Statistics::stiffness_detected_at`]), then
    /// [`Method::RadauIIA5`] from that point to the end (`Statistics::switched_to_implicit_at`). Solved by
    /// [`crate::solve`] only; for derivatives choose the method explicitly.
    AutoTsit5Radau5,
}

/// The highest order of [`Method::Bdf`] and [`Method::Ndf`].
pub const BDF_MAX_ORDER: usize = 5;

/// The weights a_j(θ) = Π_{m=0}^{j−1} (θ − 1 + m)/(m + 1), j = 1 … [`BDF_MAX_ORDER`], of the
/// interpolating polynomial of a BDF step from t_n to t_{n+1} = t_n + h: y(t_n + θh) = D_0 +
/// Σ_{j=1}^{k} a_j(θ) D_j with the backward differences D after the step (`w[j − 1]` = a_j).
pub fn bdf_dense_weights(theta: f64, w: &mut [f64]) {
    let mut p = 1.0;
    for (m, wm) in w.iter_mut().enumerate().take(BDF_MAX_ORDER) {
        p *= (theta - 1.0 + m as f64) / (m + 1) as f64;
        *wm = p;
    }
}

impl Method {
    /// All explicit methods, for loops in tests and benches.
    pub const ALL: [Method; 5] = [
        Method::Tsit5,
        Method::Dp5,
        Method::Bs3,
        Method::Vern7,
        Method::Vern9,
    ];

    /// The implicit methods.
    pub const IMPLICIT: [Method; 3] = [Method::TrBdf2, Method::Kvaerno5, Method::RadauIIA5];

    /// The multistep methods ([`crate::BdfIntegrator`]).
    pub const MULTISTEP: [Method; 2] = [Method::Bdf, Method::Ndf];

    /// Whether the method is implicit (Runge–Kutta or multistep).
    pub fn is_implicit(self) -> bool {
        matches!(
            self,
            Method::TrBdf2 | Method::Kvaerno5 | Method::RadauIIA5 | Method::Bdf | Method::Ndf
        )
    }

    /// Whether the method is a multistep method ([`Method::Bdf`], [`Method::Ndf`]).
    pub fn is_multistep(self) -> bool {
        matches!(self, Method::Bdf | Method::Ndf)
    }

    /// The explicit tableau, or `None` for an implicit method.
    pub fn explicit_tableau(self) -> Option<&'static ExplicitTableau> {
        match self {
            Method::Tsit5 => Some(&TSIT5),
            Method::Dp5 => Some(&DP5),
            Method::Bs3 => Some(&BS3),
            Method::Vern7 => Some(&VERN7),
            Method::Vern9 => Some(&VERN9),
            Method::TrBdf2
            | Method::Kvaerno5
            | Method::RadauIIA5
            | Method::Bdf
            | Method::Ndf
            | Method::AutoTsit5Radau5 => None,
        }
    }

    /// The implicit (ESDIRK) method's tableau, or `None` for an explicit method.
    pub fn esdirk_tableau(self) -> Option<&'static EsdirkTableau> {
        match self {
            Method::TrBdf2 => Some(&TRBDF2),
            Method::Kvaerno5 => Some(&KVAERNO5),
            _ => None,
        }
    }

    /// The explicit method's tableau.
    ///
    /// # Panics
    /// For an implicit method; every public entry point checks [`Method::is_implicit`] first and
    /// returns an error instead.
    pub fn tableau(self) -> &'static ExplicitTableau {
        self.explicit_tableau()
            .expect("an explicit method (implicit methods are rejected before any tableau is used)")
    }

    /// The explicit method's real stability boundary, computed once per process
    /// ([`ExplicitTableau::real_stability_boundary`]); 0 for implicit methods.
    pub fn stability_boundary(self) -> f64 {
        static CACHE: [std::sync::OnceLock<f64>; 5] = [const { std::sync::OnceLock::new() }; 5];
        match (
            Method::ALL.iter().position(|&m| m == self),
            self.explicit_tableau(),
        ) {
            (Some(i), Some(tab)) => *CACHE[i].get_or_init(|| tab.real_stability_boundary()),
            _ => 0.0,
        }
    }

    /// The method's name.
    pub fn name(self) -> &'static str {
        match (self, self.explicit_tableau(), self.esdirk_tableau()) {
            (Method::RadauIIA5, _, _) => "RadauIIA5",
            (Method::Bdf, _, _) => "BDF",
            (Method::Ndf, _, _) => "NDF",
            (Method::AutoTsit5Radau5, _, _) => "AutoTsit5Radau5",
            (_, Some(tab), _) => tab.name,
            (_, None, Some(tab)) => tab.name,
            (_, None, None) => unreachable!("every other method has a tableau"),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
