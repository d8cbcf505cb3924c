//! The main job: the chaotic double pendulum of MIT 18.063 (*Matrix Calculus*).
//!
//! Solves the course's set-up (l1 = l2 = 1, m1 = m2 = 0.1, g = 9.80665, u0 = [2, 2, 0, 0], t ∈ [0, 10])
//! with every explicit method, prints the statistics, checks the benchmark set-up against its reference
//! value, and draws θ1(t), θ2(t).
//!
//! Run: `cargo run --release --example double_pendulum [-- --out DIR]` (default `out/double_pendulum`).

mod common;

use odesens::models::DoublePendulum;
use odesens::prelude::*;
use plotters::style::RGBColor;

const BLUE: RGBColor = RGBColor(25, 90, 200);
const RED: RGBColor = RGBColor(200, 40, 40);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = common::out_dir("out/double_pendulum");
    let p = DoublePendulum::course_params();
    let problem = OdeProblem::new(
        DoublePendulum,
        vec![2.0, 2.0, 0.0, 0.0],
        p.clone(),
        (0.0, 10.0),
    )?;

    println!(
        "Double pendulum (MIT 18.063): l1 = l2 = 1, m1 = m2 = 0.1, g = 9.80665, u0 = [2, 2, 0, 0], t in [0, 10]"
    );
    println!("rtol = atol = 1e-10\n");
    println!(
        "{:<7} {:>9} {:>9} {:>10} {:>12} {:>12}  u(10)",
        "method", "accepted", "rejected", "rhs evals", "time", "energy drift"
    );
    for method in Method::ALL {
        let options = SolverOptions::default()
            .method(method)
            .tol(1e-10)
            .max_steps(1_000_000);
        let sol = solve(&problem, &options)?;
        let time = common::median_time(|| drop(solve(&problem, &options)), 5);
        let drift = DoublePendulum::max_energy_drift(&sol.states, &p);
        println!(
            "{:<7} {:>9} {:>9} {:>10} {:>10.3} ms {:>12.1e}  [{:.6}, {:.6}, {:.6}, {:.6}]",
            method.name(),
            sol.stats.accepted_steps,
            sol.stats.rejected_steps,
            sol.stats.rhs_evaluations,
            time * 1e3,
            drift,
            sol.u_end[0],
            sol.u_end[1],
            sol.u_end[2],
            sol.u_end[3]
        );
    }

    // The benchmark set-up against its reference value.
    let bench = DoublePendulum::bench_problem();
    println!(
        "\nBenchmark set-up (l1 = l2 = m1 = m2 = 1, u0 = [π/2, π/2, 0, 0]): max |u(10) − reference|"
    );
    for tol in [1e-6, 1e-8, 1e-10, 1e-12] {
        let sol = solve(&bench, &SolverOptions::default().tol(tol).save_end_only())?;
        let err = DoublePendulum::bench_error(sol.u_end.as_slice().expect("contiguous"));
        println!(
            "  Tsit5 rtol = atol = {tol:.0e}: error {err:.2e} ({} steps, {} rejected)",
            sol.stats.accepted_steps, sol.stats.rejected_steps
        );
    }

    // θ1(t), θ2(t) on a fine grid by dense output.
    let times: Vec<f64> = (0..=2000).map(|i| 0.005 * f64::from(i)).collect();
    let sol = solve(
        &problem,
        &SolverOptions::default()
            .method(Method::Vern9)
            .tol(1e-12)
            .save_at(times),
    )?;
    let series = |k: usize| -> Vec<(f64, f64)> {
        sol.times
            .iter()
            .zip(sol.states.column(k))
            .map(|(&t, &x)| (t, x))
            .collect()
    };
    let path = out.join("angles.png");
    common::line_plot(
        &path,
        "Double pendulum: angles (u0 = [2, 2, 0, 0], Vern9, tol 1e-12)",
        "time t [s]",
        "angle [rad]",
        &[
            common::Series {
                label: "θ1(t)",
                points: series(0),
                color: BLUE,
            },
            common::Series {
                label: "θ2(t)",
                points: series(1),
                color: RED,
            },
        ],
    )?;
    println!("\nwrote {}", path.display());
    Ok(())
}
