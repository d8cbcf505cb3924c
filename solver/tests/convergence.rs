//! Measured convergence orders, in fixed-step mode on problems with exact solutions: the global error
//! of the solution (order p) and the local error of the continuous extension (order q + 1 for an
//! interpolant of order q). Each must be within ±0.2 of the claimed order.

use odesens_models::{ExpSinCos, Kepler, LinearOscillator};
use odesens_solver::*;

/// Least-squares slope of log(err) against log(h).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0.ln()).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1.ln()).sum::<f64>() / n;
    let num: f64 = points
        .iter()
        .map(|p| (p.0.ln() - mx) * (p.1.ln() - my))
        .sum();
    let den: f64 = points.iter().map(|p| (p.0.ln() - mx).powi(2)).sum();
    num / den
}

/// Max-norm error over every step point of a fixed-step solve against `exact`.
fn global_error<M: OdeSystem>(
    problem: &OdeProblem<M>,
    method: Method,
    h: f64,
    exact: impl Fn(f64) -> Vec<f64>,
) -> f64 {
    let sol = solve(
        problem,
        &SolverOptions::default()
            .method(method)
            .fixed_step(h)
            .max_steps(10_000_000),
    )
    .expect("solve");
    let mut err: f64 = 0.0;
    for (i, &t) in sol.times.iter().enumerate() {
        for (j, e) in exact(t).iter().enumerate() {
            err = err.max((sol.states[[i, j]] - e).abs());
        }
    }
    err
}

const PERIODS: f64 = 20.0;
/// The oscillator runs longer so that the finest steps of the 9th-order method stay above round-off.
const OSCILLATOR_PERIODS: f64 = 200.0;

fn oscillator() -> (OdeProblem<LinearOscillator>, impl Fn(f64) -> Vec<f64>) {
    let t_end = OSCILLATOR_PERIODS * std::f64::consts::TAU;
    let problem = OdeProblem::new(
        LinearOscillator,
        vec![1.0, 0.0],
        vec![1.0, 0.0],
        (0.0, t_end),
    )
    .unwrap();
    (problem, |t| {
        LinearOscillator::exact([1.0, 0.0], 1.0, 0.0, 0.0, t).to_vec()
    })
}

/// Step counts per period in the asymptotic range of each method, above round-off.
fn steps_per_period(method: Method) -> [f64; 3] {
    match method {
        Method::Tsit5 | Method::Dp5 => [128.0, 181.0, 256.0],
        Method::Bs3 => [256.0, 362.0, 512.0],
        Method::Vern7 => [32.0, 45.0, 64.0],
        // On the oscillator Vern9's leading linear error term is small: its error falls faster than
        // h^9 until round-off (slope ≈ 9.4 over 16–45 steps per period); the nonlinear test below
        // measures it.
        Method::Vern9 => [0.0; 3],
        _ => unreachable!("every method has a window"),
    }
}

#[test]
fn global_order_on_linear_oscillator() {
    let (problem, exact) = oscillator();
    for method in [Method::Tsit5, Method::Dp5, Method::Bs3, Method::Vern7] {
        let points: Vec<(f64, f64)> = steps_per_period(method)
            .iter()
            .map(|&n| {
                let h = std::f64::consts::TAU / n;
                (h, global_error(&problem, method, h, &exact))
            })
            .collect();
        let p = slope(&points);
        let claimed = f64::from(method.tableau().order);
        println!("{method}: global order {p:.3} (claimed {claimed}) from {points:?}");
        assert!(
            (p - claimed).abs() <= 0.2,
            "{method}: measured order {p:.3}, claimed {claimed}"
        );
    }
}

#[test]
fn global_order_on_kepler_orbit() {
    // Nonlinear: Kepler e = 0.1 over 20 periods. The 7th and 9th order methods reach round-off before
    // their asymptotic range on this problem, so it checks the 3rd and 5th order pairs.
    let e = 0.1;
    let t_end = PERIODS * std::f64::consts::TAU;
    let problem = OdeProblem::new(
        Kepler,
        Kepler::u0(e).to_vec(),
        Vec::<f64>::new(),
        (0.0, t_end),
    )
    .unwrap();
    for method in [Method::Tsit5, Method::Dp5, Method::Bs3] {
        let points: Vec<(f64, f64)> = [181.0, 256.0, 362.0]
            .iter()
            .map(|&n| {
                let h = std::f64::consts::TAU / n;
                (
                    h,
                    global_error(&problem, method, h, |t| Kepler::exact(e, t).to_vec()),
                )
            })
            .collect();
        let p = slope(&points);
        let claimed = f64::from(method.tableau().order);
        println!("{method}: Kepler global order {p:.3} (claimed {claimed}) from {points:?}");
        assert!(
            (p - claimed).abs() <= 0.2,
            "{method}: measured order {p:.3}, claimed {claimed}"
        );
    }
}

#[test]
fn global_order_on_exp_sin_cos() {
    // Nonlinear and non-autonomous, t ∈ [0, 2.5]: the 9th-order pair in its asymptotic range.
    let t_end = 2.5;
    let problem = OdeProblem::new(
        ExpSinCos,
        ExpSinCos::u0().to_vec(),
        Vec::<f64>::new(),
        (0.0, t_end),
    )
    .unwrap();
    let method = Method::Vern9;
    let points: Vec<(f64, f64)> = [21.0, 30.0, 42.0]
        .iter()
        .map(|&n| {
            let h = t_end / n;
            (
                h,
                global_error(&problem, method, h, |t| ExpSinCos::exact(t).to_vec()),
            )
        })
        .collect();
    let p = slope(&points);
    let claimed = f64::from(method.tableau().order);
    println!("{method}: ExpSinCos global order {p:.3} (claimed {claimed}) from {points:?}");
    assert!(
        (p - claimed).abs() <= 0.2,
        "{method}: measured order {p:.3}, claimed {claimed}"
    );
}

/// Largest error of the dense output inside single steps of size h from exact values.
fn local_dense_error(method: Method, h: f64, e: f64) -> f64 {
    let mut err: f64 = 0.0;
    for j in 0..8 {
        let t0 = 0.7 * f64::from(j);
        let problem = OdeProblem::new(
            Kepler,
            Kepler::exact(e, t0).to_vec(),
            Vec::<f64>::new(),
            (t0, t0 + h),
        )
        .unwrap();
        let thetas = [0.2, 0.5, 0.8];
        let options = SolverOptions::default()
            .method(method)
            .fixed_step(h)
            .save_at(thetas.iter().map(|th| t0 + th * h).collect());
        let sol = solve(&problem, &options).expect("solve");
        for (r, th) in thetas.iter().enumerate() {
            let exact = Kepler::exact(e, t0 + th * h);
            for (k, x) in exact.iter().enumerate() {
                err = err.max((sol.states[[r, k]] - x).abs());
            }
        }
    }
    err
}

#[test]
fn dense_output_local_order() {
    for method in Method::ALL {
        // (eccentricity, step sizes): windows in each interpolant's asymptotic range, above the round-off
        // floor (~1e-15, and ~1e-12·h for Vern9, whose monomial coefficients reach 1e4).
        let (e, hs): (f64, [f64; 3]) = match method {
            Method::Tsit5 => (0.3, [0.02, 0.014, 0.01]),
            Method::Dp5 => (0.3, [0.08, 0.057, 0.04]),
            Method::Bs3 => (0.3, [0.04, 0.028, 0.02]),
            Method::Vern7 => (0.6, [0.04, 0.028, 0.02]),
            Method::Vern9 => (0.6, [0.16, 0.113, 0.08]),
            _ => unreachable!(),
        };
        let points: Vec<(f64, f64)> = hs
            .iter()
            .map(|&h| (h, local_dense_error(method, h, e)))
            .collect();
        let p = slope(&points);
        let claimed = f64::from(method.tableau().dense_order + 1);
        println!("{method}: dense local order {p:.3} (claimed q + 1 = {claimed}) from {points:?}");
        assert!(
            (p - claimed).abs() <= 0.2,
            "{method}: dense local order {p:.3}, claimed {claimed}"
        );
    }
}
