//! The core's floating-point peak, measured rather than looked up: independent
//! chains of single-precision FMAs held in registers, at a given SIMD level.
//!
//! The GEMM benchmarks report their rates against it. A model number does not
//! tell it: a VM reports a nominal clock, and the clock a core holds under load
//! (and whether two vCPUs share a core's FMA units) is whatever the host allows.

use crate::cpu::SimdLevel;

/// Independent accumulators: more than the 8-10 in flight (FMA latency of 4-5
/// cycles times 2 FMA pipes) that an x86-64 core needs to keep every pipe busy.
const CHAINS: usize = 12;

/// Each chain runs `acc = acc * SCALE + SHIFT`, which stays near 1 (no overflow,
/// no subnormals to slow it down) however many rounds it runs.
const SCALE: f32 = 0.999;
const SHIFT: f32 = 0.001;

/// Floating-point operations of one round of [`fma_rounds`] at `level`: one FMA
/// (two operations per lane) on each chain; `None` for a level without a probe.
/// Only AVX2 has one: the portable build has no fused multiply-add to count, and
/// no machine this project is tested on has AVX-512 (no code path lands that no
/// test has run).
pub fn flops_per_round(level: SimdLevel) -> Option<u64> {
    (level == SimdLevel::Avx2Fma).then_some((2 * CHAINS * 8) as u64)
}

/// Runs `rounds` rounds of FMAs on [`CHAINS`] register-held vectors of `level`'s
/// width and returns the sum of the results, which depends on every operation
/// (so none is optimised away); `None` for a level without a probe or one this
/// CPU does not support.
pub fn fma_rounds(level: SimdLevel, rounds: u64) -> Option<f32> {
    // Opaque to the optimiser, so it cannot work out the chains' values ahead.
    let (scale, shift) = std::hint::black_box((SCALE, SHIFT));
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports the features the function is compiled with.
        SimdLevel::Avx2Fma if level.is_supported() => {
            Some(unsafe { x86::rounds_avx2(rounds, scale, shift) })
        }
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rounds_avx2(rounds: u64, scale: f32, shift: f32) -> f32 {
        let (s, t) = (_mm256_set1_ps(scale), _mm256_set1_ps(shift));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..rounds {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, s, t);
            }
        }
        let mut lanes = [0.0f32; 8];
        let total = acc
            .iter()
            .fold(_mm256_setzero_ps(), |x, &a| _mm256_add_ps(x, a));
        // SAFETY: `lanes` holds the 8 floats an unaligned store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::supported_levels;

    /// Every chain follows `a <- a * SCALE + SHIFT` from 0, so the sum is
    /// `CHAINS * lanes` times that recurrence's value, worked out in f64 (the f32
    /// rounding of 20 steps stays far inside the tolerance).
    #[test]
    fn every_level_computes_the_chains_it_counts() {
        for level in supported_levels() {
            let Some(flops) = flops_per_round(level) else {
                assert!(
                    fma_rounds(level, 1).is_none(),
                    "{level:?} runs without a count"
                );
                continue;
            };
            for rounds in [0u64, 1, 2, 20] {
                let mut one = 0.0f64;
                for _ in 0..rounds {
                    one = one * SCALE as f64 + SHIFT as f64;
                }
                let lanes = flops as f64 / (2 * CHAINS) as f64;
                let want = one * CHAINS as f64 * lanes;
                let got = fma_rounds(level, rounds).expect("a supported level with a probe") as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * want.max(1e-3),
                    "{level:?}, {rounds} rounds: {got} vs {want}"
                );
            }
        }
    }
}
