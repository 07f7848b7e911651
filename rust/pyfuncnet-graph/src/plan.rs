//! The memory plan: which nodes run, in which stages, and which buffer slot holds
//! each value.
//!
//! Waves: a node's wave is one more than the latest wave among the nodes that
//! produce its inputs, so the nodes of one wave never read each other's outputs.
//! Stages: consecutive waves, each stage a set of independent chains (nodes that
//! one thread runs in order, each reading only earlier stages and its own chain),
//! so that a branch of the graph goes on to its next op as soon as its own op is
//! done instead of waiting for the other branches' ops of the same wave. A wave
//! joins the stage before it when it goes on with two chains or more, no chain
//! gains two nodes and no node reads two chains (either would run ops one after
//! the other that could run side by side), none of its nodes holds its thread long
//! ([`holds_its_thread`]), and the stage spans at most [`STAGE_WAVES`] waves.
//! Otherwise the wave starts a stage of its own, one chain per node.
//!
//! Liveness: a value's slot returns to the free pool at the end of the stage of
//! the last node that reads it, and is reused by later values of the same storage
//! type, so peak memory follows the widest point of the graph rather than its
//! length, and the chains of a stage never touch each other's slots.
//! An op with an in-place form ([`crate::ops::Op::inplace_input`]) takes over the
//! slot of an input that nothing reads afterwards (elementwise ops, reshapes and
//! gradient products then move no memory): the input's last stage reads it in one
//! chain only, and this node, reading it once, is the last there to read it.
//! Slots are sized once when the plan is made; executing a plan allocates nothing.

use std::ops::Range;

use crate::graph::{Graph, ValueId, ValueSource};
use crate::tensor::{DType, TensorType};

/// Where the executor finds a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The `i`-th step input.
    Input(usize),
    /// Weight `i` of the variable store.
    Weight(usize),
    /// A constant of the graph (its data lives in the value).
    Const,
    /// Buffer slot `s`.
    Slot(usize),
    /// Never computed (not needed by any fetched value).
    Unused,
}

/// Most waves one stage spans: values made and last read inside a stage keep their
/// slots to its end, so a longer stage holds more memory at once. The text models'
/// encoders (lookup, recurrent layer; and back: recurrent gradient, reshape,
/// lookup gradient) take two and three.
const STAGE_WAVES: usize = 4;

/// Work ([`crate::ops::OpCost::work`], about ns) past which a node that runs as one
/// task holds its thread long; see [`holds_its_thread`].
const LONG_SINGLE_TASK: usize = 20_000;

/// Whether node `ni` runs as one task ([`crate::ops::OpCost::single_task`]) for
/// long. A chain does not go on through such a node: its thread could not help
/// the other chains' ops meanwhile, as it does when the node waits for the next
/// stage. (The ticket model's short-batch LSTMs, each one task: chaining them
/// behind their lookups kept one thread from the longer lookup, and training ran
/// 5% slower at two threads.)
fn holds_its_thread(g: &Graph, ni: usize) -> bool {
    let cost = g.node_cost(ni);
    cost.single_task && cost.work > LONG_SINGLE_TASK
}

/// The result of planning a graph for a set of fetched values.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Nodes to execute: stage after stage, chain after chain, each chain in the
    /// order its nodes run.
    pub order: Vec<usize>,
    /// The chains, as ranges of `order`.
    pub chains: Vec<Range<usize>>,
    /// The stages, as ranges of `chains`: the chains of a stage are independent.
    pub stages: Vec<Range<usize>>,
    /// For each node of the graph, the input whose slot its output 0 took over.
    pub inplace: Vec<Option<usize>>,
    /// Location of every value.
    pub locations: Vec<Location>,
    /// Storage dtype and element capacity of every slot.
    pub slots: Vec<(DType, usize)>,
}

fn storage(ty: &TensorType) -> DType {
    if ty.dtype.is_f32_storage() {
        DType::F32
    } else {
        DType::I32
    }
}

impl Plan {
    /// Plans the nodes needed to compute `fetches`; fetched values stay live to the end.
    pub fn new(g: &Graph, fetches: &[ValueId]) -> Plan {
        let n_values = g.values.len();
        // Nodes needed: walk back from the fetches.
        let mut needed_value = vec![false; n_values];
        for &f in fetches {
            needed_value[f] = true;
        }
        let mut needed_node = vec![false; g.nodes.len()];
        for (i, node) in g.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|&o| needed_value[o]) {
                needed_node[i] = true;
                for &v in &node.inputs {
                    needed_value[v] = true;
                }
            }
        }

        // Waves: nodes are appended after their inputs exist, so one pass in index
        // order sees every producer before its consumers.
        let mut wave_of = vec![0usize; g.nodes.len()];
        for (i, node) in g.nodes.iter().enumerate() {
            if !needed_node[i] {
                continue;
            }
            let w = node
                .inputs
                .iter()
                .filter_map(|&v| match g.values[v].source {
                    ValueSource::Node { node, .. } => Some(wave_of[node] + 1),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            wave_of[i] = w;
        }
        let mut by_wave: Vec<usize> = (0..g.nodes.len()).filter(|&i| needed_node[i]).collect();
        by_wave.sort_by_key(|&i| wave_of[i]); // stable: graph order within a wave
        let waves: Vec<&[usize]> = by_wave
            .chunk_by(|&a, &b| wave_of[a] == wave_of[b])
            .collect();
        let (order, chains, stages) = stages_of(g, &waves);
        let (mut stage_of, mut chain_of) =
            (vec![0usize; g.nodes.len()], vec![0usize; g.nodes.len()]);
        for (st, stage) in stages.iter().enumerate() {
            for c in stage.clone() {
                for &ni in &order[chains[c].clone()] {
                    (stage_of[ni], chain_of[ni]) = (st, c);
                }
            }
        }

        // The last stage reading each value, whether chains other than the first
        // to read it there do too, and the node that reads it last.
        let mut last_stage = vec![None::<usize>; n_values];
        let mut reading_chain = vec![0usize; n_values];
        let mut other_chains_read = vec![false; n_values];
        let mut last_reader = vec![usize::MAX; n_values];
        for &ni in &order {
            let (st, c) = (stage_of[ni], chain_of[ni]);
            for &v in &g.nodes[ni].inputs {
                if last_stage[v] != Some(st) {
                    (last_stage[v], reading_chain[v], other_chains_read[v]) = (Some(st), c, false);
                }
                other_chains_read[v] |= reading_chain[v] != c;
                last_reader[v] = ni;
            }
        }
        let mut pinned = vec![false; n_values];
        for &f in fetches {
            pinned[f] = true;
        }

        let mut locations: Vec<Location> = g
            .values
            .iter()
            .map(|v| match v.source {
                ValueSource::Input(i) => Location::Input(i),
                ValueSource::Weight(i) => Location::Weight(i),
                ValueSource::Const(_) => Location::Const,
                ValueSource::Node { .. } => Location::Unused,
            })
            .collect();
        let mut inplace = vec![None; g.nodes.len()];
        let mut slots: Vec<(DType, usize)> = Vec::new();
        // The value each slot holds now: a slot is freed only by its holder.
        let mut holder: Vec<ValueId> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        for (st, stage) in stages.iter().enumerate() {
            let nodes = &order[chains[stage.start].start..chains[stage.end - 1].end];
            for &ni in nodes {
                let node = &g.nodes[ni];
                // In place: the input is in a slot, read once by this node, and
                // nothing reads it after this node nor beside it in another chain.
                let types: Vec<&TensorType> = node.inputs.iter().map(|&v| g.ty(v)).collect();
                let taken = node.op.inplace_input(&types).and_then(|k| {
                    let v = *node.inputs.get(k)?;
                    let out = g.ty(*node.outputs.first()?);
                    let Location::Slot(s) = locations[v] else {
                        return None;
                    };
                    let ok = !pinned[v]
                        && last_stage[v] == Some(st)
                        && !other_chains_read[v]
                        && last_reader[v] == ni
                        && node.inputs.iter().filter(|&&u| u == v).count() == 1
                        && storage(out) == storage(g.ty(v))
                        && out.numel() == g.ty(v).numel();
                    ok.then_some((k, s))
                });
                for (k, &o) in node.outputs.iter().enumerate() {
                    let ty = g.ty(o);
                    let slot = match taken {
                        Some((_, s)) if k == 0 => s,
                        _ => {
                            let slot = best_fit(&mut free, &slots, storage(ty), ty.numel());
                            let slot = slot.unwrap_or_else(|| {
                                slots.push((storage(ty), 0));
                                holder.push(o);
                                slots.len() - 1
                            });
                            slots[slot].1 = slots[slot].1.max(ty.numel());
                            slot
                        }
                    };
                    holder[slot] = o;
                    locations[o] = Location::Slot(slot);
                }
                inplace[ni] = taken.map(|(k, _)| k);
            }
            // Release what this stage read for the last time, and outputs nobody reads.
            for &ni in nodes {
                let node = &g.nodes[ni];
                for &v in node.inputs.iter().chain(&node.outputs) {
                    if let Location::Slot(s) = locations[v] {
                        let dead = !pinned[v] && last_stage[v].is_none_or(|l| l <= st);
                        if dead && holder[s] == v && !free.contains(&s) {
                            free.push(s);
                        }
                    }
                }
            }
        }
        Plan {
            order,
            chains,
            stages,
            inplace,
            locations,
            slots,
        }
    }
}

/// Groups `waves` (each a list of nodes) into stages of chains, as the module
/// documentation says; returns the nodes in order, the chains (ranges of it) and
/// the stages (ranges of the chains).
fn stages_of(g: &Graph, waves: &[&[usize]]) -> (Vec<usize>, Vec<Range<usize>>, Vec<Range<usize>>) {
    // The current stage's chains, each a list of nodes, and each of its nodes' chain.
    let mut stage: Vec<Vec<usize>> = Vec::new();
    let mut waves_in_stage = 0;
    let mut chain_of = vec![usize::MAX; g.nodes.len()];
    let mut order = Vec::new();
    let mut chains = Vec::new();
    let mut stages = Vec::new();
    let mut close = |stage: &mut Vec<Vec<usize>>| {
        let first = chains.len();
        for chain in stage.drain(..) {
            let start = order.len();
            order.extend(chain);
            chains.push(start..order.len());
        }
        if chains.len() > first {
            stages.push(first..chains.len());
        }
    };
    // The chain of the current stage that node `ni` extends: `Ok(None)` when it
    // reads none of them, `Err` when it reads two.
    let producer_chain = |ni: usize, chain_of: &[usize]| -> Result<Option<usize>, ()> {
        let mut found = None;
        for &v in &g.nodes[ni].inputs {
            if let ValueSource::Node { node, .. } = g.values[v].source {
                let c = chain_of[node];
                if c != usize::MAX && found.replace(c).is_some_and(|f| f != c) {
                    return Err(());
                }
            }
        }
        Ok(found)
    };
    for wave in waves {
        let mut joins = waves_in_stage > 0 && waves_in_stage < STAGE_WAVES;
        if joins {
            // Every node of a wave reads the wave before, so each reads a chain.
            let mut extended = vec![false; stage.len()];
            for &ni in wave.iter() {
                match producer_chain(ni, &chain_of) {
                    Ok(Some(c)) if !extended[c] && !holds_its_thread(g, ni) => extended[c] = true,
                    _ => joins = false,
                }
            }
            joins &= extended.iter().filter(|&&e| e).count() >= 2;
        }
        if !joins {
            for chain in &stage {
                for &ni in chain {
                    chain_of[ni] = usize::MAX;
                }
            }
            close(&mut stage);
            waves_in_stage = 0;
        }
        for &ni in wave.iter() {
            let c = match producer_chain(ni, &chain_of) {
                Ok(Some(c)) => c,
                _ => {
                    stage.push(Vec::new());
                    stage.len() - 1
                }
            };
            stage[c].push(ni);
            chain_of[ni] = c;
        }
        waves_in_stage += 1;
    }
    close(&mut stage);
    (order, chains, stages)
}

/// Takes the best free slot of `storage` for `size` elements: the smallest that
/// already holds `size`, else the largest (which then grows).
fn best_fit(
    free: &mut Vec<usize>,
    slots: &[(DType, usize)],
    storage: DType,
    size: usize,
) -> Option<usize> {
    let pos = free
        .iter()
        .enumerate()
        .filter(|(_, &s)| slots[s].0 == storage)
        .min_by_key(|(_, &s)| {
            let cap = slots[s].1;
            if cap >= size {
                (0, cap)
            } else {
                (1, usize::MAX - cap)
            }
        })
        .map(|(pos, _)| pos)?;
    Some(free.swap_remove(pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorType;
    use pyfuncnet_kernels::unary::Unary;

    #[test]
    fn independent_branches_share_a_stage() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![4]));
        let a = g.unary(Unary::Exp, x).unwrap();
        let b = g.unary(Unary::Tanh, x).unwrap();
        let c = g.add(a, b).unwrap();
        let plan = Plan::new(&g, &[c]);
        assert_eq!(plan.order, vec![0, 1, 2]);
        assert_eq!(plan.chains, vec![0..1, 1..2, 2..3]);
        assert_eq!(plan.stages, vec![0..2, 2..3]);
    }

    #[test]
    fn branches_run_on_as_chains_until_they_join() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let a1 = g.unary(Unary::Exp, x).unwrap(); // node 0
        let b1 = g.unary(Unary::Sigmoid, x).unwrap(); // node 1
        let a2 = g.unary(Unary::Tanh, a1).unwrap(); // node 2, in place over a1
        let b2 = g.unary(Unary::Negative, b1).unwrap(); // node 3, in place over b1
        let c = g.add(a2, b2).unwrap(); // node 4: joins the chains
        let plan = Plan::new(&g, &[c]);
        assert_eq!(plan.order, vec![0, 2, 1, 3, 4]);
        assert_eq!(plan.chains, vec![0..2, 2..4, 4..5]);
        assert_eq!(plan.stages, vec![0..2, 2..3]);
        assert_eq!(plan.inplace[2], Some(0));
        assert_eq!(plan.inplace[3], Some(0));
        assert_ne!(plan.locations[a2], plan.locations[b2]);
    }

    #[test]
    fn a_value_two_nodes_of_the_next_wave_read_ends_the_stage() {
        // Both readers of `a` in one chain would run one after the other.
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let a = g.unary(Unary::Exp, x).unwrap();
        let d = g.unary(Unary::Negative, x).unwrap();
        let b = g.unary(Unary::Tanh, a).unwrap();
        let c = g.unary(Unary::Sigmoid, a).unwrap();
        let plan = Plan::new(&g, &[b, c, d]);
        assert_eq!(plan.order, vec![0, 1, 2, 3]);
        assert_eq!(plan.chains, vec![0..1, 1..2, 2..3, 3..4]);
        assert_eq!(plan.stages, vec![0..2, 2..4]);
    }

    #[test]
    fn a_value_read_twice_in_one_chain_is_taken_over_by_its_last_reader() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let p = g.unary(Unary::Exp, x).unwrap(); // node 0
        let q = g.unary(Unary::Tanh, x).unwrap(); // node 1
        let a = g.unary(Unary::Sigmoid, p).unwrap(); // node 2, reads p (not last)
        let b = g.unary(Unary::Negative, q).unwrap(); // node 3
        let c = g.add(p, a).unwrap(); // node 4, the last to read p: in place over it
        let d = g.unary(Unary::Negative, b).unwrap(); // node 5
        let plan = Plan::new(&g, &[c, d]);
        assert_eq!(plan.order, vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(plan.stages, vec![0..2]);
        assert_eq!(plan.inplace[2], None);
        assert_eq!(plan.inplace[4], Some(0));
        assert_eq!(plan.locations[c], plan.locations[p]);
    }

    #[test]
    fn a_value_two_chains_read_is_not_taken_over() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let p = g.unary(Unary::Exp, x).unwrap(); // stage 0
        let a = g.unary(Unary::Tanh, p).unwrap(); // stage 1, chain of a
        let b = g.unary(Unary::Sigmoid, p).unwrap(); // stage 1, chain of b
        let c = g.unary(Unary::Negative, a).unwrap();
        let d = g.unary(Unary::Negative, b).unwrap();
        let plan = Plan::new(&g, &[c, d]);
        assert_eq!(plan.stages, vec![0..1, 1..3]);
        assert_eq!(plan.inplace[1], None);
        assert_eq!(plan.inplace[2], None);
    }

    #[test]
    fn a_chain_does_not_go_on_through_a_long_single_task() {
        // An add of 8,000 elements runs as one task (it is under the kernels'
        // smallest chunk) for 24,000 units of work; one of 1,000 is light.
        for (len, stages) in [(1_000, 1), (8_000, 2)] {
            let mut g = Graph::new();
            let x = g.add_input(TensorType::f32(vec![len]));
            let a = g.unary(Unary::Exp, x).unwrap();
            let b = g.unary(Unary::Tanh, x).unwrap();
            let c = g.add(a, a).unwrap();
            let d = g.add(b, b).unwrap();
            let plan = Plan::new(&g, &[c, d]);
            assert_eq!(plan.stages.len(), stages, "{len} elements");
            assert_eq!(plan.chains.len(), 2 * stages, "{len} elements");
        }
    }

    #[test]
    fn a_single_chain_is_not_a_stage_of_its_own() {
        // A chain that only grows, next to nothing, gains nothing from a longer
        // stage and would hold its slots longer.
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let a = g.unary(Unary::Exp, x).unwrap();
        let b = g.unary(Unary::Tanh, a).unwrap();
        let plan = Plan::new(&g, &[b]);
        assert_eq!(plan.chains, vec![0..1, 1..2]);
        assert_eq!(plan.stages, vec![0..1, 1..2]);
    }

    #[test]
    fn a_stage_spans_at_most_stage_waves() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let (mut a, mut b) = (x, x);
        for _ in 0..STAGE_WAVES + 2 {
            a = g.unary(Unary::Exp, a).unwrap();
            b = g.unary(Unary::Tanh, b).unwrap();
        }
        let plan = Plan::new(&g, &[a, b]);
        let lens: Vec<usize> = plan.chains.iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![STAGE_WAVES, STAGE_WAVES, 2, 2]);
        assert_eq!(plan.stages, vec![0..2, 2..4]);
    }

    #[test]
    fn slots_a_stage_frees_wait_for_its_end() {
        // a1 is last read by a2, inside the stage; a3 (not in place: it reads a2
        // twice) must not take a1's slot while the other chain still runs, nor any
        // slot of the other chain.
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let a1 = g.unary(Unary::Exp, x).unwrap();
        let b1 = g.unary(Unary::Tanh, x).unwrap();
        let a2 = g.mul(a1, a1).unwrap();
        let b2 = g.mul(b1, b1).unwrap();
        let a3 = g.mul(a2, a2).unwrap();
        let b3 = g.mul(b2, b2).unwrap();
        let plan = Plan::new(&g, &[a3, b3]);
        assert_eq!(plan.stages, vec![0..2]);
        let slots: Vec<_> = [a1, a2, a3, b1, b2, b3]
            .iter()
            .map(|&v| plan.locations[v])
            .collect();
        for i in 0..slots.len() {
            for j in 0..i {
                assert_ne!(slots[i], slots[j], "values {i} and {j} share a slot");
            }
        }
    }

    #[test]
    fn a_chain_of_elementwise_ops_runs_in_one_slot() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let a = g.unary(Unary::Exp, x).unwrap(); // x is an input: a gets a slot
        let b = g.unary(Unary::Tanh, a).unwrap(); // in place over a
        let two = g.scalar(2.0);
        let c = g.mul(b, two).unwrap(); // in place over b
        let plan = Plan::new(&g, &[c]);
        assert_eq!(plan.slots.len(), 1);
        assert_eq!(plan.inplace, vec![None, Some(0), Some(0)]);
    }

    #[test]
    fn a_value_read_again_later_is_not_overwritten() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let a = g.unary(Unary::Exp, x).unwrap();
        let b = g.unary(Unary::Tanh, a).unwrap(); // a is read again below
        let c = g.add(a, b).unwrap(); // in place over a (or b), both dead after
        let d = g.mul(c, c).unwrap(); // reads c twice: not in place
        let plan = Plan::new(&g, &[d, b]); // b is fetched: never overwritten
        assert_eq!(plan.inplace[1], None);
        assert_eq!(plan.inplace[2], Some(0));
        assert_eq!(plan.inplace[3], None);
        let slot = |v| plan.locations[v];
        assert_ne!(slot(b), slot(c));
        assert_ne!(slot(b), slot(d));
        assert_ne!(slot(c), slot(d));
    }

    #[test]
    fn two_readers_in_one_wave_block_in_place() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![8]));
        let a = g.unary(Unary::Exp, x).unwrap();
        let b = g.unary(Unary::Tanh, a).unwrap(); // same wave as c, both read a
        let c = g.unary(Unary::Sigmoid, a).unwrap();
        let plan = Plan::new(&g, &[b, c]);
        assert_eq!(plan.inplace[1], None);
        assert_eq!(plan.inplace[2], None);
        let slots: Vec<_> = [a, b, c].iter().map(|&v| plan.locations[v]).collect();
        assert!(slots[0] != slots[1] && slots[1] != slots[2] && slots[0] != slots[2]);
    }
}
