//! `conv` (1-3 spatial axes, channels-last, groups, dilation, Keras padding; bias and
//! activation fused into the GEMM epilogue) and its two gradients, each the adjoint
//! of the convolution in one operand, so every one of the three is differentiable.

use pyfuncnet_kernels::conv::{self as kc, ConvShape};
use pyfuncnet_kernels::gemm::Epilogue;
use pyfuncnet_kernels::reduce::Reduce;
use pyfuncnet_kernels::unary::{self as ku, Unary};
use pyfuncnet_kernels::window::{Padding, Window};

use super::{Attrs, Ctx, Op, OpCost};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, DType, TensorMut, TensorRef, TensorType};

/// The sliding geometry of a convolution, without its tensors' sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvGeometry {
    pub strides: Vec<usize>,
    pub dilation: Vec<usize>,
    pub padding: ConvPadding,
    pub groups: usize,
}

/// How a convolution pads its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvPadding {
    /// Keras's rule ('valid', 'same', 'causal').
    Rule(Padding),
    /// Fixed amounts per spatial axis (transposed convolutions are adjoints of
    /// such convolutions); a negative `after` leaves trailing inputs unread.
    Explicit { before: Vec<usize>, after: Vec<i64> },
}

/// `y = conv_transpose(x, kernel)`: the adjoint of a convolution whose kernel is
/// `(k..., filters, in_channels)` (Keras's Conv*DTranspose layout), with Keras's
/// output lengths (`padding` and optional `output_padding`). Output `(batch,
/// out..., filters)`.
#[derive(Debug, Clone)]
pub struct ConvTransposeOp {
    pub strides: Vec<usize>,
    pub dilation: Vec<usize>,
    pub padding: Padding,
    pub output_padding: Option<Vec<usize>>,
}

/// `y = activation(conv(x, kernel) + bias)`: `x (batch, spatial..., cin)`, `kernel
/// (k..., cin / groups, cout)`, optional `bias (cout)`. Only activations whose
/// derivative is computable from `y` are fused (as for `dense`).
#[derive(Debug, Clone)]
pub struct ConvOp {
    pub geometry: ConvGeometry,
    pub use_bias: bool,
    pub activation: Unary,
}

/// The gradient of `conv` with respect to its input: inputs `(dy, kernel)`, output of
/// shape `input_shape`.
#[derive(Debug, Clone)]
pub struct ConvInputGradOp {
    pub geometry: ConvGeometry,
    pub input_shape: Vec<usize>,
}

/// The gradient of `conv` with respect to its kernel: inputs `(x, dy)`, output of
/// shape `kernel_shape`.
#[derive(Debug, Clone)]
pub struct ConvKernelGradOp {
    pub geometry: ConvGeometry,
    pub kernel_shape: Vec<usize>,
}

fn geometry(name: &str, a: &Attrs) -> Result<ConvGeometry> {
    let strides = a.usize_list("strides")?;
    let dilation = if a.has("dilation_rate") {
        a.usize_list("dilation_rate")?
    } else {
        vec![1; strides.len()]
    };
    let pad = a.str_or("padding", "valid")?;
    let padding = Padding::from_name(pad).ok_or_else(|| {
        GraphError::value(format!(
            "{name}: padding must be 'valid', 'same' or 'causal', got '{pad}'"
        ))
    })?;
    Ok(ConvGeometry {
        strides,
        dilation,
        padding: ConvPadding::Rule(padding),
        groups: usize::try_from(a.u64_or("groups", 1)?).unwrap_or(usize::MAX),
    })
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    Ok(Some(match name {
        "conv" => {
            let act = a.str_or("activation", "linear")?;
            let activation = Unary::from_name(act, None, None)
                .ok_or_else(|| GraphError::value(format!("conv: unknown activation '{act}'")))?;
            if activation.grad_needs_input() && activation != Unary::Linear {
                return Err(GraphError::value(format!(
                    "conv: activation '{act}' cannot be fused; apply it as a separate op"
                )));
            }
            Box::new(ConvOp {
                geometry: geometry(name, a)?,
                use_bias: a.bool_or("use_bias", false)?,
                activation,
            })
        }
        "conv_transpose" => {
            let g = geometry(name, a)?;
            let ConvPadding::Rule(padding) = g.padding else {
                unreachable!("geometry() reads a padding rule")
            };
            if padding == Padding::Causal {
                return Err(GraphError::value(
                    "conv_transpose: padding must be 'valid' or 'same', got 'causal'",
                ));
            }
            Box::new(ConvTransposeOp {
                strides: g.strides,
                dilation: g.dilation,
                padding,
                output_padding: if a.has("output_padding") {
                    Some(a.usize_list("output_padding")?)
                } else {
                    None
                },
            })
        }
        "conv_input_grad" => Box::new(ConvInputGradOp {
            geometry: geometry(name, a)?,
            input_shape: a.usize_list("input_shape")?,
        }),
        "conv_kernel_grad" => Box::new(ConvKernelGradOp {
            geometry: geometry(name, a)?,
            kernel_shape: a.usize_list("kernel_shape")?,
        }),
        _ => return Ok(None),
    }))
}

/// A shape error naming the op and both operands' shapes.
fn operand_error(op: &str, why: &str, x: &[usize], k: &[usize]) -> GraphError {
    GraphError::shape(format!(
        "{op}: {why}: input of shape {}, kernel of shape {}",
        fmt_shape(x),
        fmt_shape(k)
    ))
}

/// Checks the per-axis lists (1 to 3 spatial axes) and that the input and the
/// kernel have two axes more; returns the number of spatial axes.
fn spatial_rank(
    op: &str,
    strides: &[usize],
    dilation: &[usize],
    x: &[usize],
    k: &[usize],
) -> Result<usize> {
    let rank = strides.len();
    if !(1..=3).contains(&rank) || dilation.len() != rank {
        return Err(GraphError::value(format!(
            "{op}: strides and dilation_rate need one entry per spatial axis (1 to 3), got {strides:?} and {dilation:?}"
        )));
    }
    if x.len() != rank + 2 {
        let why = format!(
            "expected an input of rank {} (batch, {rank} spatial axes, channels)",
            rank + 2
        );
        return Err(operand_error(op, &why, x, k));
    }
    if k.len() != rank + 2 {
        let why = format!(
            "expected a kernel of rank {} ({rank} window axes, two channel axes)",
            rank + 2
        );
        return Err(operand_error(op, &why, x, k));
    }
    Ok(rank)
}

impl ConvGeometry {
    /// The window of a convolution of input `x` by kernel `k`, every shape checked
    /// (but not the total sizes: symbolic shapes stand for unknown dims with huge
    /// sentinels).
    fn window(&self, op: &str, x: &[usize], k: &[usize]) -> Result<Window> {
        let rank = spatial_rank(op, &self.strides, &self.dilation, x, k)?;
        let bad = |why: String| operand_error(op, &why, x, k);
        let (cin, kin, cout) = (x[rank + 1], k[rank], k[rank + 1]);
        let groups = self.groups;
        if groups == 0 || kin * groups != cin || cout % groups != 0 {
            return Err(bad(format!(
                "with {groups} group(s) the input's {cin} channels must equal the kernel's {kin} input channels times the groups, and the {cout} filters must divide by the groups"
            )));
        }
        let (input, size) = (&x[1..=rank], &k[..rank]);
        match &self.padding {
            ConvPadding::Rule(rule) => {
                Window::new(op, input, size, &self.strides, &self.dilation, *rule)
            }
            ConvPadding::Explicit { before, after } => Window::explicit(
                op,
                input,
                size,
                &self.strides,
                &self.dilation,
                before,
                after,
            ),
        }
        .map_err(|e| bad(e.to_string()))
    }

    /// The kernel-level shape of a convolution of input `x` by kernel `k`, checked.
    fn shape(&self, op: &str, x: &[usize], k: &[usize]) -> Result<ConvShape> {
        let window = self.window(op, x, k)?;
        let rank = self.strides.len();
        ConvShape::new(op, x[0], window, x[rank + 1], k[rank + 1], self.groups)
            .map_err(GraphError::from)
    }

    /// [`ConvGeometry::shape`], checking that `dy` is the output's shape (a
    /// gradient op's forward: the window is built once per step).
    fn shape_for_dy(&self, op: &str, x: &[usize], k: &[usize], dy: &[usize]) -> Result<ConvShape> {
        let shape = self.shape(op, x, k)?;
        let rank = self.strides.len();
        let mut expected = vec![x[0]];
        expected.extend_from_slice(shape.window.output_dims(rank));
        expected.push(k[rank + 1]);
        if dy != expected.as_slice() {
            return Err(GraphError::shape(format!(
                "{op}: the output gradient has shape {}, expected {}",
                fmt_shape(dy),
                fmt_shape(&expected)
            )));
        }
        Ok(shape)
    }

    /// The output shape `(batch, out..., cout)` of input `x` by kernel `k`.
    fn output_shape(&self, op: &str, x: &[usize], k: &[usize]) -> Result<Vec<usize>> {
        let window = self.window(op, x, k)?;
        let rank = self.strides.len();
        let mut out = vec![x[0]];
        out.extend_from_slice(window.output_dims(rank));
        out.push(k[rank + 1]);
        Ok(out)
    }
}

fn expect_f32(op: &str, inputs: &[&TensorType]) -> Result<()> {
    if inputs.iter().any(|t| t.dtype != DType::F32) {
        return Err(GraphError::dtype(format!(
            "{op}: every input must be float32"
        )));
    }
    Ok(())
}

/// GEMM-like cost of a convolution pass (the three passes cost about the same).
fn conv_cost(shape: Result<ConvShape>) -> OpCost {
    match shape {
        Ok(s) => OpCost {
            work: s.flops() / 32 + s.input_len() + s.output_len(),
            single_task: s.flops() < 2 * pyfuncnet_kernels::gemm::MIN_TASK_FLOPS,
        },
        Err(_) => OpCost {
            work: usize::MAX / 4,
            single_task: false,
        },
    }
}

impl Op for ConvOp {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        super::expect_inputs("conv", inputs, if self.use_bias { 3 } else { 2 })?;
        expect_f32("conv", inputs)?;
        let out = self
            .geometry
            .output_shape("conv", &inputs[0].shape, &inputs[1].shape)?;
        let filters = out[out.len() - 1];
        if self.use_bias && inputs[2].shape != [filters] {
            return Err(GraphError::shape(format!(
                "conv: bias must have shape ({filters},), got {}",
                fmt_shape(&inputs[2].shape)
            )));
        }
        Ok(vec![TensorType::f32(out)])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = self
            .geometry
            .shape("conv", inputs[0].shape, inputs[1].shape)?;
        let bias = if self.use_bias {
            Some(inputs[2].f32()?)
        } else {
            None
        };
        let act = self.activation;
        let apply = move |row: &mut [f32]| ku::unary_inplace(act, row);
        let epilogue = Epilogue {
            bias,
            activation: (act != Unary::Linear).then_some(&apply as _),
        };
        kc::conv_forward(
            &shape,
            inputs[0].f32()?,
            inputs[1].f32()?,
            &epilogue,
            outputs[0].f32()?,
        )?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        conv_cost(
            self.geometry
                .shape("conv", &inputs[0].shape, &inputs[1].shape),
        )
    }

    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dy) = dys[0] else {
            return Ok(vec![None; inputs.len()]);
        };
        let (x, k) = (inputs[0], inputs[1]);
        let dz = if self.activation == Unary::Linear {
            dy
        } else {
            g.apply1(
                Box::new(super::unary::UnaryGradOp {
                    kind: self.activation,
                }),
                &[outputs[0], dy],
            )?
        };
        let dx = input_grad(g, &self.geometry, dz, k, g.shape(x).to_vec())?;
        let dk = kernel_grad(g, &self.geometry, x, dz, g.shape(k).to_vec())?;
        let mut grads = vec![Some(dx), Some(dk)];
        if self.use_bias {
            let rank = g.shape(dz).len();
            let axes: Vec<usize> = (0..rank - 1).collect();
            grads.push(Some(g.reduce(Reduce::Sum, dz, &axes, false)?));
        }
        Ok(grads)
    }
}

fn plain_conv(g: &mut Graph, geometry: &ConvGeometry, x: ValueId, k: ValueId) -> Result<ValueId> {
    g.apply1(
        Box::new(ConvOp {
            geometry: geometry.clone(),
            use_bias: false,
            activation: Unary::Linear,
        }),
        &[x, k],
    )
}

fn input_grad(
    g: &mut Graph,
    geometry: &ConvGeometry,
    dy: ValueId,
    k: ValueId,
    input_shape: Vec<usize>,
) -> Result<ValueId> {
    g.apply1(
        Box::new(ConvInputGradOp {
            geometry: geometry.clone(),
            input_shape,
        }),
        &[dy, k],
    )
}

fn kernel_grad(
    g: &mut Graph,
    geometry: &ConvGeometry,
    x: ValueId,
    dy: ValueId,
    kernel_shape: Vec<usize>,
) -> Result<ValueId> {
    g.apply1(
        Box::new(ConvKernelGradOp {
            geometry: geometry.clone(),
            kernel_shape,
        }),
        &[x, dy],
    )
}

/// Checks that `dy` has the shape the convolution of `x` by `k` produces.
fn check_dy(
    op: &str,
    geometry: &ConvGeometry,
    x: &[usize],
    k: &[usize],
    dy: &[usize],
) -> Result<()> {
    let expected = geometry.output_shape(op, x, k)?;
    if dy != expected.as_slice() {
        return Err(GraphError::shape(format!(
            "{op}: the output gradient has shape {}, expected {}",
            fmt_shape(dy),
            fmt_shape(&expected)
        )));
    }
    Ok(())
}

impl Op for ConvInputGradOp {
    fn name(&self) -> &'static str {
        "conv_input_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        super::expect_inputs(self.name(), inputs, 2)?;
        expect_f32(self.name(), inputs)?;
        check_dy(
            self.name(),
            &self.geometry,
            &self.input_shape,
            &inputs[1].shape,
            &inputs[0].shape,
        )?;
        Ok(vec![TensorType::f32(self.input_shape.clone())])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = self.geometry.shape_for_dy(
            self.name(),
            &self.input_shape,
            inputs[1].shape,
            inputs[0].shape,
        )?;
        kc::conv_backward_input(
            &shape,
            inputs[0].f32()?,
            inputs[1].f32()?,
            outputs[0].f32()?,
        )?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        conv_cost(
            self.geometry
                .shape(self.name(), &self.input_shape, &inputs[1].shape),
        )
    }

    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(h) = dys[0] else {
            return Ok(vec![None, None]);
        };
        // dx = B(dy, k) is bilinear and <B(dy, k), h> = <dy, conv(h, k)>.
        let (dy, k) = (inputs[0], inputs[1]);
        let d_dy = plain_conv(g, &self.geometry, h, k)?;
        let d_k = kernel_grad(g, &self.geometry, h, dy, g.shape(k).to_vec())?;
        Ok(vec![Some(d_dy), Some(d_k)])
    }
}

impl Op for ConvKernelGradOp {
    fn name(&self) -> &'static str {
        "conv_kernel_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        super::expect_inputs(self.name(), inputs, 2)?;
        expect_f32(self.name(), inputs)?;
        check_dy(
            self.name(),
            &self.geometry,
            &inputs[0].shape,
            &self.kernel_shape,
            &inputs[1].shape,
        )?;
        Ok(vec![TensorType::f32(self.kernel_shape.clone())])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let shape = self.geometry.shape_for_dy(
            self.name(),
            inputs[0].shape,
            &self.kernel_shape,
            inputs[1].shape,
        )?;
        kc::conv_backward_kernel(
            &shape,
            inputs[0].f32()?,
            inputs[1].f32()?,
            outputs[0].f32()?,
        )?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        conv_cost(
            self.geometry
                .shape(self.name(), &inputs[0].shape, &self.kernel_shape),
        )
    }

    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(h) = dys[0] else {
            return Ok(vec![None, None]);
        };
        // dk = W(x, dy) and <W(x, dy), h> = <dy, conv(x, h)> = <x, B(dy, h)>.
        let (x, dy) = (inputs[0], inputs[1]);
        let d_x = input_grad(g, &self.geometry, dy, h, g.shape(x).to_vec())?;
        let d_dy = plain_conv(g, &self.geometry, x, h)?;
        Ok(vec![Some(d_x), Some(d_dy)])
    }
}

impl ConvTransposeOp {
    /// Keras's output lengths and the convolution this op is the adjoint of.
    fn adjoint_of(&self, x: &[usize], k: &[usize]) -> Result<(Vec<usize>, ConvGeometry)> {
        let op = "conv_transpose";
        let rank = spatial_rank(op, &self.strides, &self.dilation, x, k)?;
        let bad = |why: String| operand_error(op, &why, x, k);
        if k[rank + 1] != x[rank + 1] {
            return Err(bad(format!(
                "the kernel's last axis ({}) must equal the input's channels ({})",
                k[rank + 1],
                x[rank + 1]
            )));
        }
        if let Some(op) = &self.output_padding {
            if op.len() != rank || op.iter().zip(&self.strides).any(|(p, s)| p >= s) {
                return Err(GraphError::value(format!(
                    "conv_transpose: output_padding {op:?} needs one entry per spatial axis, each smaller than its stride (strides {:?})",
                    self.strides
                )));
            }
        }
        let mut out = vec![x[0]];
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for i in 0..rank {
            let (n, s, d) = (x[i + 1], self.strides[i], self.dilation[i]);
            if k[i] == 0 || s == 0 || d == 0 {
                return Err(bad(
                    "kernel sizes, strides and dilations must be positive".into()
                ));
            }
            let ext = (k[i] - 1) * d + 1;
            let op = self.output_padding.as_ref().map(|p| p[i]);
            // The lengths and left paddings of Keras's conv_transpose; the adjoint
            // convolution pads `ext - 1 - left` before.
            let (length, left) = match (self.padding, op) {
                (Padding::Same, None) => {
                    let total = s + ext - 2;
                    (n * s, (total / 2 + total % 2).min(ext - 1))
                }
                (Padding::Same, Some(op)) => {
                    let total = ext + ext % 2 - 2 + op;
                    (
                        (n.max(1) - 1) * s + ext % 2 + op,
                        (total / 2 + total % 2).min(ext - 1),
                    )
                }
                (_, op) => {
                    let op = op.unwrap_or(s.max(ext) - ext);
                    ((n.max(1) - 1) * s + ext + op, ext - 1)
                }
            };
            let pad = ext - 1 - left;
            before.push(pad);
            after.push(((n.max(1) - 1) * s + ext) as i64 - length as i64 - pad as i64);
            out.push(if n == 0 { 0 } else { length });
        }
        out.push(k[rank]);
        let geometry = ConvGeometry {
            strides: self.strides.clone(),
            dilation: self.dilation.clone(),
            padding: ConvPadding::Explicit { before, after },
            groups: 1,
        };
        Ok((out, geometry))
    }
}

impl Op for ConvTransposeOp {
    fn name(&self) -> &'static str {
        "conv_transpose"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        super::expect_inputs(self.name(), inputs, 2)?;
        expect_f32(self.name(), inputs)?;
        let (out, geometry) = self.adjoint_of(&inputs[0].shape, &inputs[1].shape)?;
        check_dy(
            self.name(),
            &geometry,
            &out,
            &inputs[1].shape,
            &inputs[0].shape,
        )?;
        Ok(vec![TensorType::f32(out)])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let (out, geometry) = self.adjoint_of(inputs[0].shape, inputs[1].shape)?;
        let shape = geometry.shape(self.name(), &out, inputs[1].shape)?;
        kc::conv_backward_input(
            &shape,
            inputs[0].f32()?,
            inputs[1].f32()?,
            outputs[0].f32()?,
        )?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        let shape = self
            .adjoint_of(&inputs[0].shape, &inputs[1].shape)
            .and_then(|(out, geometry)| geometry.shape(self.name(), &out, &inputs[1].shape));
        conv_cost(shape)
    }

    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(h) = dys[0] else {
            return Ok(vec![None, None]);
        };
        let (x, k) = (inputs[0], inputs[1]);
        let (_, geometry) = self.adjoint_of(g.shape(x), g.shape(k))?;
        debug_assert_eq!(g.shape(outputs[0]), g.shape(h));
        let d_x = plain_conv(g, &geometry, h, k)?;
        let d_k = kernel_grad(g, &geometry, h, x, g.shape(k).to_vec())?;
        Ok(vec![Some(d_x), Some(d_k)])
    }
}
