//! The executor: runs a planned graph over one set of step inputs.

use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId, ValueSource};
use crate::ops::Ctx;
use crate::plan::{Location, Plan};
use crate::tensor::{fmt_shape, Buffer, DType, DataMut, DataRef, TensorMut, TensorRef, TensorType};

/// Inputs and outputs per node handled without heap allocation; nodes with more
/// (a very wide concatenate or split) fall back to a temporary vector.
const STACK_INPUTS: usize = 16;
const STACK_OUTPUTS: usize = 8;

const EMPTY_REF: TensorRef<'static> = TensorRef {
    shape: &[],
    data: DataRef::F32(&[]),
};

/// A graph with its memory plan and buffers, ready to run step after step.
#[derive(Debug)]
pub struct Executor {
    graph: Graph,
    plan: Plan,
    slots: Vec<Buffer>,
    fetches: Vec<ValueId>,
    /// (weight index, element count, shape) of every weight the graph reads,
    /// checked against the store before each run.
    weights: Vec<(usize, usize, Vec<usize>)>,
}

impl Executor {
    /// Plans `graph` for computing `fetches` and allocates its buffers. A fetch that
    /// is not computed by a node (an input, weight or constant) is copied into a
    /// buffer of its own, so every fetch can be read after the run.
    pub fn new(mut graph: Graph, mut fetches: Vec<ValueId>) -> Executor {
        for f in fetches.iter_mut() {
            if !matches!(graph.values[*f].source, ValueSource::Node { .. }) {
                let shape = graph.shape(*f).iter().map(|&d| d as i64).collect();
                let copy = Box::new(crate::ops::layout::ReshapeOp { shape });
                *f = graph
                    .apply1(copy, &[*f])
                    .expect("a same-shape reshape always type-checks");
            }
        }
        let plan = Plan::new(&graph, &fetches);
        let slots = plan
            .slots
            .iter()
            .map(|&(dtype, size)| Buffer::zeros(dtype, size))
            .collect();
        let weights = graph
            .values
            .iter()
            .filter_map(|v| match v.source {
                ValueSource::Weight(w) => Some((w, v.ty.numel(), v.ty.shape.clone())),
                _ => None,
            })
            .collect();
        Executor {
            graph,
            plan,
            slots,
            fetches,
            weights,
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The types of the inputs `run` expects, in order.
    pub fn input_types(&self) -> Vec<&TensorType> {
        self.graph
            .inputs
            .iter()
            .map(|&v| self.graph.ty(v))
            .collect()
    }

    /// Checks step inputs and weights against the graph before anything runs.
    fn check(&self, inputs: &[TensorRef], weights: &[Vec<f32>]) -> Result<()> {
        if inputs.len() != self.graph.inputs.len() {
            return Err(GraphError::value(format!(
                "expected {} input arrays, got {}",
                self.graph.inputs.len(),
                inputs.len()
            )));
        }
        for (i, (t, &v)) in inputs.iter().zip(&self.graph.inputs).enumerate() {
            let ty = self.graph.ty(v);
            if t.shape != ty.shape.as_slice() {
                return Err(GraphError::shape(format!(
                    "input {i}: expected shape {}, got {}",
                    fmt_shape(&ty.shape),
                    fmt_shape(t.shape)
                )));
            }
            let (len, storage_ok) = match t.data {
                DataRef::F32(d) => (d.len(), ty.dtype.is_f32_storage()),
                DataRef::I32(d) => (d.len(), !ty.dtype.is_f32_storage()),
            };
            if !storage_ok {
                return Err(GraphError::dtype(format!(
                    "input {i}: expected dtype {}",
                    ty.dtype.name()
                )));
            }
            if len != ty.numel() {
                return Err(GraphError::shape(format!(
                    "input {i}: expected {} values, got {len}",
                    ty.numel()
                )));
            }
        }
        for (w, numel, shape) in &self.weights {
            let got = weights.get(*w).map(|x| x.len());
            if got != Some(*numel) {
                return Err(GraphError::shape(format!(
                    "weight {w}: expected {numel} values (shape {}), got {}",
                    fmt_shape(shape),
                    got.map_or("no such weight".to_string(), |n| n.to_string())
                )));
            }
        }
        Ok(())
    }

    /// Runs every planned node. On error, nothing but this executor's scratch buffers
    /// has been written.
    ///
    /// # Errors
    /// Input shape/dtype mismatches (checked first) and op errors such as
    /// out-of-range indices, prefixed with the node's label and op.
    pub fn run(&mut self, ctx: &Ctx, inputs: &[TensorRef], weights: &[Vec<f32>]) -> Result<()> {
        self.check(inputs, weights)?;
        for step in 0..self.plan.order.len() {
            let ni = self.plan.order[step];
            self.run_node(ni, ctx, inputs, weights).map_err(|e| {
                let node = &self.graph.nodes[ni];
                match &node.label {
                    Some(label) => e.context(&format!("{label} ({})", node.op.name())),
                    None => e.context(node.op.name()),
                }
            })?;
        }
        Ok(())
    }

    fn value_ref<'a>(
        &'a self,
        v: ValueId,
        inputs: &[TensorRef<'a>],
        weights: &'a [Vec<f32>],
    ) -> TensorRef<'a> {
        let value = &self.graph.values[v];
        let shape = value.ty.shape.as_slice();
        let numel = value.ty.numel();
        match (self.plan.locations[v], &value.source) {
            (Location::Input(i), _) => inputs[i],
            (Location::Weight(w), _) => TensorRef {
                shape,
                data: DataRef::F32(&weights[w][..numel]),
            },
            (Location::Const, ValueSource::Const(data)) => TensorRef {
                shape,
                data: DataRef::F32(data),
            },
            (Location::Slot(s), _) => TensorRef {
                shape,
                data: self.slots[s].as_ref(numel),
            },
            _ => EMPTY_REF,
        }
    }

    fn run_node(
        &mut self,
        ni: usize,
        ctx: &Ctx,
        inputs: &[TensorRef],
        weights: &[Vec<f32>],
    ) -> Result<()> {
        let n_out = self.graph.nodes[ni].outputs.len();
        // Move the output buffers out of their slots so the inputs can be borrowed
        // from the remaining slots (the plan never gives an output an input's slot).
        let mut taken: [Buffer; STACK_OUTPUTS] = Default::default();
        let mut overflow: Vec<Buffer> = Vec::new();
        for k in 0..n_out {
            let s = self.out_slot(ni, k);
            let buf = std::mem::take(&mut self.slots[s]);
            if k < STACK_OUTPUTS {
                taken[k] = buf;
            } else {
                overflow.push(buf);
            }
        }
        let result = self.forward_node(
            ni,
            ctx,
            inputs,
            weights,
            &mut taken[..n_out.min(STACK_OUTPUTS)],
            &mut overflow,
        );
        for k in (0..n_out).rev() {
            let buf = if k < STACK_OUTPUTS {
                std::mem::take(&mut taken[k])
            } else {
                overflow.pop().unwrap_or_default()
            };
            let s = self.out_slot(ni, k);
            self.slots[s] = buf;
        }
        result
    }

    fn out_slot(&self, ni: usize, k: usize) -> usize {
        match self.plan.locations[self.graph.nodes[ni].outputs[k]] {
            Location::Slot(s) => s,
            other => unreachable!("node outputs are always planned into slots, got {other:?}"),
        }
    }

    fn forward_node(
        &self,
        ni: usize,
        ctx: &Ctx,
        inputs: &[TensorRef],
        weights: &[Vec<f32>],
        first: &mut [Buffer],
        overflow: &mut [Buffer],
    ) -> Result<()> {
        let node = &self.graph.nodes[ni];
        let buffers = first.iter_mut().chain(overflow.iter_mut());
        let views = node.outputs.iter().zip(buffers).map(|(&o, buf)| {
            let ty = self.graph.ty(o);
            TensorMut {
                shape: &ty.shape,
                data: buf.as_mut(ty.numel()),
            }
        });
        if node.outputs.len() <= STACK_OUTPUTS {
            let mut outs: [TensorMut; STACK_OUTPUTS] = std::array::from_fn(|_| TensorMut {
                shape: &[],
                data: DataMut::F32(&mut []),
            });
            for (slot, view) in outs.iter_mut().zip(views) {
                *slot = view;
            }
            self.call(ni, ctx, inputs, weights, &mut outs[..node.outputs.len()])
        } else {
            let mut outs: Vec<TensorMut> = views.collect();
            self.call(ni, ctx, inputs, weights, &mut outs)
        }
    }

    fn call(
        &self,
        ni: usize,
        ctx: &Ctx,
        inputs: &[TensorRef],
        weights: &[Vec<f32>],
        outs: &mut [TensorMut],
    ) -> Result<()> {
        let node = &self.graph.nodes[ni];
        if node.inputs.len() <= STACK_INPUTS {
            let mut refs = [EMPTY_REF; STACK_INPUTS];
            for (r, &v) in refs.iter_mut().zip(&node.inputs) {
                *r = self.value_ref(v, inputs, weights);
            }
            node.op.forward(ctx, &refs[..node.inputs.len()], outs)
        } else {
            let refs: Vec<TensorRef> = node
                .inputs
                .iter()
                .map(|&v| self.value_ref(v, inputs, weights))
                .collect();
            node.op.forward(ctx, &refs, outs)
        }
    }

    /// The `k`-th fetched value after a run.
    pub fn fetch(&self, k: usize) -> TensorRef<'_> {
        let v = self.fetches[k];
        let ty = self.graph.ty(v);
        match self.plan.locations[v] {
            Location::Slot(s) => TensorRef {
                shape: &ty.shape,
                data: self.slots[s].as_ref(ty.numel()),
            },
            other => unreachable!("fetches are node outputs, planned into slots; got {other:?}"),
        }
    }

    /// The slot holding fetch `k`, if it lives in a float slot.
    pub fn fetch_slot(&self, k: usize) -> Option<usize> {
        let v = self.fetches[k];
        match (
            self.plan.locations[v],
            self.graph.ty(v).dtype.is_f32_storage(),
        ) {
            (Location::Slot(s), true) => Some(s),
            _ => None,
        }
    }

    /// Mutable views of the float slots named by `slots` (distinct), in that order,
    /// each cut to `lens[i]` elements, appended to `out`. `scratch` is working
    /// space; both vectors keep their capacity between calls, so a steady-state
    /// call does not allocate.
    pub fn slots_mut<'a>(
        &'a mut self,
        slots: &[usize],
        lens: &[usize],
        scratch: &mut Vec<Option<&'a mut [f32]>>,
        out: &mut Vec<&'a mut [f32]>,
    ) {
        scratch.clear();
        scratch.extend(self.slots.iter_mut().map(|b| match b {
            Buffer::F32(d) => Some(d.as_mut_slice()),
            Buffer::I32(_) => None,
        }));
        for (&s, &len) in slots.iter().zip(lens) {
            if let Some(d) = scratch[s].take() {
                out.push(&mut d[..len]);
            }
        }
    }

    /// The fetched value ids.
    pub fn fetches(&self) -> &[ValueId] {
        &self.fetches
    }

    /// The dtype of the `k`-th fetch.
    pub fn fetch_dtype(&self, k: usize) -> DType {
        self.graph.ty(self.fetches[k]).dtype
    }
}

/// Empties a vector of borrowed slices so its allocation can be reused for borrows
/// of another lifetime: collecting an empty `vec::IntoIter` into a vector of a type
/// with the same layout reuses the buffer in place, so steady-state steps that need
/// a list of slices do not allocate.
pub fn recycle<'b, T: ?Sized>(mut v: Vec<&mut T>) -> Vec<&'b mut T> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}

/// [`recycle`] for vectors of optional borrowed slices.
pub fn recycle_opt<'b, T: ?Sized>(mut v: Vec<Option<&mut T>>) -> Vec<Option<&'b mut T>> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector was cleared"))
        .collect()
}
