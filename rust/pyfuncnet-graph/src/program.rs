//! Compiled steps: a spec differentiated (for training), planned and ready to run
//! once per batch — forward, loss, backward and optimizer update in one call.

use crate::autodiff;
use crate::error::{GraphError, Result};
use crate::exec::Executor;
use crate::ops::Ctx;
use crate::optim::{self, OptimizerConfig, OptimizerState};
use crate::spec::{self, Spec};
use crate::graph::Graph;
use crate::tensor::{Buffer, DType, DataRef, TensorRef, TensorType};

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
    /// Weight index of each gradient fetch (after the outputs and the loss).
    trainable: Vec<usize>,
    /// Which trainable weights received a gradient (weights the loss ignores keep theirs).
    has_grad: Vec<bool>,
    /// Non-trainable weight assignments: (weight index, fetch index).
    updates: Vec<(usize, usize)>,
    /// Scratch for gradients that do not live in a slot (e.g. a constant gradient).
    grad_scratch: Vec<Vec<f32>>,
}

impl CompiledStep {
    /// Parses, differentiates (in [`Mode::Train`]) and plans a spec.
    ///
    /// # Errors
    /// Spec errors; `Value` when a test or train step has no loss.
    pub fn compile(spec_text: &str, mode: Mode) -> Result<CompiledStep> {
        let Spec { mut graph, outputs, loss, trainable, updates, seed } = spec::parse(spec_text)?;
        let mut fetches = outputs.clone();
        if mode != Mode::Predict {
            let loss = loss.ok_or_else(|| GraphError::value("a test or training step needs a loss"))?;
            fetches.push(loss);
        }
        let mut weights = Vec::new();
        let mut has_grad = Vec::new();
        let mut grad_scratch = Vec::new();
        let mut update_fetches = Vec::new();
        if mode == Mode::Train {
            let loss = loss.expect("checked above");
            let sources: Vec<_> = trainable.iter().map(|&(_, v)| v).collect();
            let grads = autodiff::gradients(&mut graph, loss, &sources)?;
            for (&(w, v), grad) in trainable.iter().zip(grads) {
                weights.push(w);
                has_grad.push(grad.is_some());
                fetches.push(grad.unwrap_or(loss));
                grad_scratch.push(vec![0.0; graph.ty(v).numel()]);
            }
            for &(w, v) in &updates {
                update_fetches.push((w, fetches.len()));
                fetches.push(v);
            }
        }
        let n_outputs = outputs.len();
        Ok(CompiledStep {
            exec: Executor::new(graph, fetches),
            mode,
            seed,
            n_outputs,
            has_loss: mode != Mode::Predict,
            trainable: weights,
            has_grad,
            updates: update_fetches,
            grad_scratch,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of user outputs.
    pub fn num_outputs(&self) -> usize {
        self.n_outputs
    }

    /// The executor (types of inputs and outputs).
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Runs the forward pass (and loss in test mode).
    ///
    /// # Errors
    /// Input mismatches and op errors; nothing outside this step's buffers changes.
    pub fn run(&mut self, inputs: &[TensorRef], vars: &Variables, step: u64) -> Result<()> {
        let ctx = Ctx { seed: self.seed, step, training: false };
        self.exec.run(&ctx, inputs, &vars.values)
    }

    /// Runs a training step: forward, loss, backward, then (only if all of that
    /// succeeded) the optimizer update and the non-trainable weight updates.
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
        if self.mode != Mode::Train {
            return Err(GraphError::value("this step was not compiled for training"));
        }
        if state.variables.len() != self.trainable.len() {
            return Err(GraphError::value(format!(
                "optimizer state holds {} variables, the model trains {}",
                state.variables.len(),
                self.trainable.len()
            )));
        }
        let ctx = Ctx { seed: self.seed, step: state.iterations, training: true };
        self.exec.run(&ctx, inputs, &vars.values)?;

        let first_grad = self.n_outputs + usize::from(self.has_loss);
        // Gradients that are not in a slot (constants) are copied to scratch first.
        for (k, scratch) in self.grad_scratch.iter_mut().enumerate() {
            if self.exec.fetch_slot_mut(first_grad + k).is_none() {
                if let DataRef::F32(d) = self.exec.fetch(first_grad + k).data {
                    scratch.copy_from_slice(d);
                }
            }
        }
        let mut var_refs: Vec<&mut [f32]> = Vec::with_capacity(self.trainable.len());
        let mut grad_refs: Vec<&mut [f32]> = Vec::with_capacity(self.trainable.len());
        let exec = &mut self.exec;
        let grads = exec.fetch_slots_mut(first_grad, self.trainable.len());
        for ((g, scratch), has) in grads.into_iter().zip(self.grad_scratch.iter_mut()).zip(&self.has_grad) {
            let g = g.unwrap_or(scratch.as_mut_slice());
            if !has {
                g.fill(0.0);
            }
            grad_refs.push(g);
        }
        let mut remaining: Vec<Option<&mut Vec<f32>>> = vars.values.iter_mut().map(Some).collect();
        for &w in &self.trainable {
            let v = remaining
                .get_mut(w)
                .and_then(Option::take)
                .ok_or_else(|| GraphError::value(format!("weight {w} is trained twice or does not exist")))?;
            var_refs.push(v.as_mut_slice());
        }
        optim::apply_gradients(config, state, lr, &mut var_refs, &mut grad_refs).map_err(GraphError::value)?;
        drop(var_refs);
        for &(w, fetch) in &self.updates {
            if let DataRef::F32(d) = self.exec.fetch(fetch).data {
                vars.values[w].copy_from_slice(d);
            }
        }
        Ok(())
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

/// Evaluates d(sum(target)) / d(source) for a spec whose first output is the target
/// and whose remaining outputs are the sources (GradientTape). `None` for a source
/// the target does not depend on; otherwise the gradient's shape and data.
///
/// # Errors
/// Spec, input and op errors.
pub fn gradient(spec_text: &str, inputs: &[TensorRef], vars: &Variables) -> Result<Vec<Option<(Vec<usize>, Buffer)>>> {
    let Spec { mut graph, outputs, .. } = spec::parse(spec_text)?;
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

/// Runs one op at once on the given tensors (eager mode); returns each output's
/// type and data.
///
/// # Errors
/// Unknown op, bad attributes, shape/dtype inference and op errors.
pub fn eager(name: &str, attrs: &serde_json::Value, inputs: &[TensorRef]) -> Result<Vec<(TensorType, Buffer)>> {
    let op = crate::ops::build(name, attrs)?;
    let mut graph = Graph::new();
    let ids: Vec<_> = inputs
        .iter()
        .map(|t| {
            let dtype = match t.data {
                DataRef::F32(_) => DType::F32,
                DataRef::I32(_) => DType::I32,
            };
            graph.add_input(TensorType::new(t.shape.to_vec(), dtype))
        })
        .collect();
    let outs = graph.apply(op, &ids)?;
    let types: Vec<TensorType> = outs.iter().map(|&o| graph.ty(o).clone()).collect();
    let mut exec = Executor::new(graph, outs);
    exec.run(&Ctx::default(), inputs, &[])?;
    Ok(types.into_iter().enumerate().map(|(k, t)| (t, to_buffer(exec.fetch(k)))).collect())
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
pub fn infer(name: &str, attrs: &serde_json::Value, inputs: &[TensorType]) -> Result<Vec<TensorType>> {
    let op = crate::ops::build(name, attrs)?;
    let refs: Vec<&TensorType> = inputs.iter().collect();
    op.infer(&refs).map_err(|e| e.context(name))
}
