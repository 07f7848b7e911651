//! Ops that move data without arithmetic: reshape, transpose, concatenate, split,
//! slice, pad, broadcast_to and its adjoint sum_to_shape.

use pyfuncnet_kernels::{binary as kb, layout as k, reduce as kr};

use super::{expect_inputs, normalize_axis, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, with_same_dtype, DType, DataMut, TensorMut, TensorRef, TensorType};

/// Copies the data under a new shape with the same element count.
#[derive(Debug, Clone)]
pub struct ReshapeOp {
    /// Target shape; at most one `-1`, resolved against the input size.
    pub shape: Vec<i64>,
}

/// Permutes the axes.
#[derive(Debug, Clone)]
pub struct TransposeOp {
    pub perm: Vec<usize>,
}

/// Joins inputs along one axis.
#[derive(Debug, Clone)]
pub struct ConcatOp {
    pub axis: i64,
}

/// Splits the input along one axis into pieces of the given sizes.
#[derive(Debug, Clone)]
pub struct SplitOp {
    pub axis: i64,
    pub sizes: Vec<usize>,
}

/// `out[i] = x[begin + i * step]` per axis, `out` of shape `shape`.
#[derive(Debug, Clone)]
pub struct SliceOp {
    pub begin: Vec<usize>,
    pub step: Vec<usize>,
    pub shape: Vec<usize>,
}

/// The adjoint of [`SliceOp`]: scatters `dy` into zeros of shape `input_shape`.
#[derive(Debug, Clone)]
pub struct SliceGradOp {
    pub begin: Vec<usize>,
    pub step: Vec<usize>,
    pub input_shape: Vec<usize>,
}

/// Constant padding.
#[derive(Debug, Clone)]
pub struct PadOp {
    pub before: Vec<usize>,
    pub after: Vec<usize>,
    pub value: f32,
}

/// Broadcasts to a shape (NumPy rules).
#[derive(Debug, Clone)]
pub struct BroadcastToOp {
    pub shape: Vec<usize>,
}

/// Sums a broadcast array back down to `shape`: the adjoint of [`BroadcastToOp`].
#[derive(Debug, Clone)]
pub struct SumToShapeOp {
    pub shape: Vec<usize>,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    let op: Box<dyn Op> = match name {
        "reshape" => Box::new(ReshapeOp {
            shape: a.i64_list("shape")?,
        }),
        "transpose" => Box::new(TransposeOp {
            perm: a.usize_list("perm")?,
        }),
        "concatenate" => Box::new(ConcatOp {
            axis: a.i64_or("axis", -1)?,
        }),
        "split" => Box::new(SplitOp {
            axis: a.i64_or("axis", 0)?,
            sizes: a.usize_list("sizes")?,
        }),
        "slice" => {
            let begin = a.usize_list("begin")?;
            let step = if a.has("step") {
                a.usize_list("step")?
            } else {
                vec![1; begin.len()]
            };
            Box::new(SliceOp {
                begin,
                step,
                shape: a.usize_list("shape")?,
            })
        }
        "slice_grad" => {
            let begin = a.usize_list("begin")?;
            let step = if a.has("step") {
                a.usize_list("step")?
            } else {
                vec![1; begin.len()]
            };
            Box::new(SliceGradOp {
                begin,
                step,
                input_shape: a.usize_list("input_shape")?,
            })
        }
        "pad" => Box::new(PadOp {
            before: a.usize_list("before")?,
            after: a.usize_list("after")?,
            value: a.f32_or("value", 0.0)?,
        }),
        "broadcast_to" => Box::new(BroadcastToOp {
            shape: a.usize_list("shape")?,
        }),
        "sum_to_shape" => Box::new(SumToShapeOp {
            shape: a.usize_list("shape")?,
        }),
        _ => return Ok(None),
    };
    Ok(Some(op))
}

/// Resolves a reshape target (with at most one -1) against `numel`.
pub fn resolve_shape(op: &str, from: &[usize], target: &[i64]) -> Result<Vec<usize>> {
    let numel: usize = from.iter().product();
    let bad = || {
        GraphError::shape(format!(
            "{op}: cannot reshape a tensor of shape {} ({numel} elements) into shape {target:?}",
            fmt_shape(from)
        ))
    };
    let mut known = 1usize;
    let mut free = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if free.is_none() => free = Some(i),
            d if d >= 0 => known = known.checked_mul(d as usize).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    let mut out: Vec<usize> = target.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = free {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(bad());
        }
        out[i] = numel / known;
    } else if known != numel {
        return Err(bad());
    }
    Ok(out)
}

/// Concatenates `inputs` (their data read by `data`) into `y`. Up to
/// [`STACK_PARTS`] parts are listed on the stack, so a training step that
/// concatenates does not allocate.
fn concat_parts<'a, T: Copy + Send + Sync + 'a>(
    inputs: &[TensorRef<'a>],
    data: impl Fn(&TensorRef<'a>) -> Result<&'a [T]>,
    axis: usize,
    y: &mut [T],
    out_shape: &[usize],
) -> Result<()> {
    const STACK_PARTS: usize = 16;
    if inputs.len() > STACK_PARTS {
        let parts: Vec<(&[T], &[usize])> = inputs
            .iter()
            .map(|t| Ok((data(t)?, t.shape)))
            .collect::<Result<_>>()?;
        return Ok(k::concat(&parts, axis, y, out_shape)?);
    }
    let mut parts: [(&[T], &[usize]); STACK_PARTS] = [(&[], &[]); STACK_PARTS];
    for (p, t) in parts.iter_mut().zip(inputs) {
        *p = (data(t)?, t.shape);
    }
    Ok(k::concat(&parts[..inputs.len()], axis, y, out_shape)?)
}

/// Copies between same-typed buffers.
fn copy(input: &TensorRef, output: &mut TensorMut) -> Result<()> {
    with_same_dtype!("copy", &input.data, &mut output.data, |x, y| y
        .copy_from_slice(x));
    Ok(())
}

impl Op for ReshapeOp {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("reshape", inputs, 1)?;
        let shape = resolve_shape("reshape", &inputs[0].shape, &self.shape)?;
        Ok(vec![TensorType::new(shape, inputs[0].dtype)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        copy(&inputs[0], &mut outputs[0])
    }

    /// In place, a reshape moves nothing: the buffer already holds the values.
    fn inplace_input(&self, _inputs: &[&TensorType]) -> Option<usize> {
        Some(0)
    }

    fn forward_inplace(
        &self,
        _ctx: &Ctx,
        _inputs: &[TensorRef],
        _inplace: usize,
        _out: &mut TensorMut,
    ) -> Result<()> {
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        let shape = g.shape(inputs[0]).to_vec();
        Ok(vec![Some(g.reshape(dy, &shape)?)])
    }
}

impl Op for TransposeOp {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("transpose", inputs, 1)?;
        let rank = inputs[0].rank();
        let mut seen = vec![false; rank];
        let valid = self.perm.len() == rank
            && self
                .perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(GraphError::value(format!(
                "transpose: perm {:?} is not a permutation of the {rank} axes of shape {}",
                self.perm,
                fmt_shape(&inputs[0].shape)
            )));
        }
        let shape = self.perm.iter().map(|&p| inputs[0].shape[p]).collect();
        Ok(vec![TensorType::new(shape, inputs[0].dtype)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = inputs[0].shape;
        with_same_dtype!(
            "transpose",
            &inputs[0].data,
            &mut outputs[0].data,
            |x, y| { k::transpose(x, shape, &self.perm, y)? }
        );
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        let mut inverse = vec![0; self.perm.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(vec![Some(
            g.apply1(Box::new(TransposeOp { perm: inverse }), &[dy])?,
        )])
    }
}

impl Op for ConcatOp {
    fn name(&self) -> &'static str {
        "concatenate"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        let first = inputs
            .first()
            .ok_or_else(|| GraphError::value("concatenate: needs at least one input"))?;
        let axis = normalize_axis("concatenate", self.axis, first.rank())?;
        let mut shape = first.shape.clone();
        shape[axis] = 0;
        for t in inputs {
            let compatible = t.rank() == first.rank()
                && t.dtype == first.dtype
                && (0..t.rank()).all(|d| d == axis || t.shape[d] == first.shape[d]);
            if !compatible {
                let shapes: Vec<String> = inputs.iter().map(|t| fmt_shape(&t.shape)).collect();
                return Err(GraphError::shape(format!(
                    "concatenate: inputs must match in every dimension except axis {}, got shapes [{}]",
                    self.axis,
                    shapes.join(", ")
                )));
            }
            shape[axis] += t.shape[axis];
        }
        Ok(vec![TensorType::new(shape, first.dtype)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let axis = normalize_axis("concatenate", self.axis, inputs[0].shape.len())?;
        let out_shape = outputs[0].shape;
        match &mut outputs[0].data {
            DataMut::F32(y) => concat_parts(inputs, |t| t.f32(), axis, y, out_shape)?,
            DataMut::I32(y) => concat_parts(inputs, |t| t.i32(), axis, y, out_shape)?,
        }
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None; inputs.len()]);
        };
        let axis = normalize_axis("concatenate", self.axis, g.shape(dy).len())?;
        let sizes = inputs.iter().map(|&v| g.shape(v)[axis]).collect();
        let parts = g.apply(
            Box::new(SplitOp {
                axis: axis as i64,
                sizes,
            }),
            &[dy],
        )?;
        Ok(parts
            .into_iter()
            .zip(inputs)
            .map(|(p, &v)| g.is_float(v).then_some(p))
            .collect())
    }
}

impl Op for SplitOp {
    fn name(&self) -> &'static str {
        "split"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("split", inputs, 1)?;
        let t = inputs[0];
        let axis = normalize_axis("split", self.axis, t.rank())?;
        if self.sizes.iter().sum::<usize>() != t.shape[axis] {
            return Err(GraphError::shape(format!(
                "split: sizes {:?} do not add up to dimension {} ({}) of shape {}",
                self.sizes,
                axis,
                t.shape[axis],
                fmt_shape(&t.shape)
            )));
        }
        Ok(self
            .sizes
            .iter()
            .map(|&s| {
                let mut shape = t.shape.clone();
                shape[axis] = s;
                TensorType::new(shape, t.dtype)
            })
            .collect())
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let axis = normalize_axis("split", self.axis, inputs[0].shape.len())?;
        // Each output is a slice starting at the running offset along `axis` (on the
        // stack: no allocation per step; the kernel refuses ranks above MAX_RANK).
        let rank = inputs[0].shape.len().min(k::MAX_RANK);
        let mut begin = [0usize; k::MAX_RANK];
        let step = [1usize; k::MAX_RANK];
        for out in outputs.iter_mut() {
            let shape = out.shape;
            with_same_dtype!("split", &inputs[0].data, &mut out.data, |x, y| {
                k::strided_slice(x, inputs[0].shape, &begin[..rank], &step[..rank], y, shape)?
            });
            begin[axis] += shape[axis];
        }
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        if dys.iter().all(|d| d.is_none()) {
            return Ok(vec![None]);
        }
        let mut parts = Vec::with_capacity(outputs.len());
        for (&o, d) in outputs.iter().zip(dys) {
            parts.push(match d {
                Some(d) => *d,
                None => g.zeros(g.shape(o).to_vec())?,
            });
        }
        let _ = inputs;
        Ok(vec![Some(
            g.apply1(Box::new(ConcatOp { axis: self.axis }), &parts)?,
        )])
    }
}

fn check_slice(
    op: &str,
    x: &[usize],
    begin: &[usize],
    step: &[usize],
    out: &[usize],
) -> Result<()> {
    let ok = begin.len() == x.len()
        && step.len() == x.len()
        && out.len() == x.len()
        && (0..x.len())
            .all(|d| step[d] >= 1 && (out[d] == 0 || begin[d] + (out[d] - 1) * step[d] < x[d]));
    if !ok {
        return Err(GraphError::shape(format!(
            "{op}: begin {begin:?}, step {step:?} and result shape {out:?} do not fit in shape {}",
            fmt_shape(x)
        )));
    }
    Ok(())
}

impl Op for SliceOp {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("slice", inputs, 1)?;
        check_slice(
            "slice",
            &inputs[0].shape,
            &self.begin,
            &self.step,
            &self.shape,
        )?;
        Ok(vec![TensorType::new(self.shape.clone(), inputs[0].dtype)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let (xs, ys) = (inputs[0].shape, outputs[0].shape);
        with_same_dtype!("slice", &inputs[0].data, &mut outputs[0].data, |x, y| {
            k::strided_slice(x, xs, &self.begin, &self.step, y, ys)?
        });
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        let op = SliceGradOp {
            begin: self.begin.clone(),
            step: self.step.clone(),
            input_shape: g.shape(inputs[0]).to_vec(),
        };
        Ok(vec![Some(g.apply1(Box::new(op), &[dy])?)])
    }
}

impl Op for SliceGradOp {
    fn name(&self) -> &'static str {
        "slice_grad"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("slice_grad", inputs, 1)?;
        check_slice(
            "slice_grad",
            &self.input_shape,
            &self.begin,
            &self.step,
            &inputs[0].shape,
        )?;
        Ok(vec![TensorType::f32(self.input_shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = outputs[0].shape;
        k::strided_slice_grad(
            inputs[0].f32()?,
            inputs[0].shape,
            &self.begin,
            &self.step,
            outputs[0].f32()?,
            shape,
        )?;
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        let op = SliceOp {
            begin: self.begin.clone(),
            step: self.step.clone(),
            shape: g.shape(_i[0]).to_vec(),
        };
        Ok(vec![Some(g.apply1(Box::new(op), &[dy])?)])
    }
}

impl Op for PadOp {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("pad", inputs, 1)?;
        let t = inputs[0];
        if self.before.len() != t.rank() || self.after.len() != t.rank() || t.dtype == DType::I32 {
            return Err(GraphError::value(format!(
                "pad: expected {} (before, after) pairs for a float tensor of shape {}, got before {:?}, after {:?}",
                t.rank(), fmt_shape(&t.shape), self.before, self.after
            )));
        }
        let shape = (0..t.rank())
            .map(|d| t.shape[d] + self.before[d] + self.after[d])
            .collect();
        Ok(vec![TensorType::f32(shape)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        k::pad(
            inputs[0].f32()?,
            inputs[0].shape,
            &self.before,
            &self.after,
            self.value,
            outputs[0].f32()?,
        )?;
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        let shape = g.shape(inputs[0]).to_vec();
        let op = SliceOp {
            begin: self.before.clone(),
            step: vec![1; shape.len()],
            shape,
        };
        Ok(vec![Some(g.apply1(Box::new(op), &[dy])?)])
    }
}

impl Op for BroadcastToOp {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("broadcast_to", inputs, 1)?;
        let t = inputs[0];
        let ok = t.dtype != DType::I32
            && kb::broadcast_shapes(&t.shape, &self.shape)
                .map(|s| s == self.shape)
                .unwrap_or(false);
        if !ok {
            return Err(GraphError::shape(format!(
                "broadcast_to: cannot broadcast shape {} to {}",
                fmt_shape(&t.shape),
                fmt_shape(&self.shape)
            )));
        }
        Ok(vec![TensorType::new(self.shape.clone(), t.dtype)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        kb::broadcast_to(
            inputs[0].f32()?,
            inputs[0].shape,
            outputs[0].f32()?,
            &self.shape,
        )?;
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        Ok(vec![Some(g.sum_to_shape(dy, g.shape(inputs[0]).to_vec())?)])
    }
}

impl Op for SumToShapeOp {
    fn name(&self) -> &'static str {
        "sum_to_shape"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("sum_to_shape", inputs, 1)?;
        let t = inputs[0];
        let ok = t.dtype == DType::F32
            && kb::broadcast_shapes(&self.shape, &t.shape)
                .map(|s| s == t.shape)
                .unwrap_or(false);
        if !ok {
            return Err(GraphError::shape(format!(
                "sum_to_shape: shape {} is not a broadcast of {}",
                fmt_shape(&t.shape),
                fmt_shape(&self.shape)
            )));
        }
        Ok(vec![TensorType::f32(self.shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        kr::sum_to_shape(
            inputs[0].f32()?,
            inputs[0].shape,
            outputs[0].f32()?,
            &self.shape,
        )?;
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        Ok(vec![Some(g.broadcast_to(dy, g.shape(inputs[0]).to_vec())?)])
    }
}

impl Graph {
    /// Appends a reshape (no-op when the shape already matches).
    pub fn reshape(&mut self, x: ValueId, shape: &[usize]) -> Result<ValueId> {
        if self.shape(x) == shape {
            return Ok(x);
        }
        let shape = shape.iter().map(|&d| d as i64).collect();
        self.apply1(Box::new(ReshapeOp { shape }), &[x])
    }

    /// Appends a broadcast (no-op when the shape already matches).
    pub fn broadcast_to(&mut self, x: ValueId, shape: Vec<usize>) -> Result<ValueId> {
        if self.shape(x) == shape.as_slice() {
            return Ok(x);
        }
        self.apply1(Box::new(BroadcastToOp { shape }), &[x])
    }

    /// Appends the sum down to `shape` (no-op when the shape already matches).
    pub fn sum_to_shape(&mut self, x: ValueId, shape: Vec<usize>) -> Result<ValueId> {
        if self.shape(x) == shape.as_slice() {
            return Ok(x);
        }
        self.apply1(Box::new(SumToShapeOp { shape }), &[x])
    }

    /// A float tensor of zeros (a broadcast scalar: no big constant is stored).
    pub fn zeros(&mut self, shape: Vec<usize>) -> Result<ValueId> {
        let z = self.scalar(0.0);
        if shape.is_empty() {
            return Ok(z);
        }
        self.apply1(Box::new(BroadcastToOp { shape }), &[z])
    }
}
