//! A table lookup followed by a dense layer (`take` along the table's rows, then
//! `x W + b` and an activation), as an `Embedding` feeding a recurrent layer's
//! input projection: the backward products run once per distinct row of the
//! batch instead of once per index.
//!
//! Forward: the distinct rows, in order of first appearance, are gathered into
//! `gathered` (what the backward pass reads), and each index's output row is the
//! product of its distinct row, read in place, by the kernel. Backward: the
//! output gradient's rows are summed per distinct row (in index order), and the
//! kernel gradient and the gathered rows' gradient are products over the
//! distinct rows only, block by block of distinct rows while their sums are in
//! cache.
//!
//! When too few indices repeat for that to pay ([`worth_deduplicating`]), every
//! index is its own row. Either way the output is that of a `take` and a `dense`
//! bit for bit when the table is at most 256 wide (one K block on every GEMM
//! path; wider ones may round differently). Which path runs depends on the
//! indices alone; partitions may follow the thread count but never change what a
//! sum adds or in what order, so results are bitwise identical for any thread
//! count.

use crate::cpu;
use crate::error::{check_len, KernelError, Result};
use crate::gemm::{self, Epilogue, GatheredRows, MatMut, MatRef, PackedB, MIN_TASK_FLOPS};
use crate::layout;
use crate::par;
use crate::reduce::{self, Reduce};
use crate::scratch::{with_index_scratch, with_row_positions, with_scratch, Slot, NO_POSITION};

/// The sizes of one lookup-and-project: a `(table_rows, width)` table and a
/// `(width, units)` kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeDenseShape {
    pub table_rows: usize,
    pub width: usize,
    pub units: usize,
}

/// What [`take_distinct`] writes, for `n` indices.
pub struct LookupOutputs<'a> {
    /// `n`: the distinct table rows in order of first appearance, then the last of
    /// them repeated (so every entry is a valid row); or the indices themselves
    /// when they were not deduplicated.
    pub rows: &'a mut [i32],
    /// `n`: the position in `rows` of each index's row.
    pub positions: &'a mut [i32],
    /// `n x width`: the table rows of `rows` (zero past the distinct ones).
    pub gathered: &'a mut [f32],
}

/// What [`take_dense`] writes, for `n` indices.
pub struct TakeDenseOutputs<'a> {
    /// As [`LookupOutputs`].
    pub rows: &'a mut [i32],
    pub positions: &'a mut [i32],
    pub gathered: &'a mut [f32],
    /// `n x units`: the layer's output for each index.
    pub out: &'a mut [f32],
}

/// Whether `distinct` rows among `total` indices are worth the backward products
/// over the distinct rows only. A repeat saves `2 * width` flops per output
/// element in each of the two products (kernel gradient, input gradient), while
/// every index then costs an add of its gradient row, streamed through memory.
/// The factor 8 is the measured break-even on the text benchmarks: with it a
/// seventh of the indices repeating at width 64 (the ticket model's bodies) is
/// deduplicated, and the model trained 7% faster than with 12, which left them
/// plain (medians of 14 interleaved epochs). Tables narrower than 8 never pay.
pub fn worth_deduplicating(total: usize, distinct: usize, width: usize) -> bool {
    (total - distinct) * width >= REPEAT_BREAK_EVEN * total
}

/// See [`worth_deduplicating`].
const REPEAT_BREAK_EVEN: usize = 8;

/// The lookup half of [`take_dense`], for a reader that projects the rows itself
/// (a recurrent layer, step by step): the distinct rows of `indices` in a `(table_rows,
/// width)` table when enough repeat, each index's position among them, and those rows
/// gathered; fills `outputs` as documented there and returns the number of distinct
/// rows (`n` when every index is its own row).
///
/// # Errors
/// `IndexOutOfRange` for the first index outside the table; `ShapeMismatch` when a
/// buffer's length does not match the shape.
pub fn take_distinct(
    table_rows: usize,
    width: usize,
    table: &[f32],
    indices: &[i32],
    outputs: LookupOutputs,
) -> Result<usize> {
    let n = indices.len();
    let LookupOutputs {
        rows,
        positions,
        gathered,
    } = outputs;
    check_len("take_dense table", table.len(), table_rows * width)?;
    check_len("take_dense rows", rows.len(), n)?;
    check_len("take_dense positions", positions.len(), n)?;
    check_len("take_dense gathered rows", gathered.len(), n * width)?;
    if n > i32::MAX as usize {
        return Err(KernelError::InvalidArgument {
            what: "take_dense".to_string(),
            message: format!("{n} indices are too many to number"),
        });
    }
    // A table too narrow to pay even with a single distinct row skips the search.
    let mut distinct = if worth_deduplicating(n, n.min(1), width) {
        distinct_rows(indices, table_rows, rows, positions)?
    } else {
        n
    };
    if distinct == n || !worth_deduplicating(n, distinct, width) {
        rows.copy_from_slice(indices);
        for (i, p) in positions.iter_mut().enumerate() {
            *p = i as i32;
        }
        distinct = n;
    }
    if let Some(&last) = rows[..distinct].last() {
        rows[distinct..].fill(last);
    }
    let (used, unused) = gathered.split_at_mut(distinct * width);
    // Named as the lookup's own errors are, which these replace.
    layout::gather(
        "take",
        table,
        &[table_rows, width],
        0,
        &rows[..distinct],
        used,
    )?;
    unused.fill(0.0);
    Ok(distinct)
}

/// `out[i] = epilogue(table[indices[i]] · kernel)` for every index, through the
/// distinct rows when enough repeat; fills `outputs` as documented there.
///
/// # Errors
/// `IndexOutOfRange` for the first index outside the table; `ShapeMismatch` when a
/// buffer's length does not match the shape.
pub fn take_dense(
    shape: TakeDenseShape,
    table: &[f32],
    indices: &[i32],
    kernel: &[f32],
    epilogue: &Epilogue,
    outputs: TakeDenseOutputs,
) -> Result<()> {
    let TakeDenseShape {
        table_rows,
        width,
        units,
    } = shape;
    let n = indices.len();
    let TakeDenseOutputs {
        rows,
        positions,
        gathered,
        out,
    } = outputs;
    check_len("take_dense kernel", kernel.len(), width * units)?;
    check_len("take_dense output", out.len(), n * units)?;
    let lookup = LookupOutputs {
        rows,
        positions: &mut *positions,
        gathered: &mut *gathered,
    };
    let distinct = take_distinct(table_rows, width, table, indices, lookup)?;
    let used = &gathered[..distinct * width];
    let product = |dst: &mut [f32]| {
        gemm::sgemm(
            1.0,
            MatRef::row_major(used, distinct, width)?,
            MatRef::row_major(kernel, width, units)?,
            0.0,
            MatMut::row_major(dst, distinct, units)?,
            epilogue,
        )
    };
    if distinct == n {
        return product(out);
    }
    product_by_position(shape, used, positions, kernel, epilogue, out)
}

/// `out[i] = epilogue(used[positions[i]] · kernel)`, reading each index's
/// distinct row in place: computing the distinct rows' products once and copying
/// each index's out measured slower (the copies stream the whole output through
/// memory a second time, and cost more than the products they save).
fn product_by_position(
    shape: TakeDenseShape,
    used: &[f32],
    positions: &[i32],
    kernel: &[f32],
    epilogue: &Epilogue,
    out: &mut [f32],
) -> Result<()> {
    let TakeDenseShape { width, units, .. } = shape;
    if out.is_empty() {
        return Ok(());
    }
    let level = cpu::active();
    let b = MatRef::row_major(kernel, width, units)?;
    with_scratch(
        Slot::PackedKernel,
        PackedB::buffer_len(level, width, units),
        |buf| {
            let packed = PackedB::new(level, b, buf)?;
            // From the shape alone: a row's result does not depend on the split.
            let per_task = (MIN_TASK_FLOPS / (2 * width * units).max(1)).max(1);
            par::try_for_each_chunk_mut(out, per_task * units, |t, part| {
                let (r0, rows) = (t * per_task, part.len() / units);
                let a = GatheredRows {
                    source: used,
                    rows,
                    taps: 1,
                    width,
                    offsets: |i: usize, o: &mut [usize]| {
                        for (j, at) in o.iter_mut().enumerate() {
                            *at = positions[r0 + i + j] as usize * width;
                        }
                    },
                };
                gemm::sgemm_gathered(
                    &a,
                    &packed,
                    0.0,
                    MatMut::row_major(part, rows, units)?,
                    epilogue,
                )
            })
        },
    )
}

/// Writes the distinct rows of `indices` (first appearance order) into `rows` and
/// each index's position among them into `positions`; returns how many there are.
fn distinct_rows(
    indices: &[i32],
    table_rows: usize,
    rows: &mut [i32],
    positions: &mut [i32],
) -> Result<usize> {
    with_row_positions(table_rows, |position_of| {
        find_distinct(indices, table_rows, position_of, rows, positions)
    })
}

/// [`distinct_rows`] with the table of positions (all [`NO_POSITION`] on entry and on return).
fn find_distinct(
    indices: &[i32],
    table_rows: usize,
    position_of: &mut [u32],
    rows: &mut [i32],
    positions: &mut [i32],
) -> Result<usize> {
    let mut distinct = 0;
    let mut bad = None;
    for (at, (&index, position)) in indices.iter().zip(positions.iter_mut()).enumerate() {
        if index < 0 || index as usize >= table_rows {
            bad = Some((at, index));
            break;
        }
        let slot = &mut position_of[index as usize];
        if *slot == NO_POSITION {
            *slot = distinct as u32;
            rows[distinct] = index;
            distinct += 1;
        }
        *position = *slot as i32;
    }
    for &r in &rows[..distinct] {
        position_of[r as usize] = NO_POSITION;
    }
    match bad {
        // Named as the lookup's own error is, which it replaces.
        Some((position, index)) => Err(KernelError::IndexOutOfRange {
            what: "take".to_string(),
            position,
            value: i64::from(index),
            limit: table_rows,
        }),
        None => Ok(distinct),
    }
}

/// What [`take_dense_grad`] writes, for `n` indices.
pub struct TakeDenseGrads<'a> {
    /// `n x width`: the gradient of each gathered row (zero past the distinct
    /// ones; the table's gradient is its scatter-add by `rows`).
    pub d_gathered: &'a mut [f32],
    /// `width x units`.
    pub d_kernel: &'a mut [f32],
    /// `units`: the bias's gradient, the column sums of `dz`; `None` without a bias.
    pub d_bias: Option<&'a mut [f32]>,
}

/// The adjoint of [`take_dense`] before its epilogue's activation: from `dz` (`n x
/// units`, the gradient of each index's pre-activation output), the `positions`
/// and `gathered` rows it wrote and the kernel, fills `grads` as documented there.
/// `shape.table_rows` is not read.
///
/// # Errors
/// `ShapeMismatch` when a buffer's length does not match; `IndexOutOfRange` for a
/// position outside `0..n`.
pub fn take_dense_grad(
    shape: TakeDenseShape,
    dz: &[f32],
    positions: &[i32],
    gathered: &[f32],
    kernel: &[f32],
    grads: TakeDenseGrads,
) -> Result<()> {
    let TakeDenseShape { width, units, .. } = shape;
    let n = positions.len();
    check_len("take_dense_grad dz", dz.len(), n * units)?;
    check_len("take_dense_grad gathered rows", gathered.len(), n * width)?;
    check_len("take_dense_grad kernel", kernel.len(), width * units)?;
    check_len(
        "take_dense_grad row gradient",
        grads.d_gathered.len(),
        n * width,
    )?;
    check_len(
        "take_dense_grad kernel gradient",
        grads.d_kernel.len(),
        width * units,
    )?;
    if let Some(d_bias) = grads.d_bias.as_deref() {
        check_len("take_dense_grad bias gradient", d_bias.len(), units)?;
    }
    let mut distinct = 0;
    let mut in_order = true;
    // Whether each position first appears after all smaller ones, as `take_dense`
    // numbers them: then a sum can start as a copy of its first row.
    let mut numbered_in_order = true;
    for (at, &p) in positions.iter().enumerate() {
        if p < 0 || p as usize >= n {
            return Err(KernelError::IndexOutOfRange {
                what: "take_dense_grad".to_string(),
                position: at,
                value: i64::from(p),
                limit: n,
            });
        }
        numbered_in_order &= p as usize <= distinct;
        distinct = distinct.max(p as usize + 1);
        in_order &= p as usize == at;
    }
    if in_order {
        return grads_per_index(shape, n, dz, gathered, kernel, grads);
    }
    let blocks = RowBlocks::new(distinct, units);
    blocked_grads(
        shape,
        dz,
        positions,
        gathered,
        kernel,
        blocks,
        numbered_in_order,
        grads,
    )
}

/// [`take_dense_grad`] when each of the `n` indices is its own row: the products
/// read `dz` and the gathered rows as they are.
fn grads_per_index(
    shape: TakeDenseShape,
    n: usize,
    dz: &[f32],
    gathered: &[f32],
    kernel: &[f32],
    grads: TakeDenseGrads,
) -> Result<()> {
    let TakeDenseShape { width, units, .. } = shape;
    let none = Epilogue::default();
    let dz_matrix = MatRef::row_major(dz, n, units)?;
    gemm::sgemm(
        1.0,
        dz_matrix,
        MatRef::row_major(kernel, width, units)?.t(),
        0.0,
        MatMut::row_major(grads.d_gathered, n, width)?,
        &none,
    )?;
    gemm::sgemm(
        1.0,
        MatRef::row_major(gathered, n, width)?.t(),
        dz_matrix,
        0.0,
        MatMut::row_major(grads.d_kernel, width, units)?,
        &none,
    )?;
    match grads.d_bias {
        Some(d_bias) => reduce::reduce(Reduce::Sum, dz, &[n, units], &[0], d_bias),
        None => Ok(()),
    }
}

/// Floats of summed gradient rows per block of [`blocked_grads`]: a block's sums
/// stay in L2 while both of its products read them.
const BLOCK_FLOATS: usize = 1 << 16;
/// Most blocks per call (their jobs are held in a stack array).
const MAX_BLOCKS: usize = 64;
/// Gradient rows fetched ahead while a block sums them (they lie scattered).
const ROWS_AHEAD: usize = 4;

/// The distinct rows `0..rows` cut into `count` blocks of `per_block` (the last may
/// be shorter), from the number of rows and their width alone.
#[derive(Clone, Copy)]
struct RowBlocks {
    rows: usize,
    per_block: usize,
    count: usize,
}

impl RowBlocks {
    fn new(rows: usize, units: usize) -> Self {
        let target = (BLOCK_FLOATS / units.max(1)).max(16);
        let count = rows.div_ceil(target).clamp(1, MAX_BLOCKS);
        let per_block = rows.div_ceil(count).max(1);
        RowBlocks {
            rows,
            per_block,
            count: rows.div_ceil(per_block),
        }
    }

    fn of(&self, position: usize) -> usize {
        position / self.per_block
    }

    fn range(&self, block: usize) -> std::ops::Range<usize> {
        let first = block * self.per_block;
        first..(first + self.per_block).min(self.rows)
    }
}

/// One block's job: its index, its rows of the gathered rows' gradient, and its
/// partial kernel (then bias) gradient.
type BlockJob<'a> = Option<(usize, &'a mut [f32], &'a mut [f32])>;

/// [`take_dense_grad`] when indices share rows: block by block of distinct rows,
/// the block's gradient rows are summed (each from its indices in index order,
/// bucketed by block beforehand) and, while in cache, multiplied by the kernel
/// into the block's rows of `d_gathered` and by the block's gathered rows into a
/// partial kernel gradient (and summed into a partial bias gradient); the
/// partials are then added in block order. Summing all rows first and running
/// the two products over the whole batch read the sums from memory twice more
/// and, on several threads, streamed every gradient row through each of them.
/// The blocks follow from the distinct rows' count and width, never from the
/// thread count.
#[allow(clippy::too_many_arguments)]
fn blocked_grads(
    shape: TakeDenseShape,
    dz: &[f32],
    positions: &[i32],
    gathered: &[f32],
    kernel: &[f32],
    blocks: RowBlocks,
    numbered_in_order: bool,
    grads: TakeDenseGrads,
) -> Result<()> {
    let TakeDenseShape { width, units, .. } = shape;
    let TakeDenseGrads {
        d_gathered,
        d_kernel,
        d_bias,
    } = grads;
    let n = positions.len();
    let (used, unused) = d_gathered.split_at_mut(blocks.rows * width);
    unused.fill(0.0);
    let partial_len = width * units + units;
    with_index_scratch(n + blocks.count + 1, |scratch| {
        let (order, starts) = scratch.split_at_mut(n);
        bucket_by_block(positions, blocks, starts, order);
        let (order, starts): (&[usize], &[usize]) = (order, starts);
        with_scratch(Slot::Partials, blocks.count * partial_len, |partials| {
            let mut jobs: [BlockJob; MAX_BLOCKS] = std::array::from_fn(|_| None);
            let (mut rows_left, mut partials_left) = (&mut *used, &mut *partials);
            for (b, job) in jobs.iter_mut().enumerate().take(blocks.count) {
                let len = blocks.range(b).len() * width;
                let (rows, rest) = std::mem::take(&mut rows_left).split_at_mut(len);
                let (partial, more) = std::mem::take(&mut partials_left).split_at_mut(partial_len);
                *job = Some((b, rows, partial));
                (rows_left, partials_left) = (rest, more);
            }
            let failure = std::sync::Mutex::new(None);
            par::for_each_chunk_mut(&mut jobs[..blocks.count], 1, |_, job| {
                let Some((b, d_rows, partial)) = job[0].take() else {
                    return;
                };
                let range = blocks.range(b);
                let list = &order[starts[b]..starts[b + 1]];
                let mut run = move || {
                    with_scratch(Slot::DistinctRows, range.len() * units, |sums| {
                        sum_block(
                            dz,
                            positions,
                            list,
                            range.start,
                            units,
                            numbered_in_order,
                            sums,
                        );
                        let block_rows = &gathered[range.start * width..range.end * width];
                        block_products(shape, sums, block_rows, kernel, d_rows, partial)
                    })
                };
                // The blocks are the parallelism; one block may split its products.
                let result = if blocks.count > 1 {
                    par::serially(run)
                } else {
                    run()
                };
                if let Err(e) = result {
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            });
            if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
                return Err(e);
            }
            let mut parts = partials.chunks_exact(partial_len);
            let first = parts.next().expect("at least one block");
            d_kernel.copy_from_slice(&first[..width * units]);
            for part in parts {
                for (d, &v) in d_kernel.iter_mut().zip(part) {
                    *d += v;
                }
            }
            if let Some(d_bias) = d_bias {
                d_bias.copy_from_slice(&first[width * units..]);
                for part in partials.chunks_exact(partial_len).skip(1) {
                    for (d, &v) in d_bias.iter_mut().zip(&part[width * units..]) {
                        *d += v;
                    }
                }
            }
            Ok(())
        })
    })
}

/// Buckets the indices by the block of their position: block `b`'s indices, in
/// index order, are `order[starts[b]..starts[b + 1]]` (a counting sort).
fn bucket_by_block(
    positions: &[i32],
    blocks: RowBlocks,
    starts: &mut [usize],
    order: &mut [usize],
) {
    starts.fill(0);
    for &p in positions {
        starts[blocks.of(p as usize) + 1] += 1;
    }
    for b in 0..blocks.count {
        starts[b + 1] += starts[b];
    }
    let mut next: [usize; MAX_BLOCKS] = [0; MAX_BLOCKS];
    next[..blocks.count].copy_from_slice(&starts[..blocks.count]);
    for (i, &p) in positions.iter().enumerate() {
        let b = blocks.of(p as usize);
        order[next[b]] = i;
        next[b] += 1;
    }
}

/// `sums[p - first] = sum of dz[i] over the indices i in `list` at position p`, in
/// index order. When the positions are `numbered_in_order` (each first appears
/// after all smaller ones), a sum starts as a copy of its first row, sparing a
/// pass that zeroes `sums`.
fn sum_block(
    dz: &[f32],
    positions: &[i32],
    list: &[usize],
    first: usize,
    units: usize,
    numbered_in_order: bool,
    sums: &mut [f32],
) {
    // The first position not yet written.
    let mut fresh = if numbered_in_order {
        first
    } else {
        sums.fill(0.0);
        usize::MAX
    };
    for (j, &i) in list.iter().enumerate() {
        if let Some(&ahead) = list.get(j + ROWS_AHEAD) {
            cpu::prefetch(&dz[ahead * units..(ahead + 1) * units]);
        }
        let p = positions[i] as usize;
        let row = &dz[i * units..(i + 1) * units];
        let dst = &mut sums[(p - first) * units..(p - first + 1) * units];
        if p == fresh {
            dst.copy_from_slice(row);
            fresh += 1;
        } else {
            for (d, &g) in dst.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

/// One block's products: `d_rows = sums · kernelᵀ`, and into `partial` the kernel
/// gradient `rowsᵀ · sums` followed by the bias gradient (the column sums of `sums`).
fn block_products(
    shape: TakeDenseShape,
    sums: &[f32],
    rows: &[f32],
    kernel: &[f32],
    d_rows: &mut [f32],
    partial: &mut [f32],
) -> Result<()> {
    let TakeDenseShape { width, units, .. } = shape;
    let count = sums.len() / units.max(1);
    let none = Epilogue::default();
    let sums_matrix = MatRef::row_major(sums, count, units)?;
    let k = MatRef::row_major(kernel, width, units)?;
    gemm::sgemm(
        1.0,
        sums_matrix,
        k.t(),
        0.0,
        MatMut::row_major(d_rows, count, width)?,
        &none,
    )?;
    let (d_kernel, d_bias) = partial.split_at_mut(width * units);
    gemm::sgemm(
        1.0,
        MatRef::row_major(rows, count, width)?.t(),
        sums_matrix,
        0.0,
        MatMut::row_major(d_kernel, width, units)?,
        &none,
    )?;
    reduce::reduce(Reduce::Sum, sums, &[count, units], &[0], d_bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001;
                h as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[derive(Debug)]
    struct Case {
        shape: TakeDenseShape,
        table: Vec<f32>,
        kernel: Vec<f32>,
        bias: Vec<f32>,
        indices: Vec<i32>,
    }

    struct Forward {
        rows: Vec<i32>,
        positions: Vec<i32>,
        gathered: Vec<f32>,
        out: Vec<f32>,
    }

    impl Case {
        fn new(table_rows: usize, width: usize, units: usize, indices: Vec<i32>) -> Self {
            Case {
                shape: TakeDenseShape {
                    table_rows,
                    width,
                    units,
                },
                table: values(table_rows * width, 1),
                kernel: values(width * units, 2),
                bias: values(units, 3),
                indices,
            }
        }

        fn forward(&self) -> Result<Forward> {
            let n = self.indices.len();
            let s = self.shape;
            let mut f = Forward {
                rows: vec![-7; n],
                positions: vec![-7; n],
                gathered: vec![f32::NAN; n * s.width],
                out: vec![f32::NAN; n * s.units],
            };
            let relu = |row: &mut [f32]| row.iter_mut().for_each(|x| *x = x.max(0.0));
            let epilogue = Epilogue {
                bias: Some(&self.bias),
                activation: Some(&relu),
            };
            take_dense(
                s,
                &self.table,
                &self.indices,
                &self.kernel,
                &epilogue,
                TakeDenseOutputs {
                    rows: &mut f.rows,
                    positions: &mut f.positions,
                    gathered: &mut f.gathered,
                    out: &mut f.out,
                },
            )?;
            Ok(f)
        }

        /// The unfused computation: every index's row gathered, then one product.
        fn plain_forward(&self) -> Vec<f32> {
            let s = self.shape;
            let n = self.indices.len();
            let mut x = vec![0.0; n * s.width];
            layout::gather(
                "t",
                &self.table,
                &[s.table_rows, s.width],
                0,
                &self.indices,
                &mut x,
            )
            .unwrap();
            let mut y = vec![0.0; n * s.units];
            let relu = |row: &mut [f32]| row.iter_mut().for_each(|x| *x = x.max(0.0));
            let epilogue = Epilogue {
                bias: Some(&self.bias),
                activation: Some(&relu),
            };
            gemm::sgemm(
                1.0,
                MatRef::row_major(&x, n, s.width).unwrap(),
                MatRef::row_major(&self.kernel, s.width, s.units).unwrap(),
                0.0,
                MatMut::row_major(&mut y, n, s.units).unwrap(),
                &epilogue,
            )
            .unwrap();
            y
        }
    }

    /// Runs the backward pass of `case` (forward `f`) on fixed output gradients and
    /// checks the table's, kernel's and bias's gradients against float64 sums;
    /// also checks the gradients are bitwise those of one thread.
    fn backward_matches_float64(case: &Case, f: &Forward) -> bool {
        let s = case.shape;
        let n = case.indices.len();
        let dz = values(n * s.units, 4);
        let run = || {
            let mut d_gathered = vec![f32::NAN; n * s.width];
            let mut d_kernel = vec![f32::NAN; s.width * s.units];
            let mut d_bias = vec![f32::NAN; s.units];
            take_dense_grad(
                s,
                &dz,
                &f.positions,
                &f.gathered,
                &case.kernel,
                TakeDenseGrads {
                    d_gathered: &mut d_gathered,
                    d_kernel: &mut d_kernel,
                    d_bias: Some(&mut d_bias),
                },
            )
            .unwrap();
            (d_gathered, d_kernel, d_bias)
        };
        let (d_gathered, d_kernel, d_bias) = run();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let one_thread = par::serially(run);
        if bits(&d_gathered) != bits(&one_thread.0)
            || bits(&d_kernel) != bits(&one_thread.1)
            || bits(&d_bias) != bits(&one_thread.2)
        {
            return false;
        }
        // The table's gradient: d_gathered scattered by rows, against float64.
        let mut d_table = vec![0.0f32; s.table_rows * s.width];
        layout::scatter_add(
            "t",
            &d_gathered,
            &f.rows,
            1,
            s.table_rows,
            s.width,
            &mut d_table,
        )
        .unwrap();
        let mut want_table = vec![0.0f64; s.table_rows * s.width];
        let mut want_kernel = vec![0.0f64; s.width * s.units];
        for (i, &index) in case.indices.iter().enumerate() {
            let r = index as usize;
            for k in 0..s.width {
                for j in 0..s.units {
                    let g = f64::from(dz[i * s.units + j]);
                    want_table[r * s.width + k] += g * f64::from(case.kernel[k * s.units + j]);
                    want_kernel[k * s.units + j] += g * f64::from(case.table[r * s.width + k]);
                }
            }
        }
        let want_bias: Vec<f64> = (0..s.units)
            .map(|j| (0..n).map(|i| f64::from(dz[i * s.units + j])).sum())
            .collect();
        let close = |got: &[f32], want: &[f64]| {
            got.iter()
                .zip(want)
                .all(|(&g, &w)| (f64::from(g) - w).abs() <= 1e-4 * (1.0 + w.abs()))
        };
        close(&d_table, &want_table) && close(&d_kernel, &want_kernel) && close(&d_bias, &want_bias)
    }

    /// Batches with enough distinct rows for several blocks of the backward pass
    /// (and, at the widest, more than `MAX_BLOCKS` blocks' worth).
    #[test]
    fn many_distinct_rows_take_several_blocks() {
        for (table_rows, units, n) in [(3000, 128, 4000), (900, 1024, 1500), (2000, 4096, 2400)] {
            let mut state = 12345u64;
            let indices = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % table_rows as u64) as i32
                })
                .collect();
            let case = Case::new(table_rows, 32, units, indices);
            let f = case.forward().unwrap();
            let distinct = f
                .positions
                .iter()
                .map(|&p| p as usize + 1)
                .max()
                .unwrap_or(0);
            let blocks = RowBlocks::new(distinct, units);
            assert!(
                blocks.count > 1 && distinct < n,
                "{table_rows} {units} {n}: {distinct}"
            );
            // The widest case needs more than MAX_BLOCKS blocks of the target size.
            let enlarged = blocks.per_block > (BLOCK_FLOATS / units).max(16);
            assert_eq!(
                enlarged,
                units == 4096,
                "{distinct} rows in {}",
                blocks.count
            );
            assert!(
                backward_matches_float64(&case, &f),
                "{table_rows} {units} {n}"
            );
        }
    }

    fn case_strategy() -> impl Strategy<Value = Case> {
        (1usize..24, 1usize..20, 1usize..40, 0usize..70).prop_flat_map(
            |(table_rows, width, units, n)| {
                prop::collection::vec(0..table_rows as i32, n)
                    .prop_map(move |indices| Case::new(table_rows, width, units, indices))
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The output is bitwise the unfused one (a row's product does not depend on
        /// which rows are computed with it); `rows` and `positions` describe the
        /// indices; the gradients match float64 sums.
        #[test]
        fn matches_take_then_dense(case in case_strategy()) {
            let s = case.shape;
            let n = case.indices.len();
            let f = case.forward().unwrap();
            prop_assert_eq!(&f.out, &case.plain_forward());
            for (i, &index) in case.indices.iter().enumerate() {
                prop_assert_eq!(f.rows[f.positions[i] as usize], index);
                let row = &f.gathered[f.positions[i] as usize * s.width..][..s.width];
                prop_assert_eq!(row, &case.table[index as usize * s.width..][..s.width]);
            }
            let distinct = f.positions.iter().map(|&p| p as usize + 1).max().unwrap_or(0);
            let mut seen = std::collections::HashSet::new();
            prop_assert!(case.indices.iter().all(|i| f.rows[..distinct].contains(i)));
            prop_assert!(f.rows[..distinct].iter().all(|r| seen.insert(*r)) || distinct == n);
            prop_assert!(f.gathered[distinct * s.width..].iter().all(|&x| x == 0.0));

            prop_assert!(backward_matches_float64(&case, &f));
        }
    }

    /// Many repeats take the distinct path; none, or too few, the plain one.
    #[test]
    fn deduplicates_only_when_repeats_pay() {
        let many = Case::new(10, 16, 8, (0..200).map(|i| i % 10).collect());
        let f = many.forward().unwrap();
        assert_eq!(&f.rows[..10], &(0..10).collect::<Vec<_>>()[..]);
        assert!(f.rows[10..].iter().all(|&r| r == 9));
        assert_eq!(f.positions, many.indices);
        let few = Case::new(300, 16, 8, (0..200).map(|i| i % 199).collect());
        assert!(!worth_deduplicating(200, 199, 16));
        let f = few.forward().unwrap();
        assert_eq!(f.rows, few.indices);
        assert_eq!(f.positions, (0..200).collect::<Vec<_>>());
    }

    /// Positions not numbered in order of first appearance (which `take_dense`
    /// never writes, but a caller may pass) still sum each position's rows.
    #[test]
    fn positions_in_any_order_sum_their_rows() {
        let (width, units) = (3, 2);
        let s = TakeDenseShape {
            table_rows: 0,
            width,
            units,
        };
        let positions = [1, 0, 1, 0, 2];
        let gathered = values(5 * width, 5);
        let kernel = values(width * units, 6);
        let dz = values(5 * units, 7);
        let (mut dg, mut dk, mut db) = (vec![0.0; 5 * width], vec![0.0; width * units], [0.0; 2]);
        take_dense_grad(
            s,
            &dz,
            &positions,
            &gathered,
            &kernel,
            TakeDenseGrads {
                d_gathered: &mut dg,
                d_kernel: &mut dk,
                d_bias: Some(&mut db),
            },
        )
        .unwrap();
        for k in 0..width {
            for j in 0..units {
                let want: f64 = (0..5)
                    .map(|i| {
                        let row = positions[i] as usize;
                        f64::from(gathered[row * width + k]) * f64::from(dz[i * units + j])
                    })
                    .sum();
                assert!((f64::from(dk[k * units + j]) - want).abs() < 1e-5);
            }
        }
        for p in 0..3 {
            for k in 0..width {
                let want: f64 = (0..5)
                    .filter(|&i| positions[i] == p as i32)
                    .map(|i| {
                        (0..units)
                            .map(|j| {
                                f64::from(dz[i * units + j]) * f64::from(kernel[k * units + j])
                            })
                            .sum::<f64>()
                    })
                    .sum();
                assert!((f64::from(dg[p * width + k]) - want).abs() < 1e-5);
            }
        }
        assert!(dg[3 * width..].iter().all(|&x| x == 0.0));
        for j in 0..units {
            let want: f64 = (0..5).map(|i| f64::from(dz[i * units + j])).sum();
            assert!((f64::from(db[j]) - want).abs() < 1e-5);
        }
    }

    #[test]
    fn bad_indices_and_lengths_are_errors() {
        // (position, value, limit) of the index error a case's forward pass gives.
        let index_error = |case: Case| match case.forward() {
            Err(KernelError::IndexOutOfRange {
                position,
                value,
                limit,
                ..
            }) => (position, value, limit),
            other => panic!(
                "expected an index error, got {other:?}",
                other = other.err()
            ),
        };
        assert_eq!(index_error(Case::new(5, 3, 2, vec![0, 4, 5, 1])), (2, 5, 5));
        assert_eq!(
            index_error(Case::new(5, 16, 2, vec![0, 0, 0, -1])),
            (3, -1, 5)
        );
        // The rows seen before the bad index are forgotten: a later call starts afresh.
        let after = Case::new(5, 16, 2, vec![0, 0, 3, 0, 0, 0, 0, 0]);
        let f = after.forward().unwrap();
        assert_eq!(&f.rows[..2], &[0, 3]);
        assert_eq!(f.positions, vec![0, 0, 1, 0, 0, 0, 0, 0]);
        let case = Case::new(5, 3, 2, vec![0, 1]);
        let s = case.shape;
        let mut dg = vec![0.0; 2 * 3];
        let mut dk = vec![0.0; 3 * 2];
        fn grads<'a>(d_gathered: &'a mut [f32], d_kernel: &'a mut [f32]) -> TakeDenseGrads<'a> {
            TakeDenseGrads {
                d_gathered,
                d_kernel,
                d_bias: None,
            }
        }
        let err = take_dense_grad(
            s,
            &[0.0; 4],
            &[0, 2],
            &[0.0; 6],
            &case.kernel,
            grads(&mut dg, &mut dk),
        );
        assert!(matches!(
            err,
            Err(KernelError::IndexOutOfRange { position: 1, .. })
        ));
        let err = take_dense_grad(
            s,
            &[0.0; 3],
            &[0, 1],
            &[0.0; 6],
            &case.kernel,
            grads(&mut dg, &mut dk),
        );
        assert!(matches!(err, Err(KernelError::ShapeMismatch { .. })));
        let mut db = [0.0; 3];
        let err = take_dense_grad(
            s,
            &[0.0; 4],
            &[0, 1],
            &[0.0; 6],
            &case.kernel,
            TakeDenseGrads {
                d_gathered: &mut dg,
                d_kernel: &mut dk,
                d_bias: Some(&mut db),
            },
        );
        assert!(matches!(err, Err(KernelError::ShapeMismatch { .. })));
    }
}
