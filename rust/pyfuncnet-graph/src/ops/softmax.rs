//! softmax / log_softmax along an axis, and the fused losses
//! `softmax_cross_entropy` (dense or sparse labels), `categorical_crossentropy` of
//! probabilities (dense or sparse labels) and `sigmoid_cross_entropy`.

use pyfuncnet_kernels::softmax as k;

use pyfuncnet_kernels::binary::Binary;
use pyfuncnet_kernels::reduce::Reduce;
use pyfuncnet_kernels::unary::Unary;

use super::{expect_float, expect_inputs, normalize_axis, Attrs, Ctx, Op};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, DType, TensorMut, TensorRef, TensorType};

/// softmax (`log = false`) or log_softmax along `axis`.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxOp {
    pub axis: i64,
    pub log: bool,
}

/// Gradient of [`SoftmaxOp`]: inputs `[y, dy]`.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxGradOp {
    pub axis: i64,
    pub log: bool,
}

/// Per-row cross-entropy of `softmax(logits)` over the last axis. Inputs `[logits,
/// labels]`, labels one-hot/soft (float, logits' shape) or class indices (int32,
/// logits' shape without the last axis) when `sparse`. Outputs `[loss, probs]`;
/// `probs` is kept for the backward pass.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxCrossEntropyOp {
    pub sparse: bool,
}

/// Gradient of [`SoftmaxCrossEntropyOp`]: inputs `[probs, labels, dloss]`.
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxCrossEntropyGradOp {
    pub sparse: bool,
}

/// Per-row cross-entropy of probabilities over the last axis, as Keras computes it
/// (each row renormalised, clipped to `[epsilon, 1 - epsilon]`, `-sum(labels *
/// ln(p))`). Inputs `[probs, labels]`, labels as for [`SoftmaxCrossEntropyOp`].
#[derive(Debug, Clone, Copy)]
pub struct CrossentropyOp {
    pub sparse: bool,
    pub epsilon: f32,
}

/// Gradient of [`CrossentropyOp`] with respect to the probabilities: inputs
/// `[probs, labels, dloss]`.
#[derive(Debug, Clone, Copy)]
pub struct CrossentropyGradOp {
    pub sparse: bool,
    pub epsilon: f32,
}

/// Elementwise binary cross-entropy of `sigmoid(logits)`: inputs `[logits, labels]`.
#[derive(Debug, Clone, Copy)]
pub struct SigmoidCrossEntropyOp;

/// Gradient of [`SigmoidCrossEntropyOp`]: inputs `[logits, labels, dloss]`.
#[derive(Debug, Clone, Copy)]
pub struct SigmoidCrossEntropyGradOp;

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    Ok(Some(match name {
        "softmax" | "log_softmax" => Box::new(SoftmaxOp {
            axis: a.i64_or("axis", -1)?,
            log: name == "log_softmax",
        }),
        "softmax_grad" | "log_softmax_grad" => Box::new(SoftmaxGradOp {
            axis: a.i64_or("axis", -1)?,
            log: name == "log_softmax_grad",
        }),
        "softmax_cross_entropy" => Box::new(SoftmaxCrossEntropyOp {
            sparse: a.bool_or("sparse", false)?,
        }),
        "softmax_cross_entropy_grad" => Box::new(SoftmaxCrossEntropyGradOp {
            sparse: a.bool_or("sparse", false)?,
        }),
        "categorical_crossentropy" => Box::new(CrossentropyOp {
            sparse: a.bool_or("sparse", false)?,
            epsilon: a.f32("epsilon")?,
        }),
        "categorical_crossentropy_grad" => Box::new(CrossentropyGradOp {
            sparse: a.bool_or("sparse", false)?,
            epsilon: a.f32("epsilon")?,
        }),
        "sigmoid_cross_entropy" => Box::new(SigmoidCrossEntropyOp),
        "sigmoid_cross_entropy_grad" => Box::new(SigmoidCrossEntropyGradOp),
        _ => return Ok(None),
    }))
}

/// (outer, n, inner) of `shape` around `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

impl Op for SoftmaxOp {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax"
        } else {
            "softmax"
        }
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 1)?;
        expect_float(self.name(), "the logits", inputs[0])?;
        normalize_axis(self.name(), self.axis, inputs[0].rank())?;
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let axis = normalize_axis(self.name(), self.axis, inputs[0].shape.len())?;
        let (o, n, i) = split_at_axis(inputs[0].shape, axis);
        if self.log {
            k::log_softmax(inputs[0].f32()?, o, n, i, outputs[0].f32()?)?;
        } else {
            k::softmax(inputs[0].f32()?, o, n, i, outputs[0].f32()?)?;
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
        let op = SoftmaxGradOp {
            axis: self.axis,
            log: self.log,
        };
        Ok(vec![Some(g.apply1(Box::new(op), &[outputs[0], dy])?)])
    }
}

impl Op for SoftmaxGradOp {
    fn name(&self) -> &'static str {
        if self.log {
            "log_softmax_grad"
        } else {
            "softmax_grad"
        }
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 2)?;
        if inputs[0].shape != inputs[1].shape {
            return Err(GraphError::shape(format!(
                "{}: y and dy shapes differ",
                self.name()
            )));
        }
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let axis = normalize_axis(self.name(), self.axis, inputs[0].shape.len())?;
        let (o, n, i) = split_at_axis(inputs[0].shape, axis);
        let (y, dy) = (inputs[0].f32()?, inputs[1].f32()?);
        if self.log {
            k::log_softmax_grad(y, dy, o, n, i, outputs[0].f32()?)?;
        } else {
            k::softmax_grad(y, dy, o, n, i, outputs[0].f32()?)?;
        }
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
            "second-order gradients of softmax are not supported",
        ))
    }
}

/// Checks the scores (`"logits"` or `"probabilities"`, as `what` says) and labels of
/// a fused cross-entropy; returns (rows, classes).
fn xent_dims(
    op: &str,
    what: &str,
    sparse: bool,
    logits: &TensorType,
    labels: &TensorType,
) -> Result<(usize, usize)> {
    expect_float(op, &format!("the {what}"), logits)?;
    if logits.rank() == 0 {
        return Err(GraphError::shape(format!(
            "{op}: {what} need at least one axis (the classes)"
        )));
    }
    let lead = &logits.shape[..logits.rank() - 1];
    let (ok, want) = if sparse {
        (
            labels.dtype == DType::I32 && labels.shape == lead,
            format!("int32 class indices of shape {}", fmt_shape(lead)),
        )
    } else {
        (
            labels.dtype != DType::I32 && labels.shape == logits.shape,
            format!("float labels of shape {}", fmt_shape(&logits.shape)),
        )
    };
    if !ok {
        return Err(GraphError::shape(format!(
            "{op}: expected {want} for {what} of shape {}, got {} labels of shape {}",
            fmt_shape(&logits.shape),
            labels.dtype.name(),
            fmt_shape(&labels.shape)
        )));
    }
    Ok((lead.iter().product(), logits.shape[logits.rank() - 1]))
}

impl Op for SoftmaxCrossEntropyOp {
    fn name(&self) -> &'static str {
        "softmax_cross_entropy"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 2)?;
        xent_dims(self.name(), "logits", self.sparse, inputs[0], inputs[1])?;
        let lead = inputs[0].shape[..inputs[0].rank() - 1].to_vec();
        Ok(vec![
            TensorType::f32(lead),
            TensorType::f32(inputs[0].shape.clone()),
        ])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = inputs[0].shape;
        let classes = shape[shape.len() - 1];
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let (loss_out, probs_out) = outputs.split_at_mut(1);
        let (loss, probs) = (loss_out[0].f32()?, probs_out[0].f32()?);
        if self.sparse {
            k::sparse_softmax_cross_entropy(
                inputs[0].f32()?,
                inputs[1].i32()?,
                rows,
                classes,
                probs,
                loss,
            )?;
        } else {
            k::softmax_cross_entropy(
                inputs[0].f32()?,
                inputs[1].f32()?,
                rows,
                classes,
                probs,
                loss,
            )?;
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
        if dys[1].is_some() {
            return Err(GraphError::unsupported(
                "softmax_cross_entropy: the probabilities output is not differentiable",
            ));
        }
        let Some(dloss) = dys[0] else {
            return Ok(vec![None, None]);
        };
        let op = SoftmaxCrossEntropyGradOp {
            sparse: self.sparse,
        };
        let dlogits = g.apply1(Box::new(op), &[outputs[1], inputs[1], dloss])?;
        Ok(vec![Some(dlogits), None])
    }
}

impl Op for SoftmaxCrossEntropyGradOp {
    fn name(&self) -> &'static str {
        "softmax_cross_entropy_grad"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 3)?;
        let (rows, _) = xent_dims(self.name(), "logits", self.sparse, inputs[0], inputs[1])?;
        if inputs[2].numel() != rows {
            return Err(GraphError::shape(
                "softmax_cross_entropy_grad: dloss must have one value per row",
            ));
        }
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = inputs[0].shape;
        let classes = shape[shape.len() - 1];
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let (probs, dloss) = (inputs[0].f32()?, inputs[2].f32()?);
        let out = outputs[0].f32()?;
        if self.sparse {
            k::sparse_softmax_cross_entropy_grad(
                probs,
                inputs[1].i32()?,
                dloss,
                rows,
                classes,
                out,
            )?;
        } else {
            k::softmax_cross_entropy_grad(probs, inputs[1].f32()?, dloss, rows, classes, out)?;
        }
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
            "second-order gradients of softmax_cross_entropy are not supported",
        ))
    }
}

fn same_float_shapes(op: &str, inputs: &[&TensorType]) -> Result<()> {
    for t in inputs {
        expect_float(op, "the logits", t)?;
        if t.shape != inputs[0].shape {
            return Err(GraphError::shape(format!(
                "{op}: logits of shape {} and labels of shape {} must have the same shape",
                fmt_shape(&inputs[0].shape),
                fmt_shape(&t.shape)
            )));
        }
    }
    Ok(())
}

/// The (rows, classes) of a cross-entropy of probabilities, once its inputs and
/// `epsilon` are checked.
fn probability_xent_dims(
    op: &str,
    sparse: bool,
    epsilon: f32,
    probs: &TensorType,
    labels: &TensorType,
) -> Result<(usize, usize)> {
    // The clip to [epsilon, 1 - epsilon] needs its bounds in order.
    if !(0.0..=0.5).contains(&epsilon) {
        return Err(GraphError::value(format!(
            "{op}: epsilon must be in [0, 0.5], got {epsilon}"
        )));
    }
    xent_dims(op, "probabilities", sparse, probs, labels)
}

impl Op for CrossentropyOp {
    fn name(&self) -> &'static str {
        "categorical_crossentropy"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 2)?;
        probability_xent_dims(self.name(), self.sparse, self.epsilon, inputs[0], inputs[1])?;
        let lead = inputs[0].shape[..inputs[0].rank() - 1].to_vec();
        Ok(vec![TensorType::f32(lead)])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = inputs[0].shape;
        let classes = shape[shape.len() - 1];
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let (probs, loss) = (inputs[0].f32()?, outputs[0].f32()?);
        if self.sparse {
            k::sparse_crossentropy(probs, inputs[1].i32()?, rows, classes, self.epsilon, loss)?;
        } else {
            k::crossentropy(probs, inputs[1].f32()?, rows, classes, self.epsilon, loss)?;
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
        let Some(dloss) = dys[0] else {
            return Ok(vec![None, None]);
        };
        let (probs, labels) = (inputs[0], inputs[1]);
        let op = CrossentropyGradOp {
            sparse: self.sparse,
            epsilon: self.epsilon,
        };
        let dprobs = g.apply1(Box::new(op), &[probs, labels, dloss])?;
        if self.sparse {
            return Ok(vec![Some(dprobs), None]);
        }
        // Dense labels (soft targets computed by the model, say) get
        // `-dloss * ln(clip(p))`, built from ordinary ops: the planner drops these
        // nodes when nothing needs them, as it does when the labels are data.
        let shape = g.shape(probs).to_vec();
        let last = shape.len() - 1;
        let sum = g.reduce(Reduce::Sum, probs, &[last], true)?;
        let p = g.binary(Binary::Div, probs, sum)?;
        let clipped = g.apply1(
            Box::new(super::unary::ClipOp {
                lo: self.epsilon,
                hi: 1.0 - self.epsilon,
            }),
            &[p],
        )?;
        let log_p = g.unary(Unary::Log, clipped)?;
        let mut row_shape = shape;
        row_shape[last] = 1;
        let dloss = g.reshape(dloss, &row_shape)?;
        let minus_one = g.scalar(-1.0);
        let scale = g.mul(dloss, minus_one)?;
        let dlabels = g.mul(log_p, scale)?;
        Ok(vec![Some(dprobs), Some(dlabels)])
    }
}

impl Op for CrossentropyGradOp {
    fn name(&self) -> &'static str {
        "categorical_crossentropy_grad"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 3)?;
        let (rows, _) =
            probability_xent_dims(self.name(), self.sparse, self.epsilon, inputs[0], inputs[1])?;
        if inputs[2].numel() != rows {
            return Err(GraphError::shape(
                "categorical_crossentropy_grad: dloss must have one value per row",
            ));
        }
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = inputs[0].shape;
        let classes = shape[shape.len() - 1];
        let rows: usize = shape[..shape.len() - 1].iter().product();
        let (probs, dloss, out) = (inputs[0].f32()?, inputs[2].f32()?, outputs[0].f32()?);
        let eps = self.epsilon;
        if self.sparse {
            let labels = inputs[1].i32()?;
            k::sparse_crossentropy_grad(probs, labels, dloss, rows, classes, eps, out)?;
        } else {
            let labels = inputs[1].f32()?;
            k::crossentropy_grad(probs, labels, dloss, rows, classes, eps, out)?;
        }
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
            "second-order gradients of categorical_crossentropy are not supported",
        ))
    }
}

impl Op for SigmoidCrossEntropyOp {
    fn name(&self) -> &'static str {
        "sigmoid_cross_entropy"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 2)?;
        same_float_shapes(self.name(), inputs)?;
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        k::sigmoid_cross_entropy(inputs[0].f32()?, inputs[1].f32()?, outputs[0].f32()?)?;
        Ok(())
    }
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dloss) = dys[0] else {
            return Ok(vec![None, None]);
        };
        let d = g.apply1(
            Box::new(SigmoidCrossEntropyGradOp),
            &[inputs[0], inputs[1], dloss],
        )?;
        Ok(vec![Some(d), None])
    }
}

impl Op for SigmoidCrossEntropyGradOp {
    fn name(&self) -> &'static str {
        "sigmoid_cross_entropy_grad"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        expect_inputs(self.name(), inputs, 3)?;
        same_float_shapes(self.name(), inputs)?;
        Ok(vec![TensorType::f32(inputs[0].shape.clone())])
    }
    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        k::sigmoid_cross_entropy_grad(
            inputs[0].f32()?,
            inputs[1].f32()?,
            inputs[2].f32()?,
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
            "second-order gradients of sigmoid_cross_entropy are not supported",
        ))
    }
}
