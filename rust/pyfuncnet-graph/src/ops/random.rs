//! Random ops keyed by the counter-based RNG: `dropout`.

use pyfuncnet_kernels::rng;

use super::{expect_inputs, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{DType, TensorMut, TensorRef, TensorType};

/// Inverted dropout; active only in training steps. Outputs `[y, mask]`; the mask
/// (0 or 1/(1-rate)) is what the backward pass multiplies by. The random stream is
/// keyed by (program seed ^ `seed`, `stream`, step), so results do not depend on threads.
#[derive(Debug, Clone, Copy)]
pub struct DropoutOp {
    pub rate: f32,
    pub seed: u64,
    pub stream: u64,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    if name != "dropout" {
        return Ok(None);
    }
    let rate = a.f32("rate")?;
    if !(0.0..1.0).contains(&rate) {
        return Err(GraphError::value(format!(
            "dropout: rate must be in [0, 1), got {rate}"
        )));
    }
    Ok(Some(Box::new(DropoutOp {
        rate,
        seed: a.u64_or("seed", 0)?,
        stream: a.u64_or("stream", 0)?,
    })))
}

impl Op for DropoutOp {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs("dropout", inputs, 1)?;
        if inputs[0].dtype != DType::F32 {
            return Err(GraphError::dtype("dropout: expected a float tensor"));
        }
        let t = TensorType::f32(inputs[0].shape.clone());
        Ok(vec![t.clone(), t])
    }
    fn forward(&self, ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let x = inputs[0].f32()?;
        let (y_out, mask_out) = outputs.split_at_mut(1);
        let (y, mask) = (y_out[0].f32()?, mask_out[0].f32()?);
        if ctx.training && self.rate > 0.0 {
            rng::dropout(
                ctx.seed ^ self.seed,
                self.stream,
                ctx.step,
                self.rate,
                x,
                mask,
                y,
            )?;
        } else {
            y.copy_from_slice(x);
            mask.fill(1.0);
        }
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        _i: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None]);
        };
        Ok(vec![Some(g.mul(dy, outputs[1])?)])
    }
}
