//! Which mode? Predicting whether forward sensitivities or the adjoint deliver a gradient sooner, from
//! measured costs of the model's kernels.
//!
//! For D directions (parameters and initial values to differentiate along), with S the accepted steps
//! of the solve, s' the stages differentiated per step (s, or s − 1 with FSAL) and T threads:
//!
//! - forward ([`crate::forward_directional_derivatives`]): the directions are split into B blocks of
//!   b ≤ CHUNK (one per thread while that keeps b ≤ CHUNK); each block re-solves and adds one tangent
//!   pass per stage and the stage combinations of its tangents (q multiply–adds per step and state
//!   component and direction, q = nonzeros of A and b), so wall time
//!   ≈ t_fork + ⌈B/T⌉ · (t_solve + S·(s'·t_pass(b) + q·n·b·t_axpy)) · T/E for B > 1 (t_fork: one
//!   fork–join on the thread pool; E the
//!   measured speed-up of T concurrent solves, T/E = 1 on idle dedicated cores), t_pass(1) = one jvp,
//!   t_pass(b > 1) = one CHUNK-wide block pass;
//! - adjoint ([`crate::SensitivityAlgorithm::DiscreteAdjoint`], keep-all checkpoints): one solve storing checkpoints, one
//!   replay of every step, one vjp per stage and its stage combinations:
//!   ≈ 2·t_solve + S·(s'·t_vjp + q·n·t_axpy), independent of D (with the reverse-mode vjp, see
//!   [`crate::ad::tape`]).
//!
//! The forward cost grows in steps of ⌈B/T⌉, so the crossover D* is where the forward estimate first
//! exceeds the adjoint one.

use std::hint::black_box;
use std::time::Instant;

use ndarray::Array2;
use odesens_solver::{OdeProblem, OdeSystem, SolverOptions, solve};
use rayon::prelude::*;
use serde::Serialize;

use crate::ad::derivatives::{CHUNK, Derivatives};
use crate::common::{check_objective, derivative_options};
use crate::error::SensitivityError;
use crate::objective::Objective;
use crate::step_diff::{Capability, require};

/// Measured costs of one solve and of the derivative kernels, the inputs of the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostModel {
    /// Wall time of one solve with the derivative computations' settings (median of ≥ 7 runs), s.
    pub solve_s: f64,
    /// Accepted steps of that solve.
    pub accepted_steps: usize,
    /// Stages differentiated per step (stages, minus one with FSAL).
    pub stages: usize,
    /// State components n.
    pub n_states: usize,
    /// One rhs evaluation in f64, s.
    pub rhs_s: f64,
    /// One Jacobian–vector product (one direction), s.
    pub jvp_s: f64,
    /// One pass for a block of [`CHUNK`] directions, s.
    pub jvp_block_s: f64,
    /// One vector–Jacobian product by the route the adjoint takes, s.
    pub vjp_s: f64,
    /// Threads available to forward blocks (rayon).
    pub threads: usize,
    /// Multiply–adds per step and per state component that combine stages (nonzeros of the tableau's A
    /// and b): the tangents' and the adjoint's own linear algebra.
    pub stage_axpys: usize,
    /// One multiply–add y += a·x on a vector, per element, s.
    pub axpy_s: f64,
    /// One fork–join of empty jobs on the thread pool (waking its threads), s.
    pub fork_join_s: f64,
    /// Measured speed-up of running `threads` solves at once over running them one after another
    /// (≤ `threads`; below it where cores are shared or memory-bound).
    pub parallel_speedup: f64,
}

/// The faster mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Forward sensitivities: one tangent per direction.
    Forward,
    /// The discrete adjoint: one backward pass for all directions.
    Adjoint,
}

/// Predicted costs for a number of directions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModePrediction {
    /// Number of directions D.
    pub directions: usize,
    /// Predicted wall time of the forward gradient, s.
    pub forward_s: f64,
    /// Predicted wall time of the adjoint gradient, s.
    pub adjoint_s: f64,
    /// The faster one.
    pub recommended: Mode,
}

/// Blocks of forward directions: (directions per block, number of blocks) for `nd` directions on
/// `threads` threads — balanced blocks, one per thread where possible, at most [`CHUNK`] each.
pub(crate) fn forward_blocks(nd: usize, threads: usize) -> (usize, usize) {
    let block = nd.div_ceil(threads.max(1)).clamp(1, CHUNK);
    (block, nd.div_ceil(block).max(1))
}

/// Median seconds per call of `f` (which makes `calls` calls), from 7 batches of at least 2 ms.
fn time_per_call(calls: usize, mut f: impl FnMut()) -> f64 {
    let mut reps = 1;
    loop {
        let start = Instant::now();
        for _ in 0..reps {
            f();
        }
        if start.elapsed().as_secs_f64() >= 2e-3 || reps >= 1 << 20 {
            break;
        }
        reps *= 2;
    }
    let mut batches: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed().as_secs_f64() / (reps * calls) as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[3]
}

/// Median seconds of `f` over at least 7 runs and 0.1 s.
fn median_seconds(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 7 || (start.elapsed().as_secs_f64() < 0.1 && times.len() < 10_000) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

impl CostModel {
    /// Times one solve of `problem` (with `objective`'s observation times as tstops) and the model's rhs,
    /// jvp, CHUNK-wide jvp block and vjp at up to 32 states along it (medians), and the speed-up of
    /// concurrent solves. Takes about 0.3 s, or 20 solves if longer.
    ///
    /// # Errors
    /// Solver and objective errors.
    pub fn measure<M: OdeSystem, O: Objective>(
        problem: &OdeProblem<M>,
        options: &SolverOptions,
        objective: &O,
    ) -> Result<Self, SensitivityError> {
        check_objective(problem, objective)?;
        require(options.method, Capability::CostModel)?;
        crate::common::reject_events(
            problem,
            "the cost model of a model with events (not implemented yet)",
        )?;
        let opts = derivative_options(problem, options, &[objective.observation_times()])?;
        // States to evaluate the kernels at: every step's state (saving does not change the steps; this
        // solve also reports any solver error before the timings).
        let every = solve(problem, &opts.clone().save_every_step())?;
        let solve_s = median_seconds(|| {
            let _ = black_box(solve(problem, &opts));
        });
        let rows = every.states.nrows();
        let m = 32.min(rows);
        let picks: Vec<usize> = (0..m).map(|k| k * (rows - 1) / (m - 1).max(1)).collect();
        let states: Vec<(f64, Vec<f64>)> = picks
            .iter()
            .map(|&k| (every.times[k], every.states.row(k).to_vec()))
            .collect();
        let (n, np) = (problem.n_states(), problem.model().n_params());
        let p = problem.params().to_vec();
        let model = problem.model();
        let mut out = vec![0.0; n];
        let rhs_s = time_per_call(states.len(), || {
            for (t, u) in &states {
                model.rhs(
                    *t,
                    ndarray::ArrayView1::from(&u[..]),
                    ndarray::ArrayView1::from(&p[..]),
                    ndarray::ArrayViewMut1::from(&mut out[..]),
                );
                black_box(&out);
            }
        });
        let mut der = Derivatives::new(model);
        let (v, w) = (vec![0.5; n], vec![0.5; np]);
        let jvp_s = time_per_call(states.len(), || {
            for (t, u) in &states {
                der.jvp(*t, u, &p, &v, &w, &mut out);
                black_box(&out);
            }
        });
        let (vb, wb) = (
            Array2::from_elem((n, CHUNK), 0.5),
            Array2::from_elem((np, CHUNK), 0.5),
        );
        let (vb, wb) = (vb.as_slice().expect("std"), wb.as_slice().expect("std"));
        let mut outb = vec![0.0; n * CHUNK];
        let jvp_block_s = time_per_call(states.len(), || {
            for (t, u) in &states {
                der.jvp_block(*t, u, &p, vb, wb, &mut outb, CHUNK);
                black_box(&outb);
            }
        });
        let lambda = vec![0.5; n];
        let (mut ub, mut pb) = (vec![0.0; n], vec![0.0; np]);
        let vjp_s = time_per_call(states.len(), || {
            for (t, u) in &states {
                der.vjp_add(*t, u, &p, &lambda, &mut ub, &mut pb);
                black_box(&ub);
            }
        });
        let threads = rayon::current_num_threads().max(1);
        let parallel_speedup = if threads > 1 {
            // Jobs of ≥ 2 ms each, so that waking the pool's threads does not dominate.
            let reps = ((2e-3 / solve_s).ceil() as usize).max(1);
            let together = median_seconds(|| {
                (0..threads).into_par_iter().for_each(|_| {
                    for _ in 0..reps {
                        let _ = black_box(solve(problem, &opts));
                    }
                });
            });
            (threads as f64 * reps as f64 * solve_s / together).clamp(1.0, threads as f64)
        } else {
            1.0
        };
        let fork_join_s = median_seconds(|| {
            (0..threads).into_par_iter().for_each(|k| {
                black_box(k);
            });
        });
        let tab = options.method.tableau();
        let stage_axpys = tab.a.iter().map(|row| row.len()).sum::<usize>()
            + tab.b.iter().filter(|&&b| b != 0.0).count();
        let (xs, mut ys) = (vec![0.5; 256], vec![0.0; 256]);
        let axpy_s = time_per_call(xs.len(), || {
            let a = black_box(1e-3);
            for (y, x) in ys.iter_mut().zip(&xs) {
                *y += a * x;
            }
            black_box(&ys);
        });
        Ok(Self {
            solve_s,
            accepted_steps: every.stats.accepted_steps,
            n_states: n,
            stages: if tab.fsal { tab.stages - 1 } else { tab.stages },
            rhs_s,
            jvp_s,
            jvp_block_s,
            vjp_s,
            threads,
            stage_axpys,
            axpy_s,
            fork_join_s,
            parallel_speedup,
        })
    }

    /// Predicted wall time of a forward gradient along `directions` directions, s.
    pub fn forward_s(&self, directions: usize) -> f64 {
        let (block, blocks) = forward_blocks(directions, self.threads);
        let pass = if block == 1 {
            self.jvp_s
        } else {
            self.jvp_block_s * block.div_ceil(CHUNK) as f64
        };
        let combine = (self.stage_axpys * self.n_states * block) as f64 * self.axpy_s;
        let per_block =
            self.solve_s + self.accepted_steps as f64 * (self.stages as f64 * pass + combine);
        let sharing = if blocks > 1 {
            self.threads as f64 / self.parallel_speedup.clamp(1.0, self.threads as f64)
        } else {
            1.0
        };
        self.fork_join_s + blocks.div_ceil(self.threads) as f64 * per_block * sharing
    }

    /// Predicted wall time of an adjoint gradient (keep-all checkpoints), s.
    pub fn adjoint_s(&self) -> f64 {
        let combine = (self.stage_axpys * self.n_states) as f64 * self.axpy_s;
        2.0 * self.solve_s
            + self.accepted_steps as f64 * (self.stages as f64 * self.vjp_s + combine)
    }

    /// Both predictions for `directions` directions and the faster mode.
    pub fn predict(&self, directions: usize) -> ModePrediction {
        let (forward_s, adjoint_s) = (self.forward_s(directions), self.adjoint_s());
        ModePrediction {
            directions,
            forward_s,
            adjoint_s,
            recommended: if forward_s <= adjoint_s {
                Mode::Forward
            } else {
                Mode::Adjoint
            },
        }
    }

    /// The smallest number of directions (≤ 1,000,000) for which the adjoint is predicted faster, or
    /// `None`.
    pub fn crossover(&self) -> Option<usize> {
        let adjoint = self.adjoint_s();
        // forward_s is non-decreasing in D: bisect.
        let (mut lo, mut hi) = (1usize, 1_000_000usize);
        if self.forward_s(hi) <= adjoint {
            return None;
        }
        if self.forward_s(lo) > adjoint {
            return Some(1);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.forward_s(mid) > adjoint {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::{CostModel, Mode, forward_blocks};

    fn model() -> CostModel {
        CostModel {
            solve_s: 1e-3,
            accepted_steps: 100,
            stages: 6,
            rhs_s: 1e-6,
            jvp_s: 1.5e-6,
            jvp_block_s: 4e-6,
            vjp_s: 8.1e-6,
            threads: 2,
            n_states: 4,
            stage_axpys: 0,
            axpy_s: 0.0,
            fork_join_s: 0.0,
            parallel_speedup: 2.0,
        }
    }

    #[test]
    fn blocks_follow_the_forward_layout() {
        assert_eq!(forward_blocks(1, 2), (1, 1));
        assert_eq!(forward_blocks(5, 2), (3, 2));
        assert_eq!(forward_blocks(9, 2), (5, 2));
        assert_eq!(forward_blocks(20, 2), (8, 3));
        assert_eq!(forward_blocks(20, 1), (8, 3));
    }

    #[test]
    fn prediction_and_crossover() {
        let m = model();
        // adjoint: 2 ms + 600 · 8.1 µs = 6.86 ms.
        assert!((m.adjoint_s() - 6.86e-3).abs() < 1e-12);
        // one direction: 1 ms + 600 · 1.5 µs = 1.9 ms.
        assert!((m.forward_s(1) - 1.9e-3).abs() < 1e-12);
        assert_eq!(m.predict(1).recommended, Mode::Forward);
        // 16 directions: 2 blocks of 8 in parallel, 1 ms + 600 · 4 µs = 3.4 ms.
        assert!((m.forward_s(16) - 3.4e-3).abs() < 1e-12);
        // 17..32 directions: 3 or 4 blocks on 2 threads = 6.8 ms, still below the adjoint; 33: 5 blocks.
        assert!((m.forward_s(32) - 6.8e-3).abs() < 1e-12);
        assert_eq!(m.crossover(), Some(33));
        assert_eq!(m.predict(40).recommended, Mode::Adjoint);
        // Two threads that only run 1.6× faster than one: two blocks cost 2/1.6 of one.
        let shared = CostModel {
            parallel_speedup: 1.6,
            ..m
        };
        assert!((shared.forward_s(16) - 3.4e-3 * 1.25).abs() < 1e-12);
        assert!((shared.forward_s(1) - 1.9e-3).abs() < 1e-12);
        // Stage combinations: 10 multiply–adds per step, component and direction at 1 ns.
        let combining = CostModel {
            stage_axpys: 10,
            axpy_s: 1e-9,
            ..m
        };
        // 8 directions = 2 blocks of 4: + 100 · 10 · 4 · 4 ns; the adjoint + 100 · 10 · 4 ns.
        assert!((combining.forward_s(8) - m.forward_s(8) - 16e-6).abs() < 1e-12);
        assert!((combining.adjoint_s() - m.adjoint_s() - 4e-6).abs() < 1e-12);
        let cheap_adjoint = CostModel {
            vjp_s: 0.0,
            solve_s: 1e-3,
            ..m
        };
        // 1 or 2 directions (one each per thread) cost 1.9 ms < 2 ms; 3 need 8-wide passes.
        assert_eq!(cheap_adjoint.crossover(), Some(3));
    }
}
