//! Products whose left operand is gathered row by row: `C = A · B` where row `i`
//! of A is the concatenation of `taps` segments of `width` floats, each read from
//! wherever its offset points (or zeros). A convolution's rows are its output
//! pixels and the segments the input pixels under its window, so the product reads
//! the patches in place instead of copying them into a column matrix first (the
//! copy, nine times the input for a 3 x 3 window, also pushed the kernel's operand
//! out of L1 into L2).
//!
//! One call runs on the calling thread: callers cut their work into tasks
//! themselves (a convolution by tiles of output pixels). Every strip's row
//! addresses are looked up (and checked) once, before C is written; then each
//! strip's rows stay in L1 while the packed panels of B go by (or, for a B too
//! large for L1 with panels small enough, a panel stays while the strips go by),
//! each K step in order, so every element of C sees the same operations whatever
//! the split into calls.

use super::driver::{CTarget, RowStrips};
use super::kernel::MicroKernel;
use super::{Epilogue, GatheredRows, GATHER_ZEROS};
use crate::error::{KernelError, Result};
use crate::scratch::{with_index_scratch, with_scratch, Slot};

/// Largest B (floats, all its panels) that a call keeps in L1 while each strip of
/// rows meets every panel in turn (32 KiB, two thirds of L1): each strip's rows
/// are then read once and its rows of C written whole, while still in L1, bias
/// and activation included.
const STRIP_MAJOR_MAX_B: usize = 8192;

/// Largest panel of B (floats) that a call, when all of B is larger than
/// [`STRIP_MAJOR_MAX_B`], keeps in L1 while every strip of rows goes by (16 KiB,
/// a third of L1); a larger one streams from L2 past each strip held in L1
/// instead.
const PANEL_MAJOR_MAX_B: usize = 4096;

/// Runs `C <- epilogue(A · B + beta * C)` with micro-kernel `K` for `m, n` and
/// `k = taps * width` all positive; `bpack` holds B (`k x n`) packed in
/// `K::NR`-column panels over all of K.
pub(crate) fn gemm_gathered<K: MicroKernel, F: Fn(usize, &mut [usize])>(
    a: &GatheredRows<F>,
    bpack: &[f32],
    n: usize,
    beta: f32,
    c: CTarget,
    epilogue: &Epilogue,
) -> Result<()> {
    let (mr, nr) = (K::MR, K::NR);
    let (m, taps, width) = (a.rows, a.taps, a.width);
    let k = taps * width;
    let row_strips = RowStrips::new(0..m, mr, K::EDGE_READS_ITS_ROWS_ONLY);
    let (strips, n_panels) = (row_strips.count(), n.div_ceil(nr));
    assert!(m > 0 && n > 0 && k > 0 && bpack.len() >= n_panels * nr * k);
    let source = a.source;
    let bad_offset = |row: usize, tap: usize, offset: usize| KernelError::InvalidArgument {
        what: "sgemm_gathered".into(),
        message: format!(
            "row {row}, tap {tap}: offset {offset} + width {width} is past the source's {} floats",
            source.len()
        ),
    };
    // Per strip: the rows' addresses, `MR` per tap it reads, then those taps'
    // indices, then their count. A tap whose rows are all in the padding is left
    // out (adding its zero products changes nothing).
    let stride = taps * mr + taps + 1;
    with_scratch(Slot::ZeroRow, width, |zeros| {
        zeros.fill(0.0);
        let zeros: &[f32] = zeros;
        with_index_scratch(strips * stride + mr * taps, |scratch| {
            let (table, offsets) = scratch.split_at_mut(strips * stride);
            for (strip, (i0, rows)) in table.chunks_exact_mut(stride).zip(row_strips.iter()) {
                (a.offsets)(i0, &mut offsets[..rows * taps]);
                offsets[rows * taps..].fill(GATHER_ZEROS);
                let (addrs, rest) = strip.split_at_mut(taps * mr);
                let (tap_index, count) = rest.split_at_mut(taps);
                let mut kept = 0;
                for t in 0..taps {
                    if (0..mr).all(|i| offsets[i * taps + t] == GATHER_ZEROS) {
                        continue;
                    }
                    for i in 0..mr {
                        let offset = offsets[i * taps + t];
                        let segment = if offset == GATHER_ZEROS {
                            zeros
                        } else {
                            let end = offset.checked_add(width);
                            if end.is_none_or(|end| end > source.len()) {
                                return Err(bad_offset(i0 + i, t, offset));
                            }
                            &source[offset..]
                        };
                        addrs[kept * mr + i] = segment.as_ptr().expose_provenance();
                    }
                    tap_index[kept] = t;
                    kept += 1;
                }
                count[0] = kept;
            }
            let table: &[usize] = table;
            // The bias goes into the kernels' stores; the activation, if any, runs
            // over finished rows.
            let activation = Epilogue {
                bias: None,
                activation: epilogue.activation,
            };
            let block = |s: usize, panels: std::ops::Range<usize>| {
                let ((i, rows), j) = (row_strips.get(s), panels.start * nr);
                let strip = &table[s * stride..][..stride];
                let kept = strip[stride - 1];
                // SAFETY: the strip's addresses (of `source` or of the zero row) are
                // readable for `width` floats (checked above); the caller owns C
                // and checked the instruction set.
                unsafe {
                    c.run_gathered_panels::<K>(
                        (i, j),
                        (rows, n.min(panels.end * nr) - j),
                        width,
                        &strip[..kept * mr],
                        &strip[taps * mr..][..kept],
                        (&bpack[j * k..panels.end * nr * k], nr * k),
                        beta,
                        epilogue.bias,
                    )
                };
            };
            if n_panels * nr * k <= STRIP_MAJOR_MAX_B || nr * k > PANEL_MAJOR_MAX_B {
                for (s, (i, rows)) in row_strips.iter().enumerate() {
                    block(s, 0..n_panels);
                    // SAFETY: the caller owns all of C.
                    unsafe { c.apply_epilogue(&activation, i..i + rows, 0, n) };
                }
            } else {
                (0..n_panels).for_each(|jp| (0..strips).for_each(|s| block(s, jp..jp + 1)));
                // SAFETY: the caller owns all of C.
                unsafe { c.apply_epilogue(&activation, 0..m, 0, n) };
            }
            Ok(())
        })
    })
}
