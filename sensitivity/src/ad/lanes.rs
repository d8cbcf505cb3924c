//! `Lanes<N>`: a first-order dual number with N derivative directions stored as a plain `[f64; N]`.
//!
//! Written here (rather than using num-dual's `DualSVec64<N>`) because it is much faster on the hot
//! path: num-dual's vector dual keeps its derivative in an `Option<SVector>` and, measured on the double
//! pendulum, one `DualSVec64<8>` pass cost as much as 7 scalar `Dual64` passes. `Lanes<N>` evaluates
//! each elementary function once (value and derivative) and then does N multiply–adds. It implements
//! num-dual's `DualNum`, so every model's generic `rhs` accepts it.

use std::fmt;
use std::iter::{Product, Sum};
use std::ops::{
    Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Rem, RemAssign, Sub, SubAssign,
};

use num_dual::{DualNum, DualStruct, Mappable};
use num_traits::{FromPrimitive, Inv, Num, One, Signed, Zero};

use crate::ad::scalar_impls::{dual_num_body, scalar_traits};

/// A dual number x + Σ_d ε_d x'_d with N derivative lanes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lanes<const N: usize> {
    /// The value.
    pub re: f64,
    /// The derivatives, one per lane.
    pub eps: [f64; N],
}

impl<const N: usize> Lanes<N> {
    /// A value with the given derivatives.
    #[inline(always)]
    pub fn new(re: f64, eps: [f64; N]) -> Self {
        Self { re, eps }
    }

    /// A constant (all derivatives zero).
    #[inline(always)]
    pub fn constant(re: f64) -> Self {
        Self { re, eps: [0.0; N] }
    }

    /// f(x) with f'(x) = `df`: the chain rule.
    #[inline(always)]
    fn chain(&self, f: f64, df: f64) -> Self {
        let mut eps = self.eps;
        for e in eps.iter_mut() {
            *e *= df;
        }
        Self { re: f, eps }
    }
}

impl<const N: usize> fmt::Display for Lanes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} + {:?}ε", self.re, self.eps)
    }
}

impl<const N: usize> PartialEq<f64> for Lanes<N> {
    fn eq(&self, other: &f64) -> bool {
        self.re == *other
    }
}

impl<const N: usize> PartialOrd for Lanes<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.re.partial_cmp(&other.re)
    }
}

impl<const N: usize> PartialOrd<f64> for Lanes<N> {
    fn partial_cmp(&self, other: &f64) -> Option<std::cmp::Ordering> {
        self.re.partial_cmp(other)
    }
}

impl<const N: usize> From<f64> for Lanes<N> {
    fn from(re: f64) -> Self {
        Self::constant(re)
    }
}

// Arithmetic with another dual.
impl<const N: usize> Add for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn add(mut self, rhs: Self) -> Self {
        self.re += rhs.re;
        for (a, b) in self.eps.iter_mut().zip(rhs.eps) {
            *a += b;
        }
        self
    }
}

impl<const N: usize> Sub for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn sub(mut self, rhs: Self) -> Self {
        self.re -= rhs.re;
        for (a, b) in self.eps.iter_mut().zip(rhs.eps) {
            *a -= b;
        }
        self
    }
}

impl<const N: usize> Mul for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        let mut eps = [0.0; N];
        for (d, e) in eps.iter_mut().enumerate() {
            *e = self.eps[d] * rhs.re + self.re * rhs.eps[d];
        }
        Self {
            re: self.re * rhs.re,
            eps,
        }
    }
}

impl<const N: usize> Div for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn div(self, rhs: Self) -> Self {
        let inv = 1.0 / rhs.re;
        let q = self.re * inv;
        let mut eps = [0.0; N];
        for (d, e) in eps.iter_mut().enumerate() {
            *e = (self.eps[d] - q * rhs.eps[d]) * inv;
        }
        Self { re: q, eps }
    }
}

impl<const N: usize> Rem for Lanes<N> {
    type Output = Self;
    /// x mod y = x − y·trunc(x/y): derivative x' − trunc(x/y)·y' (almost everywhere).
    fn rem(self, rhs: Self) -> Self {
        let k = (self.re / rhs.re).trunc();
        let mut eps = [0.0; N];
        for (d, e) in eps.iter_mut().enumerate() {
            *e = self.eps[d] - k * rhs.eps[d];
        }
        Self {
            re: self.re % rhs.re,
            eps,
        }
    }
}

impl<const N: usize> Neg for Lanes<N> {
    type Output = Self;
    #[inline(always)]
    fn neg(mut self) -> Self {
        self.re = -self.re;
        for e in self.eps.iter_mut() {
            *e = -*e;
        }
        self
    }
}

// By reference, and with f64.
macro_rules! forward_ops {
    ($($trait:ident $method:ident),*) => {$(
        impl<'r, const N: usize> $trait<&'r Lanes<N>> for Lanes<N> {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: &'r Lanes<N>) -> Self {
                $trait::$method(self, *rhs)
            }
        }
        impl<const N: usize> $trait<f64> for Lanes<N> {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: f64) -> Self {
                $trait::$method(self, Lanes::constant(rhs))
            }
        }
    )*};
}
forward_ops!(Add add, Sub sub, Mul mul, Div div, Rem rem);

macro_rules! assign_ops {
    ($($trait:ident $method:ident $op:ident $op_method:ident),*) => {$(
        impl<const N: usize> $trait for Lanes<N> {
            #[inline(always)]
            fn $method(&mut self, rhs: Self) {
                *self = $op::$op_method(*self, rhs);
            }
        }
        impl<const N: usize> $trait<f64> for Lanes<N> {
            #[inline(always)]
            fn $method(&mut self, rhs: f64) {
                *self = $op::$op_method(*self, rhs);
            }
        }
    )*};
}
assign_ops!(AddAssign add_assign Add add, SubAssign sub_assign Sub sub, MulAssign mul_assign Mul mul, DivAssign div_assign Div div, RemAssign rem_assign Rem rem);

scalar_traits!([const N: usize] Lanes<N>, |x: &Lanes<N>| x.re == 0.0 && x.eps.iter().all(|&e| e == 0.0));

impl<const N: usize> DualNum for Lanes<N> {
    dual_num_body!();

    fn atan2(&self, other: Self) -> Self {
        // d atan2(y, x) = (x dy − y dx) / (x² + y²)
        let (y, x) = (self.re, other.re);
        let r2 = x * x + y * y;
        let mut eps = [0.0; N];
        for (d, e) in eps.iter_mut().enumerate() {
            *e = (x * self.eps[d] - y * other.eps[d]) / r2;
        }
        Self {
            re: y.atan2(x),
            eps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lanes;
    use num_dual::{Dual64, DualNum};

    /// Every function against num-dual's `Dual64`, lane by lane.
    #[test]
    fn lanes_match_dual64() {
        let x = Lanes::<2>::new(0.37, [1.0, -2.5]);
        let y = Lanes::<2>::new(1.9, [0.5, 3.0]);
        let check = |name: &str, a: Lanes<2>, f: &dyn Fn(Dual64, Dual64) -> Dual64| {
            for d in 0..2 {
                let r = f(Dual64::new(x.re, x.eps[d]), Dual64::new(y.re, y.eps[d]));
                assert!(
                    (a.re - r.re).abs() <= 1e-14 * r.re.abs().max(1.0),
                    "{name}: value"
                );
                assert!(
                    (a.eps[d] - r.eps).abs() <= 1e-12 * r.eps.abs().max(1.0),
                    "{name}: lane {d}: {} vs {}",
                    a.eps[d],
                    r.eps
                );
            }
        };
        check("add", x + y, &|a, b| a + b);
        check("sub", x - y, &|a, b| a - b);
        check("mul", x * y, &|a, b| a * b);
        check("div", x / y, &|a, b| a / b);
        check("scalar", x * 2.0 + 1.5 - y / 3.0, &|a, b| {
            a * 2.0 + 1.5 - b / 3.0
        });
        check("neg", -x, &|a, _| -a);
        check("recip", x.recip(), &|a, _| a.recip());
        check("powi", x.powi(5), &|a, _| a.powi(5));
        check("powf", y.powf(2.7), &|_, b| b.powf(2.7));
        check("sqrt", y.sqrt(), &|_, b| b.sqrt());
        check("cbrt", y.cbrt(), &|_, b| b.cbrt());
        check("exp", x.exp(), &|a, _| a.exp());
        check("exp2", x.exp2(), &|a, _| a.exp2());
        check("exp_m1", x.exp_m1(), &|a, _| a.exp_m1());
        check("ln", y.ln(), &|_, b| b.ln());
        check("log", y.log(3.0), &|_, b| b.log(3.0));
        check("log2", y.log2(), &|_, b| b.log2());
        check("log10", y.log10(), &|_, b| b.log10());
        check("ln_1p", x.ln_1p(), &|a, _| a.ln_1p());
        check("sin", x.sin(), &|a, _| a.sin());
        check("cos", x.cos(), &|a, _| a.cos());
        check("tan", x.tan(), &|a, _| a.tan());
        check("sin_cos", x.sin_cos().0 * x.sin_cos().1, &|a, _| {
            a.sin_cos().0 * a.sin_cos().1
        });
        check("asin", x.asin(), &|a, _| a.asin());
        check("acos", x.acos(), &|a, _| a.acos());
        check("atan", x.atan(), &|a, _| a.atan());
        check("atan2", x.atan2(y), &|a, b| a.atan2(b));
        check("sinh", x.sinh(), &|a, _| a.sinh());
        check("cosh", x.cosh(), &|a, _| a.cosh());
        check("tanh", x.tanh(), &|a, _| a.tanh());
        check("asinh", x.asinh(), &|a, _| a.asinh());
        check("acosh", y.acosh(), &|_, b| b.acosh());
        check("atanh", x.atanh(), &|a, _| a.atanh());
        check("sph_j0", y.sph_j0(), &|_, b| b.sph_j0());
        check("sph_j1", y.sph_j1(), &|_, b| b.sph_j1());
        check("sph_j2", y.sph_j2(), &|_, b| b.sph_j2());
        // num-dual leaves `%` unimplemented: check y mod x = y − x·trunc(y/x) directly.
        let r = y % x;
        let k = (y.re / x.re).trunc();
        assert_eq!(r.re, y.re % x.re);
        for d in 0..2 {
            assert!((r.eps[d] - (y.eps[d] - k * x.eps[d])).abs() < 1e-15);
        }
    }
}
