//! The blocked GEMM driver: K, N and M blocking, packing, parallel tasks, epilogue.
//!
//! Loop nest (BLIS order, with B packed for all of K up front):
//!
//! ```text
//! for jc in N by nc:                           N blocks (nc chosen so k x nc fits L3)
//!   pack B[:, jc] into NR-column panels        (parallel over groups of panels;
//!                                               by K super-blocks if K is huge)
//!   for each task (ic, chunk of jc):           (parallel: M blocks x N chunks)
//!     for pc in K by kc:                       always in ascending order
//!       pack A[ic, pc] into MR-row panels      (per-thread buffer, stays in L2;
//!                                               or all of A packed once up front
//!                                               when N chunks would repeat it)
//!       for jr in chunk by NR:                 B micro-panel stays in L1 (or L2)
//!         for ir in ic by MR:                  A micro-panels stream from L2
//!           micro-kernel (beta on the first K block, 1 afterwards)
//!     bias + activation on the task's tile of C
//! ```
//!
//! Products with a very long K and a small C (weight gradients summed over batch x
//! steps rows) take [`k_streamed`] instead: B packed for all of K would be
//! megabytes written to memory and read back, so each task packs one K block at a
//! time into buffers that stay in L2 (for a weight gradient's layout, `Xᵀ dY` of
//! row-major X and dY, A is read in place); that layout goes there from one K
//! block on when C is small.
//!
//! Tasks own disjoint tiles of C and loop over K themselves, so the only
//! synchronisation is the end of the B packing and the end of the tasks, once per
//! N block. The route, the block sizes and the task partition are functions of
//! `(m, n, k)` and the operands' layout only, so every element of C sees the same
//! sequence of operations whatever the number of threads. (Routes differ in their
//! K blocks beyond K = 256, so the same product may round differently when only
//! its M or its layout changes.)

use super::kernel::{add_bias, MicroKernel, MAX_TILE};
use super::pack::pack_panels;
use super::{small, Epilogue, MatRef};
use crate::scratch::{with_scratch, Slot};
use std::ops::Range;

use crate::cpu::{self, SimdLevel};
use crate::par;

// The K block is the kernel's `MicroKernel::BLOCKED_KC`; the M block is at most
// its `MC`, and shorter for long K blocks (see `A_BLOCK_MAX`).
/// Smallest M block when M is cut finer to make parallel tasks.
const MIN_MC: usize = 48;
/// Largest packed block of A per task, in floats (192 KiB, a share of L2): a
/// long K block makes the M block shorter.
const A_BLOCK_MAX: usize = 192 * 256;
/// Largest N block.
const NC: usize = 4096;
/// Smallest N block when K is so long that B is packed by K super-blocks.
const MIN_NC: usize = 256;
/// Largest packed B block, `k x nc` floats (8 MiB, in the shared L3).
const B_PACK_MAX: usize = 2 * 1024 * 1024;
use super::{task_count, MIN_TASK_FLOPS};
/// Tasks per N block when the problem is large enough: plenty for dynamic load
/// balancing on a few cores.
const TARGET_TASKS: usize = 16;
/// Narrowest N chunk of a task, in NR panels: A is re-packed once per chunk.
const MIN_CHUNK_PANELS: usize = 8;
/// Packing B is split into groups of at least this many elements per task.
const MIN_PACK_TASK: usize = 16 * 1024;

/// One product, after the shape checks: `C <- epilogue(alpha * A * B + beta * C)`.
pub(crate) struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: MatRef<'a>,
    pub b: MatRef<'a>,
    pub beta: f32,
    pub epilogue: &'a Epilogue<'a>,
}

/// Runs a checked problem (`m, n, k > 0`) whose B is also packed whole in `bpack`
/// (see [`super::PackedB`]) with micro-kernel `K`.
pub(crate) fn gemm_prepacked<K: MicroKernel>(
    p: &Problem,
    c: &mut [f32],
    ldc: usize,
    bpack: &[f32],
) {
    small::gemm_prepacked::<K>(p, CTarget::new(c, ldc, p.m, p.n), bpack);
}

/// Packs all of `b` (`k x n`) into `NR`-column panels for [`gemm_prepacked`]:
/// groups of panels in parallel (an exact copy, so any split gives the same
/// bits), one group when `b` is small.
pub(crate) fn pack_whole_b<K: MicroKernel>(b: &MatRef, dst: &mut [f32]) {
    let (k, n, nr) = (b.rows, b.cols, K::NR);
    let n_panels = n.div_ceil(nr);
    let per_task = (MIN_PACK_TASK / (nr * k).max(1)).max(1);
    let pack = |t: usize, chunk: &mut [f32]| {
        let j0 = t * per_task * nr;
        let cols = (per_task * nr).min(n - j0);
        pack_panels(chunk, &b.t(), j0, cols, 0, k, nr, K::LEVEL);
    };
    let dst = &mut dst[..n_panels * nr * k];
    if n_panels <= per_task {
        pack(0, dst);
    } else {
        par::for_each_chunk_mut(dst, per_task * nr * k, pack);
    }
}

/// Runs a checked problem (`m, n > 0`) with micro-kernel `K`.
pub(crate) fn gemm<K: MicroKernel>(p: &Problem, c: &mut [f32], ldc: usize) {
    let target = CTarget::new(c, ldc, p.m, p.n);
    if p.k == 0 {
        scale_only(p, c, ldc);
    } else if streams_k::<K>(p.m, p.n, p.k) {
        k_streamed::<K>(p, target);
    } else if small::prefers_transposed::<K>(p) {
        // Cᵀ = Bᵀ Aᵀ with the roles swapped, then the epilogue on C's rows.
        let none = Epilogue::default();
        let pt = Problem {
            m: p.n,
            n: p.m,
            k: p.k,
            alpha: p.alpha,
            a: p.b.t(),
            b: p.a.t(),
            beta: p.beta,
            epilogue: &none,
        };
        small::gemm::<K>(&pt, target.transposed());
        if !p.epilogue.is_identity() {
            let rows = (MIN_TASK_FLOPS / 16 / p.n).max(1);
            par::for_each_task(p.m.div_ceil(rows), |t| {
                let i0 = t * rows;
                // SAFETY: task t owns rows i0..i0+rows of C; the product is done.
                unsafe { target.apply_epilogue(p.epilogue, i0..(i0 + rows).min(p.m), 0, p.n) };
            });
        }
    } else if streams_k_in_place::<K>(p) {
        k_streamed::<K>(p, target);
    } else if small::prefers_small(p.m, p.n, p.k) {
        small::gemm::<K>(p, target);
    } else {
        blocked::<K>(p, target);
    }
}

/// Whether a product goes to [`k_streamed`]: K very long next to a small C, as in
/// the weight gradients of layers applied at every step of long sequences (`Xᵀ dY`
/// over `batch * steps` rows).
fn streams_k<K: MicroKernel>(m: usize, n: usize, k: usize) -> bool {
    k >= 8 * K::KC && m <= K::MC && n <= 8 * K::NR
}

/// Whether a product whose A [`k_streamed`] reads in place (A's columns and B's
/// rows contiguous: a weight gradient `Xᵀ dY` of row-major X and dY) goes there
/// though K is shorter: at least one K block next to a C of at most 16 panels,
/// where packing A for the blocked path or all of B for the small one cost up to
/// a sixth of the product (one thread: 128 x 512 x 320 105 -> 108, 32 x 512 x 500
/// 93 -> 109 GFLOP/s; two threads 173 -> 205, 139 -> 206).
fn streams_k_in_place<K: MicroKernel>(p: &Problem) -> bool {
    reads_in_place(p) && p.k >= K::KC && p.m <= K::MC && p.n <= 16 * K::NR
}

/// Whether [`k_streamed`] reads A in place: A's columns contiguous, so a strip of
/// A is MR adjacent floats per step of K (and B's rows contiguous, the weight
/// gradient's layout, which packs B's panels by plain copies).
fn reads_in_place(p: &Problem) -> bool {
    p.a.rs == 1 && p.b.cs == 1
}

/// Long K, small C: each task owns a chunk of C's column panels (all rows) and
/// walks K block by block, packing that block of A and of its own B panels into
/// its thread's buffers, where they stay in L2 while the tiles run (for the
/// layout of a weight gradient, A is read in place). Packing all of
/// K ahead (the blocked path) would write both operands, megabytes each, to
/// memory and read them back; here each is read once per task and the tasks never
/// synchronise.
///
/// Every element of C sees the same K blocks in the same order whatever the
/// partition, so the number of tasks may follow the thread count: one task per
/// thread (each packs, or reads in place, all of A and its share of B), fewer when
/// the product is too small to split.
fn k_streamed<K: MicroKernel>(p: &Problem, c: CTarget) {
    let (m, n, k) = (p.m, p.n, p.k);
    let (mr, nr) = (K::MR, K::NR);
    let kc = balanced_block(k, K::KC, 1);
    let (m_panels, n_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    // A read in place but for a last partial strip (unless the kernel's corners
    // read only their own rows), which is packed block by block: rows
    // `m_direct..`. B's panels are always packed: read in place, a panel is a
    // K block of rows `n` floats apart, which for rows of 512 bytes or more fall
    // into a few of L1's sets, so every strip would fetch the panel from L2 again
    // (one thread, 64 x 128 x 457: 60 -> 73 GFLOP/s; 128 x 128 x 457: 57 -> 79).
    let m_direct = match (reads_in_place(p), K::EDGE_READS_ITS_ROWS_ONLY) {
        (false, _) => 0,
        (true, true) => m,
        (true, false) => m / mr * mr,
    };
    let strips = RowStrips::new(0..m, mr, m_direct == m);
    let threads = par::threads_in_use();
    let per_task = n_panels.div_ceil(threads.min(task_count(2 * m * n * k, n_panels)));
    par::for_each_task(n_panels.div_ceil(per_task), |t| {
        let (jp0, jp1) = (t * per_task, ((t + 1) * per_task).min(n_panels));
        let (j0, j1) = (jp0 * nr, (jp1 * nr).min(n));
        // The packed rows: `m_direct..m`.
        let a_packed = (m - m_direct).div_ceil(mr) * mr;
        let b_packed = (jp1 - jp0) * nr;
        with_scratch(Slot::A, a_packed * kc, |apack| {
            with_scratch(Slot::B, b_packed * kc, |bpack| {
                for p0 in (0..k).step_by(kc) {
                    let kcur = kc.min(k - p0);
                    let beta = if p0 == 0 { p.beta } else { 1.0 };
                    let a_block = &mut apack[..a_packed * kcur];
                    pack_panels(
                        a_block,
                        &p.a,
                        m_direct,
                        m - m_direct,
                        p0,
                        kcur,
                        mr,
                        K::LEVEL,
                    );
                    let b_block = &mut bpack[..b_packed * kcur];
                    pack_panels(b_block, &p.b.t(), j0, j1 - j0, p0, kcur, nr, K::LEVEL);
                    let (a_block, b_block): (&[f32], &[f32]) = (a_block, b_block);
                    // The next block's sources, fetched while these tiles run: a
                    // share per tile, so the packing (or the in-place reads) of the
                    // next block find them in L2 instead of waiting on memory.
                    let next = (p0 + kc..(p0 + 2 * kc).min(k), m_panels * (jp1 - jp0));
                    for jp in jp0..jp1 {
                        let j = jp * nr;
                        let b_src = Operand {
                            data: b_block,
                            offset: (j - j0) * kcur,
                            rs: nr,
                            cs: 1,
                        };
                        for (ip, (i, rows)) in strips.iter().enumerate() {
                            let part = (jp - jp0) * m_panels + ip;
                            prefetch_block(&p.a, 0..m, next.0.clone(), part, next.1);
                            prefetch_block(&p.b, next.0.clone(), j0..j1, part, next.1);
                            let a_src = if i < m_direct {
                                Operand {
                                    data: p.a.data,
                                    offset: i * p.a.rs + p0 * p.a.cs,
                                    rs: p.a.rs,
                                    cs: p.a.cs,
                                }
                            } else {
                                Operand {
                                    data: a_block,
                                    offset: (i - m_direct) * kcur,
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
                            // SAFETY: task t owns every row of the columns of
                            // panels jp0..jp1; the caller picked K for this CPU.
                            unsafe { c.run_tile::<K>(tile, kcur, p.alpha, a_src, b_src, beta) };
                        }
                    }
                }
            });
        });
        // SAFETY: the same columns, all rows, owned by task t.
        unsafe { c.apply_epilogue(p.epilogue, 0..m, j0, j1 - j0) };
    });
}

/// Prefetches share `part` of `parts` of the block `rows x cols` of `x` into L2,
/// as runs along its contiguous dimension (nothing when neither is).
fn prefetch_block(x: &MatRef, rows: Range<usize>, cols: Range<usize>, part: usize, parts: usize) {
    let (runs, run_len, run_stride, start) = if x.cs == 1 {
        (rows.len(), cols.len(), x.rs, rows.start * x.rs + cols.start)
    } else if x.rs == 1 {
        (cols.len(), rows.len(), x.cs, cols.start * x.cs + rows.start)
    } else {
        return;
    };
    if run_len == 0 {
        return;
    }
    for r in runs * part / parts..runs * (part + 1) / parts {
        let at = start + r * run_stride;
        cpu::prefetch(&x.data[at..at + run_len]);
    }
}

/// `k == 0`: `C <- epilogue(beta * C)`, never reading C when `beta == 0`.
fn scale_only(p: &Problem, c: &mut [f32], ldc: usize) {
    for i in 0..p.m {
        let row = &mut c[i * ldc..i * ldc + p.n];
        if p.beta == 0.0 {
            row.fill(0.0);
        } else {
            row.iter_mut().for_each(|x| *x *= p.beta);
        }
        p.epilogue.apply(row, 0);
    }
}

/// `ceil(x / unit) * unit`.
pub(crate) fn round_up(x: usize, unit: usize) -> usize {
    x.div_ceil(unit) * unit
}

/// The row strips of a range of rows that a kernel of `mr` rows takes: `mr` rows
/// each and a shorter last one, or, when `even`, as many strips of nearly equal
/// height (32 rows of a 6-row kernel as 6, 6, 5, 5, 5, 5 rather than 6, 6, 6, 6, 6,
/// 2). `even` is for a kernel whose corners read only their own rows of an A read
/// in place: its 4- and 5-row tiles run nearly at the full tile's speed per flop, a
/// 2-row tile at half. Each element of C sums over K in the same order whatever
/// its tile's height, so the split changes no bits.
#[derive(Clone, Copy)]
pub(crate) struct RowStrips {
    end: usize,
    start: usize,
    count: usize,
    height: usize,
    /// The first `taller` strips are one row taller than `height`.
    taller: usize,
}

impl RowStrips {
    pub(crate) fn new(rows: Range<usize>, mr: usize, even: bool) -> Self {
        let count = rows.len().div_ceil(mr);
        let (height, taller) = if even && count > 0 {
            (rows.len() / count, rows.len() % count)
        } else {
            (mr, 0)
        };
        RowStrips {
            end: rows.end,
            start: rows.start,
            count,
            height,
            taller,
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Strip `s` (`< count`) as `(first row, rows)`.
    pub(crate) fn get(&self, s: usize) -> (usize, usize) {
        let i = self.start + s * self.height + s.min(self.taller);
        let rows = self.height + usize::from(s < self.taller);
        (i, rows.min(self.end - i))
    }

    pub(crate) fn iter(self) -> impl Iterator<Item = (usize, usize)> + Clone {
        (0..self.count).map(move |s| self.get(s))
    }
}

/// Splits `len` into the fewest blocks of at most `max`, of nearly equal size
/// rounded up to `unit`; returns the block size.
pub(crate) fn balanced_block(len: usize, max: usize, unit: usize) -> usize {
    let blocks = len.div_ceil(max).max(1);
    round_up(len.div_ceil(blocks), unit).max(unit)
}
fn blocked<K: MicroKernel>(p: &Problem, c: CTarget) {
    let (m, n, k) = (p.m, p.n, p.k);
    let (mr, nr) = (K::MR, K::NR);
    let kc = balanced_block(k, K::BLOCKED_KC, 1);
    let nc_max = (B_PACK_MAX / k / nr * nr).clamp(MIN_NC, NC);
    let nc = balanced_block(n, nc_max, nr);
    // B is packed for a K super-block of `ks` (all of K unless that is huge).
    let ks = if k * nc <= B_PACK_MAX {
        k
    } else {
        (B_PACK_MAX / nc / kc).max(1) * kc
    };
    let bt = p.b.t();
    let m_pad = round_up(m, mr);
    // When M alone gives too few tasks, N chunks would each pack the same A
    // block again: pack all of A once instead (if it is not too large).
    let a_shareable = m_pad * k <= B_PACK_MAX;
    let (_, first_chunk) = partition::<K>(m, nc.div_ceil(nr), k, kc, a_shareable);
    let shared_a = first_chunk < nc.div_ceil(nr) && a_shareable;

    with_scratch(
        Slot::SharedA,
        if shared_a { m_pad * k } else { 0 },
        |apack| {
            with_scratch(Slot::B, ks * nc, |bpack| {
                for j0 in (0..n).step_by(nc) {
                    let ncur = nc.min(n - j0);
                    let n_panels = ncur.div_ceil(nr);
                    let (mc, chunk_panels) = partition::<K>(m, n_panels, k, kc, a_shareable);
                    let m_blocks = m.div_ceil(mc);
                    let n_chunks = n_panels.div_ceil(chunk_panels);
                    for k0 in (0..k).step_by(ks) {
                        let k1 = (k0 + ks).min(k);
                        let bp = &mut bpack[..n_panels * nr * (k1 - k0)];
                        let mut pack_b =
                            || pack_k_blocked(bp, &bt, j0, ncur, k0..k1, kc, nr, K::LEVEL);
                        let shared_a = if shared_a {
                            if j0 == 0 && k0 == 0 {
                                // The shared A is packed alongside the first B block:
                                // one synchronisation instead of two.
                                let pack_a =
                                    || pack_k_blocked(apack, &p.a, 0, m, 0..k, kc, mr, K::LEVEL);
                                par::join(pack_a, pack_b);
                            } else {
                                pack_b();
                            }
                            Some(&*apack)
                        } else {
                            pack_b();
                            None
                        };
                        let block = Block {
                            p,
                            c,
                            kc,
                            k0,
                            k1,
                            j0,
                            n_panels,
                            bp,
                            shared_a,
                            m_pad,
                        };
                        par::for_each_task(m_blocks * n_chunks, |t| {
                            let i0 = (t / n_chunks) * mc;
                            let jp0 = (t % n_chunks) * chunk_panels;
                            let jp1 = (jp0 + chunk_panels).min(n_panels);
                            block_task::<K>(&block, i0..(i0 + mc).min(m), jp0..jp1);
                        });
                    }
                }
            });
        },
    );
}

/// What the tasks of one (N block, K super-block) share.
struct Block<'a> {
    p: &'a Problem<'a>,
    c: CTarget,
    kc: usize,
    /// The K super-block `k0..k1` whose B is packed in `bp`.
    k0: usize,
    k1: usize,
    /// First column of the N block, and its width in NR panels.
    j0: usize,
    n_panels: usize,
    /// B of the super-block: the K block at `p0` starts at `(p0 - k0) * n_panels*NR`
    /// and holds the panels (`kcur x NR` each) one after the other.
    bp: &'a [f32],
    /// All of A, packed the same way (K block at `p0` starts at `p0 * m_pad`), or
    /// `None` when each task packs its own A block.
    shared_a: Option<&'a [f32]>,
    m_pad: usize,
}

/// One task: rows `rows` (a whole M block) times panels `panels` of the N block,
/// for the K blocks of the super-block, in order.
fn block_task<K: MicroKernel>(blk: &Block, rows: Range<usize>, panels: Range<usize>) {
    let (mr, nr) = (K::MR, K::NR);
    let p = blk.p;
    let (m, n) = (p.m, p.n);
    let m_panels = rows.len().div_ceil(mr);
    let own_len = if blk.shared_a.is_some() {
        0
    } else {
        m_panels * mr * blk.kc
    };
    with_scratch(Slot::A, own_len, |own| {
        for p0 in (blk.k0..blk.k1).step_by(blk.kc) {
            let kcur = blk.kc.min(p.k - p0);
            let beta = if p0 == 0 { p.beta } else { 1.0 };
            // This task's A panels for this K block: in the shared pack, or packed
            // now into the thread's own buffer (where it stays in L2).
            let (a_data, a_base) = match blk.shared_a {
                Some(shared) => (shared, p0 * blk.m_pad + rows.start * kcur),
                None => {
                    let own = &mut own[..m_panels * mr * kcur];
                    pack_panels(own, &p.a, rows.start, rows.len(), p0, kcur, mr, K::LEVEL);
                    (&*own, 0)
                }
            };
            let b_base = (p0 - blk.k0) * blk.n_panels * nr;
            for jp in panels.clone() {
                let j = blk.j0 + jp * nr;
                let b_src = Operand {
                    data: blk.bp,
                    offset: b_base + jp * nr * kcur,
                    rs: nr,
                    cs: 1,
                };
                for ip in 0..m_panels {
                    let i = rows.start + ip * mr;
                    let a_src = Operand {
                        data: a_data,
                        offset: a_base + ip * mr * kcur,
                        rs: 1,
                        cs: mr,
                    };
                    let tile = Tile {
                        i,
                        j,
                        rows: mr.min(m - i),
                        cols: nr.min(n - j),
                    };
                    // SAFETY: this task owns `rows` x the columns of `panels` (the
                    // partition in `blocked` is disjoint); the caller picked K for
                    // this CPU.
                    unsafe { blk.c.run_tile::<K>(tile, kcur, p.alpha, a_src, b_src, beta) };
                }
            }
        }
    });
    if blk.k1 == p.k {
        let j = blk.j0 + panels.start * nr;
        let cols = (panels.len() * nr).min(n - j);
        // SAFETY: the same rows and columns as above, owned by this task.
        unsafe { blk.c.apply_epilogue(p.epilogue, rows, j, cols) };
    }
}

/// Packs rows `row0..row0+rows` and columns `cols` of `x` into `w`-row panels, K
/// block by K block (blocks of `kc` from `cols.start`): with `rows_pad = ceil(rows /
/// w) * w`, the block at column `p0` starts at `(p0 - cols.start) * rows_pad` and
/// holds its panels (`kcur x w` each) one after the other, so the panels one K
/// block of a task streams through are adjacent in memory. Parallel over groups
/// of panels.
fn pack_k_blocked(
    dst: &mut [f32],
    x: &MatRef,
    row0: usize,
    rows: usize,
    cols: Range<usize>,
    kc: usize,
    w: usize,
    level: SimdLevel,
) {
    let rows_pad = round_up(rows, w);
    let threads = par::threads_in_use();
    let serial = threads == 1;
    let panels = rows_pad / w;
    let group_of = |kcur: usize| {
        if serial {
            panels
        } else {
            (MIN_PACK_TASK / (w * kcur))
                .max(panels.div_ceil(2 * threads))
                .max(1)
        }
    };
    if !serial && cols.len() > kc && group_of(kc) >= panels {
        // Narrow and long (a weight gradient's operands): a K block is one
        // group, too small to split, but there are many; pack them side by side.
        let len = cols.len() * rows_pad;
        par::for_each_chunk_mut(&mut dst[..len], kc * rows_pad, |b, block| {
            let p0 = cols.start + b * kc;
            pack_panels(block, x, row0, rows, p0, block.len() / rows_pad, w, level);
        });
        return;
    }
    for p0 in cols.clone().step_by(kc) {
        let kcur = kc.min(cols.end - p0);
        let start = (p0 - cols.start) * rows_pad;
        let block = &mut dst[start..start + kcur * rows_pad];
        // One task per group of panels. A group reads its source rows in runs of
        // `group * w` floats, so groups are made as large as the parallel split
        // allows (all panels when serial): short runs from many rows defeat the
        // prefetchers. Packing is an exact copy, so the split may depend on the
        // thread count.
        let group = group_of(kcur);
        let chunk_len = group * w * kcur;
        let pack_group = |g: usize, chunk: &mut [f32]| {
            let r = g * group * w;
            let n_rows = (group * w).min(rows - r);
            pack_panels(chunk, x, row0 + r, n_rows, p0, kcur, w, level);
        };
        if serial || block.len() <= chunk_len {
            block
                .chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(g, chunk)| pack_group(g, chunk));
        } else {
            par::for_each_chunk_mut(block, chunk_len, pack_group);
        }
    }
}

/// The task partition of one N block of `n_panels` NR-panels, with K blocks of
/// `kc`: returns the M block size and the N chunk width in panels. Depends on the
/// shape only.
///
/// M is cut first (down to [`MIN_MC`] rows), since M blocks share the packed B
/// and pack disjoint parts of A; N chunks are added only when M is too short.
/// Each N chunk packs its A block again unless all of A is packed once
/// (`a_shareable`), so chunks are kept wide then; a shared A lets them be as
/// narrow as one panel (a weight gradient: short M and N, very long K).
fn partition<K: MicroKernel>(
    m: usize,
    n_panels: usize,
    k: usize,
    kc: usize,
    a_shareable: bool,
) -> (usize, usize) {
    let (mr, nr) = (K::MR, K::NR);
    let flops = 2 * m * n_panels * nr * k;
    let tasks = (flops / MIN_TASK_FLOPS).clamp(1, TARGET_TASKS);
    let mc_max = (A_BLOCK_MAX / kc).clamp(MIN_MC, K::MC);
    let m_blocks = m.div_ceil(mc_max).max(tasks.min(m / MIN_MC)).max(1);
    let mc = round_up(m.div_ceil(m_blocks), mr);
    let m_blocks = m.div_ceil(mc);
    let min_chunk = if a_shareable { 1 } else { MIN_CHUNK_PANELS };
    let n_chunks = tasks.div_ceil(m_blocks).min(n_panels / min_chunk).max(1);
    (mc, n_panels.div_ceil(n_chunks))
}

/// A tile of C: rows `i..i+rows`, columns `j..j+cols`, at most `MR x NR`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    pub i: usize,
    pub j: usize,
    pub rows: usize,
    pub cols: usize,
}

/// A micro-kernel operand: element `(r, p)` at `data[offset + r*rs + p*cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand<'s> {
    pub data: &'s [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Operand<'_> {
    /// Whether every element `(r, p)` with `r < rows`, `p < cols` is inside `data`.
    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// The output matrix shared by the tasks of one product. Tasks write disjoint
/// tiles through a raw pointer; every access is bounds-checked against `len`.
#[derive(Clone, Copy)]
pub(crate) struct CTarget {
    ptr: *mut f32,
    len: usize,
    ldc: usize,
    m: usize,
    n: usize,
    /// Tiles address `Cᵀ` (`m x n` here are the dimensions of `Cᵀ`): tile element
    /// `(i, j)` is stored at `j*ldc + i`.
    transposed: bool,
}

// SAFETY: CTarget is a pointer into a `&mut [f32]` that outlives the product; tasks
// only touch disjoint tiles (each `unsafe` accessor states that obligation).
unsafe impl Send for CTarget {}
// SAFETY: as above.
unsafe impl Sync for CTarget {}

impl CTarget {
    /// Wraps the checked output `c` (`m x n`, leading dimension `ldc >= n`).
    pub(crate) fn new(c: &mut [f32], ldc: usize, m: usize, n: usize) -> Self {
        assert!(m == 0 || n == 0 || (m - 1) * ldc + n <= c.len());
        assert!(m <= 1 || ldc >= n);
        CTarget {
            ptr: c.as_mut_ptr(),
            len: c.len(),
            ldc,
            m,
            n,
            transposed: false,
        }
    }

    /// The same output seen as `Cᵀ`: tiles of the product `Bᵀ Aᵀ` land transposed.
    fn transposed(self) -> Self {
        CTarget {
            m: self.n,
            n: self.m,
            transposed: !self.transposed,
            ..self
        }
    }

    /// Runs micro-kernel `K` for one tile: the kernel reads `K::MR` rows of `a`,
    /// `K::NR` columns of `b` (padded panels or in-place operands) and `k` steps of
    /// each; only the valid `rows x cols` part of C is written.
    ///
    /// # Panics
    /// If the tile or an operand range is out of bounds.
    ///
    /// # Safety
    /// No other thread accesses this tile of C during the call, and the CPU
    /// supports `K`'s instruction set.
    pub(crate) unsafe fn run_tile<K: MicroKernel>(
        &self,
        t: Tile,
        k: usize,
        alpha: f32,
        a: Operand,
        b: Operand,
        beta: f32,
    ) {
        assert!(
            t.rows <= K::MR && t.cols <= K::NR && t.i + t.rows <= self.m && t.j + t.cols <= self.n
        );
        // A corner's kernel may read only the rows it computes (see `MicroKernel`).
        let a_rows = if t.rows < K::MR && K::EDGE_READS_ITS_ROWS_ONLY {
            t.rows
        } else {
            K::MR
        };
        assert!(b.cs == 1 && a.covers(a_rows, k) && b.covers(k, K::NR));
        let a_ptr = a.data[a.offset..].as_ptr();
        let b_ptr = b.data[b.offset..].as_ptr();
        if t.rows == K::MR && t.cols == K::NR && !self.transposed {
            // SAFETY: the tile is inside C (asserted above, with (m-1)*ldc + n <= len
            // from `new`), the operand ranges are covered (asserted), the caller owns
            // the tile and vouches for the instruction set.
            unsafe {
                let c_ptr = self.ptr.add(t.i * self.ldc + t.j);
                K::kernel(
                    k, alpha, a_ptr, a.rs, a.cs, b_ptr, b.rs, beta, c_ptr, self.ldc,
                );
            }
        } else if !self.transposed {
            // SAFETY: the valid corner of the tile is inside C (asserted above), the
            // operand ranges are covered (asserted), the caller owns the tile and
            // vouches for the instruction set.
            unsafe {
                let c_ptr = self.ptr.add(t.i * self.ldc + t.j);
                K::kernel_edge(
                    t.rows, t.cols, k, alpha, a_ptr, a.rs, a.cs, b_ptr, b.rs, beta, c_ptr, self.ldc,
                );
            }
        } else {
            // A tile of Cᵀ: compute the full tile into a local buffer, then store
            // its valid part transposed.
            const { assert!(K::MR * K::NR <= MAX_TILE) };
            let mut buf = [0.0f32; MAX_TILE];
            // SAFETY: `buf` holds MR x NR elements with leading dimension NR; beta = 0
            // so it is not read; operand ranges as above (a partial strip through
            // the corner kernel, which may read only its rows of A).
            unsafe {
                let out = buf.as_mut_ptr();
                if t.rows == K::MR {
                    K::kernel(k, alpha, a_ptr, a.rs, a.cs, b_ptr, b.rs, 0.0, out, K::NR)
                } else {
                    K::kernel_edge(
                        t.rows,
                        K::NR,
                        k,
                        alpha,
                        a_ptr,
                        a.rs,
                        a.cs,
                        b_ptr,
                        b.rs,
                        0.0,
                        out,
                        K::NR,
                    )
                }
            };
            for r in 0..t.rows {
                for (c, &v) in buf[r * K::NR..r * K::NR + t.cols].iter().enumerate() {
                    let idx = (t.j + c) * self.ldc + t.i + r;
                    debug_assert!(idx < self.len);
                    // SAFETY: (t.j + c, t.i + r) is an element of C (t.j + c <
                    // n = C's rows, t.i + r < m = C's columns, asserted above),
                    // so idx <= (rows-1)*ldc + cols - 1 < len; the caller owns it.
                    unsafe {
                        let x = self.ptr.add(idx);
                        *x = if beta == 0.0 { v } else { v + beta * *x };
                    }
                }
            }
        }
    }

    /// Runs the gathered-rows kernel on the `rows x cols` block at `(i, j)` (`j` a
    /// multiple of `NR`), one call per strip's worth of panels: groups of `width`
    /// steps of K whose rows are at the `MR` addresses per group of `row_addrs`,
    /// against B's groups `tap_index` of the consecutive panels `panels`
    /// (`panel_len` floats each, one per `NR` columns), adding `bias[j..j + cols]`
    /// when given (in the kernel's stores on full-width tiles).
    ///
    /// # Panics
    /// If the block is outside C, `row_addrs` does not hold `MR` addresses per
    /// group, `panels` or the bias is too short, or a group is past the end of a
    /// panel.
    ///
    /// # Safety
    /// Each address is readable for `width` floats; no other thread accesses this
    /// block of C during the call; the CPU supports `K`'s instruction set.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn run_gathered_panels<K: MicroKernel>(
        &self,
        (i, j): (usize, usize),
        (rows, cols): (usize, usize),
        width: usize,
        row_addrs: &[usize],
        tap_index: &[usize],
        (panels, panel_len): (&[f32], usize),
        beta: f32,
        bias: Option<&[f32]>,
    ) {
        let (taps, nr) = (tap_index.len(), K::NR);
        assert!(!self.transposed && rows <= K::MR);
        assert!(i + rows <= self.m && j + cols <= self.n && row_addrs.len() == taps * K::MR);
        assert!(cols.div_ceil(nr) * panel_len <= panels.len());
        assert!(tap_index.iter().all(|&t| (t + 1) * width * nr <= panel_len));
        let bias = bias.map(|b| &b[j..j + cols]);
        let groups = (taps, width, row_addrs.as_ptr(), tap_index.as_ptr());
        for p in 0..cols.div_ceil(nr) {
            let (jp, tile_cols) = (p * nr, nr.min(cols - p * nr));
            let b = panels[p * panel_len..].as_ptr();
            let tile_bias = bias.map(|bias| &bias[jp..jp + tile_cols]);
            // SAFETY: the tile is inside C (asserted, with (m-1)*ldc + n <= len
            // from `new`), its panel and groups are in `panels`, its bias is
            // sliced to its columns; the rest is the caller's.
            unsafe {
                let c = self.ptr.add(i * self.ldc + j + jp);
                let (taps, width, row_addrs, tap_index) = groups;
                if tile_cols == nr {
                    let bias = tile_bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
                    K::kernel_gathered_biased(rows, groups, b, beta, bias, c, self.ldc);
                    continue;
                }
                K::kernel_gathered(
                    rows, tile_cols, taps, width, row_addrs, tap_index, b, beta, c, self.ldc,
                );
                if let Some(bias) = tile_bias {
                    add_bias(rows, tile_cols, bias.as_ptr(), c, self.ldc);
                }
            }
        }
    }

    /// Bias and activation on rows `rows`, columns `j..j+cols`.
    ///
    /// # Safety
    /// No other thread accesses those elements during the call.
    pub(crate) unsafe fn apply_epilogue(
        &self,
        ep: &Epilogue,
        rows: std::ops::Range<usize>,
        j: usize,
        cols: usize,
    ) {
        if ep.is_identity() {
            return;
        }
        for i in rows {
            // SAFETY: forwarded ownership; bounds are checked in `row_mut`.
            let row = unsafe { self.row_mut(i, j, cols) };
            ep.apply(row, j);
        }
    }

    /// The segment of row `i`, columns `j..j+cols`.
    ///
    /// # Safety
    /// No other reference to those elements exists while the slice lives.
    // The `&mut` from `&self` is the point of this type: exclusivity comes from
    // the task partition, which the caller vouches for.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row_mut(&self, i: usize, j: usize, cols: usize) -> &mut [f32] {
        assert!(!self.transposed && i < self.m && j + cols <= self.n);
        debug_assert!(i * self.ldc + j + cols <= self.len);
        // SAFETY: i*ldc + j + cols <= (m-1)*ldc + n <= len (checked in `new`), the
        // pointer comes from a live `&mut [f32]`, exclusivity is the caller's.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.ldc + j), cols) }
    }
}
