//! Elementwise binary ops with NumPy broadcasting, `where`, and their gradients.

use pyfuncnet_kernels::binary::{self as k, Binary};
use pyfuncnet_kernels::unary::Unary;

use super::{expect_float, expect_inputs, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{DType, TensorMut, TensorRef, TensorType};

/// `out = a (op) b` with broadcasting.
#[derive(Debug, Clone, Copy)]
pub struct BinaryOp {
    pub kind: Binary,
}

/// `out = where(cond, x, y)` with broadcasting of all three.
#[derive(Debug, Clone, Copy)]
pub struct WhereOp;

pub(crate) fn build(name: &str, _a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    if name == "where" {
        return Ok(Some(Box::new(WhereOp)));
    }
    Ok(Binary::from_name(name).map(|kind| Box::new(BinaryOp { kind }) as Box<dyn Op>))
}

fn is_comparison(kind: Binary) -> bool {
    matches!(
        kind,
        Binary::Greater
            | Binary::GreaterEqual
            | Binary::Less
            | Binary::LessEqual
            | Binary::Equal
            | Binary::NotEqual
    )
}

fn broadcast(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    k::broadcast_shapes(a, b).map_err(|_| {
        GraphError::shape(format!(
            "{op}: shapes {a:?} and {b:?} cannot be broadcast together"
        ))
    })
}

impl Op for BinaryOp {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 2)?;
        expect_float(self.name(), "the first operand", inputs[0])?;
        expect_float(self.name(), "the second operand", inputs[1])?;
        let shape = broadcast(self.name(), &inputs[0].shape, &inputs[1].shape)?;
        let dtype = if is_comparison(self.kind) {
            DType::Bool
        } else {
            DType::F32
        };
        Ok(vec![TensorType::new(shape, dtype)])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = outputs[0].shape;
        k::binary(
            self.kind,
            inputs[0].f32()?,
            inputs[0].shape,
            inputs[1].f32()?,
            inputs[1].shape,
            outputs[0].f32()?,
            shape,
        )?;
        Ok(())
    }

    /// In place over an operand that already has the output's shape.
    fn inplace_input(&self, inputs: &[&TensorType]) -> Option<usize> {
        let out = k::broadcast_shapes(&inputs[0].shape, &inputs[1].shape).ok()?;
        (0..2).find(|&i| inputs[i].shape == out)
    }

    fn forward_inplace(
        &self,
        _ctx: &Ctx,
        inputs: &[TensorRef],
        inplace: usize,
        out: &mut TensorMut,
    ) -> Result<()> {
        let shape = out.shape;
        let other = &inputs[1 - inplace];
        k::binary_inplace(
            self.kind,
            out.f32()?,
            shape,
            other.f32()?,
            other.shape,
            inplace == 1,
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
        let (a, b) = (inputs[0], inputs[1]);
        let Some(dy) = dys[0] else {
            return Ok(vec![None, None]);
        };
        // Gradients w.r.t. the broadcast operands; summed back to each operand's shape below.
        let (da, db) = match self.kind {
            Binary::Add => (Some(dy), Some(dy)),
            Binary::Sub => (Some(dy), Some(g.unary(Unary::Negative, dy)?)),
            Binary::Mul => (Some(g.mul(dy, b)?), Some(g.mul(dy, a)?)),
            Binary::Div => {
                let da = g.binary(Binary::Div, dy, b)?;
                // d(a/b)/db = -(a/b)/b = -out/b
                let out_over_b = g.binary(Binary::Div, outputs[0], b)?;
                let t = g.mul(dy, out_over_b)?;
                (Some(da), Some(g.unary(Unary::Negative, t)?))
            }
            Binary::Pow => {
                // d/da = b * a^(b-1); d/db = out * ln(a) (NaN-free where a > 0).
                let one = g.scalar(1.0);
                let bm1 = g.binary(Binary::Sub, b, one)?;
                let p = g.binary(Binary::Pow, a, bm1)?;
                let bp = g.mul(b, p)?;
                let da = g.mul(dy, bp)?;
                let ln_a = g.unary(Unary::Log, a)?;
                let t = g.mul(outputs[0], ln_a)?;
                (Some(da), Some(g.mul(dy, t)?))
            }
            Binary::SquaredDifference => {
                let diff = g.binary(Binary::Sub, a, b)?;
                let two = g.scalar(2.0);
                let t = g.mul(diff, two)?;
                let da = g.mul(dy, t)?;
                (Some(da), Some(g.unary(Unary::Negative, da)?))
            }
            Binary::Max | Binary::Min => {
                // The gradient goes to `a` where it was selected (ties go to `a`), else to `b`.
                let cmp = if self.kind == Binary::Max {
                    Binary::GreaterEqual
                } else {
                    Binary::LessEqual
                };
                let mask_a = g.binary(cmp, a, b)?;
                let one = g.scalar(1.0);
                let mask_b = g.binary(Binary::Sub, one, mask_a)?;
                (Some(g.mul(dy, mask_a)?), Some(g.mul(dy, mask_b)?))
            }
            Binary::Mod => {
                // a mod b = a - floor(a/b)*b: piecewise d/da = 1, d/db = -floor(a/b).
                let q = g.binary(Binary::FloorDiv, a, b)?;
                let t = g.mul(dy, q)?;
                (Some(dy), Some(g.unary(Unary::Negative, t)?))
            }
            // Piecewise constant or boolean results carry no gradient.
            _ => (None, None),
        };
        let da = match da {
            Some(d) => Some(g.sum_to_shape(d, g.shape(a).to_vec())?),
            None => None,
        };
        let db = match db {
            Some(d) => Some(g.sum_to_shape(d, g.shape(b).to_vec())?),
            None => None,
        };
        Ok(vec![da, db])
    }
}

impl Op for WhereOp {
    fn name(&self) -> &'static str {
        "where"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("where", inputs, 3)?;
        for (t, which) in inputs.iter().zip(["condition", "x", "y"]) {
            expect_float("where", which, t)?;
        }
        let s = broadcast("where", &inputs[0].shape, &inputs[1].shape)?;
        let s = broadcast("where", &s, &inputs[2].shape)?;
        Ok(vec![TensorType::f32(s)])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = outputs[0].shape;
        k::select(
            inputs[0].f32()?,
            inputs[0].shape,
            inputs[1].f32()?,
            inputs[1].shape,
            inputs[2].f32()?,
            inputs[2].shape,
            outputs[0].f32()?,
            shape,
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
            return Ok(vec![None, None, None]);
        };
        let zero = g.scalar(0.0);
        let dx = g.apply1(Box::new(WhereOp), &[inputs[0], dy, zero])?;
        let dyy = g.apply1(Box::new(WhereOp), &[inputs[0], zero, dy])?;
        let dx = g.sum_to_shape(dx, g.shape(inputs[1]).to_vec())?;
        let dyy = g.sum_to_shape(dyy, g.shape(inputs[2]).to_vec())?;
        Ok(vec![None, Some(dx), Some(dyy)])
    }
}

impl Graph {
    /// Appends `a (op) b`.
    pub fn binary(&mut self, kind: Binary, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.apply1(Box::new(BinaryOp { kind }), &[a, b])
    }
    pub fn add(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(Binary::Add, a, b)
    }
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.binary(Binary::Mul, a, b)
    }
}
