use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_solver::{Direction, EventAction, EventSpec, OdeSystem, Scalar};

/// A ball dropped from height h0 that bounces on the floor: u = [x, v], x' = v, v' = −g, p = [g, e].
/// Event 0: x falls through 0, and the ball bounces, v⁺ = −e v⁻ (restitution e).
///
/// Closed form (from rest at h0, t0 = 0): the first bounce at t₁ = √(2 h0 / g) with speed
/// w₁ = g t₁; after bounce k the ball leaves the floor with speed e^k w₁ and is back after
/// 2 e^k w₁ / g, so t_{k+1} = t_k + 2 e^k w₁ / g. For e < 1 the bounces accumulate at
/// t∞ = t₁ (1 + e)/(1 − e) (a Zeno point).
#[derive(Debug, Clone, Copy, Default)]
pub struct BouncingBall;

impl BouncingBall {
    /// The time of bounce k ≥ 1 for a ball dropped from rest at h0 at t = 0.
    pub fn bounce_time(h0: f64, g: f64, e: f64, k: usize) -> f64 {
        let t1 = (2.0 * h0 / g).sqrt();
        let w1 = g * t1;
        (1..k).fold(t1, |t, j| t + 2.0 * e.powi(j as i32) * w1 / g)
    }

    /// The time of bounce k ≥ 1 and its derivatives with respect to (g, e, h0, v0) at v0 = 0:
    /// t_k = t₁ (1 + 2 Σ_{j<k} e^j), t₁ = √(2 h0 / g); an initial speed v0 moves t₁ by 1/g per unit
    /// and leaves the later intervals unchanged (the impact speed √(v0² + 2 g h0) is stationary at 0).
    pub fn bounce_time_derivatives(h0: f64, g: f64, e: f64, k: usize) -> (f64, [f64; 4]) {
        let t1 = (2.0 * h0 / g).sqrt();
        let factor: f64 = 1.0 + 2.0 * (1..k).map(|j| e.powi(j as i32)).sum::<f64>();
        let d_factor: f64 = 2.0 * (1..k).map(|j| j as f64 * e.powi(j as i32 - 1)).sum::<f64>();
        let t = t1 * factor;
        (t, [-t / (2.0 * g), t1 * d_factor, t / (2.0 * h0), 1.0 / g])
    }

    /// The state [x, v] at time t (before the accumulation point) for a ball dropped from rest at h0
    /// at t = 0; at a bounce time, the state after the bounce.
    pub fn exact(h0: f64, g: f64, e: f64, t: f64) -> [f64; 2] {
        let t1 = (2.0 * h0 / g).sqrt();
        if t < t1 {
            return [h0 - 0.5 * g * t * t, -g * t];
        }
        let w1 = g * t1;
        let (mut tk, mut k) = (t1, 1usize);
        loop {
            let w = e.powi(k as i32) * w1;
            let next = tk + 2.0 * w / g;
            if t < next {
                let s = t - tk;
                return [w * s - 0.5 * g * s * s, w - g * s];
            }
            tk = next;
            k += 1;
        }
    }
}

impl OdeSystem for BouncingBall {
    fn n_states(&self) -> usize {
        2
    }
    fn n_params(&self) -> usize {
        2
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = u[1];
        du[1] = -p[0];
    }
    fn n_events(&self) -> usize {
        1
    }
    fn event_spec(&self, _k: usize) -> EventSpec {
        EventSpec::crossing(Direction::Falling, EventAction::Jump)
    }
    fn event_condition<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
    ) -> S {
        u[0]
    }
    fn event_jump<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ArrayView1<S>,
        p: ArrayView1<S>,
        mut u_new: ArrayViewMut1<S>,
    ) {
        u_new[1] = -p[1] * u[1];
    }
}

/// A one-compartment model with doses at fixed times (time events): c' = −k c, p = [k]; event 0 adds
/// a dose of 2 at t = 1, 2.5 and 4 ([`ScheduledDoses::TIMES`]).
///
/// Closed form: c(t) = c0 e^{−kt} + Σ_{t_d ≤ t} 2 e^{−k(t − t_d)}.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScheduledDoses;

impl ScheduledDoses {
    /// The dose times.
    pub const TIMES: [f64; 3] = [1.0, 2.5, 4.0];
    /// The dose.
    pub const DOSE: f64 = 2.0;

    /// c(t) and its derivatives with respect to k and c0 (the doses at t_d ≤ t included).
    pub fn exact(c0: f64, k: f64, t: f64) -> (f64, [f64; 2]) {
        let mut c = c0 * (-k * t).exp();
        let mut dk = -t * c;
        for &td in Self::TIMES.iter().filter(|&&td| td <= t) {
            let term = Self::DOSE * (-k * (t - td)).exp();
            c += term;
            dk -= (t - td) * term;
        }
        (c, [dk, (-k * t).exp()])
    }
}

impl OdeSystem for ScheduledDoses {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        1
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = -p[0] * u[0];
    }
    fn n_events(&self) -> usize {
        1
    }
    fn event_spec(&self, _k: usize) -> EventSpec {
        EventSpec::at_times(Self::TIMES.to_vec(), EventAction::Jump)
    }
    fn event_jump<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
        mut u_new: ArrayViewMut1<S>,
    ) {
        u_new[0] = u[0] + S::from(Self::DOSE);
    }
}

/// A one-compartment pharmacokinetic model with threshold dosing: the concentration c decays,
/// c' = −k c, and whenever it falls below the threshold c_min a dose raises it by D, c⁺ = c⁻ + D;
/// p = [k, c_min, D]. Event 0 is the threshold.
///
/// Closed form from c(0) = c0 > c_min: the first dose at t₁ = ln(c0 / c_min) / k, and after it
/// every T = ln((c_min + D) / c_min) / k.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThresholdDosing;

impl ThresholdDosing {
    /// The time of dose j ≥ 1 from c(0) = c0.
    pub fn dose_time(c0: f64, k: f64, c_min: f64, dose: f64, j: usize) -> f64 {
        (c0 / c_min).ln() / k + (j - 1) as f64 * ((c_min + dose) / c_min).ln() / k
    }
}

impl OdeSystem for ThresholdDosing {
    fn n_states(&self) -> usize {
        1
    }
    fn n_params(&self) -> usize {
        3
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        du[0] = -p[0] * u[0];
    }
    fn n_events(&self) -> usize {
        1
    }
    fn event_spec(&self, _k: usize) -> EventSpec {
        EventSpec::crossing(Direction::Falling, EventAction::Jump)
    }
    fn event_condition<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ArrayView1<S>,
        p: ArrayView1<S>,
    ) -> S {
        u[0] - p[1]
    }
    fn event_jump<S: Scalar>(
        &self,
        _k: usize,
        _t: S,
        u: ArrayView1<S>,
        p: ArrayView1<S>,
        mut u_new: ArrayViewMut1<S>,
    ) {
        u_new[0] = u[0] + p[2];
    }
}

/// The double pendulum ([`crate::DoublePendulum`], same state and parameters) with the flip events
/// of the classic flip-time map: event k ∈ {0, 1} fires when arm k + 1 first flips over the top,
/// |θ_k| crossing π (condition θ_k² − π², rising), and stops the integration.
#[derive(Debug, Clone, Copy, Default)]
pub struct DoublePendulumFlip;

impl OdeSystem for DoublePendulumFlip {
    fn n_states(&self) -> usize {
        4
    }
    fn n_params(&self) -> usize {
        5
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, du: ArrayViewMut1<S>) {
        crate::DoublePendulum.rhs(t, u, p, du)
    }
    fn n_events(&self) -> usize {
        2
    }
    fn event_spec(&self, _k: usize) -> EventSpec {
        EventSpec::crossing(Direction::Rising, EventAction::Stop)
    }
    fn event_condition<S: Scalar>(
        &self,
        k: usize,
        _t: S,
        u: ArrayView1<S>,
        _p: ArrayView1<S>,
    ) -> S {
        u[k] * u[k] - std::f64::consts::PI * std::f64::consts::PI
    }
}
