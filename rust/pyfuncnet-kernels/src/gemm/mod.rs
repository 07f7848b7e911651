//! Single-precision matrix multiply: `C <- act(alpha * A * B + beta * C + bias)`.
//!
//! The layout follows BLIS. The K dimension is cut into blocks of `kc`, N into
//! blocks of `nc` and M into blocks of `mc`; B is packed, for one N block at a
//! time, into `NR`-column panels shared by all tasks, each task packs its
//! `mc x kc` blocks of A into `MR`-row panels, and a register-blocked `MR x NR`
//! micro-kernel ([`kernel::MicroKernel`]) walks the panels. Packing reads through
//! the operand strides, so transposed ([`MatRef::t`]) and non-contiguous views cost
//! nothing beyond the copy that packing does anyway. Small and skinny products take
//! a path that feeds the micro-kernel straight from the operands and packs only
//! what must be (`small.rs`); products narrower than the kernel tile run as
//! `Cᵀ = Bᵀ Aᵀ` there when that reads A in place.
//!
//! Parallel work is split over M and N blocks only, never over K, with a partition
//! that depends on the shape alone: every element of C is computed by one task
//! adding the K blocks in the same order, so results are bitwise identical for any
//! thread count.
//!
//! The micro-kernel is chosen at run time from [`SimdLevel`]: AVX-512
//! ([`avx512`]), AVX2+FMA ([`avx2`]) or portable Rust ([`scalar`]). [`sgemm_reference`] is the test oracle.

pub mod kernel;

mod avx2;
mod avx512;
mod driver;
mod gathered;
mod pack;
mod reference;
mod scalar;
mod small;

/// Each parallel GEMM task carries at least this many flops (~13 us of one core at
/// peak), so a product of fewer than twice as many runs as one task. Handing a
/// task to a polling helper costs about a microsecond (`par`); on two threads the
/// MLP's batch-64 products ran ~40% faster with tasks of 2 MFLOP than of 6
/// (BENCHMARKS.md); smaller tasks were not tried. The partition of M and N never
/// changes what each element of C computes, so results do not depend on it.
pub const MIN_TASK_FLOPS: usize = 2_000_000;

/// Parallel tasks for `flops` of work cut into `pieces` independent parts (row
/// strips, column panels): one per [`MIN_TASK_FLOPS`], at most one per piece. On
/// more than one thread, a product worth one task but not two is cut in two all
/// the same: run whole, such products (the batch-256 `64 x 64` ones, 2.1 MFLOP)
/// took half again as long on two threads as OpenBLAS's split ones (BENCHMARKS.md).
/// On one thread the count is the shape's alone.
pub(crate) fn task_count(flops: usize, pieces: usize) -> usize {
    let by_work = flops / MIN_TASK_FLOPS;
    let tasks = if by_work == 1 && crate::par::threads_in_use() > 1 {
        2
    } else {
        by_work
    };
    tasks.clamp(1, pieces.max(1))
}

pub use reference::sgemm_reference;

use crate::cpu::{self, SimdLevel};
use crate::error::{KernelError, Result};

/// Read-only strided view of a matrix: element `(i, j)` is `data[i*rs + j*cs]`.
///
/// Strides are in elements and may be any non-negative values, including 0 for a
/// broadcast dimension. A view built by [`MatRef::new`] is checked to lie inside
/// `data`; the fields are public, so [`sgemm`] checks them again before use.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The elements; the view may cover only part of it.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance in elements between `(i, j)` and `(i + 1, j)`.
    pub rs: usize,
    /// Distance in elements between `(i, j)` and `(i, j + 1)`.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A strided view of `data`.
    ///
    /// # Errors
    /// `BufferTooSmall` unless the last element `(rows-1, cols-1)` lies inside `data`
    /// (a view with `rows == 0` or `cols == 0` is always fine).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        let view = MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        };
        view.check("MatRef")?;
        Ok(view)
    }

    /// A contiguous row-major view (`rs = cols`, `cs = 1`).
    ///
    /// # Errors
    /// `BufferTooSmall` if `data` holds fewer than `rows * cols` elements.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transposed view: rows and columns, and their strides, swap. No data moves.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Element `(i, j)`; the caller keeps `i < rows` and `j < cols` on a checked view.
    #[inline(always)]
    pub(crate) fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }

    /// Checks that every element of the view is inside `data`.
    fn check(&self, what: &str) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1).checked_mul(self.rs).and_then(|r| {
            (self.cols - 1)
                .checked_mul(self.cs)
                .and_then(|c| r.checked_add(c))
        });
        match last {
            Some(last) if last < self.data.len() => Ok(()),
            _ => Err(KernelError::BufferTooSmall {
                what: format!(
                    "{what} ({} x {}, strides {} x {})",
                    self.rows, self.cols, self.rs, self.cs
                ),
                needed: last.map_or(usize::MAX, |l| l.saturating_add(1)),
                got: self.data.len(),
            }),
        }
    }
}

/// Row-major output matrix: element `(i, j)` is `data[i*ldc + j]`, `ldc >= cols`.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// The elements; the view may cover only part of it.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance in elements between consecutive rows.
    pub ldc: usize,
}

impl<'a> MatMut<'a> {
    /// A row-major view of `data` with leading dimension `ldc`.
    ///
    /// # Errors
    /// `InvalidArgument` if `ldc < cols` (rows would overlap) and `BufferTooSmall`
    /// unless the last element lies inside `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, ldc: usize) -> Result<Self> {
        let view = MatMut {
            data,
            rows,
            cols,
            ldc,
        };
        view.check()?;
        Ok(view)
    }

    /// A contiguous row-major view (`ldc = cols`).
    ///
    /// # Errors
    /// `BufferTooSmall` if `data` holds fewer than `rows * cols` elements.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols)
    }

    fn check(&self) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        if self.rows > 1 && self.ldc < self.cols {
            return Err(KernelError::InvalidArgument {
                what: "MatMut".into(),
                message: format!("ldc = {} is smaller than cols = {}", self.ldc, self.cols),
            });
        }
        let needed = (self.rows - 1)
            .checked_mul(self.ldc)
            .and_then(|r| r.checked_add(self.cols));
        match needed {
            Some(needed) if needed <= self.data.len() => Ok(()),
            _ => Err(KernelError::BufferTooSmall {
                what: format!("MatMut ({} x {}, ldc {})", self.rows, self.cols, self.ldc),
                needed: needed.unwrap_or(usize::MAX),
                got: self.data.len(),
            }),
        }
    }
}

/// An in-place activation applied to row segments of C by [`Epilogue`].
pub type Activation = dyn Fn(&mut [f32]) + Sync;

/// What happens to each element of C once the product is complete:
/// `C <- act(alpha*A*B + beta*C + bias[j])`.
///
/// `bias` (length `n`) is added to every row, then `activation` runs in place on
/// whole row segments of finished tiles of C. Each element goes through the
/// epilogue exactly once. The activation may run on several threads at once.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added to column `j` of every row.
    pub bias: Option<&'a [f32]>,
    /// Applied in place to contiguous row segments of C after the bias.
    pub activation: Option<&'a Activation>,
}

impl std::fmt::Debug for Epilogue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epilogue")
            .field("bias", &self.bias.map(|b| b.len()))
            .field("activation", &self.activation.is_some())
            .finish()
    }
}

impl Epilogue<'_> {
    /// Whether the epilogue does anything.
    pub(crate) fn is_identity(&self) -> bool {
        self.bias.is_none() && self.activation.is_none()
    }

    /// Applies bias and activation to one row segment whose first column is `j0`.
    #[inline]
    pub(crate) fn apply(&self, row: &mut [f32], j0: usize) {
        if let Some(bias) = self.bias {
            let bias = &bias[j0..j0 + row.len()];
            for (x, b) in row.iter_mut().zip(bias) {
                *x += *b;
            }
        }
        if let Some(act) = self.activation {
            act(row);
        }
    }
}

/// Checks the shapes of a product and returns `(m, n, k)`.
pub(crate) fn check_shapes(
    a: &MatRef,
    b: &MatRef,
    c: &MatMut,
    epilogue: &Epilogue,
) -> Result<(usize, usize, usize)> {
    a.check("sgemm operand A")?;
    b.check("sgemm operand B")?;
    let mismatch = |expected: String, got: String| KernelError::ShapeMismatch {
        what: "sgemm".into(),
        expected,
        got,
    };
    if a.cols != b.rows {
        return Err(mismatch(
            format!("A.cols == B.rows for A {} x {} times B", a.rows, a.cols),
            format!("B {} x {}", b.rows, b.cols),
        ));
    }
    check_output("sgemm", c, a.rows, b.cols, epilogue)?;
    Ok((a.rows, b.cols, a.cols))
}

/// Checks that C is an `m x n` view inside its buffer and the bias, if any, is
/// `n` long.
fn check_output(what: &str, c: &MatMut, m: usize, n: usize, epilogue: &Epilogue) -> Result<()> {
    c.check()?;
    let mismatch = |expected: String, got: String| KernelError::ShapeMismatch {
        what: what.into(),
        expected,
        got,
    };
    if c.rows != m || c.cols != n {
        return Err(mismatch(
            format!("C of shape {m} x {n}"),
            format!("C {} x {}", c.rows, c.cols),
        ));
    }
    if let Some(bias) = epilogue.bias {
        if bias.len() != n {
            return Err(mismatch(
                format!("bias of length n = {n}"),
                format!("bias of length {}", bias.len()),
            ));
        }
    }
    Ok(())
}

/// `C <- epilogue(alpha * A * B + beta * C)` with the micro-kernel of [`cpu::active`].
///
/// `beta == 0` never reads C, so C may hold garbage (even NaN). With `k == 0` the
/// result is `epilogue(beta * C)`. Runs on the project's thread pool.
///
/// # Errors
/// `ShapeMismatch` if `a.cols != b.rows`, `c.rows != a.rows`, `c.cols != b.cols` or
/// the bias length is not `n`; `BufferTooSmall` / `InvalidArgument` if a view does
/// not fit its buffer.
pub fn sgemm(
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
    epilogue: &Epilogue,
) -> Result<()> {
    sgemm_with_level(cpu::active(), alpha, a, b, beta, c, epilogue)
}

/// [`sgemm`] with an explicit micro-kernel level (tests and benches run every level).
///
/// # Errors
/// As [`sgemm`], plus `InvalidArgument` if this CPU cannot execute `level`.
pub fn sgemm_with_level(
    level: SimdLevel,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: MatMut,
    epilogue: &Epilogue,
) -> Result<()> {
    if !level.is_supported() {
        return Err(KernelError::InvalidArgument {
            what: "sgemm".into(),
            message: format!("SIMD level `{}` is not supported by this CPU", level.name()),
        });
    }
    let (m, n, k) = check_shapes(&a, &b, &c, epilogue)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_product_size(m, n, k)?;
    let problem = driver::Problem {
        m,
        n,
        k,
        alpha,
        a,
        b,
        beta,
        epilogue,
    };
    match level {
        SimdLevel::Scalar => driver::gemm::<scalar::ScalarKernel>(&problem, c.data, c.ldc),
        SimdLevel::Avx2Fma => driver::gemm::<avx2::Kernel>(&problem, c.data, c.ldc),
        SimdLevel::Avx512 => driver::gemm::<avx512::Kernel>(&problem, c.data, c.ldc),
    }
    Ok(())
}

/// Broadcast strides let a view be far larger than its buffer; the blocking
/// arithmetic (flop counts, padded sizes) must not overflow.
fn check_product_size(m: usize, n: usize, k: usize) -> Result<()> {
    let fits = (m + 16)
        .checked_mul(n + 16)
        .and_then(|x| x.checked_mul(k.max(1)))
        .and_then(|x| x.checked_mul(4));
    if fits.is_none() {
        return Err(KernelError::InvalidArgument {
            what: "sgemm".into(),
            message: format!("the product {m} x {k} times {k} x {n} is too large"),
        });
    }
    Ok(())
}

/// A right operand packed once for many products: the micro-kernel's column panels
/// over all of K, contiguous, so each product streams them instead of reading B
/// through its row stride (rows a power-of-two stride apart share a few L1 sets,
/// and a recurrent kernel read in place at every time step kept missing them).
/// Keeps the view it was packed from. A product gives the same bits as
/// [`sgemm_with_level`] at the same level whenever that takes the small path
/// without transposing the product (whether it packs B or reads it in place).
#[derive(Clone, Copy, Debug)]
pub struct PackedB<'a> {
    source: MatRef<'a>,
    panels: &'a [f32],
    level: SimdLevel,
}

impl<'a> PackedB<'a> {
    /// Floats [`PackedB::new`] needs for a `rows x cols` operand at `level`
    /// (`usize::MAX` if that does not fit in a `usize`).
    pub fn buffer_len(level: SimdLevel, rows: usize, cols: usize) -> usize {
        Self::checked_len(level, rows, cols).unwrap_or(usize::MAX)
    }

    fn checked_len(level: SimdLevel, rows: usize, cols: usize) -> Option<usize> {
        let nr = panel_width(level);
        cols.div_ceil(nr).checked_mul(nr)?.checked_mul(rows)
    }

    /// Packs `b` into `buf` (at least [`PackedB::buffer_len`] floats) for the
    /// micro-kernel of `level`.
    ///
    /// # Errors
    /// `InvalidArgument` if this CPU cannot execute `level`; `BufferTooSmall` if
    /// `b` does not fit its data or `buf` is too short.
    pub fn new(level: SimdLevel, b: MatRef<'a>, buf: &'a mut [f32]) -> Result<Self> {
        if !level.is_supported() {
            return Err(KernelError::InvalidArgument {
                what: "PackedB".into(),
                message: format!("SIMD level `{}` is not supported by this CPU", level.name()),
            });
        }
        b.check("PackedB source")?;
        let Some(len) = Self::checked_len(level, b.rows, b.cols) else {
            return Err(KernelError::InvalidArgument {
                what: "PackedB".into(),
                message: format!("a {} x {} operand is too large to pack", b.rows, b.cols),
            });
        };
        if buf.len() < len {
            return Err(KernelError::BufferTooSmall {
                what: format!("PackedB buffer for {} x {}", b.rows, b.cols),
                needed: len,
                got: buf.len(),
            });
        }
        let dst = &mut buf[..len];
        if len > 0 {
            match level {
                SimdLevel::Scalar => driver::pack_whole_b::<scalar::ScalarKernel>(&b, dst),
                SimdLevel::Avx2Fma => driver::pack_whole_b::<avx2::Kernel>(&b, dst),
                SimdLevel::Avx512 => driver::pack_whole_b::<avx512::Kernel>(&b, dst),
            }
        }
        Ok(PackedB {
            source: b,
            panels: dst,
            level,
        })
    }

    /// `b` as [`PackedB::new`] packed it for `level` into `panels` earlier (so one
    /// buffer can hold several packed operands).
    ///
    /// # Panics
    /// If `panels` is shorter than [`PackedB::buffer_len`].
    pub(crate) fn from_panels(level: SimdLevel, b: MatRef<'a>, panels: &'a [f32]) -> Self {
        let len = Self::buffer_len(level, b.rows, b.cols);
        PackedB {
            source: b,
            panels: &panels[..len],
            level,
        }
    }

    /// The level whose micro-kernel the panels are laid out for.
    pub fn level(&self) -> SimdLevel {
        self.level
    }
}

/// The width of B's packed panels at `level` (the micro-kernel's `NR`).
fn panel_width(level: SimdLevel) -> usize {
    match level {
        SimdLevel::Scalar => <scalar::ScalarKernel as kernel::MicroKernel>::NR,
        SimdLevel::Avx2Fma => <avx2::Kernel as kernel::MicroKernel>::NR,
        SimdLevel::Avx512 => <avx512::Kernel as kernel::MicroKernel>::NR,
    }
}

/// [`sgemm`] with B packed beforehand ([`PackedB`]), with the micro-kernel of the
/// level B was packed for. For products that reuse one B many times with a short
/// A: tasks of A's row strips, A read in place.
///
/// # Errors
/// As [`sgemm`].
pub fn sgemm_packed(
    alpha: f32,
    a: MatRef,
    b: &PackedB,
    beta: f32,
    c: MatMut,
    epilogue: &Epilogue,
) -> Result<()> {
    let (m, n, k) = check_shapes(&a, &b.source, &c, epilogue)?;
    if m == 0 || n == 0 || k == 0 {
        return sgemm_with_level(b.level, alpha, a, b.source, beta, c, epilogue);
    }
    check_product_size(m, n, k)?;
    let problem = driver::Problem {
        m,
        n,
        k,
        alpha,
        a,
        b: b.source,
        beta,
        epilogue,
    };
    match b.level {
        SimdLevel::Scalar => {
            driver::gemm_prepacked::<scalar::ScalarKernel>(&problem, c.data, c.ldc, b.panels)
        }
        SimdLevel::Avx2Fma => {
            driver::gemm_prepacked::<avx2::Kernel>(&problem, c.data, c.ldc, b.panels)
        }
        SimdLevel::Avx512 => {
            driver::gemm_prepacked::<avx512::Kernel>(&problem, c.data, c.ldc, b.panels)
        }
    }
    Ok(())
}

/// Offset of a segment of zeros in [`GatheredRows`] (a tap in a convolution's
/// padding).
pub const GATHER_ZEROS: usize = usize::MAX;

/// The left operand of [`sgemm_gathered`]: `rows` rows, row `i` the
/// concatenation over `t < taps` of the `width` floats of `source` from offset
/// `o[t]`, or of `width` zeros where `o[t]` is [`GATHER_ZEROS`]. `offsets(i, o)`
/// fills the offsets of consecutive rows from `i` on, `taps` per row (as many
/// rows as `o` holds), so a caller can step from row to row.
pub struct GatheredRows<'a, F: Fn(usize, &mut [usize])> {
    pub source: &'a [f32],
    pub rows: usize,
    pub taps: usize,
    pub width: usize,
    pub offsets: F,
}

/// `C <- epilogue(A · B + beta * C)` for a gathered A and B packed beforehand
/// (`taps * width` rows), on the calling thread, with the micro-kernel of the
/// level B was packed for. The sums run in the order of K, as for the same A
/// copied into a matrix (the bits may differ from [`sgemm_packed`]'s, which cuts K
/// into blocks), except that a tap whose segments are zeros in every row of a
/// strip of the kernel's rows is skipped: its products would add nothing (and,
/// against a non-finite B, NaN, which the padding should not contribute).
///
/// # Errors
/// `ShapeMismatch` when B does not have `taps * width` rows, C is not `rows x
/// B.cols` or the bias is not `B.cols` long; `InvalidArgument` when a segment is
/// past the end of `source` (every offset is checked before C is written, so C is
/// then unchanged) or the sizes overflow.
pub fn sgemm_gathered<F: Fn(usize, &mut [usize])>(
    a: &GatheredRows<F>,
    b: &PackedB,
    beta: f32,
    c: MatMut,
    epilogue: &Epilogue,
) -> Result<()> {
    let (m, n) = (a.rows, b.source.cols);
    let k = a
        .taps
        .checked_mul(a.width)
        .ok_or_else(|| KernelError::InvalidArgument {
            what: "sgemm_gathered".into(),
            message: format!("{} taps of {} floats overflow", a.taps, a.width),
        })?;
    if b.source.rows != k {
        return Err(KernelError::ShapeMismatch {
            what: "sgemm_gathered".into(),
            expected: format!("B with taps x width = {k} rows"),
            got: format!("B {} x {}", b.source.rows, n),
        });
    }
    check_output("sgemm_gathered", &c, m, n, epilogue)?;
    check_product_size(m, n, k)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        let empty = MatRef::new(&[], m, 0, 0, 0)?;
        return sgemm_with_level(b.level, 1.0, empty, b.source, beta, c, epilogue);
    }
    let target = driver::CTarget::new(c.data, c.ldc, m, n);
    match b.level {
        SimdLevel::Scalar => gathered::gemm_gathered::<scalar::ScalarKernel, F>(
            a, b.panels, n, beta, target, epilogue,
        ),
        SimdLevel::Avx2Fma => {
            gathered::gemm_gathered::<avx2::Kernel, F>(a, b.panels, n, beta, target, epilogue)
        }
        SimdLevel::Avx512 => {
            gathered::gemm_gathered::<avx512::Kernel, F>(a, b.panels, n, beta, target, epilogue)
        }
    }
}
