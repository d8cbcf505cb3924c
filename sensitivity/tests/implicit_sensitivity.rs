//! Derivatives of implicit solves: the exact discrete adjoint against forward tangents (both exact for
//! the discrete scheme, so they must agree to the stage solves' accuracy), both against finite
//! differences, and every checkpointing policy against keep-all, on the stiff Robertson kinetics, the
//! 20-species POLLU kinetics and the stiff Van der Pol oscillator.

use odesens_models::compare::rel_diff_max_norm;
use odesens_models::{Pollu, Robertson, VanDerPol};
use odesens_sensitivity::{
    AdjointSettings, Checkpointing, ComponentAt, Directions, ForwardSettings, IntegralOfSquare,
    LeastSquares, Objective, SensitivityAlgorithm, SquaredNormAt, check_gradient,
    forward_sensitivities, gradient,
};
use odesens_solver::*;

const IMPLICIT: [Method; 3] = [Method::Kvaerno5, Method::TrBdf2, Method::RadauIIA5];

/// The Runge–Kutta methods above and the multistep BDF and NDF.
fn implicit_methods() -> impl Iterator<Item = Method> {
    IMPLICIT.into_iter().chain(Method::MULTISTEP)
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().chain(b).fold(0.0f64, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-9 * scale))
        .fold(0.0, f64::max)
}

/// Robertson to t = 1e5 (the stiff regime), the value of y1 at several times.
fn robertson_case() -> (OdeProblem<Robertson>, LeastSquares) {
    let times = vec![1.0, 10.0, 1e3, 1e5];
    let data = ndarray::Array2::zeros((times.len(), 3));
    (
        Robertson::problem(1e5).unwrap(),
        LeastSquares::new(times, data).unwrap(),
    )
}

/// Van der Pol from (2, 0) with parameter μ on [0, t_end].
fn van_der_pol(mu: f64, t_end: f64) -> OdeProblem<VanDerPol> {
    OdeProblem::new(VanDerPol, vec![2.0, 0.0], vec![mu], (0.0, t_end)).unwrap()
}

fn options(method: Method, tol: f64) -> SolverOptions {
    SolverOptions::default()
        .method(method)
        .tol(tol)
        .max_steps(1_000_000)
}

fn compare<M: OdeSystem + Clone, O: Objective>(
    name: &str,
    problem: &OdeProblem<M>,
    objective: &O,
    method: Method,
    tol: f64,
) {
    // Finite differences carry the solver's error over δ: looser for the second-order TR-BDF2, whose
    // solution at rtol 1e-10 is still 1e-3 off through Van der Pol's transitions (1.5e-3 measured).
    let fd_tol = if method == Method::TrBdf2 { 3e-3 } else { 1e-4 };
    let opts = options(method, tol);
    let adj = gradient(
        problem,
        &opts,
        objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let fwd = gradient(problem, &opts, objective, &SensitivityAlgorithm::Forward).unwrap();
    let diff = max_rel_diff(&adj.to_vec(), &fwd.to_vec());
    assert_eq!(adj.value, fwd.value);
    // Finite differences of the whole adaptive solve, tighter tolerance for the perturbed solves.
    // (The fifth-order method affords 1e-12; TR-BDF2 stays at 1e-10.)
    let fd_tol_solve = if method == Method::TrBdf2 {
        tol * 1e-2
    } else {
        tol * 1e-4
    };
    let fd_opts = options(method, fd_tol_solve);
    let fd_grad = gradient(
        problem,
        &fd_opts,
        objective,
        &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
    )
    .unwrap();
    let check = check_gradient(problem, &fd_opts, objective, &fd_grad, Some(1e-5)).unwrap();
    // Against the gradient's size: a component much smaller than the others (∂G/∂u2(0) of Van der Pol,
    // damped by the initial layer) has finite differences dominated by the solves' error over δ.
    let fd: Vec<f64> = check
        .fd_params
        .iter()
        .chain(&check.fd_u0)
        .copied()
        .collect();
    let g = fd_grad.to_vec();
    let size = g.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let fd_err = g
        .iter()
        .zip(&fd)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / size;
    println!(
        "{name} {} tol {tol:.0e}: G = {:.10e}, adjoint vs forward {diff:.1e}, vs FD {fd_err:.1e} (of max |∂G|; per component up to {:.1e}); {} steps, \
         {} exact stage factorizations, {} vjps, {} jvps",
        method.name(),
        adj.value,
        check.max_rel_error,
        adj.stats.forward.accepted_steps,
        adj.stats.exact_stage_factorizations,
        adj.stats.derivatives.vjp,
        fwd.stats.derivatives.jvp,
    );
    println!(
        "  FD relative errors: params {:.1e}, u0 {:.1e}",
        check.rel_error_params, check.rel_error_u0
    );
    assert!(diff < 1e-8, "{name} {}: {diff:e}", method.name());
    assert!(fd_err < fd_tol, "{name} {}: FD {fd_err:e}", method.name());
}

#[test]
fn robertson_adjoint_matches_forward_and_finite_differences() {
    let (problem, objective) = robertson_case();
    for method in implicit_methods() {
        compare("Robertson", &problem, &objective, method, 1e-8);
    }
}

#[test]
fn pollu_adjoint_matches_forward_and_finite_differences() {
    // Ozone at t = 60 min, differentiated with respect to the 25 rate constants (1.3e-4 … 4.44e11) and
    // the 20 initial concentrations. The inputs span 15 orders of magnitude, so the errors are judged on
    // the logarithmic sensitivities x ∂G/∂x / G (the relative change of G per relative change of x) and,
    // component by component, on the influential inputs (|x ∂G/∂x| ≥ 1e-3 |G|); an input such as the
    // initial CO, on which ozone does not depend at all, has a derivative of round-off size.
    // `compare`'s finite differences step by 1e-5·max(|x|, 1), larger than most of these rate constants
    // and concentrations (a zero concentration stepped to −1e-5 drives the kinetics out of their
    // physical range), so here each rate constant and non-zero initial concentration steps by 1e-4 of
    // itself.
    let problem = Pollu::problem(Pollu::T_END).unwrap();
    let objective = ComponentAt::new(3, Pollu::T_END);
    // The inputs, rate constants then initial concentrations, as one vector.
    let np = Pollu::PARAMS.len();
    let inputs: Vec<f64> = Pollu::PARAMS.iter().chain(&Pollu::Y0).copied().collect();
    // Ozone at t = 60 with input j set to x.
    let ozone = |j: usize, x: f64, opts: &SolverOptions| -> f64 {
        let mut v = inputs.clone();
        v[j] = x;
        let (p, u0) = v.split_at(np);
        let prob = OdeProblem::new(Pollu, u0.to_vec(), p.to_vec(), (0.0, Pollu::T_END)).unwrap();
        solve(&prob, &opts.clone().save_end_only()).unwrap().u_end[3]
    };
    for method in [
        Method::Bdf,
        Method::Ndf,
        Method::RadauIIA5,
        Method::Kvaerno5,
    ] {
        let opts = SolverOptions::default()
            .method(method)
            .rtol(1e-8)
            .atol(1e-14);
        let adj = gradient(
            &problem,
            &opts,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let fwd = gradient(&problem, &opts, &objective, &SensitivityAlgorithm::Forward).unwrap();
        let (a, f) = (adj.to_vec(), fwd.to_vec());
        let normwise = rel_diff_max_norm(&f, &a);
        let influential =
            |j: usize, g: f64, value: f64| (inputs[j] * g).abs() >= 1e-3 * value.abs();
        let componentwise = (0..a.len())
            .filter(|&j| influential(j, a[j], adj.value))
            .map(|j| ((a[j] - f[j]) / a[j]).abs())
            .fold(0.0, f64::max);

        // Central differences of solves 1e4 times tighter, against the gradient at the same tolerance.
        let tight = SolverOptions::default()
            .method(method)
            .rtol(1e-12)
            .atol(1e-18);
        let exact = gradient(
            &problem,
            &tight,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        let (g, value) = (exact.to_vec(), exact.value);
        let (mut fd_log, mut fd_rel, mut checked) = (0.0f64, 0.0f64, 0);
        for (j, &x0) in inputs.iter().enumerate() {
            if x0 == 0.0 {
                continue;
            }
            let delta = 1e-4 * x0;
            let fd = (ozone(j, x0 + delta, &tight) - ozone(j, x0 - delta, &tight)) / (2.0 * delta);
            fd_log = fd_log.max((x0 * (fd - g[j]) / value).abs());
            if influential(j, g[j], value) {
                fd_rel = fd_rel.max(((fd - g[j]) / g[j]).abs());
            }
            checked += 1;
        }
        println!(
            "POLLU {}: ozone(60) = {:.10e}; adjoint vs forward {normwise:.1e} of max |∂G|, {componentwise:.1e} \
             per influential component; central differences ({checked} inputs) {fd_log:.1e} in log \
             sensitivity, {fd_rel:.1e} per influential component; {} steps, {} vjps, {} jvps",
            method.name(),
            adj.value,
            adj.stats.forward.accepted_steps,
            adj.stats.derivatives.vjp,
            fwd.stats.derivatives.jvp,
        );
        assert_eq!(adj.value, fwd.value);
        assert!(normwise < 1e-11, "POLLU {}: {normwise:e}", method.name());
        assert!(
            componentwise < 1e-9,
            "POLLU {}: {componentwise:e}",
            method.name()
        );
        assert_eq!(checked, 31);
        assert!(fd_log < 1e-6, "POLLU {}: FD {fd_log:e}", method.name());
        assert!(fd_rel < 1e-5, "POLLU {}: FD {fd_rel:e}", method.name());
    }
}

#[test]
fn van_der_pol_adjoint_matches_forward_and_finite_differences() {
    // μ = 1000 on the slow manifold (stiff, t ≤ 500), and μ = 100 through three fast transitions.
    // Through the transitions of μ = 1000 the derivative passes through a large transient growth and
    // round-off is amplified: adjoint and forward then agree to 1e-8 … 1e-7 only (as do two runs that
    // solve the stage systems differently), see the closing note of issue 5.
    for method in implicit_methods() {
        let slow = van_der_pol(1000.0, 500.0);
        compare(
            "VdP μ=1000 ‖u(500)‖²",
            &slow,
            &SquaredNormAt::new(500.0),
            method,
            1e-8,
        );
        compare(
            "VdP μ=1000 ∫u2²",
            &slow,
            &IntegralOfSquare::new(1),
            method,
            1e-8,
        );
        let fast = van_der_pol(100.0, 300.0);
        compare(
            "VdP μ=100 u1(300)",
            &fast,
            &ComponentAt::new(0, 300.0),
            method,
            1e-8,
        );
    }
}

#[test]
fn continuous_adjoint_of_an_implicit_solve_with_an_explicit_backward_solve() {
    // The forward segments replay with the implicit stepper (its continuous extension gives u(t)); the
    // backward solve of λ' = −f_uᵀλ is explicit. Van der Pol μ = 5 is mildly stiff: the continuous
    // gradient must agree with the exact discrete one to the tolerances, for every checkpointing.
    let problem = van_der_pol(5.0, 10.0);
    let objective = IntegralOfSquare::new(0);
    for method in implicit_methods() {
        let opts = options(method, 1e-10);
        let discrete = gradient(
            &problem,
            &opts,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        for checkpointing in [
            Checkpointing::KeepAll,
            Checkpointing::Binomial { snapshots: 2 },
        ] {
            let settings = odesens_sensitivity::ContinuousSettings {
                method: Some(Method::Tsit5),
                rtol: Some(1e-10),
                atol: Some(1e-12),
                checkpointing,
                ..Default::default()
            };
            let continuous = gradient(
                &problem,
                &opts,
                &objective,
                &SensitivityAlgorithm::InterpolatingAdjoint(settings),
            )
            .unwrap();
            let rel = max_rel_diff(&continuous.to_vec(), &discrete.to_vec());
            println!(
                "{} {checkpointing:?}: continuous vs discrete {rel:.1e}",
                method.name()
            );
            // Measured: Kvaerno5 1.2e-7, TR-BDF2 1.5e-6, Radau IIA5 6.1e-9.
            assert!(rel < 1e-5, "{}: {rel:e}", method.name());
            assert_eq!(continuous.value, discrete.value);
            assert!(continuous.backward.unwrap().segments > 1);
        }
    }
}

#[test]
fn checkpointing_policies_give_the_keep_all_gradient_bit_for_bit() {
    let (problem, objective) = robertson_case();
    for method in implicit_methods() {
        let opts = options(method, 1e-6);
        let all = gradient(
            &problem,
            &opts,
            &objective,
            &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
        )
        .unwrap();
        for policy in [
            Checkpointing::Uniform { every: 7 },
            Checkpointing::Binomial { snapshots: 5 },
            Checkpointing::Binomial { snapshots: 1 },
            Checkpointing::MemoryBudget { bytes: 1500 },
        ] {
            let g = gradient(
                &problem,
                &opts,
                &objective,
                &SensitivityAlgorithm::adjoint(policy),
            )
            .unwrap();
            assert_eq!(g.to_vec(), all.to_vec(), "{} {policy:?}", method.name());
            assert_eq!(g.value, all.value);
            assert!(g.stats.peak_snapshots < all.stats.peak_snapshots);
        }
    }
}

#[test]
fn forward_sensitivities_of_an_implicit_solve_match_finite_differences() {
    // ∂u(t)/∂μ along the stiff Van der Pol solution, by one central difference per time.
    let problem = van_der_pol(1000.0, 500.0);
    let times = [100.0, 300.0, 500.0];
    for method in [Method::Kvaerno5, Method::Bdf, Method::Ndf] {
        let opts = options(method, 1e-10);
        let sens = forward_sensitivities(
            &problem,
            &opts,
            &Directions::Parameters,
            &times,
            ForwardSettings::default(),
        )
        .unwrap();
        let delta = 1e-3;
        let shifted = |mu: f64| {
            solve(
                &van_der_pol(mu, 500.0),
                &opts.clone().save_at(times.to_vec()),
            )
            .unwrap()
        };
        let (plus, minus) = (shifted(1000.0 + delta), shifted(1000.0 - delta));
        for (k, t) in times.iter().enumerate() {
            for m in 0..2 {
                let fd = (plus.states[[k, m]] - minus.states[[k, m]]) / (2.0 * delta);
                let ad = sens.sensitivities[[k, m, 0]];
                let rel = (fd - ad).abs() / fd.abs().max(1e-6);
                println!(
                    "{} t = {t}: ∂u{m}/∂μ = {ad:.8e} (FD {fd:.8e}, {rel:.1e})",
                    method.name()
                );
                assert!(
                    rel < 1e-4,
                    "{} t = {t}, component {m}: {ad} vs {fd}",
                    method.name()
                );
            }
        }
    }
}

#[test]
fn the_adjoint_trajectory_of_an_implicit_solve_ends_at_the_gradient() {
    let (problem, objective) = robertson_case();
    for method in [Method::Kvaerno5, Method::Bdf] {
        let opts = options(method, 1e-6);
        let g = gradient(
            &problem,
            &opts,
            &objective,
            &SensitivityAlgorithm::DiscreteAdjoint(AdjointSettings {
                checkpointing: Checkpointing::KeepAll,
                record_trajectory: true,
                ..Default::default()
            }),
        )
        .unwrap();
        let traj = g.adjoint.unwrap();
        let last = traj.lambda.row(traj.lambda.nrows() - 1);
        assert_eq!(last.to_vec(), g.wrt_u0.to_vec());
        assert_eq!(traj.times[0], 1e5);
        assert_eq!(traj.times[traj.times.len() - 1], 0.0);
    }
}

#[test]
fn computations_that_support_explicit_methods_only_say_so() {
    let (problem, objective) = robertson_case();
    let opts = options(Method::Kvaerno5, 1e-6);
    let err = odesens_sensitivity::gradient(
        &problem,
        &opts,
        &objective,
        &odesens_sensitivity::SensitivityAlgorithm::BacksolveAdjoint(Default::default()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("explicit"), "{err}");
    assert!(matches!(
        err,
        odesens_sensitivity::SensitivityError::UnsupportedMethod {
            method: Method::Kvaerno5,
            ..
        }
    ));
    for method in [Method::Kvaerno5, Method::Bdf] {
        let err = odesens_sensitivity::hessian_vector_product(
            &problem,
            &options(method, 1e-6),
            &objective,
            &[0.0; 3],
            &[1.0, 0.0, 0.0],
        )
        .unwrap_err();
        assert!(matches!(
            err,
            odesens_sensitivity::SensitivityError::UnsupportedMethod { method: m, .. } if m == method
        ));
    }
    // Tangents in the error control were silently ignored for implicit methods before the StepDiff
    // redesign; now the capability check says so.
    for method in [
        Method::TrBdf2,
        Method::Kvaerno5,
        Method::RadauIIA5,
        Method::Bdf,
    ] {
        let err = odesens_sensitivity::forward_sensitivities(
            &problem,
            &options(method, 1e-6),
            &odesens_sensitivity::Directions::Parameters,
            &[problem.t_end()],
            odesens_sensitivity::ForwardSettings {
                tangent_error_control: true,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("error control"), "{err}");
        assert!(matches!(
            err,
            odesens_sensitivity::SensitivityError::UnsupportedMethod { method: m, .. } if m == method
        ));
    }
}

#[test]
fn derivatives_of_the_automatic_method_say_it_is_unsupported() {
    // Moved from the solver's auto-switching test: derivatives need a fixed method.
    let (t_end, _) = Robertson::REFERENCE[0];
    let problem = Robertson::problem(t_end).unwrap();
    let opts = SolverOptions::default()
        .method(Method::AutoTsit5Radau5)
        .rtol(1e-6)
        .atol(1e-10);
    assert!(matches!(
        odesens_sensitivity::gradient(
            &problem,
            &opts,
            &odesens_sensitivity::SquaredNormAt::new(t_end),
            &odesens_sensitivity::SensitivityAlgorithm::Forward
        ),
        Err(odesens_sensitivity::SensitivityError::UnsupportedMethod {
            method: Method::AutoTsit5Radau5,
            ..
        })
    ));
}
