//! Layout kernels: transpose, concatenate/split, strided slice and its adjoint,
//! padding, gather/scatter-add, one-hot and dtype casts.
//!
//! Every array is row-major and contiguous; a shape is a slice of dimensions and
//! rank 0 (a scalar) is allowed everywhere. Kernels that keep a multi-index on the
//! stack accept ranks up to [`MAX_RANK`] and refuse higher ones with
//! `InvalidArgument`, so nothing here allocates.
//!
//! Parallel work is split into fixed groups of rows sized from the problem alone
//! (at least [`COPY_GRAIN`] elements per task, a quarter of that for [`gather`]), so
//! the partition never depends on the thread count. Most kernels here only copy,
//! which is exact for any split; the two that add ([`scatter_add`],
//! [`strided_slice_grad`]) give every destination element to exactly one task and
//! add into it in a fixed order.

use crate::error::{check_len, check_len_for, KernelError, Result};
use crate::par;
use crate::scratch::with_index_scratch;

/// The highest rank accepted by the kernels that index with a stack multi-index.
pub const MAX_RANK: usize = 8;

/// Fewest elements one parallel task moves: a few tens of microseconds of memory
/// traffic, well above the cost of handing a task to another thread.
const COPY_GRAIN: usize = 1 << 16;
/// Elements per task of [`gather`]: a quarter of [`COPY_GRAIN`], so that a batch of
/// `fit` (256 rows of 784 floats, 13 tasks instead of 4) splits evenly between
/// threads that join at different moments (two threads: 82-88 -> 68-76 us).
const GATHER_GRAIN: usize = COPY_GRAIN / 4;
/// How many rows ahead [`gather`] prefetches the row it will copy, and at most how
/// much of it.
const GATHER_AHEAD: usize = 2;
const GATHER_PREFETCH_BYTES: usize = 4096;

/// Edge of the square tiles of the blocked transpose: 32 rows of 32 elements keep
/// both the source and the destination lines of a tile in L1.
const TILE: usize = 32;

fn invalid(what: &str, message: String) -> KernelError {
    KernelError::InvalidArgument {
        what: what.to_string(),
        message,
    }
}

fn check_rank(what: &str, rank: usize) -> Result<()> {
    if rank > MAX_RANK {
        return Err(invalid(
            what,
            format!("rank {rank} exceeds the supported maximum of {MAX_RANK}"),
        ));
    }
    Ok(())
}

fn check_arg_len(what: &str, name: &str, got: usize, rank: usize) -> Result<()> {
    if got != rank {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} {name}"),
            expected: format!("{rank} entries (one per axis)"),
            got: format!("{got} entries"),
        });
    }
    Ok(())
}

/// Number of elements of `shape`, refusing shapes whose size overflows `usize`.
fn numel(what: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            invalid(
                what,
                format!("shape {shape:?} has more elements than fit in memory"),
            )
        })
}

/// Row-major strides of `shape` in the first `shape.len()` entries. Only used once
/// the shape's size is known to fit, or is zero (then the strides are never used,
/// hence the saturating product).
fn strides(shape: &[usize]) -> [usize; MAX_RANK] {
    let mut s = [0usize; MAX_RANK];
    let mut acc = 1usize;
    for d in (0..shape.len()).rev() {
        s[d] = acc;
        acc = acc.saturating_mul(shape[d]);
    }
    s
}

/// `shape` as a stack array of rank at least 1: a scalar becomes `[1]`, so row-wise
/// loops need no special case for rank 0.
fn as_rows(shape: &[usize]) -> ([usize; MAX_RANK], usize) {
    let mut dims = [1usize; MAX_RANK];
    dims[..shape.len()].copy_from_slice(shape);
    (dims, shape.len().max(1))
}

fn check_indices(what: &str, indices: &[i32], limit: usize) -> Result<()> {
    for (position, &v) in indices.iter().enumerate() {
        if v < 0 || v as usize >= limit {
            return Err(KernelError::IndexOutOfRange {
                what: what.to_string(),
                position,
                value: i64::from(v),
                limit,
            });
        }
    }
    Ok(())
}

/// Calls `f(row, idx, off)` for every row of `out`, a row being a run of
/// `dims[rank - 1]` contiguous elements. `idx` holds the row's leading indices
/// (`rank - 1` of them) and `off = sum(idx[d] * in_strides[d])`, the row's offset in
/// whatever array the caller reads from. `out.len()` must equal the product of `dims`.
///
/// Rows are handed out in fixed groups of at least [`COPY_GRAIN`] elements; each
/// group decodes its first multi-index once, then steps an odometer.
fn for_each_row<T: Send>(
    out: &mut [T],
    dims: &[usize],
    in_strides: &[usize],
    f: impl Fn(&mut [T], &[usize], usize) + Sync + Send,
) {
    let rank = dims.len();
    let inner = dims[rank - 1];
    if inner == 0 || out.is_empty() {
        return;
    }
    let lead = rank - 1;
    let rows_per_task = COPY_GRAIN.div_ceil(inner);
    par::for_each_chunk_mut(out, rows_per_task * inner, |ci, chunk| {
        let mut idx = [0usize; MAX_RANK];
        let mut rem = ci * rows_per_task;
        let mut off = 0usize;
        for d in (0..lead).rev() {
            idx[d] = rem % dims[d];
            rem /= dims[d];
            off += idx[d] * in_strides[d];
        }
        for row in chunk.chunks_mut(inner) {
            f(row, &idx[..lead], off);
            // Odometer step: the offset keeps every `idx[d] * in_strides[d]` term, so
            // the subtraction on wrap-around never underflows.
            for d in (0..lead).rev() {
                idx[d] += 1;
                off += in_strides[d];
                if idx[d] < dims[d] {
                    break;
                }
                off -= dims[d] * in_strides[d];
                idx[d] = 0;
            }
        }
    });
}

/// Copies `src` into `dst` (equal lengths) in parallel fixed chunks.
fn par_copy<T: Copy + Send + Sync>(src: &[T], dst: &mut [T]) {
    par::for_each_chunk_mut(dst, COPY_GRAIN, |ci, chunk| {
        let start = ci * COPY_GRAIN;
        chunk.copy_from_slice(&src[start..start + chunk.len()]);
    });
}

/// Reduces a transpose to an equivalent one of lowest rank: unit axes are dropped and
/// runs of output axes that are consecutive (and in order) in the input are merged.
/// Returns the reduced input dims, the reduced permutation and the reduced rank.
fn simplify_transpose(
    shape: &[usize],
    perm: &[usize],
) -> ([usize; MAX_RANK], [usize; MAX_RANK], usize) {
    // New numbering of the input axes that are not of size 1.
    let mut renum = [0usize; MAX_RANK];
    let mut dims = [0usize; MAX_RANK];
    let mut kept = 0;
    for (a, &d) in shape.iter().enumerate() {
        if d != 1 {
            renum[a] = kept;
            dims[kept] = d;
            kept += 1;
        }
    }
    let mut p = [0usize; MAX_RANK];
    let mut k = 0;
    for &a in perm {
        if shape[a] != 1 {
            p[k] = renum[a];
            k += 1;
        }
    }
    // Group maximal runs of output positions whose input axes are a+0, a+1, ...
    let mut group_first = [0usize; MAX_RANK];
    let mut group_len = [0usize; MAX_RANK];
    let mut groups = 0;
    let mut j = 0;
    while j < k {
        let start = j;
        j += 1;
        while j < k && p[j] == p[j - 1] + 1 {
            j += 1;
        }
        group_first[groups] = p[start];
        group_len[groups] = j - start;
        groups += 1;
    }
    // Each group becomes one input axis; input axes are ordered by where the group
    // starts in the original input.
    let mut new_dims = [0usize; MAX_RANK];
    let mut new_perm = [0usize; MAX_RANK];
    for g in 0..groups {
        let axis = (0..groups)
            .filter(|&h| group_first[h] < group_first[g])
            .count();
        new_perm[g] = axis;
        new_dims[axis] = dims[group_first[g]..group_first[g] + group_len[g]]
            .iter()
            .product();
    }
    (new_dims, new_perm, groups)
}

/// One 2-D block of a strided transpose:
/// `dst[dst_base + i * dst_row_stride + j] = src[src_base + i + j * src_col_stride]`
/// for `i < rows`, `j < cols`, walked in [`TILE`]-square tiles so that both the
/// contiguous reads (along `i`) and the contiguous writes (along `j`) reuse cache lines.
fn transpose_block<T: Copy>(
    src: &[T],
    src_base: usize,
    src_col_stride: usize,
    dst: &mut [T],
    dst_base: usize,
    dst_row_stride: usize,
    rows: usize,
    cols: usize,
) {
    for i0 in (0..rows).step_by(TILE) {
        let i1 = (i0 + TILE).min(rows);
        for j0 in (0..cols).step_by(TILE) {
            let j1 = (j0 + TILE).min(cols);
            for i in i0..i1 {
                let row = &mut dst
                    [dst_base + i * dst_row_stride + j0..dst_base + i * dst_row_stride + j1];
                let mut s = src_base + i + j0 * src_col_stride;
                for v in row.iter_mut() {
                    *v = src[s];
                    s += src_col_stride;
                }
            }
        }
    }
}

/// Permutes the axes of `x`: `out.shape[i] = shape[perm[i]]`, as `numpy.transpose`.
///
/// The permutation is first reduced (unit axes dropped, axes that stay adjacent
/// merged). Identity permutations become a copy; permutations that keep the last
/// axis copy whole rows; the rest run a cache-blocked ([`TILE`]-square) 2-D transpose
/// between the input's last axis and the output's last axis, batched over the other
/// axes. Works for any `Copy` element type (f32, i32, ...).
///
/// # Errors
/// `InvalidArgument` when the rank exceeds [`MAX_RANK`] or `perm` is not a
/// permutation of `0..rank`; `ShapeMismatch` when `perm` has the wrong length or a
/// buffer's length differs from the product of `shape`.
pub fn transpose<T: Copy + Send + Sync>(
    x: &[T],
    shape: &[usize],
    perm: &[usize],
    out: &mut [T],
) -> Result<()> {
    const WHAT: &str = "transpose";
    let rank = shape.len();
    check_rank(WHAT, rank)?;
    check_arg_len(WHAT, "perm", perm.len(), rank)?;
    let mut seen = [false; MAX_RANK];
    for &p in perm {
        if p >= rank || seen[p] {
            return Err(invalid(
                WHAT,
                format!("perm {perm:?} is not a permutation of the axes 0..{rank}"),
            ));
        }
        seen[p] = true;
    }
    let n = numel(WHAT, shape)?;
    check_len("transpose input", x.len(), n)?;
    check_len("transpose output", out.len(), n)?;
    if n == 0 {
        return Ok(());
    }

    let (dims, perm, r) = simplify_transpose(shape, perm);
    if r <= 1 {
        par_copy(x, out);
        return Ok(());
    }
    let in_str = strides(&dims[..r]);
    let mut out_dims = [0usize; MAX_RANK];
    // Input stride of each output axis.
    let mut istr = [0usize; MAX_RANK];
    for k in 0..r {
        out_dims[k] = dims[perm[k]];
        istr[k] = in_str[perm[k]];
    }

    if perm[r - 1] == r - 1 {
        // The last axis stays last: every output row is one contiguous input row.
        for_each_row(out, &out_dims[..r], &istr[..r - 1], |row, _, off| {
            row.copy_from_slice(&x[off..off + row.len()]);
        });
        return Ok(());
    }

    // General case. Output axis `q` is the input's last (unit-stride) axis; the
    // output's last axis reads the input with stride `col_stride`. For every fixed
    // index of the other axes, (q, last) is a 2-D transpose.
    let q = (0..r).find(|&k| perm[k] == r - 1).unwrap_or(0);
    let col_stride = istr[r - 1];
    let cols = out_dims[r - 1];
    let out_str = strides(&out_dims[..r]);
    let slab = out_str[q]; // output elements per index of axis q
    let dq = out_dims[q];
    let total_rows = n / slab; // rows of axis q over all prefixes
    let mid_axes = q + 1..r - 1;
    let mid_count: usize = out_dims[mid_axes.clone()].iter().product();

    // Tasks take whole bands of `band` rows of axis q (a multiple of the tile).
    let band = COPY_GRAIN.div_ceil(slab).div_ceil(TILE).max(1) * TILE;
    par::for_each_chunk_mut(out, band * slab, |ci, chunk| {
        let r0 = ci * band;
        let r1 = (r0 + band).min(total_rows);
        let mut row = r0;
        while row < r1 {
            // Split the band where the prefix (output axes before q) changes.
            let i_lo = row % dq;
            let i_hi = dq.min(i_lo + (r1 - row));
            let mut rem = row / dq;
            let mut prefix_off = 0usize;
            for k in (0..q).rev() {
                prefix_off += (rem % out_dims[k]) * istr[k];
                rem /= out_dims[k];
            }
            let seg_base = (row - r0) * slab;
            let mut idx = [0usize; MAX_RANK];
            let mut mid_in = 0usize;
            let mut mid_out = 0usize;
            for _ in 0..mid_count {
                transpose_block(
                    x,
                    /* src_base = */ prefix_off + mid_in + i_lo,
                    /* src_col_stride = */ col_stride,
                    chunk,
                    /* dst_base = */ seg_base + mid_out,
                    /* dst_row_stride = */ slab,
                    /* rows = */ i_hi - i_lo,
                    /* cols = */ cols,
                );
                for k in mid_axes.clone().rev() {
                    idx[k] += 1;
                    mid_in += istr[k];
                    mid_out += out_str[k];
                    if idx[k] < out_dims[k] {
                        break;
                    }
                    mid_in -= out_dims[k] * istr[k];
                    mid_out -= out_dims[k] * out_str[k];
                    idx[k] = 0;
                }
            }
            row += i_hi - i_lo;
        }
    });
    Ok(())
}

/// Checks that `shape` agrees with `full` on every axis but `axis`.
fn check_parts_shape(
    what: &str,
    part: usize,
    shape: &[usize],
    full: &[usize],
    axis: usize,
) -> Result<()> {
    let same = shape.len() == full.len()
        && shape
            .iter()
            .zip(full)
            .enumerate()
            .all(|(d, (a, b))| d == axis || a == b);
    if !same {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} part {part}"),
            expected: format!(
                "rank {} and dims {full:?} except along axis {axis}",
                full.len()
            ),
            got: format!("{shape:?}"),
        });
    }
    Ok(())
}

/// Validates the parts of a concat/split against the whole array and returns
/// `(outer, inner)`: the whole viewed as `(outer, shape[axis], inner)`.
fn check_parts<'a>(
    what: &str,
    parts: impl Iterator<Item = (usize, &'a [usize])>,
    full: &[usize],
    axis: usize,
) -> Result<(usize, usize)> {
    let rank = full.len();
    if axis >= rank {
        return Err(invalid(
            what,
            format!("axis {axis} is out of range for rank {rank}"),
        ));
    }
    let mut sum = 0usize;
    let mut count = 0;
    for (i, (len, shape)) in parts.enumerate() {
        check_parts_shape(what, i, shape, full, axis)?;
        sum = sum
            .checked_add(shape[axis])
            .ok_or_else(|| invalid(what, "the parts' sizes overflow".to_string()))?;
        check_len_for(format_args!("{what} part {i}"), len, numel(what, shape)?)?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(what, "needs at least one part".to_string()));
    }
    if sum != full[axis] {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} axis {axis}"),
            expected: format!("the parts' sizes to add up to {}", full[axis]),
            got: format!("{sum}"),
        });
    }
    let outer = full[..axis].iter().product();
    let inner = full[axis + 1..].iter().product();
    Ok((outer, inner))
}

/// Concatenates `inputs` (each `(buffer, shape)`) along `axis` into `out`, as
/// `numpy.concatenate`. All inputs have the rank of `out_shape` and its dims on
/// every axis but `axis`, where their sizes add up to `out_shape[axis]`.
///
/// # Errors
/// `InvalidArgument` when `inputs` is empty or `axis >= rank`; `ShapeMismatch` when
/// an input's shape does not fit `out_shape` or a buffer's length differs from its
/// shape.
pub fn concat<T: Copy + Send + Sync>(
    inputs: &[(&[T], &[usize])],
    axis: usize,
    out: &mut [T],
    out_shape: &[usize],
) -> Result<()> {
    const WHAT: &str = "concat";
    let (outer, inner) = check_parts(
        WHAT,
        inputs.iter().map(|(b, s)| (b.len(), *s)),
        out_shape,
        axis,
    )?;
    check_len("concat output", out.len(), numel(WHAT, out_shape)?)?;
    let row = out_shape[axis] * inner;
    if outer == 0 || row == 0 {
        return Ok(());
    }
    // One output row (fixed outer index) is the inputs' rows laid end to end.
    let rows_per_task = COPY_GRAIN.div_ceil(row);
    par::for_each_chunk_mut(out, rows_per_task * row, |ci, chunk| {
        for (r, dst) in chunk.chunks_mut(row).enumerate() {
            let o = ci * rows_per_task + r;
            let mut at = 0;
            for (buf, shape) in inputs {
                let w = shape[axis] * inner;
                dst[at..at + w].copy_from_slice(&buf[o * w..(o + 1) * w]);
                at += w;
            }
        }
    });
    Ok(())
}

/// Splits `x` along `axis` into `outputs` (each `(buffer, shape)`), the inverse of
/// [`concat`] (and its gradient).
///
/// # Errors
/// `InvalidArgument` when `outputs` is empty or `axis >= rank`; `ShapeMismatch` when
/// an output's shape does not fit `shape` or a buffer's length differs from its
/// shape.
pub fn split<T: Copy + Send + Sync>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    outputs: &mut [(&mut [T], &[usize])],
) -> Result<()> {
    const WHAT: &str = "split";
    let (outer, inner) = check_parts(
        WHAT,
        outputs.iter().map(|(b, s)| (b.len(), *s)),
        shape,
        axis,
    )?;
    check_len("split input", x.len(), numel(WHAT, shape)?)?;
    let row = shape[axis] * inner;
    if outer == 0 || row == 0 {
        return Ok(());
    }
    let mut at = 0;
    for (buf, part_shape) in outputs.iter_mut() {
        let w = part_shape[axis] * inner;
        if w > 0 {
            let rows_per_task = COPY_GRAIN.div_ceil(w);
            par::for_each_chunk_mut(buf, rows_per_task * w, |ci, chunk| {
                for (r, dst) in chunk.chunks_mut(w).enumerate() {
                    let o = ci * rows_per_task + r;
                    dst.copy_from_slice(&x[o * row + at..o * row + at + w]);
                }
            });
        }
        at += w;
    }
    Ok(())
}

/// Validates a strided slice of an array of shape `shape` giving `out_shape`.
fn check_slice(
    what: &str,
    shape: &[usize],
    begin: &[usize],
    step: &[usize],
    out_shape: &[usize],
) -> Result<()> {
    let rank = shape.len();
    check_rank(what, rank)?;
    check_arg_len(what, "begin", begin.len(), rank)?;
    check_arg_len(what, "step", step.len(), rank)?;
    check_arg_len(what, "output shape", out_shape.len(), rank)?;
    for d in 0..rank {
        if step[d] == 0 {
            return Err(invalid(
                what,
                format!("step along axis {d} must be at least 1, got 0"),
            ));
        }
        if out_shape[d] == 0 {
            continue;
        }
        let last = (out_shape[d] - 1)
            .checked_mul(step[d])
            .and_then(|v| v.checked_add(begin[d]));
        match last {
            Some(last) if last < shape[d] => {}
            _ => {
                return Err(invalid(
                    what,
                    format!(
                        "axis {d}: {} elements from {} with step {} reach past the axis size {}",
                        out_shape[d], begin[d], step[d], shape[d]
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Strided slice: `out[i_0, .., i_{r-1}] = x[begin[0] + i_0 * step[0], ..]` with
/// `out_shape[d]` elements along axis `d` (`step >= 1`).
///
/// # Errors
/// `InvalidArgument` when the rank exceeds [`MAX_RANK`], a step is 0, or an index
/// would fall outside the input; `ShapeMismatch` when `begin`, `step` or `out_shape`
/// has the wrong length or a buffer's length differs from its shape.
pub fn strided_slice<T: Copy + Send + Sync>(
    x: &[T],
    shape: &[usize],
    begin: &[usize],
    step: &[usize],
    out: &mut [T],
    out_shape: &[usize],
) -> Result<()> {
    const WHAT: &str = "strided_slice";
    check_slice(WHAT, shape, begin, step, out_shape)?;
    check_len("strided_slice input", x.len(), numel(WHAT, shape)?)?;
    check_len("strided_slice output", out.len(), numel(WHAT, out_shape)?)?;
    if out.is_empty() {
        return Ok(());
    }
    let rank = shape.len();
    let in_str = strides(shape);
    let mut base = 0usize;
    // Input distance between consecutive output indices along each axis.
    let mut step_str = [0usize; MAX_RANK];
    for d in 0..rank {
        base += begin[d] * in_str[d];
        step_str[d] = step[d] * in_str[d];
    }
    let (dims, r) = as_rows(out_shape);
    let last_step = if rank == 0 { 1 } else { step_str[rank - 1] };
    for_each_row(out, &dims[..r], &step_str[..r - 1], |row, _, off| {
        let off = base + off;
        if last_step == 1 {
            row.copy_from_slice(&x[off..off + row.len()]);
        } else {
            for (j, v) in row.iter_mut().enumerate() {
                *v = x[off + j * last_step];
            }
        }
    });
    Ok(())
}

/// Adjoint of [`strided_slice`]: `dx = 0`, then `dx[positions] += dy`, where the
/// positions are those the slice read. Fills the whole of `dx` (shape `x_shape`).
///
/// Positions of a slice are distinct (`step >= 1`), so each `dx` element receives at
/// most one term; the work is split over rows of `dx`.
///
/// # Errors
/// As [`strided_slice`], with `dy_shape` in the role of the output shape.
pub fn strided_slice_grad(
    dy: &[f32],
    dy_shape: &[usize],
    begin: &[usize],
    step: &[usize],
    dx: &mut [f32],
    x_shape: &[usize],
) -> Result<()> {
    const WHAT: &str = "strided_slice_grad";
    check_slice(WHAT, x_shape, begin, step, dy_shape)?;
    check_len("strided_slice_grad dy", dy.len(), numel(WHAT, dy_shape)?)?;
    check_len("strided_slice_grad dx", dx.len(), numel(WHAT, x_shape)?)?;
    if dx.is_empty() {
        return Ok(());
    }
    let rank = x_shape.len();
    if rank == 0 {
        dx[0] = 0.0 + dy[0];
        return Ok(());
    }
    let dy_str = strides(dy_shape);
    let zeros = [0usize; MAX_RANK];
    let lead = rank - 1;
    let (b_last, s_last, n_last) = (begin[lead], step[lead], dy_shape[lead]);
    for_each_row(dx, x_shape, &zeros[..lead], |row, idx, _| {
        row.fill(0.0);
        // Does this dx row hold sliced positions? Then find its dy row.
        let mut dy_off = 0usize;
        for d in 0..lead {
            let Some(dist) = idx[d].checked_sub(begin[d]) else {
                return;
            };
            let k = dist / step[d];
            if k * step[d] != dist || k >= dy_shape[d] {
                return;
            }
            dy_off += k * dy_str[d];
        }
        for (k, &g) in dy[dy_off..dy_off + n_last].iter().enumerate() {
            row[b_last + k * s_last] += g;
        }
    });
    Ok(())
}

/// Constant padding: `out` has shape `shape[d] + before[d] + after[d]`, holds `x`
/// at offset `before` and `value` everywhere else.
///
/// # Errors
/// `InvalidArgument` when the rank exceeds [`MAX_RANK`] or the padded size
/// overflows; `ShapeMismatch` when `before`/`after` have the wrong length or a
/// buffer's length differs from its shape.
pub fn pad(
    x: &[f32],
    shape: &[usize],
    before: &[usize],
    after: &[usize],
    value: f32,
    out: &mut [f32],
) -> Result<()> {
    const WHAT: &str = "pad";
    let rank = shape.len();
    check_rank(WHAT, rank)?;
    check_arg_len(WHAT, "before", before.len(), rank)?;
    check_arg_len(WHAT, "after", after.len(), rank)?;
    let mut out_dims = [1usize; MAX_RANK];
    for d in 0..rank {
        out_dims[d] = shape[d]
            .checked_add(before[d])
            .and_then(|v| v.checked_add(after[d]))
            .ok_or_else(|| invalid(WHAT, format!("padded size of axis {d} overflows")))?;
    }
    check_len("pad input", x.len(), numel(WHAT, shape)?)?;
    check_len("pad output", out.len(), numel(WHAT, &out_dims[..rank])?)?;
    if out.is_empty() {
        return Ok(());
    }
    if rank == 0 {
        out[0] = x[0];
        return Ok(());
    }
    let x_str = strides(shape);
    let zeros = [0usize; MAX_RANK];
    let lead = rank - 1;
    let (b, w) = (before[lead], shape[lead]);
    for_each_row(out, &out_dims[..rank], &zeros[..lead], |row, idx, _| {
        let mut x_off = 0usize;
        for d in 0..lead {
            let i = idx[d];
            if i < before[d] || i - before[d] >= shape[d] {
                row.fill(value);
                return;
            }
            x_off += (i - before[d]) * x_str[d];
        }
        row[..b].fill(value);
        row[b..b + w].copy_from_slice(&x[x_off..x_off + w]);
        row[b + w..].fill(value);
    });
    Ok(())
}

/// Gathers along `axis`, as `numpy.take(x, indices, axis)`: `x` is viewed as
/// `(outer, n, inner)` with `n = shape[axis]`, and `out` is
/// `(outer, indices.len(), inner)` with `out[o, j, :] = x[o, indices[j], :]`.
///
/// Negative indices are not wrapped. All indices are checked before anything is
/// written, so on error `out` is untouched. `what` names the caller (for example
/// `"embedding 'emb1'"`) in the error.
///
/// # Errors
/// `IndexOutOfRange { what, position, value, limit: n }` for the first index outside
/// `[0, n)`; `InvalidArgument` when `axis >= rank`; `ShapeMismatch` when a buffer's
/// length differs from its shape.
pub fn gather<T: Copy + Send + Sync>(
    what: &str,
    x: &[T],
    shape: &[usize],
    axis: usize,
    indices: &[i32],
    out: &mut [T],
) -> Result<()> {
    let rank = shape.len();
    if axis >= rank {
        return Err(invalid(
            what,
            format!("gather axis {axis} is out of range for an input of rank {rank}"),
        ));
    }
    check_len_for(
        format_args!("{what}: gather input"),
        x.len(),
        numel(what, shape)?,
    )?;
    let n = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    check_indices(what, indices, n)?;
    let m = indices.len();
    let needed = outer
        .checked_mul(m)
        .and_then(|v| v.checked_mul(inner))
        .ok_or_else(|| invalid(what, "gather output size overflows".to_string()))?;
    check_len_for(format_args!("{what}: gather output"), out.len(), needed)?;
    if needed == 0 {
        return Ok(());
    }
    let rows_per_task = GATHER_GRAIN.div_ceil(inner);
    let rows = outer * m;
    let source = |row: usize| (row / m * n + indices[row % m] as usize) * inner;
    par::for_each_chunk_mut(out, rows_per_task * inner, |ci, chunk| {
        for (r, dst) in chunk.chunks_mut(inner).enumerate() {
            let row = ci * rows_per_task + r;
            // The rows picked are scattered: ask for one a few rows ahead, so its
            // first lines (the hardware prefetchers follow the rest) are on their way
            // while this one is copied.
            if row + GATHER_AHEAD < rows {
                let ahead = source(row + GATHER_AHEAD);
                let lines = inner.min(GATHER_PREFETCH_BYTES / std::mem::size_of::<T>().max(1));
                crate::cpu::prefetch(&x[ahead..ahead + lines]);
            }
            let src = source(row);
            dst.copy_from_slice(&x[src..src + inner]);
        }
    });
    Ok(())
}

/// Adjoint of [`gather`]: `dx` (viewed `(outer, n, inner)`) is set to 0, then
/// `dx[o, indices[j], :] += dy[o, j, :]` for every `o` and `j`.
///
/// Deterministic for any thread count: tasks own fixed bands of at least
/// [`COPY_GRAIN`] elements of `dx` and each adds its rows' terms in increasing
/// `(o, j)`, exactly as a serial loop would. The terms are first sorted into the
/// bands by a stable counting sort, so no task scans the indices of the others.
///
/// # Errors
/// `IndexOutOfRange { what, position, value, limit: n }` for the first index outside
/// `[0, n)` (checked before anything is written); `ShapeMismatch` when `dy` is not
/// `outer * indices.len() * inner` long or `dx` not `outer * n * inner`.
pub fn scatter_add(
    what: &str,
    dy: &[f32],
    indices: &[i32],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [f32],
) -> Result<()> {
    let m = indices.len();
    let size = |a: usize, b: usize| {
        a.checked_mul(b)
            .and_then(|v| v.checked_mul(inner))
            .ok_or_else(|| invalid(what, "scatter_add size overflows".to_string()))
    };
    check_len_for(
        format_args!("{what}: scatter_add dy"),
        dy.len(),
        size(outer, m)?,
    )?;
    check_len_for(
        format_args!("{what}: scatter_add dx"),
        dx.len(),
        size(outer, n)?,
    )?;
    check_indices(what, indices, n)?;
    if dx.is_empty() {
        return Ok(());
    }
    let total_rows = outer * n;
    let rows_per_task = COPY_GRAIN.div_ceil(inner);
    let bands = total_rows.div_ceil(rows_per_task);
    let band_of = |e: usize| ((e / m) * n + indices[e % m] as usize) / rows_per_task;
    let terms_count = if bands > 1 { outer * m } else { 0 };
    // Per-thread scratch: a training step makes no heap allocation.
    with_index_scratch(terms_count + 2 * (bands + 1), |scratch| {
        // Counting sort of the terms `e = o * m + j` by band, stable: band b's
        // terms are terms[starts[b]..starts[b + 1]], in increasing e. One band
        // needs none.
        let (terms, rest) = scratch.split_at_mut(terms_count);
        let (starts, next) = rest.split_at_mut(bands + 1);
        if bands > 1 {
            starts.fill(0);
            for e in 0..outer * m {
                starts[band_of(e) + 1] += 1;
            }
            for b in 0..bands {
                starts[b + 1] += starts[b];
            }
            next.copy_from_slice(starts);
            for e in 0..outer * m {
                let slot = &mut next[band_of(e)];
                terms[*slot] = e;
                *slot += 1;
            }
        }
        let (terms, starts): (&[usize], &[usize]) = (terms, starts);
        par::for_each_chunk_mut(dx, rows_per_task * inner, |band, chunk| {
            chunk.fill(0.0);
            let r0 = band * rows_per_task;
            let mut add = |e: usize| {
                let row = (e / m) * n + indices[e % m] as usize - r0;
                let dst = &mut chunk[row * inner..(row + 1) * inner];
                for (d, s) in dst.iter_mut().zip(&dy[e * inner..(e + 1) * inner]) {
                    *d += *s;
                }
            };
            if bands == 1 {
                (0..outer * m).for_each(add);
            } else {
                terms[starts[band]..starts[band + 1]]
                    .iter()
                    .for_each(|&e| add(e));
            }
        });
    });
    Ok(())
}

/// One-hot encoding: `out` is `(indices.len(), depth)`, row `i` holding `on` at
/// column `indices[i]` and `off` elsewhere. An index outside `[0, depth)` gives a
/// row of `off` only, as `keras.ops.one_hot` and `tf.one_hot` do.
///
/// # Errors
/// `ShapeMismatch` when `out.len() != indices.len() * depth`; `InvalidArgument` when
/// that product overflows.
pub fn one_hot(indices: &[i32], depth: usize, on: f32, off: f32, out: &mut [f32]) -> Result<()> {
    let needed = indices
        .len()
        .checked_mul(depth)
        .ok_or_else(|| invalid("one_hot", "output size overflows".to_string()))?;
    check_len("one_hot output", out.len(), needed)?;
    if needed == 0 {
        return Ok(());
    }
    let rows_per_task = COPY_GRAIN.div_ceil(depth);
    par::for_each_chunk_mut(out, rows_per_task * depth, |ci, chunk| {
        for (r, row) in chunk.chunks_mut(depth).enumerate() {
            row.fill(off);
            let v = indices[ci * rows_per_task + r];
            if v >= 0 && (v as usize) < depth {
                row[v as usize] = on;
            }
        }
    });
    Ok(())
}

/// Casts float32 to int32 as NumPy's `astype(int32)` does for in-range values:
/// truncation toward zero. Every value is checked before anything is written.
///
/// # Errors
/// `InvalidArgument` naming the first position and value that is NaN, infinite or
/// outside the int32 range after truncation; `ShapeMismatch` when the lengths differ.
pub fn cast_f32_to_i32(what: &str, x: &[f32], out: &mut [i32]) -> Result<()> {
    check_len_for(format_args!("{what}: cast output"), out.len(), x.len())?;
    // -2^31 and 2^31 are exact in f32; every finite v in [-2^31, 2^31) truncates
    // into the int32 range. NaN is in no range.
    const LO: f32 = -2_147_483_648.0;
    const HI: f32 = 2_147_483_648.0;
    if let Some((position, v)) = x.iter().enumerate().find(|&(_, &v)| !(LO..HI).contains(&v)) {
        return Err(invalid(
            what,
            format!(
                "cannot cast {v} at position {position} to int32 (NaN, infinite or out of range)"
            ),
        ));
    }
    par::for_each_chunk_mut(out, COPY_GRAIN, |ci, chunk| {
        let src = &x[ci * COPY_GRAIN..ci * COPY_GRAIN + chunk.len()];
        for (o, &v) in chunk.iter_mut().zip(src) {
            *o = v as i32;
        }
    });
    Ok(())
}

/// Casts int32 to float32, rounding to nearest (exact for `|v| <= 2^24`), as NumPy.
///
/// # Errors
/// `ShapeMismatch` when the lengths differ.
pub fn cast_i32_to_f32(x: &[i32], out: &mut [f32]) -> Result<()> {
    check_len("cast output", out.len(), x.len())?;
    par::for_each_chunk_mut(out, COPY_GRAIN, |ci, chunk| {
        let src = &x[ci * COPY_GRAIN..ci * COPY_GRAIN + chunk.len()];
        for (o, &v) in chunk.iter_mut().zip(src) {
            *o = v as f32;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Row-major multi-index of linear position `i` in `shape`.
    fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        idx
    }

    fn ravel(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
    }

    /// Small deterministic values, exact in f32 and in f64 sums.
    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + salt * 104_729) % 17) as f32 - 8.0)
            .collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    }

    fn transpose_reference<T: Copy + Default>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let n: usize = shape.iter().product();
        let mut out = vec![T::default(); n];
        for (o, v) in out.iter_mut().enumerate() {
            let oi = unravel(o, &out_shape);
            let mut ii = vec![0; shape.len()];
            for k in 0..perm.len() {
                ii[perm[k]] = oi[k];
            }
            *v = x[ravel(&ii, shape)];
        }
        out
    }

    fn slice_reference(
        x: &[f32],
        shape: &[usize],
        begin: &[usize],
        step: &[usize],
        out_shape: &[usize],
    ) -> Vec<f32> {
        let n: usize = out_shape.iter().product();
        (0..n)
            .map(|o| {
                let oi = unravel(o, out_shape);
                let ii: Vec<usize> = (0..shape.len())
                    .map(|d| begin[d] + oi[d] * step[d])
                    .collect();
                x[ravel(&ii, shape)]
            })
            .collect()
    }

    fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        let dim = prop_oneof![Just(0usize), Just(1usize), 2..8usize];
        (0..=5usize).prop_flat_map(move |rank| {
            (
                proptest::collection::vec(dim.clone(), rank),
                Just((0..rank).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
    }

    fn shape_and_axis() -> impl Strategy<Value = (Vec<usize>, usize)> {
        (1..=4usize).prop_flat_map(|rank| (proptest::collection::vec(0..6usize, rank), 0..rank))
    }

    /// A random valid slice of a random shape: (shape, begin, step, out_shape).
    fn slice_case() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>)> {
        (0..=4usize)
            .prop_flat_map(|rank| {
                (
                    proptest::collection::vec(0..8usize, rank),
                    proptest::collection::vec((0..8usize, 1..4usize, 0..9usize), rank),
                )
            })
            .prop_map(|(shape, picks)| {
                let (mut begin, mut step, mut out) = (vec![], vec![], vec![]);
                for (&dim, &(b, s, n)) in shape.iter().zip(&picks) {
                    if dim == 0 {
                        begin.push(0);
                        step.push(s);
                        out.push(0);
                    } else {
                        let b = b % dim;
                        let max_n = (dim - b - 1) / s + 1;
                        begin.push(b);
                        step.push(s);
                        out.push(n % (max_n + 1));
                    }
                }
                (shape, begin, step, out)
            })
    }

    proptest! {
        #[test]
        fn transpose_forward_matches_reference((shape, perm) in shape_and_perm()) {
            let n: usize = shape.iter().product();
            let x = values(n, 1);
            let mut out = vec![f32::NAN; n];
            transpose(&x, &shape, &perm, &mut out).unwrap();
            prop_assert_eq!(out, transpose_reference(&x, &shape, &perm));

            let xi: Vec<i32> = (0..n as i32).collect();
            let mut outi = vec![-1i32; n];
            transpose(&xi, &shape, &perm, &mut outi).unwrap();
            prop_assert_eq!(outi, transpose_reference(&xi, &shape, &perm));
        }

        #[test]
        fn transpose_2d_around_the_tile_size(rows in 1..80usize, cols in 1..80usize) {
            let x: Vec<i32> = (0..(rows * cols) as i32).collect();
            let mut out = vec![0i32; rows * cols];
            transpose(&x, &[rows, cols], &[1, 0], &mut out).unwrap();
            prop_assert_eq!(out, transpose_reference(&x, &[rows, cols], &[1, 0]));
        }

        #[test]
        fn concat_split_round_trip((shape, axis) in shape_and_axis(), sizes in proptest::collection::vec(0..5usize, 1..4)) {
            let parts_shapes: Vec<Vec<usize>> = sizes
                .iter()
                .map(|&s| { let mut p = shape.clone(); p[axis] = s; p })
                .collect();
            let parts: Vec<Vec<f32>> = parts_shapes
                .iter()
                .enumerate()
                .map(|(i, s)| values(s.iter().product(), i + 1))
                .collect();
            let mut out_shape = shape.clone();
            out_shape[axis] = sizes.iter().sum();
            let n: usize = out_shape.iter().product();
            let inputs: Vec<(&[f32], &[usize])> =
                parts.iter().zip(&parts_shapes).map(|(b, s)| (b.as_slice(), s.as_slice())).collect();
            let mut out = vec![f32::NAN; n];
            concat(&inputs, axis, &mut out, &out_shape).unwrap();

            // Against the element-wise definition.
            for (o, &v) in out.iter().enumerate() {
                let mut idx = unravel(o, &out_shape);
                let mut part = 0;
                while idx[axis] >= sizes[part] {
                    idx[axis] -= sizes[part];
                    part += 1;
                }
                prop_assert_eq!(v, parts[part][ravel(&idx, &parts_shapes[part])]);
            }

            let mut back: Vec<Vec<f32>> = parts.iter().map(|p| vec![f32::NAN; p.len()]).collect();
            let mut outputs: Vec<(&mut [f32], &[usize])> =
                back.iter_mut().zip(&parts_shapes).map(|(b, s)| (b.as_mut_slice(), s.as_slice())).collect();
            split(&out, &out_shape, axis, &mut outputs).unwrap();
            prop_assert_eq!(back, parts);
        }

        #[test]
        fn strided_slice_forward_matches_reference((shape, begin, step, out_shape) in slice_case()) {
            let x = values(shape.iter().product(), 3);
            let mut out = vec![f32::NAN; out_shape.iter().product()];
            strided_slice(&x, &shape, &begin, &step, &mut out, &out_shape).unwrap();
            prop_assert_eq!(&out, &slice_reference(&x, &shape, &begin, &step, &out_shape));
        }

        #[test]
        fn strided_slice_grad_is_the_adjoint((shape, begin, step, out_shape) in slice_case()) {
            let x = values(shape.iter().product(), 4);
            let dy = values(out_shape.iter().product(), 5);
            let mut y = vec![0.0; dy.len()];
            strided_slice(&x, &shape, &begin, &step, &mut y, &out_shape).unwrap();
            let mut dx = vec![f32::NAN; x.len()];
            strided_slice_grad(&dy, &out_shape, &begin, &step, &mut dx, &shape).unwrap();
            prop_assert_eq!(dot(&y, &dy), dot(&x, &dx));
        }

        #[test]
        fn gather_forward_matches_reference(
            (shape, axis) in shape_and_axis(),
            raw in proptest::collection::vec(0..1000usize, 0..7),
        ) {
            let n = shape[axis];
            let indices: Vec<i32> = if n == 0 { vec![] } else { raw.iter().map(|&r| (r % n) as i32).collect() };
            let x = values(shape.iter().product(), 6);
            let outer: usize = shape[..axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            let m = indices.len();
            let mut out = vec![f32::NAN; outer * m * inner];
            gather("test", &x, &shape, axis, &indices, &mut out).unwrap();
            for o in 0..outer {
                for j in 0..m {
                    for k in 0..inner {
                        let want = x[(o * n + indices[j] as usize) * inner + k];
                        prop_assert_eq!(out[(o * m + j) * inner + k], want);
                    }
                }
            }

            // scatter_add is gather's adjoint: <gather(x), dy> == <x, scatter_add(dy)>.
            let dy = values(out.len(), 7);
            let mut dx = vec![f32::NAN; x.len()];
            scatter_add("test", &dy, &indices, outer, n, inner, &mut dx).unwrap();
            prop_assert_eq!(dot(&out, &dy), dot(&x, &dx));
        }
    }

    #[test]
    fn transpose_large_inputs_take_the_parallel_paths() {
        // Bigger than one task, in shapes that exercise each path of the kernel.
        let cases: [(&[usize], &[usize]); 6] = [
            (&[300, 517], &[1, 0]),
            (&[4, 33, 35, 17], &[0, 3, 1, 2]),
            (&[4, 17, 33, 35], &[0, 2, 3, 1]),
            (&[3, 40, 50, 30], &[3, 1, 0, 2]),
            (&[6, 50, 7, 40], &[2, 0, 1, 3]),
            (&[70000, 2], &[1, 0]),
        ];
        for (shape, perm) in cases {
            let n: usize = shape.iter().product();
            let x: Vec<i32> = (0..n as i32).collect();
            let mut out = vec![-1; n];
            transpose(&x, shape, perm, &mut out).unwrap();
            assert_eq!(
                out,
                transpose_reference(&x, shape, perm),
                "shape {shape:?} perm {perm:?}"
            );
        }
    }

    #[test]
    fn transpose_rejects_bad_arguments() {
        let x = [0.0f32; 6];
        let mut out = [0.0f32; 6];
        assert!(matches!(
            transpose(&x, &[2, 3], &[0, 0], &mut out),
            Err(KernelError::InvalidArgument { .. })
        ));
        assert!(matches!(
            transpose(&x, &[2, 3], &[0], &mut out),
            Err(KernelError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            transpose(&x, &[2, 3], &[1, 0], &mut out[..5]),
            Err(KernelError::ShapeMismatch { .. })
        ));
        let shape = [1usize; 9];
        let perm: Vec<usize> = (0..9).collect();
        assert!(matches!(
            transpose(&x[..1], &shape, &perm, &mut out[..1]),
            Err(KernelError::InvalidArgument { .. })
        ));
    }

    #[test]
    fn concat_rejects_mismatched_parts() {
        let a = [1.0f32; 6];
        let b = [2.0f32; 4];
        let mut out = [0.0f32; 10];
        // b's non-axis dim differs.
        let r = concat(
            &[(&a[..], &[2, 3][..]), (&b[..], &[2, 2][..])],
            0,
            &mut out,
            &[4, 3],
        );
        assert!(matches!(r, Err(KernelError::ShapeMismatch { .. })));
        let r = concat(
            &[(&a[..], &[2, 3][..]), (&b[..], &[2, 2][..])],
            1,
            &mut out,
            &[2, 5],
        );
        assert!(r.is_ok());
        assert_eq!(out, [1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 2.0, 2.0]);
        let r = concat::<f32>(&[], 0, &mut out[..0], &[0]);
        assert!(matches!(r, Err(KernelError::InvalidArgument { .. })));
    }

    #[test]
    fn strided_slice_rejects_reads_past_the_end() {
        let x = values(10, 0);
        let mut out = vec![0.0; 4];
        // 0, 3, 6, 9 fits; 1, 4, 7, 10 does not.
        assert!(strided_slice(&x, &[10], &[0], &[3], &mut out, &[4]).is_ok());
        let r = strided_slice(&x, &[10], &[1], &[3], &mut out, &[4]);
        assert!(matches!(r, Err(KernelError::InvalidArgument { .. })));
        let r = strided_slice(&x, &[10], &[0], &[0], &mut out, &[4]);
        assert!(matches!(r, Err(KernelError::InvalidArgument { .. })));
        let mut dx = vec![0.0; 10];
        let r = strided_slice_grad(&out, &[4], &[1], &[3], &mut dx, &[10]);
        assert!(matches!(r, Err(KernelError::InvalidArgument { .. })));
    }

    #[test]
    fn strided_slice_large_matches_reference() {
        let shape = [9, 130, 120];
        let (begin, step, out_shape) = ([1, 2, 3], [2, 1, 3], [4, 128, 39]);
        let x = values(shape.iter().product(), 9);
        let mut out = vec![0.0; out_shape.iter().product()];
        strided_slice(&x, &shape, &begin, &step, &mut out, &out_shape).unwrap();
        assert_eq!(out, slice_reference(&x, &shape, &begin, &step, &out_shape));
        let mut dx = vec![f32::NAN; x.len()];
        strided_slice_grad(&out, &out_shape, &begin, &step, &mut dx, &shape).unwrap();
        assert_eq!(dot(&out, &out), dot(&x, &dx));
    }

    #[test]
    fn pad_matches_reference() {
        for (shape, before, after) in [
            (vec![2, 3], vec![1, 0], vec![2, 2]),
            (vec![3, 1, 4], vec![0, 2, 1], vec![1, 0, 3]),
            (vec![], vec![], vec![]),
            (vec![0, 2], vec![1, 1], vec![0, 1]),
            (vec![2, 300, 200], vec![1, 2, 3], vec![1, 2, 3]),
        ] {
            let x = values(shape.iter().product(), 2);
            let out_shape: Vec<usize> = (0..shape.len())
                .map(|d| shape[d] + before[d] + after[d])
                .collect();
            let mut out = vec![f32::NAN; out_shape.iter().product()];
            pad(&x, &shape, &before, &after, -1.5, &mut out).unwrap();
            for (o, &v) in out.iter().enumerate() {
                let idx = unravel(o, &out_shape);
                let inside =
                    (0..shape.len()).all(|d| idx[d] >= before[d] && idx[d] - before[d] < shape[d]);
                let want = if inside {
                    let xi: Vec<usize> = (0..shape.len()).map(|d| idx[d] - before[d]).collect();
                    x[ravel(&xi, &shape)]
                } else {
                    -1.5
                };
                assert_eq!(v, want, "shape {shape:?} at {idx:?}");
            }
        }
    }

    #[test]
    fn gather_rejects_bad_indices_and_leaves_output_untouched() {
        let x = values(12, 0);
        for (indices, position, value) in [
            (vec![0, 2, -1, 5], 2, -1i64),
            (vec![1, 3], 1, 3),
            (vec![0, 1, 2, 7], 3, 7),
        ] {
            let mut out = vec![42.0f32; indices.len() * 4];
            let err = gather("embedding 'emb1'", &x, &[3, 4], 0, &indices, &mut out).unwrap_err();
            assert_eq!(
                err,
                KernelError::IndexOutOfRange {
                    what: "embedding 'emb1'".into(),
                    position,
                    value,
                    limit: 3
                }
            );
            assert!(err.to_string().contains("embedding 'emb1'"));
            assert!(out.iter().all(|&v| v == 42.0));

            let dy = vec![1.0f32; indices.len() * 4];
            let mut dx = vec![42.0f32; 12];
            let err = scatter_add("embedding 'emb1'", &dy, &indices, 1, 3, 4, &mut dx).unwrap_err();
            assert!(
                matches!(err, KernelError::IndexOutOfRange { position: p, value: v, .. } if p == position && v == value)
            );
            assert!(dx.iter().all(|&v| v == 42.0));
        }
    }

    #[test]
    fn scatter_add_large_matches_serial_accumulation_bitwise() {
        // Many repeated destination rows, bands crossing outer slices.
        let (outer, n, inner) = (3, 5000, 20);
        let indices: Vec<i32> = (0..4000i32).map(|j| (j * 37 + j / 3) % 97 * 50).collect();
        let m = indices.len();
        let dy: Vec<f32> = (0..outer * m * inner)
            .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let mut dx = vec![f32::NAN; outer * n * inner];
        scatter_add("test", &dy, &indices, outer, n, inner, &mut dx).unwrap();
        let mut want = vec![0.0f32; dx.len()];
        for o in 0..outer {
            for (j, &ix) in indices.iter().enumerate() {
                for k in 0..inner {
                    want[(o * n + ix as usize) * inner + k] += dy[(o * m + j) * inner + k];
                }
            }
        }
        assert!(dx
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()));

        let x = values(dx.len(), 1);
        let mut out = vec![0.0; dy.len()];
        gather("test", &x, &[outer, n, inner], 1, &indices, &mut out).unwrap();
        for o in 0..outer {
            for (j, &ix) in indices.iter().enumerate() {
                let got = &out[(o * m + j) * inner..(o * m + j + 1) * inner];
                let src = &x[(o * n + ix as usize) * inner..(o * n + ix as usize + 1) * inner];
                assert_eq!(got, src);
            }
        }
    }

    #[test]
    fn one_hot_sets_one_column_and_zeroes_out_of_range_rows() {
        let mut out = vec![9.0f32; 4 * 3];
        one_hot(&[0, 2, -1, 3], 3, 1.0, 0.0, &mut out).unwrap();
        assert_eq!(
            out,
            [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        let mut out = vec![0.0f32; 2 * 2];
        one_hot(&[1, 0], 2, 0.9, 0.1, &mut out).unwrap();
        assert_eq!(out, [0.1, 0.9, 0.9, 0.1]);
        assert!(one_hot(&[1, 0], 2, 1.0, 0.0, &mut out[..3]).is_err());
    }

    #[test]
    fn casts_truncate_toward_zero_and_refuse_nan() {
        let x = [1.9f32, -1.9, 0.0, -0.0, 2_147_483_520.0, -2_147_483_648.0];
        let mut out = [0i32; 6];
        cast_f32_to_i32("cast", &x, &mut out).unwrap();
        assert_eq!(out, [1, -1, 0, 0, 2_147_483_520, i32::MIN]);
        for bad in [f32::NAN, f32::INFINITY, 2_147_483_648.0, -2_147_483_904.0] {
            let mut out = [7i32; 3];
            let err = cast_f32_to_i32("layer 'c'", &[1.0, bad, 2.0], &mut out).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("layer 'c'") && msg.contains("position 1"),
                "{msg}"
            );
            assert_eq!(out, [7, 7, 7]);
        }
        let mut f = [0.0f32; 3];
        cast_i32_to_f32(&[-3, 16_777_217, 5], &mut f).unwrap();
        assert_eq!(f, [-3.0, 16_777_216.0, 5.0]);
    }
}
