//! The executor: runs a planned graph over one set of step inputs.
//!
//! Nodes run stage by stage ([`Plan`]), the chains of one stage side by side: a
//! chain with a node whose kernels split their work across threads is a task of
//! its own, whose parallel sections the other threads join when they run out of
//! tasks; the chains of small nodes, too small to split, are grouped into tasks of
//! about equal work, as many as the stage's work holds [`MIN_TASK_WORK`]s, so that
//! handing a task to another thread stays cheap next to the work in it. A task holds
//! the buffers of the slots its nodes write while the stage runs, so a node reads
//! what its chain made earlier from them and everything else from the slots.
//! Every node computes the same values whichever way it runs, so results do not
//! depend on the thread count.

use std::ops::Range;

use pyfuncnet_kernels::par;

use crate::error::{GraphError, Result};
use crate::graph::{Graph, ValueId, ValueSource};
use crate::ops::Ctx;
use crate::plan::{Location, Plan};
use crate::tensor::{fmt_shape, Buffer, DType, DataMut, DataRef, TensorMut, TensorRef, TensorType};

/// Inputs and outputs per node handled without heap allocation; nodes with more
/// (a very wide concatenate or split) fall back to a temporary vector.
const STACK_INPUTS: usize = 16;
const STACK_OUTPUTS: usize = 8;

/// Work ([`crate::ops::OpCost::work`], about ns) per task of small nodes run beside
/// others: a stage's chains of small nodes make `work / MIN_TASK_WORK` tasks at most.
const MIN_TASK_WORK: usize = 10_000;
/// Runs estimated below this much work ([`crate::ops::OpCost`] units; a
/// 784-64-64-10 MLP's training step at batch 64 is ~460k, at 256 ~1.8M, and its
/// batch-256 predict step over 700k) run on one thread start to end. On a 2-core
/// Sapphire Rapids VM the batch-64 training step ran ~10% slower on two threads
/// than on one (its GEMMs make only a few tasks of ~15 us); on a 2-core Zen 3 VM,
/// once its 784-deep products packed B, ~10% faster (median of eight interleaved
/// pairs), as the batch-256 steps were on both.
const SERIAL_RUN_WORK: usize = 300_000;

const EMPTY_REF: TensorRef<'static> = TensorRef {
    shape: &[],
    data: DataRef::F32(&[]),
};

/// Nodes run one after the other by one thread, beside other tasks.
#[derive(Debug, Clone)]
struct Task {
    /// A range of [`Schedule::nodes`].
    nodes: Range<usize>,
    /// A range of [`Schedule::slots`].
    slots: Range<usize>,
}

/// Marks, in [`Schedule::wiring`], an input read from the slots.
const FROM_SLOTS: u32 = u32::MAX;

/// The stages of a run and where their tasks' nodes find their buffers.
#[derive(Debug)]
struct Schedule {
    /// Each stage is a range of `tasks` run side by side (often a single task
    /// whose kernels may then use every thread).
    stages: Vec<Range<usize>>,
    tasks: Vec<Task>,
    /// The nodes of every task, task after task, each task's in the order they run.
    nodes: Vec<usize>,
    /// The slots each task writes, each once, task after task: while its stage
    /// runs, a task holds their buffers, in this order.
    slots: Vec<usize>,
    /// Per node (in `nodes` order): the index among its task's buffers of each
    /// output, then of each input that an earlier node of the task wrote
    /// ([`FROM_SLOTS`] for the others).
    wiring: Vec<u32>,
    /// Where each node's entries start in `wiring`.
    wiring_at: Vec<usize>,
}

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
    schedule: Schedule,
    /// The buffers of the slots a stage writes, moved out of the slots while it runs
    /// (capacity reserved for the largest stage, so a run does not allocate).
    taken: Vec<Buffer>,
    /// Whether the run is best done by one thread: no node splits its work and no
    /// stage runs tasks side by side, or the whole run is too small to repay the
    /// helpers' hand-offs (see [`SERIAL_RUN_WORK`]).
    one_thread: bool,
}

/// What every node of a run reads: shared by the tasks of a group.
struct View<'a> {
    graph: &'a Graph,
    plan: &'a Plan,
    slots: &'a [Buffer],
    inputs: &'a [TensorRef<'a>],
    weights: &'a [Vec<f32>],
    ctx: &'a Ctx,
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
        let (schedule, all_single_task, total_work) = schedule(&graph, &plan);
        let one_thread = (all_single_task && schedule.stages.iter().all(|r| r.len() == 1))
            || total_work < SERIAL_RUN_WORK;
        let most_buffers = schedule
            .stages
            .iter()
            .map(|r| {
                schedule.tasks[r.clone()]
                    .iter()
                    .map(|t| t.slots.len())
                    .sum()
            })
            .max()
            .unwrap_or(0);
        Executor {
            graph,
            plan,
            slots,
            fetches,
            weights,
            schedule,
            taken: Vec::with_capacity(most_buffers),
            one_thread,
        }
    }

    /// Whether a run is best done by one thread, start to end (every node a single
    /// task and no stage with tasks side by side, or a small run): such a run is
    /// cheapest with every section serial on the calling thread.
    pub fn runs_on_one_thread(&self) -> bool {
        self.one_thread
    }

    /// How many stages run several tasks side by side (for tests and diagnostics).
    pub fn parallel_stages(&self) -> usize {
        self.schedule.stages.iter().filter(|r| r.len() > 1).count()
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
        par::keep_scratch_up();
        let serial = par::threads_in_use() == 1;
        for i in 0..self.schedule.stages.len() {
            let tasks = self.schedule.stages[i].clone();
            self.run_stage(tasks, serial, ctx, inputs, weights)?;
        }
        Ok(())
    }

    /// Runs the tasks `tasks` side by side (in order on this thread when `serial`):
    /// the buffers of the slots they write are moved out of the slots, so every
    /// task can write its own while all read the slots, and moved back afterwards.
    fn run_stage(
        &mut self,
        tasks: Range<usize>,
        serial: bool,
        ctx: &Ctx,
        inputs: &[TensorRef],
        weights: &[Vec<f32>],
    ) -> Result<()> {
        let schedule = &self.schedule;
        let tasks = &schedule.tasks[tasks];
        let written = &schedule.slots[tasks[0].slots.start..tasks[tasks.len() - 1].slots.end];
        self.taken.clear();
        for &s in written {
            self.taken.push(std::mem::take(&mut self.slots[s]));
        }
        let view = View {
            graph: &self.graph,
            plan: &self.plan,
            slots: &self.slots,
            inputs,
            weights,
            ctx,
        };
        let result = run_tasks(&view, schedule, tasks, &mut self.taken, serial);
        for (&s, buffer) in written.iter().zip(self.taken.drain(..)) {
            self.slots[s] = buffer;
        }
        result
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

    /// Swaps the buffer holding fetch `k`, a float value, with `buffer`, first resized to
    /// the slot's length: the caller takes the value without copying it, and the slot keeps
    /// its length (its contents are scratch until a run writes them). Returns false, with
    /// nothing swapped, when fetch `k` is not held in a float slot.
    pub fn swap_fetch_buffer(&mut self, k: usize, buffer: &mut Vec<f32>) -> bool {
        let Some(s) = self.fetch_slot(k) else {
            return false;
        };
        let Buffer::F32(held) = &mut self.slots[s] else {
            return false;
        };
        buffer.resize(held.len(), 0.0);
        std::mem::swap(held, buffer);
        true
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

/// Makes the plan's stages into stages of tasks. A chain with a node whose kernels
/// split their work across threads is a task of its own (its parallel sections
/// share the pool with the other tasks); the chains whose nodes all run as one task
/// ([`crate::ops::OpCost::single_task`]) are grouped, in order, into at most `work /
/// MIN_TASK_WORK` tasks of about equal work ([`group_ranges`]), or all into one task
/// when they are too small for two. Returns the schedule, whether every node is a
/// single task, and the total work.
fn schedule(g: &Graph, plan: &Plan) -> (Schedule, bool, usize) {
    let mut all_single_task = true;
    let mut total_work = 0;
    let mut schedule = Schedule {
        stages: Vec::new(),
        tasks: Vec::new(),
        nodes: Vec::new(),
        slots: Vec::new(),
        wiring: Vec::new(),
        wiring_at: Vec::new(),
    };
    for stage in &plan.stages {
        let first = schedule.tasks.len();
        let mut small = Vec::new();
        let mut work = Vec::new();
        for chain in &plan.chains[stage.clone()] {
            let nodes = &plan.order[chain.clone()];
            let (mut chain_work, mut single) = (0, true);
            for &ni in nodes {
                let cost = g.node_cost(ni);
                single &= cost.single_task;
                chain_work += cost.work;
            }
            all_single_task &= single;
            total_work += chain_work;
            if single {
                small.push(nodes);
                work.push(chain_work);
            } else {
                schedule.push_task(g, plan, &[nodes]);
            }
        }
        let total: usize = work.iter().sum();
        let n_tasks = (total / MIN_TASK_WORK).clamp(1, small.len().max(1));
        for group in group_ranges(&work, n_tasks) {
            schedule.push_task(g, plan, &small[group]);
        }
        if schedule.tasks.len() > first {
            schedule.check_stage(g, plan, first..schedule.tasks.len());
            schedule.stages.push(first..schedule.tasks.len());
        }
    }
    (schedule, all_single_task, total_work)
}

impl Schedule {
    /// Appends a task running `chains` one after the other, and its wiring.
    fn push_task(&mut self, g: &Graph, plan: &Plan, chains: &[&[usize]]) {
        let (first_node, first_slot) = (self.nodes.len(), self.slots.len());
        // The slots first: a node may read, from the task's own buffer, a value
        // that a later node of the task takes over in place.
        for &ni in chains.iter().copied().flatten() {
            for k in 0..g.nodes[ni].outputs.len() {
                let s = out_slot(g, plan, ni, k);
                if self.slots[first_slot..].contains(&s) {
                    assert!(
                        k == 0 && plan.inplace[ni].is_some(),
                        "a task writes one slot twice, not in place"
                    );
                } else {
                    self.slots.push(s);
                }
            }
        }
        let own_of = |s: usize| self.slots[first_slot..].iter().position(|&t| t == s);
        for &ni in chains.iter().copied().flatten() {
            self.nodes.push(ni);
            self.wiring_at.push(self.wiring.len());
            let node = &g.nodes[ni];
            for k in 0..node.outputs.len() {
                let own = own_of(out_slot(g, plan, ni, k)).expect("listed above");
                self.wiring.push(own as u32);
            }
            for (k, &v) in node.inputs.iter().enumerate() {
                let own = match plan.locations[v] {
                    Location::Slot(s) if plan.inplace[ni] != Some(k) => own_of(s),
                    _ => None,
                };
                self.wiring.push(own.map_or(FROM_SLOTS, |j| j as u32));
            }
        }
        self.tasks.push(Task {
            nodes: first_node..self.nodes.len(),
            slots: first_slot..self.slots.len(),
        });
    }

    /// Checks what the plan promises the tasks of a stage: no slot written by two
    /// of them, and none read from the slots while a task holds its buffer.
    fn check_stage(&self, g: &Graph, plan: &Plan, tasks: Range<usize>) {
        let tasks = &self.tasks[tasks];
        let written = &self.slots[tasks[0].slots.start..tasks[tasks.len() - 1].slots.end];
        let mut sorted = written.to_vec();
        sorted.sort_unstable();
        assert!(
            sorted.windows(2).all(|w| w[0] != w[1]),
            "two tasks of a stage write one slot"
        );
        for j in tasks[0].nodes.start..tasks[tasks.len() - 1].nodes.end {
            let ni = self.nodes[j];
            let node = &g.nodes[ni];
            let wiring = &self.wiring[self.wiring_at[j] + node.outputs.len()..];
            for (k, (&v, &own)) in node.inputs.iter().zip(wiring).enumerate() {
                if let (Location::Slot(s), FROM_SLOTS) = (plan.locations[v], own) {
                    assert!(
                        plan.inplace[ni] == Some(k) || sorted.binary_search(&s).is_err(),
                        "a node reads a slot that a task of its stage holds"
                    );
                }
            }
        }
    }
}

/// Splits items of work `work` (in order) into at most `n` consecutive, non-empty
/// groups of about equal work: a group closes before the item that would take it
/// past its share, so a light item followed by a heavy one makes two groups.
fn group_ranges(work: &[usize], n: usize) -> Vec<Range<usize>> {
    let target = work.iter().sum::<usize>().div_ceil(n.max(1));
    let mut groups = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, &w) in work.iter().enumerate() {
        if i > start && groups.len() + 1 < n && acc + w > target {
            groups.push(start..i);
            (start, acc) = (i, 0);
        }
        acc += w;
    }
    if start < work.len() {
        groups.push(start..work.len());
    }
    groups
}

/// The slot of output `k` of node `ni`.
fn out_slot(g: &Graph, plan: &Plan, ni: usize, k: usize) -> usize {
    match plan.locations[g.nodes[ni].outputs[k]] {
        Location::Slot(s) => s,
        other => unreachable!("node outputs are always planned into slots, got {other:?}"),
    }
}

/// Runs `tasks` (whose buffers are `bufs`, in order), splitting the list in halves
/// run in parallel; the first error in task order wins.
fn run_tasks(
    view: &View,
    schedule: &Schedule,
    tasks: &[Task],
    bufs: &mut [Buffer],
    serial: bool,
) -> Result<()> {
    if tasks.len() == 1 || serial {
        let mut rest = bufs;
        for task in tasks {
            let (own, tail) = rest.split_at_mut(task.slots.len());
            for j in task.nodes.clone() {
                let wiring = &schedule.wiring[schedule.wiring_at[j]..];
                exec_node(view, schedule.nodes[j], own, wiring)?;
            }
            rest = tail;
        }
        return Ok(());
    }
    let mid = tasks.len() / 2;
    let split: usize = tasks[..mid].iter().map(|t| t.slots.len()).sum();
    let (left, right) = bufs.split_at_mut(split);
    let (a, b) = par::join(
        || run_tasks(view, schedule, &tasks[..mid], left, serial),
        || run_tasks(view, schedule, &tasks[mid..], right, serial),
    );
    a.and(b)
}

/// Runs node `ni` of a task whose buffers are `own`, wired by `wiring`
/// ([`Schedule::wiring`]); errors carry its label and op.
fn exec_node(view: &View, ni: usize, own: &mut [Buffer], wiring: &[u32]) -> Result<()> {
    let node = &view.graph.nodes[ni];
    // The outputs' buffers leave `own` while the node runs, so that it reads the
    // task's other buffers beside them.
    let n_out = node.outputs.len();
    let mut stack_bufs: [Buffer; STACK_OUTPUTS] = Default::default();
    let mut heap_bufs = Vec::new();
    let outs: &mut [Buffer] = if n_out <= STACK_OUTPUTS {
        &mut stack_bufs[..n_out]
    } else {
        heap_bufs.resize_with(n_out, Buffer::default);
        &mut heap_bufs
    };
    let (out_at, in_at) = wiring.split_at(n_out);
    for (b, &j) in outs.iter_mut().zip(out_at) {
        std::mem::swap(b, &mut own[j as usize]);
    }
    let result = call_node(view, ni, outs, own, in_at);
    for (b, &j) in outs.iter_mut().zip(out_at) {
        std::mem::swap(b, &mut own[j as usize]);
    }
    result.map_err(|e| match &node.label {
        Some(label) => e.context(&format!("{label} ({})", node.op.name())),
        None => e.context(node.op.name()),
    })
}

/// Runs node `ni` into the buffers `bufs`, reading input `k` from `own[in_at[k]]`
/// or, where that is [`FROM_SLOTS`], from the slots.
fn call_node(
    view: &View,
    ni: usize,
    bufs: &mut [Buffer],
    own: &[Buffer],
    in_at: &[u32],
) -> Result<()> {
    let node = &view.graph.nodes[ni];
    let inplace = view.plan.inplace[ni];
    let mut views = node.outputs.iter().zip(bufs.iter_mut()).map(|(&o, buf)| {
        let ty = view.graph.ty(o);
        TensorMut {
            shape: &ty.shape,
            data: buf.as_mut(ty.numel()),
        }
    });
    let n_in = node.inputs.len();
    let mut stack_refs = [EMPTY_REF; STACK_INPUTS];
    let mut heap_refs = Vec::new();
    let refs: &mut [TensorRef] = if n_in <= STACK_INPUTS {
        &mut stack_refs[..n_in]
    } else {
        heap_refs.resize(n_in, EMPTY_REF);
        &mut heap_refs
    };
    for (k, (r, &v)) in refs.iter_mut().zip(&node.inputs).enumerate() {
        let ty = view.graph.ty(v);
        *r = if inplace == Some(k) {
            // Its values are in the output buffer, moved out of the slot.
            TensorRef {
                shape: &ty.shape,
                data: DataRef::F32(&[]),
            }
        } else if in_at[k] != FROM_SLOTS {
            TensorRef {
                shape: &ty.shape,
                data: own[in_at[k] as usize].as_ref(ty.numel()),
            }
        } else {
            view.value_ref(v)
        };
    }
    if let Some(k) = inplace {
        let mut out = views.next().expect("an in-place node has an output");
        return node.op.forward_inplace(view.ctx, refs, k, &mut out);
    }
    let n_out = node.outputs.len();
    if n_out <= STACK_OUTPUTS {
        let mut outs: [TensorMut; STACK_OUTPUTS] = std::array::from_fn(|_| TensorMut {
            shape: &[],
            data: DataMut::F32(&mut []),
        });
        for (slot, v) in outs.iter_mut().zip(views) {
            *slot = v;
        }
        node.op.forward(view.ctx, refs, &mut outs[..n_out])
    } else {
        let mut outs: Vec<TensorMut> = views.collect();
        node.op.forward(view.ctx, refs, &mut outs)
    }
}

impl View<'_> {
    fn value_ref(&self, v: ValueId) -> TensorRef<'_> {
        let value = &self.graph.values[v];
        let shape = value.ty.shape.as_slice();
        let numel = value.ty.numel();
        match (self.plan.locations[v], &value.source) {
            (Location::Input(i), _) => self.inputs[i],
            (Location::Weight(w), _) => TensorRef {
                shape,
                data: DataRef::F32(&self.weights[w][..numel]),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorType;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use pyfuncnet_kernels::unary::Unary;

    /// An op of the random graphs below: exact or correctly rounded elementwise
    /// arithmetic, so a node's bits do not depend on how or where it runs.
    #[derive(Debug, Clone)]
    enum TestOp {
        Negate(Index),
        Halve(Index),
        Add(Index, Index),
        /// `0.5 + a`, the broadcast operand first.
        AddHalf(Index),
    }

    fn test_ops() -> impl Strategy<Value = TestOp> {
        prop_oneof![
            any::<Index>().prop_map(TestOp::Negate),
            any::<Index>().prop_map(TestOp::Halve),
            (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TestOp::Add(a, b)),
            any::<Index>().prop_map(TestOp::AddHalf),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Random graphs (branches, chains, joins, values read once or many times;
        /// tensors so small that a stage is one task, large enough that its small
        /// chains make several tasks, and large enough for each chain to split its
        /// work): every fetched value, the input too, equals the graph evaluated
        /// node by node, whatever stages, chains, in-place takeovers and reused
        /// slots the plan chose, on one thread or several. (The stages are run
        /// here as `run` does, with `serial` chosen by the test.)
        #[test]
        fn random_graphs_run_as_evaluated_node_by_node(
            ops in prop::collection::vec(test_ops(), 1..40),
            fetched in prop::collection::vec(any::<Index>(), 1..4),
            len in prop_oneof![
                1usize..40,
                Just(5_003),
                Just(crate::ops::SMALLEST_KERNEL_CHUNK + 7),
            ],
            serial in any::<bool>(),
        ) {
            let mut g = Graph::new();
            let x = g.add_input(TensorType::f32(vec![len]));
            let half = g.scalar(0.5);
            let input: Vec<f32> = (0..len).map(|i| (i % 23) as f32 / 8.0 - 1.375).collect();
            let mut ids = vec![x];
            let mut want = vec![input.clone()];
            for op in &ops {
                let pick = |i: Index| i.index(ids.len());
                let (id, value): (ValueId, Vec<f32>) = match *op {
                    TestOp::Negate(a) => (
                        g.unary(Unary::Negative, ids[pick(a)]).unwrap(),
                        want[pick(a)].iter().map(|v| -v).collect(),
                    ),
                    TestOp::Halve(a) => (
                        g.mul(ids[pick(a)], half).unwrap(),
                        want[pick(a)].iter().map(|v| v * 0.5).collect(),
                    ),
                    TestOp::Add(a, b) => (
                        g.add(ids[pick(a)], ids[pick(b)]).unwrap(),
                        want[pick(a)].iter().zip(&want[pick(b)]).map(|(u, v)| u + v).collect(),
                    ),
                    TestOp::AddHalf(a) => (
                        g.add(half, ids[pick(a)]).unwrap(),
                        want[pick(a)].iter().map(|v| 0.5 + v).collect(),
                    ),
                };
                ids.push(id);
                want.push(value);
            }
            // Fetch the last value and a few others.
            let mut fetches = vec![ids.len() - 1];
            fetches.extend(fetched.iter().map(|i| i.index(ids.len())));
            fetches.sort_unstable();
            fetches.dedup();
            let mut exec = Executor::new(g, fetches.iter().map(|&k| ids[k]).collect());
            let ctx = Ctx { seed: 0, step: 0, training: false };
            let shape = [len];
            for _ in 0..2 {
                exec.check(&[TensorRef::new_f32(&shape, &input)], &[]).unwrap();
                for i in 0..exec.schedule.stages.len() {
                    let tasks = exec.schedule.stages[i].clone();
                    exec.run_stage(tasks, serial, &ctx, &[TensorRef::new_f32(&shape, &input)], &[])
                        .unwrap();
                }
                for (k, &f) in fetches.iter().enumerate() {
                    let DataRef::F32(got) = exec.fetch(k).data else {
                        panic!("a float fetch")
                    };
                    let same = got.iter().zip(&want[f]).all(|(a, b)| a.to_bits() == b.to_bits());
                    prop_assert!(same, "value {} of {:?}", f, ops);
                }
            }
        }
    }

    /// Two values of `len` elements, `exp(x)` and `tanh(x)`, made side by side.
    fn two_branches(len: usize) -> (Graph, ValueId, ValueId) {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![len]));
        let a = g.unary(Unary::Exp, x).unwrap();
        let b = g.unary(Unary::Tanh, x).unwrap();
        (g, a, b)
    }

    #[test]
    #[should_panic(expected = "two tasks of a stage write one slot")]
    fn a_plan_giving_two_tasks_one_slot_is_refused() {
        let (g, a, b) = two_branches(crate::ops::SMALLEST_KERNEL_CHUNK + 7);
        let mut plan = Plan::new(&g, &[a, b]);
        plan.locations[b] = plan.locations[a];
        schedule(&g, &plan);
    }

    #[test]
    #[should_panic(expected = "a task writes one slot twice, not in place")]
    fn a_plan_giving_one_task_a_slot_twice_is_refused() {
        let (g, a, b) = two_branches(8); // small: one task
        let mut plan = Plan::new(&g, &[a, b]);
        plan.locations[b] = plan.locations[a];
        schedule(&g, &plan);
    }

    #[test]
    #[should_panic(expected = "a node reads a slot that a task of its stage holds")]
    fn a_plan_overwriting_what_another_task_reads_is_refused() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![crate::ops::SMALLEST_KERNEL_CHUNK + 7]));
        let p = g.unary(Unary::Exp, x).unwrap();
        let a = g.unary(Unary::Tanh, p).unwrap(); // two chains reading p
        let c = g.unary(Unary::Sigmoid, p).unwrap();
        let mut plan = Plan::new(&g, &[a, c]);
        plan.locations[a] = plan.locations[p];
        schedule(&g, &plan);
    }

    #[test]
    fn groups_split_work_evenly_in_order() {
        // A light node before a heavy one: two groups (they run side by side).
        assert_eq!(group_ranges(&[1, 3], 2), vec![0..1, 1..2]);
        assert_eq!(group_ranges(&[3, 1], 2), vec![0..1, 1..2]);
        assert_eq!(group_ranges(&[1, 1, 1, 1], 2), vec![0..2, 2..4]);
        assert_eq!(group_ranges(&[5, 1, 1, 1], 2), vec![0..1, 1..4]);
        assert_eq!(group_ranges(&[2, 2, 2], 1), vec![0..3]);
        assert_eq!(group_ranges(&[4], 3), vec![0..1]);
        assert!(group_ranges(&[], 2).is_empty());
        // Never more groups than asked, every item in exactly one group.
        for n in 1..5 {
            let work = [7, 1, 3, 3, 9, 2, 2, 8];
            let groups = group_ranges(&work, n);
            assert!(groups.len() <= n);
            assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), work.len());
            assert!(groups.windows(2).all(|w| w[0].end == w[1].start));
        }
    }
}
