//! Branch-free `exp`, `sigmoid` and `tanh` that the compiler vectorises.
//!
//! The slice kernels of `unary.rs` call libm one element at a time; a recurrent
//! cell evaluates five such functions per unit and step, so the recurrent kernels
//! use these instead. Each function is plain `f32` arithmetic with selects in place
//! of branches, `#[inline(always)]`, so a loop over slices that calls it becomes
//! SIMD code at whatever instruction set the enclosing function is compiled for.
//! The `*_with::<true>` forms use fused multiply-adds (for code compiled with
//! FMA); the plain forms never do (Rust never contracts `a * b + c`, and a
//! software `fma` would be slow), so they give the same values everywhere.
//!
//! Accuracy (tested against `f64`): `exp` within 2 ulp on its range; `sigmoid`
//! and `tanh` within 3e-7 absolute and 1e-6 relative (`sigmoid` below -80 is tiny
//! but not accurate, since `exp` is clamped).

/// `1.5 * 2^23`: adding it rounds a float of magnitude below `2^22` to an integer
/// held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n * LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Arguments are clamped to this range, where `2^n` stays a normal float.
const EXP_MIN: f32 = -87.0;
const EXP_MAX: f32 = 88.0;
/// Below this magnitude `tanh` uses its Taylor series (no cancellation in `1 - t`).
const TANH_SERIES_LIMIT: f32 = 0.25;

/// `a * b + c`, fused when `FMA`.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x`, clamped to `[e^-87, e^88]` (NaN stays NaN).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_with::<false>(x)
}

/// The logistic function `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    sigmoid_with::<false>(x)
}

/// The hyperbolic tangent.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    tanh_with::<false>(x)
}

/// [`exp`], with fused multiply-adds when `FMA`.
#[inline(always)]
pub fn exp_with<const FMA: bool>(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    // x = n ln2 + r with |r| <= ln2 / 2.
    let t = madd::<FMA>(x, LOG2_E, ROUND_MAGIC);
    let n = t - ROUND_MAGIC;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    // Taylor series of e^r to degree 7: the remainder is below 5e-9 relative.
    let p = 1.0 / 5040.0;
    let p = madd::<FMA>(p, r, 1.0 / 720.0);
    let p = madd::<FMA>(p, r, 1.0 / 120.0);
    let p = madd::<FMA>(p, r, 1.0 / 24.0);
    let p = madd::<FMA>(p, r, 1.0 / 6.0);
    let p = madd::<FMA>(p, r, 0.5);
    let p = madd::<FMA>(p, r, 1.0);
    let p = madd::<FMA>(p, r, 1.0);
    // 2^n from n's bits: t's low mantissa bits hold n + 2^22.
    let n_int = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    p * scale
}

/// [`sigmoid`], with fused multiply-adds when `FMA`.
#[inline(always)]
pub fn sigmoid_with<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_with::<FMA>(-x))
}

/// [`tanh`], with fused multiply-adds when `FMA`.
#[inline(always)]
pub fn tanh_with<const FMA: bool>(x: f32) -> f32 {
    let a = x.abs();
    // Large |x|: tanh|x| = (1 - t) / (1 + t) with t = e^(-2|x|) <= e^-0.5.
    let t = exp_with::<FMA>(-2.0 * a);
    let far = (1.0 - t) / (1.0 + t);
    // Small |x|: x + x^3 q(x^2), Taylor to degree 11 (remainder below 1e-9 relative).
    let s = a * a;
    let q = -1382.0 / 155_925.0;
    let q = madd::<FMA>(q, s, 62.0 / 2835.0);
    let q = madd::<FMA>(q, s, -17.0 / 315.0);
    let q = madd::<FMA>(q, s, 2.0 / 15.0);
    let q = madd::<FMA>(q, s, -1.0 / 3.0);
    let near = madd::<FMA>(a * s, q, a);
    let y = if a < TANH_SERIES_LIMIT { near } else { far };
    // NaN compares false above and lands in `far`, which is NaN too.
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        // Dense near 0 and across the ranges where the formulas switch.
        (-20_000..=20_000)
            .map(|i| i as f32 * 1e-3)
            .chain((-200..=200).map(|i| i as f32 * 0.5))
            .chain([1e-30, -1e-30, 1e-8, -1e-8, 0.0, -0.0, 0.25, -0.25])
    }

    #[test]
    fn exp_is_accurate_on_its_range() {
        for x in grid().filter(|x| (-87.0..=88.0).contains(x)) {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 2.5e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert_eq!(exp(1000.0), exp(88.0));
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn the_fused_forms_are_as_accurate() {
        for x in grid() {
            let xd = x as f64;
            let (s, t) = (1.0 / (1.0 + (-xd).exp()), xd.tanh());
            assert!(
                (sigmoid_with::<true>(x) as f64 - s).abs() < 3e-7,
                "sigmoid({x})"
            );
            assert!((tanh_with::<true>(x) as f64 - t).abs() < 3e-7, "tanh({x})");
            if (-87.0..=88.0).contains(&x) {
                let e = xd.exp();
                assert!(
                    ((exp_with::<true>(x) as f64 - e) / e).abs() < 2.5e-7,
                    "exp({x})"
                );
            }
        }
    }

    #[test]
    fn sigmoid_and_tanh_are_accurate() {
        for x in grid() {
            let xd = x as f64;
            let s = 1.0 / (1.0 + (-xd).exp());
            let got = sigmoid(x) as f64;
            assert!(
                (got - s).abs() < 3e-7 && (x < -80.0 || (got - s).abs() <= 1e-6 * s),
                "sigmoid({x}) = {got}, want {s}"
            );
            let t = xd.tanh();
            let got = tanh(x) as f64;
            assert!(
                (got - t).abs() < 3e-7 && (got - t).abs() <= 1e-6 * t.abs(),
                "tanh({x}) = {got}, want {t}"
            );
            assert_eq!(tanh(-x), -tanh(x));
        }
        assert!(sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 1.0 / (1.0 + exp(88.0)));
    }
}
