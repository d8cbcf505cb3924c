//! Hessian–vector products H·v of an objective with respect to (p, u0), by forward-over-adjoint.
//!
//! The discrete adjoint (the discrete adjoint ([`crate::SensitivityAlgorithm::DiscreteAdjoint`])) computes ∇G by a recursion over the accepted
//! steps (step sequence frozen). Differentiating that recursion along a direction v = (ṗ, u̇0) gives
//! H·v = d/dε ∇G(θ + εv): the forward pass carries the tangent u̇ (forward sensitivities along v); the
//! backward pass carries λ̇ and ṗ̄ beside λ and p̄. Per stage, with K̄ the stage adjoint and K̄̇ its
//! tangent,
//!
//! Ȳ̇_i = f_uᵀ K̄̇_i + ∂_u(K̄_iᵀ (f_u Ẏ_i + f_p ṗ)),   ṗ̄ += f_pᵀ K̄̇_i + ∂_p(K̄_iᵀ (f_u Ẏ_i + f_p ṗ)),
//!
//! both from one reverse-mode recording of the rhs in the nested scalar `Dual<Var>` (a forward-mode
//! dual whose parts are tape variables: the jvp along (Ẏ, ṗ) is recorded on the tape, and one sweep
//! seeded with K̄̇ on the values and K̄ on the jvp gives both terms). Objective terms get the same
//! treatment (their Hessians along the tangent). The result is the exact second derivative of the
//! computed solution, as the gradient is its exact first derivative (Griewank & Walther, *Evaluating
//! Derivatives*, §5.3 "second-order adjoints"). Every step is kept (keep-all checkpoints plus one tangent
//! per step).

use ndarray::{Array1, ArrayView1, ArrayViewMut1};
use num_dual::Dual;
use odesens_solver::{AcceptedStep, Checkpoint, Integrator, OdeProblem, OdeSystem, SolverOptions};

use crate::ad::derivatives::Derivatives;
use crate::ad::tape::{Recorder, Var};
use crate::common::{Gradient, SensitivityStats, check_objective, derivative_options};
use crate::error::{SensitivityError, check_finite};
use crate::objective::Objective;
use crate::step_diff::{Capability, require};

/// The nested scalar: a forward-mode dual of tape variables.
type DualVar = Dual<Var>;

/// A gradient and one Hessian–vector product.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HessianVectorProduct {
    /// G and ∇G (as the discrete adjoint ([`crate::SensitivityAlgorithm::DiscreteAdjoint`]) gives them).
    pub gradient: Gradient,
    /// (H·v) restricted to the parameters: Σ_j ∂²G/∂p ∂θ_j v_j.
    pub hv_params: Array1<f64>,
    /// (H·v) restricted to the initial values.
    pub hv_u0: Array1<f64>,
}

impl HessianVectorProduct {
    /// H·v as one vector: the parameter part, then the initial-value part.
    pub fn to_vec(&self) -> Vec<f64> {
        self.hv_params
            .iter()
            .chain(self.hv_u0.iter())
            .copied()
            .collect()
    }
}

/// Second-order reverse mode on the tape for one function of (u, p): records it once in `DualVar`
/// with the tangent (u̇, ṗ) and sweeps it for first- and second-order adjoints.
struct SecondOrder {
    rec: Recorder,
    vu: Vec<Var>,
    vp: Vec<Var>,
    du: Vec<DualVar>,
    dp: Vec<DualVar>,
    outputs: Vec<Var>,
    seeds: Vec<f64>,
}

impl SecondOrder {
    fn new(n: usize, np: usize) -> Self {
        Self {
            rec: Recorder::new(),
            vu: vec![Var::constant(0.0); n],
            vp: vec![Var::constant(0.0); np],
            du: vec![DualVar::from_re(Var::constant(0.0)); n],
            dp: vec![DualVar::from_re(Var::constant(0.0)); np],
            outputs: Vec::with_capacity(2 * n),
            seeds: Vec::with_capacity(2 * n),
        }
    }

    /// Starts a recording at (u, p) along (udot, pdot): the inputs as `DualVar`s.
    fn start(&mut self, u: &[f64], p: &[f64], udot: &[f64], pdot: &[f64]) {
        self.rec.start();
        self.rec.input(u, &mut self.vu);
        self.rec.input(p, &mut self.vp);
        for ((d, &v), &e) in self.du.iter_mut().zip(&self.vu).zip(udot) {
            *d = DualVar::new(v, Var::constant(e));
        }
        for ((d, &v), &e) in self.dp.iter_mut().zip(&self.vp).zip(pdot) {
            *d = DualVar::new(v, Var::constant(e));
        }
    }

    /// Sweeps Σ value_i·seed_value_i + Σ tangent_i·seed_tangent_i of the recorded outputs and adds the
    /// gradient's u part to `gu` and p part to `gp`.
    fn sweep_add(
        &mut self,
        outs: &[DualVar],
        seed_value: &[f64],
        seed_tangent: &[f64],
        gu: &mut [f64],
        gp: &mut [f64],
    ) {
        self.outputs.clear();
        self.seeds.clear();
        for (o, &s) in outs.iter().zip(seed_value) {
            self.outputs.push(o.re);
            self.seeds.push(s);
        }
        for (o, &s) in outs.iter().zip(seed_tangent) {
            self.outputs.push(o.eps);
            self.seeds.push(s);
        }
        let n = gu.len();
        let g = self.rec.sweep(&self.outputs, &self.seeds);
        for (a, b) in gu.iter_mut().zip(&g[..n]) {
            *a += b;
        }
        for (a, b) in gp.iter_mut().zip(&g[n..]) {
            *a += b;
        }
    }
}

/// Stage tangents of one step: Ẏ_i = u̇_n + h Σ_j a_ij K̇_j, K̇_i = f_u Ẏ_i + f_p ṗ for stages < `last`.
#[allow(clippy::too_many_arguments)] // the step, its tangents and their buffers
fn stage_tangents<M: OdeSystem>(
    der: &mut Derivatives<'_, M>,
    step: &AcceptedStep<'_>,
    p: &[f64],
    pdot: &[f64],
    udot: &[f64],
    last: usize,
    ydot: &mut [f64],
    kdot: &mut [f64],
) {
    let tab = step.tableau();
    let (n, h) = (udot.len(), step.h);
    for i in 0..last {
        let yi = &mut ydot[i * n..(i + 1) * n];
        yi.copy_from_slice(udot);
        for &(j, a) in tab.a[i] {
            for (y, k) in yi.iter_mut().zip(&kdot[j * n..(j + 1) * n]) {
                *y += h * a * k;
            }
        }
        let ti = step.stage_time(i);
        der.jvp(
            ti,
            step.stage_input(i),
            p,
            yi,
            pdot,
            &mut kdot[i * n..(i + 1) * n],
        );
    }
}

/// ∇G and H·v for v = (`v_params`, `v_u0`) by forward-over-adjoint (see the module docs). Costs about
/// one forward-sensitivity solve along v plus one adjoint with two sweeps of a nested-dual recording
/// per stage.
///
/// # Errors
/// [`SensitivityError::DimensionMismatch`] for a direction of the wrong size; solver and objective errors;
/// [`SensitivityError::NonFiniteDerivative`] if an adjoint or its tangent becomes NaN/∞.
pub fn hessian_vector_product<M: OdeSystem, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    v_params: &[f64],
    v_u0: &[f64],
) -> Result<HessianVectorProduct, SensitivityError> {
    check_objective(problem, objective)?;
    let (n, np) = (problem.n_states(), problem.model().n_params());
    if v_params.len() != np {
        return Err(SensitivityError::DimensionMismatch {
            what: "direction v (parameters)",
            expected: np,
            got: v_params.len(),
        });
    }
    if v_u0.len() != n {
        return Err(SensitivityError::DimensionMismatch {
            what: "direction v (initial values)",
            expected: n,
            got: v_u0.len(),
        });
    }
    require(options.method, Capability::HessianVector)?;
    crate::common::reject_events(
        problem,
        "Hessian–vector products of a model with events (not implemented yet)",
    )?;
    let opts = derivative_options(problem, options, &[objective.observation_times()])?;
    let p = problem.params().to_vec();
    let (t0, u0) = (problem.t0(), problem.u0().to_vec());
    let tab = opts.method.tableau();
    let s = tab.stages;
    let last = if tab.fsal { s - 1 } else { s };
    let model = problem.model();
    let mut der = Derivatives::new(model);
    let obs = objective.observation_times();
    let running = objective.has_running_cost();
    let mut so = SecondOrder::new(n, np);

    // Forward: checkpoints, tangents u̇_n at every step start, and G.
    let mut forward = Integrator::new(problem, &opts)?;
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut udots: Vec<f64> = v_u0.to_vec();
    let (mut ydot, mut kdot) = (vec![0.0; s * n], vec![0.0; s * n]);
    let (mut udot_n, mut unew) = (vec![0.0; n], vec![0.0; n]);
    let mut value = 0.0;
    let mut next_obs = 0;
    let observe = |k: usize, u: &[f64]| {
        objective.observation::<f64>(k, obs[k], ArrayView1::from(u), ArrayView1::from(&p[..]))
    };
    if obs.first() == Some(&t0) {
        value += observe(0, &u0);
        next_obs = 1;
    }
    while !forward.is_finished() {
        checkpoints.push(forward.checkpoint());
        let step = forward.step_accepted()?;
        udot_n.copy_from_slice(&udots[udots.len() - n..]);
        stage_tangents(
            &mut der, &step, &p, v_params, &udot_n, last, &mut ydot, &mut kdot,
        );
        unew.copy_from_slice(&udot_n);
        for (i, &b) in tab.b.iter().enumerate().take(last) {
            for (u, k) in unew.iter_mut().zip(&kdot[i * n..(i + 1) * n]) {
                *u += step.h * b * k;
            }
        }
        check_finite("tangent", step.t_next, &unew)?;
        udots.extend_from_slice(&unew);
        if running {
            let mut q = 0.0;
            for (i, &b) in tab.b.iter().enumerate() {
                if b != 0.0 {
                    q += b * objective.running_cost::<f64>(
                        step.stage_time(i),
                        ArrayView1::from(step.stage_input(i)),
                        ArrayView1::from(&p[..]),
                    );
                }
            }
            value += step.h * q;
        }
        if obs.get(next_obs) == Some(&step.t_next) {
            value += observe(next_obs, step.u_next);
            next_obs += 1;
        }
    }
    let forward_stats = forward.stats();
    let steps = checkpoints.len();

    // Objective terms at (u, u̇): first-order into (gu, gp), second-order into (gud, gpd), weight w.
    let objective_terms = |so: &mut SecondOrder,
                           term: Option<usize>,
                           t: f64,
                           u: &[f64],
                           udot: &[f64],
                           w: f64,
                           grads: [&mut [f64]; 4]|
     -> Result<(), SensitivityError> {
        let [gu, gp, gud, gpd] = grads;
        so.start(u, &p, udot, v_params);
        let g = match term {
            Some(k) => objective.observation::<DualVar>(
                k,
                t,
                ArrayView1::from(&so.du[..]),
                ArrayView1::from(&so.dp[..]),
            ),
            None => objective.running_cost::<DualVar>(
                t,
                ArrayView1::from(&so.du[..]),
                ArrayView1::from(&so.dp[..]),
            ),
        };
        so.sweep_add(&[g], &[w], &[0.0], gu, gp);
        so.sweep_add(&[g], &[0.0], &[w], gud, gpd);
        check_finite("objective gradient", t, gu)?;
        check_finite("objective Hessian-vector product", t, gud)
    };

    // Backward.
    let mut replay = Integrator::new(problem, &opts)?;
    let (mut lambda, mut lambda_dot) = (vec![0.0; n], vec![0.0; n]);
    let (mut p_bar, mut p_bar_dot) = (vec![0.0; np], vec![0.0; np]);
    let (mut acc, mut acc_dot) = (vec![0.0; s * n], vec![0.0; s * n]);
    let (mut y_bar, mut y_bar_dot) = (vec![0.0; n], vec![0.0; n]);
    let (mut sum_y, mut sum_y_dot) = (vec![0.0; n], vec![0.0; n]);
    let (mut kbar, mut kbar_dot) = (vec![0.0; n], vec![0.0; n]);
    let mut df = vec![DualVar::from_re(Var::constant(0.0)); n];
    let zeros = vec![0.0; n];
    let mut obs_left = obs.len();
    for k in (0..steps).rev() {
        replay.restore(&checkpoints[k])?;
        let step = replay.step_accepted()?;
        let udot_n = &udots[k * n..(k + 1) * n];
        let udot_next = &udots[(k + 1) * n..(k + 2) * n];
        stage_tangents(
            &mut der, &step, &p, v_params, udot_n, last, &mut ydot, &mut kdot,
        );
        if obs_left > 0 && obs[obs_left - 1] == step.t_next {
            objective_terms(
                &mut so,
                Some(obs_left - 1),
                step.t_next,
                step.u_next,
                udot_next,
                1.0,
                [&mut lambda, &mut p_bar, &mut lambda_dot, &mut p_bar_dot],
            )?;
            obs_left -= 1;
        }
        let h = step.h;
        acc.iter_mut().for_each(|x| *x = 0.0);
        acc_dot.iter_mut().for_each(|x| *x = 0.0);
        sum_y.iter_mut().for_each(|x| *x = 0.0);
        sum_y_dot.iter_mut().for_each(|x| *x = 0.0);
        for i in (0..last).rev() {
            let hb = h * tab.b[i];
            for m in 0..n {
                kbar[m] = acc[i * n + m] + hb * lambda[m];
                kbar_dot[m] = acc_dot[i * n + m] + hb * lambda_dot[m];
            }
            y_bar.iter_mut().for_each(|x| *x = 0.0);
            y_bar_dot.iter_mut().for_each(|x| *x = 0.0);
            let ti = step.stage_time(i);
            let yi = step.stage_input(i);
            let ydi = &ydot[i * n..(i + 1) * n];
            if kbar.iter().chain(&kbar_dot).any(|&x| x != 0.0) {
                so.start(yi, &p, ydi, v_params);
                model.rhs(
                    DualVar::from_re(Var::constant(ti)),
                    ArrayView1::from(&so.du[..]),
                    ArrayView1::from(&so.dp[..]),
                    ArrayViewMut1::from(&mut df[..]),
                );
                der.counts.tape_sweeps += 2;
                so.sweep_add(&df, &kbar, &zeros, &mut y_bar, &mut p_bar);
                so.sweep_add(&df, &kbar_dot, &kbar, &mut y_bar_dot, &mut p_bar_dot);
            }
            if running && hb != 0.0 {
                objective_terms(
                    &mut so,
                    None,
                    ti,
                    yi,
                    ydi,
                    hb,
                    [&mut y_bar, &mut p_bar, &mut y_bar_dot, &mut p_bar_dot],
                )?;
            }
            for &(j, a) in tab.a[i] {
                let ha = h * a;
                for m in 0..n {
                    acc[j * n + m] += ha * y_bar[m];
                    acc_dot[j * n + m] += ha * y_bar_dot[m];
                }
            }
            for m in 0..n {
                sum_y[m] += y_bar[m];
                sum_y_dot[m] += y_bar_dot[m];
            }
        }
        for m in 0..n {
            lambda[m] += sum_y[m];
            lambda_dot[m] += sum_y_dot[m];
        }
        check_finite("adjoint λ", step.t, &lambda)?;
        check_finite("adjoint tangent λ̇", step.t, &lambda_dot)?;
    }
    if obs_left == 1 && obs[0] == t0 {
        objective_terms(
            &mut so,
            Some(0),
            t0,
            &u0,
            v_u0,
            1.0,
            [&mut lambda, &mut p_bar, &mut lambda_dot, &mut p_bar_dot],
        )?;
    }
    let stats = SensitivityStats {
        forward: forward_stats,
        recomputation: replay.stats(),
        peak_snapshots: steps,
        peak_checkpoint_bytes: checkpoints.iter().map(Checkpoint::bytes).sum(),
        derivatives: der.counts,
        ..Default::default()
    };
    Ok(HessianVectorProduct {
        gradient: Gradient {
            value,
            wrt_params: Array1::from(p_bar),
            wrt_u0: Array1::from(lambda),
            stats,
            adjoint: None,
            backward: None,
            u0_reconstructed: None,
        },
        hv_params: Array1::from(p_bar_dot),
        hv_u0: Array1::from(lambda_dot),
    })
}
