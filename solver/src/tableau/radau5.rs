//! Radau IIA of order 5 (3 stages, collocation at c = ((4 − √6)/10, (4 + √6)/10, 1)), in Hairer's
//! implementation RADAU5 (Hairer & Wanner, *Solving ODEs II*, §IV.8; radau5.f): the stage increments
//! Z = (Y_i − u_n) solve Z = h (A ⊗ I) F(u_n + Z); simplified Newton in the coordinates W = (T⁻¹ ⊗ I) Z,
//! where T⁻¹A⁻¹T = diag(γ, [[α, −β], [β, α]]), needs one real system (γ/h I − J) and one complex one
//! ((α + iβ)/h I − J) per iteration — the complex one is factored here as the equivalent real 2n × 2n
//! system [[α/h I − J, −β/h I], [β/h I, α/h I − J]], which costs the same flops. The error estimate is
//! RADAU5's filtered one, (γ/h I − J)⁻¹ (f(u_n) + Σ d_i Z_i / h), refined once after a rejection; step
//! sizes by Gustafsson's predictive controller; the new stages' starting values from the previous step's
//! collocation polynomial. As in RADAU5 the tolerances are mapped to rtol' = 0.1 rtol^{2/3} (atol scaled
//! alike), since the embedded estimate is of order 3.

/// Nodes c_i.
pub const C: [f64; 3] = [0.15505102572168222, 0.6449489742783178, 1.0];
/// The Butcher matrix A (b = its last row: stiffly accurate).
#[rustfmt::skip]
pub const A: [[f64; 3]; 3] = [
    [0.19681547722366044, -0.06553542585019838, 0.02377097434822015],
    [0.3944243147390873,   0.29207341166522843, -0.04154875212599792],
    [0.37640306270046725,  0.5124858261884216,   0.1111111111111111],
];
/// T (radau5.f), with T⁻¹A⁻¹T = diag(γ, [[α, −β], [β, α]]).
#[rustfmt::skip]
pub const T: [[f64; 3]; 3] = [
    [9.1232394870892942792e-02, -0.14125529502095420843, -3.0029194105147424492e-02],
    [0.24171793270710701896,     0.20412935229379993199,  0.38294211275726193779],
    [0.96604818261509293619,     1.0,                     0.0],
];
/// T⁻¹ (radau5.f).
#[rustfmt::skip]
pub const TI: [[f64; 3]; 3] = [
    [ 4.3255798900631553510,    0.33919925181580986954,  0.54177053993587487119],
    [-4.1787185915519047273,   -0.32768282076106238708,  0.47662355450055045196],
    [-0.50287263494578687595,   2.5719269498556054292,  -0.59603920482822492497],
];
/// The real eigenvalue γ of A⁻¹.
pub const GAMMA: f64 = 3.6378342527444962;
/// The complex pair α ± iβ of A⁻¹.
pub const ALPHA: f64 = 2.6810828736277523;
/// See [`ALPHA`].
pub const BETA: f64 = 3.0504301992474105;
/// Error-estimate weights d_i = −(13 + 7√6)/3, (−13 + 7√6)/3, −1/3.
pub const D: [f64; 3] = [-10.048809399827414, 1.382142733160748, -1.0 / 3.0];
