//! The matrix-free Newton–Krylov path at scale (issue 14): the 2-D heat equation's eigenmode on an
//! N × N grid (default N = 317: 100,489 states), BDF with `LinearSolverKind::Gmres` and an ILU(0)
//! preconditioner, every step saved. Prints the error against the closed form u(T) = e^{μT} φ, the
//! counters, the process's peak resident memory (Linux VmHWM) and the bytes of the saved state
//! history: no n × n matrix is formed anywhere.
//!
//! `cargo run --release --example heat_krylov -- [N] [none|ilu0|lagged] [T]` (defaults 317, ilu0, 0.01)

use std::time::Instant;

use odesens::models::Heat2D;
use odesens::prelude::*;
use odesens::solver::LinearSolverKind;
use odesens::solver::krylov::PreconditionerKind;

/// The process's peak resident memory in MiB (Linux), if known.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(317), |s| s.parse())?;
    let preconditioner = match args.get(2).map(String::as_str) {
        None | Some("ilu0") => PreconditionerKind::Ilu0,
        Some("none") => PreconditionerKind::None,
        Some("lagged") => PreconditionerKind::LaggedLu,
        Some(other) => return Err(format!("unknown preconditioner {other}").into()),
    };
    let t_end: f64 = args.get(3).map_or(Ok(0.01), |s| s.parse())?;
    let (rtol, atol) = (1e-6, 1e-8);
    let problem = Heat2D::problem(n, t_end)?;
    let options = SolverOptions::default()
        .method(Method::Bdf)
        .rtol(rtol)
        .atol(atol)
        .linear_solver(LinearSolverKind::Gmres {
            restart: 20,
            preconditioner,
        });
    let before = peak_mib();
    let start = Instant::now();
    let sol = solve(&problem, &options)?;
    let seconds = start.elapsed().as_secs_f64();
    let factor = Heat2D::mode_factor(n, 1.0, t_end);
    let worst = Heat2D::mode(n)
        .iter()
        .zip(sol.u_end.iter())
        .map(|(phi, u)| (u - factor * phi).abs() / (atol + rtol * (factor * phi).abs()))
        .fold(0.0, f64::max);
    let history_mib = (sol.states.len() * 8) as f64 / (1024.0 * 1024.0);
    let s = sol.stats;
    println!(
        "heat N = {n} ({} states), BDF + GMRES {preconditioner:?}: {seconds:.2} s, error {worst:.2} \
         local tolerances; {} steps, {} Newton iterations, {} Krylov jvps, {} J, {} set-ups",
        n * n,
        s.accepted_steps,
        s.newton_iterations,
        s.linear_iterations,
        s.jacobian_evaluations,
        s.factorizations
    );
    if let (Some(before), Some(peak)) = (before, peak_mib()) {
        println!(
            "peak resident memory {peak:.1} MiB ({before:.1} MiB before the solve); saved history \
             {history_mib:.1} MiB ({} rows): peak / history = {:.2}",
            sol.times.len(),
            peak / history_mib
        );
    }
    if worst > 10.0 {
        return Err(format!("error {worst} local tolerances").into());
    }
    Ok(())
}
