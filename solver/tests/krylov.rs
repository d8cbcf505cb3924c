//! The matrix-free Newton–Krylov path (`LinearSolverKind::Gmres`) of BDF and NDF: the same answers as
//! sparse LU with every preconditioner (including a model's own), the exact solution of the heat
//! equation's eigenmode, checkpoints that replay bit for bit, and clear errors.

use ndarray::{ArrayView1, ArrayViewMut1};
use odesens_models::{Brusselator2D, Heat2D};
use odesens_solver::krylov::{Preconditioner, PreconditionerKind, PreconditionerSetup};
use odesens_solver::*;

fn gmres(preconditioner: PreconditionerKind) -> LinearSolverKind {
    LinearSolverKind::Gmres {
        restart: 20,
        preconditioner,
    }
}

fn options(method: Method, kind: LinearSolverKind, rtol: f64, atol: f64) -> SolverOptions {
    let mut o = SolverOptions::default()
        .method(method)
        .rtol(rtol)
        .atol(atol)
        .save_end_only();
    o.implicit.linear_solver = kind;
    o
}

/// Max over components of |a − b| / (atol + rtol |b|).
fn in_tolerances(a: &[f64], b: &[f64], rtol: f64, atol: f64) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (atol + rtol * y.abs()))
        .fold(0.0, f64::max)
}

const PRECONDITIONERS: [PreconditionerKind; 4] = [
    PreconditionerKind::None,
    PreconditionerKind::Ilu0,
    PreconditionerKind::BlockJacobi { block: 16 },
    PreconditionerKind::LaggedLu,
];

#[test]
fn brusselator_by_gmres_matches_sparse_lu_with_every_preconditioner() {
    let problem = Brusselator2D::problem(16).unwrap();
    let (rtol, atol) = (1e-7, 1e-9);
    // The reference: sparse LU far tighter.
    let tight = solve(
        &problem,
        &options(Method::Bdf, LinearSolverKind::Sparse, 1e-11, 1e-13),
    )
    .unwrap();
    let want = tight.u_end.as_slice().unwrap();
    for method in [Method::Bdf, Method::Ndf] {
        let lu = solve(
            &problem,
            &options(method, LinearSolverKind::Sparse, rtol, atol),
        )
        .unwrap();
        let lu_err = in_tolerances(lu.u_end.as_slice().unwrap(), want, rtol, atol);
        for pc in PRECONDITIONERS {
            let sol = solve(&problem, &options(method, gmres(pc), rtol, atol)).unwrap();
            let s = sol.stats;
            let err = in_tolerances(sol.u_end.as_slice().unwrap(), want, rtol, atol);
            println!(
                "{} {pc:?}: {err:.2} tolerances (sparse LU {lu_err:.2}); {} steps, {} Newton, {} \
                 Krylov jvps, {} J, {} set-ups, {} Newton failures",
                method.name(),
                s.accepted_steps,
                s.newton_iterations,
                s.linear_iterations,
                s.jacobian_evaluations,
                s.factorizations,
                s.newton_failures
            );
            assert!(err < 20.0, "{} {pc:?}: {err}", method.name());
            assert!(s.linear_iterations >= s.newton_iterations);
            let needs_j = pc != PreconditionerKind::None;
            assert_eq!(s.jacobian_evaluations > 0, needs_j, "{pc:?}");
        }
    }
}

#[test]
fn heat_mode_by_gmres_against_its_closed_form() {
    // u(t) = e^{μt} φ exactly for the semi-discrete equation (stiffness 8/h² ≈ 2.6e3 at N = 17).
    let n = 17;
    let t_end = 0.05;
    let problem = Heat2D::problem(n, t_end).unwrap();
    let factor = Heat2D::mode_factor(n, 1.0, t_end);
    let want: Vec<f64> = Heat2D::mode(n).iter().map(|v| v * factor).collect();
    let (rtol, atol) = (1e-8, 1e-10);
    for pc in PRECONDITIONERS {
        let sol = solve(&problem, &options(Method::Bdf, gmres(pc), rtol, atol)).unwrap();
        let err = in_tolerances(sol.u_end.as_slice().unwrap(), &want, rtol, atol);
        println!("heat {pc:?}: {err:.2} tolerances, {:?}", sol.stats);
        assert!(err < 10.0, "{pc:?}: {err}");
    }
}

/// u' = −k u + D (u_{i−1} − 2u_i + u_{i+1}) on a chain with zero ends (a 1-D heat equation with decay),
/// with its own preconditioner: the exact tridiagonal I − cJ, solved by the Thomas algorithm.
struct Chain {
    n: usize,
}

impl OdeSystem for Chain {
    fn n_states(&self) -> usize {
        self.n
    }
    fn n_params(&self) -> usize {
        2
    }
    fn rhs<S: Scalar>(&self, _t: S, u: ArrayView1<S>, p: ArrayView1<S>, mut du: ArrayViewMut1<S>) {
        let n = self.n;
        let zero = S::from(0.0);
        for i in 0..n {
            let left = if i > 0 { u[i - 1] } else { zero };
            let right = if i + 1 < n { u[i + 1] } else { zero };
            du[i] = -p[0] * u[i] + p[1] * (left - u[i] * 2.0 + right);
        }
    }
    fn preconditioner(&self) -> Option<Box<dyn Preconditioner>> {
        Some(Box::new(Thomas {
            diag: 0.0,
            off: 0.0,
            work: vec![0.0; self.n],
            setups: 0,
        }))
    }
}

/// I − cJ = tridiag(−cD, 1 + c(k + 2D), −cD), factored on the fly in each solve.
struct Thomas {
    diag: f64,
    off: f64,
    work: Vec<f64>,
    setups: usize,
}

impl Preconditioner for Thomas {
    fn needs_jacobian(&self) -> bool {
        false
    }
    fn setup(&mut self, s: &PreconditionerSetup<'_>) -> Result<(), usize> {
        assert!(s.jacobian.is_none());
        let (k, d) = (s.p[0], s.p[1]);
        self.diag = 1.0 + s.c * (k + 2.0 * d);
        self.off = -s.c * d;
        self.setups += 1;
        Ok(())
    }
    fn solve(&mut self, z: &mut [f64]) {
        let n = z.len();
        let (a, b) = (self.diag, self.off);
        // Forward sweep (c'_i in work), then back substitution.
        self.work[0] = b / a;
        z[0] /= a;
        for i in 1..n {
            let m = a - b * self.work[i - 1];
            self.work[i] = b / m;
            z[i] = (z[i] - b * z[i - 1]) / m;
        }
        for i in (0..n - 1).rev() {
            z[i] -= self.work[i] * z[i + 1];
        }
    }
    fn solve_transpose(&mut self, z: &mut [f64]) {
        self.solve(z); // symmetric
    }
}

#[test]
fn a_models_own_preconditioner_makes_gmres_converge_at_once() {
    let n = 200;
    let u0: Vec<f64> = (0..n).map(|i| ((i as f64 + 1.0) * 0.05).sin()).collect();
    let problem = OdeProblem::new(Chain { n }, u0, vec![2.0, 1.0e4], (0.0, 1.0)).unwrap();
    let (rtol, atol) = (1e-8, 1e-10);
    let direct = solve(
        &problem,
        &options(Method::Bdf, LinearSolverKind::Sparse, rtol, atol),
    )
    .unwrap();
    let own = solve(
        &problem,
        &options(Method::Bdf, gmres(PreconditionerKind::Model), rtol, atol),
    )
    .unwrap();
    let bare = solve(
        &problem,
        &options(Method::Bdf, gmres(PreconditionerKind::None), rtol, atol),
    )
    .unwrap();
    let err = in_tolerances(
        own.u_end.as_slice().unwrap(),
        direct.u_end.as_slice().unwrap(),
        rtol,
        atol,
    );
    println!(
        "chain: model's preconditioner {err:.2} tolerances from sparse LU, {} jvps for {} Newton \
         iterations; unpreconditioned {} jvps for {}",
        own.stats.linear_iterations,
        own.stats.newton_iterations,
        bare.stats.linear_iterations,
        bare.stats.newton_iterations
    );
    assert!(err < 10.0, "{err}");
    assert_eq!(own.stats.jacobian_evaluations, 0);
    // The exact I − cJ (up to a stale c): about one Krylov iteration per Newton iteration, plus the
    // residual of each start.
    assert!(own.stats.linear_iterations <= 4 * own.stats.newton_iterations);
    assert!(bare.stats.linear_iterations > 2 * own.stats.linear_iterations);
}

#[test]
fn gmres_checkpoints_replay_bit_for_bit() {
    let problem = Brusselator2D::problem(8).unwrap();
    for pc in PRECONDITIONERS {
        let opts = options(Method::Bdf, gmres(pc), 1e-6, 1e-8);
        let mut it = BdfIntegrator::new(&problem, &opts).unwrap();
        for _ in 0..15 {
            it.step_accepted().unwrap();
        }
        let mut cp = BdfCheckpoint::default();
        it.checkpoint_into(&mut cp);
        let mut first = Vec::new();
        for _ in 0..25 {
            first.extend_from_slice(it.step_accepted().unwrap().u_next);
        }
        it.restore(&cp).unwrap();
        let mut again = Vec::new();
        for _ in 0..25 {
            again.extend_from_slice(it.step_accepted().unwrap().u_next);
        }
        assert!(
            first
                .iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{pc:?}"
        );
    }
}

#[test]
fn gmres_settings_are_checked() {
    let problem = Brusselator2D::problem(4).unwrap();
    let mut o = options(Method::Bdf, gmres(PreconditionerKind::Ilu0), 1e-6, 1e-8);
    o.implicit.linear_solver = LinearSolverKind::Gmres {
        restart: 0,
        preconditioner: PreconditionerKind::Ilu0,
    };
    assert!(matches!(
        solve(&problem, &o),
        Err(SolverError::InvalidOption { name, .. }) if name == "implicit.linear_solver.restart"
    ));
    o.implicit.linear_solver = gmres(PreconditionerKind::BlockJacobi { block: 0 });
    assert!(matches!(
        solve(&problem, &o),
        Err(SolverError::InvalidOption { .. })
    ));
    // The model has no preconditioner of its own.
    o.implicit.linear_solver = gmres(PreconditionerKind::Model);
    assert!(matches!(
        solve(&problem, &o),
        Err(SolverError::InvalidOption { name, .. }) if name == "implicit.linear_solver.preconditioner"
    ));
    // Runge–Kutta methods do not take the GMRES path yet.
    o.implicit.linear_solver = gmres(PreconditionerKind::Ilu0);
    for method in [Method::Kvaerno5, Method::TrBdf2, Method::RadauIIA5] {
        o.method = method;
        assert!(matches!(
            solve(&problem, &o),
            Err(SolverError::UnsupportedMethod { .. })
        ));
    }
}
