//! Compiled steps: a spec differentiated (for training), planned and ready to run
//! once per batch — forward, loss, backward and optimizer update in one call.

use crate::autodiff;
use crate::error::{ErrorKind, GraphError, Result};
use crate::exec::Executor;
use crate::exec::{recycle, recycle_opt};
use crate::graph::{Graph, ValueId, ValueSource};
use crate::ops::gather::TakeGradOp;
use crate::ops::matmul::{TakeDenseGradOp, TakeDenseOp};
use crate::ops::normalize_axis;
use crate::ops::Ctx;
use crate::optim::{self, Gradient, OptimizerConfig, OptimizerState, RowSums, VariableState};
use crate::spec::{self, Spec};
use crate::tensor::{fmt_shape, Buffer, DataRef, TensorRef, TensorType};
use pyfuncnet_kernels::par;

/// What a compiled step computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The outputs only.
    Predict,
    /// The outputs and the loss.
    Test,
    /// Outputs, loss, gradients, then the optimizer update and the weight updates.
    Train,
}

/// A model's variables: the weight store every compiled step of the model reads.
#[derive(Debug, Clone, Default)]
pub struct Variables {
    pub values: Vec<Vec<f32>>,
}

/// A spec compiled for one mode and one input signature.
#[derive(Debug)]
pub struct CompiledStep {
    exec: Executor,
    mode: Mode,
    seed: u64,
    n_outputs: usize,
    has_loss: bool,
    /// Weight index of each trainable variable, in optimizer-state order.
    trainable: Vec<usize>,
    /// Positions (into `trainable`) of the variables that receive a gradient; as in
    /// Keras, the others are left alone by the optimizer.
    active: Vec<usize>,
    /// Slot and length of the dense gradient of each active variable but those in
    /// `row_grads`, in order.
    grad_slots: Vec<usize>,
    grad_lens: Vec<usize>,
    /// The active variables whose gradient is a gather's (embedding tables), in order.
    row_grads: Vec<RowGrad>,
    /// Non-trainable weight assignments: (weight index, fetch index).
    updates: Vec<(usize, usize)>,
    /// Reused lists of borrowed slices (see [`crate::exec::recycle`]).
    scratch_vars: Vec<&'static mut [f32]>,
    scratch_grads: Vec<&'static mut [f32]>,
    scratch_gradients: Vec<Gradient<'static>>,
    scratch_lookup: Vec<Option<&'static mut [f32]>>,
    /// The batches [`CompiledStep::train_batches`] gathers, one buffer per input.
    batch_buffers: Vec<Buffer>,
}

/// Where the batches of [`CompiledStep::train_batches`] take their rows from.
#[derive(Debug, Clone, Copy)]
pub enum BatchRows<'a> {
    /// Batch `j` is rows `first + j * batch ..` of every source, read in place.
    Consecutive { first: usize },
    /// Batch `j` is rows `order[j * batch..(j + 1) * batch]` of every source, gathered.
    Gathered(&'a [i32]),
}

/// An active variable whose gradient is that of the rows a `take` along axis 0
/// gathered: the step fetches the gathered rows' gradient and the indices instead
/// of a table-sized gradient (and, after a deduplicating lookup, its positions),
/// and the optimizer reads them as [`RowSums`].
#[derive(Debug)]
struct RowGrad {
    /// Position in `CompiledStep::active`.
    active_position: usize,
    /// Fetches of the gradient of the gathered rows and of the indices.
    dy_fetch: usize,
    indices_fetch: usize,
    /// With a deduplicating lookup ([`TakeDenseOp`]): the fetch of its positions, which
    /// tell whether a step's gradient rows are already the distinct rows' sums.
    positions_fetch: Option<usize>,
    sums: RowSums,
    /// The buffer the sums of such a step are swapped through (see [`RowSums::adopt`]).
    spare: Vec<f32>,
}

impl RowGrad {
    /// Whether this step's gradient rows are the sums of distinct rows, as a [`TakeDenseOp`]
    /// that deduplicated its indices leaves them (without deduplication, each index is at
    /// its own position, the last one too).
    fn summed_by_lookup(&self, exec: &Executor) -> bool {
        let Some(k) = self.positions_fetch else {
            return false;
        };
        let DataRef::I32(positions) = exec.fetch(k).data else {
            unreachable!("a take_dense's positions are int32");
        };
        positions
            .last()
            .is_some_and(|&last| last as usize != positions.len() - 1)
    }
}

/// Takes, without copying, the gradient rows that are already distinct rows' sums into their
/// tables' [`RowSums`] (the others are left to [`set_row_sums`]).
fn adopt_row_sums(row_grads: &mut [RowGrad], exec: &mut Executor) -> Result<()> {
    for rg in row_grads {
        if !rg.summed_by_lookup(exec) {
            continue;
        }
        if !exec.swap_fetch_buffer(rg.dy_fetch, &mut rg.spare) {
            unreachable!("gathered rows' gradients are node outputs in float slots");
        }
        let DataRef::I32(rows) = exec.fetch(rg.indices_fetch).data else {
            unreachable!("a take_dense's rows are int32");
        };
        rg.sums
            .adopt(rows, &mut rg.spare)
            .map_err(GraphError::value)?;
    }
    Ok(())
}

/// Sets each table's [`RowSums`] from the step's gathered-row gradients (except those
/// [`adopt_row_sums`] took), the tables in parallel (each sums its rows in the order of
/// the indices, so the split changes nothing); the first table's error, in order, when
/// several fail.
fn set_row_sums(row_grads: &mut [RowGrad], exec: &Executor) -> Result<()> {
    match row_grads {
        [] => Ok(()),
        [rg] if rg.summed_by_lookup(exec) => Ok(()),
        [rg] => {
            let (DataRef::F32(dy), DataRef::I32(indices)) = (
                exec.fetch(rg.dy_fetch).data,
                exec.fetch(rg.indices_fetch).data,
            ) else {
                unreachable!("a take_grad's inputs are float rows and int32 indices");
            };
            rg.sums.set(indices, dy).map_err(GraphError::value)
        }
        _ => {
            let (first, rest) = row_grads.split_at_mut(row_grads.len() / 2);
            let (a, b) = par::join(|| set_row_sums(first, exec), || set_row_sums(rest, exec));
            a.and(b)
        }
    }
}

/// The positions output of the [`TakeDenseOp`] whose gathered rows are `indices` and whose
/// gradient rows `dy` are, when they are.
fn lookup_positions(graph: &Graph, dy: ValueId, indices: ValueId) -> Option<ValueId> {
    let ValueSource::Node { node, output: 1 } = graph.values[indices].source else {
        return None;
    };
    let lookup = &graph.nodes[node];
    lookup.op.as_any().downcast_ref::<TakeDenseOp>()?;
    let positions = lookup.outputs[2];
    let ValueSource::Node { node, output: 0 } = graph.values[dy].source else {
        return None;
    };
    let grad = &graph.nodes[node];
    grad.op.as_any().downcast_ref::<TakeDenseGradOp>()?;
    (grad.inputs[1] == positions).then_some(positions)
}

/// `(dy, indices, sums)` when `grad` is the output of a `take_grad` along the first
/// axis of a table whose gradient [`RowSums`] can hold.
fn gathered_rows(graph: &Graph, grad: ValueId) -> Option<(ValueId, ValueId, RowSums)> {
    let ValueSource::Node { node, .. } = graph.values[grad].source else {
        return None;
    };
    let node = &graph.nodes[node];
    let op = node.op.as_any().downcast_ref::<TakeGradOp>()?;
    let (&[dy, indices], Some((&rows, rest))) =
        (node.inputs.as_slice(), op.input_shape.split_first())
    else {
        return None;
    };
    if normalize_axis("take_grad", op.axis, op.input_shape.len()).ok()? != 0 {
        return None;
    }
    let sums = RowSums::new(rows, rest.iter().product())?;
    Some((dy, indices, sums))
}

impl CompiledStep {
    /// Parses, differentiates (in [`Mode::Train`]) and plans a spec.
    ///
    /// # Errors
    /// Spec errors; `Value` when a test or train step has no loss, or when a
    /// weight is listed as trainable twice.
    pub fn compile(spec_text: &str, mode: Mode) -> Result<CompiledStep> {
        let Spec {
            mut graph,
            outputs,
            loss,
            trainable,
            updates,
            seed,
        } = spec::parse(spec_text)?;
        let mut fetches = outputs.clone();
        if mode != Mode::Predict {
            let loss =
                loss.ok_or_else(|| GraphError::value("a test or training step needs a loss"))?;
            fetches.push(loss);
        }
        let mut weights = Vec::new();
        let mut active = Vec::new();
        let mut grad_fetches = Vec::new();
        let mut update_fetches = Vec::new();
        let mut row_grads = Vec::new();
        if mode == Mode::Train {
            let loss = loss.expect("checked above");
            for (i, &(w, _)) in trainable.iter().enumerate() {
                if trainable[..i].iter().any(|&(other, _)| other == w) {
                    return Err(GraphError::value(format!(
                        "weight {w} is listed as trainable twice"
                    )));
                }
            }
            let sources: Vec<_> = trainable.iter().map(|&(_, v)| v).collect();
            let grads = autodiff::gradients(&mut graph, loss, &sources)?;
            let mut taken = Vec::new();
            for (k, (&(w, _), grad)) in trainable.iter().zip(grads).enumerate() {
                weights.push(w);
                let Some(mut grad) = grad else { continue };
                if let Some((dy, indices, sums)) = gathered_rows(&graph, grad) {
                    let positions = lookup_positions(&graph, dy, indices);
                    row_grads.push(RowGrad {
                        active_position: active.len(),
                        dy_fetch: fetches.len(),
                        indices_fetch: fetches.len() + 1,
                        positions_fetch: positions.map(|_| fetches.len() + 2),
                        sums,
                        spare: Vec::new(),
                    });
                    active.push(k);
                    fetches.extend([dy, indices]);
                    fetches.extend(positions);
                    continue;
                }
                // Each gradient gets a buffer of its own: the optimizer clips it in place.
                let is_node = matches!(
                    graph.values[grad].source,
                    crate::graph::ValueSource::Node { .. }
                );
                if !is_node || taken.contains(&grad) {
                    let one = graph.scalar(1.0);
                    grad = graph.mul(grad, one)?;
                }
                taken.push(grad);
                active.push(k);
                grad_fetches.push(fetches.len());
                fetches.push(grad);
            }
            for &(w, v) in &updates {
                update_fetches.push((w, fetches.len()));
                fetches.push(v);
            }
        }
        let n_outputs = outputs.len();
        let exec = Executor::new(graph, fetches);
        let grad_slots = grad_fetches
            .iter()
            .map(|&f| {
                exec.fetch_slot(f)
                    .expect("gradients are node outputs, planned into float slots")
            })
            .collect();
        let grad_lens = grad_fetches
            .iter()
            .map(|&f| exec.graph().ty(exec.fetches()[f]).numel())
            .collect();
        Ok(CompiledStep {
            exec,
            mode,
            seed,
            n_outputs,
            has_loss: mode != Mode::Predict,
            trainable: weights,
            active,
            grad_slots,
            grad_lens,
            row_grads,
            updates: update_fetches,
            scratch_vars: Vec::new(),
            scratch_grads: Vec::new(),
            scratch_gradients: Vec::new(),
            scratch_lookup: Vec::new(),
            batch_buffers: Vec::new(),
        })
    }

    /// Number of user outputs.
    pub fn num_outputs(&self) -> usize {
        self.n_outputs
    }

    /// The executor (types of inputs and outputs).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Runs `f` with every parallel section serial when the step is best done by
    /// one thread (no node splits its work, or too little work to repay the
    /// helpers' hand-offs; the optimizer update included).
    fn with_threads<R>(one_thread: bool, f: impl FnOnce() -> R) -> R {
        if one_thread {
            par::serially(f)
        } else {
            f()
        }
    }

    /// Runs the forward pass (and loss in test mode).
    ///
    /// # Errors
    /// Input mismatches and op errors; nothing outside this step's buffers changes.
    pub fn run(&mut self, inputs: &[TensorRef], vars: &Variables, step: u64) -> Result<()> {
        let ctx = Ctx {
            seed: self.seed,
            step,
            training: false,
        };
        let exec = &mut self.exec;
        Self::with_threads(exec.runs_on_one_thread(), || {
            exec.run(&ctx, inputs, &vars.values)
        })
    }

    /// Runs a training step: forward, loss, backward, then (only if all of that
    /// succeeded) the optimizer update and the non-trainable weight updates. A
    /// steady-state step makes no heap allocation.
    ///
    /// # Errors
    /// Input mismatches and op errors (weights and optimizer state unchanged).
    pub fn train(
        &mut self,
        inputs: &[TensorRef],
        vars: &mut Variables,
        config: &OptimizerConfig,
        state: &mut OptimizerState,
        lr: f32,
    ) -> Result<()> {
        // Tables left putting updates off (by a `train_batches` that panicked) first catch up.
        self.settle_rows(vars, state)?;
        let one_thread = self.exec.runs_on_one_thread();
        Self::with_threads(one_thread, || {
            self.train_here(inputs, vars, config, state, lr)
        })
    }

    /// [`train`](Self::train) in the threading mode chosen by the caller.
    fn train_here(
        &mut self,
        inputs: &[TensorRef],
        vars: &mut Variables,
        config: &OptimizerConfig,
        state: &mut OptimizerState,
        lr: f32,
    ) -> Result<()> {
        if self.mode != Mode::Train {
            return Err(GraphError::value("this step was not compiled for training"));
        }
        if state.variables.len() != self.trainable.len() {
            return Err(GraphError::value(format!(
                "the optimizer state holds {} variables, the model trains {}",
                state.variables.len(),
                self.trainable.len()
            )));
        }
        if let Some(&w) = self.trainable.iter().find(|&&w| w >= vars.values.len()) {
            return Err(GraphError::value(format!(
                "trainable weight {w} does not exist"
            )));
        }
        let ctx = Ctx {
            seed: self.seed,
            step: state.iterations,
            training: true,
        };
        self.exec.run(&ctx, inputs, &vars.values)?;
        adopt_row_sums(&mut self.row_grads, &mut self.exec)?;
        set_row_sums(&mut self.row_grads, &self.exec)?;

        let mut lookup = recycle_opt(std::mem::take(&mut self.scratch_lookup));
        let mut dense = recycle(std::mem::take(&mut self.scratch_grads));
        self.exec
            .slots_mut(&self.grad_slots, &self.grad_lens, &mut lookup, &mut dense);
        // The gradients in `active` order: the gathers' where they belong, the dense
        // ones in between.
        let mut grads = recycle_gradients(std::mem::take(&mut self.scratch_gradients));
        let mut rows = self.row_grads.iter_mut().peekable();
        let mut dense_iter = dense.drain(..);
        for position in 0..self.active.len() {
            let gradient = match rows.next_if(|rg| rg.active_position == position) {
                Some(rg) => Gradient::Rows(&mut rg.sums),
                None => Gradient::Dense(dense_iter.next().expect("one dense gradient per slot")),
            };
            grads.push(gradient);
        }
        drop(dense_iter);
        let mut lookup = recycle_opt(lookup);
        lookup.extend(vars.values.iter_mut().map(|v| Some(v.as_mut_slice())));
        let mut var_refs = recycle(std::mem::take(&mut self.scratch_vars));
        for &k in &self.active {
            let v = lookup[self.trainable[k]]
                .take()
                .expect("trainable weights are distinct and exist");
            var_refs.push(v);
        }
        let result = if self.active.len() == self.trainable.len() {
            optim::apply_gradients(config, state, lr, &mut var_refs, &mut grads)
        } else {
            apply_to_subset(config, state, &self.active, lr, &mut var_refs, &mut grads)
        };
        self.scratch_vars = recycle(var_refs);
        self.scratch_gradients = recycle_gradients(grads);
        self.scratch_grads = recycle(dense);
        self.scratch_lookup = recycle_opt(lookup);
        result.map_err(GraphError::value)?;
        for &(w, fetch) in &self.updates {
            if let DataRef::F32(d) = self.exec.fetch(fetch).data {
                vars.values[w].copy_from_slice(d);
            }
        }
        Ok(())
    }

    /// Trains on `lrs.len()` batches of the whole arrays `sources` (one per input of
    /// the step, in order, all with the same number of rows): step `j` runs on batch
    /// `j` of `rows` (batches as large as the step's) at learning rate `lrs[j]`, and
    /// then appends its loss and the first element of each output in `record` to
    /// `log`. `fit`'s loop over an epoch's full batches without a Python call per
    /// step; the same steps as one [`train`](Self::train) per batch.
    ///
    /// # Errors
    /// Sources that do not fit the step's inputs and rows out of their range (checked
    /// before any step), then the errors of a step: the steps before it stay applied.
    #[allow(clippy::too_many_arguments)]
    pub fn train_batches(
        &mut self,
        sources: &[TensorRef],
        rows: BatchRows,
        lrs: &[f32],
        vars: &mut Variables,
        config: &OptimizerConfig,
        state: &mut OptimizerState,
        record: &[usize],
        log: &mut Vec<f32>,
    ) -> Result<()> {
        let types: Vec<TensorType> = self.exec.input_types().into_iter().cloned().collect();
        let (batch, n) = check_batch_sources(&types, sources)?;
        let steps = lrs.len();
        let wanted = steps.saturating_mul(batch);
        match rows {
            BatchRows::Consecutive { first } => {
                if first.checked_add(wanted).is_none_or(|end| end > n) {
                    return Err(GraphError::value(format!(
                        "{steps} batches of {batch} rows from row {first} need more than the sources' {n} rows"
                    )));
                }
            }
            BatchRows::Gathered(order) => {
                if order.len() != wanted {
                    return Err(GraphError::value(format!(
                        "{steps} batches of {batch} rows need {wanted} row indices, got {}",
                        order.len()
                    )));
                }
                if let Some((at, &i)) = order
                    .iter()
                    .enumerate()
                    .find(|&(_, &i)| i < 0 || i as usize >= n)
                {
                    return Err(GraphError::new(
                        ErrorKind::Index,
                        format!("row index {i} at position {at} is outside the sources' {n} rows"),
                    ));
                }
            }
        }
        if let Some(&k) = record.iter().find(|&&k| k >= self.n_outputs) {
            return Err(GraphError::value(format!(
                "output {k} does not exist (the step has {})",
                self.n_outputs
            )));
        }
        // The tables' rows a step does not gather are updated when a later step gathers
        // them, or at the end (the same bits as updating them at every step).
        if steps > 1 && config.may_put_off_updates() {
            for rg in &mut self.row_grads {
                rg.sums.defer_updates();
            }
        }
        let one_thread = self.exec.runs_on_one_thread();
        let mut buffers = std::mem::take(&mut self.batch_buffers);
        buffers.resize_with(types.len(), Buffer::default);
        // The step's inputs, one list for all steps (a steady-state step allocates nothing).
        let mut spare: Vec<TensorRef> = Vec::with_capacity(types.len());
        let result = (0..steps).try_for_each(|j| {
            let batch_rows = j * batch..(j + 1) * batch;
            let mut inputs = recycle_tensors(std::mem::take(&mut spare));
            match rows {
                BatchRows::Consecutive { first } => inputs.extend(
                    sources
                        .iter()
                        .zip(&types)
                        .map(|(src, ty)| rows_of(src, &ty.shape, first + batch_rows.start)),
                ),
                BatchRows::Gathered(order) => {
                    let indices = &order[batch_rows];
                    for ((src, ty), buf) in sources.iter().zip(&types).zip(&mut buffers) {
                        gather_rows(src, indices, ty, buf)?;
                    }
                    inputs.extend(buffers.iter().zip(&types).map(|(buf, ty)| TensorRef {
                        shape: &ty.shape,
                        data: buf.as_ref(ty.numel()),
                    }));
                }
            }
            // As `train`, without settling the updates put off.
            Self::with_threads(one_thread, || {
                self.train_here(&inputs, vars, config, state, lrs[j])
            })?;
            spare = recycle_tensors(inputs);
            log.push(self.loss().unwrap_or(f32::NAN));
            log.extend(record.iter().map(|&k| match self.output(k).data {
                DataRef::F32(d) => d.first().copied().unwrap_or(f32::NAN),
                DataRef::I32(d) => d.first().map_or(f32::NAN, |&v| v as f32),
            }));
            Ok(())
        });
        self.batch_buffers = buffers;
        let settled = self.settle_rows(vars, state);
        result.and(settled)
    }

    /// Brings up to date the table rows whose updates [`train_batches`](Self::train_batches)
    /// put off.
    fn settle_rows(&mut self, vars: &mut Variables, state: &mut OptimizerState) -> Result<()> {
        let one_thread = self.exec.runs_on_one_thread();
        let (active, trainable) = (&self.active, &self.trainable);
        let iterations = state.iterations;
        Self::with_threads(one_thread, || {
            // Every table stops putting updates off, even after an error.
            let mut result = Ok(());
            for rg in &mut self.row_grads {
                let k = active[rg.active_position];
                let settled = match (
                    vars.values.get_mut(trainable[k]),
                    state.variables.get_mut(k),
                ) {
                    (Some(var), Some(var_state)) => {
                        optim::settle_rows(&mut rg.sums, var.as_mut_slice(), var_state, iterations)
                            .map_err(GraphError::value)
                    }
                    _ => {
                        rg.sums.stop_deferring();
                        Err(GraphError::value(format!(
                            "trainable weight {} or its optimizer state does not exist",
                            trainable[k]
                        )))
                    }
                };
                result = result.and(settled);
            }
            result
        })
    }

    /// The `k`-th user output after a run.
    pub fn output(&self, k: usize) -> TensorRef<'_> {
        self.exec.fetch(k)
    }

    /// The loss after a test or training step.
    pub fn loss(&self) -> Option<f32> {
        if !self.has_loss {
            return None;
        }
        match self.exec.fetch(self.n_outputs).data {
            DataRef::F32(d) => d.first().copied(),
            DataRef::I32(_) => None,
        }
    }
}

/// Checks that `sources` fit the step's inputs `types` but for their number of rows
/// (the same for all); returns the step's batch size and the sources' rows.
fn check_batch_sources(types: &[TensorType], sources: &[TensorRef]) -> Result<(usize, usize)> {
    if sources.len() != types.len() {
        return Err(GraphError::value(format!(
            "expected {} source arrays (one per input of the step), got {}",
            types.len(),
            sources.len()
        )));
    }
    let batch = types
        .first()
        .and_then(|t| t.shape.first())
        .copied()
        .unwrap_or(0);
    let n = sources
        .first()
        .and_then(|s| s.shape.first())
        .copied()
        .unwrap_or(0);
    for (i, (src, ty)) in sources.iter().zip(types).enumerate() {
        let fits = ty.shape.first() == Some(&batch)
            && src.shape.first() == Some(&n)
            && src.shape[1..] == ty.shape[1..]
            && matches!(src.data, DataRef::F32(_)) == ty.dtype.is_f32_storage();
        if !fits {
            return Err(GraphError::value(format!(
                "source {i} has shape {} ({}), expected {n} rows of the step's input {} ({})",
                fmt_shape(src.shape),
                match src.data {
                    DataRef::F32(_) => "float32",
                    DataRef::I32(_) => "int32",
                },
                fmt_shape(&ty.shape),
                ty.dtype.name()
            )));
        }
    }
    Ok((batch, n))
}

/// The rows `first..first + shape[0]` of `src`, as a tensor of `shape`.
fn rows_of<'a>(src: &TensorRef<'a>, shape: &'a [usize], first: usize) -> TensorRef<'a> {
    let row: usize = shape[1..].iter().product();
    let range = first * row..(first + shape[0]) * row;
    let data = match src.data {
        DataRef::F32(d) => DataRef::F32(&d[range]),
        DataRef::I32(d) => DataRef::I32(&d[range]),
    };
    TensorRef { shape, data }
}

/// Gathers the rows `indices` of `src` into `buf`, as the input of type `ty`.
fn gather_rows(src: &TensorRef, indices: &[i32], ty: &TensorType, buf: &mut Buffer) -> Result<()> {
    let row: usize = ty.shape[1..].iter().product();
    let shape = [src.shape[0], row];
    buf.ensure(ty.dtype, ty.numel());
    let gathered = match (src.data, buf) {
        (DataRef::F32(x), Buffer::F32(out)) => {
            pyfuncnet_kernels::layout::gather("batch rows", x, &shape, 0, indices, out)
        }
        (DataRef::I32(x), Buffer::I32(out)) => {
            pyfuncnet_kernels::layout::gather("batch rows", x, &shape, 0, indices, out)
        }
        _ => unreachable!("checked: each source has its input's storage type"),
    };
    gathered.map_err(Into::into)
}

/// An optimizer step over the variables at positions `active` only (the others got
/// no gradient): their states are moved into a temporary state and back.
fn apply_to_subset(
    config: &OptimizerConfig,
    state: &mut OptimizerState,
    active: &[usize],
    lr: f32,
    vars: &mut [&mut [f32]],
    grads: &mut [Gradient<'_>],
) -> std::result::Result<(), String> {
    let empty = || VariableState {
        slots: Vec::new(),
        scalars: Vec::new(),
    };
    let mut sub = OptimizerState {
        iterations: state.iterations,
        variables: active
            .iter()
            .map(|&k| std::mem::replace(&mut state.variables[k], empty()))
            .collect(),
    };
    let result = optim::apply_gradients(config, &mut sub, lr, vars, grads);
    let shared_scalars = sub.variables.first().map(|v| v.scalars.clone());
    for (&k, v) in active.iter().zip(sub.variables) {
        state.variables[k] = v;
    }
    if result.is_ok() {
        state.iterations = sub.iterations;
        // Scalar state (Nadam's u_product) is per optimizer: keep every copy equal.
        if let Some(scalars) = shared_scalars {
            for v in &mut state.variables {
                v.scalars.clone_from(&scalars);
            }
        }
    }
    result
}

/// `v` emptied, with its capacity, for tensors of another lifetime (see [`recycle`]).
fn recycle_tensors<'b>(mut v: Vec<TensorRef<'_>>) -> Vec<TensorRef<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

/// `v` emptied, with its capacity, for gradients of another lifetime (see
/// [`recycle`]).
fn recycle_gradients<'b>(mut v: Vec<Gradient<'_>>) -> Vec<Gradient<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

/// A computed tensor: its shape and data.
pub type ShapedBuffer = (Vec<usize>, Buffer);

/// Evaluates d(sum(target)) / d(source) for a spec whose first output is the target
/// and whose remaining outputs are the sources (GradientTape). `None` for a source
/// the target does not depend on; otherwise the gradient's shape and data.
///
/// # Errors
/// Spec, input and op errors.
pub fn gradient(
    spec_text: &str,
    inputs: &[TensorRef],
    vars: &Variables,
) -> Result<Vec<Option<ShapedBuffer>>> {
    let Spec {
        mut graph, outputs, ..
    } = spec::parse(spec_text)?;
    let (&target, sources) = outputs
        .split_first()
        .ok_or_else(|| GraphError::value("gradient: the spec names no target"))?;
    let grads = autodiff::gradients(&mut graph, target, sources)?;
    let fetches: Vec<_> = grads.iter().flatten().copied().collect();
    let mut exec = Executor::new(graph, fetches);
    exec.run(&Ctx::default(), inputs, &vars.values)?;
    let mut k = 0;
    Ok(grads
        .iter()
        .map(|g| {
            g.map(|_| {
                let t = exec.fetch(k);
                k += 1;
                (t.shape.to_vec(), to_buffer(t))
            })
        })
        .collect())
}

fn to_buffer(t: TensorRef) -> Buffer {
    match t.data {
        DataRef::F32(d) => Buffer::F32(d.to_vec()),
        DataRef::I32(d) => Buffer::I32(d.to_vec()),
    }
}

/// Output types of op `name` for the given input types (symbolic shape inference).
///
/// # Errors
/// Unknown op, bad attributes, and the op's shape/dtype errors, prefixed with its name.
pub fn infer(
    name: &str,
    attrs: &serde_json::Value,
    inputs: &[TensorType],
) -> Result<Vec<TensorType>> {
    let op = crate::ops::build(name, attrs)?;
    let refs: Vec<&TensorType> = inputs.iter().collect();
    op.infer(&refs).map_err(|e| e.context(name))
}
