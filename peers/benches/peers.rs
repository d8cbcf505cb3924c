//! Side by side with diffsol (crates.io, 0.18), in one run on one machine, at matched *achieved* error:
//! each library's work–precision curve (median time per solve against the error it achieved, over a
//! sweep of tolerances) is interpolated in log–log at common target errors, and the report gives
//! odesens time / diffsol time there.
//!
//! - Double pendulum (benchmark set-up, t ∈ [0, 10], error = max |u(10) − reference|): odesens Tsit5,
//!   Vern7, Vern9 against diffsol's tsit45, targets 1e-6 … 1e-10.
//! - Double pendulum, ∂θ1(10)/∂p for its 5 parameters by forward sensitivities (error = max deviation from
//!   a Vern9 1e-13 reference over max |∂θ1/∂p|): odesens Tsit5 and Vern9 against diffsol's tsit45
//!   sensitivities, targets 1e-5 … 1e-9; and the same gradient by adjoints (odesens' discrete adjoint
//!   against diffsol's checkpointed continuous adjoint, both with the model's hand-written vjp).
//! - Robertson to t = 1e5 (atol = 1e-6·rtol, error = max relative error against the Bari reference):
//!   odesens RadauIIA5, Kvaerno5, BDF and NDF against diffsol's BDF (nalgebra LU) and esdirk34, targets
//!   1e-5 … 1e-8.
//! - Method-of-lines PDEs (error = max |u(t_end) − reference| / max |reference|): the 2-D Brusselator
//!   (SciML's BrussScaling set-up) at N = 16, 32, 64 (512, 2,048, 8,192 states; reference odesens Radau
//!   IIA5 at 1e-12) and the 2-D heat equation on 32 × 32 interior points (exact semi-discrete solution):
//!   odesens BDF, RadauIIA5, Kvaerno5 and TRBDF2 with sparse LU against diffsol's BDF with faer sparse
//!   LU (and, for the Brusselator N = 16, with nalgebra dense LU), targets 1e-5 … 1e-8.
//!
//! Both libraries evaluate the same model code: diffsol's closures call the odesens model's `rhs` (and
//! its forward-mode AD for the Jacobian–vector product diffsol asks for). Timings are interleaved medians
//! (each round runs every configuration once). Adjoints are compared on the double pendulum only.
//!
//! Run: `cargo bench -p odesens-peers --bench peers` (writes `data/benchmarks/peers.json`);
//! `ODESENS_PEERS_STUDY=robertson` (or a comma-separated list) runs only those studies.

use std::hint::black_box;
use std::time::Instant;

use std::cell::RefCell;

use diffsol::{
    AdjointOdeSolverMethod, FaerSparseLU, FaerSparseMat, MatrixCommon, NalgebraLU, NalgebraMat,
    OdeBuilder, OdeSolverMethod, OdeSolverState, Op, SensitivitiesOdeSolverMethod,
};
use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::Dual64;
use odesens::models::compare::rel_diff_max_norm;
use odesens::models::{Brusselator2D, DoublePendulum, Heat2D, Robertson};
use odesens::prelude::*;
use odesens::sensitivity::derivatives::Derivatives;

#[path = "../../benches/common/mod.rs"]
mod common;

type M = NalgebraMat<f64>;
type LS = NalgebraLU<f64>;
type SparseM = FaerSparseMat<f64>;
type SparseLu = FaerSparseLU<f64>;

/// f(u) of an odesens model at f64.
fn rhs<S: OdeSystem>(model: &S, p: &[f64], t: f64, x: &[f64], y: &mut [f64]) {
    model.rhs(
        t,
        ArrayView1::from(x),
        ArrayView1::from(p),
        ArrayViewMut1::from(y),
    );
}

/// J(u)·v of an odesens model by one dual pass (stack buffers: no allocation per call).
fn jvp<S: OdeSystem>(model: &S, p: &[f64], t: f64, x: &[f64], v: &[f64], y: &mut [f64]) {
    jvp_full(model, p, t, x, v, &[0.0; MAX_DIM][..p.len()], y);
}

/// A diffsol solve of `model` from `u0` on [0, t_end]: u(t_end) and the number of steps.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Tsit45,
    Bdf,
    Esdirk34,
}

fn diffsol_solve<S: OdeSystem + Clone + 'static>(
    model: &S,
    p: &[f64],
    u0: &[f64],
    t_end: f64,
    rtol: f64,
    atol: &[f64],
    peer: Peer,
) -> Vec<f64> {
    let n = u0.len();
    let (m1, m2, p1, p2, init) = (
        model.clone(),
        model.clone(),
        p.to_vec(),
        p.to_vec(),
        u0.to_vec(),
    );
    let problem = OdeBuilder::<M>::new()
        .rtol(rtol)
        .atol(atol.to_vec())
        .rhs_implicit(
            move |x: &[f64], _p: &[f64], t: f64, y: &mut [f64]| rhs(&m1, &p1, t, x, y),
            move |x: &[f64], _p: &[f64], t: f64, v: &[f64], y: &mut [f64]| {
                jvp(&m2, &p2, t, x, v, y)
            },
        )
        .init(
            move |_p: &[f64], _t: f64, y: &mut [f64]| y.copy_from_slice(&init),
            n,
        )
        .build()
        .expect("diffsol problem");
    let (ys, _ts, _) = match peer {
        Peer::Tsit45 => problem.tsit45().expect("tsit45").solve(t_end),
        Peer::Bdf => problem.bdf::<LS>().expect("bdf").solve(t_end),
        Peer::Esdirk34 => problem.esdirk34::<LS>().expect("esdirk34").solve(t_end),
    }
    .expect("diffsol solve");
    let last = ys.ncols() - 1;
    (0..n).map(|i| ys[(i, last)]).collect()
}

/// Largest state or parameter count of the models compared here (stack buffers).
const MAX_DIM: usize = 16;

/// J(u)·v + f_p·w of an odesens model by one dual pass, on stack buffers (the closures diffsol calls
/// must not pay for allocations the odesens side does not make).
fn jvp_full<S: OdeSystem>(
    model: &S,
    p: &[f64],
    t: f64,
    x: &[f64],
    v: &[f64],
    w: &[f64],
    y: &mut [f64],
) {
    let (n, np) = (x.len(), p.len());
    assert!(
        n <= MAX_DIM && np <= MAX_DIM,
        "peers bench models are small"
    );
    let mut xd = [Dual64::from(0.0); MAX_DIM];
    let mut pd = [Dual64::from(0.0); MAX_DIM];
    let mut yd = [Dual64::from(0.0); MAX_DIM];
    for i in 0..n {
        xd[i] = Dual64::new(x[i], v[i]);
    }
    for k in 0..np {
        pd[k] = Dual64::new(p[k], w[k]);
    }
    model.rhs(
        Dual64::from(t),
        ArrayView1::from(&xd[..n]),
        ArrayView1::from(&pd[..np]),
        ArrayViewMut1::from(&mut yd[..n]),
    );
    for (o, d) in y.iter_mut().zip(&yd[..n]) {
        *o = d.eps;
    }
}

/// diffsol's forward sensitivities (tsit45) of u_0(t_end) with respect to every parameter.
fn diffsol_forward<S: OdeSystem + Clone + 'static>(
    model: &S,
    p: &[f64],
    u0: &[f64],
    t_end: f64,
    tol: f64,
) -> Vec<f64> {
    let (n, np) = (u0.len(), p.len());
    let (m1, m2, m3, init) = (model.clone(), model.clone(), model.clone(), u0.to_vec());
    let problem = OdeBuilder::<M>::new()
        .rtol(tol)
        .atol(vec![tol; n])
        .p(p.to_vec())
        .rhs_sens_implicit(
            move |x: &[f64], p: &[f64], t: f64, y: &mut [f64]| rhs(&m1, p, t, x, y),
            move |x: &[f64], p: &[f64], t: f64, v: &[f64], y: &mut [f64]| {
                jvp_full(&m2, p, t, x, v, &[0.0; MAX_DIM][..p.len()], y)
            },
            move |x: &[f64], p: &[f64], t: f64, w: &[f64], y: &mut [f64]| {
                jvp_full(&m3, p, t, x, &[0.0; MAX_DIM][..x.len()], w, y)
            },
        )
        .init_sens(
            move |_p: &[f64], _t: f64, y: &mut [f64]| y.copy_from_slice(&init),
            |_p: &[f64], _t: f64, _v: &[f64], y: &mut [f64]| y.iter_mut().for_each(|x| *x = 0.0),
            n,
        )
        .build()
        .expect("diffsol problem");
    let (_ys, sens, _) = problem
        .tsit45_sens()
        .expect("tsit45_sens")
        .solve_dense_sensitivities(&[t_end])
        .expect("diffsol sensitivities");
    (0..np).map(|k| sens[k][(0, 0)]).collect()
}

/// diffsol's adjoint (tsit45 forward with checkpointing, tsit45 backward) of u_0(t_end) with respect to
/// every parameter. Its closures get λᵀf_u and λᵀf_p from `Derivatives::vjp_add`, i.e. the model's own
/// vjp — the same one the odesens adjoint uses (diffsol wants them negated).
fn diffsol_adjoint<S: OdeSystem + Clone + 'static>(
    model: &'static S,
    p: &[f64],
    u0: &[f64],
    t_end: f64,
    tol: f64,
) -> Vec<f64> {
    let (n, np) = (u0.len(), p.len());
    let (m1, m2, init) = (model.clone(), model.clone(), u0.to_vec());
    let vjp = std::rc::Rc::new(RefCell::new((
        Derivatives::new(model),
        vec![0.0; n],
        vec![0.0; np],
    )));
    let (vjp_u, vjp_p) = (vjp.clone(), vjp);
    let problem = OdeBuilder::<M>::new()
        .rtol(tol)
        .atol(vec![tol; n])
        .p(p.to_vec())
        .rhs_adjoint_implicit(
            move |x: &[f64], p: &[f64], t: f64, y: &mut [f64]| rhs(&m1, p, t, x, y),
            move |x: &[f64], p: &[f64], t: f64, v: &[f64], y: &mut [f64]| jvp(&m2, p, t, x, v, y),
            move |x: &[f64], p: &[f64], t: f64, v: &[f64], y: &mut [f64]| {
                let mut guard = vjp_u.borrow_mut();
                let (der, ub, pb) = &mut *guard;
                ub.iter_mut().for_each(|z| *z = 0.0);
                pb.iter_mut().for_each(|z| *z = 0.0);
                der.vjp_add(t, x, p, v, ub, pb);
                for (o, z) in y.iter_mut().zip(ub.iter()) {
                    *o = -z;
                }
            },
            move |x: &[f64], p: &[f64], t: f64, v: &[f64], y: &mut [f64]| {
                let mut guard = vjp_p.borrow_mut();
                let (der, ub, pb) = &mut *guard;
                ub.iter_mut().for_each(|z| *z = 0.0);
                pb.iter_mut().for_each(|z| *z = 0.0);
                der.vjp_add(t, x, p, v, ub, pb);
                for (o, z) in y.iter_mut().zip(pb.iter()) {
                    *o = -z;
                }
            },
        )
        .init_adjoint(
            move |_p: &[f64], _t: f64, y: &mut [f64]| y.copy_from_slice(&init),
            |_p: &[f64], _t: f64, _v: &[f64], y: &mut [f64]| y.iter_mut().for_each(|z| *z = 0.0),
            n,
        )
        .build()
        .expect("diffsol problem");
    let mut forward = problem.tsit45().expect("tsit45");
    let (checkpointer, _ys, _) = forward
        .solve_dense_with_checkpointing(&[t_end], None)
        .expect("forward with checkpoints");
    let backward = problem
        .tsit45_solver_adjoint(checkpointer, Some(forward), Some(1))
        .expect("adjoint solver");
    let mut e0 = vec![0.0; n];
    e0[0] = 1.0;
    let ctx = *problem.eqn.context();
    let dgdu = <M as diffsol::DenseMatrix>::from_vec(n, 1, e0, ctx);
    let (state, _) = backward
        .solve_adjoint_backwards_pass(&[t_end], &[&dgdu])
        .expect("backward pass");
    let sg = state.as_ref().sg;
    (0..np).map(|k| sg[k]).collect()
}

/// One configuration of a work–precision sweep.
struct Config {
    library: &'static str,
    method: &'static str,
    tol: f64,
    run: Box<dyn Fn() -> Vec<f64>>,
}

/// An odesens solve of `problem` with `opts` (its method's name, the sweep's tolerance), returning
/// u(t_end).
fn odesens_solve<S: OdeSystem + Clone + 'static>(
    problem: &OdeProblem<S>,
    opts: SolverOptions,
    tol: f64,
) -> Config {
    let prob = problem.clone();
    Config {
        library: "odesens",
        method: opts.method.name(),
        tol,
        run: Box::new(move || solve(&prob, &opts).expect("solve").u_end.to_vec()),
    }
}

/// Interleaved median times (s) of every configuration: rounds until `min_seconds` and `min_rounds`.
fn interleaved(configs: &[Config], min_rounds: usize, min_seconds: f64) -> Vec<f64> {
    let start = Instant::now();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut rounds = 0;
    while rounds < min_rounds || (start.elapsed().as_secs_f64() < min_seconds && rounds < 1001) {
        for (c, t) in configs.iter().zip(times.iter_mut()) {
            let s = Instant::now();
            black_box((c.run)());
            t.push(s.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

/// log-log interpolation of time at `target` error on a curve of (error, time) points; `None` outside.
fn time_at(curve: &[(f64, f64)], target: f64) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = curve
        .iter()
        .filter(|p| p.0 > 0.0 && p.0.is_finite())
        .map(|&(e, t)| (e.ln(), t.ln()))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x = target.ln();
    pts.windows(2).find_map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        (x >= x0 && x <= x1 && x1 > x0).then(|| (y0 + (y1 - y0) * (x - x0) / (x1 - x0)).exp())
    })
}

/// The error of a solve's u(t_end).
type ErrorFn = Box<dyn Fn(&[f64]) -> f64>;

struct Study {
    name: &'static str,
    configs: Vec<Config>,
    error: ErrorFn,
    targets: Vec<f64>,
    pairs: Vec<(&'static str, &'static str)>,
}

fn pendulum_study() -> Study {
    let problem = DoublePendulum::bench_problem();
    let (p, u0) = (problem.params().to_vec(), problem.u0().to_vec());
    let mut configs = Vec::new();
    for tol in [1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13] {
        for method in [Method::Tsit5, Method::Vern7, Method::Vern9] {
            let opts = SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only();
            configs.push(odesens_solve(&problem, opts, tol));
        }
        let (pp, uu) = (p.clone(), u0.clone());
        configs.push(Config {
            library: "diffsol",
            method: "tsit45",
            tol,
            run: Box::new(move || {
                diffsol_solve(
                    &DoublePendulum,
                    &pp,
                    &uu,
                    10.0,
                    tol,
                    &[tol; 4],
                    Peer::Tsit45,
                )
            }),
        });
    }
    Study {
        name: "double_pendulum",
        configs,
        error: Box::new(DoublePendulum::bench_error),
        targets: vec![1e-6, 1e-7, 1e-8, 1e-9, 1e-10],
        pairs: vec![
            ("Tsit5", "tsit45"),
            ("Vern7", "tsit45"),
            ("Vern9", "tsit45"),
        ],
    }
}

/// A gradient computation of odesens: ∂θ1(10)/∂p for a problem and options.
type OursFn<S> = fn(&OdeProblem<S>, &SolverOptions) -> Vec<f64>;
/// diffsol's counterpart: (model, p, u0, t_end, tol) → ∂u_0(t_end)/∂p.
type TheirsFn<S> = fn(&'static S, &[f64], &[f64], f64, f64) -> Vec<f64>;

/// ∂θ1(10)/∂p of the double pendulum (5 parameters): odesens Tsit5 and Vern9 against diffsol's tsit45,
/// error = max deviation from a Vern9 1e-13 reference over max |∂θ1/∂p|.
fn pendulum_gradient_study<S: OdeSystem + Clone + 'static>(
    name: &'static str,
    model: &'static S,
    ours: OursFn<S>,
    theirs: TheirsFn<S>,
    targets: Vec<f64>,
) -> Study {
    use odesens::sensitivity::{ComponentAt, Directions, forward_directional_derivatives};
    let problem = DoublePendulum::bench_problem_with(model.clone());
    let (p, u0) = (problem.params().to_vec(), problem.u0().to_vec());
    let reference = forward_directional_derivatives(
        &problem,
        &SolverOptions::default().method(Method::Vern9).tol(1e-13),
        &ComponentAt::new(0, 10.0),
        &Directions::Parameters,
    )
    .expect("reference")
    .derivatives
    .to_vec();
    let mut configs = Vec::new();
    for tol in [1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12] {
        for method in [Method::Tsit5, Method::Vern9] {
            let prob = problem.clone();
            let opts = SolverOptions::default().method(method).tol(tol);
            configs.push(Config {
                library: "odesens",
                method: method.name(),
                tol,
                run: Box::new(move || ours(&prob, &opts)),
            });
        }
        let (pp, uu) = (p.clone(), u0.clone());
        configs.push(Config {
            library: "diffsol",
            method: "tsit45",
            tol,
            run: Box::new(move || theirs(model, &pp, &uu, 10.0, tol)),
        });
    }
    let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    Study {
        name,
        configs,
        error: Box::new(move |g| {
            g.iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
                / scale
        }),
        targets,
        pairs: vec![("Tsit5", "tsit45"), ("Vern9", "tsit45")],
    }
}

/// By forward sensitivities (AD jvps in both libraries).
fn pendulum_forward_study() -> Study {
    use odesens::sensitivity::{ComponentAt, Directions, forward_directional_derivatives};
    pendulum_gradient_study(
        "double_pendulum_forward_sensitivities",
        &DoublePendulum,
        |prob, opts| {
            forward_directional_derivatives(
                prob,
                opts,
                &ComponentAt::new(0, 10.0),
                &Directions::Parameters,
            )
            .expect("forward")
            .derivatives
            .to_vec()
        },
        diffsol_forward,
        vec![1e-5, 1e-6, 1e-7, 1e-8, 1e-9],
    )
}

/// By adjoints, both libraries with the model's hand-written vjp.
fn pendulum_adjoint_study() -> Study {
    use odesens::models::DoublePendulumWithVjp;
    use odesens::sensitivity::{Checkpointing, ComponentAt, SensitivityAlgorithm, gradient};
    pendulum_gradient_study(
        "double_pendulum_adjoint",
        &DoublePendulumWithVjp,
        |prob, opts| {
            gradient(
                prob,
                opts,
                &ComponentAt::new(0, 10.0),
                &SensitivityAlgorithm::adjoint(Checkpointing::KeepAll),
            )
            .expect("adjoint")
            .wrt_params
            .to_vec()
        },
        diffsol_adjoint,
        vec![1e-4, 1e-5, 1e-6, 1e-7, 1e-8],
    )
}

fn robertson_study() -> Study {
    let (t_end, reference) = Robertson::REFERENCE[0];
    let problem = Robertson::problem(t_end).expect("valid");
    let (p, u0) = (problem.params().to_vec(), problem.u0().to_vec());
    let mut configs = Vec::new();
    for tol in [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10] {
        let atol = tol * 1e-6;
        for method in [
            Method::RadauIIA5,
            Method::Kvaerno5,
            Method::Bdf,
            Method::Ndf,
        ] {
            let opts = SolverOptions::default()
                .method(method)
                .rtol(tol)
                .atol(atol)
                .save_end_only()
                .max_steps(1_000_000);
            configs.push(odesens_solve(&problem, opts, tol));
        }
        for (peer, name) in [(Peer::Bdf, "bdf"), (Peer::Esdirk34, "esdirk34")] {
            let (pp, uu) = (p.clone(), u0.clone());
            configs.push(Config {
                library: "diffsol",
                method: name,
                tol,
                run: Box::new(move || {
                    diffsol_solve(&Robertson, &pp, &uu, t_end, tol, &[atol; 3], peer)
                }),
            });
        }
    }
    Study {
        name: "robertson",
        configs,
        error: Box::new(move |u| {
            u.iter()
                .zip(reference)
                .map(|(a, b)| ((a - b) / b).abs())
                .fold(0.0, f64::max)
        }),
        targets: vec![1e-5, 1e-6, 1e-7, 1e-8],
        pairs: vec![
            ("RadauIIA5", "bdf"),
            ("Kvaerno5", "bdf"),
            ("BDF", "bdf"),
            ("NDF", "bdf"),
            ("RadauIIA5", "esdirk34"),
        ],
    }
}

/// A diffsol solver of a large model (a method-of-lines PDE) as a timed configuration's closure. The
/// Jacobian–vector product diffsol asks for is the odesens `Derivatives::jvp` (one `Dual64` pass on
/// buffers made once); the matrix type and linear solver are diffsol's dense nalgebra LU or sparse faer
/// LU. The diffsol problem is built once, outside the timed closure: for a sparse matrix type its
/// builder finds the Jacobian pattern by a NaN probe of n Jacobian–vector products over all n states,
/// and colours it, a set-up a user pays once for many solves (odesens colours the pattern its model
/// declares inside every `solve`, which is O(nonzeros)).
macro_rules! diffsol_pde {
    ($mat:ty, $ls:ty, $model:expr, $p:expr, $u0:expr, $t_end:expr, $tol:expr) => {{
        let model: &'static _ = $model;
        let (p, u0, t_end, tol): (&[f64], &[f64], f64, f64) = ($p, $u0, $t_end, $tol);
        let n = u0.len();
        let (p1, init) = (p.to_vec(), u0.to_vec());
        let ad = RefCell::new((Derivatives::new(model), p.to_vec(), vec![0.0; p.len()]));
        let problem = OdeBuilder::<$mat>::new()
            .rtol(tol)
            .atol(vec![tol; n])
            .rhs_implicit(
                move |x: &[f64], _p: &[f64], t: f64, y: &mut [f64]| rhs(model, &p1, t, x, y),
                move |x: &[f64], _p: &[f64], t: f64, v: &[f64], y: &mut [f64]| {
                    let mut guard = ad.borrow_mut();
                    let (der, p, w) = &mut *guard;
                    der.jvp(t, x, p, v, w, y)
                },
            )
            .init(
                move |_p: &[f64], _t: f64, y: &mut [f64]| y.copy_from_slice(&init),
                n,
            )
            .build()
            .expect("diffsol problem");
        Box::new(move || {
            let (ys, _ts, _) = problem
                .bdf::<$ls>()
                .expect("bdf")
                .solve(t_end)
                .expect("diffsol solve");
            let last = ys.ncols() - 1;
            (0..n).map(|i| ys[(i, last)]).collect::<Vec<f64>>()
        }) as Box<dyn Fn() -> Vec<f64>>
    }};
}

/// A method-of-lines study: odesens' implicit methods with sparse LU against diffsol's BDF with sparse
/// LU (and, below `dense_limit` states, with dense LU), error = max |u(t_end) − reference| / max
/// |reference|.
fn pde_study<S: OdeSystem + Clone + 'static>(
    name: &'static str,
    problem: OdeProblem<S>,
    reference: Vec<f64>,
    tols: &[f64],
    targets: Vec<f64>,
    dense_limit: usize,
) -> Study {
    let model: &'static S = Box::leak(Box::new(problem.model().clone()));
    let (p, u0, t_end) = (
        problem.params().to_vec(),
        problem.u0().to_vec(),
        problem.t_end(),
    );
    let dense = u0.len() <= dense_limit;
    let mut configs = Vec::new();
    for &tol in tols {
        for method in [
            Method::Bdf,
            Method::RadauIIA5,
            Method::Kvaerno5,
            Method::TrBdf2,
        ] {
            let opts = SolverOptions::default()
                .method(method)
                .tol(tol)
                .linear_solver(odesens::LinearSolverKind::Sparse)
                .save_end_only()
                .max_steps(1_000_000);
            configs.push(odesens_solve(&problem, opts, tol));
        }
        configs.push(Config {
            library: "diffsol",
            method: "bdf-sparse",
            tol,
            run: diffsol_pde!(SparseM, SparseLu, model, &p, &u0, t_end, tol),
        });
        if dense {
            configs.push(Config {
                library: "diffsol",
                method: "bdf-dense",
                tol,
                run: diffsol_pde!(M, LS, model, &p, &u0, t_end, tol),
            });
        }
    }
    let mut pairs = vec![
        ("BDF", "bdf-sparse"),
        ("RadauIIA5", "bdf-sparse"),
        ("Kvaerno5", "bdf-sparse"),
        ("TRBDF2", "bdf-sparse"),
    ];
    if dense {
        pairs.push(("BDF", "bdf-dense"));
    }
    Study {
        name,
        configs,
        error: Box::new(move |u| rel_diff_max_norm(u, &reference)),
        targets,
        pairs,
    }
}

/// The 2-D Brusselator (SciML's BrussScaling set-up, 2N² states, t ∈ [0, 1]); the reference is odesens'
/// Radau IIA5 at rtol = atol = 1e-12.
fn brusselator_study(n: usize, name: &'static str) -> Study {
    let problem = Brusselator2D::problem(n).expect("valid");
    let reference = solve(
        &problem,
        &SolverOptions::default()
            .method(Method::RadauIIA5)
            .tol(1e-12)
            .linear_solver(odesens::LinearSolverKind::Sparse)
            .save_end_only(),
    )
    .expect("reference")
    .u_end
    .to_vec();
    pde_study(
        name,
        problem,
        reference,
        &[1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9],
        vec![1e-5, 1e-6, 1e-7, 1e-8],
        600,
    )
}

fn brusselator_16_study() -> Study {
    brusselator_study(16, "brusselator_16")
}

fn brusselator_32_study() -> Study {
    brusselator_study(32, "brusselator_32")
}

fn brusselator_64_study() -> Study {
    brusselator_study(64, "brusselator_64")
}

/// The 2-D heat equation on a 32 × 32 interior grid (1,024 states) from its slowest Dirichlet eigenmode,
/// t ∈ [0, 0.1]: the semi-discrete solution is e^{μt} φ exactly ([`Heat2D::mode_factor`]).
fn heat_study() -> Study {
    let n = 32;
    let t_end = 0.1;
    let problem = Heat2D::problem(n, t_end).expect("valid");
    let factor = Heat2D::mode_factor(n, 1.0, t_end);
    let reference = Heat2D::mode(n).iter().map(|x| x * factor).collect();
    pde_study(
        "heat2d_32",
        problem,
        reference,
        &[1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10],
        vec![1e-5, 1e-6, 1e-7, 1e-8],
        // diffsol's dense LU at 1,024 states costs 1–2 s a solve (measured), 40× its sparse LU.
        0,
    )
}

fn main() {
    let quick = common::test_mode();
    // ODESENS_PEERS_STUDY=name[,name] runs only those studies (the report is then not written).
    let only = std::env::var("ODESENS_PEERS_STUDY").ok();
    let mut report = Vec::new();
    type MakeStudy = fn() -> Study;
    let studies: [(&str, MakeStudy); 8] = [
        ("pendulum", pendulum_study),
        ("pendulum_forward", pendulum_forward_study),
        ("pendulum_adjoint", pendulum_adjoint_study),
        ("robertson", robertson_study),
        ("brusselator_16", brusselator_16_study),
        ("brusselator_32", brusselator_32_study),
        ("heat2d_32", heat_study),
        ("brusselator_64", brusselator_64_study),
    ];
    for (key, make) in studies {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|s| s == key))
        {
            continue;
        }
        let study = make();
        let errors: Vec<f64> = study
            .configs
            .iter()
            .map(|c| (study.error)(&(c.run)()))
            .collect();
        let (rounds, seconds) = if quick { (1, 0.0) } else { (5, 20.0) };
        let times = interleaved(&study.configs, rounds, seconds);
        println!("\n{}: median time per solve and achieved error", study.name);
        let mut rows = Vec::new();
        for ((c, e), t) in study.configs.iter().zip(&errors).zip(&times) {
            println!(
                "  {:<8} {:<10} tol {:.0e}: {:>10.1} µs, error {e:.2e}",
                c.library,
                c.method,
                c.tol,
                t * 1e6
            );
            rows.push(serde_json::json!({
                "library": c.library, "method": c.method, "tol": c.tol,
                "median_time_s": t, "error": e,
            }));
        }
        let curve = |lib: &str, method: &str| -> Vec<(f64, f64)> {
            study
                .configs
                .iter()
                .zip(&errors)
                .zip(&times)
                .filter(|((c, _), _)| c.library == lib && c.method == method)
                .map(|((_, &e), &t)| (e, t))
                .collect()
        };
        let mut ratios = Vec::new();
        for &(ours, theirs) in &study.pairs {
            let (a, b) = (curve("odesens", ours), curve("diffsol", theirs));
            for &target in &study.targets {
                let ratio = match (time_at(&a, target), time_at(&b, target)) {
                    (Some(x), Some(y)) => Some(x / y),
                    _ => None,
                };
                println!(
                    "  at error {target:.0e}: odesens {ours} / diffsol {theirs} = {}",
                    ratio.map_or("outside both sweeps".to_string(), |r| format!("{r:.2}"))
                );
                ratios.push(serde_json::json!({
                    "odesens": ours, "diffsol": theirs, "error": target, "time_ratio": ratio,
                }));
            }
        }
        report.push(serde_json::json!({
            "problem": study.name, "rows": rows, "ratios_at_matched_error": ratios,
        }));
    }
    if !quick && only.is_none() {
        common::write_report(
            "peers.json",
            &serde_json::json!({
                "peer": "diffsol 0.18 (nalgebra), closures calling the odesens models",
                "command": "cargo bench -p odesens-peers --bench peers",
                "studies": report,
            }),
        );
    }
}
