//! Work–precision table of the explicit methods on the double pendulum benchmark set-up
//! (l1 = l2 = m1 = m2 = 1, u0 = [π/2, π/2, 0, 0], t ∈ [0, 10]): error in u(10) against the reference
//! value versus right-hand-side evaluations (and wall time), for rtol = atol = 1e-4 … 1e-12.
//!
//! Run: `cargo run --release --example work_precision`. Writes `data/work_precision.json`,
//! `data/work_precision.md` and `data/figures/work_precision.png`.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use odesens::models::DoublePendulum;
use odesens::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let problem = DoublePendulum::bench_problem();
    let tolerances: Vec<f64> = (4..=12).map(|k| 10f64.powi(-k)).collect();
    let mut rows = Vec::new();
    let mut md = String::from(
        "# Work–precision: double pendulum benchmark set-up\n\n\
         l1 = l2 = m1 = m2 = 1, g = 9.80665, u0 = [π/2, π/2, 0, 0], t ∈ [0, 10]; error = max |u(10) − reference|.\n\
         Produced by `cargo run --release --example work_precision` (time: median of 5 solves on the machine that ran it).\n\n\
         | method | rtol = atol | error | rhs evaluations | accepted | rejected | time (µs) |\n|---|---|---|---|---|---|---|\n",
    );
    let mut series = Vec::new();
    for (m, method) in Method::ALL.into_iter().enumerate() {
        let mut points = Vec::new();
        for &tol in &tolerances {
            let options = SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only()
                .max_steps(10_000_000);
            let sol = solve(&problem, &options)?;
            let err = DoublePendulum::bench_error(sol.u_end.as_slice().expect("contiguous"));
            let time = common::median_time(|| drop(solve(&problem, &options)), 5);
            let s = sol.stats;
            writeln!(
                md,
                "| {} | {tol:.0e} | {err:.2e} | {} | {} | {} | {:.1} |",
                method.name(),
                s.rhs_evaluations,
                s.accepted_steps,
                s.rejected_steps,
                time * 1e6
            )?;
            rows.push(serde_json::json!({
                "method": method.name(), "tol": tol, "error_u_end": err, "rhs_evaluations": s.rhs_evaluations,
                "accepted_steps": s.accepted_steps, "rejected_steps": s.rejected_steps, "median_time_s": time,
            }));
            points.push((s.rhs_evaluations as f64, err));
        }
        series.push(common::Series {
            label: method.name(),
            points,
            color: common::PALETTE[m],
        });
    }
    print!("{md}");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    std::fs::create_dir_all(data.join("figures"))?;
    let json = serde_json::json!({
        "problem": "double pendulum, l1 = l2 = m1 = m2 = 1, g = 9.80665, u0 = [pi/2, pi/2, 0, 0], t in [0, 10]",
        "reference_u_end": DoublePendulum::BENCH_U10,
        "command": "cargo run --release --example work_precision",
        "rows": rows,
    });
    std::fs::write(
        data.join("work_precision.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(data.join("work_precision.md"), &md)?;
    common::loglog_plot(
        &data.join("figures/work_precision.png"),
        "Work–precision, double pendulum (t = 10), rtol = atol = 1e-4 … 1e-12",
        "right-hand-side evaluations",
        "max |u(10) − reference|",
        &series,
    )?;
    println!(
        "\nwrote data/work_precision.json, data/work_precision.md, data/figures/work_precision.png"
    );
    Ok(())
}
