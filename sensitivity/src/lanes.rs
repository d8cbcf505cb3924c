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

impl<const N: usize> Zero for Lanes<N> {
    fn zero() -> Self {
        Self::constant(0.0)
    }
    fn is_zero(&self) -> bool {
        self.re == 0.0 && self.eps.iter().all(|&e| e == 0.0)
    }
}

impl<const N: usize> One for Lanes<N> {
    fn one() -> Self {
        Self::constant(1.0)
    }
}

impl<const N: usize> Num for Lanes<N> {
    type FromStrRadixErr = <f64 as Num>::FromStrRadixErr;
    fn from_str_radix(s: &str, radix: u32) -> Result<Self, Self::FromStrRadixErr> {
        f64::from_str_radix(s, radix).map(Self::constant)
    }
}

impl<const N: usize> Signed for Lanes<N> {
    fn abs(&self) -> Self {
        if self.re < 0.0 { -*self } else { *self }
    }
    fn abs_sub(&self, other: &Self) -> Self {
        if self.re > other.re {
            *self - *other
        } else {
            Self::zero()
        }
    }
    fn signum(&self) -> Self {
        Self::constant(self.re.signum())
    }
    fn is_positive(&self) -> bool {
        self.re.is_sign_positive()
    }
    fn is_negative(&self) -> bool {
        self.re.is_sign_negative()
    }
}

impl<const N: usize> Inv for Lanes<N> {
    type Output = Self;
    fn inv(self) -> Self {
        self.recip()
    }
}

impl<const N: usize> Sum for Lanes<N> {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::zero(), |a, b| a + b)
    }
}

impl<const N: usize> Product for Lanes<N> {
    fn product<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::one(), |a, b| a * b)
    }
}

impl<const N: usize> FromPrimitive for Lanes<N> {
    fn from_i64(n: i64) -> Option<Self> {
        f64::from_i64(n).map(Self::constant)
    }
    fn from_u64(n: u64) -> Option<Self> {
        f64::from_u64(n).map(Self::constant)
    }
    fn from_f64(n: f64) -> Option<Self> {
        Some(Self::constant(n))
    }
}

impl<const N: usize> DualStruct for Lanes<N> {
    type Real = f64;
    type Inner = f64;
    fn re(&self) -> f64 {
        self.re
    }
    fn from_inner(inner: &f64) -> Self {
        Self::constant(*inner)
    }
}

impl<const N: usize> Mappable<Self> for Lanes<N> {
    type Output<O> = O;
    fn map_dual<G: Fn(Self) -> O, O>(self, g: G) -> O {
        g(self)
    }
}

impl<const N: usize> ndarray::ScalarOperand for Lanes<N> {}

impl<const N: usize> DualNum for Lanes<N> {
    type Primitive = f64;
    const NDERIV: usize = 1;
    type InnerDual = f64;

    fn from_re(re: f64) -> Self {
        Self::constant(re)
    }
    fn scale(self, factor: &f64) -> Self {
        self * *factor
    }
    #[inline]
    fn recip(&self) -> Self {
        let r = 1.0 / self.re;
        self.chain(r, -r * r)
    }
    fn powi(&self, n: i32) -> Self {
        match n {
            0 => Self::one(),
            1 => *self,
            2 => *self * *self,
            _ => self.chain(self.re.powi(n), f64::from(n) * self.re.powi(n - 1)),
        }
    }
    fn powf(&self, n: f64) -> Self {
        if n == 0.0 {
            Self::one()
        } else if n == 1.0 {
            *self
        } else {
            self.chain(self.re.powf(n), n * self.re.powf(n - 1.0))
        }
    }
    #[inline]
    fn sqrt(&self) -> Self {
        let s = self.re.sqrt();
        self.chain(s, 0.5 / s)
    }
    fn cbrt(&self) -> Self {
        let c = self.re.cbrt();
        self.chain(c, 1.0 / (3.0 * c * c))
    }
    #[inline]
    fn exp(&self) -> Self {
        let e = self.re.exp();
        self.chain(e, e)
    }
    fn exp2(&self) -> Self {
        let e = self.re.exp2();
        self.chain(e, e * std::f64::consts::LN_2)
    }
    fn exp_m1(&self) -> Self {
        self.chain(self.re.exp_m1(), self.re.exp())
    }
    #[inline]
    fn ln(&self) -> Self {
        self.chain(self.re.ln(), 1.0 / self.re)
    }
    fn log(&self, base: f64) -> Self {
        self.chain(self.re.log(base), 1.0 / (self.re * base.ln()))
    }
    fn log2(&self) -> Self {
        self.chain(self.re.log2(), 1.0 / (self.re * std::f64::consts::LN_2))
    }
    fn log10(&self) -> Self {
        self.chain(self.re.log10(), 1.0 / (self.re * std::f64::consts::LN_10))
    }
    fn ln_1p(&self) -> Self {
        self.chain(self.re.ln_1p(), 1.0 / (1.0 + self.re))
    }
    #[inline]
    fn sin(&self) -> Self {
        let (s, c) = self.re.sin_cos();
        self.chain(s, c)
    }
    #[inline]
    fn cos(&self) -> Self {
        let (s, c) = self.re.sin_cos();
        self.chain(c, -s)
    }
    fn tan(&self) -> Self {
        let t = self.re.tan();
        self.chain(t, 1.0 + t * t)
    }
    #[inline]
    fn sin_cos(&self) -> (Self, Self) {
        let (s, c) = self.re.sin_cos();
        (self.chain(s, c), self.chain(c, -s))
    }
    fn asin(&self) -> Self {
        self.chain(self.re.asin(), 1.0 / (1.0 - self.re * self.re).sqrt())
    }
    fn acos(&self) -> Self {
        self.chain(self.re.acos(), -1.0 / (1.0 - self.re * self.re).sqrt())
    }
    fn atan(&self) -> Self {
        self.chain(self.re.atan(), 1.0 / (1.0 + self.re * self.re))
    }
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
    fn sinh(&self) -> Self {
        self.chain(self.re.sinh(), self.re.cosh())
    }
    fn cosh(&self) -> Self {
        self.chain(self.re.cosh(), self.re.sinh())
    }
    fn tanh(&self) -> Self {
        let t = self.re.tanh();
        self.chain(t, 1.0 - t * t)
    }
    fn asinh(&self) -> Self {
        self.chain(self.re.asinh(), 1.0 / (self.re * self.re + 1.0).sqrt())
    }
    fn acosh(&self) -> Self {
        self.chain(self.re.acosh(), 1.0 / (self.re * self.re - 1.0).sqrt())
    }
    fn atanh(&self) -> Self {
        self.chain(self.re.atanh(), 1.0 / (1.0 - self.re * self.re))
    }
    fn sph_j0(&self) -> Self {
        // j0(x) = sin x / x, j0'(x) = −j1(x).
        let x = self.re;
        if x.abs() < 1e-4 {
            self.chain(1.0 - x * x / 6.0, -x / 3.0)
        } else {
            self.chain(x.sin() / x, -(x.sin() / (x * x) - x.cos() / x))
        }
    }
    fn sph_j1(&self) -> Self {
        // j1(x) = sin x/x² − cos x/x, j1'(x) = j0(x) − 2 j1(x)/x.
        let x = self.re;
        if x.abs() < 1e-4 {
            self.chain(x / 3.0, 1.0 / 3.0 - x * x / 10.0)
        } else {
            let (s, c) = x.sin_cos();
            let j1 = s / (x * x) - c / x;
            self.chain(j1, s / x - 2.0 * j1 / x)
        }
    }
    fn sph_j2(&self) -> Self {
        // j2(x) = (3/x² − 1) sin x/x − 3 cos x/x², j2'(x) = j1(x) − 3 j2(x)/x.
        let x = self.re;
        if x.abs() < 1e-4 {
            self.chain(x * x / 15.0, 2.0 * x / 15.0)
        } else {
            let (s, c) = x.sin_cos();
            let j1 = s / (x * x) - c / x;
            let j2 = (3.0 / (x * x) - 1.0) * s / x - 3.0 * c / (x * x);
            self.chain(j2, j1 - 3.0 * j2 / x)
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
