//! `Var`: reverse-mode automatic differentiation on a per-thread tape, for vector–Jacobian products
//! whose cost does not grow with the number of inputs.
//!
//! Forward mode gives λᵀ[f_u f_p] only through the whole Jacobian, ⌈(n + p)/CHUNK⌉ [`Lanes`] passes,
//! so an adjoint built on it grows with the parameter count like forward sensitivities do. Reverse mode
//! records the rhs once — one tape node (two parent indices and two local partials) per elementary
//! operation — and sweeps it backwards from the seed λ: the cost is a small multiple of one rhs
//! whatever n + p is (Griewank & Walther, *Evaluating Derivatives*, 2nd ed., §3.2, SIAM 2008).
//!
//! Written here because the maintained Rust reverse-mode crates either need nightly (`std::autodiff`),
//! allocate per operation behind `Rc` graphs, or do not implement num-dual's `DualNum`, which every model's
//! generic `rhs` is written against. The tape lives in a thread-local `Vec` that keeps its capacity, so
//! after the first call a vjp allocates nothing; rayon threads each have their own tape.
//!
//! [`Lanes`]: crate::ad::lanes::Lanes

use std::cell::UnsafeCell;
use std::fmt;
use std::iter::{Product, Sum};
use std::ops::{
    Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Rem, RemAssign, Sub, SubAssign,
};

use num_dual::{DualNum, DualStruct, Mappable};
use num_traits::{FromPrimitive, Inv, Num, One, Signed, Zero};

use crate::ad::scalar_impls::{dual_num_body, scalar_traits};

/// Index of "no node": a constant's.
const NONE: u32 = u32::MAX;

/// Node 0 of every recording: the parent of nothing-to-propagate (a missing second parent, with partial
/// 0), so that the backward sweep adds unconditionally.
const SINK: u32 = 0;
const SINK_NODE: Node = Node {
    a: SINK,
    b: SINK,
    da: 0.0,
    db: 0.0,
};

/// One elementary operation: its parents and ∂(result)/∂(parent).
#[derive(Clone, Copy, Debug)]
struct Node {
    a: u32,
    b: u32,
    da: f64,
    db: f64,
}

thread_local! {
    /// This thread's tape. An `UnsafeCell` rather than a `RefCell`: the borrow flag cost ~20 % of a
    /// recording. Sound because every access below is a short, non-reentrant borrow confined to one
    /// function of this module that calls no user code while it holds the reference.
    static TAPE: UnsafeCell<Vec<Node>> = const { UnsafeCell::new(Vec::new()) };
}

#[inline(always)]
fn push(a: u32, da: f64, b: u32, db: f64) -> u32 {
    TAPE.with(|t| {
        // SAFETY: see `TAPE`; `Vec::push` runs no user code.
        let t = unsafe { &mut *t.get() };
        let idx = t.len();
        t.push(Node { a, b, da, db });
        idx as u32
    })
}

/// Runs `f` on this thread's tape.
fn with_tape<R>(f: impl FnOnce(&mut Vec<Node>) -> R) -> R {
    // SAFETY: see `TAPE`; the closures passed here only read or clear the tape.
    TAPE.with(|t| f(unsafe { &mut *t.get() }))
}

/// A value recorded on the current thread's tape (or a constant, which records nothing).
#[derive(Clone, Copy, Debug)]
pub struct Var {
    /// The value.
    pub re: f64,
    idx: u32,
}

impl Var {
    /// A constant: derivatives do not flow through it.
    #[inline(always)]
    pub fn constant(re: f64) -> Self {
        Self { re, idx: NONE }
    }

    /// Is this a constant (not on the tape)?
    pub fn is_constant(&self) -> bool {
        self.idx == NONE
    }

    /// f(x) with f'(x) = `df`.
    #[inline(always)]
    fn chain(&self, f: f64, df: f64) -> Self {
        if self.idx == NONE {
            return Self::constant(f);
        }
        Self {
            re: f,
            idx: push(self.idx, df, SINK, 0.0),
        }
    }

    /// f(x, y) with partials `dx`, `dy`.
    #[inline(always)]
    fn chain2(&self, other: &Self, f: f64, dx: f64, dy: f64) -> Self {
        match (self.idx, other.idx) {
            (NONE, NONE) => Self::constant(f),
            (a, NONE) => Self {
                re: f,
                idx: push(a, dx, SINK, 0.0),
            },
            (NONE, b) => Self {
                re: f,
                idx: push(b, dy, SINK, 0.0),
            },
            (a, b) => Self {
                re: f,
                idx: push(a, dx, b, dy),
            },
        }
    }
}

/// Reverse-mode evaluation of a vector function's vjp: create inputs, run the function on [`Var`]s,
/// then [`Recorder::sweep`] from a seed on the outputs. Holds the adjoint buffer (allocated once).
#[derive(Debug, Default)]
pub struct Recorder {
    adjoint: Vec<f64>,
    inputs: usize,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Clears this thread's tape to begin a recording; then create the inputs with [`Recorder::input`]
    /// before any other `Var` operation.
    pub fn start(&mut self) {
        with_tape(|t| {
            t.clear();
            t.push(SINK_NODE);
        });
        self.inputs = 0;
    }

    /// Records `values` as the next inputs (numbered in order after [`Recorder::start`]) into `out`.
    pub fn input(&mut self, values: &[f64], out: &mut [Var]) {
        let first = with_tape(|t| {
            let first = t.len();
            t.extend(std::iter::repeat_n(SINK_NODE, values.len()));
            first
        });
        debug_assert_eq!(first, self.inputs + 1, "inputs come first, after start()");
        for (k, (o, &v)) in out.iter_mut().zip(values).enumerate() {
            *o = Var {
                re: v,
                idx: (first + k) as u32,
            };
        }
        self.inputs += values.len();
    }

    /// Sweeps the tape backwards from Σ_i seed_i · outputs_i and returns ∂/∂(input k) of that sum for
    /// every input, in input order.
    pub fn sweep(&mut self, outputs: &[Var], seed: &[f64]) -> &[f64] {
        with_tape(|tape| {
            assert!(
                u32::try_from(tape.len()).is_ok(),
                "reverse-mode tape longer than u32::MAX nodes"
            );
            self.adjoint.clear();
            self.adjoint.resize(tape.len(), 0.0);
            for (o, &s) in outputs.iter().zip(seed) {
                if o.idx != NONE {
                    self.adjoint[o.idx as usize] += s;
                }
            }
            // Every parent precedes its node; a missing parent is the sink (partial 0).
            for k in (self.inputs + 1..tape.len()).rev() {
                let g = self.adjoint[k];
                let node = tape[k];
                self.adjoint[node.a as usize] += g * node.da;
                self.adjoint[node.b as usize] += g * node.db;
            }
        });
        &self.adjoint[1..=self.inputs]
    }

    /// Number of nodes on this thread's tape (inputs included).
    pub fn tape_len() -> usize {
        with_tape(|t| t.len().saturating_sub(1))
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.re)
    }
}

impl PartialEq for Var {
    fn eq(&self, other: &Self) -> bool {
        self.re == other.re
    }
}

impl PartialEq<f64> for Var {
    fn eq(&self, other: &f64) -> bool {
        self.re == *other
    }
}

impl PartialOrd for Var {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.re.partial_cmp(&other.re)
    }
}

impl PartialOrd<f64> for Var {
    fn partial_cmp(&self, other: &f64) -> Option<std::cmp::Ordering> {
        self.re.partial_cmp(other)
    }
}

impl From<f64> for Var {
    fn from(re: f64) -> Self {
        Self::constant(re)
    }
}

impl Add for Var {
    type Output = Self;
    #[inline(always)]
    fn add(self, rhs: Self) -> Self {
        self.chain2(&rhs, self.re + rhs.re, 1.0, 1.0)
    }
}

impl Sub for Var {
    type Output = Self;
    #[inline(always)]
    fn sub(self, rhs: Self) -> Self {
        self.chain2(&rhs, self.re - rhs.re, 1.0, -1.0)
    }
}

impl Mul for Var {
    type Output = Self;
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        self.chain2(&rhs, self.re * rhs.re, rhs.re, self.re)
    }
}

impl Div for Var {
    type Output = Self;
    #[inline(always)]
    fn div(self, rhs: Self) -> Self {
        let inv = 1.0 / rhs.re;
        let q = self.re * inv;
        self.chain2(&rhs, q, inv, -q * inv)
    }
}

impl Rem for Var {
    type Output = Self;
    /// x mod y = x − y·trunc(x/y): partials 1 and −trunc(x/y) (almost everywhere).
    fn rem(self, rhs: Self) -> Self {
        let k = (self.re / rhs.re).trunc();
        self.chain2(&rhs, self.re % rhs.re, 1.0, -k)
    }
}

impl Neg for Var {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        self.chain(-self.re, -1.0)
    }
}

// With f64 on the right: one parent only.
impl Add<f64> for Var {
    type Output = Self;
    #[inline(always)]
    fn add(self, rhs: f64) -> Self {
        self.chain(self.re + rhs, 1.0)
    }
}
impl Sub<f64> for Var {
    type Output = Self;
    #[inline(always)]
    fn sub(self, rhs: f64) -> Self {
        self.chain(self.re - rhs, 1.0)
    }
}
impl Mul<f64> for Var {
    type Output = Self;
    #[inline(always)]
    fn mul(self, rhs: f64) -> Self {
        self.chain(self.re * rhs, rhs)
    }
}
impl Div<f64> for Var {
    type Output = Self;
    #[inline(always)]
    fn div(self, rhs: f64) -> Self {
        self.chain(self.re / rhs, 1.0 / rhs)
    }
}
impl Rem<f64> for Var {
    type Output = Self;
    fn rem(self, rhs: f64) -> Self {
        self.chain(self.re % rhs, 1.0)
    }
}

macro_rules! ref_ops {
    ($($trait:ident $method:ident),*) => {$(
        impl<'r> $trait<&'r Var> for Var {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: &'r Var) -> Self {
                $trait::$method(self, *rhs)
            }
        }
    )*};
}
ref_ops!(Add add, Sub sub, Mul mul, Div div, Rem rem);

macro_rules! assign_ops {
    ($($trait:ident $method:ident $op:ident $op_method:ident),*) => {$(
        impl $trait for Var {
            #[inline(always)]
            fn $method(&mut self, rhs: Self) {
                *self = $op::$op_method(*self, rhs);
            }
        }
        impl $trait<f64> for Var {
            #[inline(always)]
            fn $method(&mut self, rhs: f64) {
                *self = $op::$op_method(*self, rhs);
            }
        }
    )*};
}
assign_ops!(AddAssign add_assign Add add, SubAssign sub_assign Sub sub, MulAssign mul_assign Mul mul, DivAssign div_assign Div div, RemAssign rem_assign Rem rem);

scalar_traits!([] Var, |x: &Var| x.re == 0.0 && x.idx == NONE);

impl DualNum for Var {
    dual_num_body!();

    fn atan2(&self, other: Self) -> Self {
        // d atan2(y, x) = (x dy − y dx) / (x² + y²)
        let (y, x) = (self.re, other.re);
        let r2 = x * x + y * y;
        self.chain2(&other, y.atan2(x), x / r2, -y / r2)
    }
}

#[cfg(test)]
mod tests {
    use super::{Recorder, Var};
    use num_dual::{Dual64, DualNum};

    /// Every function's gradient (two inputs) against num-dual's `Dual64`, one direction per input.
    #[test]
    fn reverse_matches_dual64() {
        let (x0, y0) = (0.37, 1.9);
        let mut rec = Recorder::new();
        type F = dyn Fn(Var, Var) -> Var;
        type D = dyn Fn(Dual64, Dual64) -> Dual64;
        let check = |rec: &mut Recorder, name: &str, f: &F, g: &D| {
            rec.start();
            let mut v = [Var::constant(0.0); 2];
            rec.input(&[x0, y0], &mut v);
            let out = f(v[0], v[1]);
            let grad = rec.sweep(&[out], &[1.0]).to_vec();
            let dx = g(Dual64::new(x0, 1.0), Dual64::from(y0));
            let dy = g(Dual64::from(x0), Dual64::new(y0, 1.0));
            assert!(
                (out.re - dx.re).abs() <= 1e-14 * dx.re.abs().max(1.0),
                "{name}: value"
            );
            for (k, (got, want)) in grad.iter().zip([dx.eps, dy.eps]).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "{name}: input {k}: {got} vs {want}"
                );
            }
        };
        check(&mut rec, "add", &|a, b| a + b, &|a, b| a + b);
        check(&mut rec, "sub", &|a, b| a - b, &|a, b| a - b);
        check(&mut rec, "mul", &|a, b| a * b, &|a, b| a * b);
        check(&mut rec, "div", &|a, b| a / b, &|a, b| a / b);
        check(
            &mut rec,
            "scalar",
            &|a, b| a * 2.0 + 1.5 - b / 3.0,
            &|a, b| a * 2.0 + 1.5 - b / 3.0,
        );
        check(&mut rec, "reuse", &|a, b| a * a * b - a, &|a, b| {
            a * a * b - a
        });
        check(&mut rec, "neg", &|a, _| -a, &|a, _| -a);
        check(&mut rec, "recip", &|a, _| a.recip(), &|a, _| a.recip());
        check(&mut rec, "powi", &|a, _| a.powi(5), &|a, _| a.powi(5));
        check(&mut rec, "powf", &|_, b| b.powf(2.7), &|_, b| b.powf(2.7));
        check(&mut rec, "sqrt", &|_, b| b.sqrt(), &|_, b| b.sqrt());
        check(&mut rec, "cbrt", &|_, b| b.cbrt(), &|_, b| b.cbrt());
        check(&mut rec, "exp", &|a, _| a.exp(), &|a, _| a.exp());
        check(&mut rec, "exp2", &|a, _| a.exp2(), &|a, _| a.exp2());
        check(&mut rec, "exp_m1", &|a, _| a.exp_m1(), &|a, _| a.exp_m1());
        check(&mut rec, "ln", &|_, b| b.ln(), &|_, b| b.ln());
        check(&mut rec, "log", &|_, b| b.log(3.0), &|_, b| b.log(3.0));
        check(&mut rec, "log2", &|_, b| b.log2(), &|_, b| b.log2());
        check(&mut rec, "log10", &|_, b| b.log10(), &|_, b| b.log10());
        check(&mut rec, "ln_1p", &|a, _| a.ln_1p(), &|a, _| a.ln_1p());
        check(&mut rec, "sin", &|a, _| a.sin(), &|a, _| a.sin());
        check(&mut rec, "cos", &|a, _| a.cos(), &|a, _| a.cos());
        check(&mut rec, "tan", &|a, _| a.tan(), &|a, _| a.tan());
        check(
            &mut rec,
            "sin_cos",
            &|a, _| a.sin_cos().0 * a.sin_cos().1,
            &|a, _| a.sin_cos().0 * a.sin_cos().1,
        );
        check(&mut rec, "asin", &|a, _| a.asin(), &|a, _| a.asin());
        check(&mut rec, "acos", &|a, _| a.acos(), &|a, _| a.acos());
        check(&mut rec, "atan", &|a, _| a.atan(), &|a, _| a.atan());
        check(&mut rec, "atan2", &|a, b| a.atan2(b), &|a, b| a.atan2(b));
        check(&mut rec, "sinh", &|a, _| a.sinh(), &|a, _| a.sinh());
        check(&mut rec, "cosh", &|a, _| a.cosh(), &|a, _| a.cosh());
        check(&mut rec, "tanh", &|a, _| a.tanh(), &|a, _| a.tanh());
        check(&mut rec, "asinh", &|a, _| a.asinh(), &|a, _| a.asinh());
        check(&mut rec, "acosh", &|_, b| b.acosh(), &|_, b| b.acosh());
        check(&mut rec, "atanh", &|a, _| a.atanh(), &|a, _| a.atanh());
        check(&mut rec, "sph_j0", &|_, b| b.sph_j0(), &|_, b| b.sph_j0());
        check(&mut rec, "sph_j1", &|_, b| b.sph_j1(), &|_, b| b.sph_j1());
        check(&mut rec, "sph_j2", &|_, b| b.sph_j2(), &|_, b| b.sph_j2());
        // Constants record nothing.
        rec.start();
        let c = Var::constant(2.0) * Var::constant(3.0) + 1.0;
        assert!(c.is_constant());
        assert_eq!(Recorder::tape_len(), 0);
    }

    /// A vector function: the sweep from a seed equals seedᵀ J, J by forward mode.
    #[test]
    fn vjp_of_a_vector_function() {
        fn f<S: DualNum<Primitive = f64> + Copy>(x: &[S]) -> [S; 3] {
            [
                x[0] * x[1].sin() + x[2],
                x[1].exp() / (x[0] * x[0] + S::one()),
                (x[2] * x[0]).sqrt() - x[1].powi(3),
            ]
        }
        let x = [0.7, -0.4, 1.3];
        let seed = [0.5, -2.0, 1.5];
        let mut rec = Recorder::new();
        rec.start();
        let mut v = [Var::constant(0.0); 3];
        rec.input(&x, &mut v);
        let out = f(&v);
        let grad = rec.sweep(&out, &seed).to_vec();
        for (k, g) in grad.iter().enumerate() {
            let xd: Vec<Dual64> = (0..3)
                .map(|j| Dual64::new(x[j], f64::from(u8::from(j == k))))
                .collect();
            let col = f(&xd);
            let want: f64 = col.iter().zip(seed).map(|(c, s)| c.eps * s).sum();
            assert!((g - want).abs() < 1e-13, "input {k}: {g} vs {want}");
        }
    }
}
