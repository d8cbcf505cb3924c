//! Stiff test problems with published reference solutions (data/reference/stiff.json): for the implicit
//! methods to come, and to show what explicit methods do on them (stiffness detection, clear errors).

use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeProblem, OdeSystem, Scalar};

/// Robertson's chemical kinetics (Hairer & Wanner, *Solving ODEs II*, §IV.1; Bari test set "rober"):
/// y1' = −k1 y1 + k3 y2 y3, y2' = k1 y1 − k3 y2 y3 − k2 y2², y3' = k2 y2², p = [k1, k2, k3] =
/// [0.04, 3e7, 1e4], y0 = (1, 0, 0). Mass is conserved: y1 + y2 + y3 = 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Robertson;

impl Robertson {
    /// The classical rate constants [k1, k2, k3] = [0.04, 3e7, 1e4].
    pub const PARAMS: [f64; 3] = [0.04, 3e7, 1e4];

    /// Published y(t) at t = 1e5 and 1e11 (Hairer's and the Bari test set's reference runs).
    pub const REFERENCE: [(f64, [f64; 3]); 2] = [
        (
            1e5,
            [
                0.01786592114209946,
                7.274751468436319e-08,
                0.9821340061103859,
            ],
        ),
        (
            1e11,
            [
                2.083340149701255e-08,
                8.333360770334713e-14,
                0.999999979166505,
            ],
        ),
    ];

    /// y0 = (1, 0, 0) on [0, t_end] with [`Self::PARAMS`].
    ///
    /// # Errors
    /// [`odesens_solver::SolverError::InvalidTimeSpan`] for a bad `t_end`.
    pub fn problem(t_end: f64) -> Result<OdeProblem<Robertson>, odesens_solver::SolverError> {
        OdeProblem::new(
            Robertson,
            vec![1.0, 0.0, 0.0],
            Self::PARAMS.to_vec(),
            (0.0, t_end),
        )
    }
}

impl OdeSystem for Robertson {
    fn n_states(&self) -> usize {
        3
    }
    fn n_params(&self) -> usize {
        3
    }
    fn rhs<S: Scalar>(&self, _t: S, y: ArrayView1<S>, p: ArrayView1<S>, mut dy: ArrayViewMut1<S>) {
        let (k1, k2, k3) = (p[0], p[1], p[2]);
        let a = k1 * y[0];
        let b = k3 * y[1] * y[2];
        let c = k2 * y[1] * y[1];
        dy[0] = b - a;
        dy[1] = a - b - c;
        dy[2] = c;
    }
}

/// HIRES, 8 reactions of light-induced plant growth (Schäfer 1975; Hairer & Wanner II §IV.10; Bari test
/// set "hires"), on t ∈ [0, 321.8122]. The rate constants are the model's parameters, in the order
/// [1.71, 0.43, 8.32, 0.0007, 8.75, 10.03, 0.035, 1.12, 1.745, 280, 0.69, 1.81].
#[derive(Debug, Clone, Copy, Default)]
pub struct Hires;

impl Hires {
    /// The published rate constants.
    pub const PARAMS: [f64; 12] = [
        1.71, 0.43, 8.32, 0.0007, 8.75, 10.03, 0.035, 1.12, 1.745, 280.0, 0.69, 1.81,
    ];
    /// The end of the standard interval.
    pub const T_END: f64 = 321.8122;
    /// y(321.8122) of the Bari test set's reference run.
    pub const REFERENCE: [f64; 8] = [
        7.371312573325668e-4,
        1.442485726316185e-4,
        5.888729740967575e-5,
        1.175651343283149e-3,
        2.386356198831331e-3,
        6.238968252742796e-3,
        2.849998395185769e-3,
        2.850001604814231e-3,
    ];

    /// y0 = (1, 0, 0, 0, 0, 0, 0, 0.0057) on [0, 321.8122] with [`Self::PARAMS`].
    ///
    /// # Errors
    /// Never for these inputs; the `Result` is [`OdeProblem::new`]'s.
    pub fn problem() -> Result<OdeProblem<Hires>, odesens_solver::SolverError> {
        OdeProblem::new(
            Hires,
            vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0057],
            Self::PARAMS.to_vec(),
            (0.0, Self::T_END),
        )
    }
}

impl OdeSystem for Hires {
    fn n_states(&self) -> usize {
        8
    }
    fn n_params(&self) -> usize {
        12
    }
    fn rhs<S: Scalar>(&self, _t: S, y: ArrayView1<S>, p: ArrayView1<S>, mut dy: ArrayViewMut1<S>) {
        let [k1, k2, k3, k4, k5, k6, k7, k8, k9, k10, k11, k12] =
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map(|i| p[i]);
        let r = k10 * y[5] * y[7];
        dy[0] = -(k1 * y[0]) + k2 * y[1] + k3 * y[2] + k4;
        dy[1] = k1 * y[0] - k5 * y[1];
        dy[2] = -(k6 * y[2]) + k2 * y[3] + k7 * y[4];
        dy[3] = k3 * y[1] + k1 * y[2] - k8 * y[3];
        dy[4] = -(k9 * y[4]) + k2 * y[5] + k2 * y[6];
        dy[5] = -r + k11 * y[3] + k1 * y[4] - k2 * y[5] + k11 * y[6];
        dy[6] = r - k12 * y[6];
        dy[7] = -r + k12 * y[6];
    }
}

/// The Oregonator, Field & Noyes' model of the Belousov–Zhabotinsky reaction (Hairer & Wanner II
/// §IV.1; Bari test set "orego"): y1' = s (y2 + y1 (1 − q y1 − y2)), y2' = (y3 − (1 + y1) y2)/s,
/// y3' = w (y1 − y3), p = [s, q, w] = [77.27, 8.375e-6, 0.161], y0 = (1, 2, 3). Periodic with sharp
/// fronts; stiff throughout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Oregonator;

impl Oregonator {
    /// [s, q, w] = [77.27, 8.375e-6, 0.161].
    pub const PARAMS: [f64; 3] = [77.27, 8.375e-6, 0.161];

    /// Published y(t) at t = 30 (Hairer's reference run) and t = 360 (the Bari test set's end point);
    /// data/reference/stiff.json.
    pub const REFERENCE: [(f64, [f64; 3]); 2] = [
        (
            30.0,
            [1.000661467180497, 1512.778937348249, 10358.54312767229],
        ),
        (
            360.0,
            [1.000814870318523, 1228.178521549917, 132.0554942846706],
        ),
    ];

    /// y0 = (1, 2, 3) on [0, t_end] with [`Self::PARAMS`].
    ///
    /// # Errors
    /// [`odesens_solver::SolverError::InvalidTimeSpan`] for a bad `t_end`.
    pub fn problem(t_end: f64) -> Result<OdeProblem<Oregonator>, odesens_solver::SolverError> {
        OdeProblem::new(
            Oregonator,
            vec![1.0, 2.0, 3.0],
            Self::PARAMS.to_vec(),
            (0.0, t_end),
        )
    }
}

impl OdeSystem for Oregonator {
    fn n_states(&self) -> usize {
        3
    }
    fn n_params(&self) -> usize {
        3
    }
    fn rhs<S: Scalar>(&self, _t: S, y: ArrayView1<S>, p: ArrayView1<S>, mut dy: ArrayViewMut1<S>) {
        let (s, q, w) = (p[0], p[1], p[2]);
        dy[0] = s * (y[1] + y[0] * (S::one() - q * y[0] - y[1]));
        dy[1] = (y[2] - (S::one() + y[0]) * y[1]) / s;
        dy[2] = w * (y[0] - y[2]);
    }
}

/// POLLU, the chemical part of the air-pollution model of the Dutch National Institute of Public Health
/// and Environmental Protection (RIVM): 20 species, 25 reactions (J. G. Verwer, "Gauss–Seidel iteration
/// for stiff ODEs from chemical kinetics", SIAM J. Sci. Comput. 15(5), 1994; Bari test set "pollu"),
/// on t ∈ [0, 60] minutes, concentrations in ppm. The rates r_j are mass-action terms, r_j = k_j y_a
/// (first order) or k_j y_a y_b (second order), and y_i' = Σ_j ν_ij r_j; the rate constants range from
/// 1.3e-4 to 4.44e11, which is what makes the problem stiff. The 25 rate constants are the parameters,
/// p = [k1, …, k25] ([`Pollu::PARAMS`]).
///
/// The species, in the order of the state: NO2, NO, O3P, O3, HO2, OH, HCHO, CO, ALD, MEO2, C2O3, CO2,
/// PAN, CH3O, HNO3, O1D, SO2, SO4, NO3, N2O5.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pollu;

impl Pollu {
    /// The published rate constants k1 … k25 (ppm⁻¹ min⁻¹ for the second-order reactions, min⁻¹ for the
    /// first-order ones).
    pub const PARAMS: [f64; 25] = [
        0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9.0e3, 0.022, 1.2e4,
        1.88, 1.63e4, 4.8e6, 3.5e-4, 0.0175, 1.0e8, 4.44e11, 1240.0, 2.1, 5.78, 0.0474, 1780.0,
        3.12,
    ];
    /// The end of the standard interval (minutes).
    pub const T_END: f64 = 60.0;
    /// The initial concentrations (ppm): NO = 0.2, O3 = 0.04, HCHO = 0.1, CO = 0.3, ALD = 0.01,
    /// SO2 = 0.007, every other species 0.
    pub const Y0: [f64; 20] = [
        0.0, 0.2, 0.0, 0.04, 0.0, 0.0, 0.1, 0.3, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.007,
        0.0, 0.0, 0.0,
    ];
    /// y(60) of the Bari test set's reference run (RADAU5 in extended precision, rtol = atol =
    /// 1.1e-18); data/reference/stiff.json.
    pub const REFERENCE: [f64; 20] = [
        0.5646255480022769e-01,
        0.1342484130422339e+00,
        0.4139734331099427e-08,
        0.5523140207484359e-02,
        0.2018977262302196e-06,
        0.1464541863493966e-06,
        0.7784249118997964e-01,
        0.3245075353396018e+00,
        0.7494013383880406e-02,
        0.1622293157301561e-07,
        0.1135863833257075e-07,
        0.2230505975721359e-02,
        0.2087162882798630e-03,
        0.1396921016840158e-04,
        0.8964884856898295e-02,
        0.4352846369330103e-17,
        0.6899219696263405e-02,
        0.1007803037365946e-03,
        0.1772146513969984e-05,
        0.5682943292316392e-04,
    ];

    /// [`Self::Y0`] on [0, t_end] with [`Self::PARAMS`].
    ///
    /// # Errors
    /// [`odesens_solver::SolverError::InvalidTimeSpan`] for a bad `t_end`.
    pub fn problem(t_end: f64) -> Result<OdeProblem<Pollu>, odesens_solver::SolverError> {
        OdeProblem::new(
            Pollu,
            Self::Y0.to_vec(),
            Self::PARAMS.to_vec(),
            (0.0, t_end),
        )
    }
}

impl OdeSystem for Pollu {
    fn n_states(&self) -> usize {
        20
    }
    fn n_params(&self) -> usize {
        25
    }
    fn rhs<S: Scalar>(&self, _t: S, y: ArrayView1<S>, p: ArrayView1<S>, mut dy: ArrayViewMut1<S>) {
        let k = |j: usize| p[j - 1];
        let y = |i: usize| y[i - 1];
        let r1 = k(1) * y(1);
        let r2 = k(2) * y(2) * y(4);
        let r3 = k(3) * y(5) * y(2);
        let r4 = k(4) * y(7);
        let r5 = k(5) * y(7);
        let r6 = k(6) * y(7) * y(6);
        let r7 = k(7) * y(9);
        let r8 = k(8) * y(9) * y(6);
        let r9 = k(9) * y(11) * y(2);
        let r10 = k(10) * y(11) * y(1);
        let r11 = k(11) * y(13);
        let r12 = k(12) * y(10) * y(2);
        let r13 = k(13) * y(14);
        let r14 = k(14) * y(1) * y(6);
        let r15 = k(15) * y(3);
        let r16 = k(16) * y(4);
        let r17 = k(17) * y(4);
        let r18 = k(18) * y(16);
        let r19 = k(19) * y(16);
        let r20 = k(20) * y(17) * y(6);
        let r21 = k(21) * y(19);
        let r22 = k(22) * y(19);
        let r23 = k(23) * y(1) * y(4);
        let r24 = k(24) * y(19) * y(1);
        let r25 = k(25) * y(20);
        dy[0] = -r1 - r10 - r14 - r23 - r24 + r2 + r3 + r9 + r11 + r12 + r22 + r25;
        dy[1] = -r2 - r3 - r9 - r12 + r1 + r21;
        dy[2] = -r15 + r1 + r17 + r19 + r22;
        dy[3] = -r2 - r16 - r17 - r23 + r15;
        dy[4] = -r3 + r4 + r4 + r6 + r7 + r13 + r20;
        dy[5] = -r6 - r8 - r14 - r20 + r3 + r18 + r18;
        dy[6] = -r4 - r5 - r6 + r13;
        dy[7] = r4 + r5 + r6 + r7;
        dy[8] = -r7 - r8;
        dy[9] = -r12 + r7 + r9;
        dy[10] = -r9 - r10 + r8 + r11;
        dy[11] = r9;
        dy[12] = -r11 + r10;
        dy[13] = -r13 + r12;
        dy[14] = r14;
        dy[15] = -r18 - r19 + r16;
        dy[16] = -r20;
        dy[17] = r20;
        dy[18] = -r21 - r22 - r24 + r23 + r25;
        dy[19] = -r25 + r24;
    }
}
