//! The sparse path of the implicit methods: a sparsity pattern declared by the model or detected by AD,
//! the Jacobian from one forward-mode pass per colour, faer's sparse LU; the same solutions as the
//! dense path.

use odesens_models::Brusselator2D;
use odesens_solver::linalg::{LinearSolver, SparseLu, SparsityPattern};
use odesens_solver::*;
use odesens_solver::{LinearSolverKind, detect_pattern};

#[test]
fn detected_pattern_matches_the_declared_one_and_colours_are_few() {
    for n in [4, 8, 16] {
        let problem = Brusselator2D::problem(n).unwrap();
        let declared =
            SparsityPattern::new(2 * n * n, problem.model().jacobian_sparsity().unwrap()).unwrap();
        let detected = detect_pattern(&problem);
        assert_eq!(detected, declared, "N = {n}");
        let (colors, count) = declared.column_colors();
        // A valid colouring: no row has two columns of one colour.
        for i in 0..2 * n * n {
            let mut seen = std::collections::HashSet::new();
            for (j, &color) in colors.iter().enumerate() {
                if declared.col_rows(j).contains(&i) {
                    assert!(
                        seen.insert(color),
                        "row {i} has two columns of colour {color}"
                    );
                }
            }
        }
        println!(
            "Brusselator N = {n}: {} states, {} nonzeros, {count} colours",
            2 * n * n,
            declared.nnz()
        );
        assert!(count <= 12, "{count} colours");
    }
}

#[test]
fn sparse_lu_solves_like_dense_and_reports_singular_matrices() {
    // Tridiagonal 2 −1 with a coupling entry.
    let n: usize = 6;
    let entries: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| [(i, i.saturating_sub(1)), (i, (i + 1).min(n - 1))])
        .chain([(0, n - 1)])
        .collect();
    let pattern = SparsityPattern::new(n, entries).unwrap();
    let value = |i: usize, j: usize| match (i, j) {
        _ if i == j => 2.0 + i as f64 * 0.1,
        (0, j) if j == n - 1 => 0.5,
        _ if i.abs_diff(j) == 1 => -1.0,
        _ => 0.0,
    };
    let mut lu = SparseLu::new(pattern);
    lu.factor(&mut |i, j, _| value(i, j)).unwrap();
    let b: Vec<f64> = (0..n).map(|i| i as f64 + 1.0).collect();
    let (mut x, mut y) = (b.clone(), b.clone());
    lu.solve_in_place(&mut x);
    lu.solve_transpose_in_place(&mut y);
    for (i, bi) in b.iter().enumerate() {
        let ax: f64 = (0..n).map(|j| value(i, j) * x[j]).sum();
        let aty: f64 = (0..n).map(|j| value(j, i) * y[j]).sum();
        assert!((ax - bi).abs() < 1e-13 && (aty - bi).abs() < 1e-13);
    }
    // A zero column: singular.
    assert!(
        lu.factor(&mut |i, j, _| if j == 2 { 0.0 } else { value(i, j) })
            .is_err()
    );
}

#[test]
fn sparse_and_dense_paths_agree_on_the_brusselator() {
    for method in [Method::Kvaerno5, Method::RadauIIA5] {
        agree(method);
    }
}

fn agree(method: Method) {
    let problem = Brusselator2D::problem(8).unwrap();
    let opts = SolverOptions::default()
        .method(method)
        .tol(1e-8)
        .save_end_only();
    let dense = solve(
        &problem,
        &opts.clone().linear_solver(LinearSolverKind::Dense),
    )
    .unwrap();
    let sparse = solve(
        &problem,
        &opts.clone().linear_solver(LinearSolverKind::Sparse),
    )
    .unwrap();
    let auto = solve(&problem, &opts).unwrap();
    let diff = dense
        .u_end
        .iter()
        .zip(&sparse.u_end)
        .map(|(a, b)| (a - b).abs() / a.abs().max(1e-3))
        .fold(0.0, f64::max);
    println!(
        "N = 8, {}: dense {} steps / {} Jacobians, sparse {} / {}; max relative difference {diff:.1e}",
        method.name(),
        dense.stats.accepted_steps,
        dense.stats.jacobian_evaluations,
        sparse.stats.accepted_steps,
        sparse.stats.jacobian_evaluations
    );
    // Same steps (round-off apart), same answer to well below the tolerance.
    assert!(diff < 1e-10, "{diff:e}");
    // 128 states, 12 of 128 entries per row: Auto chooses sparse.
    assert_eq!(auto.u_end, sparse.u_end);
}

#[test]
fn brusselator_with_2048_states_solves_on_the_sparse_path() {
    let problem = Brusselator2D::problem(32).unwrap();
    let run = |method: Method, tol: f64| {
        solve(
            &problem,
            &SolverOptions::default()
                .method(method)
                .tol(tol)
                .save_end_only(),
        )
        .unwrap()
    };
    let fine = run(Method::RadauIIA5, 1e-9);
    for method in [Method::Kvaerno5, Method::RadauIIA5] {
        check_n32(method, &run(method, 1e-6), &fine);
    }
}

fn check_n32(method: Method, coarse: &Solution, fine: &Solution) {
    let err = coarse
        .u_end
        .iter()
        .zip(&fine.u_end)
        .map(|(a, b)| (a - b).abs() / (1e-6 + 1e-6 * b.abs()))
        .fold(0.0, f64::max);
    println!(
        "N = 32 (2048 states), {} tol 1e-6: {} steps, {} Jacobians, {} LU; error vs tol 1e-9: {err:.1} \
         tolerances",
        method.name(),
        coarse.stats.accepted_steps,
        coarse.stats.jacobian_evaluations,
        coarse.stats.factorizations
    );
    assert!(err < 50.0, "{err}");
}
