//! Behaviour kept bit for bit across the redesign (issue 12): solutions and gradients of every method
//! × forward sensitivities, the discrete adjoint with each checkpoint policy, the continuous adjoint and
//! H·v (where a method supports them) on the double pendulum, Robertson and the Brusselator N = 4,
//! against `data/fixtures/redesign_bits.json`, recorded before the redesign began.
//!
//! Each case is a list of f64 (u_end and saved states, step counts, G and ∇G, …) stored as the hex of
//! its bits; every case must match exactly. Cases whose bits moved on purpose were re-recorded in the
//! commit that moved them, which says by how much: `ODESENS_RECORD_BITS=all cargo test --test bits`
//! records everything, `ODESENS_RECORD_BITS=prefix,prefix` only the cases whose names start so.
//!
//! Re-recorded so far: the ESDIRK cases (`*/TRBDF2/*`, `*/Kvaerno5/*`) when the ESDIRKs moved to the
//! predictive step-size controller; the implicit methods' `solve_save_at` cases when `Saving::At`
//! moved from tstops to the continuous extension (as for explicit methods); the Radau IIA5
//! `solve_save_at` cases (by ≤ 4.1e-16 relative) when its collocation polynomial came to be evaluated
//! from the step's start in its first half (the end form lost ~ε‖u_{n+1} − u_n‖ near the start); the
//! implicit methods' derivative cases of the pendulum and Robertson (by ≤ 5.6e-14 relative) when small
//! dense problems came to factor their exact stage matrices instead of iterating to 1e-13.

use std::collections::BTreeMap;

use odesens_models::{Brusselator2D, DoublePendulum, Robertson};
use odesens_sensitivity::{
    Checkpointing, ContinuousSettings, LeastSquares, Objective, SensitivityAlgorithm,
    SquaredNormAt, WeightedSumAt, gradient, hessian_vector_product,
};
use odesens_solver::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../data/fixtures/redesign_bits.json"
);

/// The checkpoint policies, with a memory budget of `budget` bytes (a few checkpoints of the problem).
fn policies(budget: usize) -> [(&'static str, Checkpointing); 4] {
    [
        ("keep_all", Checkpointing::KeepAll),
        ("uniform3", Checkpointing::Uniform { every: 3 }),
        ("binomial4", Checkpointing::Binomial { snapshots: 4 }),
        ("budget", Checkpointing::MemoryBudget { bytes: budget }),
    ]
}

fn solution_bits(sol: &Solution) -> Vec<f64> {
    let mut v = vec![
        sol.stats.accepted_steps as f64,
        sol.stats.rejected_steps as f64,
        sol.stats.rhs_evaluations as f64,
        sol.times.len() as f64,
    ];
    v.extend(sol.times.iter());
    v.extend(sol.states.iter());
    v.extend(sol.u_end.iter());
    v
}

fn gradient_bits(g: &odesens_sensitivity::Gradient) -> Vec<f64> {
    let mut v = vec![g.value];
    v.extend(g.to_vec());
    v
}

/// Every case of one problem: solves (end only, and at save times) and gradients.
#[allow(clippy::too_many_arguments)]
fn cases_for<M: OdeSystem, O: Objective>(
    out: &mut BTreeMap<String, Vec<f64>>,
    name: &str,
    problem: &OdeProblem<M>,
    objective: &O,
    methods: &[Method],
    tol: f64,
    save_at: Vec<f64>,
    budget: usize,
) {
    let (n, np) = (problem.n_states(), problem.model().n_params());
    for &method in methods {
        let key = |what: &str| format!("{name}/{method}/{what}");
        let opts = SolverOptions::default()
            .method(method)
            .tol(tol)
            .max_steps(1_000_000);
        let end = solve(problem, &opts.clone().save_end_only()).unwrap();
        out.insert(key("solve_end"), solution_bits(&end));
        let at = solve(problem, &opts.clone().save_at(save_at.clone())).unwrap();
        out.insert(key("solve_save_at"), solution_bits(&at));
        let fwd = gradient(problem, &opts, objective, &SensitivityAlgorithm::Forward).unwrap();
        out.insert(key("forward"), gradient_bits(&fwd));
        for (policy_name, policy) in policies(budget) {
            let adj = gradient(
                problem,
                &opts,
                objective,
                &SensitivityAlgorithm::adjoint(policy),
            )
            .unwrap();
            out.insert(key(&format!("adjoint_{policy_name}")), gradient_bits(&adj));
        }
        if !method.is_implicit() {
            let cont = gradient(
                problem,
                &opts,
                objective,
                &SensitivityAlgorithm::InterpolatingAdjoint(ContinuousSettings::default()),
            )
            .unwrap();
            let mut v = gradient_bits(&cont);
            v.push(cont.backward.unwrap().backward.accepted_steps as f64);
            out.insert(key("continuous"), v);
            let vp: Vec<f64> = (0..np).map(|i| 0.1 * (i as f64 + 1.0)).collect();
            let vu: Vec<f64> = (0..n).map(|i| 1.0 - 0.05 * i as f64).collect();
            let hv = hessian_vector_product(problem, &opts, objective, &vp, &vu).unwrap();
            let mut v = gradient_bits(&hv.gradient);
            v.extend(hv.to_vec());
            out.insert(key("hessian_vector"), v);
        }
    }
}

fn all_cases() -> BTreeMap<String, Vec<f64>> {
    let mut out = BTreeMap::new();
    let all: Vec<Method> = Method::ALL
        .iter()
        .chain(Method::IMPLICIT.iter())
        .copied()
        .collect();

    let pendulum = DoublePendulum::standard_problem(2.0).unwrap();
    let obs = vec![0.5, 1.0, 2.0];
    let data = ndarray::Array2::from_elem((3, 4), 0.5);
    let ls = LeastSquares::new(obs, data).unwrap();
    cases_for(
        &mut out,
        "pendulum",
        &pendulum,
        &ls,
        &all,
        1e-6,
        vec![0.25, 1.0, 1.7],
        1000,
    );

    let robertson = Robertson::problem(100.0).unwrap();
    let obj = WeightedSumAt::new(vec![1.0, 1e4, 0.5], 100.0);
    cases_for(
        &mut out,
        "robertson",
        &robertson,
        &obj,
        &Method::IMPLICIT,
        1e-6,
        vec![1.0, 10.0, 50.0],
        1000,
    );

    let bruss = Brusselator2D::problem(4).unwrap();
    let obj = SquaredNormAt::new(1.0);
    cases_for(
        &mut out,
        "brusselator4",
        &bruss,
        &obj,
        &[
            Method::Tsit5,
            Method::Kvaerno5,
            Method::RadauIIA5,
            Method::TrBdf2,
        ],
        1e-5,
        vec![0.1, 0.5],
        40_000,
    );
    out
}

fn to_hex(v: &[f64]) -> Vec<String> {
    v.iter().map(|x| format!("{:016x}", x.to_bits())).collect()
}

fn from_hex(v: &[String]) -> Vec<f64> {
    v.iter()
        .map(|s| f64::from_bits(u64::from_str_radix(s, 16).expect("hex bits")))
        .collect()
}

fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-12 * scale).max(1e-300))
        .fold(0.0, f64::max)
}

#[test]
fn redesign_keeps_the_bits() {
    let cases = all_cases();
    if let Ok(which) = std::env::var("ODESENS_RECORD_BITS") {
        let mut recorded: BTreeMap<String, Vec<String>> = std::fs::read_to_string(FIXTURE)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let prefixes: Vec<&str> = which.split(',').collect();
        for (k, v) in &cases {
            if which == "all" || prefixes.iter().any(|p| k.starts_with(p)) {
                recorded.insert(k.clone(), to_hex(v));
            }
        }
        std::fs::create_dir_all(std::path::Path::new(FIXTURE).parent().unwrap()).unwrap();
        std::fs::write(FIXTURE, serde_json::to_string_pretty(&recorded).unwrap()).unwrap();
        println!("recorded into {FIXTURE}");
        return;
    }
    let text = std::fs::read_to_string(FIXTURE).expect("the committed fixture");
    let recorded: BTreeMap<String, Vec<String>> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        recorded.keys().collect::<Vec<_>>(),
        cases.keys().collect::<Vec<_>>(),
        "the same cases"
    );
    let mut failures = Vec::new();
    for (key, now) in &cases {
        let before = from_hex(&recorded[key]);
        let same = before.len() == now.len()
            && before
                .iter()
                .zip(now)
                .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            failures.push(format!(
                "{key}: max relative change {:.3e}",
                max_rel(&before, now)
            ));
        }
    }
    println!("{} cases compared", cases.len());
    assert!(failures.is_empty(), "bits changed: {failures:#?}");
}
