//! Elementwise unary ops (activations and math functions), `clip`, and their gradients.

use pyfuncnet_kernels::unary::{self as k, Unary};

use super::{expect_float, expect_inputs, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{TensorMut, TensorRef, TensorType};

/// `y = f(x)` for one [`Unary`] function.
#[derive(Debug, Clone, Copy)]
pub struct UnaryOp {
    pub kind: Unary,
}

/// `dx = dy * f'(x)`; inputs `[x, y, dy]` when the derivative needs `x`, else `[y, dy]`.
#[derive(Debug, Clone, Copy)]
pub struct UnaryGradOp {
    pub kind: Unary,
}

/// `y = min(max(x, lo), hi)`.
#[derive(Debug, Clone, Copy)]
pub struct ClipOp {
    pub lo: f32,
    pub hi: f32,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    if name == "clip" {
        let (lo, hi) = (
            a.f32_or("min", f32::NEG_INFINITY)?,
            a.f32_or("max", f32::INFINITY)?,
        );
        return Ok(Some(Box::new(ClipOp { lo, hi })));
    }
    if name == "unary_grad" {
        let kind = kind_from_attrs(a.str_or("kind", "")?, a)?
            .ok_or_else(|| GraphError::value("unary_grad: unknown 'kind'"))?;
        return Ok(Some(Box::new(UnaryGradOp { kind })));
    }
    Ok(kind_from_attrs(name, a)?.map(|kind| Box::new(UnaryOp { kind }) as Box<dyn Op>))
}

fn kind_from_attrs(name: &str, a: &Attrs) -> Result<Option<Unary>> {
    let alpha = if a.has("alpha") {
        Some(a.f32("alpha")?)
    } else if a.has("negative_slope") {
        Some(a.f32("negative_slope")?)
    } else {
        None
    };
    let approximate = if a.has("approximate") {
        Some(a.bool_or("approximate", false)?)
    } else {
        None
    };
    Ok(Unary::from_name(name, alpha, approximate))
}

impl Op for UnaryOp {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 1)?;
        expect_float(self.name(), "the input", inputs[0])?;
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        k::unary(self.kind, inputs[0].f32()?, outputs[0].f32()?)?;
        Ok(())
    }

    fn inplace_input(&self, _inputs: &[&TensorType]) -> Option<usize> {
        Some(0)
    }

    fn forward_inplace(
        &self,
        _ctx: &Ctx,
        _inputs: &[TensorRef],
        _inplace: usize,
        out: &mut TensorMut,
    ) -> Result<()> {
        k::unary_inplace(self.kind, out.f32()?);
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
        let grad = Box::new(UnaryGradOp { kind: self.kind });
        let dx = if self.kind.grad_needs_input() {
            g.apply1(grad, &[inputs[0], outputs[0], dy])?
        } else {
            g.apply1(grad, &[outputs[0], dy])?
        };
        Ok(vec![Some(dx)])
    }
}

impl Op for UnaryGradOp {
    fn name(&self) -> &'static str {
        "unary_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        let n = if self.kind.grad_needs_input() { 3 } else { 2 };
        expect_inputs("unary_grad", inputs, n)?;
        let shape = &inputs[0].shape;
        if inputs.iter().any(|t| &t.shape != shape) {
            return Err(GraphError::shape(
                "unary_grad: all inputs must have one shape",
            ));
        }
        Ok(vec![TensorType::f32(shape.clone())])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let dx = outputs[0].f32()?;
        if self.kind.grad_needs_input() {
            k::unary_grad(
                self.kind,
                inputs[0].f32()?,
                inputs[1].f32()?,
                inputs[2].f32()?,
                dx,
            )?;
        } else {
            k::unary_grad(self.kind, &[], inputs[0].f32()?, inputs[1].f32()?, dx)?;
        }
        Ok(())
    }

    /// In place over the incoming gradient `dy`, the last input.
    fn inplace_input(&self, inputs: &[&TensorType]) -> Option<usize> {
        inputs.len().checked_sub(1)
    }

    fn forward_inplace(
        &self,
        _ctx: &Ctx,
        inputs: &[TensorRef],
        _inplace: usize,
        out: &mut TensorMut,
    ) -> Result<()> {
        // The derivative reads x (or y when it needs no input): input 0 either way.
        k::unary_grad_inplace(self.kind, inputs[0].f32()?, out.f32()?)?;
        Ok(())
    }

    fn backward(
        &self,
        _g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        _d: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        Err(GraphError::unsupported(format!(
            "second-order gradients of '{}' are not supported",
            self.kind.name()
        )))
    }
}

impl Op for ClipOp {
    fn name(&self) -> &'static str {
        "clip"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("clip", inputs, 1)?;
        expect_float("clip", "the input", inputs[0])?;
        if self.lo > self.hi {
            return Err(GraphError::value(format!(
                "clip: min {} is greater than max {}",
                self.lo, self.hi
            )));
        }
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        k::clip(inputs[0].f32()?, self.lo, self.hi, outputs[0].f32()?)?;
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
        // The gradient passes where lo <= x <= hi (both bounds inclusive, as TF and JAX).
        let lo = g.scalar(self.lo);
        let hi = g.scalar(self.hi);
        let above = g.binary(
            pyfuncnet_kernels::binary::Binary::GreaterEqual,
            inputs[0],
            lo,
        )?;
        let below = g.binary(pyfuncnet_kernels::binary::Binary::LessEqual, inputs[0], hi)?;
        let inside = g.mul(above, below)?;
        Ok(vec![Some(g.mul(dy, inside)?)])
    }
}

impl Graph {
    /// Appends `y = f(x)`.
    pub fn unary(&mut self, kind: Unary, x: ValueId) -> Result<ValueId> {
        self.apply1(Box::new(UnaryOp { kind }), &[x])
    }
}
