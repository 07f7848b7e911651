//! Recurrent layers over whole sequences: LSTM, GRU (reset after or before the
//! recurrent product) and SimpleRNN, forward and backward through time.
//!
//! The input projection `xp = x W + b` of all time steps is one GEMM done by the
//! caller, and these kernels run the recurrence on it; or, when the inputs are
//! rows looked up in a table (an `Embedding` feeding the layer), each step
//! multiplies its rows itself ([`LookupProjection`]), so the whole sequence's
//! projection is never written out and read back. All buffers are batch-major
//! (Keras's layout): `xp (batch, time, gates * units)`, the outputs `(batch, time,
//! units)`. Each step does one recurrent GEMM (two for GRU with the reset before)
//! and one fused elementwise kernel (`cells.rs`). The forward pass saves, per
//! (row, time), the gate activations and the previous state; the backward pass
//! runs from them, writes the pre-activation gradients `dxp` of every step (so
//! the caller gets `dx` and `dW` as single GEMMs), and computes the recurrent
//! kernel's gradient as one GEMM over all steps after the loop.
//!
//! Batch rows never interact in a recurrence, so the work is split into tasks of
//! whole rows that each run the entire sequence: one parallel section per call,
//! none per step. The split depends on the shape only (a step's GEMM never
//! splits its K dimension either), so results are bitwise identical for any
//! thread count.
//!
//! Masks (Keras 3's, as on its JAX backend): a row whose mask is 0 at a step keeps
//! its state, and its output there is that state (so masked steps before the
//! first valid one output the initial state), or 0 with `zero_output_for_mask`. `go_backwards` reads the inputs from the last step to
//! the first and writes the outputs in that (processing) order.

mod cells;
#[cfg(test)]
mod tests;

use cells::{Other, Rows, Sigmoid, StepInput, Tanh};

use crate::cpu::{self, SimdLevel};
use crate::error::{check_len, KernelError, Result};
use crate::gemm::{self, Epilogue, GatheredRows, MatMut, MatRef, PackedB, MIN_TASK_FLOPS};
use crate::par;
use crate::scratch::{with_scratch, Slot};
use crate::unary::Unary;

/// The recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// Gates `i, f, c, o` (Keras's order).
    Lstm,
    /// Gates `z, r, h`; `reset_after` applies the reset gate after the recurrent
    /// product (Keras 3's default, with a separate recurrent bias).
    Gru { reset_after: bool },
    /// `h = act(x W + h R + b)`.
    Simple,
}

impl Cell {
    /// Gate blocks of the projections (`xp` and `R` are `gates * units` wide).
    pub fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru { .. } => 3,
            Cell::Simple => 1,
        }
    }

    /// Blocks of `units` the forward pass saves per (row, time) step.
    pub fn workspace_blocks(self) -> usize {
        match self {
            Cell::Lstm => 5,
            Cell::Gru { .. } => 4,
            Cell::Simple => 1,
        }
    }

    /// Whether the cell carries a second state (the LSTM's `c`).
    pub fn has_cell_state(self) -> bool {
        self == Cell::Lstm
    }

    /// Whether the cell has a recurrent bias (GRU with reset_after).
    pub fn has_recurrent_bias(self) -> bool {
        self == Cell::Gru { reset_after: true }
    }
}

/// A recurrent layer's configuration and sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RnnSpec {
    pub cell: Cell,
    pub batch: usize,
    pub steps: usize,
    pub units: usize,
    /// The candidate / output activation (Keras `activation`, default tanh).
    pub activation: Unary,
    /// The gate activation (Keras `recurrent_activation`, default sigmoid).
    pub recurrent_activation: Unary,
    pub go_backwards: bool,
    pub zero_output_for_mask: bool,
}

impl RnnSpec {
    /// Width of `xp` and of the recurrent kernel.
    pub fn gate_width(&self) -> usize {
        self.cell.gates() * self.units
    }

    /// Width of the workspace per (row, time).
    pub fn workspace_width(&self) -> usize {
        self.cell.workspace_blocks() * self.units
    }

    /// Floating-point operations of the recurrent GEMMs of one pass.
    pub fn recurrent_flops(&self) -> usize {
        2 * self.batch * self.steps * self.units * self.gate_width()
    }

    /// Checks that both activations have a derivative computable from their
    /// outputs (the backward pass keeps only those).
    ///
    /// # Errors
    /// `InvalidArgument` naming the activation.
    pub fn check_activations(&self) -> Result<()> {
        for (what, act) in [
            ("activation", self.activation),
            ("recurrent_activation", self.recurrent_activation),
        ] {
            if act.grad_needs_input() && act != Unary::Linear {
                return Err(KernelError::InvalidArgument {
                    what: "recurrent layer".into(),
                    message: format!(
                        "{what} '{}' is not supported in a recurrent cell (its derivative needs its input); use one of tanh, sigmoid, relu, hard_sigmoid, linear, elu, selu, exponential, relu6",
                        act.name()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The input time step read at processing step `s`.
    fn time(&self, s: usize) -> usize {
        if self.go_backwards {
            self.steps - 1 - s
        } else {
            s
        }
    }

    /// Rows per parallel task: whole rows, at least 32 of them, tasks of at least
    /// `MIN_TASK_FLOPS`; from the shape alone.
    fn rows_per_task(&self) -> usize {
        let by_rows = (self.batch / 32).max(1);
        let by_work = (self.recurrent_flops() / MIN_TASK_FLOPS).max(1);
        let tasks = by_rows.min(by_work);
        self.batch.div_ceil(tasks).div_ceil(4) * 4
    }

    /// Whether one call runs as a single task (the executor may then run it next
    /// to independent work).
    pub fn single_task(&self) -> bool {
        self.rows_per_task() >= self.batch
    }
}

/// Where a forward pass finds each step's input projection `x W + b`.
#[derive(Debug, Clone, Copy)]
pub enum Projection<'a> {
    /// `(batch, steps, gates * units)`: computed beforehand for every step.
    Computed(&'a [f32]),
    /// Computed step by step from looked-up rows.
    Lookup(LookupProjection<'a>),
}

/// The input projection of rows looked up in a table: step `t` of batch row `b`
/// is `rows[positions[b * steps + t]] · kernel + bias`, each step's product
/// computed as [`crate::embed::take_dense`] computes it (the same bits, for
/// `width <= 256`), from the rows and positions [`crate::embed::take_distinct`]
/// wrote.
#[derive(Debug, Clone, Copy)]
pub struct LookupProjection<'a> {
    /// `(count, width)`: the looked-up rows.
    pub rows: &'a [f32],
    pub width: usize,
    /// `(batch, steps)`: each step's row among `rows`.
    pub positions: &'a [i32],
    /// `(width, gates * units)`.
    pub kernel: &'a [f32],
    /// `(gates * units)`, or `None`.
    pub bias: Option<&'a [f32]>,
}

impl LookupProjection<'_> {
    /// Checks the lengths against `steps` (batch rows times time steps) and the
    /// gate width, and that every position is one of the rows.
    fn check(&self, steps: usize, gate_width: usize) -> Result<()> {
        if self.width == 0 || !self.rows.len().is_multiple_of(self.width) {
            return Err(KernelError::InvalidArgument {
                what: "recurrent layer".into(),
                message: format!(
                    "looked-up rows of {} floats are not rows of a positive width {}",
                    self.rows.len(),
                    self.width
                ),
            });
        }
        check_len("positions", self.positions.len(), steps)?;
        check_len("input kernel", self.kernel.len(), self.width * gate_width)?;
        if let Some(bias) = self.bias {
            check_len("input bias", bias.len(), gate_width)?;
        }
        let count = self.rows.len() / self.width;
        match self
            .positions
            .iter()
            .position(|&p| p < 0 || p as usize >= count)
        {
            Some(at) => Err(KernelError::IndexOutOfRange {
                what: "recurrent layer positions".into(),
                position: at,
                value: i64::from(self.positions[at]),
                limit: count,
            }),
            None => Ok(()),
        }
    }
}

/// A [`LookupProjection`] with its kernel packed, shared by a pass's tasks.
struct StepProjector<'a> {
    rows: &'a [f32],
    width: usize,
    kernel: PackedB<'a>,
    bias: Option<&'a [f32]>,
}

impl StepProjector<'_> {
    /// Writes the projections of time step `t` of `n` batch rows, whose positions
    /// (`n x steps`) are `positions`, into `out` (`n x gates * units`).
    fn project(
        &self,
        positions: &[i32],
        steps: usize,
        t: usize,
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let width = self.width;
        let a = GatheredRows {
            source: self.rows,
            rows: n,
            taps: 1,
            width,
            // Checked by `LookupProjection::check`: every position is a row.
            offsets: |i: usize, o: &mut [usize]| {
                for (j, at) in o.iter_mut().enumerate() {
                    *at = positions[(i + j) * steps + t] as usize * width;
                }
            },
        };
        let bias = Epilogue {
            bias: self.bias,
            activation: None,
        };
        let g = out.len() / n;
        gemm::sgemm_gathered(&a, &self.kernel, 0.0, MatMut::row_major(out, n, g)?, &bias)
    }
}

/// The inputs of a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct RnnInputs<'a> {
    /// The input projection of every step.
    pub projection: Projection<'a>,
    /// `(units, gates * units)`, the recurrent kernel.
    pub recurrent_kernel: &'a [f32],
    /// `(gates * units)` for GRU with reset_after, else `None`.
    pub recurrent_bias: Option<&'a [f32]>,
    /// `(batch, units)` initial state; `None`: zeros.
    pub h0: Option<&'a [f32]>,
    /// `(batch, units)` initial cell state (LSTM with an initial state only).
    pub c0: Option<&'a [f32]>,
    /// `(batch, steps)` of 0 / 1, or `None`.
    pub mask: Option<&'a [f32]>,
}

/// The outputs of a forward pass (every element is written).
#[derive(Debug)]
pub struct RnnOutputs<'a> {
    /// `(batch, steps, units)`: the output of each processing step; `None` when
    /// nothing reads it (a layer returning only its last output), which spares
    /// a write of the whole sequence.
    pub sequence: Option<&'a mut [f32]>,
    /// `(batch, units)`: the final state.
    pub h_last: &'a mut [f32],
    /// `(batch, units)`: the final cell state (LSTM only).
    pub c_last: Option<&'a mut [f32]>,
    /// `(batch, steps, workspace_width)`: what the backward pass reads.
    pub workspace: &'a mut [f32],
    /// `(batch, steps, units)`: the state before each input step.
    pub h_prev: &'a mut [f32],
}

/// What the backward pass reads besides the forward's saved tensors.
#[derive(Debug, Clone, Copy)]
pub struct RnnGradInputs<'a> {
    pub recurrent_kernel: &'a [f32],
    pub mask: Option<&'a [f32]>,
    /// The forward's `workspace` and `h_prev`.
    pub workspace: &'a [f32],
    pub h_prev: &'a [f32],
    /// Gradients of the forward outputs; `None` where none flows.
    pub d_sequence: Option<&'a [f32]>,
    pub d_h_last: Option<&'a [f32]>,
    pub d_c_last: Option<&'a [f32]>,
    /// Whether `d_h0` must be the initial state's gradient. When nothing reads it
    /// (a layer without an initial state input) the backward skips the first
    /// step's product by the recurrent kernel into the state gradient, and `d_h0`
    /// does not hold it.
    pub initial_state_gradient: bool,
}

/// The gradients (every element is written).
#[derive(Debug)]
pub struct RnnGradOutputs<'a> {
    /// `(batch, steps, gates * units)`.
    pub d_xp: &'a mut [f32],
    /// `(units, gates * units)`.
    pub d_recurrent_kernel: &'a mut [f32],
    /// `(gates * units)`, GRU with reset_after only.
    pub d_recurrent_bias: Option<&'a mut [f32]>,
    pub d_h0: &'a mut [f32],
    /// LSTM only.
    pub d_c0: Option<&'a mut [f32]>,
}

fn check_level(level: SimdLevel) -> Result<()> {
    if !level.is_supported() {
        return Err(KernelError::InvalidArgument {
            what: "recurrent layer".into(),
            message: format!("SIMD level `{}` is not supported by this CPU", level.name()),
        });
    }
    Ok(())
}

fn presence(what: &str, expected: bool, got: bool) -> Result<()> {
    if expected != got {
        return Err(KernelError::InvalidArgument {
            what: "recurrent layer".into(),
            message: format!(
                "{what} is {} for this cell but was {}",
                if expected { "required" } else { "not used" },
                if got { "given" } else { "missing" }
            ),
        });
    }
    Ok(())
}

fn check_common(s: &RnnSpec, r: &[f32], mask: Option<&[f32]>) -> Result<()> {
    s.check_activations()?;
    let (b, t, u, g) = (s.batch, s.steps, s.units, s.gate_width());
    let sizes = b
        .checked_mul(t)
        .and_then(|bt| bt.checked_mul(s.workspace_width().max(g)));
    if sizes.is_none() || u.checked_mul(g).is_none() {
        return Err(KernelError::InvalidArgument {
            what: "recurrent layer".into(),
            message: format!("sizes overflow: batch {b}, steps {t}, units {u}"),
        });
    }
    check_len("recurrent kernel", r.len(), u * g)?;
    if let Some(m) = mask {
        check_len("mask", m.len(), b * t)?;
    }
    Ok(())
}

/// Runs the recurrence forward over every step.
///
/// # Errors
/// `ShapeMismatch` when a buffer's length does not match the spec;
/// `InvalidArgument` when an optional buffer's presence does not match the cell or
/// an activation is not supported.
pub fn rnn_forward(spec: &RnnSpec, x: &RnnInputs, out: RnnOutputs) -> Result<()> {
    rnn_forward_with_level(cpu::active(), spec, x, out)
}

/// [`rnn_forward`] with an explicit instruction set (tests run every level).
///
/// # Errors
/// As [`rnn_forward`], plus `InvalidArgument` if this CPU cannot run `level`.
pub fn rnn_forward_with_level(
    level: SimdLevel,
    spec: &RnnSpec,
    x: &RnnInputs,
    out: RnnOutputs,
) -> Result<()> {
    let s = spec;
    check_level(level)?;
    check_common(s, x.recurrent_kernel, x.mask)?;
    let (b, t, u, g, w) = (
        s.batch,
        s.steps,
        s.units,
        s.gate_width(),
        s.workspace_width(),
    );
    match x.projection {
        Projection::Computed(xp) => check_len("xp", xp.len(), b * t * g)?,
        Projection::Lookup(lookup) => lookup.check(b * t, g)?,
    }
    if let Some(h0) = x.h0 {
        check_len("initial state", h0.len(), b * u)?;
    }
    presence(
        "the initial cell state",
        s.cell.has_cell_state() && x.h0.is_some(),
        x.c0.is_some(),
    )?;
    presence(
        "the cell state output",
        s.cell.has_cell_state(),
        out.c_last.is_some(),
    )?;
    presence(
        "the recurrent bias",
        s.cell.has_recurrent_bias(),
        x.recurrent_bias.is_some(),
    )?;
    if let Some(c0) = x.c0 {
        check_len("initial cell state", c0.len(), b * u)?;
    }
    if let Some(rb) = x.recurrent_bias {
        check_len("recurrent bias", rb.len(), g)?;
    }
    if let Some(seq) = out.sequence.as_deref() {
        check_len("output sequence", seq.len(), b * t * u)?;
    }
    check_len("last state", out.h_last.len(), b * u)?;
    check_len("workspace", out.workspace.len(), b * t * w)?;
    check_len("previous states", out.h_prev.len(), b * t * u)?;
    let mut c_last = out.c_last;
    if let Some(c) = c_last.as_deref() {
        check_len("last cell state", c.len(), b * u)?;
    }
    copy_or_zero(out.h_last, x.h0);
    if let Some(c) = c_last.as_deref_mut() {
        copy_or_zero(c, x.c0);
    }
    if b == 0 || u == 0 || t == 0 {
        return Ok(());
    }
    // A zero initial state times the recurrent kernel is +0 everywhere unless the
    // kernel holds an infinity or a NaN (0 * inf is NaN).
    let zero_start = x.h0.is_none() && crate::reduce::all_finite(x.recurrent_kernel);
    // The step GEMMs read the recurrent kernel packed once, here (the GRU with the
    // reset before multiplies by two parts of it and reads them in place), and so
    // the input kernel of a projection computed step by step.
    let r = MatRef::row_major(x.recurrent_kernel, u, g)?;
    let gru_before = s.cell == (Cell::Gru { reset_after: false });
    let packed_len = if gru_before {
        0
    } else {
        PackedB::buffer_len(level, u, g)
    };
    let input_kernel_len = match x.projection {
        Projection::Computed(_) => 0,
        Projection::Lookup(lookup) => PackedB::buffer_len(level, lookup.width, g),
    };
    with_scratch(Slot::RecurrentKernel, packed_len, |buf| {
        let packed = (!gru_before)
            .then(|| PackedB::new(level, r, buf))
            .transpose()?;
        with_scratch(Slot::PackedKernel, input_kernel_len, |input_buf| {
            let projector;
            let input = match x.projection {
                Projection::Computed(xp) => TaskInput::Computed(xp),
                Projection::Lookup(lookup) => {
                    let kernel = MatRef::row_major(lookup.kernel, lookup.width, g)?;
                    projector = StepProjector {
                        rows: lookup.rows,
                        width: lookup.width,
                        kernel: PackedB::new(level, kernel, input_buf)?,
                        bias: lookup.bias,
                    };
                    TaskInput::Lookup {
                        projector: &projector,
                        positions: lookup.positions,
                    }
                }
            };
            let all = ForwardRows {
                input,
                mask: x.mask,
                sequence: out.sequence,
                h: out.h_last,
                c: c_last,
                workspace: out.workspace,
                h_prev: out.h_prev,
            };
            split_rows(all, b, s.rows_per_task(), &|part: ForwardRows, n| {
                forward_rows(s, level, x, zero_start, packed.as_ref(), part, n)
            })
        })
    })
}

/// A forward task's input projection: its rows of the one computed beforehand, or
/// their positions among the looked-up rows, which the task projects step by step.
#[derive(Clone, Copy)]
enum TaskInput<'a> {
    Computed(&'a [f32]),
    Lookup {
        projector: &'a StepProjector<'a>,
        positions: &'a [i32],
    },
}

impl TaskInput<'_> {
    fn split(self, rows: usize, k: usize) -> (Self, Self) {
        match self {
            TaskInput::Computed(xp) => {
                let (a, b) = cut_ref(xp, rows, k);
                (TaskInput::Computed(a), TaskInput::Computed(b))
            }
            TaskInput::Lookup {
                projector,
                positions,
            } => {
                let (a, b) = cut_ref(positions, rows, k);
                (
                    TaskInput::Lookup {
                        projector,
                        positions: a,
                    },
                    TaskInput::Lookup {
                        projector,
                        positions: b,
                    },
                )
            }
        }
    }
}

/// A task's rows of the per-row buffers; every buffer is batch-major, so the
/// rows of a task are one contiguous range of each.
struct ForwardRows<'a> {
    input: TaskInput<'a>,
    mask: Option<&'a [f32]>,
    sequence: Option<&'a mut [f32]>,
    h: &'a mut [f32],
    c: Option<&'a mut [f32]>,
    workspace: &'a mut [f32],
    h_prev: &'a mut [f32],
}

/// Buffers of `rows` batch rows that split into the first `k` rows and the rest.
trait SplitRows: Sized + Send {
    fn split(self, rows: usize, k: usize) -> (Self, Self);
}

/// Splits `x` (per-row buffers holding `rows * (x.len() / rows)` elements) at row `k`.
fn cut<T>(x: &mut [T], rows: usize, k: usize) -> (&mut [T], &mut [T]) {
    let per_row = x.len() / rows;
    x.split_at_mut(k * per_row)
}

fn cut_ref<T>(x: &[T], rows: usize, k: usize) -> (&[T], &[T]) {
    let per_row = x.len() / rows;
    x.split_at(k * per_row)
}

impl SplitRows for ForwardRows<'_> {
    fn split(self, rows: usize, k: usize) -> (Self, Self) {
        let (in0, in1) = self.input.split(rows, k);
        let (m0, m1) = self.mask.map(|x| cut_ref(x, rows, k)).unzip();
        let (s0, s1) = self.sequence.map(|x| cut(x, rows, k)).unzip();
        let (h0, h1) = cut(self.h, rows, k);
        let (c0, c1) = self.c.map(|x| cut(x, rows, k)).unzip();
        let (w0, w1) = cut(self.workspace, rows, k);
        let (p0, p1) = cut(self.h_prev, rows, k);
        (
            ForwardRows {
                input: in0,
                mask: m0,
                sequence: s0,
                h: h0,
                c: c0,
                workspace: w0,
                h_prev: p0,
            },
            ForwardRows {
                input: in1,
                mask: m1,
                sequence: s1,
                h: h1,
                c: c1,
                workspace: w1,
                h_prev: p1,
            },
        )
    }
}

/// Runs `task` on tasks of `per_task` rows (the last may be shorter), splitting
/// the buffers in halves of whole tasks with `par::join`: no allocation, and a
/// partition that depends on `rows` and `per_task` only. Returns the first error.
fn split_rows<B: SplitRows>(
    bufs: B,
    rows: usize,
    per_task: usize,
    task: &(impl Fn(B, usize) -> Result<()> + Sync),
) -> Result<()> {
    let tasks = rows.div_ceil(per_task);
    if tasks <= 1 {
        return task(bufs, rows);
    }
    let k = tasks / 2 * per_task;
    let (left, right) = bufs.split(rows, k);
    let (a, b) = par::join(
        || split_rows(left, k, per_task, task),
        || split_rows(right, rows - k, per_task, task),
    );
    a.and(b)
}

/// Calls `$body` with `$ra` / `$a` bound to the cell activations: the vectorised
/// sigmoid and tanh when the layer uses Keras's defaults (with fused
/// multiply-adds at the AVX levels, which have FMA), the general formulas
/// otherwise.
macro_rules! with_acts {
    ($spec:expr, $level:expr, |$ra:ident, $a:ident| $body:expr) => {
        match ($spec.recurrent_activation, $spec.activation, $level) {
            (Unary::Sigmoid, Unary::Tanh, SimdLevel::Scalar) => {
                let ($ra, $a) = (Sigmoid::<false>, Tanh::<false>);
                $body
            }
            (Unary::Sigmoid, Unary::Tanh, _) => {
                let ($ra, $a) = (Sigmoid::<true>, Tanh::<true>);
                $body
            }
            (ra, a, _) => {
                let ($ra, $a) = (Other(ra), Other(a));
                $body
            }
        }
    };
}

/// The whole sequence for `n` rows; `packed` is the recurrent kernel (all cells but
/// the GRU with the reset before). With `zero_start` (a zero initial state and a
/// finite recurrent kernel) the first step skips the product of the state by the
/// recurrent kernel (the GRU with the reset before, the first of its two).
fn forward_rows(
    s: &RnnSpec,
    level: SimdLevel,
    x: &RnnInputs,
    zero_start: bool,
    packed: Option<&PackedB>,
    part: ForwardRows,
    n: usize,
) -> Result<()> {
    let ForwardRows {
        input,
        mask,
        sequence: mut seq,
        h,
        mut c,
        workspace: ws,
        h_prev: hp,
    } = part;
    let (t_len, u, g, w) = (s.steps, s.units, s.gate_width(), s.workspace_width());
    let none = Epilogue::default();
    let gru_before = s.cell == (Cell::Gru { reset_after: false });
    let packed_kernel = || packed.expect("packed for every cell but the GRU with the reset before");
    let rh_len = if gru_before { n * u } else { 0 };
    let projected_len = match input {
        TaskInput::Computed(_) => 0,
        TaskInput::Lookup { .. } => n * g,
    };
    with_scratch(Slot::RecurrentStep, rh_len + projected_len, |buf| {
        let (rh_rows, projected) = buf.split_at_mut(rh_len);
        for step in 0..t_len {
            let t = s.time(step);
            let next = (step + 1 < t_len).then(|| s.time(step + 1));
            let rows = Rows {
                count: n,
                steps: t_len,
                units: u,
                t,
                mask,
            };
            let xp = match input {
                TaskInput::Computed(data) => StepInput { data, rows, next },
                TaskInput::Lookup {
                    projector,
                    positions,
                } => {
                    projector.project(positions, t_len, t, n, projected)?;
                    StepInput {
                        data: projected,
                        rows: Rows {
                            steps: 1,
                            t: 0,
                            ..rows
                        },
                        next: None,
                    }
                }
            };
            // The next step's `xp` and `ws` are prefetched row by row by the
            // step's first cell kernel (the SimpleRNN's input copy).
            rows.prefetch_all(next, hp, u);
            if let Some(seq) = seq.as_deref() {
                // The output sequence is in processing order.
                rows.prefetch_all((step + 1 < t_len).then_some(step + 1), seq, u);
            }
            // Each cell's first kernel saves the previous state of its rows.
            match s.cell {
                Cell::Lstm => {
                    let c = c.as_deref_mut().expect("checked: LSTM has a cell state");
                    if step == 0 && zero_start {
                        zero_state_product(ws, &rows, w, 0..g, None);
                    } else {
                        let hm = MatRef::row_major(h, n, u)?;
                        gemm::sgemm_packed(
                            1.0,
                            hm,
                            packed_kernel(),
                            0.0,
                            MatMut::new(&mut ws[t * w..], n, g, t_len * w)?,
                            &none,
                        )?;
                    }
                    with_acts!(s, level, |ra, a| cpu::run_at(
                        level,
                        &mut cells::LstmForward {
                            rows,
                            ra,
                            a,
                            next,
                            xp,
                            ws,
                            h_prev: hp,
                            h,
                            c
                        }
                    ));
                }
                Cell::Gru { reset_after: true } => {
                    if step == 0 && zero_start {
                        zero_state_product(ws, &rows, w, u..u + g, x.recurrent_bias);
                    } else {
                        let bias = Epilogue {
                            bias: x.recurrent_bias,
                            activation: None,
                        };
                        let hm = MatRef::row_major(h, n, u)?;
                        gemm::sgemm_packed(
                            1.0,
                            hm,
                            packed_kernel(),
                            0.0,
                            MatMut::new(&mut ws[t * w + u..], n, g, t_len * w)?,
                            &bias,
                        )?;
                    }
                    with_acts!(s, level, |ra, a| cpu::run_at(
                        level,
                        &mut cells::GruAfterForward {
                            rows,
                            ra,
                            a,
                            next,
                            xp,
                            ws,
                            h_prev: hp,
                            h
                        }
                    ));
                }
                Cell::Gru { reset_after: false } => {
                    let r_zr = MatRef::new(x.recurrent_kernel, u, 2 * u, g, 1)?;
                    let r_h = MatRef::new(&x.recurrent_kernel[2 * u..], u, u, g, 1)?;
                    if step == 0 && zero_start {
                        zero_state_product(ws, &rows, w, u..3 * u, None);
                    } else {
                        let hm = MatRef::row_major(h, n, u)?;
                        gemm::sgemm_with_level(
                            level,
                            1.0,
                            hm,
                            r_zr,
                            0.0,
                            MatMut::new(&mut ws[t * w + u..], n, 2 * u, t_len * w)?,
                            &none,
                        )?;
                    }
                    with_acts!(s, level, |ra, _a| cpu::run_at(
                        level,
                        &mut cells::GruBeforeGates {
                            rows,
                            ra,
                            next,
                            xp,
                            ws,
                            h_prev: hp,
                            h
                        }
                    ));
                    // (r * h) R_h into the candidate's slot; A and C interleave in
                    // the workspace, so A is copied out first.
                    for bi in 0..n {
                        let at = rows.at(bi, w).start + 3 * u;
                        cells::copy_units(&mut rh_rows[bi * u..(bi + 1) * u], &ws[at..at + u]);
                    }
                    let rh = MatRef::row_major(rh_rows, n, u)?;
                    gemm::sgemm_with_level(
                        level,
                        1.0,
                        rh,
                        r_h,
                        0.0,
                        MatMut::new(&mut ws[t * w + 2 * u..], n, u, t_len * w)?,
                        &none,
                    )?;
                    with_acts!(s, level, |_ra, a| cpu::run_at(
                        level,
                        &mut cells::GruBeforeUpdate { rows, a, xp, ws, h }
                    ));
                }
                Cell::Simple => {
                    for bi in 0..n {
                        xp.prefetch(bi, g);
                        rows.prefetch(next, bi, ws, w);
                        cells::copy_units(&mut ws[rows.at(bi, w)], xp.row(bi, g));
                    }
                    if step == 0 && zero_start {
                        // The product adds +0 to the input projection (which
                        // turns a -0 into +0).
                        for bi in 0..n {
                            ws[rows.at(bi, w)][..g].iter_mut().for_each(|x| *x += 0.0);
                        }
                    } else {
                        let hm = MatRef::row_major(h, n, u)?;
                        gemm::sgemm_packed(
                            1.0,
                            hm,
                            packed_kernel(),
                            1.0,
                            MatMut::new(&mut ws[t * w..], n, g, t_len * w)?,
                            &none,
                        )?;
                    }
                    with_acts!(s, level, |_ra, a| cpu::run_at(
                        level,
                        &mut cells::SimpleForward {
                            rows,
                            a,
                            ws,
                            h_prev: hp,
                            h
                        }
                    ));
                }
            }
            if let Some(seq) = seq.as_deref_mut() {
                write_outputs(s, &rows, step, h, seq);
            }
        }
        Ok(())
    })
}

/// What the product of a zero state by the recurrent kernel (plus `bias`, the
/// GEMM's epilogue) writes into `columns` of each row's workspace entry at this
/// step: `+0 + bias[j]`, or +0, the GEMM's bits. The first step of a layer without
/// an initial state skips that product.
fn zero_state_product(
    ws: &mut [f32],
    rows: &Rows,
    w: usize,
    columns: std::ops::Range<usize>,
    bias: Option<&[f32]>,
) {
    for bi in 0..rows.count {
        let entry = &mut ws[rows.at(bi, w)][columns.clone()];
        match bias {
            Some(bias) => {
                for (x, &b) in entry.iter_mut().zip(bias) {
                    *x = 0.0 + b;
                }
            }
            None => entry.fill(0.0),
        }
    }
}

/// The outputs of processing step `step`: the state (which a masked row keeps),
/// or 0 for masked rows with `zero_output_for_mask`.
fn write_outputs(s: &RnnSpec, rows: &Rows, step: usize, h: &[f32], seq: &mut [f32]) {
    let (t_len, u) = (s.steps, s.units);
    for bi in 0..rows.count {
        let out = &mut seq[(bi * t_len + step) * u..][..u];
        if rows.active(bi) || !s.zero_output_for_mask {
            cells::copy_units(out, &h[bi * u..(bi + 1) * u]);
        } else {
            out.fill(0.0);
        }
    }
}

/// Runs the recurrence backward through time.
///
/// # Errors
/// As [`rnn_forward`].
pub fn rnn_backward(spec: &RnnSpec, x: &RnnGradInputs, out: RnnGradOutputs) -> Result<()> {
    rnn_backward_with_level(cpu::active(), spec, x, out)
}

/// [`rnn_backward`] with an explicit instruction set.
///
/// # Errors
/// As [`rnn_forward_with_level`].
pub fn rnn_backward_with_level(
    level: SimdLevel,
    spec: &RnnSpec,
    x: &RnnGradInputs,
    out: RnnGradOutputs,
) -> Result<()> {
    let s = spec;
    check_level(level)?;
    check_common(s, x.recurrent_kernel, x.mask)?;
    let (b, t, u, g, w) = (
        s.batch,
        s.steps,
        s.units,
        s.gate_width(),
        s.workspace_width(),
    );
    check_len("workspace", x.workspace.len(), b * t * w)?;
    check_len("previous states", x.h_prev.len(), b * t * u)?;
    if let Some(d) = x.d_sequence {
        check_len("output sequence gradient", d.len(), b * t * u)?;
    }
    if let Some(d) = x.d_h_last {
        check_len("last state gradient", d.len(), b * u)?;
    }
    presence(
        "the cell state gradient output",
        s.cell.has_cell_state(),
        out.d_c0.is_some(),
    )?;
    if let Some(d) = x.d_c_last {
        presence(
            "the last cell state gradient",
            s.cell.has_cell_state(),
            true,
        )?;
        check_len("last cell state gradient", d.len(), b * u)?;
    }
    presence(
        "the recurrent bias gradient",
        s.cell.has_recurrent_bias(),
        out.d_recurrent_bias.is_some(),
    )?;
    check_len("input projection gradient", out.d_xp.len(), b * t * g)?;
    check_len(
        "recurrent kernel gradient",
        out.d_recurrent_kernel.len(),
        u * g,
    )?;
    check_len("initial state gradient", out.d_h0.len(), b * u)?;
    let mut d_c0 = out.d_c0;
    if let Some(d) = d_c0.as_deref() {
        check_len("initial cell state gradient", d.len(), b * u)?;
    }
    let mut d_rb = out.d_recurrent_bias;
    if let Some(d) = d_rb.as_deref() {
        check_len("recurrent bias gradient", d.len(), g)?;
    }
    copy_or_zero(out.d_h0, x.d_h_last);
    if let Some(dc) = d_c0.as_deref_mut() {
        copy_or_zero(dc, x.d_c_last);
    }
    if let Some(d) = d_rb.as_deref_mut() {
        d.fill(0.0);
    }
    if b == 0 || u == 0 || t == 0 {
        out.d_recurrent_kernel.fill(0.0);
        return Ok(());
    }
    let gru_after = s.cell == (Cell::Gru { reset_after: true });
    let gru_before = s.cell == (Cell::Gru { reset_after: false });
    // The step GEMMs multiply by Rᵀ: packed once (the GRU with the reset before
    // multiplies by two parts of it, transposed once and read in place).
    let (rt_len, packed_len) = if gru_before {
        (g * u, 0)
    } else {
        (0, PackedB::buffer_len(level, g, u))
    };
    let shared = rt_len + packed_len + if gru_after { b * t * g } else { 0 };
    with_scratch(Slot::RecurrentShared, shared, |buf| {
        let (rt, rest) = buf.split_at_mut(rt_len);
        let (packed_buf, drec) = rest.split_at_mut(packed_len);
        if gru_before {
            for (i, row) in x.recurrent_kernel.chunks_exact(g).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    rt[j * u + i] = v;
                }
            }
        }
        let rt: &[f32] = rt;
        let r = MatRef::row_major(x.recurrent_kernel, u, g)?;
        let packed = (!gru_before)
            .then(|| PackedB::new(level, r.t(), packed_buf))
            .transpose()?;
        let all = BackwardRows {
            mask: x.mask,
            workspace: x.workspace,
            h_prev: x.h_prev,
            d_sequence: x.d_sequence,
            d_xp: &mut *out.d_xp,
            d_rec: gru_after.then_some(&mut *drec),
            dh: &mut *out.d_h0,
            dc: d_c0,
        };
        split_rows(all, b, s.rows_per_task(), &|part: BackwardRows, n| {
            backward_rows(
                s,
                level,
                rt,
                x.initial_state_gradient,
                packed.as_ref(),
                part,
                n,
            )
        })?;
        // The recurrent kernel's gradient: one GEMM over all (row, time) steps.
        let hp = MatRef::row_major(x.h_prev, b * t, u)?.t();
        let dr = &mut *out.d_recurrent_kernel;
        let none = Epilogue::default();
        match s.cell {
            Cell::Gru { reset_after: true } => {
                let drec: &[f32] = drec;
                gemm::sgemm_with_level(
                    level,
                    1.0,
                    hp,
                    MatRef::row_major(drec, b * t, g)?,
                    0.0,
                    MatMut::row_major(dr, u, g)?,
                    &none,
                )?;
                if let Some(d) = d_rb {
                    for row in drec.chunks_exact(g) {
                        for (acc, &v) in d.iter_mut().zip(row) {
                            *acc += v;
                        }
                    }
                }
            }
            Cell::Gru { reset_after: false } => {
                let dxp: &[f32] = out.d_xp;
                let dzr = MatRef::new(dxp, b * t, 2 * u, g, 1)?;
                gemm::sgemm_with_level(
                    level,
                    1.0,
                    hp,
                    dzr,
                    0.0,
                    MatMut::new(dr, u, 2 * u, g)?,
                    &none,
                )?;
                let rh = MatRef::new(&x.workspace[3 * u..], b * t, u, w, 1)?.t();
                let dh = MatRef::new(&dxp[2 * u..], b * t, u, g, 1)?;
                gemm::sgemm_with_level(
                    level,
                    1.0,
                    rh,
                    dh,
                    0.0,
                    MatMut::new(&mut dr[2 * u..], u, u, g)?,
                    &none,
                )?;
            }
            Cell::Lstm | Cell::Simple => {
                let dxp = MatRef::row_major(out.d_xp, b * t, g)?;
                gemm::sgemm_with_level(
                    level,
                    1.0,
                    hp,
                    dxp,
                    0.0,
                    MatMut::row_major(dr, u, g)?,
                    &none,
                )?;
            }
        }
        Ok(())
    })
}

/// Columns `col..col + cols` of time step `t` of a `(n, t_len, width)` buffer, as an
/// `n x cols` matrix.
fn step_view(
    x: &[f32],
    n: usize,
    t: usize,
    t_len: usize,
    width: usize,
    col: usize,
    cols: usize,
) -> Result<MatRef<'_>> {
    MatRef::new(&x[t * width + col..], n, cols, t_len * width, 1)
}

fn copy_or_zero(dst: &mut [f32], src: Option<&[f32]>) {
    match src {
        Some(src) => dst.copy_from_slice(src),
        None => dst.fill(0.0),
    }
}

/// A task's rows of the backward pass's per-row buffers.
struct BackwardRows<'a> {
    mask: Option<&'a [f32]>,
    workspace: &'a [f32],
    h_prev: &'a [f32],
    d_sequence: Option<&'a [f32]>,
    d_xp: &'a mut [f32],
    /// GRU with reset_after: the gradient of the recurrent projection.
    d_rec: Option<&'a mut [f32]>,
    /// The running state gradients (ending as those of the initial states).
    dh: &'a mut [f32],
    dc: Option<&'a mut [f32]>,
}

impl SplitRows for BackwardRows<'_> {
    fn split(self, rows: usize, k: usize) -> (Self, Self) {
        let (m0, m1) = self.mask.map(|x| cut_ref(x, rows, k)).unzip();
        let (w0, w1) = cut_ref(self.workspace, rows, k);
        let (p0, p1) = cut_ref(self.h_prev, rows, k);
        let (s0, s1) = self.d_sequence.map(|x| cut_ref(x, rows, k)).unzip();
        let (x0, x1) = cut(self.d_xp, rows, k);
        let (r0, r1) = self.d_rec.map(|x| cut(x, rows, k)).unzip();
        let (h0, h1) = cut(self.dh, rows, k);
        let (c0, c1) = self.dc.map(|x| cut(x, rows, k)).unzip();
        (
            BackwardRows {
                mask: m0,
                workspace: w0,
                h_prev: p0,
                d_sequence: s0,
                d_xp: x0,
                d_rec: r0,
                dh: h0,
                dc: c0,
            },
            BackwardRows {
                mask: m1,
                workspace: w1,
                h_prev: p1,
                d_sequence: s1,
                d_xp: x1,
                d_rec: r1,
                dh: h1,
                dc: c1,
            },
        )
    }
}

/// The whole sequence backward for `n` rows: with `packed` = Rᵀ packed, or (the
/// GRU with the reset before) `rt` = Rᵀ.
fn backward_rows(
    s: &RnnSpec,
    level: SimdLevel,
    rt: &[f32],
    initial_state_gradient: bool,
    packed: Option<&PackedB>,
    part: BackwardRows,
    n: usize,
) -> Result<()> {
    let BackwardRows {
        mask,
        workspace: ws,
        h_prev: hp,
        d_sequence,
        d_xp: dxp,
        mut d_rec,
        dh,
        mut dc,
    } = part;
    let (t_len, u, g) = (s.steps, s.units, s.gate_width());
    let none = Epilogue::default();
    let packed_rt = || packed.expect("packed for every cell but the GRU with the reset before");
    // Per task: the GRU's `da_h R_hᵀ`.
    let gru_before = s.cell == (Cell::Gru { reset_after: false });
    with_scratch(
        Slot::RecurrentStep,
        if gru_before { n * u } else { 0 },
        |gtmp| {
            for step in (0..t_len).rev() {
                let t = s.time(step);
                let next = (step > 0).then(|| s.time(step - 1));
                let rows = Rows {
                    count: n,
                    steps: t_len,
                    units: u,
                    t,
                    mask,
                };
                // The next step's `ws` and `dxp` (and the GRU's `hprev` and
                // `drec`) are prefetched row by row by the step's first cell kernel.
                if let Some(d) = d_sequence {
                    // The output gradient is in processing order.
                    rows.prefetch_all(step.checked_sub(1), d, u);
                }
                add_output_gradient(s, &rows, step, d_sequence, dh);
                // The first step's product by the recurrent kernel into the state
                // gradient only makes `d_h0`.
                let only_d_h0 = step == 0 && !initial_state_gradient;
                match s.cell {
                    Cell::Lstm => {
                        let dc = dc.as_deref_mut().expect("checked: LSTM has a cell state");
                        with_acts!(s, level, |ra, a| cpu::run_at(
                            level,
                            &mut cells::LstmBackward {
                                rows,
                                ra,
                                a,
                                next,
                                ws,
                                dz: dxp,
                                dh,
                                dc
                            }
                        ));
                        if !only_d_h0 {
                            gemm::sgemm_packed(
                                1.0,
                                step_view(dxp, n, t, t_len, g, 0, g)?,
                                packed_rt(),
                                1.0,
                                MatMut::row_major(dh, n, u)?,
                                &none,
                            )?;
                        }
                    }
                    Cell::Gru { reset_after: true } => {
                        let drec = d_rec
                            .as_deref_mut()
                            .expect("checked: reset_after keeps drec");
                        with_acts!(s, level, |ra, a| cpu::run_at(
                            level,
                            &mut cells::GruAfterBackward {
                                rows,
                                ra,
                                a,
                                next,
                                ws,
                                hprev: hp,
                                dxp,
                                drec,
                                dh
                            }
                        ));
                        if !only_d_h0 {
                            let dr = MatRef::new(&drec[t * g..], n, g, t_len * g, 1)?;
                            gemm::sgemm_packed(
                                1.0,
                                dr,
                                packed_rt(),
                                1.0,
                                MatMut::row_major(dh, n, u)?,
                                &none,
                            )?;
                        }
                    }
                    Cell::Gru { reset_after: false } => {
                        with_acts!(s, level, |ra, a| cpu::run_at(
                            level,
                            &mut cells::GruBeforeBackwardUpdate {
                                rows,
                                ra,
                                a,
                                next,
                                ws,
                                hprev: hp,
                                dxp,
                                dh
                            }
                        ));
                        let rt_h = MatRef::row_major(&rt[2 * u * u..], u, u)?;
                        gemm::sgemm_with_level(
                            level,
                            1.0,
                            step_view(dxp, n, t, t_len, g, 2 * u, u)?,
                            rt_h,
                            0.0,
                            MatMut::row_major(gtmp, n, u)?,
                            &none,
                        )?;
                        with_acts!(s, level, |ra, _a| cpu::run_at(
                            level,
                            &mut cells::GruBeforeBackwardReset {
                                rows,
                                ra,
                                ws,
                                hprev: hp,
                                g: gtmp,
                                dxp,
                                dh
                            }
                        ));
                        if !only_d_h0 {
                            let rt_zr = MatRef::row_major(rt, 2 * u, u)?;
                            gemm::sgemm_with_level(
                                level,
                                1.0,
                                step_view(dxp, n, t, t_len, g, 0, 2 * u)?,
                                rt_zr,
                                1.0,
                                MatMut::row_major(dh, n, u)?,
                                &none,
                            )?;
                        }
                    }
                    Cell::Simple => {
                        with_acts!(s, level, |_ra, a| cpu::run_at(
                            level,
                            &mut cells::SimpleBackward {
                                rows,
                                a,
                                next,
                                ws,
                                dz: dxp,
                                dh
                            }
                        ));
                        if !only_d_h0 {
                            gemm::sgemm_packed(
                                1.0,
                                step_view(dxp, n, t, t_len, g, 0, g)?,
                                packed_rt(),
                                1.0,
                                MatMut::row_major(dh, n, u)?,
                                &none,
                            )?;
                        }
                    }
                }
            }
            Ok(())
        },
    )
}

/// Adds processing step `step`'s output gradient to the state gradient (a
/// masked row's output is its kept state, or the constant 0 with
/// `zero_output_for_mask`).
fn add_output_gradient(
    s: &RnnSpec,
    rows: &Rows,
    step: usize,
    d_sequence: Option<&[f32]>,
    dh: &mut [f32],
) {
    let Some(d_sequence) = d_sequence else {
        return;
    };
    let (t_len, u) = (s.steps, s.units);
    for bi in 0..rows.count {
        if rows.active(bi) || !s.zero_output_for_mask {
            let ds = &d_sequence[(bi * t_len + step) * u..][..u];
            dh[bi * u..(bi + 1) * u]
                .iter_mut()
                .zip(ds)
                .for_each(|(a, &v)| *a += v);
        }
    }
}
