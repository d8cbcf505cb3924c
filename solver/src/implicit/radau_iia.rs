//! Radau IIA of order 5 in Hairer's RADAU5 form ([`crate::tableau::radau5`]): simplified Newton in the
//! transformed stage coordinates with one real and one complex (as real 2n) system per iteration, the
//! filtered error estimate, the collocation polynomial for starting values and dense output.

use super::{Core, ImplicitIntegrator, RADAU_THET, singular};
use crate::error::SolverError;
use crate::linalg::{LinearSolver, Lu, SparsityPattern};
use crate::system::OdeSystem;
use crate::tableau::radau5 as radau;

/// Radau IIA's own buffers and controller memory.
pub(super) struct RadauState {
    /// The complex system as a real 2n × 2n one.
    pub(super) lu2: Lu,
    /// h of `lu2`'s factorization (0: none).
    pub(super) factored_h2: f64,
    /// Stage increments Z (3 × n), transformed W, stage derivatives F, the increment ΔW.
    pub(super) z: Vec<f64>,
    pub(super) w: Vec<f64>,
    pub(super) f: Vec<f64>,
    pub(super) dw: Vec<f64>,
    /// The previous step's collocation polynomial (3 × n), for starting values and dense output.
    pub(super) cont: Vec<f64>,
    pub(super) have_cont: bool,
    /// Last accepted h, Gustafsson's memory (h and error of the last accepted step), Newton's rate.
    pub(super) h_old: f64,
    pub(super) faccon: f64,
    pub(super) theta: f64,
    /// Newton iterations of the last attempt.
    pub(super) newt: usize,
    /// Step-size factor proposed by a failed Newton iteration.
    pub(super) newton_factor: f64,
    pub(super) first: bool,
    /// Whether the previous attempt was rejected.
    pub(super) reject: bool,
    pub(super) fnewt: f64,
}

impl<M: OdeSystem> Core<'_, M> {
    /// Factors Radau's real form of (α + iβ)/h I − J for step size h.
    pub(super) fn refactor_complex(&mut self, h: f64) -> Result<(), SolverError> {
        let n = self.n;
        let (a, b) = (radau::ALPHA / h, radau::BETA / h);
        let jac = &self.jac;
        let r = self.radau.as_mut().expect("Radau state");
        // Positions of J's entries: dense column-major, or the pattern's (the 2n pattern repeats J's in
        // both diagonal blocks, columns in order, see `complex_pattern`).
        let (sparse_j, result) = match &mut r.lu2 {
            Lu::Dense(lu) => (
                false,
                lu.factor(&mut |i, j, _| {
                    let (bi, bj) = (i / n, j / n);
                    let (ii, jj) = (i % n, j % n);
                    let diag = if ii == jj { 1.0 } else { 0.0 };
                    match (bi, bj) {
                        (0, 0) | (1, 1) => a * diag - jac[jj * n + ii],
                        (0, 1) => -b * diag,
                        _ => b * diag,
                    }
                }),
            ),
            Lu::Sparse(_) => (true, Ok(())),
        };
        let result = if sparse_j {
            let Lu::Sparse(j_lu) = &self.lu else {
                unreachable!("sparse Radau has a sparse J")
            };
            let pattern = j_lu.pattern();
            let Lu::Sparse(lu2) = &mut r.lu2 else {
                unreachable!()
            };
            lu2.factor(&mut |i, j, _| {
                let (bi, bj) = (i / n, j / n);
                let (ii, jj) = (i % n, j % n);
                if bi == bj {
                    let diag = if ii == jj { 1.0 } else { 0.0 };
                    let jv = pattern
                        .col_rows(jj)
                        .binary_search(&ii)
                        .map(|q| jac[pattern.col_range(jj).start + q])
                        .unwrap_or(0.0);
                    a * diag - jv
                } else if bi == 0 {
                    -b
                } else {
                    b
                }
            })
        } else {
            result
        };
        self.stats.factorizations += 1;
        r.factored_h2 = if result.is_ok() { h } else { 0.0 };
        singular(result, self.t, h)
    }

    /// Solves (γ/h I − J) x = b in place: (h/γ)(I − (h/γ)J)⁻¹ b.
    pub(super) fn solve_e1(&mut self, h: f64, b: &mut [f64]) {
        self.lu.solve_in_place(b);
        let s = h / radau::GAMMA;
        b.iter_mut().for_each(|x| *x *= s);
    }

    pub(super) fn attempt_radau(&mut self, h: f64) -> Result<Option<f64>, SolverError> {
        let n = self.n;
        let t = self.t;
        self.factor(h / radau::GAMMA, h)?;
        if self.radau.as_ref().expect("Radau state").factored_h2 != h {
            self.refactor_complex(h)?;
        }
        for m in 0..n {
            self.scale[m] = self.atol[m] + self.rtol * self.u[m].abs();
        }
        let mut r = self.radau.take().expect("Radau state");
        // Starting values: the previous collocation polynomial extrapolated, or zero.
        if r.have_cont && r.h_old != 0.0 {
            let c3q = h / r.h_old;
            for i in 0..3 {
                let cq = radau::C[i] * c3q;
                for m in 0..n {
                    let (a1, a2, a3) = (r.cont[m], r.cont[n + m], r.cont[2 * n + m]);
                    r.z[i * n + m] = cq
                        * (a1
                            + (cq - (radau::C[1] - 1.0)) * (a2 + (cq - (radau::C[0] - 1.0)) * a3));
                }
            }
        } else {
            r.z.iter_mut().for_each(|x| *x = 0.0);
        }
        transform(&radau::TI, &r.z, &mut r.w, n);
        let (fac1, alphn, betan) = (radau::GAMMA / h, radau::ALPHA / h, radau::BETA / h);
        r.faccon = r.faccon.max(f64::EPSILON).powf(0.8);
        r.theta = r.theta.abs();
        let mut converged = false;
        let (mut dynold, mut thqold) = (0.0f64, 0.0f64);
        r.newton_factor = 0.5;
        r.newt = 0;
        let nit = self.newton.max_iterations;
        while r.newt < nit {
            for i in 0..3 {
                for m in 0..n {
                    self.y[m] = self.u[m] + r.z[i * n + m];
                }
                let ti = if i == 2 { t + h } else { t + radau::C[i] * h };
                let y = std::mem::take(&mut self.y);
                self.f(ti, &y, &mut r.f[i * n..(i + 1) * n]);
                self.y = y;
            }
            self.stats.newton_iterations += 1;
            if let Some(q) = r.f.iter().position(|v| !v.is_finite()) {
                let (i, m) = (q / n, q % n);
                let ti = if i == 2 { t + h } else { t + radau::C[i] * h };
                self.non_finite.get_or_insert((ti, m, r.f[q]));
                break;
            }
            // Right-hand sides in W coordinates: T⁻¹F − (Λ/h) W.
            transform(&radau::TI, &r.f, &mut r.dw, n);
            for m in 0..n {
                let (w1, w2, w3) = (r.w[m], r.w[n + m], r.w[2 * n + m]);
                r.dw[m] -= fac1 * w1;
                r.dw[n + m] -= alphn * w2 - betan * w3;
                r.dw[2 * n + m] -= betan * w2 + alphn * w3;
            }
            self.solve_e1(h, &mut r.dw[..n]);
            r.lu2.solve_in_place(&mut r.dw[n..]);
            let mut sum = 0.0;
            for i in 0..3 {
                for m in 0..self.norm_n {
                    sum += (r.dw[i * n + m] / self.scale[m]).powi(2);
                }
            }
            let dyno = (sum / (3 * self.norm_n.max(1)) as f64).sqrt();
            if !dyno.is_finite() {
                break;
            }
            if r.newt >= 1 && r.newt < nit {
                let thq = dyno / dynold;
                r.theta = if r.newt == 1 {
                    thq
                } else {
                    (thq * thqold).sqrt()
                };
                thqold = thq;
                if r.theta < 0.99 {
                    r.faccon = r.theta / (1.0 - r.theta);
                    let left = (nit - 1 - r.newt) as i32;
                    let dyth = r.faccon * dyno * r.theta.powi(left) / r.fnewt;
                    if dyth >= 1.0 {
                        let qnewt = dyth.clamp(1e-4, 20.0);
                        r.newton_factor = 0.8 * qnewt.powf(-1.0 / (4.0 + f64::from(left)));
                        break;
                    }
                } else {
                    break;
                }
            }
            dynold = dyno.max(f64::EPSILON);
            for (w, d) in r.w.iter_mut().zip(&r.dw) {
                *w += d;
            }
            transform(&radau::T, &r.w, &mut r.z, n);
            r.newt += 1;
            if r.faccon * dyno <= r.fnewt {
                converged = true;
                break;
            }
        }
        if !converged {
            self.radau = Some(r);
            return Ok(None);
        }
        // u_{n+1} = u_n + Z_3; stage values; the error estimate.
        for m in 0..n {
            self.u_new[m] = self.u[m] + r.z[2 * n + m];
            for i in 0..3 {
                self.ys[i * n + m] = self.u[m] + r.z[i * n + m];
            }
            let (a, b) = (self.u[m].abs(), self.u_new[m].abs());
            self.scale[m] = self.atol[m] + self.rtol * a.max(b);
        }
        for m in 0..n {
            let f2 =
                (radau::D[0] * r.z[m] + radau::D[1] * r.z[n + m] + radau::D[2] * r.z[2 * n + m])
                    / h;
            r.dw[m] = f2;
            self.err[m] = self.k[m] + f2;
        }
        let mut e_vec = std::mem::take(&mut self.err);
        self.solve_e1(h, &mut e_vec);
        let mut err = self.norm(&e_vec);
        if err >= 1.0 && (r.first || r.reject) {
            // Refined estimate (radau5): f at u_n + e instead of f(u_n).
            for m in 0..n {
                self.y[m] = self.u[m] + e_vec[m];
            }
            let (y, mut fy) = (std::mem::take(&mut self.y), std::mem::take(&mut self.delta));
            self.f(t, &y, &mut fy);
            for m in 0..n {
                e_vec[m] = fy[m] + r.dw[m];
            }
            (self.y, self.delta) = (y, fy);
            self.solve_e1(h, &mut e_vec);
            err = self.norm(&e_vec);
        }
        self.err = e_vec;
        self.radau = Some(r);
        Ok(Some(if err.is_finite() { err } else { f64::INFINITY }))
    }
}

impl<M: OdeSystem> ImplicitIntegrator<'_, M> {
    /// Radau after an accepted step (`h_new`: the controller's next |h|): the collocation polynomial for
    /// the next starting values, f at the new point, a new Jacobian unless Newton converged very fast
    /// (then the step size is kept too when it would grow by less than 20 %, so the LU is reused).
    pub(super) fn accept_radau(&mut self, h: f64, h_new: f64, hits: bool) {
        let n = self.s.n;
        let mut r = self.s.radau.take().expect("Radau state");
        r.first = false;
        // The collocation polynomial through (0, 0), (c_i, Z_i), in radau5's divided-difference form.
        for m in 0..n {
            let d = super::collocation_differences(r.z[m], r.z[n + m], r.z[2 * n + m]);
            r.cont[m] = d[0];
            r.cont[n + m] = d[1];
            r.cont[2 * n + m] = d[2];
        }
        r.have_cont = true;
        r.h_old = h;
        let theta = r.theta;
        self.s.radau = Some(r);
        let (t, u) = (self.s.t, std::mem::take(&mut self.s.u));
        let mut f0 = std::mem::take(&mut self.s.delta);
        self.s.f(t, &u, &mut f0);
        self.s.k[..n].copy_from_slice(&f0);
        self.s.delta = f0;
        self.s.u = u;
        if self.fixed_step.is_some() {
            if theta > RADAU_THET {
                self.s.jacobian(t);
            }
            return;
        }
        let h_new = h_new.min(self.h_max);
        let qt = h_new / h.abs();
        if theta <= RADAU_THET && (1.0..=1.2).contains(&qt) && !hits {
            self.h_abs = h.abs();
            return;
        }
        self.h_abs = h_new;
        if theta > RADAU_THET {
            self.s.jacobian(t);
        }
    }
}

/// out_i = Σ_j M_ij v_j for 3 blocks of n.
pub(super) fn transform(m: &[[f64; 3]; 3], v: &[f64], out: &mut [f64], n: usize) {
    for i in 0..3 {
        for k in 0..n {
            out[i * n + k] = m[i][0] * v[k] + m[i][1] * v[n + k] + m[i][2] * v[2 * n + k];
        }
    }
}

/// out_j = Σ_i M_ij v_i (Mᵀ) for 3 blocks of n.
pub(super) fn transform_t(m: &[[f64; 3]; 3], v: &[f64], out: &mut [f64], n: usize) {
    for j in 0..3 {
        for k in 0..n {
            out[j * n + k] = m[0][j] * v[k] + m[1][j] * v[n + k] + m[2][j] * v[2 * n + k];
        }
    }
}

/// The 2n pattern of Radau's real form of the complex matrix: J's pattern in both diagonal blocks and
/// the identity couplings.
pub(super) fn complex_pattern(p: &SparsityPattern) -> SparsityPattern {
    let n = p.n();
    let mut entries = Vec::with_capacity(2 * p.nnz() + 2 * n);
    for j in 0..n {
        for &i in p.col_rows(j) {
            entries.push((i, j));
            entries.push((n + i, n + j));
        }
        entries.push((n + j, j));
        entries.push((j, n + j));
    }
    SparsityPattern::new(2 * n, entries).expect("inside 2n × 2n")
}
