//! The small-matrix path: the micro-kernel reads the operands in place.
//!
//! For small or skinny products, packing costs as much as the arithmetic it
//! speeds up. This path broadcasts A's elements straight from the caller's view
//! (any strides) and reads B's rows in place when they are contiguous (`b.cs ==
//! 1`). It packs only what the kernel cannot read in place: all of B when its rows
//! are strided (for example `Wᵀ` in a backward pass), the last partial panel of B's
//! columns, and each task's last partial strip of A's rows (zero-padded, so the
//! kernel never reads outside the operands).
//!
//! Work is split into tasks of whole row strips, sized from the shape only; each
//! task walks the K blocks in order, so results do not depend on the thread count.

use super::driver::{balanced_block, run_tasks, CTarget, Operand, Problem, Tile};
use super::kernel::MicroKernel;
use super::pack::pack_panels;
use super::scratch::{with_scratch, Slot};

/// Each task carries at least this many flops (~10 µs at peak).
const MIN_TASK_FLOPS: usize = 1_000_000;

/// Whether a product with fewer columns than the kernel is wide goes to the small
/// path as `Cᵀ = Bᵀ Aᵀ`: the kernel's NR lanes then run along M, which is long,
/// instead of along the short N. Needs Aᵀ readable in place (A's columns
/// contiguous, as for `Xᵀ` in a weight gradient); the transposed write-back costs
/// a little per tile, so K must not be tiny either.
pub(crate) fn prefers_transposed<K: MicroKernel>(p: &Problem) -> bool {
    p.n < K::NR && p.m >= 2 * K::NR && p.a.rs == 1 && p.k >= 32 && p.m * p.k <= 1 << 20
}

/// Whether `(m, n, k)` goes to the small path rather than the blocked one.
pub(crate) fn prefers_small(m: usize, n: usize, k: usize) -> bool {
    m * n * k <= 112 * 112 * 112 || (m.min(n) <= 64 && k * n <= 128 * 1024)
}

/// Runs a checked problem (`m, n, k > 0`) on the small path.
pub(crate) fn gemm<K: MicroKernel>(p: &Problem, c: CTarget) {
    let (m, n, k) = (p.m, p.n, p.k);
    let (mr, nr) = (K::MR, K::NR);
    let (a, b) = (&p.a, &p.b);
    // Columns 0..n_direct are read in place; the rest come from packed panels.
    let n_direct = if b.cs == 1 { n / nr * nr } else { 0 };
    let packed_cols = n - n_direct;
    let packed_panels = packed_cols.div_ceil(nr);
    let n_panels = n.div_ceil(nr);
    let kc = balanced_block(k, K::KC, 1);
    // Tasks of whole strips, as even as possible, each worth MIN_TASK_FLOPS or more.
    let strips = m.div_ceil(mr);
    let strip_flops = 2 * mr * n * k;
    let max_tasks = (strips * strip_flops / MIN_TASK_FLOPS).clamp(1, strips);
    let rows_per_task = strips.div_ceil(max_tasks) * mr;
    let tasks = m.div_ceil(rows_per_task);

    with_scratch(Slot::B, packed_panels * nr * k, |bpack| {
        pack_panels(bpack, &b.t(), n_direct, packed_cols, 0, k, nr, K::LEVEL);
        let bpack: &[f32] = bpack;
        run_tasks(tasks, |t| {
            let i0 = t * rows_per_task;
            let i1 = (i0 + rows_per_task).min(m);
            let full_end = i0 + (i1 - i0) / mr * mr;
            // The partial strip i0+full_end..i1 is packed, zero-padded to MR rows.
            with_scratch(Slot::A, if full_end < i1 { mr * k } else { 0 }, |apack| {
                if full_end < i1 {
                    pack_panels(apack, a, full_end, i1 - full_end, 0, k, mr, K::LEVEL);
                }
                for p0 in (0..k).step_by(kc) {
                    let kcur = kc.min(k - p0);
                    let beta = if p0 == 0 { p.beta } else { 1.0 };
                    for jp in 0..n_panels {
                        let j = jp * nr;
                        let cols = nr.min(n - j);
                        let b_src = if j < n_direct {
                            Operand {
                                data: b.data,
                                offset: p0 * b.rs + j,
                                rs: b.rs,
                                cs: 1,
                            }
                        } else {
                            let s = (j - n_direct) / nr;
                            Operand {
                                data: bpack,
                                offset: s * nr * k + p0 * nr,
                                rs: nr,
                                cs: 1,
                            }
                        };
                        for i in (i0..i1).step_by(mr) {
                            let rows = mr.min(i1 - i);
                            let a_src = if i < full_end {
                                Operand {
                                    data: a.data,
                                    offset: i * a.rs + p0 * a.cs,
                                    rs: a.rs,
                                    cs: a.cs,
                                }
                            } else {
                                Operand {
                                    data: apack,
                                    offset: p0 * mr,
                                    rs: 1,
                                    cs: mr,
                                }
                            };
                            let tile = Tile { i, j, rows, cols };
                            // SAFETY: task t owns rows i0..i1 of C; the caller
                            // checked the instruction set when it picked K.
                            unsafe { c.run_tile::<K>(tile, kcur, p.alpha, a_src, b_src, beta) };
                        }
                    }
                }
            });
            // SAFETY: rows i0..i1, all columns, belong to task t.
            unsafe { c.apply_epilogue(p.epilogue, i0..i1, 0, n) };
        });
    });
}
