//! Elementwise unary kernels: Keras 3 activations and the unary `keras.ops` math.
//!
//! Each op has one scalar formula ([`Unary::apply_scalar`]) and one derivative
//! ([`Unary::derivative_scalar`]); the slice kernels run exactly those formulas, one
//! monomorphised loop per op (no `match` inside the loop), so a slice result is
//! bitwise equal to the scalar reference. Large slices are split into fixed-size
//! chunks; an elementwise result does not depend on the split at all.

use crate::error::{check_len, Result};
use crate::par;

/// SELU scale (Klambauer et al. 2017), as in Keras 3.
const SELU_SCALE: f32 = 1.050_700_987_355_480_5_f64 as f32;
/// SELU alpha (Klambauer et al. 2017), as in Keras 3.
const SELU_ALPHA: f32 = 1.673_263_242_354_377_3_f64 as f32;
/// sqrt(2 / pi), the tanh-GELU constant.
const SQRT_2_OVER_PI: f32 = 0.797_884_560_802_865_4_f64 as f32;
/// The cubic coefficient of the tanh-GELU approximation.
const GELU_COEFF: f32 = 0.044_715;

/// Elements per parallel task for cheap ops (a few instructions per element).
const CHEAP_CHUNK: usize = 1 << 16;
/// Elements per parallel task for ops that call `exp`, `ln`, `tanh`, ...
const TRANSCENDENTAL_CHUNK: usize = 1 << 14;

/// An elementwise unary function: a Keras 3 activation or a unary `keras.ops` op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// `linear`: the identity.
    Linear,
    /// `relu`: `max(x, 0)`.
    Relu,
    /// `sigmoid`: `1 / (1 + exp(-x))`, evaluated without overflow for large `|x|`.
    Sigmoid,
    /// `tanh`.
    Tanh,
    /// `elu`: `x` for `x > 0`, else `alpha * (exp(x) - 1)`.
    Elu {
        /// The negative-side scale (Keras default 1.0).
        alpha: f32,
    },
    /// `selu`: `scale * elu(x, alpha)` with the fixed self-normalising constants.
    Selu,
    /// `gelu`: `x * Phi(x)`, exactly (erf) or with the tanh approximation.
    Gelu {
        /// Use the tanh approximation (Keras default false).
        approximate: bool,
    },
    /// `silu` (alias `swish`): `x * sigmoid(x)`.
    Silu,
    /// `softplus`: `log(1 + exp(x))`, evaluated stably.
    Softplus,
    /// `softsign`: `x / (1 + |x|)`.
    Softsign,
    /// `leaky_relu`: `x` for `x >= 0`, else `alpha * x`.
    LeakyRelu {
        /// The negative slope (Keras 3 default 0.2).
        alpha: f32,
    },
    /// `hard_sigmoid`: `relu6(x + 3) / 6` (Keras 3).
    HardSigmoid,
    /// `exponential` activation: `exp(x)`.
    Exponential,
    /// `negative`: `-x`.
    Negative,
    /// `exp`.
    Exp,
    /// `log`: natural logarithm.
    Log,
    /// `sqrt`.
    Sqrt,
    /// `square`: `x * x`.
    Square,
    /// `abs`.
    Abs,
    /// `sign`: -1, 0 or 1 (NaN stays NaN).
    Sign,
    /// `reciprocal`: `1 / x`.
    Reciprocal,
    /// `rsqrt`: `1 / sqrt(x)`.
    Rsqrt,
    /// `sin`.
    Sin,
    /// `cos`.
    Cos,
    /// `floor`.
    Floor,
    /// `round`: to nearest, ties to even (NumPy/Keras semantics).
    Round,
    /// `log1p`: `log(1 + x)`, accurate for small `x`.
    Log1p,
    /// `expm1`: `exp(x) - 1`, accurate for small `x`.
    Expm1,
    /// `relu6`: `min(max(x, 0), 6)`.
    Relu6,
}

// ---------------------------------------------------------------------------
// Scalar formulas. The slice kernels call these same functions.
// ---------------------------------------------------------------------------

/// Numerically stable logistic sigmoid: never evaluates `exp` of a positive number,
/// so it neither overflows nor loses the tiny values for very negative `x`.
#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        // Also the NaN branch: exp(NaN) = NaN propagates.
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `max(x, 0)` that keeps NaN (like NumPy's `maximum`).
#[inline]
fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// `min(max(x, 0), 6)` that keeps NaN.
#[inline]
fn relu6(x: f32) -> f32 {
    let r = relu(x);
    if r > 6.0 {
        6.0
    } else {
        r
    }
}

#[inline]
fn elu(x: f32, alpha: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        alpha * x.exp_m1()
    }
}

#[inline]
fn selu(x: f32) -> f32 {
    SELU_SCALE * elu(x, SELU_ALPHA)
}

#[inline]
fn leaky_relu(x: f32, alpha: f32) -> f32 {
    if x >= 0.0 {
        x
    } else {
        alpha * x
    }
}

/// `log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))`: no overflow, no cancellation.
#[inline]
fn softplus(x: f32) -> f32 {
    relu(x) + (-x.abs()).exp().ln_1p()
}

#[inline]
fn softsign(x: f32) -> f32 {
    x / (1.0 + x.abs())
}

#[inline]
fn hard_sigmoid(x: f32) -> f32 {
    relu6(x + 3.0) / 6.0
}

/// NumPy's `sign`: -1, 0 or 1; NaN stays NaN.
#[inline]
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else if x == 0.0 {
        0.0
    } else {
        x
    }
}

/// Tanh-approximate GELU. `0.5 * (1 + tanh(u))` is rewritten as `sigmoid(2u)`, which
/// is the same function without the cancellation of `1 + tanh(u)` for negative `x`.
#[inline]
fn gelu_tanh(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_COEFF * x * x * x);
    x * sigmoid(2.0 * u)
}

#[inline]
fn gelu_tanh_grad(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_COEFF * x * x * x);
    let s = sigmoid(2.0 * u);
    // d/du sigmoid(2u) = 2 s (1 - s); it underflows to 0 long before x*x overflows,
    // so guard the 0 * inf that would otherwise turn a saturated gradient into NaN.
    let ds = 2.0 * s * (1.0 - s);
    if ds == 0.0 {
        s
    } else {
        s + x * ds * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_COEFF * x * x)
    }
}

/// `erfc(z)` for `z >= 0` by the Chebyshev fit `erfcc` of Numerical Recipes
/// (Press, Teukolsky, Vetterling, Flannery, "Numerical Recipes in C", 2nd ed.,
/// section 6.2): fractional error below 1.2e-7 for every `z >= 0`. Evaluated in f64,
/// so `exp(-z^2)` is not spoiled by rounding `z^2` for large `z`.
fn erfc_nonneg(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t * (-z * z + poly).exp()
}

/// `erf(z)` for `|z| <= 0.5` by its Maclaurin series
/// `2/sqrt(pi) * sum_n (-1)^n z^(2n+1) / (n! (2n+1))`; ten terms leave a remainder
/// below 1e-12 there, and unlike `1 - erfc` it keeps full relative accuracy near 0.
fn erf_series(z: f64) -> f64 {
    let z2 = z * z;
    let mut term = z; // (-1)^n z^(2n+1) / n!
    let mut sum = 0.0;
    for n in 0..10 {
        sum += term / (2 * n + 1) as f64;
        term *= -z2 / (n + 1) as f64;
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

/// The error function `erf(x)` (`keras.ops.erf`), relative error about 1e-7: the
/// Maclaurin series for `|x| <= 0.5`, Numerical Recipes' `erfcc` elsewhere.
pub fn erf(x: f32) -> f32 {
    let z = f64::from(x);
    let r = if z.abs() <= 0.5 {
        erf_series(z)
    } else if z > 0.0 {
        1.0 - erfc_nonneg(z)
    } else if z < 0.0 {
        erfc_nonneg(-z) - 1.0
    } else {
        z // NaN
    };
    r as f32
}

/// The standard normal CDF `Phi(x) = (1 + erf(x / sqrt 2)) / 2`, taking `erfc` on the
/// negative side so `Phi` keeps its relative accuracy down to tiny values.
fn normal_cdf(x: f64) -> f64 {
    let z = x * std::f64::consts::FRAC_1_SQRT_2;
    if z.abs() <= 0.5 {
        0.5 + 0.5 * erf_series(z)
    } else if z < 0.0 {
        0.5 * erfc_nonneg(-z)
    } else {
        1.0 - 0.5 * erfc_nonneg(z)
    }
}

/// Exact GELU `0.5 x (1 + erf(x / sqrt 2)) = x * Phi(x)`.
#[inline]
fn gelu_exact(x: f32) -> f32 {
    let x = f64::from(x);
    (x * normal_cdf(x)) as f32
}

#[inline]
fn gelu_exact_grad(x: f32) -> f32 {
    // Phi(x) + x * phi(x), phi the standard normal density.
    let x = f64::from(x);
    let pdf = (-0.5 * x * x).exp()
        * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    (normal_cdf(x) + x * pdf) as f32
}

/// Runs `$body` with `$f` bound to the scalar forward function of `$op`: one closure
/// type per op, so every slice loop is monomorphised (and vectorised where the
/// formula allows) instead of matching on the op per element.
macro_rules! with_forward {
    ($op:expr, |$f:ident| $body:expr) => {
        match $op {
            Unary::Linear => {
                let $f = |v: f32| v;
                $body
            }
            Unary::Relu => {
                let $f = relu;
                $body
            }
            Unary::Sigmoid => {
                let $f = sigmoid;
                $body
            }
            Unary::Tanh => {
                let $f = f32::tanh;
                $body
            }
            Unary::Elu { alpha } => {
                let $f = move |v: f32| elu(v, alpha);
                $body
            }
            Unary::Selu => {
                let $f = selu;
                $body
            }
            Unary::Gelu { approximate: false } => {
                let $f = gelu_exact;
                $body
            }
            Unary::Gelu { approximate: true } => {
                let $f = gelu_tanh;
                $body
            }
            Unary::Silu => {
                let $f = |v: f32| v * sigmoid(v);
                $body
            }
            Unary::Softplus => {
                let $f = softplus;
                $body
            }
            Unary::Softsign => {
                let $f = softsign;
                $body
            }
            Unary::LeakyRelu { alpha } => {
                let $f = move |v: f32| leaky_relu(v, alpha);
                $body
            }
            Unary::HardSigmoid => {
                let $f = hard_sigmoid;
                $body
            }
            Unary::Exponential | Unary::Exp => {
                let $f = f32::exp;
                $body
            }
            Unary::Negative => {
                let $f = |v: f32| -v;
                $body
            }
            Unary::Log => {
                let $f = f32::ln;
                $body
            }
            Unary::Sqrt => {
                let $f = f32::sqrt;
                $body
            }
            Unary::Square => {
                let $f = |v: f32| v * v;
                $body
            }
            Unary::Abs => {
                let $f = f32::abs;
                $body
            }
            Unary::Sign => {
                let $f = sign;
                $body
            }
            Unary::Reciprocal => {
                let $f = |v: f32| 1.0 / v;
                $body
            }
            Unary::Rsqrt => {
                let $f = |v: f32| 1.0 / v.sqrt();
                $body
            }
            Unary::Sin => {
                let $f = f32::sin;
                $body
            }
            Unary::Cos => {
                let $f = f32::cos;
                $body
            }
            Unary::Floor => {
                let $f = f32::floor;
                $body
            }
            Unary::Round => {
                let $f = f32::round_ties_even;
                $body
            }
            Unary::Log1p => {
                let $f = f32::ln_1p;
                $body
            }
            Unary::Expm1 => {
                let $f = f32::exp_m1;
                $body
            }
            Unary::Relu6 => {
                let $f = relu6;
                $body
            }
        }
    };
}

/// Runs `$body` with `$g` bound to the derivative `|x, y| f'(x)` of `$op`. Ops for
/// which [`Unary::grad_needs_input`] is false read only `y`; the others read only `x`.
/// Kinks take the value JAX/TF use (relu'(0) = 0, abs'(0) = 0, leaky_relu'(0) = alpha).
macro_rules! with_derivative {
    ($op:expr, |$g:ident| $body:expr) => {
        match $op {
            Unary::Linear => {
                let $g = |_x: f32, _y: f32| 1.0f32;
                $body
            }
            Unary::Relu => {
                let $g = |_x: f32, y: f32| if y > 0.0 { 1.0f32 } else { 0.0 };
                $body
            }
            Unary::Sigmoid => {
                let $g = |_x: f32, y: f32| y * (1.0 - y);
                $body
            }
            Unary::Tanh => {
                let $g = |_x: f32, y: f32| 1.0 - y * y;
                $body
            }
            Unary::Elu { alpha } => {
                // For alpha >= 0, y <= 0 exactly when x <= 0, and f'(x) = alpha e^x = y + alpha.
                let $g = move |x: f32, y: f32| {
                    if alpha >= 0.0 {
                        if y > 0.0 {
                            1.0
                        } else {
                            y + alpha
                        }
                    } else if x > 0.0 {
                        1.0
                    } else {
                        alpha * x.exp()
                    }
                };
                $body
            }
            Unary::Selu => {
                let $g = |_x: f32, y: f32| {
                    if y > 0.0 {
                        SELU_SCALE
                    } else {
                        y + SELU_SCALE * SELU_ALPHA
                    }
                };
                $body
            }
            Unary::Gelu { approximate: false } => {
                let $g = |x: f32, _y: f32| gelu_exact_grad(x);
                $body
            }
            Unary::Gelu { approximate: true } => {
                let $g = |x: f32, _y: f32| gelu_tanh_grad(x);
                $body
            }
            Unary::Silu => {
                let $g = |x: f32, _y: f32| {
                    let s = sigmoid(x);
                    s * (1.0 + x * (1.0 - s))
                };
                $body
            }
            Unary::Softplus => {
                let $g = |x: f32, _y: f32| sigmoid(x);
                $body
            }
            Unary::Softsign => {
                let $g = |x: f32, _y: f32| {
                    let d = 1.0 + x.abs();
                    1.0 / (d * d)
                };
                $body
            }
            Unary::LeakyRelu { alpha } => {
                // For alpha >= 0, y > 0 exactly when x > 0.
                let $g = move |x: f32, y: f32| {
                    let positive = if alpha >= 0.0 { y > 0.0 } else { x > 0.0 };
                    if positive {
                        1.0
                    } else {
                        alpha
                    }
                };
                $body
            }
            Unary::HardSigmoid => {
                let $g = |_x: f32, y: f32| {
                    if y > 0.0 && y < 1.0 {
                        1.0f32 / 6.0
                    } else {
                        0.0
                    }
                };
                $body
            }
            Unary::Exponential | Unary::Exp => {
                let $g = |_x: f32, y: f32| y;
                $body
            }
            Unary::Negative => {
                let $g = |_x: f32, _y: f32| -1.0f32;
                $body
            }
            Unary::Log => {
                let $g = |x: f32, _y: f32| 1.0 / x;
                $body
            }
            Unary::Sqrt => {
                let $g = |_x: f32, y: f32| 0.5 / y;
                $body
            }
            Unary::Square => {
                let $g = |x: f32, _y: f32| 2.0 * x;
                $body
            }
            Unary::Abs => {
                let $g = |x: f32, _y: f32| sign(x);
                $body
            }
            Unary::Sign | Unary::Floor | Unary::Round => {
                let $g = |_x: f32, _y: f32| 0.0f32;
                $body
            }
            Unary::Reciprocal => {
                let $g = |_x: f32, y: f32| -(y * y);
                $body
            }
            Unary::Rsqrt => {
                // d/dx x^(-1/2) = -x^(-3/2) / 2 = -y^3 / 2.
                let $g = |_x: f32, y: f32| -0.5 * y * y * y;
                $body
            }
            Unary::Sin => {
                let $g = |x: f32, _y: f32| x.cos();
                $body
            }
            Unary::Cos => {
                let $g = |x: f32, _y: f32| -x.sin();
                $body
            }
            Unary::Log1p => {
                let $g = |x: f32, _y: f32| 1.0 / (1.0 + x);
                $body
            }
            Unary::Expm1 => {
                let $g = |_x: f32, y: f32| y + 1.0;
                $body
            }
            Unary::Relu6 => {
                let $g = |_x: f32, y: f32| if y > 0.0 && y < 6.0 { 1.0f32 } else { 0.0 };
                $body
            }
        }
    };
}

impl Unary {
    /// Every op, for tests and registries (parameterised ops with their Keras defaults).
    pub const ALL: [Unary; 30] = [
        Unary::Linear,
        Unary::Relu,
        Unary::Sigmoid,
        Unary::Tanh,
        Unary::Elu { alpha: 1.0 },
        Unary::Selu,
        Unary::Gelu { approximate: false },
        Unary::Gelu { approximate: true },
        Unary::Silu,
        Unary::Softplus,
        Unary::Softsign,
        Unary::LeakyRelu { alpha: 0.2 },
        Unary::HardSigmoid,
        Unary::Exponential,
        Unary::Negative,
        Unary::Exp,
        Unary::Log,
        Unary::Sqrt,
        Unary::Square,
        Unary::Abs,
        Unary::Sign,
        Unary::Reciprocal,
        Unary::Rsqrt,
        Unary::Sin,
        Unary::Cos,
        Unary::Floor,
        Unary::Round,
        Unary::Log1p,
        Unary::Expm1,
        Unary::Relu6,
    ];

    /// Looks an op up by its Keras activation / `keras.ops` name.
    ///
    /// `"swish"` is `silu`, `"absolute"` is `abs`. `alpha` is used by `elu` (default
    /// 1.0) and `leaky_relu` (default 0.2, as Keras 3); `approximate` by `gelu`
    /// (default false). Returns `None` for an unknown name.
    pub fn from_name(name: &str, alpha: Option<f32>, approximate: Option<bool>) -> Option<Unary> {
        let op = match name {
            "linear" => Unary::Linear,
            "relu" => Unary::Relu,
            "sigmoid" => Unary::Sigmoid,
            "tanh" => Unary::Tanh,
            "elu" => Unary::Elu {
                alpha: alpha.unwrap_or(1.0),
            },
            "selu" => Unary::Selu,
            "gelu" => Unary::Gelu {
                approximate: approximate.unwrap_or(false),
            },
            "silu" | "swish" => Unary::Silu,
            "softplus" => Unary::Softplus,
            "softsign" => Unary::Softsign,
            "leaky_relu" => Unary::LeakyRelu {
                alpha: alpha.unwrap_or(0.2),
            },
            "hard_sigmoid" => Unary::HardSigmoid,
            "exponential" => Unary::Exponential,
            "negative" => Unary::Negative,
            "exp" => Unary::Exp,
            "log" => Unary::Log,
            "sqrt" => Unary::Sqrt,
            "square" => Unary::Square,
            "abs" | "absolute" => Unary::Abs,
            "sign" => Unary::Sign,
            "reciprocal" => Unary::Reciprocal,
            "rsqrt" => Unary::Rsqrt,
            "sin" => Unary::Sin,
            "cos" => Unary::Cos,
            "floor" => Unary::Floor,
            "round" => Unary::Round,
            "log1p" => Unary::Log1p,
            "expm1" => Unary::Expm1,
            "relu6" => Unary::Relu6,
            _ => return None,
        };
        Some(op)
    }

    /// The canonical name ([`Unary::from_name`] of it gives the op back, up to parameters).
    pub fn name(&self) -> &'static str {
        match self {
            Unary::Linear => "linear",
            Unary::Relu => "relu",
            Unary::Sigmoid => "sigmoid",
            Unary::Tanh => "tanh",
            Unary::Elu { .. } => "elu",
            Unary::Selu => "selu",
            Unary::Gelu { .. } => "gelu",
            Unary::Silu => "silu",
            Unary::Softplus => "softplus",
            Unary::Softsign => "softsign",
            Unary::LeakyRelu { .. } => "leaky_relu",
            Unary::HardSigmoid => "hard_sigmoid",
            Unary::Exponential => "exponential",
            Unary::Negative => "negative",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Square => "square",
            Unary::Abs => "abs",
            Unary::Sign => "sign",
            Unary::Reciprocal => "reciprocal",
            Unary::Rsqrt => "rsqrt",
            Unary::Sin => "sin",
            Unary::Cos => "cos",
            Unary::Floor => "floor",
            Unary::Round => "round",
            Unary::Log1p => "log1p",
            Unary::Expm1 => "expm1",
            Unary::Relu6 => "relu6",
        }
    }

    /// `f(x)` for one value; the slice kernels compute exactly this, bit for bit.
    pub fn apply_scalar(self, x: f32) -> f32 {
        with_forward!(self, |f| f(x))
    }

    /// `f'(x)` given `x` and `y = f(x)`.
    ///
    /// When [`Unary::grad_needs_input`] is false only `y` is read, otherwise only `x`.
    pub fn derivative_scalar(self, x: f32, y: f32) -> f32 {
        with_derivative!(self, |g| g(x, y))
    }

    /// Whether the gradient needs the input `x`; when false it is computed from the
    /// output `y` alone (relu, sigmoid, tanh, exp, ...), so the graph may free `x`.
    pub fn grad_needs_input(self) -> bool {
        match self {
            // Negative (or NaN) alpha breaks "y > 0 iff x > 0"; see `with_derivative!`.
            Unary::Elu { alpha } | Unary::LeakyRelu { alpha } => alpha.is_nan() || alpha < 0.0,
            Unary::Gelu { .. }
            | Unary::Silu
            | Unary::Softplus
            | Unary::Softsign
            | Unary::Log
            | Unary::Square
            | Unary::Abs
            | Unary::Sin
            | Unary::Cos
            | Unary::Log1p => true,
            Unary::Linear
            | Unary::Relu
            | Unary::Sigmoid
            | Unary::Tanh
            | Unary::Selu
            | Unary::HardSigmoid
            | Unary::Exponential
            | Unary::Negative
            | Unary::Exp
            | Unary::Sqrt
            | Unary::Sign
            | Unary::Reciprocal
            | Unary::Rsqrt
            | Unary::Floor
            | Unary::Round
            | Unary::Expm1
            | Unary::Relu6 => false,
        }
    }

    /// Whether the op is a handful of arithmetic instructions (no libm call).
    fn is_cheap(self) -> bool {
        matches!(
            self,
            Unary::Linear
                | Unary::Relu
                | Unary::LeakyRelu { .. }
                | Unary::HardSigmoid
                | Unary::Softsign
                | Unary::Negative
                | Unary::Sqrt
                | Unary::Square
                | Unary::Abs
                | Unary::Sign
                | Unary::Reciprocal
                | Unary::Rsqrt
                | Unary::Floor
                | Unary::Round
                | Unary::Relu6
        )
    }

    fn chunk(self) -> usize {
        if self.is_cheap() {
            CHEAP_CHUNK
        } else {
            TRANSCENDENTAL_CHUNK
        }
    }
}

/// `y[i] = f(x[i])` over fixed chunks of `chunk` elements, in parallel when there are several.
fn map_into<F>(x: &[f32], y: &mut [f32], chunk: usize, f: F)
where
    F: Fn(f32) -> f32 + Copy + Send + Sync,
{
    par::for_each_chunk_mut(y, chunk, |ci, yc| {
        let xc = &x[ci * chunk..ci * chunk + yc.len()];
        for (yo, &xi) in yc.iter_mut().zip(xc) {
            *yo = f(xi);
        }
    });
}

/// `xy[i] = f(xy[i])` over fixed chunks.
fn map_inplace<F>(xy: &mut [f32], chunk: usize, f: F)
where
    F: Fn(f32) -> f32 + Copy + Send + Sync,
{
    par::for_each_chunk_mut(xy, chunk, |_, c| {
        for v in c.iter_mut() {
            *v = f(*v);
        }
    });
}

/// `out[i] = dy[i] * g(src[i])` over fixed chunks (`src` is `x` or `y`).
fn grad_into<G>(src: &[f32], dy: &[f32], dx: &mut [f32], chunk: usize, g: G)
where
    G: Fn(f32) -> f32 + Copy + Send + Sync,
{
    par::for_each_chunk_mut(dx, chunk, |ci, dxc| {
        let start = ci * chunk;
        let sc = &src[start..start + dxc.len()];
        let dyc = &dy[start..start + dxc.len()];
        for ((o, &s), &d) in dxc.iter_mut().zip(sc).zip(dyc) {
            *o = d * g(s);
        }
    });
}

/// `y = f(x)` elementwise.
///
/// # Errors
/// `ShapeMismatch` when `y` and `x` differ in length.
pub fn unary(op: Unary, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_len("unary output", y.len(), x.len())?;
    let chunk = op.chunk();
    with_forward!(op, |f| map_into(x, y, chunk, f));
    Ok(())
}

/// `xy = f(xy)` elementwise, in place.
pub fn unary_inplace(op: Unary, xy: &mut [f32]) {
    let chunk = op.chunk();
    with_forward!(op, |f| map_inplace(xy, chunk, f));
}

/// `dx = dy * f'(x)` elementwise, with `y = f(x)` the forward output.
///
/// `x` may be empty when `!op.grad_needs_input()`, and `y` may be empty when
/// `op.grad_needs_input()` (the derivative then reads only the other one).
///
/// # Errors
/// `ShapeMismatch` when `dx`, or a needed (or non-empty) `x` / `y`, differs in
/// length from `dy`.
pub fn unary_grad(op: Unary, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let n = dy.len();
    check_len("unary_grad dx", dx.len(), n)?;
    let needs_x = op.grad_needs_input();
    if needs_x || !x.is_empty() {
        check_len("unary_grad x", x.len(), n)?;
    }
    if !needs_x || !y.is_empty() {
        check_len("unary_grad y", y.len(), n)?;
    }
    let chunk = op.chunk();
    if needs_x {
        with_derivative!(op, |g| grad_into(x, dy, dx, chunk, move |v| g(v, 0.0)));
    } else {
        with_derivative!(op, |g| grad_into(y, dy, dx, chunk, move |v| g(0.0, v)));
    }
    Ok(())
}

/// `dy_dx = dy * f'(src)` in place over the incoming gradient, with `src` the
/// forward input `x` when `op.grad_needs_input()`, else the forward output `y`.
/// Gives bitwise the same values as [`unary_grad`].
///
/// # Errors
/// `ShapeMismatch` when `src` and `dy_dx` differ in length.
pub fn unary_grad_inplace(op: Unary, src: &[f32], dy_dx: &mut [f32]) -> Result<()> {
    check_len("unary_grad src", src.len(), dy_dx.len())?;
    let chunk = op.chunk();
    if op.grad_needs_input() {
        with_derivative!(op, |g| grad_inplace(src, dy_dx, chunk, move |v| g(v, 0.0)));
    } else {
        with_derivative!(op, |g| grad_inplace(src, dy_dx, chunk, move |v| g(0.0, v)));
    }
    Ok(())
}

/// `dy_dx[i] = dy_dx[i] * g(src[i])` over fixed chunks.
fn grad_inplace<G>(src: &[f32], dy_dx: &mut [f32], chunk: usize, g: G)
where
    G: Fn(f32) -> f32 + Copy + Send + Sync,
{
    par::for_each_chunk_mut(dy_dx, chunk, |ci, c| {
        let sc = &src[ci * chunk..ci * chunk + c.len()];
        for (d, &s) in c.iter_mut().zip(sc) {
            *d *= g(s);
        }
    });
}

/// `y = min(max(x, lo), hi)` elementwise (NumPy `clip`; NaN stays NaN).
///
/// # Errors
/// `ShapeMismatch` when `y` and `x` differ in length.
pub fn clip(x: &[f32], lo: f32, hi: f32, y: &mut [f32]) -> Result<()> {
    check_len("clip output", y.len(), x.len())?;
    map_into(x, y, CHEAP_CHUNK, move |v| {
        let v = if v < lo { lo } else { v };
        if v > hi {
            hi
        } else {
            v
        }
    });
    Ok(())
}

/// `y = x * scale + shift` elementwise (a multiply then an add, not a fused FMA).
///
/// # Errors
/// `ShapeMismatch` when `y` and `x` differ in length.
pub fn scale_shift(x: &[f32], scale: f32, shift: f32, y: &mut [f32]) -> Result<()> {
    check_len("scale_shift output", y.len(), x.len())?;
    map_into(x, y, CHEAP_CHUNK, move |v| v * scale + shift);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// High-accuracy erf for the tests: series below 3, continued fraction above.
    fn erf_ref(z: f64) -> f64 {
        if z.abs() < 3.0 {
            let mut term = z;
            let mut sum = 0.0;
            let mut n = 0.0;
            while term.abs() > 1e-300 && n < 200.0 {
                let t = term / (2.0 * n + 1.0);
                sum += t;
                if t.abs() < 1e-18 {
                    break;
                }
                term *= -z * z / (n + 1.0);
                n += 1.0;
            }
            sum * std::f64::consts::FRAC_2_SQRT_PI
        } else {
            let s = z.signum();
            s * (1.0 - erfc_cf(z.abs()))
        }
    }

    /// erfc(z) for z >= 3 by the Laplace continued fraction, evaluated backwards.
    fn erfc_cf(z: f64) -> f64 {
        let mut t = z;
        for n in (1..=80).rev() {
            t = z + (n as f64 / 2.0) / t;
        }
        (-z * z).exp() / (std::f64::consts::PI.sqrt() * t)
    }

    fn cdf_ref(x: f64) -> f64 {
        let z = x / std::f64::consts::SQRT_2;
        if z < -3.0 {
            0.5 * erfc_cf(-z)
        } else {
            0.5 * (1.0 + erf_ref(z))
        }
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Independent float64 formulas of every op.
    fn reference(op: Unary, x: f64) -> f64 {
        let selu_scale = 1.050_700_987_355_480_5;
        let selu_alpha = 1.673_263_242_354_377_3;
        match op {
            Unary::Linear => x,
            Unary::Relu => x.max(0.0),
            Unary::Sigmoid => sigmoid64(x),
            Unary::Tanh => x.tanh(),
            Unary::Elu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    f64::from(alpha) * x.exp_m1()
                }
            }
            Unary::Selu => selu_scale * if x > 0.0 { x } else { selu_alpha * x.exp_m1() },
            Unary::Gelu { approximate: false } => x * cdf_ref(x),
            Unary::Gelu { approximate: true } => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                // 0.5 x (1 + tanh(u)) == x sigmoid(2u), without f64 cancellation for x << 0.
                x * sigmoid64(2.0 * c * (x + 0.044715 * x * x * x))
            }
            Unary::Silu => x * sigmoid64(x),
            Unary::Softplus => (1.0 + x.exp()).ln(),
            Unary::Softsign => x / (1.0 + x.abs()),
            Unary::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    f64::from(alpha) * x
                }
            }
            Unary::HardSigmoid => ((x + 3.0).clamp(0.0, 6.0)) / 6.0,
            Unary::Exponential | Unary::Exp => x.exp(),
            Unary::Negative => -x,
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Square => x * x,
            Unary::Abs => x.abs(),
            Unary::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Unary::Reciprocal => 1.0 / x,
            Unary::Rsqrt => 1.0 / x.sqrt(),
            Unary::Sin => x.sin(),
            Unary::Cos => x.cos(),
            Unary::Floor => x.floor(),
            Unary::Round => x.round_ties_even(),
            Unary::Log1p => x.ln_1p(),
            Unary::Expm1 => x.exp_m1(),
            Unary::Relu6 => x.clamp(0.0, 6.0),
        }
    }

    /// Sample points inside the op's domain, away from its kinks by at least `margin`.
    fn points(op: Unary, margin: f64) -> Vec<f64> {
        let kinks: &[f64] = match op {
            Unary::Relu | Unary::Elu { .. } | Unary::Selu | Unary::LeakyRelu { .. } => &[0.0],
            Unary::Abs | Unary::Sign | Unary::Softsign => &[0.0],
            Unary::HardSigmoid => &[-3.0, 3.0],
            Unary::Relu6 => &[0.0, 6.0],
            _ => &[],
        };
        let (lo, hi) = match op {
            Unary::Log | Unary::Sqrt | Unary::Rsqrt => (0.05, 9.0),
            Unary::Log1p => (-0.9, 9.0),
            _ => (-9.0, 9.0),
        };
        let mut pts = Vec::new();
        let mut x = lo;
        while x <= hi {
            // Round to f32 so the f32 kernel and the f64 reference see the same input.
            let xf = f64::from(x as f32);
            let near_kink = kinks.iter().any(|k| (xf - k).abs() < margin);
            let near_step = matches!(op, Unary::Floor | Unary::Round)
                && ((xf - xf.round()).abs() < margin || (xf - xf.floor() - 0.5).abs() < margin);
            let near_pole = matches!(op, Unary::Reciprocal) && xf.abs() < 0.05;
            if !(near_kink || near_step || near_pole) {
                pts.push(xf);
            }
            x += 0.0731;
        }
        pts.extend(
            [1e-4, -1e-4, 2.5e-3, -2.5e-3]
                .iter()
                .filter(|&&v| v > lo && v < hi && !kinks.contains(&0.0))
                .filter(|_| !matches!(op, Unary::Reciprocal)),
        );
        pts
    }

    fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
        if want.is_nan() {
            return got.is_nan();
        }
        (got - want).abs() <= rel * want.abs() + abs
    }

    #[test]
    fn unary_forward_matches_reference() {
        for op in Unary::ALL {
            for x in points(op, 0.0) {
                let got = f64::from(op.apply_scalar(x as f32));
                let want = reference(op, x);
                // tanh-GELU's tail exp(-2u) inherits the f32 rounding of u = O(x^3):
                // relative condition ~|2u| (about 60 at x = -9), so allow 60 ulps there.
                let rel = if op == (Unary::Gelu { approximate: true }) {
                    4e-6 + 4e-7 * x.abs().powi(2)
                } else {
                    2e-6
                };
                assert!(
                    close(got, want, rel, 1e-30),
                    "{} at {x}: got {got}, want {want}",
                    op.name()
                );
            }
        }
    }

    #[test]
    fn unary_derivative_matches_finite_difference() {
        for op in Unary::ALL {
            if matches!(op, Unary::Floor | Unary::Round | Unary::Sign) {
                continue;
            }
            for x in points(op, 1e-3) {
                let h = 1e-5 * x.abs().max(1.0);
                let fd = (reference(op, x + h) - reference(op, x - h)) / (2.0 * h);
                let xf = x as f32;
                let got = f64::from(op.derivative_scalar(xf, op.apply_scalar(xf)));
                // Derivatives from y inherit y's f32 rounding; 1e-4 relative covers it.
                assert!(
                    close(got, fd, 1e-4, 1e-6),
                    "{}' at {x}: got {got}, fd {fd}",
                    op.name()
                );
            }
        }
    }

    #[test]
    fn step_ops_have_zero_derivative_and_kinks_follow_jax() {
        for op in [Unary::Floor, Unary::Round, Unary::Sign] {
            assert_eq!(op.derivative_scalar(1.3, op.apply_scalar(1.3)), 0.0);
        }
        let at0 = |op: Unary| op.derivative_scalar(0.0, op.apply_scalar(0.0));
        assert_eq!(at0(Unary::Relu), 0.0);
        assert_eq!(at0(Unary::Abs), 0.0);
        assert_eq!(at0(Unary::Relu6), 0.0);
        assert_eq!(at0(Unary::LeakyRelu { alpha: 0.2 }), 0.2);
        assert_eq!(at0(Unary::Elu { alpha: 0.5 }), 0.5);
        assert_eq!(Unary::HardSigmoid.derivative_scalar(3.0, 1.0), 0.0);
        assert_eq!(Unary::HardSigmoid.derivative_scalar(-3.0, 0.0), 0.0);
    }

    #[test]
    fn derivative_reads_only_the_declared_argument() {
        let ops = Unary::ALL
            .iter()
            .copied()
            .chain([Unary::Elu { alpha: -0.5 }, Unary::LeakyRelu { alpha: -0.1 }]);
        for op in ops {
            for x in [-2.5f32, -0.3, 0.7, 3.1] {
                let y = op.apply_scalar(x);
                let d = op.derivative_scalar(x, y);
                let d2 = if op.grad_needs_input() {
                    op.derivative_scalar(x, f32::NAN)
                } else {
                    op.derivative_scalar(f32::NAN, y)
                };
                assert_eq!(d.to_bits(), d2.to_bits(), "{} at {x}", op.name());
            }
        }
    }

    #[test]
    fn erf_is_accurate() {
        let mut z = -6.0f64;
        while z <= 6.0 {
            let zf = f64::from(z as f32);
            let got = f64::from(erf(zf as f32));
            let want = erf_ref(zf);
            assert!(
                close(got, want, 3e-7, 1e-38),
                "erf({zf}) = {got}, want {want}"
            );
            z += 0.0137;
        }
        assert!(close(
            f64::from(erf(1e-6)),
            erf_ref(f64::from(1e-6f32)),
            1e-7,
            0.0
        ));
        assert!(erf(f32::NAN).is_nan());
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
    }

    #[test]
    fn gelu_exact_keeps_relative_accuracy_in_the_tail() {
        for x in [-5.0f32, -7.5, -9.0, -12.0] {
            let got = f64::from(Unary::Gelu { approximate: false }.apply_scalar(x));
            let want = f64::from(x) * cdf_ref(f64::from(x));
            assert!(
                close(got, want, 1e-5, 0.0),
                "gelu({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn saturating_ops_are_stable_for_huge_inputs() {
        let s = Unary::Sigmoid;
        assert_eq!(s.apply_scalar(1e4), 1.0);
        assert_eq!(s.apply_scalar(-1e4), 0.0);
        assert!(s.apply_scalar(-80.0) > 0.0);
        assert_eq!(Unary::Softplus.apply_scalar(1e4), 1e4);
        assert_eq!(Unary::Softplus.apply_scalar(-1e4), 0.0);
        assert_eq!(Unary::Tanh.apply_scalar(1e4), 1.0);
        let g = Unary::Gelu { approximate: true };
        assert_eq!(g.apply_scalar(1e4), 1e4);
        assert_eq!(g.apply_scalar(-1e4), 0.0);
        assert_eq!(g.derivative_scalar(1e20, 0.0), 1.0);
        assert_eq!(g.derivative_scalar(-1e20, 0.0), 0.0);
        for op in Unary::ALL {
            if !matches!(
                op,
                Unary::Log
                    | Unary::Sqrt
                    | Unary::Rsqrt
                    | Unary::Log1p
                    | Unary::Exp
                    | Unary::Exponential
            ) {
                assert!(!op.apply_scalar(-1e30).is_nan(), "{}", op.name());
            }
        }
    }

    #[test]
    fn unary_grad_inplace_matches_unary_grad() {
        // Sizes past one chunk, so the chunked loops are exercised too.
        for n in [0usize, 1, 7, 20_000] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
                .collect();
            let dy: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 7.0)
                .collect();
            for op in Unary::ALL {
                let mut y = vec![0.0; n];
                unary(op, &x, &mut y).unwrap();
                let mut want = vec![0.0; n];
                unary_grad(op, &x, &y, &dy, &mut want).unwrap();
                let src = if op.grad_needs_input() { &x } else { &y };
                let mut got = dy.clone();
                unary_grad_inplace(op, src, &mut got).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{} n={n}", op.name());
            }
        }
        assert!(unary_grad_inplace(Unary::Relu, &[1.0], &mut [1.0, 2.0]).is_err());
    }

    #[test]
    fn nan_propagates() {
        for op in Unary::ALL {
            assert!(op.apply_scalar(f32::NAN).is_nan(), "{}", op.name());
        }
        let mut y = [0.0f32; 3];
        clip(&[f32::NAN, -5.0, 5.0], -1.0, 1.0, &mut y).unwrap();
        assert!(y[0].is_nan());
        assert_eq!(&y[1..], &[-1.0, 1.0]);
    }

    #[test]
    fn round_is_half_to_even() {
        let xs = [0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4, -2.6];
        let want = [0.0f32, 2.0, 2.0, -0.0, -2.0, 2.0, -3.0];
        for (x, w) in xs.iter().zip(want) {
            assert_eq!(Unary::Round.apply_scalar(*x), w);
        }
    }

    #[test]
    fn names_round_trip() {
        for op in Unary::ALL {
            let back = Unary::from_name(
                op.name(),
                None,
                Some(matches!(op, Unary::Gelu { approximate: true })),
            );
            assert_eq!(back, Some(op));
        }
        assert_eq!(Unary::from_name("swish", None, None), Some(Unary::Silu));
        assert_eq!(
            Unary::from_name("leaky_relu", None, None),
            Some(Unary::LeakyRelu { alpha: 0.2 })
        );
        assert_eq!(
            Unary::from_name("elu", Some(0.3), None),
            Some(Unary::Elu { alpha: 0.3 })
        );
        assert_eq!(
            Unary::from_name("gelu", None, None),
            Some(Unary::Gelu { approximate: false })
        );
        assert_eq!(Unary::from_name("nope", None, None), None);
    }

    /// Deterministic pseudo-random values in [-8, 8).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0
            })
            .collect()
    }

    #[test]
    fn large_slices_equal_the_scalar_reference_exactly() {
        let n = CHEAP_CHUNK * 2 + 12_345; // several chunks of either size, ragged tail
        let x = values(n, 7);
        let mut y = vec![0.0f32; n];
        let mut dx = vec![0.0f32; n];
        let dy = values(n, 8);
        for op in Unary::ALL {
            unary(op, &x, &mut y).unwrap();
            let mut z = x.clone();
            unary_inplace(op, &mut z);
            for i in 0..n {
                let want = op.apply_scalar(x[i]);
                assert_eq!(y[i].to_bits(), want.to_bits(), "{} at {i}", op.name());
                assert_eq!(
                    z[i].to_bits(),
                    want.to_bits(),
                    "{} in place at {i}",
                    op.name()
                );
            }
            let xin: &[f32] = if op.grad_needs_input() { &x } else { &[] };
            let yin: &[f32] = if op.grad_needs_input() { &[] } else { &y };
            unary_grad(op, xin, yin, &dy, &mut dx).unwrap();
            for i in 0..n {
                let want = dy[i] * op.derivative_scalar(x[i], y[i]);
                assert_eq!(dx[i].to_bits(), want.to_bits(), "{}' at {i}", op.name());
            }
        }
    }

    #[test]
    fn clip_and_scale_shift_match_reference() {
        let x = values(1000, 3);
        let mut y = vec![0.0; 1000];
        clip(&x, -2.0, 3.5, &mut y).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(*b, a.clamp(-2.0, 3.5));
        }
        scale_shift(&x, 1.5, -0.25, &mut y).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert!((f64::from(*b) - (f64::from(*a) * 1.5 - 0.25)).abs() < 1e-6);
        }
    }

    #[test]
    fn length_mismatches_are_errors() {
        let mut y = [0.0f32; 2];
        assert!(unary(Unary::Relu, &[1.0, 2.0, 3.0], &mut y).is_err());
        assert!(clip(&[1.0], 0.0, 1.0, &mut y).is_err());
        assert!(scale_shift(&[1.0], 0.0, 1.0, &mut y).is_err());
        let mut dx = [0.0f32; 2];
        // gelu needs x: an empty x is refused.
        assert!(unary_grad(
            Unary::Gelu { approximate: false },
            &[],
            &[1.0, 2.0],
            &[1.0, 1.0],
            &mut dx
        )
        .is_err());
        // relu needs y.
        assert!(unary_grad(Unary::Relu, &[1.0, 2.0], &[], &[1.0, 1.0], &mut dx).is_err());
        assert!(unary_grad(Unary::Relu, &[], &[1.0, 2.0], &[1.0], &mut dx).is_err());
        assert!(unary_grad(Unary::Relu, &[1.0], &[1.0, 2.0], &[1.0, 1.0], &mut dx).is_err());
        unary_grad(Unary::Relu, &[], &[1.0, 0.0], &[3.0, 3.0], &mut dx).unwrap();
        assert_eq!(dx, [3.0, 0.0]);
    }
}
