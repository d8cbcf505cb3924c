//! The explicit Runge–Kutta step kernels: stage combinations unrolled for small systems, the main stages
//! of one step. One implementation shared by [`super::Integrator`] and [`super::StepReplay`], so that a
//! replay reproduces the integrator's values bit for bit.

use ndarray::{ArrayView1, ArrayViewMut1};

use crate::system::OdeSystem;
use crate::tableau::ExplicitTableau;

/// Root-mean-square norm of `v_i / scale_i`.
#[inline]
pub(super) fn rms_scaled(v: &[f64], scale: &[f64]) -> f64 {
    let sum: f64 = v.iter().zip(scale).map(|(x, s)| (x / s) * (x / s)).sum();
    (sum / v.len() as f64).sqrt()
}

/// `out = base + h Σ_j a_j K_j` over the sparse row `(j, a_j)` (terms added in row order), for a system
/// of compile-time size `N`: fully unrolled, no bounds checks in the loop.
#[inline(always)]
pub(super) fn combine_fixed<const N: usize>(
    out: &mut [f64],
    base: &[f64],
    h: f64,
    row: &[(usize, f64)],
    k: &[f64],
) {
    let mut acc: [f64; N] = base[..N].try_into().expect("length N");
    let (stages, _) = k.as_chunks::<N>();
    for &(j, a) in row {
        let ha = h * a;
        let kj = &stages[j];
        for m in 0..N {
            acc[m] += ha * kj[m];
        }
    }
    out[..N].copy_from_slice(&acc);
}

/// `out = base + h Σ_j a_j K_j` over the sparse row `(j, a_j)`, terms added in row order.
///
/// Small systems dispatch to an unrolled kernel; the arithmetic (and so the result, bit for bit) is the
/// same on every path.
#[inline(always)]
pub(super) fn combine(
    out: &mut [f64],
    base: &[f64],
    h: f64,
    row: &[(usize, f64)],
    k: &[f64],
    n: usize,
) {
    match n {
        1 => combine_fixed::<1>(out, base, h, row, k),
        2 => combine_fixed::<2>(out, base, h, row, k),
        3 => combine_fixed::<3>(out, base, h, row, k),
        4 => combine_fixed::<4>(out, base, h, row, k),
        5 => combine_fixed::<5>(out, base, h, row, k),
        6 => combine_fixed::<6>(out, base, h, row, k),
        7 => combine_fixed::<7>(out, base, h, row, k),
        8 => combine_fixed::<8>(out, base, h, row, k),
        _ => {
            let out = &mut out[..n];
            out.copy_from_slice(&base[..n]);
            for &(j, a) in row {
                let ha = h * a;
                let kj = &k[j * n..j * n + n];
                for (o, &kv) in out.iter_mut().zip(kj) {
                    *o += ha * kv;
                }
            }
        }
    }
}

/// The nonzero entries of `w` as a sparse row.
pub(super) fn sparse(w: &[f64]) -> Vec<(usize, f64)> {
    w.iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(i, &v)| (i, v))
        .collect()
}

/// Evaluates du = f(t, x, p) on slices.
#[inline(always)]
pub(super) fn eval<M: OdeSystem>(model: &M, p: ArrayView1<f64>, t: f64, x: &[f64], du: &mut [f64]) {
    model.rhs(t, ArrayView1::from(x), p, ArrayViewMut1::from(du));
}

/// The main stages of one step from (t, u) with signed size h to t_new = t + h, given K_1 = f(t, u) in
/// `k[0..n]`: stage inputs Y_i = u + h Σ_j a_ij K_j into `ys[i·n..]` (Y_1 = u is not written), stages
/// K_i = f(t + c_i h, Y_i) into `k`, and u_{n+1} into `u_new` (for FSAL tableaus the last stage input,
/// whose stage K_s = f(t_new, u_{n+1}) is evaluated too). Returns the number of rhs evaluations.
///
/// The one implementation of a step, shared by the integrator and by [`StepReplay`], so that a replay
/// reproduces the integrator's values bit for bit.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn main_stages<M: OdeSystem>(
    tab: &ExplicitTableau,
    b_row: &[(usize, f64)],
    model: &M,
    p: ArrayView1<f64>,
    (t, h, t_new): (f64, f64, f64),
    u: &[f64],
    u_new: &mut [f64],
    k: &mut [f64],
    ys: &mut [f64],
) -> usize {
    let n = u.len();
    let s = tab.stages;
    let last = if tab.fsal { s - 1 } else { s };
    for i in 1..last {
        let (done, rest) = k.split_at_mut(i * n);
        let yi = &mut ys[i * n..(i + 1) * n];
        combine(yi, u, h, tab.a[i], done, n);
        let c = tab.c[i];
        let ti = if c == 1.0 { t_new } else { t + c * h };
        eval(model, p, ti, yi, &mut rest[..n]);
    }
    if tab.fsal {
        let (done, rest) = k.split_at_mut((s - 1) * n);
        combine(u_new, u, h, tab.a[s - 1], done, n);
        eval(model, p, t_new, u_new, &mut rest[..n]);
        s - 1
    } else {
        combine(u_new, u, h, b_row, k, n);
        s - 1
    }
}

/// Stage input i given u_n, u_{n+1} and the stored inputs.
pub(super) fn stage_input<'b>(
    tab: &ExplicitTableau,
    n: usize,
    i: usize,
    u: &'b [f64],
    u_new: &'b [f64],
    ys: &'b [f64],
) -> &'b [f64] {
    if i == 0 {
        u
    } else if tab.fsal && i == tab.stages - 1 {
        u_new
    } else {
        &ys[i * n..(i + 1) * n]
    }
}
