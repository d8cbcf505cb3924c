//! Plug in your own model: an SIR epidemic written from scratch, solved, its gradient by the adjoint,
//! checked against forward sensitivities and finite differences, and the same model with a
//! hand-written vector–Jacobian product.
//!
//! Run: `cargo run --release --example custom_model`.

mod common;

use ndarray::{Array2, ArrayView1, ArrayViewMut1};
use odesens::prelude::*;
use odesens::sensitivity::{
    Checkpointing, CostModel, LeastSquares, SensitivityAlgorithm, check_gradient, gradient,
};

// ---- The model: ~20 lines. -------------------------------------------------------------------------

/// SIR epidemic: S' = −β S I, I' = β S I − γ I, R' = γ I (fractions of the population); p = [β, γ].
#[derive(Clone)]
struct Sir;

impl OdeSystem for Sir {
    fn n_states(&self) -> usize {
        3
    }
    fn n_params(&self) -> usize {
        2
    }
    /// Written once, generic over the scalar: f64 to solve, dual numbers or tape variables to
    /// differentiate.
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let infection = p[0] * u[0] * u[1];
        let recovery = p[1] * u[1];
        du[0] = -infection;
        du[1] = infection - recovery;
        du[2] = recovery;
    }
}

// ---- Optional: the same model with a hand-written vjp λᵀ[∂f/∂u ∂f/∂p]. --------------------------

#[derive(Clone)]
struct SirWithVjp;

impl OdeSystem for SirWithVjp {
    fn n_states(&self) -> usize {
        3
    }
    fn n_params(&self) -> usize {
        2
    }
    fn rhs<S: Scalar>(&self, t: S, u: ArrayView1<S>, p: ArrayView1<S>, du: ArrayViewMut1<S>) {
        Sir.rhs(t, u, p, du)
    }
    fn vjp(
        &self,
        _t: f64,
        u: &[f64],
        p: &[f64],
        l: &[f64],
        u_bar: &mut [f64],
        p_bar: &mut [f64],
    ) -> bool {
        // f = [−βSI, βSI − γI, γI]: with a = λ2 − λ1 (infection) and b = λ3 − λ2 (recovery),
        // λᵀf = a βSI + b γI.
        let (a, b) = (l[1] - l[0], l[2] - l[1]);
        u_bar[0] = a * p[0] * u[1];
        u_bar[1] = a * p[0] * u[0] + b * p[1];
        u_bar[2] = 0.0;
        p_bar[0] = a * u[0] * u[1];
        p_bar[1] = b * u[1];
        true
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Synthetic observations of I(t) every 5 days from β = 0.5, γ = 0.1 (R0 = 5).
    let truth = OdeProblem::new(Sir, vec![0.99, 0.01, 0.0], vec![0.5, 0.1], (0.0, 100.0))?;
    let days: Vec<f64> = (1..=20).map(|k| 5.0 * f64::from(k)).collect();
    let options = SolverOptions::default().method(Method::Vern7).tol(1e-10);
    let observed = solve(&truth, &options.clone().save_at(days.clone()))?;
    println!(
        "SIR, β = 0.5, γ = 0.1: peak of I in the data {:.4}",
        observed.states.column(1).fold(0.0f64, |m, &x| m.max(x))
    );

    // Fit residual of a guess (β, γ) = (0.45, 0.12) against the data: G = ½ Σ_k ‖u(t_k) − d_k‖².
    let guess = truth.with_params(vec![0.45, 0.12])?;
    let data = Array2::from_shape_fn((days.len(), 3), |(k, m)| observed.states[[k, m]]);
    let objective = LeastSquares::new(days.clone(), data)?;

    let adjoint = gradient(
        &guess,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )?;
    let forward = gradient(&guess, &options, &objective, &SensitivityAlgorithm::Forward)?;
    let fd = check_gradient(&guess, &options, &objective, &adjoint, None)?;
    println!("\nG = {:.10e} at (β, γ) = (0.45, 0.12)", adjoint.value);
    println!(
        "{:<8} {:>20} {:>20} {:>20}",
        "", "adjoint", "forward", "central difference"
    );
    for (k, name) in ["dG/dβ", "dG/dγ"].iter().enumerate() {
        println!(
            "{name:<8} {:>20.12e} {:>20.12e} {:>20.12e}",
            adjoint.wrt_params[k], forward.wrt_params[k], fd.fd_params[k]
        );
    }
    for (k, name) in ["dG/dS0", "dG/dI0", "dG/dR0"].iter().enumerate() {
        println!(
            "{name:<8} {:>20.12e} {:>20.12e} {:>20.12e}",
            adjoint.wrt_u0[k], forward.wrt_u0[k], fd.fd_u0[k]
        );
    }
    println!(
        "largest relative difference to finite differences: {:.1e}",
        fd.max_rel_error
    );

    // The hand-written vjp gives the same gradient; whether it pays off is a matter of cost.
    let hand = guess.with_model(SirWithVjp)?;
    let hand_grad = gradient(
        &hand,
        &options,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )?;
    let diff = hand_grad
        .wrt_params
        .iter()
        .zip(adjoint.wrt_params.iter())
        .map(|(a, b)| (a - b).abs() / b.abs())
        .fold(0.0, f64::max);
    println!("\nhand-written vjp: gradient within {diff:.1e} of the AD one");
    let ad_cost = CostModel::measure(&guess, &options, &objective)?;
    let hand_cost = CostModel::measure(&hand, &options, &objective)?;
    let time = |f: &mut dyn FnMut()| common::median_time_for(f, 11, 0.3);
    let solve_s = time(&mut || drop(solve(&guess, &options)));
    let ad_s = time(&mut || {
        drop(gradient(
            &guess,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        ))
    });
    let hand_s = time(&mut || {
        drop(gradient(
            &hand,
            &options,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        ))
    });
    println!(
        "one vjp: AD {:.0} ns = {:.1} rhs, hand-written {:.0} ns = {:.1} rhs",
        ad_cost.vjp_s * 1e9,
        ad_cost.vjp_s / ad_cost.rhs_s,
        hand_cost.vjp_s * 1e9,
        hand_cost.vjp_s / hand_cost.rhs_s,
    );
    println!(
        "adjoint gradient (median): AD {:.3} ms = {:.1} solves, hand-written vjp {:.3} ms = {:.1} solves \
         (predicted {:.3} / {:.3} ms)",
        ad_s * 1e3,
        ad_s / solve_s,
        hand_s * 1e3,
        hand_s / solve_s,
        ad_cost.adjoint_s() * 1e3,
        hand_cost.adjoint_s() * 1e3
    );
    let prediction = ad_cost.predict(5);
    println!(
        "which mode for these 5 directions? {:?} (forward {:.2} ms, adjoint {:.2} ms predicted)",
        prediction.recommended,
        prediction.forward_s * 1e3,
        prediction.adjoint_s * 1e3
    );
    Ok(())
}
