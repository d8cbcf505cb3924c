//! A bouncing ball: events, and exact derivatives through them, against the closed form.
//!
//! A ball dropped from h0 = 1 m (g = 9.81 m/s², restitution e = 0.8) bounces when its height falls
//! through 0 ([`BouncingBall`]: a falling crossing of x with the jump v⁺ = −e v⁻). The solver locates each
//! bounce on the step's continuous extension; forward sensitivities carry the tangents across each
//! bounce (the saltation map) and give the bounce times' derivatives dt_k/dθ. Both are printed beside
//! the closed form t_k = t₁ (1 + 2 Σ_{j<k} e^j), t₁ = √(2 h0 / g), for an explicit and an implicit
//! method, and the run fails if they disagree by more than 1e-10 relative.
//!
//! Run: `cargo run --release --example bouncing_ball`.

use odesens::models::BouncingBall;
use odesens::prelude::*;
use odesens::sensitivity::{Directions, ForwardSettings, forward_sensitivities};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (h0, g, e, t_end) = (1.0, 9.81, 0.8, 4.0);
    let problem = OdeProblem::new(BouncingBall, vec![h0, 0.0], vec![g, e], (0.0, t_end))?;
    let mut worst = 0.0f64;
    for method in [Method::Tsit5, Method::RadauIIA5] {
        let options = SolverOptions::default().method(method).tol(1e-12);
        let sol = solve(&problem, &options)?;
        let sens = forward_sensitivities(
            &problem,
            &options,
            &Directions::All,
            &[t_end],
            ForwardSettings::default(),
        )?;
        println!(
            "\n{method}: {} bounces before t = {t_end}, {} steps",
            sol.events.len(),
            sol.stats.accepted_steps
        );
        println!(
            "{:>3} {:>18} {:>10} {:>14} {:>14} {:>14} {:>14} {:>10}",
            "k", "t_k", "error", "dt/dg", "dt/de", "dt/dh0", "dt/dv0", "error"
        );
        for (k, hit) in sol.events.iter().enumerate() {
            let (t, dt) = BouncingBall::bounce_time_derivatives(h0, g, e, k + 1);
            let time_error = (hit.t - t).abs() / t;
            let mut derivative_error = 0.0f64;
            for (d, &x) in dt.iter().enumerate() {
                let got = sens.event_time_sensitivities[[k, d]];
                derivative_error = derivative_error.max((got - x).abs() / x.abs().max(1e-3));
            }
            worst = worst.max(time_error).max(derivative_error);
            println!(
                "{:>3} {:>18.15} {:>10.1e} {:>14.10} {:>14.10} {:>14.10} {:>14.10} {:>10.1e}",
                k + 1,
                hit.t,
                time_error,
                sens.event_time_sensitivities[[k, 0]],
                sens.event_time_sensitivities[[k, 1]],
                sens.event_time_sensitivities[[k, 2]],
                sens.event_time_sensitivities[[k, 3]],
                derivative_error
            );
        }
        println!(
            "u({t_end}) = [{:.12}, {:.12}], ∂x({t_end})/∂e = {:.10}",
            sol.u_end[0],
            sol.u_end[1],
            sens.sensitivities[[0, 0, 1]]
        );
    }
    println!("\nlargest relative error against the closed form: {worst:.2e}");
    if worst > 1e-10 {
        return Err(format!("bounce times or their derivatives off by {worst:.2e}").into());
    }
    Ok(())
}
