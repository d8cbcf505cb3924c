//! Dormand–Prince 5(4) (DOPRI5).
//!
//! J. R. Dormand, P. J. Prince, "A family of embedded Runge–Kutta formulae", J. Comput. Appl. Math. 6 (1980)
//! 19–26; coefficients and the dense output as in E. Hairer, S. P. Nørsett, G. Wanner, *Solving ODEs I*,
//! 2nd ed., Table II.5.2 and §II.6 (code `dopri5.f`, subroutine `CONTD5`). Hairer's continuous extension
//! u(θ) = u_n + θΔ + θ(1−θ)(hK_1 − Δ) + θ²(1−θ)(2Δ − hK_1 − hK_7) + θ²(1−θ)² h Σ d_i K_i, Δ = u_{n+1} − u_n,
//! is 4th order; its weights are expanded into powers of θ below.

use super::ExplicitTableau;

#[rustfmt::skip]
const B: [f64; 7] = [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0];

#[rustfmt::skip]
const BHAT: [f64; 7] = [
    5179.0 / 57600.0, 0.0, 7571.0 / 16695.0, 393.0 / 640.0, -92097.0 / 339200.0, 187.0 / 2100.0, 1.0 / 40.0,
];

/// Hairer's dense-output coefficients d_i (`dopri5.f`, D1 … D7).
#[rustfmt::skip]
const D: [f64; 7] = [
    -12715105075.0 / 11282082432.0, 0.0, 87487479700.0 / 32700410799.0, -10690763975.0 / 1880347072.0,
    701980252875.0 / 199316789632.0, -1453857185.0 / 822651844.0, 69997945.0 / 29380423.0,
];

const fn btilde() -> [f64; 7] {
    let mut e = [0.0; 7];
    let mut i = 0;
    while i < 7 {
        e[i] = B[i] - BHAT[i];
        i += 1;
    }
    e
}

/// b_i(θ) = δ_i1 θ + (3b_i − 2δ_i1 − δ_i7 + d_i) θ² + (−2b_i + δ_i1 + δ_i7 − 2d_i) θ³ + d_i θ⁴.
const fn dense_rows() -> [[f64; 4]; 7] {
    let mut r = [[0.0; 4]; 7];
    let mut i = 0;
    while i < 7 {
        let first = if i == 0 { 1.0 } else { 0.0 };
        let last = if i == 6 { 1.0 } else { 0.0 };
        r[i] = [
            first,
            3.0 * B[i] - 2.0 * first - last + D[i],
            -2.0 * B[i] + first + last - 2.0 * D[i],
            D[i],
        ];
        i += 1;
    }
    r
}

const BTILDE: [f64; 7] = btilde();
const DENSE: [[f64; 4]; 7] = dense_rows();

/// The Dormand–Prince 5(4) tableau.
#[rustfmt::skip]
pub static DP5: ExplicitTableau = ExplicitTableau {
    name: "DP5",
    order: 5,
    embedded_order: 4,
    stages: 7,
    fsal: true,
    end_stage: Some(6),
    c: &[0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[],
        &[(0, 1.0 / 5.0)],
        &[(0, 3.0 / 40.0), (1, 9.0 / 40.0)],
        &[(0, 44.0 / 45.0), (1, -56.0 / 15.0), (2, 32.0 / 9.0)],
        &[(0, 19372.0 / 6561.0), (1, -25360.0 / 2187.0), (2, 64448.0 / 6561.0), (3, -212.0 / 729.0)],
        &[(0, 9017.0 / 3168.0), (1, -355.0 / 33.0), (2, 46732.0 / 5247.0), (3, 49.0 / 176.0), (4, -5103.0 / 18656.0)],
        &[(0, 35.0 / 384.0), (2, 500.0 / 1113.0), (3, 125.0 / 192.0), (4, -2187.0 / 6784.0), (5, 11.0 / 84.0)],
    ],
    b: &B,
    btilde: &BTILDE,
    dense_order: 4,
    dense: &[&DENSE[0], &DENSE[1], &DENSE[2], &DENSE[3], &DENSE[4], &DENSE[5], &DENSE[6]],
};
