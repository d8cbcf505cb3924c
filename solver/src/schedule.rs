//! The rules every stepper follows between its step attempts, written once: landing on tstops and
//! t_end, the `max_steps` budget, the smallest step that still advances t, and how many trial steps with
//! non-finite values are retried before the model is blamed.

use crate::error::SolverError;
use crate::options::SolverOptions;
use crate::problem::check_times;

/// Non-finite trial steps in a row (each shrinking h, by 5¹⁰ ≈ 1e7 in all with the default
/// controller) before a model that stays NaN/∞ is reported as [`SolverError::NonFiniteRhs`]. An accepted
/// step ends the run, so a model that is NaN beyond some t* is approached until the step that would
/// cross t* becomes too small, and the non-finite value is reported there (the steppers report it
/// instead of [`SolverError::StepSizeTooSmall`]).
pub(crate) const MAX_NON_FINITE_REJECTIONS: usize = 10;

/// A step attempt's size and end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    /// The signed step size (exactly `t_new − t`).
    pub h: f64,
    /// |h| (after landing).
    pub h_abs: f64,
    /// The end of the attempt: exactly the next stop when it lands there.
    pub t_new: f64,
    /// Whether the attempt ends on the next stop.
    pub hits_stop: bool,
}

/// How an attempt lands on the next stop: the one point where the families differ, deliberately and as
/// in Hairer's codes (DOPRI5 stretches, RADAU5 lands only when the step reaches the stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Landing {
    /// Explicit pairs: stretch a step by up to 1 % onto the stop, so no sliver of a step is left;
    /// h = t_new − t exactly.
    Stretch,
    /// Implicit schemes: land only when the step reaches the stop (to 1e-12; fixed steps within 1 %),
    /// so the iteration matrix of the controller's step size is kept; h = ±h_abs, t_new = t + h.
    Reach,
}

/// Why no attempt can be made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Refusal {
    /// `max_steps` attempts were made.
    MaxSteps,
    /// The step would not advance t beyond round-off (|h| ≤ 16 ε max(|t|, 1)).
    TooSmall {
        /// The signed step that was refused.
        h: f64,
    },
}

/// tstops, the attempt budget and non-finite retries of one solve (restored with checkpoints).
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    /// Sorted in the direction of integration, without repeats, ending with t_end.
    stops: Vec<f64>,
    next_stop: usize,
    dir: f64,
    landing: Landing,
    fixed_step: bool,
    h_max: f64,
    max_steps: usize,
    attempts: usize,
    non_finite: usize,
}

impl Schedule {
    /// The schedule of a solve over `(t0, t_end)` with `options.tstops`, `h_max` and `max_steps`.
    ///
    /// # Errors
    /// [`SolverError::TimeOutsideSpan`] / [`SolverError::UnsortedTimes`] for bad tstops.
    pub fn new(
        options: &SolverOptions,
        (t0, t_end): (f64, f64),
        landing: Landing,
    ) -> Result<Self, SolverError> {
        check_times("tstop", &options.tstops, t0, t_end, false)?;
        let dir = (t_end - t0).signum();
        let mut stops = options.tstops.clone();
        stops.push(t_end);
        stops.sort_by(|a, b| (dir * a).total_cmp(&(dir * b)));
        stops.dedup();
        Ok(Self {
            stops,
            next_stop: 0,
            dir,
            landing,
            fixed_step: options.fixed_step.is_some(),
            h_max: options.h_max,
            max_steps: options.max_steps,
            attempts: 0,
            non_finite: 0,
        })
    }

    /// The direction of integration (±1).
    pub fn dir(&self) -> f64 {
        self.dir
    }

    /// Whether t_end has been reached.
    pub fn is_finished(&self) -> bool {
        self.next_stop == self.stops.len()
    }

    /// The next attempt from `t` with step magnitude `h_abs` (capped at `h_max`), landing on the next
    /// stop as [`Landing`] says; it counts against `max_steps`.
    ///
    /// # Errors
    /// [`Refusal::MaxSteps`] once the budget is spent; [`Refusal::TooSmall`] for a step that would not
    /// advance t.
    pub fn attempt(&mut self, t: f64, h_abs: f64) -> Result<Attempt, Refusal> {
        if self.attempts >= self.max_steps {
            return Err(Refusal::MaxSteps);
        }
        let stop = self.stops[self.next_stop];
        let remaining = (stop - t).abs();
        let mut h_abs = h_abs.min(self.h_max);
        let hits_stop = match self.landing {
            Landing::Stretch => h_abs * 1.01 >= remaining,
            Landing::Reach => {
                h_abs >= remaining * (1.0 - 1e-12) || (self.fixed_step && h_abs >= remaining * 0.99)
            }
        };
        if hits_stop {
            h_abs = remaining;
        }
        let (h, t_new) = match (self.landing, hits_stop) {
            (_, true) => (stop - t, stop),
            (Landing::Stretch, false) => {
                let t_new = t + self.dir * h_abs;
                (t_new - t, t_new)
            }
            (Landing::Reach, false) => (self.dir * h_abs, t + self.dir * h_abs),
        };
        if h == 0.0 || h.abs() <= 16.0 * f64::EPSILON * t.abs().max(1.0) {
            return Err(Refusal::TooSmall {
                h: self.dir * h_abs,
            });
        }
        self.attempts += 1;
        Ok(Attempt {
            h,
            h_abs,
            t_new,
            hits_stop,
        })
    }

    /// The attempt was accepted: past its stop if it landed on one; a run of non-finite retries ends.
    pub fn accepted(&mut self, attempt: &Attempt) {
        if attempt.hits_stop {
            self.next_stop += 1;
        }
        self.non_finite = 0;
    }

    /// A trial step met NaN/∞. Returns whether to give up (more than [`MAX_NON_FINITE_REJECTIONS`] in a
    /// run): shrinking h helps only if the step was too large for the model.
    pub fn non_finite(&mut self) -> bool {
        self.non_finite += 1;
        self.non_finite > MAX_NON_FINITE_REJECTIONS
    }

    /// Moves back to `t` inside the step just accepted (an event): the stops after t are ahead again.
    pub fn rewind(&mut self, t: f64) {
        let dir = self.dir;
        self.next_stop = self.stops.partition_point(|&s| dir * s <= dir * t);
    }

    /// (next stop, attempts) for a checkpoint.
    pub fn position(&self) -> (usize, usize) {
        (self.next_stop, self.attempts)
    }

    /// Resumes at a checkpoint's position.
    pub fn restore(&mut self, (next_stop, attempts): (usize, usize)) {
        self.next_stop = next_stop;
        self.attempts = attempts;
    }

    /// The attempts made so far and the budget.
    pub fn max_steps(&self) -> usize {
        self.max_steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(tstops: Vec<f64>, max_steps: usize) -> Schedule {
        let options = SolverOptions::default().tstops(tstops).max_steps(max_steps);
        Schedule::new(&options, (0.0, 1.0), Landing::Stretch).unwrap()
    }

    #[test]
    fn attempts_land_on_stops_within_one_percent() {
        let mut s = schedule(vec![0.5], 100);
        // 0.496 · 1.01 ≥ 0.5: stretched onto the stop, exactly.
        let a = s.attempt(0.0, 0.496).unwrap();
        assert!(a.hits_stop && a.t_new == 0.5 && a.h == 0.5);
        // 0.49 · 1.01 < 0.5: a plain step, h = t_new − t exactly.
        let b = s.attempt(0.0, 0.49).unwrap();
        assert!(!b.hits_stop && b.t_new == 0.49);
        s.accepted(&a);
        assert_eq!(s.position(), (1, 2));
        let c = s.attempt(0.5, 10.0).unwrap();
        assert!(c.hits_stop && c.t_new == 1.0);
        s.accepted(&c);
        assert!(s.is_finished());
        // Implicit schemes land only when the step reaches the stop.
        let options = SolverOptions::default().tstops(vec![0.5]);
        let mut s = Schedule::new(&options, (0.0, 1.0), Landing::Reach).unwrap();
        assert!(!s.attempt(0.0, 0.496).unwrap().hits_stop);
        assert!(s.attempt(0.0, 0.5).unwrap().hits_stop);
    }

    #[test]
    fn refusals_and_non_finite_runs() {
        let mut s = schedule(vec![], 2);
        assert!(matches!(s.attempt(0.0, 1e-17), Err(Refusal::TooSmall { h }) if h == 1e-17));
        s.attempt(0.0, 0.1).unwrap();
        s.attempt(0.0, 0.1).unwrap();
        assert!(matches!(s.attempt(0.0, 0.1), Err(Refusal::MaxSteps)));
        let mut s = schedule(vec![], 100);
        for _ in 0..MAX_NON_FINITE_REJECTIONS {
            assert!(!s.non_finite());
        }
        assert!(s.non_finite());
        // An accepted step ends the run.
        let a = s.attempt(0.0, 0.01).unwrap();
        s.accepted(&a);
        for _ in 0..MAX_NON_FINITE_REJECTIONS {
            assert!(!s.non_finite());
        }
    }
}
