//! Checkpointing: the policies by which a backward pass gets back to the steps of a forward solve, and
//! the Griewank–Walther binomial reversal ("Revolve") shared by the discrete and continuous adjoints.
//!
//! With s snapshots and l steps the fewest recomputed steps is t(l, s) = r·l − β(s+1, r−1),
//! β(s, r) = C(s+r, s), r minimal with β(s, r) ≥ l (Griewank & Walther, *Evaluating Derivatives*, 2nd ed.,
//! §12.3; A. Griewank, "Achieving logarithmic growth of temporal and spatial complexity in reverse
//! automatic differentiation", Optim. Methods Softw. 1 (1992) 35–54).

use odesens_solver::{EventLocator, OdeSystem, Stepper};

use crate::error::SensitivityError;

/// How the backward pass gets back to the steps of the forward solve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum Checkpointing {
    /// A checkpoint at every step: no recomputation beyond each step's own replay; memory ∝ steps.
    #[default]
    KeepAll,
    /// A checkpoint every `every` steps; each segment is recomputed once, storing its steps' checkpoints.
    Uniform {
        /// Steps between stored checkpoints (≥ 1).
        every: usize,
    },
    /// Griewank–Walther binomial checkpointing ("Revolve") with at most `snapshots` checkpoints stored at
    /// once (the initial one included): for l steps the fewest possible steps are recomputed,
    /// t(l, s) = r·l − β(s+1, r−1), β(s, r) = C(s+r, s), r minimal with β(s, r) ≥ l. l is found by the
    /// forward solve, which also evaluates G.
    Binomial {
        /// Checkpoints stored at once (≥ 1).
        snapshots: usize,
    },
    /// Binomial checkpointing with as many snapshots as fit in `bytes`.
    MemoryBudget {
        /// Bytes of checkpoint data allowed.
        bytes: usize,
    },
}

impl Checkpointing {
    /// Checks the policy's settings and returns how many snapshots a binomial reversal may hold
    /// (`cp_bytes`: the size of one checkpoint; 0 for keep-all and uniform).
    pub(crate) fn snapshots(self, cp_bytes: usize) -> Result<usize, SensitivityError> {
        match self {
            Checkpointing::Uniform { every: 0 } => Err(SensitivityError::InvalidSetting {
                name: "Uniform.every",
                value: 0.0,
                valid: ">= 1",
            }),
            Checkpointing::Binomial { snapshots: 0 } => Err(SensitivityError::InvalidSetting {
                name: "Binomial.snapshots",
                value: 0.0,
                valid: ">= 1",
            }),
            Checkpointing::MemoryBudget { bytes } if bytes < cp_bytes => {
                Err(SensitivityError::InvalidSetting {
                    name: "MemoryBudget.bytes",
                    value: bytes as f64,
                    valid: "at least the size of one checkpoint (state, first stage and scalars)",
                })
            }
            Checkpointing::Binomial { snapshots } => Ok(snapshots),
            Checkpointing::MemoryBudget { bytes } => Ok(bytes / cp_bytes),
            Checkpointing::KeepAll | Checkpointing::Uniform { .. } => Ok(0),
        }
    }
}

/// β(s, r) = C(s + r, s) (saturating).
fn beta(s: usize, r: usize) -> usize {
    // C(s + r, min(s, r)) by the multiplicative formula, saturating at usize::MAX.
    let k = s.min(r);
    let mut c: u128 = 1;
    for i in 1..=k as u128 {
        c = c * (s.max(r) as u128 + i) / i;
        if c > usize::MAX as u128 {
            return usize::MAX;
        }
    }
    c as usize
}

/// Griewank–Walther's minimal number of recomputed steps t(l, s) for l steps and s snapshots.
pub fn binomial_recomputations(l: usize, s: usize) -> usize {
    if l <= 1 {
        return 0;
    }
    if s <= 1 {
        return l * (l - 1) / 2;
    }
    let mut r = 0;
    while beta(s, r) < l {
        r += 1;
    }
    r * l - if r == 0 { 0 } else { beta(s + 1, r - 1) }
}

/// The optimal first advance for reversing l > 1 steps with c ≥ 2 snapshots:
/// l̂ = max(β(c, r−2), l − β(c−1, r)) clamped to [1, l−1] (checked against a brute-force recursion in
/// the tests).
fn binomial_split(l: usize, c: usize) -> usize {
    let mut r = 0;
    while beta(c, r) < l {
        r += 1;
    }
    let a = if r >= 2 { beta(c, r - 2) } else { 0 };
    let b = l.saturating_sub(beta(c - 1, r));
    a.max(b).clamp(1, l - 1)
}

/// Stored checkpoints: a stack whose buffers are reused.
pub(crate) struct Stack<C> {
    pub(crate) items: Vec<C>,
    depth: usize,
    pub(crate) peak: usize,
}

impl<C: Default> Stack<C> {
    /// A stack holding `first` in slot 0, with room for `capacity` checkpoints.
    pub(crate) fn new(first: C, capacity: usize) -> Self {
        let mut items = Vec::with_capacity(capacity.max(1));
        items.push(first);
        Self {
            items,
            depth: 1,
            peak: 1,
        }
    }

    /// Stores the integrator's current point; returns its slot.
    pub(crate) fn push<S: Stepper<Checkpoint = C>>(&mut self, integrator: &S) -> usize {
        if self.depth == self.items.len() {
            self.items.push(C::default());
        }
        integrator.checkpoint_into(&mut self.items[self.depth]);
        self.depth += 1;
        self.peak = self.peak.max(self.depth);
        self.depth - 1
    }

    pub(crate) fn pop(&mut self) {
        self.depth -= 1;
    }
}

/// One move of a binomial reversal over "units" (steps, or segments of steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Restore the checkpoint in `slot`, advance `advance` units, then reverse the next unit.
    Reverse { slot: usize, advance: usize },
    /// Restore the checkpoint in `slot`, advance `advance` units, store a new checkpoint (the next slot).
    Store { slot: usize, advance: usize },
    /// Release the most recent checkpoint.
    Release,
}

/// Work of the binomial reversal.
enum Work {
    /// Reverse units [a, b) from the checkpoint in `slot` (taken at unit a) with `c` snapshots usable,
    /// that one included.
    Reverse {
        slot: usize,
        a: usize,
        b: usize,
        c: usize,
    },
    /// Release the most recent snapshot.
    Release,
}

/// Reverses units [0, l) from the checkpoint in slot 0 with `c` snapshots (Griewank–Walther), emitting
/// the moves to `act` in order: to reverse [a, b), advance l̂ units, store a snapshot, reverse
/// [a + l̂, b) with c − 1, release it, reverse [a, a + l̂) with c; with one snapshot left every unit is
/// reached from the range's checkpoint. Units are reversed in strictly decreasing order. The recursion
/// runs on an explicit work list, so its depth (up to the number of snapshots) does not use the call
/// stack.
pub(crate) fn revolve(
    l: usize,
    c: usize,
    mut act: impl FnMut(Action) -> Result<(), SensitivityError>,
) -> Result<(), SensitivityError> {
    let mut depth = 1;
    let mut work = vec![Work::Reverse {
        slot: 0,
        a: 0,
        b: l,
        c,
    }];
    while let Some(item) = work.pop() {
        let (slot, a, b, c) = match item {
            Work::Release => {
                act(Action::Release)?;
                depth -= 1;
                continue;
            }
            Work::Reverse { slot, a, b, c } => (slot, a, b, c),
        };
        let l = b - a;
        if l == 0 {
            continue;
        }
        if l == 1 {
            act(Action::Reverse { slot, advance: 0 })?;
        } else if c <= 1 {
            for j in (a..b).rev() {
                act(Action::Reverse {
                    slot,
                    advance: j - a,
                })?;
            }
        } else {
            let lh = binomial_split(l, c);
            act(Action::Store { slot, advance: lh })?;
            let m = depth;
            depth += 1;
            work.push(Work::Reverse {
                slot,
                a,
                b: a + lh,
                c,
            });
            work.push(Work::Release);
            work.push(Work::Reverse {
                slot: m,
                a: a + lh,
                b,
                c: c - 1,
            });
        }
    }
    Ok(())
}

/// Which forward steps a policy stores checkpoints before: every `k`-th (keep-all: k = 1; uniform), or
/// none (binomial and memory budget keep only the initial one and recompute).
pub(crate) fn keep_every(checkpointing: Checkpointing) -> Option<usize> {
    match checkpointing {
        Checkpointing::KeepAll => Some(1),
        Checkpointing::Uniform { every } => Some(every),
        Checkpointing::Binomial { .. } | Checkpointing::MemoryBudget { .. } => None,
    }
}

/// The forward pass of a discrete adjoint: G, the number of accepted steps, and the checkpoints the
/// policy keeps (every [`keep_every`]-th, and the initial one with the number of snapshots a binomial
/// reversal may hold).
pub(crate) struct ForwardRecord<C> {
    pub value: f64,
    pub steps: usize,
    pub stored: Vec<C>,
    pub initial: C,
    pub snapshots: usize,
    pub checkpoint_bytes: usize,
    /// The events of the forward pass, by step.
    pub events: crate::common::EventRecord,
}

/// Runs `stepper` to the end (the one forward pass, [`crate::common::forward_pass`]) keeping the
/// checkpoints `checkpointing` asks for.
pub(crate) fn forward_with_checkpoints<S: Stepper, O: crate::objective::Objective, M: OdeSystem>(
    stepper: &mut S,
    objective: &O,
    p: &[f64],
    start: (f64, &[f64]),
    events: Option<&mut EventLocator<'_, M>>,
    checkpointing: Checkpointing,
) -> Result<ForwardRecord<S::Checkpoint>, SensitivityError> {
    let initial = stepper.checkpoint();
    let checkpoint_bytes = S::checkpoint_bytes(&initial);
    let snapshots = checkpointing.snapshots(checkpoint_bytes)?;
    let keep_every = keep_every(checkpointing);
    let mut stored = Vec::new();
    let (value, steps, events) =
        crate::common::forward_pass(stepper, objective, p, start, events, |s, k, _| {
            if keep_every.is_some_and(|every| k.is_multiple_of(every)) {
                stored.push(s.checkpoint());
            }
        })?;
    Ok(ForwardRecord {
        value,
        steps,
        stored,
        initial,
        snapshots,
        checkpoint_bytes,
        events,
    })
}

/// A backward pass over the accepted steps of a forward solve: its replaying stepper and the adjoint of
/// one step.
pub(crate) trait Reversal {
    /// The stepper that replays the forward steps.
    type S: Stepper;
    /// The replaying stepper.
    fn replay(&mut self) -> &mut Self::S;
    /// Takes step `step` from the replay's current point (its start) and differentiates it backwards.
    fn adjoint_current(&mut self, step: usize) -> Result<(), SensitivityError>;
    /// Replays step `step` from the replay's current point (its start), and whatever happens between it
    /// and the next (an event's restart).
    fn advance_replay(&mut self, step: usize) -> Result<(), SensitivityError> {
        let _ = step;
        self.replay().advance()?;
        Ok(())
    }
}

/// What a reversal cost: checkpoints held at the peak, and steps advanced from checkpoints only to reach
/// later ones (Griewank's recomputation; each step's own replay is not counted).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReversalCost {
    pub peak_snapshots: usize,
    pub recomputed_steps: usize,
    pub peak_checkpoint_bytes: usize,
}

/// Runs the backward pass over `steps` forward steps from the checkpoints the forward pass kept
/// (`stored`: every [`keep_every`]-th, or only `initial` for the binomial policies with `snapshots`),
/// calling [`Reversal::adjoint_current`] once per step, last step first. The one sweep for every stepper.
pub(crate) fn reverse<R: Reversal>(
    r: &mut R,
    checkpointing: Checkpointing,
    record: &mut ForwardRecord<<R::S as Stepper>::Checkpoint>,
) -> Result<ReversalCost, SensitivityError> {
    let (steps, snapshots) = (record.steps, record.snapshots);
    let stored = &record.stored;
    let mut recomputed_steps = 0;
    // Room allocated for checkpoints beyond those held (a vector's spare capacity).
    let size = std::mem::size_of::<<R::S as Stepper>::Checkpoint>();
    let mut spare_bytes = (stored.capacity() - stored.len()) * size;
    let peak_snapshots = match checkpointing {
        Checkpointing::KeepAll | Checkpointing::Uniform { every: 1 } => {
            for (k, cp) in stored.iter().enumerate().rev() {
                r.replay().restore(cp)?;
                r.adjoint_current(k)?;
            }
            stored.len()
        }
        Checkpointing::Uniform { every } => {
            // The stored checkpoints plus one segment's (its first is a stored one).
            let mut segment =
                vec![<R::S as Stepper>::Checkpoint::default(); every.min(steps.max(1))];
            for (c, cp) in stored.iter().enumerate().rev() {
                let len = (steps - c * every).min(every);
                r.replay().restore(cp)?;
                segment[0].clone_from(cp);
                let first = c * every;
                for (j, slot) in segment.iter_mut().enumerate().take(len).skip(1) {
                    r.advance_replay(first + j - 1)?;
                    r.replay().checkpoint_into(slot);
                }
                recomputed_steps += len - 1;
                for (j, slot) in segment[..len].iter().enumerate().rev() {
                    r.replay().restore(slot)?;
                    r.adjoint_current(first + j)?;
                }
            }
            stored.len() + every.min(steps.max(1)) - 1
        }
        Checkpointing::Binomial { .. } | Checkpointing::MemoryBudget { .. } => {
            let mut st = Stack::new(std::mem::take(&mut record.initial), snapshots);
            // The step each slot's checkpoint stands before.
            let mut at = vec![0usize; 1];
            let mut advance_from = |r: &mut R, slot: &<R::S as Stepper>::Checkpoint, from, n| {
                r.replay().restore(slot)?;
                for k in from..from + n {
                    r.advance_replay(k)?;
                }
                recomputed_steps += n;
                Ok::<(), SensitivityError>(())
            };
            revolve(steps, snapshots.min(steps.max(1)), |action| match action {
                Action::Reverse { slot, advance } => {
                    advance_from(r, &st.items[slot], at[slot], advance)?;
                    r.adjoint_current(at[slot] + advance)
                }
                Action::Store { slot, advance } => {
                    advance_from(r, &st.items[slot], at[slot], advance)?;
                    let new = st.push(r.replay());
                    at.resize(new + 1, 0);
                    at[new] = at[slot] + advance;
                    Ok(())
                }
                Action::Release => {
                    st.pop();
                    Ok(())
                }
            })?;
            spare_bytes = (st.items.capacity() - st.peak) * size;
            st.peak
        }
    };
    Ok(ReversalCost {
        peak_snapshots,
        recomputed_steps,
        peak_checkpoint_bytes: peak_snapshots * record.checkpoint_bytes + spare_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::{binomial_recomputations, binomial_split};

    /// T(l, c) by brute force: the fewest advances to reverse l steps with c snapshots.
    fn brute_force(max_l: usize, max_c: usize) -> Vec<Vec<usize>> {
        let mut t = vec![vec![0usize; max_c + 1]; max_l + 1];
        for l in 2..=max_l {
            t[l][1] = l * (l - 1) / 2;
            for c in 2..=max_c {
                t[l][c] = (1..l)
                    .map(|lh| lh + t[l - lh][c - 1] + t[lh][c])
                    .min()
                    .unwrap();
            }
        }
        t
    }

    #[test]
    fn closed_form_and_split_are_optimal() {
        let t = brute_force(90, 7);
        for l in 2..=90 {
            for c in 1..=7 {
                assert_eq!(binomial_recomputations(l, c), t[l][c], "t({l}, {c})");
                if c >= 2 {
                    let lh = binomial_split(l, c);
                    assert_eq!(
                        lh + t[l - lh][c - 1] + t[lh][c],
                        t[l][c],
                        "split of ({l}, {c})"
                    );
                }
            }
        }
    }
}
