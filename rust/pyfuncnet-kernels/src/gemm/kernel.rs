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
    /// K block of the small and K-streamed paths: a `KC x NR` micro-panel of B
    /// stays in L1 next to the `MR x KC` micro-panel of A the kernel streams past
    /// it.
    const KC: usize = 256;
    /// Largest M block of the blocked path (the packed block of A, at most 192 KiB,
    /// stays in L2 while the B micro-panels of a task go by; a K block longer than
    /// 256 makes it shorter), and largest M the K-streamed path takes.
    const MC: usize = 192;
    /// K block of the blocked path. Each block reads and writes every C tile once
    /// more, so a kernel whose packed micro-panels stream well from L2 may take a
    /// longer block than [`KC`](Self::KC) (the M block then shrinks to keep A's
    /// block in L2).
    const BLOCKED_KC: usize = Self::KC;
    /// Whether [`kernel_edge`](Self::kernel_edge) reads only the first `rows` rows
    /// of A, so a partial strip of A may be read in place instead of packed
    /// zero-padded to `MR` rows.
    const EDGE_READS_ITS_ROWS_ONLY: bool = false;

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

    /// The update rule for the top-left `rows x cols` corner of the tile only
    /// (`rows <= MR`, `cols <= NR`): the rest of C is neither read nor written.
    ///
    /// The operands stay readable for the whole tile, as for
    /// [`kernel`](Self::kernel) (the driver zero-pads partial panels), so a kernel
    /// may compute all of it; with `EDGE_READS_ITS_ROWS_ONLY`, A need only be
    /// readable for its first `rows` rows. This default does: it runs the full kernel into a
    /// buffer on the stack and merges the corner; kernels override it to skip the
    /// buffer and the unused rows (with masked stores, or with fewer rows).
    ///
    /// # Safety
    /// As for [`kernel`](Self::kernel), except that `c + i*ldc + j` need only be
    /// valid for `i < rows`, `j < cols` (and `a + i*rsa + p*csa` for `i < rows` with
    /// `EDGE_READS_ITS_ROWS_ONLY`); and `rows <= MR`, `cols <= NR`.
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
        const { assert!(Self::MR * Self::NR <= MAX_TILE) };
        let (mr, nr) = (Self::MR, Self::NR);
        assert!(rows <= mr && cols <= nr);
        let mut buf = [0.0f32; MAX_TILE];
        // SAFETY: `buf` holds MR x NR elements with leading dimension NR and beta =
        // 0, so it is only written; the operand reads are the caller's contract.
        unsafe { Self::kernel(k, alpha, a, rsa, csa, b, rsb, 0.0, buf.as_mut_ptr(), nr) };
        // SAFETY: the corner of C is the caller's, per the contract.
        unsafe { merge_corner(&buf, nr, rows, cols, beta, c, ldc) };
    }

    /// The update rule with alpha 1 on the top-left `rows x cols` corner of the
    /// tile, for an A whose rows are gathered in groups of `width` steps of K and
    /// B a packed panel (`rsb = NR`): group `q < taps` reads the rows at addresses
    /// `row_addrs[q*MR + i]` (of exposed provenance) against B's rows
    /// `tap_index[q]*width..`, so groups whose rows are all zeros (a strip's taps
    /// in a convolution's padding) need not be listed. The groups are added in
    /// the order listed. A convolution reads its patches this way without copying
    /// them into a column matrix.
    ///
    /// This default copies each group's rows, a block of K at a time, into a
    /// packed panel on the stack and runs [`kernel_edge`](Self::kernel_edge)
    /// (accumulating into C after the first block); kernels override it to read
    /// the rows in place and keep the sums in registers across groups.
    ///
    /// # Safety
    /// - the row at `row_addrs[q*MR + i]` is readable for `width` floats for every
    ///   `q < taps`, `i < MR` (unused rows may point at zeros);
    /// - `tap_index` holds `taps` entries, and `b + p*NR + j` is readable for all
    ///   `p < (tap_index[q] + 1) * width`, `j < NR`;
    /// - C as for [`kernel_edge`](Self::kernel_edge); the CPU supports the
    ///   kernel's instruction set.
    #[allow(clippy::too_many_arguments)]
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
        const BLOCK: usize = 64;
        const { assert!(Self::MR <= MAX_MR) };
        let (mr, nr) = (Self::MR, Self::NR);
        let mut panel = [0.0f32; MAX_MR * BLOCK];
        let mut beta = beta;
        if taps * width == 0 {
            // SAFETY: k = 0 reads no operand; C is the caller's, per the contract.
            unsafe { Self::kernel_edge(rows, cols, 0, 1.0, b, 1, 1, b, nr, beta, c, ldc) };
            return;
        }
        for t in 0..taps {
            // SAFETY: entry t < taps exists (the contract).
            let group = unsafe { *tap_index.add(t) };
            for q0 in (0..width).step_by(BLOCK) {
                let qc = BLOCK.min(width - q0);
                for i in 0..mr {
                    // SAFETY: address `t*MR + i` exists and its row holds `width`
                    // floats (the contract), so `q0 + q < width` is readable.
                    unsafe {
                        let src =
                            std::ptr::with_exposed_provenance::<f32>(*row_addrs.add(t * mr + i));
                        for q in 0..qc {
                            panel[q * mr + i] = *src.add(q0 + q);
                        }
                    }
                }
                // SAFETY: the panel holds MR x qc floats packed (rsa 1, csa MR); B's
                // rows group*width + q0.. are readable per the contract; C as above.
                unsafe {
                    Self::kernel_edge(
                        rows,
                        cols,
                        qc,
                        1.0,
                        panel.as_ptr(),
                        1,
                        mr,
                        b.add((group * width + q0) * nr),
                        nr,
                        beta,
                        c,
                        ldc,
                    )
                };
                beta = 1.0;
            }
        }
    }

    /// [`kernel_gathered`](Self::kernel_gathered) on a tile as wide as the kernel
    /// (`cols = NR`), then, when `bias` is not null, `bias[j]` added to each
    /// element (one rounding after the product, as [`Epilogue`](super::Epilogue)
    /// adds it).
    ///
    /// This default adds the bias after the kernel; kernels override it to add
    /// the bias in their stores, which saves a second pass over C.
    ///
    /// # Safety
    /// As for [`kernel_gathered`](Self::kernel_gathered) with `cols = NR`; `bias`,
    /// when not null, is readable for `NR` floats.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel_gathered_biased(
        rows: usize,
        (taps, width, row_addrs, tap_index): Groups,
        b: *const f32,
        beta: f32,
        bias: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let nr = Self::NR;
        // SAFETY: the contract, forwarded; `bias` holds NR floats when not null.
        unsafe {
            Self::kernel_gathered(rows, nr, taps, width, row_addrs, tap_index, b, beta, c, ldc);
            if !bias.is_null() {
                add_bias(rows, nr, bias, c, ldc);
            }
        }
    }
}

/// `C[i][j] += bias[j]` on the `rows x cols` corner of C, as
/// [`Epilogue`](super::Epilogue) adds a bias.
///
/// # Safety
/// `c + i*ldc + j` is valid for reads and writes for `i < rows`, `j < cols`, and no
/// other thread accesses those elements meanwhile; `bias` is readable for `cols`
/// floats.
pub(crate) unsafe fn add_bias(rows: usize, cols: usize, bias: *const f32, c: *mut f32, ldc: usize) {
    // SAFETY: the caller's contract.
    let bias = unsafe { std::slice::from_raw_parts(bias, cols) };
    for i in 0..rows {
        // SAFETY: row i < rows, columns < cols of C, per the contract.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
        for (x, b) in row.iter_mut().zip(bias) {
            *x += *b;
        }
    }
}

/// The groups of a gathered-rows kernel: their count, their width, the rows'
/// addresses and each group's index into B (see [`MicroKernel::kernel_gathered`]).
pub(crate) type Groups = (usize, usize, *const usize, *const usize);

/// `C <- tile + beta * C` on the `rows x cols` corner of C, from a tile computed
/// with beta = 0 and leading dimension `nr`.
///
/// # Safety
/// `c + i*ldc + j` is valid for reads and writes for `i < rows`, `j < cols`, and no
/// other thread accesses those elements meanwhile; `tile` holds `rows` rows of `nr
/// >= cols` floats.
pub(crate) unsafe fn merge_corner(
    tile: &[f32],
    nr: usize,
    rows: usize,
    cols: usize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
) {
    for (r, src) in tile.chunks_exact(nr).take(rows).enumerate() {
        // SAFETY: row r < rows, columns < cols of C are valid and exclusively
        // the caller's.
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), cols) };
        if beta == 0.0 {
            // A loop, not `copy_from_slice`: a library call per short row
            // costs more than the copy.
            for (x, &v) in row.iter_mut().zip(src) {
                *x = v;
            }
        } else {
            for (x, &v) in row.iter_mut().zip(src) {
                *x = v + beta * *x;
            }
        }
    }
}

/// Largest `MR` of any micro-kernel (AVX-512's 12).
pub(crate) const MAX_MR: usize = 12;

/// Largest `MR * NR` of any micro-kernel (AVX-512 `12 x 32`): the size of the
/// stack buffers that edge tiles are computed into.
pub(crate) const MAX_TILE: usize = 12 * 32;
