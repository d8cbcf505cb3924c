//! Events: moments where a model changes — a ball bounces, a dose is given, the integration stops —
//! located on each accepted step's own continuous extension, for every method.
//!
//! Event k of a model ([`OdeSystem::n_events`]) is either a **crossing** event, which fires where its
//! condition g_k(t, u, p) ([`OdeSystem::event_condition`], generic over the scalar like the right-hand
//! side) crosses zero in its [`Direction`], or a **time** event, which fires at given times (exact
//! tstops; a dose at t = 12 h). When it fires it either stops the integration or jumps,
//! u⁺ = h_k(t*, u⁻, p) ([`OdeSystem::event_jump`]), after which the integration restarts from (t*, u⁺)
//! (first stage recomputed, controller memory kept). [`OdeSystem::event_fired`] may arm or disarm
//! events when one fires.
//!
//! **Location.** After each accepted step [t_n, t_{n+1}] the armed conditions are evaluated at
//! `event_samples` interior points of the step's continuous extension ũ and at its end, so that several
//! sign changes inside one step are seen in order. In the first sample interval with a sign change in
//! an event's direction, the root of g_k(t, ũ(t)) is found by the Illinois variant of regula falsi
//! (Dowell & Jarratt, BIT 11 (1971) 168–174; every fourth iterate a bisection, so the bracket always
//! shrinks) until the bracket is two ulps of t wide. t* is the bracket's end on the far side of the
//! crossing, so the crossing is complete at t*: the event time is within 2 ulps of the interpolant's
//! root. Every armed event whose condition has crossed in its direction by t* fires there too
//! (simultaneous events), in index order: jumps compose in that order, and a stop among them ends the
//! integration after all of them.
//!
//! **Restarting at a root.** After an event, a condition that sits at its root — |g⁺| ≤ |ġ⁺| δ with
//! ġ⁺ = g_t + g_u f(t*, u⁺) (one forward-mode pass) and δ = 100 ε (|t*| + |h|) — takes the sign of
//! ġ⁺, the side it moves to, so the event just handled is not found again at t* (the approach of
//! CVODE's root finding, Hindmarsh et al., ACM TOMS 31 (2005) §2.4). If such a condition nevertheless
//! crosses back within δ (a Zeno accumulation of events, as in a bouncing ball coming to rest, or a
//! grazing contact), the solve stops with [`SolverError::EventAccumulation`] instead of skipping it.
//! A tangency without a sign change inside one sampling interval cannot be seen by sign tests; more
//! `event_samples` narrow the gap.

use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::Dual64;

pub use crate::event_spec::{Direction, EventAction, EventHit, EventSpec, Trigger};

use crate::error::SolverError;
use crate::options::SolverOptions;
use crate::problem::{OdeProblem, check_times};
use crate::stepper::Stepper;
use crate::system::OdeSystem;

/// The most interior samples per step [`SolverOptions::event_samples`] may ask for.
pub const MAX_EVENT_SAMPLES: usize = 1000;

/// The sign of x as −1, 0 or 1.
fn sign(x: f64) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

/// `options` with the model's time-event times added to its tstops (sorted in the direction of
/// integration, without repeats), so that the steps land on them; `options` itself for a model without
/// events.
///
/// # Errors
/// As [`EventLocator::new`].
pub fn with_event_tstops<'o, M: OdeSystem>(
    problem: &OdeProblem<M>,
    options: &'o SolverOptions,
) -> Result<std::borrow::Cow<'o, SolverOptions>, SolverError> {
    if problem.model().n_events() == 0 {
        return Ok(std::borrow::Cow::Borrowed(options));
    }
    let locator = EventLocator::new(problem, options)?;
    let mut tstops = options.tstops.clone();
    tstops.extend(locator.event_times());
    let dir = (problem.t_end() - problem.t0()).signum();
    tstops.sort_by(|a, b| (dir * a).total_cmp(&(dir * b)));
    tstops.dedup();
    Ok(std::borrow::Cow::Owned(options.clone().tstops(tstops)))
}

/// Finds, checks and fires the events of one solve, step by step: [`EventLocator::locate`] after each
/// accepted step, then [`EventLocator::fire`] if it found one. [`crate::solve`] drives it; derivative
/// code that drives a [`Stepper`] itself uses it the same way, so the same events happen at the same
/// bits.
pub struct EventLocator<'a, M: OdeSystem> {
    problem: &'a OdeProblem<M>,
    specs: Vec<EventSpec>,
    armed: Vec<bool>,
    /// Crossing events: g at the left end of the interval under test, and the sign used for the
    /// crossing test there.
    g: Vec<f64>,
    sign: Vec<i8>,
    /// Whether the sign came from ġ at a root (the real left end is then t_n + δ).
    at_root: Vec<bool>,
    /// δ of the last restart.
    delta: f64,
    /// Time events (t, k), sorted in the direction of integration, then by k; the next one not passed.
    times: Vec<(f64, usize)>,
    next_time: usize,
    samples: usize,
    max_events: usize,
    fired_count: usize,
    dir: f64,
    // The located event, and scratch.
    t_star: f64,
    located_by: Option<usize>,
    fired: Vec<usize>,
    u_minus: Vec<f64>,
    u_plus: Vec<f64>,
    ub: Vec<f64>,
    gb: Vec<f64>,
    f: Vec<f64>,
    ud: Vec<Dual64>,
    pd: Vec<Dual64>,
}

impl<'a, M: OdeSystem> EventLocator<'a, M> {
    /// The events of `problem`'s model, with `options.event_samples` and `options.max_events`.
    ///
    /// # Errors
    /// [`SolverError::TimeOutsideSpan`] / [`SolverError::UnsortedTimes`] for a time event's times;
    /// [`SolverError::InvalidOption`] for `max_events = 0`.
    pub fn new(problem: &'a OdeProblem<M>, options: &SolverOptions) -> Result<Self, SolverError> {
        let model = problem.model();
        let m = model.n_events();
        let n = problem.n_states();
        let (t0, t_end) = (problem.t0(), problem.t_end());
        if options.event_samples > MAX_EVENT_SAMPLES {
            return Err(SolverError::InvalidOption {
                name: "event_samples",
                value: options.event_samples as f64,
                valid: "<= 1000 interior samples per step",
            });
        }
        if options.max_events == 0 {
            return Err(SolverError::InvalidOption {
                name: "max_events",
                value: 0.0,
                valid: ">= 1",
            });
        }
        let specs: Vec<EventSpec> = (0..m).map(|k| model.event_spec(k)).collect();
        let mut times = Vec::new();
        for (k, spec) in specs.iter().enumerate() {
            if let Trigger::Times(ts) = &spec.trigger {
                check_times("event", ts, t0, t_end, false)?;
                times.extend(ts.iter().map(|&t| (t, k)));
            }
        }
        let dir = (t_end - t0).signum();
        times.sort_by(|a, b| (dir * a.0).total_cmp(&(dir * b.0)).then(a.1.cmp(&b.1)));
        Ok(Self {
            problem,
            armed: specs.iter().map(|s| s.armed).collect(),
            specs,
            g: vec![0.0; m],
            sign: vec![0; m],
            at_root: vec![false; m],
            delta: 0.0,
            times,
            next_time: 0,
            samples: options.event_samples,
            max_events: options.max_events,
            fired_count: 0,
            dir,
            t_star: t0,
            located_by: None,
            fired: Vec::with_capacity(m),
            u_minus: vec![0.0; n],
            u_plus: vec![0.0; n],
            ub: vec![0.0; n],
            gb: vec![0.0; m],
            f: vec![0.0; n],
            ud: vec![Dual64::from(0.0); n],
            pd: problem.params().iter().map(|&x| Dual64::from(x)).collect(),
        })
    }

    /// Whether the model has any events.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The number of events of the model.
    pub fn n_events(&self) -> usize {
        self.specs.len()
    }

    /// The times of the time events (to add to the tstops).
    pub fn event_times(&self) -> impl Iterator<Item = f64> + '_ {
        self.times.iter().map(|&(t, _)| t)
    }

    /// Events fired so far.
    pub fn fired_count(&self) -> usize {
        self.fired_count
    }

    /// Which events are armed now.
    pub fn armed(&self) -> &[bool] {
        &self.armed
    }

    fn is_crossing(&self, k: usize) -> Option<Direction> {
        match self.specs[k].trigger {
            Trigger::Crossing(d) if self.armed[k] => Some(d),
            _ => None,
        }
    }

    /// g_k(t, u) in f64, checked.
    fn condition(&self, k: usize, t: f64, u: &[f64]) -> Result<f64, SolverError> {
        let g = self.problem.model().event_condition(
            k,
            t,
            ArrayView1::from(u),
            self.problem.params().view(),
        );
        if g.is_finite() {
            Ok(g)
        } else {
            Err(SolverError::NonFiniteEvent {
                t,
                event: k,
                value: g,
            })
        }
    }

    /// Sets the left values at t0, where the integration starts from u0.
    ///
    /// # Errors
    /// [`SolverError::NonFiniteEvent`] for a condition that is NaN/∞ there; [`SolverError::NonFiniteRhs`]
    /// if f(t0, u0) is (needed for ġ at a root).
    pub fn start(&mut self, t: f64, u: &[f64]) -> Result<(), SolverError> {
        self.fired.clear();
        self.left_values(t, u, 0.0)
    }

    /// The left values at the point (t, u) the integration (re)starts from: t0, or an event's t* after
    /// its jumps (`h`: the size of the step that contained it, 0 at t0). A condition counts as at its
    /// root if |g| ≤ |ġ| δ, or, for an event that just fired, if its jump left g within 4 |g⁻| + |ġ| δ
    /// (g⁻ at u⁻ is the root's residual: round-off of the interpolant).
    fn left_values(&mut self, t: f64, u: &[f64], h: f64) -> Result<(), SolverError> {
        self.delta = 100.0 * f64::EPSILON * (t.abs() + h.abs());
        let mut have_f = false;
        for k in 0..self.specs.len() {
            self.at_root[k] = false;
            if self.is_crossing(k).is_none() {
                continue;
            }
            let g = self.condition(k, t, u)?;
            self.g[k] = g;
            self.sign[k] = sign(g);
            if !have_f {
                let model = self.problem.model();
                model.rhs(
                    t,
                    ArrayView1::from(u),
                    self.problem.params().view(),
                    ArrayViewMut1::from(&mut self.f[..]),
                );
                if let Some(component) = self.f.iter().position(|v| !v.is_finite()) {
                    return Err(SolverError::NonFiniteRhs {
                        t,
                        component,
                        value: self.f[component],
                    });
                }
                for (d, (&x, &fx)) in self.ud.iter_mut().zip(u.iter().zip(&self.f)) {
                    *d = Dual64::new(x, fx);
                }
                have_f = true;
            }
            let gd = self.problem.model().event_condition(
                k,
                Dual64::new(t, 1.0),
                ArrayView1::from(&self.ud[..]),
                ArrayView1::from(&self.pd[..]),
            );
            let g_dot = gd.eps;
            let residual = if self.fired.contains(&k) {
                4.0 * self.gb[k].abs()
            } else {
                0.0
            };
            if g_dot.is_finite() && g.abs() <= residual + g_dot.abs() * self.delta {
                let s = sign(g_dot);
                if s != 0 {
                    self.sign[k] = s;
                    self.at_root[k] = true;
                }
            }
        }
        Ok(())
    }

    /// Looks for events in the step just accepted by `stepper`, which started at `t_n`. Returns the
    /// event time t* if any fires in (t_n, t_{n+1}] — then the step's own values beyond t* are void:
    /// call [`EventLocator::fire`] — or `None`, and the left values move to the step's end.
    ///
    /// # Errors
    /// [`SolverError::NonFiniteEvent`] for a condition that is NaN/∞; [`SolverError::EventAccumulation`]
    /// for an event that would fire again within δ of its last firing; the stepper's interpolation
    /// errors.
    pub fn locate<S: Stepper>(
        &mut self,
        stepper: &mut S,
        t_n: f64,
    ) -> Result<Option<f64>, SolverError> {
        if self.specs.is_empty() {
            return Ok(None);
        }
        let t_next = stepper.t();
        let h = t_next - t_n;
        let m = self.samples + 1;
        let mut ta = t_n;
        for j in 1..=m {
            let tb = if j == m {
                t_next
            } else {
                t_n + h * (j as f64 / m as f64)
            };
            let mut ub = std::mem::take(&mut self.ub);
            if j == m {
                ub.copy_from_slice(stepper.u());
            } else {
                stepper.interpolate(tb, &mut ub)?;
            }
            self.ub = ub;
            let mut earliest: Option<(f64, usize)> = None;
            for k in 0..self.specs.len() {
                let Some(direction) = self.is_crossing(k) else {
                    continue;
                };
                let gb = self.condition(k, tb, &self.ub)?;
                self.gb[k] = gb;
                let sa = self.sign[k];
                let sb = sign(gb);
                if sa == 0 || sb == sa || !direction.counts(sa) {
                    continue;
                }
                // A crossing in the event's direction inside [ta, tb].
                let (a, ga) = if self.at_root[k] && j == 1 {
                    self.leave_root(stepper, k, (t_n, h), tb)?
                } else {
                    (ta, self.g[k])
                };
                let root = self.root(stepper, k, (a, ga), (tb, gb))?;
                if earliest.is_none_or(|(e, _)| self.dir * (root - e) < 0.0) {
                    earliest = Some((root, k));
                }
            }
            if let Some((t_star, k)) = earliest {
                self.located_by = Some(k);
                self.collect_fired(stepper, t_star, t_next)?;
                return Ok(Some(t_star));
            }
            for k in 0..self.specs.len() {
                if self.is_crossing(k).is_some() {
                    self.g[k] = self.gb[k];
                    if self.gb[k] != 0.0 {
                        self.sign[k] = sign(self.gb[k]);
                    }
                    self.at_root[k] = false;
                }
            }
            ta = tb;
        }
        if self.times.get(self.next_time).map(|&(t, _)| t) == Some(t_next) {
            self.located_by = None;
            self.collect_fired(stepper, t_next, t_next)?;
            if !self.fired.is_empty() {
                return Ok(Some(t_next));
            }
            // Only disarmed events were due: pass them.
            while self
                .times
                .get(self.next_time)
                .is_some_and(|&(tk, _)| self.dir * (tk - t_next) <= 0.0)
            {
                self.next_time += 1;
            }
        }
        Ok(None)
    }

    /// The left end of a bracket for a condition that starts at its root with the sign of ġ: the first
    /// of t_n + d, d = δ, 4δ, 16δ, … before `tb` where g has that sign and clears four times the
    /// round-off (g at the restart point, and the interpolant's error in reproducing it). None found means g crosses back before it could be told from round-off:
    /// the events accumulate.
    fn leave_root<S: Stepper>(
        &mut self,
        stepper: &mut S,
        k: usize,
        (t_n, h): (f64, f64),
        tb: f64,
    ) -> Result<(f64, f64), SolverError> {
        // The round-off of the step's interpolant near its start, where it should reproduce u_n
        // exactly (Radau's collocation polynomial, written from the step's end, does not).
        // With g at the restart, itself round-off of the root just located, it sets the floor that g
        // must clear to count as having left the root.
        let noise = (self.condition_at(stepper, k, t_n)? - self.g[k]).abs();
        let floor = 4.0 * noise.max(self.g[k].abs());
        let mut d = self.delta.max(100.0 * f64::EPSILON * (t_n.abs() + h.abs()));
        loop {
            let a = t_n + self.dir * d;
            if self.dir * (a - tb) >= 0.0 {
                return Err(SolverError::EventAccumulation { t: t_n, event: k });
            }
            let ga = self.condition_at(stepper, k, a)?;
            if sign(ga) == self.sign[k] && ga.abs() > floor {
                return Ok((a, ga));
            }
            d *= 4.0;
        }
    }

    /// g_k(t, ũ(t)) on the step just accepted.
    fn condition_at<S: Stepper>(
        &mut self,
        stepper: &mut S,
        k: usize,
        t: f64,
    ) -> Result<f64, SolverError> {
        let mut u = std::mem::take(&mut self.u_minus);
        let result = stepper.interpolate(t, &mut u);
        self.u_minus = u;
        result?;
        self.condition(k, t, &self.u_minus)
    }

    /// The root of g_k(t, ũ(t)) in the bracket from `a` (sign of ga ≠ 0) to `b` (sign ≠ that of ga):
    /// Illinois, every fourth iterate a bisection, until the bracket is two ulps wide; returns its end on
    /// b's side.
    fn root<S: Stepper>(
        &mut self,
        stepper: &mut S,
        k: usize,
        (mut a, mut ga): (f64, f64),
        (mut b, mut gb): (f64, f64),
    ) -> Result<f64, SolverError> {
        if gb == 0.0 {
            return Ok(b);
        }
        let sa = sign(ga);
        let mut side = 0i8;
        for iteration in 0..400 {
            let width = (b - a).abs();
            if width <= 2.0 * f64::EPSILON * a.abs().max(b.abs()).max(f64::MIN_POSITIVE) {
                break;
            }
            let secant = b - gb * (b - a) / (gb - ga);
            let inside = (secant - a) * (secant - b) < 0.0;
            let c = if inside && iteration % 4 != 3 {
                secant
            } else {
                a + 0.5 * (b - a)
            };
            if c == a || c == b {
                break;
            }
            let gc = self.condition_at(stepper, k, c)?;
            if gc == 0.0 {
                return Ok(c);
            }
            if sign(gc) == sa {
                (a, ga) = (c, gc);
                if side == -1 {
                    gb *= 0.5;
                }
                side = -1;
            } else {
                (b, gb) = (c, gc);
                if side == 1 {
                    ga *= 0.5;
                }
                side = 1;
            }
        }
        Ok(b)
    }

    /// Records t*, u⁻ = ũ(t*) and the events that fire there: every armed crossing event whose
    /// condition has crossed in its direction by t*, and the time events at t* if t* is the step's end.
    fn collect_fired<S: Stepper>(
        &mut self,
        stepper: &mut S,
        t_star: f64,
        t_next: f64,
    ) -> Result<(), SolverError> {
        self.t_star = t_star;
        if t_star == t_next {
            self.u_minus.copy_from_slice(stepper.u());
        } else {
            let mut u = std::mem::take(&mut self.u_minus);
            let result = stepper.interpolate(t_star, &mut u);
            self.u_minus = u;
            result?;
        }
        self.fired.clear();
        for k in 0..self.specs.len() {
            match &self.specs[k].trigger {
                Trigger::Crossing(direction) if self.armed[k] => {
                    let sa = self.sign[k];
                    if sa == 0 || !direction.counts(sa) {
                        continue;
                    }
                    let g = self.condition(k, t_star, &self.u_minus)?;
                    if sign(g) != sa {
                        self.fired.push(k);
                        self.gb[k] = g;
                    }
                }
                Trigger::Times(_) if t_star == t_next => {
                    let due = self.times[self.next_time..]
                        .iter()
                        .take_while(|&&(t, _)| t == t_star)
                        .any(|&(_, j)| j == k);
                    if due && self.armed[k] {
                        self.fired.push(k);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Fires the events [`EventLocator::locate`] found: applies their jumps in index order, lets the
    /// model re-arm events, and (unless one of them stops the integration) restarts `stepper` from
    /// (t*, u⁺) and the left values with it. Returns the record of the firing.
    ///
    /// # Errors
    /// [`SolverError::TooManyEvents`] beyond `max_events`; [`SolverError::NonFiniteJump`] for a jump
    /// that leaves the state non-finite; the errors of [`EventLocator::start`] and of the restart.
    pub fn fire<S: Stepper>(&mut self, stepper: &mut S, t_n: f64) -> Result<EventHit, SolverError> {
        let t = self.t_star;
        self.fired_count += 1;
        if self.fired_count > self.max_events {
            return Err(SolverError::TooManyEvents {
                t,
                max_events: self.max_events,
            });
        }
        let model = self.problem.model();
        self.u_plus.copy_from_slice(&self.u_minus);
        let mut stop = false;
        for &k in &self.fired {
            match self.specs[k].action {
                EventAction::Stop => stop = true,
                EventAction::Jump => {
                    self.ub.copy_from_slice(&self.u_plus);
                    model.event_jump(
                        k,
                        t,
                        ArrayView1::from(&self.ub[..]),
                        self.problem.params().view(),
                        ArrayViewMut1::from(&mut self.u_plus[..]),
                    );
                    if let Some(component) = self.u_plus.iter().position(|v| !v.is_finite()) {
                        return Err(SolverError::NonFiniteJump {
                            t,
                            event: k,
                            component,
                            value: self.u_plus[component],
                        });
                    }
                }
            }
            model.event_fired(k, &mut self.armed);
        }
        while self
            .times
            .get(self.next_time)
            .is_some_and(|&(tk, _)| self.dir * (tk - t) <= 0.0)
        {
            self.next_time += 1;
        }
        let hit = EventHit {
            t,
            events: self.fired.clone(),
            located_by: self.located_by,
            u_before: self.u_minus.clone(),
            u_after: self.u_plus.clone(),
            stop,
        };
        if !stop {
            stepper.restart_at(t, &self.u_plus)?;
            let u = std::mem::take(&mut self.u_plus);
            let result = self.left_values(t, &u, t - t_n);
            self.u_plus = u;
            result?;
        }
        Ok(hit)
    }
}
