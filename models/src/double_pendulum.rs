use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{OdeProblem, OdeSystem, Scalar};

/// The double pendulum of MIT 18.063 (*Matrix Calculus*, notes/double-pendulum-sensitivity.ipynb).
///
/// State u = [θ1, θ2, θ̇1, θ̇2] (angles from the downward vertical), parameters p = [l1, l2, m1, m2, g].
/// With Δ = θ1 − θ2,
/// M = [[l1 (m1 + m2), m2 l2 cos Δ], [l1 cos Δ, l2]],
/// r = [−m2 l2 θ̇2² sin Δ − g (m1 + m2) sin θ1, l1 θ̇1² sin Δ − g sin θ2],
/// [θ̈1, θ̈2] = M⁻¹ r (Cramer's rule; det M = l1 l2 (m1 + m2 sin² Δ) > 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct DoublePendulum;

impl DoublePendulum {
    /// Standard gravity used by the course, m/s².
    pub const G: f64 = 9.80665;

    /// The standard parameters (the MIT 18.063 notebook's): l1 = l2 = 1, m1 = m2 = 0.1, g = 9.80665.
    pub fn standard_params() -> Vec<f64> {
        vec![1.0, 1.0, 0.1, 0.1, Self::G]
    }

    /// The benchmark parameters: l1 = l2 = m1 = m2 = 1, g = 9.80665.
    pub fn bench_params() -> Vec<f64> {
        vec![1.0, 1.0, 1.0, 1.0, Self::G]
    }

    /// u(10) of the benchmark set-up ([`DoublePendulum::bench_problem`]): fixed-step RK4 in extended
    /// precision with 2^18, 2^19, 2^20 steps agreeing to ~1e-15 (data/reference/double_pendulum.json).
    pub const BENCH_U10: [f64; 4] = [
        -0.5788360081598,
        -0.5098755884235,
        6.055174314802,
        -9.662377808596,
    ];

    /// The benchmark set-up: l1 = l2 = m1 = m2 = 1, g = 9.80665, u0 = [π/2, π/2, 0, 0], t ∈ [0, 10].
    pub fn bench_problem() -> OdeProblem<DoublePendulum> {
        Self::bench_problem_with(DoublePendulum)
    }

    /// The benchmark set-up for another model of the same equations (e.g. [`DoublePendulumWithVjp`]).
    pub fn bench_problem_with<M: OdeSystem>(model: M) -> OdeProblem<M> {
        let u0 = vec![
            std::f64::consts::FRAC_PI_2,
            std::f64::consts::FRAC_PI_2,
            0.0,
            0.0,
        ];
        OdeProblem::new(model, u0, Self::bench_params(), (0.0, 10.0))
            .expect("the benchmark set-up is valid")
    }

    /// The standard set-up (the MIT 18.063 notebook's) on [0, t_end]: l1 = l2 = 1, m1 = m2 = 0.1,
    /// g = 9.80665, u0 = [2, 2, 0, 0] (`t_end` must be finite and ≠ 0).
    ///
    /// # Errors
    /// [`odesens_solver::SolverError::InvalidTimeSpan`] for a bad `t_end`.
    pub fn standard_problem(
        t_end: f64,
    ) -> Result<OdeProblem<DoublePendulum>, odesens_solver::SolverError> {
        OdeProblem::new(
            DoublePendulum,
            vec![2.0, 2.0, 0.0, 0.0],
            Self::standard_params(),
            (0.0, t_end),
        )
    }

    /// Total mechanical energy T + V (conserved by the exact flow).
    pub fn energy(u: &[f64], p: &[f64]) -> f64 {
        let (t1, t2, w1, w2) = (u[0], u[1], u[2], u[3]);
        let (l1, l2, m1, m2, g) = (p[0], p[1], p[2], p[3], p[4]);
        let kinetic = 0.5 * (m1 + m2) * l1 * l1 * w1 * w1
            + 0.5 * m2 * l2 * l2 * w2 * w2
            + m2 * l1 * l2 * w1 * w2 * (t1 - t2).cos();
        let potential = -(m1 + m2) * g * l1 * t1.cos() - m2 * g * l2 * t2.cos();
        kinetic + potential
    }

    /// Largest relative deviation |E(u_k) − E(u_0)| / |E(u_0)| of the energy over the rows u_k of
    /// `states` (row 0 is the reference).
    pub fn max_energy_drift(states: &ndarray::Array2<f64>, p: &[f64]) -> f64 {
        let energy = |k: usize| Self::energy(&states.row(k).to_vec(), p);
        let e0 = energy(0);
        (0..states.nrows())
            .map(|k| (energy(k) - e0).abs() / e0.abs())
            .fold(0.0, f64::max)
    }

    /// Max-norm distance of `u` from [`DoublePendulum::BENCH_U10`].
    pub fn bench_error(u: &[f64]) -> f64 {
        u.iter()
            .zip(Self::BENCH_U10)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }

    /// Bob positions (x1, y1, x2, y2) for state u and lengths l1, l2.
    pub fn positions(u: &[f64], l1: f64, l2: f64) -> [f64; 4] {
        let x1 = l1 * u[0].sin();
        let y1 = -l1 * u[0].cos();
        [x1, y1, x1 + l2 * u[1].sin(), y1 - l2 * u[1].cos()]
    }
}

impl OdeSystem for DoublePendulum {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        5
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let (t1, t2, w1, w2) = (u[0], u[1], u[2], u[3]);
        let (l1, l2, m1, m2, g) = (p[0], p[1], p[2], p[3], p[4]);
        let (sd, cd) = (t1 - t2).sin_cos();
        let m = m1 + m2;
        // M = [[a, b], [c, d]], r = [r1, r2]
        let a = l1 * m;
        let b = m2 * l2 * cd;
        let c = l1 * cd;
        let d = l2;
        let r1 = -(m2 * l2 * w2 * w2 * sd) - g * m * t1.sin();
        let r2 = l1 * w1 * w1 * sd - g * t2.sin();
        let inv_det = (a * d - b * c).recip();
        du[0] = w1;
        du[1] = w2;
        du[2] = (d * r1 - b * r2) * inv_det;
        du[3] = (a * r2 - c * r1) * inv_det;
    }
}

/// The same double pendulum with a hand-written vector–Jacobian product ([`OdeSystem::vjp`]), the
/// reverse-mode derivative of [`DoublePendulum`]'s right-hand side written out by hand (about the cost
/// of one rhs call). Adjoints use it instead of reverse-mode AD on a tape (about 7 rhs calls); the tests
/// check it against automatic differentiation.
#[derive(Debug, Clone, Copy, Default)]
pub struct DoublePendulumWithVjp;

impl OdeSystem for DoublePendulumWithVjp {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        5
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, du: ArrayViewMut1<S>) {
        DoublePendulum.rhs(t, u, p, du)
    }

    fn vjp(
        &self,
        _t: f64,
        u: &[f64],
        p: &[f64],
        lambda: &[f64],
        u_bar: &mut [f64],
        p_bar: &mut [f64],
    ) -> bool {
        let (t1, t2, w1, w2) = (u[0], u[1], u[2], u[3]);
        let (l1, l2, m1, m2, g) = (p[0], p[1], p[2], p[3], p[4]);
        // Forward sweep (as in `rhs`).
        let (sd, cd) = (t1 - t2).sin_cos();
        let (s1, c1) = t1.sin_cos();
        let (s2, c2) = t2.sin_cos();
        let m = m1 + m2;
        let (a, b, c, d) = (l1 * m, m2 * l2 * cd, l1 * cd, l2);
        let r1 = -(m2 * l2 * w2 * w2 * sd) - g * m * s1;
        let r2 = l1 * w1 * w1 * sd - g * s2;
        let inv = 1.0 / (a * d - b * c);
        let f3 = (d * r1 - b * r2) * inv;
        let f4 = (a * r2 - c * r1) * inv;
        // Reverse sweep.
        let (n3, n4) = (lambda[2] * inv, lambda[3] * inv);
        let det_bar = -(lambda[2] * f3 + lambda[3] * f4) * inv;
        let a_bar = n4 * r2 + det_bar * d;
        let b_bar = -n3 * r2 - det_bar * c;
        let c_bar = -n4 * r1 - det_bar * b;
        let d_bar = n3 * r1 + det_bar * a;
        let r1_bar = n3 * d - n4 * c;
        let r2_bar = -n3 * b + n4 * a;
        // r1 = −m2 l2 w2² sd − g m sin θ1, r2 = l1 w1² sd − g sin θ2.
        let sd_bar = -r1_bar * m2 * l2 * w2 * w2 + r2_bar * l1 * w1 * w1;
        // b = m2 l2 cd, c = l1 cd.
        let cd_bar = b_bar * m2 * l2 + c_bar * l1;
        let delta_bar = sd_bar * cd - cd_bar * sd;
        let m_bar = -r1_bar * g * s1 + a_bar * l1;
        u_bar[0] = delta_bar - r1_bar * g * m * c1;
        u_bar[1] = -delta_bar - r2_bar * g * c2;
        u_bar[2] = lambda[0] + r2_bar * 2.0 * l1 * w1 * sd;
        u_bar[3] = lambda[1] - r1_bar * 2.0 * m2 * l2 * w2 * sd;
        p_bar[0] = r2_bar * w1 * w1 * sd + a_bar * m + c_bar * cd;
        p_bar[1] = -r1_bar * m2 * w2 * w2 * sd + b_bar * m2 * cd + d_bar;
        p_bar[2] = m_bar;
        p_bar[3] = m_bar - r1_bar * l2 * w2 * w2 * sd + b_bar * l2 * cd;
        p_bar[4] = -r1_bar * m * s1 - r2_bar * s2;
        true
    }
}
