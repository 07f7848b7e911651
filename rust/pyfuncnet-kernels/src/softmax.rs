//! Softmax and log-softmax along one axis, their gradients, and the fused
//! softmax / sigmoid cross-entropy losses.
//!
//! An array is viewed as `(outer, n, inner)` with the softmax taken over `n`.
//! `inner == 1` (the last axis) runs one contiguous row at a time; otherwise the
//! `(n, inner)` block of each outer index is processed in column tiles with stack
//! accumulators. Row sums are accumulated in f64. Work is split over outer rows in
//! tasks whose size depends only on the problem size, and every row is computed by
//! one task in one order, so results are bitwise identical for any thread count.

use crate::cpu::{self, SimdBody, SimdLevel};
use crate::error::{check_len, KernelError, Result};
use crate::par;
use crate::unary::sigmoid;
use crate::vmath;

/// Column tile of the `inner > 1` path (width of the stack accumulators).
const TILE: usize = 256;
/// Elements below which a kernel stays on the calling thread (an `exp` each).
const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task.
const TASK_ELEMS: usize = 1 << 14;
/// Most parallel tasks per call (their output slices are held in a stack array).
const MAX_TASKS: usize = 64;

/// Checks `outer * n * inner` against every given length.
fn check_view(
    what: &str,
    outer: usize,
    n: usize,
    inner: usize,
    lens: &[(&str, usize)],
) -> Result<usize> {
    let total = outer
        .checked_mul(n)
        .and_then(|v| v.checked_mul(inner))
        .ok_or_else(|| KernelError::InvalidArgument {
            what: what.to_string(),
            message: format!("({outer}, {n}, {inner}) has more elements than fit in memory"),
        })?;
    for &(name, len) in lens {
        if len != total {
            return Err(KernelError::ShapeMismatch {
                what: format!("{what} {name}"),
                expected: format!(
                    "{total} elements for (outer, n, inner) = ({outer}, {n}, {inner})"
                ),
                got: format!("{len} elements"),
            });
        }
    }
    Ok(total)
}

/// One task of [`for_row_blocks`]: its first row and its rows of both outputs.
type RowJob<'a> = Option<(usize, &'a mut [f32], &'a mut [f32])>;

/// Runs `f(first_row, a_rows, b_rows)` over consecutive row ranges of two outputs
/// (`a_width` and `b_width` elements per row), in parallel when the work is large.
///
/// The rows per task depend only on `rows` and `row_work`, never on the thread count.
fn for_row_blocks<F>(
    rows: usize,
    row_work: usize,
    a: &mut [f32],
    a_width: usize,
    b: &mut [f32],
    b_width: usize,
    f: F,
) where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    if rows == 0 {
        return;
    }
    let per_task = if rows.saturating_mul(row_work) >= PAR_MIN {
        (TASK_ELEMS / row_work.max(1))
            .max(1)
            .max(rows.div_ceil(MAX_TASKS))
    } else {
        rows
    };
    let tasks = rows.div_ceil(per_task);
    let mut jobs: [RowJob<'_>; MAX_TASKS] = std::array::from_fn(|_| None);
    let (mut rest_a, mut rest_b) = (a, b);
    for (t, job) in jobs.iter_mut().enumerate().take(tasks) {
        let first = t * per_task;
        let nr = per_task.min(rows - first);
        let (ja, ta) = std::mem::take(&mut rest_a).split_at_mut(nr * a_width);
        let (jb, tb) = std::mem::take(&mut rest_b).split_at_mut(nr * b_width);
        *job = Some((first, ja, jb));
        rest_a = ta;
        rest_b = tb;
    }
    par::for_each_chunk_mut(&mut jobs[..tasks], 1, |_, job| {
        if let Some((first, ja, jb)) = job[0].take() {
            f(first, ja, jb);
        }
    });
}

/// `exp(x - max)` of a row is computed [`LANES`] elements at a time.
const LANES: usize = 16;
/// Shifted logits below this have `exp` 0 (libm's is at most a subnormal there,
/// which a training step flushes to 0; `-inf`, a masked logit, gives exactly 0).
const EXP_ZERO_BELOW: f32 = -87.0;

/// Writes `exp(x - max)` to `y` and returns `(max, sum)`: the max is NaN if any
/// element is NaN (so a NaN row stays NaN), the sum is taken in f64.
///
/// The exponentials are the branch-free [`vmath`] ones, in vectors of the active
/// instruction set (with fused multiply-adds where it has them); libm's, one call
/// per element, took most of the time of a 500-class softmax. The max and the
/// sum run in [`LANES`] partial lanes combined in a fixed order, so the result
/// does not depend on the vector width.
fn exp_shifted_row(x: &[f32], y: &mut [f32]) -> (f32, f64) {
    let level = cpu::active();
    let mut row = ExpShifted {
        x,
        y,
        fma: level != SimdLevel::Scalar,
        result: (0.0, 0.0),
    };
    cpu::run_at(level, &mut row);
    row.result
}

/// [`exp_shifted_row`]'s loops, compiled for the active instruction set.
struct ExpShifted<'a> {
    x: &'a [f32],
    y: &'a mut [f32],
    fma: bool,
    result: (f32, f64),
}

impl SimdBody for ExpShifted<'_> {
    #[inline(always)]
    fn run(&mut self) {
        self.result = if self.fma {
            exp_shifted::<true>(self.x, self.y)
        } else {
            exp_shifted::<false>(self.x, self.y)
        };
    }
}

/// `a` or `v`, whichever is larger; NaN once either is.
#[inline(always)]
fn max_or_nan(a: f32, v: f32) -> f32 {
    if v > a || v.is_nan() {
        v
    } else {
        a
    }
}

#[inline(always)]
fn exp_shifted<const FMA: bool>(x: &[f32], y: &mut [f32]) -> (f32, f64) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut blocks = x.chunks_exact(LANES);
    for block in &mut blocks {
        for (l, &v) in lanes.iter_mut().zip(block) {
            *l = max_or_nan(*l, v);
        }
    }
    for (l, &v) in lanes.iter_mut().zip(blocks.remainder()) {
        *l = max_or_nan(*l, v);
    }
    let m = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| max_or_nan(m, v));
    let exp = |v: f32| {
        let d = v - m;
        if d < EXP_ZERO_BELOW {
            0.0
        } else {
            vmath::exp_with::<FMA>(d)
        }
    };
    let mut sums = [0.0f64; LANES];
    let mut xs = x.chunks_exact(LANES);
    let mut ys = y.chunks_exact_mut(LANES);
    for (xb, yb) in (&mut xs).zip(&mut ys) {
        let xb: &[f32; LANES] = xb.try_into().expect("a whole block");
        let yb: &mut [f32; LANES] = yb.try_into().expect("a whole block");
        for k in 0..LANES {
            yb[k] = exp(xb[k]);
        }
        for (s, &e) in sums.iter_mut().zip(yb.iter()) {
            *s += f64::from(e);
        }
    }
    for ((s, yo), &v) in sums.iter_mut().zip(ys.into_remainder()).zip(xs.remainder()) {
        *yo = exp(v);
        *s += f64::from(*yo);
    }
    // Pairwise, in a fixed order.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for k in 0..width {
            sums[k] += sums[k + width];
        }
    }
    (m, sums[0])
}

/// Per-column max over the `n` rows of a tile of width `w` starting at `c` (row stride `inner`).
fn tile_max(x: &[f32], c: usize, w: usize, n: usize, inner: usize, m: &mut [f32]) {
    m[..w].fill(f32::NEG_INFINITY);
    for i in 0..n {
        let row = &x[c + i * inner..c + i * inner + w];
        for (mv, &v) in m[..w].iter_mut().zip(row) {
            *mv = if v > *mv || v.is_nan() { v } else { *mv };
        }
    }
}

/// Softmax (`log == false`) or log-softmax of one `(n, inner)` block.
fn softmax_block(x: &[f32], y: &mut [f32], n: usize, inner: usize, log: bool) {
    if inner == 1 {
        let (m, s) = exp_shifted_row(x, y);
        if log {
            let ls = s.ln() as f32;
            for (yo, &v) in y.iter_mut().zip(x) {
                *yo = (v - m) - ls;
            }
        } else {
            let inv = (1.0 / s) as f32;
            for yo in y.iter_mut() {
                *yo *= inv;
            }
        }
        return;
    }
    let mut m = [0.0f32; TILE];
    let mut s = [0.0f64; TILE];
    let mut k = [0.0f32; TILE];
    for c in (0..inner).step_by(TILE) {
        let w = TILE.min(inner - c);
        tile_max(x, c, w, n, inner, &mut m);
        s[..w].fill(0.0);
        for i in 0..n {
            let o = c + i * inner;
            for (((yo, &v), &mv), sv) in y[o..o + w]
                .iter_mut()
                .zip(&x[o..o + w])
                .zip(&m[..w])
                .zip(&mut s[..w])
            {
                let e = (v - mv).exp();
                *yo = e;
                *sv += f64::from(e);
            }
        }
        for (kv, &sv) in k[..w].iter_mut().zip(&s[..w]) {
            *kv = if log {
                sv.ln() as f32
            } else {
                (1.0 / sv) as f32
            };
        }
        for i in 0..n {
            let o = c + i * inner;
            if log {
                for (((yo, &v), &mv), &kv) in y[o..o + w]
                    .iter_mut()
                    .zip(&x[o..o + w])
                    .zip(&m[..w])
                    .zip(&k[..w])
                {
                    *yo = (v - mv) - kv;
                }
            } else {
                for (yo, &kv) in y[o..o + w].iter_mut().zip(&k[..w]) {
                    *yo *= kv;
                }
            }
        }
    }
}

fn softmax_impl(
    what: &str,
    x: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    y: &mut [f32],
    log: bool,
) -> Result<()> {
    check_view(
        what,
        outer,
        n,
        inner,
        &[("input", x.len()), ("output", y.len())],
    )?;
    let block = n * inner;
    if block == 0 {
        return Ok(());
    }
    for_row_blocks(outer, block, y, block, &mut [], 0, |first, yb, _| {
        for (j, yo) in yb.chunks_exact_mut(block).enumerate() {
            let s = (first + j) * block;
            softmax_block(&x[s..s + block], yo, n, inner, log);
        }
    });
    Ok(())
}

/// Softmax along the middle axis of `x` viewed as `(outer, n, inner)`:
/// `y = exp(x - max) / sum(exp(x - max))`, stable for huge logits.
///
/// # Errors
/// `ShapeMismatch` when `x` or `y` does not hold `outer * n * inner` elements.
pub fn softmax(x: &[f32], outer: usize, n: usize, inner: usize, y: &mut [f32]) -> Result<()> {
    softmax_impl("softmax", x, outer, n, inner, y, false)
}

/// Log-softmax along the middle axis: `y = x - max - log(sum(exp(x - max)))`.
///
/// # Errors
/// `ShapeMismatch` when `x` or `y` does not hold `outer * n * inner` elements.
pub fn log_softmax(x: &[f32], outer: usize, n: usize, inner: usize, y: &mut [f32]) -> Result<()> {
    softmax_impl("log_softmax", x, outer, n, inner, y, true)
}

/// Gradient of one `(n, inner)` block: `log == false`: `dx = y (dy - sum(dy y))`;
/// `log == true`: `dx = dy - exp(y) sum(dy)`.
fn softmax_grad_block(y: &[f32], dy: &[f32], dx: &mut [f32], n: usize, inner: usize, log: bool) {
    if inner == 1 {
        let s: f64 = if log {
            dy.iter().map(|&d| f64::from(d)).sum()
        } else {
            dy.iter()
                .zip(y)
                .map(|(&d, &v)| f64::from(d) * f64::from(v))
                .sum()
        };
        let s = s as f32;
        for ((o, &d), &v) in dx.iter_mut().zip(dy).zip(y) {
            *o = if log { d - v.exp() * s } else { v * (d - s) };
        }
        return;
    }
    let mut acc = [0.0f64; TILE];
    let mut s = [0.0f32; TILE];
    for c in (0..inner).step_by(TILE) {
        let w = TILE.min(inner - c);
        acc[..w].fill(0.0);
        for i in 0..n {
            let o = c + i * inner;
            for ((a, &d), &v) in acc[..w].iter_mut().zip(&dy[o..o + w]).zip(&y[o..o + w]) {
                *a += if log {
                    f64::from(d)
                } else {
                    f64::from(d) * f64::from(v)
                };
            }
        }
        for (sv, &a) in s[..w].iter_mut().zip(&acc[..w]) {
            *sv = a as f32;
        }
        for i in 0..n {
            let o = c + i * inner;
            for (((out, &d), &v), &sv) in dx[o..o + w]
                .iter_mut()
                .zip(&dy[o..o + w])
                .zip(&y[o..o + w])
                .zip(&s[..w])
            {
                *out = if log { d - v.exp() * sv } else { v * (d - sv) };
            }
        }
    }
}

fn softmax_grad_impl(
    what: &str,
    y: &[f32],
    dy: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [f32],
    log: bool,
) -> Result<()> {
    check_view(
        what,
        outer,
        n,
        inner,
        &[("y", y.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    let block = n * inner;
    if block == 0 {
        return Ok(());
    }
    for_row_blocks(outer, block, dx, block, &mut [], 0, |first, db, _| {
        for (j, out) in db.chunks_exact_mut(block).enumerate() {
            let s = (first + j) * block;
            softmax_grad_block(&y[s..s + block], &dy[s..s + block], out, n, inner, log);
        }
    });
    Ok(())
}

/// Gradient of [`softmax`]: `dx = y * (dy - sum(dy * y))` along the axis, `y` the
/// softmax output.
///
/// # Errors
/// `ShapeMismatch` when `y`, `dy` or `dx` does not hold `outer * n * inner` elements.
pub fn softmax_grad(
    y: &[f32],
    dy: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [f32],
) -> Result<()> {
    softmax_grad_impl("softmax_grad", y, dy, outer, n, inner, dx, false)
}

/// Gradient of [`log_softmax`]: `dx = dy - exp(y) * sum(dy)` along the axis, `y` the
/// log-softmax output.
///
/// # Errors
/// `ShapeMismatch` when `y`, `dy` or `dx` does not hold `outer * n * inner` elements.
pub fn log_softmax_grad(
    y: &[f32],
    dy: &[f32],
    outer: usize,
    n: usize,
    inner: usize,
    dx: &mut [f32],
) -> Result<()> {
    softmax_grad_impl("log_softmax_grad", y, dy, outer, n, inner, dx, true)
}

/// Softmax of one row into `probs`; returns `(max, log(sum(exp(x - max))))` in f64.
#[inline]
fn softmax_row_lse(logits: &[f32], probs: &mut [f32]) -> (f32, f64) {
    let (m, s) = exp_shifted_row(logits, probs);
    let inv = (1.0 / s) as f32;
    for p in probs.iter_mut() {
        *p *= inv;
    }
    (m, s.ln())
}

/// Fused softmax + categorical cross-entropy over the rows of `logits`
/// (`rows x classes`) with dense (possibly soft or label-smoothed) `labels`.
///
/// Writes `probs = softmax(logits)` (kept for the backward pass) and
/// `loss[r] = -sum_c labels[r, c] * log_softmax(logits)[r, c]`, the log-softmax taken
/// from the log-sum-exp so huge logits neither overflow nor lose precision. A zero
/// label contributes nothing, even against a `-inf` logit.
///
/// # Errors
/// `ShapeMismatch` when `logits`, `labels` or `probs` does not hold `rows * classes`
/// elements or `loss` does not hold `rows`.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[f32],
    rows: usize,
    classes: usize,
    probs: &mut [f32],
    loss: &mut [f32],
) -> Result<()> {
    let what = "softmax_cross_entropy";
    check_view(
        what,
        rows,
        classes,
        1,
        &[
            ("logits", logits.len()),
            ("labels", labels.len()),
            ("probs", probs.len()),
        ],
    )?;
    check_len("softmax_cross_entropy loss", loss.len(), rows)?;
    if classes == 0 {
        loss.fill(0.0);
        return Ok(());
    }
    for_row_blocks(rows, classes, probs, classes, loss, 1, |first, pb, lb| {
        for (j, (p, l)) in pb.chunks_exact_mut(classes).zip(lb.iter_mut()).enumerate() {
            let s = (first + j) * classes;
            let (x, z) = (&logits[s..s + classes], &labels[s..s + classes]);
            let (m, lse) = softmax_row_lse(x, p);
            let mut acc = 0.0f64;
            for (&xv, &zv) in x.iter().zip(z) {
                if zv != 0.0 {
                    acc += f64::from(zv) * (lse - f64::from(xv - m));
                }
            }
            *l = acc as f32;
        }
    });
    Ok(())
}

/// Gradient of [`softmax_cross_entropy`] with respect to the logits:
/// `dlogits[r, c] = dloss[r] * (probs[r, c] * sum_c' labels[r, c'] - labels[r, c])`.
///
/// # Errors
/// `ShapeMismatch` when `probs`, `labels` or `dlogits` does not hold `rows * classes`
/// elements or `dloss` does not hold `rows`.
pub fn softmax_cross_entropy_grad(
    probs: &[f32],
    labels: &[f32],
    dloss: &[f32],
    rows: usize,
    classes: usize,
    dlogits: &mut [f32],
) -> Result<()> {
    let what = "softmax_cross_entropy_grad";
    check_view(
        what,
        rows,
        classes,
        1,
        &[
            ("probs", probs.len()),
            ("labels", labels.len()),
            ("dlogits", dlogits.len()),
        ],
    )?;
    check_len("softmax_cross_entropy_grad dloss", dloss.len(), rows)?;
    if classes == 0 {
        return Ok(());
    }
    for_row_blocks(
        rows,
        classes,
        dlogits,
        classes,
        &mut [],
        0,
        |first, gb, _| {
            for (j, g) in gb.chunks_exact_mut(classes).enumerate() {
                let r = first + j;
                let s = r * classes;
                let (p, z) = (&probs[s..s + classes], &labels[s..s + classes]);
                let zsum = z.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
                let d = dloss[r];
                for ((o, &pv), &zv) in g.iter_mut().zip(p).zip(z) {
                    *o = d * (pv * zsum - zv);
                }
            }
        },
    );
    Ok(())
}

/// Checks every sparse label against `[0, classes)` before anything is written.
fn check_sparse_labels(labels: &[i32], classes: usize) -> Result<()> {
    for (position, &value) in labels.iter().enumerate() {
        if value < 0 || value as usize >= classes {
            return Err(KernelError::IndexOutOfRange {
                what: "sparse_categorical_crossentropy labels".to_string(),
                position,
                value: i64::from(value),
                limit: classes,
            });
        }
    }
    Ok(())
}

/// Fused softmax + sparse categorical cross-entropy: `labels[r]` is the class index
/// of row `r`; `probs = softmax(logits)`, `loss[r] = logsumexp(logits[r]) - logits[r, labels[r]]`.
///
/// # Errors
/// `IndexOutOfRange` for a label outside `[0, classes)`, checked before any output is
/// written; `ShapeMismatch` for wrong lengths.
pub fn sparse_softmax_cross_entropy(
    logits: &[f32],
    labels: &[i32],
    rows: usize,
    classes: usize,
    probs: &mut [f32],
    loss: &mut [f32],
) -> Result<()> {
    let what = "sparse_softmax_cross_entropy";
    check_view(
        what,
        rows,
        classes,
        1,
        &[("logits", logits.len()), ("probs", probs.len())],
    )?;
    check_len("sparse_softmax_cross_entropy labels", labels.len(), rows)?;
    check_len("sparse_softmax_cross_entropy loss", loss.len(), rows)?;
    check_sparse_labels(labels, classes)?;
    for_row_blocks(rows, classes, probs, classes, loss, 1, |first, pb, lb| {
        for (j, (p, l)) in pb.chunks_exact_mut(classes).zip(lb.iter_mut()).enumerate() {
            let r = first + j;
            let x = &logits[r * classes..(r + 1) * classes];
            let (m, lse) = softmax_row_lse(x, p);
            *l = (lse - f64::from(x[labels[r] as usize] - m)) as f32;
        }
    });
    Ok(())
}

/// Gradient of [`sparse_softmax_cross_entropy`]:
/// `dlogits[r, c] = dloss[r] * (probs[r, c] - [c == labels[r]])`.
///
/// # Errors
/// `IndexOutOfRange` for a label outside `[0, classes)`, checked before any output is
/// written; `ShapeMismatch` for wrong lengths.
pub fn sparse_softmax_cross_entropy_grad(
    probs: &[f32],
    labels: &[i32],
    dloss: &[f32],
    rows: usize,
    classes: usize,
    dlogits: &mut [f32],
) -> Result<()> {
    let what = "sparse_softmax_cross_entropy_grad";
    check_view(
        what,
        rows,
        classes,
        1,
        &[("probs", probs.len()), ("dlogits", dlogits.len())],
    )?;
    check_len(
        "sparse_softmax_cross_entropy_grad labels",
        labels.len(),
        rows,
    )?;
    check_len("sparse_softmax_cross_entropy_grad dloss", dloss.len(), rows)?;
    check_sparse_labels(labels, classes)?;
    for_row_blocks(
        rows,
        classes,
        dlogits,
        classes,
        &mut [],
        0,
        |first, gb, _| {
            for (j, g) in gb.chunks_exact_mut(classes).enumerate() {
                let r = first + j;
                let p = &probs[r * classes..(r + 1) * classes];
                let d = dloss[r];
                for (o, &pv) in g.iter_mut().zip(p) {
                    *o = d * pv;
                }
                let t = labels[r] as usize;
                g[t] = d * (p[t] - 1.0);
            }
        },
    );
    Ok(())
}

/// The labels of one row of a cross-entropy of probabilities: a weight per class
/// (dense, possibly soft), or one class index (sparse).
#[derive(Clone, Copy)]
enum RowLabels<'a> {
    Dense(&'a [f32]),
    Sparse(usize),
}

impl RowLabels<'_> {
    /// Calls `f(class, weight)` for every class with a non-zero weight.
    fn each(self, mut f: impl FnMut(usize, f32)) {
        match self {
            RowLabels::Dense(z) => {
                for (c, &w) in z.iter().enumerate() {
                    if w != 0.0 {
                        f(c, w);
                    }
                }
            }
            RowLabels::Sparse(c) => f(c, 1.0),
        }
    }
}

/// The sum of a row of probabilities, accumulated in f64 over eight lanes.
fn probability_sum(p: &[f32]) -> f32 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = p.chunks_exact(8);
    for chunk in &mut chunks {
        for (acc, &v) in lanes.iter_mut().zip(chunk) {
            *acc += f64::from(v);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    (lanes.iter().sum::<f64>() + tail) as f32
}

/// Whether some probability of a row summing to `sum` renormalises to NaN (a NaN,
/// `0 / 0` or `inf / inf`): Keras's loss of such a row is NaN whatever the labels,
/// since `0 * ln(NaN)` is NaN.
fn renormalises_to_nan(p: &[f32], sum: f32) -> bool {
    sum.is_nan()
        || (sum == 0.0 && p.contains(&0.0))
        || (sum.is_infinite() && p.iter().any(|v| v.is_infinite()))
}

/// `q` clipped to `[epsilon, 1 - epsilon]`, NaN passing through (as `jnp.clip`).
fn clip_probability(q: f32, epsilon: f32) -> f32 {
    if q < epsilon {
        epsilon
    } else if q > 1.0 - epsilon {
        1.0 - epsilon
    } else {
        q
    }
}

/// The cross-entropy of one row of probabilities, as Keras computes it from
/// probabilities: renormalised to sum to 1, clipped, `-sum(labels * ln(p))`.
fn crossentropy_row(p: &[f32], labels: RowLabels, epsilon: f32) -> f32 {
    let sum = probability_sum(p);
    if renormalises_to_nan(p, sum) {
        return f32::NAN;
    }
    let mut acc = 0.0f64;
    labels.each(|c, w| acc += f64::from(w) * f64::from(clip_probability(p[c] / sum, epsilon).ln()));
    -(acc as f32)
}

/// The gradient of [`crossentropy_row`] with respect to the row `p`, times `dloss`,
/// into `dp`. With `q = p / sum` and `g_c = -labels_c / q_c` where the clip lets
/// `q_c` through (0 where it clips), `dp_k = dloss * (g_k - sum_c g_c q_c) / sum`,
/// computed as `g_k / sum - sum_c g_c p_c / sum²` (the renormalisation's two
/// paths, as the chain rule through the division gives them).
fn crossentropy_grad_row(p: &[f32], labels: RowLabels, epsilon: f32, dloss: f32, dp: &mut [f32]) {
    let sum = probability_sum(p);
    if renormalises_to_nan(p, sum) {
        dp.fill(f32::NAN);
        return;
    }
    let inside = |q: f32| (epsilon..=1.0 - epsilon).contains(&q);
    let mut through_sum = 0.0f64;
    labels.each(|c, w| {
        let q = p[c] / sum;
        if inside(q) {
            through_sum += f64::from(-w / q) * f64::from(p[c]);
        }
    });
    let shared = dloss * -((through_sum / (f64::from(sum) * f64::from(sum))) as f32);
    dp.fill(shared);
    labels.each(|c, w| {
        let q = p[c] / sum;
        if inside(q) {
            dp[c] += dloss * (-w / q / sum);
        }
    });
}

/// Categorical cross-entropy of probabilities over the rows of `probs` (`rows x
/// classes`) with dense (one-hot, soft or smoothed) `labels`, as Keras computes it
/// from probabilities: each row renormalised to sum to 1 and clipped to
/// `[epsilon, 1 - epsilon]`, then `loss[r] = -sum_c labels[r, c] * ln(p[r, c])`. A
/// zero label adds nothing; a row with a probability that renormalises to NaN has
/// a NaN loss.
///
/// # Errors
/// `ShapeMismatch` when `probs` or `labels` does not hold `rows * classes` elements
/// or `loss` does not hold `rows`.
pub fn crossentropy(
    probs: &[f32],
    labels: &[f32],
    rows: usize,
    classes: usize,
    epsilon: f32,
    loss: &mut [f32],
) -> Result<()> {
    check_view(
        "categorical_crossentropy",
        rows,
        classes,
        1,
        &[("probs", probs.len()), ("labels", labels.len())],
    )?;
    check_len("categorical_crossentropy loss", loss.len(), rows)?;
    crossentropy_rows(probs, rows, classes, epsilon, loss, |r| {
        RowLabels::Dense(&labels[r * classes..(r + 1) * classes])
    });
    Ok(())
}

/// Gradient of [`crossentropy`] with respect to `probs`, for the loss gradient
/// `dloss` (one value per row).
///
/// # Errors
/// `ShapeMismatch` when `probs`, `labels` or `dprobs` does not hold `rows * classes`
/// elements or `dloss` does not hold `rows`.
pub fn crossentropy_grad(
    probs: &[f32],
    labels: &[f32],
    dloss: &[f32],
    rows: usize,
    classes: usize,
    epsilon: f32,
    dprobs: &mut [f32],
) -> Result<()> {
    check_view(
        "categorical_crossentropy_grad",
        rows,
        classes,
        1,
        &[
            ("probs", probs.len()),
            ("labels", labels.len()),
            ("dprobs", dprobs.len()),
        ],
    )?;
    check_len("categorical_crossentropy_grad dloss", dloss.len(), rows)?;
    crossentropy_grad_rows(probs, dloss, rows, classes, epsilon, dprobs, |r| {
        RowLabels::Dense(&labels[r * classes..(r + 1) * classes])
    });
    Ok(())
}

/// [`crossentropy`] with integer class labels: `labels[r]` is the class of row `r`
/// (Keras's sparse categorical cross-entropy of probabilities).
///
/// # Errors
/// `IndexOutOfRange` for a label outside `[0, classes)`, checked before any output is
/// written; `ShapeMismatch` for wrong lengths.
pub fn sparse_crossentropy(
    probs: &[f32],
    labels: &[i32],
    rows: usize,
    classes: usize,
    epsilon: f32,
    loss: &mut [f32],
) -> Result<()> {
    check_view(
        "sparse_categorical_crossentropy",
        rows,
        classes,
        1,
        &[("probs", probs.len())],
    )?;
    check_len("sparse_categorical_crossentropy labels", labels.len(), rows)?;
    check_len("sparse_categorical_crossentropy loss", loss.len(), rows)?;
    check_sparse_labels(labels, classes)?;
    crossentropy_rows(probs, rows, classes, epsilon, loss, |r| {
        RowLabels::Sparse(labels[r] as usize)
    });
    Ok(())
}

/// Gradient of [`sparse_crossentropy`] with respect to `probs`.
///
/// # Errors
/// `IndexOutOfRange` for a label outside `[0, classes)`, checked before any output is
/// written; `ShapeMismatch` for wrong lengths.
pub fn sparse_crossentropy_grad(
    probs: &[f32],
    labels: &[i32],
    dloss: &[f32],
    rows: usize,
    classes: usize,
    epsilon: f32,
    dprobs: &mut [f32],
) -> Result<()> {
    check_view(
        "sparse_categorical_crossentropy_grad",
        rows,
        classes,
        1,
        &[("probs", probs.len()), ("dprobs", dprobs.len())],
    )?;
    check_len(
        "sparse_categorical_crossentropy_grad labels",
        labels.len(),
        rows,
    )?;
    check_len(
        "sparse_categorical_crossentropy_grad dloss",
        dloss.len(),
        rows,
    )?;
    check_sparse_labels(labels, classes)?;
    crossentropy_grad_rows(probs, dloss, rows, classes, epsilon, dprobs, |r| {
        RowLabels::Sparse(labels[r] as usize)
    });
    Ok(())
}

/// `loss[r]` = [`crossentropy_row`] of row `r` of `probs` against `labels_of(r)`.
fn crossentropy_rows<'l>(
    probs: &[f32],
    rows: usize,
    classes: usize,
    epsilon: f32,
    loss: &mut [f32],
    labels_of: impl Fn(usize) -> RowLabels<'l> + Sync + Send,
) {
    for_row_blocks(rows, classes, loss, 1, &mut [], 0, |first, lb, _| {
        for (j, l) in lb.iter_mut().enumerate() {
            let r = first + j;
            *l = crossentropy_row(
                &probs[r * classes..(r + 1) * classes],
                labels_of(r),
                epsilon,
            );
        }
    });
}

/// Row `r` of `dprobs` = [`crossentropy_grad_row`] of row `r` against `labels_of(r)`.
fn crossentropy_grad_rows<'l>(
    probs: &[f32],
    dloss: &[f32],
    rows: usize,
    classes: usize,
    epsilon: f32,
    dprobs: &mut [f32],
    labels_of: impl Fn(usize) -> RowLabels<'l> + Sync + Send,
) {
    if classes == 0 {
        return;
    }
    for_row_blocks(
        rows,
        classes,
        dprobs,
        classes,
        &mut [],
        0,
        |first, gb, _| {
            for (j, g) in gb.chunks_exact_mut(classes).enumerate() {
                let r = first + j;
                let p = &probs[r * classes..(r + 1) * classes];
                crossentropy_grad_row(p, labels_of(r), epsilon, dloss[r], g);
            }
        },
    );
}

/// Elements per parallel task of the elementwise sigmoid cross-entropy.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// Fused sigmoid + binary cross-entropy from logits, elementwise:
/// `loss = max(x, 0) - x * z + log1p(exp(-|x|))` (no overflow for any `x`).
///
/// # Errors
/// `ShapeMismatch` when `labels` or `loss` differs in length from `logits`.
pub fn sigmoid_cross_entropy(logits: &[f32], labels: &[f32], loss: &mut [f32]) -> Result<()> {
    check_len("sigmoid_cross_entropy labels", labels.len(), logits.len())?;
    check_len("sigmoid_cross_entropy loss", loss.len(), logits.len())?;
    par::for_each_chunk_mut(loss, ELEMENTWISE_CHUNK, |ci, lc| {
        let s = ci * ELEMENTWISE_CHUNK;
        let e = s + lc.len();
        for ((l, &x), &z) in lc.iter_mut().zip(&logits[s..e]).zip(&labels[s..e]) {
            let relu = if x > 0.0 { x } else { 0.0 };
            *l = relu - x * z + (-x.abs()).exp().ln_1p();
        }
    });
    Ok(())
}

/// Gradient of [`sigmoid_cross_entropy`]: `dlogits = dloss * (sigmoid(x) - z)`.
///
/// # Errors
/// `ShapeMismatch` when `labels`, `dloss` or `dlogits` differs in length from `logits`.
pub fn sigmoid_cross_entropy_grad(
    logits: &[f32],
    labels: &[f32],
    dloss: &[f32],
    dlogits: &mut [f32],
) -> Result<()> {
    let n = logits.len();
    check_len("sigmoid_cross_entropy_grad labels", labels.len(), n)?;
    check_len("sigmoid_cross_entropy_grad dloss", dloss.len(), n)?;
    check_len("sigmoid_cross_entropy_grad dlogits", dlogits.len(), n)?;
    par::for_each_chunk_mut(dlogits, ELEMENTWISE_CHUNK, |ci, gc| {
        let s = ci * ELEMENTWISE_CHUNK;
        let e = s + gc.len();
        for (((g, &x), &z), &d) in gc
            .iter_mut()
            .zip(&logits[s..e])
            .zip(&labels[s..e])
            .zip(&dloss[s..e])
        {
            *g = d * (sigmoid(x) - z);
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(3);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    }

    /// f64 softmax of the (outer, n, inner) view; `log` for log-softmax.
    fn naive_softmax(x: &[f32], outer: usize, n: usize, inner: usize, log: bool) -> Vec<f64> {
        naive_softmax_f64(x, usize::MAX, 0.0, outer, n, inner, log)
    }

    fn naive_ce(logits: &[f64], labels: &[f32], classes: usize) -> Vec<f64> {
        logits
            .chunks(classes)
            .zip(labels.chunks(classes))
            .map(|(x, z)| {
                let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                x.iter()
                    .zip(z)
                    .map(|(v, &zv)| -f64::from(zv) * (v - lse))
                    .sum()
            })
            .collect()
    }

    /// Softmax and log-softmax of random `(outer, n, inner)` values against the f64
    /// reference, within 1e-6 relative.
    fn softmax_agrees(
        outer: usize,
        n: usize,
        inner: usize,
        seed: u64,
    ) -> std::result::Result<(), TestCaseError> {
        let x = values(outer * n * inner, seed, 8.0);
        for log in [false, true] {
            let mut y = vec![f32::NAN; x.len()];
            if log {
                log_softmax(&x, outer, n, inner, &mut y).unwrap();
            } else {
                softmax(&x, outer, n, inner, &mut y).unwrap();
            }
            let want = naive_softmax(&x, outer, n, inner, log);
            for (g, w) in y.iter().zip(&want) {
                prop_assert!(
                    (f64::from(*g) - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "{} vs {}",
                    g,
                    w
                );
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn softmax_forward_matches_reference(outer in 0usize..4, n in 0usize..7, inner in 1usize..5, seed in 0u64..500) {
            softmax_agrees(outer, n, inner, seed)?;
        }

        // Rows around the exponential's block of 16 lanes, on the last axis.
        #[test]
        fn softmax_rows_around_the_lanes_match_reference(outer in 0usize..4, n in 0usize..50, seed in 0u64..500) {
            softmax_agrees(outer, n, 1, seed)?;
        }

        #[test]
        fn softmax_grads_match_reference(outer in 1usize..4, n in 1usize..7, inner in 1usize..5, seed in 0u64..500) {
            let x = values(outer * n * inner, seed, 4.0);
            let dy = values(x.len(), seed + 1, 1.0);
            for log in [false, true] {
                let mut y = vec![0.0; x.len()];
                let mut dx = vec![f32::NAN; x.len()];
                if log {
                    log_softmax(&x, outer, n, inner, &mut y).unwrap();
                    log_softmax_grad(&y, &dy, outer, n, inner, &mut dx).unwrap();
                } else {
                    softmax(&x, outer, n, inner, &mut y).unwrap();
                    softmax_grad(&y, &dy, outer, n, inner, &mut dx).unwrap();
                }
                // Finite differences of L(x) = sum(dy * f(x)) in f64.
                let h = 1e-5;
                for p in 0..x.len() {
                    let loss = |delta: f64| {
                        let fx = naive_softmax_f64(&x, p, delta, outer, n, inner, log);
                        fx.iter().zip(&dy).map(|(v, &d)| v * f64::from(d)).sum::<f64>()
                    };
                    let fd = (loss(h) - loss(-h)) / (2.0 * h);
                    prop_assert!((f64::from(dx[p]) - fd).abs() <= 1e-5 * fd.abs().max(1.0), "log={} p={}: {} vs {}", log, p, dx[p], fd);
                }
            }
        }
    }

    /// f64 softmax with `x[p] += delta`, for finite differences.
    fn naive_softmax_f64(
        x: &[f32],
        p: usize,
        delta: f64,
        outer: usize,
        n: usize,
        inner: usize,
        log: bool,
    ) -> Vec<f64> {
        let xs: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| f64::from(v) + if i == p { delta } else { 0.0 })
            .collect();
        let mut y = vec![0.0; x.len()];
        for o in 0..outer {
            for i in 0..inner {
                let at = |k: usize| (o * n + k) * inner + i;
                let m = (0..n).map(|k| xs[at(k)]).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..n).map(|k| (xs[at(k)] - m).exp()).sum();
                for k in 0..n {
                    let v = xs[at(k)] - m;
                    y[at(k)] = if log { v - s.ln() } else { v.exp() / s };
                }
            }
        }
        y
    }

    #[test]
    fn softmax_rows_sum_to_one_and_huge_logits_are_stable() {
        let rows = 5;
        let classes = 1000;
        let mut x = values(rows * classes, 1, 30.0);
        x[7] = 1e4;
        x[classes + 3] = -1e4;
        x[2 * classes..3 * classes].fill(1e4);
        let mut y = vec![0.0; x.len()];
        softmax(&x, rows, classes, 1, &mut y).unwrap();
        for row in y.chunks(classes) {
            let s: f64 = row.iter().map(|&v| f64::from(v)).sum();
            assert!((s - 1.0).abs() < 1e-5, "row sum {s}");
            assert!(row.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
        assert_eq!(y[7], 1.0);
        let mut ly = vec![0.0; x.len()];
        log_softmax(&x, rows, classes, 1, &mut ly).unwrap();
        assert_eq!(ly[7], 0.0);
        assert!(ly.iter().all(|v| v.is_finite()));
        assert!((f64::from(ly[2 * classes]) + (classes as f64).ln()).abs() < 1e-5);
        // Same along a middle axis.
        let mut z = vec![0.0; x.len()];
        softmax(&x, 1, rows, classes, &mut z).unwrap();
        for i in 0..classes {
            let s: f64 = (0..rows).map(|r| f64::from(z[r * classes + i])).sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn masked_logits_get_exactly_zero_and_nan_rows_stay_nan() {
        let classes = 37;
        let mut x = values(3 * classes, 5, 4.0);
        for k in [0, 5, 16, 17, 36] {
            x[k] = f32::NEG_INFINITY;
        }
        x[classes + 20] -= 200.0;
        x[2 * classes + 33] = f32::NAN;
        let mut y = vec![0.0; x.len()];
        softmax(&x, 3, classes, 1, &mut y).unwrap();
        for k in [0, 5, 16, 17, 36] {
            assert_eq!(y[k].to_bits(), 0, "masked logit {k}: {}", y[k]);
        }
        assert_eq!(y[classes + 20], 0.0);
        let s: f64 = y[..classes].iter().map(|&v| f64::from(v)).sum();
        assert!((s - 1.0).abs() < 1e-6, "row sum {s}");
        assert!(y[2 * classes..].iter().all(|v| v.is_nan()));
        assert!(y[..2 * classes].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn large_softmax_matches_reference_on_both_paths() {
        for (outer, n, inner) in [(300, 517, 1), (40, 30, 300)] {
            let x = values(outer * n * inner, 2, 10.0);
            let mut y = vec![0.0; x.len()];
            softmax(&x, outer, n, inner, &mut y).unwrap();
            let want = naive_softmax(&x, outer, n, inner, false);
            assert!(y
                .iter()
                .zip(&want)
                .all(|(g, w)| (f64::from(*g) - w).abs() <= 1e-6 * w.max(1e-3)));
        }
    }

    #[test]
    fn softmax_cross_entropy_matches_reference_and_finite_differences() {
        let (rows, classes) = (4, 6);
        let logits = values(rows * classes, 3, 5.0);
        // Soft (label-smoothed) labels, one row summing to 2 to exercise sum(labels).
        let mut labels: Vec<f32> = (0..rows * classes)
            .map(|i| {
                if i % classes == i / classes {
                    0.9
                } else {
                    0.02
                }
            })
            .collect();
        labels[3 * classes] = 1.1;
        let mut probs = vec![0.0; rows * classes];
        let mut loss = vec![0.0; rows];
        softmax_cross_entropy(&logits, &labels, rows, classes, &mut probs, &mut loss).unwrap();
        let l64: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
        let want = naive_ce(&l64, &labels, classes);
        for (g, w) in loss.iter().zip(&want) {
            assert!((f64::from(*g) - w).abs() <= 1e-6 * w.abs().max(1.0));
        }
        let dloss = [0.5f32, -1.0, 2.0, 1.5];
        let mut grad = vec![0.0; rows * classes];
        softmax_cross_entropy_grad(&probs, &labels, &dloss, rows, classes, &mut grad).unwrap();
        let total = |l: &[f64]| {
            naive_ce(l, &labels, classes)
                .iter()
                .zip(&dloss)
                .map(|(v, &d)| v * f64::from(d))
                .sum::<f64>()
        };
        for p in 0..logits.len() {
            let h = 1e-5;
            let mut up = l64.clone();
            up[p] += h;
            let mut dn = l64.clone();
            dn[p] -= h;
            let fd = (total(&up) - total(&dn)) / (2.0 * h);
            assert!(
                (f64::from(grad[p]) - fd).abs() <= 1e-5 * fd.abs().max(1.0),
                "p={p}: {} vs {fd}",
                grad[p]
            );
        }
    }

    #[test]
    fn cross_entropy_is_stable_for_huge_logits() {
        let logits = [1e4f32, 0.0, -1e4, 3.0, 1e4, 1e4];
        let labels = [0.0f32, 1.0, 0.0, 0.0, 0.0, 1.0];
        let mut probs = [0.0; 6];
        let mut loss = [0.0; 2];
        softmax_cross_entropy(&logits, &labels, 2, 3, &mut probs, &mut loss).unwrap();
        assert_eq!(loss[0], 1e4);
        assert!((loss[1] - std::f32::consts::LN_2).abs() < 1e-6);
        assert_eq!(&probs[..3], &[1.0, 0.0, 0.0]);
        let mut sl = [0.0; 2];
        sparse_softmax_cross_entropy(&logits, &[1, 2], 2, 3, &mut probs, &mut sl).unwrap();
        assert_eq!(sl, loss);
        // A -inf logit with a zero label does not poison the loss.
        let mut l1 = [0.0];
        softmax_cross_entropy(
            &[f32::NEG_INFINITY, 1.0],
            &[0.0, 1.0],
            1,
            2,
            &mut probs[..2],
            &mut l1,
        )
        .unwrap();
        assert_eq!(l1[0], 0.0);
    }

    #[test]
    fn sparse_matches_dense_one_hot() {
        let (rows, classes) = (300, 250); // large enough for the parallel path
        let logits = values(rows * classes, 4, 6.0);
        let labels: Vec<i32> = (0..rows).map(|r| ((r * 37) % classes) as i32).collect();
        let mut onehot = vec![0.0f32; rows * classes];
        for (r, &t) in labels.iter().enumerate() {
            onehot[r * classes + t as usize] = 1.0;
        }
        let (mut p1, mut p2) = (vec![0.0; rows * classes], vec![0.0; rows * classes]);
        let (mut l1, mut l2) = (vec![0.0; rows], vec![0.0; rows]);
        softmax_cross_entropy(&logits, &onehot, rows, classes, &mut p1, &mut l1).unwrap();
        sparse_softmax_cross_entropy(&logits, &labels, rows, classes, &mut p2, &mut l2).unwrap();
        assert_eq!(p1, p2);
        for (a, b) in l1.iter().zip(&l2) {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0));
        }
        let dloss = values(rows, 5, 1.0);
        let (mut g1, mut g2) = (vec![0.0; rows * classes], vec![0.0; rows * classes]);
        softmax_cross_entropy_grad(&p1, &onehot, &dloss, rows, classes, &mut g1).unwrap();
        sparse_softmax_cross_entropy_grad(&p2, &labels, &dloss, rows, classes, &mut g2).unwrap();
        assert_eq!(g1, g2);
    }

    #[test]
    fn sparse_label_out_of_range_is_an_error_and_writes_nothing() {
        let logits = values(6, 1, 1.0);
        for bad in [3, -1, i32::MAX] {
            let labels = [0, bad];
            let mut probs = [7.0f32; 6];
            let mut loss = [7.0f32; 2];
            let e = sparse_softmax_cross_entropy(&logits, &labels, 2, 3, &mut probs, &mut loss)
                .unwrap_err();
            assert_eq!(
                e,
                KernelError::IndexOutOfRange {
                    what: "sparse_categorical_crossentropy labels".into(),
                    position: 1,
                    value: i64::from(bad),
                    limit: 3
                }
            );
            assert_eq!(probs, [7.0; 6]);
            assert_eq!(loss, [7.0; 2]);
            let mut grad = [7.0f32; 6];
            assert!(sparse_softmax_cross_entropy_grad(
                &probs,
                &labels,
                &[1.0, 1.0],
                2,
                3,
                &mut grad
            )
            .is_err());
            assert_eq!(grad, [7.0; 6]);
        }
    }

    #[test]
    fn sigmoid_cross_entropy_matches_reference_and_finite_differences() {
        let logits: Vec<f32> = [-1e4f32, -30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0, 1e4].to_vec();
        let labels: Vec<f32> = [0.0f32, 1.0, 0.3, 1.0, 0.5, 0.0, 1.0, 0.0, 1.0].to_vec();
        let mut loss = vec![0.0; logits.len()];
        sigmoid_cross_entropy(&logits, &labels, &mut loss).unwrap();
        let f = |x: f64, z: f64| {
            // -z log(sigmoid(x)) - (1-z) log(1-sigmoid(x)), via softplus in f64.
            let sp = |v: f64| {
                if v > 0.0 {
                    v + (-v).exp().ln_1p()
                } else {
                    v.exp().ln_1p()
                }
            };
            z * sp(-x) + (1.0 - z) * sp(x)
        };
        for i in 0..logits.len() {
            let want = f(f64::from(logits[i]), f64::from(labels[i]));
            assert!(
                (f64::from(loss[i]) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{i}: {} vs {want}",
                loss[i]
            );
        }
        let dloss = vec![1.5f32; logits.len()];
        let mut grad = vec![0.0; logits.len()];
        sigmoid_cross_entropy_grad(&logits, &labels, &dloss, &mut grad).unwrap();
        for i in 0..logits.len() {
            let (x, z) = (f64::from(logits[i]), f64::from(labels[i]));
            let h = 1e-5;
            let fd = 1.5 * (f(x + h, z) - f(x - h, z)) / (2.0 * h);
            assert!(
                (f64::from(grad[i]) - fd).abs() <= 1e-5 * fd.abs().max(1.0),
                "{i}: {} vs {fd}",
                grad[i]
            );
        }
    }

    #[test]
    fn length_errors() {
        let mut y = [0.0f32; 5];
        assert!(softmax(&[0.0; 6], 2, 3, 1, &mut y).is_err());
        assert!(log_softmax(&[0.0; 5], 2, 3, 1, &mut y).is_err());
        let mut dx = [0.0f32; 6];
        assert!(softmax_grad(&[0.0; 6], &[0.0; 5], 2, 3, 1, &mut dx).is_err());
        let mut probs = [0.0f32; 6];
        let mut loss = [0.0f32; 1];
        assert!(softmax_cross_entropy(&[0.0; 6], &[0.0; 6], 2, 3, &mut probs, &mut loss).is_err());
        assert!(sigmoid_cross_entropy(&[0.0; 6], &[0.0; 5], &mut y).is_err());
        assert!(softmax(&[], usize::MAX, 2, 1, &mut []).is_err());
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let x = values(200 * 1000, 8, 5.0);
        let mut runs = Vec::new();
        for threads in [1, 3] {
            par::set_num_threads(threads).unwrap();
            par::watch_machine_load(false);
            let mut y = vec![0.0; x.len()];
            softmax(&x, 200, 1000, 1, &mut y).unwrap();
            runs.push(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        par::set_num_threads(par::default_num_threads()).unwrap();
        assert_eq!(runs[0], runs[1]);
    }
}
