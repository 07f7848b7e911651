//! Reductions over axes (sum, mean, max, min, prod, var) and argmax / argmin.

use pyfuncnet_kernels::binary::Binary;
use pyfuncnet_kernels::reduce::{self as k, Reduce};

use super::{expect_float, expect_inputs, normalize_axes, normalize_axis, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{DType, TensorMut, TensorRef, TensorType};

/// A reduction over `axes` (`None`: all axes).
#[derive(Debug, Clone)]
pub struct ReduceOp {
    pub kind: Reduce,
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
}

/// Population variance over `axes`.
#[derive(Debug, Clone)]
pub struct VarOp {
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
}

/// Index of the largest (`is_max`) or smallest element along one axis.
#[derive(Debug, Clone)]
pub struct ArgReduceOp {
    pub is_max: bool,
    pub axis: i64,
    pub keepdims: bool,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    let axes = if a.has("axis") {
        Some(a.i64_list("axis")?)
    } else {
        None
    };
    let keepdims = a.bool_or("keepdims", false)?;
    let kind = match name {
        "sum" => Reduce::Sum,
        "mean" => Reduce::Mean,
        "max" => Reduce::Max,
        "min" => Reduce::Min,
        "prod" => Reduce::Prod,
        "var" => return Ok(Some(Box::new(VarOp { axes, keepdims }))),
        "argmax" | "argmin" => {
            let axis = a.i64_or("axis", -1)?;
            return Ok(Some(Box::new(ArgReduceOp {
                is_max: name == "argmax",
                axis,
                keepdims,
            })));
        }
        _ => return Ok(None),
    };
    Ok(Some(Box::new(ReduceOp {
        kind,
        axes,
        keepdims,
    })))
}

/// Resolves the axes against a rank: all axes when `None`.
fn resolve(op: &str, axes: &Option<Vec<i64>>, rank: usize) -> Result<Vec<usize>> {
    match axes {
        None => Ok((0..rank).collect()),
        Some(list) => normalize_axes(op, list, rank),
    }
}

/// The most axes a reduction's forward pass resolves without allocating.
const MAX_AXES: usize = 16;

/// [`resolve`] into a stack buffer, for forward passes (which must not allocate).
fn resolve_into<'b>(
    op: &str,
    axes: &Option<Vec<i64>>,
    rank: usize,
    buf: &'b mut [usize; MAX_AXES],
) -> Result<&'b [usize]> {
    if rank > MAX_AXES {
        return Err(GraphError::shape(format!(
            "{op}: tensors of rank {rank} exceed the supported {MAX_AXES}"
        )));
    }
    let n = match axes {
        None => {
            for (d, slot) in buf.iter_mut().enumerate().take(rank) {
                *slot = d;
            }
            rank
        }
        Some(list) => {
            // Sorted insertion without duplicates (lists are short).
            let mut n = 0;
            for &a in list {
                let a = normalize_axis(op, a, rank)?;
                if let Err(pos) = buf[..n].binary_search(&a) {
                    buf.copy_within(pos..n, pos + 1);
                    buf[pos] = a;
                    n += 1;
                }
            }
            n
        }
    };
    Ok(&buf[..n])
}

/// The shape after reducing `axes`, with them kept as 1 or dropped.
fn reduced_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(shape.len());
    for (d, &n) in shape.iter().enumerate() {
        if !axes.contains(&d) {
            out.push(n);
        } else if keepdims {
            out.push(1);
        }
    }
    out
}

fn reduced_count(shape: &[usize], axes: &[usize]) -> usize {
    axes.iter().map(|&a| shape[a]).product()
}

impl Op for ReduceOp {
    fn name(&self) -> &'static str {
        match self.kind {
            Reduce::Sum => "sum",
            Reduce::Mean => "mean",
            Reduce::Max => "max",
            Reduce::Min => "min",
            Reduce::Prod => "prod",
        }
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 1)?;
        expect_float(self.name(), "the input", inputs[0])?;
        let axes = resolve(self.name(), &self.axes, inputs[0].rank())?;
        if matches!(self.kind, Reduce::Max | Reduce::Min)
            && reduced_count(&inputs[0].shape, &axes) == 0
        {
            return Err(GraphError::value(format!(
                "{}: cannot reduce a zero-size dimension of shape {:?}",
                self.name(),
                inputs[0].shape
            )));
        }
        Ok(vec![TensorType::f32(reduced_shape(
            &inputs[0].shape,
            &axes,
            self.keepdims,
        ))])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let mut buf = [0; MAX_AXES];
        let axes = resolve_into(self.name(), &self.axes, inputs[0].shape.len(), &mut buf)?;
        k::reduce(
            self.kind,
            inputs[0].f32()?,
            inputs[0].shape,
            axes,
            outputs[0].f32()?,
        )?;
        Ok(())
    }

    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        let x = inputs[0];
        let x_shape = g.shape(x).to_vec();
        let axes = resolve(self.name(), &self.axes, x_shape.len())?;
        let keep = reduced_shape(&x_shape, &axes, true);
        let dy_keep = g.reshape(dy, &keep)?;
        let dx = match self.kind {
            Reduce::Sum => g.broadcast_to(dy_keep, x_shape)?,
            Reduce::Mean => {
                let n = reduced_count(&x_shape, &axes).max(1);
                let scale = g.scalar(1.0 / n as f32);
                let d = g.mul(dy_keep, scale)?;
                g.broadcast_to(d, x_shape)?
            }
            Reduce::Max | Reduce::Min => {
                // Ties share the gradient equally, as TensorFlow does.
                let y_keep = g.reshape(outputs[0], &keep)?;
                let mask = g.binary(Binary::Equal, x, y_keep)?;
                let count = g.reduce(Reduce::Sum, mask, &axes, true)?;
                let share = g.binary(Binary::Div, dy_keep, count)?;
                g.mul(mask, share)?
            }
            Reduce::Prod => {
                let y_keep = g.reshape(outputs[0], &keep)?;
                let t = g.mul(dy_keep, y_keep)?;
                g.binary(Binary::Div, t, x)?
            }
        };
        Ok(vec![Some(dx)])
    }
}

impl Op for VarOp {
    fn name(&self) -> &'static str {
        "var"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("var", inputs, 1)?;
        expect_float("var", "the input", inputs[0])?;
        let axes = resolve("var", &self.axes, inputs[0].rank())?;
        Ok(vec![TensorType::f32(reduced_shape(
            &inputs[0].shape,
            &axes,
            self.keepdims,
        ))])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let mut buf = [0; MAX_AXES];
        let axes = resolve_into("var", &self.axes, inputs[0].shape.len(), &mut buf)?;
        k::variance(inputs[0].f32()?, inputs[0].shape, axes, outputs[0].f32()?)?;
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
        let x = inputs[0];
        let x_shape = g.shape(x).to_vec();
        let axes = resolve("var", &self.axes, x_shape.len())?;
        let keep = reduced_shape(&x_shape, &axes, true);
        // d var / dx = 2 (x - mean) / n
        let mean = g.reduce(Reduce::Mean, x, &axes, true)?;
        let centered = g.binary(Binary::Sub, x, mean)?;
        let n = reduced_count(&x_shape, &axes).max(1);
        let scale = g.scalar(2.0 / n as f32);
        let dy_keep = g.reshape(dy, &keep)?;
        let s = g.mul(dy_keep, scale)?;
        Ok(vec![Some(g.mul(centered, s)?)])
    }
}

impl Op for ArgReduceOp {
    fn name(&self) -> &'static str {
        if self.is_max {
            "argmax"
        } else {
            "argmin"
        }
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 1)?;
        expect_float(self.name(), "the input", inputs[0])?;
        let axis = normalize_axis(self.name(), self.axis, inputs[0].rank())?;
        if inputs[0].shape[axis] == 0 {
            return Err(GraphError::value(format!(
                "{}: axis {axis} has size 0",
                self.name()
            )));
        }
        Ok(vec![TensorType::new(
            reduced_shape(&inputs[0].shape, &[axis], self.keepdims),
            DType::I32,
        )])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let axis = normalize_axis(self.name(), self.axis, inputs[0].shape.len())?;
        k::arg_reduce(
            self.is_max,
            inputs[0].f32()?,
            inputs[0].shape,
            axis,
            outputs[0].i32()?,
        )?;
        Ok(())
    }

    fn backward(
        &self,
        _g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        _d: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        Ok(vec![None])
    }
}

impl Graph {
    /// Appends a reduction over normalised `axes`.
    pub fn reduce(
        &mut self,
        kind: Reduce,
        x: ValueId,
        axes: &[usize],
        keepdims: bool,
    ) -> Result<ValueId> {
        let axes = Some(axes.iter().map(|&a| a as i64).collect());
        self.apply1(
            Box::new(ReduceOp {
                kind,
                axes,
                keepdims,
            }),
            &[x],
        )
    }
}
