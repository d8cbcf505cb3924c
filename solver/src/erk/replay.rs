//! Replays of explicit steps from a checkpoint, bit for bit (what adjoints need to revisit a step).

use ndarray::ArrayView1;

use super::kernels::{eval, main_stages, sparse, stage_input};
use crate::error::SolverError;
use crate::system::OdeSystem;
use crate::tableau::{ExplicitTableau, Method};

/// Recomputes steps of an explicit Runge–Kutta method exactly as [`super::Integrator`] computed them: from a
/// checkpoint (t_n, u_n) and the step size h_n of the forward solve, the same stage inputs Y_i, stages
/// K_i and u_{n+1}, bit for bit. This is what adjoints need to revisit a step.
#[derive(Debug, Clone)]
pub struct StepReplay {
    tab: &'static ExplicitTableau,
    n: usize,
    b_row: Vec<(usize, f64)>,
    k: Vec<f64>,
    ys: Vec<f64>,
    u: Vec<f64>,
    u_new: Vec<f64>,
}

impl StepReplay {
    /// Buffers for a system of `n` states.
    ///
    /// # Errors
    /// [`SolverError::InvalidOption`] for an implicit method (replays are for explicit steps).
    pub fn new(method: Method, n: usize) -> Result<Self, SolverError> {
        let tab = method
            .explicit_tableau()
            .ok_or(SolverError::UnsupportedMethod {
                method,
                operation: "explicit step replays (StepReplay); implicit steps replay through \
                            ImplicitIntegrator's checkpoints",
            })?;
        Ok(Self {
            tab,
            n,
            b_row: sparse(tab.b),
            k: vec![0.0; tab.stages * n],
            ys: vec![0.0; tab.stages * n],
            u: vec![0.0; n],
            u_new: vec![0.0; n],
        })
    }

    /// The method's tableau.
    pub fn tableau(&self) -> &'static ExplicitTableau {
        self.tab
    }

    /// Replays the step from (t, u) of signed size h ending at `t_new` (pass the forward solve's t_{n+1},
    /// which for a step onto a tstop is the tstop itself). Costs s rhs evaluations (K_1 included).
    pub fn replay<M: OdeSystem>(
        &mut self,
        model: &M,
        p: ArrayView1<f64>,
        t: f64,
        h: f64,
        t_new: f64,
        u: &[f64],
    ) {
        let n = self.n;
        self.u.copy_from_slice(&u[..n]);
        eval(model, p, t, &self.u, &mut self.k[..n]);
        main_stages(
            self.tab,
            &self.b_row,
            model,
            p,
            (t, h, t_new),
            &self.u,
            &mut self.u_new,
            &mut self.k,
            &mut self.ys,
        );
    }

    /// The stage input Y_i of the replayed step (Y_1 = u_n; for FSAL methods Y_s = u_{n+1}).
    pub fn stage_input(&self, i: usize) -> &[f64] {
        stage_input(self.tab, self.n, i, &self.u, &self.u_new, &self.ys)
    }

    /// The stage K_i of the replayed step.
    pub fn stage(&self, i: usize) -> &[f64] {
        &self.k[i * self.n..(i + 1) * self.n]
    }

    /// u_{n+1} of the replayed step.
    pub fn u_next(&self) -> &[f64] {
        &self.u_new
    }
}
