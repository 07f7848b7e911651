//! AVX-512 micro-kernel: a `12 x 32` tile held in twenty-four `zmm` accumulators.
//!
//! Per step of K it loads one 32-wide row of B (two `zmm`), broadcasts twelve
//! elements of A and issues twenty-four FMAs. With two 512-bit FMA pipes that is
//! twelve cycles of arithmetic against fourteen loads, which the two vector load
//! ports absorb; twenty-four independent accumulators hide the four-cycle FMA
//! latency three times over. Accumulators, the two B registers and the broadcast
//! registers fit in the thirty-two `zmm` registers without spilling.
//!
//! Edge tiles run the same body with fewer rows (a copy per row count, 1 to 12)
//! and, when at most 16 columns remain, one vector instead of two; the last vector
//! is loaded and stored through a lane mask, so partial tiles write C in place
//! with no buffer and no wasted rows.
//!
//! The small and K-streamed paths use the trait's default blocks (a `256 x 32` B
//! micro-panel is 32 KiB, an L1). The blocked path takes K in blocks of up to
//! 1024, and M in blocks down to 48 (A's block stays 192 KiB of L2): the tile loop
//! then streams its `1024 x 32` B micro-panel from L2 at full speed, and C is read
//! and written a quarter as often. On a Zen 4 core (32 KiB L1, 1 MiB L2) that took
//! one thread from 97-102 to 105-110 GFLOP/s at 1024-2048³ (peak 116); 256 x 192
//! had measured best among K blocks up to 384 there, and on a Sapphire Rapids
//! core.
//!
//! The gathered-rows kernel (a convolution's patches read in place) runs the same
//! tile with one pointer per row of A, four steps of K per iteration; without it
//! this level fell back to copying each group's rows into a panel on the stack,
//! which cost a quarter of the toy ResNet's training step on a Zen 4 core.
//!
//! Packing uses a 16 x 16 register transpose with masked loads and stores, so any
//! panel width and any number of columns take the vector path.

/// The micro-kernel of this level, for the driver's generic paths. Callers check
/// `SimdLevel::Avx512.is_supported()` first; off x86-64 the level is never
/// supported, and the portable kernel stands in so the code still compiles.
#[cfg(target_arch = "x86_64")]
pub(super) type Kernel = x86::Avx512Kernel;

/// See above.
#[cfg(not(target_arch = "x86_64"))]
pub(super) type Kernel = super::scalar::ScalarKernel;

/// Packs a panel of `W` rows that are each contiguous along the columns
/// (`rows[r][p]`): `panel[p*W + r] = rows[r][p]`, sixteen rows by sixteen columns
/// at a time. Returns how many columns it packed: all of them.
///
/// The caller has checked `SimdLevel::Avx512.is_supported()`.
///
/// # Panics
/// If a row is shorter than `panel.len() / W`.
#[cfg(target_arch = "x86_64")]
pub(super) fn pack_rows<const W: usize>(panel: &mut [f32], rows: &[&[f32]; W]) -> usize {
    let cols = panel.len() / W;
    assert!(rows.iter().all(|r| r.len() >= cols));
    let ptrs: [*const f32; W] = std::array::from_fn(|r| rows[r].as_ptr());
    // SAFETY: every row holds at least `cols` floats and the panel `W * cols`;
    // `transpose_rows` reads columns `< cols` of rows `< W` and writes
    // `out[p*W + r]` for `p < cols`, `r < W` only (masked loads and stores). The
    // caller checked AVX-512 support.
    unsafe { x86::transpose_rows(panel.as_mut_ptr(), &ptrs, cols) };
    cols
}

/// Not reached off x86-64 (the AVX-512 level is unsupported there).
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn pack_rows<const W: usize>(_panel: &mut [f32], _rows: &[&[f32]; W]) -> usize {
    0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::cpu::SimdLevel;
    use crate::gemm::kernel::MicroKernel;

    /// Rows of the tile.
    const MR: usize = 12;
    /// `zmm` vectors per row of the tile.
    const NV: usize = 2;
    /// Columns of the tile.
    const NR: usize = 16 * NV;

    /// The AVX-512 `12 x 32` micro-kernel.
    pub(crate) struct Avx512Kernel;

    impl MicroKernel for Avx512Kernel {
        const MR: usize = MR;
        const NR: usize = NR;
        const LEVEL: SimdLevel = SimdLevel::Avx512;
        const BLOCKED_KC: usize = 1024;
        /// A corner runs [`tile`] with its own row count, which reads A's rows
        /// below it only: a last partial strip is read in place, not packed (the
        /// backward step of a 128-row LSTM packed its last 8 rows every step).
        const EDGE_READS_ITS_ROWS_ONLY: bool = true;

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
            let args = (k, alpha, a, rsa, csa, b, rsb, beta, c, ldc);
            if rsa == 1 && csa == MR && rsb == NR {
                // SAFETY: forwarded contract of `MicroKernel::kernel` (the caller
                // checked AVX-512 support); the strides equal the constants used.
                unsafe { tile::<MR, NV, true>(args, ALL) }
            } else {
                // SAFETY: as above.
                unsafe { tile::<MR, NV, false>(args, ALL) }
            }
        }

        #[inline]
        unsafe fn kernel_edge(
            rows: usize,
            cols: usize,
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
            assert!(rows <= MR && cols <= NR);
            if rows == 0 || cols == 0 {
                return;
            }
            let args = (k, alpha, a, rsa, csa, b, rsb, beta, c, ldc);
            // Columns `16 * (vectors - 1)..cols` go through the last, masked vector.
            let vectors = cols.div_ceil(16);
            let mask = lanes(cols - 16 * (vectors - 1));
            let packed = rsa == 1 && csa == MR && rsb == NR;
            // SAFETY: the contract of `kernel_edge`: only rows < rows and the
            // columns < cols that `mask` leaves in the last vector touch C; the
            // operands are readable for the full tile. AVX-512 checked by the caller.
            unsafe {
                match (vectors, packed) {
                    (1, true) => edge::<1, true>(rows, args, mask),
                    (1, false) => edge::<1, false>(rows, args, mask),
                    (_, true) => edge::<NV, true>(rows, args, mask),
                    (_, false) => edge::<NV, false>(rows, args, mask),
                }
            }
        }

        /// Reads each group's rows in place (see [`gathered`]); a corner runs a
        /// body of just its rows with the last vector masked, as `kernel_edge`.
        #[inline]
        unsafe fn kernel_gathered(
            rows: usize,
            cols: usize,
            taps: usize,
            width: usize,
            row_addrs: *const usize,
            tap_index: *const usize,
            b: *const f32,
            beta: f32,
            c: *mut f32,
            ldc: usize,
        ) {
            assert!(rows <= MR && cols <= NR);
            if rows == 0 || cols == 0 {
                return;
            }
            let vectors = cols.div_ceil(16);
            let mask = lanes(cols - 16 * (vectors - 1));
            let groups = (taps, width, row_addrs, tap_index);
            // SAFETY: the contract of `kernel_gathered`; only rows < rows and the
            // columns < cols that `mask` leaves in the last vector touch C.
            unsafe {
                match vectors {
                    1 => gathered_edge::<1>(rows, groups, b, beta, (c, ldc), mask),
                    _ => gathered_edge::<NV>(rows, groups, b, beta, (c, ldc), mask),
                }
            }
        }
    }

    /// All sixteen lanes of a vector.
    const ALL: __mmask16 = 0xFFFF;

    /// The mask of the first `n <= 16` lanes.
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            ALL
        } else {
            (1u16 << n) - 1
        }
    }

    /// The arguments of [`MicroKernel::kernel`]:
    /// `(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc)`.
    type Args = (
        usize,
        f32,
        *const f32,
        usize,
        usize,
        *const f32,
        usize,
        f32,
        *mut f32,
        usize,
    );

    /// [`tile`] with the row count as a run-time value.
    ///
    /// # Safety
    /// As [`tile`] with `R = rows`, `1 <= rows <= MR`.
    #[inline]
    unsafe fn edge<const V: usize, const PACKED: bool>(rows: usize, args: Args, mask: __mmask16) {
        // SAFETY: forwarded; each arm's row count is `rows`.
        unsafe {
            match rows {
                1 => tile::<1, V, PACKED>(args, mask),
                2 => tile::<2, V, PACKED>(args, mask),
                3 => tile::<3, V, PACKED>(args, mask),
                4 => tile::<4, V, PACKED>(args, mask),
                5 => tile::<5, V, PACKED>(args, mask),
                6 => tile::<6, V, PACKED>(args, mask),
                7 => tile::<7, V, PACKED>(args, mask),
                8 => tile::<8, V, PACKED>(args, mask),
                9 => tile::<9, V, PACKED>(args, mask),
                10 => tile::<10, V, PACKED>(args, mask),
                11 => tile::<11, V, PACKED>(args, mask),
                _ => tile::<MR, V, PACKED>(args, mask),
            }
        }
    }

    /// The kernel body for the top-left `R x (16*(V-1) + lanes of mask)` corner of
    /// the tile: `R <= MR` rows, `V <= NV` vectors of columns, the last one stored
    /// through `mask`. `PACKED` replaces the strides by the packed-panel constants
    /// so the loads use fixed displacements.
    ///
    /// # Safety
    /// The contract of [`MicroKernel::kernel`] for the operand reads (rows < R,
    /// columns < 16V); C is read (beta != 0) and written only at rows < R and the
    /// columns named above.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tile<const R: usize, const V: usize, const PACKED: bool>(
        (k, alpha, a, rsa, csa, b, rsb, beta, c, ldc): Args,
        mask: __mmask16,
    ) {
        let (rsa, csa, rsb) = if PACKED { (1, MR, NR) } else { (rsa, csa, rsb) };
        // C's rows are warmed one per step of K (see [`gathered`]).
        let mut warmed = R.saturating_sub(k);
        (0..warmed).for_each(|i| prefetch_row::<V>(c.wrapping_add(i * ldc)));
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        // Rows of A in groups of three, each group with its own pointer: row
        // 3g + r is at `ap[g] + r*rsa`. For A read in place the compiler would
        // otherwise step one pointer row by row, a chain of R dependent additions
        // per step of K: as slow as the FMAs with two vectors, twice as slow with
        // one. It would also see that the groups are `3*rsa` apart and fold them
        // back into that chain; `black_box` hides it (one trip through the stack
        // per call). Packed panels keep constant offsets. Groups past the last
        // row are never read.
        let groups: [*const f32; MR.div_ceil(3)] =
            std::array::from_fn(|g| a.wrapping_add(3 * g * rsa));
        let mut ap = if PACKED || V > 1 {
            groups
        } else {
            std::hint::black_box(groups)
        };
        let mut bp = b;
        for _ in 0..k {
            if warmed < R {
                prefetch_row::<V>(c.wrapping_add(warmed * ldc));
                warmed += 1;
            }
            // SAFETY: `bp = b + p*rsb` and `ap[g] + r*rsa = a + (3g + r)*rsa +
            // p*csa` for the current p < k and rows 3g + r < R: inside the ranges
            // the caller guarantees.
            unsafe {
                let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(bp.add(16 * v)));
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*ap[i / 3].add((i % 3) * rsa));
                    for v in 0..V {
                        acc_i[v] = _mm512_fmadd_ps(ai, bv[v], acc_i[v]);
                    }
                }
                for g in ap.iter_mut() {
                    *g = g.wrapping_add(csa);
                }
                bp = bp.add(rsb);
            }
        }
        // SAFETY: rows < R and the columns named above, per the contract.
        unsafe { store_tile(&acc, alpha, beta, c, ldc, mask) };
    }

    /// Warms one row of a C tile, `16 * V` floats from `row` (three lines when
    /// it straddles them).
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn prefetch_row<const V: usize>(row: *mut f32) {
        // Prefetching never faults, so it needs no `unsafe`.
        _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(16 * V - 1) as *const i8);
        if V > 1 {
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(16) as *const i8);
        }
    }

    /// The groups of a gathered-rows kernel: their count, their width, the rows'
    /// addresses and each group's index into B (see
    /// [`MicroKernel::kernel_gathered`]).
    type Groups = (usize, usize, *const usize, *const usize);

    /// [`gathered`] with the row count as a run-time value.
    ///
    /// # Safety
    /// As [`gathered`] with `R = rows`, `1 <= rows <= MR`.
    #[inline]
    unsafe fn gathered_edge<const V: usize>(
        rows: usize,
        groups: Groups,
        b: *const f32,
        beta: f32,
        (c, ldc): (*mut f32, usize),
        mask: __mmask16,
    ) {
        let args = (groups, b, beta, c, ldc, mask);
        // SAFETY: forwarded; each arm's row count is `rows`.
        unsafe {
            match rows {
                1 => gathered::<1, V>(args),
                2 => gathered::<2, V>(args),
                3 => gathered::<3, V>(args),
                4 => gathered::<4, V>(args),
                5 => gathered::<5, V>(args),
                6 => gathered::<6, V>(args),
                7 => gathered::<7, V>(args),
                8 => gathered::<8, V>(args),
                9 => gathered::<9, V>(args),
                10 => gathered::<10, V>(args),
                11 => gathered::<11, V>(args),
                _ => gathered::<MR, V>(args),
            }
        }
    }

    /// Steps of K per iteration of the gathered kernel's loop: four steps' loads
    /// use fixed displacements from pointers advanced once per iteration.
    const UNROLL: usize = 4;

    /// One step of K of the gathered kernel, `j` steps past where the pointers
    /// stand: A's elements at `rows[i] + j`, B's row at `bp + j*NR`.
    ///
    /// # Safety
    /// Those reads are inside the operands (columns < 16V of B's row); the CPU
    /// supports AVX-512F.
    #[inline(always)]
    unsafe fn gathered_step<const R: usize, const V: usize>(
        acc: &mut [[__m512; V]; R],
        rows: &[*const f32; R],
        bp: *const f32,
        j: usize,
    ) {
        // SAFETY: the reads are the caller's to guarantee.
        unsafe {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(bp.add(j * NR + 16 * v)));
            for (acc_i, row) in acc.iter_mut().zip(rows) {
                let ai = _mm512_set1_ps(*row.add(j));
                for v in 0..V {
                    acc_i[v] = _mm512_fmadd_ps(ai, bv[v], acc_i[v]);
                }
            }
            // A compiler barrier (it may touch memory, so no load moves across
            // it): hoisting the next steps' loads of B above these FMAs needs
            // more registers than the accumulators leave and spills them.
            std::arch::asm!("", options(nostack, preserves_flags));
        }
    }

    /// The gathered-rows kernel body for the top-left `R x (16*(V-1) + lanes of
    /// mask)` corner of the tile: each group's rows are read in place and the
    /// sums stay in registers across groups, in the order of K, as [`tile`] would
    /// add the same elements copied into a packed panel.
    ///
    /// # Safety
    /// The contract of [`MicroKernel::kernel_gathered`] for rows < `R`; C is read
    /// (beta != 0) and written only at rows < R and the columns named above.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn gathered<const R: usize, const V: usize>(
        ((taps, width, row_addrs, tap_index), b, beta, c, ldc, mask): (
            Groups,
            *const f32,
            f32,
            *mut f32,
            usize,
            __mmask16,
        ),
    ) {
        // C's rows are warmed one per iteration of the loop rather than all before
        // it (rows it has no iteration for first): three dozen prefetches at once
        // fill the line-fill buffers and stall the kernel until C arrives, a fifth
        // of a 64-deep product's time when C is not in cache (a lookup's output).
        let mut warmed = R.saturating_sub(taps * (width / UNROLL));
        (0..warmed).for_each(|i| prefetch_row::<V>(c.wrapping_add(i * ldc)));
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for t in 0..taps {
            // SAFETY: entry t < taps exists (the contract).
            let mut bp = b.wrapping_add(unsafe { *tap_index.add(t) } * width * NR);
            // SAFETY: addresses t*MR + i < taps*MR exist (the contract).
            let mut rows: [*const f32; R] = std::array::from_fn(|i| unsafe {
                std::ptr::with_exposed_provenance(*row_addrs.add(t * MR + i))
            });
            for _ in 0..width / UNROLL {
                if warmed < R {
                    prefetch_row::<V>(c.wrapping_add(warmed * ldc));
                    warmed += 1;
                }
                for j in 0..UNROLL {
                    // SAFETY: the rows and B stand at a step q with q + UNROLL <= width.
                    unsafe { gathered_step::<R, V>(&mut acc, &rows, bp, j) };
                }
                rows.iter_mut().for_each(|r| *r = r.wrapping_add(UNROLL));
                bp = bp.wrapping_add(UNROLL * NR);
            }
            for _ in 0..width % UNROLL {
                // SAFETY: the rows and B stand at a step q < width.
                unsafe { gathered_step::<R, V>(&mut acc, &rows, bp, 0) };
                rows.iter_mut().for_each(|r| *r = r.wrapping_add(1));
                bp = bp.wrapping_add(NR);
            }
        }
        // SAFETY: rows < R and the columns named above, per the contract.
        unsafe { store_tile(&acc, 1.0, beta, c, ldc, mask) };
    }

    /// `C <- alpha * acc + beta * C` on the first `R` rows of the tile, columns
    /// `16*(V-1)` on through the lanes of `mask` (C not read when beta is 0).
    ///
    /// # Safety
    /// Those elements of C are writable (readable if beta != 0); the CPU
    /// supports AVX-512F.
    #[inline(always)]
    unsafe fn store_tile<const R: usize, const V: usize>(
        acc: &[[__m512; V]; R],
        alpha: f32,
        beta: f32,
        c: *mut f32,
        ldc: usize,
        mask: __mmask16,
    ) {
        // SAFETY: the caller vouches for AVX-512F.
        let (alpha_v, beta_v) = unsafe { (_mm512_set1_ps(alpha), _mm512_set1_ps(beta)) };
        for (i, acc_i) in acc.iter().enumerate() {
            for v in 0..V {
                let m = if v + 1 == V { mask } else { ALL };
                // SAFETY: AVX-512F, per the contract.
                let ab = unsafe { _mm512_mul_ps(alpha_v, acc_i[v]) };
                // SAFETY: row i < R, the lanes of `m` in columns 16v..16v+16 of the
                // C tile: writable, and readable when beta != 0, per the contract.
                // Masked-off lanes are not accessed.
                unsafe {
                    let cv = c.add(i * ldc + 16 * v);
                    let r = if beta == 0.0 {
                        ab
                    } else {
                        _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(m, cv), ab)
                    };
                    _mm512_mask_storeu_ps(cv, m, r);
                }
            }
        }
    }

    /// `out[p*W + r] = rows[r][p]` for `p < cols`, `r < W`.
    ///
    /// Rows go sixteen at a time (missing rows of the last group read as zero and
    /// are not stored), columns sixteen at a time (the last block with masked
    /// loads).
    ///
    /// # Safety
    /// Each `rows[r]` is readable for `cols` floats; `out` is writable for
    /// `cols * W` floats; the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_rows<const W: usize>(
        out: *mut f32,
        rows: &[*const f32; W],
        cols: usize,
    ) {
        let zero = _mm512_setzero_ps();
        for g in 0..W.div_ceil(16) {
            let r0 = g * 16;
            let live = (W - r0).min(16);
            let store_mask: __mmask16 = if live == 16 {
                0xFFFF
            } else {
                (1u16 << live) - 1
            };
            for p in (0..cols).step_by(16) {
                let width = (cols - p).min(16);
                let load_mask: __mmask16 = if width == 16 {
                    0xFFFF
                } else {
                    (1u16 << width) - 1
                };
                let v: [__m512; 16] = std::array::from_fn(|r| {
                    if r < live {
                        // SAFETY: row r0 + r < W is readable at p..p+width <= cols;
                        // the masked-off lanes are not accessed.
                        unsafe { _mm512_maskz_loadu_ps(load_mask, rows[r0 + r].add(p)) }
                    } else {
                        zero
                    }
                });
                let t = transpose16(v);
                for (q, col) in t.iter().enumerate().take(width) {
                    // SAFETY: column p + q < cols; lanes r < live write
                    // out[(p+q)*W + r0 + r] with r0 + r < W, inside `cols * W`.
                    unsafe { _mm512_mask_storeu_ps(out.add((p + q) * W + r0), store_mask, *col) };
                }
            }
        }
    }

    /// Transposes 16 rows of 16 floats: element `q` of output `i` is element `i` of
    /// input `q`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
        // Within each 128-bit lane: pairs of rows interleaved, then quads.
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(x, y)
            } else {
                _mm512_unpackhi_ps(x, y)
            }
        });
        // u[4q + j], lane L: column 4L + j of rows 4q..4q+4.
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (q, j) = (i / 4, i % 4);
            let (x, y) = (t[4 * q + j / 2], t[4 * q + 2 + j / 2]);
            if j % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(x, y)
            } else {
                _mm512_shuffle_ps::<0xEE>(x, y)
            }
        });
        // For each j, a 4 x 4 transpose of 128-bit lanes across u[j], u[4+j],
        // u[8+j], u[12+j] gives columns j, 4+j, 8+j and 12+j.
        let mut out = [_mm512_setzero_ps(); 16];
        for j in 0..4 {
            let x0 = _mm512_shuffle_f32x4::<0x44>(u[j], u[4 + j]);
            let x1 = _mm512_shuffle_f32x4::<0xEE>(u[j], u[4 + j]);
            let x2 = _mm512_shuffle_f32x4::<0x44>(u[8 + j], u[12 + j]);
            let x3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + j], u[12 + j]);
            out[j] = _mm512_shuffle_f32x4::<0x88>(x0, x2);
            out[4 + j] = _mm512_shuffle_f32x4::<0xDD>(x0, x2);
            out[8 + j] = _mm512_shuffle_f32x4::<0x88>(x1, x3);
            out[12 + j] = _mm512_shuffle_f32x4::<0xDD>(x1, x3);
        }
        out
    }
}
