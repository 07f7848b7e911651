//! Reductions over axes: sum, mean, max, min, prod, variance, argmax/argmin, and
//! the gradient of broadcasting (`sum_to_shape`).
//!
//! The input shape is first collapsed: size-1 dimensions are dropped and neighbours
//! that are both reduced or both kept are merged, leaving alternating groups. Two
//! loops then cover every case:
//!
//! * innermost group reduced: each output reduces contiguous segments (one per index
//!   of the outer reduced groups);
//! * innermost group kept: each output row accumulates whole input rows, column tile
//!   by column tile, in fixed-size stack accumulators.
//!
//! Sums are blocked: at most 32 values are added in f32 per lane before the partial
//! joins an f64 accumulator, so accuracy does not degrade with the reduced length.
//! Every output is computed by one task in one fixed order, and the only split of a
//! single sum (a huge full reduction) is by a part size derived from the length
//! alone, so results are bitwise identical for any thread count.

use crate::error::{KernelError, Result};
use crate::par;

/// A reduction of `keras.ops`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    /// `sum` (0 for an empty set).
    Sum,
    /// `mean` (NaN for an empty set, as NumPy).
    Mean,
    /// `max` (NaN if any element is NaN; an empty set is an error).
    Max,
    /// `min` (NaN if any element is NaN; an empty set is an error).
    Min,
    /// `prod` (1 for an empty set).
    Prod,
}

/// Elements of a contiguous segment summed in f32 (8 lanes of 32) per f64 partial.
const BLOCK: usize = 256;
/// Rows summed in f32 per column before the partial joins the f64 accumulator.
const COL_BLOCK: usize = 32;
/// Column tile of the keep-innermost path (width of the stack accumulators).
const TILE: usize = 256;
/// Input elements below which a reduction stays on the calling thread.
const PAR_MIN: usize = 1 << 16;
/// Input elements per parallel task when splitting over outputs.
const TASK_ELEMS: usize = 1 << 16;
/// Part size for splitting one huge contiguous segment; a segment is split only when
/// it holds more than two parts.
const SEG_PART: usize = 1 << 18;
/// Most parts one segment is split into (the partials live in a stack array).
const MAX_PARTS: usize = 64;
/// Most merged groups (kept and reduced groups alternate after merging).
const MAX_GROUPS: usize = 16;

/// The accumulation applied to one set of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    Var,
}

impl From<Reduce> for Op {
    fn from(r: Reduce) -> Op {
        match r {
            Reduce::Sum => Op::Sum,
            Reduce::Mean => Op::Mean,
            Reduce::Max => Op::Max,
            Reduce::Min => Op::Min,
            Reduce::Prod => Op::Prod,
        }
    }
}

/// What a segment fold computes; `SqDev` is `sum((x - shift)^2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fold {
    Sum,
    SqDev,
    Prod,
    Max,
    Min,
}

/// `maximum` that propagates NaN (the first NaN wins and stays).
#[inline(always)]
fn max_nan<T: PartialOrd + Copy>(acc: T, v: T) -> T {
    #[allow(clippy::eq_op)]
    let v_nan = v != v;
    if v > acc || v_nan {
        v
    } else {
        acc
    }
}

/// `minimum` that propagates NaN.
#[inline(always)]
fn min_nan<T: PartialOrd + Copy>(acc: T, v: T) -> T {
    #[allow(clippy::eq_op)]
    let v_nan = v != v;
    if v < acc || v_nan {
        v
    } else {
        acc
    }
}

impl Fold {
    fn identity(self) -> f64 {
        match self {
            Fold::Sum | Fold::SqDev => 0.0,
            Fold::Prod => 1.0,
            Fold::Max => f64::NEG_INFINITY,
            Fold::Min => f64::INFINITY,
        }
    }

    #[inline]
    fn combine(self, a: f64, b: f64) -> f64 {
        match self {
            Fold::Sum | Fold::SqDev => a + b,
            Fold::Prod => a * b,
            Fold::Max => max_nan(a, b),
            Fold::Min => min_nan(a, b),
        }
    }
}

/// Sum of at most [`BLOCK`] values in f32: 8 independent lanes (vectorised), then the
/// lanes pairwise.
#[inline]
fn block_sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    for (l, &v) in rem.iter().enumerate() {
        lanes[l] += v;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// `sum((x - m)^2)` of at most [`BLOCK`] values, laid out like [`block_sum`].
#[inline]
fn block_sqdev(x: &[f32], m: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            let d = c[l] - m;
            lanes[l] += d * d;
        }
    }
    for (l, &v) in rem.iter().enumerate() {
        let d = v - m;
        lanes[l] += d * d;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// Max or min of a segment with 8 NaN-propagating lanes.
#[inline]
fn extreme(x: &[f32], is_max: bool) -> f32 {
    let init = if is_max {
        f32::NEG_INFINITY
    } else {
        f32::INFINITY
    };
    let mut lanes = [init; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    if is_max {
        for c in chunks {
            for l in 0..8 {
                lanes[l] = max_nan(lanes[l], c[l]);
            }
        }
        for (l, &v) in rem.iter().enumerate() {
            lanes[l] = max_nan(lanes[l], v);
        }
        lanes.iter().fold(init, |a, &v| max_nan(a, v))
    } else {
        for c in chunks {
            for l in 0..8 {
                lanes[l] = min_nan(lanes[l], c[l]);
            }
        }
        for (l, &v) in rem.iter().enumerate() {
            lanes[l] = min_nan(lanes[l], v);
        }
        lanes.iter().fold(init, |a, &v| min_nan(a, v))
    }
}

/// Folds a contiguous segment on the calling thread.
fn serial_fold(fold: Fold, x: &[f32], shift: f32) -> f64 {
    match fold {
        Fold::Sum => x.chunks(BLOCK).map(|b| f64::from(block_sum(b))).sum(),
        Fold::SqDev => x
            .chunks(BLOCK)
            .map(|b| f64::from(block_sqdev(b, shift)))
            .sum(),
        Fold::Prod => {
            let mut lanes = [1.0f64; 4];
            let chunks = x.chunks_exact(4);
            let rem = chunks.remainder();
            for c in chunks {
                for l in 0..4 {
                    lanes[l] *= f64::from(c[l]);
                }
            }
            for (l, &v) in rem.iter().enumerate() {
                lanes[l] *= f64::from(v);
            }
            (lanes[0] * lanes[1]) * (lanes[2] * lanes[3])
        }
        Fold::Max => f64::from(extreme(x, true)),
        Fold::Min => f64::from(extreme(x, false)),
    }
}

/// Folds a contiguous segment; one holding more than two [`SEG_PART`]s is split into
/// parts whose size depends on its length only, folded in parallel and combined in
/// order.
fn seg_fold(fold: Fold, x: &[f32], shift: f32) -> f64 {
    let len = x.len();
    if len <= 2 * SEG_PART {
        return serial_fold(fold, x, shift);
    }
    let parts = len.div_ceil(SEG_PART).min(MAX_PARTS);
    let part = len.div_ceil(parts).next_multiple_of(BLOCK);
    let mut partials = [0.0f64; MAX_PARTS];
    par::for_each_chunk_mut(&mut partials[..parts], 1, |i, slot| {
        let s = (i * part).min(len);
        let e = (s + part).min(len);
        slot[0] = if s < e {
            serial_fold(fold, &x[s..e], shift)
        } else {
            fold.identity()
        };
    });
    partials[..parts]
        .iter()
        .fold(fold.identity(), |a, &p| fold.combine(a, p))
}

// ---------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------

/// A set of merged dimensions (outer first) with their element strides in `x`.
#[derive(Clone, Copy)]
struct Sub {
    n: usize,
    dims: [usize; MAX_GROUPS],
    strides: [usize; MAX_GROUPS],
}

impl Sub {
    const EMPTY: Sub = Sub {
        n: 0,
        dims: [0; MAX_GROUPS],
        strides: [0; MAX_GROUPS],
    };

    fn push(&mut self, dim: usize, stride: usize) {
        self.dims[self.n] = dim;
        self.strides[self.n] = stride;
        self.n += 1;
    }

    fn count(&self) -> usize {
        self.dims[..self.n].iter().product()
    }

    /// Calls `f(offset)` for `len` consecutive row-major positions from linear
    /// index `start`.
    fn walk(&self, start: usize, len: usize, mut f: impl FnMut(usize)) {
        if len == 0 {
            return;
        }
        let n = self.n;
        if n == 0 {
            f(0);
            return;
        }
        let mut idx = [0usize; MAX_GROUPS];
        let mut off = 0;
        let mut rem = start;
        for d in (0..n).rev() {
            idx[d] = rem % self.dims[d];
            rem /= self.dims[d];
            off += idx[d] * self.strides[d];
        }
        for step in 0..len {
            f(off);
            if step + 1 == len {
                break;
            }
            let mut d = n - 1;
            loop {
                idx[d] += 1;
                off += self.strides[d];
                if idx[d] < self.dims[d] || d == 0 {
                    break;
                }
                off -= self.dims[d] * self.strides[d];
                idx[d] = 0;
                d -= 1;
            }
        }
    }
}

/// The collapsed view of a reduction.
struct Layout {
    /// Kept groups whose index selects an output (or an output row).
    outer_kept: Sub,
    /// Reduced groups iterated per output (or per output row).
    outer_reduced: Sub,
    /// Whether the innermost group is reduced (else kept).
    inner_reduced: bool,
    /// Size of the innermost group (1 when there is none).
    inner: usize,
    /// Reduced elements per output.
    count: usize,
}

impl Layout {
    /// Collapses `shape` (all dims non-zero) with the reduced axes in `mask`.
    fn new(what: &str, shape: &[usize], mask: u64) -> Result<Layout> {
        let mut dims = [0usize; MAX_GROUPS];
        let mut red = [false; MAX_GROUPS];
        let mut n = 0;
        for (i, &d) in shape.iter().enumerate() {
            if d == 1 {
                continue;
            }
            let r = mask >> i & 1 == 1;
            if n > 0 && red[n - 1] == r {
                dims[n - 1] *= d;
            } else {
                if n == MAX_GROUPS {
                    return Err(KernelError::InvalidArgument {
                        what: what.to_string(),
                        message: format!(
                            "reducing shape {shape:?} alternates between reduced and kept axes more than {MAX_GROUPS} times"
                        ),
                    });
                }
                dims[n] = d;
                red[n] = r;
                n += 1;
            }
        }
        let mut strides = [0usize; MAX_GROUPS];
        let mut s = 1;
        for g in (0..n).rev() {
            strides[g] = s;
            s *= dims[g];
        }
        let mut lay = Layout {
            outer_kept: Sub::EMPTY,
            outer_reduced: Sub::EMPTY,
            inner_reduced: n > 0 && red[n - 1],
            inner: if n > 0 { dims[n - 1] } else { 1 },
            count: 1,
        };
        for g in 0..n {
            if red[g] {
                lay.count *= dims[g];
            }
            if g + 1 == n {
                break; // the innermost group is `inner`
            }
            if red[g] {
                lay.outer_reduced.push(dims[g], strides[g]);
            } else {
                lay.outer_kept.push(dims[g], strides[g]);
            }
        }
        Ok(lay)
    }
}

// ---------------------------------------------------------------------------
// The two loops
// ---------------------------------------------------------------------------

/// One output of the reduce-innermost path: folds the segments `x[base + off ..][..rin]`.
fn reduce_segments_one(
    op: Op,
    x: &[f32],
    base: usize,
    outer: &Sub,
    rin: usize,
    count: usize,
) -> f32 {
    let segs = outer.count();
    let fold_all = |fold: Fold, shift: f32| {
        let mut acc = fold.identity();
        outer.walk(0, segs, |off| {
            let s = base + off;
            acc = fold.combine(acc, seg_fold(fold, &x[s..s + rin], shift));
        });
        acc
    };
    match op {
        Op::Sum => fold_all(Fold::Sum, 0.0) as f32,
        Op::Mean => (fold_all(Fold::Sum, 0.0) / count as f64) as f32,
        Op::Var => {
            let mean = (fold_all(Fold::Sum, 0.0) / count as f64) as f32;
            (fold_all(Fold::SqDev, mean) / count as f64) as f32
        }
        Op::Prod => fold_all(Fold::Prod, 0.0) as f32,
        Op::Max => fold_all(Fold::Max, 0.0) as f32,
        Op::Min => fold_all(Fold::Min, 0.0) as f32,
    }
}

fn reduce_segments(op: Op, x: &[f32], lay: &Layout, out: &mut [f32]) {
    let per_task = if x.len() >= PAR_MIN {
        (TASK_ELEMS / lay.count).max(1)
    } else {
        out.len()
    };
    par::for_each_chunk_mut(out, per_task, |ci, oc| {
        let mut j = 0;
        lay.outer_kept.walk(ci * per_task, oc.len(), |base| {
            oc[j] = reduce_segments_one(op, x, base, &lay.outer_reduced, lay.inner, lay.count);
            j += 1;
        });
    });
}

/// Column sums (or `sum((x - shift)^2)`) of the rows `x[col + off ..][..w]` over
/// every reduced position `off`, blocked [`COL_BLOCK`] rows at a time in f32.
fn column_sums(x: &[f32], col: usize, red: &Sub, shift: Option<&[f32]>, acc: &mut [f64]) {
    let w = acc.len();
    let mut blk = [0.0f32; TILE];
    let blk = &mut blk[..w];
    let mut rows = 0;
    red.walk(0, red.count(), |off| {
        let row = &x[col + off..col + off + w];
        match shift {
            None => {
                for (b, &v) in blk.iter_mut().zip(row) {
                    *b += v;
                }
            }
            Some(m) => {
                for ((b, &v), &mv) in blk.iter_mut().zip(row).zip(m) {
                    let d = v - mv;
                    *b += d * d;
                }
            }
        }
        rows += 1;
        if rows == COL_BLOCK {
            for (a, b) in acc.iter_mut().zip(blk.iter_mut()) {
                *a += f64::from(*b);
                *b = 0.0;
            }
            rows = 0;
        }
    });
    for (a, b) in acc.iter_mut().zip(blk.iter()) {
        *a += f64::from(*b);
    }
}

/// Outputs `out` (columns `col ..` of the input rows starting at `base`) of the
/// keep-innermost path, tile by tile.
fn reduce_columns_span(
    op: Op,
    x: &[f32],
    base: usize,
    col: usize,
    red: &Sub,
    count: usize,
    out: &mut [f32],
) {
    let inv = 1.0 / count as f64;
    for (t, ot) in out.chunks_mut(TILE).enumerate() {
        let c = base + col + t * TILE;
        let w = ot.len();
        match op {
            Op::Sum | Op::Mean | Op::Var => {
                let mut acc = [0.0f64; TILE];
                column_sums(x, c, red, None, &mut acc[..w]);
                if op == Op::Sum {
                    for (o, &a) in ot.iter_mut().zip(&acc[..w]) {
                        *o = a as f32;
                    }
                    continue;
                }
                let mut mean = [0.0f32; TILE];
                for (m, &a) in mean[..w].iter_mut().zip(&acc[..w]) {
                    *m = (a * inv) as f32;
                }
                if op == Op::Mean {
                    ot.copy_from_slice(&mean[..w]);
                    continue;
                }
                let mut sq = [0.0f64; TILE];
                column_sums(x, c, red, Some(&mean[..w]), &mut sq[..w]);
                for (o, &a) in ot.iter_mut().zip(&sq[..w]) {
                    *o = (a * inv) as f32;
                }
            }
            Op::Prod => {
                let mut acc = [1.0f64; TILE];
                let acc = &mut acc[..w];
                red.walk(0, red.count(), |off| {
                    for (a, &v) in acc.iter_mut().zip(&x[c + off..c + off + w]) {
                        *a *= f64::from(v);
                    }
                });
                for (o, &a) in ot.iter_mut().zip(acc.iter()) {
                    *o = a as f32;
                }
            }
            Op::Max | Op::Min => {
                let is_max = op == Op::Max;
                ot.fill(if is_max {
                    f32::NEG_INFINITY
                } else {
                    f32::INFINITY
                });
                red.walk(0, red.count(), |off| {
                    let row = &x[c + off..c + off + w];
                    if is_max {
                        for (o, &v) in ot.iter_mut().zip(row) {
                            *o = max_nan(*o, v);
                        }
                    } else {
                        for (o, &v) in ot.iter_mut().zip(row) {
                            *o = min_nan(*o, v);
                        }
                    }
                });
            }
        }
    }
}

fn reduce_columns(op: Op, x: &[f32], lay: &Layout, out: &mut [f32]) {
    let kin = lay.inner;
    let rows = out.len() / kin;
    let large = x.len() >= PAR_MIN;
    if rows == 1 {
        // One output row (e.g. a bias gradient): split its columns.
        let cols = if large {
            (TASK_ELEMS / lay.count).max(1).next_multiple_of(TILE)
        } else {
            kin
        };
        par::for_each_chunk_mut(out, cols, |ci, oc| {
            reduce_columns_span(op, x, 0, ci * cols, &lay.outer_reduced, lay.count, oc);
        });
    } else {
        let rows_per_task = if large {
            (TASK_ELEMS / (lay.count * kin)).max(1)
        } else {
            rows
        };
        par::for_each_chunk_mut(out, rows_per_task * kin, |ci, oc| {
            let mut r = 0;
            lay.outer_kept
                .walk(ci * rows_per_task, oc.len() / kin, |base| {
                    let orow = &mut oc[r * kin..(r + 1) * kin];
                    reduce_columns_span(op, x, base, 0, &lay.outer_reduced, lay.count, orow);
                    r += 1;
                });
        });
    }
}

// ---------------------------------------------------------------------------
// Checked entry points
// ---------------------------------------------------------------------------

fn numel(what: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| KernelError::InvalidArgument {
            what: what.to_string(),
            message: format!("shape {shape:?} has more elements than fit in memory"),
        })
}

fn check_count(what: &str, got: usize, needed: usize, shape: &[usize], role: &str) -> Result<()> {
    if got != needed {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} {role}"),
            expected: format!("{needed} elements (shape {shape:?})"),
            got: format!("{got} elements"),
        });
    }
    Ok(())
}

/// Validates `axes` (sorted, unique, in range) and returns them as a bit mask.
fn axes_mask(what: &str, rank: usize, axes: &[usize]) -> Result<u64> {
    if rank > 64 {
        return Err(KernelError::InvalidArgument {
            what: what.to_string(),
            message: format!("rank {rank} exceeds the supported 64"),
        });
    }
    let mut mask = 0u64;
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank || (i > 0 && a <= axes[i - 1]) {
            return Err(KernelError::InvalidArgument {
                what: what.to_string(),
                message: format!(
                    "axes {axes:?} must be sorted, unique and each below the rank {rank}"
                ),
            });
        }
        mask |= 1 << a;
    }
    Ok(mask)
}

/// The shared body of `reduce`, `variance` and `sum_to_shape` after validation.
fn reduce_masked(
    what: &str,
    op: Op,
    x: &[f32],
    shape: &[usize],
    mask: u64,
    out: &mut [f32],
) -> Result<()> {
    let n = numel(what, shape)?;
    check_count(what, x.len(), n, shape, "input")?;
    let mut kept = 1usize;
    for (i, &d) in shape.iter().enumerate() {
        if mask >> i & 1 == 0 {
            kept *= d; // no overflow: a factor of n, which fits
        }
    }
    if out.len() != kept {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} output"),
            expected: format!("{kept} elements (shape {shape:?} without the reduced axes)"),
            got: format!("{} elements", out.len()),
        });
    }
    if out.is_empty() {
        return Ok(());
    }
    if n == 0 {
        // Reducing empty sets into a non-empty output.
        let v = match op {
            Op::Sum => 0.0,
            Op::Prod => 1.0,
            Op::Mean | Op::Var => f32::NAN,
            Op::Max | Op::Min => {
                return Err(KernelError::InvalidArgument {
                    what: what.to_string(),
                    message: format!(
                        "zero-size reduction over axes of shape {shape:?} has no identity"
                    ),
                })
            }
        };
        out.fill(v);
        return Ok(());
    }
    let lay = Layout::new(what, shape, mask)?;
    if lay.count == 1 {
        // Nothing is reduced (every reduced axis has size 1): one element per output.
        for (o, &v) in out.iter_mut().zip(x) {
            // The variance of one value is 0 (NaN when the value is not finite).
            *o = match op {
                Op::Var if v.is_finite() => 0.0,
                Op::Var => f32::NAN,
                _ => v,
            };
        }
    } else if lay.inner_reduced {
        reduce_segments(op, x, &lay, out);
    } else {
        reduce_columns(op, x, &lay, out);
    }
    Ok(())
}

/// Reduces `x` (row-major, `shape`) over `axes` into `out` (the shape without those axes).
///
/// `axes` must be sorted, unique and below the rank; empty `axes` copies. Sums are
/// accumulated in blocks (f32 within a block, f64 across) for accuracy; the result is
/// bitwise identical for any thread count. NaN propagates through max/min.
///
/// # Errors
/// `ShapeMismatch` when `x` or `out` has the wrong length; `InvalidArgument` for
/// invalid `axes`, for max/min over an empty set (into a non-empty output), or for a
/// shape alternating reduced and kept axes more than 16 times.
pub fn reduce(
    op: Reduce,
    x: &[f32],
    shape: &[usize],
    axes: &[usize],
    out: &mut [f32],
) -> Result<()> {
    let what = match op {
        Reduce::Sum => "sum",
        Reduce::Mean => "mean",
        Reduce::Max => "max",
        Reduce::Min => "min",
        Reduce::Prod => "prod",
    };
    let mask = axes_mask(what, shape.len(), axes)?;
    reduce_masked(what, op.into(), x, shape, mask, out)
}

/// Population variance (ddof = 0) of `x` over `axes`, two-pass: the mean, then the
/// mean of squared deviations from it. Empty sets give NaN.
///
/// # Errors
/// As [`reduce`].
pub fn variance(x: &[f32], shape: &[usize], axes: &[usize], out: &mut [f32]) -> Result<()> {
    let mask = axes_mask("var", shape.len(), axes)?;
    reduce_masked("var", Op::Var, x, shape, mask, out)
}

/// Sums `x` of shape `from` down to shape `to`, the gradient of broadcasting `to` to
/// `from`: `to` left-padded with 1s must equal `from` except where it is 1.
///
/// # Errors
/// `ShapeMismatch` when `from` is not a broadcast of `to`, or a buffer length differs
/// from its shape's size.
pub fn sum_to_shape(x: &[f32], from: &[usize], out: &mut [f32], to: &[usize]) -> Result<()> {
    let what = "sum_to_shape";
    let bad = to.len() > from.len() || {
        let pad = from.len() - to.len();
        to.iter().zip(&from[pad..]).any(|(&t, &f)| t != f && t != 1)
    };
    if bad {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what}: shape {from:?} is not a broadcast of {to:?}"),
            expected: format!(
                "each dimension of {to:?} equal to the matching one of {from:?} or 1"
            ),
            got: format!("{to:?}"),
        });
    }
    if from.len() > 64 {
        return Err(KernelError::InvalidArgument {
            what: what.to_string(),
            message: format!("rank {} exceeds the supported 64", from.len()),
        });
    }
    let n_to = numel(what, to)?;
    check_count(what, out.len(), n_to, to, "output")?;
    let pad = from.len() - to.len();
    let mut mask = 0u64;
    for (i, &f) in from.iter().enumerate() {
        let t = if i < pad { 1 } else { to[i - pad] };
        if t == 1 && f != 1 {
            mask |= 1 << i;
        }
    }
    reduce_masked(what, Op::Sum, x, from, mask, out)
}

/// Index of the first maximum (or minimum) of one contiguous row, the first NaN if
/// there is one. Two vectorised passes: the NaN-propagating extreme, then the first
/// element equal to it (or the first NaN).
fn arg_row(is_max: bool, row: &[f32]) -> usize {
    let m = extreme(row, is_max);
    let at = if m.is_nan() {
        row.iter().position(|v| v.is_nan())
    } else {
        row.iter().position(|&v| v == m)
    };
    at.unwrap_or(0)
}

/// Arg-reduction of `out.len()` columns starting at `col` of the `(n, inner)` block at `base`.
fn arg_columns(
    is_max: bool,
    x: &[f32],
    base: usize,
    col: usize,
    n: usize,
    inner: usize,
    out: &mut [i32],
) {
    for (t, ot) in out.chunks_mut(TILE).enumerate() {
        let c = base + col + t * TILE;
        let w = ot.len();
        let mut best = [0.0f32; TILE];
        let best = &mut best[..w];
        best.copy_from_slice(&x[c..c + w]);
        ot.fill(0);
        for i in 1..n {
            let row = &x[c + i * inner..c + i * inner + w];
            let iv = i as i32;
            for ((b, o), &v) in best.iter_mut().zip(ot.iter_mut()).zip(row) {
                let better = if is_max { v > *b } else { v < *b };
                // Once the best is NaN it stays; a NaN replaces any number.
                if (better || v.is_nan()) && !b.is_nan() {
                    *b = v;
                    *o = iv;
                }
            }
        }
    }
}

/// Index of the maximum (`is_max`) or minimum of `x` along `axis`; `out` has the
/// shape without that axis.
///
/// Ties give the first occurrence; a NaN counts as the extreme (the first NaN is
/// returned), as NumPy's argmax/argmin.
///
/// # Errors
/// `InvalidArgument` when `axis` is out of range, the axis is empty (with a
/// non-empty output) or longer than `i32::MAX`; `ShapeMismatch` for wrong lengths.
pub fn arg_reduce(
    is_max: bool,
    x: &[f32],
    shape: &[usize],
    axis: usize,
    out: &mut [i32],
) -> Result<()> {
    let what = if is_max { "argmax" } else { "argmin" };
    if axis >= shape.len() {
        return Err(KernelError::InvalidArgument {
            what: what.to_string(),
            message: format!("axis {axis} is out of range for shape {shape:?}"),
        });
    }
    let total = numel(what, shape)?;
    check_count(what, x.len(), total, shape, "input")?;
    let outer: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let m = outer * inner;
    if out.len() != m {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} output"),
            expected: format!("{m} elements (shape {shape:?} without axis {axis})"),
            got: format!("{} elements", out.len()),
        });
    }
    if m == 0 {
        return Ok(());
    }
    if n == 0 || n > i32::MAX as usize {
        return Err(KernelError::InvalidArgument {
            what: what.to_string(),
            message: format!(
                "axis {axis} of shape {shape:?} must hold between 1 and {} elements",
                i32::MAX
            ),
        });
    }
    let large = total >= PAR_MIN;
    if inner == 1 {
        let per_task = if large { (TASK_ELEMS / n).max(1) } else { m };
        par::for_each_chunk_mut(out, per_task, |ci, oc| {
            for (j, o) in oc.iter_mut().enumerate() {
                let r = ci * per_task + j;
                *o = arg_row(is_max, &x[r * n..(r + 1) * n]) as i32;
            }
        });
    } else if outer == 1 {
        let cols = if large {
            (TASK_ELEMS / n).max(1).next_multiple_of(TILE)
        } else {
            inner
        };
        par::for_each_chunk_mut(out, cols, |ci, oc| {
            arg_columns(is_max, x, 0, ci * cols, n, inner, oc)
        });
    } else {
        let rows_per_task = if large {
            (TASK_ELEMS / (n * inner)).max(1)
        } else {
            outer
        };
        par::for_each_chunk_mut(out, rows_per_task * inner, |ci, oc| {
            for (j, orow) in oc.chunks_mut(inner).enumerate() {
                let r = ci * rows_per_task + j;
                arg_columns(is_max, x, r * n * inner, 0, n, inner, orow);
            }
        });
    }
    Ok(())
}

/// Elements per parallel task of [`all_finite`] and [`all_non_negative`].
const CHECK_TASK: usize = 1 << 18;

/// Whether every element of `x` is finite (no NaN, no infinity): one pass at memory
/// speed, split over the pool for large inputs (training checks its whole input
/// arrays before the first step).
pub fn all_finite(x: &[f32]) -> bool {
    // Non-finite values are those whose exponent bits are all ones.
    const EXPONENT: u32 = 0x7f80_0000;
    none_is(x, |v| v.to_bits() & EXPONENT == EXPONENT)
}

/// Whether every element of `x` is `>= 0` (NaN is not, `-0.0` is), as
/// [`all_finite`] (the optimizer checks a table's slot before each call). A
/// negative subnormal counts as zero, as the flushed arithmetic of training reads
/// it, whatever the calling thread's mode (the pool's threads always flush).
pub fn all_non_negative(x: &[f32]) -> bool {
    none_is(x, |v| v <= -f32::MIN_POSITIVE || v.is_nan())
}

/// Whether `bad` holds for no element of `x`. OR-ing a flag per value (rather than
/// stopping at the first) keeps the loop branch-free and vectorised with 32-bit
/// lanes; a task skips its part once another found one.
fn none_is(x: &[f32], bad: impl Fn(f32) -> bool + Sync) -> bool {
    let has_bad =
        |part: &[f32]| -> bool { part.iter().fold(0u32, |any, &v| any | u32::from(bad(v))) != 0 };
    if x.len() <= CHECK_TASK {
        return !has_bad(x);
    }
    let none = std::sync::atomic::AtomicBool::new(true);
    par::for_each_task(x.len().div_ceil(CHECK_TASK), |t| {
        if none.load(std::sync::atomic::Ordering::Relaxed) {
            let part = &x[t * CHECK_TASK..((t + 1) * CHECK_TASK).min(x.len())];
            if has_bad(part) {
                none.store(false, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    none.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that `pass` accepts `good(i)` values at lengths around SIMD widths and
    /// the task size, rejects them with any of `bad` at the start, middle or end,
    /// and accepts them after `edges` set some extreme but good values.
    fn check_pass(
        pass: fn(&[f32]) -> bool,
        good: fn(usize) -> f32,
        bad: &[f32],
        edges: fn(&mut [f32]),
    ) {
        let lengths = [
            0,
            1,
            7,
            16,
            17,
            CHECK_TASK - 1,
            CHECK_TASK,
            3 * CHECK_TASK + 5,
        ];
        for len in lengths {
            let mut x: Vec<f32> = (0..len).map(good).collect();
            assert!(pass(&x), "len {len}");
            if len == 0 {
                continue;
            }
            for at in [0, len / 2, len - 1] {
                for &b in bad {
                    let keep = x[at];
                    x[at] = b;
                    assert!(!pass(&x), "len {len}, {b} at {at}");
                    x[at] = keep;
                }
            }
            edges(&mut x);
            assert!(pass(&x), "len {len}: edges");
        }
    }

    #[test]
    fn all_finite_finds_any_nan_or_infinity() {
        check_pass(
            all_finite,
            |i| (i as f32 - 100.0) * 1e30,
            &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN],
            // The largest finite values and subnormals are finite.
            |x| {
                x[0] = f32::MAX;
                x[x.len() - 1] = -f32::MIN_POSITIVE / 2.0;
            },
        );
    }

    #[test]
    fn all_non_negative_finds_any_negative_or_nan() {
        check_pass(
            all_non_negative,
            |i| (i % 1000) as f32 * 1e-3,
            &[
                -1.0,
                -f32::MIN_POSITIVE,
                f32::NEG_INFINITY,
                f32::NAN,
                -f32::NAN,
            ],
            // Zero of either sign, subnormals of either sign (read as zero, flushed
            // or not) and infinity count as >= 0.
            |x| {
                let n = x.len();
                x[0] = -0.0;
                x[n / 2] = -f32::MIN_POSITIVE / 2.0;
                x[n - 1] = f32::INFINITY;
                x[n - 1 - n / 3] = f32::MIN_POSITIVE / 2.0;
            },
        );
    }

    use proptest::prelude::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Naive f64 reduction: every element added to the output it maps to.
    /// Returns (sum, sum|x|, prod, max, min, count, variance) per output.
    #[allow(clippy::type_complexity)]
    fn naive(
        x: &[f32],
        shape: &[usize],
        axes: &[usize],
    ) -> Vec<(f64, f64, f64, f64, f64, usize, f64)> {
        let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
        let m: usize = kept.iter().map(|&i| shape[i]).product();
        let mut acc = vec![(0.0, 0.0, 1.0, f64::NEG_INFINITY, f64::INFINITY, 0usize, 0.0); m];
        let out_index = |flat: usize| {
            let mut idx = vec![0; shape.len()];
            let mut r = flat;
            for i in (0..shape.len()).rev() {
                idx[i] = r % shape[i];
                r /= shape[i];
            }
            kept.iter().fold(0, |o, &i| o * shape[i] + idx[i])
        };
        for (flat, &v) in x.iter().enumerate() {
            let a = &mut acc[out_index(flat)];
            let v = f64::from(v);
            a.0 += v;
            a.1 += v.abs();
            a.2 *= v;
            a.3 = a.3.max(v);
            a.4 = a.4.min(v);
            a.5 += 1;
        }
        for (flat, &v) in x.iter().enumerate() {
            let a = &mut acc[out_index(flat)];
            let d = f64::from(v) - a.0 / a.5 as f64;
            a.6 += d * d / a.5 as f64;
        }
        acc
    }

    fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![2 => Just(1usize), 6 => 2usize..6, 1 => Just(0usize)]
    }

    fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        (prop::collection::vec(dim(), 0..5), any::<u8>()).prop_map(|(s, bits)| {
            let axes = (0..s.len()).filter(|i| bits >> i & 1 == 1).collect();
            (s, axes)
        })
    }

    proptest! {
        #[test]
        fn reduce_matches_naive((shape, axes) in shape_and_axes(), seed in 0u64..1000) {
            let n: usize = shape.iter().product();
            let x = values(n, seed);
            let want = naive(&x, &shape, &axes);
            let mut out = vec![f32::NAN; want.len()];
            let empty_sets = n == 0 && !want.is_empty();
            for op in [Reduce::Sum, Reduce::Mean, Reduce::Max, Reduce::Min, Reduce::Prod] {
                let r = reduce(op, &x, &shape, &axes, &mut out);
                if empty_sets && matches!(op, Reduce::Max | Reduce::Min) {
                    prop_assert!(r.is_err());
                    continue;
                }
                r.unwrap();
                for (o, w) in out.iter().zip(&want) {
                    let o = f64::from(*o);
                    let (ok, expect) = match op {
                        Reduce::Sum => ((o - w.0).abs() <= 1e-6 * w.1 + 1e-30, w.0),
                        Reduce::Mean => {
                            let mean = w.0 / w.5 as f64;
                            (if w.5 == 0 { o.is_nan() } else { (o - mean).abs() <= 1e-6 * w.1 / w.5 as f64 + 1e-30 }, mean)
                        }
                        Reduce::Prod => ((o - w.2).abs() <= 1e-6 * w.2.abs() + 1e-37, w.2),
                        Reduce::Max => (o == w.3, w.3),
                        Reduce::Min => (o == w.4, w.4),
                    };
                    prop_assert!(ok, "{:?} {:?} over {:?}: got {}, want {}", op, shape, axes, o, expect);
                }
            }
            out.fill(f32::NAN);
            variance(&x, &shape, &axes, &mut out).unwrap();
            for (o, w) in out.iter().zip(&want) {
                let o = f64::from(*o);
                if w.5 == 0 {
                    prop_assert!(o.is_nan());
                } else {
                    let scale = w.1 / w.5 as f64;
                    prop_assert!((o - w.6).abs() <= 1e-6 * scale * scale + 1e-30, "var {:?} {:?}: {} vs {}", shape, axes, o, w.6);
                }
            }
        }

        #[test]
        fn sum_to_shape_matches_naive(from in prop::collection::vec(dim(), 0..5), bits in any::<u8>(), drop in 0usize..3, seed in 0u64..100) {
            // `to`: `from` with some dims set to 1 and some leading dims removed.
            let mut to: Vec<usize> = from.iter().enumerate().map(|(i, &d)| if bits >> i & 1 == 1 { 1 } else { d }).collect();
            let drop = drop.min(to.len());
            to.drain(..drop);
            // Dropped leading axes and axes where `to` has 1 are summed (a summed
            // size-1 axis changes nothing in the naive reference).
            let axes: Vec<usize> = (0..from.len()).filter(|&i| i < drop || to[i - drop] == 1).collect();
            let x = values(from.iter().product(), seed);
            let want = naive(&x, &from, &axes);
            let mut out = vec![f32::NAN; to.iter().product()];
            sum_to_shape(&x, &from, &mut out, &to).unwrap();
            prop_assert_eq!(out.len(), want.len());
            for (o, w) in out.iter().zip(&want) {
                prop_assert!((f64::from(*o) - w.0).abs() <= 1e-6 * w.1 + 1e-30);
            }
        }

        #[test]
        fn arg_reduce_matches_naive(shape in prop::collection::vec(1usize..5, 1..4), axis_pick in 0usize..4, seed in 0u64..100, nan_at in prop::option::of(0usize..64)) {
            let axis = axis_pick % shape.len();
            let n: usize = shape.iter().product();
            // Few distinct values, so ties are common.
            let mut x: Vec<f32> = values(n, seed).iter().map(|v| (v * 2.0).round()).collect();
            if let Some(p) = nan_at {
                if p < n {
                    x[p] = f32::NAN;
                }
            }
            let outer: usize = shape[..axis].iter().product();
            let len = shape[axis];
            let inner: usize = shape[axis + 1..].iter().product();
            for is_max in [true, false] {
                let mut out = vec![-1i32; outer * inner];
                arg_reduce(is_max, &x, &shape, axis, &mut out).unwrap();
                for o in 0..outer {
                    for i in 0..inner {
                        let vals: Vec<f32> = (0..len).map(|k| x[(o * len + k) * inner + i]).collect();
                        let want = match vals.iter().position(|v| v.is_nan()) {
                            Some(p) => p,
                            None => {
                                let mut b = 0;
                                for k in 1..len {
                                    if (is_max && vals[k] > vals[b]) || (!is_max && vals[k] < vals[b]) {
                                        b = k;
                                    }
                                }
                                b
                            }
                        };
                        prop_assert_eq!(out[o * inner + i], want as i32, "{:?} axis {} is_max {}", vals, axis, is_max);
                    }
                }
            }
        }
    }

    #[test]
    fn large_reductions_are_accurate_on_every_path() {
        // (shape, axes): full, rows, columns (one output row), columns per output row,
        // middle axis, outer+inner axes.
        let cases: [(&[usize], &[usize]); 6] = [
            (&[1_200_000], &[0]),
            (&[300, 1000], &[1]),
            (&[3000, 300], &[0]),
            (&[40, 500, 30], &[1]),
            (&[7, 20_000, 3], &[0, 2]),
            (&[2, 3, 40_000], &[0, 2]),
        ];
        for (shape, axes) in cases {
            let x: Vec<f32> = values(shape.iter().product(), 5)
                .iter()
                .map(|v| v + 10.0)
                .collect();
            let want = naive(&x, shape, axes);
            let mut out = vec![0.0; want.len()];
            reduce(Reduce::Sum, &x, shape, axes, &mut out).unwrap();
            for (o, w) in out.iter().zip(&want) {
                assert!(
                    (f64::from(*o) - w.0).abs() <= 2e-7 * w.0.abs() + 1e-3,
                    "{shape:?} {axes:?}: {o} vs {}",
                    w.0
                );
            }
            reduce(Reduce::Max, &x, shape, axes, &mut out).unwrap();
            for (o, w) in out.iter().zip(&want) {
                assert_eq!(f64::from(*o), w.3);
            }
            variance(&x, shape, axes, &mut out).unwrap();
            for (o, w) in out.iter().zip(&want) {
                assert!(
                    (f64::from(*o) - w.6).abs() <= 1e-5 * w.6,
                    "{shape:?} {axes:?}: var {o} vs {}",
                    w.6
                );
            }
        }
    }

    #[test]
    fn variance_is_accurate_with_a_large_offset() {
        // Naive E[x^2] - E[x]^2 in f32 would lose everything here.
        let x: Vec<f32> = values(10_000, 9).iter().map(|v| 1e4 + v * 1e-2).collect();
        let want = naive(&x, &[10_000], &[0])[0].6;
        let mut out = [0.0f32];
        variance(&x, &[10_000], &[0], &mut out).unwrap();
        assert!(
            (f64::from(out[0]) - want).abs() <= 1e-3 * want,
            "{} vs {want}",
            out[0]
        );
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let shapes: [(&[usize], &[usize]); 3] = [
            (&[2_000_000], &[0]),
            (&[500, 300], &[0]),
            (&[300, 500], &[1]),
        ];
        let mut results = Vec::new();
        for threads in [1, 3] {
            par::set_num_threads(threads).unwrap();
            par::watch_machine_load(false);
            let mut r = Vec::new();
            for (shape, axes) in shapes {
                let x = values(shape.iter().product(), 1);
                let mut out = vec![0.0f32; shape.iter().product::<usize>() / shape[axes[0]]];
                reduce(Reduce::Sum, &x, shape, axes, &mut out).unwrap();
                r.push(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            results.push(r);
        }
        par::set_num_threads(par::default_num_threads()).unwrap();
        assert_eq!(results[0], results[1]);
    }

    #[test]
    fn nan_propagates_through_max_min_and_sum() {
        let x = [1.0, f32::NAN, 3.0, 2.0, 5.0, 0.0];
        let mut out = [0.0f32; 2];
        reduce(Reduce::Max, &x, &[2, 3], &[1], &mut out).unwrap();
        assert!(out[0].is_nan() && out[1] == 5.0);
        reduce(Reduce::Min, &x, &[2, 3], &[1], &mut out).unwrap();
        assert!(out[0].is_nan() && out[1] == 0.0);
        let mut cols = [0.0f32; 3];
        reduce(Reduce::Max, &x, &[2, 3], &[0], &mut cols).unwrap();
        assert!(cols[1].is_nan() && cols[0] == 2.0);
        reduce(Reduce::Sum, &x, &[2, 3], &[0], &mut cols).unwrap();
        assert!(cols[1].is_nan() && cols[0] == 3.0);
    }

    #[test]
    fn empty_sets_and_errors() {
        let mut out = [0.0f32; 3];
        reduce(Reduce::Sum, &[], &[0, 3], &[0], &mut out).unwrap();
        assert_eq!(out, [0.0; 3]);
        reduce(Reduce::Prod, &[], &[0, 3], &[0], &mut out).unwrap();
        assert_eq!(out, [1.0; 3]);
        reduce(Reduce::Mean, &[], &[0, 3], &[0], &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_nan()));
        assert!(reduce(Reduce::Max, &[], &[0, 3], &[0], &mut out).is_err());
        // Max over a non-empty axis of an empty array: empty output, fine.
        reduce(Reduce::Max, &[], &[0, 3], &[1], &mut []).unwrap();
        // Bad axes.
        assert!(reduce(Reduce::Sum, &[0.0; 6], &[2, 3], &[1, 0], &mut out[..1]).is_err());
        assert!(reduce(Reduce::Sum, &[0.0; 6], &[2, 3], &[1, 1], &mut out[..2]).is_err());
        assert!(reduce(Reduce::Sum, &[0.0; 6], &[2, 3], &[2], &mut out[..2]).is_err());
        // Wrong lengths.
        assert!(reduce(Reduce::Sum, &[0.0; 5], &[2, 3], &[1], &mut out[..2]).is_err());
        assert!(reduce(Reduce::Sum, &[0.0; 6], &[2, 3], &[1], &mut out[..3]).is_err());
        // Empty axes copy.
        let mut all = [0.0f32; 6];
        reduce(
            Reduce::Mean,
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            &[2, 3],
            &[],
            &mut all,
        )
        .unwrap();
        assert_eq!(all, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // sum_to_shape refuses a non-broadcast pair.
        assert!(sum_to_shape(&[0.0; 6], &[2, 3], &mut out[..2], &[2]).is_err());
        assert!(sum_to_shape(&[0.0; 6], &[2, 3], &mut out[..1], &[1, 2, 3]).is_err());
        // arg_reduce errors.
        let mut idx = [0i32; 3];
        assert!(arg_reduce(true, &[0.0; 6], &[2, 3], 2, &mut idx).is_err());
        assert!(arg_reduce(true, &[], &[0, 3], 0, &mut idx).is_err());
        assert!(arg_reduce(true, &[0.0; 6], &[2, 3], 0, &mut idx[..2]).is_err());
    }

    #[test]
    fn large_arg_reduce_matches_rows_and_columns() {
        let x = values(400 * 300, 4);
        let mut rows = vec![0i32; 400];
        arg_reduce(true, &x, &[400, 300], 1, &mut rows).unwrap();
        let mut cols = vec![0i32; 300];
        arg_reduce(false, &x, &[400, 300], 0, &mut cols).unwrap();
        // A plain scan, first occurrence on ties (no NaN here).
        let scan = |is_max: bool, v: &[f32]| {
            let mut b = 0;
            for k in 1..v.len() {
                if (is_max && v[k] > v[b]) || (!is_max && v[k] < v[b]) {
                    b = k;
                }
            }
            b as i32
        };
        for r in 0..400 {
            assert_eq!(rows[r], scan(true, &x[r * 300..(r + 1) * 300]));
        }
        for c in 0..300 {
            let col: Vec<f32> = (0..400).map(|r| x[r * 300 + c]).collect();
            assert_eq!(cols[c], scan(false, &col));
        }
    }
}
