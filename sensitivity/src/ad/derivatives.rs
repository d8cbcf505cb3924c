//! The one place where odesens differentiates: Jacobian–vector products, vector–Jacobian products and
//! Jacobians of a model's right-hand side, and gradients of scalar functions (objectives).
//!
//! Route, cheapest first: the model's hand-written [`OdeSystem::jvp`]/[`OdeSystem::vjp`] when it
//! provides them; otherwise forward-mode automatic differentiation through the model's generic `rhs`:
//! one `Dual64` pass for a single jvp, and [`Lanes`]`<CHUNK>` passes (up to [`CHUNK`] directions at
//! once: each elementary function evaluated once, then one multiply–add per direction) for blocks of
//! tangents, for the Jacobian [f_u f_p] (⌈(n + p)/CHUNK⌉ passes) and for gradients of scalar
//! objectives. A vjp without a hand-written one uses that Jacobian when one pass covers it (n + p ≤ CHUNK)
//! and otherwise reverse mode ([`crate::ad::tape`]: one recording of the rhs and one backward sweep, a cost
//! independent of n + p), see [`VjpMode`].
//!
//! Measured on the adjoint bench (double pendulum, n + p = 9): Jacobians by num-dual's
//! `DualSVec64<8>` (2 passes) were 1.45× slower than by 9 `Dual64` passes; [`Lanes`] replaced both.

use ndarray::{ArrayView1, ArrayViewMut1};
use num_dual::Dual64;
use odesens_solver::OdeSystem;
use odesens_solver::linalg::SparsityPattern;

use crate::ad::lanes::Lanes;
use crate::ad::tape::{Recorder, Var};

/// Number of directions differentiated together in one [`Lanes`] pass.
pub const CHUNK: usize = 8;

/// The chunked dual number type.
pub type ChunkDual = Lanes<CHUNK>;

/// Counters of derivative evaluations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DerivativeCounts {
    /// Jacobian–vector products, one per direction.
    pub jvp: usize,
    /// Vector–Jacobian products.
    pub vjp: usize,
    /// Dual-number passes through the model's rhs (chunked Jacobians count one per chunk).
    pub dual_passes: usize,
    /// Reverse-mode recordings of the rhs (one tape and one backward sweep each).
    pub tape_sweeps: usize,
}

/// How a vjp λᵀ[f_u f_p] is computed by automatic differentiation (models without a hand-written vjp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum VjpMode {
    /// [`VjpMode::Jacobian`] when one [`Lanes`] pass covers all n + p inputs (n + p ≤ [`CHUNK`]),
    /// otherwise [`VjpMode::Reverse`].
    #[default]
    Auto,
    /// The whole Jacobian by ⌈(n + p)/CHUNK⌉ forward-mode passes, then λᵀJ: cost grows with n + p.
    Jacobian,
    /// One recording of the rhs on a reverse-mode tape and one backward sweep: cost independent of n + p.
    Reverse,
}

/// Differentiates one model; holds the dual-number buffers (allocated once).
pub struct Derivatives<'m, M: OdeSystem> {
    model: &'m M,
    n: usize,
    np: usize,
    u1: Vec<Dual64>,
    p1: Vec<Dual64>,
    f1: Vec<Dual64>,
    /// Lane buffers.
    ul: Vec<ChunkDual>,
    pl: Vec<ChunkDual>,
    fl: Vec<ChunkDual>,
    /// [f_u f_p], row-major n × (n + np) (empty until first asked for).
    jac: Vec<f64>,
    /// One direction of a block (v, w) and its product.
    v1: Vec<f64>,
    w1: Vec<f64>,
    o1: Vec<f64>,
    /// Outputs of a hand-written vjp.
    scratch_u: Vec<f64>,
    scratch_p: Vec<f64>,
    /// Reverse-mode buffers: inputs (u then p) and outputs on the tape.
    recorder: Recorder,
    vu: Vec<Var>,
    vp: Vec<Var>,
    vf: Vec<Var>,
    /// The route of AD vjps.
    vjp_mode: VjpMode,
    /// Counters.
    pub counts: DerivativeCounts,
}

impl<'m, M: OdeSystem> Derivatives<'m, M> {
    /// Buffers for `model`.
    pub fn new(model: &'m M) -> Self {
        let (n, np) = (model.n_states(), model.n_params());
        Self {
            model,
            n,
            np,
            u1: vec![Dual64::from(0.0); n],
            p1: vec![Dual64::from(0.0); np],
            f1: vec![Dual64::from(0.0); n],
            ul: vec![ChunkDual::constant(0.0); n],
            pl: vec![ChunkDual::constant(0.0); np],
            fl: vec![ChunkDual::constant(0.0); n],
            // Allocated by the first `jacobian` call: large models never ask for the dense matrix, and
            // n (n + np) values would not fit in memory for them.
            jac: Vec::new(),
            v1: vec![0.0; n],
            w1: vec![0.0; np],
            o1: vec![0.0; n],
            scratch_u: vec![0.0; n],
            scratch_p: vec![0.0; np],
            recorder: Recorder::new(),
            vu: vec![Var::constant(0.0); n],
            vp: vec![Var::constant(0.0); np],
            vf: vec![Var::constant(0.0); n],
            vjp_mode: VjpMode::Auto,
            counts: DerivativeCounts::default(),
        }
    }

    /// Chooses how vjps are computed when the model has no hand-written one (default [`VjpMode::Auto`]).
    pub fn with_vjp_mode(mut self, mode: VjpMode) -> Self {
        self.vjp_mode = mode;
        self
    }

    /// The route [`Derivatives::vjp_add`] takes for this model without a hand-written vjp.
    pub fn ad_vjp_route(&self) -> VjpMode {
        match self.vjp_mode {
            VjpMode::Auto if self.n + self.np <= CHUNK => VjpMode::Jacobian,
            VjpMode::Auto => VjpMode::Reverse,
            mode => mode,
        }
    }

    /// out = f_u(t, u, p)·v + f_p(t, u, p)·w.
    pub fn jvp(&mut self, t: f64, u: &[f64], p: &[f64], v: &[f64], w: &[f64], out: &mut [f64]) {
        self.counts.jvp += 1;
        if self.model.jvp(t, u, p, v, w, out) {
            return;
        }
        self.seed_dual((u, v), (p, w));
        self.model.rhs(
            Dual64::from(t),
            ArrayView1::from(&self.u1[..]),
            ArrayView1::from(&self.p1[..]),
            ArrayViewMut1::from(&mut self.f1[..]),
        );
        self.counts.dual_passes += 1;
        for (o, f) in out.iter_mut().zip(&self.f1) {
            *o = f.eps;
        }
    }

    /// Seeds the `Dual64` inputs: u + ε v, p + ε w.
    fn seed_dual(&mut self, (u, v): (&[f64], &[f64]), (p, w): (&[f64], &[f64])) {
        for (d, (&x, &dx)) in self.u1.iter_mut().zip(u.iter().zip(v)) {
            *d = Dual64::new(x, dx);
        }
        for (d, (&x, &dx)) in self.p1.iter_mut().zip(p.iter().zip(w)) {
            *d = Dual64::new(x, dx);
        }
    }

    /// The directional derivative of event k's condition: g_t·dt + g_u·v + g_p·w at (t, u, p), by one
    /// `Dual64` pass through [`OdeSystem::event_condition`].
    #[allow(clippy::too_many_arguments)]
    pub fn condition_jvp(
        &mut self,
        k: usize,
        (t, dt): (f64, f64),
        u: &[f64],
        v: &[f64],
        p: &[f64],
        w: &[f64],
    ) -> f64 {
        self.counts.jvp += 1;
        self.counts.dual_passes += 1;
        self.seed_dual((u, v), (p, w));
        self.model
            .event_condition(
                k,
                Dual64::new(t, dt),
                ArrayView1::from(&self.u1[..]),
                ArrayView1::from(&self.p1[..]),
            )
            .eps
    }

    /// Event k's jump u⁺ = h_k(t, u, p) and its directional derivative h_t·dt + h_u·v + h_p·w, by one
    /// `Dual64` pass through [`OdeSystem::event_jump`]: u⁺ into `u_out`, the derivative into `v_out`.
    #[allow(clippy::too_many_arguments)]
    pub fn jump_jvp(
        &mut self,
        k: usize,
        (t, dt): (f64, f64),
        (u, v): (&[f64], &[f64]),
        (p, w): (&[f64], &[f64]),
        u_out: &mut [f64],
        v_out: &mut [f64],
    ) {
        self.counts.jvp += 1;
        self.counts.dual_passes += 1;
        self.seed_dual((u, v), (p, w));
        self.f1.copy_from_slice(&self.u1);
        self.model.event_jump(
            k,
            Dual64::new(t, dt),
            ArrayView1::from(&self.u1[..]),
            ArrayView1::from(&self.p1[..]),
            ArrayViewMut1::from(&mut self.f1[..]),
        );
        for ((o, d), f) in u_out.iter_mut().zip(v_out.iter_mut()).zip(&self.f1) {
            *o = f.re;
            *d = f.eps;
        }
    }

    /// Jacobian–vector products for a block of `lanes` directions. `v` is n × lanes and `w` np × lanes
    /// (row-major: entry (m, d) at `m·lanes + d`); `out` (n × lanes) receives f_u·v + f_p·w. One
    /// [`Lanes`] pass per [`CHUNK`] directions, or the model's jvp per direction.
    #[allow(clippy::too_many_arguments)]
    pub fn jvp_block(
        &mut self,
        t: f64,
        u: &[f64],
        p: &[f64],
        v: &[f64],
        w: &[f64],
        out: &mut [f64],
        lanes: usize,
    ) {
        // A hand-written jvp, direction by direction.
        for d in 0..lanes {
            for (m, x) in self.v1.iter_mut().enumerate() {
                *x = v[m * lanes + d];
            }
            for (m, x) in self.w1.iter_mut().enumerate() {
                *x = w[m * lanes + d];
            }
            if !self.model.jvp(t, u, p, &self.v1, &self.w1, &mut self.o1) {
                break;
            }
            self.counts.jvp += 1;
            for (m, x) in self.o1.iter().enumerate() {
                out[m * lanes + d] = *x;
            }
            if d + 1 == lanes {
                return;
            }
        }
        // Forward-mode AD: one scalar dual for a single direction, else CHUNK directions per pass.
        if lanes == 1 {
            self.jvp(t, u, p, v, w, out);
            return;
        }
        let mut start = 0;
        while start < lanes {
            let width = CHUNK.min(lanes - start);
            for (m, x) in self.ul.iter_mut().enumerate() {
                let mut eps = [0.0; CHUNK];
                eps[..width].copy_from_slice(&v[m * lanes + start..m * lanes + start + width]);
                *x = ChunkDual::new(u[m], eps);
            }
            for (m, x) in self.pl.iter_mut().enumerate() {
                let mut eps = [0.0; CHUNK];
                eps[..width].copy_from_slice(&w[m * lanes + start..m * lanes + start + width]);
                *x = ChunkDual::new(p[m], eps);
            }
            self.lanes_rhs(t);
            self.counts.jvp += width;
            for (m, f) in self.fl.iter().enumerate() {
                out[m * lanes + start..m * lanes + start + width].copy_from_slice(&f.eps[..width]);
            }
            start += CHUNK;
        }
    }

    /// The Jacobian [f_u f_p] at (t, u, p), row-major n × (n + np), by ⌈(n + np)/CHUNK⌉ [`Lanes`] passes.
    pub fn jacobian(&mut self, t: f64, u: &[f64], p: &[f64]) -> &[f64] {
        self.leading_columns(t, u, p, self.n + self.np)
    }

    /// f_u alone at (t, u, p), row-major n × n, by ⌈n/CHUNK⌉ [`Lanes`] passes.
    pub fn state_jacobian(&mut self, t: f64, u: &[f64], p: &[f64]) -> &[f64] {
        self.leading_columns(t, u, p, self.n)
    }

    /// The first `cols` columns of [f_u f_p], row-major n × `cols`.
    fn leading_columns(&mut self, t: f64, u: &[f64], p: &[f64], cols: usize) -> &[f64] {
        let n = self.n;
        self.jac.resize(n * cols, 0.0);
        let mut start = 0;
        while start < cols {
            let seed = |c: usize, x: f64| {
                let mut eps = [0.0; CHUNK];
                if c >= start && c < start + CHUNK {
                    eps[c - start] = 1.0;
                }
                ChunkDual::new(x, eps)
            };
            for (m, x) in self.ul.iter_mut().enumerate() {
                *x = seed(m, u[m]);
            }
            for (m, x) in self.pl.iter_mut().enumerate() {
                *x = seed(n + m, p[m]);
            }
            self.lanes_rhs(t);
            let width = CHUNK.min(cols - start);
            for (row, f) in self.fl.iter().enumerate() {
                self.jac[row * cols + start..row * cols + start + width]
                    .copy_from_slice(&f.eps[..width]);
            }
            start += CHUNK;
        }
        &self.jac
    }

    /// One [`Lanes`] pass: `fl` = f(t, `ul`, `pl`) with every lane's derivative.
    fn lanes_rhs(&mut self, t: f64) {
        self.model.rhs(
            ChunkDual::constant(t),
            ArrayView1::from(&self.ul[..]),
            ArrayView1::from(&self.pl[..]),
            ArrayViewMut1::from(&mut self.fl[..]),
        );
        self.counts.dual_passes += 1;
    }

    /// The values of f_u(t, u, p) on `pattern` (CSC positions), by compressed forward mode: columns of
    /// one colour of `colors` (no two share a row) are seeded together, [`CHUNK`] colours per [`Lanes`]
    /// pass, so ⌈colours / CHUNK⌉ passes whatever n (Curtis, Powell & Reid 1974). Entries of the pattern
    /// that f_u does not have (a structural diagonal) get 0.
    pub fn sparse_jacobian(
        &mut self,
        (t, u, p): (f64, &[f64], &[f64]),
        pattern: &SparsityPattern,
        (colors, n_colors): (&[usize], usize),
        values: &mut [f64],
    ) {
        for (m, x) in self.pl.iter_mut().enumerate() {
            *x = ChunkDual::constant(p[m]);
        }
        let mut start = 0;
        while start < n_colors {
            let width = CHUNK.min(n_colors - start);
            for (m, x) in self.ul.iter_mut().enumerate() {
                let mut eps = [0.0; CHUNK];
                if (start..start + width).contains(&colors[m]) {
                    eps[colors[m] - start] = 1.0;
                }
                *x = ChunkDual::new(u[m], eps);
            }
            self.lanes_rhs(t);
            for (j, &c) in colors.iter().enumerate() {
                if (start..start + width).contains(&c) {
                    for (k, &i) in pattern.col_range(j).zip(pattern.col_rows(j)) {
                        values[k] = self.fl[i].eps[c - start];
                    }
                }
            }
            start += CHUNK;
        }
    }

    /// u_bar += λᵀ f_u(t, u, p), p_bar += λᵀ f_p(t, u, p).
    pub fn vjp_add(
        &mut self,
        t: f64,
        u: &[f64],
        p: &[f64],
        lambda: &[f64],
        u_bar: &mut [f64],
        p_bar: &mut [f64],
    ) {
        self.counts.vjp += 1;
        if self
            .model
            .vjp(t, u, p, lambda, &mut self.scratch_u, &mut self.scratch_p)
        {
            for (a, b) in u_bar.iter_mut().zip(&self.scratch_u) {
                *a += b;
            }
            for (a, b) in p_bar.iter_mut().zip(&self.scratch_p) {
                *a += b;
            }
            return;
        }
        if self.ad_vjp_route() == VjpMode::Reverse {
            self.recorder.start();
            self.recorder.input(u, &mut self.vu);
            self.recorder.input(p, &mut self.vp);
            self.model.rhs(
                Var::constant(t),
                ArrayView1::from(&self.vu[..]),
                ArrayView1::from(&self.vp[..]),
                ArrayViewMut1::from(&mut self.vf[..]),
            );
            self.counts.tape_sweeps += 1;
            let grad = self.recorder.sweep(&self.vf, lambda);
            let (gu, gp) = grad.split_at(self.n);
            for (a, b) in u_bar.iter_mut().zip(gu) {
                *a += b;
            }
            for (a, b) in p_bar.iter_mut().zip(gp) {
                *a += b;
            }
            return;
        }
        let (n, np) = (self.n, self.np);
        let cols = n + np;
        self.jacobian(t, u, p);
        for (row, &l) in lambda.iter().enumerate() {
            if l != 0.0 {
                let jr = &self.jac[row * cols..(row + 1) * cols];
                for (a, &j) in u_bar.iter_mut().zip(&jr[..n]) {
                    *a += l * j;
                }
                for (a, &j) in p_bar.iter_mut().zip(&jr[n..n + np]) {
                    *a += l * j;
                }
            }
        }
    }
}

/// Gradients of scalar functions g(u, p) by chunked forward-mode AD, with buffers allocated once.
pub struct ScalarGradient {
    ud: Vec<ChunkDual>,
    pd: Vec<ChunkDual>,
    /// Dual passes made.
    pub dual_passes: usize,
}

impl ScalarGradient {
    /// Buffers for n states and np parameters.
    pub fn new(n: usize, np: usize) -> Self {
        Self {
            ud: vec![ChunkDual::constant(0.0); n],
            pd: vec![ChunkDual::constant(0.0); np],
            dual_passes: 0,
        }
    }

    /// (u, p) as dual constants (no seed), for a pass that seeds something else.
    pub fn constants(&mut self, u: &[f64], p: &[f64]) -> (&[ChunkDual], &[ChunkDual]) {
        for (d, &x) in self.ud.iter_mut().zip(u) {
            *d = ChunkDual::constant(x);
        }
        for (d, &x) in self.pd.iter_mut().zip(p) {
            *d = ChunkDual::constant(x);
        }
        self.dual_passes += 1;
        (&self.ud, &self.pd)
    }

    /// Writes ∂g/∂u into `g_u` and ∂g/∂p into `g_p` (overwritten) and returns g(u, p), in
    /// ⌈(n + np)/CHUNK⌉ passes of `g` with dual numbers.
    pub fn gradient<F>(
        &mut self,
        u: &[f64],
        p: &[f64],
        g_u: &mut [f64],
        g_p: &mut [f64],
        g: F,
    ) -> f64
    where
        F: Fn(ArrayView1<ChunkDual>, ArrayView1<ChunkDual>) -> ChunkDual,
    {
        let (n, np) = (u.len(), p.len());
        let cols = n + np;
        let mut value;
        let mut start = 0;
        loop {
            let seed = |c: usize, x: f64| {
                let mut eps = [0.0; CHUNK];
                if c >= start && c < start + CHUNK {
                    eps[c - start] = 1.0;
                }
                ChunkDual::new(x, eps)
            };
            for (m, d) in self.ud.iter_mut().enumerate() {
                *d = seed(m, u[m]);
            }
            for (m, d) in self.pd.iter_mut().enumerate() {
                *d = seed(n + m, p[m]);
            }
            let r = g(
                ArrayView1::from(&self.ud[..]),
                ArrayView1::from(&self.pd[..]),
            );
            self.dual_passes += 1;
            value = r.re;
            for d in 0..CHUNK.min(cols.saturating_sub(start)) {
                let c = start + d;
                let e = r.eps[d];
                if c < n {
                    g_u[c] = e;
                } else {
                    g_p[c - n] = e;
                }
            }
            start += CHUNK;
            if start >= cols {
                break;
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayView1;
    use odesens_solver::Scalar;

    /// u' = −u, one parameter per state: n = np = 10⁵, as a large sparse model.
    struct Big;
    impl OdeSystem for Big {
        fn n_states(&self) -> usize {
            100_000
        }
        fn n_params(&self) -> usize {
            100_000
        }
        fn rhs<S: Scalar>(
            &self,
            _t: S,
            u: ArrayView1<S>,
            p: ArrayView1<S>,
            mut du: ArrayViewMut1<S>,
        ) {
            for i in 0..u.len() {
                du[i] = -p[i] * u[i];
            }
        }
    }

    #[test]
    fn large_models_do_not_reserve_a_dense_jacobian() {
        // The dense [f_u f_p] would be 10⁵ × 2·10⁵ values (160 GB): it must not be reserved up front.
        let mut der = Derivatives::new(&Big);
        assert!(der.jac.capacity() == 0);
        let (u, p) = (vec![2.0; 100_000], vec![3.0; 100_000]);
        let (mut ub, mut pb) = (vec![0.0; 100_000], vec![0.0; 100_000]);
        let mut lambda = vec![0.0; 100_000];
        lambda[7] = 1.0;
        der.vjp_add(0.0, &u, &p, &lambda, &mut ub, &mut pb);
        assert_eq!((ub[7], pb[7], ub[8]), (-3.0, -2.0, 0.0));
        assert!(der.jac.capacity() == 0);
    }
}
