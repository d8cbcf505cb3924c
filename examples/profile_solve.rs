//! Repeats one computation on the double pendulum benchmark set-up (Tsit5, rtol = atol = 1e-8) N times,
//! for profilers and instruction counts. `MODE` is `solve` (default), or one of the gradient computations
//! of θ1(10) wrt all 5 parameters and 4 initial values: `adjoint`, `adjoint-binomial`, `adjoint-hand`,
//! `adjoint-binomial-hand` (the model's hand-written vjp), `forward`; or a stiff solve of Robertson to
//! t = 1e5 (rtol 1e-8, atol 1e-14): `robertson-kvaerno5`, `robertson-radau`.
//!
//! `cargo build --release --example profile_solve && valgrind --tool=callgrind
//! target/release/examples/profile_solve 20 adjoint` (or `perf record …`).
use odesens::models::{DoublePendulum, DoublePendulumWithVjp};
use odesens::prelude::*;
use odesens::sensitivity::{Checkpointing, ComponentAt, SensitivityAlgorithm, gradient};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let mode = args.get(2).map_or("solve", String::as_str);
    let problem = DoublePendulum::bench_problem();
    let hand = DoublePendulum::bench_problem_with(DoublePendulumWithVjp);
    let options = SolverOptions::default().tol(1e-8).save_end_only();
    let objective = ComponentAt::new(0, 10.0);
    let binomial = Checkpointing::Binomial { snapshots: 16 };
    let mut acc = 0.0;
    for _ in 0..n {
        acc += match mode {
            "solve" => solve(&problem, &options)?.u_end[0],
            "robertson-kvaerno5" | "robertson-radau" => {
                let method = if mode == "robertson-radau" {
                    Method::RadauIIA5
                } else {
                    Method::Kvaerno5
                };
                let stiff = SolverOptions::default()
                    .method(method)
                    .rtol(1e-8)
                    .atol(1e-14)
                    .save_end_only();
                solve(&odesens::models::Robertson::problem(1e5)?, &stiff)?.u_end[0]
            }
            "adjoint" => {
                gradient(
                    &problem,
                    &options,
                    &objective,
                    &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
                )?
                .wrt_params[0]
            }
            "adjoint-binomial" => {
                gradient(
                    &problem,
                    &options,
                    &objective,
                    &SensitivityAlgorithm::adjoint(binomial),
                )?
                .wrt_params[0]
            }
            "adjoint-hand" => {
                gradient(
                    &hand,
                    &options,
                    &objective,
                    &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
                )?
                .wrt_params[0]
            }
            "adjoint-binomial-hand" => {
                gradient(
                    &hand,
                    &options,
                    &objective,
                    &SensitivityAlgorithm::adjoint(binomial),
                )?
                .wrt_params[0]
            }
            "forward" => {
                gradient(
                    &problem,
                    &options,
                    &objective,
                    &SensitivityAlgorithm::Forward,
                )?
                .wrt_params[0]
            }
            other => return Err(format!("unknown mode {other}").into()),
        };
    }
    println!("{acc}");
    Ok(())
}
