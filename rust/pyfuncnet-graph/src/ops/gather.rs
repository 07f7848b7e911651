//! Index ops: `take` (gather, embeddings) and its adjoint `take_grad`
//! (deterministic scatter-add), `one_hot`, and `cast` between dtypes.

use pyfuncnet_kernels::layout as k;

use super::{expect_inputs, normalize_axis, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{
    fmt_shape, with_same_dtype, DType, DataMut, DataRef, TensorMut, TensorRef, TensorType,
};

/// `numpy.take(x, indices, axis)`; indices int32 of any shape, each in `[0, n)`.
#[derive(Debug, Clone, Copy)]
pub struct TakeOp {
    pub axis: i64,
}

/// Adjoint of [`TakeOp`]: inputs `[dy, indices]`, output of `input_shape`.
#[derive(Debug, Clone)]
pub struct TakeGradOp {
    pub axis: i64,
    pub input_shape: Vec<usize>,
}

/// One-hot encoding along a new last axis of size `depth`.
#[derive(Debug, Clone, Copy)]
pub struct OneHotOp {
    pub depth: usize,
}

/// Converts between float32, int32 and bool.
#[derive(Debug, Clone, Copy)]
pub struct CastOp {
    pub dtype: DType,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    Ok(Some(match name {
        "take" => Box::new(TakeOp {
            axis: a.i64_or("axis", 0)?,
        }),
        "take_grad" => Box::new(TakeGradOp {
            axis: a.i64_or("axis", 0)?,
            input_shape: a.usize_list("input_shape")?,
        }),
        "one_hot" => Box::new(OneHotOp {
            depth: a.usize("depth")?,
        }),
        "cast" => Box::new(CastOp {
            dtype: DType::from_name(a.str_or("dtype", "float32")?)?,
        }),
        _ => return Ok(None),
    }))
}

fn take_shape(x: &[usize], axis: usize, indices: &[usize]) -> Vec<usize> {
    let mut out = x[..axis].to_vec();
    out.extend_from_slice(indices);
    out.extend_from_slice(&x[axis + 1..]);
    out
}

impl Op for TakeOp {
    fn name(&self) -> &'static str {
        "take"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("take", inputs, 2)?;
        let (x, idx) = (inputs[0], inputs[1]);
        if idx.dtype != DType::I32 {
            return Err(GraphError::dtype(format!(
                "take: indices must be integers, got {} of shape {}",
                idx.dtype.name(),
                fmt_shape(&idx.shape)
            )));
        }
        if x.rank() == 0 {
            return Err(GraphError::shape("take: cannot index a scalar"));
        }
        let axis = normalize_axis("take", self.axis, x.rank())?;
        Ok(vec![TensorType::new(
            take_shape(&x.shape, axis, &idx.shape),
            x.dtype,
        )])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = inputs[0].shape;
        let axis = normalize_axis("take", self.axis, shape.len())?;
        let idx = inputs[1].i32()?;
        with_same_dtype!("take", &inputs[0].data, &mut outputs[0].data, |x, y| {
            k::gather("take", x, shape, axis, idx, y)?
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
            return Ok(vec![None, None]);
        };
        let op = TakeGradOp {
            axis: self.axis,
            input_shape: g.shape(inputs[0]).to_vec(),
        };
        Ok(vec![Some(g.apply1(Box::new(op), &[dy, inputs[1]])?), None])
    }
}

impl Op for TakeGradOp {
    fn name(&self) -> &'static str {
        "take_grad"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("take_grad", inputs, 2)?;
        let axis = normalize_axis("take_grad", self.axis, self.input_shape.len())?;
        let want = take_shape(&self.input_shape, axis, &inputs[1].shape);
        if inputs[0].shape != want || inputs[1].dtype != DType::I32 {
            return Err(GraphError::shape(format!(
                "take_grad: dy of shape {} does not match {}",
                fmt_shape(&inputs[0].shape),
                fmt_shape(&want)
            )));
        }
        Ok(vec![TensorType::f32(self.input_shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let s = &self.input_shape;
        let axis = normalize_axis("take_grad", self.axis, s.len())?;
        let outer = s[..axis].iter().product();
        let inner = s[axis + 1..].iter().product();
        k::scatter_add(
            "take",
            inputs[0].f32()?,
            inputs[1].i32()?,
            outer,
            s[axis],
            inner,
            outputs[0].f32()?,
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
        Err(GraphError::unsupported(
            "second-order gradients of take are not supported",
        ))
    }
}

impl Op for OneHotOp {
    fn name(&self) -> &'static str {
        "one_hot"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("one_hot", inputs, 1)?;
        if inputs[0].dtype != DType::I32 {
            return Err(GraphError::dtype(format!(
                "one_hot: indices must be integers, got {}",
                inputs[0].dtype.name()
            )));
        }
        let mut shape = inputs[0].shape.clone();
        shape.push(self.depth);
        Ok(vec![TensorType::f32(shape)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        k::one_hot(inputs[0].i32()?, self.depth, 1.0, 0.0, outputs[0].f32()?)?;
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

impl Op for CastOp {
    fn name(&self) -> &'static str {
        "cast"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("cast", inputs, 1)?;
        Ok(vec![TensorType::new(inputs[0].shape.clone(), self.dtype)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let to_bool = self.dtype == DType::Bool;
        match (&inputs[0].data, &mut outputs[0].data) {
            (DataRef::F32(x), DataMut::F32(y)) => {
                if to_bool {
                    for (o, &v) in y.iter_mut().zip(x.iter()) {
                        *o = if v != 0.0 { 1.0 } else { 0.0 };
                    }
                } else {
                    y.copy_from_slice(x);
                }
            }
            (DataRef::F32(x), DataMut::I32(y)) => k::cast_f32_to_i32("cast", x, y)?,
            (DataRef::I32(x), DataMut::F32(y)) => {
                k::cast_i32_to_f32(x, y)?;
                if to_bool {
                    for o in y.iter_mut() {
                        *o = if *o != 0.0 { 1.0 } else { 0.0 };
                    }
                }
            }
            (DataRef::I32(x), DataMut::I32(y)) => y.copy_from_slice(x),
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
        // Only float -> float casts pass a gradient.
        let passes = self.dtype == DType::F32 && g.ty(inputs[0]).dtype == DType::F32;
        Ok(vec![if passes { dys[0] } else { None }])
    }
}
