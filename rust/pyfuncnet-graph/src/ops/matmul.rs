//! `matmul` (batched, broadcasting, with transposed operands read in place),
//! `dense` (GEMM with the bias and activation fused into its epilogue),
//! `dense_kernel_grad` (the gradient of a dense kernel), and `take_dense` (a table
//! lookup feeding a dense layer, made by the fusion pass) with its gradient.

use pyfuncnet_kernels::embed::{
    self, LookupOutputs, TakeDenseGrads, TakeDenseOutputs, TakeDenseShape,
};
use pyfuncnet_kernels::gemm::{self, Epilogue, MatMut, MatRef};
use pyfuncnet_kernels::reduce::Reduce;
use pyfuncnet_kernels::unary::{self as ku, Unary};

use super::{Attrs, Ctx, Op, OpCost};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, DType, TensorMut, TensorRef, TensorType};

/// `out = op(a) @ op(b)` over the last two axes, batch axes broadcast; `op` transposes
/// when the flag is set (the GEMM packs the transposed view; nothing is copied).
#[derive(Debug, Clone, Copy, Default)]
pub struct MatmulOp {
    pub transpose_a: bool,
    pub transpose_b: bool,
}

/// The gradient of a dense kernel: `flat(x)ᵀ dz` with `x (..., in)` read as
/// `(rows, in)` and `dz (rows, units)`; gives `(in, units)`. Reading `x` through
/// a flat view in place (rather than a reshape node) matters for inputs of rank
/// 3 and more: such a reshape runs next to the forward `dense` that also reads
/// `x`, so it could not take over `x`'s buffer and copied it.
#[derive(Debug, Clone, Copy)]
pub struct DenseKernelGradOp;

impl DenseKernelGradOp {
    /// `(rows, in, units)`.
    fn dims(x: &[usize], dz: &[usize]) -> Result<(usize, usize, usize)> {
        let rows: usize = x.iter().rev().skip(1).product();
        match (x.last(), dz) {
            (Some(&k), &[r, n]) if r == rows => Ok((rows, k, n)),
            _ => Err(GraphError::shape(format!(
                "dense_kernel_grad: the input {} and the output gradient {} must hold the same rows",
                fmt_shape(x),
                fmt_shape(dz)
            ))),
        }
    }
}

impl Op for DenseKernelGradOp {
    fn name(&self) -> &'static str {
        "dense_kernel_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        super::expect_inputs("dense_kernel_grad", inputs, 2)?;
        if inputs.iter().any(|t| t.dtype != DType::F32) {
            return Err(GraphError::dtype(
                "dense_kernel_grad: both operands must be float32",
            ));
        }
        let (_, k, n) = Self::dims(&inputs[0].shape, &inputs[1].shape)?;
        Ok(vec![TensorType::f32(vec![k, n])])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let (rows, k, n) = Self::dims(inputs[0].shape, inputs[1].shape)?;
        let (x, dz) = (inputs[0].f32()?, inputs[1].f32()?);
        gemm::sgemm(
            1.0,
            MatRef::row_major(x, rows, k)?.t(),
            MatRef::row_major(dz, rows, n)?,
            0.0,
            MatMut::row_major(outputs[0].f32()?, k, n)?,
            &Epilogue::default(),
        )?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        match Self::dims(&inputs[0].shape, &inputs[1].shape) {
            Ok((rows, k, n)) => gemm_cost(2 * rows * k * n),
            Err(_) => gemm_cost(usize::MAX),
        }
    }

    /// With `G = flat(x)ᵀ dz`: `d flat(x) = dz dGᵀ` and `d dz = flat(x) dG`.
    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        _o: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let Some(dg) = dys[0] else {
            return Ok(vec![None, None]);
        };
        let (x, dz) = (inputs[0], inputs[1]);
        let x_shape = g.shape(x).to_vec();
        let (rows, k) = (g.shape(dz)[0], g.shape(dg)[0]);
        let dx2 = g.apply1(
            Box::new(MatmulOp {
                transpose_a: false,
                transpose_b: true,
            }),
            &[dz, dg],
        )?;
        let dx = g.reshape(dx2, &x_shape)?;
        let x2 = g.reshape(x, &[rows, k])?;
        let ddz = g.apply1(Box::new(MatmulOp::default()), &[x2, dg])?;
        Ok(vec![Some(dx), Some(ddz)])
    }
}

/// `y = activation(x @ kernel + bias)` with `x` of shape `(..., in)`, `kernel (in, units)`
/// and optional `bias (units)`. Only activations whose derivative is computable from
/// `y` are fused; the spec lowering splits the others into `dense` + activation.
#[derive(Debug, Clone, Copy)]
pub struct DenseOp {
    pub activation: Unary,
    pub use_bias: bool,
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    Ok(Some(match name {
        "matmul" => Box::new(MatmulOp {
            transpose_a: a.bool_or("transpose_a", false)?,
            transpose_b: a.bool_or("transpose_b", false)?,
        }),
        "dense" => {
            let act = a.str_or("activation", "linear")?;
            let activation = Unary::from_name(act, None, None)
                .ok_or_else(|| GraphError::value(format!("dense: unknown activation '{act}'")))?;
            if activation.grad_needs_input() && activation != Unary::Linear {
                return Err(GraphError::value(format!(
                    "dense: activation '{act}' cannot be fused; apply it as a separate op"
                )));
            }
            Box::new(DenseOp {
                activation,
                use_bias: a.bool_or("use_bias", true)?,
            })
        }
        "dense_kernel_grad" => Box::new(DenseKernelGradOp),
        _ => return Ok(None),
    }))
}

/// The matrix dims (rows, cols) of the last two axes after the optional transpose.
fn mat_dims(shape: &[usize], transpose: bool) -> (usize, usize) {
    let (r, c) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    if transpose {
        (c, r)
    } else {
        (r, c)
    }
}

impl MatmulOp {
    fn shapes(&self, a: &[usize], b: &[usize]) -> Result<(Vec<usize>, usize, usize, usize)> {
        let bad = |why: &str| {
            GraphError::shape(format!(
                "matmul: {why}: a has shape {}{}, b has shape {}{}",
                fmt_shape(a),
                if self.transpose_a {
                    " (transposed)"
                } else {
                    ""
                },
                fmt_shape(b),
                if self.transpose_b {
                    " (transposed)"
                } else {
                    ""
                },
            ))
        };
        if a.len() < 2 || b.len() < 2 {
            return Err(bad("both operands need rank >= 2"));
        }
        let (m, ka) = mat_dims(a, self.transpose_a);
        let (kb, n) = mat_dims(b, self.transpose_b);
        if ka != kb {
            return Err(bad(&format!("inner dimensions differ ({ka} vs {kb})")));
        }
        let batch =
            pyfuncnet_kernels::binary::broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])
                .map_err(|_| bad("batch dimensions cannot be broadcast"))?;
        Ok((batch, m, ka, n))
    }
}

/// Offsets of the matrix of batch index `i` in an operand whose batch dims
/// (`dims`, left-padded to `out_batch`'s rank) broadcast to `out_batch`.
fn batch_offset(mut i: usize, out_batch: &[usize], dims: &[usize], mat_size: usize) -> usize {
    let pad = out_batch.len() - dims.len();
    let mut offset = 0;
    let mut stride = mat_size;
    for d in (0..out_batch.len()).rev() {
        let idx = i % out_batch[d];
        i /= out_batch[d];
        if d >= pad {
            let n = dims[d - pad];
            if n != 1 {
                offset += idx * stride;
            }
            stride *= n;
        }
    }
    offset
}

/// Flops per unit of [`OpCost::work`]: about what one core's SIMD GEMM does per ns.
const FLOPS_PER_WORK: usize = 32;
/// Products under this many flops (two of the kernels' smallest parallel tasks)
/// count as one task: on several threads the GEMM may cut one in two, whose
/// second half the pool's other thread takes when it is free.
const SINGLE_TASK_FLOPS: usize = 2 * gemm::MIN_TASK_FLOPS;

/// Runs `f` with the GEMM epilogue of a dense layer: the bias, then the activation.
fn with_epilogue<R>(activation: Unary, bias: Option<&[f32]>, f: impl FnOnce(&Epilogue) -> R) -> R {
    let apply = move |row: &mut [f32]| ku::unary_inplace(activation, row);
    f(&Epilogue {
        bias,
        activation: (activation != Unary::Linear).then_some(&apply as _),
    })
}

/// The gradient of a dense layer's pre-activation output from that of its output
/// `y` (the fused activations' derivatives need `y` only).
fn pre_activation_grad(
    g: &mut Graph,
    activation: Unary,
    y: ValueId,
    dy: ValueId,
) -> Result<ValueId> {
    if activation == Unary::Linear {
        return Ok(dy);
    }
    g.apply1(
        Box::new(super::unary::UnaryGradOp { kind: activation }),
        &[y, dy],
    )
}

fn gemm_cost(flops: usize) -> OpCost {
    OpCost {
        work: flops / FLOPS_PER_WORK,
        single_task: flops < SINGLE_TASK_FLOPS,
    }
}

impl Op for MatmulOp {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        super::expect_inputs("matmul", inputs, 2)?;
        if inputs.iter().any(|t| t.dtype != DType::F32) {
            return Err(GraphError::dtype("matmul: both operands must be float32"));
        }
        let (mut batch, m, _, n) = self.shapes(&inputs[0].shape, &inputs[1].shape)?;
        batch.extend([m, n]);
        Ok(vec![TensorType::f32(batch)])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let (a_shape, b_shape) = (inputs[0].shape, inputs[1].shape);
        let (batch, m, k, n) = self.shapes(a_shape, b_shape)?;
        let (a, b) = (inputs[0].f32()?, inputs[1].f32()?);
        let c = outputs[0].f32()?;
        let (ar, ac) = (a_shape[a_shape.len() - 2], a_shape[a_shape.len() - 1]);
        let (br, bc) = (b_shape[b_shape.len() - 2], b_shape[b_shape.len() - 1]);
        let batches: usize = batch.iter().product();
        let (a_batch, b_batch) = (&a_shape[..a_shape.len() - 2], &b_shape[..b_shape.len() - 2]);
        for i in 0..batches {
            let ao = batch_offset(i, &batch, a_batch, ar * ac);
            let bo = batch_offset(i, &batch, b_batch, br * bc);
            let mut am = MatRef::row_major(&a[ao..ao + ar * ac], ar, ac)?;
            let mut bm = MatRef::row_major(&b[bo..bo + br * bc], br, bc)?;
            if self.transpose_a {
                am = am.t();
            }
            if self.transpose_b {
                bm = bm.t();
            }
            let cm = MatMut::row_major(&mut c[i * m * n..(i + 1) * m * n], m, n)?;
            debug_assert_eq!(am.cols, k);
            gemm::sgemm(1.0, am, bm, 0.0, cm, &Epilogue::default())?;
        }
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        match self.shapes(&inputs[0].shape, &inputs[1].shape) {
            Ok((batch, m, k, n)) => gemm_cost(2 * batch.iter().product::<usize>() * m * k * n),
            Err(_) => gemm_cost(usize::MAX),
        }
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
        let (a, b) = (inputs[0], inputs[1]);
        let mm = |ta, tb| {
            Box::new(MatmulOp {
                transpose_a: ta,
                transpose_b: tb,
            })
        };
        // With C = op(A) op(B): dop(A) = dC op(B)^T, dop(B) = op(A)^T dC; a transposed
        // operand receives the transpose, which the flags express without copies.
        let da = match (self.transpose_a, self.transpose_b) {
            (false, false) => g.apply1(mm(false, true), &[dy, b])?,
            (false, true) => g.apply1(mm(false, false), &[dy, b])?,
            (true, false) => g.apply1(mm(false, true), &[b, dy])?,
            (true, true) => g.apply1(mm(true, true), &[b, dy])?,
        };
        let db = match (self.transpose_a, self.transpose_b) {
            (false, false) => g.apply1(mm(true, false), &[a, dy])?,
            (false, true) => g.apply1(mm(true, false), &[dy, a])?,
            (true, false) => g.apply1(mm(false, false), &[a, dy])?,
            (true, true) => g.apply1(mm(true, true), &[dy, a])?,
        };
        let da = g.sum_to_shape(da, g.shape(a).to_vec())?;
        let db = g.sum_to_shape(db, g.shape(b).to_vec())?;
        Ok(vec![Some(da), Some(db)])
    }
}

impl Op for DenseOp {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        let expected = if self.use_bias { 3 } else { 2 };
        super::expect_inputs("dense", inputs, expected)?;
        if inputs.iter().any(|t| t.dtype != DType::F32) {
            return Err(GraphError::dtype(
                "dense: inputs, kernel and bias must be float32",
            ));
        }
        let (x, w) = (&inputs[0].shape, &inputs[1].shape);
        if x.is_empty() || w.len() != 2 || x[x.len() - 1] != w[0] {
            return Err(GraphError::shape(format!(
                "dense: input of shape {} does not match kernel of shape {} (the last input axis must equal the kernel's first)",
                fmt_shape(x),
                fmt_shape(w)
            )));
        }
        if self.use_bias && inputs[2].shape != [w[1]] {
            return Err(GraphError::shape(format!(
                "dense: bias must have shape ({},), got {}",
                w[1],
                fmt_shape(&inputs[2].shape)
            )));
        }
        let mut out = x.clone();
        *out.last_mut().expect("rank checked above") = w[1];
        Ok(vec![TensorType::f32(out)])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let (x, w) = (inputs[0].f32()?, inputs[1].f32()?);
        let (k, n) = (inputs[1].shape[0], inputs[1].shape[1]);
        let m = x.len().checked_div(k).unwrap_or_else(|| {
            inputs[0].shape[..inputs[0].shape.len() - 1]
                .iter()
                .product()
        });
        let bias = if self.use_bias {
            Some(inputs[2].f32()?)
        } else {
            None
        };
        let c = MatMut::row_major(outputs[0].f32()?, m, n)?;
        with_epilogue(self.activation, bias, |epilogue| {
            gemm::sgemm(
                1.0,
                MatRef::row_major(x, m, k)?,
                MatRef::row_major(w, k, n)?,
                0.0,
                c,
                epilogue,
            )
        })?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> OpCost {
        let (k, out) = (
            inputs[0].shape.last().copied().unwrap_or(0),
            outputs[0].numel(),
        );
        gemm_cost(2 * out * k)
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
        let (x, w) = (inputs[0], inputs[1]);
        let dz = pre_activation_grad(g, self.activation, outputs[0], dy)?;
        let x_shape = g.shape(x).to_vec();
        let n = g.shape(w)[1];
        let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
        let dz2 = g.reshape(dz, &[rows, n])?;
        let dx2 = g.apply1(
            Box::new(MatmulOp {
                transpose_a: false,
                transpose_b: true,
            }),
            &[dz2, w],
        )?;
        let dx = g.reshape(dx2, &x_shape)?;
        let dw = g.apply1(Box::new(DenseKernelGradOp), &[x, dz2])?;
        let mut grads = vec![Some(dx), Some(dw)];
        if self.use_bias {
            grads.push(Some(g.reduce(Reduce::Sum, dz2, &[0], false)?));
        }
        Ok(grads)
    }
}

/// `dense(take(table, indices, axis=0), kernel, bias)` as one op: the product is
/// computed once per distinct table row of the batch when enough indices repeat
/// (see [`embed`]). Made by the fusion passes from a `take` whose only reader is a
/// `dense`, never by a spec. Inputs `[table (rows, width), indices, kernel (width,
/// units), bias (units) when used]`; outputs the layer's `y (indices..., units)`,
/// then what its gradient reads: the gathered `rows` (n, int32), each index's
/// `positions` among them (int32, the shape of the indices), and the `gathered`
/// table rows `(n, width)`.
///
/// Without `project`, the lookup alone, for a reader that projects the rows
/// itself (a recurrent layer, step by step): inputs `[table, indices]`, `y` empty
/// `(indices..., 0)`, and the gradient flows into `gathered`.
#[derive(Debug, Clone, Copy)]
pub struct TakeDenseOp {
    pub activation: Unary,
    pub use_bias: bool,
    pub project: bool,
}

/// The gradient of [`TakeDenseOp`] before the table's scatter-add: inputs `[dz (n,
/// units), positions, gathered (n, width), kernel]`, outputs the gathered rows'
/// gradient `(n, width)`, the kernel's, and with `bias` the bias's `(units,)`.
#[derive(Debug, Clone, Copy)]
pub struct TakeDenseGradOp {
    pub bias: bool,
}

/// The sizes of a `take_dense` from its table's and kernel's shapes.
fn take_dense_shape(table: &[usize], kernel: &[usize]) -> Result<TakeDenseShape> {
    if table.len() != 2 || kernel.len() != 2 || kernel[0] != table[1] {
        return Err(GraphError::shape(format!(
            "take_dense: table of shape {} does not match kernel of shape {}",
            fmt_shape(table),
            fmt_shape(kernel)
        )));
    }
    Ok(TakeDenseShape {
        table_rows: table[0],
        width: table[1],
        units: kernel[1],
    })
}

impl Op for TakeDenseOp {
    fn name(&self) -> &'static str {
        "take_dense"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        if !self.project {
            super::expect_inputs("take_dense", inputs, 2)?;
            let (table, indices) = (inputs[0], inputs[1]);
            if table.rank() != 2 {
                return Err(GraphError::shape(format!(
                    "take_dense: the table must have rank 2, got {}",
                    fmt_shape(&table.shape)
                )));
            }
            if table.dtype != DType::F32 || indices.dtype != DType::I32 {
                return Err(GraphError::dtype(
                    "take_dense: the table must be float32 and the indices int32",
                ));
            }
            let n = indices.numel();
            let mut y = indices.shape.clone();
            y.push(0);
            return Ok(vec![
                TensorType::f32(y),
                TensorType::new(vec![n], DType::I32),
                TensorType::new(indices.shape.clone(), DType::I32),
                TensorType::f32(vec![n, table.shape[1]]),
            ]);
        }
        let expected = if self.use_bias { 4 } else { 3 };
        super::expect_inputs("take_dense", inputs, expected)?;
        let shape = take_dense_shape(&inputs[0].shape, &inputs[2].shape)?;
        let n = inputs[1].numel();
        let mut floats = [0, 2].into_iter().chain(self.use_bias.then_some(3));
        if floats.any(|i| inputs[i].dtype != DType::F32) || inputs[1].dtype != DType::I32 {
            return Err(GraphError::dtype(
                "take_dense: table, kernel and bias must be float32 and indices int32",
            ));
        }
        if self.use_bias && inputs[3].shape != [shape.units] {
            return Err(GraphError::shape(format!(
                "take_dense: bias must have shape ({},), got {}",
                shape.units,
                fmt_shape(&inputs[3].shape)
            )));
        }
        let mut y = inputs[1].shape.clone();
        y.push(shape.units);
        Ok(vec![
            TensorType::f32(y),
            TensorType::new(vec![n], DType::I32),
            TensorType::new(inputs[1].shape.clone(), DType::I32),
            TensorType::f32(vec![n, shape.width]),
        ])
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        if !self.project {
            let [_, rows, positions, gathered] = outputs else {
                return Err(GraphError::value("take_dense: expected four outputs"));
            };
            let &[table_rows, width] = inputs[0].shape else {
                return Err(GraphError::shape("take_dense: the table must have rank 2"));
            };
            embed::take_distinct(
                table_rows,
                width,
                inputs[0].f32()?,
                inputs[1].i32()?,
                LookupOutputs {
                    rows: rows.i32()?,
                    positions: positions.i32()?,
                    gathered: gathered.f32()?,
                },
            )?;
            return Ok(());
        }
        let shape = take_dense_shape(inputs[0].shape, inputs[2].shape)?;
        let bias = if self.use_bias {
            Some(inputs[3].f32()?)
        } else {
            None
        };
        let [y, rows, positions, gathered] = outputs else {
            return Err(GraphError::value("take_dense: expected four outputs"));
        };
        with_epilogue(self.activation, bias, |epilogue| -> Result<()> {
            embed::take_dense(
                shape,
                inputs[0].f32()?,
                inputs[1].i32()?,
                inputs[2].f32()?,
                epilogue,
                TakeDenseOutputs {
                    rows: rows.i32()?,
                    positions: positions.i32()?,
                    gathered: gathered.f32()?,
                    out: y.f32()?,
                },
            )?;
            Ok(())
        })
    }

    fn cost(&self, inputs: &[&TensorType], outputs: &[&TensorType]) -> OpCost {
        if !self.project {
            // The gathered rows, copied in parallel.
            return OpCost {
                work: outputs[3].numel(),
                single_task: false,
            };
        }
        match take_dense_shape(&inputs[0].shape, &inputs[2].shape) {
            Ok(s) => gemm_cost(2 * inputs[1].numel() * s.width * s.units),
            Err(_) => gemm_cost(usize::MAX),
        }
    }

    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let (table, rows) = (inputs[0], outputs[1]);
        let take_grad = |g: &mut Graph, d_gathered| {
            g.apply1(
                Box::new(super::gather::TakeGradOp {
                    axis: 0,
                    input_shape: g.shape(table).to_vec(),
                }),
                &[d_gathered, rows],
            )
        };
        if !self.project {
            return Ok(match dys[3] {
                Some(d_gathered) => vec![Some(take_grad(g, d_gathered)?), None],
                None => vec![None; inputs.len()],
            });
        }
        let Some(dy) = dys[0] else {
            return Ok(vec![None; inputs.len()]);
        };
        let kernel = inputs[2];
        let (positions, gathered) = (outputs[2], outputs[3]);
        let dz = pre_activation_grad(g, self.activation, outputs[0], dy)?;
        let n = g.shape(gathered)[0];
        let units = g.shape(kernel)[1];
        let dz2 = g.reshape(dz, &[n, units])?;
        let grads = g.apply(
            Box::new(TakeDenseGradOp {
                bias: self.use_bias,
            }),
            &[dz2, positions, gathered, kernel],
        )?;
        let d_table = take_grad(g, grads[0])?;
        let mut result = vec![Some(d_table), None, Some(grads[1])];
        if self.use_bias {
            result.push(Some(grads[2]));
        }
        Ok(result)
    }
}

impl Op for TakeDenseGradOp {
    fn name(&self) -> &'static str {
        "take_dense_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        super::expect_inputs("take_dense_grad", inputs, 4)?;
        let (dz, positions, gathered, kernel) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let n = positions.numel();
        let ok = kernel.rank() == 2
            && dz.shape == [n, kernel.shape[1]]
            && gathered.shape == [n, kernel.shape[0]]
            && positions.dtype == DType::I32;
        if !ok {
            return Err(GraphError::shape(format!(
                "take_dense_grad: dz {}, positions {}, gathered rows {} and kernel {} do not match",
                fmt_shape(&dz.shape),
                fmt_shape(&positions.shape),
                fmt_shape(&gathered.shape),
                fmt_shape(&kernel.shape)
            )));
        }
        let mut grads = vec![gathered.clone(), kernel.clone()];
        if self.bias {
            grads.push(TensorType::f32(vec![kernel.shape[1]]));
        }
        Ok(grads)
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let &[width, units] = inputs[3].shape else {
            return Err(GraphError::shape(
                "take_dense_grad: the kernel must have rank 2",
            ));
        };
        let shape = TakeDenseShape {
            table_rows: 0, // not read by the gradient
            width,
            units,
        };
        let (d_gathered, d_kernel, d_bias) = match outputs {
            [d_gathered, d_kernel] => (d_gathered, d_kernel, None),
            [d_gathered, d_kernel, d_bias] => (d_gathered, d_kernel, Some(d_bias.f32()?)),
            _ => {
                return Err(GraphError::value(
                    "take_dense_grad: expected two or three outputs",
                ))
            }
        };
        embed::take_dense_grad(
            shape,
            inputs[0].f32()?,
            inputs[1].i32()?,
            inputs[2].f32()?,
            inputs[3].f32()?,
            TakeDenseGrads {
                d_gathered: d_gathered.f32()?,
                d_kernel: d_kernel.f32()?,
                d_bias,
            },
        )?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        gemm_cost(4 * inputs[0].numel() * inputs[3].shape.first().copied().unwrap_or(0))
    }

    fn backward(
        &self,
        _g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        _d: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        Err(GraphError::unsupported(
            "second-order gradients of take_dense are not supported",
        ))
    }
}
