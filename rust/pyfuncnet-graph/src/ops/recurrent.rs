//! `rnn`: a whole recurrent layer (LSTM, GRU, SimpleRNN) over a sequence, after
//! its input projection, as one op; and `rnn_grad`, its fused backward through
//! time.
//!
//! `rnn` inputs: `xp (batch, time, gates * units)` (the projection `x W + b` of
//! every step, a GEMM the layer does as a graph op, so `dx` and `dW` come from the
//! matmul's own backward), the recurrent kernel `(units, gates * units)`, the
//! recurrent bias `(gates * units)` (GRU with reset_after only), with `initial_state` the initial state
//! `(batch, units)`, the initial cell state (LSTM only) and, with `masked`, the
//! mask `(batch, time)`. Outputs: the output sequence `(batch, time, units)` in
//! processing order (`(batch, 0, units)`, never written, when attribute
//! `sequence` is false: a layer that returns only its last output), the final
//! state, the final cell state (LSTM only), and two tensors only the backward
//! reads: the gate workspace and the previous states.
//!
//! Fed by a lookup (an `Embedding`), the layer can instead project each step's
//! looked-up rows itself ([`RnnLookup`], made by the fusion pass): the whole
//! sequence's projection is then never written out and read back.

use pyfuncnet_kernels::rnn::{self as kr, Cell, RnnSpec};
use pyfuncnet_kernels::unary::Unary;

use super::matmul::TakeDenseGradOp;
use super::{Attrs, Ctx, Op, OpCost};
use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId};
use crate::tensor::{fmt_shape, DType, TensorMut, TensorRef, TensorType};

/// The configuration shared by `rnn` and `rnn_grad`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RnnConfig {
    pub cell: Cell,
    pub activation: Unary,
    pub recurrent_activation: Unary,
    pub go_backwards: bool,
    pub zero_output_for_mask: bool,
    pub masked: bool,
    /// Whether the initial states are inputs (else they are zeros).
    pub initial_state: bool,
    /// Whether the output sequence is computed.
    pub sequence: bool,
}

/// The recurrent layer's forward pass.
#[derive(Debug, Clone)]
pub struct RnnOp {
    pub config: RnnConfig,
    /// Whether the input projection is computed step by step from looked-up rows.
    pub lookup: Option<RnnLookup>,
}

/// An input projection computed step by step from looked-up rows: in place of
/// `xp`, the inputs start with the `gathered` rows `(n, width)` and their
/// `positions` `(batch, time)` that a lookup wrote ([`super::matmul::TakeDenseOp`]
/// without `project`), the input kernel `(width, gates * units)` and, with
/// `use_bias`, the input bias `(gates * units)`. Made by the fusion pass, never by
/// a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RnnLookup {
    pub use_bias: bool,
}

/// Its backward pass. Inputs: recurrent kernel, mask (when masked), workspace,
/// previous states, then the gradients that flow: of the output sequence, of
/// the final state and of the final cell state, each when its flag is set.
/// Outputs: `d_xp`, `d_recurrent_kernel`, `d_recurrent_bias` (reset_after GRU),
/// `d_h0`, `d_c0` (LSTM); the last two also without initial state inputs (the
/// pass runs its state gradients in them).
#[derive(Debug, Clone)]
pub struct RnnGradOp {
    pub config: RnnConfig,
    pub has_d_sequence: bool,
    pub has_d_h: bool,
    pub has_d_c: bool,
}

fn activation(a: &Attrs, key: &str, default: &str) -> Result<Unary> {
    let name = a.str_or(key, default)?;
    Unary::from_name(name, None, None)
        .ok_or_else(|| GraphError::value(format!("rnn: unknown {key} '{name}'")))
}

pub(crate) fn build(name: &str, a: &Attrs) -> Result<Option<Box<dyn Op>>> {
    if name != "rnn" {
        return Ok(None);
    }
    let cell = match a.str_or("cell", "lstm")? {
        "lstm" => Cell::Lstm,
        "gru" => Cell::Gru {
            reset_after: a.bool_or("reset_after", true)?,
        },
        "simple_rnn" => Cell::Simple,
        other => {
            return Err(GraphError::value(format!(
                "rnn: cell must be 'lstm', 'gru' or 'simple_rnn', got '{other}'"
            )))
        }
    };
    let config = RnnConfig {
        cell,
        activation: activation(a, "activation", "tanh")?,
        recurrent_activation: activation(a, "recurrent_activation", "sigmoid")?,
        go_backwards: a.bool_or("go_backwards", false)?,
        zero_output_for_mask: a.bool_or("zero_output_for_mask", false)?,
        masked: a.bool_or("masked", false)?,
        initial_state: a.bool_or("initial_state", true)?,
        sequence: a.bool_or("sequence", true)?,
    };
    config.spec(0, 0, 0).check_activations()?;
    Ok(Some(Box::new(RnnOp {
        config,
        lookup: None,
    })))
}

impl RnnConfig {
    fn spec(&self, batch: usize, steps: usize, units: usize) -> RnnSpec {
        RnnSpec {
            cell: self.cell,
            batch,
            steps,
            units,
            activation: self.activation,
            recurrent_activation: self.recurrent_activation,
            go_backwards: self.go_backwards,
            zero_output_for_mask: self.zero_output_for_mask,
        }
    }

    /// The number of initial state inputs.
    fn states(&self) -> usize {
        if self.initial_state {
            1 + usize::from(self.cell.has_cell_state())
        } else {
            0
        }
    }

    /// The number of forward inputs.
    fn inputs(&self) -> usize {
        2 + usize::from(self.cell.has_recurrent_bias()) + self.states() + usize::from(self.masked)
    }

    /// The spec of inputs `xp` and recurrent kernel `r`, checked (without
    /// multiplying sizes: symbolic shapes stand for unknown dims with huge
    /// sentinels).
    fn checked_spec(&self, op: &str, xp: &[usize], r: &[usize]) -> Result<RnnSpec> {
        let gates = self.cell.gates();
        if r.len() != 2 || r[1] != gates * r[0] {
            return Err(GraphError::shape(format!(
                "{op}: the recurrent kernel must have shape (units, {gates} * units), got {}",
                fmt_shape(r)
            )));
        }
        if xp.len() != 3 || xp[2] != r[1] {
            return Err(GraphError::shape(format!(
                "{op}: the input projection must have shape (batch, time, {}), got {}",
                r[1],
                fmt_shape(xp)
            )));
        }
        Ok(self.spec(xp[0], xp[1], r[0]))
    }
}

/// An output buffer the inference promised is missing (the executor hands an op
/// exactly the outputs it inferred, so this is an internal error, never a panic).
fn missing_output() -> GraphError {
    GraphError::value("rnn: fewer output buffers than inferred outputs")
}

fn expect_shape(op: &str, what: &str, t: &TensorType, shape: &[usize]) -> Result<()> {
    if t.shape != shape {
        return Err(GraphError::shape(format!(
            "{op}: {what} must have shape {}, got {}",
            fmt_shape(shape),
            fmt_shape(&t.shape)
        )));
    }
    if t.dtype == DType::I32 {
        return Err(GraphError::dtype(format!(
            "{op}: {what} must be a float tensor, got int32"
        )));
    }
    Ok(())
}

/// About a nanosecond of one core per unit: GEMM flops / 32 plus elements moved
/// (the workspace and `unit_buffers` buffers of `(batch, time, units)`).
fn rnn_cost(spec: &RnnSpec, passes: usize, unit_buffers: usize) -> OpCost {
    let elements = spec
        .batch
        .saturating_mul(spec.steps)
        .saturating_mul(spec.workspace_width() + unit_buffers * spec.units);
    OpCost {
        work: (spec.recurrent_flops() / 32)
            .saturating_mul(passes)
            .saturating_add(elements.saturating_mul(4)),
        single_task: spec.single_task(),
    }
}

impl RnnOp {
    /// The inputs before the recurrent kernel: `xp`, or the lookup's.
    fn projection_inputs(&self) -> usize {
        match self.lookup {
            None => 1,
            Some(lookup) => 3 + usize::from(lookup.use_bias),
        }
    }

    /// The spec from the inputs' shapes, checked (with a lookup, its inputs too).
    fn checked_spec(&self, shapes: &[&[usize]]) -> Result<RnnSpec> {
        let p = self.projection_inputs();
        let Some(lookup) = self.lookup else {
            return self.config.checked_spec("rnn", shapes[0], shapes[p]);
        };
        let (gathered, positions, kernel, r) = (shapes[0], shapes[1], shapes[2], shapes[p]);
        let gates = self.config.cell.gates();
        if r.len() != 2 || r[1] != gates * r[0] {
            return Err(GraphError::shape(format!(
                "rnn: the recurrent kernel must have shape (units, {gates} * units), got {}",
                fmt_shape(r)
            )));
        }
        let g = r[1];
        let rows_match = positions.len() == 2
            && gathered.len() == 2
            && positions[0].checked_mul(positions[1]) == Some(gathered[0]);
        let kernel_matches = gathered.len() == 2 && kernel == [gathered[1], g];
        let bias_matches = !lookup.use_bias || shapes[3] == [g];
        if !rows_match || !kernel_matches || !bias_matches {
            return Err(GraphError::shape(format!(
                "rnn: looked-up rows {}, positions {}, input kernel {}{} do not match a recurrent kernel {}",
                fmt_shape(gathered),
                fmt_shape(positions),
                fmt_shape(kernel),
                if lookup.use_bias {
                    format!(" and input bias {}", fmt_shape(shapes[3]))
                } else {
                    String::new()
                },
                fmt_shape(r)
            )));
        }
        Ok(self.config.spec(positions[0], positions[1], r[0]))
    }

    /// The forward kernel's view of the input projection.
    fn projection<'a>(&self, inputs: &[TensorRef<'a>]) -> Result<kr::Projection<'a>> {
        let Some(lookup) = self.lookup else {
            return Ok(kr::Projection::Computed(inputs[0].f32()?));
        };
        Ok(kr::Projection::Lookup(kr::LookupProjection {
            rows: inputs[0].f32()?,
            width: inputs[0].shape.get(1).copied().unwrap_or(0),
            positions: inputs[1].i32()?,
            kernel: inputs[2].f32()?,
            bias: if lookup.use_bias {
                Some(inputs[3].f32()?)
            } else {
                None
            },
        }))
    }
}

impl Op for RnnOp {
    fn name(&self) -> &'static str {
        "rnn"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        let c = &self.config;
        let p = self.projection_inputs();
        super::expect_inputs("rnn", inputs, c.inputs() - 1 + p)?;
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
        let s = self.checked_spec(&shapes)?;
        if self.lookup.is_some() {
            super::expect_float("rnn", "the looked-up rows", inputs[0])?;
            if inputs[1].dtype != DType::I32 {
                return Err(GraphError::dtype("rnn: the positions must be int32"));
            }
            for (i, what) in [(2, "the input kernel"), (3, "the input bias")]
                .into_iter()
                .take(p - 2)
            {
                super::expect_float("rnn", what, inputs[i])?;
            }
        } else {
            super::expect_float("rnn", "the input projection", inputs[0])?;
        }
        super::expect_float("rnn", "the recurrent kernel", inputs[p])?;
        let (b, t, u) = (s.batch, s.steps, s.units);
        let mut k = p + 1;
        if c.cell.has_recurrent_bias() {
            expect_shape("rnn", "the recurrent bias", inputs[k], &[s.gate_width()])?;
            k += 1;
        }
        for what in ["the initial state", "the initial cell state"]
            .into_iter()
            .take(c.states())
        {
            expect_shape("rnn", what, inputs[k], &[b, u])?;
            k += 1;
        }
        if c.masked {
            expect_shape("rnn", "the mask", inputs[k], &[b, t])?;
        }
        let seq_steps = if c.sequence { t } else { 0 };
        let mut out = vec![
            TensorType::f32(vec![b, seq_steps, u]),
            TensorType::f32(vec![b, u]),
        ];
        if c.cell.has_cell_state() {
            out.push(TensorType::f32(vec![b, u]));
        }
        out.push(TensorType::f32(vec![b, t, s.workspace_width()]));
        out.push(TensorType::f32(vec![b, t, u]));
        Ok(out)
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let c = &self.config;
        let p = self.projection_inputs();
        if inputs.len() != c.inputs() - 1 + p {
            return Err(GraphError::value("rnn: unexpected number of inputs"));
        }
        // At most four projection inputs, then the recurrent kernel.
        let mut shapes = [&[][..]; 5];
        for (s, t) in shapes.iter_mut().zip(inputs) {
            *s = t.shape;
        }
        let spec = self.checked_spec(&shapes)?;
        let mut k = p + 1;
        let mut next = || {
            k += 1;
            k - 1
        };
        let recurrent_bias = if c.cell.has_recurrent_bias() {
            Some(inputs[next()].f32()?)
        } else {
            None
        };
        let h0 = if c.initial_state {
            Some(inputs[next()].f32()?)
        } else {
            None
        };
        let c0 = if c.states() == 2 {
            Some(inputs[next()].f32()?)
        } else {
            None
        };
        let mask = if c.masked {
            Some(inputs[next()].f32()?)
        } else {
            None
        };
        let x = kr::RnnInputs {
            projection: self.projection(inputs)?,
            recurrent_kernel: inputs[p].f32()?,
            recurrent_bias,
            h0,
            c0,
            mask,
        };
        let (sequence, rest) = outputs.split_first_mut().ok_or_else(missing_output)?;
        let (h_last, rest) = rest.split_first_mut().ok_or_else(missing_output)?;
        let (c_last, rest) = if c.cell.has_cell_state() {
            let (cl, rest) = rest.split_first_mut().ok_or_else(missing_output)?;
            (Some(cl.f32()?), rest)
        } else {
            (None, rest)
        };
        let [workspace, h_prev] = rest else {
            return Err(missing_output());
        };
        let out = kr::RnnOutputs {
            sequence: if c.sequence {
                Some(sequence.f32()?)
            } else {
                None
            },
            h_last: h_last.f32()?,
            c_last,
            workspace: workspace.f32()?,
            h_prev: h_prev.f32()?,
        };
        kr::rnn_forward(&spec, &x, out)?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
        match self.checked_spec(&shapes) {
            Ok(spec) => {
                // The previous states, and the sequence when it is computed.
                let mut cost = rnn_cost(&spec, 1, 1 + usize::from(self.config.sequence));
                if self.lookup.is_some() {
                    // The steps' input products, as a GEMM's (~32 flops a unit).
                    let flops = 2usize
                        .saturating_mul(spec.batch)
                        .saturating_mul(spec.steps)
                        .saturating_mul(inputs[0].shape[1])
                        .saturating_mul(spec.gate_width());
                    cost.work = cost.work.saturating_add(flops / 32);
                }
                cost
            }
            Err(_) => OpCost {
                work: usize::MAX / 4,
                single_task: false,
            },
        }
    }

    fn backward(
        &self,
        g: &mut Graph,
        inputs: &[ValueId],
        outputs: &[ValueId],
        dys: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        let c = &self.config;
        let lstm = c.cell.has_cell_state();
        // Without a sequence output, output 0 is empty: no gradient flows from it.
        let d_seq = if c.sequence { dys[0] } else { None };
        let d_h = dys[1];
        let d_c = if lstm { dys[2] } else { None };
        let saved = if lstm { 3 } else { 2 };
        if dys[saved..].iter().any(Option::is_some) {
            return Err(GraphError::unsupported(
                "rnn: its workspace outputs are not differentiable",
            ));
        }
        if d_seq.is_none() && d_h.is_none() && d_c.is_none() {
            return Ok(vec![None; inputs.len()]);
        }
        let p = self.projection_inputs();
        let mut grad_inputs = vec![inputs[p]];
        if c.masked {
            grad_inputs.push(inputs[inputs.len() - 1]);
        }
        grad_inputs.extend([outputs[saved], outputs[saved + 1]]);
        grad_inputs.extend([d_seq, d_h, d_c].into_iter().flatten());
        let op = RnnGradOp {
            config: *c,
            has_d_sequence: d_seq.is_some(),
            has_d_h: d_h.is_some(),
            has_d_c: d_c.is_some(),
        };
        let grads = g.apply(Box::new(op), &grad_inputs)?;
        // Outputs: d_xp, d_r, [d_rb], d_h0, [d_c0]; inputs: xp (or the lookup's), r,
        // [rb], [h0, [c0]], [mask].
        let weights = 2 + usize::from(c.cell.has_recurrent_bias());
        let d_xp = grads[0];
        let mut out = match self.lookup {
            None => vec![Some(d_xp)],
            Some(lookup) => {
                // The gradients of the projection `gathered[positions] · kernel + bias`.
                let (gathered, positions, kernel) = (inputs[0], inputs[1], inputs[2]);
                let (n, gate_width) = (g.shape(gathered)[0], g.shape(kernel)[1]);
                let dz = g.reshape(d_xp, &[n, gate_width])?;
                let lookup_grads = g.apply(
                    Box::new(TakeDenseGradOp {
                        bias: lookup.use_bias,
                    }),
                    &[dz, positions, gathered, kernel],
                )?;
                let mut out = vec![Some(lookup_grads[0]), None, Some(lookup_grads[1])];
                out.extend(lookup_grads.get(2).map(|&d_bias| Some(d_bias)));
                out
            }
        };
        out.extend(grads[1..weights + c.states()].iter().map(|&v| Some(v)));
        if c.masked {
            out.push(None);
        }
        Ok(out)
    }
}

impl RnnGradOp {
    /// The spec from the shapes of input `i` (`shape(i)`: read only the two it needs, so
    /// a training step builds no list of them).
    fn spec<'s>(&self, shape: impl Fn(usize) -> &'s [usize]) -> Result<RnnSpec> {
        // The workspace (after the recurrent kernel and the mask) is (batch, time, width).
        let r = shape(0);
        let ws = shape(1 + usize::from(self.config.masked));
        if r.len() != 2 || ws.len() != 3 {
            return Err(GraphError::shape(format!(
                "rnn_grad: unexpected recurrent kernel {} or workspace {}",
                fmt_shape(r),
                fmt_shape(ws)
            )));
        }
        Ok(self.config.spec(ws[0], ws[1], r[0]))
    }
}

impl Op for RnnGradOp {
    fn name(&self) -> &'static str {
        "rnn_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        let c = &self.config;
        let expected = 3
            + usize::from(c.masked)
            + usize::from(self.has_d_sequence)
            + usize::from(self.has_d_h)
            + usize::from(self.has_d_c);
        super::expect_inputs("rnn_grad", inputs, expected)?;
        let s = self.spec(|i| inputs[i].shape.as_slice())?;
        let (b, t, u, g) = (s.batch, s.steps, s.units, s.gate_width());
        expect_shape("rnn_grad", "the recurrent kernel", inputs[0], &[u, g])?;
        let mut k = 1 + usize::from(c.masked);
        expect_shape(
            "rnn_grad",
            "the workspace",
            inputs[k],
            &[b, t, s.workspace_width()],
        )?;
        expect_shape("rnn_grad", "the previous states", inputs[k + 1], &[b, t, u])?;
        k += 2;
        for (present, what, shape) in [
            (
                self.has_d_sequence,
                "the output sequence gradient",
                vec![b, t, u],
            ),
            (self.has_d_h, "the final state gradient", vec![b, u]),
            (self.has_d_c, "the final cell state gradient", vec![b, u]),
        ] {
            if present {
                expect_shape("rnn_grad", what, inputs[k], &shape)?;
                k += 1;
            }
        }
        let mut out = vec![TensorType::f32(vec![b, t, g]), TensorType::f32(vec![u, g])];
        if c.cell.has_recurrent_bias() {
            out.push(TensorType::f32(vec![g]));
        }
        out.push(TensorType::f32(vec![b, u]));
        if c.cell.has_cell_state() {
            out.push(TensorType::f32(vec![b, u]));
        }
        Ok(out)
    }

    fn forward(&self, _ctx: &Ctx, inputs: &[TensorRef], outputs: &mut [TensorMut]) -> Result<()> {
        let c = &self.config;
        let spec = self.spec(|i| inputs[i].shape)?;
        let mut k = 1;
        let mut next = || {
            k += 1;
            k - 1
        };
        let mask = if c.masked {
            Some(inputs[next()].f32()?)
        } else {
            None
        };
        let workspace = inputs[next()].f32()?;
        let h_prev = inputs[next()].f32()?;
        let mut optional = |present: bool| -> Result<Option<&[f32]>> {
            Ok(if present {
                Some(inputs[next()].f32()?)
            } else {
                None
            })
        };
        let d_sequence = optional(self.has_d_sequence)?;
        let d_h_last = optional(self.has_d_h)?;
        let d_c_last = optional(self.has_d_c)?;
        let x = kr::RnnGradInputs {
            recurrent_kernel: inputs[0].f32()?,
            mask,
            workspace,
            h_prev,
            d_sequence,
            d_h_last,
            d_c_last,
            // Without initial state inputs nothing reads d_h0.
            initial_state_gradient: c.initial_state,
        };
        let (d_xp, rest) = outputs.split_first_mut().ok_or_else(missing_output)?;
        let (d_r, rest) = rest.split_first_mut().ok_or_else(missing_output)?;
        let (d_rb, rest) = if c.cell.has_recurrent_bias() {
            let (d, rest) = rest.split_first_mut().ok_or_else(missing_output)?;
            (Some(d.f32()?), rest)
        } else {
            (None, rest)
        };
        let (d_h0, rest) = rest.split_first_mut().ok_or_else(missing_output)?;
        let d_c0 = match rest.first_mut() {
            Some(d) => Some(d.f32()?),
            None => None,
        };
        let out = kr::RnnGradOutputs {
            d_xp: d_xp.f32()?,
            d_recurrent_kernel: d_r.f32()?,
            d_recurrent_bias: d_rb,
            d_h0: d_h0.f32()?,
            d_c0,
        };
        kr::rnn_backward(&spec, &x, out)?;
        Ok(())
    }

    fn cost(&self, inputs: &[&TensorType], _outputs: &[&TensorType]) -> OpCost {
        match self.spec(|i| inputs[i].shape.as_slice()) {
            Ok(spec) => rnn_cost(&spec, 2, 2),
            Err(_) => OpCost {
                work: usize::MAX / 4,
                single_task: false,
            },
        }
    }

    fn backward(
        &self,
        _g: &mut Graph,
        _i: &[ValueId],
        _o: &[ValueId],
        _d: &[Option<ValueId>],
    ) -> Result<Vec<Option<ValueId>>> {
        Err(GraphError::unsupported(
            "second-order gradients through recurrent layers are not supported",
        ))
    }
}
