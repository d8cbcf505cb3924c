//! Repeats the benchmark solve (double pendulum, Tsit5, rtol = atol = 1e-8) N times (default 2000), for
//! profilers: `cargo build --release --example profile_solve && perf record target/release/examples/profile_solve`
//! or `valgrind --tool=callgrind target/release/examples/profile_solve 20`.
use odesens::models::DoublePendulum;
use odesens::prelude::*;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let problem = DoublePendulum::bench_problem();
    let options = SolverOptions::default().tol(1e-8).save_end_only();
    let mut acc = 0.0;
    for _ in 0..n {
        acc += solve(&problem, &options).unwrap().u_end[0];
    }
    println!("{acc}");
}
