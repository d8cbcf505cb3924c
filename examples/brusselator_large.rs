//! One large Brusselator case per process (issue 13's set-up): the 2-D Brusselator on an N × N grid
//! (2N² states, 4N² parameters), rtol 1e-7, atol 1e-5, G = ‖u(1)‖², either one solve or the keep-all
//! discrete adjoint, with the wall time, the process's peak resident memory (Linux: VmHWM) and the
//! stage-system counters.
//!
//! Run, one case per process so that the peaks do not mix:
//! `for n in 16 32 64; do for what in solve adjoint; do
//!    cargo run --release --example brusselator_large -- $n kvaerno5 $what; done; done`
//! (METHOD: `kvaerno5` or `radau`).

use std::time::Instant;

use odesens::models::Brusselator2D;
use odesens::prelude::*;
use odesens::sensitivity::{Checkpointing, SensitivityAlgorithm, SquaredNormAt, gradient};

/// The process's peak resident memory in MiB (Linux), if known.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: brusselator_large N (kvaerno5|radau) (solve|adjoint)";
    let n: usize = args.get(1).ok_or(usage)?.parse()?;
    let method = match args.get(2).map(String::as_str) {
        Some("kvaerno5") => Method::Kvaerno5,
        Some("radau") => Method::RadauIIA5,
        _ => return Err(usage.into()),
    };
    let what = args.get(3).map(String::as_str).ok_or(usage)?;
    let problem = Brusselator2D::problem(n)?;
    let options = SolverOptions::default()
        .method(method)
        .rtol(1e-7)
        .atol(1e-5)
        .save_end_only();
    let clock = Instant::now();
    let summary = match what {
        "solve" => {
            let sol = solve(&problem, &options)?;
            format!("{} steps", sol.stats.accepted_steps)
        }
        "adjoint" => {
            let g = gradient(
                &problem,
                &options,
                &SquaredNormAt::new(1.0),
                &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
            )?;
            format!(
                "stage systems by GMRES {}, by exact factorization {}; {} vjps",
                g.stats.krylov_stage_solves,
                g.stats.exact_stage_factorizations,
                g.stats.derivatives.vjp
            )
        }
        _ => return Err(usage.into()),
    };
    let seconds = clock.elapsed().as_secs_f64();
    let peak = peak_mib().map_or("n/a".to_string(), |m| format!("{m:.1} MiB"));
    println!(
        "N = {n} ({} states, {} parameters) {} {what}: {seconds:.3} s, peak {peak}; {summary}",
        2 * n * n,
        4 * n * n,
        method.name()
    );
    Ok(())
}
