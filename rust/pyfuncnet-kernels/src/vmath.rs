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
//! within 3e-7 absolute and 1e-6 relative (below -80 it is tiny but not accurate,
//! since `exp` is clamped); `tanh` within 4e-7 absolute (7 ulp near 1) and 1e-6
//! relative, odd, but not monotonic to the last few ulp.

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
/// `tanh`'s rational form covers `[-TANH_RANGE, TANH_RANGE]`; beyond, `tanh x`
/// rounds to +-1 in `f32`.
const TANH_RANGE: f32 = 9.0;

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
    // Evaluated as 1 + (r + r^2 (a1 + r^2 (a2 + r^2 a3))) with each `a` linear in
    // r: five dependent steps instead of Horner's seven, since a recurrent cell's
    // activations are bound by that latency more than by their operation count.
    let r2 = r * r;
    let a1 = madd::<FMA>(r, 1.0 / 6.0, 0.5);
    let a2 = madd::<FMA>(r, 1.0 / 120.0, 1.0 / 24.0);
    let a3 = madd::<FMA>(r, 1.0 / 5040.0, 1.0 / 720.0);
    let p = madd::<FMA>(r2, a3, a2);
    let p = madd::<FMA>(r2, p, a1);
    let p = madd::<FMA>(r2, p, r);
    // 2^n from n's bits: t's low mantissa bits hold n + 2^22.
    let n_int = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    // (1 + p) 2^n: one rounding when fused. Unfused, `1 + p` comes first: at the
    // bottom of the range `p 2^n` alone would be subnormal, and flushed.
    if FMA {
        p.mul_add(scale, scale)
    } else {
        (1.0 + p) * scale
    }
}

/// [`sigmoid`], with fused multiply-adds when `FMA`.
#[inline(always)]
pub fn sigmoid_with<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_with::<FMA>(-x))
}

/// [`tanh`], with fused multiply-adds when `FMA`.
#[inline(always)]
pub fn tanh_with<const FMA: bool>(x: f32) -> f32 {
    // tanh x = x P(x^2) / Q(x^2): a rational fit, relative error below 1e-8 in
    // exact arithmetic on the range; half the operations of the exponential
    // form, and no branch near 0 (it is exact to first order there).
    let c = x.clamp(-TANH_RANGE, TANH_RANGE);
    let s = c * c;
    // P and Q in pairs of terms (Estrin's scheme): three dependent steps for P
    // instead of six, as for `exp`.
    let s2 = s * s;
    let p01 = madd::<FMA>(s, 1.308_402_1e-1, 1.0);
    let p23 = madd::<FMA>(s, 1.115_444_3e-5, 3.103_969_2e-3);
    let p45 = madd::<FMA>(s, 5.278_204e-11, -2.022_576_4e-8);
    let p_hi = madd::<FMA>(s2, -8.489_358e-14, p45);
    let p_lo = madd::<FMA>(s2, p23, p01);
    let p = madd::<FMA>(s2 * s2, p_hi, p_lo);
    let q01 = madd::<FMA>(s, 4.641_735e-1, 1.0);
    let q23 = madd::<FMA>(s, 2.546_164e-4, 2.449_523e-2);
    let q = madd::<FMA>(s2, q23, q01);
    // Rounding can take the ratio a few ulp past 1. `c / q` first: Q is ready
    // before P, so the division runs while P is still being evaluated.
    let y = (p * (c / q)).clamp(-1.0, 1.0);
    // Beyond the range tanh rounds to +-1; NaN compares false and stays NaN.
    if x.abs() >= TANH_RANGE {
        1.0f32.copysign(x)
    } else {
        y
    }
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
            .chain([
                8.999_999, -8.999_999, 9.0, -9.0, 9.000_001, 6.086_442, 6.374_598,
            ])
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
    fn exp_keeps_its_accuracy_at_the_bottom_of_its_range_with_subnormals_flushed() {
        // Training flushes subnormals; there `2^-126` scales results that are still
        // normal, and no intermediate may be subnormal on the way to them.
        crate::fpenv::with_subnormals_flushed(|| {
            for x in (0..=200).map(|i| -87.0 + i as f32 * 1e-3) {
                let want = (x as f64).exp();
                for (form, got) in [("plain", exp(x)), ("fused", exp_with::<true>(x))] {
                    let got = got as f64;
                    assert!(
                        ((got - want) / want).abs() < 2.5e-7,
                        "{form} exp({x}) = {got}, want {want}"
                    );
                }
            }
        });
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
            assert!((tanh_with::<true>(x) as f64 - t).abs() < 4e-7, "tanh({x})");
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
                (got - t).abs() < 4e-7 && (got - t).abs() <= 1e-6 * t.abs(),
                "tanh({x}) = {got}, want {t}"
            );
            assert_eq!(tanh(-x), -tanh(x));
        }
        assert!(sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh_with::<true>(f32::NEG_INFINITY), -1.0);
        assert!(tanh_with::<true>(f32::NAN).is_nan());
        assert_eq!(sigmoid(f32::NEG_INFINITY), 1.0 / (1.0 + exp(88.0)));
    }
}
