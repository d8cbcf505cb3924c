//! The parts of num-dual's `DualNum` and its supertraits that every odesens scalar type implements the
//! same way, given a constructor `Self::constant(f64)`, a value field `re` and a chain rule
//! `self.chain(f(x), f'(x))`: shared by [`crate::ad::lanes::Lanes`] (forward mode) and [`crate::ad::tape::Var`]
//! (reverse mode), which differ only in how they store derivatives.

/// `Zero`, `One`, `Num`, `Signed`, `Inv`, `Sum`, `Product`, `FromPrimitive`, `DualStruct`, `Mappable`
/// and ndarray's `ScalarOperand` for `$ty` (with impl generics `[$($g)*]`); `$is_zero` decides
/// `Zero::is_zero` (a value and derivative test that depends on the storage).
macro_rules! scalar_traits {
    ([$($g:tt)*] $ty:ty, $is_zero:expr) => {
        impl<$($g)*> Zero for $ty {
            fn zero() -> Self {
                Self::constant(0.0)
            }
            fn is_zero(&self) -> bool {
                ($is_zero)(self)
            }
        }

        impl<$($g)*> One for $ty {
            fn one() -> Self {
                Self::constant(1.0)
            }
        }

        impl<$($g)*> Num for $ty {
            type FromStrRadixErr = <f64 as Num>::FromStrRadixErr;
            fn from_str_radix(s: &str, radix: u32) -> Result<Self, Self::FromStrRadixErr> {
                f64::from_str_radix(s, radix).map(Self::constant)
            }
        }

        impl<$($g)*> Signed for $ty {
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

        impl<$($g)*> Inv for $ty {
            type Output = Self;
            fn inv(self) -> Self {
                self.recip()
            }
        }

        impl<$($g)*> Sum for $ty {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                iter.fold(Self::zero(), |a, b| a + b)
            }
        }

        impl<$($g)*> Product for $ty {
            fn product<I: Iterator<Item = Self>>(iter: I) -> Self {
                iter.fold(Self::one(), |a, b| a * b)
            }
        }

        impl<$($g)*> FromPrimitive for $ty {
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

        impl<$($g)*> DualStruct for $ty {
            type Real = f64;
            type Inner = f64;
            fn re(&self) -> f64 {
                self.re
            }
            fn from_inner(inner: &f64) -> Self {
                Self::constant(*inner)
            }
        }

        impl<$($g)*> Mappable<Self> for $ty {
            type Output<O> = O;
            fn map_dual<G: Fn(Self) -> O, O>(self, g: G) -> O {
                g(self)
            }
        }

        impl<$($g)*> ndarray::ScalarOperand for $ty {}
    };
}
pub(crate) use scalar_traits;

/// The body of a `DualNum` impl through the chain rule, every function but `atan2` (whose second
/// argument each type handles its own way).
macro_rules! dual_num_body {
    () => {
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
    };
}
pub(crate) use dual_num_body;
