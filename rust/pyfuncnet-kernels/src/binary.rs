//! Binary elementwise ops with NumPy broadcasting, plus `where` and `broadcast_to`.
//!
//! All arrays are row-major and contiguous. A kernel first checks every length and
//! shape, then takes the cheapest path that fits: equal shapes, a scalar operand, a
//! row-vector (bias-like) operand, or the general N-d path. The general path
//! collapses the output shape into at most [`MAX_RANK`] dimensions (dropping 1s and
//! merging neighbours that are contiguous for every operand) and walks it in runs
//! along the innermost dimension, where each operand is either a contiguous slice or
//! a single broadcast value. Nothing is allocated on success.

use crate::error::{KernelError, Result};
use crate::par;

/// Most dimensions the general broadcast path handles after merging neighbours.
pub const MAX_RANK: usize = 8;

/// Output elements per parallel task: fixed (never derived from the thread count),
/// and large enough that a task is tens of microseconds of work.
const CHUNK: usize = 1 << 16;

/// A binary elementwise function of `keras.ops`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `add`: `a + b`.
    Add,
    /// `subtract`: `a - b`.
    Sub,
    /// `multiply`: `a * b`.
    Mul,
    /// `divide`: `a / b` (true division).
    Div,
    /// `power`: `a ** b`.
    Pow,
    /// `maximum` (NaN-propagating, as NumPy).
    Max,
    /// `minimum` (NaN-propagating, as NumPy).
    Min,
    /// `greater`: 1.0 where `a > b`, else 0.0.
    Greater,
    /// `greater_equal`: 1.0 where `a >= b`, else 0.0.
    GreaterEqual,
    /// `less`: 1.0 where `a < b`, else 0.0.
    Less,
    /// `less_equal`: 1.0 where `a <= b`, else 0.0.
    LessEqual,
    /// `equal`: 1.0 where `a == b`, else 0.0.
    Equal,
    /// `not_equal`: 1.0 where `a != b` (also for NaN), else 0.0.
    NotEqual,
    /// `squared_difference`: `(a - b)^2`.
    SquaredDifference,
    /// `mod`: remainder with the sign of the divisor (NumPy `mod`).
    Mod,
    /// `floor_divide`: `floor(a / b)` consistent with `mod` (NumPy `floor_divide`).
    FloorDiv,
}

/// `maximum` that propagates NaN from either side.
#[inline]
fn max_nan(a: f32, b: f32) -> f32 {
    if a > b || a.is_nan() {
        a
    } else {
        b
    }
}

/// `minimum` that propagates NaN from either side.
#[inline]
fn min_nan(a: f32, b: f32) -> f32 {
    if a < b || a.is_nan() {
        a
    } else {
        b
    }
}

#[inline]
fn indicator(c: bool) -> f32 {
    if c {
        1.0
    } else {
        0.0
    }
}

/// NumPy's float `mod` (`npy_remainder`): `fmod` moved onto the divisor's side; an
/// exact zero takes the divisor's sign; `b == 0` gives NaN.
#[inline]
fn np_mod(a: f32, b: f32) -> f32 {
    let m = a % b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        m + b
    } else if m == 0.0 {
        0.0f32.copysign(b)
    } else {
        m
    }
}

/// NumPy's float `floor_divide` (`npy_divmod`): `(a - fmod(a, b)) / b`, corrected
/// for the remainder's sign and snapped to the nearest integer, so that
/// `a == floor_divide(a, b) * b + mod(a, b)` as closely as floats allow.
#[inline]
fn np_floor_div(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let fl = div.floor();
        if div - fl > 0.5 {
            fl + 1.0
        } else {
            fl
        }
    } else {
        0.0f32.copysign(a / b)
    }
}

/// Runs `$body` with `$f` bound to the scalar function of `$op`, one closure type per
/// op so each loop is monomorphised and vectorised where the formula allows.
macro_rules! with_binary {
    ($op:expr, |$f:ident| $body:expr) => {
        match $op {
            Binary::Add => {
                let $f = |a: f32, b: f32| a + b;
                $body
            }
            Binary::Sub => {
                let $f = |a: f32, b: f32| a - b;
                $body
            }
            Binary::Mul => {
                let $f = |a: f32, b: f32| a * b;
                $body
            }
            Binary::Div => {
                let $f = |a: f32, b: f32| a / b;
                $body
            }
            Binary::Pow => {
                let $f = f32::powf;
                $body
            }
            Binary::Max => {
                let $f = max_nan;
                $body
            }
            Binary::Min => {
                let $f = min_nan;
                $body
            }
            Binary::Greater => {
                let $f = |a: f32, b: f32| indicator(a > b);
                $body
            }
            Binary::GreaterEqual => {
                let $f = |a: f32, b: f32| indicator(a >= b);
                $body
            }
            Binary::Less => {
                let $f = |a: f32, b: f32| indicator(a < b);
                $body
            }
            Binary::LessEqual => {
                let $f = |a: f32, b: f32| indicator(a <= b);
                $body
            }
            Binary::Equal => {
                let $f = |a: f32, b: f32| indicator(a == b);
                $body
            }
            Binary::NotEqual => {
                let $f = |a: f32, b: f32| indicator(a != b);
                $body
            }
            Binary::SquaredDifference => {
                let $f = |a: f32, b: f32| (a - b) * (a - b);
                $body
            }
            Binary::Mod => {
                let $f = np_mod;
                $body
            }
            Binary::FloorDiv => {
                let $f = np_floor_div;
                $body
            }
        }
    };
}

impl Binary {
    /// Every op, for tests and registries.
    pub const ALL: [Binary; 16] = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Pow,
        Binary::Max,
        Binary::Min,
        Binary::Greater,
        Binary::GreaterEqual,
        Binary::Less,
        Binary::LessEqual,
        Binary::Equal,
        Binary::NotEqual,
        Binary::SquaredDifference,
        Binary::Mod,
        Binary::FloorDiv,
    ];

    /// Looks an op up by its `keras.ops` name (`"true_divide"` is `divide`).
    /// Returns `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Binary> {
        let op = match name {
            "add" => Binary::Add,
            "subtract" => Binary::Sub,
            "multiply" => Binary::Mul,
            "divide" | "true_divide" => Binary::Div,
            "power" => Binary::Pow,
            "maximum" => Binary::Max,
            "minimum" => Binary::Min,
            "greater" => Binary::Greater,
            "greater_equal" => Binary::GreaterEqual,
            "less" => Binary::Less,
            "less_equal" => Binary::LessEqual,
            "equal" => Binary::Equal,
            "not_equal" => Binary::NotEqual,
            "squared_difference" => Binary::SquaredDifference,
            "mod" => Binary::Mod,
            "floor_divide" => Binary::FloorDiv,
            _ => return None,
        };
        Some(op)
    }

    /// The canonical `keras.ops` name.
    pub fn name(&self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "subtract",
            Binary::Mul => "multiply",
            Binary::Div => "divide",
            Binary::Pow => "power",
            Binary::Max => "maximum",
            Binary::Min => "minimum",
            Binary::Greater => "greater",
            Binary::GreaterEqual => "greater_equal",
            Binary::Less => "less",
            Binary::LessEqual => "less_equal",
            Binary::Equal => "equal",
            Binary::NotEqual => "not_equal",
            Binary::SquaredDifference => "squared_difference",
            Binary::Mod => "mod",
            Binary::FloorDiv => "floor_divide",
        }
    }

    /// `op(a, b)` for one pair; comparisons return 1.0 or 0.0. The slice kernels
    /// compute exactly this, bit for bit.
    pub fn apply_scalar(self, a: f32, b: f32) -> f32 {
        with_binary!(self, |f| f(a, b))
    }
}

// ---------------------------------------------------------------------------
// Shape checks
// ---------------------------------------------------------------------------

/// Number of elements of `shape`, refusing shapes whose size overflows `usize`.
fn numel(what: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| KernelError::InvalidArgument {
            what: what.to_string(),
            message: format!("shape {shape:?} has more elements than fit in memory"),
        })
}

/// Checks that `data` (the operand `role` of op `what`) holds exactly the elements of `shape`.
fn check_data(what: &str, role: &str, data: &[f32], shape: &[usize]) -> Result<usize> {
    let n = numel(what, shape)?;
    if data.len() != n {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} {role}"),
            expected: format!("{n} elements for shape {shape:?}"),
            got: format!("{} elements", data.len()),
        });
    }
    Ok(n)
}

/// The dimension of `shape` at axis `i` of a rank-`rank` broadcast (left-padded with 1s).
#[inline]
fn dim_at(shape: &[usize], rank: usize, i: usize) -> usize {
    let pad = rank - shape.len();
    if i < pad {
        1
    } else {
        shape[i - pad]
    }
}

fn incompatible(
    what: &str,
    shapes: &[&[usize]],
    axis_from_right: usize,
    dims: (usize, usize),
) -> KernelError {
    let list: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
    KernelError::ShapeMismatch {
        what: format!("{what}: cannot broadcast shapes {}", list.join(" and ")),
        expected: format!("equal dimensions or 1 at axis -{axis_from_right}"),
        got: format!("{} and {}", dims.0, dims.1),
    }
}

/// Checks that `out` is exactly the NumPy broadcast of `shapes` (no allocation on success).
fn check_broadcast_out(what: &str, shapes: &[&[usize]], out: &[usize]) -> Result<()> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ok = out.len() == rank;
    for i in 0..rank {
        let mut d = 1;
        for s in shapes {
            let e = dim_at(s, rank, i);
            if e != 1 {
                if d != 1 && d != e {
                    return Err(incompatible(what, shapes, rank - i, (d, e)));
                }
                d = e;
            }
        }
        ok = ok && out[i] == d;
    }
    if !ok {
        let list: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
        let want = broadcast_all(shapes);
        return Err(KernelError::ShapeMismatch {
            what: format!("{what} output shape (broadcast of {})", list.join(", ")),
            expected: format!("{want:?}"),
            got: format!("{out:?}"),
        });
    }
    Ok(())
}

/// The broadcast of shapes already known to be compatible.
fn broadcast_all(shapes: &[&[usize]]) -> Vec<usize> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    (0..rank)
        .map(|i| {
            shapes
                .iter()
                .map(|s| dim_at(s, rank, i))
                .find(|&e| e != 1)
                .unwrap_or(1)
        })
        .collect()
}

/// The NumPy broadcast of two shapes.
///
/// # Errors
/// `ShapeMismatch` naming both shapes when a pair of dimensions (aligned from the
/// right) differ and neither is 1.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let (da, db) = (dim_at(a, rank, i), dim_at(b, rank, i));
        let d = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(incompatible(
                "broadcast_shapes",
                &[a, b],
                rank - i,
                (da, db),
            ));
        };
        out.push(d);
    }
    Ok(out)
}

/// Checks that `from` broadcasts to `to` (NumPy `broadcast_to` rules).
fn check_broadcast_to(what: &str, from: &[usize], to: &[usize]) -> Result<()> {
    let bad = from.len() > to.len() || {
        let pad = to.len() - from.len();
        from.iter().zip(&to[pad..]).any(|(&f, &t)| f != t && f != 1)
    };
    if bad {
        return Err(KernelError::ShapeMismatch {
            what: format!("{what}: cannot broadcast shape {from:?} to {to:?}"),
            expected: "each dimension equal to the target's or 1, at most the target's rank"
                .to_string(),
            got: format!("{from:?}"),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The general N-d path
// ---------------------------------------------------------------------------

/// The output shape collapsed for iteration, innermost dimension first, with the
/// element stride of each of `K` operands along each dimension (0 = broadcast).
/// The innermost stride of every operand is 0 or 1.
struct Plan<const K: usize> {
    rank: usize,
    dims: [usize; MAX_RANK],
    strides: [[usize; MAX_RANK]; K],
}

impl<const K: usize> Plan<K> {
    /// Builds the plan; the shapes must already be checked to broadcast to `out`.
    fn new(what: &str, shapes: [&[usize]; K], out: &[usize]) -> Result<Plan<K>> {
        let rank = out.len();
        let mut plan = Plan {
            rank: 0,
            dims: [0; MAX_RANK],
            strides: [[0; MAX_RANK]; K],
        };
        // Contiguous stride of each operand at the current axis (product of its dims to the right).
        let mut running = [1usize; K];
        for i in (0..rank).rev() {
            let d = out[i];
            if d == 1 {
                continue; // every operand has 1 here too: the axis does not move anything
            }
            let mut s = [0usize; K];
            for k in 0..K {
                let e = dim_at(shapes[k], rank, i);
                s[k] = if e == 1 { 0 } else { running[k] };
                running[k] *= e;
            }
            if plan.rank > 0 {
                // Merge into the inner neighbour when every operand is contiguous across both.
                let q = plan.rank - 1;
                let dq = plan.dims[q];
                if (0..K).all(|k| s[k] == plan.strides[k][q] * dq) {
                    plan.dims[q] = d * dq;
                    continue;
                }
            }
            if plan.rank == MAX_RANK {
                return Err(KernelError::InvalidArgument {
                    what: what.to_string(),
                    message: format!(
                        "broadcasting to {out:?} needs more than {MAX_RANK} dimensions after merging contiguous ones"
                    ),
                });
            }
            plan.dims[plan.rank] = d;
            for k in 0..K {
                plan.strides[k][plan.rank] = s[k];
            }
            plan.rank += 1;
        }
        if plan.rank == 0 {
            // A single element (every dimension is 1).
            plan.rank = 1;
            plan.dims[0] = 1;
        }
        Ok(plan)
    }

    /// Calls `f(pos, run, offsets)` for consecutive runs covering output elements
    /// `start..start + len`: output `start + pos ..` and operand `k` from `offsets[k]`,
    /// advancing by `self.strides[k][0]` (0 or 1) per element, for `run` elements.
    fn for_each_run(&self, start: usize, len: usize, mut f: impl FnMut(usize, usize, [usize; K])) {
        let mut idx = [0usize; MAX_RANK];
        let mut off = [0usize; K];
        let mut rem = start;
        for d in 0..self.rank {
            idx[d] = rem % self.dims[d];
            rem /= self.dims[d];
            for k in 0..K {
                off[k] += idx[d] * self.strides[k][d];
            }
        }
        let mut pos = 0;
        while pos < len {
            let run = (self.dims[0] - idx[0]).min(len - pos);
            f(pos, run, off);
            pos += run;
            idx[0] += run;
            for k in 0..K {
                off[k] += run * self.strides[k][0];
            }
            // Carry into the outer dimensions.
            let mut d = 0;
            while d + 1 < self.rank && idx[d] == self.dims[d] {
                idx[d] = 0;
                idx[d + 1] += 1;
                for k in 0..K {
                    off[k] = off[k] - self.dims[d] * self.strides[k][d] + self.strides[k][d + 1];
                }
                d += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Inner loops
// ---------------------------------------------------------------------------

#[inline(always)]
fn zip_into<F: Fn(f32, f32) -> f32>(f: F, a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

#[inline(always)]
fn const_rhs_into<F: Fn(f32, f32) -> f32>(f: F, a: &[f32], b: f32, out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = f(x, b);
    }
}

#[inline(always)]
fn const_lhs_into<F: Fn(f32, f32) -> f32>(f: F, a: f32, b: &[f32], out: &mut [f32]) {
    for (o, &y) in out.iter_mut().zip(b) {
        *o = f(a, y);
    }
}

/// Which operand is a row vector repeated over the leading output dimensions.
#[derive(Clone, Copy)]
enum RowSide {
    Lhs,
    Rhs,
}

/// Whether `shape`, without leading 1s, equals the trailing dimensions of `out`.
fn is_row_of(shape: &[usize], out: &[usize]) -> bool {
    let first = shape.iter().position(|&d| d != 1).unwrap_or(shape.len());
    let tail = &shape[first..];
    tail.len() <= out.len() && tail == &out[out.len() - tail.len()..]
}

fn binary_impl<F>(
    f: F,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) -> Result<()>
where
    F: Fn(f32, f32) -> f32 + Copy + Send + Sync,
{
    let n = out.len();
    if n == 0 {
        return Ok(());
    }
    // Same number of elements: no broadcasting at all (a broadcast dimension of a
    // non-empty output would make an operand strictly smaller).
    if a.len() == n && b.len() == n {
        par::for_each_chunk_mut(out, CHUNK, |ci, oc| {
            let s = ci * CHUNK;
            zip_into(f, &a[s..s + oc.len()], &b[s..s + oc.len()], oc);
        });
        return Ok(());
    }
    if b.len() == 1 && a.len() == n {
        let bv = b[0];
        par::for_each_chunk_mut(out, CHUNK, |ci, oc| {
            let s = ci * CHUNK;
            const_rhs_into(f, &a[s..s + oc.len()], bv, oc);
        });
        return Ok(());
    }
    if a.len() == 1 && b.len() == n {
        let av = a[0];
        par::for_each_chunk_mut(out, CHUNK, |ci, oc| {
            let s = ci * CHUNK;
            const_lhs_into(f, av, &b[s..s + oc.len()], oc);
        });
        return Ok(());
    }
    let row = if a.len() == n && is_row_of(b_shape, out_shape) {
        Some(RowSide::Rhs)
    } else if b.len() == n && is_row_of(a_shape, out_shape) {
        Some(RowSide::Lhs)
    } else {
        None
    };
    if let Some(side) = row {
        // out viewed as (rows, m), the small operand repeated on every row.
        let (full, vec) = match side {
            RowSide::Rhs => (a, b),
            RowSide::Lhs => (b, a),
        };
        let m = vec.len();
        let chunk = (CHUNK / m).max(1) * m;
        par::for_each_chunk_mut(out, chunk, |ci, oc| {
            let s = ci * chunk;
            let fc = &full[s..s + oc.len()];
            for (orow, frow) in oc.chunks_exact_mut(m).zip(fc.chunks_exact(m)) {
                match side {
                    RowSide::Rhs => zip_into(f, frow, vec, orow),
                    RowSide::Lhs => zip_into(f, vec, frow, orow),
                }
            }
        });
        return Ok(());
    }
    let plan = Plan::new("binary", [a_shape, b_shape], out_shape)?;
    let (sa, sb) = (plan.strides[0][0], plan.strides[1][0]);
    par::for_each_chunk_mut(out, CHUNK, |ci, oc| {
        plan.for_each_run(ci * CHUNK, oc.len(), |pos, run, [oa, ob]| {
            let o = &mut oc[pos..pos + run];
            match (sa, sb) {
                (0, 0) => o.fill(f(a[oa], b[ob])),
                (_, 0) => const_rhs_into(f, &a[oa..oa + run], b[ob], o),
                (0, _) => const_lhs_into(f, a[oa], &b[ob..ob + run], o),
                _ => zip_into(f, &a[oa..oa + run], &b[ob..ob + run], o),
            }
        });
    });
    Ok(())
}

/// `out[i] = op(a[bcast i], b[bcast i])` with NumPy broadcasting.
///
/// `out_shape` must equal `broadcast_shapes(a_shape, b_shape)`. Equal shapes, a
/// single-element operand and a row-vector operand (e.g. a bias over the last
/// dimensions) take dedicated loops; anything else the general strided path.
///
/// # Errors
/// `ShapeMismatch` when the shapes do not broadcast, `out_shape` is not their
/// broadcast, or a buffer length differs from its shape's size; `InvalidArgument`
/// when the general path would need more than [`MAX_RANK`] dimensions after merging
/// contiguous ones.
pub fn binary(
    op: Binary,
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) -> Result<()> {
    let what = op.name();
    check_data(what, "lhs", a, a_shape)?;
    check_data(what, "rhs", b, b_shape)?;
    check_data(what, "output", out, out_shape)?;
    check_broadcast_out(what, &[a_shape, b_shape], out_shape)?;
    with_binary!(op, |f| binary_impl(
        f, a, a_shape, b, b_shape, out, out_shape
    ))
}

/// `acc = op(acc, other)`, or `acc = op(other, acc)` when `acc_is_rhs`, in place:
/// `acc` already has the output shape and `other` broadcasts to it. The executor
/// uses it when an operand's buffer is dead after the op. Gives bitwise the same
/// values as [`binary`] with `acc` as that operand.
///
/// # Errors
/// `ShapeMismatch` when `other` does not broadcast to `acc_shape` or a buffer
/// length differs from its shape's size; `InvalidArgument` past [`MAX_RANK`]
/// merged dimensions.
pub fn binary_inplace(
    op: Binary,
    acc: &mut [f32],
    acc_shape: &[usize],
    other: &[f32],
    other_shape: &[usize],
    acc_is_rhs: bool,
) -> Result<()> {
    let what = op.name();
    check_data(what, "in-place operand", acc, acc_shape)?;
    check_data(what, "other operand", other, other_shape)?;
    check_broadcast_out(what, &[acc_shape, other_shape], acc_shape)?;
    with_binary!(op, |f| if acc_is_rhs {
        inplace_impl(move |x, o| f(o, x), acc, acc_shape, other, other_shape)
    } else {
        inplace_impl(f, acc, acc_shape, other, other_shape)
    })
}

/// `acc[i] = f(acc[i], other[bcast i])`, by the same paths as `binary_impl`.
fn inplace_impl<F>(
    f: F,
    acc: &mut [f32],
    acc_shape: &[usize],
    other: &[f32],
    other_shape: &[usize],
) -> Result<()>
where
    F: Fn(f32, f32) -> f32 + Copy + Send + Sync,
{
    let n = acc.len();
    if n == 0 {
        return Ok(());
    }
    if other.len() == n {
        par::for_each_chunk_mut(acc, CHUNK, |ci, c| {
            let (s, len) = (ci * CHUNK, c.len());
            for (x, &o) in c.iter_mut().zip(&other[s..s + len]) {
                *x = f(*x, o);
            }
        });
        return Ok(());
    }
    if other.len() == 1 {
        let o = other[0];
        par::for_each_chunk_mut(acc, CHUNK, |_, c| c.iter_mut().for_each(|x| *x = f(*x, o)));
        return Ok(());
    }
    if is_row_of(other_shape, acc_shape) {
        let m = other.len();
        let chunk = (CHUNK / m).max(1) * m;
        par::for_each_chunk_mut(acc, chunk, |_, c| {
            for row in c.chunks_exact_mut(m) {
                for (x, &o) in row.iter_mut().zip(other) {
                    *x = f(*x, o);
                }
            }
        });
        return Ok(());
    }
    let plan = Plan::new("binary", [other_shape], acc_shape)?;
    let so = plan.strides[0][0];
    par::for_each_chunk_mut(acc, CHUNK, |ci, c| {
        plan.for_each_run(ci * CHUNK, c.len(), |pos, run, [oo]| {
            let xs = &mut c[pos..pos + run];
            if so == 0 {
                let o = other[oo];
                xs.iter_mut().for_each(|x| *x = f(*x, o));
            } else {
                for (x, &o) in xs.iter_mut().zip(&other[oo..oo + run]) {
                    *x = f(*x, o);
                }
            }
        });
    });
    Ok(())
}

#[inline(always)]
fn pick(c: f32, x: f32, y: f32) -> f32 {
    if c != 0.0 {
        x
    } else {
        y
    }
}

/// `out = where(cond != 0, x, y)`, all three broadcast to `out_shape` (NumPy `where`).
///
/// A NaN condition counts as true (it is not equal to 0), as in NumPy.
///
/// # Errors
/// `ShapeMismatch` when the shapes do not broadcast together, `out_shape` is not
/// their broadcast, or a buffer length differs from its shape's size;
/// `InvalidArgument` past [`MAX_RANK`] merged dimensions.
pub fn select(
    cond: &[f32],
    c_shape: &[usize],
    x: &[f32],
    x_shape: &[usize],
    y: &[f32],
    y_shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) -> Result<()> {
    let what = "where";
    check_data(what, "condition", cond, c_shape)?;
    check_data(what, "x", x, x_shape)?;
    check_data(what, "y", y, y_shape)?;
    check_data(what, "output", out, out_shape)?;
    check_broadcast_out(what, &[c_shape, x_shape, y_shape], out_shape)?;
    let n = out.len();
    if n == 0 {
        return Ok(());
    }
    if cond.len() == n && x.len() == n && y.len() == n {
        par::for_each_chunk_mut(out, CHUNK, |ci, oc| {
            let s = ci * CHUNK;
            let e = s + oc.len();
            for (((o, &c), &xv), &yv) in oc.iter_mut().zip(&cond[s..e]).zip(&x[s..e]).zip(&y[s..e])
            {
                *o = pick(c, xv, yv);
            }
        });
        return Ok(());
    }
    let plan = Plan::new(what, [c_shape, x_shape, y_shape], out_shape)?;
    let [sc, sx, sy] = [plan.strides[0][0], plan.strides[1][0], plan.strides[2][0]];
    par::for_each_chunk_mut(out, CHUNK, |ci, oc| {
        plan.for_each_run(ci * CHUNK, oc.len(), |pos, run, [pc, px, py]| {
            for (j, o) in oc[pos..pos + run].iter_mut().enumerate() {
                *o = pick(cond[pc + j * sc], x[px + j * sx], y[py + j * sy]);
            }
        });
    });
    Ok(())
}

/// `out` (shape `to`) = `x` (shape `from`) broadcast, as NumPy `broadcast_to`.
///
/// # Errors
/// `ShapeMismatch` when `from` does not broadcast to `to` or a buffer length differs
/// from its shape's size; `InvalidArgument` past [`MAX_RANK`] merged dimensions.
pub fn broadcast_to(x: &[f32], from: &[usize], out: &mut [f32], to: &[usize]) -> Result<()> {
    let what = "broadcast_to";
    check_data(what, "input", x, from)?;
    check_data(what, "output", out, to)?;
    check_broadcast_to(what, from, to)?;
    if out.is_empty() {
        return Ok(());
    }
    if x.len() == out.len() {
        out.copy_from_slice(x);
        return Ok(());
    }
    let plan = Plan::new(what, [from], to)?;
    let sx = plan.strides[0][0];
    par::for_each_chunk_mut(out, CHUNK, |ci, oc| {
        plan.for_each_run(ci * CHUNK, oc.len(), |pos, run, [ox]| {
            let o = &mut oc[pos..pos + run];
            if sx == 0 {
                o.fill(x[ox]);
            } else {
                o.copy_from_slice(&x[ox..ox + run]);
            }
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Row-major index of `out` multi-index into an operand of `shape` (broadcast).
    fn source_index(shape: &[usize], out_shape: &[usize], mut flat: usize) -> usize {
        let rank = out_shape.len();
        let mut idx = vec![0; rank];
        for i in (0..rank).rev() {
            idx[i] = flat % out_shape[i];
            flat /= out_shape[i];
        }
        let pad = rank - shape.len();
        let mut src = 0;
        for (j, &d) in shape.iter().enumerate() {
            src = src * d + if d == 1 { 0 } else { idx[pad + j] };
        }
        src
    }

    fn naive_binary(
        op: Binary,
        a: &[f32],
        sa: &[usize],
        b: &[f32],
        sb: &[usize],
        so: &[usize],
    ) -> Vec<f32> {
        let n: usize = so.iter().product();
        (0..n)
            .map(|i| op.apply_scalar(a[source_index(sa, so, i)], b[source_index(sb, so, i)]))
            .collect()
    }

    /// An independent broadcast rule: pad both with 1s, then compare.
    fn naive_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
        let r = a.len().max(b.len());
        let mut pa = vec![1; r - a.len()];
        pa.extend_from_slice(a);
        let mut pb = vec![1; r - b.len()];
        pb.extend_from_slice(b);
        pa.iter()
            .zip(&pb)
            .map(|(&x, &y)| match (x, y) {
                _ if x == y => Some(x),
                (1, _) => Some(y),
                (_, 1) => Some(x),
                _ => None,
            })
            .collect()
    }

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 100.0
                    - 5.0
            })
            .collect()
    }

    fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![3 => Just(1usize), 6 => 2usize..5, 1 => Just(0usize)]
    }

    /// A shape of rank 0..4 and a second shape broadcast-compatible with it.
    fn compatible_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
        (
            prop::collection::vec(dim(), 0..5),
            prop::collection::vec(any::<u8>(), 0..5),
        )
            .prop_map(|(a, mask)| {
                // b: a suffix of a (length from mask), some dims replaced by 1.
                let k = mask.len().min(a.len());
                let mut b: Vec<usize> = a[a.len() - k..].to_vec();
                for (d, m) in b.iter_mut().zip(&mask) {
                    if m % 3 == 0 {
                        *d = 1;
                    }
                }
                if mask.first().is_some_and(|m| m % 2 == 0) {
                    (b, a)
                } else {
                    (a, b)
                }
            })
    }

    proptest! {
        #[test]
        fn broadcast_shapes_matches_naive(a in prop::collection::vec(dim(), 0..5), b in prop::collection::vec(dim(), 0..5)) {
            let got = broadcast_shapes(&a, &b).ok();
            prop_assert_eq!(got, naive_broadcast(&a, &b));
        }

        #[test]
        fn binary_forward_matches_reference((sa, sb) in compatible_pair(), op_i in 0usize..16) {
            let op = Binary::ALL[op_i];
            let so = broadcast_shapes(&sa, &sb).unwrap();
            let a = fill(sa.iter().product(), 1);
            let b = fill(sb.iter().product(), 77);
            let mut out = vec![f32::NAN; so.iter().product()];
            binary(op, &a, &sa, &b, &sb, &mut out, &so).unwrap();
            let want = naive_binary(op, &a, &sa, &b, &sb, &so);
            prop_assert_eq!(out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn binary_inplace_matches_reference((sa, sb) in compatible_pair(), op_i in 0usize..16, rhs in any::<bool>()) {
            let op = Binary::ALL[op_i];
            let so = broadcast_shapes(&sa, &sb).unwrap();
            // The in-place operand is the one with the output's shape (if any).
            let (acc_shape, other_shape) = if rhs { (&sb, &sa) } else { (&sa, &sb) };
            prop_assume!(acc_shape == &so);
            let acc0 = fill(acc_shape.iter().product(), 1);
            let other = fill(other_shape.iter().product(), 77);
            let mut acc = acc0.clone();
            binary_inplace(op, &mut acc, acc_shape, &other, other_shape, rhs).unwrap();
            let want = if rhs {
                naive_binary(op, &other, other_shape, &acc0, acc_shape, &so)
            } else {
                naive_binary(op, &acc0, acc_shape, &other, other_shape, &so)
            };
            prop_assert_eq!(acc.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn incompatible_or_wrong_out_shapes_are_errors(sa in prop::collection::vec(dim(), 0..5), sb in prop::collection::vec(dim(), 0..5)) {
            let a = fill(sa.iter().product(), 1);
            let b = fill(sb.iter().product(), 2);
            match naive_broadcast(&sa, &sb) {
                None => {
                    let mut out = vec![0.0; 64];
                    let r = binary(Binary::Add, &a, &sa, &b, &sb, &mut out[..0], &[0]);
                    prop_assert!(r.is_err());
                }
                Some(so) => {
                    // One more leading dimension of 2 is not the broadcast.
                    let mut wrong = vec![2];
                    wrong.extend_from_slice(&so);
                    let mut out = vec![0.0; wrong.iter().product()];
                    let r = binary(Binary::Add, &a, &sa, &b, &sb, &mut out, &wrong);
                    prop_assert!(matches!(r, Err(KernelError::ShapeMismatch { .. })), "{:?}", r);
                }
            }
        }

        #[test]
        fn select_matches_reference((sx, sy) in compatible_pair(), (sc0, _) in compatible_pair()) {
            // The condition takes a shape compatible with x's when possible, else a scalar.
            let sc = if naive_broadcast(&sc0, &sx).and_then(|s| naive_broadcast(&s, &sy)).is_some() { sc0 } else { vec![] };
            let so = naive_broadcast(&naive_broadcast(&sc, &sx).unwrap(), &sy).unwrap();
            let c: Vec<f32> = fill(sc.iter().product(), 5).iter().map(|v| if *v > 0.0 { 1.0 } else { 0.0 }).collect();
            let x = fill(sx.iter().product(), 1);
            let y = fill(sy.iter().product(), 9);
            let mut out = vec![f32::NAN; so.iter().product()];
            select(&c, &sc, &x, &sx, &y, &sy, &mut out, &so).unwrap();
            for (i, o) in out.iter().enumerate() {
                let ci = c[source_index(&sc, &so, i)];
                let want = if ci != 0.0 { x[source_index(&sx, &so, i)] } else { y[source_index(&sy, &so, i)] };
                prop_assert_eq!(*o, want);
            }
        }

        #[test]
        fn broadcast_to_matches_reference((s1, s2) in compatible_pair()) {
            let to = broadcast_shapes(&s1, &s2).unwrap();
            let x = fill(s1.iter().product(), 3);
            let mut out = vec![f32::NAN; to.iter().product()];
            broadcast_to(&x, &s1, &mut out, &to).unwrap();
            for (i, o) in out.iter().enumerate() {
                prop_assert_eq!(*o, x[source_index(&s1, &to, i)]);
            }
            // The reverse direction is refused unless the shapes are equal.
            let mut back = vec![0.0; x.len()];
            prop_assert_eq!(broadcast_to(&out, &to, &mut back, &s1).is_ok(), to == s1);
        }
    }

    #[test]
    fn scalar_formulas_match_f64() {
        let vals = [-7.5f32, -2.0, -0.5, 0.0, 0.25, 1.0, 3.0, 6.5];
        for &a in &vals {
            for &b in &vals {
                let (x, y) = (f64::from(a), f64::from(b));
                let bool_ = |c: bool| if c { 1.0 } else { 0.0 };
                for op in Binary::ALL {
                    let want = match op {
                        Binary::Add => x + y,
                        Binary::Sub => x - y,
                        Binary::Mul => x * y,
                        Binary::Div => x / y,
                        Binary::Pow => x.powf(y),
                        Binary::Max => x.max(y),
                        Binary::Min => x.min(y),
                        Binary::Greater => bool_(x > y),
                        Binary::GreaterEqual => bool_(x >= y),
                        Binary::Less => bool_(x < y),
                        Binary::LessEqual => bool_(x <= y),
                        Binary::Equal => bool_(x == y),
                        Binary::NotEqual => bool_(x != y),
                        Binary::SquaredDifference => (x - y) * (x - y),
                        Binary::Mod => x - y * (x / y).floor(),
                        Binary::FloorDiv => (x / y).floor(),
                    };
                    let got = f64::from(op.apply_scalar(a, b));
                    let ok = (want.is_nan() && got.is_nan())
                        || got == want
                        || (got - want).abs() <= 1e-6 * want.abs().max(1e-30);
                    assert!(ok, "{}({a}, {b}) = {got}, want {want}", op.name());
                }
            }
        }
    }

    #[test]
    fn mod_and_floor_divide_follow_numpy() {
        assert_eq!(Binary::Mod.apply_scalar(-7.0, 3.0), 2.0);
        assert_eq!(Binary::Mod.apply_scalar(7.0, -3.0), -2.0);
        assert_eq!(
            Binary::Mod.apply_scalar(-6.0, 3.0).to_bits(),
            0.0f32.to_bits()
        );
        assert_eq!(
            Binary::Mod.apply_scalar(6.0, -3.0).to_bits(),
            (-0.0f32).to_bits()
        );
        assert!(Binary::Mod.apply_scalar(1.0, 0.0).is_nan());
        assert_eq!(Binary::FloorDiv.apply_scalar(-7.0, 2.0), -4.0);
        assert_eq!(Binary::FloorDiv.apply_scalar(7.0, -2.0), -4.0);
        assert_eq!(Binary::FloorDiv.apply_scalar(1.0, 0.0), f32::INFINITY);
        // numpy: floor_divide(1.0, 0.1) == 9.0 since 0.1 is slightly above 1/10.
        assert_eq!(Binary::FloorDiv.apply_scalar(1.0, 0.1), 9.0);
    }

    #[test]
    fn max_min_and_comparisons_with_nan() {
        assert!(Binary::Max.apply_scalar(f32::NAN, 1.0).is_nan());
        assert!(Binary::Max.apply_scalar(1.0, f32::NAN).is_nan());
        assert!(Binary::Min.apply_scalar(f32::NAN, 1.0).is_nan());
        assert!(Binary::Min.apply_scalar(1.0, f32::NAN).is_nan());
        assert_eq!(Binary::Greater.apply_scalar(f32::NAN, 1.0), 0.0);
        assert_eq!(Binary::NotEqual.apply_scalar(f32::NAN, f32::NAN), 1.0);
    }

    #[test]
    fn names_round_trip() {
        for op in Binary::ALL {
            assert_eq!(Binary::from_name(op.name()), Some(op));
        }
        assert_eq!(Binary::from_name("true_divide"), Some(Binary::Div));
        assert_eq!(Binary::from_name("xor"), None);
    }

    #[test]
    fn large_arrays_take_every_path_and_match_reference() {
        let cases: [(&[usize], &[usize]); 6] = [
            (&[300, 700], &[300, 700]),   // same shape
            (&[300, 700], &[]),           // scalar rhs
            (&[1, 1], &[300, 700]),       // scalar lhs
            (&[300, 700], &[700]),        // row vector rhs
            (&[1, 700], &[300, 1, 700]),  // row vector lhs
            (&[300, 1, 7], &[1, 100, 7]), // general
        ];
        for (sa, sb) in cases {
            let so = broadcast_shapes(sa, sb).unwrap();
            let a = fill(sa.iter().product(), 11);
            let b = fill(sb.iter().product(), 12);
            let mut out = vec![0.0; so.iter().product()];
            for op in [Binary::Sub, Binary::Pow, Binary::Mod] {
                binary(op, &a, sa, &b, sb, &mut out, &so).unwrap();
                let want = naive_binary(op, &a, sa, &b, sb, &so);
                assert!(
                    out.iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{} {sa:?} {sb:?}",
                    op.name()
                );
            }
        }
    }

    #[test]
    fn too_many_unmergeable_dims_is_an_error_but_mergeable_ones_work() {
        let sa: Vec<usize> = (0..10).map(|i| if i % 2 == 0 { 2 } else { 1 }).collect();
        let sb: Vec<usize> = (0..10).map(|i| if i % 2 == 0 { 1 } else { 2 }).collect();
        let so = vec![2; 10];
        let a = fill(32, 1);
        let b = fill(32, 2);
        let mut out = vec![0.0; 1024];
        let r = binary(Binary::Add, &a, &sa, &b, &sb, &mut out, &so);
        assert!(
            matches!(r, Err(KernelError::InvalidArgument { .. })),
            "{r:?}"
        );
        // Ten dimensions with one broadcast pattern merge into two.
        let sc = vec![1, 1, 1, 1, 1, 2, 2, 2, 2, 2];
        let c = fill(32, 3);
        let big = fill(1024, 4);
        binary(Binary::Mul, &big, &so, &c, &sc, &mut out, &so).unwrap();
        assert_eq!(out, naive_binary(Binary::Mul, &big, &so, &c, &sc, &so));
    }

    #[test]
    fn length_and_shape_errors() {
        let mut out = [0.0; 6];
        // a's data does not match its shape.
        assert!(binary(
            Binary::Add,
            &[1.0; 5],
            &[2, 3],
            &[1.0; 3],
            &[3],
            &mut out,
            &[2, 3]
        )
        .is_err());
        // out has the wrong length.
        assert!(binary(
            Binary::Add,
            &[1.0; 6],
            &[2, 3],
            &[1.0; 3],
            &[3],
            &mut out[..5],
            &[2, 3]
        )
        .is_err());
        // incompatible.
        let e = binary(
            Binary::Add,
            &[1.0; 6],
            &[2, 3],
            &[1.0; 2],
            &[2],
            &mut out,
            &[2, 3],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("[2, 3]") && e.to_string().contains("[2]"),
            "{e}"
        );
        let e = broadcast_shapes(&[4, 3], &[2, 1, 5]).unwrap_err();
        assert!(
            e.to_string().contains("[4, 3]") && e.to_string().contains("[2, 1, 5]"),
            "{e}"
        );
        assert!(broadcast_to(&[1.0; 3], &[3], &mut out[..4], &[4]).is_err());
        assert!(broadcast_to(&[1.0; 6], &[2, 3], &mut out, &[3]).is_err());
        assert!(select(
            &[1.0; 2],
            &[2],
            &[1.0; 3],
            &[3],
            &[0.0],
            &[],
            &mut out[..3],
            &[3]
        )
        .is_err());
    }

    #[test]
    fn zero_size_and_scalar_shapes() {
        let mut out: [f32; 0] = [];
        binary(
            Binary::Add,
            &[],
            &[0, 3],
            &[1.0; 3],
            &[3],
            &mut out,
            &[0, 3],
        )
        .unwrap();
        binary(Binary::Add, &[], &[2, 0], &[1.0], &[1], &mut out, &[2, 0]).unwrap();
        let mut one = [0.0];
        binary(Binary::Mul, &[3.0], &[], &[4.0], &[1, 1], &mut one, &[1, 1]).unwrap();
        assert_eq!(one, [12.0]);
        broadcast_to(&[5.0], &[], &mut one, &[1]).unwrap();
        assert_eq!(one, [5.0]);
        // A size-1 dimension against 0 gives 0.
        assert_eq!(broadcast_shapes(&[1, 3], &[0, 1]).unwrap(), vec![0, 3]);
    }
}
