//! Bogacki–Shampine 3(2).
//!
//! P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge–Kutta formulas", Appl. Math. Lett. 2 (1989) 321–325.
//! The pair is FSAL; its continuous extension is the cubic Hermite interpolant through u_n, u_{n+1} and the
//! derivatives K_1 = f(t_n, u_n), K_4 = f(t_{n+1}, u_{n+1}), which is 3rd order and costs nothing:
//! b_i(θ) = b_i (3θ² − 2θ³) + δ_i1 (θ − 2θ² + θ³) + δ_i4 (θ³ − θ²).

use super::ExplicitTableau;

/// The Bogacki–Shampine 3(2) tableau.
#[rustfmt::skip]
pub static BS3: ExplicitTableau = ExplicitTableau {
    name: "BS3",
    order: 3,
    embedded_order: 2,
    stages: 4,
    fsal: true,
    end_stage: Some(3),
    c: &[0.0, 1.0 / 2.0, 3.0 / 4.0, 1.0],
    a: &[
        &[],
        &[(0, 1.0 / 2.0)],
        &[(1, 3.0 / 4.0)],
        &[(0, 2.0 / 9.0), (1, 1.0 / 3.0), (2, 4.0 / 9.0)],
    ],
    b: &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0, 0.0],
    // b̂ = (7/24, 1/4, 1/3, 1/8)
    btilde: &[2.0 / 9.0 - 7.0 / 24.0, 1.0 / 3.0 - 1.0 / 4.0, 4.0 / 9.0 - 1.0 / 3.0, -1.0 / 8.0],
    dense_order: 3,
    //        θ           θ²            θ³
    dense: &[
        &[1.0,       -4.0 / 3.0,   5.0 / 9.0],
        &[0.0,        1.0,        -2.0 / 3.0],
        &[0.0,        4.0 / 3.0,  -8.0 / 9.0],
        &[0.0,       -1.0,         1.0],
    ],
};
