//! Counter-based random numbers for initializers, dropout and noise.
//!
//! Every value is a pure function of `(seed, stream, step, element index)`: there is
//! no generator state, so a fill gives the same numbers whether it runs on one thread
//! or many, and a training step can be replayed exactly. The generator is
//! Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as
//! 1, 2, 3", SC 2011), which turns a 128-bit counter and a 64-bit key into 128
//! random bits.
//!
//! # How arguments map to Philox
//!
//! Element `i` takes 32-bit word `i % 4` of the Philox block `b = i / 4`, computed with
//!
//! ```text
//! key     = [lo32(seed), hi32(seed)]
//! counter = [lo32(b),
//!            hi32(b) ^ (attempt << 16),
//!            lo32(stream) ^ hi32(step),
//!            lo32(step) ^ hi32(stream)]
//! ```
//!
//! where `attempt` is 0 except for the redraws of [`truncated_normal`]. The map is
//! one-to-one while `stream` and `step` fit in 32 bits and `b < 2^48` (tensors below
//! 2^50 elements), so distinct `(seed, stream, step, i)` never share a word; larger
//! values still mix into the counter instead of being dropped. The graph gives each
//! random op its own `stream` and passes the training step as `step`.
//!
//! Fills are split in fixed chunks of [`FILL_CHUNK`] elements (a multiple of 4), so
//! each block is computed by exactly one task.

use crate::error::{check_len, KernelError, Result};
use crate::par;

/// Philox multiplier of counter word 0.
const PHILOX_M0: u32 = 0xD251_1F53;
/// Philox multiplier of counter word 2.
const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 (golden ratio).
const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 (sqrt(3) - 1).
const PHILOX_W1: u32 = 0xBB67_AE85;
/// Rounds of Philox4x32-10.
const PHILOX_ROUNDS: usize = 10;

/// Elements per parallel task of a fill: about 4096 Philox blocks, tens of
/// microseconds. A multiple of 4 so no block straddles two tasks.
pub const FILL_CHUNK: usize = 1 << 14;

/// 2^-24: maps the top 24 bits of a word to a float in [0, 1).
const UNIT_24: f32 = 1.0 / 16_777_216.0;

/// 2^-32 as f64, for the Box-Muller uniforms.
const UNIT_32: f64 = 1.0 / 4_294_967_296.0;

/// Values of [`truncated_normal`] beyond this many standard deviations are redrawn.
const TRUNCATE_AT: f64 = 2.0;

/// Redraws after which [`truncated_normal`] gives up and clamps (each redraw is
/// needed with probability 0.0455, so 2^15 redraws never happen in practice; the
/// bound only keeps the loop finite and the attempt number within 16 bits).
const MAX_ATTEMPTS: u32 = 1 << 15;

#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// One Philox4x32-10 block: 10 rounds of the Philox S-box on `counter`, with the key
/// bumped by the Weyl constants between rounds. Matches the `philox4x32_10` known-answer
/// vectors of the Random123 distribution.
///
/// A round is
/// `(hi0, lo0) = mulhilo(M0, c0); (hi1, lo1) = mulhilo(M1, c2);
///  c = [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]`.
#[inline]
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..PHILOX_ROUNDS {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The key and the block-independent counter words of one `(seed, stream, step)`.
#[derive(Clone, Copy)]
struct Philox {
    key: [u32; 2],
    c2: u32,
    c3: u32,
}

impl Philox {
    fn new(seed: u64, stream: u64, step: u64) -> Self {
        Philox {
            key: [seed as u32, (seed >> 32) as u32],
            c2: (stream as u32) ^ ((step >> 32) as u32),
            c3: (step as u32) ^ ((stream >> 32) as u32),
        }
    }

    /// The four words of block `block` (elements `4 * block .. 4 * block + 4`).
    #[inline]
    fn block(&self, block: u64, attempt: u32) -> [u32; 4] {
        let counter = [
            block as u32,
            ((block >> 32) as u32) ^ (attempt << 16),
            self.c2,
            self.c3,
        ];
        philox4x32(counter, self.key)
    }
}

/// A float in [0, 1) from the top 24 bits of `w` (every value a multiple of 2^-24).
#[inline]
fn unit_f32(w: u32) -> f32 {
    (w >> 8) as f32 * UNIT_24
}

/// Four standard normals from one block: Box-Muller on the word pairs (w0, w1) and
/// (w2, w3), in f64. The radius uses `u1 = (w + 1) / 2^32` in (0, 1], so `ln(u1)` is
/// finite; the largest magnitude is sqrt(2 ln 2^32) ~ 6.7.
#[inline]
fn normals(w: [u32; 4]) -> [f64; 4] {
    let pair = |a: u32, b: u32| {
        let u1 = (f64::from(a) + 1.0) * UNIT_32;
        let u2 = f64::from(b) * UNIT_32;
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        (r * c, r * s)
    };
    let (z0, z1) = pair(w[0], w[1]);
    let (z2, z3) = pair(w[2], w[3]);
    [z0, z1, z2, z3]
}

/// Fills `out` block by block in parallel: `f(gen, block, lanes)` writes the up to
/// four elements of `block`.
fn fill_blocks(gen: Philox, out: &mut [f32], f: impl Fn(&Philox, u64, &mut [f32]) + Sync + Send) {
    par::for_each_chunk_mut(out, FILL_CHUNK, |ci, chunk| {
        let first = (ci * (FILL_CHUNK / 4)) as u64;
        for (b, lanes) in chunk.chunks_mut(4).enumerate() {
            f(&gen, first + b as u64, lanes);
        }
    });
}

/// Uniform floats in [0, 1), each with 24 random mantissa bits.
pub fn uniform(seed: u64, stream: u64, step: u64, out: &mut [f32]) {
    fill_blocks(Philox::new(seed, stream, step), out, |g, b, lanes| {
        let w = g.block(b, 0);
        for (v, &w) in lanes.iter_mut().zip(&w) {
            *v = unit_f32(w);
        }
    });
}

/// The largest f32 below `h`.
fn next_below(h: f32) -> f32 {
    let bits = h.to_bits();
    if h > 0.0 {
        f32::from_bits(bits - 1)
    } else if h == 0.0 {
        -f32::from_bits(1)
    } else {
        f32::from_bits(bits + 1)
    }
}

/// Uniform floats in [lo, hi): `lo + (hi - lo) * u` with `u` from [`uniform`]. A value
/// that rounds up to `hi` is moved to the float just below it, keeping the interval
/// half-open. When `hi <= lo` (or either is not finite) the formula is applied as is.
pub fn uniform_range(seed: u64, stream: u64, step: u64, lo: f32, hi: f32, out: &mut [f32]) {
    let width = hi - lo;
    let clamp = lo < hi && hi.is_finite() && lo.is_finite();
    let top = if clamp { next_below(hi) } else { hi };
    fill_blocks(Philox::new(seed, stream, step), out, |g, b, lanes| {
        let w = g.block(b, 0);
        for (v, &w) in lanes.iter_mut().zip(&w) {
            let x = lo + width * unit_f32(w);
            *v = if clamp && x >= hi { top } else { x };
        }
    });
}

/// Normal floats `mean + std * z`, `z` standard normal by Box-Muller (in f64, on two
/// 32-bit uniforms per pair of elements).
pub fn normal(seed: u64, stream: u64, step: u64, mean: f32, std: f32, out: &mut [f32]) {
    fill_blocks(Philox::new(seed, stream, step), out, |g, b, lanes| {
        let z = normals(g.block(b, 0));
        for (v, &z) in lanes.iter_mut().zip(&z) {
            *v = mean + std * z as f32;
        }
    });
}

/// Truncated normal floats, as Keras's `TruncatedNormal`: `mean + std * z` where a
/// standard normal `z` with `|z| > 2` is redrawn. Redraw `a` of element `i` uses
/// the same block with `attempt = a` in the counter (see the module docs), so
/// every element still depends only on its own index. The result has standard
/// deviation about `0.88 * std`, as in Keras.
pub fn truncated_normal(seed: u64, stream: u64, step: u64, mean: f32, std: f32, out: &mut [f32]) {
    fill_blocks(Philox::new(seed, stream, step), out, |g, b, lanes| {
        let first = normals(g.block(b, 0));
        for (lane, v) in lanes.iter_mut().enumerate() {
            let mut z = first[lane];
            let mut attempt = 1;
            while z.abs() > TRUNCATE_AT && attempt < MAX_ATTEMPTS {
                z = normals(g.block(b, attempt))[lane];
                attempt += 1;
            }
            *v = mean + std * z.clamp(-TRUNCATE_AT, TRUNCATE_AT) as f32;
        }
    });
}

/// Adds normal noise in place: `out[i] += std * z_i`, where `z_i` is the standard
/// normal that [`normal`] turns into element `i` for the same `(seed, stream, step)`.
/// So `x` followed by `add_normal` gives bitwise `x + normal(.., 0, std)`, in one pass
/// and without a noise buffer (the `gaussian_noise` op, in place over its input).
pub fn add_normal(seed: u64, stream: u64, step: u64, std: f32, out: &mut [f32]) {
    fill_blocks(Philox::new(seed, stream, step), out, |g, b, lanes| {
        let z = normals(g.block(b, 0));
        for (v, &z) in lanes.iter_mut().zip(&z) {
            *v += std * z as f32;
        }
    });
}

/// The mask of inverted dropout alone: `mask[i] = 1 / (1 - rate)` when the uniform
/// `u_i >= rate` (kept, probability `1 - rate`) and `0` otherwise, `u_i` being element
/// `i` of [`uniform`] with the same `(seed, stream, step)`. [`dropout`] draws exactly
/// this mask; a dropout whose mask is broadcast (Keras's `noise_shape`) draws it at
/// the smaller shape and multiplies.
///
/// # Errors
/// `InvalidArgument` when `rate` is not in [0, 1) (NaN included).
pub fn dropout_mask(seed: u64, stream: u64, step: u64, rate: f32, mask: &mut [f32]) -> Result<()> {
    if !(0.0..1.0).contains(&rate) {
        return Err(KernelError::InvalidArgument {
            what: "dropout".to_string(),
            message: format!("rate must be in [0, 1), got {rate}"),
        });
    }
    let scale = 1.0 / (1.0 - rate);
    fill_blocks(Philox::new(seed, stream, step), mask, |g, b, lanes| {
        let w = g.block(b, 0);
        for (m, &w) in lanes.iter_mut().zip(&w) {
            *m = if unit_f32(w) >= rate { scale } else { 0.0 };
        }
    });
    Ok(())
}

/// Inverted dropout: `mask` from [`dropout_mask`], then `y = x * mask`. The mask is
/// kept for the backward pass (`dx = dy * mask`).
///
/// # Errors
/// `InvalidArgument` when `rate` is not in [0, 1) (NaN included); `ShapeMismatch`
/// when `mask` or `y` is not as long as `x`.
pub fn dropout(
    seed: u64,
    stream: u64,
    step: u64,
    rate: f32,
    x: &[f32],
    mask: &mut [f32],
    y: &mut [f32],
) -> Result<()> {
    check_len("dropout mask", mask.len(), x.len())?;
    check_len("dropout output", y.len(), x.len())?;
    dropout_mask(seed, stream, step, rate, mask)?;
    let mask = &*mask;
    par::for_each_chunk_mut(y, FILL_CHUNK, |ci, chunk| {
        let start = ci * FILL_CHUNK;
        let xs = &x[start..start + chunk.len()];
        let ms = &mask[start..start + chunk.len()];
        for ((v, &a), &m) in chunk.iter_mut().zip(xs).zip(ms) {
            *v = a * m;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn philox_matches_random123_known_answers() {
        // From Random123's kat_vectors: "philox4x32 10 <counter x4> <key x2> <output x4>".
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0; 4],
                [0; 2],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (counter, key, want) in cases {
            assert_eq!(philox4x32(counter, key), want);
        }
    }

    #[test]
    fn uniform_is_in_range_with_mean_one_half() {
        let mut v = vec![0.0f32; 100_000];
        uniform(42, 7, 3, &mut v);
        assert!(v.iter().all(|&x| (0.0..1.0).contains(&x)));
        let (mean, std) = mean_std(&v);
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!((std - (1.0f64 / 12.0).sqrt()).abs() < 0.01, "std {std}");
    }

    #[test]
    fn fills_depend_only_on_seed_stream_step_and_index() {
        let fill = |seed, stream, step, n| {
            let mut v = vec![0.0f32; n];
            uniform(seed, stream, step, &mut v);
            v
        };
        // Several parallel chunks, and a prefix of it: element i is the same value.
        let long = fill(1, 2, 3, 3 * FILL_CHUNK + 7);
        assert_eq!(long, fill(1, 2, 3, 3 * FILL_CHUNK + 7));
        assert_eq!(&long[..1001], &fill(1, 2, 3, 1001)[..]);
        // Element i is word i % 4 of block i / 4, whichever task computed it.
        let g = Philox::new(1, 2, 3);
        for i in [
            0,
            5,
            FILL_CHUNK - 1,
            FILL_CHUNK,
            2 * FILL_CHUNK + 3,
            3 * FILL_CHUNK + 6,
        ] {
            assert_eq!(long[i], unit_f32(g.block((i / 4) as u64, 0)[i % 4]));
        }
        // Any change of seed, stream or step gives different numbers.
        for other in [
            fill(2, 2, 3, 1001),
            fill(1, 3, 3, 1001),
            fill(1, 2, 4, 1001),
            fill(1, 2, 3 << 32, 1001),
        ] {
            let same = long[..1001]
                .iter()
                .zip(&other)
                .filter(|(a, b)| a == b)
                .count();
            assert!(same < 5, "{same} equal values");
        }
    }

    #[test]
    fn uniform_range_stays_in_the_half_open_interval() {
        let mut v = vec![0.0f32; 100_000];
        uniform_range(5, 0, 0, -0.05, 0.05, &mut v);
        assert!(v.iter().all(|&x| (-0.05..0.05).contains(&x)));
        let (mean, _) = mean_std(&v);
        assert!(mean.abs() < 0.001, "mean {mean}");
        // A width so small that lo + width * u rounds up to hi for most u.
        let lo = 1.0f32;
        let hi = f32::from_bits(lo.to_bits() + 1);
        uniform_range(5, 0, 0, lo, hi, &mut v[..1000]);
        assert!(v[..1000].iter().all(|&x| x == lo));
    }

    #[test]
    fn normal_has_the_requested_mean_and_std() {
        let mut v = vec![0.0f32; 100_000];
        normal(9, 1, 0, 3.0, 2.0, &mut v);
        assert!(v.iter().all(|x| x.is_finite()));
        let (mean, std) = mean_std(&v);
        assert!((mean - 3.0).abs() < 0.03, "mean {mean}");
        assert!((std - 2.0).abs() < 0.03, "std {std}");
    }

    #[test]
    fn truncated_normal_stays_within_two_std() {
        let mut v = vec![0.0f32; 100_000];
        truncated_normal(9, 1, 0, 1.0, 0.5, &mut v);
        assert!(v.iter().all(|&x| (0.0..=2.0).contains(&x)));
        let (mean, std) = mean_std(&v);
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        // Standard deviation of a standard normal truncated at +-2: 0.8796.
        assert!((std - 0.5 * 0.8796).abs() < 0.01, "std {std}");
        let mut again = vec![0.0f32; 100_000];
        truncated_normal(9, 1, 0, 1.0, 0.5, &mut again);
        assert_eq!(v, again);
    }

    #[test]
    fn dropout_keeps_one_minus_rate_and_scales_the_kept() {
        let n = 100_000;
        let x: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
        let (mut mask, mut y) = (vec![0.0f32; n], vec![0.0f32; n]);
        dropout(3, 4, 5, 0.3, &x, &mut mask, &mut y).unwrap();
        let scale = 1.0 / (1.0f32 - 0.3);
        let kept = mask.iter().filter(|&&m| m != 0.0).count();
        assert!((kept as f64 / n as f64 - 0.7).abs() < 0.01, "kept {kept}");
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
        assert!(y.iter().zip(&x).zip(&mask).all(|((&y, &x), &m)| y == x * m));
        // The next step draws a different mask.
        let (mut mask2, mut y2) = (vec![0.0f32; n], vec![0.0f32; n]);
        dropout(3, 4, 6, 0.3, &x, &mut mask2, &mut y2).unwrap();
        assert_ne!(mask, mask2);
        // Rate 0 keeps everything unscaled.
        dropout(3, 4, 5, 0.0, &x, &mut mask, &mut y).unwrap();
        assert_eq!(y, x);
    }

    #[test]
    fn dropout_refuses_rates_outside_zero_one() {
        let x = [1.0f32; 4];
        let (mut mask, mut y) = ([0.0f32; 4], [0.0f32; 4]);
        for rate in [1.0, 1.5, -0.1, f32::NAN] {
            let r = dropout(0, 0, 0, rate, &x, &mut mask, &mut y);
            assert!(
                matches!(r, Err(KernelError::InvalidArgument { .. })),
                "rate {rate}"
            );
        }
        assert!(dropout(0, 0, 0, 0.5, &x, &mut mask[..3], &mut y).is_err());
    }

    #[test]
    fn add_normal_adds_what_normal_draws() {
        let n = 3 * FILL_CHUNK + 5;
        let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.25 - 1.0).collect();
        let mut noise = vec![0.0f32; n];
        normal(11, 2, 9, 0.0, 0.3, &mut noise);
        let mut y = x.clone();
        add_normal(11, 2, 9, 0.3, &mut y);
        for i in 0..n {
            assert_eq!(y[i].to_bits(), (x[i] + noise[i]).to_bits(), "element {i}");
        }
        let (mean, std) = mean_std(&noise);
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((std - 0.3).abs() < 0.005, "std {std}");
    }

    #[test]
    fn dropout_mask_is_the_mask_of_dropout() {
        let n = 2 * FILL_CHUNK + 3;
        let x = vec![1.5f32; n];
        let (mut mask, mut y) = (vec![0.0f32; n], vec![0.0f32; n]);
        dropout(3, 4, 5, 0.4, &x, &mut mask, &mut y).unwrap();
        let mut alone = vec![0.0f32; n];
        dropout_mask(3, 4, 5, 0.4, &mut alone).unwrap();
        assert_eq!(mask, alone);
        assert!(dropout_mask(3, 4, 5, 1.0, &mut alone).is_err());
    }
}
