//! The small-matrix path: the micro-kernel reads A in place.
//!
//! For small or skinny products, and for a short K with A the taller operand
//! (each element of A is then used too few times), packing costs as much as the
//! arithmetic it speeds up. This path broadcasts A's elements straight from the
//! caller's view (any strides) and reads B's rows in place when they are
//! contiguous (`b.cs == 1`) and B is small. It packs all of B when its rows are
//! strided (for example `Wᵀ` in a backward pass) or when B is larger than half of
//! L1 and many strips of A go past it (its rows, read in place, would fight over a
//! few L1 sets); and otherwise only the last partial panel of B's columns and each
//! task's last partial strip of A's rows (zero-padded, so the kernel never reads
//! outside the operands).
//!
//! Work is split into tasks of whole row strips (or, when all of B is packed and
//! B is the wider operand or A is small, of whole column panels), sized from the
//! shape (a product worth a single task is cut in two on several threads, see
//! [`task_count`]); each task walks the K blocks in order, so results do not
//! depend on the thread count.

use super::driver::{balanced_block, CTarget, Operand, Problem, RowStrips, Tile};
use super::kernel::MicroKernel;
use super::pack::pack_panels;
use crate::par;
use crate::scratch::{with_scratch, Slot};
use std::ops::Range;

use super::task_count;

/// Fewest rows of A for which a B whose rows are contiguous is packed anyway
/// (eight strips of the AVX2 kernel share the copy).
const PACK_B_MIN_ROWS: usize = 48;
/// Fewer rows do for a B whose rows are at least `LONG_B_ROW` floats (512 bytes)
/// apart: a panel read in place then falls into at most an eighth of L1's sets and
/// comes from L2 again for every strip (one thread, 32 x 512 x 128: 48 -> 63
/// GFLOP/s packed; 24 x 512 x 128 49 -> 60; 16 x 512 x 128 49 -> 50).
const PACK_LONG_B_MIN_ROWS: usize = 16;
/// Row stride of B, in floats, from which `PACK_LONG_B_MIN_ROWS` applies.
const LONG_B_ROW: usize = 128;
/// Largest B (`k * n` floats, 16 KiB: half of L1) read in place by many strips.
const PACK_B_MIN_LEN: usize = 4096;
/// Largest A (`m * k` floats, 256 KiB: half of L2) that every task of B's
/// column panels reads whole.
const SHARED_A_MAX: usize = 64 * 1024;

/// Largest K block of B, in floats, that [`strips`] runs strip by strip: 32K
/// floats, a quarter of a 512 KiB L2.
const STRIP_MAJOR_MAX_B: usize = 32 * 1024;

/// Whether a product with fewer columns than the kernel is wide goes to the small
/// path as `Cᵀ = Bᵀ Aᵀ`: the kernel's NR lanes then run along M, which is long,
/// instead of along the short N. Needs Aᵀ readable in place (A's columns
/// contiguous, as for `Xᵀ` in a weight gradient); the transposed write-back costs
/// a little per tile, so K must not be tiny either.
pub(crate) fn prefers_transposed<K: MicroKernel>(p: &Problem) -> bool {
    p.n < K::NR && p.m >= 2 * K::NR && p.a.rs == 1 && p.k >= 32 && p.m * p.k <= 1 << 20
}

/// Whether `(m, n, k)` goes to the small path rather than the blocked one: small
/// products; a short side next to a small B; and a short K with A the taller
/// operand (an input projection, `tokens x features` by `features x gates`), where
/// each element of A is used too few times to repay packing it (reading it in
/// place measured 4-9% faster on one thread, 5-30% on two, up to 4096 x 4096 x
/// 128).
pub(crate) fn prefers_small(m: usize, n: usize, k: usize) -> bool {
    m * n * k <= 112 * 112 * 112
        || (m.min(n) <= 64 && k * n <= 128 * 1024)
        || (k <= SHORT_K && m >= n)
}

/// Longest K for which a product with A the taller operand reads A in place.
const SHORT_K: usize = 128;

/// Runs a checked problem (`m, n, k > 0`) on the small path.
pub(crate) fn gemm<K: MicroKernel>(p: &Problem, c: CTarget) {
    let (m, n, k) = (p.m, p.n, p.k);
    let nr = K::NR;
    let b = &p.b;
    let n_panels = n.div_ceil(nr);
    let kc = balanced_block(k, K::KC, 1);
    // Read in place, a panel of B is `k` rows of NR floats, `b.rs` floats apart:
    // for rows of 64 floats (256 bytes) they fall into a quarter of L1's sets, so
    // a panel of a few hundred rows cannot stay in L1 and every strip of A reloads
    // it from L2. Packed, a panel is contiguous. Worth a copy of B when B is over
    // half of L1 and enough strips of A share it; longer rows fall into fewer sets.
    let shared_by = if b.rs >= LONG_B_ROW {
        PACK_LONG_B_MIN_ROWS
    } else {
        PACK_B_MIN_ROWS
    };
    let packs_b = b.cs != 1 || m >= shared_by && k * n > PACK_B_MIN_LEN;
    if packs_b && m >= n && m * k > SHARED_A_MAX {
        // B is the smaller operand and A is large (an input gradient over batch x
        // steps rows comes from memory): pack B once, then tasks take row strips
        // as below, so each task reads only its rows of A.
        with_scratch(Slot::B, n_panels * nr * k, |bpack| {
            super::driver::pack_whole_b::<K>(b, bpack);
            gemm_prepacked::<K>(p, c, bpack);
        });
        return;
    }
    if packs_b {
        // B is the larger operand, or A is small enough for every task to read
        // all of it: tasks take chunks of B's column panels and pack their own,
        // so packing runs in parallel, each task's panels stay in its core's
        // cache, and a call is one parallel section rather than a serial pack
        // followed by one.
        let panel_flops = 2 * m * nr * k;
        let max_tasks = task_count(n_panels * panel_flops, n_panels);
        let per_task = n_panels.div_ceil(max_tasks);
        par::for_each_task(n_panels.div_ceil(per_task), |t| {
            let (jp0, jp1) = (t * per_task, ((t + 1) * per_task).min(n_panels));
            let (j0, j1) = (jp0 * nr, (jp1 * nr).min(n));
            with_scratch(Slot::B, (jp1 - jp0) * nr * k, |bpack| {
                pack_panels(bpack, &b.t(), j0, j1 - j0, 0, k, nr, K::LEVEL);
                let bpack: &[f32] = bpack;
                let panel = |jp: usize, p0: usize| Operand {
                    data: bpack,
                    offset: (jp - jp0) * nr * k + p0 * nr,
                    rs: nr,
                    cs: 1,
                };
                strips::<K>(p, c, 0..m, jp0..jp1, kc, panel);
            });
            // SAFETY: columns j0..j1, all rows, belong to task t.
            unsafe { c.apply_epilogue(p.epilogue, 0..m, j0, j1 - j0) };
        });
        return;
    }
    // B's rows are read in place; only the last partial panel is packed, once.
    let n_direct = n / nr * nr;
    let packed_cols = n - n_direct;
    with_scratch(Slot::B, packed_cols.div_ceil(nr) * nr * k, |bpack| {
        pack_panels(bpack, &b.t(), n_direct, packed_cols, 0, k, nr, K::LEVEL);
        let bpack: &[f32] = bpack;
        let panel = |jp: usize, p0: usize| {
            let j = jp * nr;
            if j < n_direct {
                Operand {
                    data: b.data,
                    offset: p0 * b.rs + j,
                    rs: b.rs,
                    cs: 1,
                }
            } else {
                Operand {
                    data: bpack,
                    offset: p0 * nr,
                    rs: nr,
                    cs: 1,
                }
            }
        };
        row_tasks::<K>(p, c, kc, panel);
    });
}

/// Runs a checked problem (`m, n, k > 0`) whose B is also packed whole in `bpack`
/// (`NR`-column panels over all of K, as [`pack_panels`] lays them out): tasks of
/// row strips, A read in place.
pub(crate) fn gemm_prepacked<K: MicroKernel>(p: &Problem, c: CTarget, bpack: &[f32]) {
    let (nr, k) = (K::NR, p.k);
    assert!(bpack.len() >= p.n.div_ceil(nr) * nr * k);
    let kc = balanced_block(k, K::KC, 1);
    let panel = |jp: usize, p0: usize| Operand {
        data: bpack,
        offset: jp * nr * k + p0 * nr,
        rs: nr,
        cs: 1,
    };
    row_tasks::<K>(p, c, kc, panel);
}

/// All of C in tasks of whole row strips, as even as possible, as many as
/// [`task_count`] gives; `panel` as for [`strips`].
fn row_tasks<'b, K: MicroKernel>(
    p: &Problem,
    c: CTarget,
    kc: usize,
    panel: impl Fn(usize, usize) -> Operand<'b> + Sync,
) {
    let (m, n, k) = (p.m, p.n, p.k);
    let mr = K::MR;
    let strips_count = m.div_ceil(mr);
    let strip_flops = 2 * mr * n * k;
    let max_tasks = task_count(strips_count * strip_flops, strips_count);
    let rows_per_task = strips_count.div_ceil(max_tasks) * mr;
    let tasks = m.div_ceil(rows_per_task);
    par::for_each_task(tasks, |t| {
        let i0 = t * rows_per_task;
        let i1 = (i0 + rows_per_task).min(m);
        strips::<K>(p, c, i0..i1, 0..n.div_ceil(K::NR), kc, &panel);
        // SAFETY: rows i0..i1, all columns, belong to task t.
        unsafe { c.apply_epilogue(p.epilogue, i0..i1, 0, n) };
    });
}

/// Computes the tiles of rows `rows` and panels `panels` of C, K block by K
/// block in order; `panel(jp, p0)` gives B's panel `jp` from row `p0`. A is read
/// in place, but for a last partial strip, which is packed zero-padded to MR rows
/// unless the kernel's corners read only their own rows (then the strips are of
/// nearly equal height instead, see [`RowStrips`]).
fn strips<'b, K: MicroKernel>(
    p: &Problem,
    c: CTarget,
    rows: Range<usize>,
    panels: Range<usize>,
    kc: usize,
    panel: impl Fn(usize, usize) -> Operand<'b>,
) {
    let (n, k) = (p.n, p.k);
    let (mr, nr) = (K::MR, K::NR);
    let a = &p.a;
    let (i0, i1) = (rows.start, rows.end);
    // Rows read in place; a last partial strip is packed zero-padded unless the
    // kernel's corners read only their own rows.
    let full_end = if K::EDGE_READS_ITS_ROWS_ONLY {
        i1
    } else {
        i0 + (i1 - i0) / mr * mr
    };
    with_scratch(Slot::A, if full_end < i1 { mr * k } else { 0 }, |apack| {
        if full_end < i1 {
            pack_panels(apack, a, full_end, i1 - full_end, 0, k, mr, K::LEVEL);
        }
        let apack: &[f32] = apack;
        // With few panels (B's K block fits in a quarter of L2) each strip of A
        // stays in L1 while the panels go by, so A, read in place through its
        // strides, is fetched once per K block rather than once per panel; with
        // many panels, each panel stays in L1 while the strips go by instead.
        let strip_major = kc * panels.len() * nr <= STRIP_MAJOR_MAX_B;
        let strips = RowStrips::new(i0..i1, mr, K::EDGE_READS_ITS_ROWS_ONLY);
        for p0 in (0..k).step_by(kc) {
            let kcur = kc.min(k - p0);
            let beta = if p0 == 0 { p.beta } else { 1.0 };
            let tile = |(i, rows): (usize, usize), jp: usize| {
                let j = jp * nr;
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
                let tile = Tile {
                    i,
                    j,
                    rows,
                    cols: nr.min(n - j),
                };
                // SAFETY: the calling task owns rows `rows` x the columns of
                // `panels` of C; the caller checked the instruction set when it
                // picked K.
                unsafe { c.run_tile::<K>(tile, kcur, p.alpha, a_src, panel(jp, p0), beta) };
            };
            let strips = strips.iter();
            if strip_major {
                for strip in strips {
                    panels.clone().for_each(|jp| tile(strip, jp));
                }
            } else {
                for jp in panels.clone() {
                    strips.clone().for_each(|strip| tile(strip, jp));
                }
            }
        }
    });
}
