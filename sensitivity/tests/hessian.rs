//! Hessian–vector products by forward-over-adjoint: against finite differences of gradients and against
//! the full Hessian by nested forward mode.

#![allow(clippy::needless_range_loop)] // (i, j) index loops mirror the Hessian's entries

use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::{DualNum, HyperDual64};
use odesens_models::compare::rel_diff_max_norm;
use odesens_models::{DoublePendulum, LotkaVolterra};
use odesens_sensitivity::{
    Checkpointing, IntegralOfSquare, LeastSquares, Objective, SensitivityAlgorithm, SquaredNormAt,
    gradient, hessian_vector_product,
};
use odesens_solver::*;

/// (∇G(θ + δv) − ∇G(θ − δv)) / 2δ with θ = (p, u0), by the discrete adjoint.
fn fd_of_gradient<M: OdeSystem + Clone, O: Objective>(
    problem: &OdeProblem<M>,
    options: &SolverOptions,
    objective: &O,
    v: &[f64],
    delta: f64,
) -> Vec<f64> {
    let np = problem.model().n_params();
    let grad = |sign: f64| -> Vec<f64> {
        let p: Vec<f64> = problem
            .params()
            .iter()
            .zip(&v[..np])
            .map(|(a, b)| a + sign * delta * b)
            .collect();
        let u0: Vec<f64> = problem
            .u0()
            .iter()
            .zip(&v[np..])
            .map(|(a, b)| a + sign * delta * b)
            .collect();
        let pr = problem.with_params(p).unwrap().with_u0(u0).unwrap();
        let g = gradient(
            &pr,
            options,
            objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        g.to_vec()
    };
    let (a, b) = (grad(1.0), grad(-1.0));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y) / (2.0 * delta))
        .collect()
}

#[test]
fn hessian_vector_products_match_finite_differences_of_gradients() {
    let problem = DoublePendulum::standard_problem(2.0).unwrap();
    let objective = SquaredNormAt::new(2.0);
    let v = [0.3, -0.2, 0.1, 0.05, 0.4, 1.0, -0.5, 0.25, 0.7];
    // Fixed steps: the computed solution is a smooth function of θ, so differences of gradients converge
    // to H·v like δ².
    let fixed = SolverOptions::default().fixed_step(0.002);
    let hv = hessian_vector_product(&problem, &fixed, &objective, &v[..5], &v[5..]).unwrap();
    let ours: Vec<f64> = hv.to_vec();
    let plain = gradient(
        &problem,
        &fixed,
        &objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let g: Vec<f64> = hv.gradient.to_vec();
    let gp: Vec<f64> = plain.to_vec();
    assert!(
        rel_diff_max_norm(&g, &gp) < 1e-12,
        "the gradient part is the adjoint gradient"
    );
    assert_eq!(hv.gradient.value.to_bits(), plain.value.to_bits());
    let fd = fd_of_gradient(&problem, &fixed, &objective, &v, 2e-5);
    let err = rel_diff_max_norm(&ours, &fd);
    println!(
        "pendulum, fixed steps: H·v vs central differences of gradients (δ = 2e-5): {err:.1e}"
    );
    assert!(err < 1e-6, "{err:e}");
    // Adaptive steps at a tight tolerance: the differences carry the step selection's noise.
    let tight = SolverOptions::default().method(Method::Vern9).tol(1e-12);
    let hv = hessian_vector_product(&problem, &tight, &objective, &v[..5], &v[5..]).unwrap();
    let ours: Vec<f64> = hv.to_vec();
    let fd = fd_of_gradient(&problem, &tight, &objective, &v, 2e-5);
    let err = rel_diff_max_norm(&ours, &fd);
    println!("pendulum, Vern9 1e-12: H·v vs central differences of gradients: {err:.1e}");
    assert!(err < 1e-6, "{err:e}");
    // With observations at several times and a running cost (Lotka–Volterra).
    let lv = OdeProblem::new(
        LotkaVolterra,
        vec![1.0, 1.0],
        LotkaVolterra::classic_params(),
        (0.0, 3.0),
    )
    .unwrap();
    let data = ndarray::Array2::from_shape_vec((3, 2), vec![1.0, 2.0, 3.0, 0.5, 0.2, 1.0]).unwrap();
    let ls = LeastSquares::new(vec![0.0, 1.25, 3.0], data).unwrap();
    let w = [0.2, -0.1, 0.3, 0.5, -1.0, 0.7];
    for (name, err) in [
        ("least squares", {
            let hv = hessian_vector_product(&lv, &tight, &ls, &w[..4], &w[4..]).unwrap();
            let ours: Vec<f64> = hv.to_vec();
            rel_diff_max_norm(&ours, &fd_of_gradient(&lv, &tight, &ls, &w, 1e-4))
        }),
        ("∫y²", {
            let obj = IntegralOfSquare::new(1);
            let hv = hessian_vector_product(&lv, &tight, &obj, &w[..4], &w[4..]).unwrap();
            let ours: Vec<f64> = hv.to_vec();
            rel_diff_max_norm(&ours, &fd_of_gradient(&lv, &tight, &obj, &w, 1e-4))
        }),
    ] {
        println!("Lotka–Volterra {name}: H·v vs central differences of gradients: {err:.1e}");
        assert!(err < 1e-6, "{name}: {err:e}");
    }
}

/// G = ‖u(T)‖² of Lotka–Volterra by `steps` fixed steps of `method`, in any scalar type.
fn fixed_step_objective<S: DualNum<Primitive = f64> + Copy>(
    method: Method,
    theta: &[S],
    t_end: f64,
    steps: usize,
) -> S {
    let tab = method.tableau();
    let (p, mut u) = (&theta[..4], vec![theta[4], theta[5]]);
    let h = t_end / steps as f64;
    let mut k = vec![vec![S::zero(); 2]; tab.stages];
    for step in 0..steps {
        let t = h * step as f64;
        for i in 0..tab.stages {
            let mut y = u.clone();
            for &(j, a) in tab.a[i] {
                for m in 0..2 {
                    y[m] += k[j][m] * (h * a);
                }
            }
            let mut out = vec![S::zero(); 2];
            LotkaVolterra.rhs(
                S::from(t + tab.c[i] * h),
                ArrayView1::from(&y[..]),
                ArrayView1::from(p),
                ArrayViewMut1::from(&mut out[..]),
            );
            k[i] = out;
        }
        for (i, &b) in tab.b.iter().enumerate() {
            for m in 0..2 {
                u[m] += k[i][m] * (h * b);
            }
        }
    }
    u[0] * u[0] + u[1] * u[1]
}

#[test]
fn hessian_vector_products_equal_the_nested_forward_mode_hessian() {
    let theta = [1.5, 1.0, 3.0, 1.0, 1.0, 1.0];
    let (t_end, steps) = (2.0, 400);
    // The full 6 × 6 Hessian by hyper-dual numbers (forward over forward), 21 evaluations.
    let mut hessian = [[0.0; 6]; 6];
    for i in 0..6 {
        for j in i..6 {
            let x: Vec<HyperDual64> = (0..6)
                .map(|m| {
                    HyperDual64::new(
                        theta[m],
                        f64::from(u8::from(m == i)),
                        f64::from(u8::from(m == j)),
                        0.0,
                    )
                })
                .collect();
            let g = fixed_step_objective(Method::Tsit5, &x, t_end, steps);
            hessian[i][j] = g.eps1eps2;
            hessian[j][i] = g.eps1eps2;
        }
    }
    let problem = OdeProblem::new(
        LotkaVolterra,
        theta[4..].to_vec(),
        theta[..4].to_vec(),
        (0.0, t_end),
    )
    .unwrap();
    let options = SolverOptions::default().fixed_step(t_end / steps as f64);
    let objective = SquaredNormAt::new(t_end);
    let mut worst = 0.0f64;
    for j in 0..6 {
        let v: Vec<f64> = (0..6).map(|m| f64::from(u8::from(m == j))).collect();
        let hv = hessian_vector_product(&problem, &options, &objective, &v[..4], &v[4..]).unwrap();
        assert_eq!(hv.gradient.stats.forward.accepted_steps, steps);
        let col: Vec<f64> = hv.to_vec();
        let want: Vec<f64> = (0..6).map(|i| hessian[i][j]).collect();
        worst = worst.max(rel_diff_max_norm(&col, &want));
    }
    println!("Lotka–Volterra, 400 fixed Tsit5 steps: H·e_j vs the hyper-dual Hessian: {worst:.1e}");
    assert!(worst < 1e-11, "{worst:e}");
}
