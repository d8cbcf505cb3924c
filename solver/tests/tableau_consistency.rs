//! One looped test checks every tableau: structure, row sums, and the Runge–Kutta order conditions
//! (Butcher's rooted trees) for the method, its embedded pair and its continuous extension.

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas (Σ_i b_i Φ_i, rows of A)

use odesens_solver::Method;
use odesens_solver::tableau::ExplicitTableau;

/// A rooted tree, as the sorted list of its children's indices in the tree list.
#[derive(Clone, Debug)]
struct Tree {
    order: usize,
    children: Vec<usize>,
    /// Butcher's density γ(t) = |t| Π γ(children).
    gamma: f64,
}

/// All rooted trees up to `max_order` (1, 1, 2, 4, 9, 20, 48, 115, 286 of orders 1..9).
fn rooted_trees(max_order: usize) -> Vec<Tree> {
    let mut trees = vec![Tree {
        order: 1,
        children: vec![],
        gamma: 1.0,
    }];
    for order in 2..=max_order {
        // Children multisets: non-increasing index sequences with orders summing to order − 1.
        let mut found = Vec::new();
        fn extend(
            trees: &[Tree],
            remaining: usize,
            max_idx: usize,
            cur: &mut Vec<usize>,
            out: &mut Vec<Vec<usize>>,
        ) {
            if remaining == 0 {
                out.push(cur.clone());
                return;
            }
            for idx in (0..=max_idx.min(trees.len() - 1)).rev() {
                if trees[idx].order <= remaining {
                    cur.push(idx);
                    extend(trees, remaining - trees[idx].order, idx, cur, out);
                    cur.pop();
                }
            }
        }
        let existing = trees.clone();
        extend(
            &existing,
            order - 1,
            existing.len() - 1,
            &mut Vec::new(),
            &mut found,
        );
        for children in found {
            let gamma = order as f64 * children.iter().map(|&c| existing[c].gamma).product::<f64>();
            trees.push(Tree {
                order,
                children,
                gamma,
            });
        }
    }
    trees
}

/// Dense lower-triangular A of the tableau.
fn dense_a(tab: &ExplicitTableau) -> Vec<Vec<f64>> {
    let s = tab.total_stages();
    let mut a = vec![vec![0.0; s]; s];
    for (i, row) in tab.a.iter().enumerate() {
        for &(j, v) in row.iter() {
            a[i][j] = v;
        }
    }
    a
}

/// Elementary weight vectors Φ(t) for every tree: Φ(•) = 1, Φ([t1..tm])_i = Π_k (A Φ(t_k))_i.
fn elementary_weights(trees: &[Tree], a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let s = a.len();
    let mut phi: Vec<Vec<f64>> = Vec::with_capacity(trees.len());
    let mut a_phi: Vec<Vec<f64>> = Vec::with_capacity(trees.len());
    for tree in trees {
        let mut v = vec![1.0; s];
        for &c in &tree.children {
            for i in 0..s {
                v[i] *= a_phi[c][i];
            }
        }
        let av: Vec<f64> = (0..s)
            .map(|i| (0..s).map(|j| a[i][j] * v[j]).sum())
            .collect();
        phi.push(v);
        a_phi.push(av);
    }
    phi
}

fn tree_count(trees: &[Tree], order: usize) -> usize {
    trees.iter().filter(|t| t.order == order).count()
}

#[test]
fn rooted_tree_counts_match_oeis_a000081() {
    let trees = rooted_trees(9);
    let counts: Vec<usize> = (1..=9).map(|p| tree_count(&trees, p)).collect();
    assert_eq!(counts, vec![1, 1, 2, 4, 9, 20, 48, 115, 286]);
}

#[test]
fn every_tableau_is_consistent() {
    let trees = rooted_trees(9);
    for method in Method::ALL {
        let tab = method.tableau();
        let s = tab.stages;
        let total = tab.total_stages();
        let name = tab.name;
        assert_eq!(tab.a.len(), total, "{name}: one row of A per stage");
        assert_eq!(tab.dense.len(), total, "{name}: one dense row per stage");
        assert_eq!(tab.b.len(), s, "{name}: b per main stage");
        assert_eq!(tab.btilde.len(), s, "{name}: b̃ per main stage");
        // Explicit: A strictly lower triangular, main stages use main stages only.
        for (i, row) in tab.a.iter().enumerate() {
            for &(j, _) in row.iter() {
                assert!(j < i, "{name}: a[{i}][{j}] not strictly lower");
                if i < s {
                    assert!(j < s, "{name}: main stage {i} uses extra stage {j}");
                }
            }
        }
        // Row sums c_i = Σ_j a_ij.
        let a = dense_a(tab);
        for i in 0..total {
            let sum: f64 = a[i].iter().sum();
            assert!(
                (sum - tab.c[i]).abs() < 1e-14,
                "{name}: row {i} sums to {sum}, c = {}",
                tab.c[i]
            );
        }
        // Σ b = 1, Σ b̂ = 1.
        let bhat: Vec<f64> = tab.b.iter().zip(tab.btilde).map(|(b, e)| b - e).collect();
        assert!(
            (tab.b.iter().sum::<f64>() - 1.0).abs() < 1e-14,
            "{name}: Σb ≠ 1"
        );
        assert!(
            (bhat.iter().sum::<f64>() - 1.0).abs() < 1e-14,
            "{name}: Σb̂ ≠ 1"
        );
        // FSAL: last main row equals b, last weight zero; end stage row equals b, c = 1.
        if tab.fsal {
            assert_eq!(tab.b[s - 1], 0.0, "{name}: FSAL stage has zero weight");
        }
        if let Some(e) = tab.end_stage {
            assert_eq!(tab.c[e], 1.0, "{name}: end stage at c = 1");
            for j in 0..s {
                assert!(
                    (a[e][j] - tab.b[j]).abs() < 1e-15,
                    "{name}: end stage row ≠ b at {j}"
                );
            }
        }
        // Order conditions bᵀΦ(t) = 1/γ(t) for |t| ≤ p, and at least one violated at p + 1.
        let phi = elementary_weights(&trees, &a);
        let residual = |w: &[f64], t: usize| -> f64 {
            let v: f64 = w.iter().zip(&phi[t]).map(|(wi, p)| wi * p).sum();
            v - 1.0 / trees[t].gamma
        };
        let check = |w: &[f64], order: u32, what: &str| {
            for (t, tree) in trees.iter().enumerate() {
                if tree.order <= order as usize {
                    let r = residual(w, t);
                    assert!(
                        r.abs() < 1e-12,
                        "{name} {what}: tree {t} of order {} has residual {r:e}",
                        tree.order
                    );
                }
            }
            if (order as usize) < 9 {
                let worst = trees
                    .iter()
                    .enumerate()
                    .filter(|(_, tr)| tr.order == order as usize + 1)
                    .map(|(t, _)| residual(w, t).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst > 1e-10,
                    "{name} {what}: order is higher than claimed ({order})"
                );
            }
        };
        let mut b_full = tab.b.to_vec();
        b_full.resize(total, 0.0);
        let mut bhat_full = bhat.clone();
        bhat_full.resize(total, 0.0);
        check(&b_full, tab.order, "solution");
        check(&bhat_full, tab.embedded_order, "embedded");
        // Continuous extension: Σ b_i(θ) Φ_i(t) = θ^{|t|}/γ(t) for |t| ≤ q, and b_i(1) = b_i.
        // Verner's published 7(6) interpolant (OrdinaryDiffEq.jl's double-precision and 40-digit values
        // alike) meets the order-7 continuous conditions only to ~1e-7: the trees [t] with |t| = 6 leave
        // residuals up to 3e-7 for θ in (0, 1) (order-6 conditions hold to 1e-16). Its local error is therefore
        // 7th order down to h ≈ 1e-2 and 6th order below; the dense convergence test measures it.
        let top_tolerance = if method == Method::Vern7 { 5e-7 } else { 1e-11 };
        let mut w = vec![0.0; total];
        for &theta in &[0.1, 0.37, 0.5, 0.81, 1.0] {
            tab.dense_weights(theta, &mut w);
            for (t, tree) in trees.iter().enumerate() {
                if tree.order <= tab.dense_order as usize {
                    let v: f64 = w.iter().zip(&phi[t]).map(|(wi, p)| wi * p).sum();
                    let expected = theta.powi(tree.order as i32) / tree.gamma;
                    let tol = if tree.order == tab.dense_order as usize {
                        top_tolerance
                    } else {
                        1e-11
                    };
                    assert!(
                        (v - expected).abs() < tol,
                        "{name} dense θ = {theta}: tree {t} of order {}: {v} vs {expected}",
                        tree.order
                    );
                }
            }
        }
        tab.dense_weights(1.0, &mut w);
        for i in 0..total {
            let b = if i < s { tab.b[i] } else { 0.0 };
            assert!(
                (w[i] - b).abs() < 1e-12,
                "{name}: b_{i}(1) = {} ≠ b_{i} = {b}",
                w[i]
            );
        }
        // Derivative of the weights at θ = 0 picks K_1 = f(t_n, u_n).
        let mut dw = vec![0.0; total];
        tab.dense_weight_derivatives(0.0, &mut dw);
        for i in 0..total {
            assert!(
                (dw[i] - if i == 0 { 1.0 } else { 0.0 }).abs() < 1e-12,
                "{name}: b_{i}'(0) = {}",
                dw[i]
            );
        }
    }
}

#[test]
fn esdirk_tableaus_satisfy_their_order_conditions() {
    use odesens_solver::EsdirkTableau;
    let trees = rooted_trees(7);
    for method in Method::IMPLICIT {
        let Some(tab): Option<&EsdirkTableau> = method.esdirk_tableau() else {
            continue;
        };
        let s = tab.c.len();
        let name = tab.name;
        // Full A: the strictly lower rows and γ on the diagonal of the implicit stages.
        let mut a = vec![vec![0.0; s]; s];
        for (i, row) in tab.a.iter().enumerate() {
            assert_eq!(row.len(), i, "{name}: row {i}");
            a[i][..i].copy_from_slice(row);
            if i > 0 {
                a[i][i] = tab.gamma;
            }
        }
        for i in 0..s {
            let sum: f64 = a[i].iter().sum();
            assert!(
                (sum - tab.c[i]).abs() < 1e-14,
                "{name}: row sum {i}: {sum} vs c {}",
                tab.c[i]
            );
        }
        // Stiffly accurate: b is the last row of A.
        for (j, &b) in tab.b.iter().enumerate() {
            assert!((b - a[s - 1][j]).abs() < 1e-15, "{name}: b[{j}]");
        }
        let phi = elementary_weights(&trees, &a);
        let check = |w: &[f64], order: usize, what: &str| -> f64 {
            let mut worst = 0.0f64;
            for (t, p) in trees.iter().zip(&phi) {
                if t.order <= order {
                    let lhs: f64 = w.iter().zip(p).map(|(b, x)| b * x).sum();
                    worst = worst.max((lhs - 1.0 / t.gamma).abs());
                }
            }
            println!("{name} {what}: order ≤ {order}: max residual {worst:.1e}");
            worst
        };
        assert!(check(tab.b, tab.order as usize, "b") < 1e-12, "{name}");
        assert!(
            check(tab.bhat, tab.embedded_order as usize, "b̂") < 1e-12,
            "{name}"
        );
        // ... and not one order more.
        let next = tab.order as usize + 1;
        let violated = trees.iter().zip(&phi).any(|(t, p)| {
            t.order == next && {
                let lhs: f64 = tab.b.iter().zip(p).map(|(b, x)| b * x).sum();
                (lhs - 1.0 / t.gamma).abs() > 1e-8
            }
        });
        assert!(violated, "{name}: order {next} unexpectedly satisfied");
    }
}

#[test]
fn radau_iia5_satisfies_its_order_conditions_and_transformation() {
    use odesens_solver::radau;
    let trees = rooted_trees(7);
    let a: Vec<Vec<f64>> = radau::A.iter().map(|r| r.to_vec()).collect();
    for i in 0..3 {
        let sum: f64 = a[i].iter().sum();
        assert!((sum - radau::C[i]).abs() < 1e-15, "row sum {i}");
    }
    let b = radau::A[2];
    let phi = elementary_weights(&trees, &a);
    let residual = |order: usize| -> f64 {
        trees
            .iter()
            .zip(&phi)
            .filter(|(t, _)| t.order == order)
            .map(|(t, p)| (b.iter().zip(p).map(|(b, x)| b * x).sum::<f64>() - 1.0 / t.gamma).abs())
            .fold(0.0, f64::max)
    };
    for order in 1..=5 {
        assert!(
            residual(order) < 1e-14,
            "order {order}: {:e}",
            residual(order)
        );
    }
    assert!(residual(6) > 1e-6, "order 6 must fail");
    // T⁻¹ A⁻¹ T = diag(γ, [[α, −β], [β, α]]): check T⁻¹ = TI and A T = T Λ⁻¹, i.e. T Λ = A⁻¹ T ⇔
    // A T Λ = T.
    let lambda = [
        [radau::GAMMA, 0.0, 0.0],
        [0.0, radau::ALPHA, -radau::BETA],
        [0.0, radau::BETA, radau::ALPHA],
    ];
    for i in 0..3 {
        for j in 0..3 {
            let id: f64 = (0..3).map(|k| radau::T[i][k] * radau::TI[k][j]).sum();
            assert!((id - f64::from(u8::from(i == j))).abs() < 1e-15, "T·T⁻¹");
            let atl: f64 = (0..3)
                .map(|k| {
                    (0..3).map(|l| radau::A[i][l] * radau::T[l][k]).sum::<f64>() * lambda[k][j]
                })
                .sum();
            assert!(
                (atl - radau::T[i][j]).abs() < 1e-14,
                "A T Λ = T at ({i}, {j}): {atl}"
            );
        }
    }
}
