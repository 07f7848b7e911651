//! `training_switch(a, b)`: `a` in training steps, `b` otherwise. Layers whose
//! computation differs between training and inference (batch normalization's
//! batch vs moving statistics) compile to one graph that picks at run time. The
//! `mode` attribute can also fix the choice ("always" `a`, "never" `a`), as a
//! layer called with an explicit `training` flag, or frozen, needs.

use super::{expect_inputs, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, DType, TensorMut, TensorRef, TensorType};

/// When a switch picks its first input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchMode {
    /// In training steps only.
    Training,
    Always,
    Never,
}

impl SwitchMode {
    fn first(self, ctx: &Ctx) -> bool {
        match self {
            SwitchMode::Training => ctx.training,
            SwitchMode::Always => true,
            SwitchMode::Never => false,
        }
    }
}

/// Copies input 0 when its mode says so and input 1 otherwise.
#[derive(Debug, Clone, Copy)]
pub struct TrainingSwitchOp {
    pub mode: SwitchMode,
}

/// The gradient of [`TrainingSwitchOp`]: `(dy, 0)` when the switch picks its first
/// input, `(0, dy)` otherwise.
#[derive(Debug, Clone, Copy)]
pub struct TrainingSwitchGradOp {
    pub mode: SwitchMode,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    if name != "training_switch" && name != "training_switch_grad" {
        return Ok(None);
    }
    let mode = match a.str_or("mode", "training")? {
        "training" => SwitchMode::Training,
        "always" => SwitchMode::Always,
        "never" => SwitchMode::Never,
        other => {
            return Err(GraphError::value(format!(
                "{name}: mode must be 'training', 'always' or 'never', got '{other}'"
            )))
        }
    };
    Ok(Some(if name == "training_switch" {
        Box::new(TrainingSwitchOp { mode })
    } else {
        Box::new(TrainingSwitchGradOp { mode })
    }))
}

impl Op for TrainingSwitchOp {
    fn name(&self) -> &'static str {
        "training_switch"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 2)?;
        if inputs[0] != inputs[1] || inputs[0].dtype != DType::F32 {
            return Err(GraphError::shape(format!(
                "training_switch: both inputs must be float32 of one shape, got {} and {}",
                fmt_shape(&inputs[0].shape),
                fmt_shape(&inputs[1].shape)
            )));
        }
        Ok(vec![inputs[0].clone()])
    }

    fn forward(&self, ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let src = inputs[if self.mode.first(ctx) { 0 } else { 1 }].f32()?;
        outputs[0].f32()?.copy_from_slice(src);
        Ok(())
    }

    fn backward(
        &self,
        g: &mut Graph,
        _inputs: &[ValueId],
        _outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None, None]);
        };
        let grads = g.apply(Box::new(TrainingSwitchGradOp { mode: self.mode }), &[dy])?;
        Ok(vec![Some(grads[0]), Some(grads[1])])
    }
}

impl Op for TrainingSwitchGradOp {
    fn name(&self) -> &'static str {
        "training_switch_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 1)?;
        Ok(vec![inputs[0].clone(), inputs[0].clone()])
    }

    fn forward(&self, ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let dy = inputs[0].f32()?;
        let (first, second) = outputs.split_at_mut(1);
        let (active, idle) = if self.mode.first(ctx) {
            (first[0].f32()?, second[0].f32()?)
        } else {
            (second[0].f32()?, first[0].f32()?)
        };
        active.copy_from_slice(dy);
        idle.fill(0.0);
        Ok(())
    }

    fn backward(
        &self,
        g: &mut Graph,
        _inputs: &[ValueId],
        _outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        // Linear: the adjoint sends each output's gradient back through the same switch.
        let (a, b) = match (dys[0], dys[1]) {
            (None, None) => return Ok(vec![None]),
            (Some(a), None) => (a, g.mul_scalar_zero_like(a)?),
            (None, Some(b)) => (g.mul_scalar_zero_like(b)?, b),
            (Some(a), Some(b)) => (a, b),
        };
        Ok(vec![Some(g.apply1(
            Box::new(TrainingSwitchOp { mode: self.mode }),
            &[a, b],
        )?)])
    }
}

impl Graph {
    /// `0 * v`, a zero tensor shaped like `v`.
    fn mul_scalar_zero_like(&mut self, v: ValueId) -> Result<ValueId> {
        let zero = self.scalar(0.0);
        self.mul(v, zero)
    }
}
