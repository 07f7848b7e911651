//! `max_pool` and `avg_pool` over channels-last tensors `(batch, spatial...,
//! channels)` with 1 to 3 spatial axes, and their gradients `max_pool_grad` and
//! `avg_pool_grad`.

use pyfuncnet_kernels::pool::{self as k, PoolShape};
use pyfuncnet_kernels::window::{Padding, Window, MAX_SPATIAL};
use pyfuncnet_kernels::KernelError;

use super::{expect_inputs, Attrs, Ctx, Op, OpCost};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, DType, TensorMut, TensorRef, TensorType};

/// Which reduction a pooling op takes over each window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// Window attributes shared by the pooling ops and their gradients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Window size per spatial axis; a single entry applies to every axis (as
    /// Keras accepts an int).
    pub pool_size: Vec<usize>,
    /// Step per spatial axis, with the same broadcasting; defaults to `pool_size`.
    pub strides: Vec<usize>,
    /// `Valid` or `Same`.
    pub padding: Padding,
}

/// `max_pool` or `avg_pool`: input `(batch, spatial..., channels)` float32.
#[derive(Debug, Clone)]
pub struct PoolOp {
    pub kind: PoolKind,
    pub geometry: PoolGeometry,
}

/// Gradient of `max_pool`: inputs `[x, y, dy]`, output `dx` (x's shape).
#[derive(Debug, Clone)]
pub struct MaxPoolGradOp {
    pub geometry: PoolGeometry,
}

/// Gradient of `avg_pool`: input `[dy]`, output `dx` of shape `input_shape`.
#[derive(Debug, Clone)]
pub struct AvgPoolGradOp {
    pub geometry: PoolGeometry,
    pub input_shape: Vec<usize>,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    let op: Box<dyn Op> = match name {
        "max_pool" | "avg_pool" => Box::new(PoolOp {
            kind: if name == "max_pool" {
                PoolKind::Max
            } else {
                PoolKind::Avg
            },
            geometry: PoolGeometry::from_attrs(name, a)?,
        }),
        "max_pool_grad" => Box::new(MaxPoolGradOp {
            geometry: PoolGeometry::from_attrs(name, a)?,
        }),
        "avg_pool_grad" => Box::new(AvgPoolGradOp {
            geometry: PoolGeometry::from_attrs(name, a)?,
            input_shape: a.usize_list("input_shape")?,
        }),
        _ => return Ok(None),
    };
    Ok(Some(op))
}

impl PoolGeometry {
    /// Reads `pool_size`, `strides` (default: `pool_size`) and `padding` (default
    /// `"valid"`).
    ///
    /// # Errors
    /// `Value` for a missing `pool_size` or a padding other than valid or same.
    pub fn from_attrs(op: &str, a: &Attrs) -> Result<Self> {
        let pool_size = a.usize_list("pool_size")?;
        let strides = if a.has("strides") {
            a.usize_list("strides")?
        } else {
            pool_size.clone()
        };
        let name = a.str_or("padding", "valid")?;
        let padding = match Padding::from_name(name) {
            Some(p @ (Padding::Valid | Padding::Same)) => p,
            _ => {
                return Err(GraphError::value(format!(
                    "{op}: padding must be 'valid' or 'same', got '{name}'"
                )))
            }
        };
        Ok(PoolGeometry {
            pool_size,
            strides,
            padding,
        })
    }

    /// The kernels' problem for an input of shape `input`.
    ///
    /// # Errors
    /// `Shape` for a rank other than 3 to 5 or a window larger than a 'valid'
    /// input; `Value` for lists of the wrong length or zero entries. Each names
    /// `op`, the input shape, the pool size, the strides and the padding.
    fn shape(&self, op: &str, input: &[usize]) -> Result<PoolShape> {
        let rank = input.len();
        if !(3..=MAX_SPATIAL + 2).contains(&rank) {
            return Err(GraphError::shape(format!(
                "{op}: expected an input of rank 3 to 5 (batch, 1 to 3 spatial axes, channels), got shape {}",
                fmt_shape(input)
            )));
        }
        let spatial = &input[1..rank - 1];
        let n = spatial.len();
        let describe = || {
            format!(
                "pool_size {:?}, strides {:?} and padding '{}' for an input of shape {}",
                self.pool_size,
                self.strides,
                self.padding.name(),
                fmt_shape(input)
            )
        };
        let per_axis = |list: &[usize]| -> Result<[usize; MAX_SPATIAL]> {
            let mut out = [0; MAX_SPATIAL];
            match list.len() {
                1 => out.fill(list[0]),
                len if len == n => out[..n].copy_from_slice(list),
                _ => {
                    return Err(GraphError::value(format!(
                        "{op}: pool_size and strides need 1 or {n} entries (one per spatial axis), got {}",
                        describe()
                    )))
                }
            }
            if out[..n].contains(&0) {
                return Err(GraphError::value(format!(
                    "{op}: pool sizes and strides must be positive, got {}",
                    describe()
                )));
            }
            Ok(out)
        };
        let size = per_axis(&self.pool_size)?;
        let stride = per_axis(&self.strides)?;
        let dilation = [1; MAX_SPATIAL];
        let window = Window::new(
            op,
            spatial,
            &size[..n],
            &stride[..n],
            &dilation[..n],
            self.padding,
        )
        .map_err(|e| {
            let why = match e {
                KernelError::InvalidArgument { message, .. } => message,
                other => other.to_string(),
            };
            GraphError::shape(format!("{op}: {why}: {}", describe()))
        })?;
        Ok(PoolShape {
            batch: input[0],
            channels: input[rank - 1],
            window,
        })
    }

    /// The pooled shape of `input` (which [`PoolGeometry::shape`] accepted).
    fn output_shape(s: &PoolShape, input: &[usize]) -> Vec<usize> {
        let rank = input.len();
        let mut out = Vec::with_capacity(rank);
        out.push(s.batch);
        out.extend_from_slice(s.window.output_dims(rank - 2));
        out.push(s.channels);
        out
    }
}

/// Checks that `t` is float32, naming the op and what it is.
fn expect_f32(op: &str, what: &str, t: &TensorType) -> Result<()> {
    if t.dtype != DType::F32 {
        return Err(GraphError::dtype(format!(
            "{op}: {what} must be float32, got {} of shape {}",
            t.dtype.name(),
            fmt_shape(&t.shape)
        )));
    }
    Ok(())
}

/// Cost of a pooling kernel: every output element reads its window's taps, every
/// element of `x` (or `dx`) is touched once.
fn pool_cost(s: Result<PoolShape>, grad: bool) -> OpCost {
    let Ok(s) = s else {
        return OpCost {
            work: 0,
            single_task: true,
        };
    };
    let w = &s.window;
    let product = |dims: &[usize]| dims.iter().fold(1usize, |a, &d| a.saturating_mul(d));
    let per_image = product(&w.output)
        .saturating_mul(product(&w.size).saturating_add(1))
        .saturating_add(product(&w.input));
    let tasks = if grad {
        s.grad_tasks()
    } else {
        s.forward_tasks()
    };
    OpCost {
        work: per_image.saturating_mul(s.channels).saturating_mul(s.batch),
        single_task: tasks <= 1,
    }
}

impl Op for PoolOp {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Avg => "avg_pool",
        }
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 1)?;
        expect_f32(self.name(), "the input", inputs[0])?;
        let s = self.geometry.shape(self.name(), &inputs[0].shape)?;
        let out = PoolGeometry::output_shape(&s, &inputs[0].shape);
        Ok(vec![TensorType::f32(out)])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let s = self.geometry.shape(self.name(), inputs[0].shape)?;
        let (x, y) = (inputs[0].f32()?, outputs[0].f32()?);
        match self.kind {
            PoolKind::Max => k::max_pool(&s, x, y)?,
            PoolKind::Avg => k::avg_pool(&s, x, y)?,
        }
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        pool_cost(self.geometry.shape(self.name(), &inputs[0].shape), false)
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
        let geometry = self.geometry.clone();
        let dx = match self.kind {
            PoolKind::Max => g.apply1(
                Box::new(MaxPoolGradOp { geometry }),
                &[inputs[0], outputs[0], dy],
            )?,
            PoolKind::Avg => {
                let input_shape = g.shape(inputs[0]).to_vec();
                g.apply1(
                    Box::new(AvgPoolGradOp {
                        geometry,
                        input_shape,
                    }),
                    &[dy],
                )?
            }
        };
        Ok(vec![Some(dx)])
    }
}

/// Checks that `dy` (and `y`) have the pooled shape of `input`.
fn expect_pooled(
    op: &str,
    s: &PoolShape,
    input: &[usize],
    given: &[(&str, &TensorType)],
) -> Result<()> {
    let want = PoolGeometry::output_shape(s, input);
    for (what, t) in given {
        expect_f32(op, what, t)?;
        if t.shape != want {
            return Err(GraphError::shape(format!(
                "{op}: {what} must have shape {} (the pooled shape of {}), got {}",
                fmt_shape(&want),
                fmt_shape(input),
                fmt_shape(&t.shape)
            )));
        }
    }
    Ok(())
}

impl Op for MaxPoolGradOp {
    fn name(&self) -> &'static str {
        "max_pool_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 3)?;
        expect_f32(self.name(), "x", inputs[0])?;
        let x = &inputs[0].shape;
        let s = self.geometry.shape(self.name(), x)?;
        expect_pooled(self.name(), &s, x, &[("y", inputs[1]), ("dy", inputs[2])])?;
        Ok(vec![TensorType::f32(x.clone())])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let s = self.geometry.shape(self.name(), inputs[0].shape)?;
        let (x, y, dy) = (inputs[0].f32()?, inputs[1].f32()?, inputs[2].f32()?);
        k::max_pool_grad(&s, x, y, dy, outputs[0].f32()?)?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        pool_cost(self.geometry.shape(self.name(), &inputs[0].shape), true)
    }

    fn backward(
        &self,
        _g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        _d: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        Err(GraphError::unsupported(
            "second-order gradients of max_pool are not supported",
        ))
    }
}

impl Op for AvgPoolGradOp {
    fn name(&self) -> &'static str {
        "avg_pool_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 1)?;
        let s = self.geometry.shape(self.name(), &self.input_shape)?;
        expect_pooled(self.name(), &s, &self.input_shape, &[("dy", inputs[0])])?;
        Ok(vec![TensorType::f32(self.input_shape.clone())])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let s = self.geometry.shape(self.name(), &self.input_shape)?;
        k::avg_pool_grad(&s, inputs[0].f32()?, outputs[0].f32()?)?;
        Ok(())
    }

    fn cost(&self, _inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        pool_cost(self.geometry.shape(self.name(), &self.input_shape), true)
    }

    // The op is linear in `dy`; its adjoint is `avg_pool` itself.
    fn backward(
        &self,
        g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(d) = dys[0] else {
            return Ok(vec![None]);
        };
        let op = PoolOp {
            kind: PoolKind::Avg,
            geometry: self.geometry.clone(),
        };
        Ok(vec![Some(g.apply1(Box::new(op), &[d])?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde_json::json;

    fn op(name: &str, attrs: serde_json::Value) -> Box<dyn Op> {
        crate::ops::build(name, &attrs).unwrap()
    }

    fn infer(op: &dyn Op, shape: &[usize]) -> Result<Vec<usize>> {
        let t = TensorType::f32(shape.to_vec());
        Ok(op.infer(&[&t])?.remove(0).shape)
    }

    #[test]
    fn output_shapes_follow_keras() {
        let p = op("max_pool", json!({"pool_size": [2, 2]}));
        assert_eq!(infer(p.as_ref(), &[4, 7, 6, 3]).unwrap(), [4, 3, 3, 3]);
        let p = op(
            "avg_pool",
            json!({"pool_size": 3, "strides": 2, "padding": "same"}),
        );
        assert_eq!(infer(p.as_ref(), &[2, 9, 3]).unwrap(), [2, 5, 3]);
        assert_eq!(
            infer(p.as_ref(), &[1, 5, 6, 7, 2]).unwrap(),
            [1, 3, 3, 4, 2]
        );
    }

    #[test]
    fn bad_windows_name_the_op_the_shape_and_the_window() {
        let p = op("max_pool", json!({"pool_size": [3, 3]}));
        let err = infer(p.as_ref(), &[1, 2, 5, 1]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Shape);
        for part in ["max_pool", "(1, 2, 5, 1)", "[3, 3]", "valid"] {
            assert!(err.message.contains(part), "{}", err.message);
        }
        let p = op("avg_pool", json!({"pool_size": [2, 0], "padding": "same"}));
        let err = infer(p.as_ref(), &[1, 4, 4, 1]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Value);
        for part in ["avg_pool", "(1, 4, 4, 1)", "[2, 0]", "same"] {
            assert!(err.message.contains(part), "{}", err.message);
        }
        let p = op("max_pool", json!({"pool_size": [2, 2, 2]}));
        assert_eq!(
            infer(p.as_ref(), &[1, 4, 4, 1]).unwrap_err().kind,
            ErrorKind::Value
        );
        let p = op("max_pool", json!({"pool_size": 2}));
        assert_eq!(
            infer(p.as_ref(), &[4, 4]).unwrap_err().kind,
            ErrorKind::Shape
        );
        assert_eq!(
            infer(p.as_ref(), &[1, 2, 2, 2, 2, 1]).unwrap_err().kind,
            ErrorKind::Shape
        );
        let ints = TensorType::new(vec![1, 4, 1], DType::I32);
        assert_eq!(p.infer(&[&ints]).unwrap_err().kind, ErrorKind::DType);
    }

    #[test]
    fn bad_attributes_are_refused() {
        for attrs in [
            json!({}),
            json!({"pool_size": [2], "padding": "causal"}),
            json!({"pool_size": [2], "padding": "full"}),
            json!({"pool_size": [-1]}),
        ] {
            assert!(crate::ops::build("max_pool", &attrs).is_err(), "{attrs}");
        }
        assert!(crate::ops::build("avg_pool_grad", &json!({"pool_size": [2]})).is_err());
    }

    #[test]
    fn grad_ops_check_their_shapes() {
        let g = op("max_pool_grad", json!({"pool_size": [2]}));
        let x = TensorType::f32(vec![1, 4, 2]);
        let y = TensorType::f32(vec![1, 2, 2]);
        let bad = TensorType::f32(vec![1, 3, 2]);
        assert_eq!(g.infer(&[&x, &y, &y]).unwrap()[0].shape, [1, 4, 2]);
        let err = g.infer(&[&x, &y, &bad]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Shape);
        assert!(err.message.contains("dy") && err.message.contains("(1, 3, 2)"));
        let g = op(
            "avg_pool_grad",
            json!({"pool_size": [2], "input_shape": [1, 4, 2]}),
        );
        assert_eq!(g.infer(&[&y]).unwrap()[0].shape, [1, 4, 2]);
        assert_eq!(g.infer(&[&bad]).unwrap_err().kind, ErrorKind::Shape);
    }
}
