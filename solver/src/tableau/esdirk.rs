//! ESDIRK pairs (explicit first stage, singly diagonally implicit, stiffly accurate): TR-BDF2 and
//! Kværnø's 5(4). Stage i ≥ 1 solves Y_i = u_n + h Σ_{j<i} a_ij K_j + hγ K_i, K_i = f(t_n + c_i h, Y_i);
//! u_{n+1} = Y_s (b = the last row of A), error estimate h Σ (b_i − b̂_i) K_i.

/// An ESDIRK pair: explicit first stage, the same diagonal γ on every implicit stage (one iteration
/// matrix I − hγJ for all of them), stiffly accurate (b = the last row of A).
#[derive(Debug)]
pub struct EsdirkTableau {
    /// Name.
    pub name: &'static str,
    /// Order of the solution.
    pub order: u32,
    /// Order of the embedded solution.
    pub embedded_order: u32,
    /// The diagonal γ.
    pub gamma: f64,
    /// Nodes c_i.
    pub c: &'static [f64],
    /// Strictly lower part of A, row i has i entries (the diagonal is γ for i ≥ 1, 0 for i = 0).
    pub a: &'static [&'static [f64]],
    /// Weights b (= last row of A with γ).
    pub b: &'static [f64],
    /// Embedded weights b̂.
    pub bhat: &'static [f64],
}

const TRBDF2_G: f64 = 2.0 - std::f64::consts::SQRT_2;
const TRBDF2_D: f64 = TRBDF2_G / 2.0;
const TRBDF2_W: f64 = std::f64::consts::SQRT_2 / 4.0;

/// TR-BDF2 as an ESDIRK pair (Hosea & Shampine 1996): γ = d = (2 − √2)/2, w = √2/4.
pub static TRBDF2: EsdirkTableau = EsdirkTableau {
    name: "TRBDF2",
    order: 2,
    embedded_order: 3,
    gamma: TRBDF2_D,
    c: &[0.0, TRBDF2_G, 1.0],
    a: &[&[], &[TRBDF2_D], &[TRBDF2_W, TRBDF2_W]],
    b: &[TRBDF2_W, TRBDF2_W, TRBDF2_D],
    bhat: &[
        (1.0 - TRBDF2_W) / 3.0,
        (3.0 * TRBDF2_W + 1.0) / 3.0,
        TRBDF2_D / 3.0,
    ],
};

/// Kværnø's ESDIRK 5(4), 7 stages, γ = 0.26, L-stable and stiffly accurate, the embedded solution being
/// stage 6 (A. Kværnø, "Singly diagonally implicit Runge–Kutta methods with an explicit first stage",
/// BIT 44 (2004) 489–502; coefficients as in OrdinaryDiffEq.jl's `Kvaerno5Tableau` and diffrax).
#[rustfmt::skip]
pub static KVAERNO5: EsdirkTableau = EsdirkTableau {
    name: "Kvaerno5",
    order: 5,
    embedded_order: 4,
    gamma: 0.26,
    c: &[0.0, 0.52, 1.230333209967908, 0.8957659843500759, 0.43639360985864756, 1.0, 1.0],
    a: &[
        &[],
        &[0.26],
        &[0.13, 0.84033320996790809],
        &[0.22371961478320505, 0.47675532319799699, -0.06470895363112615],
        &[0.16648564323248321, 0.10450018841591720, 0.03631482272098715, -0.13090704451073998],
        &[0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676],
        &[0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
          0.06962479448202728],
    ],
    b: &[0.13659751177640291, 0.0, -0.05496908796538376, -0.04118626728321046, 0.62993304899016403,
         0.06962479448202728, 0.26],
    bhat: &[0.13855640231268224, 0.0, -0.04245337201752043, 0.02446657898003141, 0.61943039072480676,
            0.26, 0.0],
};
