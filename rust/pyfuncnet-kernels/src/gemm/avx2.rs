//! AVX2+FMA micro-kernel: a `6 x 16` tile held in twelve `ymm` accumulators.
//!
//! Per step of K it loads one 16-wide row of B (two `ymm`), broadcasts six elements
//! of A and issues twelve FMAs: with two FMA pipes that is six cycles of arithmetic
//! against eight loads, so the loads hide behind the FMAs and the kernel can run at
//! the FMA peak. Twelve accumulators, two B registers and a broadcast register fit
//! in the sixteen `ymm` registers without spilling.

/// The micro-kernel of this level, for the driver's generic paths. Callers check
/// `SimdLevel::Avx2Fma.is_supported()` first; off x86-64 the level is never
/// supported, and the portable kernel stands in so the code still compiles.
#[cfg(target_arch = "x86_64")]
pub(super) type Kernel = x86::Avx2Kernel;

/// See above.
#[cfg(not(target_arch = "x86_64"))]
pub(super) type Kernel = super::scalar::ScalarKernel;

/// Packs the leading columns of a panel of `W` rows that are each contiguous along
/// the columns (`rows[r][p]`): `panel[p*W + r] = rows[r][p]`, eight columns at a
/// time with 8 x 8 register transposes. Returns how many columns it packed; the
/// caller packs the rest. Handles `W == 6` and `W == 16` (0 columns otherwise).
///
/// The caller has checked `SimdLevel::Avx2Fma.is_supported()`.
///
/// # Panics
/// If a row is shorter than `panel.len() / W`.
#[cfg(target_arch = "x86_64")]
pub(super) fn pack_rows<const W: usize>(panel: &mut [f32], rows: &[&[f32]; W]) -> usize {
    let cols = panel.len() / W;
    assert!(rows.iter().all(|r| r.len() >= cols));
    // With W = 6 each 8-wide store spills two floats into the next column, which a
    // later store overwrites: so stop while at least one column remains after.
    let done = match W {
        16 => cols / 8 * 8,
        6 => cols.saturating_sub(1) / 8 * 8,
        _ => 0,
    };
    if done == 0 {
        return 0;
    }
    let ptrs: [*const f32; W] = std::array::from_fn(|r| rows[r].as_ptr());
    // SAFETY: every row holds at least `cols >= done` floats and the panel holds
    // `W * cols`; `transpose_rows` reads columns `< done` and writes below
    // `(done - 1) * W + 8 <= W * cols` (W = 6 leaves a column spare). The caller
    // checked AVX2 support.
    unsafe { x86::transpose_rows(panel.as_mut_ptr(), &ptrs, done) };
    done
}

/// Not reached off x86-64 (the AVX2 level is unsupported there).
#[cfg(not(target_arch = "x86_64"))]
pub(super) fn pack_rows<const W: usize>(_panel: &mut [f32], _rows: &[&[f32]; W]) -> usize {
    0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::cpu::SimdLevel;
    use crate::gemm::kernel::{merge_corner, Groups, MicroKernel};

    const MR: usize = 6;
    const NR: usize = 16;

    /// The AVX2+FMA `6 x 16` micro-kernel.
    pub(crate) struct Avx2Kernel;

    impl MicroKernel for Avx2Kernel {
        const MR: usize = MR;
        const NR: usize = NR;
        const LEVEL: SimdLevel = SimdLevel::Avx2Fma;

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
            // SAFETY: forwarded contract of `MicroKernel::kernel` (the caller
            // checked AVX2+FMA support).
            unsafe { rows_x16::<MR>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc) }
        }

        const EDGE_READS_ITS_ROWS_ONLY: bool = true;

        /// A corner runs a kernel of just its rows (the last strip of a 32-row
        /// product has 2 of 6: a third of the work), through [`into_corner`].
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
            // SAFETY: the contract of `kernel_edge`: the kernel of `rows` rows reads
            // the first `rows` rows of A and writes rows < `rows` of the target it
            // is given, which `into_corner` makes C itself or a full tile.
            unsafe {
                into_corner(rows, cols, beta, c, ldc, |beta, c, ldc| {
                    rows_into(rows, k, alpha, a, rsa, csa, b, rsb, beta, c, ldc)
                })
            };
        }

        /// Reads each group's rows in place (see [`gathered_x16`]), through
        /// [`into_corner`].
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
            let groups = (taps, width, row_addrs, tap_index);
            // SAFETY: the contract of `kernel_gathered`, into C or a full tile.
            unsafe {
                into_corner(rows, cols, beta, c, ldc, |beta, c, ldc| {
                    gathered_rows_into(rows, groups, b, beta, std::ptr::null(), c, ldc)
                })
            };
        }

        /// Adds the bias in the tile's stores (see [`store_tile`]).
        #[inline]
        unsafe fn kernel_gathered_biased(
            rows: usize,
            groups: Groups,
            b: *const f32,
            beta: f32,
            bias: *const f32,
            c: *mut f32,
            ldc: usize,
        ) {
            assert!(rows <= MR);
            // SAFETY: the contract of `kernel_gathered_biased`: a full-width tile.
            unsafe { gathered_rows_into(rows, groups, b, beta, bias, c, ldc) };
        }
    }

    /// Runs `product(beta, target, ld)`, which writes rows < `rows` and `NR`
    /// columns of its target, straight into C when the corner is as wide as the
    /// tile, else into a tile on the stack whose first `cols` columns are then
    /// merged into C (B's last panel is zero-padded to `NR` columns).
    ///
    /// # Safety
    /// `product` is safe to run on those targets; `c + i*ldc + j` is valid for `i <
    /// rows`, `j < cols` (readable too when beta != 0) and no other thread uses it.
    #[inline(always)]
    unsafe fn into_corner(
        rows: usize,
        cols: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
        product: impl FnOnce(f32, *mut f32, usize),
    ) {
        if cols == NR {
            product(beta, c, ldc);
            return;
        }
        let mut tile = [0.0f32; MR * NR];
        product(0.0, tile.as_mut_ptr(), NR);
        // SAFETY: the corner of C is the caller's.
        unsafe { merge_corner(&tile, NR, rows, cols, beta, c, ldc) };
    }

    /// The kernel of `rows` (1 to MR) rows.
    ///
    /// # Safety
    /// The contract of [`MicroKernel::kernel`] for a tile of `rows` rows.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn rows_into(
        rows: usize,
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
        // SAFETY (every arm): forwarded, with `R = rows`.
        unsafe {
            match rows {
                1 => rows_x16::<1>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc),
                2 => rows_x16::<2>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc),
                3 => rows_x16::<3>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc),
                4 => rows_x16::<4>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc),
                5 => rows_x16::<5>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc),
                _ => rows_x16::<MR>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc),
            }
        }
    }

    /// How the kernel addresses A, chosen from its strides so that each case's
    /// loads use fixed displacements where the strides allow.
    mod a_layout {
        /// A packed panel: `rsa = 1, csa = MR`.
        pub const PACKED: u8 = 0;
        /// Rows contiguous along K (`csa = 1`), as a row-major A read in place.
        pub const ROWS: u8 = 1;
        /// The tile's rows adjacent (`rsa = 1`), as a transposed A read in place.
        pub const COLUMNS: u8 = 2;
        /// Any other strides.
        pub const STRIDED: u8 = 3;
    }

    /// The kernel of `R <= MR` rows, dispatched on A's layout and on whether B is
    /// a packed panel (`rsb = NR`).
    ///
    /// # Safety
    /// The contract of [`MicroKernel::kernel`] for a tile of `R` rows.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn rows_x16<const R: usize>(
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
        use a_layout::*;
        // SAFETY (every arm): forwarded; each arm's constants equal the strides.
        unsafe {
            match (rsa, csa, rsb == NR) {
                (1, MR, true) => {
                    kernel_x16::<PACKED, true, R>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc)
                }
                (_, 1, true) => {
                    kernel_x16::<ROWS, true, R>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc)
                }
                (_, 1, false) => {
                    kernel_x16::<ROWS, false, R>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc)
                }
                (1, _, true) => {
                    kernel_x16::<COLUMNS, true, R>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc)
                }
                (1, _, false) => {
                    kernel_x16::<COLUMNS, false, R>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc)
                }
                _ => kernel_x16::<STRIDED, false, R>(k, alpha, a, rsa, csa, b, rsb, beta, c, ldc),
            }
        }
    }

    /// One step of K, `j` steps past where the pointers stand: A's elements at
    /// `ap + j*csa + i` (packed or adjacent rows) or `rows[i] + j*csa`, B's row at
    /// `bp + j*rsb`.
    ///
    /// # Safety
    /// Those reads are inside the operands; the CPU supports AVX2 and FMA.
    #[inline(always)]
    unsafe fn step<const LAYOUT: u8, const R: usize>(
        acc: &mut [[__m256; 2]; R],
        ap: *const f32,
        rows: &[*const f32; R],
        bp: *const f32,
        j: usize,
        csa: usize,
        rsb: usize,
    ) {
        use a_layout::*;
        // SAFETY: the reads are the caller's to guarantee.
        unsafe {
            let b0 = _mm256_loadu_ps(bp.add(j * rsb));
            let b1 = _mm256_loadu_ps(bp.add(j * rsb + 8));
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let x = match LAYOUT {
                    PACKED | COLUMNS => ap.add(j * csa + i),
                    _ => rows[i].add(j * csa),
                };
                let ai = _mm256_broadcast_ss(&*x);
                acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
                acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
            }
            // A compiler barrier (it may touch memory, so no load moves across
            // it): hoisting the next steps' loads of B above these FMAs, as the
            // compiler otherwise does in the unrolled loop, needs more than the
            // sixteen registers and spills accumulators to the stack.
            std::arch::asm!("", options(nostack, preserves_flags));
        }
    }

    /// Steps of K per iteration of the kernel's loop: four steps' loads use fixed
    /// displacements from pointers advanced once per iteration.
    const UNROLL: usize = 4;

    /// The kernel body for the first `R` rows of the tile; `LAYOUT` (see
    /// [`a_layout`]) and `PACKED_B` replace the strides they fix by constants.
    /// Each element sums over K in the same order whatever `R` and the layout, so
    /// a corner gives the bits the full tile would.
    ///
    /// # Safety
    /// The contract of [`MicroKernel::kernel`], for rows < `R` of the tile.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_x16<const LAYOUT: u8, const PACKED_B: bool, const R: usize>(
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
        use a_layout::*;
        let (rsa, csa) = match LAYOUT {
            PACKED => (1, MR),
            ROWS => (rsa, 1),
            COLUMNS => (1, csa),
            _ => (rsa, csa),
        };
        let rsb = if PACKED_B { NR } else { rsb };
        // Warm the C tile while the product runs.
        for i in 0..R {
            // Prefetching never faults, so it needs no `unsafe`.
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + NR - 1) as *const i8);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // A's rows by their own pointers when they are not adjacent (the ROWS and
        // STRIDED layouts); the others step one pointer.
        let mut rows: [*const f32; R] = std::array::from_fn(|i| a.wrapping_add(i * rsa));
        let mut ap = a;
        let mut bp = b;
        let advance =
            |ap: &mut *const f32, rows: &mut [*const f32; R], bp: &mut *const f32, steps: usize| {
                match LAYOUT {
                    PACKED | COLUMNS => *ap = ap.wrapping_add(steps * csa),
                    _ => rows
                        .iter_mut()
                        .for_each(|r| *r = r.wrapping_add(steps * csa)),
                }
                *bp = bp.wrapping_add(steps * rsb);
            };
        // With B read in place through its runtime stride, the compiler hoists
        // the unrolled steps' loads of B past the barrier's reach and spills
        // accumulators: such products step one at a time.
        let unroll = if PACKED_B { UNROLL } else { 1 };
        for _ in 0..k / unroll {
            for j in 0..unroll {
                // SAFETY: the pointers stand at a step p with p + unroll <= k.
                unsafe { step::<LAYOUT, R>(&mut acc, ap, &rows, bp, j, csa, rsb) };
            }
            advance(&mut ap, &mut rows, &mut bp, unroll);
        }
        for _ in 0..k % unroll {
            // SAFETY: the pointers stand at a step p < k.
            unsafe { step::<LAYOUT, R>(&mut acc, ap, &rows, bp, 0, csa, rsb) };
            advance(&mut ap, &mut rows, &mut bp, 1);
        }
        // SAFETY: rows < R of the C tile, per the contract.
        unsafe { store_tile(&acc, alpha, beta, std::ptr::null(), c, ldc) };
    }

    /// `C <- alpha * acc + beta * C (+ bias[j])` on the first `R` rows of the
    /// tile (C not read when beta is 0; no bias when `bias` is null): the bias is
    /// added to the rounded `alpha * acc + beta * C`, as the epilogue's pass
    /// would add it.
    ///
    /// # Safety
    /// `c + i*ldc + j` is writable (readable if beta != 0) for `i < R`, `j < NR`;
    /// `bias`, when not null, is readable for `NR` floats; the CPU supports AVX2
    /// and FMA.
    #[inline(always)]
    unsafe fn store_tile<const R: usize>(
        acc: &[[__m256; 2]; R],
        alpha: f32,
        beta: f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY: the caller vouches for AVX2 and FMA, and for `bias`.
        let (alpha_v, beta_v) = unsafe { (_mm256_set1_ps(alpha), _mm256_set1_ps(beta)) };
        let bias_v = (!bias.is_null())
            .then(|| unsafe { [_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(8))] });
        for (i, acc_i) in acc.iter().enumerate() {
            // SAFETY: row i < R of the C tile, writable per the contract (and
            // readable when beta != 0).
            unsafe {
                let ci = c.add(i * ldc);
                let mut r = [
                    _mm256_mul_ps(alpha_v, acc_i[0]),
                    _mm256_mul_ps(alpha_v, acc_i[1]),
                ];
                if beta != 0.0 {
                    r[0] = _mm256_fmadd_ps(beta_v, _mm256_loadu_ps(ci), r[0]);
                    r[1] = _mm256_fmadd_ps(beta_v, _mm256_loadu_ps(ci.add(8)), r[1]);
                }
                if let Some(bv) = bias_v {
                    r = [_mm256_add_ps(r[0], bv[0]), _mm256_add_ps(r[1], bv[1])];
                }
                _mm256_storeu_ps(ci, r[0]);
                _mm256_storeu_ps(ci.add(8), r[1]);
            }
        }
    }

    /// The gathered-rows kernel (see [`MicroKernel::kernel_gathered`]) of `rows`
    /// (1 to MR) rows, full width, adding `bias` (see [`store_tile`]) unless null.
    ///
    /// # Safety
    /// The contract of `kernel_gathered` with `cols = NR`; `bias`, when not null,
    /// is readable for `NR` floats.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn gathered_rows_into(
        rows: usize,
        groups: Groups,
        b: *const f32,
        beta: f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        // SAFETY (every arm): forwarded, with `R = rows`.
        unsafe {
            match rows {
                1 => gathered_x16::<1>(groups, b, beta, bias, c, ldc),
                2 => gathered_x16::<2>(groups, b, beta, bias, c, ldc),
                3 => gathered_x16::<3>(groups, b, beta, bias, c, ldc),
                4 => gathered_x16::<4>(groups, b, beta, bias, c, ldc),
                5 => gathered_x16::<5>(groups, b, beta, bias, c, ldc),
                _ => gathered_x16::<MR>(groups, b, beta, bias, c, ldc),
            }
        }
    }

    /// The gathered-rows kernel body for the first `R` rows: each group's rows are
    /// read in place, and the sums stay in registers across groups, in the order
    /// of K, as [`kernel_x16`] would add the same elements copied into a matrix.
    ///
    /// # Safety
    /// The contract of [`MicroKernel::kernel_gathered`], for rows < `R`, full width;
    /// `bias`, when not null, is readable for `NR` floats.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gathered_x16<const R: usize>(
        (taps, width, row_addrs, tap_index): Groups,
        b: *const f32,
        beta: f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        use a_layout::ROWS;
        for i in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + NR - 1) as *const i8);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let none = std::ptr::null();
        for t in 0..taps {
            // SAFETY: entry t < taps exists (the contract).
            let mut bp = b.wrapping_add(unsafe { *tap_index.add(t) } * width * NR);
            // SAFETY: addresses t*MR + i < taps*MR exist (the contract).
            let mut rows: [*const f32; R] = std::array::from_fn(|i| unsafe {
                std::ptr::with_exposed_provenance(*row_addrs.add(t * MR + i))
            });
            for _ in 0..width / UNROLL {
                for j in 0..UNROLL {
                    // SAFETY: the rows and B stand at a step q with q + UNROLL <= width.
                    unsafe { step::<ROWS, R>(&mut acc, none, &rows, bp, j, 1, NR) };
                }
                rows.iter_mut().for_each(|r| *r = r.wrapping_add(UNROLL));
                bp = bp.wrapping_add(UNROLL * NR);
            }
            for _ in 0..width % UNROLL {
                // SAFETY: the rows and B stand at a step q < width.
                unsafe { step::<ROWS, R>(&mut acc, none, &rows, bp, 0, 1, NR) };
                rows.iter_mut().for_each(|r| *r = r.wrapping_add(1));
                bp = bp.wrapping_add(NR);
            }
        }
        // SAFETY: rows < R of the C tile, per the contract.
        unsafe { store_tile(&acc, 1.0, beta, bias, c, ldc) };
    }

    /// `out[p*W + r] = rows[r][p]` for `p < cols` (a multiple of 8), `W` = 6 or 16.
    ///
    /// # Safety
    /// Each `rows[r]` is readable for `cols` floats; `out` is writable for
    /// `(cols - 1) * W + 8` floats (W = 6 writes two floats past each column, which
    /// the next column overwrites); the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_rows<const W: usize>(
        out: *mut f32,
        rows: &[*const f32; W],
        cols: usize,
    ) {
        let zero = _mm256_setzero_ps();
        for g in 0..W.div_ceil(8) {
            let r0 = g * 8;
            for p in (0..cols).step_by(8) {
                // SAFETY: rows r0..r0+8 that exist are readable at p..p+8 < cols;
                // missing rows (W = 6) read as zero.
                let v: [__m256; 8] = std::array::from_fn(|r| {
                    if r0 + r < W {
                        unsafe { _mm256_loadu_ps(rows[r0 + r].add(p)) }
                    } else {
                        zero
                    }
                });
                let t = transpose8(v);
                for (q, col) in t.iter().enumerate() {
                    // SAFETY: column p + q < cols; the 8 floats at (p+q)*W + r0 end
                    // at most 2 floats past the column (W = 6), within the bound
                    // above, and earlier than the next column's store.
                    unsafe { _mm256_storeu_ps(out.add((p + q) * W + r0), *col) };
                }
            }
        }
    }

    /// Transposes 8 rows of 8 floats: element `q` of output `i` is element `i` of
    /// input `q`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}
