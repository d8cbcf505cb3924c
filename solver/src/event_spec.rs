//! What an event is: its trigger, its action, and the record of a firing ([`crate::events`] locates
//! and fires them). Kept apart from the locator so that the model interface can name these types
//! without importing the code that drives it.

use serde::Serialize;

/// Which zero crossings of a condition fire its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Direction {
    /// g goes from negative to zero or positive.
    Rising,
    /// g goes from positive to zero or negative.
    Falling,
    /// Either way.
    #[default]
    Either,
}

impl Direction {
    /// Whether a crossing that starts with sign `from` (±1) counts.
    pub(crate) fn counts(self, from: i8) -> bool {
        match self {
            Direction::Rising => from < 0,
            Direction::Falling => from > 0,
            Direction::Either => from != 0,
        }
    }
}

/// What an event does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum EventAction {
    /// End the integration at the event (the solution's `t_end` becomes t*).
    #[default]
    Stop,
    /// Replace the state by u⁺ = h(t*, u⁻, p) ([`crate::OdeSystem::event_jump`]) and go on.
    Jump,
}

/// How an event is triggered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Trigger {
    /// A zero crossing of the event's condition in this direction.
    Crossing(Direction),
    /// At these times (in the direction of integration, inside (t0, t_end]); they become tstops, so the
    /// steps land on them exactly.
    Times(Vec<f64>),
}

/// The trigger and action of one event, and whether it is armed at t0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSpec {
    /// When it fires.
    pub trigger: Trigger,
    /// What it does.
    pub action: EventAction,
    /// Whether it is armed at t0 (default `true`); [`crate::OdeSystem::event_fired`] can change it.
    pub armed: bool,
}

impl EventSpec {
    /// An event fired by zero crossings of its condition in `direction`.
    pub fn crossing(direction: Direction, action: EventAction) -> Self {
        Self {
            trigger: Trigger::Crossing(direction),
            action,
            armed: true,
        }
    }

    /// An event fired at given times.
    pub fn at_times(times: Vec<f64>, action: EventAction) -> Self {
        Self {
            trigger: Trigger::Times(times),
            action,
            armed: true,
        }
    }

    /// The same event, disarmed at t0.
    pub fn disarmed(mut self) -> Self {
        self.armed = false;
        self
    }
}

/// One firing: the time, the events that fired there (ascending), and the state before and after
/// their jumps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventHit {
    /// The event time t*.
    pub t: f64,
    /// The events that fired at t*, in the order their actions were applied.
    pub events: Vec<usize>,
    /// The crossing event whose root is t* (the earliest root of the step; simultaneous events fire
    /// with it), or `None` for time events. Its condition defines t*(θ) for derivatives.
    pub located_by: Option<usize>,
    /// u⁻ = ũ(t*), the step's continuous extension at t*.
    pub u_before: Vec<f64>,
    /// u⁺ after the jumps (equal to `u_before` if none jumped).
    pub u_after: Vec<f64>,
    /// Whether the integration stopped here.
    pub stop: bool,
}
