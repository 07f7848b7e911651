//! The contract between the blocking driver and the per-ISA micro-kernels.

use crate::cpu::SimdLevel;

/// A register-blocked `MR x NR` matrix-multiply micro-kernel.
///
/// One call computes, for `i < MR` and `j < NR`, with
/// `A(i, p) = a[i*rsa + p*csa]` and `B(p, j) = b[p*rsb + j]`:
///
/// ```text
/// AB[i][j]     = sum of A(i, p) * B(p, j) over p = 0, 1, ..., k-1, in that order
/// C[i*ldc + j] <- alpha * AB[i][j] + beta * C[i*ldc + j]   if beta != 0
/// C[i*ldc + j] <- alpha * AB[i][j]                         if beta == 0 (C is never read)
/// ```
///
/// With `k == 0`, `AB` is zero. The same formula holds for packed panels (A packed
/// as `rsa = 1, csa = MR`; B packed as `rsb = NR`) and for operands read in place,
/// so the small-matrix path and the blocked path share one kernel. B's columns are
/// always contiguous; A may have any strides (its elements are broadcast one by
/// one).
pub trait MicroKernel {
    /// Rows of the register tile.
    const MR: usize;
    /// Columns of the register tile.
    const NR: usize;
    /// The instruction set the kernel needs (packing uses the same).
    const LEVEL: SimdLevel;

    /// Runs the update rule above.
    ///
    /// # Safety
    /// - `a + i*rsa + p*csa` is readable for all `i < MR`, `p < k`;
    /// - `b + p*rsb + j` is readable for all `p < k`, `j < NR`;
    /// - `c + i*ldc + j` is writable (and readable when `beta != 0`) for all
    ///   `i < MR`, `j < NR`, and no other thread accesses those elements meanwhile;
    /// - the CPU supports the kernel's instruction set.
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
    );
}
