//! The memory plan: which nodes run, in which waves, and which buffer slot holds
//! each value.
//!
//! Waves: a node's wave is one more than the latest wave among the nodes that
//! produce its inputs, so the nodes of one wave never read each other's outputs
//! and may run side by side. Nodes run wave by wave (in graph order within one).
//!
//! Liveness: a value's slot returns to the free pool at the end of the wave of the
//! last node that reads it, and is reused by later values of the same storage type,
//! so peak memory follows the widest point of the graph rather than its length.
//! An op with an in-place form ([`crate::ops::Op::inplace_input`]) takes over the
//! slot of an input that nothing reads afterwards (elementwise ops, reshapes and
//! gradient products then move no memory). Slots are sized once when the plan is
//! made; executing a plan allocates nothing.

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

/// The result of planning a graph for a set of fetched values.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Nodes to execute, wave after wave.
    pub order: Vec<usize>,
    /// The waves, as ranges of `order`: the nodes of one wave are independent.
    pub waves: Vec<Range<usize>>,
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
        let mut n_waves = 0;
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
            n_waves = n_waves.max(w + 1);
        }
        let mut order: Vec<usize> = (0..g.nodes.len()).filter(|&i| needed_node[i]).collect();
        order.sort_by_key(|&i| wave_of[i]); // stable: graph order within a wave
        let mut waves = Vec::with_capacity(n_waves);
        let mut start = 0;
        for w in 0..n_waves {
            let end = start + order[start..].partition_point(|&i| wave_of[i] == w);
            waves.push(start..end);
            start = end;
        }

        // The last wave reading each value, and how many reads happen in that wave.
        let mut last_wave = vec![None::<usize>; n_values];
        let mut reads_in_last_wave = vec![0usize; n_values];
        for &ni in &order {
            let w = wave_of[ni];
            for &v in &g.nodes[ni].inputs {
                if last_wave[v] != Some(w) {
                    last_wave[v] = Some(w);
                    reads_in_last_wave[v] = 0;
                }
                reads_in_last_wave[v] += 1;
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
        for (w, wave) in waves.iter().enumerate() {
            for &ni in &order[wave.clone()] {
                let node = &g.nodes[ni];
                // In place: the input is in a slot, read once here and never again.
                let types: Vec<&TensorType> = node.inputs.iter().map(|&v| g.ty(v)).collect();
                let taken = node.op.inplace_input(&types).and_then(|k| {
                    let v = *node.inputs.get(k)?;
                    let out = g.ty(*node.outputs.first()?);
                    let Location::Slot(s) = locations[v] else {
                        return None;
                    };
                    let ok = !pinned[v]
                        && last_wave[v] == Some(w)
                        && reads_in_last_wave[v] == 1
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
            // Release what this wave read for the last time, and outputs nobody reads.
            for &ni in &order[wave.clone()] {
                let node = &g.nodes[ni];
                for &v in node.inputs.iter().chain(&node.outputs) {
                    if let Location::Slot(s) = locations[v] {
                        let dead = !pinned[v] && last_wave[v].is_none_or(|l| l <= w);
                        if dead && holder[s] == v && !free.contains(&s) {
                            free.push(s);
                        }
                    }
                }
            }
        }
        Plan {
            order,
            waves,
            inplace,
            locations,
            slots,
        }
    }
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
    fn independent_branches_share_a_wave() {
        let mut g = Graph::new();
        let x = g.add_input(TensorType::f32(vec![4]));
        let a = g.unary(Unary::Exp, x).unwrap();
        let b = g.unary(Unary::Tanh, x).unwrap();
        let c = g.add(a, b).unwrap();
        let plan = Plan::new(&g, &[c]);
        assert_eq!(plan.waves, vec![0..2, 2..3]);
        assert_eq!(plan.order, vec![0, 1, 2]);
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
