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
