//! Portable micro-kernel: plain Rust, correct on every CPU.
//!
//! The `4 x 8` tile lives in a local array the compiler keeps in registers (it
//! vectorises the row updates with whatever baseline SIMD the target has). It uses
//! a separate multiply and add, not `mul_add`, which would call a slow software
//! routine on targets without FMA.

use super::kernel::MicroKernel;
use crate::cpu::SimdLevel;

/// The portable `4 x 8` micro-kernel.
pub(crate) struct ScalarKernel;

const MR: usize = 4;
const NR: usize = 8;

impl MicroKernel for ScalarKernel {
    const MR: usize = MR;
    const NR: usize = NR;
    const LEVEL: SimdLevel = SimdLevel::Scalar;

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
        let mut ab = [[0.0f32; NR]; MR];
        if rsa == 1 && csa == MR && rsb == NR {
            // SAFETY: the caller's contract covers exactly these reads; constant
            // strides let the compiler fold the address arithmetic.
            unsafe { accumulate(&mut ab, k, a, 1, MR, b, NR) };
        } else {
            // SAFETY: as above, with the caller's strides.
            unsafe { accumulate(&mut ab, k, a, rsa, csa, b, rsb) };
        }
        for (i, row) in ab.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                // SAFETY: the caller guarantees `c + i*ldc + j` is valid for
                // i < MR, j < NR, and exclusively ours.
                unsafe {
                    let dst = c.add(i * ldc + j);
                    *dst = if beta == 0.0 {
                        alpha * x
                    } else {
                        alpha * x + beta * *dst
                    };
                }
            }
        }
    }
}

/// `ab[i][j] += A(i, p) * B(p, j)` for `p` in `0..k`, in order.
///
/// # Safety
/// The reads described in [`MicroKernel::kernel`] are valid.
#[inline(always)]
unsafe fn accumulate(
    ab: &mut [[f32; NR]; MR],
    k: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
) {
    for p in 0..k {
        // SAFETY: p < k and j < NR, covered by the caller's contract.
        let bp: [f32; NR] = std::array::from_fn(|j| unsafe { *b.add(p * rsb + j) });
        for i in 0..MR {
            // SAFETY: i < MR and p < k, covered by the caller's contract.
            let ai = unsafe { *a.add(i * rsa + p * csa) };
            for j in 0..NR {
                ab[i][j] += ai * bp[j];
            }
        }
    }
}
