//! Ops: each file holds the shape rule, forward and backward of one op family, and
//! `build` is the one registry from the op name Python uses to the op.

use std::any::Any;
use std::fmt::Debug;

use serde_json::{Map, Value as Json};

use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{TensorMut, TensorRef, TensorType};

pub mod binary;
pub mod conv;
pub mod gather;
pub mod layout;
pub mod matmul;
pub mod mode;
pub mod pool;
pub mod random;
pub mod recurrent;
pub mod reduce;
pub mod softmax;
pub mod unary;

/// Per-step facts an op may need.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ctx {
    /// The global seed of the program (dropout and noise ops key their RNG on it).
    pub seed: u64,
    /// The step counter, incremented once per executed training step.
    pub step: u64,
    /// Whether this is a training step (dropout active).
    pub training: bool,
}

/// The fewest elements any elementwise, reduction or data-movement kernel hands to
/// one parallel task (`pyfuncnet_kernels`' chunk sizes): a tensor no larger never
/// makes a kernel split its work across threads.
pub const SMALLEST_KERNEL_CHUNK: usize = 1 << 14;

/// What [`Op::cost`] estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpCost {
    /// Work in about nanoseconds of one core (one unit per element moved, or per
    /// ~32 flops of GEMM).
    pub work: usize,
    /// Whether the kernels run it as one task (never splitting it across threads).
    pub single_task: bool,
}

/// Access to an op's concrete type, for graph passes that match patterns of ops.
pub trait AsAny {
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// An operation of the graph.
pub trait Op: Debug + Send + Sync + AsAny {
    /// The name Python uses for this op (`"matmul"`, `"relu"`, ...).
    fn name(&self) -> &'static str;

    /// Output types from input types.
    ///
    /// # Errors
    /// `Shape` / `DType` errors that say what was expected and what was given.
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>>;

    /// Computes the outputs. Output buffers have exactly the inferred sizes and are
    /// not zeroed: an op writes every element.
    fn forward(&self, ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()>;

    /// Which input's buffer output 0 may take over, computing in place, for these
    /// input types; `None` (the default) when the op has no in-place form. That
    /// input has output 0's element count and storage type.
    fn inplace_input(&self, _inputs: &[&TensorType]) -> Option<usize> {
        None
    }

    /// [`Op::forward`] for a single-output op with output 0 in the buffer of input
    /// `inplace` (what [`Op::inplace_input`] chose): on entry `out` holds that
    /// input's values, and `inputs[inplace]` is an empty placeholder. Gives bitwise
    /// the same result as `forward`.
    fn forward_inplace(
        &self,
        _ctx: &Ctx,
        _inputs: &[TensorRef],
        _inplace: usize,
        _out: &mut TensorMut,
    ) -> Result<()> {
        Err(GraphError::unsupported(format!(
            "{}: no in-place form",
            self.name()
        )))
    }

    /// A rough single-thread cost, for the executor's choice of which chains of
    /// ops of one stage to run side by side. The default suits elementwise and
    /// data-movement ops: one unit per element read or written, split by the
    /// kernels only past [`SMALLEST_KERNEL_CHUNK`] elements.
    fn cost(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> OpCost {
        let sizes = inputs.iter().chain(outputs).map(|t| t.numel());
        OpCost {
            work: sizes.clone().sum(),
            single_task: sizes.clone().all(|n| n <= SMALLEST_KERNEL_CHUNK),
        }
    }

    /// Appends the nodes computing the gradient of each input from the gradients of
    /// the outputs (`None` = no gradient flows into that output). Returns one entry
    /// per input; `None` for inputs that get no gradient (indices, masks).
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>>;
}

/// Typed access to an op's attributes, with errors naming the op and attribute.
pub struct Attrs<'a> {
    op: &'a str,
    map: Option<&'a Map<String, Json>>,
}

impl<'a> Attrs<'a> {
    pub fn new(op: &'a str, attrs: &'a Json) -> Result<Self> {
        match attrs {
            Json::Object(map) => Ok(Attrs { op, map: Some(map) }),
            Json::Null => Ok(Attrs { op, map: None }),
            other => Err(GraphError::value(format!(
                "{op}: attributes must be an object, got {other}"
            ))),
        }
    }

    fn raw(&self, key: &str) -> Option<&'a Json> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, expected: &str, got: &Json) -> GraphError {
        GraphError::value(format!(
            "{}: attribute '{key}' must be {expected}, got {got}",
            self.op
        ))
    }

    fn missing(&self, key: &str) -> GraphError {
        GraphError::value(format!("{}: missing attribute '{key}'", self.op))
    }

    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| self.bad(key, "a number", v)),
        }
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        let v = self.raw(key).ok_or_else(|| self.missing(key))?;
        v.as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| self.bad(key, "a number", v))
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, "a boolean", v)),
        }
    }

    pub fn i64(&self, key: &str) -> Result<i64> {
        let v = self.raw(key).ok_or_else(|| self.missing(key))?;
        v.as_i64().ok_or_else(|| self.bad(key, "an integer", v))
    }

    pub fn i64_or(&self, key: &str, default: i64) -> Result<i64> {
        match self.raw(key) {
            None => Ok(default),
            Some(_) => self.i64(key),
        }
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| self.bad(key, "a non-negative integer", v)),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.raw(key).ok_or_else(|| self.missing(key))?;
        v.as_u64()
            .map(|x| x as usize)
            .ok_or_else(|| self.bad(key, "a non-negative integer", v))
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.bad(key, "a string", v)),
        }
    }

    pub fn i64_list(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.raw(key).ok_or_else(|| self.missing(key))?;
        match v {
            Json::Array(items) => items
                .iter()
                .map(|x| {
                    x.as_i64()
                        .ok_or_else(|| self.bad(key, "a list of integers", v))
                })
                .collect(),
            Json::Number(n) => n
                .as_i64()
                .map(|x| vec![x])
                .ok_or_else(|| self.bad(key, "a list of integers", v)),
            _ => Err(self.bad(key, "a list of integers", v)),
        }
    }

    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        self.i64_list(key)?
            .into_iter()
            .map(|x| {
                usize::try_from(x).map_err(|_| {
                    GraphError::value(format!(
                        "{}: attribute '{key}' must be non-negative, got {x}",
                        self.op
                    ))
                })
            })
            .collect()
    }

    /// An optional list of axes (possibly negative), normalised against `rank`:
    /// sorted, deduplicated, each in `[0, rank)`. `None` means all axes.
    pub fn axes(&self, key: &str, rank: usize) -> Result<Option<Vec<usize>>> {
        if self.raw(key).is_none() {
            return Ok(None);
        }
        let list = self.i64_list(key)?;
        normalize_axes(self.op, &list, rank).map(Some)
    }
}

/// Turns possibly negative axes into sorted unique axes in `[0, rank)`.
///
/// # Errors
/// `Value` naming the op, the axis and the rank when an axis is out of range.
pub fn normalize_axes(op: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        out.push(normalize_axis(op, a, rank)?);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// One possibly negative axis, normalised to `[0, rank)`.
pub fn normalize_axis(op: &str, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(GraphError::value(format!(
            "{op}: axis {axis} is out of bounds for a tensor of rank {rank}"
        )));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Checks that an op's input `what` is float (or bool) rather than int32 indices.
///
/// # Errors
/// `DType` naming the op, the input and its shape.
pub fn expect_float(op: &str, what: &str, t: &TensorType) -> Result<()> {
    if t.dtype == crate::tensor::DType::I32 {
        return Err(GraphError::dtype(format!(
            "{op}: {what} must be a float tensor, got int32 of shape {} (cast it first)",
            crate::tensor::fmt_shape(&t.shape)
        )));
    }
    Ok(())
}

/// Checks the number of inputs an op received.
pub fn expect_inputs(op: &str, inputs: &[&TensorType], expected: usize) -> Result<()> {
    if inputs.len() != expected {
        return Err(GraphError::value(format!(
            "{op}: expected {expected} inputs, got {}",
            inputs.len()
        )));
    }
    Ok(())
}

/// The registry: builds the op Python calls `name` from its attributes.
///
/// # Errors
/// `Unsupported` for an unknown op name; `Value` for bad attributes.
pub fn build(name: &str, attrs: &Json) -> Result<Box<dyn Op>> {
    let a = Attrs::new(name, attrs)?;
    if let Some(op) = unary::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = binary::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = reduce::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = conv::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = matmul::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = layout::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = softmax::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = gather::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = random::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = pool::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = mode::build(name, &a)? {
        return Ok(op);
    }
    if let Some(op) = recurrent::build(name, &a)? {
        return Ok(op);
    }
    Err(GraphError::unsupported(format!("unknown op '{name}'")))
}
