//! What gradients are for: fitting the double pendulum's (l1, l2, m1/m2) to noisy observations of its
//! bobs, by L-BFGS with adjoint gradients and by Newton-CG with Hessian-vector products (the `argmin`
//! crate's solvers).
//!
//! Synthetic data: the course's pendulum (l1 = l2 = 1 m, m1 = m2 = 0.1 kg, u0 = [2, 2, 0, 0]) observed
//! every 0.02 s on [0, 1.5] s, bob positions (x1, y1, x2, y2) with Gaussian noise of 1 % of the arm
//! length. The dynamics depend on the masses only through m2/(m1 + m2), so the fit is over
//! θ = (l1, l2, r = m1/m2) with m2 fixed. Start: 25 %, 20 % and 30 % off.
//!
//! Run: `cargo run --release --example fit_pendulum [-- --out DIR]` (default `out/fit_pendulum`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use argmin::core::observers::{Observe, ObserverMode};
use argmin::core::{CostFunction, Error, Executor, Gradient, Hessian, IterState, KV, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::newton::NewtonCG;
use argmin::solver::quasinewton::LBFGS;
use argmin_math::ArgminDot;
use ndarray::{Array2, ArrayView1};
use odesens::models::DoublePendulum;
use odesens::prelude::*;
use odesens::sensitivity::{
    Checkpointing, Objective, SensitivityAlgorithm, SensitivityError, gradient,
    hessian_vector_product, objective_value,
};
use plotters::prelude::*;

const TRUTH: [f64; 3] = [1.0, 1.0, 1.0];
const M2: f64 = 0.1;
const T_END: f64 = 1.5;

/// ½ Σ_k ‖positions(u(t_k); l1, l2) − d_k‖² / σ² over the observation times.
struct BobPositions {
    times: Vec<f64>,
    data: Array2<f64>,
    sigma: f64,
}

impl Objective for BobPositions {
    fn observation_times(&self) -> &[f64] {
        &self.times
    }
    fn observation<S: Scalar>(&self, k: usize, _t: f64, u: ArrayView1<S>, p: ArrayView1<S>) -> S {
        let (l1, l2) = (p[0], p[1]);
        let x1 = l1 * u[0].sin();
        let y1 = -(l1 * u[0].cos());
        let pos = [x1, y1, x1 + l2 * u[1].sin(), y1 - l2 * u[1].cos()];
        let mut g = S::zero();
        for (m, q) in pos.into_iter().enumerate() {
            let r = (q - self.data[[k, m]]) * (1.0 / self.sigma);
            g += r * r * 0.5;
        }
        g
    }
    fn check(&self, n_states: usize) -> Result<(), SensitivityError> {
        if n_states == 4 {
            Ok(())
        } else {
            Err(SensitivityError::DimensionMismatch {
                what: "states (double pendulum)",
                expected: 4,
                got: n_states,
            })
        }
    }
}

/// The fit as an argmin problem: θ = (l1, l2, r) → p = (l1, l2, r·m2, m2, g).
struct Fit {
    problem: OdeProblem<DoublePendulum>,
    options: SolverOptions,
    objective: BobPositions,
    costs: Mutex<usize>,
    gradients: Mutex<usize>,
    hvps: Mutex<usize>,
}

impl Fit {
    fn problem_at(&self, x: &[f64]) -> Result<OdeProblem<DoublePendulum>, Error> {
        Ok(self
            .problem
            .with_params(vec![x[0], x[1], x[2] * M2, M2, DoublePendulum::G])?)
    }
}

impl CostFunction for Fit {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, x: &Vec<f64>) -> Result<f64, Error> {
        *self.costs.lock().expect("counter") += 1;
        Ok(objective_value(
            &self.problem_at(x)?,
            &self.options,
            &self.objective,
        )?)
    }
}

impl Gradient for Fit {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Vec<f64>) -> Result<Vec<f64>, Error> {
        *self.gradients.lock().expect("counter") += 1;
        let g = gradient(
            &self.problem_at(x)?,
            &self.options,
            &self.objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )?;
        Ok(vec![g.wrt_params[0], g.wrt_params[1], g.wrt_params[2] * M2])
    }
}

/// The Hessian at x as an operator: each product H·v is one forward-over-adjoint pass.
#[derive(Clone)]
struct HessianOperator {
    fit: Arc<Fit>,
    x: Vec<f64>,
}

impl ArgminDot<Vec<f64>, Vec<f64>> for HessianOperator {
    fn dot(&self, v: &Vec<f64>) -> Vec<f64> {
        *self.fit.hvps.lock().expect("counter") += 1;
        let problem = self.fit.problem_at(&self.x).expect("valid parameters");
        // Chain rule through p = (l1, l2, r·m2, m2, g): dp = (v0, v1, v2·m2, 0, 0).
        let vp = [v[0], v[1], v[2] * M2, 0.0, 0.0];
        let hv = hessian_vector_product(
            &problem,
            &self.fit.options,
            &self.fit.objective,
            &vp,
            &[0.0; 4],
        )
        .expect("Hessian-vector product");
        vec![hv.hv_params[0], hv.hv_params[1], hv.hv_params[2] * M2]
    }
}

/// argmin wants the problem by value; an `Arc` lets the Hessian operator share it.
struct Shared(Arc<Fit>);

impl CostFunction for Shared {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, x: &Vec<f64>) -> Result<f64, Error> {
        self.0.cost(x)
    }
}

impl Gradient for Shared {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, x: &Vec<f64>) -> Result<Vec<f64>, Error> {
        self.0.gradient(x)
    }
}

impl Hessian for Shared {
    type Param = Vec<f64>;
    type Hessian = HessianOperator;
    fn hessian(&self, x: &Vec<f64>) -> Result<HessianOperator, Error> {
        Ok(HessianOperator {
            fit: Arc::clone(&self.0),
            x: x.clone(),
        })
    }
}

/// Records the best loss after every iteration.
#[derive(Clone, Default)]
struct LossHistory(Arc<Mutex<Vec<f64>>>);

impl<H> Observe<IterState<Vec<f64>, Vec<f64>, (), H, (), f64>> for LossHistory {
    fn observe_iter(
        &mut self,
        state: &IterState<Vec<f64>, Vec<f64>, (), H, (), f64>,
        _kv: &KV,
    ) -> Result<(), Error> {
        self.0.lock().expect("history").push(state.get_best_cost());
        Ok(())
    }
}

/// A deterministic Gaussian sample (xorshift64* and Box–Muller): the example needs no RNG crate.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn gaussian(&mut self) -> f64 {
        let (a, b) = (self.uniform(), self.uniform());
        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    }
}

struct Outcome {
    name: &'static str,
    x: Vec<f64>,
    iterations: u64,
    costs: usize,
    gradients: usize,
    hvps: usize,
    seconds: f64,
    history: Vec<f64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = common::out_dir("out/fit_pendulum");
    let options = SolverOptions::default().method(Method::Vern9).tol(1e-10);
    let truth = DoublePendulum::standard_problem(T_END)?;
    let times: Vec<f64> = (1..=75).map(|k| 0.02 * f64::from(k)).collect();
    let exact = solve(&truth, &options.clone().save_at(times.clone()))?;
    let sigma = 0.01;
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let data = Array2::from_shape_fn((times.len(), 4), |(k, m)| {
        let u = exact.states.row(k).to_vec();
        DoublePendulum::positions(&u, TRUTH[0], TRUTH[1])[m] + sigma * noise.gaussian()
    });
    let start = vec![1.25, 0.8, 1.3];
    println!(
        "Fit (l1, l2, m1/m2) of the double pendulum to {} noisy observations of both bobs on [0, {T_END}] s \
         (σ = {sigma} m); truth {TRUTH:?}, start {start:?}",
        times.len()
    );

    let mut outcomes = Vec::new();
    for name in [
        "L-BFGS (adjoint gradients)",
        "Newton-CG (Hessian-vector products)",
    ] {
        let fit = Arc::new(Fit {
            problem: truth.clone(),
            options: options.clone(),
            objective: BobPositions {
                times: times.clone(),
                data: data.clone(),
                sigma,
            },
            costs: Mutex::new(0),
            gradients: Mutex::new(0),
            hvps: Mutex::new(0),
        });
        let history = LossHistory::default();
        let clock = Instant::now();
        let linesearch = MoreThuenteLineSearch::new();
        let (x, iterations) = if name.starts_with("L-BFGS") {
            let solver = LBFGS::new(linesearch, 7).with_tolerance_grad(1e-8)?;
            let res = Executor::new(Shared(Arc::clone(&fit)), solver)
                .configure(|s| s.param(start.clone()).max_iters(100))
                .add_observer(history.clone(), ObserverMode::Always)
                .run()?;
            let st = res.state();
            (
                st.get_best_param().cloned().unwrap_or_default(),
                st.get_iter(),
            )
        } else {
            // Stop when an iteration lowers the loss by less than 1e-6 (it is ~1e2 at the optimum).
            let solver = NewtonCG::new(linesearch).with_tolerance(1e-6)?;
            let res = Executor::new(Shared(Arc::clone(&fit)), solver)
                .configure(|s| s.param(start.clone()).max_iters(30))
                .add_observer(history.clone(), ObserverMode::Always)
                .run()?;
            let st = res.state();
            (
                st.get_best_param().cloned().unwrap_or_default(),
                st.get_iter(),
            )
        };
        let seconds = clock.elapsed().as_secs_f64();
        let costs = *fit.costs.lock().expect("counter");
        let gradients = *fit.gradients.lock().expect("counter");
        let hvps = *fit.hvps.lock().expect("counter");
        let history = history.0.lock().expect("history").clone();
        outcomes.push(Outcome {
            name,
            x,
            iterations,
            costs,
            gradients,
            hvps,
            seconds,
            history,
        });
    }

    println!(
        "\n{:<38} {:>22} {:>9} {:>6} {:>6} {:>6} {:>9} {:>11} {:>9}",
        "method",
        "fitted (l1, l2, m1/m2)",
        "max error",
        "iters",
        "costs",
        "grads",
        "H·v",
        "final loss",
        "time"
    );
    for o in &outcomes {
        let err =
            o.x.iter()
                .zip(TRUTH)
                .map(|(a, b)| ((a - b) / b).abs())
                .fold(0.0, f64::max);
        println!(
            "{:<38} {:>6.4}, {:>6.4}, {:>6.4} {:>8.2}% {:>6} {:>6} {:>6} {:>9} {:>11.3e} {:>7.2} s",
            o.name,
            o.x[0],
            o.x[1],
            o.x[2],
            100.0 * err,
            o.iterations,
            o.costs,
            o.gradients,
            o.hvps,
            o.history.last().copied().unwrap_or(f64::NAN),
            o.seconds
        );
    }
    let expected = 0.5 * (times.len() * 4) as f64;
    println!(
        "(a loss near ½·(number of residuals) = {expected} means the fit is down to the noise)"
    );

    // Figures: loss per iteration; fitted against observed trajectories.
    common::init_fonts();
    let path = out.join("loss.png");
    let best = outcomes
        .iter()
        .flat_map(|o| o.history.iter().copied())
        .fold(f64::INFINITY, f64::min);
    let series: Vec<common::Series> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| common::Series {
            label: o.name,
            points: o
                .history
                .iter()
                .enumerate()
                .map(|(k, &c)| ((k + 1) as f64, c - best))
                .collect(),
            color: common::PALETTE[i],
        })
        .collect();
    common::semilogy_plot(
        &path,
        &format!("Fitting the double pendulum: loss above its minimum {best:.2} per iteration"),
        "iteration",
        "loss − min loss, loss = ½ Σ (residual/σ)²",
        &series,
    )?;
    println!("\nwrote {}", path.display());

    let fitted = &outcomes[0].x;
    let fine: Vec<f64> = (0..=300).map(|k| T_END * f64::from(k) / 300.0).collect();
    let traj = |x: &[f64]| -> Result<Vec<[f64; 4]>, Box<dyn std::error::Error>> {
        let pr = truth.with_params(vec![x[0], x[1], x[2] * M2, M2, DoublePendulum::G])?;
        let sol = solve(&pr, &options.clone().save_at(fine.clone()))?;
        Ok(sol
            .states
            .rows()
            .into_iter()
            .map(|u| DoublePendulum::positions(&u.to_vec(), x[0], x[1]))
            .collect())
    };
    let (fit_path, start_path) = (traj(fitted)?, traj(&start)?);
    let path = out.join("trajectories.png");
    let root = BitMapBackend::new(&path, (900, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Lower bob: observations, start guess and L-BFGS fit",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-2.2..2.2, -2.2..2.2)?;
    chart
        .configure_mesh()
        .x_desc("x2 [m]")
        .y_desc("y2 [m]")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    let gray = RGBColor(150, 150, 150);
    chart
        .draw_series(LineSeries::new(
            start_path.iter().map(|q| (q[2], q[3])),
            gray.stroke_width(2),
        ))?
        .label("start guess (l1, l2, m1/m2) = (1.25, 0.8, 1.3)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], gray.stroke_width(2)));
    let blue = common::PALETTE[0];
    chart
        .draw_series(LineSeries::new(
            fit_path.iter().map(|q| (q[2], q[3])),
            blue.stroke_width(2),
        ))?
        .label("fitted")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2)));
    let red = common::PALETTE[1];
    chart
        .draw_series(
            data.rows()
                .into_iter()
                .map(|d| Circle::new((d[2], d[3]), 4, red.filled())),
        )?
        .label("noisy observations (σ = 1 cm)")
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, red.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    println!("wrote {}", path.display());

    for o in &outcomes {
        let err =
            o.x.iter()
                .zip(TRUTH)
                .map(|(a, b)| ((a - b) / b).abs())
                .fold(0.0, f64::max);
        if err > 0.01 {
            return Err(format!(
                "{}: fitted parameters {:?} are {:.2}% off",
                o.name,
                o.x,
                100.0 * err
            )
            .into());
        }
    }
    Ok(())
}
