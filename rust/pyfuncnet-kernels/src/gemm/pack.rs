//! Packing: copies a block of an operand into the panel order the micro-kernel
//! streams through, reading through the view's strides.
//!
//! Packing A into `MR`-row panels and packing B into `NR`-column panels are the
//! same operation: B's column panels are the row panels of `Bᵀ`. So [`pack_panels`]
//! takes a view `x` and cuts its rows into panels of `w`; panel `s` holds, for each
//! column `p`, the `w` values `x(s*w + 0..w, p)` next to each other:
//!
//! ```text
//! dst[s*w*cols + p*w + r] = x(row0 + s*w + r, col0 + p)    (0 past the last row)
//! ```
//!
//! A transposed view only changes which of the two loops below reads contiguously,
//! so transposed operands pack at the same speed as plain ones.

use super::MatRef;
use crate::cpu::SimdLevel;

/// Packs rows `row0..row0+rows` and columns `col0..col0+cols` of `x` into panels of
/// `w` rows, zero-padding the last panel. `dst` must hold
/// `ceil(rows / w) * w * cols` elements.
///
/// # Panics
/// If the block is outside `x` or `dst` is too short (the driver never does that).
pub(crate) fn pack_panels(
    dst: &mut [f32],
    x: &MatRef,
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
    w: usize,
    level: SimdLevel,
) {
    assert!(row0 + rows <= x.rows && col0 + cols <= x.cols);
    let panels = rows.div_ceil(w);
    let dst = &mut dst[..panels * w * cols];
    if x.rs == 1 && cols > 0 {
        // Columns of x are contiguous: read each one front to back (a sequential
        // stream the prefetchers follow) and deal it out to the panels.
        match w {
            4 => deal_columns::<4>(dst, x, row0, rows, col0, cols),
            6 => deal_columns::<6>(dst, x, row0, rows, col0, cols),
            8 => deal_columns::<8>(dst, x, row0, rows, col0, cols),
            12 => deal_columns::<12>(dst, x, row0, rows, col0, cols),
            16 => deal_columns::<16>(dst, x, row0, rows, col0, cols),
            32 => deal_columns::<32>(dst, x, row0, rows, col0, cols),
            _ => {}
        }
        if matches!(w, 4 | 6 | 8 | 12 | 16 | 32) {
            return;
        }
    }
    for (s, panel) in dst.chunks_exact_mut(w * cols).enumerate() {
        let r0 = row0 + s * w;
        let valid = w.min(row0 + rows - r0);
        pack_one_panel(panel, x, r0, valid, col0, cols, w, level);
    }
}

/// `pack_panels` for a view whose columns are contiguous (`x.rs == 1`).
///
/// Panels lie `w * cols` floats apart, often a power of two bytes, so writing
/// all of them for each column would make the writes fight over a few cache sets.
/// Instead the copy goes tile by tile: [`DEAL_PANELS`] panels by [`DEAL_COLS`]
/// columns, whose source runs stay in L1 while each panel receives a contiguous
/// burst of `DEAL_COLS * w` floats.
fn deal_columns<const W: usize>(
    dst: &mut [f32],
    x: &MatRef,
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
) {
    let panels = rows.div_ceil(W);
    if !rows.is_multiple_of(W) {
        // The partial last panel: zero it once, then copy only its valid rows.
        dst[(panels - 1) * W * cols..panels * W * cols].fill(0.0);
    }
    for s0 in (0..panels).step_by(DEAL_PANELS) {
        let s1 = (s0 + DEAL_PANELS).min(panels);
        for p0 in (0..cols).step_by(DEAL_COLS) {
            let p1 = (p0 + DEAL_COLS).min(cols);
            for s in s0..s1 {
                let r = s * W;
                let valid = W.min(rows - r);
                let panel = &mut dst[s * W * cols..(s + 1) * W * cols];
                for p in p0..p1 {
                    let start = row0 + r + (col0 + p) * x.cs;
                    let out: &mut [f32; W] = (&mut panel[p * W..p * W + W]).try_into().unwrap();
                    if valid == W {
                        let run: &[f32; W] = x.data[start..start + W].try_into().unwrap();
                        *out = *run;
                    } else {
                        // Element by element: a `copy_from_slice` of a few floats
                        // would be a library call per column.
                        let run = &x.data[start..start + valid];
                        for (o, &v) in out.iter_mut().zip(run) {
                            *o = v;
                        }
                    }
                }
            }
        }
    }
}

/// Panels per tile of [`deal_columns`].
const DEAL_PANELS: usize = 16;
/// Columns per tile of [`deal_columns`].
const DEAL_COLS: usize = 16;

/// Packs one panel of `valid <= w` rows starting at row `r0`, with the panel width
/// as a constant when it is one of the kernels' tile sizes (so the inner copies
/// unroll into a few vector moves).
fn pack_one_panel(
    panel: &mut [f32],
    x: &MatRef,
    r0: usize,
    valid: usize,
    col0: usize,
    cols: usize,
    w: usize,
    level: SimdLevel,
) {
    if cols == 0 {
        return;
    }
    if valid < w {
        panel.fill(0.0);
    }
    match (w, valid == w) {
        (4, true) => pack_full::<4>(panel, x, r0, col0, cols, level),
        (6, true) => pack_full::<6>(panel, x, r0, col0, cols, level),
        (8, true) => pack_full::<8>(panel, x, r0, col0, cols, level),
        (12, true) => pack_full::<12>(panel, x, r0, col0, cols, level),
        (16, true) => pack_full::<16>(panel, x, r0, col0, cols, level),
        (32, true) => pack_full::<32>(panel, x, r0, col0, cols, level),
        _ => pack_any(panel, x, r0, valid, col0, cols, w),
    }
}

/// A panel of exactly `W` valid rows.
#[inline(always)]
fn pack_full<const W: usize>(
    panel: &mut [f32],
    x: &MatRef,
    r0: usize,
    col0: usize,
    cols: usize,
    level: SimdLevel,
) {
    let (rs, cs) = (x.rs, x.cs);
    let panel = &mut panel[..W * cols];
    if rs == 1 {
        // The W values of one column are adjacent in memory: copy runs.
        let src = &x.data[r0 + col0 * cs..];
        for (p, out) in panel.chunks_exact_mut(W).enumerate() {
            let run: &[f32; W] = src[p * cs..p * cs + W].try_into().unwrap();
            out.copy_from_slice(run);
        }
    } else if cs == 1 {
        // Each row is contiguous along p: gather one element from each of the W row
        // streams and write them side by side (a transpose; AVX2 does it 8 x 8,
        // AVX-512 16 x 16).
        let rows: [&[f32]; W] = std::array::from_fn(|r| {
            let start = (r0 + r) * rs + col0;
            &x.data[start..start + cols]
        });
        let done = match level {
            SimdLevel::Avx2Fma => super::avx2::pack_rows::<W>(panel, &rows),
            SimdLevel::Avx512 => super::avx512::pack_rows::<W>(panel, &rows),
            SimdLevel::Scalar => 0,
        };
        for (p, out) in panel.chunks_exact_mut(W).enumerate().skip(done) {
            for r in 0..W {
                out[r] = rows[r][p];
            }
        }
    } else {
        pack_any(panel, x, r0, W, col0, cols, W);
    }
}

/// Any panel width and any strides.
fn pack_any(
    panel: &mut [f32],
    x: &MatRef,
    r0: usize,
    valid: usize,
    col0: usize,
    cols: usize,
    w: usize,
) {
    for (p, out) in panel[..w * cols].chunks_exact_mut(w).enumerate() {
        for (r, o) in out[..valid].iter_mut().enumerate() {
            *o = x.at(r0 + r, col0 + p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_panels_matches_definition_for_every_layout() {
        let data: Vec<f32> = (0..12000).map(|v| v as f32).collect();
        let views = [
            MatRef::new(&data, 300, 37, 1, 310).unwrap(),
            MatRef::new(&data, 37, 300, 310, 1).unwrap(),
            MatRef::new(&data, 7, 9, 9, 1).unwrap(),
            MatRef::new(&data, 7, 9, 9, 1).unwrap().t().t(),
            MatRef::new(&data, 9, 7, 1, 9).unwrap(),
            MatRef::new(&data, 6, 5, 20, 3).unwrap(),
        ];
        for x in views {
            for w in [1, 4, 6, 8, 12, 14, 16, 32, 48] {
                let (row0, col0) = (1, 2);
                let (rows, cols) = (x.rows - 1, x.cols - 2);
                let panels = rows.div_ceil(w);
                let mut dst = vec![f32::NAN; panels * w * cols];
                for level in crate::cpu::supported_levels() {
                    dst.fill(f32::NAN);
                    pack_panels(&mut dst, &x, row0, rows, col0, cols, w, level);
                    for s in 0..panels {
                        for p in 0..cols {
                            for r in 0..w {
                                let i = s * w + r;
                                let want = if i < rows {
                                    x.at(row0 + i, col0 + p)
                                } else {
                                    0.0
                                };
                                let got = dst[s * w * cols + p * w + r];
                                assert_eq!(
                                    got, want,
                                    "{x:?} w={w} {level:?} panel {s} col {p} row {r}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
