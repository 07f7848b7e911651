//! AVX2+FMA micro-kernel: a `6 x 16` tile held in twelve `ymm` accumulators.
//!
//! Per step of K it loads one 16-wide row of B (two `ymm`), broadcasts six elements
//! of A and issues twelve FMAs: with two FMA pipes that is six cycles of arithmetic
//! against eight loads, so the loads hide behind the FMAs and the kernel can run at
//! the FMA peak. Twelve accumulators, two B registers and a broadcast register fit
//! in the sixteen `ymm` registers without spilling.

use super::driver::Problem;

/// Runs the whole product with the AVX2 kernel.
///
/// The caller has checked `SimdLevel::Avx2Fma.is_supported()`.
#[cfg(target_arch = "x86_64")]
pub(super) fn gemm(problem: &Problem, c: &mut [f32], ldc: usize) {
    super::driver::gemm::<x86::Avx2Kernel>(problem, c, ldc);
}

/// Never reached: `SimdLevel::Avx2Fma` is unsupported off x86-64, and
/// `sgemm_with_level` refuses unsupported levels. Falls back to the portable kernel.
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn gemm(problem: &Problem, c: &mut [f32], ldc: usize) {
    super::driver::gemm::<super::scalar::ScalarKernel>(problem, c, ldc);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::gemm::kernel::MicroKernel;

    const MR: usize = 6;
    const NR: usize = 16;

    /// The AVX2+FMA `6 x 16` micro-kernel.
    pub(crate) struct Avx2Kernel;

    impl MicroKernel for Avx2Kernel {
        const MR: usize = MR;
        const NR: usize = NR;
        const NAME: &'static str = "avx2";

        #[inline]
        unsafe fn kernel(
            k: usize,
            alpha: f32,
            a: *const f32,
            rsa: usize,
            csa: usize,
            b: *const f32,
            rsb: usize,
            beta: f32,
            c: *mut f32,
            ldc: usize,
        ) {
            if rsa == 1 && csa == MR && rsb == NR {
                // SAFETY: forwarded contract of `MicroKernel::kernel` (the caller
                // checked AVX2+FMA support); the strides equal the constants used.
                unsafe { kernel_6x16::<true>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc) }
            } else {
                // SAFETY: as above.
                unsafe { kernel_6x16::<false>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc) }
            }
        }
    }

    /// The kernel body; `PACKED` replaces the strides by the packed-panel constants
    /// so the loads use fixed displacements.
    ///
    /// # Safety
    /// The contract of [`MicroKernel::kernel`].
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_6x16<const PACKED: bool>(
        k: usize,
        alpha: f32,
        a: *const f32,
        rsa: usize,
        csa: usize,
        b: *const f32,
        rsb: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let (rsa, csa, rsb) = if PACKED { (1, MR, NR) } else { (rsa, csa, rsb) };
        // Warm the C tile while the product runs.
        for i in 0..MR {
            // Prefetching never faults, so it needs no `unsafe`.
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + NR - 1) as *const i8);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let mut ap = a;
        let mut bp = b;
        for _ in 0..k {
            // SAFETY: `bp = b + p*rsb` and `ap = a + p*csa` for the current p < k;
            // the reads are inside the ranges the caller guarantees.
            unsafe {
                let b0 = _mm256_loadu_ps(bp);
                let b1 = _mm256_loadu_ps(bp.add(8));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*ap.add(i * rsa));
                    acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
                    acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
                }
                ap = ap.add(csa);
                bp = bp.add(rsb);
            }
        }
        let alpha_v = _mm256_set1_ps(alpha);
        if beta == 0.0 {
            for (i, acc_i) in acc.iter().enumerate() {
                // SAFETY: row i < MR of the C tile, writable per the contract.
                unsafe {
                    let ci = c.add(i * ldc);
                    _mm256_storeu_ps(ci, _mm256_mul_ps(alpha_v, acc_i[0]));
                    _mm256_storeu_ps(ci.add(8), _mm256_mul_ps(alpha_v, acc_i[1]));
                }
            }
        } else {
            let beta_v = _mm256_set1_ps(beta);
            for (i, acc_i) in acc.iter().enumerate() {
                // SAFETY: row i < MR of the C tile, readable and writable per the
                // contract since beta != 0.
                unsafe {
                    let ci = c.add(i * ldc);
                    let c0 = _mm256_loadu_ps(ci);
                    let c1 = _mm256_loadu_ps(ci.add(8));
                    let r0 = _mm256_fmadd_ps(beta_v, c0, _mm256_mul_ps(alpha_v, acc_i[0]));
                    let r1 = _mm256_fmadd_ps(beta_v, c1, _mm256_mul_ps(alpha_v, acc_i[1]));
                    _mm256_storeu_ps(ci, r0);
                    _mm256_storeu_ps(ci.add(8), r1);
                }
            }
        }
    }
}
